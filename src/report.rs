//! The statistics report printed at exit when `POOLMALLOC_STATS` asks for it.

/// Called from the library constructor.
pub fn on_load() {}
