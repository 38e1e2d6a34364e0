/* fork_under_load.c - proves that fork() while other threads are inside malloc/free leaves a
 * usable allocator in both processes: worker threads allocate/verify/free in a loop while the
 * main thread forks 50 times.  Each child (guarded by alarm(), so a deadlocked allocator lock
 * fails the test instead of hanging it) does a few thousand small and large allocations with
 * content checks, starts a thread that allocates too, and verifies and frees blocks that worker
 * threads of the parent published before the fork (memory owned by threads that do not exist in
 * the child).  The parent checks every child exited with status 0, and the workers keep
 * verifying their own blocks throughout. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define WORKERS 4
#define WSLOTS 256
#define PUB 64
#define FORKS 50
#define CHILD_OPS 4000
#define CHILD_ALARM 30

struct blk {
    unsigned char *p;
    size_t n;
    uint64_t tag;
};

static struct blk published[PUB]; /* blocks handed from workers; snapshot consistent at fork */
static pthread_mutex_t pub_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop;
static unsigned long worker_ops[WORKERS];

static unsigned char byte_of(uint64_t tag)
{
    return (unsigned char)((tag * 0x9E3779B97F4A7C15ULL) >> 56);
}

static size_t pick_size(uint64_t *rng, size_t large_max)
{
    uint64_t r = rng_next(rng) % 100;
    if (r < 85)
        return rng_logsize(rng, 1, 512);
    if (r < 98)
        return rng_logsize(rng, 513, 64 << 10);
    return rng_logsize(rng, (64 << 10) + 1, large_max);
}

static void blk_new(struct blk *b, size_t n, uint64_t tag)
{
    b->p = malloc(n);
    CHECK(b->p != NULL, "malloc(%zu) failed", n);
    CHECK(is_aligned(b->p, 16), "malloc(%zu) = %p unaligned", n, (void *)b->p);
    b->n = n;
    b->tag = tag;
    pat_fill(b->p, n, tag, byte_of(tag));
}

static void blk_free(struct blk *b, const char *who)
{
    size_t bad = pat_check(b->p, b->n, b->tag, byte_of(b->tag), b->n);
    CHECK(bad == (size_t)-1, "%s: block %p (%zu bytes, tag %#llx) corrupted at offset %zu", who,
          (void *)b->p, b->n, (unsigned long long)b->tag, bad);
    free(b->p);
    b->p = NULL;
}

static void *worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct blk *slots = calloc(WSLOTS, sizeof *slots);
    CHECK(slots != NULL, "calloc");
    uint64_t rng = rng_seed(77 + (uint64_t)id);
    uint64_t gen = 0;
    unsigned long ops = 0;
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        struct blk *b = &slots[rng_next(&rng) % WSLOTS];
        uint64_t r = rng_next(&rng) % 100;
        if (r < 3) {
            size_t j = (size_t)(rng_next(&rng) % PUB);
            pthread_mutex_lock(&pub_lock);
            struct blk t = published[j];
            published[j] = *b;
            *b = t;
            pthread_mutex_unlock(&pub_lock);
        } else if (b->p == NULL) {
            blk_new(b, pick_size(&rng, 512 << 10), ((uint64_t)id << 56) | ++gen);
        } else {
            blk_free(b, "worker");
        }
        ops++;
    }
    for (int i = 0; i < WSLOTS; i++)
        if (slots[i].p)
            blk_free(&slots[i], "worker final");
    free(slots);
    worker_ops[id] = ops;
    return NULL;
}

static void *child_thread(void *arg)
{
    uint64_t rng = rng_seed((uint64_t)(uintptr_t)arg);
    struct blk b[32];
    memset(b, 0, sizeof b);
    for (int op = 0; op < 1000; op++) {
        struct blk *x = &b[rng_next(&rng) % 32];
        if (x->p)
            blk_free(x, "child thread");
        else
            blk_new(x, pick_size(&rng, 1 << 20), 0xC0DE000000000000ULL | (uint64_t)op);
    }
    for (int i = 0; i < 32; i++)
        if (b[i].p)
            blk_free(&b[i], "child thread final");
    return (void *)1;
}

static void child_main(int f)
{
    alarm(CHILD_ALARM); /* a deadlock in the allocator kills the child with SIGALRM */
    /* The fork happened with pub_lock held by this (the forking) thread: the snapshot of
     * published[] is consistent.  Verify and free those blocks: they belong to worker threads
     * that do not exist in this process. */
    int inherited = 0;
    for (int j = 0; j < PUB; j++) {
        if (published[j].p) {
            blk_free(&published[j], "child (inherited block)");
            inherited++;
        }
    }
    pthread_mutex_unlock(&pub_lock);

    uint64_t rng = rng_seed(5000 + (uint64_t)f);
    static struct blk slots[128];
    for (int op = 0; op < CHILD_OPS; op++) {
        struct blk *b = &slots[rng_next(&rng) % 128];
        if (b->p) {
            if (rng_next(&rng) % 4 == 0) {
                /* realloc keeps the prefix */
                size_t n = pick_size(&rng, 2 << 20);
                unsigned char *p = realloc(b->p, n);
                CHECK(p != NULL, "child realloc(%zu)", n);
                size_t keep = n < b->n ? n : b->n;
                CHECK(pat_check(p, b->n, b->tag, byte_of(b->tag), keep) == (size_t)-1,
                      "child realloc lost content");
                b->p = p;
                b->n = n;
                b->tag ^= 0x5555;
                pat_fill(p, n, b->tag, byte_of(b->tag));
            } else {
                blk_free(b, "child");
            }
        } else {
            blk_new(b, pick_size(&rng, 2 << 20), 0xF0F0000000000000ULL | (uint64_t)op);
        }
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, child_thread, (void *)(intptr_t)f) == 0,
          "pthread_create in child");
    void *rv = NULL;
    CHECK(pthread_join(t, &rv) == 0 && rv == (void *)1, "child thread");
    for (int i = 0; i < 128; i++)
        if (slots[i].p)
            blk_free(&slots[i], "child final");
    (void)inherited;
    _exit(0);
}

int main(void)
{
    require_allocator_active();
    pthread_t th[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        CHECK(pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) == 0, "pthread_create");

    int inherited_total = 0;
    for (int f = 0; f < FORKS; f++) {
        /* let the workers make progress between forks (no sleeping: spin on their work) */
        void *p[64];
        for (int i = 0; i < 64; i++) {
            p[i] = malloc((size_t)(i * 131 % 5000) + 1);
            CHECK(p[i] != NULL, "parent malloc");
        }
        for (int i = 0; i < 64; i++)
            free(p[i]);

        pthread_mutex_lock(&pub_lock);
        int npub = 0;
        for (int j = 0; j < PUB; j++)
            npub += published[j].p != NULL;
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork failed");
        if (pid == 0)
            child_main(f);
        pthread_mutex_unlock(&pub_lock);
        inherited_total += npub;

        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
        if (WIFSIGNALED(status))
            CHECK(0, "child %d killed by signal %d%s", f, WTERMSIG(status),
                  WTERMSIG(status) == SIGALRM ? " (SIGALRM: deadlocked after fork)" : "");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d exited with status %d", f,
              WEXITSTATUS(status));
    }
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    unsigned long ops = 0;
    for (int i = 0; i < WORKERS; i++) {
        CHECK(pthread_join(th[i], NULL) == 0, "join");
        ops += worker_ops[i];
    }
    for (int j = 0; j < PUB; j++)
        if (published[j].p)
            blk_free(&published[j], "parent final");
    CHECK(ops > 0, "workers made no progress");
    printf("fork_under_load: ok: %d children exited 0 (%d inherited worker blocks freed in "
           "children), workers did %lu ops meanwhile\n",
           FORKS, inherited_total, ops);
    return 0;
}
