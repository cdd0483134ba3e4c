//! Streaming aggregate of [`PairStats`]: a model against a reference model.

use serde::{Deserialize, Serialize};

use crate::eval_aggregate::{exp_ci95, EvalAggregate, EvalSummary};
use crate::mean::{MeanStat, PairedDiff};
use crate::quantiles::{QuantileSample, Quantiles};
use crate::row::PairStats;

/// Mergeable accumulator over token pairs. Keeps every KL and
/// target-probability delta (16 bytes per token) so quantiles are exact.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompareAggregate {
    model: EvalAggregate,
    reference: EvalAggregate,
    kl_nats: MeanStat,
    kl_values: QuantileSample,
    target_prob_delta: MeanStat,
    target_prob_delta_sq: MeanStat,
    target_prob_delta_values: QuantileSample,
    top1_agree: u64,
    nll_diff_nats: PairedDiff,
    entropy_diff_nats: PairedDiff,
}

/// Final comparison metrics (JSON keys are the field names). Undefined
/// values are NaN, as in [`EvalSummary`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct CompareSummary {
    /// Number of scored token pairs.
    pub tokens_scored: u64,
    /// Mean `KL(reference ‖ model)` (nats).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_kl_nats: f64,
    /// Its standard error (ddof = 1).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_kl_nats_stderr: f64,
    /// Exact quantiles of per-token KL (nats).
    pub kl_nats_quantiles: Quantiles,
    /// Exact quantiles of `p_model[target] − p_ref[target]`.
    pub target_prob_delta_quantiles: Quantiles,
    /// Fraction of tokens where both arg-maxes agree.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub top1_agreement: f64,
    /// `mean(nll_model − nll_ref)` (nats); negative = model better.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub delta_mean_nll_nats: f64,
    /// Paired standard error of the per-token NLL differences.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub delta_mean_nll_nats_stderr: f64,
    /// `exp(delta_mean_nll_nats)` = ppl_model / ppl_ref.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub perplexity_ratio: f64,
    /// `exp(Δ ± 1.96·se_paired)`.
    #[serde(deserialize_with = "crate::serde_f64::pair::deserialize")]
    pub perplexity_ratio_ci95: [f64; 2],
    /// Mean `p_model[target] − p_ref[target]`.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_target_prob_delta: f64,
    /// `sqrt(mean((p_model[target] − p_ref[target])²))`.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub rms_target_prob_delta: f64,
    /// `mean(H_model − H_ref)` (nats).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub delta_mean_entropy_nats: f64,
    /// Paired standard error of the per-token entropy differences.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub delta_mean_entropy_nats_stderr: f64,
    /// The model's own evaluation summary.
    pub model: EvalSummary,
    /// The reference's own evaluation summary.
    pub reference: EvalSummary,
}

impl CompareAggregate {
    /// Empty aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token pair; `context_len` as in [`EvalAggregate::push`].
    pub fn push(&mut self, pair: &PairStats, context_len: usize) {
        self.model.push(&pair.model, context_len);
        self.reference.push(&pair.reference, context_len);
        self.kl_nats.push(pair.kl_nats);
        self.kl_values.push(pair.kl_nats);
        let d = pair.target_prob_delta;
        self.target_prob_delta.push(d);
        self.target_prob_delta_sq.push(d * d);
        self.target_prob_delta_values.push(d);
        self.top1_agree += u64::from(pair.top1_agrees);
        self.nll_diff_nats
            .push(pair.model.nll_nats, pair.reference.nll_nats);
        self.entropy_diff_nats
            .push(pair.model.entropy_nats, pair.reference.entropy_nats);
    }

    /// Folds `other` in; equivalent to having pushed its pairs here.
    pub fn merge(&mut self, other: &CompareAggregate) {
        self.model.merge(&other.model);
        self.reference.merge(&other.reference);
        self.kl_nats.merge(&other.kl_nats);
        self.kl_values.merge(&other.kl_values);
        self.target_prob_delta.merge(&other.target_prob_delta);
        self.target_prob_delta_sq.merge(&other.target_prob_delta_sq);
        self.target_prob_delta_values
            .merge(&other.target_prob_delta_values);
        self.top1_agree += other.top1_agree;
        self.nll_diff_nats.merge(&other.nll_diff_nats);
        self.entropy_diff_nats.merge(&other.entropy_diff_nats);
    }

    /// Number of pairs pushed.
    pub fn count(&self) -> u64 {
        self.kl_nats.count()
    }

    /// Final metrics; `bytes`/`words` are forwarded to both per-model
    /// summaries.
    pub fn summary(&self, bytes: Option<u64>, words: Option<u64>) -> CompareSummary {
        let n = self.count();
        let delta = self.nll_diff_nats.mean();
        let delta_se = self.nll_diff_nats.stderr();
        CompareSummary {
            tokens_scored: n,
            mean_kl_nats: self.kl_nats.mean(),
            mean_kl_nats_stderr: self.kl_nats.stderr(),
            kl_nats_quantiles: self.kl_values.quantiles(),
            target_prob_delta_quantiles: self.target_prob_delta_values.quantiles(),
            top1_agreement: if n == 0 {
                f64::NAN
            } else {
                self.top1_agree as f64 / n as f64
            },
            delta_mean_nll_nats: delta,
            delta_mean_nll_nats_stderr: delta_se,
            perplexity_ratio: delta.exp(),
            perplexity_ratio_ci95: exp_ci95(delta, delta_se),
            mean_target_prob_delta: self.target_prob_delta.mean(),
            rms_target_prob_delta: self.target_prob_delta_sq.mean().sqrt(),
            delta_mean_entropy_nats: self.entropy_diff_nats.mean(),
            delta_mean_entropy_nats_stderr: self.entropy_diff_nats.stderr(),
            model: self.model.summary(bytes, words),
            reference: self.reference.summary(bytes, words),
        }
    }
}
