//! The three normalizations ([`NormKind`]): RMSNorm, Gemma's RMSNorm with `(1 + w)`, and
//! LayerNorm with bias. All normalize over the last dimension.

use candle_core::{DType, Tensor};

use crate::arch::Role;
use crate::config::NormKind;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct Norm {
    /// The multiplier as applied: for [`NormKind::RmsOnePlus`] already `1 + w` (computed in f32,
    /// as transformers' `Gemma3RMSNorm` does, then cast to the model dtype).
    weight: Tensor,
    /// LayerNorm only.
    bias: Option<Tensor>,
    eps: f32,
    kind: NormKind,
}

impl Norm {
    pub fn load(vb: &Weights, role: Role, dim: usize, kind: NormKind, eps: f64) -> Result<Self> {
        let weight = match kind {
            NormKind::RmsOnePlus => {
                (vb.get_f32(&[dim], role, "weight")? + 1.0)?.to_dtype(vb.dtype())?
            }
            NormKind::Rms | NormKind::LayerNorm => vb.get(&[dim], role, "weight")?,
        };
        let bias = match kind {
            NormKind::LayerNorm => Some(vb.get(&[dim], role, "bias")?),
            NormKind::Rms | NormKind::RmsOnePlus => None,
        };
        Ok(Self {
            weight,
            bias,
            eps: eps as f32,
            kind,
        })
    }

    /// The multiplier as applied (see [`Self::weight`]), for the llama.cpp-order path.
    pub fn weight_f32(&self) -> Result<Vec<f32>> {
        Ok(self.weight.to_dtype(DType::F32)?.to_vec1()?)
    }

    pub fn eps(&self) -> f32 {
        self.eps
    }

    pub fn kind(&self) -> NormKind {
        self.kind
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        // candle's fused kernels have no f64 variant; the composed ones are exact in f64.
        let f64 = x.dtype() == DType::F64;
        Ok(match &self.bias {
            None if f64 => candle_nn::ops::rms_norm_slow(&x, &self.weight, self.eps)?,
            None => candle_nn::ops::rms_norm(&x, &self.weight, self.eps)?,
            Some(b) if f64 => candle_nn::ops::layer_norm_slow(&x, &self.weight, b, self.eps)?,
            Some(b) => candle_nn::ops::layer_norm(&x, &self.weight, b, self.eps)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Each kind against its formula written out in f64 loops.
    #[test]
    fn norms_match_their_formulas() {
        let dev = Device::Cpu;
        let (rows, dim) = (3, 40);
        let x: Vec<f64> = (0..rows * dim)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 17.0)
            .collect();
        let w: Vec<f64> = (0..dim).map(|i| 0.5 + (i % 7) as f64 / 10.0).collect();
        let b: Vec<f64> = (0..dim).map(|i| (i % 5) as f64 / 10.0 - 0.2).collect();
        let eps = 1e-5;
        for kind in [NormKind::Rms, NormKind::RmsOnePlus, NormKind::LayerNorm] {
            let want: Vec<f64> = x
                .chunks(dim)
                .flat_map(|r| {
                    let n = dim as f64;
                    let mean = if kind == NormKind::LayerNorm {
                        r.iter().sum::<f64>() / n
                    } else {
                        0.0
                    };
                    let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                    let s = 1.0 / (var + eps).sqrt();
                    r.iter()
                        .enumerate()
                        .map(|(i, v)| match kind {
                            NormKind::Rms => v * s * w[i],
                            NormKind::RmsOnePlus => v * s * (1.0 + w[i]),
                            NormKind::LayerNorm => (v - mean) * s * w[i] + b[i],
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            let weight = match kind {
                NormKind::RmsOnePlus => w.iter().map(|w| 1.0 + w).collect(),
                _ => w.clone(),
            };
            for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
                let norm = Norm {
                    weight: Tensor::new(weight.as_slice(), &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap(),
                    bias: (kind == NormKind::LayerNorm).then(|| {
                        Tensor::new(b.as_slice(), &dev)
                            .unwrap()
                            .to_dtype(dtype)
                            .unwrap()
                    }),
                    eps: eps as f32,
                    kind,
                };
                let xt = Tensor::from_vec(x.clone(), (rows, dim), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let got: Vec<f64> = norm
                    .forward(&xt)
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let worst = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst <= tol, "{kind:?} {dtype:?}: max |diff| {worst:e}");
            }
        }
    }
}
