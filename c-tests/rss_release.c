/* rss_release.c - proves that memory freed by the program goes back to the operating system:
 * allocate ~200 MiB in mixed small (<= 512 B), medium (<= 128 KiB) and large (<= 4 MiB) blocks,
 * touch every byte, free everything in random order and check that the resident set size falls
 * back near the baseline; then repeat followed by malloc_trim(0) and check a tighter bound.
 *
 * Expectations per mode (POOLMALLOC_TEST_STRICT=1 is set by scripts/c-tests.sh for poolmalloc):
 *   always  - the touched allocation really raised RSS by >= 90% of the bytes (the measurement
 *             works), malloc_trim(0) returns 0 or 1, and after free + malloc_trim(0) RSS is
 *             <= baseline + 3% of what was allocated (glibc's trim meets this too);
 *   strict  - also without any help: RSS after freeing <= baseline + 10% of what was allocated;
 *   system  - glibc keeps freed heap memory that is not at the top of the heap until trimmed, so
 *             the no-trim bound is measured and reported but not asserted.
 * Phase 3 (strict only, reported in every mode): blocks of 10 - 128 KiB are freed while other
 * blocks keep their pools alive; once the allocator's sweeps of such blocks may run (they are
 * rate-limited to one per 2 ms and discard a block free at two sweeps in a row, so the test
 * twice lets 30 ms of the monotonic clock pass and allocates more of them), the pages inside
 * the freed blocks must have left the resident set.
 * Phase 4 (strict only, reported in every mode): a freed 1 MiB block may wait in a cache for
 * reuse, but once 30 ms have passed and small allocations have gone through the allocator's
 * slow path, its pages must have left the resident set.
 * Phase 5 (strict only, reported in every mode): about 1 MiB of small blocks, freed, is idle
 * memory under the default bound (2 MiB); it must still leave the resident set once it has
 * waited (30 ms here, the delay is 10 ms) and the allocator's slow path has run.
 * Phase 6 (strict only, reported in every mode): the other side of phases 3 to 5 and 11: two
 * 64 KB buffers that a loop frees and allocates again for 100 ms must keep their pages after
 * the first rounds (few page faults), not lose them to every sweep or every free.
 * Phase 7 (strict only, reported in every mode): like phases 4 and 5, but afterwards the
 * program only frees and allocates again one block of a size it uses all the time (as a
 * CPython benchmark loop does): no call needs new memory, yet what was freed must still leave
 * the resident set.
 * Phase 8 (strict only, reported in every mode): a large block freed for the first time
 * leaves the resident set at once (most big buffers are allocated once); one that a loop
 * allocates, fills and frees for 100 ms keeps its pages after the first rounds (few page
 * faults).
 * Phase 9 (strict only, reported in every mode): as phase 3 with blocks of whole pages (16 and
 * 64 KiB): once swept, a freed block keeps no page at all, not even its first one.
 * Phase 10 (strict only, reported in every mode): blocks of a size the program then stops
 * using (24 KB: allocated once, as CPython's .pyc buffers are) leave at the first sweep after
 * their free, not the second: only a size in reuse keeps its free blocks a sweep longer.
 * Phase 11 (strict only, reported in every mode): a 90000-byte block (a multi-page size no
 * loop reuses) freed once beside a live block of its size leaves the resident set at its
 * free, with no sweep in between, as a large block does in phase 8.
 * Phase 12 (strict only, reported in every mode): a large block served by the cache (so of a
 * size in reuse), then grown by realloc to a size never asked for, leaves the resident set at
 * its free as a block freed for the first time does in phase 8. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "check.h"

#define MAXBLOCKS 1000000
#define TOTAL MiB(200)

static void *blocks[MAXBLOCKS];

/* Fills blocks[] with ~TOTAL bytes: a third small, a third medium, a third large, interleaved so
 * that small blocks sit between medium ones.  Returns the number of blocks. */
static size_t allocate_all(uint64_t *rng, size_t *bytes)
{
    size_t budget[3] = {TOTAL / 3, TOTAL / 3, TOTAL - 2 * (TOTAL / 3)};
    size_t nb = 0;
    *bytes = 0;
    while (budget[0] || budget[1] || budget[2]) {
        int cls = (int)(rng_next(rng) % 64);
        cls = cls < 60 ? 0 : cls < 63 ? 1 : 2; /* by count: mostly small */
        if (budget[cls] == 0)
            continue;
        size_t n = cls == 0 ? rng_logsize(rng, 16, 512)
                 : cls == 1 ? rng_logsize(rng, 513, 128 << 10)
                            : rng_logsize(rng, (128 << 10) + 1, 4 << 20);
        if (n > budget[cls])
            n = budget[cls];
        budget[cls] -= n;
        CHECK(nb < MAXBLOCKS, "too many blocks");
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "malloc(%zu) failed", n);
        memset(p, 0x6B, n); /* touch every page */
        blocks[nb++] = p;
        *bytes += n;
    }
    return nb;
}

static void free_all_shuffled(uint64_t *rng, size_t nb)
{
    for (size_t i = nb - 1; i > 0; i--) {
        size_t j = (size_t)(rng_next(rng) % (i + 1));
        void *t = blocks[i];
        blocks[i] = blocks[j];
        blocks[j] = t;
    }
    for (size_t i = 0; i < nb; i++) {
        free(blocks[i]);
        blocks[i] = NULL;
    }
}

/* Phase 3: per multi-page size, blocks whose every 8th stays live (so no pool empties). */
#define P3_SIZES 8
#define P3_PER_SIZE 48
static void *p3[P3_SIZES][P3_PER_SIZE];

/* Milliseconds of the monotonic clock since t0. */
static long ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static void wait_ms(long ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (ms_since(&t0) < ms)
        ;
}

static long minor_faults(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

/* Lets the allocator's sweeps of multi-page blocks run once (they are rate-limited to one per
 * 2 ms and follow such allocations): 30 ms of the monotonic clock, then 640 KB of such
 * allocations, all of one size (40000 B, which the phases do not use otherwise). */
static void let_one_sweep_run(void)
{
    wait_ms(30);
    for (int i = 0; i < 16; i++)
        free(opaque(malloc(40000)));
}

/* Twice: a block of a size in reuse is discarded when free at two sweeps in a row. */
static void let_two_sweeps_run(void)
{
    let_one_sweep_run();
    let_one_sweep_run();
}

/* A block of n bytes, every byte written; RSS must rise by 90% of it (the measurement works). */
static unsigned char *touched_block(size_t n, int fill, size_t base, size_t *peak)
{
    unsigned char *b = malloc(n);
    CHECK(b != NULL, "malloc(%zu)", n);
    memset(b, fill, n);
    *peak = rss_bytes();
    CHECK(*peak >= base + n / 10 * 9, "RSS rose only %.2f MiB for a touched %zu-byte block",
          (double)((long long)*peak - (long long)base) / 1048576.0, n);
    return b;
}

/* Phases 9 and 10: n blocks of each of the sizes (blocks[s * n + i]), every byte written,
 * then all but every 8th freed, so that no pool empties. Returns the bytes left live; *freed
 * gets the bytes freed, *peak the RSS before the frees, and *measured whether RSS rose by 90%
 * of the bytes (glibc may serve them from memory earlier phases freed: nothing to see then). */
static size_t allocate_then_free_7_in_8(void **blocks, const size_t *sizes, int nsizes, int n,
                                        size_t base, int strict, size_t *freed, size_t *peak,
                                        int *measured)
{
    size_t total = 0, live = 0;
    for (int s = 0; s < nsizes; s++)
        for (int i = 0; i < n; i++) {
            void *b = malloc(sizes[s]);
            CHECK(b != NULL, "malloc(%zu)", sizes[s]);
            memset(b, 0xa5, sizes[s]);
            blocks[s * n + i] = b;
            total += sizes[s];
        }
    *peak = rss_bytes();
    *measured = *peak >= base + total / 10 * 9;
    CHECK(*measured || !strict, "RSS rose only %.2f MiB for %.2f MiB of touched blocks",
          (double)((long long)*peak - (long long)base) / 1048576.0, (double)total / 1048576.0);
    for (int s = 0; s < nsizes; s++)
        for (int i = 0; i < n; i++) {
            if (i % 8 == 0) {
                live += sizes[s];
                continue;
            }
            free(blocks[s * n + i]);
            blocks[s * n + i] = NULL;
        }
    *freed = total - live;
    return live;
}

/* How a bound came out: asserted only in strict mode (poolmalloc). */
static const char *verdict(int ok, int strict)
{
    return ok ? "within" : strict ? "EXCEEDED" : "exceeded (not asserted in system mode)";
}

static double mib(long long b)
{
    return (double)b / 1048576.0;
}

int main(void)
{
    require_allocator_active();
    int strict = strict_mode();
    uint64_t rng = rng_seed(4242);
    memset(blocks, 0, sizeof blocks); /* the table's own pages count in the baseline */
    /* warm the allocator and stdio up, so their fixed setup is in the baseline too */
    free(malloc(100));
    printf("rss_release: mode %s%s\n", test_mode(), strict ? " (strict)" : "");
    fflush(stdout);
    size_t baseline = rss_bytes();
    int failures = 0;

    /* Phase 1: no help from the program. */
    size_t bytes = 0;
    size_t nb = allocate_all(&rng, &bytes);
    size_t peak = rss_bytes();
    CHECK(peak >= baseline + bytes / 10 * 9,
          "RSS rose only %.1f MiB for %.1f MiB of touched blocks: measurement broken",
          mib((long long)peak - (long long)baseline), mib((long long)bytes));
    free_all_shuffled(&rng, nb);
    size_t after = rss_bytes();
    /* 10%: an allocator may keep some freed memory cached for reuse (partly used pools, a free
     * arena or two per size class, recently freed large spans), but the bulk of what the program
     * gave back must reach the OS without being asked. */
    size_t limit1 = baseline + bytes / 10;
    int ok1 = after <= limit1;
    printf("rss_release: phase 1 (no trim): %zu blocks, %.1f MiB; RSS baseline %.1f, peak %.1f, "
           "after free %.1f MiB (limit %.1f) %s\n",
           nb, mib((long long)bytes), mib((long long)baseline), mib((long long)peak),
           mib((long long)after), mib((long long)limit1),
           verdict(ok1, strict));
    if (!ok1 && strict) {
        fprintf(stderr, "rss_release: FAIL: RSS after freeing everything is %.1f MiB above the "
                        "baseline, limit is 10%% of %.1f MiB\n",
                mib((long long)after - (long long)baseline), mib((long long)bytes));
        failures++;
    }

    /* Phase 2: same again, then malloc_trim(0). */
    nb = allocate_all(&rng, &bytes);
    peak = rss_bytes();
    CHECK(peak >= baseline + bytes / 10 * 9, "RSS rose only %.1f MiB in phase 2",
          mib((long long)peak - (long long)baseline));
    free_all_shuffled(&rng, nb);
    int r = malloc_trim(0);
    CHECK(r == 0 || r == 1, "malloc_trim(0) returned %d", r);
    size_t trimmed = rss_bytes();
    /* 3%: after an explicit trim only metadata and partially used pages may remain. */
    size_t limit2 = baseline + bytes * 3 / 100;
    int ok2 = trimmed <= limit2;
    printf("rss_release: phase 2 (malloc_trim(0) = %d): peak %.1f, after trim %.1f MiB (limit "
           "%.1f) %s\n",
           r, mib((long long)peak), mib((long long)trimmed), mib((long long)limit2),
           ok2 ? "within" : "EXCEEDED");
    if (!ok2) {
        fprintf(stderr, "rss_release: FAIL: RSS after free + malloc_trim(0) is %.1f MiB above "
                        "the baseline, limit is 3%% of %.1f MiB\n",
                mib((long long)trimmed - (long long)baseline), mib((long long)bytes));
        failures++;
    }
    /* Phase 3: freed multi-page blocks inside pools that stay in use. */
    static const size_t p3_size[P3_SIZES] = {10000, 14000, 20000, 30000, 45000, 64000, 90000, 128000};
    size_t base3 = rss_bytes(), live3 = 0, freed3 = 0, nfreed3 = 0;
    for (int s = 0; s < P3_SIZES; s++)
        for (int i = 0; i < P3_PER_SIZE; i++) {
            p3[s][i] = malloc(p3_size[s]);
            CHECK(p3[s][i] != NULL, "malloc(%zu) failed", p3_size[s]);
            memset(p3[s][i], 0x3C, p3_size[s]);
        }
    size_t peak3 = rss_bytes();
    for (int s = 0; s < P3_SIZES; s++)
        for (int i = 0; i < P3_PER_SIZE; i++) {
            if (i % 8 == 0) {
                live3 += p3_size[s];
                continue;
            }
            free(p3[s][i]);
            p3[s][i] = NULL;
            freed3 += p3_size[s];
            nfreed3++;
        }
    size_t after_free3 = rss_bytes();
    /* The first sweep marks the blocks that are free, the second discards those still free. */
    let_two_sweeps_run();
    size_t swept3 = rss_bytes();
    /* What may stay: the live blocks, a page per freed block (the pages a block shares with
     * its neighbours), and 10% of the freed bytes for whatever else the allocator keeps.
     * Phase 9 checks blocks of whole pages without that allowance. */
    size_t limit3 = base3 + live3 + nfreed3 * 4096 + freed3 / 10;
    int ok3 = swept3 <= limit3;
    printf("rss_release: phase 3 (multi-page blocks, 1 in 8 live): RSS base %.1f, peak %.1f, "
           "after free %.1f, after the sweep %.1f MiB (limit %.1f) %s\n",
           mib((long long)base3), mib((long long)peak3), mib((long long)after_free3),
           mib((long long)swept3), mib((long long)limit3),
           verdict(ok3, strict));
    CHECK(peak3 >= base3 + (live3 + freed3) / 10 * 9, "RSS rose only %.1f MiB in phase 3",
          mib((long long)peak3 - (long long)base3));
    if (!ok3 && strict) {
        fprintf(stderr, "rss_release: FAIL: freed 10 - 128 KiB blocks stayed resident: %.1f MiB "
                        "above the phase's baseline, limit %.1f\n",
                mib((long long)swept3 - (long long)base3), mib((long long)limit3 - (long long)base3));
        failures++;
    }
    for (int s = 0; s < P3_SIZES; s++)
        for (int i = 0; i < P3_PER_SIZE; i++)
            free(p3[s][i]);

    /* Phase 4: a cached large block's pages are given back once it has waited. */
    enum { N4 = 160 };
    static void *p4[N4];
    size_t big = MiB(1);
    size_t base4 = rss_bytes(), peak4;
    free(touched_block(big, 0x5d, base4, &peak4));
    size_t after_free4 = rss_bytes();
    wait_ms(30);
    /* A few blocks of several sizes: enough to go through the allocator's slow path (new
     * pages to hand out), too few to matter for RSS. */
    static const size_t sizes4[] = {24, 200, 1000, 3000};
    size_t small4 = 0;
    for (int i = 0; i < N4; i++) {
        size_t n = sizes4[i % 4];
        p4[i] = malloc(n);
        CHECK(p4[i] != NULL, "malloc(%zu)", n);
        memset(p4[i], 1, n);
        small4 += n + 16;
    }
    size_t aged4 = rss_bytes();
    size_t limit4 = base4 + small4 + MiB(1) / 8 + big / 10;
    int ok4 = aged4 <= limit4;
    printf("rss_release: phase 4 (a freed 1 MiB block, 30 ms later): RSS base %.2f, peak %.2f, "
           "after free %.2f, later %.2f MiB (limit %.2f) %s\n",
           mib((long long)base4), mib((long long)peak4), mib((long long)after_free4),
           mib((long long)aged4), mib((long long)limit4),
           verdict(ok4, strict));
    if (!ok4 && strict) {
        fprintf(stderr, "rss_release: FAIL: a freed 1 MiB block is still resident 30 ms later\n");
        failures++;
    }
    for (int i = 0; i < N4; i++)
        free(p4[i]);

    /* Phase 5: idle memory under the bound decays too. */
    enum { N5 = 6000, N5B = 64 };
    static void *p5[N5], *p5b[N5B];
    size_t base5 = rss_bytes();
    for (int i = 0; i < N5; i++) {
        p5[i] = malloc(160);
        CHECK(p5[i] != NULL, "malloc(160)");
        memset(p5[i], 0x55, 160);
    }
    size_t peak5 = rss_bytes();
    /* glibc serves these from memory earlier phases freed: there is nothing to see then. */
    int measured5 = peak5 >= base5 + (size_t)N5 * 160 / 10 * 9;
    CHECK(measured5 || !strict, "RSS rose only %.2f MiB in phase 5",
          mib((long long)peak5 - (long long)base5));
    for (int i = 0; i < N5; i++)
        free(p5[i]);
    size_t freed5 = rss_bytes();
    wait_ms(30);
    /* Sizes no phase used so far, so that these take the slow path (new pools, carving). */
    for (int i = 0; i < N5B; i++) {
        p5b[i] = malloc(i % 2 ? 6000 : 7000);
        CHECK(p5b[i] != NULL, "malloc(6000/7000)");
    }
    size_t aged5 = rss_bytes();
    size_t limit5 = base5 + (peak5 - base5) / 4 + (size_t)N5B * 2 * 4096;
    int ok5 = aged5 <= limit5;
    printf("rss_release: phase 5 (%.2f MiB of small blocks freed, 30 ms later): RSS base %.2f, "
           "peak %.2f, after free %.2f, later %.2f MiB (limit %.2f) %s\n",
           mib((long long)N5 * 160), mib((long long)base5), mib((long long)peak5),
           mib((long long)freed5), mib((long long)aged5), mib((long long)limit5),
           measured5 ? verdict(ok5, strict) : "not measured (memory freed earlier was reused)");
    if (!ok5 && strict) {
        fprintf(stderr, "rss_release: FAIL: idle memory under the bound is still resident "
                        "30 ms after it was freed\n");
        failures++;
    }
    for (int i = 0; i < N5B; i++)
        free(p5b[i]);

    /* Phase 6: buffers that a loop frees and allocates again keep their pages: sweeps only
     * discard blocks that stayed free from one sweep to the next. Counted in page faults over
     * 100 ms of the loop (each iteration touches every page of two 64 KB blocks). */
    long faults0 = minor_faults();
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long iters6 = 0;
    do {
        /* Two of them, so that one is free whenever the other is being allocated. */
        unsigned char *b6 = malloc(64000), *c6 = malloc(64000);
        CHECK(b6 != NULL && c6 != NULL, "malloc(64000)");
        memset(b6, (int)(iters6 & 0xff), 64000);
        memset(c6, (int)(iters6 & 0x7f), 64000);
        free(opaque(b6));
        free(opaque(c6));
        iters6++;
    } while (ms_since(&t0) < 100);
    long faults6 = minor_faults() - faults0;
    /* 64 KB is 16 pages: the first touch of both is 32 faults, and as the first free of a
     * block of a size not in reuse gives its pages back (phase 11), the second round faults
     * them in again: 64, plus 32 of slack. A discard at every sweep (one per 2 to 10 ms) or
     * every free would fault them in again hundreds of times. */
    int ok6 = faults6 <= 96;
    printf("rss_release: phase 6 (two 64 KB buffers freed and allocated again for 100 ms, %ld "
           "times): %ld page faults (limit 96) %s\n",
           iters6, faults6, verdict(ok6, strict));
    if (!ok6 && strict) {
        fprintf(stderr, "rss_release: FAIL: a buffer in constant reuse keeps losing its pages\n");
        failures++;
    }

    /* Phase 7: idle memory decays while the program only reuses what its free lists hold. */
    enum { N7 = 6000, S7 = 272 };
    static void *p7[N7];
    size_t big7 = 512 * 1024;
    void *warm7 = malloc(16); /* the one size the loop below uses: its pool is in place */
    free(opaque(warm7));
    size_t base7 = rss_bytes();
    for (int i = 0; i < N7; i++) {
        p7[i] = malloc(S7);
        CHECK(p7[i] != NULL, "malloc(%d)", S7);
        memset(p7[i], 0x77, S7);
    }
    unsigned char *blk7 = malloc(big7);
    CHECK(blk7 != NULL, "malloc(512 KiB)");
    memset(blk7, 0x77, big7);
    size_t peak7 = rss_bytes();
    int measured7 = peak7 >= base7 + ((size_t)N7 * S7 + big7) / 10 * 9;
    CHECK(measured7 || !strict, "RSS rose only %.2f MiB in phase 7",
          mib((long long)peak7 - (long long)base7));
    for (int i = 0; i < N7; i++)
        free(p7[i]);
    free(blk7);
    size_t freed7 = rss_bytes();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long iters7 = 0;
    do {
        for (int i = 0; i < 1000; i++) {
            unsigned char *q = malloc(16);
            CHECK(q != NULL, "malloc(16)");
            q[0] = (unsigned char)i;
            free(opaque(q));
        }
        iters7 += 1000;
    } while (ms_since(&t0) < 50);
    size_t aged7 = rss_bytes();
    size_t limit7 = base7 + (peak7 - base7) / 4;
    int ok7 = aged7 <= limit7;
    printf("rss_release: phase 7 (%.2f MiB freed, then 50 ms of malloc(16)/free pairs, %ld of "
           "them): RSS base %.2f, peak %.2f, after free %.2f, later %.2f MiB (limit %.2f) %s\n",
           mib((long long)N7 * S7 + (long long)big7), iters7, mib((long long)base7),
           mib((long long)peak7), mib((long long)freed7), mib((long long)aged7),
           mib((long long)limit7),
           measured7 ? verdict(ok7, strict) : "not measured (memory freed earlier was reused)");
    if (!ok7 && strict) {
        fprintf(stderr, "rss_release: FAIL: memory freed before a loop that only reuses its "
                        "free lists is still resident 50 ms later\n");
        failures++;
    }

    /* Phase 8: a large block freed once leaves at once; one in constant reuse stays. 640 KiB:
     * no block cached by an earlier phase serves it (they are 512 KiB and 1 MiB). */
    size_t big8 = 640 * 1024;
    size_t base8 = rss_bytes(), peak8;
    free(touched_block(big8, 0x88, base8, &peak8));
    size_t freed8 = rss_bytes();
    size_t limit8 = base8 + big8 / 10;
    int ok8a = freed8 <= limit8;
    faults0 = minor_faults();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long iters8 = 0;
    do {
        unsigned char *b8 = malloc(big8);
        CHECK(b8 != NULL, "malloc(640 KiB)");
        memset(b8, (int)(iters8 & 0xff), big8);
        free(opaque(b8));
        iters8++;
    } while (ms_since(&t0) < 100);
    long faults8 = minor_faults() - faults0;
    /* 160 pages: faulted in by the first round and, once more, by the second (the first free
     * gave them back); a block losing its pages at every free would fault them in each time. */
    long pages8 = (long)(big8 / 4096);
    int ok8b = faults8 <= 3 * pages8;
    printf("rss_release: phase 8 (a 640 KiB block freed once: RSS base %.2f, peak %.2f, after "
           "free %.2f MiB (limit %.2f) %s; then freed and allocated again for 100 ms, %ld times: "
           "%ld page faults (limit %ld) %s)\n",
           mib((long long)base8), mib((long long)peak8), mib((long long)freed8),
           mib((long long)limit8), verdict(ok8a, strict), iters8, faults8, 3 * pages8,
           verdict(ok8b, strict));
    if (!ok8a && strict) {
        fprintf(stderr, "rss_release: FAIL: a large block freed once is still resident\n");
        failures++;
    }
    if (!ok8b && strict) {
        fprintf(stderr, "rss_release: FAIL: a large block in constant reuse keeps losing its "
                        "pages\n");
        failures++;
    }

    /* Phase 9: freed blocks of whole pages leave entirely, first page included. */
    enum { N9 = 48 };
    static void *p9[2 * N9];
    static const size_t size9[2] = {16384, 65536};
    /* Idle memory of the earlier phases would leave during this one and hide its figures. */
    malloc_trim(0);
    size_t base9 = rss_bytes(), freed9, peak9;
    int measured9;
    size_t live9 = allocate_then_free_7_in_8(p9, size9, 2, N9, base9, strict, &freed9, &peak9,
                                             &measured9);
    let_two_sweeps_run();
    size_t swept9 = rss_bytes();
    /* 2% of the freed bytes and 128 KiB for the rest; keeping the first page of each of the
     * 84 freed blocks would take 336 KiB. */
    size_t limit9 = base9 + live9 + freed9 / 50 + 128 * 1024;
    int ok9 = swept9 <= limit9;
    printf("rss_release: phase 9 (16 and 64 KiB blocks, 1 in 8 live): RSS base %.2f, peak %.2f, "
           "after the sweeps %.2f MiB (limit %.2f) %s\n",
           mib((long long)base9), mib((long long)peak9), mib((long long)swept9),
           mib((long long)limit9),
           measured9 ? verdict(ok9, strict) : "not measured (memory freed earlier was reused)");
    if (!ok9 && strict) {
        fprintf(stderr, "rss_release: FAIL: freed blocks of whole pages keep pages after the "
                        "sweeps\n");
        failures++;
    }
    for (int i = 0; i < 2 * N9; i += 8)
        free(p9[i]);

    /* Phase 10: a size not in reuse leaves at the first sweep. */
    enum { N10 = 64 };
    static void *p10[N10];
    static const size_t size10[1] = {24000};
    malloc_trim(0);
    size_t base10 = rss_bytes(), freed10, peak10;
    int measured10;
    size_t live10 = allocate_then_free_7_in_8(p10, size10, 1, N10, base10, strict, &freed10,
                                              &peak10, &measured10);
    let_one_sweep_run();
    size_t swept10 = rss_bytes();
    /* Two pages per freed block for those it shares with its neighbours, and 64 KiB. */
    size_t limit10 = base10 + live10 + freed10 / size10[0] * 2 * 4096 + 64 * 1024;
    int ok10 = swept10 <= limit10;
    printf("rss_release: phase 10 (24 KB blocks, 1 in 8 live, one sweep): RSS base %.2f, peak "
           "%.2f, after the sweep %.2f MiB (limit %.2f) %s\n",
           mib((long long)base10), mib((long long)peak10), mib((long long)swept10),
           mib((long long)limit10),
           measured10 ? verdict(ok10, strict) : "not measured (memory freed earlier was reused)");
    if (!ok10 && strict) {
        fprintf(stderr, "rss_release: FAIL: freed blocks of a size no longer in use wait for a "
                        "second sweep\n");
        failures++;
    }
    for (int i = 0; i < N10; i += 8)
        free(p10[i]);

    /* Phase 11: a multi-page block freed once leaves at its free, before any sweep. */
    size_t size11 = 90000;
    malloc_trim(0);
    unsigned char *keep11 = malloc(size11); /* keeps the pool in use */
    CHECK(keep11 != NULL, "malloc(%zu)", size11);
    memset(keep11, 0x11, size11);
    size_t base11 = rss_bytes(), peak11;
    free(touched_block(size11, 0x12, base11, &peak11));
    size_t freed11 = rss_bytes();
    /* All but the two pages the block may share with its neighbours, and 8 KiB of slack. */
    size_t limit11 = base11 + 4 * 4096;
    int ok11 = freed11 <= limit11;
    printf("rss_release: phase 11 (a %zu-byte block freed once beside a live one: RSS base "
           "%.2f, peak %.2f, after free %.2f MiB (limit %.2f) %s\n",
           size11, mib((long long)base11), mib((long long)peak11), mib((long long)freed11),
           mib((long long)limit11), verdict(ok11, strict));
    if (!ok11 && strict) {
        fprintf(stderr, "rss_release: FAIL: a multi-page block freed once is still resident\n");
        failures++;
    }
    free(keep11);

    /* Phase 12: a block of a reused size, grown by realloc, leaves at its free. 300 KiB: no
     * block cached by an earlier phase serves it (they are 512 KiB and more). */
    size_t small12 = 300 * 1024, big12 = 900 * 1024;
    malloc_trim(0);
    unsigned char *first12 = malloc(small12);
    CHECK(first12 != NULL, "malloc(%zu)", small12);
    memset(first12, 0x12, small12);
    free(opaque(first12));
    size_t base12 = rss_bytes(), peak12;
    unsigned char *b12 = malloc(small12);
    CHECK(b12 != NULL, "malloc(%zu)", small12);
    /* The precondition of the phase: the cache served the second request. */
    int cached12 = b12 == first12;
    memset(b12, 0x13, small12);
    b12 = realloc(b12, big12);
    CHECK(b12 != NULL, "realloc(%zu)", big12);
    memset(b12, 0x14, big12);
    peak12 = rss_bytes();
    free(b12);
    size_t freed12 = rss_bytes();
    size_t limit12 = base12 + big12 / 10;
    int ok12 = cached12 && freed12 <= limit12;
    printf("rss_release: phase 12 (a %zu-byte block %s the cache, grown to %zu bytes: RSS base "
           "%.2f, peak %.2f, after free %.2f MiB (limit %.2f) %s\n",
           small12, cached12 ? "taken from" : "NOT taken from", big12, mib((long long)base12),
           mib((long long)peak12), mib((long long)freed12), mib((long long)limit12),
           verdict(ok12, strict));
    if (!ok12 && strict) {
        fprintf(stderr, "rss_release: FAIL: %s\n",
                cached12 ? "a large block grown past its reused size is still resident after "
                           "its free"
                         : "the large-block cache did not serve a request of a size just freed");
        failures++;
    }

    if (failures)
        return 1;
    printf("rss_release: ok\n");
    return 0;
}
