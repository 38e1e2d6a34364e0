//! CPython's object allocator API (`PyObject_Malloc` and friends) on poolmalloc.
//!
//! Preloaded into a CPython whose libpython calls these through the PLT, every object
//! allocation lands here. Some pointers reaching `PyObject_Free`/`PyObject_Realloc` were not
//! allocated by us: libpython may bind its own calls internally, or code may mix the MEM and
//! OBJ domains. The address map recognises them without touching their memory, and they are
//! passed to the implementation we replaced (the next `PyObject_*` in lookup order), found with
//! `dlsym(RTLD_NEXT, ...)` on the first foreign pointer and never again. `dlsym` may call
//! `calloc`, which is ours and does not come back here, so resolution cannot recurse.
//!
//! Semantics follow CPython: size 0 gives a distinct non-NULL block, `Realloc(p, 0)` does not
//! free, `Free(NULL)` does nothing, `Calloc` overflow gives NULL.

use core::ffi::{c_char, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::addr_map;
use crate::alloc;
use crate::diag;
use crate::heap;
use crate::stats;

const UNRESOLVED: usize = 0;
const RESOLVING: usize = 1;
const MISSING: usize = 2;

static NEXT_FREE: AtomicUsize = AtomicUsize::new(UNRESOLVED);
static NEXT_REALLOC: AtomicUsize = AtomicUsize::new(UNRESOLVED);

/// The next definition of `name` after ours, resolved once; None if there is none.
#[cold]
fn next_symbol(slot: &AtomicUsize, name: &'static [u8]) -> Option<usize> {
    loop {
        match slot.load(Ordering::Acquire) {
            UNRESOLVED => {
                if slot
                    .compare_exchange(UNRESOLVED, RESOLVING, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    // SAFETY: name is NUL-terminated; RTLD_NEXT searches the objects after ours.
                    let f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr() as *const c_char) }
                        as usize;
                    let v = if f == 0 { MISSING } else { f };
                    slot.store(v, Ordering::Release);
                }
            }
            // Another thread is inside dlsym: it finishes without our help.
            RESOLVING => {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
            MISSING => return None,
            f => return Some(f),
        }
    }
}

const PYOBJECT: usize = heap::call::PYOBJECT;

pub fn malloc(size: usize) -> *mut u8 {
    alloc::malloc_as::<PYOBJECT>(size)
}

pub fn calloc(n: usize, size: usize) -> *mut u8 {
    alloc::calloc_as::<PYOBJECT>(n, size)
}

/// # Safety
/// `p` is null, a live block of ours, or a live block of the replaced implementation.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return alloc::malloc_as::<PYOBJECT>(size);
    }
    heap::count(PYOBJECT);
    if addr_map::lookup(p as usize) == 0 {
        return forward_realloc(p, size);
    }
    // SAFETY: p is ours; CPython never frees on Realloc(p, 0), so resize to at least 1 byte.
    unsafe { alloc::resize(p, size.max(1), "PyObject_Realloc") }
}

/// # Safety
/// `p` is null, a live block of ours, or a live block of the replaced implementation.
pub unsafe fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    if addr_map::lookup(p as usize) == 0 {
        heap::count(PYOBJECT);
        return forward_free(p);
    }
    // SAFETY: p is ours.
    unsafe { alloc::free_as::<PYOBJECT>(p, "PyObject_Free") }
}

#[cold]
fn forward_free(p: *mut u8) {
    let Some(f) = next_symbol(&NEXT_FREE, b"PyObject_Free\0") else {
        diag::fatal(
            "PyObject_Free",
            "invalid pointer (not allocated by poolmalloc, and no other PyObject_Free)",
            p as usize,
        );
    };
    stats::global().pyobject_forwarded.add(1);
    // SAFETY: f is the address of the next PyObject_Free, whose C signature is this.
    let f: extern "C" fn(*mut c_void) = unsafe { core::mem::transmute(f) };
    f(p as *mut c_void)
}

#[cold]
fn forward_realloc(p: *mut u8, size: usize) -> *mut u8 {
    let Some(f) = next_symbol(&NEXT_REALLOC, b"PyObject_Realloc\0") else {
        diag::fatal(
            "PyObject_Realloc",
            "invalid pointer (not allocated by poolmalloc, and no other PyObject_Realloc)",
            p as usize,
        );
    };
    stats::global().pyobject_forwarded.add(1);
    // SAFETY: f is the address of the next PyObject_Realloc, whose C signature is this.
    let f: extern "C" fn(*mut c_void, usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    f(p as *mut c_void, size) as *mut u8
}
