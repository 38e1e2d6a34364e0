#!/usr/bin/env python3
"""Checks of the POOLMALLOC_STATS report, driven by scripts/stats-tests.sh.

usage: check_stats.py LIB DIRECT_BIN PRELOAD_BIN WORKDIR

Runs c-tests/stats/workload (built twice by the shell script: linked directly against LIB, and
plain for LD_PRELOAD=LIB) under every accepted and one unknown POOLMALLOC_STATS value, with and
without POOLMALLOC_STATS_FILE, and checks the reports.  Expected figures come from the workload
itself (`workload counts`) on top of a baseline measured the same way (`workload skeleton`: the
same threads and joins without the counted calls), never from hard-coded numbers.

Prints "ok   name" or "FAIL name: why" per check and finally "N passed, M failed".
Exit status: 0 if everything passed, 1 otherwise.
"""
import json
import os
import re
import subprocess
import sys
import time

TIMEOUT = int(os.environ.get("STATS_TIMEOUT", "60"))
LIB, DIRECT, PRELOAD, WORK = sys.argv[1:5]

passed = 0
failed = 0


def report(ok, name, why=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name}: {why}", flush=True)
    return ok


def show(b, n=600):
    s = b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
    return repr(s if len(s) <= n else s[:n] + "...")


class Run:
    def __init__(self, rc, out, err, secs):
        self.rc, self.out, self.err, self.secs = rc, out, err, secs


def run(link, args, stats=None, stats_file=None, cwd=None, argv=None):
    """Runs the workload (or argv) under `timeout`; link is "direct" or "preload"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLMALLOC_") and k != "LD_PRELOAD"}
    if stats is not None:
        env["POOLMALLOC_STATS"] = stats
    if stats_file is not None:
        env["POOLMALLOC_STATS_FILE"] = stats_file
    if argv is None:
        argv = [DIRECT if link == "direct" else PRELOAD] + list(args)
    if link == "preload":
        # Not in timeout's own environment: timeout would load the library and report too.
        # env execs the program in place (same pid, no exit handlers of its own).
        argv = ["env", f"LD_PRELOAD={LIB}"] + argv
    t0 = time.monotonic()
    p = subprocess.run(
        ["timeout", "-k", "5", str(TIMEOUT)] + argv,
        env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    return Run(p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def exited_ok(r):
    if r.rc == 124 or r.rc == 137:
        return f"timed out after {TIMEOUT}s; stderr {show(r.err)}"
    if r.rc != 0:
        return f"exit status {r.rc}; stderr {show(r.err)}"
    return None


def parse_json(b):
    """The report as a dict, or an error string."""
    s = b.decode("utf-8", "replace")
    if s.count("\n") != 1 or not s.endswith("\n"):
        return f"not exactly one line: {show(s)}"
    try:
        d = json.loads(s)
    except ValueError as e:
        return f"invalid JSON ({e}): {show(s)}"
    if not isinstance(d, dict):
        return f"not an object: {show(s)}"
    return d


SCHEMA = {
    "arenas": ["size", "allocated_total", "reclaimed", "highwater", "current"],
    "bytes": ["allocated_blocks", "available_blocks", "unused_pools", "pool_headers", "quantization",
              "arena_alignment", "total", "arenas_mapped", "resident_pools"],
    "large": ["live", "bytes", "peak_bytes", "mremaps"],
    "calls": ["malloc", "calloc", "realloc", "free", "aligned", "pyobject", "pymem", "remote_free", "pyobject_forwarded"],
    "threads": ["seen", "pools_abandoned", "pools_adopted", "pools_waiting"],
    "memory": ["peak_in_use", "mapped", "peak_mapped", "metadata", "metadata_resident", "dirty", "returned", "rss",
               "peak_rss"],
}


def is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def schema_problems(d):
    bad = []
    for k in ("small_block_threshold", "small_classes"):
        if not is_count(d.get(k)):
            bad.append(k)
    for sec, keys in SCHEMA.items():
        o = d.get(sec)
        if not isinstance(o, dict):
            bad.append(sec)
            continue
        bad += [f"{sec}.{k}" for k in keys if not is_count(o.get(k))]
    cl = d.get("classes")
    if not isinstance(cl, list):
        bad.append("classes")
    else:
        for row in cl:
            if not isinstance(row, dict) or not all(
                    is_count(row.get(k)) for k in ("class", "size", "pools", "blocks_in_use", "avail_blocks",
                                       "resident_bytes")):
                bad.append(f"classes row {row!r}")
    return bad


def balance_problems(d):
    """CPython's balance and the arena identities; a list of violated equalities."""
    a, b = d["arenas"], d["bytes"]
    bad = []
    parts = (b["allocated_blocks"] + b["available_blocks"] + b["unused_pools"] + b["pool_headers"]
             + b["quantization"] + b["arena_alignment"])
    if b["total"] != a["current"] * a["size"]:
        bad.append(f"bytes.total {b['total']} != arenas.current*size {a['current']}*{a['size']}")
    if b["total"] != b["arenas_mapped"]:
        bad.append(f"bytes.total {b['total']} != bytes.arenas_mapped {b['arenas_mapped']}")
    if b["total"] != parts:
        bad.append(f"bytes.total {b['total']} != allocated+available+unused+headers+quantization+alignment {parts}")
    in_use = sum(r["blocks_in_use"] * r["size"] for r in d["classes"])
    avail = sum(r["avail_blocks"] * r["size"] for r in d["classes"])
    if in_use != b["allocated_blocks"]:
        bad.append(f"sum of class rows blocks_in_use*size {in_use} != bytes.allocated_blocks {b['allocated_blocks']}")
    if avail != b["available_blocks"]:
        bad.append(f"sum of class rows avail_blocks*size {avail} != bytes.available_blocks {b['available_blocks']}")
    resident = sum(r["resident_bytes"] for r in d["classes"])
    if resident != b["resident_pools"]:
        bad.append(f"sum of class rows resident_bytes {resident} != bytes.resident_pools {b['resident_pools']}")
    if not b["resident_pools"] <= b["total"] - b["unused_pools"]:
        bad.append(f"bytes.resident_pools {b['resident_pools']} > the pools in use, {b['total'] - b['unused_pools']}")
    if a["allocated_total"] - a["reclaimed"] != a["current"]:
        bad.append(f"arenas allocated_total {a['allocated_total']} - reclaimed {a['reclaimed']} != current {a['current']}")
    if not a["current"] <= a["highwater"] <= a["allocated_total"]:
        bad.append(f"arenas: not current {a['current']} <= highwater {a['highwater']} <= allocated_total {a['allocated_total']}")
    for r in d["classes"]:
        if r["class"] < d["small_classes"] and r["size"] != (r["class"] + 1) * 16:
            bad.append(f"class {r['class']} has size {r['size']}, CPython's is {(r['class'] + 1) * 16}")
        if r["pools"] < 1:
            bad.append(f"class row {r} listed without pools")
    return bad


def peak_problems(d):
    m, lg = d["memory"], d["large"]
    bad = []
    if m["peak_mapped"] < m["mapped"]:
        bad.append(f"memory.peak_mapped {m['peak_mapped']} < mapped {m['mapped']}")
    cached = lg.get("cached", 0)  # freed large mappings kept for reuse (newer reports)
    if m["mapped"] != d["bytes"]["arenas_mapped"] + lg["bytes"] + cached:
        bad.append(f"memory.mapped {m['mapped']} != arenas {d['bytes']['arenas_mapped']} + large {lg['bytes']}"
                   f" + large cached {cached}")
    if lg["peak_bytes"] < lg["bytes"]:
        bad.append(f"large.peak_bytes {lg['peak_bytes']} < bytes {lg['bytes']}")
    if m["peak_in_use"] < lg["bytes"]:
        bad.append(f"memory.peak_in_use {m['peak_in_use']} < large.bytes {lg['bytes']}")
    return bad


PAGE = 4096


def kept_pages(counts):
    """The fewest pages the blocks the workload keeps (and writes to) can lie on."""
    size = (counts["small_size"] + 15) // 16 * 16
    starts_per_page = -(-PAGE // size)
    return -(-counts["keep"] // starts_per_page)


def row(d, size):
    for r in d["classes"]:
        if r["size"] == size:
            return r
    return None


# ----------------------------------------------------------------------------- text report

CPYTHON_LINES = [  # in CPython's order
    r"Small block threshold = 512, in 32 size classes\.",
    r"class\s+size\s+num pools\s+blocks in use\s+avail blocks",
    r"# arenas allocated total\s+=",
    r"# arenas reclaimed\s+=",
    r"# arenas highwater mark\s+=",
    r"# arenas allocated current\s+=",
    r"\d+ arenas \* \d+ bytes/arena\s+=",
    r"# bytes in allocated blocks\s+=",
    r"# bytes in available blocks\s+=",
    r"\d+ unused pools\s+=",
    r"# bytes lost to pool headers\s+=",
    r"# bytes lost to quantization\s+=",
    r"# bytes lost to arena alignment\s+=",
    r"Total\s+=",
]

VALUE = re.compile(r"^(?P<label>\S.*?)\s+=\s+(?P<num>[\d,]+)(?:\s+\((?P<human>[^)]*)\))?\s*$")


def human(n):
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            t = n * 10 // div
            return f"{t // 10}.{t % 10} {unit}"
    return f"{n} B"


def parse_text(s):
    """label -> int for every `label = number` line, in order; plus the class rows."""
    values, order, rows = {}, [], {}
    for line in s.splitlines():
        m = VALUE.match(line)
        if m:
            values[m["label"]] = int(m["num"].replace(",", ""))
            order.append((m["label"], m["num"], m["human"]))
            continue
        m = re.match(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line)
        if m:
            c, size, pools, used, avail, resident_kib = map(int, m.groups())
            rows[size] = (c, pools, used, avail, resident_kib)
    return values, order, rows


def check_text(tag, r, counts, base, arena_size, json_calls):
    s = r.err.decode("utf-8", "replace")
    why = exited_ok(r)
    if not report(why is None, f"{tag}: exits 0", why or ""):
        return
    lines = s.splitlines()
    pos, missing = 0, []
    for pat in CPYTHON_LINES:
        for i in range(pos, len(lines)):
            if re.match("^" + pat, lines[i]):
                pos = i + 1
                break
        else:
            missing.append(pat)
    report(not missing, f"{tag}: CPython's lines present, in CPython's order",
           f"missing or out of order: {missing}; stderr {show(s, 3000)}")
    values, order, rows = parse_text(s)
    m = re.search(r"^(\d+) arenas \* (\d+) bytes/arena\s+=\s+([\d,]+)", s, re.M)
    if not report(m is not None and "Total" in values, f"{tag}: has 'N arenas * S bytes/arena' and 'Total'",
                  show(s, 3000)):
        return
    n, size, product = int(m[1]), int(m[2]), int(m[3].replace(",", ""))
    report(values["Total"] == product == n * size and size == arena_size and n == values.get("# arenas allocated current"),
           f"{tag}: Total == 'N arenas * S bytes/arena' line == N*S, S == JSON arenas.size, N == arenas current",
           f"Total {values['Total']}, line {n} * {size} = {product}, JSON arena size {arena_size}, "
           f"current {values.get('# arenas allocated current')}")
    unused = [v for k, v in values.items() if k.endswith(" unused pools")]
    parts = [values.get(k) for k in ("# bytes in allocated blocks", "# bytes in available blocks",
                                     "# bytes lost to pool headers", "# bytes lost to quantization",
                                     "# bytes lost to arena alignment")]
    ok = len(unused) == 1 and None not in parts and sum(parts) + unused[0] == values["Total"]
    report(ok, f"{tag}: allocated + available + unused pools + headers + quantization + alignment == Total",
           f"parts {parts}, unused {unused}, Total {values['Total']}")
    r112 = rows.get((counts["small_size"] + 15) // 16 * 16)
    report(r112 is not None and r112[1] >= 1 and r112[2] >= counts["keep"],
           f"{tag}: class row of size 112 with pools >= 1 and >= {counts['keep']} blocks in use",
           f"row {r112}; rows {rows}")
    resident = values.get("# bytes of pools resident")
    min_kib = kept_pages(counts) * PAGE // 1024
    report(r112 is not None and r112[4] >= min_kib and resident is not None
           and resident >= sum(r[4] for r in rows.values()) * 1024,
           f"{tag}: class row of size 112 has >= {min_kib} KiB resident; '# bytes of pools resident' "
           f">= the class rows' sum", f"row {r112}; resident {resident}")
    # Beyond CPython: every section, and the calls equal those of the JSON run (deterministic).
    labels = {
        "malloc": "# malloc", "calloc": "# calloc", "realloc": "# realloc (and reallocarray)",
        "free": "# free (and cfree)", "aligned": "# aligned (posix_memalign, memalign...)",
        "pyobject": "# PyObject_Malloc/Calloc/Realloc/Free", "pymem": "# PyMem_Malloc/Calloc/Realloc/Free",
        "remote_free": "# frees from another thread",
    }
    diff = {k: (values.get(lab), json_calls.get(k)) for k, lab in labels.items() if values.get(lab) != json_calls.get(k)}
    report(not diff, f"{tag}: calls section equals the JSON run's calls", f"text vs json: {diff}")
    need = ["# large blocks live", "# bytes in large blocks", "# peak bytes in large blocks",
            "# large blocks resized with mremap", "# threads seen", "# pools abandoned by exiting threads",
            "# pools adopted by other threads", "# pools waiting for adoption", "#   of which resident",
            "# resident set size now",
            "# peak resident set size"]
    absent = [k for k in need if k not in values]
    report(not absent, f"{tag}: large, threads and memory lines present", f"absent {absent}")
    ok = (values.get("# large blocks live") == base["large"]["live"] + counts["large_live"]
          and values.get("# bytes in large blocks") == base["large"]["bytes"] + counts["large_live_bytes"]
          and (values.get("# large blocks resized with mremap") or 0) >= 1
          and (values.get("# threads seen") or 0) >= 3)
    report(ok, f"{tag}: large live/bytes/mremaps and threads seen as the workload left them",
           {k: values.get(k) for k in need[:5]})
    # Byte lines carry KiB/MiB figures that match the exact number.
    wrong = [(lab, num, hum) for lab, num, hum in order
             if hum is not None and hum != human(int(num.replace(",", "")))]
    with_unit = [hum for _, _, hum in order if hum and re.search(r" (KiB|MiB)$", hum)]
    report(not wrong and with_unit, f"{tag}: byte figures shown in KiB/MiB, consistent with the exact values",
           f"mismatches {wrong}, unit figures {with_unit[:5]}")
    lg = values.get("# bytes in large blocks")
    line = [hum for lab, _, hum in order if lab == "# bytes in large blocks"]
    report(lg is not None and line == [human(lg)] and human(counts["large_live_bytes"]) in s,
           f"{tag}: large bytes read '{human(counts['large_live_bytes'])}'", f"line {line}")
    peak = values.get("# peak resident set size", 0)
    now = values.get("# resident set size now", 0)
    report(peak >= now, f"{tag}: peak resident set size >= resident set size now", f"peak {peak} < now {now}")


# ----------------------------------------------------------------------------- the checks

def main():
    counts_run = run("direct", ["counts"])
    counts = json.loads(counts_run.out)
    exp_calls = counts["calls"]

    for link in ("direct", "preload"):
        t = link

        # --- off: unset, empty, 0 -> not a byte on stderr, no file either.
        for label, value in (("unset", None), ("empty", ""), ("0", "0")):
            r = run(link, ["known"], stats=value)
            why = exited_ok(r)
            report(why is None and r.err == b"",
                   f"{t}: POOLMALLOC_STATS {label}: stderr empty", why or f"stderr {show(r.err)}")
        path = os.path.join(WORK, f"off-{link}.%p")
        r = run(link, ["known"], stats="0", stats_file=path)
        files = [f for f in os.listdir(WORK) if f.startswith(f"off-{link}.")]
        report(exited_ok(r) is None and r.err == b"" and not files,
               f"{t}: POOLMALLOC_STATS=0 with POOLMALLOC_STATS_FILE: no file, no stderr",
               f"files {files}, stderr {show(r.err)}, rc {r.rc}")

        # --- baselines, and the known workload in JSON.
        base_r = run(link, ["skeleton"], stats="json")
        base = parse_json(base_r.err)
        if not report(exited_ok(base_r) is None and isinstance(base, dict) and not schema_problems(base),
                      f"{t}: skeleton baseline gives a JSON report",
                      f"{exited_ok(base_r)} {base if isinstance(base, str) else schema_problems(base)}"):
            continue
        r = run(link, ["known"], stats="json")
        why = exited_ok(r)
        d = parse_json(r.err)
        if not report(why is None and isinstance(d, dict), f"{t}: json: exits 0, stderr is one valid JSON object",
                      why or (d if isinstance(d, str) else "")):
            continue
        report(r.out == b"", f"{t}: json: nothing on stdout", show(r.out))
        bad = schema_problems(d)
        if not report(not bad, f"{t}: json: every documented field present, non-negative integers", f"bad: {bad}"):
            continue
        report(d["small_block_threshold"] == 512 and d["small_classes"] == 32,
               f"{t}: json: small_block_threshold 512, small_classes 32",
               f"{d['small_block_threshold']}, {d['small_classes']}")
        c, bc = d["calls"], base["calls"]
        diff = {k: (c[k], bc[k] + v) for k, v in exp_calls.items() if c[k] != bc[k] + v}
        report(not diff, f"{t}: json: calls == skeleton baseline + the workload's own calls "
                         f"(malloc +{exp_calls['malloc']}, free +{exp_calls['free']}, "
                         f"remote_free +{exp_calls['remote_free']}, calloc +{exp_calls['calloc']}, "
                         f"realloc +{exp_calls['realloc']}, aligned +{exp_calls['aligned']})",
               f"got vs expected: {diff}; baseline {bc}")
        report(c["malloc"] >= counts["threads"] * counts["per_thread"] and c["remote_free"] >= counts["threads"] * counts["per_thread"] // 2,
               f"{t}: json: calls.malloc >= 10000 and calls.remote_free >= 5000", f"calls {c}")
        r112 = row(d, 112)
        report(r112 is not None and r112["pools"] >= 1 and r112["blocks_in_use"] >= counts["keep"],
               f"{t}: json: class of size 112 present, pools >= 1, blocks_in_use >= {counts['keep']} (kept by main)",
               f"row {r112}")
        # The kept blocks are written to, so their pages are resident: at least as many pages as
        # the fewest that could hold that many block starts.
        min_resident = kept_pages(counts) * PAGE
        report(r112 is not None and r112["resident_bytes"] >= min_resident,
               f"{t}: json: class of size 112 has >= {min_resident} bytes resident (the kept blocks' pages)",
               f"row {r112}")
        r208 = row(d, 208)
        leaked = counts["threads"] * counts["leak_per_thread"]
        report(r208 is not None and r208["blocks_in_use"] >= leaked,
               f"{t}: json: class of size 208 holds the {leaked} blocks exited threads left live", f"row {r208}")
        th = d["threads"]
        report(th["seen"] >= 3, f"{t}: json: threads.seen >= 3", f"threads {th}")
        report(th["pools_abandoned"] >= counts["threads"]
               and th["pools_adopted"] + th["pools_waiting"] <= th["pools_abandoned"],
               f"{t}: json: pools_abandoned >= {counts['threads']} (each exited thread left live blocks), "
               f"adopted + waiting <= abandoned", f"threads {th}")
        lg, bl = d["large"], base["large"]
        ok = (lg["live"] == bl["live"] + counts["large_live"]
              and lg["bytes"] == bl["bytes"] + counts["large_live_bytes"]
              and lg["peak_bytes"] >= counts["large_peak_min"]
              and lg["mremaps"] == bl["mremaps"] + counts["large_mremaps"])
        report(ok, f"{t}: json: large live +{counts['large_live']}, bytes +{counts['large_live_bytes']}, "
                   f"peak >= {counts['large_peak_min']}, mremaps +{counts['large_mremaps']}",
               f"large {lg}, baseline {bl}")
        bad = balance_problems(d)
        report(not bad, f"{t}: json: total == arenas.current*size == arenas_mapped == sum of parts == class rows",
               "; ".join(bad))
        bad = peak_problems(d)
        report(not bad, f"{t}: json: peaks >= current values, memory.mapped == arenas + large live + large cached", "; ".join(bad))
        m = d["memory"]
        report(m["peak_rss"] >= m["rss"], f"{t}: json: memory.peak_rss >= memory.rss",
               f"peak_rss {m['peak_rss']} < rss {m['rss']}")
        # The heap, the arena headers and the address map's entries in use are written, so
        # some pages are resident; never more than is mapped for metadata, or than the process.
        mr = m["metadata_resident"]
        report(0 < mr <= min(m["metadata"], m["rss"]) and mr % PAGE == 0,
               f"{t}: json: memory.metadata_resident is whole pages, > 0, <= memory.metadata and memory.rss",
               f"metadata_resident {mr}, metadata {m['metadata']}, rss {m['rss']}")
        bad = balance_problems(base)
        report(not bad, f"{t}: json: balance holds for the skeleton too", "; ".join(bad))

        # --- text, under both spellings.
        for value in ("1", "text"):
            r = run(link, ["known"], stats=value)
            check_text(f"{t}: POOLMALLOC_STATS={value}", r, counts, base, d["arenas"]["size"], d["calls"])

        # --- unknown values: one warning line, no report, no file.
        for value in ("yes", "JSON"):
            path = os.path.join(WORK, f"bad-{link}-{value}.%p")
            r = run(link, ["known"], stats=value, stats_file=path)
            s = r.err.decode("utf-8", "replace")
            files = [f for f in os.listdir(WORK) if f.startswith(f"bad-{link}-{value}.")]
            ok = (exited_ok(r) is None and s.count("\n") == 1 and s.endswith("\n")
                  and "POOLMALLOC_STATS" in s and all(re.search(rf"\b{w}\b", s) for w in ("0", "1", "text", "json"))
                  and "Small block threshold" not in s and "{" not in s and not files)
            report(ok, f"{t}: POOLMALLOC_STATS={value}: exactly one warning line naming the variable and "
                       f"0/1/text/json, no report, no file", f"rc {r.rc}, files {files}, stderr {show(s)}")

        # --- POOLMALLOC_STATS_FILE with %p.
        sub = os.path.join(WORK, f"file-{link}")
        os.mkdir(sub)
        r = run(link, ["known"], stats="json", stats_file=os.path.join(sub, "stats.%p.json"))
        files = os.listdir(sub)
        ok = exited_ok(r) is None and r.err == b"" and len(files) == 1
        m = re.fullmatch(r"stats\.(\d+)\.json", files[0]) if len(files) == 1 else None
        fd = parse_json(open(os.path.join(sub, files[0]), "rb").read()) if m else "no file"
        ok = ok and m is not None and isinstance(fd, dict) and fd.get("pid") == int(m[1])
        report(ok, f"{t}: POOLMALLOC_STATS_FILE=.../stats.%p.json: one file named with the pid, JSON with that pid, "
                   f"stderr clean", f"rc {r.rc}, files {files}, stderr {show(r.err)}, content {fd if isinstance(fd, str) else ''}")
        if isinstance(fd, dict) and not schema_problems(fd):
            diff = {k: (fd["calls"][k], base["calls"][k] + v) for k, v in exp_calls.items()
                    if fd["calls"][k] != base["calls"][k] + v}
            report(not diff, f"{t}: POOLMALLOC_STATS_FILE: the file's calls are the workload's", f"{diff}")
        sub = os.path.join(WORK, f"textfile-{link}")
        os.mkdir(sub)
        r = run(link, ["known"], stats="text", stats_file=os.path.join(sub, "stats.txt"))
        files = os.listdir(sub)
        body = open(os.path.join(sub, "stats.txt"), "rb").read() if files == ["stats.txt"] else b""
        report(exited_ok(r) is None and r.err == b"" and b"Small block threshold = 512, in 32 size classes." in body,
               f"{t}: POOLMALLOC_STATS=text, FILE without %p: text report in that file, stderr clean",
               f"rc {r.rc}, files {files}, stderr {show(r.err)}, file {show(body)}")

        # --- fork: both processes report, to two files.
        sub = os.path.join(WORK, f"fork-{link}")
        os.mkdir(sub)
        r = run(link, ["fork"], stats="json", stats_file=os.path.join(sub, "stats.%p"))
        m = re.fullmatch(rb"parent=(\d+) child=(\d+)\n", r.out)
        files = sorted(os.listdir(sub))
        ok = exited_ok(r) is None and r.err == b"" and m is not None
        if ok:
            want = sorted([f"stats.{int(m[1])}", f"stats.{int(m[2])}"])
            ok = files == want
            for f in files if ok else []:
                fd = parse_json(open(os.path.join(sub, f), "rb").read())
                ok = ok and isinstance(fd, dict) and fd.get("pid") == int(f.split(".")[1])
        report(ok, f"{t}: fork with %p: parent and child each write their own file (pid in name and JSON)",
               f"rc {r.rc}, stdout {show(r.out)}, files {files}, stderr {show(r.err)}")
        if link == "preload":
            sub = os.path.join(WORK, "sh-preload")
            os.mkdir(sub)
            r = run(link, [], stats="json", stats_file=os.path.join(sub, "stats.%p"),
                    argv=["sh", "-c", "/bin/true; /bin/true; :"])
            files = sorted(os.listdir(sub))
            pids = []
            for f in files:
                fd = parse_json(open(os.path.join(sub, f), "rb").read())
                if isinstance(fd, dict) and f"stats.{fd.get('pid')}" == f:
                    pids.append(fd["pid"])
            report(exited_ok(r) is None and len(files) >= 2 and len(pids) == len(files) and len(set(pids)) == len(pids),
                   f"{t}: sh -c '/bin/true; /bin/true' with %p: one file per process (>= 2), pid in name and JSON",
                   f"rc {r.rc}, files {files}, valid {pids}, stderr {show(r.err)}")

        # --- exit() from a secondary thread.
        for value in ("json", "text"):
            r = run(link, ["exit-from-thread"], stats=value)
            why = exited_ok(r)
            if value == "json":
                fd = parse_json(r.err)
                ok = (why is None and isinstance(fd, dict) and not schema_problems(fd)
                      and fd["calls"]["malloc"] >= 1001 and fd["threads"]["seen"] >= 2 and not balance_problems(fd))
                detail = why or (fd if isinstance(fd, str) else f"calls {fd['calls']}, threads {fd['threads']}")
            else:
                s = r.err.decode("utf-8", "replace")
                ok = why is None and "Small block threshold = 512, in 32 size classes." in s and re.search(r"^Total\s+=", s, re.M)
                detail = why or show(s)
            report(bool(ok), f"{t}: exit() from a secondary thread: {value} report printed "
                             f"(and counts the thread's 1000 mallocs)" if value == "json" else
                   f"{t}: exit() from a secondary thread: {value} report printed", detail)

        # --- _exit: nothing, and no hang.
        for value in ("json", "1"):
            r = run(link, ["_exit"], stats=value)
            why = exited_ok(r)
            report(why is None and r.err == b"" and r.secs < TIMEOUT,
                   f"{t}: _exit with POOLMALLOC_STATS={value}: no report, ends promptly ({r.secs:.1f}s)",
                   why or f"stderr {show(r.err)}")

        # --- the C API.
        r = run(link, ["api"])
        why = exited_ok(r)
        fd = parse_json(r.out)
        ok = why is None and r.err == b"" and isinstance(fd, dict) and not schema_problems(fd)
        report(ok, f"{t}: C API: stats_json short/len0/len1/full buffer, stats_print to a pipe, no allocator "
                   f"calls while reporting; the JSON it returned is valid",
               why or (fd if isinstance(fd, str) else f"stderr {show(r.err)}, schema {schema_problems(fd)}"))
        if ok:
            bad = balance_problems(fd)
            report(not bad and fd["calls"]["malloc"] >= 1000 and fd["calls"]["free"] >= 500,
                   f"{t}: C API: returned JSON balances and counts the program's 1000 malloc / 500 free",
                   "; ".join(bad) + f" calls {fd['calls']}")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
