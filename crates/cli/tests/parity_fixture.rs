//! Parity of the three window protocols with independent references, on the tiny random-weight Llama
//! fixture (`crates/models/tests/fixtures/llama`).
//!
//! `scripts/references/ref_fixture_protocols.py` computes, with transformers (f32 weights, f64 log_softmax), the
//! fixed HF sliding-window recipe, llama.cpp's `perplexity()` chunk loop (with and without BOS) and
//! lm-eval's `loglikelihood_rolling` (+ word/byte perplexity, bits per byte), and writes
//! `tests/data/fixture_protocols.json`. Each test here runs the `surprisal eval` binary on the same
//! text with the same protocol flags and requires:
//!
//! * the same scored tokens (document, index) in the same order, with the same context lengths;
//! * `tokens_scored` equal; |Δ mean NLL| ≤ 1e-5 nats (f32 model noise); every per-token NLL within
//!   1e-4 nats;
//! * chunks: the per-chunk mean NLLs within 1e-5; rolling: the word and byte counts equal, the per
//!   document log-likelihoods, word perplexity, byte perplexity and bits per byte within the same
//!   NLL tolerance.

use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use surprisal_testkit::repo_root;

const MEAN_TOL: f64 = 1e-5;
const TOKEN_TOL: f64 = 1e-4;

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let p = repo_root().join("crates/cli/tests/data/fixture_protocols.json");
        let s = std::fs::read_to_string(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate: /work/.venv-ref/bin/python scripts/references/ref_fixture_protocols.py)",
                p.display()
            )
        });
        serde_json::from_str(&s).expect("fixture_protocols.json is not valid JSON")
    })
}

fn case(name: &str) -> &'static Value {
    reference()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in fixture_protocols.json"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn ints(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(u).collect()
}

/// What one `surprisal eval` run produced.
struct Run {
    summary: Value,
    rows: Vec<Value>,
    _dir: tempfile::TempDir,
}

/// Runs `surprisal eval` on the fixture model with the case's protocol flags, in the repo root.
fn run_case(c: &Value) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    let mut args: Vec<String> = [
        "eval",
        "--model",
        "crates/models/tests/fixtures/llama",
        "--per-token",
        "jsonl",
        "--quiet",
        "--threads",
        "2",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.path().join("out").display().to_string());
    args.extend(
        c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string()),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_surprisal"))
        .args(&args)
        .current_dir(&root)
        .env_remove("SURPRISAL_LOG")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cannot start the surprisal binary");
    assert!(
        out.status.success(),
        "surprisal {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let od = dir.path().join("out");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(od.join("summary.json")).unwrap()).unwrap();
    let rows = std::fs::read_to_string(od.join("tokens.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Run {
        summary,
        rows,
        _dir: dir,
    }
}

/// The checks every case shares; returns the run for case-specific checks.
fn check_common(name: &str) -> (Run, &'static Value) {
    let c = case(name);
    let run = run_case(c);
    let s = &run.summary;

    // same tokens, same order, same contexts
    let want_index = ints(&c["index"]);
    let got_index: Vec<u64> = run.rows.iter().map(|r| u(&r["index"])).collect();
    let want_doc = if c.get("doc").is_some() {
        ints(&c["doc"])
    } else {
        vec![0; want_index.len()]
    };
    let got_doc: Vec<u64> = run.rows.iter().map(|r| u(&r["doc"])).collect();
    assert_eq!(
        (got_doc.len(), got_index.len()),
        (want_doc.len(), want_index.len()),
        "{name}: number of per-token rows"
    );
    assert_eq!(got_doc, want_doc, "{name}: documents of the scored tokens");
    assert_eq!(got_index, want_index, "{name}: scored token indices");
    let want_ctx = ints(&c["context_len"]);
    let got_ctx: Vec<u64> = run.rows.iter().map(|r| u(&r["context_len"])).collect();
    assert_eq!(got_ctx, want_ctx, "{name}: context lengths");

    // per-token NLL
    let want_nll = nums(&c["nll_nats"]);
    let (mut worst, mut at) = (0.0f64, 0usize);
    for (i, (r, w)) in run.rows.iter().zip(&want_nll).enumerate() {
        let d = (f(&r["nll_nats"]) - w).abs();
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    assert!(
        worst <= TOKEN_TOL,
        "{name}: per-token NLL differs by {worst:.3e} at row {at} (doc {}, index {})",
        want_doc[at],
        want_index[at]
    );

    // summary
    assert_eq!(
        u(&s["tokens_scored"]),
        u(&c["tokens_scored"]),
        "{name}: tokens_scored"
    );
    let (got, want) = (f(&s["mean_nll_nats"]), f(&c["mean_nll_nats"]));
    assert!(
        (got - want).abs() <= MEAN_TOL,
        "{name}: mean NLL {got:.9} vs reference {want:.9} (Δ {:.3e})",
        got - want
    );
    let n = f(&c["tokens_scored"]);
    let (gs, ws) = (f(&s["sum_nll_nats"]), f(&c["sum_nll_nats"]));
    assert!(
        (gs - ws).abs() <= MEAN_TOL * n,
        "{name}: sum NLL {gs} vs {ws}"
    );
    let (gp, wp) = (f(&s["perplexity"]), f(&c["perplexity"]));
    assert!(
        (gp.ln() - wp.ln()).abs() <= MEAN_TOL,
        "{name}: perplexity {gp} vs {wp}"
    );
    eprintln!(
        "{name}: {} tokens, mean NLL {got:.9} vs {want:.9} (Δ {:+.2e}), max per-token |Δ| {worst:.2e}",
        u(&s["tokens_scored"]),
        got - want
    );
    (run, c)
}

fn check_chunks(name: &str, window: u64) {
    let (run, c) = check_common(name);
    let want = nums(&c["per_chunk_mean_nll_nats"]);
    let per_chunk = (window - window / 2 - 1) as usize;
    assert_eq!(
        run.rows.len(),
        want.len() * per_chunk,
        "{name}: rows per chunk"
    );
    assert_eq!(
        u(&run.summary["windows"]),
        want.len() as u64,
        "{name}: chunks"
    );
    for (k, (rows, w)) in run.rows.chunks(per_chunk).zip(&want).enumerate() {
        let mean = rows.iter().map(|r| f(&r["nll_nats"])).sum::<f64>() / per_chunk as f64;
        assert!(
            (mean - w).abs() <= MEAN_TOL,
            "{name}: chunk {k} mean NLL {mean} vs {w}"
        );
    }
}

#[test]
fn reference_file_matches_the_inputs() {
    let r = reference();
    assert_eq!(r["model_adds_bos"], Value::Bool(false));
    assert_eq!(u(&r["bos_id"]), 0);
    assert!(
        u(&r["text_tokens"]) >= 1400,
        "the fixture text should be ~1500 tokens"
    );
}

#[test]
fn sliding_w128_s64_nobos_matches_hf_recipe() {
    check_common("sliding_w128_s64_nobos");
}

#[test]
fn sliding_w128_s64_auto_means_no_bos_for_this_model() {
    let (run, _) = check_common("sliding_w128_s64_auto");
    assert_eq!(run.summary["protocol"]["bos_used"], Value::Bool(false));
}

#[test]
fn sliding_w128_s64_bos_matches_hf_recipe_with_bos() {
    let (run, _) = check_common("sliding_w128_s64_bos");
    assert_eq!(run.summary["protocol"]["bos_used"], Value::Bool(true));
}

#[test]
fn sliding_w100_s37_nobos_matches_hf_recipe() {
    check_common("sliding_w100_s37_nobos");
}

#[test]
fn chunks_w128_nobos_matches_llamacpp() {
    check_chunks("chunks_w128_nobos", 128);
}

#[test]
fn chunks_w128_bos_matches_llamacpp() {
    check_chunks("chunks_w128_bos", 128);
}

#[test]
fn chunks_w128_max_chunks_3_matches_llamacpp() {
    check_chunks("chunks_w128_nobos_max3", 128);
}

#[test]
fn rolling_w128_matches_lm_eval() {
    let (run, c) = check_common("rolling_w128");
    let s = &run.summary;
    let name = "rolling_w128";

    // per-document log-likelihoods (what lm-eval's loglikelihood_rolling returns)
    let want_docs = nums(&c["doc_loglikelihood"]);
    let doc_tokens = ints(&c["doc_tokens"]);
    for (d, (w, nt)) in want_docs.iter().zip(&doc_tokens).enumerate() {
        let got: f64 = -run
            .rows
            .iter()
            .filter(|r| u(&r["doc"]) == d as u64)
            .map(|r| f(&r["nll_nats"]))
            .sum::<f64>();
        assert!(
            (got - w).abs() <= MEAN_TOL * *nt as f64,
            "{name}: document {d} log-likelihood {got} vs {w}"
        );
        let n = run.rows.iter().filter(|r| u(&r["doc"]) == d as u64).count();
        assert_eq!(n as u64, *nt, "{name}: document {d} tokens scored");
    }

    // lm-eval's wikitext metrics
    assert_eq!(u(&s["words"]), u(&c["words"]), "{name}: words");
    assert_eq!(u(&s["bytes_scored"]), u(&c["bytes"]), "{name}: bytes");
    let n = f(&c["tokens_scored"]);
    for (key, unit) in [
        ("word_perplexity", f(&c["words"])),
        ("byte_perplexity", f(&c["bytes"])),
    ] {
        let (got, want) = (f(&s[key]), f(&c[key]));
        // ln(ppl) = Σ NLL / unit, so its error is the sum's error over `unit`
        assert!(
            (got.ln() - want.ln()).abs() <= MEAN_TOL * n / unit,
            "{name}: {key} {got} vs {want}"
        );
    }
    let (got, want) = (f(&s["bits_per_byte"]), f(&c["bits_per_byte"]));
    assert!(
        (got - want).abs() <= MEAN_TOL * n / f(&c["bytes"]) / std::f64::consts::LN_2,
        "{name}: bits_per_byte {got} vs {want}"
    );
    eprintln!(
        "{name}: word_perplexity {} vs {}, byte_perplexity {} vs {}, bits_per_byte {} vs {}",
        f(&s["word_perplexity"]),
        f(&c["word_perplexity"]),
        f(&s["byte_perplexity"]),
        f(&c["byte_perplexity"]),
        got,
        want
    );
}
