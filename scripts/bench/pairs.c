/* pairs.c - pattern: malloc immediately followed by free ("alloc/free pairs"), one thread,
 * for every power-of-two size class from MIN to MAX bytes (and the sizes just below it).
 * The commonest call sequence in real programs (temporary buffers), and the allocator's
 * thread-local fast path when sizes are small; for large sizes it shows whether the
 * allocator caches big blocks or maps and unmaps them every time.
 *
 * Checks: every pointer is non-NULL and 16-aligned; the first and last 8 bytes of each block
 * are written with a per-iteration pattern and read back before the free; one block per size
 * is kept alive across the loop and verified at the end (a pair must never hand it out).
 *
 * Also prints "METRIC pair_ns_SIZE=..." (nanoseconds per pair for each size) for the report.
 *
 * usage: pairs MIN MAX ITERS   (ITERS pairs per size up to 2 KiB, scaled down above that)
 */
#include "bench.h"
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t min = (size_t)arg_long(argc, argv, 1, 16);
    size_t max = (size_t)arg_long(argc, argv, 2, 1024);
    long iters = arg_long(argc, argv, 3, 1000000);
    unsigned long long sum = 0;
    void *keep[64];
    size_t keepsz[64];
    int nkeep = 0;

    for (size_t s = min; s <= max && nkeep < 64; s *= 2) {
        long n = iters;
        if (s > 2048) {
            n = (long)((double)iters * 2048.0 / (double)s);
            if (n < iters / 1000) n = iters / 1000;
            if (n < 1) n = 1;
        }
        keep[nkeep] = xmalloc(s);
        keepsz[nkeep] = s;
        fill(keep[nkeep], s, 0xABC + (uint64_t)nkeep);
        nkeep++;
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            size_t sz = s - (size_t)(i & 7) * (s / 32); /* s, and a few sizes just below it */
            void *p = malloc(sz);
            check_ptr(p, sz);
            fill_light(p, sz, (uint64_t)i);
            verify_light(p, sz, (uint64_t)i, "pair");
            sum += ((uint8_t *)p)[sz - 1];
            free(p);
        }
        printf("METRIC pair_ns_%zu=%.1f\n", s, (now_ns() - t0) / (double)n);
    }
    for (int k = 0; k < nkeep; k++) {
        verify(keep[k], keepsz[k], 0xABC + (uint64_t)k, "kept block");
        free(keep[k]);
    }
    result_ok("pairs", sum);
    return 0;
}
