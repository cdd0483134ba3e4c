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

/// Scale, causal (and sliding-window) mask and softmax over the last dimension, in place, on the
/// CPU: the same arithmetic as `softmax(scores * scale + causal_mask(..))` (so the same bits),
/// without the three temporaries of that composition and without `exp` on masked keys.
///
/// The tensor's rows are query blocks of `q_len` rows each (any number of them, e.g. one per
/// batch row and head); row `i` of a block is the query at position `q_start + i`, and its
/// `k_len` columns are the keys at positions `0..k_len`.
pub(crate) struct CausalSoftmax {
    pub scale: f64,
    pub q_start: usize,
    pub q_len: usize,
    pub k_len: usize,
    pub sliding_window: Option<usize>,
}

impl CausalSoftmax {
    /// Which keys `lo..hi` the query in block row `i` sees.
    fn visible(&self, i: usize) -> (usize, usize) {
        let q = self.q_start + i;
        let hi = (q + 1).min(self.k_len);
        let lo = self.sliding_window.map_or(0, |w| (q + 1).saturating_sub(w));
        (lo.min(hi), hi)
    }

    fn rows<T>(&self, scores: &mut [T]) -> candle_core::Result<()>
    where
        T: candle_core::WithDType + candle_core::cpu::kernels::VecOps + num_traits::Float,
    {
        use rayon::prelude::*;
        let k = self.k_len;
        if k == 0 || scores.len() % (k * self.q_len.max(1)) != 0 {
            candle_core::bail!(
                "causal softmax: {} scores are not rows of {k} keys in blocks of {}",
                scores.len(),
                self.q_len
            );
        }
        let scale = T::from_f64(self.scale);
        scores.par_chunks_mut(k).enumerate().for_each(|(r, row)| {
            let (lo, hi) = self.visible(r % self.q_len);
            if lo == hi {
                // No visible key: softmax of a row of -inf is NaN, as the composed ops give.
                row.fill(T::nan());
                return;
            }
            row[..lo].fill(T::neg_infinity());
            row[hi..].fill(T::neg_infinity());
            for s in &mut row[lo..hi] {
                *s = *s * scale;
            }
            let mut max = T::neg_infinity();
            // SAFETY: `row` holds k > 0 elements.
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
        });
        Ok(())
    }
}

impl candle_core::InplaceOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use candle_core::CpuStorage;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("causal softmax: scores must be contiguous");
        };
        match storage {
            CpuStorage::F32(v) => self.rows(&mut v[start..end]),
            CpuStorage::F64(v) => self.rows(&mut v[start..end]),
            _ => candle_core::bail!("causal softmax: scores must be f32 or f64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused op must give the bits of the composition it replaces, for every query block
    /// shape the attention uses (first block, later block, sliding window), in f32 and f64.
    #[test]
    fn causal_softmax_equals_the_composed_ops() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for (q_start, q_len, k_len, window) in [
                (0, 5, 5, None),
                (5, 4, 9, None),
                (3, 6, 9, Some(4)),
                (0, 1, 1, None),
            ] {
                let rows = 3 * q_len; // three heads, stacked as the attention stacks them
                let scores = Tensor::randn(0f32, 3.0, (2, rows, k_len), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let scale = 0.125;
                let mask = causal_mask(q_start, q_len, k_len, window, dtype, &dev).unwrap();
                let want = candle_nn::ops::softmax_last_dim(
                    &(&scores * scale)
                        .unwrap()
                        .reshape((2, 3, q_len, k_len))
                        .unwrap()
                        .broadcast_add(&mask)
                        .unwrap(),
                )
                .unwrap()
                .reshape((2, rows, k_len))
                .unwrap();
                let got = scores.copy().unwrap();
                got.inplace_op1(&CausalSoftmax {
                    scale,
                    q_start,
                    q_len,
                    k_len,
                    sliding_window: window,
                })
                .unwrap();
                let (w, g): (Vec<f64>, Vec<f64>) = (
                    want.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                    got.to_dtype(DType::F64)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1()
                        .unwrap(),
                );
                assert_eq!(
                    w, g,
                    "{dtype:?} start {q_start} len {q_len} keys {k_len} {window:?}"
                );
            }
        }
    }
}
