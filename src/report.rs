//! The statistics report: what `POOLMALLOC_STATS` prints at exit, and what the C API
//! (`poolmalloc_stats_print`, `poolmalloc_stats_json`) returns at any time.
//!
//! The text report opens with CPython's `PYTHONMALLOCSTATS` table and totals, so that people
//! who know that output can read this one, then adds what a general allocator needs: classes
//! above 512 bytes, large blocks, calls per entry point, cross-thread frees, thread hand-overs
//! and memory peaks. The JSON report holds the same figures as exact integers.
//!
//! The balance (as in CPython): for every live arena, its bytes are in allocated blocks, in
//! available blocks (free or not yet carved, in pools that are in use), in unused pools, or
//! lost to quantisation (the tail of a pool too small for one more block). Pool and arena
//! headers live outside the arenas, so nothing is lost to headers or alignment inside them;
//! they are reported as metadata. A test checks `total == arenas * arena size`.
//!
//! Each class row also says how many bytes of its pools are resident: what the class costs in
//! RSS, beside what it holds. That is a `mincore` call per pool in use, so only reports pay
//! for it. Their sum, less the allocated blocks, is what segregated pools cost
//! over the program's live blocks (free blocks, the rest of each carved page).
//!
//! Nothing here allocates: figures are gathered into a fixed struct, and text is formatted
//! into a stack buffer that is flushed with `write` as it fills.

use crate::arena::{self, ARENA_SIZE};
use crate::diag::{decimal, padded, rarely_read, with_commas, FixedBuf, Sink};
use crate::heap;
use crate::options::{self, StatsMode};
use crate::os;
use crate::remote;
use crate::size_class::{class_size, NUM_CLASSES, NUM_SMALL, POOLED_MAX, SMALL_MAX};
use crate::stats;
use crate::stats::call;

#[derive(Clone, Copy, Default)]
struct ClassRow {
    pools: usize,
    blocks_in_use: usize,
    avail_blocks: usize,
    /// Bytes of the class's pools whose pages are resident (`mincore`).
    resident_bytes: usize,
}

/// Every figure of a report, gathered once.
struct Snapshot {
    classes: [ClassRow; NUM_CLASSES],
    arenas_current: usize,
    arenas_total: usize,
    arenas_reclaimed: usize,
    arenas_highwater: usize,
    allocated_bytes: usize,
    available_bytes: usize,
    unused_pools: usize,
    unused_pool_bytes: usize,
    resident_pool_bytes: usize,
    quantization_bytes: usize,
    dirty_bytes: usize,
    kept_bytes: usize,
    calls: stats::CallTotals,
    large_live: usize,
    large_bytes: usize,
    large_peak_bytes: usize,
    large_mremaps: usize,
    large_cached: usize,
    large_cached_resident: usize,
    threads_seen: usize,
    pools_abandoned: usize,
    pools_adopted: usize,
    pools_waiting: usize,
    pyobject_forwarded: usize,
    peak_in_use: usize,
    mapped_now: usize,
    mapped_peak: usize,
    meta_bytes: usize,
    meta_resident: usize,
    returned_bytes: usize,
    rss_now: usize,
    rss_peak: usize,
}

#[link_section = ".text_rarely_run"]
fn snapshot() -> Snapshot {
    let mut classes = [ClassRow::default(); NUM_CLASSES];
    let mut allocated = 0usize;
    let mut available = 0usize;
    let mut quantization = 0usize;
    let census = arena::for_each_pool(|pool, pool_size| {
        let class = pool.class as usize;
        let size = class_size(class);
        let out = (pool.blocks_out() as usize).min(pool.capacity as usize);
        let row = &mut classes[class];
        row.pools += 1;
        row.blocks_in_use += out;
        row.avail_blocks += pool.capacity as usize - out;
        // What the blocks cost in memory: carved and touched pages, not the pool's extent.
        row.resident_bytes += os::resident_pages(pool.start, pool_size) * os::PAGE_SIZE;
        allocated += out * size;
        available += (pool.capacity as usize - out) * size;
        quantization += pool_size - pool.capacity as usize * size;
    });
    let g = stats::global();
    Snapshot {
        classes,
        arenas_current: census.arenas,
        arenas_total: g.arenas_allocated.get(),
        arenas_reclaimed: g.arenas_reclaimed.get(),
        arenas_highwater: g.arenas_current.peak(),
        allocated_bytes: allocated,
        available_bytes: available,
        unused_pools: census.free_pools,
        unused_pool_bytes: census.free_pool_bytes,
        resident_pool_bytes: classes.iter().map(|r| r.resident_bytes).sum(),
        quantization_bytes: quantization,
        dirty_bytes: census.dirty_bytes,
        kept_bytes: g.kept_empty.get(),
        calls: heap::total_counts(),
        large_live: g.large_live.get(),
        large_bytes: g.large_bytes.get(),
        large_peak_bytes: g.large_bytes.peak(),
        large_mremaps: g.large_mremaps.get(),
        large_cached: g.large_cached.get(),
        large_cached_resident: g.large_cached_resident.get(),
        threads_seen: g.threads_seen.get(),
        pools_abandoned: g.pools_abandoned.get(),
        pools_adopted: g.pools_adopted.get(),
        pools_waiting: remote::abandoned_count(),
        pyobject_forwarded: g.pyobject_forwarded.get(),
        peak_in_use: g.bytes_in_use.peak(),
        mapped_now: g.bytes_mapped.get(),
        mapped_peak: g.bytes_mapped.peak(),
        meta_bytes: g.meta_mapped.get(),
        meta_resident: crate::meta::resident_bytes() + crate::addr_map::resident_bytes(),
        returned_bytes: g.bytes_returned.get(),
        rss_now: os::current_rss(),
        // ru_maxrss is sampled by the kernel and can trail the current figure.
        rss_peak: os::peak_rss().max(os::current_rss()),
    }
}

impl Snapshot {
    fn total(&self) -> usize {
        self.allocated_bytes
            + self.available_bytes
            + self.unused_pool_bytes
            + self.quantization_bytes
    }
}

/// A byte count for people: `512 B`, `12.5 KiB`, `3.0 MiB`, `1.2 GiB`.
#[link_section = ".text_rarely_run"]
fn human(w: &mut dyn Sink, n: usize) {
    let (unit, div): (&[u8], usize) = if n >= 1 << 30 {
        (b" GiB", 1 << 30)
    } else if n >= 1 << 20 {
        (b" MiB", 1 << 20)
    } else if n >= 1 << 10 {
        (b" KiB", 1 << 10)
    } else {
        decimal(w, n as u64, 0);
        w.put(b" B");
        return;
    };
    let tenths = (n as u128 * 10 / div as u128) as u64;
    decimal(w, tenths / 10, 0);
    w.put(b".");
    decimal(w, tenths % 10, 0);
    w.put(unit);
}

/// How a row of the text report shows its figure.
#[derive(Clone, Copy)]
enum Figure {
    /// `label = 1,234`
    Count,
    /// `label = 1,234  (1.2 KiB)`
    Bytes,
    /// The label alone, as it is (headings).
    Text,
}
use Figure::{Bytes, Count, Text};

/// Rows for `rows` whose label only the report reads.
macro_rules! count_row {
    ($label:literal, $v:expr) => {
        (rarely_read!($label), $v, Count)
    };
}
macro_rules! bytes_row {
    ($label:literal, $v:expr) => {
        (rarely_read!($label), $v, Bytes)
    };
}
macro_rules! text_row {
    ($text:literal) => {
        (rarely_read!($text), 0, Text)
    };
}

/// Rows of the text report, one per `(label, value, figure)`.
#[inline(never)]
#[link_section = ".text_rarely_run"]
fn rows(w: &mut dyn Sink, rows: &[(&[u8], usize, Figure)]) {
    for &(label, v, figure) in rows {
        if let Text = figure {
            w.put(label);
            continue;
        }
        padded(w, label, 40);
        w.put(b" = ");
        with_commas(w, v as u64, 21);
        if let Bytes = figure {
            w.put(b"  (");
            human(w, v);
            w.put(b")");
        }
        w.put(b"\n");
    }
}

/// Out of line, like `write_json`: one copy serves every destination.
#[inline(never)]
#[link_section = ".text_rarely_run"]
fn write_text(w: &mut dyn Sink, s: &Snapshot) {
    w.put(
        concat!(
            "poolmalloc ",
            env!("CARGO_PKG_VERSION"),
            " statistics (pid "
        )
        .as_bytes(),
    );
    decimal(w, crate::os::pid() as u64, 0);
    w.put(rarely_read!(b")\nSmall block threshold = "));
    decimal(w, SMALL_MAX as u64, 0);
    w.put(b", in ");
    decimal(w, NUM_SMALL as u64, 0);
    w.put(rarely_read!(b" size classes.\n\n"));
    w.put(rarely_read!(
        b"class   size   num pools   blocks in use  avail blocks  resident KiB\n"
    ));
    w.put(rarely_read!(
        b"-----   ----   ---------   -------------  ------------  ------------\n"
    ));
    for (c, row) in s.classes.iter().enumerate() {
        if c == NUM_SMALL {
            w.put(rarely_read!(b"--- classes above "));
            decimal(w, SMALL_MAX as u64, 0);
            w.put(rarely_read!(b" bytes (up to "));
            decimal(w, POOLED_MAX as u64, 0);
            w.put(rarely_read!(b"), beyond CPython ---\n"));
        }
        if row.pools == 0 {
            continue;
        }
        let columns = [
            (c, 5),
            (class_size(c), 6),
            (row.pools, 11),
            (row.blocks_in_use, 15),
            (row.avail_blocks, 13),
            (row.resident_bytes / 1024, 13),
        ];
        for (i, (n, width)) in columns.into_iter().enumerate() {
            w.put(if i == 0 { b"" } else { b" " });
            decimal(w, n as u64, width);
        }
        w.put(b"\n");
    }
    w.put(b"\n");
    let mut arenas = FixedBuf::<64>::new();
    decimal(&mut arenas, s.arenas_current as u64, 0);
    arenas.put(rarely_read!(b" arenas * "));
    decimal(&mut arenas, ARENA_SIZE as u64, 0);
    arenas.put(rarely_read!(b" bytes/arena"));
    let mut unused = FixedBuf::<64>::new();
    decimal(&mut unused, s.unused_pools as u64, 0);
    unused.put(rarely_read!(b" unused pools"));
    let mut large = FixedBuf::<64>::new();
    large.put(rarely_read!(b"\nLarge blocks (over "));
    decimal(&mut large, POOLED_MAX as u64, 0);
    large.put(rarely_read!(b" bytes, one mapping each)\n"));
    let calls = |i: usize| s.calls.n[i] as usize;
    rows(
        w,
        &[
            count_row!(b"# arenas allocated total", s.arenas_total),
            count_row!(b"# arenas reclaimed", s.arenas_reclaimed),
            count_row!(b"# arenas highwater mark", s.arenas_highwater),
            count_row!(b"# arenas allocated current", s.arenas_current),
            (arenas.as_bytes(), s.arenas_current * ARENA_SIZE, Bytes),
            (b"\n", 0, Text),
            bytes_row!(b"# bytes in allocated blocks", s.allocated_bytes),
            bytes_row!(b"# bytes in available blocks", s.available_bytes),
            (unused.as_bytes(), s.unused_pool_bytes, Bytes),
            bytes_row!(b"# bytes lost to pool headers", 0),
            bytes_row!(b"# bytes lost to quantization", s.quantization_bytes),
            bytes_row!(b"# bytes lost to arena alignment", 0),
            (b"Total", s.total(), Bytes),
            text_row!(b"  (pool and arena headers live outside the arenas: see metadata below)\n"),
            bytes_row!(b"# bytes of pools resident", s.resident_pool_bytes),
            bytes_row!(
                b"#   beyond the allocated blocks",
                s.resident_pool_bytes.saturating_sub(s.allocated_bytes)
            ),
            (large.as_bytes(), 0, Text),
            count_row!(b"# large blocks live", s.large_live),
            bytes_row!(b"# bytes in large blocks", s.large_bytes),
            bytes_row!(b"# peak bytes in large blocks", s.large_peak_bytes),
            count_row!(b"# large blocks resized with mremap", s.large_mremaps),
            bytes_row!(b"# freed large bytes cached for reuse", s.large_cached),
            bytes_row!(b"#   of which not yet discarded", s.large_cached_resident),
            text_row!(b"\nCalls (all threads, exited ones included)\n"),
            count_row!(b"# malloc", calls(call::MALLOC)),
            count_row!(b"# calloc", calls(call::CALLOC)),
            count_row!(b"# realloc (and reallocarray)", calls(call::REALLOC)),
            count_row!(b"# free (and cfree)", calls(call::FREE)),
            count_row!(
                b"# aligned (posix_memalign, memalign...)",
                calls(call::ALIGNED)
            ),
            count_row!(
                b"# PyObject_Malloc/Calloc/Realloc/Free",
                calls(call::PYOBJECT)
            ),
            count_row!(b"# PyMem_Malloc/Calloc/Realloc/Free", calls(call::PYMEM)),
            count_row!(b"# frees from another thread", calls(call::REMOTE_FREE)),
            count_row!(b"# PyObject/PyMem pointers passed on", s.pyobject_forwarded),
            text_row!(b"\nThreads\n"),
            count_row!(b"# threads seen", s.threads_seen),
            count_row!(b"# pools abandoned by exiting threads", s.pools_abandoned),
            count_row!(b"# pools adopted by other threads", s.pools_adopted),
            count_row!(b"# pools waiting for adoption", s.pools_waiting),
            text_row!(b"\nMemory\n"),
            bytes_row!(b"# peak bytes in use (pools + large)", s.peak_in_use),
            bytes_row!(b"# bytes mapped now (arenas + large)", s.mapped_now),
            bytes_row!(b"# peak bytes mapped", s.mapped_peak),
            bytes_row!(b"# metadata mapped (headers, map, heaps)", s.meta_bytes),
            bytes_row!(b"#   of which resident", s.meta_resident),
            bytes_row!(b"# free pool bytes not yet discarded", s.dirty_bytes),
            bytes_row!(b"# emptied pool bytes kept by threads", s.kept_bytes),
            bytes_row!(b"# bytes returned to the OS", s.returned_bytes),
            bytes_row!(b"# resident set size now", s.rss_now),
            bytes_row!(b"# peak resident set size", s.rss_peak),
        ],
    );
}

/// `"key":n` followed by `,` unless `last`: what most of the JSON report is made of.
#[inline(never)]
#[link_section = ".text_rarely_run"]
fn field(w: &mut dyn Sink, key: &[u8], n: u64, sep: &[u8]) {
    w.put(b"\"");
    w.put(key);
    w.put(b"\":");
    decimal(w, n, 0);
    w.put(sep);
}

/// Fields of one JSON object: `"name":{"k1":v1,...}` followed by `sep`.
#[inline(never)]
#[link_section = ".text_rarely_run"]
fn object(w: &mut dyn Sink, name: &[u8], fields: &[(&[u8], usize)], sep: &[u8]) {
    w.put(b"\"");
    w.put(name);
    w.put(b"\":{");
    for (i, (k, v)) in fields.iter().enumerate() {
        field(
            w,
            k,
            *v as u64,
            if i + 1 < fields.len() { b"," } else { b"" },
        );
    }
    w.put(b"}");
    w.put(sep);
}

/// Out of line: the exit report and the C API share one copy (each copy is resident code in
/// every process that loads the library).
#[inline(never)]
#[link_section = ".text_rarely_run"]
fn write_json(w: &mut dyn Sink, s: &Snapshot) {
    w.put(concat!("{\"version\":\"", env!("CARGO_PKG_VERSION"), "\",").as_bytes());
    field(w, rarely_read!(b"pid"), crate::os::pid() as u64, b",");
    field(
        w,
        rarely_read!(b"small_block_threshold"),
        SMALL_MAX as u64,
        b",",
    );
    field(w, rarely_read!(b"small_classes"), NUM_SMALL as u64, b",");
    field(w, rarely_read!(b"pooled_max"), POOLED_MAX as u64, b",");
    w.put(rarely_read!(b"\"classes\":["));
    let mut first = true;
    for (c, row) in s.classes.iter().enumerate() {
        if row.pools == 0 {
            continue;
        }
        if !first {
            w.put(b",");
        }
        first = false;
        w.put(b"{");
        field(w, rarely_read!(b"class"), c as u64, b",");
        field(w, rarely_read!(b"size"), class_size(c) as u64, b",");
        field(w, rarely_read!(b"pools"), row.pools as u64, b",");
        field(
            w,
            rarely_read!(b"blocks_in_use"),
            row.blocks_in_use as u64,
            b",",
        );
        field(
            w,
            rarely_read!(b"avail_blocks"),
            row.avail_blocks as u64,
            b",",
        );
        field(
            w,
            rarely_read!(b"resident_bytes"),
            row.resident_bytes as u64,
            b"}",
        );
    }
    w.put(b"],");
    object(
        w,
        rarely_read!(b"arenas"),
        &[
            (rarely_read!(b"size"), ARENA_SIZE),
            (rarely_read!(b"allocated_total"), s.arenas_total),
            (rarely_read!(b"reclaimed"), s.arenas_reclaimed),
            (rarely_read!(b"highwater"), s.arenas_highwater),
            (rarely_read!(b"current"), s.arenas_current),
        ],
        b",",
    );
    object(
        w,
        rarely_read!(b"bytes"),
        &[
            (rarely_read!(b"allocated_blocks"), s.allocated_bytes),
            (rarely_read!(b"available_blocks"), s.available_bytes),
            (rarely_read!(b"unused_pools"), s.unused_pool_bytes),
            (rarely_read!(b"unused_pool_count"), s.unused_pools),
            (rarely_read!(b"pool_headers"), 0),
            (rarely_read!(b"quantization"), s.quantization_bytes),
            (rarely_read!(b"arena_alignment"), 0),
            (rarely_read!(b"total"), s.total()),
            (rarely_read!(b"resident_pools"), s.resident_pool_bytes),
            (
                rarely_read!(b"arenas_mapped"),
                s.arenas_current * ARENA_SIZE,
            ),
        ],
        b",",
    );
    object(
        w,
        rarely_read!(b"large"),
        &[
            (rarely_read!(b"live"), s.large_live),
            (rarely_read!(b"bytes"), s.large_bytes),
            (rarely_read!(b"peak_bytes"), s.large_peak_bytes),
            (rarely_read!(b"mremaps"), s.large_mremaps),
            (rarely_read!(b"cached"), s.large_cached),
            (rarely_read!(b"cached_resident"), s.large_cached_resident),
        ],
        b",",
    );
    w.put(rarely_read!(b"\"calls\":{"));
    for i in 0..call::COUNT {
        field(w, call::NAMES[i], s.calls.n[i], b",");
    }
    field(
        w,
        rarely_read!(b"pyobject_forwarded"),
        s.pyobject_forwarded as u64,
        b"},",
    );
    object(
        w,
        rarely_read!(b"threads"),
        &[
            (rarely_read!(b"seen"), s.threads_seen),
            (rarely_read!(b"pools_abandoned"), s.pools_abandoned),
            (rarely_read!(b"pools_adopted"), s.pools_adopted),
            (rarely_read!(b"pools_waiting"), s.pools_waiting),
        ],
        b",",
    );
    object(
        w,
        rarely_read!(b"memory"),
        &[
            (rarely_read!(b"peak_in_use"), s.peak_in_use),
            (rarely_read!(b"mapped"), s.mapped_now),
            (rarely_read!(b"peak_mapped"), s.mapped_peak),
            (rarely_read!(b"metadata"), s.meta_bytes),
            (rarely_read!(b"metadata_resident"), s.meta_resident),
            (rarely_read!(b"dirty"), s.dirty_bytes),
            (rarely_read!(b"kept"), s.kept_bytes),
            (rarely_read!(b"returned"), s.returned_bytes),
            (rarely_read!(b"rss"), s.rss_now),
            (rarely_read!(b"peak_rss"), s.rss_peak),
        ],
        b"}\n",
    );
}

/// Streams text to a file descriptor through a stack buffer.
struct FdWriter {
    fd: i32,
    buf: FixedBuf<4096>,
}

impl FdWriter {
    fn flush(&mut self) {
        os::write_all(self.fd, self.buf.as_bytes());
        self.buf.clear();
    }
}

impl Sink for FdWriter {
    #[link_section = ".text_rarely_run"]
    fn put(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > 4096 {
            self.flush();
        }
        if bytes.len() > 4096 {
            os::write_all(self.fd, bytes);
            return;
        }
        self.buf.put(bytes);
    }
}

/// Writes into a caller's buffer, counting every byte that would have been written.
struct SliceWriter<'a> {
    out: &'a mut [u8],
    needed: usize,
}

impl Sink for SliceWriter<'_> {
    #[link_section = ".text_rarely_run"]
    fn put(&mut self, bytes: &[u8]) {
        let room = self.out.len().saturating_sub(1); // keep one byte for the NUL
        if self.needed < room {
            let take = bytes.len().min(room - self.needed);
            self.out[self.needed..self.needed + take].copy_from_slice(&bytes[..take]);
        }
        self.needed += bytes.len();
    }
}

/// Prints the text report on `fd`.
#[link_section = ".text_rarely_run"]
pub fn print_text(fd: i32) {
    let s = snapshot();
    let mut w = FdWriter {
        fd,
        buf: FixedBuf::new(),
    };
    write_text(&mut w, &s);
    w.flush();
}

/// Prints the JSON report on `fd`.
#[link_section = ".text_rarely_run"]
pub fn print_json(fd: i32) {
    let s = snapshot();
    let mut w = FdWriter {
        fd,
        buf: FixedBuf::new(),
    };
    write_json(&mut w, &s);
    w.flush();
}

/// Writes the JSON report into `out` (NUL-terminated, truncated if short); returns the length
/// of the whole report without the NUL.
#[link_section = ".text_rarely_run"]
pub fn json_into(out: &mut [u8]) -> usize {
    let s = snapshot();
    let mut w = SliceWriter { out, needed: 0 };
    write_json(&mut w, &s);
    let n = w.needed;
    if !w.out.is_empty() {
        let end = n.min(w.out.len() - 1);
        w.out[end] = 0;
    }
    n
}

/// Called from the library constructor, after the options are read.
pub fn on_load() {
    match options::stats_mode() {
        StatsMode::Off => {}
        StatsMode::Invalid => {
            os::write_all(
                2,
                b"poolmalloc: POOLMALLOC_STATS has an unknown value; accepted: 0 or empty (off), 1 or text, json. No report will be printed.\n",
            );
        }
        StatsMode::Text | StatsMode::Json => {
            // SAFETY: registers a plain function; atexit may allocate, which is served by us.
            unsafe { libc::atexit(report_at_exit) };
        }
    }
}

#[link_section = ".text_rarely_run"]
extern "C" fn report_at_exit() {
    let fd = open_destination();
    match options::stats_mode() {
        StatsMode::Text => print_text(fd),
        StatsMode::Json => print_json(fd),
        _ => {}
    }
    if fd != 2 {
        // SAFETY: fd was opened by open_destination.
        unsafe { libc::close(fd) };
    }
}

/// The report's file descriptor: `POOLMALLOC_STATS_FILE` with `%p` replaced by the pid, or
/// stderr.
#[link_section = ".text_rarely_run"]
fn open_destination() -> i32 {
    let Some(path) = options::stats_file() else {
        return 2;
    };
    let mut buf = FixedBuf::<4096>::new();
    let bytes = path.to_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 1 < bytes.len() && bytes[i + 1] == b'p' {
            decimal(&mut buf, crate::os::pid() as u64, 0);
            i += 2;
        } else {
            buf.put(&bytes[i..i + 1]);
            i += 1;
        }
    }
    buf.put(b"\0");
    if buf.overflowed {
        os::write_all(
            2,
            b"poolmalloc: POOLMALLOC_STATS_FILE is too long; report goes to stderr\n",
        );
        return 2;
    }
    // SAFETY: buf holds a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            buf.as_bytes().as_ptr() as *const libc::c_char,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        os::write_all(
            2,
            b"poolmalloc: cannot open POOLMALLOC_STATS_FILE; report goes to stderr\n",
        );
        return 2;
    }
    fd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_well() {
        let mut b = FixedBuf::<64>::new();
        for n in [512, 1536, 3 << 20, 5 << 30] {
            human(&mut b, n);
            b.put(b"; ");
        }
        assert_eq!(b.as_str(), "512 B; 1.5 KiB; 3.0 MiB; 5.0 GiB; ");
        let mut b = FixedBuf::<256>::new();
        rows(
            &mut b,
            &[(b"# label", 1536, Bytes), (b"# count", 1234, Count)],
        );
        assert_eq!(
            b.as_str(),
            format!(
                "{:<40} = {:>21}  (1.5 KiB)\n{:<40} = {:>21}\n",
                "# label", "1,536", "# count", "1,234"
            )
        );
    }

    #[test]
    fn json_reports_the_needed_length_even_when_truncated() {
        let mut small = [0u8; 16];
        let n = json_into(&mut small);
        assert!(n > 16);
        assert_eq!(small[15], 0);
        assert_eq!(&small[..15], b"{\"version\":\"0.1");
    }
}
