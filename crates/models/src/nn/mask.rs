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
    let mut m = vec![f32::NEG_INFINITY; q_len * k_len];
    for (i, row) in m.chunks_exact_mut(k_len.max(1)).enumerate().take(q_len) {
        let (lo, hi) = visible_keys(q_start + i, k_len, sliding_window);
        row[lo..hi].fill(0.0);
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

/// One row of `softmax(softcap(scores * scale) + mask)` where the mask is 0 on keys `lo..hi` and
/// -inf elsewhere and `softcap(s) = cap · tanh(s / cap)` (identity without a cap), in place, with
/// the arithmetic (and summation order) of candle's composed ops.
pub(crate) fn softmax_row<T>(row: &mut [T], lo: usize, hi: usize, scale: T, softcap: Option<T>)
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
    if let Some(cap) = softcap {
        for s in &mut row[lo..hi] {
            *s = (*s / cap).tanh() * cap;
        }
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

    /// Keys at or before the query, and with a window only the last `w` of them.
    #[test]
    fn visible_keys_are_causal_and_windowed() {
        assert_eq!(visible_keys(0, 7, None), (0, 1));
        assert_eq!(visible_keys(4, 7, None), (0, 5));
        assert_eq!(visible_keys(9, 7, None), (0, 7)); // queries past the keys see them all
        assert_eq!(visible_keys(4, 7, Some(3)), (2, 5)); // keys 2, 3, 4
        assert_eq!(visible_keys(1, 7, Some(3)), (0, 2));
        assert_eq!(visible_keys(4, 7, Some(1)), (4, 5));
        assert_eq!(visible_keys(9, 7, Some(2)), (7, 7)); // the window lies past the last key
        let m: Vec<Vec<f32>> = causal_mask(2, 3, 5, Some(2), DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        let n = f32::NEG_INFINITY;
        assert_eq!(
            m,
            vec![
                vec![n, 0.0, 0.0, n, n],
                vec![n, n, 0.0, 0.0, n],
                vec![n, n, n, 0.0, 0.0]
            ]
        );
    }
}
