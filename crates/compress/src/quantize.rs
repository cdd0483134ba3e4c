//! The model's next-token distribution as integer frequencies for the range coder (scheme 1).
//!
//! Both sides must compute the very same integers from the same logits, on any platform, so the
//! scheme uses only IEEE-754 f64 operations that are correctly rounded (+, −, ×, ÷, floor, the
//! f32→f64 widening) and `libm::exp`, a pure-Rust port of musl's `exp` (the same code, hence the
//! same bits, everywhere; `f64::exp` calls the platform's libm, which may differ in the last
//! bit). Sums run in index order.
//!
//! Scheme 1, for logits `l[0..V]` (V ≤ 2^23):
//! 1. `m` = the largest logit (f64); `s = Σ_i exp(l_i − m)` in index order;
//! 2. `p_i = exp(l_i − m) / s`;
//! 3. `q_i = 1 + floor(p_i · (2^24 − V))`: every token keeps a frequency of at least 1, so every
//!    token stays codable (a token the model deems impossible costs at most 24 bits);
//! 4. the rounding remainder `2^24 − Σ q_i` (a few units) goes to the first token with the
//!    largest `q_i`, so the frequencies sum to exactly 2^24.
//!
//! Non-finite logits do not panic: NaN turns into frequency 1 through the saturating
//! float-to-integer cast; both sides do the same.
//!
//! Cost against the exact distribution: a token loses at most `V / 2^24` of relative mass to the
//! floor (SmolLM2: 0.3 %, 0.004 bits) plus under 1/2^24 absolute to rounding.

use crate::error::{CompressError, Result};

/// log2 of the frequency total.
pub const PRECISION_BITS: u32 = 24;
/// The frequency total.
pub const TOTAL: u32 = 1 << PRECISION_BITS;
/// The quantization scheme this module implements, recorded in the container.
pub const SCHEME: u8 = 1;

/// Frequencies (each ≥ 1, summing to [`TOTAL`]) of the distribution `softmax(logits)`.
pub fn frequencies(logits: &[f32]) -> Result<Vec<u32>> {
    let v = logits.len();
    if v < 2 || v > (TOTAL / 2) as usize {
        return Err(CompressError::Vocab(v));
    }
    let m = logits
        .iter()
        .map(|&l| f64::from(l))
        .fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0f64;
    for &l in logits {
        s += libm::exp(f64::from(l) - m);
    }
    let budget = f64::from(TOTAL - v as u32);
    let mut q: Vec<u32> = logits
        .iter()
        .map(|&l| {
            let p = libm::exp(f64::from(l) - m) / s;
            // saturating cast: NaN -> 0, anything above the budget -> clamped below
            1 + ((p * budget).floor() as u32).min(TOTAL - v as u32)
        })
        .collect();
    let sum: u64 = q.iter().map(|&x| u64::from(x)).sum();
    let mut best = 0;
    for (i, &x) in q.iter().enumerate() {
        if x > q[best] {
            best = i;
        }
    }
    let remainder = i64::from(TOTAL) - sum as i64;
    let fixed = i64::from(q[best]) + remainder;
    if fixed < 1 {
        // Σ p_i ≤ 1 + V·2^-52, so the floors overshoot by at most one unit; this cannot happen
        return Err(CompressError::Quantization);
    }
    q[best] = fixed as u32;
    Ok(q)
}

/// −log2 of the probability `freqs[token] / TOTAL`: what coding the token costs.
pub fn code_bits(freqs: &[u32], token: usize) -> f64 {
    f64::from(PRECISION_BITS) - f64::from(freqs[token]).log2()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_to_total_with_a_floor_of_one() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 * 0.3 - 20.0)
            .collect();
        let q = frequencies(&logits).unwrap();
        assert_eq!(
            q.iter().map(|&x| u64::from(x)).sum::<u64>(),
            u64::from(TOTAL)
        );
        assert!(q.iter().all(|&x| x >= 1));
        // the frequencies follow the probabilities: the exact softmax, independently in f64
        let m = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let z: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
        for (i, &l) in logits.iter().enumerate() {
            let p = (l as f64 - m).exp() / z;
            let got = f64::from(q[i]) / f64::from(TOTAL);
            assert!(
                (got - p).abs() <= 1e-6 + 0.001 * p,
                "token {i}: {got} vs {p}"
            );
        }
    }

    #[test]
    fn extreme_and_non_finite_logits_stay_codable() {
        for logits in [
            vec![0f32; 10],
            vec![1e30, -1e30, 0.0, 5.0],
            vec![f32::NEG_INFINITY, 0.0, 1.0],
            vec![f32::NAN, 1.0, 2.0],
            vec![f32::INFINITY, 1.0, 2.0],
        ] {
            let q = frequencies(&logits).unwrap();
            assert_eq!(
                q.iter().map(|&x| u64::from(x)).sum::<u64>(),
                u64::from(TOTAL)
            );
            assert!(q.iter().all(|&x| x >= 1), "{logits:?}: {q:?}");
        }
        // uniform logits: equal frequencies but for the remainder on the first
        let q = frequencies(&[0f32; 10]).unwrap();
        assert!(q[1..].iter().all(|&x| x == q[1]));
        assert!(frequencies(&[1.0]).is_err());
    }
}
