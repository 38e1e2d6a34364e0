//! Arenas: 4 MiB chunk-aligned mappings cut into equal pools, and the global bookkeeping that
//! hands pools to heaps and gives memory back to the OS.
//!
//! Every arena holds pools of one kind (32 KiB, 128 KiB or 1 MiB; see `size_class`). Its
//! header lives outside it (in the `meta` region), so the arena's memory is all pools and
//! every pool starts on a multiple of its own size. The address map points the arena's chunk
//! at the header; from there `pool_of` finds a pointer's pool with a mask and a shift.
//!
//! Policy (all under `ARENAS`, which only slow paths take):
//! - A heap that needs a pool takes one from the most used arena of the kind that has a free
//!   pool (CPython's `usable_arenas` order), so lightly used arenas drain and can be unmapped.
//! - A pool that becomes empty comes back here and counts as *dirty* (its pages are resident
//!   though nothing lives there). Dirty pools that have been free for the purge delay
//!   (`POOLMALLOC_PURGE_DELAY`, 10 ms) are discarded (`MADV_DONTNEED`) by the next heap tick
//!   (`purge_aged`, see `heap::tick`), or at once when idle memory (dirty pools,
//!   plus the emptied pools heaps keep and the large-block cache: `stats::idle_bytes`) exceeds
//!   the purge threshold; all of them once idle memory passes `PURGE_HARD_FACTOR` times the
//!   threshold. The delay spares a program that frees a batch and allocates it again a moment
//!   later (a loop, an interpreter's garbage collection) the page faults of memory it is about
//!   to reuse; the bounds keep a program that frees a lot at once from keeping much. A program
//!   growing past its high-water mark in one pool size drops the dirty pools of the others at
//!   once (`purge_other_kinds`, from `heap::drop_idle_at_new_peak`).
//! - An arena whose pools are all free is unmapped, except one kept as a reserve to avoid
//!   map/unmap thrash at a boundary; `malloc_trim` gives the reserve back too.
//! - Arena headers are recycled, never unmapped: a racing lookup of a stale pointer reads a
//!   header that still exists. A header holds descriptors for its kind's pools only (17 KiB
//!   for 32 KiB pools, 1.6 KiB for 1 MiB ones), cut from the `meta` region next to one
//!   another: a Python process has four or more arenas of 1 MiB pools, each using a fraction
//!   of a page of header, and a mapping per header gave each a page of its own.
//! - A pool's descriptor is written when the pool is first handed out, not when the arena is
//!   mapped: the header of a small arena is 16 KiB of descriptors, and a program that uses a
//!   hundred pools of it should not have all of its pages resident. Pools handed back go on
//!   the arena's free list and are preferred to fresh ones (their pages may be resident).

use core::ptr;

use crate::addr_map::{self, CHUNK_SIZE};
use crate::os;
use crate::pool::{Pool, PoolState};
use crate::size_class::{NUM_POOL_KINDS, POOL_SHIFT};
use crate::stats;
use crate::sync::Lock;

pub const ARENA_SIZE: usize = CHUNK_SIZE;
/// Idle memory above this many times the threshold is discarded at once, delay or not.
const PURGE_HARD_FACTOR: usize = 4;
/// Pools in an arena of the smallest pool kind.
pub const MAX_POOLS: usize = ARENA_SIZE >> POOL_SHIFT[0];
const GRANULE_SHIFT: u32 = POOL_SHIFT[0];
const GRANULES: usize = ARENA_SIZE >> GRANULE_SHIFT;
// The descriptors of the smallest pools cost at most 1/256 of their memory (`POOL_SHIFT`).
const _: () = assert!(core::mem::size_of::<Pool>() << 8 <= 1 << POOL_SHIFT[0]);

#[repr(C)]
pub struct Arena {
    /// For each 32 KiB granule of the arena, the descriptor of the pool holding it: free's
    /// pool lookup is one indexed load whatever the pool size.
    pub granule_pool: [*mut Pool; GRANULES],
    pub base: *mut u8,
    pub kind: u32,
    /// The kind this header was sized for (`header_bytes`): it can hold that kind's
    /// descriptors, or fewer.
    header_kind: u32,
    pub pool_shift: u32,
    pub npools: u32,
    /// Pools whose descriptors have been written: `pools[..formatted]`. The others were never
    /// handed out; their granules point at `heap::EMPTY_POOL`, where every free fails.
    pub formatted: u32,
    /// Free pools, formatted or not; the arena is on its kind's usable list iff `nfree > 0`
    /// and it is live.
    pub nfree: u32,
    /// Free pools whose pages may be resident.
    pub ndirty: u32,
    pub free_pools: *mut Pool,
    /// Links in the kind's usable list, or in the header free list when recycled.
    pub next: *mut Arena,
    pub prev: *mut Arena,
    /// Descriptors: as many as the header's kind has pools, which is all of this array only
    /// for the smallest pools. Never take a reference to the array or to a whole `Arena`
    /// (`pool_at` gives a descriptor's address).
    pools: [Pool; MAX_POOLS],
}

/// Bytes of a header sized for arenas of `kind`.
const fn header_bytes(kind: usize) -> usize {
    core::mem::offset_of!(Arena, pools)
        + (ARENA_SIZE >> POOL_SHIFT[kind]) * core::mem::size_of::<Pool>()
}

const _: () = assert!(header_bytes(0) <= crate::meta::MAX_RECORD);
const _: () = assert!(core::mem::align_of::<Arena>() <= crate::meta::RECORD_ALIGN);

/// The descriptor of pool `i` of `arena`.
///
/// # Safety
/// `arena` is a live header and `i` is below its kind's pool count.
#[inline(always)]
pub unsafe fn pool_at(arena: *mut Arena, i: usize) -> *mut Pool {
    // SAFETY: per the contract the descriptor lies inside the header's memory; no reference
    // to the (possibly partly allocated) array is made.
    unsafe { ptr::addr_of_mut!((*arena).pools).cast::<Pool>().add(i) }
}

struct Arenas {
    /// Per kind, arenas with at least one free pool (full arenas are on no list).
    usable: [*mut Arena; NUM_POOL_KINDS],
    /// An empty arena kept to avoid unmapping and mapping again at once.
    reserve: *mut Arena,
    /// Recycled headers, by the kind they were sized for.
    spare_headers: [*mut Arena; NUM_POOL_KINDS],
    /// When the last delayed purge looked at the pools (`os::now_ms`).
    last_purge_scan_ms: u32,
}

// SAFETY: the raw pointers are only used while holding the lock around `Arenas`.
unsafe impl Send for Arenas {}

static ARENAS: Lock<Arenas> = Lock::new(Arenas::new());

impl Arenas {
    const fn new() -> Arenas {
        Arenas {
            usable: [ptr::null_mut(); NUM_POOL_KINDS],
            reserve: ptr::null_mut(),
            spare_headers: [ptr::null_mut(); NUM_POOL_KINDS],
            last_purge_scan_ms: 0,
        }
    }
}

/// The pool holding address `p` of `arena`.
///
/// # Safety
/// `arena` must be the live header the address map gives for `p`.
#[inline(always)]
pub unsafe fn pool_of(arena: *mut Arena, p: usize) -> *mut Pool {
    // SAFETY: the index is masked to the arena's granules.
    unsafe {
        *(*arena)
            .granule_pool
            .get_unchecked((p & (ARENA_SIZE - 1)) >> GRANULE_SHIFT)
    }
}

/// Takes a Free pool of `kind` for a heap. Null if the OS refuses memory.
pub fn acquire_pool(kind: usize) -> *mut Pool {
    let mut a = ARENAS.lock();
    let mut best: *mut Arena = ptr::null_mut();
    let mut cur = a.usable[kind];
    // SAFETY: arenas on the usable list are live headers; we hold the lock.
    unsafe {
        while !cur.is_null() {
            if best.is_null() || (*cur).nfree < (*best).nfree {
                best = cur;
                if (*best).nfree == 1 {
                    break;
                }
            }
            cur = (*cur).next;
        }
    }
    if best.is_null() {
        best = new_arena(&mut a, kind);
        if best.is_null() {
            return ptr::null_mut();
        }
    }
    // SAFETY: best is a live arena with nfree > 0 and we hold the lock.
    unsafe {
        let mut pool = (*best).free_pools;
        if pool.is_null() {
            // nfree > 0 and no pool handed back: a never formatted one is left.
            pool = format_next_pool(best);
        } else {
            (*best).free_pools = (*pool).next;
        }
        (*best).nfree -= 1;
        if (*pool).dirty {
            (*pool).dirty = false;
            (*best).ndirty -= 1;
            stats::global().dirty.sub(1 << (*best).pool_shift);
        }
        if (*best).nfree == 0 {
            unlink(&mut a.usable[kind], best);
        }
        (*pool).next = ptr::null_mut();
        (*pool).prev = ptr::null_mut();
        stats::global().pools_acquired.add(1);
        stats::global().bytes_in_use.add(1 << (*best).pool_shift);
        pool
    }
}

/// Gives an empty pool (used == 0, owner cleared, on no list) back to its arena.
///
/// # Safety
/// `pool` must come from `acquire_pool`, be on no list, and hold no live block.
pub unsafe fn release_pool(pool: *mut Pool) {
    let mut a = ARENAS.lock();
    // SAFETY: the pool's arena is live while it has a pool out; we hold the lock.
    unsafe {
        let arena = (*pool).arena;
        let kind = (*arena).kind as usize;
        let was_dirty = (*pool).carved > 0;
        (*pool).forget_blocks();
        (*pool).state = PoolState::Free;
        (*pool).block_size = 0;
        (*pool).next = (*arena).free_pools;
        (*arena).free_pools = pool;
        (*arena).nfree += 1;
        if was_dirty {
            (*pool).dirty = true;
            (*pool).freed_at_ms = os::now_ms();
            (*arena).ndirty += 1;
            stats::global().dirty.add(1 << (*arena).pool_shift);
        }
        stats::global().bytes_in_use.sub(1 << (*arena).pool_shift);
        if (*arena).nfree == 1 {
            push_front(&mut a.usable[kind], arena);
        }
        if (*arena).nfree == (*arena).npools {
            retire_arena(&mut a, arena);
        }
        maybe_purge(&mut a);
    }
}

/// Applies the purge policy (see the module comment) if idle memory is over the threshold.
fn maybe_purge(a: &mut Arenas) {
    let idle = stats::idle_bytes();
    let threshold = crate::options::purge_threshold();
    if idle <= threshold {
        return;
    }
    if idle > threshold.saturating_mul(PURGE_HARD_FACTOR) {
        // SAFETY: the caller holds the arena lock, which `a` borrows from.
        unsafe { purge(a, None) };
        return;
    }
    // Scanning every pool is not free: at most once per millisecond.
    let now = os::now_ms();
    if now != a.last_purge_scan_ms {
        a.last_purge_scan_ms = now;
        // SAFETY: as above.
        unsafe { purge(a, Some(now)) };
    }
}

/// Discards the dirty free pools that have waited the purge delay, whatever the idle total:
/// the decay half of the policy, run by heap ticks. Skipped when another thread holds the
/// arena lock (it will tick again).
pub fn purge_aged(now: u32) {
    if stats::global().dirty.get() == 0 {
        return;
    }
    let Some(mut a) = ARENAS.try_lock() else {
        return;
    };
    // SAFETY: we hold the arena lock.
    unsafe { purge(&mut a, Some(now)) };
}

/// Discards the dirty free pools of every kind but `kind`, delay or not (see
/// `heap::drop_idle_at_new_peak`).
pub fn purge_other_kinds(kind: Option<usize>) {
    if stats::global().dirty.get() == 0 {
        return;
    }
    let mut a = ARENAS.lock();
    // SAFETY: we hold the lock.
    unsafe { purge_except(&mut a, None, kind) };
}

/// Returns every free page to the OS: discards all dirty free pools and unmaps the reserve.
/// Returns whether anything was released.
pub fn trim() -> bool {
    let mut a = ARENAS.lock();
    let had = stats::global().dirty.get() > 0 || !a.reserve.is_null();
    // SAFETY: we hold the lock.
    unsafe {
        purge(&mut a, None);
        let reserve = a.reserve;
        if !reserve.is_null() {
            a.reserve = ptr::null_mut();
            unmap_arena(&mut a, reserve);
        }
    }
    had
}

/// Maps and formats an arena of `kind` (or reformats the reserve) and puts it on the usable list.
fn new_arena(a: &mut Arenas, kind: usize) -> *mut Arena {
    let r = a.reserve;
    let mut reused: *mut Arena = ptr::null_mut();
    if !r.is_null() {
        a.reserve = ptr::null_mut();
        // SAFETY: the reserve is a live, empty arena on no list; we hold the lock.
        unsafe {
            if (*r).kind as usize == kind {
                push_front(&mut a.usable[kind], r);
                return r;
            }
            if header_bytes(kind) <= header_bytes((*r).header_kind as usize) {
                // Another kind: its free pools are re-cut, so forget (and drop) their pages.
                drop_dirty(a, r);
                os::discard((*r).base, ARENA_SIZE);
                reused = r;
            } else {
                // Its header cannot describe this kind's pools: give it back, map another.
                unmap_arena(a, r);
            }
        }
    }
    let arena = if !reused.is_null() {
        reused
    } else {
        let base = os::map_aligned(ARENA_SIZE, ARENA_SIZE);
        if base.is_null() {
            return ptr::null_mut();
        }
        let header = take_header(a, kind);
        if header.is_null() {
            // SAFETY: base is our fresh mapping, unknown to anyone.
            unsafe { os::unmap(base, ARENA_SIZE) };
            return ptr::null_mut();
        }
        // SAFETY: header is a zeroed or recycled header we own under the lock.
        unsafe { (*header).base = base };
        if !addr_map::register(
            base as usize,
            ARENA_SIZE,
            header as usize | addr_map::TAG_ARENA,
        ) {
            // SAFETY: as above.
            unsafe {
                os::unmap(base, ARENA_SIZE);
                (*header).next = a.spare_headers[kind];
            }
            a.spare_headers[kind] = header;
            return ptr::null_mut();
        }
        let g = stats::global();
        g.arenas_allocated.add(1);
        g.arenas_current.add(1);
        g.bytes_mapped.add(ARENA_SIZE);
        header
    };
    // SAFETY: arena is a header we own under the lock, with base set.
    unsafe { format_arena(arena, kind) };
    push_front(&mut a.usable[kind], arena);
    arena
}

/// Cuts `arena` into free pools of `kind`, none of them formatted yet.
///
/// # Safety
/// The arena must be empty and owned by the caller (lock held).
unsafe fn format_arena(arena: *mut Arena, kind: usize) {
    // SAFETY: per the contract we own the header.
    unsafe {
        let shift = POOL_SHIFT[kind];
        let npools = (ARENA_SIZE >> shift) as u32;
        (*arena).kind = kind as u32;
        (*arena).pool_shift = shift;
        (*arena).npools = npools;
        (*arena).formatted = 0;
        (*arena).nfree = npools;
        (*arena).ndirty = 0;
        (*arena).free_pools = ptr::null_mut();
        // A stray pointer into a pool never handed out meets a descriptor with no blocks:
        // free reports it as invalid (and writes nothing).
        (*arena).granule_pool = [crate::heap::empty_pool(); GRANULES];
    }
}

/// Writes the descriptor of the arena's first never formatted pool and returns it (Free, on
/// no list).
///
/// # Safety
/// Lock held; `arena` live with `formatted < npools`.
unsafe fn format_next_pool(arena: *mut Arena) -> *mut Pool {
    // SAFETY: per the contract the descriptor is unused and ours to write.
    unsafe {
        let i = (*arena).formatted as usize;
        debug_assert!(i < (*arena).npools as usize);
        (*arena).formatted += 1;
        let shift = (*arena).pool_shift;
        let pool = pool_at(arena, i);
        pool.write(Pool::EMPTY);
        // Never null: a thread without a heap has a null TLS heap, and must not look
        // like the owner of a free pool.
        (*pool).owner = core::sync::atomic::AtomicPtr::new(crate::heap::no_owner());
        (*pool).start = (*arena).base.add(i << shift);
        (*pool).arena = arena;
        (*pool).index = i as u32;
        let per_pool = 1usize << (shift - GRANULE_SHIFT);
        for g in i * per_pool..(i + 1) * per_pool {
            (*arena).granule_pool[g] = pool;
        }
        pool
    }
}

/// An arena just became empty: keep it as the reserve or unmap it.
///
/// # Safety
/// Lock held; `arena` live, empty and on its usable list.
unsafe fn retire_arena(a: &mut Arenas, arena: *mut Arena) {
    // SAFETY: per the contract.
    unsafe {
        unlink(&mut a.usable[(*arena).kind as usize], arena);
        if a.reserve.is_null() {
            a.reserve = arena;
        } else {
            unmap_arena(a, arena);
        }
    }
}

/// # Safety
/// Lock held; `arena` live, empty and on no list.
unsafe fn unmap_arena(a: &mut Arenas, arena: *mut Arena) {
    // SAFETY: per the contract nothing lives in the arena.
    unsafe {
        drop_dirty(a, arena);
        addr_map::unregister((*arena).base as usize, ARENA_SIZE);
        os::unmap((*arena).base, ARENA_SIZE);
        (*arena).npools = 0;
        (*arena).formatted = 0;
        let header_kind = (*arena).header_kind as usize;
        (*arena).next = a.spare_headers[header_kind];
        a.spare_headers[header_kind] = arena;
    }
    let g = stats::global();
    g.arenas_reclaimed.add(1);
    g.arenas_current.sub(1);
    g.bytes_mapped.sub(ARENA_SIZE);
    g.bytes_returned.add(ARENA_SIZE);
}

/// Forgets the dirty accounting of every free pool of `arena`. `_locked` is the caller's
/// arena state, which proves it holds the lock.
unsafe fn drop_dirty(_locked: &mut Arenas, arena: *mut Arena) {
    // SAFETY: lock held by the caller; descriptors of a live arena.
    unsafe {
        for i in 0..(*arena).formatted as usize {
            let pool = pool_at(arena, i);
            if (*pool).dirty {
                (*pool).dirty = false;
                stats::global().dirty.sub(1 << (*arena).pool_shift);
            }
        }
        (*arena).ndirty = 0;
    }
}

/// Discards the pages of the dirty free pools, coalescing neighbours into one call: all of
/// them, or with `Some(now)` those free for at least the purge delay.
unsafe fn purge(a: &mut Arenas, now: Option<u32>) {
    // SAFETY: per the contract.
    unsafe { purge_except(a, now, None) }
}

/// `purge`, leaving alone the arenas of pool kind `spared` (if any). Out of line: one copy
/// serves `purge`'s callers and `purge_other_kinds`.
#[inline(never)]
unsafe fn purge_except(a: &mut Arenas, now: Option<u32>, spared: Option<usize>) {
    // SAFETY: lock held; every arena on a usable list, and the reserve, is live.
    unsafe {
        for (kind, &head) in a.usable.iter().enumerate() {
            if Some(kind) == spared {
                continue;
            }
            let mut cur = head;
            while !cur.is_null() {
                let next = (*cur).next;
                purge_arena(cur, now);
                cur = next;
            }
        }
        if !a.reserve.is_null() && Some((*a.reserve).kind as usize) != spared {
            purge_arena(a.reserve, now);
        }
    }
}

/// `purge` for one arena. Out of line: `purge` calls it from two places, and each inlined copy
/// was 1.5 KiB of code resident in every process.
///
/// # Safety
/// Arena lock held; `arena` live.
#[inline(never)]
unsafe fn purge_arena(arena: *mut Arena, now: Option<u32>) {
    let delay = crate::options::purge_delay_ms();
    // SAFETY: per the contract.
    unsafe {
        if (*arena).ndirty == 0 {
            return;
        }
        let size = 1usize << (*arena).pool_shift;
        let mut run_start: *mut u8 = ptr::null_mut();
        let mut run_len = 0usize;
        for i in 0..(*arena).formatted as usize {
            let pool = pool_at(arena, i);
            let old_enough = match now {
                None => true,
                Some(t) => t.wrapping_sub((*pool).freed_at_ms) >= delay,
            };
            if (*pool).dirty && (*pool).state == PoolState::Free && old_enough {
                (*pool).mark_clean();
                (*pool).dirty = false;
                (*arena).ndirty -= 1;
                stats::global().dirty.sub(size);
                if run_len == 0 {
                    run_start = (*pool).start;
                }
                run_len += size;
            } else if run_len != 0 {
                os::discard(run_start, run_len);
                stats::global().bytes_returned.add(run_len);
                run_len = 0;
            }
        }
        if run_len != 0 {
            os::discard(run_start, run_len);
            stats::global().bytes_returned.add(run_len);
        }
    }
}

/// A header for an arena of `kind`: a recycled one, or a never used one (`meta`, zeroed).
fn take_header(a: &mut Arenas, kind: usize) -> *mut Arena {
    if !a.spare_headers[kind].is_null() {
        let h = a.spare_headers[kind];
        // SAFETY: spare headers are ours under the lock.
        a.spare_headers[kind] = unsafe { (*h).next };
        return h;
    }
    let h = crate::meta::take(header_bytes(kind)) as *mut Arena;
    if !h.is_null() {
        // SAFETY: the record is ours, `header_bytes(kind)` long; `header_kind` lies inside it.
        unsafe { (*h).header_kind = kind as u32 };
    }
    h
}

fn push_front(head: &mut *mut Arena, arena: *mut Arena) {
    // SAFETY: lock held by every caller; arena is live.
    unsafe {
        (*arena).prev = ptr::null_mut();
        (*arena).next = *head;
        if !(*head).is_null() {
            (**head).prev = arena;
        }
    }
    *head = arena;
}

fn unlink(head: &mut *mut Arena, arena: *mut Arena) {
    // SAFETY: lock held by every caller; arena is on the list headed by `head`.
    unsafe {
        if !(*arena).prev.is_null() {
            (*(*arena).prev).next = (*arena).next;
        } else {
            *head = (*arena).next;
        }
        if !(*arena).next.is_null() {
            (*(*arena).next).prev = (*arena).prev;
        }
        (*arena).next = ptr::null_mut();
        (*arena).prev = ptr::null_mut();
    }
}

/// A snapshot of arena-level figures for statistics, taken under the lock.
#[derive(Default, Clone, Copy)]
pub struct ArenaCensus {
    pub arenas: usize,
    pub free_pools: usize,
    pub free_pool_bytes: usize,
    pub dirty_bytes: usize,
}

/// Calls `f(pool, pool_size)` on every pool in use of every live arena (under the lock), and
/// returns the arena-level census. `f` must not take the arena lock.
pub fn for_each_pool(mut f: impl FnMut(&Pool, usize)) -> ArenaCensus {
    let _locked = ARENAS.lock();
    let mut census = ArenaCensus {
        dirty_bytes: stats::global().dirty.get(),
        ..Default::default()
    };
    // Full arenas are on no list, so walk the address map, which knows every live arena.
    crate::addr_map::for_each_entry(|entry| {
        if entry & addr_map::TAG_ARENA == 0 {
            return;
        }
        let arena = (entry - addr_map::TAG_ARENA) as *const Arena;
        census.arenas += 1;
        // SAFETY: a map entry with the arena tag is a live arena header; lock held.
        unsafe {
            let size = 1usize << (*arena).pool_shift;
            census.free_pools += (*arena).nfree as usize;
            census.free_pool_bytes += (*arena).nfree as usize * size;
            for i in 0..(*arena).formatted as usize {
                let pool = &*pool_at(arena as *mut Arena, i);
                if pool.state != PoolState::Free {
                    f(pool, size);
                }
            }
        }
    });
    census
}

/// Walks every live arena and checks its bookkeeping: the free-pool count, the free list,
/// the dirty accounting, and the shape of every pool in use. Returns the number of problems
/// found, after printing the first ones on stderr.
pub fn check() -> usize {
    let _locked = ARENAS.lock();
    let mut problems = 0usize;
    let mut dirty_total = 0usize;
    let mut report = |what: &str, arena: *const Arena| {
        problems += 1;
        if problems <= 8 {
            crate::diag::complain("arena check", what, arena as usize);
        }
    };
    crate::addr_map::for_each_entry(|entry| {
        if entry & addr_map::TAG_ARENA == 0 {
            return;
        }
        let arena = (entry - addr_map::TAG_ARENA) as *const Arena;
        // SAFETY: a map entry with the arena tag is a live arena header; lock held.
        unsafe {
            let npools = (*arena).npools as usize;
            let formatted = (*arena).formatted as usize;
            let size = 1usize << (*arena).pool_shift;
            let (mut free, mut dirty) = (0u32, 0u32);
            if formatted > npools {
                report("more pools formatted than the arena holds", arena);
            }
            for i in 0..formatted.min(npools) {
                let pool = &*pool_at(arena as *mut Arena, i);
                if pool.state == PoolState::Free {
                    free += 1;
                    if pool.dirty {
                        dirty += 1;
                        dirty_total += size;
                    }
                } else if pool.block_size == 0
                    || pool.carved > pool.capacity
                    || pool.capacity as usize * pool.block_size as usize > size
                {
                    report("pool in use with a bad shape in arena", arena);
                }
            }
            let mut listed = 0u32;
            let mut p = (*arena).free_pools;
            while !p.is_null() && listed <= npools as u32 {
                if (*p).state != PoolState::Free {
                    report("pool on the free list is not free, arena", arena);
                }
                listed += 1;
                p = (*p).next;
            }
            let never_formatted = (npools - formatted.min(npools)) as u32;
            if free + never_formatted != (*arena).nfree || listed != free {
                report("free-pool count disagrees with the pools, arena", arena);
            }
            if dirty != (*arena).ndirty {
                report("dirty-pool count disagrees with the pools, arena", arena);
            }
        }
    });
    if dirty_total != stats::global().dirty.get() {
        problems += 1;
        crate::diag::complain(
            "arena check",
            "dirty bytes disagree with the pools; counted",
            dirty_total,
        );
    }
    problems
}

/// Fork support.
pub fn lock_for_fork() {
    ARENAS.hold_for_fork();
}
/// # Safety
/// Only after `lock_for_fork`.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { ARENAS.release_after_fork() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::empty_pool;

    #[test]
    fn an_arena_writes_only_the_descriptors_of_pools_it_hands_out() {
        let size = core::mem::size_of::<Arena>().next_multiple_of(os::PAGE_SIZE);
        let header = os::map(size, 0) as *mut Arena;
        assert!(!header.is_null());
        // Nothing here touches the pools' memory, so the base need not be mapped.
        let base = 64usize << 30;
        let pool_size = 1usize << POOL_SHIFT[0];
        // SAFETY: the header is our own fresh mapping, reachable from no list or map; the
        // functions under test write only the header.
        unsafe {
            (*header).base = base as *mut u8;
            format_arena(header, 0);
            assert_eq!((*header).formatted, 0);
            assert_eq!((*header).nfree, (*header).npools);
            assert!((*header).granule_pool.iter().all(|&p| p == empty_pool()));

            let first = format_next_pool(header);
            let second = format_next_pool(header);
            assert_eq!((*header).formatted, 2);
            assert_eq!((*first).index, 0);
            assert_eq!((*second).start as usize, base + pool_size);
            assert_eq!((*second).state, PoolState::Free);
            assert_eq!(pool_of(header, base + pool_size + 100), second);
            // A pool not handed out yet still finds a descriptor: the one with no blocks.
            assert_eq!(pool_of(header, base + 3 * pool_size), empty_pool());

            // Eager formatting would have written all 256 descriptors (every page of the
            // header); lazily, only the pages up to the second one are touched.
            let written = (*header).pools.as_ptr().add(2) as usize - header as usize;
            let resident = os::resident_pages(header as *mut u8, size);
            assert!(resident >= 1);
            assert!(
                resident <= written.div_ceil(os::PAGE_SIZE),
                "{resident} pages"
            );
            os::unmap(header as *mut u8, size);
        }
    }

    /// A header holds its kind's descriptors and no more: those of an arena of 1 MiB pools
    /// fit in a fraction of a page, and the next header starts after them.
    #[test]
    fn a_header_is_sized_for_its_kind() {
        let mut a = Arenas::new();
        let header = take_header(&mut a, 2);
        assert!(!header.is_null());
        // SAFETY: the header is ours, reachable from no map; formatting writes only it.
        unsafe {
            (*header).base = (64usize << 30) as *mut u8;
            format_arena(header, 2);
            for _ in 0..(*header).npools {
                format_next_pool(header);
            }
            let end = pool_at(header, (*header).npools as usize).cast::<u8>();
            assert_eq!(end as usize - header as usize, header_bytes(2));
            assert!(header_bytes(2) < os::PAGE_SIZE / 2);
            let next = take_header(&mut a, 2);
            assert!(next as usize >= end as usize || (next as usize) < header as usize);
        }
    }

    #[test]
    fn a_reserve_is_reused_only_if_its_header_fits() {
        let mut a = Arenas::new();
        for (reserve_kind, kind, fits) in [(2, 0, false), (0, 2, true)] {
            let r = new_arena(&mut a, reserve_kind);
            assert!(!r.is_null());
            unlink(&mut a.usable[reserve_kind], r);
            a.reserve = r;
            let arena = new_arena(&mut a, kind);
            assert!(a.reserve.is_null());
            // SAFETY: both are headers of this test's arenas, under its own `Arenas`.
            unsafe {
                assert_eq!(arena == r, fits);
                assert_eq!((*arena).kind as usize, kind);
                assert!(header_bytes(kind) <= header_bytes((*arena).header_kind as usize));
                if !fits {
                    assert_eq!(a.spare_headers[reserve_kind], r, "its header is kept");
                }
                unlink(&mut a.usable[kind], arena);
                unmap_arena(&mut a, arena);
            }
        }
    }
}
