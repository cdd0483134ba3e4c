//! Error type for loading and running models. Every variant names the file (or source) and the
//! problem, and where it helps, a hint on how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not found{hint}")]
    NotFound { path: PathBuf, hint: String },

    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },

    #[error("{path}: missing key `{key}`")]
    MissingConfigKey { path: PathBuf, key: String },

    #[error("{path}: key `{key}` has an invalid value: {message}")]
    InvalidConfigValue {
        path: PathBuf,
        key: String,
        message: String,
    },

    #[error("{path}: unsupported architecture `{architecture}`; supported: {supported}")]
    UnsupportedArchitecture {
        path: PathBuf,
        architecture: String,
        supported: String,
    },

    #[error("{path}: cannot read safetensors: {message} (the file may be truncated or corrupt; re-download it)")]
    Safetensors { path: PathBuf, message: String },

    #[error("{path}: tensor `{tensor}` not found{hint}")]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        hint: String,
    },

    #[error("{path}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: tensor `{tensor}` has dtype {found}, expected {expected}")]
    TensorDtype {
        path: PathBuf,
        tensor: String,
        expected: String,
        found: String,
    },

    #[error("{index}: names shard `{shard}` which does not exist (incomplete download?)")]
    MissingShard { index: PathBuf, shard: String },

    #[error("{path}: invalid GGUF file: {message}")]
    Gguf { path: PathBuf, message: String },

    #[error("{path}: GGUF metadata key `{key}`: {message}")]
    GgufMetadata {
        path: PathBuf,
        key: String,
        message: String,
    },

    #[error(
        "{path}: tensor `{tensor}` uses quantization type {dtype}, which is not supported{hint}"
    )]
    UnsupportedQuantization {
        path: PathBuf,
        tensor: String,
        dtype: String,
        hint: String,
    },

    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("tokenizer {tokenizer} has {tokenizer_vocab} tokens but the model {model} embeds only {model_vocab}; they do not belong together")]
    VocabMismatch {
        tokenizer: PathBuf,
        model: PathBuf,
        tokenizer_vocab: usize,
        model_vocab: usize,
    },

    #[error("{gguf}: GGUF vocabulary differs from {tokenizer_json}: {message}")]
    TokenizerDisagreement {
        gguf: PathBuf,
        tokenizer_json: PathBuf,
        message: String,
    },

    #[error("cannot tokenize text: {0}")]
    Encode(String),

    #[error("`{0}` is not a model source: expected a `.gguf` file, a model directory, or a Hugging Face id `org/name[@revision]`")]
    BadSource(String),

    #[error("Hugging Face hub, {repo}: {message}")]
    Hub { repo: String, message: String },

    #[error("invalid input: {0}")]
    Input(String),

    #[error("tensor computation failed: {}", candle_message(.0))]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// A candle error as one line, without the backtrace candle appends when `RUST_BACKTRACE` is set
/// (`WithBacktrace` displays as `inner\nbacktrace`, `Context` as `context\ninner`): messages must stay
/// one line, and callers that classify the message (GGUF type ids, truncation) must see the same
/// text with or without the variable.
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Reads a file, naming it in the error.
pub(crate) fn read_to_string(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| io_error(path, source))
}

pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> ModelError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ModelError::NotFound {
            path: path.to_path_buf(),
            hint: String::new(),
        }
    } else {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads and parses a JSON file, naming it in the error.
pub(crate) fn read_json(path: &std::path::Path) -> Result<serde_json::Value> {
    let text = read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
