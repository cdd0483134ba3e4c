//! `--stats-on device` against `--stats-on host` through the binary, on the tiny random-weight Llama
//! fixtures (`crates/models/tests/fixtures/llama`, and `llama_untied` as the reference of
//! `compare`), on the CPU device: `eval` and `compare`, with per-token and per-word rows (`--words`),
//! plus a quantized (Q8_0) GGUF of the fixture. Both paths see the same f32 logits, so every integer
//! (ids, ranks, counts) must be equal and every float within the f32 tolerance derived in
//! `crates/runner/tests/device_stats.rs` (`1e-5` relative to `max(1, |host|)`; the measured
//! per-token differences there are ~100× smaller). Also: the choice is recorded in `summary.json`,
//! `auto` is `host` on the CPU, the TOML key `stats-on` works, and `--dtype` defaults to f32 on the
//! CPU.

mod support;

use std::path::Path;

use candle_core::quantized::GgmlDType;
use serde_json::Value;
use support::*;

/// Float tolerance relative to `max(1, |host|)`; see the module docs.
const REL: f64 = 1e-5;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/compare_text.txt");
const PROTOCOL: [&str; 8] = [
    "--protocol",
    "sliding",
    "--window",
    "128",
    "--stride",
    "64",
    "--bos",
    "never",
];

/// Runs `surprisal <args> --out DIR --per-token jsonl --words` and returns
/// the summary and the token and word rows.
fn run_in(args: &[&str], dir: &Path) -> (Value, Vec<Value>, Vec<Value>) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--out", s(dir), "--per-token", "jsonl", "--words"]);
    assert_ok(&run(&all));
    let jsonl = |name: &str| -> Vec<Value> {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    (
        read_json(&dir.join("summary.json")),
        jsonl("tokens.jsonl"),
        jsonl("words.jsonl"),
    )
}

/// Same structure, equal non-floats, floats within [`REL`]; returns the largest absolute float
/// difference seen.
fn close(dev: &Value, host: &Value, path: &str) -> f64 {
    match (dev, host) {
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{path}: keys"
            );
            a.iter()
                .map(|(k, v)| close(v, &b[k], &format!("{path}.{k}")))
                .fold(0.0, f64::max)
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            a.iter()
                .zip(b)
                .enumerate()
                .map(|(i, (x, y))| close(x, y, &format!("{path}[{i}]")))
                .fold(0.0, f64::max)
        }
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let d = (x - y).abs();
            assert!(d <= REL * y.abs().max(1.0), "{path}: device {x}, host {y}");
            d
        }
        _ => {
            assert_eq!(dev, host, "{path}");
            0.0
        }
    }
}

/// Runs `args` with `--stats-on device` and `--stats-on host` and checks they agree; returns the
/// device run's summary.
fn device_matches_host(what: &str, args: &[&str]) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let with = |on: &str| {
        let mut a = args.to_vec();
        a.extend(["--stats-on", on]);
        run_in(&a, &tmp.path().join(on))
    };
    let (mut sd, td, wd) = with("device");
    let (mut sh, th, wh) = with("host");
    assert_eq!(sd["stats_on"], "device");
    assert_eq!(sh["stats_on"], "host");
    for s in [&mut sd, &mut sh] {
        let m = s.as_object_mut().unwrap();
        for k in [
            "tokens_per_second",
            "elapsed_seconds",
            "started_at",
            "finished_at",
            "stats_on",
        ] {
            m.remove(k);
        }
    }
    let ds = close(&sd, &sh, &format!("{what} summary"));
    let dt = close(
        &Value::from(td.clone()),
        &Value::from(th),
        &format!("{what} tokens"),
    );
    let dw = close(
        &Value::from(wd.clone()),
        &Value::from(wh),
        &format!("{what} words"),
    );
    assert!(td.len() > 500 && wd.len() > 100, "{what}: too few rows");
    println!(
        "{what}: max |device - host| summary {ds:.2e}, token rows {dt:.2e}, word rows {dw:.2e}"
    );
    sd
}

fn model_args<'a>(cmd: &'a str, model: &'a str) -> Vec<&'a str> {
    let mut a = vec![cmd, "--model", model, "--data", DATA];
    a.extend(PROTOCOL);
    a
}

#[test]
fn eval_device_stats_match_host_stats() {
    let llama = fixture("llama");
    let s = device_matches_host("eval", &model_args("eval", s(&llama)));
    assert_eq!(s["tokens_scored"], 602);
    assert_eq!(s["dtype"], "f32", "--dtype defaults to f32 on the CPU");
}

#[test]
fn compare_device_stats_match_host_stats() {
    let (llama, untied) = (fixture("llama"), fixture("llama_untied"));
    let mut args = model_args("compare", s(&llama));
    args.extend(["--reference", s(&untied)]);
    let s = device_matches_host("compare", &args);
    assert!(s["mean_kl_nats"].as_f64().unwrap() > 0.1);
}

#[test]
fn quantized_gguf_device_stats_match_host_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let g = tmp.path().join("llama.q8_0.gguf");
    fixture_to_gguf(&fixture("llama"), &g, GgmlDType::Q8_0);
    device_matches_host("gguf eval", &model_args("eval", s(&g)));
}

#[test]
fn auto_is_host_on_the_cpu_and_the_config_key_works() {
    let tmp = tempfile::tempdir().unwrap();
    let llama = fixture("llama");
    let args = model_args("eval", s(&llama));
    let (s_auto, _, _) = run_in(&args, &tmp.path().join("auto"));
    assert_eq!(s_auto["stats_on"], "host");
    let cfg = write(&tmp.path().join("c.toml"), "stats-on = \"device\"\n");
    let mut a = args.clone();
    a.extend(["--config", s(&cfg)]);
    let (s_cfg, _, _) = run_in(&a, &tmp.path().join("cfg"));
    assert_eq!(s_cfg["stats_on"], "device");
    // a flag on the command line wins over the file
    a.extend(["--stats-on", "host"]);
    let (s_flag, _, _) = run_in(&a, &tmp.path().join("flag"));
    assert_eq!(s_flag["stats_on"], "host");
    // a bad value in the file is a clean error naming the file and the line
    let bad = write(
        &tmp.path().join("bad.toml"),
        "window = 64\nstats-on = \"gpu\"\n",
    );
    let out = tmp.path().join("bad-out");
    let mut b = args.clone();
    b.extend(["--config", s(&bad), "--out", s(&out)]);
    assert_clean_error(&run(&b), Some(&out), &["bad.toml:2", "gpu"]);
}
