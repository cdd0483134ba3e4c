//! The results history of `surprisal suite`: `RESULTS/results.db`, an SQLite database (compiled in
//! through `rusqlite`'s `bundled` SQLite: no server) with one row per finished run.
//!
//! # Layout of a results root
//!
//! ```text
//! RESULTS/
//!   results.db                  this history (never the only copy: rebuilt from runs/ when lost)
//!   runs/<model>__<dataset>__<fingerprint12>/
//!     suite-pair.json           which suite pair the directory holds ([`PairInfo`])
//!     summary.json, tokens.*    an ordinary run directory (`surprisal eval --out`)
//! ```
//!
//! A run is registered ([`History::register_dir`]) in one transaction **after** its `summary.json`
//! is in place. A crash between the two leaves a finished run directory that is not in the
//! database; [`History::sync`] (run by every `surprisal suite run`) registers it. A database that
//! cannot be read is refused with a clear error by [`open`]; [`open_or_rebuild`] (used by `suite`)
//! moves it aside to `results.db.corrupt-<UTC time>` and rebuilds it from the run directories.
//!
//! # Schema (version [`SCHEMA_VERSION`])
//!
//! * `meta(key, value)`: `schema_version`.
//! * `runs`: one row per finished run: `fingerprint` (the suite pair's 64-hex fingerprint, unique),
//!   `run_dir` (relative to the results root), `suite`, `model_name` (the suite's short name),
//!   `model_reference` (canonical path or hub id), `model_files_json` (`[{path, sha256}]`),
//!   `model_sha256` (SHA-256 over the files' hashes), `checkpoint_step` (when the model's path names
//!   one), `dataset_name`, `data_path`, `data_sha256`, `protocol_json` (the summary's `protocol`
//!   object), `protocol_key` (`name/window/stride/bos/max_tokens/max_chunks`: runs are only compared
//!   under the same key), `mode`, `tool_version`, `host`, `device`, `dtype`, `stats_on`,
//!   `tokens_scored`, `windows`, `elapsed_seconds`, `tokens_per_second`, `started_at`,
//!   `finished_at` (RFC 3339 UTC), `registered_at`.
//! * `metrics(run_id, name, value, stderr, ci95_low, ci95_high)`: every scalar of the summary's
//!   metrics (`mean_nll_nats`, `perplexity`, `bits_per_byte`, `top1_accuracy`, `tokens_scored`,
//!   …). `stderr` is the summary's `NAME_stderr` when it has one; the 95 % CI is the summary's
//!   `NAME_ci95` when it has one (`perplexity`), else `value ± 1.96·stderr` (the summaries'
//!   convention), else null.
//! * `gates` (version 2): one row per gate check that `surprisal suite run --gate previous` (or
//!   `surprisal gate` on two registered runs) decided: `run_id` and `candidate_fingerprint` (the
//!   candidate run), `baseline_run_id`, `baseline_fingerprint`, `metric` (`delta_nll_nats`,
//!   `mean_kl_nats`, `top1_agreement`), `pairing` (`paired`/`unpaired`), `paired_tokens`,
//!   `estimate` (ΔNLL for `delta_nll_nats`), `stderr`, `bound` (the one-sided bound at
//!   `confidence`), `limit` (`at_most`/`at_least`), `tolerance` (the threshold), `confidence`,
//!   `verdict` (`pass`/`regression`), `created_at`. Unique per (candidate, baseline, metric): gating
//!   the same pair again replaces the verdict (in one transaction per gate).
//!
//! A version-1 database (no `gates` table) is migrated when opened: the table is created and
//! `schema_version` set to 2 in one transaction; when it cannot be written (a read-only file) it is
//! read as it is and [`History::gates`] returns no rows. A newer version is refused.
//!
//! # Read API (for `surprisal history`, `gate --baseline previous` and reports)
//!
//! ```no_run
//! use surprisal_runner::history::{self, Filter};
//! let h = history::open(std::path::Path::new("results"))?;          // read only; refuses a bad db
//! let filter = Filter { model: Some("exp1*".into()), data: None, suite: None };
//! let points = h.series(&filter, "mean_nll_nats")?;                   // ordered by model, step, date
//! let macro_avg = history::macro_average(&points);                    // per model version
//! let prev = h.previous(&points[0].run)?;                             // Option<RunRecord>
//! # Ok::<(), surprisal_runner::RunError>(())
//! ```
//!
//! * [`open`]`(root) -> Result<History>`; [`History::runs`]`(&Filter) -> Vec<RunRecord>`;
//!   [`History::series`]`(&Filter, metric) -> Vec<Point>`; [`macro_average`]`(&[Point]) ->
//!   Vec<MacroPoint>`; [`History::previous`]`(&RunRecord) -> Option<RunRecord>`;
//!   [`History::run_for_dir`]`(dir) -> Option<RunRecord>`; [`History::metric_names`];
//!   [`History::gates`]`(&Filter) -> Vec<GateRecord>` (the gate checks whose candidate the filter
//!   selects, oldest first). Writing: [`History::record_gate`]`(candidate, baseline, &GateReport)`.
//!
//! # Macro-average
//!
//! Per model version (same `suite`, `model_name`, `checkpoint_step`, `model_reference`,
//! `model_sha256`, `protocol_key`, `dtype` and `device`; the latest run per dataset), over the datasets of the selection, when the model has all of them:
//! `value = (1/D) Σ_d m_d` and `stderr = √(Σ_d se_d²) / D`. The datasets are different texts, so
//! their means are independent and the variance of the average is `Σ se_d² / D²`; each `se_d` is
//! the run's own standard error (tokens treated as independent, as in the summaries). The 95 % CI
//! is `value ± 1.96·stderr`. Checked against NumPy (`scripts/references/history_reference.py`).
//!
//! # "previous"
//!
//! The previous run of a run R is the latest finished run with the same `suite`, `model_name`,
//! `dataset_name` and `protocol_key`, ordered by `(checkpoint_step, finished_at)` strictly before
//! R's: for a glob over checkpoints the previous checkpoint, for a fixed path the previous night's
//! run of that path (new weights, a new surprisal version).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use surprisal_metrics::EvalSummary;

use crate::error::{Result, RunError};
use crate::output::summary::{now_rfc3339, FileDigest, ProtocolReport, SummaryFile, SUMMARY_FILE};

/// The database file inside a results root.
pub const DB_FILE: &str = "results.db";
/// The directory of the run directories inside a results root.
pub const RUNS_DIR: &str = "runs";
/// The pair description a suite writes into each run directory.
pub const PAIR_FILE: &str = "suite-pair.json";
/// Version of the database layout (`meta.schema_version`).
pub const SCHEMA_VERSION: i64 = 2;
/// z of the two-sided 95 % intervals (the summaries' `perplexity_ci95` convention).
pub const Z95: f64 = surprisal_metrics::Z_95;

/// What a suite writes into a run directory before running it ([`PAIR_FILE`]): the part of a
/// history row that `summary.json` does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairInfo {
    /// The pair's fingerprint (64 hex digits; the directory name ends with its first 12).
    pub fingerprint: String,
    /// The suite's name.
    pub suite: String,
    /// The model's short name in the suite.
    pub model_name: String,
    /// The checkpoint step the model's path names, if any.
    pub checkpoint_step: Option<u64>,
    /// SHA-256 over the model files' hashes (or of the hub id for a hub model).
    pub model_sha256: String,
    /// The dataset's short name in the suite.
    pub dataset_name: String,
    /// The host of the last session of the run.
    pub host: String,
}

impl PairInfo {
    /// Reads `dir/suite-pair.json`.
    pub fn read(dir: &Path) -> Result<PairInfo> {
        let p = dir.join(PAIR_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| RunError::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| {
            RunError::History(format!(
                "{} is not a valid suite pair file: {e}",
                p.display()
            ))
        })
    }

    /// Writes `dir/suite-pair.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        crate::output::summary::write_json_atomic(&dir.join(PAIR_FILE), self)
    }
}

/// One registered run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunRecord {
    /// Row id.
    pub id: i64,
    /// The pair fingerprint.
    pub fingerprint: String,
    /// The run directory (absolute: the results root joined with the stored relative path).
    pub run_dir: PathBuf,
    /// Suite name.
    pub suite: String,
    /// The model's short name in the suite.
    pub model_name: String,
    /// Canonical path or hub id.
    pub model_reference: String,
    /// The model files and their hashes.
    pub model_files: Vec<FileDigest>,
    /// SHA-256 over the files' hashes.
    pub model_sha256: String,
    /// Checkpoint step named by the path.
    pub checkpoint_step: Option<u64>,
    /// Dataset short name.
    pub dataset_name: String,
    /// Data path or `hf://` reference.
    pub data_path: String,
    /// SHA-256 of the data.
    pub data_sha256: String,
    /// The summary's `protocol` object.
    pub protocol: ProtocolReport,
    /// `name/window/stride/bos/max_tokens/max_chunks`.
    pub protocol_key: String,
    /// `eval`.
    pub mode: String,
    /// surprisal version.
    pub tool_version: String,
    /// Host of the run's last session.
    pub host: String,
    /// Device (`cpu`, `cuda:0`).
    pub device: String,
    /// Compute dtype (`f32`, `Q4_1`, …).
    pub dtype: String,
    /// `host` or `device`.
    pub stats_on: String,
    /// Scored tokens.
    pub tokens_scored: u64,
    /// Windows.
    pub windows: u64,
    /// Engine wall time (s).
    pub elapsed_seconds: f64,
    /// Tokens per second.
    pub tokens_per_second: f64,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// RFC 3339 UTC.
    pub finished_at: String,
}

impl RunRecord {
    /// `model@step` or the model name.
    pub fn model_label(&self) -> String {
        match self.checkpoint_step {
            Some(s) => format!("{}@{s}", self.model_name),
            None => self.model_name.clone(),
        }
    }
}

/// Which runs a query selects (all `None`: every run).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// A glob (`*`, `?`, `[…]`) matched against the model's short name, its `name@step` label or
    /// its reference.
    pub model: Option<String>,
    /// A glob matched against the dataset's short name.
    pub data: Option<String>,
    /// The suite's name, exactly.
    pub suite: Option<String>,
}

/// One metric of one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    /// The run.
    pub run: RunRecord,
    /// Metric name (`mean_nll_nats`).
    pub metric: String,
    /// Its value.
    pub value: f64,
    /// Its standard error, when the summary has one.
    pub stderr: Option<f64>,
    /// Its 95 % CI, when known (see the module docs).
    pub ci95: Option<[f64; 2]>,
}

/// The macro-average of a metric over the datasets, for one model version.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MacroPoint {
    /// Suite name.
    pub suite: String,
    /// The model's short name.
    pub model_name: String,
    /// Canonical path or hub id.
    pub model_reference: String,
    /// Checkpoint step.
    pub checkpoint_step: Option<u64>,
    /// The model version's hash.
    pub model_sha256: String,
    /// The protocol key.
    pub protocol_key: String,
    /// Compute dtype (`Q4_1` and `Q4_1 dequantized to F32` are different model versions).
    pub dtype: String,
    /// Device.
    pub device: String,
    /// Metric name.
    pub metric: String,
    /// The datasets averaged (sorted).
    pub datasets: Vec<String>,
    /// `(1/D) Σ m_d`.
    pub value: f64,
    /// `√(Σ se_d²) / D`; `None` when a dataset's run has no stderr for the metric.
    pub stderr: Option<f64>,
    /// `value ± 1.96·stderr`.
    pub ci95: Option<[f64; 2]>,
    /// The latest `finished_at` of the averaged runs.
    pub finished_at: String,
}

/// One recorded gate check (a row of `gates`, see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateRecord {
    /// Row id.
    pub id: i64,
    /// The candidate run's row id.
    pub run_id: i64,
    /// The candidate run's fingerprint.
    pub candidate_fingerprint: String,
    /// The baseline run's row id.
    pub baseline_run_id: i64,
    /// The baseline run's fingerprint.
    pub baseline_fingerprint: String,
    /// `delta_nll_nats`, `mean_kl_nats` or `top1_agreement`.
    pub metric: String,
    /// `paired` or `unpaired`.
    pub pairing: String,
    /// Tokens paired (paired estimates only).
    pub paired_tokens: Option<u64>,
    /// The estimate (ΔNLL, candidate − baseline, for `delta_nll_nats`).
    pub estimate: f64,
    /// Its standard error.
    pub stderr: f64,
    /// The one-sided bound at `confidence`.
    pub bound: f64,
    /// `at_most` (upper bound checked) or `at_least` (lower bound checked).
    pub limit: String,
    /// The threshold (`--max-delta-nll-nats`, …).
    pub tolerance: f64,
    /// One-sided confidence.
    pub confidence: f64,
    /// `pass` or `regression`.
    pub verdict: String,
    /// When the gate was recorded (RFC 3339 UTC).
    pub created_at: String,
}

impl GateRecord {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }
}

/// An open results history.
pub struct History {
    conn: Connection,
    root: PathBuf,
    /// Whether the database has the `gates` table (a version-1 file opened read-only has not).
    has_gates: bool,
}

fn db_err(path: &Path, e: rusqlite::Error) -> RunError {
    RunError::History(format!(
        "{} is not a readable results database ({e}); `surprisal suite run SUITE.toml --results {}` \
         moves it aside and rebuilds it from the run directories",
        path.display(),
        path.parent().map_or_else(|| ".".into(), |p| p.display().to_string())
    ))
}

/// Opens `root/results.db` for reading (and registering); refuses a missing, corrupt or
/// other-version database with one line naming the file.
pub fn open(root: &Path) -> Result<History> {
    let path = root.join(DB_FILE);
    if !path.is_file() {
        return Err(RunError::History(format!(
            "{} does not exist (a results root written by `surprisal suite run`)",
            path.display()
        )));
    }
    let conn = Connection::open(&path).map_err(|e| db_err(&path, e))?;
    let mut h = History {
        conn,
        root: root.to_path_buf(),
        has_gates: true,
    };
    h.check(&path)?;
    Ok(h)
}

/// Opens `root/results.db` for a suite: creates it when missing; a database that cannot be read is
/// moved aside (`results.db.corrupt-<time>`) and rebuilt from the run directories. Returns the
/// history and, when it was rebuilt, a line saying so.
pub fn open_or_rebuild(root: &Path) -> Result<(History, Option<String>)> {
    std::fs::create_dir_all(root).map_err(|e| RunError::io(root, e))?;
    let path = root.join(DB_FILE);
    let mut note = None;
    if path.exists() {
        match open(root) {
            Ok(h) => return Ok((h, None)),
            Err(e) => {
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
                let aside = root.join(format!("{DB_FILE}.corrupt-{stamp}"));
                std::fs::rename(&path, &aside).map_err(|e| RunError::io(&path, e))?;
                for ext in ["-journal", "-wal", "-shm"] {
                    let j = root.join(format!("{DB_FILE}{ext}"));
                    if j.exists() {
                        let to = root.join(format!("{DB_FILE}.corrupt-{stamp}{ext}"));
                        std::fs::rename(&j, &to).map_err(|e| RunError::io(&j, e))?;
                    }
                }
                note = Some(format!(
                    "{e}; moved it to {} and rebuilding it from {}",
                    aside.display(),
                    root.join(RUNS_DIR).display()
                ));
            }
        }
    }
    let conn = Connection::open(&path).map_err(|e| db_err(&path, e))?;
    let mut h = History {
        conn,
        root: root.to_path_buf(),
        has_gates: true,
    };
    h.create(&path)?;
    Ok((h, note))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL UNIQUE,
    run_dir TEXT NOT NULL,
    suite TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_reference TEXT NOT NULL,
    model_files_json TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    checkpoint_step INTEGER,
    dataset_name TEXT NOT NULL,
    data_path TEXT NOT NULL,
    data_sha256 TEXT NOT NULL,
    protocol_json TEXT NOT NULL,
    protocol_key TEXT NOT NULL,
    mode TEXT NOT NULL,
    tool_version TEXT NOT NULL,
    host TEXT NOT NULL,
    device TEXT NOT NULL,
    dtype TEXT NOT NULL,
    stats_on TEXT NOT NULL,
    tokens_scored INTEGER NOT NULL,
    windows INTEGER NOT NULL,
    elapsed_seconds REAL NOT NULL,
    tokens_per_second REAL NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    registered_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_series ON runs (suite, model_name, dataset_name, protocol_key);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    stderr REAL,
    ci95_low REAL,
    ci95_high REAL,
    PRIMARY KEY (run_id, name)
);
";

/// The table of version 2 (also the migration from version 1).
const GATES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gates (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    candidate_fingerprint TEXT NOT NULL,
    baseline_run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    baseline_fingerprint TEXT NOT NULL,
    metric TEXT NOT NULL,
    pairing TEXT NOT NULL,
    paired_tokens INTEGER,
    estimate REAL NOT NULL,
    stderr REAL NOT NULL,
    bound REAL NOT NULL,
    limit_side TEXT NOT NULL,
    tolerance REAL NOT NULL,
    confidence REAL NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'regression')),
    created_at TEXT NOT NULL,
    UNIQUE (run_id, baseline_run_id, metric)
);
CREATE INDEX IF NOT EXISTS gates_run ON gates (run_id);
";

/// `name/window/stride/bos/max_tokens/max_chunks` of a protocol (`-` for an absent value).
pub fn protocol_key(p: &ProtocolReport) -> String {
    let o = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |x| x.to_string());
    format!(
        "{}/{}/{}/{}/{}/{}",
        p.name.name(),
        p.window,
        o(p.stride.map(|s| s as u64)),
        p.bos.name(),
        o(p.max_tokens),
        o(p.max_chunks)
    )
}

/// SHA-256 over the files' hashes (`sha256\n` each, in order).
pub fn files_sha256(files: &[FileDigest]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        h.update(f.sha256.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// One metric of a summary: `(name, value, stderr, ci95)`.
pub type SummaryMetric = (String, f64, Option<f64>, Option<[f64; 2]>);

/// Every scalar metric of an eval summary: `(name, value, stderr, ci95)` (see the module docs).
pub fn summary_metrics(s: &EvalSummary) -> Result<Vec<SummaryMetric>> {
    let v = serde_json::to_value(s).map_err(|e| RunError::History(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| RunError::History("summary metrics are not an object".into()))?;
    let mut out = Vec::new();
    for (k, x) in obj {
        if k.ends_with("_stderr") || k.ends_with("_ci95") {
            continue;
        }
        let Some(value) = x.as_f64() else { continue };
        let stderr = obj.get(&format!("{k}_stderr")).and_then(|s| s.as_f64());
        let ci95 = match obj.get(&format!("{k}_ci95")).and_then(|c| c.as_array()) {
            Some(a) if a.len() == 2 => match (a[0].as_f64(), a[1].as_f64()) {
                (Some(lo), Some(hi)) => Some([lo, hi]),
                _ => None,
            },
            _ => stderr.map(|se| [value - Z95 * se, value + Z95 * se]),
        };
        out.push((k.clone(), value, stderr, ci95));
    }
    Ok(out)
}

/// A finished run directory's pair file and summary.
fn read_run_dir(dir: &Path) -> Result<(PairInfo, SummaryFile<EvalSummary>)> {
    let pair = PairInfo::read(dir)?;
    let summary = SummaryFile::<EvalSummary>::read(&dir.join(SUMMARY_FILE))?;
    if summary.mode != "eval" {
        return Err(RunError::History(format!(
            "{}: mode {:?}, the history holds eval runs",
            dir.join(SUMMARY_FILE).display(),
            summary.mode
        )));
    }
    Ok((pair, summary))
}

/// A database error of the history at `root`.
fn self_err(root: &Path, e: rusqlite::Error) -> RunError {
    RunError::History(format!("{}: {e}", root.join(DB_FILE).display()))
}

/// Glob match (`*`, `?`, `[…]`); a pattern that does not parse matches itself only.
fn glob_match(pattern: &str, s: &str) -> bool {
    match glob::Pattern::new(pattern) {
        Ok(p) => p.matches(s),
        Err(_) => pattern == s,
    }
}

/// A JSON text column of `r`, parsed.
fn json_column<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    name: &str,
) -> rusqlite::Result<T> {
    let text: String = r.get(name)?;
    serde_json::from_str(&text).map_err(|e| {
        let i = r.as_ref().column_index(name).unwrap_or(0);
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl History {
    /// The results root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn check(&mut self, path: &Path) -> Result<()> {
        let bad = |e: rusqlite::Error| db_err(path, e);
        self.conn
            .busy_timeout(std::time::Duration::from_secs(60))
            .map_err(bad)?;
        let ok: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(bad)?;
        if ok != "ok" {
            return Err(RunError::History(format!(
                "{} failed SQLite's integrity check ({ok}); `surprisal suite run SUITE.toml` moves it \
                 aside and rebuilds it from the run directories",
                path.display()
            )));
        }
        let version: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(bad)?;
        match version.as_deref() {
            Some(v) if v == SCHEMA_VERSION.to_string() => Ok(()),
            Some("1") => {
                // version 1 lacks only `gates`: add it (read as it is when the file is read-only)
                if self.migrate_v1().is_err() {
                    self.has_gates = false;
                }
                Ok(())
            }
            other => Err(RunError::History(format!(
                "{} has schema_version {}, this build reads {SCHEMA_VERSION}",
                path.display(),
                other.unwrap_or("(none)")
            ))),
        }
    }

    /// Version 1 → 2: creates `gates` and sets `schema_version` in one transaction.
    fn migrate_v1(&mut self) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute_batch(GATES_SCHEMA)?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'schema_version' AND value = '1'",
            params![SCHEMA_VERSION.to_string()],
        )?;
        tx.commit()
    }

    fn create(&mut self, path: &Path) -> Result<()> {
        let bad = |e: rusqlite::Error| db_err(path, e);
        self.conn
            .busy_timeout(std::time::Duration::from_secs(60))
            .map_err(bad)?;
        let fresh: bool = self
            .conn
            .query_row(
                "SELECT COUNT(*) = 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .map_err(bad)?;
        self.conn.execute_batch(SCHEMA).map_err(bad)?;
        if fresh {
            self.conn.execute_batch(GATES_SCHEMA).map_err(bad)?;
        }
        self.conn
            .execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )
            .map_err(bad)?;
        self.check(path)
    }

    fn err(&self, e: rusqlite::Error) -> RunError {
        RunError::History(format!("{}: {e}", self.root.join(DB_FILE).display()))
    }

    /// Registers the finished run in `dir` (its `summary.json` and `suite-pair.json`) in one
    /// transaction. Returns `false` when its fingerprint is already registered.
    pub fn register_dir(&mut self, dir: &Path) -> Result<bool> {
        let (pair, summary) = read_run_dir(dir)?;
        self.insert(dir, &pair, &summary)
    }

    fn insert(
        &mut self,
        dir: &Path,
        pair: &PairInfo,
        summary: &SummaryFile<EvalSummary>,
    ) -> Result<bool> {
        let root = self.root.clone();
        let rel = dir
            .strip_prefix(&self.root)
            .unwrap_or(dir)
            .display()
            .to_string();
        let metrics = summary_metrics(&summary.metrics)?;
        let prov = &summary.provenance;
        let files_json = serde_json::to_string(&prov.model.files)
            .map_err(|e| RunError::History(e.to_string()))?;
        let protocol_json = serde_json::to_string(&summary.protocol)
            .map_err(|e| RunError::History(e.to_string()))?;
        let tx = self.conn.transaction().map_err(|e| self_err(&root, e))?;
        let inserted = tx
            .execute(
                "INSERT INTO runs (fingerprint, run_dir, suite, model_name, model_reference,
                    model_files_json, model_sha256, checkpoint_step, dataset_name, data_path,
                    data_sha256, protocol_json, protocol_key, mode, tool_version, host, device, dtype,
                    stats_on, tokens_scored, windows, elapsed_seconds, tokens_per_second, started_at,
                    finished_at, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                    ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)
                 ON CONFLICT (fingerprint) DO NOTHING",
                params![
                    pair.fingerprint,
                    rel,
                    pair.suite,
                    pair.model_name,
                    prov.model.reference,
                    files_json,
                    pair.model_sha256,
                    pair.checkpoint_step.map(|s| s as i64),
                    pair.dataset_name,
                    prov.data.path,
                    prov.data.sha256,
                    protocol_json,
                    protocol_key(&summary.protocol),
                    summary.mode,
                    prov.tool_version,
                    pair.host,
                    prov.device,
                    prov.dtype,
                    summary.stats_on.name(),
                    summary.metrics.tokens_scored as i64,
                    summary.windows as i64,
                    summary.elapsed_seconds,
                    summary.tokens_per_second,
                    summary.started_at,
                    summary.finished_at,
                    now_rfc3339(),
                ],
            )
            .map_err(|e| self_err(&root, e))?;
        if inserted == 0 {
            return Ok(false);
        }
        let id = tx.last_insert_rowid();
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO metrics (run_id, name, value, stderr, ci95_low, ci95_high)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(|e| self_err(&root, e))?;
            for (name, value, se, ci) in &metrics {
                st.execute(params![
                    id,
                    name,
                    value,
                    se,
                    ci.map(|c| c[0]),
                    ci.map(|c| c[1])
                ])
                .map_err(|e| self_err(&root, e))?;
            }
        }
        tx.commit().map_err(|e| self_err(&root, e))?;
        Ok(true)
    }

    /// Registers every finished run directory under `root/runs` that is not in the database yet
    /// (after a crash between a run's summary and its registration, or to rebuild a lost
    /// database). Returns how many were registered and one line per directory that could not be
    /// read (left out; a database error still fails the whole call).
    pub fn sync(&mut self) -> Result<(usize, Vec<String>)> {
        let runs = self.root.join(RUNS_DIR);
        if !runs.is_dir() {
            return Ok((0, Vec::new()));
        }
        let known: std::collections::HashSet<String> = {
            let mut st = self
                .conn
                .prepare("SELECT fingerprint FROM runs")
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| self.err(e))?;
            rows.collect::<std::result::Result<_, _>>()
                .map_err(|e| self.err(e))?
        };
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
            .map_err(|e| RunError::io(&runs, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(SUMMARY_FILE).is_file() && p.join(PAIR_FILE).is_file())
            .collect();
        dirs.sort();
        let (mut n, mut skipped) = (0, Vec::new());
        for d in dirs {
            let pair = match PairInfo::read(&d) {
                Ok(p) => p,
                Err(e) => {
                    skipped.push(format!("{} left out of the history: {e}", d.display()));
                    continue;
                }
            };
            if known.contains(&pair.fingerprint) {
                continue;
            }
            match read_run_dir(&d) {
                Ok((pair, summary)) => {
                    if self.insert(&d, &pair, &summary)? {
                        n += 1;
                    }
                }
                Err(e) => skipped.push(format!("{} left out of the history: {e}", d.display())),
            }
        }
        Ok((n, skipped))
    }

    const RUN_COLUMNS: &'static str = "id, fingerprint, run_dir, suite, model_name, model_reference,
        model_files_json, model_sha256, checkpoint_step, dataset_name, data_path, data_sha256,
        protocol_json, protocol_key, mode, tool_version, host, device, dtype, stats_on, tokens_scored,
        windows, elapsed_seconds, tokens_per_second, started_at, finished_at";

    /// A `runs` row selected with [`Self::RUN_COLUMNS`], read by column name (so the mapping
    /// holds whatever the order of the list).
    fn record(&self, r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
        let rel: String = r.get("run_dir")?;
        Ok(RunRecord {
            id: r.get("id")?,
            fingerprint: r.get("fingerprint")?,
            run_dir: self.root.join(rel),
            suite: r.get("suite")?,
            model_name: r.get("model_name")?,
            model_reference: r.get("model_reference")?,
            model_files: json_column(r, "model_files_json")?,
            model_sha256: r.get("model_sha256")?,
            checkpoint_step: r
                .get::<_, Option<i64>>("checkpoint_step")?
                .map(|s| s as u64),
            dataset_name: r.get("dataset_name")?,
            data_path: r.get("data_path")?,
            data_sha256: r.get("data_sha256")?,
            protocol: json_column(r, "protocol_json")?,
            protocol_key: r.get("protocol_key")?,
            mode: r.get("mode")?,
            tool_version: r.get("tool_version")?,
            host: r.get("host")?,
            device: r.get("device")?,
            dtype: r.get("dtype")?,
            stats_on: r.get("stats_on")?,
            tokens_scored: r.get::<_, i64>("tokens_scored")? as u64,
            windows: r.get::<_, i64>("windows")? as u64,
            elapsed_seconds: r.get("elapsed_seconds")?,
            tokens_per_second: r.get("tokens_per_second")?,
            started_at: r.get("started_at")?,
            finished_at: r.get("finished_at")?,
        })
    }

    fn query_runs(&self, where_sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<RunRecord>> {
        let sql = format!(
            "SELECT {} FROM runs {where_sql} ORDER BY suite, model_name,
             COALESCE(checkpoint_step, -1), finished_at, dataset_name, id",
            Self::RUN_COLUMNS
        );
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(args, |r| self.record(r))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// The runs `filter` selects, ordered by suite, model, checkpoint step, finish time (seconds),
    /// dataset name.
    pub fn runs(&self, filter: &Filter) -> Result<Vec<RunRecord>> {
        let all = match &filter.suite {
            Some(s) => self.query_runs("WHERE suite = ?1", &[s])?,
            None => self.query_runs("", &[])?,
        };
        Ok(all
            .into_iter()
            .filter(|r| {
                filter.model.as_deref().is_none_or(|g| {
                    glob_match(g, &r.model_name)
                        || glob_match(g, &r.model_label())
                        || glob_match(g, &r.model_reference)
                })
            })
            .filter(|r| {
                filter
                    .data
                    .as_deref()
                    .is_none_or(|g| glob_match(g, &r.dataset_name))
            })
            .collect())
    }

    /// Metric names present in the history (sorted).
    pub fn metric_names(&self) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT name FROM metrics ORDER BY name")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// `metric` of every run `filter` selects (ordered as [`History::runs`]). An unknown metric
    /// is an error naming the known ones.
    pub fn series(&self, filter: &Filter, metric: &str) -> Result<Vec<Point>> {
        let names = self.metric_names()?;
        if !names.is_empty() && !names.iter().any(|n| n == metric) {
            return Err(RunError::History(format!(
                "unknown metric {metric:?} in {}; known: {}",
                self.root.join(DB_FILE).display(),
                names.join(", ")
            )));
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT value, stderr, ci95_low, ci95_high FROM metrics WHERE run_id = ?1 AND name = ?2",
            )
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for run in self.runs(filter)? {
            let m = st
                .query_row(params![run.id, metric], |r| {
                    Ok((
                        r.get::<_, f64>(0)?,
                        r.get::<_, Option<f64>>(1)?,
                        r.get::<_, Option<f64>>(2)?,
                        r.get::<_, Option<f64>>(3)?,
                    ))
                })
                .optional()
                .map_err(|e| self.err(e))?;
            if let Some((value, stderr, lo, hi)) = m {
                out.push(Point {
                    run,
                    metric: metric.to_string(),
                    value,
                    stderr,
                    ci95: lo.zip(hi).map(|(a, b)| [a, b]),
                });
            }
        }
        Ok(out)
    }

    /// The previous run of `run` (see the module docs), if any.
    pub fn previous(&self, run: &RunRecord) -> Result<Option<RunRecord>> {
        let same = self.query_runs(
            "WHERE suite = ?1 AND model_name = ?2 AND dataset_name = ?3 AND protocol_key = ?4",
            &[
                &run.suite,
                &run.model_name,
                &run.dataset_name,
                &run.protocol_key,
            ],
        )?;
        let key = |r: &RunRecord| (r.checkpoint_step, r.finished_at.clone(), r.id);
        let me = key(run);
        Ok(same
            .into_iter()
            .filter(|r| r.id != run.id && key(r) < me)
            .max_by(|a, b| key(a).cmp(&key(b))))
    }

    /// Records the checks of `report` (candidate `candidate` against `baseline`, both registered) in
    /// one transaction, replacing an earlier verdict of the same (candidate, baseline, metric).
    /// Returns the rows as stored.
    pub fn record_gate(
        &mut self,
        candidate: &RunRecord,
        baseline: &RunRecord,
        report: &crate::gate::GateReport,
    ) -> Result<Vec<GateRecord>> {
        use crate::gate::{Limit, Pairing};
        if !self.has_gates {
            return Err(RunError::History(format!(
                "{} is a version-1 results database that could not be migrated (read-only?); \
                 gate verdicts are not recorded",
                self.root.join(DB_FILE).display()
            )));
        }
        let root = self.root.clone();
        let (pairing, tokens) = match &report.pairing {
            Pairing::Paired { tokens } => ("paired", Some(*tokens as i64)),
            Pairing::Unpaired { .. } => ("unpaired", None),
        };
        let now = now_rfc3339();
        let tx = self.conn.transaction().map_err(|e| self_err(&root, e))?;
        for c in &report.checks {
            // only delta_nll_nats is paired or not; the compare gates come from the candidate alone
            let (pairing, tokens) = if c.name == "delta_nll_nats" {
                (pairing, tokens)
            } else {
                ("unpaired", None)
            };
            tx.execute(
                "INSERT INTO gates (run_id, candidate_fingerprint, baseline_run_id,
                    baseline_fingerprint, metric, pairing, paired_tokens, estimate, stderr, bound,
                    limit_side, tolerance, confidence, verdict, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                 ON CONFLICT (run_id, baseline_run_id, metric) DO UPDATE SET
                    candidate_fingerprint = excluded.candidate_fingerprint,
                    baseline_fingerprint = excluded.baseline_fingerprint,
                    pairing = excluded.pairing, paired_tokens = excluded.paired_tokens,
                    estimate = excluded.estimate, stderr = excluded.stderr, bound = excluded.bound,
                    limit_side = excluded.limit_side, tolerance = excluded.tolerance,
                    confidence = excluded.confidence, verdict = excluded.verdict,
                    created_at = excluded.created_at",
                params![
                    candidate.id,
                    candidate.fingerprint,
                    baseline.id,
                    baseline.fingerprint,
                    c.name,
                    pairing,
                    tokens,
                    c.estimate,
                    c.stderr,
                    c.bound,
                    match c.limit {
                        Limit::AtMost => "at_most",
                        Limit::AtLeast => "at_least",
                    },
                    c.threshold,
                    report.config.confidence,
                    if c.passed { "pass" } else { "regression" },
                    now,
                ],
            )
            .map_err(|e| self_err(&root, e))?;
        }
        tx.commit().map_err(|e| self_err(&root, e))?;
        let mut rows = self.gates_where(
            "WHERE g.run_id = ?1 AND g.baseline_run_id = ?2",
            &[&candidate.id, &baseline.id],
        )?;
        rows.retain(|g| report.checks.iter().any(|c| c.name == g.metric));
        Ok(rows)
    }

    fn gates_where(
        &self,
        where_sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<GateRecord>> {
        if !self.has_gates {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT g.id, g.run_id, g.candidate_fingerprint, g.baseline_run_id,
                g.baseline_fingerprint, g.metric, g.pairing, g.paired_tokens, g.estimate, g.stderr,
                g.bound, g.limit_side, g.tolerance, g.confidence, g.verdict, g.created_at
             FROM gates g {where_sql} ORDER BY g.created_at, g.id"
        );
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(args, |r| {
                Ok(GateRecord {
                    id: r.get("id")?,
                    run_id: r.get("run_id")?,
                    candidate_fingerprint: r.get("candidate_fingerprint")?,
                    baseline_run_id: r.get("baseline_run_id")?,
                    baseline_fingerprint: r.get("baseline_fingerprint")?,
                    metric: r.get("metric")?,
                    pairing: r.get("pairing")?,
                    paired_tokens: r.get::<_, Option<i64>>("paired_tokens")?.map(|t| t as u64),
                    estimate: r.get("estimate")?,
                    stderr: r.get("stderr")?,
                    bound: r.get("bound")?,
                    limit: r.get("limit_side")?,
                    tolerance: r.get("tolerance")?,
                    confidence: r.get("confidence")?,
                    verdict: r.get("verdict")?,
                    created_at: r.get("created_at")?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// The recorded gate checks whose candidate run `filter` selects, oldest first (empty for a
    /// version-1 database that could not be migrated).
    pub fn gates(&self, filter: &Filter) -> Result<Vec<GateRecord>> {
        let ids: std::collections::HashSet<i64> =
            self.runs(filter)?.into_iter().map(|r| r.id).collect();
        Ok(self
            .gates_where("", &[])?
            .into_iter()
            .filter(|g| ids.contains(&g.run_id))
            .collect())
    }

    /// The registered run whose directory is `dir` (by its `suite-pair.json` fingerprint).
    pub fn run_for_dir(&self, dir: &Path) -> Result<Option<RunRecord>> {
        let pair = PairInfo::read(dir)?;
        self.run_by_fingerprint(&pair.fingerprint)
    }

    /// The registered run with this fingerprint.
    pub fn run_by_fingerprint(&self, fingerprint: &str) -> Result<Option<RunRecord>> {
        Ok(self
            .query_runs("WHERE fingerprint = ?1", &[&fingerprint])?
            .into_iter()
            .next())
    }
}

/// The macro-average of `points` (one metric) over their datasets, per model version (see the
/// module docs); model versions missing one of the datasets are left out.
pub fn macro_average(points: &[Point]) -> Vec<MacroPoint> {
    use std::collections::{BTreeMap, BTreeSet};
    let datasets: BTreeSet<&str> = points.iter().map(|p| p.run.dataset_name.as_str()).collect();
    // model version -> dataset -> latest point
    type Key<'a> = (
        &'a str,
        &'a str,
        Option<u64>,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );
    let mut groups: BTreeMap<Key<'_>, BTreeMap<&str, &Point>> = BTreeMap::new();
    for p in points {
        let r = &p.run;
        let key = (
            r.suite.as_str(),
            r.model_name.as_str(),
            r.checkpoint_step,
            r.model_reference.as_str(),
            r.model_sha256.as_str(),
            r.protocol_key.as_str(),
            r.dtype.as_str(),
            r.device.as_str(),
        );
        let slot = groups.entry(key).or_default();
        match slot.get(r.dataset_name.as_str()) {
            Some(q) if (q.run.finished_at.as_str(), q.run.id) >= (r.finished_at.as_str(), r.id) => {
            }
            _ => {
                slot.insert(r.dataset_name.as_str(), p);
            }
        }
    }
    let mut out = Vec::new();
    for ((suite, name, step, reference, sha, proto, dtype, device), by_data) in groups {
        if by_data.len() != datasets.len() {
            continue;
        }
        let d = by_data.len() as f64;
        let value = by_data.values().map(|p| p.value).sum::<f64>() / d;
        let stderr = by_data
            .values()
            .map(|p| p.stderr.map(|s| s * s))
            .sum::<Option<f64>>()
            .map(|v| v.sqrt() / d);
        out.push(MacroPoint {
            suite: suite.to_string(),
            model_name: name.to_string(),
            model_reference: reference.to_string(),
            checkpoint_step: step,
            model_sha256: sha.to_string(),
            protocol_key: proto.to_string(),
            dtype: dtype.to_string(),
            device: device.to_string(),
            metric: points[0].metric.clone(),
            datasets: by_data.keys().map(|s| s.to_string()).collect(),
            value,
            stderr,
            ci95: stderr.map(|se| [value - Z95 * se, value + Z95 * se]),
            finished_at: by_data
                .values()
                .map(|p| p.run.finished_at.clone())
                .max()
                .unwrap_or_default(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database as version 1 wrote it: `meta`, `runs`, `metrics`, no `gates`.
    fn v1_db(root: &Path, version: &str) {
        std::fs::create_dir_all(root).unwrap();
        let c = Connection::open(root.join(DB_FILE)).unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
            params![version],
        )
        .unwrap();
    }

    fn tables(root: &Path) -> Vec<String> {
        let c = Connection::open(root.join(DB_FILE)).unwrap();
        let mut st = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let rows = st.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    fn version(root: &Path) -> String {
        let c = Connection::open(root.join(DB_FILE)).unwrap();
        c.query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_version_1_database_is_migrated_not_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        // read API
        let root = tmp.path().join("a");
        v1_db(&root, "1");
        assert!(!tables(&root).contains(&"gates".to_string()));
        let h = open(&root).unwrap();
        assert!(h.gates(&Filter::default()).unwrap().is_empty());
        drop(h);
        assert_eq!(version(&root), SCHEMA_VERSION.to_string());
        assert!(tables(&root).contains(&"gates".to_string()));
        // reopening the migrated file
        open(&root).unwrap();

        // suite: migrated in place, nothing moved aside
        let root = tmp.path().join("b");
        v1_db(&root, "1");
        let (h, note) = open_or_rebuild(&root).unwrap();
        assert_eq!(note, None);
        assert!(h.gates(&Filter::default()).unwrap().is_empty());
        drop(h);
        assert_eq!(version(&root), "2");
        let entries: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            entries.iter().all(|n| !n.contains("corrupt")),
            "{entries:?}"
        );

        // a fresh database is version 2 with the table
        let root = tmp.path().join("c");
        open_or_rebuild(&root).unwrap();
        assert_eq!(version(&root), "2");
        assert!(tables(&root).contains(&"gates".to_string()));
    }

    #[test]
    fn a_newer_version_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        v1_db(tmp.path(), "3");
        let e = open(tmp.path()).err().unwrap().to_string();
        assert!(e.contains("schema_version 3"), "{e}");
    }
}
