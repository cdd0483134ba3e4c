//! What a run writes, and reads back: `summary.json` ([`summary`]), per-token and per-word rows
//! ([`records`] defines each row once, [`rows`] stages, finishes and reads the files), the resume
//! state ([`checkpoint`]) and the one-writer lock on an output directory ([`lock`]).

pub mod checkpoint;
pub mod lock;
pub mod records;
pub mod rows;
pub mod summary;
