//! Evaluation protocols: pure index planning.
//!
//! A *window* is the token sequence the model sees in one forward pass; the
//! *scored* positions of a window are the positions whose next-token
//! predictions count. The [`Planner`] turns a stream of tokenized documents
//! into windows, holding only a bounded buffer of tokens (≈ one window, two
//! for `chunks`, one document for `rolling`).
//!
//! See `crates/runner/PROTOCOLS.md` for the definitions and a worked example
//! of each protocol; `scripts/references/window_reference.py` is an independent
//! implementation the tests compare against.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};

/// Which protocol to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolKind {
    /// Strided sliding windows over the concatenated token stream (HF recipe).
    Sliding,
    /// `llama-perplexity`: disjoint chunks, second half scored.
    Chunks,
    /// lm-eval `loglikelihood_rolling`, per document.
    Rolling,
}

impl ProtocolKind {
    /// Lower-case name as used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Sliding => "sliding",
            ProtocolKind::Chunks => "chunks",
            ProtocolKind::Rolling => "rolling",
        }
    }
}

impl std::fmt::Display for ProtocolKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ProtocolKind {
    type Err = RunError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sliding" => Ok(ProtocolKind::Sliding),
            "chunks" => Ok(ProtocolKind::Chunks),
            "rolling" => Ok(ProtocolKind::Rolling),
            other => Err(RunError::Config(format!(
                "unknown protocol {other:?} (expected sliding, chunks or rolling)"
            ))),
        }
    }
}

/// `--bos auto|always|never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BosMode {
    /// Use the model's default (`Tokenize::adds_bos`).
    Auto,
    /// Always prefix BOS (error if the tokenizer has none).
    Always,
    /// Never prefix BOS.
    Never,
}

impl BosMode {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            BosMode::Auto => "auto",
            BosMode::Always => "always",
            BosMode::Never => "never",
        }
    }
}

impl std::str::FromStr for BosMode {
    type Err = RunError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BosMode::Auto),
            "always" => Ok(BosMode::Always),
            "never" => Ok(BosMode::Never),
            other => Err(RunError::Config(format!(
                "unknown --bos value {other:?} (expected auto, always or never)"
            ))),
        }
    }
}

/// Protocol parameters as given by the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolConfig {
    /// Protocol name.
    pub kind: ProtocolKind,
    /// Window length in tokens (what the model sees, BOS/prefix included).
    pub window: usize,
    /// Stride in tokens between window starts (`sliding` only; ignored
    /// otherwise).
    pub stride: usize,
    /// BOS choice (`sliding`, `chunks`; `rolling` always uses lm-eval's
    /// prefix token).
    pub bos: BosMode,
    /// Keep only the first N tokens of the corpus (documents in order).
    pub max_tokens: Option<u64>,
    /// `chunks` only: keep only the first K chunks.
    pub max_chunks: Option<u64>,
}

/// What the planner needs to know about the tokenizer and model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelTokens {
    /// The tokenizer's BOS id, if any.
    pub bos_id: Option<u32>,
    /// The tokenizer's EOS id, if any (rolling prefix fallback).
    pub eos_id: Option<u32>,
    /// Whether the model adds BOS by default (`--bos auto`).
    pub adds_bos: bool,
    /// The model's maximum context, if bounded.
    pub max_context: Option<usize>,
}

/// A validated protocol with the BOS / prefix decision taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedProtocol {
    /// Protocol name.
    pub kind: ProtocolKind,
    /// Window length (model input length, BOS/prefix included).
    pub window: usize,
    /// Stride (`sliding`), in text tokens.
    pub stride: usize,
    /// `sliding`/`chunks`: the BOS id when BOS is used. `rolling`: the
    /// lm-eval prefix token (BOS, else EOS).
    pub bos: Option<u32>,
    /// Corpus token limit.
    pub max_tokens: Option<u64>,
    /// Chunk limit (`chunks`).
    pub max_chunks: Option<u64>,
}

impl ProtocolConfig {
    /// Validates the parameters against the model and takes the BOS decision.
    pub fn resolve(&self, m: &ModelTokens) -> Result<ResolvedProtocol> {
        let w = self.window;
        if let Some(ctx) = m.max_context {
            if w > ctx {
                return Err(RunError::Config(format!(
                    "window {w} exceeds the model's maximum context of {ctx} tokens"
                )));
            }
        }
        let use_bos = match self.bos {
            BosMode::Auto => m.adds_bos,
            BosMode::Always => true,
            BosMode::Never => false,
        };
        let bos = if use_bos && self.kind != ProtocolKind::Rolling {
            Some(m.bos_id.ok_or_else(|| {
                RunError::Config(
                    "--bos always was requested but the tokenizer has no BOS token".into(),
                )
            })?)
        } else {
            None
        };
        if self.max_tokens == Some(0) {
            return Err(RunError::Config("--max-tokens must be at least 1".into()));
        }
        match self.kind {
            ProtocolKind::Sliding => {
                if w < 2 {
                    return Err(RunError::Config(format!(
                        "window must be at least 2 tokens (got {w})"
                    )));
                }
                if self.stride < 1 {
                    return Err(RunError::Config("stride must be at least 1".into()));
                }
                if self.stride >= w {
                    // Without BOS a window's first token has no context inside
                    // the window, so consecutive windows must overlap by at
                    // least one token; with BOS the window holds only w - 1
                    // text tokens. Either way stride == window would leave one
                    // token per window unscored (HF's recipe silently drops
                    // it), so it is refused.
                    return Err(RunError::Config(format!(
                        "stride {} must be smaller than the window {w}: {}; use --stride {} for windows that do not overlap in scored tokens",
                        self.stride,
                        if bos.is_some() {
                            "with BOS the window holds only window - 1 text tokens (BOS takes one slot), so larger strides skip tokens"
                        } else {
                            "the first token of a window has no context inside it, so windows must overlap by one token or it is never scored"
                        },
                        w - 1
                    )));
                }
                if self.max_chunks.is_some() {
                    return Err(RunError::Config(
                        "--max-chunks only applies to the chunks protocol".into(),
                    ));
                }
            }
            ProtocolKind::Chunks => {
                // llama.cpp would score n_ctx - n_ctx/2 - 1 tokens per chunk:
                // zero for n_ctx = 2, so require 3.
                if w < 3 {
                    return Err(RunError::Config(format!(
                        "the chunks protocol needs a window of at least 3 tokens (got {w})"
                    )));
                }
                if self.max_chunks == Some(0) {
                    return Err(RunError::Config("--max-chunks must be at least 1".into()));
                }
            }
            ProtocolKind::Rolling => {
                if w < 1 {
                    return Err(RunError::Config("window must be at least 1 token".into()));
                }
                if self.max_chunks.is_some() {
                    return Err(RunError::Config(
                        "--max-chunks only applies to the chunks protocol".into(),
                    ));
                }
            }
        }
        let bos = if self.kind == ProtocolKind::Rolling {
            // lm-eval HFLM.prefix_token_id: BOS if the tokenizer has one, else EOS.
            Some(m.bos_id.or(m.eos_id).ok_or_else(|| {
                RunError::Config(
                    "the rolling protocol needs a BOS or EOS token as prefix, and the tokenizer has neither"
                        .into(),
                )
            })?)
        } else {
            bos
        };
        Ok(ResolvedProtocol {
            kind: self.kind,
            window: w,
            stride: if self.kind == ProtocolKind::Sliding {
                self.stride
            } else {
                0
            },
            bos,
            max_tokens: self.max_tokens,
            max_chunks: if self.kind == ProtocolKind::Chunks {
                self.max_chunks
            } else {
                None
            },
        })
    }
}

/// One text token of the corpus stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamToken {
    /// Token id.
    pub id: u32,
    /// Document index.
    pub doc: usize,
    /// Index of the token inside its document.
    pub index: usize,
    /// Byte span in the document text (`start..end`).
    pub byte_start: usize,
    /// End of the byte span (exclusive).
    pub byte_end: usize,
    /// Index of the token in the corpus token stream (0-based, text tokens
    /// only: BOS/prefix tokens are not counted).
    pub global: u64,
}

impl StreamToken {
    /// Length of the byte span.
    pub fn byte_len(&self) -> u64 {
        self.byte_end.saturating_sub(self.byte_start) as u64
    }
}

/// One scored token of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScoredToken {
    /// Position in the window whose logits predict the token.
    pub position: usize,
    /// The predicted (target) token.
    pub token: StreamToken,
}

impl ScoredToken {
    /// Tokens before the scored one inside its window (BOS/prefix included).
    pub fn context_len(&self) -> usize {
        self.position + 1
    }
}

/// Per-document totals (rolling: bytes and words of the document).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocTotals {
    /// UTF-8 bytes.
    pub bytes: u64,
    /// Words (`len(re.split(r"\s+", doc))`).
    pub words: u64,
}

/// One forward pass worth of tokens and what to score in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// 0-based sequential id of the window.
    pub id: u64,
    /// Model input (BOS/prefix included).
    pub input: Vec<u32>,
    /// Scored tokens, in increasing position.
    pub scored: Vec<ScoredToken>,
    /// `rolling`: set on the last window of each document.
    pub doc_totals: Option<DocTotals>,
}

/// Streaming window planner. Push documents' tokens, then [`Planner::finish`];
/// pop windows with [`Planner::pop`] whenever convenient (windows become
/// ready as soon as enough tokens are buffered).
#[derive(Debug)]
pub struct Planner {
    p: ResolvedProtocol,
    /// Buffered text tokens; `buf[0]` has global index `base`.
    buf: VecDeque<StreamToken>,
    base: u64,
    /// Text tokens accepted so far (after `max_tokens`).
    n: u64,
    finished: bool,
    ready: VecDeque<Window>,
    next_id: u64,
    // sliding
    begin: u64,
    prev_end: u64,
    // chunks
    chunks_emitted: u64,
}

impl Planner {
    /// New planner for a resolved protocol.
    pub fn new(p: ResolvedProtocol) -> Self {
        Planner {
            p,
            buf: VecDeque::new(),
            base: 0,
            n: 0,
            finished: false,
            ready: VecDeque::new(),
            next_id: 0,
            begin: 0,
            prev_end: 0,
            chunks_emitted: 0,
        }
    }

    /// The protocol.
    pub fn protocol(&self) -> &ResolvedProtocol {
        &self.p
    }

    /// How many more text tokens will be accepted (`None` = unlimited).
    pub fn remaining_budget(&self) -> Option<u64> {
        self.p.max_tokens.map(|m| m.saturating_sub(self.n))
    }

    /// Whether more documents can still change the result (false once the
    /// token budget is used up or `max_chunks` chunks were planned).
    pub fn wants_more(&self) -> bool {
        if self.finished || self.remaining_budget() == Some(0) {
            return false;
        }
        if let Some(k) = self.p.max_chunks {
            if self.chunks_emitted >= k {
                return false;
            }
        }
        true
    }

    /// Text tokens accepted so far.
    pub fn tokens_seen(&self) -> u64 {
        self.n
    }

    /// Adds one document's tokens `(id, byte_start, byte_end)` (tokenized
    /// without special tokens). Tokens beyond `max_tokens` are dropped.
    /// `totals` are the document's bytes/words (used by `rolling`; for a
    /// document cut by `max_tokens` pass the totals of the kept prefix).
    pub fn push_document(&mut self, doc: usize, tokens: &[(u32, usize, usize)], totals: DocTotals) {
        if !self.wants_more() {
            return;
        }
        let keep = match self.remaining_budget() {
            Some(r) => tokens.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
            None => tokens.len(),
        };
        let start = self.n;
        let toks = tokens[..keep]
            .iter()
            .enumerate()
            .map(|(i, &(id, b0, b1))| StreamToken {
                id,
                doc,
                index: i,
                byte_start: b0,
                byte_end: b1,
                global: start + i as u64,
            });
        self.n += keep as u64;
        match self.p.kind {
            ProtocolKind::Rolling => {
                let d: Vec<StreamToken> = toks.collect();
                self.plan_rolling_doc(&d, totals);
            }
            ProtocolKind::Sliding => {
                // windows are planned lazily in `pop`, so a long document
                // never turns into more than one queued window
                self.buf.extend(toks);
            }
            ProtocolKind::Chunks => {
                self.buf.extend(toks);
            }
        }
    }

    /// Marks the end of the corpus; plans the remaining windows.
    /// `chunks` fails here when the corpus is too short (llama.cpp needs at
    /// least `2 × window` tokens, BOS included).
    pub fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        match self.p.kind {
            ProtocolKind::Rolling => Ok(()),
            ProtocolKind::Sliding => Ok(()),
            ProtocolKind::Chunks => {
                let stream = self.n + u64::from(self.p.bos.is_some());
                let w = self.p.window as u64;
                if stream < 2 * w {
                    return Err(RunError::Config(format!(
                        "the chunks protocol (like llama-perplexity) needs at least {} tokens for a window of {w}, but the data tokenizes to only {stream}{}",
                        2 * w,
                        if self.p.bos.is_some() { " (BOS included)" } else { "" }
                    )));
                }
                Ok(())
            }
        }
    }

    /// Next planned window, if any is ready.
    pub fn pop(&mut self) -> Option<Window> {
        if self.ready.is_empty() {
            match self.p.kind {
                ProtocolKind::Sliding => self.plan_sliding(),
                ProtocolKind::Chunks => self.plan_chunks(),
                ProtocolKind::Rolling => {}
            }
        }
        self.ready.pop_front()
    }

    /// Whether the stream is finished and every window has been popped
    /// (meaningful right after [`Planner::pop`] returned `None`).
    pub fn is_done(&self) -> bool {
        self.finished && self.ready.is_empty()
    }

    fn tok(&self, g: u64) -> StreamToken {
        self.buf[(g - self.base) as usize]
    }

    fn drop_before(&mut self, g: u64) {
        while self.base < g && !self.buf.is_empty() {
            self.buf.pop_front();
            self.base += 1;
        }
    }

    fn emit(&mut self, input: Vec<u32>, scored: Vec<ScoredToken>, doc_totals: Option<DocTotals>) {
        self.ready.push_back(Window {
            id: self.next_id,
            input,
            scored,
            doc_totals,
        });
        self.next_id += 1;
    }

    /// HF strided recipe over the concatenated stream:
    /// `for begin in range(0, n, stride): end = min(begin + W, n);
    ///  score tokens prev_end..end; prev_end = end; if end == n: break`
    /// with `W = window` text tokens, or `window - 1` when BOS takes a slot
    /// (and then the very first token is scored too, its context being BOS).
    fn plan_sliding(&mut self) {
        let bos = self.p.bos;
        let w_text = (self.p.window - usize::from(bos.is_some())) as u64;
        let s = self.p.stride as u64;
        loop {
            // HF's `if end == n: break` (also covers an empty stream).
            if self.finished && self.prev_end >= self.n {
                break;
            }
            let end = if self.begin + w_text <= self.n {
                self.begin + w_text
            } else if self.finished {
                self.n
            } else {
                break; // need more tokens to know this window's end
            };
            let begin = self.begin;
            let mut input = Vec::with_capacity((end - begin) as usize + 1);
            input.extend(bos);
            input.extend((begin..end).map(|g| self.tok(g).id));
            let off = u64::from(bos.is_some());
            // Without BOS the window's first token has nothing to condition on.
            let first_target = self.prev_end.max(begin + 1 - off);
            let scored = (first_target..end)
                .map(|t| ScoredToken {
                    // token t sits at position t - begin + off; its
                    // predictor is the position before.
                    position: (t - begin + off - 1) as usize,
                    token: self.tok(t),
                })
                .collect::<Vec<_>>();
            self.prev_end = end;
            self.begin += s;
            self.drop_before(self.begin.min(self.n));
            if !scored.is_empty() {
                self.emit(input, scored, None);
                return; // one window at a time
            }
        }
    }

    /// llama.cpp `perplexity()`: the stream is `[BOS] + text` when BOS is
    /// used; chunk `i` is `stream[i*w .. (i+1)*w]` with its first token
    /// replaced by BOS; logits at positions `w/2 .. w-2` predict the tokens
    /// at `w/2 + 1 .. w-1`. Chunks are only released once the stream is
    /// known to hold at least `2w` tokens (llama.cpp refuses shorter data).
    fn plan_chunks(&mut self) {
        let w = self.p.window as u64;
        let off = u64::from(self.p.bos.is_some());
        let stream_len = self.n + off;
        if stream_len < 2 * w {
            return;
        }
        let first = w / 2;
        if let Some(k) = self.p.max_chunks {
            if self.chunks_emitted >= k {
                self.buf.clear();
                self.base = self.n;
                return;
            }
        }
        let i = self.chunks_emitted;
        if (i + 1) * w > stream_len {
            return;
        }
        // stream index j <-> text global index j - off
        let text = |j: u64| j - off;
        let start = i * w;
        let mut input = Vec::with_capacity(w as usize);
        for k in 0..w {
            let j = start + k;
            match self.p.bos {
                Some(b) if k == 0 => input.push(b),
                _ => input.push(self.tok(text(j)).id),
            }
        }
        let scored = (first..w - 1)
            .map(|p| ScoredToken {
                position: p as usize,
                token: self.tok(text(start + p + 1)),
            })
            .collect();
        self.chunks_emitted += 1;
        self.emit(input, scored, None);
        self.drop_before(((i + 1) * w).saturating_sub(off));
    }

    /// lm-eval `get_rolling_token_windows(tokens, prefix, max_seq_len=window,
    /// context_len=1)` + `make_disjoint_window`, one document at a time.
    fn plan_rolling_doc(&mut self, d: &[StreamToken], totals: DocTotals) {
        let m = d.len();
        if m == 0 {
            return;
        }
        let l = self.p.window;
        let prefix = self.p.bos.expect("rolling always resolves a prefix token");
        let mut windows: Vec<(Vec<u32>, Vec<ScoredToken>)> = Vec::new();
        // First window: [prefix] + d[..f-1] predicts d[..f].
        let f = l.min(m);
        let mut input = vec![prefix];
        input.extend(d[..f - 1].iter().map(|t| t.id));
        let scored = (0..f)
            .map(|j| ScoredToken {
                position: j,
                token: d[j],
            })
            .collect();
        windows.push((input, scored));
        let mut predicted = f;
        // pred_len = max_seq_len - context_len + 1 = window.
        while predicted < m {
            let wpl = (m - predicted).min(l);
            let e = predicted + wpl;
            // input = d[e - l - 1 .. e - 1] (never negative: e >= l + 1 here)
            let s = e - l - 1;
            let input = d[s..e - 1].iter().map(|t| t.id).collect();
            let scored = (e - wpl..e)
                .map(|t| ScoredToken {
                    position: t - s - 1,
                    token: d[t],
                })
                .collect();
            windows.push((input, scored));
            predicted += wpl;
        }
        let last = windows.len() - 1;
        for (k, (input, scored)) in windows.into_iter().enumerate() {
            self.emit(input, scored, (k == last).then_some(totals));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mt(bos: bool) -> ModelTokens {
        ModelTokens {
            bos_id: Some(1000),
            eos_id: Some(1001),
            adds_bos: bos,
            max_context: Some(4096),
        }
    }

    fn cfg(kind: ProtocolKind, window: usize, stride: usize, bos: BosMode) -> ProtocolConfig {
        ProtocolConfig {
            kind,
            window,
            stride,
            bos,
            max_tokens: None,
            max_chunks: None,
        }
    }

    /// (global index, context_len, window id) triples for one document per
    /// entry of `docs` (lengths); tokens ids = global index.
    pub(crate) fn plan(p: &ResolvedProtocol, docs: &[usize]) -> Result<Vec<(u64, usize, u64)>> {
        let mut pl = Planner::new(p.clone());
        let mut out = Vec::new();
        let mut g = 0u32;
        for (d, &len) in docs.iter().enumerate() {
            let toks: Vec<(u32, usize, usize)> =
                (0..len).map(|i| (g + i as u32, i, i + 1)).collect();
            g += len as u32;
            pl.push_document(d, &toks, DocTotals::default());
            while let Some(w) = pl.pop() {
                out.extend(check_window(&w));
            }
        }
        pl.finish()?;
        while let Some(w) = pl.pop() {
            out.extend(check_window(&w));
        }
        Ok(out)
    }

    fn check_window(w: &Window) -> Vec<(u64, usize, u64)> {
        // Causality invariant: the scored token follows its predictor in
        // the input (when it is inside the window at all).
        for s in &w.scored {
            assert!(s.position < w.input.len());
            if s.position + 1 < w.input.len() {
                assert_eq!(w.input[s.position + 1], s.token.id);
            }
        }
        w.scored
            .iter()
            .map(|s| (s.token.global, s.context_len(), w.id))
            .collect()
    }

    #[test]
    fn sliding_every_token_once() {
        for n in [1usize, 2, 5, 10, 37, 100] {
            for window in 2..12 {
                for stride in 1..=window {
                    for bos in [false, true] {
                        let c = cfg(
                            ProtocolKind::Sliding,
                            window,
                            stride,
                            if bos { BosMode::Always } else { BosMode::Never },
                        );
                        let Ok(p) = c.resolve(&mt(false)) else {
                            assert_eq!(stride, window);
                            continue;
                        };
                        let got = plan(&p, &[n]).unwrap();
                        let idx: Vec<u64> = got.iter().map(|t| t.0).collect();
                        let want: Vec<u64> = (u64::from(!bos)..n as u64).collect();
                        assert_eq!(idx, want, "n={n} w={window} s={stride} bos={bos}");
                        let wt = window - usize::from(bos);
                        for &(t, ctx, _) in &got {
                            let min_ctx = (wt - stride).min(t as usize) + usize::from(bos);
                            assert!(ctx >= min_ctx, "ctx {ctx} < {min_ctx}");
                            assert!(ctx < window);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sliding_across_documents_is_one_stream() {
        let p = cfg(ProtocolKind::Sliding, 4, 2, BosMode::Never)
            .resolve(&mt(false))
            .unwrap();
        assert_eq!(plan(&p, &[3, 0, 4, 3]).unwrap(), plan(&p, &[10]).unwrap());
    }

    #[test]
    fn sliding_validation() {
        let m = mt(false);
        for (w, s) in [(1, 1), (4, 0), (4, 5)] {
            assert!(cfg(ProtocolKind::Sliding, w, s, BosMode::Never)
                .resolve(&m)
                .is_err());
        }
        let e = cfg(ProtocolKind::Sliding, 4, 4, BosMode::Always)
            .resolve(&m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("BOS takes one slot"), "{e}");
        let e = cfg(ProtocolKind::Sliding, 4, 4, BosMode::Never)
            .resolve(&m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--stride 3"), "{e}");
        let e = cfg(ProtocolKind::Sliding, 8192, 8, BosMode::Never)
            .resolve(&m)
            .unwrap_err()
            .to_string();
        assert!(e.contains("maximum context"), "{e}");
        let no_bos = ModelTokens { bos_id: None, ..m };
        assert!(cfg(ProtocolKind::Sliding, 4, 2, BosMode::Always)
            .resolve(&no_bos)
            .is_err());
        // auto follows the model
        let p = cfg(ProtocolKind::Sliding, 4, 2, BosMode::Auto)
            .resolve(&mt(true))
            .unwrap();
        assert_eq!(p.bos, Some(1000));
        let p = cfg(ProtocolKind::Sliding, 4, 2, BosMode::Auto)
            .resolve(&m)
            .unwrap();
        assert_eq!(p.bos, None);
    }

    #[test]
    fn max_tokens_truncates_stream() {
        let mut c = cfg(ProtocolKind::Sliding, 4, 2, BosMode::Never);
        c.max_tokens = Some(7);
        let p = c.resolve(&mt(false)).unwrap();
        let full = cfg(ProtocolKind::Sliding, 4, 2, BosMode::Never)
            .resolve(&mt(false))
            .unwrap();
        assert_eq!(plan(&p, &[3, 5, 9]).unwrap(), plan(&full, &[7]).unwrap());
    }

    #[test]
    fn chunks_match_llama_cpp_shape() {
        for bos in [false, true] {
            let c = cfg(
                ProtocolKind::Chunks,
                512,
                0,
                if bos { BosMode::Always } else { BosMode::Never },
            );
            let p = c.resolve(&mt(false)).unwrap();
            let n = 512 * 5 + 100;
            let got = plan(&p, &[n]).unwrap();
            // 255 tokens per chunk, 5 chunks
            assert_eq!(got.len(), 255 * 5);
            let stream_len = n + usize::from(bos);
            assert_eq!(stream_len / 512, 5);
            for (k, &(t, ctx, wid)) in got.iter().enumerate() {
                let chunk = (k / 255) as u64;
                assert_eq!(wid, chunk);
                let pos_in_chunk = t + u64::from(bos) - chunk * 512;
                assert_eq!(ctx as u64, pos_in_chunk);
                assert!((257..=511).contains(&pos_in_chunk));
            }
        }
    }

    #[test]
    fn chunks_max_chunks_and_short_data() {
        let mut c = cfg(ProtocolKind::Chunks, 8, 0, BosMode::Never);
        c.max_chunks = Some(2);
        let p = c.resolve(&mt(false)).unwrap();
        let got = plan(&p, &[100]).unwrap();
        assert_eq!(got.len(), 2 * 3);
        // fewer than 2w tokens: llama.cpp refuses
        let p = cfg(ProtocolKind::Chunks, 8, 0, BosMode::Never)
            .resolve(&mt(false))
            .unwrap();
        let e = plan(&p, &[15]).unwrap_err().to_string();
        assert!(e.contains("at least 16 tokens"), "{e}");
        assert_eq!(plan(&p, &[16]).unwrap().len(), 6);
        // with BOS the BOS counts towards the 2w
        let p = cfg(ProtocolKind::Chunks, 8, 0, BosMode::Always)
            .resolve(&mt(false))
            .unwrap();
        assert_eq!(plan(&p, &[15]).unwrap().len(), 6);
        assert!(cfg(ProtocolKind::Chunks, 2, 0, BosMode::Never)
            .resolve(&mt(false))
            .is_err());
    }

    #[test]
    fn chunks_planner_stops_wanting_after_max_chunks() {
        let mut c = cfg(ProtocolKind::Chunks, 4, 0, BosMode::Never);
        c.max_chunks = Some(1);
        let mut pl = Planner::new(c.resolve(&mt(false)).unwrap());
        let toks: Vec<(u32, usize, usize)> = (0..5).map(|i| (i, 0, 0)).collect();
        pl.push_document(0, &toks, DocTotals::default());
        assert!(pl.wants_more());
        pl.push_document(1, &toks, DocTotals::default());
        assert!(pl.pop().is_some());
        assert!(!pl.wants_more());
    }

    #[test]
    fn long_documents_queue_one_window_at_a_time() {
        let toks: Vec<(u32, usize, usize)> = (0..20_000).map(|i| (i, 0, 0)).collect();
        for c in [
            cfg(ProtocolKind::Sliding, 512, 1, BosMode::Never),
            cfg(ProtocolKind::Chunks, 512, 0, BosMode::Never),
        ] {
            let mut pl = Planner::new(c.resolve(&mt(false)).unwrap());
            pl.push_document(0, &toks, DocTotals::default());
            assert!(pl.ready.is_empty());
            let mut n = 0;
            while let Some(w) = pl.pop() {
                assert!(pl.ready.is_empty());
                assert!(pl.buf.len() <= 20_000 - w.id as usize);
                n += 1;
            }
            pl.finish().unwrap();
            while pl.pop().is_some() {
                n += 1;
            }
            assert!(pl.is_done());
            assert!(n >= 39);
        }
    }

    #[test]
    fn rolling_every_doc_token_once() {
        for window in 1..9 {
            let p = cfg(ProtocolKind::Rolling, window, 0, BosMode::Never)
                .resolve(&mt(false))
                .unwrap();
            assert_eq!(p.bos, Some(1000));
            let docs = [1usize, 7, 8, 9, 20, 3];
            let got = plan(&p, &docs).unwrap();
            let idx: Vec<u64> = got.iter().map(|t| t.0).collect();
            let total: usize = docs.iter().sum();
            assert_eq!(idx, (0..total as u64).collect::<Vec<_>>());
            for &(_, ctx, _) in &got {
                assert!((1..=window).contains(&ctx));
            }
        }
    }

    #[test]
    fn rolling_prefix_falls_back_to_eos() {
        let m = ModelTokens {
            bos_id: None,
            eos_id: Some(7),
            adds_bos: false,
            max_context: None,
        };
        let p = cfg(ProtocolKind::Rolling, 4, 0, BosMode::Auto)
            .resolve(&m)
            .unwrap();
        assert_eq!(p.bos, Some(7));
        let m = ModelTokens { eos_id: None, ..m };
        assert!(cfg(ProtocolKind::Rolling, 4, 0, BosMode::Auto)
            .resolve(&m)
            .is_err());
    }

    #[test]
    fn rolling_doc_totals_on_last_window() {
        let p = cfg(ProtocolKind::Rolling, 3, 0, BosMode::Never)
            .resolve(&mt(false))
            .unwrap();
        let mut pl = Planner::new(p);
        let toks: Vec<(u32, usize, usize)> =
            (0..7).map(|i| (i, i as usize, i as usize + 1)).collect();
        let t = DocTotals { bytes: 7, words: 2 };
        pl.push_document(0, &toks, t);
        pl.finish().unwrap();
        let ws: Vec<Window> = std::iter::from_fn(|| pl.pop()).collect();
        assert_eq!(ws.len(), 3);
        assert_eq!(ws[0].doc_totals, None);
        assert_eq!(ws[2].doc_totals, Some(t));
        // lm-eval windows for tokens 0..7, prefix P, max_seq_len 3:
        // [P 0 1] -> 0 1 2 ; [2 3 4] -> 3 4 5 ; [4 5] ... (input d[3..6]) -> 6
        assert_eq!(ws[0].input, vec![1000, 0, 1]);
        assert_eq!(ws[1].input, vec![2, 3, 4]);
        assert_eq!(ws[2].input, vec![3, 4, 5]);
        assert_eq!(ws[2].scored.len(), 1);
        assert_eq!(ws[2].scored[0].position, 2);
    }
}
