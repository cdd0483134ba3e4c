//! What differs between `eval` and `compare`, behind one chunk loop ([`score_batch`]): a mode
//! runs the forward pass(es), computes one chunk of per-token statistics (on the host in f64 or on
//! the logits' device, see [`crate::device_stats`]), folds a token into its aggregate and builds
//! its row.

use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use surprisal_metrics::{
    log_mass, pair_stats, token_stats, EvalAggregate, EvalSummary, MetricsError, PairStats,
    TokenStats,
};

use crate::device_stats::{self, DeviceOutcome, DeviceRow, StatsLocation, VocabMask};
use crate::error::{Result, RunError};
use crate::model::Scorer;
use crate::output::rows::{CompareRow, RowKind, TokenRow};
use crate::protocol::ScoredToken;
use crate::top_kl::{context_texts, CompareAgg, CompareReport, TopKlPosition};

/// One scored token of a batch: `(row in batch, token)`.
pub(crate) type Item = (usize, ScoredToken);

/// Statistics of one chunk, one entry per position: the per-token result (an error is reported
/// for its position by the caller) and `log P_bow` when a word mask was given.
pub(crate) type ChunkStats<T> = Vec<(std::result::Result<T, MetricsError>, Option<f64>)>;

/// Aggregate and summary of a mode: what a checkpoint holds and what `summary.json` reports.
pub(crate) trait Aggregate: Default + Clone + Serialize + DeserializeOwned {
    /// What the aggregate reports.
    type Summary: Serialize + DeserializeOwned;
    /// Tokens aggregated.
    fn count(&self) -> u64;
    /// The summary, given the byte and word counts of the scored text.
    fn summary(&self, bytes: Option<u64>, words: Option<u64>) -> Self::Summary;
    /// Folds in the aggregate of the windows that follow (`surprisal merge`).
    fn merge(&mut self, later: &Self);
}

impl Aggregate for EvalAggregate {
    type Summary = EvalSummary;
    fn count(&self) -> u64 {
        EvalAggregate::count(self)
    }
    fn summary(&self, bytes: Option<u64>, words: Option<u64>) -> EvalSummary {
        EvalAggregate::summary(self, bytes, words)
    }
    fn merge(&mut self, later: &Self) {
        EvalAggregate::merge(self, later);
    }
}

impl Aggregate for CompareAgg {
    type Summary = CompareReport;
    fn count(&self) -> u64 {
        self.metrics.count()
    }
    fn summary(&self, bytes: Option<u64>, words: Option<u64>) -> CompareReport {
        self.report(bytes, words)
    }
    fn merge(&mut self, later: &Self) {
        CompareAgg::merge(self, later);
    }
}

/// A batch ready for scoring.
pub(crate) struct Batch<'a> {
    /// Model inputs, one per window.
    pub inputs: Vec<&'a [u32]>,
    /// Scored tokens in stream order.
    pub items: Vec<Item>,
    /// Logit rows materialized at once.
    pub chunk_rows: usize,
    /// Token text (rows, top-KL context).
    pub token_text: &'a dyn Fn(u32) -> String,
    /// Turns a per-token metrics error into the run's error (naming the document).
    pub on_error: &'a dyn Fn(&ScoredToken, MetricsError) -> RunError,
}

/// Where a batch's per-token outputs go.
pub(crate) struct Outputs<'a, R> {
    /// Per-token rows, when written.
    pub rows: Option<&'a mut Vec<R>>,
    /// Per-word inputs: `(nll, log P_bow)` per item over the mask, when words are written.
    pub words: Option<(&'a VocabMask, &'a mut Vec<(f64, f64)>)>,
}

/// What differs between eval and compare.
pub(crate) trait Mode {
    type Agg: Aggregate;
    type Row: RowKind;
    type Hidden;
    type Stats;
    /// Host logit buffers.
    type Buffers: Default;
    const NAME: &'static str;
    fn max_context(&self) -> Option<usize>;
    fn vocab_size(&self) -> usize;
    /// Where this run computes per-token statistics.
    fn stats_on(&self) -> StatsLocation;
    fn forward(&self, inputs: &[&[u32]]) -> Result<Self::Hidden>;
    /// One chunk's statistics: on the device when enabled and the chunk allows it, else on the
    /// host (from the device tensor when the device path handed the chunk back, so the host path
    /// sees the same logits and reports the same error).
    fn chunk_stats(
        &self,
        hidden: &Self::Hidden,
        pairs: &[(usize, usize)],
        targets: &[u32],
        mask: Option<&VocabMask>,
        bufs: &mut Self::Buffers,
    ) -> Result<ChunkStats<Self::Stats>>;
    /// Folds one token into the aggregate.
    fn push(&self, agg: &mut Self::Agg, b: &Batch<'_>, item: &Item, s: &Self::Stats);
    /// The model's NLL of the token (nats).
    fn nll_nats(s: &Self::Stats) -> f64;
    /// The token's row.
    fn row(st: &ScoredToken, s: &Self::Stats, text: String) -> Self::Row;
}

/// Scores one batch: forward pass(es), then the statistics chunk by chunk, folded in stream
/// order into `agg` and the outputs.
pub(crate) fn score_batch<M: Mode>(
    mode: &M,
    b: &Batch<'_>,
    agg: &mut M::Agg,
    mut out: Outputs<'_, M::Row>,
) -> Result<()> {
    let hidden = mode.forward(&b.inputs)?;
    let mask = out.words.as_ref().map(|(m, _)| *m);
    let mut bufs = M::Buffers::default();
    let mut pairs = Vec::with_capacity(b.chunk_rows);
    let mut targets = Vec::with_capacity(b.chunk_rows);
    for chunk in b.items.chunks(b.chunk_rows) {
        pairs.clear();
        pairs.extend(chunk.iter().map(|(r, st)| (*r, st.position)));
        targets.clear();
        targets.extend(chunk.iter().map(|(_, st)| st.token.id));
        let stats = mode.chunk_stats(&hidden, &pairs, &targets, mask, &mut bufs)?;
        for (item, (s, lpb)) in chunk.iter().zip(stats) {
            let st = &item.1;
            let s = s.map_err(|e| (b.on_error)(st, e))?;
            mode.push(agg, b, item, &s);
            if let (Some((_, w)), Some(lpb)) = (out.words.as_mut(), lpb) {
                w.push((M::nll_nats(&s), lpb));
            }
            if let Some(rows) = out.rows.as_deref_mut() {
                rows.push(M::row(st, &s, (b.token_text)(st.token.id)));
            }
        }
    }
    Ok(())
}

/// `f(0..n)` in order; in parallel when the rows are big enough to be worth
/// it (rows are independent; the caller aggregates in order, so results do
/// not depend on the thread count).
fn map_rows<T: Send>(n: usize, vocab: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if n > 1 && n * vocab >= 1 << 16 {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

fn check_logits(got: usize, pairs: usize, vocab: usize) -> Result<()> {
    if got != pairs * vocab {
        return Err(RunError::Model(format!(
            "Scorer::logits returned {got} values for {pairs} positions of vocabulary {vocab}"
        )));
    }
    Ok(())
}

/// A chunk computed on the device, in the shape the host path returns.
fn device_chunk<S>(rows: Vec<DeviceRow<S>>) -> ChunkStats<S> {
    rows.into_iter()
        .map(|r| (Ok(r.stats), r.log_mass_nats))
        .collect()
}

/// `logits_tensor` of a scorer that said it supports device tensors.
fn device_logits<S: Scorer>(
    s: &S,
    hidden: &S::Hidden,
    pairs: &[(usize, usize)],
) -> Result<candle_core::Tensor> {
    s.logits_tensor(hidden, pairs)?.ok_or_else(|| {
        RunError::DeviceStats(
            "the scorer named a logits device but returned no logits tensor".into(),
        )
    })
}

fn token_row(st: &ScoredToken, ts: &TokenStats, text: String) -> TokenRow {
    TokenRow {
        doc: st.token.doc as u64,
        index: st.token.index as u64,
        token_id: st.token.id,
        token: text,
        byte_start: st.token.byte_start as u64,
        byte_end: st.token.byte_end as u64,
        nll_nats: ts.nll_nats,
        entropy_nats: ts.entropy_nats,
        varentropy_nats2: ts.varentropy_nats2,
        top1_id: ts.top1_id,
        top1_prob: ts.top1_prob,
        target_rank: ts.target_rank,
        context_len: st.context_len() as u64,
    }
}

/// `eval`: one model.
pub(crate) struct EvalMode<'a, S> {
    pub s: &'a S,
    pub stats_on: StatsLocation,
}

impl<S: Scorer> Mode for EvalMode<'_, S> {
    type Agg = EvalAggregate;
    type Row = TokenRow;
    type Hidden = S::Hidden;
    type Stats = TokenStats;
    type Buffers = Vec<f32>;
    const NAME: &'static str = "eval";
    fn max_context(&self) -> Option<usize> {
        self.s.max_context()
    }
    fn vocab_size(&self) -> usize {
        self.s.vocab_size()
    }
    fn stats_on(&self) -> StatsLocation {
        self.stats_on
    }
    fn forward(&self, inputs: &[&[u32]]) -> Result<S::Hidden> {
        self.s.forward(inputs)
    }
    fn chunk_stats(
        &self,
        hidden: &S::Hidden,
        pairs: &[(usize, usize)],
        targets: &[u32],
        mask: Option<&VocabMask>,
        buf: &mut Vec<f32>,
    ) -> Result<ChunkStats<TokenStats>> {
        let v = self.s.vocab_size();
        buf.clear();
        if self.stats_on == StatsLocation::Device {
            let logits = device_logits(self.s, hidden, pairs)?;
            match device_stats::token_stats(&logits, targets, mask)? {
                DeviceOutcome::Computed(rows) => return Ok(device_chunk(rows)),
                DeviceOutcome::HostNeeded(why) => {
                    tracing::debug!(?why, "device statistics: chunk handed to the host path");
                    *buf = device_stats::to_host(&logits)?;
                }
            }
        } else {
            self.s.logits(hidden, pairs, buf)?;
        }
        check_logits(buf.len(), pairs.len(), v)?;
        let mask = mask.map(VocabMask::as_slice);
        Ok(map_rows(pairs.len(), v, |k| {
            let row = &buf[k * v..(k + 1) * v];
            (token_stats(row, targets[k]), mask.map(|m| log_mass(row, m)))
        }))
    }
    fn push(&self, agg: &mut EvalAggregate, _: &Batch<'_>, (_, st): &Item, s: &TokenStats) {
        agg.push(s, st.context_len());
    }
    fn nll_nats(s: &TokenStats) -> f64 {
        s.nll_nats
    }
    fn row(st: &ScoredToken, s: &TokenStats, text: String) -> TokenRow {
        token_row(st, s, text)
    }
}

/// `compare`: a model against a reference on the same windows.
pub(crate) struct CompareMode<'a, S, R> {
    pub m: &'a S,
    pub r: &'a R,
    pub stats_on: StatsLocation,
}

impl<S: Scorer, R: Scorer> Mode for CompareMode<'_, S, R> {
    type Agg = CompareAgg;
    type Row = CompareRow;
    type Hidden = (S::Hidden, R::Hidden);
    type Stats = PairStats;
    type Buffers = (Vec<f32>, Vec<f32>);
    const NAME: &'static str = "compare";
    fn max_context(&self) -> Option<usize> {
        joint_max_context(self.m.max_context(), self.r.max_context())
    }
    fn vocab_size(&self) -> usize {
        self.m.vocab_size()
    }
    fn stats_on(&self) -> StatsLocation {
        self.stats_on
    }
    fn forward(&self, inputs: &[&[u32]]) -> Result<Self::Hidden> {
        Ok((self.m.forward(inputs)?, self.r.forward(inputs)?))
    }
    /// Words follow the model (not the reference).
    fn chunk_stats(
        &self,
        (hm, hr): &Self::Hidden,
        pairs: &[(usize, usize)],
        targets: &[u32],
        mask: Option<&VocabMask>,
        (bm, br): &mut Self::Buffers,
    ) -> Result<ChunkStats<PairStats>> {
        let v = self.m.vocab_size();
        bm.clear();
        br.clear();
        if self.stats_on == StatsLocation::Device {
            let lm = device_logits(self.m, hm, pairs)?;
            let lr = device_logits(self.r, hr, pairs)?;
            match device_stats::pair_stats(&lm, &lr, targets, mask)? {
                DeviceOutcome::Computed(rows) => return Ok(device_chunk(rows)),
                DeviceOutcome::HostNeeded(why) => {
                    tracing::debug!(?why, "device statistics: chunk handed to the host path");
                    *bm = device_stats::to_host(&lm)?;
                    *br = device_stats::to_host(&lr)?;
                }
            }
        } else {
            self.m.logits(hm, pairs, bm)?;
            self.r.logits(hr, pairs, br)?;
        }
        check_logits(bm.len(), pairs.len(), v)?;
        check_logits(br.len(), pairs.len(), v)?;
        let mask = mask.map(VocabMask::as_slice);
        Ok(map_rows(pairs.len(), v, |k| {
            let r = k * v..(k + 1) * v;
            (
                pair_stats(&bm[r.clone()], &br[r.clone()], targets[k]),
                mask.map(|m| log_mass(&bm[r], m)),
            )
        }))
    }
    fn push(&self, agg: &mut CompareAgg, b: &Batch<'_>, (row, st): &Item, ps: &PairStats) {
        agg.metrics.push(ps, st.context_len());
        let (doc, index) = (st.token.doc as u64, st.token.index as u64);
        agg.top_kl.offer(ps.kl_nats, doc, index, || {
            let w = b.inputs[*row];
            let (before, after) = context_texts(w, st.position + 1, b.token_text);
            TopKlPosition {
                kl_nats: ps.kl_nats,
                doc,
                index,
                token_id: st.token.id,
                token: (b.token_text)(st.token.id),
                context_before: before,
                context_after: after,
                nll_nats: ps.model.nll_nats,
                ref_nll_nats: ps.reference.nll_nats,
            }
        });
    }
    fn nll_nats(s: &PairStats) -> f64 {
        s.model.nll_nats
    }
    fn row(st: &ScoredToken, ps: &PairStats, text: String) -> CompareRow {
        CompareRow {
            model: token_row(st, &ps.model, text),
            kl_nats: ps.kl_nats,
            ref_nll_nats: ps.reference.nll_nats,
            ref_top1_id: ps.reference.top1_id,
        }
    }
}

/// The context both models support: the smaller bound.
pub fn joint_max_context(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_rows_keeps_order_in_both_paths() {
        for (n, v) in [(3, 10), (5000, 100)] {
            let got = map_rows(n, v, |k| k * 3 + 1);
            assert_eq!(got, (0..n).map(|k| k * 3 + 1).collect::<Vec<_>>());
        }
    }
}
