//! Phi-3 (`Phi3ForCausalLM`; GGUF `phi3`): the Llama block with q/k/v in one `qkv_proj` and gate
//! and up in one `gate_up_proj` (gate first), partial rotary (`partial_rotary_factor`, Phi-4-mini)
//! and LongRoPE (`rope_scaling.type` `longrope`, alias `su`); `sliding_window` on every layer.
//! llama.cpp stores the fused gate/up as `ffn_up` and LongRoPE's factors as tensors.

use serde_json::Value;

use super::llama::llama_shaped;
use super::{uniform_layers, Family, GgufCommon, GgufKeys, HfCommon, HfRope, Role, TensorNames};
use crate::config::{DecoderConfig, Keys, RopeConfig, RopeLayout, RopeScaling};
use crate::error::Result;

const TENSORS: TensorNames = TensorNames {
    global: &[
        (Role::TokenEmbd, "model.embed_tokens", "token_embd"),
        (Role::OutputNorm, "model.norm", "output_norm"),
        (Role::Output, "lm_head", "output"),
    ],
    hf_block_prefix: "model.layers.",
    block: &[
        (Role::AttnNorm, "input_layernorm", "attn_norm"),
        (Role::AttnQkv, "self_attn.qkv_proj", "attn_qkv"),
        (Role::AttnOut, "self_attn.o_proj", "attn_output"),
        (Role::FfnNorm, "post_attention_layernorm", "ffn_norm"),
        (Role::FfnGateUp, "mlp.gate_up_proj", "ffn_up"),
        (Role::FfnDown, "mlp.down_proj", "ffn_down"),
    ],
};

pub(super) const FAMILY: Family = Family {
    hf_classes: &["Phi3ForCausalLM"],
    gguf_archs: &["phi3"],
    tensors: &TENSORS,
    from_hf,
    from_gguf: Some(from_gguf),
};

/// transformers' LongRoPE attention factor when the config gives none.
fn attention_factor(max_positions: usize, original: usize) -> f64 {
    let factor = max_positions as f64 / original as f64;
    if factor <= 1.0 {
        1.0
    } else {
        (1.0 + factor.ln() / (original as f64).ln()).sqrt()
    }
}

fn from_hf(c: &Keys, architecture: &str) -> Result<DecoderConfig> {
    let h = HfCommon::read(c, false)?;
    let rope = HfRope::read(c, None)?;
    let param = |k: &str| rope.scaling.and_then(|s| s.get(k)).filter(|v| !v.is_null());
    let partial = match c.opt_f64("partial_rotary_factor")? {
        Some(p) => p,
        None => param("partial_rotary_factor")
            .and_then(Value::as_f64)
            .unwrap_or(1.0),
    };
    // transformers: int(head_dim * partial_rotary_factor)
    let dim = (h.head_dim as f64 * partial) as usize;
    if dim == 0 || dim > h.head_dim || dim % 2 != 0 {
        return Err(c.invalid(
            "partial_rotary_factor",
            &format!(
                "{partial} of head_dim {} is not an even number of dimensions",
                h.head_dim
            ),
        ));
    }
    let scaling = match rope.kind() {
        "longrope" | "su" => {
            let factors = |k: &str| -> Result<Vec<f64>> {
                let key = format!("rope_scaling.{k}");
                let v = param(k)
                    .ok_or_else(|| c.missing(&key))?
                    .as_array()
                    .ok_or_else(|| c.invalid(&key, "expected a list of numbers"))?;
                let f: Vec<f64> = v.iter().filter_map(Value::as_f64).collect();
                if f.len() != v.len() || f.len() != dim / 2 {
                    return Err(c.invalid(
                        &key,
                        &format!("expected {} numbers (half the rotated dimensions)", dim / 2),
                    ));
                }
                Ok(f)
            };
            let original = match param("original_max_position_embeddings").and_then(Value::as_u64) {
                Some(o) => o as usize,
                None => c.usize("original_max_position_embeddings")?,
            };
            let max_positions = match param("factor").and_then(Value::as_f64) {
                Some(f) => (f * original as f64) as usize,
                None => h.max_position_embeddings,
            };
            RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                attention_factor: match param("attention_factor").and_then(Value::as_f64) {
                    Some(a) => a,
                    None => attention_factor(max_positions, original),
                },
            }
        }
        _ => rope.scaling(c)?,
    };
    let rope = RopeConfig {
        theta: rope.theta.unwrap_or(10_000.0),
        dim,
        layout: RopeLayout::Half,
        scaling,
    };
    Ok(DecoderConfig {
        fused_qkv: true,
        fused_gate_up: true,
        tensors: &TENSORS,
        ..llama_shaped(
            architecture,
            &h,
            c.f64("rms_norm_eps")?,
            rope,
            c.opt_usize("sliding_window")?,
        )
    })
}

fn from_gguf(g: &GgufKeys) -> Result<DecoderConfig> {
    let c = GgufCommon::read(g)?;
    let intermediate_size = match g.opt_usize("feed_forward_length")? {
        Some(x) => x,
        // gate and up fused in `ffn_up`
        None => g
            .dims("blk.0.ffn_up.weight")
            .and_then(|d| d.first().copied())
            .map(|rows| rows / 2)
            .ok_or_else(|| g.err("feed_forward_length", "missing"))?,
    };
    let h = HfCommon {
        intermediate_size,
        ..c.hf()
    };
    let scaling = if g.has_tensor("rope_factors_long.weight") {
        let original = g.usize("rope.scaling.original_context_length")?;
        RopeScaling::LongRope {
            short_factor: g.vec_f64("rope_factors_short.weight")?,
            long_factor: g.vec_f64("rope_factors_long.weight")?,
            original_max_position_embeddings: original,
            attention_factor: match g.opt_f64("rope.scaling.attn_factor")? {
                Some(a) => a,
                None => attention_factor(c.context_length, original),
            },
        }
    } else {
        GgufCommon::rope_scaling(g)?
    };
    let rope = RopeConfig {
        theta: c.rope_theta,
        dim: c.rope_dim,
        layout: RopeLayout::Half,
        scaling,
    };
    let window = g.opt_usize("attention.sliding_window")?.filter(|&w| w > 0);
    Ok(DecoderConfig {
        fused_qkv: true,
        fused_gate_up: true,
        tensors: &TENSORS,
        layers: uniform_layers(c.num_layers, window),
        ..llama_shaped(
            "Phi3ForCausalLM",
            &h,
            g.f64("attention.layer_norm_rms_epsilon")?,
            rope,
            window,
        )
    })
}
