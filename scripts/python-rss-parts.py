#!/usr/bin/env python3
"""python-rss-parts.py - where a pyperformance worker's resident memory is, under pymalloc and
under poolmalloc (interposed PyObject_*/PyMem_*), at the moment pyperf reads the peak it reports.

pyperf takes a worker's `mem_max_rss` (ru_maxrss) in `collect_memory_metadata`, after the timed
runs. This runs single workers of each benchmark under both allocators, interleaved, with a
`sitecustomize` that reads /proc/self/status and /proc/self/smaps at that call, and prints the
medians of poolmalloc minus pymalloc, in KiB:
  ru_maxrss  what pyperf reports (the kernel sums per-CPU counters only roughly for it);
  VmHWM      the kernel's high-water mark, read exactly where it is the current size;
  VmRSS      the resident set at that moment, counted exactly (below the peak in a benchmark
             whose peak comes during the timed runs and an allocator that gives memory back);
  anon       RssAnon: the heap, poolmalloc's pools and metadata, the library's written pages;
  lib        the preloaded library's own pages (file-backed and written: the written ones are
             counted in anon too);
  meta       poolmalloc's metadata (pool descriptors, arena and large-block headers, heaps, the
             address map): its resident bytes from the library's statistics, part of anon;
  blocks     anon less meta and the library's written pages: the memory the program's blocks
             take (poolmalloc's pools and large blocks against pymalloc's arenas and glibc's
             heap), with the anonymous memory both share (stacks); lib + meta + blocks +
             other-file = VmRSS;
  other-file every other file-backed page (other libraries: differs only by noise).

usage: scripts/python-rss-parts.py [--reps N] [--lib LIB] [--work DIR] [BENCHMARK ...]
  --work DIR  compare-python.sh's work directory (default /tmp/poolmalloc-pyperf), which holds
              the pyperformance benchmarks and the interpreter's venv; run
              `scripts/compare-python.sh --quick` once to create it.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HOOK = r'''
import os, re as _re, resource, sys
import pyperf._collect_metadata as _cm
_orig = _cm.collect_memory_metadata
def _parts(metadata):
    st = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    kib = lambda k: int(st[k].split()[0])
    lib = lib_written = 0
    name = None
    preload = os.environ.get("LD_PRELOAD", "\0")
    for line in open("/proc/self/smaps"):
        head = line.split()
        if _re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            name = head[5] if len(head) > 5 else ""
        elif name == preload and line.startswith("Rss:"):
            lib += int(head[1])
        elif name == preload and line.startswith("Anonymous:"):
            lib_written += int(head[1])
    line = "PARTS ru_maxrss=%d VmHWM=%d VmRSS=%d anon=%d lib=%d other-file=%d" % (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, kib("VmHWM"), kib("VmRSS"),
        kib("RssAnon"), lib, kib("RssFile") + kib("RssShmem") - (lib - lib_written))
    # Asked for after the kernel's figures are read: ctypes and the JSON allocate.
    import ctypes, json
    meta = 0
    stats_json = getattr(ctypes.CDLL(None), "poolmalloc_stats_json", None)
    if stats_json is not None:
        stats_json.restype = ctypes.c_size_t
        stats_json.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        buf = ctypes.create_string_buffer(stats_json(None, 0) + 4096)
        stats_json(buf, len(buf))
        meta = json.loads(buf.value)["memory"]["metadata_resident"] // 1024
    sys.stderr.write("%s meta=%d blocks=%d\n" % (line, meta, kib("RssAnon") - meta - lib_written))
    return _orig(metadata)
_cm.collect_memory_metadata = _parts
'''



def default_benchmarks():
    """compare-python.sh's default benchmarks (`DEFAULT_BENCHMARKS` there: one list for both)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare-python.sh")
    m = re.search(r'^DEFAULT_BENCHMARKS="([^"]+)"', open(script).read(), re.M)
    return m.group(1).split(",")


def locate(benchdir, bench):
    """The script and extra arguments pyperformance runs for `bench` (its MANIFEST maps
    pickle_pure_python to bm_pickle with `--pure-python pickle`, for example)."""
    where = "bm_" + bench
    for line in open(os.path.join(benchdir, "MANIFEST")):
        parts = line.split()
        if len(parts) == 2 and parts[0] == bench and parts[1].startswith("<local:"):
            where = "bm_" + parts[1][len("<local:"):-1]
    extra = []
    toml = os.path.join(benchdir, where, "bm_%s.toml" % bench)
    if os.path.exists(toml):
        m = re.search(r"^extra_opts\s*=\s*(\[.*\])", open(toml).read(), re.M)
        if m:
            extra = json.loads(m.group(1))
    return os.path.join(benchdir, where, "run_benchmark.py"), extra


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--lib", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                  "target", "release", "libpoolmalloc.so"))
    ap.add_argument("--work", default="/tmp/poolmalloc-pyperf")
    ap.add_argument("benchmarks", nargs="*")
    a = ap.parse_args()
    a.benchmarks = a.benchmarks or default_benchmarks()
    pythons = glob.glob(os.path.join(a.work, "venv", "*", "bin", "python"))
    benchdirs = glob.glob(os.path.join(a.work, "venv-tool", "lib", "python3*", "site-packages",
                                       "pyperformance", "data-files", "benchmarks"))
    if not pythons or not benchdirs:
        sys.exit("python-rss-parts: no pyperformance set-up under %s (run scripts/compare-python.sh "
                 "--quick first)" % a.work)
    lib = os.path.abspath(a.lib)
    set_options = sorted(k for k in os.environ if k.startswith("POOLMALLOC_"))
    if set_options:
        # Parsing a set option runs rarely run code, which maps that segment's pages.
        print("note: %s set: the library's column includes its rarely run code (28 KiB or so), "
              "which parsing set options maps" % ", ".join(set_options))
    keys = ["ru_maxrss", "VmHWM", "VmRSS", "anon", "lib", "meta", "blocks", "other-file"]
    print("%-22s %s   (KiB, poolmalloc minus pymalloc, medians of %d)" % (
        "benchmark", " ".join("%10s" % k for k in keys), a.reps))
    with tempfile.TemporaryDirectory() as hookdir:
        with open(os.path.join(hookdir, "sitecustomize.py"), "w") as f:
            f.write(HOOK)
        for bench in a.benchmarks:
            script, extra = locate(benchdirs[0], bench)
            got = {"pymalloc": [], "poolmalloc": []}
            for _ in range(a.reps):
                for config in got:
                    env = dict(os.environ, PYTHONPATH=hookdir)
                    env.pop("LD_PRELOAD", None)
                    env.pop("PYTHONMALLOC", None)
                    if config == "poolmalloc":
                        env["LD_PRELOAD"] = lib
                    out = os.path.join(hookdir, "out.json")
                    if os.path.exists(out):
                        os.unlink(out)
                    p = subprocess.run(
                        [pythons[0], script] + extra +
                        ["--worker", "-l", "1", "-n", "3", "-w", "1", "--output", out],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                    lines = [l for l in p.stderr.splitlines() if l.startswith("PARTS ")]
                    if p.returncode != 0 or not lines:
                        sys.exit("python-rss-parts: %s under %s failed:\n%s" % (bench, config, p.stderr[-2000:]))
                    got[config].append(dict((k, int(v)) for k, v in
                                            (kv.split("=") for kv in lines[-1].split()[1:])))
            med = {c: {k: statistics.median(r[k] for r in rs) for k in keys} for c, rs in got.items()}
            print("%-22s %s" % (bench, " ".join("%+10.0f" % (med["poolmalloc"][k] - med["pymalloc"][k])
                                                  for k in keys)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
