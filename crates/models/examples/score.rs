//! Loads a model, reports load time, and optionally scores the `token_ids` of a reference JSON,
//! writing per-token NLLs. Used to measure load time / peak RSS:
//!   /usr/bin/time -v target/release/examples/score <model.gguf|dir|org/name> [--dequantize]
//!       [--ids reference.json] [--first N] [--out nll.json] [--chunk 256]
//!       [--tokenizer-json tokenizer.json]   (GGUF: instead of the tokenizer in its metadata)

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use surprisal_models::{load, LoadOptions, ModelSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let source = args
        .get(1)
        .ok_or("usage: score <source> [--dequantize] [--ids ref.json] [--out nll.json]")?;
    let flag = |f: &str| args.iter().position(|a| a == f);
    let value = |f: &str| flag(f).and_then(|i| args.get(i + 1)).cloned();
    let opts = LoadOptions {
        device: Device::Cpu,
        dtype: DType::F32,
        dequantize: flag("--dequantize").is_some(),
    };
    let t0 = Instant::now();
    let source = match (ModelSource::parse(source)?, value("--tokenizer-json")) {
        (ModelSource::Gguf { path, .. }, Some(t)) => ModelSource::Gguf {
            path,
            tokenizer_json: Some(t.into()),
        },
        (s, _) => s,
    };
    let loaded = load(&source, &opts)?;
    println!(
        "load: {:.3}s  {:?}",
        t0.elapsed().as_secs_f64(),
        loaded.info
    );
    let Some(ids_path) = value("--ids") else {
        return Ok(());
    };
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ids_path)?)?;
    let ids: Vec<u32> = r["token_ids"]
        .as_array()
        .ok_or("no token_ids")?
        .iter()
        .map(|x| x.as_u64().unwrap_or(0) as u32)
        .collect();
    // `--first N`: score a prefix only (with SURPRISAL_DUMP_DIR, to diff intermediates against
    // scripts/references/dump_llamacpp_tensors.py --n N).
    let mut ids = ids;
    if let Some(n) = value("--first") {
        ids.truncate(n.parse::<usize>()?);
    }
    let chunk: usize = value("--chunk")
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(256);
    let t1 = Instant::now();
    let n = ids.len();
    let hidden = loaded
        .model
        .forward_hidden(&Tensor::from_vec(ids.clone(), (1, n), &Device::Cpu)?, &[n])?;
    let t_fwd = t1.elapsed().as_secs_f64();
    let mut nll = Vec::with_capacity(n - 1);
    let mut start = 0;
    while start < n - 1 {
        let len = chunk.min(n - 1 - start);
        let logits: Vec<Vec<f32>> = loaded
            .model
            .logits(&hidden.get(0)?.narrow(0, start, len)?)?
            .to_vec2()?;
        for (i, l) in logits.iter().enumerate() {
            let m = l.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let lz = m + l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
            nll.push(lz - l[ids[start + i + 1] as usize] as f64);
        }
        start += len;
    }
    println!(
        "forward {n} tokens: {t_fwd:.2}s, total scoring {:.2}s, mean nll {:.6}",
        t1.elapsed().as_secs_f64(),
        nll.iter().sum::<f64>() / nll.len() as f64
    );
    if let Some(out) = value("--out") {
        std::fs::write(
            out,
            serde_json::to_string(&serde_json::json!({ "nll_nats": nll }))?,
        )?;
    }
    Ok(())
}
