//! The non-matmul ops of a block computed exactly like llama.cpp's CPU backend (ggml, x86,
//! AVX2/AVX-512 build), for quantized GGUF models: with activations re-quantized to 8 bits before
//! every matmul (see `ggml_cpu`), any 1-ulp difference anywhere can flip a quant and the flips
//! cascade, so "close to llama.cpp" requires "the same float operations as llama.cpp":
//! - RMSNorm (fused with the weight): Σx² in f64 of f32 squares, `1/sqrtf(mean + eps)`, `x·s·w`;
//! - RoPE: ggml's cache (`theta *= powf(base, -2/n_dims)` per pair, `cosf`/`sinf`), and the
//!   contracted rotation `fma(x0, cos, -(x1·sin))`, `fma(x0, sin, x1·cos)` (GCC fuses the first
//!   product of each expression);
//! - attention without flash-attn: K and V stored in the f16 KV cache, Q converted to f16 for the
//!   f16 K·Q matmul (llamafile tinyBLAS: 16 fma lanes and `_mm512_reduce_add_ps` on AVX-512
//!   builds, 8 lanes and the `_mm256` hsum on AVX2 builds), softmax with ggml's `ggml_v_expf` and
//!   an f64 sum of 16-wide (8-wide) partial sums, probabilities converted to f16 for the f16 V·P
//!   matmul (16 (8) lanes over keys);
//! - SwiGLU: `x / (1 + ggml_v_expf(-x)) · g`; GeGLU: ggml's f16 table of GELU-tanh, looked up
//!   by the f16-rounded input (`GGML_GELU_FP16`), times g.
//!
//! The block itself (which norms, which MLP, where the scale goes) is `decoder.rs`'s, driven by
//! the same [`crate::DecoderConfig`] as the candle path.
//!
//! Status: the default for quantized GGUF on the CPU (`SURPRISAL_LLAMA_CPP_OPS=0` opts out).
//! Over `datasets/sample.txt` (2,289 tokens) the per-token NLLs equal llama.cpp's (0c1e570, CPU,
//! no flash-attn) to 1e-13 (f64 log-softmax noise), and every intermediate tensor is bit-identical
//! (compare with `SURPRISAL_DUMP_DIR` and `scripts/references/dump_llamacpp_tensors.py`).

#![allow(clippy::needless_range_loop)] // lane-indexed kernels mirror the SIMD code

use half::f16;
use rayon::prelude::*;

/// Per-row fused RMSNorm × weight, ggml's `rms_norm` + `mul`.
pub fn rms_norm_mul(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let dim = w.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .with_min_len(64)
        .for_each(|(y, x)| {
            let mut sum = 0f64;
            for &v in x {
                sum += (v * v) as f64;
            }
            let mean = (sum / dim as f64) as f32;
            let scale = 1.0f32 / (mean + eps).sqrt();
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = x * scale * w;
            }
        });
    out
}

/// One RoPE of a forward pass: ggml's cache and how it is applied.
pub struct Rope {
    /// (cos, sin) per position and pair, see [`rope_cache`].
    pub cache: Vec<[f32; 2]>,
    /// Rotated dimensions of each head (the first ones; the rest pass through).
    pub n_dims: usize,
    /// Pairs (2i, 2i+1) (ggml's NORMAL mode, what Llama GGUFs use), else (i, i + n_dims/2) (NEOX).
    pub interleaved: bool,
}

/// ggml's rope cache for positions `0..t`: (cos, sin) per position and pair, with `freq_scale`
/// (linear scaling, 1 for none) as `rope_yarn` applies it without YaRN extrapolation.
pub fn rope_cache(
    t: usize,
    n_dims: usize,
    base: f32,
    freq_factors: Option<&[f32]>,
    freq_scale: f32,
) -> Vec<[f32; 2]> {
    let theta_scale = base.powf(-2.0f32 / n_dims as f32);
    let half = n_dims / 2;
    let mut out = Vec::with_capacity(t * half);
    for p in 0..t {
        let mut theta = p as f32;
        for i in 0..half {
            let ff = freq_factors.and_then(|f| f.get(i).copied()).unwrap_or(1.0);
            let th = freq_scale * (theta / ff);
            out.push([th.cos(), th.sin()]);
            theta *= theta_scale;
        }
    }
    out
}

/// Rotates x: (B, T, heads, D) in place.
pub fn rope_apply(x: &mut [f32], t: usize, heads: usize, d: usize, rope: &Rope) {
    rope_apply_at(x, t, heads, d, rope, 0)
}

/// [`rope_apply`] for positions `start..start + T` (incremental decoding; `rope.cache` must hold
/// them).
pub fn rope_apply_at(x: &mut [f32], t: usize, heads: usize, d: usize, rope: &Rope, start: usize) {
    let half = rope.n_dims / 2;
    let cache = &rope.cache;
    x.par_chunks_mut(d)
        .enumerate()
        .with_min_len(256)
        .for_each(|(row, v)| {
            let pos = start + (row / heads) % t;
            let c = &cache[pos * half..(pos + 1) * half];
            rotate_rows(&mut v[..rope.n_dims], c, half, rope.interleaved);
        });
}

fn rotate_rows(v: &mut [f32], c: &[[f32; 2]], half: usize, interleaved: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fma(v: &mut [f32], c: &[[f32; 2]], half: usize, interleaved: bool) {
            rotate(v, c, half, interleaved)
        }
        if has_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            return unsafe { fma(v, c, half, interleaved) };
        }
    }
    rotate(v, c, half, interleaved)
}

#[inline(always)]
fn rotate(v: &mut [f32], c: &[[f32; 2]], half: usize, interleaved: bool) {
    for (i, cs) in c.iter().enumerate() {
        let (i0, i1) = if interleaved {
            (2 * i, 2 * i + 1)
        } else {
            (i, i + half)
        };
        let (x0, x1) = (v[i0], v[i1]);
        let [cos, sin] = *cs;
        // GCC contracts `x0*cos - x1*sin` and `x0*sin + x1*cos` at their first product.
        v[i0] = x0.mul_add(cos, -(x1 * sin));
        v[i1] = x0.mul_add(sin, x1 * cos);
    }
}

fn has_fma() -> bool {
    static FMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FMA.get_or_init(|| {
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

const EXP_R: u32 = 0x4b40_0000; // 0x1.8p23
const EXP_LOG2E: u32 = 0x3fb8_aa3b; // 0x1.715476p+0
const EXP_LN2_LO: u32 = 0x35bf_be8e; // 0x1.7f7d1cp-20
const EXP_LN2_HI: u32 = 0x3f31_7200; // 0x1.62e4p-1
const EXP_C5: u32 = 0x3c07_2010; // 0x1.0e4020p-7
const EXP_C4: u32 = 0x3d2b_9f17; // 0x1.573e2ep-5
const EXP_C3: u32 = 0x3e2a_af33; // 0x1.555e66p-3
const EXP_C2: u32 = 0x3eff_fedb; // 0x1.fffdb6p-2
const EXP_C1: u32 = 0x3f7f_fff6; // 0x1.ffffecp-1

/// ggml's `ggml_v_expf` (AVX-512 variant), one lane.
#[inline(always)]
pub fn v_expf(x: f32) -> f32 {
    let f = f32::from_bits;
    let r = f(EXP_R);
    let z = x.mul_add(f(EXP_LOG2E), r);
    let n = z - r;
    let b = (-n).mul_add(f(EXP_LN2_LO), (-n).mul_add(f(EXP_LN2_HI), x));
    let u = b * b;
    let j = f(EXP_C5)
        .mul_add(b, f(EXP_C4))
        .mul_add(u, f(EXP_C3).mul_add(b, f(EXP_C2)))
        .mul_add(u, f(EXP_C1).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        // also catches n = ±inf / NaN comparisons the same way: NaN > 192 is false
        if n <= 0.0 {
            0.0
        } else {
            f32::INFINITY
        }
    } else {
        // _mm512_scalef_ps(j, n) = j · 2^n, one rounding (exact in f64, |n| ≤ 192 here)
        let two_n = f64::from_bits(((n as i64 + 1023) as u64) << 52);
        (j as f64 * two_n) as f32
    }
}

/// ggml's `ggml_v_expf` (AVX2 variant), one lane: a different evaluation from the AVX-512 one
/// (no `+1` in the polynomial, the result `fma(k, j, k)` with `k = 2^n` built from z's bits, and
/// its own scaling past |n| > 126), so the two differ by an ulp on some inputs. llama.cpp built
/// for an AVX2 host uses this one; with the AVX-512 one here, 30 % of Gemma-3's softmax rows at a
/// 512-token window differed from llama.cpp's by an ulp of their sum.
#[inline(always)]
pub fn v_expf_avx2(x: f32) -> f32 {
    let f = f32::from_bits;
    let r = f(EXP_R);
    let z = x.mul_add(f(EXP_LOG2E), r);
    let n = z - r;
    let b = (-n).mul_add(f(EXP_LN2_LO), (-n).mul_add(f(EXP_LN2_HI), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f(EXP_C5)
        .mul_add(b, f(EXP_C4))
        .mul_add(u, f(EXP_C3).mul_add(b, f(EXP_C2)))
        .mul_add(u, f(EXP_C1) * b);
    if n.abs() > 126.0 {
        let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
        let s1 = f(g.wrapping_add(0x7f00_0000));
        let s2 = f(e.wrapping_sub(g));
        if n.abs() > 192.0 {
            s1 * s1
        } else {
            s2.mul_add(j, s2) * s1
        }
    } else {
        k.mul_add(j, k)
    }
}

/// ggml's `ggml_v_expf` of the vector width llama.cpp was built with for this host (see
/// [`v_expf`], [`v_expf_avx2`]).
#[inline(always)]
fn ggml_expf<const L: usize>(x: f32) -> f32 {
    if L == 16 {
        v_expf(x)
    } else {
        v_expf_avx2(x)
    }
}

/// The environment variable that names which llama.cpp x86 build the llama.cpp-order ops
/// reproduce: `avx512` (16-lane sums, AVX-512 `ggml_v_expf`) or `avx2` (8 lanes). Unset: the build
/// `scripts/build_llama_cpp.sh` makes for this host (AVX-512F present or not). Either order runs
/// on any AVX2 host (the lanes are a summation order, emulated in plain code), so a test compares
/// with a reference made by either build whatever CPU it runs on.
pub const GGML_SIMD_ENV: &str = "SURPRISAL_GGML_SIMD";

/// Do the llama.cpp-order ops follow an AVX-512 build (16 lanes) rather than an AVX2 one (8)?
/// ([`GGML_SIMD_ENV`], else this host's build.)
pub fn follows_avx512_build() -> bool {
    wide_ggml()
}

fn wide_ggml() -> bool {
    static WIDE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIDE.get_or_init(|| match std::env::var(GGML_SIMD_ENV).as_deref() {
        Ok("avx512") => true,
        Ok("avx2") => false,
        Ok(other) => {
            tracing::warn!(
                "{GGML_SIMD_ENV}={other:?} is neither avx2 nor avx512: following this host's build"
            );
            host_avx512()
        }
        Err(_) => host_avx512(),
    })
}

#[cfg(target_arch = "x86_64")]
fn host_avx512() -> bool {
    has_avx512()
}

#[cfg(not(target_arch = "x86_64"))]
fn host_avx512() -> bool {
    false
}

/// `silu(gate) · up`, ggml's `ggml_vec_swiglu_f32` (AVX-512 lanes, or AVX2 lanes on AVX2 hosts).
pub fn swiglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; gate.len()];
    out.par_chunks_mut(4096)
        .zip(gate.par_chunks(4096).zip(up.par_chunks(4096)))
        .for_each(|(o, (g, u))| {
            swiglu_chunk(o, g, u);
        });
    out
}

fn swiglu_chunk(o: &mut [f32], g: &[f32], u: &[f32]) {
    #[inline(always)]
    fn run(o: &mut [f32], g: &[f32], u: &[f32]) {
        if wide_ggml() {
            for ((o, &x), &u) in o.iter_mut().zip(g).zip(u) {
                *o = x / (1.0 + v_expf(0.0 - x)) * u;
            }
        } else {
            for ((o, &x), &u) in o.iter_mut().zip(g).zip(u) {
                *o = x / (1.0 + v_expf_avx2(0.0 - x)) * u;
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fma(o: &mut [f32], g: &[f32], u: &[f32]) {
            run(o, g, u)
        }
        if has_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            return unsafe { fma(o, g, u) };
        }
    }
    run(o, g, u)
}

/// `gelu_tanh(gate) · up`, ggml's `ggml_vec_geglu_f32` (`GGML_GELU_FP16`: the GELU of the
/// f16-rounded input from a table of f16 values; 0 at or below -10, the identity at or above 10).
pub fn geglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    let table = gelu_f16_table();
    gate.par_iter()
        .zip(up.par_iter())
        .with_min_len(4096)
        .map(|(&x, &g)| {
            if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x * g
            } else {
                table[f16::from_f32(x).to_bits() as usize] * g
            }
        })
        .collect()
}

/// ggml's `ggml_table_gelu_f16`, as f32: for every f16 bit pattern, `ggml_gelu_f32` of its value
/// rounded to f16.
fn gelu_f16_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const GELU_COEF_A: f32 = 0.044715;
        #[allow(clippy::excessive_precision)] // ggml's literal, rounded to f32 as C rounds it
        const SQRT_2_OVER_PI: f32 = 0.797_884_560_802_865_355_879_892_119_868_76;
        (0..=u16::MAX)
            .map(|bits| {
                let x = f16::from_bits(bits).to_f32();
                // GCC contracts `1.0f + GELU_COEF_A*x*x` into one fma (seen in libggml-cpu.so's
                // ggml_cpu_init: vmulss then vfmadd213ss before tanhf); without it 9 of 32768
                // GeGLU outputs of Gemma-3's first layer differed from llama.cpp's by one f16 step.
                let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
                let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh());
                f16::from_f32(y).to_f32()
            })
            .collect()
    })
}

/// GCC's `_mm512_reduce_add_ps`.
#[inline(always)]
fn reduce16(v: &[f32; 16]) -> f32 {
    let t3: [f32; 8] = std::array::from_fn(|i| v[8 + i] + v[i]);
    let t6: [f32; 4] = std::array::from_fn(|i| t3[4 + i] + t3[i]);
    (t6[0] + t6[2]) + (t6[1] + t6[3])
}

fn round_f16(x: &[f32]) -> Vec<f32> {
    let mut out = x.to_vec();
    round_f16_in_place(&mut out);
    out
}

/// Rounds every value to the nearest f16 (ties to even) and back, as a store to and load from
/// llama.cpp's f16 tensors does: F16C eight at a time where the CPU has it (the same rounding
/// as `half`'s software path, which would otherwise dispatch per element).
fn round_f16_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_f16c() {
        // SAFETY: the CPU has F16C (checked at run time).
        unsafe { round_f16_f16c(x) };
        return;
    }
    for v in x {
        *v = f16::from_f32(*v).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
fn round_f16_f16c(x: &mut [f32]) {
    use std::arch::x86_64::*;
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 8 f32.
        unsafe {
            let v = _mm256_loadu_ps(c.as_ptr());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
    }
    for v in chunks.into_remainder() {
        *v = f16::from_f32(*v).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512.get_or_init(|| has_fma() && is_x86_feature_detected!("avx512f"))
}

#[cfg(target_arch = "x86_64")]
fn has_f16c() -> bool {
    static F16C: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *F16C.get_or_init(|| is_x86_feature_detected!("avx") && is_x86_feature_detected!("f16c"))
}

pub struct AttnShape {
    pub b: usize,
    /// Queries per batch row.
    pub t: usize,
    /// Keys before the first query (a KV cache): k and v hold `past + t` positions and query i
    /// sits at position `past + i`. 0 for a windowed forward.
    pub past: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub d: usize,
    /// Multiplies the (softcapped) K·Q scores: `kq_scale` of `ggml_soft_max_ext`.
    pub scale: f32,
    /// Scores become `cap · tanh(scores · (1/cap))` before the scale (Gemma-2).
    pub softcap: Option<f32>,
    pub sliding_window: Option<usize>,
}

/// q: (B, T, H·D), k/v: (B, past + T, KV·D), RoPE applied -> (B, T, H·D). Each query row is
/// computed on its own (its keys, in the same order, whatever T and `past`), so a query's output
/// does not depend on whether the earlier keys came from a cache.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], s: &AttnShape) -> Vec<f32> {
    let (b, t, h, kv, d) = (s.b, s.t, s.heads, s.kv_heads, s.d);
    let tk = s.past + t;
    assert!(d % 16 == 0, "head_dim must be a multiple of 16");
    assert_eq!(k.len(), b * tk * kv * d, "k must hold past + t positions");
    let q = round_f16(q);
    let k = round_f16(k);
    // V transposed per (batch row, kv head): (D, T padded to 16), f16-rounded, like llama.cpp's
    // transposed V cache; the padding is 0 (its probabilities are 0 too).
    let tp = tk.next_multiple_of(16);
    let v = round_f16(v);
    let mut vt = vec![0f32; b * kv * d * tp];
    for bi in 0..b {
        for j in 0..tk {
            for g in 0..kv {
                let src = &v[((bi * tk + j) * kv + g) * d..][..d];
                let base = (bi * kv + g) * d * tp;
                for (dd, &x) in src.iter().enumerate() {
                    vt[base + dd * tp + j] = x;
                }
            }
        }
    }
    let v = vt;
    // (b, head, query) work items, each producing D outputs.
    let mut out = vec![0f32; b * t * h * d];
    const QB: usize = 64;
    let items: Vec<(usize, usize, usize, usize)> = (0..b)
        .flat_map(|bi| (0..h).map(move |hi| (bi, hi)))
        .flat_map(|(bi, hi)| {
            (0..t.div_ceil(QB)).map(move |c| (bi, hi, c * QB, ((c + 1) * QB).min(t)))
        })
        .collect();
    let inputs = AttnInputs {
        q: &q,
        k: &k,
        vt: &v,
        s,
    };
    let results: Vec<((usize, usize, usize), Vec<f32>)> = items
        .into_par_iter()
        .map(|(bi, hi, i0, i1)| {
            let mut o = vec![0f32; (i1 - i0) * d];
            attend_rows(&inputs, bi, hi, i0, i1, &mut o);
            ((bi, hi, i0), o)
        })
        .collect();
    for ((bi, hi, i0), o) in results {
        for (r, row) in o.chunks(d).enumerate() {
            let i = i0 + r;
            let dst = ((bi * t + i) * h + hi) * d;
            out[dst..dst + d].copy_from_slice(row);
        }
    }
    out
}

/// What every (batch row, head, block of queries) task of [`attention`] reads: q (B, T, H·D), k
/// (B, T, KV·D), and V transposed per (batch row, kv head) to (D, T padded to 16), all f16-rounded.
struct AttnInputs<'a> {
    q: &'a [f32],
    k: &'a [f32],
    vt: &'a [f32],
    s: &'a AttnShape,
}

/// Queries `i0..i1` of head `hi` of batch row `bi` into `o` ((i1 − i0) × D), with the widest
/// vector instructions the CPU has, in the lane order of the llama.cpp build [`GGML_SIMD_ENV`] names
/// (same operations, so the same bits, on every path).
fn attend_rows(a: &AttnInputs, bi: usize, hi: usize, i0: usize, i1: usize, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fma(a: &AttnInputs, bi: usize, hi: usize, i0: usize, i1: usize, o: &mut [f32]) {
            // llama.cpp built for this AVX2 host (scripts/build_llama_cpp.sh names the host's
            // flags) runs tinyBLAS and the softmax 8 lanes wide; with 16 lanes here, Gemma-3's
            // K·Q scores differed from llama.cpp's dumps in ~30 % of entries by an ulp and
            // one (token, head) of layer 4's attention output by 5e-4.
            attend_rows_impl::<8>(a, bi, hi, i0, i1, o)
        }
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512(
            a: &AttnInputs,
            bi: usize,
            hi: usize,
            i0: usize,
            i1: usize,
            o: &mut [f32],
        ) {
            attend_rows_impl::<16>(a, bi, hi, i0, i1, o)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fma16(a: &AttnInputs, bi: usize, hi: usize, i0: usize, i1: usize, o: &mut [f32]) {
            attend_rows_impl::<16>(a, bi, hi, i0, i1, o)
        }
        let wide = wide_ggml();
        if wide && has_avx512() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked at run time).
            return unsafe { avx512(a, bi, hi, i0, i1, o) };
        }
        if has_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked at run time).
            return unsafe {
                if wide {
                    fma16(a, bi, hi, i0, i1, o)
                } else {
                    fma(a, bi, hi, i0, i1, o)
                }
            };
        }
    }
    if wide_ggml() {
        attend_rows_impl::<16>(a, bi, hi, i0, i1, o)
    } else {
        attend_rows_impl::<8>(a, bi, hi, i0, i1, o)
    }
}

/// ggml's horizontal sum of one vector of L lanes: `_mm512_reduce_add_ps` (16, AVX-512 builds) or
/// the `_mm256` hsum of tinyBLAS / `ggml_vec_soft_max_f32` (8, AVX2 builds).
#[inline(always)]
fn reduce_lanes<const L: usize>(v: &[f32; L]) -> f32 {
    if L == 16 {
        reduce16(v[..].try_into().expect("16 lanes"))
    } else {
        let r: [f32; 4] = std::array::from_fn(|i| v[i + 4] + v[i]);
        (r[0] + r[2]) + (r[1] + r[3])
    }
}

/// The L FMA lanes of q·k (over D, L at a time, as tinyBLAS's f16 GEMM) for the N keys
/// `j..j + N`, each key its own chain: N > 1 only interleaves independent chains.
#[inline(always)]
fn key_lanes<'a, const N: usize, const L: usize>(
    qi: &[f32],
    krow: impl Fn(usize) -> &'a [f32],
    j: usize,
) -> [[f32; L]; N] {
    let mut lanes = [[0f32; L]; N];
    for c in 0..qi.len() / L {
        let qc = &qi[c * L..][..L];
        for (u, lanes) in lanes.iter_mut().enumerate() {
            let kc = &krow(j + u)[c * L..][..L];
            for l in 0..L {
                lanes[l] = kc[l].mul_add(qc[l], lanes[l]);
            }
        }
    }
    lanes
}

/// L: ggml's vector width in floats (16 on AVX-512 builds, 8 on AVX2 builds).
#[inline(always)]
fn attend_rows_impl<const L: usize>(
    a: &AttnInputs,
    bi: usize,
    hi: usize,
    i0: usize,
    i1: usize,
    o: &mut [f32],
) {
    let AttnInputs { q, k, vt: v, s } = *a;
    let (t, h, kv, d) = (s.t, s.heads, s.kv_heads, s.d);
    let tk = s.past + t;
    // query head hi reads kv head hi / (H / KV)
    let g = hi / (h / kv);
    let tp = tk.next_multiple_of(16);
    let qrow = |i: usize| &q[((bi * t + i) * h + hi) * d..][..d];
    let krow = |j: usize| &k[((bi * tk + j) * kv + g) * d..][..d];
    // (D, tp) transposed V of this kv head
    let vt = &v[(bi * kv + g) * d * tp..][..d * tp];
    let mut wp: Vec<f32> = Vec::with_capacity(tp);
    for i in i0..i1 {
        // the query's position (after the cached keys)
        let p = s.past + i;
        let (lo, _) = crate::nn::mask::visible_keys(p, p + 1, s.sliding_window);
        let qi = qrow(i);
        // scores for keys 0..=p (masked ones -inf), padded to a multiple of 16
        let n = (p + 1).next_multiple_of(16);
        wp.clear();
        wp.resize(n, f32::NEG_INFINITY);
        // tinyBLAS f16 GEMM: L fma lanes over D, then their horizontal sum. Keys go four at a
        // time (four independent FMA chains; each key's operations and order are unchanged).
        // ggml_softcap's scale(1/cap), tanh, scale(cap) on the raw scores, then the softmax scale
        let score = |kq: f32| match s.softcap {
            Some(cap) => (kq * (1.0 / cap)).tanh() * cap * s.scale,
            None => kq * s.scale,
        };
        let mut j = lo;
        while j + 4 <= p + 1 {
            for (u, lanes) in key_lanes::<4, L>(qi, krow, j).iter().enumerate() {
                wp[j + u] = score(reduce_lanes(lanes));
            }
            j += 4;
        }
        for j in j..=p {
            wp[j] = score(reduce_lanes(&key_lanes::<1, L>(qi, krow, j)[0]));
        }
        let scores = if dump_dir().is_some() {
            wp.clone()
        } else {
            Vec::new()
        };
        let max = wp.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0f64;
        for ch in wp.chunks_exact_mut(L) {
            let mut vals = [0f32; L];
            for l in 0..L {
                vals[l] = ggml_expf::<L>(ch[l] - max);
            }
            sum += reduce_lanes(&vals) as f64;
            ch.copy_from_slice(&vals);
        }
        let inv = (1.0 / sum) as f32;
        if dump_dir().is_some() {
            let probs: Vec<f32> = wp.iter().map(|&e| e * inv).collect();
            ATTN_DUMP.lock().unwrap().push(((bi, hi, i), scores, probs));
        }
        // probabilities to f16 (masked ones are 0)
        for e in wp.iter_mut() {
            *e *= inv;
        }
        round_f16_in_place(&mut wp);
        // tinyBLAS f16 GEMM of V^T by P: L fma lanes over keys, then their horizontal sum
        // Four output dimensions at a time: four independent FMA chains over the keys (each
        // dimension's operations and order are unchanged).
        let orow = &mut o[(i - i0) * d..(i - i0 + 1) * d];
        // (d is a multiple of 16, so every group has four dimensions; a fixed count keeps the
        // accumulators in registers)
        for (g4, dst) in orow.chunks_exact_mut(4).enumerate() {
            let mut lanes = [[0f32; L]; 4];
            for (c, pc) in wp.chunks_exact(L).enumerate() {
                for (u, lanes) in lanes.iter_mut().enumerate() {
                    let vc = &vt[(g4 * 4 + u) * tp + c * L..][..L];
                    for l in 0..L {
                        lanes[l] = pc[l].mul_add(vc[l], lanes[l]);
                    }
                }
            }
            for (dst, lanes) in dst.iter_mut().zip(&lanes) {
                *dst = reduce_lanes(lanes);
            }
        }
    }
}

/// Debug dump directory (`SURPRISAL_DUMP_DIR`): when set, intermediate tensors are written there
/// as raw little-endian f32 (`<name>.f32`), named like llama.cpp's graph nodes (`attn_norm-0`,
/// `Qcur-0`, `kq_soft_max-0`, ...), for comparison with `scripts/references/dump_llamacpp_tensors.py`.
pub(crate) fn dump_dir() -> Option<&'static std::path::Path> {
    static D: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        std::env::var_os("SURPRISAL_DUMP_DIR")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    })
    .as_deref()
}

/// Writes `data` to `<dump dir>/<name>.f32` when dumping is on.
pub(crate) fn dump(name: &str, data: &[f32]) {
    if let Some(dir) = dump_dir() {
        let _ = std::fs::create_dir_all(dir);
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let _ = std::fs::write(dir.join(format!("{name}.f32")), bytes);
    }
}

/// Per (batch row, head, query) scores (scaled, masked) and probabilities, collected while dumping.
type AttnRecord = ((usize, usize, usize), Vec<f32>, Vec<f32>);
static ATTN_DUMP: std::sync::Mutex<Vec<AttnRecord>> = std::sync::Mutex::new(Vec::new());

/// Dumps the collected attention scores / probabilities as `kq-<layer>` / `kq_soft_max-<layer>`,
/// shape (B, heads, T, T) with masked entries -inf / 0.
pub(crate) fn dump_attention(layer: usize, b: usize, h: usize, t: usize) {
    if dump_dir().is_none() {
        return;
    }
    let mut recs = std::mem::take(&mut *ATTN_DUMP.lock().unwrap());
    recs.sort_by_key(|r| r.0);
    let mut kq = vec![f32::NEG_INFINITY; b * h * t * t];
    let mut p = vec![0f32; b * h * t * t];
    for ((bi, hi, i), sc, pr) in recs {
        let base = ((bi * h + hi) * t + i) * t;
        let n = sc.len().min(t);
        kq[base..base + n].copy_from_slice(&sc[..n]);
        p[base..base + n].copy_from_slice(&pr[..n]);
    }
    dump(&format!("kq-{layer}"), &kq);
    dump(&format!("kq_soft_max-{layer}"), &p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v_expf_is_close_to_exp() {
        for i in -200..50 {
            let x = i as f32 * 0.37;
            let (a, b) = (v_expf(x), x.exp());
            assert!((a - b).abs() <= 4e-7 * b.abs() + 1e-37, "{x}: {a} vs {b}");
        }
        assert_eq!(v_expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf(0.0), 1.0);
        for i in -300..235 {
            let x = i as f32 * 0.37;
            let (a, b) = (v_expf_avx2(x), x.exp());
            let tiny = f32::MIN_POSITIVE * 2.0; // subnormal results lose relative precision
            assert!((a - b).abs() <= 4e-7 * b.abs() + tiny, "{x}: {a} vs {b}");
        }
        assert_eq!(v_expf_avx2(f32::NEG_INFINITY), 0.0);
        assert_eq!(v_expf_avx2(0.0), 1.0);
        assert_eq!(v_expf_avx2(100.0), f32::INFINITY);
    }

    #[test]
    fn reduce16_order() {
        let v: [f32; 16] = std::array::from_fn(|i| i as f32);
        assert_eq!(reduce16(&v), 120.0);
    }
}
