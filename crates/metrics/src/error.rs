//! Error type for every fallible operation in this crate.

/// Why a logit row (or a pair of rows) could not be turned into statistics.
///
/// These are all *input* problems: the numerics themselves never fail on a
/// valid row, so callers can treat any of these as "the model produced
/// something we refuse to score" rather than as a bug in this crate.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum MetricsError {
    /// A logit is NaN or `+inf`. `-inf` is legal (a masked token, p = 0);
    /// NaN/`+inf` would silently poison every sum, so we reject the row and
    /// report the first offending index so the caller can locate it.
    #[error("logit at index {index} is not finite ({value}); only -inf is allowed")]
    NonFiniteLogit {
        /// Position of the first offending logit in the row.
        index: usize,
        /// The offending value (NaN or +inf).
        value: f32,
    },
    /// Model and reference rows must describe the same vocabulary, element by
    /// element, for KL and probability deltas to mean anything.
    #[error("vocabulary mismatch: model row has {model} logits, reference row has {reference}")]
    VocabMismatch {
        /// Length of the model row.
        model: usize,
        /// Length of the reference row.
        reference: usize,
    },
    /// The scored token id does not index into the row.
    #[error("target token {target} is out of range for a vocabulary of {vocab}")]
    TargetOutOfRange {
        /// The requested target id.
        target: u32,
        /// Length of the row.
        vocab: usize,
    },
    /// A zero-length row has no distribution at all.
    #[error("logit row is empty")]
    EmptyRow,
    /// Every logit is `-inf`: the softmax is 0/0, there is no distribution.
    #[error("every logit in the row is -inf; the distribution is undefined")]
    AllMasked,
}
