#!/usr/bin/env bash
# Installs what the scheduler drills need (scripts/drills/slurm_drill.sh, scripts/drills/k8s_contract.sh):
# Debian's slurmctld, slurmd, slurm-client and munge, and PyYAML for the python3 on PATH.
# Idempotent and quiet: does nothing when everything is there; prints apt's output only on failure.
# Needs root (or password-less sudo) when a package is missing. The daemons are not started (the
# drill starts its own, privately configured ones); on a systemd machine the packages' units stay
# as Debian installs them.
set -euo pipefail

need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        if sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "install_scheduler_deps: need root to apt-get install ${need[*]}" >&2
            exit 1
        fi
    fi
    command -v apt-get >/dev/null || {
        echo "install_scheduler_deps: no apt-get; install ${need[*]} (Slurm 22.05+, munge) yourself" >&2
        exit 1
    }
    log="$(mktemp)"
    trap 'rm -f "$log"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    install=("${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}")
    # a clean image may have no package lists yet: update only when the install needs it
    if ! "${install[@]}" >"$log" 2>&1; then
        if ! { "${sudo[@]}" apt-get update -qq && "${install[@]}"; } >>"$log" 2>&1; then
            cat "$log" >&2
            echo "install_scheduler_deps: apt-get install ${need[*]} failed" >&2
            exit 1
        fi
    fi
    echo "install_scheduler_deps: installed ${need[*]}" >&2
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check pyyaml >&2 ||
        { echo "install_scheduler_deps: pip install pyyaml failed" >&2; exit 1; }
fi
