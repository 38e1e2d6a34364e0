/* check.h - tiny helpers shared by the poolmalloc C tests.
 *
 * CHECK(cond, fmt, ...) prints "file:line: CHECK failed: cond: message" to stderr and exits 1.
 * Everything here avoids malloc where it can (RSS reading, formatting of failures goes through
 * stdio, which is acceptable: once a check has failed the test is over anyway).
 *
 * Environment set by scripts/c-tests.sh:
 *   POOLMALLOC_TEST_STRICT=1   the allocator under test is poolmalloc: assert its own targets
 *                              (messages, RSS release, C17 aligned_alloc, ...) too.
 *   POOLMALLOC_TEST_MODE       "preload", "direct" or "system" (informational).
 *   POOLMALLOC_TEST_LIB        path of the library under test (strict mode).
 */
#ifndef POOLMALLOC_CHECK_H
#define POOLMALLOC_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);          \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
            fflush(stderr);                                                                   \
            _exit(1);                                                                         \
        }                                                                                     \
    } while (0)

/* Hide a pointer's provenance from the optimiser so that it cannot fold away malloc/free pairs,
 * assume calloc memory is zero, or warn about deliberately invalid frees. */
static inline void *opaque(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

static inline size_t opaque_size(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

static inline int strict_mode(void)
{
    const char *s = getenv("POOLMALLOC_TEST_STRICT");
    return s != NULL && strcmp(s, "1") == 0;
}

static inline const char *test_mode(void)
{
    const char *s = getenv("POOLMALLOC_TEST_MODE");
    return s ? s : "unknown";
}

static inline int is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* Resident set size of this process in bytes, from /proc/self/statm (no malloc). */
static inline size_t rss_bytes(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0, "open /proc/self/statm: %s", strerror(errno));
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    CHECK(n > 0, "read /proc/self/statm");
    buf[n] = 0;
    unsigned long size_pages = 0, rss_pages = 0;
    CHECK(sscanf(buf, "%lu %lu", &size_pages, &rss_pages) == 2, "parse statm '%s'", buf);
    return (size_t)rss_pages * (size_t)sysconf(_SC_PAGESIZE);
}

#define MiB(x) ((size_t)(x) << 20)

/* xorshift64* PRNG: deterministic, thread-local state passed explicitly. */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t rng_seed(uint64_t seed)
{
    /* splitmix64 so that small seeds give well-mixed states; never 0 */
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1;
}

/* uniform in [lo, hi] */
static inline size_t rng_range(uint64_t *s, size_t lo, size_t hi)
{
    return lo + (size_t)(rng_next(s) % (uint64_t)(hi - lo + 1));
}

/* Roughly log-uniform size in [lo, hi] (keeps averages small while covering the range). */
static inline size_t rng_logsize(uint64_t *s, size_t lo, size_t hi)
{
    if (lo == 0)
        lo = 1;
    size_t top = lo;
    int bits = 0;
    while (top < hi && bits < 62) {
        top <<= 1;
        bits++;
    }
    int b = (int)(rng_next(s) % (uint64_t)(bits + 1));
    size_t upper = lo << b;
    if (upper > hi)
        upper = hi;
    size_t lower = b ? (lo << (b - 1)) : lo;
    if (lower > upper)
        lower = upper;
    return rng_range(s, lower, upper);
}

/* ---- block content patterns --------------------------------------------------------------
 * A block of n bytes stamped with (tag, byte): every byte is `byte`, except the first 8 bytes
 * hold `tag` (when n >= 8) and the last 8 bytes hold ~tag (when n >= 16).  pat_check(p, n, tag,
 * byte, len) verifies the first len bytes (len <= n) of such a block and returns the offset of
 * the first wrong byte, or (size_t)-1 when all are right.  Fast word-wise bulk compare. */
static inline void pat_fill(void *p, size_t n, uint64_t tag, unsigned char byte)
{
    unsigned char *c = (unsigned char *)p;
    memset(c, byte, n);
    if (n >= 8)
        memcpy(c, &tag, 8);
    if (n >= 16) {
        uint64_t t = ~tag;
        memcpy(c + n - 8, &t, 8);
    }
}

static inline unsigned char pat_expected(size_t i, size_t n, uint64_t tag, unsigned char byte)
{
    if (n >= 8 && i < 8)
        return ((const unsigned char *)&tag)[i];
    if (n >= 16 && i >= n - 8) {
        uint64_t t = ~tag;
        return ((const unsigned char *)&t)[i - (n - 8)];
    }
    return byte;
}

static inline size_t pat_check(const void *p, size_t n, uint64_t tag, unsigned char byte,
                               size_t len)
{
    const unsigned char *c = (const unsigned char *)p;
    size_t head = n >= 8 ? 8 : 0;
    size_t tail_start = n >= 16 ? n - 8 : n;
    size_t i;
    for (i = 0; i < head && i < len; i++)
        if (c[i] != pat_expected(i, n, tag, byte))
            return i;
    size_t mid_end = tail_start < len ? tail_start : len;
    uint64_t w = 0x0101010101010101ULL * byte;
    i = head;
    while (i < mid_end) {
        /* compare in 4 KiB chunks with an OR-accumulator (vectorisable), locate on mismatch */
        size_t end = i + 4096 < mid_end ? i + 4096 : mid_end;
        uint64_t acc = 0;
        size_t j = i;
        for (; j + 8 <= end; j += 8) {
            uint64_t v;
            memcpy(&v, c + j, 8);
            acc |= v ^ w;
        }
        for (; j < end; j++)
            acc |= (uint64_t)(c[j] ^ byte);
        if (acc) {
            for (j = i; j < end; j++)
                if (c[j] != byte)
                    return j;
        }
        i = end;
    }
    for (i = tail_start; i < n && i < len; i++)
        if (c[i] != pat_expected(i, n, tag, byte))
            return i;
    return (size_t)-1;
}

/* Returns 1 when every byte of [p, p+n) is zero. */
static inline int all_zero(const void *p, size_t n)
{
    const unsigned char *c = (const unsigned char *)p;
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, c + i, 8);
        acc |= v;
    }
    for (; i < n; i++)
        acc |= c[i];
    return acc == 0;
}

/* File name of the library under test: the basename of $POOLMALLOC_TEST_LIB (set by the
 * script), or "poolmalloc". */
static inline const char *allocator_lib_name(void)
{
    const char *s = getenv("POOLMALLOC_TEST_LIB");
    if (s == NULL || *s == 0)
        return "poolmalloc";
    const char *slash = strrchr(s, '/');
    return slash ? slash + 1 : s;
}

/* Does the code at `fn` belong to the library under test? */
static inline int in_allocator_lib(const void *fn, const char **where)
{
    Dl_info info;
    memset(&info, 0, sizeof info);
    if (dladdr(fn, &info) == 0 || info.dli_fname == NULL) {
        *where = "(dladdr failed)";
        return 0;
    }
    *where = info.dli_fname;
    return strstr(info.dli_fname, allocator_lib_name()) != NULL;
}

/* In strict mode, prove that the malloc this program calls really is poolmalloc's (a mistyped
 * LD_PRELOAD path only makes ld.so print a warning and carry on with glibc). */
static inline void require_allocator_active(void)
{
    if (!strict_mode())
        return;
    void *(*volatile m)(size_t) = malloc;
    void (*volatile f)(void *) = free;
    const char *where;
    CHECK(in_allocator_lib((const void *)m, &where), "malloc resolves to %s, not %s (mode %s)",
          where, allocator_lib_name(), test_mode());
    CHECK(in_allocator_lib((const void *)f, &where), "free resolves to %s, not %s (mode %s)",
          where, allocator_lib_name(), test_mode());
}

#endif
