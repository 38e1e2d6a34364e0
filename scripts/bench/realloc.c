/* realloc.c - pattern: buffers that grow by realloc (string builders, dynamic arrays,
 * read-until-EOF buffers). Each thread keeps SLOTS buffers; each step picks one and grows it
 * by 1.1x..2x, appending a pattern over the new part, until it passes a random cap (log-
 * uniform, 64 B .. MAXCAP); sometimes it shrinks it instead; past the cap the buffer is freed
 * and restarted small. Sizes are random, so in-place growth and copying both happen.
 *
 * Checks: realloc must keep the old contents: before each realloc every byte of the buffer
 * holds pat(tag, i) (full check for buffers up to 4 KiB, sampled beyond: head, tail, one byte
 * per 512); afterwards the kept prefix is checked the same way; NULL or misaligned fails.
 *
 * usage: realloc THREADS TOTAL_STEPS SLOTS MAXCAP
 */
#include "bench.h"
#include <pthread.h>

static long steps_per_thread, nslots;
static size_t maxcap;

struct buf {
    uint8_t *p;
    size_t n, cap;
    uint64_t tag;
};

static void check_buf(const struct buf *b, size_t upto, const char *what)
{
    size_t step = upto <= 4096 ? 1 : 512;
    for (size_t i = 0; i < upto; i += (i < 64 || i + 64 >= upto) ? 1 : step)
        if (b->p[i] != pat(b->tag, i))
            bench_fail("%s: buffer %p size %zu byte %zu is %u, want %u", what, (void *)b->p, b->n, i, b->p[i], pat(b->tag, i));
}

static void *worker(void *arg)
{
    uint64_t r = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 1;
    struct buf *bufs = xmalloc((size_t)nslots * sizeof(struct buf));
    memset(bufs, 0, (size_t)nslots * sizeof(struct buf));
    unsigned long long sum = 0;
    for (long s = 0; s < steps_per_thread; s++) {
        struct buf *b = &bufs[rng_next(&r) % (uint64_t)nslots];
        if (b->p == NULL) {
            b->n = (size_t)rng_range(&r, 8, 64);
            b->cap = rng_logsize(&r, 64, maxcap);
            b->tag = rng_next(&r);
            b->p = malloc(b->n);
            check_ptr(b->p, b->n);
            for (size_t i = 0; i < b->n; i++) b->p[i] = pat(b->tag, i);
            continue;
        }
        check_buf(b, b->n, "before realloc");
        if (b->n > b->cap) {
            sum += b->n;
            free(b->p);
            b->p = NULL;
            continue;
        }
        size_t old = b->n, n;
        if (rng_next(&r) % 8 == 0)
            n = old / 2 + 1; /* shrink */
        else
            n = old + old * (size_t)rng_range(&r, 1, 10) / 10 + 1;
        uint8_t *q = realloc(b->p, n);
        check_ptr(q, n);
        b->p = q;
        b->n = n;
        check_buf(b, old < n ? old : n, "after realloc (contents not kept)");
        for (size_t i = old; i < n; i++) q[i] = pat(b->tag, i);
    }
    for (long k = 0; k < nslots; k++) {
        if (bufs[k].p) {
            check_buf(&bufs[k], bufs[k].n, "final");
            sum += bufs[k].n;
        }
        free(bufs[k].p);
    }
    free(bufs);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv)
{
    long nthreads = arg_long(argc, argv, 1, 1);
    long total = arg_long(argc, argv, 2, 1000000);
    nslots = arg_long(argc, argv, 3, 256);
    maxcap = (size_t)arg_long(argc, argv, 4, 65536);
    if (nthreads < 1 || nslots < 1 || maxcap < 64) return 64;
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
    result_ok("realloc", sum);
    return 0;
}
