//! Size classes: which block size serves a request, and which pool size holds that class.
//!
//! ```text
//!  class   block size              step   pool     blocks/pool
//!   0..31  16, 32, ... 512          16    32 KiB   2048 .. 64   (CPython's classes exactly)
//!  32..39  576 .. 1024            8/2^k  128 KiB    227 .. 128
//!  40..51  1280 .. 8192           4/2^k  128 KiB    102 .. 16
//!  52      8448                       -     1 MiB    124
//!  53..68  10240 .. 131072        4/2^k    1 MiB    102 .. 8
//! ```
//! From 512 bytes to 1 KiB there are eight classes per power of two (quantisation wastes at
//! most 11% of a block), above that four (at most 20%), and one more just above 8 KiB for
//! blocks of 8 KiB and a header. CPython's parser takes its memory in such blocks (`pyarena.c`:
//! 8192 + 32 bytes), and a script run as a file keeps its parser's blocks until it ends: 12
//! to 93 of them in a pyperformance worker, live through the benchmark. In 10 KiB blocks they
//! left 2 KiB resident each (the blocks share their pages), where glibc's heap packs them.
//!
//! The finer steps up to 1 KiB are where most of CPython's live medium blocks are (dict keys,
//! list item arrays, strings: with four per power of two, tracemalloc put their rounding at
//! 125 KiB at the end of nbody's imports, 508 blocks of 960 bytes in 1024-byte ones). Each
//! class has partly used pools of its own, so finer steps cost elsewhere: eight per power of
//! two up to 2 KiB made larson's threads, whose sizes are uniform up to 1 KiB and beyond, 2 to
//! 4% larger, for no more gain in CPython; up to 8 KiB, CPython lost the gain to the carved but
//! unused blocks of the extra classes; up to 4 KiB, pyperformance workers were 15 KiB smaller
//! on average (0.07%, BENCHMARKS.md).
//!
//! Every power of two is a class, and pools start on a multiple of their own size, so a
//! power-of-two block is naturally aligned to its size: that is how `memalign` is served from
//! pools without interior pointers.
//! Requests above `POOLED_MAX` go to their own mapping (see `large`).

/// Requests up to this many bytes use CPython's 16-byte classes.
pub const SMALL_MAX: usize = 512;
/// Number of 16-byte classes (CPython's 32).
pub const NUM_SMALL: usize = SMALL_MAX / 16;
/// The largest request served from a pool.
pub const POOLED_MAX: usize = 128 * 1024;
/// All classes.
pub const NUM_CLASSES: usize = 69;

/// Arenas hold pools of a single size; `PoolKind` says which.
pub const NUM_POOL_KINDS: usize = 3;
/// log2 of each kind's pool size: 32 KiB, 128 KiB, 1 MiB. Small pools are twice CPython's
/// 16 KiB because their descriptors live outside them (128 bytes each, see `pool`): at 32 KiB
/// they cost 0.4% of the pools' memory instead of 0.8%, 27 KiB fewer at the end of a
/// pyperformance worker's imports. 64 KiB saved a little more there but made each thread's
/// partly used pools cost more (8 threads of C++ churn: +8% peak RSS, `scripts/bench.sh`).
pub const POOL_SHIFT: [u32; NUM_POOL_KINDS] = [15, 17, 20];
/// First class of each kind; kind k holds classes `KIND_FIRST_CLASS[k] ..< KIND_FIRST_CLASS[k+1]`.
/// Classes just above 512 get the 128 KiB pools: in 32 KiB pools a 1 KiB class would change
/// pools every 32 blocks, and a batch of them would spend its time on pool transitions.
const KIND_FIRST_CLASS: [usize; NUM_POOL_KINDS] = [0, NUM_SMALL, 52];

/// Requests above this many bytes get a *multi-page* class (blocks of more than two pages, in
/// the 1 MiB pools). A freed block of those keeps its pages while any block of its pool lives,
/// and each class has its own pool, so the heap sweeps their free blocks' pages back to the
/// OS (`heap::alloc_multi_page`).
pub const MULTI_PAGE_ABOVE: usize = 8192;
/// The first multi-page class, whose blocks hold 8 KiB and a header of up to 256 bytes; the
/// classes above it are four per power of two again.
pub const FIRST_MULTI_PAGE_CLASS: usize = KIND_FIRST_CLASS[2];
const FIRST_MULTI_PAGE_SIZE: usize = MULTI_PAGE_ABOVE + MULTI_PAGE_ABOVE / 32;

/// The first *swept medium* class: blocks of 3 KiB up to `MULTI_PAGE_ABOVE`, which cover a
/// page or most of one. Programs often allocate such buffers once (CPython's imports read
/// files through them), and a free one keeps its pages as long as its pool lives: their free
/// blocks rest for a heap tick and then lose their pages (`pool::Pool::rest_free_blocks`).
pub const FIRST_SWEPT_CLASS: usize = 45;

/// Classes with eight per power of two: those above 512 bytes up to `FINE_MAX`.
const NUM_FINE: usize = 8;
/// The largest class of eight per power of two, and its log2.
const FINE_MAX: usize = 1 << FINE_SHIFT;
const FINE_SHIFT: usize = 10;

/// Block size of class `c`.
pub const fn class_size(c: usize) -> usize {
    if c < NUM_SMALL {
        (c + 1) << 4
    } else if c < NUM_SMALL + NUM_FINE {
        let k = c - NUM_SMALL;
        let b = 9 + k / 8;
        (1 << b) + (((k % 8) + 1) << (b - 3))
    } else if c == FIRST_MULTI_PAGE_CLASS {
        FIRST_MULTI_PAGE_SIZE
    } else {
        // Four per power of two, counted without the class just above 8 KiB.
        let k = c - NUM_SMALL - NUM_FINE - (c > FIRST_MULTI_PAGE_CLASS) as usize;
        let b = FINE_SHIFT + k / 4;
        (1 << b) + (((k % 4) + 1) << (b - 2))
    }
}

/// Pool kind holding class `c`.
pub const fn pool_kind(c: usize) -> usize {
    if c >= KIND_FIRST_CLASS[2] {
        2
    } else if c >= KIND_FIRST_CLASS[1] {
        1
    } else {
        0
    }
}

/// Requests up to this size find their class with one table load: every class with steps
/// finer than a power of two's quarter, so the formula above it has no case to tell apart.
pub const SMALL_LOOKUP_MAX: usize = FINE_MAX;

/// Classes for requests of up to `SMALL_LOOKUP_MAX` bytes, indexed by `(n + 15) / 16`.
static SMALL_LOOKUP: [u8; SMALL_LOOKUP_MAX / 16 + 1] = {
    let mut t = [0u8; SMALL_LOOKUP_MAX / 16 + 1];
    let mut i = 1;
    while i <= SMALL_LOOKUP_MAX / 16 {
        let n = i * 16;
        t[i] = class_of_slow(n) as u8;
        i += 1;
    }
    t
};

/// The class serving an `n`-byte request (the smallest class whose block holds `n` bytes).
/// `n == 0` maps to the 16-byte class.
///
/// Precondition: `n <= POOLED_MAX`.
#[inline(always)]
pub fn class_of(n: usize) -> usize {
    debug_assert!(n <= POOLED_MAX);
    if n <= SMALL_LOOKUP_MAX {
        class_of_small(n)
    } else if n <= MULTI_PAGE_ABOVE {
        class_of_medium(n)
    } else {
        class_of_multi_page(n)
    }
}

/// `class_of` for `n <= SMALL_LOOKUP_MAX`.
#[inline(always)]
pub fn class_of_small(n: usize) -> usize {
    debug_assert!(n <= SMALL_LOOKUP_MAX);
    // SAFETY: (n + 15) >> 4 <= SMALL_LOOKUP_MAX / 16 for n <= SMALL_LOOKUP_MAX: in range.
    unsafe { *SMALL_LOOKUP.get_unchecked((n + 15) >> 4) as usize }
}

/// `class_of` for `SMALL_LOOKUP_MAX < n <= MULTI_PAGE_ABOVE`.
#[inline(always)]
pub const fn class_of_medium(n: usize) -> usize {
    debug_assert!(n > SMALL_LOOKUP_MAX && n <= MULTI_PAGE_ABOVE);
    four_per_power_of_two(n)
}

/// `class_of` for `MULTI_PAGE_ABOVE < n <= POOLED_MAX`.
#[inline(always)]
pub const fn class_of_multi_page(n: usize) -> usize {
    debug_assert!(n > MULTI_PAGE_ABOVE && n <= POOLED_MAX);
    if n <= FIRST_MULTI_PAGE_SIZE {
        FIRST_MULTI_PAGE_CLASS
    } else {
        four_per_power_of_two(n) + 1
    }
}

/// Four classes per power of two above `FINE_MAX`, numbered as if there were no class just
/// above 8 KiB.
#[inline(always)]
const fn four_per_power_of_two(n: usize) -> usize {
    let m = n - 1;
    let b = (usize::BITS - 1 - m.leading_zeros()) as usize; // floor(log2(n - 1)) >= FINE_SHIFT
    NUM_SMALL + NUM_FINE + (b - FINE_SHIFT) * 4 + ((m >> (b - 2)) & 3)
}

/// The formula behind `class_of`, usable in constant evaluation (it builds the table).
const fn class_of_slow(n: usize) -> usize {
    if n <= SMALL_MAX {
        if n == 0 {
            0
        } else {
            (n - 1) >> 4
        }
    } else if n <= FINE_MAX {
        let m = n - 1;
        let b = (usize::BITS - 1 - m.leading_zeros()) as usize; // 9 to FINE_SHIFT - 1
        NUM_SMALL + (b - 9) * 8 + ((m >> (b - 3)) & 7)
    } else if n <= MULTI_PAGE_ABOVE {
        class_of_medium(n)
    } else {
        class_of_multi_page(n)
    }
}

// Compile-time checks of the table's promises.
const _: () = {
    assert!(class_size(NUM_SMALL - 1) == SMALL_MAX);
    assert!(class_size(NUM_CLASSES - 1) == POOLED_MAX);
    assert!(class_size(NUM_SMALL + NUM_FINE - 1) == FINE_MAX);
    assert!(class_size(FIRST_MULTI_PAGE_CLASS - 1) == MULTI_PAGE_ABOVE);
    assert!(class_size(FIRST_MULTI_PAGE_CLASS + 1) == MULTI_PAGE_ABOVE + MULTI_PAGE_ABOVE / 4);
    // CPython's parser blocks (8192 + 32 bytes) fit the class just above 8 KiB.
    assert!(class_of_multi_page(8192 + 32) == FIRST_MULTI_PAGE_CLASS);
    assert!(class_size(FIRST_SWEPT_CLASS) == 3072 && class_size(FIRST_SWEPT_CLASS - 1) < 3072);
    // The discarded set of a pool has 128 bits (`pool::DISCARDED_SET_BITS`).
    assert!((1 << POOL_SHIFT[1]) / class_size(FIRST_SWEPT_CLASS) <= 128);
    assert!((1 << POOL_SHIFT[2]) / class_size(FIRST_MULTI_PAGE_CLASS) <= 128);
    assert!(class_size(FIRST_MULTI_PAGE_CLASS) > 2 * crate::os::PAGE_SIZE);
    // Every kind's pool holds at least 8 blocks of its largest class.
    assert!((1 << POOL_SHIFT[0]) / class_size(NUM_SMALL - 1) >= 8);
    assert!((1 << POOL_SHIFT[1]) / class_size(FIRST_MULTI_PAGE_CLASS - 1) >= 8);
    assert!((1 << POOL_SHIFT[2]) / class_size(NUM_CLASSES - 1) >= 8);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_fitting_class() {
        for n in 0..=POOLED_MAX {
            let c = class_of(n);
            assert!(c < NUM_CLASSES);
            assert!(class_size(c) >= n.max(1), "n={n} c={c}");
            if c > 0 {
                assert!(class_size(c - 1) < n, "n={n} c={c} is not the smallest");
            }
        }
    }

    #[test]
    fn small_classes_are_cpythons() {
        for c in 0..NUM_SMALL {
            assert_eq!(class_size(c), (c + 1) * 16);
            assert_eq!(class_of(class_size(c)), c);
        }
        assert_eq!(class_of(513), NUM_SMALL);
        assert_eq!(class_size(NUM_SMALL), 576);
    }

    #[test]
    fn sizes_increase_and_stay_16_aligned() {
        for c in 1..NUM_CLASSES {
            assert!(class_size(c) > class_size(c - 1));
            assert_eq!(class_size(c) % 16, 0);
        }
    }

    #[test]
    fn quantisation_is_at_most_a_ninth_up_to_1k_and_a_fifth_above() {
        for c in NUM_SMALL + 1..NUM_CLASSES {
            let waste = class_size(c) - class_size(c - 1) - 1;
            if class_size(c) <= FINE_MAX {
                assert!(waste * 9 <= class_size(c), "class {c}");
            } else {
                assert!(waste * 5 <= class_size(c), "class {c}");
            }
        }
    }

    #[test]
    fn the_lookup_table_and_the_formula_agree() {
        for n in 0..=SMALL_LOOKUP_MAX {
            assert_eq!(class_of_small(n), class_of_slow(n), "n={n}");
        }
        for n in SMALL_LOOKUP_MAX + 1..=POOLED_MAX {
            assert_eq!(class_of(n), class_of_slow(n), "n={n}");
        }
    }

    /// A block of 8 KiB and a small header (CPython's parser blocks are 8192 + 32 bytes, its
    /// bytes objects of 8 KiB 8192 + 33) loses at most 256 bytes to rounding, not 2 KiB.
    #[test]
    fn blocks_of_8k_and_a_header_lose_little() {
        for header in [1, 32, 33, 64, 256] {
            let n = 8192 + header;
            assert!(
                class_size(class_of(n)) - n < 256,
                "n={n}: class {}",
                class_size(class_of(n))
            );
        }
        assert_eq!(class_size(class_of(8192 + 257)), 10240);
    }

    #[test]
    fn powers_of_two_are_classes() {
        let mut p = 16;
        while p <= POOLED_MAX {
            assert_eq!(class_size(class_of(p)), p);
            p *= 2;
        }
    }

    #[test]
    fn kinds_are_contiguous() {
        for c in 1..NUM_CLASSES {
            assert!(pool_kind(c) >= pool_kind(c - 1));
        }
        assert_eq!(pool_kind(0), 0);
        assert_eq!(pool_kind(NUM_CLASSES - 1), NUM_POOL_KINDS - 1);
    }
}
