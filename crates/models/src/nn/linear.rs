//! Projections `y = x Wᵀ (+ b)` whose weight is dense, quantized with candle's kernels, or
//! quantized with ggml's exact kernels (`ggml_cpu`).

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Tensor};

use crate::error::Result;
use crate::ggml_cpu::runs_ggml_kernel;
use crate::ggml_cpu::GgmlMatMul;
use crate::tensor_names::Role;
use crate::weights::Weights;

/// y = x W^T (+ b). W is a `QMatMul`: dense for safetensors or dequantized GGUF, quantized for GGUF.
#[derive(Debug, Clone)]
pub struct Linear {
    kernel: Kernel,
    bias: Option<Tensor>,
}

#[derive(Debug, Clone)]
enum Kernel {
    /// Candle's matmul (dense, or candle's quantized kernels).
    Candle(QMatMul),
    /// For quantized weights on the CPU with a ggml-exact kernel (`GgmlMatMul::supports`): used instead of
    /// candle's quantized matmul, so the results are llama.cpp's (see `ggml_cpu`). The candle
    /// `QTensor` it was packed from is dropped: keeping both would hold the weights twice.
    Ggml(Arc<GgmlMatMul>),
}

impl Linear {
    pub fn load(
        vb: &Weights,
        role: Role,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = vb.matmul((out_dim, in_dim), role)?;
        let bias = if bias {
            Some(vb.get(&[out_dim], role, "bias")?)
        } else {
            None
        };
        Self::new(weight, bias)
    }

    pub fn from_qmatmul(weight: QMatMul) -> Result<Self> {
        Self::new(weight, None)
    }

    fn new(weight: QMatMul, bias: Option<Tensor>) -> Result<Self> {
        let ggml = match &weight {
            QMatMul::QTensor(q) if runs_ggml_kernel(q.dtype(), &q.device()) => {
                GgmlMatMul::from_qtensor(q)?.map(Arc::new)
            }
            _ => None,
        };
        let kernel = match ggml {
            Some(g) => Kernel::Ggml(g),
            None => Kernel::Candle(weight),
        };
        Ok(Self { kernel, bias })
    }

    /// The packed quantized weight, when this projection runs ggml's kernel.
    pub fn ggml(&self) -> Option<Arc<GgmlMatMul>> {
        match &self.kernel {
            Kernel::Ggml(g) => Some(g.clone()),
            Kernel::Candle(_) => None,
        }
    }

    /// Whether this projection runs ggml's exact quantized kernel.
    pub fn is_ggml(&self) -> bool {
        matches!(self.kernel, Kernel::Ggml(_))
    }

    /// Several projections of the same input x: (m, in) -> one (m, out_i) each. When all of them
    /// run ggml's kernel, x is quantized once for all (as ggml quantizes it once per matmul, the
    /// result is the same; only the repeated work goes).
    pub fn forward_f32_each(linears: &[&Linear], x: &[f32], m: usize) -> Result<Vec<Vec<f32>>> {
        let ggml: Option<Vec<&GgmlMatMul>> = linears
            .iter()
            .map(|l| match &l.kernel {
                Kernel::Ggml(g) => Some(g.as_ref()),
                Kernel::Candle(_) => None,
            })
            .collect();
        // K-quants quantize their activations to Q8_K themselves (in `forward`).
        let ggml = ggml.filter(|g| {
            g.windows(2).all(|w| w[0].in_dim() == w[1].in_dim())
                && !g.is_empty()
                && g.iter().all(|g| g.takes_q8_0())
        });
        let Some(ggml) = ggml else {
            return linears.iter().map(|l| l.forward_f32(x, m)).collect();
        };
        let k = ggml[0].in_dim();
        assert_eq!(x.len(), m * k, "activation length");
        let sums = ggml.iter().any(|g| g.needs_sums());
        let a = crate::ggml_cpu::quantize_rows(x, m, k, sums);
        linears
            .iter()
            .zip(ggml)
            .map(|(l, g)| l.add_bias(g.forward_quantized(&a, m)))
            .collect()
    }

    /// x: (m, in) row-major f32 -> (m, out) row-major f32.
    pub fn forward_f32(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        let y = match &self.kernel {
            Kernel::Ggml(g) => g.forward(x, m),
            Kernel::Candle(w) => {
                let in_dim = x.len() / m.max(1);
                let dev = match w {
                    QMatMul::QTensor(q) => q.device(),
                    QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.device().clone(),
                };
                let xt = Tensor::from_slice(x, (m, in_dim), &dev)?;
                return Ok(self.forward(&xt)?.flatten_all()?.to_vec1()?);
            }
        };
        self.add_bias(y)
    }

    fn add_bias(&self, mut y: Vec<f32>) -> Result<Vec<f32>> {
        if let Some(b) = &self.bias {
            let b: Vec<f32> = b.to_dtype(DType::F32)?.to_vec1()?;
            for row in y.chunks_mut(b.len()) {
                for (y, b) in row.iter_mut().zip(&b) {
                    *y += b;
                }
            }
        }
        Ok(y)
    }

    /// x: (..., in) -> (..., out), in the dtype of x.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims.last().unwrap_or(&0);
        // (..., in) -> (N, in): a plain 2-D matmul, no broadcast weight.
        let x2 = x.reshape(((), in_dim))?;
        let y = match &self.kernel {
            Kernel::Ggml(g) => {
                let m = x2.dim(0)?;
                let xs: Vec<f32> = x2.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                let y = g.forward(&xs, m);
                Tensor::from_vec(y, (m, g.out_dim()), x.device())?.to_dtype(x.dtype())?
            }
            Kernel::Candle(w) => match w {
                // Quantized kernels take f32 activations.
                QMatMul::QTensor(_) if x.dtype() != DType::F32 => {
                    w.forward(&x2.to_dtype(DType::F32)?)?.to_dtype(x.dtype())?
                }
                QMatMul::QTensor(_) => w.forward(&x2)?,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => {
                    let (m, n) = (x2.dim(0)?, t.dim(0)?);
                    let m2 = stable_rows(m, n);
                    if m2 > m {
                        let pad = Tensor::zeros((m2 - m, in_dim), x2.dtype(), x2.device())?;
                        w.forward(&Tensor::cat(&[&x2, &pad], 0)?)?.narrow(0, 0, m)?
                    } else {
                        w.forward(&x2)?
                    }
                }
            },
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = y.dim(1)?;
        Ok(y.reshape(out_dims)?)
    }
}

/// The rows to compute an (m, in) · (in, n) product at so that gemm 0.19 takes its blocked
/// kernel: with one row it takes `gemv`, and with m·n <= 256 (x and the weight's rows both
/// contiguous along `in`) its horizontal dot-product kernels, which sum in another order (rows
/// of an m = 1 product differed from the same rows of m = 2..200 by up to 5e-5 at in = 576;
/// every m >= 2 past the horizontal limit agreed bit for bit). Zero rows are added so that a
/// KV-cache session's one-token steps give the bits of the windowed forward
/// (`tests/kv_cache.rs`).
fn stable_rows(m: usize, n: usize) -> usize {
    let horizontal = super::attention_cpu::GEMM_HORIZONTAL_MAX_OUTPUTS;
    if m >= 2 && m * n > horizontal {
        m
    } else {
        m.max(2).max(horizontal / n.max(1) + 1)
    }
}
