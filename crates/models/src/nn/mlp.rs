//! The MLPs ([`MlpKind`]): gated (SwiGLU, GELU-tanh GeGLU) with separate or fused gate and up
//! projections, and the ungated GELU MLP.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use crate::arch::Role;
use crate::config::MlpKind;
use crate::error::Result;
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
                (
                    gu.narrow(last, 0, i)?.contiguous()?,
                    gu.narrow(last, i, i)?.contiguous()?,
                )
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
}
