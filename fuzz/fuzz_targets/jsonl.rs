//! A JSON Lines corpus read through the runner's public reader (`data::open` on a `.jsonl` path,
//! `--text-field text`), every document to the end of the stream.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use surprisal_runner::data::{self, DataSpec, HfOptions};

fuzz_target!(|data: &[u8]| {
    let path = common::write("corpus.jsonl", data);
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
});
