//! The exported C names: one-line forwards into `alloc`, argument checks that C demands, and
//! nothing else. Every function here is reached through the PLT by any program that runs on
//! poolmalloc, so none may unwind (the crate is built with `panic = "abort"`).

#![allow(non_snake_case)]

use core::ffi::{c_int, c_void};

use crate::alloc::{self, Api};
use crate::os::{self, PAGE_SIZE};

const FREE: Api = "free";
const REALLOC: Api = "realloc";

// ---- the malloc family (glibc's manual, "Replacing malloc") ----

#[no_mangle]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    alloc::malloc(size) as *mut c_void
}

/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { alloc::free(p as *mut u8, FREE) }
}

#[no_mangle]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut c_void {
    alloc::calloc(n, size) as *mut c_void
}

/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { alloc::realloc(p as *mut u8, size, REALLOC) as *mut c_void }
}

/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { alloc::reallocarray(p as *mut u8, n, size, "reallocarray") as *mut c_void }
}

// The aligned entry points are warm code with `alloc::aligned` (see lib.rs): a program that
// never asks for an alignment keeps their page out of its resident set.

/// # Safety
/// `out` must be writable when the call succeeds.
#[no_mangle]
#[link_section = ".text_warm"]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // POSIX: a power of two multiple of sizeof(void *); *out untouched and errno kept on error.
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let saved = os::errno();
    let p = alloc::aligned(align, size);
    os::set_errno(saved);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a writable out-pointer.
    unsafe { *out = p as *mut c_void };
    0
}

#[no_mangle]
#[link_section = ".text_warm"]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        os::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    alloc::aligned(align, size) as *mut c_void
}

#[no_mangle]
#[link_section = ".text_warm"]
pub extern "C" fn memalign(align: usize, size: usize) -> *mut c_void {
    // glibc: alignments above half the address space are EINVAL; others round up to a power
    // of two.
    if align > usize::MAX / 2 + 1 {
        os::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    alloc::aligned(align.max(1).next_power_of_two(), size) as *mut c_void
}

#[no_mangle]
#[link_section = ".text_warm"]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    alloc::aligned(PAGE_SIZE, size) as *mut c_void
}

#[no_mangle]
#[link_section = ".text_warm"]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    let Some(rounded) = size.checked_add(PAGE_SIZE - 1) else {
        os::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    alloc::aligned(PAGE_SIZE, (rounded & !(PAGE_SIZE - 1)).max(PAGE_SIZE)) as *mut c_void
}

/// # Safety
/// `p` is null or a live block from this allocator.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: forwarded contract.
    unsafe { alloc::usable_size(p as *mut u8, "malloc_usable_size") }
}

/// Gone from glibc's API since 2.26; kept for old binaries, with the rarely run code.
///
/// # Safety
/// As for `free`.
#[no_mangle]
#[link_section = ".text_rarely_run"]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { alloc::free(p as *mut u8, "cfree") }
}

#[no_mangle]
#[link_section = ".text_rarely_run"]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    alloc::trim() as c_int
}

// ---- glibc's internal aliases, which some programs and libraries call directly ----

#[no_mangle]
pub extern "C" fn __libc_malloc(size: usize) -> *mut c_void {
    malloc(size)
}
/// # Safety
/// As for `free`.
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { free(p) }
}
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, size: usize) -> *mut c_void {
    calloc(n, size)
}
/// # Safety
/// As for `realloc`.
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { realloc(p, size) }
}
#[no_mangle]
#[link_section = ".text_warm"]
pub extern "C" fn __libc_memalign(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}
#[no_mangle]
#[link_section = ".text_warm"]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    valloc(size)
}
#[no_mangle]
#[link_section = ".text_warm"]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    pvalloc(size)
}
/// # Safety
/// As for `posix_memalign`.
#[no_mangle]
#[link_section = ".text_warm"]
pub unsafe extern "C" fn __posix_memalign(
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { posix_memalign(out, align, size) }
}

// ---- CPython's object and mem allocators (see `pyobject`) ----

use crate::pyobject::{MEM, OBJ};

#[no_mangle]
pub extern "C" fn PyObject_Malloc(size: usize) -> *mut c_void {
    OBJ.malloc(size) as *mut c_void
}
#[no_mangle]
pub extern "C" fn PyObject_Calloc(n: usize, size: usize) -> *mut c_void {
    OBJ.calloc(n, size) as *mut c_void
}
/// # Safety
/// `p` is null or a live object block (ours or the replaced allocator's).
#[no_mangle]
pub unsafe extern "C" fn PyObject_Realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { OBJ.realloc(p as *mut u8, size) as *mut c_void }
}
/// # Safety
/// `p` is null or a live object block (ours or the replaced allocator's).
#[no_mangle]
pub unsafe extern "C" fn PyObject_Free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { OBJ.free(p as *mut u8) }
}

#[no_mangle]
pub extern "C" fn PyMem_Malloc(size: usize) -> *mut c_void {
    MEM.malloc(size) as *mut c_void
}
#[no_mangle]
pub extern "C" fn PyMem_Calloc(n: usize, size: usize) -> *mut c_void {
    MEM.calloc(n, size) as *mut c_void
}
/// # Safety
/// `p` is null or a live mem-domain block (ours or the replaced allocator's).
#[no_mangle]
pub unsafe extern "C" fn PyMem_Realloc(p: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    unsafe { MEM.realloc(p as *mut u8, size) as *mut c_void }
}
/// # Safety
/// `p` is null or a live mem-domain block (ours or the replaced allocator's).
#[no_mangle]
pub unsafe extern "C" fn PyMem_Free(p: *mut c_void) {
    // SAFETY: forwarded contract.
    unsafe { MEM.free(p as *mut u8) }
}

/// Interposed so that hooks installed on the MEM and OBJ domains still see their allocations
/// (see `pyobject`).
///
/// # Safety
/// As CPython's: `allocator` points at a valid `PyMemAllocatorEx`.
#[no_mangle]
pub unsafe extern "C" fn PyMem_SetAllocator(
    domain: c_int,
    allocator: *mut crate::pyobject::PyMemAllocatorEx,
) {
    // SAFETY: forwarded contract.
    unsafe { crate::pyobject::set_allocator(domain, allocator) }
}

// ---- poolmalloc's own API (declared in include/poolmalloc.h) ----

/// The library version as "major.minor.patch", a static NUL-terminated string.
#[no_mangle]
#[link_section = ".text_rarely_run"]
pub extern "C" fn poolmalloc_version() -> *const core::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const core::ffi::c_char
}

/// Returns 1 if `p` lies in memory poolmalloc manages (an arena or a large block), else 0.
/// Never reads the memory at `p`.
#[no_mangle]
pub extern "C" fn poolmalloc_owns(p: *const c_void) -> c_int {
    alloc::owns(p as *const u8) as c_int
}

/// Walks the allocator's structures (every arena, and the calling thread's heap: free lists,
/// counts, list states) and returns the number of inconsistencies found, printing the first
/// ones on stderr. 0 means all is well. Meant for tests; takes the arena lock.
#[no_mangle]
#[link_section = ".text_rarely_run"]
pub extern "C" fn poolmalloc_check() -> c_int {
    alloc::check().min(c_int::MAX as usize) as c_int
}

/// Writes the text statistics report (the one `POOLMALLOC_STATS=1` prints at exit) to file
/// descriptor `fd`. Does not allocate.
#[no_mangle]
#[link_section = ".text_rarely_run"]
pub extern "C" fn poolmalloc_stats_print(fd: c_int) {
    crate::report::print_text(fd);
}

/// Writes the statistics as one JSON object into `buf` (at most `len` bytes, NUL-terminated
/// when `len > 0`) and returns the length of the whole report without the NUL, like
/// `snprintf`: call with `len == 0` to learn the size. Does not allocate.
///
/// # Safety
/// `buf` must be writable for `len` bytes (or null with `len == 0`).
#[no_mangle]
#[link_section = ".text_rarely_run"]
pub unsafe extern "C" fn poolmalloc_stats_json(buf: *mut core::ffi::c_char, len: usize) -> usize {
    let out: &mut [u8] = if buf.is_null() || len == 0 {
        &mut []
    } else {
        // SAFETY: the caller promises len writable bytes at buf.
        unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, len) }
    };
    crate::report::json_into(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_header_is_current() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/poolmalloc.h"));
        let committed = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/include/poolmalloc.h"));
        assert!(
            generated == committed,
            "include/poolmalloc.h differs from what cbindgen generates now; run scripts/update-header.sh"
        );
    }
}
