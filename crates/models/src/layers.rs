//! Small building blocks: projections (dense or quantized), RMSNorm, the SwiGLU MLP.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::Result;
use crate::ggml_cpu::GgmlMatMul;
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
    /// For quantized weights on the CPU with a ggml-exact kernel (Q4_1, Q8_0): used instead of
    /// candle's quantized matmul, so the results are llama.cpp's (see `ggml_cpu`). The candle
    /// `QTensor` it was packed from is dropped: keeping both would hold the weights twice.
    Ggml(Arc<GgmlMatMul>),
}

/// Whether a quantized weight of this type on this device runs ggml's kernel (`GgmlMatMul`)
/// rather than candle's quantized matmul.
pub(crate) fn runs_ggml_kernel(dtype: GgmlDType, device: &Device) -> bool {
    device.is_cpu() && GgmlMatMul::supports(dtype) && !candle_qmatmul_forced()
}

/// `SURPRISAL_CANDLE_QMATMUL=1` keeps candle's own quantized kernels (for comparisons).
fn candle_qmatmul_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var("SURPRISAL_CANDLE_QMATMUL").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

impl Linear {
    pub fn load(vb: &Weights, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.matmul((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias")?)
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
        let ggml =
            ggml.filter(|g| g.windows(2).all(|w| w[0].in_dim() == w[1].in_dim()) && !g.is_empty());
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
                _ => w.forward(&x2)?,
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

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(vb: &Weights, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(&[dim], "weight")?,
            eps: eps as f32,
        })
    }

    pub fn weight_f32(&self) -> Result<Vec<f32>> {
        Ok(self.weight.to_dtype(DType::F32)?.to_vec1()?)
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }

    /// Normalizes over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        // candle's fused kernel has no f64 variant; the composed one is exact in f64.
        if x.dtype() == DType::F64 {
            return Ok(candle_nn::ops::rms_norm_slow(&x, &self.weight, self.eps)?);
        }
        Ok(candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?)
    }
}

/// down(silu(gate(x)) * up(x))
#[derive(Debug, Clone)]
pub struct Mlp {
    pub(crate) gate_proj: Linear,
    pub(crate) up_proj: Linear,
    pub(crate) down_proj: Linear,
}

impl Mlp {
    pub fn load(vb: &Weights, hidden: usize, intermediate: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::load(&vb.pp("gate_proj"), hidden, intermediate, bias)?,
            up_proj: Linear::load(&vb.pp("up_proj"), hidden, intermediate, bias)?,
            down_proj: Linear::load(&vb.pp("down_proj"), intermediate, hidden, bias)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(x)?;
        let up = self.up_proj.forward(x)?;
        let act = if gate.device().is_cpu() && matches!(gate.dtype(), DType::F32 | DType::F64) {
            gate.inplace_op2(&up, &SwiGlu)?;
            gate
        } else {
            (candle_nn::ops::silu(&gate)? * up)?
        };
        self.down_proj.forward(&act)
    }
}

/// gate <- silu(gate) * up, in place on the CPU: candle's `silu(gate) * up` without its two
/// temporaries (same arithmetic, same bits).
struct SwiGlu;

impl SwiGlu {
    fn apply<T: num_traits::Float + Send + Sync>(gate: &mut [T], up: &[T]) {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 14;
        gate.par_chunks_mut(CHUNK)
            .zip(up.par_chunks(CHUNK))
            .for_each(|(g, u)| {
                for (g, &u) in g.iter_mut().zip(u) {
                    *g = *g / (T::one() + (-*g).exp()) * u;
                }
            });
    }
}

impl candle_core::InplaceOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        dst: &mut candle_core::CpuStorage,
        dst_l: &candle_core::Layout,
        src: &candle_core::CpuStorage,
        src_l: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use candle_core::CpuStorage;
        let (Some((d0, d1)), Some((s0, s1))) =
            (dst_l.contiguous_offsets(), src_l.contiguous_offsets())
        else {
            candle_core::bail!("swiglu: gate and up must be contiguous");
        };
        if d1 - d0 != s1 - s0 {
            candle_core::bail!("swiglu: gate has {} values, up {}", d1 - d0, s1 - s0);
        }
        match (dst, src) {
            (CpuStorage::F32(g), CpuStorage::F32(u)) => Self::apply(&mut g[d0..d1], &u[s0..s1]),
            (CpuStorage::F64(g), CpuStorage::F64(u)) => Self::apply(&mut g[d0..d1], &u[s0..s1]),
            _ => candle_core::bail!("swiglu: gate and up must both be f32 or both f64"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused op must give the bits of candle's `silu(gate) * up`, in f32 and f64.
    #[test]
    fn swiglu_equals_silu_times_up() {
        for dtype in [DType::F32, DType::F64] {
            let gate = Tensor::randn(0f32, 4.0, (3, 40_000), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let up = Tensor::randn(0f32, 1.0, (3, 40_000), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let want = (candle_nn::ops::silu(&gate).unwrap() * &up).unwrap();
            let got = gate.copy().unwrap();
            got.inplace_op2(&up, &SwiGlu).unwrap();
            let diff = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert_eq!(diff, 0.0, "{dtype:?}");
        }
    }
}
