#!/usr/bin/env bash
# f32 HF dir + f32 GGUF of SmolLM2-135M-Instruct from the Q4_1 GGUF (see scripts/references/make_smollm2_f32.py).
set -euo pipefail; HF_HUB_OFFLINE=1 exec nice -n 5 "${PYTHON:-/work/.venv-ref/bin/python}" "$(dirname "$0")/make_smollm2_f32.py" "$@"
