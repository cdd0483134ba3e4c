//! What a real GGUF says it is: the loader's file type (`ModelInfo.quantization`, reported as
//! `summary.json` `dtype`) and per-type tensor counts (`tensor_types`, reported as
//! `dtype_tensors`) equal what the `gguf` Python package reads from the same files
//! (`scripts/references/ref_gguf_tensor_types.py` -> `tests/data/gguf_tensor_types.json`).

mod common;

use std::collections::BTreeMap;

use common::*;

fn check(key: &str, file: &str, fetch: &str) {
    let reference = read_json(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf_tensor_types.json"),
    );
    let want = &reference["models"][key];
    assert_eq!(want["file"], file);
    let path = surprisal_testkit::cached_model(file, fetch);
    let loaded = load_gguf(&path).unwrap();
    assert_eq!(
        loaded.info.quantization.as_deref(),
        want["file_type_name"].as_str(),
        "{key}: file type"
    );
    let want_types: BTreeMap<String, usize> =
        serde_json::from_value(want["tensor_types"].clone()).unwrap();
    assert_eq!(loaded.info.tensor_types, want_types, "{key}: tensor types");
    assert_eq!(
        loaded.info.tensor_types.values().sum::<usize>(),
        want["tensors"].as_u64().unwrap() as usize
    );
}

#[test]
fn smollm2_q4_1_file_and_tensor_types() {
    check(
        "smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "fetch_smollm2.sh",
    );
}

/// A mixed file: Q4_K_M is no tensor type; its tensors are Q4_K, Q5_0, Q6_K, Q8_0 and F32.
#[test]
fn gemma3_q4_k_m_file_and_tensor_types() {
    check("gemma3", "gemma-3-270m-q4_k_m.gguf", "fetch_gemma3.sh");
}
