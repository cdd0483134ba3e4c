//! `surprisal report`: one self-contained HTML page (CSS and SVG plots inline, no script, nothing
//! fetched at view time) from the output directories of `surprisal eval` / `compare` runs.
//!
//! * [`run`]: loads a run directory (`summary.json` into the type that wrote it, token and word
//!   rows) and refuses, naming the path, what is not a finished run of this schema.
//! * [`stats`]: what the plots show, from the token rows (means with 95 % intervals per log2
//!   context-length bin, histograms).
//! * [`plots`]: the plots, drawn by `plotters` as SVG.
//! * [`text`]: the text coloured by surprisal, a tooltip with the numbers on every token / word.
//! * [`history`]: each metric of a results history over checkpoint steps or dates (`--history`).
//! * `page`: the template's context and the rendering (`minijinja`, `templates/report.html`).

pub mod error;
pub mod history;
mod page;
pub mod plots;
pub mod run;
pub mod stats;
pub mod text;

use std::path::{Path, PathBuf};

pub use error::{ReportError, Result};
pub use history::HistoryData;
pub use run::{load, Run};

/// Scored tokens shown in the coloured text by default.
pub const DEFAULT_TOKENS: usize = 3000;

/// What the page shows.
#[derive(Clone, Debug)]
pub struct Options {
    /// The first `tokens` scored tokens (and words) of each run are shown as coloured text.
    pub tokens: usize,
    /// Also show the per-word surprisal of the runs that wrote `words.*` (refused when none did).
    pub words: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tokens: DEFAULT_TOKENS,
            words: false,
        }
    }
}

/// Loads every directory (in order) and renders the page.
pub fn build(dirs: &[PathBuf], opts: &Options) -> Result<String> {
    build_with_history(dirs, opts, None)
}

/// Loads every directory (in order) and renders the page, with a history section when `history`
/// is given (then `dirs` may be empty).
pub fn build_with_history(
    dirs: &[PathBuf],
    opts: &Options,
    history: Option<&HistoryData>,
) -> Result<String> {
    if let Some(h) = history {
        history::check_nonempty(h)?;
    } else if dirs.is_empty() {
        return Err(ReportError::new(
            Path::new("."),
            "no run directory given (and no --history)",
        ));
    }
    let mut runs = dirs
        .iter()
        .map(|d| run::load(d, opts.words))
        .collect::<Result<Vec<_>>>()?;
    // directories of the same name (a/run, b/run) are told apart by their paths
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    for r in &mut runs {
        if labels.iter().filter(|l| **l == r.label).count() > 1 {
            r.label = r.dir.display().to_string();
        }
    }
    if opts.words && !runs.is_empty() && runs.iter().all(|r| r.words.is_empty()) {
        let dir = dirs.first().map_or_else(PathBuf::new, PathBuf::clone);
        return Err(ReportError::new(
            &dir,
            "--words: no run has words.parquet or words.jsonl (run eval/compare with --words)",
        ));
    }
    page::render(&runs, opts, history)
}

/// Writes the page to `path` atomically (temp file + rename).
pub fn write(path: &Path, html: &str) -> Result<()> {
    surprisal_runner::output::summary::write_atomic(path, html.as_bytes())
        .map_err(|e| ReportError::new(path, format!("cannot write: {e}")))
}
