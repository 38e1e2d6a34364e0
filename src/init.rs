//! Process start-up and fork.
//!
//! `malloc` may run before any constructor (the dynamic loader and libc call it early), so the
//! allocator initialises lazily on the first slow path (`ensure`), under a lock, doing nothing
//! that allocates: check the page size and create the thread-exit key.
//! The library constructor then reads the options and registers the fork handlers and the
//! exit-time report, which may allocate (we are ready by then).
//!
//! Fork: every allocator lock is taken before `fork` and released in both parent and child, so
//! the child never inherits a lock held by a thread that does not exist there. The child then
//! hands over the heaps of the threads it lost, so their pools are reusable.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::sync::Lock;

const UNINIT: u8 = 0;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_LOCK: Lock<()> = Lock::new(());

#[inline]
pub fn ensure() {
    if STATE.load(Ordering::Acquire) != READY {
        init_slow();
    }
}

#[cold]
fn init_slow() {
    let _g = INIT_LOCK.lock();
    if STATE.load(Ordering::Relaxed) == READY {
        return;
    }
    if crate::os::kernel_page_size() != crate::os::PAGE_SIZE {
        crate::diag::internal_error("poolmalloc is built for 4 KiB pages");
    }
    // SAFETY: runs once, under INIT_LOCK, before any heap registers for thread exit.
    if !unsafe { crate::tls::create_exit_key() } {
        crate::diag::internal_error("pthread_key_create failed");
    }
    STATE.store(READY, Ordering::Release);
}

#[ctor::ctor(unsafe)]
fn on_load() {
    ensure();
    // A panic is a bug in poolmalloc. Without std, `diag`'s panic handler reports it; with
    // std, the default hook may allocate (it reads RUST_BACKTRACE into a String) from inside
    // malloc, so ours prints from a stack buffer, then the profile's `panic = "abort"` aborts.
    // Installing it allocates once, here, where that is safe.
    #[cfg(any(test, not(target_arch = "x86_64")))]
    std::panic::set_hook(std::boxed::Box::new(|info| {
        let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
        let payload = info.payload();
        let message = payload.downcast_ref::<&str>().copied().or_else(|| {
            payload
                .downcast_ref::<std::string::String>()
                .map(|s| s.as_str())
        });
        crate::diag::report_panic(file, line, message)
    }));
    crate::options::load();
    // SAFETY: the handlers are plain functions that only take and release our locks.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        )
    };
    crate::report::on_load();
}

#[link_section = ".text_rarely_run"]
extern "C" fn before_fork() {
    // Lock order: heap registry (and orphan), abandoned list, arenas, large headers, map,
    // metadata region.
    crate::heap::lock_for_fork();
    crate::remote::lock_for_fork();
    crate::arena::lock_for_fork();
    crate::large::lock_for_fork();
    crate::addr_map::lock_for_fork();
    crate::meta::lock_for_fork();
}

fn release_all() {
    // SAFETY: before_fork took every one of these locks in this thread (or, in the child, in
    // the thread that became the child's only thread).
    unsafe {
        crate::meta::unlock_after_fork();
        crate::addr_map::unlock_after_fork();
        crate::large::unlock_after_fork();
        crate::arena::unlock_after_fork();
        crate::remote::unlock_after_fork();
        crate::heap::unlock_after_fork();
    }
}

#[link_section = ".text_rarely_run"]
extern "C" fn after_fork_parent() {
    release_all();
}

#[link_section = ".text_rarely_run"]
extern "C" fn after_fork_child() {
    release_all();
    // SAFETY: we are the child's only thread and every lock is free.
    unsafe { crate::heap::after_fork_child() };
}
