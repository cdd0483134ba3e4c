//! Running a suite's pairs and gating them against the history.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use quick_xml::events::{BytesEnd, BytesStart, Event};
use quick_xml::Writer;

use super::{Pair, Suite, SuiteProgress};
use crate::engine::RunOptions;
use crate::error::{Result, RunError};
use crate::gate::{self, GateConfig, GateReport};
use crate::history::{self, History, PairInfo, RunRecord, RUNS_DIR};
use crate::job::{self, JobSpec, ModelSpec};
use crate::output::checkpoint::CHECKPOINT_FILE;
use crate::output::summary::SUMMARY_FILE;
use crate::shard::Shard;

/// How to run a suite.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// The results root.
    pub results: PathBuf,
    /// This task's share of the pairs (pairs `k` with `k mod count = index`).
    pub shard: Option<Shard>,
    /// Ctrl-C / SIGTERM flag, checked between batches.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Minimum time between checkpoints of a pair's run.
    pub checkpoint_interval: Duration,
}

/// What happened to a pair.
#[derive(Clone, Debug, PartialEq)]
pub enum PairStatus {
    /// Scored now (fresh or resumed).
    Ran,
    /// Already finished: nothing to do.
    Skipped,
    /// Another process holds its directory (the message says which).
    Busy(String),
}

/// A pair after this run.
#[derive(Clone, Debug)]
pub struct PairOutcome {
    /// The pair.
    pub pair: Pair,
    /// Its run directory.
    pub dir: PathBuf,
    /// What happened.
    pub status: PairStatus,
    /// Its history row (finished pairs).
    pub record: Option<RunRecord>,
    /// Its mean NLL, stderr and perplexity (finished pairs).
    pub nll: Option<(f64, f64, f64)>,
}

impl PairOutcome {
    /// `[k/n] model × data: ran|finished before|busy …` with the numbers.
    pub fn line(&self, k: usize, n: usize) -> String {
        let mut s = format!("[{k}/{n}] {}: ", self.pair.label());
        match &self.status {
            PairStatus::Busy(m) => {
                let _ = write!(s, "busy, skipped ({m})");
                return s;
            }
            PairStatus::Ran => s.push_str("done"),
            PairStatus::Skipped => s.push_str("finished before"),
        }
        if let (Some(r), Some((nll, se, ppl))) = (&self.record, self.nll) {
            let _ = write!(
                s,
                ", mean_nll_nats {nll:.6} ± {se:.6}, perplexity {ppl:.4}, {} tokens, {:.0} tokens/s, {:.1} s",
                r.tokens_scored, r.tokens_per_second, r.elapsed_seconds
            );
        }
        let _ = write!(s, " -> {}", self.dir.display());
        s
    }
}

/// The outcome of [`run`].
#[derive(Clone, Debug)]
pub struct SuiteReport {
    /// Pairs of the whole suite.
    pub pairs_total: usize,
    /// This task's pairs, in order.
    pub outcomes: Vec<PairOutcome>,
    /// Finished run directories registered while syncing the history (a crash between a summary
    /// and its registration, a rebuilt database).
    pub registered_on_sync: usize,
    /// Set when `results.db` was unreadable and rebuilt.
    pub rebuilt: Option<String>,
}

impl SuiteReport {
    /// Pairs another process held.
    pub fn busy(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o.status, PairStatus::Busy(_)))
            .count()
    }
}

/// Whether `dir` holds a finished run (summary written and the checkpoint marked complete) with
/// nothing left to clean up: staged row parts left by a kill right after the complete mark send
/// the pair through the engine, which removes them (and scores nothing).
fn finished(dir: &Path) -> bool {
    if !dir.join(SUMMARY_FILE).is_file()
        || dir.join("tokens.parts").exists()
        || dir.join("words.parts").exists()
    {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct Complete {
        complete: bool,
    }
    match std::fs::read_to_string(dir.join(CHECKPOINT_FILE)) {
        Ok(t) => serde_json::from_str::<Complete>(&t).is_ok_and(|c| c.complete),
        // a merged sharded run has no checkpoint of its own
        Err(_) => true,
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end]) {
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown".into())
}

/// Runs this task's pairs of `suite` (see the module docs of [`crate::suite`]): finished pairs are
/// skipped, interrupted ones resumed, each finished run registered in `RESULTS/results.db`.
pub fn run(
    suite: &Suite,
    opts: &SuiteOptions,
    progress: &mut dyn SuiteProgress,
) -> Result<SuiteReport> {
    let settings = suite.settings()?;
    let pairs = suite.plan()?;
    let root = &opts.results;
    let (mut hist, rebuilt) = history::open_or_rebuild(root)?;
    if let Some(note) = &rebuilt {
        eprintln!("warning: {note}");
    }
    let (registered_on_sync, unreadable) = hist.sync()?;
    for w in &unreadable {
        eprintln!("warning: {w}");
    }
    if registered_on_sync > 0 {
        progress.line(&format!(
            "registered {registered_on_sync} finished run(s) found in {} that were missing from {}",
            root.join(RUNS_DIR).display(),
            root.join(history::DB_FILE).display()
        ));
    }
    let mine: Vec<Pair> = pairs
        .iter()
        .filter(|p| {
            opts.shard
                .as_ref()
                .is_none_or(|s| p.index as u64 % s.count == s.index)
        })
        .cloned()
        .collect();
    progress.suite_start(mine.len());
    let host = host_name();
    let mut outcomes = Vec::new();
    for (k, pair) in mine.into_iter().enumerate() {
        let dir = root.join(RUNS_DIR).join(&pair.dir_name);
        progress.pair_start(&pair, k);
        let info = PairInfo {
            fingerprint: pair.fingerprint.clone(),
            suite: suite.name.clone(),
            model_name: pair.model.name.clone(),
            checkpoint_step: pair.model.checkpoint_step,
            model_sha256: pair.model.sha256.clone(),
            dataset_name: pair.data.name.clone(),
            host: host.clone(),
        };
        let status = if finished(&dir) {
            // a damaged pair file (the sync left the run out) is written again from the plan
            if PairInfo::read(&dir).is_err() {
                info.write(&dir)?;
            }
            PairStatus::Skipped
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| RunError::io(&dir, e))?;
            info.write(&dir)?;
            let model = ModelSpec {
                reference: pair.model.reference.clone(),
                device: settings.device.clone(),
                dtype: pair.model.dtype.clone(),
                dequantize: pair.model.dequantize,
            };
            let mut run = RunOptions::new(settings.protocol.clone());
            run.batch_size = settings.batch_size;
            run.out_dir = Some(dir.clone());
            run.rows = settings.rows;
            run.words = settings.words;
            run.resume = true;
            run.stats_on = settings.stats_on;
            run.checkpoint_interval = opts.checkpoint_interval;
            run.interrupt = opts.interrupt.clone();
            let job = JobSpec {
                data: pair.data.data.clone(),
                text_field: pair.data.text_field.clone(),
                run,
                shard: None,
            };
            match job::eval(&model, &job, progress) {
                Ok(o) if o.already_complete => PairStatus::Skipped,
                Ok(_) => PairStatus::Ran,
                Err(e @ RunError::Locked { .. }) => PairStatus::Busy(e.to_string()),
                Err(e @ RunError::Interrupted { .. }) => return Err(e),
                Err(e) => {
                    return Err(RunError::Suite(format!(
                        "pair {} ({}): {e}",
                        pair.label(),
                        dir.display()
                    )))
                }
            }
        };
        let (record, nll) = if matches!(status, PairStatus::Busy(_)) {
            (None, None)
        } else {
            hist.register_dir(&dir)?;
            let rec = hist.run_by_fingerprint(&pair.fingerprint)?.ok_or_else(|| {
                RunError::History(format!(
                    "{} was registered but cannot be read back",
                    dir.display()
                ))
            })?;
            let s = crate::output::summary::SummaryFile::<surprisal_metrics::EvalSummary>::read(
                &dir.join(SUMMARY_FILE),
            )?;
            let m = &s.metrics;
            (
                Some(rec),
                Some((m.mean_nll_nats, m.mean_nll_nats_stderr, m.perplexity)),
            )
        };
        let outcome = PairOutcome {
            pair,
            dir,
            status,
            record,
            nll,
        };
        progress.pair_done(&outcome);
        outcomes.push(outcome);
    }
    Ok(SuiteReport {
        pairs_total: pairs.len(),
        outcomes,
        registered_on_sync,
        rebuilt,
    })
}

/// One pair's gate against its previous run.
#[derive(Clone, Debug)]
pub struct PairGate {
    /// `model[@step] × dataset`.
    pub label: String,
    /// The pair's run.
    pub candidate: RunRecord,
    /// Its previous run, if the history has one.
    pub baseline: Option<RunRecord>,
    /// The gate (`None` without a previous run).
    pub report: Option<GateReport>,
    /// The gate's checks as recorded in the history's `gates` table.
    pub recorded: Vec<history::GateRecord>,
}

impl PairGate {
    /// Whether the gate passed (no previous run passes).
    pub fn passed(&self) -> bool {
        self.report.as_ref().is_none_or(|r| r.passed())
    }
}

/// Gates every finished pair of `outcomes` against its previous run in `hist`
/// ([`History::previous`]) and records each gate's verdict in the history
/// ([`History::record_gate`], one transaction per pair).
pub fn gate_previous(
    hist: &mut History,
    outcomes: &[PairOutcome],
    config: &GateConfig,
) -> Result<Vec<PairGate>> {
    let mut out = Vec::new();
    for o in outcomes {
        let Some(rec) = &o.record else { continue };
        let baseline = hist.previous(rec)?;
        let (report, recorded) = match &baseline {
            Some(b) => {
                let r = gate::run_gate(&b.run_dir, &rec.run_dir, config)?;
                let recorded = hist.record_gate(rec, b, &r)?;
                (Some(r), recorded)
            }
            None => (None, Vec::new()),
        };
        out.push(PairGate {
            label: o.pair.label(),
            candidate: rec.clone(),
            baseline,
            report,
            recorded,
        });
    }
    Ok(out)
}

/// The plain-text report of the gates: one block per pair.
pub fn gates_text(gates: &[PairGate]) -> String {
    let mut s = String::new();
    for g in gates {
        let _ = writeln!(s, "== {}", g.label);
        match &g.report {
            Some(r) => s.push_str(&gate::markdown::to_text(r)),
            None => {
                let _ = writeln!(
                    s,
                    "gate        SKIPPED (no previous run of {} on {} in the history)",
                    g.candidate.model_name, g.candidate.dataset_name
                );
            }
        }
    }
    s
}

/// The Markdown report of the gates: a table of pairs, then each pair's report.
pub fn gates_markdown(gates: &[PairGate]) -> String {
    let mut s = String::new();
    let failed = gates.iter().filter(|g| !g.passed()).count();
    let icon = if failed == 0 { "✅" } else { "❌" };
    let _ = writeln!(
        s,
        "## surprisal suite --gate previous: {icon} {failed} of {} pairs regressed\n",
        gates.len()
    );
    let _ = writeln!(s, "| pair | baseline | delta_nll_nats | result |");
    let _ = writeln!(s, "| --- | --- | ---: | --- |");
    for g in gates {
        let (base, delta, result) = match (&g.baseline, &g.report) {
            (Some(b), Some(r)) => (
                format!("`{}` ({})", b.model_label(), b.finished_at),
                r.checks
                    .first()
                    .map_or(String::new(), |c| format!("{} ± {}", c.estimate, c.stderr)),
                if r.passed() { "pass" } else { "**regression**" }.to_string(),
            ),
            _ => (
                "none".into(),
                String::new(),
                "skipped (no previous run)".into(),
            ),
        };
        let _ = writeln!(s, "| {} | {base} | {delta} | {result} |", g.label);
    }
    for g in gates {
        if let Some(r) = &g.report {
            let _ = writeln!(s, "\n#### {}\n", g.label);
            s.push_str(&gate::markdown::to_markdown(r));
        }
    }
    s
}

/// JUnit XML of the gates: one `<testsuite>` per pair (named `model[@step] × dataset`); a pair
/// without a previous run has one skipped test case.
pub fn gates_junit(gates: &[PairGate], timestamp: &str) -> Result<String> {
    use crate::gate::junit::{end_document, junit_time, start_document, write_testsuite, xml_err};
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let tests: usize = gates
        .iter()
        .map(|g| g.report.as_ref().map_or(1, |r| r.checks.len()))
        .sum();
    let failures: usize = gates
        .iter()
        .map(|g| g.report.as_ref().map_or(0, |r| r.failures()))
        .sum();
    let time: f64 = gates
        .iter()
        .filter_map(|g| g.report.as_ref().map(|r| r.elapsed_seconds))
        .sum();
    start_document(
        &mut w,
        &tests.to_string(),
        &failures.to_string(),
        &junit_time(time),
    )?;
    for g in gates {
        match &g.report {
            Some(r) => write_testsuite(&mut w, &g.label, r, timestamp)?,
            None => {
                let mut suite = BytesStart::new("testsuite");
                suite.extend_attributes([
                    ("name", g.label.as_str()),
                    ("tests", "1"),
                    ("failures", "0"),
                    ("errors", "0"),
                    ("skipped", "1"),
                    ("time", "0.000"),
                    ("timestamp", timestamp),
                ]);
                w.write_event(Event::Start(suite)).map_err(xml_err)?;
                let mut tc = BytesStart::new("testcase");
                tc.extend_attributes([
                    ("name", "delta_nll_nats"),
                    ("classname", "surprisal.gate"),
                    ("time", "0"),
                ]);
                w.write_event(Event::Start(tc)).map_err(xml_err)?;
                let msg = format!(
                    "no previous run of {} on {} in the history",
                    g.candidate.model_name, g.candidate.dataset_name
                );
                let mut sk = BytesStart::new("skipped");
                sk.extend_attributes([("message", msg.as_str())]);
                w.write_event(Event::Empty(sk)).map_err(xml_err)?;
                w.write_event(Event::End(BytesEnd::new("testcase")))
                    .map_err(xml_err)?;
                w.write_event(Event::End(BytesEnd::new("testsuite")))
                    .map_err(xml_err)?;
            }
        }
    }
    end_document(w)
}
