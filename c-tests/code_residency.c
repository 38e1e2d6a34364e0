/* code_residency.c - the library's rarely run code stays out of the resident set.
 *
 * Every process that loads the library keeps its code pages resident, and the kernel maps the
 * pages of a file mapping up to 64 KiB around each fault (fault-around), so it is whole 64 KiB
 * windows of code that count, not the functions that run. build.rs puts the code a process
 * normally never runs (the statistics report, diagnostics, fork handlers, malloc_trim; section
 * .text_rarely_run) in windows of its own, before the rest. This program does what ordinary
 * programs do (every size of block, calloc, realloc, aligned allocation, a thread that
 * allocates, frees on another thread and exits) and then checks, in /proc/self/smaps, that the
 * library's code mapping has none of those windows resident.
 *
 * Strict mode only (the library under test is poolmalloc): scripts/c-tests.sh passes the size
 * of .text_rarely_run (padding included) in POOLMALLOC_TEST_RARE_BYTES. In system mode the
 * program only runs the workload.
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

static void workload(void)
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

/* Size and Rss (bytes) of the executable mapping of `path` in /proc/self/smaps. Returns 0 if
 * there is none. Reads with plain stdio: the check is over by then. */
static int code_mapping(const char *path, size_t *size, size_t *rss)
{
    FILE *f = fopen("/proc/self/smaps", "re");
    CHECK(f != NULL, "open /proc/self/smaps: %s", strerror(errno));
    char line[PATH_MAX + 128];
    int in_code = 0, found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        int name_at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &name_at) == 3 &&
            name_at > 0) {
            char *name = line + name_at;
            name[strcspn(name, "\n")] = 0;
            in_code = strcmp(perms, "r-xp") == 0 && strcmp(name, path) == 0;
            if (in_code) {
                CHECK(!found, "two executable mappings of %s", path);
                found = 1;
                *size = hi - lo;
            }
            continue;
        }
        unsigned long kib;
        if (in_code && sscanf(line, "Rss: %lu kB", &kib) == 1)
            *rss = kib * 1024;
    }
    fclose(f);
    return found;
}

int main(void)
{
    workload();
    if (!strict_mode()) {
        printf("code_residency (%s): workload only\n", test_mode());
        return 0;
    }
    const char *lib = getenv("POOLMALLOC_TEST_LIB");
    const char *rare_env = getenv("POOLMALLOC_TEST_RARE_BYTES");
    CHECK(lib != NULL && rare_env != NULL, "POOLMALLOC_TEST_LIB and POOLMALLOC_TEST_RARE_BYTES");
    size_t rare = strtoul(rare_env, NULL, 0);
    CHECK(rare >= 64 << 10, "the rarely run code has no 64 KiB window of its own (%zu bytes)",
          rare);
    char path[PATH_MAX];
    CHECK(realpath(lib, path) != NULL, "realpath %s", lib);
    size_t size = 0, rss = 0;
    CHECK(code_mapping(path, &size, &rss), "no executable mapping of %s", path);
    printf("code_residency (%s): code mapping %zu KiB, %zu KiB resident, rarely run %zu KiB\n",
           test_mode(), size >> 10, rss >> 10, rare >> 10);
    CHECK(rss + rare <= size, "%zu KiB of code resident: the rarely run code's windows are too",
          rss >> 10);
    return 0;
}
