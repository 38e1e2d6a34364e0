/* producer_consumer.c - proves that blocks allocated in one thread can be read, size-queried and
 * freed in another: producer threads malloc blocks of many sizes (16 B up to > 128 KiB, including
 * both sides of 512), stamp them with (producer, sequence) and a pattern, and push them through a
 * bounded mutex/condvar queue; consumer threads verify the pattern and malloc_usable_size, free
 * the block, and count it.  At the end every block must have been received exactly once.
 * argv: [producers] [consumers] [blocks per producer]. */
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

#define QCAP 2048

static void *queue[QCAP];
static size_t q_head, q_tail, q_len;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t q_not_full = PTHREAD_COND_INITIALIZER;

static int producers, consumers;
static long per_producer;
static unsigned char *received; /* producers * per_producer counters */

static void q_push(void *p)
{
    pthread_mutex_lock(&q_lock);
    while (q_len == QCAP)
        pthread_cond_wait(&q_not_full, &q_lock);
    queue[q_tail] = p;
    q_tail = (q_tail + 1) % QCAP;
    q_len++;
    pthread_cond_signal(&q_not_empty);
    pthread_mutex_unlock(&q_lock);
}

static void *q_pop(void)
{
    pthread_mutex_lock(&q_lock);
    while (q_len == 0)
        pthread_cond_wait(&q_not_empty, &q_lock);
    void *p = queue[q_head];
    q_head = (q_head + 1) % QCAP;
    q_len--;
    pthread_cond_signal(&q_not_full);
    pthread_mutex_unlock(&q_lock);
    return p;
}

static const size_t size_table[] = {16,   24,   32,   64,    100,   256,   511,  512,
                                    513,  1000, 2048, 4096,  8192,  12345, 20000, 65536,
                                    100000};
#define NTABLE (sizeof size_table / sizeof size_table[0])

/* Size of block `seq` of producer `pr`: deterministic so the consumer can recompute it. */
static size_t size_of(uint32_t pr, uint32_t seq)
{
    uint64_t h = rng_seed(((uint64_t)pr << 32) | seq);
    if (seq % 61 == 0)
        return (128 << 10) + 1 + (size_t)(h % (200 << 10)); /* > 128 KiB */
    return size_table[h % NTABLE] + (size_t)((h >> 32) % 8);
}

static unsigned char byte_of(uint64_t tag)
{
    return (unsigned char)((tag * 0x9E3779B97F4A7C15ULL) >> 56);
}

static void *producer(void *arg)
{
    uint32_t pr = (uint32_t)(uintptr_t)arg;
    for (uint32_t seq = 0; seq < (uint32_t)per_producer; seq++) {
        size_t n = size_of(pr, seq);
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "producer %u: malloc(%zu) failed", pr, n);
        CHECK(is_aligned(p, 16), "producer %u: malloc(%zu) = %p unaligned", pr, n, (void *)p);
        uint64_t tag = ((uint64_t)pr << 32) | seq;
        pat_fill(p, n, tag, byte_of(tag));
        q_push(p);
    }
    return NULL;
}

struct cstats {
    unsigned long blocks, big;
};

static void *consumer(void *arg)
{
    struct cstats *st = arg;
    for (;;) {
        unsigned char *p = q_pop();
        if (p == NULL)
            return NULL; /* poison pill */
        uint64_t tag;
        memcpy(&tag, p, 8);
        uint32_t pr = (uint32_t)(tag >> 32), seq = (uint32_t)tag;
        CHECK(pr < (uint32_t)producers && seq < (uint32_t)per_producer,
              "block %p has a garbage header %#llx", (void *)p, (unsigned long long)tag);
        size_t n = size_of(pr, seq);
        CHECK(malloc_usable_size(p) >= n, "block %u/%u: usable size %zu < %zu in consumer", pr,
              seq, malloc_usable_size(p), n);
        size_t bad = pat_check(p, n, tag, byte_of(tag), n);
        CHECK(bad == (size_t)-1, "block %u/%u (%p, %zu bytes) corrupted at offset %zu", pr, seq,
              (void *)p, n, bad);
        unsigned char prev =
            __atomic_fetch_add(&received[(size_t)pr * (size_t)per_producer + seq], 1,
                               __ATOMIC_RELAXED);
        CHECK(prev == 0, "block %u/%u received twice", pr, seq);
        free(p);
        st->blocks++;
        if (n > (128 << 10))
            st->big++;
    }
}

int main(int argc, char **argv)
{
    require_allocator_active();
    producers = argc > 1 ? atoi(argv[1]) : 4;
    consumers = argc > 2 ? atoi(argv[2]) : 4;
    per_producer = argc > 3 ? atol(argv[3]) : 60000;
    CHECK(producers > 0 && producers <= 64 && consumers > 0 && consumers <= 64 &&
              per_producer > 0,
          "bad arguments");
    received = calloc((size_t)producers * (size_t)per_producer, 1);
    CHECK(received != NULL, "calloc counters");

    pthread_t pt[64], ct[64];
    struct cstats cs[64];
    memset(cs, 0, sizeof cs);
    for (int c = 0; c < consumers; c++)
        CHECK(pthread_create(&ct[c], NULL, consumer, &cs[c]) == 0, "pthread_create");
    for (int p = 0; p < producers; p++)
        CHECK(pthread_create(&pt[p], NULL, producer, (void *)(uintptr_t)p) == 0,
              "pthread_create");
    for (int p = 0; p < producers; p++)
        CHECK(pthread_join(pt[p], NULL) == 0, "join");
    for (int c = 0; c < consumers; c++)
        q_push(NULL);
    unsigned long total = 0, big = 0;
    for (int c = 0; c < consumers; c++) {
        CHECK(pthread_join(ct[c], NULL) == 0, "join");
        total += cs[c].blocks;
        big += cs[c].big;
    }
    size_t missing = 0, first_missing = 0;
    for (size_t i = 0; i < (size_t)producers * (size_t)per_producer; i++) {
        if (received[i] != 1) {
            if (missing++ == 0)
                first_missing = i;
        }
    }
    CHECK(missing == 0, "%zu blocks not received exactly once (first: producer %zu seq %zu)",
          missing, first_missing / (size_t)per_producer, first_missing % (size_t)per_producer);
    CHECK(total == (unsigned long)producers * (unsigned long)per_producer,
          "consumers freed %lu blocks", total);
    CHECK(big > 0, "no block > 128 KiB was exchanged");
    free(received);
    printf("producer_consumer: ok: %d producers, %d consumers, %lu blocks (%lu > 128 KiB) each "
           "received exactly once\n",
           producers, consumers, total, big);
    return 0;
}
