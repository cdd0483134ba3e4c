//! Exact sample quantiles of a stream (values are kept, sorted at summary).

use serde::{Deserialize, Serialize};

/// The quantile levels reported in [`Quantiles`], in field order.
pub const QUANTILE_LEVELS: [f64; 13] = [
    0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
];

/// A fixed set of sample quantiles, computed with NumPy's default
/// (`method="linear"`, Hyndman & Fan type 7) rule — see [`quantile_sorted`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// q = 0
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub min: f64,
    /// q = 0.001
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p0_1: f64,
    /// q = 0.01
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p1: f64,
    /// q = 0.05
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p5: f64,
    /// q = 0.10
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p10: f64,
    /// q = 0.25
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p25: f64,
    /// q = 0.50 (median)
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p50: f64,
    /// q = 0.75
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p75: f64,
    /// q = 0.90
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p90: f64,
    /// q = 0.95
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p95: f64,
    /// q = 0.99
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p99: f64,
    /// q = 0.999
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub p99_9: f64,
    /// q = 1
    #[serde(deserialize_with = "crate::serde_f64::scalar::deserialize")]
    pub max: f64,
}

impl Quantiles {
    /// All fields NaN: the quantiles of an empty sample are undefined.
    pub fn nan() -> Self {
        Self::from_levels([f64::NAN; 13])
    }

    fn from_levels(v: [f64; 13]) -> Self {
        Quantiles {
            min: v[0],
            p0_1: v[1],
            p1: v[2],
            p5: v[3],
            p10: v[4],
            p25: v[5],
            p50: v[6],
            p75: v[7],
            p90: v[8],
            p95: v[9],
            p99: v[10],
            p99_9: v[11],
            max: v[12],
        }
    }

    /// Quantiles of an arbitrary sample (sorted internally).
    ///
    /// If any value is NaN every quantile is NaN (as in `np.quantile`):
    /// a NaN has no place in an order, so no order statistic is meaningful.
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() || values.iter().any(|x| x.is_nan()) {
            return Self::nan();
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable_by(f64::total_cmp);
        Self::from_levels(QUANTILE_LEVELS.map(|q| quantile_sorted(&sorted, q)))
    }
}

/// Linear-interpolation quantile of an ascending, non-empty, NaN-free slice,
/// reproducing NumPy's default `np.quantile(a, q)` bit for bit:
///
/// `h = (n-1)·q`, `j = ⌊h⌋`, `g = h - j`, `a = x[j]`, `b = x[min(j+1, n-1)]`,
/// result `a + (b-a)·g` if `g < 0.5` else `b - (b-a)·(1-g)`.
///
/// One deliberate difference: when `a == b` the value is returned as is, so
/// that equal infinite neighbours give `±inf` rather than NumPy's NaN.
/// Returns NaN for an empty slice.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let j = (h.floor() as usize).min(n - 1);
    let g = h - j as f64;
    let a = sorted[j];
    let b = sorted[(j + 1).min(n - 1)];
    if a == b {
        return a;
    }
    let d = b - a;
    if g >= 0.5 {
        b - d * (1.0 - g)
    } else {
        a + d * g
    }
}

/// Keeps every pushed value so quantiles are exact (not sketched).
///
/// Memory is 8 bytes per value; at tens of millions of tokens that is
/// hundreds of MB, which is the price of exactness.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantileSample {
    #[serde(with = "crate::serde_f64::vec")]
    values: Vec<f64>,
}

impl QuantileSample {
    /// Empty sample.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value.
    pub fn push(&mut self, x: f64) {
        self.values.push(x);
    }

    /// Appends `other`'s values; quantiles do not depend on order.
    pub fn merge(&mut self, other: &QuantileSample) {
        self.values.extend_from_slice(&other.values);
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no value was pushed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The values in push (merge) order.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Sorts a copy and evaluates [`QUANTILE_LEVELS`].
    pub fn quantiles(&self) -> Quantiles {
        Quantiles::of(&self.values)
    }
}
