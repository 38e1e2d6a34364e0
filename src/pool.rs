//! Pools: a run of memory carved into blocks of one size class, and the descriptor that tracks
//! them. Pool descriptors live in their arena's header (out of band), so a pool's memory holds
//! nothing but blocks and a stray write past a block cannot corrupt allocator state.
//!
//! ## Block accounting (the invariant every path keeps)
//! ```text
//! capacity = carved + uncarved
//! carved   = used + len(free) + len(thread_free)      (blocks cut from the pool so far)
//! used     = blocks handed to the program that have not come back through `free` or
//!            a collection of `thread_free`
//! ```
//! `free` is the owner's list: only the owning thread touches it, with plain loads and stores.
//! `thread_free` is where other threads push the blocks they free (a CAS loop, Release); the
//! owner takes the whole list at once with a swap (Acquire) and splices it onto `free`.
//! The pool is empty when `used == 0` after collecting; only then may it leave its heap.
//!
//! ## States
//! ```text
//!  Free ──acquire──▶ Avail ◀──────free a block──────── Full
//!   ▲                 │  └──no free block, none to carve──▶┘
//!   └──release (used == 0)
//!  Avail/Full ──thread exits──▶ Abandoned ──adopted──▶ Avail
//! ```
//! A freed block carries its pool descriptor's address in its second word (`freed_key`), so
//! that freeing it again is noticed by a single compare against a register the free path
//! already holds, on a cache line it already writes (glibc's tcache `key` idea). Allocation
//! clears it. The program cannot know descriptor addresses (they are not in its memory), so
//! a live block holding one is practically impossible; a match is still confirmed by walking
//! the free lists before aborting, where that is safe.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::heap::Heap;

/// A free block: the first two words of its memory.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
    pub key: usize,
}

/// Free blocks of the multi-page classes carry a third word, the mark sweeps leave
/// (`discard_inner_pages`): the first sweep that finds a block free marks it *seen*; the next
/// one, if the block is still free and still marked, discards its inner pages and marks it
/// *discarded*, which later sweeps skip. So only a block that stayed free for a whole sweep
/// interval loses its pages: one freed and allocated again in a loop keeps them. Allocation
/// clears the mark (`clear_discard_mark`). A block whose mark survives reuse (the program
/// never wrote its third word) only delays or skips a discard: no harm but a missed page.
const DISCARD_MARK_WORD: usize = 2;
const SEEN_SALT: usize = 0x5157_e9ed_d15c_a4d0;
const DISCARDED_SALT: usize = 0x2c4b_93e0_77a1_6f95;

/// Clears the discard mark of a block of a multi-page class just handed to the program.
///
/// # Safety
/// `p` is a live block of a multi-page class (at least three words).
#[inline(always)]
pub unsafe fn clear_discard_mark(p: *mut u8) {
    // SAFETY: per the contract the word is inside the block.
    unsafe { *(p as *mut usize).add(DISCARD_MARK_WORD) = 0 };
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum PoolState {
    /// On its arena's free list; `block_size == 0`.
    Free,
    /// In its owner heap's list for its class: may have free blocks.
    Avail,
    /// In its owner heap's full list: had no free block when last looked at.
    Full,
    /// Its owner thread exited; waiting in the abandoned list for adoption.
    Abandoned,
}

/// Subtracted from `used` while a pool is Full (see `Pool::used`).
pub const FULL_BIAS: i32 = 1 << 30;

/// Bytes carved per refill: a page's worth, so a fresh pool is touched page by page, but at
/// least `CARVE_MIN_BLOCKS` so that large classes do not refill on every allocation.
const CARVE_BYTES: usize = 4096;
const CARVE_MIN_BLOCKS: usize = 4;

/// A pool descriptor is three cache lines, laid out by who writes them, so that a thread
/// freeing into another thread's pool does not steal the owner's hot line on every free:
/// line 1 is read by everyone and written only on slow paths; line 2 is written by the owner
/// on every malloc and free; line 3 takes other threads' CAS pushes and the list links.
#[repr(C, align(64))]
pub struct Pool {
    // ---- line 1: read by every free (owner or not), written on slow paths only ----
    /// The heap whose thread owns this pool; `heap::NO_OWNER` when Free or Abandoned. Written
    /// by the owner or adopter (Release), read by any freeing thread to tell local from remote.
    pub owner: AtomicPtr<Heap>,
    /// First byte of the pool's memory.
    pub start: *mut u8,
    /// `offset * div_mul` rotated right by `div_rot` is the block index when `offset` is a
    /// multiple of `block_size`, and a huge number otherwise (exact division by a constant).
    pub div_mul: u64,
    pub div_rot: u32,
    /// Number of blocks the pool holds.
    pub capacity: u32,
    /// Block size in bytes; 0 while the pool is `Free`.
    pub block_size: u32,
    /// Blocks carved so far (`carved` in the invariant).
    pub carved: u32,
    pub state: PoolState,
    /// Size class of the blocks (valid when not Free).
    pub class: u8,
    /// Head of its heap's class list, so `used` holds the head bias (for statistics).
    pub head: bool,
    /// Free and possibly resident: counted in the arena's dirty bytes until discarded.
    pub dirty: bool,
    /// When the pool last became free and dirty (`os::now_ms`), for the purge delay.
    pub freed_at_ms: u32,
    /// The arena whose header holds this descriptor.
    pub arena: *mut crate::arena::Arena,
    /// Index of this pool in its arena.
    pub index: u32,
    _pad1: [u8; 4],
    // ---- line 2: the owner's, written by every local malloc and free ----
    /// The owner's free list.
    pub free: *mut Block,
    /// Blocks out in the program (see the module invariant), plus the heap's head bias, minus
    /// `FULL_BIAS` while the pool is Full: so free's single test `used <= 0` after the
    /// decrement catches both "now empty" and "was full".
    pub used: i32,
    _pad2: [u8; 52],
    // ---- line 3: other threads' frees, and list links (slow paths) ----
    pub thread_free: AtomicPtr<Block>,
    /// Links in the heap class list, heap full list, arena free list or abandoned list.
    pub next: *mut Pool,
    pub prev: *mut Pool,
    _pad3: [u8; 40],
}

const _: () = {
    assert!(core::mem::offset_of!(Pool, free) == 64);
    assert!(core::mem::offset_of!(Pool, thread_free) == 128);
    assert!(core::mem::size_of::<Pool>() == 192);
};

// SAFETY: the raw pointers inside are only dereferenced under the ownership rules in the
// module comment (owner thread, arena lock or abandoned-list lock).
unsafe impl Sync for Pool {}
// SAFETY: as above.
unsafe impl Send for Pool {}

/// Modular inverse of an odd `d` modulo 2^64 (Newton's iteration, 5 steps from 3 correct bits).
const fn inverse_odd(d: u64) -> u64 {
    let mut x = d; // correct to 3 bits for odd d
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(d.wrapping_mul(x)));
        i += 1;
    }
    x
}

impl Pool {
    /// The value a freed block of this pool carries in its second word.
    #[inline(always)]
    pub fn freed_key(&self) -> usize {
        self as *const Pool as usize
    }

    /// A descriptor for no pool at all: `free` is null, so the malloc fast path falls through
    /// to the slow path without a separate "is there a pool" test. A template: every use
    /// copies it (into `EMPTY_POOL` or an arena header), which is what we want.
    #[allow(clippy::declare_interior_mutable_const)]
    pub const EMPTY: Pool = Pool {
        owner: AtomicPtr::new(ptr::null_mut()),
        start: ptr::null_mut(),
        div_mul: 0,
        div_rot: 0,
        capacity: 0,
        block_size: 0,
        carved: 0,
        state: PoolState::Free,
        class: 0,
        head: false,
        dirty: false,
        freed_at_ms: 0,
        arena: ptr::null_mut(),
        index: 0,
        _pad1: [0; 4],
        free: ptr::null_mut(),
        used: 0,
        _pad2: [0; 52],
        thread_free: AtomicPtr::new(ptr::null_mut()),
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
        _pad3: [0; 40],
    };

    /// Prepares a Free pool of `pool_size` bytes at `start` for blocks of class `class`.
    pub fn format(&mut self, class: usize, pool_size: usize) {
        let size = crate::size_class::class_size(class);
        let tz = size.trailing_zeros();
        self.block_size = size as u32;
        self.class = class as u8;
        self.capacity = (pool_size / size) as u32;
        self.div_rot = tz;
        self.div_mul = inverse_odd((size >> tz) as u64);
        self.free = ptr::null_mut();
        self.used = 0;
        self.carved = 0;
        self.thread_free.store(ptr::null_mut(), Ordering::Relaxed);
    }

    /// The index of the block starting at `p`, or `None` if `p` is not the start of a block
    /// of this pool (an interior or out-of-range pointer).
    #[inline(always)]
    pub fn block_index(&self, p: usize) -> Option<u32> {
        let offset = p.wrapping_sub(self.start as usize) as u64;
        let q = offset.wrapping_mul(self.div_mul).rotate_right(self.div_rot);
        if q < self.carved as u64 {
            Some(q as u32)
        } else {
            None
        }
    }

    /// Takes a block from the owner's free list; null if it is empty.
    ///
    /// # Safety
    /// Only the owner thread (or a holder of the abandoned-list lock) may call this.
    #[inline(always)]
    pub unsafe fn pop(&mut self) -> *mut Block {
        let b = self.free;
        if !b.is_null() {
            // SAFETY: blocks on `free` are carved blocks of this pool, not in use: we own them.
            unsafe {
                self.free = (*b).next;
                (*b).key = 0;
            }
            self.used += 1;
        }
        b
    }

    /// Puts `b` back on the owner's free list, marking it freed. The caller decrements
    /// `used` (and tests it, on the free path).
    ///
    /// # Safety
    /// `b` must be a block of this pool that is in use; only the owner thread may call this.
    #[inline(always)]
    pub unsafe fn push_local(&mut self, b: *mut Block) {
        let key = self.freed_key();
        // SAFETY: the caller hands the block back to us; it is ours to write.
        unsafe {
            (*b).next = self.free;
            (*b).key = key;
        }
        self.free = b;
    }

    /// Pushes `b` on the pool's thread_free list; any thread may call this.
    ///
    /// # Safety
    /// `b` must be a block of this pool that is in use and is being freed by this call.
    pub unsafe fn push_remote(&self, b: *mut Block) {
        // SAFETY: the block is being freed; nobody else writes it until the owner collects it.
        unsafe { (*b).key = self.freed_key() };
        let mut head = self.thread_free.load(Ordering::Relaxed);
        loop {
            // SAFETY: as above.
            unsafe { (*b).next = head };
            // Release: the owner that swaps the list out must see `next` and `key` written.
            match self.thread_free.compare_exchange_weak(
                head,
                b,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Moves the blocks other threads freed onto the owner's list; returns how many.
    ///
    /// # Safety
    /// Only the owner thread (or a holder of the abandoned-list lock) may call this.
    pub unsafe fn collect_remote(&mut self) -> u32 {
        if self.thread_free.load(Ordering::Relaxed).is_null() {
            return 0;
        }
        // Acquire pairs with the Release of push_remote.
        let head = self.thread_free.swap(ptr::null_mut(), Ordering::Acquire);
        let mut n = 1u32;
        let mut tail = head;
        // SAFETY: every block on the swapped-out list was pushed whole by push_remote and now
        // belongs to us alone.
        unsafe {
            while !(*tail).next.is_null() {
                tail = (*tail).next;
                n += 1;
            }
            (*tail).next = self.free;
        }
        self.free = head;
        self.used -= n as i32;
        n
    }

    /// Cuts up to a page's worth of fresh blocks onto the free list; false if none are left.
    ///
    /// # Safety
    /// Only the owner thread may call this; the pool must be formatted.
    pub unsafe fn carve(&mut self) -> bool {
        let left = self.capacity - self.carved;
        if left == 0 {
            return false;
        }
        let size = self.block_size as usize;
        // Blocks over two pages are carved one at a time: carving writes the first word of
        // each block, and each such block is a page the program may never use.
        let min = if size > 2 * CARVE_BYTES {
            1
        } else {
            CARVE_MIN_BLOCKS
        };
        let n = left.min((CARVE_BYTES / size).max(min) as u32);
        // SAFETY: blocks carved..carved+n lie inside the pool's memory, which we own.
        unsafe {
            let first = self.start.add(self.carved as usize * size);
            let mut b = first;
            for _ in 1..n {
                let next = b.add(size);
                (*(b as *mut Block)).next = next as *mut Block;
                b = next;
            }
            (*(b as *mut Block)).next = self.free;
            self.free = first as *mut Block;
        }
        self.carved += n;
        true
    }

    /// Returns to the OS the pages lying wholly inside the free blocks of the owner's list
    /// that were already free at the previous sweep (see `DISCARD_MARK_WORD`), or of all of
    /// them with `all`, except each block's first page, which holds the list link, the freed
    /// key and the mark. For the multi-page classes, whose freed blocks would otherwise stay
    /// resident as long as any block of the pool lives. Returns the bytes discarded, and
    /// whether it marked blocks for the next sweep.
    ///
    /// # Safety
    /// Only the owner thread may call this; blocks must be larger than two pages.
    pub unsafe fn discard_inner_pages(&mut self, all: bool) -> (usize, bool) {
        let size = self.block_size as usize;
        let page = crate::os::PAGE_SIZE;
        let mut discarded = 0;
        let mut marked = false;
        let mut b = self.free;
        while !b.is_null() {
            let at = b as usize;
            // SAFETY: blocks on `free` are ours until allocated, and have at least three words.
            unsafe {
                let word = (b as *mut usize).add(DISCARD_MARK_WORD);
                if *word == at ^ SEEN_SALT || (all && *word != at ^ DISCARDED_SALT) {
                    let from = (at + (DISCARD_MARK_WORD + 1) * 8 + page - 1) & !(page - 1);
                    let to = (at + size) & !(page - 1);
                    if to > from {
                        crate::os::discard(from as *mut u8, to - from);
                        discarded += to - from;
                    }
                    *word = at ^ DISCARDED_SALT;
                } else if *word != at ^ DISCARDED_SALT {
                    *word = at ^ SEEN_SALT;
                    marked = true;
                }
                b = (*b).next;
            }
        }
        (discarded, marked)
    }

    /// Discards the pages of an empty pool's carved blocks and forgets them (the pool is then
    /// as clean as a never used one, see `arena::release_pool`). Returns the bytes discarded.
    ///
    /// # Safety
    /// Only the owner thread may call this, on a pool with no block in use and none on
    /// `thread_free`.
    pub unsafe fn discard_carved(&mut self) -> usize {
        let page = crate::os::PAGE_SIZE;
        let len = (self.carved as usize * self.block_size as usize + page - 1) & !(page - 1);
        // SAFETY: the carved blocks are ours and unused; the range lies inside the pool.
        unsafe { crate::os::discard(self.start, len) };
        self.carved = 0;
        self.free = ptr::null_mut();
        len
    }

    /// Does the owner's free list or thread_free list hold `b`? (Used only to confirm a
    /// suspected double free, so a linear walk is fine.)
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn holds_free_block(&self, b: *mut Block) -> bool {
        let mut lists = [self.free, self.thread_free.load(Ordering::Acquire)];
        for head in lists.iter_mut() {
            let mut cur = *head;
            let mut steps = 0u32;
            while !cur.is_null() && steps <= self.capacity {
                if cur == b {
                    return true;
                }
                // SAFETY: blocks on these lists are free blocks of this pool.
                cur = unsafe { (*cur).next };
                steps += 1;
            }
        }
        false
    }

    /// Blocks the program holds (or freed remotely and not yet collected): `used` without
    /// the head bias or the full bias. Racy when read by a thread that does not own the pool.
    pub fn blocks_out(&self) -> u32 {
        let mut n = self.used;
        if self.state == PoolState::Full {
            n += FULL_BIAS;
        }
        if self.head {
            n -= 1;
        }
        n.max(0) as u32
    }

    /// Bytes of the pool from its start to the end of its carved blocks.
    pub fn carved_bytes(&self) -> usize {
        self.carved as usize * self.block_size as usize
    }
}

/// Pushes `pool` on the front of a doubly linked list (through `next`/`prev`) headed by `head`
/// (null when empty).
///
/// # Safety
/// The caller owns the list and `pool`, which is on no list.
pub unsafe fn list_push(head: &mut *mut Pool, pool: *mut Pool) {
    // SAFETY: per the contract.
    unsafe {
        (*pool).prev = ptr::null_mut();
        (*pool).next = *head;
        if !(*head).is_null() {
            (**head).prev = pool;
        }
    }
    *head = pool;
}

/// Takes `pool` off the doubly linked list headed by `head`.
///
/// # Safety
/// The caller owns the list, and `pool` is on it.
pub unsafe fn list_unlink(head: &mut *mut Pool, pool: *mut Pool) {
    // SAFETY: per the contract.
    unsafe {
        if (*pool).prev.is_null() {
            *head = (*pool).next;
        } else {
            (*(*pool).prev).next = (*pool).next;
        }
        if !(*pool).next.is_null() {
            (*(*pool).next).prev = (*pool).prev;
        }
        (*pool).next = ptr::null_mut();
        (*pool).prev = ptr::null_mut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::{class_size, NUM_CLASSES};

    fn test_pool(class: usize, mem: &mut [u8]) -> Pool {
        let mut p = Pool::EMPTY;
        p.start = mem.as_mut_ptr();
        p.format(class, mem.len());
        p
    }

    #[test]
    fn block_index_accepts_exactly_the_block_starts() {
        for class in 0..NUM_CLASSES {
            let size = class_size(class);
            let pool_size =
                1usize << crate::size_class::POOL_SHIFT[crate::size_class::pool_kind(class)];
            let mut p = Pool::EMPTY;
            p.start = 0x10_0000_0000 as *mut u8;
            p.format(class, pool_size);
            p.carved = p.capacity;
            let start = p.start as usize;
            for off in (0..pool_size + 64).step_by(16) {
                let expect = off % size == 0 && off / size < p.capacity as usize;
                assert_eq!(
                    p.block_index(start + off).is_some(),
                    expect,
                    "class {class} off {off}"
                );
                if expect {
                    assert_eq!(p.block_index(start + off), Some((off / size) as u32));
                }
            }
            assert_eq!(p.block_index(start - 16), None);
            assert_eq!(p.block_index(start + 8), None);
        }
    }

    #[test]
    fn uncarved_blocks_are_not_valid_yet() {
        let mut mem = vec![0u8; 16384];
        let mut p = test_pool(3, &mut mem);
        let start = p.start as usize;
        assert_eq!(p.block_index(start), None);
        // SAFETY: the pool covers `mem`, a buffer this test owns; one thread.
        unsafe { assert!(p.carve()) };
        assert_eq!(p.block_index(start), Some(0));
        assert_eq!(p.block_index(start + p.carved_bytes()), None);
    }

    #[test]
    fn carving_pop_push_keep_the_invariant() {
        let mut mem = vec![0u8; 16384];
        let mut p = test_pool(1, &mut mem); // 32-byte blocks, 512 of them
        let mut got = Vec::new();
        // SAFETY: the pool covers `mem`, a buffer this test owns; one thread.
        unsafe {
            loop {
                let b = p.pop();
                if b.is_null() {
                    if !p.carve() {
                        break;
                    }
                    continue;
                }
                got.push(b);
            }
        }
        assert_eq!(got.len(), p.capacity as usize);
        assert_eq!(p.used, p.capacity as i32);
        let mut sorted: Vec<usize> = got.iter().map(|&b| b as usize).collect();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len(), "a block was handed out twice");
        for &b in &got {
            assert!(p.block_index(b as usize).is_some());
        }
        // SAFETY: every block in `got` is a live block of this pool, freed once.
        unsafe {
            for &b in &got[..100] {
                p.push_local(b);
                p.used -= 1;
            }
            for &b in &got[100..] {
                p.push_remote(b);
            }
            assert!(p.holds_free_block(got[0]));
            assert!(p.holds_free_block(got[300]));
            assert_eq!(p.collect_remote(), p.capacity - 100);
        }
        assert_eq!(p.used, 0);
    }

    #[test]
    fn freed_blocks_carry_the_key_and_allocated_ones_do_not() {
        let mut mem = vec![0u8; 16384];
        let mut p = test_pool(0, &mut mem);
        // SAFETY: the pool covers `mem`, a buffer this test owns; one thread.
        unsafe {
            p.carve();
            let b = p.pop();
            assert_ne!((*b).key, p.freed_key());
            p.push_local(b);
            p.used -= 1;
            assert_eq!((*b).key, p.freed_key());
            let again = p.pop();
            assert_eq!(again, b);
            assert_eq!((*b).key, 0);
        }
    }

    #[test]
    fn inverse_is_an_inverse() {
        for d in (1u64..5000).step_by(2) {
            assert_eq!(d.wrapping_mul(inverse_odd(d)), 1);
        }
    }
}
