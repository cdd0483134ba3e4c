#!/usr/bin/env bash
# kill -9 drill for resumable runs.
#
#   scripts/drills/kill_resume.sh [N] [MODEL] [DATA]
#
# 1. Runs an uninterrupted `surprisal eval --out A`.
# 2. N times: starts the same eval with `--out B --resume` in the background and kill -9's it after a
#    random delay (anywhere from model loading to the last window).
# 3. Runs `--out B --resume` to completion and compares B with A: same tokens_scored, sum_nll_nats equal
#    to 1e-12 relative, byte-identical per-token rows file. Exits 1 on any mismatch.
#
# Defaults: N=5, MODEL = the tiny llama fixture, DATA = crates/cli/tests/fixtures/kill_resume.txt.
# Environment: SURPRISAL_BIN (default target/release/surprisal, built if missing), KILL_RESUME_ARGS
# (extra eval flags, default "--window 128 --stride 64 --batch-size 2"), KEEP=1 keeps the work dir.
# Checkpoints are forced after every batch (hidden flag --checkpoint-seconds 0) so kills land between,
# during and right after checkpoint writes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
n="${1:-5}"
model="${2:-$root/crates/models/tests/fixtures/llama}"
data="${3:-$root/crates/cli/tests/fixtures/kill_resume.txt}"
bin="${SURPRISAL_BIN:-$root/target/release/surprisal}"
read -r -a extra <<<"${KILL_RESUME_ARGS:---window 128 --stride 64 --batch-size 2}"

if ! [[ "$n" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 [N] [MODEL] [DATA]" >&2
    exit 2
fi
if [[ ! -x "$bin" ]]; then
    (cd "$root" && cargo build --release -q -p surprisal-cli)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kill_resume.XXXXXX")"
cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# `exec`: a backgrounded function runs in a subshell; exec makes $! the surprisal process itself, so
# kill -9 hits it and not a wrapper shell that would leave it running on.
eval_cmd() { # eval_cmd OUT [flags...]
    local out="$1"
    shift
    exec "$bin" eval --model "$model" --data "$data" --out "$out" --quiet --checkpoint-seconds 0 \
        "${extra[@]}" "$@"
}

now_ms() { date +%s%3N; }

# ---- 1. reference run ----
t0=$(now_ms)
(eval_cmd "$work/A") 2>"$work/A.stderr" || {
    echo "reference run failed:" >&2
    cat "$work/A.stderr" >&2
    exit 1
}
dur_ms=$(($(now_ms) - t0))
((dur_ms > 0)) || dur_ms=1
echo "reference run: ${dur_ms} ms"

# ---- 2. N kill -9's ----
killed=0
finished_early=0
for i in $(seq 1 "$n"); do
    # a delay in [0, 1.5 * duration / N): the N kills together usually land before the run could
    # finish, anywhere from model loading to the last windows
    delay_ms=$(((RANDOM * 32768 + RANDOM) % (dur_ms * 3 / (2 * n) + 1)))
    eval_cmd "$work/B" --resume 2>>"$work/B.stderr" &
    pid=$!
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    if kill -9 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        killed=$((killed + 1))
        echo "kill $i: after ${delay_ms} ms"
    else
        if wait "$pid"; then
            finished_early=$((finished_early + 1))
            echo "kill $i: run finished before ${delay_ms} ms"
        else
            echo "kill $i: the resumed run failed before it was killed:" >&2
            cat "$work/B.stderr" >&2
            exit 1
        fi
    fi
done

# ---- 3. finish and compare ----
(eval_cmd "$work/B" --resume) 2>>"$work/B.stderr" || {
    echo "final resumed run failed:" >&2
    cat "$work/B.stderr" >&2
    exit 1
}

# top-level number of summary.json (written pretty-printed, two-space indent); no jq needed
field() { sed -n "s/^  \"$2\": \([^,]*\),\{0,1\}\$/\1/p" "$1/summary.json"; }
fail=0
ta=$(field "$work/A" tokens_scored)
tb=$(field "$work/B" tokens_scored)
na=$(field "$work/A" sum_nll_nats)
nb=$(field "$work/B" sum_nll_nats)
if [[ "$ta" != "$tb" ]]; then
    echo "MISMATCH tokens_scored: uninterrupted $ta, resumed $tb" >&2
    fail=1
fi
if ! awk -v a="$na" -v b="$nb" 'BEGIN { d = a - b; if (d < 0) d = -d; m = (a < 0 ? -a : a); exit !(d <= 1e-12 * m) }'; then
    echo "MISMATCH sum_nll_nats: uninterrupted $na, resumed $nb" >&2
    fail=1
fi
rows=0
for f in "$work"/A/tokens.*; do
    [[ -f "$f" ]] || continue
    rows=1
    name="$(basename "$f")"
    if ! cmp -s "$f" "$work/B/$name"; then
        echo "MISMATCH $name differs between the uninterrupted and the resumed run" >&2
        fail=1
    fi
done
if ((rows == 0)) && [[ " ${extra[*]} " != *" --per-token none "* ]]; then
    echo "MISMATCH: no tokens.* rows file in $work/A" >&2
    fail=1
fi
if [[ -e "$work/B/tokens.parts" ]]; then
    echo "MISMATCH: staging dir tokens.parts left behind in the resumed run" >&2
    fail=1
fi

echo "kills: $killed, finished before the kill: $finished_early; tokens_scored $ta/$tb; sum_nll_nats $na/$nb"
if ((fail)); then
    KEEP=1
    exit 1
fi
echo "OK: the resumed run matches the uninterrupted one"
