//! SmolLM2-135M-Instruct (Q4_1 GGUF) against the committed references:
//! - our GGUF tokenizer reproduces the reference token ids;
//! - dequantized to f32 vs transformers f32: mean |Δnll| ≤ 2e-4, max ≤ 5e-3;
//! - quantized kernels vs llama.cpp: mean |Δnll| ≤ 0.01.
//!
//! The model file comes from `bash scripts/fetch_smollm2.sh`; these tests fail (never skip) without it.

mod common;

use std::path::PathBuf;

use common::*;
use surprisal_models::{load, LoadedModel, ModelSource};

fn gguf_path() -> PathBuf {
    surprisal_testkit::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", "fetch_smollm2.sh")
}

fn reference(name: &str) -> serde_json::Value {
    let name = if name == "smollm2_llamacpp.json" {
        llamacpp_reference()
    } else {
        name
    };
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    assert!(p.is_file(), "{} is missing", p.display());
    read_json(&p)
}

/// llama.cpp's numbers depend on the vector width it was built for (tinyBLAS and softmax lanes,
/// `ggml_v_expf`'s variant), and our llama.cpp-order ops follow this host's (AVX-512F or not), so
/// the reference is the one made with a llama.cpp built for a host of the same kind:
/// `smollm2_llamacpp.json` on an AVX-512 host (AMD EPYC Zen 4), `smollm2_llamacpp_avx2.json` on an
/// AVX2-only one (AMD EPYC, 2026-12-07; same script, `--out`). Against the other kind's reference
/// the mean |Δnll| is 0.059 (ulp-level differences amplified through 30 re-quantized layers).
fn llamacpp_reference() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if !is_x86_feature_detected!("avx512f") {
        return "smollm2_llamacpp_avx2.json";
    }
    "smollm2_llamacpp.json"
}

fn load_smollm2(dequantize: bool) -> LoadedModel {
    let mut opts = cpu_f32();
    opts.dequantize = dequantize;
    load(
        &ModelSource::Gguf {
            path: gguf_path(),
            tokenizer_json: None,
        },
        &opts,
    )
    .unwrap()
}

fn text_of(r: &serde_json::Value) -> String {
    let p = repo_root().join(r["text_path"].as_str().unwrap());
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ids_of(r: &serde_json::Value) -> Vec<u32> {
    r["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn nll_against(name: &str, dequantize: bool) -> (f64, f64) {
    let r = reference(name);
    let ids = ids_of(&r);
    let want: Vec<f64> = f64_vec(&r["nll_nats"]);
    let loaded = load_smollm2(dequantize);
    let (lps, _) = score_rows(&loaded.model, std::slice::from_ref(&ids), 256);
    let got: Vec<f64> = lps[0].iter().map(|x| -x).collect();
    let (max, mean) = diff_stats(&got, &want);
    let mean_nll = got.iter().sum::<f64>() / got.len() as f64;
    println!(
        "{name} (dequantize={dequantize}): {} tokens, our mean nll {mean_nll:.6}, max|Δ| {max:.3e}, mean|Δ| {mean:.3e}",
        ids.len()
    );
    (max, mean)
}

#[test]
fn smollm2_metadata() {
    let m = load_smollm2(false);
    assert_eq!(m.info.architecture, "LlamaForCausalLM");
    assert_eq!(m.info.vocab_size, 49152);
    assert_eq!(m.info.hidden_size, 576);
    assert_eq!(m.info.num_layers, 30);
    assert_eq!(m.info.max_position_embeddings, 8192);
    assert_eq!(m.info.bos_token_id, Some(1));
    assert_eq!(m.info.eos_token_id, Some(2));
    assert!(!m.info.add_bos_token);
    assert_eq!(m.info.quantization.as_deref(), Some("Q4_1"));
    assert_eq!(m.tokenizer.vocab_size(), 49152);
    println!("{:?}", m.info);
}

#[test]
fn smollm2_tokenizer_matches_reference_ids() {
    let m = load_smollm2(false);
    for name in ["smollm2_transformers.json", "smollm2_llamacpp.json"] {
        let r = reference(name);
        let text = text_of(&r);
        let enc = m.tokenizer.encode(&text).unwrap();
        let want = ids_of(&r);
        if enc.ids != want {
            let i = enc
                .ids
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(enc.ids.len().min(want.len()));
            panic!(
                "{name}: token {i} differs: ours {:?} vs reference {:?} (lengths {} vs {})",
                &enc.ids[i..(i + 5).min(enc.ids.len())],
                &want[i..(i + 5).min(want.len())],
                enc.ids.len(),
                want.len()
            );
        }
        // Byte spans cover the text in order.
        assert_eq!(enc.byte_spans.len(), enc.ids.len());
        assert!(enc.byte_spans.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(enc.byte_spans.last().unwrap().1 <= text.len());
    }
}

#[test]
fn smollm2_dequantized_matches_transformers() {
    let (max, mean) = nll_against("smollm2_transformers.json", true);
    assert!(mean <= 2e-4, "mean |Δnll| = {mean}");
    assert!(max <= 5e-3, "max |Δnll| = {max}");
}

/// The target from the brief: met with ggml's kernels and llama.cpp's non-matmul ops (the default for
/// quantized GGUF on the CPU), which reproduce llama.cpp's per-token NLLs to ~1e-13.
#[test]
fn smollm2_quantized_matches_llamacpp() {
    let (_max, mean) = nll_against("smollm2_llamacpp.json", false);
    assert!(mean <= 0.01, "mean |Δnll| = {mean}");
}

/// What the quantized path does achieve against llama.cpp (guards against regressions): the same
/// mean NLL to 5e-3, and per-token differences of the size quantization noise explains.
#[test]
fn smollm2_quantized_close_to_llamacpp() {
    let r = reference("smollm2_llamacpp.json");
    let want_mean = r["mean_nll_nats"].as_f64().unwrap();
    let ids = ids_of(&r);
    let want: Vec<f64> = f64_vec(&r["nll_nats"]);
    let loaded = load_smollm2(false);
    let (lps, _) = score_rows(&loaded.model, std::slice::from_ref(&ids), 256);
    let got: Vec<f64> = lps[0].iter().map(|x| -x).collect();
    let (max, mean) = diff_stats(&got, &want);
    let got_mean = got.iter().sum::<f64>() / got.len() as f64;
    println!("quantized vs llama.cpp: mean nll {got_mean:.6} vs {want_mean:.6}; per token max|Δ| {max:.3e} mean|Δ| {mean:.3e}");
    assert!(
        (got_mean - want_mean).abs() <= 5e-3,
        "mean nll {got_mean} vs llama.cpp {want_mean}"
    );
    assert!(mean <= 0.08, "mean |Δnll| = {mean}");
}
