/* rss_header_blocks.c - blocks of 8 KiB and a small header are packed, not rounded up to the
 * next quarter of a power of two.
 *
 * CPython's parser takes its memory in blocks of 8192 + 32 bytes (Python/pyarena.c), and a
 * script run as a file keeps them until it ends: dozens live through a whole program. Rounded
 * to 10 KiB, each kept 2 KiB more resident than it holds, because such blocks share their
 * pages. This program allocates a batch of them, writes every byte, and counts the distinct
 * resident pages under the blocks with mincore. Strict mode (poolmalloc): they must take at
 * most the pages of the blocks' bytes plus 256 bytes each (the class just above 8 KiB), plus
 * one page. Under glibc (system mode) the figure is printed and nothing is asserted. */
#include "check.h"

#include <sys/mman.h>

enum { BLOCK = 8192 + 32, N = 64, SLACK_PER_BLOCK = 256 };

static unsigned char *blocks[N];

/* Distinct resident pages under [blocks[i], blocks[i] + BLOCK) for all i: the pages are sorted
 * by address first, so a page two blocks share counts once. */
static long resident_pages_under_blocks(uintptr_t page)
{
    uintptr_t pages[N * (BLOCK / 4096 + 2)];
    int n = 0;
    for (int i = 0; i < N; i++) {
        uintptr_t first = (uintptr_t)blocks[i] & ~(page - 1);
        uintptr_t last = ((uintptr_t)blocks[i] + BLOCK - 1) & ~(page - 1);
        for (uintptr_t p = first; p <= last; p += page) {
            CHECK(n < (int)(sizeof pages / sizeof pages[0]), "too many pages");
            pages[n++] = p;
        }
    }
    /* Insertion sort: no allocation while measuring (qsort may allocate). */
    for (int i = 1; i < n; i++) {
        uintptr_t v = pages[i];
        int j = i - 1;
        while (j >= 0 && pages[j] > v) {
            pages[j + 1] = pages[j];
            j--;
        }
        pages[j + 1] = v;
    }
    long resident = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && pages[i] == pages[i - 1])
            continue;
        unsigned char v;
        CHECK(mincore((void *)pages[i], page, &v) == 0, "mincore: %s", strerror(errno));
        resident += v & 1;
    }
    return resident;
}

int main(void)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(opaque_size(BLOCK));
        CHECK(blocks[i] != NULL, "malloc(%d)", BLOCK);
        memset(blocks[i], i + 1, BLOCK);
    }
    for (int i = 0; i < N; i++)
        CHECK(blocks[i][0] == i + 1 && blocks[i][BLOCK - 1] == i + 1, "block %d reads back wrong",
              i);
    long resident = resident_pages_under_blocks(page);
    long budget = (long)((N * (BLOCK + SLACK_PER_BLOCK) + page - 1) / page) + 1;
    printf("rss_header_blocks (%s): %d blocks of %d bytes: %ld pages resident under them "
           "(%ld bytes a block; budget %ld pages)\n",
           test_mode(), N, BLOCK, resident, resident * (long)page / N, budget);
    if (strict_mode())
        CHECK(resident <= budget, "%d blocks of %d bytes keep %ld pages resident, more than %ld",
              N, BLOCK, resident, budget);
    for (int i = 0; i < N; i++)
        free(blocks[i]);
    printf("rss_header_blocks (%s): ok\n", test_mode());
    return 0;
}
