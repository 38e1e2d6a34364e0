//! The address map: "is this address inside one of our mappings, and whose?" in O(1), without
//! reading memory that may not be mapped (CPython 3.10's radix tree, two levels here).
//!
//! The address space is cut into 4 MiB chunks (`CHUNK_SHIFT`). Every mapping poolmalloc makes
//! starts on a chunk boundary, so no chunk holds the start of two of our mappings; the map
//! records, for every chunk that one of our mappings covers, a pointer to that mapping's
//! owner: an `Arena` header with the low bit set (`TAG_ARENA`), or a `Large` header.
//!
//! ```text
//!  47        41 40                     22 21             0
//!  +-----------+-------------------------+----------------+
//!  | root index|       leaf index        | offset in chunk|
//!  +-----------+-------------------------+----------------+
//! ```
//! The root (128 entries, 1 KiB) is static and zero, and small enough to share its page with
//! the other statics every process touches (a 64 KiB root had a page of its own resident for
//! the one entry a process uses). Leaves (4 MiB each, one per 2 TiB of address space, so one
//! for all the mappings of most processes) are mapped on first use and never freed; only the
//! pages of the entries in use are ever touched. Readers take no lock: entries are atomics
//! written with Release and read with Acquire, so a reader that sees a header also sees it
//! initialised. Writers hold `WRITE_LOCK` only to create leaves. Ranges above 2^48 are never
//! registered.

use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// log2 of the chunk size, which is also the arena size and alignment.
pub const CHUNK_SHIFT: u32 = 22;
pub const CHUNK_SIZE: usize = 1 << CHUNK_SHIFT;
const ADDRESS_BITS: u32 = 48;
const LEAF_BITS: u32 = 19;
const ROOT_BITS: u32 = ADDRESS_BITS - CHUNK_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
const ROOT_LEN: usize = 1 << ROOT_BITS;

type Leaf = [AtomicUsize; LEAF_LEN];

/// Tag bit set on entries that point at an `Arena` header (headers are aligned, so the bit is
/// free). Tagging arenas rather than large blocks lets free's fast path tell "arena" from
/// both "large" and "not ours" with one bit test, and the `- TAG_ARENA` folds into the
/// displacement of the next load.
pub const TAG_ARENA: usize = 1;

static ROOT: [AtomicPtr<Leaf>; ROOT_LEN] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; ROOT_LEN];
static WRITE_LOCK: crate::sync::Lock<()> = crate::sync::Lock::new(());
/// The lowest and highest chunk ever registered: `for_each_entry` walks only between them,
/// not whole leaves of half a million entries.
static LOWEST_CHUNK: AtomicUsize = AtomicUsize::new(usize::MAX);
static HIGHEST_CHUNK: AtomicUsize = AtomicUsize::new(0);

/// The entry for the chunk holding `addr`: 0 if that chunk is not ours.
#[inline(always)]
pub fn lookup(addr: usize) -> usize {
    let chunk = addr >> CHUNK_SHIFT;
    // Bits above 47 are dropped rather than tested: user-space pointers on x86-64 (4-level
    // paging) never have them, and a forged pointer that aliases one of our chunks still has
    // to pass the pool's block checks. `register` refuses ranges beyond 2^48.
    let root_index = (chunk >> LEAF_BITS) & (ROOT_LEN - 1);
    // SAFETY: root_index is masked to ROOT_LEN.
    let leaf = unsafe { ROOT.get_unchecked(root_index) }.load(Ordering::Acquire);
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: a non-null root entry points at a leaf that is never unmapped, and the index is
    // masked to the leaf's length.
    unsafe { (*leaf).get_unchecked(chunk & (LEAF_LEN - 1)) }.load(Ordering::Acquire)
}

/// Records `entry` for every chunk that `[start, start + len)` touches. `start` must be
/// chunk-aligned. Returns false (and records nothing) if a leaf could not be mapped.
pub fn register(start: usize, len: usize, entry: usize) -> bool {
    debug_assert!(start.is_multiple_of(CHUNK_SIZE) && len > 0 && entry != 0);
    let first = start >> CHUNK_SHIFT;
    let last = (start + len - 1) >> CHUNK_SHIFT;
    if (last >> LEAF_BITS) >= ROOT_LEN {
        return false;
    }
    for chunk in first..=last {
        if leaf_for(chunk).is_null() {
            set_range(first, chunk, 0);
            return false;
        }
    }
    LOWEST_CHUNK.fetch_min(first, Ordering::Relaxed);
    HIGHEST_CHUNK.fetch_max(last, Ordering::Relaxed);
    set_range(first, last + 1, entry);
    true
}

/// Clears the entries of every chunk that `[start, start + len)` touches.
pub fn unregister(start: usize, len: usize) {
    let first = start >> CHUNK_SHIFT;
    let last = (start + len - 1) >> CHUNK_SHIFT;
    set_range(first, last + 1, 0);
}

#[inline(never)]
fn set_range(first: usize, end: usize, entry: usize) {
    for chunk in first..end {
        let leaf = ROOT[chunk >> LEAF_BITS].load(Ordering::Acquire);
        if !leaf.is_null() {
            // SAFETY: leaves are never unmapped; the index is masked to the leaf length.
            unsafe { (*leaf)[chunk & (LEAF_LEN - 1)].store(entry, Ordering::Release) };
        }
    }
}

/// The leaf covering `chunk`, mapping it if needed; null if the kernel refused.
fn leaf_for(chunk: usize) -> *mut Leaf {
    let slot = &ROOT[chunk >> LEAF_BITS];
    let leaf = slot.load(Ordering::Acquire);
    if !leaf.is_null() {
        return leaf;
    }
    let _guard = WRITE_LOCK.lock();
    let leaf = slot.load(Ordering::Acquire);
    if !leaf.is_null() {
        return leaf;
    }
    // A fresh mapping is zero, which is an array of AtomicUsize(0): no initialisation needed.
    let fresh = crate::os::map(core::mem::size_of::<Leaf>(), 0) as *mut Leaf;
    if !fresh.is_null() {
        crate::stats::global()
            .meta_mapped
            .add(core::mem::size_of::<Leaf>());
        slot.store(fresh, Ordering::Release);
    }
    fresh
}

/// Calls `f` with every non-zero entry, in address order (an arena once, a large mapping once
/// per chunk it covers). Readers run concurrently with writers: an entry seen may be stale,
/// and one registered meanwhile may be missed.
pub fn for_each_entry(mut f: impl FnMut(usize)) {
    let (lowest, highest) = (
        LOWEST_CHUNK.load(Ordering::Relaxed),
        HIGHEST_CHUNK.load(Ordering::Relaxed),
    );
    let mut chunk = lowest;
    while chunk <= highest {
        let leaf = ROOT[chunk >> LEAF_BITS].load(Ordering::Acquire);
        let leaf_end = (chunk | (LEAF_LEN - 1)).min(highest);
        if !leaf.is_null() {
            for i in chunk & (LEAF_LEN - 1)..=leaf_end & (LEAF_LEN - 1) {
                // SAFETY: leaves are never unmapped; i is below the leaf length.
                let v = unsafe { (*leaf).get_unchecked(i) }.load(Ordering::Acquire);
                if v != 0 {
                    f(v);
                }
            }
        }
        chunk = leaf_end + 1;
    }
}

/// Resident bytes of the leaves (only the pages of entries in use are ever touched); for the
/// statistics.
#[link_section = ".text_rarely_run"]
pub fn resident_bytes() -> usize {
    let mut total = 0;
    for slot in &ROOT {
        let leaf = slot.load(Ordering::Acquire);
        if !leaf.is_null() {
            total += crate::os::resident_pages(leaf as *mut u8, core::mem::size_of::<Leaf>())
                * crate::os::PAGE_SIZE;
        }
    }
    total
}

/// Fork support: the map lock must not be held by a thread that does not exist in the child.
pub fn lock_for_fork() {
    WRITE_LOCK.hold_for_fork();
}
/// # Safety
/// Only after `lock_for_fork`, in the parent or the child of the fork.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { WRITE_LOCK.release_after_fork() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_ranges_are_found_and_others_are_not() {
        // A made-up chunk-aligned range high in the address space; the map never touches it.
        // Its entries carry no arena tag: tests running meanwhile walk the map for arenas
        // (`arena::for_each_pool`) and would read a tagged one as a header.
        let base = 0x7a00_0000_0000usize;
        let len = 3 * CHUNK_SIZE + 4096;
        assert_eq!(lookup(base), 0);
        assert!(register(base, len, 0x1234_5670));
        for off in [0, 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 4095] {
            assert_eq!(lookup(base + off), 0x1234_5670, "off {off:#x}");
        }
        assert_eq!(lookup(base + 4 * CHUNK_SIZE), 0);
        assert_eq!(lookup(base - 1), 0);
        // A range in another leaf: the walk covers both, in address order.
        let far = base + (CHUNK_SIZE << LEAF_BITS);
        assert!(register(far, CHUNK_SIZE, 0x1234_5680));
        let mut seen = std::vec::Vec::new();
        for_each_entry(|e| {
            if e == 0x1234_5670 || e == 0x1234_5680 {
                seen.push(e);
            }
        });
        let (near, far_entry) = (0x1234_5670, 0x1234_5680);
        assert_eq!(seen, [near, near, near, near, far_entry]);
        unregister(far, CHUNK_SIZE);
        unregister(base, len);
        assert_eq!(lookup(base + CHUNK_SIZE), 0);
    }

    #[test]
    fn ranges_beyond_48_bits_are_never_registered() {
        assert!(!register(1usize << 48, CHUNK_SIZE, 8));
    }
}
