/* embed.c - the embedding harness: proves that an application embedding CPython can put every
 * Python allocation on poolmalloc through CPython's own allocator API, without LD_PRELOAD and
 * without interposing PyObject_* symbols:
 *
 *   - linked against libpython and libpoolmalloc (libpython first, so that libpython's own
 *     PyObject_Malloc keeps its definition and the PyMem_SetAllocator path is the one used;
 *     malloc itself is poolmalloc's, checked with dladdr);
 *   - after Py_PreInitialize (which applies PYTHONMALLOC and would otherwise replace a hook set
 *     earlier) it installs a PyMemAllocatorEx calling poolmalloc's malloc/calloc/realloc/free
 *     for the MEM and OBJ domains (RAW already is plain malloc), with CPython's semantics:
 *     size 0 becomes 1 so that malloc(0) is non-NULL and realloc(p, 0) never frees;
 *   - after Py_InitializeFromConfig it checks with PyMem_GetAllocator that both domains still
 *     use it, and that a fresh Python object lives in poolmalloc's memory (poolmalloc_owns);
 *   - it then runs the script given on the command line (sys.argv = script and its arguments)
 *     with Py_RunMain and exits with the script's exit status.
 *
 * usage: embed SCRIPT [ARGS...]     exit status: the script's; 3 if the harness setup failed.
 * Environment: POOLMALLOC_EMBED_VERBOSE=1 prints what was installed to stderr.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/poolmalloc.h"

/* Distinguishes our hook from anything else when reading it back. */
static int hook_ctx_tag;

static void *pm_malloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size ? size : 1);
}

static void *pm_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    if (nelem == 0 || elsize == 0)
        return calloc(1, 1);
    return calloc(nelem, elsize); /* overflow of nelem * elsize: calloc returns NULL */
}

static void *pm_realloc(void *ctx, void *ptr, size_t new_size)
{
    (void)ctx;
    return realloc(ptr, new_size ? new_size : 1);
}

static void pm_free(void *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

static int is_ours(const PyMemAllocatorEx *a)
{
    return a->ctx == &hook_ctx_tag && a->malloc == pm_malloc && a->calloc == pm_calloc &&
           a->realloc == pm_realloc && a->free == pm_free;
}

static const char *object_of(void *sym)
{
    Dl_info info;
    if (sym == NULL || dladdr(sym, &info) == 0 || info.dli_fname == NULL)
        return "?";
    return info.dli_fname;
}

static int fail_setup(const char *what)
{
    fprintf(stderr, "embed: %s\n", what);
    return 3;
}

int main(int argc, char **argv)
{
    int verbose = getenv("POOLMALLOC_EMBED_VERBOSE") != NULL &&
                  strcmp(getenv("POOLMALLOC_EMBED_VERBOSE"), "1") == 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
        return 2;
    }

    /* malloc must be poolmalloc's (the library defines poolmalloc_version). */
    const char *lib = object_of((void *)poolmalloc_version);
    const char *mal = object_of(dlsym(RTLD_DEFAULT, "malloc"));
    if (strcmp(lib, mal) != 0) {
        fprintf(stderr, "embed: malloc resolves to %s, not to poolmalloc (%s)\n", mal, lib);
        return 3;
    }

    PyPreConfig pre;
    PyPreConfig_InitPythonConfig(&pre); /* honours PYTHONMALLOC; replaced below */
    PyStatus st = Py_PreInitialize(&pre);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);

    PyMemAllocatorEx ours = {&hook_ctx_tag, pm_malloc, pm_calloc, pm_realloc, pm_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &ours);
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &ours);

    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;
    st = PyConfig_SetBytesArgv(&config, argc - 1, argv + 1);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesString(&config, &config.run_filename, argv[1]);
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);

    PyMemAllocatorEx mem, obj;
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &obj);
    if (!is_ours(&mem) || !is_ours(&obj))
        return fail_setup("after Py_InitializeFromConfig the MEM/OBJ allocator is no longer "
                          "poolmalloc's hook");

    /* A fresh object must live in poolmalloc's memory. */
    PyObject *probe = PyLong_FromLongLong(1LL << 50);
    PyObject *probe_list = PyList_New(100);
    if (probe == NULL || probe_list == NULL)
        return fail_setup("cannot create probe objects");
    int owned = poolmalloc_owns(probe) && poolmalloc_owns(probe_list);
    Py_DECREF(probe);
    Py_DECREF(probe_list);
    if (!owned)
        return fail_setup("a new Python object is not in poolmalloc's memory");

    if (verbose)
        fprintf(stderr,
                "embed: poolmalloc %s hooks PYMEM_DOMAIN_MEM and PYMEM_DOMAIN_OBJ; malloc from "
                "%s; PyObject_Malloc from %s\n",
                poolmalloc_version(), mal, object_of(dlsym(RTLD_DEFAULT, "PyObject_Malloc")));

    return Py_RunMain(); /* runs run_filename, finalizes, returns the exit status */
}
