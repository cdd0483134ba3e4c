//! Quantized matmuls computed exactly like ggml's x86 CPU backend (the one llama.cpp runs).
//!
//! Why: with quantized weights ggml also quantizes every matmul's *activations* (to Q8_1 for Q4_1
//! weights, to Q8_0 for Q8_0 weights). Rounding to 8 bits is discontinuous, so any difference in
//! how that is done — candle rounds half away from zero, computes `1/d` instead of `127/amax`, and
//! forms the Q8_1 block sum `s` from the f16-rounded scale (`f16(sum)·f16(d)`) where ggml uses
//! `f16(d·sum)` with the f32 scale — flips a few quants per layer, and the flips cascade through
//! 30 layers: per-token NLLs then differ from llama.cpp's by as much as either differs from f32.
//! These kernels reproduce ggml's AVX2 code paths bit for bit:
//! - `quantize_row_q8_1` / `quantize_row_q8_0` (x86 `quants.c`, AVX2 branch);
//! - `ggml_vec_dot_q4_1_q8_1` (x86, AVX2): 8 float lanes, each `fma(d_w·d_a, Σ4 int products)`,
//!   reduced as `hsum_float_8`, plus the `Σ fma(m_w, s_a)` term accumulated in order;
//! - llamafile's `tinyBLAS_Q0_AVX` for Q8_0×Q8_0 (used by ggml for multi-row Q8_0 matmuls): the
//!   same 8-lane accumulation without the min term.
//!
//! Results are identical whatever the threading or blocking, since every output element is one
//! fixed sequence of float operations.

#![allow(clippy::needless_range_loop)] // lane-indexed kernels mirror the SIMD code

use std::sync::OnceLock;

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

use crate::error::Result;
use crate::quant::{legacy, KPacked};

pub(crate) const QK: usize = 32;

/// Whether a quantized weight of this type on this device runs ggml's kernel (`GgmlMatMul`)
/// rather than candle's quantized matmul.
pub(crate) fn runs_ggml_kernel(dtype: GgmlDType, device: &candle_core::Device) -> bool {
    device.is_cpu() && GgmlMatMul::supports(dtype) && !candle_qmatmul_forced()
}

/// `SURPRISAL_CANDLE_QMATMUL=1` keeps candle's own quantized kernels (for comparisons).
fn candle_qmatmul_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var("SURPRISAL_CANDLE_QMATMUL").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

/// Activation rows quantized like ggml's `quantize_row_q8_1` / `quantize_row_q8_0`: the quants
/// and scales of both are the same, Q8_1 adds the block sums. One quantization can feed every
/// projection that reads the same input (q, k, v; gate, up), as long as it has the sums when one
/// of them needs them.
pub struct QuantRows {
    /// `rows * kb` blocks.
    qs: Vec<[i8; QK]>,
    /// The f16 scale, as f32.
    d: Vec<f32>,
    /// Q8_1 only: the f16 `d * Σq`, as f32.
    s: Vec<f32>,
}

/// [`quantize_block`] compiled for AVX2: without SSE4.1 the baseline x86_64 target turns
/// `round_ties_even` into a call to libm's `rintf` per value (8 % of a quantized run's CPU time in a
/// profile); with it, a `vroundps`. Same results.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_block_avx2(x: &[f32]) -> ([i8; QK], f32, i32) {
    quantize_block(x)
}

fn quantize_block_fast(x: &[f32]) -> ([i8; QK], f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
        return unsafe { quantize_block_avx2(x) };
    }
    quantize_block(x)
}

/// One block of 32 values: (quants, f32 scale before f16 rounding, Σ quants).
#[inline(always)]
fn quantize_block(x: &[f32]) -> ([i8; QK], f32, i32) {
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; QK];
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        // _mm256_round_ps(_MM_ROUND_NEAREST) then the saturating packs.
        let r = (v * id).round_ties_even();
        let i = if r.is_nan() {
            -128
        } else {
            r.clamp(-128.0, 127.0) as i32
        };
        sum += i;
        *q = i as i8;
    }
    (q, d, sum)
}

/// Quantizes `rows` activation rows of width `k` (a multiple of 32); `with_sum` adds Q8_1's block
/// sums (see [`GgmlMatMul::needs_sums`]).
pub fn quantize_rows(x: &[f32], rows: usize, k: usize, with_sum: bool) -> QuantRows {
    let kb = k / QK;
    let n = rows * kb;
    let mut qs = vec![[0i8; QK]; n];
    let mut d = vec![0f32; n];
    let mut s = if with_sum { vec![0f32; n] } else { Vec::new() };
    let work = |(r, (qs, d)): (usize, (&mut [[i8; QK]], &mut [f32])), s: Option<&mut [f32]>| {
        let x = &x[r * k..(r + 1) * k];
        let mut s = s;
        for b in 0..kb {
            let (q, db, sum) = quantize_block_fast(&x[b * QK..(b + 1) * QK]);
            qs[b] = q;
            d[b] = f16::from_f32(db).to_f32();
            if let Some(s) = s.as_deref_mut() {
                s[b] = f16::from_f32(db * sum as f32).to_f32();
            }
        }
    };
    if with_sum {
        qs.par_chunks_mut(kb)
            .zip(d.par_chunks_mut(kb))
            .zip(s.par_chunks_mut(kb))
            .enumerate()
            .with_min_len(16)
            .for_each(|(r, ((qs, d), s))| work((r, (qs, d)), Some(s)));
    } else {
        qs.par_chunks_mut(kb)
            .zip(d.par_chunks_mut(kb))
            .enumerate()
            .with_min_len(16)
            .for_each(|(r, (qs, d))| work((r, (qs, d)), None));
    }
    QuantRows { qs, d, s }
}

/// Weights in a layout convenient for the kernels; the values are exactly the GGUF ones.
enum Packed {
    /// Q4_1: per block 16 bytes of nibbles, f32 scale and min.
    Q4_1 {
        qs: Vec<[u8; QK / 2]>,
        d: Vec<f32>,
        m: Vec<f32>,
    },
    /// Q8_0: per block 32 quants and the f32 scale. Also the other types llama.cpp multiplies
    /// with the same tinyBLAS loop (Q5_0, see `quant::legacy`), `src` naming the GGUF type.
    Q8_0 {
        qs: Vec<[i8; QK]>,
        d: Vec<f32>,
        src: GgmlDType,
    },
    /// K-quants (`quant::k_quants`), with their Q8_K activations.
    K(KPacked),
}

/// A (n, k) quantized weight multiplied exactly like ggml does on x86 CPUs.
pub struct GgmlMatMul {
    n: usize,
    k: usize,
    w: Packed,
}

impl std::fmt::Debug for GgmlMatMul {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = match &self.w {
            Packed::Q4_1 { .. } => "Q4_1".to_string(),
            Packed::Q8_0 { src, .. } => crate::gguf::ggml_name(*src),
            Packed::K(k) => k.name().to_string(),
        };
        write!(f, "GgmlMatMul({t}, n={}, k={})", self.n, self.k)
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

impl GgmlMatMul {
    /// The ggml-exact kernel for this weight, if there is one (Q4_1, Q8_0, Q5_0 with k a
    /// multiple of 32; the K-quants of `quant` with k a multiple of 256).
    pub fn supports(dtype: GgmlDType) -> bool {
        matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q8_0 | GgmlDType::Q5_0)
            || KPacked::supports(dtype)
    }

    pub fn from_qtensor(q: &QTensor) -> Result<Option<Self>> {
        let (n, k) = q.shape().dims2()?;
        if !Self::supports(q.dtype()) || k % QK != 0 {
            return Ok(None);
        }
        let data = q.data()?;
        if KPacked::supports(q.dtype()) {
            return match KPacked::from_bytes(q.dtype(), &data, n, k) {
                Some(w) => Ok(Some(Self {
                    n,
                    k,
                    w: Packed::K(w),
                })),
                None if k % crate::quant::q8k::QK_K != 0 => Ok(None),
                None => Err(candle_core::Error::Msg(format!(
                    "quantized tensor too short for ({n}, {k})"
                ))
                .into()),
            };
        }
        let kb = k / QK;
        let w = match q.dtype() {
            GgmlDType::Q4_1 => {
                const B: usize = 20;
                let blocks = data.chunks_exact(B).take(n * kb);
                let mut qs = Vec::with_capacity(n * kb);
                let mut d = Vec::with_capacity(n * kb);
                let mut m = Vec::with_capacity(n * kb);
                for b in blocks {
                    d.push(f16_at(b, 0));
                    m.push(f16_at(b, 2));
                    let mut q = [0u8; QK / 2];
                    q.copy_from_slice(&b[4..20]);
                    qs.push(q);
                }
                Packed::Q4_1 { qs, d, m }
            }
            GgmlDType::Q8_0 => {
                const B: usize = 34;
                let blocks = data.chunks_exact(B).take(n * kb);
                let mut qs = Vec::with_capacity(n * kb);
                let mut d = Vec::with_capacity(n * kb);
                for b in blocks {
                    d.push(f16_at(b, 0));
                    let mut q = [0i8; QK];
                    for (q, &v) in q.iter_mut().zip(&b[2..34]) {
                        *q = v as i8;
                    }
                    qs.push(q);
                }
                Packed::Q8_0 {
                    qs,
                    d,
                    src: GgmlDType::Q8_0,
                }
            }
            GgmlDType::Q5_0 => {
                let blocks = data.chunks_exact(legacy::Q5_0_BYTES).take(n * kb);
                let (qs, d) = blocks.map(legacy::q5_0_block).unzip();
                Packed::Q8_0 {
                    qs,
                    d,
                    src: GgmlDType::Q5_0,
                }
            }
            _ => return Ok(None),
        };
        let len = match &w {
            Packed::Q4_1 { d, .. } | Packed::Q8_0 { d, .. } => d.len(),
            Packed::K(_) => unreachable!("returned above"),
        };
        if len != n * kb {
            return Err(candle_core::Error::Msg(format!(
                "quantized tensor too short: {len} blocks for ({n}, {k})"
            ))
            .into());
        }
        Ok(Some(Self { n, k, w }))
    }

    pub fn out_dim(&self) -> usize {
        self.n
    }

    /// Row `r` of the weight as f32, computed as candle's (and ggml's `get_rows`) dequantization
    /// does: `q·d + m` (Q4_1), `q·d` (Q8_0). Lets a quantized token embedding be looked up without
    /// a dequantized (vocab × hidden) f32 copy of it.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let kb = self.k / QK;
        let blocks = r * kb..(r + 1) * kb;
        match &self.w {
            Packed::Q4_1 { qs, d, m } => {
                for (o, b) in out.chunks_exact_mut(QK).zip(blocks) {
                    let (d, m) = (d[b], m[b]);
                    for (j, &q) in qs[b].iter().enumerate() {
                        o[j] = f32::from(q & 0x0F) * d + m;
                        o[j + QK / 2] = f32::from(q >> 4) * d + m;
                    }
                }
            }
            Packed::K(w) => w.dequantize_row(r, self.k, out),
            Packed::Q8_0 { qs, d, .. } => {
                for (o, b) in out.chunks_exact_mut(QK).zip(blocks) {
                    for (o, &q) in o.iter_mut().zip(&qs[b]) {
                        *o = f32::from(q) * d[b];
                    }
                }
            }
        }
    }

    pub fn in_dim(&self) -> usize {
        self.k
    }

    /// Whether the activations must be quantized with Q8_1's block sums (Q4_1 weights).
    pub fn needs_sums(&self) -> bool {
        matches!(self.w, Packed::Q4_1 { .. })
    }

    /// Whether the activations are quantized to Q8_0/Q8_1 ([`quantize_rows`], which
    /// [`Self::forward_quantized`] takes); false: Q8_K, quantized inside [`Self::forward`].
    pub fn takes_q8_0(&self) -> bool {
        !matches!(self.w, Packed::K(_))
    }

    /// x: (m, k) row-major f32 -> (m, n) row-major f32.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "activation length");
        if let Packed::K(w) = &self.w {
            return w.forward(x, m, self.n, self.k);
        }
        self.forward_quantized(&quantize_rows(x, m, self.k, self.needs_sums()), m)
    }

    /// The product with activations already quantized by [`quantize_rows`] (m rows of width k,
    /// with sums if [`Self::needs_sums`]).
    pub fn forward_quantized(&self, a: &QuantRows, m: usize) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        assert!(self.takes_q8_0(), "K-quants take Q8_K activations");
        let kb = k / QK;
        assert_eq!(a.d.len(), m * kb, "quantized activation length");
        assert!(
            !self.needs_sums() || a.s.len() == m * kb,
            "Q4_1 needs the Q8_1 block sums"
        );
        let mut out = vec![0f32; m * n];
        if m == 0 || n == 0 {
            return out;
        }
        let simd = use_avx2();
        // One task = ROWS activation rows against every weight row; the quantized activation
        // tile stays in cache while the weights stream through. Few rows: split the columns.
        const ROWS: usize = 32;
        let rows_tile = |r0: usize, out_rows: &mut [f32]| {
            let rows = out_rows.len() / n;
            for j in 0..n {
                let mut r = 0;
                while r < rows {
                    let cnt = (rows - r).min(DOT_ROWS);
                    let mut res = [0f32; DOT_ROWS];
                    self.dot_rows(simd, j, a, kb, r0 + r, cnt, &mut res);
                    for (i, v) in res[..cnt].iter().enumerate() {
                        out_rows[(r + i) * n + j] = *v;
                    }
                    r += cnt;
                }
            }
        };
        if m >= 2 * ROWS {
            out.par_chunks_mut(ROWS * n)
                .enumerate()
                .for_each(|(t, o)| rows_tile(t * ROWS, o));
        } else {
            // Column split: compute (m, cols) tiles into scratch then scatter.
            const COLS: usize = 64;
            let tiles: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(COLS))
                .into_par_iter()
                .map(|t| {
                    let (c0, c1) = (t * COLS, ((t + 1) * COLS).min(n));
                    let mut tile = vec![0f32; m * (c1 - c0)];
                    for j in c0..c1 {
                        let mut r = 0;
                        while r < m {
                            let cnt = (m - r).min(DOT_ROWS);
                            let mut res = [0f32; DOT_ROWS];
                            self.dot_rows(simd, j, a, kb, r, cnt, &mut res);
                            for (i, v) in res[..cnt].iter().enumerate() {
                                tile[(r + i) * (c1 - c0) + (j - c0)] = *v;
                            }
                            r += cnt;
                        }
                    }
                    (c0, tile)
                })
                .collect();
            for (c0, tile) in tiles {
                let w = tile.len() / m;
                for r in 0..m {
                    out[r * n + c0..r * n + c0 + w].copy_from_slice(&tile[r * w..(r + 1) * w]);
                }
            }
        }
        out
    }

    /// Weight row `j` against activation rows `r0..r0+cnt` (cnt ≤ DOT_ROWS).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn dot_rows(
        &self,
        simd: bool,
        j: usize,
        a: &QuantRows,
        kb: usize,
        r0: usize,
        cnt: usize,
        res: &mut [f32; DOT_ROWS],
    ) {
        let wr = j * kb..(j + 1) * kb;
        let ar = |i: usize| (r0 + i) * kb..(r0 + i + 1) * kb;
        match &self.w {
            Packed::Q4_1 { qs, d, m } => {
                let (wq, wd, wm) = (&qs[wr.clone()], &d[wr.clone()], &m[wr]);
                #[cfg(target_arch = "x86_64")]
                if simd && cnt == DOT_ROWS {
                    let rows = r0 * kb..(r0 + DOT_ROWS) * kb;
                    let (aq, ad, as_) = (&a.qs[rows.clone()], &a.d[rows.clone()], &a.s[rows]);
                    // SAFETY: `simd` means AVX2 and FMA were detected.
                    *res = unsafe { avx2::dot_q4_1_xn(wq, wd, wm, aq, ad, as_) };
                    return;
                }
                for i in 0..cnt {
                    let (aq, ad, as_) = (&a.qs[ar(i)], &a.d[ar(i)], &a.s[ar(i)]);
                    res[i] = if simd {
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            avx2::dot_q4_1_xn::<1>(wq, wd, wm, aq, ad, as_)[0]
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        unreachable!()
                    } else {
                        scalar::dot_q4_1(wq, wd, wm, aq, ad, as_)
                    };
                }
            }
            Packed::K(_) => unreachable!("K-quants take Q8_K activations"),
            Packed::Q8_0 { qs, d, .. } => {
                let (wq, wd) = (&qs[wr.clone()], &d[wr]);
                #[cfg(target_arch = "x86_64")]
                if simd && cnt == DOT_ROWS {
                    let rows = r0 * kb..(r0 + DOT_ROWS) * kb;
                    // SAFETY: `simd` means AVX2 and FMA were detected.
                    *res = unsafe { avx2::dot_q8_0_xn(wq, wd, &a.qs[rows.clone()], &a.d[rows]) };
                    return;
                }
                for i in 0..cnt {
                    let (aq, ad) = (&a.qs[ar(i)], &a.d[ar(i)]);
                    res[i] = if simd {
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            avx2::dot_q8_0_xn::<1>(wq, wd, aq, ad)[0]
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        unreachable!()
                    } else {
                        scalar::dot_q8_0(wq, wd, aq, ad)
                    };
                }
            }
        }
    }
}

/// Activation rows per call of the multi-row dot kernels (`dot_q4_1_xn`, `dot_q8_0_xn`).
const DOT_ROWS: usize = 8;

pub(crate) fn use_avx2() -> bool {
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Portable versions, bit-identical to the AVX2 ones (same lanes, same fma/add order).
mod scalar {
    use super::QK;

    /// ggml's `hsum_float_8`: (hi + lo) halves, then [0]+[2], [1]+[3], then the two.
    #[inline]
    pub(super) fn hsum8(v: [f32; 8]) -> f32 {
        let r: [f32; 4] = std::array::from_fn(|i| v[i + 4] + v[i]);
        let a = r[0] + r[2];
        let b = r[1] + r[3];
        a + b
    }

    #[inline]
    fn lanes(x: &[i8; QK], y: &[i8; QK]) -> [f32; 8] {
        std::array::from_fn(|l| {
            (0..4)
                .map(|t| x[4 * l + t] as i32 * y[4 * l + t] as i32)
                .sum::<i32>() as f32
        })
    }

    pub(super) fn dot_q4_1(
        wq: &[[u8; QK / 2]],
        wd: &[f32],
        wm: &[f32],
        aq: &[[i8; QK]],
        ad: &[f32],
        as_: &[f32],
    ) -> f32 {
        let mut acc = [0f32; 8];
        let mut summs = 0f32;
        for b in 0..wq.len() {
            summs = wm[b].mul_add(as_[b], summs);
            let d = wd[b] * ad[b];
            let mut x = [0i8; QK];
            for j in 0..QK / 2 {
                x[j] = (wq[b][j] & 0x0F) as i8;
                x[j + QK / 2] = (wq[b][j] >> 4) as i8;
            }
            let xy = lanes(&x, &aq[b]);
            for l in 0..8 {
                acc[l] = d.mul_add(xy[l], acc[l]);
            }
        }
        hsum8(acc) + summs
    }

    pub(super) fn dot_q8_0(wq: &[[i8; QK]], wd: &[f32], aq: &[[i8; QK]], ad: &[f32]) -> f32 {
        let mut acc = [0f32; 8];
        for b in 0..wq.len() {
            let d = wd[b] * ad[b];
            let xy = lanes(&wq[b], &aq[b]);
            for l in 0..8 {
                acc[l] = d.mul_add(xy[l], acc[l]);
            }
        }
        hsum8(acc)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::QK;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum8(x: __m256) -> f32 {
        let r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// Σ over 4 consecutive bytes of u8·i8 products, per i32 lane, as f32 (exact).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn updot(u: __m256i, s: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_madd_epi16(
            _mm256_set1_epi16(1),
            _mm256_maddubs_epi16(u, s),
        ))
    }

    /// ggml's Q4_1 × Q8_1 dot of one weight row against N activation rows at once (N = 1 is
    /// the plain dot): the weight block is unpacked once, and the N independent accumulator
    /// chains hide the FMA latency that bounds a single dot. Each row's operations and their
    /// order do not depend on N, so every row's result has the same bits as `scalar::dot_q4_1`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q4_1_xn<const N: usize>(
        wq: &[[u8; QK / 2]],
        wd: &[f32],
        wm: &[f32],
        aq: &[[i8; QK]],
        ad: &[f32],
        as_: &[f32],
    ) -> [f32; N] {
        // the N activation rows lie one after the other: row i is blocks i*kb..(i+1)*kb
        let kb = wq.len();
        assert!(aq.len() == N * kb && ad.len() == N * kb && as_.len() == N * kb);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut summs = [0f32; N];
        let mask = _mm256_set1_epi8(0x0F);
        for b in 0..kb {
            let raw = unsafe { _mm_loadu_si128(wq[b].as_ptr() as *const __m128i) };
            let x = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), mask);
            for i in 0..N {
                let ab = i * kb + b;
                summs[i] = wm[b].mul_add(as_[ab], summs[i]);
                let d = _mm256_set1_ps(wd[b] * ad[ab]);
                let y = unsafe { _mm256_loadu_si256(aq[ab].as_ptr() as *const __m256i) };
                acc[i] = _mm256_fmadd_ps(d, updot(x, y), acc[i]);
            }
        }
        let mut out = [0f32; N];
        for i in 0..N {
            out[i] = hsum8(acc[i]) + summs[i];
        }
        out
    }

    /// ggml's Q8_0 × Q8_0 dot against N activation rows at once (see `dot_q4_1_xn`).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_q8_0_xn<const N: usize>(
        wq: &[[i8; QK]],
        wd: &[f32],
        aq: &[[i8; QK]],
        ad: &[f32],
    ) -> [f32; N] {
        let kb = wq.len();
        assert!(aq.len() == N * kb && ad.len() == N * kb);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..kb {
            let x = unsafe { _mm256_loadu_si256(wq[b].as_ptr() as *const __m256i) };
            let ux = _mm256_sign_epi8(x, x);
            for i in 0..N {
                let ab = i * kb + b;
                let d = _mm256_set1_ps(wd[b] * ad[ab]);
                let y = unsafe { _mm256_loadu_si256(aq[ab].as_ptr() as *const __m256i) };
                acc[i] = _mm256_fmadd_ps(d, updot(ux, _mm256_sign_epi8(y, x)), acc[i]);
            }
        }
        let mut out = [0f32; N];
        for i in 0..N {
            out[i] = hsum8(acc[i]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::lcg;

    #[test]
    fn quantize_matches_ggml_semantics() {
        // ties round to even, scale is 127/amax, s = f16(d * Σq)
        let mut x = [0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        let (q, d, sum) = quantize_block(&x);
        assert_eq!(d, 1.0);
        assert_eq!(&q[..4], &[127, 2, -4, 0]);
        assert_eq!(sum, 125);
    }

    #[test]
    fn avx2_and_scalar_agree_bit_for_bit() {
        if !use_avx2() {
            return;
        }
        let mut seed = 7u64;
        let (n, k, m) = (8, 128, 11);
        let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 3.0).collect();
        let wt = candle_core::Tensor::from_vec(w, (n, k), &candle_core::Device::Cpu).unwrap();
        for dt in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&wt, dt).unwrap();
            let mm = GgmlMatMul::from_qtensor(&q).unwrap().unwrap();
            let a = quantize_rows(&x, m, k, dt == GgmlDType::Q4_1);
            for j in 0..n {
                for r in 0..m {
                    let mut s = [0f32; DOT_ROWS];
                    let mut v = [0f32; DOT_ROWS];
                    mm.dot_rows(false, j, &a, k / QK, r, 1, &mut s);
                    mm.dot_rows(true, j, &a, k / QK, r, 1, &mut v);
                    assert_eq!(s[0].to_bits(), v[0].to_bits(), "{dt:?} ({r},{j})");
                }
                // the multi-row kernel gives each row the single-row bits
                for r in 0..=m - DOT_ROWS {
                    let mut s = [0f32; DOT_ROWS];
                    let mut v = [0f32; DOT_ROWS];
                    mm.dot_rows(false, j, &a, k / QK, r, DOT_ROWS, &mut s);
                    mm.dot_rows(true, j, &a, k / QK, r, DOT_ROWS, &mut v);
                    assert_eq!(
                        s.map(f32::to_bits),
                        v.map(f32::to_bits),
                        "{dt:?} x{DOT_ROWS} ({r},{j})"
                    );
                }
            }
            // and the whole matmul is close to the dequantized one
            let y = mm.forward(&x, m);
            let deq = q.dequantize(&candle_core::Device::Cpu).unwrap();
            let xt = candle_core::Tensor::from_vec(x.clone(), (m, k), &candle_core::Device::Cpu)
                .unwrap();
            let want: Vec<f32> = xt
                .matmul(&deq.t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // The only difference is the activations' 8-bit quantization: steps of amax/127
            // (≤ 3/127), error uniform within ±half a step (σ ≈ 0.0068) against weights of mean
            // square ≤ 1/3 over k = 128 terms: σ ≈ 0.044 per output; 5σ ≈ 0.22.
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 0.25, "{dt:?}: {a} vs {b}");
            }
        }
    }
}
