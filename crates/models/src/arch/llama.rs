//! Llama and Mistral (`LlamaForCausalLM`, `MistralForCausalLM`; GGUF `llama`): pre-norm blocks of
//! RMSNorm, attention and a SwiGLU MLP, one RoPE. Mistral adds a sliding window on every layer.
//! llama.cpp's converter permutes the Q/K rows of `llama` GGUFs for its interleaved RoPE layout.

use super::{
    rope_half, uniform_layers, Family, GgufCommon, GgufKeys, HfCommon, HfRope, Role, TensorNames,
};
use crate::config::{
    BlockShape, DecoderConfig, Keys, LlamaCppGraph, MlpKind, NormKind, RopeConfig, RopeLayout,
};
use crate::error::Result;

/// Tensor names shared by the Llama-shaped families (Llama, Mistral, Qwen2, Qwen3).
pub(super) const TENSORS: TensorNames = TensorNames {
    global: &[
        (Role::TokenEmbd, "model.embed_tokens", "token_embd"),
        (Role::OutputNorm, "model.norm", "output_norm"),
        (Role::Output, "lm_head", "output"),
        (Role::RopeFreqs, "", "rope_freqs"),
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
        (Role::FfnNorm, "post_attention_layernorm", "ffn_norm"),
        (Role::FfnGate, "mlp.gate_proj", "ffn_gate"),
        (Role::FfnUp, "mlp.up_proj", "ffn_up"),
        (Role::FfnDown, "mlp.down_proj", "ffn_down"),
    ],
};

pub(super) const FAMILY: Family = Family {
    hf_classes: &["LlamaForCausalLM", "MistralForCausalLM"],
    gguf_archs: &["llama"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(from_gguf),
};

/// The Llama block every Llama-shaped family starts from; the caller sets what differs.
pub(super) fn llama_shaped(
    architecture: &str,
    h: &HfCommon,
    norm_eps: f64,
    rope: RopeConfig,
    sliding_window: Option<usize>,
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
        norm: NormKind::Rms,
        norm_eps,
        block: BlockShape::PreNorm,
        mlp: MlpKind::SwiGlu,
        fused_gate_up: false,
        mlp_bias: false,
        fused_qkv: false,
        qkv_per_head: false,
        learned_positions: false,
        hf_conv1d: false,
        qkv_bias: false,
        o_bias: false,
        qk_norm: false,
        attn_scale: 1.0 / (h.head_dim as f64).sqrt(),
        attn_softcap: None,
        final_softcap: None,
        embed_scale: None,
        ropes: vec![rope],
        layers: uniform_layers(h.num_layers, sliding_window),
        tie_word_embeddings: h.tie_word_embeddings,
        bos_token_id: h.bos_token_id,
        eos_token_id: h.eos_token_id,
        tensors: &TENSORS,
        llama_cpp: None,
    }
}

fn from_hf(c: &Keys, architecture: &str) -> Result<DecoderConfig> {
    let h = HfCommon::read(c, false)?;
    let rope = HfRope::read(c, None)?;
    let rope = rope_half(rope.theta.unwrap_or(10_000.0), h.head_dim, rope.scaling(c)?);
    let sliding_window = if architecture == "MistralForCausalLM" {
        c.opt_usize("sliding_window")?
    } else {
        None
    };
    let attention_bias = c.opt_bool("attention_bias")?.unwrap_or(false);
    Ok(DecoderConfig {
        qkv_bias: attention_bias,
        o_bias: attention_bias,
        mlp_bias: c.opt_bool("mlp_bias")?.unwrap_or(false),
        ..llama_shaped(
            architecture,
            &h,
            c.f64("rms_norm_eps")?,
            rope,
            sliding_window,
        )
    })
}

/// GGUF hyperparameters of the Llama-shaped families; `layout`: how Q/K rows are stored.
pub(super) fn llama_shaped_gguf(
    g: &GgufKeys,
    architecture: &str,
    layout: RopeLayout,
) -> Result<DecoderConfig> {
    let c = GgufCommon::read(g)?;
    let h = c.hf();
    let rope = RopeConfig {
        theta: c.rope_theta,
        dim: c.rope_dim,
        layout,
        scaling: GgufCommon::rope_scaling(g)?,
    };
    Ok(DecoderConfig {
        qkv_bias: g.has_tensor("blk.0.attn_q.bias"),
        o_bias: g.has_tensor("blk.0.attn_output.bias"),
        llama_cpp: Some(LlamaCppGraph { scale_q: false }),
        ..llama_shaped(
            architecture,
            &h,
            g.f64("attention.layer_norm_rms_epsilon")?,
            rope,
            None,
        )
    })
}

fn from_gguf(g: &GgufKeys) -> Result<DecoderConfig> {
    llama_shaped_gguf(g, "LlamaForCausalLM", RopeLayout::Interleaved)
}
