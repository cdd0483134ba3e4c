//! Where the weights come from. The model code asks for a tensor by what it does ([`Role`]) in
//! which block; [`Weights`] turns that into the store's name with the family's [`TensorNames`]
//! (`model.layers.3.self_attn.q_proj.weight` in safetensors, `blk.3.attn_q.weight` in GGUF), and
//! the [`Store`] serves it: dense, or quantized GGUF tensors as `QMatMul::QTensor` (dequantized
//! with `dequantize`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::arch::{Format, Role, TensorNames};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

pub(crate) enum Store {
    Safetensors {
        files: Vec<(PathBuf, MmapedSafetensors)>,
        /// tensor name -> index into `files`
        routing: HashMap<String, usize>,
    },
    Gguf {
        file: GgufFile,
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

    pub fn format(&self) -> Format {
        match self {
            Store::Safetensors { .. } => Format::HuggingFace,
            Store::Gguf { .. } => Format::Gguf,
        }
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
            Store::Gguf { file, .. } => {
                let mut params = 0u64;
                let mut bytes = 0u64;
                for info in file.content.tensor_infos.values() {
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
            Store::Gguf { file, .. } => file.path.clone(),
        }
    }

    fn contains(&self, key: &str) -> bool {
        match self {
            Store::Safetensors { routing, .. } => routing.contains_key(key),
            Store::Gguf { file, .. } => file.content.tensor_infos.contains_key(key),
        }
    }

    /// The stored type of a GGUF tensor.
    fn ggml_dtype(&self, key: &str) -> Option<GgmlDType> {
        match self {
            Store::Safetensors { .. } => None,
            Store::Gguf { file, .. } => file.content.tensor_infos.get(key).map(|t| t.ggml_dtype),
        }
    }

    fn missing(&self, key: &str, hint: String) -> ModelError {
        ModelError::MissingTensor {
            path: self.path_of(key),
            tensor: key.to_string(),
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
    fn dense(&self, key: &str, shape: &[usize], dtype: DType, dev: &Device) -> Result<Tensor> {
        match self {
            Store::Safetensors { files, routing } => {
                let Some(&i) = routing.get(key) else {
                    return Err(self.missing(key, String::new()));
                };
                let (path, st) = &files[i];
                let view = st.get(key).map_err(|e| ModelError::Safetensors {
                    path: path.clone(),
                    message: crate::error::candle_message(&e),
                })?;
                let found = format!("{:?}", view.dtype());
                if !matches!(found.as_str(), "F16" | "BF16" | "F32" | "F64") {
                    return Err(ModelError::TensorDtype {
                        path: path.clone(),
                        tensor: key.to_string(),
                        expected: "a float type (F32, F16, BF16 or F64)".to_string(),
                        found,
                    });
                }
                self.check_shape(key, view.shape(), shape)?;
                let bad_size = || ModelError::Safetensors {
                    path: path.clone(),
                    message: format!(
                        "tensor `{key}`: {} bytes of data for shape {:?} {found}",
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
                let q = self.qtensor(key, shape)?;
                Ok(q.dequantize(dev)?.to_dtype(dtype)?)
            }
        }
    }

    fn qtensor(&self, key: &str, shape: &[usize]) -> Result<QTensor> {
        let Store::Gguf { file, .. } = self else {
            unreachable!("qtensor is only called on GGUF stores")
        };
        let Some(info) = file.content.tensor_infos.get(key) else {
            return Err(self.missing(key, String::new()));
        };
        self.check_shape(key, info.shape.dims(), shape)?;
        file.tensor(key)
    }

    /// A projection weight of shape (out, in).
    fn matmul(&self, key: &str, shape: &[usize], dtype: DType, dev: &Device) -> Result<QMatMul> {
        match self {
            Store::Safetensors { .. } => Ok(QMatMul::Tensor(self.dense(key, shape, dtype, dev)?)),
            Store::Gguf { dequantize, .. } => {
                let q = self.qtensor(key, shape)?;
                let float = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
                if *dequantize || float {
                    Ok(QMatMul::Tensor(q.dequantize(dev)?.to_dtype(dtype)?))
                } else {
                    self.check_quantized_rows(key, &q, dev)?;
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

    /// Quantized matmul kernels work on whole blocks of a row: candle's (and ggml's) need the row
    /// length to be a multiple of the block size, and candle's Q4_0/Q4_1/Q5_0/Q5_1 dot products
    /// take blocks in pairs (they assert otherwise, found by `cargo fuzz run gguf`). Real models
    /// satisfy both; a file that does not gets an error here instead of a panic mid-run.
    fn check_quantized_rows(&self, key: &str, q: &QTensor, dev: &Device) -> Result<()> {
        let Store::Gguf { file, .. } = self else {
            return Ok(());
        };
        let row = q.shape().dims().last().copied().unwrap_or(0);
        let block = q.dtype().block_size();
        let pairs = !crate::ggml_cpu::runs_ggml_kernel(q.dtype(), dev)
            && matches!(
                q.dtype(),
                GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
            );
        let multiple = if pairs { 2 * block } else { block };
        if row % multiple != 0 {
            return Err(ModelError::Gguf {
                path: file.path.clone(),
                message: format!(
                    "tensor `{key}` ({}) has rows of {row} values, not a multiple of {multiple} as \
                     the quantized kernel needs (--dequantize loads it as f32)",
                    crate::gguf::ggml_name(q.dtype())
                ),
            });
        }
        Ok(())
    }
}

/// The tensors of one model (or of one of its blocks) in a [`Store`], asked for by [`Role`], in
/// the style of candle's `VarBuilder`.
#[derive(Clone)]
pub struct Weights<'a> {
    store: &'a Store,
    names: &'static TensorNames,
    /// The block whose tensors this view serves; None: the tensors outside the blocks.
    layer: Option<usize>,
    dtype: DType,
    device: Device,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(
        store: &'a Store,
        names: &'static TensorNames,
        dtype: DType,
        device: &Device,
    ) -> Self {
        Self {
            store,
            names,
            layer: None,
            dtype,
            device: device.clone(),
        }
    }

    /// The view of block `i`'s tensors.
    pub fn layer(&self, i: usize) -> Self {
        Self {
            layer: Some(i),
            ..self.clone()
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The store's name of a role's `suffix` tensor, or an error when the family has none.
    fn key(&self, role: Role, suffix: &str) -> Result<String> {
        self.names
            .name(self.store.format(), role, self.layer, suffix)
            .ok_or_else(|| {
                let where_ = self
                    .layer
                    .map_or(String::new(), |i| format!(" of block {i}"));
                self.store.missing(
                    &format!("{role:?}.{suffix}{where_}"),
                    " (this format of the architecture has no such tensor)".to_string(),
                )
            })
    }

    /// [`Self::key`], with the missing-tensor error naming the Hugging Face name for GGUF files.
    fn existing_key(&self, role: Role, suffix: &str) -> Result<String> {
        let key = self.key(role, suffix)?;
        if self.store.contains(&key) {
            return Ok(key);
        }
        let hint = match self.store.format() {
            Format::Gguf => self
                .names
                .name(Format::HuggingFace, role, self.layer, suffix)
                .map(|hf| format!(" (looked for the GGUF name of `{hf}`)"))
                .unwrap_or_default(),
            Format::HuggingFace => String::new(),
        };
        Err(self.store.missing(&key, hint))
    }

    pub fn contains(&self, role: Role, suffix: &str) -> bool {
        self.key(role, suffix)
            .is_ok_and(|key| self.store.contains(&key))
    }

    /// A dense tensor (norm weights, biases, embeddings) in the model dtype.
    pub fn get(&self, shape: &[usize], role: Role, suffix: &str) -> Result<Tensor> {
        let key = self.existing_key(role, suffix)?;
        self.store.dense(&key, shape, self.dtype, &self.device)
    }

    /// A dense tensor in f32, whatever the model dtype.
    pub fn get_f32(&self, shape: &[usize], role: Role, suffix: &str) -> Result<Tensor> {
        let key = self.existing_key(role, suffix)?;
        self.store.dense(&key, shape, DType::F32, &self.device)
    }

    /// A 1-D f32 tensor of whatever length it has (llama.cpp's `rope_freqs`), if present.
    pub fn optional_vec_f32(&self, role: Role) -> Result<Option<Vec<f32>>> {
        if !self.contains(role, "weight") {
            return Ok(None);
        }
        let key = self.key(role, "weight")?;
        let t = match self.store {
            Store::Gguf { file, .. } => file.tensor(&key)?.dequantize(&Device::Cpu)?,
            Store::Safetensors { .. } => return Ok(None),
        };
        Ok(Some(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?))
    }

    /// Whether [`Weights::matmul`] would give a dense tensor (safetensors, dequantized or float
    /// GGUF tensors) rather than a quantized one.
    pub fn is_dense(&self, role: Role) -> bool {
        match self.store {
            Store::Safetensors { .. } => true,
            Store::Gguf { dequantize, .. } => {
                *dequantize
                    || self.key(role, "weight").is_ok_and(|k| {
                        self.store.ggml_dtype(&k).is_some_and(|d| {
                            matches!(d, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
                        })
                    })
            }
        }
    }

    /// A projection weight (out, in) as a `QMatMul` (quantized for GGUF unless dequantizing).
    pub fn matmul(&self, shape: (usize, usize), role: Role) -> Result<QMatMul> {
        let key = self.existing_key(role, "weight")?;
        self.store
            .matmul(&key, &[shape.0, shape.1], self.dtype, &self.device)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::test_files::{gguf, llama_kvs};

    fn open(p: &std::path::Path, dequantize: bool) -> Store {
        Store::Gguf {
            file: GgufFile::open(p).unwrap(),
            dequantize,
        }
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
        let store = open(&p, false);
        let name = "blk.0.attn_q.weight";
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
        let store = open(&p, true);
        assert!(store
            .matmul(name, &[2, 32], DType::F32, &Device::Cpu)
            .is_ok());

        // Two blocks per row: candle's kernel takes it.
        let even: &[(&str, &[u64], u32, u64)] = &[("blk.0.attn_q.weight", &[64, 2], 7, 0)];
        std::fs::write(&p, gguf(&llama_kvs(), even, &[0; 96])).unwrap();
        let store = open(&p, false);
        assert!(store
            .matmul(name, &[2, 64], DType::F32, &Device::Cpu)
            .is_ok());
    }
}
