//! Options: `POOLMALLOC_*` environment variables, one table, read once at load time.
//!
//! They are read by scanning `environ` directly from the library constructor: `getenv` is
//! fine there but the scan costs nothing extra and also works if a caller ever needs options
//! earlier. Nothing here allocates; string values point into the environment block, which the
//! process keeps for its lifetime.

use core::ffi::{c_char, CStr};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};

/// Default idle-memory bound: small enough that a CPython-sized process keeps its peak RSS
/// near pymalloc's, large enough that a churning program rarely pays for page faults.
pub const DEFAULT_PURGE_BYTES: usize = 2 << 20;
/// Default purge delay: how long memory may sit idle before it is given back (mimalloc's
/// default too). Long enough for a loop that frees and reallocates to keep its pages.
pub const DEFAULT_PURGE_DELAY_MS: usize = 10;

/// How the statistics report is wanted at exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(usize)]
pub enum StatsMode {
    Off = 0,
    Text = 1,
    Json = 2,
    /// The variable had a value we do not know: warn once, print nothing.
    Invalid = 3,
}

pub struct Options {
    stats: AtomicUsize,
    stats_file: AtomicPtr<c_char>,
    purge_threshold: AtomicUsize,
    purge_delay_ms: AtomicUsize,
}

static OPTIONS: Options = Options {
    stats: AtomicUsize::new(StatsMode::Off as usize),
    stats_file: AtomicPtr::new(core::ptr::null_mut()),
    purge_threshold: AtomicUsize::new(DEFAULT_PURGE_BYTES),
    purge_delay_ms: AtomicUsize::new(DEFAULT_PURGE_DELAY_MS),
};

/// The table: name, what it does, accepted values.
pub const TABLE: &[(&str, &str)] = &[
    (
        "POOLMALLOC_STATS",
        "report at exit: unset, empty or 0 = none; 1 or text = text; json = JSON",
    ),
    (
        "POOLMALLOC_STATS_FILE",
        "write the report to this path instead of stderr; %p becomes the pid",
    ),
    (
        "POOLMALLOC_PURGE_BYTES",
        "idle bytes (free pools, kept empty pools, cached large blocks) allowed before free pools are discarded without waiting for the purge delay (all of them past 4x); default 2M; K/M/G suffixes",
    ),
    (
        "POOLMALLOC_PURGE_DELAY",
        "milliseconds idle memory waits before it is given back (checked by each thread every 4096 calls and when it needs a new pool); default 10",
    ),
];

pub fn stats_mode() -> StatsMode {
    match OPTIONS.stats.load(Relaxed) {
        1 => StatsMode::Text,
        2 => StatsMode::Json,
        3 => StatsMode::Invalid,
        _ => StatsMode::Off,
    }
}

/// The raw `POOLMALLOC_STATS_FILE` value, if set and non-empty.
pub fn stats_file() -> Option<&'static CStr> {
    let p = OPTIONS.stats_file.load(Relaxed);
    if p.is_null() {
        return None;
    }
    // SAFETY: p points at a NUL-terminated value inside the environment block.
    let s = unsafe { CStr::from_ptr(p) };
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

pub fn purge_threshold() -> usize {
    OPTIONS.purge_threshold.load(Relaxed)
}

pub fn purge_delay_ms() -> u32 {
    OPTIONS
        .purge_delay_ms
        .load(Relaxed)
        .min(u32::MAX as usize / 2) as u32
}

pub fn parse_stats_mode(v: &[u8]) -> StatsMode {
    match v {
        b"" | b"0" => StatsMode::Off,
        b"1" | b"text" => StatsMode::Text,
        b"json" => StatsMode::Json,
        _ => StatsMode::Invalid,
    }
}

/// Parses "123", "64K", "8M", "1G"; None if malformed.
#[link_section = ".text_rarely_run"]
pub fn parse_bytes(v: &[u8]) -> Option<usize> {
    let (digits, mult) = match v.last()? {
        b'k' | b'K' => (&v[..v.len() - 1], 1usize << 10),
        b'm' | b'M' => (&v[..v.len() - 1], 1 << 20),
        b'g' | b'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n = 0usize;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((d - b'0') as usize)?;
    }
    n.checked_mul(mult)
}

/// Parses a plain number of milliseconds; None if malformed.
#[link_section = ".text_rarely_run"]
pub fn parse_ms(v: &[u8]) -> Option<usize> {
    if v.last()?.is_ascii_digit() {
        parse_bytes(v)
    } else {
        None
    }
}

extern "C" {
    static environ: *const *const c_char;
}

/// Reads every option from the environment. Called from the library constructor.
pub fn load() {
    // SAFETY: environ is a NULL-terminated array of NUL-terminated strings set up by libc
    // before constructors run; we only read it.
    unsafe {
        let mut e = environ;
        if e.is_null() {
            return;
        }
        while !(*e).is_null() {
            let entry = CStr::from_ptr(*e).to_bytes();
            if entry.starts_with(b"POOLMALLOC_") {
                if let Some(eq) = entry.iter().position(|&b| b == b'=') {
                    let (name, value) = (&entry[..eq], &entry[eq + 1..]);
                    apply(name, value, (*e).add(eq + 1));
                }
            }
            e = e.add(1);
        }
    }
}

fn apply(name: &[u8], value: &[u8], value_ptr: *const c_char) {
    match name {
        b"POOLMALLOC_STATS" => OPTIONS
            .stats
            .store(parse_stats_mode(value) as usize, Relaxed),
        b"POOLMALLOC_STATS_FILE" => OPTIONS.stats_file.store(value_ptr as *mut c_char, Relaxed),
        b"POOLMALLOC_PURGE_BYTES" => {
            if let Some(n) = parse_bytes(value) {
                OPTIONS.purge_threshold.store(n, Relaxed);
            }
        }
        b"POOLMALLOC_PURGE_DELAY" => {
            if let Some(n) = parse_ms(value) {
                OPTIONS.purge_delay_ms.store(n, Relaxed);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_values() {
        assert_eq!(parse_stats_mode(b""), StatsMode::Off);
        assert_eq!(parse_stats_mode(b"0"), StatsMode::Off);
        assert_eq!(parse_stats_mode(b"1"), StatsMode::Text);
        assert_eq!(parse_stats_mode(b"text"), StatsMode::Text);
        assert_eq!(parse_stats_mode(b"json"), StatsMode::Json);
        assert_eq!(parse_stats_mode(b"yes"), StatsMode::Invalid);
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes(b"123"), Some(123));
        assert_eq!(parse_bytes(b"64K"), Some(64 << 10));
        assert_eq!(parse_bytes(b"8m"), Some(8 << 20));
        assert_eq!(parse_bytes(b"1G"), Some(1 << 30));
        assert_eq!(parse_bytes(b"M"), None);
        assert_eq!(parse_bytes(b"12x"), None);
        assert_eq!(parse_bytes(b"99999999999999999999999"), None);
    }

    #[test]
    fn milliseconds() {
        assert_eq!(parse_ms(b"0"), Some(0));
        assert_eq!(parse_ms(b"250"), Some(250));
        assert_eq!(parse_ms(b"10K"), None);
        assert_eq!(parse_ms(b""), None);
        assert_eq!(parse_ms(b"-1"), None);
    }
}
