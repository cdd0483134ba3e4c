//! Quantized weight types beyond ggml_cpu's Q4_1 / Q8_0, multiplied in ggml's x86 (AVX2) order
//! of operations, one file per family:
//! - `q8k`: Q8_K activation quantization (the `vec_dot_type` of every K-quant);
//! - `k_quants`: Q4_K, Q6_K weights;
//! - `legacy`: the 32-value types that llama.cpp multiplies with llamafile's `tinyBLAS_Q0_AVX`
//!   (Q5_0): converted to signed 8-bit blocks, they run ggml_cpu's Q8_0 kernel, whose float
//!   order is that very tinyBLAS loop.
//!
//! Each kernel's results are independent of threading and tiling: every output element is one
//! fixed sequence of float operations (see the kernel docs for which ggml function it mirrors).

pub mod k_quants;
pub mod legacy;
pub mod q8k;

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

use k_quants::{Q4KBlock, Q6KBlock, TiledBlock};
pub use q8k::Q8KRows;
use q8k::QK_K;

/// A K-quant weight (n, k), unpacked for the kernels; the values are the GGUF ones.
pub(crate) enum KPacked {
    Q4K(Vec<Q4KBlock>),
    Q6K(Vec<Q6KBlock>),
    Q2K(Vec<TiledBlock>),
    Q3K(Vec<TiledBlock>),
    Q5K(Vec<TiledBlock>),
}

impl KPacked {
    pub(crate) fn supports(dtype: GgmlDType) -> bool {
        matches!(
            dtype,
            GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K
        )
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            KPacked::Q4K(_) => "Q4_K",
            KPacked::Q6K(_) => "Q6_K",
            KPacked::Q2K(_) => "Q2_K",
            KPacked::Q3K(_) => "Q3_K",
            KPacked::Q5K(_) => "Q5_K",
        }
    }

    /// From the GGUF bytes of an (n, k) tensor; None when k is not whole super-blocks or the
    /// data is short.
    pub(crate) fn from_bytes(dtype: GgmlDType, data: &[u8], n: usize, k: usize) -> Option<Self> {
        if k % QK_K != 0 {
            return None;
        }
        let blocks = n * (k / QK_K);
        fn take<T>(data: &[u8], size: usize, blocks: usize, f: fn(&[u8]) -> T) -> Option<Vec<T>> {
            (data.len() >= size * blocks)
                .then(|| data.chunks_exact(size).take(blocks).map(f).collect())
        }
        Some(match dtype {
            GgmlDType::Q4K => {
                KPacked::Q4K(take(data, Q4KBlock::BYTES, blocks, Q4KBlock::from_bytes)?)
            }
            GgmlDType::Q6K => {
                KPacked::Q6K(take(data, Q6KBlock::BYTES, blocks, Q6KBlock::from_bytes)?)
            }
            GgmlDType::Q2K => KPacked::Q2K(take(
                data,
                TiledBlock::Q2K_BYTES,
                blocks,
                TiledBlock::from_q2k,
            )?),
            GgmlDType::Q3K => KPacked::Q3K(take(
                data,
                TiledBlock::Q3K_BYTES,
                blocks,
                TiledBlock::from_q3k,
            )?),
            GgmlDType::Q5K => KPacked::Q5K(take(
                data,
                TiledBlock::Q5K_BYTES,
                blocks,
                TiledBlock::from_q5k,
            )?),
            _ => return None,
        })
    }

    /// Row `r` dequantized as ggml's `dequantize_row_*` does.
    pub(crate) fn dequantize_row(&self, r: usize, k: usize, out: &mut [f32]) {
        let kb = k / QK_K;
        let blocks = r * kb..(r + 1) * kb;
        match self {
            KPacked::Q4K(w) => {
                for (o, b) in out.chunks_exact_mut(QK_K).zip(&w[blocks]) {
                    b.dequantize(o);
                }
            }
            KPacked::Q6K(w) => {
                for (o, b) in out.chunks_exact_mut(QK_K).zip(&w[blocks]) {
                    b.dequantize(o);
                }
            }
            KPacked::Q2K(w) | KPacked::Q3K(w) | KPacked::Q5K(w) => {
                let (sub, has_min) = match self {
                    KPacked::Q5K(_) => (32, true),
                    KPacked::Q2K(_) => (16, true),
                    _ => (16, false),
                };
                for (o, b) in out.chunks_exact_mut(QK_K).zip(&w[blocks]) {
                    b.dequantize(sub, has_min, o);
                }
            }
        }
    }

    /// Row `r`'s per-value magnitudes of the terms the kernels round (see the tests' bound).
    #[cfg(test)]
    fn magnitudes_row(&self, r: usize, k: usize) -> Vec<f64> {
        let kb = k / QK_K;
        let mut out = vec![0f64; k];
        for (b, o) in out.chunks_exact_mut(QK_K).enumerate() {
            let i = r * kb + b;
            match self {
                KPacked::Q4K(w) => w[i].magnitudes(o),
                KPacked::Q6K(w) => w[i].magnitudes(o),
                KPacked::Q5K(w) => w[i].magnitudes(32, o),
                KPacked::Q2K(w) | KPacked::Q3K(w) => w[i].magnitudes(16, o),
            }
        }
        out
    }

    /// Whether llama.cpp on AVX2 repacks this weight (`ggml_repack_get_optimal_repack_type`:
    /// Q4_K with a multiple of 8 output rows), which decides both the kernel and the activation
    /// quantizer.
    fn repacked(&self, n: usize) -> bool {
        matches!(self, KPacked::Q4K(_)) && n % 8 == 0
    }

    /// x: (m, k) row-major -> (m, n) row-major, activations quantized to Q8_K as ggml does for
    /// this weight.
    pub(crate) fn forward(&self, x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let repacked = self.repacked(n);
        let a = q8k::quantize_rows(x, m, k, repacked);
        self.forward_quantized(&a, m, n, k)
    }

    pub(crate) fn forward_quantized(&self, a: &Q8KRows, m: usize, n: usize, k: usize) -> Vec<f32> {
        let kb = k / QK_K;
        let repacked = self.repacked(n);
        let grouped = m - m % 4;
        // ggml_compute_forward_mul_mat_tiled takes non-repacked K-quants from 8 rows on
        // (`ggml_tiled_min_batch`).
        let tiled = m >= 8;
        par_matmul(m, n, |j, r, out| {
            for (i, o) in out.iter_mut().enumerate() {
                let r = r + i;
                *o = match self {
                    KPacked::Q4K(w) => {
                        let w = &w[j * kb..(j + 1) * kb];
                        if repacked && r < grouped {
                            kernels::q4k_gemm(w, a, r)
                        } else if repacked {
                            kernels::q4k_gemv(w, a, r)
                        } else if tiled {
                            kernels::q4k_tiled(w, a, r)
                        } else {
                            kernels::q4k_vec(w, a, r)
                        }
                    }
                    KPacked::Q6K(w) => {
                        let w = &w[j * kb..(j + 1) * kb];
                        if tiled {
                            kernels::q6k_tiled(w, a, r)
                        } else {
                            kernels::q6k(w, a, r)
                        }
                    }
                    // Below 8 rows ggml uses these types' `vec_dot`s, whose lane order is not
                    // reproduced here (the tiled order is used for any row count; perplexity runs
                    // always have more than 8 rows).
                    KPacked::Q2K(w) => kernels::q2k_tiled(&w[j * kb..(j + 1) * kb], a, r),
                    KPacked::Q3K(w) => kernels::q3k_tiled(&w[j * kb..(j + 1) * kb], a, r),
                    KPacked::Q5K(w) => kernels::q5k_tiled(&w[j * kb..(j + 1) * kb], a, r),
                };
            }
        })
    }
}

/// The kernels compiled for AVX2+FMA when the CPU has them (the integer loops vectorize and
/// `mul_add` becomes one instruction instead of a libm call); same results either way.
mod kernels {
    use super::k_quants::{self, Q4KBlock, Q6KBlock, TiledBlock};
    use super::Q8KRows;

    macro_rules! dispatch {
        ($name:ident, $avx:ident, $f:path, $w:ty) => {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $avx(w: &[$w], a: &Q8KRows, r: usize) -> f32 {
                $f(w, a, r)
            }
            pub(super) fn $name(w: &[$w], a: &Q8KRows, r: usize) -> f32 {
                #[cfg(target_arch = "x86_64")]
                if crate::ggml_cpu::use_avx2() {
                    // SAFETY: AVX2 and FMA were detected at run time.
                    return unsafe { $avx(w, a, r) };
                }
                $f(w, a, r)
            }
        };
    }
    dispatch!(q4k_gemm, q4k_gemm_avx2, k_quants::dot_q4k_gemm, Q4KBlock);
    dispatch!(q4k_gemv, q4k_gemv_avx2, k_quants::dot_q4k_gemv, Q4KBlock);
    dispatch!(q4k_vec, q4k_vec_avx2, k_quants::dot_q4k_vec, Q4KBlock);
    dispatch!(q6k, q6k_avx2, k_quants::dot_q6k, Q6KBlock);
    dispatch!(q4k_tiled, q4k_tiled_avx2, k_quants::dot_q4k_tiled, Q4KBlock);
    dispatch!(q6k_tiled, q6k_tiled_avx2, k_quants::dot_q6k_tiled, Q6KBlock);
    dispatch!(
        q2k_tiled,
        q2k_tiled_avx2,
        k_quants::dot_tiled::<16, true>,
        TiledBlock
    );
    dispatch!(
        q3k_tiled,
        q3k_tiled_avx2,
        k_quants::dot_tiled::<16, false>,
        TiledBlock
    );
    dispatch!(
        q5k_tiled,
        q5k_tiled_avx2,
        k_quants::dot_tiled::<32, true>,
        TiledBlock
    );
}

/// (m, n) output, `f(j, r0, out)` filling `out[i]` = weight row j · activation row r0+i for a
/// few consecutive rows. Many rows: tiles of rows in parallel, each streaming all weight rows
/// (the activation tile stays in cache); few rows: tiles of columns.
pub(crate) fn par_matmul(
    m: usize,
    n: usize,
    f: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    const ROWS: usize = 16;
    const DOT: usize = 4;
    let mut out = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let tile = |r0: usize, rows: usize, c0: usize, c1: usize, dst: &mut [f32], stride: usize| {
        let mut buf = [0f32; DOT];
        for j in c0..c1 {
            let mut r = 0;
            while r < rows {
                let cnt = (rows - r).min(DOT);
                f(j, r0 + r, &mut buf[..cnt]);
                for (i, v) in buf[..cnt].iter().enumerate() {
                    dst[(r + i) * stride + (j - c0)] = *v;
                }
                r += cnt;
            }
        }
    };
    if m >= 2 * ROWS {
        out.par_chunks_mut(ROWS * n).enumerate().for_each(|(t, o)| {
            let rows = o.len() / n;
            tile(t * ROWS, rows, 0, n, o, n)
        });
    } else {
        const COLS: usize = 32;
        let tiles: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(COLS))
            .into_par_iter()
            .map(|t| {
                let (c0, c1) = (t * COLS, ((t + 1) * COLS).min(n));
                let mut buf = vec![0f32; m * (c1 - c0)];
                tile(0, m, c0, c1, &mut buf, c1 - c0);
                (c0, buf)
            })
            .collect();
        for (c0, buf) in tiles {
            let w = buf.len() / m;
            for r in 0..m {
                out[r * n + c0..r * n + c0 + w].copy_from_slice(&buf[r * w..(r + 1) * w]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::lcg;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Every kernel flavor (gemm, gemv, tiled, vec_dot) equals the f64 dot of the dequantized
    /// weight row with the Q8_K activation row (`q·d` in f64) within the rounding bound of its
    /// float operations. The integer sums are exact; per super-block a kernel rounds at most 6
    /// f32 operations on the way to its accumulator (scale products, i32→f32 conversions, the
    /// fma), the accumulator takes `nb` fmas and a horizontal sum of ≤ 4 levels, and the f32
    /// dequantized reference rounds each value once more: first order, the error is at most
    /// (6 + nb + 4 + 1)·u·T with u = 2⁻²⁴ and T = Σ_i (|d·sc·q_i| + |dmin·m|)·|a_i|, the
    /// magnitudes before the min part cancels against the scale part. Asserted: twice that.
    #[test]
    fn k_kernels_match_f64_dot_of_dequantized_values() {
        let mut seed = 11u64;
        for (dt, n) in [
            (GgmlDType::Q4K, 8),
            (GgmlDType::Q4K, 6),
            (GgmlDType::Q6K, 8),
            (GgmlDType::Q2K, 8),
            (GgmlDType::Q3K, 8),
            (GgmlDType::Q5K, 8),
        ] {
            for m in [5, 9] {
                let k = 512;
                let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
                let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 3.0).collect();
                let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
                let q = QTensor::quantize(&wt, dt).unwrap();
                let packed = KPacked::from_bytes(dt, &q.data().unwrap(), n, k).unwrap();
                let deq: Vec<f32> = q
                    .dequantize(&Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let mut row = vec![0f32; k];
                for j in 0..n {
                    packed.dequantize_row(j, k, &mut row);
                    assert_eq!(row, deq[j * k..(j + 1) * k], "{dt:?} dequantize row {j}");
                }
                let a = q8k::quantize_rows(&x, m, k, packed.repacked(n));
                let ad: Vec<f64> =
                    a.qs.iter()
                        .zip(&a.d)
                        .flat_map(|(q, &d)| q.iter().map(move |&v| v as f64 * d as f64))
                        .collect();
                let y = packed.forward_quantized(&a, m, n, k);
                for r in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k).map(|i| deq[j * k + i] as f64 * ad[r * k + i]).sum();
                        let mags = packed.magnitudes_row(j, k);
                        let t: f64 = (0..k).map(|i| mags[i] * ad[r * k + i].abs()).sum();
                        let nb = (k / QK_K) as f64;
                        let u = f64::from(f32::EPSILON) / 2.0;
                        let bound = 2.0 * (6.0 + nb + 4.0 + 1.0) * u * t;
                        let got = y[r * n + j] as f64;
                        assert!(
                            (got - want).abs() <= bound,
                            "{dt:?} ({r},{j}): {got} vs {want}, bound {bound:e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn q5_0_unpacks_to_candles_values() {
        let mut seed = 5u64;
        let (n, k) = (4, 64);
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&wt, GgmlDType::Q5_0).unwrap();
        let g = crate::ggml_cpu::GgmlMatMul::from_qtensor(&q)
            .unwrap()
            .unwrap();
        let deq: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut row = vec![0f32; k];
        for j in 0..n {
            g.dequantize_row(j, &mut row);
            assert_eq!(row, deq[j * k..(j + 1) * k], "row {j}");
        }
    }
}
