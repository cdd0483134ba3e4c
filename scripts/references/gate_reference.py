#!/usr/bin/env python3
"""Independent reference for `surprisal gate`'s statistics: writes
crates/metrics/tests/data/gate_reference.json.

* `normal_quantiles`: the standard normal quantile z(p) (scipy.stats.norm.ppf) that turns a
  confidence into a one-sided bound.
* `cases`: per-token NLL arrays of a baseline and a candidate scored on the same tokens (float64,
  seeded), with what NumPy computes from them:
    - paired:   mean(c - b) and its standard error std(c - b, ddof=1) / sqrt(n);
    - unpaired: mean(c) - mean(b) and sqrt(se_b^2 + se_c^2), se = std(x, ddof=1) / sqrt(n);
    - the one-sided upper bounds estimate + z(confidence) * stderr.
* `proportions`: top-1 agreement a of n tokens as a 0/1 array; its standard error
  std(x, ddof=1) / sqrt(n) and the lower bound a - z * se.

Run with the reference environment (scripts/setup_reference_env.sh), e.g.
    /root/.cache/surprisal/venv-ref/bin/python scripts/references/gate_reference.py
The versions used are recorded in the output.
"""

import json
import platform
from pathlib import Path

import numpy as np
import scipy
from scipy.stats import norm

OUT = Path(__file__).resolve().parents[2] / "crates/metrics/tests/data/gate_reference.json"
CONFIDENCES = [0.9, 0.95, 0.99, 0.999]


def f(x):
    # float() of a numpy float64 keeps every bit; json writes repr, which round-trips.
    return float(x)


def case(name, n, shift_nats, noise_nats, seed):
    rng = np.random.default_rng(seed)
    base = rng.gamma(shape=2.0, scale=1.6, size=n)  # NLL-like: positive, skewed, mean ~3.2 nats
    cand = np.maximum(base + shift_nats + rng.normal(0.0, noise_nats, size=n), 0.0)
    d = cand - base
    se_paired = np.std(d, ddof=1) / np.sqrt(n)
    se_b = np.std(base, ddof=1) / np.sqrt(n)
    se_c = np.std(cand, ddof=1) / np.sqrt(n)
    unpaired = np.mean(cand) - np.mean(base)
    se_unpaired = np.sqrt(se_b**2 + se_c**2)
    return {
        "name": name,
        "baseline_nll_nats": [f(x) for x in base],
        "candidate_nll_nats": [f(x) for x in cand],
        "baseline_mean_nll_nats": f(np.mean(base)),
        "baseline_mean_nll_nats_stderr": f(se_b),
        "candidate_mean_nll_nats": f(np.mean(cand)),
        "candidate_mean_nll_nats_stderr": f(se_c),
        "paired_delta_nll_nats": f(np.mean(d)),
        "paired_delta_nll_nats_stderr": f(se_paired),
        "unpaired_delta_nll_nats": f(unpaired),
        "unpaired_delta_nll_nats_stderr": f(se_unpaired),
        "upper_bounds": [
            {
                "confidence": c,
                "paired": f(np.mean(d) + norm.ppf(c) * se_paired),
                "unpaired": f(unpaired + norm.ppf(c) * se_unpaired),
            }
            for c in CONFIDENCES
        ],
    }


def proportion(n, agree, confidence):
    x = np.zeros(n)
    x[:agree] = 1.0
    se = np.std(x, ddof=1) / np.sqrt(n)
    return {
        "tokens": n,
        "agree": agree,
        "top1_agreement": f(np.mean(x)),
        "stderr": f(se),
        "confidence": confidence,
        "lower_bound": f(np.mean(x) - norm.ppf(confidence) * se),
    }


def main():
    ps = [1e-9, 1e-4, 0.01, 0.1, 0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 0.9999, 1 - 1e-9]
    out = {
        "generator": "scripts/references/gate_reference.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "normal_quantiles": [{"p": p, "z": f(norm.ppf(p))} for p in ps],
        "cases": [
            # a real regression: +0.05 nats per token, noisy
            case("regression", 257, 0.05, 0.2, 17),
            # a change inside the noise
            case("noise", 301, 0.0, 0.05, 18),
        ],
        "proportions": [proportion(602, 571, 0.99), proportion(1000, 999, 0.95)],
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
