/* frag.c - pattern: fragmentation. THREADS threads allocate MB megabytes between them in
 * blocks of mixed sizes (mostly 16..512 B, some 513 B..4 KiB, a few 4..64 KiB), interleaved,
 * then exit; the main thread then frees 90% of all blocks in a scattered (random) order, so
 * every page keeps a few live blocks. Reported: RSS after the frees (the extra metric
 * rss_after_free_kb), measured after 100 ms and 1000 small malloc/free pairs so allocators
 * that purge lazily get a chance; then a second phase allocates 30% of MB again in other
 * sizes (does the freed memory get reused?) and everything is freed.
 *
 * Checks: each block's tag pattern (head, tail, page bytes) is verified before its free and
 * the survivors are verified after the second phase; pointers non-NULL and 16-aligned.
 *
 * usage: frag THREADS MB
 */
#include "bench.h"
#include <pthread.h>
#include <time.h>

struct blk {
    void *p;
    size_t n;
};

static struct blk *blocks;
static long nblocks_per_thread;

static size_t pick(uint64_t *r)
{
    uint64_t x = rng_next(r) % 1000;
    if (x < 900) return (size_t)rng_range(r, 16, 512);
    if (x < 990) return (size_t)rng_range(r, 513, 4096);
    return (size_t)rng_range(r, 4097, 65536);
}

static void *alloc_worker(void *arg)
{
    long t = (long)(uintptr_t)arg;
    uint64_t r = (uint64_t)(t + 1) * 0x9E3779B97F4A7C15ULL;
    struct blk *b = &blocks[t * nblocks_per_thread];
    for (long i = 0; i < nblocks_per_thread; i++) {
        b[i].n = pick(&r);
        b[i].p = malloc(b[i].n);
        check_ptr(b[i].p, b[i].n);
        fill(b[i].p, b[i].n, (uint64_t)(t * nblocks_per_thread + i));
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long nthreads = arg_long(argc, argv, 1, 1);
    long mb = arg_long(argc, argv, 2, 256);
    if (nthreads < 1 || mb < 1) return 64;
    /* mean block size of pick() is about 900 bytes */
    long total = mb * 1024 * 1024 / 900;
    nblocks_per_thread = total / nthreads;
    total = nblocks_per_thread * nthreads;
    blocks = xmalloc((size_t)total * sizeof(struct blk));
    pthread_t *th = xmalloc((size_t)nthreads * sizeof(pthread_t));
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, alloc_worker, (void *)(uintptr_t)t) != 0) bench_fail("pthread_create");
    for (long t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    long rss_full = rss_kb();

    /* free 90% in a scattered order: a random permutation, keeping every 10th index of it */
    long *perm = xmalloc((size_t)total * sizeof(long));
    for (long i = 0; i < total; i++) perm[i] = i;
    uint64_t r = 12345;
    for (long i = total - 1; i > 0; i--) {
        long j = (long)(rng_next(&r) % (uint64_t)(i + 1));
        long tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
    unsigned long long sum = 0;
    for (long k = 0; k < total; k++) {
        if (k % 10 == 0) continue; /* survivor */
        long i = perm[k];
        verify(blocks[i].p, blocks[i].n, (uint64_t)i, "frag block");
        sum += blocks[i].n;
        free(blocks[i].p);
        blocks[i].p = NULL;
    }
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(64);
        check_ptr(p, 64);
        free(p);
    }
    long rss_after = rss_kb();

    /* phase 2: 30% of the volume again in other sizes (mostly 600..2000 bytes) */
    long n2 = total * 3 / 10 / 2;
    struct blk *b2 = xmalloc((size_t)n2 * sizeof(struct blk));
    for (long i = 0; i < n2; i++) {
        b2[i].n = (size_t)rng_range(&r, 600, 2000);
        b2[i].p = malloc(b2[i].n);
        check_ptr(b2[i].p, b2[i].n);
        fill(b2[i].p, b2[i].n, (uint64_t)(total + i));
    }
    long rss_phase2 = rss_kb();
    for (long i = 0; i < total; i++)
        if (blocks[i].p) {
            verify(blocks[i].p, blocks[i].n, (uint64_t)i, "frag survivor");
            free(blocks[i].p);
        }
    for (long i = 0; i < n2; i++) {
        verify(b2[i].p, b2[i].n, (uint64_t)(total + i), "frag phase 2 block");
        free(b2[i].p);
    }
    free(b2);
    free(perm);
    free(blocks);
    free(th);
    printf("METRIC rss_full_kb=%ld\n", rss_full);
    printf("METRIC rss_after_free_kb=%ld\n", rss_after);
    printf("METRIC rss_phase2_kb=%ld\n", rss_phase2);
    result_ok("frag", sum);
    return 0;
}
