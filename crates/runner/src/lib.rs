//! surprisal-runner: the evaluation core.
//!
//! * [`protocol`]: window planning (`sliding`, `chunks`, `rolling`).
//! * [`model`]: the [`Tokenize`] / [`Scorer`] traits; [`candle_model`] implements them for
//!   `surprisal-models`.
//! * [`engine`]: [`evaluate`] and [`compare`].
//! * [`device_stats`]: per-token statistics computed where the logits live (`--stats-on device`).
//! * [`output`]: what a run writes and reads back: `summary.json`, per-token and per-word rows,
//!   the checkpoint, the directory lock.
//! * [`gate`]: `surprisal gate`, a candidate run against a baseline run (paired ΔNLL, KL, top-1).
//! * [`suite`], [`history`]: `surprisal suite run` (models × datasets into a results root) and its
//!   SQLite results history (`RESULTS/results.db`, read API for `surprisal history` and reports).
//! * [`shard`], [`merge`]: sharded runs and `surprisal merge`.
//! * [`data`], [`words`]: dataset readers and per-word surprisal.

pub mod candle_model;
pub mod data;
pub mod device_stats;
pub mod document;
pub mod engine;
pub mod error;
pub mod gate;
pub mod history;
pub mod job;
pub mod merge;
pub mod model;
pub mod output;
pub mod progress;
pub mod protocol;
pub mod shard;
pub mod suite;
pub mod top_kl;
pub mod words;

pub use device_stats::{StatsLocation, StatsOn};
pub use document::Document;
pub use engine::{compare, evaluate, RunOptions, RunOutcome, ShardPlan};
pub use error::{Result, RunError};
pub use model::{Encoded, Scorer, Tokenize};
pub use output::summary::{DataProvenance, FileDigest, ModelProvenance, Provenance, SummaryFile};
pub use output::{checkpoint, rows};
pub use progress::{BarProgress, NoProgress, Progress};
pub use protocol::{BosMode, ProtocolConfig, ProtocolKind};
pub use rows::RowsFormat;
pub use shard::Shard;
pub use top_kl::{CompareReport, TopKlPosition};
