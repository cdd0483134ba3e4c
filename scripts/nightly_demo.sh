#!/usr/bin/env bash
# The nightly-evaluation demonstration of issue #17 (docs/nightly-demo.md), end to end: the fine-tune
# (scripts/finetune_shakespeare.py), the suite configs/shakespeare-finetune.toml over its checkpoints,
# `history`, `report --history` and the gates; then the requantization (Q4_1 vs Q4_K_M, Q4_1 vs itself).
# Every artefact goes under $DEMO (default ~/.cache/surprisal/demo), never into the repository; finished
# steps are skipped on a rerun (the suite skips finished pairs and resumes interrupted ones).
#
#   bash scripts/nightly_demo.sh            # everything
#   bash scripts/nightly_demo.sh finetune   # or one part: finetune | suite | gates | quant
#
# Env: SURPRISAL (binary; default: target/release/surprisal), PYTHON (a Python with torch, transformers,
# accelerate, gguf), DATASETS (default ../shared/datasets), MODEL (SmolLM2 Q4_1 GGUF), DEMO,
# LLAMA_BIN (llama.cpp build/bin with llama-quantize, llama-perplexity: scripts/build_llama_cpp.sh),
# THREADS (default 2), TOL (the suite gate's --max-delta-nll-nats, default 0.02: sized to the suite's
# 4,095 tokens per pair, see docs/nightly-demo.md), QCHUNKS (quant evals, default 6).
set -euo pipefail
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
SURPRISAL="${SURPRISAL:-target/release/surprisal}"
PYTHON="${PYTHON:-python3}"
DATASETS="${DATASETS:-../shared/datasets}"
MODEL="${MODEL:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
DEMO="${DEMO:-$cache/demo}"
LLAMA_BIN="${LLAMA_BIN:-$cache/llama.cpp/build/bin}"
THREADS="${THREADS:-2}"
TOL="${TOL:-0.02}"
QCHUNKS="${QCHUNKS:-6}"
FT="$DEMO/shakespeare-ft2"
RESULTS="$DEMO/results-ft"
RUNS="$DEMO/runs"
WIKI="$DATASETS/wikitext-2-raw-v1.test.raw"
SHAKES="$FT/heldout-shakespeare.txt"
what="${1:-all}"

run_eval() { # MODEL DATA OUT CHUNKS [extra...]
  local m="$1" d="$2" o="$3" c="$4"; shift 4
  if [ -f "$o/summary.json" ]; then echo "skip $o (done)"; return; fi
  local resume=(); [ -d "$o" ] && resume=(--resume)
  "$SURPRISAL" eval --model "$m" --data "$d" --protocol chunks --window 512 --max-chunks "$c" \
    --batch-size 1 --threads "$THREADS" --per-token parquet --quiet --out "$o" "${resume[@]}" "$@"
  echo "done $o"
}

gate() { # NAME BASELINE CANDIDATE [extra...]
  local n="$1" b="$2" c="$3"; shift 3
  mkdir -p "$RUNS/gates"
  set +e
  "$SURPRISAL" gate --baseline "$b" --candidate "$c" --markdown "$RUNS/gates/$n.md" \
    --junit "$RUNS/gates/$n.xml" "$@" | tee "$RUNS/gates/$n.txt"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "$rc" > "$RUNS/gates/$n.rc"
  echo "gate $n: exit $rc"
}

if [ "$what" = all ] || [ "$what" = finetune ]; then
  if [ -f "$FT/finetune.json" ]; then echo "skip finetune (done)"; else
    "$PYTHON" scripts/finetune_shakespeare.py --gguf "$MODEL" --data "$DATASETS/tinyshakespeare.txt" --out "$FT"
  fi
fi

suite_data=(--data "shakespeare-heldout=$SHAKES" --data "wikitext2-test=$WIKI")

if [ "$what" = all ] || [ "$what" = suite ]; then
  "$SURPRISAL" suite run configs/shakespeare-finetune.toml --results "$RESULTS" "${suite_data[@]}" --threads "$THREADS"
  "$SURPRISAL" history "$RESULTS" | tee "$DEMO/history.txt"
fi

if [ "$what" = all ] || [ "$what" = gates ]; then
  # every checkpoint against the previous one (recorded in results.db), then the page with the verdicts
  mkdir -p "$DEMO/gates"
  set +e
  "$SURPRISAL" suite run configs/shakespeare-finetune.toml --results "$RESULTS" "${suite_data[@]}" \
    --quiet --gate previous --max-delta-nll-nats "$TOL" \
    --markdown "$DEMO/gates/suite-previous.md" --junit "$DEMO/gates/suite-previous.xml" \
    | tee "$DEMO/gates/suite-previous.txt"
  rc=${PIPESTATUS[0]}
  set -e
  echo "suite --gate previous (tolerance $TOL): exit $rc (1 = a regression was found)"
  "$SURPRISAL" report --history "$RESULTS" -o "$DEMO/history.html"
fi

if [ "$what" = all ] || [ "$what" = quant ]; then
  QKM="$DEMO/models/SmolLM2-135M-Instruct.Q4_1-requant-Q4_K_M.gguf"
  if [ ! -f "$QKM" ]; then
    mkdir -p "$DEMO/models"
    "$LLAMA_BIN/llama-quantize" --allow-requantize "$MODEL" "$QKM" Q4_K_M
  fi
  Q="$RUNS/quant"
  run_eval "$MODEL" "$WIKI" "$Q/wikitext-c512x$QCHUNKS-Q4_1" "$QCHUNKS"
  # A second, independent run of the same model and data: the "vs itself" gate compares two runs.
  run_eval "$MODEL" "$WIKI" "$Q/wikitext-c512x$QCHUNKS-Q4_1-rerun" "$QCHUNKS"
  run_eval "$QKM" "$WIKI" "$Q/wikitext-c512x$QCHUNKS-Q4_K_M" "$QCHUNKS"
  gate quant-Q4_K_M-vs-Q4_1 "$Q/wikitext-c512x$QCHUNKS-Q4_1" "$Q/wikitext-c512x$QCHUNKS-Q4_K_M"
  gate quant-Q4_1-vs-itself "$Q/wikitext-c512x$QCHUNKS-Q4_1" "$Q/wikitext-c512x$QCHUNKS-Q4_1-rerun"
  for f in "$MODEL" "$QKM"; do
    echo "== llama-perplexity $(basename "$f")"
    "$LLAMA_BIN/llama-perplexity" -m "$f" -f "$WIKI" -c 512 -b 512 --chunks "$QCHUNKS" -fa off -t "$THREADS" 2>&1 \
      | grep -E "^\[|Final estimate" | tee "$Q/llama-perplexity-$(basename "$f" .gguf).txt"
  done
fi
