//! Test helpers shared by the integration tests of surprisal-models, surprisal-runner and
//! surprisal-cli: repository, fixture and data-set paths, the one HF→GGUF test converter, and a
//! runner for the built `surprisal` binary. A dev-dependency only (`publish = false`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use serde_json::Value;
use surprisal_models::TextTokenizer;

/// The workspace root (canonical).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `crates/models/tests/fixtures`: the tiny model fixtures.
pub fn fixtures() -> PathBuf {
    repo_root().join("crates/models/tests/fixtures")
}

/// `crates/models/tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// `../shared/datasets` next to the repository: the real data sets of the slow tests.
pub fn datasets() -> PathBuf {
    repo_root().join("../shared/datasets")
}

/// `../shared/datasets/<name>`.
pub fn dataset(name: &str) -> PathBuf {
    datasets().join(name)
}

/// WikiText-2 raw test split (`../shared/datasets/wikitext-2-raw-v1.test.raw`); panics with where to
/// put it when it is missing.
pub fn wikitext_test_raw() -> PathBuf {
    let p = dataset("wikitext-2-raw-v1.test.raw");
    assert!(
        p.is_file(),
        "WikiText-2 raw test not found at {}: the parity tests need the shared datasets \
         (<repo>/../shared/datasets/wikitext-2-raw-v1.test.raw, sha256 \
         173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08)",
        p.display()
    );
    p
}

/// `<cache>/models/<file>`, the cache being `$SURPRISAL_CACHE` or `~/.cache/surprisal`; panics
/// naming the script (`bash scripts/<fetch_script>`) that downloads it when it is missing.
pub fn cached_model(file: &str, fetch_script: &str) -> PathBuf {
    let cache = std::env::var_os("SURPRISAL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/surprisal")
        });
    let p = cache.join("models").join(file);
    assert!(
        p.is_file(),
        "{} not found: run `bash scripts/{fetch_script}` first",
        p.display()
    );
    p
}

/// A peer tool's reference numbers: `crates/runner/tests/data/peers/<name>` (JSON).
pub fn peer(name: &str) -> Value {
    read_json(
        &repo_root()
            .join("crates/runner/tests/data/peers")
            .join(name),
    )
}

/// Copies the plain files of `src` (not its subdirectories) into `dst`, created if missing.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

pub fn read_json(p: &Path) -> Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Runs the binary `bin` (a test's `env!("CARGO_BIN_EXE_surprisal")`) with `args` and `--quiet`,
/// logging kept at `warn` (`SURPRISAL_LOG` removed), the hub offline.
pub fn run_bin(bin: &Path, args: &[&str]) -> Output {
    run_bin_env(bin, args, &[])
}

/// [`run_bin`] with extra environment variables (`SURPRISAL_GGML_SIMD` to pin the llama.cpp build
/// whose order of operations a reference was made with).
pub fn run_bin_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--quiet");
    Command::new(bin)
        .args(&all)
        .env_remove("SURPRISAL_LOG")
        .env("HF_HUB_OFFLINE", "1")
        .envs(env.iter().copied())
        .output()
        .expect("cannot start the surprisal binary")
}

/// Runs `surprisal eval --model MODEL --data DATA <args> --per-token jsonl --out OUT` through
/// [`run_bin`] and returns (summary.json, per-token rows, elapsed seconds); panics with the command
/// line and stderr when it fails. The real-model parity tests' one way to score a model.
pub fn eval_rows(
    bin: &Path,
    model: &Path,
    data: &Path,
    args: &[&str],
    out: &Path,
) -> (Value, Vec<Value>, f64) {
    eval_rows_env(bin, model, data, args, out, &[])
}

/// [`eval_rows`] with extra environment variables for the binary (see [`run_bin_env`]).
pub fn eval_rows_env(
    bin: &Path,
    model: &Path,
    data: &Path,
    args: &[&str],
    out: &Path,
    env: &[(&str, &str)],
) -> (Value, Vec<Value>, f64) {
    let (model, data, out_s) = (
        model.display().to_string(),
        data.display().to_string(),
        out.display().to_string(),
    );
    let mut all: Vec<&str> = vec!["eval", "--model", &model, "--data", &data];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--per-token", "jsonl", "--out", &out_s]);
    let t0 = std::time::Instant::now();
    let o = run_bin_env(bin, &all, env);
    let secs = t0.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "surprisal {} failed ({}):\n{}",
        all.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let summary = read_json(&out.join("summary.json"));
    let rows_path = out.join("tokens.jsonl");
    let rows = std::fs::read_to_string(&rows_path)
        .unwrap_or_else(|e| panic!("{}: {e}", rows_path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", rows_path.display())))
        .collect();
    (summary, rows, secs)
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
    // GPT-2's keys are `n_embd`, `n_head`, `n_layer`, `n_positions`
    let u2 = |k: &str, gpt2: &str| cfg[k].as_u64().or(cfg[gpt2].as_u64()).unwrap() as usize;
    let (hidden, heads, layers) = (
        u2("hidden_size", "n_embd"),
        u2("num_attention_heads", "n_head"),
        u2("num_hidden_layers", "n_layer"),
    );
    let kv = cfg["num_key_value_heads"]
        .as_u64()
        .map_or(heads, |x| x as usize);
    let head_dim = cfg["head_dim"]
        .as_u64()
        .map(|x| x as usize)
        .unwrap_or(hidden / heads);
    let (arch, permute_qk, norm_shift) = match class.as_str() {
        "LlamaForCausalLM" | "MistralForCausalLM" => ("llama", true, false),
        "Gemma3ForCausalLM" => ("gemma3", false, true),
        "Gemma2ForCausalLM" => ("gemma2", false, true),
        "Phi3ForCausalLM" => ("phi3", false, false),
        "GPT2LMHeadModel" => ("gpt2", false, false),
        "GPTNeoXForCausalLM" => ("gptneox", false, false),
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
        // GPT-2 checkpoints hold the base model's names (`h.0.*`, `wte`)
        let full = match arch {
            "gpt2" if !name.starts_with("transformer.") => format!("transformer.{name}"),
            _ => name.clone(),
        };
        let gname = surprisal_models::arch::gguf_tensor_name(&class, &full)
            .unwrap_or_else(|| panic!("{class}: no GGUF name for {name}"));
        let conv1d = [".c_attn.weight", ".c_proj.weight", ".c_fc.weight"];
        let t = if arch == "gpt2" && conv1d.iter().any(|s| name.ends_with(s)) {
            // Conv1D (in, out) -> (out, in)
            t.t().unwrap().contiguous().unwrap()
        } else if arch == "gptneox" && name.contains("query_key_value") {
            // rows per head (q, k, v of head 0, ...) -> all q, all k, all v
            let rest: Vec<usize> = t.dims()[1..].to_vec();
            let d = hidden / heads;
            let mut shape = vec![heads, 3, d];
            shape.extend(&rest);
            let g = t.reshape(shape).unwrap();
            let parts: Vec<Tensor> = (0..3)
                .map(|i| g.narrow(1, i, 1).unwrap().contiguous().unwrap())
                .collect();
            let mut out = vec![hidden];
            out.extend(&rest);
            let parts: Vec<Tensor> = parts
                .iter()
                .map(|p| p.reshape(out.clone()).unwrap())
                .collect();
            Tensor::cat(&parts, 0).unwrap()
        } else if permute_qk && name.ends_with("self_attn.q_proj.weight") {
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
        .or_else(|| cfg["rope_parameters"]["full_attention"]["rope_theta"].as_f64());
    let mut md: Vec<(String, V)> = vec![
        ("general.architecture".into(), V::String(arch.into())),
        (
            k("context_length"),
            V::U32(u2("max_position_embeddings", "n_positions") as u32),
        ),
        (k("embedding_length"), V::U32(hidden as u32)),
        (k("block_count"), V::U32(layers as u32)),
        (k("attention.head_count"), V::U32(heads as u32)),
    ];
    // GPT-2: 4 · n_embd, as llama.cpp's converter writes it
    let ff = cfg["intermediate_size"]
        .as_u64()
        .map_or(4 * hidden, |x| x as usize);
    md.push((k("feed_forward_length"), V::U32(ff as u32)));
    if !matches!(arch, "gpt2" | "gptneox") {
        md.push((k("attention.head_count_kv"), V::U32(kv as u32)));
        md.push((k("rope.freq_base"), V::F32(rope_theta.unwrap() as f32)));
        md.push((k("attention.layer_norm_rms_epsilon"), f("rms_norm_eps")));
    }
    match arch {
        "gpt2" => md.push((k("attention.layer_norm_epsilon"), f("layer_norm_epsilon"))),
        "gptneox" => {
            // no rope.freq_base: llama.cpp's converter does not write it (10000 implied)
            assert_eq!(cfg["rotary_emb_base"].as_f64(), Some(10_000.0));
            let rot = (head_dim as f64 * cfg["rotary_pct"].as_f64().unwrap()) as u32;
            md.push((k("rope.dimension_count"), V::U32(rot)));
            md.push((
                k("use_parallel_residual"),
                V::Bool(cfg["use_parallel_residual"].as_bool().unwrap_or(true)),
            ));
            md.push((k("attention.layer_norm_epsilon"), f("layer_norm_eps")));
        }
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

/// The `SURPRISAL_GGML_SIMD` value (`avx512` or `avx2`) of the llama.cpp build that made a peer
/// reference, read from the `system_info` line its `log_stderr*` fields recorded: our llama.cpp-order
/// ops then follow that build's lane order on whatever CPU the test runs (an AVX-512 reference on an
/// AVX2-only host and the other way round).
pub fn llama_cpp_build_simd(peer: &Value) -> &'static str {
    let logs: Vec<&str> = peer
        .as_object()
        .expect("a peer reference is a JSON object")
        .iter()
        .filter(|(k, _)| k.starts_with("log_stderr"))
        .filter_map(|(_, v)| v.as_str())
        .filter(|l| l.contains("system_info"))
        .collect();
    assert!(
        !logs.is_empty(),
        "the peer reference records no llama.cpp system_info line (log_stderr*)"
    );
    if logs.iter().all(|l| l.contains("AVX512 = 1")) {
        "avx512"
    } else {
        assert!(
            logs.iter().all(|l| !l.contains("AVX512 = 1")),
            "the peer reference mixes AVX-512 and AVX2 llama.cpp builds"
        );
        "avx2"
    }
}
