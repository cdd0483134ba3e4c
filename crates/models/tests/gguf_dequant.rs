//! Dequantization of every GGUF weight type we load equals the `gguf` Python package's
//! `gguf.quants.dequantize` (an implementation independent of ggml's C and of ours) bit for bit,
//! on random blocks made by `scripts/references/ref_gguf_dequant.py` (seed and versions in the
//! manifest). Two paths are checked per type: candle's `QTensor::dequantize` (what `--dequantize`
//! and the candle fallback kernels use) and, for the types with ggml-order kernels, the packed
//! weight's `dequantize_row` (what a quantized token-embedding lookup uses, as ggml's `get_rows`).

use std::path::PathBuf;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType};
use candle_core::Device;
use surprisal_models::ggml_cpu::GgmlMatMul;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/gguf_dequant")
}

fn dtype(name: &str) -> Option<GgmlDType> {
    Some(match name {
        "F16" => GgmlDType::F16,
        "BF16" => GgmlDType::BF16,
        "Q4_0" => GgmlDType::Q4_0,
        "Q4_1" => GgmlDType::Q4_1,
        "Q5_0" => GgmlDType::Q5_0,
        "Q5_1" => GgmlDType::Q5_1,
        "Q8_0" => GgmlDType::Q8_0,
        "Q2_K" => GgmlDType::Q2K,
        "Q3_K" => GgmlDType::Q3K,
        "Q4_K" => GgmlDType::Q4K,
        "Q5_K" => GgmlDType::Q5K,
        "Q6_K" => GgmlDType::Q6K,
        _ => return None,
    })
}

fn read_f32(path: &PathBuf) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn first_difference(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (a, b))| a.to_bits() != b.to_bits())
        .map(|(i, (a, b))| (i, *a, *b))
}

#[test]
fn dequantization_equals_gguf_python_bit_for_bit() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("manifest.json")).unwrap())
            .unwrap();
    let mut checked_candle = Vec::new();
    let mut checked_packed = Vec::new();
    let mut unsupported = Vec::new();
    for t in manifest["types"].as_array().unwrap() {
        let name = t["type"].as_str().unwrap();
        let n = t["values"].as_u64().unwrap() as usize;
        let raw = std::fs::read(data_dir().join(format!("{name}.bin"))).unwrap();
        let want = read_f32(&data_dir().join(format!("{name}.f32")));
        assert_eq!(want.len(), n, "{name}: expected values");
        let Some(dt) = dtype(name) else {
            unsupported.push(name.to_string());
            continue;
        };
        // one row of n values (n is a multiple of every block size)
        let q = qtensor_from_ggml(dt, &raw, vec![1, n], &Device::Cpu).unwrap();
        let got: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            first_difference(&got, &want),
            None,
            "{name}: candle dequantize (index, ours, gguf)"
        );
        checked_candle.push(name.to_string());
        if GgmlMatMul::supports(dt) {
            let g = GgmlMatMul::from_qtensor(&q).unwrap().expect("packed");
            let mut row = vec![0f32; n];
            g.dequantize_row(0, &mut row);
            assert_eq!(
                first_difference(&row, &want),
                None,
                "{name}: packed dequantize_row (index, ours, gguf)"
            );
            checked_packed.push(name.to_string());
        }
    }
    eprintln!(
        "bit-for-bit vs gguf {}: candle {checked_candle:?}; packed {checked_packed:?}; \
         not loadable (candle has no such GgmlDType): {unsupported:?}",
        manifest["versions"]["gguf"]
    );
    assert_eq!(checked_candle.len(), 12);
    assert!(checked_packed.len() >= 5, "{checked_packed:?}");
    assert_eq!(unsupported, ["IQ4_NL", "IQ4_XS"]);
}
