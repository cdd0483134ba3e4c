#!/usr/bin/env bash
# Builds the llama.cpp vendored in the llama-cpp-python==0.3.36 sdist (CPU only) into the cache
# (default ~/.cache/surprisal/llama.cpp), never into the repository. Targets: llama-perplexity and the
# shared library `llama` (used by the llama_cpp Python package of the same sdist). Idempotent.
# Prints the llama-perplexity binary path on stdout (everything else goes to stderr).
# Env: PYTHON (default /work/.venv-ref/bin/python if present, else python3), JOBS (default 2).
set -euo pipefail
VERSION=0.3.36
root="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}/llama.cpp"
if [ -z "${PYTHON:-}" ]; then
  if [ -x /work/.venv-ref/bin/python ]; then PYTHON=/work/.venv-ref/bin/python; else PYTHON=python3; fi
fi
JOBS="${JOBS:-2}"
src="$root/llama_cpp_python-$VERSION"
build="$root/build"
bin="$build/bin/llama-perplexity"

lib_ok() { ls "$build"/bin/libllama.so >/dev/null 2>&1 || ls "$build"/src/libllama.so >/dev/null 2>&1; }
if [ -x "$bin" ] && lib_ok; then echo "$bin"; exit 0; fi

mkdir -p "$root"
# cmake is needed both for the build and for `pip download` of an sdist (metadata preparation).
CMAKE=$(command -v cmake || true)
if [ -z "$CMAKE" ]; then
  "$PYTHON" -m pip install --quiet cmake >&2
  CMAKE="$(dirname "$PYTHON")/cmake"
fi
export PATH="$(dirname "$CMAKE"):$PATH"

if [ ! -d "$src" ]; then
  "$PYTHON" -m pip install --quiet scikit-build-core >&2 || true
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    -d "$root/sdist" "llama-cpp-python==$VERSION" >&2
  tar -xzf "$root/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$root"
fi


"$CMAKE" -S "$src/vendor/llama.cpp" -B "$build" \
  -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=ON \
  -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$build/bin" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$build/bin" >&2
"$CMAKE" --build "$build" --config Release -j "$JOBS" --target llama llama-perplexity >&2
echo "$bin"
