//! The `.sz` container, format version 1. All integers little-endian.
//!
//! ```text
//! offset size
//!   0     8  magic  "SURPRSZ" 0x1a
//!   8     2  format version (1)
//!  10     1  quantization scheme (see `quantize`, 1)
//!  11     1  flags: bit 0 = every window starts with the model's BOS token
//!  12     4  window (tokens a window holds, BOS included)
//!  16     4  stride (tokens between window starts)
//!  20     4  vocab (alphabet size: the width of the model's logits)
//!  24     8  original length (bytes)
//!  32    32  sha256 of the original bytes
//!  64    32  sha256 of the model's weight file(s)
//!  96    32  tokenizer fingerprint (sha256 of its vocabulary and merges)
//! 128     8  tokens coded
//! 136     4  chunks; then per chunk: kind (0 = text, as tokens; 1 = raw bytes), length (u64:
//!            tokens, or bytes), and for raw chunks the bytes themselves
//!   …     8  payload length in 32-bit words; then the range coder's words
//!   …    32  sha256 of everything before it
//! ```
//!
//! The reader checks every length against what is left before allocating or reading, so random
//! or truncated input is an error, never a panic or a huge allocation; the trailing checksum then
//! catches any other corruption before the (slow) decoding starts.

use sha2::{Digest, Sha256};

use crate::error::{CompressError, Result};

pub const MAGIC: &[u8; 8] = b"SURPRSZ\x1a";
pub const VERSION: u16 = 1;
const FLAG_BOS: u8 = 1;

/// What a `.sz` file says about its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub scheme: u8,
    pub bos: bool,
    pub window: u32,
    pub stride: u32,
    pub vocab: u32,
    pub original_len: u64,
    pub original_sha256: [u8; 32],
    pub model_sha256: [u8; 32],
    pub tokenizer_hash: [u8; 32],
    pub tokens: u64,
}

/// A piece of the input: text coded as tokens, or bytes the tokenizer does not round-trip,
/// stored as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// This many tokens of the coded token stream.
    Text(u64),
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub header: Header,
    pub chunks: Vec<Chunk>,
    /// The range coder's output.
    pub payload: Vec<u32>,
}

impl Container {
    pub fn to_bytes(&self) -> Vec<u8> {
        let h = &self.header;
        let mut out = Vec::with_capacity(200 + 4 * self.payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.push(h.scheme);
        out.push(if h.bos { FLAG_BOS } else { 0 });
        out.extend_from_slice(&h.window.to_le_bytes());
        out.extend_from_slice(&h.stride.to_le_bytes());
        out.extend_from_slice(&h.vocab.to_le_bytes());
        out.extend_from_slice(&h.original_len.to_le_bytes());
        out.extend_from_slice(&h.original_sha256);
        out.extend_from_slice(&h.model_sha256);
        out.extend_from_slice(&h.tokenizer_hash);
        out.extend_from_slice(&h.tokens.to_le_bytes());
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for c in &self.chunks {
            match c {
                Chunk::Text(n) => {
                    out.push(0);
                    out.extend_from_slice(&n.to_le_bytes());
                }
                Chunk::Raw(b) => {
                    out.push(1);
                    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
        out.extend_from_slice(&(self.payload.len() as u64).to_le_bytes());
        for w in &self.payload {
            out.extend_from_slice(&w.to_le_bytes());
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// Bytes of the file that are not the payload: header, chunk table, checksum.
    pub fn overhead_bytes(&self) -> usize {
        self.to_bytes().len() - 4 * self.payload.len()
    }

    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            return Err(CompressError::NotCompressed);
        }
        let mut r = Reader {
            data,
            at: MAGIC.len(),
        };
        let version = r.u16("format version")?;
        if version != VERSION {
            return Err(CompressError::Version(version, VERSION));
        }
        let scheme = r.u8("quantization scheme")?;
        if scheme != crate::quantize::SCHEME {
            return Err(CompressError::Scheme(scheme, crate::quantize::SCHEME));
        }
        let flags = r.u8("flags")?;
        if flags & !FLAG_BOS != 0 {
            return Err(CompressError::Corrupt(format!(
                "unknown flags {flags:#04x}"
            )));
        }
        let header = Header {
            scheme,
            bos: flags & FLAG_BOS != 0,
            window: r.u32("window")?,
            stride: r.u32("stride")?,
            vocab: r.u32("vocab")?,
            original_len: r.u64("original length")?,
            original_sha256: r.hash("original sha256")?,
            model_sha256: r.hash("model sha256")?,
            tokenizer_hash: r.hash("tokenizer hash")?,
            tokens: r.u64("token count")?,
        };
        let n_chunks = r.u32("chunk count")? as usize;
        // each chunk takes at least 9 bytes: a count beyond what is left is corruption
        if n_chunks > r.left() / 9 {
            return Err(CompressError::Truncated("chunk table"));
        }
        let mut chunks = Vec::with_capacity(n_chunks);
        let (mut text_tokens, mut raw_bytes) = (0u64, 0u64);
        for _ in 0..n_chunks {
            let kind = r.u8("chunk kind")?;
            let len = r.u64("chunk length")?;
            chunks.push(match kind {
                0 => {
                    text_tokens = text_tokens.saturating_add(len);
                    Chunk::Text(len)
                }
                1 => {
                    raw_bytes = raw_bytes.saturating_add(len);
                    Chunk::Raw(r.bytes(len, "raw chunk")?.to_vec())
                }
                k => return Err(CompressError::Corrupt(format!("unknown chunk kind {k}"))),
            });
        }
        let words = r.u64("payload length")?;
        if words > (r.left() / 4) as u64 {
            return Err(CompressError::Truncated("payload"));
        }
        let payload: Vec<u32> = r
            .bytes(words * 4, "payload")?
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let body = r.at;
        let sum = r.hash("checksum")?;
        if r.left() != 0 {
            return Err(CompressError::Corrupt(format!(
                "{} bytes after the checksum",
                r.left()
            )));
        }
        if Sha256::digest(&data[..body]).as_slice() != sum {
            return Err(CompressError::Corrupt(
                "the container checksum does not match (damaged file)".into(),
            ));
        }
        // consistency: the token count is the text chunks' total, and every token and raw byte
        // stands for at least one original byte (a text chunk may add one empty token: the
        // space a SentencePiece tokenizer prefixes)
        if text_tokens != header.tokens {
            return Err(CompressError::Corrupt(format!(
                "{} tokens in the header, {text_tokens} in the chunk table",
                header.tokens
            )));
        }
        if raw_bytes.saturating_add(header.tokens)
            > header.original_len.saturating_add(n_chunks as u64)
        {
            return Err(CompressError::Corrupt(
                "more tokens and raw bytes than original bytes".into(),
            ));
        }
        Ok(Self {
            header,
            chunks,
            payload,
        })
    }
}

/// A cursor that returns `Truncated(what)` instead of reading past the end.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.data.len() - self.at
    }

    fn bytes(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        if n > self.left() as u64 {
            return Err(CompressError::Truncated(what));
        }
        let s = &self.data[self.at..self.at + n as usize];
        self.at += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N as u64, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn hash(&mut self, what: &'static str) -> Result<[u8; 32]> {
        self.array(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Container {
        Container {
            header: Header {
                scheme: 1,
                bos: true,
                window: 256,
                stride: 128,
                vocab: 384,
                original_len: 12,
                original_sha256: [1; 32],
                model_sha256: [2; 32],
                tokenizer_hash: [3; 32],
                tokens: 7,
            },
            chunks: vec![Chunk::Text(3), Chunk::Raw(vec![0xff, 0xfe]), Chunk::Text(4)],
            payload: vec![0xdead_beef, 7, 0],
        }
    }

    #[test]
    fn writes_and_reads_back() {
        let c = sample();
        assert_eq!(Container::from_bytes(&c.to_bytes()).unwrap(), c);
        assert_eq!(c.overhead_bytes() + 12, c.to_bytes().len());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(
                Container::from_bytes(&bytes[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Random bytes, with or without the magic in front: an error, never a panic.
        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..400), magic in any::<bool>()) {
            if magic {
                let mut b = MAGIC.to_vec();
                b.extend_from_slice(&1u16.to_le_bytes());
                b.append(&mut bytes);
                bytes = b;
            }
            prop_assert!(Container::from_bytes(&bytes).is_err());
        }

        /// A valid file with bytes flipped, inserted or removed: an error, never a panic.
        #[test]
        fn mutated_files_are_errors(at in any::<prop::sample::Index>(), byte in 1u8.., op in 0u8..3) {
            let mut bytes = sample().to_bytes();
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] ^= byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
            prop_assert!(Container::from_bytes(&bytes).is_err());
        }
    }
}
