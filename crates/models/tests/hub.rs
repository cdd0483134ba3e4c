//! Hub ids resolve from a local cache laid out like the Hugging Face one, without network access.

mod common;

use std::path::Path;

use common::*;
use surprisal_models::{load_with_hub_cache, ModelSource};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// <cache>/models--org--name/{refs/main, snapshots/<sha>/<files of fixture>}
fn make_cache(cache: &Path, repo: &str, fixture_name: &str) {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), SHA).unwrap();
    copy_dir(&fixture(fixture_name), &folder.join("snapshots").join(SHA));
}

#[test]
fn hub_id_loads_from_cache() {
    let tmp = tempfile::tempdir().unwrap();
    make_cache(tmp.path(), "tiny-org/tiny-llama", "llama_sharded");
    for s in [
        "tiny-org/tiny-llama",
        "tiny-org/tiny-llama@main",
        &format!("tiny-org/tiny-llama@{SHA}"),
    ] {
        let source = ModelSource::parse(s).unwrap();
        assert!(matches!(source, ModelSource::Hub { .. }), "{s}");
        let m = load_with_hub_cache(&source, &cpu_f32(), Some(tmp.path()))
            .unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(m.info.architecture, "LlamaForCausalLM");
        assert_eq!(m.info.weight_files.len(), 3);
        assert!(m.info.weight_files[0].starts_with(
            tmp.path()
                .join("models--tiny-org--tiny-llama/snapshots")
                .join(SHA)
        ));
        // Same fixture, same results as loading the directory directly.
        let reference = read_json(&fixture("llama_sharded").join("reference.json"));
        let rows = u32_rows(&reference["rows"]);
        let (lps, _) = score_rows(&m.model, &rows[1..], 64);
        let (max, _) = diff_stats(&lps[0], &f64_rows(&reference["target_logprobs"])[1]);
        assert!(max <= 1e-4, "{max}");
    }
}
