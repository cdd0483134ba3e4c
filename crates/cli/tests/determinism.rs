//! Same inputs, same numbers: a command run twice gives byte-identical metrics in summary.json, and the
//! batch size and thread count change the mean NLL by at most float noise.

mod support;

use std::path::Path;

use serde_json::Value;
use support::*;

fn eval(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "eval",
        "--model",
        s(model),
        "--data",
        s(data),
        "--out",
        s(out),
        "--window",
        "128",
        "--stride",
        "64",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_ok(&o);
    summary_numbers(&out.join("summary.json"))
}

fn mean_nll(v: &Value) -> f64 {
    v["mean_nll_nats"].as_f64().unwrap()
}

fn assert_close(a: &Value, b: &Value, what: &str) {
    assert_eq!(
        a["tokens_scored"], b["tokens_scored"],
        "{what}: tokens_scored"
    );
    let (x, y) = (mean_nll(a), mean_nll(b));
    let rel = (x - y).abs() / x.abs().max(1e-300);
    assert!(
        rel <= 1e-5,
        "{what}: mean_nll_nats {x} vs {y} (rel {rel:e})"
    );
}

#[test]
fn same_command_twice_gives_identical_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(&tmp.path().join("d.txt"), text(6));
    let model = fixture("llama");
    let a = eval(&model, &data, &tmp.path().join("a"), &[]);
    let b = eval(&model, &data, &tmp.path().join("b"), &[]);
    assert!(a["tokens_scored"].as_u64().unwrap() > 500);
    // `out`-independent except for nothing: compare the serialized metrics byte for byte
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let ta = std::fs::read(tmp.path().join("a/tokens.parquet")).unwrap();
    let tb = std::fs::read(tmp.path().join("b/tokens.parquet")).unwrap();
    assert_eq!(ta, tb, "tokens.parquet differs between identical runs");
}

#[test]
fn batch_size_does_not_change_the_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(&tmp.path().join("d.txt"), text(6));
    let model = fixture("llama");
    let a = eval(
        &model,
        &data,
        &tmp.path().join("b1"),
        &["--batch-size", "1"],
    );
    let b = eval(
        &model,
        &data,
        &tmp.path().join("b8"),
        &["--batch-size", "8"],
    );
    assert_close(&a, &b, "--batch-size 1 vs 8");
}

#[test]
fn thread_count_does_not_change_the_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(&tmp.path().join("d.txt"), text(6));
    let model = fixture("llama");
    let a = eval(&model, &data, &tmp.path().join("t1"), &["--threads", "1"]);
    let b = eval(&model, &data, &tmp.path().join("t2"), &["--threads", "2"]);
    assert_close(&a, &b, "--threads 1 vs 2");
}

#[test]
fn compare_same_command_twice_gives_identical_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(&tmp.path().join("d.txt"), text(3));
    let run_compare = |out: &str| {
        let out = tmp.path().join(out);
        let o = run(&[
            "compare",
            "--model",
            s(&fixture("llama")),
            "--reference",
            s(&fixture("qwen2")),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--window",
            "128",
        ]);
        assert_ok(&o);
        summary_numbers(&out.join("summary.json"))
    };
    let a = run_compare("a");
    let b = run_compare("b");
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}
