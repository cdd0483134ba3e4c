#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets in fuzz/ for a bounded time each, one after the other,
# niced, one fuzzing process at a time. See docs/fuzzing.md.
#
#   scripts/drills/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 600; TARGET defaults to all of gguf safetensors_config jsonl parquet
# toml_config sz_container. Environment:
#   FUZZ_SANITIZER  address (default) or none
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-rss_limit_mb=4096"
#
# Prints, per target, libFuzzer's final stats (executions, exec/s, peak RSS), the corpus size and
# the wall time, then a summary table (also written to fuzz/logs/summary.tsv). Exits 1 if any
# target crashed (panic, sanitizer report, OOM or timeout): the input is under
# fuzz/artifacts/TARGET/, the log under fuzz/logs/TARGET.log. Inputs slower than 10 s
# (slow-unit-*) are listed but do not fail the run.
set -euo pipefail

secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(gguf safetensors_config jsonl parquet toml_config sz_container)
fi
sanitizer=${FUZZ_SANITIZER:-address}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root/fuzz"

# cargo-fuzz passes nightly-only flags (-Zsanitizer=..., -Cpasses=sancov-module, ...); the
# toolchain here is stable, so allow them.
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p logs
echo "== building the fuzz targets (sanitizer: $sanitizer)"
nice -n 10 cargo fuzz build -s "$sanitizer"

stat() { # stat NAME LOG -> the last value of libFuzzer's `stat::NAME:` line
    { grep -a "^stat::$1:" "$2" || true; } | tail -1 | awk '{print $2}'
}

printf 'target\texecutions\texec_per_s\tpeak_rss_mb\tcorpus_files\tlimit_s\twall_s\tresult\n' \
    >logs/summary.tsv
failed=0
for t in "${targets[@]}"; do
    echo "== $t: fuzzing for ${secs}s"
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    if [ -f "dicts/$t.dict" ]; then
        dict=(-dict="dicts/$t.dict")
    fi
    marker=$(mktemp)
    rm -f fuzz-0.log
    start=$(date +%s)
    set +e
    # -workers=1 -jobs=1: one fuzzing process (libFuzzer then runs it as a child whose output goes
    # to fuzz-0.log); -timeout: an input taking longer counts as a crash (a hang).
    # shellcheck disable=SC2086
    nice -n 10 cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -workers=1 -jobs=1 -timeout=60 -print_final_stats=1 \
        "${dict[@]}" ${FUZZ_ARGS:-} >"logs/$t.cargo.log" 2>&1
    rc=$?
    set -e
    wall=$(($(date +%s) - start))
    log=logs/$t.log
    if [ -f fuzz-0.log ]; then
        mv fuzz-0.log "$log"
    else
        cp "logs/$t.cargo.log" "$log"
    fi
    # crash-*, oom-*, timeout-*, leak-*: failures; slow-unit-* (over 10 s): reported, not a failure
    new_artifacts=$(find "artifacts/$t" -type f -newer "$marker" ! -name 'slow-unit-*' | sort)
    slow_units=$(find "artifacts/$t" -type f -newer "$marker" -name 'slow-unit-*' | sort)
    rm -f "$marker"
    execs=$(stat number_of_executed_units "$log")
    eps=$(stat average_exec_per_sec "$log")
    rss=$(stat peak_rss_mb "$log")
    corpus=$(find "corpus/$t" -type f | wc -l)
    result=ok
    if [ "$rc" -ne 0 ] || [ -n "$new_artifacts" ] || grep -aq "ERROR: libFuzzer\|ERROR: AddressSanitizer" "$log"; then
        result=CRASH
        failed=1
    fi
    grep -a '^stat::' "$log" || true
    echo "$t: ${execs:-?} executions, ${eps:-?} exec/s, peak RSS ${rss:-?} MB, corpus $corpus files, ${wall}s wall: $result"
    for a in $slow_units; do echo "  slow input (over 10 s): fuzz/$a"; done
    if [ "$result" = CRASH ]; then
        grep -a -m1 -A2 -E "^thread .* panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer" "$log" || true
        for a in $new_artifacts; do echo "  input: fuzz/$a"; done
        echo "  log: fuzz/$log"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "${execs:-?}" "${eps:-?}" "${rss:-?}" \
        "$corpus" "$secs" "$wall" "$result" >>logs/summary.tsv
done

echo "== summary (fuzz/logs/summary.tsv)"
column -t -s $'\t' logs/summary.tsv
exit "$failed"
