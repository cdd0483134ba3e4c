//! Activation rows quantized to Q8_K (256 values per block, f32 scale, 16-value sums), the
//! `vec_dot_type` of every K-quant weight, as ggml does it on x86.
//!
//! ggml has two Q8_K quantizers that differ in one rule, and which one a row goes through depends
//! on the weight type and on the row's position:
//! - `quantize_row_q8_K_ref` (`ggml-quants.c`, the `from_float` of Q8_K): the scale is
//!   `-127 / max`, `max` the *first* value of largest magnitude;
//! - `ggml_quantize_mat_q8_K_4x8` (`arch/x86/repack.cpp`, AVX2), used for the rows of a repacked
//!   (Q4_K on AVX2) weight's matmul in complete groups of four: the scale is `-127 / amax` when
//!   `+amax` occurs anywhere in the block, `127 / amax` otherwise.
//!
//! They disagree only on a block holding both `+amax` and `-amax` with the negative first; both
//! are reproduced ([`Flavor`]).

use rayon::prelude::*;

pub(crate) const QK_K: usize = 256;

/// Which of ggml's two Q8_K quantizers a row goes through (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `quantize_row_q8_K_ref`.
    Ref,
    /// `ggml_quantize_mat_q8_K_4x8` (AVX2).
    Mat4x8,
}

/// `rows` activation rows of width `k` (a multiple of 256) in Q8_K.
pub struct Q8KRows {
    /// Blocks per row.
    pub(crate) kb: usize,
    pub(crate) qs: Vec<[i8; QK_K]>,
    pub(crate) d: Vec<f32>,
    /// Σ of the quants of each 16 values (ggml's `bsums`).
    pub(crate) bsums: Vec<[i16; 16]>,
}

/// One block, as either quantizer does it: (quants, d, bsums).
pub(crate) fn quantize_block(x: &[f32], flavor: Flavor) -> ([i8; QK_K], f32, [i16; 16]) {
    let mut q = [0i8; QK_K];
    let mut bsums = [0i16; 16];
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in x {
        let a = v.abs();
        if a > amax {
            amax = a;
            max = v;
        }
    }
    if amax == 0.0 {
        return (q, 0.0, bsums);
    }
    let iscale = match flavor {
        Flavor::Ref => -127.0 / max,
        Flavor::Mat4x8 => {
            if x.contains(&amax) {
                -127.0 / amax
            } else {
                127.0 / amax
            }
        }
    };
    for (q, &v) in q.iter_mut().zip(x) {
        // nearest_int (ties to even) / _mm256_round_ps, then MIN(127, v) / the saturating packs.
        *q = (v * iscale).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    for (s, c) in bsums.iter_mut().zip(q.chunks_exact(16)) {
        *s = c.iter().map(|&v| v as i16).sum();
    }
    (q, 1.0 / iscale, bsums)
}

/// Quantizes `rows` rows of width `k`. `repacked`: the rows feed a repacked weight's matmul
/// (ggml's `forward_mul_mat` in `repack.cpp`), whose complete groups of four rows go through
/// [`Flavor::Mat4x8`] and whose last `rows % 4` through [`Flavor::Ref`]; otherwise every row goes
/// through [`Flavor::Ref`].
pub fn quantize_rows(x: &[f32], rows: usize, k: usize, repacked: bool) -> Q8KRows {
    assert_eq!(k % QK_K, 0, "Q8_K rows are whole blocks");
    assert_eq!(x.len(), rows * k, "activation length");
    let kb = k / QK_K;
    let n = rows * kb;
    let mut qs = vec![[0i8; QK_K]; n];
    let mut d = vec![0f32; n];
    let mut bsums = vec![[0i16; 16]; n];
    let grouped = if repacked { rows - rows % 4 } else { 0 };
    qs.par_chunks_mut(kb.max(1))
        .zip(d.par_chunks_mut(kb.max(1)))
        .zip(bsums.par_chunks_mut(kb.max(1)))
        .enumerate()
        .with_min_len(8)
        .for_each(|(r, ((qs, d), bs))| {
            let flavor = if r < grouped {
                Flavor::Mat4x8
            } else {
                Flavor::Ref
            };
            let x = &x[r * k..(r + 1) * k];
            for b in 0..kb {
                let (q, db, s) = quantize_block(&x[b * QK_K..(b + 1) * QK_K], flavor);
                qs[b] = q;
                d[b] = db;
                bs[b] = s;
            }
        });
    Q8KRows { kb, qs, d, bsums }
}

impl Q8KRows {
    /// The dequantized value `d·q` of each entry, row-major (for tests and references).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.qs.len() * QK_K);
        for (q, d) in self.qs.iter().zip(&self.d) {
            out.extend(q.iter().map(|&v| v as f32 * d));
        }
        out
    }

    pub fn rows(&self) -> usize {
        self.qs.len() / self.kb.max(1)
    }
}
