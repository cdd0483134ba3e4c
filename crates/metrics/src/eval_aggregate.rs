//! Streaming aggregate of [`TokenStats`] over an evaluation run.

use std::f64::consts::LN_2;

use serde::{Deserialize, Serialize};

use crate::calibration::{CalibrationAccumulator, CalibrationBin};
use crate::mean::MeanStat;
use crate::position_bins::{PositionAccumulator, PositionBin};
use crate::row::TokenStats;

/// Two-sided 95% normal quantile used for every `*_ci95` interval.
pub const Z_95: f64 = 1.96;

/// Mergeable accumulator over scored tokens. Serialize it to checkpoint a run;
/// `a.merge(&b)` equals one aggregate fed both streams (up to rounding).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalAggregate {
    nll_nats: MeanStat,
    entropy_nats: MeanStat,
    varentropy_nats2: MeanStat,
    min_entropy_nats: MeanStat,
    renyi2_entropy_nats: MeanStat,
    top1_prob: MeanStat,
    top1_correct: u64,
    calibration: CalibrationAccumulator,
    positions: PositionAccumulator,
}

/// Final metrics of an evaluation run (JSON keys are the field names).
///
/// Undefined values are NaN: means of an empty run, standard errors and
/// CIs with fewer than two tokens, ECE of an empty run. (`serde_json` writes
/// NaN/inf as `null`.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct EvalSummary {
    /// Number of scored tokens N.
    pub tokens_scored: u64,
    /// Σ NLL (nats), compensated sum.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub sum_nll_nats: f64,
    /// Mean NLL per token (nats) = cross-entropy.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_nll_nats: f64,
    /// Standard error of `mean_nll_nats` (ddof = 1).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_nll_nats_stderr: f64,
    /// `exp(mean_nll_nats)`.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub perplexity: f64,
    /// `[exp(mean − 1.96·se), exp(mean + 1.96·se)]`.
    #[serde(deserialize_with = "crate::serde_f64::pair::deserialize")]
    pub perplexity_ci95: [f64; 2],
    /// `mean_nll_nats / ln 2` (bits per token).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub bits_per_token: f64,
    /// Byte count of the scored text, as supplied by the caller.
    pub bytes_scored: Option<u64>,
    /// `sum_nll_nats / (bytes · ln 2)`; `None` without a (non-zero) byte count.
    pub bits_per_byte: Option<f64>,
    /// `exp(sum_nll_nats / bytes)`; `None` without a (non-zero) byte count.
    pub byte_perplexity: Option<f64>,
    /// Word count of the scored text, as supplied by the caller.
    pub words: Option<u64>,
    /// `exp(sum_nll_nats / words)`; `None` without a (non-zero) word count.
    pub word_perplexity: Option<f64>,
    /// Mean Shannon entropy (nats).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_entropy_nats: f64,
    /// Its standard error.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_entropy_nats_stderr: f64,
    /// Mean varentropy (nats²).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_varentropy_nats2: f64,
    /// Its standard error.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_varentropy_nats2_stderr: f64,
    /// Mean min-entropy (nats).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_min_entropy_nats: f64,
    /// Mean Rényi-2 entropy (nats).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_renyi2_entropy_nats: f64,
    /// Fraction of tokens with `top1_id == target_id` (lowest-index arg-max).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub top1_accuracy: f64,
    /// Mean top-1 probability (mean confidence).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_top1_prob: f64,
    /// Expected calibration error over [`crate::ECE_BINS`] equal-width bins.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub calibration_ece: f64,
    /// All reliability bins (empty ones have `None` confidence/accuracy).
    pub calibration_bins: Vec<CalibrationBin>,
    /// Non-empty log2 context-length bins.
    pub by_position: Vec<PositionBin>,
}

impl EvalAggregate {
    /// Empty aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one scored token; `context_len` is how many tokens the model saw
    /// before it.
    pub fn push(&mut self, stats: &TokenStats, context_len: usize) {
        self.nll_nats.push(stats.nll_nats);
        self.entropy_nats.push(stats.entropy_nats);
        self.varentropy_nats2.push(stats.varentropy_nats2);
        self.min_entropy_nats.push(stats.min_entropy_nats);
        self.renyi2_entropy_nats.push(stats.renyi2_entropy_nats);
        self.top1_prob.push(stats.top1_prob);
        let correct = stats.top1_correct();
        self.top1_correct += u64::from(correct);
        self.calibration.push(stats.top1_prob, correct);
        self.positions
            .push(context_len, stats.nll_nats, stats.entropy_nats);
    }

    /// Folds `other` in; equivalent to having pushed its tokens here.
    pub fn merge(&mut self, other: &EvalAggregate) {
        self.nll_nats.merge(&other.nll_nats);
        self.entropy_nats.merge(&other.entropy_nats);
        self.varentropy_nats2.merge(&other.varentropy_nats2);
        self.min_entropy_nats.merge(&other.min_entropy_nats);
        self.renyi2_entropy_nats.merge(&other.renyi2_entropy_nats);
        self.top1_prob.merge(&other.top1_prob);
        self.top1_correct += other.top1_correct;
        self.calibration.merge(&other.calibration);
        self.positions.merge(&other.positions);
    }

    /// Number of tokens pushed.
    pub fn count(&self) -> u64 {
        self.nll_nats.count()
    }

    /// The NLL accumulator (for callers that need e.g. the raw variance).
    pub fn nll_nats(&self) -> &MeanStat {
        &self.nll_nats
    }

    /// Final metrics. `bytes` / `words` are the sizes of the scored text,
    /// needed for tokenizer-independent rates (bits per byte, word ppl).
    pub fn summary(&self, bytes: Option<u64>, words: Option<u64>) -> EvalSummary {
        let n = self.count();
        let sum_nll = self.nll_nats.sum();
        let mean_nll = self.nll_nats.mean();
        let se_nll = self.nll_nats.stderr();
        let per_unit = |units: Option<u64>| units.filter(|&u| u > 0).map(|u| sum_nll / u as f64);
        let nats_per_byte = per_unit(bytes);
        EvalSummary {
            tokens_scored: n,
            sum_nll_nats: sum_nll,
            mean_nll_nats: mean_nll,
            mean_nll_nats_stderr: se_nll,
            perplexity: mean_nll.exp(),
            perplexity_ci95: exp_ci95(mean_nll, se_nll),
            bits_per_token: mean_nll / LN_2,
            bytes_scored: bytes,
            bits_per_byte: nats_per_byte.map(|x| x / LN_2),
            byte_perplexity: nats_per_byte.map(f64::exp),
            words,
            word_perplexity: per_unit(words).map(f64::exp),
            mean_entropy_nats: self.entropy_nats.mean(),
            mean_entropy_nats_stderr: self.entropy_nats.stderr(),
            mean_varentropy_nats2: self.varentropy_nats2.mean(),
            mean_varentropy_nats2_stderr: self.varentropy_nats2.stderr(),
            mean_min_entropy_nats: self.min_entropy_nats.mean(),
            mean_renyi2_entropy_nats: self.renyi2_entropy_nats.mean(),
            top1_accuracy: if n == 0 {
                f64::NAN
            } else {
                self.top1_correct as f64 / n as f64
            },
            mean_top1_prob: self.top1_prob.mean(),
            calibration_ece: self.calibration.ece(),
            calibration_bins: self.calibration.bins(),
            by_position: self.positions.bins(),
        }
    }
}

/// `[exp(m − 1.96·se), exp(m + 1.96·se)]`: a normal-approximation CI on the
/// log scale (where the mean NLL lives) mapped through `exp`, hence
/// asymmetric around the point estimate.
pub fn exp_ci95(mean: f64, stderr: f64) -> [f64; 2] {
    [(mean - Z_95 * stderr).exp(), (mean + Z_95 * stderr).exp()]
}
