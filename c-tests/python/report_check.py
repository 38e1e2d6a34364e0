"""report_check.py - checks that pyperf_report.py tells a real difference from noise.

Writes synthetic pyperformance results (the layout compare-python.sh leaves:
RESULTS/r<round>/<benchmark>/<config>.json) for configurations whose difference from pymalloc
is known, runs the report on them and checks the verdicts and intervals it gives:
  - "poolmalloc": 3% slower and 2% more peak RSS in every round of every benchmark, with noise
    well under that: both intervals lie above 1.00, and "Where poolmalloc stands" says so;
  - "smaller": the same time as pymalloc but 5% less peak RSS in every round: the RSS interval
    lies below 1.00 and its verdict says so;
  - "noisy": rounds alternately 4% faster and 4% slower (geomean exactly 1.00 over an even
    number of rounds): the time interval contains 1.00 and the verdict says the runs cannot
    tell it from pymalloc;
  - the same results give the same text twice (the bootstrap's seed is fixed);
  - from one round, no interval and no claim about noise.
Prints "ok <what>" lines; exits 1 at the first failed check.

usage: python3 report_check.py
"""
import json
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "pyperf_report.py")
sys.path.insert(0, HERE)
import pyperf_report  # noqa: E402  (the module under test, next to this file)
BENCHES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
ROUNDS = 6


def write(path, values, rss_per_worker):
    runs = [{"values": values[i::len(rss_per_worker)], "metadata": {"mem_max_rss": r}}
            for i, r in enumerate(rss_per_worker)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"benchmarks": [{"runs": runs}]}, f)


def synthesise(results):
    rng = random.Random(7)
    for r in range(1, ROUNDS + 1):
        for k, b in enumerate(BENCHES):
            base_t = 0.01 * (k + 1)
            base_rss = (20 + k) << 20
            # Round-to-round drift that both configurations of the round share.
            drift = 1 + rng.uniform(-0.03, 0.03)

            def values(scale):
                return [base_t * drift * scale * (1 + rng.uniform(-0.002, 0.002)) for _ in range(6)]

            def rss(scale):
                return [int(base_rss * scale) + rng.randrange(-4096, 4096) for _ in range(3)]

            d = os.path.join(results, "r%d" % r, b)
            write(os.path.join(d, "pymalloc.json"), values(1.0), rss(1.0))
            write(os.path.join(d, "poolmalloc.json"), values(1.03), rss(1.02))
            write(os.path.join(d, "smaller.json"), values(1.0), rss(0.95))
            write(os.path.join(d, "noisy.json"), values(1.04 if r % 2 else 1 / 1.04), rss(1.0))


def check(cond, what, detail=""):
    if not cond:
        print("FAIL %s %s" % (what, detail))
        sys.exit(1)
    print("ok   %s" % what)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        results = os.path.join(tmp, "results")
        synthesise(results)
        outs = []
        for n in (1, 2):
            summary = os.path.join(tmp, "summary%d.json" % n)
            p = subprocess.run(
                [sys.executable, REPORT, "--results", results, "--mode", "synthetic",
                 "--configs", "pymalloc,poolmalloc,smaller,noisy", "--summary", summary],
                capture_output=True, text=True)
            check(p.returncode == 0, "report run %d of 2" % n, p.stderr)
            outs.append(p.stdout)
        geo = json.load(open(summary))["geomean"]
        text = outs[0]

        iv = geo["poolmalloc"]["interval"]
        check(iv["time"][0] > 1.0 and iv["rss"][0] > 1.0,
              "slower and larger in every round: both intervals above 1.00", iv)
        stands = [line for line in text.splitlines() if line.startswith("**Where poolmalloc")]
        check(len(stands) == 1 and stands[0].count("above pymalloc's beyond the runs' noise") == 2,
              "and the verdict says both are above pymalloc's beyond the noise", stands)
        iv = geo["smaller"]["interval"]
        check(iv["rss"][1] < 1.0, "5% less peak RSS in every round: RSS interval below 1.00", iv)
        check(pyperf_report.resolution(geo["smaller"], "rss").startswith("below pymalloc's"),
              "and its verdict says below")
        iv = geo["noisy"]["interval"]
        check(iv["time"][0] < 1.0 < iv["time"][1],
              "rounds alternately 4% faster and slower: time interval contains 1.00", iv)
        check(pyperf_report.resolution(geo["noisy"], "time").startswith("not told apart"),
              "and its verdict says the runs cannot tell")
        check(outs[0] == outs[1], "the same results give the same report twice")

        one = os.path.join(tmp, "one-round")
        os.makedirs(one)
        os.rename(os.path.join(results, "r1"), os.path.join(one, "r1"))
        summary = os.path.join(tmp, "summary-one.json")
        p = subprocess.run(
            [sys.executable, REPORT, "--results", one, "--mode", "synthetic",
             "--configs", "pymalloc,poolmalloc", "--summary", summary],
            capture_output=True, text=True)
        g = json.load(open(summary))["geomean"]["poolmalloc"]
        check(p.returncode == 0 and g["interval"] is None and "no interval" in p.stdout,
              "one round: no interval, and the verdict claims nothing beyond the point figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
