#!/usr/bin/env bash
# Determinism drill on a real model (the CI version on a fixture is crates/cli/tests/determinism.rs):
#  (1) the same command twice -> summary.json numbers byte-identical (timestamps and durations aside);
#  (2) --batch-size 1 vs 8 and (3) --threads 1 vs 2 -> mean_nll_nats within 1e-5 relative.
# Usage: bash scripts/drills/determinism.sh [MODEL (default: SmolLM2 Q4_1 GGUF)] [DATA (default datasets/sample.txt)]
#        extra flags via DETERMINISM_ARGS (default "--window 256 --stride 128")
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(dirname "$(dirname "$here")")"
model="${1:-$(bash "$repo/scripts/fetch_smollm2.sh")}"
data="${2:-$repo/datasets/sample.txt}"
read -r -a extra <<<"${DETERMINISM_ARGS:---window 256 --stride 128}"
bin="$repo/target/release/surprisal"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
run() { # name batch threads
  "$bin" eval --model "$model" --data "$data" "${extra[@]}" --batch-size "$2" --threads "$3" \
    --out "$tmp/$1" --per-token none --quiet
}
run a 1 2; run b 1 2; run c 8 2; run d 1 1
python3 - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
TIME = {"tokens_per_second", "elapsed_seconds", "started_at", "finished_at"}
def load(n):
    s = json.load(open(f"{d}/{n}/summary.json"))
    return s, {k: v for k, v in s.items() if k not in TIME and k != "protocol"}
(a, na), (b, nb), (c, _), (e, _) = load("a"), load("b"), load("c"), load("d")
same = json.dumps(na, sort_keys=True) == json.dumps(nb, sort_keys=True)
print(f"same command twice: summary numbers byte-identical: {same} (tokens_scored {a['tokens_scored']})")
ok = same
for name, o in (("batch 1 vs 8", c), ("threads 2 vs 1", e)):
    rel = abs(o["mean_nll_nats"] / a["mean_nll_nats"] - 1)
    print(f"{name}: mean_nll_nats {a['mean_nll_nats']!r} vs {o['mean_nll_nats']!r}, rel diff {rel:.3e} "
          f"(limit 1e-5), tokens {o['tokens_scored']}")
    ok &= rel <= 1e-5 and o["tokens_scored"] == a["tokens_scored"]
sys.exit(0 if ok else 1)
PY
