//! The runner's error type (shared by the dataset readers, the tokenizer and
//! scorer adapters, the engine, reports and checkpoints).

use std::path::PathBuf;

/// Everything that can go wrong while running an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Invalid protocol / run configuration (window, stride, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The input data could not be read or parsed.
    #[error("data error: {0}")]
    Data(String),
    /// The tokenizer failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The model (scorer) failed.
    #[error("model error: {0}")]
    Model(String),
    /// Statistics computed on the model's device failed (a tensor operation or a copy to the
    /// host); see `crate::device_stats`. Kept apart from `Model` because `--stats-on host` avoids it.
    #[error("device statistics: {0}")]
    DeviceStats(String),
    /// A metric could not be computed for one scored token (e.g. NaN logits).
    #[error("metrics error at {source_name} (document {doc}, token {index} of the document, window position {position}): {message}")]
    Metrics {
        /// `Document::source` of the document holding the scored token.
        source_name: String,
        /// Document index.
        doc: usize,
        /// Index of the scored token inside its document.
        index: usize,
        /// Position of the predicting logits inside the window.
        position: usize,
        /// What the metrics crate said.
        message: String,
    },
    /// Filesystem error, with the path involved.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// Path being read or written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Checkpoint / resume problems (corrupt checkpoint, mismatching run, …).
    #[error("checkpoint error: {0}")]
    Checkpoint(String),
    /// Another process holds the output directory's lock ([`crate::output::lock`]).
    #[error("{} is in use by another surprisal process ({}); wait for it to finish or stop it, or choose another --out directory", dir.display(), pid.map_or_else(|| "PID unknown".to_string(), |p| format!("PID {p}")))]
    Locked {
        /// The locked directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// `surprisal merge` refused the shards (missing, unfinished, from different runs, …).
    #[error("cannot merge: {0}")]
    Merge(String),
    /// `surprisal gate` cannot read or compare its runs ([`crate::gate`]); the message names the path.
    #[error("{0}")]
    Gate(String),
    /// The results history (`RESULTS/results.db`, [`crate::history`]); the message names the file.
    #[error("{0}")]
    History(String),
    /// A suite file (`surprisal suite run SUITE.toml`, [`crate::suite`]); the message names the file.
    #[error("{0}")]
    Suite(String),
    /// Report writing problems (serialization, parquet, …).
    #[error("report error: {0}")]
    Report(String),
    /// The run was cancelled (Ctrl-C) between two batches. With an output
    /// directory, a checkpoint of every finished batch was written first.
    #[error("{}", interrupted_message(out_dir.as_deref()))]
    Interrupted {
        /// Where the checkpoint was written (`None`: no `--out`, nothing saved).
        out_dir: Option<PathBuf>,
    },
}

fn interrupted_message(out_dir: Option<&std::path::Path>) -> String {
    match out_dir {
        Some(d) => format!(
            "interrupted: finished batches were checkpointed in {}; rerun the same command with --resume to continue",
            d.display()
        ),
        None => "interrupted: nothing was saved (no --out directory was given)".into(),
    }
}

impl RunError {
    /// Wrap an `std::io::Error` together with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RunError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Convenience alias.
pub type Result<T, E = RunError> = std::result::Result<T, E>;
