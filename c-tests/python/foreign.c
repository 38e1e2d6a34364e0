/* foreign.c - proves that poolmalloc's PyObject_Free/PyObject_Realloc, preloaded into an
 * embedded CPython (libpython3.x.so, --enable-shared), hand the pointers they did not allocate
 * to CPython's own allocator (pymalloc) instead of crashing or corrupting either heap:
 *
 *   - after Py_Initialize with the pymalloc allocator, libpython's own PyMem_Malloc (looked up
 *     in libpython itself: the PyMem_Malloc the program sees is poolmalloc's, checked) returns
 *     a pymalloc block (checked: poolmalloc_owns(p) == 0) and PyObject_Free -- which resolves
 *     to poolmalloc's because of LD_PRELOAD (checked with dladdr) -- frees it: pymalloc reuses
 *     it; the same through our PyMem_Free;
 *   - PyObject_Realloc of such a foreign block returns a valid block with the contents kept,
 *     both within pymalloc's small sizes and growing past them (where it moves to malloc);
 *   - thousands of such frees/reallocs mixed with poolmalloc-owned ones, then Python code runs
 *     and verifies its own results, and Py_FinalizeEx succeeds.
 *
 * Must be run with LD_PRELOAD=libpoolmalloc.so (it checks, and fails otherwise). The forwarded
 * count in the statistics report (POOLMALLOC_STATS=json) is checked by scripts/python-tests.sh.
 * Build: cc $(python3-config --embed --cflags) foreign.c $(python3-config --embed --ldflags)
 *        (with -Wl,-rpath to libpython's directory).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pycheck.h"

#include <dlfcn.h>

int poolmalloc_owns(const void *p);

/* Resolved at run time so that the program also links without the library. */
static int (*owns)(const void *);
/* libpython's own PyMem_Malloc (pymalloc), which the preload hides from the program. */
static void *(*pymalloc_malloc)(size_t);

static void require_preload(void)
{
    owns = (int (*)(const void *))dlsym(RTLD_DEFAULT, "poolmalloc_owns");
    CHECK(owns != NULL, "poolmalloc_owns not found: run with LD_PRELOAD=libpoolmalloc.so");
    Dl_info ours, free_info;
    CHECK(dladdr((void *)owns, &ours) != 0, "dladdr(poolmalloc_owns)");
    void *pf = dlsym(RTLD_DEFAULT, "PyObject_Free");
    CHECK(pf != NULL && dladdr(pf, &free_info) != 0, "dladdr(PyObject_Free)");
    CHECK(strcmp(ours.dli_fname, free_info.dli_fname) == 0,
          "PyObject_Free resolves to %s, not to poolmalloc (%s): is it preloaded?",
          free_info.dli_fname, ours.dli_fname);
    /* And there is a next one (libpython's) to forward to. */
    void *next = dlsym(RTLD_NEXT, "PyObject_Free");
    CHECK(next != NULL, "no PyObject_Free in libpython?");
    /* libpython's PyMem_Malloc: look it up in libpython, found through a symbol only it has. */
    Dl_info py;
    CHECK(dladdr((void *)Py_InitializeFromConfig, &py) != 0, "dladdr(Py_InitializeFromConfig)");
    void *h = dlopen(py.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    CHECK(h != NULL, "dlopen(%s, RTLD_NOLOAD): %s", py.dli_fname, dlerror());
    pymalloc_malloc = (void *(*)(size_t))dlsym(h, "PyMem_Malloc");
    CHECK(pymalloc_malloc != NULL &&
              (void *)pymalloc_malloc != dlsym(RTLD_DEFAULT, "PyMem_Malloc"),
          "libpython's own PyMem_Malloc not found, or it is the one the program sees");
}

static void init_python(void)
{
    PyPreConfig pre;
    PyPreConfig_InitPythonConfig(&pre);
    pre.allocator = PYMEM_ALLOCATOR_PYMALLOC; /* whatever PYTHONMALLOC says */
    PyStatus st = Py_PreInitialize(&pre);
    CHECK(!PyStatus_Exception(st), "Py_PreInitialize: %s", st.err_msg ? st.err_msg : "?");
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    CHECK(!PyStatus_Exception(st), "Py_InitializeFromConfig: %s", st.err_msg ? st.err_msg : "?");
}

static void run_python(const char *what, const char *code)
{
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = PyRun_SimpleString(code);
    PyGILState_Release(g);
    CHECK(rc == 0, "Python code (%s) failed", what);
}

static const char WORKLOAD[] =
    "import gc, json, random\n"
    "rng = random.Random(4)\n"
    "d = {}\n"
    "for i in range(200000):\n"
    "    d[('k', i % 5000)] = [i, str(i), {'x': i}]\n"
    "    if i % 3 == 0: d.pop(('k', rng.randrange(5000)), None)\n"
    "s = json.dumps({str(k): v for k, v in d.items()})\n"
    "back = json.loads(s)\n"
    "assert len(back) == len(d), (len(back), len(d))\n"
    "for k, v in d.items():\n"
    "    assert back[str(k)] == [v[0], v[1], {'x': v[0]}]\n"
    "class Node:\n"
    "    def __init__(self, v): self.v = v; self.peer = self\n"
    "nodes = [Node(i) for i in range(50000)]\n"
    "del nodes\n"
    "gc.collect()\n"
    "words = ['w%d' % i * (i % 7 + 1) for i in range(30000)]\n"
    "assert ''.join(words).count('w') == sum(i % 7 + 1 for i in range(30000))\n";

int main(void)
{
    require_preload();
    init_python();

    /* 0. The program's PyMem_Malloc is poolmalloc's. */
    void *ours = PyMem_Malloc(24);
    CHECK(ours != NULL && owns(ours) != 0, "PyMem_Malloc(24) = %p is not poolmalloc's", ours);
    PyMem_Free(ours);

    /* 1. A single small pymalloc block, freed through our PyObject_Free, then PyMem_Free. */
    void *p = pymalloc_malloc(24);
    CHECK(p != NULL, "libpython's PyMem_Malloc(24)");
    CHECK(owns(p) == 0, "libpython's PyMem_Malloc(24) = %p is poolmalloc's: the test needs a "
                        "pymalloc block", p);
    memset(p, 0x7c, 24);
    PyObject_Free(p);
    /* pymalloc really took it back: its next block of that size class is the same address. */
    void *again = pymalloc_malloc(24);
    CHECK(again == p, "pymalloc did not get %p back (next block %p)", p, again);
    PyMem_Free(again);
    void *third = pymalloc_malloc(24);
    CHECK(third == p, "pymalloc did not get %p back through PyMem_Free (next block %p)", p, third);
    PyMem_Free(third);

    /* 2. PyObject_Realloc of a foreign block keeps the contents, small and growing. */
    static const size_t targets[] = {8, 40, 300, 512, 513, 4096, 100000};
    for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
        unsigned char *f = pymalloc_malloc(100);
        CHECK(f != NULL && owns(f) == 0, "PyMem_Malloc(100) foreign");
        fill_pattern(f, 100, (unsigned)t);
        size_t keep = targets[t] < 100 ? targets[t] : 100;
        unsigned char *g = PyObject_Realloc(f, targets[t]);
        CHECK(g != NULL, "PyObject_Realloc(foreign, %zu) is NULL", targets[t]);
        CHECK(check_pattern(g, keep, (unsigned)t), "contents lost in foreign realloc to %zu",
              targets[t]);
        memset(g, 0x33, targets[t]);
        PyObject_Free(g); /* foreign or ours (large sizes move to malloc): both must work */
    }

    /* 3. Many of them, interleaved with blocks of ours. */
    enum { N = 20000 };
    static void *blocks[N];
    static size_t sizes[N];
    unsigned x = 12345;
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < N; i++) {
            x = x * 1103515245u + 12345u;
            sizes[i] = 1 + (x >> 16) % 500;
            if (i % 3 == 0)
                blocks[i] = PyObject_Malloc(sizes[i]); /* ours (interposed) */
            else
                blocks[i] = pymalloc_malloc(sizes[i]); /* pymalloc's */
            CHECK(blocks[i] != NULL, "alloc %zu", sizes[i]);
            CHECK((i % 3 == 0) == (owns(blocks[i]) != 0), "block %d of size %zu owner", i,
                  sizes[i]);
            fill_pattern(blocks[i], sizes[i], (unsigned)i);
        }
        for (int i = 0; i < N; i++) {
            CHECK(check_pattern(blocks[i], sizes[i], (unsigned)i), "block %d corrupted", i);
            if (i % 2 == 0) {
                size_t ns = sizes[i] * 2 + 3;
                unsigned char *r = PyObject_Realloc(blocks[i], ns);
                CHECK(r != NULL, "realloc");
                CHECK(check_pattern(r, sizes[i], (unsigned)i), "block %d realloc contents", i);
                blocks[i] = r;
            }
            PyObject_Free(blocks[i]);
        }
    }

    /* 4. Python itself still works, with all of that behind it. */
    run_python("workload", WORKLOAD);
    void *after = pymalloc_malloc(16);
    CHECK(after != NULL && owns(after) == 0, "pymalloc still serves libpython's PyMem_Malloc");
    PyObject_Free(after);

    CHECK(Py_FinalizeEx() == 0, "Py_FinalizeEx failed");
    printf("foreign: all checks passed\n");
    return 0;
}
