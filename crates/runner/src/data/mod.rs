//! Dataset readers: turn `--data <PATH | hf://datasets/NAME[/CONFIG]/SPLIT>`
//! plus `--text-field` into a stream of [`Document`]s.
//!
//! # Formats (chosen by path / extension)
//!
//! | `--data`                               | documents |
//! |----------------------------------------|-----------|
//! | a file ending in `.jsonl`, `.ndjson`, `.json` | one per non-blank line: a JSON object, text = the string field `--text-field` (JSON Lines; a `.json` file holding one array is rejected with a hint) |
//! | a file ending in `.parquet`            | one per row: the column `--text-field` (utf8, large_utf8 or utf8_view; nulls are an error), read in record batches |
//! | any other file                         | the whole file is one document |
//! | a directory                            | its `*.txt` files (non-recursive; other files and sub-directories are ignored), sorted by file name (byte order), one document per file |
//! | `hf://datasets/NAME[/CONFIG]/SPLIT`    | the Parquet files of that split in the Hugging Face hub cache (see [`hf`]), one document per row |
//!
//! # Semantics
//!
//! * Text is byte-exact: no trimming, no normalisation, CRLF and a trailing
//!   newline are kept. For JSON Lines the text is the decoded JSON string.
//! * Blank JSONL lines (only ASCII whitespace, e.g. a trailing `\n` or `\r\n`)
//!   are skipped; they are not records.
//! * Documents whose text is empty (0 bytes) are skipped everywhere (they have
//!   nothing to score); `Document::index` is dense over the documents
//!   actually yielded (0, 1, 2, ...), `Document::source` tells where each came
//!   from: `path` (whole file), `path:LINE` (JSONL, 1-based line),
//!   `path#row=ROW` (Parquet, 0-based row within the file).
//! * Whitespace-only documents are kept (byte-exact), but if the corpus has no
//!   document with a non-whitespace character the stream ends with
//!   [`DataError::OnlyWhitespace`]; if it has no non-empty document at all,
//!   with [`DataError::EmptyCorpus`]. To be able to report this before any
//!   document is used, whitespace-only documents seen before the first
//!   non-whitespace document are held back and released with it.
//! * The stream is fused: after the first `Err` it yields `None`.
//! * Memory: JSONL is read line by line through a `BufReader`, Parquet one
//!   record batch (256 rows, text column only) at a time; a plain text file
//!   is read whole (it is a single document anyway).

mod error;
pub mod hf;
mod jsonl;
mod pq;
mod text;

use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use error::DataError;
pub use hf::HfOptions;

use crate::document::Document;

/// Where the corpus comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A local file or directory.
    Path(PathBuf),
    /// `hf://datasets/NAME[/CONFIG]/SPLIT`.
    HfDataset {
        /// Repo id, `org/name` (or a legacy single-segment `name`).
        name: String,
        /// Config (subset); `None` means `"default"`.
        config: Option<String>,
        /// Split, e.g. `train`, `validation`, `test`.
        split: String,
    },
}

impl FromStr for DataSource {
    type Err = DataError;

    /// Parse a `--data` value. Anything not starting with `hf://` is a path.
    ///
    /// `hf://datasets/` is followed by 2 to 4 `/`-separated segments:
    /// `NAME/SPLIT` (legacy single-segment name), `ORG/NAME/SPLIT`,
    /// `ORG/NAME/CONFIG/SPLIT`.
    fn from_str(s: &str) -> Result<Self, DataError> {
        let Some(rest) = s.strip_prefix("hf://") else {
            if s.is_empty() {
                return Err(DataError::BadSpec {
                    spec: s.into(),
                    reason: "empty".into(),
                });
            }
            return Ok(DataSource::Path(PathBuf::from(s)));
        };
        let bad = |reason: &str| DataError::BadSpec {
            spec: s.into(),
            reason: reason.into(),
        };
        let rest = rest
            .strip_prefix("datasets/")
            .ok_or_else(|| bad("only hf://datasets/... is supported"))?;
        let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad("empty path segment"));
        }
        let (name, config, split) = match parts.as_slice() {
            [n, sp] => (n.to_string(), None, sp.to_string()),
            [o, n, sp] => (format!("{o}/{n}"), None, sp.to_string()),
            [o, n, c, sp] => (format!("{o}/{n}"), Some(c.to_string()), sp.to_string()),
            _ => return Err(bad("expected hf://datasets/NAME[/CONFIG]/SPLIT")),
        };
        Ok(DataSource::HfDataset {
            name,
            config,
            split,
        })
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Path(p) => write!(f, "{}", p.display()),
            DataSource::HfDataset {
                name,
                config,
                split,
            } => write!(
                f,
                "hf://datasets/{name}/{}/{split}",
                config.as_deref().unwrap_or("default")
            ),
        }
    }
}

/// Everything needed to open a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    /// Where the corpus is.
    pub source: DataSource,
    /// JSONL key / Parquet column holding the text (`--text-field`, default `"text"`).
    pub text_field: String,
    /// Hugging Face cache location and online/offline mode.
    pub hf: HfOptions,
}

impl DataSpec {
    /// Parse `--data` and take `--text-field`; HF options from the environment
    /// ([`HfOptions::from_env`]).
    pub fn new(data: &str, text_field: impl Into<String>) -> Result<Self, DataError> {
        Ok(DataSpec {
            source: data.parse()?,
            text_field: text_field.into(),
            hf: HfOptions::from_env(),
        })
    }

    /// Replace the HF options (tests: an explicit cache root, offline).
    pub fn with_hf(mut self, hf: HfOptions) -> Self {
        self.hf = hf;
        self
    }
}

/// File format of one resolved input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Whole file = one document.
    Text,
    /// JSON Lines.
    Jsonl,
    /// Parquet.
    Parquet,
}

impl Format {
    /// Format of a file, from its extension (case-insensitive).
    pub fn of(path: &Path) -> Format {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        match ext.as_deref() {
            Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
            Some("parquet") => Format::Parquet,
            _ => Format::Text,
        }
    }
}

/// The concrete files a spec resolves to, in reading order, with formats.
/// For `hf://` this may download (see [`hf`]).
pub fn resolve_files(spec: &DataSpec) -> Result<Vec<(PathBuf, Format)>, DataError> {
    match &spec.source {
        DataSource::Path(p) => {
            let meta = std::fs::metadata(p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    DataError::NotFound { path: p.clone() }
                } else {
                    DataError::io(p, e)
                }
            })?;
            if meta.is_dir() {
                let files = text::list_txt_dir(p)?;
                if files.is_empty() {
                    return Err(DataError::EmptyCorpus {
                        what: p.display().to_string(),
                        detail: "directory has no *.txt files".into(),
                    });
                }
                Ok(files.into_iter().map(|f| (f, Format::Text)).collect())
            } else {
                Ok(vec![(p.clone(), Format::of(p))])
            }
        }
        DataSource::HfDataset {
            name,
            config,
            split,
        } => {
            let files = hf::resolve(
                &spec.hf,
                name,
                config.as_deref().unwrap_or("default"),
                split,
            )?;
            Ok(files.into_iter().map(|f| (f, Format::Parquet)).collect())
        }
    }
}

/// A document read from one file, before indexing.
pub(crate) struct RawDoc {
    pub source: String,
    pub text: String,
}

type RawIter = Box<dyn Iterator<Item = Result<RawDoc, DataError>> + Send>;

fn open_file(path: &Path, format: Format, text_field: &str) -> Result<RawIter, DataError> {
    Ok(match format {
        Format::Text => Box::new(text::read_text_file(path).map(Some).transpose().into_iter()),
        Format::Jsonl => Box::new(jsonl::JsonlReader::open(path, text_field)?),
        Format::Parquet => Box::new(pq::ParquetReader::open(path, text_field)?),
    })
}

/// Streaming iterator of documents; see the module docs for the semantics.
pub struct DocumentStream {
    what: String,
    text_field: String,
    files: VecDeque<(PathBuf, Format)>,
    current: Option<RawIter>,
    next_index: usize,
    /// Whitespace-only documents held back until a non-whitespace one shows up.
    held: VecDeque<Document>,
    /// Documents ready to be yielded.
    ready: VecDeque<Document>,
    seen_non_ws: bool,
    n_empty: usize,
    done: bool,
}

impl DocumentStream {
    /// The input files, in reading order.
    pub fn remaining_files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    fn fail(&mut self, e: DataError) -> Option<Result<Document, DataError>> {
        self.done = true;
        self.current = None;
        self.held.clear();
        self.ready.clear();
        Some(Err(e))
    }

    fn next_raw(&mut self) -> Option<Result<RawDoc, DataError>> {
        loop {
            if let Some(it) = self.current.as_mut() {
                match it.next() {
                    Some(r) => return Some(r),
                    None => self.current = None,
                }
            }
            let (path, format) = self.files.pop_front()?;
            match open_file(&path, format, &self.text_field) {
                Ok(it) => self.current = Some(it),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Iterator for DocumentStream {
    type Item = Result<Document, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if let Some(d) = self.ready.pop_front() {
                return Some(Ok(d));
            }
            match self.next_raw() {
                Some(Err(e)) => return self.fail(e),
                Some(Ok(raw)) => {
                    if raw.text.is_empty() {
                        self.n_empty += 1;
                        continue;
                    }
                    let ws = raw.text.chars().all(char::is_whitespace);
                    let doc = Document {
                        index: self.next_index,
                        source: raw.source,
                        text: raw.text,
                    };
                    self.next_index += 1;
                    if self.seen_non_ws {
                        return Some(Ok(doc));
                    }
                    if ws {
                        self.held.push_back(doc);
                    } else {
                        self.seen_non_ws = true;
                        self.ready.append(&mut self.held);
                        self.ready.push_back(doc);
                    }
                }
                None => {
                    if self.seen_non_ws {
                        self.done = true;
                        return None;
                    }
                    let e = if self.held.is_empty() {
                        DataError::EmptyCorpus {
                            what: self.what.clone(),
                            detail: if self.n_empty == 0 {
                                "0 documents".into()
                            } else {
                                format!("{} document(s), all empty", self.n_empty)
                            },
                        }
                    } else {
                        DataError::OnlyWhitespace {
                            what: self.what.clone(),
                            n_docs: self.held.len(),
                        }
                    };
                    return self.fail(e);
                }
            }
        }
    }
}

/// Open the corpus as a stream of documents. Only resolution errors (missing
/// path, directory without `*.txt`, HF dataset not cached / not found, bad
/// spec) are returned here; files are opened lazily, so everything else — a
/// file's I/O error, Parquet schema problems (missing / non-string column),
/// bad records — comes out of the stream (then the stream ends).
pub fn open(spec: &DataSpec) -> Result<DocumentStream, DataError> {
    let files = resolve_files(spec)?;
    Ok(DocumentStream {
        what: spec.source.to_string(),
        text_field: spec.text_field.clone(),
        files: files.into(),
        current: None,
        next_index: 0,
        held: VecDeque::new(),
        ready: VecDeque::new(),
        seen_non_ws: false,
        n_empty: 0,
        done: false,
    })
}

fn sha256_file(path: &Path) -> Result<String, DataError> {
    let mut f = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Streaming SHA-256 (lower-case hex) of the corpus files, for provenance and
/// the resume fingerprint.
///
/// * One file: the SHA-256 of its bytes (same as `sha256sum FILE`).
/// * Several files (directory, HF split): the SHA-256 of the manifest made of
///   one line per file in reading order, `"<sha256 of file>  <file name>\n"`
///   (file name = last path component, so moving the corpus or the cache
///   does not change it).
///
/// `--text-field` is not part of the hash; combine it yourself if needed.
pub fn sha256_of(spec: &DataSpec) -> Result<String, DataError> {
    let files = resolve_files(spec)?;
    if let [(single, _)] = files.as_slice() {
        return sha256_file(single);
    }
    let mut h = Sha256::new();
    for (path, _) in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.update(format!("{}  {}\n", sha256_file(path)?, name).as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}
