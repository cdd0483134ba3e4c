#!/usr/bin/env bash
# One command per step of the GPU session of issue #7; docs/gpu-runbook.md says which `run` call carries
# what and in which order.
#
#   here, on the development machine (no GPU):
#     prepare   .gpu/run/ = the CUDA binary (scripts/gpu/build_cuda_binary.sh, built if .gpu/bin has none) +
#               WikiText-2 test; .gpu/smol-a/, .gpu/smol-b/ = the two halves of SmolLM2's Q4_1 GGUF (98 MB,
#               more than one call can carry); checks each call's carry against the 64 MiB limit
#     selftest  runs smoke, bench, smol-a and smol-b below on this CPU, with the CPU binary
#               ($SURPRISAL_BIN, default target/release/surprisal) packed the way prepare packs the CUDA
#               one, tiny shapes, in a scratch folder: the test of this script and the Python it calls
#
#   on the GPU machine (each copies its logs and results to $OUT):
#     smoke     environment facts; fixture parity on the GPU (f32, bf16); a 1B-shaped bench (1 repeat)
#     bench     the 8B-shaped throughput run (scripts/gpu/bench_gpu.py, 3 repeats, ends within ~9 min)
#     smol-a    keeps the first GGUF half in /tmp/gpu (the machine must stay warm until smol-b)
#     smol-b    joins the halves, checks the sha256, SmolLM2 parity GPU vs CPU (scripts/gpu/gpu_parity.py)
#
# Every GPU step unpacks .gpu/run/surprisal-cuda.xz to /tmp/gpu/surprisal when that is not there yet.
# Knobs (environment): DEVICE (cuda:0), CHUNKS (128), BATCH (4), DEADLINE (520 s), EXTRA (more
# bench_gpu.py arguments; later ones win), GPU_DIR (.gpu), STASH (/tmp/gpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
step=${1:?usage: bash scripts/gpu/gpu_session.sh prepare|selftest|smoke|bench|smol-a|smol-b}
gguf_name=SmolLM2-135M-Instruct.Q4_1.gguf
wikitext=wikitext-2-raw-v1.test.raw
G=${GPU_DIR:-.gpu}
S=${STASH:-/tmp/gpu}
device=${DEVICE:-cuda:0}
read -r -a extra <<<"${EXTRA:-}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out" "$S"

unpack() {
  if [ ! -x "$S/surprisal" ]; then
    [ -f "$G/run/surprisal-cuda.xz" ] || { echo "no $S/surprisal, and $G/run was not carried" >&2; exit 1; }
    (cd "$G/run" && sha256sum -c surprisal-cuda.xz.sha256 >&2)
    xz -dc "$G/run/surprisal-cuda.xz" >"$S/surprisal.part"
    chmod +x "$S/surprisal.part"
    mv "$S/surprisal.part" "$S/surprisal"
  fi
  export SURPRISAL_BIN=$S/surprisal
  if [ -f "$G/run/$wikitext" ]; then export WIKITEXT=$PWD/$G/run/$wikitext; fi
}

facts() {
  echo "== $(date -u '+%F %T') $(uname -srm); $(ldd --version | head -n 1)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  python3 -c 'import sys, torch, transformers; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))' || true
  df -h /tmp /dev/shm | tail -n 2 || true
  echo "nproc $(nproc); memory: $(free -g | awk '/Mem:/ {print $2 " GiB, " $7 " GiB available"}')"
  echo "cargo: $(command -v cargo || echo none); nvcc: $(command -v nvcc || echo none) $(nvcc --version 2>/dev/null | tail -n 1)"
  echo "binary: $SURPRISAL_BIN ($("$SURPRISAL_BIN" --version))"
  python3 - <<'PY' || true
import os, subprocess, sys
sys.path.insert(0, "scripts")
from bench_gpu import binary_env
env = binary_env(os.environ["SURPRISAL_BIN"], True)
print("LD_LIBRARY_PATH", env.get("LD_LIBRARY_PATH", ""))
print(subprocess.run(["ldd", os.environ["SURPRISAL_BIN"]], env=env, capture_output=True, text=True).stdout)
PY
}

case "$step" in
prepare)
  mkdir -p "$G/run" "$G/smol-a" "$G/smol-b"
  if [ ! -f "$G/bin/surprisal-cuda.xz" ]; then bash scripts/gpu/build_cuda_binary.sh; fi
  install -m 644 "$G/bin/surprisal-cuda.xz" "$G/bin/surprisal-cuda.xz.sha256" "$G/run/"
  install -m 644 "${WIKITEXT:-../shared/datasets/$wikitext}" "$G/run/$wikitext"
  gguf=${SMOLLM2_GGUF:-$(bash scripts/fetch_smollm2.sh)}
  half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
  rm -f "$G"/smol-a/* "$G"/smol-b/*
  head -c "$half" "$gguf" >"$G/smol-a/part"
  tail -c +"$((half + 1))" "$gguf" >"$G/smol-b/part"
  sha256sum "$gguf" | awk -v n=$gguf_name '{print $1 "  " n}' >"$G/smol-b/$gguf_name.sha256"
  tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -n 1 | cut -f 1)
  for c in run smol-a smol-b; do
    n=$(du -sb "$G/$c" | cut -f 1)
    echo "carry $G/$c: $((n >> 20)) MiB + working tree $((tree >> 20)) MiB = $(((n + tree) >> 20)) MiB (limit 64)"
    [ $((n + tree)) -lt $((64 << 20)) ] || { echo "  over the limit" >&2; exit 1; }
  done
  n=$(du -scb "$G/run" "$G/smol-a" | tail -n 1 | cut -f 1)
  if [ $((n + tree)) -lt $((64 << 20)) ]; then
    echo "carry $G/run + $G/smol-a: $(((n + tree) >> 20)) MiB: fits; carry both in the smol-a call"
  else
    echo "carry $G/run + $G/smol-a: $(((n + tree) >> 20)) MiB: over 64; the smol-a call carries $G/smol-a alone"
  fi
  ;;
selftest)
  bin=${SURPRISAL_BIN:-$PWD/target/release/surprisal}
  [ -x "$bin" ] || { echo "$bin missing (set SURPRISAL_BIN)" >&2; exit 1; }
  tmp=$(mktemp -d)
  mkdir -p "$tmp/g/bin"
  xz -T1 -0 -c "$bin" >"$tmp/g/bin/surprisal-cuda.xz"
  (cd "$tmp/g/bin" && sha256sum surprisal-cuda.xz >surprisal-cuda.xz.sha256)
  cp docs/benchmarks-gpu.md "$tmp/doc.md" 2>/dev/null || true
  unset SURPRISAL_BIN
  env GPU_DIR="$tmp/g" bash scripts/gpu/gpu_session.sh prepare
  tiny="--shape tiny --window 256 --chunks 8 --check-chunks 2 --batch-size 2 --threads 1 --peak-tflops 0.1"
  tiny="$tiny --doc $tmp/doc.md"
  for s in smoke bench smol-a smol-b; do
    echo "== selftest: $s"
    env GPU_DIR="$tmp/g" STASH="$tmp/stash" OUT="$tmp/out-$s" DEVICE=cpu EXTRA="$tiny" PARITY_EXTRA="--threads 1 \
      --self-test --max-tokens 512 --doc $tmp/doc.md" bash scripts/gpu/gpu_session.sh "$s"
    ls "$tmp/out-$s"
  done
  echo "== selftest passed ($tmp)"
  ;;
smoke)
  unpack
  read -r -a pextra <<<"${PARITY_EXTRA:-}"
  { facts
    python3 scripts/gpu/gpu_parity.py --device "$device" --part fixtures "${pextra[@]}" \
      || echo "== fixture parity FAILED (exit $?)"
    python3 scripts/gpu/bench_gpu.py --device "$device" --shape 1b --chunks 32 --check-chunks 2 --repeats 1 \
      --deadline-s 300 "${extra[@]}"
  } 2>&1 | tee "$out/smoke.log"
  ;;
bench)
  unpack
  python3 scripts/gpu/bench_gpu.py --device "$device" --shape 8b --chunks "${CHUNKS:-128}" --batch-size "${BATCH:-4}" \
    --repeats 3 --deadline-s "${DEADLINE:-520}" "${extra[@]}" 2>&1 | tee "$out/bench.log"
  ;;
smol-a)
  if [ -f "$G/run/surprisal-cuda.xz" ]; then unpack; fi  # when it fits into the same carry (prepare says)
  cp "$G/smol-a/part" "$S/smol.part-a"
  ls -la "$S" | tee "$out/smol-a.log"
  ;;
smol-b)
  unpack
  read -r -a pextra <<<"${PARITY_EXTRA:-}"
  [ -f "$S/smol.part-a" ] || { echo "$S/smol.part-a missing: the machine went back after smol-a; run smol-a again" >&2
                               exit 1; }
  cat "$S/smol.part-a" "$G/smol-b/part" >"$S/$gguf_name"
  sum=$(cut -d ' ' -f 1 "$G/smol-b/$gguf_name.sha256")
  [ "$(sha256sum "$S/$gguf_name" | cut -d ' ' -f 1)" = "$sum" ] || { echo "$S/$gguf_name: sha256 differs" >&2; exit 1; }
  python3 scripts/gpu/gpu_parity.py --device "$device" --part smollm2 --smollm2 "$S/$gguf_name" "${pextra[@]}" 2>&1 \
    | tee "$out/smollm2.log"
  ;;
*)
  echo "unknown step $step" >&2
  exit 2
  ;;
esac
