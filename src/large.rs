//! Large blocks: requests above `POOLED_MAX` get a mapping of their own, chunk-aligned so the
//! address map can point every chunk it covers at its header, and are unmapped on free.
//! `realloc` resizes them with `mremap`: in place when the kernel can, otherwise by moving the
//! pages (never copying them) into a fresh chunk-aligned reservation.
//!
//! Headers live in a small slab of their own (`HEADERS`), not in front of the block: the block
//! then starts on the chunk boundary, which serves every alignment up to 4 MiB for free.
//!
//! A program that allocates and frees big buffers in a loop would pay a map, an unmap and the
//! page faults of fresh memory every time. So a freed large block goes to a small cache
//! (`CACHE`: at most `CACHE_SLOTS` blocks, within the idle-memory bound shared with free and
//! kept pools, `stats::idle_bytes`), evicting (unmapping) the oldest entries to make room, and
//! is reused by a request it fits with at most a quarter to spare. A block larger than the
//! bound is unmapped at once; `malloc_trim` empties the cache. The cache only reuses whole
//! blocks: it does not split or merge them as tcmalloc's page heap does.
//! Only a mapping that has already been reused once, at its present size, keeps its pages in
//! the cache, and only for the purge delay (then heap ticks discard them, see
//! `discard_idle`): one freed for the first time gives its pages back at once, as glibc's
//! munmap would, because most big buffers are allocated once (CPython frees a 160 KiB one at
//! the end of its imports) and a loop shows itself at its second round. A cached block
//! without its pages still saves the map and unmap calls when reused, holds no memory (nor
//! counts as idle memory) while it waits, and reads as zero, which calloc uses.
//! A cached block stays in the address map with `cached` set, so freeing it again is caught.

use core::ptr;

use crate::addr_map::{self, CHUNK_SIZE};
use crate::os::{self, PAGE_SIZE};
use crate::stats;
use crate::sync::Lock;

#[repr(C)]
pub struct Large {
    /// Start of the mapping, which is also the pointer the program holds.
    pub base: *mut u8,
    /// Mapped bytes: the request rounded up to pages (`malloc_usable_size`).
    pub size: usize,
    /// Freed and waiting in the cache.
    pub cached: bool,
    /// Cached, and its pages already given back: it reads as zero.
    discarded: bool,
    /// The mapping has been taken from the cache before, at its present size: its size is
    /// one the program asks for again, so it keeps its pages while cached (for the purge
    /// delay). A resize clears it: the evidence was about the old size (CPython's
    /// `json.dumps` grows a list from a reused 160 KiB block to 700 KiB, and that 700 KiB
    /// was not asked for again).
    reused: bool,
    /// When it entered the cache (`os::now_ms`).
    cached_at_ms: u32,
    next_spare: *mut Large,
}

const CACHE_SLOTS: usize = 16;

/// Freed blocks, oldest first. Their bytes are `stats::global().large_cached`, changed only
/// under this lock.
struct Cache {
    blocks: [*mut Large; CACHE_SLOTS],
    len: usize,
}
// SAFETY: the headers are only touched under the lock.
unsafe impl Send for Cache {}

static CACHE: Lock<Cache> = Lock::new(Cache {
    blocks: [ptr::null_mut(); CACHE_SLOTS],
    len: 0,
});

impl Cache {
    /// Takes the block at `i` out of the cache, keeping the others in age order.
    fn remove(&mut self, i: usize) -> *mut Large {
        let l = self.blocks[i];
        let n = self.len;
        self.blocks.copy_within(i + 1..n, i);
        self.len -= 1;
        // SAFETY: cached headers are live and ours under the lock.
        unsafe {
            let g = stats::global();
            g.large_cached.sub((*l).size);
            if !(*l).discarded {
                g.large_cached_resident.sub((*l).size);
            }
            (*l).cached = false;
        }
        l
    }
}

/// Discards the pages of every cached block, delay or not (see `heap::drop_idle_at_new_peak`).
pub fn discard_idle_now() {
    if stats::global().large_cached_resident.get() != 0 {
        discard_cached(None);
    }
}

/// Discards the pages of cached blocks that have waited the purge delay
/// (`POOLMALLOC_PURGE_DELAY`): a buffer freed and allocated again in a loop keeps them, one
/// left behind does not hold memory for good. Run by heap ticks.
pub fn discard_idle(now: u32) {
    if stats::global().large_cached_resident.get() == 0 {
        return;
    }
    discard_cached(Some(now));
}

/// Discards the pages of the cached blocks: all of them, or with `Some(now)` those cached for
/// at least the purge delay. Out of line: one copy serves both callers.
#[inline(never)]
fn discard_cached(now: Option<u32>) {
    let delay = crate::options::purge_delay_ms();
    // Never wait for the lock: another thread is using the cache, and will tick again.
    let Some(c) = CACHE.try_lock() else {
        return;
    };
    let g = stats::global();
    for i in 0..c.len {
        let l = c.blocks[i];
        // SAFETY: cached headers are live and ours under the lock; their blocks are unused.
        unsafe {
            let old_enough = now.is_none_or(|t| t.wrapping_sub((*l).cached_at_ms) >= delay);
            if !(*l).discarded && old_enough {
                os::discard((*l).base, (*l).size);
                (*l).discarded = true;
                g.large_cached_resident.sub((*l).size);
                g.bytes_returned.add((*l).size);
            }
        }
    }
}

/// Takes a cached block of at least `len` bytes with at most a quarter to spare.
fn take_cached(len: usize) -> *mut Large {
    let mut c = CACHE.lock();
    let mut best = CACHE_SLOTS;
    let mut best_size = usize::MAX;
    for i in 0..c.len {
        // SAFETY: cached headers are live under the lock.
        let size = unsafe { (*c.blocks[i]).size };
        if size >= len && size - len <= len / 4 && size < best_size {
            best = i;
            best_size = size;
        }
    }
    if best == CACHE_SLOTS {
        return ptr::null_mut();
    }
    c.remove(best)
}

struct Headers {
    /// Headers given back, for reuse first.
    spare: *mut Large,
}
// SAFETY: headers are only handed out and taken back under the lock.
unsafe impl Send for Headers {}

static HEADERS: Lock<Headers> = Lock::new(Headers {
    spare: ptr::null_mut(),
});

fn new_header() -> *mut Large {
    let mut h = HEADERS.lock();
    if !h.spare.is_null() {
        let l = h.spare;
        // SAFETY: spare headers are ours under the lock.
        h.spare = unsafe { (*l).next_spare };
        return l;
    }
    crate::meta::take_record()
}

fn drop_header(l: *mut Large) {
    let mut h = HEADERS.lock();
    // SAFETY: the header is no longer referenced by the address map.
    unsafe { (*l).next_spare = h.spare };
    h.spare = l;
}

/// Rounds `size` up to pages; None if that overflows or exceeds what mmap can give.
fn mapped_size(size: usize) -> Option<usize> {
    let s = size.checked_add(PAGE_SIZE - 1)? & !(PAGE_SIZE - 1);
    if s > isize::MAX as usize / 2 {
        None
    } else {
        Some(s.max(PAGE_SIZE))
    }
}

/// A block of at least `size` bytes aligned to `align` (a power of two), and whether it is
/// fresh from the kernel (so already zero). Null on exhaustion (the caller sets errno).
pub fn alloc(size: usize, align: usize) -> (*mut u8, bool) {
    let Some(len) = mapped_size(size) else {
        return (ptr::null_mut(), false);
    };
    if align <= CHUNK_SIZE {
        let l = take_cached(len);
        if !l.is_null() {
            // SAFETY: the header is ours now.
            let (base, size, zero) = unsafe {
                (*l).reused = true;
                ((*l).base, (*l).size, (*l).discarded)
            };
            let g = stats::global();
            g.large_live.add(1);
            g.large_bytes.add(size);
            g.bytes_in_use.add(size);
            return (base, zero);
        }
    }
    (map_new(len, align), true)
}

fn map_new(len: usize, align: usize) -> *mut u8 {
    let base = os::map_aligned(len, align.max(CHUNK_SIZE));
    if base.is_null() {
        return ptr::null_mut();
    }
    let l = new_header();
    if l.is_null() {
        // SAFETY: base is our fresh mapping.
        unsafe { os::unmap(base, len) };
        return ptr::null_mut();
    }
    // SAFETY: l is a header we own.
    unsafe {
        (*l).base = base;
        (*l).size = len;
        (*l).cached = false;
        (*l).discarded = false;
        (*l).reused = false;
    }
    if !addr_map::register(base as usize, len, l as usize) {
        // SAFETY: as above.
        unsafe { os::unmap(base, len) };
        drop_header(l);
        return ptr::null_mut();
    }
    let g = stats::global();
    g.large_live.add(1);
    g.large_bytes.add(len);
    g.bytes_in_use.add(len);
    g.bytes_mapped.add(len);
    base
}

/// The header behind a non-zero address-map entry without the arena tag.
#[inline]
pub fn header(entry: usize) -> *mut Large {
    entry as *mut Large
}

/// Does the mapping of header `l` contain address `p`?
///
/// # Safety
/// `l` is a live header.
pub unsafe fn contains(l: *mut Large, p: usize) -> bool {
    // SAFETY: per the contract.
    let (base, size) = unsafe { ((*l).base as usize, (*l).size) };
    p.wrapping_sub(base) < size
}

/// Checks that `p` is the live large block of header `l`, aborting otherwise.
///
/// # Safety
/// `l` is the header the address map gives for `p`.
pub unsafe fn check_live(l: *mut Large, p: usize, api: &str) {
    // SAFETY: l is a live header (the map pointed at it).
    unsafe {
        if (*l).base as usize != p {
            if contains(l, p) {
                crate::diag::fatal(api, "invalid pointer (inside a large block)", p);
            }
            // Our chunk, but past the end of our mapping: someone else's memory.
            crate::diag::fatal(api, "invalid pointer (not allocated by poolmalloc)", p);
        }
        if (*l).cached {
            crate::diag::fatal(api, "double free detected for", p);
        }
    }
}

/// Frees the large block at `p`: into the cache if it fits there, else unmapped.
///
/// # Safety
/// `l` is the header the address map gives for `p`.
pub unsafe fn free(l: *mut Large, p: usize, api: &str) {
    // SAFETY: l is a live header (the map pointed at it); check_live confirms p is its block.
    unsafe {
        check_live(l, p, api);
        let len = (*l).size;
        let g = stats::global();
        g.large_live.sub(1);
        g.large_bytes.sub(len);
        g.bytes_in_use.sub(len);
        // The cache's share of the idle bound: what heaps' kept pools leave (dirty free pools
        // are discarded first when the sum goes over, see arena::release_pool).
        let budget = crate::options::purge_threshold().saturating_sub(g.kept_empty.get());
        if len > budget {
            return unmap(l);
        }
        // A first free gives the pages back now, outside the lock (see the module comment).
        let keep_pages = (*l).reused;
        if !keep_pages {
            os::discard((*l).base, len);
            g.bytes_returned.add(len);
        }
        let mut c = CACHE.lock();
        // Make room by unmapping the oldest entries: the block freed last is the likeliest to
        // be asked for again (a buffer allocated and freed in a loop).
        while c.len == CACHE_SLOTS || g.large_cached.get() + len > budget {
            let oldest = c.remove(0);
            unmap(oldest);
        }
        (*l).cached = true;
        (*l).discarded = !keep_pages;
        (*l).cached_at_ms = os::now_ms();
        let n = c.len;
        c.blocks[n] = l;
        c.len += 1;
        g.large_cached.add(len);
        if keep_pages {
            g.large_cached_resident.add(len);
        }
    }
}

/// Unmaps a large block that is neither live nor cached.
unsafe fn unmap(l: *mut Large) {
    // SAFETY: the caller owns the header and nobody uses its block.
    unsafe {
        let (base, len) = ((*l).base, (*l).size);
        addr_map::unregister(base as usize, len);
        os::unmap(base, len);
        drop_header(l);
        let g = stats::global();
        g.bytes_mapped.sub(len);
        g.bytes_returned.add(len);
    }
}

/// Unmaps every cached block; returns whether there was any.
pub fn trim() -> bool {
    let mut c = CACHE.lock();
    let had = c.len > 0;
    while c.len > 0 {
        let last = c.len - 1;
        let l = c.remove(last);
        // SAFETY: the header left the cache; it is ours to unmap.
        unsafe { unmap(l) };
    }
    had
}

/// Resizes the large block at `p` to hold `size` bytes (more than `POOLED_MAX`). Returns the
/// block's new address, or null (block untouched) on exhaustion.
///
/// # Safety
/// `l` is the header the address map gives for `p`, and `p` is its base.
pub unsafe fn resize(l: *mut Large, size: usize) -> *mut u8 {
    let Some(new_len) = mapped_size(size) else {
        return ptr::null_mut();
    };
    // SAFETY: l is live and ours (the caller is reallocating its block).
    unsafe {
        let (base, old_len) = ((*l).base, (*l).size);
        if new_len == old_len {
            return base;
        }
        (*l).reused = false;
        let g = stats::global();
        if new_len < old_len || os::remap_in_place(base, old_len, new_len) {
            if new_len < old_len {
                os::remap_in_place(base, old_len, new_len);
                addr_map::unregister(base as usize, old_len);
            }
            if !addr_map::register(base as usize, new_len, l as usize) {
                crate::diag::internal_error("address map refused a range it covered before");
            }
            (*l).size = new_len;
            g.large_mremaps.add(1);
            account_resize(old_len, new_len);
            return base;
        }
        // Move the pages into a new chunk-aligned reservation (no copy), then fix the map.
        let dest = os::map_aligned(new_len, CHUNK_SIZE);
        if dest.is_null() {
            return ptr::null_mut();
        }
        if !addr_map::register(dest as usize, new_len, l as usize) {
            os::unmap(dest, new_len);
            return ptr::null_mut();
        }
        if !os::remap_to(base, old_len, new_len, dest) {
            addr_map::unregister(dest as usize, new_len);
            os::unmap(dest, new_len);
            return ptr::null_mut();
        }
        addr_map::unregister(base as usize, old_len);
        (*l).base = dest;
        (*l).size = new_len;
        g.large_mremaps.add(1);
        account_resize(old_len, new_len);
        dest
    }
}

fn account_resize(old_len: usize, new_len: usize) {
    let g = stats::global();
    if new_len > old_len {
        g.large_bytes.add(new_len - old_len);
        g.bytes_in_use.add(new_len - old_len);
        g.bytes_mapped.add(new_len - old_len);
    } else {
        g.large_bytes.sub(old_len - new_len);
        g.bytes_in_use.sub(old_len - new_len);
        g.bytes_mapped.sub(old_len - new_len);
        g.bytes_returned.add(old_len - new_len);
    }
}

pub fn lock_for_fork() {
    CACHE.hold_for_fork();
    HEADERS.hold_for_fork();
}
/// # Safety
/// Only after `lock_for_fork`.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe {
        HEADERS.release_after_fork();
        CACHE.release_after_fork();
    }
}
