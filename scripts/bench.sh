#!/usr/bin/env bash
# scripts/bench.sh - benchmark poolmalloc against glibc, jemalloc, tcmalloc and mimalloc.
#
# Installs the peers from Debian's packages if missing, builds target/release/libpoolmalloc.so
# and the benchmark programs of scripts/bench/ (into scripts/bench/build/, gitignored), runs
# every benchmark under each allocator by LD_PRELOAD, interleaved (A B C D E, A B C D E, ...),
# for several rounds, and reports the median wall time and peak RSS of each, with each peer's
# ratio to poolmalloc. Then counts instructions per malloc+free pair with callgrind.
# A full run (all benchmarks, 5+ rounds, poolmalloc present) rewrites BENCHMARKS.md, the chart
# scripts/bench/ratios.png and the raw data in scripts/bench/results/; other runs write
# them under scripts/bench/build/report/.
#
# usage: scripts/bench.sh [--quick] [--rounds N] [--only a,b,...] [--callgrind]
#                         [--no-callgrind] [--peers-only] [--no-build] [--list]
#   --quick         smoke run: small sizes, 1 round (unless --rounds), small callgrind N
#   --rounds N      rounds per benchmark (default 5)
#   --only a,b      run only these benchmarks (names from --list; 'callgrind' is one of them)
#   --callgrind     only the callgrind section (same as --only callgrind)
#   --no-callgrind  skip the callgrind section
#   --peers-only    do not build or require poolmalloc; ratios are then to glibc
#   --no-build      use the existing target/release/libpoolmalloc.so (no cargo build)
#   --write-md      write BENCHMARKS.md, the chart and scripts/bench/results/ even when the run
#                   is not a full one (quick, subset, peers only)
#   --list          print the benchmark names and exit
# Environment: POOLMALLOC_SO=path measures that library as poolmalloc (with --no-build).
# Exit status: 0 when every benchmark passed under every allocator, 1 otherwise.
# The last line is "N passed, M failed" (benchmark x allocator runs).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$ROOT/scripts/bench
BUILD=$SRC/build
VENV=$ROOT/scripts/.venv
CMDLINE="scripts/bench.sh${*:+ $*}"

QUICK=0 ROUNDS="" ONLY="" CALLGRIND=1 CG_ONLY=0 PEERS_ONLY=0 NO_BUILD=0 LIST=0 WRITE_MD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
        --rounds=*) ROUNDS=${1#*=} ;;
        --only) ONLY=${2:?--only needs a list}; shift ;;
        --only=*) ONLY=${1#*=} ;;
        --callgrind) CG_ONLY=1 ;;
        --no-callgrind) CALLGRIND=0 ;;
        --peers-only) PEERS_ONLY=1 ;;
        --no-build) NO_BUILD=1 ;;
        --write-md) WRITE_MD=1 ;;
        --list) LIST=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option '$1' (try --help)" >&2; exit 64 ;;
    esac
    shift
done
if [ -z "$ROUNDS" ]; then
    if [ $QUICK = 1 ]; then ROUNDS=1; else ROUNDS=5; fi
fi
case "$ROUNDS" in ''|*[!0-9]*|0) echo "bench.sh: --rounds needs a positive number" >&2; exit 64 ;; esac

# ---------------------------------------------------------------------------------------------
# The benchmarks: name | program and arguments for a full run | the same for --quick.
# The number in a name is the thread count. Full-mode sizes aim at 0.2 - 2 s per run.
BENCHMARKS=(
    "pairs-small|pairs 16 1024 5000000|pairs 16 1024 50000"
    "pairs-large|pairs 2048 1048576 8000000|pairs 2048 1048576 30000"
    "lifo|batch lifo 16 1024 1000 4000|batch lifo 16 1024 1000 50"
    "fifo|batch fifo 16 1024 1000 4000|batch fifo 16 1024 1000 50"
    "larson-1|larson 1 4 3000000 1000|larson 1 2 40000 500"
    "larson-2|larson 2 4 3000000 1000|larson 2 2 40000 500"
    "larson-8|larson 8 4 3000000 1000|larson 8 2 40000 500"
    "larson-32|larson 32 4 3000000 1000|larson 32 2 40000 200"
    "prodcons-2|prodcons 1 2000000|prodcons 1 20000"
    "prodcons-8|prodcons 4 2000000|prodcons 4 20000"
    "prodcons-32|prodcons 16 2000000|prodcons 16 20000"
    "scratch-2|scratch 2 1000000 100 8|scratch 2 10000 100 8"
    "scratch-8|scratch 8 1000000 100 8|scratch 8 10000 100 8"
    "scratch-32|scratch 32 1000000 100 8|scratch 32 10000 100 8"
    "realloc-1|realloc 1 300000 256 65536|realloc 1 10000 64 65536"
    "realloc-8|realloc 8 300000 256 65536|realloc 8 10000 64 65536"
    "large-1|large 1 100 262144 67108864|large 1 12 262144 67108864"
    "large-2|large 2 100 262144 67108864|large 2 12 262144 67108864"
    "frag-1|frag 1 256|frag 1 16"
    "frag-8|frag 8 256|frag 8 16"
    "cxx-1|cxx 1 2000000 5000|cxx 1 30000 500"
    "cxx-8|cxx 8 2000000 5000|cxx 8 30000 500"
)
CG_N_FULL=100000
CG_N_QUICK=5000

ALL_NAMES=()
for b in "${BENCHMARKS[@]}"; do ALL_NAMES+=("${b%%|*}"); done
ALL_NAMES+=(callgrind)
if [ $LIST = 1 ]; then printf '%s\n' "${ALL_NAMES[@]}"; exit 0; fi

selected() { # is benchmark $1 selected?
    if [ $CG_ONLY = 1 ]; then [ "$1" = callgrind ]; return; fi
    if [ "$1" = callgrind ] && [ $CALLGRIND = 0 ]; then return 1; fi
    [ -z "$ONLY" ] && return 0
    case ",$ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}
if [ -n "$ONLY" ]; then
    IFS=, read -r -a want <<<"$ONLY"
    for w in "${want[@]}"; do
        ok=0
        for n in "${ALL_NAMES[@]}"; do [ "$n" = "$w" ] && ok=1; done
        if [ $ok = 0 ]; then echo "bench.sh: unknown benchmark '$w' (see --list)" >&2; exit 64; fi
    done
fi

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }
T_START=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Peers: Debian's packages.
declare -A PKG_OF=([jemalloc]=libjemalloc2 [tcmalloc]=libtcmalloc-minimal4 [mimalloc]=libmimalloc2.0)
declare -A SO_RE=([jemalloc]='/libjemalloc\.so\.2$' [tcmalloc]='/libtcmalloc_minimal\.so\.4$'
                  [mimalloc]='/libmimalloc\.so\.2(\.0)?$')
missing=()
for a in jemalloc tcmalloc mimalloc; do
    dpkg -s "${PKG_OF[$a]}" >/dev/null 2>&1 || missing+=("${PKG_OF[$a]}")
done
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}: run as root or install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi
declare -A LIB=([glibc]=-)
for a in jemalloc tcmalloc mimalloc; do
    so=$(dpkg -L "${PKG_OF[$a]}" 2>/dev/null | grep -E "${SO_RE[$a]}" | sort | head -n1)
    [ -n "$so" ] && [ -e "$so" ] || die "cannot find the shared library of ${PKG_OF[$a]} (dpkg -L)"
    LIB[$a]=$so
done

# ---------------------------------------------------------------------------------------------
# poolmalloc
PM_SO=${POOLMALLOC_SO:-$ROOT/target/release/libpoolmalloc.so} # override: test another build
exports_malloc() { [ -f "$1" ] && nm -D --defined-only "$1" 2>/dev/null | grep -qw malloc; }
ALLOCS=(glibc jemalloc tcmalloc mimalloc)
if [ $PEERS_ONLY = 1 ]; then
    log "--peers-only: poolmalloc is not built or measured; ratios are to glibc"
    REF=glibc
else
    if [ $NO_BUILD = 0 ]; then
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release -q) >&2 ||
            die "cargo build --release failed (use --peers-only to measure the peers alone)"
    fi
    exports_malloc "$PM_SO" ||
        die "$PM_SO is missing or does not export malloc (use --peers-only to measure the peers alone)"
    LIB[poolmalloc]=$PM_SO
    ALLOCS+=(poolmalloc)
    REF=poolmalloc
fi

# ---------------------------------------------------------------------------------------------
# Benchmark programs
mkdir -p "$BUILD"
CFLAGS=(-O2 -Wall -Wextra -Werror -pthread)
build_one() { # out src compiler
    local out=$BUILD/$1 src=$SRC/$2
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ "$SRC/bench.h" -nt "$out" ] || [ "$0" -nt "$out" ]; then
        "$3" "${CFLAGS[@]}" -o "$out" "$src" || die "cannot build $2"
    fi
}
for p in runner pairs batch larson prodcons scratch realloc large frag cgloop; do build_one "$p" "$p.c" gcc; done
build_one cxx cxx.cpp g++

RUNS=$BUILD/runs
rm -rf "$RUNS" && mkdir -p "$RUNS"
RESULTS=$RUNS/results.tsv
CGRESULTS=$RUNS/callgrind.tsv
printf 'benchmark\tallocator\tround\twall_s\tmaxrss_kb\tstatus\tmetrics\n' >"$RESULTS"
printf 'allocator\tpattern\tsize\tinstructions\n' >"$CGRESULTS"
declare -A FAILED=()   # "bench alloc" -> 1
COMBOS=()
TIMEOUT=120
[ $QUICK = 1 ] && TIMEOUT=30

run_one() { # bench alloc round cmd...
    local bench=$1 alloc=$2 round=$3; shift 3
    local tag=$RUNS/$bench.$alloc.$round
    local prog=$BUILD/$1; shift
    "$BUILD/runner" "$tag.time" "$TIMEOUT" "${LIB[$alloc]}" "$prog" "$@" >"$tag.out" 2>"$tag.err"
    local line wall=NA rss=NA status=999
    line=$(cat "$tag.time" 2>/dev/null)
    if [[ $line =~ wall_s=([0-9.]+)\ maxrss_kb=([0-9]+)\ status=([0-9]+) ]]; then
        wall=${BASH_REMATCH[1]} rss=${BASH_REMATCH[2]} status=${BASH_REMATCH[3]}
    fi
    if [ "$status" = 0 ] && ! grep -q '^RESULT OK' "$tag.out"; then status=998; fi
    local metrics
    metrics=$(sed -n 's/^METRIC //p' "$tag.out" | paste -sd, -)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$bench" "$alloc" "$round" "$wall" "$rss" "$status" "${metrics:--}" >>"$RESULTS"
    if [ "$status" != 0 ]; then
        FAILED["$bench $alloc"]=1
        local why="exit status $status"
        [ "$status" -gt 128 ] 2>/dev/null && [ "$status" -lt 998 ] && why="killed by signal $((status - 128))"
        [ "$status" = 124 ] && why="timed out after ${TIMEOUT}s"
        [ "$status" = 998 ] && why="no 'RESULT OK' line"
        printf '\n' >&2
        log "FAIL $bench under $alloc (round $round): $why; last lines of stderr:"
        tail -n 5 "$tag.err" | sed 's/^/[bench]     /' >&2
    fi
    printf ' %s=%ss' "$alloc" "$wall" >&2
}

for b in "${BENCHMARKS[@]}"; do
    IFS='|' read -r name full quick <<<"$b"
    selected "$name" || continue
    if [ $QUICK = 1 ]; then cmd=$quick; else cmd=$full; fi
    read -r -a argv <<<"$cmd"
    for a in "${ALLOCS[@]}"; do COMBOS+=("$name $a"); done
    for ((r = 1; r <= ROUNDS; r++)); do
        printf '[bench] %s round %d/%d:' "$name" "$r" "$ROUNDS" >&2
        for a in "${ALLOCS[@]}"; do run_one "$name" "$a" "$r" "${argv[@]}"; done
        printf '\n' >&2
    done
done

# ---------------------------------------------------------------------------------------------
# Instructions per malloc+free pair (callgrind); see scripts/bench/cgloop.c.
if selected callgrind; then
    if [ $QUICK = 1 ]; then CG_N=$CG_N_QUICK; else CG_N=$CG_N_FULL; fi
    for a in "${ALLOCS[@]}"; do
        COMBOS+=("callgrind $a")
        d=$RUNS/cg.$a
        mkdir -p "$d"
        log "callgrind under $a (N=$CG_N)"
        if [ "${LIB[$a]}" = - ]; then pre=(env -u LD_PRELOAD); else pre=(env "LD_PRELOAD=${LIB[$a]}"); fi
        if ! timeout $((QUICK ? 120 : 600)) "${pre[@]}" valgrind --tool=callgrind --toggle-collect=measured \
                --dump-after=measured --callgrind-out-file="$d/cg.out" \
                "$BUILD/cgloop" "$CG_N" >"$d/labels" 2>"$d/valgrind.log" ||
           ! grep -q '^RESULT OK' "$d/labels"; then
            FAILED["callgrind $a"]=1
            log "FAIL callgrind under $a; last lines of its log:"
            tail -n 5 "$d/valgrind.log" | sed 's/^/[bench]     /' >&2
            continue
        fi
        # dump k (cg.out.k) belongs to the k-th "CG pattern size n" label
        k=0 prev=""
        while read -r _ pattern size n; do
            k=$((k + 1))
            tot=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$d/cg.out.$k" 2>/dev/null)
            [ -n "$tot" ] || { FAILED["callgrind $a"]=1; log "FAIL callgrind under $a: no dump $k"; break; }
            if [ "$n" != 0 ]; then prev="$pattern $size $n $tot"; continue; fi
            read -r pp ps pn ptot <<<"$prev"
            [ "$pp $ps" = "$pattern $size" ] || { FAILED["callgrind $a"]=1; log "FAIL callgrind: dumps out of order"; break; }
            printf '%s\t%s\t%s\t%s\n' "$a" "$pattern" "$size" \
                "$(awk -v a="$ptot" -v b="$tot" -v n="$pn" 'BEGIN { printf "%.1f", (a - b) / n }')" >>"$CGRESULTS"
        done < <(grep '^CG ' "$d/labels")
    done
    for a in "${ALLOCS[@]}"; do
        printf 'callgrind\t%s\t1\tNA\tNA\t%s\t-\n' "$a" "$([ -n "${FAILED["callgrind $a"]:-}" ] && echo 1 || echo 0)" >>"$RESULTS"
    done
fi

# ---------------------------------------------------------------------------------------------
# Report: table on stdout, markdown, chart.
FULL_SET=0
if [ $QUICK = 0 ] && [ "$ROUNDS" -ge 5 ] && [ -z "$ONLY" ] && [ $CG_ONLY = 0 ] && [ $CALLGRIND = 1 ] && [ $PEERS_ONLY = 0 ]; then FULL_SET=1; fi
if [ $FULL_SET = 1 ] || [ $WRITE_MD = 1 ]; then
    MD=$ROOT/BENCHMARKS.md PNG=$SRC/ratios.png DATA=$SRC/results
else
    MD=$BUILD/report/BENCHMARKS.md PNG=$BUILD/report/ratios.png DATA=$BUILD/report/results
fi
mkdir -p "$DATA" "$(dirname "$MD")"
cp "$RESULTS" "$CGRESULTS" "$DATA/"

PY=python3
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "setting up $VENV with matplotlib"
    { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --disable-pip-version-check matplotlib; } >&2 ||
        log "warning: could not install matplotlib; no chart this time"
fi
[ -x "$VENV/bin/python" ] && PY=$VENV/bin/python

glibc_ver=$(ldd --version 2>/dev/null | head -n1 | awk '{print $NF}')
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
peer_versions=""
for a in jemalloc tcmalloc mimalloc; do
    peer_versions+="$a ${PKG_OF[$a]} $(dpkg-query -W -f='${Version}' "${PKG_OF[$a]}" 2>/dev/null); "
done
pm_rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "no commit")
[ -n "$(cd "$ROOT" && git status --porcelain -- src Cargo.toml 2>/dev/null)" ] && pm_rev+=" (src modified)"

"$PY" "$SRC/report.py" --results "$DATA/results.tsv" --callgrind "$DATA/callgrind.tsv" \
    --ref "$REF" --allocs "${ALLOCS[*]}" --md "$MD" --png "$PNG" \
    --meta "command=$CMDLINE" --meta "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --meta "nproc=$(nproc)" --meta "cpu=$cpu" --meta "kernel=$(uname -r)" --meta "glibc=$glibc_ver" \
    --meta "peers=${peer_versions%; }" --meta "poolmalloc=$pm_rev" --meta "rounds=$ROUNDS" \
    --meta "mode=$([ $QUICK = 1 ] && echo quick || echo full)" --meta "partial=$([ $FULL_SET = 1 ] && echo no || echo yes)" ||
    { log "report.py failed"; FAILED["report -"]=1; }
log "markdown: ${MD#"$ROOT"/}, chart: ${PNG#"$ROOT"/}, raw data: ${DATA#"$ROOT"/}/"

pass=0 fail=0
for c in "${COMBOS[@]}"; do
    if [ -n "${FAILED[$c]:-}" ]; then fail=$((fail + 1)); else pass=$((pass + 1)); fi
done
[ -n "${FAILED[report -]:-}" ] && fail=$((fail + 1))
if [ $fail -gt 0 ]; then
    log "failed:"
    for c in "${!FAILED[@]}"; do log "  $c"; done
fi
log "took $(($(date +%s) - T_START)) s"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
