/* larson.c - pattern: a server's churn ("larson"): each worker thread repeatedly picks a
 * random slot of a block array, frees the block there and allocates one of a random size
 * (mostly 16..1024 bytes, some up to 8 KiB) in its place. Workers run in generations: every
 * generation's threads exit and new threads take over the arrays that *other* threads
 * filled, so most frees are of blocks allocated by another (often dead) thread.
 *
 * Checks: each block carries its own tag's pattern (head, tail, page bytes), verified before
 * every free and for all blocks at the end; pointers non-NULL and 16-aligned.
 *
 * usage: larson THREADS GENERATIONS TOTAL_OPS SLOTS_PER_THREAD
 */
#include "bench.h"
#include <pthread.h>

struct slot {
    void *p;
    size_t n;
    uint64_t tag;
};

struct arr {
    struct slot *s;
    long n;
};

static long nthreads, gens, ops_per_thread, slots;
static struct arr *arrays;

struct job {
    struct arr *a;
    uint64_t seed;
};

static size_t pick_size(uint64_t *r)
{
    uint64_t x = rng_next(r) % 100;
    if (x < 90) return (size_t)rng_range(r, 16, 1024);
    return (size_t)rng_range(r, 1025, 8192);
}

static void *worker(void *arg)
{
    struct job *j = arg;
    uint64_t r = j->seed;
    struct arr *a = j->a;
    for (long i = 0; i < ops_per_thread; i++) {
        struct slot *s = &a->s[rng_next(&r) % (uint64_t)a->n];
        verify(s->p, s->n, s->tag, "larson slot");
        free(s->p);
        s->n = pick_size(&r);
        s->tag = rng_next(&r);
        s->p = malloc(s->n);
        check_ptr(s->p, s->n);
        fill(s->p, s->n, s->tag);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    nthreads = arg_long(argc, argv, 1, 2);
    gens = arg_long(argc, argv, 2, 4);
    long total = arg_long(argc, argv, 3, 2000000);
    slots = arg_long(argc, argv, 4, 1000);
    if (nthreads < 1 || gens < 1) return 64;
    ops_per_thread = total / (nthreads * gens);
    arrays = xmalloc((size_t)nthreads * sizeof *arrays);
    uint64_t r = 7;
    for (long t = 0; t < nthreads; t++) {
        arrays[t].n = slots;
        arrays[t].s = xmalloc((size_t)slots * sizeof(struct slot));
        for (long k = 0; k < slots; k++) {
            struct slot *s = &arrays[t].s[k];
            s->n = pick_size(&r);
            s->tag = rng_next(&r);
            s->p = xmalloc(s->n);
            fill(s->p, s->n, s->tag);
        }
    }
    pthread_t *th = xmalloc((size_t)nthreads * sizeof(pthread_t));
    struct job *jobs = xmalloc((size_t)nthreads * sizeof(struct job));
    for (long g = 0; g < gens; g++) {
        for (long t = 0; t < nthreads; t++) {
            /* generation g's thread t works on the array thread t-1 used before */
            jobs[t].a = &arrays[(t + g) % nthreads];
            jobs[t].seed = (uint64_t)(g * 1000 + t + 1) * 0x9E3779B97F4A7C15ULL;
            if (pthread_create(&th[t], NULL, worker, &jobs[t]) != 0) bench_fail("pthread_create");
        }
        for (long t = 0; t < nthreads; t++) pthread_join(th[t], NULL);
    }
    unsigned long long sum = 0;
    for (long t = 0; t < nthreads; t++) {
        for (long k = 0; k < slots; k++) {
            struct slot *s = &arrays[t].s[k];
            verify(s->p, s->n, s->tag, "larson final");
            sum += s->n;
            free(s->p);
        }
        free(arrays[t].s);
    }
    free(arrays);
    free(th);
    free(jobs);
    result_ok("larson", sum);
    return 0;
}
