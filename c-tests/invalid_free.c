/* invalid_free.c - proves that misuse is detected loudly instead of corrupting the heap: in a
 * forked child, free() of a stack address, of a pointer into the middle of a malloc'd block
 * (p + 8), of a pointer into a global array, realloc() of a pointer the allocator never handed
 * out (inside an mmap'd page), and a double free of a small block must each kill the child with
 * SIGABRT. In strict mode also a double free of a 16 KiB block after poolmalloc's sweeps gave
 * its pages back (its memory then reads as zero, so the freed key is gone): it must be caught
 * before the block is handed out twice, and, followed by malloc_trim(0), before the pool that
 * the double free made look empty is given back while a block of it is live. And free() of an
 * address in the last pool of the arena that serves malloc(64): that pool was never handed
 * out, so its descriptor was never written (arenas format pools lazily); the pointer must be
 * reported as invalid all the same. And a double free of a 20 KB block whose first free gave
 * its pages back at once: caught by the second free itself. And double frees of a 5 KB block
 * after malloc_trim(0) gave its pages back (the 3 to 8 KiB classes lose free blocks' pages at
 * ticks too, and their frees skip that check while nothing is discarded): from the same
 * thread, caught by the free; from another thread, caught before the block is handed out.
 *
 * Strict mode (poolmalloc): the child's stderr must also contain a line naming "poolmalloc", the
 * function ("free" / "realloc") and, for the foreign/interior pointers, the address exactly as
 * printf's %p prints it (0x...).  The double free line must name "poolmalloc" and "free".
 * System mode (glibc): only SIGABRT is required; glibc's wording differs ("free(): invalid
 * pointer"). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

enum kind {
    FREE_STACK,
    FREE_INTERIOR,
    FREE_GLOBAL,
    FREE_NEVER_USED_POOL,
    REALLOC_FOREIGN,
    DOUBLE_FREE,
    DOUBLE_FREE_SWEPT,
    DOUBLE_FREE_SWEPT_TRIM,
    DOUBLE_FREE_GIVEN_BACK,
    DOUBLE_FREE_MEDIUM_TRIMMED,
    DOUBLE_FREE_MEDIUM_TRIMMED_REMOTE
};

static const char *kind_name[] = {"free(stack address)", "free(p + 8)", "free(global array)",
                                  "free(never used pool)", "realloc(foreign pointer)", "double free",
                                  "double free (swept 16 KiB)", "double free (swept, trim)",
                                  "double free (20 KB, given back)",
                                  "double free (5 KB, trimmed)",
                                  "double free (5 KB, trimmed, remote)"};

static void *free_it(void *p)
{
    free(p);
    return NULL;
}

static void wait_ms(long ms)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}

/* Zero-filled, so glibc finds a zero chunk size in front of the pointer and aborts. */
static _Alignas(64) unsigned char global_buf[256];

static char captured[8192];

static int icontains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *h = hay; *h; h++) {
        size_t i = 0;
        while (i < n && h[i] && tolower((unsigned char)h[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

/* Does one line of `text` contain all of a, b and (if non-NULL) c? */
static int line_has(const char *text, const char *a, const char *b, const char *c)
{
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[1024];
        if (len >= sizeof buf)
            len = sizeof buf - 1;
        memcpy(buf, line, len);
        buf[len] = 0;
        if (icontains(buf, a) && icontains(buf, b) && (c == NULL || icontains(buf, c)))
            return 1;
        if (!end)
            break;
        line = end + 1;
    }
    return 0;
}

/* Runs `k` in a child with stderr captured; returns the wait status. */
static int run_case(enum kind k, void *ptr)
{
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        alarm(20);
        close(fds[0]);
        dup2(fds[1], 2);
        close(fds[1]);
        switch (k) {
        case FREE_STACK:
        case FREE_INTERIOR:
        case FREE_GLOBAL:
        case FREE_NEVER_USED_POOL:
            free(opaque(ptr));
            break;
        case REALLOC_FOREIGN: {
            void *q = realloc(opaque(ptr), 100);
            (void)opaque(q);
            break;
        }
        case DOUBLE_FREE:
            free(opaque(ptr));
            free(opaque(ptr));
            /* a lazy detector may only notice on the next operation on that size class */
            for (int i = 0; i < 4; i++)
                (void)opaque(malloc(32));
            break;
        case DOUBLE_FREE_GIVEN_BACK: {
            /* The first free gives the block's pages back at once (a size not in reuse), so
             * the second meets no freed key in the block's memory. */
            void *keep = malloc(20000), *x = malloc(20000);
            memset(x, 1, 20000);
            free(opaque(x));
            free(opaque(x));
            (void)opaque(keep);
            break;
        }
        case DOUBLE_FREE_MEDIUM_TRIMMED:
        case DOUBLE_FREE_MEDIUM_TRIMMED_REMOTE: {
            /* x first: the class's first block starts its pool, so its first page (with the
             * freed key) lies wholly inside it and goes back too. */
            void *x = malloc(5000), *keep = malloc(5000);
            memset(x, 1, 5000);
            free(opaque(x));
            malloc_trim(0); /* x's pages go back: it reads as zero, no freed key */
            if (k == DOUBLE_FREE_MEDIUM_TRIMMED) {
                free(opaque(x));
            } else {
                pthread_t t;
                CHECK(pthread_create(&t, NULL, free_it, opaque(x)) == 0, "pthread_create");
                CHECK(pthread_join(t, NULL) == 0, "pthread_join");
                for (int i = 0; i < 4; i++)
                    memset(opaque(malloc(5000)), 2, 5000);
            }
            (void)opaque(keep);
            break;
        }
        case DOUBLE_FREE_SWEPT:
        case DOUBLE_FREE_SWEPT_TRIM: {
            void *keep = malloc(16384), *x = malloc(16384);
            memset(x, 1, 16384);
            free(opaque(x));
            /* Two sweeps (30 ms and 640 KB of such allocations apart) discard x's pages. */
            for (int sweep = 0; sweep < 2; sweep++) {
                wait_ms(30);
                for (int i = 0; i < 16; i++)
                    free(opaque(malloc(40000)));
            }
            free(opaque(x));
            if (k == DOUBLE_FREE_SWEPT_TRIM) {
                /* The pool now looks empty though `keep` lives: trim would give it back. */
                malloc_trim(0);
            } else {
                for (int i = 0; i < 4; i++)
                    (void)opaque(malloc(16384));
            }
            (void)opaque(keep);
            break;
        }
        }
        _exit(42); /* survived */
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fds[0], captured + len, sizeof captured - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == sizeof captured - 1)
            break;
    }
    captured[len] = 0;
    close(fds[0]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    return status;
}

int main(void)
{
    require_allocator_active();
    int strict = strict_mode();
    /* glibc: write fatal messages to stderr (our pipe), not to /dev/tty */
    setenv("LIBC_FATAL_STDERR_", "1", 1);

    _Alignas(64) unsigned char stack_buf[256];
    memset(stack_buf, 0, sizeof stack_buf);
    unsigned char *heap = malloc(64);
    CHECK(heap != NULL, "malloc");
    memset(heap, 0x11, 64);
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                               -1, 0);
    CHECK(page != MAP_FAILED, "mmap");
    unsigned char *small = malloc(32);
    CHECK(small != NULL, "malloc");
    /* poolmalloc's arenas are 4 MiB, 4 MiB-aligned, cut into 32 KiB pools for small blocks */
    unsigned char *last_pool =
        (unsigned char *)(((uintptr_t)heap & ~(uintptr_t)((4 << 20) - 1)) + (4 << 20) - 32768);

    struct {
        enum kind k;
        void *ptr;
        const char *fn;
        int need_addr;
        int strict_only; /* how poolmalloc gives pages back: glibc has nothing like it */
    } cases[] = {
        {FREE_STACK, stack_buf + 64, "free", 1, 0},
        {FREE_INTERIOR, heap + 8, "free", 1, 0},
        {FREE_GLOBAL, global_buf + 64, "free", 1, 0},
        {FREE_NEVER_USED_POOL, last_pool + 64, "free", 1, 1},
        {REALLOC_FOREIGN, page + 64, "realloc", 1, 0},
        {DOUBLE_FREE, small, "free", 0, 0},
        {DOUBLE_FREE_SWEPT, NULL, "free", 0, 1},
        {DOUBLE_FREE_SWEPT_TRIM, NULL, "free", 0, 1},
        {DOUBLE_FREE_GIVEN_BACK, NULL, "free", 0, 1},
        {DOUBLE_FREE_MEDIUM_TRIMMED, NULL, "free", 0, 1},
        {DOUBLE_FREE_MEDIUM_TRIMMED_REMOTE, NULL, "free", 0, 1},
    };
    int failures = 0, ran = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].strict_only && !strict) {
            printf("invalid_free: %-26s not run (poolmalloc only)\n", kind_name[cases[i].k]);
            continue;
        }
        ran++;
        char addr[64];
        snprintf(addr, sizeof addr, "%p", cases[i].ptr);
        int st = run_case(cases[i].k, cases[i].ptr);
        const char *why = NULL;
        char whybuf[128];
        if (!WIFSIGNALED(st)) {
            snprintf(whybuf, sizeof whybuf, "child survived (exit status %d), expected SIGABRT",
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            why = whybuf;
        } else if (WTERMSIG(st) != SIGABRT) {
            snprintf(whybuf, sizeof whybuf, "child killed by signal %d (%s), expected SIGABRT",
                     WTERMSIG(st), strsignal(WTERMSIG(st)));
            why = whybuf;
        } else if (strict && !line_has(captured, "poolmalloc", cases[i].fn,
                                       cases[i].need_addr ? addr : NULL)) {
            snprintf(whybuf, sizeof whybuf,
                     "no stderr line contains \"poolmalloc\", \"%s\"%s%s%s", cases[i].fn,
                     cases[i].need_addr ? " and \"" : "", cases[i].need_addr ? addr : "",
                     cases[i].need_addr ? "\"" : "");
            why = whybuf;
        }
        /* first line of the message, for the summary */
        char first[160];
        size_t fl = strcspn(captured, "\n");
        if (fl >= sizeof first)
            fl = sizeof first - 1;
        memcpy(first, captured, fl);
        first[fl] = 0;
        if (why) {
            fprintf(stderr, "invalid_free: FAIL: %s on %s: %s\n  child stderr: <<%s>>\n",
                    kind_name[cases[i].k], addr, why, captured);
            failures++;
        } else {
            printf("invalid_free: %-26s %-16s -> SIGABRT: %s\n", kind_name[cases[i].k], addr,
                   first);
        }
    }
    /* the parent's heap is unaffected by the children's misuse */
    for (int i = 0; i < 64; i++)
        CHECK(heap[i] == 0x11, "parent block changed");
    free(heap);
    free(small);
    munmap(page, 4096);
    if (failures) {
        fprintf(stderr, "invalid_free: %d of %d cases failed\n", failures, ran);
        return 1;
    }
    printf("invalid_free: ok: all %d misuse cases aborted%s\n", ran,
           strict ? " with a poolmalloc diagnostic" : "");
    return 0;
}
