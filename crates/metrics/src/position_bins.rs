//! Per-context-length breakdown with log2-spaced bins.

use serde::{Deserialize, Serialize};

use crate::mean::MeanStat;

/// Bin index of a context length: 0 for 0, else `⌊log2 c⌋ + 1`, so bin `k ≥ 1`
/// covers `[2^(k-1), 2^k − 1]`: `[0,0], [1,1], [2,3], [4,7], …`.
/// Log spacing because predictability changes fastest at short contexts.
pub fn position_bin_index(context_len: usize) -> usize {
    (usize::BITS - context_len.leading_zeros()) as usize
}

/// Inclusive `(min, max)` context length of bin `k`.
pub fn position_bin_range(k: usize) -> (u64, u64) {
    if k == 0 {
        (0, 0)
    } else {
        let lo = 1u64 << (k - 1);
        (lo, lo.wrapping_shl(1).wrapping_sub(1).max(lo))
    }
}

/// Summary of one non-empty context-length bin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PositionBin {
    /// Smallest context length in the bin (inclusive).
    pub context_len_min: u64,
    /// Largest context length in the bin (inclusive).
    pub context_len_max: u64,
    /// Tokens scored with a context length in the bin.
    pub count: u64,
    /// Mean NLL of those tokens (nats).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_nll_nats: f64,
    /// Mean entropy of those tokens' distributions (nats).
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub mean_entropy_nats: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct BinAcc {
    nll_nats: MeanStat,
    entropy_nats: MeanStat,
}

/// Streaming, mergeable accumulator of NLL and entropy per position bin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PositionAccumulator {
    /// Grown on demand up to the largest bin seen (at most 65 on 64-bit).
    bins: Vec<BinAcc>,
}

impl PositionAccumulator {
    /// Empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token scored after `context_len` tokens of context.
    pub fn push(&mut self, context_len: usize, nll_nats: f64, entropy_nats: f64) {
        let k = position_bin_index(context_len);
        if self.bins.len() <= k {
            self.bins.resize(k + 1, BinAcc::default());
        }
        let bin = &mut self.bins[k];
        bin.nll_nats.push(nll_nats);
        bin.entropy_nats.push(entropy_nats);
    }

    /// Merges bin by bin.
    pub fn merge(&mut self, other: &PositionAccumulator) {
        if self.bins.len() < other.bins.len() {
            self.bins.resize(other.bins.len(), BinAcc::default());
        }
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            a.nll_nats.merge(&b.nll_nats);
            a.entropy_nats.merge(&b.entropy_nats);
        }
    }

    /// Non-empty bins in increasing context length.
    pub fn bins(&self) -> Vec<PositionBin> {
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, b)| b.nll_nats.count() > 0)
            .map(|(k, b)| {
                let (context_len_min, context_len_max) = position_bin_range(k);
                PositionBin {
                    context_len_min,
                    context_len_max,
                    count: b.nll_nats.count(),
                    mean_nll_nats: b.nll_nats.mean(),
                    mean_entropy_nats: b.entropy_nats.mean(),
                }
            })
            .collect()
    }
}
