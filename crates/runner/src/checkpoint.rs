//! Resumable runs: `checkpoint.json` in the output directory.
//!
//! A checkpoint records finished work only: the serialized aggregate, the
//! number of finished windows (windows are planned deterministically, so a
//! resumed run re-tokenizes and skips them without scoring), byte/word
//! counters, the number of finalized token-row parts, and a fingerprint of
//! everything that determines the result. It is written atomically (temp +
//! rename) after the row parts it counts have been finalized.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};
use crate::report::{write_json_atomic, FileDigest};
use crate::rows::RowsFormat;

/// File name of the checkpoint inside `--out`.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

const VERSION: u32 = 1;

/// What must be identical for a run to be resumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// `eval` or `compare`.
    pub mode: String,
    /// Model reference.
    pub model: String,
    /// Model files and hashes.
    pub model_files: Vec<FileDigest>,
    /// Compare mode: reference model and files.
    pub reference_model: Option<(String, Vec<FileDigest>)>,
    /// `Tokenize::fingerprint`.
    pub tokenizer: String,
    /// Data SHA-256.
    pub data_sha256: String,
    /// Protocol name.
    pub protocol: String,
    /// Window.
    pub window: usize,
    /// Stride (sliding).
    pub stride: usize,
    /// Requested BOS mode.
    pub bos: String,
    /// BOS / prefix token actually used.
    pub bos_token: Option<u32>,
    /// Token limit.
    pub max_tokens: Option<u64>,
    /// Chunk limit.
    pub max_chunks: Option<u64>,
    /// Per-token rows format.
    pub rows: RowsFormat,
    /// Compute dtype (changes the numbers).
    pub dtype: String,
    /// Where per-token statistics are computed (`host` or `device`, resolved from `--stats-on`).
    /// Part of the fingerprint because the two paths differ at the f32 level (device sums are
    /// f32, host sums f64) and a resumed run promises the same `summary.json` as an uninterrupted
    /// one; `--stats-on device` runs on every device, so the original setting can always be given
    /// again. Checkpoints written before this field existed were all `host`.
    #[serde(default = "host_stats")]
    pub stats_on: String,
}

fn host_stats() -> String {
    "host".into()
}

impl Fingerprint {
    /// Human-readable list of the fields that differ (`field: old → new`).
    pub fn differences(&self, new: &Fingerprint) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(new).unwrap_or_default();
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec!["fingerprint".into()];
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "{k}: checkpoint has {v}, this run has {}",
                    b.get(k).cloned().unwrap_or_default()
                )
            })
            .collect()
    }
}

/// Serialized state of an interrupted run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint<A> {
    /// Format version.
    pub version: u32,
    /// Identity of the run.
    pub fingerprint: Fingerprint,
    /// Windows fully scored (ids `0..windows_done`).
    pub windows_done: u64,
    /// Bytes of the scored text so far.
    pub bytes_scored: u64,
    /// Words so far (rolling).
    pub words: u64,
    /// Finalized token-row parts.
    pub row_parts: u64,
    /// Rows in those parts.
    pub rows_written: u64,
    /// Engine wall time so far (s).
    pub elapsed_seconds: f64,
    /// Start of the first session.
    pub started_at: String,
    /// Whether the run finished and its outputs were written.
    pub complete: bool,
    /// The aggregate (EvalAggregate / CompareAggregate).
    pub aggregate: A,
}

/// Path of the checkpoint in `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Writes the checkpoint atomically.
pub fn save<A: Serialize>(dir: &Path, ck: &Checkpoint<A>) -> Result<()> {
    write_json_atomic(&checkpoint_path(dir), ck)
}

/// Loads the checkpoint in `dir` (None if there is none) and checks it
/// belongs to this run.
pub fn load<A: DeserializeOwned>(
    dir: &Path,
    expect: &Fingerprint,
) -> Result<Option<Checkpoint<A>>> {
    let p = checkpoint_path(dir);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RunError::io(&p, e)),
    };
    // Check version and fingerprint before the (mode-specific) aggregate.
    #[derive(Deserialize)]
    struct Head {
        version: u32,
        fingerprint: Fingerprint,
    }
    let head: Head = serde_json::from_str(&text).map_err(|e| {
        RunError::Checkpoint(format!("{} is not a valid checkpoint: {e}", p.display()))
    })?;
    if head.version != VERSION {
        return Err(RunError::Checkpoint(format!(
            "{} has format version {}, this build writes {VERSION}; start a new output directory",
            p.display(),
            head.version
        )));
    }
    let diff = head.fingerprint.differences(expect);
    if !diff.is_empty() {
        return Err(RunError::Checkpoint(format!(
            "cannot resume: the checkpoint in {} was made by a different run ({}); use a new --out directory or the original settings",
            dir.display(),
            diff.join("; ")
        )));
    }
    let ck: Checkpoint<A> = serde_json::from_str(&text).map_err(|e| {
        RunError::Checkpoint(format!("{} is not a valid checkpoint: {e}", p.display()))
    })?;
    Ok(Some(ck))
}

/// Version written into new checkpoints.
pub fn version() -> u32 {
    VERSION
}
