//! The operating-system contract: every system call poolmalloc makes lives here.
//!
//! Contract: nothing in this module allocates, takes a lock or calls into libc's allocator.
//! Mappings are anonymous, private and zero-filled; all sizes passed in are multiples of the
//! page size (4 KiB, checked once at start-up). Errors are reported as a null pointer or
//! `false`, never by panicking; the caller decides what `errno` the user sees.

use core::ptr;

/// The page size poolmalloc is built for. Start-up aborts if the kernel disagrees.
pub const PAGE_SIZE: usize = 4096;

/// Maps `size` bytes of fresh zeroed memory, anywhere (or at `hint` if the kernel agrees).
pub fn map(size: usize, hint: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions; the kernel picks a free range
    // (a hint without MAP_FIXED never replaces an existing mapping).
    let p = unsafe {
        libc::mmap(
            hint as *mut libc::c_void,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p as *mut u8
    }
}

/// Unmaps `[p, p + size)`.
///
/// # Safety
/// The range must be a whole mapping (or part of one) that poolmalloc created and that no
/// live block points into.
pub unsafe fn unmap(p: *mut u8, size: usize) {
    if size != 0 {
        // SAFETY: the caller owns the range; munmap of an owned range only drops pages.
        unsafe { libc::munmap(p as *mut libc::c_void, size) };
    }
}

/// Where the next aligned mapping is attempted first. Linux hands out addresses top-down, so
/// just below the previous aligned mapping is usually free and already aligned: one `mmap`
/// instead of three.
static NEXT_HINT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Maps `size` bytes whose start is a multiple of `align` (a power of two ≥ the page size).
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    use core::sync::atomic::Ordering::Relaxed;
    debug_assert!(align.is_power_of_two() && align >= PAGE_SIZE && size.is_multiple_of(PAGE_SIZE));
    let hint = NEXT_HINT.load(Relaxed);
    if hint != 0 && hint > size {
        let want = (hint - size) & !(align - 1);
        let p = map(size, want);
        if !p.is_null() && (p as usize) & (align - 1) == 0 {
            NEXT_HINT.store(p as usize, Relaxed);
            return p;
        }
        if !p.is_null() {
            // SAFETY: we just mapped [p, p+size) and nobody else knows it.
            unsafe { unmap(p, size) };
        }
    }
    // Over-map by `align` and trim both ends so what is left starts on the boundary.
    let Some(total) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map(total, 0);
    if raw.is_null() {
        return ptr::null_mut();
    }
    let start = (raw as usize + align - 1) & !(align - 1);
    let head = start - raw as usize;
    let tail = total - head - size;
    // SAFETY: head and tail are the parts of our fresh mapping outside [start, start+size).
    unsafe {
        unmap(raw, head);
        unmap((start + size) as *mut u8, tail);
    }
    NEXT_HINT.store(start, Relaxed);
    start as *mut u8
}

/// Tells the kernel the pages of `[p, p + size)` are unused: they read back as zeros and stop
/// counting in the resident set.
///
/// # Safety
/// The range must be owned by poolmalloc and hold no live block.
pub unsafe fn discard(p: *mut u8, size: usize) {
    if size != 0 {
        // SAFETY: MADV_DONTNEED on an owned private anonymous range only drops its contents.
        unsafe { libc::madvise(p as *mut libc::c_void, size, libc::MADV_DONTNEED) };
    }
}

/// Resizes the mapping at `p` in place; false if the kernel cannot without moving it.
///
/// # Safety
/// `[p, p + old)` must be a whole mapping owned by poolmalloc.
pub unsafe fn remap_in_place(p: *mut u8, old: usize, new: usize) -> bool {
    // SAFETY: without MREMAP_MAYMOVE the mapping either resizes where it is or is unchanged.
    let r = unsafe { libc::mremap(p as *mut libc::c_void, old, new, 0) };
    r != libc::MAP_FAILED
}

/// Moves the pages of mapping `[p, p + old)` to `dest` (which must be a reservation of `new`
/// bytes we own), growing it to `new` bytes. The old range is unmapped; no byte is copied.
///
/// # Safety
/// Both ranges must be owned by poolmalloc, and `dest` must not overlap `[p, p + old)`.
pub unsafe fn remap_to(p: *mut u8, old: usize, new: usize, dest: *mut u8) -> bool {
    // SAFETY: MREMAP_FIXED replaces our own reservation at dest; the caller owns both ranges.
    let r = unsafe {
        libc::mremap(
            p as *mut libc::c_void,
            old,
            new,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            dest as *mut libc::c_void,
        )
    };
    r != libc::MAP_FAILED
}

/// The page size the kernel really uses.
pub fn kernel_page_size() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Milliseconds on a coarse monotonic clock (the vDSO answers it without entering the kernel);
/// wraps after 49 days, so compare with `wrapping_sub`.
pub fn now_ms() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-parameter; clock_gettime does not allocate.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) as u32
}

/// Sets the calling thread's `errno`.
#[inline]
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location always returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// The allocator's answer to exhaustion: `errno = ENOMEM` and a null pointer.
#[cold]
pub fn out_of_memory() -> *mut u8 {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

/// The process id (for report file names and headers).
pub fn pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Reads the calling thread's `errno`.
#[inline]
pub fn errno() -> i32 {
    // SAFETY: as in set_errno.
    unsafe { *libc::__errno_location() }
}

/// Writes all of `bytes` to file descriptor `fd`, retrying on short writes.
#[link_section = ".text_rarely_run"]
pub fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: the slice is valid for reads of its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr() as *const libc::c_void, bytes.len()) };
        if n <= 0 {
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// The process's resident set size in bytes, read from `/proc/self/statm` without allocating.
#[link_section = ".text_rarely_run"]
pub fn current_rss() -> usize {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path literal; open/read/close do not allocate.
    let fd = unsafe {
        libc::open(
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return 0;
    }
    // SAFETY: buf is writable for its length; fd is ours and closed right after.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    // SAFETY: fd was opened above.
    unsafe { libc::close(fd) };
    if n <= 0 {
        return 0;
    }
    // statm: "size resident shared ..." in pages; we want the second field.
    let mut fields = buf[..n as usize].split(|&b| b == b' ');
    fields.next();
    let pages = fields
        .next()
        .map(|f| {
            f.iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0usize, |a, &d| a * 10 + (d - b'0') as usize)
        })
        .unwrap_or(0);
    pages * PAGE_SIZE
}

/// The process's peak resident set size in bytes (`ru_maxrss`).
#[link_section = ".text_rarely_run"]
pub fn peak_rss() -> usize {
    // SAFETY: rusage is plain data; getrusage fills it and does not allocate.
    let mut ru: libc::rusage = unsafe { core::mem::zeroed() };
    // SAFETY: ru is a valid out-parameter.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_maxrss as usize * 1024
}

/// Pages of `[p, p + len)` (mapped, page-aligned) that are resident (`mincore`): the statistics
/// report counts each class's resident pool pages with it, and tests use it to show what a
/// structure leaves untouched.
#[link_section = ".text_rarely_run"]
pub fn resident_pages(p: *mut u8, len: usize) -> usize {
    // mincore reports a byte per page; a fixed vector on the stack, filled a chunk at a time.
    const CHUNK: usize = 256;
    let mut vec = [0u8; CHUNK];
    let pages = len.div_ceil(PAGE_SIZE);
    let mut resident = 0;
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(CHUNK);
        let at = (p as usize + done * PAGE_SIZE) as *mut libc::c_void;
        // SAFETY: mincore only reads the page tables of `[at, at + n pages)` and writes n
        // bytes to vec, which has room for CHUNK >= n.
        if unsafe { libc::mincore(at, n * PAGE_SIZE, vec.as_mut_ptr()) } != 0 {
            // Callers pass mapped, page-aligned ranges, so this is a bug; a test must not read
            // it as "nothing resident". The report just counts what it could.
            #[cfg(test)]
            panic!("mincore failed on {at:p}");
            #[cfg(not(test))]
            break;
        }
        resident += vec[..n].iter().filter(|&&v| v & 1 != 0).count();
        done += n;
    }
    resident
}
