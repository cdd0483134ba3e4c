//! Gemma-3 text (`Gemma3ForCausalLM` / `gemma3_text`; GGUF `gemma3`): four RMSNorms per block
//! with `(1 + w)` weights (llama.cpp's converter stores `1 + w`, so GGUFs use plain RMSNorm),
//! per-head q/k norms, a GELU-tanh GeGLU MLP, embeddings multiplied by √hidden, scores scaled by
//! `query_pre_attn_scalar^-½`, and interleaved local (sliding-window, own RoPE base) and global
//! layers. The shared pieces of Gemma-2 live here too.

use serde_json::Value;

use super::{rope_half, Family, GgufCommon, GgufKeys, HfCommon, HfRope, Role, TensorNames};
use crate::config::{
    BlockShape, DecoderConfig, Keys, LayerKind, LlamaCppGraph, MlpKind, NormKind, RopeConfig,
    RopeScaling,
};
use crate::error::Result;

/// Tensor names of Gemma-2 and Gemma-3 (Gemma-2 has no q/k norms).
pub(super) const TENSORS: TensorNames = TensorNames {
    global: &[
        (Role::TokenEmbd, "model.embed_tokens", "token_embd"),
        (Role::OutputNorm, "model.norm", "output_norm"),
        (Role::Output, "lm_head", "output"),
    ],
    hf_block_prefix: "model.layers.",
    block: &[
        (Role::AttnNorm, "input_layernorm", "attn_norm"),
        (Role::AttnQ, "self_attn.q_proj", "attn_q"),
        (Role::AttnK, "self_attn.k_proj", "attn_k"),
        (Role::AttnV, "self_attn.v_proj", "attn_v"),
        (Role::AttnOut, "self_attn.o_proj", "attn_output"),
        (Role::AttnQNorm, "self_attn.q_norm", "attn_q_norm"),
        (Role::AttnKNorm, "self_attn.k_norm", "attn_k_norm"),
        (
            Role::AttnPostNorm,
            "post_attention_layernorm",
            "post_attention_norm",
        ),
        (Role::FfnNorm, "pre_feedforward_layernorm", "ffn_norm"),
        (Role::FfnGate, "mlp.gate_proj", "ffn_gate"),
        (Role::FfnUp, "mlp.up_proj", "ffn_up"),
        (Role::FfnDown, "mlp.down_proj", "ffn_down"),
        (
            Role::FfnPostNorm,
            "post_feedforward_layernorm",
            "post_ffw_norm",
        ),
    ],
};

pub(super) const FAMILY: Family = Family {
    hf_classes: &["Gemma3ForCausalLM"],
    gguf_archs: &["gemma3"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(from_gguf),
};

/// What the Gemma families share; the caller sets q/k norms, softcaps, RoPEs and layers.
pub(super) fn gemma_shaped(
    architecture: &str,
    h: &HfCommon,
    norm: NormKind,
    norm_eps: f64,
    query_pre_attn_scalar: f64,
) -> DecoderConfig {
    DecoderConfig {
        architecture: architecture.to_string(),
        vocab_size: h.vocab_size,
        hidden_size: h.hidden_size,
        intermediate_size: h.intermediate_size,
        num_layers: h.num_layers,
        num_heads: h.num_heads,
        num_kv_heads: h.num_kv_heads,
        head_dim: h.head_dim,
        max_position_embeddings: h.max_position_embeddings,
        norm,
        norm_eps,
        block: BlockShape::Sandwich,
        mlp: MlpKind::GeGluTanh,
        fused_gate_up: false,
        mlp_bias: false,
        fused_qkv: false,
        qkv_per_head: false,
        learned_positions: false,
        hf_conv1d: false,
        qkv_bias: false,
        o_bias: false,
        qk_norm: false,
        attn_scale: 1.0 / query_pre_attn_scalar.sqrt(),
        attn_softcap: None,
        final_softcap: None,
        embed_scale: Some((h.hidden_size as f64).sqrt()),
        ropes: Vec::new(),
        layers: Vec::new(),
        tie_word_embeddings: h.tie_word_embeddings,
        bos_token_id: h.bos_token_id,
        eos_token_id: h.eos_token_id,
        tensors: &TENSORS,
        llama_cpp: None,
    }
}

/// The keys every Gemma `config.json` must have, and the common part of its config.
pub(super) fn gemma_hf(c: &Keys, architecture: &str) -> Result<(HfCommon, DecoderConfig)> {
    let h = HfCommon::read(c, true)?;
    if !h.head_dim_given {
        return Err(c.missing("head_dim"));
    }
    match c.opt_str("hidden_activation")? {
        None | Some("gelu_pytorch_tanh") => {}
        Some(other) => {
            return Err(c.invalid(
                "hidden_activation",
                &format!("`{other}` is not supported (supported: gelu_pytorch_tanh)"),
            ))
        }
    }
    if c.opt_bool("use_bidirectional_attention")?.unwrap_or(false) {
        return Err(c.invalid(
            "use_bidirectional_attention",
            "bidirectional attention is not a causal language model",
        ));
    }
    let attention_bias = c.opt_bool("attention_bias")?.unwrap_or(false);
    let cfg = DecoderConfig {
        qkv_bias: attention_bias,
        o_bias: attention_bias,
        ..gemma_shaped(
            architecture,
            &h,
            NormKind::RmsOnePlus,
            c.f64("rms_norm_eps")?,
            c.f64("query_pre_attn_scalar")?,
        )
    };
    Ok((h, cfg))
}

/// `layer_types` (`sliding_attention` / `full_attention`), or when absent the pattern transformers
/// derives: layer i is global when `(i + 1) % pattern == 0`. Returns `true` for sliding layers.
pub(super) fn hf_layer_types(c: &Keys, n: usize, default_pattern: usize) -> Result<Vec<bool>> {
    if let Some(types) = c.get("layer_types") {
        let types = types
            .as_array()
            .ok_or_else(|| c.invalid("layer_types", "expected a list of strings"))?;
        if types.len() != n {
            return Err(c.invalid(
                "layer_types",
                &format!("{} entries for {n} layers", types.len()),
            ));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(c.invalid(
                    "layer_types",
                    &format!("`{t}` is not sliding_attention or full_attention"),
                )),
            })
            .collect();
    }
    let pattern = c
        .opt_usize("sliding_window_pattern")?
        .or(c.opt_usize("_sliding_window_pattern")?)
        .unwrap_or(default_pattern)
        .max(1);
    Ok((0..n).map(|i| (i + 1) % pattern != 0).collect())
}

/// Layers from their kinds: sliding ones use RoPE 1 (when there is one) and the window.
pub(super) fn layers_of(sliding: &[bool], window: usize, local_rope: usize) -> Vec<LayerKind> {
    sliding
        .iter()
        .map(|&s| LayerKind {
            rope: if s { local_rope } else { 0 },
            sliding_window: s.then_some(window),
        })
        .collect()
}

fn from_hf(c: &Keys, architecture: &str) -> Result<DecoderConfig> {
    let (h, cfg) = gemma_hf(c, architecture)?;
    let global = HfRope::read(c, Some("full_attention"))?;
    let global = rope_half(
        global.theta.unwrap_or(1_000_000.0),
        h.head_dim,
        global.scaling(c)?,
    );
    let local = HfRope::read(c, Some("sliding_attention"))?;
    let local_theta = match c.opt_f64("rope_local_base_freq")? {
        Some(t) => t,
        None => local.theta.unwrap_or(10_000.0),
    };
    let local = rope_half(local_theta, h.head_dim, local.scaling(c)?);
    let sliding = hf_layer_types(c, h.num_layers, 6)?;
    Ok(DecoderConfig {
        qk_norm: true,
        final_softcap: softcap(c, "final_logit_softcapping")?,
        attn_softcap: softcap(c, "attn_logit_softcapping")?,
        ropes: vec![global, local],
        layers: layers_of(&sliding, c.usize("sliding_window")?, 1),
        ..cfg
    })
}

/// A softcapping value: null or absent means none.
fn softcap(c: &Keys, key: &str) -> Result<Option<f64>> {
    c.opt_f64(key)
}

/// A Gemma-2 softcapping value: absent means transformers' default, null means none.
pub(super) fn softcap_or(c: &Keys, key: &str, default: f64) -> Result<Option<f64>> {
    match c.json.get(key) {
        None => Ok(Some(default)),
        Some(Value::Null) => Ok(None),
        Some(_) => c.opt_f64(key),
    }
}

/// The GGUF hyperparameters of both Gemma families, as llama.cpp reads them: `sliding` says
/// which layers use the window (`gemma3.attention.sliding_window`).
pub(super) fn gemma_gguf(g: &GgufKeys, architecture: &str) -> Result<(GgufCommon, DecoderConfig)> {
    let c = GgufCommon::read(g)?;
    let h = c.hf();
    // llama.cpp: 1/√head_dim, except for the 27B models (by layer count), 1/√(hidden/heads)
    let big = matches!(
        (architecture, c.num_layers),
        ("Gemma2ForCausalLM", 46) | ("Gemma3ForCausalLM", 62)
    );
    let scalar = if big {
        (c.hidden_size / c.num_heads) as f64
    } else {
        c.head_dim as f64
    };
    let cfg = DecoderConfig {
        llama_cpp: Some(LlamaCppGraph { scale_q: true }),
        ..gemma_shaped(
            architecture,
            &h,
            NormKind::Rms,
            g.f64("attention.layer_norm_rms_epsilon")?,
            scalar,
        )
    };
    Ok((c, cfg))
}

/// Which layers slide, as llama.cpp's `load_swa_pattern` reads it: a per-layer array
/// `attention.sliding_window_pattern`, or that key as a period n (layer i slides unless
/// `i % n == n - 1`; 0: all slide), or `default_pattern`.
pub(super) fn gguf_sliding_layers(
    g: &GgufKeys,
    n: usize,
    default_pattern: usize,
) -> Result<Vec<bool>> {
    let key = "attention.sliding_window_pattern";
    if let Some(v) = g.meta.opt_bool_array(&g.key(key))? {
        if v.len() != n {
            return Err(g.err(key, format!("{} entries for {n} layers", v.len())));
        }
        return Ok(v);
    }
    let p = g.opt_usize(key)?.unwrap_or(default_pattern);
    Ok((0..n).map(|i| p == 0 || i % p < p - 1).collect())
}

fn from_gguf(g: &GgufKeys) -> Result<DecoderConfig> {
    let (c, cfg) = gemma_gguf(g, "Gemma3ForCausalLM")?;
    let global = RopeConfig {
        theta: c.rope_theta,
        dim: c.rope_dim,
        layout: crate::config::RopeLayout::Half,
        scaling: GgufCommon::rope_scaling(g)?,
    };
    // llama.cpp: local layers use base 10000 and no scaling
    let local = RopeConfig {
        theta: g.opt_f64("rope.freq_base_swa")?.unwrap_or(10_000.0),
        scaling: RopeScaling::None,
        ..global.clone()
    };
    // llama.cpp: without a window every layer is global; with one, the pattern decides (every
    // 6th layer global unless the file says otherwise)
    let window = g.opt_usize("attention.sliding_window")?.filter(|&w| w > 0);
    let sliding = match window {
        Some(_) => gguf_sliding_layers(g, c.num_layers, 6)?,
        None => vec![false; c.num_layers],
    };
    Ok(DecoderConfig {
        qk_norm: true,
        final_softcap: g.opt_f64("final_logit_softcapping")?.filter(|&x| x > 0.0),
        ropes: vec![global, local],
        layers: layers_of(&sliding, window.unwrap_or(0), 1),
        ..cfg
    })
}
