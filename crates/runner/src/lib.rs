//! surprisal-runner: the evaluation core (protocols, engine, reports, resume).

pub mod document;

pub use document::Document;
