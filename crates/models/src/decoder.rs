//! The decoder every architecture runs: token embedding (optionally scaled), N blocks of the
//! shape the config describes (norms, attention, MLP around the residual stream), final norm, and
//! the output head. Returns hidden states for every position; logits on request.
//!
//! Quantized GGUF files on the CPU run the same blocks with llama.cpp's order of float operations
//! (`forward_llama_cpp`, kernels in `llama_cpp` and `ggml_cpu`), so their per-token values are
//! llama.cpp's.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

use crate::config::{
    BlockShape, DecoderConfig, LayerKind, MlpKind, NormKind, RopeLayout, RopeScaling,
};
use crate::error::{ModelError, Result};
use crate::ggml_cpu::GgmlMatMul;
use crate::llama_cpp;
use crate::nn::attention::{Attention, LayerKv, Qkv};
use crate::nn::linear::Linear;
use crate::nn::mlp::Mlp;
use crate::nn::norm::Norm;
use crate::nn::rope::{RopeTables, RotaryEmbedding};
use crate::tensor_names::Role;
use crate::weights::Weights;

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Norm,
    self_attn: Attention,
    /// Sandwich blocks: the norm of the attention output.
    attn_post_norm: Option<Norm>,
    ffn_norm: Norm,
    mlp: Mlp,
    /// Sandwich blocks: the norm of the MLP output.
    ffn_post_norm: Option<Norm>,
    shape: BlockShape,
    /// Index of the layer's RoPE in [`CausalLm::ropes`].
    rope: usize,
}

impl Block {
    /// `vb`: the block's weights.
    fn load(vb: &Weights, cfg: &DecoderConfig, layer: &LayerKind) -> Result<Self> {
        let norm = |role| Norm::load(vb, role, cfg.hidden_size, cfg.norm, cfg.norm_eps);
        let sandwich = cfg.block == BlockShape::Sandwich;
        Ok(Self {
            attn_norm: norm(Role::AttnNorm)?,
            self_attn: Attention::load(vb, cfg, layer)?,
            attn_post_norm: sandwich.then(|| norm(Role::AttnPostNorm)).transpose()?,
            ffn_norm: norm(Role::FfnNorm)?,
            mlp: Mlp::load(
                vb,
                cfg.mlp,
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.fused_gate_up,
                cfg.mlp_bias,
            )?,
            ffn_post_norm: sandwich.then(|| norm(Role::FfnPostNorm)).transpose()?,
            shape: cfg.block,
            rope: layer.rope,
        })
    }

    /// x: (B, T, hidden) -> (B, T, hidden); `cache`: see [`Attention::forward`].
    fn forward(
        &self,
        x: &Tensor,
        rope: Option<&RopeTables>,
        cache: Option<&mut LayerKv>,
    ) -> Result<Tensor> {
        let post = |n: &Option<Norm>, h: Tensor| match n {
            Some(n) => n.forward(&h),
            None => Ok(h),
        };
        let attn = self
            .self_attn
            .forward(&self.attn_norm.forward(x)?, rope, cache)?;
        if self.shape == BlockShape::Parallel {
            let mlp = self.mlp.forward(&self.ffn_norm.forward(x)?)?;
            return Ok(((x + attn)? + mlp)?);
        }
        let x = (x + post(&self.attn_post_norm, attn)?)?;
        let h = self.mlp.forward(&self.ffn_norm.forward(&x)?)?;
        Ok((x + post(&self.ffn_post_norm, h)?)?)
    }

    /// llama.cpp's computation of the block (see `llama_cpp`): x (B·T·hidden) in place.
    /// `cache`: the keys and values of the `lc.past` positions before x (B = 1), extended with x's.
    fn forward_llama_cpp(
        &self,
        x: &mut [f32],
        b: usize,
        t: usize,
        lc: &LlamaCppRun,
        il: usize,
        cache: Option<&mut LayerKv>,
    ) -> Result<()> {
        use llama_cpp::dump;
        let a = &self.self_attn;
        let m = b * t;
        let (h, kv, d) = (a.num_heads, a.num_kv_heads, a.head_dim);
        let n1 = &self.attn_norm;
        let xn = llama_cpp::rms_norm_mul(x, &n1.weight_f32()?, n1.eps());
        dump(&format!("attn_norm-{il}"), &xn);
        let [mut q, mut k, v]: [Vec<f32>; 3] = match &a.qkv {
            Qkv::Separate { q, k, v } => Linear::forward_f32_each(&[q, k, v], &xn, m)?
                .try_into()
                .expect("three projections"),
            Qkv::Fused(f) => split_columns(&f.forward_f32(&xn, m)?, m, &[h * d, kv * d, kv * d])
                .try_into()
                .expect("three projections"),
            Qkv::FusedPerHead(f) => {
                // per head q, k, v: split every head's 3·D values, then join the heads
                let parts = split_columns(&f.forward_f32(&xn, m)?, m, &vec![d; 3 * h]);
                let join = |which: usize| -> Vec<f32> {
                    let mut out = Vec::with_capacity(m * h * d);
                    for row in 0..m {
                        for head in 0..h {
                            let p = &parts[3 * head + which];
                            out.extend_from_slice(&p[row * d..(row + 1) * d]);
                        }
                    }
                    out
                };
                [join(0), join(1), join(2)]
            }
        };
        dump(&format!("Qcur-{il}"), &q);
        dump(&format!("Kcur-{il}"), &k);
        dump(&format!("Vcur-{il}"), &v);
        if let Some(n) = &a.q_norm {
            q = llama_cpp::rms_norm_mul(&q, &n.weight_f32()?, n.eps());
        }
        if let Some(n) = &a.k_norm {
            k = llama_cpp::rms_norm_mul(&k, &n.weight_f32()?, n.eps());
        }
        let rope = &lc.ropes[self.rope];
        llama_cpp::rope_apply_at(&mut q, t, h, d, rope, lc.past);
        llama_cpp::rope_apply_at(&mut k, t, kv, d, rope, lc.past);
        dump(&format!("Qrope-{il}"), &q);
        dump(&format!("Krope-{il}"), &k);
        let mut scale = a.scale as f32;
        if lc.scale_q {
            // ggml_scale(Qcur, f_attention_scale), then a softmax scale of 1
            for q in &mut q {
                *q *= scale;
            }
            scale = 1.0;
        }
        let shape = llama_cpp::AttnShape {
            b,
            t,
            past: lc.past,
            heads: h,
            kv_heads: kv,
            d,
            scale,
            softcap: a.softcap.map(|c| c as f32),
            sliding_window: a.sliding_window,
        };
        let att = match cache {
            Some(c) => {
                c.k_rows.extend_from_slice(&k);
                c.v_rows.extend_from_slice(&v);
                llama_cpp::attention(&q, &c.k_rows, &c.v_rows, &shape)
            }
            None => llama_cpp::attention(&q, &k, &v, &shape),
        };
        llama_cpp::dump_attention(il, b, h, t);
        dump(&format!("kqv_out-{il}"), &att);
        let mut o = a.o_proj.forward_f32(&att, m)?;
        dump(&format!("attn_out-{il}"), &o);
        if let Some(n) = &self.attn_post_norm {
            o = llama_cpp::rms_norm_mul(&o, &n.weight_f32()?, n.eps());
            dump(&format!("attn_post_norm-{il}"), &o);
        }
        for (x, o) in x.iter_mut().zip(&o) {
            *x += *o;
        }
        let n2 = &self.ffn_norm;
        dump(&format!("ffn_inp-{il}"), x);
        let xn = llama_cpp::rms_norm_mul(x, &n2.weight_f32()?, n2.eps());
        dump(&format!("ffn_norm-{il}"), &xn);
        let i = self.mlp.intermediate;
        let [gate, up]: [Vec<f32>; 2] = match &self.mlp.gate {
            Some(g) => Linear::forward_f32_each(&[g, &self.mlp.up], &xn, m)?
                .try_into()
                .expect("two projections"),
            None => split_columns(&self.mlp.up.forward_f32(&xn, m)?, m, &[i, i])
                .try_into()
                .expect("two projections"),
        };
        let act = match self.mlp.kind {
            MlpKind::GeGluTanh => llama_cpp::geglu(&gate, &up),
            _ => llama_cpp::swiglu(&gate, &up),
        };
        dump(&format!("ffn_gate-{il}"), &gate);
        dump(&format!("ffn_up-{il}"), &up);
        dump(&format!("ffn_swiglu-{il}"), &act);
        let mut down = self.mlp.down.forward_f32(&act, m)?;
        dump(&format!("ffn_out-{il}"), &down);
        if let Some(n) = &self.ffn_post_norm {
            down = llama_cpp::rms_norm_mul(&down, &n.weight_f32()?, n.eps());
            dump(&format!("ffn_post_norm-{il}"), &down);
        }
        for (x, o) in x.iter_mut().zip(&down) {
            *x += *o;
        }
        dump(&format!("l_out-{il}"), x);
        Ok(())
    }
}

/// Rows of `widths.iter().sum()` values -> one matrix of rows per width (a fused projection's
/// output split into its parts).
fn split_columns(y: &[f32], m: usize, widths: &[usize]) -> Vec<Vec<f32>> {
    let total: usize = widths.iter().sum();
    let mut out: Vec<Vec<f32>> = widths.iter().map(|w| Vec::with_capacity(m * w)).collect();
    for row in y.chunks_exact(total) {
        let mut at = 0;
        for (o, &w) in out.iter_mut().zip(widths) {
            o.extend_from_slice(&row[at..at + w]);
            at += w;
        }
    }
    out
}

/// What llama.cpp's ops need for one forward pass.
struct LlamaCppRun {
    /// One per entry of [`DecoderConfig::ropes`], for positions `0..past + T`.
    ropes: Vec<llama_cpp::Rope>,
    scale_q: bool,
    /// Positions before this pass's tokens (held by a KV cache); 0 for a windowed forward.
    past: usize,
}

/// The keys and values of every layer for the tokens a [`Session`] has seen, so that the next
/// token costs one position's forward pass instead of the whole window's.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// Positions held.
    len: usize,
    /// RoPE tables are made for at least this many positions: LongRoPE picks its frequencies by
    /// the sequence length, so a session that grows to a window of this length uses the
    /// frequencies the windowed forward over that window uses, from its first token on.
    rope_len: usize,
}

/// Incremental decoding with a KV cache: feed tokens one at a time (or several), get the logits
/// of the next token. Position 0 is the first token fed after [`Session::reset`], so the
/// per-token values equal those of [`CausalLm::forward_hidden`] over the same tokens (to float
/// rounding: the projections multiply one row instead of T; see the models tests).
///
/// Both paths of the model are incremental: candle's (`nn::attention`) and llama.cpp's order of
/// operations for quantized GGUF (`llama_cpp::attention` with `past`).
#[derive(Debug, Clone)]
pub struct Session<'m> {
    model: &'m CausalLm,
    cache: KvCache,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m CausalLm) -> Self {
        Self::with_window(model, 0)
    }

    /// A session whose sequences grow to `window` tokens: LongRoPE models (whose frequencies
    /// depend on the sequence length) then compute every position as the windowed forward over
    /// `window` tokens does. Other models are unaffected.
    pub fn with_window(model: &'m CausalLm, window: usize) -> Self {
        Self {
            model,
            cache: KvCache {
                rope_len: window,
                ..KvCache::default()
            },
        }
    }

    pub fn model(&self) -> &'m CausalLm {
        self.model
    }

    /// Forgets every token: the next one is at position 0.
    pub fn reset(&mut self) {
        self.cache = KvCache {
            rope_len: self.cache.rope_len,
            ..KvCache::default()
        };
    }

    /// Tokens held (the position of the next one).
    pub fn len(&self) -> usize {
        self.cache.len
    }

    pub fn is_empty(&self) -> bool {
        self.cache.len == 0
    }

    /// Feeds `tokens` (one forward pass over them, attending to the cache) and returns the f32
    /// logits of each of their positions: (tokens.len(), vocab). After an error the cache is in
    /// an unknown state: [`Self::reset`] before feeding more.
    pub fn extend_all(&mut self, tokens: &[u32]) -> Result<Tensor> {
        if tokens.is_empty() {
            return Err(ModelError::Input("no tokens to feed".into()));
        }
        let ids = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        let hidden = self.model.forward_cached(&ids, &mut self.cache)?;
        self.model.logits(&hidden.squeeze(0)?)
    }

    /// Feeds `tokens` and returns the logits of the next token (after the last of them).
    pub fn extend(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let all = self.extend_all(tokens)?;
        Ok(all.get(tokens.len() - 1)?.to_vec1()?)
    }

    /// Feeds one token and returns the logits of the next.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        self.extend(&[token])
    }
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
    /// Learned absolute positions: (max_position_embeddings, hidden).
    embed_positions: Option<Tensor>,
    layers: Vec<Block>,
    norm: Norm,
    lm_head: Linear,
    /// One per entry of [`DecoderConfig::ropes`].
    ropes: Vec<RotaryEmbedding>,
    cfg: DecoderConfig,
    device: Device,
    dtype: DType,
    /// Quantized GGUF on the CPU with ggml's kernels: run every op like llama.cpp does.
    llama_cpp: bool,
    freq_factors: Option<Vec<f32>>,
}

impl CausalLm {
    /// `vb` serves the checkpoint's tensors by role; `freq_factors`: llama.cpp's `rope_freqs`.
    pub fn load(vb: &Weights, cfg: &DecoderConfig, freq_factors: Option<&[f32]>) -> Result<Self> {
        let (vocab, hidden) = (cfg.vocab_size, cfg.hidden_size);
        let layers = cfg
            .layers
            .iter()
            .enumerate()
            .map(|(i, kind)| Block::load(&vb.layer(i), cfg, kind))
            .collect::<Result<Vec<_>>>()?;
        let norm = Norm::load(vb, Role::OutputNorm, hidden, cfg.norm, cfg.norm_eps)?;
        // Tied when the config says so, or when there is no separate head.
        let tied = cfg.tie_word_embeddings || !vb.contains(Role::Output, "weight");
        let (embed_tokens, lm_head) = if vb.is_dense(Role::TokenEmbd) {
            let e = vb.get(&[vocab, hidden], Role::TokenEmbd, "weight")?;
            let lm_head = if tied {
                // the embedding tensor itself (shared storage), not a second copy of it
                Linear::from_qmatmul(QMatMul::Tensor(e.clone()))?
            } else {
                Linear::load(vb, Role::Output, hidden, vocab, false)?
            };
            (Embedding::Dense(e), lm_head)
        } else {
            // Quantized GGUF: a tied head stays the quantized `token_embd`, like llama.cpp.
            let q = Linear::from_qmatmul(vb.matmul((vocab, hidden), Role::TokenEmbd)?)?;
            let embed_tokens = match q.ggml() {
                Some(g) => Embedding::Packed(g),
                None => Embedding::Dense(vb.get(&[vocab, hidden], Role::TokenEmbd, "weight")?),
            };
            let lm_head = if tied {
                q
            } else {
                Linear::load(vb, Role::Output, hidden, vocab, false)?
            };
            (embed_tokens, lm_head)
        };
        let llama_cpp = cfg.llama_cpp.is_some()
            && vb.device().is_cpu()
            && vb.dtype() == DType::F32
            && cfg
                .ropes
                .iter()
                .all(|r| matches!(r.scaling, RopeScaling::None | RopeScaling::Linear { .. }))
            && cfg.head_dim % 16 == 0
            && cfg.norm == NormKind::Rms
            && matches!(cfg.mlp, MlpKind::SwiGlu | MlpKind::GeGluTanh)
            && cfg.block != BlockShape::Parallel
            && !cfg.learned_positions
            && layers
                .first()
                .is_some_and(|l| l.self_attn.first_projection().is_ggml())
            // On by default (reproduces llama.cpp bit for bit); `SURPRISAL_LLAMA_CPP_OPS=0` opts out.
            && !std::env::var("SURPRISAL_LLAMA_CPP_OPS").is_ok_and(|v| v == "0");
        let embed_positions = cfg
            .learned_positions
            .then(|| {
                vb.get(
                    &[cfg.max_position_embeddings, hidden],
                    Role::PosEmbd,
                    "weight",
                )
            })
            .transpose()?;
        Ok(Self {
            llama_cpp,
            freq_factors: freq_factors.map(<[f32]>::to_vec),
            embed_tokens,
            embed_positions,
            layers,
            norm,
            lm_head,
            ropes: cfg
                .ropes
                .iter()
                .map(|r| RotaryEmbedding::new(r, freq_factors))
                .collect(),
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
        self.forward_impl(ids, lengths, None)
    }

    /// ids (1, T) after the positions `cache` holds -> (1, T, hidden); extends the cache.
    fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let t = ids.dim(1)?;
        self.forward_impl(ids, &[t], Some(cache))
    }

    fn forward_impl(
        &self,
        ids: &Tensor,
        lengths: &[usize],
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.len);
        let rope_len = cache.as_ref().map_or(0, |c| c.rope_len);
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
        if past + t > self.cfg.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "sequence length {} exceeds the model's context length {}",
                past + t,
                self.cfg.max_position_embeddings
            )));
        }
        if let Some(c) = cache.as_deref_mut() {
            if b != 1 {
                return Err(ModelError::Input(format!(
                    "a KV cache holds one sequence, found a batch of {b}"
                )));
            }
            c.layers.resize_with(self.layers.len(), LayerKv::default);
            c.len += t;
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
            return self.forward_llama_cpp(x, b, t, past, cache);
        }
        if let Some(s) = self.cfg.embed_scale {
            // transformers multiplies by the scale cast to the activation dtype
            x = x.broadcast_mul(&Tensor::new(s, &self.device)?.to_dtype(self.dtype)?)?;
        }
        if let Some(p) = &self.embed_positions {
            // positions 0..T in every row (right padding: real tokens start at 0), after a
            // cache's positions
            x = x.broadcast_add(&p.narrow(0, past, t)?)?;
        }
        // Tables for positions 0..past + T (LongRoPE picks its frequencies by that length, as
        // transformers does by the current sequence length, or by the session's window), then
        // only the new positions' rows.
        let ropes = self
            .ropes
            .iter()
            .map(|r| {
                let all = r.tables((past + t).max(rope_len), self.dtype, &self.device)?;
                if past == 0 && rope_len <= t {
                    Ok(all)
                } else {
                    all.rows(past, t)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        for (il, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| &mut c.layers[il]);
            x = layer.forward(&x, ropes.get(layer.rope), c)?;
        }
        self.norm.forward(&x)
    }

    /// [`Self::forward_hidden`] with llama.cpp's operations, from the embedded tokens x.
    fn forward_llama_cpp(
        &self,
        x: Tensor,
        b: usize,
        t: usize,
        past: usize,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let lc = LlamaCppRun {
            past,
            ropes: self
                .cfg
                .ropes
                .iter()
                .map(|r| llama_cpp::Rope {
                    cache: llama_cpp::rope_cache(
                        past + t,
                        r.dim,
                        r.theta as f32,
                        self.freq_factors.as_deref(),
                        match r.scaling {
                            RopeScaling::Linear { factor } => 1.0 / factor as f32,
                            _ => 1.0,
                        },
                    ),
                    n_dims: r.dim,
                    interleaved: matches!(r.layout, RopeLayout::Interleaved),
                })
                .collect(),
            scale_q: self.cfg.llama_cpp.is_some_and(|g| g.scale_q),
        };
        let mut xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        if let Some(s) = self.cfg.embed_scale {
            // ggml_scale(inpL, sqrtf(n_embd))
            let s = s as f32;
            for x in &mut xs {
                *x *= s;
            }
        }
        for (il, layer) in self.layers.iter().enumerate() {
            let c = cache.as_deref_mut().map(|c| &mut c.layers[il]);
            layer.forward_llama_cpp(&mut xs, b, t, &lc, il, c)?;
        }
        let n = &self.norm;
        let xs = llama_cpp::rms_norm_mul(&xs, &n.weight_f32()?, n.eps());
        llama_cpp::dump("result_norm", &xs);
        Ok(Tensor::from_vec(
            xs,
            (b, t, self.cfg.hidden_size),
            &self.device,
        )?)
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
        let logits = self.lm_head.forward(&x)?.to_dtype(DType::F32)?;
        Ok(match self.cfg.final_softcap {
            // llama.cpp: ggml_scale(1/cap), tanh, ggml_scale(cap)
            Some(cap) if self.llama_cpp => ((logits * (1.0 / cap as f32) as f64)?.tanh()? * cap)?,
            // transformers: logits / cap, tanh, · cap
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }
}
