//! Per-word rows (`RunOptions::words`) and interruption, against the mock model.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use surprisal_metrics::{log_mass, token_stats, EvalSummary};
use surprisal_runner::protocol::{DocTotals, ModelTokens, Planner};
use surprisal_runner::words::{bow_mask, mark_tokens, word_rows, TokenWordInput, WordRow};
use surprisal_runner::{
    compare, evaluate, BosMode, Document, NoProgress, ProtocolConfig, ProtocolKind, RowsFormat,
    RunError, RunOptions, RunOutcome, Tokenize,
};

fn all_protocols() -> Vec<ProtocolConfig> {
    vec![
        proto(ProtocolKind::Sliding, 16, 8, BosMode::Never),
        proto(ProtocolKind::Sliding, 16, 5, BosMode::Always),
        proto(ProtocolKind::Sliding, 7, 1, BosMode::Auto),
        proto(ProtocolKind::Sliding, 6, 5, BosMode::Always),
        proto(ProtocolKind::Chunks, 16, 0, BosMode::Never),
        proto(ProtocolKind::Chunks, 15, 0, BosMode::Always),
        proto(ProtocolKind::Rolling, 9, 0, BosMode::Auto),
    ]
}

/// The mock tokenizer with a decoded vocabulary: even ids decode with a leading space
/// (word-initial), odd ids without; BOS and EOS decode to nothing.
fn tok() -> VocabTextTok {
    VocabTextTok {
        inner: MockTokenizer::new(true),
        text: |id| match id {
            0 | 1 => String::new(),
            i if i % 2 == 0 => format!(" w{i}"),
            i => format!("w{i}"),
        },
    }
}

fn mask(t: &VocabTextTok) -> Vec<bool> {
    let mut m = bow_mask(t.vocab_texts(VOCAB).into_iter());
    mark_tokens(&mut m, &[EOS]);
    m
}

/// Independent expectation: plan the windows, compute every scored token's
/// NLL and `log P_bow` from the mock rows, then `word_rows` per document.
fn expected_words(
    t: &VocabTextTok,
    model: &MockScorer,
    docs: &[Document],
    p: &ProtocolConfig,
) -> Vec<WordRow> {
    let r = p
        .resolve(&ModelTokens {
            bos_id: t.bos_id(),
            eos_id: t.eos_id(),
            adds_bos: t.adds_bos(),
            max_context: model.max_ctx,
        })
        .unwrap();
    let bos_used = r.bos.is_some();
    let m = mask(t);
    let mut pl = Planner::new(r);
    // global index -> (nll, log P_bow, predicted from BOS alone)
    let mut scored: BTreeMap<u64, (f64, f64, bool)> = BTreeMap::new();
    let drain = |pl: &mut Planner, scored: &mut BTreeMap<u64, (f64, f64, bool)>| {
        while let Some(w) = pl.pop() {
            for s in &w.scored {
                let logits = model.row(w.input[s.position], s.position);
                let nll = token_stats(&logits, s.token.id).unwrap().nll_nats;
                let bos_only = bos_used && s.position == 0;
                let fresh = scored.insert(s.token.global, (nll, log_mass(&logits, &m), bos_only));
                assert!(fresh.is_none(), "token scored twice");
            }
        }
    };
    let mut per_doc = Vec::new(); // (doc, global start, tokens)
    let mut g = 0u64;
    for d in docs {
        let e = t.encode(&d.text).unwrap();
        let toks: Vec<(u32, usize, usize)> = e
            .ids
            .iter()
            .zip(&e.byte_spans)
            .map(|(&i, &(a, b))| (i, a, b))
            .collect();
        per_doc.push((d, g, e.byte_spans.clone()));
        g += toks.len() as u64;
        pl.push_document(d.index, &toks, DocTotals::default());
        drain(&mut pl, &mut scored);
    }
    pl.finish().unwrap();
    drain(&mut pl, &mut scored);
    let rolling = p.kind == ProtocolKind::Rolling;
    let mut out = Vec::new();
    for (d, start, spans) in per_doc {
        let tokens: Vec<TokenWordInput> = spans
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| {
                let s = scored.get(&(start + i as u64));
                TokenWordInput {
                    byte_start: a,
                    byte_end: b,
                    nll_nats: s.map(|x| x.0),
                    log_p_bow_before: s.map(|x| x.1),
                }
            })
            .collect();
        // after the last token: the distribution predicting the next stream
        // token, when it saw this document's last token
        let end = start + spans.len() as u64;
        let fin = match scored.get(&end) {
            Some(&(_, lpb, bos_only)) if !rolling && !bos_only && !spans.is_empty() => Some(lpb),
            _ => None,
        };
        out.extend(word_rows(d.index, &d.text, &tokens, fin));
    }
    out
}

fn read_jsonl(path: &Path) -> Vec<WordRow> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}

fn assert_rows_match(got: &[WordRow], want: &[WordRow], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of word rows");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (
                g.doc,
                g.word_index,
                &g.word,
                g.byte_start,
                g.byte_end,
                g.n_tokens
            ),
            (
                w.doc,
                w.word_index,
                &w.word,
                w.byte_start,
                w.byte_end,
                w.n_tokens
            ),
            "{what}"
        );
        assert!(
            close(g.surprisal_nats, w.surprisal_nats),
            "{what}: {g:?} vs {w:?}"
        );
        assert!(
            close(g.surprisal_corrected_nats, w.surprisal_corrected_nats),
            "{what}: {g:?} vs {w:?}"
        );
    }
}

fn words_opts(p: &ProtocolConfig, dir: &Path, batch: usize, format: RowsFormat) -> RunOptions {
    let mut o = RunOptions::new(p.clone());
    o.batch_size = batch;
    o.logit_chunk_rows = 4;
    o.out_dir = Some(dir.to_path_buf());
    o.words = format;
    o.checkpoint_interval = Duration::ZERO;
    o
}

fn run_words(
    dir: &Path,
    model: &MockScorer,
    p: &ProtocolConfig,
    format: RowsFormat,
    resume: bool,
) -> Result<RunOutcome<EvalSummary>, RunError> {
    let docs = corpus(30);
    let mut o = words_opts(p, dir, 3, format);
    o.resume = resume;
    evaluate(&tok(), model, ok_docs(&docs), &o, &prov(), &mut NoProgress)
}

#[test]
fn word_rows_match_direct_computation_for_every_protocol_and_batching() {
    let docs = corpus(25);
    let t = tok();
    let model = MockScorer::new(5);
    for p in all_protocols() {
        let want = expected_words(&t, &model, &docs, &p);
        assert!(want.iter().any(|w| w.surprisal_corrected_nats.is_some()));
        for batch in [1, 4] {
            let dir = tempfile::tempdir().unwrap();
            let o = words_opts(&p, dir.path(), batch, RowsFormat::Jsonl);
            let out = evaluate(&t, &model, ok_docs(&docs), &o, &prov(), &mut NoProgress).unwrap();
            let path = out.words_path.clone().unwrap();
            assert_eq!(path, dir.path().join("words.jsonl"));
            assert!(!dir.path().join("words.parts").exists());
            let got = read_jsonl(&path);
            assert_rows_match(&got, &want, &format!("{:?} batch {batch}", p));
        }
    }
}

#[test]
fn word_rows_telescope_to_document_nll_with_bos() {
    // sliding with BOS, stride < window: every token is scored once with its
    // full left context, so every word has a surprisal, every corrected one
    // exists except the very last word, and per document
    // Σ corrected = Σ nll − log P_bow(after the document).
    let docs = corpus(12);
    let t = tok();
    let model = MockScorer::new(3);
    let p = proto(ProtocolKind::Sliding, 16, 5, BosMode::Always);
    let dir = tempfile::tempdir().unwrap();
    let mut o = words_opts(&p, dir.path(), 2, RowsFormat::Jsonl);
    o.rows = RowsFormat::Jsonl;
    let out = evaluate(&t, &model, ok_docs(&docs), &o, &prov(), &mut NoProgress).unwrap();
    let words = read_jsonl(&out.words_path.unwrap());
    let n_words: usize = docs.iter().map(|d| d.text.split_whitespace().count()).sum();
    assert_eq!(words.len(), n_words);
    assert!(words.iter().all(|w| w.surprisal_nats.is_some()));
    let last = words.len() - 1;
    for (i, w) in words.iter().enumerate() {
        assert_eq!(w.surprisal_corrected_nats.is_some(), i != last, "{w:?}");
        assert_eq!(w.n_tokens, 1);
    }
    // token rows give Σ nll per document
    let tokens: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("tokens.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let m = mask(&t);
    for d in &docs[..docs.len() - 1] {
        let nll: f64 = tokens
            .iter()
            .filter(|r| r["doc"] == d.index)
            .map(|r| r["nll_nats"].as_f64().unwrap())
            .sum();
        let corrected: f64 = words
            .iter()
            .filter(|w| w.doc == d.index)
            .map(|w| w.surprisal_corrected_nats.unwrap())
            .sum();
        // the distribution after the document's last token predicts the next
        // document's first token: find its window position via the token rows
        let next = tokens
            .iter()
            .find(|r| r["doc"] == d.index + 1 && r["index"] == 0)
            .unwrap();
        let prev_last = tokens.iter().rfind(|r| r["doc"] == d.index).unwrap();
        let pos = next["context_len"].as_u64().unwrap() as usize - 1;
        let prev_id = prev_last["token_id"].as_u64().unwrap() as u32;
        let fin = log_mass(&model.row(prev_id, pos), &m);
        assert!(
            (corrected - (nll - fin)).abs() < 1e-9,
            "doc {}: {corrected} vs {}",
            d.index,
            nll - fin
        );
    }
}

#[test]
fn compare_writes_the_models_word_rows() {
    let docs = corpus(10);
    let t = tok();
    let p = proto(ProtocolKind::Sliding, 16, 8, BosMode::Always);
    let model = MockScorer::new(5);
    let want = expected_words(&t, &model, &docs, &p);
    let dir = tempfile::tempdir().unwrap();
    let o = words_opts(&p, dir.path(), 2, RowsFormat::Jsonl);
    let mut pv = prov();
    pv.reference_model = Some(pv.model.clone());
    let out = compare(
        &t,
        &model,
        &MockScorer::new(6),
        ok_docs(&docs),
        &o,
        &pv,
        &mut NoProgress,
    )
    .unwrap();
    assert_rows_match(&read_jsonl(&out.words_path.unwrap()), &want, "compare");
}

#[test]
fn words_resume_after_crash_equals_uninterrupted_run() {
    for p in all_protocols() {
        for format in [RowsFormat::Jsonl, RowsFormat::Parquet] {
            let full_dir = tempfile::tempdir().unwrap();
            run_words(full_dir.path(), &MockScorer::new(9), &p, format, false).unwrap();
            let name = format.words_file_name().unwrap();
            let full = std::fs::read(full_dir.path().join(name)).unwrap();
            for crash_at in [0usize, 2, 5] {
                let dir = tempfile::tempdir().unwrap();
                let mut m = MockScorer::new(9);
                m.fail_at_forward = Some(crash_at);
                let e = run_words(dir.path(), &m, &p, format, false).unwrap_err();
                assert!(e.to_string().contains("injected"), "{e}");
                // an unfinalized tail must be discarded: plant garbage
                let parts = dir.path().join("words.parts");
                std::fs::write(parts.join("part-000999.jsonl.tmp"), "garbage\n").unwrap();
                // resuming without words (or another format) is refused
                let e = run_words(dir.path(), &MockScorer::new(9), &p, RowsFormat::None, true)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("words"), "{e}");
                run_words(dir.path(), &MockScorer::new(9), &p, format, true).unwrap();
                assert_eq!(
                    std::fs::read(dir.path().join(name)).unwrap(),
                    full,
                    "{name} differs after resume ({p:?}, crash at {crash_at})"
                );
                assert!(!parts.exists());
                let again = run_words(dir.path(), &MockScorer::new(9), &p, format, true).unwrap();
                assert!(again.already_complete);
                assert_eq!(again.words_path, Some(dir.path().join(name)));
            }
        }
    }
}

#[test]
fn words_need_an_output_directory() {
    let docs = corpus(3);
    let mut o = RunOptions::new(proto(ProtocolKind::Sliding, 8, 4, BosMode::Never));
    o.words = RowsFormat::Jsonl;
    let e = evaluate(
        &tok(),
        &MockScorer::new(1),
        ok_docs(&docs),
        &o,
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--out"), "{e}");
}

/// A scorer that raises the interrupt flag during forward number `at`.
struct InterruptingScorer {
    inner: MockScorer,
    flag: Arc<AtomicBool>,
    at: usize,
}

impl surprisal_runner::Scorer for InterruptingScorer {
    type Hidden = Vec<Vec<u32>>;
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn max_context(&self) -> Option<usize> {
        self.inner.max_context()
    }
    fn forward(&self, rows: &[&[u32]]) -> Result<Self::Hidden, RunError> {
        if self.inner.forwards.get() == self.at {
            self.flag.store(true, Ordering::SeqCst);
        }
        self.inner.forward(rows)
    }
    fn logits(
        &self,
        hidden: &Self::Hidden,
        pairs: &[(usize, usize)],
        out: &mut Vec<f32>,
    ) -> Result<(), RunError> {
        self.inner.logits(hidden, pairs, out)
    }
}

#[test]
fn interrupt_checkpoints_finished_batches_and_resume_completes() {
    let docs = corpus(30);
    let p = proto(ProtocolKind::Sliding, 16, 8, BosMode::Always);
    let full_dir = tempfile::tempdir().unwrap();
    let mut o = words_opts(&p, full_dir.path(), 2, RowsFormat::Jsonl);
    o.rows = RowsFormat::Jsonl;
    o.checkpoint_interval = Duration::from_secs(3600);
    let full = evaluate(
        &tok(),
        &MockScorer::new(4),
        ok_docs(&docs),
        &o,
        &prov(),
        &mut NoProgress,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    o.out_dir = Some(dir.path().to_path_buf());
    let flag = Arc::new(AtomicBool::new(false));
    o.interrupt = Some(flag.clone());
    let s = InterruptingScorer {
        inner: MockScorer::new(4),
        flag: flag.clone(),
        at: 3,
    };
    let e = evaluate(&tok(), &s, ok_docs(&docs), &o, &prov(), &mut NoProgress).unwrap_err();
    match &e {
        RunError::Interrupted { out_dir } => assert_eq!(out_dir.as_deref(), Some(dir.path())),
        other => panic!("expected Interrupted, got {other}"),
    }
    assert!(e.to_string().contains("--resume"), "{e}");
    // the batch during which the flag was raised finished: 4 forwards
    assert_eq!(s.inner.forwards.get(), 4);
    let ck: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("checkpoint.json")).unwrap())
            .unwrap();
    assert_eq!(ck["windows_done"], 8);
    assert_eq!(ck["complete"], false);

    o.interrupt = None;
    o.resume = true;
    let m2 = MockScorer::new(4);
    let resumed = evaluate(&tok(), &m2, ok_docs(&docs), &o, &prov(), &mut NoProgress).unwrap();
    assert_eq!(resumed.summary.tokens_scored, full.summary.tokens_scored);
    assert_eq!(
        resumed.summary.sum_nll_nats.to_bits(),
        full.summary.sum_nll_nats.to_bits()
    );
    for name in ["tokens.jsonl", "words.jsonl"] {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            std::fs::read(full_dir.path().join(name)).unwrap(),
            "{name}"
        );
    }

    // without an output directory there is nothing to save
    let mut o = RunOptions::new(p.clone());
    let flag = Arc::new(AtomicBool::new(true));
    o.interrupt = Some(flag);
    let e = evaluate(
        &tok(),
        &MockScorer::new(4),
        ok_docs(&docs),
        &o,
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(e, RunError::Interrupted { out_dir: None }), "{e}");
    assert!(e.to_string().contains("nothing was saved"), "{e}");
}
