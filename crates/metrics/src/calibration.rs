//! Top-1 calibration: reliability bins and expected calibration error.

use serde::{Deserialize, Serialize};

use crate::mean::MeanStat;

/// Number of equal-width confidence bins on `[0, 1]`.
pub const ECE_BINS: usize = 15;

/// Index of the bin holding confidence `p`: `min(⌊15·p⌋, 14)`, i.e. bin `b`
/// covers `[b/15, (b+1)/15)` and the last bin also includes `p = 1`.
pub fn ece_bin_index(p: f64) -> usize {
    // `as usize` saturates (negative/NaN → 0), so this cannot go out of range.
    ((p * ECE_BINS as f64).floor() as usize).min(ECE_BINS - 1)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct BinAcc {
    confidence: MeanStat,
    correct: u64,
}

/// Streaming, mergeable reliability-diagram accumulator over top-1
/// confidence (`top1_prob`) and top-1 correctness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationAccumulator {
    bins: Vec<BinAcc>,
}

impl Default for CalibrationAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

/// One reliability bin in a summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Inclusive lower edge `b/15`.
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub lower: f64,
    /// Upper edge `(b+1)/15` (exclusive, except 1.0 for the last bin).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub upper: f64,
    /// Tokens whose top-1 confidence fell in this bin.
    pub count: u64,
    /// Mean top-1 probability in the bin; `None` when empty.
    pub mean_confidence: Option<f64>,
    /// Fraction of those tokens whose arg-max was the target; `None` when empty.
    pub accuracy: Option<f64>,
}

impl CalibrationAccumulator {
    /// Empty accumulator with [`ECE_BINS`] bins.
    pub fn new() -> Self {
        Self {
            bins: vec![BinAcc::default(); ECE_BINS],
        }
    }

    /// Adds one token's top-1 confidence and whether top-1 was correct.
    pub fn push(&mut self, top1_prob: f64, correct: bool) {
        if self.bins.len() != ECE_BINS {
            self.bins.resize(ECE_BINS, BinAcc::default());
        }
        let bin = &mut self.bins[ece_bin_index(top1_prob)];
        bin.confidence.push(top1_prob);
        bin.correct += u64::from(correct);
    }

    /// Adds `other`'s counts bin by bin.
    pub fn merge(&mut self, other: &CalibrationAccumulator) {
        if self.bins.len() < other.bins.len() {
            self.bins.resize(other.bins.len(), BinAcc::default());
        }
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            a.confidence.merge(&b.confidence);
            a.correct += b.correct;
        }
    }

    /// All [`ECE_BINS`] bins, empty ones included (so plots have fixed axes).
    pub fn bins(&self) -> Vec<CalibrationBin> {
        (0..ECE_BINS)
            .map(|b| {
                let acc = self.bins.get(b);
                let count = acc.map_or(0, |a| a.confidence.count());
                let (mean_confidence, accuracy) = match acc {
                    Some(a) if count > 0 => (
                        Some(a.confidence.mean()),
                        Some(a.correct as f64 / count as f64),
                    ),
                    _ => (None, None),
                };
                CalibrationBin {
                    lower: b as f64 / ECE_BINS as f64,
                    upper: (b + 1) as f64 / ECE_BINS as f64,
                    count,
                    mean_confidence,
                    accuracy,
                }
            })
            .collect()
    }

    /// `ECE = Σ_b (n_b / N) · |acc_b − conf_b|` over non-empty bins; NaN
    /// when no token was pushed.
    pub fn ece(&self) -> f64 {
        let total: u64 = self.bins.iter().map(|b| b.confidence.count()).sum();
        if total == 0 {
            return f64::NAN;
        }
        self.bins
            .iter()
            .filter(|b| b.confidence.count() > 0)
            .map(|b| {
                let n = b.confidence.count() as f64;
                let acc = b.correct as f64 / n;
                (n / total as f64) * (acc - b.confidence.mean()).abs()
            })
            .sum()
    }
}
