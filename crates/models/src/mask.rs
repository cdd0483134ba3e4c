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
