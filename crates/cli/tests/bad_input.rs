//! Bad inputs: every case must fail with exit status 2 (never a panic / 101), one `error: ` line that names
//! the file (and line / tensor / key where there is one) and the problem, and no `summary.json` in `--out`.
//! Every broken input is built in a temp dir from the tiny fixtures.

mod support;

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use support::*;

/// A temp dir with `model/` (a copy of the llama fixture), `data.txt` and an `out/` path.
struct Case {
    tmp: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let tmp = tempfile::tempdir().unwrap();
        fixture_copy("llama", &tmp.path().join("model"));
        write(&tmp.path().join("data.txt"), text(4));
        Case { tmp }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }
    fn model(&self) -> PathBuf {
        self.p("model")
    }
    fn data(&self) -> PathBuf {
        self.p("data.txt")
    }
    fn out(&self) -> PathBuf {
        self.p("out")
    }
    /// `eval --model M --data D --out O [--window 64] <extra>`.
    fn eval_with(&self, model: &Path, data: &Path, extra: &[&str]) -> std::process::Output {
        let out = self.out();
        let mut args = vec![
            "eval",
            "--model",
            s(model),
            "--data",
            s(data),
            "--out",
            s(&out),
        ];
        if !extra.contains(&"--window") {
            args.extend_from_slice(&["--window", "64"]);
        }
        args.extend_from_slice(extra);
        run(&args)
    }
    fn eval(&self, extra: &[&str]) -> std::process::Output {
        self.eval_with(&self.model(), &self.data(), extra)
    }
    fn eval_model(&self, model: &Path) -> std::process::Output {
        self.eval_with(model, &self.data(), &[])
    }
    fn eval_data(&self, data: &Path) -> std::process::Output {
        self.eval_with(&self.model(), data, &[])
    }
    fn fails(&self, out: &std::process::Output, needles: &[&str]) -> String {
        assert_clean_error(out, Some(&self.out()), needles)
    }
}

// ---------------------------------------------------------------- model directory / config.json

#[test]
fn model_dir_missing() {
    let c = Case::new();
    let m = c.p("no_such_model");
    c.fails(&c.eval_model(&m), &[s(&m), "not found"]);
}

#[test]
fn config_json_missing() {
    let c = Case::new();
    std::fs::remove_file(c.model().join("config.json")).unwrap();
    c.fails(&c.eval(&[]), &["model/config.json", "not found"]);
}

#[test]
fn config_json_not_json() {
    let c = Case::new();
    write(
        &c.model().join("config.json"),
        "{\"hidden_size\": 64,\n oops",
    );
    c.fails(
        &c.eval(&[]),
        &["model/config.json", "invalid JSON", "line 2"],
    );
}

#[test]
fn config_json_missing_hidden_size() {
    let c = Case::new();
    edit_config(&c.model(), |m| {
        m.remove("hidden_size");
    });
    c.fails(
        &c.eval(&[]),
        &["model/config.json", "hidden_size", "missing"],
    );
}

#[test]
fn config_json_key_with_wrong_type() {
    let c = Case::new();
    edit_config(&c.model(), |m| {
        m.insert("num_attention_heads".into(), "four".into());
    });
    c.fails(&c.eval(&[]), &["model/config.json", "num_attention_heads"]);
}

#[test]
fn config_json_unsupported_architecture() {
    let c = Case::new();
    let m = fixture_copy("bad_arch", &c.p("bad_arch"));
    c.fails(
        &c.eval_model(&m),
        &["bad_arch/config.json", "BloomForCausalLM", "unsupported"],
    );
}

// ---------------------------------------------------------------- safetensors

#[test]
fn safetensors_truncated() {
    let c = Case::new();
    let p = c.model().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    write(&p, &bytes[..bytes.len() / 2]);
    c.fails(&c.eval(&[]), &["model/model.safetensors", "truncated"]);
}

#[test]
fn safetensors_header_corrupt() {
    let c = Case::new();
    let p = c.model().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8..20].copy_from_slice(b"XXXXXXXXXXXX");
    write(&p, &bytes);
    c.fails(&c.eval(&[]), &["model/model.safetensors", "header"]);
}

#[test]
fn safetensors_header_length_absurd() {
    let c = Case::new();
    let p = c.model().join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    write(&p, &bytes);
    c.fails(&c.eval(&[]), &["model/model.safetensors"]);
}

#[test]
fn safetensors_tensor_wrong_shape() {
    let c = Case::new();
    rewrite_weights(&c.model(), |t| {
        t.insert(
            "model.norm.weight".into(),
            Tensor::ones(32, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    c.fails(
        &c.eval(&[]),
        &[
            "model/model.safetensors",
            "model.norm.weight",
            "[32]",
            "[64]",
        ],
    );
}

#[test]
fn safetensors_tensor_wrong_dtype() {
    let c = Case::new();
    rewrite_weights(&c.model(), |t| {
        t.insert(
            "model.norm.weight".into(),
            Tensor::ones(64, DType::I64, &Device::Cpu).unwrap(),
        );
    });
    c.fails(
        &c.eval(&[]),
        &[
            "model/model.safetensors",
            "model.norm.weight",
            "dtype",
            "I64",
        ],
    );
}

#[test]
fn safetensors_tensor_missing() {
    let c = Case::new();
    rewrite_weights(&c.model(), |t| {
        t.remove("model.layers.1.mlp.up_proj.weight");
    });
    c.fails(
        &c.eval(&[]),
        &[
            "model.safetensors",
            "model.layers.1.mlp.up_proj.weight",
            "not found",
        ],
    );
}

#[test]
fn safetensors_index_names_missing_shard() {
    let c = Case::new();
    let m = fixture_copy("llama_sharded", &c.p("sharded"));
    std::fs::remove_file(m.join("model-00002-of-00003.safetensors")).unwrap();
    c.fails(
        &c.eval_model(&m),
        &[
            "sharded/model.safetensors.index.json",
            "model-00002-of-00003.safetensors",
        ],
    );
}

// ---------------------------------------------------------------- GGUF

fn gguf(c: &Case, name: &str) -> PathBuf {
    let p = c.p(name);
    fixture_to_gguf(&c.model(), &p, GgmlDType::Q8_0);
    p
}

#[test]
fn gguf_control_loads_and_runs() {
    // the converter used by the GGUF cases makes a valid file: the errors below come from the breakage
    let c = Case::new();
    let g = gguf(&c, "ok.gguf");
    let out = c.eval_model(&g);
    assert_ok(&out);
    assert!(c.out().join("summary.json").exists());
}

#[test]
fn gguf_truncated() {
    let c = Case::new();
    let g = gguf(&c, "cut.gguf");
    let bytes = std::fs::read(&g).unwrap();
    for (i, cut) in [bytes.len() - 100, bytes.len() / 2, 1000, 30]
        .into_iter()
        .enumerate()
    {
        let p = c.p(&format!("cut{i}.gguf"));
        write(&p, &bytes[..cut]);
        let line = c.fails(&c.eval_model(&p), &[&format!("cut{i}.gguf")]);
        assert!(line.contains("truncated"), "cut at {cut}: {line}");
    }
}

#[test]
fn gguf_bad_magic() {
    let c = Case::new();
    let g = gguf(&c, "magic.gguf");
    let mut bytes = std::fs::read(&g).unwrap();
    bytes[..4].copy_from_slice(b"NOPE");
    write(&g, &bytes);
    c.fails(&c.eval_model(&g), &["magic.gguf", "magic"]);
}

#[test]
fn gguf_unsupported_quant_type() {
    let c = Case::new();
    let g = gguf(&c, "iq.gguf");
    let bytes = std::fs::read(&g).unwrap();
    // the message names the tensor (not "(header)") and the supported types
    for (code, name) in [
        (16u32, "IQ2_XXS"),
        (20, "IQ4_NL"),
        (34, "TQ1_0"),
        (39, "MXFP4"),
    ] {
        let mut bytes = bytes.clone();
        let at = gguf_type_offset(&bytes, "blk.0.ffn_up.weight");
        bytes[at..at + 4].copy_from_slice(&code.to_le_bytes());
        write(&g, &bytes);
        c.fails(
            &c.eval_model(&g),
            &[
                "iq.gguf",
                "`blk.0.ffn_up.weight`",
                name,
                "not supported",
                "Q6_K",
            ],
        );
    }
}

#[test]
fn gguf_unknown_type_id() {
    let c = Case::new();
    let g = gguf(&c, "unknown.gguf");
    let mut bytes = std::fs::read(&g).unwrap();
    let at = gguf_type_offset(&bytes, "blk.1.attn_q.weight");
    bytes[at..at + 4].copy_from_slice(&977u32.to_le_bytes());
    write(&g, &bytes);
    c.fails(&c.eval_model(&g), &["unknown.gguf", "977"]);
}

#[test]
fn gguf_unsupported_architecture() {
    let c = Case::new();
    let g = gguf(&c, "arch.gguf");
    let bytes = std::fs::read(&g).unwrap();
    // state-space and RNN models among them (names of llama.cpp's length-5 architectures)
    for arch in ["bloom", "mamba", "rwkv6"] {
        let mut bytes = bytes.clone();
        gguf_patch_string(&mut bytes, "general.architecture", "llama", arch);
        write(&g, &bytes);
        c.fails(&c.eval_model(&g), &["arch.gguf", arch, "unsupported"]);
    }
}

// ---------------------------------------------------------------- tokenizer

#[test]
fn tokenizer_json_missing() {
    let c = Case::new();
    std::fs::remove_file(c.model().join("tokenizer.json")).unwrap();
    c.fails(&c.eval(&[]), &["model/tokenizer.json", "not found"]);
}

#[test]
fn tokenizer_json_not_json() {
    let c = Case::new();
    write(&c.model().join("tokenizer.json"), "not json at all");
    c.fails(&c.eval(&[]), &["model/tokenizer.json", "invalid JSON"]);
}

#[test]
fn tokenizer_vocab_larger_than_embedding() {
    let c = Case::new();
    let m = fixture_copy("bad_vocab", &c.p("bad_vocab"));
    c.fails(
        &c.eval_model(&m),
        &[
            "bad_vocab/tokenizer.json",
            "bad_vocab/model.safetensors",
            "384",
            "256",
        ],
    );
}

#[test]
fn compare_reference_with_different_tokenizer() {
    let c = Case::new();
    let r = fixture_copy("llama", &c.p("ref"));
    swap_tokenizer_ids(&r.join("tokenizer.json"), 300, 301);
    let out = run(&[
        "compare",
        "--model",
        s(&c.model()),
        "--reference",
        s(&r),
        "--data",
        s(&c.data()),
        "--out",
        s(&c.out()),
        "--window",
        "64",
    ]);
    c.fails(&out, &[s(&r), s(&c.model()), "different tokenizers"]);
}

#[test]
fn compare_reference_missing() {
    let c = Case::new();
    let r = c.p("no_ref");
    let out = run(&[
        "compare",
        "--model",
        s(&c.model()),
        "--reference",
        s(&r),
        "--data",
        s(&c.data()),
        "--out",
        s(&c.out()),
    ]);
    c.fails(&out, &[s(&r), "not found"]);
}

// ---------------------------------------------------------------- data

#[test]
fn data_missing() {
    let c = Case::new();
    let d = c.p("nope.txt");
    c.fails(&c.eval_data(&d), &[s(&d), "not found"]);
}

#[test]
fn data_empty() {
    let c = Case::new();
    let d = write(&c.p("empty.txt"), "");
    c.fails(&c.eval_data(&d), &["empty.txt", "empty"]);
}

#[test]
fn data_only_whitespace() {
    let c = Case::new();
    let d = write(&c.p("ws.txt"), "  \n\n\t \r\n   \n");
    c.fails(&c.eval_data(&d), &["ws.txt", "whitespace"]);
}

#[test]
fn data_not_utf8() {
    let c = Case::new();
    let d = write(&c.p("latin1.txt"), b"hello\nwor\xffld\n");
    c.fails(
        &c.eval_data(&d),
        &["latin1.txt:2", "UTF-8", "byte offset 9"],
    );
}

#[test]
fn data_dir_without_txt_files() {
    let c = Case::new();
    let d = c.p("corpus");
    write(&d.join("notes.md"), "not a txt file");
    c.fails(&c.eval_data(&d), &["corpus"]);
}

#[test]
fn jsonl_line_not_json() {
    let c = Case::new();
    let d = write(
        &c.p("d.jsonl"),
        "{\"text\": \"First Citizen: speak.\"}\n{\"text\": oops}\n",
    );
    c.fails(&c.eval_data(&d), &["d.jsonl:2", "JSON"]);
}

#[test]
fn jsonl_missing_text_field() {
    let c = Case::new();
    let d = write(
        &c.p("d.jsonl"),
        "{\"text\": \"First Citizen: speak.\"}\n\n{\"body\": \"All: speak.\"}\n",
    );
    c.fails(&c.eval_data(&d), &["d.jsonl:3", "text", "body"]);
}

#[test]
fn jsonl_text_field_not_a_string() {
    let c = Case::new();
    let d = write(&c.p("d.jsonl"), "{\"text\": 42}\n");
    c.fails(&c.eval_data(&d), &["d.jsonl:1", "text"]);
}

#[test]
fn parquet_missing_column() {
    let c = Case::new();
    let d = c.p("d.parquet");
    write_parquet(
        &d,
        &[("body", vec!["First Citizen: speak.", "All: speak."])],
    );
    c.fails(&c.eval_data(&d), &["d.parquet", "text", "body"]);
}

#[test]
fn parquet_not_parquet() {
    let c = Case::new();
    let d = write(&c.p("d.parquet"), "this is not parquet");
    c.fails(&c.eval_data(&d), &["d.parquet"]);
}

// ---------------------------------------------------------------- protocol flags

#[test]
fn window_larger_than_model_context() {
    let c = Case::new();
    c.fails(&c.eval(&["--window", "2048"]), &["window 2048", "1024"]);
}

/// GPT-2 has no position embedding past `n_positions` (512 in the fixture): a longer window is
/// refused before any text is read.
#[test]
fn window_larger_than_gpt2_n_positions() {
    let c = Case::new();
    let m = fixture_copy("gpt2", &c.p("gpt2"));
    c.fails(
        &c.eval_with(&m, &c.data(), &["--window", "513"]),
        &["window 513", "maximum context of 512"],
    );
}

#[test]
fn stride_zero() {
    let c = Case::new();
    c.fails(&c.eval(&["--stride", "0"]), &["stride", "at least 1"]);
}

#[test]
fn stride_larger_than_window() {
    let c = Case::new();
    c.fails(&c.eval(&["--stride", "128"]), &["stride 128", "window 64"]);
}

#[test]
fn window_one() {
    let c = Case::new();
    c.fails(&c.eval(&["--window", "1"]), &["window", "at least 2"]);
}

#[test]
fn max_tokens_zero() {
    let c = Case::new();
    c.fails(
        &c.eval(&["--max-tokens", "0"]),
        &["--max-tokens", "at least 1"],
    );
}

#[test]
fn batch_size_zero() {
    let c = Case::new();
    c.fails(
        &c.eval(&["--batch-size", "0"]),
        &["--batch-size", "at least 1"],
    );
}

#[test]
fn threads_zero() {
    let c = Case::new();
    c.fails(&c.eval(&["--threads", "0"]), &["--threads", "at least 1"]);
}

#[test]
fn config_file_invalid_toml() {
    let c = Case::new();
    let cfg = write(&c.p("run.toml"), "window = \"sixty-four\"\n");
    c.fails(
        &c.eval(&["--config", s(&cfg)]),
        &["run.toml:1:10", "invalid config", "expected usize"],
    );
}

// ---------------------------------------------------------------- output / resume

#[test]
fn out_dir_not_writable() {
    // a path under a regular file cannot be created, even as root
    let c = Case::new();
    let file = write(&c.p("file"), "x");
    let out_dir = file.join("sub");
    let out = run(&[
        "eval",
        "--model",
        s(&c.model()),
        "--data",
        s(&c.data()),
        "--out",
        s(&out_dir),
    ]);
    assert_clean_error(&out, None, &[s(&out_dir)]);
}

/// Makes `c.out()` look like an interrupted run: a full run whose summary is removed and whose checkpoint
/// is marked incomplete (the state a kill -9 leaves, without row parts).
fn interrupted_run(c: &Case) {
    assert_ok(&c.eval(&["--per-token", "none"]));
    std::fs::remove_file(c.out().join("summary.json")).unwrap();
    edit_json(&c.out().join("checkpoint.json"), |v| {
        v["complete"] = false.into();
    });
}

#[test]
fn resume_control_continues_interrupted_run() {
    let c = Case::new();
    interrupted_run(&c);
    assert_ok(&c.eval(&["--per-token", "none", "--resume"]));
    assert!(c.out().join("summary.json").exists());
}

#[test]
fn resume_with_different_model() {
    let c = Case::new();
    interrupted_run(&c);
    let other = fixture_copy("qwen2", &c.p("qwen2"));
    let out = c.eval_with(&other, &c.data(), &["--per-token", "none", "--resume"]);
    c.fails(&out, &["cannot resume", s(&c.out()), "model"]);
}

#[test]
fn resume_with_different_data() {
    let c = Case::new();
    interrupted_run(&c);
    let d = write(&c.p("other.txt"), text(3));
    let out = c.eval_with(&c.model(), &d, &["--per-token", "none", "--resume"]);
    c.fails(&out, &["cannot resume", s(&c.out()), "data_sha256"]);
}

#[test]
fn resume_with_different_protocol() {
    let c = Case::new();
    interrupted_run(&c);
    let out = c.eval(&["--per-token", "none", "--resume", "--protocol", "chunks"]);
    c.fails(&out, &["cannot resume", s(&c.out()), "protocol"]);
}

#[test]
fn resume_with_different_stride() {
    let c = Case::new();
    interrupted_run(&c);
    let out = c.eval(&["--per-token", "none", "--resume", "--stride", "16"]);
    c.fails(&out, &["cannot resume", s(&c.out()), "stride"]);
}

#[test]
fn resume_with_corrupt_checkpoint() {
    let c = Case::new();
    interrupted_run(&c);
    write(
        &c.out().join("checkpoint.json"),
        "{\"version\": 1, \"fingerp",
    );
    let out = c.eval(&["--per-token", "none", "--resume"]);
    c.fails(&out, &["out/checkpoint.json", "not a valid checkpoint"]);
}

#[test]
fn out_dir_holding_a_run_without_resume() {
    let c = Case::new();
    assert_ok(&c.eval(&[]));
    let before = std::fs::read(c.out().join("summary.json")).unwrap();
    let out = c.eval(&[]);
    // the earlier run's summary stays, untouched
    assert_clean_error(&out, None, &[s(&c.out()), "--resume"]);
    assert_eq!(std::fs::read(c.out().join("summary.json")).unwrap(), before);
}

// ---------------------------------------------------------------- numerics

#[test]
fn nan_logits_name_document_and_position() {
    let c = Case::new();
    rewrite_weights(&c.model(), |t| {
        let w = t["model.norm.weight"].to_vec1::<f32>().unwrap();
        let mut w = w.clone();
        w[3] = f32::NAN;
        t.insert(
            "model.norm.weight".into(),
            Tensor::new(w.as_slice(), &Device::Cpu).unwrap(),
        );
    });
    c.fails(&c.eval(&[]), &["data.txt", "document 0", "position", "NaN"]);
}

#[test]
fn resume_with_dequantize_toggled() {
    // the same GGUF file with quantized kernels or f32 weights gives different numbers: not one run
    let c = Case::new();
    let g = gguf(&c, "q8.gguf");
    assert_ok(&c.eval_with(&g, &c.data(), &["--per-token", "none"]));
    std::fs::remove_file(c.out().join("summary.json")).unwrap();
    edit_json(&c.out().join("checkpoint.json"), |v| {
        v["complete"] = false.into();
    });
    let out = c.eval_with(
        &g,
        &c.data(),
        &["--per-token", "none", "--resume", "--dequantize"],
    );
    c.fails(&out, &["cannot resume", "dtype", "Q8_0"]);
}

#[test]
fn dtype_other_than_f32_on_a_quantized_gguf() {
    // quantized kernels take f32 activations: --dtype f64 would silently not be f64
    let c = Case::new();
    let g = gguf(&c, "q8.gguf");
    let out = c.eval_with(&g, &c.data(), &["--per-token", "none", "--dtype", "f64"]);
    c.fails(&out, &["--dtype f64", "quantized GGUF", "--dequantize"]);
}
