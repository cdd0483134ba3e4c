//! The gate statistics against `tests/data/gate_reference.json`, written by the independent NumPy
//! and SciPy script `scripts/references/gate_reference.py` (versions recorded in the file).
//!
//! Tolerance: `|actual − expected| ≤ max(1e-12·|expected|, 1e-15)`: both sides accumulate in f64
//! (Welford here, pairwise summation in NumPy), so they agree to a few ulps of the sums.

use serde_json::Value;
use surprisal_metrics::{
    lower_bound, normal_quantile, proportion_stderr, upper_bound, DeltaEstimate,
};

fn reference() -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gate_reference.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run scripts/references/gate_reference.py)",
            p.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn close(actual: f64, expected: f64, what: &str) {
    let tol = (1e-12 * expected.abs()).max(1e-15);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: {actual:e} vs NumPy {expected:e} (diff {:e})",
        (actual - expected).abs()
    );
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn normal_quantile_matches_scipy_norm_ppf() {
    let r = reference();
    let qs = r["normal_quantiles"].as_array().unwrap();
    assert!(qs.len() >= 10);
    for q in qs {
        let p = q["p"].as_f64().unwrap();
        let z = q["z"].as_f64().unwrap();
        // statrs inverts erfc; relative 1e-12 (and 1e-15 absolute at p = 0.5)
        close(normal_quantile(p), z, &format!("z({p})"));
    }
}

#[test]
fn paired_and_unpaired_deltas_match_numpy() {
    let r = reference();
    for case in r["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let b = floats(&case["baseline_nll_nats"]);
        let c = floats(&case["candidate_nll_nats"]);
        let (paired, n) = DeltaEstimate::paired(b.iter().copied().zip(c.iter().copied()));
        assert_eq!(n as usize, b.len());
        let num = |k: &str| case[k].as_f64().unwrap();
        close(paired.delta_nats, num("paired_delta_nll_nats"), name);
        close(
            paired.stderr_nats,
            num("paired_delta_nll_nats_stderr"),
            name,
        );
        let unpaired = DeltaEstimate::unpaired(
            num("baseline_mean_nll_nats"),
            num("baseline_mean_nll_nats_stderr"),
            num("candidate_mean_nll_nats"),
            num("candidate_mean_nll_nats_stderr"),
        );
        close(unpaired.delta_nats, num("unpaired_delta_nll_nats"), name);
        close(
            unpaired.stderr_nats,
            num("unpaired_delta_nll_nats_stderr"),
            name,
        );
        // the point of pairing: per-token difficulty cancels
        assert!(paired.stderr_nats < unpaired.stderr_nats / 5.0, "{name}");
        for ub in case["upper_bounds"].as_array().unwrap() {
            let conf = ub["confidence"].as_f64().unwrap();
            close(
                paired.upper_bound_nats(conf),
                ub["paired"].as_f64().unwrap(),
                &format!("{name} paired bound at {conf}"),
            );
            close(
                unpaired.upper_bound_nats(conf),
                ub["unpaired"].as_f64().unwrap(),
                &format!("{name} unpaired bound at {conf}"),
            );
        }
    }
}

#[test]
fn proportion_stderr_and_lower_bound_match_numpy() {
    let r = reference();
    for p in r["proportions"].as_array().unwrap() {
        let n = p["tokens"].as_u64().unwrap();
        let a = p["top1_agreement"].as_f64().unwrap();
        let conf = p["confidence"].as_f64().unwrap();
        let se = proportion_stderr(a, n);
        close(se, p["stderr"].as_f64().unwrap(), "proportion stderr");
        close(
            lower_bound(a, se, conf),
            p["lower_bound"].as_f64().unwrap(),
            "proportion lower bound",
        );
        assert!(upper_bound(a, se, conf) > a);
    }
}
