#!/usr/bin/env bash
# Installs what the scheduler drills need (scripts/drills/slurm_drill.sh, scripts/drills/k8s_contract.sh):
# Debian's slurmctld, slurmd, slurm-client and munge, and PyYAML for the python3 on PATH.
# Idempotent and quiet: does nothing when everything is there; prints apt's output only on failure.
# Needs root (or password-less sudo) when a package is missing. The daemons are not started (the
# drill starts its own, privately configured ones); on a systemd machine the packages' units stay
# as Debian installs them.
set -euo pipefail
source "$(dirname "$0")/../lib/apt_install.sh"

need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    apt_install install_scheduler_deps "${need[@]}"
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check pyyaml >&2 ||
        { echo "install_scheduler_deps: pip install pyyaml failed" >&2; exit 1; }
fi
