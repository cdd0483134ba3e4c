//! The engine with `RunOptions::stats_on = Device` against `Host`, on the mock model wrapped so that
//! it hands out its logits as CPU tensors (`Scorer::logits_device` / `logits_tensor`): summaries,
//! per-token and per-word rows agree within the f32 tolerance of `tests/device_stats.rs`, the
//! exact fields are equal, NaN logits give the host path's error message word for word, and the
//! choice is resolved, recorded and fingerprinted as documented.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use serde_json::Value;
use surprisal_runner::{
    compare, evaluate, BosMode, NoProgress, ProtocolKind, RowsFormat, RunError, RunOptions, Scorer,
    StatsLocation, StatsOn, Tokenize,
};

/// Same float tolerance as `tests/device_stats.rs` (relative to `max(1, |host|)`); aggregates are
/// means of per-token values, so they cannot differ by more than the per-token bound.
const REL: f64 = 1e-5;

/// The mock model, also able to hand its logits out as a `(N, V)` CPU tensor.
struct DeviceMock(MockScorer);

impl Scorer for DeviceMock {
    type Hidden = Vec<Vec<u32>>;
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn max_context(&self) -> Option<usize> {
        self.0.max_context()
    }
    fn forward(&self, rows: &[&[u32]]) -> Result<Self::Hidden, RunError> {
        self.0.forward(rows)
    }
    fn logits(
        &self,
        hidden: &Self::Hidden,
        pairs: &[(usize, usize)],
        out: &mut Vec<f32>,
    ) -> Result<(), RunError> {
        self.0.logits(hidden, pairs, out)
    }
    fn logits_device(&self) -> Option<Device> {
        Some(Device::Cpu)
    }
    fn logits_tensor(
        &self,
        hidden: &Self::Hidden,
        pairs: &[(usize, usize)],
    ) -> Result<Option<Tensor>, RunError> {
        let mut flat = Vec::new();
        self.0.logits(hidden, pairs, &mut flat)?;
        let t = Tensor::from_vec(flat, (pairs.len(), VOCAB), &Device::Cpu)
            .map_err(|e| RunError::Model(e.to_string()))?;
        Ok(Some(t))
    }
}

/// The mock tokenizer with a vocabulary in which every third token starts a word, so the
/// word-boundary mask of `--words` selects a real subset.
fn spaced_tok() -> VocabTextTok {
    VocabTextTok {
        inner: MockTokenizer::new(true),
        text: |i| {
            if i % 3 == 0 {
                format!(" w{i}")
            } else {
                format!("w{i}")
            }
        },
    }
}

fn opts(kind: ProtocolKind, stats_on: StatsOn, dir: Option<&std::path::Path>) -> RunOptions {
    let p = match kind {
        ProtocolKind::Sliding => proto(kind, 12, 5, BosMode::Always),
        ProtocolKind::Chunks => proto(kind, 12, 0, BosMode::Never),
        ProtocolKind::Rolling => proto(kind, 9, 0, BosMode::Auto),
    };
    let mut o = RunOptions::new(p);
    o.batch_size = 3;
    o.logit_chunk_rows = 7;
    o.stats_on = stats_on;
    if let Some(d) = dir {
        o.out_dir = Some(d.to_path_buf());
        o.rows = RowsFormat::Jsonl;
        o.words = RowsFormat::Jsonl;
    }
    o
}

/// Walks two JSON values: same structure, equal strings/bools/integers, floats within [`REL`]
/// of `max(1, |host|)`. `path` names the place in messages.
fn assert_json_close(dev: &Value, host: &Value, path: &str) {
    match (dev, host) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{path}: keys"
            );
            for (k, v) in a {
                assert_json_close(v, &b[k], &format!("{path}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_json_close(x, y, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= REL * y.abs().max(1.0),
                "{path}: device {x}, host {y}"
            );
        }
        _ => assert_eq!(dev, host, "{path}"),
    }
}

fn jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The parts of an output directory that must agree: summary metrics (run facts and the
/// `stats_on` record removed), token rows, word rows.
fn outputs(dir: &std::path::Path) -> (Value, Vec<Value>, Vec<Value>) {
    let mut s: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    for k in [
        "tokens_per_second",
        "elapsed_seconds",
        "started_at",
        "finished_at",
        "stats_on",
    ] {
        s.as_object_mut().unwrap().remove(k);
    }
    (
        s,
        jsonl(&dir.join("tokens.jsonl")),
        jsonl(&dir.join("words.jsonl")),
    )
}

fn stats_on_of(dir: &std::path::Path) -> Value {
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    s["stats_on"].clone()
}

#[test]
fn eval_on_the_device_matches_the_host_path() {
    let docs = corpus(12);
    let tok = spaced_tok();
    let model = DeviceMock(MockScorer::new(3));
    for kind in [
        ProtocolKind::Sliding,
        ProtocolKind::Chunks,
        ProtocolKind::Rolling,
    ] {
        let (dd, dh) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let run = |on, dir| {
            evaluate(
                &tok,
                &model,
                ok_docs(&docs),
                &opts(kind, on, Some(dir)),
                &prov(),
                &mut NoProgress,
            )
            .unwrap()
        };
        let d = run(StatsOn::Device, dd.path());
        let h = run(StatsOn::Host, dh.path());
        assert_eq!(d.stats_on, StatsLocation::Device);
        assert_eq!(h.stats_on, StatsLocation::Host);
        assert_eq!(stats_on_of(dd.path()), "device");
        assert_eq!(stats_on_of(dh.path()), "host");
        assert!(d.summary.tokens_scored > 100);
        assert_outputs_close(dd.path(), dh.path(), &format!("{kind:?}"));
    }
}

/// The summaries, token rows and word rows a device run and a host run wrote agree
/// ([`assert_json_close`]).
fn assert_outputs_close(dev: &std::path::Path, host: &std::path::Path, what: &str) {
    let (sd, td, wd) = outputs(dev);
    let (sh, th, wh) = outputs(host);
    assert_json_close(&sd, &sh, &format!("{what} summary"));
    assert_json_close(
        &Value::from(td),
        &Value::from(th),
        &format!("{what} tokens"),
    );
    assert_json_close(&Value::from(wd), &Value::from(wh), &format!("{what} words"));
}

#[test]
fn compare_on_the_device_matches_the_host_path() {
    let docs = corpus(12);
    let tok = spaced_tok();
    let (m, r) = (
        DeviceMock(MockScorer::new(5)),
        DeviceMock(MockScorer::new(6)),
    );
    let mut pv = prov();
    pv.reference_model = Some(pv.model.clone());
    for kind in [ProtocolKind::Sliding, ProtocolKind::Rolling] {
        let (dd, dh) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let run = |on, dir| {
            compare(
                &tok,
                &m,
                &r,
                ok_docs(&docs),
                &opts(kind, on, Some(dir)),
                &pv,
                &mut NoProgress,
            )
            .unwrap()
        };
        let d = run(StatsOn::Device, dd.path());
        let h = run(StatsOn::Host, dh.path());
        assert_eq!(d.stats_on, StatsLocation::Device);
        assert!(h.summary.mean_kl_nats > 0.01);
        assert_outputs_close(dd.path(), dh.path(), &format!("{kind:?}"));
    }
}

/// A NaN logit: the device path hands the chunk back and the user sees the host path's message.
#[test]
fn nan_logits_give_the_host_paths_error() {
    let docs = corpus(6);
    let tok = MockTokenizer::new(false);
    let first_of_3 = tok.encode(&docs[3].text).unwrap().ids[0];
    let mut inner = MockScorer::new(1);
    inner.nan_after_token = Some(first_of_3);
    let model = DeviceMock(inner);
    let err = |on| {
        evaluate(
            &tok,
            &model,
            ok_docs(&docs),
            &opts(ProtocolKind::Rolling, on, None),
            &prov(),
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string()
    };
    let (d, h) = (err(StatsOn::Device), err(StatsOn::Host));
    assert!(h.contains("not finite"), "{h}");
    assert_eq!(d, h);
    // compare: the model's NaN, and the reference's
    let mut pv = prov();
    pv.reference_model = Some(pv.model.clone());
    let clean = DeviceMock(MockScorer::new(1));
    for (m, r) in [(&model, &clean), (&clean, &model)] {
        let err = |on| {
            compare(
                &tok,
                m,
                r,
                ok_docs(&docs),
                &opts(ProtocolKind::Rolling, on, None),
                &pv,
                &mut NoProgress,
            )
            .unwrap_err()
            .to_string()
        };
        let (d, h) = (err(StatsOn::Device), err(StatsOn::Host));
        assert!(h.contains("not finite"), "{h}");
        assert_eq!(d, h);
    }
}

#[test]
fn auto_is_host_on_the_cpu_and_device_needs_device_tensors() {
    let docs = corpus(3);
    let tok = MockTokenizer::new(true);
    let o = opts(ProtocolKind::Sliding, StatsOn::Auto, None);
    let out = evaluate(
        &tok,
        &DeviceMock(MockScorer::new(1)),
        ok_docs(&docs),
        &o,
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(out.stats_on, StatsLocation::Host);
    // a scorer without device tensors (the default hook) keeps working, and refuses `device`
    let plain = MockScorer::new(1);
    let out = evaluate(&tok, &plain, ok_docs(&docs), &o, &prov(), &mut NoProgress).unwrap();
    assert_eq!(out.stats_on, StatsLocation::Host);
    let o = opts(ProtocolKind::Sliding, StatsOn::Device, None);
    let e = evaluate(&tok, &plain, ok_docs(&docs), &o, &prov(), &mut NoProgress).unwrap_err();
    assert!(matches!(e, RunError::Config(_)), "{e}");
    assert!(e.to_string().contains("--stats-on"), "{e}");
}

/// A run checkpointed with one statistics location cannot be resumed with the other.
#[test]
fn resume_refuses_another_stats_location() {
    let docs = corpus(6);
    let tok = MockTokenizer::new(true);
    let model = DeviceMock(MockScorer::new(2));
    let dir = tempfile::tempdir().unwrap();
    let o = opts(ProtocolKind::Sliding, StatsOn::Host, Some(dir.path()));
    evaluate(&tok, &model, ok_docs(&docs), &o, &prov(), &mut NoProgress).unwrap();
    let mut again = opts(ProtocolKind::Sliding, StatsOn::Device, Some(dir.path()));
    again.resume = true;
    let e = evaluate(
        &tok,
        &model,
        ok_docs(&docs),
        &again,
        &prov(),
        &mut NoProgress,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("stats_on") && msg.contains("\"host\"") && msg.contains("\"device\""),
        "{msg}"
    );
    // the original setting resumes (here: reloads the complete run)
    let mut same = o.clone();
    same.resume = true;
    let out = evaluate(
        &tok,
        &model,
        ok_docs(&docs),
        &same,
        &prov(),
        &mut NoProgress,
    )
    .unwrap();
    assert!(out.already_complete);
}
