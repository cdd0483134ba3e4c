//! Per-word rows of a run, as the engine scores tokens.
//!
//! Every scored position also yields `log P_bow`, the log mass of the word-initial tokens
//! ([`super::bow_mask`] of the decoded vocabulary plus EOS) under the distribution that predicted
//! the token. [`WordStream`] collects, per document, each token's byte span, NLL and `log P_bow`
//! as the token is scored (a document's tokens may be spread over several windows; for `sliding`
//! / `chunks` documents share windows), and writes the document's [`WordRow`]s
//! ([`super::word_rows`]) once the planner has scored past it, so only the documents still in
//! flight are held. The `log P_bow` *after* a document's last token is the one of the
//! distribution that predicted the next document's first token when that distribution saw the
//! previous token (`sliding` / `chunks`, which concatenate documents); `rolling` scores documents
//! independently and never computes it, so there the last word of each document has no corrected
//! surprisal. Tokens that are never scored (the first token without BOS, `chunks` first halves,
//! tokens past `max_tokens`) make their words `None`. Pending documents' scores are part of the
//! checkpoint ([`WordsCk`]), so a resumed run writes the same `words.*` file as an uninterrupted
//! one.
//!
//! # Shards
//!
//! A document's *footprint* is the stream positions `[start, last]` whose scores its rows need:
//! its own tokens and, outside `rolling`, the next token (whose predicting distribution gives the
//! final `log P_bow`). Shard `k` covers the stream positions `[B_k, B_{k+1})`, `B_k` being the
//! first scored position of its first window (`B_0 = 0`, the last shard's range is unbounded), so
//! the ranges of all shards partition the stream and every shard computes the same `B`s. A
//! shard writes the rows of the documents whose footprint lies inside its range; a document whose
//! footprint crosses a boundary is an *edge*: each shard it touches keeps the scores it has
//! ([`EdgeDoc`], in the checkpoint) and `surprisal merge` joins them into the rows the unsharded
//! run writes ([`EdgeDoc::absorb`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{word_rows, TokenWordInput, WordRow};
use crate::device_stats::VocabMask;
use crate::document::Document;
use crate::error::Result;
use crate::output::rows::{RowSink, RowsFormat};
use crate::protocol::{ProtocolKind, ScoredToken};

/// Scores of one pending document as stored in the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCk {
    /// Position of the document in the stream of pushed documents.
    pub ordinal: u64,
    /// `(token index, nll, log P_bow)` of its scored tokens.
    pub scored: Vec<(usize, Option<f64>, Option<f64>)>,
    /// `log P_bow` after its last token, if known.
    pub final_log_p_bow: Option<f64>,
}

/// A document whose footprint crosses a shard boundary, with the scores one shard has for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeDoc {
    /// Position of the document in the stream of pushed documents.
    pub ordinal: u64,
    /// Document index.
    pub doc: usize,
    /// Document text.
    pub text: String,
    /// Every token of the document with the scores this shard computed.
    pub tokens: Vec<TokenWordInput>,
    /// `log P_bow` after its last token, if this shard computed it.
    pub final_log_p_bow: Option<f64>,
}

impl EdgeDoc {
    /// Adds the scores another shard has for the same document (each position is scored by
    /// exactly one shard).
    pub fn absorb(&mut self, other: EdgeDoc) {
        for (t, o) in self.tokens.iter_mut().zip(other.tokens) {
            t.nll_nats = t.nll_nats.or(o.nll_nats);
            t.log_p_bow_before = t.log_p_bow_before.or(o.log_p_bow_before);
        }
        self.final_log_p_bow = self.final_log_p_bow.or(other.final_log_p_bow);
    }

    /// The document's word rows.
    pub fn rows(&self) -> Vec<WordRow> {
        word_rows(self.doc, &self.text, &self.tokens, self.final_log_p_bow)
    }
}

/// Per-word state in the checkpoint (key `word_rows`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WordsCk {
    /// Format of `words.*`.
    pub format: RowsFormat,
    /// Finalized word-row parts.
    pub parts: u64,
    /// Rows in them.
    pub rows: u64,
    /// Documents handled (written, handed to an edge or outside the shard): ordinals `0..n`.
    pub docs_flushed: u64,
    /// Documents in flight.
    pub pending: Vec<PendingCk>,
    /// Sharded runs: documents crossing a shard boundary (for `surprisal merge`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<EdgeDoc>,
    /// Sharded runs: first and last ordinal of the documents whose rows this run wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned: Option<[u64; 2]>,
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

    fn into_edge(self) -> EdgeDoc {
        EdgeDoc {
            ordinal: self.ordinal,
            doc: self.doc,
            text: self.text,
            tokens: self.tokens,
            final_log_p_bow: self.final_log_p_bow,
        }
    }
}

/// The per-word rows of a run: the word-boundary mask, the documents in flight and the
/// `words.*` sink (see the module docs).
pub struct WordStream {
    mask: VocabMask,
    sink: RowSink<WordRow>,
    format: RowsFormat,
    kind: ProtocolKind,
    bos_used: bool,
    /// Documents pushed to the planner so far in this session.
    docs_pushed: u64,
    /// Documents handled (ordinals `0..docs_flushed`).
    docs_flushed: u64,
    pending: VecDeque<PendingDoc>,
    /// Scores from the checkpoint, applied when their document is pushed again.
    restored: VecDeque<PendingCk>,
    /// Highest stream index scored in this session.
    max_scored: Option<u64>,
    /// `B_k`: first stream position of this run's range (`None`: not reached yet).
    start: Option<u64>,
    /// `B_{k+1}` (`None`: unbounded).
    end: Option<u64>,
    /// Highest scored position of the windows before this shard.
    before_max: Option<u64>,
    edges: Vec<EdgeDoc>,
    owned: Option<[u64; 2]>,
}

impl WordStream {
    /// Opens the stream in `dir`, continuing `ck` when resuming. `first_shard`: whether the run
    /// starts at the beginning of the stream (unsharded, or shard 0).
    pub fn open(
        dir: &Path,
        format: RowsFormat,
        ck: Option<WordsCk>,
        mask: VocabMask,
        kind: ProtocolKind,
        bos_used: bool,
        first_shard: bool,
    ) -> Result<Self> {
        let ck = ck.unwrap_or(WordsCk {
            format,
            parts: 0,
            rows: 0,
            docs_flushed: 0,
            pending: Vec::new(),
            edges: Vec::new(),
            owned: None,
        });
        Ok(WordStream {
            mask,
            sink: RowSink::open(dir, format, ck.parts, ck.rows)?,
            format,
            kind,
            bos_used,
            docs_pushed: 0,
            docs_flushed: ck.docs_flushed,
            pending: VecDeque::new(),
            restored: ck.pending.into(),
            max_scored: None,
            start: first_shard.then_some(0),
            end: None,
            before_max: None,
            edges: ck.edges,
            owned: ck.owned,
        })
    }

    /// The word-boundary mask.
    pub fn mask(&self) -> &VocabMask {
        &self.mask
    }

    /// A window before this shard's range was planned (and skipped).
    pub fn skipped_before(&mut self, scored: &[ScoredToken]) {
        if let Some(last) = scored.last() {
            self.before_max = Some(last.token.global);
        }
    }

    /// A window at or after this shard's first window whose first scored position is `g`.
    pub fn reached(&mut self, g: u64) {
        self.start.get_or_insert(g);
    }

    /// The next shard starts at stream position `g`.
    pub fn ends_at(&mut self, g: u64) {
        self.end = Some(g);
    }

    /// Registers a document as it is pushed to the planner (`global_start`:
    /// the planner's token count before the push).
    pub fn push_doc(
        &mut self,
        doc: &Document,
        spans: &[(usize, usize)],
        kept: usize,
        global_start: u64,
    ) {
        let ordinal = self.docs_pushed;
        self.docs_pushed += 1;
        if ordinal < self.docs_flushed {
            return; // handled by an earlier session
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

    /// Records the `(nll, log P_bow)` of a batch's scored tokens (in stream order).
    pub fn record<'a>(
        &mut self,
        tokens: impl Iterator<Item = &'a ScoredToken>,
        scores: &[(f64, f64)],
    ) {
        let mut cur = 0usize;
        for (st, &(nll, lpb)) in tokens.zip(scores) {
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

    /// Last stream position of a document's footprint (module docs).
    fn last(&self, p: &PendingDoc) -> u64 {
        let end = p.global_end();
        if self.kind == ProtocolKind::Rolling && p.kept > 0 {
            end - 1 // rolling never scores past a document's last token
        } else {
            end
        }
    }

    /// Writes the rows of the documents the planner has scored past (all of
    /// them with `all`, at the end of the run).
    pub fn flush(&mut self, all: bool) -> Result<()> {
        if all && self.start.is_none() {
            self.start = Some(u64::MAX); // no window of this shard scored anything
        }
        let mut rows = Vec::new();
        while let Some(front) = self.pending.front() {
            let (first, last) = (front.global_start, self.last(front));
            let Some(start) = self.start else {
                if self.before_max.is_some_and(|m| last <= m) {
                    self.pop_handled(); // before this shard
                    continue;
                }
                break;
            };
            if last < start {
                self.pop_handled(); // before this shard
                continue;
            }
            if !(all || self.max_scored.is_some_and(|m| m >= last)) {
                break;
            }
            let end = self.end.unwrap_or(u64::MAX);
            let p = self.pop_handled();
            if first >= start && last < end {
                rows.extend(word_rows(p.doc, &p.text, &p.tokens, p.final_log_p_bow));
                let o = self.owned.get_or_insert([p.ordinal, p.ordinal]);
                o[1] = p.ordinal;
            } else if first < end {
                self.edges.push(p.into_edge());
            }
        }
        self.sink.append(&rows)
    }

    fn pop_handled(&mut self) -> PendingDoc {
        let p = self.pending.pop_front().expect("checked by the caller");
        self.docs_flushed = p.ordinal + 1;
        p
    }

    /// Finalizes the current part of `words.*` (before a checkpoint records it).
    pub fn finalize_part(&mut self) -> Result<()> {
        self.sink.finalize_part()
    }

    /// The checkpointed state.
    pub fn to_ck(&self) -> WordsCk {
        WordsCk {
            format: self.format,
            parts: self.sink.parts(),
            rows: self.sink.rows(),
            docs_flushed: self.docs_flushed,
            pending: self.pending.iter().map(PendingDoc::to_ck).collect(),
            edges: self.edges.clone(),
            owned: self.owned,
        }
    }

    /// Writes the final `words.*` file.
    pub fn finish(self) -> Result<Option<PathBuf>> {
        self.sink.finish()
    }
}
