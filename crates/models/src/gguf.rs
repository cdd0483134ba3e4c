//! GGUF files: opening and checking one ([`GgufFile`]), typed access to its metadata ([`Meta`]),
//! and the tokenizer in its `tokenizer.ggml.*` keys. What the metadata says about the model is
//! read by each family in `arch/`; the weights are served by `weights.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{ModelError, Result};
use crate::tokenizer::TextTokenizer;

pub(crate) struct Meta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl<'a> Meta<'a> {
    pub(crate) fn new(path: &'a Path, content: &'a Content) -> Self {
        Self {
            path,
            md: &content.metadata,
        }
    }

    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::GgufMetadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
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

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.opt_u64(key)?
            .map(|x| x as usize)
            .ok_or_else(|| self.err(key, "missing"))
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        Ok(Some(match v {
            Value::F32(x) => *x as f64,
            Value::F64(x) => *x,
            other => return Err(self.err(key, format!("expected a float, found {other:?}"))),
        }))
    }

    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(self.err(key, format!("expected a string, found {other:?}"))),
        }
    }

    pub(crate) fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(key, format!("expected a bool, found {other:?}"))),
        }
    }

    pub(crate) fn str_array(&self, key: &str) -> Result<Option<Vec<String>>> {
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

    /// An array of bools (`true`/`false`, or integers 0/1), e.g. llama.cpp's per-layer
    /// `attention.sliding_window_pattern`; None when absent or not an array.
    pub(crate) fn opt_bool_array(&self, key: &str) -> Result<Option<Vec<bool>>> {
        match self.md.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Ok(*b),
                    Value::U8(x) => Ok(*x != 0),
                    Value::I8(x) => Ok(*x != 0),
                    Value::U32(x) => Ok(*x != 0),
                    Value::I32(x) => Ok(*x != 0),
                    other => Err(self.err(key, format!("expected bools, found {other:?}"))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            _ => Ok(None),
        }
    }

    pub(crate) fn i32_array(&self, key: &str) -> Result<Option<Vec<i32>>> {
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

/// The file's quantization as its producer named it: `general.file_type` (llama.cpp's `llama_ftype`,
/// e.g. "Q4_K_M" for a file whose tensors are Q5_0, Q4_K, Q6_K and Q8_0), else the most common type
/// of the 2-D weights, e.g. "Q4_1". A mixed file named by its commonest tensor ("Q5_0" for a Q4_K_M
/// requantization of SmolLM2) told users the wrong thing.
pub(crate) fn dominant_quantization(content: &Content) -> String {
    let file_type = content
        .metadata
        .get("general.file_type")
        .and_then(|v| v.to_u32().ok());
    if let Some(name) = file_type.and_then(file_type_name) {
        return name.to_string();
    }
    dominant_tensor_type(content)
}

/// llama.cpp's `llama_ftype` values (the `gguf` package's `LlamaFileType`, without `MOSTLY_`);
/// None for values not listed (GUESSED, or newer than this table).
fn file_type_name(v: u32) -> Option<&'static str> {
    Some(match v {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

/// How many tensors the file stores in each type, by ggml type name.
pub(crate) fn tensor_type_counts(content: &Content) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for info in content.tensor_infos.values() {
        *counts.entry(ggml_name(info.ggml_dtype)).or_default() += 1;
    }
    counts
}

/// The most common quantization of the 2-D weights, e.g. "Q4_1".
fn dominant_tensor_type(content: &Content) -> String {
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

/// An open GGUF file: its parsed header and a reader for its tensors.
pub(crate) struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    reader: Mutex<BufReader<File>>,
}

impl GgufFile {
    /// Opens a GGUF file and checks that every tensor's data lies inside it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| crate::error::io_error(path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| crate::error::io_error(path, e))?
            .len();
        let mut reader = BufReader::new(file);
        if gguf_alignment(&mut reader, file_len) == Some(0) {
            return Err(ModelError::GgufMetadata {
                path: path.to_path_buf(),
                key: "general.alignment".to_string(),
                message: "must be a power of two, found 0".to_string(),
            });
        }
        reader
            .rewind()
            .map_err(|e| crate::error::io_error(path, e))?;
        let content = Content::read(&mut reader).map_err(|e| gguf_read_error(path, e))?;
        for (name, info) in &content.tensor_infos {
            // Checked: the dims and offset come straight from the file (a crafted header must not
            // overflow here, nor later in `Shape::elem_count`).
            let end = info
                .shape
                .dims()
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .and_then(|n| {
                    (n / info.ggml_dtype.block_size()).checked_mul(info.ggml_dtype.type_size())
                })
                .and_then(|bytes| {
                    content
                        .tensor_data_offset
                        .checked_add(info.offset)?
                        .checked_add(bytes as u64)
                });
            let Some(end) = end else {
                return Err(ModelError::Gguf {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{name}` has shape {:?} at offset {}: its size overflows",
                        info.shape.dims(),
                        info.offset
                    ),
                });
            };
            if end > file_len {
                return Err(ModelError::Gguf {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{name}` ends at byte {end} but the file has only {file_len} bytes: the file is truncated (re-download it)"
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader: Mutex::new(reader),
        })
    }

    /// Reads one tensor (on the CPU, as stored).
    pub fn tensor(&self, name: &str) -> Result<QTensor> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        self.content
            .tensor(&mut *reader, name, &Device::Cpu)
            .map_err(|e| ModelError::Gguf {
                path: self.path.clone(),
                message: format!(
                    "tensor `{name}`: {} (the file may be truncated; re-download it)",
                    crate::error::candle_message(&e)
                ),
            })
    }
}

// Header readers for the scans below (None: malformed, left to `Content::read` to report).
fn bytes<const N: usize>(r: &mut BufReader<File>) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).ok()?;
    Some(b)
}
fn u32_(r: &mut BufReader<File>) -> Option<u32> {
    bytes(r).map(u32::from_le_bytes)
}
// GGUF v1 lengths are u32, later ones u64.
fn len(r: &mut BufReader<File>, v1: bool) -> Option<u64> {
    if v1 {
        u32_(r).map(u64::from)
    } else {
        bytes(r).map(u64::from_le_bytes)
    }
}
fn skip(r: &mut BufReader<File>, ty: u32, v1: bool, limit: u64, depth: usize) -> Option<()> {
    let fixed = |ty| match ty {
        0 | 1 | 7 => Some(1u64),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    };
    let n = match ty {
        8 => len(r, v1)?,
        9 => {
            let elem = u32_(r)?;
            let count = len(r, v1)?;
            match fixed(elem) {
                Some(size) => count.checked_mul(size)?,
                None if count <= limit && depth < 64 => {
                    for _ in 0..count {
                        skip(r, elem, v1, limit, depth + 1)?;
                    }
                    0
                }
                None => return None,
            }
        }
        _ => fixed(ty)?,
    };
    if n > limit {
        return None;
    }
    r.seek_relative(n as i64).ok()
}

/// `general.alignment` as `Content::read` takes it (the last such key; an unsigned or non-negative
/// integer of at most 32 bits), found by skipping through the metadata; None when absent or when
/// the header is malformed (left to `Content::read` to report). candle 0.11 divides by it
/// unchecked, so a 0 must be caught first (huggingface/candle#3876).
fn gguf_alignment(r: &mut BufReader<File>, file_len: u64) -> Option<u64> {
    if !matches!(u32_(r)?, 0x4655_4747 | 0x4747_5546) {
        return None;
    }
    let v1 = match u32_(r)? {
        1 => true,
        2 | 3 => false,
        _ => return None,
    };
    let _tensor_count = len(r, v1)?;
    let kv_count = len(r, v1)?;
    let mut alignment = None;
    for _ in 0..kv_count {
        let key_len = len(r, v1)?;
        let is_alignment = if key_len == 17 {
            &bytes::<17>(r)? == b"general.alignment"
        } else if key_len <= file_len {
            r.seek_relative(key_len as i64).ok()?;
            false
        } else {
            return None;
        };
        let ty = u32_(r)?;
        if is_alignment {
            let value = match ty {
                0 => Some(bytes::<1>(r)?[0] as u64),
                1 => Some(bytes::<1>(r)?[0] as i8).and_then(|x| u64::try_from(x).ok()),
                2 => Some(u16::from_le_bytes(bytes(r)?) as u64),
                3 => u64::try_from(i16::from_le_bytes(bytes(r)?)).ok(),
                4 => Some(u32::from_le_bytes(bytes(r)?) as u64),
                5 => u64::try_from(i32::from_le_bytes(bytes(r)?)).ok(),
                _ => {
                    skip(r, ty, v1, file_len, 0)?;
                    None
                }
            };
            alignment = value;
        } else {
            skip(r, ty, v1, file_len, 0)?;
        }
    }
    alignment
}

/// The name of the first tensor whose ggml type code is `code`, found by reading the header the
/// way [`gguf_alignment`] does, then the tensor infos (name, dims, type, offset). candle's reader
/// stops at the first unknown type without naming the tensor.
fn first_tensor_of_type(path: &Path, code: u32) -> Option<String> {
    let file = File::open(path).ok()?;
    let file_len = file.metadata().ok()?.len();
    let r = &mut BufReader::new(file);
    if !matches!(u32_(r)?, 0x4655_4747 | 0x4747_5546) {
        return None;
    }
    let v1 = match u32_(r)? {
        1 => true,
        2 | 3 => false,
        _ => return None,
    };
    let tensor_count = len(r, v1)?;
    let kv_count = len(r, v1)?;
    for _ in 0..kv_count {
        let key_len = len(r, v1)?;
        if key_len > file_len {
            return None;
        }
        r.seek_relative(key_len as i64).ok()?;
        let ty = u32_(r)?;
        skip(r, ty, v1, file_len, 0)?;
    }
    for _ in 0..tensor_count.min(file_len) {
        let name_len = len(r, v1)?;
        if name_len > file_len.min(1 << 16) {
            return None;
        }
        let mut name = vec![0u8; name_len as usize];
        r.read_exact(&mut name).ok()?;
        let n_dims = u32_(r)?;
        if n_dims > 8 {
            return None;
        }
        for _ in 0..n_dims {
            len(r, v1)?;
        }
        let ty = u32_(r)?;
        bytes::<8>(r)?;
        if ty == code {
            return Some(String::from_utf8_lossy(&name).into_owned());
        }
    }
    None
}

fn gguf_read_error(path: &Path, e: candle_core::Error) -> ModelError {
    let msg = crate::error::candle_message(&e);
    if let Some(code) = msg
        .split("unknown dtype for tensor ")
        .nth(1)
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        return ModelError::UnsupportedQuantization {
            path: path.to_path_buf(),
            tensor: first_tensor_of_type(path, code).unwrap_or_else(|| "(header)".to_string()),
            dtype: ggml_type_name(code),
            hint: "; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (re-quantize the model with one of these)".to_string(),
        };
    }
    let message = if msg.contains("magic") {
        format!("{msg} (not a GGUF file?)")
    } else if msg.contains("fill whole buffer") || msg.contains("remaining") {
        format!("{msg} (the file is truncated; re-download it)")
    } else {
        msg
    };
    ModelError::Gguf {
        path: path.to_path_buf(),
        message,
    }
}

fn ggml_type_name(code: u32) -> String {
    let name = match code {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return format!("ggml type {code}"),
    };
    format!("{name} (ggml type {code})")
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

    pub(crate) fn bool_array_kv<'a>(key: &'a str, items: &[bool]) -> Kv<'a> {
        let mut v = 7u32.to_le_bytes().to_vec();
        v.extend_from_slice(&(items.len() as u64).to_le_bytes());
        v.extend(items.iter().map(|&b| b as u8));
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
    /// `[(m.value, m.name) for m in gguf.LlamaFileType]` of the `gguf` package 0.19.0 (pinned in
    /// scripts/requirements-reference.txt), `MOSTLY_` dropped, up to MXFP4_MOE (its NVFP4 = 39 and
    /// Q1_0 = 40 are types no kernel here reads: those files fall back to the tensor count). The
    /// Gemma-3 Q4_K_M wheel's file has `general.file_type` 15.
    #[test]
    fn file_type_names_are_the_gguf_packages() {
        let reference: &[(u32, &str)] = &[
            (0, "ALL_F32"),
            (1, "MOSTLY_F16"),
            (2, "MOSTLY_Q4_0"),
            (3, "MOSTLY_Q4_1"),
            (7, "MOSTLY_Q8_0"),
            (8, "MOSTLY_Q5_0"),
            (9, "MOSTLY_Q5_1"),
            (10, "MOSTLY_Q2_K"),
            (11, "MOSTLY_Q3_K_S"),
            (12, "MOSTLY_Q3_K_M"),
            (13, "MOSTLY_Q3_K_L"),
            (14, "MOSTLY_Q4_K_S"),
            (15, "MOSTLY_Q4_K_M"),
            (16, "MOSTLY_Q5_K_S"),
            (17, "MOSTLY_Q5_K_M"),
            (18, "MOSTLY_Q6_K"),
            (19, "MOSTLY_IQ2_XXS"),
            (20, "MOSTLY_IQ2_XS"),
            (21, "MOSTLY_Q2_K_S"),
            (22, "MOSTLY_IQ3_XS"),
            (23, "MOSTLY_IQ3_XXS"),
            (24, "MOSTLY_IQ1_S"),
            (25, "MOSTLY_IQ4_NL"),
            (26, "MOSTLY_IQ3_S"),
            (27, "MOSTLY_IQ3_M"),
            (28, "MOSTLY_IQ2_S"),
            (29, "MOSTLY_IQ2_M"),
            (30, "MOSTLY_IQ4_XS"),
            (31, "MOSTLY_IQ1_M"),
            (32, "MOSTLY_BF16"),
            (36, "MOSTLY_TQ1_0"),
            (37, "MOSTLY_TQ2_0"),
            (38, "MOSTLY_MXFP4_MOE"),
        ];
        for &(v, name) in reference {
            let want = name
                .trim_start_matches("MOSTLY_")
                .trim_start_matches("ALL_");
            assert_eq!(file_type_name(v), Some(want), "file_type {v}");
        }
        assert_eq!(file_type_name(1024), None, "GUESSED is no name");
        assert_eq!(file_type_name(4), None, "4 is not in the enum");
    }

    use super::test_files::{self, gguf, llama_kvs};
    use super::*;

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
        let e = match GgufFile::open(&p) {
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
        assert!(GgufFile::open(&p).is_ok());
    }

    /// Found by `cargo fuzz run gguf`: tensor dims whose product overflows `usize` (the fuzzer
    /// turned the dims of `blk.0.attn_output.weight` into [0x15ad596003ffff10, 232]); `open_gguf`
    /// overflowed computing the tensor's byte size (a panic with overflow checks; without them a
    /// wrapped size that could pass the truncation check).
    #[test]
    fn gguf_tensor_size_overflow_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("overflow.gguf");
        let dims: &[u64] = &[0x15ad_5960_03ff_ff10, 232];
        std::fs::write(&p, gguf(&llama_kvs(), &[("w", dims, 0, 0)], &[0; 64])).unwrap();
        let e = match GgufFile::open(&p) {
            Ok(_) => panic!("opened a GGUF whose tensor size overflows"),
            Err(e) => e,
        };
        let s = e.to_string();
        assert!(matches!(e, ModelError::Gguf { .. }), "{s}");
        assert!(s.contains("overflow.gguf") && s.contains("`w`"), "{s}");
        assert!(s.contains("overflows"), "{s}");
    }

    /// The same with an offset that overflows when added to the data section's start.
    #[test]
    fn gguf_tensor_offset_overflow_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("offset.gguf");
        let tensors: &[(&str, &[u64], u32, u64)] = &[("w", &[4], 0, u64::MAX - 8)];
        std::fs::write(&p, gguf(&llama_kvs(), tensors, &[0; 16])).unwrap();
        let e = match GgufFile::open(&p) {
            Ok(_) => panic!("opened a GGUF whose tensor offset overflows"),
            Err(e) => e,
        };
        assert!(e.to_string().contains("overflows"), "{e}");
    }
}
