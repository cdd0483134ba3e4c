//! Progress reporting. The engine calls a [`Progress`] handle; the CLI decides
//! whether it is a visible bar ([`BarProgress`]) or nothing ([`NoProgress`]).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives progress events from the engine.
pub trait Progress {
    /// The run starts; `expected_tokens` is an estimate of the tokens to
    /// score when known (token/chunk limits), `already_done` the tokens
    /// scored by earlier sessions of a resumed run.
    fn start(&mut self, _expected_tokens: Option<u64>, _already_done: u64) {}
    /// `tokens` more tokens were scored (one batch).
    fn advance(&mut self, _tokens: u64) {}
    /// The run ended (successfully or not).
    fn finish(&mut self) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// An `indicatif` bar on stderr: tokens, tokens/s and ETA (when the total is
/// known). Hidden when `quiet` or when stderr is not a terminal.
#[derive(Debug)]
pub struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    /// New bar; `quiet` hides it.
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::hidden();
        if !quiet && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        BarProgress { bar }
    }

    /// Overrides the expected number of tokens (e.g. from a pre-count).
    pub fn set_total(&self, tokens: u64) {
        self.bar.set_length(tokens);
    }

    /// The underlying bar.
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Progress for BarProgress {
    fn start(&mut self, expected_tokens: Option<u64>, already_done: u64) {
        let style = if let Some(n) = expected_tokens.or(self.bar.length()) {
            self.bar.set_length(n);
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tokens ({per_sec}, ETA {eta})",
            )
        } else {
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} tokens ({per_sec})")
        };
        if let Ok(style) = style {
            self.bar.set_style(style);
        }
        self.bar.set_position(already_done);
        self.bar.reset_eta();
    }

    fn advance(&mut self, tokens: u64) {
        self.bar.inc(tokens);
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}
