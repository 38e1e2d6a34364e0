"""pyperf_report.py - turns the pyperformance results of scripts/compare-python.sh into the
numbers that answer "is CPython faster and smaller on poolmalloc than on pymalloc?": for each
allocator configuration, the geometric mean over benchmarks of its time and peak-RSS ratios
against CPython's default allocator (pymalloc), a per-benchmark table, a PNG chart, and the
"## CPython: pyperformance against pymalloc" section of BENCHMARKS.md.

Input layout (written by compare-python.sh): RESULTS/r<round>/<benchmark>/<config>.json, each a
pyperformance/pyperf JSON file of one benchmark run by one configuration.

Time of a (benchmark, config): the mean of all timed values of all its rounds.
Peak RSS of a (benchmark, config): per round the largest mem_max_rss among the benchmark's
worker processes (pyperf records each worker's ru_maxrss), then the median over rounds.
Each geometric mean against pymalloc comes with a 95% bootstrap interval over the rounds
(`interval`), and the verdict on the targets says on which side of 1.00 it lies.

usage: python pyperf_report.py --results DIR --configs a,b,... --mode TEXT
                               [--markdown BENCHMARKS.md] [--png FILE] [--summary FILE]
"""
import argparse
import glob
import json
import math
import os
import random
import re
import statistics
import sys

SECTION = "## CPython: pyperformance against pymalloc"
BEGIN = "<!-- CPYTHON-PYPERF:BEGIN (written by scripts/compare-python.sh; keep when regenerating) -->"
END = "<!-- CPYTHON-PYPERF:END -->"

DESCRIPTIONS = {
    "pymalloc": "CPython's default allocator (pymalloc for objects <= 512 B, glibc malloc above)",
    "glibc": "PYTHONMALLOC=malloc: every allocation goes to glibc malloc",
    "jemalloc": "PYTHONMALLOC=malloc + LD_PRELOAD=libjemalloc.so.2 (Debian libjemalloc2)",
    "mimalloc": "PYTHONMALLOC=malloc + LD_PRELOAD=libmimalloc.so.2 (Debian libmimalloc2.0)",
    "poolmalloc-malloc": "PYTHONMALLOC=malloc + LD_PRELOAD=libpoolmalloc.so",
    "poolmalloc": "LD_PRELOAD=libpoolmalloc.so, default PYTHONMALLOC: libpython's PyObject_* and "
    "PyMem_* calls interposed (objects and mem-domain blocks on poolmalloc, pymalloc unused)",
}


def load(path):
    with open(path) as f:
        d = json.load(f)
    values, rss = [], []
    for b in d.get("benchmarks", []):
        for run in b.get("runs", []):
            values.extend(run.get("values", []))
            m = run.get("metadata", {}).get("mem_max_rss")
            if m:
                rss.append(m)
    return values, rss


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    if not xs:
        return float("nan")
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def collect(results, configs):
    # data[bench][config] = {"values": [...], "rss": [per-round peak]}
    data = {}
    for path in sorted(glob.glob(os.path.join(results, "r*", "*", "*.json"))):
        rnd = os.path.basename(os.path.dirname(os.path.dirname(path)))
        bench = os.path.basename(os.path.dirname(path))
        config = os.path.basename(path)[: -len(".json")]
        if config not in configs:
            continue
        try:
            values, rss = load(path)
        except (OSError, ValueError) as e:
            print("pyperf_report: skipping %s: %s" % (path, e), file=sys.stderr)
            continue
        if not values:
            continue
        e = data.setdefault(bench, {}).setdefault(
            config, {"values": [], "rss": [], "rounds": set(), "by_round": {}})
        e["values"].extend(values)
        if rss:
            e["rss"].append(max(rss))
        e["rounds"].add(rnd)
        e["by_round"][rnd] = (statistics.mean(values), max(rss) if rss else None)
    return data


def interval(data, benches, config, base="pymalloc", draws=2000, seed=1):
    """95% bootstrap interval of the geometric means of config's time and peak-RSS ratios.

    Rounds are resampled with replacement, per benchmark, and the two configurations' results
    of a round stay together: interleaving makes them share the round's drift, and that pairing
    is what lets a few rounds resolve a small difference. With few rounds the interval is
    narrower than the truth (three rounds give a benchmark only ten distinct resamples): one
    that straddles 1.00 means the runs cannot tell the two apart, one that does not is a strong
    hint, not a proof. None with fewer than two rounds. The seed is fixed: the same results
    give the same interval.
    """
    rng = random.Random(seed)
    paired = []
    for b in benches:
        if config not in data[b]:
            continue
        rb, rc = data[b][base]["by_round"], data[b][config]["by_round"]
        rounds = sorted(set(rb) & set(rc))
        if rounds:
            paired.append([(rc[r][0], rb[r][0], rc[r][1], rb[r][1]) for r in rounds])
    if not paired or min(len(rows) for rows in paired) < 2:
        return None
    times, rsss = [], []
    for _ in range(draws):
        lt = lr = 0.0
        nr = 0
        for rows in paired:
            pick = [rows[rng.randrange(len(rows))] for _ in rows]
            lt += math.log(statistics.mean(p[0] for p in pick) / statistics.mean(p[1] for p in pick))
            rc = [p[2] for p in pick if p[2] and p[3]]
            rb = [p[3] for p in pick if p[2] and p[3]]
            if rc:
                lr += math.log(statistics.median(rc) / statistics.median(rb))
                nr += 1
        times.append(math.exp(lt / len(paired)))
        if nr == len(paired):
            rsss.append(math.exp(lr / nr))

    def cut(xs):
        if not xs:
            return None
        xs.sort()
        return (xs[int(0.025 * (len(xs) - 1))], xs[int(0.975 * (len(xs) - 1))])

    return {"time": cut(times), "rss": cut(rsss),
            "rounds": min(len(rows) for rows in paired)}


def summarise(data, configs, base="pymalloc"):
    benches = sorted(b for b in data if base in data[b])
    rows = {}
    for b in benches:
        rows[b] = {}
        bt = statistics.mean(data[b][base]["values"])
        br = statistics.median(data[b][base]["rss"]) if data[b][base]["rss"] else None
        for c in configs:
            if c not in data[b]:
                continue
            t = statistics.mean(data[b][c]["values"])
            r = statistics.median(data[b][c]["rss"]) if data[b][c]["rss"] else None
            rows[b][c] = {
                "time": t,
                "time_ratio": t / bt,
                "rss": r,
                "rss_ratio": (r / br) if (r and br) else None,
                "rounds": len(data[b][c]["rounds"]),
            }
    geo = {}
    for c in configs:
        tr = [rows[b][c]["time_ratio"] for b in benches if c in rows[b]]
        rr = [rows[b][c]["rss_ratio"] for b in benches if c in rows[b] and rows[b][c]["rss_ratio"]]
        deltas = [rows[b][c]["rss"] - rows[b][base]["rss"] for b in benches
                  if c in rows[b] and rows[b][c]["rss"] and rows[b][base]["rss"]]
        if tr:
            geo[c] = {
                "rss_delta_mib": statistics.median(deltas) / 2**20 if deltas else float("nan"),
                "time": geomean(tr),
                "rss": geomean(rr) if rr else float("nan"),
                "benchmarks": len(tr),
                "time_min": min(tr),
                "time_max": max(tr),
            }
            if c != base:
                geo[c]["interval"] = interval(data, benches, c, base)
    return benches, rows, geo


def bracket(g, key):
    """" [lo-hi]" for a geomean's interval, or nothing without one."""
    iv = (g.get("interval") or {}).get(key)
    return " [%.3f-%.3f]" % tuple(iv) if iv else ""


def resolution(g, key):
    """Whether the runs tell the configuration from pymalloc: the interval's side of 1.00."""
    iv = (g.get("interval") or {}).get(key)
    if not iv:
        return "no interval with one round"
    if iv[1] < 1.0:
        return "below pymalloc's beyond the runs' noise, 95%% interval %.3f-%.3f" % tuple(iv)
    if iv[0] > 1.0:
        return "above pymalloc's beyond the runs' noise, 95%% interval %.3f-%.3f" % tuple(iv)
    return "not told apart from pymalloc's by these runs, 95%% interval %.3f-%.3f" % tuple(iv)


def fmt_time(s):
    if s >= 1:
        return "%.2f s" % s
    if s >= 1e-3:
        return "%.1f ms" % (s * 1e3)
    return "%.1f us" % (s * 1e6)


def markdown(benches, rows, geo, configs, mode, meta):
    L = [SECTION, "", BEGIN, ""]
    L.append(
        "Each configuration runs CPython %s (`%s`) on pyperformance %s; ratios are against the "
        "default allocator (pymalloc), below 1.00 is better. Time: mean of all timed values; "
        "peak RSS: the largest worker `mem_max_rss` per round, median over rounds. Geometric "
        "means over the benchmarks. Configurations run interleaved, benchmark by benchmark, "
        "round by round, with `--inherit-environ LD_PRELOAD,PYTHONMALLOC` so that the "
        "benchmark workers really run the allocator. In brackets, the 95%% interval of each "
        "geometric mean: a bootstrap that resamples the rounds of each benchmark, keeping a "
        "round's two configurations together (with three rounds it is narrower than the truth)."
        % (meta.get("python_version", "?"), meta.get("python", "?"), meta.get("pyperformance", "?"))
    )
    L.append("")
    L.append("**Mode of this run:** %s. Produced %s by `scripts/compare-python.sh %s`."
             % (mode, meta.get("date", "?"), meta.get("args", "")))
    L.append("")
    L.append("| configuration | time vs pymalloc (geomean) [95% interval] | fastest / slowest benchmark | peak RSS vs pymalloc (geomean) [95% interval] | peak RSS minus pymalloc's (median) |")
    L.append("| --- | ---: | ---: | ---: | ---: |")
    for c in configs:
        if c not in geo:
            continue
        g = geo[c]
        L.append("| %s | %.3f%s | %.2f / %.2f | %.3f%s | %+.1f MiB |" % (
            c, g["time"], bracket(g, "time"), g["time_min"], g["time_max"], g["rss"],
            bracket(g, "rss"), g["rss_delta_mib"]))
    L.append("")
    L.append("Configurations:")
    L.append("")
    for c in configs:
        if c in geo:
            L.append("- **%s**: %s" % (c, DESCRIPTIONS.get(c, c)))
    L.append("")
    L.append("Per benchmark, time ratio (peak RSS ratio) against pymalloc; pymalloc's own time and peak RSS:")
    L.append("")
    others = [c for c in configs if c != "pymalloc" and c in geo]
    L.append("| benchmark | pymalloc | " + " | ".join(others) + " |")
    L.append("| --- | ---: | " + " | ".join("---:" for _ in others) + " |")
    for b in benches:
        base = rows[b]["pymalloc"]
        cells = []
        for c in others:
            r = rows[b].get(c)
            if not r:
                cells.append("-")
            elif r["rss_ratio"]:
                cells.append("%.2f (%.2f)" % (r["time_ratio"], r["rss_ratio"]))
            else:
                cells.append("%.2f" % r["time_ratio"])
        L.append("| %s | %s, %.1f MiB | %s |" % (b, fmt_time(base["time"]), (base["rss"] or 0) / 2**20, " | ".join(cells)))
    L.append("")
    if meta.get("png"):
        L.append("![pyperformance: time and peak RSS against pymalloc](%s)" % meta["png"])
        L.append("")
    if "poolmalloc" in geo:
        g = geo["poolmalloc"]
        t_ok = g["time"] <= 1.0
        r_ok = g["rss"] <= 1.0
        L.append(
            "**Where poolmalloc stands (interposed PyObject_*/PyMem_*, default PYTHONMALLOC):** time geomean "
            "%.3f (target <= 1.00: %s; %s), peak RSS geomean %.3f (target <= 1.00: %s; %s)."
            % (g["time"], "met" if t_ok else "not met", resolution(g, "time"),
               g["rss"], "met" if r_ok else "not met", resolution(g, "rss"))
        )
        deltas = [(rows[b]["poolmalloc"]["rss"] - rows[b]["pymalloc"]["rss"]) / 2**20 for b in benches
                  if "poolmalloc" in rows[b] and rows[b]["poolmalloc"]["rss"] and rows[b]["pymalloc"]["rss"]]
        if deltas:
            L.append(
                "Its peak RSS minus pymalloc's is %+.2f to %+.2f MiB across the benchmarks (median %+.2f MiB), "
                "on peaks of %.0f to %.0f MiB%s." % (
                    min(deltas), max(deltas), statistics.median(deltas),
                    min(rows[b]["pymalloc"]["rss"] for b in benches) / 2**20,
                    max(rows[b]["pymalloc"]["rss"] for b in benches) / 2**20,
                    ": nearly the same amount everywhere, so a fixed cost (start-up), not one that "
                    "grows with the heap" if max(deltas) - min(deltas) <= 1.0 else ""))
        slow = sorted((rows[b]["poolmalloc"]["time_ratio"], b) for b in benches if "poolmalloc" in rows[b])
        if slow:
            L.append("Slowest against pymalloc: %s; fastest: %s." % (
                ", ".join("%s %.2f" % (b, r) for r, b in reversed(slow[-3:])),
                ", ".join("%s %.2f" % (b, r) for r, b in slow[:3])))
        if "poolmalloc-malloc" in geo:
            L.append(
                "With PYTHONMALLOC=malloc (every allocation through malloc) it is %.3f in time and "
                "%.3f in peak RSS." % (geo["poolmalloc-malloc"]["time"], geo["poolmalloc-malloc"]["rss"])
            )
        L.append("")
    for note in meta.get("notes", []):
        L.append(note)
        L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def write_section(path, text):
    old = open(path).read() if os.path.exists(path) else ""
    pat = re.compile(r"^" + re.escape(SECTION) + r"\n.*?" + re.escape(END) + r"\n?", re.S | re.M)
    if pat.search(old):
        new = pat.sub(lambda m: text, old, count=1)
    elif SECTION in old:
        # A section without markers: replace up to the next "## " heading or the end.
        i = old.index(SECTION)
        j = old.find("\n## ", i + len(SECTION))
        new = old[:i] + text + (old[j + 1:] if j >= 0 else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text if old else text
    with open(path, "w") as f:
        f.write(new)


def chart(benches, rows, geo, configs, png):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [c for c in configs if c != "pymalloc" and c in geo]
    labels = benches + ["geomean"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(labels) + 2), 8), sharex=True)
    width = 0.8 / max(1, len(others))
    for k, (key, geo_key, title) in enumerate(
        [("time_ratio", "time", "time vs pymalloc (lower is better)"),
         ("rss_ratio", "rss", "peak RSS vs pymalloc (lower is better)")]):
        ax = axes[k]
        for i, c in enumerate(others):
            ys = [(rows[b].get(c) or {}).get(key) or float("nan") for b in benches] + [geo[c][geo_key]]
            xs = [j + (i - (len(others) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, ys, width, label=c)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_title(title)
        ax.set_ylabel("ratio")
        lo = min([0.8] + [v for c in others for v in
                          [(rows[b].get(c) or {}).get(key) or 1 for b in benches]])
        ax.set_ylim(max(0, lo - 0.05), None)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(5, len(others)), fontsize=8)
    axes[1].set_xticks(range(len(labels)))
    axes[1].set_xticklabels(labels, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(png, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--meta", help="JSON file with python, python_version, pyperformance, date, args, notes")
    ap.add_argument("--markdown")
    ap.add_argument("--png")
    ap.add_argument("--png-link", help="path of the PNG as written in the markdown")
    ap.add_argument("--summary")
    a = ap.parse_args()
    configs = a.configs.split(",")
    meta = json.load(open(a.meta)) if a.meta else {}
    data = collect(a.results, configs)
    benches, rows, geo = summarise(data, configs)
    if not benches:
        print("pyperf_report: no complete results in %s" % a.results, file=sys.stderr)
        return 1
    print("%-20s %10s %10s %6s" % ("config", "time", "peak RSS", "benchmarks"))
    for c in configs:
        if c in geo:
            print("%-20s %10.3f %10.3f %6d" % (c, geo[c]["time"], geo[c]["rss"], geo[c]["benchmarks"]))
    if a.png:
        try:
            chart(benches, rows, geo, configs, a.png)
            meta["png"] = a.png_link or a.png
        except Exception as e:  # a chart is a nice-to-have; the numbers are the result
            print("pyperf_report: no chart: %s" % e, file=sys.stderr)
    text = markdown(benches, rows, geo, configs, a.mode, meta)
    if a.markdown:
        write_section(a.markdown, text)
    else:
        sys.stdout.write(text)
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump({"mode": a.mode, "meta": meta, "geomean": geo, "rows": rows}, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
