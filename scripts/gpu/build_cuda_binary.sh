#!/usr/bin/env bash
# Builds a CUDA-enabled `surprisal` for the lent GPU machines (H100 / H200, driver 580 = CUDA 13.0, x86-64)
# HERE, on the CPU-only development machine, because the GPU machine has no Rust toolchain and reaches no
# crates.io (docs/gpu-runbook.md). Nothing here needs a GPU:
#   * CUDA 13.0's compiler, headers and runtime come from pinned PyPI wheels (nvcc 13.0.88 writes PTX ISA
#     9.0, which driver 580 loads; a newer nvcc's PTX would be refused by that driver);
#   * the CUDA libraries the binary links against (libcuda, cuBLAS, cuBLASLt, cuRAND, NVRTC) are stubs made
#     from the function names cudarc declares, with the real sonames (libcuda.so.1, libcublas.so.13,
#     libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13); the real ones are on the GPU machine (driver,
#     PyTorch's nvidia/cu13/lib), where scripts/gpu/bench_gpu.py puts them on LD_LIBRARY_PATH;
#   * kernels for sm_90a only (CUDA_COMPUTE_CAP=90): Hopper, i.e. H100 and H200.
# Output: .gpu/bin/surprisal-cuda.xz and its .sha256 (the folder is ignored by git; name `.gpu/bin` in the
# GPU tool's `carry`). Separate target dir (target/cuda), so the CPU build is not disturbed.
#
# Usage: bash scripts/gpu/build_cuda_binary.sh [--prepare-only | --check]
#   --prepare-only: fetch the wheels and make the stubs, no cargo build (checks this script in seconds).
#   --check: `cargo check --features cuda --all-targets` with that nvcc (no link, no binary): proves the
#            CUDA code path compiles on a machine without a GPU (~15 min on 2 cores, cold).
# Takes: ~100 MB of wheels once (~/.cache/surprisal/cuda-13.0); the build itself recompiles candle with
# CUDA and nvcc-compiles candle's kernels (incl. its quantized mmq kernels): expect tens of minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
cuda_dir=${SURPRISAL_CUDA_DIR:-${SURPRISAL_CACHE:-$HOME/.cache/surprisal}/cuda-13.0}
root=$cuda_dir/nvidia/cu13
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
        nvidia-cuda-runtime==13.0.96)

if [ ! -x "$root/bin/nvcc" ]; then
  mkdir -p "$cuda_dir/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
    -d "$cuda_dir/wheels" "${wheels[@]}" >&2
  for w in "$cuda_dir"/wheels/*.whl; do
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$w" "$cuda_dir"
  done
  chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
fi
"$root/bin/nvcc" --version | grep -q "release 13.0" || { echo "$root/bin/nvcc is not CUDA 13.0" >&2; exit 1; }

# link-time stubs: every function cudarc can call, as an empty function, under the real soname
cudarc=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.10 2>/dev/null | head -n 1)
if [ -z "$cudarc" ]; then
  cargo fetch --manifest-path "$repo/Cargo.toml" >&2
  cudarc=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.10 | head -n 1)
fi
stubs=$root/lib/stubs
mkdir -p "$stubs"
make_stub() {  # module lib soname
  local names c=$stubs/$2.c
  names=$(grep -ohE '^\s+fn [A-Za-z_][A-Za-z0-9_]*\(' "$cudarc/src/$1/sys/mod.rs" | sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/\1/' | sort -u)
  [ -n "$names" ] || { echo "no function names in $cudarc/src/$1/sys/mod.rs" >&2; exit 1; }
  printf 'void %s(void) {}\n' $names >"$c"
  gcc -shared -fPIC -Wl,-soname,"$3" -o "$stubs/$2.so" "$c"
  echo "stub $2.so ($3): $(wc -l <"$c") functions" >&2
}
make_stub driver libcuda libcuda.so.1
make_stub cublas libcublas libcublas.so.13
make_stub cublaslt libcublasLt libcublasLt.so.13
make_stub curand libcurand libcurand.so.10
make_stub nvrtc libnvrtc libnvrtc.so.13
ln -sf libcudart.so.13 "$root/lib/libcudart.so"

if [ "${1:-}" = "--prepare-only" ]; then
  echo "prepared $root (nvcc, headers, libcudart, stubs); no build" >&2
  exit 0
fi

export CUDA_HOME=$root CUDA_PATH=$root NVCC=$root/bin/nvcc PATH=$root/bin:$PATH
export CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
export CARGO_TARGET_DIR=$repo/target/cuda
if [ "${1:-}" = "--check" ]; then
  cargo check --release --features cuda -p surprisal-cli --all-targets
  exit
fi
cargo build --release --features cuda -p surprisal-cli
bin=$CARGO_TARGET_DIR/release/surprisal
echo "NEEDED: $(readelf -d "$bin" | grep NEEDED | sed -E 's/.*\[(.*)\]/\1/' | tr '\n' ' ')" >&2
mkdir -p .gpu/bin
strip -o .gpu/bin/surprisal-cuda "$bin"
xz -T0 -6 -f .gpu/bin/surprisal-cuda
(cd .gpu/bin && sha256sum surprisal-cuda.xz >surprisal-cuda.xz.sha256)
ls -la .gpu/bin >&2
echo "$repo/.gpu/bin/surprisal-cuda.xz"
