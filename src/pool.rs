//! Pools: a run of memory carved into blocks of one size class, and the descriptor that tracks
//! them. Pool descriptors live in their arena's header (out of band), so a pool's memory holds
//! nothing but blocks and a stray write past a block cannot corrupt allocator state.
//!
//! ## Block accounting (the invariant every path keeps)
//! ```text
//! capacity = carved + uncarved
//! carved   = used + len(free) + len(resting) + len(thread_free) + |discarded|
//!                                                    (blocks cut from the pool so far)
//! used     = blocks handed to the program that have not come back through `free` or
//!            a collection of `thread_free`
//! ```
//! `free` is the owner's list: only the owning thread touches it, with plain loads and stores.
//! `thread_free` is where other threads push the blocks they free (a CAS loop, Release); the
//! owner takes the whole list at once with a swap (Acquire) and splices it onto `free`.
//! `resting` and the discarded set hold free blocks off the free list, on their way to giving
//! their pages back (`rest_free_blocks`, `DISCARD_MARK_WORD`).
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
use crate::size_class::{class_size, pool_kind, NUM_CLASSES, POOL_SHIFT};

/// A free block: the first two words of its memory.
#[repr(C)]
pub struct Block {
    pub next: *mut Block,
    pub key: usize,
}

/// Free blocks of the multi-page classes carry a third word, the mark sweeps leave
/// (`discard_free_blocks`): the first sweep that finds a block free marks it *seen*; the next
/// one, if the block is still free and still marked, takes it off the free list into the
/// pool's *discarded set* and gives back every page lying wholly inside it, the first one
/// included (the set is a bitmap in the descriptor, so the block's memory holds nothing the
/// pool needs), and the pages it shares with neighbours that are in the set too or were
/// never carved. So only a block that stayed free for a whole sweep interval loses its pages:
/// one freed and allocated again in a loop keeps them. Allocation clears the mark
/// (`clear_discard_mark`). A block whose mark survives reuse (the program never wrote its
/// third word) is only discarded one sweep early when freed again: no harm.
///
/// A discarded block whose first page went back reads as zero, so freeing it again does not
/// meet the freed key: that double free is caught later, before any harm, when the block is
/// popped from the free list while still in the set (`check_popped`, on every path that pops
/// a multi-page class), when a sweep finds it in both, or when the pool forgets its blocks to
/// be given back (`forget_blocks`).
const DISCARD_MARK_WORD: usize = 2;
const SEEN_SALT: usize = 0x5157_e9ed_d15c_a4d0;
/// Bits in the discarded set: every multi-page pool holds fewer blocks (a 1 MiB pool holds at
/// most 124, of the class just above 8 KiB).
const DISCARDED_SET_BITS: usize = 128;

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
/// least `CARVE_MIN_BLOCKS` so that large classes do not refill on every allocation (unless
/// the class is carving sparsely, see `Pool::carve`).
const CARVE_BYTES: usize = 4096;
pub const CARVE_MIN_BLOCKS: u32 = 4;

/// The most blocks a pool holds: the smallest class in the smallest pools (2048 of 16 bytes).
const MAX_BLOCKS: usize = (1 << POOL_SHIFT[0]) / class_size(0);
const _: () = {
    let mut c = 0;
    while c < NUM_CLASSES {
        assert!((1 << POOL_SHIFT[pool_kind(c)]) / class_size(c) <= MAX_BLOCKS);
        c += 1;
    }
};

/// A pool descriptor is two cache lines, laid out by who writes them. Line 1 is what every
/// free reads (any thread's), plus the list other threads push their frees on, plus the list
/// links, which only slow paths write; line 2 is the owner's, written by every local malloc
/// and free. So a thread freeing into another thread's pool never writes the line the owner
/// allocates from (a producer and its consumer do not share a written line). Two lines, not
/// three: a small arena's header holds 256 descriptors, and the header's pages are resident
/// memory the program pays for (see `arena` on formatting them lazily).
#[repr(C, align(64))]
pub struct Pool {
    // ---- line 1: read by every free; other threads' pushes; slow-path links ----
    /// The heap whose thread owns this pool; `heap::NO_OWNER` when Free or Abandoned. Written
    /// by the owner or adopter (Release), read by any freeing thread to tell local from remote.
    pub owner: AtomicPtr<Heap>,
    /// First byte of the pool's memory.
    pub start: *mut u8,
    /// `offset * div_mul` rotated right by `div_rot` is the block index when `offset` is a
    /// multiple of `block_size`, and a huge number otherwise (exact division by a constant).
    pub div_mul: u64,
    /// Blocks other threads freed, pushed with a CAS (see the module comment).
    pub thread_free: AtomicPtr<Block>,
    /// Links in the heap class list, heap full list, arena free list or abandoned list.
    pub next: *mut Pool,
    pub prev: *mut Pool,
    /// Blocks carved so far (`carved` in the invariant).
    pub carved: u32,
    /// Block size in bytes; 0 while the pool is `Free`.
    pub block_size: u32,
    pub div_rot: u8,
    pub state: PoolState,
    /// Size class of the blocks (valid when not Free).
    pub class: u8,
    /// Head of its heap's class list, so `used` holds the head bias (for statistics).
    pub head: bool,
    /// When the pool last became free and dirty (`os::now_ms`), for the purge delay.
    pub freed_at_ms: u32,
    // ---- line 2: the owner's, written by every local malloc and free ----
    /// The owner's free list.
    pub free: *mut Block,
    /// Blocks out in the program (see the module invariant), plus the heap's head bias, minus
    /// `FULL_BIAS` while the pool is Full: so free's single test `used <= 0` after the
    /// decrement catches both "now empty" and "was full".
    pub used: i32,
    /// Number of blocks the pool holds.
    pub capacity: u32,
    /// The discarded set: bit i is set when block i is free, on no list, and its whole pages
    /// have been given back (multi-page classes only, see `DISCARD_MARK_WORD`). Owner only;
    /// on this line because multi-page allocations test it.
    discarded: [u64; 2],
    /// The arena whose header holds this descriptor.
    pub arena: *mut crate::arena::Arena,
    /// Index of this pool in its arena.
    pub index: u32,
    /// Free and possibly resident: counted in the arena's dirty bytes until discarded.
    pub dirty: bool,
    /// Heading its class list with no block out at the heap's last tick, since `freed_at_ms`
    /// (see `heap::release_idle_heads`).
    pub idle_head_seen: bool,
    /// Frees that took the checked path since the heap's last tick because the discarded set
    /// held blocks (see `heap::revive_if_in_use`). Owner only.
    pub checked_frees: u8,
    /// Its discarded set was taken back for a class in use (`revive_discarded`): its blocks
    /// lose their pages again only after an interval in which the class allocated nothing.
    pub revived: bool,
    /// Free blocks that have been resting since the heap's last tick (swept medium classes,
    /// see `rest_free_blocks`): off the free list, so only a refill hands them out. Owner only.
    resting: *mut Block,
    /// Bytes from `start` whose pages may be resident: the carved extent since the pool was
    /// last clean (never used, or discarded), whatever classes carved it; `carve` extends it.
    /// Carving past it faults pages in (`carving_grows`).
    resident_end: u32,
    _pad2: [u8; 4],
}

const _: () = {
    assert!(core::mem::offset_of!(Pool, freed_at_ms) + 4 == 64);
    assert!(core::mem::offset_of!(Pool, free) == 64);
    assert!(core::mem::offset_of!(Pool, resting) % 8 == 0);
    assert!(core::mem::size_of::<Pool>() == 128);
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
        thread_free: AtomicPtr::new(ptr::null_mut()),
        next: ptr::null_mut(),
        prev: ptr::null_mut(),
        carved: 0,
        block_size: 0,
        div_rot: 0,
        state: PoolState::Free,
        class: 0,
        head: false,
        freed_at_ms: 0,
        free: ptr::null_mut(),
        used: 0,
        capacity: 0,
        discarded: [0; 2],
        arena: ptr::null_mut(),
        index: 0,
        dirty: false,
        idle_head_seen: false,
        checked_frees: 0,
        revived: false,
        resting: ptr::null_mut(),
        resident_end: 0,
        _pad2: [0; 4],
    };

    /// Prepares a Free pool of `pool_size` bytes at `start` for blocks of class `class`.
    /// Never inlined: inside `heap::refill_and_pop`'s loop the compiler would hoist the
    /// division constants out of it, and every refill would compute them (13 instructions
    /// per op in callgrind's 8 KiB batches).
    #[inline(never)]
    pub fn format(&mut self, class: usize, pool_size: usize) {
        let size = crate::size_class::class_size(class);
        let tz = size.trailing_zeros();
        self.block_size = size as u32;
        self.class = class as u8;
        self.capacity = (pool_size / size) as u32;
        self.div_rot = tz as u8;
        self.div_mul = inverse_odd((size >> tz) as u64);
        self.free = ptr::null_mut();
        self.used = 0;
        self.carved = 0;
        self.discarded = [0; 2];
        self.resting = ptr::null_mut();
        self.checked_frees = 0;
        self.revived = false;
        self.idle_head_seen = false;
        self.thread_free.store(ptr::null_mut(), Ordering::Relaxed);
    }

    /// The index of the block starting at `p`, or `None` if `p` is not the start of a block
    /// of this pool (an interior or out-of-range pointer).
    #[inline(always)]
    pub fn block_index(&self, p: usize) -> Option<u32> {
        let offset = p.wrapping_sub(self.start as usize) as u64;
        let q = offset
            .wrapping_mul(self.div_mul)
            .rotate_right(self.div_rot as u32);
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
        // A block in the discarded set may read as zero, so a second free of it from another
        // thread passed `free_remote`'s key check: catch it here, before the free list and the
        // malloc fast path (which does not look at the set) can hand it out twice.
        let check = self.has_discarded();
        // SAFETY: every block on the swapped-out list was pushed whole by push_remote and now
        // belongs to us alone.
        unsafe {
            loop {
                if check {
                    self.check_popped(tail);
                }
                if (*tail).next.is_null() {
                    break;
                }
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
    /// With `sparse` (the heap saw the class carve nothing lately, `heap::refill_and_pop`) no
    /// more than a page's worth even for classes whose blocks fill a page in fewer than
    /// `CARVE_MIN_BLOCKS`.
    ///
    /// # Safety
    /// Only the owner thread may call this; the pool must be formatted.
    pub unsafe fn carve(&mut self, sparse: bool) -> bool {
        let left = self.capacity - self.carved;
        if left == 0 {
            return false;
        }
        let size = self.block_size as usize;
        // Carving writes the first word of each block, and each block of a page or more is a
        // page the program may never use. Blocks over two pages are carved one at a time; up
        // to two, as many as a page holds (at least one) for a class that carves sparsely,
        // `CARVE_MIN_BLOCKS` for one that is filling pools in a loop.
        let min = if sparse || size > 2 * CARVE_BYTES {
            1
        } else {
            CARVE_MIN_BLOCKS
        };
        let n = left.min((CARVE_BYTES / size).max(min as usize) as u32);
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
        self.resident_end = self.resident_end.max(self.carved_bytes() as u32);
        true
    }

    /// Moves the free blocks of the owner's list that were already free at the previous sweep
    /// (see `DISCARD_MARK_WORD`), or all of them with `all`, into the discarded set, giving
    /// back the pages lying wholly inside each; marks the others for the next sweep. For the
    /// multi-page classes, whose freed blocks would otherwise stay resident as long as any
    /// block of the pool lives. Returns the bytes discarded, and whether it marked blocks.
    /// A block found both on the list and in the set was freed twice: that aborts.
    ///
    /// # Safety
    /// Only the owner thread may call this; blocks must be larger than two pages.
    pub unsafe fn discard_free_blocks(&mut self, all: bool) -> (usize, bool) {
        debug_assert!(self.capacity as usize <= DISCARDED_SET_BITS);
        let mut discarded = 0;
        let mut marked = false;
        let mut link: *mut *mut Block = &mut self.free;
        // SAFETY: blocks on `free` are ours until allocated, and have at least three words;
        // `link` always points at the `free` head or at the `next` word of a listed block.
        unsafe {
            while !(*link).is_null() {
                let b = *link;
                let at = b as usize;
                let word = (b as *mut usize).add(DISCARD_MARK_WORD);
                if !all && *word != at ^ SEEN_SALT {
                    *word = at ^ SEEN_SALT;
                    marked = true;
                    link = &mut (*b).next;
                    continue;
                }
                *link = (*b).next;
                let Some(i) = self.block_index(at) else {
                    crate::diag::fatal("free", "heap corruption: foreign block on a free list", at);
                };
                discarded += self.enter_discarded_set(i);
            }
        }
        (discarded, marked)
    }

    /// Puts block `b`, which the owner is freeing right now, straight into the discarded set
    /// instead of on the free list, giving back its whole pages: for a block the program is
    /// not reusing (see `heap::free_multi_page`). Returns the bytes discarded.
    ///
    /// # Safety
    /// Only the owner thread may call this; `b` is a block of this pool (`block_index` checked)
    /// of a multi-page class, in use until this call. The caller decrements `used`.
    pub unsafe fn discard_freed_block(&mut self, b: *mut Block) -> usize {
        let Some(i) = self.block_index(b as usize) else {
            crate::diag::fatal("free", "invalid pointer", b as usize);
        };
        self.enter_discarded_set(i)
    }

    /// Adds block `i`, free and on no list, to the discarded set and discards the pages lying
    /// wholly inside it; returns their bytes. A block already in the set was freed twice.
    fn enter_discarded_set(&mut self, i: u32) -> usize {
        let size = self.block_size as usize;
        let at = self.start as usize + i as usize * size;
        if self.in_discarded_set(i) {
            crate::diag::fatal("free", "double free detected for", at);
        }
        self.discarded[i as usize / 64] |= 1 << (i % 64);
        let page = crate::os::PAGE_SIZE;
        let end = at + size;
        let mut from = at & !(page - 1);
        let mut to = (end + page - 1) & !(page - 1);
        // A page the block shares with neighbours goes too once nothing on it matters: every
        // block it overlaps is in the set as well, or not carved yet. Without this, a pool
        // whose blocks are all discarded kept one page in two or three (10 KiB blocks), and
        // blocks smaller than a page (3 KiB) would never give back anything.
        if from != at && !self.page_is_unused(from) {
            from += page;
        }
        if to != end && !self.page_is_unused(to - page) {
            to -= page;
        }
        if to <= from {
            return 0;
        }
        // SAFETY: [from, to) covers pages lying wholly inside block i, which is free and on
        // no list, and pages it shares with neighbours only when they are in the set or were
        // never carved: nobody reads those bytes until their block leaves the set (or is
        // carved), and then as fresh (zero) memory. The range stays inside the pool, whose
        // size is a multiple of the page size.
        unsafe { crate::os::discard(from as *mut u8, to - from) };
        to - from
    }

    /// Does every block overlapping the page at `page_start` sit in the discarded set or lie
    /// beyond the carved ones? Then nothing on the page is needed.
    fn page_is_unused(&self, page_start: usize) -> bool {
        let size = self.block_size as usize;
        let offset = page_start - self.start as usize;
        let first = offset / size;
        let last = (offset + crate::os::PAGE_SIZE - 1) / size;
        (first..=last).all(|j| j >= self.carved as usize || self.in_discarded_set(j as u32))
    }

    #[inline]
    fn in_discarded_set(&self, i: u32) -> bool {
        (i as usize) < DISCARDED_SET_BITS && self.discarded[i as usize / 64] & (1 << (i % 64)) != 0
    }

    /// Is `p` a block of this pool that is in the discarded set?
    pub fn holds_discarded(&self, p: usize) -> bool {
        self.block_index(p)
            .is_some_and(|i| self.in_discarded_set(i))
    }

    /// Is the discarded set non-empty?
    #[inline(always)]
    pub fn has_discarded(&self) -> bool {
        self.discarded != [0; 2]
    }

    /// Aborts if `b`, just popped from the free list, is also in the discarded set: it was
    /// freed a second time after a sweep had discarded it, and handing it out would give it
    /// out twice (see `DISCARD_MARK_WORD`). Call it when `has_discarded`.
    #[cold]
    #[inline(never)]
    pub fn check_popped(&self, b: *mut Block) {
        if self.holds_discarded(b as usize) {
            crate::diag::fatal("free", "double free detected for", b as usize);
        }
    }

    /// Blocks in the discarded set.
    pub fn discarded_count(&self) -> u32 {
        self.discarded[0].count_ones() + self.discarded[1].count_ones()
    }

    /// Takes a block out of the discarded set (the lowest, so the pool's front fills first);
    /// null if the set is empty. Counted in `used` like a pop.
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn take_discarded(&mut self) -> *mut Block {
        let w = if self.discarded[0] != 0 {
            0
        } else if self.discarded[1] != 0 {
            1
        } else {
            return ptr::null_mut();
        };
        let bit = self.discarded[w].trailing_zeros() as usize;
        self.discarded[w] &= !(1 << bit);
        self.used += 1;
        let i = w * 64 + bit;
        // SAFETY: a block in the set is a carved block of this pool, and now ours to hand
        // out. Its first words survive when they share a page with the previous block (which
        // the sweep could not give back): the freed key must go, as in `pop`.
        unsafe {
            let b = self.start.add(i * self.block_size as usize) as *mut Block;
            (*b).key = 0;
            b
        }
    }

    /// Moves the owner's free list onto the resting list, which must be empty (the tick
    /// discards it first). Blocks of the swept medium classes (3 to 8 KiB, see
    /// `size_class::FIRST_SWEPT_CLASS`) rest there from one heap tick to the next. The malloc
    /// fast path does not see the list: when the free list runs dry a refill takes blocks
    /// from it (`take_resting`), and those still on it at the next tick were not needed for a
    /// whole interval and lose their pages (`discard_resting`, see `heap::sweep_resting`).
    /// Unlike the multi-page classes' marks (`DISCARD_MARK_WORD`), resting asks nothing of
    /// the free path: a block on the resting list still carries its freed key, so freeing it
    /// again is caught as on the free list.
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn rest_free_blocks(&mut self) {
        debug_assert!(self.resting.is_null());
        self.resting = self.free;
        self.free = ptr::null_mut();
    }

    /// Puts every block of the discarded set back on the free list, for a class in use again:
    /// while the set holds blocks every free of the pool takes the slower checked path
    /// (`heap::pool_owner_word`), and a loop whose free list never runs dry would never take
    /// them back. Faults in the page of each block's links.
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn revive_discarded(&mut self) {
        let key = self.freed_key();
        for w in 0..2 {
            while self.discarded[w] != 0 {
                let bit = self.discarded[w].trailing_zeros() as usize;
                self.discarded[w] &= !(1 << bit);
                // SAFETY: a block in the set is a carved, free block of this pool, on no list:
                // ours to link (its memory reads as zero or as stale bytes).
                unsafe {
                    let b = self.start.add((w * 64 + bit) * self.block_size as usize) as *mut Block;
                    (*b).next = self.free;
                    (*b).key = key;
                    self.free = b;
                }
            }
        }
    }

    /// Moves every block of the resting list into the discarded set, giving back their pages
    /// (`enter_discarded_set`). Returns the bytes discarded.
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn discard_resting(&mut self) -> usize {
        let mut discarded = 0;
        let mut b = self.resting;
        self.resting = ptr::null_mut();
        while !b.is_null() {
            // SAFETY: blocks on the resting list are free blocks of this pool, ours until
            // handed out; the link is read before the block's pages go.
            let next = unsafe { (*b).next };
            let Some(i) = self.block_index(b as usize) else {
                crate::diag::fatal(
                    "free",
                    "heap corruption: foreign block on a free list",
                    b as usize,
                );
            };
            discarded += self.enter_discarded_set(i);
            b = next;
        }
        discarded
    }

    /// Takes a block from the resting list (null if it is empty), moving up to `n - 1` more
    /// onto the free list (which is empty when a refill calls this): like a carve, one block
    /// for a class that has not refilled lately, a few for one allocating in a loop. The
    /// others stay at rest, to lose their pages at the next tick if nothing needs them.
    /// Counted in `used` like a pop.
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn take_resting(&mut self, n: u32) -> *mut Block {
        for _ in 0..n {
            let b = self.resting;
            if b.is_null() {
                break;
            }
            // SAFETY: blocks on the resting list are free blocks of this pool: ours.
            unsafe {
                self.resting = (*b).next;
                (*b).next = self.free;
            }
            self.free = b;
        }
        // SAFETY: per the contract.
        unsafe { self.pop() }
    }

    /// Does the pool hold blocks on the resting list or in the discarded set? (One test for
    /// the refill path of the swept medium classes, which runs every few allocations of a
    /// loop filling pools.)
    #[inline(always)]
    pub fn has_resting_or_discarded(&self) -> bool {
        (self.resting as u64 | self.discarded[0] | self.discarded[1]) != 0
    }

    /// Blocks on the resting list.
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn resting_count(&self) -> u32 {
        let mut n = 0;
        let mut b = self.resting;
        while !b.is_null() && n <= self.capacity {
            n += 1;
            // SAFETY: blocks on the resting list are free blocks of this pool.
            b = unsafe { (*b).next };
        }
        n
    }

    /// Aborts if a block of the owner's free list is also in the discarded set (it was freed
    /// twice). Run before an empty pool forgets its blocks (`forget_blocks`), where such a
    /// block would otherwise let a live block's memory be reused.
    ///
    /// # Safety
    /// Only the owner thread (or a holder of the abandoned-list lock) may call this.
    #[inline(never)]
    pub unsafe fn check_discarded_set(&self) {
        if !self.has_discarded() {
            return;
        }
        let mut b = self.free;
        let mut steps = 0;
        while !b.is_null() && steps <= self.capacity {
            if self.holds_discarded(b as usize) {
                crate::diag::fatal("free", "double free detected for", b as usize);
            }
            // SAFETY: blocks on `free` are free blocks of this pool.
            b = unsafe { (*b).next };
            steps += 1;
        }
    }

    /// Discards the pages of an empty pool's carved blocks (and any its earlier uses left
    /// resident) and forgets them (the pool is then as clean as a never used one, see
    /// `arena::release_pool`). Returns the bytes discarded.
    ///
    /// # Safety
    /// Only the owner thread may call this, on a pool with no block in use and none on
    /// `thread_free`.
    pub unsafe fn discard_carved(&mut self) -> usize {
        let len = self.resident_bytes();
        // SAFETY: the carved blocks are ours and unused; the range lies inside the pool. The
        // blocks are forgotten first: the check that does needs the free list's links.
        unsafe {
            self.forget_blocks();
            crate::os::discard(self.start, len);
        }
        self.mark_clean();
        len
    }

    /// Forgets every block of a pool with none in use: nothing is carved any more. Checks the
    /// discarded set first (`check_discarded_set`): forgetting it would hide a double free
    /// that made the pool look empty.
    ///
    /// # Safety
    /// Only the pool's owner (or a holder of the lock its list needs) may call this.
    #[inline(never)]
    pub unsafe fn forget_blocks(&mut self) {
        // SAFETY: per the contract.
        unsafe { self.check_discarded_set() };
        self.carved = 0;
        self.free = ptr::null_mut();
        self.resting = ptr::null_mut();
        self.discarded = [0; 2];
    }

    /// Rebuilds the free list of a pool with no block out in address order, over the blocks
    /// carved so far: consecutive allocations then take consecutive blocks again, as in a
    /// fresh pool, without carving them anew a page at a time (see `heap::after_local_free`).
    /// Returns false, changing nothing, if some free blocks rest or lost their pages (they
    /// are not on the free list, and writing them would fault their pages in), or if the
    /// list starts at either end of the carved blocks: frees in the order of the allocations,
    /// or in the reverse order, leave it in address order already (batches freed oldest or
    /// newest first), and a list that merely starts there is not worth a pass to find out.
    ///
    /// # Safety
    /// Only the owner thread may call this, on a pool whose carved blocks are all free.
    pub unsafe fn relink_in_address_order(&mut self) -> bool {
        if self.has_resting_or_discarded() || self.carved == 0 {
            return false;
        }
        let size = self.block_size as usize;
        let head = self.free as usize;
        let last = self.start as usize + (self.carved as usize - 1) * size;
        if head == self.start as usize || head == last {
            return false;
        }
        // SAFETY: blocks 0..carved lie inside the pool, are ours and are all free (the
        // contract), so their link words may be rewritten.
        unsafe {
            let mut b = self.start;
            for _ in 1..self.carved {
                let next = b.add(size);
                (*(b as *mut Block)).next = next as *mut Block;
                b = next;
            }
            (*(b as *mut Block)).next = ptr::null_mut();
        }
        self.free = self.start as *mut Block;
        true
    }

    /// Rebuilds the owner's free list of a pool in use in address order. The list holds the
    /// blocks in the reverse order of their frees, and a pool that never empties (so is never
    /// relinked whole, `relink_in_address_order`) compounds that order round after round
    /// until consecutive allocations land all over it: in CPython's gc_collect, the value
    /// arrays of consecutive objects were within 128 bytes of each other 45% of the time after
    /// 60 rounds, against 73% on pymalloc, and the benchmark slowed down round by round. Called
    /// when the pool becomes its class's head with blocks freed while it was behind
    /// (`heap::refill_and_pop`), which its next allocations take at once: the walk touches
    /// the blocks they are about to touch anyway.
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn order_free_list(&mut self) {
        let mut free_set = [0u64; MAX_BLOCKS / 64];
        let mut lowest = MAX_BLOCKS;
        let mut highest = 0;
        // SAFETY: blocks on `free` are ours until allocated; `block_index` rejects any other
        // address before it is written to, and a block met twice (a double free that got
        // past the key check, which would make the walk endless) aborts.
        unsafe {
            let mut b = self.free;
            while !b.is_null() {
                let Some(i) = self.block_index(b as usize) else {
                    crate::diag::fatal(
                        "malloc",
                        "heap corruption: foreign block on a free list",
                        b as usize,
                    );
                };
                let i = i as usize;
                if free_set[i / 64] & (1 << (i % 64)) != 0 {
                    crate::diag::fatal("malloc", "double free detected for", b as usize);
                }
                free_set[i / 64] |= 1 << (i % 64);
                lowest = lowest.min(i);
                highest = highest.max(i);
                b = (*b).next;
            }
            let size = self.block_size as usize;
            let mut head: *mut Block = ptr::null_mut();
            for w in (lowest / 64..=highest / 64).rev() {
                let mut bits = free_set[w];
                while bits != 0 {
                    let top = 63 - bits.leading_zeros() as usize;
                    bits &= !(1 << top);
                    let block = self.start.add((w * 64 + top) * size) as *mut Block;
                    (*block).next = head;
                    head = block;
                }
            }
            self.free = head;
        }
    }

    /// Does the owner's free list, resting list, thread_free list or discarded set hold `b`?
    /// (Used only to confirm a suspected double free, so a linear walk is fine.)
    ///
    /// # Safety
    /// Only the owner thread may call this.
    pub unsafe fn holds_free_block(&self, b: *mut Block) -> bool {
        if self.holds_discarded(b as usize) {
            return true;
        }
        let mut lists = [
            self.free,
            self.resting,
            self.thread_free.load(Ordering::Acquire),
        ];
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

    /// Bytes of the pool whose pages may be resident, in whole pages.
    pub fn resident_bytes(&self) -> usize {
        (self.resident_end as usize).next_multiple_of(crate::os::PAGE_SIZE)
    }

    /// The pool's pages were given back: none is resident.
    pub fn mark_clean(&mut self) {
        self.resident_end = 0;
    }

    /// For tests: as if the pool's pages past its carved blocks had never been touched, which
    /// holds for a fresh pool but not for one another class used before (whose pages stay
    /// resident until purged): tests that need a head that would fault in a page use this
    /// rather than depend on which free pool the arena hands out.
    #[cfg(test)]
    pub fn forget_pages_past_carved(&mut self) {
        self.resident_end = self.carved_bytes() as u32;
    }

    /// Would carving the next block fault in a page not resident yet?
    pub fn carving_grows(&self) -> bool {
        self.carved_bytes() + self.block_size as usize > self.resident_bytes()
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

    /// A sparse carve cuts a page's worth (at least one block), a busy one at least four.
    #[test]
    fn sparse_carves_take_a_page_s_worth_busy_ones_four() {
        for (size, sparse_blocks) in [(1024, 4), (2048, 2), (3072, 1), (8192, 1)] {
            let class = crate::size_class::class_of(size);
            assert_eq!(class_size(class), size);
            let pool_size = 1usize << crate::size_class::POOL_SHIFT[1];
            let mut mem = vec![0u8; pool_size];
            let mut p = test_pool(class, &mut mem);
            // SAFETY: the pool covers `mem`, a buffer this test owns; one thread.
            unsafe {
                assert!(p.carve(true));
                assert_eq!(
                    p.carved, sparse_blocks,
                    "sparse carve of {size}-byte blocks"
                );
                assert!(p.carve(false));
                assert_eq!(
                    p.carved,
                    sparse_blocks + 4,
                    "busy carve of {size}-byte blocks"
                );
            }
        }
    }

    /// An emptied pool's free list, in the order of the frees, is rebuilt in address order,
    /// unless the frees already left it so (oldest or newest first).
    #[test]
    fn an_emptied_pool_hands_out_its_blocks_in_address_order_again() {
        let class = crate::size_class::class_of(64);
        let mut mem = vec![0u8; 1 << crate::size_class::POOL_SHIFT[0]];
        let mut p = test_pool(class, &mut mem);
        let n = 200usize;
        // SAFETY: the pool covers `mem`, a buffer this test owns; one thread; every block
        // handed out is given back once before the pool is relinked.
        unsafe {
            let take_all = |p: &mut Pool| -> Vec<*mut Block> {
                let mut v = Vec::new();
                while v.len() < n {
                    let b = p.pop();
                    if b.is_null() {
                        assert!(p.carve(false));
                        continue;
                    }
                    v.push(b);
                }
                v
            };
            let blocks = take_all(&mut p);
            let carved = p.carved as usize;
            // Free them scrambled (a stride coprime to n), and the rest of the carved ones.
            while !p.pop().is_null() {}
            for i in n..carved {
                p.push_local(p.start.add(i * 64) as *mut Block);
            }
            for i in (0..n).map(|i| i * 7 % n) {
                p.push_local(blocks[i]);
            }
            p.used = 0;
            assert!(p.relink_in_address_order());
            let again = take_all(&mut p);
            for (i, b) in again.iter().enumerate() {
                assert_eq!(*b as usize, p.start as usize + i * 64, "block {i}");
            }
            // Frees newest first leave the list in address order: nothing to do.
            for b in again.iter().rev() {
                p.push_local(*b);
            }
            assert!(!p.relink_in_address_order());
        }
    }

    /// A pool in use gets its free list back in address order, holding exactly the blocks
    /// that were free, whatever the order of their frees; the blocks out stay out.
    #[test]
    fn order_free_list_puts_the_free_blocks_in_address_order() {
        let class = crate::size_class::class_of(48);
        let mut mem = vec![0u8; 1 << crate::size_class::POOL_SHIFT[0]];
        let mut p = test_pool(class, &mut mem);
        let size = class_size(class);
        // SAFETY: the pool covers `mem`, a buffer this test owns; one thread; every block
        // freed was handed out once.
        unsafe {
            let mut blocks = Vec::new();
            while (blocks.len() as u32) < p.capacity {
                let b = p.pop();
                if b.is_null() {
                    assert!(p.carve(false));
                    continue;
                }
                blocks.push(b);
            }
            // Free two in three, scrambled (a stride coprime to the count), from both ends.
            let n = blocks.len();
            let freed: Vec<usize> = (0..n).map(|i| i * 7 % n).filter(|i| i % 3 != 1).collect();
            for &i in &freed {
                p.push_local(blocks[i]);
            }
            p.order_free_list();
            let mut expected = freed.clone();
            expected.sort();
            let mut got = Vec::new();
            loop {
                let b = p.pop();
                if b.is_null() {
                    break;
                }
                got.push((b as usize - p.start as usize) / size);
            }
            assert_eq!(got, expected);
            assert_eq!(got.first(), Some(&0), "the lowest block was freed");
            assert_eq!(got.last(), Some(&(n - 1)), "so was the highest");
        }
    }

    /// A block on the free list twice (a double free that got past the key check) makes the
    /// walk abort, where following the list would loop forever.
    #[test]
    fn order_free_list_aborts_on_a_block_listed_twice() {
        let class = crate::size_class::class_of(48);
        let mut mem = vec![0u8; 1 << crate::size_class::POOL_SHIFT[0]];
        let mut p = test_pool(class, &mut mem);
        // SAFETY: the pool covers `mem`, a buffer this test owns; the child process only
        // walks the pool's list and exits or aborts.
        unsafe {
            assert!(p.carve(false));
            let (a, b) = (p.pop(), p.pop());
            p.push_local(a);
            p.push_local(b);
            p.push_local(a); // a -> b -> a -> ...
            let child = libc::fork();
            assert!(child >= 0);
            if child == 0 {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                libc::dup2(null, 2);
                libc::alarm(10); // an endless walk ends in SIGALRM, not SIGABRT
                p.order_free_list();
                libc::_exit(0);
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(child, &mut status, 0), child);
            assert!(libc::WIFSIGNALED(status), "status {status:#x}");
            assert_eq!(libc::WTERMSIG(status), libc::SIGABRT);
        }
    }

    /// Carving faults pages in only past the extent that may be resident: a pool formatted
    /// again for another class carves into its old pages, and one whose pages were given
    /// back (`mark_clean`) starts from nothing again.
    #[test]
    fn carving_grows_only_past_the_resident_pages() {
        let pool_size = 1usize << crate::size_class::POOL_SHIFT[1];
        let (kb, two_kb) = (
            crate::size_class::class_of(1024),
            crate::size_class::class_of(2048),
        );
        let mut mem = vec![0u8; pool_size];
        let mut p = test_pool(kb, &mut mem);
        // SAFETY: the pool covers `mem`, a buffer this test owns; one thread.
        unsafe {
            assert!(p.carving_grows(), "a new pool has nothing resident");
            assert!(p.carve(false) && p.carve(false) && p.carve(false));
            assert_eq!(p.resident_bytes(), 12288);
            assert!(p.carving_grows(), "the next block is on a new page");
            // Emptied and formatted for 2 KiB blocks: its first 12 KiB are still resident.
            p.forget_blocks();
            p.format(two_kb, pool_size);
            assert!(!p.carving_grows());
            assert!(p.carve(false));
            assert!(!p.carving_grows(), "8 KiB carved, 12 resident");
            assert!(p.carve(false));
            assert_eq!(p.resident_bytes(), 16384);
            p.mark_clean();
            p.forget_blocks();
            p.format(two_kb, pool_size);
            assert!(p.carving_grows(), "its pages were given back");
        }
    }

    /// Blocks smaller than a page give back a page once every block it overlaps is in the
    /// discarded set (or not carved yet), and not before.
    #[test]
    fn a_page_shared_by_blocks_goes_with_the_last_of_them() {
        let size = 3072;
        let class = crate::size_class::class_of(size);
        assert_eq!(class_size(class), size);
        let pool_size = 1usize << crate::size_class::POOL_SHIFT[1];
        let page = crate::os::PAGE_SIZE;
        let mem = crate::os::map(pool_size, 0);
        assert!(!mem.is_null());
        // SAFETY: `mem` is a fresh mapping of pool_size bytes this test owns; one thread.
        let mut pool = test_pool(class, unsafe {
            core::slice::from_raw_parts_mut(mem, pool_size)
        });
        // SAFETY: as above.
        unsafe {
            core::ptr::write_bytes(mem, 0x77, pool_size);
            // Blocks 0..7 cover pages 0 to 5, the last one partly. Page 0 holds block 0 and
            // the head of block 1, page 1 its tail and the head of block 2.
            pool.carved = 7;
            assert_eq!(
                pool.enter_discarded_set(1),
                0,
                "page 0 and 1 still hold blocks 0, 2"
            );
            assert_eq!(
                pool.enter_discarded_set(0),
                page,
                "page 0 is all blocks in the set"
            );
            assert_eq!(pool.enter_discarded_set(2), page, "page 1: blocks 1 and 2");
            assert_eq!(crate::os::resident_pages(mem, 2 * page), 0);
            assert_eq!(*mem.add(2 * page), 0x77, "page 2 holds block 3 too");
            // The last carved block shares its last page with blocks never carved.
            assert_eq!(
                pool.enter_discarded_set(6),
                page,
                "page 5: block 6 and uncarved ones"
            );
            assert_eq!(pool.discarded_count(), 4);
            crate::os::unmap(mem, pool_size);
        }
    }

    #[test]
    fn uncarved_blocks_are_not_valid_yet() {
        let mut mem = vec![0u8; 16384];
        let mut p = test_pool(3, &mut mem);
        let start = p.start as usize;
        assert_eq!(p.block_index(start), None);
        // SAFETY: the pool covers `mem`, a buffer this test owns; one thread.
        unsafe { assert!(p.carve(false)) };
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
                    if !p.carve(false) {
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
            p.carve(false);
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

    /// A discarded block gives back the pages it shares with neighbours in the discarded set
    /// (or never carved), and keeps those it shares with a live neighbour.
    #[test]
    fn discarded_neighbours_give_back_the_pages_they_share() {
        use crate::os::{self, PAGE_SIZE};
        let class = crate::size_class::class_of(10240); // 2.5 pages a block
        let pool_size = 1usize << crate::size_class::POOL_SHIFT[2];
        let mem = os::map(pool_size, 0);
        assert!(!mem.is_null());
        let mut p = Pool::EMPTY;
        p.start = mem;
        p.format(class, pool_size);
        let size = class_size(class);
        let resident =
            |addr: usize| os::resident_pages((addr & !(PAGE_SIZE - 1)) as *mut u8, PAGE_SIZE) == 1;
        // SAFETY: the pool covers `mem`, a mapping this test owns; one thread. Blocks are
        // handed out by pop, written whole, and each discarded once while live.
        unsafe {
            let mut b = [core::ptr::null_mut::<u8>(); 5];
            for slot in b.iter_mut() {
                assert!(p.carve(false), "multi-page classes carve a block at a time");
                *slot = p.pop() as *mut u8;
                core::ptr::write_bytes(*slot, 0x5a, size);
            }
            assert_eq!(p.carved, 5);
            // Blocks of 2.5 pages: b0/b1 share a page, b2/b3 too, b4 shares its last page
            // with the never carved b5; b1/b2 and b3/b4 meet on a page boundary.
            let page_at = |off: usize| mem as usize + off;
            let (shared01, shared23, after4) =
                (page_at(size), page_at(3 * size), page_at(5 * size));
            assert!(
                shared01 % PAGE_SIZE != 0 && shared23 % PAGE_SIZE != 0 && after4 % PAGE_SIZE != 0
            );
            p.discard_freed_block(b[1] as *mut Block);
            assert!(
                !resident(b[1] as usize + PAGE_SIZE),
                "a page wholly inside b1 stayed"
            );
            assert!(resident(shared01), "the page b1 shares with live b0 went");
            p.discard_freed_block(b[2] as *mut Block);
            assert!(resident(shared23), "the page b2 shares with live b3 went");
            p.discard_freed_block(b[3] as *mut Block);
            assert!(
                !resident(shared23),
                "the page b3 shares with b2 (in the set) stayed"
            );
            p.discard_freed_block(b[4] as *mut Block);
            assert!(
                !resident(after4),
                "the page b4 shares with uncarved memory stayed"
            );
            assert!(resident(shared01) && resident(b[0] as usize));
            p.discard_freed_block(b[0] as *mut Block);
            assert!(
                !resident(shared01),
                "the page b0 shares with b1 (in the set) stayed"
            );
            os::unmap(mem, pool_size);
        }
    }
}
