/* pyobject_api.c - proves that poolmalloc's PyObject_Malloc/Calloc/Realloc/Free have CPython's
 * semantics, in a process without libpython, linked directly against the library:
 *
 *   - PyObject_Malloc(0) and PyObject_Calloc(0, n) give distinct non-NULL blocks;
 *   - PyObject_Realloc(NULL, n) allocates; PyObject_Realloc(p, 0) keeps a valid block (it does
 *     not free, unlike some realloc implementations);
 *   - PyObject_Free(NULL) does nothing;
 *   - PyObject_Calloc with n * size overflowing gives NULL; PyObject_Calloc memory is zeroed;
 *   - contents survive PyObject_Realloc growth and shrink across sizes from 16 B to 1 MiB;
 *   - the domains mix: a PyObject_Malloc'd block can be realloc()'d and free()'d, a malloc()'d
 *     block can be PyObject_Realloc'd and PyObject_Free'd;
 *   - poolmalloc_owns, which decides whether a pointer is forwarded, is exact: regions mmap'd
 *     by someone else (as pymalloc maps its arenas) are never claimed, even next to large
 *     blocks of ours;
 *   - PyObject_Free of a pointer poolmalloc did not allocate (a stack address), in a process
 *     that has no other PyObject_Free to forward it to, aborts with SIGABRT and a message that
 *     names PyObject_Free (checked in a forked child whose stderr is captured).
 *
 * Built a second time with -DMEM_DOMAIN, every PyObject_* call becomes the PyMem_* one of the
 * same name: the mem domain has the same semantics and must pass the same checks.
 *
 * Build: cc -Wall -Wextra -Werror pyobject_api.c -L<libdir> -lpoolmalloc -Wl,-rpath,<libdir>
 */
#include "pycheck.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#ifdef MEM_DOMAIN
#define PyObject_Malloc PyMem_Malloc
#define PyObject_Calloc PyMem_Calloc
#define PyObject_Realloc PyMem_Realloc
#define PyObject_Free PyMem_Free
#define DOMAIN "PyMem"
#else
#define DOMAIN "PyObject"
#endif

/* CPython's prototypes (Include/objimpl.h, pymem.h); declared here so no Python headers are
 * needed. */
void *PyObject_Malloc(size_t size);
void *PyObject_Calloc(size_t nelem, size_t elsize);
void *PyObject_Realloc(void *ptr, size_t new_size);
void PyObject_Free(void *ptr);

/* From include/poolmalloc.h, declared here to keep the test standalone. */
int poolmalloc_owns(const void *p);

static void test_zero_sizes(void)
{
    enum { N = 64 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = i % 2 ? PyObject_Calloc(opaque_size(0), 8) : PyObject_Malloc(opaque_size(0));
        CHECK(p[i] != NULL, "zero-size block %d is NULL", i);
        CHECK(poolmalloc_owns(p[i]), "zero-size block %d not from poolmalloc", i);
        for (int j = 0; j < i; j++)
            CHECK(p[i] != p[j], "zero-size blocks %d and %d are the same (%p)", i, j, p[i]);
    }
    void *q = PyObject_Calloc(8, opaque_size(0));
    CHECK(q != NULL, "PyObject_Calloc(8, 0) is NULL");
    PyObject_Free(q);
    for (int i = 0; i < N; i++)
        PyObject_Free(p[i]);
}

static void test_realloc_null_and_zero(void)
{
    char *p = PyObject_Realloc(NULL, 100);
    CHECK(p != NULL, "PyObject_Realloc(NULL, 100) is NULL");
    CHECK(poolmalloc_owns(p), "PyObject_Realloc(NULL, 100) not ours");
    memset(p, 0x5a, 100);
    PyObject_Free(p);

    p = PyObject_Realloc(NULL, opaque_size(0));
    CHECK(p != NULL, "PyObject_Realloc(NULL, 0) is NULL");
    PyObject_Free(p);

    /* Realloc(p, 0) must return a valid block, not free p and return NULL. */
    p = PyObject_Malloc(64);
    CHECK(p != NULL, "PyObject_Malloc(64)");
    memset(p, 0x11, 64);
    char *q = PyObject_Realloc(p, opaque_size(0));
    CHECK(q != NULL, "PyObject_Realloc(p, 0) returned NULL (freed the block?)");
    CHECK(poolmalloc_owns(q), "PyObject_Realloc(p, 0) result is not a live poolmalloc block");
    /* The block is usable and can grow again. */
    q = PyObject_Realloc(q, 32);
    CHECK(q != NULL, "regrowing a Realloc(p, 0) block");
    memset(q, 0x22, 32);
    PyObject_Free(q);

    /* Same for a large block. */
    p = PyObject_Malloc(1 << 20);
    CHECK(p != NULL, "PyObject_Malloc(1 MiB)");
    p[0] = 1;
    q = PyObject_Realloc(p, opaque_size(0));
    CHECK(q != NULL, "PyObject_Realloc(large, 0) returned NULL");
    PyObject_Free(q);

    PyObject_Free(NULL); /* no-op */
    PyObject_Free(opaque(NULL));
}

static void test_calloc(void)
{
    /* Overflow of nelem * elsize gives NULL, never a short block. */
    CHECK(PyObject_Calloc(SIZE_MAX / 2 + 2, 2) == NULL, "calloc overflow (SIZE_MAX/2+2, 2)");
    CHECK(PyObject_Calloc(opaque_size(SIZE_MAX), opaque_size(SIZE_MAX)) == NULL,
          "calloc overflow (SIZE_MAX, SIZE_MAX)");
    CHECK(PyObject_Calloc((size_t)1 << 33, (size_t)1 << 33) == NULL, "calloc overflow 2^33*2^33");

    /* Zeroed, including on reused memory: dirty blocks of the same size first. */
    static const size_t sizes[] = {1, 8, 24, 48, 100, 512, 4096, 70000, 1 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        for (int round = 0; round < 4; round++) {
            unsigned char *d = PyObject_Malloc(sizes[s]);
            CHECK(d != NULL, "malloc %zu", sizes[s]);
            memset(d, 0xee, sizes[s]);
            PyObject_Free(d);
            unsigned char *z = PyObject_Calloc(1, sizes[s]);
            CHECK(z != NULL, "calloc %zu", sizes[s]);
            for (size_t i = 0; i < sizes[s]; i++)
                CHECK(z[i] == 0, "calloc(1, %zu) byte %zu is %#x", sizes[s], i, z[i]);
            PyObject_Free(z);
        }
    }
}

static void test_realloc_contents(void)
{
    /* Grow from 16 B to 1 MiB and shrink back, checking the kept prefix at each step. */
    size_t size = 16;
    unsigned char *p = PyObject_Malloc(size);
    CHECK(p != NULL, "malloc 16");
    fill_pattern(p, size, 1);
    unsigned seed = 1;
    while (size < ((size_t)1 << 20)) {
        size_t next = size * 2 + (size & 24); /* also odd-ish sizes between classes */
        if (next > ((size_t)1 << 20))
            next = (size_t)1 << 20;
        unsigned char *q = PyObject_Realloc(p, next);
        CHECK(q != NULL, "grow %zu -> %zu", size, next);
        CHECK(check_pattern(q, size, seed), "contents lost growing %zu -> %zu", size, next);
        seed++;
        fill_pattern(q, next, seed);
        p = q;
        size = next;
    }
    while (size > 16) {
        size_t next = size / 3 > 16 ? size / 3 : 16;
        unsigned char *q = PyObject_Realloc(p, next);
        CHECK(q != NULL, "shrink %zu -> %zu", size, next);
        CHECK(check_pattern(q, next, seed), "contents lost shrinking %zu -> %zu", size, next);
        seed++;
        fill_pattern(q, next, seed);
        p = q;
        size = next;
    }
    PyObject_Free(p);

    /* Many small-object-sized reallocs, the way CPython resizes lists and strings. */
    for (size_t a = 1; a <= 600; a += 7) {
        for (size_t b = 1; b <= 600; b += 61) {
            unsigned char *x = PyObject_Malloc(a);
            CHECK(x != NULL, "malloc %zu", a);
            fill_pattern(x, a, (unsigned)(a + b));
            unsigned char *y = PyObject_Realloc(x, b);
            CHECK(y != NULL, "realloc %zu -> %zu", a, b);
            CHECK(check_pattern(y, a < b ? a : b, (unsigned)(a + b)), "realloc %zu -> %zu contents",
                  a, b);
            PyObject_Free(y);
        }
    }
}

static void test_mixed_domains(void)
{
    static const size_t sizes[] = {0, 1, 16, 200, 513, 4000, 100000, 1 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        /* PyObject_Malloc -> free */
        void *p = PyObject_Malloc(n);
        CHECK(p != NULL, "PyObject_Malloc(%zu)", n);
        free(opaque(p));

        /* PyObject_Malloc -> realloc -> free */
        unsigned char *q = PyObject_Malloc(n + 8);
        CHECK(q != NULL, "PyObject_Malloc(%zu)", n + 8);
        fill_pattern(q, n + 8, 3);
        unsigned char *r = realloc(opaque(q), 2 * n + 64);
        CHECK(r != NULL, "realloc of a PyObject block to %zu", 2 * n + 64);
        CHECK(check_pattern(r, n + 8, 3), "contents lost in realloc of a PyObject block (%zu)", n);
        CHECK(malloc_usable_size(r) >= 2 * n + 64, "usable size after realloc");
        free(r);

        /* malloc -> PyObject_Free */
        void *m = malloc(n);
        CHECK(m != NULL, "malloc(%zu)", n);
        PyObject_Free(opaque(m));

        /* calloc -> PyObject_Realloc -> PyObject_Free */
        unsigned char *c = calloc(1, n + 8);
        CHECK(c != NULL, "calloc(%zu)", n + 8);
        fill_pattern(c, n + 8, 4);
        unsigned char *d = PyObject_Realloc(opaque(c), n + 5000);
        CHECK(d != NULL, "PyObject_Realloc of a malloc block");
        CHECK(check_pattern(d, n + 8, 4), "contents lost in PyObject_Realloc of a malloc block");
        PyObject_Free(d);

        /* posix_memalign -> PyObject_Free */
        void *al = NULL;
        CHECK(posix_memalign(&al, 256, n + 1) == 0 && al != NULL, "posix_memalign");
        PyObject_Free(opaque(al));
    }
}

/* poolmalloc_owns (and with it the "is this pointer foreign?" decision of PyObject_Free and
 * PyObject_Realloc) must be exact: memory that another allocator mmap'd -- pymalloc's 1 MiB
 * arenas, for one -- is never poolmalloc's, even when the kernel places it in the unused tail
 * of an address range where poolmalloc has a mapping. Large blocks of sizes that are not a
 * multiple of the library's mapping granule leave such tails; mmap fills them next. */
static void test_owns_is_exact(void)
{
    enum { NBIG = 6, NMAP = 160 };
    static const size_t big_sizes[NBIG] = {
        (4u << 20) + 4096, (1u << 20) + 100, (5u << 20) / 2, 700000, (9u << 20) / 4, 300000};
    void *big[NBIG];
    for (int i = 0; i < NBIG; i++) {
        big[i] = malloc(big_sizes[i]);
        CHECK(big[i] != NULL && poolmalloc_owns(big[i]), "large malloc %zu", big_sizes[i]);
        memset(big[i], 1, 64);
    }
    void *maps[NMAP];
    size_t len = 256 * 1024;
    int bad = 0;
    for (int i = 0; i < NMAP; i++) {
        maps[i] = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(maps[i] != MAP_FAILED, "mmap: %s", strerror(errno));
        for (size_t off = 0; off < len; off += 4096) {
            if (poolmalloc_owns((char *)maps[i] + off)) {
                if (bad++ < 3)
                    fprintf(stderr, "pyobject_api: poolmalloc_owns(%p) = 1 for a foreign mmap "
                            "region %p..%p\n", (void *)((char *)maps[i] + off), maps[i],
                            (void *)((char *)maps[i] + len));
                break;
            }
        }
    }
    for (int i = 0; i < NMAP; i++)
        munmap(maps[i], len);
    for (int i = 0; i < NBIG; i++)
        free(big[i]);
    CHECK(bad == 0, "%d of %d foreign mmap regions are claimed by poolmalloc_owns: a foreign "
          "pointer there would be freed as poolmalloc's by PyObject_Free", bad, NMAP);
}

/* In a forked child: PyObject_Free of a stack address, with no libpython in the process to
 * forward it to, must abort (SIGABRT) with a message naming PyObject_Free. */
static void test_foreign_free_aborts(const char *which)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        /* Keep core dumps out of the way. */
        signal(SIGABRT, SIG_DFL);
        long on_stack[8] = {0};
        if (strcmp(which, "free") == 0)
            PyObject_Free(opaque(&on_stack[2]));
        else
            (void)PyObject_Realloc(opaque(&on_stack[2]), 64);
        _exit(0); /* not reached if the library does its job */
    }
    close(fds[1]);
    char buf[4096];
    size_t len = 0;
    ssize_t got;
    while (len < sizeof buf - 1 && (got = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)got;
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
          DOMAIN "_%s(stack pointer) without libpython: expected SIGABRT, got status %#x; "
          "stderr: %s",
          which, status, buf);
    const char *want = strcmp(which, "free") == 0 ? DOMAIN "_Free" : DOMAIN "_Realloc";
    CHECK(strstr(buf, want) != NULL, "abort message does not name %s: %s", want, buf);
    CHECK(strstr(buf, "poolmalloc") != NULL, "abort message does not name poolmalloc: %s", buf);
}

int main(void)
{
    test_owns_is_exact(); /* first: later tests leave holes that mmap would fill instead */
    test_zero_sizes();
    test_realloc_null_and_zero();
    test_calloc();
    test_realloc_contents();
    test_mixed_domains();
    test_foreign_free_aborts("free");
    test_foreign_free_aborts("realloc");
    printf("pyobject_api (" DOMAIN "_*): all checks passed\n");
    return 0;
}
