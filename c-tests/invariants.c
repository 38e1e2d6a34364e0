/* invariants.c - poolmalloc's structures stay consistent under a mixed multi-threaded load.
 *
 * Four threads allocate, fill, verify and free blocks of every pool kind (16 B .. 128 KiB,
 * and some large ones), hand a share of their blocks to the next thread to free (remote
 * frees), and every few thousand operations call poolmalloc_check(), which walks every arena
 * (free-pool counts, free lists, dirty accounting, pool shapes) and the calling thread's heap
 * (list states, head bias, free lists, carved == blocks out + free-list length). The check
 * must report 0 problems each time, and all contents must verify.
 *
 * In system mode (glibc, no poolmalloc_check) only the contents are verified, and the summary
 * line says so.
 */
#include "check.h"
#include <pthread.h>

#define THREADS 4
#define SLOTS 4000
#define OPS 200000
#define HANDOFF 256

typedef int (*check_fn)(void);
static check_fn pm_check;

struct handoff {
    pthread_mutex_t lock;
    unsigned char *blocks[HANDOFF];
    size_t sizes[HANDOFF];
    int n;
};
static struct handoff boxes[THREADS];
static long checks_run;
static pthread_mutex_t checks_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t r)
{
    switch (r % 100) {
    case 0: return 150000 + (r >> 8) % 400000;        /* large */
    case 1: case 2: case 3: return 8193 + (r >> 8) % 120000; /* 1 MiB pools */
    case 4: case 5: case 6: case 7: case 8: return 1025 + (r >> 8) % 7000; /* 128 KiB pools */
    default: return 1 + (r >> 8) % 1024;              /* 32 KiB pools */
    }
}

static void fill(unsigned char *p, size_t n, unsigned char tag)
{
    p[0] = tag;
    p[n / 2] = tag;
    p[n - 1] = tag;
}

static void verify(const unsigned char *p, size_t n, const char *what)
{
    unsigned char tag = p[0];
    CHECK(p[n / 2] == tag && p[n - 1] == tag, "%s block %p (%zu bytes) corrupted", what, (void *)p, n);
}

static void run_check(const char *where)
{
    if (!pm_check)
        return;
    int problems = pm_check();
    CHECK(problems == 0, "poolmalloc_check() found %d problems %s", problems, where);
    pthread_mutex_lock(&checks_lock);
    checks_run++;
    pthread_mutex_unlock(&checks_lock);
}

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (uint64_t)(me + 1);
    static __thread unsigned char *blocks[SLOTS];
    static __thread size_t sizes[SLOTS];
    for (long op = 0; op < OPS; op++) {
        uint64_t r = rng(&seed);
        int i = (int)(r % SLOTS);
        if (blocks[i]) {
            verify(blocks[i], sizes[i], "own");
            if ((r >> 40) % 4 == 0) {
                struct handoff *box = &boxes[(me + 1) % THREADS];
                pthread_mutex_lock(&box->lock);
                if (box->n < HANDOFF) {
                    box->blocks[box->n] = blocks[i];
                    box->sizes[box->n] = sizes[i];
                    box->n++;
                    blocks[i] = NULL;
                }
                pthread_mutex_unlock(&box->lock);
            }
            free(blocks[i]);
        }
        size_t n = pick_size(rng(&seed));
        blocks[i] = malloc(n);
        CHECK(blocks[i] != NULL, "malloc(%zu) failed", n);
        sizes[i] = n;
        fill(blocks[i], n, (unsigned char)(r >> 56));
        if (op % 1024 == 0) {
            struct handoff *box = &boxes[me];
            pthread_mutex_lock(&box->lock);
            for (int k = 0; k < box->n; k++) {
                verify(box->blocks[k], box->sizes[k], "handed-over");
                free(box->blocks[k]);
            }
            box->n = 0;
            pthread_mutex_unlock(&box->lock);
        }
        if (op % 20000 == 0)
            run_check("during the run");
    }
    for (int i = 0; i < SLOTS; i++) {
        if (blocks[i]) {
            verify(blocks[i], sizes[i], "own");
            free(blocks[i]);
            blocks[i] = NULL;
        }
    }
    run_check("after the thread freed its blocks");
    return NULL;
}

int main(void)
{
    pm_check = (check_fn)dlsym(RTLD_DEFAULT, "poolmalloc_check");
    if (getenv("POOLMALLOC_TEST_STRICT"))
        CHECK(pm_check != NULL, "poolmalloc_check is not exported by the library under test");
    for (int t = 0; t < THREADS; t++)
        pthread_mutex_init(&boxes[t].lock, NULL);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0, "pthread_create");
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < THREADS; t++) {
        for (int k = 0; k < boxes[t].n; k++) {
            verify(boxes[t].blocks[k], boxes[t].sizes[k], "left over");
            free(boxes[t].blocks[k]);
        }
    }
    run_check("at the end, in main");
    if (pm_check) {
        CHECK(checks_run >= THREADS * (OPS / 20000), "only %ld checks ran", checks_run);
        printf("invariants: %d threads x %d ops, %ld structure checks, 0 problems\n", THREADS, OPS, checks_run);
    } else {
        printf("invariants: %d threads x %d ops, contents verified (no poolmalloc_check in this allocator)\n",
               THREADS, OPS);
    }
    return 0;
}
