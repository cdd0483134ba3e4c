//! Where the weights come from. The model code asks for tensors by their Hugging Face names
//! (`vb.pp("self_attn").matmul("q_proj", ...)`); a safetensors store serves them directly, a GGUF
//! store translates the names to llama.cpp's (`blk.N.attn_q.weight`) and serves quantized
//! tensors as `QMatMul::QTensor` (or dequantized, with `dequantize`).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
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
