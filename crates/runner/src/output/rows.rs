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

use arrow_schema::Schema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};
pub use crate::output::records::{CompareRow, Record, TokenRow, WordRow};

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
pub trait RowKind: Record {
    /// Directory of the staged parts inside the output directory.
    const PARTS_DIR: &'static str;
    /// What a row is, for messages (`token`, `word`).
    const WHAT: &'static str;
    /// Final file name for `format`.
    fn file_name(format: RowsFormat) -> Option<&'static str>;
}

impl RowKind for TokenRow {
    const PARTS_DIR: &'static str = "tokens.parts";
    const WHAT: &'static str = "token";
    fn file_name(format: RowsFormat) -> Option<&'static str> {
        format.file_name()
    }
}

impl RowKind for CompareRow {
    const PARTS_DIR: &'static str = "tokens.parts";
    const WHAT: &'static str = "token";
    fn file_name(format: RowsFormat) -> Option<&'static str> {
        format.file_name()
    }
}

impl RowKind for WordRow {
    const PARTS_DIR: &'static str = "words.parts";
    const WHAT: &'static str = "word";
    fn file_name(format: RowsFormat) -> Option<&'static str> {
        format.words_file_name()
    }
}

/// Reads a finished rows file (`tokens.*` / `words.*`; the format from the extension) into rows.
pub fn read_rows<R: Record>(path: &Path) -> Result<Vec<R>> {
    let bad = |why: String| RunError::Report(format!("{}: {why}", path.display()));
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => {
            let f = File::open(path).map_err(|e| RunError::io(path, e))?;
            let mut rows = Vec::new();
            for (k, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| RunError::io(path, e))?;
                rows.push(
                    serde_json::from_str(&line).map_err(|e| bad(format!("line {}: {e}", k + 1)))?,
                );
            }
            Ok(rows)
        }
        Some("parquet") => {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let f = File::open(path).map_err(|e| RunError::io(path, e))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(f)
                .and_then(|b| b.with_batch_size(BATCH_ROWS).build())
                .map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
            let mut rows = Vec::new();
            for batch in reader {
                let batch = batch.map_err(|e| bad(e.to_string()))?;
                rows.extend(R::from_batch(&batch).map_err(|e| bad(e.to_string()))?);
            }
            Ok(rows)
        }
        _ => Err(bad("expected a .jsonl or .parquet rows file".into())),
    }
}

fn part_path(dir: &Path, parts_dir: &str, k: u64, tmp: bool) -> PathBuf {
    dir.join(parts_dir).join(format!(
        "part-{k:06}.jsonl{}",
        if tmp { ".tmp" } else { "" }
    ))
}

/// Appends rows to the current part file; finalizes parts at checkpoints.
#[derive(Debug)]
pub struct RowSink<R: RowKind> {
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
        let schema = Arc::new(Schema::new(R::fields()));
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
                    writer.write(&R::record_batch(&batch)?).map_err(perr)?;
                    batch.clear();
                }
            }
        }
        if !batch.is_empty() {
            writer.write(&R::record_batch(&batch)?).map_err(perr)?;
        }
        writer.close().map_err(perr)?;
        Ok(())
    }
}

const BATCH_ROWS: usize = 65_536;
