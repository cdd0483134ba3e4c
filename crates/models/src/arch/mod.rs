//! Architecture families, one file each: how a family's `config.json` and GGUF metadata become a
//! [`DecoderConfig`], and its tensor names in both formats ([`TensorNames`], the one map the
//! loader and the tests use). Everything else (norms, RoPE, attention, MLPs, the decoder and the
//! llama.cpp-order path) is shared and driven by the `DecoderConfig`.
//!
//! Adding a family: `docs/adding-an-architecture.md`.

mod gemma2;
mod gemma3;
mod llama;
mod phi3;
mod qwen;

use std::path::Path;

use candle_core::quantized::gguf_file::Content;
use serde_json::Value;

use crate::gguf::GgufFile;

use crate::config::{DecoderConfig, Keys, LayerKind, RopeConfig, RopeLayout, RopeScaling};
use crate::error::{ModelError, Result};
use crate::gguf::Meta;

/// What a tensor does in the model, whatever it is called in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    TokenEmbd,
    OutputNorm,
    Output,
    /// llama.cpp `rope_freqs` (Llama 3.1 frequency factors; GGUF only).
    RopeFreqs,
    AttnNorm,
    AttnQ,
    AttnK,
    AttnV,
    /// q, k and v in one tensor.
    AttnQkv,
    AttnOut,
    AttnQNorm,
    AttnKNorm,
    /// Gemma's norm of the attention output.
    AttnPostNorm,
    /// The norm in front of the MLP.
    FfnNorm,
    FfnGate,
    FfnUp,
    /// Gate and up in one tensor.
    FfnGateUp,
    FfnDown,
    /// Gemma's norm of the MLP output.
    FfnPostNorm,
}

/// A family's tensor names: per role, the Hugging Face module path and llama.cpp's GGUF name,
/// both without the `.weight` / `.bias` suffix. An empty name: the format has no such tensor.
#[derive(Debug)]
pub struct TensorNames {
    /// Tensors outside the blocks.
    pub global: &'static [(Role, &'static str, &'static str)],
    /// Hugging Face prefix of block i's tensors, before `i.` (GGUF's is always `blk.i.`).
    pub hf_block_prefix: &'static str,
    /// Tensors of every block, relative to the block.
    pub block: &'static [(Role, &'static str, &'static str)],
}

/// Which naming a weight store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    HuggingFace,
    Gguf,
}

impl TensorNames {
    /// The full name of a role's `suffix` (`weight`, `bias`) tensor in block `layer` (None:
    /// outside the blocks), or None when the family has no such tensor in this format.
    pub fn name(
        &self,
        format: Format,
        role: Role,
        layer: Option<usize>,
        suffix: &str,
    ) -> Option<String> {
        let table = if layer.is_some() {
            self.block
        } else {
            self.global
        };
        let &(_, hf, gguf) = table.iter().find(|(r, _, _)| *r == role)?;
        let base = match format {
            Format::HuggingFace => hf,
            Format::Gguf => gguf,
        };
        if base.is_empty() {
            return None;
        }
        Some(match (layer, format) {
            (None, _) => format!("{base}.{suffix}"),
            (Some(i), Format::HuggingFace) => {
                format!("{}{i}.{base}.{suffix}", self.hf_block_prefix)
            }
            (Some(i), Format::Gguf) => format!("blk.{i}.{base}.{suffix}"),
        })
    }

    /// llama.cpp's name for a Hugging Face tensor name of this family.
    pub fn gguf_name(&self, hf_name: &str) -> Option<String> {
        let (module, suffix) = hf_name.rsplit_once('.')?;
        if let Some(rest) = module.strip_prefix(self.hf_block_prefix) {
            let (layer, module) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let &(role, _, _) = self.block.iter().find(|(_, hf, _)| *hf == module)?;
            return self.name(Format::Gguf, role, Some(layer), suffix);
        }
        let &(role, _, _) = self.global.iter().find(|(_, hf, _)| *hf == module)?;
        self.name(Format::Gguf, role, None, suffix)
    }
}

/// How one family is read.
pub(crate) struct Family {
    /// `config.json` `architectures[0]` values.
    pub hf_classes: &'static [&'static str],
    /// GGUF `general.architecture` values.
    pub gguf_archs: &'static [&'static str],
    pub tensors: &'static TensorNames,
    /// `config.json` -> config; gets the matched class name.
    pub from_hf: fn(&Keys, &str) -> Result<DecoderConfig>,
    /// GGUF metadata -> config; `None`: the family is read from safetensors only.
    pub from_gguf: Option<fn(&GgufKeys) -> Result<DecoderConfig>>,
}

const FAMILIES: &[&Family] = &[
    &llama::FAMILY,
    &qwen::QWEN2,
    &qwen::QWEN3,
    &gemma3::FAMILY,
    &gemma2::FAMILY,
    &phi3::FAMILY,
];

/// The architectures this crate implements (`config.json` `architectures[0]`).
pub fn supported_architectures() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.hf_classes)
        .copied()
        .collect()
}

/// The GGUF `general.architecture` values this crate reads.
pub fn supported_gguf_architectures() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .filter(|f| f.from_gguf.is_some())
        .flat_map(|f| f.gguf_archs)
        .copied()
        .collect()
}

/// llama.cpp's GGUF name for a Hugging Face tensor name of the architecture `hf_class`
/// (e.g. `Gemma3ForCausalLM`, `model.layers.0.post_attention_layernorm.weight` ->
/// `blk.0.post_attention_norm.weight`): what the loader uses, exposed for converters and tests.
pub fn gguf_tensor_name(hf_class: &str, hf_name: &str) -> Option<String> {
    let family = FAMILIES.iter().find(|f| f.hf_classes.contains(&hf_class))?;
    family.tensors.gguf_name(hf_name)
}

/// Parses a Hugging Face `config.json`.
pub fn from_hf_json(path: &Path, json: &Value) -> Result<DecoderConfig> {
    let c = Keys { path, json };
    let architecture = match json.get("architectures") {
        Some(Value::Array(a)) if !a.is_empty() => a[0]
            .as_str()
            .ok_or_else(|| c.invalid("architectures", "expected a list of strings"))?
            .to_string(),
        Some(_) => return Err(c.invalid("architectures", "expected a non-empty list")),
        None => return Err(c.missing("architectures")),
    };
    let Some(family) = FAMILIES
        .iter()
        .find(|f| f.hf_classes.contains(&architecture.as_str()))
    else {
        return Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture,
            supported: supported_architectures().join(", "),
        });
    };
    (family.from_hf)(&c, &architecture)
}

/// The configuration described by a GGUF file's metadata and tensor shapes.
pub(crate) fn from_gguf(file: &GgufFile) -> Result<DecoderConfig> {
    let (path, content) = (file.path.as_path(), &file.content);
    let m = Meta::new(path, content);
    let arch = m
        .opt_str("general.architecture")?
        .ok_or_else(|| m.err("general.architecture", "missing"))?;
    let reader = FAMILIES
        .iter()
        .find(|f| f.gguf_archs.contains(&arch))
        .and_then(|f| f.from_gguf);
    let Some(reader) = reader else {
        return Err(ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture: arch.to_string(),
            supported: supported_gguf_architectures().join(", "),
        });
    };
    reader(&GgufKeys {
        meta: m,
        arch,
        content,
        path,
        file,
    })
}

/// A GGUF file's metadata under its architecture's prefix (`<arch>.*`), and its tensor shapes.
pub(crate) struct GgufKeys<'a> {
    pub meta: Meta<'a>,
    pub arch: &'a str,
    pub content: &'a Content,
    pub path: &'a Path,
    pub file: &'a GgufFile,
}

impl GgufKeys<'_> {
    pub fn key(&self, s: &str) -> String {
        format!("{}.{s}", self.arch)
    }
    pub fn opt_usize(&self, s: &str) -> Result<Option<usize>> {
        Ok(self.meta.opt_u64(&self.key(s))?.map(|x| x as usize))
    }
    pub fn usize(&self, s: &str) -> Result<usize> {
        self.meta.usize(&self.key(s))
    }
    pub fn opt_f64(&self, s: &str) -> Result<Option<f64>> {
        self.meta.opt_f64(&self.key(s))
    }
    pub fn f64(&self, s: &str) -> Result<f64> {
        self.opt_f64(s)?
            .ok_or_else(|| self.meta.err(&self.key(s), "missing"))
    }
    pub fn err(&self, s: &str, message: impl Into<String>) -> ModelError {
        self.meta.err(&self.key(s), message)
    }
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }
    /// A small tensor's values (LongRoPE's factors).
    pub fn vec_f64(&self, name: &str) -> Result<Vec<f64>> {
        let t = self
            .file
            .tensor(name)?
            .dequantize(&candle_core::Device::Cpu)?;
        Ok(t.flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1()?)
    }
    /// The dims of a tensor, outermost first (`(out, in)` for a projection).
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.content.tensor_infos.get(name).map(|i| i.shape.dims())
    }
}

/// The hyperparameters every GGUF architecture stores under the same keys.
pub(crate) struct GgufCommon {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_dim: usize,
    pub rope_theta: f64,
    pub context_length: usize,
    pub tied: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl GgufCommon {
    /// `ffn_up_rows_per_intermediate`: rows of `blk.0.ffn_up` per intermediate unit, used when
    /// `feed_forward_length` is absent (2 where gate and up are fused in `ffn_up`).
    pub fn read(g: &GgufKeys) -> Result<Self> {
        let hidden_size = g.usize("embedding_length")?;
        let num_heads = g.usize("attention.head_count")?;
        let num_kv_heads = g.opt_usize("attention.head_count_kv")?.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(g.err(
                "attention.head_count_kv",
                format!("{num_kv_heads} does not divide head_count = {num_heads}"),
            ));
        }
        let head_dim = g
            .opt_usize("attention.key_length")?
            .unwrap_or(hidden_size / num_heads);
        let rope_dim = g.opt_usize("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(g.err(
                "rope.dimension_count",
                format!("{rope_dim} rotated dimensions do not fit heads of {head_dim}"),
            ));
        }
        let embd = g
            .dims("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor {
                path: g.path.to_path_buf(),
                tensor: "token_embd.weight".into(),
                hint: String::new(),
            })?;
        let &[vocab_size, _] = embd else {
            return Err(ModelError::Gguf {
                path: g.path.to_path_buf(),
                message: format!(
                    "tensor `token_embd.weight` has shape {embd:?}, expected (vocab, embedding_length)"
                ),
            });
        };
        let ff = g
            .dims("blk.0.ffn_gate.weight")
            .and_then(|d| d.first().copied());
        let intermediate_size = match g.opt_usize("feed_forward_length")? {
            Some(x) => x,
            None => ff.ok_or_else(|| g.err("feed_forward_length", "missing"))?,
        };
        let m = &g.meta;
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers: g.usize("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_dim,
            rope_theta: g.opt_f64("rope.freq_base")?.unwrap_or(10_000.0),
            context_length: g.usize("context_length")?,
            tied: !g.has_tensor("output.weight"),
            bos_token_id: m.opt_u64("tokenizer.ggml.bos_token_id")?.map(|x| x as u32),
            eos_token_id: m.opt_u64("tokenizer.ggml.eos_token_id")?.map(|x| x as u32),
        })
    }

    /// `rope.scaling.type`: none, or linear with `rope.scaling.factor`.
    pub fn rope_scaling(g: &GgufKeys) -> Result<RopeScaling> {
        match g.meta.opt_str(&g.key("rope.scaling.type"))? {
            None | Some("none") => Ok(RopeScaling::None),
            Some("linear") => Ok(RopeScaling::Linear {
                factor: g.f64("rope.scaling.factor")?,
            }),
            Some(t) => Err(g.err(
                "rope.scaling.type",
                format!("`{t}` rope scaling is not supported (supported: none, linear)"),
            )),
        }
    }
}

/// The hyperparameters every Hugging Face decoder config stores under the same keys.
pub(crate) struct HfCommon {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// `head_dim` if given, else hidden / heads.
    pub head_dim: usize,
    pub head_dim_given: bool,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl HfCommon {
    /// `tied_default`: `tie_word_embeddings` when the key is absent (transformers' class default).
    pub fn read(c: &Keys, tied_default: bool) -> Result<Self> {
        let hidden_size = c.usize("hidden_size")?;
        let num_heads = c.usize("num_attention_heads")?;
        let num_kv_heads = c.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(c.invalid(
                "num_key_value_heads",
                &format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
            ));
        }
        let given = c.opt_usize("head_dim")?;
        Ok(Self {
            vocab_size: c.usize("vocab_size")?,
            hidden_size,
            intermediate_size: c.usize("intermediate_size")?,
            num_layers: c.usize("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim: given.unwrap_or(hidden_size / num_heads),
            head_dim_given: given.is_some(),
            max_position_embeddings: c.usize("max_position_embeddings")?,
            tie_word_embeddings: c.opt_bool("tie_word_embeddings")?.unwrap_or(tied_default),
            bos_token_id: c.opt_token_id("bos_token_id")?,
            eos_token_id: c.opt_token_id("eos_token_id")?,
        })
    }
}

/// RoPE parameters in either layout: the Hub's top-level `rope_theta` + `rope_scaling`, or
/// transformers >= 5's `rope_parameters` (`sub` picks a per-layer-type entry, as Gemma-3 has).
pub(crate) struct HfRope<'a> {
    pub theta: Option<f64>,
    /// The scaling object (`rope_type` / `type` and its parameters), if any.
    pub scaling: Option<&'a Value>,
}

impl<'a> HfRope<'a> {
    pub fn read(c: &'a Keys, sub: Option<&str>) -> Result<Self> {
        let params = c.get("rope_parameters").map(|p| match sub {
            Some(s) => p.get(s).filter(|v| !v.is_null()),
            None => Some(p),
        });
        let params = params.flatten();
        let theta = match c.opt_f64("rope_theta")? {
            Some(t) if sub.is_none() || sub == Some("full_attention") => Some(t),
            _ => params
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64),
        };
        // The Hub layout's `rope_scaling` is the global layers' (transformers applies it to
        // `full_attention` only).
        let scaling = match sub {
            None | Some("full_attention") => c.get("rope_scaling").or(params),
            Some(_) => params,
        };
        Ok(Self { theta, scaling })
    }

    /// `rope_type` (or its old alias `type`), `default` when absent.
    pub fn kind(&self) -> &'a str {
        self.scaling
            .and_then(|s| s.get("rope_type").or_else(|| s.get("type")))
            .and_then(Value::as_str)
            .unwrap_or("default")
    }

    /// The scaling of the kinds shared by several families (default, linear, llama3); a family
    /// with more (Phi-3's longrope) matches those first.
    pub fn scaling(&self, c: &Keys) -> Result<RopeScaling> {
        let num = |k: &str| -> Result<f64> {
            self.scaling
                .and_then(|s| s.get(k))
                .and_then(Value::as_f64)
                .ok_or_else(|| c.missing(&format!("rope_scaling.{k}")))
        };
        match self.kind() {
            "default" => Ok(RopeScaling::None),
            "linear" => Ok(RopeScaling::Linear {
                factor: num("factor")?,
            }),
            "llama3" => Ok(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            }),
            other => Err(c.invalid(
                "rope_scaling.rope_type",
                &format!("`{other}` is not supported (supported: default, linear, llama3)"),
            )),
        }
    }
}

/// Every layer alike: one RoPE, one (optional) sliding window.
pub(crate) fn uniform_layers(n: usize, sliding_window: Option<usize>) -> Vec<LayerKind> {
    vec![
        LayerKind {
            rope: 0,
            sliding_window,
        };
        n
    ]
}

/// A full-width RoPE in the Hugging Face layout.
pub(crate) fn rope_half(theta: f64, dim: usize, scaling: RopeScaling) -> RopeConfig {
    RopeConfig {
        theta,
        dim,
        layout: RopeLayout::Half,
        scaling,
    }
}
