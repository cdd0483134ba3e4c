//! Streaming, mergeable mean / variance / sum of a scalar.

use serde::{Deserialize, Serialize};

/// Running count, mean and centered sum of squares (Welford), mergeable with
/// Chan et al.'s parallel formula, plus a Neumaier-compensated sum.
///
/// Why both a Welford mean and a compensated sum: the mean and its standard
/// error need the centered `M2` (accurate variance without `E[x²]-E[x]²`
/// cancellation), while totals such as `sum_nll_nats` feed bits-per-byte and
/// must not drift over millions of tokens.
///
/// Non-finite inputs propagate: pushing `+inf` makes `mean()`/`sum()` `+inf`
/// and the variance NaN.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanStat {
    count: u64,
    #[serde(with = "crate::serde_f64::scalar")]
    mean: f64,
    /// Σ (x - mean)², maintained incrementally.
    #[serde(with = "crate::serde_f64::scalar")]
    m2: f64,
    /// Neumaier running sum and its compensation term.
    #[serde(with = "crate::serde_f64::scalar")]
    sum: f64,
    #[serde(with = "crate::serde_f64::scalar")]
    sum_comp: f64,
}

impl MeanStat {
    /// Empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one observation (Welford update).
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
        self.add_to_sum(x);
    }

    /// Folds `other` into `self`; the result equals (up to rounding) one
    /// accumulator fed the concatenation of both streams (Chan et al. 1979).
    pub fn merge(&mut self, other: &MeanStat) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let na = self.count as f64;
        let nb = other.count as f64;
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * nb / n);
        self.count += other.count;
        self.add_to_sum(other.sum);
        self.add_to_sum(other.sum_comp);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Arithmetic mean; NaN when empty (there is no mean of nothing).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.mean
        }
    }

    /// Compensated sum of all observations (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum + self.sum_comp
    }

    /// Sample variance with Bessel's correction (`ddof = 1`); NaN for n < 2,
    /// where it is undefined.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            f64::NAN
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }

    /// Standard error of the mean, `s / √n` with `s` the `ddof = 1` sample
    /// standard deviation. NaN for n < 2: one observation says nothing about
    /// spread, and reporting 0 would fake certainty.
    pub fn stderr(&self) -> f64 {
        if self.count < 2 {
            f64::NAN
        } else {
            (self.variance() / self.count as f64).sqrt()
        }
    }

    /// Neumaier's improved Kahan summation step.
    fn add_to_sum(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.sum_comp += (self.sum - t) + x;
        } else {
            self.sum_comp += (x - t) + self.sum;
        }
        self.sum = t;
    }
}

/// Paired differences `a_i - b_i` (e.g. model NLL − reference NLL on the same
/// token). The standard error of a paired difference is that of the
/// per-token differences, which is far smaller than combining the two
/// marginal standard errors because per-token difficulty cancels.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PairedDiff {
    diff: MeanStat,
}

impl PairedDiff {
    /// Empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the pair `(a, b)` as the difference `a - b`.
    pub fn push(&mut self, a: f64, b: f64) {
        self.diff.push(a - b);
    }

    /// See [`MeanStat::merge`].
    pub fn merge(&mut self, other: &PairedDiff) {
        self.diff.merge(&other.diff);
    }

    /// Number of pairs.
    pub fn count(&self) -> u64 {
        self.diff.count()
    }

    /// Mean difference `mean(a - b)`; NaN when empty.
    pub fn mean(&self) -> f64 {
        self.diff.mean()
    }

    /// Paired standard error: sample std (ddof = 1) of the differences / √n;
    /// NaN for n < 2.
    pub fn stderr(&self) -> f64 {
        self.diff.stderr()
    }

    /// The underlying accumulator of differences.
    pub fn differences(&self) -> &MeanStat {
        &self.diff
    }
}
