//! Checks the crate against `tests/data/reference.json`, produced by the
//! independent float64 NumPy script `scripts/references/metrics_reference.py`.
//!
//! Tolerance: `|actual − expected| ≤ max(1e-9·|expected|, 1e-12)`.
//! The absolute floor matters for quantities that are mathematically 0 or
//! tiny (uniform-row varentropy, entropy of rows peaked by 25+ nats,
//! identical-row KL): both sides are correct to ~1e-16 absolute there, but
//! they round differently (e.g. NumPy sums V equal terms p·s, Rust adds
//! ln Z + ū), so a relative comparison would be meaningless. Non-finite
//! expected values (encoded as strings) must match exactly.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use surprisal_metrics::{pair_stats, token_stats, CompareAggregate, PairStats, TokenStats};

const REL: f64 = 1e-9;
const ABS: f64 = 1e-12;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(data_dir().join("reference.json"))
        .expect("tests/data/reference.json missing: run scripts/references/metrics_reference.py");
    serde_json::from_str(&text).expect("reference.json is valid JSON")
}

/// Decodes a JSON number or one of the strings "inf", "-inf", "nan".
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().expect("finite number"),
        Value::String(s) => match s.as_str() {
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "nan" => f64::NAN,
            other => panic!("unexpected float string {other:?}"),
        },
        other => panic!("expected a float, got {other}"),
    }
}

fn read_f32_file(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(data_dir().join(name)).expect("data file");
    assert_eq!(bytes.len() % 4, 0);
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn rows(reference: &Value) -> HashMap<String, Vec<f32>> {
    let mut out = HashMap::new();
    for (name, entry) in reference["rows"].as_object().expect("rows object") {
        let logits: Vec<f32> = if let Some(file) = entry.get("file") {
            read_f32_file(file.as_str().expect("file name"))
        } else {
            entry["logits"]
                .as_array()
                .expect("logits array")
                .iter()
                // f64 → f32 is exact: the script wrote float32 values.
                .map(|v| num(v) as f32)
                .collect()
        };
        assert_eq!(
            logits.len() as u64,
            entry["vocab"].as_u64().unwrap(),
            "{name}"
        );
        out.insert(name.clone(), logits);
    }
    out
}

thread_local! {
    /// Worst observed relative deviation (for |expected| > 1e-6), reported
    /// with `--nocapture` to show how much headroom the tolerance has.
    static WORST_REL: std::cell::Cell<(f64, String)> = const { std::cell::Cell::new((0.0, String::new())) };
}

fn report_worst(test: &str) {
    let (rel, what) = WORST_REL.with(|w| w.take());
    eprintln!("{test}: worst relative deviation from NumPy {rel:e} at {what}");
}

fn assert_close(actual: f64, expected: f64, what: &str) {
    if expected.is_finite() && expected.abs() > 1e-6 {
        let rel = (actual - expected).abs() / expected.abs();
        WORST_REL.with(|w| {
            let cur = w.take();
            w.set(if rel > cur.0 {
                (rel, what.to_string())
            } else {
                cur
            });
        });
    }
    if !expected.is_finite() {
        assert!(
            actual == expected || (expected.is_nan() && actual.is_nan()),
            "{what}: expected {expected}, got {actual}"
        );
        return;
    }
    let tol = (REL * expected.abs()).max(ABS);
    assert!(
        (actual - expected).abs() <= tol,
        "{what}: expected {expected:e}, got {actual:e} (|diff| = {:e} > tol {tol:e})",
        (actual - expected).abs()
    );
}

fn check_token(actual: &TokenStats, expected: &Value, what: &str) {
    let f = |k: &str| num(&expected[k]);
    let u = |k: &str| expected[k].as_u64().unwrap_or_else(|| panic!("{what}.{k}"));
    assert_close(actual.nll_nats, f("nll_nats"), &format!("{what}.nll_nats"));
    assert_close(
        actual.entropy_nats,
        f("entropy_nats"),
        &format!("{what}.entropy_nats"),
    );
    assert_close(
        actual.varentropy_nats2,
        f("varentropy_nats2"),
        &format!("{what}.varentropy_nats2"),
    );
    assert_close(
        actual.min_entropy_nats,
        f("min_entropy_nats"),
        &format!("{what}.min_entropy_nats"),
    );
    assert_close(
        actual.renyi2_entropy_nats,
        f("renyi2_entropy_nats"),
        &format!("{what}.renyi2_entropy_nats"),
    );
    assert_close(
        actual.top1_prob,
        f("top1_prob"),
        &format!("{what}.top1_prob"),
    );
    assert_eq!(u64::from(actual.top1_id), u("top1_id"), "{what}.top1_id");
    assert_eq!(actual.target_rank, u("target_rank"), "{what}.target_rank");
    assert_eq!(
        u64::from(actual.target_id),
        u("target_id"),
        "{what}.target_id"
    );
}

#[test]
fn token_stats_match_numpy() {
    let r = reference();
    let rows = rows(&r);
    let cases = r["token_cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["row"].as_str().unwrap();
        let target = case["target"].as_u64().unwrap() as u32;
        let what = format!("{name}[target={target}]");
        let stats = token_stats(&rows[name], target).unwrap_or_else(|e| panic!("{what}: {e}"));
        check_token(&stats, &case["expected"], &what);
    }
    report_worst("token_stats");
}

#[test]
fn pair_stats_match_numpy() {
    let r = reference();
    let rows = rows(&r);
    let cases = r["pair_cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let (m, re) = (
            case["model"].as_str().unwrap(),
            case["reference"].as_str().unwrap(),
        );
        let target = case["target"].as_u64().unwrap() as u32;
        let what = format!("{m} vs {re}[target={target}]");
        let e = &case["expected"];
        let p: PairStats =
            pair_stats(&rows[m], &rows[re], target).unwrap_or_else(|err| panic!("{what}: {err}"));
        check_token(&p.model, &e["model"], &format!("{what}.model"));
        check_token(&p.reference, &e["reference"], &format!("{what}.reference"));
        assert_close(p.kl_nats, num(&e["kl_nats"]), &format!("{what}.kl_nats"));
        assert_close(
            p.target_prob_delta,
            num(&e["target_prob_delta"]),
            &format!("{what}.target_prob_delta"),
        );
        assert_eq!(
            Some(p.top1_agrees),
            e["top1_agrees"].as_bool(),
            "{what}.top1_agrees"
        );
        if m == re {
            assert_eq!(p.kl_nats, 0.0, "identical rows must give exactly zero KL");
        }
    }
    report_worst("pair_stats");
}

/// Recursively compares a serialized summary with the NumPy JSON: identical
/// key sets (so names and completeness are checked too), integers exact,
/// floats within tolerance.
fn assert_json_close(actual: &Value, expected: &Value, path: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            let mut ak: Vec<_> = a.keys().collect();
            let mut ek: Vec<_> = e.keys().collect();
            ak.sort();
            ek.sort();
            assert_eq!(ak, ek, "{path}: key sets differ");
            for (k, ev) in e {
                assert_json_close(&a[k], ev, &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{path}: array lengths differ");
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                assert_json_close(av, ev, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(e)) if e.is_u64() || e.is_i64() => {
            assert_eq!(a.as_f64(), e.as_f64(), "{path}");
        }
        (Value::Number(a), Value::Number(_) | Value::String(_)) => {
            assert_close(a.as_f64().unwrap(), num(expected), path);
        }
        (a, e) => assert_eq!(a, e, "{path}"),
    }
}

fn aggregate_inputs(r: &Value) -> (Vec<PairStats>, Vec<usize>, u64, u64) {
    let agg = &r["aggregate"];
    let v = agg["vocab"].as_u64().unwrap() as usize;
    let n = agg["count"].as_u64().unwrap() as usize;
    let model = read_f32_file(agg["model_file"].as_str().unwrap());
    let reference = read_f32_file(agg["reference_file"].as_str().unwrap());
    assert_eq!(model.len(), n * v);
    assert_eq!(reference.len(), n * v);
    let targets: Vec<u32> = agg["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let ctx: Vec<usize> = agg["context_lens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect();
    let pairs = (0..n)
        .map(|i| {
            pair_stats(
                &model[i * v..(i + 1) * v],
                &reference[i * v..(i + 1) * v],
                targets[i],
            )
            .unwrap()
        })
        .collect();
    (
        pairs,
        ctx,
        agg["bytes"].as_u64().unwrap(),
        agg["words"].as_u64().unwrap(),
    )
}

#[test]
fn compare_summary_matches_numpy() {
    let r = reference();
    let (pairs, ctx, bytes, words) = aggregate_inputs(&r);
    let mut agg = CompareAggregate::new();
    for (p, &c) in pairs.iter().zip(&ctx) {
        agg.push(p, c);
    }
    let summary = agg.summary(Some(bytes), Some(words));
    let actual = serde_json::to_value(&summary).unwrap();
    assert_json_close(
        &actual,
        &r["aggregate"]["compare_summary"],
        "compare_summary",
    );
    report_worst("compare_summary");
}

#[test]
fn sharded_and_checkpointed_compare_summary_matches_numpy() {
    // Same data, pushed into three shards, one of which goes through a JSON
    // checkpoint round trip, then merged.
    let r = reference();
    let (pairs, ctx, bytes, words) = aggregate_inputs(&r);
    let mut shards = [
        CompareAggregate::new(),
        CompareAggregate::new(),
        CompareAggregate::new(),
    ];
    for (i, (p, &c)) in pairs.iter().zip(&ctx).enumerate() {
        shards[i % 3].push(p, c);
    }
    let json = serde_json::to_string(&shards[1]).unwrap();
    shards[1] = serde_json::from_str(&json).unwrap();
    let mut merged = CompareAggregate::new();
    for s in &shards {
        merged.merge(s);
    }
    let actual = serde_json::to_value(merged.summary(Some(bytes), Some(words))).unwrap();
    assert_json_close(
        &actual,
        &r["aggregate"]["compare_summary"],
        "compare_summary",
    );
}

#[test]
fn reference_records_its_provenance() {
    let r = reference();
    assert!(r["meta"]["numpy_version"].is_string());
    assert!(r["meta"]["python_version"].is_string());
}
