//! Messages without allocation: a fixed buffer that `core::fmt` can write into, and the fatal
//! error path taken when a program hands us a pointer we must not touch.
//!
//! Nothing here may allocate: these run inside `free` with the heap possibly corrupted.

use core::fmt;

/// A byte buffer on the stack that `write!` fills; text past the end is dropped, not an error,
/// and `overflowed` remembers it.
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

impl<const N: usize> fmt::Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.overflowed = true;
        }
        Ok(())
    }
}

/// Prints `poolmalloc: <api>(): <what> <addr>` on stderr and aborts the process.
///
/// The wording follows glibc's (`free(): invalid pointer`) so people and tools recognise it,
/// and names poolmalloc so that a program mixing allocators sees at once whose check fired.
#[cold]
#[inline(never)]
pub fn fatal(api: &str, what: &str, addr: usize) -> ! {
    use fmt::Write;
    let mut buf = FixedBuf::<256>::new();
    let _ = writeln!(buf, "poolmalloc: {api}(): {what} {addr:#x}");
    crate::os::write_all(2, buf.as_bytes());
    // SAFETY: abort never returns and has no preconditions.
    unsafe { libc::abort() }
}

/// Prints `poolmalloc: <who>: <what> <value>` on stderr (a consistency check's finding).
#[cold]
pub fn complain(who: &str, what: &str, value: usize) {
    use fmt::Write;
    let mut buf = FixedBuf::<256>::new();
    let _ = writeln!(buf, "poolmalloc: {who}: {what} {value:#x}");
    crate::os::write_all(2, buf.as_bytes());
}

/// Writes a panic's message, from a stack buffer: a panic is a bug in poolmalloc.
pub fn report_panic(info: &dyn fmt::Display) {
    use core::fmt::Write;
    let mut buf = FixedBuf::<512>::new();
    let _ = writeln!(buf, "poolmalloc: internal error: {info}");
    crate::os::write_all(2, buf.as_bytes());
}

/// Without std (see `lib`), a panic ends here: report it and abort, never unwind.
#[cfg(all(not(test), target_arch = "x86_64"))]
#[panic_handler]
fn on_panic(info: &core::panic::PanicInfo<'_>) -> ! {
    report_panic(info);
    // SAFETY: abort never returns and has no preconditions.
    unsafe { libc::abort() }
}

/// Aborts with a message about an internal invariant that does not hold.
#[cold]
#[inline(never)]
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
    use core::fmt::Write;

    #[test]
    fn fixed_buf_truncates_and_remembers() {
        let mut b = FixedBuf::<8>::new();
        write!(b, "{}", 1234).unwrap();
        assert_eq!(b.as_bytes(), b"1234");
        write!(b, "{}", 567890).unwrap();
        assert_eq!(b.as_bytes(), b"12345678");
        assert!(b.overflowed);
    }
}
