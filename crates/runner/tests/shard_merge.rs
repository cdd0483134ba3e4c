//! Sharded runs merged with `merge::merge` equal the unsharded run, against the mock model: for
//! every protocol, eval and compare, with token and word rows, in 1, 2, 3 and 7 shards; an
//! interrupted shard resumed; merge refusals; the directory lock.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use surprisal_runner::engine::count_windows;
use surprisal_runner::merge::merge;
use surprisal_runner::output::lock::DirLock;
use surprisal_runner::rows::{read_rows, CompareRow, TokenRow, WordRow};
use surprisal_runner::{
    compare, evaluate, BosMode, NoProgress, Progress, ProtocolConfig, ProtocolKind, RowsFormat,
    RunError, RunOptions, Shard, ShardPlan,
};

fn protocols() -> Vec<ProtocolConfig> {
    vec![
        proto(ProtocolKind::Sliding, 16, 8, BosMode::Never),
        proto(ProtocolKind::Sliding, 7, 3, BosMode::Auto),
        proto(ProtocolKind::Chunks, 16, 0, BosMode::Never),
        proto(ProtocolKind::Chunks, 15, 0, BosMode::Always),
        proto(ProtocolKind::Rolling, 9, 0, BosMode::Auto),
    ]
}

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

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Eval,
    Compare,
}

struct Setup {
    mode: Mode,
    protocol: ProtocolConfig,
    rows: RowsFormat,
    batch: usize,
}

impl Setup {
    fn opts(&self, dir: &Path) -> RunOptions {
        let mut o = RunOptions::new(self.protocol.clone());
        o.batch_size = self.batch;
        o.logit_chunk_rows = 5;
        o.out_dir = Some(dir.to_path_buf());
        o.rows = self.rows;
        o.words = self.rows;
        o.checkpoint_interval = Duration::ZERO;
        o
    }

    fn run(&self, o: &RunOptions, progress: &mut dyn Progress) -> Result<(), RunError> {
        let docs = corpus(14);
        let t = tok();
        match self.mode {
            Mode::Eval => evaluate(
                &t,
                &MockScorer::new(3),
                ok_docs(&docs),
                o,
                &prov(),
                progress,
            )
            .map(|_| ()),
            Mode::Compare => {
                let mut pv = prov();
                pv.reference_model = Some(pv.model.clone());
                compare(
                    &t,
                    &MockScorer::new(3),
                    &MockScorer::new(8),
                    ok_docs(&docs),
                    o,
                    &pv,
                    progress,
                )
                .map(|_| ())
            }
        }
    }

    fn shard_opts(&self, dir: &Path, i: u64, n: u64) -> RunOptions {
        let docs = corpus(14);
        let windows_total = count_windows(&tok(), None, &self.protocol, ok_docs(&docs)).unwrap();
        let mut o = self.opts(dir);
        o.shard = Some(ShardPlan {
            shard: Shard::new(i, n, "test").unwrap(),
            windows_total,
        });
        o
    }

    fn run_shards(&self, dir: &Path, n: u64) {
        for i in 0..n {
            self.run(&self.shard_opts(dir, i, n), &mut NoProgress)
                .unwrap_or_else(|e| panic!("{self:?} shard {i}/{n}: {e}"));
        }
    }
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {} w{} s{} {:?} batch {} rows {:?}",
            self.mode,
            self.protocol.kind,
            self.protocol.window,
            self.protocol.stride,
            self.protocol.bos,
            self.batch,
            self.rows
        )
    }
}

/// Keys that differ between any two runs (clock) or between a merged and an unsharded run by
/// design.
const RUN_KEYS: [&str; 5] = [
    "elapsed_seconds",
    "tokens_per_second",
    "started_at",
    "finished_at",
    "merged_shards",
];

/// Compares two summaries: integers and strings equal, floats to `1e-12` relative. Returns the
/// largest relative float difference and how many floats were bit-identical / compared.
fn compare_json(at: &str, a: &Value, b: &Value, acc: &mut (f64, usize, usize)) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                if RUN_KEYS.contains(&k.as_str()) {
                    continue;
                }
                let (va, vb) = (x.get(k), y.get(k));
                assert!(
                    va.is_some() && vb.is_some(),
                    "{at}.{k}: present in one only"
                );
                compare_json(&format!("{at}.{k}"), va.unwrap(), vb.unwrap(), acc);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (k, (va, vb)) in x.iter().zip(y).enumerate() {
                compare_json(&format!("{at}[{k}]"), va, vb, acc);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let rel = (x - y).abs() / x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
            assert!(rel <= 1e-12, "{at}: {x} vs {y} (relative {rel:e})");
            acc.0 = acc.0.max(rel);
            acc.1 += usize::from(x.to_bits() == y.to_bits());
            acc.2 += 1;
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

fn summary(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rows_json<R: surprisal_runner::rows::Record>(p: &Path) -> Vec<String> {
    read_rows::<R>(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

fn assert_same_outputs(s: &Setup, whole: &Path, merged: &Path, what: &str) -> (f64, usize, usize) {
    let mut acc = (0.0, 0, 0);
    compare_json(what, &summary(whole), &summary(merged), &mut acc);
    let ext = match s.rows {
        RowsFormat::Jsonl => "jsonl",
        _ => "parquet",
    };
    let tokens = format!("tokens.{ext}");
    let (a, b) = match s.mode {
        Mode::Eval => (
            rows_json::<TokenRow>(&whole.join(&tokens)),
            rows_json::<TokenRow>(&merged.join(&tokens)),
        ),
        Mode::Compare => (
            rows_json::<CompareRow>(&whole.join(&tokens)),
            rows_json::<CompareRow>(&merged.join(&tokens)),
        ),
    };
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len(), "{what}: token rows");
    assert!(a == b, "{what}: token rows differ");
    let words = format!("words.{ext}");
    let (a, b) = (
        rows_json::<WordRow>(&whole.join(&words)),
        rows_json::<WordRow>(&merged.join(&words)),
    );
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len(), "{what}: word rows");
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{what}: word row {k}");
    }
    acc
}

#[test]
fn merged_shards_equal_the_unsharded_run() {
    let mut worst = 0f64;
    let (mut same_bits, mut floats) = (0usize, 0usize);
    for mode in [Mode::Eval, Mode::Compare] {
        for (k, protocol) in protocols().into_iter().enumerate() {
            let s = Setup {
                mode,
                protocol,
                rows: if k % 2 == 0 {
                    RowsFormat::Parquet
                } else {
                    RowsFormat::Jsonl
                },
                batch: 1 + k % 3,
            };
            let whole = tempfile::tempdir().unwrap();
            s.run(&s.opts(whole.path()), &mut NoProgress).unwrap();
            for n in [1u64, 2, 3, 7] {
                let dir = tempfile::tempdir().unwrap();
                s.run_shards(dir.path(), n);
                merge(dir.path()).unwrap_or_else(|e| panic!("{s:?} {n} shards: {e}"));
                let acc =
                    assert_same_outputs(&s, whole.path(), dir.path(), &format!("{s:?} {n} shards"));
                worst = worst.max(acc.0);
                same_bits += acc.1;
                floats += acc.2;
            }
        }
    }
    eprintln!(
        "summary floats: {same_bits} of {floats} bit-identical, largest relative difference {worst:e}"
    );
}

#[test]
fn a_finished_shard_rerun_is_a_no_op() {
    let s = Setup {
        mode: Mode::Eval,
        protocol: proto(ProtocolKind::Sliding, 16, 8, BosMode::Never),
        rows: RowsFormat::Jsonl,
        batch: 2,
    };
    let dir = tempfile::tempdir().unwrap();
    let o = s.shard_opts(dir.path(), 1, 3);
    s.run(&o, &mut NoProgress).unwrap();
    let shard = dir.path().join("shard-00001-of-00003");
    let before = std::fs::read(shard.join("summary.json")).unwrap();
    // no --resume: a scheduler retry of a finished task
    s.run(&o, &mut NoProgress).unwrap();
    assert_eq!(std::fs::read(shard.join("summary.json")).unwrap(), before);
}

/// Sets the interrupt flag after `n` advances.
struct StopAfter {
    n: u64,
    seen: u64,
    flag: Arc<AtomicBool>,
}

impl Progress for StopAfter {
    fn start(&mut self, _: Option<u64>, _: u64) {}
    fn advance(&mut self, k: u64) {
        self.seen += k;
        if self.seen >= self.n {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
    fn finish(&mut self) {}
}

#[test]
fn an_interrupted_shard_resumes_to_the_same_merge() {
    for protocol in protocols() {
        let s = Setup {
            mode: Mode::Eval,
            protocol,
            rows: RowsFormat::Parquet,
            batch: 2,
        };
        let whole = tempfile::tempdir().unwrap();
        s.run(&s.opts(whole.path()), &mut NoProgress).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for i in [0, 2, 1] {
            let mut o = s.shard_opts(dir.path(), i, 3);
            if i == 1 {
                let flag = Arc::new(AtomicBool::new(false));
                o.interrupt = Some(flag.clone());
                let mut stop = StopAfter {
                    n: 5,
                    seen: 0,
                    flag,
                };
                let e = s.run(&o, &mut stop).unwrap_err();
                assert!(matches!(e, RunError::Interrupted { .. }), "{e}");
                // merging now names the unfinished shard
                let e = merge(dir.path()).unwrap_err().to_string();
                assert!(
                    e.contains("shard-00001-of-00003") && e.contains("not finished"),
                    "{e}"
                );
                o.interrupt = None;
                o.resume = true;
            }
            s.run(&o, &mut NoProgress).unwrap();
        }
        merge(dir.path()).unwrap();
        assert_same_outputs(&s, whole.path(), dir.path(), &format!("{s:?} resumed"));
    }
}

#[test]
fn merge_refuses_incomplete_or_mixed_shard_sets() {
    let s = Setup {
        mode: Mode::Eval,
        protocol: proto(ProtocolKind::Sliding, 16, 8, BosMode::Never),
        rows: RowsFormat::Jsonl,
        batch: 1,
    };
    let err = |dir: &Path| merge(dir).unwrap_err().to_string();

    let empty = tempfile::tempdir().unwrap();
    assert!(err(empty.path()).contains("no shard directories"));

    // missing index
    let dir = tempfile::tempdir().unwrap();
    s.run(&s.shard_opts(dir.path(), 0, 3), &mut NoProgress)
        .unwrap();
    s.run(&s.shard_opts(dir.path(), 2, 3), &mut NoProgress)
        .unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("shard 1 of 3 is missing") && e.contains("shard-00001-of-00003"),
        "{e}"
    );

    // duplicate index (another spelling of the same shard)
    s.run(&s.shard_opts(dir.path(), 1, 3), &mut NoProgress)
        .unwrap();
    merge(dir.path()).unwrap();
    let copy = dir.path().join("shard-1-of-3");
    std::fs::create_dir(&copy).unwrap();
    let e = err(dir.path());
    assert!(e.contains("shard 1 appears twice"), "{e}");
    std::fs::remove_dir(&copy).unwrap();

    // different shard count
    let other = dir.path().join("shard-00000-of-00002");
    std::fs::create_dir(&other).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("shard-00000-of-00002") && e.contains("one of 2 shards"),
        "{e}"
    );
    std::fs::remove_dir(&other).unwrap();

    // a shard of a different run (another model)
    let mut o = s.shard_opts(dir.path(), 2, 3);
    o.out_dir = Some(dir.path().join("elsewhere"));
    let docs = corpus(14);
    let mut pv = prov();
    pv.model.files[0].sha256 = "ef".repeat(32);
    evaluate(
        &tok(),
        &MockScorer::new(3),
        ok_docs(&docs),
        &o,
        &pv,
        &mut NoProgress,
    )
    .unwrap();
    let theirs = dir.path().join("shard-00002-of-00003");
    std::fs::remove_dir_all(&theirs).unwrap();
    std::fs::rename(dir.path().join("elsewhere/shard-00002-of-00003"), &theirs).unwrap();
    let e = err(dir.path());
    assert!(
        e.contains("shard-00002-of-00003")
            && e.contains("different run")
            && e.contains("model_files"),
        "{e}"
    );

    // a shard being written (its lock is held)
    s.run(&s.shard_opts(dir.path(), 2, 3), &mut NoProgress)
        .unwrap_err();
    std::fs::remove_dir_all(&theirs).unwrap();
    s.run(&s.shard_opts(dir.path(), 2, 3), &mut NoProgress)
        .unwrap();
    let held = DirLock::acquire(&theirs).unwrap();
    let e = err(dir.path());
    assert!(e.contains(&std::process::id().to_string()), "{e}");
    drop(held);
    merge(dir.path()).unwrap();
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid() {
    let s = Setup {
        mode: Mode::Eval,
        protocol: proto(ProtocolKind::Sliding, 16, 8, BosMode::Never),
        rows: RowsFormat::Jsonl,
        batch: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let held = DirLock::acquire(dir.path()).unwrap();
    let e = s.run(&s.opts(dir.path()), &mut NoProgress).unwrap_err();
    assert!(matches!(e, RunError::Locked { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("PID {}", std::process::id())),
        "{msg}"
    );
    drop(held);
    s.run(&s.opts(dir.path()), &mut NoProgress).unwrap();
}

#[test]
fn summary_json_reads_back_into_the_type_that_wrote_it() {
    use surprisal_metrics::EvalSummary;
    use surprisal_runner::{CompareReport, SummaryFile};
    for mode in [Mode::Eval, Mode::Compare] {
        let s = Setup {
            mode,
            protocol: proto(ProtocolKind::Sliding, 16, 8, BosMode::Never),
            rows: RowsFormat::Jsonl,
            batch: 2,
        };
        let dir = tempfile::tempdir().unwrap();
        s.run(&s.opts(dir.path()), &mut NoProgress).unwrap();
        let p = dir.path().join("summary.json");
        let text = std::fs::read_to_string(&p).unwrap();
        // read, write again: the same bytes
        let again = match mode {
            Mode::Eval => {
                let f = SummaryFile::<EvalSummary>::read(&p).unwrap();
                assert_eq!(f.schema_version, 2);
                assert!(f.metrics.tokens_scored > 0);
                serde_json::to_string_pretty(&f).unwrap()
            }
            Mode::Compare => {
                let f = SummaryFile::<CompareReport>::read(&p).unwrap();
                assert!(!f.metrics.top_kl_positions.is_empty());
                serde_json::to_string_pretty(&f).unwrap()
            }
        };
        assert_eq!(again + "\n", text, "{mode:?}");
        // another layout version is refused, naming the file
        std::fs::write(
            &p,
            text.replace("\"schema_version\": 2", "\"schema_version\": 1"),
        )
        .unwrap();
        let e = SummaryFile::<EvalSummary>::read(&p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("schema_version 1") && e.contains("summary.json"),
            "{e}"
        );
    }
}
