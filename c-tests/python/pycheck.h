/* pycheck.h - the few helpers shared by the CPython-related tests in c-tests/python/.
 *
 * CHECK(cond, fmt, ...) prints "file:line: CHECK failed: cond: message" to stderr and exits 1.
 * Kept separate from ../check.h so that these tests do not depend on the C suite's helpers.
 */
#ifndef POOLMALLOC_PYCHECK_H
#define POOLMALLOC_PYCHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stddef.h>
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

/* Hide a value's provenance from the optimiser so that it cannot fold allocation pairs away
 * or warn about deliberately invalid frees. */
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

/* Fill n bytes with a pattern derived from seed; check_pattern verifies it. */
static inline void fill_pattern(void *p, size_t n, unsigned seed)
{
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = (unsigned char)(seed * 31u + i * 7u + (i >> 8));
}

static inline int check_pattern(const void *p, size_t n, unsigned seed)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(seed * 31u + i * 7u + (i >> 8)))
            return 0;
    return 1;
}

#endif
