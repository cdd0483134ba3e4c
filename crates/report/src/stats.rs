//! What the plots show, computed from the token rows: means with 95 % intervals per log2
//! context-length bin (the bins of `summary.json`'s `by_position`, which has no standard errors)
//! and fixed-range histograms.

use surprisal_metrics::{position_bin_index, position_bin_range, MeanStat, Z_95};

/// Mean of a per-token value over one log2 context-length bin, with its 95 % interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Band {
    /// Bin index (0: context 0; `k ≥ 1`: `2^(k−1) ..= 2^k − 1`).
    pub bin: usize,
    /// Tokens in the bin.
    pub count: u64,
    /// Mean of the value.
    pub mean: f64,
    /// `mean − 1.96·se` (the mean itself when the bin holds one token).
    pub lo: f64,
    /// `mean + 1.96·se`.
    pub hi: f64,
}

/// `(context_len, value)` pairs → one [`Band`] per non-empty bin, in bin order. Non-finite values
/// are skipped (as the aggregates skip them).
pub fn bands(values: impl Iterator<Item = (u64, f64)>) -> Vec<Band> {
    let mut acc: Vec<MeanStat> = Vec::new();
    for (ctx, v) in values {
        if !v.is_finite() {
            continue;
        }
        let k = position_bin_index(ctx as usize);
        if acc.len() <= k {
            acc.resize(k + 1, MeanStat::new());
        }
        acc[k].push(v);
    }
    acc.iter()
        .enumerate()
        .filter(|(_, m)| m.count() > 0)
        .map(|(bin, m)| {
            let half = if m.count() > 1 {
                Z_95 * m.stderr()
            } else {
                0.0
            };
            Band {
                bin,
                count: m.count(),
                mean: m.mean(),
                lo: m.mean() - half,
                hi: m.mean() + half,
            }
        })
        .collect()
}

/// The context lengths of bin `k` as an axis label (`0`, `1`, `2–3`, `512–1023`).
pub fn bin_label(k: usize) -> String {
    let (lo, hi) = position_bin_range(k);
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    }
}

/// Counts over `bins` equal-width bins of `[lo, hi)`; values outside go to the first or last bin
/// (so every finite value is counted), non-finite ones are skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub lo: f64,
    /// Upper edge of the last bin.
    pub hi: f64,
    /// Count per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The histogram of `values`.
    pub fn new(lo: f64, hi: f64, bins: usize, values: impl Iterator<Item = f64>) -> Self {
        let n = bins.max(1);
        let mut counts = vec![0u64; n];
        for v in values.filter(|v| v.is_finite()) {
            counts[bin_of(v, lo, hi, n)] += 1;
        }
        Histogram { lo, hi, counts }
    }

    /// Width of one bin.
    pub fn width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len() as f64
    }

    /// Values counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

fn bin_of(v: f64, lo: f64, hi: f64, n: usize) -> usize {
    let t = ((v - lo) / (hi - lo) * n as f64).floor();
    if t.is_nan() || t < 0.0 {
        0
    } else {
        (t as usize).min(n - 1)
    }
}

/// A 2-D histogram: `counts[iy][ix]` over `nx × ny` bins of `[x_lo, x_hi) × [y_lo, y_hi)`, values
/// outside clamped to the edge bins.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram2d {
    /// x range.
    pub x: (f64, f64),
    /// y range.
    pub y: (f64, f64),
    /// Counts, row `iy` (y bin) by column `ix` (x bin).
    pub counts: Vec<Vec<u64>>,
}

impl Histogram2d {
    /// The 2-D histogram of the `(x, y)` pairs.
    pub fn new(
        x: (f64, f64),
        y: (f64, f64),
        (nx, ny): (usize, usize),
        pairs: impl Iterator<Item = (f64, f64)>,
    ) -> Self {
        let (nx, ny) = (nx.max(1), ny.max(1));
        let mut counts = vec![vec![0u64; nx]; ny];
        for (a, b) in pairs.filter(|(a, b)| a.is_finite() && b.is_finite()) {
            let ix = bin_of(a, x.0, x.1, nx);
            let iy = bin_of(b, y.0, y.1, ny);
            counts[iy][ix] += 1;
        }
        Histogram2d { x, y, counts }
    }

    /// The largest count.
    pub fn max(&self) -> u64 {
        self.counts.iter().flatten().copied().max().unwrap_or(0)
    }
}

/// The `q` quantile of the finite values (nearest rank; NaN when there are none).
pub fn quantile(values: impl Iterator<Item = f64>, q: f64) -> f64 {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The smallest of 1, 2, 5 × 10^k that is at least `x > 0` (an axis limit that reads well).
pub fn nice_ceil(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * p)
}

/// An axis upper limit that holds `q` of the values (at least `min`), rounded up to a whole number:
/// heavy tails go to the last bin instead of squeezing the rest.
pub fn upper_limit(values: impl Iterator<Item = f64>, q: f64, min: f64) -> f64 {
    let v = quantile(values, q);
    if v.is_finite() {
        v.ceil().max(min)
    } else {
        min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_log2_bins_and_give_a_normal_interval() {
        // bin 0: ctx 0; bin 2: ctx 2..=3; bin 3: ctx 4..=7
        let b = bands([(0, 1.0), (2, 1.0), (3, 3.0), (5, f64::NAN), (4, 2.0)].into_iter());
        assert_eq!(b.iter().map(|x| x.bin).collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(b[0].count, 1);
        assert_eq!((b[0].lo, b[0].hi), (1.0, 1.0), "one token: no interval");
        // mean 2, sample sd √2, se 1
        assert_eq!(b[1].mean, 2.0);
        assert!((b[1].hi - b[1].mean - Z_95).abs() < 1e-12, "{:?}", b[1]);
        assert_eq!(b[2].count, 1, "NaN skipped");
        assert_eq!(bin_label(0), "0");
        assert_eq!(bin_label(1), "1");
        assert_eq!(bin_label(10), "512–1023");
    }

    #[test]
    fn histograms_count_every_finite_value_once_and_clamp_the_tails() {
        let h = Histogram::new(
            0.0,
            4.0,
            4,
            [-1.0, 0.0, 0.99, 1.0, 3.99, 4.0, 100.0, f64::NAN].into_iter(),
        );
        assert_eq!(h.counts, [3, 1, 0, 3]);
        assert_eq!(h.total(), 7);
        assert_eq!(h.width(), 1.0);
        let h2 = Histogram2d::new(
            (0.0, 2.0),
            (0.0, 1.0),
            (2, 2),
            [(0.5, 0.9), (1.5, 0.1), (9.0, 9.0)].into_iter(),
        );
        assert_eq!(h2.counts, [[0, 1], [1, 1]]);
        assert_eq!(h2.max(), 1);
        assert_eq!(
            upper_limit([0.2, 1.5, 2.5, 30.0].into_iter(), 0.5, 1.0),
            3.0
        );
        assert_eq!(upper_limit(std::iter::empty(), 0.99, 8.0), 8.0);
        assert_eq!(nice_ceil(0.0123), 0.02);
        assert_eq!(nice_ceil(3.0), 5.0);
        assert_eq!(nice_ceil(10.0), 10.0);
    }
}
