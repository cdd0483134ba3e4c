//! Shared by the fuzz targets: a scratch directory (on tmpfs when there is one) that the inputs are
//! written to, since the entry points under test take paths, and a small smoke test of a model
//! that loaded.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, IndexOp, Tensor};
use surprisal_models::LoadedModel;

/// The fixture tokenizer (byte-level BPE, 384 tokens) used next to fuzzed `config.json`s.
pub const FIXTURE_TOKENIZER: &[u8] =
    include_bytes!("../../../crates/models/tests/fixtures/tokenizer.json");

/// A per-process scratch directory, removed when the process exits normally.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let mut b = tempfile::Builder::new();
        b.prefix("surprisal-fuzz-");
        if shm.is_dir() {
            b.tempdir_in(shm)
        } else {
            b.tempdir()
        }
        .expect("cannot create the scratch directory")
    })
    .path()
}

/// Writes `data` to `name` under the scratch directory and returns its path.
pub fn write(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("cannot create a scratch sub-directory");
    }
    std::fs::write(&p, data).expect("cannot write the fuzz input");
    p
}

/// With `SURPRISAL_FUZZ_DEBUG` set, prints how loading went (to check that the seeds load and reach
/// the forward pass: `SURPRISAL_FUZZ_DEBUG=1 target/.../gguf seeds/gguf/*`).
pub fn debug_load(r: &surprisal_models::error::Result<LoadedModel>) {
    if std::env::var_os("SURPRISAL_FUZZ_DEBUG").is_none() {
        return;
    }
    match r {
        Ok(m) => eprintln!("DEBUG: loaded {:?}", m.info),
        Err(e) => eprintln!("DEBUG: load error: {e}"),
    }
}

/// Tokenizes a short text and runs a forward pass and the LM head over a few tokens: a model that
/// loads must be usable (errors are fine, panics are not).
pub fn exercise(m: &LoadedModel) {
    let _ = m.tokenizer.vocab_size();
    let _ = m.tokenizer.fingerprint();
    let Ok(enc) = m.tokenizer.encode("ab cd\nabc <|user|> e") else {
        return;
    };
    let _ = m.tokenizer.encode_with_special("a");
    for &id in enc.ids.iter().take(4) {
        let _ = m.tokenizer.token_text(id);
    }
    let ids: Vec<u32> = enc.ids.into_iter().take(6).collect();
    if ids.is_empty() {
        return;
    }
    let n = ids.len();
    let Ok(t) = Tensor::new(ids.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)) else {
        return;
    };
    let hidden = m.model.forward_hidden(&t, &[n]);
    let logits = hidden
        .as_ref()
        .ok()
        .and_then(|h| h.i(0).ok())
        .map(|rows| m.model.logits(&rows));
    if std::env::var_os("SURPRISAL_FUZZ_DEBUG").is_some() {
        eprintln!(
            "DEBUG: {n} tokens, forward: {:?}, logits: {:?}",
            hidden
                .as_ref()
                .map(|h| h.dims().to_vec())
                .map_err(|e| e.to_string()),
            logits.map(|l| l.map(|l| l.dims().to_vec()).map_err(|e| e.to_string()))
        );
    }
}

/// Writes `data` as the corpus file `name` and reads it through the runner's public reader
/// (`data::open`, `--text-field text`) to the end of the stream, then hashes it as a run does.
/// Errors are the expected outcome for most inputs; a panic is the bug.
pub fn read_corpus(name: &str, data: &[u8]) {
    use surprisal_runner::data::{self, DataSpec, HfOptions};
    let path = write(name, data);
    let spec = DataSpec::new(path.to_str().expect("utf-8 scratch path"), "text")
        .expect("a path is a valid --data spec")
        .with_hf(HfOptions {
            cache_dir: None,
            offline: true,
        });
    let stream = data::open(&spec).expect("the file exists");
    let debug = std::env::var_os("SURPRISAL_FUZZ_DEBUG").is_some();
    for doc in stream {
        match doc {
            Ok(d) => assert!(!d.text.is_empty(), "empty documents are skipped"),
            Err(e) if debug => eprintln!("DEBUG: {e}"),
            Err(_) => {}
        }
    }
    let _ = data::sha256_of(&spec);
}
