/* rss_peak.c - memory kept idle for one block size does not add to a new peak that the program
 * makes in another size, and dropping it early happens at most once per purge delay.
 *
 * A batch of 2000-byte blocks (three 128 KiB pools) is written and freed; poolmalloc keeps the
 * emptied pools for reuse during its purge delay. The program then grows in 100-byte blocks
 * (32 KiB pools), past everything it held before. Those pools cannot reuse the kept ones, so
 * growing past the high-water mark must drop them at once rather than add them to the new
 * peak. Checked with mincore on the first page of each freed block of the first two pools (the
 * third pool stays its class's current one):
 *   round 1: resident after the free (the precondition, that the pools were kept), and (strict:
 *            poolmalloc) at most a tenth of them after the growth;
 *   round 2: the same again at once: now (strict) they must stay, because the early drop runs
 *            at most once per purge delay, so that a program that grows while it frees and
 *            reallocates batches of another size does not fault them in again and again.
 * The test runs with POOLMALLOC_PURGE_DELAY=60000 (it sets it and executes itself again), so
 * that no tick gives the kept pools back in the meantime: both rounds are deterministic.
 * Every batch is written and read back. Under glibc (system mode) the figures are printed and
 * nothing is asserted. */
#include "check.h"

#include <sys/mman.h>

enum { MEDIUM = 2000, N_MEDIUM = 192, KEPT_BLOCKS = 128, SMALL = 100, N_SMALL = 4096 };

static void *medium[N_MEDIUM];
static void *small[2][N_SMALL];

/* Of the first KEPT_BLOCKS blocks of the batch, how many start on a resident page. (No
 * allocation here: a helper that allocated, such as qsort's buffer, could take one of the kept
 * pools for its own size, which is what a kept pool is for.) */
static int kept_resident(void)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    int resident = 0;
    for (int i = 0; i < KEPT_BLOCKS; i++) {
        unsigned char v;
        void *start = (void *)((uintptr_t)medium[i] & ~(page - 1));
        /* ENOMEM: the page is not mapped any more (glibc trimmed it), so not resident. */
        if (mincore(start, page, &v) == 0)
            resident += v & 1;
        else
            CHECK(errno == ENOMEM, "mincore: %s", strerror(errno));
    }
    return resident;
}

/* One round: a batch written, checked and freed, then growth in small blocks (kept live).
 * Returns the kept blocks resident after the free and, in *after_growth, after the growth. */
static int batch_then_grow(int round, int *after_growth)
{
    for (int i = 0; i < N_MEDIUM; i++) {
        medium[i] = malloc(opaque_size(MEDIUM));
        CHECK(medium[i] != NULL, "malloc(%d)", MEDIUM);
        memset(medium[i], round * 64 + (i & 63), MEDIUM);
    }
    for (int i = 0; i < N_MEDIUM; i++) {
        unsigned char *b = medium[i];
        CHECK(b[0] == round * 64 + (i & 63) && b[MEDIUM - 1] == b[0], "block %d reads back wrong", i);
        free(b);
    }
    int after_free = kept_resident();
    for (int i = 0; i < N_SMALL; i++) {
        small[round][i] = malloc(opaque_size(SMALL));
        CHECK(small[round][i] != NULL, "malloc(%d)", SMALL);
        memset(small[round][i], 0x30 + round, SMALL);
    }
    *after_growth = kept_resident();
    return after_free;
}

int main(int argc, char **argv)
{
    (void)argc;
    if (getenv("POOLMALLOC_PURGE_DELAY") == NULL) {
        CHECK(setenv("POOLMALLOC_PURGE_DELAY", "60000", 1) == 0, "setenv");
        execv("/proc/self/exe", argv);
        CHECK(0, "execv /proc/self/exe: %s", strerror(errno));
    }
    int strict = strict_mode();

    int grown1, freed1 = batch_then_grow(0, &grown1);
    printf("rss_peak (%s): round 1: of the %d freed blocks of the first two pools, %d start on a "
           "resident page after the free, %d after growing past the peak in another size\n",
           test_mode(), KEPT_BLOCKS, freed1, grown1);
    if (strict) {
        CHECK(freed1 * 10 >= KEPT_BLOCKS * 9, "round 1: the emptied pools were not kept "
                                               "(%d of %d blocks resident)", freed1, KEPT_BLOCKS);
        CHECK(grown1 * 10 <= KEPT_BLOCKS, "round 1: the kept pools of another size are still "
                                          "resident at the new peak (%d of %d blocks)",
              grown1, KEPT_BLOCKS);
    }

    int grown2, freed2 = batch_then_grow(1, &grown2);
    printf("rss_peak (%s): round 2, at once: %d after the free, %d after growing past the peak "
           "again\n", test_mode(), freed2, grown2);
    if (strict) {
        CHECK(freed2 * 10 >= KEPT_BLOCKS * 9, "round 2: the emptied pools were not kept "
                                               "(%d of %d blocks resident)", freed2, KEPT_BLOCKS);
        CHECK(grown2 * 10 >= KEPT_BLOCKS * 9, "round 2: the kept pools were dropped again within "
                                               "the purge delay (%d of %d blocks resident)",
              grown2, KEPT_BLOCKS);
    }

    for (int r = 0; r < 2; r++)
        for (int i = 0; i < N_SMALL; i++) {
            unsigned char *b = small[r][i];
            CHECK(b[0] == 0x30 + r && b[SMALL - 1] == 0x30 + r, "small block %d reads back wrong", i);
            free(b);
        }
    printf("rss_peak (%s): ok\n", test_mode());
    return 0;
}
