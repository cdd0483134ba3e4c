#!/usr/bin/env bash
# Where does an eval spend its time? perf (DWARF call graphs) on `surprisal eval` of SmolLM2 Q4_1, chunks
# protocol on WikiText-2 test; prints the hottest functions (self time) and the share of all samples
# spent inside the per-row metrics (inclusive time of surprisal_metrics' token_stats / pair_stats /
# log_mass, which do log-softmax, NLL, entropy, varentropy, rank and KL on each logit row).
# Usage: bash scripts/bench/profile.sh [CHUNKS=4] [extra surprisal flags, e.g. --dequantize]
# Needs: perf, target/release/surprisal (built with debug line tables: the release profile has them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(dirname "$(dirname "$here")")"
chunks="${1:-4}"; shift || true
model="$(bash "$repo/scripts/fetch_smollm2.sh")"
data="${WIKITEXT:-$repo/../shared/datasets/wikitext-2-raw-v1.test.raw}"
tmp="${PROFILE_DIR:-$(mktemp -d)}"; [ -n "${PROFILE_DIR:-}" ] || trap 'rm -rf "$tmp"' EXIT
perf record -q -F 299 --call-graph dwarf,16384 -o "$tmp/perf.data" \
  "$repo/target/release/surprisal" eval --model "$model" --data "$data" --protocol chunks --window 512 \
  --max-chunks "$chunks" --batch-size 4 --threads 2 --quiet "$@" >&2
echo "== hottest functions (self time) =="
perf report -i "$tmp/perf.data" --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -15 || true
echo "== per-row metrics (inclusive time, % of all samples) =="
perf report -i "$tmp/perf.data" --children --sort sym --stdio 2>/dev/null \
  | grep -E '^ +[0-9].*\] surprisal_metrics::(row::(token_stats|pair_stats)|mass::log_mass)[^ ]*$' \
  | awk '{print; gsub("%","",$1); s+=$1} END {printf "metrics total: %.2f %% of samples\n", s}' || true
