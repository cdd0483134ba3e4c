//! A GGUF file, loaded the way `surprisal --model FILE.gguf` does (`surprisal_models::load`:
//! header and metadata via `gguf::GgufFile::open`, `arch::from_gguf`, `gguf::tokenizer`, vocabulary
//! check, `rope_freqs`, every weight), quantized and dequantized; a model that loads is then run
//! on a few tokens. Every 4th input (by length) also passes a `tokenizer.json` to compare with.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use surprisal_models::{load, LoadOptions, ModelSource};

fuzz_target!(|data: &[u8]| {
    let path = common::write("model.gguf", data);
    let tokenizer_json = if data.len() % 4 == 3 {
        Some(common::write("tokenizer.json", common::FIXTURE_TOKENIZER))
    } else {
        None
    };
    let source = ModelSource::Gguf {
        path,
        tokenizer_json,
    };
    let loaded = load(&source, &LoadOptions::default());
    common::debug_load(&loaded);
    let Ok(m) = loaded else {
        return;
    };
    common::exercise(&m);
    let dequantized = LoadOptions {
        dequantize: true,
        ..LoadOptions::default()
    };
    let loaded = load(&source, &dequantized);
    common::debug_load(&loaded);
    if let Ok(m) = loaded {
        common::exercise(&m);
    }
});
