//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use surprisal_models::{CausalLm, LoadOptions, TextTokenizer};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn cpu_f32() -> LoadOptions {
    LoadOptions {
        device: Device::Cpu,
        dtype: DType::F32,
        dequantize: false,
    }
}

pub fn read_json(p: &Path) -> Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn u32_rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

pub fn f64_rows(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

pub fn f64_vec(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Per-row (target log-probs, entropies) for every position but the last, from ONE right-padded
/// batch; logits are computed `chunk` rows at a time and log-softmaxed in f64.
pub fn score_rows(
    model: &CausalLm,
    rows: &[Vec<u32>],
    chunk: usize,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let t = rows.iter().map(Vec::len).max().unwrap();
    let lengths: Vec<usize> = rows.iter().map(Vec::len).collect();
    let mut flat = Vec::with_capacity(rows.len() * t);
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(0u32, t - r.len()));
    }
    let ids = Tensor::from_vec(flat, (rows.len(), t), model.device()).unwrap();
    let hidden = model.forward_hidden(&ids, &lengths).unwrap();
    assert_eq!(hidden.dims(), &[rows.len(), t, model.hidden_size()]);
    let mut lps = Vec::new();
    let mut ents = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let n = row.len() - 1;
        let mut lp = Vec::with_capacity(n);
        let mut ent = Vec::with_capacity(n);
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let h = hidden.get(r).unwrap().narrow(0, start, len).unwrap();
            let logits = model.logits(&h).unwrap();
            assert_eq!(logits.dtype(), DType::F32);
            let logits: Vec<Vec<f32>> = logits.to_vec2().unwrap();
            for (i, l) in logits.iter().enumerate() {
                let (lsm, e) = log_softmax_f64(l);
                lp.push(lsm[row[start + i + 1] as usize]);
                ent.push(e);
            }
            start += len;
        }
        lps.push(lp);
        ents.push(ent);
    }
    (lps, ents)
}

pub fn log_softmax_f64(l: &[f32]) -> (Vec<f64>, f64) {
    let m = l.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
    let z: f64 = l.iter().map(|&x| (x as f64 - m).exp()).sum();
    let lz = m + z.ln();
    let lsm: Vec<f64> = l.iter().map(|&x| x as f64 - lz).collect();
    let ent = -lsm.iter().map(|&x| x.exp() * x).sum::<f64>();
    (lsm, ent)
}

/// (max |a-b|, mean |a-b|)
pub fn diff_stats(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let max = d.iter().cloned().fold(0.0, f64::max);
    (max, d.iter().sum::<f64>() / d.len().max(1) as f64)
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Converts a fixture directory into a GGUF file the way llama.cpp's `convert_hf_to_gguf.py` does
/// for its architecture: tensors renamed with the crate's own map (`arch::gguf_tensor_name`, the
/// one the loader uses); Llama's Q/K rows permuted for interleaved RoPE; Gemma's norm weights
/// stored as `1 + w`; metadata under llama.cpp's keys (written here by hand, from the converter);
/// tokenizer stored as `tokenizer.ggml.*` (gpt2). 2-D weights are stored as `quant`; norms stay F32.
pub fn fixture_to_gguf(dir: &Path, out: &Path, quant: GgmlDType) {
    let cfg = read_json(&dir.join("config.json"));
    let class = cfg["architectures"][0].as_str().unwrap().to_string();
    let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (hidden, heads, kv, layers) = (
        u("hidden_size"),
        u("num_attention_heads"),
        u("num_key_value_heads"),
        u("num_hidden_layers"),
    );
    let head_dim = cfg["head_dim"]
        .as_u64()
        .map(|x| x as usize)
        .unwrap_or(hidden / heads);
    let (arch, permute_qk, norm_shift) = match class.as_str() {
        "LlamaForCausalLM" | "MistralForCausalLM" => ("llama", true, false),
        "Gemma3ForCausalLM" => ("gemma3", false, true),
        "Gemma2ForCausalLM" => ("gemma2", false, true),
        "Phi3ForCausalLM" => ("phi3", false, false),
        other => panic!("no GGUF conversion for {other}"),
    };
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let permute = |w: &Tensor, n_head: usize| -> Tensor {
        let (out_dim, in_dim) = w.dims2().unwrap();
        // (n_head, 2, hd/2, in) -> (n_head, hd/2, 2, in)
        w.reshape((n_head, 2, out_dim / n_head / 2, in_dim))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((out_dim, in_dim))
            .unwrap()
    };
    let mut qts: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in &tensors {
        let gname = surprisal_models::arch::gguf_tensor_name(&class, name)
            .unwrap_or_else(|| panic!("{class}: no GGUF name for {name}"));
        let t = if permute_qk && name.ends_with("self_attn.q_proj.weight") {
            permute(t, heads)
        } else if permute_qk && name.ends_with("self_attn.k_proj.weight") {
            permute(t, kv)
        } else if norm_shift && name.ends_with("norm.weight") {
            (t + 1.0).unwrap()
        } else {
            t.clone()
        };
        let q = if t.rank() == 2 { quant } else { GgmlDType::F32 };
        qts.push((gname, QTensor::quantize(&t, q).unwrap()));
    }
    qts.sort_by(|a, b| a.0.cmp(&b.0));

    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let vocab = tok.vocab_by_id();
    let merges = tok.merges();
    let tj = read_json(&dir.join("tokenizer.json"));
    let special: Vec<u64> = tj["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["special"].as_bool().unwrap_or(false))
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    use gguf_file::Value as V;
    let k = |s: &str| format!("{arch}.{s}");
    let f = |key: &str| V::F32(cfg[key].as_f64().unwrap() as f32);
    let rope_theta = cfg["rope_theta"]
        .as_f64()
        .or_else(|| cfg["rope_parameters"]["rope_theta"].as_f64())
        .or_else(|| cfg["rope_parameters"]["full_attention"]["rope_theta"].as_f64())
        .unwrap();
    let mut md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        (
            k("context_length"),
            V::U32(u("max_position_embeddings") as u32),
        ),
        (k("embedding_length"), V::U32(hidden as u32)),
        (k("block_count"), V::U32(layers as u32)),
        (
            k("feed_forward_length"),
            V::U32(u("intermediate_size") as u32),
        ),
        (k("attention.head_count"), V::U32(heads as u32)),
        (k("attention.head_count_kv"), V::U32(kv as u32)),
        (k("rope.freq_base"), V::F32(rope_theta as f32)),
        (k("attention.layer_norm_rms_epsilon"), f("rms_norm_eps")),
    ];
    match arch {
        "llama" => md.push((k("rope.dimension_count"), V::U32(head_dim as u32))),
        "gemma3" | "gemma2" => {
            md.push((k("attention.key_length"), V::U32(head_dim as u32)));
            md.push((k("attention.value_length"), V::U32(head_dim as u32)));
            md.push((
                k("attention.sliding_window"),
                V::U32(u("sliding_window") as u32),
            ));
            if arch == "gemma2" {
                md.push((k("attn_logit_softcapping"), f("attn_logit_softcapping")));
                md.push((k("final_logit_softcapping"), f("final_logit_softcapping")));
            }
        }
        "phi3" => {
            let factor = cfg["partial_rotary_factor"].as_f64().unwrap_or(1.0);
            let rot = (head_dim as f64 * factor) as u32;
            md.push((k("rope.dimension_count"), V::U32(rot)));
            md.push((
                k("rope.scaling.original_context_length"),
                V::U32(u("original_max_position_embeddings") as u32),
            ));
            // LongRoPE: llama.cpp's converter stores the factors as tensors and the attention
            // factor (sqrt(1 + ln(max / original) / ln(original))) as a key
            let rs = &cfg["rope_scaling"];
            if rs["rope_type"].as_str() == Some("longrope") {
                for (tensor, key) in [
                    ("rope_factors_long.weight", "long_factor"),
                    ("rope_factors_short.weight", "short_factor"),
                ] {
                    let v: Vec<f32> = rs[key]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect();
                    let n = v.len();
                    let t = Tensor::from_vec(v, n, &Device::Cpu).unwrap();
                    let q = QTensor::quantize(&t, GgmlDType::F32).unwrap();
                    qts.push((tensor.to_string(), q));
                }
                let scale = u("max_position_embeddings") as f64
                    / u("original_max_position_embeddings") as f64;
                let orig = u("original_max_position_embeddings") as f64;
                let attn = (1.0 + scale.ln() / orig.ln()).sqrt();
                md.push((k("rope.scaling.attn_factor"), V::F32(attn as f32)));
            }
        }
        _ => unreachable!(),
    }
    md.extend([
        ("tokenizer.ggml.model".into(), V::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), V::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            V::Array(vocab.iter().map(|s| V::String(s.clone())).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            V::Array(merges.iter().map(|s| V::String(s.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            V::Array(
                (0..vocab.len())
                    .map(|i| V::I32(if special.contains(&(i as u64)) { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id".into(), V::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), V::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), V::Bool(false)),
    ]);
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qts.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut f, &md_refs, &t_refs).unwrap();
}
