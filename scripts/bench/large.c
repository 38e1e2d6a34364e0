/* large.c - pattern: large buffers (256 KiB .. 64 MiB, log-uniform) allocated, used and freed
 * over and over (image/frame buffers, I/O buffers, big temporary arrays). Each thread keeps
 * 4 live buffers and replaces a random one per step; one allocation in four uses calloc.
 * Shows whether the allocator reuses or caches big mappings, and what page faults cost it.
 *
 * Checks: every page of each buffer gets a byte of its tag's pattern (plus head and tail),
 * verified before the free; calloc'ed buffers must read zero at every sampled byte (head,
 * tail, one per page) before being written; pointers non-NULL and 16-aligned.
 *
 * usage: large THREADS TOTAL_STEPS MIN MAX
 */
#include "bench.h"
#include <pthread.h>

#define LIVE 4

static long steps_per_thread;
static size_t minsz, maxsz;

static void *worker(void *arg)
{
    uint64_t r = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 3;
    uint8_t *p[LIVE] = {0};
    size_t n[LIVE] = {0};
    uint64_t tag[LIVE] = {0};
    unsigned long long sum = 0;
    for (long s = 0; s < steps_per_thread + LIVE; s++) {
        int k = s < LIVE ? (int)s : (int)(rng_next(&r) % LIVE);
        if (p[k]) {
            verify(p[k], n[k], tag[k], "large buffer");
            sum += p[k][n[k] - 1];
            free(p[k]);
        }
        n[k] = rng_logsize(&r, minsz, maxsz);
        tag[k] = rng_next(&r);
        if (rng_next(&r) % 4 == 0) {
            p[k] = calloc(1, n[k]);
            check_ptr(p[k], n[k]);
            for (size_t i = 0; i < n[k]; i += (i < 64 || i + 64 >= n[k]) ? 1 : PAGE_STRIDE)
                if (p[k][i] != 0) bench_fail("calloc(%zu) byte %zu is %u, not 0", n[k], i, p[k][i]);
        } else {
            p[k] = malloc(n[k]);
            check_ptr(p[k], n[k]);
        }
        fill(p[k], n[k], tag[k]);
    }
    for (int k = 0; k < LIVE; k++) {
        verify(p[k], n[k], tag[k], "large buffer (final)");
        free(p[k]);
    }
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
    long nthreads = arg_long(argc, argv, 1, 1);
    long total = arg_long(argc, argv, 2, 1000);
    minsz = (size_t)arg_long(argc, argv, 3, 256 << 10);
    maxsz = (size_t)arg_long(argc, argv, 4, 64 << 20);
    if (nthreads < 1 || minsz < 1 || maxsz < minsz) return 64;
    steps_per_thread = total / nthreads;
    pthread_t *th = xmalloc((size_t)nthreads * sizeof(pthread_t));
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)(t + 1)) != 0) bench_fail("pthread_create");
    unsigned long long sum = 0;
    for (long t = 0; t < nthreads; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        sum += (uintptr_t)ret;
    }
    free(th);
    result_ok("large", sum);
    return 0;
}
