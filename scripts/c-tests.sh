#!/usr/bin/env bash
# Builds and runs the C/C++ test suite in c-tests/ against the allocator.
#
# usage: scripts/c-tests.sh [LIB | none | --system]
#
#   LIB        path of the shared library to test (default: target/release/libpoolmalloc.so
#              under the repository root; a relative path is taken from the current directory).
#              The environment variable LIB is used when no argument is given.
#              Every test runs twice: under LD_PRELOAD=LIB ("preload") and linked directly
#              against LIB with -L<dir> -l<name> -Wl,-rpath,<dir> ("direct"), both with
#              POOLMALLOC_TEST_STRICT=1 so the poolmalloc-specific expectations are asserted.
#   none, --system
#              run the plain builds against glibc's malloc (no preload, no direct link), to
#              validate the tests themselves; strict-only expectations are not asserted.
#
# Binaries go to c-tests/build/ (gitignored), logs to c-tests/build/logs/.  Prints one line per
# run ("ok   name (mode)" / "FAIL name (mode)", failures followed by the end of their output) and
# finally "N passed, M failed"; exits 1 if anything failed, 2 on a usage/setup error.
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CT="$ROOT/c-tests"
BUILD="$CT/build"
LOGS="$BUILD/logs"
TIMEOUT=120
CC="${CC:-gcc}"
CXX="${CXX:-g++}"
CFLAGS="-O2 -g -Wall -Wextra -Werror -pthread"

section_field() { # lib column section... -> that column of readelf's section table, "0x..." each
    local lib="$1" column="$2"
    shift 2
    for sec in "$@"; do
        readelf -SW "$lib" | sed 's/^ *\[ *[0-9]*\]//' | awk -v s="$sec" -v c="$column" '$1 == s { print "0x" $c }'
    done | tr '\n' ' ' | sed 's/ $//'
}
section_offsets() { section_field "$1" 4 "${@:2}"; }
section_addresses() { section_field "$1" 3 "${@:2}"; }

arg="${1:-${LIB:-}}"
case "$arg" in
    -h | --help)
        sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    none | --system)
        SYSTEM=1
        LIBPATH=""
        ;;
    "")
        SYSTEM=0
        LIBPATH="$ROOT/target/release/libpoolmalloc.so"
        ;;
    *)
        SYSTEM=0
        LIBPATH="$arg"
        ;;
esac

if [ "$SYSTEM" = 0 ]; then
    if [ ! -f "$LIBPATH" ]; then
        echo "c-tests: library $LIBPATH not found (build it with cargo build --release, or pass" \
            "--system to test against glibc)" >&2
        exit 2
    fi
    LIBDIR="$(cd "$(dirname "$LIBPATH")" && pwd)"
    LIBFILE="$(basename "$LIBPATH")"
    LIBPATH="$LIBDIR/$LIBFILE"
    if ! nm -D --defined-only "$LIBPATH" 2>/dev/null | grep -qE ' T malloc$'; then
        echo "c-tests: $LIBPATH does not export malloc" >&2
        exit 2
    fi
    # -l<name> needs lib<name>.so; any other file name is linked by path.
    case "$LIBFILE" in
        lib*.so) LINKLIB="-L$LIBDIR -l${LIBFILE#lib}" && LINKLIB="${LINKLIB%.so}" ;;
        *) LINKLIB="$LIBPATH" ;;
    esac
    DIRECT_LDFLAGS="-Wl,--no-as-needed $LINKLIB -Wl,-rpath,$LIBDIR"
    # File offsets of the rarely run code and of the unwind tables (code_residency.c).
    COLD_OFFSETS=$(section_offsets "$LIBPATH" .text_rarely_run .eh_frame_hdr)
    # File offset of the code only threads and aligned allocations run (code_residency.c).
    WARM_OFFSET=$(section_offsets "$LIBPATH" .text_warm)
    MODES="preload direct"
else
    MODES="system"
fi

mkdir -p "$BUILD" "$LOGS"

# name:source[:args]  (one run per line, per mode)
RUNS="
api:api.c
stress_random:stress_random.c
stress_threads-2:stress_threads.c:2
stress_threads-8:stress_threads.c:8
stress_threads-32:stress_threads.c:32
producer_consumer:producer_consumer.c
many_threads:many_threads.c
fork_under_load:fork_under_load.c
rss_release:rss_release.c
rss_peak:rss_peak.c
rss_header_blocks:rss_header_blocks.c
invalid_free:invalid_free.c
invariants:invariants.c
lifecycle:lifecycle.c
code_residency:code_residency.c
cxx:cxx.cc
"

passed=0
failed=0

say_fail() { # name mode reason logfile
    echo "FAIL $1 ($2)"
    echo "    | $3"
    if [ -s "$4" ]; then
        tail -n 25 "$4" | sed 's/^/    | /'
    fi
    failed=$((failed + 1))
}

# Build: one plain binary per source (for preload/system) and one linked to LIB (direct).
declare -A BUILT
build() { # source variant -> sets $bin, returns non-zero on failure (log in $blog)
    local src="$1" variant="$2" base compiler extra
    base="${src%.*}"
    case "$src" in
        *.cc) compiler="$CXX" ;;
        *) compiler="$CC" ;;
    esac
    if [ "$variant" = direct ]; then
        bin="$BUILD/$base.direct"
        extra="-DPM_DIRECT $DIRECT_LDFLAGS"
    else
        bin="$BUILD/$base"
        extra=""
    fi
    blog="$LOGS/build-$base.$variant.log"
    local key="$src/$variant"
    if [ -z "${BUILT[$key]:-}" ]; then
        # shellcheck disable=SC2086
        if (cd "$CT" && $compiler $CFLAGS -o "$bin" "$src" $extra -ldl) >"$blog" 2>&1; then
            BUILT[$key]=ok
        else
            BUILT[$key]=fail
        fi
    fi
    [ "${BUILT[$key]}" = ok ]
}

for mode in $MODES; do
    for run in $RUNS; do
        IFS=: read -r name src args <<<"$run"
        variant=plain
        [ "$mode" = direct ] && variant=direct
        if ! build "$src" "$variant"; then
            say_fail "$name" "$mode" "build failed: $CC/$CXX $src ($variant)" "$blog"
            continue
        fi
        log="$LOGS/$name.$mode.log"
        # shellcheck disable=SC2086
        case "$mode" in
            system)
                env -u LD_PRELOAD -u POOLMALLOC_TEST_STRICT -u POOLMALLOC_TEST_LIB \
                    POOLMALLOC_TEST_MODE=system \
                    timeout -k 10 "$TIMEOUT" "$bin" $args >"$log" 2>&1
                ;;
            preload)
                timeout -k 10 "$TIMEOUT" env LD_PRELOAD="$LIBPATH" POOLMALLOC_TEST_STRICT=1 \
                    POOLMALLOC_TEST_LIB="$LIBPATH" POOLMALLOC_TEST_MODE=preload \
                    POOLMALLOC_TEST_COLD_OFFSETS="${COLD_OFFSETS:-}" \
                    POOLMALLOC_TEST_WARM_OFFSET="${WARM_OFFSET:-}" \
                    "$bin" $args >"$log" 2>&1
                ;;
            direct)
                env -u LD_PRELOAD POOLMALLOC_TEST_STRICT=1 POOLMALLOC_TEST_LIB="$LIBPATH" \
                    POOLMALLOC_TEST_MODE=direct POOLMALLOC_TEST_COLD_OFFSETS="${COLD_OFFSETS:-}" \
                    POOLMALLOC_TEST_WARM_OFFSET="${WARM_OFFSET:-}" \
                    timeout -k 10 "$TIMEOUT" "$bin" $args >"$log" 2>&1
                ;;
        esac
        rc=$?
        if [ "$rc" = 0 ]; then
            echo "ok   $name ($mode)"
            passed=$((passed + 1))
        else
            case "$rc" in
                124) why="timed out after ${TIMEOUT}s" ;;
                137) why="killed by SIGKILL (timeout -k after ${TIMEOUT}s, or the OOM killer)" ;;
                *) if [ "$rc" -gt 128 ]; then
                    why="killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null))"
                else
                    why="exit status $rc"
                fi ;;
            esac
            say_fail "$name" "$mode" "$why; log: ${log#"$ROOT"/}" "$log"
        fi
    done
done

# The library's own file pages: every process that loads it keeps them resident, and the kernel
# maps file pages up to 64 KiB around each fault (within the mapping), so a segment with one
# function that runs is resident nearly whole. build.rs packs the relative relocations
# (DT_RELR, two pages less of read-only data), starts the code on a page of its own, and gives
# the rarely run code and the unwind tables segments of their own; this checks that all of it
# still holds. code_residency.c checks the effect in a process.
layout_problem() { # lib -> prints what is wrong, if anything
    local relative code_offsets offsets starts offset start found cold_text hot unwind pages code_pages
    readelf -dW "$1" | grep -q '(RELR)' || echo "no DT_RELR: relative relocations not packed"
    relative=$(readelf -rW "$1" | grep -c '_RELATIVE')
    [ "$relative" = 0 ] || echo "$relative relative relocations left unpacked in .rela.dyn"
    code_offsets=$(readelf -lW "$1" | awk '$1 == "LOAD" && $7 == "R" && $8 == "E" { print $2 }')
    for offset in $code_offsets; do
        case "$offset" in
            *000) ;;
            *) echo "code segment at file offset '$offset', not on a page of its own" ;;
        esac
    done
    offsets=$(section_offsets "$1" .text_rarely_run .eh_frame_hdr .text_warm .rodata_rarely_read)
    [ "$(echo "$offsets" | wc -w)" = 4 ] ||
        echo "sections .text_rarely_run, .eh_frame_hdr, .text_warm, .rodata_rarely_read: '$offsets'"
    starts=$(readelf -lW "$1" | awk '$1 == "LOAD" { print $2 }')
    for offset in $offsets; do
        found=0
        for start in $starts; do
            [ $((start)) = $((offset)) ] && found=1
        done
        [ "$found" = 1 ] || echo "no segment starts at $offset (.text_rarely_run, .eh_frame_hdr, .text_warm, .rodata_rarely_read: $offsets)"
    done
    # The code only threads and aligned allocations run is one page: a program that runs it
    # maps that page instead of the ninth page the code that always runs would take.
    warm_size=$(section_field "$1" 5 .text_warm)
    [ -n "$warm_size" ] && [ $((warm_size)) -le "$(getconf PAGESIZE)" ] ||
        echo "section .text_warm is '$warm_size' bytes, more than a page"
    # The code every process runs is eight pages (slow paths call their shared helpers, the
    # statistics gauges and the lock's wait loop rather than inlining a copy at each site).
    hot=$(section_addresses "$1" .text)
    code_pages=""
    while read -r vaddr memsz; do
        [ $((vaddr)) -le $((hot)) ] && [ $((hot)) -lt $((vaddr + memsz)) ] &&
            code_pages=$(((memsz + $(getconf PAGESIZE) - 1) / $(getconf PAGESIZE)))
    done < <(readelf -lW "$1" | awk '$1 == "LOAD" && $7 == "R" && $8 == "E" { print $3, $6 }')
    [ -n "$code_pages" ] && [ "$code_pages" -le 8 ] ||
        echo "the segment of .text spans '$code_pages' pages, more than 8"
    # The text only the report reads lies in the unwind tables' segment, and core's panic
    # code in the rarely run one: not in the pages every process maps.
    cold_text=$(section_addresses "$1" .rodata_rarely_read)
    unwind=$(section_addresses "$1" .eh_frame_hdr)
    if [ -z "$cold_text" ] || [ $((cold_text)) -lt $((unwind)) ] || [ $((cold_text)) -gt $((hot)) ]; then
        echo "section .rodata_rarely_read at '$cold_text', not after .eh_frame_hdr ($unwind) and before .text ($hot)"
    fi
    nm "$1" | awk '$3 ~ /4core9panicking/ { print $1, $3 }' | while read -r address name; do
        [ $((0x$address)) -lt $((hot)) ] || echo "$name in .text"
    done
    # Every process dirties the writable data's pages (relocations, statics): one page, beside
    # the data that is read-only once relocated (RELRO), which holds the sentinel heaps.
    pages=$(writable_pages "$1")
    [ "$pages" = 1 ] || echo "the writable data past RELRO spans $pages pages, not 1"
}

# Pages spanned by the part of the writable segments that stays writable after relocation.
writable_pages() { # lib -> count
    local type vaddr memsz flags s e relro_end=0 lo=-1 hi=0 page
    page=$(getconf PAGESIZE)
    while read -r type _ vaddr _ _ memsz flags _; do
        [ "$type" = GNU_RELRO ] && relro_end=$((vaddr + memsz))
    done < <(readelf -lW "$1")
    while read -r type _ vaddr _ _ memsz flags _; do
        [ "$type" = LOAD ] && [ "$flags" = RW ] || continue
        s=$((vaddr))
        e=$((vaddr + memsz))
        [ "$e" -le "$relro_end" ] && continue
        [ "$s" -lt "$relro_end" ] && s=$relro_end
        if [ "$lo" -lt 0 ] || [ "$s" -lt "$lo" ]; then lo=$s; fi
        [ "$e" -gt "$hi" ] && hi=$e
    done < <(readelf -lW "$1")
    echo $(((hi + page - 1) / page - lo / page))
}
if [ "$SYSTEM" = 0 ]; then
    problems=$(layout_problem "$LIBPATH")
    if [ -z "$problems" ]; then
        echo "ok   library layout"
        passed=$((passed + 1))
    else
        echo "FAIL library layout"
        echo "$problems" | sed 's/^/    | /'
        failed=$((failed + 1))
    fi
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
