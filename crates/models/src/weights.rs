//! Where the weights come from. The model code asks for tensors by their Hugging Face names
//! (`vb.pp("self_attn").matmul("q_proj", ...)`); a safetensors store serves them directly, a GGUF
//! store translates the names to llama.cpp's (`blk.N.attn_q.weight`) and serves quantized
//! tensors as `QMatMul::QTensor` (or dequantized, with `dequantize`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

pub(crate) enum Store {
    Safetensors {
        files: Vec<(PathBuf, MmapedSafetensors)>,
        /// tensor name -> index into `files`
        routing: HashMap<String, usize>,
    },
    Gguf {
        path: PathBuf,
        content: gguf_file::Content,
        reader: Mutex<BufReader<File>>,
        dequantize: bool,
    },
}

impl Store {
    /// Memory-maps safetensors files (one, or the shards of an index).
    pub fn open_safetensors(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut routing = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            if !p.is_file() {
                return Err(ModelError::NotFound {
                    path: p.clone(),
                    hint: String::new(),
                });
            }
            // SAFETY: the file is mapped read-only; like every mmap-based loader we rely on it not
            // being modified while the model is alive.
            let st = unsafe { MmapedSafetensors::new(p) }.map_err(|e| ModelError::Safetensors {
                path: p.clone(),
                message: crate::error::candle_message(&e),
            })?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            files.push((p.clone(), st));
        }
        Ok(Self::Safetensors { files, routing })
    }

    /// (number of parameters, bytes of weights)
    pub fn totals(&self) -> (u64, u64) {
        match self {
            Store::Safetensors { files, .. } => {
                let mut params = 0u64;
                let mut bytes = 0u64;
                for (_, st) in files {
                    for (_, view) in st.tensors() {
                        let n: usize = view.shape().iter().product();
                        params += n as u64;
                        bytes += view.data().len() as u64;
                    }
                }
                (params, bytes)
            }
            Store::Gguf { content, .. } => {
                let mut params = 0u64;
                let mut bytes = 0u64;
                for info in content.tensor_infos.values() {
                    let n = info.shape.elem_count();
                    params += n as u64;
                    bytes +=
                        (n / info.ggml_dtype.block_size() * info.ggml_dtype.type_size()) as u64;
                }
                (params, bytes)
            }
        }
    }

    fn path_of(&self, name: &str) -> PathBuf {
        match self {
            Store::Safetensors { files, routing } => routing
                .get(name)
                .map(|&i| files[i].0.clone())
                .unwrap_or_else(|| files.first().map(|f| f.0.clone()).unwrap_or_default()),
            Store::Gguf { path, .. } => path.clone(),
        }
    }

    /// The store's name for a Hugging Face tensor name.
    fn key(&self, hf_name: &str) -> String {
        match self {
            Store::Safetensors { .. } => hf_name.to_string(),
            Store::Gguf { .. } => gguf_name(hf_name).unwrap_or_else(|| hf_name.to_string()),
        }
    }

    fn contains(&self, hf_name: &str) -> bool {
        let key = self.key(hf_name);
        match self {
            Store::Safetensors { routing, .. } => routing.contains_key(&key),
            Store::Gguf { content, .. } => content.tensor_infos.contains_key(&key),
        }
    }

    fn missing(&self, hf_name: &str) -> ModelError {
        let key = self.key(hf_name);
        let hint = if key != hf_name {
            format!(" (looked for the GGUF name of `{hf_name}`)")
        } else {
            String::new()
        };
        ModelError::MissingTensor {
            path: self.path_of(&key),
            tensor: key,
            hint,
        }
    }

    fn check_shape(&self, key: &str, found: &[usize], expected: &[usize]) -> Result<()> {
        if found != expected {
            return Err(ModelError::TensorShape {
                path: self.path_of(key),
                tensor: key.to_string(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        Ok(())
    }

    /// A dense float tensor of the expected shape, in `dtype`.
    fn dense(&self, hf_name: &str, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        match self {
            Store::Safetensors { files, routing } => {
                let Some(&i) = routing.get(hf_name) else {
                    return Err(self.missing(hf_name));
                };
                let (path, st) = &files[i];
                let view = st.get(hf_name).map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    message: crate::error::candle_message(&e),
                })?;
                let found = format!("{:?}", view.dtype());
                if !matches!(found.as_str(), "F16" | "BF16" | "F32" | "F64") {
                    return Err(ModelError::TensorDtype {
                        path: path.clone(),
                        tensor: hf_name.to_string(),
                        expected: "a float type (F32, F16, BF16 or F64)".to_string(),
                        found,
                    });
                }
                self.check_shape(hf_name, view.shape(), shape)?;
                let bad_size = || ModelError::Safetensors {
                    path: path.clone(),
                    message: format!(
                        "tensor `{hf_name}`: {} bytes of data for shape {:?} {found}",
                        view.data().len(),
                        view.shape()
                    ),
                };
                let shape = view.shape().to_vec();
                let t = match found.as_str() {
                    "F32" => copy_out_of_map::<f32>(view.data(), shape, dev),
                    "F16" => copy_out_of_map::<half::f16>(view.data(), shape, dev),
                    "BF16" => copy_out_of_map::<half::bf16>(view.data(), shape, dev),
                    _ => copy_out_of_map::<f64>(view.data(), shape, dev),
                }?
                .ok_or_else(bad_size)?;
                Ok(t.to_dtype(dtype)?)
            }
            Store::Gguf { .. } => {
                let q = self.qtensor(hf_name, shape)?;
                Ok(q.dequantize(dev)?.to_dtype(dtype)?)
            }
        }
    }

    fn qtensor(&self, hf_name: &str, shape: &[usize]) -> Result<QTensor> {
        let Store::Gguf {
            path,
            content,
            reader,
            ..
        } = self
        else {
            unreachable!("qtensor is only called on GGUF stores")
        };
        let key = self.key(hf_name);
        let Some(info) = content.tensor_infos.get(&key) else {
            return Err(self.missing(hf_name));
        };
        self.check_shape(&key, info.shape.dims(), shape)?;
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        content
            .tensor(&mut *reader, &key, &Device::Cpu)
            .map_err(|e| ModelError::Gguf {
                path: path.clone(),
                message: format!(
                    "tensor `{key}`: {} (the file may be truncated; re-download it)",
                    crate::error::candle_message(&e)
                ),
            })
    }

    /// A projection weight of shape (out, in).
    fn matmul(
        &self,
        hf_name: &str,
        shape: &[usize],
        dtype: DType,
        dev: &Device,
    ) -> Result<QMatMul> {
        match self {
            Store::Safetensors { .. } => {
                Ok(QMatMul::Tensor(self.dense(hf_name, shape, dtype, dev)?))
            }
            Store::Gguf { dequantize, .. } => {
                let q = self.qtensor(hf_name, shape)?;
                let float = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
                if *dequantize || float {
                    Ok(QMatMul::Tensor(q.dequantize(dev)?.to_dtype(dtype)?))
                } else {
                    self.check_quantized_rows(hf_name, &q, dev)?;
                    let q = if dev.is_cpu() {
                        q
                    } else {
                        QTensor::quantize_onto(&q.dequantize(&Device::Cpu)?, q.dtype(), dev)?
                    };
                    Ok(QMatMul::from_qtensor(q)?)
                }
            }
        }
    }
}

impl Store {
    /// Quantized matmul kernels work on whole blocks of a row: candle's (and ggml's) need the row
    /// length to be a multiple of the block size, and candle's Q4_0/Q4_1/Q5_0/Q5_1 dot products
    /// take blocks in pairs (they assert otherwise, found by `cargo fuzz run gguf`). Real models
    /// satisfy both; a file that does not gets an error here instead of a panic mid-run.
    fn check_quantized_rows(&self, hf_name: &str, q: &QTensor, dev: &Device) -> Result<()> {
        let Store::Gguf { path, .. } = self else {
            return Ok(());
        };
        let row = q.shape().dims().last().copied().unwrap_or(0);
        let block = q.dtype().block_size();
        let pairs = !crate::layers::runs_ggml_kernel(q.dtype(), dev)
            && matches!(
                q.dtype(),
                GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
            );
        let multiple = if pairs { 2 * block } else { block };
        if row % multiple != 0 {
            let name = gguf_name(hf_name).unwrap_or_else(|| hf_name.to_string());
            return Err(ModelError::Gguf {
                path: path.clone(),
                message: format!(
                    "tensor `{name}` ({}) has rows of {row} values, not a multiple of {multiple} as \
                     the quantized kernel needs (--dequantize loads it as f32)",
                    crate::gguf::ggml_name(q.dtype())
                ),
            });
        }
        Ok(())
    }
}

/// llama.cpp's name for a Hugging Face tensor name (Llama/Qwen families).
pub(crate) fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let g = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// A view into a [`Store`] under a name prefix, in the style of candle's `VarBuilder`.
#[derive(Clone)]
pub struct Weights<'a> {
    store: &'a Store,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(store: &'a Store, dtype: DType, device: &Device) -> Self {
        Self {
            store,
            prefix: String::new(),
            dtype,
            device: device.clone(),
        }
    }

    pub fn pp(&self, s: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}.{s}", self.prefix)
        };
        Self {
            prefix,
            ..self.clone()
        }
    }

    fn name(&self, s: &str) -> String {
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            format!("{}.{s}", self.prefix)
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.name(name))
    }

    /// A dense tensor (norm weights, biases, embeddings) in the model dtype.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.store
            .dense(&self.name(name), shape, self.dtype, &self.device)
    }

    /// A dense tensor in f32, whatever the model dtype.
    pub fn get_f32(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.store
            .dense(&self.name(name), shape, DType::F32, &self.device)
    }

    /// A projection weight (out, in) as a `QMatMul` (quantized for GGUF unless dequantizing).
    /// Whether [`Weights::matmul`] would give a dense tensor (safetensors, dequantized or float GGUF
    /// tensors) rather than a quantized one.
    pub fn is_dense(&self, name: &str) -> bool {
        let name = self.name(name);
        match self.store {
            Store::Safetensors { .. } => true,
            Store::Gguf {
                content,
                dequantize,
                ..
            } => {
                *dequantize
                    || content
                        .tensor_infos
                        .get(&self.store.key(&name))
                        .is_some_and(|t| {
                            matches!(
                                t.ggml_dtype,
                                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
                            )
                        })
            }
        }
    }

    pub fn matmul(&self, shape: (usize, usize), name: &str) -> Result<QMatMul> {
        self.store.matmul(
            &self.name(name),
            &[shape.0, shape.1],
            self.dtype,
            &self.device,
        )
    }
}

/// Opens a GGUF file and checks that every tensor's data lies inside it.
pub(crate) fn open_gguf(path: &Path, dequantize: bool) -> Result<Store> {
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
    let content = gguf_file::Content::read(&mut reader).map_err(|e| gguf_read_error(path, e))?;
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
    Ok(Store::Gguf {
        path: path.to_path_buf(),
        content,
        reader: Mutex::new(reader),
        dequantize,
    })
}

/// Copies a memory-mapped tensor into an owned candle tensor, in slices, releasing each slice's
/// mapped pages once copied. candle tensors own their storage, so every weight exists twice while it
/// is copied; without the release, the mapped pages of the whole file stay resident next to the
/// copies and peak RSS is twice the weights (measured: 1,282 MiB for 615 MiB of weights). `None`
/// when the byte count does not match the shape.
fn copy_out_of_map<T: candle_core::WithDType>(
    bytes: &[u8],
    shape: Vec<usize>,
    dev: &Device,
) -> Result<Option<Tensor>> {
    const SLICE: usize = 16 << 20;
    let n: usize = shape.iter().product();
    let size = std::mem::size_of::<T>();
    if bytes.len() != n * size {
        return Ok(None);
    }
    let mut out: Vec<T> = Vec::with_capacity(n);
    let dst = out.spare_capacity_mut();
    // SAFETY: `dst` has room for exactly n * size bytes; every byte is written below before
    // `set_len`, and T is a plain float type for which any bit pattern is a valid value.
    let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), n * size) };
    for (d, s) in dst.chunks_mut(SLICE).zip(bytes.chunks(SLICE)) {
        d.copy_from_slice(s);
        release_mapped_pages(s);
    }
    // SAFETY: all n elements were initialized by the copy above.
    unsafe { out.set_len(n) };
    Ok(Some(Tensor::from_vec(out, shape, dev)?))
}

/// Tells the kernel it may drop the whole pages inside `bytes`, a slice of a read-only file mapping:
/// they leave our RSS and would be read from the file again if touched.
fn release_mapped_pages(bytes: &[u8]) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = bytes.as_ptr() as usize;
        let (first, end) = (
            start.next_multiple_of(PAGE),
            (start + bytes.len()) / PAGE * PAGE,
        );
        if end > first {
            // SAFETY: [first, end) lies inside a private read-only file mapping that we never write;
            // MADV_DONTNEED on such pages only drops them from memory (a later read re-faults them
            // from the file), so no reference into the mapping is invalidated.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// `general.alignment` as `Content::read` takes it (the last such key; an unsigned or non-negative
/// integer of at most 32 bits), found by skipping through the metadata; None when absent or when
/// the header is malformed (left to `Content::read` to report). candle 0.11 divides by it
/// unchecked, so a 0 must be caught first (huggingface/candle#3876).
fn gguf_alignment(r: &mut BufReader<File>, file_len: u64) -> Option<u64> {
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

fn gguf_read_error(path: &Path, e: candle_core::Error) -> ModelError {
    let msg = crate::error::candle_message(&e);
    if let Some(code) = msg
        .split("unknown dtype for tensor ")
        .nth(1)
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        return ModelError::UnsupportedQuantization {
            path: path.to_path_buf(),
            tensor: "(header)".to_string(),
            dtype: ggml_type_name(code),
            hint: "; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K (re-quantize the model with one of these)".to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::test_files::{gguf, llama_kvs};

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
        let e = match open_gguf(&p, false) {
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
        let e = match open_gguf(&p, false) {
            Ok(_) => panic!("opened a GGUF whose tensor offset overflows"),
            Err(e) => e,
        };
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    /// Found by `cargo fuzz run gguf`: a Q5_1 projection whose rows are one block (32 values)
    /// long reached candle's `vec_dot_q5_1_q8_1`, which asserts an even block count, and panicked
    /// in the middle of the forward pass. Now loading it is an error naming the tensor.
    #[test]
    fn gguf_quantized_rows_the_kernel_cannot_take_are_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("q5_1.gguf");
        // ggml type 7 = Q5_1: blocks of 32 values in 24 bytes.
        let odd: &[(&str, &[u64], u32, u64)] = &[("blk.0.attn_q.weight", &[32, 2], 7, 0)];
        std::fs::write(&p, gguf(&llama_kvs(), odd, &[0; 48])).unwrap();
        let store = open_gguf(&p, false).unwrap();
        let name = "model.layers.0.self_attn.q_proj.weight";
        let e = match store.matmul(name, &[2, 32], DType::F32, &Device::Cpu) {
            Ok(_) => panic!("loaded Q5_1 rows of one block for candle's kernel"),
            Err(e) => e,
        };
        let s = e.to_string();
        assert!(
            s.contains("q5_1.gguf") && s.contains("`blk.0.attn_q.weight`"),
            "{s}"
        );
        assert!(
            s.contains("rows of 32 values") && s.contains("--dequantize"),
            "{s}"
        );
        // Dequantized, the same tensor loads.
        let store = open_gguf(&p, true).unwrap();
        assert!(store
            .matmul(name, &[2, 32], DType::F32, &Device::Cpu)
            .is_ok());

        // Two blocks per row: candle's kernel takes it.
        let even: &[(&str, &[u64], u32, u64)] = &[("blk.0.attn_q.weight", &[64, 2], 7, 0)];
        std::fs::write(&p, gguf(&llama_kvs(), even, &[0; 96])).unwrap();
        let store = open_gguf(&p, false).unwrap();
        assert!(store
            .matmul(name, &[2, 64], DType::F32, &Device::Cpu)
            .is_ok());
    }
}
