#!/bin/sh
# Runs every libFuzzer harness of a build for SECONDS each (JOBS at a time) on a copy of its
# seed corpus, and fails when any of them reports a crash, a leak, a sanitizer finding or a
# hang (an input running over 30 s). Crashing inputs land in fuzz/crashes/<name>/.
# Usage: fuzz/run.sh BUILD_DIR [SECONDS] [JOBS] [NAMES...]
set -u
build=$1; secs=${2:-60}; jobs=${3:-1}
shift; [ $# -gt 0 ] && shift; [ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
names=$*
[ -n "$names" ] || names=$(cd "$root/fuzz" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//')
logs=$build/fuzz-logs
mkdir -p "$logs"
export OMP_NUM_THREADS=1
# ASan: fail on leaks too; UBSan findings already abort (-fno-sanitize-recover=all)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
one() {
    n=$1
    work=$build/fuzz-corpus/$n
    mkdir -p "$work" "$root/fuzz/crashes/$n"
    "$build/fuzz/fuzz_$n" -max_total_time="$secs" -timeout=30 -rss_limit_mb=2560 -malloc_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$root/fuzz/crashes/$n/" "$work" "$root/fuzz/corpus/$n" \
        > "$logs/$n.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$n.log" | tail -1)
    if [ $rc -eq 0 ]; then echo "fuzz_$n: ok, ${execs:-?} executions in ${secs} s"
    else echo "fuzz_$n: FAILED (exit $rc), ${execs:-?} executions; log $logs/$n.log:"; grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$logs/$n.log" | head -5
    fi
    return $rc
}
fail=0
if [ "$jobs" -le 1 ]; then
    for n in $names; do one "$n" || fail=1; done
else
    # JOBS harnesses side by side, each still for SECONDS
    set -- $names
    while [ $# -gt 0 ]; do
        pids=""; outs=""
        i=0
        while [ $i -lt "$jobs" ] && [ $# -gt 0 ]; do
            one "$1" > "$logs/$1.summary" & pids="$pids $!"; outs="$outs $1"; shift; i=$((i + 1))
        done
        for p in $pids; do wait "$p" || fail=1; done
        for n in $outs; do cat "$logs/$n.summary"; done
    done
fi
[ $fail -eq 0 ] && echo "fuzz: all harnesses clean" || echo "fuzz: FAILED (inputs in fuzz/crashes/)"
exit $fail
