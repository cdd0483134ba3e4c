//! Shared helpers of the CLI integration tests: run the built `surprisal` binary, build broken inputs in
//! temp dirs from the tiny model fixtures, and check the "clean failure" contract.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde_json::Value;
#[allow(unused_imports)] // each test binary uses a different subset
pub use surprisal_testkit::{copy_dir, fixture, fixture_to_gguf, read_json, repo_root};

/// The binary under test (built by cargo for integration tests).
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_surprisal"))
}

/// Runs `surprisal <args>` with `--quiet`, logging kept at `warn`.
pub fn run(args: &[&str]) -> Output {
    surprisal_testkit::run_bin(&bin(), args)
}

/// A copy of fixture `name` at `dst`.
pub fn fixture_copy(name: &str, dst: &Path) -> PathBuf {
    copy_dir(&fixture(name), dst);
    dst.to_path_buf()
}

/// A few kB of real text (Shakespeare-like, as the fixtures' tokenizer was trained on).
pub const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n\
First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n\
First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\nAll:\nWe know't, we know't.\n\n\
First Citizen:\nLet us kill him, and we'll have corn at our own price.\nIs't a verdict?\n\n\
All:\nNo more talking on't; let it be done: away, away!\n\nSecond Citizen:\nOne word, good citizens.\n";

/// `TEXT` repeated `n` times.
pub fn text(n: usize) -> String {
    TEXT.repeat(n)
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> PathBuf {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
    path.to_path_buf()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The clean-failure contract: exit status 2 (never 101), no panic, exactly one `error: ` line that
/// contains every `needle`, and no `summary.json` in `out` (when given).
pub fn assert_clean_error(out: &Output, out_dir: Option<&Path>, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !stderr.contains("panicked"),
        "panic (status {:?}):\n{stderr}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(2), "exit status; stderr:\n{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "expected one `error: ` line:\n{stderr}");
    let line = errors[0];
    for n in needles {
        assert!(
            line.contains(n),
            "message lacks {n:?}:\n  {line}\n(stderr:\n{stderr})"
        );
    }
    if let Some(dir) = out_dir {
        assert!(
            !dir.join("summary.json").exists(),
            "summary.json written on failure: {line}"
        );
    }
    line.to_string()
}

pub fn assert_ok(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "expected success, got {:?}:\n{stderr}",
        out.status.code()
    );
}

/// Edits `dir/config.json`.
pub fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    edit_json(&dir.join("config.json"), |v| f(v.as_object_mut().unwrap()));
}

pub fn edit_json(p: &Path, f: impl FnOnce(&mut Value)) {
    let mut v = read_json(p);
    f(&mut v);
    std::fs::write(p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites `dir/model.safetensors` after `f` changed its tensors.
pub fn rewrite_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let p = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, &p).unwrap();
}

/// Swaps the ids of two ordinary tokens in `tokenizer.json`: same size, loads fine, different ids.
pub fn swap_tokenizer_ids(tokenizer_json: &Path, a: u64, b: u64) {
    edit_json(tokenizer_json, |v| {
        let vocab = v["model"]["vocab"].as_object_mut().unwrap();
        let ka = vocab
            .iter()
            .find(|(_, id)| id.as_u64() == Some(a))
            .unwrap()
            .0
            .clone();
        let kb = vocab
            .iter()
            .find(|(_, id)| id.as_u64() == Some(b))
            .unwrap()
            .0
            .clone();
        vocab.insert(ka, Value::from(b));
        vocab.insert(kb, Value::from(a));
    });
}

/// Offset of the ggml type id of tensor `name` in a GGUF file's tensor-info table
/// (name: u64 len + bytes, n_dims: u32, dims: u64 each, type: u32, offset: u64).
pub fn gguf_type_offset(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let at = find(bytes, &needle).unwrap_or_else(|| panic!("tensor {name} not in the GGUF"));
    let dims_at = at + needle.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    dims_at + 4 + 8 * n_dims
}

/// Replaces a metadata string value `old` (same length as `new`) that follows key `key`.
pub fn gguf_patch_string(bytes: &mut [u8], key: &str, old: &str, new: &str) {
    assert_eq!(old.len(), new.len());
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    needle.extend_from_slice(&8u32.to_le_bytes()); // GGUF value type: string
    needle.extend_from_slice(&(old.len() as u64).to_le_bytes());
    needle.extend_from_slice(old.as_bytes());
    let at = find(bytes, &needle).unwrap_or_else(|| panic!("{key} = {old} not in the GGUF"));
    let v = at + needle.len() - old.len();
    bytes[v..v + new.len()].copy_from_slice(new.as_bytes());
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes a one-row-group Parquet file with the given string columns.
pub fn write_parquet(path: &Path, cols: &[(&str, Vec<&str>)]) {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    let arrays: Vec<(&str, ArrayRef)> = cols
        .iter()
        .map(|(n, v)| (*n, Arc::new(StringArray::from(v.clone())) as ArrayRef))
        .collect();
    let batch = RecordBatch::try_from_iter(arrays).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Metrics of a summary.json without the fields that legitimately differ between runs.
pub fn summary_numbers(p: &Path) -> Value {
    let mut v = read_json(p);
    strip_volatile(&mut v);
    v
}

fn strip_volatile(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for k in [
                "started_at",
                "finished_at",
                "elapsed_seconds",
                "tokens_per_second",
                "duration_seconds",
            ] {
                m.remove(k);
            }
            for (_, x) in m.iter_mut() {
                strip_volatile(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_volatile),
        _ => {}
    }
}
