//! Per-word surprisal from per-token scores.
//!
//! # Words
//!
//! A *word* is a maximal run of non-whitespace characters of the document
//! text (`char::is_whitespace`, i.e. Unicode `White_Space`). Its span is the
//! half-open byte range `[byte_start, byte_end)` into the document text.
//! Punctuation is part of the word it touches (`"dog."` is one word).
//!
//! # Token → word assignment
//!
//! Tokens are given in document order with half-open byte spans into the text
//! (as produced by the tokenizer's offsets; byte-fallback tokens may share a
//! span). Each token is assigned to at most one word:
//!
//! * a token whose span contains a non-whitespace byte belongs to the word in
//!   which its **first non-whitespace byte** lies (so a BPE token `"Ġword"`,
//!   span covering `" word"`, belongs to `word`);
//! * a token made only of whitespace (e.g. `"\n"`, `"ĠĠ"`) belongs to the
//!   **next** word, i.e. the first word starting at or after the token's end —
//!   it is that word's leading whitespace, exactly like the `Ġ` of `"Ġword"`.
//!   Whitespace tokens after the last word belong to no word;
//! * a token with an empty span (BOS/EOS/special tokens, offsets `(k, k)`)
//!   belongs to no word.
//!
//! A word's `surprisal_nats` is `None` (never a partial sum) when it has no
//! token, when any of its tokens has `nll_nats == None` (not scored: the
//! first token without BOS, truncated context, ...), or when a token assigned
//! to it also covers non-whitespace bytes of another word (a token straddling
//! a word boundary makes every word it touches `None`).
//!
//! # Leading-whitespace correction
//!
//! For tokenizers whose word-initial tokens carry the leading whitespace
//! ("BOW-marked": GPT-2/Llama-3/SmolLM byte-level BPE `Ġ`, SentencePiece `▁`),
//! the sum of the token surprisals of a word's tokens is *not* the surprisal
//! of the word: the tokens of `" word"` do not tell whether the word ends
//! there (`" word"` vs `" words"`), while they do claim that the *previous*
//! word ended. Pimentel & Meister (2024, "How to Compute the Probability of
//! a Word") and Oh & Schuler (2024) fix this with
//!
//! ```text
//! P(w_t | w_<t) = P(tokens of w_t | ctx) · P_bow(ctx ∘ w_t) / P_bow(ctx)
//! ```
//!
//! where `P_bow(c)` is the probability that the token following `c` starts a
//! new word. Following the paper, the set of word-starting tokens `B` is every
//! token whose **decoded** text begins with a whitespace character **plus the
//! end-of-sequence token(s)**: the end of the text also ends the current word
//! (P&M 2024, S_bow ∪ {eos}). Hence
//!
//! ```text
//! surprisal_corrected = Σ nll(tokens of w) − log P_bow(after w) + log P_bow(before w)
//! ```
//!
//! with, for the tokens `t_i .. t_j` of the word (in the `tokens` slice given to
//! [`word_rows`]):
//!
//! * `log P_bow(before w)` = `tokens[i].log_p_bow_before`, the mass of `B`
//!   under the distribution that predicted `t_i` (the same distribution whose
//!   `−log p(t_i)` is `tokens[i].nll_nats`);
//! * `log P_bow(after w)` = `tokens[j + 1].log_p_bow_before` when `t_j` is not
//!   the last token of the slice, else the `final_log_p_bow` argument (the
//!   mass of `B` under the distribution after the last token of the document,
//!   i.e. the one that would predict EOS).
//! * For the **first word of the document** (`word_index == 0`) the
//!   `P_bow(before)` term is dropped (taken as 1): there is no previous word
//!   whose end must be conditioned on, and `P_bow(ctx)` at the start of a
//!   document is the probability of *leading whitespace*, not of a word
//!   boundary. With this choice the corrected surprisals of a document
//!   telescope to `Σ_all nll − log P_bow(final)` = `−log P(text, then a word
//!   boundary)` whenever the words' tokens are contiguous.
//!
//! `surprisal_corrected_nats` is `None` whenever `surprisal_nats` is `None` or
//! a needed `log_p_bow` is missing. The correction is only meaningful for
//! BOW-marked tokenizers; for tokenizers that attach whitespace at the *end*
//! of tokens the uncorrected column is the one to use.

use serde::{Deserialize, Serialize};

pub mod stream;

/// A word: byte span `[start, end)` into the document text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordSpan {
    /// First byte of the word.
    pub start: usize,
    /// One past the last byte of the word.
    pub end: usize,
}

/// Per-token input to [`word_rows`], in document order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenWordInput {
    /// First byte of the token's span in the document text.
    pub byte_start: usize,
    /// One past the last byte of the token's span.
    pub byte_end: usize,
    /// `−log p(token | context)` in nats; `None` if the token was not scored.
    pub nll_nats: Option<f64>,
    /// `log P_bow` (natural log) of the distribution that predicted this token
    /// (see [`log_mass`]); `None` if not computed.
    pub log_p_bow_before: Option<f64>,
}

pub use crate::output::records::WordRow;

/// Whitespace-delimited words of `text` (maximal runs of non-whitespace
/// characters), as byte spans, in order.
pub fn word_spans(text: &str) -> Vec<WordSpan> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push(WordSpan { start: s, end: i });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(WordSpan {
            start: s,
            end: text.len(),
        });
    }
    out
}

/// Which vocabulary entries start a new word: `true` iff the token's
/// **decoded** text begins with a whitespace character.
///
/// The caller must pass decoded text (`tokenizer.decode([id])` or the
/// vocabulary string with the byte-level mapping undone), not the raw
/// vocabulary form: `"Ġword"` must arrive as `" word"`, `"Ċ"` as `"\n"`,
/// `"▁word"` as `" word"`. A raw `'Ġ'` (U+0120) or `'▁'` (U+2581) is *not*
/// treated as whitespace here. Tokens that decode to the empty string
/// (special tokens) get `false`; mark the end-of-sequence token(s) with
/// [`mark_tokens`] — per the paper, EOS belongs to the word-boundary set.
pub fn bow_mask(token_texts: impl Iterator<Item = String>) -> Vec<bool> {
    token_texts
        .map(|t| t.chars().next().is_some_and(char::is_whitespace))
        .collect()
}

/// Set `mask[id] = true` for each id (e.g. EOS / end-of-text tokens).
/// Ids outside the mask grow it (with `false` fill) so they are never lost.
pub fn mark_tokens(mask: &mut Vec<bool>, ids: &[u32]) {
    for &id in ids {
        let id = id as usize;
        if id >= mask.len() {
            mask.resize(id + 1, false);
        }
        mask[id] = true;
    }
}

/// `log Σ_{i: mask[i]} softmax(logits)_i`: the log-sum-exp lives in the
/// metrics crate (one concept, one place); re-exported here because `log P_bow`
/// is this module's input.
pub use surprisal_metrics::log_mass;

/// Which word (index into `words`) a token belongs to, and whether the token
/// covers non-whitespace bytes of more than one word (then the range of
/// words touched is returned as well).
fn assign(words: &[WordSpan], s: usize, e: usize) -> (Option<usize>, Option<(usize, usize)>) {
    if e <= s {
        return (None, None);
    }
    // First word whose end is after the token's start.
    let first = words.partition_point(|w| w.end <= s);
    if first == words.len() {
        return (None, None); // trailing whitespace
    }
    if words[first].start < e {
        // Overlaps non-whitespace of `first`: its first non-ws byte is there.
        let last = words.partition_point(|w| w.start < e) - 1;
        let straddle = (last > first).then_some((first, last));
        (Some(first), straddle)
    } else {
        // Whitespace-only token: belongs to the next word.
        (Some(first), None)
    }
}

/// Per-word rows of one document. See the module docs for the exact
/// token→word assignment and the positions whose `log_p_bow` are used.
///
/// `tokens` are the document's tokens in order (including unscored ones,
/// e.g. the first token when there is no BOS; leave BOS itself out or give
/// it an empty span). `final_log_p_bow` is the `log P_bow` of the
/// distribution after the last token of `tokens`.
pub fn word_rows(
    doc: usize,
    text: &str,
    tokens: &[TokenWordInput],
    final_log_p_bow: Option<f64>,
) -> Vec<WordRow> {
    let words = word_spans(text);
    let n = words.len();
    // first/last token index, count, all-scored, sum, straddled.
    let mut first_tok: Vec<Option<usize>> = vec![None; n];
    let mut last_tok: Vec<usize> = vec![0; n];
    let mut count = vec![0usize; n];
    let mut sum = vec![0.0f64; n];
    let mut complete = vec![true; n];
    for (ti, t) in tokens.iter().enumerate() {
        let (w, straddle) = assign(&words, t.byte_start, t.byte_end.min(text.len()));
        if let Some((a, b)) = straddle {
            for c in &mut complete[a..=b] {
                *c = false;
            }
        }
        let Some(w) = w else { continue };
        if first_tok[w].is_none() {
            first_tok[w] = Some(ti);
        }
        last_tok[w] = ti;
        count[w] += 1;
        match t.nll_nats {
            Some(x) => sum[w] += x,
            None => complete[w] = false,
        }
    }
    words
        .iter()
        .enumerate()
        .map(|(wi, span)| {
            let surprisal = match first_tok[wi] {
                Some(_) if complete[wi] => Some(sum[wi]),
                _ => None,
            };
            let corrected = surprisal.and_then(|s| {
                let i = first_tok[wi]?;
                let j = last_tok[wi];
                let after = if j + 1 < tokens.len() {
                    tokens[j + 1].log_p_bow_before
                } else {
                    final_log_p_bow
                }?;
                let before = if wi == 0 {
                    0.0
                } else {
                    tokens[i].log_p_bow_before?
                };
                Some(s - after + before)
            });
            WordRow {
                doc,
                word_index: wi,
                word: text[span.start..span.end].to_string(),
                byte_start: span.start,
                byte_end: span.end,
                n_tokens: count[wi],
                surprisal_nats: surprisal,
                surprisal_corrected_nats: corrected,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_basic() {
        let t = "  a bc\r\n d\u{00a0}é ";
        let w: Vec<&str> = word_spans(t).iter().map(|s| &t[s.start..s.end]).collect();
        assert_eq!(w, vec!["a", "bc", "d", "é"]);
        assert!(word_spans("").is_empty());
        assert!(word_spans(" \n\t").is_empty());
        assert_eq!(word_spans("x"), vec![WordSpan { start: 0, end: 1 }]);
    }
}
