//! Gemma-2 (`Gemma2ForCausalLM`; GGUF `gemma2`): Gemma-3's block without q/k norms, with
//! softcapping of the attention scores (`attn_logit_softcapping`) and of the logits
//! (`final_logit_softcapping`), one RoPE, and a sliding window on every other layer (the even
//! ones).

use super::gemma3::{gemma_gguf, gemma_hf, hf_layer_types, layers_of, softcap_or, TENSORS};
use super::{rope_half, Family, GgufKeys, HfRope};
use crate::config::{DecoderConfig, Keys, RopeConfig, RopeLayout, RopeScaling};
use crate::error::Result;

pub(super) const FAMILY: Family = Family {
    hf_classes: &["Gemma2ForCausalLM"],
    gguf_archs: &["gemma2"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(from_gguf),
};

fn from_hf(c: &Keys, architecture: &str) -> Result<DecoderConfig> {
    let (h, cfg) = gemma_hf(c, architecture)?;
    let rope = HfRope::read(c, None)?;
    let rope = rope_half(rope.theta.unwrap_or(10_000.0), h.head_dim, rope.scaling(c)?);
    let sliding = hf_layer_types(c, h.num_layers, 2)?;
    Ok(DecoderConfig {
        attn_softcap: softcap_or(c, "attn_logit_softcapping", 50.0)?,
        final_softcap: softcap_or(c, "final_logit_softcapping", 30.0)?,
        ropes: vec![rope],
        layers: layers_of(&sliding, c.usize("sliding_window")?, 0),
        ..cfg
    })
}

fn from_gguf(g: &GgufKeys) -> Result<DecoderConfig> {
    let (c, cfg) = gemma_gguf(g, "Gemma2ForCausalLM")?;
    let rope = RopeConfig {
        theta: c.rope_theta,
        dim: c.rope_dim,
        layout: RopeLayout::Half,
        scaling: RopeScaling::None,
    };
    // llama.cpp: `set_swa_pattern(2)`, the even layers slide
    let window = g.usize("attention.sliding_window")?;
    let sliding: Vec<bool> = (0..c.num_layers).map(|i| i % 2 == 0).collect();
    Ok(DecoderConfig {
        attn_softcap: Some(g.opt_f64("attn_logit_softcapping")?.unwrap_or(50.0)),
        final_softcap: Some(g.opt_f64("final_logit_softcapping")?.unwrap_or(30.0)),
        ropes: vec![rope],
        layers: layers_of(&sliding, window, 0),
        ..cfg
    })
}
