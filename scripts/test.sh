#!/usr/bin/env bash
# Runs every test of poolmalloc on this machine: lints (clippy, rustfmt), the Rust unit tests
# (including the check that include/poolmalloc.h is what cbindgen generates now), then the C,
# statistics, CPython, real-program and benchmark-smoke suites against the release library,
# each both through LD_PRELOAD and (where it applies) linked directly, and the check of the
# CPython comparison's report on synthetic results. Installs what a fresh Debian lacks.
# The last line is "N passed, M failed" over the suites; the exit code is non-zero if any failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need=()
for tool in gcc g++ python3 make; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "# installing: ${need[*]}"
    pkgs=()
    for t in "${need[@]}"; do
        case "$t" in g++) pkgs+=(g++) ;; python3) pkgs+=(python3) ;; *) pkgs+=("$t") ;; esac
    done
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

passed=0
failed=0
failed_names=()
suite() {
    local name=$1
    shift
    local start=$SECONDS
    echo "=== $name: $*"
    if "$@"; then
        passed=$((passed + 1))
        echo "=== $name: ok ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "=== $name: FAILED ($((SECONDS - start)) s)"
    fi
}

# Lints: every unsafe block carries a SAFETY comment (clippy::undocumented_unsafe_blocks is
# denied in src/lib.rs), no warning, formatted sources.
lint() {
    if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
        rustup component add clippy rustfmt >/dev/null 2>&1 || return 1
    fi
    cargo clippy --release --all-targets -- -D warnings && cargo fmt --check
}
suite lint lint
suite unit cargo test --release
suite build cargo build --release
lib="$root/target/release/libpoolmalloc.so"
suite c-tests scripts/c-tests.sh "$lib"
suite stats scripts/stats-tests.sh "$lib"
suite python scripts/python-tests.sh "$lib"
suite report python3 c-tests/python/report_check.py
suite real-programs scripts/real-programs.sh "$lib"
suite bench-quick scripts/bench.sh --quick

echo
if [ $failed -gt 0 ]; then
    echo "failed suites: ${failed_names[*]}"
fi
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
