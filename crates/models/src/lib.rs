//! surprisal-models: load Hugging Face causal LMs (safetensors) and GGUF files and run them with
//! candle, returning final hidden states for every position.
//!
//! - `arch/`: one file per architecture family: its `config.json` and GGUF metadata parsing and
//!   its tensor names, reduced to one block description ([`DecoderConfig`]).
//! - `nn/`: the building blocks, each once (projections, norms, MLPs, RoPE, masks, attention).
//! - [`decoder::CausalLm`]: the one decoder, built from a `DecoderConfig`, for dense safetensors,
//!   quantized GGUF and dequantized GGUF weights alike; quantized GGUFs on the CPU run in
//!   llama.cpp's order of operations (`llama_cpp`, `ggml_cpu`).
//! - [`decoder::Session`]: incremental decoding with a KV cache (both paths, every architecture),
//!   for `surprisal compress`, whose two sides must see the same next-token logits.
//! - `weights` (where tensors come from), `gguf` (GGUF files and their tokenizer), `tokenizer`.
//!
//! Modules depend on each other in one direction: `error` <- `tokenizer` <- `gguf` <- `weights`
//! <- `nn` <- `decoder` <- this file; `tensor_names` <- `config` <- `arch` (which reads GGUF
//! metadata through `gguf`, never weights); `ggml_cpu`, `quant` and `llama_cpp` are kernels.

pub mod arch;
pub mod config;
pub mod decoder;
pub mod error;
pub mod ggml_cpu;
pub mod gguf;
pub mod host;
pub mod hub;
pub mod llama_cpp;
pub mod nn;
pub mod quant;
pub mod source;
pub mod tensor_names;
pub mod tokenizer;
pub mod weights;

#[cfg(test)]
mod test_rng;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

pub use arch::{supported_architectures, supported_gguf_architectures};
pub use config::DecoderConfig;
pub use decoder::{CausalLm, KvCache, Session};
pub use error::ModelError;
pub use host::{host_cpu, HostCpu};
pub use source::ModelSource;
pub use tokenizer::{Encoded, TextTokenizer};

use error::Result;
use gguf::GgufFile;
use weights::{Store, Weights};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Activation and dense-weight dtype (quantized GGUF matmuls always take f32 activations).
    pub dtype: DType,
    /// GGUF only: dequantize every weight to `dtype` instead of running quantized kernels.
    pub dequantize: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            dequantize: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Hugging Face class name, e.g. `LlamaForCausalLM` (also for GGUF files).
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    /// Context length.
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Whether the model expects a BOS token in front of the text.
    pub add_bos_token: bool,
    pub weight_files: Vec<PathBuf>,
    /// e.g. `Some("Q4_1")`, `Some("Q4_1 dequantized to F32")`; None for safetensors.
    pub quantization: Option<String>,
    /// GGUF: how many tensors the file stores in each type (`{"Q4_K": 16, "Q5_0": 166, ...}`),
    /// the detail behind a mixed file type such as Q4_K_M. Empty for safetensors.
    pub tensor_types: std::collections::BTreeMap<String, usize>,
    pub num_parameters: u64,
    /// Bytes of weights as stored in the files.
    pub weight_bytes: u64,
}

impl ModelInfo {
    /// What a loaded checkpoint reports about itself; sizes come from the weight store.
    fn new(
        cfg: &DecoderConfig,
        add_bos_token: bool,
        weight_files: Vec<PathBuf>,
        quantization: Option<String>,
        store: &Store,
    ) -> Self {
        let (num_parameters, weight_bytes) = store.totals();
        Self {
            architecture: cfg.architecture.clone(),
            vocab_size: cfg.vocab_size,
            hidden_size: cfg.hidden_size,
            num_layers: cfg.num_layers,
            max_position_embeddings: cfg.max_position_embeddings,
            bos_token_id: cfg.bos_token_id,
            eos_token_id: cfg.eos_token_id,
            add_bos_token,
            weight_files,
            quantization,
            tensor_types: Default::default(),
            num_parameters,
            weight_bytes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: CausalLm,
    pub tokenizer: TextTokenizer,
    pub info: ModelInfo,
}

/// Loads a model and its tokenizer. Hub ids use the default hub cache (see [`hub::default_cache_dir`]).
pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<LoadedModel> {
    load_with_hub_cache(source, opts, None)
}

/// [`load`] with an explicit hub cache directory (used for hub ids only).
pub fn load_with_hub_cache(
    source: &ModelSource,
    opts: &LoadOptions,
    hub_cache: Option<&Path>,
) -> Result<LoadedModel> {
    match source {
        ModelSource::Dir(dir) => load_dir(dir, opts),
        ModelSource::Gguf {
            path,
            tokenizer_json,
        } => load_gguf(path, tokenizer_json.as_ref(), opts),
        ModelSource::Hub { repo, revision } => {
            let dir = hub::resolve(repo, revision.as_deref(), hub_cache)?;
            load_dir(&dir, opts)
        }
    }
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json` (each must exist).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let shards = hub::shard_names(&index)?;
        let mut files = Vec::with_capacity(shards.len());
        for s in shards {
            let p = dir.join(&s);
            if !p.is_file() {
                return Err(ModelError::MissingShard { index, shard: s });
            }
            files.push(p);
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::NotFound {
        path: single,
        hint: " (nor model.safetensors.index.json; only safetensors weights are supported)".into(),
    })
}

fn load_dir(dir: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let json = error::read_json(&config_path)?;
    let cfg = arch::from_hf_json(&config_path, &json)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
    let files = weight_files(dir)?;
    let store = Store::open_safetensors(&files)?;
    let model_path = files.first().cloned().unwrap_or_default();
    check_vocab(&tokenizer, &cfg, &model_path)?;
    let vb = Weights::new(&store, cfg.tensors, opts.dtype, &opts.device).conv1d(cfg.hf_conv1d);
    let model = CausalLm::load(&vb, &cfg, None)?;
    let add_bos_token = hf_add_bos(dir, &tokenizer, cfg.bos_token_id);
    let info = ModelInfo::new(&cfg, add_bos_token, files, None, &store);
    Ok(LoadedModel {
        model,
        tokenizer,
        info,
    })
}

fn load_gguf(
    path: &Path,
    tokenizer_json: Option<&PathBuf>,
    opts: &LoadOptions,
) -> Result<LoadedModel> {
    let file = GgufFile::open(path)?;
    let content = &file.content;
    let cfg = arch::from_gguf(&file)?;
    let (tokenizer, add_bos_token) = gguf::tokenizer(path, content, tokenizer_json)?;
    check_vocab(&tokenizer, &cfg, path)?;
    let quant = gguf::dominant_quantization(content);
    let tensor_types = gguf::tensor_type_counts(content);
    let store = Store::Gguf {
        file,
        dequantize: opts.dequantize,
    };
    // Quantized kernels run in f32; dequantized weights take the requested dtype.
    let dtype = if opts.dequantize {
        opts.dtype
    } else {
        DType::F32
    };
    let vb = Weights::new(&store, cfg.tensors, dtype, &opts.device);
    let freq_factors = vb.optional_vec_f32(tensor_names::Role::RopeFreqs)?;
    let model = CausalLm::load(&vb, &cfg, freq_factors.as_deref())?;
    let quantization = Some(if opts.dequantize {
        format!("{quant} dequantized to {:?}", opts.dtype)
    } else {
        quant
    });
    let mut info = ModelInfo::new(
        &cfg,
        add_bos_token,
        vec![path.to_path_buf()],
        quantization,
        &store,
    );
    info.tensor_types = tensor_types;
    Ok(LoadedModel {
        model,
        tokenizer,
        info,
    })
}

fn check_vocab(tokenizer: &TextTokenizer, cfg: &DecoderConfig, model: &Path) -> Result<()> {
    let tv = tokenizer.vocab_size();
    if tv > cfg.vocab_size {
        return Err(ModelError::VocabMismatch {
            tokenizer: tokenizer.source().to_path_buf(),
            model: model.to_path_buf(),
            tokenizer_vocab: tv,
            model_vocab: cfg.vocab_size,
        });
    }
    Ok(())
}

/// `tokenizer_config.json` `add_bos_token` if present, else whether the tokenizer's
/// post-processor puts BOS in front.
fn hf_add_bos(dir: &Path, tokenizer: &TextTokenizer, bos: Option<u32>) -> bool {
    if let Ok(v) = error::read_json(&dir.join("tokenizer_config.json")) {
        if let Some(b) = v.get("add_bos_token").and_then(|b| b.as_bool()) {
            return b;
        }
    }
    let (Ok(with), Ok(without)) = (tokenizer.encode_with_special("a"), tokenizer.encode("a"))
    else {
        return false;
    };
    with.len() > without.ids.len() && with.first().copied() == bos && bos.is_some()
}
