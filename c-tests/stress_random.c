/* stress_random.c - proves that a long single-threaded random sequence of malloc/calloc/
 * memalign/realloc/free never hands out overlapping memory and never loses contents: every live
 * block (a table of 10k slots) carries a pattern derived from its slot and a generation counter,
 * verified in full before every free and realloc (realloc must keep the common prefix), and all
 * blocks are verified once more at the end.  Sizes are skewed small, some up to 1 MiB and an
 * occasional 4 MiB.  Fixed seed (printed; argv[1] overrides, argv[2] sets the op count). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define SLOTS 10000

struct slot {
    unsigned char *p;
    size_t n;
    uint64_t tag;
};

static struct slot slots[SLOTS];

static unsigned char byte_of(uint64_t tag)
{
    uint64_t h = tag * 0x9E3779B97F4A7C15ULL;
    return (unsigned char)(h >> 56);
}

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = rng_next(rng) % 10000;
    if (r < 8500)
        return rng_logsize(rng, 0, 512);
    if (r < 9700)
        return rng_logsize(rng, 513, 64 << 10);
    if (r < 9990)
        return rng_logsize(rng, (64 << 10) + 1, 1 << 20);
    return (4 << 20) + rng_range(rng, 0, 4096) - 2048;
}

static void verify(size_t i, const char *when)
{
    struct slot *s = &slots[i];
    size_t bad = pat_check(s->p, s->n, s->tag, byte_of(s->tag), s->n);
    CHECK(bad == (size_t)-1,
          "slot %zu (%p, %zu bytes, tag %#llx) corrupted at offset %zu before %s: got %#x", i,
          (void *)s->p, s->n, (unsigned long long)s->tag, bad, when, s->p[bad]);
}

int main(int argc, char **argv)
{
    require_allocator_active();
    unsigned long long seed = argc > 1 ? strtoull(argv[1], NULL, 0) : 20240601ULL;
    long ops = argc > 2 ? strtol(argv[2], NULL, 0) : 500000;
    printf("stress_random: seed %llu, %ld ops\n", seed, ops);
    fflush(stdout);
    uint64_t rng = rng_seed(seed);
    uint64_t gen = 0;
    size_t live = 0, peak = 0;
    unsigned long n_malloc = 0, n_calloc = 0, n_memalign = 0, n_realloc = 0, n_free = 0;

    for (long op = 0; op < ops; op++) {
        size_t i = (size_t)(rng_next(&rng) % SLOTS);
        struct slot *s = &slots[i];
        uint64_t r = rng_next(&rng) % 100;
        if (s->p == NULL) {
            size_t n = pick_size(&rng);
            unsigned char *p;
            if (r < 10) {
                p = opaque(calloc(1, n));
                CHECK(p != NULL, "calloc(1, %zu) failed", n);
                CHECK(all_zero(p, n), "calloc(1, %zu) = %p not zeroed (op %ld)", n, (void *)p,
                      op);
                n_calloc++;
            } else if (r < 13) {
                size_t a = (size_t)16 << rng_range(&rng, 0, 8);
                p = memalign(a, n);
                CHECK(p != NULL, "memalign(%zu, %zu) failed", a, n);
                CHECK(is_aligned(p, a), "memalign(%zu, %zu) = %p misaligned", a, n, (void *)p);
                n_memalign++;
            } else {
                p = malloc(n);
                CHECK(p != NULL, "malloc(%zu) failed", n);
                n_malloc++;
            }
            CHECK(is_aligned(p, 16), "block %p (size %zu) not 16-byte aligned", (void *)p, n);
            CHECK(malloc_usable_size(p) >= n, "usable size %zu < %zu", malloc_usable_size(p), n);
            s->p = p;
            s->n = n;
            s->tag = ((uint64_t)i << 40) | ++gen;
            pat_fill(p, n, s->tag, byte_of(s->tag));
            live += n;
        } else if (r < 55) {
            verify(i, "free");
            free(s->p);
            live -= s->n;
            s->p = NULL;
            n_free++;
        } else {
            verify(i, "realloc");
            size_t n = pick_size(&rng);
            unsigned char *p = realloc(s->p, n);
            if (n == 0) {
                /* glibc semantics: realloc(p, 0) frees p and returns NULL */
                CHECK(p == NULL, "realloc(%p, 0) returned %p", (void *)s->p, (void *)p);
                live -= s->n;
                s->p = NULL;
                n_realloc++;
                continue;
            }
            CHECK(p != NULL, "realloc(%p, %zu) failed", (void *)s->p, n);
            CHECK(is_aligned(p, 16), "realloc result %p not aligned", (void *)p);
            CHECK(malloc_usable_size(p) >= n, "realloc usable size %zu < %zu",
                  malloc_usable_size(p), n);
            size_t keep = n < s->n ? n : s->n;
            size_t bad = pat_check(p, s->n, s->tag, byte_of(s->tag), keep);
            CHECK(bad == (size_t)-1, "realloc %zu -> %zu (%p -> %p) lost content at offset %zu",
                  s->n, n, (void *)s->p, (void *)p, bad);
            live = live - s->n + n;
            s->p = p;
            s->n = n;
            s->tag = ((uint64_t)i << 40) | ++gen;
            pat_fill(p, n, s->tag, byte_of(s->tag));
            n_realloc++;
        }
        if (live > peak)
            peak = live;
    }
    size_t still = 0;
    for (size_t i = 0; i < SLOTS; i++) {
        if (slots[i].p) {
            verify(i, "final free");
            still++;
        }
    }
    for (size_t i = 0; i < SLOTS; i++)
        free(slots[i].p);
    printf("stress_random: ok: %lu malloc, %lu calloc, %lu memalign, %lu realloc, %lu free, "
           "%zu live at end, peak %.1f MiB live\n",
           n_malloc, n_calloc, n_memalign, n_realloc, n_free, still, peak / 1048576.0);
    return 0;
}
