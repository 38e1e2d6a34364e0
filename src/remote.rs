//! Blocks freed by a thread that does not own their pool, and pools whose owner is gone.
//!
//! A remote free pushes the block on its pool's `thread_free` list with a CAS (the only atomic
//! read-modify-write poolmalloc does per block, and only for cross-thread frees), then sets
//! the owner heap's `remote_hint` so that its slow path looks at its full pools. The owner
//! collects a whole list at once with a swap.
//!
//! A thread that exits *abandons* the pools that still hold live blocks: they go on a global
//! per-class list (`ABANDONED`, under a lock, slow paths only). A heap that needs a pool of
//! that class adopts one before mapping a fresh one, so a dead thread's memory is reused by the
//! living. Remote frees into an abandoned pool set `ABANDONED_HINT`; the next slow path that
//! sees it sweeps the list and returns pools that became empty to their arenas, so memory held
//! by dead threads is not stranded either.

use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::diag;
use crate::heap::{self, Heap};
use crate::pool::{self, Block, Pool, PoolState};
use crate::size_class::NUM_CLASSES;
use crate::stats;
use crate::sync::Lock;

struct Abandoned {
    heads: [*mut Pool; NUM_CLASSES],
    count: usize,
}
// SAFETY: the pools are only touched under the lock.
unsafe impl Send for Abandoned {}

static ABANDONED: Lock<Abandoned> = Lock::new(Abandoned {
    heads: [ptr::null_mut(); NUM_CLASSES],
    count: 0,
});
static ABANDONED_HINT: AtomicBool = AtomicBool::new(false);

/// Frees `p`, a pointer into `pool`, which the calling thread does not own.
///
/// # Safety
/// `pool` is the descriptor the address map gives for `p`.
#[cold]
#[inline(never)]
#[link_section = ".text_warm"]
pub unsafe fn free_remote(pool: *mut Pool, p: usize, api: &str, call: usize) {
    // SAFETY: descriptors of live arenas stay readable; a free pool has block_size == 0, and
    // `carved` bounds the valid block indices.
    unsafe {
        if (*pool).block_size == 0 || (*pool).block_index(p).is_none() {
            diag::fatal(api, "invalid pointer", p);
        }
        let b = p as *mut Block;
        if (*b).key == (*pool).freed_key() {
            diag::fatal(api, "double free detected for", p);
        }
        (*pool).push_remote(b);
        let owner = heap::owner_heap((*pool).owner.load(Ordering::Acquire));
        if owner == heap::no_owner() {
            ABANDONED_HINT.store(true, Ordering::Release);
        } else {
            heap::hint_remote(owner);
        }
        heap::count(call);
        heap::count(stats::call::REMOTE_FREE);
    }
}

/// Puts a pool with live blocks on the abandoned list.
///
/// # Safety
/// The caller owns `pool` (its exiting heap did) and it is on no list.
pub unsafe fn abandon(pool: *mut Pool) {
    let mut ab = ABANDONED.lock();
    // SAFETY: per the contract; the list is ours under the lock.
    unsafe {
        (*pool).owner.store(heap::no_owner(), Ordering::Release);
        (*pool).state = PoolState::Abandoned;
        pool::list_push(&mut ab.heads[(*pool).class as usize], pool);
    }
    ab.count += 1;
    stats::global().pools_abandoned.add(1);
    // Blocks may already sit on its thread_free list: let the next sweep look.
    ABANDONED_HINT.store(true, Ordering::Release);
}

/// Takes an abandoned pool of `class` for `heap`, with its remote frees collected.
///
/// # Safety
/// The caller owns `heap`.
pub unsafe fn adopt(class: usize, heap: *mut Heap) -> *mut Pool {
    let pool = {
        let mut ab = ABANDONED.lock();
        let pool = ab.heads[class];
        if pool.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: abandoned pools are ours under the lock.
        unsafe { unlink(&mut ab, pool) };
        pool
    };
    // SAFETY: the pool is off every list; setting the owner makes it ours.
    unsafe {
        (*pool)
            .owner
            .store(heap::pool_owner_word(heap, pool), Ordering::Release);
        (*pool).collect_remote();
    }
    stats::global().pools_adopted.add(1);
    pool
}

/// If a remote free hit an abandoned pool since the last sweep, returns the abandoned pools
/// that are now empty to their arenas.
pub fn sweep_abandoned_if_hinted() {
    if ABANDONED_HINT.load(Ordering::Relaxed) {
        sweep_abandoned();
    }
}

/// Collects remote frees of every abandoned pool and releases those that became empty.
/// Pools are abandoned only by exiting threads: `.text_warm` (see lib.rs).
#[inline(never)]
#[link_section = ".text_warm"]
pub fn sweep_abandoned() {
    let mut ab = ABANDONED.lock();
    ABANDONED_HINT.store(false, Ordering::Relaxed);
    for class in 0..NUM_CLASSES {
        let mut pool = ab.heads[class];
        while !pool.is_null() {
            // SAFETY: abandoned pools are ours under the lock.
            unsafe {
                let next = (*pool).next;
                (*pool).collect_remote();
                if (*pool).used == 0 {
                    unlink(&mut ab, pool);
                    heap::release(pool);
                }
                pool = next;
            }
        }
    }
}

unsafe fn unlink(ab: &mut Abandoned, pool: *mut Pool) {
    // SAFETY: the caller holds the lock and pool is on the list of its class.
    unsafe { pool::list_unlink(&mut ab.heads[(*pool).class as usize], pool) };
    ab.count -= 1;
}

/// Number of pools waiting for adoption.
pub fn abandoned_count() -> usize {
    ABANDONED.lock().count
}

pub fn lock_for_fork() {
    ABANDONED.hold_for_fork();
}
/// # Safety
/// Only after `lock_for_fork`.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { ABANDONED.release_after_fork() };
}
