//! Dataset readers: formats, semantics, and every error.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, LargeStringArray, RecordBatch, StringArray};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use surprisal_runner::data::{
    hf::matches_split, open, sha256_of, DataError, DataSource, DataSpec, HfOptions,
};
use surprisal_runner::Document;

fn spec(path: &Path) -> DataSpec {
    DataSpec::new(path.to_str().unwrap(), "text")
        .unwrap()
        .with_hf(offline(path))
}

fn offline(root: &Path) -> HfOptions {
    HfOptions {
        cache_dir: Some(root.to_path_buf()),
        offline: true,
    }
}

fn read_all(s: &DataSpec) -> Result<Vec<Document>, DataError> {
    open(s)?.collect()
}

fn texts(docs: &[Document]) -> Vec<&str> {
    docs.iter().map(|d| d.text.as_str()).collect()
}

fn err_of(s: &DataSpec) -> DataError {
    read_all(s).expect_err("expected an error")
}

fn write_parquet(path: &Path, cols: Vec<(&str, ArrayRef)>, rows_per_group: usize) {
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_size(rows_per_group)
        .build();
    let f = fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(f, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn one_line(e: &DataError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line error: {s}");
    assert!(s.contains("hint:"), "no hint: {s}");
    s
}

#[test]
fn plain_text_file_is_one_byte_exact_document() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.txt");
    let text = "  Hello,\r\nworld\t\n\n";
    fs::write(&p, text).unwrap();
    let docs = read_all(&spec(&p)).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].text, text);
    assert_eq!(docs[0].index, 0);
    assert_eq!(docs[0].source, p.display().to_string());
}

#[test]
fn directory_of_txt_sorted_non_recursive() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("b.txt"), "B").unwrap();
    fs::write(d.path().join("a.txt"), "A").unwrap();
    fs::write(d.path().join("c.TXT"), "C").unwrap();
    fs::write(d.path().join("notes.md"), "ignored").unwrap();
    fs::write(d.path().join("empty.txt"), "").unwrap();
    fs::create_dir(d.path().join("sub")).unwrap();
    fs::write(d.path().join("sub/z.txt"), "ignored").unwrap();
    let docs = read_all(&spec(d.path())).unwrap();
    assert_eq!(texts(&docs), ["A", "B", "C"]);
    assert_eq!(docs.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(docs[1].source.ends_with("b.txt"));
}

#[test]
fn jsonl_lines_blank_skipped_crlf_kept() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.jsonl");
    fs::write(
        &p,
        "{\"text\": \"one\\r\\ntwo \", \"id\": 1}\r\n\n   \n{\"id\":2,\"text\":\"é\"}\n{\"text\":\"\"}\n{\"text\":\" \\n\"}",
    )
    .unwrap();
    let docs = read_all(&spec(&p)).unwrap();
    assert_eq!(texts(&docs), ["one\r\ntwo ", "é", " \n"]);
    assert_eq!(docs[0].source, format!("{}:1", p.display()));
    assert_eq!(docs[1].source, format!("{}:4", p.display()));
    assert_eq!(docs[2].source, format!("{}:6", p.display()));
    assert_eq!(docs[2].index, 2);
    // .json is read as JSON Lines too; custom field.
    let p2 = d.path().join("y.json");
    fs::write(&p2, "{\"content\": \"c1\"}\n{\"content\": \"c2\"}\n").unwrap();
    let s = DataSpec::new(p2.to_str().unwrap(), "content").unwrap();
    assert_eq!(texts(&read_all(&s).unwrap()), ["c1", "c2"]);
}

#[test]
fn jsonl_streams_large_file_lazily() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("big.jsonl");
    let mut s = String::new();
    for i in 0..20_000 {
        s.push_str(&format!("{{\"text\":\"doc {i}\"}}\n"));
    }
    s.push_str("not json\n");
    fs::write(&p, s).unwrap();
    // The first documents come out before the bad last line is reached.
    let mut it = open(&spec(&p)).unwrap();
    assert_eq!(it.next().unwrap().unwrap().text, "doc 0");
    let rest: Vec<_> = it.collect();
    assert_eq!(rest.len(), 20_000);
    assert!(rest[19_998].is_ok());
    let e = rest[19_999].as_ref().unwrap_err().to_string();
    assert!(e.contains(":20001: not valid JSON"), "{e}");
}

#[test]
fn parquet_rows_batches_and_large_utf8() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.parquet");
    let n = 700; // > one record batch (256) and several row groups
    let text: Vec<String> = (0..n).map(|i| format!("row {i}\r\n")).collect();
    let ids: Vec<i64> = (0..n as i64).collect();
    write_parquet(
        &p,
        vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            (
                "text",
                Arc::new(StringArray::from(text.clone())) as ArrayRef,
            ),
        ],
        300,
    );
    let docs = read_all(&spec(&p)).unwrap();
    assert_eq!(docs.len(), n);
    assert_eq!(docs[699].text, "row 699\r\n");
    assert_eq!(docs[699].index, 699);
    assert_eq!(docs[512].source, format!("{}#row=512", p.display()));

    let p2 = d.path().join("l.parquet");
    write_parquet(
        &p2,
        vec![(
            "body",
            Arc::new(LargeStringArray::from(vec!["x", "", "y"])) as ArrayRef,
        )],
        10,
    );
    let s = DataSpec::new(p2.to_str().unwrap(), "body").unwrap();
    let docs = read_all(&s).unwrap();
    assert_eq!(texts(&docs), ["x", "y"]);
    assert_eq!(docs[1].source, format!("{}#row=2", p2.display()));
}

#[test]
fn sha256_single_and_multi() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.txt");
    fs::write(&p, "abc").unwrap();
    assert_eq!(
        sha256_of(&spec(&p)).unwrap(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    fs::write(d.path().join("b.txt"), "abc").unwrap();
    let h1 = sha256_of(&spec(d.path())).unwrap();
    assert_eq!(h1.len(), 64);
    fs::write(d.path().join("b.txt"), "abd").unwrap();
    assert_ne!(h1, sha256_of(&spec(d.path())).unwrap());
}

// ---------------------------------------------------------------- errors

#[test]
fn error_missing_path() {
    let d = tempfile::tempdir().unwrap();
    let e = open(&spec(&d.path().join("nope.jsonl"))).err().unwrap();
    assert!(matches!(e, DataError::NotFound { .. }));
    assert!(one_line(&e).contains("nope.jsonl"));
    assert!(sha256_of(&spec(&d.path().join("nope"))).is_err());
}

#[test]
fn error_empty_corpus() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("e.txt");
    fs::write(&p, "").unwrap();
    let e = err_of(&spec(&p));
    assert!(matches!(e, DataError::EmptyCorpus { .. }), "{e}");
    one_line(&e);
    let p = d.path().join("e.jsonl");
    fs::write(&p, "\n{\"text\":\"\"}\n\n").unwrap();
    let e = err_of(&spec(&p));
    assert!(one_line(&e).contains("1 document(s), all empty"), "{e}");
    let p = d.path().join("none.jsonl");
    fs::write(&p, "").unwrap();
    assert!(one_line(&err_of(&spec(&p))).contains("0 documents"));
    // Directory without .txt files.
    let sub = d.path().join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("a.md"), "x").unwrap();
    let e = open(&spec(&sub)).err().unwrap();
    assert!(one_line(&e).contains("no *.txt files"), "{e}");
}

#[test]
fn error_only_whitespace() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("w.txt");
    fs::write(&p, " \r\n\t ").unwrap();
    let e = err_of(&spec(&p));
    assert!(
        matches!(e, DataError::OnlyWhitespace { n_docs: 1, .. }),
        "{e}"
    );
    one_line(&e);
    // Whitespace documents before a real one are held back, then released.
    let p = d.path().join("w.jsonl");
    fs::write(
        &p,
        "{\"text\":\" \"}\n{\"text\":\"\\n\"}\n{\"text\":\"x\"}\n",
    )
    .unwrap();
    let docs = read_all(&spec(&p)).unwrap();
    assert_eq!(texts(&docs), [" ", "\n", "x"]);
    assert_eq!(docs[2].index, 2);
    // Nothing comes out before the error when all are whitespace.
    fs::write(&p, "{\"text\":\" \"}\n{\"text\":\"\\n\"}\n").unwrap();
    let mut it = open(&spec(&p)).unwrap();
    assert!(matches!(
        it.next(),
        Some(Err(DataError::OnlyWhitespace { n_docs: 2, .. }))
    ));
    assert!(it.next().is_none());
}

#[test]
fn error_not_utf8_text_and_jsonl() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.txt");
    fs::write(&p, b"ok\nline two \xff here\n").unwrap();
    let e = err_of(&spec(&p));
    match &e {
        DataError::NotUtf8 {
            line,
            byte_offset,
            byte,
            ..
        } => assert_eq!((*line, *byte_offset, *byte), (2, 12, 0xff)),
        _ => panic!("{e}"),
    }
    let s = one_line(&e);
    assert!(
        s.contains("bad.txt:2") && s.contains("byte offset 12"),
        "{s}"
    );

    let p = d.path().join("bad.jsonl");
    fs::write(&p, b"{\"text\":\"a\"}\n\n{\"text\":\"\xc3(\"}\n").unwrap();
    let r: Vec<_> = open(&spec(&p)).unwrap().collect();
    assert_eq!(r.len(), 2);
    let e = r[1].as_ref().unwrap_err();
    match e {
        DataError::NotUtf8 {
            line, byte_offset, ..
        } => assert_eq!((*line, *byte_offset), (3, 23)),
        _ => panic!("{e}"),
    }
    assert!(one_line(e).contains("bad.jsonl:3"));
}

#[test]
fn error_jsonl_not_json() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.jsonl");
    fs::write(&p, "{\"text\":\"a\"}\n{\"text\": tru}\n").unwrap();
    let r: Vec<_> = open(&spec(&p)).unwrap().collect();
    let e = r.last().unwrap().as_ref().unwrap_err();
    assert!(matches!(e, DataError::BadJson { line: 2, .. }), "{e}");
    let s = one_line(e);
    assert!(
        s.contains("x.jsonl:2: not valid JSON") && s.contains("column"),
        "{s}"
    );
    // A JSON array gets a conversion hint.
    let p = d.path().join("arr.json");
    fs::write(&p, "[\n{\"text\": \"a\"}\n]\n").unwrap();
    let s = one_line(&err_of(&spec(&p)));
    assert!(s.contains("arr.json:1") && s.contains("jq -c"), "{s}");
}

#[test]
fn error_jsonl_missing_or_non_string_field() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.jsonl");
    fs::write(&p, "{\"body\":\"a\",\"id\":3}\n").unwrap();
    let e = err_of(&spec(&p));
    let s = one_line(&e);
    assert!(matches!(e, DataError::BadTextField { line: 1, .. }));
    assert!(
        s.contains("x.jsonl:1: missing field \"text\"") && s.contains("[\"body\", \"id\"]"),
        "{s}"
    );
    fs::write(&p, "{\"text\":\"ok\"}\n{\"text\":5}\n").unwrap();
    let r: Vec<_> = open(&spec(&p)).unwrap().collect();
    let s = one_line(r[1].as_ref().unwrap_err());
    assert!(
        s.contains("x.jsonl:2: field \"text\" is a number, not a string") && s.contains("\"text\""),
        "{s}"
    );
    fs::write(&p, "\"just a string\"\n").unwrap();
    let s = one_line(&err_of(&spec(&p)));
    assert!(s.contains("not an object"), "{s}");
}

#[test]
fn error_parquet_missing_column_non_string_and_null() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.parquet");
    write_parquet(
        &p,
        vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
            (
                "content",
                Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
            ),
        ],
        10,
    );
    // Per-file errors (schema included) come out of the stream.
    let e = err_of(&spec(&p));
    let s = one_line(&e);
    assert!(matches!(e, DataError::MissingColumn { .. }));
    assert!(
        s.contains("no column \"text\"") && s.contains("[\"id\", \"content\"]"),
        "{s}"
    );
    let s = DataSpec::new(p.to_str().unwrap(), "id").unwrap();
    let e = err_of(&s);
    assert!(matches!(e, DataError::ColumnNotString { .. }), "{e}");
    one_line(&e);
    let s = DataSpec::new(p.to_str().unwrap(), "content").unwrap();
    let r: Vec<_> = open(&s).unwrap().collect();
    assert_eq!(r[0].as_ref().unwrap().text, "a");
    let e = r[1].as_ref().unwrap_err();
    assert!(one_line(e).contains("row 1"), "{e}");
    // Garbage file with a .parquet extension.
    let g = d.path().join("g.parquet");
    fs::write(&g, "not parquet").unwrap();
    let e = err_of(&spec(&g));
    assert!(matches!(e, DataError::Parquet { .. }), "{e}");
    one_line(&e);
}

// ---------------------------------------------------------------- hf://

fn parse(s: &str) -> DataSource {
    s.parse().unwrap()
}

#[test]
fn hf_spec_parsing() {
    assert_eq!(
        parse("hf://datasets/Salesforce/wikitext/wikitext-2-raw-v1/test"),
        DataSource::HfDataset {
            name: "Salesforce/wikitext".into(),
            config: Some("wikitext-2-raw-v1".into()),
            split: "test".into()
        }
    );
    assert_eq!(
        parse("hf://datasets/org/ds/train"),
        DataSource::HfDataset {
            name: "org/ds".into(),
            config: None,
            split: "train".into()
        }
    );
    assert_eq!(
        parse("hf://datasets/legacy/validation"),
        DataSource::HfDataset {
            name: "legacy".into(),
            config: None,
            split: "validation".into()
        }
    );
    assert_eq!(
        parse("data/x.jsonl"),
        DataSource::Path("data/x.jsonl".into())
    );
    for bad in [
        "hf://models/x/y",
        "hf://datasets/x",
        "hf://datasets/a/b/c/d/e",
        "hf://datasets/a//b",
        "",
    ] {
        let e = bad.parse::<DataSource>().unwrap_err();
        assert!(matches!(e, DataError::BadSpec { .. }), "{bad}");
        one_line(&e);
    }
    assert!(matches_split("cfg/test/0000.parquet", "cfg", "test"));
    assert!(matches_split(
        "cfg/partial-test/0000.parquet",
        "cfg",
        "test"
    ));
    assert!(matches_split(
        "cfg/test-00000-of-00002.parquet",
        "cfg",
        "test"
    ));
    assert!(!matches_split("cfg/test_extra-0.parquet", "cfg", "test"));
    assert!(!matches_split("other/test/0000.parquet", "cfg", "test"));
    assert!(matches_split(
        "data/train-00000-of-00001.parquet",
        "default",
        "train"
    ));
    assert!(matches_split("train.parquet", "default", "train"));
    assert!(!matches_split("data/train-0.parquet", "cfg", "train"));
    assert!(!matches_split("cfg/test/0000.json", "cfg", "test"));
}

/// A fake hub cache: `datasets--org--ds` with `ref` → snapshot, files.
fn fake_repo(root: &Path, ref_path: &str, commit: &str, files: &[(&str, &[&str])]) -> PathBuf {
    let repo = root.join("datasets--org--ds");
    let r = repo.join("refs").join(ref_path);
    fs::create_dir_all(r.parent().unwrap()).unwrap();
    fs::write(&r, commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    for (rel, rows) in files {
        let p = snap.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_parquet(
            &p,
            vec![(
                "text",
                Arc::new(StringArray::from(rows.to_vec())) as ArrayRef,
            )],
            100,
        );
    }
    snap
}

fn hf_spec(s: &str, root: &Path) -> DataSpec {
    DataSpec::new(s, "text").unwrap().with_hf(offline(root))
}

#[test]
fn hf_cache_main_layout() {
    let d = tempfile::tempdir().unwrap();
    fake_repo(
        d.path(),
        "main",
        "abc123",
        &[
            ("cfg/test-00001-of-00002.parquet", &["t3"]),
            ("cfg/test-00000-of-00002.parquet", &["t1", "t2"]),
            ("cfg/train-00000-of-00001.parquet", &["nope"]),
            ("data/test-00000-of-00001.parquet", &["default test"]),
        ],
    );
    let docs = read_all(&hf_spec("hf://datasets/org/ds/cfg/test", d.path())).unwrap();
    assert_eq!(texts(&docs), ["t1", "t2", "t3"]);
    assert!(docs[2]
        .source
        .contains("snapshots/abc123/cfg/test-00001-of-00002.parquet#row=0"));
    let docs = read_all(&hf_spec("hf://datasets/org/ds/test", d.path())).unwrap();
    assert_eq!(texts(&docs), ["default test"]);
    let h = sha256_of(&hf_spec("hf://datasets/org/ds/cfg/test", d.path())).unwrap();
    assert_eq!(h.len(), 64);
}

#[test]
fn hf_cache_convert_parquet_layout() {
    for ref_path in ["refs/convert/parquet", "convert/parquet"] {
        let d = tempfile::tempdir().unwrap();
        fake_repo(
            d.path(),
            ref_path,
            "def456",
            &[
                ("cfg/validation/0001.parquet", &["v2"]),
                ("cfg/validation/0000.parquet", &["v1"]),
                ("cfg/test/0000.parquet", &["x"]),
            ],
        );
        let docs = read_all(&hf_spec("hf://datasets/org/ds/cfg/validation", d.path())).unwrap();
        assert_eq!(texts(&docs), ["v1", "v2"], "{ref_path}");
    }
}

#[test]
fn error_hf_not_cached_offline() {
    let d = tempfile::tempdir().unwrap();
    let e = open(&hf_spec("hf://datasets/org/ds/cfg/test", d.path()))
        .err()
        .unwrap();
    assert!(matches!(e, DataError::HfNotCached { .. }));
    let s = one_line(&e);
    assert!(
        s.contains("hf://datasets/org/ds/cfg/test") && s.contains("offline"),
        "{s}"
    );
    // Repo cached, but not this split.
    fake_repo(
        d.path(),
        "main",
        "abc",
        &[("cfg/train/0000.parquet", &["a"])],
    );
    let e = open(&hf_spec("hf://datasets/org/ds/cfg/test", d.path()))
        .err()
        .unwrap();
    let s = one_line(&e);
    assert!(s.contains("has no cfg/test parquet files"), "{s}");
}
