/* batch.c - pattern: batches of allocations freed all at once, in LIFO order (newest first,
 * like a stack of temporaries or a recursive parser unwinding) or in FIFO order (oldest
 * first, like a queue or a request log). One thread; sizes random in [MIN, MAX].
 * LIFO favours allocators whose free lists are stacks; FIFO spreads the frees over the
 * pages in the order they were carved, which hurts locality for some designs.
 *
 * Checks: non-NULL, 16-aligned pointers; each block's head, tail and page bytes carry a
 * pattern from its own tag, verified just before it is freed, so two live blocks that
 * overlap (a block handed out twice) are detected.
 *
 * usage: batch lifo|fifo MIN MAX BATCH ROUNDS
 */
#include "bench.h"

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "lifo") != 0 && strcmp(argv[1], "fifo") != 0)) {
        fprintf(stderr, "usage: batch lifo|fifo MIN MAX BATCH ROUNDS\n");
        return 64;
    }
    int lifo = strcmp(argv[1], "lifo") == 0;
    size_t min = (size_t)arg_long(argc, argv, 2, 16);
    size_t max = (size_t)arg_long(argc, argv, 3, 1024);
    long batch = arg_long(argc, argv, 4, 1000);
    long rounds = arg_long(argc, argv, 5, 1000);
    void **ptr = xmalloc((size_t)batch * sizeof(void *));
    size_t *size = xmalloc((size_t)batch * sizeof(size_t));
    uint64_t rng = 42;
    unsigned long long sum = 0;

    for (long r = 0; r < rounds; r++) {
        for (long i = 0; i < batch; i++) {
            size_t sz = (size_t)rng_range(&rng, min, max);
            void *p = malloc(sz);
            check_ptr(p, sz);
            fill(p, sz, (uint64_t)(r * batch + i));
            ptr[i] = p;
            size[i] = sz;
        }
        for (long k = 0; k < batch; k++) {
            long i = lifo ? batch - 1 - k : k;
            verify(ptr[i], size[i], (uint64_t)(r * batch + i), lifo ? "lifo" : "fifo");
            sum += ((uint8_t *)ptr[i])[0];
            free(ptr[i]);
        }
    }
    free(ptr);
    free(size);
    result_ok(lifo ? "batch-lifo" : "batch-fifo", sum);
    return 0;
}
