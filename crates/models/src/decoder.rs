//! The Llama-family decoder (Llama, Mistral, Qwen2, Qwen3): embedding, N pre-norm blocks of
//! attention + SwiGLU MLP, final RMSNorm, output head. Returns hidden states for every position.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use crate::attention::Attention;
use crate::config::DecoderConfig;
use crate::config::{RopeLayout, RopeScaling};
use crate::error::{ModelError, Result};
use crate::ggml_cpu::GgmlMatMul;
use crate::layers::{Linear, Mlp, RmsNorm};
use crate::llama_cpp;
use crate::rope::RotaryEmbedding;
use crate::weights::Weights;

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn load(vb: &Weights, cfg: &DecoderConfig) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::load(&vb.pp("self_attn"), cfg)?,
            mlp: Mlp::load(
                &vb.pp("mlp"),
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.mlp_bias,
            )?,
            input_layernorm: RmsNorm::load(
                &vb.pp("input_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            post_attention_layernorm: RmsNorm::load(
                &vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
        })
    }

    /// llama.cpp's computation of the block (see `llama_cpp`): x (B·T·hidden) in place.
    fn forward_llama_cpp(
        &self,
        x: &mut [f32],
        b: usize,
        t: usize,
        lc: &LlamaCppRope,
        il: usize,
    ) -> Result<()> {
        use llama_cpp::dump;
        let a = &self.self_attn;
        let m = b * t;
        let (h, kv, d) = (a.num_heads, a.num_kv_heads, a.head_dim);
        let n1 = &self.input_layernorm;
        let xn = llama_cpp::rms_norm_mul(x, &n1.weight_f32()?, n1.eps());
        dump(&format!("attn_norm-{il}"), &xn);
        let [mut q, mut k, v]: [Vec<f32>; 3] =
            Linear::forward_f32_each(&[&a.q_proj, &a.k_proj, &a.v_proj], &xn, m)?
                .try_into()
                .expect("three projections");
        dump(&format!("Qcur-{il}"), &q);
        dump(&format!("Kcur-{il}"), &k);
        dump(&format!("Vcur-{il}"), &v);
        if let Some(n) = &a.q_norm {
            q = llama_cpp::rms_norm_mul(&q, &n.weight_f32()?, n.eps());
        }
        if let Some(n) = &a.k_norm {
            k = llama_cpp::rms_norm_mul(&k, &n.weight_f32()?, n.eps());
        }
        llama_cpp::rope_apply(&mut q, t, h, d, lc.interleaved, &lc.cache);
        llama_cpp::rope_apply(&mut k, t, kv, d, lc.interleaved, &lc.cache);
        dump(&format!("Qrope-{il}"), &q);
        dump(&format!("Krope-{il}"), &k);
        let shape = llama_cpp::AttnShape {
            b,
            t,
            heads: h,
            kv_heads: kv,
            d,
            scale: 1.0f32 / (d as f32).sqrt(),
            sliding_window: a.sliding_window,
        };
        let att = llama_cpp::attention(&q, &k, &v, &shape);
        llama_cpp::dump_attention(il, b, h, t);
        dump(&format!("kqv_out-{il}"), &att);
        let o = a.o_proj.forward_f32(&att, m)?;
        dump(&format!("attn_out-{il}"), &o);
        for (x, o) in x.iter_mut().zip(&o) {
            *x += *o;
        }
        let n2 = &self.post_attention_layernorm;
        dump(&format!("ffn_inp-{il}"), x);
        let xn = llama_cpp::rms_norm_mul(x, &n2.weight_f32()?, n2.eps());
        dump(&format!("ffn_norm-{il}"), &xn);
        let [gate, up]: [Vec<f32>; 2] =
            Linear::forward_f32_each(&[&self.mlp.gate_proj, &self.mlp.up_proj], &xn, m)?
                .try_into()
                .expect("two projections");
        let act = llama_cpp::swiglu(&gate, &up);
        dump(&format!("ffn_gate-{il}"), &gate);
        dump(&format!("ffn_up-{il}"), &up);
        dump(&format!("ffn_swiglu-{il}"), &act);
        let down = self.mlp.down_proj.forward_f32(&act, m)?;
        dump(&format!("ffn_out-{il}"), &down);
        for (x, o) in x.iter_mut().zip(&down) {
            *x += *o;
        }
        dump(&format!("l_out-{il}"), x);
        Ok(())
    }

    /// x: (B, T, hidden) -> (B, T, hidden)
    fn forward(&self, x: &Tensor, rope: &crate::rope::RopeTables) -> Result<Tensor> {
        let h = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, rope)?;
        let x = (x + h)?;
        let h = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?;
        Ok((x + h)?)
    }
}

/// What llama.cpp's RoPE needs.
#[derive(Debug, Clone)]
struct LlamaCppRope {
    cache: Vec<[f32; 2]>,
    interleaved: bool,
}

/// The token embedding table: dense, or the packed quantized GGUF tensor whose rows are
/// dequantized on lookup (as llama.cpp's `get_rows` does) — for a tied model the very same packed
/// weight the output head multiplies with.
#[derive(Debug, Clone)]
enum Embedding {
    /// (vocab, hidden)
    Dense(Tensor),
    Packed(Arc<GgmlMatMul>),
}

impl Embedding {
    /// ids (B*T,) -> (B, T, hidden)
    fn lookup(&self, ids: &Tensor, b: usize, t: usize, hidden: usize) -> Result<Tensor> {
        match self {
            Embedding::Dense(e) => Ok(e.index_select(ids, 0)?.reshape((b, t, hidden))?),
            Embedding::Packed(g) => {
                let ids: Vec<u32> = ids.to_vec1()?;
                let mut x = vec![0f32; ids.len() * hidden];
                for (row, &id) in x.chunks_exact_mut(hidden).zip(&ids) {
                    g.dequantize_row(id as usize, row);
                }
                // packed embeddings exist only on the CPU (the ggml kernels are CPU kernels)
                Ok(Tensor::from_vec(x, (b, t, hidden), &Device::Cpu)?)
            }
        }
    }
}

/// A causal language model that returns final (normed) hidden states for every position, and
/// applies the output head to rows of them on request.
#[derive(Debug, Clone)]
pub struct CausalLm {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RotaryEmbedding,
    cfg: DecoderConfig,
    device: Device,
    dtype: DType,
    /// Quantized GGUF on the CPU with ggml's kernels: run every op like llama.cpp does.
    llama_cpp: bool,
    freq_factors: Option<Vec<f32>>,
}

impl CausalLm {
    /// `vb` is rooted at the checkpoint root (tensors `model.*`, `lm_head.*`).
    pub fn load(vb: &Weights, cfg: &DecoderConfig, freq_factors: Option<&[f32]>) -> Result<Self> {
        let (vocab, hidden) = (cfg.vocab_size, cfg.hidden_size);
        let m = vb.pp("model");
        let layers = (0..cfg.num_layers)
            .map(|i| DecoderLayer::load(&m.pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(&m.pp("norm"), hidden, cfg.rms_norm_eps)?;
        // Tied when the config says so, or when there is no separate head.
        let head = vb.pp("lm_head");
        let tied = cfg.tie_word_embeddings || !head.contains("weight");
        let embed = m.pp("embed_tokens");
        let (embed_tokens, lm_head) = if embed.is_dense("weight") {
            let e = embed.get(&[vocab, hidden], "weight")?;
            let lm_head = if tied {
                // the embedding tensor itself (shared storage), not a second copy of it
                Linear::from_qmatmul(QMatMul::Tensor(e.clone()))?
            } else {
                Linear::load(&head, hidden, vocab, false)?
            };
            (Embedding::Dense(e), lm_head)
        } else {
            // Quantized GGUF: a tied head stays the quantized `token_embd`, like llama.cpp.
            let q = Linear::from_qmatmul(embed.matmul((vocab, hidden), "weight")?)?;
            let embed_tokens = match q.ggml() {
                Some(g) => Embedding::Packed(g),
                None => Embedding::Dense(embed.get(&[vocab, hidden], "weight")?),
            };
            let lm_head = if tied {
                q
            } else {
                Linear::load(&head, hidden, vocab, false)?
            };
            (embed_tokens, lm_head)
        };
        let llama_cpp = vb.device().is_cpu()
            && vb.dtype() == DType::F32
            && matches!(cfg.rope_scaling, RopeScaling::None)
            && cfg.head_dim % 16 == 0
            && layers.first().is_some_and(|l| l.self_attn.q_proj.is_ggml())
            // On by default (reproduces llama.cpp bit for bit); `SURPRISAL_LLAMA_CPP_OPS=0` opts out.
            && !std::env::var("SURPRISAL_LLAMA_CPP_OPS").is_ok_and(|v| v == "0");
        Ok(Self {
            llama_cpp,
            freq_factors: freq_factors.map(<[f32]>::to_vec),
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope: RotaryEmbedding::new(cfg, freq_factors),
            cfg: cfg.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// ids: (B, T) u32, right-padded; `lengths[b]` = real length of row b. Returns (B, T, hidden)
    /// in the model dtype, after the final norm. Outputs at padding positions are garbage.
    pub fn forward_hidden(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, t) = ids.dims2().map_err(|_| {
            ModelError::Input(format!(
                "ids must have shape (B, T), found {:?}",
                ids.dims()
            ))
        })?;
        if lengths.len() != b {
            return Err(ModelError::Input(format!(
                "{} lengths for a batch of {b} rows",
                lengths.len()
            )));
        }
        if let Some(&l) = lengths.iter().find(|&&l| l > t) {
            return Err(ModelError::Input(format!(
                "length {l} exceeds the padded length {t}"
            )));
        }
        if t > self.cfg.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "sequence length {t} exceeds the model's context length {}",
                self.cfg.max_position_embeddings
            )));
        }
        let ids = ids.to_dtype(DType::U32)?.to_device(&self.device)?;
        let flat = ids.flatten_all()?;
        if b * t > 0 {
            let max = flat.max(0)?.to_scalar::<u32>()?;
            if max as usize >= self.cfg.vocab_size {
                return Err(ModelError::Input(format!(
                    "token id {max} is outside the model's vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        // (B*T,) -> (B, T, hidden)
        let mut x = self
            .embed_tokens
            .lookup(&flat, b, t, self.cfg.hidden_size)?;
        if self.llama_cpp {
            let lc = LlamaCppRope {
                cache: llama_cpp::rope_cache(
                    t,
                    self.cfg.rope_dim,
                    self.cfg.rope_theta as f32,
                    self.freq_factors.as_deref(),
                ),
                interleaved: matches!(self.cfg.rope_layout, RopeLayout::Interleaved),
            };
            let mut xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
            for (il, layer) in self.layers.iter().enumerate() {
                layer.forward_llama_cpp(&mut xs, b, t, &lc, il)?;
            }
            let n = &self.norm;
            let xs = llama_cpp::rms_norm_mul(&xs, &n.weight_f32()?, n.eps());
            llama_cpp::dump("result_norm", &xs);
            return Ok(Tensor::from_vec(
                xs,
                (b, t, self.cfg.hidden_size),
                &self.device,
            )?);
        }
        let rope = self.rope.tables(t, self.dtype, &self.device)?;
        for layer in &self.layers {
            x = layer.forward(&x, &rope)?;
        }
        self.norm.forward(&x)
    }

    /// hidden_rows: (N, hidden), final norm already applied -> (N, vocab) f32 logits.
    pub fn logits(&self, hidden_rows: &Tensor) -> Result<Tensor> {
        let (_, h) = hidden_rows.dims2().map_err(|_| {
            ModelError::Input(format!(
                "hidden rows must have shape (N, hidden), found {:?}",
                hidden_rows.dims()
            ))
        })?;
        if h != self.cfg.hidden_size {
            return Err(ModelError::Input(format!(
                "hidden rows have width {h}, the model's hidden size is {}",
                self.cfg.hidden_size
            )));
        }
        let x = hidden_rows.to_dtype(self.dtype)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }
}
