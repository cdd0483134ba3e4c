//! The evaluation engine: documents → tokens → windows → batched forwards →
//! per-token statistics → aggregates, per-token rows, checkpoints, summary.
//!
//! Entry points: [`evaluate`] (one model) and [`compare`] (a model against a
//! reference model, in lockstep on the same windows).
//!
//! # Per-word rows (`RunOptions::words`)
//!
//! With words requested, every scored position also yields `log P_bow`, the
//! log mass of the word-initial tokens ([`crate::words::bow_mask`] of the
//! decoded vocabulary plus EOS) under the distribution that predicted the
//! token. The engine collects, per document, each token's byte span, NLL and
//! `log P_bow` as the token is scored (a document's tokens may be spread over
//! several windows; for `sliding` / `chunks` documents share windows), and
//! writes the document's [`WordRow`]s ([`crate::words::word_rows`]) once the
//! planner has scored past it, so only the documents still in flight are
//! held. The `log P_bow` *after* a document's last token is the one of the
//! distribution that predicted the next document's first token when that
//! distribution saw the previous token (`sliding` / `chunks`, which
//! concatenate documents); `rolling` scores documents independently and never
//! computes it, so there the last word of each document has no corrected
//! surprisal. Tokens that are never scored (the first token without BOS,
//! `chunks` first halves, tokens past `max_tokens`) make their words `None`.
//! Pending documents' scores are part of the checkpoint, so a resumed run
//! writes the same `words.*` file as an uninterrupted one.
//!
//! # Interruption
//!
//! `RunOptions::interrupt` is checked between batches; once set, the engine
//! checkpoints the finished batches (with an output directory) and returns
//! [`RunError::Interrupted`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use surprisal_metrics::{
    log_mass, pair_stats, token_stats, EvalAggregate, EvalSummary, MetricsError, PairStats,
    TokenStats,
};

use crate::checkpoint::{self, Fingerprint};
use crate::device_stats::{self, DeviceOutcome, DeviceRow, StatsLocation, StatsOn, VocabMask};
use crate::document::Document;
use crate::error::{Result, RunError};
use crate::model::{Scorer, Tokenize};
use crate::progress::Progress;
use crate::protocol::{
    DocTotals, ModelTokens, Planner, ProtocolConfig, ProtocolKind, ResolvedProtocol, ScoredToken,
    Window,
};
use crate::report::{now_rfc3339, write_json_atomic, ProtocolReport, Provenance, SummaryFile};
use crate::rows::{RowSink, RowsFormat, TokenRow};
use crate::top_kl::{context_texts, CompareAgg, CompareReport, TopKlPosition};
use crate::words::{bow_mask, mark_tokens, word_rows, TokenWordInput, WordRow};

/// File name of the summary inside `--out`.
pub const SUMMARY_FILE: &str = "summary.json";

/// Bytes of f32 logits materialized at once (per model). A chunk exists up to twice while it is
/// copied from the device tensor to host memory, so this bounds scoring memory to about
/// 2 × 32 MiB per model, whatever the vocabulary: 170 rows for a 49k vocabulary, 55 for 152k.
/// With `--stats-on device` nothing chunk-sized reaches the host, but the reductions of
/// [`crate::device_stats`] hold several chunk-sized temporaries on the device (measured on the CPU
/// device at 55 × 151 936: +273 MiB peak for eval, +368 MiB for a compare pair).
pub const LOGIT_CHUNK_BYTES: usize = 32 << 20;

/// `requested` logit rows per chunk, capped so a chunk of `vocab` f32 logits fits
/// [`LOGIT_CHUNK_BYTES`].
pub fn logit_chunk_rows(requested: usize, vocab: usize) -> usize {
    requested.min((LOGIT_CHUNK_BYTES / (vocab.max(1) * 4)).max(1))
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Protocol parameters.
    pub protocol: ProtocolConfig,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Most `(row, position)` logit rows materialized at once; fewer when a chunk of that many rows
    /// would exceed [`LOGIT_CHUNK_BYTES`] for the model's vocabulary.
    pub logit_chunk_rows: usize,
    /// Output directory (`summary.json`, token rows, checkpoint).
    pub out_dir: Option<PathBuf>,
    /// Per-token rows format (needs `out_dir` unless `None`).
    pub rows: RowsFormat,
    /// Continue the checkpoint in `out_dir` (a missing checkpoint starts a
    /// fresh run).
    pub resume: bool,
    /// Minimum time between checkpoints (zero = after every batch).
    pub checkpoint_interval: Duration,
    /// Per-word rows format (`words.jsonl` / `words.parquet`; needs
    /// `out_dir` unless `None`). See the module docs.
    pub words: RowsFormat,
    /// Cancellation flag (e.g. set by a Ctrl-C handler), checked between
    /// batches: once it is set the run checkpoints its finished batches (with
    /// `out_dir`) and returns [`RunError::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Where per-token statistics are computed (`--stats-on`): on the host in f64 from copied
    /// logits, or where the logits live in f32 ([`crate::device_stats`]). `Auto` picks the device
    /// for CUDA models. The resolved choice is part of the resume fingerprint and of
    /// `summary.json` (`stats_on`).
    pub stats_on: StatsOn,
}

impl PartialEq for RunOptions {
    /// Field-wise; two interrupt flags are equal when they are the same flag.
    fn eq(&self, o: &Self) -> bool {
        self.protocol == o.protocol
            && self.batch_size == o.batch_size
            && self.logit_chunk_rows == o.logit_chunk_rows
            && self.out_dir == o.out_dir
            && self.rows == o.rows
            && self.resume == o.resume
            && self.checkpoint_interval == o.checkpoint_interval
            && self.words == o.words
            && self.stats_on == o.stats_on
            && match (&self.interrupt, &o.interrupt) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}

impl RunOptions {
    /// Defaults: batch 1, 256 logit rows per chunk, no output, 30 s
    /// checkpoints.
    pub fn new(protocol: ProtocolConfig) -> Self {
        RunOptions {
            protocol,
            batch_size: 1,
            logit_chunk_rows: 256,
            out_dir: None,
            rows: RowsFormat::None,
            resume: false,
            checkpoint_interval: Duration::from_secs(30),
            words: RowsFormat::None,
            interrupt: None,
            stats_on: StatsOn::Auto,
        }
    }
}

/// Result of a run.
#[derive(Clone, Debug)]
pub struct RunOutcome<S> {
    /// The metrics.
    pub summary: S,
    /// Windows evaluated.
    pub windows: u64,
    /// Scored tokens per second of engine wall time (cumulative over resumed
    /// sessions).
    pub tokens_per_second: f64,
    /// Engine wall time (s), cumulative.
    pub elapsed_seconds: f64,
    /// The written `summary.json`, if `out_dir` was given.
    pub summary_path: Option<PathBuf>,
    /// The written token rows file, if any.
    pub rows_path: Option<PathBuf>,
    /// The written word rows file, if any.
    pub words_path: Option<PathBuf>,
    /// Whether this call only reloaded an already complete run.
    pub already_complete: bool,
    /// Where the per-token statistics were computed (`RunOptions::stats_on` resolved).
    pub stats_on: StatsLocation,
}

/// Evaluates `scorer` on `documents`.
///
/// `documents` yields documents in corpus order (their errors are reported
/// as [`RunError::Data`]). See [`RunOptions`] for output / resume behaviour.
pub fn evaluate<T, S, I, E>(
    tokenizer: &T,
    scorer: &S,
    documents: I,
    opts: &RunOptions,
    provenance: &Provenance,
    progress: &mut dyn Progress,
) -> Result<RunOutcome<EvalSummary>>
where
    T: Tokenize + ?Sized,
    S: Scorer,
    I: IntoIterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    let stats_on = opts.stats_on.resolve(&[scorer.logits_device()])?;
    run(
        &EvalMode {
            s: scorer,
            stats_on,
        },
        tokenizer,
        documents,
        opts,
        provenance,
        progress,
    )
}

/// Scores `model` against `reference` on identical windows (same tokenizer):
/// per-token KL, NLL difference, top-1 agreement, both models' summaries.
pub fn compare<T, S, R, I, E>(
    tokenizer: &T,
    model: &S,
    reference: &R,
    documents: I,
    opts: &RunOptions,
    provenance: &Provenance,
    progress: &mut dyn Progress,
) -> Result<RunOutcome<CompareReport>>
where
    T: Tokenize + ?Sized,
    S: Scorer,
    R: Scorer,
    I: IntoIterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    if model.vocab_size() != reference.vocab_size() {
        return Err(RunError::Config(format!(
            "cannot compare models with different vocabularies: the model has {} logits per token, the reference {}",
            model.vocab_size(),
            reference.vocab_size()
        )));
    }
    if provenance.reference_model.is_none() {
        return Err(RunError::Config(
            "compare needs provenance.reference_model".into(),
        ));
    }
    let stats_on = opts
        .stats_on
        .resolve(&[model.logits_device(), reference.logits_device()])?;
    run(
        &CompareMode {
            m: model,
            r: reference,
            stats_on,
        },
        tokenizer,
        documents,
        opts,
        provenance,
        progress,
    )
}

/// `len(re.split(r"\s+", text))`, lm-eval's word count for wikitext
/// `word_perplexity`: one more than the number of maximal whitespace runs
/// (so leading/trailing whitespace counts an empty word, like Python).
/// Whitespace is Python's `str.isspace` (Unicode White_Space plus
/// U+001C..U+001F).
pub fn lm_eval_word_count(text: &str) -> u64 {
    let is_space = |c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c);
    let mut runs = 0u64;
    let mut in_run = false;
    for c in text.chars() {
        let s = is_space(c);
        if s && !in_run {
            runs += 1;
        }
        in_run = s;
    }
    runs + 1
}

/// One scored token of a batch: `(row in batch, token)`.
type Item = (usize, ScoredToken);

/// What differs between eval and compare.
trait Mode {
    type Agg: Default + Clone + Serialize + DeserializeOwned;
    type Summary: Serialize;
    const NAME: &'static str;
    fn max_context(&self) -> Option<usize>;
    fn vocab_size(&self) -> usize;
    /// Where this run computes per-token statistics.
    fn stats_on(&self) -> StatsLocation;
    fn count(agg: &Self::Agg) -> u64;
    fn summary(agg: &Self::Agg, bytes: Option<u64>, words: Option<u64>) -> Self::Summary;
    #[allow(clippy::too_many_arguments)]
    fn score_batch(
        &self,
        inputs: &[&[u32]],
        items: &[Item],
        chunk_rows: usize,
        agg: &mut Self::Agg,
        rows: Option<&mut Vec<TokenRow>>,
        words: Option<WordScores<'_>>,
        token_text: &dyn Fn(u32) -> String,
        on_error: &dyn Fn(&ScoredToken, MetricsError) -> RunError,
    ) -> Result<()>;
}

/// Per-word inputs a batch must produce: `(nll, log P_bow)` per item, in
/// item order, with `log P_bow` over `mask`.
struct WordScores<'a> {
    mask: &'a VocabMask,
    out: &'a mut Vec<(f64, f64)>,
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

fn base_row(st: &ScoredToken, ts: &surprisal_metrics::TokenStats, text: String) -> TokenRow {
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
        kl_nats: None,
        ref_nll_nats: None,
        ref_top1_id: None,
    }
}

struct EvalMode<'a, S> {
    s: &'a S,
    stats_on: StatsLocation,
}

/// Statistics of one chunk, one entry per position: the per-token result (an error is reported
/// for its position by the caller) and `log P_bow` when a word mask was given.
type ChunkStats<T> = Vec<(std::result::Result<T, MetricsError>, Option<f64>)>;

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

impl<S: Scorer> EvalMode<'_, S> {
    /// One chunk's statistics: on the device when enabled and the chunk allows it, else on the
    /// host from `buf` (filled from the device tensor when the device path handed the chunk back,
    /// so the host path sees the same logits and reports the same error).
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
}

impl<S: Scorer> Mode for EvalMode<'_, S> {
    type Agg = EvalAggregate;
    type Summary = EvalSummary;
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
    fn count(agg: &EvalAggregate) -> u64 {
        agg.count()
    }
    fn summary(agg: &EvalAggregate, bytes: Option<u64>, words: Option<u64>) -> EvalSummary {
        agg.summary(bytes, words)
    }
    fn score_batch(
        &self,
        inputs: &[&[u32]],
        items: &[Item],
        chunk_rows: usize,
        agg: &mut EvalAggregate,
        mut rows: Option<&mut Vec<TokenRow>>,
        mut words: Option<WordScores<'_>>,
        token_text: &dyn Fn(u32) -> String,
        on_error: &dyn Fn(&ScoredToken, MetricsError) -> RunError,
    ) -> Result<()> {
        let mask = words.as_ref().map(|w| w.mask);
        let hidden = self.s.forward(inputs)?;
        let mut buf = Vec::new();
        let mut pairs = Vec::with_capacity(chunk_rows);
        let mut targets = Vec::with_capacity(chunk_rows);
        for chunk in items.chunks(chunk_rows) {
            pairs.clear();
            pairs.extend(chunk.iter().map(|(r, st)| (*r, st.position)));
            targets.clear();
            targets.extend(chunk.iter().map(|(_, st)| st.token.id));
            let stats = self.chunk_stats(&hidden, &pairs, &targets, mask, &mut buf)?;
            for ((_, st), (ts, lpb)) in chunk.iter().zip(stats) {
                let ts = ts.map_err(|e| on_error(st, e))?;
                agg.push(&ts, st.context_len());
                if let (Some(w), Some(lpb)) = (words.as_mut(), lpb) {
                    w.out.push((ts.nll_nats, lpb));
                }
                if let Some(rows) = rows.as_deref_mut() {
                    rows.push(base_row(st, &ts, token_text(st.token.id)));
                }
            }
        }
        Ok(())
    }
}

struct CompareMode<'a, S, R> {
    m: &'a S,
    r: &'a R,
    stats_on: StatsLocation,
}

impl<S: Scorer, R: Scorer> CompareMode<'_, S, R> {
    /// One chunk's pair statistics; see [`EvalMode::chunk_stats`]. Words follow the model (not
    /// the reference).
    #[allow(clippy::too_many_arguments)]
    fn chunk_stats(
        &self,
        hm: &S::Hidden,
        hr: &R::Hidden,
        pairs: &[(usize, usize)],
        targets: &[u32],
        mask: Option<&VocabMask>,
        bm: &mut Vec<f32>,
        br: &mut Vec<f32>,
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
}

impl<S: Scorer, R: Scorer> Mode for CompareMode<'_, S, R> {
    type Agg = CompareAgg;
    type Summary = CompareReport;
    const NAME: &'static str = "compare";
    fn max_context(&self) -> Option<usize> {
        match (self.m.max_context(), self.r.max_context()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn vocab_size(&self) -> usize {
        self.m.vocab_size()
    }
    fn stats_on(&self) -> StatsLocation {
        self.stats_on
    }
    fn count(agg: &CompareAgg) -> u64 {
        agg.metrics.count()
    }
    fn summary(agg: &CompareAgg, bytes: Option<u64>, words: Option<u64>) -> CompareReport {
        agg.report(bytes, words)
    }
    fn score_batch(
        &self,
        inputs: &[&[u32]],
        items: &[Item],
        chunk_rows: usize,
        agg: &mut CompareAgg,
        mut rows: Option<&mut Vec<TokenRow>>,
        mut words: Option<WordScores<'_>>,
        token_text: &dyn Fn(u32) -> String,
        on_error: &dyn Fn(&ScoredToken, MetricsError) -> RunError,
    ) -> Result<()> {
        let mask = words.as_ref().map(|w| w.mask);
        let hm = self.m.forward(inputs)?;
        let hr = self.r.forward(inputs)?;
        let (mut bm, mut br) = (Vec::new(), Vec::new());
        let mut pairs = Vec::with_capacity(chunk_rows);
        let mut targets = Vec::with_capacity(chunk_rows);
        for chunk in items.chunks(chunk_rows) {
            pairs.clear();
            pairs.extend(chunk.iter().map(|(r, st)| (*r, st.position)));
            targets.clear();
            targets.extend(chunk.iter().map(|(_, st)| st.token.id));
            let stats = self.chunk_stats(&hm, &hr, &pairs, &targets, mask, &mut bm, &mut br)?;
            for ((row_in_batch, st), (ps, lpb)) in chunk.iter().zip(stats) {
                let ps = ps.map_err(|e| on_error(st, e))?;
                agg.metrics.push(&ps, st.context_len());
                let (doc, index) = (st.token.doc as u64, st.token.index as u64);
                agg.top_kl.offer(ps.kl_nats, doc, index, || {
                    let w = inputs[*row_in_batch];
                    let (before, after) = context_texts(w, st.position + 1, token_text);
                    TopKlPosition {
                        kl_nats: ps.kl_nats,
                        doc,
                        index,
                        token_id: st.token.id,
                        token: token_text(st.token.id),
                        context_before: before,
                        context_after: after,
                        nll_nats: ps.model.nll_nats,
                        ref_nll_nats: ps.reference.nll_nats,
                    }
                });
                if let (Some(w), Some(lpb)) = (words.as_mut(), lpb) {
                    w.out.push((ps.model.nll_nats, lpb));
                }
                if let Some(rows) = rows.as_deref_mut() {
                    let mut row = base_row(st, &ps.model, token_text(st.token.id));
                    row.kl_nats = Some(ps.kl_nats);
                    row.ref_nll_nats = Some(ps.reference.nll_nats);
                    row.ref_top1_id = Some(ps.reference.top1_id);
                    rows.push(row);
                }
            }
        }
        Ok(())
    }
}

/// Estimated tokens to score, when limits make it knowable.
fn expected_tokens(p: &ResolvedProtocol) -> Option<u64> {
    match p.kind {
        ProtocolKind::Chunks => p
            .max_chunks
            .map(|k| k * (p.window as u64 - p.window as u64 / 2 - 1)),
        _ => p.max_tokens,
    }
}

fn build_fingerprint(
    mode: &str,
    tokenizer: &dyn Fn() -> String,
    p: &ResolvedProtocol,
    opts: &RunOptions,
    prov: &Provenance,
    stats_on: StatsLocation,
) -> Fingerprint {
    Fingerprint {
        mode: mode.into(),
        model: prov.model.reference.clone(),
        model_files: prov.model.files.clone(),
        reference_model: prov
            .reference_model
            .as_ref()
            .map(|r| (r.reference.clone(), r.files.clone())),
        tokenizer: tokenizer(),
        data_sha256: prov.data.sha256.clone(),
        protocol: p.kind.name().into(),
        window: p.window,
        stride: p.stride,
        bos: opts.protocol.bos.name().into(),
        bos_token: p.bos,
        max_tokens: p.max_tokens,
        max_chunks: p.max_chunks,
        rows: opts.rows,
        dtype: prov.dtype.clone(),
        stats_on: stats_on.name().into(),
    }
}

/// Mutable run state that a checkpoint captures.
struct State<A> {
    agg: A,
    windows_done: u64,
    bytes: u64,
    words: u64,
    elapsed_before: f64,
    started_at: String,
}

fn run<M, T, I, E>(
    mode: &M,
    tokenizer: &T,
    documents: I,
    opts: &RunOptions,
    prov: &Provenance,
    progress: &mut dyn Progress,
) -> Result<RunOutcome<M::Summary>>
where
    M: Mode,
    T: Tokenize + ?Sized,
    I: IntoIterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    let t0 = Instant::now();
    if opts.batch_size == 0 {
        return Err(RunError::Config("batch size must be at least 1".into()));
    }
    if opts.logit_chunk_rows == 0 {
        return Err(RunError::Config(
            "logit chunk rows must be at least 1".into(),
        ));
    }
    let resolved = opts.protocol.resolve(&ModelTokens {
        bos_id: tokenizer.bos_id(),
        eos_id: tokenizer.eos_id(),
        adds_bos: tokenizer.adds_bos(),
        max_context: mode.max_context(),
    })?;
    let out = opts.out_dir.as_deref();
    if out.is_none() {
        if opts.resume {
            return Err(RunError::Config("--resume needs --out DIR".into()));
        }
        if opts.rows != RowsFormat::None {
            return Err(RunError::Config(
                "per-token rows need an output directory (--out DIR)".into(),
            ));
        }
        if opts.words != RowsFormat::None {
            return Err(RunError::Config(
                "per-word rows need an output directory (--out DIR)".into(),
            ));
        }
    }
    let fp = build_fingerprint(
        M::NAME,
        &|| tokenizer.fingerprint(),
        &resolved,
        opts,
        prov,
        mode.stats_on(),
    );
    let proto_report = ProtocolReport::new(&opts.protocol, resolved.bos.is_some(), opts.batch_size);
    let words_used = resolved.kind == ProtocolKind::Rolling;

    // ---- output directory / resume ----
    let mut st = State {
        agg: M::Agg::default(),
        windows_done: 0,
        bytes: 0,
        words: 0,
        elapsed_before: 0.0,
        started_at: now_rfc3339(),
    };
    let mut sink: Option<RowSink> = None;
    let mut words: Option<Words> = None;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
        let exists = checkpoint::checkpoint_path(dir).exists();
        if exists && !opts.resume {
            return Err(RunError::Checkpoint(format!(
                "{} already holds a run (checkpoint.json); pass --resume to continue or reuse it, or choose another --out directory",
                dir.display()
            )));
        }
        let (parts, rows_written, words_ck) = match checkpoint::load::<M::Agg>(dir, &fp)? {
            Some(ck) => {
                let words_ck = load_words_ck(dir)?;
                let had = words_ck.as_ref().map_or(RowsFormat::None, |w| w.format);
                if had != opts.words {
                    let name = |f: RowsFormat| serde_json::to_string(&f).unwrap_or_default();
                    return Err(RunError::Checkpoint(format!(
                        "cannot resume: the checkpoint in {} was made by a different run (words: checkpoint has {}, this run has {}); use a new --out directory or the original settings",
                        dir.display(),
                        name(had),
                        name(opts.words)
                    )));
                }
                if ck.complete {
                    // A crash after the complete mark may have left staged parts behind.
                    remove_row_parts(dir)?;
                    let words = words_used.then_some(ck.words);
                    let summary = M::summary(&ck.aggregate, Some(ck.bytes_scored), words);
                    let tokens = M::count(&ck.aggregate);
                    return Ok(RunOutcome {
                        summary,
                        windows: ck.windows_done,
                        tokens_per_second: rate(tokens, ck.elapsed_seconds),
                        elapsed_seconds: ck.elapsed_seconds,
                        summary_path: Some(dir.join(SUMMARY_FILE)),
                        rows_path: opts.rows.file_name().map(|n| dir.join(n)),
                        words_path: opts.words.words_file_name().map(|n| dir.join(n)),
                        already_complete: true,
                        stats_on: mode.stats_on(),
                    });
                }
                tracing::info!(
                    windows = ck.windows_done,
                    tokens = M::count(&ck.aggregate),
                    "resuming from checkpoint"
                );
                st = State {
                    agg: ck.aggregate,
                    windows_done: ck.windows_done,
                    bytes: ck.bytes_scored,
                    words: ck.words,
                    elapsed_before: ck.elapsed_seconds,
                    started_at: ck.started_at,
                };
                (ck.row_parts, ck.rows_written, words_ck)
            }
            None => (0, 0, None),
        };
        // stale outputs of an earlier run must not survive
        for name in [
            Some(SUMMARY_FILE),
            opts.rows.file_name(),
            opts.words.words_file_name(),
        ]
        .into_iter()
        .flatten()
        {
            let p = dir.join(name);
            if p.exists() && !exists {
                std::fs::remove_file(&p).map_err(|e| RunError::io(&p, e))?;
            }
        }
        let new_sink = RowSink::open(dir, opts.rows, parts, rows_written)?;
        if opts.words != RowsFormat::None {
            let (wparts, wrows, flushed, pending) = words_ck.map_or((0, 0, 0, Vec::new()), |w| {
                (w.parts, w.rows, w.docs_flushed, w.pending)
            });
            let mut mask = bow_mask(tokenizer.vocab_texts(mode.vocab_size()).into_iter());
            mark_tokens(
                &mut mask,
                &tokenizer.eos_id().into_iter().collect::<Vec<_>>(),
            );
            words = Some(Words {
                mask: VocabMask::new(mask),
                sink: RowSink::open(dir, opts.words, wparts, wrows)?,
                kind: resolved.kind,
                bos_used: resolved.bos.is_some(),
                docs_pushed: 0,
                docs_flushed: flushed,
                pending: VecDeque::new(),
                restored: pending.into(),
                max_scored: None,
            });
        }
        if !exists {
            // mark the directory as holding this run right away
            let wck = words.as_ref().map(|w| w.to_ck(opts.words));
            save_ck(dir, &fp, &st, counts(&new_sink), wck, 0.0, false)?;
        }
        sink = Some(new_sink);
    }

    progress.start(expected_tokens(&resolved), M::count(&st.agg));
    let res = run_loop(
        mode,
        tokenizer,
        documents,
        opts,
        resolved,
        &fp,
        &mut st,
        sink.as_mut(),
        words.as_mut(),
        out,
        progress,
        t0,
    );
    progress.finish();
    let windows = res?;

    // ---- finish: last checkpoint, rows file, summary, complete mark ----
    let elapsed = st.elapsed_before + t0.elapsed().as_secs_f64();
    let word_count = words_used.then_some(st.words);
    let summary = M::summary(&st.agg, Some(st.bytes), word_count);
    let tokens = M::count(&st.agg);
    let tps = rate(tokens, elapsed);
    let mut summary_path = None;
    let mut rows_path = None;
    let mut words_path = None;
    if let (Some(dir), Some(mut sink)) = (out, sink) {
        sink.finalize_part()?;
        if let Some(w) = words.as_mut() {
            w.sink.finalize_part()?;
        }
        let wck = words.as_ref().map(|w| w.to_ck(opts.words));
        let sink_counts = counts(&sink);
        save_ck(dir, &fp, &st, sink_counts, wck.clone(), elapsed, false)?;
        rows_path = sink.finish()?;
        if let Some(w) = words {
            words_path = w.sink.finish()?;
        }
        let finished_at = now_rfc3339();
        let file = SummaryFile {
            metrics: &summary,
            mode: M::NAME,
            windows,
            tokens_per_second: tps,
            elapsed_seconds: elapsed,
            provenance: prov,
            protocol: &proto_report,
            started_at: &st.started_at,
            finished_at: &finished_at,
            stats_on: mode.stats_on(),
        };
        let sp = dir.join(SUMMARY_FILE);
        write_json_atomic(&sp, &file)?;
        summary_path = Some(sp);
        save_ck(dir, &fp, &st, sink_counts, wck, elapsed, true)?;
        remove_row_parts(dir)?;
    }
    Ok(RunOutcome {
        summary,
        windows,
        tokens_per_second: tps,
        elapsed_seconds: elapsed,
        summary_path,
        rows_path,
        words_path,
        already_complete: false,
        stats_on: mode.stats_on(),
    })
}

/// Deletes the staged token and word row parts once the run is marked complete.
fn remove_row_parts(dir: &Path) -> Result<()> {
    RowSink::<TokenRow>::remove_parts(dir)?;
    RowSink::<WordRow>::remove_parts(dir)
}

fn counts(sink: &RowSink) -> (u64, u64) {
    (sink.parts(), sink.rows())
}

fn rate(tokens: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        tokens as f64 / secs
    } else {
        0.0
    }
}

/// Writes the checkpoint; `rows` = (finalized token-row parts, rows in
/// them). Per-word state goes under the extra top-level key `word_rows`
/// (absent without words).
#[allow(clippy::too_many_arguments)]
fn save_ck<A: Serialize + Clone>(
    dir: &Path,
    fp: &Fingerprint,
    st: &State<A>,
    rows: (u64, u64),
    words: Option<WordsCk>,
    elapsed: f64,
    complete: bool,
) -> Result<()> {
    // Serialize by reference to avoid cloning large aggregates.
    #[derive(Serialize)]
    struct CkRef<'a, A> {
        version: u32,
        fingerprint: &'a Fingerprint,
        windows_done: u64,
        bytes_scored: u64,
        words: u64,
        row_parts: u64,
        rows_written: u64,
        elapsed_seconds: f64,
        started_at: &'a str,
        complete: bool,
        aggregate: &'a A,
        #[serde(skip_serializing_if = "Option::is_none")]
        word_rows: Option<WordsCk>,
    }
    write_json_atomic(
        &checkpoint::checkpoint_path(dir),
        &CkRef {
            version: checkpoint::version(),
            fingerprint: fp,
            windows_done: st.windows_done,
            bytes_scored: st.bytes,
            words: st.words,
            row_parts: rows.0,
            rows_written: rows.1,
            elapsed_seconds: elapsed,
            started_at: &st.started_at,
            complete,
            aggregate: &st.agg,
            word_rows: words,
        },
    )
}

/// Streams documents through the planner and scores batches. Returns the
/// number of windows planned in total.
#[allow(clippy::too_many_arguments)]
fn run_loop<M, T, I, E>(
    mode: &M,
    tokenizer: &T,
    documents: I,
    opts: &RunOptions,
    resolved: ResolvedProtocol,
    fp: &Fingerprint,
    st: &mut State<M::Agg>,
    mut sink: Option<&mut RowSink>,
    mut words: Option<&mut Words>,
    out: Option<&Path>,
    progress: &mut dyn Progress,
    t0: Instant,
) -> Result<u64>
where
    M: Mode,
    T: Tokenize + ?Sized,
    I: IntoIterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    let kind = resolved.kind;
    let mut planner = Planner::new(resolved);
    let mut docs = documents.into_iter();
    // (doc index, source) of documents that may still hold scored tokens.
    let mut sources: VecDeque<(usize, String)> = VecDeque::new();
    let mut last_ck = Instant::now();
    let mut windows_seen = 0u64;
    let want_rows = opts.rows != RowsFormat::None;
    let mut batch: Vec<Window> = Vec::with_capacity(opts.batch_size);
    let mut rows_buf: Vec<TokenRow> = Vec::new();
    let mut word_scores: Vec<(f64, f64)> = Vec::new();
    let interrupted = || {
        opts.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    };
    loop {
        // ---- stop between batches on request ----
        if interrupted() {
            if let (Some(dir), Some(sink)) = (out, sink.as_deref_mut()) {
                checkpoint_now(dir, fp, st, sink, words.as_deref_mut(), opts.words, t0)?;
            }
            return Err(RunError::Interrupted {
                out_dir: out.map(Path::to_path_buf),
            });
        }
        // ---- fill a batch ----
        while batch.len() < opts.batch_size {
            if let Some(w) = planner.pop() {
                windows_seen = windows_seen.max(w.id + 1);
                if w.id < st.windows_done {
                    continue; // scored by an earlier session
                }
                batch.push(w);
                continue;
            }
            if planner.is_done() {
                break;
            }
            if !planner.wants_more() {
                planner.finish()?;
                continue;
            }
            match docs.next() {
                None => planner.finish()?,
                Some(Err(e)) => return Err(RunError::Data(e.to_string())),
                Some(Ok(doc)) => {
                    push_doc(tokenizer, &mut planner, &doc, kind, words.as_deref_mut())?;
                    sources.push_back((doc.index, doc.source));
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        // ---- score it ----
        let inputs: Vec<&[u32]> = batch.iter().map(|w| w.input.as_slice()).collect();
        let items: Vec<Item> = batch
            .iter()
            .enumerate()
            .flat_map(|(r, w)| w.scored.iter().map(move |s| (r, *s)))
            .collect();
        rows_buf.clear();
        let on_error = |stok: &ScoredToken, e: MetricsError| RunError::Metrics {
            source_name: sources
                .iter()
                .find(|(d, _)| *d == stok.token.doc)
                .map_or_else(
                    || format!("document {}", stok.token.doc),
                    |(_, s)| s.clone(),
                ),
            doc: stok.token.doc,
            index: stok.token.index,
            position: stok.position,
            message: e.to_string(),
        };
        let token_text = |id: u32| tokenizer.token_text(id);
        word_scores.clear();
        mode.score_batch(
            &inputs,
            &items,
            logit_chunk_rows(opts.logit_chunk_rows, mode.vocab_size()),
            &mut st.agg,
            want_rows.then_some(&mut rows_buf),
            words.as_deref().map(|w| WordScores {
                mask: &w.mask,
                out: &mut word_scores,
            }),
            &token_text,
            &on_error,
        )?;
        if let Some(w) = words.as_deref_mut() {
            debug_assert_eq!(word_scores.len(), items.len());
            w.record(&items, &word_scores);
            w.flush(false)?;
        }
        for w in &batch {
            st.bytes += match w.doc_totals {
                Some(t) => t.bytes,
                None if kind == ProtocolKind::Rolling => 0,
                None => w.scored.iter().map(|s| s.token.byte_len()).sum(),
            };
            st.words += w.doc_totals.map_or(0, |t| t.words);
        }
        st.windows_done = batch.last().map_or(st.windows_done, |w| w.id + 1);
        // scored tokens only move forward: older documents are no longer needed
        if let Some(last) = items.last() {
            while sources.front().is_some_and(|(d, _)| *d < last.1.token.doc) {
                sources.pop_front();
            }
        }
        progress.advance(items.len() as u64);
        if let Some(sink) = sink.as_deref_mut() {
            sink.append(&rows_buf)?;
            if last_ck.elapsed() >= opts.checkpoint_interval {
                if let Some(dir) = out {
                    checkpoint_now(dir, fp, st, sink, words.as_deref_mut(), opts.words, t0)?;
                }
                last_ck = Instant::now();
            }
        }
        batch.clear();
    }
    if let Some(w) = words {
        w.flush(true)?;
    }
    Ok(windows_seen)
}

/// Finalizes the current row parts and writes an (incomplete) checkpoint.
fn checkpoint_now<A: Serialize + Clone>(
    dir: &Path,
    fp: &Fingerprint,
    st: &State<A>,
    sink: &mut RowSink,
    words: Option<&mut Words>,
    words_format: RowsFormat,
    t0: Instant,
) -> Result<()> {
    sink.finalize_part()?;
    let wck = match words {
        Some(w) => {
            w.sink.finalize_part()?;
            Some(w.to_ck(words_format))
        }
        None => None,
    };
    let elapsed = st.elapsed_before + t0.elapsed().as_secs_f64();
    save_ck(dir, fp, st, counts(sink), wck, elapsed, false)
}

/// Tokenizes one document and feeds it to the planner (respecting the token
/// budget and computing rolling's byte/word totals of the kept text).
fn push_doc<T: Tokenize + ?Sized>(
    tokenizer: &T,
    planner: &mut Planner,
    doc: &Document,
    kind: ProtocolKind,
    words: Option<&mut Words>,
) -> Result<()> {
    let enc = tokenizer.encode(&doc.text).map_err(|e| match e {
        RunError::Tokenizer(m) => {
            RunError::Tokenizer(format!("{} (document {}): {m}", doc.source, doc.index))
        }
        other => other,
    })?;
    if enc.ids.len() != enc.byte_spans.len() {
        return Err(RunError::Tokenizer(format!(
            "{}: tokenizer returned {} ids but {} byte spans",
            doc.source,
            enc.ids.len(),
            enc.byte_spans.len()
        )));
    }
    let keep = match planner.remaining_budget() {
        Some(r) => enc.ids.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
        None => enc.ids.len(),
    };
    let totals = if kind == ProtocolKind::Rolling {
        let text: &str = if keep == enc.ids.len() {
            &doc.text
        } else if keep == 0 {
            ""
        } else {
            let mut end = enc.byte_spans[keep - 1].1.min(doc.text.len());
            while !doc.text.is_char_boundary(end) {
                end += 1;
            }
            &doc.text[..end]
        };
        DocTotals {
            bytes: text.len() as u64,
            words: lm_eval_word_count(text),
        }
    } else {
        DocTotals::default()
    };
    let toks: Vec<(u32, usize, usize)> = enc
        .ids
        .iter()
        .zip(&enc.byte_spans)
        .take(keep)
        .map(|(&id, &(a, b))| (id, a, b))
        .collect();
    if let Some(w) = words {
        w.push_doc(doc, &enc.byte_spans, keep, planner.tokens_seen());
    }
    planner.push_document(doc.index, &toks, totals);
    Ok(())
}

/// Scores of one pending document as stored in the checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingCk {
    /// Position of the document in the stream of pushed documents.
    ordinal: u64,
    /// `(token index, nll, log P_bow)` of its scored tokens.
    scored: Vec<(usize, Option<f64>, Option<f64>)>,
    /// `log P_bow` after its last token, if known.
    final_log_p_bow: Option<f64>,
}

/// Per-word state in the checkpoint (top-level key `word_rows`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WordsCk {
    format: RowsFormat,
    parts: u64,
    rows: u64,
    /// Documents whose rows are in the finalized parts (ordinals `0..n`).
    docs_flushed: u64,
    pending: Vec<PendingCk>,
}

/// Reads the `word_rows` key of the checkpoint in `dir` (absent: no words).
fn load_words_ck(dir: &Path) -> Result<Option<WordsCk>> {
    #[derive(Deserialize)]
    struct Extra {
        #[serde(default)]
        word_rows: Option<WordsCk>,
    }
    let p = checkpoint::checkpoint_path(dir);
    let text = std::fs::read_to_string(&p).map_err(|e| RunError::io(&p, e))?;
    let extra: Extra = serde_json::from_str(&text).map_err(|e| {
        RunError::Checkpoint(format!("{} is not a valid checkpoint: {e}", p.display()))
    })?;
    Ok(extra.word_rows)
}

/// A document whose word rows are not written yet.
struct PendingDoc {
    ordinal: u64,
    doc: usize,
    text: String,
    /// Stream index of its first kept token.
    global_start: u64,
    /// Tokens handed to the planner (the rest were cut by `max_tokens`).
    kept: usize,
    /// Every token of the document (kept or not), scores filled in as they come.
    tokens: Vec<TokenWordInput>,
    final_log_p_bow: Option<f64>,
}

impl PendingDoc {
    fn global_end(&self) -> u64 {
        self.global_start + self.kept as u64
    }

    fn to_ck(&self) -> PendingCk {
        PendingCk {
            ordinal: self.ordinal,
            scored: self
                .tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| t.nll_nats.is_some() || t.log_p_bow_before.is_some())
                .map(|(i, t)| (i, t.nll_nats, t.log_p_bow_before))
                .collect(),
            final_log_p_bow: self.final_log_p_bow,
        }
    }
}

/// Per-word rows of a run: the word-boundary mask, the documents in flight
/// and the `words.*` sink.
struct Words {
    mask: VocabMask,
    sink: RowSink<WordRow>,
    kind: ProtocolKind,
    bos_used: bool,
    /// Documents pushed to the planner so far in this session.
    docs_pushed: u64,
    /// Documents whose rows were written (ordinals `0..docs_flushed`).
    docs_flushed: u64,
    pending: VecDeque<PendingDoc>,
    /// Scores from the checkpoint, applied when their document is pushed again.
    restored: VecDeque<PendingCk>,
    /// Highest stream index scored in this session.
    max_scored: Option<u64>,
}

impl Words {
    /// Registers a document as it is pushed to the planner (`global_start`:
    /// the planner's token count before the push).
    fn push_doc(
        &mut self,
        doc: &Document,
        spans: &[(usize, usize)],
        kept: usize,
        global_start: u64,
    ) {
        let ordinal = self.docs_pushed;
        self.docs_pushed += 1;
        if ordinal < self.docs_flushed {
            return; // written by an earlier session
        }
        let mut p = PendingDoc {
            ordinal,
            doc: doc.index,
            text: doc.text.clone(),
            global_start,
            kept,
            tokens: spans
                .iter()
                .map(|&(a, b)| TokenWordInput {
                    byte_start: a,
                    byte_end: b,
                    nll_nats: None,
                    log_p_bow_before: None,
                })
                .collect(),
            final_log_p_bow: None,
        };
        while self.restored.front().is_some_and(|r| r.ordinal < ordinal) {
            self.restored.pop_front();
        }
        if self.restored.front().is_some_and(|r| r.ordinal == ordinal) {
            let r = self.restored.pop_front().expect("checked");
            for (i, nll, lpb) in r.scored {
                if let Some(t) = p.tokens.get_mut(i) {
                    t.nll_nats = nll;
                    t.log_p_bow_before = lpb;
                }
            }
            p.final_log_p_bow = r.final_log_p_bow;
        }
        self.pending.push_back(p);
    }

    /// Records the scores of a batch's items (in stream order).
    fn record(&mut self, items: &[Item], scores: &[(f64, f64)]) {
        let mut cur = 0usize;
        for ((_, st), &(nll, lpb)) in items.iter().zip(scores) {
            let g = st.token.global;
            while cur < self.pending.len() && self.pending[cur].global_end() <= g {
                cur += 1;
            }
            if let Some(p) = self.pending.get_mut(cur) {
                if p.global_start <= g {
                    let t = &mut p.tokens[st.token.index];
                    t.nll_nats = Some(nll);
                    t.log_p_bow_before = Some(lpb);
                }
            }
            // The distribution predicting a document's first token is the one
            // after the previous document's last token when it saw that token.
            let sees_previous =
                self.kind != ProtocolKind::Rolling && !(self.bos_used && st.position == 0);
            if st.token.index == 0 && sees_previous {
                if let Some(prev) = self
                    .pending
                    .range_mut(..cur.min(self.pending.len()))
                    .rev()
                    .find(|p| p.kept > 0)
                {
                    if prev.global_end() == g {
                        prev.final_log_p_bow = Some(lpb);
                    }
                }
            }
            self.max_scored = Some(self.max_scored.map_or(g, |m| m.max(g)));
        }
    }

    /// Writes the rows of the documents the planner has scored past (all of
    /// them with `all`, at the end of the run).
    fn flush(&mut self, all: bool) -> Result<()> {
        let mut rows = Vec::new();
        while let Some(front) = self.pending.front() {
            let end = front.global_end();
            let done = all
                || self.max_scored.is_some_and(|m| {
                    // rolling never scores past a document's last token
                    m >= end || (self.kind == ProtocolKind::Rolling && m + 1 >= end)
                });
            if !done {
                break;
            }
            let p = self.pending.pop_front().expect("checked");
            rows.extend(word_rows(p.doc, &p.text, &p.tokens, p.final_log_p_bow));
            self.docs_flushed = p.ordinal + 1;
        }
        self.sink.append(&rows)
    }

    fn to_ck(&self, format: RowsFormat) -> WordsCk {
        WordsCk {
            format,
            parts: self.sink.parts(),
            rows: self.sink.rows(),
            docs_flushed: self.docs_flushed,
            pending: self.pending.iter().map(PendingDoc::to_ck).collect(),
        }
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

    #[test]
    fn word_count_edge_cases() {
        assert_eq!(lm_eval_word_count("\n\n"), 2);
        assert_eq!(lm_eval_word_count(" = Valkyria = \n"), 5);
    }
}
