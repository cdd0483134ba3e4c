//! `surprisal gate`: flags in, verdict out. The reading and the statistics are in
//! `surprisal_runner::gate`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use surprisal_runner::gate::{junit, markdown, run_gate, GateConfig};
use surprisal_runner::history;
use surprisal_runner::output::summary::{now_rfc3339, write_atomic};

use crate::args::GateArgs;

/// Exit status of a gate that found a regression.
pub const EXIT_REGRESSION: u8 = 1;

/// Returned (as an error, after the report is out) when a gate failed: `main` exits with
/// [`EXIT_REGRESSION`] and prints nothing more.
#[derive(Debug)]
pub struct Regression;

impl std::fmt::Display for Regression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("regression")
    }
}

impl std::error::Error for Regression {}

pub fn run(a: &GateArgs) -> Result<()> {
    if !(a.confidence > 0.5 && a.confidence < 1.0) {
        bail!("--confidence must be in (0.5, 1), got {}", a.confidence);
    }
    if !(a.max_delta_nll_nats.is_finite() && a.max_delta_nll_nats >= 0.0) {
        bail!(
            "--max-delta-nll-nats must be a finite number >= 0, got {}",
            a.max_delta_nll_nats
        );
    }
    if let Some(k) = a.max_kl_nats.filter(|k| !(k.is_finite() && *k >= 0.0)) {
        bail!("--max-kl-nats must be a finite number >= 0, got {k}");
    }
    if let Some(t) = a.min_top1_agreement.filter(|t| !(0.0..=1.0).contains(t)) {
        bail!("--min-top1-agreement must be in [0, 1], got {t}");
    }
    let config = GateConfig {
        max_delta_nll_nats: a.max_delta_nll_nats,
        confidence: a.confidence,
        max_kl_nats: a.max_kl_nats,
        min_top1_agreement: a.min_top1_agreement,
    };
    let baseline = baseline_dir(&a.baseline, &a.candidate, a.results.as_deref())?;
    let report = run_gate(&baseline, &a.candidate, &config)?;
    if let Err(e) = record(&baseline, &a.candidate, a.results.as_deref(), &report) {
        eprintln!("warning: the gate's verdict was not recorded in the results history: {e}");
    }
    GateOutputs {
        text: markdown::to_text(&report),
        markdown: markdown::to_markdown(&report),
        junit: junit::to_junit(&report, &now_rfc3339())?,
    }
    .emit(a.quiet, a.markdown.as_deref(), a.junit.as_deref())?;
    if report.passed() {
        Ok(())
    } else {
        Err(Regression.into())
    }
}

/// A gate's verdict in its three forms (`surprisal gate` and `surprisal suite run --gate`
/// print and write them alike).
pub(crate) struct GateOutputs {
    /// Printed unless `--quiet`.
    pub text: String,
    /// Written to `--markdown` (e.g. a CI job summary).
    pub markdown: String,
    /// Written to `--junit` (CI test reports).
    pub junit: String,
}

impl GateOutputs {
    /// Prints the text and writes the files that were asked for (atomically: a reader never sees
    /// half a report).
    pub(crate) fn emit(
        &self,
        quiet: bool,
        markdown: Option<&Path>,
        junit: Option<&Path>,
    ) -> anyhow::Result<()> {
        if !quiet {
            print!("{}", self.text);
        }
        if let Some(p) = markdown {
            write_atomic(p, self.markdown.as_bytes())
                .with_context(|| format!("cannot write --markdown {}", p.display()))?;
        }
        if let Some(p) = junit {
            write_atomic(p, self.junit.as_bytes())
                .with_context(|| format!("cannot write --junit {}", p.display()))?;
        }
        Ok(())
    }
}

/// The results root of a suite run directory (`RESULTS/runs/<pair>`, with `RESULTS/results.db`).
fn results_root_of(dir: &Path) -> Option<PathBuf> {
    let runs = dir.parent().filter(|p| {
        p.file_name()
            .is_some_and(|n| n == std::ffi::OsStr::new(history::RUNS_DIR))
    })?;
    let root = runs.parent()?;
    root.join(history::DB_FILE)
        .is_file()
        .then(|| root.to_path_buf())
}

/// Records the verdict in the results history when both runs are registered in one: `--results`,
/// else the candidate's results root. Nothing to do (`Ok`) when there is none or a run is not
/// registered there.
fn record(
    baseline: &Path,
    candidate: &Path,
    results: Option<&Path>,
    report: &surprisal_runner::gate::GateReport,
) -> Result<()> {
    let root = match results {
        Some(r) if r.join(history::DB_FILE).is_file() => r.to_path_buf(),
        Some(_) => return Ok(()),
        None => match results_root_of(candidate) {
            Some(r) => r,
            None => return Ok(()),
        },
    };
    if !(baseline.join(history::PAIR_FILE).is_file()
        && candidate.join(history::PAIR_FILE).is_file())
    {
        return Ok(());
    }
    let mut h = history::open(&root)?;
    let (Some(b), Some(c)) = (h.run_for_dir(baseline)?, h.run_for_dir(candidate)?) else {
        return Ok(());
    };
    h.record_gate(&c, &b, report)?;
    Ok(())
}

/// `--baseline`: a run directory, or the history query `previous` (the previous run of the
/// candidate's model and dataset in the results history holding the candidate, or `--results`).
fn baseline_dir(baseline: &str, candidate: &Path, results: Option<&Path>) -> Result<PathBuf> {
    if baseline != "previous" {
        return Ok(PathBuf::from(baseline));
    }
    let root = match results {
        Some(r) => r.to_path_buf(),
        None => {
            // RESULTS/runs/<pair>
            let runs = candidate.parent().filter(|p| {
                p.file_name()
                    .is_some_and(|n| n == std::ffi::OsStr::new(history::RUNS_DIR))
            });
            match runs.and_then(Path::parent) {
                Some(r) => r.to_path_buf(),
                None => bail!(
                    "--baseline previous: {} is not a suite run directory (RESULTS/{}/<pair>); pass --results DIR",
                    candidate.display(),
                    history::RUNS_DIR
                ),
            }
        }
    };
    let h = history::open(&root)?;
    if !candidate.join(history::PAIR_FILE).is_file() {
        bail!(
            "--baseline previous: {} has no {} (not a run directory of `surprisal suite run`)",
            candidate.display(),
            history::PAIR_FILE
        );
    }
    let Some(rec) = h.run_for_dir(candidate)? else {
        bail!(
            "--baseline previous: {} is not registered in {} (run `surprisal suite run` on its suite to register it)",
            candidate.display(),
            root.join(history::DB_FILE).display()
        );
    };
    match h.previous(&rec)? {
        Some(prev) => Ok(prev.run_dir),
        None => bail!(
            "--baseline previous: {} has no earlier finished run of {} on {} (suite {}) to compare with",
            root.join(history::DB_FILE).display(),
            rec.model_name,
            rec.dataset_name,
            rec.suite
        ),
    }
}
