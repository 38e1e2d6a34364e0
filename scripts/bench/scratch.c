/* scratch.c - pattern: false sharing between threads' small blocks ("cache-scratch").
 * The main thread allocates one small object per worker back to back (so they may share a
 * cache line) and hands one to each worker. Each worker frees the object it was given, then
 * repeatedly allocates a small object, writes it many times and frees it. An allocator that
 * gives the freed object (or its cache-line neighbours) to the worker's later allocations
 * makes threads write the same cache line: the run is then much slower on 2+ cores.
 *
 * Checks: each worker verifies the pattern the main thread wrote in its object before freeing
 * it; after the repeated writes every byte must hold the expected final value (a block shared
 * with another thread would not); pointers non-NULL and aligned.
 *
 * usage: scratch THREADS TOTAL_ITERS WRITES OBJSIZE
 */
#include "bench.h"
#include <pthread.h>

static long iters_per_thread, writes;
static size_t objsize;

struct job {
    uint8_t *given;
    long id;
    unsigned long long sum;
};

static void *worker(void *arg)
{
    struct job *j = arg;
    verify(j->given, objsize, (uint64_t)j->id, "object from main thread");
    free(j->given);
    unsigned long long sum = 0;
    for (long i = 0; i < iters_per_thread; i++) {
        volatile uint8_t *p = malloc(objsize);
        check_ptr(p, objsize);
        for (size_t k = 0; k < objsize; k++) p[k] = (uint8_t)(j->id + k);
        for (long w = 0; w < writes; w++)
            for (size_t k = 0; k < objsize; k++) p[k] = (uint8_t)(p[k] + 1);
        for (size_t k = 0; k < objsize; k++)
            if (p[k] != (uint8_t)(j->id + k + (size_t)writes))
                bench_fail("thread %ld: byte %zu of its own block is %u, want %u", j->id, k, p[k], (uint8_t)(j->id + k + (size_t)writes));
        sum += p[0];
        free((void *)p);
    }
    j->sum = sum;
    return NULL;
}

int main(int argc, char **argv)
{
    long nthreads = arg_long(argc, argv, 1, 2);
    long total = arg_long(argc, argv, 2, 20000);
    writes = arg_long(argc, argv, 3, 1000);
    objsize = (size_t)arg_long(argc, argv, 4, 8);
    if (nthreads < 1 || objsize < 1) return 64;
    iters_per_thread = total / nthreads;
    pthread_t *th = xmalloc((size_t)nthreads * sizeof(pthread_t));
    struct job *jobs = xmalloc((size_t)nthreads * sizeof(struct job));
    for (long t = 0; t < nthreads; t++) {
        jobs[t].id = t;
        jobs[t].given = malloc(objsize); /* back to back on purpose */
        check_ptr(jobs[t].given, objsize);
        fill(jobs[t].given, objsize, (uint64_t)t);
    }
    for (long t = 0; t < nthreads; t++)
        if (pthread_create(&th[t], NULL, worker, &jobs[t]) != 0) bench_fail("pthread_create");
    unsigned long long sum = 0;
    for (long t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        sum += jobs[t].sum;
    }
    free(th);
    free(jobs);
    result_ok("scratch", sum);
    return 0;
}
