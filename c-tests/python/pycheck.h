/* pycheck.h - the few helpers shared by the CPython-related tests in c-tests/python/.
 *
 * CHECK(cond, fmt, ...) prints "file:line: CHECK failed: cond: message" to stderr and exits 1.
 * CHECK and the optimiser barriers are the C suite's (../check.h); the patterns are these tests' own.
 */
#ifndef POOLMALLOC_PYCHECK_H
#define POOLMALLOC_PYCHECK_H

/* CHECK, opaque() and opaque_size() come from the C suite's helpers. */
#include "../check.h"

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
