//! Messages without allocation and without `core::fmt`: a `Sink` that takes bytes, a stack
//! buffer that is one, writers for the few shapes of text and number that messages and the
//! statistics report need, and the fatal error path taken when a program hands us a pointer we
//! must not touch.
//!
//! Nothing here may allocate: these run inside `free` with the heap possibly corrupted. And
//! nothing here uses `core::fmt`: its machinery (padding, integer formatting, UTF-8 checks) was
//! about 7 KiB of the library's code, and all of the library's code is resident in every
//! process that loads it (the kernel maps file pages up to 64 KiB around each fault), not only
//! what runs. mimalloc and jemalloc have their own small formatters for the same reasons.

/// A byte string stored in `.rodata_rarely_read`, which build.rs keeps out of the pages
/// every process maps, as it does the rarely run code: for text only the statistics report
/// reads (a string literal would sit in `.rodata`, next to data that every process reads).
macro_rules! rarely_read {
    ($s:literal) => {{
        #[link_section = ".rodata_rarely_read"]
        static BYTES: [u8; $s.len()] = *$s;
        &BYTES as &'static [u8]
    }};
}
pub(crate) use rarely_read;

/// Where text goes: a stack buffer, a file descriptor (through one), a caller's buffer.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// A byte buffer on the stack; text past the end is dropped, and `overflowed` remembers it.
pub struct FixedBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    pub overflowed: bool,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        FixedBuf {
            bytes: [0; N],
            len: 0,
            overflowed: false,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
    /// The text written so far, for tests (writers put only whole UTF-8 strings and ASCII);
    /// empty if a truncation cut a character.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Sink for FixedBuf<N> {
    fn put(&mut self, bytes: &[u8]) {
        if !append(&mut self.bytes, &mut self.len, bytes) {
            self.overflowed = true;
        }
    }
}

/// Appends what fits of `bytes` to `buf[..*len]`; false if some did not fit. One copy for
/// every buffer size.
#[inline(never)]
#[link_section = ".text_rarely_run"]
fn append(buf: &mut [u8], len: &mut usize, bytes: &[u8]) -> bool {
    let start = (*len).min(buf.len());
    let take = bytes.len().min(buf.len() - start);
    buf[start..start + take].copy_from_slice(&bytes[..take]);
    *len = start + take;
    take == bytes.len()
}

/// `s`, then spaces up to `width` bytes (`{s:<width}`).
#[link_section = ".text_rarely_run"]
pub fn padded(w: &mut dyn Sink, s: &[u8], width: usize) {
    w.put(s);
    spaces(w, width.saturating_sub(s.len()));
}

/// `n` spaces.
#[link_section = ".text_rarely_run"]
pub fn spaces(w: &mut dyn Sink, mut n: usize) {
    const BLANK: [u8; 32] = [b' '; 32];
    while n > 0 {
        let k = n.min(BLANK.len());
        w.put(&BLANK[..k]);
        n -= k;
    }
}

/// `n` in decimal, right-aligned in `width` bytes (`{n:>width}`; 0 for no padding).
#[link_section = ".text_rarely_run"]
pub fn decimal(w: &mut dyn Sink, n: u64, width: usize) {
    digits(w, n, width, false);
}

/// `n` in decimal with a comma every three digits (`16,777,216`, as CPython prints byte
/// counts), right-aligned in `width` bytes.
#[link_section = ".text_rarely_run"]
pub fn with_commas(w: &mut dyn Sink, n: u64, width: usize) {
    digits(w, n, width, true);
}

#[inline(never)]
#[link_section = ".text_rarely_run"]
fn digits(w: &mut dyn Sink, mut n: u64, width: usize, commas: bool) {
    // u64::MAX has 20 digits and 6 commas.
    let mut buf = [0u8; 26];
    let mut at = buf.len();
    let mut count = 0;
    loop {
        if commas && count > 0 && count % 3 == 0 {
            at -= 1;
            buf[at] = b',';
        }
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    spaces(w, width.saturating_sub(buf.len() - at));
    w.put(&buf[at..]);
}

/// `n` in hexadecimal with a `0x` prefix (`{n:#x}`).
#[link_section = ".text_rarely_run"]
pub fn hex(w: &mut dyn Sink, mut n: u64) {
    let mut buf = [0u8; 18];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[(n & 15) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    at -= 2;
    buf[at] = b'0';
    buf[at + 1] = b'x';
    w.put(&buf[at..]);
}

/// Prints `poolmalloc: <api>(): <what> <addr>` on stderr and aborts the process.
///
/// The wording follows glibc's (`free(): invalid pointer`) so people and tools recognise it,
/// and names poolmalloc so that a program mixing allocators sees at once whose check fired.
#[cold]
#[inline(never)]
#[link_section = ".text_rarely_run"]
pub fn fatal(api: &str, what: &str, addr: usize) -> ! {
    say(api, b"(): ", what, addr);
    // SAFETY: abort never returns and has no preconditions.
    unsafe { libc::abort() }
}

/// Prints `poolmalloc: <who>: <what> <value>` on stderr (a consistency check's finding).
#[cold]
#[link_section = ".text_rarely_run"]
pub fn complain(who: &str, what: &str, value: usize) {
    say(who, b": ", what, value);
}

/// `poolmalloc: <who><sep><what> <value in hex>` on stderr, from a stack buffer.
#[inline(never)]
#[link_section = ".text_rarely_run"]
fn say(who: &str, sep: &[u8], what: &str, value: usize) {
    let mut buf = FixedBuf::<256>::new();
    compose(&mut buf, who, sep, what, value);
    crate::os::write_all(2, buf.as_bytes());
}

#[link_section = ".text_rarely_run"]
fn compose(w: &mut dyn Sink, who: &str, sep: &[u8], what: &str, value: usize) {
    w.put(b"poolmalloc: ");
    w.put(who.as_bytes());
    w.put(sep);
    w.put(what.as_bytes());
    w.put(b" ");
    hex(w, value as u64);
    w.put(b"\n");
}

/// Writes what is known of a panic, from a stack buffer: a panic is a bug in poolmalloc.
/// The message is there when it is a plain string; one with arguments would need
/// `core::fmt`, and the place in the source says enough to find the bug.
#[link_section = ".text_rarely_run"]
pub fn report_panic(file: &str, line: u32, message: Option<&str>) {
    let mut buf = FixedBuf::<512>::new();
    buf.put(b"poolmalloc: internal error at ");
    buf.put(file.as_bytes());
    buf.put(b":");
    decimal(&mut buf, line as u64, 0);
    if let Some(m) = message {
        buf.put(b": ");
        buf.put(m.as_bytes());
    }
    buf.put(b"\n");
    crate::os::write_all(2, buf.as_bytes());
}

/// Without std (see `lib`), a panic ends here: report it and abort, never unwind.
#[cfg(all(not(test), target_arch = "x86_64"))]
#[panic_handler]
#[link_section = ".text_rarely_run"]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
    report_panic(file, line, info.message().as_str());
    // SAFETY: abort never returns and has no preconditions.
    unsafe { libc::abort() }
}

/// Aborts with a message about an internal invariant that does not hold.
#[cold]
#[inline(never)]
#[link_section = ".text_rarely_run"]
pub fn internal_error(what: &str) -> ! {
    crate::os::write_all(2, b"poolmalloc: internal error: ");
    crate::os::write_all(2, what.as_bytes());
    crate::os::write_all(2, b"\n");
    // SAFETY: abort never returns and has no preconditions.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_buf_truncates_and_remembers() {
        let mut b = FixedBuf::<8>::new();
        decimal(&mut b, 1234, 0);
        assert_eq!(b.as_bytes(), b"1234");
        assert!(!b.overflowed);
        decimal(&mut b, 567890, 0);
        assert_eq!(b.as_bytes(), b"12345678");
        assert!(b.overflowed);
    }

    #[test]
    fn messages_read_as_glibc_words_them() {
        let mut b = FixedBuf::<256>::new();
        compose(&mut b, "free", b"(): ", "invalid pointer", 0x7f00_dead_beef);
        assert_eq!(
            b.as_str(),
            "poolmalloc: free(): invalid pointer 0x7f00deadbeef\n"
        );
        let mut b = FixedBuf::<256>::new();
        compose(&mut b, "heap check", b": ", "pool on two lists", 0);
        assert_eq!(
            b.as_str(),
            "poolmalloc: heap check: pool on two lists 0x0\n"
        );
    }

    #[test]
    fn numbers_come_out_as_core_fmt_would_print_them() {
        for n in [0u64, 7, 999, 1000, 123_456, 16_777_216, u64::MAX] {
            let mut b = FixedBuf::<64>::new();
            decimal(&mut b, n, 0);
            assert_eq!(b.as_str(), format!("{n}"));
            let mut b = FixedBuf::<64>::new();
            decimal(&mut b, n, 21);
            assert_eq!(b.as_str(), format!("{n:>21}"));
            let mut b = FixedBuf::<64>::new();
            hex(&mut b, n);
            assert_eq!(b.as_str(), format!("{n:#x}"));
        }
        let mut b = FixedBuf::<64>::new();
        for n in [0u64, 999, 1000, 16_777_216] {
            with_commas(&mut b, n, 0);
            b.put(b" ");
        }
        with_commas(&mut b, u64::MAX, 30);
        assert_eq!(
            b.as_str(),
            "0 999 1,000 16,777,216     18,446,744,073,709,551,615"
        );
        let mut b = FixedBuf::<64>::new();
        padded(&mut b, b"label", 8);
        padded(&mut b, b"too long", 3);
        spaces(&mut b, 40);
        assert_eq!(b.as_str(), format!("label   too long{:40}", ""));
    }
}
