//! The one configuration every supported decoder-only architecture is reduced to, and its parsing
//! from a Hugging Face `config.json`. (GGUF metadata is parsed in `gguf.rs`.)

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{ModelError, Result};

/// The architectures this crate implements (`config.json` `architectures[0]`).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &[
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Llama and Mistral: no biases, no q/k norm.
    Llama,
    /// Qwen2: bias on the q/k/v projections.
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k before RoPE; explicit head_dim.
    Qwen3,
}

/// Which pairs of dimensions RoPE rotates together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// Hugging Face layout: dimension i pairs with i + D/2 (`rotate_half`).
    Half,
    /// llama.cpp "normal" layout: dimension 2i pairs with 2i + 1. GGUF llama files store Q/K rows
    /// permuted for this layout.
    Interleaved,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// transformers' `_compute_llama3_parameters`.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

#[derive(Debug, Clone)]
pub struct DecoderConfig {
    pub architecture: String,
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_dim: usize,
    pub rope_scaling: RopeScaling,
    pub rope_layout: RopeLayout,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on q and k (Qwen3).
    pub qk_norm: bool,
    /// Tokens further back than this are not attended to (Mistral).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl DecoderConfig {
    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path, json: &Value) -> Result<Self> {
        let c = Keys { path, json };
        let architecture = match json.get("architectures") {
            Some(Value::Array(a)) if !a.is_empty() => a[0]
                .as_str()
                .ok_or_else(|| c.invalid("architectures", "expected a list of strings"))?
                .to_string(),
            Some(_) => return Err(c.invalid("architectures", "expected a non-empty list")),
            None => return Err(c.missing("architectures")),
        };
        let family = match architecture.as_str() {
            "LlamaForCausalLM" | "MistralForCausalLM" => Family::Llama,
            "Qwen2ForCausalLM" => Family::Qwen2,
            "Qwen3ForCausalLM" => Family::Qwen3,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    path: path.to_path_buf(),
                    architecture: other.to_string(),
                    supported: SUPPORTED_ARCHITECTURES.join(", "),
                })
            }
        };
        let hidden_size = c.usize("hidden_size")?;
        let num_heads = c.usize("num_attention_heads")?;
        let num_kv_heads = c.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = match c.opt_usize("head_dim")? {
            Some(d) => d,
            None if family == Family::Qwen3 => return Err(c.missing("head_dim")),
            None => hidden_size / num_heads.max(1),
        };
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(c.invalid(
                "num_key_value_heads",
                &format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
            ));
        }
        let rope_scaling = parse_rope_scaling(&c)?;
        let attention_bias = c.opt_bool("attention_bias")?.unwrap_or(false);
        let sliding_window = match family {
            Family::Llama if architecture == "MistralForCausalLM" => {
                c.opt_usize("sliding_window")?
            }
            Family::Qwen2 | Family::Qwen3 => {
                if c.opt_bool("use_sliding_window")?.unwrap_or(false) {
                    return Err(c.invalid(
                        "use_sliding_window",
                        "sliding-window attention for Qwen models is not supported",
                    ));
                }
                None
            }
            _ => None,
        };
        Ok(Self {
            family,
            vocab_size: c.usize("vocab_size")?,
            hidden_size,
            intermediate_size: c.usize("intermediate_size")?,
            num_layers: c.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: c.f64("rms_norm_eps")?,
            rope_theta: match c.opt_f64("rope_theta")? {
                Some(t) => t,
                None => json
                    .get("rope_parameters")
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
                    .unwrap_or(10_000.0),
            },
            rope_dim: head_dim,
            rope_scaling,
            rope_layout: RopeLayout::Half,
            max_position_embeddings: c.usize("max_position_embeddings")?,
            tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: family == Family::Qwen2 || attention_bias,
            o_bias: family == Family::Llama && attention_bias,
            mlp_bias: c.opt_bool("mlp_bias")?.unwrap_or(false),
            qk_norm: family == Family::Qwen3,
            sliding_window,
            bos_token_id: c.opt_token_id("bos_token_id")?,
            eos_token_id: c.opt_token_id("eos_token_id")?,
            architecture,
        })
    }
}

fn parse_rope_scaling(c: &Keys) -> Result<RopeScaling> {
    // Hub layout: `rope_scaling`; transformers >= 5 layout: `rope_parameters`.
    let Some(rs) = c
        .json
        .get("rope_scaling")
        .filter(|v| !v.is_null())
        .or_else(|| c.json.get("rope_parameters").filter(|v| !v.is_null()))
    else {
        return Ok(RopeScaling::None);
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        rs.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| c.missing(&format!("rope_scaling.{k}")))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        }),
        other => Err(c.invalid(
            "rope_scaling.rope_type",
            &format!("`{other}` is not supported (supported: default, llama3)"),
        )),
    }
}

/// Typed access to `config.json` keys with errors that name the file and key.
struct Keys<'a> {
    path: &'a Path,
    json: &'a Value,
}

impl Keys<'_> {
    fn missing(&self, key: &str) -> ModelError {
        ModelError::MissingConfigKey {
            path: PathBuf::from(self.path),
            key: key.to_string(),
        }
    }
    fn invalid(&self, key: &str, message: &str) -> ModelError {
        ModelError::InvalidConfigValue {
            path: PathBuf::from(self.path),
            key: key.to_string(),
            message: message.to_string(),
        }
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.invalid(key, &format!("expected a non-negative integer, found {v}"))
            }),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.invalid(key, &format!("expected a number, found {v}"))),
        }
    }
    fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.invalid(key, &format!("expected true or false, found {v}"))),
        }
    }
    /// A token id, or a list of them (first one taken).
    fn opt_token_id(&self, key: &str) -> Result<Option<u32>> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(Value::Array(a)) => match a.first() {
                None => return Ok(None),
                Some(v) => v,
            },
            Some(v) => v,
        };
        v.as_u64()
            .map(|x| Some(x as u32))
            .ok_or_else(|| self.invalid(key, &format!("expected a token id, found {v}")))
    }
}
