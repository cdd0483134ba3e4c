//! Per-row (per scored token) statistics of a softmax distribution.
//!
//! Everything is computed from raw logits in `f64` with a max shift
//! (log-sum-exp), in three passes over the row:
//!
//! 1. validate, find the max logit, the arg-max and the target's rank
//!    (pure `f32` compares, no transcendental work);
//! 2. `e_i = exp(x_i - max)` once per element, stored in a reusable scratch
//!    buffer, while accumulating `Z = Σ e_i`, `Σ e_i·u_i` and `Σ e_i²`
//!    (`u_i = max - x_i ≥ 0`);
//! 3. the *centered* second moment `Σ e_i·(u_i - ū)²` from the stored `e_i`.
//!
//! The scratch buffer exists because varentropy must be centered (see the
//! crate docs) and we refuse to pay a second `exp` per element for it; it is
//! reused across rows so there is no allocation per row once warm.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

use crate::error::MetricsError;

/// Statistics of one predicted distribution `p = softmax(logits)` and one
/// observed target token. All logarithms are natural (nats).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenStats {
    /// Surprisal of the target, `-ln p[target]` (nats). `+inf` when the
    /// target's logit is `-inf` (the model ruled the observed token out).
    pub nll_nats: f64,
    /// Shannon entropy `H = -Σ p_i ln p_i` (nats).
    pub entropy_nats: f64,
    /// Varentropy `Σ p_i (-ln p_i - H)²` (nats²): variance of the surprisal.
    pub varentropy_nats2: f64,
    /// Min-entropy `-ln max_i p_i` (nats).
    pub min_entropy_nats: f64,
    /// Rényi entropy of order 2 (collision entropy) `-ln Σ p_i²` (nats).
    pub renyi2_entropy_nats: f64,
    /// Arg-max token id; ties go to the lowest index.
    pub top1_id: u32,
    /// `max_i p_i` (probability, unitless).
    pub top1_prob: f64,
    /// `1 + #{i : logit_i > logit_target}` (strict, so tied logits share the
    /// best rank; 1 means the target is *an* arg-max). Ranked by logits, not by
    /// rounded probabilities, so it is exact even where `exp` underflows.
    pub target_rank: u64,
    /// The scored target id, kept so aggregates can decide top-1 correctness
    /// (`top1_id == target_id`) without the caller re-supplying it.
    pub target_id: u32,
}

impl TokenStats {
    /// Whether the arg-max (lowest index among ties) is the target. This is
    /// the top-1 accuracy criterion; it differs from `target_rank == 1` only
    /// when the target ties for the max with a lower-index token.
    pub fn top1_correct(&self) -> bool {
        self.top1_id == self.target_id
    }

    /// `p[target] = exp(-nll)` (probability, unitless).
    pub fn target_prob(&self) -> f64 {
        (-self.nll_nats).exp()
    }
}

/// Statistics of a model distribution compared with a reference distribution
/// for the same position and target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairStats {
    /// Per-token statistics of the model row.
    pub model: TokenStats,
    /// Per-token statistics of the reference row.
    pub reference: TokenStats,
    /// `KL(reference ‖ model) = Σ p_ref,i (ln p_ref,i - ln p_model,i)` (nats).
    /// Terms with `p_ref,i = 0` contribute 0; `+inf` when the model assigns
    /// probability 0 (logit `-inf`) where the reference does not. May be a
    /// few ulps below 0 through rounding; it is not clamped so that bias is
    /// visible rather than hidden.
    pub kl_nats: f64,
    /// `p_model[target] - p_ref[target]` (probability, unitless).
    pub target_prob_delta: f64,
    /// Whether both arg-maxes (lowest index on ties) are the same token.
    pub top1_agrees: bool,
}

/// Reusable buffers for [`token_stats_with`] / [`pair_stats_with`].
///
/// Holds up to two `f64` rows (`16·V` bytes, ~4.8 MB at V = 300k). The free
/// functions [`token_stats`] / [`pair_stats`] use a thread-local instance, so
/// most callers never need this type; it exists for callers that want to
/// control memory explicitly.
#[derive(Clone, Debug, Default)]
pub struct RowScratch {
    model: Vec<f64>,
    reference: Vec<f64>,
}

impl RowScratch {
    /// Empty scratch; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

thread_local! {
    static SCRATCH: RefCell<RowScratch> = RefCell::new(RowScratch::default());
}

/// Runs `f` with the thread-local scratch, or a fresh one if it is somehow
/// already borrowed (cannot happen today, but this keeps the path panic-free).
fn with_thread_scratch<T>(f: impl FnOnce(&mut RowScratch) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut RowScratch::default()),
    })
}

/// Per-token statistics of `softmax(logits)` for the observed `target`.
///
/// Uses a thread-local scratch buffer, so there is no per-row allocation once
/// a thread has seen its largest vocabulary.
pub fn token_stats(logits: &[f32], target: u32) -> Result<TokenStats, MetricsError> {
    with_thread_scratch(|s| token_stats_with(s, logits, target))
}

/// [`token_stats`] with caller-owned scratch.
pub fn token_stats_with(
    scratch: &mut RowScratch,
    logits: &[f32],
    target: u32,
) -> Result<TokenStats, MetricsError> {
    row_core(logits, target, &mut scratch.model).map(|(stats, _)| stats)
}

/// Statistics of a model row against a reference row (same vocabulary, same
/// target): both rows' [`TokenStats`], `KL(reference ‖ model)`, the change in
/// target probability and arg-max agreement.
pub fn pair_stats(
    model_logits: &[f32],
    reference_logits: &[f32],
    target: u32,
) -> Result<PairStats, MetricsError> {
    with_thread_scratch(|s| pair_stats_with(s, model_logits, reference_logits, target))
}

/// [`pair_stats`] with caller-owned scratch.
///
/// Errors are checked in this order: vocabulary mismatch, then the model row
/// (empty, target range, non-finite, all masked), then the reference row.
pub fn pair_stats_with(
    scratch: &mut RowScratch,
    model_logits: &[f32],
    reference_logits: &[f32],
    target: u32,
) -> Result<PairStats, MetricsError> {
    if model_logits.len() != reference_logits.len() {
        return Err(MetricsError::VocabMismatch {
            model: model_logits.len(),
            reference: reference_logits.len(),
        });
    }
    let (model, m_norm) = row_core(model_logits, target, &mut scratch.model)?;
    let (reference, r_norm) = row_core(reference_logits, target, &mut scratch.reference)?;

    // ln p_ref,i - ln p_model,i = (x_r,i - x_m,i) - c with
    // c = (max_r + ln Z_r) - (max_m + ln Z_m). Summing p_ref-weighted
    // *centered* terms (rather than Σ p δ - c) keeps the result accurate when
    // both rows carry a large common offset.
    let c = (r_norm.max + r_norm.ln_z) - (m_norm.max + m_norm.ln_z);
    let n = reference_logits.len();
    let e_ref = &scratch.reference[..n];
    let mut acc = [0.0f64; 4];
    for (j, ((&e, &xr), &xm)) in e_ref
        .iter()
        .zip(reference_logits)
        .zip(model_logits)
        .enumerate()
    {
        acc[j % 4] += kl_term(e, xr, xm, c);
    }
    let kl_nats = ((acc[0] + acc[1]) + (acc[2] + acc[3])) / r_norm.z;

    let t = target as usize;
    let p_model = scratch.model[t] / m_norm.z;
    let p_ref = e_ref[t] / r_norm.z;
    let top1_agrees = model.top1_id == reference.top1_id;
    Ok(PairStats {
        model,
        reference,
        kl_nats,
        target_prob_delta: p_model - p_ref,
        top1_agrees,
    })
}

/// One unnormalised KL term `e_ref · (ln p_ref - ln p_model)`; zero-weight
/// terms are skipped so that `0 · ∞` never produces NaN.
#[inline(always)]
fn kl_term(e_ref: f64, x_ref: f32, x_model: f32, c: f64) -> f64 {
    if e_ref > 0.0 {
        e_ref * ((f64::from(x_ref) - f64::from(x_model)) - c)
    } else {
        0.0
    }
}

/// Normalisation of a row, needed to compare two rows.
struct RowNorm {
    /// Max logit (as `f64`).
    max: f64,
    /// `Z = Σ exp(x_i - max)`, in `[1, V]`.
    z: f64,
    /// `ln Z`.
    ln_z: f64,
}

/// NaN or `+inf`: the logits we refuse (`-inf` is a legal mask).
#[inline(always)]
fn is_rejected(x: f32) -> bool {
    x.is_nan() || x == f32::INFINITY
}

/// Validation + max/argmax/rank pass. Returns `(max, argmax, rank)`.
fn scan(logits: &[f32], target: u32) -> Result<(f32, usize, u64), MetricsError> {
    if logits.is_empty() {
        return Err(MetricsError::EmptyRow);
    }
    let t = target as usize;
    let Some(&x_t) = logits.get(t) else {
        return Err(MetricsError::TargetOutOfRange {
            target,
            vocab: logits.len(),
        });
    };
    // Lane-wise accumulators so the compiler can vectorise the loop; NaN and
    // +inf are only *flagged* here and located afterwards (rare path).
    const L: usize = 8;
    let mut mx = [f32::NEG_INFINITY; L];
    let mut gt = [0u64; L];
    let mut bad = [false; L];
    let chunks = logits.chunks_exact(L);
    let rest = chunks.remainder();
    for chunk in chunks {
        for lane in 0..L {
            let x = chunk[lane];
            bad[lane] |= is_rejected(x);
            mx[lane] = if x > mx[lane] { x } else { mx[lane] };
            gt[lane] += u64::from(x > x_t);
        }
    }
    for &x in rest {
        bad[0] |= is_rejected(x);
        mx[0] = if x > mx[0] { x } else { mx[0] };
        gt[0] += u64::from(x > x_t);
    }
    if bad.iter().any(|&b| b) {
        if let Some((index, &value)) = logits.iter().enumerate().find(|(_, &x)| is_rejected(x)) {
            return Err(MetricsError::NonFiniteLogit { index, value });
        }
    }
    let max = mx.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return Err(MetricsError::AllMasked);
    }
    // First index attaining the max: lowest-index tie rule. Always found
    // because `max` is one of the elements; 0 is an unreachable fallback.
    let argmax = logits.iter().position(|&x| x == max).unwrap_or(0);
    Ok((max, argmax, 1 + gt.iter().sum::<u64>()))
}

/// Full per-row computation; leaves `exp(x_i - max)` in `buf` for callers
/// (KL) that need the weights again.
fn row_core(
    logits: &[f32],
    target: u32,
    buf: &mut Vec<f64>,
) -> Result<(TokenStats, RowNorm), MetricsError> {
    let (max_f32, argmax, target_rank) = scan(logits, target)?;
    let m = f64::from(max_f32);

    // Pass 2: e_i = exp(x_i - m) ∈ [0, 1], Z, Σ e·u, Σ e².
    // The arg-max term (e = 1 exactly) is left out of the Z and Σe² sums so
    // that ln Z = ln_1p(Σ_rest e) keeps full relative precision for peaked
    // rows, where Z = 1 + tiny and min-entropy / NLL of a confident correct
    // prediction are themselves tiny.
    buf.clear();
    buf.reserve(logits.len());
    const L: usize = 4;
    let mut z_rest = [0.0f64; L];
    let mut eu = [0.0f64; L];
    let mut e2_rest = [0.0f64; L];
    for (i, &x) in logits.iter().enumerate() {
        let u = m - f64::from(x); // ≥ 0, +inf for masked logits
        let e = (-u).exp(); // exp(-inf) = 0
        buf.push(e);
        let lane = i % L;
        let e_rest = if i == argmax { 0.0 } else { e };
        z_rest[lane] += e_rest;
        e2_rest[lane] += e_rest * e_rest;
        // Masked entries have e = 0 and u = inf: skip to avoid 0·inf = NaN.
        eu[lane] += if e > 0.0 { e * u } else { 0.0 };
    }
    let z_rest = (z_rest[0] + z_rest[1]) + (z_rest[2] + z_rest[3]);
    let eu = (eu[0] + eu[1]) + (eu[2] + eu[3]);
    let e2_rest = (e2_rest[0] + e2_rest[1]) + (e2_rest[2] + e2_rest[3]);
    let z = 1.0 + z_rest;
    let ln_z = z_rest.ln_1p();
    // ū = E_p[u] = E_p[-ln p] - ln Z.
    let u_mean = eu / z;

    // Pass 3: centered second moment Σ e (u - ū)² — avoids the catastrophic
    // cancellation of E[s²] - E[s]² when the spread is small relative to ū.
    let mut v = [0.0f64; L];
    for (i, (&e, &x)) in buf.iter().zip(logits).enumerate() {
        if e > 0.0 {
            let d = (m - f64::from(x)) - u_mean;
            v[i % L] += e * d * d;
        }
    }
    let v = (v[0] + v[1]) + (v[2] + v[3]);

    let x_t = f64::from(logits[target as usize]);
    let stats = TokenStats {
        // -ln p_t = ln Z + (m - x_t); +inf for a masked target.
        nll_nats: ln_z + (m - x_t),
        entropy_nats: ln_z + u_mean,
        varentropy_nats2: v / z,
        // The max element has e = 1, so p_max = 1/Z and -ln p_max = ln Z.
        min_entropy_nats: ln_z,
        // -ln(Σe²/Z²) = 2 ln Z - ln Σe², with Σe² = 1 + Σ_rest e².
        renyi2_entropy_nats: 2.0 * ln_z - e2_rest.ln_1p(),
        top1_id: argmax as u32,
        top1_prob: 1.0 / z,
        target_rank,
        target_id: target,
    };
    Ok((stats, RowNorm { max: m, z, ln_z }))
}
