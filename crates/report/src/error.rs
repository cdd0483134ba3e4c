//! The report's error: the path involved and what is wrong with it, on one line.

use std::path::{Path, PathBuf};

/// Why a report could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct ReportError {
    /// The run directory or file involved.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl ReportError {
    /// An error about `path`.
    pub fn new(path: &Path, problem: impl Into<String>) -> Self {
        ReportError {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// Result with [`ReportError`].
pub type Result<T> = std::result::Result<T, ReportError>;
