//! Log probability mass of a subset of the vocabulary.

/// `log Σ_{i: mask[i]} softmax(logits)_i` (nats), computed in `f64` with
/// max-shifted log-sum-exp (the selected and the full sums are each shifted
/// by their own maximum, so a selected mass far below the arg-max does not
/// underflow).
///
/// `-inf` logits are fine (they contribute nothing). Entries of `logits`
/// beyond `mask.len()` count as unmasked (padded vocabularies). Returns
/// `-inf` if no masked entry has finite probability, and NaN if the
/// distribution itself is undefined (all logits `-inf`, or any NaN/`+inf`).
///
/// Used for the word-boundary mass `log P_bow` of per-word surprisal.
pub fn log_mass(logits: &[f32], mask: &[bool]) -> f64 {
    let mut max_all = f32::NEG_INFINITY;
    let mut max_sel = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l == f32::INFINITY {
            return f64::NAN;
        }
        max_all = max_all.max(l);
        if mask.get(i).copied().unwrap_or(false) {
            max_sel = max_sel.max(l);
        }
    }
    if max_all == f32::NEG_INFINITY {
        return f64::NAN;
    }
    if max_sel == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let (max_all, max_sel) = (f64::from(max_all), f64::from(max_sel));
    let (mut sum_all, mut sum_sel) = (0.0f64, 0.0f64);
    for (i, &l) in logits.iter().enumerate() {
        let l = f64::from(l);
        sum_all += (l - max_all).exp();
        if mask.get(i).copied().unwrap_or(false) {
            sum_sel += (l - max_sel).exp();
        }
    }
    (max_sel + sum_sel.ln()) - (max_all + sum_all.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_mass_basic() {
        let l = [0.0f32, 0.0, 0.0, 0.0];
        assert!((log_mass(&l, &[true, false, true, false]) - 0.5f64.ln()).abs() < 1e-12);
        assert_eq!(log_mass(&l, &[false; 4]), f64::NEG_INFINITY);
        assert!(log_mass(&l, &[true; 4]).abs() < 1e-12);
        let l = [f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY];
        assert!(log_mass(&l, &[false, true, false]).abs() < 1e-12);
        assert_eq!(log_mass(&l, &[true, false, true]), f64::NEG_INFINITY);
        assert!(log_mass(&[f32::NEG_INFINITY; 2], &[true, true]).is_nan());
        assert!(log_mass(&[0.0, f32::NAN], &[true, false]).is_nan());
        assert!(log_mass(&[0.0, f32::INFINITY], &[true, false]).is_nan());
        // Underflow of the selected mass relative to the max.
        let l = [1000.0f32, 0.0];
        assert!((log_mass(&l, &[false, true]) - (-1000.0)).abs() < 1e-9);
        // Mask shorter than logits: the rest is unmasked.
        assert!((log_mass(&[0.0, 0.0], &[true]) - 0.5f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn log_mass_matches_naive_softmax_sum() {
        let logits: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 3.0)
            .collect();
        let mask: Vec<bool> = (0..37).map(|i| i % 3 == 0).collect();
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        let sel: f64 = logits
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| m)
            .map(|(&l, _)| f64::from(l).exp())
            .sum();
        assert!((log_mass(&logits, &mask) - (sel / z).ln()).abs() < 1e-12);
        // complementary masses sum to one
        let inv: Vec<bool> = mask.iter().map(|m| !m).collect();
        let total = log_mass(&logits, &mask).exp() + log_mass(&logits, &inv).exp();
        assert!((total - 1.0).abs() < 1e-12);
    }
}
