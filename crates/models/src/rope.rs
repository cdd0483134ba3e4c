//! Rotary position embeddings, shared by every architecture. Frequencies and tables are computed in
//! f32 (as transformers does) and cast to the activation dtype afterwards.

use candle_core::{DType, Device, Tensor};

use crate::config::{DecoderConfig, RopeLayout, RopeScaling};
use crate::error::Result;

#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// (rope_dim / 2,) inverse frequencies, f32.
    inv_freq: Vec<f32>,
    layout: RopeLayout,
}

/// cos/sin tables for one forward pass: (T, rope_dim / 2) each, in the activation dtype.
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
    layout: RopeLayout,
}

impl RotaryEmbedding {
    /// `freq_factors` (llama.cpp `rope_freqs`) divide the frequencies when present.
    pub fn new(cfg: &DecoderConfig, freq_factors: Option<&[f32]>) -> Self {
        let dim = cfg.rope_dim;
        // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in f32.
        let mut inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0f32 / (cfg.rope_theta as f32).powf(i as f32 / dim as f32))
            .collect();
        if let RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } = cfg.rope_scaling
        {
            inv_freq = llama3_inv_freq(
                &inv_freq,
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
                original_max_position_embeddings as f32,
            );
        }
        if let Some(ff) = freq_factors {
            for (f, d) in inv_freq.iter_mut().zip(ff) {
                *f /= *d;
            }
        }
        Self {
            inv_freq,
            layout: cfg.rope_layout,
        }
    }

    /// Tables for positions `0..seq_len`.
    pub fn tables(&self, seq_len: usize, dtype: DType, device: &Device) -> Result<RopeTables> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq_len * half);
        let mut sin = Vec::with_capacity(seq_len * half);
        for p in 0..seq_len {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (seq_len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (seq_len, half), device)?.to_dtype(dtype)?;
        Ok(RopeTables {
            cos,
            sin,
            layout: self.layout,
        })
    }
}

impl RopeTables {
    /// x: (B, H, T, D) -> rotated, same shape.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let out = match self.layout {
            RopeLayout::Half => candle_nn::rotary_emb::rope(&x, &self.cos, &self.sin)?,
            RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(&x, &self.cos, &self.sin)?,
        };
        Ok(out)
    }
}

/// Port of transformers' `_compute_llama3_parameters`.
fn llama3_inv_freq(
    inv_freq: &[f32],
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    old_context_len: f32,
) -> Vec<f32> {
    let low_freq_wavelen = old_context_len / low_freq_factor;
    let high_freq_wavelen = old_context_len / high_freq_factor;
    inv_freq
        .iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
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
                (1.0 - smooth) * scaled / factor + smooth * scaled
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
