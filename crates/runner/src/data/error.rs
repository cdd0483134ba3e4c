//! Errors of the dataset readers. Every message is one line: where (file and
//! line / row / byte offset), what, and a hint.

use std::path::PathBuf;

/// An error while locating or reading the corpus.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// `--data` names a path that does not exist.
    #[error("data path not found: {path}; hint: check --data (a file, a directory of .txt files, or hf://datasets/NAME[/CONFIG]/SPLIT)")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The `--data` string could not be parsed.
    #[error("invalid --data spec {spec:?}: {reason}; hint: use a path or hf://datasets/NAME[/CONFIG]/SPLIT")]
    BadSpec {
        /// The spec given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error while reading a file.
    #[error("{path}: I/O error: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No document (or only empty ones).
    #[error("{what}: empty corpus ({detail}); hint: check the path, the file extension and --text-field")]
    EmptyCorpus {
        /// File, directory or dataset.
        what: String,
        /// e.g. "0 documents" / "3 documents, all empty".
        detail: String,
    },
    /// All documents contain only whitespace.
    #[error("{what}: corpus contains only whitespace ({n_docs} document(s)); hint: check --text-field and the file contents")]
    OnlyWhitespace {
        /// File, directory or dataset.
        what: String,
        /// Number of (whitespace-only) documents seen.
        n_docs: usize,
    },
    /// Bytes that are not valid UTF-8.
    #[error("{path}:{line}: invalid UTF-8 at byte offset {byte_offset} (byte 0x{byte:02x}); hint: re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line of the first bad byte.
        line: usize,
        /// 0-based byte offset of the first bad byte in the file.
        byte_offset: u64,
        /// The first bad byte.
        byte: u8,
    },
    /// A JSONL line that does not parse as JSON.
    #[error("{path}:{line}: not valid JSON: {message}; hint: {hint}")]
    BadJson {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// serde_json's message.
        message: String,
        /// What to do.
        hint: String,
    },
    /// A JSONL record without the text field, or where it is not a string.
    #[error("{path}:{line}: {problem}; keys present: [{keys}]; hint: pass --text-field with one of the keys present")]
    BadTextField {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// e.g. `missing field "text"` / `field "text" is a number, not a string`.
        problem: String,
        /// Comma-separated keys of the record.
        keys: String,
    },
    /// A Parquet file without the text column.
    #[error("{path}: no column {column:?}; columns: [{columns}]; hint: pass --text-field with one of the columns")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The requested column.
        column: String,
        /// Comma-separated columns present.
        columns: String,
    },
    /// A Parquet column that is not a string column.
    #[error("{path}: column {column:?} has type {data_type}, not a string (utf8/large_utf8/utf8_view); hint: pass --text-field naming a string column")]
    ColumnNotString {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Its Arrow type.
        data_type: String,
    },
    /// A null value in the Parquet text column.
    #[error("{path}: row {row}: column {column:?} is null; hint: drop null rows or pick another --text-field")]
    NullText {
        /// The file.
        path: PathBuf,
        /// 0-based row in the file.
        row: usize,
        /// The column.
        column: String,
    },
    /// A Parquet decoding error.
    #[error("{path}: Parquet error{at}: {message}; hint: is it a valid Parquet file?")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// e.g. " at row 1024" or "".
        at: String,
        /// The parquet/arrow message.
        message: String,
    },
    /// A Hugging Face dataset that is neither cached nor downloadable.
    #[error("{dataset}: not in the Hugging Face cache {cache} ({detail}); hint: {hint}")]
    HfNotCached {
        /// `hf://datasets/NAME/CONFIG/SPLIT`.
        dataset: String,
        /// Cache root searched.
        cache: PathBuf,
        /// What was looked for / why the download failed.
        detail: String,
        /// What to do.
        hint: &'static str,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
