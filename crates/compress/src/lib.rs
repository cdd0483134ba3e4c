//! surprisal-compress: lossless compression of bytes with a causal language model's own
//! next-token probabilities (arithmetic/range coding, `constriction`'s range coder), so that the
//! bits per byte the evaluator reports become a file size anyone can check.
//!
//! Why a crate of its own: it has one job (the `.sz` format and the coding loop) and needs only
//! the models crate (tokenizer, incremental forward), not the runner's protocols, data readers
//! or outputs; the dependency stays one way, cli → compress → models.
//!
//! - [`quantize`]: the model's distribution as integer frequencies, identical on both sides;
//! - [`container`]: the `.sz` file (header, chunk table, payload, checksum) and its reader;
//! - [`codec`]: segmentation into tokenizable text and raw bytes, the sliding windows, and the
//!   coding loop that compression and decompression share.
//!
//! See `docs/compression.md`.

pub mod codec;
pub mod container;
pub mod error;
pub mod quantize;

pub use codec::{compress, decompress, model_key, ModelKey, Params, Summary};
pub use container::{Container, Header};
pub use error::{CompressError, Result};
