//! GPT-NeoX and Pythia (`GPTNeoXForCausalLM`): LayerNorm (with bias) blocks with a parallel
//! residual (`use_parallel_residual`, `x + attn(n1(x)) + mlp(n2(x))`; false: pre-norm), q, k and
//! v fused in `query_key_value` with rows grouped by head, partial rotary (`rotary_pct` of each
//! head, 25 % in Pythia), an ungated GELU MLP (exact `gelu`), biases everywhere, an untied
//! `embed_out` head.

use serde_json::Value;

use super::gpt2::gelu_tanh;
use super::llama::llama_shaped;
use super::{Family, GgufCommon, GgufKeys, HfCommon, HfRope, Role, TensorNames};
use crate::config::{BlockShape, DecoderConfig, Keys, MlpKind, NormKind, RopeConfig, RopeLayout};
use crate::error::Result;

const TENSORS: TensorNames = TensorNames {
    global: &[
        (Role::TokenEmbd, "gpt_neox.embed_in", "token_embd"),
        (Role::OutputNorm, "gpt_neox.final_layer_norm", "output_norm"),
        (Role::Output, "embed_out", "output"),
    ],
    hf_block_prefix: "gpt_neox.layers.",
    block: &[
        (Role::AttnNorm, "input_layernorm", "attn_norm"),
        (Role::AttnQkv, "attention.query_key_value", "attn_qkv"),
        (Role::AttnOut, "attention.dense", "attn_output"),
        (Role::FfnNorm, "post_attention_layernorm", "ffn_norm"),
        (Role::FfnUp, "mlp.dense_h_to_4h", "ffn_up"),
        (Role::FfnDown, "mlp.dense_4h_to_h", "ffn_down"),
    ],
};

pub(super) const FAMILY: Family = Family {
    hf_classes: &["GPTNeoXForCausalLM"],
    gguf_archs: &["gptneox"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(from_gguf),
};

fn from_hf(c: &Keys, architecture: &str) -> Result<DecoderConfig> {
    let h = HfCommon::read(c, false)?;
    if h.num_kv_heads != h.num_heads {
        return Err(c.invalid(
            "num_key_value_heads",
            "GPT-NeoX has one key/value head per query head",
        ));
    }
    // The Hub layout (`rotary_pct`, `rotary_emb_base`) or transformers >= 5's `rope_parameters`
    // (`partial_rotary_factor`, `rope_theta`); transformers' defaults 0.25 and 10000.
    let rope = HfRope::read(c, None)?;
    let param = |k: &str| {
        c.get("rope_parameters")
            .and_then(|p| p.get(k))
            .and_then(Value::as_f64)
    };
    let pct = match c.opt_f64("rotary_pct")? {
        Some(p) => p,
        None => param("partial_rotary_factor").unwrap_or(0.25),
    };
    // transformers: int(head_size * partial_rotary_factor)
    let dim = (h.head_dim as f64 * pct) as usize;
    if dim == 0 || dim > h.head_dim || dim % 2 != 0 {
        return Err(c.invalid(
            "rotary_pct",
            &format!(
                "{pct} of head size {} is not an even number of dimensions",
                h.head_dim
            ),
        ));
    }
    let theta = match c.opt_f64("rotary_emb_base")? {
        Some(t) => t,
        None => rope.theta.unwrap_or(10_000.0),
    };
    let rope = RopeConfig {
        theta,
        dim,
        layout: RopeLayout::Half,
        scaling: rope.scaling(c)?,
    };
    let parallel = c.opt_bool("use_parallel_residual")?.unwrap_or(true);
    Ok(DecoderConfig {
        qkv_per_head: true,
        ..neox_shaped(
            architecture,
            &h,
            c.f64("layer_norm_eps")?,
            rope,
            parallel,
            c.opt_bool("attention_bias")?.unwrap_or(true),
            gelu_tanh(c, "hidden_act", "gelu")?,
        )
    })
}

fn neox_shaped(
    architecture: &str,
    h: &HfCommon,
    norm_eps: f64,
    rope: RopeConfig,
    parallel: bool,
    bias: bool,
    tanh: bool,
) -> DecoderConfig {
    DecoderConfig {
        norm: NormKind::LayerNorm,
        block: if parallel {
            BlockShape::Parallel
        } else {
            BlockShape::PreNorm
        },
        mlp: MlpKind::Gelu { tanh },
        mlp_bias: true,
        fused_qkv: true,
        qkv_bias: bias,
        o_bias: bias,
        tensors: &TENSORS,
        ..llama_shaped(architecture, h, norm_eps, rope, None)
    }
}

/// llama.cpp's `gptneox`: the converter reorders `query_key_value` to all q, all k, all v rows,
/// writes no `rope.freq_base` (10000, Pythia's) and no activation: the exact GELU of the
/// Hugging Face model is kept here (llama.cpp's own graph runs `ggml_gelu`, the tanh form).
fn from_gguf(g: &GgufKeys) -> Result<DecoderConfig> {
    let c = GgufCommon::read(g)?;
    let rope = RopeConfig {
        theta: c.rope_theta,
        dim: c.rope_dim,
        layout: RopeLayout::Half,
        scaling: GgufCommon::rope_scaling(g)?,
    };
    let parallel = g
        .meta
        .opt_bool(&g.key("use_parallel_residual"))?
        .unwrap_or(true);
    Ok(neox_shaped(
        "GPTNeoXForCausalLM",
        &c.hf(),
        g.f64("attention.layer_norm_epsilon")?,
        rope,
        parallel,
        g.has_tensor("blk.0.attn_qkv.bias"),
        false,
    ))
}
