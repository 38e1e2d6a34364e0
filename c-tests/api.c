/* api.c - proves that every exported entry point of the allocator behaves like glibc's malloc:
 * malloc/free/calloc/realloc/reallocarray/posix_memalign/aligned_alloc/memalign/valloc/pvalloc/
 * malloc_usable_size/cfree/malloc_trim and the glibc-internal aliases __libc_malloc, __libc_free,
 * __libc_calloc, __libc_realloc, __libc_memalign, __libc_valloc, __libc_pvalloc,
 * __posix_memalign.  Checks 16-byte alignment, a spread of sizes up to 64 MiB, malloc(0),
 * overflow -> NULL/ENOMEM, calloc zeroing after reuse, realloc semantics and content
 * preservation, alignment argument validation (EINVAL), usable-size stability and that the
 * usable bytes can be written without touching neighbours, errno preservation by free, and that
 * the aliases are one allocator (a block from one family can be freed by the other).
 *
 * All calls go through function pointers held in non-const globals so that the compiler cannot
 * apply its builtin knowledge of malloc (eliding pairs, assuming calloc memory is zero, assuming
 * free leaves errno alone).
 *
 * In strict mode (poolmalloc) additionally: every symbol resolves into the library under test
 * ($POOLMALLOC_TEST_LIB), and
 * aligned_alloc rejects non-power-of-two alignments (C17 / glibc >= 2.38 behaviour; glibc 2.36,
 * which this machine has, treats aligned_alloc as memalign). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
#ifdef PM_DIRECT
/* Only when linked directly against the library under test: glibc 2.36 has no __posix_memalign
 * and exports cfree solely as a non-default version (cfree@GLIBC_2.2.5), which a new program
 * cannot link against.  The LD_PRELOAD/system build looks both up with dlsym instead. */
extern int __posix_memalign(void **, size_t, size_t);
extern void cfree(void *);
#endif

struct api {
    const char *name;
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    int (*posix_memalign)(void **, size_t, size_t);
};

/* Non-static, non-const: the optimiser must assume they can change. */
struct api api_std = {"std", malloc, free, calloc, realloc, memalign, valloc, pvalloc,
                      posix_memalign};
struct api api_libc = {"__libc", __libc_malloc, __libc_free, __libc_calloc, __libc_realloc,
                       __libc_memalign, __libc_valloc, __libc_pvalloc, NULL /* resolved */};
void *(*volatile p_reallocarray)(void *, size_t, size_t) = reallocarray;
void *(*volatile p_aligned_alloc)(size_t, size_t) = aligned_alloc;
size_t (*volatile p_usable)(void *) = malloc_usable_size;
int (*volatile p_trim)(size_t) = malloc_trim;
void (*p_cfree)(void *);

static size_t page;
static unsigned long checks;

#define C(cond, ...)                                                                          \
    do {                                                                                      \
        checks++;                                                                             \
        CHECK(cond, __VA_ARGS__);                                                             \
    } while (0)

static void check_block(const char *what, void *p, size_t n)
{
    C(p != NULL, "%s(%zu) returned NULL", what, n);
    C(is_aligned(p, 16), "%s(%zu) = %p not 16-byte aligned", what, n, p);
    size_t u = p_usable(p);
    C(u >= n, "%s(%zu) = %p: malloc_usable_size %zu < requested", what, n, p, u);
}

static int (*p_posix_memalign_alias)(void **, size_t, size_t);

/* cfree and __posix_memalign: see the comment at their declarations. */
static void resolve_late_symbols(void)
{
#ifdef PM_DIRECT
    p_cfree = cfree;
    p_posix_memalign_alias = __posix_memalign;
#else
    p_cfree = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
    if (p_cfree == NULL && !strict_mode())
        p_cfree = (void (*)(void *))dlvsym(RTLD_DEFAULT, "cfree", "GLIBC_2.2.5");
    p_posix_memalign_alias = (int (*)(void **, size_t, size_t))dlsym(RTLD_DEFAULT,
                                                                     "__posix_memalign");
    if (p_posix_memalign_alias == NULL && !strict_mode()) {
        printf("api: note: __posix_memalign does not exist in this libc; "
               "testing posix_memalign in its place\n");
        p_posix_memalign_alias = posix_memalign;
    }
#endif
    C(p_cfree != NULL, "cfree not found");
    C(p_posix_memalign_alias != NULL, "__posix_memalign not found");
    api_libc.posix_memalign = p_posix_memalign_alias;
}

static void check_symbols_are_poolmalloc(void)
{
    static const char *names[] = {
        "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign",
        "aligned_alloc", "memalign", "valloc", "pvalloc", "malloc_usable_size", "cfree",
        "malloc_trim", "__libc_malloc", "__libc_free", "__libc_calloc", "__libc_realloc",
        "__libc_memalign", "__libc_valloc", "__libc_pvalloc", "__posix_memalign",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        C(sym != NULL, "symbol %s not found", names[i]);
        const char *where;
        C(in_allocator_lib(sym, &where), "symbol %s resolves into %s, not %s", names[i], where,
          allocator_lib_name());
    }
    /* The function pointers this program actually calls, too. */
    const void *singles[] = {(const void *)p_reallocarray, (const void *)p_aligned_alloc,
                             (const void *)p_usable, (const void *)p_trim};
    static const char *snames[] = {"reallocarray", "aligned_alloc", "malloc_usable_size",
                                   "malloc_trim"};
    for (size_t i = 0; i < 4; i++) {
        const char *where;
        C(in_allocator_lib(singles[i], &where), "%s resolves into %s", snames[i], where);
    }
    const struct api *sets[] = {&api_std, &api_libc};
    for (int s = 0; s < 2; s++) {
        void *fns[] = {(void *)sets[s]->malloc,   (void *)sets[s]->free,
                       (void *)sets[s]->calloc,   (void *)sets[s]->realloc,
                       (void *)sets[s]->memalign, (void *)sets[s]->valloc,
                       (void *)sets[s]->pvalloc,  (void *)sets[s]->posix_memalign,
                       (void *)p_cfree};
        static const char *fnames[] = {"malloc",  "free",    "calloc",
                                       "realloc", "memalign", "valloc",
                                       "pvalloc", "posix_memalign", "cfree"};
        for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
            const char *where;
            C(in_allocator_lib(fns[i], &where), "%s function #%zu (%s) resolves into %s",
              sets[s]->name, i, fnames[i], where);
        }
    }
}

static const size_t sizes[] = {0,    1,    15,   16,         17,      511,     512,
                               513,  1024, 4096, 0 /*page*/, 100000, 1 << 20, 64 << 20};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void test_sizes(const struct api *A)
{
    for (size_t i = 0; i < NSIZES; i++) {
        size_t n = sizes[i] == 0 && i == 10 ? page : sizes[i];
        unsigned char *p = A->malloc(opaque_size(n));
        check_block("malloc", p, n);
        size_t u = p_usable(p);
        memset(p, 0x5A, u);
        C(p[0] == 0x5A && p[u - (u > 0)] == 0x5A, "write/readback");
        A->free(p);

        p = opaque(A->calloc(1, opaque_size(n)));
        check_block("calloc", p, n);
        C(all_zero(p, n), "calloc(1, %zu) not zeroed", n);
        A->free(p);

        if (n >= 16) {
            p = opaque(A->calloc(opaque_size(n / 16), 16));
            check_block("calloc(n/16,16)", p, n / 16 * 16);
            C(all_zero(p, n / 16 * 16), "calloc(%zu, 16) not zeroed", n / 16);
            A->free(p);
        }
    }
}

static void test_malloc0(const struct api *A)
{
    void *ps[64];
    for (int i = 0; i < 64; i++) {
        ps[i] = A->malloc(opaque_size(0));
        C(ps[i] != NULL, "%s malloc(0) returned NULL", A->name);
        C(is_aligned(ps[i], 16), "malloc(0) = %p unaligned", ps[i]);
        for (int j = 0; j < i; j++)
            C(ps[i] != ps[j], "malloc(0) returned %p twice", ps[i]);
    }
    for (int i = 0; i < 64; i++)
        A->free(ps[i]);
    void *c = A->calloc(0, 0);
    C(c != NULL, "calloc(0,0) returned NULL");
    A->free(c);
}

static void test_overflow(const struct api *A)
{
    size_t huge[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, SIZE_MAX - 4095, SIZE_MAX - 15};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        errno = 0;
        void *p = A->malloc(opaque_size(huge[i]));
        C(p == NULL, "%s malloc(%#zx) = %p, expected NULL", A->name, huge[i], p);
        C(errno == ENOMEM, "malloc(%#zx): errno %d, expected ENOMEM", huge[i], errno);

        errno = 0;
        p = A->calloc(1, opaque_size(huge[i]));
        C(p == NULL && errno == ENOMEM, "calloc(1, %#zx) = %p errno %d", huge[i], p, errno);

        errno = 0;
        p = A->memalign(64, opaque_size(huge[i]));
        C(p == NULL && errno == ENOMEM, "memalign(64, %#zx) = %p errno %d", huge[i], p, errno);

        errno = 0;
        p = A->valloc(opaque_size(huge[i]));
        C(p == NULL && errno == ENOMEM, "valloc(%#zx) = %p errno %d", huge[i], p, errno);

        errno = 0;
        p = A->pvalloc(opaque_size(huge[i]));
        C(p == NULL && errno == ENOMEM, "pvalloc(%#zx) = %p errno %d", huge[i], p, errno);

        p = (void *)0x1234;
        int rc = A->posix_memalign(&p, 64, opaque_size(huge[i]));
        C(rc == ENOMEM, "posix_memalign(64, %#zx) returned %d, expected ENOMEM", huge[i], rc);
    }

    errno = 0;
    void *p = A->calloc(opaque_size(SIZE_MAX / 2), 3);
    C(p == NULL, "calloc(SIZE_MAX/2, 3) = %p, expected NULL", p);
    C(errno == ENOMEM, "calloc(SIZE_MAX/2, 3): errno %d, expected ENOMEM", errno);
    errno = 0;
    p = A->calloc(opaque_size((size_t)1 << 33), (size_t)1 << 33);
    C(p == NULL && errno == ENOMEM, "calloc(2^33, 2^33) = %p errno %d", p, errno);
    errno = 0;
    p = A->calloc(opaque_size(SIZE_MAX), SIZE_MAX);
    C(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX, SIZE_MAX) = %p errno %d", p, errno);

    /* realloc / reallocarray failures leave the original block intact */
    unsigned char *q = A->malloc(100);
    check_block("malloc", q, 100);
    pat_fill(q, 100, 0x1122334455667788ULL, 0x3C);
    errno = 0;
    p = A->realloc(q, opaque_size(SIZE_MAX));
    C(p == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX) = %p errno %d", p, errno);
    C(pat_check(q, 100, 0x1122334455667788ULL, 0x3C, 100) == (size_t)-1,
      "block damaged by failed realloc");
    errno = 0;
    p = A->realloc(q, opaque_size((size_t)PTRDIFF_MAX + 1));
    C(p == NULL && errno == ENOMEM, "realloc(p, PTRDIFF_MAX+1) = %p errno %d", p, errno);
    errno = 0;
    p = p_reallocarray(q, opaque_size(SIZE_MAX / 2), 3);
    C(p == NULL, "reallocarray(p, SIZE_MAX/2, 3) = %p, expected NULL", p);
    C(errno == ENOMEM, "reallocarray overflow: errno %d, expected ENOMEM", errno);
    C(pat_check(q, 100, 0x1122334455667788ULL, 0x3C, 100) == (size_t)-1,
      "block damaged by failed reallocarray");
    C(p_usable(q) >= 100, "usable size of %p shrank after failed reallocarray", (void *)q);
    /* a working reallocarray */
    p = p_reallocarray(q, 50, 8);
    check_block("reallocarray(50,8)", p, 400);
    C(pat_check(p, 100, 0x1122334455667788ULL, 0x3C, 100) == (size_t)-1,
      "reallocarray lost contents");
    A->free(p);
    p = p_reallocarray(NULL, 10, 10);
    check_block("reallocarray(NULL,10,10)", p, 100);
    A->free(p);
}

static void test_calloc_reuse(const struct api *A)
{
    static const size_t cs[] = {1,   8,    24,   48,    100,       256,        500,
                                513, 2000, 4000, 10240, 100 * 1024, 300 * 1024, 1 << 20};
    enum { BATCH = 16, ROUNDS = 12 };
    for (size_t k = 0; k < sizeof cs / sizeof cs[0]; k++) {
        size_t n = cs[k];
        for (int r = 0; r < ROUNDS; r++) {
            void *b[BATCH];
            for (int i = 0; i < BATCH; i++) {
                b[i] = A->malloc(opaque_size(n));
                check_block("malloc", b[i], n);
                memset(b[i], 0xAB, p_usable(b[i]));
            }
            for (int i = 0; i < BATCH; i++)
                A->free(opaque(b[i]));
            for (int i = 0; i < BATCH; i++) {
                /* alternate the ways of asking for n bytes */
                if ((i & 1) && n % 8 == 0)
                    b[i] = opaque(A->calloc(opaque_size(n / 8), 8));
                else
                    b[i] = opaque(A->calloc(opaque_size(n), 1));
                check_block("calloc", b[i], n);
                C(all_zero(b[i], n), "%s calloc(%zu) after reuse not zeroed (round %d, #%d)",
                  A->name, n, r, i);
            }
            for (int i = 0; i < BATCH; i++)
                A->free(b[i]);
        }
    }
}

static void test_realloc(const struct api *A)
{
    /* realloc(NULL, n) behaves as malloc(n) */
    void *p = A->realloc(NULL, opaque_size(123));
    check_block("realloc(NULL)", p, 123);
    A->free(p);
    p = A->realloc(NULL, opaque_size(0));
    C(p != NULL, "realloc(NULL, 0) returned NULL (glibc returns a minimum block)");
    A->free(p);

    /* realloc(p, 0) frees and returns NULL (glibc) */
    static const size_t zs[] = {1, 100, 5000, 1 << 20};
    for (size_t i = 0; i < 4; i++) {
        p = A->malloc(zs[i]);
        check_block("malloc", p, zs[i]);
        p = A->realloc(p, opaque_size(0));
        C(p == NULL, "%s realloc(p[%zu], 0) returned %p, glibc returns NULL after freeing",
          A->name, zs[i], p);
    }

    static const size_t pairs[][2] = {
        {1, 2},          {16, 17},           {24, 100},        {100, 24},
        {500, 513},      {513, 500},         {512, 4096},      {100, 1 << 20},
        {4096, 100000},  {100000, 100001},   {1 << 20, 64 << 20}, {64 << 20, 1 << 20},
        {1 << 20, 200},  {200000, 200},      {10240, 10},      {3 << 20, (3 << 20) + 1},
        {(3 << 20) + 1, 3 << 20},            {70000, 140000},  {140000, 70000},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        size_t from = pairs[i][0], to = pairs[i][1];
        uint64_t tag = 0xABCD000000000000ULL + i;
        unsigned char byte = (unsigned char)(0x11 + i * 13);
        void *a = A->malloc(opaque_size(from));
        check_block("malloc", a, from);
        pat_fill(a, from, tag, byte);
        void *b = A->realloc(a, opaque_size(to));
        check_block("realloc", b, to);
        size_t keep = from < to ? from : to;
        size_t bad = pat_check(b, from, tag, byte, keep);
        C(bad == (size_t)-1, "%s realloc %zu -> %zu lost contents at offset %zu", A->name, from,
          to, bad);
        memset(b, 0x77, to);
        A->free(b);
    }

    /* growth chain: 1 byte to 8 MiB by factors of ~1.3, contents kept at every step */
    size_t n = 1;
    unsigned char *c = A->malloc(1);
    check_block("malloc", c, 1);
    c[0] = 0xC3;
    while (n < (8u << 20)) {
        size_t m = n + n / 3 + 1;
        unsigned char *d = A->realloc(c, opaque_size(m));
        check_block("realloc(grow)", d, m);
        for (size_t j = 0; j < n; j += 97)
            C(d[j] == (unsigned char)(0xC3 ^ (j & 0xff)), "grow chain %zu -> %zu: byte %zu is %#x",
              n, m, j, d[j]);
        for (size_t j = n; j < m; j++)
            d[j] = (unsigned char)(0xC3 ^ (j & 0xff));
        c = d;
        n = m;
    }
    /* shrink chain back down */
    while (n > 1) {
        size_t m = n / 2;
        unsigned char *d = A->realloc(c, opaque_size(m));
        check_block("realloc(shrink)", d, m);
        for (size_t j = 0; j < m; j += 89)
            C(d[j] == (unsigned char)(0xC3 ^ (j & 0xff)), "shrink chain %zu -> %zu: byte %zu",
              n, m, j);
        C(d[m - 1] == (unsigned char)(0xC3 ^ ((m - 1) & 0xff)), "shrink chain lost last byte");
        c = d;
        n = m;
    }
    A->free(c);
}

static void test_posix_memalign(const struct api *A)
{
    static const size_t bad[] = {0, 3, 24, sizeof(void *) / 2, 12, 48, 4097, 1, 2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *sentinel = (void *)0xdeadbeef0UL;
        void *p = sentinel;
        errno = 0;
        int rc = A->posix_memalign(&p, opaque_size(bad[i]), 64);
        C(rc == EINVAL, "%s posix_memalign(align %zu) returned %d, expected EINVAL", A->name,
          bad[i], rc);
        C(p == sentinel, "posix_memalign(align %zu) failed but wrote *memptr = %p", bad[i], p);
    }
    static const size_t good[] = {8, 16, 32, 64, 128, 256, 4096, 1 << 16, 1 << 21, 1 << 23};
    static const size_t ns[] = {0, 1, 100, 5000, 70000, 1 << 20};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            void *p = NULL;
            int rc = A->posix_memalign(&p, opaque_size(good[i]), opaque_size(ns[k]));
            C(rc == 0, "%s posix_memalign(%zu, %zu) returned %d", A->name, good[i], ns[k], rc);
            C(p != NULL, "posix_memalign(%zu, %zu) gave NULL", good[i], ns[k]);
            C(is_aligned(p, good[i]), "posix_memalign(%zu, %zu) = %p misaligned", good[i],
              ns[k], p);
            C(is_aligned(p, 16), "posix_memalign(%zu) = %p not 16-aligned", good[i], p);
            C(p_usable(p) >= ns[k], "posix_memalign usable size %zu < %zu", p_usable(p), ns[k]);
            memset(p, 0xE1, ns[k]);
            A->free(p);
        }
    }
}

static void test_memalign_family(const struct api *A)
{
    /* memalign rounds a non-power-of-two alignment up to the next power of two */
    static const size_t nonpow[][2] = {{24, 32}, {48, 64}, {100, 128}, {3000, 4096}};
    for (size_t i = 0; i < 4; i++) {
        void *p = A->memalign(opaque_size(nonpow[i][0]), 100);
        C(p != NULL, "%s memalign(%zu, 100) = NULL", A->name, nonpow[i][0]);
        C(is_aligned(p, nonpow[i][1]), "memalign(%zu) = %p not aligned to %zu", nonpow[i][0],
          p, nonpow[i][1]);
        C(p_usable(p) >= 100, "memalign usable");
        A->free(p);
    }
    static const size_t al[] = {0, 1, 2, 8, 16, 32, 64, 4096, 1 << 16, 1 << 21};
    for (size_t i = 0; i < sizeof al / sizeof al[0]; i++) {
        size_t a = al[i] < 16 ? 16 : al[i];
        void *p = A->memalign(opaque_size(al[i]), 1000);
        C(p != NULL && is_aligned(p, a), "memalign(%zu, 1000) = %p", al[i], p);
        C(p_usable(p) >= 1000, "memalign usable");
        memset(p, 1, 1000);
        A->free(p);
    }
    static const size_t vs[] = {1, 100, 4095, 4096, 4097, 10000, 1 << 20};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        void *p = A->valloc(opaque_size(vs[i]));
        C(p != NULL && is_aligned(p, page), "%s valloc(%zu) = %p not page aligned", A->name,
          vs[i], p);
        C(p_usable(p) >= vs[i], "valloc usable");
        memset(p, 2, vs[i]);
        A->free(p);

        size_t rounded = (vs[i] + page - 1) / page * page;
        p = A->pvalloc(opaque_size(vs[i]));
        C(p != NULL && is_aligned(p, page), "%s pvalloc(%zu) = %p not page aligned", A->name,
          vs[i], p);
        C(p_usable(p) >= rounded, "pvalloc(%zu): usable %zu < page-rounded %zu", vs[i],
          p_usable(p), rounded);
        memset(p, 3, rounded);
        A->free(p);
    }
}

static void test_aligned_alloc(void)
{
    static const size_t ok[][2] = {{16, 16}, {64, 128}, {64, 100}, {4096, 4096}, {1 << 21, 100}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        void *p = p_aligned_alloc(ok[i][0], opaque_size(ok[i][1]));
        C(p != NULL && is_aligned(p, ok[i][0]), "aligned_alloc(%zu, %zu) = %p", ok[i][0],
          ok[i][1], p);
        C(p_usable(p) >= ok[i][1], "aligned_alloc usable");
        memset(p, 4, ok[i][1]);
        free(p);
    }
    static const size_t bad[] = {3, 24, 48, 100};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        void *p = p_aligned_alloc(opaque_size(bad[i]), 192);
        if (strict_mode()) {
            C(p == NULL, "aligned_alloc(%zu, 192) = %p, expected NULL", bad[i], p);
            C(errno == EINVAL, "aligned_alloc(%zu): errno %d, expected EINVAL", bad[i], errno);
        } else if (p != NULL) {
            /* glibc < 2.38 rounds like memalign; at least it must be a usable block */
            C(is_aligned(p, 16) && p_usable(p) >= 192, "aligned_alloc(%zu) = %p", bad[i], p);
            free(p);
        } else {
            C(errno == EINVAL, "aligned_alloc(%zu): errno %d", bad[i], errno);
        }
    }
}

static void test_usable_size(const struct api *A)
{
    enum { N = 1400 };
    static void *ps[N];
    static size_t req[N], us[N];
    C(p_usable(NULL) == 0, "malloc_usable_size(NULL) = %zu", p_usable(NULL));
    for (size_t i = 0; i < N; i++) {
        size_t n = i < 1100 ? i : (i - 1100) * 997 + (i % 7) * 4096;
        if (i % 200 == 199)
            n = (size_t)1 << (10 + i / 200); /* a few large ones */
        req[i] = n;
        ps[i] = A->malloc(opaque_size(n));
        check_block("malloc", ps[i], n);
        us[i] = p_usable(ps[i]);
        C(p_usable(ps[i]) == us[i], "usable size of %p not stable", ps[i]);
    }
    /* other allocation activity, then query again */
    void *noise[300];
    for (int i = 0; i < 300; i++)
        noise[i] = A->malloc((size_t)(i * 37 % 3000));
    for (int i = 0; i < 300; i += 2)
        A->free(noise[i]);
    for (size_t i = 0; i < N; i++)
        C(p_usable(ps[i]) == us[i], "%s malloc_usable_size(%p) changed from %zu to %zu (req %zu)",
          A->name, ps[i], us[i], p_usable(ps[i]), req[i]);
    for (int i = 1; i < 300; i += 2)
        A->free(noise[i]);
    for (size_t i = 0; i < N; i++) {
        C(p_usable(ps[i]) == us[i], "usable size changed after frees");
        A->free(ps[i]);
    }
}

/* Fill every usable byte of many same-size blocks with distinct bytes, verify nothing bled into a
 * neighbour; then free every other block, reallocate and repeat. */
static void test_neighbours(const struct api *A)
{
    static const size_t ns[] = {1,    8,    16,   24,    32,    48,     64,     100,
                                128,  255,  256,  500,   512,   513,    1000,   1024,
                                2000, 4096, 5000, 10000, 65536, 100000, 200000, 1 << 20};
    enum { NB = 40 };
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        size_t n = ns[k];
        unsigned char *b[NB];
        size_t u[NB];
        for (int i = 0; i < NB; i++) {
            b[i] = A->malloc(opaque_size(n));
            check_block("malloc", b[i], n);
            u[i] = p_usable(b[i]);
            memset(b[i], (unsigned char)(i * 5 + 1), u[i]);
        }
        for (int round = 0; round < 2; round++) {
            for (int i = 0; i < NB; i++) {
                checks++;
                for (size_t j = 0; j < u[i]; j++)
                    CHECK(b[i][j] == (unsigned char)(i * 5 + 1 + round * 100),
                      "%s size %zu: block %d (%p, usable %zu) byte %zu = %#x overwritten", A->name,
                      n, i, (void *)b[i], u[i], j, b[i][j]);
            }
            for (int i = 0; i < NB; i += 2) {
                A->free(b[i]);
                b[i] = NULL;
            }
            for (int i = 0; i < NB; i++) {
                if (b[i] == NULL) {
                    b[i] = A->malloc(opaque_size(n));
                    check_block("malloc", b[i], n);
                    u[i] = p_usable(b[i]);
                }
                memset(b[i], (unsigned char)(i * 5 + 1 + (round + 1) * 100), u[i]);
            }
        }
        for (int i = 0; i < NB; i++)
            A->free(b[i]);
    }
}

static void test_free_errno(const struct api *A)
{
    static const size_t ns[] = {0, 16, 100, 600, 10000, 200000, 1 << 20, 8 << 20};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        void *p = A->malloc(opaque_size(ns[i]));
        C(p != NULL, "malloc");
        memset(p, 9, ns[i]);
        errno = EBUSY;
        A->free(p);
        C(errno == EBUSY, "%s free of a %zu-byte block changed errno to %d", A->name, ns[i],
          errno);
    }
    errno = EBUSY;
    A->free(NULL);
    C(errno == EBUSY, "free(NULL) changed errno to %d", errno);
    /* blocks from the aligned paths too */
    void *p = A->memalign(4096, 100);
    C(p != NULL, "memalign");
    errno = ERANGE;
    A->free(p);
    C(errno == ERANGE, "free of memalign block changed errno to %d", errno);
}

static void test_cross_family(void)
{
    /* The aliases must be the same allocator: a block from one family is freed by the other. */
    void *p = __libc_malloc(100);
    check_block("__libc_malloc", p, 100);
    free(p);
    p = malloc(200);
    check_block("malloc", p, 200);
    __libc_free(p);
    p = __libc_calloc(10, 10);
    check_block("__libc_calloc", p, 100);
    C(all_zero(opaque(p), 100), "__libc_calloc not zeroed");
    p = realloc(p, 5000);
    check_block("realloc", p, 5000);
    p = __libc_realloc(p, 100000);
    check_block("__libc_realloc", p, 100000);
    __libc_free(p);
    p = __libc_memalign(256, 300);
    C(p && is_aligned(p, 256), "__libc_memalign(256) = %p", p);
    free(p);
    p = __libc_valloc(10);
    C(p && is_aligned(p, page), "__libc_valloc = %p", p);
    p = realloc(p, 20000);
    check_block("realloc(valloc)", p, 20000);
    free(p);
    p = __libc_pvalloc(10);
    C(p && is_aligned(p, page) && p_usable(p) >= page, "__libc_pvalloc = %p", p);
    __libc_free(p);
    C(p_posix_memalign_alias(&p, 64, 64) == 0 && is_aligned(p, 64), "__posix_memalign");
    p_cfree(p);
    p = malloc(1 << 20);
    check_block("malloc", p, 1 << 20);
    __libc_free(p);
    p = aligned_alloc(64, 64 * 3);
    C(p && is_aligned(p, 64), "aligned_alloc(64, 192) = %p", p);
    __libc_free(p);

    /* cfree: frees, tolerates NULL, keeps errno */
    p_cfree(NULL);
    p = malloc(77);
    C(p != NULL, "malloc");
    errno = EBUSY;
    p_cfree(p);
    C(errno == EBUSY, "cfree changed errno to %d", errno);
    p = malloc(3 << 20);
    C(p != NULL, "malloc");
    p_cfree(p);
}

static void test_trim(void)
{
    void *ps[100];
    for (int i = 0; i < 100; i++)
        ps[i] = malloc((size_t)i * 1000 + 1);
    for (int i = 0; i < 100; i++)
        free(ps[i]);
    int r = p_trim(0);
    C(r == 0 || r == 1, "malloc_trim(0) returned %d", r);
    r = p_trim(1 << 20);
    C(r == 0 || r == 1, "malloc_trim(1 MiB) returned %d", r);
    /* still fully functional afterwards */
    void *p = malloc(1000);
    check_block("malloc after trim", p, 1000);
    memset(p, 1, 1000);
    free(p);
}

int main(void)
{
    page = (size_t)sysconf(_SC_PAGESIZE);
    require_allocator_active();
    resolve_late_symbols();
    if (strict_mode())
        check_symbols_are_poolmalloc();

    const struct api *sets[] = {&api_std, &api_libc};
    for (int s = 0; s < 2; s++) {
        const struct api *A = sets[s];
        test_sizes(A);
        test_malloc0(A);
        test_overflow(A);
        test_calloc_reuse(A);
        test_realloc(A);
        test_posix_memalign(A);
        test_memalign_family(A);
        test_usable_size(A);
        test_neighbours(A);
        test_free_errno(A);
    }
    test_aligned_alloc();
    test_cross_family();
    test_trim();
    printf("api: %lu checks passed (mode %s%s)\n", checks, test_mode(),
           strict_mode() ? ", strict" : "");
    return 0;
}
