//! The calling thread's heap pointer, and the hook that runs when the thread exits.
//!
//! Every malloc and free reads this pointer, so its cost is the fast path's floor. Rust's
//! `thread_local!` in a shared library compiles to a call to `__tls_get_addr` (the
//! general-dynamic TLS model), and stable Rust cannot ask for the initial-exec model. On x86-64
//! we therefore declare the slot ourselves in `.tbss` and read it with the initial-exec
//! sequence (`GOTTPOFF` + `%fs`): two loads, no call. A library using initial-exec TLS must be
//! loaded at start-up (preload or link), which is how a malloc replacement is loaded anyway;
//! glibc's manual asks malloc replacements for exactly this model.
//!
//! Thread exit: Rust's TLS destructors register through `__cxa_thread_atexit_impl`, which
//! calls `calloc` — us. Instead the heap is registered with a `pthread_key_create` key, whose
//! destructor runs on thread exit and hands the heap's pools over (`heap::thread_exit`).

use crate::heap::Heap;

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".type poolmalloc_thread_heap,@object",
    ".size poolmalloc_thread_heap,8",
    "poolmalloc_thread_heap:",
    ".zero 8",
    ".popsection",
);

/// The calling thread's heap: null before its first allocation, `heap::DEAD` after it exited.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn heap() -> *mut Heap {
    let h: *mut Heap;
    // SAFETY: reads this thread's slot in our static TLS block; the GOT entry holds its
    // offset from the thread pointer (fs), set by the dynamic loader at load time.
    unsafe {
        core::arch::asm!(
            "mov {off}, qword ptr [rip + poolmalloc_thread_heap@GOTTPOFF]",
            "mov {h}, qword ptr fs:[{off}]",
            off = out(reg) _,
            h = out(reg) h,
            options(nostack, readonly, preserves_flags),
        );
    }
    h
}

/// Sets the calling thread's heap.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn set_heap(h: *mut Heap) {
    // SAFETY: writes this thread's own slot (see `heap`).
    unsafe {
        core::arch::asm!(
            "mov {off}, qword ptr [rip + poolmalloc_thread_heap@GOTTPOFF]",
            "mov qword ptr fs:[{off}], {h}",
            off = out(reg) _,
            h = in(reg) h,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod portable {
    use core::cell::Cell;
    std::thread_local! {
        // A const initialiser and a type without Drop: no lazy init, no destructor registration.
        pub static HEAP: Cell<*mut crate::heap::Heap> = const { Cell::new(core::ptr::null_mut()) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn heap() -> *mut Heap {
    portable::HEAP.with(|h| h.get())
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub fn set_heap(h: *mut Heap) {
    portable::HEAP.with(|c| c.set(h))
}

static mut EXIT_KEY: libc::pthread_key_t = 0;

/// Creates the thread-exit key. Called once, during start-up, before any heap exists.
///
/// # Safety
/// Must run once, before `register_exit` (init's lock guarantees both).
pub unsafe fn create_exit_key() -> bool {
    // SAFETY: EXIT_KEY is written only here, under init's lock, before anyone reads it.
    unsafe { libc::pthread_key_create(&raw mut EXIT_KEY, Some(on_thread_exit)) == 0 }
}

/// Arranges for `h` to be handed over when the calling thread exits.
pub fn register_exit(h: *mut Heap) {
    // SAFETY: the key was created at start-up. pthread_setspecific may call calloc for keys
    // beyond the first 32; the caller sets the TLS heap before this, so that calloc is served.
    unsafe { libc::pthread_setspecific(EXIT_KEY, h as *const libc::c_void) };
}

// Warm code (see lib.rs): only a program whose threads exit runs it.
#[link_section = ".text_warm"]
extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    // SAFETY: the value is the heap this thread registered, and the thread is exiting.
    unsafe { crate::heap::thread_exit(value as *mut Heap) };
}
