//! Parquet: one document per row of the `--text-field` column, read one
//! record batch at a time with only that column projected.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
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

/// Runs `f`, turning a panic inside it into a [`DataError::Parquet`]. A last resort: parquet 57
/// panics on some corrupt files instead of returning an error (found by fuzzing, see
/// docs/fuzzing.md: unwraps in its thrift decoding (apache/arrow-rs#9839), capacity and integer
/// overflows, negative column chunk ranges, unsupported types in the embedded Arrow schema), and
/// neither the footer's contents nor the pages can be validated before parquet decodes them.
fn guarded<T>(
    path: &Path,
    at: impl FnOnce() -> String,
    f: impl FnOnce() -> Result<T, DataError>,
) -> Result<T, DataError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let msg = msg.lines().collect::<Vec<_>>().join("; ");
        Err(perr(
            path,
            at(),
            format!("the Parquet reader panicked ({msg}); the file is corrupt"),
        ))
    })
}

/// A field type of the Parquet footer's thrift schema (parquet.thrift, `FileMetaData` and what it
/// contains), as parquet 57 reads it.
#[derive(Clone, Copy)]
enum Ty {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Double,
    Binary,
    List(&'static Ty),
    Struct(&'static [(i16, Ty)]),
}

impl Ty {
    /// Whether `wire`, a compact-protocol type id, encodes this type.
    fn matches(self, wire: u8) -> bool {
        wire == match self {
            Ty::Bool => return wire == 1 || wire == 2,
            Ty::I8 => 3,
            Ty::I16 => 4,
            Ty::I32 => 5,
            Ty::I64 => 6,
            Ty::Double => 7,
            Ty::Binary => 8,
            Ty::List(_) => 9,
            Ty::Struct(_) => 12,
        }
    }
}

const EMPTY: Ty = Ty::Struct(&[]);
const TIME_UNIT: Ty = Ty::Struct(&[(1, EMPTY), (2, EMPTY), (3, EMPTY)]);
const TIME: Ty = Ty::Struct(&[(1, Ty::Bool), (2, TIME_UNIT)]);
const DECIMAL: Ty = Ty::Struct(&[(1, Ty::I32), (2, Ty::I32)]);
const INT: Ty = Ty::Struct(&[(1, Ty::I8), (2, Ty::Bool)]);
const VARIANT: Ty = Ty::Struct(&[(1, Ty::I8)]);
const GEOMETRY: Ty = Ty::Struct(&[(1, Ty::Binary)]);
const GEOGRAPHY: Ty = Ty::Struct(&[(1, Ty::Binary), (2, Ty::I32)]);
#[rustfmt::skip]
const LOGICAL_TYPE: Ty = Ty::Struct(&[
    (1, EMPTY), (2, EMPTY), (3, EMPTY), (4, EMPTY), (5, DECIMAL), (6, EMPTY), (7, TIME), (8, TIME),
    (10, INT), (11, EMPTY), (12, EMPTY), (13, EMPTY), (14, EMPTY), (15, EMPTY), (16, VARIANT),
    (17, GEOMETRY), (18, GEOGRAPHY),
]);
#[rustfmt::skip]
const SCHEMA_ELEMENT: Ty = Ty::Struct(&[
    (1, Ty::I32), (2, Ty::I32), (3, Ty::I32), (4, Ty::Binary), (5, Ty::I32), (6, Ty::I32),
    (7, Ty::I32), (8, Ty::I32), (9, Ty::I32), (10, LOGICAL_TYPE),
]);
const KEY_VALUE: Ty = Ty::Struct(&[(1, Ty::Binary), (2, Ty::Binary)]);
#[rustfmt::skip]
const STATISTICS: Ty = Ty::Struct(&[
    (1, Ty::Binary), (2, Ty::Binary), (3, Ty::I64), (4, Ty::I64), (5, Ty::Binary),
    (6, Ty::Binary), (7, Ty::Bool), (8, Ty::Bool),
]);
const PAGE_ENCODING_STATS: Ty = Ty::Struct(&[(1, Ty::I32), (2, Ty::I32), (3, Ty::I32)]);
const I64_LIST: Ty = Ty::List(&Ty::I64);
const SIZE_STATISTICS: Ty = Ty::Struct(&[(1, Ty::I64), (2, I64_LIST), (3, I64_LIST)]);
#[rustfmt::skip]
const BOUNDING_BOX: Ty = Ty::Struct(&[
    (1, Ty::Double), (2, Ty::Double), (3, Ty::Double), (4, Ty::Double), (5, Ty::Double),
    (6, Ty::Double), (7, Ty::Double), (8, Ty::Double),
]);
const GEOSPATIAL_STATISTICS: Ty = Ty::Struct(&[(1, BOUNDING_BOX), (2, Ty::List(&Ty::I32))]);
#[rustfmt::skip]
const COLUMN_META_DATA: Ty = Ty::Struct(&[
    (1, Ty::I32), (2, Ty::List(&Ty::I32)), (3, Ty::List(&Ty::Binary)), (4, Ty::I32),
    (5, Ty::I64), (6, Ty::I64), (7, Ty::I64), (8, Ty::List(&KEY_VALUE)), (9, Ty::I64),
    (10, Ty::I64), (11, Ty::I64), (12, STATISTICS), (13, Ty::List(&PAGE_ENCODING_STATS)),
    (14, Ty::I64), (15, Ty::I32), (16, SIZE_STATISTICS), (17, GEOSPATIAL_STATISTICS),
]);
const COLUMN_KEY: Ty = Ty::Struct(&[(1, Ty::List(&Ty::Binary)), (2, Ty::Binary)]);
const COLUMN_CRYPTO_META_DATA: Ty = Ty::Struct(&[(1, EMPTY), (2, COLUMN_KEY)]);
#[rustfmt::skip]
const COLUMN_CHUNK: Ty = Ty::Struct(&[
    (1, Ty::Binary), (2, Ty::I64), (3, COLUMN_META_DATA), (4, Ty::I64), (5, Ty::I32),
    (6, Ty::I64), (7, Ty::I32), (8, COLUMN_CRYPTO_META_DATA), (9, Ty::Binary),
]);
const SORTING_COLUMN: Ty = Ty::Struct(&[(1, Ty::I32), (2, Ty::Bool), (3, Ty::Bool)]);
#[rustfmt::skip]
const ROW_GROUP: Ty = Ty::Struct(&[
    (1, Ty::List(&COLUMN_CHUNK)), (2, Ty::I64), (3, Ty::I64), (4, Ty::List(&SORTING_COLUMN)),
    (5, Ty::I64), (6, Ty::I64), (7, Ty::I16),
]);
const AES_GCM: Ty = Ty::Struct(&[(1, Ty::Binary), (2, Ty::Binary), (3, Ty::Bool)]);
const ENCRYPTION_ALGORITHM: Ty = Ty::Struct(&[(1, AES_GCM), (2, AES_GCM)]);
/// parquet.thrift's `FileMetaData`, the footer.
#[rustfmt::skip]
const FILE_META_DATA: &[(i16, Ty)] = &[
    (1, Ty::I32), (2, Ty::List(&SCHEMA_ELEMENT)), (3, Ty::I64), (4, Ty::List(&ROW_GROUP)),
    (5, Ty::List(&KEY_VALUE)), (6, Ty::Binary), (7, Ty::List(&Ty::Struct(&[(1, EMPTY)]))),
    (8, ENCRYPTION_ALGORITHM), (9, Ty::Binary),
];

/// Walks the Parquet footer (compact thrift) along parquet.thrift's `FileMetaData`, the way
/// parquet 57 reads it, checking that no list declares more elements than there are bytes left.
/// parquet 57 reserves memory for a footer list from its declared length before reading any
/// element (apache/arrow-rs#10920, fixed in later releases), so a corrupt length like 2^31 makes
/// the allocation fail, which aborts the process and cannot be caught. parquet reads a known
/// field by its schema type whatever the wire type says, so a field whose wire type differs is
/// rejected too (the walk would no longer see the bytes as parquet does); unknown fields are
/// skipped by their wire type, as parquet does. The length check also bounds the time parquet
/// spends skipping lists of booleans, which take no bytes in its skip. Other damage stops the walk
/// and is left to parquet.
struct FooterWalk<'a> {
    bytes: &'a [u8],
    pos: usize,
}

enum WalkStop {
    /// Malformed in some other way (or too deep): parquet reports it.
    Other,
    /// A list declaring this many elements with fewer bytes left.
    TooLong(u64),
    /// A known field (id) or list element with the wrong wire type.
    WrongType(i16),
}

impl FooterWalk<'_> {
    fn byte(&mut self) -> Result<u8, WalkStop> {
        let b = *self.bytes.get(self.pos).ok_or(WalkStop::Other)?;
        self.pos += 1;
        Ok(b)
    }

    /// ULEB128, decoded as parquet does (bits shifted past 64 wrap).
    fn varint(&mut self) -> Result<u64, WalkStop> {
        let (mut v, mut shift) = (0u64, 0u32);
        loop {
            let b = self.byte()?;
            v |= ((b & 0x7f) as u64).wrapping_shl(shift);
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), WalkStop> {
        let left = self.bytes.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                self.pos += n;
                Ok(())
            }
            _ => Err(WalkStop::Other),
        }
    }

    /// A list header: (element wire type, size as parquet uses it: an i32 cast to `usize`).
    fn list_header(&mut self) -> Result<(u8, u64), WalkStop> {
        let header = self.byte()?;
        if header == 0 {
            return Ok((0, 0));
        }
        let n = match header >> 4 {
            15 => self.varint()? as i32 as usize as u64,
            n => n as u64,
        };
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(WalkStop::TooLong(n));
        }
        Ok((header & 0x0f, n))
    }

    /// Skips a value by its wire type, as parquet's `skip` does: booleans inside lists take no
    /// bytes there (so a long list of them costs time, not bytes: the length check bounds it), and
    /// sets and maps are errors.
    fn skip_value(&mut self, wire: u8, depth: u32) -> Result<(), WalkStop> {
        if depth > 64 {
            return Err(WalkStop::Other);
        }
        match wire {
            1 | 2 => Ok(()),
            3 => self.skip(1),
            4..=6 => self.varint().map(drop),
            7 => self.skip(8),
            8 => {
                let n = self.varint()?;
                self.skip(n)
            }
            9 => {
                let (elem, n) = self.list_header()?;
                for _ in 0..n {
                    self.skip_value(elem, depth + 1)?;
                }
                Ok(())
            }
            12 => self.fields(&[], depth + 1),
            _ => Err(WalkStop::Other),
        }
    }

    /// A value of schema type `ty` whose wire type is `wire`.
    fn value(&mut self, ty: Ty, wire: u8, id: i16, depth: u32) -> Result<(), WalkStop> {
        if !ty.matches(wire) {
            return Err(WalkStop::WrongType(id));
        }
        match ty {
            Ty::List(elem) => {
                let (elem_wire, n) = self.list_header()?;
                for _ in 0..n {
                    self.value(*elem, elem_wire, id, depth)?;
                }
                Ok(())
            }
            Ty::Struct(fields) => self.fields(fields, depth + 1),
            _ => self.skip_value(wire, depth),
        }
    }

    fn fields(&mut self, schema: &[(i16, Ty)], depth: u32) -> Result<(), WalkStop> {
        if depth > 64 {
            return Err(WalkStop::Other);
        }
        let mut last = 0i16;
        loop {
            let header = self.byte()?;
            let wire = header & 0x0f;
            if wire == 0 {
                return Ok(()); // stop (parquet ignores the high bits)
            }
            let id = match header >> 4 {
                0 => {
                    let z = self.varint()?;
                    ((z >> 1) as i64 ^ -((z & 1) as i64)) as i16
                }
                delta => last.checked_add(delta as i16).ok_or(WalkStop::Other)?,
            };
            last = id;
            match schema.iter().find(|(i, _)| *i == id) {
                Some(&(_, ty)) => self.value(ty, wire, id, depth)?,
                None => self.skip_value(wire, depth)?,
            }
        }
    }
}

/// Rejects a footer that parquet 57 could not decode without an uncatchable allocation failure
/// (see [`FooterWalk`]); every other problem is left to parquet to report.
fn check_footer(path: &Path, f: &mut File) -> Result<(), DataError> {
    let io = |e| DataError::io(path, e);
    let len = f.metadata().map_err(io)?.len();
    let mut tail = [0u8; 8];
    if len < 12
        || f.seek(SeekFrom::End(-8))
            .and_then(|_| f.read_exact(&mut tail))
            .is_err()
    {
        return Ok(());
    }
    let meta_len = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if &tail[4..] != b"PAR1" || meta_len + 8 > len {
        return Ok(());
    }
    let mut meta = vec![0u8; meta_len as usize];
    f.seek(SeekFrom::End(-8 - meta_len as i64)).map_err(io)?;
    f.read_exact(&mut meta).map_err(io)?;
    f.rewind().map_err(io)?;
    let mut walk = FooterWalk {
        bytes: &meta,
        pos: 0,
    };
    let message = match walk.fields(FILE_META_DATA, 0) {
        Err(WalkStop::TooLong(n)) => format!(
            "the footer declares a list of {n} elements with {} bytes left",
            meta.len() - walk.pos
        ),
        Err(WalkStop::WrongType(id)) => format!(
            "footer field {id} at byte {} has the wrong thrift type",
            walk.pos
        ),
        _ => return Ok(()),
    };
    Err(perr(
        path,
        String::new(),
        format!("{message}; the file is corrupt"),
    ))
}

impl ParquetReader {
    pub(crate) fn open(path: &Path, column: &str) -> Result<Self, DataError> {
        let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
        check_footer(path, &mut f)?;
        guarded(path, String::new, || Self::open_file(path, f, column))
    }

    fn open_file(path: &Path, f: File, column: &str) -> Result<Self, DataError> {
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
            let rows_before = self.rows_before;
            let next = guarded(
                &self.path,
                || format!(" at row {rows_before}"),
                || Ok(self.reader.next()),
            );
            match next {
                Ok(None) => return None,
                Ok(Some(Ok(b))) => {
                    self.batch_row0 = self.rows_before;
                    self.pos = 0;
                    self.batch = Some(b);
                }
                Ok(Some(Err(e))) => {
                    return Some(Err(perr(
                        &self.path,
                        format!(" at row {}", self.rows_before),
                        e,
                    )))
                }
                Err(e) => return Some(Err(e)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by `cargo fuzz run parquet` (then minimized by hand): a footer whose column statistics
    /// encode `is_max_value_exact` (a bool) as an i32, on which parquet 57 panics
    /// (apache/arrow-rs#9839) instead of returning an error.
    const BOOL_FIELD_AS_I32: &[u8] = &[
        0x50, 0x41, 0x52, 0x31, 0x29, 0x2c, 0x48, 0x06, 0x73, 0x63, 0x68, 0x65, 0x6d, 0x61, 0x15,
        0x02, 0x00, 0x15, 0x0c, 0x25, 0x00, 0x18, 0x04, 0x74, 0x65, 0x78, 0x74, 0x00, 0x29, 0x1c,
        0x19, 0x1c, 0x3c, 0xcc, 0x75, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x25, 0x00, 0x00, 0x00,
        0x50, 0x41, 0x52, 0x31,
    ];

    /// Found by `cargo fuzz run parquet` (an AddressSanitizer out-of-memory report; minimized by
    /// hand): a footer whose key-value metadata list declares 2^31 - 1 elements. parquet 57
    /// reserves ~100 GB for it before reading an element (apache/arrow-rs#10920); the failed
    /// allocation aborts the process, which no `catch_unwind` can turn into an error.
    const HUGE_LIST: &[u8] = &[
        0x50, 0x41, 0x52, 0x31, 0x59, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00, 0x00, 0x09, 0x00,
        0x00, 0x00, 0x50, 0x41, 0x52, 0x31,
    ];

    /// Found by `cargo fuzz run parquet` (out of memory again, after the list-length check;
    /// minimized by hand): the schema (field 2, a list) is sent as a struct. parquet reads the
    /// struct's bytes as a list header declaring 2^31 - 1 schema elements.
    const SCHEMA_AS_STRUCT: &[u8] = &[
        0x50, 0x41, 0x52, 0x31, 0x2c, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00, 0x00, 0x09, 0x00,
        0x00, 0x00, 0x50, 0x41, 0x52, 0x31,
    ];

    /// Found by `cargo fuzz run parquet` (a 36 s "slow unit"; minimized by hand): an unknown footer
    /// field holding a list of 2^31 - 1 booleans. parquet 57's skip reads no byte per boolean in
    /// a list, so it spins through 2^31 iterations.
    const BOOLEAN_LIST: &[u8] = &[
        0x50, 0x41, 0x52, 0x31, 0xa9, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07, 0x00, 0x08, 0x00, 0x00,
        0x00, 0x50, 0x41, 0x52, 0x31,
    ];

    /// Hand-made (the fuzzer's inputs that made parquet panic while reading were too big to
    /// minimize): one utf8 column whose chunk has a negative `total_compressed_size`; parquet 57
    /// panics ("column start and length should not be negative") reading the first batch.
    const NEGATIVE_CHUNK: &[u8] = &[
        0x50, 0x41, 0x52, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x15,
        0x02, 0x19, 0x2c, 0x48, 0x06, 0x73, 0x63, 0x68, 0x65, 0x6d, 0x61, 0x15, 0x02, 0x00, 0x15,
        0x0c, 0x25, 0x00, 0x18, 0x04, 0x74, 0x65, 0x78, 0x74, 0x25, 0x00, 0x00, 0x16, 0x02, 0x19,
        0x1c, 0x19, 0x1c, 0x26, 0x08, 0x1c, 0x15, 0x0c, 0x19, 0x15, 0x00, 0x19, 0x18, 0x04, 0x74,
        0x65, 0x78, 0x74, 0x15, 0x00, 0x16, 0x02, 0x16, 0x14, 0x16, 0x13, 0x26, 0x08, 0x00, 0x00,
        0x16, 0x14, 0x16, 0x02, 0x00, 0x00, 0x43, 0x00, 0x00, 0x00, 0x50, 0x41, 0x52, 0x31,
    ];

    fn write(d: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// The error opening a corrupt file: a one-line `DataError::Parquet` naming the file.
    fn open_err(name: &str, bytes: &[u8]) -> String {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, name, bytes);
        let e = match ParquetReader::open(&p, "text") {
            Ok(_) => panic!("a corrupt footer opened"),
            Err(e) => e,
        };
        assert!(matches!(e, DataError::Parquet { .. }), "{e:?}");
        let s = e.to_string();
        assert!(s.contains(name), "{s}");
        assert!(!s.contains('\n'), "multi-line error: {s}");
        s
    }

    #[test]
    fn footer_list_longer_than_the_footer_is_an_error() {
        let s = open_err("huge.parquet", HUGE_LIST);
        assert!(s.contains("a list of 2147483647 elements"), "{s}");
    }

    #[test]
    fn footer_list_of_booleans_is_an_error() {
        let s = open_err("bools.parquet", BOOLEAN_LIST);
        assert!(s.contains("a list of 2147483647 elements"), "{s}");
    }

    #[test]
    fn footer_field_of_the_wrong_type_is_an_error() {
        let s = open_err("bool.parquet", BOOL_FIELD_AS_I32);
        assert!(s.contains("footer field 7"), "{s}");
        assert!(s.contains("wrong thrift type"), "{s}");
        let s = open_err("schema.parquet", SCHEMA_AS_STRUCT);
        assert!(s.contains("footer field 2"), "{s}");
    }

    #[test]
    fn panic_inside_parquet_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let p = write(&d, "negative.parquet", NEGATIVE_CHUNK);
        let docs: Vec<_> = ParquetReader::open(&p, "text").unwrap().collect();
        let [Err(e)] = docs.as_slice() else {
            panic!("expected one error, got {} items", docs.len());
        };
        assert!(matches!(e, DataError::Parquet { .. }), "{e:?}");
        let s = e.to_string();
        assert!(
            s.contains("negative.parquet: Parquet error at row 0"),
            "{s}"
        );
        assert!(s.contains("panicked (column start and length"), "{s}");
        assert!(!s.contains('\n'), "multi-line error: {s}");
    }

    /// The footer check accepts what the parquet writer produces: several row groups and columns,
    /// page statistics, bloom filters, sorting columns, key-value and Arrow schema metadata.
    #[test]
    fn footer_walk_accepts_written_files() {
        use std::sync::Arc;

        use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array};
        use parquet::arrow::ArrowWriter;
        use parquet::file::metadata::{KeyValue, SortingColumn};
        use parquet::file::properties::WriterProperties;

        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ok.parquet");
        let n = 1000;
        let text: Vec<Option<String>> = (0..n)
            .map(|i| (i % 7 != 3).then(|| format!("doc {i}")))
            .collect();
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            ),
            ("text", Arc::new(StringArray::from(text)) as ArrayRef),
            (
                "x",
                Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| i as f64 / 3.0),
                )),
            ),
            (
                "b",
                Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)))),
            ),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_size(100)
            .set_bloom_filter_enabled(true)
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: true,
            }]))
            .set_key_value_metadata(Some(vec![KeyValue::new("k".into(), "v".to_string())]))
            .build();
        let mut w =
            ArrowWriter::try_new(File::create(&p).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        check_footer(&p, &mut File::open(&p).unwrap()).unwrap();
        let docs: Vec<_> = ParquetReader::open(&p, "text").unwrap().collect();
        assert_eq!(docs.len(), 4, "rows 0..2, then the null in row 3");
        assert!(docs[..3].iter().all(Result::is_ok));
        assert!(matches!(docs[3], Err(DataError::NullText { row: 3, .. })));
    }
}
