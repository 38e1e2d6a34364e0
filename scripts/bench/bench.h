/* bench.h - helpers shared by the poolmalloc benchmark programs (not a benchmark itself).
 *
 * Pattern: none of its own. It gives every benchmark the same tools to check its results:
 * a deterministic PRNG, a content pattern derived from a per-block tag (byte i of a block
 * tagged t is pat(t, i)), fill/verify of a block's head, tail and one byte per 4 KiB page,
 * an alignment check, and RSS read from /proc/self/statm. Any mismatch prints CORRUPTION and
 * exits with status 2, so a wrong result under any allocator fails the run.
 */
#ifndef POOLMALLOC_BENCH_H
#define POOLMALLOC_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEAD_BYTES 64
#define TAIL_BYTES 16
#define PAGE_STRIDE 4096

static inline uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: deterministic per seed, cheap */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t rng_range(uint64_t *s, uint64_t lo, uint64_t hi) /* [lo, hi] */
{
    return lo + rng_next(s) % (hi - lo + 1);
}

/* log-uniform size in [lo, hi]: as many small as large orders of magnitude */
static inline size_t rng_logsize(uint64_t *s, size_t lo, size_t hi)
{
    int lb = 63 - __builtin_clzll(lo), hb = 63 - __builtin_clzll(hi);
    int b = (int)rng_range(s, (uint64_t)lb, (uint64_t)hb);
    size_t base = (size_t)1 << b;
    size_t v = base + (size_t)(rng_next(s) % base);
    if (v < lo) v = lo;
    if (v > hi) v = hi;
    return v;
}

static inline uint8_t pat(uint64_t tag, size_t i)
{
    return (uint8_t)((tag * 0x9E3779B97F4A7C15ULL >> 56) + i * 7 + (i >> 9));
}

static void bench_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void bench_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "CORRUPTION: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    _exit(2);
}

/* takes the address as an integer: gcc would otherwise assume the new block is read */
static inline void check_addr(uintptr_t a, size_t n)
{
    __asm__ volatile("" : : "r"(a) : "memory"); /* the block escapes: no malloc/free elision */
    if (a == 0) bench_fail("allocation of %zu bytes returned NULL", n);
    if (n >= 16 && (a & 15) != 0) bench_fail("%#lx (%zu bytes) is not 16-aligned", (unsigned long)a, n);
}
#define check_ptr(p, n) check_addr((uintptr_t)(p), (n))

/* Write the pattern on the head, the tail and one byte per page of a block of n bytes. */
static inline void fill(void *p, size_t n, uint64_t tag)
{
    uint8_t *b = (uint8_t *)p;
    size_t h = n < HEAD_BYTES ? n : HEAD_BYTES;
    for (size_t i = 0; i < h; i++) b[i] = pat(tag, i);
    for (size_t i = n > TAIL_BYTES ? n - TAIL_BYTES : 0; i < n; i++) b[i] = pat(tag, i);
    for (size_t i = PAGE_STRIDE; i < n; i += PAGE_STRIDE) b[i] = pat(tag, i);
}

static inline void verify(const void *p, size_t n, uint64_t tag, const char *what)
{
    const uint8_t *b = (const uint8_t *)p;
    size_t h = n < HEAD_BYTES ? n : HEAD_BYTES;
    for (size_t i = 0; i < h; i++)
        if (b[i] != pat(tag, i)) bench_fail("%s: block %p size %zu tag %llu byte %zu is %u, want %u", what, p, n, (unsigned long long)tag, i, b[i], pat(tag, i));
    for (size_t i = n > TAIL_BYTES ? n - TAIL_BYTES : 0; i < n; i++)
        if (b[i] != pat(tag, i)) bench_fail("%s: block %p size %zu tag %llu tail byte %zu is %u, want %u", what, p, n, (unsigned long long)tag, i, b[i], pat(tag, i));
    for (size_t i = PAGE_STRIDE; i < n; i += PAGE_STRIDE)
        if (b[i] != pat(tag, i)) bench_fail("%s: block %p size %zu tag %llu page byte %zu is %u, want %u", what, p, n, (unsigned long long)tag, i, b[i], pat(tag, i));
}

/* Light version for tight loops: first and last 8 bytes only. */
static inline void fill_light(void *p, size_t n, uint64_t tag)
{
    uint8_t *b = (uint8_t *)p;
    size_t h = n < 8 ? n : 8;
    for (size_t i = 0; i < h; i++) b[i] = pat(tag, i);
    for (size_t i = n > 8 ? n - 8 : 0; i < n; i++) b[i] = pat(tag, i);
}

static inline void verify_light(const void *p, size_t n, uint64_t tag, const char *what)
{
    const uint8_t *b = (const uint8_t *)p;
    size_t h = n < 8 ? n : 8;
    for (size_t i = 0; i < h; i++)
        if (b[i] != pat(tag, i)) bench_fail("%s: block %p size %zu byte %zu is %u, want %u", what, p, n, i, b[i], pat(tag, i));
    for (size_t i = n > 8 ? n - 8 : 0; i < n; i++)
        if (b[i] != pat(tag, i)) bench_fail("%s: block %p size %zu byte %zu is %u, want %u", what, p, n, i, b[i], pat(tag, i));
}

static inline long rss_kb(void)
{
    long size = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

static inline long arg_long(int argc, char **argv, int i, long dflt)
{
    if (i >= argc) return dflt;
    char *end;
    long v = strtol(argv[i], &end, 0);
    if (*end != '\0' || v < 0) {
        fprintf(stderr, "bad argument %d: '%s'\n", i, argv[i]);
        exit(64);
    }
    return v;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    check_ptr(p, n);
    return p;
}

/* Every benchmark ends with this line on stdout; bench.sh requires it. */
static inline void result_ok(const char *name, unsigned long long checksum)
{
    printf("RESULT OK %s checksum=%llu\n", name, checksum);
    fflush(stdout);
}

#endif
