//! Rotary position embeddings, shared by every architecture: full or partial (the first `dim`
//! dimensions of each head rotate, the rest pass through), llama3, linear and LongRoPE scaling.
//! Frequencies and tables are computed in f32 (as transformers does) and cast to the activation
//! dtype afterwards — except for f64 models, whose tables are computed in f64 so that
//! `--dtype f64` is float64 throughout.

use candle_core::{DType, Device, Tensor};
use num_traits::{Float, FloatConst};

use crate::config::{RopeConfig, RopeLayout, RopeScaling};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// (rope_dim / 2,) inverse frequencies, f32.
    inv_freq: Vec<f32>,
    /// The same frequencies computed in f64, for f64 models.
    inv_freq_f64: Vec<f64>,
    /// LongRoPE: the frequencies for sequences longer than this many positions, and the
    /// factor cos and sin are multiplied by (both sets).
    long: Option<LongFreqs>,
    layout: RopeLayout,
}

#[derive(Debug, Clone)]
struct LongFreqs {
    after: usize,
    inv_freq: Vec<f32>,
    inv_freq_f64: Vec<f64>,
    attention_factor: f64,
}

/// cos/sin tables for one forward pass: (T, rope_dim / 2) each, in the activation dtype.
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
    /// (heads, cos, sin) tables repeated once per head for [`Self::apply_thd`] (interleaved
    /// layout), made on first use and shared by every layer of the forward pass.
    per_position: std::sync::Mutex<Vec<(usize, Tensor, Tensor)>>,
}

impl RotaryEmbedding {
    /// `freq_factors` (llama.cpp `rope_freqs`) divide the frequencies when present.
    pub fn new(cfg: &RopeConfig, freq_factors: Option<&[f32]>) -> Self {
        let long = match &cfg.scaling {
            RopeScaling::LongRope {
                long_factor,
                original_max_position_embeddings,
                attention_factor,
                ..
            } => Some(LongFreqs {
                after: *original_max_position_embeddings,
                inv_freq: inverse_frequencies::<f32>(cfg, Some(long_factor), freq_factors),
                inv_freq_f64: inverse_frequencies::<f64>(cfg, Some(long_factor), freq_factors),
                attention_factor: *attention_factor,
            }),
            _ => None,
        };
        let short = match &cfg.scaling {
            RopeScaling::LongRope { short_factor, .. } => Some(short_factor.as_slice()),
            _ => None,
        };
        Self {
            inv_freq: inverse_frequencies::<f32>(cfg, short, freq_factors),
            inv_freq_f64: inverse_frequencies::<f64>(cfg, short, freq_factors),
            long,
            layout: cfg.layout,
        }
    }

    /// Tables for positions `0..seq_len`. LongRoPE picks its frequencies by `seq_len`, as
    /// transformers does by the largest position of the batch.
    pub fn tables(&self, seq_len: usize, dtype: DType, device: &Device) -> Result<RopeTables> {
        let (inv, inv64, factor) = match &self.long {
            Some(l) if seq_len > l.after => {
                (&l.inv_freq, &l.inv_freq_f64, Some(l.attention_factor))
            }
            Some(l) => (&self.inv_freq, &self.inv_freq_f64, Some(l.attention_factor)),
            None => (&self.inv_freq, &self.inv_freq_f64, None),
        };
        let (mut cos, mut sin) = if dtype == DType::F64 {
            cos_sin(inv64, seq_len, device)?
        } else {
            cos_sin(inv, seq_len, device)?
        };
        if let Some(f) = factor {
            // transformers: `emb.cos() * attention_scaling` in f32 (f64 for f64 models)
            cos = (cos * f)?;
            sin = (sin * f)?;
        }
        let (cos, sin) = (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?);
        Ok(RopeTables {
            cos,
            sin,
            layout: self.layout,
            per_position: Default::default(),
        })
    }
}

impl RopeTables {
    /// The tables of positions `start..start + len` only (incremental decoding: the new tokens'
    /// positions; the same values as the rows of the full tables).
    pub fn rows(&self, start: usize, len: usize) -> Result<RopeTables> {
        Ok(RopeTables {
            cos: self.cos.narrow(0, start, len)?.contiguous()?,
            sin: self.sin.narrow(0, start, len)?.contiguous()?,
            layout: self.layout,
            per_position: Default::default(),
        })
    }

    /// x: (B, T, H, D), contiguous -> rotated, same shape: the layout the projections write, so
    /// no transposed copy is needed. Same arithmetic as [`Self::apply`]: `rope_thd` is candle's
    /// half-layout kernel for this layout; for the interleaved layout each position's H·D values
    /// are one row of pairs, rotated by the (T, D/2) table repeated once per head.
    pub fn apply_thd(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h, d) = x.dims4()?;
        let rot = self.rotated_dims();
        if rot < d {
            // partial rotary: the first `rot` dimensions rotate, the rest pass through
            let r = self.apply_thd(&x.narrow(3, 0, rot)?)?;
            return Ok(Tensor::cat(&[&r, &x.narrow(3, rot, d - rot)?], 3)?);
        }
        let x = x.contiguous()?;
        let out = match self.layout {
            RopeLayout::Half => candle_nn::rotary_emb::rope_thd(&x, &self.cos, &self.sin)?,
            RopeLayout::Interleaved => {
                let (cos, sin) = self.repeated(h)?;
                let x = x.reshape((b, 1, t, h * d))?;
                candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?.reshape((b, t, h, d))?
            }
        };
        Ok(out)
    }

    /// The (T, D/2) tables repeated `heads` times along the last dimension.
    fn repeated(&self, heads: usize) -> Result<(Tensor, Tensor)> {
        let mut made = self
            .per_position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, cos, sin)) = made.iter().find(|(h, _, _)| *h == heads) {
            return Ok((cos.clone(), sin.clone()));
        }
        let (cos, sin) = (self.cos.repeat((1, heads))?, self.sin.repeat((1, heads))?);
        made.push((heads, cos.clone(), sin.clone()));
        Ok((cos, sin))
    }

    /// Dimensions of each head that rotate.
    fn rotated_dims(&self) -> usize {
        2 * self.cos.dim(1).unwrap_or(0)
    }

    /// x: (B, H, T, D) -> rotated, same shape.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(3)?;
        let rot = self.rotated_dims();
        if rot < d {
            let r = self.apply(&x.narrow(3, 0, rot)?)?;
            return Ok(Tensor::cat(&[&r, &x.narrow(3, rot, d - rot)?], 3)?);
        }
        let x = x.contiguous()?;
        let out = match self.layout {
            RopeLayout::Half => candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin)?,
            RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin)?,
        };
        Ok(out)
    }
}

/// transformers' `1 / base ** (arange(0, dim, 2) / dim)` (`1 / (ext · base ** ...)` with
/// LongRoPE's `ext` factors), llama3- or linear-scaled, and divided by llama.cpp's `rope_freqs`
/// where present, in the float type `F`.
fn inverse_frequencies<F: Float + FloatConst>(
    cfg: &RopeConfig,
    ext_factors: Option<&[f64]>,
    freq_factors: Option<&[f32]>,
) -> Vec<F> {
    let f = |x: f64| F::from(x).expect("a float type holds f64 constants");
    let dim = cfg.dim;
    let base = f(cfg.theta);
    let mut inv_freq: Vec<F> = (0..dim)
        .step_by(2)
        .enumerate()
        .map(|(j, i)| {
            let ext = ext_factors
                .and_then(|e| e.get(j))
                .map_or(F::one(), |&e| f(e));
            F::one() / (ext * base.powf(f(i as f64) / f(dim as f64)))
        })
        .collect();
    if let RopeScaling::Linear { factor } = cfg.scaling {
        for x in &mut inv_freq {
            *x = *x / f(factor);
        }
    }
    if let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    } = cfg.scaling
    {
        inv_freq = llama3_inv_freq(
            &inv_freq,
            f(factor),
            f(low_freq_factor),
            f(high_freq_factor),
            f(original_max_position_embeddings as f64),
        );
    }
    if let Some(ff) = freq_factors {
        for (x, d) in inv_freq.iter_mut().zip(ff) {
            *x = *x / f(f64::from(*d));
        }
    }
    inv_freq
}

/// (seq_len, half) cos and sin of `position * inv_freq`, computed in `F`.
fn cos_sin<F: Float + candle_core::WithDType>(
    inv_freq: &[F],
    seq_len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(seq_len * half);
    let mut sin = Vec::with_capacity(seq_len * half);
    for p in 0..seq_len {
        let p = F::from(p).expect("positions fit any float type");
        for &f in inv_freq {
            let angle = p * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (seq_len, half), device)?,
        Tensor::from_vec(sin, (seq_len, half), device)?,
    ))
}

/// Port of transformers' `_compute_llama3_parameters`.
fn llama3_inv_freq<F: Float + FloatConst>(
    inv_freq: &[F],
    factor: F,
    low_freq_factor: F,
    high_freq_factor: F,
    old_context_len: F,
) -> Vec<F> {
    let low_freq_wavelen = old_context_len / low_freq_factor;
    let high_freq_wavelen = old_context_len / high_freq_factor;
    let two = F::one() + F::one();
    inv_freq
        .iter()
        .map(|&f| {
            let wavelen = two * F::PI() / f;
            let scaled = if wavelen > low_freq_wavelen {
                f / factor
            } else {
                f
            };
            // wavelengths are finite and positive, so "not < and not >" is ">= and <=".
            let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
            if is_medium {
                let smooth = (old_context_len / wavelen - low_freq_factor)
                    / (high_freq_factor - low_freq_factor);
                (F::one() - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let inv: Vec<f32> = (0..8)
            .map(|i| 1.0 / 500000f32.powf(2.0 * i as f32 / 16.0))
            .collect();
        let out = llama3_inv_freq(&inv, 8.0, 1.0, 4.0, 64.0);
        // highest frequency: wavelength 2*pi < 16 -> unchanged
        assert_eq!(out[0], inv[0]);
        // lowest frequency: wavelength huge -> divided by factor
        assert!((out[7] - inv[7] / 8.0).abs() < 1e-12);
    }

    #[test]
    fn half_and_interleaved_layouts_agree_up_to_permutation() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, t, d) = (1, 2, 5, 8);
        let x = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev)?;
        let rope = RotaryEmbedding {
            inv_freq: (0..d / 2)
                .map(|i| 1.0 / 100f32.powf(2.0 * i as f32 / d as f32))
                .collect(),
            inv_freq_f64: Vec::new(),
            long: None,
            layout: RopeLayout::Half,
        };
        let half = rope.tables(t, DType::F32, &dev)?.apply(&x)?;
        // Permute the half layout [x0..x3, x4..x7] into the interleaved [x0, x4, x1, x5, ...].
        let perm: Vec<u32> = (0..d / 2)
            .flat_map(|i| [i as u32, (i + d / 2) as u32])
            .collect();
        let perm = Tensor::new(perm.as_slice(), &dev)?;
        let xi = x.index_select(&perm, 3)?;
        let inter = RotaryEmbedding {
            layout: RopeLayout::Interleaved,
            ..rope
        }
        .tables(t, DType::F32, &dev)?
        .apply(&xi)?;
        let diff = (half.index_select(&perm, 3)? - inter)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }
}
