//! The output records, each defined once: [`TokenRow`] (`eval`), [`CompareRow`] (`compare`: a
//! token row plus the reference's columns) and [`WordRow`] (`--words`).
//!
//! [`record!`] turns one field list into the Rust struct (serde, so JSON lines read and write it),
//! the Arrow schema, the Arrow columns of a batch of rows and the rows of a read Arrow batch. A
//! field's Rust type decides its column ([`Column`]): `u64`/`usize` → `UInt64`, `u32` →
//! `UInt32`, `String` → `Utf8`, `f64` → nullable `Float64` (non-finite values are written as null:
//! JSON, which stages rows, has no NaN/inf, and null reads back as NaN), `Option<f64>` → nullable
//! `Float64`.
//!
//! # How to add a per-token statistic
//! Add the field to [`TokenRow`] (or to [`CompareRow`] when only `compare` has it) with its unit in
//! the name, fill it where the engine builds rows (`engine::mode`), and document it in
//! `docs/outputs.md`. Schema, parquet writer, parquet reader and JSON lines follow.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RunError};

/// A Rust field type with its Arrow column.
pub trait Column: Sized {
    /// Arrow type of the column.
    const DATA_TYPE: DataType;
    /// Whether the column may hold nulls.
    const NULLABLE: bool;
    /// The column of `values`.
    fn array<'a>(values: impl Iterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;
    /// The values of a read column (`None`: the column has another type).
    fn values(col: &dyn Array) -> Option<Vec<Self>>;
}

fn downcast<A: 'static>(col: &dyn Array) -> Option<&A> {
    col.as_any().downcast_ref::<A>()
}

impl Column for u64 {
    const DATA_TYPE: DataType = DataType::UInt64;
    const NULLABLE: bool = false;
    fn array<'a>(v: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(v.copied()))
    }
    fn values(col: &dyn Array) -> Option<Vec<Self>> {
        Some(downcast::<UInt64Array>(col)?.values().to_vec())
    }
}

impl Column for usize {
    const DATA_TYPE: DataType = DataType::UInt64;
    const NULLABLE: bool = false;
    fn array<'a>(v: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(v.map(|&x| x as u64)))
    }
    fn values(col: &dyn Array) -> Option<Vec<Self>> {
        let a = downcast::<UInt64Array>(col)?;
        a.values()
            .iter()
            .map(|&x| usize::try_from(x).ok())
            .collect()
    }
}

impl Column for u32 {
    const DATA_TYPE: DataType = DataType::UInt32;
    const NULLABLE: bool = false;
    fn array<'a>(v: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(v.copied()))
    }
    fn values(col: &dyn Array) -> Option<Vec<Self>> {
        Some(downcast::<UInt32Array>(col)?.values().to_vec())
    }
}

impl Column for String {
    const DATA_TYPE: DataType = DataType::Utf8;
    const NULLABLE: bool = false;
    fn array<'a>(v: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(v))
    }
    fn values(col: &dyn Array) -> Option<Vec<Self>> {
        let a = downcast::<StringArray>(col)?;
        Some((0..a.len()).map(|i| a.value(i).to_string()).collect())
    }
}

impl Column for f64 {
    const DATA_TYPE: DataType = DataType::Float64;
    const NULLABLE: bool = true;
    fn array<'a>(v: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(Float64Array::from_iter(
            v.map(|&x| Some(x).filter(|x| x.is_finite())),
        ))
    }
    fn values(col: &dyn Array) -> Option<Vec<Self>> {
        let a = downcast::<Float64Array>(col)?;
        Some(a.iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

impl Column for Option<f64> {
    const DATA_TYPE: DataType = DataType::Float64;
    const NULLABLE: bool = true;
    fn array<'a>(v: impl Iterator<Item = &'a Self>) -> ArrayRef {
        Arc::new(Float64Array::from_iter(
            v.map(|x| x.filter(|x| x.is_finite())),
        ))
    }
    fn values(col: &dyn Array) -> Option<Vec<Self>> {
        Some(downcast::<Float64Array>(col)?.iter().collect())
    }
}

/// A row type with an Arrow schema (see the module docs).
pub trait Record: Serialize + for<'de> Deserialize<'de> + Sized {
    /// The Arrow fields, in column order.
    fn fields() -> Vec<Field>;
    /// Appends the columns of `rows` (in [`Record::fields`] order).
    fn columns<'a>(rows: &[&'a Self], out: &mut Vec<ArrayRef>)
    where
        Self: 'a;
    /// The rows of `batch` (columns found by name).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>>;

    /// The Arrow record batch of `rows`.
    fn record_batch(rows: &[Self]) -> Result<RecordBatch> {
        let refs: Vec<&Self> = rows.iter().collect();
        let mut cols = Vec::new();
        Self::columns(&refs, &mut cols);
        let schema = Arc::new(arrow_schema::Schema::new(Self::fields()));
        RecordBatch::try_new(schema, cols).map_err(|e| RunError::Report(format!("arrow: {e}")))
    }
}

/// The column `name` of `batch` as `T` values.
pub fn column<T: Column>(batch: &RecordBatch, name: &str) -> Result<Vec<T>> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| RunError::Report(format!("no column {name:?}")))?;
    T::values(col.as_ref()).ok_or_else(|| {
        RunError::Report(format!(
            "column {name:?} has type {}, expected {}",
            col.data_type(),
            T::DATA_TYPE
        ))
    })
}

/// Defines a [`Record`]: the struct and its columns from one field list. `base` fields (one
/// flattened record, `flatten { pub name: Record }`, e.g. the token columns of a compare row)
/// come first in the schema.
macro_rules! record {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( flatten { $(#[$bmeta:meta])* pub $base:ident : $bty:ty } )?
            $( $(#[$fmeta:meta])* pub $field:ident : $fty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $( $(#[$bmeta])* #[serde(flatten)] pub $base: $bty, )?
            $( $(#[$fmeta])* pub $field: $fty, )*
        }

        impl $crate::output::records::Record for $name {
            fn fields() -> Vec<arrow_schema::Field> {
                let mut f: Vec<arrow_schema::Field> = Vec::new();
                $( f.extend(<$bty as $crate::output::records::Record>::fields()); let _ = stringify!($base); )?
                f.extend([$( arrow_schema::Field::new(
                    stringify!($field),
                    <$fty as $crate::output::records::Column>::DATA_TYPE,
                    <$fty as $crate::output::records::Column>::NULLABLE,
                ), )*]);
                f
            }
            fn columns<'a>(rows: &[&'a Self], out: &mut Vec<arrow_array::ArrayRef>)
            where
                Self: 'a,
            {
                $(
                    let base: Vec<&$bty> = rows.iter().map(|r| &r.$base).collect();
                    <$bty as $crate::output::records::Record>::columns(&base, out);
                )?
                $( out.push(<$fty as $crate::output::records::Column>::array(
                    rows.iter().map(|r| &r.$field),
                )); )*
            }
            fn from_batch(
                batch: &arrow_array::RecordBatch,
            ) -> $crate::error::Result<Vec<Self>> {
                $( let mut $base = <$bty as $crate::output::records::Record>::from_batch(batch)?.into_iter(); )?
                $( let mut $field = $crate::output::records::column::<$fty>(batch, stringify!($field))?.into_iter(); )*
                Ok((0..batch.num_rows())
                    .map(|_| $name {
                        $( $base: $base.next().expect("one per row"), )?
                        $( $field: $field.next().expect("one per row"), )*
                    })
                    .collect())
            }
        }
    };
}

/// JSON has no NaN/inf (serde_json writes them as `null`); read `null` back as NaN.
fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

record! {
    /// One scored token (`tokens.*` of `eval`; the first columns of `compare`'s).
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
    }
}

record! {
    /// One scored token of `compare`: the model's [`TokenRow`] plus the reference's columns.
    pub struct CompareRow {
        flatten {
            /// The model's columns.
            pub model: TokenRow
        }
        /// `KL(reference ‖ model)` (nats).
        #[serde(deserialize_with = "f64_or_nan")]
        pub kl_nats: f64,
        /// The reference's NLL (nats).
        #[serde(deserialize_with = "f64_or_nan")]
        pub ref_nll_nats: f64,
        /// The reference's arg-max.
        pub ref_top1_id: u32,
    }
}

record! {
    /// One output row per word (`words.*`, see [`crate::words`]).
    pub struct WordRow {
        /// Document index.
        pub doc: usize,
        /// 0-based index of the word in the document.
        pub word_index: usize,
        /// The word text (byte-exact slice of the document).
        pub word: String,
        /// First byte of the word.
        pub byte_start: usize,
        /// One past the last byte of the word.
        pub byte_end: usize,
        /// Number of tokens assigned to the word (see [`crate::words`]).
        pub n_tokens: usize,
        /// Σ token NLL of the word's tokens; `None` unless all were scored.
        pub surprisal_nats: Option<f64>,
        /// Leading-whitespace-corrected surprisal ([`crate::words`]).
        pub surprisal_corrected_nats: Option<f64>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(k: u64) -> TokenRow {
        TokenRow {
            doc: k,
            index: k + 1,
            token_id: 7,
            token: format!("t{k}"),
            byte_start: 0,
            byte_end: 3,
            nll_nats: 1.5 + k as f64,
            entropy_nats: f64::NAN,
            varentropy_nats2: 0.25,
            top1_id: 3,
            top1_prob: 0.5,
            target_rank: 2,
            context_len: 4,
        }
    }

    #[test]
    fn compare_rows_round_trip_through_arrow_with_typed_columns() {
        let rows: Vec<CompareRow> = (0..3)
            .map(|k| CompareRow {
                model: token(k),
                kl_nats: 0.1 * k as f64,
                ref_nll_nats: 2.0,
                ref_top1_id: 9,
            })
            .collect();
        let batch = CompareRow::record_batch(&rows).unwrap();
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names.len(), 16);
        assert_eq!(&names[13..], ["kl_nats", "ref_nll_nats", "ref_top1_id"]);
        let ty = |n: &str| batch.column_by_name(n).unwrap().data_type().clone();
        assert_eq!(ty("ref_top1_id"), DataType::UInt32);
        assert_eq!(ty("kl_nats"), DataType::Float64);
        let back = CompareRow::from_batch(&batch).unwrap();
        assert_eq!(back.len(), 3);
        assert!(back[1].model.entropy_nats.is_nan());
        assert_eq!(back[2].kl_nats, rows[2].kl_nats);
        assert_eq!(back[2].model.token, "t2");
    }

    #[test]
    fn eval_rows_have_no_compare_columns() {
        let names: Vec<String> = TokenRow::fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names.len(), 13);
        assert!(!names.iter().any(|n| n.contains("ref_") || n == "kl_nats"));
        let json = serde_json::to_string(&token(0)).unwrap();
        assert!(!json.contains("kl_nats"), "{json}");
    }
}
