//! CPython's object allocator API (`PyObject_Malloc` and friends) on poolmalloc.
//!
//! Preloaded into a CPython whose libpython calls these through the PLT, every object
//! allocation lands here. Some pointers reaching `PyObject_Free`/`PyObject_Realloc` were not
//! allocated by us: libpython may bind its own calls internally, or code may mix the MEM and
//! OBJ domains. The address map (`alloc::owns`) recognises them without touching their
//! memory, and they are passed to the implementation we replaced (the next `PyObject_*` in
//! lookup order), found with `dlsym(RTLD_NEXT, ...)` on first need and never again. `dlsym`
//! may call `calloc`, which is ours and does not come back here, so resolution cannot recurse.
//!
//! Hooks: CPython lets `PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, ...)` replace the object
//! allocator (tracemalloc, `PYTHONMALLOC=debug`, embedders). Interposing `PyObject_*` would
//! silently bypass such a hook, so we interpose `PyMem_SetAllocator` too: it records whether
//! the OBJ domain still holds the allocator it had when first looked at, and while it does
//! not, every `PyObject_*` call goes to libpython's own, which calls the hook. One load and a
//! branch on the `PyObject_*` paths only.
//!
//! Semantics follow CPython: size 0 gives a distinct non-NULL block, `Realloc(p, 0)` does not
//! free, `Free(NULL)` does nothing, `Calloc` overflow gives NULL.

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::alloc;
use crate::diag;
use crate::heap;
use crate::stats;
use crate::sync::Lock;

const UNRESOLVED: usize = 0;
const RESOLVING: usize = 1;
const MISSING: usize = 2;

/// A lazily resolved pointer to the next definition of a symbol.
struct Next {
    slot: AtomicUsize,
    name: &'static [u8],
}

impl Next {
    const fn new(name: &'static [u8]) -> Next {
        Next {
            slot: AtomicUsize::new(UNRESOLVED),
            name,
        }
    }

    /// The next definition after ours, resolved once; None if there is none.
    fn get(&self) -> Option<usize> {
        match self.slot.load(Ordering::Acquire) {
            UNRESOLVED | RESOLVING => self.resolve(),
            MISSING => None,
            f => Some(f),
        }
    }

    #[cold]
    fn resolve(&self) -> Option<usize> {
        loop {
            match self.slot.load(Ordering::Acquire) {
                UNRESOLVED => {
                    if self
                        .slot
                        .compare_exchange(
                            UNRESOLVED,
                            RESOLVING,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        // SAFETY: the name is NUL-terminated; RTLD_NEXT searches the objects
                        // loaded after ours.
                        let f = unsafe {
                            libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr() as *const c_char)
                        } as usize;
                        self.slot
                            .store(if f == 0 { MISSING } else { f }, Ordering::Release);
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

    /// The next definition, or an abort naming `api` and `p` when there is none.
    fn get_or_die(&self, api: &str, p: *mut u8) -> usize {
        match self.get() {
            Some(f) => f,
            None => diag::fatal(
                api,
                "invalid pointer (not allocated by poolmalloc, and no other implementation to pass it to)",
                p as usize,
            ),
        }
    }
}

static NEXT_MALLOC: Next = Next::new(b"PyObject_Malloc\0");
static NEXT_CALLOC: Next = Next::new(b"PyObject_Calloc\0");
static NEXT_REALLOC: Next = Next::new(b"PyObject_Realloc\0");
static NEXT_FREE: Next = Next::new(b"PyObject_Free\0");
static NEXT_SET_ALLOCATOR: Next = Next::new(b"PyMem_SetAllocator\0");
static NEXT_GET_ALLOCATOR: Next = Next::new(b"PyMem_GetAllocator\0");

/// CPython's `PyMemAllocatorEx`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PyMemAllocatorEx {
    pub ctx: *mut c_void,
    pub malloc: usize,
    pub calloc: usize,
    pub realloc: usize,
    pub free: usize,
}

/// CPython's `PYMEM_DOMAIN_OBJ`.
const PYMEM_DOMAIN_OBJ: c_int = 2;

/// Set while the OBJ domain holds an allocator other than the one it first had.
static OBJ_HOOKED: AtomicBool = AtomicBool::new(false);
/// The OBJ domain's allocator when first looked at (CPython's own, normally).
static OBJ_ORIGINAL: Lock<Option<PyMemAllocatorEx>> = Lock::new(None);

#[inline]
fn hooked() -> bool {
    OBJ_HOOKED.load(Ordering::Relaxed)
}

const PYOBJECT: usize = stats::call::PYOBJECT;

pub fn malloc(size: usize) -> *mut u8 {
    if hooked() {
        return forward_malloc(size);
    }
    alloc::malloc_as::<PYOBJECT>(size)
}

pub fn calloc(n: usize, size: usize) -> *mut u8 {
    if hooked() {
        return forward_calloc(n, size);
    }
    alloc::calloc_as::<PYOBJECT>(n, size)
}

/// # Safety
/// `p` is null, a live block of ours, or a live block of the replaced implementation.
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if hooked() || (!p.is_null() && !alloc::owns(p)) {
        return forward_realloc(p, size);
    }
    if p.is_null() {
        return alloc::malloc_as::<PYOBJECT>(size);
    }
    heap::count(PYOBJECT);
    // SAFETY: p is ours; CPython never frees on Realloc(p, 0), so resize to at least 1 byte.
    unsafe { alloc::resize(p, size.max(1), "PyObject_Realloc") }
}

/// # Safety
/// `p` is null, a live block of ours, or a live block of the replaced implementation.
pub unsafe fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    // SAFETY: p is ours or foreign; free_if_ours tells them apart without touching foreign ones.
    if hooked() || !unsafe { alloc::free_if_ours::<PYOBJECT>(p, "PyObject_Free") } {
        forward_free(p);
    }
}

#[cold]
fn forward_malloc(size: usize) -> *mut u8 {
    let f = NEXT_MALLOC.get_or_die("PyObject_Malloc", core::ptr::null_mut());
    // SAFETY: f is the next PyObject_Malloc, whose C signature this is.
    let f: extern "C" fn(usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    f(size) as *mut u8
}

#[cold]
fn forward_calloc(n: usize, size: usize) -> *mut u8 {
    let f = NEXT_CALLOC.get_or_die("PyObject_Calloc", core::ptr::null_mut());
    // SAFETY: f is the next PyObject_Calloc, whose C signature this is.
    let f: extern "C" fn(usize, usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    f(n, size) as *mut u8
}

#[cold]
fn forward_free(p: *mut u8) {
    let f = NEXT_FREE.get_or_die("PyObject_Free", p);
    heap::count(PYOBJECT);
    stats::global().pyobject_forwarded.add(1);
    // SAFETY: f is the next PyObject_Free, whose C signature this is.
    let f: extern "C" fn(*mut c_void) = unsafe { core::mem::transmute(f) };
    f(p as *mut c_void)
}

#[cold]
fn forward_realloc(p: *mut u8, size: usize) -> *mut u8 {
    let f = NEXT_REALLOC.get_or_die("PyObject_Realloc", p);
    heap::count(PYOBJECT);
    stats::global().pyobject_forwarded.add(1);
    // SAFETY: f is the next PyObject_Realloc, whose C signature this is.
    let f: extern "C" fn(*mut c_void, usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    f(p as *mut c_void, size) as *mut u8
}

/// Our `PyMem_SetAllocator`: passes the call on, and notes whether the OBJ domain is hooked.
///
/// # Safety
/// As CPython's: `allocator` points at a valid `PyMemAllocatorEx`.
pub unsafe fn set_allocator(domain: c_int, allocator: *mut PyMemAllocatorEx) {
    let Some(set) = NEXT_SET_ALLOCATOR.get() else {
        // Not inside CPython: there is no allocator to set.
        return;
    };
    // SAFETY: set is the next PyMem_SetAllocator, whose C signature this is.
    let set: extern "C" fn(c_int, *mut PyMemAllocatorEx) = unsafe { core::mem::transmute(set) };
    if domain != PYMEM_DOMAIN_OBJ || allocator.is_null() {
        set(domain, allocator);
        return;
    }
    let mut original = OBJ_ORIGINAL.lock();
    if original.is_none() {
        if let Some(get) = NEXT_GET_ALLOCATOR.get() {
            // SAFETY: get is the next PyMem_GetAllocator, whose C signature this is.
            let get: extern "C" fn(c_int, *mut PyMemAllocatorEx) =
                unsafe { core::mem::transmute(get) };
            let mut now = PyMemAllocatorEx {
                ctx: core::ptr::null_mut(),
                malloc: 0,
                calloc: 0,
                realloc: 0,
                free: 0,
            };
            get(PYMEM_DOMAIN_OBJ, &mut now);
            *original = Some(now);
        }
    }
    set(domain, allocator);
    // SAFETY: the caller passes a valid allocator.
    let new = unsafe { *allocator };
    OBJ_HOOKED.store(*original != Some(new), Ordering::Release);
}

// SAFETY: the raw ctx pointer is only compared, never dereferenced by us.
unsafe impl Send for PyMemAllocatorEx {}
