/* workload.c - programs whose allocator statistics are known, for scripts/stats-tests.sh.
 *
 * Built twice: with -I include and linked directly against libpoolmalloc (it calls the C API),
 * and with -DWORKLOAD_DLSYM, not linked, to run under LD_PRELOAD (the API is found by dlsym).  On success a mode prints nothing on stderr (the script checks
 * that stderr holds only what the allocator wrote); failures print "workload: ..." and exit 1.
 *
 * usage: workload MODE
 *   empty             does nothing: start-up baseline.
 *   skeleton          the `known` program with every counted call left out (same threads,
 *                     barriers and joins): the baseline `known` is measured against.
 *   known             two threads allocate K_PER_THREAD blocks of K_SIZE bytes each; after a
 *                     barrier each frees half of the OTHER thread's blocks (remote frees) and
 *                     half of its own; each also leaves K_LEAK blocks of K_LEAK_SIZE bytes live
 *                     when it exits.  Main makes K_CALLOC calloc, K_REALLOC_ROUNDS x 2 realloc,
 *                     K_MEMALIGN posix_memalign and K_ALIGNED_ALLOC aligned_alloc calls, keeps
 *                     K_KEEP blocks of K_SIZE bytes live, and allocates 3 large blocks of 1 MiB:
 *                     one is realloc'd to 3 MiB (an mremap), one freed, two left live at exit.
 *                     `workload counts` prints the expected call counts as JSON on stdout.
 *   exit-from-thread  a secondary thread allocates, then calls exit(0) while main waits.
 *   _exit             allocates, then calls _exit(0): no atexit handler runs.
 *   fork              allocates, forks; the child allocates and calls exit(0), the parent waits
 *                     and returns 0.  Prints "parent=PID child=PID" on stdout.
 *   api               checks poolmalloc_stats_json (short buffer, len 0, len 1, full buffer,
 *                     a few fields) and poolmalloc_stats_print (to a pipe), and that producing
 *                     reports makes no counted allocator call.  Prints the full JSON report on
 *                     stdout for the script to parse.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "poolmalloc.h"

#ifdef WORKLOAD_DLSYM
/* The build run under LD_PRELOAD is not linked against the library: find the C API at run time
 * (the preloaded library is in the global scope).  Resolved before any check that counts. */
#include <dlfcn.h>
static size_t (*p_stats_json)(char *, size_t);
static void (*p_stats_print)(int);
#define poolmalloc_stats_json p_stats_json
#define poolmalloc_stats_print p_stats_print
#endif

#define K_THREADS 2
#define K_PER_THREAD 5000
#define K_SIZE 100 /* served by the 112-byte class */
#define K_LEAK 10
#define K_LEAK_SIZE 200 /* served by the 208-byte class */
#define K_KEEP 100
#define K_CALLOC 50
#define K_REALLOC_ROUNDS 20
#define K_MEMALIGN 30
#define K_ALIGNED_ALLOC 20
#define MIB ((size_t)1 << 20)

/* Keep the compiler from folding malloc/free pairs away: the pointer escapes into asm. */
static void *escape(void *p)
{
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

static void fail(const char *what)
{
    char msg[256];
    int n = snprintf(msg, sizeof msg, "workload: %s (errno %d)\n", what, errno);
    if (n > 0)
        (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    _exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = escape(malloc(n));
    if (!p)
        fail("malloc returned NULL");
    memset(p, 0xab, n < 64 ? n : 64);
    return p;
}

/* ------------------------------------------------------------------ known / skeleton */

static int g_work; /* 0 for the skeleton */
static pthread_barrier_t g_barrier;
static void *g_blocks[K_THREADS][K_PER_THREAD];
static void *g_leak[K_THREADS][K_LEAK];
static void *g_keep[K_KEEP];
static void *g_large_live[2];

static void *known_thread(void *arg)
{
    int me = (int)(intptr_t)arg, other = 1 - me;
    if (g_work) {
        for (int i = 0; i < K_PER_THREAD; i++)
            g_blocks[me][i] = xmalloc(K_SIZE);
        for (int i = 0; i < K_LEAK; i++)
            g_leak[me][i] = xmalloc(K_LEAK_SIZE);
    }
    pthread_barrier_wait(&g_barrier);
    if (g_work) {
        /* First half of the other thread's blocks: remote frees, both owners alive. */
        for (int i = 0; i < K_PER_THREAD / 2; i++)
            free(escape(g_blocks[other][i]));
        /* Second half of our own: local frees. */
        for (int i = K_PER_THREAD / 2; i < K_PER_THREAD; i++)
            free(escape(g_blocks[me][i]));
    }
    /* Nobody exits (and abandons pools) until both are done freeing. */
    pthread_barrier_wait(&g_barrier);
    return NULL;
}

static void known_main_calls(void)
{
    for (int i = 0; i < K_KEEP; i++)
        g_keep[i] = xmalloc(K_SIZE);
    for (int i = 0; i < K_CALLOC; i++) {
        unsigned char *p = escape(calloc(10, 20));
        if (!p || p[199] != 0)
            fail("calloc");
        free(p);
    }
    for (int i = 0; i < K_REALLOC_ROUNDS; i++) {
        /* escape(NULL): gcc would otherwise turn realloc(NULL, n) into malloc(n). */
        char *p = escape(realloc(escape(NULL), 24));
        if (!p)
            fail("realloc(NULL, 24)");
        memset(p, 1, 24);
        p = escape(realloc(p, 300));
        if (!p || p[23] != 1)
            fail("realloc(p, 300)");
        free(p);
    }
    for (int i = 0; i < K_MEMALIGN; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, 100) != 0 || ((uintptr_t)p & 63))
            fail("posix_memalign");
        free(escape(p));
    }
    for (int i = 0; i < K_ALIGNED_ALLOC; i++) {
        void *p = escape(aligned_alloc(256, 256));
        if (!p || ((uintptr_t)p & 255))
            fail("aligned_alloc");
        free(p);
    }
    /* Large blocks: 3 x 1 MiB; a grows to 3 MiB (mremap), b is freed, a and c stay live. */
    char *a = xmalloc(MIB), *b = xmalloc(MIB), *c = xmalloc(MIB);
    memset(a, 7, MIB);
    memset(c, 9, MIB);
    a = escape(realloc(a, 3 * MIB));
    if (!a || a[MIB - 1] != 7)
        fail("realloc of a large block");
    a[3 * MIB - 1] = 1;
    free(b);
    g_large_live[0] = a;
    g_large_live[1] = c;
}

static int run_known(int work)
{
    pthread_t t[K_THREADS];
    g_work = work;
    if (pthread_barrier_init(&g_barrier, NULL, K_THREADS) != 0)
        fail("pthread_barrier_init");
    for (int i = 0; i < K_THREADS; i++)
        if (pthread_create(&t[i], NULL, known_thread, (void *)(intptr_t)i) != 0)
            fail("pthread_create");
    for (int i = 0; i < K_THREADS; i++)
        if (pthread_join(t[i], NULL) != 0)
            fail("pthread_join");
    pthread_barrier_destroy(&g_barrier);
    if (work)
        known_main_calls();
    return 0;
}

/* What `known` adds to the skeleton's counts, derived from the constants above. */
static int print_counts(void)
{
    long mallocs = K_THREADS * (K_PER_THREAD + K_LEAK) + K_KEEP + 3;
    long frees = K_THREADS * K_PER_THREAD + K_CALLOC + K_REALLOC_ROUNDS + K_MEMALIGN + K_ALIGNED_ALLOC + 1;
    printf("{\"calls\":{\"malloc\":%ld,\"calloc\":%d,\"realloc\":%d,\"free\":%ld,\"aligned\":%d,"
           "\"pyobject\":0,\"remote_free\":%d},",
           mallocs, K_CALLOC, 2 * K_REALLOC_ROUNDS + 1, frees, K_MEMALIGN + K_ALIGNED_ALLOC,
           K_THREADS * (K_PER_THREAD / 2));
    printf("\"small_size\":%d,\"threads\":%d,\"per_thread\":%d,\"keep\":%d,"
           "\"leak_size\":%d,\"leak_per_thread\":%d,"
           "\"large_live\":2,\"large_live_bytes\":%zu,\"large_peak_min\":%zu,\"large_mremaps\":1}\n",
           K_SIZE, K_THREADS, K_PER_THREAD, K_KEEP, K_LEAK_SIZE, K_LEAK, 4 * MIB, 5 * MIB);
    return 0;
}

/* ------------------------------------------------------------------ exit-from-thread */

static void *exiting_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        g_blocks[0][i] = xmalloc(K_SIZE);
    exit(0);
}

static int run_exit_from_thread(void)
{
    pthread_t t;
    g_keep[0] = xmalloc(K_SIZE);
    if (pthread_create(&t, NULL, exiting_thread, NULL) != 0)
        fail("pthread_create");
    pthread_join(t, NULL); /* never returns: the thread ends the process */
    for (;;)
        pause();
    return 0;
}

/* ------------------------------------------------------------------ _exit */

static int run_underscore_exit(void)
{
    for (int i = 0; i < 1000; i++)
        g_blocks[0][i] = xmalloc(K_SIZE);
    g_large_live[0] = xmalloc(MIB);
    _exit(0);
}

/* ------------------------------------------------------------------ fork */

static int run_fork(void)
{
    for (int i = 0; i < 100; i++)
        g_blocks[0][i] = xmalloc(K_SIZE);
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        fail("fork");
    if (child == 0) {
        for (int i = 0; i < 100; i++)
            g_blocks[1][i] = xmalloc(K_SIZE);
        exit(0);
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child)
        fail("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail("child did not exit with 0");
    printf("parent=%d child=%d\n", (int)getpid(), (int)child);
    return 0;
}

/* ------------------------------------------------------------------ api */

#define API_CHECK(cond, what)                                                                 \
    do {                                                                                      \
        if (!(cond))                                                                          \
            fail("api: " what ": " #cond);                                                    \
    } while (0)

static char g_json[1 << 16], g_json2[1 << 16], g_text[1 << 16];

/* The unsigned integer after `"key":` inside the object that starts at `"section":{`. */
static long long field(const char *json, const char *section, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":{", section);
    const char *s = strstr(json, pat);
    if (!s)
        return -1;
    const char *end = strchr(s, '}');
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *k = strstr(s, pat);
    if (!k || (end && k > end))
        return -1;
    return strtoll(k + strlen(pat), NULL, 10);
}

static int run_api(void)
{
#ifdef WORKLOAD_DLSYM
    *(void **)&p_stats_json = dlsym(RTLD_DEFAULT, "poolmalloc_stats_json");
    *(void **)&p_stats_print = dlsym(RTLD_DEFAULT, "poolmalloc_stats_print");
    if (!p_stats_json || !p_stats_print)
        fail("api: poolmalloc_stats_json/poolmalloc_stats_print not found (library not preloaded?)");
#endif
    /* Some known activity first. */
    for (int i = 0; i < 1000; i++)
        g_blocks[0][i] = xmalloc(K_SIZE);
    for (int i = 0; i < 500; i++)
        free(escape(g_blocks[0][i]));

    /* Too small: returns the whole length, NUL-terminates within len. */
    char small[16];
    memset(small, 'x', sizeof small);
    size_t need = poolmalloc_stats_json(small, sizeof small);
    API_CHECK(need > sizeof small, "short buffer: full length returned");
    API_CHECK(small[sizeof small - 1] == '\0', "short buffer: NUL in the last byte");
    API_CHECK(strlen(small) == sizeof small - 1, "short buffer: filled up to the NUL");
    API_CHECK(memcmp(small, "{\"version\":\"", 12) == 0, "short buffer: starts like the report");

    /* len 0: nothing written (buf may even be NULL); len 1: just the NUL. */
    char one[2] = {'x', 'y'};
    size_t need0 = poolmalloc_stats_json(NULL, 0);
    API_CHECK(need0 > 16 && need0 < sizeof g_json, "len 0 with NULL gives the length");
    size_t need1 = poolmalloc_stats_json(one, 0);
    API_CHECK(one[0] == 'x' && one[1] == 'y', "len 0: buffer untouched");
    need1 = poolmalloc_stats_json(one, 1);
    API_CHECK(need1 > 16 && one[0] == '\0' && one[1] == 'y', "len 1: only the NUL written");

    /* The right size (asked for with len 0, plus room: nothing allocates in between). */
    size_t n0 = poolmalloc_stats_json(NULL, 0);
    memset(g_json, 'x', sizeof g_json);
    size_t n = poolmalloc_stats_json(g_json, n0 + 1);
    API_CHECK(n == n0, "the length is stable when nothing allocates");
    API_CHECK(strlen(g_json) == n, "full buffer: strlen equals the returned length");
    API_CHECK(g_json[n] == '\0' && g_json[n + 1] == 'x', "full buffer: NUL right after, nothing beyond");
    API_CHECK(g_json[0] == '{', "starts with {");
    API_CHECK(strstr(g_json, "\"calls\":{") != NULL, "has calls");
    long long mallocs = field(g_json, "calls", "malloc");
    long long frees = field(g_json, "calls", "free");
    API_CHECK(mallocs >= 1000, "calls.malloc counts our 1000 mallocs");
    API_CHECK(frees >= 500, "calls.free counts our 500 frees");
    long long total = field(g_json, "bytes", "total");
    long long mapped = field(g_json, "bytes", "arenas_mapped");
    long long arenas = field(g_json, "arenas", "current");
    long long asize = field(g_json, "arenas", "size");
    API_CHECK(total > 0 && total == mapped && total == arenas * asize, "bytes.total balances");
    long long seen = field(g_json, "threads", "seen");
    API_CHECK(seen >= 1, "threads.seen");

    /* The text report on a pipe. */
    int fds[2];
    if (pipe(fds) != 0)
        fail("pipe");
    poolmalloc_stats_print(fds[1]);
    close(fds[1]);
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fds[0], g_text + got, sizeof g_text - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fds[0]);
    g_text[got] = '\0';
    API_CHECK(strstr(g_text, "Small block threshold = 512, in 32 size classes.\n") != NULL,
              "stats_print writes the CPython header");
    API_CHECK(strstr(g_text, "# arenas allocated current") != NULL, "stats_print writes the arena lines");

    /* Producing reports makes no counted allocator call (they must not allocate). */
    int devnull_fds[2];
    if (pipe(devnull_fds) != 0)
        fail("pipe");
    for (int i = 0; i < 3; i++) {
        poolmalloc_stats_print(devnull_fds[1]);
        poolmalloc_stats_json(g_json2, sizeof g_json2);
        for (;;) { /* drain so the pipe never fills */
            char sink[8192];
            ssize_t r = read(devnull_fds[0], sink, sizeof sink);
            if (r < (ssize_t)sizeof sink)
                break;
        }
    }
    close(devnull_fds[0]);
    close(devnull_fds[1]);
    poolmalloc_stats_json(g_json2, sizeof g_json2);
    static const char *const keys[] = {"malloc", "calloc", "realloc", "free", "aligned", "remote_free"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        API_CHECK(field(g_json2, "calls", keys[i]) == field(g_json, "calls", keys[i]),
                  "reports make no allocator calls");

    /* Hand the first full report to the script (stdio allocates, so only after the checks). */
    fputs(g_json, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "empty"))
        return 0;
    if (!strcmp(mode, "skeleton"))
        return run_known(0);
    if (!strcmp(mode, "known"))
        return run_known(1);
    if (!strcmp(mode, "counts"))
        return print_counts();
    if (!strcmp(mode, "exit-from-thread"))
        return run_exit_from_thread();
    if (!strcmp(mode, "_exit"))
        return run_underscore_exit();
    if (!strcmp(mode, "fork"))
        return run_fork();
    if (!strcmp(mode, "api"))
        return run_api();
    fail("usage: workload empty|skeleton|known|counts|exit-from-thread|_exit|fork|api");
    return 2;
}
