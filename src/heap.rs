//! Thread heaps: each thread allocates from pools it owns, with no lock and no atomic
//! read-modify-write on the common path.
//!
//! A heap keeps, per size class, a list of *available* pools (`avail[class]`, whose head is
//! where malloc pops from) and one list of *full* pools (no free block when last looked at).
//! An empty class list points at `EMPTY_POOL`, whose free list is null, so the fast path needs
//! no "is there a pool" test: popping from it fails into the slow path.
//!
//! The head of each class list holds one extra count in `used` (the *head bias*): a pool that
//! is being allocated from never looks empty, so the malloc/free pair on one block never leaves
//! the fast path, and only pools that are not the head are given back when they empty.
//!
//! Life of a heap: created on the thread's first allocation (`attach_thread`), registered with
//! the thread-exit key; at exit (`thread_exit`) its pools with live blocks are *abandoned* (see
//! `remote`) for other heaps to adopt, its empty pools go back to their arenas, its counters are
//! merged into the registry, and the thread's TLS points at `DEAD`: later allocations by that
//! thread (other TLS destructors) are served, under a lock, by the `ORPHAN` heap.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arena;
use crate::pool::{self, Block, Pool, PoolState, FULL_BIAS};
use crate::remote;
use crate::size_class::{
    pool_kind, FIRST_MULTI_PAGE_CLASS, FIRST_SWEPT_CLASS, NUM_CLASSES, POOL_SHIFT,
};
use crate::stats::{self, call, CallCounts, CallTotals};
use crate::sync::Lock;
use crate::tls;

#[repr(C)]
pub struct Heap {
    /// Per class: head of the available-pool list, or `EMPTY_POOL`.
    pub avail: [*mut Pool; NUM_CLASSES],
    /// Head of the full-pool list (any class), or null.
    pub full: *mut Pool,
    /// Set by other threads after they free into one of our pools: the slow path then looks
    /// at full pools for blocks to collect.
    pub remote_hint: AtomicBool,
    /// Bytes of empty pools kept on class lists behind their heads (at most KEEP_EMPTY_BYTES).
    /// Invariant: a non-head pool on a class list with `used == 0` is one of these.
    kept_empty: usize,
    /// Bytes allocated from multi-page classes since their free blocks were last swept.
    multi_page_bytes: usize,
    /// Free multi-page blocks may still hold their pages: ticks sweep until they do not.
    multi_page_unswept: bool,
    /// Multi-page classes (bit `class - FIRST_MULTI_PAGE_CLASS`) that took a block from a
    /// free list since the last sweep: only their free blocks wait for a second sweep.
    multi_page_reused: u32,
    /// `multi_page_reused` as the last sweep found it: a sweep that runs between a loop's
    /// malloc and its free must not make the loop's size look unused to that free.
    multi_page_reused_before: u32,
    /// The heap's call count (`CallCounts::total`) when `free_multi_page` last gave a block's
    /// pages back.
    last_free_discard_call: u64,
    /// When they were last swept (`os::now_ms`).
    last_sweep_ms: u32,
    /// Per class, carves since the last end of a batch of calls (`calls_batch_done`), up
    /// to 255: the first `SPARSE_CARVES` carve sparsely (see `Pool::carve`).
    carved_lately: [u8; NUM_CLASSES],
    /// Classes allocated from since the last tick, as the medium sizes' malloc path notes
    /// them (`alloc_class_noting`, on its pops from a free list): a swept medium class not in
    /// it was idle for a whole tick interval (`sweep_resting`).
    allocated_lately: [bool; NUM_CLASSES],
    /// When this heap last gave back aged idle memory (`tick`).
    last_tick_ms: u32,
    pub counts: CallCounts,
    /// Links in the registry's live list or free list.
    next: *mut Heap,
    prev: *mut Heap,
}

// `Heap::multi_page_reused` has a bit per multi-page class.
const _: () = assert!(NUM_CLASSES - FIRST_MULTI_PAGE_CLASS <= 32);

// SAFETY: a heap is touched only by its thread, or under the registry lock when it is not
// attached to a thread (or, for ORPHAN, under its own lock).
unsafe impl Send for Heap {}
// SAFETY: the only shared statics of this type (DEAD, NO_OWNER) are never written (they are
// read-only once relocated, see DEAD); live heaps are shared only through their atomic hint.
unsafe impl Sync for Heap {}

/// The pool that has no blocks: `avail[c]` points here when class `c` has no pool.
pub static EMPTY_POOL: Pool = Pool::EMPTY;

#[inline(always)]
pub fn empty_pool() -> *mut Pool {
    &EMPTY_POOL as *const Pool as *mut Pool
}

impl Heap {
    const fn new() -> Heap {
        Heap {
            avail: [&EMPTY_POOL as *const Pool as *mut Pool; NUM_CLASSES],
            full: ptr::null_mut(),
            remote_hint: AtomicBool::new(false),
            kept_empty: 0,
            multi_page_bytes: 0,
            multi_page_unswept: false,
            multi_page_reused: 0,
            multi_page_reused_before: 0,
            last_free_discard_call: 0,
            last_sweep_ms: 0,
            carved_lately: [0; NUM_CLASSES],
            allocated_lately: [false; NUM_CLASSES],
            last_tick_ms: 0,
            counts: CallCounts::NEW,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        }
    }
}

// DEAD and NO_OWNER are never written, and they live in the relocation-read-only data (RELRO),
// which the dynamic linker makes read-only once it has relocated it. Their class lists point at
// EMPTY_POOL, so the linker writes them at load: in the writable data they dirtied a page of
// their own in every process that loads the library (RELRO's page is dirtied anyway), and
// there a stray write would fault instead of going unnoticed.

/// The TLS value of a thread whose heap was handed over at exit. Never owns a pool, never
/// written: its class lists are all empty, so its allocations fall to the slow path.
#[link_section = ".data.rel.ro.sentinel_heaps"]
pub static DEAD: Heap = Heap::new();
/// The owner of pools that no heap owns (Free or Abandoned). Only its address is used.
#[link_section = ".data.rel.ro.sentinel_heaps"]
pub static NO_OWNER: Heap = Heap::new();
/// Serves threads whose heap is gone (allocations from late TLS destructors).
static ORPHAN: Lock<Heap> = Lock::new(Heap::new());

#[inline(always)]
pub fn dead() -> *mut Heap {
    &DEAD as *const Heap as *mut Heap
}
#[inline(always)]
pub fn no_owner() -> *mut Heap {
    &NO_OWNER as *const Heap as *mut Heap
}

/// Set in a pool's `owner` word while a heap owns a pool of a multi-page class.
const MULTI_PAGE_OWNER_TAG: usize = 1;

/// The `owner` word `pool`, which `heap` owns, must carry now. A multi-page pool carries the
/// heap's address with its low bit set: no thread's TLS heap equals it, so the free fast
/// path's ownership test sends those frees to `free_multi_page` (which may give a block's
/// pages back at once), and the frees of every other class pay nothing for it. A pool of a
/// swept medium class carries the tag while its discarded set holds blocks: those may read as
/// zero, so a second free of one would pass the fast path's key check, and `free_multi_page`
/// checks the set instead. Set when the set fills (`sweep_resting`), cleared when it empties.
///
/// # Safety
/// `pool` is a formatted pool that `heap`'s thread owns (or is adopting).
#[inline]
pub unsafe fn pool_owner_word(heap: *mut Heap, pool: *const Pool) -> *mut Heap {
    // SAFETY: per the contract.
    let (class, discarded) = unsafe { ((*pool).class as usize, (*pool).has_discarded()) };
    if class >= FIRST_MULTI_PAGE_CLASS || (class >= FIRST_SWEPT_CLASS && discarded) {
        multi_page_owner_word(heap)
    } else {
        heap
    }
}

/// `pool_owner_word` for a pool of `class` just formatted (no discarded blocks yet), without
/// reading the descriptor: refills format pools often in a loop filling them.
#[inline(always)]
fn fresh_pool_owner_word(heap: *mut Heap, class: usize) -> *mut Heap {
    if class >= FIRST_MULTI_PAGE_CLASS {
        multi_page_owner_word(heap)
    } else {
        heap
    }
}

/// The `owner` word of the multi-page pools `heap` owns. Never null, nor any heap's address.
#[inline(always)]
pub fn multi_page_owner_word(heap: *mut Heap) -> *mut Heap {
    (heap as usize | MULTI_PAGE_OWNER_TAG) as *mut Heap
}

/// The heap an `owner` word names (`no_owner()` for a free or abandoned pool).
#[inline(always)]
pub fn owner_heap(word: *mut Heap) -> *mut Heap {
    (word as usize & !MULTI_PAGE_OWNER_TAG) as *mut Heap
}

struct Registry {
    live: *mut Heap,
    /// Heaps of exited threads, for reuse.
    spare: *mut Heap,
    /// Counts of exited threads.
    dead_counts: CallTotals,
}
// SAFETY: the pointers are only followed under the registry lock.
unsafe impl Send for Registry {}

static REGISTRY: Lock<Registry> = Lock::new(Registry {
    live: ptr::null_mut(),
    spare: ptr::null_mut(),
    dead_counts: CallTotals::ZERO,
});

/// Empty pools a heap keeps for reuse before giving them back to their arenas: by their own
/// class first, by any class of their pool size when it needs a new pool (`take_kept_pool`).
const KEEP_EMPTY_BYTES: usize = 1 << 20;

/// A class's first carves in a batch of calls take a page's worth at most (`refill_and_pop`).
/// Two rather than one: in CPython's start-up many classes over 1 KiB carve twice in a batch
/// and rarely more, and their second carve of four blocks left 40 KiB of pages unused
/// (`python -c pass`, VmHWM); a class filling pools in a loop pays one more sparse carve per
/// batch (8 KiB batches: 2 instructions per op in callgrind).
const SPARSE_CARVES: u8 = 2;
/// Kept empty pools count as idle memory, which all heaps, free pools and the large cache
/// share (`stats::idle_bytes`), so 32 threads do not keep 32 times the idle memory of one.
/// Dirty free pools are not counted here: they are the first to be discarded when the sum
/// goes over the bound (`arena::release_pool`), so a kept pool, which is reused for free,
/// takes precedence over them.
fn keep_globally(bytes: usize) -> bool {
    let g = stats::global();
    if g.kept_empty.get() + g.large_cached_resident.get() + bytes
        > crate::options::purge_threshold()
    {
        return false;
    }
    stats::global().kept_empty.add(bytes);
    true
}

fn unkeep(heap: *mut Heap, bytes: usize) {
    // SAFETY: the caller owns the heap.
    unsafe { (*heap).kept_empty -= bytes };
    stats::global().kept_empty.sub(bytes);
}

fn pool_bytes(pool: *mut Pool) -> usize {
    // SAFETY: a pool in use belongs to a live arena.
    unsafe { 1usize << (*(*pool).arena).pool_shift }
}

/// The fast path: a block of `class` from the calling thread's heap, counted as a call of
/// entry point `CALL` (see `call`).
#[inline(always)]
pub fn alloc_class<const CALL: usize>(class: usize) -> *mut u8 {
    alloc_class_noting::<CALL, false>(class)
}

/// `alloc_class` that also notes, with `NOTE`, that the class is in use
/// (`Heap::allocated_lately`): one store, for the medium sizes' malloc path only, when it pops
/// a block (a loop's refills come between pops).
#[inline(always)]
pub fn alloc_class_noting<const CALL: usize, const NOTE: bool>(class: usize) -> *mut u8 {
    let heap = tls::heap();
    if !heap.is_null() {
        // SAFETY: a non-null TLS heap is this thread's heap (or DEAD, whose lists are all
        // EMPTY_POOL, so its pop fails before anything is written); class < NUM_CLASSES is
        // the caller's promise.
        unsafe {
            let pool = *(*heap).avail.get_unchecked(class);
            let b = (*pool).pop();
            if !b.is_null() {
                if NOTE {
                    *(*heap).allocated_lately.get_unchecked_mut(class) = true;
                }
                if (*heap).counts.bump(CALL) {
                    return after_batch_of_allocs(heap, CALL, b as *mut u8);
                }
                return b as *mut u8;
            }
        }
    }
    alloc_slow(class, CALL)
}

/// A heap sweeps its multi-page free blocks after allocating this many multi-page bytes...
const SWEEP_AFTER_BYTES: usize = 64 << 10;
/// ...but not more often than this, which bounds what sweeps and the page faults of reusing
/// swept blocks can cost a program that churns such blocks.
const SWEEP_INTERVAL_MS: u32 = 2;

/// A block for a request of `size` bytes, over `MULTI_PAGE_ABOVE`: one of a multi-page class.
///
/// Each such class has its own pools, so blocks freed in one class stay resident while the
/// next request, of another size, touches new pages: CPython's imports read every `.pyc` into
/// a block of a different size. glibc reuses freed memory across sizes; we instead give the
/// pages of free multi-page blocks back to the OS, in sweeps that follow allocation
/// (a program that allocates such blocks frees them too) and in heap ticks, at a bounded
/// rate. In a class the program reuses, only blocks that stayed free from one sweep to the next
/// are discarded (see `pool::DISCARD_MARK_WORD` and `sweep_multi_page`), so that blocks a
/// program keeps reusing are not discarded and faulted in again; ticks go on sweeping until
/// no free block holds its pages.
/// Before carving a new block, a request takes a free block of a slightly larger class
/// (`pop_multi_page`), as glibc's best fit would.
/// `call` is a runtime argument, not a const one like the fast paths' `CALL`: one copy of
/// this path serves every entry point (a copy per entry point cost 3 KiB of resident code,
/// for 7 instructions less per malloc+free of 16 KiB).
/// It takes the request's size, not its class, so that the class's computation sits here
/// once, not inlined in every entry point.
#[inline(never)]
pub fn alloc_multi_page(size: usize, call: usize) -> *mut u8 {
    let class = crate::size_class::class_of_multi_page(size);
    let heap = tls::heap();
    let mut p = pop_multi_page(heap, class, call);
    if p.is_null() {
        p = alloc_slow(class, call);
    }
    after_multi_page_alloc(p, class)
}

/// `alloc_multi_page` for the aligned path: a block of `class` itself, whose alignment the
/// caller relies on (a larger class's block may not have it).
pub fn alloc_multi_page_exact<const CALL: usize>(class: usize) -> *mut u8 {
    let p = alloc_class::<CALL>(class);
    if !p.is_null() {
        // SAFETY: p is a block of a multi-page class just taken from a pool of the caller's.
        unsafe { check_not_discarded(p) };
    }
    after_multi_page_alloc(p, class)
}

/// What every multi-page allocation does once it has its block `p` (null on failure).
fn after_multi_page_alloc(p: *mut u8, class: usize) -> *mut u8 {
    let heap = tls::heap();
    if p.is_null() || heap == dead() {
        return p;
    }
    // SAFETY: after an allocation succeeded the TLS heap is this thread's live heap (DEAD is
    // excluded above), and p is a block of a multi-page class.
    unsafe {
        pool::clear_discard_mark(p);
        (*heap).multi_page_unswept = true;
        (*heap).multi_page_bytes += crate::size_class::class_size(class);
        if (*heap).multi_page_bytes >= SWEEP_AFTER_BYTES {
            sweep_multi_page_if_due(heap, crate::os::now_ms());
        }
    }
    p
}

/// `Pool::check_popped` for a block `alloc_class` returned, whose pool is not at hand (the
/// malloc fast path, which the aligned path uses, does not check: the multi-page classes'
/// other paths do, in `pop_multi_page` and `refill_and_pop`).
///
/// # Safety
/// `p` is a block of a multi-page class that the calling thread just took from a pool it
/// owns (or holds under the orphan lock).
unsafe fn check_not_discarded(p: *mut u8) {
    // SAFETY: per the contract p is a pooled block of ours.
    unsafe {
        let pool = pool_of_block(p);
        if (*pool).has_discarded() {
            (*pool).check_popped(p as *mut Block);
        }
    }
}

/// The descriptor of the pool holding `p`.
///
/// # Safety
/// `p` lies in one of our live arenas (a pooled block not freed, or freed into a pool still
/// formatted).
unsafe fn pool_of_block(p: *mut u8) -> *mut Pool {
    let entry = crate::addr_map::lookup(p as usize);
    debug_assert!(entry & crate::addr_map::TAG_ARENA != 0);
    // SAFETY: per the contract the map entry is its live arena's header.
    unsafe {
        let arena = (entry - crate::addr_map::TAG_ARENA) as *mut crate::arena::Arena;
        crate::arena::pool_of(arena, p as usize)
    }
}

/// How many classes above its own a multi-page request may take a free block from: two are
/// at most half as large again. Only the tail of such a block goes unused, and it costs no
/// page the program does not touch; carving a block of the request's own class would touch
/// new pages while the free larger one waits for a sweep.
const BORROW_CLASSES: usize = 2;

/// A free block of `class`, or else of one of the `BORROW_CLASSES` classes above it, from the
/// free lists of `heap`'s head pools (no carving, no other pool); null if there is none.
/// Pool accounting needs nothing special: the block stays a block of its own pool, and
/// `free` and `malloc_usable_size` find its size there.
#[inline(always)]
fn pop_multi_page(heap: *mut Heap, class: usize, call: usize) -> *mut u8 {
    if heap.is_null() {
        return ptr::null_mut();
    }
    let last = if class + BORROW_CLASSES < NUM_CLASSES {
        class + BORROW_CLASSES
    } else {
        NUM_CLASSES - 1
    };
    for c in class..=last {
        // SAFETY: a non-null TLS heap is this thread's heap or DEAD, whose lists are all
        // EMPTY_POOL (its pop fails before anything is written); c < NUM_CLASSES.
        unsafe {
            let pool = *(*heap).avail.get_unchecked(c);
            let b = (*pool).pop();
            if !b.is_null() {
                (*heap).multi_page_reused |= 1 << (c - FIRST_MULTI_PAGE_CLASS);
                if (*pool).has_discarded() {
                    (*pool).check_popped(b);
                }
                if (*heap).counts.bump(call) {
                    calls_batch_done(heap, call);
                }
                return b as *mut u8;
            }
        }
    }
    ptr::null_mut()
}

/// Sweeps if the last sweep is `SWEEP_INTERVAL_MS` old. Restarts the byte count either way:
/// a loop of multi-page blocks then reads the clock once per `SWEEP_AFTER_BYTES`, not at
/// every allocation until the interval is over.
///
/// # Safety
/// The caller owns `heap`.
#[cold]
unsafe fn sweep_multi_page_if_due(heap: *mut Heap, now: u32) {
    // SAFETY: per the contract.
    unsafe {
        (*heap).multi_page_bytes = 0;
        if now.wrapping_sub((*heap).last_sweep_ms) >= SWEEP_INTERVAL_MS {
            (*heap).last_sweep_ms = now;
            sweep_multi_page(heap, false);
        }
    }
}

/// Discards the free blocks in `heap`'s multi-page pools that were free at the previous sweep
/// already, or all of them with `all` (`malloc_trim`; see `Pool::discard_free_blocks`). A
/// class that took no block from a free list since the previous sweep is not being reused in
/// a loop (CPython reads each .pyc into a buffer of its own size): its free blocks go at once.
///
/// # Safety
/// The caller owns `heap`.
unsafe fn sweep_multi_page(heap: *mut Heap, all: bool) {
    let mut discarded = 0;
    let mut pending = false;
    // SAFETY: we own the heap and the pools on its lists.
    unsafe {
        for class in FIRST_MULTI_PAGE_CLASS..NUM_CLASSES {
            let mut pool = (*heap).avail[class];
            let reused = (*heap).multi_page_reused & (1 << (class - FIRST_MULTI_PAGE_CLASS)) != 0;
            while pool != empty_pool() && !pool.is_null() {
                let (bytes, marked) = (*pool).discard_free_blocks(all || !reused);
                discarded += bytes;
                pending |= marked;
                pool = (*pool).next;
            }
        }
    }
    // SAFETY: as above.
    unsafe {
        (*heap).multi_page_unswept = pending;
        (*heap).multi_page_reused_before = (*heap).multi_page_reused;
        (*heap).multi_page_reused = 0;
    }
    stats::global().bytes_returned.add(discarded);
}

/// A class in use whose pool took the checked free path this many times since the last tick
/// gets its discarded set back (`revive_if_in_use`).
const REVIVE_AFTER_CHECKED_FREES: u8 = 16;

/// A pool of a swept medium class whose frees took the checked path
/// `REVIVE_AFTER_CHECKED_FREES` times since the last tick: if its class allocated in that
/// time too, it is in a loop that the discarded set only slows down, so the set comes back
/// (`Pool::revive_discarded`), the owner word loses its tag, and the pool discards nothing
/// more until an interval in which its class allocates nothing (`sweep_resting`).
///
/// # Safety
/// The caller owns `heap` and `pool`, a pool on its lists.
#[cold]
#[inline(never)]
unsafe fn revive_if_in_use(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: per the contract.
    unsafe {
        (*pool).checked_frees = 0;
        if (*heap).allocated_lately[(*pool).class as usize] {
            (*pool).revive_discarded();
            (*pool).revived = true;
            (*pool).owner.store(heap, Ordering::Release);
        }
    }
}

/// At every tick, for each pool of the swept medium classes (see `Pool::rest_free_blocks`):
/// the blocks that rested through the last interval, not needed by any refill, lose their
/// pages (into the discarded set), and the free list goes to rest in turn. While the set
/// holds blocks the pool's frees take the checked path (`pool_owner_word`); a loop whose own
/// block stayed out of the resting list while idle neighbours were discarded gets the set
/// back (`revive_if_in_use`), and that pool then discards only after an interval in which
/// its class allocated nothing (`Heap::allocated_lately`), so a loop does not fault its
/// pool's idle blocks in and out. With `all` (`malloc_trim`), every free block loses its
/// pages at once. Kept empty pools are left to `release_aged_kept`.
///
/// # Safety
/// The caller owns `heap`.
unsafe fn sweep_resting(heap: *mut Heap, all: bool) {
    let mut discarded = 0;
    // SAFETY: we own the heap and the pools on its lists.
    unsafe {
        for class in FIRST_SWEPT_CLASS..FIRST_MULTI_PAGE_CLASS {
            let in_use = (*heap).allocated_lately[class];
            let mut pool = (*heap).avail[class];
            while pool != empty_pool() && !pool.is_null() {
                if (*pool).used != 0 {
                    if !in_use {
                        (*pool).revived = false;
                    }
                    if all || !(*pool).revived {
                        discarded += (*pool).discard_resting();
                        (*pool).rest_free_blocks();
                        if all {
                            discarded += (*pool).discard_resting();
                        }
                    }
                    (*pool).checked_frees = 0;
                    let word = pool_owner_word(heap, pool);
                    if (*pool).owner.load(Ordering::Relaxed) != word {
                        (*pool).owner.store(word, Ordering::Release);
                    }
                }
                pool = (*pool).next;
            }
        }
        (*heap).allocated_lately = [false; NUM_CLASSES];
    }
    stats::global().bytes_returned.add(discarded);
}

/// The allocation slow path: a pool switch first (`switch_to_next_pool`), in a frame that
/// saves few registers, then the general refill. Sets errno to ENOMEM when the OS refuses
/// memory.
#[cold]
#[inline(never)]
fn alloc_slow(class: usize, call: usize) -> *mut u8 {
    let heap = tls::heap();
    if !heap.is_null() && heap != dead() {
        // SAFETY: heap is this thread's own live heap.
        unsafe {
            let b = switch_to_next_pool(heap, class);
            if !b.is_null() {
                count_slow_call(heap, call);
                return b as *mut u8;
            }
        }
    }
    refill_slow(heap, class, call)
}

/// Counts an allocation that took the slow path; one that completes its batch ticks, as on
/// the fast path (`calls_batch_done`).
///
/// # Safety
/// The caller owns `heap`, a live heap.
#[inline(always)]
unsafe fn count_slow_call(heap: *mut Heap, call: usize) {
    // SAFETY: per the contract.
    unsafe {
        if (*heap).counts.bump(call) {
            calls_batch_done(heap, call);
        }
    }
}

/// The general half of `alloc_slow`, for the calling thread's `heap` (null before its first
/// allocation): attaches the thread if needed and refills.
#[cold]
#[inline(never)]
fn refill_slow(mut heap: *mut Heap, class: usize, call: usize) -> *mut u8 {
    if heap.is_null() {
        heap = attach_thread();
        if heap.is_null() {
            return crate::os::out_of_memory();
        }
    }
    let b = if heap == dead() {
        let mut orphan = ORPHAN.lock();
        let h: *mut Heap = &mut *orphan;
        orphan.counts.bump_and_roll(call);
        // SAFETY: we hold the orphan lock, which makes us its owner for now.
        unsafe { refill_and_pop(h, class, false) }
    } else {
        // SAFETY: heap is this thread's own live heap.
        unsafe {
            count_slow_call(heap, call);
            refill_and_pop(heap, class, true)
        }
    };
    if b.is_null() {
        return crate::os::out_of_memory();
    }
    b as *mut u8
}

/// How often a heap looks for aged idle memory. Also the time freed blocks of 3 to 8 KiB rest
/// before they may lose their pages (`sweep_resting`): at 2 ms rather than 5, more of those
/// CPython's imports free are gone by the peak that comes as the imports end (single workers
/// of six pyperformance benchmarks: -60 to +16 KiB, median -18). A tick costs a walk of the
/// heap's class heads, a fraction of a microsecond.
const TICK_MS: u32 = 2;

/// The decay half of the purge policy (see `arena`): at most every `TICK_MS`, a heap gives
/// back idle memory older than the purge delay: its own kept empty pools, the arenas' dirty
/// free pools, the pages of cached large blocks. It ticks when a class needs a new pool and
/// whenever one of its call counts completes a batch (`calls_batch_done`), so a program that
/// calls the allocator keeps ticking without a thread of ours, even when its free lists serve
/// every call (a CPython benchmark loop); one that stops calling keeps at most the idle bound.
///
/// # Safety
/// The caller owns `heap`.
#[inline(always)]
unsafe fn tick(heap: *mut Heap) {
    let now = crate::os::now_ms();
    // SAFETY: per the contract.
    unsafe {
        if now.wrapping_sub((*heap).last_tick_ms) < TICK_MS {
            return;
        }
        (*heap).last_tick_ms = now;
        if (*heap).kept_empty != 0 {
            release_aged_kept(heap, now);
        }
        release_idle_heads(heap, now);
        sweep_resting(heap, false);
        if (*heap).multi_page_unswept {
            sweep_multi_page_if_due(heap, now);
        }
    }
    arena::purge_aged(now);
    crate::large::discard_idle(now);
}

/// A count of `heap`'s reached the end of its batch (`stats::CALLS_PER_BATCH`): start the
/// next one and tick. This is how a program that only runs fast paths (all its requests
/// served from free lists) still gives back the memory it left idle.
///
/// # Safety
/// The caller owns `heap`, a live heap.
#[cold]
#[inline(never)]
pub unsafe fn calls_batch_done(heap: *mut Heap, which: usize) {
    // SAFETY: per the contract.
    unsafe {
        (*heap).counts.next_batch(which);
        (*heap).carved_lately = [0; NUM_CLASSES];
        tick(heap);
    }
}

/// `calls_batch_done` for the malloc fast path, returning its block `b`: as a tail call it
/// costs the fast path no saved register.
///
/// # Safety
/// As for `calls_batch_done`.
#[cold]
#[inline(never)]
unsafe fn after_batch_of_allocs(heap: *mut Heap, which: usize, b: *mut u8) -> *mut u8 {
    // SAFETY: per the contract.
    unsafe { calls_batch_done(heap, which) };
    // Opaque to the optimiser: were this function known to return its argument, callers
    // would keep their own copy of `b` across the call, in a register the fast path saves.
    core::hint::black_box(b)
}

/// `calls_batch_done` for the free fast path, which has just freed a block into `pool`:
/// does its slow half too if needed (`after_local_free`).
///
/// # Safety
/// As for `calls_batch_done` and `after_local_free`.
#[cold]
#[inline(never)]
pub unsafe fn after_batch_of_frees(heap: *mut Heap, pool: *mut Pool, which: usize) {
    // SAFETY: per the contract.
    unsafe {
        if (*pool).used <= 0 {
            after_local_free(heap, pool);
        }
        calls_batch_done(heap, which);
    }
}

/// Gives back to their arenas the kept empty pools that have been empty for the purge delay.
///
/// # Safety
/// The caller owns `heap`.
#[cold]
unsafe fn release_aged_kept(heap: *mut Heap, now: u32) {
    // SAFETY: per the contract.
    unsafe { release_kept(heap, Some(now), None) }
}

/// Gives back to their arenas, pages discarded, `heap`'s kept empty pools: those empty for
/// the purge delay with `Some(now)`, else all of them; except those of pool kind `spared`. A
/// kept pool has waited already (or is dropped early on purpose): it reaches its arena clean
/// rather than waiting there again.
///
/// # Safety
/// The caller owns `heap`.
// Out of line: one copy serves the tick and `drop_idle_at_new_peak`.
#[inline(never)]
unsafe fn release_kept(heap: *mut Heap, now: Option<u32>, spared: Option<usize>) {
    let delay = crate::options::purge_delay_ms();
    // SAFETY: we own the heap and the pools on its lists.
    unsafe {
        for class in 0..NUM_CLASSES {
            let head = (*heap).avail[class];
            if head == empty_pool() || Some(pool_kind(class)) == spared {
                continue;
            }
            // Kept pools are the non-head pools with nothing in use (see `kept_empty`).
            let mut pool = (*head).next;
            while !pool.is_null() {
                let next = (*pool).next;
                let aged = now.is_none_or(|t| t.wrapping_sub((*pool).freed_at_ms) >= delay);
                if (*pool).used == 0 && aged {
                    avail_remove(heap, pool);
                    unkeep(heap, pool_bytes(pool));
                    let discarded = (*pool).discard_carved();
                    stats::global().bytes_returned.add(discarded);
                    release(pool);
                }
                pool = next;
            }
        }
    }
}

/// Gives back the pages of head pools that have had no block out for the purge delay. A
/// class's head pool stays on its list when its last block comes back (the next allocation
/// would need a pool again), so a class a thread stopped using kept the pages its blocks had
/// touched for as long as the thread lived: up to 128 KiB for each class above 512 bytes, and
/// a dozen pages of the 3 to 8 KiB classes at the end of CPython's imports. The first tick
/// that finds a head empty stamps it; one the purge delay later that finds it empty again
/// forgets its blocks and discards their pages, and the pool stays the head, clean. A class
/// used and emptied again in between refaults a page or two, at most once per delay.
/// Multi-page classes have their own sweeps.
///
/// # Safety
/// The caller owns `heap`.
// Out of line: inlined into the tick's callers it made the resident code 300 bytes larger.
#[inline(never)]
unsafe fn release_idle_heads(heap: *mut Heap, now: u32) {
    let delay = crate::options::purge_delay_ms();
    // SAFETY: we own the heap and the pools on its lists.
    unsafe {
        for class in 0..FIRST_MULTI_PAGE_CLASS {
            let pool = (*heap).avail[class];
            if pool == empty_pool() {
                continue;
            }
            // `used` is only the head bias: no block out, so none on `thread_free` either
            // (another thread can only free a block that is out).
            if (*pool).used != 1 || (*pool).carved == 0 {
                (*pool).idle_head_seen = false;
                continue;
            }
            if !(*pool).idle_head_seen {
                (*pool).idle_head_seen = true;
                (*pool).freed_at_ms = now;
            } else if now.wrapping_sub((*pool).freed_at_ms) >= delay {
                (*pool).idle_head_seen = false;
                let discarded = (*pool).discard_carved();
                stats::global().bytes_returned.add(discarded);
                // Its discarded set is forgotten too.
                (*pool)
                    .owner
                    .store(pool_owner_word(heap, pool), Ordering::Release);
            }
        }
    }
}

/// The commonest refill of a program in a steady state, which frees into pools that were
/// full (`after_local_free` puts each behind the head): the head pool is used up (all carved,
/// nothing freed into it by anyone) and the pool behind it has free blocks. The head goes to
/// the full list and the next pool serves the block, as `refill_and_pop` would do, without
/// its general checks or the tick (the batch counts keep ticking): in a pyperformance chaos
/// worker, 78 thousand of the slow path's 81 thousand calls, at about 70 instructions each
/// instead of 190. Null when the case does not apply, with nothing changed.
///
/// # Safety
/// The caller must be `heap`'s owner.
#[inline(always)]
unsafe fn switch_to_next_pool(heap: *mut Heap, class: usize) -> *mut Block {
    // SAFETY: we own the heap and every pool on its lists.
    unsafe {
        // The tests that fail first for a pool still carving (a loop filling pools) come
        // first. `EMPTY_POOL` (carved == capacity == 0) fails at `next`.
        let pool = (*heap).avail[class];
        if (*pool).carved != (*pool).capacity {
            return ptr::null_mut();
        }
        let next = (*pool).next;
        if next.is_null() || (*next).free.is_null() || class >= FIRST_MULTI_PAGE_CLASS {
            return ptr::null_mut();
        }
        let used_up = (*pool).free.is_null()
            && (*pool).thread_free.load(Ordering::Relaxed).is_null()
            && !(*pool).has_resting_or_discarded();
        if !used_up {
            return ptr::null_mut();
        }
        avail_remove(heap, pool);
        full_push(heap, pool);
        (*next).pop()
    }
}

/// Finds a block of `class` for `heap` when its head pool has none on its free list. With
/// `tick`, a class that needs a new pool ticks the heap first (`tick`): refills from the
/// pools a heap has, which a loop does all the time, do not read the clock, and the batch
/// counts keep ticking (`calls_batch_done`).
///
/// # Safety
/// The caller must be `heap`'s owner.
unsafe fn refill_and_pop(heap: *mut Heap, class: usize, tick: bool) -> *mut Block {
    // SAFETY: we own the heap and every pool on its lists.
    unsafe {
        loop {
            let pool = (*heap).avail[class];
            if pool != empty_pool() {
                // A pool just promoted to head may have a whole free list.
                let mut b = (*pool).pop();
                if b.is_null() && (*pool).collect_remote() > 0 {
                    b = (*pool).pop();
                }
                if !b.is_null() {
                    if class >= FIRST_MULTI_PAGE_CLASS && (*pool).has_discarded() {
                        (*pool).check_popped(b);
                    }
                    return b;
                }
                // Blocks off the free list before fresh ones (one test for the common case of
                // none). Resting blocks (swept medium classes) still have their pages: one for
                // a class that has not refilled in this batch of calls, four for one
                // allocating in a loop, as carving does below. Discarded ones (swept medium
                // and multi-page classes) have lost theirs, and carving would grow the pool.
                if (*pool).has_resting_or_discarded() {
                    let b = take_idle_block(heap, pool, class);
                    if !b.is_null() {
                        return b;
                    }
                }
                // Freed blocks before new pages: when carving would fault in a page and the
                // pool behind the head has free blocks (frees into full pools put them there,
                // `after_local_free`), that pool becomes the head, as pymalloc puts a pool that
                // gets a free block first in line. A head with no block out stays, or it would
                // sit behind the head looking like a kept empty pool (`kept_empty`). The new
                // head's free list is put in address order first if it has blocks out
                // (`used` > 1 with the bias it just took; `Pool::order_free_list`): an empty
                // one was relinked whole when it emptied, or is fresh.
                let next = (*pool).next;
                if !next.is_null()
                    && !(*next).free.is_null()
                    && (*pool).used > 1
                    && (*pool).carving_grows()
                {
                    avail_remove(heap, pool);
                    avail_insert(heap, pool);
                    if (*next).used > 1 {
                        (*next).order_free_list();
                    }
                    continue;
                }
                // A class's first carves in a batch of calls take a page's worth at most: in
                // CPython's imports the classes over 1 KiB carve a few times each, and four
                // blocks a time left a dozen pages of them unused (carving writes each block).
                // A class filling pools in a loop still carves four (8 KiB batches).
                let carved_lately = &mut (*heap).carved_lately[class];
                let sparse = *carved_lately < SPARSE_CARVES;
                *carved_lately = carved_lately.saturating_add(1);
                if (*pool).carve(sparse) {
                    return (*pool).pop();
                }
                // Exhausted: it leaves the class list for the full list.
                avail_remove(heap, pool);
                full_push(heap, pool);
                continue;
            }
            if (*heap).remote_hint.load(Ordering::Relaxed) {
                (*heap).remote_hint.store(false, Ordering::Relaxed);
                // Acquire: pairs with the Release of the remote push we were hinted about.
                core::sync::atomic::fence(Ordering::Acquire);
                reclaim_full(heap);
                if (*heap).avail[class] != empty_pool() {
                    continue;
                }
            }
            if tick {
                self::tick(heap);
            }
            remote::sweep_abandoned_if_hinted();
            let mut pool = remote::adopt(class, heap);
            if pool.is_null() {
                pool = take_kept_pool(heap, pool_kind(class));
                if pool.is_null() {
                    pool = arena::acquire_pool(pool_kind(class));
                    if !pool.is_null() && (*pool).resident_bytes() == 0 {
                        drop_idle_if_past_peak(heap, Some(pool_kind(class)));
                    }
                }
                if pool.is_null() {
                    return ptr::null_mut();
                }
                (*pool).format(class, 1 << POOL_SHIFT[pool_kind(class)]);
                (*pool)
                    .owner
                    .store(fresh_pool_owner_word(heap, class), Ordering::Release);
            }
            avail_insert(heap, pool);
        }
    }
}

/// A block from `pool`'s resting list or discarded set (`refill_and_pop`), or null.
///
/// # Safety
/// The caller owns `heap` and `pool`, the head of `class`'s list.
#[inline(never)]
unsafe fn take_idle_block(heap: *mut Heap, pool: *mut Pool, class: usize) -> *mut Block {
    // SAFETY: per the contract.
    unsafe {
        if class < FIRST_MULTI_PAGE_CLASS {
            let busy = &mut (*heap).carved_lately[class];
            let b = (*pool).take_resting(if *busy >= SPARSE_CARVES {
                pool::CARVE_MIN_BLOCKS
            } else {
                1
            });
            if !b.is_null() {
                *busy = busy.saturating_add(1);
                return b;
            }
            let b = (*pool).take_discarded();
            if !b.is_null() && !(*pool).has_discarded() {
                (*pool)
                    .owner
                    .store(pool_owner_word(heap, pool), Ordering::Release);
            }
            return b;
        }
        let b = (*pool).take_discarded();
        if !b.is_null() {
            // Just given back by a free: a loop, whose frees must keep the pages.
            let since = (*heap).counts.total() - (*heap).last_free_discard_call;
            if since < RETAKE_CALLS {
                (*heap).multi_page_reused |= 1 << (class - FIRST_MULTI_PAGE_CLASS);
            }
        }
        b
    }
}

/// A kept empty pool of another class of pool kind `kind`, off its list and no longer kept,
/// for the caller to format: its pages are resident, and a fresh pool from the arena would
/// fault in new ones while the kept pool waits out the purge delay. Null if there is none.
///
/// # Safety
/// The caller owns `heap`.
unsafe fn take_kept_pool(heap: *mut Heap, kind: usize) -> *mut Pool {
    // SAFETY: we own the heap and every pool on its lists.
    unsafe {
        if (*heap).kept_empty == 0 {
            return ptr::null_mut();
        }
        for class in 0..NUM_CLASSES {
            if pool_kind(class) != kind || (*heap).avail[class] == empty_pool() {
                continue;
            }
            // Kept pools are the non-head pools with nothing in use (see `kept_empty`).
            let mut pool = (*(*heap).avail[class]).next;
            while !pool.is_null() {
                if (*pool).used == 0 {
                    avail_remove(heap, pool);
                    unkeep(heap, pool_bytes(pool));
                    (*pool).forget_blocks();
                    return pool;
                }
                pool = (*pool).next;
            }
        }
        ptr::null_mut()
    }
}

/// Idle memory below this is not worth dropping early (`drop_idle_at_new_peak`): a few pages
/// at a new peak are not worth the system calls, and the faults if they are reused.
const DROP_IDLE_MIN: usize = 64 * 1024;

/// The program grows past its high-water mark, in pools of `kind` whose pages are not
/// resident (or, with `None`, in a large block mapped fresh): the memory kept idle for other
/// sizes, which this growth cannot reuse, goes now rather than after the purge delay, so the
/// new peak does not hold it. (glibc's freed chunks serve any size; ours serve their own
/// pool size.) This heap's kept empty pools of other kinds, the dirty free pools of other
/// kinds, and the large-block cache. Below the high-water mark nothing changes: a loop that
/// frees a batch of one size and allocates another meanwhile keeps its pages, as before.
///
/// # Safety
/// `heap` is this thread's heap (null and DEAD are skipped) or one the caller owns.
#[cold]
#[inline(never)]
unsafe fn drop_idle_at_new_peak(heap: *mut Heap, kind: Option<usize>) {
    if !heap.is_null() && heap != dead() {
        // SAFETY: the heap is ours (per the contract), and a live one.
        unsafe { release_kept(heap, None, kind) };
    }
    arena::purge_other_kinds(kind);
    crate::large::discard_idle_now();
}

/// Calls `drop_idle_at_new_peak` when the program grows past its high-water mark with idle
/// memory worth dropping; `kind` as there. Out of line: it runs at every pool taken fresh,
/// which is the slow path already. (It is resident code, not rarely run code: ordinary
/// programs do get here, see `c-tests/code_residency.c`.)
///
/// # Safety
/// As for `drop_idle_at_new_peak`.
#[cold]
#[inline(never)]
unsafe fn drop_idle_if_past_peak(heap: *mut Heap, kind: Option<usize>) {
    let held = &stats::global().bytes_in_use;
    if held.get() < held.peak() || stats::idle_bytes() < DROP_IDLE_MIN {
        return;
    }
    // At most once per purge delay: a program that grows while it frees and reallocates a
    // batch of another size faults that batch in again at most that often.
    let now = crate::os::now_ms();
    if now.wrapping_sub(LAST_IDLE_DROP_MS.load(Ordering::Relaxed))
        < crate::options::purge_delay_ms()
    {
        return;
    }
    LAST_IDLE_DROP_MS.store(now, Ordering::Relaxed);
    // SAFETY: per the contract.
    unsafe { drop_idle_at_new_peak(heap, kind) }
}

/// When `drop_idle_at_new_peak` last ran (`os::now_ms`).
static LAST_IDLE_DROP_MS: AtomicU32 = AtomicU32::new(0);

/// `drop_idle_if_past_peak` for a large block just mapped fresh (the cache had none to fit
/// it).
pub fn drop_idle_for_large() {
    // SAFETY: the TLS heap is this thread's own, or null or DEAD, which the callee skips.
    unsafe { drop_idle_if_past_peak(tls::heap(), None) }
}

/// Moves full pools that other threads freed into back to the class lists (or to their
/// arenas when they are now empty).
///
/// # Safety
/// The caller must be `heap`'s owner.
unsafe fn reclaim_full(heap: *mut Heap) {
    // SAFETY: we own the heap and its pools.
    unsafe {
        let mut pool = (*heap).full;
        while !pool.is_null() {
            let next = (*pool).next;
            if (*pool).collect_remote() > 0 {
                full_remove(heap, pool);
                if (*pool).used == 0 {
                    release(pool);
                } else {
                    avail_insert(heap, pool);
                }
            }
            pool = next;
        }
    }
}

/// A block that `free_multi_page` gave back and the heap takes again within this many calls
/// (of any entry point) was freed by a loop, not by a program done with that size.
const RETAKE_CALLS: u64 = 64;

/// A local free into a pool with a tagged owner word (see `pool_owner_word`), `b` checked to
/// be one of its blocks in use. For a swept medium class: checked against the discarded set,
/// then pushed. For a multi-page class: a size the program has not reused since the sweep
/// before last is not in a loop (CPython reads each module's code into a buffer of its own
/// size, and frees it before it builds the module's objects), so the block goes straight into
/// the discarded set and its pages back to the OS, rather than staying resident until a sweep. A size in a loop
/// shows itself when it takes such a block back within `RETAKE_CALLS` calls
/// (`refill_and_pop`); from then on, as long as it pops its free blocks, its frees keep the
/// pages. So a loop faults its blocks in twice, as a large block freed once does (`large`).
///
/// # Safety
/// The caller owns `heap` (this thread's live heap, or the orphan heap under its lock) and
/// `pool`; `b` is a block of `pool` in use, not freed yet.
#[inline(never)]
pub unsafe fn free_multi_page(heap: *mut Heap, pool: *mut Pool, b: *mut Block, call: usize) {
    // SAFETY: per the contract.
    unsafe {
        let class = (*pool).class as usize;
        if class < FIRST_MULTI_PAGE_CLASS {
            // A swept medium class whose discarded set holds blocks (`pool_owner_word`).
            if (*pool).holds_discarded(b as usize) {
                crate::diag::fatal("free", "double free detected for", b as usize);
            }
            (*pool).push_local(b);
            (*pool).checked_frees += 1;
            if (*pool).checked_frees >= REVIVE_AFTER_CHECKED_FREES {
                revive_if_in_use(heap, pool);
            }
            end_local_free(heap, pool, call);
            return;
        }
        let in_reuse = (*heap).multi_page_reused | (*heap).multi_page_reused_before;
        if in_reuse & (1 << (class - FIRST_MULTI_PAGE_CLASS)) == 0 {
            let bytes = (*pool).discard_freed_block(b);
            stats::global().bytes_returned.add(bytes);
            (*heap).last_free_discard_call = (*heap).counts.total();
        } else {
            (*pool).push_local(b);
        }
        end_local_free(heap, pool, call);
    }
}

/// The end of a local free, once the block has left the program (on the free list or in the
/// discarded set): counts the block and the call, and runs the slow halves when due. Both are
/// the last call, so the free fast path saves no register for them.
///
/// # Safety
/// The caller owns `heap` and `pool`, and just took a block of `pool` back from the program.
#[inline(always)]
pub unsafe fn end_local_free(heap: *mut Heap, pool: *mut Pool, call: usize) {
    // SAFETY: per the contract.
    unsafe {
        (*pool).used -= 1;
        if (*heap).counts.bump(call) {
            after_batch_of_frees(heap, pool, call);
        } else if (*pool).used <= 0 {
            after_local_free(heap, pool);
        }
    }
}

/// The slow half of a local free: the pool was full, or is now empty (`used <= 0`).
///
/// # Safety
/// The caller owns `heap` and just freed a block into `pool`, which `heap` owns.
#[cold]
#[inline(never)]
pub unsafe fn after_local_free(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: per the contract.
    unsafe {
        if (*pool).state == PoolState::Full {
            full_remove(heap, pool);
            avail_insert(heap, pool);
        }
        // The head carries the bias, so an empty pool here is never the head. Keep a few
        // empty pools (their pages stay resident) before giving them back: a program freeing
        // and refilling a batch does not bounce pools through the arena lock. A kept pool's
        // free list is rebuilt in address order, as pymalloc starts an emptied pool afresh:
        // the list is in the order of the frees, and reused as it is, that order compounds
        // round after round until consecutive allocations land all over the pool (CPython's
        // gc_collect: 5% of consecutive objects within 128 bytes of each other after 60
        // rounds, against 46 to 68% on pymalloc).
        if (*pool).used == 0 {
            let bytes = pool_bytes(pool);
            if (*heap).kept_empty + bytes <= KEEP_EMPTY_BYTES && keep_globally(bytes) {
                (*heap).kept_empty += bytes;
                (*pool).freed_at_ms = crate::os::now_ms();
                (*pool).relink_in_address_order();
            } else {
                avail_remove(heap, pool);
                release(pool);
            }
        }
    }
}

/// Gives an empty pool back to its arena.
///
/// # Safety
/// `pool` holds no live block and is on no list.
pub unsafe fn release(pool: *mut Pool) {
    // SAFETY: per the contract.
    unsafe {
        (*pool).owner.store(no_owner(), Ordering::Release);
        arena::release_pool(pool);
    }
}

/// Puts `pool` on its class list: as the head (taking the bias) if the list is empty, else
/// right behind the head so the pool being allocated from stays the same.
unsafe fn avail_insert(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: the caller owns heap and pool.
    unsafe {
        let class = (*pool).class as usize;
        (*pool).state = PoolState::Avail;
        let head = (*heap).avail[class];
        if head == empty_pool() {
            (*pool).prev = ptr::null_mut();
            (*pool).next = ptr::null_mut();
            (*pool).used += 1;
            (*pool).head = true;
            (*heap).avail[class] = pool;
        } else {
            (*pool).prev = head;
            (*pool).next = (*head).next;
            if !(*head).next.is_null() {
                (*(*head).next).prev = pool;
            }
            (*head).next = pool;
        }
    }
}

/// Takes `pool` off its class list, moving the head bias if it was the head.
#[inline(never)]
unsafe fn avail_remove(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: the caller owns heap and pool, and pool is on its class list.
    unsafe {
        let class = (*pool).class as usize;
        if (*heap).avail[class] == pool {
            (*pool).used -= 1;
            (*pool).head = false;
            let next = (*pool).next;
            if next.is_null() {
                (*heap).avail[class] = empty_pool();
            } else {
                if (*next).used == 0 {
                    // A kept empty pool becomes the head: it is no longer kept.
                    unkeep(heap, pool_bytes(next));
                }
                (*next).prev = ptr::null_mut();
                (*next).used += 1;
                (*next).head = true;
                (*heap).avail[class] = next;
            }
            (*pool).next = ptr::null_mut();
            (*pool).prev = ptr::null_mut();
        } else {
            // Not the head, so it has a predecessor and the head pointer is left alone.
            pool::list_unlink(&mut (*heap).avail[class], pool);
        }
    }
}

unsafe fn full_push(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: the caller owns heap and pool; pool is on no list.
    unsafe {
        (*pool).state = PoolState::Full;
        (*pool).used -= FULL_BIAS;
        pool::list_push(&mut (*heap).full, pool);
    }
}

unsafe fn full_remove(heap: *mut Heap, pool: *mut Pool) {
    // SAFETY: the caller owns heap and pool; pool is on the full list.
    unsafe {
        (*pool).used += FULL_BIAS;
        pool::list_unlink(&mut (*heap).full, pool);
    }
}

/// Creates the calling thread's heap and registers it for thread exit.
#[cold]
fn attach_thread() -> *mut Heap {
    crate::init::ensure();
    let heap = {
        let mut reg = REGISTRY.lock();
        let h = take_heap_slot(&mut reg);
        if h.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: h is a heap slot we own under the lock.
        unsafe {
            h.write(Heap::new());
            (*h).next = reg.live;
            if !reg.live.is_null() {
                (*reg.live).prev = h;
            }
        }
        reg.live = h;
        h
    };
    stats::global().threads_seen.add(1);
    // TLS first: pthread_setspecific may allocate, and must find the heap in place.
    tls::set_heap(heap);
    tls::register_exit(heap);
    heap
}

/// Memory for a heap: an exited thread's, else a never used one (`meta`). Null when the OS
/// refuses memory.
fn take_heap_slot(reg: &mut Registry) -> *mut Heap {
    let h = reg.spare;
    if !h.is_null() {
        // SAFETY: spare heaps are ours under the registry lock.
        reg.spare = unsafe { (*h).next };
        return h;
    }
    crate::meta::take_record()
}

/// Thread exit: hands the heap's pools over and recycles the heap.
///
/// # Safety
/// `heap` is the exiting thread's heap; called once, from the thread-exit key destructor.
pub unsafe fn thread_exit(heap: *mut Heap) {
    if heap.is_null() || heap == dead() {
        return;
    }
    tls::set_heap(dead());
    // SAFETY: the exiting thread still owns its heap.
    unsafe { detach(heap) };
}

/// Abandons every pool of `heap` and returns it to the registry. Only thread exit runs it
/// (and a fork child, for the heaps of the threads that did not come along), so it is in the
/// code a single-threaded program never runs (`.text_warm`, see lib.rs).
///
/// # Safety
/// The caller owns `heap`, and no thread will use it after this.
#[inline(never)]
#[link_section = ".text_warm"]
unsafe fn detach(heap: *mut Heap) {
    // SAFETY: per the contract.
    unsafe {
        // Every pool leaves through the head of its class list, so each kept pool is
        // un-kept when promoted (avail_remove) and kept_empty ends at zero.
        for class in 0..NUM_CLASSES {
            while (*heap).avail[class] != empty_pool() {
                let pool = (*heap).avail[class];
                avail_remove(heap, pool);
                hand_over(pool);
            }
        }
        while !(*heap).full.is_null() {
            let pool = (*heap).full;
            full_remove(heap, pool);
            hand_over(pool);
        }
        debug_assert_eq!((*heap).kept_empty, 0);
        let mut reg = REGISTRY.lock();
        (*heap).counts.add_to(&mut reg.dead_counts);
        if !(*heap).prev.is_null() {
            (*(*heap).prev).next = (*heap).next;
        } else {
            reg.live = (*heap).next;
        }
        if !(*heap).next.is_null() {
            (*(*heap).next).prev = (*heap).prev;
        }
        (*heap).prev = ptr::null_mut();
        (*heap).next = reg.spare;
        reg.spare = heap;
    }
}

/// An exiting heap's pool, off its lists: back to the arena if empty, else abandoned.
unsafe fn hand_over(pool: *mut Pool) {
    // SAFETY: the caller owns the pool and it is on no list.
    unsafe {
        (*pool).collect_remote();
        if (*pool).used == 0 {
            release(pool);
        } else {
            remote::abandon(pool);
        }
    }
}

/// Gives every empty pool of the calling thread's heap back (including class heads).
pub fn trim_current_thread() {
    let heap = tls::heap();
    if heap.is_null() || heap == dead() {
        return;
    }
    // SAFETY: this thread owns its heap.
    unsafe {
        reclaim_full(heap);
        for class in 0..NUM_CLASSES {
            let mut pool = (*heap).avail[class];
            while pool != empty_pool() && !pool.is_null() {
                let next = (*pool).next;
                (*pool).collect_remote();
                let bias = ((*heap).avail[class] == pool) as i32;
                if (*pool).used == bias {
                    avail_remove(heap, pool);
                    release(pool);
                }
                pool = next;
            }
        }
        // Every kept pool was released above.
        unkeep(heap, (*heap).kept_empty);
        sweep_multi_page(heap, true);
        sweep_resting(heap, true);
    }
}

/// In a fork child only the forking thread survives: hand over every other thread's heap.
///
/// # Safety
/// Only in the child right after fork, with all allocator locks free.
#[link_section = ".text_rarely_run"]
pub unsafe fn after_fork_child() {
    let me = tls::heap();
    loop {
        let victim = {
            let reg = REGISTRY.lock();
            let mut h = reg.live;
            while !h.is_null() && h == me {
                // SAFETY: live heaps are valid under the registry lock.
                h = unsafe { (*h).next };
            }
            h
        };
        if victim.is_null() {
            break;
        }
        // SAFETY: the victim's thread does not exist in the child; we take over its heap.
        unsafe {
            for_each_pool_of(victim, |pool| recount_after_fork(pool));
            detach(victim);
        }
    }
}

/// Calls `f` on every pool on `heap`'s class lists and full list.
///
/// # Safety
/// The caller owns `heap`; `f` must not change the lists.
unsafe fn for_each_pool_of(heap: *mut Heap, mut f: impl FnMut(*mut Pool)) {
    // SAFETY: per the contract.
    unsafe {
        for class in 0..NUM_CLASSES {
            let mut pool = (*heap).avail[class];
            while pool != empty_pool() && !pool.is_null() {
                f(pool);
                pool = (*pool).next;
            }
        }
        let mut pool = (*heap).full;
        while !pool.is_null() {
            f(pool);
            pool = (*pool).next;
        }
    }
}

/// The thread that owned `pool` may have been stopped by `fork` between a free-list update
/// and the matching `used` update; recompute `used` from the free list, which is updated
/// first, so that the pool cannot be released while one of its blocks is live.
///
/// # Safety
/// Only in a fork child, on a pool of a heap whose thread did not survive the fork.
unsafe fn recount_after_fork(pool: *mut Pool) {
    // SAFETY: per the contract, nobody else touches the pool.
    unsafe {
        let mut on_list = 0u32;
        let mut b = (*pool).free;
        while !b.is_null() && on_list < (*pool).carved {
            on_list += 1;
            b = (*b).next;
        }
        let idle = on_list + (*pool).resting_count() + (*pool).discarded_count();
        let mut used = (*pool).carved.saturating_sub(idle) as i32;
        if (*pool).head {
            used += 1;
        }
        if (*pool).state == PoolState::Full {
            used -= FULL_BIAS;
        }
        (*pool).used = used;
    }
}

/// Checks the calling thread's heap: list membership and states, the head bias, and for every
/// pool that its free list holds distinct blocks of the pool and that
/// `carved == blocks out + free-list length`. Returns the number of problems found.
#[link_section = ".text_rarely_run"]
pub fn check_current_thread() -> usize {
    let heap = tls::heap();
    if heap.is_null() || heap == dead() {
        return 0;
    }
    let mut problems = 0usize;
    let mut report = |what: &str, pool: *const Pool| {
        problems += 1;
        if problems <= 8 {
            crate::diag::complain("heap check", what, pool as usize);
        }
    };
    // SAFETY: this thread owns its heap and every pool on its lists.
    unsafe {
        for class in 0..NUM_CLASSES {
            let mut pool = (*heap).avail[class];
            let mut first = true;
            while pool != empty_pool() && !pool.is_null() {
                if (*pool).state != PoolState::Avail
                    || (*pool).class as usize != class
                    || (*pool).head != first
                {
                    report(
                        "class list holds a pool of the wrong state, class or head flag:",
                        pool,
                    );
                }
                check_pool(heap, pool, &mut report);
                first = false;
                pool = (*pool).next;
            }
        }
        let mut pool = (*heap).full;
        while !pool.is_null() {
            if (*pool).state != PoolState::Full || (*pool).head {
                report("full list holds a pool that is not full:", pool);
            }
            check_pool(heap, pool, &mut report);
            pool = (*pool).next;
        }
    }
    problems
}

/// `check_current_thread`'s checks of one pool of `heap`'s lists.
///
/// # Safety
/// The caller owns `heap` and `pool`, a formatted pool on its lists.
#[link_section = ".text_rarely_run"]
unsafe fn check_pool(heap: *mut Heap, pool: *mut Pool, report: &mut dyn FnMut(&str, *const Pool)) {
    // SAFETY: per the contract.
    unsafe {
        if (*pool).owner.load(Ordering::Relaxed) != pool_owner_word(heap, pool) {
            report("pool on our list has another owner:", pool);
        }
        let mut n = 0u32;
        let mut b = (*pool).free;
        while !b.is_null() && n <= (*pool).capacity {
            if (*pool).block_index(b as usize).is_none() {
                report("free list holds a block not of its pool; pool", pool);
                return;
            }
            n += 1;
            b = (*b).next;
        }
        if n > (*pool).capacity {
            report("free list longer than the pool (a cycle?); pool", pool);
            return;
        }
        let mut used = (*pool).used;
        if (*pool).state == PoolState::Full {
            used += FULL_BIAS;
        }
        if (*pool).head {
            used -= 1;
        }
        let resting = (*pool).resting_count();
        if used < 0 || used as u32 + n + resting + (*pool).discarded_count() != (*pool).carved {
            report("carved != blocks out + free list; pool", pool);
        }
    }
}

/// Sums call counts of live threads and exited ones.
pub fn total_counts() -> CallTotals {
    let reg = REGISTRY.lock();
    let mut c = reg.dead_counts;
    let mut h = reg.live;
    while !h.is_null() {
        // SAFETY: live heaps are valid under the lock; counts are read racily (statistics).
        unsafe {
            ptr::read_volatile(&(*h).counts).add_to(&mut c);
            h = (*h).next;
        }
    }
    // SAFETY: the orphan heap's counts, read racily like the others.
    unsafe { ptr::read_volatile(&(*ORPHAN.get_unlocked()).counts).add_to(&mut c) };
    c
}

/// Bumps the calling thread's counter of entry point `which` (see `call`); a thread without
/// a live heap counts in the orphan heap.
#[inline]
pub fn count(which: usize) {
    let heap = tls::heap();
    if !heap.is_null() && heap != dead() {
        // SAFETY: the calling thread owns its live heap.
        unsafe {
            if (*heap).counts.bump(which) {
                calls_batch_done(heap, which);
            }
        }
    } else if which < call::COUNT {
        count_orphan(which);
    }
}

/// `count` for a thread without a live heap (before its first allocation, or after exit).
#[cold]
#[inline(never)]
fn count_orphan(which: usize) {
    ORPHAN.lock().counts.bump_and_roll(which);
}

/// Hint to `heap`'s owner that a pool of theirs received a remote free.
///
/// # Safety
/// `heap` is a heap address taken from a pool's owner field (heaps are never unmapped).
#[inline]
pub unsafe fn hint_remote(heap: *mut Heap) {
    // SAFETY: heaps live in never-unmapped slabs or statics.
    let hint = unsafe { &(*heap).remote_hint };
    if !hint.load(Ordering::Relaxed) {
        hint.store(true, Ordering::Release);
    }
}

pub fn lock_for_fork() {
    ORPHAN.hold_for_fork();
    REGISTRY.hold_for_fork();
}
/// # Safety
/// Only after `lock_for_fork`.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe {
        REGISTRY.release_after_fork();
        ORPHAN.release_after_fork();
    }
}

#[cfg(test)]
mod tests {
    use crate::alloc;
    use crate::stats;

    /// The tests below read global counters and budgets: run them one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// The descriptor of the pool holding `p`, a live pooled block of the calling thread's.
    fn pool_of_block(p: *mut u8) -> *mut super::Pool {
        assert!(crate::addr_map::lookup(p as usize) & crate::addr_map::TAG_ARENA != 0);
        // SAFETY: p is a live pooled block (checked just above to be in an arena).
        unsafe { super::pool_of_block(p) }
    }

    /// The distinct pools holding `blocks`.
    fn pools_of(blocks: &[*mut u8]) -> std::vec::Vec<usize> {
        let mut pools: std::vec::Vec<usize> =
            blocks.iter().map(|&b| pool_of_block(b) as usize).collect();
        pools.sort_unstable();
        pools.dedup();
        pools
    }

    /// A heap given back (by an exited thread) is reused before a never used one.
    #[test]
    fn a_spare_heap_is_reused_first() {
        let mut reg = super::Registry {
            live: core::ptr::null_mut(),
            spare: core::ptr::null_mut(),
            dead_counts: stats::CallTotals::ZERO,
        };
        let first = super::take_heap_slot(&mut reg);
        assert!(!first.is_null());
        // SAFETY: the slot is ours and as large as a heap; next links spares.
        unsafe {
            first.write(super::Heap::new());
            (*first).next = core::ptr::null_mut();
        }
        reg.spare = first;
        assert_eq!(super::take_heap_slot(&mut reg), first);
        assert_ne!(super::take_heap_slot(&mut reg), first);
    }

    /// A loop of multi-page blocks reads the clock once per `SWEEP_AFTER_BYTES` of them: the
    /// byte count restarts at every check, due or not (it used to restart only when a sweep
    /// was due, so every allocation read the clock until `SWEEP_INTERVAL_MS` had passed).
    #[test]
    fn multi_page_loops_check_the_sweep_clock_once_per_batch_of_bytes() {
        std::thread::spawn(|| {
            let size = crate::size_class::class_size(crate::size_class::FIRST_MULTI_PAGE_CLASS);
            for i in 0..4 * super::SWEEP_AFTER_BYTES / size {
                let p = alloc::malloc(size);
                assert!(!p.is_null());
                let heap = crate::tls::heap();
                // SAFETY: after an allocation the TLS heap is this thread's live heap.
                let counted = unsafe { (*heap).multi_page_bytes };
                assert!(
                    counted < super::SWEEP_AFTER_BYTES,
                    "{counted} bytes counted after {} allocations of {size}: the clock is read \
                     at every allocation until a sweep is due",
                    i + 1
                );
                // SAFETY: p was just allocated above.
                unsafe { alloc::free(p, "free") };
            }
        })
        .join()
        .unwrap();
    }

    /// A class's first two carves in a batch of calls cut a page's worth (one 7 KiB block),
    /// the next ones four blocks: CPython's imports carve the classes over 1 KiB a few times
    /// each and left pages of never used blocks; a loop filling pools still refills every
    /// fourth.
    #[test]
    fn a_class_carves_sparsely_then_four_at_a_time() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let size = 7168;
            // SAFETY: p is a live block of this thread's, whose pool it owns.
            let carved_after_malloc = |p: *mut u8| unsafe { (*pool_of_block(p)).carved };
            // A class carving twice in a batch (as many do in CPython's start-up) carves
            // sparsely both times; a third carve takes four blocks.
            let mut carved = [0; 3];
            let blocks: [*mut u8; 3] = core::array::from_fn(|i| {
                let p = alloc::malloc(size);
                carved[i] = carved_after_malloc(p);
                p
            });
            assert_eq!(carved, [1, 2, 2 + crate::pool::CARVE_MIN_BLOCKS]);
            for p in blocks {
                // SAFETY: all three were allocated above.
                unsafe { alloc::free(p, "free") };
            }
        })
        .join()
        .unwrap();
    }

    /// Allocates blocks of `size` bytes on the calling thread until `pools` pools are full,
    /// then `extra` more. Returns the blocks, the first one's pool (A) and a pool's capacity.
    fn fill_pools(
        size: usize,
        pools: usize,
        extra: usize,
    ) -> (std::vec::Vec<*mut u8>, *mut super::Pool, usize) {
        let first = alloc::malloc(size);
        let a = pool_of_block(first);
        // SAFETY: a is the head pool of this thread's class, which it owns.
        let capacity = unsafe { (*a).capacity } as usize;
        let mut blocks = std::vec![first];
        while blocks.len() < pools * capacity + extra {
            blocks.push(alloc::malloc(size));
        }
        (blocks, a, capacity)
    }

    /// Frees `blocks` (each allocated by the test and live) and checks the heap's lists.
    fn free_all_and_check(blocks: std::vec::Vec<*mut u8>) {
        for p in blocks {
            // SAFETY: per the contract, every block is live and freed once.
            unsafe { alloc::free(p, "free") };
        }
        assert_eq!(super::check_current_thread(), 0);
    }

    /// A free into a full pool puts it behind the head; once the head is used up, the next
    /// allocation switches to it (`switch_to_next_pool`): it gets the block just freed, the
    /// used-up head goes to the full list, and the heap's lists stay consistent.
    #[test]
    fn a_used_up_head_hands_over_to_the_pool_behind_it() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let size = 496;
            let class = crate::size_class::class_of(size);
            // Fill pools A, B and C: C, the head, is all carved and has no free block.
            let (mut blocks, a, capacity) = fill_pools(size, 3, 0);
            let c = pool_of_block(*blocks.last().unwrap());
            assert_eq!(pools_of(&blocks).len(), 3, "three pools");
            // Free one block of the full pool A: it goes behind the head, C.
            let freed = blocks.swap_remove(capacity / 2);
            assert_eq!(pool_of_block(freed), a);
            // SAFETY: freed is a live block allocated above.
            unsafe { alloc::free(freed, "free") };
            let heap = crate::tls::heap();
            // SAFETY: heap is this thread's live heap; we only read its lists.
            unsafe {
                assert_eq!((*heap).avail[class], c);
                assert_eq!((*c).next, a);
            }
            let p = alloc::malloc(size);
            assert_eq!(p, freed, "the switch hands out the block freed into A");
            blocks.push(p);
            // SAFETY: as above.
            unsafe {
                assert_eq!((*heap).avail[class], a, "A is the head");
                assert!((*a).head && !(*c).head);
                assert_eq!((*c).state, crate::pool::PoolState::Full);
            }
            assert_eq!(
                super::check_current_thread(),
                0,
                "the heap's lists check out"
            );
            free_all_and_check(blocks);
        })
        .join()
        .unwrap();
    }

    /// Free blocks of a swept medium class rest at one tick and lose their pages at the next,
    /// unless a refill took them in between; while the discarded set holds blocks the pool's
    /// owner word is tagged (frees check the set), and a class in use whose frees keep taking
    /// that path gets the set back, and keeps its blocks until an idle interval. Allocations
    /// call `refill_and_pop` and note the class as the malloc path does: malloc's slow path
    /// could tick on its own (when a class needs a new pool, or a batch of calls ends).
    #[test]
    fn resting_medium_blocks_lose_their_pages_at_the_next_tick() {
        std::thread::spawn(|| {
            const N: usize = 16;
            let size = 5000; // 5 KiB blocks: a page each, and some shared with neighbours
            let class = crate::size_class::class_of(size);
            assert!((super::FIRST_SWEPT_CLASS..super::FIRST_MULTI_PAGE_CLASS).contains(&class));
            let mut blocks = [core::ptr::null_mut::<u8>(); N];
            for b in blocks.iter_mut() {
                *b = alloc::malloc(size);
                // SAFETY: just allocated, size bytes.
                unsafe { core::ptr::write_bytes(*b, 0x5a, size) };
            }
            let heap = crate::tls::heap();
            let tagged = super::multi_page_owner_word(heap);
            let relaxed = core::sync::atomic::Ordering::Relaxed;
            // SAFETY: this thread's live heap; the pools on its lists are its own, and every
            // block freed was allocated above and is freed once.
            unsafe {
                assert!((*heap).allocated_lately[class], "malloc notes the class");
                let pool = (*heap).avail[class];
                // The carved blocks' pages (the pool may have come dirty from its arena).
                let (start, len) = ((*pool).start, (*pool).carved_bytes().next_multiple_of(4096));
                let resident_before = crate::os::resident_pages(start, len);
                assert!(resident_before >= N * size / 4096);
                // blocks[0] stays out; the others go back.
                for &b in &blocks[1..] {
                    alloc::free(b, "free");
                }
                // Carving may have cut a block or two more than N.
                let free = (*pool).carved - (*pool).blocks_out();
                assert!(free >= N as u32 - 1);
                super::sweep_resting(heap, false);
                assert_eq!((*pool).resting_count(), free, "the free blocks rest");
                // Blocks a refill takes back in the interval keep their pages (a refill takes
                // as many as it would carve); those that rest through it lose them.
                let x = super::refill_and_pop(heap, class, false) as *mut u8;
                let taken = free - (*pool).resting_count();
                assert!((1..=crate::pool::CARVE_MIN_BLOCKS).contains(&taken));
                alloc::free(x, "free");
                super::sweep_resting(heap, false);
                assert_eq!((*pool).discarded_count(), free - taken);
                assert_eq!((*pool).resting_count(), taken);
                super::sweep_resting(heap, false);
                assert_eq!((*pool).discarded_count(), free);
                assert_eq!((*pool).resting_count(), 0);
                assert_eq!((*pool).owner.load(relaxed), tagged);
                let resident_after = crate::os::resident_pages(start, len);
                // What stays: blocks[0]'s two pages, at most.
                assert!(resident_after <= 2, "{resident_after} pages still resident");
                assert_eq!(alloc::check(), 0);
                // Freeing a discarded block again would be refused (`free_multi_page`); its
                // memory reads as zero, so the key check alone would not see it.
                assert!((*pool).holds_free_block(blocks[1] as *mut crate::pool::Block));
                // Allocating takes blocks back from the set...
                let x = super::refill_and_pop(heap, class, false) as *mut u8;
                assert_eq!(
                    (*pool).discarded_count(),
                    free - 1,
                    "the block came from the set"
                );
                core::ptr::write_bytes(x, 0xcd, size);
                alloc::free(x, "free");
                // ...and a loop whose frees keep taking the checked path (that free was the
                // first) gets the set back.
                for _ in 1..super::REVIVE_AFTER_CHECKED_FREES {
                    assert_eq!((*pool).owner.load(relaxed), tagged);
                    let y = super::refill_and_pop(heap, class, false) as *mut u8;
                    (*heap).allocated_lately[class] = true;
                    alloc::free(y, "free");
                }
                assert_eq!((*pool).discarded_count(), 0);
                assert_eq!(
                    (*pool).owner.load(relaxed),
                    heap,
                    "untagged once the set is empty"
                );
                assert_eq!(alloc::check(), 0);
                // While the class stays in use, its blocks no longer rest...
                for _ in 0..2 {
                    (*heap).allocated_lately[class] = true;
                    super::sweep_resting(heap, false);
                }
                assert_eq!((*pool).resting_count() + (*pool).discarded_count(), 0);
                // ...until an interval in which it allocates nothing.
                super::sweep_resting(heap, false);
                assert_eq!((*pool).resting_count(), free);
                assert_eq!(alloc::check(), 0);
                alloc::free(blocks[0], "free");
            }
            assert_eq!(alloc::check(), 0);
        })
        .join()
        .unwrap();
    }

    /// A head pool with no block out for the purge delay gives its pages back and stays the
    /// head; one with a block out keeps them.
    #[test]
    fn an_idle_head_pool_gives_its_pages_back() {
        std::thread::spawn(|| {
            const N: usize = 64;
            let size = 1792; // a class no other test uses: a fresh pool of this thread's
            let mut blocks = [core::ptr::null_mut::<u8>(); N];
            for b in blocks.iter_mut() {
                *b = alloc::malloc(size);
                // SAFETY: just allocated, size bytes.
                unsafe { core::ptr::write_bytes(*b, 0x5a, size) };
            }
            let heap = crate::tls::heap();
            let class = crate::size_class::class_of(size);
            // SAFETY: this thread's live heap; its head pool of `class` is its own.
            let pool = unsafe { (*heap).avail[class] };
            // The carved blocks' pages: the pool may have come dirty from its arena, with
            // pages of another test's blocks resident beyond them.
            // SAFETY: as above.
            let (start, pool_size) =
                unsafe { ((*pool).start, (*pool).carved_bytes().next_multiple_of(4096)) };
            assert!(crate::os::resident_pages(start, pool_size) >= N * size / 4096);
            let delay = crate::options::purge_delay_ms();
            let t0 = crate::os::now_ms();
            // One block out: the ticks leave the pool alone.
            for b in &blocks[1..] {
                // SAFETY: allocated above, freed once.
                unsafe { alloc::free(*b, "free") };
            }
            // SAFETY: we own the heap.
            unsafe {
                super::release_idle_heads(heap, t0);
                super::release_idle_heads(heap, t0.wrapping_add(delay));
                assert!(
                    (*pool).carved > 0,
                    "a head pool with a block out was forgotten"
                );
                alloc::free(blocks[0], "free");
                super::release_idle_heads(heap, t0.wrapping_add(2 * delay));
                assert!(
                    (*pool).carved > 0,
                    "forgotten at the first tick that found it idle"
                );
                super::release_idle_heads(heap, t0.wrapping_add(3 * delay));
                assert_eq!((*pool).carved, 0);
                assert_eq!((*heap).avail[class], pool, "the pool still heads its class");
            }
            assert_eq!(crate::os::resident_pages(start, pool_size), 0);
            let p = alloc::malloc(size);
            assert!(!p.is_null());
            // SAFETY: just allocated.
            unsafe { alloc::free(p, "free") };
            assert_eq!(alloc::check(), 0);
        })
        .join()
        .unwrap();
    }

    /// A head pool that would fault in a page to carve more blocks hands over to the pool
    /// behind it when that one has free blocks: freed holes are filled before new pages.
    #[test]
    fn freed_blocks_come_before_new_pages() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let size = 496;
            let class = crate::size_class::class_of(size);
            // Fill pool A and take a block of pool B, the head, which has carved a page's
            // worth of blocks or so and has more to carve.
            let (mut blocks, a, capacity) = fill_pools(size, 1, 1);
            let b = pool_of_block(*blocks.last().unwrap());
            assert_ne!(a, b);
            // SAFETY: b is this thread's head pool. The arena may have handed it out with pages
            // resident from an earlier use (tests run in parallel): B must be a head whose
            // next carve faults in a page.
            let carved = unsafe {
                (*b).forget_pages_past_carved();
                (*b).carved
            };
            assert!((carved as usize) < capacity);
            // A block freed into A puts A behind the head.
            let freed = blocks.swap_remove(capacity / 2);
            // SAFETY: freed is a live block allocated above.
            unsafe { alloc::free(freed, "free") };
            // B's carved blocks come first, then the block freed into A, before B carves
            // again.
            let p = loop {
                let p = alloc::malloc(size);
                blocks.push(p);
                if pool_of_block(p) != b {
                    break p;
                }
            };
            assert_eq!(p, freed);
            let heap = crate::tls::heap();
            // SAFETY: this thread's heap and pools; we only read them.
            unsafe {
                assert_eq!((*b).carved, carved, "B carved a new page");
                assert_eq!((*heap).avail[class], a, "A is the head");
                assert_eq!((*a).next, b, "B waits behind it");
            }
            assert_eq!(super::check_current_thread(), 0);
            free_all_and_check(blocks);
        })
        .join()
        .unwrap();
    }

    /// A pool in use that takes over as the head hands out the blocks freed into it in
    /// address order, whatever the order of their frees.
    #[test]
    fn a_pool_taking_over_hands_out_its_free_blocks_in_address_order() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let size = 496;
            // Fill pool A and take a block of pool B, the head, as in the test above.
            let (mut blocks, a, capacity) = fill_pools(size, 1, 1);
            let b = pool_of_block(*blocks.last().unwrap());
            // SAFETY: b is this thread's head pool (see `freed_blocks_come_before_new_pages`).
            unsafe { (*b).forget_pages_past_carved() };
            // Free every other block of A, scrambled (7 is coprime to its 66 blocks): A stays
            // in use, behind the head.
            let of_a: std::vec::Vec<*mut u8> = blocks.drain(..capacity).collect();
            let mut freed: std::vec::Vec<*mut u8> = (0..capacity)
                .map(|i| i * 7 % capacity)
                .filter(|i| i % 2 == 0)
                .map(|i| of_a[i])
                .collect();
            for &p in &freed {
                // SAFETY: each was allocated above and is freed once.
                unsafe { alloc::free(p, "free") };
            }
            blocks.extend((0..capacity).filter(|i| i % 2 == 1).map(|i| of_a[i]));
            // Past B's carved blocks, A's freed blocks come back lowest first.
            let mut from_a = std::vec::Vec::new();
            while from_a.len() < freed.len() {
                let p = alloc::malloc(size);
                blocks.push(p);
                if pool_of_block(p) == a {
                    from_a.push(p);
                }
            }
            freed.sort();
            assert_eq!(from_a, freed);
            assert_eq!(super::check_current_thread(), 0);
            free_all_and_check(blocks);
        })
        .join()
        .unwrap();
    }

    /// A pool emptied by frees in no particular order is kept with its free list rebuilt in
    /// address order, so that the next allocations from it are consecutive blocks again.
    #[test]
    fn a_kept_empty_pool_hands_out_consecutive_blocks() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let size = 496;
            // Fill pool A and take a block of the head behind it.
            let (mut blocks, a, capacity) = fill_pools(size, 1, 1);
            let of_a: std::vec::Vec<*mut u8> = blocks.drain(..capacity).collect();
            assert!(of_a.iter().all(|&p| pool_of_block(p) == a));
            // Free A's blocks in a scrambled order (7 is coprime to its 66 blocks).
            for i in (0..capacity).map(|i| i * 7 % capacity) {
                // SAFETY: every block of A was allocated above and is freed once.
                unsafe { alloc::free(of_a[i], "free") };
            }
            // SAFETY: this thread's heap and pools; we only read them.
            unsafe {
                assert_eq!((*a).used, 0, "A is empty and kept");
                let mut b = (*a).free as usize;
                for i in 0..capacity {
                    assert_eq!(
                        b,
                        (*a).start as usize + i * size.next_multiple_of(16),
                        "block {i}"
                    );
                    b = (*(b as *mut crate::pool::Block)).next as usize;
                }
                assert_eq!(b, 0);
            }
            assert_eq!(super::check_current_thread(), 0);
            free_all_and_check(blocks);
        })
        .join()
        .unwrap();
    }

    /// A heap that needs a pool for one class takes an empty pool it keeps for another class
    /// of the same pool size (its pages are resident) before a new one from the arenas.
    #[test]
    fn a_new_class_reuses_the_pools_kept_for_another() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            const N: usize = 1000;
            let mut blocks = [core::ptr::null_mut::<u8>(); N];
            alloc::trim();
            // 1 KiB blocks fill eight 128 KiB pools; freed, the seven behind the head are kept.
            for b in blocks.iter_mut() {
                *b = alloc::malloc(1024);
            }
            let kb_pools = pools_of(&blocks);
            for b in blocks.iter().rev() {
                // SAFETY: each block was just allocated above.
                unsafe { alloc::free(*b, "free") };
            }
            let heap = crate::tls::heap();
            // SAFETY: this thread's live heap.
            let kept_before = unsafe { (*heap).kept_empty };
            assert!(
                kept_before >= 4 << 17,
                "only {kept_before} bytes of pools were kept"
            );
            // 1536-byte blocks: 85 to a pool, so N of them need 12 pools. The pools are
            // compared, not the arenas' counters, which other tests' threads move too.
            let size = 1536;
            for b in blocks.iter_mut() {
                *b = alloc::malloc(size);
            }
            let new_pools = pools_of(&blocks);
            let reused = new_pools.iter().filter(|p| kb_pools.contains(p)).count();
            assert!(
                reused >= 4,
                "only {reused} of the {} pools were among the 1 KiB class's kept ones",
                new_pools.len()
            );
            // SAFETY: as above.
            let kept_after = unsafe { (*heap).kept_empty };
            assert!(
                kept_after + (4 << 17) <= kept_before,
                "the kept pools were not taken: {kept_before} -> {kept_after} bytes kept"
            );
            for b in blocks.iter() {
                // SAFETY: as above.
                unsafe { alloc::free(*b, "free") };
            }
            assert_eq!(alloc::check(), 0);
        })
        .join()
        .unwrap();
    }

    /// A batch freed and allocated again is served from the heap's kept pools, without
    /// taking new pools from the arenas.
    #[test]
    fn refilling_a_freed_batch_reuses_kept_pools() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let mut blocks = [core::ptr::null_mut::<u8>(); 1000];
            // One round: the pools its blocks came from.
            let round = |blocks: &mut [*mut u8; 1000]| {
                for b in blocks.iter_mut() {
                    *b = alloc::malloc(1024);
                }
                let pools = pools_of(&blocks[..]);
                for b in blocks.iter().rev() {
                    // SAFETY: each block was just allocated above.
                    unsafe { alloc::free(*b, "free") };
                }
                pools
            };
            // Start with no idle memory left by other tests (the large cache shares the bound).
            alloc::trim();
            let first = round(&mut blocks);
            // The pools are compared, not the arenas' counters, which other tests move too.
            let heap = crate::tls::heap();
            for _ in 0..10 {
                let now = round(&mut blocks);
                assert!(
                    now.iter().all(|p| first.contains(p)),
                    "a round took a pool the first did not use"
                );
                // SAFETY: this thread's live heap.
                let kept = unsafe { (*heap).kept_empty };
                assert!(kept > 0, "the freed pools were not kept");
            }
            assert_eq!(alloc::check(), 0);
        })
        .join()
        .unwrap();
    }

    /// A multi-page request whose class has no free block takes the free block of a class at
    /// most `BORROW_CLASSES` above it, and only such a class's.
    #[test]
    fn multi_page_requests_take_free_blocks_of_slightly_larger_classes() {
        use crate::size_class::{class_of, class_size};
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            // A fresh thread: its heap has no pool of these classes yet.
            let (near, far, request) = (28000, 30000, 17000);
            assert_eq!(class_of(near), class_of(request) + super::BORROW_CLASSES);
            assert!(class_of(far) > class_of(request) + super::BORROW_CLASSES);
            // SAFETY: every pointer freed or measured below was just allocated and is live.
            unsafe {
                // The first free of a size not in reuse gives the block's pages back, off
                // the free list (`free_multi_page`); taking it back at once puts the size in
                // reuse, so its next free leaves the block on the free list.
                let a = alloc::malloc(near);
                alloc::free(a, "free");
                assert_eq!(alloc::malloc(near), a);
                alloc::free(a, "free");
                let b = alloc::malloc(request);
                assert_eq!(b, a, "the free {near}-byte block was not reused");
                assert_eq!(
                    alloc::usable_size(b, "malloc_usable_size"),
                    class_size(class_of(near))
                );
                let c = alloc::malloc(far);
                alloc::free(c, "free");
                assert_eq!(alloc::malloc(far), c);
                alloc::free(c, "free");
                let d = alloc::malloc(request);
                assert_ne!(
                    d,
                    c,
                    "a block {} classes up was taken",
                    class_of(far) - class_of(request)
                );
                assert_eq!(
                    alloc::usable_size(d, "malloc_usable_size"),
                    class_size(class_of(request))
                );
                alloc::free(b, "free");
                alloc::free(d, "free");
            }
            assert_eq!(alloc::check(), 0);
        })
        .join()
        .unwrap();
    }

    /// Free multi-page blocks that a sweep moved into their pool's discarded set serve the
    /// next requests of their class (the same blocks, without a new pool, live: not carrying
    /// the freed key), and the pool's accounting (checked by the invariant walk) holds all
    /// along. Blocks of 8448 bytes (the class just above 8 KiB) and 10 KiB share pages with
    /// their neighbours, so their first words survive the sweep; 20 KiB ones are whole pages.
    #[test]
    fn swept_blocks_come_back_from_the_discarded_set() {
        for size in [8224, 10000, 20000] {
            swept_blocks_come_back(size);
        }
    }

    fn swept_blocks_come_back(size: usize) {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(move || {
            const N: usize = 20;
            let mut blocks = [core::ptr::null_mut::<u8>(); N];
            // SAFETY: every block written or freed below was just allocated and is live.
            unsafe {
                let keep = alloc::malloc(size); // keeps the pool in use through the trim
                for b in blocks.iter_mut() {
                    *b = alloc::malloc(size);
                    core::ptr::write_bytes(*b, 0xab, size);
                }
                for b in blocks {
                    alloc::free(b, "free");
                }
                // Sweeps every free multi-page block of this thread into the discarded sets.
                alloc::trim();
                assert_eq!(alloc::check(), 0);
                // Blocks in the discarded sets of this thread's pools of the class (the
                // thread may have adopted a pool with other free blocks: they count too).
                let class = crate::size_class::class_of(size);
                let in_sets = || {
                    let heap = crate::tls::heap();
                    let mut n = 0;
                    let mut pool = (*heap).avail[class];
                    while pool != super::empty_pool() && !pool.is_null() {
                        n += (*pool).discarded_count() as usize;
                        pool = (*pool).next;
                    }
                    n
                };
                let discarded = in_sets();
                assert!(
                    discarded >= N,
                    "only {discarded} blocks in the discarded sets"
                );
                let mut again = [core::ptr::null_mut::<u8>(); N];
                for b in again.iter_mut() {
                    *b = alloc::malloc(size);
                    // Aborts on a block that still carries the freed key.
                    assert!(alloc::usable_size(*b, "malloc_usable_size") >= size);
                    core::ptr::write_bytes(*b, 0xcd, size);
                }
                assert_eq!(
                    in_sets(),
                    discarded - N,
                    "the blocks did not come from the sets"
                );
                assert_eq!(alloc::check(), 0);
                for b in again {
                    alloc::free(b, "free");
                }
                alloc::free(keep, "free");
            }
            assert_eq!(alloc::check(), 0);
        })
        .join()
        .unwrap();
    }

    /// Random alloc/free/realloc against a shadow model: contents survive, and the structures
    /// stay consistent (checked by the invariant walk) all along.
    #[test]
    fn random_operations_keep_contents_and_invariants() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            const SLOTS: usize = 2000;
            let mut blocks: [(*mut u8, usize, u8); SLOTS] = [(core::ptr::null_mut(), 0, 0); SLOTS];
            for step in 0..200_000u32 {
                let r = next();
                let i = (r % SLOTS as u64) as usize;
                let (p, n, tag) = blocks[i];
                if !p.is_null() {
                    // SAFETY: p is a live block of n bytes filled with tag.
                    unsafe {
                        for k in [0, n / 2, n - 1] {
                            assert_eq!(*p.add(k), tag, "block {i} corrupted");
                        }
                    }
                }
                let size = match (r >> 32) % 100 {
                    0 => 200_000 + (r >> 40) as usize % 300_000,
                    1..=9 => 513 + (r >> 40) as usize % 20_000,
                    _ => 1 + (r >> 40) as usize % 512,
                };
                let tag = (r >> 56) as u8;
                let q = match (r >> 20) % 3 {
                    0 if !p.is_null() => {
                        // SAFETY: p is live; it is replaced by the result.
                        unsafe { alloc::realloc(p, size, "realloc") }
                    }
                    _ => {
                        // SAFETY: p is null or live, and forgotten after this.
                        unsafe { alloc::free(p, "free") };
                        alloc::malloc(size)
                    }
                };
                assert!(!q.is_null());
                // SAFETY: q is a fresh block of at least `size` bytes.
                unsafe { core::ptr::write_bytes(q, tag, size) };
                blocks[i] = (q, size, tag);
                if step % 20_000 == 0 {
                    assert_eq!(alloc::check(), 0, "invariants broken at step {step}");
                }
            }
            for (p, _, _) in blocks {
                // SAFETY: every slot holds a live block or null.
                unsafe { alloc::free(p, "free") };
            }
            assert_eq!(alloc::check(), 0);
        })
        .join()
        .unwrap();
    }
}
