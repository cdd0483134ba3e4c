//! GGUF files: hyperparameters from `<arch>.*` metadata, tokenizer from `tokenizer.ggml.*`,
//! weights served (quantized or dequantized) through [`crate::weights::Store`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

use crate::config::{DecoderConfig, Family, RopeLayout, RopeScaling};
use crate::error::{ModelError, Result};
use crate::tokenizer::TextTokenizer;
use crate::weights::Store;

pub(crate) const SUPPORTED_GGUF_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3"];

pub(crate) struct Meta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl<'a> Meta<'a> {
    pub fn new(path: &'a Path, content: &'a Content) -> Self {
        Self {
            path,
            md: &content.metadata,
        }
    }

    fn err(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::GgufMetadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        let x = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            other => {
                return Err(self.err(
                    key,
                    format!("expected a non-negative integer, found {other:?}"),
                ))
            }
        };
        Ok(Some(x))
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_u64(key)?
            .map(|x| x as usize)
            .ok_or_else(|| self.err(key, "missing"))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        Ok(Some(match v {
            Value::F32(x) => *x as f64,
            Value::F64(x) => *x,
            other => return Err(self.err(key, format!("expected a float, found {other:?}"))),
        }))
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.err(key, format!("expected a string, found {other:?}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(key, format!("expected a bool, found {other:?}"))),
        }
    }

    fn str_array(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(key, format!("expected strings, found {other:?}"))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.err(key, format!("expected an array, found {other:?}"))),
        }
    }

    fn i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(*x),
                    Value::U32(x) => Ok(*x as i32),
                    Value::I8(x) => Ok(*x as i32),
                    Value::U8(x) => Ok(*x as i32),
                    other => Err(self.err(key, format!("expected integers, found {other:?}"))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.err(key, format!("expected an array, found {other:?}"))),
        }
    }
}

/// The decoder configuration described by a GGUF file's metadata and tensor shapes.
pub(crate) fn config(path: &Path, content: &Content) -> Result<DecoderConfig> {
    let m = Meta::new(path, content);
    let arch = m
        .opt_str("general.architecture")?
        .ok_or_else(|| m.err("general.architecture", "missing"))?;
    let (family, architecture, layout) = match arch {
        "llama" => (Family::Llama, "LlamaForCausalLM", RopeLayout::Interleaved),
        "qwen2" => (Family::Qwen2, "Qwen2ForCausalLM", RopeLayout::Half),
        "qwen3" => (Family::Qwen3, "Qwen3ForCausalLM", RopeLayout::Half),
        other => {
            return Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture: other.to_string(),
                supported: SUPPORTED_GGUF_ARCHITECTURES.join(", "),
            })
        }
    };
    let k = |s: &str| format!("{arch}.{s}");
    let hidden_size = m.usize(&k("embedding_length"))?;
    let num_heads = m.usize(&k("attention.head_count"))?;
    let num_kv_heads = m
        .opt_u64(&k("attention.head_count_kv"))?
        .map(|x| x as usize)
        .unwrap_or(num_heads);
    if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
        return Err(m.err(
            &k("attention.head_count_kv"),
            format!("{num_kv_heads} does not divide head_count = {num_heads}"),
        ));
    }
    let head_dim = m
        .opt_u64(&k("attention.key_length"))?
        .map(|x| x as usize)
        .unwrap_or(hidden_size / num_heads);
    let rope_dim = m
        .opt_u64(&k("rope.dimension_count"))?
        .map(|x| x as usize)
        .unwrap_or(head_dim);
    if rope_dim != head_dim {
        return Err(m.err(
            &k("rope.dimension_count"),
            format!("partial rotary embeddings ({rope_dim} of {head_dim} dims) are not supported"),
        ));
    }
    if let Some(t) = m.opt_str(&k("rope.scaling.type"))? {
        if t != "none" {
            return Err(m.err(
                &k("rope.scaling.type"),
                format!("`{t}` rope scaling is not supported"),
            ));
        }
    }
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| ModelError::MissingTensor {
            path: path.to_path_buf(),
            tensor: "token_embd.weight".into(),
            hint: String::new(),
        })?;
    let &[vocab_size, _] = embd.shape.dims() else {
        return Err(ModelError::Gguf {
            path: path.to_path_buf(),
            message: format!(
                "tensor `token_embd.weight` has shape {:?}, expected (vocab, embedding_length)",
                embd.shape.dims()
            ),
        });
    };
    let ff = content
        .tensor_infos
        .get("blk.0.ffn_gate.weight")
        .and_then(|i| i.shape.dims().first().copied());
    let intermediate_size = match m.opt_u64(&k("feed_forward_length"))? {
        Some(x) => x as usize,
        None => ff.ok_or_else(|| m.err(&k("feed_forward_length"), "missing"))?,
    };
    let qkv_bias = content.tensor_infos.contains_key("blk.0.attn_q.bias");
    Ok(DecoderConfig {
        architecture: architecture.to_string(),
        family,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_layers: m.usize(&k("block_count"))?,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: m
            .opt_f64(&k("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| m.err(&k("attention.layer_norm_rms_epsilon"), "missing"))?,
        rope_theta: m.opt_f64(&k("rope.freq_base"))?.unwrap_or(10_000.0),
        rope_dim,
        rope_scaling: RopeScaling::None,
        rope_layout: layout,
        max_position_embeddings: m.usize(&k("context_length"))?,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        qkv_bias,
        o_bias: content.tensor_infos.contains_key("blk.0.attn_output.bias"),
        mlp_bias: false,
        qk_norm: family == Family::Qwen3,
        sliding_window: None,
        bos_token_id: m.opt_u64("tokenizer.ggml.bos_token_id")?.map(|x| x as u32),
        eos_token_id: m.opt_u64("tokenizer.ggml.eos_token_id")?.map(|x| x as u32),
    })
}

/// llama.cpp `rope_freqs` (Llama 3.1 style frequency factors), if the file has them.
pub(crate) fn freq_factors(store: &Store) -> Result<Option<Vec<f32>>> {
    let Store::Gguf {
        path,
        content,
        reader,
        ..
    } = store
    else {
        return Ok(None);
    };
    if !content.tensor_infos.contains_key("rope_freqs.weight") {
        return Ok(None);
    }
    let mut r = reader.lock().unwrap_or_else(|p| p.into_inner());
    let q = content
        .tensor(&mut *r, "rope_freqs.weight", &candle_core::Device::Cpu)
        .map_err(|e| ModelError::Gguf {
            path: path.clone(),
            message: format!("tensor `rope_freqs.weight`: {e}"),
        })?;
    let t = q.dequantize(&candle_core::Device::Cpu)?.flatten_all()?;
    Ok(Some(t.to_vec1::<f32>()?))
}

/// (tokenizer, add_bos_token) from `tokenizer.ggml.*`; with `tokenizer_json`, that file is used
/// after checking that its vocabulary equals the GGUF one.
pub fn tokenizer(
    path: &Path,
    content: &Content,
    tokenizer_json: Option<&PathBuf>,
) -> Result<(TextTokenizer, bool)> {
    let m = Meta::new(path, content);
    let model = m.opt_str("tokenizer.ggml.model")?;
    let add_bos = m
        .opt_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(model == Some("llama"));
    let tokens = m.str_array("tokenizer.ggml.tokens")?;
    if let Some(json) = tokenizer_json {
        let tok = TextTokenizer::from_file(json)?;
        if let Some(tokens) = &tokens {
            compare_vocab(path, json, tokens, &tok.vocab_by_id())?;
        }
        return Ok((tok, add_bos));
    }
    let tokens = tokens.ok_or_else(|| {
        m.err(
            "tokenizer.ggml.tokens",
            "missing: the file has no tokenizer; pass the model's tokenizer.json",
        )
    })?;
    match model {
        Some("gpt2") => {
            let merges = m.str_array("tokenizer.ggml.merges")?.ok_or_else(|| {
                m.err("tokenizer.ggml.merges", "missing (required for gpt2 BPE)")
            })?;
            let types = m.i32_array("tokenizer.ggml.token_type")?;
            let pre = m.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
            let tok = TextTokenizer::from_gguf_bpe(path, &tokens, &merges, types.as_deref(), pre)?;
            Ok((tok, add_bos))
        }
        Some("llama") => Ok((TextTokenizer::from_gguf_spm(path, content)?, add_bos)),
        Some(other) => Err(m.err(
            "tokenizer.ggml.model",
            format!("tokenizer model `{other}` is not supported (only gpt2 byte-level BPE and llama SentencePiece); pass the model's tokenizer.json"),
        )),
        None => Err(m.err("tokenizer.ggml.model", "missing; pass the model's tokenizer.json")),
    }
}

fn compare_vocab(
    gguf: &Path,
    json: &Path,
    gguf_tokens: &[String],
    json_tokens: &[String],
) -> Result<()> {
    let disagree = |message: String| ModelError::TokenizerDisagreement {
        gguf: gguf.to_path_buf(),
        tokenizer_json: json.to_path_buf(),
        message,
    };
    if gguf_tokens.len() != json_tokens.len() {
        return Err(disagree(format!(
            "{} tokens in the GGUF, {} in tokenizer.json",
            gguf_tokens.len(),
            json_tokens.len()
        )));
    }
    if let Some((i, (a, b))) = gguf_tokens
        .iter()
        .zip(json_tokens)
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        return Err(disagree(format!(
            "token {i} is `{a}` in the GGUF but `{b}` in tokenizer.json"
        )));
    }
    Ok(())
}

/// The most common quantization of the 2-D weights, e.g. "Q4_1".
pub(crate) fn dominant_quantization(content: &Content) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for info in content.tensor_infos.values() {
        if info.shape.rank() >= 2 {
            *counts.entry(ggml_name(info.ggml_dtype)).or_default() += info.shape.elem_count();
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(k, _)| k)
        .unwrap_or_else(|| "F32".into())
}

pub(crate) fn ggml_name(d: GgmlDType) -> String {
    match d {
        GgmlDType::Q2K => "Q2_K".into(),
        GgmlDType::Q3K => "Q3_K".into(),
        GgmlDType::Q4K => "Q4_K".into(),
        GgmlDType::Q5K => "Q5_K".into(),
        GgmlDType::Q6K => "Q6_K".into(),
        GgmlDType::Q8K => "Q8_K".into(),
        other => format!("{other:?}"),
    }
}

/// Hand-made GGUF files for the regression tests of inputs found by fuzzing (fuzz/, docs/fuzzing.md).
#[cfg(test)]
pub(crate) mod test_files {
    /// A metadata value: GGUF value type and its encoding.
    pub(crate) type Kv<'a> = (&'a str, u32, Vec<u8>);

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    pub(crate) fn u32_kv(key: &str, x: u32) -> Kv<'_> {
        (key, 4, x.to_le_bytes().to_vec())
    }

    pub(crate) fn f32_kv(key: &str, x: f32) -> Kv<'_> {
        (key, 6, x.to_le_bytes().to_vec())
    }

    pub(crate) fn str_kv<'a>(key: &'a str, s: &str) -> Kv<'a> {
        (key, 8, string(s))
    }

    pub(crate) fn str_array_kv<'a>(key: &'a str, items: &[&str]) -> Kv<'a> {
        let mut v = 8u32.to_le_bytes().to_vec();
        v.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            v.extend_from_slice(&string(s));
        }
        (key, 9, v)
    }

    /// Llama hyperparameters (hidden 16, 2 heads) without a tokenizer.
    pub(crate) fn llama_kvs() -> Vec<Kv<'static>> {
        vec![
            str_kv("general.architecture", "llama"),
            u32_kv("llama.embedding_length", 16),
            u32_kv("llama.attention.head_count", 2),
            u32_kv("llama.block_count", 1),
            u32_kv("llama.feed_forward_length", 32),
            u32_kv("llama.context_length", 64),
            f32_kv("llama.attention.layer_norm_rms_epsilon", 1e-6),
        ]
    }

    /// A GGUF v3 file. Tensors: (name, dims as stored: innermost first, ggml type, data offset);
    /// `data` is appended after the 32-byte aligned header.
    pub(crate) fn gguf(kvs: &[Kv], tensors: &[(&str, &[u64], u32, u64)], data: &[u8]) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        v.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (key, ty, value) in kvs {
            v.extend_from_slice(&string(key));
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(value);
        }
        for (name, dims, ty, offset) in tensors {
            v.extend_from_slice(&string(name));
            v.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in *dims {
                v.extend_from_slice(&d.to_le_bytes());
            }
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&offset.to_le_bytes());
        }
        v.resize(v.len().div_ceil(32) * 32, 0);
        v.extend_from_slice(data);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::test_files::{self, gguf, llama_kvs};
    use super::*;

    fn config_of(name: &str, file: Vec<u8>) -> Result<DecoderConfig> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, file).unwrap();
        let store = crate::weights::open_gguf(&p, false)?;
        let Store::Gguf { content, .. } = &store else {
            unreachable!()
        };
        config(&p, content)
    }

    /// Found while triaging the GGUF fuzz target: `config` indexed `token_embd.weight`'s dims
    /// (`dims()[0]`), which panicked for a tensor stored with 0 dimensions.
    #[test]
    fn scalar_token_embd_is_an_error() {
        let tensors: &[(&str, &[u64], u32, u64)] = &[("token_embd.weight", &[], 0, 0)];
        let e = config_of("scalar.gguf", gguf(&llama_kvs(), tensors, &[0; 32])).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("scalar.gguf") && s.contains("token_embd.weight"),
            "{s}"
        );
    }

    /// Found while triaging the GGUF fuzz target (reading candle's reader; known upstream as
    /// huggingface/candle#3876): `Content::read` divides by `general.alignment`, so a 0 panicked.
    /// The key must be found behind other keys, arrays included.
    #[test]
    fn zero_alignment_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("align0.gguf");
        let mut kvs = llama_kvs();
        kvs.push(test_files::str_array_kv(
            "tokenizer.ggml.tokens",
            &["a", "bc", ""],
        ));
        kvs.push(test_files::u32_kv("general.alignment", 0));
        kvs.push(test_files::str_kv("tokenizer.ggml.model", "gpt2"));
        std::fs::write(&p, gguf(&kvs, &[], &[])).unwrap();
        let e = match crate::weights::open_gguf(&p, false) {
            Ok(_) => panic!("opened a GGUF with general.alignment = 0"),
            Err(e) => e,
        };
        let s = e.to_string();
        assert!(
            s.contains("align0.gguf") && s.contains("general.alignment"),
            "{s}"
        );

        // A later key wins (as in candle's map), and a valid alignment still opens.
        kvs.push(test_files::u32_kv("general.alignment", 64));
        std::fs::write(&p, gguf(&kvs, &[], &[])).unwrap();
        assert!(crate::weights::open_gguf(&p, false).is_ok());
    }
}
