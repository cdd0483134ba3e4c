//! The unit of input text handed from the dataset readers to the runner.

use serde::{Deserialize, Serialize};

/// One document of the evaluation corpus.
///
/// Readers (`crate::data`) yield these in corpus order; `index` is the
/// 0-based position of the document in that order (dense, starting at 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// 0-based position of the document in the corpus.
    pub index: usize,
    /// Where the text came from: a file path, optionally with `:line`
    /// (e.g. `data/wiki.jsonl:17`). Used in error messages.
    pub source: String,
    /// The document text (UTF-8). Byte spans of tokens refer to this string.
    pub text: String,
}

impl Document {
    /// Convenience constructor.
    pub fn new(index: usize, source: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            index,
            source: source.into(),
            text: text.into(),
        }
    }
}
