#!/usr/bin/env bash
# The main job: build the release library and run a real program under it with the
# statistics report at exit. Default program: a CPython workload with PYTHONMALLOC=malloc, so
# that every Python allocation goes through poolmalloc. Pass another command to run that
# instead, e.g. `scripts/run.sh git log --stat`. POOLMALLOC_STATS defaults to 1 (text);
# set it to json for the JSON report.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v gcc >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq gcc >/dev/null; }
cargo build --release --quiet
lib="$root/target/release/libpoolmalloc.so"
export POOLMALLOC_STATS="${POOLMALLOC_STATS:-1}"
if [ $# -gt 0 ]; then
    LD_PRELOAD="$lib" exec "$@"
fi
command -v python3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3 >/dev/null; }
# The real interpreter, not a wrapper script (pyenv's shim would run, and report, bash).
py=$(python3 -c 'import sys; print(sys.executable)')
PYTHONMALLOC=malloc LD_PRELOAD="$lib" exec "$py" - <<'PY'
import json, random, threading
random.seed(1)
data = [{"id": i, "name": f"item-{i}", "tags": [str(random.random()) for _ in range(5)]} for i in range(200_000)]
text = json.dumps(data)
back = json.loads(text)
assert back == data
index = {d["name"]: d for d in back}
def churn(seed):
    r = random.Random(seed)
    for _ in range(20):
        xs = [str(r.random()) * r.randint(1, 40) for _ in range(20_000)]
        xs.sort()
threads = [threading.Thread(target=churn, args=(s,)) for s in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(f"json bytes: {len(text)}, index entries: {len(index)}")
PY
