#!/usr/bin/env bash
# Builds the llama.cpp vendored in the llama-cpp-python==0.3.36 sdist (CPU only) into the cache
# (default ~/.cache/surprisal/llama.cpp), never into the repository. Targets: llama-perplexity,
# llama-tokenize, llama-quantize (requantization for docs/nightly-demo.md) and the shared library `llama`
# (used by the llama_cpp Python package of the same sdist).
# Idempotent. Prints the llama-perplexity binary path on stdout (everything else goes to stderr);
# llama-tokenize and llama-quantize sit beside it.
#
# CPU features: GGML_NATIVE=OFF with the x86 extensions this host has named explicitly (read from
# /proc/cpuinfo), and AMX off. A GGML_NATIVE=ON build on the Intel (Sapphire Rapids) hosts segfaults in
# ggml_backend_amx_mul_mat (seen 2026-12-07, issue #14); naming the AVX2/AVX-512 flags ourselves keeps
# the same vector kernels without the AMX backend. The chosen flags are written to $build/cpu-flags so a
# build made on another host is rebuilt rather than reused.
# Env: PYTHON (default: the reference venv if present, else python3), JOBS (default 2).
set -euo pipefail
VERSION=0.3.36
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
root="$cache/llama.cpp"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$cache/venv-ref/bin/python" ]; then PYTHON="$cache/venv-ref/bin/python"
  elif [ -x /work/.venv-ref/bin/python ]; then PYTHON=/work/.venv-ref/bin/python
  else PYTHON=python3; fi
fi
JOBS="${JOBS:-2}"
src="$root/llama_cpp_python-$VERSION"
build="$root/build"
bin="$build/bin/llama-perplexity"
tok="$build/bin/llama-tokenize"
quant="$build/bin/llama-quantize"

# x86 extensions of this host -> ggml's cmake options (ggml/CMakeLists.txt, GGML_NATIVE=OFF branch).
has() { grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -qx "$1"; }
flags=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
on_off() { if has "$1"; then flags+=("-D$2=ON"); else flags+=("-D$2=OFF"); fi; }
on_off avx GGML_AVX
on_off avx2 GGML_AVX2
on_off fma GGML_FMA
on_off f16c GGML_F16C
on_off bmi2 GGML_BMI2
on_off avx_vnni GGML_AVX_VNNI
on_off avx512f GGML_AVX512
on_off avx512vbmi GGML_AVX512_VBMI
on_off avx512_vnni GGML_AVX512_VNNI
on_off avx512_bf16 GGML_AVX512_BF16
want="${flags[*]}"

lib_ok() { ls "$build"/bin/libllama.so >/dev/null 2>&1 || ls "$build"/src/libllama.so >/dev/null 2>&1; }
if [ -x "$bin" ] && [ -x "$tok" ] && [ -x "$quant" ] && lib_ok && [ "$(cat "$build/cpu-flags" 2>/dev/null)" = "$want" ]; then
  echo "$bin"; exit 0
fi

mkdir -p "$root"
# cmake is needed both for the build and for `pip download` of an sdist (metadata preparation).
CMAKE=$(command -v cmake || true)
if [ -z "$CMAKE" ]; then
  "$PYTHON" -m pip install --quiet cmake >&2
  # the wheel's own binary (with PYTHON=python3, `dirname` of it would be `.`)
  CMAKE="$("$PYTHON" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))')"
fi
export PATH="$(dirname "$CMAKE"):$PATH"

if [ ! -d "$src" ]; then
  "$PYTHON" -m pip install --quiet scikit-build-core >&2 || true
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$root/sdist" "llama-cpp-python==$VERSION" >&2
  tar -xzf "$root/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$root"
fi

echo "llama.cpp cpu flags: $want" >&2
"$CMAKE" -S "$src/vendor/llama.cpp" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release "${flags[@]}" -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$build/bin" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$build/bin" >&2
"$CMAKE" --build "$build" --config Release -j "$JOBS" --target llama llama-perplexity llama-tokenize llama-quantize >&2
echo "$want" > "$build/cpu-flags"
echo "$bin"
