//! Metadata: the records the allocator needs for itself (thread heaps, large-block headers,
//! arena headers) come from mappings of their own, never from the program's pools. Records of
//! every type are cut one after another from shared regions, and each is touched only when it
//! is handed out: a Python process needs one heap, a few large-block headers and half a dozen
//! arena headers, and a slab per type left a partly used page per type. Regions are never
//! unmapped: their owners recycle records on spare lists of their own.

use core::ptr;

use crate::os;
use crate::stats;
use crate::sync::Lock;

/// Records are cut from mappings of this size.
pub const REGION_BYTES: usize = 64 * 1024;
/// Records start on cache lines, so that two threads' records never share one.
pub const RECORD_ALIGN: usize = 64;

/// The never used end of the last region mapped: `left` bytes from `fresh`.
pub struct Region {
    fresh: *mut u8,
    left: usize,
}

// SAFETY: the pointer is only followed by the region's holder (under `REGION`'s lock).
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
        }
    }

    /// A never used, zero-filled record of `bytes` (at most `REGION_BYTES`), mapping a new
    /// region when this one has too little left (the rest of it stays untouched). Null when
    /// the OS refuses memory.
    pub fn take(&mut self, bytes: usize) -> *mut u8 {
        debug_assert!(bytes <= REGION_BYTES);
        let size = bytes.next_multiple_of(RECORD_ALIGN);
        if self.left < size {
            let region = os::map(REGION_BYTES, 0);
            if region.is_null() {
                return ptr::null_mut();
            }
            stats::global().meta_mapped.add(REGION_BYTES);
            self.fresh = region;
            self.left = REGION_BYTES;
        }
        let record = self.fresh;
        // SAFETY: `size` bytes are left from `fresh`, so the new start is inside the region
        // or at its end.
        self.fresh = unsafe { record.add(size) };
        self.left -= size;
        record
    }
}

static REGION: Lock<Region> = Lock::new(Region::new());

/// A never used, zero-filled record of `bytes` from the shared region; null when the OS
/// refuses memory. Callers may hold their own locks: this one is always taken last.
#[inline(never)]
pub fn take(bytes: usize) -> *mut u8 {
    REGION.lock().take(bytes)
}

/// `take` for one `T`.
pub fn take_record<T>() -> *mut T {
    const { assert!(core::mem::align_of::<T>() <= RECORD_ALIGN) };
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

    /// Records of any size are cut in turn on cache lines, and handing one out touches only
    /// its own pages (threading a free list through a whole slab made all of it resident).
    #[test]
    fn records_are_cut_in_turn_and_touch_only_their_pages() {
        let mut region = Region::new();
        let sizes = [900, 1600, 100, 17 * 1024, 64];
        let records = sizes.map(|n| region.take(n));
        let base = records[0];
        let mut at = base as usize;
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
        assert_eq!(os::resident_pages(base, REGION_BYTES), pages.len());
        assert!(pages.len() < records.len(), "records share pages");
        let big = region.take(REGION_BYTES - 1000);
        assert!(!big.is_null());
        let (big, first) = (big as usize, base as usize);
        assert!(
            big >= first + REGION_BYTES || big + REGION_BYTES <= first,
            "a new region"
        );
        // SAFETY: both regions are this test's own mappings.
        unsafe {
            os::unmap(base, REGION_BYTES);
            os::unmap(big as *mut u8, REGION_BYTES);
        }
    }
}
