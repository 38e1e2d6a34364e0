#!/usr/bin/env bash
# Measures what poolmalloc does to real CPython workloads: a pyperformance subset under CPython's
# own allocator (pymalloc, the baseline) and under PYTHONMALLOC=malloc with glibc, jemalloc,
# mimalloc and poolmalloc, and under poolmalloc with libpython's PyObject_*/PyMem_* calls interposed
# (LD_PRELOAD, default PYTHONMALLOC). Reports, per configuration, the geometric mean over the
# benchmarks of time and peak RSS against pymalloc, with its 95% interval over the rounds (so
# the report says whether the runs tell a configuration from pymalloc), as a table in the
# "## CPython: pyperformance against pymalloc" section of BENCHMARKS.md and as a PNG chart.
#
# usage: scripts/compare-python.sh [--quick] [--rounds N] [--benchmarks a,b,...]
#                                  [--configs a,b,...] [--rigorous] [--lib LIB] [--work DIR]
#                                  [--no-write]
#
#   --quick          smoke run: 6 benchmarks, 1 round (about 6 minutes on 2 cores)
#   --rounds N       rounds (default 3); each round runs every benchmark under every
#                    configuration, interleaved benchmark by benchmark, so drift in the machine
#                    spreads over all configurations alike
#   --benchmarks L   pyperformance benchmark names (default: float raytrace chaos deltablue go
#                    nbody nqueens json_loads json_dumps pickle_pure_python unpickle_pure_python
#                    gc_collect)
#   --configs L      subset of: pymalloc glibc jemalloc mimalloc poolmalloc-malloc poolmalloc
#                    (pymalloc is always included: it is the baseline)
#   --rigorous       pyperformance --rigorous instead of --fast (several times longer)
#   --lib LIB        the poolmalloc library (default target/release/libpoolmalloc.so)
#   --work DIR       scratch directory: tool venv, pyperformance's venv, results, logs
#                    (default /tmp/poolmalloc-pyperf; nothing is written in the repository except
#                    BENCHMARKS.md and c-tests/python/results/)
#   --no-write       print the section instead of writing BENCHMARKS.md; the chart and the
#                    summary go to the results directory, not c-tests/python/results/
#
# Needs: the interpreter given by PYTHON (default python3; a pyenv shim is resolved to the real
# binary, which is what pyperformance must run), network access to PyPI (pyperformance and
# matplotlib into a venv under the work directory), and, for the peers, Debian's libjemalloc2
# and libmimalloc2.0 (installed with apt-get when missing and running as root; a peer that
# cannot be had is left out with a note).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYPERFORMANCE_VERSION="1.14.0"
ALL_CONFIGS="pymalloc glibc jemalloc mimalloc poolmalloc-malloc poolmalloc"
DEFAULT_BENCHMARKS="float,raytrace,chaos,deltablue,go,nbody,nqueens,json_loads,json_dumps,pickle_pure_python,unpickle_pure_python,gc_collect"
QUICK_BENCHMARKS="float,chaos,nbody,json_loads,unpickle_pure_python,gc_collect"

ROUNDS=""
BENCHMARKS=""
CONFIGS="$ALL_CONFIGS"
SPEED="--fast"
LIB="$ROOT/target/release/libpoolmalloc.so"
WORK="/tmp/poolmalloc-pyperf"
WRITE=1
QUICK=0
ARGS="$*"

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS="$2"; shift ;;
        --benchmarks) BENCHMARKS="$2"; shift ;;
        --configs) CONFIGS="pymalloc $(echo "$2" | tr ',' ' ' | sed 's/\bpymalloc\b//')"; shift ;;
        --rigorous) SPEED="--rigorous" ;;
        --lib) LIB="$2"; shift ;;
        --work) WORK="$2"; shift ;;
        --no-write) WRITE=0 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "compare-python: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    : "${ROUNDS:=1}"
    : "${BENCHMARKS:=$QUICK_BENCHMARKS}"
else
    : "${ROUNDS:=3}"
    : "${BENCHMARKS:=$DEFAULT_BENCHMARKS}"
fi
case "$ROUNDS" in '' | *[!0-9]* | 0) echo "compare-python: --rounds needs a positive number" >&2; exit 2 ;; esac

die() { echo "compare-python: $*" >&2; exit 2; }

# ---- the interpreter: the real binary, not a pyenv shim ----
PYTHON="${PYTHON:-python3}"
REAL="$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null)" \
    || die "cannot run $PYTHON"
[ -x "$REAL" ] || die "cannot find the real binary of $PYTHON"
PYVERSION="$("$REAL" -c 'import sys; print(sys.version.split()[0])')"

[ -f "$LIB" ] || die "library $LIB not found (cargo build --release)"
LIB="$(cd "$(dirname "$LIB")" && pwd)/$(basename "$LIB")"

# ---- peers ----
MULTIARCH="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
JEMALLOC="/usr/lib/$MULTIARCH/libjemalloc.so.2"
MIMALLOC="/usr/lib/$MULTIARCH/libmimalloc.so.2"
NOTES=()
need_pkgs=()
case " $CONFIGS " in *" jemalloc "*) [ -f "$JEMALLOC" ] || need_pkgs+=(libjemalloc2) ;; esac
case " $CONFIGS " in *" mimalloc "*) [ -f "$MIMALLOC" ] || need_pkgs+=(libmimalloc2.0) ;; esac
if [ ${#need_pkgs[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
    echo "# installing ${need_pkgs[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"; } >/dev/null 2>&1 \
        || echo "# apt-get install ${need_pkgs[*]} failed" >&2
fi
for peer in jemalloc mimalloc; do
    case " $CONFIGS " in *" $peer "*) ;; *) continue ;; esac
    f="$JEMALLOC"
    [ "$peer" = mimalloc ] && f="$MIMALLOC"
    if [ ! -f "$f" ]; then
        NOTES+=("Left out: $peer ($f not installed).")
        CONFIGS="$(echo " $CONFIGS " | sed "s/ $peer / /")"
    fi
done
CONFIGS="$(echo $CONFIGS)"

# env settings of each configuration (LD_PRELOAD and PYTHONMALLOC only)
config_env() {
    case "$1" in
        pymalloc) echo "" ;;
        glibc) echo "PYTHONMALLOC=malloc" ;;
        jemalloc) echo "PYTHONMALLOC=malloc LD_PRELOAD=$JEMALLOC" ;;
        mimalloc) echo "PYTHONMALLOC=malloc LD_PRELOAD=$MIMALLOC" ;;
        poolmalloc-malloc) echo "PYTHONMALLOC=malloc LD_PRELOAD=$LIB" ;;
        poolmalloc) echo "LD_PRELOAD=$LIB" ;;
        *) die "unknown configuration $1" ;;
    esac
}
for c in $CONFIGS; do config_env "$c" >/dev/null; done

# ---- pyperformance (and matplotlib for the chart) in a venv of their own ----
mkdir -p "$WORK"
TOOLVENV="$WORK/venv-tool"
if [ ! -x "$TOOLVENV/bin/pyperformance" ] || ! "$TOOLVENV/bin/pyperformance" --version 2>/dev/null | grep -q "$PYPERFORMANCE_VERSION"; then
    echo "# creating $TOOLVENV (pyperformance $PYPERFORMANCE_VERSION, matplotlib)"
    rm -rf "$TOOLVENV"
    env -u LD_PRELOAD -u PYTHONMALLOC "$REAL" -m venv "$TOOLVENV" || die "venv creation failed"
    env -u LD_PRELOAD -u PYTHONMALLOC "$TOOLVENV/bin/pip" install -q "pyperformance==$PYPERFORMANCE_VERSION" matplotlib \
        || die "pip install pyperformance matplotlib failed"
fi
PYPERFORMANCE="$TOOLVENV/bin/pyperformance"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$WORK/results-$STAMP"
LOGS="$RESULTS/logs"
mkdir -p "$LOGS"
# Run a private copy of the library: a rebuild during the run must not change it under us.
cp "$LIB" "$RESULTS/libpoolmalloc.so" || die "cannot copy $LIB"
LIB_ORIG="$LIB"
LIB="$RESULTS/libpoolmalloc.so"
REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
DIRTY=""
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml build.rs 2>/dev/null || DIRTY=", with uncommitted changes in src/"
NOTES+=("Library: $LIB_ORIG as built at the start of the run (repository at $REV$DIRTY).")
# pyperformance creates its benchmark venv in the current directory: keep it in WORK.
cd "$WORK" || die "cannot enter $WORK"

run_one() { # round bench config -> 0/1
    local round="$1" bench="$2" config="$3"
    local out="$RESULTS/r$round/$bench/$config.json" log="$LOGS/r$round-$bench-$config.log"
    mkdir -p "$(dirname "$out")"
    # shellcheck disable=SC2046 # config_env gives NAME=value words
    env -u LD_PRELOAD -u PYTHONMALLOC $(config_env "$config") \
        "$PYPERFORMANCE" run "$SPEED" --inherit-environ LD_PRELOAD,PYTHONMALLOC \
        -b "$bench" --python "$REAL" -o "$out" >"$log" 2>&1
}

# ---- the preload must reach the benchmark workers: check once with the statistics report ----
# Two short runs with POOLMALLOC_STATS_FILE: one that lets the benchmark workers inherit
# LD_PRELOAD and one that does not. Only the workers differ, so the first must leave more
# reports (one per worker) than the second. Runs after pyperformance's venv exists (a first
# pymalloc run creates it), so that no pip process takes part.
preload_check() {
    local check="$WORK/preload-check" n_with n_without
    count_reports() {
        env -u LD_PRELOAD "$REAL" -c 'import glob, json, sys
n = 0
for f in glob.glob(sys.argv[1] + "/*.json"):
    try:
        n += json.load(open(f))["calls"]["pyobject"] > 0
    except Exception:
        pass
print(n)' "$1"
    }
    rm -rf "$check"
    mkdir -p "$check/with" "$check/without"
    LD_PRELOAD="$LIB" POOLMALLOC_STATS=json POOLMALLOC_STATS_FILE="$check/with/%p.json" \
        "$PYPERFORMANCE" run --debug-single-value \
        --inherit-environ LD_PRELOAD,PYTHONMALLOC,POOLMALLOC_STATS,POOLMALLOC_STATS_FILE \
        -b nbody --python "$REAL" -o "$check/with.out" >"$check/with.log" 2>&1 || return 1
    LD_PRELOAD="$LIB" POOLMALLOC_STATS=json POOLMALLOC_STATS_FILE="$check/without/%p.json" \
        "$PYPERFORMANCE" run --debug-single-value \
        --inherit-environ PYTHONMALLOC,POOLMALLOC_STATS,POOLMALLOC_STATS_FILE \
        -b nbody --python "$REAL" -o "$check/without.out" >"$check/without.log" 2>&1 || return 1
    n_with="$(count_reports "$check/with")"
    n_without="$(count_reports "$check/without")"
    echo "# preload check: $n_with poolmalloc reports with LD_PRELOAD inherited, $n_without without"
    [ -n "$n_with" ] && [ -n "$n_without" ] && [ "$n_with" -gt "$n_without" ]
}
PRELOAD_CHECK=0
if LD_PRELOAD="$LIB" POOLMALLOC_STATS=json "$REAL" -c pass 2>&1 >/dev/null | grep -q '"pyobject"'; then
    PRELOAD_CHECK=1
else
    NOTES+=("The check that LD_PRELOAD reaches the benchmark workers was not made (no POOLMALLOC_STATS=json report in this build).")
fi

echo "# CPython $PYVERSION ($REAL), rounds $ROUNDS, $SPEED, benchmarks $BENCHMARKS"
echo "# configurations: $CONFIGS"
echo "# results in $RESULTS"
failures=0
start=$(date +%s)
LOAD_START="$(cut -d' ' -f1 /proc/loadavg)"
for round in $(seq 1 "$ROUNDS"); do
    for bench in $(echo "$BENCHMARKS" | tr ',' ' '); do
        for config in $CONFIGS; do
            t0=$(date +%s)
            if [ "$PRELOAD_CHECK" = 1 ] && [ "$config" != pymalloc ]; then
                # pyperformance's venv exists now (the pymalloc run made it): check once.
                PRELOAD_CHECK=2
                preload_check || die "LD_PRELOAD did not reach pyperformance's benchmark workers (see $WORK/preload-check)"
                NOTES+=("Checked before the runs: LD_PRELOAD reaches pyperformance's benchmark workers (POOLMALLOC_STATS_FILE reports from the workers).")
            fi
            if run_one "$round" "$bench" "$config"; then
                printf '%-5s round %d %-22s %-18s %3ds\n' ok "$round" "$bench" "$config" $(($(date +%s) - t0))
            else
                printf '%-5s round %d %-22s %-18s (see %s)\n' FAIL "$round" "$bench" "$config" "$LOGS/r$round-$bench-$config.log"
                failures=$((failures + 1))
                NOTES+=("Run failed: round $round, $bench under $config.")
            fi
        done
    done
done
echo "# runs took $(($(date +%s) - start))s, $failures failed"
NOTES+=("Load average (1 min) at the start of the runs $LOAD_START, at the end $(cut -d' ' -f1 /proc/loadavg), on $(nproc) cores: anything above about 1 means other work shared the machine and adds noise to single-benchmark ratios.")

MODE="$ROUNDS round(s), pyperformance $SPEED, $(echo "$BENCHMARKS" | tr ',' '\n' | wc -l) benchmarks"
[ "$QUICK" = 1 ] && MODE="--quick (smoke run: $MODE; expect a few % of noise)"
META="$RESULTS/meta.json"
{
    printf '{"python": "%s", "python_version": "%s", "pyperformance": "%s", "date": "%s", "args": "%s", "notes": [' \
        "$REAL" "$PYVERSION" "$PYPERFORMANCE_VERSION" "$(date -u +'%Y-%m-%d %H:%M UTC')" "$ARGS"
    sep=""
    for n in "${NOTES[@]+"${NOTES[@]}"}"; do printf '%s"%s"' "$sep" "${n//\"/\'}"; sep=", "; done
    printf ']}\n'
} >"$META"

# Only a run that writes BENCHMARKS.md replaces the chart and summary it links to; a --no-write
# run leaves them next to its results.
OUTDIR="$ROOT/c-tests/python/results"
[ "$WRITE" = 1 ] || OUTDIR="$RESULTS"
mkdir -p "$OUTDIR"
report_args=(--results "$RESULTS" --configs "$(echo $CONFIGS | tr ' ' ',')" --mode "$MODE" --meta "$META"
    --png "$OUTDIR/pyperformance.png" --png-link "c-tests/python/results/pyperformance.png"
    --summary "$OUTDIR/pyperformance-summary.json")
if [ "$WRITE" = 1 ]; then
    report_args+=(--markdown "$ROOT/BENCHMARKS.md")
fi
"$TOOLVENV/bin/python" "$ROOT/c-tests/python/pyperf_report.py" "${report_args[@]}" || exit 1
if [ "$WRITE" = 1 ]; then
    echo "# wrote the section of $ROOT/BENCHMARKS.md and $OUTDIR/pyperformance.png"
else
    echo "# chart and summary in $OUTDIR (BENCHMARKS.md and c-tests/python/results/ untouched)"
fi
[ "$failures" -eq 0 ]
