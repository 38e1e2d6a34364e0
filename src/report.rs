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
//! Nothing here allocates: figures are gathered into a fixed struct, and text is formatted
//! into a stack buffer that is flushed with `write` as it fills.

use core::fmt::{self, Write};

use crate::arena::{self, ARENA_SIZE};
use crate::diag::FixedBuf;
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
    returned_bytes: usize,
    rss_now: usize,
    rss_peak: usize,
}

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

/// `1,234,567`, as CPython prints its byte counts.
struct Commas(usize);
impl fmt::Display for Commas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut digits = [0u8; 32];
        let mut n = self.0;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut out = FixedBuf::<40>::new();
        for i in (0..len).rev() {
            let _ = out.write_char(digits[i] as char);
            if i != 0 && i % 3 == 0 {
                let _ = out.write_char(',');
            }
        }
        // Only ASCII digits and commas were written, so this is valid UTF-8.
        f.pad(core::str::from_utf8(out.as_bytes()).unwrap_or("?"))
    }
}

/// A byte count for people: `512 B`, `12.5 KiB`, `3.0 MiB`, `1.2 GiB`.
struct Human(usize);
impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        let (unit, div) = if n >= 1 << 30 {
            ("GiB", 1usize << 30)
        } else if n >= 1 << 20 {
            ("MiB", 1 << 20)
        } else if n >= 1 << 10 {
            ("KiB", 1 << 10)
        } else {
            return write!(f, "{n} B");
        };
        let tenths = (n as u128 * 10 / div as u128) as usize;
        write!(f, "{}.{} {unit}", tenths / 10, tenths % 10)
    }
}

/// One row of byte figures: `label = 1,234  (1.2 KiB)`. Out of line, as is `count`: the report
/// has some forty rows, and each inlined row was resident code in every process.
#[inline(never)]
fn line(w: &mut dyn Write, label: &str, v: usize) -> fmt::Result {
    writeln!(w, "{label:<40} = {:>21}  ({})", Commas(v), Human(v))
}

/// One row of a count: `label = 1,234`.
#[inline(never)]
fn count(w: &mut dyn Write, label: &str, v: usize) -> fmt::Result {
    writeln!(w, "{label:<40} = {:>21}", Commas(v))
}

/// Out of line, like `write_json`: one copy serves every destination.
#[inline(never)]
fn write_text(w: &mut dyn Write, s: &Snapshot) -> fmt::Result {
    writeln!(
        w,
        "poolmalloc {} statistics (pid {})",
        env!("CARGO_PKG_VERSION"),
        crate::os::pid()
    )?;
    writeln!(
        w,
        "Small block threshold = {SMALL_MAX}, in {NUM_SMALL} size classes."
    )?;
    writeln!(w)?;
    writeln!(w, "class   size   num pools   blocks in use  avail blocks")?;
    writeln!(w, "-----   ----   ---------   -------------  ------------")?;
    for (c, row) in s.classes.iter().enumerate() {
        if c == NUM_SMALL {
            writeln!(
                w,
                "--- classes above {SMALL_MAX} bytes (up to {POOLED_MAX}), beyond CPython ---"
            )?;
        }
        if row.pools == 0 {
            continue;
        }
        writeln!(
            w,
            "{:5} {:6} {:11} {:15} {:13}",
            c,
            class_size(c),
            row.pools,
            row.blocks_in_use,
            row.avail_blocks
        )?;
    }
    writeln!(w)?;
    count(w, "# arenas allocated total", s.arenas_total)?;
    count(w, "# arenas reclaimed", s.arenas_reclaimed)?;
    count(w, "# arenas highwater mark", s.arenas_highwater)?;
    count(w, "# arenas allocated current", s.arenas_current)?;
    let mut label = FixedBuf::<64>::new();
    let _ = write!(
        label,
        "{} arenas * {} bytes/arena",
        s.arenas_current, ARENA_SIZE
    );
    line(
        w,
        core::str::from_utf8(label.as_bytes()).unwrap_or(""),
        s.arenas_current * ARENA_SIZE,
    )?;
    writeln!(w)?;
    line(w, "# bytes in allocated blocks", s.allocated_bytes)?;
    line(w, "# bytes in available blocks", s.available_bytes)?;
    let mut label = FixedBuf::<64>::new();
    let _ = write!(label, "{} unused pools", s.unused_pools);
    line(
        w,
        core::str::from_utf8(label.as_bytes()).unwrap_or(""),
        s.unused_pool_bytes,
    )?;
    line(w, "# bytes lost to pool headers", 0)?;
    line(w, "# bytes lost to quantization", s.quantization_bytes)?;
    line(w, "# bytes lost to arena alignment", 0)?;
    line(w, "Total", s.total())?;
    writeln!(
        w,
        "  (pool and arena headers live outside the arenas: see metadata below)"
    )?;
    writeln!(w)?;
    writeln!(
        w,
        "Large blocks (over {POOLED_MAX} bytes, one mapping each)"
    )?;
    count(w, "# large blocks live", s.large_live)?;
    line(w, "# bytes in large blocks", s.large_bytes)?;
    line(w, "# peak bytes in large blocks", s.large_peak_bytes)?;
    count(w, "# large blocks resized with mremap", s.large_mremaps)?;
    line(w, "# freed large bytes cached for reuse", s.large_cached)?;
    line(w, "#   of which not yet discarded", s.large_cached_resident)?;
    writeln!(w)?;
    writeln!(w, "Calls (all threads, exited ones included)")?;
    let labels = [
        "# malloc",
        "# calloc",
        "# realloc (and reallocarray)",
        "# free (and cfree)",
        "# aligned (posix_memalign, memalign...)",
        "# PyObject_Malloc/Calloc/Realloc/Free",
        "# PyMem_Malloc/Calloc/Realloc/Free",
        "# frees from another thread",
    ];
    for (i, l) in labels.iter().enumerate() {
        count(w, l, s.calls.n[i] as usize)?;
    }
    count(
        w,
        "# PyObject/PyMem pointers passed on",
        s.pyobject_forwarded,
    )?;
    writeln!(w)?;
    writeln!(w, "Threads")?;
    count(w, "# threads seen", s.threads_seen)?;
    count(w, "# pools abandoned by exiting threads", s.pools_abandoned)?;
    count(w, "# pools adopted by other threads", s.pools_adopted)?;
    count(w, "# pools waiting for adoption", s.pools_waiting)?;
    writeln!(w)?;
    writeln!(w, "Memory")?;
    line(w, "# peak bytes in use (pools + large)", s.peak_in_use)?;
    line(w, "# bytes mapped now (arenas + large)", s.mapped_now)?;
    line(w, "# peak bytes mapped", s.mapped_peak)?;
    line(w, "# metadata mapped (headers, map, heaps)", s.meta_bytes)?;
    line(w, "# free pool bytes not yet discarded", s.dirty_bytes)?;
    line(w, "# emptied pool bytes kept by threads", s.kept_bytes)?;
    line(w, "# bytes returned to the OS", s.returned_bytes)?;
    line(w, "# resident set size now", s.rss_now)?;
    line(w, "# peak resident set size", s.rss_peak)?;
    Ok(())
}

/// Out of line and through `dyn Write`: the exit report and the C API share one copy (each
/// copy is resident code in every process that loads the library).
#[inline(never)]
fn write_json(w: &mut dyn Write, s: &Snapshot) -> fmt::Result {
    write!(
        w,
        "{{\"version\":\"{}\",\"pid\":{},",
        env!("CARGO_PKG_VERSION"),
        crate::os::pid()
    )?;
    write!(
        w,
        "\"small_block_threshold\":{SMALL_MAX},\"small_classes\":{NUM_SMALL},\"pooled_max\":{POOLED_MAX},"
    )?;
    write!(w, "\"classes\":[")?;
    let mut first = true;
    for (c, row) in s.classes.iter().enumerate() {
        if row.pools == 0 {
            continue;
        }
        if !first {
            write!(w, ",")?;
        }
        first = false;
        write!(
            w,
            "{{\"class\":{c},\"size\":{},\"pools\":{},\"blocks_in_use\":{},\"avail_blocks\":{}}}",
            class_size(c),
            row.pools,
            row.blocks_in_use,
            row.avail_blocks
        )?;
    }
    write!(w, "],")?;
    write!(
        w,
        "\"arenas\":{{\"size\":{ARENA_SIZE},\"allocated_total\":{},\"reclaimed\":{},\"highwater\":{},\"current\":{}}},",
        s.arenas_total, s.arenas_reclaimed, s.arenas_highwater, s.arenas_current
    )?;
    write!(
        w,
        "\"bytes\":{{\"allocated_blocks\":{},\"available_blocks\":{},\"unused_pools\":{},\"unused_pool_count\":{},\"pool_headers\":0,\"quantization\":{},\"arena_alignment\":0,\"total\":{},\"arenas_mapped\":{}}},",
        s.allocated_bytes,
        s.available_bytes,
        s.unused_pool_bytes,
        s.unused_pools,
        s.quantization_bytes,
        s.total(),
        s.arenas_current * ARENA_SIZE
    )?;
    write!(
        w,
        "\"large\":{{\"live\":{},\"bytes\":{},\"peak_bytes\":{},\"mremaps\":{},\"cached\":{},\"cached_resident\":{}}},",
        s.large_live,
        s.large_bytes,
        s.large_peak_bytes,
        s.large_mremaps,
        s.large_cached,
        s.large_cached_resident
    )?;
    write!(w, "\"calls\":{{")?;
    for i in 0..call::COUNT {
        write!(w, "\"{}\":{},", call::NAMES[i], s.calls.n[i])?;
    }
    write!(w, "\"pyobject_forwarded\":{}}},", s.pyobject_forwarded)?;
    write!(
        w,
        "\"threads\":{{\"seen\":{},\"pools_abandoned\":{},\"pools_adopted\":{},\"pools_waiting\":{}}},",
        s.threads_seen, s.pools_abandoned, s.pools_adopted, s.pools_waiting
    )?;
    write!(
        w,
        "\"memory\":{{\"peak_in_use\":{},\"mapped\":{},\"peak_mapped\":{},\"metadata\":{},\"dirty\":{},\"kept\":{},\"returned\":{},\"rss\":{},\"peak_rss\":{}}}}}",
        s.peak_in_use,
        s.mapped_now,
        s.mapped_peak,
        s.meta_bytes,
        s.dirty_bytes,
        s.kept_bytes,
        s.returned_bytes,
        s.rss_now,
        s.rss_peak
    )?;
    writeln!(w)
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

impl Write for FdWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.buf.len() + s.len() > 4096 {
            self.flush();
        }
        if s.len() > 4096 {
            os::write_all(self.fd, s.as_bytes());
            return Ok(());
        }
        self.buf.write_str(s)
    }
}

/// Writes into a caller's buffer, counting every byte that would have been written.
struct SliceWriter<'a> {
    out: &'a mut [u8],
    needed: usize,
}

impl Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.out.len().saturating_sub(1); // keep one byte for the NUL
        if self.needed < room {
            let take = s.len().min(room - self.needed);
            self.out[self.needed..self.needed + take].copy_from_slice(&s.as_bytes()[..take]);
        }
        self.needed += s.len();
        Ok(())
    }
}

/// Prints the text report on `fd`.
pub fn print_text(fd: i32) {
    let s = snapshot();
    let mut w = FdWriter {
        fd,
        buf: FixedBuf::new(),
    };
    let _ = write_text(&mut w, &s);
    w.flush();
}

/// Prints the JSON report on `fd`.
pub fn print_json(fd: i32) {
    let s = snapshot();
    let mut w = FdWriter {
        fd,
        buf: FixedBuf::new(),
    };
    let _ = write_json(&mut w, &s);
    w.flush();
}

/// Writes the JSON report into `out` (NUL-terminated, truncated if short); returns the length
/// of the whole report without the NUL.
pub fn json_into(out: &mut [u8]) -> usize {
    let s = snapshot();
    let mut w = SliceWriter { out, needed: 0 };
    let _ = write_json(&mut w, &s);
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
fn open_destination() -> i32 {
    let Some(path) = options::stats_file() else {
        return 2;
    };
    let mut buf = FixedBuf::<4096>::new();
    let bytes = path.to_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 1 < bytes.len() && bytes[i + 1] == b'p' {
            let _ = write!(buf, "{}", crate::os::pid());
            i += 2;
        } else {
            let _ = buf.write_char(bytes[i] as char);
            i += 1;
        }
    }
    let _ = buf.write_char('\0');
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
    fn numbers_read_well() {
        let mut b = FixedBuf::<64>::new();
        write!(
            b,
            "{} {} {} {}",
            Commas(0),
            Commas(999),
            Commas(1000),
            Commas(16777216)
        )
        .unwrap();
        assert_eq!(b.as_bytes(), b"0 999 1,000 16,777,216");
        let mut b = FixedBuf::<64>::new();
        write!(
            b,
            "{} {} {} {}",
            Human(512),
            Human(1536),
            Human(3 << 20),
            Human(5 << 30)
        )
        .unwrap();
        assert_eq!(b.as_bytes(), b"512 B 1.5 KiB 3.0 MiB 5.0 GiB");
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
