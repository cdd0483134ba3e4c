#!/usr/bin/env python3
"""Independent float64 NumPy reference for the `surprisal-metrics` crate.

Builds a deterministic (seeded) set of float32 logit rows, computes every
per-token / per-pair / aggregate quantity in float64 with plain NumPy
formulas (written from the definitions, not from the Rust code), and writes

  crates/metrics/tests/data/reference.json   (compact JSON)
  crates/metrics/tests/data/*.f32            (little-endian float32 rows too
                                              big to inline; Rust reads the
                                              exact same floats)

JSON encoding: non-finite floats are written as the strings "inf", "-inf",
"nan" (JSON has no literals for them). Inline float32 logits are written as
the shortest float64 repr of the float32 value, which round-trips exactly.

Run:  /work/.venv-ref/bin/python scripts/references/metrics_reference.py
"""

from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path

import numpy as np

SEED = 20240611
ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "crates" / "metrics" / "tests" / "data"
QUANTILE_LEVELS = [0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
QUANTILE_NAMES = ["min", "p0_1", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99_9", "max"]
ECE_BINS = 15
Z95 = 1.96


def enc(v):
    """JSON-safe float: non-finite -> string."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def enc_tree(obj):
    if isinstance(obj, dict):
        return {k: enc_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [enc_tree(v) for v in obj]
    if obj is None or isinstance(obj, str):
        return obj
    return enc(obj)


# --------------------------------------------------------------------------
# Per-token reference (from the definitions)
# --------------------------------------------------------------------------

def log_softmax(x32: np.ndarray) -> np.ndarray:
    """log p in float64, as (x - m) - ln Z with Z = Σ exp(x - m).

    Subtracting the max first (rather than x - logsumexp(x)) keeps log p
    exact to ~1e-16 absolute even when |m| is large (e.g. 3e4), and ln Z is
    taken via log1p of the non-max mass so peaked rows keep full relative
    precision."""
    x = x32.astype(np.float64)
    m = x.max()
    d = x - m
    e = np.exp(d)
    amax = int(np.argmax(x))
    rest = np.delete(e, amax).sum()
    return d - np.log1p(rest)


def token_stats(x32: np.ndarray, target: int) -> dict:
    logp = log_softmax(x32)
    p = np.exp(logp)
    nz = np.isfinite(logp)  # masked entries have p = 0 and contribute nothing
    s = -logp[nz]
    pn = p[nz]
    H = float(np.sum(pn * s))
    var = float(np.sum(pn * (s - H) ** 2))
    amax = int(np.argmax(x32))  # first occurrence = lowest index on ties
    max_logp = float(logp.max())
    x = x32.astype(np.float64)
    return {
        "nll_nats": -float(logp[target]),
        "entropy_nats": H,
        "varentropy_nats2": var,
        "min_entropy_nats": -max_logp,
        # -ln Σ p² = -logsumexp(2 logp)
        "renyi2_entropy_nats": -float(2 * max_logp + np.log(np.sum(np.exp(2 * logp[nz] - 2 * max_logp)))),
        "top1_id": amax,
        "top1_prob": float(np.exp(max_logp)),
        "target_rank": int(1 + np.sum(x > x[target])),
        "target_id": int(target),
    }


def pair_stats(m32: np.ndarray, r32: np.ndarray, target: int) -> dict:
    lm = log_softmax(m32)
    lr = log_softmax(r32)
    pr = np.exp(lr)
    sel = pr > 0
    with np.errstate(invalid="ignore"):
        kl = float(np.sum(pr[sel] * (lr[sel] - lm[sel])))
    ms = token_stats(m32, target)
    rs = token_stats(r32, target)
    return {
        "model": ms,
        "reference": rs,
        "kl_nats": kl,
        "target_prob_delta": float(np.exp(lm[target]) - np.exp(lr[target])),
        "top1_agrees": ms["top1_id"] == rs["top1_id"],
    }


# --------------------------------------------------------------------------
# Aggregate reference
# --------------------------------------------------------------------------

def stderr(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) >= 2 else float("nan")


def eval_summary(stats: list[dict], ctx: list[int], nbytes: int, words: int) -> dict:
    col = lambda k: np.array([s[k] for s in stats], dtype=np.float64)  # noqa: E731
    nll = col("nll_nats")
    n = len(nll)
    mean = float(np.mean(nll))
    se = stderr(nll)
    total = float(math.fsum(nll))
    conf = col("top1_prob")
    correct = np.array([s["top1_id"] == s["target_id"] for s in stats])
    # ECE bins: b = min(floor(15 c), 14)
    b = np.minimum(np.floor(conf * ECE_BINS).astype(int), ECE_BINS - 1)
    edge_dist = np.abs(conf * ECE_BINS - np.round(conf * ECE_BINS))
    assert np.all((edge_dist > 1e-9) | (conf == 1.0)), "confidence too close to an ECE bin edge"
    bins = []
    ece = 0.0
    for k in range(ECE_BINS):
        sel = b == k
        cnt = int(sel.sum())
        if cnt:
            mc, acc = float(conf[sel].mean()), float(correct[sel].mean())
            ece += cnt / n * abs(acc - mc)
        else:
            mc = acc = None
        bins.append({"lower": k / ECE_BINS, "upper": (k + 1) / ECE_BINS, "count": cnt,
                     "mean_confidence": mc, "accuracy": acc})
    # position bins: 0 -> 0, else bit_length (floor(log2 c) + 1)
    pos = {}
    for c, s in zip(ctx, stats):
        pos.setdefault(int(c).bit_length(), []).append(s)
    by_position = []
    for k in sorted(pos):
        lo, hi = (0, 0) if k == 0 else (2 ** (k - 1), 2 ** k - 1)
        ss = pos[k]
        by_position.append({
            "context_len_min": lo, "context_len_max": hi, "count": len(ss),
            "mean_nll_nats": float(np.mean([s["nll_nats"] for s in ss])),
            "mean_entropy_nats": float(np.mean([s["entropy_nats"] for s in ss])),
        })
    ent, var = col("entropy_nats"), col("varentropy_nats2")
    return {
        "tokens_scored": n,
        "sum_nll_nats": total,
        "mean_nll_nats": mean,
        "mean_nll_nats_stderr": se,
        "perplexity": math.exp(mean),
        "perplexity_ci95": [math.exp(mean - Z95 * se), math.exp(mean + Z95 * se)],
        "bits_per_token": mean / math.log(2),
        "bytes_scored": nbytes,
        "bits_per_byte": total / (nbytes * math.log(2)),
        "byte_perplexity": math.exp(total / nbytes),
        "words": words,
        "word_perplexity": math.exp(total / words),
        "mean_entropy_nats": float(np.mean(ent)),
        "mean_entropy_nats_stderr": stderr(ent),
        "mean_varentropy_nats2": float(np.mean(var)),
        "mean_varentropy_nats2_stderr": stderr(var),
        "mean_min_entropy_nats": float(np.mean(col("min_entropy_nats"))),
        "mean_renyi2_entropy_nats": float(np.mean(col("renyi2_entropy_nats"))),
        "top1_accuracy": float(correct.mean()),
        "mean_top1_prob": float(conf.mean()),
        "calibration_ece": ece,
        "calibration_bins": bins,
        "by_position": by_position,
    }


def quantiles(v: np.ndarray) -> dict:
    q = np.quantile(v, QUANTILE_LEVELS)  # default method="linear"
    return dict(zip(QUANTILE_NAMES, (float(x) for x in q)))


def compare_summary(pairs: list[dict], ctx: list[int], nbytes: int, words: int) -> dict:
    kl = np.array([p["kl_nats"] for p in pairs])
    d = np.array([p["target_prob_delta"] for p in pairs])
    dn = np.array([p["model"]["nll_nats"] - p["reference"]["nll_nats"] for p in pairs])
    de = np.array([p["model"]["entropy_nats"] - p["reference"]["entropy_nats"] for p in pairs])
    dm, dse = float(np.mean(dn)), stderr(dn)
    return {
        "tokens_scored": len(pairs),
        "mean_kl_nats": float(np.mean(kl)),
        "mean_kl_nats_stderr": stderr(kl),
        "kl_nats_quantiles": quantiles(kl),
        "target_prob_delta_quantiles": quantiles(d),
        "top1_agreement": float(np.mean([p["top1_agrees"] for p in pairs])),
        "delta_mean_nll_nats": dm,
        "delta_mean_nll_nats_stderr": dse,
        "perplexity_ratio": math.exp(dm),
        "perplexity_ratio_ci95": [math.exp(dm - Z95 * dse), math.exp(dm + Z95 * dse)],
        "mean_target_prob_delta": float(np.mean(d)),
        "rms_target_prob_delta": float(np.sqrt(np.mean(d * d))),
        "delta_mean_entropy_nats": float(np.mean(de)),
        "delta_mean_entropy_nats_stderr": stderr(de),
        "model": eval_summary([p["model"] for p in pairs], ctx, nbytes, words),
        "reference": eval_summary([p["reference"] for p in pairs], ctx, nbytes, words),
    }


# --------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------

def f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    rows: dict[str, tuple[np.ndarray, str, str | None]] = {}  # name -> (logits, recipe, file)

    def add(name, x, recipe, file=None):
        rows[name] = (f32(x), recipe, file)

    for v in (1, 2, 7, 8, 1000):
        add(f"uniform_v{v}", np.zeros(v), f"zeros({v})")
    add("uniform_v50_const", np.full(50, 3.25), "full(50, 3.25)")
    one_hot = np.full(10, -np.inf)
    one_hot[3] = 0.0
    add("one_hot_v10", one_hot, "logit 0 at index 3, -inf elsewhere")
    add("peaked_1e4", [0.0, 1e4, 2e4, 3e4, 3e4 - 25.0, -1e4], "explicit: logits ~1e4 apart")
    add("peaked_20", np.arange(8) * 20.0 - 70.0, "arange(8)*20-70")
    masked = rng.normal(0, 2, 512)
    masked[rng.random(512) < 0.3] = -np.inf
    add("masked_v512", masked, "normal(0,2,512), 30% set to -inf")
    add("ties_v16", rng.integers(0, 4, 16).astype(np.float64), "integers(0,4,16) -> many ties")
    add("normal_v50_s1", rng.normal(0, 1, 50), "normal(0,1,50)")
    add("normal_v50_s5", rng.normal(0, 5, 50), "normal(0,5,50)")
    base300 = rng.normal(0, 2, 300)
    add("normal_v300", base300, "normal(0,2,300)")
    add("normal_v300_ref", base300 + rng.normal(0, 0.3, 300), "normal_v300 + normal(0,0.3,300)")
    m_mask = rng.normal(0, 1.5, 64)
    r_mask = m_mask + rng.normal(0, 0.5, 64)
    m_mask[[5, 9]] = -np.inf        # masked in model only where ref masked too
    r_mask[[5, 9, 11, 12]] = -np.inf  # ref masks more: KL stays finite
    add("masked_pair_model", m_mask, "normal(0,1.5,64); -inf at 5,9")
    add("masked_pair_ref", r_mask, "masked_pair_model + normal(0,0.5,64); -inf at 5,9,11,12")
    add("ties_v16_b", np.where(np.arange(16) == 2, 3.0, rows["ties_v16"][0].astype(np.float64)),
        "ties_v16 with index 2 set to 3.0")

    big_rng = np.random.default_rng(SEED + 1)
    add("normal_v150k_s3", big_rng.normal(0, 3, 150_000), f"default_rng({SEED + 1}).normal(0,3,150000)",
        "normal_v150k_s3.f32")
    off_rng = np.random.default_rng(SEED + 2)
    base50k = off_rng.normal(0, 2, 50_000)
    add("offset_v50k", base50k + 1000.0, f"default_rng({SEED + 2}).normal(0,2,50000) + 1000", "offset_v50k.f32")
    add("offset_v50k_ref", base50k + off_rng.normal(0, 0.5, 50_000),
        "same base (no offset) + next normal(0,0.5,50000) from that generator", "offset_v50k_ref.f32")

    # (row, target, note)
    cases = [
        ("uniform_v1", 0), ("uniform_v2", 1), ("uniform_v7", 3), ("uniform_v1000", 999),
        ("uniform_v50_const", 17),
        ("one_hot_v10", 3), ("one_hot_v10", 5),          # target masked -> nll = inf
        ("peaked_1e4", 3), ("peaked_1e4", 4), ("peaked_1e4", 0), ("peaked_1e4", 5),
        ("peaked_20", 7), ("peaked_20", 6), ("peaked_20", 0),
        ("masked_v512", int(np.flatnonzero(np.isfinite(rows["masked_v512"][0]))[7])),
        ("masked_v512", int(np.flatnonzero(~np.isfinite(rows["masked_v512"][0]))[0])),
        ("normal_v50_s1", 10), ("normal_v50_s5", 20), ("normal_v300", 123),
        ("normal_v150k_s3", 77_777), ("normal_v150k_s3", int(np.argmax(rows["normal_v150k_s3"][0]))),
        ("offset_v50k", 4242), ("offset_v50k_ref", 4242),
    ]
    ties = rows["ties_v16"][0]
    tmax = np.flatnonzero(ties == ties.max())
    assert len(tmax) >= 2, "ties row needs a tied max"
    cases += [("ties_v16", int(tmax[0])), ("ties_v16", int(tmax[-1])),
              ("ties_v16", int(np.flatnonzero(ties < ties.max())[0]))]

    pair_cases = [
        ("normal_v300", "normal_v300", 5),            # identical -> KL = 0
        ("normal_v300", "normal_v300_ref", 123),
        ("normal_v300_ref", "normal_v300", 200),
        ("masked_pair_model", "masked_pair_ref", 3),
        ("masked_pair_ref", "masked_pair_model", 3),  # model masks where ref doesn't -> KL = inf
        ("normal_v50_s5", "normal_v50_s1", 9),
        ("peaked_20", "uniform_v8", 0),
        ("uniform_v8", "peaked_20", 7),
        ("ties_v16", "ties_v16_b", 2),
        ("offset_v50k", "offset_v50k_ref", 4242),
        ("offset_v50k_ref", "offset_v50k", 31_337),
    ]

    # ---- aggregate: 200 pairs, V = 128 -------------------------------------
    agg_rng = np.random.default_rng(SEED + 3)
    n_agg, v_agg = 200, 128
    base = agg_rng.normal(0, 1, (n_agg, v_agg))
    scale = np.exp(agg_rng.uniform(np.log(0.2), np.log(8.0), (n_agg, 1)))
    ref_rows = base * scale
    model_rows = ref_rows * agg_rng.uniform(0.7, 1.3, (n_agg, 1)) + agg_rng.normal(0, 0.7, (n_agg, v_agg))
    mask = agg_rng.random((n_agg, v_agg)) < 0.1
    ref_rows[mask] = -np.inf
    model_rows[mask] = -np.inf
    ref_rows, model_rows = f32(ref_rows), f32(model_rows)
    targets = []
    for i in range(n_agg):
        lp = log_softmax(ref_rows[i])
        targets.append(int(agg_rng.choice(v_agg, p=np.exp(lp) / np.exp(lp).sum())))
    ctx = [0, 1, 2, 3, 5] + [int(c) for c in np.floor(2 ** agg_rng.uniform(0, 12, n_agg - 5)) - 1]
    nbytes, words = 911, 163
    model_rows.astype("<f4").tofile(OUT_DIR / "agg_model_200x128.f32")
    ref_rows.astype("<f4").tofile(OUT_DIR / "agg_reference_200x128.f32")
    agg_pairs = [pair_stats(model_rows[i], ref_rows[i], targets[i]) for i in range(n_agg)]

    # ---- write -------------------------------------------------------------
    row_json = {}
    for name, (x, recipe, file) in rows.items():
        entry = {"vocab": len(x), "recipe": recipe}
        if file:
            x.astype("<f4").tofile(OUT_DIR / file)
            entry["file"] = file
        else:
            entry["logits"] = [enc(float(v)) for v in x]
        row_json[name] = entry

    out = {
        "meta": {
            "generator": "scripts/references/metrics_reference.py",
            "seed": SEED,
            "python_version": platform.python_version(),
            "numpy_version": np.__version__,
            "platform": sys.platform,
            "encoding": "non-finite floats are strings 'inf'/'-inf'/'nan'; .f32 files are little-endian float32",
            "quantile_method": "np.quantile default (linear, Hyndman-Fan type 7)",
        },
        "rows": row_json,
        "token_cases": [{"row": r, "target": t, "expected": token_stats(rows[r][0], t)} for r, t in cases],
        "pair_cases": [{"model": m, "reference": r, "target": t, "expected": pair_stats(rows[m][0], rows[r][0], t)}
                       for m, r, t in pair_cases],
        "aggregate": {
            "vocab": v_agg,
            "count": n_agg,
            "model_file": "agg_model_200x128.f32",
            "reference_file": "agg_reference_200x128.f32",
            "recipe": f"default_rng({SEED + 3}); see script",
            "targets": targets,
            "context_lens": ctx,
            "bytes": nbytes,
            "words": words,
            "compare_summary": compare_summary(agg_pairs, ctx, nbytes, words),
        },
    }
    path = OUT_DIR / "reference.json"
    path.write_text(json.dumps(enc_tree(out), separators=(",", ":"), allow_nan=False) + "\n")
    total = sum(f.stat().st_size for f in OUT_DIR.iterdir())
    print(f"wrote {path} ({path.stat().st_size} bytes); data dir total {total} bytes")


if __name__ == "__main__":
    main()
