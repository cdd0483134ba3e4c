//! Causal self-attention with grouped-query heads, shared by every architecture. The differences
//! between architectures are in the config: separate or fused q/k/v projections (Phi-3, GPT-2;
//! grouped by head in GPT-NeoX), q/k/v and output biases (Qwen2, GPT-2), per-head q/k norm before
//! RoPE (Qwen3, Gemma-3), RoPE or none (GPT-2's learned positions are added to the embeddings),
//! the score scale (Gemma's `query_pre_attn_scalar`), score softcapping (Gemma-2), and a sliding
//! window per layer (Mistral, Gemma). Batches are right-padded, so the causal mask also keeps
//! padding out.

use candle_core::{DType, Tensor};

use super::attention_cpu::CpuCausalAttention;
use super::linear::Linear;
use super::mask::causal_mask;
use super::norm::Norm;
use super::rope::RopeTables;
use crate::config::{DecoderConfig, LayerKind};
use crate::error::Result;
use crate::tensor_names::Role;
use crate::weights::Weights;

/// Queries are processed in blocks of this many positions, so the score matrix is at most
/// (B, H, QUERY_BLOCK, T) and keys after the block (all masked) are never multiplied.
const QUERY_BLOCK: usize = 256;

/// The q, k and v projections: three, or one fused `((H + 2·KV)·D, hidden)` projection.
#[derive(Debug, Clone)]
pub enum Qkv {
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// Rows: all q heads, then all k heads, then all v heads.
    Fused(Linear),
    /// Rows grouped by head: q, k, v of head 0, then of head 1, ... (GPT-NeoX; no GQA).
    FusedPerHead(Linear),
}

/// One layer's keys and values of the positions seen so far, for incremental decoding (see
/// [`crate::decoder::KvCache`]): candle tensors (after k-norm and RoPE) on the candle path, f32
/// rows on llama.cpp's path. Keys are stored rotated, so a new query only needs its own position.
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    /// CPU op: (1, T, KV, D); composed ops: (1, KV, T, D).
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// llama.cpp's path: (T, KV·D) rows, as the projections (and RoPE) produced them.
    pub(crate) k_rows: Vec<f32>,
    pub(crate) v_rows: Vec<f32>,
}

impl LayerKv {
    /// Appends `k`, `v` along the position dimension `dim` and returns all keys and values.
    fn append(&mut self, k: Tensor, v: Tensor, dim: usize) -> Result<(Tensor, Tensor)> {
        let cat = |old: &Option<Tensor>, new: Tensor| -> Result<Tensor> {
            Ok(match old {
                Some(o) => Tensor::cat(&[o, &new], dim)?,
                None => new,
            })
        };
        let (k, v) = (cat(&self.k, k)?, cat(&self.v, v)?);
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        Ok((k, v))
    }
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
            let f = Linear::load(vb, Role::AttnQkv, hidden, (h + 2 * kv) * d, bias)?;
            if cfg.qkv_per_head {
                Qkv::FusedPerHead(f)
            } else {
                Qkv::Fused(f)
            }
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
            Qkv::Fused(f) | Qkv::FusedPerHead(f) => f,
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
            Qkv::FusedPerHead(f) => {
                // (B, T, H·3·D) -> (B, T, H, 3·D), each head's q, k, v side by side
                let y = f.forward(x)?.reshape((b, t, h, 3 * d))?;
                (
                    y.narrow(3, 0, d)?.contiguous()?,
                    y.narrow(3, d, d)?.contiguous()?,
                    y.narrow(3, 2 * d, d)?.contiguous()?,
                )
            }
        })
    }

    /// x: (B, T, hidden) -> (B, T, hidden). `rope`: None for a model with learned positions.
    /// `cache`: the keys and values of the positions before x (B = 1; `rope` then holds the
    /// tables of x's positions), extended with x's; None for a windowed forward from position 0.
    pub fn forward(
        &self,
        x: &Tensor,
        rope: Option<&RopeTables>,
        cache: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
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
            let (q, k) = match rope {
                Some(r) => (r.apply_thd(&q)?, r.apply_thd(&k)?),
                None => (q, k.contiguous()?),
            };
            let v = v.contiguous()?;
            // with a cache the op sees all keys and puts the queries at the last positions
            let (k, v) = match cache {
                // (cat of a non-contiguous piece, e.g. partial rotary's, may come out strided)
                Some(c) => {
                    let (k, v) = c.append(k.contiguous()?, v, 1)?;
                    (k.contiguous()?, v.contiguous()?)
                }
                None => (k, v),
            };
            let out = q.contiguous()?.apply_op3_no_bwd(
                &k,
                &v,
                &CpuCausalAttention {
                    scale,
                    softcap: self.softcap,
                    sliding_window: self.sliding_window,
                },
            )?; // (B, T, H*D)
            return self.o_proj.forward(&out);
        }
        // (B, T, H, D) -> (B, H, T, D)
        let (q, k) = (q.transpose(1, 2)?, k.transpose(1, 2)?);
        let (q, k) = match rope {
            Some(r) => (r.apply(&q)?, r.apply(&k)?),
            None => (q.contiguous()?, k.contiguous()?),
        };
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match cache {
            Some(c) => c.append(k, v, 2)?,
            None => (k, v),
        };
        // keys before the first query (from the cache)
        let past = k.dim(2)? - t;
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
            let kb = k.narrow(2, 0, past + end)?.contiguous()?; // (B, KV, past + end, D)
            let vb = v.narrow(2, 0, past + end)?.contiguous()?;
            // (B, KV, n_rep*L, D) x (B, KV, D, end) -> (B, KV, n_rep*L, end)
            let scores = (qb.matmul(&kb.t()?)? * scale)?;
            let mut scores =
                scores
                    .to_dtype(softmax_dtype)?
                    .reshape((b, kv, n_rep, len, past + end))?;
            if let Some(cap) = self.softcap {
                scores = ((scores / cap)?.tanh()? * cap)?;
            }
            let mask = causal_mask(
                past + start,
                len,
                past + end,
                self.sliding_window,
                softmax_dtype,
                x.device(),
            )?;
            let scores = scores.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?
                .to_dtype(vb.dtype())?
                .reshape((b, kv, n_rep * len, past + end))?;
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
