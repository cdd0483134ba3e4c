//! Engine tests against the deterministic mock model.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use surprisal_metrics::{token_stats, EvalAggregate, EvalSummary};
use surprisal_runner::protocol::{DocTotals, ModelTokens, Planner};
use surprisal_runner::{
    compare, evaluate, BosMode, Document, NoProgress, ProtocolConfig, ProtocolKind, RowsFormat,
    RunError, RunOptions, Tokenize,
};

fn opts(p: ProtocolConfig, batch: usize, chunk: usize) -> RunOptions {
    let mut o = RunOptions::new(p);
    o.batch_size = batch;
    o.logit_chunk_rows = chunk;
    o
}

/// Independent expectation: plan windows, compute stats from the mock rows.
fn expected(
    tok: &MockTokenizer,
    model: &MockScorer,
    docs: &[Document],
    p: &ProtocolConfig,
) -> (EvalAggregate, u64) {
    let r = p
        .resolve(&ModelTokens {
            bos_id: tok.bos_id(),
            eos_id: tok.eos_id(),
            adds_bos: tok.adds_bos(),
            max_context: model.max_ctx,
        })
        .unwrap();
    let rolling = p.kind == ProtocolKind::Rolling;
    let mut pl = Planner::new(r);
    let mut agg = EvalAggregate::new();
    let mut bytes = 0u64;
    let drain = |pl: &mut Planner, agg: &mut EvalAggregate, bytes: &mut u64| {
        while let Some(w) = pl.pop() {
            for s in &w.scored {
                let logits = model.row(w.input[s.position], s.position);
                agg.push(&token_stats(&logits, s.token.id).unwrap(), s.context_len());
                if !rolling {
                    *bytes += s.token.byte_len();
                }
            }
            if let Some(t) = w.doc_totals {
                *bytes += t.bytes;
            }
        }
    };
    for d in docs {
        if !pl.wants_more() {
            break;
        }
        let e = tok.encode(&d.text).unwrap();
        let toks: Vec<(u32, usize, usize)> = e
            .ids
            .iter()
            .zip(&e.byte_spans)
            .map(|(&i, &(a, b))| (i, a, b))
            .collect();
        pl.push_document(
            d.index,
            &toks,
            DocTotals {
                bytes: d.text.len() as u64,
                words: 0,
            },
        );
        drain(&mut pl, &mut agg, &mut bytes);
    }
    pl.finish().unwrap();
    drain(&mut pl, &mut agg, &mut bytes);
    (agg, bytes)
}

fn assert_same(a: &EvalSummary, b: &EvalSummary) {
    assert_eq!(a.tokens_scored, b.tokens_scored);
    assert_eq!(
        a.sum_nll_nats.to_bits(),
        b.sum_nll_nats.to_bits(),
        "{} vs {}",
        a.sum_nll_nats,
        b.sum_nll_nats
    );
    assert_eq!(a.mean_entropy_nats.to_bits(), b.mean_entropy_nats.to_bits());
    assert_eq!(a.top1_accuracy.to_bits(), b.top1_accuracy.to_bits());
    assert_eq!(a.by_position, b.by_position);
    assert_eq!(a.bytes_scored, b.bytes_scored);
}

fn all_protocols() -> Vec<ProtocolConfig> {
    vec![
        proto(ProtocolKind::Sliding, 16, 8, BosMode::Never),
        proto(ProtocolKind::Sliding, 16, 5, BosMode::Always),
        proto(ProtocolKind::Sliding, 7, 1, BosMode::Auto),
        proto(ProtocolKind::Chunks, 16, 0, BosMode::Never),
        proto(ProtocolKind::Chunks, 15, 0, BosMode::Always),
        proto(ProtocolKind::Rolling, 9, 0, BosMode::Auto),
    ]
}

#[test]
fn engine_matches_direct_computation_for_every_protocol_and_batching() {
    let docs = corpus(25);
    let tok = MockTokenizer::new(true);
    for p in all_protocols() {
        let model = MockScorer::new(7);
        let (agg, bytes) = expected(&tok, &model, &docs, &p);
        let want = agg.summary(Some(bytes), None);
        assert!(want.tokens_scored > 50);
        for (batch, chunk) in [(1, 256), (3, 5), (8, 1), (64, 1000)] {
            let model = MockScorer::new(7);
            let got = evaluate(
                &tok,
                &model,
                ok_docs(&docs),
                &opts(p.clone(), batch, chunk),
                &prov(),
                &mut NoProgress,
            )
            .unwrap();
            assert_same(&got.summary, &want);
            assert!(model.max_pairs_seen.get() <= chunk, "chunk limit exceeded");
            assert!(model.max_rows_seen.get() <= batch);
            if p.kind == ProtocolKind::Rolling {
                assert!(got.summary.word_perplexity.is_some());
            } else {
                assert!(got.summary.word_perplexity.is_none());
            }
        }
    }
}

#[test]
fn sliding_scores_every_token_but_the_first() {
    let docs = corpus(10);
    let tok = MockTokenizer::new(false);
    let total: usize = docs
        .iter()
        .map(|d| tok.encode(&d.text).unwrap().ids.len())
        .sum();
    let p = proto(ProtocolKind::Sliding, 12, 4, BosMode::Never);
    let got = evaluate(
        &tok,
        &MockScorer::new(1),
        ok_docs(&docs),
        &opts(p.clone(), 4, 256),
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(got.summary.tokens_scored as usize, total - 1);
    let mut p2 = p;
    p2.bos = BosMode::Always;
    let got = evaluate(
        &tok,
        &MockScorer::new(1),
        ok_docs(&docs),
        &opts(p2, 4, 256),
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(got.summary.tokens_scored as usize, total);
    // bytes of all scored tokens = whole corpus (spans include leading whitespace)
    let all_bytes: usize = docs.iter().map(|d| d.text.len()).sum();
    assert_eq!(got.summary.bytes_scored, Some(all_bytes as u64));
}

#[test]
fn max_tokens_limits_the_stream() {
    let docs = corpus(10);
    let tok = MockTokenizer::new(false);
    let mut p = proto(ProtocolKind::Sliding, 8, 4, BosMode::Always);
    p.max_tokens = Some(37);
    let got = evaluate(
        &tok,
        &MockScorer::new(1),
        ok_docs(&docs),
        &opts(p, 2, 256),
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(got.summary.tokens_scored, 37);
    let mut p = proto(ProtocolKind::Rolling, 8, 0, BosMode::Auto);
    p.max_tokens = Some(37);
    let got = evaluate(
        &tok,
        &MockScorer::new(1),
        ok_docs(&docs),
        &opts(p, 2, 256),
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(got.summary.tokens_scored, 37);
}

#[test]
fn rolling_reports_lm_eval_words_and_bytes() {
    let docs = vec![
        Document::new(0, "a.txt", " the cat  sat\n"),
        Document::new(1, "b.txt", "dog ran far away"),
    ];
    let tok = MockTokenizer::new(false);
    let p = proto(ProtocolKind::Rolling, 3, 0, BosMode::Never);
    let got = evaluate(
        &tok,
        &MockScorer::new(3),
        ok_docs(&docs),
        &opts(p, 2, 256),
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    let s = &got.summary;
    assert_eq!(s.tokens_scored, 7);
    // python: len(re.split(r"\s+", " the cat  sat\n")) == 5, "dog ran far away" -> 4
    assert_eq!(s.words, Some(9));
    assert_eq!(s.bytes_scored, Some(14 + 16));
    let wp = (s.sum_nll_nats / 9.0).exp();
    assert!((s.word_perplexity.unwrap() - wp).abs() < 1e-12 * wp);
    assert!((s.byte_perplexity.unwrap() - (s.sum_nll_nats / 30.0).exp()).abs() < 1e-9);
}

#[test]
fn lm_eval_word_count_matches_python_re_split() {
    use surprisal_runner::engine::lm_eval_word_count as wc;
    // values from python3: len(re.split(r"\s+", s))
    assert_eq!(wc(""), 1);
    assert_eq!(wc("a"), 1);
    assert_eq!(wc("a b"), 2);
    assert_eq!(wc(" a b "), 4);
    assert_eq!(wc("a \n\t b"), 2);
    assert_eq!(wc("a\u{a0}b\u{2003}c"), 3);
    assert_eq!(wc("a\u{1f}b"), 2);
}

#[test]
fn nan_logits_error_names_document_and_position() {
    let docs = corpus(6);
    let tok = MockTokenizer::new(false);
    let mut model = MockScorer::new(1);
    // make the model emit NaN after the first token of document 3
    let first_of_3 = tok.encode(&docs[3].text).unwrap().ids[0];
    model.nan_after_token = Some(first_of_3);
    let p = proto(ProtocolKind::Rolling, 8, 0, BosMode::Never);
    let e = evaluate(
        &tok,
        &model,
        ok_docs(&docs),
        &opts(p, 2, 256),
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err();
    match &e {
        RunError::Metrics { source_name, .. } => {
            assert!(source_name.starts_with("corpus.txt:"), "{e}")
        }
        other => panic!("unexpected {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("not finite") && msg.contains("window position"),
        "{msg}"
    );
}

#[test]
fn data_errors_are_reported() {
    let tok = MockTokenizer::new(false);
    let docs: Vec<Result<Document, String>> =
        vec![Ok(Document::new(0, "x", "a b c")), Err("bad line 2".into())];
    let p = proto(ProtocolKind::Rolling, 8, 0, BosMode::Never);
    let e = evaluate(
        &tok,
        &MockScorer::new(1),
        docs,
        &opts(p, 1, 256),
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("bad line 2"));
}

#[test]
fn compare_with_itself_and_with_another_model() {
    let docs = corpus(8);
    let tok = MockTokenizer::new(true);
    let mut pv = prov();
    pv.reference_model = Some(pv.model.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(proto(ProtocolKind::Sliding, 10, 5, BosMode::Auto), 3, 7);
    o.out_dir = Some(dir.path().to_path_buf());
    o.rows = RowsFormat::Jsonl;
    let same = compare(
        &tok,
        &MockScorer::new(5),
        &MockScorer::new(5),
        ok_docs(&docs),
        &o,
        &pv,
        &mut NoProgress,
    )
    .unwrap();
    assert!(same.summary.mean_kl_nats.abs() < 1e-12);
    assert_eq!(same.summary.delta_mean_nll_nats, 0.0);
    assert_eq!(same.summary.top1_agreement, 1.0);
    let rows = std::fs::read_to_string(dir.path().join("tokens.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(rows.lines().next().unwrap()).unwrap();
    for k in [
        "kl_nats",
        "ref_nll_nats",
        "ref_top1_id",
        "nll_nats",
        "context_len",
    ] {
        assert!(first.get(k).is_some(), "missing {k}");
    }
    let dir2 = tempfile::tempdir().unwrap();
    o.out_dir = Some(dir2.path().to_path_buf());
    let diff = compare(
        &tok,
        &MockScorer::new(5),
        &MockScorer::new(6),
        ok_docs(&docs),
        &o,
        &pv,
        &mut NoProgress,
    )
    .unwrap();
    assert!(diff.summary.mean_kl_nats > 0.01);
    // the model side equals a plain evaluation of the model
    let alone = evaluate(
        &tok,
        &MockScorer::new(5),
        ok_docs(&docs),
        &opts(o.protocol.clone(), 3, 7),
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    assert_same(&diff.summary.model, &alone.summary);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir2.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["mode"], "compare");
    assert!(summary["mean_kl_nats"].is_number());
    assert_eq!(summary["reference_source"]["reference"], "mock/model");
}

fn read_summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn summary_json_has_the_documented_keys() {
    let docs = corpus(8);
    let tok = MockTokenizer::new(false);
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(proto(ProtocolKind::Rolling, 8, 0, BosMode::Auto), 2, 256);
    o.out_dir = Some(dir.path().to_path_buf());
    let got = evaluate(
        &tok,
        &MockScorer::new(1),
        ok_docs(&docs),
        &o,
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    let s = read_summary(dir.path());
    for k in [
        "tokens_scored",
        "bytes_scored",
        "mean_nll_nats",
        "mean_nll_nats_stderr",
        "perplexity",
        "perplexity_ci95",
        "bits_per_token",
        "bits_per_byte",
        "mean_entropy_nats",
        "mean_varentropy_nats2",
        "top1_accuracy",
        "calibration_ece",
        "by_position",
        "tokens_per_second",
        "word_perplexity",
        "byte_perplexity",
        "tool_version",
        "model_source",
        "data",
        "protocol",
        "device",
        "dtype",
        "started_at",
        "finished_at",
    ] {
        assert!(s.get(k).is_some(), "summary.json lacks {k}");
    }
    assert_eq!(s["tokens_scored"], got.summary.tokens_scored);
    assert_eq!(s["perplexity_ci95"].as_array().unwrap().len(), 2);
    assert_eq!(s["protocol"]["name"], "rolling");
    assert_eq!(s["protocol"]["window"], 8);
    assert_eq!(s["protocol"]["batch_size"], 2);
    assert_eq!(s["model_source"]["files"][0]["sha256"], "ab".repeat(32));
    assert_eq!(s["data"]["sha256"], "cd".repeat(32));
    assert!(!dir.path().join(".summary.json.tmp").exists());
}

fn run_to_dir(
    dir: &Path,
    model: &MockScorer,
    rows: RowsFormat,
    resume: bool,
    p: &ProtocolConfig,
) -> Result<surprisal_runner::RunOutcome<EvalSummary>, RunError> {
    let docs = corpus(30);
    let tok = MockTokenizer::new(true);
    let mut o = opts(p.clone(), 3, 4);
    o.out_dir = Some(dir.to_path_buf());
    o.rows = rows;
    o.resume = resume;
    o.checkpoint_interval = Duration::ZERO;
    evaluate(&tok, model, ok_docs(&docs), &o, &prov(), &mut NoProgress)
}

#[test]
fn resume_after_crash_equals_uninterrupted_run() {
    for p in all_protocols() {
        for rows in [RowsFormat::Jsonl, RowsFormat::Parquet] {
            let full_dir = tempfile::tempdir().unwrap();
            let full = run_to_dir(full_dir.path(), &MockScorer::new(9), rows, false, &p).unwrap();
            for crash_at in [0usize, 1, 4] {
                let dir = tempfile::tempdir().unwrap();
                let mut m = MockScorer::new(9);
                m.fail_at_forward = Some(crash_at);
                let e = run_to_dir(dir.path(), &m, rows, false, &p).unwrap_err();
                assert!(e.to_string().contains("injected"), "{e}");
                assert!(dir.path().join("checkpoint.json").exists());
                // without --resume the directory is refused
                let e = run_to_dir(dir.path(), &MockScorer::new(9), rows, false, &p).unwrap_err();
                assert!(e.to_string().contains("--resume"), "{e}");
                // an unfinalized tail must be discarded: plant garbage
                let parts = dir.path().join("tokens.parts");
                std::fs::write(parts.join("part-000999.jsonl.tmp"), "garbage\n").unwrap();
                let m2 = MockScorer::new(9);
                let resumed = run_to_dir(dir.path(), &m2, rows, true, &p).unwrap();
                assert_eq!(
                    m2.forwards.get() + crash_at,
                    MockScorer::new(9).forwards.get() + full_forwards(&p, rows)
                );
                assert_eq!(resumed.summary.tokens_scored, full.summary.tokens_scored);
                assert!(
                    (resumed.summary.sum_nll_nats - full.summary.sum_nll_nats).abs()
                        <= 1e-12 * full.summary.sum_nll_nats.abs()
                );
                assert_same(&resumed.summary, &full.summary);
                assert_eq!(resumed.windows, full.windows);
                let name = rows.file_name().unwrap();
                assert_eq!(
                    std::fs::read(dir.path().join(name)).unwrap(),
                    std::fs::read(full_dir.path().join(name)).unwrap(),
                    "{name} differs after resume ({:?}, crash at {crash_at})",
                    p.kind
                );
                assert!(!dir.path().join("tokens.parts").exists());
                // resuming a complete run just reloads it
                let again = run_to_dir(dir.path(), &MockScorer::new(9), rows, true, &p).unwrap();
                assert!(again.already_complete);
                assert_same(&again.summary, &full.summary);
            }
        }
    }
}

/// Forward calls of an uninterrupted run.
fn full_forwards(p: &ProtocolConfig, rows: RowsFormat) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let m = MockScorer::new(9);
    run_to_dir(dir.path(), &m, rows, false, p).unwrap();
    m.forwards.get()
}

#[test]
fn resume_with_different_settings_is_refused_with_the_difference() {
    let p = proto(ProtocolKind::Sliding, 16, 8, BosMode::Never);
    let dir = tempfile::tempdir().unwrap();
    let mut m = MockScorer::new(9);
    m.fail_at_forward = Some(2);
    run_to_dir(dir.path(), &m, RowsFormat::None, false, &p).unwrap_err();
    let mut p2 = p.clone();
    p2.window = 32;
    let e = run_to_dir(dir.path(), &MockScorer::new(9), RowsFormat::None, true, &p2)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("window: checkpoint has 16, this run has 32"),
        "{e}"
    );
    let e = run_to_dir(dir.path(), &MockScorer::new(9), RowsFormat::Jsonl, true, &p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rows"), "{e}");
    // the original settings still resume
    run_to_dir(dir.path(), &MockScorer::new(9), RowsFormat::None, true, &p).unwrap();
}

#[test]
fn parquet_rows_are_typed_and_complete() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let p = proto(ProtocolKind::Chunks, 16, 0, BosMode::Never);
    let out = run_to_dir(
        dir.path(),
        &MockScorer::new(2),
        RowsFormat::Parquet,
        false,
        &p,
    )
    .unwrap();
    let f = std::fs::File::open(dir.path().join("tokens.parquet")).unwrap();
    let r = SerializedFileReader::new(f).unwrap();
    let md = r.metadata();
    assert_eq!(
        md.file_metadata().num_rows() as u64,
        out.summary.tokens_scored
    );
    let schema = md.file_metadata().schema_descr();
    let names: Vec<String> = schema
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    for k in [
        "doc",
        "index",
        "token_id",
        "token",
        "byte_start",
        "byte_end",
        "nll_nats",
        "entropy_nats",
        "varentropy_nats2",
        "top1_id",
        "top1_prob",
        "target_rank",
        "context_len",
    ] {
        assert!(names.contains(&k.to_string()), "missing column {k}");
    }
}

#[test]
fn invalid_settings_give_clear_errors() {
    let docs = corpus(3);
    let tok = MockTokenizer::new(false);
    let mut m = MockScorer::new(1);
    m.max_ctx = Some(8);
    let e = evaluate(
        &tok,
        &m,
        ok_docs(&docs),
        &opts(proto(ProtocolKind::Sliding, 16, 8, BosMode::Never), 1, 1),
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("maximum context of 8"), "{e}");
    let mut o = opts(proto(ProtocolKind::Sliding, 8, 4, BosMode::Never), 1, 1);
    o.rows = RowsFormat::Jsonl;
    let e = evaluate(
        &tok,
        &MockScorer::new(1),
        ok_docs(&docs),
        &o,
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--out"), "{e}");
    let e = evaluate(
        &tok,
        &MockScorer::new(1),
        ok_docs(&docs),
        &opts(proto(ProtocolKind::Chunks, 512, 0, BosMode::Never), 1, 1),
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("at least 1024 tokens"), "{e}");
}
