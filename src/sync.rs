//! The one lock type of poolmalloc's slow paths, and its fork discipline.
//!
//! A spin lock (the `spin` crate) that yields the CPU while it waits: a pthread mutex could
//! allocate on some platforms and cannot be reset in a forked child, and pure spinning burns
//! the time slice of the very thread holding the lock when 32 threads share 2 cores.
//! No lock is ever taken on the malloc/free fast path.

use spin::mutex::{SpinMutex, SpinMutexGuard};
use spin::RelaxStrategy;

/// Spin briefly, then yield: contention here is rare and short unless the holder is
/// preempted, in which case only yielding lets it run.
pub struct SpinThenYield;

impl RelaxStrategy for SpinThenYield {
    #[inline]
    fn relax() {
        // SAFETY: sched_yield has no preconditions and never allocates.
        unsafe { libc::sched_yield() };
    }
}

pub struct Lock<T>(SpinMutex<T, SpinThenYield>);

pub type LockGuard<'a, T> = SpinMutexGuard<'a, T, SpinThenYield>;

impl<T> Lock<T> {
    pub const fn new(value: T) -> Self {
        Lock(SpinMutex::new(value))
    }

    /// The lock if it is free now, None if someone holds it.
    #[inline]
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        self.0.try_lock()
    }

    /// One compare-and-swap inline; the wait loop out of line, so that the dozen slow paths
    /// that take a lock do not each carry a copy of it.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_, T> {
        match self.0.try_lock_weak() {
            Some(guard) => guard,
            None => self.lock_contended(),
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> LockGuard<'_, T> {
        self.0.lock()
    }

    /// Takes the lock and keeps it without a guard, so that no other thread holds it while
    /// `fork` copies the address space.
    pub fn hold_for_fork(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by `hold_for_fork`.
    ///
    /// # Safety
    /// The lock must have been taken by `hold_for_fork` in this process (or, in a fork child,
    /// in the parent before `fork`), and no guard of it may be alive.
    pub unsafe fn release_after_fork(&self) {
        // SAFETY: forwarded contract: the lock is held and has no guard.
        unsafe { self.0.force_unlock() };
    }

    /// The protected value without locking.
    ///
    /// # Safety
    /// Only where no other thread can touch it (single-threaded start-up, or while the lock is
    /// held for fork).
    pub unsafe fn get_unlocked(&self) -> *mut T {
        self.0.as_mut_ptr()
    }
}
