//! surprisal-runner: the evaluation core (protocols, engine, reports, resume).

pub mod document;
pub mod error;

pub use document::Document;
pub use error::{Result, RunError};
