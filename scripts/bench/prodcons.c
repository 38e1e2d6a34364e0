/* prodcons.c - pattern: producer -> consumer hand-off. PAIRS producer threads each allocate
 * messages (random sizes 16..4096 bytes) and pass them through a bounded single-producer/
 * single-consumer ring to their consumer thread, which reads and frees them: every free is
 * a remote free of a block another thread allocated (pipelines, work queues, loggers).
 *
 * Checks: each message carries its sequence number in its first 8 bytes and a pattern from
 * it (head, tail, page bytes); the consumer checks that sequence numbers arrive in order and
 * complete, and verifies every byte pattern before freeing.
 *
 * usage: prodcons PAIRS TOTAL_MESSAGES
 */
#include "bench.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define RING 1024

struct ring {
    _Alignas(64) _Atomic unsigned long head; /* written by the producer */
    _Alignas(64) _Atomic unsigned long tail; /* written by the consumer */
    _Alignas(64) void *slot[RING];
    long count;
    long pair;
    unsigned long long sum;
};

static void *producer(void *arg)
{
    struct ring *q = arg;
    uint64_t r = (uint64_t)(q->pair + 1) * 0x9E3779B97F4A7C15ULL;
    for (long i = 0; i < q->count; i++) {
        size_t n = (size_t)rng_range(&r, 16, 4096);
        uint8_t *m = malloc(n);
        check_ptr(m, n);
        fill(m, n, (uint64_t)i);
        unsigned long h = atomic_load_explicit(&q->head, memory_order_relaxed);
        while (h - atomic_load_explicit(&q->tail, memory_order_acquire) >= RING) sched_yield();
        q->slot[h % RING] = m;
        atomic_store_explicit(&q->head, h + 1, memory_order_release);
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct ring *q = arg;
    uint64_t r = (uint64_t)(q->pair + 1) * 0x9E3779B97F4A7C15ULL; /* replays the sizes */
    for (long i = 0; i < q->count; i++) {
        size_t n = (size_t)rng_range(&r, 16, 4096);
        unsigned long t = atomic_load_explicit(&q->tail, memory_order_relaxed);
        while (atomic_load_explicit(&q->head, memory_order_acquire) == t) sched_yield();
        uint8_t *m = q->slot[t % RING];
        verify(m, n, (uint64_t)i, "message (out of order or corrupted)");
        q->sum += m[n - 1];
        free(m);
        atomic_store_explicit(&q->tail, t + 1, memory_order_release);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long pairs = arg_long(argc, argv, 1, 1);
    long total = arg_long(argc, argv, 2, 1000000);
    if (pairs < 1) return 64;
    struct ring *q = aligned_alloc(64, (size_t)pairs * sizeof(struct ring));
    check_ptr(q, sizeof(struct ring));
    pthread_t *th = xmalloc((size_t)pairs * 2 * sizeof(pthread_t));
    for (long p = 0; p < pairs; p++) {
        memset(&q[p], 0, sizeof q[p]);
        q[p].count = total / pairs;
        q[p].pair = p;
        if (pthread_create(&th[2 * p], NULL, consumer, &q[p]) != 0) bench_fail("pthread_create");
        if (pthread_create(&th[2 * p + 1], NULL, producer, &q[p]) != 0) bench_fail("pthread_create");
    }
    unsigned long long sum = 0;
    for (long p = 0; p < pairs; p++) {
        pthread_join(th[2 * p], NULL);
        pthread_join(th[2 * p + 1], NULL);
        if (atomic_load(&q[p].tail) != (unsigned long)q[p].count) bench_fail("pair %ld lost messages", p);
        sum += q[p].sum;
    }
    free(q);
    free(th);
    result_ok("prodcons", sum);
    return 0;
}
