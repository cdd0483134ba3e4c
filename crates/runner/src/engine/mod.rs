//! The evaluation engine: documents → tokens → windows → batched forwards →
//! per-token statistics → aggregates, per-token rows, checkpoints, summary.
//!
//! Entry points: [`evaluate`] (one model) and [`compare`] (a model against a
//! reference model, in lockstep on the same windows); [`count_windows`] plans a
//! corpus for a sharded run ([`crate::shard`]).
//!
//! * [`mode`]: what differs between eval and compare, behind one chunk loop;
//! * [`scan`]: the window loop (documents in, batches scored, shards skipped);
//! * [`rundir`]: the output directory (lock, fresh / resumed / finished run,
//!   final files);
//! * per-word rows: [`crate::words::stream`].
//!
//! # Interruption
//!
//! `RunOptions::interrupt` is checked between batches; once set, the engine
//! checkpoints the finished batches (with an output directory) and returns
//! [`RunError::Interrupted`].

pub(crate) mod mode;
mod rundir;
mod scan;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use surprisal_metrics::EvalSummary;

pub use mode::joint_max_context;
use mode::{Aggregate, CompareMode, EvalMode, Mode};
use rundir::{Opened, RunDir};
use scan::Scan;

use crate::device_stats::{StatsLocation, StatsOn, VocabMask};
use crate::document::Document;
use crate::error::{Result, RunError};
use crate::model::{Scorer, Tokenize};
use crate::output::checkpoint::{Checkpoint, Fingerprint, ShardFingerprint};
use crate::output::rows::RowsFormat;
use crate::output::summary::{
    now_rfc3339, ProtocolReport, Provenance, ShardReport, SummaryFile, SCHEMA_VERSION,
};
use crate::progress::Progress;
use crate::protocol::{ModelTokens, ProtocolConfig, ProtocolKind, ResolvedProtocol};
use crate::shard::Shard;
use crate::top_kl::CompareReport;
use crate::words::stream::WordStream;
use crate::words::{bow_mask, mark_tokens};

pub use crate::output::summary::SUMMARY_FILE;

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
    /// The shard this run scores ([`crate::shard`]); `None` scores the whole corpus. With
    /// `out_dir`, the run writes `out_dir/shard-IIIII-of-NNNNN/`.
    pub shard: Option<ShardPlan>,
}

/// A shard and the number of windows of the whole corpus ([`count_windows`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    /// Which shard.
    pub shard: Shard,
    /// Windows an unsharded run plans over the corpus.
    pub windows_total: u64,
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
            && self.shard == o.shard
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
            shard: None,
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

/// Windows an unsharded run plans over `documents` for a model with `max_context` (see
/// [`joint_max_context`] for a compare pair): the `windows_total` of a [`ShardPlan`].
pub fn count_windows<T, I, E>(
    tokenizer: &T,
    max_context: Option<usize>,
    protocol: &ProtocolConfig,
    documents: I,
) -> Result<u64>
where
    T: Tokenize + ?Sized,
    I: IntoIterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    let resolved = protocol.resolve(&model_tokens(tokenizer, max_context))?;
    scan::count_windows(tokenizer, resolved, documents)
}

fn model_tokens<T: Tokenize + ?Sized>(tokenizer: &T, max_context: Option<usize>) -> ModelTokens {
    ModelTokens {
        bos_id: tokenizer.bos_id(),
        eos_id: tokenizer.eos_id(),
        adds_bos: tokenizer.adds_bos(),
        max_context,
    }
}

/// Checks the options and resolves the protocol for this model.
fn resolve<M: Mode, T: Tokenize + ?Sized>(
    mode: &M,
    tokenizer: &T,
    opts: &RunOptions,
) -> Result<ResolvedProtocol> {
    let need_out = |what: &str| -> Result<()> {
        match opts.out_dir {
            Some(_) => Ok(()),
            None => Err(RunError::Config(format!(
                "{what} need an output directory (--out DIR)"
            ))),
        }
    };
    if opts.batch_size == 0 {
        return Err(RunError::Config("batch size must be at least 1".into()));
    }
    if opts.logit_chunk_rows == 0 {
        return Err(RunError::Config(
            "logit chunk rows must be at least 1".into(),
        ));
    }
    if opts.resume && opts.out_dir.is_none() {
        return Err(RunError::Config("--resume needs --out DIR".into()));
    }
    if opts.rows != RowsFormat::None {
        need_out("per-token rows")?;
    }
    if opts.words != RowsFormat::None {
        need_out("per-word rows")?;
    }
    opts.protocol
        .resolve(&model_tokens(tokenizer, mode.max_context()))
}

fn run<M, T, I, E>(
    mode: &M,
    tokenizer: &T,
    documents: I,
    opts: &RunOptions,
    prov: &Provenance,
    progress: &mut dyn Progress,
) -> Result<RunOutcome<<M::Agg as Aggregate>::Summary>>
where
    M: Mode,
    T: Tokenize + ?Sized,
    I: IntoIterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    let t0 = Instant::now();
    let protocol = resolve(mode, tokenizer, opts)?;
    let fp = fingerprint(M::NAME, tokenizer, &protocol, opts, prov, mode.stats_on());
    let windows = opts
        .shard
        .as_ref()
        .map_or(0..u64::MAX, |s| s.shard.windows(s.windows_total));
    let (dir, mut ck) = match out_path(opts) {
        None => (None, Checkpoint::new(fp, windows.start, now_rfc3339())),
        Some(path) => match RunDir::open(&path, opts, &fp, windows.start)? {
            Opened::Complete(ck) => return Ok(already_complete::<M>(mode, ck, opts, &path)),
            Opened::Run(dir, ck) => (Some(dir), ck),
        },
    };
    let words = match &dir {
        Some(d) if opts.words != RowsFormat::None => Some(open_words(
            mode,
            tokenizer,
            opts,
            &protocol,
            d.path(),
            ck.word_rows.take(),
            windows.start == 0,
        )?),
        _ => None,
    };
    let mut scan = Scan {
        mode,
        tokenizer,
        opts,
        elapsed_before: ck.elapsed_seconds,
        protocol,
        windows,
        ck,
        dir,
        words,
        t0,
    };
    let expected = opts
        .shard
        .is_none()
        .then(|| expected_tokens(&scan.protocol))
        .flatten();
    progress.start(expected, scan.tokens());
    let res = scan.run(documents, progress);
    progress.finish();
    finish(scan, res?, prov)
}

/// `out_dir`, or its shard directory.
fn out_path(opts: &RunOptions) -> Option<PathBuf> {
    let dir = opts.out_dir.as_ref()?;
    Some(match &opts.shard {
        Some(s) => dir.join(s.shard.dir_name()),
        None => dir.clone(),
    })
}

fn open_words<M: Mode, T: Tokenize + ?Sized>(
    mode: &M,
    tokenizer: &T,
    opts: &RunOptions,
    protocol: &ResolvedProtocol,
    dir: &std::path::Path,
    ck: Option<crate::words::stream::WordsCk>,
    from_start: bool,
) -> Result<WordStream> {
    let mut mask = bow_mask(tokenizer.vocab_texts(mode.vocab_size()).into_iter());
    mark_tokens(
        &mut mask,
        &tokenizer.eos_id().into_iter().collect::<Vec<_>>(),
    );
    WordStream::open(
        dir,
        opts.words,
        ck,
        VocabMask::new(mask),
        protocol.kind,
        protocol.bos.is_some(),
        from_start,
    )
}

/// Summary and final files of a finished scan.
fn finish<M: Mode, T: Tokenize + ?Sized>(
    scan: Scan<'_, M, T>,
    windows: u64,
    prov: &Provenance,
) -> Result<RunOutcome<<M::Agg as Aggregate>::Summary>> {
    let elapsed = scan.elapsed();
    let (opts, ck) = (scan.opts, &scan.ck);
    let rolling = scan.protocol.kind == ProtocolKind::Rolling;
    let tokens = ck.aggregate.count();
    let file = SummaryFile {
        schema_version: SCHEMA_VERSION,
        metrics: ck
            .aggregate
            .summary(Some(ck.bytes_scored), rolling.then_some(ck.words)),
        mode: M::NAME.into(),
        windows,
        tokens_per_second: rate(tokens, elapsed),
        elapsed_seconds: elapsed,
        provenance: prov.clone(),
        protocol: ProtocolReport::new(&opts.protocol, scan.protocol.bos.is_some(), opts.batch_size),
        started_at: ck.started_at.clone(),
        finished_at: now_rfc3339(),
        stats_on: scan.mode.stats_on(),
        shard: opts.shard.as_ref().map(shard_report),
        merged_shards: None,
    };
    let (summary_path, rows_path, words_path) = match scan.dir {
        Some(dir) => {
            let (s, r, w) = dir.finish(scan.ck, scan.words, &file)?;
            (Some(s), r, w)
        }
        None => (None, None, None),
    };
    Ok(RunOutcome {
        summary: file.metrics,
        windows,
        tokens_per_second: file.tokens_per_second,
        elapsed_seconds: elapsed,
        summary_path,
        rows_path,
        words_path,
        already_complete: false,
        stats_on: file.stats_on,
    })
}

/// The outcome of a run that had already finished in `dir`.
fn already_complete<M: Mode>(
    mode: &M,
    ck: Checkpoint<M::Agg>,
    opts: &RunOptions,
    dir: &std::path::Path,
) -> RunOutcome<<M::Agg as Aggregate>::Summary> {
    let rolling = opts.protocol.kind == ProtocolKind::Rolling;
    let tokens = ck.aggregate.count();
    let first = opts
        .shard
        .as_ref()
        .map_or(0, |s| s.shard.windows(s.windows_total).start);
    RunOutcome {
        summary: ck
            .aggregate
            .summary(Some(ck.bytes_scored), rolling.then_some(ck.words)),
        windows: ck.windows_done - first,
        tokens_per_second: rate(tokens, ck.elapsed_seconds),
        elapsed_seconds: ck.elapsed_seconds,
        summary_path: Some(dir.join(SUMMARY_FILE)),
        rows_path: opts.rows.file_name().map(|n| dir.join(n)),
        words_path: opts.words.words_file_name().map(|n| dir.join(n)),
        already_complete: true,
        stats_on: mode.stats_on(),
    }
}

fn shard_report(s: &ShardPlan) -> ShardReport {
    let r = s.shard.windows(s.windows_total);
    ShardReport {
        index: s.shard.index,
        count: s.shard.count,
        source: s.shard.source.clone(),
        windows_total: s.windows_total,
        windows_first: r.start,
        windows_end: r.end,
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

/// What must be identical for a run to be resumed (or shards to be merged).
fn fingerprint<T: Tokenize + ?Sized>(
    mode: &str,
    tokenizer: &T,
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
        tokenizer: tokenizer.fingerprint(),
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
        words: opts.words,
        shard: opts.shard.as_ref().map(|s| ShardFingerprint {
            index: s.shard.index,
            count: s.shard.count,
            windows_total: s.windows_total,
        }),
    }
}

pub(crate) fn rate(tokens: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        tokens as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_count_edge_cases() {
        assert_eq!(lm_eval_word_count("\n\n"), 2);
        assert_eq!(lm_eval_word_count(" = Valkyria = \n"), 5);
    }
}
