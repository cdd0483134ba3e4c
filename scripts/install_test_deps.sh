#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: `xmllint` (Debian's libxml2-utils), with which
# crates/cli/tests/suite_cli.rs validates the JUnit XML of `surprisal gate` / `suite run --gate`
# against crates/cli/tests/data/junit-10.xsd. Idempotent and quiet: does nothing when it is there;
# prints apt's output only on failure. Needs root (or password-less sudo) when it is missing.
set -euo pipefail
source "$(dirname "$0")/lib/apt_install.sh"

command -v xmllint >/dev/null 2>&1 && exit 0
apt_install install_test_deps libxml2-utils
