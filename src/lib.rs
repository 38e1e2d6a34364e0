//! # poolmalloc
//!
//! A malloc replacement built on CPython's obmalloc design (arenas → pools → blocks), made
//! general: thread-safe without a global lock, sizes beyond 512 bytes, alignment, and memory
//! returned to the OS under a long-running program's churn.
//!
//! ## The picture
//! ```text
//!  address map (radix tree, 4 MiB chunks) ──▶ arena header (out of band)
//!                                               │ pools[i] descriptors
//!  arena: 4 MiB, 4 MiB-aligned mapping          ▼
//!  ┌──────────┬──────────┬──────────┬─────┬──────────┐
//!  │ pool 0   │ pool 1   │ pool 2   │ ... │ pool N-1 │   pools of one size: 32K/128K/1M
//!  └──────────┴──────────┴──────────┴─────┴──────────┘
//!  pool: ┌────┬────┬────┬────┬───────────────────────┐
//!        │blk │blk │blk │blk │ not yet carved        │   blocks of one size class
//!        └────┴────┴────┴────┴───────────────────────┘
//!  large block (> 128 KiB): its own chunk-aligned mapping, header out of band
//! ```
//! Size classes (`size_class`): CPython's 32 classes of 16 bytes up to 512 in 32 KiB pools,
//! then eight per power of two up to 1 KiB and four up to 128 KiB (and one at 8 KiB + 256, for
//! blocks of 8 KiB and a header), in pools of 128 KiB (up to 8 KiB) or 1 MiB.
//!
//! ## Threads
//! Each thread owns a heap (`heap`) holding, per class, a list of pools it allocates from.
//! malloc pops the head pool's free list and free pushes on it: plain loads and stores, no
//! lock, no atomic read-modify-write. Freed blocks come before new pages, as in pymalloc: a
//! head that would fault in a page to carve more blocks hands over to a pool behind it that
//! has free blocks (`heap::refill_and_pop`). A block freed by another thread goes on its pool's
//! atomic `thread_free` list (`remote`), which the owner collects in bulk on its slow path.
//! When a thread exits, its pools with live blocks are abandoned to a global list and adopted
//! by heaps that need pools of that class; empty ones go back to their arena.
//!
//! ## Pool states (see `pool`)
//! Free (in its arena) → Avail (in a heap's class list) ⇄ Full (in the heap's full list);
//! Avail/Full → Abandoned when the owner exits → Avail when adopted; Avail → Free when the
//! last block comes back, unless it is the pool being allocated from or the heap keeps it
//! (up to 1 MiB of emptied pools, so that a freed batch refills without the arena lock; a
//! kept pool's free list is relinked in address order, so the order of frees does not
//! scatter the next allocations).
//!
//! ## Memory back to the OS (`arena`, `large`, `heap`)
//! Idle memory (free pools whose pages are still resident, *dirty*; emptied pools heaps keep,
//! and the empty pool each class allocates from; freed large blocks kept for reuse) is
//! discarded with `MADV_DONTNEED` once it has been idle
//! for `POOLMALLOC_PURGE_DELAY` (10 ms): each heap checks at most every 2 ms, when a class
//! needs a new pool and every 4096 calls of one kind (`heap::tick`).
//! `POOLMALLOC_PURGE_BYTES` (2 MiB) bounds it in between: past the bound free pools go without
//! waiting, past four times it all of them. And a program that grows past its high-water mark
//! (a pool whose pages are not resident, or a fresh large mapping, takes the bytes held to a
//! new high) first drops the idle memory of other pool sizes, which that growth cannot reuse,
//! when there is at least 64 KiB of it, at most once per purge delay
//! (`heap::drop_idle_at_new_peak`): glibc's freed chunks serve any size, ours only their own
//! pool size, and the peak should not hold both. An arena
//! whose pools are all free is unmapped (one is kept in reserve); `malloc_trim(0)` gives back
//! everything.
//! Blocks over 8 KiB span pages and each size has its own pools, so a freed one would stay
//! resident while its pool lives: the heap that owns them gives their pages back (the block
//! moves from the free list to a bitmap in the pool descriptor, so the first page goes too)
//! at its free when its size is not in reuse (`heap::free_multi_page`: such pools carry a
//! tagged owner word, so only their frees leave the fast path), else in sweeps
//! (`heap::alloc_multi_page`, at most every 2 ms) once it has stayed free from one sweep to
//! the next, so a block the program keeps reusing keeps its pages; and a request over 8 KiB
//! takes a free block up to two classes larger before carving a new one.
//! Blocks of 3 to 8 KiB cover a page or most of one, and programs often use them once (file
//! buffers): at each tick their free lists go to rest, off the malloc fast path; a refill
//! takes from the resting blocks before carving, and those still resting at the next tick
//! lose their pages into the same bitmap (`heap::sweep_resting`). Their frees stay on the
//! fast path: only while a pool's bitmap holds blocks does its owner word carry the tag that
//! sends its frees to the checked path, and a loop that keeps freeing into such a pool gets
//! its blocks back at once.
//!
//! ## Bad pointers
//! The address map tells our memory from anyone else's without touching the pointer's memory;
//! a pointer that does not start a carved block, or a block that already carries the freed-key,
//! aborts with a message naming the function and the address.
//!
//! ## Layering (a module calls only those to its right)
//! `ffi` → `pyobject` → `alloc` → `heap` ⇄ `remote` → `large`, `arena` → `pool` → `addr_map`
//! → `size_class`. `heap` and `remote` are one layer: a heap hands its pools to `remote` when
//! its thread exits, and `remote` asks `heap` to release pools and to hint their owners.
//! `report` and `init` (start-up, fork) read from every layer; `stats`, `options`, `tls`,
//! `sync`, `diag`, `meta` (the region heaps, large and arena headers are cut from) and `os`
//! serve all of them.
//! Only `os` makes system calls (and `init`/`tls` the pthread registrations, `pyobject` its
//! one `dlsym`).

// The library's code pages are resident in every process that loads it, a segment at a time
// (the kernel maps up to 64 KiB around each fault). Functions a process normally never runs
// (the statistics report, diagnostics, fork handlers, malloc_trim) are marked
// `#[link_section = ".text_rarely_run"]`, which build.rs puts in a segment of its own, so
// marking a function that does run costs residency (c-tests/code_residency.c). Text only the
// report reads is `diag::rarely_read!` data, which build.rs keeps out of the mapped pages too.
// Code that only threads or aligned allocations run (thread exit, frees from another thread,
// abandoned pools, `alloc::aligned`) is `.text_warm`, a segment of one page: a
// single-threaded program that never asks for an alignment keeps it out of its resident set
// (and the code it does run fits eight pages instead of nine), while any other program maps
// that one page instead, so it pays nothing more. For the same reason, helpers that several
// slow paths call (the statistics gauges, the lock's wait loop, list and record upkeep) are
// `#[inline(never)]`: every inlined copy is code each process keeps resident, and
// scripts/c-tests.sh wants the code that always runs within eight pages.
//
// On x86-64 the library needs nothing from `std`: without it the shared object is a third of
// the size and does not pull in libgcc_s (std's unwinder), which a process would otherwise
// map for us alone, and no std code that might allocate can run inside malloc. Elsewhere the
// heap pointer's TLS falls back to `std::thread_local!` (see `tls`). Unit tests use std.
#![cfg_attr(all(not(test), target_arch = "x86_64"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::missing_safety_doc)]

pub mod addr_map;
pub mod alloc;
pub mod arena;
pub mod diag;
pub mod ffi;
pub mod heap;
pub mod init;
pub mod large;
pub mod meta;
pub mod options;
pub mod os;
pub mod pool;
pub mod pyobject;
pub mod remote;
pub mod report;
pub mod size_class;
pub mod stats;
pub mod sync;
pub mod tls;
