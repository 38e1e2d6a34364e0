//! Counters of what the allocator did, cheap enough to keep always.
//!
//! Global counters are atomics touched only on slow paths (arenas, pools, large mappings).
//! Per-call counts (`CallCounts`) live in each thread's heap as plain integers, counted down in
//! batches that also pace the heap's ticks, and are merged into the heap registry's total
//! when the thread exits.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A gauge that remembers its highest value.
pub struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    pub const fn new() -> Self {
        Gauge {
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }
    /// Out of line: every caller is a slow path, and the peak's compare-and-swap loop inlined
    /// at each of them made nearly a tenth of the code every process keeps resident.
    #[inline(never)]
    pub fn add(&self, n: usize) {
        let v = self.now.fetch_add(n, Relaxed) + n;
        if v > self.peak.load(Relaxed) {
            self.peak.fetch_max(v, Relaxed);
        }
    }
    #[inline]
    pub fn sub(&self, n: usize) {
        self.now.fetch_sub(n, Relaxed);
    }
    pub fn get(&self) -> usize {
        self.now.load(Relaxed)
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

pub struct GlobalStats {
    pub arenas_allocated: Gauge,
    pub arenas_reclaimed: Gauge,
    pub arenas_current: Gauge,
    /// Pools handed from arenas to heaps over the run.
    pub pools_acquired: Gauge,
    /// Bytes of arenas and large blocks currently mapped.
    pub bytes_mapped: Gauge,
    /// Bytes of pools held by heaps plus bytes of large blocks (what the program can be
    /// using, at pool granularity); its peak is the report's "peak bytes in use".
    pub bytes_in_use: Gauge,
    /// Bytes mapped for headers, map leaves and heaps (never unmapped).
    pub meta_mapped: Gauge,
    /// Bytes unmapped or discarded over the run.
    pub bytes_returned: Gauge,
    pub large_live: Gauge,
    pub large_bytes: Gauge,
    pub large_mremaps: Gauge,
    /// Bytes of freed large blocks kept for reuse.
    pub large_cached: Gauge,
    /// The part of `large_cached` whose pages have not been discarded yet.
    pub large_cached_resident: Gauge,
    /// Bytes of emptied pools that heaps keep for reuse.
    pub kept_empty: Gauge,
    /// Bytes of free pools whose pages may still be resident (changed under the arena lock).
    pub dirty: Gauge,
    pub threads_seen: Gauge,
    pub pools_abandoned: Gauge,
    pub pools_adopted: Gauge,
    /// Foreign pointers passed on to the PyObject_* implementation we replaced.
    pub pyobject_forwarded: Gauge,
}

static GLOBAL: GlobalStats = GlobalStats {
    arenas_allocated: Gauge::new(),
    arenas_reclaimed: Gauge::new(),
    arenas_current: Gauge::new(),
    pools_acquired: Gauge::new(),
    bytes_mapped: Gauge::new(),
    bytes_in_use: Gauge::new(),
    meta_mapped: Gauge::new(),
    bytes_returned: Gauge::new(),
    large_live: Gauge::new(),
    large_bytes: Gauge::new(),
    large_mremaps: Gauge::new(),
    large_cached: Gauge::new(),
    large_cached_resident: Gauge::new(),
    kept_empty: Gauge::new(),
    dirty: Gauge::new(),
    threads_seen: Gauge::new(),
    pools_abandoned: Gauge::new(),
    pools_adopted: Gauge::new(),
    pyobject_forwarded: Gauge::new(),
};

#[inline]
pub fn global() -> &'static GlobalStats {
    &GLOBAL
}

/// Memory that is resident but holds no block: free pools not yet discarded, emptied pools
/// kept by heaps, freed large blocks kept for reuse. `POOLMALLOC_PURGE_BYTES` bounds the sum
/// (approximately: the three are updated under different locks).
pub fn idle_bytes() -> usize {
    GLOBAL.dirty.get() + GLOBAL.kept_empty.get() + GLOBAL.large_cached_resident.get()
}

/// Which entry point a call came through, for the per-thread call counts. `NOT_COUNTED` is
/// for allocations made on behalf of a call already counted (realloc's new block).
pub mod call {
    pub const MALLOC: usize = 0;
    pub const CALLOC: usize = 1;
    pub const REALLOC: usize = 2;
    pub const FREE: usize = 3;
    /// posix_memalign, aligned_alloc, memalign, valloc, pvalloc.
    pub const ALIGNED: usize = 4;
    /// PyObject_Malloc, _Calloc, _Realloc, _Free.
    pub const PYOBJECT: usize = 5;
    /// PyMem_Malloc, _Calloc, _Realloc, _Free.
    pub const PYMEM: usize = 6;
    /// Frees of a block owned by another thread (also counted under their entry point).
    pub const REMOTE_FREE: usize = 7;
    pub const COUNT: usize = 8;
    pub const NOT_COUNTED: usize = COUNT;
    /// Their names in the JSON report (only the report reads them).
    pub static NAMES: [&[u8]; COUNT] = [
        crate::diag::rarely_read!(b"malloc"),
        crate::diag::rarely_read!(b"calloc"),
        crate::diag::rarely_read!(b"realloc"),
        crate::diag::rarely_read!(b"free"),
        crate::diag::rarely_read!(b"aligned"),
        crate::diag::rarely_read!(b"pyobject"),
        crate::diag::rarely_read!(b"pymem"),
        crate::diag::rarely_read!(b"remote_free"),
    ];
}

/// Calls per batch of a thread's count of one entry point: each count runs down from this to
/// zero, and the call that ends a batch lets the heap tick (`heap::calls_batch_done`), so a
/// program that stays on the fast paths still gives back memory that has gone idle, and the
/// fast paths pay a single conditional jump for it.
pub const CALLS_PER_BATCH: u32 = 4096;

/// Per-thread call counts: plain integers changed by the owning thread only (one decrement
/// on the fast path, no atomic), summed with the other threads' when a report is made.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct CallCounts {
    /// Calls left in the current batch, per entry point.
    left: [u32; call::COUNT],
    /// Calls of the batches completed so far.
    done: [u64; call::COUNT],
}

impl CallCounts {
    pub const NEW: CallCounts = CallCounts {
        left: [CALLS_PER_BATCH; call::COUNT],
        done: [0; call::COUNT],
    };
    /// Counts a call of entry point `which`; true when it ends a batch, and then the caller
    /// must call `next_batch` before the next `bump` of `which`.
    #[inline(always)]
    pub fn bump(&mut self, which: usize) -> bool {
        if which < call::COUNT {
            self.left[which] -= 1;
            self.left[which] == 0
        } else {
            false
        }
    }
    #[cold]
    pub fn next_batch(&mut self, which: usize) {
        self.done[which] += CALLS_PER_BATCH as u64;
        self.left[which] = CALLS_PER_BATCH;
    }
    /// Counts a call and starts the next batch if needed (where no tick is wanted).
    #[inline]
    pub fn bump_and_roll(&mut self, which: usize) {
        if self.bump(which) {
            self.next_batch(which);
        }
    }
    /// Calls counted so far, all entry points together.
    pub fn total(&self) -> u64 {
        let mut n = 0;
        for i in 0..call::COUNT {
            n += self.done[i] + (CALLS_PER_BATCH - self.left[i]) as u64;
        }
        n
    }
    /// Adds these counts to `t`.
    pub fn add_to(&self, t: &mut CallTotals) {
        for i in 0..call::COUNT {
            t.n[i] += self.done[i] + (CALLS_PER_BATCH - self.left[i]) as u64;
        }
    }
}

/// Call counts summed over threads, for reports.
#[derive(Clone, Copy, Default)]
pub struct CallTotals {
    pub n: [u64; call::COUNT],
}

impl CallTotals {
    pub const ZERO: CallTotals = CallTotals {
        n: [0; call::COUNT],
    };
}
