//! Statistics of a regression gate: a difference of mean NLLs with its standard error, and the
//! one-sided bound at a confidence that a gate holds against a threshold.
//!
//! * Paired (both runs scored the same tokens): `Δ = (1/N) Σ (c_i − b_i)` with
//!   `se = sd(c − b; ddof = 1)/√N` ([`PairedDiff`]): per-token difficulty cancels, so the paired
//!   standard error is far smaller than the unpaired one on the same data.
//! * Unpaired (different tokens): `Δ = mean_c − mean_b`, `se = √(se_b² + se_c²)`
//!   ([`DeltaEstimate::unpaired`]), from the two summaries alone.
//! * One-sided bounds at confidence `q`: `upper = Δ + z_q·se`, `lower = Δ − z_q·se` with
//!   `z_q = Φ⁻¹(q)` the standard normal quantile ([`normal_quantile`], from `statrs`; checked
//!   against SciPy's `norm.ppf` in `tests/gate.rs`). A gate on "at most `t`" fails when the
//!   upper bound exceeds `t`; a gate on "at least `t`" fails when the lower bound is below `t`.
//!   A bound with `se = 0` equals the estimate: two runs of the same model over the same tokens give
//!   `Δ = 0` exactly and pass any non-negative tolerance.
//! * A proportion `a` over `N` tokens (top-1 agreement) has `se = √(a(1 − a)/(N − 1))`, the
//!   `ddof = 1` standard error of the mean of its 0/1 indicators ([`proportion_stderr`]).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::PairedDiff;

/// `Φ⁻¹(p)`, the standard normal quantile (`scipy.stats.norm.ppf`); NaN outside `(0, 1)`.
pub fn normal_quantile(p: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return f64::NAN;
    }
    Normal::standard().inverse_cdf(p)
}

/// `estimate + Φ⁻¹(confidence)·stderr`: the one-sided upper bound at `confidence`.
pub fn upper_bound(estimate: f64, stderr: f64, confidence: f64) -> f64 {
    if stderr == 0.0 {
        return estimate;
    }
    estimate + normal_quantile(confidence) * stderr
}

/// `estimate − Φ⁻¹(confidence)·stderr`: the one-sided lower bound at `confidence`.
pub fn lower_bound(estimate: f64, stderr: f64, confidence: f64) -> f64 {
    if stderr == 0.0 {
        return estimate;
    }
    estimate - normal_quantile(confidence) * stderr
}

/// Standard error of a proportion `a` of `n` 0/1 indicators: `√(a(1 − a)/(n − 1))` (the
/// `ddof = 1` standard error of their mean); NaN for `n < 2`.
pub fn proportion_stderr(proportion: f64, n: u64) -> f64 {
    if n < 2 {
        return f64::NAN;
    }
    (proportion * (1.0 - proportion) / (n - 1) as f64)
        .max(0.0)
        .sqrt()
}

/// A difference of mean NLLs (candidate − baseline, nats/token) and its standard error.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaEstimate {
    /// `mean_candidate − mean_baseline` (nats/token).
    pub delta_nats: f64,
    /// Standard error of `delta_nats` (nats/token).
    pub stderr_nats: f64,
}

impl DeltaEstimate {
    /// Paired over the same tokens: `nll_nats` pairs `(baseline, candidate)` in any order of tokens,
    /// accumulated in f64 ([`PairedDiff`]).
    pub fn paired(pairs: impl IntoIterator<Item = (f64, f64)>) -> (Self, u64) {
        let mut d = PairedDiff::new();
        for (baseline, candidate) in pairs {
            d.push(candidate, baseline);
        }
        (
            DeltaEstimate {
                delta_nats: d.mean(),
                stderr_nats: d.stderr(),
            },
            d.count(),
        )
    }

    /// Unpaired, from each run's mean and standard error: `√(se_b² + se_c²)`.
    pub fn unpaired(
        baseline_mean_nats: f64,
        baseline_stderr_nats: f64,
        candidate_mean_nats: f64,
        candidate_stderr_nats: f64,
    ) -> Self {
        DeltaEstimate {
            delta_nats: candidate_mean_nats - baseline_mean_nats,
            stderr_nats: baseline_stderr_nats.hypot(candidate_stderr_nats),
        }
    }

    /// [`upper_bound`] of this estimate.
    pub fn upper_bound_nats(&self, confidence: f64) -> f64 {
        upper_bound(self.delta_nats, self.stderr_nats, confidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_runs_give_exactly_zero_and_bound_zero() {
        let xs = [3.25, 0.5, 7.0, 1e-3];
        let (d, n) = DeltaEstimate::paired(xs.iter().map(|&x| (x, x)));
        assert_eq!(n, 4);
        assert_eq!(d.delta_nats, 0.0);
        assert_eq!(d.stderr_nats, 0.0);
        assert_eq!(d.upper_bound_nats(0.99), 0.0);
    }

    #[test]
    fn quantile_is_nan_outside_the_open_unit_interval() {
        for p in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(normal_quantile(p).is_nan(), "{p}");
        }
        assert!(proportion_stderr(1.0, 1).is_nan());
        assert_eq!(proportion_stderr(1.0, 10), 0.0);
    }
}
