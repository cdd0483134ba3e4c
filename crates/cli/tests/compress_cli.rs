//! `surprisal compress` / `decompress` through the binary: a byte-exact round trip with a fixture
//! model, and the one-line errors (exit 2, the file named, no output written) for another model,
//! a damaged file and a truncated one.

use std::path::Path;
use std::process::Output;

use surprisal_testkit::{fixture, run_bin};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_surprisal"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exit 2 with one line on stderr that names `file` and contains `what`.
fn assert_one_line_error(out: &Output, file: &Path, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(s(file)), "the file is not named: {err}");
    assert!(err.contains(what), "expected {what:?}: {err}");
}

#[test]
fn round_trip_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.bin");
    let mut bytes = std::fs::read(surprisal_testkit::dataset("tinyshakespeare.txt")).unwrap();
    bytes.truncate(700);
    bytes.extend_from_slice("\nnon-ASCII: \u{e9}\u{65e5}\u{1f389}\n\u{ff}".as_bytes());
    bytes.extend_from_slice(b"\xff\xfe invalid UTF-8\n");
    std::fs::write(&input, &bytes).unwrap();
    let sz = tmp.path().join("in.sz");
    let back = tmp.path().join("back.bin");
    let llama = fixture("llama");
    let out = run_bin(
        bin(),
        &[
            "compress",
            "--model",
            s(&llama),
            s(&input),
            "-o",
            s(&sz),
            "--window",
            "48",
            "--threads",
            "2",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_bin(
        bin(),
        &[
            "decompress",
            "--model",
            s(&llama),
            s(&sz),
            "-o",
            s(&back),
            "--threads",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&back).unwrap(), bytes);

    // another model
    let other = tmp.path().join("other.bin");
    let out = run_bin(
        bin(),
        &[
            "decompress",
            "--model",
            s(&fixture("qwen2")),
            s(&sz),
            "-o",
            s(&other),
        ],
    );
    assert_one_line_error(&out, &sz, "another model");
    assert!(!other.exists());

    // a flipped byte in the payload, and a truncated file
    let sz_bytes = std::fs::read(&sz).unwrap();
    let damaged = tmp.path().join("damaged.sz");
    let mut d = sz_bytes.clone();
    let mid = d.len() - 40;
    d[mid] ^= 0x10;
    std::fs::write(&damaged, &d).unwrap();
    let out = run_bin(
        bin(),
        &[
            "decompress",
            "--model",
            s(&llama),
            s(&damaged),
            "-o",
            s(&other),
        ],
    );
    assert_one_line_error(&out, &damaged, "corrupt");
    let truncated = tmp.path().join("truncated.sz");
    std::fs::write(&truncated, &sz_bytes[..sz_bytes.len() / 2]).unwrap();
    let out = run_bin(
        bin(),
        &[
            "decompress",
            "--model",
            s(&llama),
            s(&truncated),
            "-o",
            s(&other),
        ],
    );
    assert_one_line_error(&out, &truncated, "truncated");
    // not a .sz file at all
    let out = run_bin(
        bin(),
        &[
            "decompress",
            "--model",
            s(&llama),
            s(&input),
            "-o",
            s(&other),
        ],
    );
    assert_one_line_error(&out, &input, "not a surprisal compressed file");
    assert!(!other.exists());
}
