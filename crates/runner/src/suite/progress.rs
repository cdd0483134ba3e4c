//! Progress across a suite: pairs done / total, tokens/s of this session, ETA from the pairs run so
//! far; one line per finished pair on stdout.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::run::PairOutcome;
use super::Pair;
use crate::progress::Progress;

/// Receives suite events; also the engine's [`Progress`] for the pair being run.
pub trait SuiteProgress: Progress {
    /// The suite starts with `total` pairs for this task.
    fn suite_start(&mut self, _total: usize) {}
    /// Pair `pair` starts (`k` of this task's pairs, 0-based).
    fn pair_start(&mut self, _pair: &Pair, _k: usize) {}
    /// A pair finished, was skipped, or is busy.
    fn pair_done(&mut self, _outcome: &PairOutcome) {}
    /// Prints a line (between bar redraws).
    fn line(&mut self, _s: &str) {}
}

impl SuiteProgress for crate::progress::NoProgress {}

/// An `indicatif` bar on stderr (hidden when `quiet` or stderr is not a terminal) and one line per
/// pair on stdout (unless `quiet`).
#[derive(Debug)]
pub struct BarSuiteProgress {
    bar: ProgressBar,
    quiet: bool,
    t0: Instant,
    /// Tokens scored in this session (all pairs).
    tokens: u64,
    /// Seconds and count of the pairs actually run in this session.
    run_seconds: f64,
    runs: usize,
    pair_t0: Option<Instant>,
    label: String,
    done: usize,
    total: usize,
}

impl BarSuiteProgress {
    /// New; `quiet` prints nothing.
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::hidden();
        if !quiet && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} pairs {msg}")
        {
            bar.set_style(style);
        }
        BarSuiteProgress {
            bar,
            quiet,
            t0: Instant::now(),
            tokens: 0,
            run_seconds: 0.0,
            runs: 0,
            pair_t0: None,
            label: String::new(),
            done: 0,
            total: 0,
        }
    }

    fn refresh(&self) {
        let secs = self.t0.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            self.tokens as f64 / secs
        } else {
            0.0
        };
        let remaining = self.total.saturating_sub(self.done);
        let eta = if self.runs > 0 {
            let per_pair = self.run_seconds / self.runs as f64;
            let in_pair = self.pair_t0.map_or(0.0, |t| t.elapsed().as_secs_f64());
            format!(
                "ETA {:.0} s",
                (per_pair * remaining as f64 - in_pair).max(0.0)
            )
        } else {
            "ETA ?".into()
        };
        self.bar.set_message(format!(
            "| {} | {} tokens, {rate:.0} tokens/s | {eta}",
            self.label, self.tokens
        ));
    }
}

impl Progress for BarSuiteProgress {
    fn advance(&mut self, tokens: u64) {
        self.tokens += tokens;
        self.refresh();
    }
}

impl SuiteProgress for BarSuiteProgress {
    fn suite_start(&mut self, total: usize) {
        self.total = total;
        self.bar.set_length(total as u64);
        self.bar.set_position(0);
    }

    fn pair_start(&mut self, pair: &Pair, _k: usize) {
        self.label = pair.label();
        self.pair_t0 = Some(Instant::now());
        self.refresh();
    }

    fn pair_done(&mut self, o: &PairOutcome) {
        if let (Some(t), super::run::PairStatus::Ran) = (self.pair_t0.take(), &o.status) {
            self.run_seconds += t.elapsed().as_secs_f64();
            self.runs += 1;
        }
        self.done += 1;
        self.bar.set_position(self.done as u64);
        self.refresh();
        let line = o.line(self.done, self.total);
        self.line(&line);
    }

    fn line(&mut self, s: &str) {
        if !self.quiet {
            self.bar.suspend(|| println!("{s}"));
        }
    }
}

impl Drop for BarSuiteProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
