//! Metadata: the records the allocator needs for itself (thread heaps, large-block headers,
//! arena headers) come from mappings of their own, never from the program's pools. Records of
//! every type are cut one after another from shared regions, and each is touched only when it
//! is handed out: a Python process needs one heap, a few large-block headers and half a dozen
//! arena headers, and a slab per type left a partly used page per type. Regions are never
//! unmapped: their owners recycle records on spare lists of their own. Each region's first
//! record slot links it to the region mapped before it, so the statistics can count the
//! metadata's resident pages (`resident_bytes`), which is what it costs a process.

use core::ptr;

use crate::os;
use crate::stats;
use crate::sync::Lock;

/// Records are cut from mappings of this size.
pub const REGION_BYTES: usize = 64 * 1024;
/// Records start on cache lines, so that two threads' records never share one.
pub const RECORD_ALIGN: usize = 64;
/// The largest record: a region less its link slot.
pub const MAX_RECORD: usize = REGION_BYTES - RECORD_ALIGN;

/// The never used end of the last region mapped (`left` bytes from `fresh`), and the start
/// of that region, whose first word links to the one before it (null for the first).
pub struct Region {
    fresh: *mut u8,
    left: usize,
    newest: *mut u8,
}

// SAFETY: the pointers are only followed by the region's holder (under `REGION`'s lock).
unsafe impl Send for Region {}

impl Default for Region {
    fn default() -> Self {
        Self::new()
    }
}

impl Region {
    pub const fn new() -> Self {
        Region {
            fresh: ptr::null_mut(),
            left: 0,
            newest: ptr::null_mut(),
        }
    }

    /// A never used, zero-filled record of `bytes` (at most `MAX_RECORD`), mapping a new
    /// region when this one has too little left (the rest of it stays untouched). Null when
    /// the OS refuses memory.
    pub fn take(&mut self, bytes: usize) -> *mut u8 {
        debug_assert!(bytes <= MAX_RECORD);
        let size = bytes.next_multiple_of(RECORD_ALIGN);
        if self.left < size {
            let region = os::map(REGION_BYTES, 0);
            if region.is_null() {
                return ptr::null_mut();
            }
            stats::global().meta_mapped.add(REGION_BYTES);
            // SAFETY: the region is fresh, writable and aligned to a page; its first slot is
            // the link, never handed out.
            unsafe { (region as *mut *mut u8).write(self.newest) };
            self.newest = region;
            // SAFETY: RECORD_ALIGN < REGION_BYTES, so the first record starts inside the region.
            self.fresh = unsafe { region.add(RECORD_ALIGN) };
            self.left = MAX_RECORD;
        }
        let record = self.fresh;
        // SAFETY: `size` bytes are left from `fresh`, so the new start is inside the region
        // or at its end.
        self.fresh = unsafe { record.add(size) };
        self.left -= size;
        record
    }

    /// Bytes of this holder's regions that are resident (what the metadata costs in memory;
    /// a record's pages are resident once it has been handed out and written).
    pub fn resident_bytes(&self) -> usize {
        let mut total = 0;
        let mut region = self.newest;
        while !region.is_null() {
            total += os::resident_pages(region, REGION_BYTES) * os::PAGE_SIZE;
            // SAFETY: regions are never unmapped, and each one's first word is the link.
            region = unsafe { *(region as *const *mut u8) };
        }
        total
    }
}

static REGION: Lock<Region> = Lock::new(Region::new());

/// A never used, zero-filled record of `bytes` from the shared region; null when the OS
/// refuses memory. Callers may hold their own locks: this one is always taken last.
#[inline(never)]
pub fn take(bytes: usize) -> *mut u8 {
    REGION.lock().take(bytes)
}

/// Resident bytes of the shared regions (see `Region::resident_bytes`); for the statistics.
#[link_section = ".text_rarely_run"]
pub fn resident_bytes() -> usize {
    REGION.lock().resident_bytes()
}

/// `take` for one `T`.
pub fn take_record<T>() -> *mut T {
    const { assert!(core::mem::align_of::<T>() <= RECORD_ALIGN) };
    const { assert!(core::mem::size_of::<T>() <= MAX_RECORD) };
    take(core::mem::size_of::<T>()) as *mut T
}

/// Fork support.
pub fn lock_for_fork() {
    REGION.hold_for_fork();
}
/// # Safety
/// Only after `lock_for_fork`.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { REGION.release_after_fork() };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records of any size are cut in turn on cache lines, after the region's link slot, and
    /// handing one out touches only its own pages (threading a free list through a whole slab
    /// made all of it resident); `resident_bytes` counts exactly those pages, in every region.
    #[test]
    fn records_are_cut_in_turn_and_touch_only_their_pages() {
        let mut region = Region::new();
        let sizes = [900, 1600, 100, 17 * 1024, 64];
        let records = sizes.map(|n| region.take(n));
        let base = records[0] as usize - RECORD_ALIGN;
        assert!(
            base.is_multiple_of(os::PAGE_SIZE),
            "the first record follows the link"
        );
        let mut at = records[0] as usize;
        for (r, n) in records.iter().zip(sizes) {
            assert_eq!(*r as usize, at, "cut in turn");
            at += n.next_multiple_of(RECORD_ALIGN);
        }
        // SAFETY: the records are ours: write each one's first byte.
        unsafe {
            for r in records {
                r.write(1);
            }
        }
        let pages: std::collections::BTreeSet<usize> = records
            .iter()
            .map(|r| *r as usize / os::PAGE_SIZE)
            .collect();
        assert_eq!(
            os::resident_pages(base as *mut u8, REGION_BYTES),
            pages.len()
        );
        assert!(pages.len() < records.len(), "records share pages");
        assert_eq!(region.resident_bytes(), pages.len() * os::PAGE_SIZE);

        // A record too big for what is left takes a new region, linked to the first one.
        let big = region.take(MAX_RECORD - 1000);
        assert!(!big.is_null());
        let (big, second) = (big as usize, big as usize - RECORD_ALIGN);
        assert!(
            second >= base + REGION_BYTES || second + REGION_BYTES <= base,
            "a new region"
        );
        assert_eq!(
            region.resident_bytes(),
            (pages.len() + 1) * os::PAGE_SIZE,
            "the new region's first page holds its link"
        );
        // SAFETY: the big record is ours; write a byte two pages into it.
        unsafe { (big as *mut u8).add(2 * os::PAGE_SIZE).write(1) };
        assert_eq!(region.resident_bytes(), (pages.len() + 2) * os::PAGE_SIZE);
        assert!(
            !region.take(MAX_RECORD).is_null(),
            "a whole-region record fits"
        );
        // SAFETY: the regions are this test's own mappings, and the holder is not used again.
        unsafe {
            os::unmap(base as *mut u8, REGION_BYTES);
            os::unmap(second as *mut u8, REGION_BYTES);
            os::unmap(region.newest, REGION_BYTES);
        }
    }
}
