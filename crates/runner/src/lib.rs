//! surprisal-runner: the evaluation core (protocols, engine, reports, resume).

pub mod data;
pub mod document;
pub mod error;
pub mod protocol;
pub mod words;

pub use document::Document;
pub use error::{Result, RunError};
