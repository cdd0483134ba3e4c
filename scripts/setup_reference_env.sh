#!/usr/bin/env bash
# Creates the Python reference venv (torch + transformers, pinned in scripts/requirements-reference.txt)
# used by scripts/make_fixtures.py. Never inside the repository.
#   venv path: $SURPRISAL_REF_VENV, default ${SURPRISAL_CACHE:-$HOME/.cache/surprisal}/venv-ref
#   python:    $PYTHON, default python3 (the fixtures were made with Python 3.11.7)
# Prints the venv path on stdout. Re-running is cheap when the pins are already satisfied.
# Then: "$(scripts/setup_reference_env.sh)/bin/python" scripts/references/make_fixtures.py
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements-reference.txt"
venv="${SURPRISAL_REF_VENV:-${SURPRISAL_CACHE:-$HOME/.cache/surprisal}/venv-ref}"
py="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv" >&2
fi
# Skip the (large: torch pulls its CUDA runtime wheels) install if every pin is already met.
if ! "$venv/bin/python" - "$req" >&2 <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have is None or have.split("+", 1)[0] != want:
        bad.append(f"{name}: have {have}, want {want}")
if bad:
    print("reference venv needs install:", "; ".join(bad))
    sys.exit(1)
PY
then
  "$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --disable-pip-version-check -r "$req" >&2
fi
"$venv/bin/python" -c 'import sys, torch, transformers, numpy, tokenizers, safetensors; print("reference venv:", sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "numpy", numpy.__version__, "tokenizers", tokenizers.__version__, "safetensors", safetensors.__version__, file=sys.stderr)'
echo "$venv"
