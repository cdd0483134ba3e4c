//! # surprisal-metrics
//!
//! Pure numerics for measuring how well a causal LM predicts text: per-token
//! statistics of a softmax distribution, model-vs-reference comparisons, and
//! streaming, mergeable, serializable aggregates. No I/O, no model code.
//!
//! All logarithms are natural; every field name carries its unit
//! (`_nats`, `_nats2`, `bits_per_…`). Computation is in `f64` from `f32`
//! logits with a max shift (log-sum-exp).
//!
//! ## Per-token quantities ([`token_stats`] → [`TokenStats`])
//!
//! For logits `x ∈ ℝ^V` (entries may be `-inf` = masked; NaN/`+inf` are
//! rejected with [`MetricsError::NonFiniteLogit`]), let `m = max_i x_i`,
//! `Z = Σ_i exp(x_i − m)`, `p_i = exp(x_i − m) / Z`, and the surprisal
//! `s_i = −ln p_i`. Terms with `p_i = 0` contribute 0 everywhere
//! (`0·∞ := 0`). For target `t`:
//!
//! | field | formula | unit |
//! |---|---|---|
//! | `nll_nats` | `s_t = −ln p_t = ln Z + m − x_t` (`+inf` if `x_t = −inf`) | nats |
//! | `entropy_nats` | `H = Σ p_i s_i` | nats |
//! | `varentropy_nats2` | `Σ p_i (s_i − H)²`, computed centered (not `E[s²]−H²`, which cancels catastrophically) | nats² |
//! | `min_entropy_nats` | `−ln max_i p_i = ln Z` | nats |
//! | `renyi2_entropy_nats` | `−ln Σ p_i² = 2 ln Z − ln Σ exp(2(x_i − m))` | nats |
//! | `top1_id` | `argmax_i x_i`, lowest index on ties | token id |
//! | `top1_prob` | `max_i p_i = 1/Z` | probability |
//! | `target_rank` | `1 + #{i : x_i > x_t}` (strict; 1 = the target is an arg-max) | rank |
//! | `target_id` | `t` | token id |
//!
//! `0 ≤ H_∞ ≤ H_2 ≤ H ≤ ln V` holds mathematically (min-entropy ≤ Rényi-2 ≤
//! Shannon).
//!
//! ## Pair quantities ([`pair_stats`] → [`PairStats`])
//!
//! With model distribution `p` and reference distribution `r` over the same
//! vocabulary (else [`MetricsError::VocabMismatch`]):
//!
//! * `kl_nats = KL(r ‖ p) = Σ_i r_i (ln r_i − ln p_i)` (nats) — the extra nats
//!   per token paid by coding reference-distributed text with the model;
//!   `+inf` if some `r_i > 0` has `p_i = 0`.
//! * `target_prob_delta = p_t − r_t` (probability).
//! * `top1_agrees = (argmax p == argmax r)` (lowest-index tie rule on both).
//!
//! ## Vocabulary-subset mass ([`log_mass`])
//!
//! `log_mass(x, mask) = ln Σ_{i ∈ mask} p_i`, e.g. the probability that the
//! next token starts a new word (per-word surprisal's `log P_bow`).
//!
//! ## Aggregates
//!
//! [`MeanStat`] keeps count, Welford mean and centered `M2` (merged with
//! Chan et al.'s formula) plus a Neumaier-compensated sum. Standard errors use
//! the `ddof = 1` sample standard deviation: `se = s/√N`; they are NaN for
//! `N < 2`, and means are NaN for `N = 0`.
//!
//! [`EvalAggregate::summary`] → [`EvalSummary`] over N scored tokens:
//!
//! * `mean_nll_nats = (1/N) Σ s_t` (nats/token); `perplexity = exp(mean_nll)`;
//!   `perplexity_ci95 = exp(mean_nll ± 1.96·se)`;
//!   `bits_per_token = mean_nll / ln 2` (bits).
//! * `bits_per_byte = Σ s_t / (B · ln 2)` (bits/byte), `byte_perplexity =
//!   exp(Σ s_t / B)`, `word_perplexity = exp(Σ s_t / W)` for caller-supplied
//!   byte count `B` and word count `W` (`None` when absent or zero).
//! * means (and stderrs) of entropy, varentropy, min-entropy, Rényi-2 entropy,
//!   top-1 probability.
//! * `top1_accuracy = (1/N) #{top1_id == target_id}` — the arg-max with the
//!   lowest-index tie rule must be the target, so a target tied for the max
//!   with a lower-index token counts as wrong even though its `target_rank`
//!   is 1.
//! * **Calibration**: 15 equal-width bins of confidence `c = top1_prob`;
//!   bin `b = min(⌊15c⌋, 14)`, i.e. `[b/15, (b+1)/15)` with 1.0 in the last
//!   bin. `ECE = Σ_b (n_b/N)·|acc_b − conf_b|` where `acc_b` is the fraction
//!   of top-1-correct tokens and `conf_b` the mean `top1_prob` in bin `b`.
//!   All 15 bins are reported ([`CalibrationBin`]).
//! * **Position bins**: by `context_len` (tokens seen before the scored
//!   token), log2-spaced: `[0,0], [1,1], [2,3], [4,7], …, [2^(k−1), 2^k−1]`;
//!   bin index `0` for 0 else `⌊log2 c⌋ + 1`. Only non-empty bins are
//!   reported, each with count, mean NLL and mean entropy ([`PositionBin`]).
//!
//! [`CompareAggregate::summary`] → [`CompareSummary`] adds mean KL (± se),
//! KL and target-probability-delta quantiles, top-1 agreement,
//! `delta_mean_nll_nats = mean(s_model − s_ref)` with the *paired* standard
//! error (std of per-token differences / √N, see [`PairedDiff`]),
//! `perplexity_ratio = exp(Δ)` with `exp(Δ ± 1.96·se)`, mean and RMS of the
//! target-probability delta, and the mean entropy difference.
//!
//! ## Quantiles
//!
//! [`Quantiles`] at q ∈ {0, .001, .01, .05, .1, .25, .5, .75, .9, .95, .99,
//! .999, 1} are exact: every value is kept and sorted at summary time, then
//! interpolated linearly exactly as NumPy's default `np.quantile`
//! (`method="linear"`, Hyndman–Fan type 7): `h = (N−1)q`, `j = ⌊h⌋`,
//! `Q = x_(j) + (h − j)(x_(j+1) − x_(j))` (see [`quantile_sorted`]).
//!
//! ## Merging and checkpoints
//!
//! Every aggregate implements `merge`: `a.merge(&b)` equals (to rounding) a
//! single aggregate fed both streams, so shards can be scored in parallel.
//! All aggregates are serde-serializable for checkpointing; in human-readable
//! formats (JSON) their non-finite internal values are written as the strings
//! `"nan"`, `"inf"`, `"-inf"` so checkpoints round-trip (plain `serde_json`
//! would write `null` and then fail to read it back). Summaries are plain
//! output structs: their NaN/inf fields serialize as `null` in JSON.
//!
//! ## Regression gates ([`DeltaEstimate`], [`upper_bound`], [`normal_quantile`])
//!
//! Paired `Δ = mean(c − b)` with `se = sd(c − b)/√N`, or unpaired `mean_c − mean_b` with
//! `√(se_b² + se_c²)`; one-sided bounds `Δ ± Φ⁻¹(q)·se` (module `gate`).
//!
//! ## Performance
//!
//! [`token_stats`] makes three passes over the row with one `exp` per element
//! in total, reusing a thread-local `f64` scratch buffer (no per-row
//! allocation once warm; `16·V` bytes per thread). Rows are independent, so
//! callers can parallelise across rows.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod calibration;
mod compare_aggregate;
mod error;
mod eval_aggregate;
mod gate;
mod mass;
mod mean;
mod position_bins;
mod quantiles;
mod row;
mod serde_f64;

pub use calibration::{ece_bin_index, CalibrationAccumulator, CalibrationBin, ECE_BINS};
pub use compare_aggregate::{CompareAggregate, CompareSummary};
pub use error::MetricsError;
pub use eval_aggregate::{exp_ci95, EvalAggregate, EvalSummary, Z_95};
pub use gate::{lower_bound, normal_quantile, proportion_stderr, upper_bound, DeltaEstimate};
pub use mass::log_mass;
pub use mean::{MeanStat, PairedDiff};
pub use position_bins::{position_bin_index, position_bin_range, PositionAccumulator, PositionBin};
pub use quantiles::{quantile_sorted, QuantileSample, Quantiles, QUANTILE_LEVELS};
pub use row::{
    pair_stats, pair_stats_with, token_stats, token_stats_with, PairStats, RowScratch, TokenStats,
};
