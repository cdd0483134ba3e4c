//! Per-token statistics computed where the logits live (`--stats-on device`).
//!
//! The host path copies every `(N, V)` chunk of f32 logits to host memory and runs
//! [`surprisal_metrics::token_stats`] / [`pair_stats`](surprisal_metrics::pair_stats) /
//! [`log_mass`](surprisal_metrics::log_mass) on it in f64. On a GPU that copy is the bottleneck
//! (`N × V × 4` bytes per chunk, 32 MiB at the chunk bound) and the host's f64 pass over 150k-entry
//! rows is slower than the forward itself. This module reduces the logits with candle tensor ops
//! on whatever device holds them (CUDA, or the CPU in tests), so only a handful of numbers per
//! scored token cross to the host: `N × 7` f64 (+3 with a word-boundary mask; a model/reference
//! pair: both rows' 7, +3) and `N × 2` u32 (`N × 4` for a pair).
//!
//! # What is computed where
//!
//! Every reduction over the vocabulary runs on the device: element-wise work in f32, each sum
//! accumulated in f64 ([`ACCUMULATE`]), with the same max shift and the same case split as
//! `surprisal_metrics::row` (per row: `m = max x`, `u_i = m − x_i`, `e_i = exp(−u_i)`,
//! `a` = the lowest index with `x_a = m`, `t` = the target):
//!
//! | column | value |
//! |---|---|
//! | `max` | `m` (an input value, exact) |
//! | `target_logit` | `x_t` (exact) |
//! | `z_rest` | `Σ_{i≠a} e_i` (the arg-max term `e_a = 1` left out, so `ln Z = ln_1p(z_rest)` keeps full relative precision on peaked rows, as on the host) |
//! | `neg_eu` | `Σ e_i (x_i − m) = −Σ e_i u_i` |
//! | `centered` | `Σ e_i (u_i − ū)²` with `ū = Σ e u / Σ e` computed on the device first: the centered two-pass form, not `E[u²] − ū²`, which cancels catastrophically when the spread is small against `ū` |
//! | `e2_rest` | `Σ_{i≠a} e_i²` |
//! | `ok` | 1 when no logit of the row is NaN or `+inf` |
//! | `top1` (u32) | `a`, as the minimum index among the entries equal to `m`: candle's CUDA `argmax` is a tree reduction that does not keep the lowest index on ties (its CPU `argmax` does), so it is not used |
//! | `above` (u32) | `#{i : x_i > x_t}` (strict `gt`, counted in u32: exact for any vocabulary) |
//!
//! The O(1)-per-row finish (`ln_1p`, the divisions, `m − x_t`) runs on the host in f64 from those
//! columns, as `row_core` finishes: `nll = ln_1p(z_rest) + (m − x_t)`, `H = ln Z + Σeu/Z`,
//! varentropy `centered / Z`, min-entropy `ln Z`, Rényi-2 `2 ln Z − ln_1p(e2_rest)`,
//! `top1_prob = 1/Z`, `rank = 1 + above`.
//!
//! With a word-boundary mask (`--words`), `log_mass` adds `sel_max = max_{mask} x`,
//! `sel_sum = Σ_{mask} exp(x − sel_max)` and `unsel_sum = Σ_{not mask} e`; it is finished as
//! `ln_1p(−unsel_sum/Z)` when that mass is below ½ (relative precision for masses near 1) and
//! as `(sel_max − m) + ln sel_sum − ln Z` otherwise (no underflow for a selection far below the
//! arg-max).
//!
//! For a pair (compare): both rows' columns, plus `kl_sum = Σ_i e_r,i (d_i − c_dev)` over the
//! reference's nonzero weights, with `d_i = x_r,i − x_m,i` and the per-row constant
//! `c_dev = (m_r − m_m) + (ln Z_r − ln Z_m)` rounded to f32 (subtracting it before the sum keeps
//! the terms small when the models agree, which is when KL is small), and `kl_inf` = 1 when some
//! token has a model logit of `-inf` where the reference's (f64) weight is positive. The host
//! finishes `KL = kl_sum / Z_r + (c_dev − c)` with `c` in f64: the second term removes the f32
//! rounding of `c_dev`, because `Σ e_r / Z_r = 1`. `target_prob_delta = exp(−nll_m) − exp(−nll_r)`
//! and top-1 agreement come from the two rows' finished statistics.
//!
//! # Fallback
//!
//! A chunk with a NaN or `+inf` logit, an all-`-inf` row, or a target outside the vocabulary is
//! not computed here ([`DeviceOutcome::HostNeeded`]): the engine copies that chunk's logits to the
//! host and runs the host path on them, so the user gets exactly the error message the host path
//! gives.
//!
//! # Precision
//!
//! Exact on both paths (same f32 logits): `top1_id`, `target_rank`, `target_id`, top-1
//! agreement, `-inf` NLL and KL. The rest carry the error of the f32 element-wise work: each
//! weight `e_i` is off by up to `(u_i + 1)·2⁻²⁴` relative, so `ln Z` by up to
//! `(ln V + 1)·2⁻²⁴` ≈ 8e-7 nats. Measured against the host on vocabularies of 7, 49 152 and
//! 151 936 (`tests/device_stats.rs`, CPU device): NLL, min-entropy, Rényi-2 within 3.1e-8 nats,
//! entropy 4e-8, varentropy 4e-7 nats², `log_mass` 3e-8, KL 9e-6 (4e-6 relative; ~1e-7 absolute
//! for KL ≈ 1e-3), `top1_prob` 2e-8. The host remains the reference (f64 throughout).
//!
//! # Cost
//!
//! About 30 element-wise/reduction passes over the `(N, V)` chunk, each memory-bound on a GPU; a
//! few chunk-sized temporaries are alive at once (peak on the CPU device for a 32 MiB chunk,
//! 55 × 151 936: +273 MiB for `token_stats`, +368 MiB for `pair_stats`). On the CPU this path is
//! slower than the host's (0.59 s vs 0.09 s single-threaded for that chunk), which is why `auto`
//! keeps the host path there.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use surprisal_metrics::{PairStats, TokenStats};

use crate::error::{Result, RunError};

/// `x − m` is clamped to this before `exp` and before it is used as a weight's log: `exp` of
/// anything below about −104 is already 0 in f32, so the weights do not change, but masked
/// (`-inf`) entries then contribute `0 · finite = 0` to `Σ e·u` and `Σ e·(u − ū)²` instead of
/// `0 · ∞ = NaN`.
const SHIFTED_LOGIT_FLOOR: f32 = -1.0e4;

/// Below this `x − m` (nats) `exp` underflows to 0 in f64, so the host path gives the entry no
/// weight. KL is `+inf` on the host when the model has a `-inf` logit where the reference's f64
/// weight is positive; the device decides "positive" with this same threshold (its own f32
/// weights underflow much earlier, at about −104) so both paths agree on which rows have
/// infinite KL.
const F64_EXP_UNDERFLOW_NATS: f64 = -745.13;

/// Where per-token statistics are computed, as requested (`--stats-on`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsOn {
    /// On the device when the model runs on CUDA, else on the host.
    #[default]
    Auto,
    /// On the host in f64, from logits copied off the device.
    Host,
    /// Where the logits live, in f32 (this module); works on every device, including the CPU.
    Device,
}

impl StatsOn {
    /// The flag spelling (`auto`, `host`, `device`).
    pub fn name(self) -> &'static str {
        match self {
            StatsOn::Auto => "auto",
            StatsOn::Host => "host",
            StatsOn::Device => "device",
        }
    }

    /// Decides where statistics are computed for models whose logits live on `devices` (one entry
    /// per model; `None`: that scorer cannot hand out device tensors, see
    /// [`crate::Scorer::logits_device`]). The device path needs every model on one device because
    /// pair statistics combine both models' rows element by element.
    pub fn resolve(self, devices: &[Option<Device>]) -> Result<StatsLocation> {
        let first = devices.first().cloned().flatten();
        let all_supported = devices.iter().all(Option::is_some);
        let same = devices
            .iter()
            .flatten()
            .all(|d| first.as_ref().is_some_and(|f| f.same_device(d)));
        match self {
            StatsOn::Host => Ok(StatsLocation::Host),
            StatsOn::Device if !all_supported => Err(RunError::Config(
                "--stats-on device: this model cannot keep its logits on a device (use --stats-on host)"
                    .into(),
            )),
            StatsOn::Device if !same => Err(RunError::Config(
                "--stats-on device needs the model and the reference on the same device (see --reference-device), or --stats-on host"
                    .into(),
            )),
            StatsOn::Device => Ok(StatsLocation::Device),
            StatsOn::Auto => Ok(
                if all_supported && same && first.is_some_and(|d| d.is_cuda()) {
                    StatsLocation::Device
                } else {
                    StatsLocation::Host
                },
            ),
        }
    }
}

/// Where statistics were computed for a run ([`StatsOn`] resolved). Recorded in `summary.json`
/// (`stats_on`) and in the resume fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsLocation {
    /// Host, f64 (`surprisal_metrics`).
    Host,
    /// Device, f32 reductions (this module).
    Device,
}

impl StatsLocation {
    /// `host` or `device`.
    pub fn name(self) -> &'static str {
        match self {
            StatsLocation::Host => "host",
            StatsLocation::Device => "device",
        }
    }
}

/// Why a chunk was handed back to the host path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostNeeded {
    /// A logit is NaN or `+inf` (the host path reports which).
    NonFinite,
    /// Every logit of a row is `-inf`.
    AllMasked,
    /// A target id is not below the vocabulary size.
    TargetOutOfRange,
    /// The tensors do not have the expected shapes (e.g. model and reference vocabularies differ,
    /// or an empty vocabulary); the host path names the problem.
    Shape,
}

/// Result of a device computation for one chunk.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceOutcome<T> {
    /// One entry per scored position, in order.
    Computed(Vec<T>),
    /// This chunk must go through the host path.
    HostNeeded(HostNeeded),
}

/// Statistics of one scored position: `S` is [`TokenStats`] (eval) or [`PairStats`] (compare),
/// with the same fields and definitions as the host's `token_stats` / `pair_stats`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRow<S> {
    pub stats: S,
    /// `log_mass` of the (model's) row over the mask (nats), when a mask was given.
    pub log_mass_nats: Option<f64>,
}

/// A vocabulary mask (e.g. the word-initial tokens of `--words`) with its device copy, uploaded
/// once per device and reused for every chunk instead of being sent with each one.
#[derive(Debug)]
pub struct VocabMask {
    bools: Vec<bool>,
    on_device: OnceLock<Tensor>,
}

impl VocabMask {
    /// Wraps a host mask (`mask[i]`: token `i` is selected).
    pub fn new(bools: Vec<bool>) -> Self {
        VocabMask {
            bools,
            on_device: OnceLock::new(),
        }
    }

    /// The host mask.
    pub fn as_slice(&self) -> &[bool] {
        &self.bools
    }

    /// The mask as a `(1, vocab)` u8 tensor on `device`; entries beyond the host mask count as
    /// unselected, as in `log_mass`. Cached for the first device asked for.
    fn tensor(&self, device: &Device, vocab: usize) -> candle_core::Result<Tensor> {
        if let Some(t) = self.on_device.get() {
            if t.device().same_device(device) && t.dims() == [1, vocab] {
                return Ok(t.clone());
            }
        }
        let bytes: Vec<u8> = (0..vocab)
            .map(|i| u8::from(self.bools.get(i).copied().unwrap_or(false)))
            .collect();
        let t = Tensor::from_vec(bytes, (1, vocab), device)?;
        // A concurrent or earlier set for another device keeps the first one; this one is used once.
        let _ = self.on_device.set(t.clone());
        Ok(t)
    }
}

fn dev_err(e: candle_core::Error) -> RunError {
    RunError::DeviceStats(e.to_string())
}

/// Copies a `(N, V)` logits tensor to the host, row-major (the fallback path).
pub fn to_host(logits: &Tensor) -> Result<Vec<f32>> {
    logits
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_device(&Device::Cpu))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(dev_err)
}

/// Per-token statistics of every row of `logits` (`(N, V)`, any float dtype, converted to f32)
/// for the targets `targets` (`N` ids), plus `log_mass` over `mask` when given. Only the
/// per-row columns described in the module docs cross to the host.
pub fn token_stats(
    logits: &Tensor,
    targets: &[u32],
    mask: Option<&VocabMask>,
) -> Result<DeviceOutcome<DeviceRow<TokenStats>>> {
    let Some((n, v)) = check_shape(logits, targets)? else {
        return Ok(DeviceOutcome::HostNeeded(HostNeeded::Shape));
    };
    if n == 0 {
        return Ok(DeviceOutcome::Computed(Vec::new()));
    }
    if targets.iter().any(|&t| t as usize >= v) {
        return Ok(DeviceOutcome::HostNeeded(HostNeeded::TargetOutOfRange));
    }
    let (cols, ids) = eval_columns(logits, targets, mask, n, v).map_err(dev_err)?;
    let width = ROW_COLS + if mask.is_some() { MASS_COLS } else { 0 };
    check_fetched(&cols, &ids, n, width, 2)?;
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let c = &cols[k * width..(k + 1) * width];
        let row = RowCols::new(c);
        if let Some(why) = row.host_needed() {
            return Ok(DeviceOutcome::HostNeeded(why));
        }
        let stats = row.finish(ids[2 * k], ids[2 * k + 1], targets[k]);
        let log_mass_nats = mask.map(|_| row.log_mass(&c[ROW_COLS..]));
        out.push(DeviceRow {
            stats,
            log_mass_nats,
        });
    }
    Ok(DeviceOutcome::Computed(out))
}

/// Pair statistics (compare) of `model` against `reference` (both `(N, V)` on the same device)
/// for `targets`, plus `log_mass` of the model's rows over `mask` when given.
pub fn pair_stats(
    model: &Tensor,
    reference: &Tensor,
    targets: &[u32],
    mask: Option<&VocabMask>,
) -> Result<DeviceOutcome<DeviceRow<PairStats>>> {
    let (Some((n, v)), Some(rshape)) = (
        check_shape(model, targets)?,
        check_shape(reference, targets)?,
    ) else {
        return Ok(DeviceOutcome::HostNeeded(HostNeeded::Shape));
    };
    if rshape != (n, v) || !model.device().same_device(reference.device()) {
        return Ok(DeviceOutcome::HostNeeded(HostNeeded::Shape));
    }
    if n == 0 {
        return Ok(DeviceOutcome::Computed(Vec::new()));
    }
    if targets.iter().any(|&t| t as usize >= v) {
        return Ok(DeviceOutcome::HostNeeded(HostNeeded::TargetOutOfRange));
    }
    let (cols, ids) = pair_columns(model, reference, targets, mask, n, v).map_err(dev_err)?;
    let mass = if mask.is_some() { MASS_COLS } else { 0 };
    let width = 2 * ROW_COLS + mass + PAIR_COLS;
    check_fetched(&cols, &ids, n, width, 4)?;
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let c = &cols[k * width..(k + 1) * width];
        let (mc, rc) = (RowCols::new(c), RowCols::new(&c[ROW_COLS..]));
        // Model row first, then the reference: the host's error order.
        if let Some(why) = mc.host_needed().or_else(|| rc.host_needed()) {
            return Ok(DeviceOutcome::HostNeeded(why));
        }
        let t = targets[k];
        let m_stats = mc.finish(ids[4 * k], ids[4 * k + 1], t);
        let r_stats = rc.finish(ids[4 * k + 2], ids[4 * k + 3], t);
        let log_mass_nats = mask.map(|_| mc.log_mass(&c[2 * ROW_COLS..]));
        let p = &c[2 * ROW_COLS + mass..];
        let (c_dev, kl_inf, kl_sum) = (p[0], p[1], p[2]);
        let kl_nats = if kl_inf > 0.0 {
            f64::INFINITY
        } else {
            // c in f64 from the same columns the host-side ln Z come from.
            let c = (rc.max() + rc.ln_z()) - (mc.max() + mc.ln_z());
            kl_sum / rc.z() + (c_dev - c)
        };
        let target_prob_delta = m_stats.target_prob() - r_stats.target_prob();
        let top1_agrees = m_stats.top1_id == r_stats.top1_id;
        out.push(DeviceRow {
            stats: PairStats {
                model: m_stats,
                reference: r_stats,
                kl_nats,
                target_prob_delta,
                top1_agrees,
            },
            log_mass_nats,
        });
    }
    Ok(DeviceOutcome::Computed(out))
}

/// The copied column blocks have the sizes the row loop indexes by (a guard against a backend
/// returning something else, rather than a panic).
fn check_fetched(cols: &[f64], ids: &[u32], n: usize, width: usize, id_cols: usize) -> Result<()> {
    if cols.len() != n * width || ids.len() != n * id_cols {
        return Err(RunError::DeviceStats(format!(
            "expected {n} × {width} statistics and {n} × {id_cols} ids, got {} and {}",
            cols.len(),
            ids.len()
        )));
    }
    Ok(())
}

/// `Some((N, V))` for a 2-D tensor with `N == targets.len()` and `V > 0`; `None` for shapes the
/// host path must report.
fn check_shape(logits: &Tensor, targets: &[u32]) -> Result<Option<(usize, usize)>> {
    match logits.dims() {
        &[n, v] if n == targets.len() && v > 0 && v <= u32::MAX as usize => Ok(Some((n, v))),
        &[_, _] => Ok(None),
        d => Err(RunError::DeviceStats(format!(
            "logits must have shape (positions, vocabulary), found {d:?}"
        ))),
    }
}

/// Per-row f32 columns of one row's statistics, in this order.
const ROW_COLS: usize = 7;
/// `sel_max`, `sel_sum`, `unsel_sum` of `log_mass`.
const MASS_COLS: usize = 3;
/// `c_dev`, `kl_inf`, `kl_sum`.
const PAIR_COLS: usize = 3;

/// One row's columns as copied from the device (see the module docs).
struct RowCols<'a>(&'a [f64]);

impl<'a> RowCols<'a> {
    fn new(c: &'a [f64]) -> Self {
        RowCols(c)
    }
    fn max(&self) -> f64 {
        self.0[0]
    }
    fn target_logit(&self) -> f64 {
        self.0[1]
    }
    fn z_rest(&self) -> f64 {
        self.0[2]
    }
    fn z(&self) -> f64 {
        1.0 + self.z_rest()
    }
    fn ln_z(&self) -> f64 {
        self.z_rest().ln_1p()
    }

    fn host_needed(&self) -> Option<HostNeeded> {
        if self.0[6] < 0.5 {
            Some(HostNeeded::NonFinite)
        } else if self.0[0] == f64::NEG_INFINITY {
            Some(HostNeeded::AllMasked)
        } else {
            None
        }
    }

    /// The host-side finish, in f64, mirroring `surprisal_metrics::row::row_core`.
    fn finish(&self, top1: u32, above: u32, target: u32) -> TokenStats {
        let (z, ln_z) = (self.z(), self.ln_z());
        let eu = -self.0[3];
        let centered = self.0[4];
        let e2_rest = self.0[5];
        TokenStats {
            nll_nats: ln_z + (self.max() - self.target_logit()),
            entropy_nats: ln_z + eu / z,
            varentropy_nats2: centered / z,
            min_entropy_nats: ln_z,
            renyi2_entropy_nats: 2.0 * ln_z - e2_rest.ln_1p(),
            top1_id: top1,
            top1_prob: 1.0 / z,
            target_rank: 1 + u64::from(above),
            target_id: target,
        }
    }

    /// `ln Σ_{mask} p` from the mass columns `[sel_max, sel_sum, unsel_sum]` (`-inf` when
    /// nothing selected has weight). When the unselected mass is below one half the mass is
    /// `ln_1p(−unsel/Z)` (relative precision for masses near 1, e.g. a near-certain word
    /// boundary); otherwise `(sel_max − m) + ln sel_sum − ln Z`, which does not underflow for a
    /// selection far below the arg-max.
    fn log_mass(&self, mass: &[f64]) -> f64 {
        let (sel_max, sel_sum, unsel_sum) = (mass[0], mass[1], mass[2]);
        if sel_max == f64::NEG_INFINITY {
            return f64::NEG_INFINITY;
        }
        let unsel = unsel_sum / self.z();
        if unsel < 0.5 {
            (-unsel).ln_1p()
        } else {
            (sel_max - self.max()) + (sel_sum.ln() - self.ln_z())
        }
    }
}

/// The dtype the vocabulary-length sums accumulate in. The element-wise work (`x − m`, `exp`,
/// products) is f32; each `(N, V)` f32 tensor is cast to this just for its sum. f64 because
/// candle's CPU `sum` adds sequentially within 8 lanes, so an f32 sum of 150k terms carries
/// ~1e-6 relative error (measured: NLL 1.4e-6, entropy 2.9e-6, varentropy 1.9e-5 nats off the
/// host), 30× the error of the f32 element-wise work itself (NLL 4.8e-8 with f64 sums); on a GPU
/// the cast and the f64 sum are memory-bound passes like the others (f64 *adds* are cheap even
/// on consumer GPUs). `DType::F32` here gives pure-f32 statistics.
const ACCUMULATE: DType = DType::F64;

/// `Σ_i t[·, i]` of an `(N, V)` f32 tensor, accumulated in [`ACCUMULATE`], as `(N, 1)` f64.
fn row_sum(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_dtype(ACCUMULATE)?.sum_keepdim(1)?.to_dtype(DType::F64)
}

/// The device-side tensors of one row set that later stages need.
struct Reduced {
    /// `(N, ROW_COLS)` f64 columns in [`RowCols`] order.
    cols: Tensor,
    /// `(N, 2)` u32: `top1`, `above`.
    ids: Tensor,
    /// `(N, 1)` f32 row maxima.
    max: Tensor,
    /// `(N, 1)` f64 `Σ e` (arg-max included), for `ln Z` in the pair constant.
    z: Tensor,
    /// `(N, V)` weights `exp(xs)`.
    e: Tensor,
    /// `(N, V)` `xs = max(x − m, SHIFTED_LOGIT_FLOOR)`.
    xs: Tensor,
}

/// The per-row reductions of one `(N, V)` logits tensor (f32), see the module docs.
fn reduce(x: &Tensor, targets: &Tensor, n: usize, v: usize) -> candle_core::Result<Reduced> {
    let dev = x.device();
    // NaN and +inf fail `x <= f32::MAX`; -inf passes. min over the row: 0 if any entry failed.
    let ok = x.le(f32::MAX)?.min_keepdim(1)?.to_dtype(DType::F64)?;
    let max = x.max_keepdim(1)?;
    let idx = Tensor::arange(0u32, v as u32, dev)?.reshape((1, v))?;
    let idx_nv = idx.broadcast_as((n, v))?;
    let past_end = Tensor::new(&[v as u32], dev)?
        .reshape((1, 1))?
        .broadcast_as((n, v))?;
    // lowest index attaining the max
    let top1 = x
        .broadcast_eq(&max)?
        .where_cond(&idx_nv, &past_end)?
        .min_keepdim(1)?;
    let target_logit = x.gather(targets, 1)?;
    let above = x
        .broadcast_gt(&target_logit)?
        .to_dtype(DType::U32)?
        .sum_keepdim(1)?;

    let xs = x.broadcast_sub(&max)?.maximum(SHIFTED_LOGIT_FLOOR)?;
    let e = xs.exp()?;
    let z = row_sum(&e)?;
    let zeros = Tensor::zeros((1, 1), DType::F32, dev)?.broadcast_as((n, v))?;
    let e_rest = idx.broadcast_eq(&top1)?.where_cond(&zeros, &e)?;
    let z_rest = row_sum(&e_rest)?;
    let e2_rest = row_sum(&e_rest.sqr()?)?;
    // Σ e·(x − m) = −Σ e·u, and ū = Σ e·u / Σ e
    let neg_eu = row_sum(&(&e * &xs)?)?;
    let u_mean = neg_eu.neg()?.div(&z)?.to_dtype(DType::F32)?;
    // u − ū = −(xs + ū): squared, the sign goes
    let centered = row_sum(&(&e * xs.broadcast_add(&u_mean)?.sqr()?)?)?;
    let cols = Tensor::cat(
        &[
            &max.to_dtype(DType::F64)?,
            &target_logit.to_dtype(DType::F64)?,
            &z_rest,
            &neg_eu,
            &centered,
            &e2_rest,
            &ok,
        ],
        1,
    )?;
    let ids = Tensor::cat(&[&top1, &above], 1)?;
    Ok(Reduced {
        cols,
        ids,
        max,
        z,
        e,
        xs,
    })
}

/// `(N, 3)` f64 columns `sel_max`, `sel_sum`, `unsel_sum` of `log_mass` over `mask` (`e`: the row's
/// weights `exp(x − m)` from [`reduce`]).
fn mass_cols(
    x: &Tensor,
    e: &Tensor,
    mask: &VocabMask,
    n: usize,
    v: usize,
) -> candle_core::Result<Tensor> {
    let dev = x.device();
    let m = mask.tensor(dev, v)?.broadcast_as((n, v))?;
    let zeros = Tensor::zeros((1, 1), DType::F32, dev)?.broadcast_as((n, v))?;
    // Σ_{not selected} e: for a mass close to 1, ln_1p(−unsel/Z) keeps the relative precision
    // that ln(sel) − ln(Z) loses to cancellation.
    let unsel_sum = row_sum(&m.where_cond(&zeros, e)?)?;
    let neg_inf = Tensor::new(&[f32::NEG_INFINITY], dev)?
        .reshape((1, 1))?
        .broadcast_as((n, v))?;
    let sel = m.where_cond(x, &neg_inf)?;
    let sel_max = sel.max_keepdim(1)?;
    // A row with nothing selected has sel_max = -inf and a NaN sum; the host returns -inf for it
    // before looking at the sum.
    let sel_sum = row_sum(&sel.broadcast_sub(&sel_max)?.exp()?)?;
    Tensor::cat(&[&sel_max.to_dtype(DType::F64)?, &sel_sum, &unsel_sum], 1)
}

fn targets_tensor(targets: &[u32], dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_slice(targets, (targets.len(), 1), dev)
}

fn f32_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    x.to_dtype(DType::F32)?.contiguous()
}

/// Copies `(N, K)` f64 and `(N, J)` u32 column blocks to the host, row-major.
fn fetch(cols: &Tensor, ids: &Tensor) -> candle_core::Result<(Vec<f64>, Vec<u32>)> {
    let cols = cols
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let ids = ids
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<u32>()?;
    Ok((cols, ids))
}

fn eval_columns(
    logits: &Tensor,
    targets: &[u32],
    mask: Option<&VocabMask>,
    n: usize,
    v: usize,
) -> candle_core::Result<(Vec<f64>, Vec<u32>)> {
    let x = f32_rows(logits)?;
    let t = targets_tensor(targets, x.device())?;
    let r = reduce(&x, &t, n, v)?;
    let cols = match mask {
        Some(m) => Tensor::cat(&[&r.cols, &mass_cols(&x, &r.e, m, n, v)?], 1)?,
        None => r.cols,
    };
    fetch(&cols, &r.ids)
}

fn pair_columns(
    model: &Tensor,
    reference: &Tensor,
    targets: &[u32],
    mask: Option<&VocabMask>,
    n: usize,
    v: usize,
) -> candle_core::Result<(Vec<f64>, Vec<u32>)> {
    let xm = f32_rows(model)?;
    let xr = f32_rows(reference)?;
    let t = targets_tensor(targets, xm.device())?;
    let rm = reduce(&xm, &t, n, v)?;
    let rr = reduce(&xr, &t, n, v)?;
    let dev = xm.device();
    // c_dev = (m_r − m_m) + (ln Z_r − ln Z_m), the per-row constant of ln r_i − ln p_i = d_i − c,
    // rounded to the f32 the element-wise terms use (the host corrects for that rounding)
    let dm = (&rr.max - &rm.max)?.to_dtype(DType::F64)?;
    let c_dev = (dm + (rr.z.log()? - rm.z.log()?)?)?.to_dtype(DType::F32)?;
    let zeros = Tensor::zeros((1, 1), DType::F32, dev)?.broadcast_as((n, v))?;
    let terms = (&xr - &xm)?.broadcast_sub(&c_dev)?.mul(&rr.e)?;
    // Only entries with reference weight count (0·∞ and 0·NaN terms are left out, as on the host).
    let kl_sum = row_sum(&rr.e.gt(0f32)?.where_cond(&terms, &zeros)?)?;
    // The model rules out (-inf) a token the reference gives positive f64 weight: KL = +inf.
    // (the floor is far below the threshold, so the clamped xs decides the same as x − m)
    let ref_positive = rr.xs.ge(F64_EXP_UNDERFLOW_NATS as f32)?;
    let model_zero = xm.eq(f32::NEG_INFINITY)?;
    let kl_inf = (ref_positive * model_zero)?
        .max_keepdim(1)?
        .to_dtype(DType::F64)?;
    let mut parts = vec![rm.cols, rr.cols];
    if let Some(m) = mask {
        parts.push(mass_cols(&xm, &rm.e, m, n, v)?);
    }
    parts.extend([c_dev.to_dtype(DType::F64)?, kl_inf, kl_sum]);
    let cols = Tensor::cat(&parts, 1)?;
    let ids = Tensor::cat(&[&rm.ids, &rr.ids], 1)?;
    fetch(&cols, &ids)
}
