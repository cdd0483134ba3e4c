//! One run directory, loaded for the report: its `summary.json` (in the type that wrote it) and,
//! where the run wrote them, its per-token and per-word rows.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use surprisal_metrics::{EvalSummary, PositionBin};
use surprisal_runner::checkpoint::CHECKPOINT_FILE;
use surprisal_runner::output::summary::{SCHEMA_VERSION, SUMMARY_FILE};
use surprisal_runner::rows::{read_rows, CompareRow, Record, TokenRow, WordRow};
use surprisal_runner::{CompareReport, SummaryFile};

use crate::error::{ReportError, Result};

/// What the run measured.
#[derive(Debug)]
pub enum Summary {
    /// `surprisal eval`.
    Eval(Box<SummaryFile<EvalSummary>>),
    /// `surprisal compare`.
    Compare(Box<SummaryFile<CompareReport>>),
}

/// The reference's columns of a `compare` token row.
#[derive(Clone, Copy, Debug)]
pub struct RefColumns {
    /// `KL(reference ‖ model)` (nats).
    pub kl_nats: f64,
    /// The reference's NLL (nats).
    pub ref_nll_nats: f64,
}

/// A loaded run directory.
#[derive(Debug)]
pub struct Run {
    /// The directory.
    pub dir: PathBuf,
    /// Short name in legends and headings (the directory's name).
    pub label: String,
    /// `summary.json`.
    pub summary: Summary,
    /// `summary.json` as JSON, for the provenance table.
    pub raw: serde_json::Value,
    /// Per-token rows (empty when the run wrote none); in `compare` the model's columns.
    pub tokens: Vec<TokenRow>,
    /// `compare`: the reference's columns, one per token row.
    pub reference: Vec<RefColumns>,
    /// Per-word rows (empty when the run wrote none or they were not asked for).
    pub words: Vec<WordRow>,
    /// The rows files read (for the page's provenance).
    pub rows_files: Vec<PathBuf>,
}

impl Run {
    /// The evaluated model's own summary (in `compare`: the model's, not the reference's).
    pub fn model_summary(&self) -> &EvalSummary {
        match &self.summary {
            Summary::Eval(s) => &s.metrics,
            Summary::Compare(s) => &s.metrics.summary.model,
        }
    }

    /// The log2 context-length bins of the summary.
    pub fn by_position(&self) -> &[PositionBin] {
        &self.model_summary().by_position
    }

    /// The compare report, if this is a `compare` run.
    pub fn compare(&self) -> Option<&CompareReport> {
        match &self.summary {
            Summary::Compare(s) => Some(&s.metrics),
            Summary::Eval(_) => None,
        }
    }
}

/// Loads `dir`; `words`: also read `words.*` where the run wrote them. Every refusal names the
/// path and the problem.
pub fn load(dir: &Path, words: bool) -> Result<Run> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        ReportError::new(
            dir,
            match e.kind() {
                std::io::ErrorKind::NotFound => "no such directory".to_string(),
                _ => format!("cannot read: {e}"),
            },
        )
    })?;
    if !meta.is_dir() {
        return Err(ReportError::new(
            dir,
            "not a directory (give the --out directory of an eval or compare run)",
        ));
    }
    let summary_path = dir.join(SUMMARY_FILE);
    if !summary_path.exists() {
        return Err(ReportError::new(dir, missing_summary(dir)));
    }
    let text = std::fs::read_to_string(&summary_path)
        .map_err(|e| ReportError::new(&summary_path, format!("cannot read: {e}")))?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ReportError::new(&summary_path, format!("not valid JSON: {e}")))?;
    match raw.get("schema_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(ReportError::new(
                &summary_path,
                format!("schema_version {v} is not one this build reads ({SCHEMA_VERSION}); make the report with the surprisal version that wrote the run"),
            ))
        }
        None => {
            return Err(ReportError::new(
                &summary_path,
                "no schema_version: not a summary written by surprisal eval/compare (or one older than schema_version 2)",
            ))
        }
    }
    let mode = raw
        .get("mode")
        .and_then(|m| m.as_str())
        .unwrap_or_default()
        .to_string();
    let label = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let mut run = Run {
        dir: dir.to_path_buf(),
        label,
        summary: match mode.as_str() {
            "eval" => Summary::Eval(Box::new(parse(&summary_path, &raw)?)),
            "compare" => Summary::Compare(Box::new(parse(&summary_path, &raw)?)),
            other => {
                return Err(ReportError::new(
                    &summary_path,
                    format!("unknown mode {other:?} (expected eval or compare)"),
                ))
            }
        },
        raw,
        tokens: Vec::new(),
        reference: Vec::new(),
        words: Vec::new(),
        rows_files: Vec::new(),
    };
    if let Some(p) = rows_file(dir, "tokens") {
        if mode == "compare" {
            let rows: Vec<CompareRow> = read(&p)?;
            run.reference = rows
                .iter()
                .map(|r| RefColumns {
                    kl_nats: r.kl_nats,
                    ref_nll_nats: r.ref_nll_nats,
                })
                .collect();
            run.tokens = rows.into_iter().map(|r| r.model).collect();
        } else {
            run.tokens = read(&p)?;
        }
        run.rows_files.push(p);
    }
    if words {
        if let Some(p) = rows_file(dir, "words") {
            run.words = read(&p)?;
            run.rows_files.push(p);
        }
    }
    Ok(run)
}

/// Why a directory without `summary.json` is not a finished run.
fn missing_summary(dir: &Path) -> String {
    if dir.join(CHECKPOINT_FILE).exists() {
        return "unfinished run (checkpoint.json but no summary.json): finish it with the same command and --resume".into();
    }
    let has_shards = std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("shard-"))
    });
    if has_shards {
        "sharded run without a merged summary.json: run `surprisal merge` on it first".into()
    } else {
        "not a run directory (no summary.json; give the --out directory of an eval or compare run)"
            .into()
    }
}

fn parse<S: DeserializeOwned>(path: &Path, raw: &serde_json::Value) -> Result<SummaryFile<S>> {
    serde_json::from_value(raw.clone())
        .map_err(|e| ReportError::new(path, format!("not a valid summary: {e}")))
}

/// `dir/{stem}.parquet` or `dir/{stem}.jsonl`, whichever exists.
fn rows_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    ["parquet", "jsonl"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

fn read<R: Record>(path: &Path) -> Result<Vec<R>> {
    // read_rows' messages start with the path already
    read_rows(path).map_err(|e| {
        let msg = e.to_string();
        let p = path.display().to_string();
        let problem = msg
            .split_once(&format!("{p}: "))
            .map_or(msg.as_str(), |(_, rest)| rest);
        ReportError::new(path, problem.to_string())
    })
}
