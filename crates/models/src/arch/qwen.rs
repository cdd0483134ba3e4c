//! Qwen2 and Qwen3 (`Qwen2ForCausalLM`, `Qwen3ForCausalLM`; GGUF `qwen2`, `qwen3`): the Llama
//! block with biases on q/k/v (Qwen2), or with per-head RMSNorm of q and k before RoPE and an
//! explicit `head_dim` (Qwen3). Their sliding-window option is refused.

use super::llama::{llama_shaped, llama_shaped_gguf, TENSORS};
use super::{rope_half, Family, GgufKeys, HfCommon, HfRope};
use crate::config::{DecoderConfig, Keys, RopeLayout};
use crate::error::Result;

pub(super) const QWEN2: Family = Family {
    hf_classes: &["Qwen2ForCausalLM"],
    gguf_archs: &["qwen2"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(|g: &GgufKeys| llama_shaped_gguf(g, "Qwen2ForCausalLM", RopeLayout::Half)),
};

pub(super) const QWEN3: Family = Family {
    hf_classes: &["Qwen3ForCausalLM"],
    gguf_archs: &["qwen3"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(|g: &GgufKeys| {
        Ok(DecoderConfig {
            qk_norm: true,
            ..llama_shaped_gguf(g, "Qwen3ForCausalLM", RopeLayout::Half)?
        })
    }),
};

fn from_hf(c: &Keys, architecture: &str) -> Result<DecoderConfig> {
    let qwen3 = architecture == "Qwen3ForCausalLM";
    let h = HfCommon::read(c, false)?;
    if qwen3 && !h.head_dim_given {
        return Err(c.missing("head_dim"));
    }
    if c.opt_bool("use_sliding_window")?.unwrap_or(false) {
        return Err(c.invalid(
            "use_sliding_window",
            "sliding-window attention for Qwen models is not supported",
        ));
    }
    let rope = HfRope::read(c, None)?;
    let rope = rope_half(rope.theta.unwrap_or(10_000.0), h.head_dim, rope.scaling(c)?);
    let attention_bias = c.opt_bool("attention_bias")?.unwrap_or(false);
    Ok(DecoderConfig {
        qkv_bias: !qwen3 || attention_bias,
        qk_norm: qwen3,
        mlp_bias: c.opt_bool("mlp_bias")?.unwrap_or(false),
        ..llama_shaped(architecture, &h, c.f64("rms_norm_eps")?, rope, None)
    })
}
