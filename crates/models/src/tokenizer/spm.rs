//! SentencePiece tokenizers stored in GGUF (`tokenizer.ggml.model = "llama"`: Gemma, Llama-2,
//! Mistral v0.1), encoded exactly as llama.cpp's `llm_tokenizer_spm` does.
//!
//! Why a port and not a `tokenizers` object: llama.cpp merges the adjacent pair whose concatenation
//! is the vocabulary entry with the highest *score*, ties going to the leftmost pair, over every
//! vocabulary entry (control and byte tokens included). A `tokenizers` BPE model rebuilt from the
//! scores (as transformers' GGUF loader does) ranks *pairs*: two different pairs that make the same
//! token get two ranks, so where both are live (`[a][aa][a]`) it merges by rank, not position. The
//! algorithm below is the C++ one step for step (llama.cpp as vendored in llama-cpp-python 0.3.36,
//! `src/llama-vocab.cpp`), and `tests/tokenize_llamacpp.rs` checks it against `llama-tokenize` on whole
//! data files.
//!
//! Steps, as in `llama_vocab::impl::tokenize` with `parse_special = false` (the setting of
//! `llama-perplexity`: text is scored as text, a literal `<eos>` in it is not a control token):
//! 1. user-defined tokens (type 4; Gemma's newline, tab and space runs, a few HTML tags) are cut out of
//!    the text first, longest first, each occurrence left to right;
//! 2. each remaining fragment gets a leading space when `add_space_prefix` is set and it is the first
//!    fragment or follows a cut-out token, then spaces become `▁` (U+2581);
//! 3. the fragment is split into UTF-8 characters and the best-scored bigram merged until none is in
//!    the vocabulary;
//! 4. a final symbol that is not a token (a character outside the vocabulary) becomes its bytes'
//!    `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use super::Encoded;
use crate::error::{ModelError, Result};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// A token cut out of the text before SentencePiece runs, with llama.cpp's strip attributes.
#[derive(Debug, Clone)]
struct CutToken {
    id: u32,
    text: String,
    /// Whitespace right after a match is dropped (llama.cpp sets this for Phi-3's special tokens).
    rstrip: bool,
}

/// The vocabulary and settings of a SentencePiece GGUF tokenizer.
#[derive(Debug, Clone)]
pub struct SpmTokenizer {
    source: PathBuf,
    pieces: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    /// Piece -> id; for a piece listed twice, the later id (llama.cpp fills its map in id order).
    ids: HashMap<String, u32>,
    /// Token of each byte for byte fallback: `<0xXX>`, else the one-byte piece.
    byte_ids: [Option<u32>; 256],
    /// User-defined tokens, longest text first (equal lengths by id: llama.cpp's `std::sort` leaves
    /// their order unspecified, which only matters for two equal-length tokens that overlap; Gemma-3
    /// has none).
    cut: Vec<CutToken>,
    add_space_prefix: bool,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
}

/// Reads `tokenizer.ggml.*` metadata.
struct Meta<'a> {
    path: &'a Path,
    content: &'a Content,
}

impl Meta<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ModelError {
        ModelError::GgufMetadata {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn array(&self, key: &str) -> Result<&[Value]> {
        match self.content.metadata.get(key) {
            None => Err(self.err(key, "missing (required for a SentencePiece tokenizer)")),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(self.err(key, format!("expected an array, found {other:?}"))),
        }
    }

    fn opt_array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.array(key).map(Some),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(key, format!("expected a bool, found {other:?}"))),
        }
    }

    fn opt_id(&self, key: &str) -> Result<Option<u32>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(Value::U32(x)) => Ok(Some(*x)),
            Some(Value::I32(x)) if *x >= 0 => Ok(Some(*x as u32)),
            Some(Value::U64(x)) if *x <= u32::MAX as u64 => Ok(Some(*x as u32)),
            Some(other) => Err(self.err(key, format!("expected a token id, found {other:?}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Option<&str> {
        match self.content.metadata.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

impl SpmTokenizer {
    /// Builds the tokenizer from GGUF metadata: `tokenizer.ggml.tokens`, `.scores`, `.token_type`
    /// (optional: all normal), `.add_space_prefix` (default true, as llama.cpp), the BOS/EOS ids and
    /// their `add_*_token` flags (BOS default true, EOS false, as llama.cpp for SPM).
    pub fn from_gguf(path: &Path, content: &Content) -> Result<Self> {
        let m = Meta { path, content };
        let pieces = m
            .array("tokenizer.ggml.tokens")?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(m.err(
                    "tokenizer.ggml.tokens",
                    format!("expected strings, found {other:?}"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let n = pieces.len();
        let scores = m
            .array("tokenizer.ggml.scores")?
            .iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                other => Err(m.err(
                    "tokenizer.ggml.scores",
                    format!("expected floats, found {other:?}"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        if scores.len() != n {
            return Err(m.err(
                "tokenizer.ggml.scores",
                format!("{} scores for {n} tokens", scores.len()),
            ));
        }
        let types = match m.opt_array("tokenizer.ggml.token_type")? {
            None => vec![1; n],
            Some(a) => a
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(*x),
                    Value::U32(x) => Ok(*x as i32),
                    Value::I8(x) => Ok(*x as i32),
                    Value::U8(x) => Ok(*x as i32),
                    other => Err(m.err(
                        "tokenizer.ggml.token_type",
                        format!("expected integers, found {other:?}"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
        };
        if types.len() != n {
            return Err(m.err(
                "tokenizer.ggml.token_type",
                format!("{} types for {n} tokens", types.len()),
            ));
        }
        let id_in_range = |key: &str, id: Option<u32>| match id {
            Some(i) if i as usize >= n => Err(m.err(key, format!("id {i} >= {n} tokens"))),
            _ => Ok(id),
        };
        let bos_id = id_in_range(
            "tokenizer.ggml.bos_token_id",
            m.opt_id("tokenizer.ggml.bos_token_id")?,
        )?;
        let eos_id = id_in_range(
            "tokenizer.ggml.eos_token_id",
            m.opt_id("tokenizer.ggml.eos_token_id")?,
        )?;
        let add_bos = m.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
        let add_eos = m.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let add_space_prefix = m
            .opt_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        // llama.cpp (`llama_vocab::impl::load`) gives every special token of a model named Phi-3
        // the RSTRIP attribute (except `<unk>`, `<s>`, `<|endoftext|>`); of those, only
        // user-defined ones are cut out here.
        let name = m.opt_str("general.name").unwrap_or("").to_lowercase();
        let rstrip = name.contains("phi-3") || name.contains("phi3");
        Ok(Self::new(
            path,
            pieces,
            scores,
            types,
            SpmSettings {
                add_space_prefix,
                bos_id,
                eos_id,
                add_bos,
                add_eos,
                rstrip_cut_tokens: rstrip,
            },
        ))
    }

    fn new(
        source: &Path,
        pieces: Vec<String>,
        scores: Vec<f32>,
        types: Vec<i32>,
        s: SpmSettings,
    ) -> Self {
        let mut ids = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            ids.insert(p.clone(), i as u32);
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                // A one-byte piece is only valid UTF-8 for ASCII.
                (b < 0x80)
                    .then(|| ids.get(&(b as u8 as char).to_string()).copied())
                    .flatten()
            });
        }
        let mut cut: Vec<CutToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == TYPE_USER_DEFINED)
            .filter(|(i, _)| !pieces[*i].is_empty())
            .map(|(i, _)| CutToken {
                id: i as u32,
                text: pieces[i].clone(),
                rstrip: s.rstrip_cut_tokens
                    && !matches!(pieces[i].as_str(), "<unk>" | "<s>" | "<|endoftext|>"),
            })
            .collect();
        cut.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        Self {
            source: source.to_path_buf(),
            pieces,
            scores,
            types,
            ids,
            byte_ids,
            cut,
            add_space_prefix: s.add_space_prefix,
            bos_id: s.bos_id,
            eos_id: s.eos_id,
            add_bos: s.add_bos,
            add_eos: s.add_eos,
        }
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }

    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    pub fn token_types(&self) -> &[i32] {
        &self.types
    }

    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    /// Whether GGUF asks for BOS before a sequence (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The text of one token: `▁` as a space, a byte token as its byte (U+FFFD for a byte that is
    /// not a whole UTF-8 character, as the `tokenizers` ByteFallback decoder prints it), control
    /// tokens as their piece.
    pub fn token_text(&self, id: u32) -> String {
        let Some(piece) = self.pieces.get(id as usize) else {
            return String::new();
        };
        if self.types[id as usize] == TYPE_BYTE {
            if let Some(b) = parse_byte_piece(piece) {
                return if b < 0x80 {
                    (b as char).to_string()
                } else {
                    "\u{FFFD}".to_string()
                };
            }
        }
        if self.types[id as usize] == TYPE_CONTROL {
            return piece.clone();
        }
        piece.replace('\u{2581}', " ")
    }

    /// The bytes of `ids` as llama.cpp's detokenizer gives them: `▁` as a space, a byte token as
    /// its byte, a control token as nothing, and the leading space of `add_space_prefix` removed.
    /// Used to check that a text round-trips (`surprisal compress`), not to print tokens.
    pub fn decode(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else {
                continue;
            };
            match self.types[id as usize] {
                TYPE_BYTE => match parse_byte_piece(piece) {
                    Some(b) => out.push(b),
                    None => out.extend_from_slice(piece.as_bytes()),
                },
                TYPE_CONTROL => {}
                _ => out.extend_from_slice(piece.replace('\u{2581}', " ").as_bytes()),
            }
        }
        if self.add_space_prefix && out.first() == Some(&b' ') {
            out.remove(0);
        }
        out
    }

    /// Token ids without BOS/EOS, with the byte span of each in `text` (a byte-fallback token gets
    /// its whole character's span; the added leading space of `add_space_prefix` spans nothing).
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let mut out = Encoded {
            ids: Vec::new(),
            byte_spans: Vec::new(),
        };
        let mut prev_cut = true; // llama.cpp: "prefix with space if first token"
        for frag in self.partition(text) {
            match frag {
                Fragment::Token { id, start, end } => {
                    out.ids.push(id);
                    out.byte_spans.push((start, end));
                    prev_cut = true;
                }
                Fragment::Text { start, end } => {
                    self.encode_fragment(text, start, end, prev_cut, &mut out)?;
                    prev_cut = false;
                }
            }
        }
        Ok(out)
    }

    /// Ids with BOS/EOS added as the GGUF flags ask.
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend(self.encode(text)?.ids);
        if self.add_eos {
            ids.extend(self.eos_id);
        }
        Ok(ids)
    }

    /// `tokenizer_st_partition` with `parse_special = false`: user-defined tokens cut out, longest
    /// first; each token's occurrences found left to right in every fragment still text.
    fn partition(&self, text: &str) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if !text.is_empty() {
            frags.push(Fragment::Text {
                start: 0,
                end: text.len(),
            });
        }
        for tok in &self.cut {
            if !text.contains(tok.text.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                let Fragment::Text { mut start, end } = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = text[start..end].find(tok.text.as_str()) {
                    let m = start + at;
                    if m > start {
                        next.push(Fragment::Text { start, end: m });
                    }
                    let mut after = m + tok.text.len();
                    next.push(Fragment::Token {
                        id: tok.id,
                        start: m,
                        end: after,
                    });
                    if tok.rstrip {
                        // C `isspace` in the "C" locale.
                        while after < end && matches!(text.as_bytes()[after], b' ' | b'\t'..=b'\r')
                        {
                            after += 1;
                        }
                    }
                    start = after;
                }
                if start < end {
                    next.push(Fragment::Text { start, end });
                }
            }
            frags = next;
        }
        frags
    }

    /// `llm_tokenizer_spm_session::tokenize` on `text[start..end]`.
    fn encode_fragment(
        &self,
        text: &str,
        start: usize,
        end: usize,
        space_prefix: bool,
        out: &mut Encoded,
    ) -> Result<()> {
        // The escaped text, and for each of its bytes the offset in `text` it came from.
        let mut norm = String::with_capacity((end - start) * 2 + 3);
        let mut orig: Vec<usize> = Vec::with_capacity((end - start) * 2 + 4);
        if self.add_space_prefix && space_prefix {
            norm.push('\u{2581}');
            orig.extend([start; 3]);
        }
        for (i, c) in text[start..end].char_indices() {
            let at = start + i;
            if c == ' ' {
                norm.push('\u{2581}');
                orig.extend([at; 3]);
            } else {
                norm.push(c);
                orig.extend(std::iter::repeat_n(at, c.len_utf8()));
            }
        }
        orig.push(end);

        let mut syms: Vec<Symbol> = Vec::with_capacity(norm.len());
        for (i, c) in norm.char_indices() {
            syms.push(Symbol {
                start: i,
                len: c.len_utf8(),
                prev: syms.len() as isize - 1,
                next: syms.len() as isize + 1,
            });
        }
        if let Some(last) = syms.last_mut() {
            last.next = -1;
        }
        if syms.is_empty() {
            return Ok(());
        }

        let mut queue = BinaryHeap::new();
        for i in 1..syms.len() {
            self.try_bigram(&norm, &syms, i - 1, i as isize, &mut queue);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (b.left, b.right);
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
                continue; // one side was merged since this pair was queued
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            let after = syms[r].next;
            syms[l].next = after;
            if after >= 0 {
                syms[after as usize].prev = l as isize;
            }
            if syms[l].prev >= 0 {
                self.try_bigram(&norm, &syms, syms[l].prev as usize, l as isize, &mut queue);
            }
            self.try_bigram(&norm, &syms, l, syms[l].next, &mut queue);
        }

        let mut i = 0isize;
        while i >= 0 {
            let s = syms[i as usize];
            let piece = &norm[s.start..s.start + s.len];
            let span = (orig[s.start], orig[s.start + s.len]);
            match self.ids.get(piece) {
                Some(&id) => {
                    out.ids.push(id);
                    out.byte_spans.push(span);
                }
                None => {
                    // Every merged symbol is a vocabulary entry, so this is one character that is
                    // not: its UTF-8 bytes as byte tokens (llama.cpp `resegment`).
                    for &b in piece.as_bytes() {
                        let id = self.byte_ids[b as usize].ok_or_else(|| {
                            ModelError::Encode(format!(
                                "{}: character {piece:?} is not in the vocabulary and byte 0x{b:02X} has no <0x{b:02X}> token",
                                self.source.display()
                            ))
                        })?;
                        out.ids.push(id);
                        out.byte_spans.push(span);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    fn try_bigram(
        &self,
        norm: &str,
        syms: &[Symbol],
        left: usize,
        right: isize,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        if right < 0 {
            return;
        }
        let right = right as usize;
        let size = syms[left].len + syms[right].len;
        let piece = &norm[syms[left].start..syms[left].start + size];
        if let Some(&id) = self.ids.get(piece) {
            queue.push(Bigram {
                left,
                right,
                score: self.scores[id as usize],
                size,
            });
        }
    }
}

/// Settings read from GGUF besides the vocabulary.
struct SpmSettings {
    add_space_prefix: bool,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    rstrip_cut_tokens: bool,
}

enum Fragment {
    Text { start: usize, end: usize },
    Token { id: u32, start: usize, end: usize },
}

/// A run of the escaped text: `len == 0` once merged into its left neighbour.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: isize,
    next: isize,
}

/// A candidate merge. The heap pops the highest score first, and among equal scores the leftmost
/// (llama.cpp `llm_bigram_spm::comparator`).
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

fn parse_byte_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: bytes for fallback, a few pieces with scores, a user-defined "\n\n".
    fn toy(add_space_prefix: bool) -> SpmTokenizer {
        let mut pieces: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut scores = vec![0.0, 0.0, 0.0];
        let mut types = vec![2, TYPE_CONTROL, TYPE_CONTROL];
        for b in 0..=255u32 {
            pieces.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(TYPE_BYTE);
        }
        for (p, s) in [
            ("\u{2581}", -1.0),
            ("a", -2.0),
            ("b", -3.0),
            ("\u{2581}a", -4.0),
            ("ab", -5.0),
            ("aa", -6.0),
            ("\u{2581}ab", -8.0),
            ("\n", -9.0),
        ] {
            pieces.push(p.into());
            scores.push(s);
            types.push(1);
        }
        pieces.push("\n\n".into());
        scores.push(0.0);
        types.push(TYPE_USER_DEFINED);
        SpmTokenizer::new(
            Path::new("toy.gguf"),
            pieces,
            scores,
            types,
            SpmSettings {
                add_space_prefix,
                bos_id: Some(1),
                eos_id: Some(2),
                add_bos: true,
                add_eos: false,
                rstrip_cut_tokens: false,
            },
        )
    }

    fn pieces_of(t: &SpmTokenizer, text: &str) -> Vec<String> {
        t.encode(text)
            .unwrap()
            .ids
            .iter()
            .map(|&i| t.pieces()[i as usize].clone())
            .collect()
    }

    #[test]
    fn highest_score_merges_first_and_ties_go_left() {
        let t = toy(false);
        // "▁a" (-4) beats "ab" (-5): "▁a" + "b", not "▁" + "ab"; then "▁ab" (-8) joins them.
        assert_eq!(pieces_of(&t, " ab"), ["\u{2581}ab"]);
        // "aa" at 0 and at 1 tie: the left one merges.
        assert_eq!(pieces_of(&t, "aaa"), ["aa", "a"]);
        assert_eq!(pieces_of(&t, "aaaa"), ["aa", "aa"]);
    }

    #[test]
    fn space_prefix_only_at_the_start_and_after_cut_tokens() {
        let t = toy(true);
        assert_eq!(pieces_of(&t, "a"), ["\u{2581}a"]);
        assert_eq!(pieces_of(&t, "a\n\na"), ["\u{2581}a", "\n\n", "\u{2581}a"]);
        // A single "\n" is an ordinary piece, not cut out: no prefix after it.
        assert_eq!(pieces_of(&t, "a\na"), ["\u{2581}a", "\n", "a"]);
        let t = toy(false);
        assert_eq!(pieces_of(&t, "a\n\na"), ["a", "\n\n", "a"]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes_with_the_character_span() {
        let t = toy(false);
        let enc = t.encode("aé").unwrap();
        let p: Vec<&str> = enc
            .ids
            .iter()
            .map(|&i| t.pieces()[i as usize].as_str())
            .collect();
        assert_eq!(p, ["a", "<0xC3>", "<0xA9>"]);
        assert_eq!(enc.byte_spans, [(0, 1), (1, 3), (1, 3)]);
    }

    #[test]
    fn spans_point_into_the_original_text() {
        let t = toy(true);
        let enc = t.encode("ab ab").unwrap();
        // "▁ab" from the added prefix spans only "ab"; the second covers " ab".
        assert_eq!(enc.byte_spans, [(0, 2), (2, 5)]);
        assert_eq!(
            t.encode_with_special("a").unwrap(),
            [1, t.token_to_id("\u{2581}a").unwrap()]
        );
        assert!(t.encode("").unwrap().ids.is_empty());
    }

    #[test]
    fn token_text_decodes_spaces_and_bytes() {
        let t = toy(false);
        assert_eq!(t.token_text(t.token_to_id("\u{2581}ab").unwrap()), " ab");
        assert_eq!(t.token_text(t.token_to_id("<0x41>").unwrap()), "A");
        assert_eq!(t.token_text(t.token_to_id("<0xC3>").unwrap()), "\u{FFFD}");
        assert_eq!(t.token_text(1), "<s>");
    }
}
