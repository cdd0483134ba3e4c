//! What the runner needs from a tokenizer and a model. The CLI implements
//! these for the real (candle) models; tests use a deterministic mock.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// A tokenized text: token ids and each token's byte span in the text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids (no special tokens).
    pub ids: Vec<u32>,
    /// `(start, end)` byte span of each token in the encoded text
    /// (half-open; same length as `ids`).
    pub byte_spans: Vec<(usize, usize)>,
}

/// A tokenizer.
pub trait Tokenize {
    /// Tokenizes `text` **without** special tokens.
    fn encode(&self, text: &str) -> Result<Encoded>;
    /// Human-readable text of one token (for per-token rows).
    fn token_text(&self, id: u32) -> String;
    /// **Decoded** text of every id in `0..vocab` (for the word-boundary mask
    /// of `--words`, see [`crate::words::bow_mask`]): a word-initial token
    /// must come back with its leading whitespace (`"Ġword"` → `" word"`,
    /// `"▁word"` → `" word"`). Called once per run, only when per-word rows
    /// are requested. The default uses [`Tokenize::token_text`].
    fn vocab_texts(&self, vocab: usize) -> Vec<String> {
        (0..vocab).map(|id| self.token_text(id as u32)).collect()
    }
    /// The BOS token id, if the tokenizer has one.
    fn bos_id(&self) -> Option<u32>;
    /// The EOS token id, if any (lm-eval's rolling prefix falls back to it
    /// when there is no BOS).
    fn eos_id(&self) -> Option<u32> {
        None
    }
    /// Whether the model prepends BOS by default (`--bos auto`).
    fn adds_bos(&self) -> bool;
    /// Identifies the tokenizer (e.g. sha256 of tokenizer.json); part of the
    /// resume fingerprint.
    fn fingerprint(&self) -> String;
}

/// A causal LM that can score batches of token rows.
pub trait Scorer {
    /// Whatever the forward pass leaves behind (e.g. final hidden states)
    /// from which logits can be produced for selected positions.
    type Hidden;
    /// Size of the logit rows.
    fn vocab_size(&self) -> usize;
    /// Longest supported input, if bounded.
    fn max_context(&self) -> Option<usize>;
    /// One forward over a batch of token rows (rows may differ in length;
    /// the implementation right-pads).
    fn forward(&self, rows: &[&[u32]]) -> Result<Self::Hidden>;
    /// Logits for the given `(row, position)` pairs, written row-major into
    /// `out` (cleared first by the implementation or the caller; on return
    /// `out.len() == pairs.len() * vocab_size()`). Called with at most
    /// `logit_chunk_rows` pairs at a time so `[batch, T, vocab]` never
    /// exists whole.
    fn logits(
        &self,
        hidden: &Self::Hidden,
        pairs: &[(usize, usize)],
        out: &mut Vec<f32>,
    ) -> Result<()>;

    /// The device whose tensors [`Scorer::logits_tensor`] returns, or `None` (the default) when
    /// the scorer cannot hand out device tensors; statistics are then always computed on the host
    /// from [`Scorer::logits`]. The engine asks once per run to decide where statistics are
    /// computed (`--stats-on auto` picks the device when it is CUDA, see
    /// [`crate::device_stats::StatsOn`]).
    fn logits_device(&self) -> Option<Device> {
        None
    }
    /// Like [`Scorer::logits`], but the `(pairs.len(), vocab_size())` f32 logits stay a tensor on
    /// [`Scorer::logits_device`], so [`crate::device_stats`] can reduce them where they live and
    /// only per-token statistics cross to the host. Only called when `logits_device` is `Some`;
    /// `Ok(None)` (the default) means "not supported" and is reported as an error.
    fn logits_tensor(
        &self,
        hidden: &Self::Hidden,
        pairs: &[(usize, usize)],
    ) -> Result<Option<Tensor>> {
        let _ = (hidden, pairs);
        Ok(None)
    }
}
