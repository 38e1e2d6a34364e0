#!/usr/bin/env python3
"""report.py - turns the raw data of scripts/bench.sh into the report (not a benchmark).

Reads results.tsv (one line per run: benchmark, allocator, round, wall time, peak RSS, exit
status, extra metrics) and callgrind.tsv (instructions per malloc+free by allocator, pattern
and size); prints the tables on stdout, writes the markdown file (BENCHMARKS.md for a full
run) and a PNG bar chart of every peer's ratio to the reference allocator (poolmalloc).
Medians over the rounds that passed; a benchmark x allocator with a failed round shows FAIL.
The section between the WHY markers of an existing markdown file is kept as it is.
Matplotlib is optional: without it there is no chart, and a note says so.
"""
import argparse
import csv
import math
import os
import re
import statistics
import sys
from collections import defaultdict

WHY_BEGIN = "<!-- WHY:BEGIN (kept by scripts/bench/report.py; edit freely) -->"
WHY_END = "<!-- WHY:END -->"
WHY_DEFAULT = """_To be filled from a profile (perf / callgrind of the benchmarks listed above).
For each benchmark where a peer is ahead: what poolmalloc does on that path, what the peer
does instead, and what would close the gap._
"""

DESCRIPTIONS = [
    ("pairs-small", "malloc then free at once, sizes 16 B .. 1 KiB (each power of two and sizes just below), 1 thread"),
    ("pairs-large", "the same for 2 KiB .. 1 MiB (fewer iterations for bigger sizes)"),
    ("lifo / fifo", "batches of 1000 random sizes 16 B .. 1 KiB, freed newest first / oldest first"),
    ("larson-T", "server churn: T threads replace random blocks (16 B .. 8 KiB) in arrays that other, exited threads filled: remote frees, thread exit"),
    ("prodcons-T", "T/2 producer threads pass blocks (16 B .. 4 KiB) through rings to T/2 consumers, which free them"),
    ("scratch-T", "cache-scratch: each of T threads frees a small object the main thread allocated, then allocates, writes 100 times and frees 8-byte objects (false sharing)"),
    ("realloc-T", "T threads grow 256 buffers each by realloc (x1.1 .. x2, sometimes shrink) up to random caps of 64 B .. 64 KiB"),
    ("large-T", "T threads replace 4 live buffers of 256 KiB .. 64 MiB (log-uniform, a quarter by calloc), touching every page"),
    ("frag-T", "T threads allocate 256 MiB of mixed sizes and exit; 90% freed in random order; RSS measured after; then 30% re-allocated in other sizes"),
    ("cxx-T", "C++: std::map<std::string, std::vector<long>> churn and string building/splitting, one map per thread"),
    ("callgrind", "instructions per malloc+free on the thread-local fast path: (Ir(N ops) - Ir(0 ops)) / N inside the measured loop, loop overhead included"),
]


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--callgrind", required=True)
    ap.add_argument("--ref", default="poolmalloc")
    ap.add_argument("--allocs", required=True, help="space-separated, in column order")
    ap.add_argument("--md", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--meta", action="append", default=[], help="key=value")
    return ap.parse_args()


def load_runs(path):
    """{(bench, alloc): {'wall': [..], 'rss': [..], 'metrics': {k: [..]}, 'fail': bool}}, order"""
    runs = {}
    order = []
    with open(path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = (row["benchmark"], row["allocator"])
            if row["benchmark"] == "callgrind":  # only its pass/fail is recorded here
                runs.setdefault(key, {"wall": [], "rss": [], "metrics": defaultdict(list), "fail": False})
                runs[key]["fail"] |= row["status"] != "0"
                continue
            if row["benchmark"] not in order:
                order.append(row["benchmark"])
            r = runs.setdefault(key, {"wall": [], "rss": [], "metrics": defaultdict(list), "fail": False})
            if row["status"] != "0":
                r["fail"] = True
                continue
            r["wall"].append(float(row["wall_s"]))
            r["rss"].append(int(row["maxrss_kb"]))
            if row["metrics"] not in ("", "-"):
                for kv in row["metrics"].split(","):
                    k, v = kv.split("=", 1)
                    r["metrics"][k].append(float(v))
    return runs, order


def load_cg(path):
    cg = {}
    order = []
    with open(path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            k = (row["pattern"], int(row["size"]))
            if k not in order:
                order.append(k)
            cg[(k, row["allocator"])] = float(row["instructions"])
    return cg, order


def med(xs):
    return statistics.median(xs) if xs else None


def value(runs, bench, alloc, what):
    r = runs.get((bench, alloc))
    if r is None or r["fail"]:
        return None
    if what in ("wall", "rss"):
        return med(r[what])
    return med(r["metrics"].get(what, []))


def fmt_cell(v, ref, unit_fmt, is_ref, failed):
    if failed:
        return "FAIL"
    if v is None:
        return "-"
    s = unit_fmt(v)
    if is_ref or ref is None or ref == 0:
        return s
    return "%s (%.2f)" % (s, v / ref)


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def build_tables(runs, order, cg, cg_order, allocs, ref):
    """Returns a list of (title, header, rows) and the list of 'behind' findings."""
    tables = []
    behind = []
    peers = [a for a in allocs if a != ref]
    specs = [
        ("Wall time, median seconds", "wall", lambda v: "%.3f" % v, "time"),
        ("Peak RSS, median MiB", "rss", lambda v: "%.1f" % (v / 1024), "peak RSS"),
    ]
    for title, what, f, label in specs:
        rows = []
        ratios = defaultdict(list)
        for b in order:
            refv = value(runs, b, ref, what)
            row = [b]
            for a in allocs:
                r = runs.get((b, a))
                v = value(runs, b, a, what)
                row.append(fmt_cell(v, refv, f, a == ref, r is not None and r["fail"]))
                if a != ref and v and refv:
                    ratios[a].append(v / refv)
                    if v / refv < 0.90:
                        behind.append((v / refv, b, label, a, refv / v))
            rows.append(row)
        if what == "wall":
            for row, b in zip(rows, order):
                spreads = [(max(r["wall"]) - min(r["wall"])) / med(r["wall"])
                           for r in (runs.get((b, a)) for a in allocs)
                           if r and not r["fail"] and len(r["wall"]) > 1 and med(r["wall"])]
                row.append("%.0f%%" % (100 * max(spreads)) if spreads else "-")
        if len(order) > 1:
            rows.append(["geometric mean of ratios"] + [
                "" if a == ref else ("-" if geomean(ratios[a]) is None else "%.2f" % geomean(ratios[a]))
                for a in allocs] + ([""] if what == "wall" else []))
        tables.append((title, ["benchmark"] + allocs + (["spread"] if what == "wall" else []), rows, what))
    # extra metrics (frag)
    metric_names = []
    for (b, a), r in runs.items():
        for k in r["metrics"]:
            if k not in metric_names:
                metric_names.append(k)
    # per-size timings of the pairs benchmarks: one table, a row per size
    pair_sizes = sorted({int(m[len("pair_ns_"):]) for m in metric_names if m.startswith("pair_ns_")})
    if pair_sizes:
        rows = []
        for size in pair_sizes:
            m = "pair_ns_%d" % size
            b = next((b for b in order if any(m in runs.get((b, a), {"metrics": {}})["metrics"] for a in allocs)), None)
            if b is None:
                continue
            refv = value(runs, b, ref, m)
            row = ["%s %d" % (b, size)]
            for a in allocs:
                r = runs.get((b, a))
                row.append(fmt_cell(value(runs, b, a, m), refv, lambda x: "%.1f" % x, a == ref,
                                    r is not None and r["fail"]))
            rows.append(row)
        tables.append(("Nanoseconds per malloc+free pair, by size (medians)", ["benchmark size"] + allocs, rows,
                       "pair_ns"))
    metric_names = [m for m in metric_names if not m.startswith("pair_ns_")]
    for m in metric_names:
        rows = []
        for b in order:
            if not any(m in runs.get((b, a), {"metrics": {}})["metrics"] for a in allocs):
                continue
            refv = value(runs, b, ref, m)
            row = [b]
            for a in allocs:
                r = runs.get((b, a))
                v = value(runs, b, a, m)
                row.append(fmt_cell(v, refv, lambda x: "%.1f" % (x / 1024), a == ref, r is not None and r["fail"]))
                if m == "rss_after_free_kb" and a != ref and v and refv and v / refv < 0.90:
                    behind.append((v / refv, b, "RSS after free", a, refv / v))
            rows.append(row)
        if rows:
            tables.append(("%s, median MiB" % m.replace("_kb", ""), ["benchmark"] + allocs, rows, m))
    if cg_order:
        rows = []
        for k in cg_order:
            refv = cg.get((k, ref))
            row = ["%s %d" % k]
            for a in allocs:
                v = cg.get((k, a))
                row.append(fmt_cell(v, refv, lambda x: "%.0f" % x, a == ref, False))
                if a != ref and v and refv and v / refv < 0.90:
                    behind.append((v / refv, "%s %d" % k, "instructions", a, refv / v))
            rows.append(row)
        tables.append(("Instructions per malloc+free (callgrind)", ["pattern size"] + allocs, rows, "cg"))
    behind.sort()
    return tables, behind


def text_table(title, header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    out = [title]
    out.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for r in rows:
        out.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def chart(path, runs, order, cg, cg_order, allocs, ref):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except Exception as e:  # noqa: BLE001
        print("report.py: no matplotlib (%s): no chart" % e, file=sys.stderr)
        return False
    peers = [a for a in allocs if a != ref]
    panels = [("wall time", "wall", order), ("peak RSS", "rss", order)]
    if cg_order:
        panels.append(("instructions per malloc+free", "cg", cg_order))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(10, 0.55 * len(order) + 3), 4.2 * len(panels)))
    if len(panels) == 1:
        axes = [axes]
    colors = {"glibc": "#888888", "jemalloc": "#d62728", "tcmalloc": "#2ca02c", "mimalloc": "#1f77b4",
              "poolmalloc": "#9467bd"}
    for ax, (title, what, keys) in zip(axes, panels):
        width = 0.8 / max(1, len(peers))
        labels = [("%s %d" % k) if what == "cg" else k for k in keys]
        for i, a in enumerate(peers):
            ys = []
            for k in keys:
                if what == "cg":
                    v, rv = cg.get((k, a)), cg.get((k, ref))
                else:
                    v, rv = value(runs, k, a, what), value(runs, k, ref, what)
                ys.append(v / rv if v and rv else float("nan"))
            xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(keys))]
            ax.bar(xs, ys, width, label=a, color=colors.get(a))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        fmt = matplotlib.ticker.FuncFormatter(lambda v, _: "%g" % v)
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: "%g" % v if v > 0 and round(v / 10 ** math.floor(math.log10(v)), 3) in (2, 5) else ""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("peer / %s" % ref)
        ax.set_title("%s: peer / %s (above 1: %s is better)" % (title, ref, ref), fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8, ncol=len(peers))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    return True


def main():
    args = parse_args()
    allocs = args.allocs.split()
    ref = args.ref
    meta = dict(m.split("=", 1) for m in args.meta)
    runs, order = load_runs(args.results)
    cg, cg_order = load_cg(args.callgrind)
    tables, behind = build_tables(runs, order, cg, cg_order, allocs, ref)

    ratio_note = ("In parentheses: the peer's figure divided by %s's; above 1.00 means %s is faster / "
                  "smaller / uses fewer instructions." % (ref, ref))
    print()
    print("Medians of %s round(s); %s" % (meta.get("rounds", "?"), ratio_note))
    for title, header, rows, _ in tables:
        print()
        print(text_table(title, header, rows))
    print()

    have_png = chart(args.png, runs, order, cg, cg_order, allocs, ref)

    why = WHY_DEFAULT
    tail = ""
    if os.path.exists(args.md):
        old = open(args.md).read()
        m = re.search(re.escape(WHY_BEGIN) + r"\n(.*?)" + re.escape(WHY_END) + r"\n?", old, re.S)
        if m:
            why = m.group(1)
            # everything after the WHY block belongs to other scripts (e.g. compare-python.sh): kept
            tail = old[m.end():]
    md_dir = os.path.dirname(os.path.abspath(args.md))
    png_rel = os.path.relpath(os.path.abspath(args.png), md_dir)

    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("Generated by `scripts/bench.sh` (tables and chart by `scripts/bench/report.py`); do not edit "
             "by hand except the section between the WHY markers, which is kept across runs, as is everything "
             "after it (sections written by other scripts, e.g. the CPython one of `scripts/compare-python.sh`).")
    L.append("Every benchmark is run under each allocator by `LD_PRELOAD` (glibc: none), interleaved "
             "(glibc, jemalloc, tcmalloc, mimalloc, poolmalloc, then again), and checks its own results.")
    L.append("")
    L.append("How to run: `scripts/bench.sh` (full: every benchmark, 5 rounds, callgrind; about 4 "
             "minutes on 2 idle cores, more under load; rewrites this file), `scripts/bench.sh --quick` (smoke run, under 3 "
             "minutes, fails on any crash or wrong result), `--only larson-8,cxx-1`, `--rounds N`, "
             "`--callgrind`, `--peers-only`, `--no-build`; `scripts/bench.sh --help` for all.")
    L.append("")
    if meta.get("mode") == "quick" or meta.get("partial") == "yes":
        L.append("**These figures come from a quick or partial run: tiny sizes, few rounds. They show "
                 "that everything runs and checks out, not how fast it is.**")
        L.append("")
    L.append("## Machine and run")
    L.append("")
    for k, label in [("date", "date"), ("command", "command"), ("mode", "mode"), ("rounds", "rounds"),
                     ("nproc", "nproc"), ("cpu", "CPU"), ("kernel", "kernel"), ("glibc", "glibc"),
                     ("peers", "peers (Debian packages)"), ("poolmalloc", "poolmalloc commit")]:
        if k in meta:
            v = meta[k]
            L.append("- %s: %s" % (label, "`%s`" % v if k == "command" else v))
    L.append("")
    L.append("Wall time and peak RSS (`ru_maxrss`) are medians over the rounds, measured by "
             "`scripts/bench/runner.c` around the whole process. " + ratio_note)
    L.append("spread: the largest (max - min) / median of the rounds' wall times among the allocators, "
             "a rough measure of the noise on this shared machine.")
    L.append("The number at the end of a benchmark's name is its thread count (the machine has %s cores)."
             % meta.get("nproc", "?"))
    for title, header, rows, what in tables:
        L.append("")
        L.append("## " + title)
        L.append("")
        if what == "rss_after_free_kb":
            L.append("RSS of the frag benchmark after freeing 90% of its blocks (plus 100 ms and 1000 small "
                     "malloc/free pairs), read from /proc/self/statm.")
            L.append("")
        if what == "pair_ns":
            L.append("Timed inside the pairs benchmarks, size by size (each power of two and sizes just "
                     "below it), including the 8-byte pattern writes and checks.")
            L.append("")
        if what == "cg":
            L.append("pair: malloc then free at once; lifo / fifo: batches of 1000 mallocs, freed newest / "
                     "oldest first. Same method as /work/shared/PEERS.md (a few instructions of loop "
                     "overhead included).")
            L.append("")
        L.append(md_table(header, rows))
    L.append("")
    L.append("## Chart")
    L.append("")
    if have_png:
        L.append("![peer / %s ratios](%s)" % (ref, png_rel))
    else:
        L.append("_No chart: matplotlib was not available._")
    L.append("")
    L.append("## The benchmarks")
    L.append("")
    L.append("Sources in `scripts/bench/`; each file starts with the pattern it models and what it checks.")
    L.append("")
    for name, d in DESCRIPTIONS:
        L.append("- **%s**: %s" % (name, d))
    L.append("")
    failed = sorted({(b, a) for (b, a), r in runs.items() if r["fail"]})
    if failed:
        L.append("## Failures")
        L.append("")
        L.append("These runs crashed, timed out or found a wrong result (details in bench.sh's output):")
        L.append("")
        for b, a in failed:
            L.append("- %s under %s" % (b, a))
        L.append("")
    L.append("## Where %s is behind" % ref)
    L.append("")
    if not behind:
        L.append("Nowhere by more than 10%% in this run." if ref in allocs else "")
    else:
        L.append("Every case where a peer beats %s by more than 10%%, worst first: %s needs N times "
                 "what the peer needs (medians; see the spread column for the noise)." % (ref, ref))
        groups = {}
        for ratio, b, label, a, factor in behind:
            groups.setdefault((b, label), []).append((factor, a))
        for kind, labels in [("Time", ("time",)), ("Memory", ("peak RSS", "RSS after free")),
                             ("Instructions (callgrind)", ("instructions",))]:
            items_k = [(k, v) for k, v in groups.items() if k[1] in labels]
            if not items_k:
                continue
            L.append("")
            L.append("**%s**" % kind)
            L.append("")
            for (b, label), items in sorted(items_k, key=lambda kv: -max(kv[1])[0]):
                items.sort(reverse=True)
                L.append("- %s, %s: %s" % (b, label, ", ".join("%.2fx %s" % (f, a) for f, a in items)))
    L.append("")
    L.append("### Why (from a profile)")
    L.append("")
    L.append(WHY_BEGIN)
    L.append(why.rstrip("\n"))
    L.append(WHY_END)
    text = "\n".join(L) + "\n"
    if tail.strip():
        text += tail if tail.startswith("\n") else "\n" + tail
    with open(args.md, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
