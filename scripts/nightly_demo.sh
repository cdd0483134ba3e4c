#!/usr/bin/env bash
# The nightly-evaluation demonstration of issue #17 (docs/nightly-demo.md), end to end, with `eval` and
# `gate` (the `suite`/`history` commands will run configs/shakespeare-finetune.toml over the same
# checkpoints). Every artefact goes under $DEMO (default ~/.cache/surprisal/demo), never into the
# repository; finished steps are skipped on a rerun.
#
#   bash scripts/nightly_demo.sh            # everything
#   bash scripts/nightly_demo.sh finetune   # or one part: finetune | evals | gates | quant
#
# Env: SURPRISAL (binary; default: target/release/surprisal), PYTHON (reference venv: torch,
# transformers, gguf), DATASETS (default ../shared/datasets), MODEL (SmolLM2 Q4_1 GGUF), DEMO,
# LLAMA_BIN (llama.cpp build/bin with llama-quantize, llama-perplexity: scripts/build_llama_cpp.sh),
# THREADS (default 2), CHUNKS (checkpoint evals, default 8), QCHUNKS (quant evals, default 6).
set -euo pipefail
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
SURPRISAL="${SURPRISAL:-target/release/surprisal}"
PYTHON="${PYTHON:-$cache/venv-ref/bin/python}"
DATASETS="${DATASETS:-../shared/datasets}"
MODEL="${MODEL:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
DEMO="${DEMO:-$cache/demo}"
LLAMA_BIN="${LLAMA_BIN:-$cache/llama.cpp/build/bin}"
THREADS="${THREADS:-2}"
CHUNKS="${CHUNKS:-8}"
QCHUNKS="${QCHUNKS:-6}"
FT="$DEMO/shakespeare-ft"
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

steps() { ls -d "$FT"/checkpoint-* | sed 's/.*checkpoint-//' | sort -n; }

if [ "$what" = all ] || [ "$what" = finetune ]; then
  if [ -f "$FT/finetune.json" ]; then echo "skip finetune (done)"; else
    "$PYTHON" scripts/finetune_shakespeare.py --gguf "$MODEL" --data "$DATASETS/tinyshakespeare.txt" --out "$FT"
  fi
fi

if [ "$what" = all ] || [ "$what" = evals ]; then
  for s in $(steps); do
    run_eval "$FT/checkpoint-$s" "$SHAKES" "$RUNS/ft/shakespeare-heldout/checkpoint-$s" "$CHUNKS"
    run_eval "$FT/checkpoint-$s" "$WIKI" "$RUNS/ft/wikitext2-test/checkpoint-$s" "$CHUNKS"
  done
fi

if [ "$what" = all ] || [ "$what" = gates ]; then
  ss=($(steps)); first=${ss[0]}; last=${ss[-1]}; prev=${ss[-2]}; main_end=${ss[-2]}
  W="$RUNS/ft/wikitext2-test"; S="$RUNS/ft/shakespeare-heldout"
  gate wikitext-first-vs-last "$W/checkpoint-$first" "$W/checkpoint-$last"
  gate wikitext-step-$prev-vs-$last "$W/checkpoint-$prev" "$W/checkpoint-$last"
  gate shakespeare-step-$prev-vs-$last "$S/checkpoint-$prev" "$S/checkpoint-$last"
  gate shakespeare-first-vs-last "$S/checkpoint-$first" "$S/checkpoint-$last"
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
