//! Helpers shared by the integration tests: the model-specific ones (load options, scoring,
//! diffs); paths, JSON, `copy_dir` and the HF→GGUF converter come from `surprisal-testkit`.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use surprisal_models::{load, CausalLm, LoadOptions, LoadedModel, ModelError, ModelSource};
#[allow(unused_imports)] // each test binary uses a different subset
pub use surprisal_testkit::{copy_dir, fixture, fixture_to_gguf, fixtures, read_json, repo_root};

pub fn cpu_f32() -> LoadOptions {
    LoadOptions {
        device: Device::Cpu,
        dtype: DType::F32,
        dequantize: false,
    }
}

/// A GGUF file on the CPU in f32, its tokenizer from the file.
pub fn load_gguf(path: &std::path::Path) -> Result<LoadedModel, ModelError> {
    load(
        &ModelSource::Gguf {
            path: path.to_path_buf(),
            tokenizer_json: None,
        },
        &cpu_f32(),
    )
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
