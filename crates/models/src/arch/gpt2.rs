//! GPT-2 (`GPT2LMHeadModel`): pre-norm blocks of LayerNorm (with bias), attention with q, k, v
//! fused in `c_attn`, and an ungated GELU MLP (`gelu_new`, the tanh approximation); learned
//! absolute positions (`wpe`) instead of RoPE, biases everywhere, the head tied to `wte`. Its
//! `Conv1D` layers store weights `(in, out)`. A sequence longer than `n_positions` has no
//! position embedding: the decoder refuses it, and the runner refuses a window longer than it.

use super::llama::llama_shaped;
use super::{rope_half, Family, GgufCommon, GgufKeys, HfCommon, Role, TensorNames};
use crate::config::{DecoderConfig, Keys, MlpKind, NormKind, RopeScaling};
use crate::error::Result;

const TENSORS: TensorNames = TensorNames {
    global: &[
        (Role::TokenEmbd, "transformer.wte", "token_embd"),
        (Role::PosEmbd, "transformer.wpe", "position_embd"),
        (Role::OutputNorm, "transformer.ln_f", "output_norm"),
        (Role::Output, "lm_head", "output"),
    ],
    hf_block_prefix: "transformer.h.",
    block: &[
        (Role::AttnNorm, "ln_1", "attn_norm"),
        (Role::AttnQkv, "attn.c_attn", "attn_qkv"),
        (Role::AttnOut, "attn.c_proj", "attn_output"),
        (Role::FfnNorm, "ln_2", "ffn_norm"),
        (Role::FfnUp, "mlp.c_fc", "ffn_up"),
        (Role::FfnDown, "mlp.c_proj", "ffn_down"),
    ],
};

pub(super) const FAMILY: Family = Family {
    hf_classes: &["GPT2LMHeadModel"],
    gguf_archs: &["gpt2"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(from_gguf),
};

/// transformers' `ACT2FN` names of the ungated GELU MLPs: is it the tanh approximation?
pub(super) fn gelu_tanh(c: &Keys, key: &str, default: &str) -> Result<bool> {
    match c.opt_str(key)?.unwrap_or(default) {
        "gelu" => Ok(false),
        // the same tanh formula written three ways
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(true),
        other => Err(c.invalid(
            key,
            &format!(
                "`{other}` is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, gelu_fast)"
            ),
        )),
    }
}

fn from_hf(c: &Keys, architecture: &str) -> Result<DecoderConfig> {
    let hidden_size = c.usize("n_embd")?;
    let num_heads = c.usize("n_head")?;
    if num_heads == 0 || hidden_size % num_heads != 0 {
        return Err(c.invalid(
            "n_head",
            &format!("{num_heads} heads do not divide n_embd = {hidden_size}"),
        ));
    }
    if c.opt_bool("scale_attn_by_inverse_layer_idx")?
        .unwrap_or(false)
    {
        return Err(c.invalid(
            "scale_attn_by_inverse_layer_idx",
            "per-layer attention scales are not supported",
        ));
    }
    let head_dim = hidden_size / num_heads;
    let h = HfCommon {
        vocab_size: c.usize("vocab_size")?,
        hidden_size,
        // `n_inner: null` (what GPT-2 checkpoints ship) means 4 · n_embd
        intermediate_size: c.opt_usize("n_inner")?.unwrap_or(4 * hidden_size),
        num_layers: c.usize("n_layer")?,
        num_heads,
        num_kv_heads: num_heads,
        head_dim,
        head_dim_given: false,
        max_position_embeddings: c.usize("n_positions")?,
        tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(true),
        bos_token_id: c.opt_token_id("bos_token_id")?,
        eos_token_id: c.opt_token_id("eos_token_id")?,
    };
    let scale = if c.opt_bool("scale_attn_weights")?.unwrap_or(true) {
        1.0 / (head_dim as f64).sqrt()
    } else {
        1.0
    };
    let tanh = gelu_tanh(c, "activation_function", "gelu_new")?;
    // `reorder_and_upcast_attn` changes only where f16 scores are upcast; ours are f32 already.
    Ok(DecoderConfig {
        attn_scale: scale,
        hf_conv1d: true,
        ..gpt2_shaped(architecture, &h, c.f64("layer_norm_epsilon")?, tanh)
    })
}

fn gpt2_shaped(architecture: &str, h: &HfCommon, norm_eps: f64, tanh: bool) -> DecoderConfig {
    DecoderConfig {
        norm: NormKind::LayerNorm,
        mlp: MlpKind::Gelu { tanh },
        mlp_bias: true,
        fused_qkv: true,
        qkv_bias: true,
        o_bias: true,
        ropes: Vec::new(),
        learned_positions: true,
        tensors: &TENSORS,
        ..llama_shaped(
            architecture,
            h,
            norm_eps,
            rope_half(10_000.0, h.head_dim, RopeScaling::None),
            None,
        )
    }
}

/// llama.cpp's `gpt2`: the converter transposes the `Conv1D` weights to `(out, in)` and writes
/// no `output` tensor (tied); `ggml_gelu` is the tanh approximation, as `gelu_new`.
fn from_gguf(g: &GgufKeys) -> Result<DecoderConfig> {
    let h = GgufCommon::read(g)?.hf();
    let eps = g.f64("attention.layer_norm_epsilon")?;
    Ok(gpt2_shaped("GPT2LMHeadModel", &h, eps, true))
}
