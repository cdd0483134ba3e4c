//! The window loop: documents → tokens → planned windows → batches → scores, with the run's
//! state, outputs and checkpoints. A sharded run plans every window but scores only its own
//! ([`Scan::windows`]); it stops once the planner reaches the next shard.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Instant;

use surprisal_metrics::MetricsError;

use super::mode::{score_batch, Aggregate, Batch, Item, Mode, Outputs};
use super::rundir::RunDir;
use super::{lm_eval_word_count, logit_chunk_rows, RunOptions};
use crate::document::Document;
use crate::error::{Result, RunError};
use crate::model::Tokenize;
use crate::output::checkpoint::Checkpoint;
use crate::output::rows::RowsFormat;
use crate::progress::Progress;
use crate::protocol::{DocTotals, Planner, ProtocolKind, ResolvedProtocol, ScoredToken, Window};
use crate::words::stream::WordStream;

/// Documents tokenized into the planner on demand, windows out.
pub(crate) struct WindowStream<'a, T: ?Sized, D> {
    tokenizer: &'a T,
    planner: Planner,
    docs: D,
    /// (doc index, source) of documents that may still hold scored tokens.
    sources: VecDeque<(usize, String)>,
}

impl<'a, T, D, E> WindowStream<'a, T, D>
where
    T: Tokenize + ?Sized,
    D: Iterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    pub fn new(tokenizer: &'a T, protocol: ResolvedProtocol, docs: D) -> Self {
        WindowStream {
            tokenizer,
            planner: Planner::new(protocol),
            docs,
            sources: VecDeque::new(),
        }
    }

    /// The next planned window (`None` at the end of the corpus); documents pushed on the way
    /// are registered with `words`.
    pub fn next(&mut self, mut words: Option<&mut WordStream>) -> Result<Option<Window>> {
        loop {
            if let Some(w) = self.planner.pop() {
                return Ok(Some(w));
            }
            if self.planner.is_done() {
                return Ok(None);
            }
            if !self.planner.wants_more() {
                self.planner.finish()?;
                continue;
            }
            match self.docs.next() {
                None => self.planner.finish()?,
                Some(Err(e)) => return Err(RunError::Data(e.to_string())),
                Some(Ok(doc)) => {
                    push_doc(
                        self.tokenizer,
                        &mut self.planner,
                        &doc,
                        words.as_deref_mut(),
                    )?;
                    self.sources.push_back((doc.index, doc.source));
                }
            }
        }
    }

    /// Forgets the sources of documents before `doc` (scored tokens only move forward).
    fn scored_up_to(&mut self, doc: usize) {
        while self.sources.front().is_some_and(|(d, _)| *d < doc) {
            self.sources.pop_front();
        }
    }

    /// The source name of document `doc`, for error messages.
    fn source_of(&self, doc: usize) -> String {
        self.sources
            .iter()
            .find(|(d, _)| *d == doc)
            .map_or_else(|| format!("document {doc}"), |(_, s)| s.clone())
    }
}

/// Tokenizes one document and feeds it to the planner (respecting the token
/// budget and computing rolling's byte/word totals of the kept text).
fn push_doc<T: Tokenize + ?Sized>(
    tokenizer: &T,
    planner: &mut Planner,
    doc: &Document,
    words: Option<&mut WordStream>,
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
    let totals = if planner.protocol().kind == ProtocolKind::Rolling {
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

/// Windows planned over the whole corpus (what a sharded run splits).
pub(crate) fn count_windows<T, I, E>(
    tokenizer: &T,
    protocol: ResolvedProtocol,
    documents: I,
) -> Result<u64>
where
    T: Tokenize + ?Sized,
    I: IntoIterator<Item = std::result::Result<Document, E>>,
    E: std::fmt::Display,
{
    let mut stream = WindowStream::new(tokenizer, protocol, documents.into_iter());
    let mut n = 0;
    while let Some(w) = stream.next(None)? {
        n = n.max(w.id + 1);
    }
    Ok(n)
}

/// Where a planned window stands for this run.
enum Place {
    /// Not ours (before this shard, or empty after its end): plan on.
    Skip,
    /// Scored by an earlier session.
    Done,
    /// Score it.
    Score,
    /// The first window of the next shard: stop.
    Stop,
}

/// A run in progress: its state (the checkpoint), outputs and clock.
pub(crate) struct Scan<'a, M: Mode, T: ?Sized> {
    pub mode: &'a M,
    pub tokenizer: &'a T,
    pub opts: &'a RunOptions,
    pub protocol: ResolvedProtocol,
    /// Window ids this run scores (`0..u64::MAX` unsharded).
    pub windows: Range<u64>,
    pub ck: Checkpoint<M::Agg>,
    pub dir: Option<RunDir<M::Row>>,
    pub words: Option<WordStream>,
    /// Engine time of earlier sessions (s).
    pub elapsed_before: f64,
    pub t0: Instant,
}

impl<M: Mode, T: Tokenize + ?Sized> Scan<'_, M, T> {
    /// Engine wall time so far, over all sessions (s).
    pub fn elapsed(&self) -> f64 {
        self.elapsed_before + self.t0.elapsed().as_secs_f64()
    }

    fn checkpoint(&mut self) -> Result<()> {
        let elapsed = self.elapsed();
        match self.dir.as_mut() {
            Some(dir) => dir.checkpoint(&mut self.ck, self.words.as_mut(), elapsed),
            None => Ok(()),
        }
    }

    fn place(&mut self, w: &Window) -> Place {
        if w.id < self.windows.start {
            if let Some(words) = self.words.as_mut() {
                words.skipped_before(&w.scored);
            }
            return Place::Skip;
        }
        let first = w.scored.first().map(|s| s.token.global);
        if let (Some(words), Some(g)) = (self.words.as_mut(), first) {
            words.reached(g);
        }
        if w.id >= self.windows.end {
            return match (first, self.words.as_mut()) {
                (None, _) => Place::Skip,
                (Some(g), Some(words)) => {
                    words.ends_at(g);
                    Place::Stop
                }
                (Some(_), None) => Place::Stop,
            };
        }
        if w.id < self.ck.windows_done {
            return Place::Done;
        }
        Place::Score
    }

    /// Streams `documents` through the planner and scores this run's windows. Returns how many
    /// of them were planned.
    pub fn run<I, E>(&mut self, documents: I, progress: &mut dyn Progress) -> Result<u64>
    where
        I: IntoIterator<Item = std::result::Result<Document, E>>,
        E: std::fmt::Display,
    {
        let bs = self.opts.batch_size;
        let mut stream =
            WindowStream::new(self.tokenizer, self.protocol.clone(), documents.into_iter());
        let mut last_ck = Instant::now();
        let mut windows_seen = 0u64;
        let mut ended = false; // the corpus ended (not stopped at the next shard)
        let mut stop = false;
        let mut batch: Vec<Window> = Vec::with_capacity(bs);
        loop {
            if self.interrupted() {
                self.checkpoint()?;
                return Err(RunError::Interrupted {
                    out_dir: self.dir.as_ref().map(|d| d.path().to_path_buf()),
                });
            }
            // Batches hold the windows `k·bs .. (k+1)·bs`, as in an unsharded run.
            while !stop && batch.len() < bs {
                let Some(w) = stream.next(self.words.as_mut())? else {
                    ended = true;
                    break;
                };
                windows_seen = windows_seen.max(w.id + 1);
                match self.place(&w) {
                    Place::Skip | Place::Done => {}
                    Place::Stop => stop = true,
                    Place::Score => {
                        let last_of_batch = (w.id + 1) % bs as u64 == 0;
                        batch.push(w);
                        if last_of_batch {
                            break;
                        }
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            self.score(&batch, &mut stream, progress)?;
            if self.dir.is_some() && last_ck.elapsed() >= self.opts.checkpoint_interval {
                self.checkpoint()?;
                last_ck = Instant::now();
            }
            batch.clear();
        }
        if let Some(w) = self.words.as_mut() {
            w.flush(true)?;
        }
        if let (Some(total), true) = (self.opts.shard.as_ref().map(|s| s.windows_total), ended) {
            if windows_seen != total {
                return Err(RunError::Data(format!(
                    "the corpus now plans {windows_seen} windows, {total} when this shard was planned; did the data change?"
                )));
            }
        }
        Ok(windows_seen.clamp(self.windows.start, self.windows.end) - self.windows.start)
    }

    fn interrupted(&self) -> bool {
        self.opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    /// Scores one batch into the aggregate, rows, words and counters.
    fn score<D, E>(
        &mut self,
        batch: &[Window],
        stream: &mut WindowStream<'_, T, D>,
        progress: &mut dyn Progress,
    ) -> Result<()>
    where
        D: Iterator<Item = std::result::Result<Document, E>>,
        E: std::fmt::Display,
    {
        let items: Vec<Item> = batch
            .iter()
            .enumerate()
            .flat_map(|(r, w)| w.scored.iter().map(move |s| (r, *s)))
            .collect();
        let on_error = |stok: &ScoredToken, e: MetricsError| RunError::Metrics {
            source_name: stream.source_of(stok.token.doc),
            doc: stok.token.doc,
            index: stok.token.index,
            position: stok.position,
            message: e.to_string(),
        };
        let tokenizer = self.tokenizer;
        let b = Batch {
            inputs: batch.iter().map(|w| w.input.as_slice()).collect(),
            items,
            chunk_rows: logit_chunk_rows(self.opts.logit_chunk_rows, self.mode.vocab_size()),
            token_text: &|id| tokenizer.token_text(id),
            on_error: &on_error,
        };
        let mut rows = Vec::new();
        let mut word_scores = Vec::new();
        score_batch(
            self.mode,
            &b,
            &mut self.ck.aggregate,
            Outputs {
                rows: (self.opts.rows != RowsFormat::None).then_some(&mut rows),
                words: self.words.as_ref().map(|w| (w.mask(), &mut word_scores)),
            },
        )?;
        if let Some(w) = self.words.as_mut() {
            debug_assert_eq!(word_scores.len(), b.items.len());
            w.record(b.items.iter().map(|(_, st)| st), &word_scores);
            w.flush(false)?;
        }
        let (scored, last_doc) = (b.items.len(), b.items.last().map(|i| i.1.token.doc));
        drop(b);
        let rolling = self.protocol.kind == ProtocolKind::Rolling;
        for w in batch {
            self.ck.bytes_scored += match w.doc_totals {
                Some(t) => t.bytes,
                None if rolling => 0,
                None => w.scored.iter().map(|s| s.token.byte_len()).sum(),
            };
            self.ck.words += w.doc_totals.map_or(0, |t| t.words);
        }
        self.ck.windows_done = batch.last().map_or(self.ck.windows_done, |w| w.id + 1);
        if let Some(doc) = last_doc {
            stream.scored_up_to(doc);
        }
        progress.advance(scored as u64);
        if let Some(dir) = self.dir.as_mut() {
            dir.append(&rows)?;
        }
        Ok(())
    }

    /// Tokens scored so far.
    pub fn tokens(&self) -> u64 {
        self.ck.aggregate.count()
    }
}
