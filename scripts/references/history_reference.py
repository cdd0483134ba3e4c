#!/usr/bin/env python3
"""Independent reference for the macro-average of `surprisal history`: writes
crates/runner/tests/data/history_reference.json.

Each case is one model scored on D datasets: per-token NLL arrays (float64, seeded, gamma-distributed
like real NLLs, n between 20 and 60 tokens). NumPy computes, per dataset, the mean and its standard
error std(x, ddof=1) / sqrt(n) (what a summary's mean_nll_nats and mean_nll_nats_stderr are), then
the macro-average over the datasets:
    value  = mean over d of mean_d
    stderr = sqrt(sum over d of se_d^2) / D      (independent datasets: Var = sum se_d^2 / D^2)
    ci95   = value -/+ 1.96 * stderr
The Rust test (crates/runner/tests/history.rs) recomputes the per-dataset statistics from the same
arrays with surprisal-metrics and compares history::macro_average with these numbers.

Run with the reference environment (scripts/setup_reference_env.sh), e.g.
    /root/.cache/surprisal/venv-ref/bin/python scripts/references/history_reference.py
The versions used are recorded in the output.
"""

import json
import platform
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "crates/runner/tests/data/history_reference.json"


def main():
    rng = np.random.default_rng(20261207)
    cases = []
    for case, d in enumerate([2, 3, 4]):
        datasets = []
        for k in range(d):
            n = int(rng.integers(20, 61))
            x = rng.gamma(shape=2.0 + k, scale=1.5, size=n)
            datasets.append(
                {
                    "name": f"data{k}",
                    "nll_nats": x.tolist(),
                    "mean_nll_nats": float(np.mean(x)),
                    "mean_nll_nats_stderr": float(np.std(x, ddof=1) / np.sqrt(n)),
                }
            )
        means = np.array([t["mean_nll_nats"] for t in datasets])
        ses = np.array([t["mean_nll_nats_stderr"] for t in datasets])
        value = float(np.mean(means))
        stderr = float(np.sqrt(np.sum(ses**2)) / d)
        cases.append(
            {
                "model": f"model{case}",
                "datasets": datasets,
                "macro_mean_nll_nats": value,
                "macro_mean_nll_nats_stderr": stderr,
                "macro_ci95": [value - 1.96 * stderr, value + 1.96 * stderr],
            }
        )
    out = {
        "generator": "scripts/references/history_reference.py",
        "versions": {"python": platform.python_version(), "numpy": np.__version__},
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
