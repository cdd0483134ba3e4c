//! kill -9 drill (short CI version of `scripts/drills/kill_resume.sh`): a run killed 3 times at random points and
//! resumed gives the same tokens_scored, sum_nll_nats (1e-12 relative) and per-token rows file as an
//! uninterrupted run. Also checks the hidden `--checkpoint-seconds` flag the drill depends on.

mod support;

use std::process::Command;

use support::*;

#[test]
fn killed_three_times_then_resumed_matches_uninterrupted_run() {
    let script = repo_root().join("scripts/drills/kill_resume.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("3")
        .env("SURPRISAL_BIN", bin())
        .env_remove("KEEP")
        .env_remove("KILL_RESUME_ARGS")
        .output()
        .expect("cannot run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kill_resume.sh failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    assert!(stdout.contains("OK: the resumed run matches"), "{stdout}");
    let kills: u32 = stdout
        .split("kills: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no kill count in:\n{stdout}"));
    assert!(kills >= 1, "no run was actually killed:\n{stdout}");
}

#[test]
fn checkpoint_seconds_zero_checkpoints_every_batch_and_keeps_numbers() {
    // with a checkpoint (and a finalized row part) after every batch, the result must not change
    let tmp = tempfile::tempdir().unwrap();
    let data = write(&tmp.path().join("d.txt"), text(4));
    let model = fixture("llama");
    let go = |out: &str, extra: &[&str]| {
        let out = tmp.path().join(out);
        let mut args = vec![
            "eval",
            "--model",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--window",
            "64",
        ];
        args.extend_from_slice(extra);
        assert_ok(&run(&args));
        out
    };
    let a = go("a", &[]);
    let b = go("b", &["--checkpoint-seconds", "0"]);
    assert_eq!(
        summary_numbers(&a.join("summary.json"))["sum_nll_nats"],
        summary_numbers(&b.join("summary.json"))["sum_nll_nats"]
    );
    assert_eq!(
        std::fs::read(a.join("tokens.parquet")).unwrap(),
        std::fs::read(b.join("tokens.parquet")).unwrap(),
        "tokens.parquet depends on the checkpoint interval"
    );
    // the flag is also accepted from a --config file
    let cfg = write(&tmp.path().join("c.toml"), "checkpoint-seconds = 0\n");
    go("c", &["--config", s(&cfg)]);
}

/// A crash window at the end of a run: the row parts used to be deleted *before* the checkpoint was
/// marked complete, so a kill -9 in between left a checkpoint counting parts that no longer existed
/// and every `--resume` failed. Now the parts are deleted only after the complete mark, and a resume
/// that finds a complete run with parts still staged (a kill right after the mark) removes them.
#[test]
fn complete_run_with_leftover_parts_resumes_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(&tmp.path().join("d.txt"), text(4));
    let out = tmp.path().join("out");
    let model = fixture("llama");
    let args = [
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--window",
        "64",
        "--checkpoint-seconds",
        "0",
    ];
    assert_ok(&run(&args));
    assert!(
        !out.join("tokens.parts").exists(),
        "a finished run leaves no staged parts"
    );
    let expected = summary_numbers(&out.join("summary.json"));
    // the state of a kill right after the complete mark: parts still staged
    std::fs::create_dir_all(out.join("tokens.parts")).unwrap();
    std::fs::write(out.join("tokens.parts").join("part-000000.jsonl"), b"{}\n").unwrap();
    let mut resume = args.to_vec();
    resume.push("--resume");
    assert_ok(&run(&resume));
    assert!(!out.join("tokens.parts").exists());
    let got = summary_numbers(&out.join("summary.json"));
    assert_eq!(got["tokens_scored"], expected["tokens_scored"]);
    assert_eq!(got["sum_nll_nats"], expected["sum_nll_nats"]);
}

/// Resuming names the same model by another path spelling (`dir/../dir`): the checkpoint identifies
/// models by canonical path and file hashes, so the resume is accepted.
#[test]
fn resume_accepts_the_same_model_spelled_differently() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(&tmp.path().join("d.txt"), text(2));
    let out = tmp.path().join("out");
    let model = fixture("llama");
    let respelled = model.join("..").join("llama");
    let args = |m: &std::path::Path| {
        vec![
            "eval".to_string(),
            "--model".into(),
            s(m).into(),
            "--data".into(),
            s(&data).into(),
            "--out".into(),
            s(&out).into(),
            "--window".into(),
            "64".into(),
        ]
    };
    let first: Vec<String> = args(&model);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    assert_ok(&run(&first));
    let mut again = args(&respelled);
    again.push("--resume".into());
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    assert_ok(&run(&again));
}
