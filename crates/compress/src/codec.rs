//! Compression and decompression: one coding loop, run by both sides.
//!
//! **Segmentation.** If the input is UTF-8 and the tokenizer gives it back byte for byte
//! (`decode(encode(text)) == text`), it is one text chunk: its tokens are exactly the ones
//! `surprisal eval` scores. Otherwise the input is cut into lines (each with its `\n`); a line
//! that is UTF-8 and round-trips is a text chunk, any other is stored as raw bytes in the chunk
//! table (8 bits per byte, not modelled), adjacent raw lines merged. The model sees the text
//! chunks' tokens as one stream.
//!
//! **Windows** follow `surprisal eval --protocol sliding` (crates/runner/PROTOCOLS.md) over that
//! stream: windows of `window` tokens (BOS included when the model uses one) start every `stride`
//! tokens; each token is coded in the first window where it has `window − stride` tokens of
//! context (the first window: all of its tokens), with the model's distribution given that
//! window's tokens before it. At each window start the KV cache is reset and the overlap (BOS and
//! the already-known tokens) is fed in one pass; then every token is coded and fed one at a time.
//! The very first token without BOS has no context: it is coded with the uniform distribution
//! (`eval` does not score it).
//!
//! **Both sides run the same calls** — reset, feed the overlap, code, step — on the same tokens,
//! so they see the same logits bit for bit (scoring is thread-invariant), hence the same
//! frequencies ([`crate::quantize`]) and the same symbols.

use std::io::Read;

use constriction::stream::model::DefaultContiguousCategoricalEntropyModel;
use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder};
use constriction::stream::{Decode, Encode};
use sha2::{Digest, Sha256};
use surprisal_models::{LoadedModel, Session};

use crate::container::{Chunk, Container, Header};
use crate::error::{CompressError, Result};
use crate::quantize;

/// The sliding windows: `window` tokens per window (BOS included), a new one every `stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub window: usize,
    pub stride: usize,
}

/// What ties a file to a model: its weight files' sha256 and its tokenizer's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelKey {
    pub model_sha256: [u8; 32],
    pub tokenizer_hash: [u8; 32],
}

/// sha256 of the model's weight files (in order) and the tokenizer fingerprint.
pub fn model_key(loaded: &LoadedModel) -> Result<ModelKey> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in &loaded.info.weight_files {
        let err = |e: std::io::Error| CompressError::ModelFile {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut f = std::fs::File::open(path).map_err(err)?;
        loop {
            let n = f.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    let mut tokenizer_hash = [0u8; 32];
    let fp = loaded.tokenizer.fingerprint();
    hex::decode_to_slice(&fp, &mut tokenizer_hash)
        .map_err(|e| CompressError::Params(format!("tokenizer fingerprint {fp:?}: {e}")))?;
    Ok(ModelKey {
        model_sha256: h.finalize().into(),
        tokenizer_hash,
    })
}

/// What a compression run did, for the summary line and the note.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub original_bytes: u64,
    pub compressed_bytes: u64,
    /// Header, chunk table (raw bytes included) and checksum.
    pub overhead_bytes: u64,
    pub payload_bytes: u64,
    pub tokens: u64,
    /// Bytes stored raw (not tokenizable).
    pub raw_bytes: u64,
    pub windows: u64,
    /// Σ −ln p(token) of the tokens coded with the model (the first token without BOS
    /// excluded), from the f64 log-softmax of the logits: the NLL `eval` reports for the same
    /// windows.
    pub model_nll_nats: f64,
    /// Σ −log2(freq / 2^24) of every coded token: the ideal size of the payload.
    pub code_bits: f64,
    /// Tokens coded with the uniform distribution (the first one when there is no BOS).
    pub uniform_tokens: u64,
    /// What those cost with the exact uniform distribution: log2(vocab) each.
    pub uniform_bits: f64,
}

/// Compresses `input` with the model (the file records `key`). `progress(done, total)` after
/// every token.
pub fn compress(
    loaded: &LoadedModel,
    key: &ModelKey,
    input: &[u8],
    params: Params,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<u8>, Summary)> {
    let bos = bos_of(loaded);
    check_params(loaded, params, bos.is_some())?;
    let (chunks, ids) = segment(loaded, input)?;
    let vocab = loaded.model.vocab_size();
    let mut encoder = DefaultRangeEncoder::new();
    let mut summary = Summary::default();
    run_windows(
        loaded,
        params,
        bos,
        ids.len(),
        &mut summary,
        progress,
        |i, freqs| {
            let model = categorical(freqs)?;
            encoder
                .encode_symbol(ids[i] as usize, model)
                .map_err(|e| CompressError::Coder(e.to_string()))?;
            Ok(ids[i])
        },
    )?;
    let payload = encoder
        .into_compressed()
        .map_err(|e| CompressError::Coder(format!("{e:?}")))?;
    let container = Container {
        header: Header {
            scheme: quantize::SCHEME,
            bos: bos.is_some(),
            window: params.window as u32,
            stride: params.stride as u32,
            vocab: vocab as u32,
            original_len: input.len() as u64,
            original_sha256: Sha256::digest(input).into(),
            model_sha256: key.model_sha256,
            tokenizer_hash: key.tokenizer_hash,
            tokens: ids.len() as u64,
        },
        chunks,
        payload,
    };
    let bytes = container.to_bytes();
    summary.original_bytes = input.len() as u64;
    summary.compressed_bytes = bytes.len() as u64;
    summary.payload_bytes = 4 * container.payload.len() as u64;
    summary.overhead_bytes = summary.compressed_bytes - summary.payload_bytes;
    summary.tokens = ids.len() as u64;
    summary.raw_bytes = container
        .chunks
        .iter()
        .map(|c| match c {
            Chunk::Raw(b) => b.len() as u64,
            Chunk::Text(_) => 0,
        })
        .sum();
    Ok((bytes, summary))
}

/// Reads a `.sz` file's container (header and chunk table), checking only the file itself.
pub fn read(data: &[u8]) -> Result<Container> {
    Container::from_bytes(data)
}

/// Decompresses a `.sz` file with the model it was compressed with (anything else is an error).
pub fn decompress(
    loaded: &LoadedModel,
    key: &ModelKey,
    data: &[u8],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u8>> {
    let c = Container::from_bytes(data)?;
    let h = &c.header;
    let short = |x: &[u8; 32]| hex::encode(&x[..6]);
    if h.model_sha256 != key.model_sha256 {
        return Err(CompressError::ModelMismatch {
            recorded: short(&h.model_sha256),
            this: short(&key.model_sha256),
        });
    }
    if h.tokenizer_hash != key.tokenizer_hash {
        return Err(CompressError::TokenizerMismatch {
            recorded: short(&h.tokenizer_hash),
            this: short(&key.tokenizer_hash),
        });
    }
    if h.vocab as usize != loaded.model.vocab_size() {
        return Err(CompressError::Corrupt(format!(
            "vocabulary of {} tokens recorded, the model has {}",
            h.vocab,
            loaded.model.vocab_size()
        )));
    }
    let bos = bos_of(loaded);
    if bos.is_some() != h.bos {
        return Err(CompressError::Corrupt(
            "the BOS flag does not match the model's".into(),
        ));
    }
    let params = Params {
        window: h.window as usize,
        stride: h.stride as usize,
    };
    check_params(loaded, params, h.bos)
        .map_err(|e| CompressError::Corrupt(format!("window parameters: {e}")))?;
    let n = h.tokens as usize;
    let mut decoder = DefaultRangeDecoder::from_compressed(c.payload.clone())
        .map_err(|e| CompressError::Coder(format!("{e:?}")))?;
    let mut ids: Vec<u32> = Vec::with_capacity(n.min(1 << 24));
    let mut summary = Summary::default();
    run_windows(
        loaded,
        params,
        bos,
        n,
        &mut summary,
        progress,
        |i, freqs| {
            debug_assert_eq!(i, ids.len());
            let model = categorical(freqs)?;
            let s = decoder
                .decode_symbol(model)
                .map_err(|e| CompressError::Coder(format!("{e:?}")))?;
            ids.push(s as u32);
            Ok(s as u32)
        },
    )?;
    let mut out = Vec::with_capacity(h.original_len.min(1 << 30) as usize);
    let mut at = 0usize;
    for chunk in &c.chunks {
        match chunk {
            Chunk::Raw(b) => out.extend_from_slice(b),
            Chunk::Text(k) => {
                let k = *k as usize;
                out.extend_from_slice(&loaded.tokenizer.decode(&ids[at..at + k])?);
                at += k;
            }
        }
    }
    if out.len() as u64 != h.original_len || Sha256::digest(&out).as_slice() != h.original_sha256 {
        return Err(CompressError::Checksum);
    }
    Ok(out)
}

fn bos_of(loaded: &LoadedModel) -> Option<u32> {
    // `--bos auto`, as eval: the model's default
    if loaded.info.add_bos_token {
        loaded.info.bos_token_id
    } else {
        None
    }
}

/// The rules of `eval --protocol sliding`: 1 ≤ stride < window ≤ context, and a window holds at
/// least one text token besides BOS... and two without.
fn check_params(loaded: &LoadedModel, p: Params, bos: bool) -> Result<()> {
    let min = if bos { 3 } else { 2 };
    if p.window < min {
        return Err(CompressError::Params(format!(
            "window {} is too small (at least {min})",
            p.window
        )));
    }
    if p.stride == 0 || p.stride >= p.window - usize::from(bos) {
        return Err(CompressError::Params(format!(
            "stride {} must be at least 1 and less than the window's {} text tokens",
            p.stride,
            p.window - usize::from(bos)
        )));
    }
    let ctx = loaded.info.max_position_embeddings;
    if p.window > ctx {
        return Err(CompressError::Params(format!(
            "window {} exceeds the model's context length {ctx}",
            p.window
        )));
    }
    Ok(())
}

fn categorical(freqs: &[u32]) -> Result<DefaultContiguousCategoricalEntropyModel> {
    DefaultContiguousCategoricalEntropyModel::from_nonzero_fixed_point_probabilities(freqs, false)
        .map_err(|()| CompressError::Quantization)
}

/// The loop both sides run: for each sliding window, reset the cache, feed BOS and the overlap,
/// then for each token to code: quantize the current logits, `code(i, freqs)` (which encodes
/// token i, or decodes it, and returns it), and feed it. `n`: tokens in the stream.
fn run_windows(
    loaded: &LoadedModel,
    params: Params,
    bos: Option<u32>,
    n: usize,
    summary: &mut Summary,
    progress: &mut dyn FnMut(u64, u64),
    mut code: impl FnMut(usize, &[u32]) -> Result<u32>,
) -> Result<()> {
    let model = &loaded.model;
    let vocab = model.vocab_size();
    let mut session = Session::with_window(model, params.window);
    // text tokens per window
    let wt = params.window - usize::from(bos.is_some());
    let mut ids: Vec<u32> = Vec::with_capacity(n.min(1 << 24));
    let (mut begin, mut prev_end) = (0usize, 0usize);
    if n == 0 {
        return Ok(());
    }
    loop {
        let end = (begin + wt).min(n);
        session.reset();
        summary.windows += 1;
        let context: Vec<u32> = bos
            .into_iter()
            .chain(ids[begin..prev_end].iter().copied())
            .collect();
        let mut logits: Option<Vec<f32>> = if context.is_empty() {
            None
        } else {
            Some(session.extend(&context)?)
        };
        for i in prev_end..end {
            let (freqs, row) = match &logits {
                Some(l) => (quantize::frequencies(l)?, Some(l)),
                None => (quantize::frequencies(&vec![0f32; vocab])?, None),
            };
            let tok = code(i, &freqs)?;
            if tok as usize >= vocab {
                return Err(CompressError::Corrupt(format!(
                    "token {tok} outside the vocabulary"
                )));
            }
            summary.code_bits += quantize::code_bits(&freqs, tok as usize);
            match row {
                Some(l) => summary.model_nll_nats += nll_nats(l, tok as usize),
                None => {
                    summary.uniform_tokens += 1;
                    summary.uniform_bits += (vocab as f64).log2();
                }
            }
            ids.push(tok);
            progress(ids.len() as u64, n as u64);
            if i + 1 < end {
                logits = Some(session.step(tok)?);
            }
        }
        prev_end = end;
        if end == n {
            break;
        }
        begin += params.stride;
    }
    Ok(())
}

/// −log p(token) from the f64 log-softmax of the logits (the evaluator's arithmetic).
fn nll_nats(logits: &[f32], token: usize) -> f64 {
    let m = logits
        .iter()
        .map(|&l| f64::from(l))
        .fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|&l| (f64::from(l) - m).exp()).sum();
    -(f64::from(logits[token]) - m - z.ln())
}

/// The chunks of `input` and the token stream of its text chunks (see the module docs).
fn segment(loaded: &LoadedModel, input: &[u8]) -> Result<(Vec<Chunk>, Vec<u32>)> {
    let tok = &loaded.tokenizer;
    // Some(ids) when `piece` is UTF-8 and decodes back to itself
    let round_trip = |piece: &[u8]| -> Result<Option<Vec<u32>>> {
        let Ok(text) = std::str::from_utf8(piece) else {
            return Ok(None);
        };
        let ids = tok.encode(text)?.ids;
        Ok((tok.decode(&ids)? == piece).then_some(ids))
    };
    if input.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    if let Some(ids) = round_trip(input)? {
        return Ok((vec![Chunk::Text(ids.len() as u64)], ids));
    }
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut all = Vec::new();
    for line in input.split_inclusive(|&b| b == b'\n') {
        match round_trip(line)? {
            Some(ids) if !ids.is_empty() => {
                chunks.push(Chunk::Text(ids.len() as u64));
                all.extend(ids);
            }
            _ => match chunks.last_mut() {
                Some(Chunk::Raw(b)) => b.extend_from_slice(line),
                _ => chunks.push(Chunk::Raw(line.to_vec())),
            },
        }
    }
    Ok((chunks, all))
}
