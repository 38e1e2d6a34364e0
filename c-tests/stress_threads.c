/* stress_threads.c - proves that N threads (argv[1], run with 2, 8 and 32) can allocate, realloc
 * and free concurrently without corrupting each other: each thread keeps a table of pattern-
 * stamped blocks, verified before every free/realloc, and also swaps blocks with the other
 * threads through a mutex-protected exchange array, so many blocks are verified, realloc'd and
 * freed by a thread other than the one that allocated them (remote frees).  At the end the number
 * of blocks that crossed threads must be non-zero and every block is verified once more. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define LOCAL_SLOTS 512
#define XCHG_SLOTS 256
#define TOTAL_OPS 4000000L

struct blk {
    unsigned char *p;
    size_t n;
    uint64_t tag;
    int owner; /* thread that allocated it */
};

static struct blk xchg[XCHG_SLOTS];
static pthread_mutex_t xchg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t start;
static long ops_per_thread;

struct result {
    unsigned long ops, remote_frees, remote_reallocs, swaps;
};

static unsigned char byte_of(uint64_t tag)
{
    return (unsigned char)((tag * 0x9E3779B97F4A7C15ULL) >> 56);
}

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = rng_next(rng) % 1000;
    if (r < 900)
        return rng_logsize(rng, 1, 512);
    if (r < 990)
        return rng_logsize(rng, 513, 32 << 10);
    return rng_logsize(rng, (32 << 10) + 1, 256 << 10);
}

static void verify(const struct blk *b, int tid, const char *when)
{
    size_t bad = pat_check(b->p, b->n, b->tag, byte_of(b->tag), b->n);
    CHECK(bad == (size_t)-1,
          "thread %d: block %p (%zu bytes, allocated by thread %d, tag %#llx) corrupted at "
          "offset %zu before %s",
          tid, (void *)b->p, b->n, b->owner, (unsigned long long)b->tag, bad, when);
}

static void *worker(void *arg)
{
    int tid = (int)(intptr_t)arg;
    struct result *res = calloc(1, sizeof *res);
    CHECK(res != NULL, "calloc result");
    struct blk local[LOCAL_SLOTS];
    memset(local, 0, sizeof local);
    uint64_t rng = rng_seed(1000 + (uint64_t)tid);
    uint64_t gen = 0;
    pthread_barrier_wait(&start);

    for (long op = 0; op < ops_per_thread; op++) {
        size_t i = (size_t)(rng_next(&rng) % LOCAL_SLOTS);
        struct blk *b = &local[i];
        uint64_t r = rng_next(&rng) % 100;
        if (r < 10) {
            /* swap this slot (maybe empty) with a random exchange slot */
            size_t j = (size_t)(rng_next(&rng) % XCHG_SLOTS);
            pthread_mutex_lock(&xchg_lock);
            struct blk t = xchg[j];
            xchg[j] = *b;
            *b = t;
            pthread_mutex_unlock(&xchg_lock);
            if (b->p)
                verify(b, tid, "use after exchange");
            res->swaps++;
        } else if (b->p == NULL) {
            size_t n = pick_size(&rng);
            unsigned char *p = malloc(n);
            CHECK(p != NULL, "thread %d: malloc(%zu) failed", tid, n);
            CHECK(is_aligned(p, 16), "thread %d: malloc(%zu) = %p unaligned", tid, n, (void *)p);
            b->p = p;
            b->n = n;
            b->tag = ((uint64_t)tid << 48) | ++gen;
            b->owner = tid;
            pat_fill(p, n, b->tag, byte_of(b->tag));
        } else if (r < 70) {
            verify(b, tid, "free");
            if (b->owner != tid)
                res->remote_frees++;
            free(b->p);
            b->p = NULL;
        } else {
            verify(b, tid, "realloc");
            size_t n = pick_size(&rng);
            unsigned char *p = realloc(b->p, n);
            CHECK(p != NULL, "thread %d: realloc(%p, %zu) failed", tid, (void *)b->p, n);
            CHECK(is_aligned(p, 16), "thread %d: realloc = %p unaligned", tid, (void *)p);
            size_t keep = n < b->n ? n : b->n;
            size_t bad = pat_check(p, b->n, b->tag, byte_of(b->tag), keep);
            CHECK(bad == (size_t)-1,
                  "thread %d: realloc %zu -> %zu of a block from thread %d lost content at %zu",
                  tid, b->n, n, b->owner, bad);
            if (b->owner != tid)
                res->remote_reallocs++;
            b->p = p;
            b->n = n;
            b->tag = ((uint64_t)tid << 48) | ++gen;
            b->owner = tid;
            pat_fill(p, n, b->tag, byte_of(b->tag));
        }
        res->ops++;
    }
    for (size_t i = 0; i < LOCAL_SLOTS; i++) {
        if (local[i].p) {
            verify(&local[i], tid, "final free");
            if (local[i].owner != tid)
                res->remote_frees++;
            free(local[i].p);
        }
    }
    return res;
}

int main(int argc, char **argv)
{
    require_allocator_active();
    int n = argc > 1 ? atoi(argv[1]) : 8;
    CHECK(n >= 1 && n <= 1024, "bad thread count %d", n);
    ops_per_thread = TOTAL_OPS / n;
    if (ops_per_thread < 40000)
        ops_per_thread = 40000;
    pthread_t th[1024];
    CHECK(pthread_barrier_init(&start, NULL, (unsigned)n) == 0, "barrier");
    for (int t = 0; t < n; t++)
        CHECK(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0, "pthread_create");
    struct result total = {0, 0, 0, 0};
    for (int t = 0; t < n; t++) {
        void *rv;
        CHECK(pthread_join(th[t], &rv) == 0, "pthread_join");
        struct result *r = rv;
        total.ops += r->ops;
        total.remote_frees += r->remote_frees;
        total.remote_reallocs += r->remote_reallocs;
        total.swaps += r->swaps;
        free(r);
    }
    size_t left = 0;
    for (size_t j = 0; j < XCHG_SLOTS; j++) {
        if (xchg[j].p) {
            verify(&xchg[j], -1, "final free by main");
            free(xchg[j].p);
            left++;
        }
    }
    CHECK(total.ops == (unsigned long)(ops_per_thread * n), "ops count %lu", total.ops);
    if (n > 1)
        CHECK(total.remote_frees + total.remote_reallocs > 0,
              "no block crossed threads - the test did not exercise remote frees");
    printf("stress_threads: ok: %d threads, %lu ops, %lu swaps, %lu remote frees, %lu remote "
           "reallocs, %zu freed by main\n",
           n, total.ops, total.swaps, total.remote_frees, total.remote_reallocs, left);
    return 0;
}
