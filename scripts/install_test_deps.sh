#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust: `xmllint` (Debian's libxml2-utils), with which
# crates/cli/tests/suite_cli.rs validates the JUnit XML of `surprisal gate` / `suite run --gate`
# against crates/cli/tests/data/junit-10.xsd. Idempotent and quiet: does nothing when it is there;
# prints apt's output only on failure. Needs root (or password-less sudo) when it is missing.
set -euo pipefail

command -v xmllint >/dev/null 2>&1 && exit 0
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "install_test_deps: need root to apt-get install libxml2-utils (xmllint)" >&2
        exit 1
    fi
fi
command -v apt-get >/dev/null || {
    echo "install_test_deps: no apt-get; install xmllint (libxml2) yourself" >&2
    exit 1
}
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
install=("${sudo[@]}" apt-get install -y -qq --no-install-recommends libxml2-utils)
# a clean image may have no package lists yet: update only when the install needs it
if ! "${install[@]}" >"$log" 2>&1; then
    if ! { "${sudo[@]}" apt-get update -qq && "${install[@]}"; } >>"$log" 2>&1; then
        cat "$log" >&2
        echo "install_test_deps: apt-get install libxml2-utils failed" >&2
        exit 1
    fi
fi
echo "install_test_deps: installed libxml2-utils (xmllint)" >&2
