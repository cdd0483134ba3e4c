//! Causal self-attention with grouped-query heads, shared by every architecture. The differences
//! between architectures are in the config: separate or fused q/k/v projections (Phi-3), q/k/v
//! and output biases (Qwen2), per-head q/k norm before RoPE (Qwen3, Gemma-3), the score scale
//! (Gemma's `query_pre_attn_scalar`), score softcapping (Gemma-2), and a sliding window per layer
//! (Mistral, Gemma). Batches are right-padded, so the causal mask also keeps padding out.

use candle_core::{DType, Tensor};

use super::attention_cpu::CpuCausalAttention;
use super::linear::Linear;
use super::mask::causal_mask;
use super::norm::Norm;
use super::rope::RopeTables;
use crate::arch::Role;
use crate::config::{DecoderConfig, LayerKind};
use crate::error::Result;
use crate::weights::Weights;

/// Queries are processed in blocks of this many positions, so the score matrix is at most
/// (B, H, QUERY_BLOCK, T) and keys after the block (all masked) are never multiplied.
const QUERY_BLOCK: usize = 256;

/// The q, k and v projections: three, or one fused `((H + 2·KV)·D, hidden)` projection.
#[derive(Debug, Clone)]
pub enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

#[derive(Debug, Clone)]
pub struct Attention {
    pub(crate) qkv: Qkv,
    pub(crate) o_proj: Linear,
    pub(crate) q_norm: Option<Norm>,
    pub(crate) k_norm: Option<Norm>,
    pub(crate) num_heads: usize,
    pub(crate) num_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) scale: f64,
    pub(crate) softcap: Option<f64>,
    pub(crate) sliding_window: Option<usize>,
}

impl Attention {
    /// `vb`: the block's weights.
    pub fn load(vb: &Weights, cfg: &DecoderConfig, layer: &LayerKind) -> Result<Self> {
        let (h, kv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let hidden = cfg.hidden_size;
        let (q_norm, k_norm) = if cfg.qk_norm {
            (
                Some(Norm::load(vb, Role::AttnQNorm, d, cfg.norm, cfg.norm_eps)?),
                Some(Norm::load(vb, Role::AttnKNorm, d, cfg.norm, cfg.norm_eps)?),
            )
        } else {
            (None, None)
        };
        let bias = cfg.qkv_bias;
        let qkv = if cfg.fused_qkv {
            Qkv::Fused(Linear::load(
                vb,
                Role::AttnQkv,
                hidden,
                (h + 2 * kv) * d,
                bias,
            )?)
        } else {
            Qkv::Separate {
                q: Linear::load(vb, Role::AttnQ, hidden, h * d, bias)?,
                k: Linear::load(vb, Role::AttnK, hidden, kv * d, bias)?,
                v: Linear::load(vb, Role::AttnV, hidden, kv * d, bias)?,
            }
        };
        Ok(Self {
            qkv,
            o_proj: Linear::load(vb, Role::AttnOut, h * d, hidden, cfg.o_bias)?,
            q_norm,
            k_norm,
            num_heads: h,
            num_kv_heads: kv,
            head_dim: d,
            scale: cfg.attn_scale,
            softcap: cfg.attn_softcap,
            sliding_window: layer.sliding_window,
        })
    }

    /// The first projection, whose kernel tells which path a quantized model takes.
    pub(crate) fn first_projection(&self) -> &Linear {
        match &self.qkv {
            Qkv::Separate { q, .. } => q,
            Qkv::Fused(f) => f,
        }
    }

    /// x: (B, T, hidden) -> q (B, T, H, D), k and v (B, T, KV, D).
    fn project(&self, x: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // (B, T, H*D) -> (B, T, H, D)
        Ok(match &self.qkv {
            Qkv::Separate { q, k, v } => (
                q.forward(x)?.reshape((b, t, h, d))?,
                k.forward(x)?.reshape((b, t, kv, d))?,
                v.forward(x)?.reshape((b, t, kv, d))?,
            ),
            Qkv::Fused(f) => {
                // (B, T, (H + 2·KV)·D) -> (B, T, H + 2·KV, D), split along the heads
                let y = f.forward(x)?.reshape((b, t, h + 2 * kv, d))?;
                (
                    y.narrow(2, 0, h)?.contiguous()?,
                    y.narrow(2, h, kv)?.contiguous()?,
                    y.narrow(2, h + kv, kv)?.contiguous()?,
                )
            }
        })
    }

    /// x: (B, T, hidden) -> (B, T, hidden)
    pub fn forward(&self, x: &Tensor, rope: &RopeTables) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kv, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let n_rep = h / kv;

        let (q, k, v) = self.project(x)?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let scale = self.scale;
        if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) {
            // One op, no temporaries and no transposed copies (same arithmetic as below): see
            // `attention_cpu`. q, k, v stay (B, T, heads, D).
            let out = rope.apply_thd(&q)?.apply_op3_no_bwd(
                &rope.apply_thd(&k)?,
                &v.contiguous()?,
                &CpuCausalAttention {
                    scale,
                    softcap: self.softcap,
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
            let scores = (qb.matmul(&kb.t()?)? * scale)?;
            let mut scores = scores
                .to_dtype(softmax_dtype)?
                .reshape((b, kv, n_rep, len, end))?;
            if let Some(cap) = self.softcap {
                scores = ((scores / cap)?.tanh()? * cap)?;
            }
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
