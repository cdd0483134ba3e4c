//! Resumable runs: `checkpoint.json` in the output directory.
//!
//! A checkpoint records finished work only: the serialized aggregate, the
//! number of finished windows (windows are planned deterministically, so a
//! resumed run re-tokenizes and skips them without scoring), byte/word
//! counters, the number of finalized token-row parts, the per-word state
//! (documents still in flight, see [`crate::words::stream`]) and a fingerprint
//! of everything that determines the result. It is written atomically (temp +
//! rename) after the row parts it counts have been finalized. A finished run
//! keeps its checkpoint (`complete: true`): a rerun is a no-op, and
//! `surprisal merge` folds the shards' aggregates from it.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};
use crate::output::rows::RowsFormat;
use crate::output::summary::{write_json_atomic, FileDigest};
use crate::words::stream::WordsCk;

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
    /// Per-word rows format (`none` without `--words`).
    #[serde(default = "no_rows")]
    pub words: RowsFormat,
    /// The shard of a sharded run (absent for a whole-corpus run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardFingerprint>,
}

/// The shard part of a [`Fingerprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFingerprint {
    /// 0-based index.
    pub index: u64,
    /// Number of shards.
    pub count: u64,
    /// Windows of the whole corpus.
    pub windows_total: u64,
}

fn no_rows() -> RowsFormat {
    RowsFormat::None
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

/// The state of a run, as written to `checkpoint.json`; the engine works on this type directly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint<A> {
    /// Format version.
    pub version: u32,
    /// Identity of the run.
    pub fingerprint: Fingerprint,
    /// Windows fully scored: ids below this (a shard starts at its first window).
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
    /// The aggregate (EvalAggregate / CompareAgg).
    pub aggregate: A,
    /// Per-word state (absent without words).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_rows: Option<WordsCk>,
}

/// Path of the checkpoint in `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

impl<A: Serialize + DeserializeOwned> Checkpoint<A> {
    /// A fresh run's state.
    pub fn new(fingerprint: Fingerprint, first_window: u64, started_at: String) -> Self
    where
        A: Default,
    {
        Checkpoint {
            version: VERSION,
            fingerprint,
            windows_done: first_window,
            bytes_scored: 0,
            words: 0,
            row_parts: 0,
            rows_written: 0,
            elapsed_seconds: 0.0,
            started_at,
            complete: false,
            aggregate: A::default(),
            word_rows: None,
        }
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_json_atomic(&checkpoint_path(dir), self)
    }

    /// Reads the checkpoint in `dir` (None if there is none) without checking whose it is.
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        let p = checkpoint_path(dir);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RunError::io(&p, e)),
        };
        Self::check_version(&p, &text)?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            RunError::Checkpoint(format!("{} is not a valid checkpoint: {e}", p.display()))
        })
    }

    fn check_version(p: &Path, text: &str) -> Result<Fingerprint> {
        // Check version and fingerprint before the (mode-specific) aggregate.
        #[derive(Deserialize)]
        struct Head {
            version: u32,
            fingerprint: Fingerprint,
        }
        let head: Head = serde_json::from_str(text).map_err(|e| {
            RunError::Checkpoint(format!("{} is not a valid checkpoint: {e}", p.display()))
        })?;
        if head.version != VERSION {
            return Err(RunError::Checkpoint(format!(
                "{} has format version {}, this build writes {VERSION}; start a new output directory",
                p.display(),
                head.version
            )));
        }
        Ok(head.fingerprint)
    }

    /// Loads the checkpoint in `dir` (None if there is none) and checks it belongs to this run.
    pub fn load(dir: &Path, expect: &Fingerprint) -> Result<Option<Self>> {
        let p = checkpoint_path(dir);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RunError::io(&p, e)),
        };
        let fp = Self::check_version(&p, &text)?;
        let diff = fp.differences(expect);
        if !diff.is_empty() {
            return Err(RunError::Checkpoint(format!(
                "cannot resume: the checkpoint in {} was made by a different run ({}); use a new --out directory or the original settings",
                dir.display(),
                diff.join("; ")
            )));
        }
        serde_json::from_str(&text).map(Some).map_err(|e| {
            RunError::Checkpoint(format!("{} is not a valid checkpoint: {e}", p.display()))
        })
    }
}
