//! What can go wrong compressing or reading a `.sz` file. Every failure of the reader is one of
//! these (never a panic, never output that is not the original): the CLI prints it on one line
//! after the file's name.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CompressError {
    #[error("not a surprisal compressed file (bad magic bytes)")]
    NotCompressed,
    #[error("format version {0} is not supported (this build reads version {1})")]
    Version(u16, u16),
    #[error("quantization scheme {0} is not supported (this build knows scheme {1})")]
    Scheme(u8, u8),
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("compressed with another model (model sha256 {recorded}…, this model {this}…)")]
    ModelMismatch { recorded: String, this: String },
    #[error("compressed with another tokenizer (tokenizer hash {recorded}…, this one {this}…)")]
    TokenizerMismatch { recorded: String, this: String },
    #[error("the decoded bytes do not match the recorded length and sha256 (corrupt file, or a machine whose float arithmetic differs from the compressing one's)")]
    Checksum,
    #[error("a vocabulary of {0} tokens cannot be coded (2 to 2^23 tokens)")]
    Vocab(usize),
    #[error("the model's distribution could not be quantized")]
    Quantization,
    #[error("invalid parameters: {0}")]
    Params(String),
    #[error("range coder: {0}")]
    Coder(String),
    #[error("reading the model file {path}: {message}")]
    ModelFile { path: String, message: String },
    #[error(transparent)]
    Model(#[from] surprisal_models::ModelError),
}

pub type Result<T, E = CompressError> = std::result::Result<T, E>;
