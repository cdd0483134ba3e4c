//! The block description every supported decoder-only architecture is reduced to
//! ([`DecoderConfig`]), and typed access to Hugging Face `config.json` keys ([`Keys`]). Each family
//! in `arch/` fills a `DecoderConfig` from its `config.json` or GGUF metadata; the decoder
//! (`decoder.rs`) and the llama.cpp-order path build and run the model from it alone.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::arch::TensorNames;
use crate::error::{ModelError, Result};

/// Which normalization every norm of the model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `x / rms(x) · w` (Llama, Qwen, Phi-3; also Gemma GGUFs, whose converter stores `1 + w`).
    Rms,
    /// `x / rms(x) · (1 + w)`, computed in f32 (Gemma's Hugging Face checkpoints store `w`).
    RmsOnePlus,
    /// `(x − mean) / std · w + b` (GPT-2, GPT-NeoX).
    LayerNorm,
}

/// How a block wires its norms, attention and MLP around the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockShape {
    /// `x += attn(n1(x)); x += mlp(n2(x))` (Llama, Qwen, Phi-3, GPT-2).
    PreNorm,
    /// Gemma's four norms: `x += n2(attn(n1(x))); x += n4(mlp(n3(x)))`.
    Sandwich,
    /// GPT-NeoX's parallel residual: `x += attn(n1(x)) + mlp(n2(x))`.
    Parallel,
}

/// The MLP's activation and wiring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(silu(gate(x)) · up(x))`.
    SwiGlu,
    /// `down(gelu_tanh(gate(x)) · up(x))` (Gemma).
    GeGluTanh,
    /// `down(gelu(up(x)))` without a gate; `tanh` picks the tanh approximation (GPT-2's `gelu_new`)
    /// over the exact erf form (GPT-NeoX's `gelu`).
    Gelu { tanh: bool },
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
    /// Positions divided by `factor` (transformers' `linear`, llama.cpp's `freq_scale = 1/factor`).
    Linear {
        factor: f64,
    },
    /// Phi-3's LongRoPE (transformers' `_compute_longrope_parameters`): frequencies divided by
    /// `short_factor` (sequences up to `original_max_position_embeddings`) or `long_factor`
    /// (longer ones), cos/sin multiplied by `attention_factor`.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: usize,
        attention_factor: f64,
    },
}

/// One rotary embedding; layers that share it share its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeConfig {
    pub theta: f64,
    /// Rotated dimensions of each head: `head_dim`, or fewer for partial rotary (Phi-3 with
    /// `partial_rotary_factor`, GPT-NeoX's `rotary_pct`); the rest pass through.
    pub dim: usize,
    pub layout: RopeLayout,
    pub scaling: RopeScaling,
}

/// What differs between the layers of one model (Gemma's local and global layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerKind {
    /// Index into [`DecoderConfig::ropes`].
    pub rope: usize,
    /// Tokens further back than this are not attended to.
    pub sliding_window: Option<usize>,
}

/// Where llama.cpp's graph for a family differs in the order of float operations (only for
/// GGUF files; `None` where the exact path has not been written for the family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaCppGraph {
    /// Q is multiplied by the attention scale before the K·Q product (Gemma: `ggml_scale(Qcur)`,
    /// softmax scale 1) instead of the scale being applied in the softmax (Llama, Qwen).
    pub scale_q: bool,
}

#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// Hugging Face class name, e.g. `LlamaForCausalLM` (also for GGUF files).
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub block: BlockShape,
    pub mlp: MlpKind,
    /// Gate and up projections stored as one `(2·intermediate, hidden)` tensor, gate first (Phi-3).
    pub fused_gate_up: bool,
    pub mlp_bias: bool,
    /// q, k and v stored as one `((H + 2·KV)·D, hidden)` tensor, in that order (Phi-3).
    pub fused_qkv: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (Qwen3, Gemma-3), of the model's [`NormKind`].
    pub qk_norm: bool,
    /// Multiplies q·k: `1/√head_dim`, or Gemma's `query_pre_attn_scalar^-½`.
    pub attn_scale: f64,
    /// Attention scores become `cap · tanh(scores / cap)` before the mask (Gemma-2).
    pub attn_softcap: Option<f64>,
    /// Logits become `cap · tanh(logits / cap)` (Gemma-2).
    pub final_softcap: Option<f64>,
    /// Token embeddings are multiplied by this (Gemma: √hidden).
    pub embed_scale: Option<f64>,
    /// The rotary embeddings the layers use (Gemma-3: one for local, one for global layers).
    pub ropes: Vec<RopeConfig>,
    /// One per layer.
    pub layers: Vec<LayerKind>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The family's tensor names (Hugging Face and GGUF).
    pub tensors: &'static TensorNames,
    pub llama_cpp: Option<LlamaCppGraph>,
}

/// Typed access to `config.json` keys with errors that name the file and key.
pub(crate) struct Keys<'a> {
    pub path: &'a Path,
    pub json: &'a Value,
}

impl Keys<'_> {
    pub fn missing(&self, key: &str) -> ModelError {
        ModelError::MissingConfigKey {
            path: PathBuf::from(self.path),
            key: key.to_string(),
        }
    }
    pub fn invalid(&self, key: &str, message: &str) -> ModelError {
        ModelError::InvalidConfigValue {
            path: PathBuf::from(self.path),
            key: key.to_string(),
            message: message.to_string(),
        }
    }
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.invalid(key, &format!("expected a non-negative integer, found {v}"))
            }),
        }
    }
    pub fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.invalid(key, &format!("expected a number, found {v}"))),
        }
    }
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.invalid(key, &format!("expected true or false, found {v}"))),
        }
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.invalid(key, &format!("expected a string, found {v}"))),
        }
    }
    /// A token id, or a list of them (first one taken).
    pub fn opt_token_id(&self, key: &str) -> Result<Option<u32>> {
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
