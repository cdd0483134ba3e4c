//! A JSON Lines corpus read through the runner's public reader (`data::open` on a `.jsonl` path,
//! `--text-field text`), every document to the end of the stream.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::read_corpus("corpus.jsonl", data);
});
