//! Deterministic mock tokenizer and model for the engine tests.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};

use surprisal_runner::{
    BosMode, DataProvenance, Document, Encoded, FileDigest, ModelProvenance, ProtocolConfig,
    ProtocolKind, Provenance, RunError, Scorer, Tokenize,
};

pub const VOCAB: usize = 50;
pub const BOS: u32 = 0;
pub const EOS: u32 = 1;

fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Whitespace tokenizer: each maximal non-whitespace run is a token whose
/// span includes the preceding whitespace (like BPE's `Ġword`), id = hash of
/// the word mod (VOCAB - 2) + 2.
pub struct MockTokenizer {
    pub adds_bos: bool,
    pub has_bos: bool,
}

impl MockTokenizer {
    pub fn new(adds_bos: bool) -> Self {
        MockTokenizer {
            adds_bos,
            has_bos: true,
        }
    }
    pub fn word_id(w: &str) -> u32 {
        let h = w.bytes().fold(1469598103934665603u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(1099511628211)
        });
        (mix(h) % (VOCAB as u64 - 2)) as u32 + 2
    }
}

impl Tokenize for MockTokenizer {
    fn encode(&self, text: &str) -> Result<Encoded, RunError> {
        let mut e = Encoded::default();
        let mut start = 0usize; // start of pending whitespace
        let mut word_start: Option<usize> = None;
        for (i, c) in text.char_indices() {
            if c.is_whitespace() {
                if let Some(ws) = word_start.take() {
                    e.ids.push(Self::word_id(&text[ws..i]));
                    e.byte_spans.push((start, i));
                    start = i;
                }
            } else if word_start.is_none() {
                word_start = Some(i);
            }
        }
        if let Some(ws) = word_start {
            e.ids.push(Self::word_id(&text[ws..]));
            e.byte_spans.push((start, text.len()));
        }
        Ok(e)
    }
    fn token_text(&self, id: u32) -> String {
        format!("<{id}>")
    }
    fn bos_id(&self) -> Option<u32> {
        self.has_bos.then_some(BOS)
    }
    fn eos_id(&self) -> Option<u32> {
        Some(EOS)
    }
    fn adds_bos(&self) -> bool {
        self.adds_bos
    }
    fn fingerprint(&self) -> String {
        "mock-whitespace-v1".into()
    }
}

/// Logits at (row, pos) = deterministic function of (seed, input[pos], pos).
pub struct MockScorer {
    pub seed: u64,
    pub max_ctx: Option<usize>,
    /// Fail the forward call number `n` (0-based) with a model error.
    pub fail_at_forward: Option<usize>,
    /// Emit a NaN logit when the previous token is this id.
    pub nan_after_token: Option<u32>,
    pub forwards: Cell<usize>,
    pub max_pairs_seen: Cell<usize>,
    pub max_rows_seen: Cell<usize>,
    pub calls: RefCell<Vec<usize>>,
}

impl MockScorer {
    pub fn new(seed: u64) -> Self {
        MockScorer {
            seed,
            max_ctx: Some(4096),
            fail_at_forward: None,
            nan_after_token: None,
            forwards: Cell::new(0),
            max_pairs_seen: Cell::new(0),
            max_rows_seen: Cell::new(0),
            calls: RefCell::new(Vec::new()),
        }
    }

    /// The logit row the model produces after `prev` at position `pos`.
    pub fn row(&self, prev: u32, pos: usize) -> Vec<f32> {
        (0..VOCAB as u64)
            .map(|v| {
                if self.nan_after_token == Some(prev) && v == 3 {
                    return f32::NAN;
                }
                let h = mix(self.seed ^ mix(u64::from(prev) << 32 ^ (pos as u64) << 8 ^ v));
                // in [-4, 4), peaked on a few tokens
                ((h >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
            })
            .collect()
    }
}

impl Scorer for MockScorer {
    type Hidden = Vec<Vec<u32>>;
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn max_context(&self) -> Option<usize> {
        self.max_ctx
    }
    fn forward(&self, rows: &[&[u32]]) -> Result<Self::Hidden, RunError> {
        let n = self.forwards.get();
        self.forwards.set(n + 1);
        if self.fail_at_forward == Some(n) {
            return Err(RunError::Model(format!("injected failure at forward {n}")));
        }
        self.max_rows_seen
            .set(self.max_rows_seen.get().max(rows.len()));
        Ok(rows.iter().map(|r| r.to_vec()).collect())
    }
    fn logits(
        &self,
        hidden: &Self::Hidden,
        pairs: &[(usize, usize)],
        out: &mut Vec<f32>,
    ) -> Result<(), RunError> {
        self.max_pairs_seen
            .set(self.max_pairs_seen.get().max(pairs.len()));
        self.calls.borrow_mut().push(pairs.len());
        out.clear();
        for &(r, p) in pairs {
            let row = &hidden[r];
            assert!(p < row.len(), "position {p} outside row of {}", row.len());
            out.extend(self.row(row[p], p));
        }
        Ok(())
    }
}

pub const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "from", "home",
    "while", "birds", "sang", "in", "tall", "green", "trees",
];

/// `n` documents of varying length with mixed whitespace.
pub fn corpus(n: usize) -> Vec<Document> {
    (0..n)
        .map(|d| {
            let len = 3 + (mix(d as u64) % 40) as usize;
            let mut text = String::new();
            for i in 0..len {
                if i > 0 {
                    text.push_str(if i % 7 == 0 { "\n" } else { " " });
                }
                text.push_str(WORDS[(mix((d * 1000 + i) as u64) % WORDS.len() as u64) as usize]);
            }
            Document::new(d, format!("corpus.txt:{}", d + 1), text)
        })
        .collect()
}

pub fn ok_docs(docs: &[Document]) -> impl Iterator<Item = Result<Document, String>> + '_ {
    docs.iter().cloned().map(Ok)
}

/// Provenance of the mock model and corpus.
pub fn prov() -> Provenance {
    Provenance {
        tool_version: "0.1.0-test".into(),
        model: ModelProvenance {
            reference: "mock/model".into(),
            files: vec![FileDigest {
                path: "model.safetensors".into(),
                sha256: "ab".repeat(32),
            }],
        },
        reference_model: None,
        data: DataProvenance {
            path: "corpus.txt".into(),
            sha256: "cd".repeat(32),
        },
        device: "cpu".into(),
        dtype: "f32".into(),
        dtype_tensors: Default::default(),
        host_cpu: None,
    }
}

/// A protocol without token or chunk limits.
pub fn proto(kind: ProtocolKind, window: usize, stride: usize, bos: BosMode) -> ProtocolConfig {
    ProtocolConfig {
        kind,
        window,
        stride,
        bos,
        max_tokens: None,
        max_chunks: None,
    }
}

/// The mock tokenizer with a chosen decoded vocabulary (`vocab_texts`), so that the word-boundary
/// mask of `--words` (tokens decoding with a leading space start a word) selects a real subset.
pub struct VocabTextTok {
    pub inner: MockTokenizer,
    /// Decoded text of token `id`.
    pub text: fn(usize) -> String,
}

impl Tokenize for VocabTextTok {
    fn encode(&self, text: &str) -> Result<Encoded, RunError> {
        self.inner.encode(text)
    }
    fn token_text(&self, id: u32) -> String {
        self.inner.token_text(id)
    }
    fn vocab_texts(&self, vocab: usize) -> Vec<String> {
        (0..vocab).map(self.text).collect()
    }
    fn bos_id(&self) -> Option<u32> {
        self.inner.bos_id()
    }
    fn eos_id(&self) -> Option<u32> {
        self.inner.eos_id()
    }
    fn adds_bos(&self) -> bool {
        self.inner.adds_bos()
    }
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }
}
