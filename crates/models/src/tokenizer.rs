//! Text tokenizer: a `tokenizers::Tokenizer` loaded from `tokenizer.json`, or rebuilt from GGUF
//! metadata (byte-level BPE with llama.cpp's pre-tokenizer regexes), or a GGUF SentencePiece
//! vocabulary encoded as llama.cpp does ([`spm`]).

pub mod spm;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::Content;

use sha2::{Digest, Sha256};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{ModelError, Result};
use spm::SpmTokenizer;

/// Token ids with their byte spans in the encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    /// (start, end) UTF-8 byte offsets into the text. A character split over several byte-level
    /// tokens gives each of them the whole character's span.
    pub byte_spans: Vec<(usize, usize)>,
}

#[derive(Clone)]
pub struct TextTokenizer {
    backend: Backend,
    source: PathBuf,
}

#[derive(Clone)]
enum Backend {
    Hf(Box<Tokenizer>),
    Spm(Arc<SpmTokenizer>),
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::NotFound {
                path: path.to_path_buf(),
                hint: " (every model needs a tokenizer.json next to its config.json)".into(),
            },
            _ => crate::error::io_error(path, e),
        })?;
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            return Err(ModelError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            });
        }
        let inner = Tokenizer::from_bytes(&bytes).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            backend: Backend::Hf(Box::new(inner)),
            source: path.to_path_buf(),
        })
    }

    pub fn from_tokenizer(inner: Tokenizer, source: PathBuf) -> Self {
        Self {
            backend: Backend::Hf(Box::new(inner)),
            source,
        }
    }

    /// A SentencePiece tokenizer from GGUF `tokenizer.ggml.*` metadata (`tokenizer.ggml.model` =
    /// "llama"), encoding as llama.cpp does.
    pub fn from_gguf_spm(path: &Path, content: &Content) -> Result<Self> {
        Ok(Self {
            backend: Backend::Spm(Arc::new(SpmTokenizer::from_gguf(path, content)?)),
            source: path.to_path_buf(),
        })
    }

    /// Where this tokenizer was read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The `tokenizers` object, for tokenizers that are one (not GGUF SentencePiece).
    pub fn inner(&self) -> Option<&Tokenizer> {
        match &self.backend {
            Backend::Hf(t) => Some(t),
            Backend::Spm(_) => None,
        }
    }

    /// Token ids WITHOUT special tokens added, with byte spans into `text`.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let inner = match &self.backend {
            Backend::Hf(t) => t,
            Backend::Spm(s) => return s.encode(text),
        };
        let enc = inner
            .encode(text, false)
            .map_err(|e| ModelError::Encode(e.to_string()))?;
        Ok(Encoded {
            ids: enc.get_ids().to_vec(),
            byte_spans: enc.get_offsets().to_vec(),
        })
    }

    /// The text of `ids` as bytes (special tokens kept). For a text that round-trips,
    /// `decode(encode(text).ids) == text`; `surprisal compress` checks exactly that and codes
    /// what does not round-trip as raw bytes.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>> {
        match &self.backend {
            Backend::Hf(t) => Ok(t
                .decode(ids, false)
                .map_err(|e| ModelError::Encode(format!("decoding token ids: {e}")))?
                .into_bytes()),
            Backend::Spm(s) => Ok(s.decode(ids)),
        }
    }

    /// Ids with special tokens added as the tokenizer's post-processor would (e.g. BOS).
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        let inner = match &self.backend {
            Backend::Hf(t) => t,
            Backend::Spm(s) => return s.encode_with_special(text),
        };
        let enc = inner
            .encode(text, true)
            .map_err(|e| ModelError::Encode(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Human-readable text of one token (decoded; the raw vocab entry if decoding fails).
    pub fn token_text(&self, id: u32) -> String {
        let inner = match &self.backend {
            Backend::Hf(t) => t,
            Backend::Spm(s) => return s.token_text(id),
        };
        match inner.decode(&[id], false) {
            Ok(s) if !s.is_empty() => s,
            _ => inner.id_to_token(id).unwrap_or_default(),
        }
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::Hf(t) => t.token_to_id(token),
            Backend::Spm(s) => s.token_to_id(token),
        }
    }

    /// Number of ids the tokenizer can produce: 1 + the largest id, added tokens included.
    pub fn vocab_size(&self) -> usize {
        let inner = match &self.backend {
            Backend::Hf(t) => t,
            Backend::Spm(s) => return s.vocab_size(),
        };
        inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// Vocabulary (added tokens included) as a list indexed by id; holes are empty strings.
    pub fn vocab_by_id(&self) -> Vec<String> {
        let inner = match &self.backend {
            Backend::Hf(t) => t,
            Backend::Spm(s) => return s.pieces().to_vec(),
        };
        let vocab = inner.get_vocab(true);
        let mut out = vec![String::new(); self.vocab_size()];
        for (tok, id) in vocab {
            out[id as usize] = tok;
        }
        out
    }

    /// BPE merges as "left right" strings (empty for other models).
    pub fn merges(&self) -> Vec<String> {
        let Backend::Hf(inner) = &self.backend else {
            return Vec::new();
        };
        let Ok(v) = serde_json::to_value(inner.get_model()) else {
            return Vec::new();
        };
        v.get("merges")
            .and_then(|m| m.as_array())
            .map(|m| {
                m.iter()
                    .filter_map(|x| match x {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Array(p) => Some(
                            p.iter()
                                .filter_map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(" "),
                        ),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SHA-256 (hex) of the vocabulary (by id) and merges, and for SentencePiece the scores and
    /// token types (they decide the merges): equal for two models that tokenize alike.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (id, tok) in self.vocab_by_id().iter().enumerate() {
            h.update(format!("{id}\t{tok}\n").as_bytes());
        }
        h.update(b"--merges--\n");
        for m in self.merges() {
            h.update(m.as_bytes());
            h.update(b"\n");
        }
        if let Backend::Spm(s) = &self.backend {
            h.update(b"--spm scores and types--\n");
            for (score, ty) in s.scores().iter().zip(s.token_types()) {
                h.update(format!("{:08x}\t{ty}\n", score.to_bits()).as_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    /// Builds a byte-level BPE tokenizer from GGUF `tokenizer.ggml.*` metadata
    /// (`tokenizer.ggml.model` = "gpt2").
    pub fn from_gguf_bpe(
        source: &Path,
        tokens: &[String],
        merges: &[String],
        token_types: Option<&[i32]>,
        pre: &str,
    ) -> Result<Self> {
        let err = |message: String| ModelError::Tokenizer {
            path: source.to_path_buf(),
            message,
        };
        let mut vocab = tokenizers::models::bpe::Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), i as u32);
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        err(format!(
                            "merge `{m}` is not two tokens separated by a space"
                        ))
                    })
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("cannot build BPE model: {e}")))?;
        let mut tok = Tokenizer::new(bpe);
        let mut pre_tokenizers: Vec<PreTokenizerWrapper> = Vec::new();
        for re in pre_tokenizer_regexes(pre).ok_or_else(|| {
            err(format!(
                "unsupported `tokenizer.ggml.pre` = `{pre}` (supported: {})",
                SUPPORTED_PRE.join(", ")
            ))
        })? {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| err(format!("bad pre-tokenizer regex `{re}`: {e}")))?;
            pre_tokenizers.push(split.into());
        }
        pre_tokenizers.push(ByteLevel::new(false, false, false).into());
        tok.with_pre_tokenizer(Some(Sequence::new(pre_tokenizers)));
        tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
        // Control (3) and user-defined (4) tokens are matched whole in the text, as in llama.cpp.
        if let Some(types) = token_types {
            let special: Vec<AddedToken> = tokens
                .iter()
                .zip(types)
                .filter(|(_, &t)| t == 3)
                .map(|(s, _)| AddedToken::from(s.clone(), true))
                .collect();
            let user: Vec<AddedToken> = tokens
                .iter()
                .zip(types)
                .filter(|(_, &t)| t == 4)
                .map(|(s, _)| AddedToken::from(s.clone(), false))
                .collect();
            tok.add_special_tokens(&special);
            tok.add_tokens(&user);
        }
        Ok(Self {
            backend: Backend::Hf(Box::new(tok)),
            source: source.to_path_buf(),
        })
    }
}

const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const SUPPORTED_PRE: &[&str] = &[
    "gpt-2",
    "gpt2",
    "smollm",
    "starcoder",
    "refact",
    "command-r",
    "codeshell",
    "exaone",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "dbrx",
    "smaug-bpe",
    "qwen2",
    "stablelm2",
    "default",
];

/// The split regexes llama.cpp applies (in order) for a `tokenizer.ggml.pre` type
/// (`llama-vocab.cpp`, `llm_tokenizer_bpe`).
fn pre_tokenizer_regexes(pre: &str) -> Option<Vec<&'static str>> {
    Some(match pre {
        "gpt-2" | "gpt2" => vec![GPT2_REGEX],
        "default" => vec![
            r"[\p{P}\$\+<=>\^~\|]+",
            GPT2_REGEX,
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
            vec![r"\p{N}", GPT2_REGEX]
        }
        "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" => vec![LLAMA3_REGEX],
        "qwen2" | "stablelm2" => vec![QWEN2_REGEX],
        _ => return None,
    })
}
