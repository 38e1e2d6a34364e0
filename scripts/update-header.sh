#!/usr/bin/env bash
# Regenerates include/poolmalloc.h from the sources with cbindgen (through build.rs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release --quiet
out=$(ls -t target/release/build/poolmalloc-*/out/poolmalloc.h | head -n 1)
cp "$out" include/poolmalloc.h
echo "include/poolmalloc.h updated from $out"
