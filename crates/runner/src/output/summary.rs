//! `summary.json`: metrics + throughput + provenance, written atomically.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use surprisal_models::HostCpu;

use crate::device_stats::StatsLocation;
use crate::error::{Result, RunError};
use crate::protocol::{BosMode, ProtocolConfig, ProtocolKind};

/// A file and its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Path (as given / resolved by the caller).
    pub path: String,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

impl FileDigest {
    /// Hashes the file at `path` (streaming).
    pub fn of(path: &Path) -> Result<Self> {
        use sha2::{Digest, Sha256};
        let mut f = File::open(path).map_err(|e| RunError::io(path, e))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|e| RunError::io(path, e))?;
        Ok(FileDigest {
            path: path.display().to_string(),
            sha256: hex::encode(h.finalize()),
        })
    }
}

/// Which model was evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelProvenance {
    /// What the user named (hub id, path, …).
    pub reference: String,
    /// Weight / config / tokenizer files with their hashes.
    pub files: Vec<FileDigest>,
}

/// Which data was evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataProvenance {
    /// Path or dataset reference.
    pub path: String,
    /// SHA-256 of the data (as computed by the data module).
    pub sha256: String,
}

/// Provenance supplied by the caller (the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// `surprisal` version.
    pub tool_version: String,
    /// The evaluated model (`model_source`: in `compare`, `model` is the model's own summary).
    #[serde(rename = "model_source")]
    pub model: ModelProvenance,
    /// Compare mode: the reference model.
    #[serde(
        default,
        rename = "reference_source",
        skip_serializing_if = "Option::is_none"
    )]
    pub reference_model: Option<ModelProvenance>,
    /// The data.
    pub data: DataProvenance,
    /// Device description (e.g. `cpu`, `cuda:0 (NVIDIA H100)`).
    pub device: String,
    /// Compute dtype (e.g. `f32`, `bf16`), or a GGUF's file type (`general.file_type`, e.g.
    /// `Q4_K_M`, `Q4_1 dequantized to F32`).
    pub dtype: String,
    /// GGUF: how many tensors the file stores in each type (`{"F32": 109, "Q4_K": 27, "Q5_0": 81,
    /// ...}`), the detail behind a mixed file type. Absent for safetensors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dtype_tensors: BTreeMap<String, usize>,
    /// The CPU the run computed on (model name, SIMD level, whose llama.cpp lane order the exact
    /// path followed). Absent in summaries written before 2026-12-08.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu: Option<HostCpu>,
}

/// The `protocol` object of `summary.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolReport {
    /// `sliding`, `chunks` or `rolling`.
    pub name: ProtocolKind,
    /// Window length.
    pub window: usize,
    /// Stride (`sliding`), else null.
    pub stride: Option<usize>,
    /// Requested BOS mode.
    pub bos: BosMode,
    /// Whether a BOS / prefix token was actually used.
    pub bos_used: bool,
    /// Corpus token limit.
    pub max_tokens: Option<u64>,
    /// Chunk limit (`chunks`).
    pub max_chunks: Option<u64>,
    /// Windows per forward pass.
    pub batch_size: usize,
}

impl ProtocolReport {
    /// Builds the report object.
    pub fn new(cfg: &ProtocolConfig, bos_used: bool, batch_size: usize) -> Self {
        ProtocolReport {
            name: cfg.kind,
            window: cfg.window,
            stride: (cfg.kind == ProtocolKind::Sliding).then_some(cfg.stride),
            bos: cfg.bos,
            bos_used,
            max_tokens: cfg.max_tokens,
            max_chunks: cfg.max_chunks,
            batch_size,
        }
    }
}

/// Version of the `summary.json` layout, written as `schema_version`. Readers refuse other
/// versions rather than guess.
pub const SCHEMA_VERSION: u32 = 2;

/// File name of the summary inside `--out`.
pub const SUMMARY_FILE: &str = "summary.json";

/// Which part of a sharded run a summary covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReport {
    /// 0-based shard index.
    pub index: u64,
    /// Number of shards.
    pub count: u64,
    /// Where the index came from (`--shard`, `SURPRISAL_SHARD`, `SLURM_ARRAY_TASK_ID`, …).
    pub source: String,
    /// Windows of the whole corpus (as an unsharded run plans them).
    pub windows_total: u64,
    /// The shard's windows: ids `windows_first..windows_end`.
    pub windows_first: u64,
    /// One past the shard's last window id.
    pub windows_end: u64,
}

/// Contents of `summary.json`: the metrics summary (`EvalSummary` or `CompareReport`) flattened
/// at top level, plus run information. Written and read back by the same type
/// ([`SummaryFile::read`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryFile<S> {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Metrics (flattened: `tokens_scored`, `perplexity`, …).
    #[serde(flatten)]
    pub metrics: S,
    /// `"eval"` or `"compare"`.
    pub mode: String,
    /// Windows evaluated.
    pub windows: u64,
    /// Scored tokens per second of wall time spent in the engine
    /// (cumulative over resumed sessions; merged: over the shards' summed time).
    pub tokens_per_second: f64,
    /// Wall time spent in the engine (s), cumulative over resumed sessions (merged: summed over
    /// the shards).
    pub elapsed_seconds: f64,
    /// Provenance fields (flattened: `tool_version`, `model`, `data`, …).
    #[serde(flatten)]
    pub provenance: Provenance,
    /// Protocol parameters.
    pub protocol: ProtocolReport,
    /// RFC 3339 start time (of the first session when resumed; merged: of the earliest shard).
    pub started_at: String,
    /// RFC 3339 end time.
    pub finished_at: String,
    /// Where per-token statistics were computed: `host` (f64 from logits copied off the device)
    /// or `device` (f32 reductions where the logits live, see `crate::device_stats`).
    pub stats_on: StatsLocation,
    /// The shard this run covers (absent for a whole-corpus run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardReport>,
    /// `surprisal merge`: how many shards were merged (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_shards: Option<u64>,
}

impl<S: Serialize + serde::de::DeserializeOwned> SummaryFile<S> {
    /// Writes `dir/summary.json` atomically; returns its path.
    pub fn write(&self, dir: &Path) -> Result<std::path::PathBuf> {
        let p = dir.join(SUMMARY_FILE);
        write_json_atomic(&p, self)?;
        Ok(p)
    }

    /// Reads a `summary.json`, refusing another [`SCHEMA_VERSION`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| RunError::io(path, e))?;
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            schema_version: Option<u32>,
        }
        let bad = |e: serde_json::Error| {
            RunError::Report(format!("{} is not a valid summary: {e}", path.display()))
        };
        let head: Head = serde_json::from_str(&text).map_err(bad)?;
        if head.schema_version != Some(SCHEMA_VERSION) {
            return Err(RunError::Report(format!(
                "{} has schema_version {}, this build reads {SCHEMA_VERSION}",
                path.display(),
                head.schema_version
                    .map_or_else(|| "(none)".to_string(), |v| v.to_string())
            )));
        }
        serde_json::from_str(&text).map_err(bad)
    }
}

/// Writes `bytes` to `path` atomically: temp file in the same directory,
/// fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(|e| RunError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| RunError::io(&tmp, e))?;
        f.sync_all().map_err(|e| RunError::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| RunError::io(path, e))
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value).map_err(|e| RunError::Report(e.to_string()))?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Current time, RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_and_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_json_atomic(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}\n");
        assert!(!dir.path().join(".x.json.tmp").exists());
        std::fs::write(&p, b"abc").unwrap();
        let d = FileDigest::of(&p).unwrap();
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
