//! Per-token and per-word rows: staging in checkpointed part files and the
//! final `tokens.jsonl` / `tokens.parquet` (or `words.jsonl` /
//! `words.parquet`, see [`RowKind`]).
//!
//! Rows are appended to `tokens.parts/part-NNNNNN.jsonl.tmp` (`words.parts/…`
//! for word rows); at each
//! checkpoint the current part is flushed, fsynced and renamed to
//! `part-NNNNNN.jsonl` (finalized). A resumed run deletes every `.tmp` and
//! every part numbered at or above the checkpoint's part count, so rows are
//! never duplicated or lost. When the run completes the parts are combined
//! into the final file (temp file + rename) and removed.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};
use crate::words::WordRow;

/// Output format of the per-token rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowsFormat {
    /// No per-token rows.
    None,
    /// `tokens.jsonl`.
    Jsonl,
    /// `tokens.parquet`.
    Parquet,
}

impl std::str::FromStr for RowsFormat {
    type Err = RunError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(RowsFormat::None),
            "jsonl" => Ok(RowsFormat::Jsonl),
            "parquet" => Ok(RowsFormat::Parquet),
            o => Err(RunError::Config(format!(
                "unknown token rows format {o:?} (expected none, jsonl or parquet)"
            ))),
        }
    }
}

impl RowsFormat {
    /// Final file name, if any.
    pub fn file_name(self) -> Option<&'static str> {
        match self {
            RowsFormat::None => None,
            RowsFormat::Jsonl => Some("tokens.jsonl"),
            RowsFormat::Parquet => Some("tokens.parquet"),
        }
    }

    /// Final file name of per-word rows in this format, if any.
    pub fn words_file_name(self) -> Option<&'static str> {
        match self {
            RowsFormat::None => None,
            RowsFormat::Jsonl => Some("words.jsonl"),
            RowsFormat::Parquet => Some("words.parquet"),
        }
    }
}

/// A kind of output row that a [`RowSink`] can stage and finish.
pub trait RowKind: Serialize + DeserializeOwned {
    /// Directory of the staged parts inside the output directory.
    const PARTS_DIR: &'static str;
    /// What a row is, for messages (`token`, `word`).
    const WHAT: &'static str;
    /// Final file name for `format`.
    fn file_name(format: RowsFormat) -> Option<&'static str>;
    /// Arrow schema of the parquet file.
    fn schema() -> Schema;
    /// Arrow columns of `rows` under `schema`.
    fn record_batch(schema: &Arc<Schema>, rows: &[Self]) -> Result<RecordBatch>;
}

/// One scored token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRow {
    /// Document index.
    pub doc: u64,
    /// Index of the token in its document.
    pub index: u64,
    /// Token id.
    pub token_id: u32,
    /// Token text.
    pub token: String,
    /// Byte span start in the document.
    pub byte_start: u64,
    /// Byte span end (exclusive).
    pub byte_end: u64,
    /// `-ln p(token)` (nats).
    #[serde(deserialize_with = "f64_or_nan")]
    pub nll_nats: f64,
    /// Entropy of the predicted distribution (nats).
    #[serde(deserialize_with = "f64_or_nan")]
    pub entropy_nats: f64,
    /// Varentropy (nats²).
    #[serde(deserialize_with = "f64_or_nan")]
    pub varentropy_nats2: f64,
    /// Arg-max token id.
    pub top1_id: u32,
    /// Its probability.
    #[serde(deserialize_with = "f64_or_nan")]
    pub top1_prob: f64,
    /// Rank of the token (1 = arg-max).
    pub target_rank: u64,
    /// Tokens before this one in its window (BOS included).
    pub context_len: u64,
    /// Compare mode: `KL(reference ‖ model)` (nats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_nats: Option<f64>,
    /// Compare mode: the reference's NLL (nats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_nll_nats: Option<f64>,
    /// Compare mode: the reference's arg-max.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_top1_id: Option<u32>,
}

/// JSON has no NaN/inf (serde_json writes them as `null`); read `null` back
/// as NaN.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn part_path(dir: &Path, parts_dir: &str, k: u64, tmp: bool) -> PathBuf {
    dir.join(parts_dir).join(format!(
        "part-{k:06}.jsonl{}",
        if tmp { ".tmp" } else { "" }
    ))
}

/// Appends rows to the current part file; finalizes parts at checkpoints.
#[derive(Debug)]
pub struct RowSink<R: RowKind = TokenRow> {
    dir: PathBuf,
    format: RowsFormat,
    /// Number of finalized parts.
    parts: u64,
    current: Option<BufWriter<File>>,
    /// Rows in finalized parts plus the current part.
    rows: u64,
    _rows: PhantomData<fn(R)>,
}

impl<R: RowKind> RowSink<R> {
    /// Opens the sink for `dir`, keeping the first `parts` finalized parts
    /// (from a checkpoint; 0 for a fresh run) and deleting everything else.
    pub fn open(dir: &Path, format: RowsFormat, parts: u64, rows: u64) -> Result<Self> {
        let pdir = dir.join(R::PARTS_DIR);
        if format != RowsFormat::None {
            fs::create_dir_all(&pdir).map_err(|e| RunError::io(&pdir, e))?;
            for entry in fs::read_dir(&pdir).map_err(|e| RunError::io(&pdir, e))? {
                let entry = entry.map_err(|e| RunError::io(&pdir, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let keep = name
                    .strip_prefix("part-")
                    .and_then(|r| r.strip_suffix(".jsonl"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|n| n < parts);
                if !keep {
                    let p = entry.path();
                    fs::remove_file(&p).map_err(|e| RunError::io(&p, e))?;
                }
            }
            for k in 0..parts {
                let p = part_path(dir, R::PARTS_DIR, k, false);
                if !p.exists() {
                    return Err(RunError::Checkpoint(format!(
                        "{} rows part {} is missing; the output directory was modified",
                        R::WHAT,
                        p.display()
                    )));
                }
            }
        }
        Ok(RowSink {
            dir: dir.to_path_buf(),
            format,
            parts,
            current: None,
            rows,
            _rows: PhantomData,
        })
    }

    /// Finalized parts.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Appends rows to the current (unfinalized) part.
    pub fn append(&mut self, rows: &[R]) -> Result<()> {
        if self.format == RowsFormat::None || rows.is_empty() {
            return Ok(());
        }
        if self.current.is_none() {
            let p = part_path(&self.dir, R::PARTS_DIR, self.parts, true);
            let f = File::create(&p).map_err(|e| RunError::io(&p, e))?;
            self.current = Some(BufWriter::new(f));
        }
        let w = self.current.as_mut().expect("just opened");
        let p = part_path(&self.dir, R::PARTS_DIR, self.parts, true);
        for r in rows {
            serde_json::to_writer(&mut *w, r).map_err(|e| RunError::Report(e.to_string()))?;
            w.write_all(b"\n").map_err(|e| RunError::io(&p, e))?;
        }
        self.rows += rows.len() as u64;
        Ok(())
    }

    /// Finalizes the current part (flush, fsync, rename). Call before
    /// writing the checkpoint that records `parts()`.
    pub fn finalize_part(&mut self) -> Result<()> {
        if let Some(w) = self.current.take() {
            let tmp = part_path(&self.dir, R::PARTS_DIR, self.parts, true);
            let f = w
                .into_inner()
                .map_err(|e| RunError::io(&tmp, e.into_error()))?;
            f.sync_all().map_err(|e| RunError::io(&tmp, e))?;
            drop(f);
            let fin = part_path(&self.dir, R::PARTS_DIR, self.parts, false);
            fs::rename(&tmp, &fin).map_err(|e| RunError::io(&fin, e))?;
            self.parts += 1;
        }
        Ok(())
    }

    /// Combines all finalized parts into the final rows file (atomically)
    /// and removes the parts. Returns the final path.
    pub fn finish(mut self) -> Result<Option<PathBuf>> {
        self.finalize_part()?;
        let Some(name) = R::file_name(self.format) else {
            return Ok(None);
        };
        let fin = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        match self.format {
            RowsFormat::Jsonl => {
                let mut out =
                    BufWriter::new(File::create(&tmp).map_err(|e| RunError::io(&tmp, e))?);
                for k in 0..self.parts {
                    let p = part_path(&self.dir, R::PARTS_DIR, k, false);
                    let mut f = File::open(&p).map_err(|e| RunError::io(&p, e))?;
                    std::io::copy(&mut f, &mut out).map_err(|e| RunError::io(&tmp, e))?;
                }
                let f = out
                    .into_inner()
                    .map_err(|e| RunError::io(&tmp, e.into_error()))?;
                f.sync_all().map_err(|e| RunError::io(&tmp, e))?;
            }
            RowsFormat::Parquet => self.write_parquet(&tmp)?,
            RowsFormat::None => unreachable!(),
        }
        fs::rename(&tmp, &fin).map_err(|e| RunError::io(&fin, e))?;
        // The parts stay until the checkpoint says the run is complete ([`remove_parts`]): a crash
        // between here and that mark must still find every part the checkpoint counts.
        Ok(Some(fin))
    }

    /// Deletes the staged parts of a run whose completion is recorded (idempotent).
    pub fn remove_parts(dir: &Path) -> Result<()> {
        let pdir = dir.join(R::PARTS_DIR);
        match fs::remove_dir_all(&pdir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RunError::io(&pdir, e)),
            _ => Ok(()),
        }
    }

    fn write_parquet(&self, tmp: &Path) -> Result<()> {
        use parquet::arrow::ArrowWriter;
        use parquet::basic::Compression;
        use parquet::file::properties::WriterProperties;
        let schema = Arc::new(R::schema());
        let file = File::create(tmp).map_err(|e| RunError::io(tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let perr = |e: parquet::errors::ParquetError| RunError::Report(format!("parquet: {e}"));
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(perr)?;
        let mut batch: Vec<R> = Vec::with_capacity(BATCH_ROWS);
        for k in 0..self.parts {
            let p = part_path(&self.dir, R::PARTS_DIR, k, false);
            let f = File::open(&p).map_err(|e| RunError::io(&p, e))?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| RunError::io(&p, e))?;
                let row: R = serde_json::from_str(&line).map_err(|e| {
                    RunError::Report(format!("corrupt {} row in {}: {e}", R::WHAT, p.display()))
                })?;
                batch.push(row);
                if batch.len() == BATCH_ROWS {
                    writer
                        .write(&R::record_batch(&schema, &batch)?)
                        .map_err(perr)?;
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            writer
                .write(&R::record_batch(&schema, &batch)?)
                .map_err(perr)?;
        }
        writer.close().map_err(perr)?;
        Ok(())
    }
}

const BATCH_ROWS: usize = 65_536;

/// Arrow schema of `tokens.parquet`.
pub fn parquet_schema() -> Schema {
    let f = |n: &str, t: DataType, nullable: bool| Field::new(n, t, nullable);
    Schema::new(vec![
        f("doc", DataType::UInt64, false),
        f("index", DataType::UInt64, false),
        f("token_id", DataType::UInt32, false),
        f("token", DataType::Utf8, false),
        f("byte_start", DataType::UInt64, false),
        f("byte_end", DataType::UInt64, false),
        f("nll_nats", DataType::Float64, true),
        f("entropy_nats", DataType::Float64, true),
        f("varentropy_nats2", DataType::Float64, true),
        f("top1_id", DataType::UInt32, false),
        f("top1_prob", DataType::Float64, true),
        f("target_rank", DataType::UInt64, false),
        f("context_len", DataType::UInt64, false),
        f("kl_nats", DataType::Float64, true),
        f("ref_nll_nats", DataType::Float64, true),
        f("ref_top1_id", DataType::UInt32, true),
    ])
}

impl RowKind for TokenRow {
    const PARTS_DIR: &'static str = "tokens.parts";
    const WHAT: &'static str = "token";
    fn file_name(format: RowsFormat) -> Option<&'static str> {
        format.file_name()
    }
    fn schema() -> Schema {
        parquet_schema()
    }
    fn record_batch(schema: &Arc<Schema>, rows: &[Self]) -> Result<RecordBatch> {
        token_record_batch(schema, rows)
    }
}

/// Arrow schema of `words.parquet`.
pub fn words_parquet_schema() -> Schema {
    let f = |n: &str, t: DataType, nullable: bool| Field::new(n, t, nullable);
    Schema::new(vec![
        f("doc", DataType::UInt64, false),
        f("word_index", DataType::UInt64, false),
        f("word", DataType::Utf8, false),
        f("byte_start", DataType::UInt64, false),
        f("byte_end", DataType::UInt64, false),
        f("n_tokens", DataType::UInt64, false),
        f("surprisal_nats", DataType::Float64, true),
        f("surprisal_corrected_nats", DataType::Float64, true),
    ])
}

impl RowKind for WordRow {
    const PARTS_DIR: &'static str = "words.parts";
    const WHAT: &'static str = "word";
    fn file_name(format: RowsFormat) -> Option<&'static str> {
        format.words_file_name()
    }
    fn schema() -> Schema {
        words_parquet_schema()
    }
    fn record_batch(schema: &Arc<Schema>, rows: &[Self]) -> Result<RecordBatch> {
        let u64s = |g: &dyn Fn(&WordRow) -> usize| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| g(r) as u64),
            ))
        };
        // JSON staging turns non-finite floats into null; keep them null.
        let f64s = |g: &dyn Fn(&WordRow) -> Option<f64>| -> ArrayRef {
            Arc::new(Float64Array::from_iter(
                rows.iter().map(|r| g(r).filter(|x| x.is_finite())),
            ))
        };
        let cols: Vec<ArrayRef> = vec![
            u64s(&|r| r.doc),
            u64s(&|r| r.word_index),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.word.as_str()),
            )),
            u64s(&|r| r.byte_start),
            u64s(&|r| r.byte_end),
            u64s(&|r| r.n_tokens),
            f64s(&|r| r.surprisal_nats),
            f64s(&|r| r.surprisal_corrected_nats),
        ];
        RecordBatch::try_new(schema.clone(), cols)
            .map_err(|e| RunError::Report(format!("arrow: {e}")))
    }
}

fn token_record_batch(schema: &Arc<Schema>, rows: &[TokenRow]) -> Result<RecordBatch> {
    // JSON staging turns non-finite floats into null; keep them null.
    fn f64s(rows: &[TokenRow], g: impl Fn(&TokenRow) -> f64) -> ArrayRef {
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| Some(g(r)).filter(|x| x.is_finite())),
        ))
    }
    let u64s = |g: &dyn Fn(&TokenRow) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(g)))
    };
    let u32s = |g: &dyn Fn(&TokenRow) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(g)))
    };
    let cols: Vec<ArrayRef> = vec![
        u64s(&|r| r.doc),
        u64s(&|r| r.index),
        u32s(&|r| r.token_id),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.token.as_str()),
        )),
        u64s(&|r| r.byte_start),
        u64s(&|r| r.byte_end),
        f64s(rows, |r| r.nll_nats),
        f64s(rows, |r| r.entropy_nats),
        f64s(rows, |r| r.varentropy_nats2),
        u32s(&|r| r.top1_id),
        f64s(rows, |r| r.top1_prob),
        u64s(&|r| r.target_rank),
        u64s(&|r| r.context_len),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.kl_nats))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.ref_nll_nats))),
        Arc::new(UInt32Array::from_iter(rows.iter().map(|r| r.ref_top1_id))),
    ];
    RecordBatch::try_new(schema.clone(), cols).map_err(|e| RunError::Report(format!("arrow: {e}")))
}
