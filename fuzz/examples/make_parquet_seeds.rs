//! Writes the Parquet seed corpus, fuzz/seeds/parquet/*.parquet (a few hundred bytes each):
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_parquet_seeds` (no pyarrow here).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray, StringViewArray,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

fn write(path: &Path, cols: Vec<(&str, ArrayRef)>, props: WriterProperties) {
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let f = fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/parquet");
    fs::create_dir_all(&out).unwrap();
    let texts = [
        "Hello world.",
        "",
        "  ",
        "second\r\ndocument\n",
        "ünïcödé ✓",
        "x",
    ];
    let small_groups = || {
        WriterProperties::builder()
            .set_max_row_group_size(2)
            .build()
    };
    write(
        &out.join("utf8_two_columns.parquet"),
        vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..6)) as ArrayRef,
            ),
            (
                "text",
                Arc::new(StringArray::from_iter_values(texts)) as ArrayRef,
            ),
        ],
        small_groups(),
    );
    write(
        &out.join("large_utf8_snappy.parquet"),
        vec![(
            "text",
            Arc::new(LargeStringArray::from_iter_values(texts)) as ArrayRef,
        )],
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .build(),
    );
    write(
        &out.join("utf8_view.parquet"),
        vec![(
            "text",
            Arc::new(StringViewArray::from_iter_values(texts)) as ArrayRef,
        )],
        small_groups(),
    );
    write(
        &out.join("with_null.parquet"),
        vec![(
            "text",
            Arc::new(StringArray::from(vec![Some("a"), None, Some("b")])) as ArrayRef,
        )],
        WriterProperties::builder().build(),
    );
    write(
        &out.join("no_text_column.parquet"),
        vec![(
            "body",
            Arc::new(StringArray::from_iter_values(["a", "b"])) as ArrayRef,
        )],
        WriterProperties::builder().build(),
    );
    write(
        &out.join("text_not_string.parquet"),
        vec![(
            "text",
            Arc::new(Int64Array::from_iter_values(0..3)) as ArrayRef,
        )],
        WriterProperties::builder().build(),
    );
    println!("wrote {}", out.display());
}
