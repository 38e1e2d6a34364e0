/* cgloop.c - pattern: the thread-local fast path, for instruction counting under
 * valgrind --tool=callgrind. For each pattern (pair: malloc then free at once; lifo: batches
 * of 1000 mallocs freed newest first; fifo: the same freed oldest first) and each size
 * (16, 64, 256, 1024, 8192) it first warms the path up (outside the measurement), then calls
 * measured() once with N operations and once with 0. bench.sh runs it with
 * --toggle-collect=measured --dump-after=measured, so each call gives one dump whose total
 * is the instructions executed inside measured(); (dump(N) - dump(0)) / N is instructions
 * per malloc+free, loop overhead (a few instructions) included, as in PEERS.md.
 * The labels of the dumps are printed in order on stdout ("CG pattern size n").
 *
 * Checks: the warm-up writes and verifies a pattern in every block (and checks alignment);
 * the measured loop checks each pointer for NULL.
 *
 * usage: cgloop N   (N a multiple of 1000)
 */
#include "bench.h"

#define BATCH 1000
enum { PAIR, LIFO, FIFO };
static const char *names[] = {"pair", "lifo", "fifo"};
static void *slots[BATCH];
static long failures;

__attribute__((noinline)) void measured(int pattern, size_t size, long n)
{
    if (pattern == PAIR) {
        for (long i = 0; i < n; i++) {
            void *p = malloc(size);
            __asm__ volatile("" : : "r"(p) : "memory");
            failures += p == NULL;
            free(p);
        }
        return;
    }
    for (long b = 0; b < n / BATCH; b++) {
        for (int i = 0; i < BATCH; i++) {
            slots[i] = malloc(size);
            failures += slots[i] == NULL;
        }
        __asm__ volatile("" : : "r"(slots) : "memory");
        if (pattern == LIFO)
            for (int i = BATCH - 1; i >= 0; i--) free(slots[i]);
        else
            for (int i = 0; i < BATCH; i++) free(slots[i]);
    }
}

static void warmup(int pattern, size_t size)
{
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < BATCH; i++) {
            slots[i] = malloc(size);
            check_ptr(slots[i], size);
            fill(slots[i], size, (uint64_t)i);
        }
        for (int k = 0; k < BATCH; k++) {
            int i = pattern == LIFO ? BATCH - 1 - k : k;
            verify(slots[i], size, (uint64_t)i, pattern == PAIR ? "warm-up before pair" : pattern == LIFO ? "warm-up before lifo" : "warm-up before fifo");
            free(slots[i]);
        }
    }
}

int main(int argc, char **argv)
{
    long n = arg_long(argc, argv, 1, 100000);
    static const size_t sizes[] = {16, 64, 256, 1024, 8192};
    n = n / BATCH * BATCH;
    if (n < BATCH) n = BATCH;
    for (int pattern = PAIR; pattern <= FIFO; pattern++)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            warmup(pattern, sizes[s]);
            measured(pattern, sizes[s], n);
            printf("CG %s %zu %ld\n", names[pattern], sizes[s], n);
            measured(pattern, sizes[s], 0);
            printf("CG %s %zu 0\n", names[pattern], sizes[s]);
        }
    if (failures) bench_fail("%ld allocations returned NULL", failures);
    result_ok("cgloop", (unsigned long long)n);
    return 0;
}
