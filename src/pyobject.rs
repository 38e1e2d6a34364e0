//! CPython's allocator API on poolmalloc: the object domain (`PyObject_Malloc` and friends)
//! and the mem domain (`PyMem_Malloc` and friends), which CPython serves with the same
//! allocator, pymalloc, and the same semantics.
//!
//! Preloaded into a CPython whose libpython calls these through the PLT, every object and
//! mem-domain allocation lands here, and pymalloc is not used at all (interposing only the
//! object domain would leave pymalloc running beside us for `PyMem_Malloc`'s blocks, with its
//! own arenas and its own partly used pools). Some pointers reaching `Free`/`Realloc` were not
//! allocated by us: libpython may bind its own calls internally, or blocks may date from a
//! time a hook was installed. The address map recognises them without touching their memory
//! (`alloc::free_or_hand_over`, `alloc::resize_unless_foreign`), and they are passed to the
//! implementation we replaced (the next definition in lookup order), found with
//! `dlsym(RTLD_NEXT, ...)` on first need and never again. `dlsym` may call `calloc`, which is
//! ours and does not come back here, so resolution cannot recurse.
//!
//! Hooks: CPython lets `PyMem_SetAllocator` replace a domain's allocator (tracemalloc,
//! `PYTHONMALLOC=debug`/`malloc`, embedders). Interposing the functions would silently bypass
//! such a hook, so we interpose `PyMem_SetAllocator` too: it records, per domain, whether the
//! domain still holds the allocator it had when first looked at, and while it does not, every
//! call of that domain goes to libpython's own function, which calls the hook. One load and a
//! branch on these paths only.
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

/// CPython's `PYMEM_DOMAIN_MEM` and `PYMEM_DOMAIN_OBJ`.
const PYMEM_DOMAIN_MEM: c_int = 1;
const PYMEM_DOMAIN_OBJ: c_int = 2;

/// One interposed allocator domain; `CALL` is the statistics counter its calls bump.
pub struct Domain<const CALL: usize> {
    id: c_int,
    /// The next definitions of those four (libpython's).
    next: [Next; 4],
    /// Set while the domain holds an allocator other than the one it first had.
    hooked: AtomicBool,
    /// The domain's allocator when first looked at (CPython's own, normally).
    original: Lock<Option<PyMemAllocatorEx>>,
}

const MALLOC: usize = 0;
const CALLOC: usize = 1;
const REALLOC: usize = 2;
const FREE: usize = 3;

pub static OBJ: Domain<{ stats::call::PYOBJECT }> = Domain {
    id: PYMEM_DOMAIN_OBJ,
    next: [
        Next::new(b"PyObject_Malloc\0"),
        Next::new(b"PyObject_Calloc\0"),
        Next::new(b"PyObject_Realloc\0"),
        Next::new(b"PyObject_Free\0"),
    ],
    hooked: AtomicBool::new(false),
    original: Lock::new(None),
};

pub static MEM: Domain<{ stats::call::PYMEM }> = Domain {
    id: PYMEM_DOMAIN_MEM,
    next: [
        Next::new(b"PyMem_Malloc\0"),
        Next::new(b"PyMem_Calloc\0"),
        Next::new(b"PyMem_Realloc\0"),
        Next::new(b"PyMem_Free\0"),
    ],
    hooked: AtomicBool::new(false),
    original: Lock::new(None),
};

/// The `forward_free` of the domain whose calls count as `CALL`, as a plain function for
/// `alloc::free_or_hand_over`.
fn forward_free<const CALL: usize>(p: *mut u8) {
    if CALL == stats::call::PYOBJECT {
        OBJ.forward_free(p)
    } else {
        MEM.forward_free(p)
    }
}

static NEXT_SET_ALLOCATOR: Next = Next::new(b"PyMem_SetAllocator\0");
static NEXT_GET_ALLOCATOR: Next = Next::new(b"PyMem_GetAllocator\0");

impl<const CALL: usize> Domain<CALL> {
    /// The C names of malloc, calloc, realloc and free in this domain, for messages. A constant,
    /// not a field: the fast paths would otherwise load the names from the static (writable,
    /// for its atomics) before every branch that might need them.
    const NAMES: [&'static str; 4] = if CALL == stats::call::PYOBJECT {
        [
            "PyObject_Malloc",
            "PyObject_Calloc",
            "PyObject_Realloc",
            "PyObject_Free",
        ]
    } else {
        [
            "PyMem_Malloc",
            "PyMem_Calloc",
            "PyMem_Realloc",
            "PyMem_Free",
        ]
    };

    #[inline]
    fn hooked(&self) -> bool {
        self.hooked.load(Ordering::Relaxed)
    }

    pub fn malloc(&self, size: usize) -> *mut u8 {
        if self.hooked() {
            return self.forward_malloc(size);
        }
        alloc::malloc_as::<CALL>(size)
    }

    pub fn calloc(&self, n: usize, size: usize) -> *mut u8 {
        if self.hooked() {
            return self.forward_calloc(n, size);
        }
        alloc::calloc_as::<CALL>(n, size)
    }

    /// # Safety
    /// `p` is null, a live block of ours, or a live block of the replaced implementation.
    pub unsafe fn realloc(&self, p: *mut u8, size: usize) -> *mut u8 {
        if self.hooked() {
            return self.forward_realloc(p, size);
        }
        if p.is_null() {
            return alloc::malloc_as::<CALL>(size);
        }
        // SAFETY: p is ours or foreign, which the core tells apart with one lookup, touching
        // nothing foreign; CPython never frees on Realloc(p, 0), so resize to at least 1 byte.
        match unsafe { alloc::resize_unless_foreign(p, size.max(1), Self::NAMES[REALLOC]) } {
            Some(q) => {
                heap::count(CALL);
                q
            }
            None => self.forward_realloc(p, size),
        }
    }

    /// # Safety
    /// `p` is null, a live block of ours, or a live block of the replaced implementation.
    pub unsafe fn free(&self, p: *mut u8) {
        if p.is_null() {
            return;
        }
        if self.hooked() {
            return self.forward_free(p);
        }
        // SAFETY: p is ours or foreign; the core tells them apart without touching foreign
        // ones, which go to the implementation we replaced.
        unsafe { alloc::free_or_hand_over::<CALL>(p, Self::NAMES[FREE], forward_free::<CALL>) }
    }

    // The forwarders are rarely run code (see lib.rs): only a program that hooks the domain
    // (tracemalloc) or hands us another allocator's blocks runs them.
    #[cold]
    #[link_section = ".text_rarely_run"]
    fn forward_malloc(&self, size: usize) -> *mut u8 {
        let f = self.next[MALLOC].get_or_die(Self::NAMES[MALLOC], core::ptr::null_mut());
        // SAFETY: f is the next definition of this domain's malloc, whose C signature this is.
        let f: extern "C" fn(usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
        f(size) as *mut u8
    }

    #[cold]
    #[link_section = ".text_rarely_run"]
    fn forward_calloc(&self, n: usize, size: usize) -> *mut u8 {
        let f = self.next[CALLOC].get_or_die(Self::NAMES[CALLOC], core::ptr::null_mut());
        // SAFETY: f is the next definition of this domain's calloc, whose C signature this is.
        let f: extern "C" fn(usize, usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
        f(n, size) as *mut u8
    }

    #[cold]
    #[link_section = ".text_rarely_run"]
    fn forward_free(&self, p: *mut u8) {
        let f = self.next[FREE].get_or_die(Self::NAMES[FREE], p);
        heap::count(CALL);
        stats::global().pyobject_forwarded.add(1);
        // SAFETY: f is the next definition of this domain's free, whose C signature this is.
        let f: extern "C" fn(*mut c_void) = unsafe { core::mem::transmute(f) };
        f(p as *mut c_void)
    }

    #[cold]
    #[link_section = ".text_rarely_run"]
    fn forward_realloc(&self, p: *mut u8, size: usize) -> *mut u8 {
        let f = self.next[REALLOC].get_or_die(Self::NAMES[REALLOC], p);
        heap::count(CALL);
        stats::global().pyobject_forwarded.add(1);
        // SAFETY: f is the next definition of this domain's realloc, whose C signature this is.
        let f: extern "C" fn(*mut c_void, usize) -> *mut c_void =
            unsafe { core::mem::transmute(f) };
        f(p as *mut c_void, size) as *mut u8
    }

    /// Notes the allocator CPython's `PyMem_SetAllocator` is about to install on this domain
    /// (`set` installs it): hooked when it is not the domain's first one.
    fn install(&self, new: PyMemAllocatorEx, set: impl FnOnce()) {
        let mut original = self.original.lock();
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
                get(self.id, &mut now);
                *original = Some(now);
            }
        }
        set();
        self.hooked.store(*original != Some(new), Ordering::Release);
    }
}

/// Our `PyMem_SetAllocator`: passes the call on, and notes whether the MEM or OBJ domain is
/// hooked.
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
    if allocator.is_null() {
        set(domain, allocator);
        return;
    }
    // SAFETY: the caller passes a valid allocator.
    let new = unsafe { *allocator };
    match domain {
        PYMEM_DOMAIN_OBJ => OBJ.install(new, || set(domain, allocator)),
        PYMEM_DOMAIN_MEM => MEM.install(new, || set(domain, allocator)),
        _ => set(domain, allocator),
    }
}

// SAFETY: the raw ctx pointer is only compared, never dereferenced by us.
unsafe impl Send for PyMemAllocatorEx {}
