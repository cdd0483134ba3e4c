//! Attention masks. Batches are right-padded, so a causal mask alone keeps every real position
//! from seeing padding (padding positions come after it); their own outputs are garbage and ignored.

use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Additive mask (q_len, k_len) for queries at positions `q_start..q_start + q_len` over keys at
/// positions `0..k_len`: 0 where key <= query (and within `sliding_window`), -inf elsewhere.
pub fn causal_mask(
    q_start: usize,
    q_len: usize,
    k_len: usize,
    sliding_window: Option<usize>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut m = Vec::with_capacity(q_len * k_len);
    for i in 0..q_len {
        let q = q_start + i;
        for k in 0..k_len {
            let visible = k <= q && sliding_window.is_none_or(|w| q - k < w);
            m.push(if visible { 0f32 } else { f32::NEG_INFINITY });
        }
    }
    Ok(Tensor::from_vec(m, (q_len, k_len), device)?.to_dtype(dtype)?)
}

/// The keys `lo..hi` (of `0..k_len`) that the query at position `q` sees: the causal and
/// sliding-window rule of `causal_mask`, as a range.
pub(crate) fn visible_keys(
    q: usize,
    k_len: usize,
    sliding_window: Option<usize>,
) -> (usize, usize) {
    let hi = (q + 1).min(k_len);
    let lo = sliding_window.map_or(0, |w| (q + 1).saturating_sub(w));
    (lo.min(hi), hi)
}

/// One row of `softmax(scores * scale + mask)` where the mask is 0 on keys `lo..hi` and -inf
/// elsewhere, in place, with the arithmetic (and summation order) of candle's composed ops.
pub(crate) fn softmax_row<T>(row: &mut [T], lo: usize, hi: usize, scale: T)
where
    T: candle_core::cpu::kernels::VecOps + num_traits::Float,
{
    let k = row.len();
    if lo >= hi {
        // No visible key: softmax of a row of -inf is NaN, as the composed ops give.
        row.fill(T::nan());
        return;
    }
    row[..lo].fill(T::neg_infinity());
    row[hi..].fill(T::neg_infinity());
    for s in &mut row[lo..hi] {
        *s *= scale;
    }
    let mut max = T::neg_infinity();
    // SAFETY: `row` holds k > 0 elements (lo < hi <= k).
    unsafe { T::vec_reduce_max(row.as_ptr(), &mut max, k) };
    row[..lo].fill(T::zero());
    row[hi..].fill(T::zero());
    for s in &mut row[lo..hi] {
        *s = (*s - max).exp();
    }
    let mut sum = T::zero();
    // SAFETY: as above. The zeros keep the summation order of the full row.
    unsafe { T::vec_reduce_sum(row.as_ptr(), &mut sum, k) };
    for s in &mut row[lo..hi] {
        *s /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `visible_keys` is the zero set of `causal_mask`, row by row.
    #[test]
    fn visible_keys_are_the_unmasked_keys() {
        for window in [None, Some(1), Some(3)] {
            let m: Vec<Vec<f32>> = causal_mask(2, 5, 7, window, DType::F32, &Device::Cpu)
                .unwrap()
                .to_vec2()
                .unwrap();
            for (i, row) in m.iter().enumerate() {
                let (lo, hi) = visible_keys(2 + i, 7, window);
                for (k, &x) in row.iter().enumerate() {
                    assert_eq!(
                        x == 0.0,
                        (lo..hi).contains(&k),
                        "{window:?} q {} k {k}",
                        2 + i
                    );
                }
            }
        }
    }
}
