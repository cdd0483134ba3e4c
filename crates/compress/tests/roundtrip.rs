//! Round trips, byte for byte, with tiny fixture models (dense: candle's path; GGUF Q8_0:
//! llama.cpp's path) and SmolLM2 Q4_1; across thread counts; and the errors a wrong model or a
//! damaged file must give.

use std::path::Path;

use candle_core::quantized::GgmlDType;
use surprisal_compress::{compress, decompress, model_key, CompressError, Params, Summary};
use surprisal_models::{load, LoadOptions, LoadedModel, ModelSource};
use surprisal_testkit::{dataset, fixture};

fn dense(name: &str) -> LoadedModel {
    load(&ModelSource::Dir(fixture(name)), &LoadOptions::default()).unwrap()
}

fn gguf(path: &Path) -> LoadedModel {
    load(
        &ModelSource::Gguf {
            path: path.to_path_buf(),
            tokenizer_json: None,
        },
        &LoadOptions::default(),
    )
    .unwrap()
}

fn head(name: &str, n: usize) -> Vec<u8> {
    let mut b = std::fs::read(dataset(name)).unwrap();
    b.truncate(n);
    b
}

/// Inputs that exercise every path: empty, one byte, invalid UTF-8, non-ASCII, and the shared
/// texts' first kilobytes (a cut may split a UTF-8 character: that is kept on purpose).
fn inputs() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("one byte".into(), b"a".to_vec()),
        ("one invalid byte".into(), vec![0xff]),
        ("newline".into(), b"\n".to_vec()),
        (
            "invalid UTF-8 inside text".into(),
            b"First line\nsecond \xc3\x28 line\n\xff\xfe tail".to_vec(),
        ),
        (
            "non-ASCII".into(),
            "Caf\u{e9} na\u{ef}ve \u{2014} \u{65e5}\u{672c}\u{8a9e} \u{1f389}\r\n\ttabs\u{0}nul\n"
                .as_bytes()
                .to_vec(),
        ),
    ];
    v.push((
        "tinyshakespeare 2 KB".into(),
        head("tinyshakespeare.txt", 2048),
    ));
    v.push((
        "wikitext-2 test 1 KB".into(),
        head("wikitext-2-raw-v1.test.raw", 1024),
    ));
    let sample = std::fs::read(surprisal_testkit::repo_root().join("datasets/sample.txt")).unwrap();
    v.push((
        "sample.txt 1 KB".into(),
        sample[..1024.min(sample.len())].to_vec(),
    ));
    v
}

fn round_trip(loaded: &LoadedModel, input: &[u8], params: Params) -> (Vec<u8>, Summary) {
    let key = model_key(loaded).unwrap();
    let (sz, summary) = compress(loaded, &key, input, params, &mut |_, _| {}).unwrap();
    let back = decompress(loaded, &key, &sz, &mut |_, _| {}).unwrap();
    assert_eq!(back, input, "round trip");
    assert_eq!(summary.compressed_bytes as usize, sz.len());
    (sz, summary)
}

/// The payload is the coder's output for the quantized probabilities: within a few words of
/// their ideal size Σ −log2(freq/2^24).
fn check_payload(name: &str, s: &Summary) {
    let bits = 8.0 * s.payload_bytes as f64;
    assert!(
        bits + 1.0 >= s.code_bits && bits <= s.code_bits + 96.0,
        "{name}: payload {bits} bits for an ideal {:.1}",
        s.code_bits
    );
}

#[test]
fn fixtures_round_trip_byte_exact() {
    let params = Params {
        window: 64,
        stride: 32,
    };
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("llama-q8.gguf");
    surprisal_testkit::fixture_to_gguf(&fixture("llama"), &q8, GgmlDType::Q8_0);
    for (model_name, loaded) in [
        ("llama", dense("llama")),
        ("gpt2", dense("gpt2")),
        ("gemma2", dense("gemma2")),
        ("llama gguf Q8_0", gguf(&q8)),
    ] {
        for (name, input) in inputs() {
            let (_, s) = round_trip(&loaded, &input, params);
            println!(
                "{model_name} / {name}: {} -> {} bytes, {} tokens, {} raw bytes, {} windows",
                s.original_bytes, s.compressed_bytes, s.tokens, s.raw_bytes, s.windows
            );
            check_payload(name.as_str(), &s);
            if name.starts_with("non-ASCII") || name.starts_with("tinyshakespeare") {
                assert!(s.tokens > 0, "{name}: no tokens coded");
            }
        }
    }
}

/// Invalid UTF-8 forces the line fallback: the valid lines are still coded as tokens, the
/// invalid ones stored raw.
#[test]
fn invalid_utf8_lines_are_raw_and_the_rest_tokens() {
    let loaded = dense("llama");
    let input = b"First Citizen:\nBefore we \xff proceed\nany further, hear me speak.\n";
    let (_, s) = round_trip(
        &loaded,
        input,
        Params {
            window: 16,
            stride: 8,
        },
    );
    assert_eq!(s.raw_bytes, b"Before we \xff proceed\n".len() as u64);
    assert!(s.tokens > 0);
}

/// Compress with 2 threads, decompress with 1: the same bytes back (the probabilities do not
/// depend on the thread count), on candle's path and llama.cpp's.
#[test]
fn thread_counts_do_not_matter() {
    let tmp = tempfile::tempdir().unwrap();
    let q8 = tmp.path().join("gemma3-q8.gguf");
    surprisal_testkit::fixture_to_gguf(&fixture("gemma3"), &q8, GgmlDType::Q8_0);
    let input = head("tinyshakespeare.txt", 3000);
    let params = Params {
        window: 96,
        stride: 48,
    };
    for loaded in [dense("qwen3"), gguf(&q8)] {
        let key = model_key(&loaded).unwrap();
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let (sz2, _) = pool(2)
            .install(|| compress(&loaded, &key, &input, params, &mut |_, _| {}))
            .unwrap();
        let (sz1, _) = pool(1)
            .install(|| compress(&loaded, &key, &input, params, &mut |_, _| {}))
            .unwrap();
        assert_eq!(sz1, sz2, "the file depends on the thread count");
        let back = pool(1)
            .install(|| decompress(&loaded, &key, &sz2, &mut |_, _| {}))
            .unwrap();
        assert_eq!(back, input);
    }
}

#[test]
fn another_model_is_an_error() {
    let llama = dense("llama");
    let mistral = dense("mistral");
    let input = head("tinyshakespeare.txt", 300);
    let params = Params {
        window: 32,
        stride: 16,
    };
    let (sz, _) = compress(
        &llama,
        &model_key(&llama).unwrap(),
        &input,
        params,
        &mut |_, _| {},
    )
    .unwrap();
    let err = decompress(&mistral, &model_key(&mistral).unwrap(), &sz, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, CompressError::ModelMismatch { .. }), "{err}");
    assert!(err.to_string().contains("another model"), "{err}");
}

#[test]
fn damaged_files_are_errors() {
    let loaded = dense("llama");
    let key = model_key(&loaded).unwrap();
    let input = head("tinyshakespeare.txt", 500);
    let params = Params {
        window: 32,
        stride: 16,
    };
    let (sz, _) = compress(&loaded, &key, &input, params, &mut |_, _| {}).unwrap();
    let dec = |b: &[u8]| decompress(&loaded, &key, b, &mut |_, _| {});
    // truncations at every 7th length, and every single-byte flip of the header and body
    for n in (0..sz.len()).step_by(7) {
        assert!(dec(&sz[..n]).is_err(), "truncated to {n} bytes");
    }
    for i in 0..sz.len() {
        let mut b = sz.clone();
        b[i] ^= 0x5a;
        assert!(dec(&b).is_err(), "byte {i} flipped");
    }
    // A damaged payload whose container checksum is recomputed (so the reader cannot tell):
    // decoding yields other tokens, and the original's sha256 turns them into an error, never
    // into output. (A flip in the coder's last, unread bits may still give the original.)
    let body = sz.len() - 32;
    let payload_words = (sz.len() - 32 - 8 - 144) / 4;
    let mut errors = 0;
    for k in 0..payload_words.min(20) {
        let mut b = sz[..body].to_vec();
        let at = body - 4 * (k + 1);
        b[at] ^= 0x01;
        use sha2::Digest;
        let sum = sha2::Sha256::digest(&b);
        b.extend_from_slice(&sum);
        match dec(&b) {
            Ok(back) => assert_eq!(back, input, "garbage output for a flip at {at}"),
            Err(e) => {
                assert!(matches!(e, CompressError::Checksum), "{e}");
                errors += 1;
            }
        }
    }
    assert!(errors > 0, "no damaged payload was detected");
}

/// The real model: 2 KB of sample.txt round-trip, and the payload is the model's NLL plus at
/// most 0.5 % either way (the quantization moves mass from likely tokens to the floor of rare
/// ones, so a text can also cost slightly less) over the same windows.
#[test]
fn smollm2_round_trip_costs_its_nll() {
    let path =
        surprisal_testkit::cached_model("SmolLM2-135M-Instruct.Q4_1.gguf", "fetch_smollm2.sh");
    let loaded = gguf(&path);
    let sample = std::fs::read(surprisal_testkit::repo_root().join("datasets/sample.txt")).unwrap();
    let input = &sample[..2048.min(sample.len())];
    let (_, s) = round_trip(
        &loaded,
        input,
        Params {
            window: 256,
            stride: 128,
        },
    );
    check_payload("smollm2", &s);
    let nll_bits = s.model_nll_nats / std::f64::consts::LN_2 + s.uniform_bits;
    let overhead = s.code_bits / nll_bits - 1.0;
    println!(
        "SmolLM2 2 KB: {} tokens, NLL {nll_bits:.1} bits, coded {:.1} bits (+{:.3} %), payload {} bytes, file {} bytes",
        s.tokens,
        s.code_bits,
        100.0 * overhead,
        s.payload_bytes,
        s.compressed_bytes
    );
    assert!(overhead.abs() <= 0.005, "overhead {overhead}");
    assert!(s.raw_bytes == 0);
}
