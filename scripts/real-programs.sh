#!/usr/bin/env bash
# real-programs.sh -- run real, allocation-heavy programs with and without
# poolmalloc preloaded and check they behave identically.
#
# What this proves: with LD_PRELOAD=libpoolmalloc.so, unmodified system
# programs (CPython -- also with PYTHONMALLOC=malloc so every Python object
# goes through malloc/free/realloc --, git, gcc/cc1/as/ld, perl, GNU sort with
# threads and temp files, sqlite3, plus the bash/coreutils glue around them)
# produce byte-identical stdout and the same exit status as they do with the
# system allocator, and the allocator never prints a diagnostic (any stderr
# line mentioning "poolmalloc" counts as a failure). The workloads are
# deterministic, multi-threaded where the program supports it, and mix tiny,
# medium and multi-megabyte allocations, realloc growth and cross-thread frees.
#
# Usage: scripts/real-programs.sh [LIB | --system | none]
#   LIB       shared object to preload (default: <repo>/target/release/libpoolmalloc.so)
#   --system  (or "none") run the second pass without any preload; this
#             validates the script itself (workload determinism).
# Env: REAL_PROGRAMS_TIMEOUT  per-program-run timeout in seconds (default 90)
#
# Output: one "ok   <check>" / "FAIL <check>" line per check (failures are
# followed by indented details), then "N passed, M failed". Exit status is
# non-zero if anything failed. Missing tools are installed with apt-get
# (Debian 12, root) only when `command -v` cannot find them.

set -u
export LC_ALL=C
unset LD_PRELOAD PYTHONMALLOC

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIMEOUT=${REAL_PROGRAMS_TIMEOUT:-90}

LIB=${1:-$ROOT/target/release/libpoolmalloc.so}
case "$LIB" in
  -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  --system|none|NONE|"") LIB=none ;;
esac
if [ "$LIB" != none ]; then
  case "$LIB" in /*) ;; *) LIB=$PWD/$LIB ;; esac
  if [ ! -f "$LIB" ]; then
    echo "real-programs: $LIB not found (build it first, or pass --system)" >&2
    exit 2
  fi
  if command -v nm >/dev/null 2>&1 && ! nm -D --defined-only "$LIB" 2>/dev/null | grep -q ' T malloc$'; then
    echo "real-programs: warning: $LIB does not export malloc" >&2
  fi
  VARIANT=preload
else
  VARIANT=system
fi

# ---------------------------------------------------------------- tools
need=()
command -v python3  >/dev/null 2>&1 || need+=(python3)
command -v git      >/dev/null 2>&1 || need+=(git)
command -v gcc      >/dev/null 2>&1 || need+=(gcc libc6-dev)
[ -e /usr/include/stdio.h ]          || need+=(libc6-dev)
command -v perl     >/dev/null 2>&1 || need+=(perl)
command -v sqlite3  >/dev/null 2>&1 || need+=(sqlite3)
command -v sha256sum >/dev/null 2>&1 && command -v sort >/dev/null 2>&1 \
  && command -v timeout >/dev/null 2>&1 || need+=(coreutils)
command -v awk      >/dev/null 2>&1 || need+=(mawk)
command -v diff     >/dev/null 2>&1 || need+=(diffutils)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "real-programs: missing packages (${need[*]}) and not root" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >/dev/null 2>&1; then
    echo "real-programs: apt-get install ${need[*]} failed" >&2
    exit 2
  fi
fi

# The real interpreter, not a pyenv/asdf shim script.
PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
[ -x "$PY" ] || PY=$(command -v python3)

# ---------------------------------------------------------------- temp dir
T=$(mktemp -d "${TMPDIR:-/tmp}/real-programs.XXXXXX") || exit 2
CHILD=
cleanup() {
  if [ -n "$CHILD" ]; then kill -TERM "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
  rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$T/data" "$T/wl" "$T/res"
D=$T/data

# ---------------------------------------------------------------- workloads
cat >"$T/wl/python.py" <<'EOF'
import collections, gc, hashlib, json, random, re, sys, threading, zlib

total = hashlib.sha256()
def section(name, *objs):
    h = hashlib.sha256()
    for o in objs:
        h.update(repr(o).encode())
    d = h.hexdigest()
    total.update(d.encode())
    print(name, d[:16])

rng = random.Random(12345)

# dict churn: inserts, updates, deletes, resize up and down
d = {}
for i in range(200000):
    k = "k%d_%s" % (i % 40000, "x" * (i % 17))
    d[k] = d.get(k, 0) + i
    if i % 3 == 0:
        j = (i * 7) % 40000
        d.pop("k%d_%s" % (j, "x" * ((i * 7) % 17)), None)
dd = collections.defaultdict(list)
for k, v in d.items():
    dd[v % 97].append(k)
section("dict", len(d), sorted(d.items())[::97], sorted((k, len(v)) for k, v in dd.items()))
del d, dd

# lists of varied sizes, sorting, slicing, realloc growth
lists = [[rng.randint(0, 10**6) for _ in range(rng.randint(0, 300))] for _ in range(4000)]
grown = []
for l in lists:
    grown.extend(l)
    grown.append(len(l))
srt = sorted(grown)
by_sum = sorted(lists, key=lambda l: (sum(l), len(l)))
section("list", len(grown), srt[::1009], [len(l) for l in by_sum[::50]], sorted(set(grown))[-20:])
del lists, grown, srt, by_sum

# strings: formatting, join/split, bytes, regexes, big buffers
parts = [("%08x" % ((i * 2654435761) & 0xffffffff)) * (i % 5 + 1) for i in range(100000)]
joined = "|".join(parts)
back = joined.split("|")
assert back == parts
rev = [p.upper()[::-1] for p in back]
hexes = re.findall(r"([0-9A-F]{2})\1", "".join(rev[:20000]))
buf = bytearray()
for i in range(3000):
    buf += bytes([i & 255]) * (i % 2048)
comp = zlib.compress(bytes(buf), 6)
assert zlib.decompress(comp) == bytes(buf)
section("str", len(joined), rev[::997], len(hexes), collections.Counter(hexes).most_common(5),
        len(buf), hashlib.sha256(buf).hexdigest())
del parts, joined, back, rev, buf, comp

# json round trips
obj = [{"id": i, "name": "item%d" % i, "tags": [str(j) for j in range(i % 10)],
        "nested": {"a": i * 1.5, "b": [None, True, False], "s": "\u00e9" * (i % 7)}}
       for i in range(30000)]
txt = json.dumps(obj, sort_keys=True)
obj2 = json.loads(txt)
assert obj2 == obj
txt2 = json.dumps(obj2, indent=1, sort_keys=True)
section("json", len(txt), len(txt2), hashlib.sha256(txt.encode()).hexdigest(),
        hashlib.sha256(txt2.encode()).hexdigest())
del obj, obj2, txt, txt2

# many class instances, reference cycles, gc
class Node:
    def __init__(self, ident, parent):
        self.ident = ident
        self.parent = parent
        self.children = []
        self.payload = "n%d" % ident
        if parent is not None:
            parent.children.append(self)
root = Node(0, None)
nodes = [root]
for i in range(1, 150000):
    nodes.append(Node(i, nodes[rng.randrange(len(nodes))]))
depth = {}
for n in nodes:
    depth[n.ident] = 0 if n.parent is None else depth[n.parent.ident] + 1
leaves = sum(1 for n in nodes if not n.children)
for n in nodes[::3]:
    n.children = [c.ident for c in n.children]
del nodes, root
collected = gc.collect()
section("objects", leaves, max(depth.values()), sum(depth.values()), collected > 0)
del depth

# threads allocating and freeing concurrently, objects handed across threads
results = [None] * 6
shared = []
lock = threading.Lock()
def worker(idx):
    r = random.Random(idx)
    acc = hashlib.sha256()
    local = {}
    for i in range(30000):
        k = "t%d-%d" % (idx, r.randrange(5000))
        local[k] = [k] * r.randrange(1, 8)
        if i % 5 == 0:
            local.pop(k, None)
        if i % 100 == 0:
            with lock:
                shared.append((idx, i, "x" * r.randrange(1, 5000)))
    for k in sorted(local):
        acc.update(("%s:%d;" % (k, len(local[k]))).encode())
    results[idx] = acc.hexdigest()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
for t in threads: t.start()
for t in threads: t.join()
shared.sort()
section("threads", results, len(shared), sum(len(s[2]) for s in shared))

print("total", total.hexdigest())
EOF

cat >"$T/wl/git.sh" <<'EOF'
set -o pipefail
export HOME=$PWD/home GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0
export GIT_AUTHOR_NAME=Poolmalloc GIT_AUTHOR_EMAIL=pool@example.invalid
export GIT_COMMITTER_NAME=Poolmalloc GIT_COMMITTER_EMAIL=pool@example.invalid
export GIT_AUTHOR_DATE='2021-01-01T00:00:00+0000' GIT_COMMITTER_DATE='2021-01-01T00:00:00+0000'
mkdir -p home repo && cd repo || exit 1
# 3000 deterministic files in 40x8 nested directories
mkdir -p $(awk 'BEGIN { for (a = 0; a < 40; a++) for (b = 0; b < 8; b++) printf "d%02d/s%d\n", a, b }')
awk 'BEGIN {
  x = 1
  for (i = 0; i < 3000; i++) {
    f = sprintf("d%02d/s%d/file%04d.txt", i % 40, int(i / 40) % 8, i)
    n = 5 + i % 40
    for (l = 0; l < n; l++) {
      x = (x * 69069 + 1) % 4294967296
      printf "line %d of file %d value %d %s\n", l, i, x, substr("abcdefghijklmnopqrstuvwxyz", 1 + x % 26, 1 + x % 13) > f
    }
    close(f)
  }
}' || exit 1
git init -q -b main . && git config gc.auto 0 && git config maintenance.auto false || exit 1
git add -A && git commit -q -m "initial: 3000 files" || exit 1
echo "commit1 $(git rev-parse HEAD)"
echo "files $(git ls-files | wc -l)"
echo "log-stat $(git log --stat | sha256sum)"
echo "status1 [$(git status --porcelain)]"
# second commit: modify, delete, add, rename
for i in $(seq 0 7 2999); do
  f=$(printf 'd%02d/s%d/file%04d.txt' $((i % 40)) $((i / 40 % 8)) $i)
  echo "modified $i" >>"$f"
done
git rm -q -f $(git ls-files | awk 'NR % 50 == 0') || exit 1
git mv d00/s0 d00/renamed || exit 1
mkdir -p new && for i in $(seq 1 100); do seq $i $((i * 3)) >"new/n$i.txt"; done
echo "status2 $(git status --porcelain | sha256sum)"
git add -A && git commit -q -m "second: edits" || exit 1
echo "commit2 $(git rev-parse HEAD)"
echo "diffstat $(git diff --stat HEAD~1 HEAD | tail -n 1)"
echo "diff $(git diff -M HEAD~1 HEAD | sha256sum)"
echo "grep $(git grep -c 'value 1' | sha256sum)"
echo "blame $(git blame -s d01/s1/file1001.txt | sha256sum)"
git gc -q || exit 1
git fsck --full --strict >/dev/null 2>../fsck.err && echo "fsck ok" || { echo "fsck FAILED"; cat ../fsck.err; }
git count-objects -v | grep -E '^(count|in-pack|packs):'
echo "objects $(git rev-list --objects --all | sort | sha256sum)"
echo "archive $(git archive --format=tar HEAD | sha256sum)"
echo "status3 [$(git status --porcelain)]"
EOF

cat >"$T/wl/gcc.sh" <<EOF
set -o pipefail
cp "$D/big.c" . || exit 1
gcc -O2 -frandom-seed=poolmalloc -c big.c -o big.o || exit 1
echo "object \$(sha256sum <big.o)"
gcc -O2 big.o -o big || exit 1
./big
EOF

# a moderately large C translation unit: 400 functions, a dispatch table
awk 'BEGIN {
  print "#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n"
  print "struct rec { unsigned a, b; char name[24]; double w; };"
  N = 400
  for (i = 0; i < N; i++) {
    printf "static unsigned f%d(unsigned x) {\n", i
    printf "  unsigned a[16]; struct rec r; int i;\n"
    printf "  for (i = 0; i < 16; i++) a[i] = x * (unsigned)(i + %d) ^ (x >> (i %% 7));\n", i + 3
    printf "  switch (x %% 8) {\n"
    for (c = 0; c < 8; c++)
      printf "  case %d: x += a[%d] * %du; x ^= x >> %d; break;\n", c, (c * 5 + i) % 16, 2 * c + 2 * i + 1, 1 + (c + i) % 13
    printf "  }\n"
    printf "  r.a = x; r.b = a[%d]; r.w = (double)x / %d.0;\n", i % 16, i + 7
    printf "  snprintf(r.name, sizeof r.name, \"f%d-%%u\", r.a %% 1000u);\n", i
    printf "  for (i = 0; i < 16; i++) x = ((x << 3) | (x >> 29)) + a[i] * %du + (unsigned)strlen(r.name);\n", i * 2 + 1
    printf "  if (r.w > %d.5) x ^= r.b; else x += r.b >> 3;\n", i * 100
    if (i > 0) printf "  if ((x & 63u) == %du) x += f%d(x >> 7) & 255u;\n", i % 64, i - 1 - (i % 3 == 0 && i > 1)
    printf "  return x;\n}\n\n"
  }
  printf "static unsigned (*const table[%d])(unsigned) = {\n", N
  for (i = 0; i < N; i++) printf "  f%d,\n", i
  print "};\n"
  print "int main(void) {"
  print "  unsigned x = 12345u, h = 0; int k, i;"
  printf "  for (k = 0; k < 200; k++)\n    for (i = 0; i < %d; i++) { x = table[i](x + (unsigned)k); h = h * 31u + x; }\n", N
  print "  printf(\"checksum %u %u\\n\", x, h);"
  print "  return 0;\n}"
}' >"$D/big.c"

cat >"$T/wl/perl.pl" <<'EOF'
use strict;
use warnings;
my $seed = 12345;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return $seed >> 8; }
my $acc = 0;
my @out;
sub note { my $s = join(' ', @_); push @out, $s; print "$s\n"; }
# checksum over a string (simple, deterministic, module-free)
sub ck { my $c = 0; $c = ($c * 33 + $_) % 4294967291 for unpack('C*', $_[0]); return $c; }

my @words = map { my $n = 3 + rnd() % 8; join '', map { chr(97 + rnd() % 26) } 1 .. $n } 1 .. 20000;
my (%freq, %pos);
for my $i (0 .. 299999) {
    my $w = $words[rnd() % @words];
    $freq{$w}++;
    push @{ $pos{ substr($w, 0, 2) } }, $i if $i % 3 == 0;
}
note('freq', scalar(keys %freq), scalar(keys %pos), ck(join ',', map { "$_=$freq{$_}" } sort keys %freq));

my $text = join ' ', map { $words[$_ % @words] . ($_ % 97) } 0 .. 199999;
my @m = $text =~ /\b([aeiou]\w*?)(\d+)\b/g;
(my $t2 = $text) =~ s/([bcd])(\w)/\U$2\E$1/g;
my @split = split /[aeiou]+/, $t2;
my %caps;
$caps{$1}++ while $t2 =~ /([A-Z][a-z][a-z]?)/g;
note('regex', scalar(@m), length($t2), scalar(@split), scalar(keys %caps), ck($t2));

my @sorted = sort { $freq{$b} <=> $freq{$a} || $a cmp $b } keys %freq;
my @nums = sort { $a <=> $b } map { rnd() % 1000000 } 1 .. 200000;
my @strs = sort map { sprintf('%07d-%s', rnd() % 9999999, $words[rnd() % @words]) } 1 .. 100000;
note('sort', join(',', @sorted[0 .. 9]), $nums[0], $nums[-1], $nums[100000], ck(join '', @strs[0 .. 999]));

delete $freq{$_} for grep { /q|z/ } keys %freq;
my %inv;
push @{ $inv{ $freq{$_} } }, $_ for sort keys %freq;
my $big = '';
$big .= $_ x 3 for @words;
my @chunks = unpack('(A1000)*', $big);
note('hash', scalar(keys %freq), scalar(keys %inv), length($big), scalar(@chunks), ck(join '|', map { scalar @{ $inv{$_} } } sort { $a <=> $b } keys %inv));
note('total', ck(join "\n", @out));
EOF

cat >"$T/wl/perl.sh" <<EOF
perl "$T/wl/perl.pl"
EOF

# ~65 MB of lines for sort (generated once, shared read-only by both passes)
awk 'BEGIN {
  srand(4242)
  for (i = 0; i < 300; i++) w[i] = sprintf("%c%c%c%c%s", 97 + int(rand() * 26), 97 + int(rand() * 26), 97 + int(rand() * 26), 97 + int(rand() * 26), substr("lmnopqrstuvw", 1, int(rand() * 12)))
  for (i = 0; i < 1500000; i++)
    printf "%d %s %.4f %s-%d\n", int(rand() * 1000000000), w[int(rand() * 300)], rand() * 1000, w[int(rand() * 300)], i % 977
}' >"$D/big.txt"

cat >"$T/wl/sort.sh" <<EOF
set -o pipefail
echo "sort \$(sort "$D/big.txt" | sha256sum)"
echo "sort-n \$(sort -n -S 64M --parallel=2 -T . "$D/big.txt" | sha256sum)"
echo "sort-k \$(sort -t ' ' -k2,2 -k3,3gr -S 16M -T . "$D/big.txt" | sha256sum)"
EOF

# 100k INSERT statements for sqlite3 (generated once, shared)
awk 'BEGIN {
  srand(99)
  print "CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL, pad BLOB);"
  print "BEGIN;"
  for (i = 1; i <= 100000; i++)
    printf "INSERT INTO t VALUES(%d, %d, %cn%d_%s%c, %.3f, zeroblob(%d));\n", i, int(rand() * 500), 39, int(rand() * 3000), substr("abcdefghijklmnopqrstuvwxyz", 1, 1 + int(rand() * 26)), 39, rand() * 1000, int(rand() * 300)
  print "COMMIT;"
}' >"$D/load.sql"

cat >"$T/wl/query.sql" <<'EOF'
.mode list
.separator |
CREATE INDEX t_grp ON t(grp, name);
CREATE INDEX t_name ON t(name);
ANALYZE;
SELECT 'rows', count(*), sum(grp), printf('%.3f', sum(val)), total(length(name)), sum(length(pad)) FROM t;
CREATE TABLE g AS SELECT grp, count(*) AS c, sum(val) AS s, group_concat(name, ',') AS names FROM t GROUP BY grp;
SELECT 'top', grp, c, printf('%.3f', s), length(names) FROM g ORDER BY s DESC, grp LIMIT 5;
SELECT 'names', name, count(*) FROM t GROUP BY name ORDER BY 3 DESC, 2 LIMIT 5;
SELECT 'join', count(*) FROM t JOIN g ON t.grp = g.grp WHERE t.val > g.s / g.c;
SELECT 'window', count(*), printf('%.3f', max(rs)) FROM (SELECT sum(val) OVER (PARTITION BY grp ORDER BY id) AS rs FROM t);
BEGIN;
UPDATE t SET name = upper(name) || '!' WHERE id % 3 = 0;
DELETE FROM t WHERE id % 7 = 0;
INSERT INTO t(grp, name, val, pad) SELECT grp + 1000, name || '~', val / 2, zeroblob(1000) FROM t WHERE id % 11 = 0;
COMMIT;
SELECT 'after', count(*), count(DISTINCT name), printf('%.3f', avg(val)), sum(length(pad)) FROM t;
SELECT 'like', count(*) FROM t WHERE name LIKE 'N1%!' ;
SELECT 'concat', length(group_concat(name, '')) FROM (SELECT name FROM t ORDER BY name DESC LIMIT 5000);
VACUUM;
PRAGMA integrity_check;
EOF

cat >"$T/wl/sqlite.sh" <<EOF
sqlite3 test.db <"$D/load.sql" || exit 1
sqlite3 test.db <"$T/wl/query.sql"
EOF

# ---------------------------------------------------------------- runner
passed=0 failed=0

# run_one RESULT_PREFIX use_preload(0/1) [VAR=VAL...] -- CMD...
run_one() {
  local pfx=$1 pre=$2; shift 2
  local -a envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  if [ "$pre" = 1 ] && [ "$LIB" != none ]; then envs+=("LD_PRELOAD=$LIB"); fi
  rm -rf "$pfx.wd"; mkdir -p "$pfx.wd"
  # (the outer 2>/dev/null hides bash's "Aborted"/"Segmentation fault" job
  # notice; the exit status below still records the signal)
  # Run in the background and `wait`, so INT/TERM traps fire immediately.
  { ( cd "$pfx.wd" && exec timeout -k 5 "$TIMEOUT" env "${envs[@]}" "$@" ) \
      >"$pfx.out" 2>"$pfx.err" </dev/null &
    CHILD=$!
    wait "$CHILD"; echo $? >"$pfx.rc"
    CHILD=; } 2>/dev/null
  rm -rf "$pfx.wd"
}

indent() { sed -e 's/^/      /' | head -n "${1:-12}"; }

# describe_rc RC -> " (timeout)" / " (SIGSEGV)" / ""
describe_rc() {
  case $1 in
    124) echo " (timed out after ${TIMEOUT}s)" ;;
    125|126|127) echo " (could not run the command)" ;;
    137) echo " (SIGKILL; timed out and ignored SIGTERM?)" ;;
    129|1[3-9][0-9]|2[0-5][0-9]) echo " (SIG$(kill -l $(($1 - 128)) 2>/dev/null))" ;;
  esac
}

# check NAME LABEL [VAR=VAL...] -- CMD...
# The plain (no preload, no extra env) result for NAME is computed once.
check() {
  local name=$1 label=$2; shift 2
  local -a extra=()
  while [ "$1" != -- ]; do extra+=("$1"); shift; done
  shift
  local P=$T/res/$name.plain Q=$T/res/$name.$(echo "$label" | tr -c 'A-Za-z0-9\n' _)
  [ -f "$P.rc" ] || run_one "$P" 0 -- "$@"
  run_one "$Q" 1 "${extra[@]}" -- "$@"
  local prc qrc why=()
  prc=$(cat "$P.rc") qrc=$(cat "$Q.rc")
  if [ "$prc" != 0 ] || [ ! -s "$P.out" ]; then
    why+=("plain run failed (exit $prc) -- environment/script problem")
  fi
  [ "$prc" = "$qrc" ] || why+=("exit status differs: plain=$prc$(describe_rc "$prc") [$label]=$qrc$(describe_rc "$qrc")")
  cmp -s "$P.out" "$Q.out" || why+=("stdout differs")
  grep -qi poolmalloc "$Q.err" && why+=("stderr mentions poolmalloc")
  if [ ${#why[@]} -eq 0 ]; then
    echo "ok   $name ($label)"
    passed=$((passed + 1))
    return
  fi
  echo "FAIL $name ($label)"
  failed=$((failed + 1))
  local w
  for w in "${why[@]}"; do echo "    - $w"; done
  if ! cmp -s "$P.out" "$Q.out"; then
    echo "    stdout diff (plain vs $label):"
    diff "$P.out" "$Q.out" | indent 14
  fi
  if [ -s "$Q.err" ]; then
    if grep -qi poolmalloc "$Q.err"; then
      echo "    stderr lines mentioning poolmalloc ($label):"
      grep -i poolmalloc "$Q.err" | indent 8
    fi
    echo "    stderr tail ($label):"
    tail -n 8 "$Q.err" | indent 8
  fi
  if [ "$prc" != 0 ] && [ -s "$P.err" ]; then
    echo "    stderr tail (plain):"
    tail -n 8 "$P.err" | indent 8
  fi
}

if [ "$LIB" = none ]; then
  echo "# real-programs: no preload (--system), validating determinism"
else
  echo "# real-programs: LD_PRELOAD=$LIB"
fi

start=$SECONDS
check python "$VARIANT"                     -- env PYTHONHASHSEED=0 "$PY" "$T/wl/python.py"
check python "$VARIANT, PYTHONMALLOC=malloc" PYTHONMALLOC=malloc -- env PYTHONHASHSEED=0 "$PY" "$T/wl/python.py"
check git    "$VARIANT" -- bash "$T/wl/git.sh"
check gcc    "$VARIANT" -- bash "$T/wl/gcc.sh"
check perl   "$VARIANT" -- bash "$T/wl/perl.sh"
check sort   "$VARIANT" -- bash "$T/wl/sort.sh"
check sqlite "$VARIANT" -- bash "$T/wl/sqlite.sh"

echo "# elapsed $((SECONDS - start))s (timeout ${TIMEOUT}s per run)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
