//! `surprisal eval --words` on the tiny llama fixture: per-word rows cover every word and add up to the
//! per-token NLLs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fixture() -> PathBuf {
    surprisal_testkit::fixture("llama")
}

fn surprisal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_surprisal"))
        .args(args)
        .arg("--quiet")
        .env_remove("SURPRISAL_LOG")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cannot start the surprisal binary")
}

const TEXT: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n\
Speak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\n\
Resolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.";

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check(o: &Output) {
    assert!(
        o.status.success(),
        "surprisal failed ({:?}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn words_jsonl_covers_every_word_and_adds_up_to_token_nlls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("text.txt");
    std::fs::write(&data, TEXT).unwrap();
    let out = tmp.path().join("out");
    let fx = fixture();
    check(&surprisal(&[
        "eval",
        "--model",
        fx.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--window",
        "32",
        "--stride",
        "16",
        "--per-token",
        "jsonl",
        "--words",
        "--out",
        out.to_str().unwrap(),
    ]));
    let words = jsonl(&out.join("words.jsonl"));
    let tokens = jsonl(&out.join("tokens.jsonl"));
    assert!(!out.join("words.parts").exists());

    // one row per whitespace-separated word, in order, with its byte span
    let mut expect = Vec::new();
    let mut pos = 0;
    for w in TEXT.split_whitespace() {
        let s = pos + TEXT[pos..].find(w).unwrap();
        expect.push((w, s, s + w.len()));
        pos = s + w.len();
    }
    assert_eq!(words.len(), expect.len());
    for (i, (row, (w, s, e))) in words.iter().zip(&expect).enumerate() {
        assert_eq!(row["doc"], 0);
        assert_eq!(row["word_index"], i);
        assert_eq!(row["word"], *w);
        assert_eq!(row["byte_start"], *s);
        assert_eq!(row["byte_end"], *e);
        assert!(row["n_tokens"].as_u64().unwrap() >= 1, "{row}");
    }

    // every token belongs to one word (no trailing whitespace), so the token counts add up; the first
    // token is scored only with BOS
    let first_scored = tokens.iter().any(|t| t["index"] == 0);
    let n_tokens: u64 = words.iter().map(|w| w["n_tokens"].as_u64().unwrap()).sum();
    assert_eq!(n_tokens, tokens.len() as u64 + u64::from(!first_scored));
    let skip = if first_scored {
        0
    } else {
        words[0]["n_tokens"].as_u64().unwrap()
    };
    assert_eq!(words[0]["surprisal_nats"].is_null(), !first_scored);
    for w in &words[1..] {
        assert!(w["surprisal_nats"].is_f64(), "{w}");
    }
    // Σ word surprisal = Σ NLL of their tokens
    let words_sum: f64 = words
        .iter()
        .filter_map(|w| w["surprisal_nats"].as_f64())
        .sum();
    let tokens_sum: f64 = tokens
        .iter()
        .filter(|t| t["index"].as_u64().unwrap() >= skip)
        .map(|t| t["nll_nats"].as_f64().unwrap())
        .sum();
    assert!(
        (words_sum - tokens_sum).abs() <= 1e-9 * tokens_sum,
        "{words_sum} vs {tokens_sum}"
    );
    // the corrected surprisal exists wherever the boundary masses are known: not after the last word
    // of the corpus (nothing is predicted there)
    let last = words.len() - 1;
    for (i, w) in words.iter().enumerate().skip(1) {
        assert_eq!(w["surprisal_corrected_nats"].is_f64(), i != last, "{w}");
    }
}

#[test]
fn words_default_to_parquet_and_need_out() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("text.txt");
    std::fs::write(&data, TEXT).unwrap();
    let out = tmp.path().join("out");
    let fx = fixture();
    let base = [
        "eval",
        "--model",
        fx.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--window",
        "64",
        "--words",
    ];
    let mut args = base.to_vec();
    args.extend(["--per-token", "none", "--out", out.to_str().unwrap()]);
    check(&surprisal(&args));
    let r =
        SerializedFileReader::new(std::fs::File::open(out.join("words.parquet")).unwrap()).unwrap();
    let md = r.metadata().file_metadata();
    assert_eq!(md.num_rows() as usize, TEXT.split_whitespace().count());
    let cols: Vec<String> = md
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(
        cols,
        [
            "doc",
            "word_index",
            "word",
            "byte_start",
            "byte_end",
            "n_tokens",
            "surprisal_nats",
            "surprisal_corrected_nats"
        ]
    );
    assert!(!out.join("tokens.parquet").exists());

    let o = surprisal(&base);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--words needs --out"), "{err}");
}
