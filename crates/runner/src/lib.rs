//! surprisal-runner: the evaluation core.
//!
//! * [`protocol`]: window planning (`sliding`, `chunks`, `rolling`).
//! * [`model`]: the [`Tokenize`] / [`Scorer`] traits; [`candle_model`] implements them for
//!   `surprisal-models`.
//! * [`engine`]: [`evaluate`] and [`compare`].
//! * [`device_stats`]: per-token statistics computed where the logits live (`--stats-on device`).
//! * [`report`], [`rows`], [`checkpoint`]: `summary.json`, per-token rows,
//!   resume.
//! * [`data`], [`words`]: dataset readers and per-word surprisal.

pub mod candle_model;
pub mod checkpoint;
pub mod data;
pub mod device_stats;
pub mod document;
pub mod engine;
pub mod error;
pub mod job;
pub mod model;
pub mod progress;
pub mod protocol;
pub mod report;
pub mod rows;
pub mod top_kl;
pub mod words;

pub use device_stats::{StatsLocation, StatsOn};
pub use document::Document;
pub use engine::{compare, evaluate, RunOptions, RunOutcome};
pub use error::{Result, RunError};
pub use model::{Encoded, Scorer, Tokenize};
pub use progress::{BarProgress, NoProgress, Progress};
pub use protocol::{BosMode, ProtocolConfig, ProtocolKind};
pub use report::{DataProvenance, FileDigest, ModelProvenance, Provenance};
pub use rows::RowsFormat;
pub use top_kl::{CompareReport, TopKlPosition};
