//! The allocator's entry points with C semantics (errno, overflow, alignment rules), on top
//! of the thread heaps (`heap`), the remote-free path (`remote`) and large mappings (`large`).
//! The exported C names in `ffi` are one-line forwards to these.
//!
//! Free, step by step: the address map says whose chunk the pointer is in (nothing, an arena,
//! or a large block) without reading the pointer's memory; the arena header gives the pool
//! with a mask and a shift; if the calling thread owns the pool, the block is checked (it must
//! start a carved block and not carry the freed-block key) and pushed on the pool's free list,
//! all with plain loads and stores. Everything else leaves the fast path.

use core::ptr;

use crate::addr_map::{self, TAG_ARENA};
use crate::arena::{self, Arena};
use crate::diag;
use crate::heap;
use crate::large;
use crate::os::{self, PAGE_SIZE};
use crate::pool::Block;
use crate::remote;
use crate::size_class::{
    class_of, class_of_medium, class_of_small, class_size, FIRST_MULTI_PAGE_CLASS,
    MULTI_PAGE_ABOVE, NUM_CLASSES, POOLED_MAX, SMALL_LOOKUP_MAX,
};
use crate::tls;

/// The name of the C function on whose behalf we act, for messages.
pub type Api = &'static str;

use crate::stats::call;

#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    malloc_as::<{ call::MALLOC }>(size)
}

/// malloc, counted as a call of entry point `CALL`.
#[inline(always)]
pub fn malloc_as<const CALL: usize>(size: usize) -> *mut u8 {
    // The common sizes first: one compare, one table load.
    if size <= SMALL_LOOKUP_MAX {
        return heap::alloc_class::<CALL>(class_of_small(size));
    }
    if size <= MULTI_PAGE_ABOVE {
        return heap::alloc_class_noting::<CALL, true>(class_of_medium(size));
    }
    if size <= POOLED_MAX {
        return heap::alloc_multi_page(size, CALL);
    }
    malloc_large(size, PAGE_SIZE, CALL)
}

#[cold]
fn malloc_large(size: usize, align: usize, call: usize) -> *mut u8 {
    malloc_large_fresh(size, align, call).0
}

/// A large block, and whether it is fresh from the kernel (already zero).
#[cold]
fn malloc_large_fresh(size: usize, align: usize, call: usize) -> (*mut u8, bool) {
    heap::count(call);
    let (p, fresh) = large::alloc(size, align);
    if p.is_null() {
        return (os::out_of_memory(), false);
    }
    if fresh {
        heap::drop_idle_for_large();
    }
    (p, fresh)
}

pub fn calloc(n: usize, size: usize) -> *mut u8 {
    calloc_as::<{ call::CALLOC }>(n, size)
}

pub fn calloc_as<const CALL: usize>(n: usize, size: usize) -> *mut u8 {
    let Some(total) = n.checked_mul(size) else {
        return os::out_of_memory();
    };
    if total > POOLED_MAX {
        // Fresh mappings are already zero; a block reused from the cache is not.
        let (p, fresh) = malloc_large_fresh(total, PAGE_SIZE, CALL);
        if !p.is_null() && !fresh {
            // SAFETY: p is a live block of at least `total` bytes.
            unsafe { ptr::write_bytes(p, 0, total) };
        }
        return p;
    }
    let p = malloc_as::<CALL>(total);
    if !p.is_null() {
        // SAFETY: p is a fresh block of at least `total` bytes.
        unsafe { ptr::write_bytes(p, 0, total) };
    }
    p
}

/// Frees `p`. `api` names the C function for the abort message on a bad pointer.
///
/// # Safety
/// `p` must be null or a pointer the program got from us and has not freed (anything else is
/// detected where possible and aborts).
#[inline(always)]
pub unsafe fn free(p: *mut u8, api: Api) {
    // SAFETY: forwarded contract.
    unsafe { free_as::<{ call::FREE }>(p, api) }
}

/// free, counted as a call of entry point `CALL`.
///
/// # Safety
/// As for `free`.
#[inline(always)]
pub unsafe fn free_as<const CALL: usize>(p: *mut u8, api: Api) {
    // SAFETY: forwarded contract.
    unsafe { free_impl::<CALL>(p, api, None) };
}

/// Frees `p` if it lies in memory poolmalloc manages; hands it, untouched, to `foreign` if it
/// does not (for callers that pass foreign pointers on, like `PyObject_Free`). A bad pointer
/// into our memory still aborts. The hand-over happens inside the cold path, as a tail call,
/// so that the fast path keeps no register or stack frame for it.
///
/// # Safety
/// `p` is null, a live block of ours, or not in our memory at all, and `foreign` may be
/// called with such a pointer.
#[inline(always)]
pub unsafe fn free_or_hand_over<const CALL: usize>(p: *mut u8, api: Api, foreign: ForeignFree) {
    // SAFETY: forwarded contract.
    unsafe { free_impl::<CALL>(p, api, Some(foreign)) }
}

/// Where `free_or_hand_over` sends pointers that are not ours.
pub type ForeignFree = unsafe fn(*mut u8);

/// The free path. A pointer outside our memory goes to `foreign`, or aborts without one.
///
/// # Safety
/// As for `free_or_hand_over`.
#[inline(always)]
unsafe fn free_impl<const CALL: usize>(p: *mut u8, api: Api, foreign: Option<ForeignFree>) {
    if p.is_null() {
        return;
    }
    let addr = p as usize;
    let entry = addr_map::lookup(addr);
    if entry & TAG_ARENA == 0 {
        // SAFETY: forwarded contract.
        return unsafe { free_not_pooled(addr, entry, api, CALL, foreign) };
    }
    // SAFETY: the map says p is in a live arena, so its header and pool descriptor are valid.
    unsafe {
        let pool = arena::pool_of((entry - TAG_ARENA) as *mut Arena, addr);
        let me = tls::heap();
        let owner = (*pool).owner.load(core::sync::atomic::Ordering::Relaxed);
        if owner != me {
            // A thread without a heap (null) owns no pool: its tagged word is 1, no owner.
            if owner == heap::multi_page_owner_word(me) {
                free_multi_page_local(me, pool, addr, api, CALL);
            } else {
                remote::free_remote(pool, addr, api, CALL);
            }
            return;
        }
        if (*pool).block_index(addr).is_none() {
            diag::fatal(api, "invalid pointer", addr);
        }
        let b = p as *mut Block;
        if (*b).key == (*pool).freed_key() {
            free_suspected_double(pool, b, api, CALL);
            return;
        }
        (*pool).push_local(b);
        heap::end_local_free(me, pool, CALL);
    }
}

/// Frees a large block. An address outside our memory goes to `foreign`, or aborts without
/// one.
#[cold]
#[inline(never)]
unsafe fn free_not_pooled(
    addr: usize,
    entry: usize,
    api: Api,
    call: usize,
    foreign: Option<ForeignFree>,
) {
    let Some(l) = large_holding(entry, addr) else {
        match foreign {
            // SAFETY: the caller of free_or_hand_over allows foreign pointers to go there.
            Some(f) => return unsafe { f(addr as *mut u8) },
            None => diag::fatal(api, "invalid pointer (not allocated by poolmalloc)", addr),
        }
    };
    heap::count(call);
    let errno = os::errno();
    // SAFETY: the map gives a live large header for addr.
    unsafe { large::free(l, addr, api) };
    // munmap may not change errno on success, but free must never change it at all.
    os::set_errno(errno);
}

/// A free into one of the calling thread's own pools that carry a tagged owner word (the
/// multi-page ones, and a medium one with discarded blocks: `heap::pool_owner_word`): the
/// fast path's checks, then `heap::free_multi_page`.
///
/// # Safety
/// `me` is this thread's live heap and owns `pool`, the pool holding `addr`.
#[inline(never)]
unsafe fn free_multi_page_local(
    me: *mut heap::Heap,
    pool: *mut crate::pool::Pool,
    addr: usize,
    api: Api,
    call: usize,
) {
    // SAFETY: per the contract.
    unsafe {
        if (*pool).block_index(addr).is_none() {
            diag::fatal(api, "invalid pointer", addr);
        }
        let b = addr as *mut Block;
        if (*b).key == (*pool).freed_key() {
            free_suspected_double(pool, b, api, call);
            return;
        }
        heap::free_multi_page(me, pool, b, call);
    }
}

/// The block carries the freed key: confirm it is on a free list before declaring a double
/// free (the program may, in theory, have stored that value itself), else free it normally.
#[cold]
#[inline(never)]
#[link_section = ".text_rarely_run"]
unsafe fn free_suspected_double(
    pool: *mut crate::pool::Pool,
    b: *mut Block,
    api: Api,
    call: usize,
) {
    // SAFETY: the caller checked that this thread owns the pool and b starts one of its blocks.
    unsafe {
        if (*pool).holds_free_block(b) {
            diag::fatal(api, "double free detected for", b as usize);
        }
        heap::count(call);
        (*pool).push_local(b);
        (*pool).used -= 1;
        if (*pool).used <= 0 {
            heap::after_local_free(tls::heap(), pool);
        }
    }
}

/// What `p` is, for realloc and malloc_usable_size.
enum Owner {
    Pooled { block_size: usize },
    Large(*mut large::Large),
}

#[inline]
unsafe fn owner_of(p: usize, api: Api) -> Owner {
    // SAFETY: forwarded contract.
    match unsafe { owner_unless_foreign(p, api) } {
        Some(owner) => owner,
        None => diag::fatal(api, "invalid pointer (not allocated by poolmalloc)", p),
    }
}

/// `owner_of`, but None for an address outside our memory (what `owns` calls foreign), so
/// that callers that pass foreign pointers on look the address up once.
#[inline]
unsafe fn owner_unless_foreign(p: usize, api: Api) -> Option<Owner> {
    let entry = addr_map::lookup(p);
    if entry & TAG_ARENA == 0 {
        let l = large_holding(entry, p)?;
        // SAFETY: the map gives a live large header.
        unsafe { large::check_live(l, p, api) };
        return Some(Owner::Large(l));
    }
    // SAFETY: the map gives a live arena header.
    unsafe {
        let pool = arena::pool_of((entry - TAG_ARENA) as *mut Arena, p);
        if (*pool).block_size == 0 || (*pool).block_index(p).is_none() {
            diag::fatal(api, "invalid pointer", p);
        }
        if (*(p as *mut Block)).key == (*pool).freed_key() {
            diag::fatal(api, "pointer already freed:", p);
        }
        Some(Owner::Pooled {
            block_size: (*pool).block_size as usize,
        })
    }
}

/// glibc's realloc: `realloc(NULL, n)` is malloc, `realloc(p, 0)` frees and returns NULL.
///
/// # Safety
/// As for `free`.
pub unsafe fn realloc(p: *mut u8, size: usize, api: Api) -> *mut u8 {
    if p.is_null() {
        return malloc_as::<{ call::REALLOC }>(size);
    }
    if size == 0 {
        // SAFETY: forwarded contract.
        unsafe { free_as::<{ call::REALLOC }>(p, api) };
        return ptr::null_mut();
    }
    heap::count(call::REALLOC);
    // SAFETY: forwarded contract.
    unsafe { resize(p, size, api) }
}

/// Resizes a live block to `size` bytes (> 0), keeping its contents; null and the block
/// untouched on exhaustion.
///
/// # Safety
/// `p` is a live block of ours.
pub unsafe fn resize(p: *mut u8, size: usize, api: Api) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { resize_owned(p, owner_of(p as usize, api), size, api) }
}

/// `resize` for callers that pass foreign pointers on: None, touching nothing, when `p` is not
/// in our memory (see `owns`).
///
/// # Safety
/// `p` is a live block of ours or not in our memory at all.
pub unsafe fn resize_unless_foreign(p: *mut u8, size: usize, api: Api) -> Option<*mut u8> {
    // SAFETY: forwarded contract.
    unsafe {
        let owner = owner_unless_foreign(p as usize, api)?;
        Some(resize_owned(p, owner, size, api))
    }
}

/// `resize` once the owner of `p` is known.
///
/// # Safety
/// `p` is a live block of ours and `owner` what `owner_of` says about it.
#[inline]
unsafe fn resize_owned(p: *mut u8, owner: Owner, size: usize, api: Api) -> *mut u8 {
    match owner {
        Owner::Pooled { block_size } => {
            // Keep the block when the size still fits and at least half of it stays in use
            // (a shrink that frees less is not worth a copy).
            if size <= block_size && size >= block_size / 2 {
                return p;
            }
            let q = malloc_as::<{ call::NOT_COUNTED }>(size);
            if !q.is_null() {
                // SAFETY: both blocks are live and distinct; we copy what both hold.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, size.min(block_size));
                    free_as::<{ call::NOT_COUNTED }>(p, api);
                }
            }
            q
        }
        Owner::Large(l) => {
            if size > POOLED_MAX {
                // SAFETY: l is p's header.
                let q = unsafe { large::resize(l, size) };
                if q.is_null() {
                    return os::out_of_memory();
                }
                return q;
            }
            let q = malloc_as::<{ call::NOT_COUNTED }>(size);
            if !q.is_null() {
                // SAFETY: q holds `size` bytes, fewer than the large block.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, size);
                    free_as::<{ call::NOT_COUNTED }>(p, api);
                }
            }
            q
        }
    }
}

/// glibc's reallocarray: realloc with an overflow-checked `n * size`.
///
/// # Safety
/// As for `realloc`.
pub unsafe fn reallocarray(p: *mut u8, n: usize, size: usize, api: Api) -> *mut u8 {
    match n.checked_mul(size) {
        // SAFETY: forwarded contract.
        Some(total) => unsafe { realloc(p, total, api) },
        None => os::out_of_memory(),
    }
}

/// A block of `size` bytes aligned to `align`, a power of two (the callers check). In
/// `.text_warm` (see lib.rs): many programs never ask for an alignment.
#[inline(never)]
#[link_section = ".text_warm"]
pub fn aligned(align: usize, size: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    if align <= 16 {
        return malloc_as::<{ call::ALIGNED }>(size);
    }
    if size <= POOLED_MAX && align <= POOLED_MAX {
        // A class whose size is a multiple of `align` has every block aligned: pools start on
        // a multiple of their size, which is a power of two at least as large as the block.
        let mut c = class_of(size.max(align));
        while c < NUM_CLASSES {
            if class_size(c).is_multiple_of(align) {
                if c >= FIRST_MULTI_PAGE_CLASS {
                    return heap::alloc_multi_page_exact::<{ call::ALIGNED }>(c);
                }
                return heap::alloc_class_noting::<{ call::ALIGNED }, true>(c);
            }
            c += 1;
        }
    }
    malloc_large(size, align, call::ALIGNED)
}

/// The usable size of a live block: constant for its life, at least what was asked for.
///
/// # Safety
/// `p` is null or a live block of ours.
pub unsafe fn usable_size(p: *mut u8, api: Api) -> usize {
    if p.is_null() {
        return 0;
    }
    // SAFETY: forwarded contract.
    match unsafe { owner_of(p as usize, api) } {
        Owner::Pooled { block_size } => block_size,
        // SAFETY: the map gave a live header.
        Owner::Large(l) => unsafe { (*l).size },
    }
}

/// Gives back everything free: the calling thread's empty pools, abandoned pools that
/// emptied, dirty pages of free pools, and the reserve arena. True if anything was released.
pub fn trim() -> bool {
    heap::trim_current_thread();
    remote::sweep_abandoned();
    let large = large::trim();
    arena::trim() | large
}

/// Checks the allocator's structures (every arena, and the calling thread's heap); returns
/// the number of problems found (0 when all is well).
pub fn check() -> usize {
    heap::check_current_thread() + arena::check()
}

/// Is `p` inside memory poolmalloc manages: an arena, or the mapping of a large block?
/// (For callers that must tell our pointers from foreign ones.) A large block may share its
/// last 4 MiB chunk with someone else's mapping, so for those the range is checked too.
pub fn owns(p: *const u8) -> bool {
    let entry = addr_map::lookup(p as usize);
    entry & TAG_ARENA != 0 || large_holding(entry, p as usize).is_some()
}

/// The large block whose mapping holds `p`, given `p`'s map entry without the arena tag; None
/// for no entry, or for an address in the block's last chunk past its mapping (someone
/// else's memory).
#[inline]
fn large_holding(entry: usize, p: usize) -> Option<*mut large::Large> {
    debug_assert!(entry & TAG_ARENA == 0);
    if entry == 0 {
        return None;
    }
    let l = large::header(entry);
    // SAFETY: a non-zero untagged entry is a live large header.
    unsafe { large::contains(l, p) }.then_some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_stops_at_the_end_of_a_large_mapping() {
        let p = malloc(200 * 1024);
        assert!(!p.is_null());
        // SAFETY: p is a live block; these are address computations only, nothing is read.
        unsafe {
            let size = usable_size(p, "test");
            assert!(owns(p));
            assert!(owns(p.add(size - 1)));
            // The rest of the 4 MiB chunk is not ours, whatever the map says about the chunk.
            assert!(!owns(p.add(size)));
            assert!(!owns(p.add(2 << 20)));
            free(p, "test");
        }
        // Freed, it may wait in the large cache (still ours); trimmed, it is gone.
        trim();
        assert!(!owns(p));
        let local = 0u8;
        assert!(!owns(&local));
    }
}
