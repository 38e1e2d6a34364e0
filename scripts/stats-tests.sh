#!/usr/bin/env bash
# Tests of the statistics report (POOLMALLOC_STATS, POOLMALLOC_STATS_FILE, the C API
# poolmalloc_stats_print / poolmalloc_stats_json).
#
# usage: scripts/stats-tests.sh [LIB]
#
#   LIB   the library under test (default: target/release/libpoolmalloc.so, built first with
#         `cargo build --release` when no LIB is given; the environment variable LIB is used
#         when no argument is given).
#
# Builds c-tests/stats/workload.c twice (linked directly against LIB with -I include, and plain
# for LD_PRELOAD=LIB), then c-tests/stats/check_stats.py runs it under every POOLMALLOC_STATS
# value and checks the reports (see that file for the list).  Every run is under `timeout`
# (STATS_TIMEOUT seconds, default 60).  Prints "ok   name" / "FAIL name: why" per check and
# finally "N passed, M failed"; exits 1 if anything failed, 2 on a setup error.
# Binaries and report files go to a temporary directory, removed at the end unless
# STATS_KEEP=1 (its path is printed on failure).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CC="${CC:-gcc}"
CFLAGS="-O2 -g -Wall -Wextra -Werror -pthread"

arg="${1:-${LIB:-}}"
case "$arg" in
    -h | --help)
        sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    "")
        LIBPATH="$ROOT/target/release/libpoolmalloc.so"
        if ! (cd "$ROOT" && cargo build --release --quiet); then
            echo "stats-tests: cargo build --release failed" >&2
            exit 2
        fi
        ;;
    *) LIBPATH="$arg" ;;
esac
if [ ! -f "$LIBPATH" ]; then
    echo "stats-tests: library $LIBPATH not found" >&2
    exit 2
fi
LIBDIR="$(cd "$(dirname "$LIBPATH")" && pwd)"
LIBFILE="$(basename "$LIBPATH")"
LIBPATH="$LIBDIR/$LIBFILE"
for cmd in "$CC" python3 timeout; do
    command -v "$cmd" >/dev/null || { echo "stats-tests: $cmd not found" >&2; exit 2; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/poolmalloc-stats.XXXXXX")" || exit 2
echo "stats-tests: library $LIBPATH; work directory $WORK (kept on failure or with STATS_KEEP=1)"
cleanup() {
    if [ "${STATS_KEEP:-0}" != 1 ] && [ "${status:-1}" = 0 ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# -l<name> needs lib<name>.so; any other file name is linked by path.
case "$LIBFILE" in
    lib*.so) LINKLIB="-L$LIBDIR -l$(basename "${LIBFILE#lib}" .so)" ;;
    *) LINKLIB="$LIBPATH" ;;
esac
SRC="$ROOT/c-tests/stats/workload.c"
# shellcheck disable=SC2086
if ! $CC $CFLAGS -I "$ROOT/include" "$SRC" -o "$WORK/workload.direct" \
        -Wl,--no-as-needed $LINKLIB -Wl,-rpath,"$LIBDIR" >"$WORK/build-direct.log" 2>&1; then
    cat "$WORK/build-direct.log"
    echo "stats-tests: building the direct workload failed" >&2
    status=2
    exit 2
fi
# shellcheck disable=SC2086
if ! $CC $CFLAGS -DWORKLOAD_DLSYM -I "$ROOT/include" "$SRC" -o "$WORK/workload.preload" -ldl \
        >"$WORK/build-preload.log" 2>&1; then
    cat "$WORK/build-preload.log"
    echo "stats-tests: building the preload workload failed" >&2
    status=2
    exit 2
fi

python3 "$ROOT/c-tests/stats/check_stats.py" "$LIBPATH" "$WORK/workload.direct" "$WORK/workload.preload" "$WORK"
status=$?
exit "$status"
