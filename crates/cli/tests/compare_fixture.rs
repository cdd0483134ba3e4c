//! `surprisal compare` against an independent reference, on two tiny random-weight Llama fixtures
//! that share a tokenizer: the model `crates/models/tests/fixtures/llama` (tied embeddings) and the
//! reference `crates/models/tests/fixtures/llama_untied`.
//!
//! `scripts/references/ref_fixture_compare.py` scores `tests/data/compare_text.txt` (603 tokens) with
//! transformers (f32 forward, f64 log_softmax, numpy aggregates) under the same protocol (`sliding`,
//! window 128, stride 64, no BOS: 9 windows, 602 scored tokens) and writes
//! `tests/data/fixture_compare.json`. The test runs the binary with `--out DIR --per-token jsonl`
//! and requires:
//!
//! * the same scored tokens (index, token id, context length) in the same order, the same arg-max ids
//!   of both models;
//! * per-token KL(R‖M) within [`KL_TOL`] = 3e-5 nats and both NLLs within [`NLL_TOL`] = 1e-4 nats.
//!   KL cannot be held to 1e-6: the KL of these random models is ~4 nats and the *forward pass* (f32,
//!   candle vs torch accumulation order) moves it by up to 7.9e-6 (measured: candle vs torch f32;
//!   each of them is ~1.1e-5 away from a float64 torch forward), so the limit is the f32 forward
//!   noise, not the KL arithmetic (f64 on both sides);
//! * every aggregate of `summary.json` within a tolerance sized to that noise (see the asserts);
//! * `top_kl_positions`: the same 20 positions in the same order (the reference's adjacent KL gaps
//!   are ≥ 3e-3, far above the noise), with the same context text.
//!
//! The limit of 1e-6 per token on KL is met in float64: `--dtype f64` against
//! `tests/data/fixture_compare_f64.json` (`ref_fixture_compare.py --float64`: transformers float64
//! throughout), see [`float64_kl_per_token_within_1e_6_of_float64_transformers`].
//!
//! And a tokenizer mismatch must fail with exit status 2 and a message naming what differs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use surprisal_testkit::{fixtures, repo_root};

/// Per-token KL tolerance (nats); see the module docs.
const KL_TOL: f64 = 3e-5;
/// Per-token NLL tolerance (nats).
const NLL_TOL: f64 = 1e-4;

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let p = repo_root().join("crates/cli/tests/data/fixture_compare.json");
        let s = std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate: /work/.venv-ref/bin/python scripts/references/ref_fixture_compare.py)",
                p.display()
            )
        });
        serde_json::from_str(&s).unwrap()
    })
}

fn surprisal(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_surprisal"))
        .current_dir(repo_root())
        .args(args)
        .output()
        .expect("run surprisal")
}

fn compare_args(model: &Path, reference: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["compare".into(), "--model".into()];
    args.push(model.display().to_string());
    args.push("--reference".into());
    args.push(reference.display().to_string());
    for a in reference_json_args() {
        args.push(a);
    }
    args
}

fn reference_json_args() -> Vec<String> {
    reference()["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The run of the fixture pair: (stdout, summary.json, token rows). Run once for all tests.
fn run() -> &'static (String, Value, Vec<Value>) {
    static RUN: OnceLock<(String, Value, Vec<Value>)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut args = compare_args(&fixtures().join("llama"), &fixtures().join("llama_untied"));
        args.extend(["--out".into(), out.display().to_string()]);
        args.extend(["--per-token".into(), "jsonl".into()]);
        let o = surprisal(&args);
        assert!(
            o.status.success(),
            "surprisal {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        let rows = std::fs::read_to_string(out.join("tokens.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (String::from_utf8(o.stdout).unwrap(), summary, rows)
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn col<'a>(name: &str) -> &'a [Value] {
    reference()["tokens"][name].as_array().unwrap()
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{what}: got {got}, reference {want}, |diff| {:e} > {tol:e}",
        (got - want).abs()
    );
}

fn close_rel(what: &str, got: f64, want: f64, rel: f64) {
    assert!(
        (got - want).abs() <= rel * want.abs(),
        "{what}: got {got}, reference {want}, rel diff {:e} > {rel:e}",
        ((got - want) / want).abs()
    );
}

#[test]
fn per_token_values_match_transformers() {
    let (_, _, rows) = run();
    let n = col("index").len();
    assert_eq!(rows.len(), n, "scored tokens");
    let (mut max_kl, mut max_nll, mut max_ref_nll, mut max_dp) = (0f64, 0f64, 0f64, 0f64);
    for (k, row) in rows.iter().enumerate() {
        let at = format!("token #{k} (index {})", row["index"]);
        assert_eq!(row["doc"], 0, "{at}");
        assert_eq!(row["index"], col("index")[k], "{at}: index");
        assert_eq!(row["token_id"], col("token_id")[k], "{at}: token id");
        assert_eq!(row["context_len"], col("context_len")[k], "{at}: context");
        assert_eq!(row["top1_id"], col("top1_id")[k], "{at}: model top-1");
        assert_eq!(
            row["ref_top1_id"],
            col("ref_top1_id")[k],
            "{at}: reference top-1"
        );
        let kl = f(&row["kl_nats"]);
        let (nll, ref_nll) = (f(&row["nll_nats"]), f(&row["ref_nll_nats"]));
        close(&format!("{at}: kl_nats"), kl, f(&col("kl_nats")[k]), KL_TOL);
        close(&format!("{at}: nll"), nll, f(&col("nll_nats")[k]), NLL_TOL);
        close(
            &format!("{at}: ref nll"),
            ref_nll,
            f(&col("ref_nll_nats")[k]),
            NLL_TOL,
        );
        let dp = (-nll).exp() - (-ref_nll).exp();
        close(
            &format!("{at}: Δp"),
            dp,
            f(&col("target_prob_delta")[k]),
            1e-6,
        );
        max_kl = max_kl.max((kl - f(&col("kl_nats")[k])).abs());
        max_nll = max_nll.max((nll - f(&col("nll_nats")[k])).abs());
        max_ref_nll = max_ref_nll.max((ref_nll - f(&col("ref_nll_nats")[k])).abs());
        max_dp = max_dp.max((dp - f(&col("target_prob_delta")[k])).abs());
    }
    eprintln!("max |diff|: kl {max_kl:e}, nll {max_nll:e}, ref nll {max_ref_nll:e}, Δp {max_dp:e}");
}

#[test]
fn aggregates_match_numpy() {
    let (_, s, _) = run();
    let r = &reference()["summary"];
    assert_eq!(s["mode"], "compare");
    assert_eq!(s["windows"], reference()["windows"]);
    assert_eq!(s["tokens_scored"], r["tokens_scored"]);
    assert_eq!(s["top1_agreement"], r["top1_agreement"]);
    let abs = |k: &str, tol: f64| close(k, f(&s[k]), f(&r[k]), tol);
    abs("mean_kl_nats", 2e-6);
    abs("mean_kl_nats_stderr", 1e-6);
    abs("delta_mean_nll_nats", 1e-5);
    abs("delta_mean_nll_nats_stderr", 1e-6);
    abs("mean_target_prob_delta", 1e-7);
    abs("rms_target_prob_delta", 1e-7);
    abs("delta_mean_entropy_nats", 1e-5);
    abs("delta_mean_entropy_nats_stderr", 1e-6);
    close_rel(
        "perplexity_ratio",
        f(&s["perplexity_ratio"]),
        f(&r["perplexity_ratio"]),
        1e-5,
    );
    for i in 0..2 {
        let (g, w) = (
            f(&s["perplexity_ratio_ci95"][i]),
            f(&r["perplexity_ratio_ci95"][i]),
        );
        close_rel(&format!("perplexity_ratio_ci95[{i}]"), g, w, 1e-5);
    }
    let levels = r["kl_nats_quantiles"].as_object().unwrap();
    assert_eq!(levels.len(), 13);
    for (q, want) in levels {
        let got = f(&s["kl_nats_quantiles"][q]);
        close(&format!("kl_nats_quantiles.{q}"), got, f(want), KL_TOL);
        let got = f(&s["target_prob_delta_quantiles"][q]);
        let want = f(&r["target_prob_delta_quantiles"][q]);
        close(&format!("target_prob_delta_quantiles.{q}"), got, want, 1e-6);
    }
    // the reference's own summary (summary.json's top-level "model" key also names the model's
    // provenance, so the model's own summary is checked through the per-token NLLs instead)
    let (g, w) = (&s["reference"], &r["reference"]);
    close(
        "reference.mean_nll_nats",
        f(&g["mean_nll_nats"]),
        f(&w["mean_nll_nats"]),
        1e-5,
    );
    close_rel(
        "reference.perplexity",
        f(&g["perplexity"]),
        f(&w["perplexity"]),
        1e-5,
    );
    close(
        "reference.mean_entropy_nats",
        f(&g["mean_entropy_nats"]),
        f(&w["mean_entropy_nats"]),
        1e-5,
    );
}

#[test]
fn top_kl_positions_in_summary_and_table() {
    let (stdout, s, _) = run();
    let got = s["top_kl_positions"].as_array().expect("top_kl_positions");
    let want = reference()["top_kl_positions"].as_array().unwrap();
    assert_eq!(got.len(), 20);
    assert!(f(&reference()["kl_gap_after_top20"]) > 100.0 * KL_TOL);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        for key in [
            "doc",
            "index",
            "token_id",
            "token",
            "context_before",
            "context_after",
        ] {
            assert_eq!(g[key], w[key], "top_kl_positions[{k}].{key}");
        }
        close(
            &format!("top_kl_positions[{k}].kl_nats"),
            f(&g["kl_nats"]),
            f(&w["kl_nats"]),
            KL_TOL,
        );
        for key in ["nll_nats", "ref_nll_nats"] {
            close(
                &format!("top_kl_positions[{k}].{key}"),
                f(&g[key]),
                f(&w[key]),
                NLL_TOL,
            );
        }
    }
    // the table lists them after the metrics, largest first, with the target in brackets
    let head = stdout
        .find("largest KL positions (top 20)")
        .expect("top-KL table");
    assert!(head > stdout.find("perplexity_ratio").unwrap());
    let first = &want[0];
    let line = format!(
        "…{}[{}]{}…",
        first["context_before"]
            .as_str()
            .unwrap()
            .replace('\n', "\\n"),
        first["token"].as_str().unwrap().replace('\n', "\\n"),
        first["context_after"]
            .as_str()
            .unwrap()
            .replace('\n', "\\n"),
    );
    let lines: Vec<&str> = stdout[head..].lines().collect();
    assert!(
        lines[2].ends_with(&line),
        "{:?} should end with {line:?}",
        lines[2]
    );
    assert!(
        lines[2].contains(&format!(" {} ", first["index"])),
        "{}",
        lines[2]
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains('[') && l.contains('…'))
            .count(),
        20
    );
}

/// A copy of the `llama` fixture whose tokenizer.json is edited by `edit`.
fn llama_with_tokenizer(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let src = fixtures().join("llama");
    let dst = dir.join("llama_other_tokenizer");
    std::fs::create_dir_all(&dst).unwrap();
    for name in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), dst.join(name)).unwrap();
    }
    let mut tok: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
            .unwrap();
    edit(&mut tok);
    std::fs::write(dst.join("tokenizer.json"), tok.to_string()).unwrap();
    dst
}

fn token_with_id(tok: &Value, id: u64) -> String {
    let vocab = tok["model"]["vocab"].as_object().unwrap();
    vocab
        .iter()
        .find(|(_, v)| v.as_u64() == Some(id))
        .unwrap()
        .0
        .clone()
}

fn expect_mismatch(reference: &Path, needle: &str) {
    let args = compare_args(&fixtures().join("llama"), reference);
    let o = surprisal(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("different tokenizers"), "{err}");
    assert!(err.contains(needle), "{err:?} should contain {needle:?}");
}

#[test]
fn tokenizer_mismatch_swapped_tokens_fails_naming_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (String::new(), String::new());
    let other = llama_with_tokenizer(dir.path(), |tok| {
        a = token_with_id(tok, 300);
        b = token_with_id(tok, 301);
        let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
        vocab.insert(a.clone(), 301.into());
        vocab.insert(b.clone(), 300.into());
    });
    expect_mismatch(
        &other,
        &format!("token id 300 is {a:?} in the model and {b:?} in the reference"),
    );
}

#[test]
fn tokenizer_mismatch_merges_fails_naming_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let other = llama_with_tokenizer(dir.path(), |tok| {
        let merges = tok["model"]["merges"].as_array_mut().unwrap();
        merges.swap(10, 11);
    });
    expect_mismatch(&other, "merge #10 is ");
}

/// `--dtype f64` vs a float64 transformers forward (`ref_fixture_compare.py --float64`): per-token KL
/// and both NLLs within 1e-6 nats. (Measured: KL 4.6e-7, NLL 3.2e-7; what remains is our logits
/// reaching the metrics as f32.)
#[test]
fn float64_kl_per_token_within_1e_6_of_float64_transformers() {
    const TOL: f64 = 1e-6;
    let path = repo_root().join("crates/cli/tests/data/fixture_compare_f64.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(reference["dtype"], "f64");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut args = compare_args(&fixtures().join("llama"), &fixtures().join("llama_untied"));
    args.extend(["--dtype", "f64", "--per-token", "jsonl", "--out"].map(String::from));
    args.push(out.display().to_string());
    let o = surprisal(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Value> = std::fs::read_to_string(out.join("tokens.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let col = |name: &str| reference["tokens"][name].as_array().unwrap().clone();
    let (index, kl, nll, ref_nll) = (
        col("index"),
        col("kl_nats"),
        col("nll_nats"),
        col("ref_nll_nats"),
    );
    assert_eq!(rows.len(), index.len(), "scored tokens");
    let mut worst = [0f64; 3];
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row["index"], index[k], "token #{k}: index");
        for (w, (key, want)) in worst.iter_mut().zip([
            ("kl_nats", &kl[k]),
            ("nll_nats", &nll[k]),
            ("ref_nll_nats", &ref_nll[k]),
        ]) {
            close(&format!("token #{k}: {key}"), f(&row[key]), f(want), TOL);
            *w = w.max((f(&row[key]) - f(want)).abs());
        }
    }
    eprintln!(
        "f64 max |diff|: kl {:e}, nll {:e}, ref nll {:e}",
        worst[0], worst[1], worst[2]
    );
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["dtype"], "f64");
    let r = &reference["summary"];
    for key in [
        "mean_kl_nats",
        "delta_mean_nll_nats",
        "delta_mean_entropy_nats",
    ] {
        close(key, f(&s[key]), f(&r[key]), TOL);
    }
}
