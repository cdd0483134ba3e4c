//! The runner's [`Scorer`] and [`Tokenize`] for the candle models of `surprisal-models`.
//!
//! `forward` keeps the final hidden states on the model's device; `logits` gathers only the
//! requested `(row, position)` rows and applies the output head to them, so at most
//! `pairs.len() × vocab` logits exist at once (the engine bounds `pairs.len()`).

use candle_core::{DType, Device, Tensor};
use surprisal_models::{CausalLm, LoadedModel, ModelError, ModelInfo, TextTokenizer};

use crate::error::{Result, RunError};
use crate::model::{Encoded, Scorer, Tokenize};

fn model_err(e: impl std::fmt::Display) -> RunError {
    RunError::Model(e.to_string())
}

impl From<ModelError> for RunError {
    fn from(e: ModelError) -> Self {
        RunError::Model(e.to_string())
    }
}

/// A loaded candle model as the engine's [`Scorer`].
pub struct CandleScorer {
    model: CausalLm,
    info: ModelInfo,
}

/// Hidden states of one batch: (B, T, hidden) on the model's device.
pub struct BatchHidden {
    hidden: Tensor,
    padded_len: usize,
}

impl CandleScorer {
    pub fn new(model: CausalLm, info: ModelInfo) -> Self {
        Self { model, info }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    pub fn dtype(&self) -> DType {
        self.model.dtype()
    }
}

/// Splits a loaded model into the engine's two halves.
pub fn split(loaded: LoadedModel) -> (CandleScorer, CandleTokenizer) {
    let tokenizer = CandleTokenizer {
        bos_id: loaded.info.bos_token_id,
        eos_id: loaded.info.eos_token_id,
        adds_bos: loaded.info.add_bos_token,
        inner: loaded.tokenizer,
    };
    (CandleScorer::new(loaded.model, loaded.info), tokenizer)
}

impl Scorer for CandleScorer {
    type Hidden = BatchHidden;

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn max_context(&self) -> Option<usize> {
        Some(self.info.max_position_embeddings)
    }

    fn forward(&self, rows: &[&[u32]]) -> Result<BatchHidden> {
        let padded_len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * padded_len);
        for row in rows {
            ids.extend_from_slice(row);
            // Right padding with a valid id; the causal mask keeps it out of real positions.
            ids.extend(std::iter::repeat_n(0u32, padded_len - row.len()));
        }
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        // (B*T,) -> (B, T)
        let ids = Tensor::from_vec(ids, (rows.len(), padded_len), self.model.device())
            .map_err(model_err)?;
        let hidden = self.model.forward_hidden(&ids, &lengths)?;
        Ok(BatchHidden { hidden, padded_len })
    }

    fn logits(
        &self,
        hidden: &BatchHidden,
        pairs: &[(usize, usize)],
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.clear();
        if pairs.is_empty() {
            return Ok(());
        }
        let logits = self.logits_on_device(hidden, pairs)?;
        let flat = logits
            .flatten_all()
            .and_then(|x| x.to_device(&Device::Cpu))
            .and_then(|x| x.to_vec1::<f32>())
            .map_err(model_err)?;
        // move, not copy: a third chunk-sized buffer would raise peak memory by half
        *out = flat;
        Ok(())
    }

    fn logits_device(&self) -> Option<Device> {
        Some(self.model.device().clone())
    }

    fn logits_tensor(
        &self,
        hidden: &BatchHidden,
        pairs: &[(usize, usize)],
    ) -> Result<Option<Tensor>> {
        if pairs.is_empty() {
            let v = self.model.vocab_size();
            let empty =
                Tensor::zeros((0, v), DType::F32, self.model.device()).map_err(model_err)?;
            return Ok(Some(empty));
        }
        self.logits_on_device(hidden, pairs).map(Some)
    }
}

impl CandleScorer {
    /// `(pairs.len(), vocab)` f32 logits of the given `(row, position)` pairs, on the model's
    /// device: the gathered hidden rows through the output head.
    fn logits_on_device(&self, hidden: &BatchHidden, pairs: &[(usize, usize)]) -> Result<Tensor> {
        let (b, t, h) = hidden.hidden.dims3().map_err(model_err)?;
        debug_assert_eq!(t, hidden.padded_len);
        let index: Vec<u32> = pairs
            .iter()
            .map(|&(row, pos)| {
                if row >= b || pos >= t {
                    Err(RunError::Model(format!(
                        "position ({row}, {pos}) outside the batch of shape ({b}, {t})"
                    )))
                } else {
                    Ok((row * t + pos) as u32)
                }
            })
            .collect::<Result<_>>()?;
        let index =
            Tensor::from_vec(index, pairs.len(), hidden.hidden.device()).map_err(model_err)?;
        // (B, T, H) -> (B*T, H) -> (N, H)
        let rows = hidden
            .hidden
            .reshape((b * t, h))
            .and_then(|x| x.index_select(&index, 0))
            .map_err(model_err)?;
        Ok(self.model.logits(&rows)?)
    }
}

/// The model's tokenizer plus the BOS/EOS facts the protocols need.
pub struct CandleTokenizer {
    inner: TextTokenizer,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    adds_bos: bool,
}

impl CandleTokenizer {
    pub fn inner(&self) -> &TextTokenizer {
        &self.inner
    }
}

impl Tokenize for CandleTokenizer {
    fn encode(&self, text: &str) -> Result<Encoded> {
        let e = self
            .inner
            .encode(text)
            .map_err(|e| RunError::Tokenizer(e.to_string()))?;
        Ok(Encoded {
            ids: e.ids,
            byte_spans: e.byte_spans,
        })
    }

    fn token_text(&self, id: u32) -> String {
        self.inner.token_text(id)
    }

    /// Single-token decoding, except that a SentencePiece word-initial piece
    /// (`"▁word"`) keeps its space: decoders with a `Strip` step drop it from
    /// the start of a sequence, which a one-token sequence always is.
    fn vocab_texts(&self, vocab: usize) -> Vec<String> {
        let raw = self.inner.vocab_by_id();
        (0..vocab)
            .map(|id| {
                let text = self.inner.token_text(id as u32);
                let sp_word_start = raw.get(id).is_some_and(|r| r.starts_with('\u{2581}'));
                if sp_word_start && !text.starts_with(char::is_whitespace) {
                    format!(" {text}")
                } else {
                    text
                }
            })
            .collect()
    }

    fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    fn adds_bos(&self) -> bool {
        self.adds_bos
    }

    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }
}
