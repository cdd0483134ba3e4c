//! Causal attention on the CPU in one op, for f32 and f64: per (batch row, head) and block of
//! queries, `scores = q kᵀ` (gemm), scale + causal mask + softmax in place, `out = p v` (gemm),
//! written straight into the (B, T, H·D) layout the output projection reads.
//!
//! Composed from candle ops the same computation allocates and copies several tensors the size of
//! the score matrix per block, transposes q/k/v and the output, and runs many small batched
//! matmuls that each synchronize the thread pool. Here each (batch row, head) is one task on one
//! thread with no temporaries beyond a block of scores. The arithmetic is the composition's: the
//! same products, the same softmax row (`mask::softmax_row`).

use candle_core::cpu::kernels::VecOps;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, WithDType};
use rayon::prelude::*;

use super::mask::{softmax_row, visible_keys};

/// Queries per block: the scores of one block are at most (QUERY_BLOCK, T).
const QUERY_BLOCK: usize = 128;

/// q: (B, T, H, D), k and v: (B, Tk, KV, D) with Tk ≥ T, contiguous (the layout the projections
/// write, read with strides, so nothing is transposed); query head j reads kv head j / (H / KV).
/// The queries are the last T of the Tk positions: Tk > T when the first Tk − T keys come from a
/// KV cache (incremental decoding); Tk = T is the windowed forward. Output: (B, T, H·D).
pub(crate) struct CpuCausalAttention {
    pub scale: f64,
    /// Scores become `cap · tanh(scores / cap)` before the mask (Gemma-2).
    pub softcap: Option<f64>,
    pub sliding_window: Option<usize>,
}

struct Dims {
    b: usize,
    h: usize,
    kv: usize,
    /// Queries.
    t: usize,
    d: usize,
    /// Keys before the first query (from a KV cache); 0 for a windowed forward.
    past: usize,
}

impl CpuCausalAttention {
    fn run<T>(&self, q: &[T], k: &[T], v: &[T], s: &Dims) -> Vec<T>
    where
        T: WithDType + VecOps + num_traits::Float,
    {
        let (t, d, past) = (s.t, s.d, s.past);
        let tk = past + t;
        let n_rep = s.h / s.kv;
        let scale = T::from_f64(self.scale);
        let softcap = self.softcap.map(T::from_f64);
        // row strides: of one position's queries, of one position's keys/values
        let (q_rs, kv_rs) = (s.h * d, s.kv * d);
        // One task per (batch row, head), each computing that head's (T, D) output.
        let heads: Vec<Vec<T>> = (0..s.b * s.h)
            .into_par_iter()
            .map(|bh| {
                let (bi, hi) = (bh / s.h, bh % s.h);
                let kvh = hi / n_rep;
                // this head's first query / key / value; position p is `p * stride` further
                let qh = &q[(bi * t * s.h + hi) * d..];
                let kh = &k[(bi * tk * s.kv + kvh) * d..];
                let vh = &v[(bi * tk * s.kv + kvh) * d..];
                let mut out = vec![T::zero(); t * d];
                let mut scores = vec![T::zero(); QUERY_BLOCK.min(t) * tk];
                let mut start = 0;
                while start < t {
                    let len = QUERY_BLOCK.min(t - start);
                    // Keys after the block's last query are masked for every query in it (with
                    // a cache, the queries sit at positions past + start..).
                    let end = past + start + len;
                    let sc = &mut scores[..len * end];
                    // (len, D) rows of q times kᵀ (D, end), read from the rows of k
                    matmul(
                        len,
                        end,
                        d,
                        sc,
                        end,
                        &qh[start * q_rs..],
                        q_rs,
                        kh,
                        1,
                        kv_rs,
                    );
                    for (i, row) in sc.chunks_exact_mut(end).enumerate() {
                        let (lo, hi) = visible_keys(past + start + i, end, self.sliding_window);
                        softmax_row(row, lo, hi, scale, softcap);
                    }
                    // the scores (len, end) times the rows of v (end, D), into this head's rows
                    matmul(len, d, end, &mut out[start * d..], d, sc, end, vh, kv_rs, 1);
                    start += len;
                }
                out
            })
            .collect();
        // (B, H, T, D) -> (B, T, H, D), one output position per task
        let mut out = vec![T::zero(); s.b * t * s.h * d];
        out.par_chunks_mut(s.h * d)
            .enumerate()
            .with_min_len(64)
            .for_each(|(row, dst)| {
                let (bi, pos) = (row / t, row % t);
                for (hi, dst) in dst.chunks_exact_mut(d).enumerate() {
                    dst.copy_from_slice(&heads[bi * s.h + hi][pos * d..][..d]);
                }
            });
        out
    }
}

/// dst (m, n) = lhs (m, k) · rhs (k, n), on this thread. dst and lhs are row-major with row
/// strides `dst_rs` and `lhs_rs`; rhs element (p, j) is `rhs[p * rhs_rs + j * rhs_cs]`.
#[allow(clippy::too_many_arguments)]
fn matmul<T: num_traits::Float + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    lhs: &[T],
    lhs_rs: usize,
    rhs: &[T],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "matmul: dst too short");
    assert!((m - 1) * lhs_rs + k <= lhs.len(), "matmul: lhs too short");
    assert!(
        (k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len(),
        "matmul: rhs too short"
    );
    if let Some((m2, k2)) = gemm_small_path(m, n, k) {
        // gemm would take one of its small-shape paths, which sum in another order than the
        // blocked kernel: the product is computed padded to a shape that takes the blocked
        // kernel (zero rows of lhs; zero depth, exact under fma), so a KV-cache step's scores
        // and outputs are the bits the windowed forward computes for the same query.
        let mut a = vec![T::zero(); m2 * k2];
        for i in 0..m {
            a[i * k2..i * k2 + k].copy_from_slice(&lhs[i * lhs_rs..i * lhs_rs + k]);
        }
        let mut b = vec![T::zero(); k2 * n];
        for p in 0..k {
            for j in 0..n {
                b[p * n + j] = rhs[p * rhs_rs + j * rhs_cs];
            }
        }
        let mut c = vec![T::zero(); m2 * n];
        matmul_gemm(m2, n, k2, &mut c, n, &a, k2, &b, n, 1);
        for i in 0..m {
            dst[i * dst_rs..i * dst_rs + n].copy_from_slice(&c[i * n..(i + 1) * n]);
        }
        return;
    }
    matmul_gemm(m, n, k, dst, dst_rs, lhs, lhs_rs, rhs, rhs_rs, rhs_cs);
}

/// gemm 0.19 computes a product of at most this many outputs (m·n) whose operands are both
/// contiguous along the depth with its horizontal dot-product kernels, not its blocked kernel.
pub(crate) const GEMM_HORIZONTAL_MAX_OUTPUTS: usize = 256;

/// The padded shape (rows, depth) to compute (m, n, k) at when gemm 0.19 would take a path
/// other than its blocked kernel: `gevv` (k <= 2), `gemv` (m = 1, in these layouts) or the
/// horizontal dot-product kernels (m·n <= 256 with both operands contiguous along k, as
/// q·kᵀ is). Their results differ from the blocked kernel's in the last bits (measured on the
/// f32 fixtures: up to 1.9e-5 nats of NLL between one-token steps and the windowed forward);
/// f64 has no horizontal kernels. The padding is copied into contiguous buffers, which also
/// leaves the operands in a layout the horizontal kernels do not take.
fn gemm_small_path(m: usize, n: usize, k: usize) -> Option<(usize, usize)> {
    if m >= 2 && k > 2 && m * n > GEMM_HORIZONTAL_MAX_OUTPUTS {
        return None;
    }
    Some((m.max(2), k.max(3)))
}

/// [`matmul`] without the small-shape rule; the caller has checked the bounds.
#[allow(clippy::too_many_arguments)]
fn matmul_gemm<T: num_traits::Float + 'static>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    lhs: &[T],
    lhs_rs: usize,
    rhs: &[T],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    // SAFETY: `matmul` checked that every element gemm reads or writes lies inside its slice.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn contiguous<'a, T>(x: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&x[a..b]),
        None => candle_core::bail!("cpu attention: {what} must be contiguous"),
    }
}

impl CustomOp3 for CpuCausalAttention {
    fn name(&self) -> &'static str {
        "cpu-causal-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, t, h, d) = ql.shape().dims4()?;
        let (kb, kt, kv, kd) = kl.shape().dims4()?;
        if (kb, kd) != (b, d) || kt < t || vl.shape() != kl.shape() || kv == 0 || h % kv != 0 {
            candle_core::bail!(
                "cpu attention: q {:?}, k {:?}, v {:?} do not fit (B, T, H, D) / (B, T, KV, D)",
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        let dims = Dims {
            b,
            h,
            kv,
            t,
            d,
            past: kt - t,
        };
        let shape = Shape::from((b, t, h * d));
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.run(
                    contiguous(q, ql, "q")?,
                    contiguous(k, kl, "k")?,
                    contiguous(v, vl, "v")?,
                    &dims,
                ))
            }
            (CpuStorage::F64(q), CpuStorage::F64(k), CpuStorage::F64(v)) => {
                CpuStorage::F64(self.run(
                    contiguous(q, ql, "q")?,
                    contiguous(k, kl, "k")?,
                    contiguous(v, vl, "v")?,
                    &dims,
                ))
            }
            _ => candle_core::bail!("cpu attention: q, k and v must all be f32 or all f64"),
        };
        Ok((out, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    /// Attention written out in f64 loops: softmax over the visible keys of softcap(q·k·scale),
    /// times v.
    fn naive(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        s: &Dims,
        scale: f64,
        win: Option<usize>,
        cap: Option<f64>,
    ) -> Vec<f64> {
        let mut out = vec![0.0; s.b * s.t * s.h * s.d];
        for bi in 0..s.b {
            for hi in 0..s.h {
                let kvh = bi * s.kv + hi / (s.h / s.kv);
                for i in 0..s.t {
                    let qi = &q[((bi * s.h + hi) * s.t + i) * s.d..][..s.d];
                    let keys: Vec<usize> =
                        (0..=i).filter(|&j| win.is_none_or(|w| i - j < w)).collect();
                    let logits: Vec<f64> = keys
                        .iter()
                        .map(|&j| {
                            let kj = &k[(kvh * s.t + j) * s.d..][..s.d];
                            let s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale;
                            cap.map_or(s, |c| (s / c).tanh() * c)
                        })
                        .collect();
                    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                    let o = &mut out[((bi * s.t + i) * s.h + hi) * s.d..][..s.d];
                    for (&j, l) in keys.iter().zip(&logits) {
                        let p = (l - max).exp() / z;
                        let vj = &v[(kvh * s.t + j) * s.d..][..s.d];
                        for (o, x) in o.iter_mut().zip(vj) {
                            *o += p * x;
                        }
                    }
                }
            }
        }
        out
    }

    /// Grouped heads, several query blocks, with and without a sliding window and a softcap; f32
    /// within 1e-5 of the f64 loops, f64 within 1e-12.
    #[test]
    fn matches_attention_written_out() {
        let dev = Device::Cpu;
        let s = Dims {
            b: 2,
            h: 6,
            kv: 2,
            t: QUERY_BLOCK * 2 + 37,
            d: 16,
            past: 0,
        };
        let scale = 0.25;
        let q = Tensor::randn(0f64, 1.0, (s.b, s.h, s.t, s.d), &dev).unwrap();
        let k = Tensor::randn(0f64, 1.0, (s.b, s.kv, s.t, s.d), &dev).unwrap();
        let v = Tensor::randn(0f64, 1.0, (s.b, s.kv, s.t, s.d), &dev).unwrap();
        let flat = |x: &Tensor| -> Vec<f64> { x.flatten_all().unwrap().to_vec1().unwrap() };
        for (win, cap) in [(None, None), (Some(50), None), (Some(50), Some(2.0))] {
            let want = naive(&flat(&q), &flat(&k), &flat(&v), &s, scale, win, cap);
            for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
                let op = CpuCausalAttention {
                    scale,
                    softcap: cap,
                    sliding_window: win,
                };
                // the op reads (B, T, heads, D)
                let [q, k, v] = [&q, &k, &v].map(|x| {
                    x.to_dtype(dtype)
                        .and_then(|x| x.transpose(1, 2)?.contiguous())
                        .unwrap()
                });
                let got = q.apply_op3_no_bwd(&k, &v, &op).unwrap();
                assert_eq!(got.dims(), &[s.b, s.t, s.h * s.d]);
                let got = flat(&got.to_dtype(DType::F64).unwrap());
                let worst = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst <= tol,
                    "{dtype:?} window {win:?}: max |diff| {worst:e}"
                );
                // The last `tq` queries against all keys (a KV cache holding the others): the
                // same rows of the written-out attention.
                for tq in [1, 3, QUERY_BLOCK + 5] {
                    let ql = q.narrow(1, s.t - tq, tq).unwrap().contiguous().unwrap();
                    let got = ql.apply_op3_no_bwd(&k, &v, &op).unwrap();
                    assert_eq!(got.dims(), &[s.b, tq, s.h * s.d]);
                    let got = flat(&got.to_dtype(DType::F64).unwrap());
                    let row = s.h * s.d;
                    let mut worst = 0f64;
                    for bi in 0..s.b {
                        let w = &want[(bi * s.t + s.t - tq) * row..][..tq * row];
                        let g = &got[bi * tq * row..][..tq * row];
                        for (a, b) in w.iter().zip(g) {
                            worst = worst.max((a - b).abs());
                        }
                    }
                    assert!(worst <= tol, "{dtype:?} cached {tq}: max |diff| {worst:e}");
                }
            }
        }
    }
}
