//! K-quant weights (256-value super-blocks) multiplied in ggml's x86 (AVX2) order.
//!
//! Every kernel here splits into an integer part (exact, so any order gives the same i32) and a
//! float part whose operations and order are ggml's:
//! - Q4_K, output rows a multiple of 8: llama.cpp repacks the weight (`repack.cpp`,
//!   `q4_K_8x8_q8_K` on AVX2) and multiplies complete groups of 4 activation rows with
//!   `ggml_gemm_q4_K_8x8_q8_K` — per pair of 32-value sub-blocks one `fma(f32(Σ sc·dot), dw·da,
//!   acc)` and one `fma(f32(Σ m·bsum), dmin_w·da, acc_min)`, result `acc - acc_min` — and the last
//!   `rows % 4` rows with `ggml_gemv_q4_K_8x8_q8_K` (the same, one fma per super-block).
//! - K-quants that are not repacked (Q6_K always on x86, Q4_K with other row counts), with at
//!   least 8 activation rows: ggml's tiled matmul (`ggml-cpu/tiled`, `tiled_run_microtile_avx2`),
//!   per super-block `res = d_w·f32(Σ sc·dot)`, `res = fnmadd(dmin_w, f32(Σ m·bsum), res)` when the
//!   type has mins, then `out = fma(res, d_a, out)`.
//! - Fewer rows: the `vec_dot`s of x86 `quants.c`: `ggml_vec_dot_q4_K_q8_K` (8 lanes of
//!   `fma(dw·da, f32(lane), acc)`, 4 lanes of mins, `hsum8(acc) + hsum4(acc_m)`),
//!   `ggml_vec_dot_q6_K_q8_K` (8 lanes of `fma(da·dw, f32(lane), acc)` with the `-32` offset
//!   subtracted per lane through the block sums, `hsum8(acc)`).
//!
//! Found by diffing llama.cpp's tensor dumps: with Q6_K through `vec_dot` order, 9064 of 10240
//! outputs of Gemma-3's first `ffn_down` differed by a few ulp; through the tiled order, none.
//!
//! The lane an integer product lands in is part of the float order, so each kernel keeps ggml's
//! lanes: lane `l` of a 32-value chunk holds its values `4l..4l+4`.

#![allow(clippy::needless_range_loop)] // lane-indexed kernels mirror the SIMD code

use half::f16;

use super::q8k::{Q8KRows, QK_K};

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// ggml's `hsum_float_8`: (hi + lo) halves, then [0]+[2], [1]+[3], then the two.
#[inline(always)]
pub(crate) fn hsum8(v: [f32; 8]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| v[i + 4] + v[i]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// Σ over 4 consecutive values of u8·i8 products per lane, 8 lanes for 32 values.
#[inline(always)]
fn lanes32(w: &[u8], a: &[i8]) -> [i32; 8] {
    let mut l = [0i32; 8];
    for i in 0..32 {
        l[i / 4] += w[i] as i32 * a[i] as i32;
    }
    l
}

#[inline(always)]
fn dot32(w: &[u8], a: &[i8]) -> i32 {
    let mut s = 0i32;
    for i in 0..32 {
        s += w[i] as i32 * a[i] as i32;
    }
    s
}

/// `get_scale_min_k4` for all 8 sub-blocks: (scales, mins), 6 bits each.
pub(crate) fn scale_min_k4(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = q[j] & 63;
            m[j] = q[j + 4] & 63;
        } else {
            sc[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            m[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }
    (sc, m)
}

/// One Q4_K super-block with its nibbles unpacked in value order.
#[derive(Clone)]
pub(crate) struct Q4KBlock {
    d: f32,
    dmin: f32,
    sc: [u8; 8],
    m: [u8; 8],
    q: [u8; QK_K],
}

impl Q4KBlock {
    pub(crate) const BYTES: usize = 144;

    pub(crate) fn from_bytes(b: &[u8]) -> Self {
        let (sc, m) = scale_min_k4(&b[4..16]);
        let qs = &b[16..144];
        let mut q = [0u8; QK_K];
        for j in 0..4 {
            for l in 0..32 {
                q[64 * j + l] = qs[32 * j + l] & 0xF;
                q[64 * j + 32 + l] = qs[32 * j + l] >> 4;
            }
        }
        Self {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            sc,
            m,
            q,
        }
    }

    /// Per value `|d·sc·q| + |dmin·m|`: the magnitudes the kernels' float operations round (for
    /// the tests' error bound).
    #[cfg(test)]
    pub(crate) fn magnitudes(&self, out: &mut [f64]) {
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            let s = i / 32;
            *o = (self.d as f64 * self.sc[s] as f64 * self.q[i] as f64).abs()
                + (self.dmin as f64 * self.m[s] as f64).abs();
        }
    }

    /// `dequantize_row_q4_K`: `(d·sc)·q - dmin·m`.
    pub(crate) fn dequantize(&self, out: &mut [f32]) {
        for s in 0..8 {
            let d1 = self.d * self.sc[s] as f32;
            let m1 = self.dmin * self.m[s] as f32;
            for l in 0..32 {
                out[32 * s + l] = d1 * self.q[32 * s + l] as f32 - m1;
            }
        }
    }
}

/// One Q6_K super-block, values unpacked to 0..63 (ggml subtracts the 32 through the sums).
#[derive(Clone)]
pub(crate) struct Q6KBlock {
    d: f32,
    sc: [i8; 16],
    q: [u8; QK_K],
}

impl Q6KBlock {
    pub(crate) const BYTES: usize = 210;

    pub(crate) fn from_bytes(b: &[u8]) -> Self {
        let (ql, qh) = (&b[0..128], &b[128..192]);
        let mut sc = [0i8; 16];
        for (s, &v) in sc.iter_mut().zip(&b[192..208]) {
            *s = v as i8;
        }
        let mut q = [0u8; QK_K];
        for n in 0..2 {
            let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
            for l in 0..32 {
                let o = 128 * n + l;
                q[o] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
                q[o + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
                q[o + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                q[o + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        Self {
            d: f16_at(b, 208),
            sc,
            q,
        }
    }

    #[cfg(test)]
    pub(crate) fn magnitudes(&self, out: &mut [f64]) {
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            *o = (self.d as f64 * self.sc[i / 16] as f64 * (self.q[i] as f64 - 32.0)).abs();
        }
    }

    /// `dequantize_row_q6_K`: `(d·sc)·(q - 32)`.
    pub(crate) fn dequantize(&self, out: &mut [f32]) {
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            *o = self.d * self.sc[i / 16] as f32 * (self.q[i] as i32 - 32) as f32;
        }
    }
}

/// `ggml_gemm_q4_K_8x8_q8_K` (AVX2) for one weight row and one activation row.
#[inline(always)]
pub(crate) fn dot_q4k_gemm(w: &[Q4KBlock], a: &Q8KRows, r: usize) -> f32 {
    let (mut acc, mut accm) = (0f32, 0f32);
    for (b, w) in w.iter().enumerate() {
        let ab = r * a.kb + b;
        let (aq, da, bs) = (&a.qs[ab], a.d[ab], &a.bsums[ab]);
        let (dd, dm) = (w.d * da, w.dmin * da);
        for sb in 0..4 {
            let (s0, s1) = (2 * sb, 2 * sb + 1);
            let iacc = w.sc[s0] as i32 * dot32(&w.q[32 * s0..], &aq[32 * s0..])
                + w.sc[s1] as i32 * dot32(&w.q[32 * s1..], &aq[32 * s1..]);
            let imin = w.m[s0] as i32 * (bs[2 * s0] as i32 + bs[2 * s0 + 1] as i32)
                + w.m[s1] as i32 * (bs[2 * s1] as i32 + bs[2 * s1 + 1] as i32);
            acc = (iacc as f32).mul_add(dd, acc);
            accm = (imin as f32).mul_add(dm, accm);
        }
    }
    acc - accm
}

/// `ggml_gemv_q4_K_8x8_q8_K` (AVX2): as the gemm, one fma per super-block.
#[inline(always)]
pub(crate) fn dot_q4k_gemv(w: &[Q4KBlock], a: &Q8KRows, r: usize) -> f32 {
    let (mut acc, mut accm) = (0f32, 0f32);
    for (b, w) in w.iter().enumerate() {
        let ab = r * a.kb + b;
        let (aq, da, bs) = (&a.qs[ab], a.d[ab], &a.bsums[ab]);
        let (mut iacc, mut imin) = (0i32, 0i32);
        for s in 0..8 {
            iacc += w.sc[s] as i32 * dot32(&w.q[32 * s..], &aq[32 * s..]);
            imin += w.m[s] as i32 * (bs[2 * s] as i32 + bs[2 * s + 1] as i32);
        }
        acc = (iacc as f32).mul_add(w.d * da, acc);
        accm = (imin as f32).mul_add(w.dmin * da, accm);
    }
    acc - accm
}

/// `ggml_vec_dot_q4_K_q8_K` (x86, AVX2).
#[inline(always)]
pub(crate) fn dot_q4k_vec(w: &[Q4KBlock], a: &Q8KRows, r: usize) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (b, w) in w.iter().enumerate() {
        let ab = r * a.kb + b;
        let (aq, da, bs) = (&a.qs[ab], a.d[ab], &a.bsums[ab]);
        let d = da * w.d;
        let dmin = -da * w.dmin;
        for l in 0..4 {
            let (s0, s1) = (2 * l, 2 * l + 1);
            let prod = w.m[s0] as i32 * (bs[2 * s0] as i32 + bs[2 * s0 + 1] as i32)
                + w.m[s1] as i32 * (bs[2 * s1] as i32 + bs[2 * s1 + 1] as i32);
            acc_m[l] = dmin.mul_add(prod as f32, acc_m[l]);
        }
        let mut sumi = [0i32; 8];
        for s in 0..8 {
            let ln = lanes32(&w.q[32 * s..], &aq[32 * s..]);
            for l in 0..8 {
                sumi[l] += w.sc[s] as i32 * ln[l];
            }
        }
        for l in 0..8 {
            acc[l] = d.mul_add(sumi[l] as f32, acc[l]);
        }
    }
    // _mm_add_ps(acc_m, movehl) then add_ss with movehdup
    let m = (acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]);
    hsum8(acc) + m
}

/// `ggml_vec_dot_q6_K_q8_K` (x86, AVX2).
#[inline(always)]
pub(crate) fn dot_q6k(w: &[Q6KBlock], a: &Q8KRows, r: usize) -> f32 {
    let mut acc = [0f32; 8];
    for (b, w) in w.iter().enumerate() {
        let ab = r * a.kb + b;
        let (aq, da, bs) = (&a.qs[ab], a.d[ab], &a.bsums[ab]);
        let d = da * w.d;
        let mut sumi = [0i32; 8];
        // 8 chunks of 32 values; the first 16 values of chunk c have scale 2c, the rest 2c+1.
        for c in 0..8 {
            let ln = lanes32(&w.q[32 * c..], &aq[32 * c..]);
            for l in 0..8 {
                let sc = w.sc[2 * c + usize::from(l >= 4)] as i32;
                sumi[l] = sumi[l].wrapping_add(sc.wrapping_mul(ln[l]));
            }
        }
        for l in 0..8 {
            let sub = (bs[2 * l] as i32 * w.sc[2 * l] as i32
                + bs[2 * l + 1] as i32 * w.sc[2 * l + 1] as i32)
                << 5;
            sumi[l] = sumi[l].wrapping_sub(sub);
            acc[l] = d.mul_add(sumi[l] as f32, acc[l]);
        }
    }
    hsum8(acc)
}

/// ggml's tiled matmul (`tiled_run_microtile_avx2`, `HAS_MIN`) for Q4_K.
#[inline(always)]
pub(crate) fn dot_q4k_tiled(w: &[Q4KBlock], a: &Q8KRows, r: usize) -> f32 {
    let mut out = 0f32;
    for (b, w) in w.iter().enumerate() {
        let ab = r * a.kb + b;
        let (aq, da, bs) = (&a.qs[ab], a.d[ab], &a.bsums[ab]);
        let (mut s1, mut s2) = (0i32, 0i32);
        for s in 0..8 {
            s1 = s1.wrapping_add(w.sc[s] as i32 * dot32(&w.q[32 * s..], &aq[32 * s..]));
            s2 = s2.wrapping_add(w.m[s] as i32 * (bs[2 * s] as i32 + bs[2 * s + 1] as i32));
        }
        let res = w.d * s1 as f32;
        let res = (-w.dmin).mul_add(s2 as f32, res);
        out = res.mul_add(da, out);
    }
    out
}

/// ggml's tiled matmul (`tiled_run_microtile_avx2`, 16-value sub-blocks, bias 32) for Q6_K.
#[inline(always)]
pub(crate) fn dot_q6k_tiled(w: &[Q6KBlock], a: &Q8KRows, r: usize) -> f32 {
    let mut out = 0f32;
    for (b, w) in w.iter().enumerate() {
        let ab = r * a.kb + b;
        let aq = &a.qs[ab];
        let mut s1 = 0i32;
        for s in 0..16 {
            let mut dot = 0i32;
            for e in 16 * s..16 * s + 16 {
                dot += (w.q[e] as i32 - 32) * aq[e] as i32;
            }
            s1 = s1.wrapping_add((w.sc[s] as i32).wrapping_mul(dot));
        }
        let res = w.d * s1 as f32;
        out = res.mul_add(a.d[ab], out);
    }
    out
}

/// A super-block of Q2_K, Q3_K or Q5_K for ggml's tiled matmul, which is how llama.cpp multiplies
/// them on AVX2 (not repacked there): signed values (`code - bias`), per-sub-block scales and mins.
#[derive(Clone)]
pub(crate) struct TiledBlock {
    d: f32,
    dmin: f32,
    /// Sub-block scales: 8 of 32 values (Q5_K) or 16 of 16 values (Q2_K, Q3_K).
    sc: [i16; 16],
    m: [u8; 16],
    q: [i8; QK_K],
}

impl TiledBlock {
    pub(crate) const Q2K_BYTES: usize = 84;
    pub(crate) const Q3K_BYTES: usize = 110;
    pub(crate) const Q5K_BYTES: usize = 176;

    /// Q5_K (176 bytes: d, dmin, 12 bytes of scales/mins, 32 bytes of high bits, 128 of nibbles).
    pub(crate) fn from_q5k(b: &[u8]) -> Self {
        let (sc8, m8) = scale_min_k4(&b[4..16]);
        let (qh, qs) = (&b[16..48], &b[48..176]);
        let mut q = [0i8; QK_K];
        for j in 0..4 {
            for l in 0..32 {
                let lo = (qs[32 * j + l] & 0xF) | (((qh[l] >> (2 * j)) & 1) << 4);
                let hi = (qs[32 * j + l] >> 4) | (((qh[l] >> (2 * j + 1)) & 1) << 4);
                q[64 * j + l] = lo as i8;
                q[64 * j + 32 + l] = hi as i8;
            }
        }
        let mut sc = [0i16; 16];
        let mut m = [0u8; 16];
        for s in 0..8 {
            sc[s] = sc8[s] as i16;
            m[s] = m8[s];
        }
        Self {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            sc,
            m,
            q,
        }
    }

    /// Q3_K (110 bytes: 32 of high-bit mask, 64 of 2-bit codes, 12 of 6-bit scales, d).
    pub(crate) fn from_q3k(b: &[u8]) -> Self {
        let (hmask, qs, sb) = (&b[0..32], &b[32..96], &b[96..108]);
        let mut q = [0i8; QK_K];
        for (e, q) in q.iter_mut().enumerate() {
            let (half, el) = (e >> 7, e & 127);
            let (group, l) = (el >> 5, el & 31);
            let low = (qs[half * 32 + l] >> (2 * group)) & 3;
            let high = (hmask[l] >> (half * 4 + group)) & 1;
            *q = (low | (high << 2)) as i8 - 4;
        }
        let mut sc = [0i16; 16];
        for (s, sc) in sc.iter_mut().enumerate() {
            // ggml's kmask decode: low 4 bits from bytes 0..8, high 2 bits from bytes 8..12
            let low = if s < 8 { sb[s] & 0xF } else { sb[s - 8] >> 4 };
            let high = (sb[8 + s % 4] >> (2 * (s / 4))) & 3;
            *sc = (low | (high << 4)) as i16 - 32;
        }
        Self {
            d: f16_at(b, 108),
            dmin: 0.0,
            sc,
            m: [0; 16],
            q,
        }
    }

    /// Q2_K (84 bytes: 16 of scale|min nibbles, 64 of 2-bit codes, d, dmin).
    pub(crate) fn from_q2k(b: &[u8]) -> Self {
        let (sb, qs) = (&b[0..16], &b[16..80]);
        let mut q = [0i8; QK_K];
        for (e, q) in q.iter_mut().enumerate() {
            let (half, el) = (e >> 7, e & 127);
            *q = ((qs[half * 32 + (el & 31)] >> (2 * (el >> 5))) & 3) as i8;
        }
        let mut sc = [0i16; 16];
        let mut m = [0u8; 16];
        for s in 0..16 {
            sc[s] = (sb[s] & 0xF) as i16;
            m[s] = sb[s] >> 4;
        }
        Self {
            d: f16_at(b, 80),
            dmin: f16_at(b, 82),
            sc,
            m,
            q,
        }
    }

    #[cfg(test)]
    pub(crate) fn magnitudes(&self, sub: usize, out: &mut [f64]) {
        for (i, o) in out[..QK_K].iter_mut().enumerate() {
            let s = i / sub;
            *o = (self.d as f64 * self.sc[s] as f64 * self.q[i] as f64).abs()
                + (self.dmin as f64 * self.m[s] as f64).abs();
        }
    }

    /// ggml's `dequantize_row_q{2,3,5}_K`: `(d·sc)·q - dmin·m` per sub-block of `sub` values
    /// (Q3_K: `(d·(sc-32))·q`, no min).
    pub(crate) fn dequantize(&self, sub: usize, has_min: bool, out: &mut [f32]) {
        for s in 0..QK_K / sub {
            let dl = self.d * self.sc[s] as f32;
            let ml = self.dmin * self.m[s] as f32;
            for e in s * sub..(s + 1) * sub {
                out[e] = if has_min {
                    dl * self.q[e] as f32 - ml
                } else {
                    dl * self.q[e] as f32
                };
            }
        }
    }
}

/// ggml's tiled matmul (`tiled_run_microtile_avx2`) for the [`TiledBlock`] types: per super-block
/// `res = d·f32(Σ sc·dot)`, with mins `res = fnmadd(dmin, f32(Σ m·bsum), res)`, `out = fma(res,
/// d_a, out)`. SUB: values per sub-block.
#[inline(always)]
pub(crate) fn dot_tiled<const SUB: usize, const HAS_MIN: bool>(
    w: &[TiledBlock],
    a: &Q8KRows,
    r: usize,
) -> f32 {
    let mut out = 0f32;
    for (b, w) in w.iter().enumerate() {
        let ab = r * a.kb + b;
        let (aq, bs) = (&a.qs[ab], &a.bsums[ab]);
        let (mut s1, mut s2) = (0i32, 0i32);
        for s in 0..QK_K / SUB {
            let mut dot = 0i32;
            for e in s * SUB..(s + 1) * SUB {
                dot += w.q[e] as i32 * aq[e] as i32;
            }
            s1 = s1.wrapping_add((w.sc[s] as i32).wrapping_mul(dot));
            if HAS_MIN {
                let bsum: i32 = (0..SUB / 16).map(|u| bs[s * SUB / 16 + u] as i32).sum();
                s2 = s2.wrapping_add(w.m[s] as i32 * bsum);
            }
        }
        let mut res = w.d * s1 as f32;
        if HAS_MIN {
            res = (-w.dmin).mul_add(s2 as f32, res);
        }
        out = res.mul_add(a.d[ab], out);
    }
    out
}
