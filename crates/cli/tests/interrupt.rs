//! Ctrl-C (SIGINT) during `surprisal eval`: a checkpoint of the finished batches, exit status 130, a hint
//! to resume; `--resume` then finishes with the numbers of an uninterrupted run.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixture() -> PathBuf {
    surprisal_testkit::fixture("llama")
}

const PARAGRAPH: &str = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\n\
Speak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\n\
Resolved. resolved.\n\nFirst Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.\n\n";

fn command(data: &Path, out: Option<&Path>, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_surprisal"));
    c.args(["eval", "--model"])
        .arg(fixture())
        .arg("--data")
        .arg(data)
        .args(["--window", "128", "--stride", "64", "--quiet"])
        .args(extra)
        .env_remove("SURPRISAL_LOG")
        .env("HF_HUB_OFFLINE", "1");
    if let Some(o) = out {
        c.arg("--out").arg(o).args([
            "--words",
            "--per-token",
            "jsonl",
            "--checkpoint-seconds",
            "0",
        ]);
    }
    c
}

fn sigint(child: &Child) {
    signal(child, "-INT");
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("cannot run kill");
    assert!(st.success());
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// Waits until `dir/checkpoint.json` records at least one finished window.
fn wait_for_checkpoint(dir: &Path, child: &mut Child) {
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("checkpoint.json")) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if v["windows_done"].as_u64().unwrap_or(0) >= 1 {
                    return;
                }
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended ({st:?}) before it could be interrupted; use more text");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs with `--out`, sends `sig` after the first checkpointed window, and checks: exit 130, the hint,
/// an incomplete checkpoint, and that `--resume` ends with the uninterrupted run's numbers and rows.
fn interrupt_then_resume_matches_uninterrupted_run(sig: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("text.txt");
    std::fs::write(&data, PARAGRAPH.repeat(40)).unwrap();

    let full = tmp.path().join("full");
    let st = command(&data, Some(&full), &[]).status().unwrap();
    assert!(st.success());

    let out = tmp.path().join("interrupted");
    let mut child = command(&data, Some(&out), &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(&out, &mut child);
    signal(&child, sig);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "stderr:\n{err}");
    assert!(
        err.contains("rerun the same command with --resume"),
        "{err}"
    );
    assert!(err.contains(&out.display().to_string()), "{err}");
    let ck = json(&out.join("checkpoint.json"));
    assert_eq!(ck["complete"], false);
    let done = ck["windows_done"].as_u64().unwrap();
    assert!(done >= 1);
    assert!(!out.join("summary.json").exists());

    let o = command(&data, Some(&out), &["--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        json(&full.join("summary.json")),
        json(&out.join("summary.json")),
    );
    assert!(
        b["windows"].as_u64().unwrap() > done,
        "interrupted after the last window"
    );
    assert_eq!(a["tokens_scored"], b["tokens_scored"]);
    let (x, y) = (
        a["sum_nll_nats"].as_f64().unwrap(),
        b["sum_nll_nats"].as_f64().unwrap(),
    );
    assert!((x - y).abs() <= 1e-12 * x.abs(), "{x} vs {y}");
    for name in ["tokens.jsonl", "words.jsonl"] {
        assert_eq!(
            std::fs::read(full.join(name)).unwrap(),
            std::fs::read(out.join(name)).unwrap(),
            "{name} differs after interrupt + resume"
        );
    }
}

#[test]
fn ctrl_c_checkpoints_exits_130_and_resume_matches_uninterrupted_run() {
    interrupt_then_resume_matches_uninterrupted_run("-INT");
}

/// SIGTERM (what Slurm's requeue and preemption and a Kubernetes pod eviction send before SIGKILL) is
/// handled as Ctrl-C is: the finished batches are checkpointed and `--resume` continues from there.
#[test]
fn sigterm_checkpoints_like_ctrl_c_and_resume_matches_uninterrupted_run() {
    interrupt_then_resume_matches_uninterrupted_run("-TERM");
}

#[test]
fn ctrl_c_without_out_exits_130_and_says_nothing_was_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("text.txt");
    // long enough to outlast the 1.5 s below on a fast machine (200 repeats took < 1.5 s)
    std::fs::write(&data, PARAGRAPH.repeat(3000)).unwrap();
    let mut child = command(&data, None, &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the handler is installed first thing; give the process time to get into the run
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be interrupted"
    );
    sigint(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "stderr:\n{err}");
    assert!(err.contains("nothing was saved"), "{err}");
}
