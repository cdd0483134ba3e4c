//! Causal self-attention with grouped-query heads, shared by every architecture. The differences
//! between architectures are flags in the config: q/k/v bias (Qwen2), per-head q/k RMSNorm before
//! RoPE (Qwen3), explicit head_dim (Qwen3), sliding window (Mistral).

use candle_core::{DType, Tensor};

use crate::attention_cpu::CpuCausalAttention;
use crate::config::DecoderConfig;
use crate::error::Result;
use crate::layers::{Linear, RmsNorm};
use crate::mask::causal_mask;
use crate::rope::RopeTables;
use crate::weights::Weights;

/// Queries are processed in blocks of this many positions, so the score matrix is at most
/// (B, H, QUERY_BLOCK, T) and keys after the block (all masked) are never multiplied.
const QUERY_BLOCK: usize = 256;

#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) q_proj: Linear,
    pub(crate) k_proj: Linear,
    pub(crate) v_proj: Linear,
    pub(crate) o_proj: Linear,
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) sliding_window: Option<usize>,
}

impl Attention {
    pub fn load(vb: &Weights, cfg: &DecoderConfig) -> Result<Self> {
        let (h, kv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let hidden = cfg.hidden_size;
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(RmsNorm::load(&vb.pp("q_norm"), d, cfg.rms_norm_eps)?),
                Some(RmsNorm::load(&vb.pp("k_norm"), d, cfg.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            q_proj: Linear::load(&vb.pp("q_proj"), hidden, h * d, cfg.qkv_bias)?,
            k_proj: Linear::load(&vb.pp("k_proj"), hidden, kv * d, cfg.qkv_bias)?,
            v_proj: Linear::load(&vb.pp("v_proj"), hidden, kv * d, cfg.qkv_bias)?,
            o_proj: Linear::load(&vb.pp("o_proj"), h * d, hidden, cfg.o_bias)?,
            q_norm,
            k_norm,
            num_heads: h,
            num_kv_heads: kv,
            head_dim: d,
            sliding_window: cfg.sliding_window,
        })
    }

    /// x: (B, T, hidden) -> (B, T, hidden)
    pub fn forward(&self, x: &Tensor, rope: &RopeTables) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let n_rep = h / kv;

        // (B, T, H*D) -> (B, T, H, D)
        let q = self.q_proj.forward(x)?.reshape((b, t, h, d))?;
        let k = self.k_proj.forward(x)?.reshape((b, t, kv, d))?;
        let v = self.v_proj.forward(x)?.reshape((b, t, kv, d))?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let scale = 1.0 / (d as f64).sqrt();
        if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
            // One op, no temporaries and no transposed copies (same arithmetic as below): see
            // `attention_cpu`. q, k, v stay (B, T, heads, D).
            let out = rope.apply_thd(&q)?.apply_op3_no_bwd(
                &rope.apply_thd(&k)?,
                &v.contiguous()?,
                &CpuCausalAttention {
                    scale,
                    sliding_window: self.sliding_window,
                },
            )?; // (B, T, H*D)
            return self.o_proj.forward(&out);
        }
        // (B, T, H, D) -> (B, H, T, D)
        let q = rope.apply(&q.transpose(1, 2)?)?;
        let k = rope.apply(&k.transpose(1, 2)?)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        // Query head j uses kv head j / n_rep: (B, H, T, D) -> (B, KV, n_rep, T, D)
        let q = q.reshape((b, kv, n_rep, t, d))?;

        // Softmax in at least f32 (bf16/f16 scores would lose the small probabilities); f64 stays f64.
        let softmax_dtype = if x.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let mut blocks = Vec::with_capacity(t.div_ceil(QUERY_BLOCK));
        let mut start = 0;
        while start < t {
            let len = QUERY_BLOCK.min(t - start);
            let end = start + len;
            // Keys beyond the block's last query are all masked: take keys 0..end.
            // (B, KV, n_rep, L, D) -> (B, KV, n_rep*L, D)
            let qb = q
                .narrow(3, start, len)?
                .contiguous()?
                .reshape((b, kv, n_rep * len, d))?;
            let kb = k.narrow(2, 0, end)?.contiguous()?; // (B, KV, end, D)
            let vb = v.narrow(2, 0, end)?.contiguous()?; // (B, KV, end, D)
                                                         // (B, KV, n_rep*L, D) x (B, KV, D, end) -> (B, KV, n_rep*L, end)
                                                         // (B, KV, n_rep*L, D) x (B, KV, D, end) -> (B, KV, n_rep*L, end)
            let scores = (qb.matmul(&kb.t()?)? * scale)?;
            let scores = scores
                .to_dtype(softmax_dtype)?
                .reshape((b, kv, n_rep, len, end))?;
            let mask = causal_mask(
                start,
                len,
                end,
                self.sliding_window,
                softmax_dtype,
                x.device(),
            )?;
            let scores = scores.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?
                .to_dtype(vb.dtype())?
                .reshape((b, kv, n_rep * len, end))?;
            // (B, KV, n_rep*L, end) x (B, KV, end, D) -> (B, KV, n_rep, L, D)
            let out = probs.matmul(&vb)?.reshape((b, kv, n_rep, len, d))?;
            blocks.push(out);
            start = end;
        }
        let out = Tensor::cat(&blocks, 3)?; // (B, KV, n_rep, T, D)
                                            // (B, KV, n_rep, T, D) -> (B, H, T, D) -> (B, T, H, D) -> (B, T, H*D)
        let out = out
            .reshape((b, h, t, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h * d))?;
        self.o_proj.forward(&out)
    }
}
