//! A Hugging Face model directory loaded with `surprisal_models::load` (`ModelSource::Dir`): the
//! input is `config.json`, optionally followed by [`SEPARATOR`] and `model.safetensors`; the
//! directory's `tokenizer.json` is the fixture tokenizer. A model that loads is run on a few tokens.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use surprisal_models::{load, LoadOptions, ModelSource};

/// Must match SEPARATOR in fuzz/make_seeds.py.
const SEPARATOR: &[u8] = b"\n@@model.safetensors@@\n";

fn split(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(i) => (&data[..i], Some(&data[i + SEPARATOR.len()..])),
        None => (data, None),
    }
}

fuzz_target!(|data: &[u8]| {
    let (config, weights) = split(data);
    let dir = common::scratch().join("model");
    if !dir.join("tokenizer.json").is_file() {
        common::write("model/tokenizer.json", common::FIXTURE_TOKENIZER);
    }
    common::write("model/config.json", config);
    let st = dir.join("model.safetensors");
    match weights {
        Some(w) => {
            common::write("model/model.safetensors", w);
        }
        None => {
            let _ = std::fs::remove_file(&st);
        }
    }
    let loaded = load(&ModelSource::Dir(dir), &LoadOptions::default());
    common::debug_load(&loaded);
    if let Ok(m) = loaded {
        common::exercise(&m);
    }
});
