//! `surprisal suite run SUITE.toml`: models × datasets under one protocol, each pair an ordinary
//! run directory under a results root, registered in the results history ([`crate::history`]).
//!
//! # The suite file
//!
//! ```toml
//! name = "nightly"              # optional: the file's stem
//! results = "results/nightly"   # optional results root: --results wins, default "results"
//!
//! [run]                         # the protocol and run settings of every pair: the keys of an
//! protocol = "sliding"          # `eval --config` file (protocol, window, stride, bos, max-tokens,
//! window = 512                  # max-chunks, batch-size, device, dtype, dequantize, stats-on,
//! max-tokens = 20000            # per-token, words, text-field, threads is not one)
//!
//! [[models]]                    # exactly one of path / glob / hub
//! name = "smollm2-q4_1"         # optional short name (default: file or directory name)
//! path = "~/.cache/surprisal/models/SmolLM2-135M-Instruct.Q4_1.gguf"
//!
//! [[models]]
//! name = "exp1"                 # default for a glob: the directory above the pattern
//! glob = "runs/exp1/checkpoint-*"   # every match, sorted by the step number in its name
//!
//! [[datasets]]
//! name = "wikitext2"            # short name (letters, digits, `-`, `_`, `.`)
//! data = "hf://datasets/Salesforce/wikitext/wikitext-2-raw-v1/test"   # anything --data takes
//! text-field = "text"           # optional
//!
//! [[datasets]]
//! name = "shakespeare"          # no `data`: pass `--data shakespeare=PATH`
//! ```
//!
//! Paths are relative to the directory `surprisal` runs in; `~/` is expanded. `--data NAME=PATH`
//! replaces (or supplies) a dataset's data.
//!
//! # Pairs and fingerprints
//!
//! Pairs are ordered models first (in file order, a glob's matches by step), datasets inside. Each
//! pair's fingerprint is the SHA-256 of its identity: suite, model and dataset names, the model
//! files' SHA-256 (a hub model: its id), dequantize/dtype/device, the data's SHA-256 and text
//! field, the protocol, batch size, per-token/words formats, stats-on and the surprisal version.
//! Its directory is `RESULTS/runs/<model>[-stepN]__<dataset>__<first 12 hex digits>`: a rerun
//! finds finished pairs finished (skipped without loading the model), interrupted ones resumable
//! (the engine's checkpoint); new weights, data or settings make a new directory. `--shard I/N`
//! (or Slurm / Kubernetes index variables with `--shards N`) runs pairs `k` with `k mod N = I`.

mod progress;
mod run;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{self, DataSpec};
use crate::device_stats::StatsOn;
use crate::error::{Result, RunError};
use crate::history::files_sha256;
use crate::output::rows::RowsFormat;
use crate::output::summary::FileDigest;
use crate::protocol::{BosMode, ProtocolConfig, ProtocolKind};

pub use progress::{BarSuiteProgress, SuiteProgress};
pub use run::{
    gate_previous, gates_junit, gates_markdown, gates_text, host_name, run, PairGate, PairOutcome,
    PairStatus, SuiteOptions, SuiteReport,
};

/// The `[run]` table: protocol and run settings shared by every pair.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunSettings {
    /// `sliding` (default), `chunks` or `rolling`.
    pub protocol: Option<ProtocolKind>,
    /// Window length in tokens [512].
    pub window: Option<usize>,
    /// Sliding stride [window / 2].
    pub stride: Option<usize>,
    /// `auto` (default), `always`, `never`.
    pub bos: Option<BosMode>,
    /// Token limit.
    pub max_tokens: Option<u64>,
    /// Chunk limit (`chunks`).
    pub max_chunks: Option<u64>,
    /// Windows per forward pass [1].
    pub batch_size: Option<usize>,
    /// `cpu` (default) or `cuda:N`.
    pub device: Option<String>,
    /// `f32`, `f64`, `bf16`, `f16` [the device's default].
    pub dtype: Option<String>,
    /// GGUF models with f32 weights.
    #[serde(default)]
    pub dequantize: bool,
    /// `auto` (default), `host`, `device`.
    pub stats_on: Option<StatsOn>,
    /// `parquet` (default: `--gate previous` pairs on these), `jsonl`, `none`.
    pub per_token: Option<RowsFormat>,
    /// Per-word rows.
    #[serde(default)]
    pub words: bool,
    /// JSONL field / Parquet column [text].
    pub text_field: Option<String>,
}

/// A `[[models]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelEntry {
    /// Short name.
    pub name: Option<String>,
    /// A HF directory or a `.gguf` file.
    pub path: Option<String>,
    /// A glob over checkpoint directories or files.
    pub glob: Option<String>,
    /// A hub id `org/name[@rev]`.
    pub hub: Option<String>,
    /// Overrides `[run] dequantize`.
    pub dequantize: Option<bool>,
    /// Overrides `[run] dtype`.
    pub dtype: Option<String>,
}

/// A `[[datasets]]` entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DatasetEntry {
    /// Short name.
    pub name: String,
    /// Anything `--data` takes (absent: must come from `--data NAME=PATH`).
    pub data: Option<String>,
    /// Overrides `[run] text-field`.
    pub text_field: Option<String>,
}

/// A suite file as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SuiteFile {
    /// Suite name.
    pub name: Option<String>,
    /// Default results root.
    pub results: Option<String>,
    /// Shared settings.
    #[serde(default)]
    pub run: RunSettings,
    /// Models.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// Datasets.
    #[serde(default)]
    pub datasets: Vec<DatasetEntry>,
}

/// A loaded, checked suite.
#[derive(Clone, Debug, PartialEq)]
pub struct Suite {
    /// The file it came from.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// Its contents (dataset data overrides applied).
    pub file: SuiteFile,
}

/// One model of the plan (a glob entry expands to several).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedModel {
    /// Short name (shared by a glob's matches).
    pub name: String,
    /// What `--model` gets (path with `~` expanded, or hub id).
    pub reference: String,
    /// The step its path names.
    pub checkpoint_step: Option<u64>,
    /// The files hashed for its identity.
    pub files: Vec<FileDigest>,
    /// SHA-256 over the files' hashes (hub: of the id).
    pub sha256: String,
    /// GGUF with f32 weights.
    pub dequantize: bool,
    /// Compute dtype request.
    pub dtype: Option<String>,
}

/// One dataset of the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedData {
    /// Short name.
    pub name: String,
    /// What `--data` gets.
    pub data: String,
    /// Text field.
    pub text_field: String,
    /// SHA-256 of the data.
    pub sha256: String,
}

/// One (model, dataset) pair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pair {
    /// Position in the suite (models first, datasets inside).
    pub index: usize,
    /// The model.
    pub model: PlannedModel,
    /// The dataset.
    pub data: PlannedData,
    /// 64 hex digits.
    pub fingerprint: String,
    /// `<model>[-stepN]__<dataset>__<fingerprint12>`.
    pub dir_name: String,
}

impl Pair {
    /// `model[@step] × dataset`.
    pub fn label(&self) -> String {
        let m = match self.model.checkpoint_step {
            Some(s) => format!("{}@{s}", self.model.name),
            None => self.model.name.clone(),
        };
        format!("{m} × {}", self.data.name)
    }
}

/// The checked protocol and run settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Protocol.
    pub protocol: ProtocolConfig,
    /// Batch size.
    pub batch_size: usize,
    /// Device.
    pub device: String,
    /// Per-token rows.
    pub rows: RowsFormat,
    /// Per-word rows.
    pub words: RowsFormat,
    /// Stats location.
    pub stats_on: StatsOn,
}

/// `~/x` -> `$HOME/x`.
pub fn expand_home(s: &str) -> String {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest).display().to_string(),
        _ => s.to_string(),
    }
}

/// The step number a checkpoint path names: the number after the last `checkpoint`, `ckpt`,
/// `step`, `global_step` or `iter` in its last component (`checkpoint-1200` → 1200,
/// `model_step300.gguf` → 300), case-insensitive; `None` when there is none.
pub fn checkpoint_step(path: &str) -> Option<u64> {
    let name = Path::new(path.trim_end_matches('/'))
        .file_name()?
        .to_string_lossy()
        .to_lowercase();
    let mut best: Option<(usize, u64)> = None;
    for kw in ["checkpoint", "ckpt", "global_step", "step", "iter"] {
        for (at, _) in name.match_indices(kw) {
            let rest = &name[at + kw.len()..];
            let rest = rest.trim_start_matches(['-', '_', '=', '.']);
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = digits.parse::<u64>() {
                if best.is_none_or(|(b, _)| at > b) {
                    best = Some((at, n));
                }
            }
        }
    }
    best.map(|(_, n)| n)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A name made of `[A-Za-z0-9._-]` from `s`.
fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "model".into()
    } else {
        t
    }
}

impl Suite {
    /// Reads and checks `path`; `data_overrides` are `(dataset name, data)` from `--data NAME=PATH`.
    pub fn load(path: &Path, data_overrides: &[(String, String)]) -> Result<Suite> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RunError::Suite(format!("cannot read suite file {}: {e}", path.display()))
        })?;
        let mut file: SuiteFile = toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(String::new(), |r| {
                let before = &text[..r.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(":{line}:{col}")
            });
            RunError::Suite(format!(
                "{}{at}: invalid suite file: {}",
                path.display(),
                e.message().trim()
            ))
        })?;
        let bad = |m: String| RunError::Suite(format!("{}: {m}", path.display()));
        let name = match &file.name {
            Some(n) => n.clone(),
            None => path
                .file_stem()
                .map_or("suite".into(), |s| s.to_string_lossy().into_owned()),
        };
        if file.models.is_empty() {
            return Err(bad("no [[models]]".into()));
        }
        if file.datasets.is_empty() {
            return Err(bad("no [[datasets]]".into()));
        }
        for (i, m) in file.models.iter().enumerate() {
            let n = [&m.path, &m.glob, &m.hub]
                .iter()
                .filter(|x| x.is_some())
                .count();
            if n != 1 {
                return Err(bad(format!(
                    "models[{i}]: give exactly one of path, glob or hub"
                )));
            }
            if let Some(nm) = &m.name {
                if !valid_name(nm) {
                    return Err(bad(format!(
                        "models[{i}]: name {nm:?} must be letters, digits, '-', '_' or '.'"
                    )));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in file.datasets.iter().enumerate() {
            if !valid_name(&d.name) {
                return Err(bad(format!(
                    "datasets[{i}]: name {:?} must be letters, digits, '-', '_' or '.'",
                    d.name
                )));
            }
            if !seen.insert(d.name.clone()) {
                return Err(bad(format!(
                    "datasets[{i}]: name {:?} is used twice",
                    d.name
                )));
            }
        }
        for (n, data) in data_overrides {
            match file.datasets.iter_mut().find(|d| &d.name == n) {
                Some(d) => d.data = Some(data.clone()),
                None => {
                    return Err(bad(format!(
                        "--data {n}=…: the suite has no dataset {n:?} (it has {})",
                        file.datasets
                            .iter()
                            .map(|d| d.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        for d in &file.datasets {
            if d.data.is_none() {
                return Err(bad(format!(
                    "dataset {:?} has no data: pass --data {}=PATH (a file, directory, .jsonl, .parquet or hf://datasets/…)",
                    d.name, d.name
                )));
            }
        }
        let suite = Suite {
            path: path.to_path_buf(),
            name,
            file,
        };
        suite.settings()?;
        Ok(suite)
    }

    /// The checked `[run]` settings.
    pub fn settings(&self) -> Result<Settings> {
        let r = &self.file.run;
        let bad = |m: String| RunError::Suite(format!("{}: [run] {m}", self.path.display()));
        let kind = r.protocol.unwrap_or(ProtocolKind::Sliding);
        let window = r.window.unwrap_or(512);
        if window < 2 {
            return Err(bad(format!("window {window} must be at least 2")));
        }
        let stride = r.stride.unwrap_or((window / 2).max(1));
        if r.max_tokens == Some(0) || r.max_chunks == Some(0) {
            return Err(bad("max-tokens and max-chunks must be at least 1".into()));
        }
        if r.max_chunks.is_some() && kind != ProtocolKind::Chunks {
            return Err(bad("max-chunks applies to protocol \"chunks\" only".into()));
        }
        let batch_size = r.batch_size.unwrap_or(1);
        if batch_size == 0 {
            return Err(bad("batch-size must be at least 1".into()));
        }
        let rows = r.per_token.unwrap_or(RowsFormat::Parquet);
        Ok(Settings {
            protocol: ProtocolConfig {
                kind,
                window,
                stride,
                bos: r.bos.unwrap_or(BosMode::Auto),
                max_tokens: r.max_tokens,
                max_chunks: r.max_chunks,
            },
            batch_size,
            device: r.device.clone().unwrap_or_else(|| "cpu".into()),
            rows,
            words: match (r.words, rows) {
                (false, _) => RowsFormat::None,
                (true, RowsFormat::Jsonl) => RowsFormat::Jsonl,
                (true, _) => RowsFormat::Parquet,
            },
            stats_on: r.stats_on.unwrap_or(StatsOn::Auto),
        })
    }

    /// The results root: `cli` (`--results`), else the file's `results`, else `results`.
    pub fn results_root(&self, cli: Option<&Path>) -> PathBuf {
        match (cli, &self.file.results) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(r)) => PathBuf::from(expand_home(r)),
            (None, None) => PathBuf::from("results"),
        }
    }

    /// Expands the models (globs sorted by step), hashes model files and data, and lists the pairs.
    pub fn plan(&self) -> Result<Vec<Pair>> {
        let settings = self.settings()?;
        let bad = |m: String| RunError::Suite(format!("{}: {m}", self.path.display()));
        let mut models = Vec::new();
        for (i, m) in self.file.models.iter().enumerate() {
            let dequantize = m.dequantize.unwrap_or(self.file.run.dequantize);
            let dtype = m.dtype.clone().or_else(|| self.file.run.dtype.clone());
            let mut push =
                |name: String, reference: String, files: Vec<FileDigest>, sha: String| {
                    models.push(PlannedModel {
                        checkpoint_step: checkpoint_step(&reference),
                        name,
                        reference,
                        files,
                        sha256: sha,
                        dequantize,
                        dtype: dtype.clone(),
                    })
                };
            if let Some(hub) = &m.hub {
                let name = m.name.clone().unwrap_or_else(|| sanitize(hub));
                let sha = {
                    use sha2::{Digest, Sha256};
                    hex::encode(Sha256::digest(format!("hub:{hub}").as_bytes()))
                };
                push(name, hub.clone(), Vec::new(), sha);
            } else if let Some(p) = &m.path {
                let p = expand_home(p);
                let files =
                    model_files(Path::new(&p)).map_err(|e| bad(format!("models[{i}]: {e}")))?;
                let name = m.name.clone().unwrap_or_else(|| default_name(&p));
                let sha = files_sha256(&files);
                push(name, p, files, sha);
            } else if let Some(g) = &m.glob {
                let pattern = expand_home(g);
                let paths = glob::glob(&pattern)
                    .map_err(|e| bad(format!("models[{i}]: glob {g:?}: {e}")))?;
                let mut found: Vec<PathBuf> = paths.flatten().collect();
                if found.is_empty() {
                    return Err(bad(format!("models[{i}]: glob {g:?} matches nothing")));
                }
                found.sort_by(|a, b| {
                    let (sa, sb) = (a.display().to_string(), b.display().to_string());
                    (checkpoint_step(&sa), sa).cmp(&(checkpoint_step(&sb), sb))
                });
                let name = m.name.clone().unwrap_or_else(|| {
                    Path::new(&pattern)
                        .parent()
                        .and_then(|d| d.file_name())
                        .map_or_else(|| "checkpoints".into(), |n| sanitize(&n.to_string_lossy()))
                });
                for f in found {
                    let p = f.display().to_string();
                    let files = model_files(&f).map_err(|e| bad(format!("models[{i}]: {e}")))?;
                    let sha = files_sha256(&files);
                    push(name.clone(), p, files, sha);
                }
            }
        }
        let mut datasets = Vec::new();
        for d in &self.file.datasets {
            let data = expand_home(d.data.as_deref().unwrap_or_default());
            let text_field = d
                .text_field
                .clone()
                .or_else(|| self.file.run.text_field.clone())
                .unwrap_or_else(|| "text".into());
            let spec = DataSpec::new(&data, text_field.clone())
                .map_err(|e| bad(format!("dataset {:?}: {e}", d.name)))?;
            let sha256 =
                data::sha256_of(&spec).map_err(|e| bad(format!("dataset {:?}: {e}", d.name)))?;
            datasets.push(PlannedData {
                name: d.name.clone(),
                data,
                text_field,
                sha256,
            });
        }
        let mut pairs = Vec::new();
        for m in &models {
            for d in &datasets {
                let fingerprint = self.fingerprint(&settings, m, d);
                let step = m
                    .checkpoint_step
                    .map_or(String::new(), |s| format!("-step{s}"));
                let dir_name = format!(
                    "{}{step}__{}__{}",
                    sanitize(&m.name),
                    sanitize(&d.name),
                    &fingerprint[..12]
                );
                pairs.push(Pair {
                    index: pairs.len(),
                    model: m.clone(),
                    data: d.clone(),
                    fingerprint,
                    dir_name,
                });
            }
        }
        Ok(pairs)
    }

    fn fingerprint(&self, s: &Settings, m: &PlannedModel, d: &PlannedData) -> String {
        use sha2::{Digest, Sha256};
        let p = &s.protocol;
        let identity = serde_json::json!({
            "v": 1,
            "tool_version": env!("CARGO_PKG_VERSION"),
            "suite": self.name,
            "model_name": m.name,
            "model_sha256": m.sha256,
            "dequantize": m.dequantize,
            "dtype": m.dtype,
            "device": s.device,
            "dataset_name": d.name,
            "data_sha256": d.sha256,
            "text_field": d.text_field,
            "protocol": p.kind.name(),
            "window": p.window,
            "stride": p.stride,
            "bos": p.bos.name(),
            "max_tokens": p.max_tokens,
            "max_chunks": p.max_chunks,
            "batch_size": s.batch_size,
            "per_token": s.rows.file_name(),
            "words": s.words.words_file_name(),
            "stats_on": s.stats_on.name(),
        });
        hex::encode(Sha256::digest(identity.to_string().as_bytes()))
    }
}

/// Default short name of a model path: the file name without `.gguf`, or the directory name.
fn default_name(p: &str) -> String {
    let name = Path::new(p.trim_end_matches('/'))
        .file_name()
        .map_or_else(|| p.to_string(), |n| n.to_string_lossy().into_owned());
    sanitize(name.strip_suffix(".gguf").unwrap_or(&name))
}

/// The files that identify a local model: a `.gguf` file itself; in a directory its
/// `*.safetensors`, `config.json` and `tokenizer.json` (canonical paths, SHA-256 each).
fn model_files(p: &Path) -> std::result::Result<Vec<FileDigest>, String> {
    if !p.exists() {
        return Err(format!("{} does not exist", p.display()));
    }
    let canon = |q: &Path| std::fs::canonicalize(q).unwrap_or_else(|_| q.to_path_buf());
    let mut files = Vec::new();
    if p.is_file() {
        files.push(canon(p));
    } else {
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|f| {
                f.is_file()
                    && f.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.ends_with(".safetensors") || n == "config.json" || n == "tokenizer.json"
                    })
            })
            .map(|f| canon(&f))
            .collect();
        found.sort();
        if !found
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".safetensors"))
        {
            return Err(format!(
                "{} holds no *.safetensors (expected a HF model directory or a .gguf file)",
                p.display()
            ));
        }
        files = found;
    }
    files
        .iter()
        .map(|f| FileDigest::of(f).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_come_from_checkpoint_names_only() {
        assert_eq!(checkpoint_step("runs/exp1/checkpoint-1200"), Some(1200));
        assert_eq!(checkpoint_step("runs/exp1/checkpoint-1200/"), Some(1200));
        assert_eq!(checkpoint_step("m/model_step300.gguf"), Some(300));
        assert_eq!(checkpoint_step("global_step_50"), Some(50));
        assert_eq!(checkpoint_step("SmolLM2-135M-Instruct.Q4_1.gguf"), None);
        // the name's last component only
        assert_eq!(checkpoint_step("checkpoint-7/model"), None);
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_suites_are_refused_naming_the_file_and_problem() {
        let t = tempfile::tempdir().unwrap();
        let cases = [
            ("a.toml", "[[models]]\npath = \"x\"\nhub = \"y\"\n[[datasets]]\nname = \"d\"\ndata = \"f\"\n", "models[0]: give exactly one of path, glob or hub"),
            ("b.toml", "[[models]]\npath = \"x\"\n", "no [[datasets]]"),
            ("c.toml", "[[models]]\npath = \"x\"\n[[datasets]]\nname = \"d\"\n", "dataset \"d\" has no data: pass --data d=PATH"),
            ("d.toml", "[[models]]\npath = \"x\"\nbogus = 1\n", "unknown field `bogus`"),
            ("e.toml", "[run]\nwindow = 1\n[[models]]\npath = \"x\"\n[[datasets]]\nname = \"d\"\ndata = \"f\"\n", "[run] window 1 must be at least 2"),
            ("f.toml", "[[models]]\npath = \"x\"\n[[datasets]]\nname = \"a b\"\ndata = \"f\"\n", "datasets[0]: name \"a b\""),
        ];
        for (name, text, needle) in cases {
            let p = write(t.path(), name, text);
            let e = Suite::load(&p, &[]).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(name), "{name}: {e}");
        }
        let p = write(
            t.path(),
            "g.toml",
            "[[models]]\npath = \"x\"\n[[datasets]]\nname = \"d\"\n",
        );
        let s = Suite::load(&p, &[("d".into(), "data.txt".into())]).unwrap();
        assert_eq!(s.file.datasets[0].data.as_deref(), Some("data.txt"));
        assert_eq!(s.name, "g");
        let e = Suite::load(&p, &[("zz".into(), "x".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no dataset \"zz\" (it has d)"), "{e}");
    }
}
