//! GGUF tokenizers against llama.cpp's `llama-tokenize` on whole data files
//! (`tests/data/tokenize_llamacpp.json`, made by `scripts/references/ref_tokenize_llamacpp.py`): the id
//! sequence of each text must be the same, compared by count, the first 256 ids, per-4096-id block
//! hashes and the sha256 of the whole sequence.
//! - Gemma-3 270M (SentencePiece, `tokenizer.ggml.model = "llama"`; fetched by
//!   `scripts/fetch_gemma3.sh`);
//! - the same Gemma-3 metadata with `tokenizer.ggml.add_space_prefix = true`, the setting of Llama-2
//!   and Mistral v0.1 GGUFs (llama.cpp then prefixes "▁" to the text and after each user-defined
//!   token it cuts out);
//! - SmolLM2-135M (byte-level BPE with the digit split of `tokenizer.ggml.pre = "smollm"`; fetched by
//!   `scripts/fetch_smollm2.sh`).
//!
//! Texts: WikiText-2 raw test, Tiny Shakespeare, the LAMBADA jsonl file as bytes and its decoded
//! texts joined by blank lines (from `../shared/datasets`), and `datasets/sample.txt`. A missing model
//! or data file fails the test (never skips it).

mod common;

use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::gguf_file::Value as GgufValue;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use surprisal_models::{gguf, TextTokenizer};

fn gguf_header(path: &Path) -> Content {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Content::read(&mut f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gguf_tokenizer(path: &Path) -> (TextTokenizer, bool) {
    gguf::tokenizer(path, &gguf_header(path), None).unwrap()
}

fn ids_sha256(ids: &[u32]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// The text llama-tokenize was given, rebuilt from the file the reference names.
fn text_of(t: &Value) -> String {
    let p = repo_root().join(t["path"].as_str().unwrap());
    let raw = std::fs::read_to_string(&p).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the data sets live in ../shared/datasets next to the repository)",
            p.display()
        )
    });
    match t["text"].as_str().unwrap() {
        "file" => raw,
        "jsonl_texts_joined_by_blank_line" => raw
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["text"].as_str().unwrap().to_string()
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
        other => panic!("unknown text kind {other}"),
    }
}

/// Compares one text; returns a description of the first difference, if any.
fn compare(tok: &TextTokenizer, t: &Value, block: usize) -> Option<String> {
    let name = t["name"].as_str().unwrap();
    let text = text_of(t);
    let text_sha = hex::encode(Sha256::digest(text.as_bytes()));
    assert_eq!(
        text_sha,
        t["text_sha256"].as_str().unwrap(),
        "{name}: the text is not the one the reference tokenized"
    );
    let t0 = Instant::now();
    let enc = tok.encode(&text).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let ids = &enc.ids;
    let want_n = t["n_tokens"].as_u64().unwrap() as usize;
    println!(
        "{name}: {} bytes -> {} ids in {secs:.2}s (llama-tokenize: {want_n})",
        text.len(),
        ids.len()
    );
    // Spans lie in the text, in order.
    assert_eq!(enc.byte_spans.len(), ids.len());
    assert!(enc.byte_spans.windows(2).all(|w| w[0].0 <= w[1].0));
    assert!(enc
        .byte_spans
        .iter()
        .all(|&(s, e)| s <= e && e <= text.len()));

    let context = |i: usize| -> String {
        let lo = i.saturating_sub(3);
        let hi = (i + 4).min(ids.len());
        let rows: Vec<String> = (lo..hi)
            .map(|j| {
                let (s, e) = enc.byte_spans[j];
                format!("{j}:{}={:?}", ids[j], &text[s..e])
            })
            .collect();
        rows.join(" ")
    };
    let head: Vec<u32> = t["first_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    if let Some(i) = (0..head.len()).find(|&i| ids.get(i) != Some(&head[i])) {
        return Some(format!(
            "{name}: token {i} is {:?}, llama-tokenize has {}; ours around it: {}",
            ids.get(i),
            head[i],
            context(i.min(ids.len().saturating_sub(1)))
        ));
    }
    let blocks = t["block_sha256_16"].as_array().unwrap();
    for (b, want) in blocks.iter().enumerate() {
        let lo = b * block;
        let got = ids_sha256(&ids[lo.min(ids.len())..(lo + block).min(ids.len())]);
        if got[..16] != *want.as_str().unwrap() {
            return Some(format!(
                "{name}: ids differ within tokens {lo}..{} (block {b}); ours at its start: {}",
                lo + block,
                context(lo.min(ids.len().saturating_sub(1)))
            ));
        }
    }
    if ids.len() != want_n {
        return Some(format!(
            "{name}: {} ids, llama-tokenize {want_n}",
            ids.len()
        ));
    }
    if ids_sha256(ids) != t["ids_sha256"].as_str().unwrap() {
        return Some(format!("{name}: sha256 of the ids differs"));
    }
    None
}

fn check_model(key: &str, tok: &TextTokenizer) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenize_llamacpp.json");
    let r = read_json(&p);
    let block = r["block"].as_u64().unwrap() as usize;
    let texts = r["models"][key]["texts"].as_array().unwrap();
    assert_eq!(texts.len(), 5, "{key}: the reference lists five texts");
    let diffs: Vec<String> = texts
        .iter()
        .filter_map(|t| compare(tok, t, block))
        .collect();
    assert!(
        diffs.is_empty(),
        "{key}: token ids differ from llama-tokenize:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn gemma3_ids_equal_llama_tokenize() {
    let path = surprisal_testkit::cached_model("gemma-3-270m-q4_k_m.gguf", "fetch_gemma3.sh");
    let (tok, add_bos) = gguf_tokenizer(&path);
    // tokenizer.ggml.add_bos_token = true: Gemma is scored after <bos>.
    assert!(add_bos);
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.token_to_id("<bos>"), Some(2));
    check_model("gemma3", &tok);
}

#[test]
fn gemma3_with_space_prefix_ids_equal_llama_tokenize() {
    let path = surprisal_testkit::cached_model("gemma-3-270m-q4_k_m.gguf", "fetch_gemma3.sh");
    let mut content = gguf_header(&path);
    content.metadata.insert(
        "tokenizer.ggml.add_space_prefix".into(),
        GgufValue::Bool(true),
    );
    let (tok, _) = gguf::tokenizer(&path, &content, None).unwrap();
    // The flag changes the ids (checked here so the comparison below is not vacuous).
    let (plain, _) = gguf_tokenizer(&path);
    assert_ne!(
        tok.encode("a\n\nb").unwrap().ids,
        plain.encode("a\n\nb").unwrap().ids
    );
    check_model("gemma3_space_prefix", &tok);
}

#[test]
fn smollm2_ids_equal_llama_tokenize() {
    let path =
        surprisal_testkit::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", "fetch_smollm2.sh");
    let (tok, add_bos) = gguf_tokenizer(&path);
    assert!(!add_bos);
    check_model("smollm2", &tok);
}
