//! Broken inputs (built in tempdirs from the fixtures) give errors that name the file and the
//! problem; nothing panics.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use common::*;
use surprisal_models::{load, ModelError, ModelSource};

fn load_dir(dir: &Path) -> Result<surprisal_models::LoadedModel, ModelError> {
    load(&ModelSource::Dir(dir.to_path_buf()), &cpu_f32())
}

fn llama_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llama"), tmp.path());
    tmp
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v = read_json(&p);
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn rewrite_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let p = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, &p).unwrap();
}

#[test]
fn missing_config_key() {
    let tmp = llama_copy();
    edit_config(tmp.path(), |c| {
        c.remove("hidden_size");
    });
    let e = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingConfigKey { key, .. } if key == "hidden_size"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("config.json") && msg.contains("hidden_size"),
        "{msg}"
    );
}

#[test]
fn missing_config_file() {
    let tmp = llama_copy();
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let msg = load_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        msg.contains("config.json") && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn unknown_architecture() {
    let e = load_dir(&fixture("bad_arch")).unwrap_err();
    assert!(
        matches!(e, ModelError::UnsupportedArchitecture { .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("BloomForCausalLM"), "{msg}");
    for a in surprisal_models::supported_architectures() {
        assert!(msg.contains(a), "{msg} does not list {a}");
    }
}

#[test]
fn tensor_with_wrong_shape() {
    let tmp = llama_copy();
    let name = "model.layers.1.self_attn.k_proj.weight";
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            name.into(),
            Tensor::zeros((16, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = load_dir(tmp.path()).unwrap_err();
    match &e {
        ModelError::TensorShape {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, name);
            assert_eq!(expected, &[32, 64]);
            assert_eq!(found, &[16, 64]);
        }
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains(name) && msg.contains("model.safetensors") && msg.contains("[32, 64]"),
        "{msg}"
    );
}

#[test]
fn tensor_with_wrong_dtype() {
    let tmp = llama_copy();
    let name = "model.norm.weight";
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            name.into(),
            Tensor::zeros(64, candle_core::DType::I64, &Device::Cpu).unwrap(),
        );
    });
    let e = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, ModelError::TensorDtype { tensor, found, .. } if tensor == name && found == "I64"),
        "{e:?}"
    );
    assert!(e.to_string().contains(name), "{e}");
}

#[test]
fn missing_tensor() {
    let tmp = llama_copy();
    rewrite_weights(tmp.path(), |t| {
        t.remove("model.layers.0.mlp.up_proj.weight");
    });
    let msg = load_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        msg.contains("model.layers.0.mlp.up_proj.weight") && msg.contains("not found"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors() {
    let tmp = llama_copy();
    let p = tmp.path().join("model.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len / 2).unwrap();
    let e = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(e, ModelError::Safetensors { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
}

#[test]
fn index_naming_missing_shard() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture("llama_sharded"), tmp.path());
    std::fs::remove_file(tmp.path().join("model-00002-of-00003.safetensors")).unwrap();
    let e = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, ModelError::MissingShard { shard, .. } if shard == "model-00002-of-00003.safetensors"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("model.safetensors.index.json"),
        "{e}"
    );
}

#[test]
fn tokenizer_vocab_larger_than_embedding() {
    let e = load_dir(&fixture("bad_vocab")).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::VocabMismatch {
                tokenizer_vocab: 384,
                model_vocab: 256,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn tokenizer_json_missing() {
    let tmp = llama_copy();
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    let e = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(e, ModelError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn tokenizer_json_not_json() {
    let tmp = llama_copy();
    std::fs::write(tmp.path().join("tokenizer.json"), "this is not json {").unwrap();
    let e = load_dir(tmp.path()).unwrap_err();
    assert!(matches!(e, ModelError::Json { .. }), "{e:?}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn gguf_bad_magic() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.gguf");
    std::fs::write(&p, b"NOPE this is not a gguf file at all, just bytes").unwrap();
    let e = load_gguf(&p).unwrap_err();
    assert!(matches!(e, ModelError::Gguf { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("bad.gguf") && msg.contains("magic"), "{msg}");
}

#[test]
fn gguf_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("llama.gguf");
    fixture_to_gguf(&fixture("llama"), &p, GgmlDType::Q8_0);
    assert!(load_gguf(&p).is_ok());
    let len = std::fs::metadata(&p).unwrap().len();
    for cut in [len - 100, len / 2, 64] {
        let q = tmp.path().join(format!("cut{cut}.gguf"));
        std::fs::copy(&p, &q).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&q)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let e = load_gguf(&q).unwrap_err();
        assert!(matches!(e, ModelError::Gguf { .. }), "cut at {cut}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("cut{cut}.gguf")), "{msg}");
        if cut > 64 {
            assert!(msg.contains("truncated"), "{msg}");
        }
    }
}

#[test]
fn gguf_missing_file() {
    let e = load_gguf(Path::new("/nonexistent/model.gguf")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}

#[test]
fn gguf_tokenizer_json_disagreeing_with_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("llama.gguf");
    fixture_to_gguf(&fixture("llama"), &p, GgmlDType::F32);
    // A tokenizer.json whose vocabulary differs: swap two token ids.
    let mut tj = read_json(&fixture("llama").join("tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    let keys: Vec<String> = vocab
        .keys()
        .filter(|k| k.len() > 1)
        .take(2)
        .cloned()
        .collect();
    let (a, b) = (vocab[&keys[0]].clone(), vocab[&keys[1]].clone());
    vocab.insert(keys[0].clone(), b);
    vocab.insert(keys[1].clone(), a);
    let tjp = tmp.path().join("tokenizer.json");
    std::fs::write(&tjp, serde_json::to_string(&tj).unwrap()).unwrap();
    let e = load(
        &ModelSource::Gguf {
            path: p,
            tokenizer_json: Some(tjp),
        },
        &cpu_f32(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ModelError::TokenizerDisagreement { .. }),
        "{e:?}"
    );
}

#[test]
fn bad_forward_inputs_are_errors() {
    let m = load_dir(&fixture("llama")).unwrap().model;
    let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
    assert!(m.forward_hidden(&ids, &[3, 3]).is_err());
    assert!(m.forward_hidden(&ids, &[4]).is_err());
    let big = Tensor::new(&[[1u32, 5000]], &Device::Cpu).unwrap();
    assert!(m.forward_hidden(&big, &[2]).is_err());
    let rows = Tensor::zeros((2, 63), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(m.logits(&rows).is_err());
}

fn fixture_copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(name), tmp.path());
    tmp
}

/// A message is one line and names the file and what is wrong.
fn assert_one_line(msg: &str, parts: &[&str]) {
    assert!(!msg.contains('\n'), "not one line: {msg}");
    for p in parts {
        assert!(msg.contains(p), "`{p}` not in: {msg}");
    }
}

/// The keys each new family cannot do without (no transformers default the model could run on).
#[test]
fn missing_config_keys_of_new_families() {
    for (name, key) in [
        ("gemma3", "query_pre_attn_scalar"),
        ("gemma3", "head_dim"),
        ("gemma3", "sliding_window"),
        ("gemma2", "sliding_window"),
        ("gemma2", "rms_norm_eps"),
        ("phi3", "rms_norm_eps"),
    ] {
        let tmp = fixture_copy(name);
        edit_config(tmp.path(), |c| {
            c.remove(key);
        });
        let e = load_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(&e, ModelError::MissingConfigKey { key: k, .. } if k == key),
            "{name} without {key}: {e:?}"
        );
        assert_one_line(&e.to_string(), &["config.json", key]);
    }
    // LongRoPE without its long factors
    let tmp = fixture_copy("phi3");
    edit_config(tmp.path(), |c| {
        c["rope_scaling"]
            .as_object_mut()
            .unwrap()
            .remove("long_factor");
    });
    let e = load_dir(tmp.path()).unwrap_err();
    assert_one_line(&e.to_string(), &["config.json", "rope_scaling.long_factor"]);
    // ... or with the wrong number of them
    let tmp = fixture_copy("phi3");
    edit_config(tmp.path(), |c| {
        c["rope_scaling"]["short_factor"] = serde_json::json!([1.0, 2.0]);
    });
    let e = load_dir(tmp.path()).unwrap_err();
    assert_one_line(
        &e.to_string(),
        &[
            "config.json",
            "rope_scaling.short_factor",
            "expected 4 numbers",
        ],
    );
}

/// A fused projection of the wrong shape: the error names the file, the tensor and both shapes,
/// in safetensors and in GGUF.
#[test]
fn fused_tensor_with_wrong_shape() {
    let tmp = fixture_copy("phi3_tied");
    let name = "model.layers.1.self_attn.qkv_proj.weight";
    // q, k and v rows for 4 + 2·2 heads of 16 would be 128; give it q and k only
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            name.into(),
            Tensor::zeros((96, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let e = load_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&e, ModelError::TensorShape { tensor, expected, found, .. }
            if tensor == name && expected == &[128, 64] && found == &[96, 64]),
        "{e:?}"
    );
    assert_one_line(&e.to_string(), &["model.safetensors", name, "[128, 64]"]);

    let gate_up = "model.layers.0.mlp.gate_up_proj.weight";
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            name.into(),
            Tensor::zeros((128, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            gate_up.into(),
            Tensor::zeros((128, 64), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let p = tmp.path().join("phi3.gguf");
    fixture_to_gguf(tmp.path(), &p, GgmlDType::F32);
    let e = load_gguf(&p).unwrap_err();
    assert!(
        matches!(&e, ModelError::TensorShape { tensor, .. } if tensor == "blk.0.ffn_up.weight"),
        "{e:?}"
    );
    assert_one_line(
        &e.to_string(),
        &["phi3.gguf", "blk.0.ffn_up.weight", "[256, 64]"],
    );
}

/// GGUF files of architectures that are not implemented (state-space and RNN models among them)
/// are refused by name, listing what is supported.
#[test]
fn gguf_of_an_unsupported_architecture() {
    use candle_core::quantized::gguf_file;
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["mamba", "rwkv6", "bloom"] {
        let p = tmp.path().join(format!("{arch}.gguf"));
        let v = gguf_file::Value::String(arch.to_string());
        let mut f = std::fs::File::create(&p).unwrap();
        gguf_file::write(&mut f, &[("general.architecture", &v)], &[]).unwrap();
        drop(f);
        let e = load_gguf(&p).unwrap_err();
        assert!(
            matches!(&e, ModelError::UnsupportedArchitecture { architecture, .. } if architecture == arch),
            "{e:?}"
        );
        assert_one_line(
            &e.to_string(),
            &[
                &format!("{arch}.gguf"),
                arch,
                "unsupported",
                "gemma3",
                "phi3",
            ],
        );
    }
}

/// GPT-2 and GPT-NeoX: the keys they cannot do without, a fused `c_attn` / `query_key_value` of
/// the wrong shape (GPT-2's is stored `(in, out)` and named so), and a sequence longer than
/// GPT-2's `n_positions` (no position embedding for it).
#[test]
fn gpt2_and_gpt_neox_bad_inputs() {
    for (name, key) in [
        ("gpt2", "n_embd"),
        ("gpt2", "n_positions"),
        ("gpt2", "layer_norm_epsilon"),
        ("gpt_neox", "layer_norm_eps"),
        ("gpt_neox", "intermediate_size"),
    ] {
        let tmp = fixture_copy(name);
        edit_config(tmp.path(), |c| {
            c.remove(key);
        });
        let e = load_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(&e, ModelError::MissingConfigKey { key: k, .. } if k == key),
            "{name} without {key}: {e:?}"
        );
        assert_one_line(&e.to_string(), &["config.json", key]);
    }
    let tmp = fixture_copy("gpt_neox");
    edit_config(tmp.path(), |c| {
        c.insert("hidden_act".into(), "relu".into());
    });
    let e = load_dir(tmp.path()).unwrap_err();
    assert_one_line(&e.to_string(), &["config.json", "hidden_act", "relu"]);

    for (name, tensor, wrong, expected) in [
        // (in, out) = (64, 3·64): give it q and k only
        ("gpt2", "h.1.attn.c_attn.weight", (64, 128), "[64, 192]"),
        (
            "gpt_neox",
            "gpt_neox.layers.1.attention.query_key_value.weight",
            (128, 64),
            "[192, 64]",
        ),
    ] {
        let tmp = fixture_copy(name);
        rewrite_weights(tmp.path(), |t| {
            t.insert(
                tensor.into(),
                Tensor::zeros(wrong, candle_core::DType::F32, &Device::Cpu).unwrap(),
            );
        });
        let e = load_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(&e, ModelError::TensorShape { tensor: t, .. } if t == tensor),
            "{e:?}"
        );
        assert_one_line(&e.to_string(), &["model.safetensors", tensor, expected]);
    }
    // ... and in a GGUF (converted as llama.cpp does: `attn_qkv` is (out, in) there)
    let tmp = fixture_copy("gpt2");
    rewrite_weights(tmp.path(), |t| {
        t.insert(
            "h.1.attn.c_attn.weight".into(),
            Tensor::zeros((64, 128), candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let p = tmp.path().join("gpt2.gguf");
    fixture_to_gguf(tmp.path(), &p, GgmlDType::F32);
    let e = load_gguf(&p).unwrap_err();
    assert!(
        matches!(&e, ModelError::TensorShape { tensor, .. } if tensor == "blk.1.attn_qkv.weight"),
        "{e:?}"
    );
    assert_one_line(
        &e.to_string(),
        &["gpt2.gguf", "blk.1.attn_qkv.weight", "[192, 64]"],
    );

    let m = load_dir(&fixture("gpt2")).unwrap();
    assert_eq!(m.info.max_position_embeddings, 512);
    let ids = Tensor::zeros((1, 513), candle_core::DType::U32, &Device::Cpu).unwrap();
    let e = m.model.forward_hidden(&ids, &[513]).unwrap_err();
    assert_one_line(&e.to_string(), &["513", "context length 512"]);
}
