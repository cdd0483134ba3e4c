//! Parquet: one document per row of the `--text-field` column, read one
//! record batch at a time with only that column projected.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::{DataError, RawDoc};

/// Rows per record batch.
const BATCH_ROWS: usize = 256;

pub(crate) struct ParquetReader {
    path: PathBuf,
    column: String,
    reader: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    /// Position within `batch`.
    pos: usize,
    /// 0-based file row of `batch` row 0.
    batch_row0: usize,
    /// Rows consumed from previous batches.
    rows_before: usize,
    done: bool,
}

fn perr(path: &Path, at: String, e: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        at,
        message: e.to_string(),
    }
}

impl ParquetReader {
    pub(crate) fn open(path: &Path, column: &str) -> Result<Self, DataError> {
        let f = File::open(path).map_err(|e| DataError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| perr(path, String::new(), e))?;
        let fields = builder.schema().fields();
        let Some((idx, field)) = fields.iter().enumerate().find(|(_, f)| f.name() == column) else {
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                column: column.to_string(),
                columns: fields
                    .iter()
                    .map(|f| format!("{:?}", f.name()))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        match field.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {}
            other => {
                return Err(DataError::ColumnNotString {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                    data_type: other.to_string(),
                })
            }
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| perr(path, String::new(), e))?;
        Ok(ParquetReader {
            path: path.to_path_buf(),
            column: column.to_string(),
            reader,
            batch: None,
            pos: 0,
            batch_row0: 0,
            rows_before: 0,
            done: false,
        })
    }

    fn value(&self, batch: &RecordBatch, i: usize) -> Result<String, DataError> {
        let col = batch.column(0);
        let row = self.batch_row0 + i;
        if col.is_null(i) {
            return Err(DataError::NullText {
                path: self.path.clone(),
                row,
                column: self.column.clone(),
            });
        }
        let any = col.as_any();
        let s = if let Some(a) = any.downcast_ref::<StringArray>() {
            a.value(i)
        } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
            a.value(i)
        } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
            a.value(i)
        } else {
            return Err(DataError::ColumnNotString {
                path: self.path.clone(),
                column: self.column.clone(),
                data_type: col.data_type().to_string(),
            });
        };
        Ok(s.to_string())
    }

    fn read_one(&mut self) -> Option<Result<RawDoc, DataError>> {
        loop {
            if let Some(batch) = self.batch.take() {
                if self.pos < batch.num_rows() {
                    let i = self.pos;
                    self.pos += 1;
                    let r = self.value(&batch, i).map(|text| RawDoc {
                        source: format!("{}#row={}", self.path.display(), self.batch_row0 + i),
                        text,
                    });
                    self.batch = Some(batch);
                    return Some(r);
                }
                self.rows_before += batch.num_rows();
            }
            match self.reader.next()? {
                Ok(b) => {
                    self.batch_row0 = self.rows_before;
                    self.pos = 0;
                    self.batch = Some(b);
                }
                Err(e) => {
                    return Some(Err(perr(
                        &self.path,
                        format!(" at row {}", self.rows_before),
                        e,
                    )))
                }
            }
        }
    }
}

impl Iterator for ParquetReader {
    type Item = Result<RawDoc, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.read_one();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}
