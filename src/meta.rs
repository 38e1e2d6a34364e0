//! Metadata slabs: records the allocator needs for itself (thread heaps, large-block headers)
//! come from mappings of their own, never from the program's pools, and are cut from them one
//! record at a time. A record is touched only when it is handed out, so a process that needs
//! one heap touches one page of the heap slab, not the whole slab. Slabs are never unmapped:
//! their owners recycle records on spare lists of their own.

use core::ptr;

use crate::os;
use crate::stats;

/// The never used records of the last slab mapped, `fresh[..left]`; slabs are `SLAB` bytes.
pub struct Slab<T, const SLAB: usize> {
    fresh: *mut T,
    left: usize,
}

impl<T, const SLAB: usize> Default for Slab<T, SLAB> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const SLAB: usize> Slab<T, SLAB> {
    pub const fn new() -> Self {
        Slab {
            fresh: ptr::null_mut(),
            left: 0,
        }
    }

    /// The next never used record (zero-filled), mapping a new slab when the last one is used
    /// up. Null when the OS refuses memory.
    pub fn take(&mut self) -> *mut T {
        if self.left == 0 {
            let slab = os::map(SLAB, 0) as *mut T;
            if slab.is_null() {
                return ptr::null_mut();
            }
            stats::global().meta_mapped.add(SLAB);
            self.fresh = slab;
            self.left = SLAB / core::mem::size_of::<T>();
        }
        let record = self.fresh;
        // SAFETY: `left > 0` records remain in the slab from `fresh` on, so one past this record
        // is still inside the slab or its end.
        self.fresh = unsafe { record.add(1) };
        self.left -= 1;
        record
    }
}
