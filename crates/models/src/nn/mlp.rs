//! The MLPs ([`MlpKind`]): gated (SwiGLU, GELU-tanh GeGLU) with separate or fused gate and up
//! projections, and the ungated GELU MLP.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use crate::config::MlpKind;
use crate::error::Result;
use crate::tensor_names::Role;
use crate::weights::Weights;

#[derive(Debug, Clone)]
pub struct Mlp {
    /// Gated MLPs: the gate projection, or None when `up` holds gate and up fused (gate first).
    pub(crate) gate: Option<Linear>,
    /// The up projection; `(2·intermediate, hidden)` when fused with the gate.
    pub(crate) up: Linear,
    pub(crate) down: Linear,
    pub(crate) kind: MlpKind,
    pub(crate) intermediate: usize,
}

impl Mlp {
    pub fn load(
        vb: &Weights,
        kind: MlpKind,
        hidden: usize,
        intermediate: usize,
        fused_gate_up: bool,
        bias: bool,
    ) -> Result<Self> {
        let gated = !matches!(kind, MlpKind::Gelu { .. });
        let (gate, up) = if gated && fused_gate_up {
            let up = Linear::load(vb, Role::FfnGateUp, hidden, 2 * intermediate, bias)?;
            (None, up)
        } else {
            let gate = if gated {
                Some(Linear::load(vb, Role::FfnGate, hidden, intermediate, bias)?)
            } else {
                None
            };
            (
                gate,
                Linear::load(vb, Role::FfnUp, hidden, intermediate, bias)?,
            )
        };
        Ok(Self {
            gate,
            up,
            down: Linear::load(vb, Role::FfnDown, intermediate, hidden, bias)?,
            kind,
            intermediate,
        })
    }

    /// Whether gate and up come from one fused projection.
    pub fn fused(&self) -> bool {
        self.gate.is_none() && !matches!(self.kind, MlpKind::Gelu { .. })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = match (&self.gate, self.kind) {
            (_, MlpKind::Gelu { tanh }) => {
                let h = self.up.forward(x)?;
                let h = if tanh { h.gelu()? } else { h.gelu_erf()? };
                return self.down.forward(&h);
            }
            (Some(g), _) => (g.forward(x)?, self.up.forward(x)?),
            (None, _) => {
                // (..., 2·I) -> gate (..., I), up (..., I)
                let gu = self.up.forward(x)?;
                let last = gu.rank() - 1;
                let i = self.intermediate;
                // With one position the halves are already contiguous views of `gu`; the gate
                // is written in place below, so it must own its storage.
                let gate = gu.narrow(last, 0, i)?;
                let gate = if gate.is_contiguous() {
                    gate.copy()?
                } else {
                    gate.contiguous()?
                };
                (gate, gu.narrow(last, i, i)?.contiguous()?)
            }
        };
        let act = match self.kind {
            MlpKind::SwiGlu
                if gate.device().is_cpu() && matches!(gate.dtype(), DType::F32 | DType::F64) =>
            {
                gate.inplace_op2(&up, &SwiGlu)?;
                gate
            }
            MlpKind::SwiGlu => (candle_nn::ops::silu(&gate)? * up)?,
            // transformers' `gelu_pytorch_tanh`; candle's `gelu` is the same tanh approximation.
            _ => (gate.gelu()? * up)?,
        };
        self.down.forward(&act)
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
    use candle_core::Device;

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

    /// The ungated GELU MLP (GPT-2's `gelu_new` = tanh form, GPT-NeoX's erf form) and the GeGLU
    /// against their formulas written out in f64.
    #[test]
    fn gelu_mlps_match_their_formulas() {
        let dev = Device::Cpu;
        let (hidden, inter) = (8, 12);
        let w = |rows: usize, cols: usize, seed: usize| -> Vec<f64> {
            (0..rows * cols)
                .map(|i| (((i + seed) * 7919 % 97) as f64 - 48.0) / 60.0)
                .collect()
        };
        let (wu, wg, wd) = (
            w(inter, hidden, 1),
            w(inter, hidden, 2),
            w(hidden, inter, 3),
        );
        let x: Vec<f64> = (0..2 * hidden).map(|i| (i as f64 - 7.5) / 4.0).collect();
        let lin = |v: &[f64], rows, cols| {
            Linear::from_qmatmul(candle_core::quantized::QMatMul::Tensor(
                Tensor::from_vec(v.to_vec(), (rows, cols), &dev).unwrap(),
            ))
            .unwrap()
        };
        let matvec = |m: &[f64], cols: usize, v: &[f64]| -> Vec<f64> {
            m.chunks(cols)
                .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
                .collect()
        };
        let gelu_tanh = |v: f64| {
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
        };
        // erf by its series (|v| is small here)
        let erf = |z: f64| {
            let mut term = z;
            let mut sum = z;
            for n in 1..60 {
                term *= -z * z / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        let gelu_erf = |v: f64| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2));
        for kind in [
            MlpKind::Gelu { tanh: true },
            MlpKind::Gelu { tanh: false },
            MlpKind::GeGluTanh,
        ] {
            let mlp = Mlp {
                gate: (kind == MlpKind::GeGluTanh).then(|| lin(&wg, inter, hidden)),
                up: lin(&wu, inter, hidden),
                down: lin(&wd, hidden, inter),
                kind,
                intermediate: inter,
            };
            let xt = Tensor::from_vec(x.clone(), (2, hidden), &dev).unwrap();
            let got: Vec<f64> = mlp
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let want: Vec<f64> = x
                .chunks(hidden)
                .flat_map(|xr| {
                    let up = matvec(&wu, hidden, xr);
                    let act: Vec<f64> = match kind {
                        MlpKind::Gelu { tanh: true } => up.iter().map(|&u| gelu_tanh(u)).collect(),
                        MlpKind::Gelu { tanh: false } => up.iter().map(|&u| gelu_erf(u)).collect(),
                        _ => {
                            let g = matvec(&wg, hidden, xr);
                            g.iter().zip(&up).map(|(&g, &u)| gelu_tanh(g) * u).collect()
                        }
                    };
                    matvec(&wd, inter, &act)
                })
                .collect();
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-9, "{kind:?}: max |diff| {worst:e}");
        }
    }
}
