/* code_residency.c - the library's rarely run code and unwind tables stay out of the resident
 * set.
 *
 * Every process that loads the library keeps its code pages resident, and the kernel maps the
 * pages of a file mapping up to 64 KiB around each fault (fault-around, within the mapping), so
 * a segment with one function that runs is resident nearly whole. build.rs puts the code a
 * process normally never runs (the statistics report, diagnostics, fork handlers,
 * malloc_trim; section .text_rarely_run) and the unwind tables (.eh_frame_hdr, .eh_frame) in
 * segments of their own. This program does what ordinary programs do (every size of block,
 * calloc, realloc, aligned allocation, a thread that allocates, frees on another thread and
 * exits) and then checks, in /proc/self/smaps, that those segments have no page resident while
 * the rest of the code has, and that the library's writable data takes one resident page.
 *
 * Before the threads and the aligned allocations, after the same sizes from one thread alone,
 * the code that only threads and aligned allocations run (section .text_warm, a segment of
 * one page) must have no page resident either: a single-threaded program keeps it out.
 *
 * Strict mode only (the library under test is poolmalloc): scripts/c-tests.sh passes the file
 * offsets at which those segments start in POOLMALLOC_TEST_COLD_OFFSETS and
 * POOLMALLOC_TEST_WARM_OFFSET. In system mode the program only runs the workload.
 */
#include "check.h"

#include <limits.h>
#include <malloc.h>
#include <pthread.h>

#define NBLOCKS 4096

static void *blocks[NBLOCKS];

static void *thread_main(void *arg)
{
    uint64_t rng = rng_seed((uint64_t)(uintptr_t)arg);
    void *local[256];
    for (int i = 0; i < 256; i++) {
        local[i] = malloc(rng_logsize(&rng, 1, 64 << 10));
        CHECK(local[i] != NULL, "malloc in thread");
    }
    for (int i = 0; i < 256; i += 2)
        free(local[i]);
    /* The odd ones go back to main, which frees them from another thread. */
    void **rest = malloc(128 * sizeof(void *));
    CHECK(rest != NULL, "malloc in thread");
    for (int i = 0; i < 128; i++)
        rest[i] = local[2 * i + 1];
    return rest;
}

/* What a single-threaded program that never asks for an alignment does. */
static void plain_workload(void)
{
    uint64_t rng = rng_seed(42);
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < NBLOCKS; i++) {
            size_t n = rng_logsize(&rng, 0, (i % 64 == 0) ? (4u << 20) : (16u << 10));
            blocks[i] = (i % 7 == 0) ? calloc(1, n) : malloc(n);
            CHECK(blocks[i] != NULL, "allocation of %zu bytes", n);
            memset(blocks[i], 0xa5, n < 64 ? n : 64);
        }
        for (int i = 0; i < NBLOCKS; i += 3) {
            size_t n = rng_logsize(&rng, 1, 256u << 10);
            void *q = realloc(blocks[i], n);
            CHECK(q != NULL, "realloc to %zu bytes", n);
            blocks[i] = q;
        }
        for (int i = 0; i < NBLOCKS; i++)
            free(opaque(blocks[i]));
    }
}

/* Aligned allocation, and a thread that allocates, exits and leaves blocks to free. */
static void threads_and_aligned_workload(void)
{
    void *p = NULL;
    CHECK(posix_memalign(&p, 4096, 10000) == 0 && is_aligned(p, 4096), "posix_memalign");
    CHECK(malloc_usable_size(p) >= 10000, "malloc_usable_size");
    free(p);
    p = aligned_alloc(64, 640);
    CHECK(p != NULL && is_aligned(p, 64), "aligned_alloc");
    free(p);

    pthread_t t;
    void *rest = NULL;
    CHECK(pthread_create(&t, NULL, thread_main, (void *)7) == 0, "pthread_create");
    CHECK(pthread_join(t, &rest) == 0, "pthread_join");
    for (int i = 0; i < 128; i++)
        free(((void **)rest)[i]);
    free(rest);
}

struct mapping {
    unsigned long offset, size, rss;
    int exec, writable;
};

/* The mappings of `path` in /proc/self/smaps, at most `max`; returns how many. Reads with
 * plain stdio: the workload is over by then. */
static int library_mappings(const char *path, struct mapping *out, int max)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    CHECK(f != NULL, "open /proc/self/smaps: %s", strerror(errno));
    char line[PATH_MAX + 128];
    int n = 0;
    struct mapping *cur = NULL;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, offset;
        char perms[8];
        int name_at = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %n", &lo, &hi, perms, &offset, &name_at) == 4 &&
            name_at > 0) {
            char *name = line + name_at;
            name[strcspn(name, "\n")] = 0;
            cur = NULL;
            if (strcmp(name, path) == 0) {
                CHECK(n < max, "more than %d mappings of %s", max, path);
                cur = &out[n++];
                *cur = (struct mapping){offset, hi - lo, 0, perms[2] == 'x', perms[1] == 'w'};
            }
            continue;
        }
        unsigned long kib;
        if (cur && sscanf(line, "Rss: %lu kB", &kib) == 1)
            cur->rss = kib * 1024;
    }
    fclose(f);
    return n;
}

/* Resident bytes of the mapping of `path` that starts at file offset `offset`; aborts when
 * no mapping starts there (the section is not a segment of its own). */
static unsigned long segment_rss(const char *path, unsigned long offset, const char *what)
{
    struct mapping maps[16];
    int n = library_mappings(path, maps, 16);
    for (int i = 0; i < n; i++)
        if (maps[i].offset == offset)
            return maps[i].rss;
    CHECK(0, "no mapping of %s starts at file offset %#lx (%s): not a segment of its own", path,
          offset, what);
    return 0;
}

int main(void)
{
    plain_workload();
    int strict = strict_mode();
    char path[PATH_MAX];
    unsigned long warm_offset = 0;
    if (strict) {
        const char *lib = getenv("POOLMALLOC_TEST_LIB");
        const char *warm = getenv("POOLMALLOC_TEST_WARM_OFFSET");
        CHECK(lib != NULL && warm != NULL && *warm, "POOLMALLOC_TEST_LIB and "
                                                     "POOLMALLOC_TEST_WARM_OFFSET");
        CHECK(realpath(lib, path) != NULL, "realpath %s", lib);
        warm_offset = strtoul(warm, NULL, 0);
        unsigned long rss = segment_rss(path, warm_offset, ".text_warm");
        printf("code_residency (%s): one thread, no alignment: the threads' and aligned "
               "allocations' code has %lu KiB resident\n", test_mode(), rss >> 10);
        CHECK(rss == 0, "a single-threaded program without aligned allocation has %lu KiB of "
                        ".text_warm resident", rss >> 10);
    }
    threads_and_aligned_workload();
    if (!strict) {
        printf("code_residency (%s): workload only\n", test_mode());
        return 0;
    }
    /* The measurement works there too: the code did run, and from that segment. */
    unsigned long warm_rss = segment_rss(path, warm_offset, ".text_warm");
    printf("code_residency (%s): after threads and aligned allocations: %lu KiB\n", test_mode(),
           warm_rss >> 10);
    CHECK(warm_rss > 0, "threads and aligned allocations ran no code of .text_warm");
    const char *cold = getenv("POOLMALLOC_TEST_COLD_OFFSETS");
    CHECK(cold != NULL, "POOLMALLOC_TEST_COLD_OFFSETS");
    struct mapping maps[16];
    int n = library_mappings(path, maps, 16);

    /* The measurement works: some code of the library is resident. */
    unsigned long hot_code = 0;
    for (int i = 0; i < n; i++)
        if (maps[i].exec)
            hot_code += maps[i].rss;
    CHECK(hot_code > 0, "no code of %s resident", path);

    int checked = 0;
    for (const char *s = cold; *s;) {
        char *end;
        unsigned long offset = strtoul(s, &end, 0);
        CHECK(end != s, "bad POOLMALLOC_TEST_COLD_OFFSETS '%s'", cold);
        s = end + strspn(end, " ");
        int found = 0;
        for (int i = 0; i < n; i++) {
            if (maps[i].offset != offset)
                continue;
            found = 1;
            printf("code_residency (%s): segment at file offset %#lx: %lu KiB, %lu KiB resident\n",
                   test_mode(), offset, maps[i].size >> 10, maps[i].rss >> 10);
            CHECK(maps[i].rss == 0, "segment at %#lx has %lu KiB resident", offset,
                  maps[i].rss >> 10);
        }
        CHECK(found, "no mapping of %s starts at file offset %#lx: not a segment of its own", path,
              offset);
        checked++;
    }
    CHECK(checked == 2, "expected the rarely run code's and the unwind tables' offsets, got %d",
          checked);
    printf("code_residency (%s): %lu KiB of code resident\n", test_mode(), hot_code >> 10);

    /* The data the process may write (its relocated pointers, the statics) is one page: the
     * sentinel heaps, written only by the dynamic linker, are read-only once relocated. */
    unsigned long writable = 0;
    for (int i = 0; i < n; i++)
        if (maps[i].writable)
            writable += maps[i].rss;
    long page = sysconf(_SC_PAGESIZE);
    printf("code_residency (%s): %lu KiB of writable data resident\n", test_mode(), writable >> 10);
    CHECK(writable > 0 && writable <= (unsigned long)page,
          "%lu bytes of the library's writable data resident, not one page", writable);
    return 0;
}
