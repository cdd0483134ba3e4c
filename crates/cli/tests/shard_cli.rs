//! Sharded runs through the binary, on the fixture model: shards from `SLURM_ARRAY_TASK_ID`,
//! `JOB_COMPLETION_INDEX` and `--shard` merged with `surprisal merge` equal the unsharded run; a shard
//! killed with `kill -9` and resumed; merge refusals; the output-directory lock.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;
use surprisal_runner::output::lock::DirLock;
use surprisal_runner::rows::{read_rows, TokenRow, WordRow};

const SCHEDULER_VARS: [&str; 4] = [
    "SURPRISAL_SHARD",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
];

/// `surprisal <args> --quiet` with exactly the scheduler variables in `env`.
fn command(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).arg("--quiet").env_remove("SURPRISAL_LOG");
    for v in SCHEDULER_VARS {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run_env(args: &[&str], env: &[(&str, String)]) -> Output {
    command(args, env).output().expect("cannot start surprisal")
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    model: PathBuf,
}

impl Fixture {
    fn new(paragraphs: usize) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        // several documents (blank-line separated paragraphs are one file here: use JSONL)
        let lines: Vec<String> = (0..paragraphs)
            .map(|k| serde_json::json!({ "text": text(1 + k % 3) }).to_string())
            .collect();
        let data = write(&root.join("d.jsonl"), lines.join("\n") + "\n");
        Fixture {
            _tmp: tmp,
            root,
            data,
            model: fixture("llama"),
        }
    }

    fn args<'a>(&'a self, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "eval",
            "--model",
            s(&self.model),
            "--data",
            s(&self.data),
            "--out",
            s(out),
            "--protocol",
            "sliding",
            "--window",
            "48",
            "--stride",
            "16",
            "--per-token",
            "jsonl",
            "--words",
        ];
        a.extend_from_slice(extra);
        a
    }
}

fn assert_same_as_whole(whole: &Path, merged: &Path) {
    let a = read_json(&whole.join("summary.json"));
    let b = read_json(&merged.join("summary.json"));
    assert_eq!(a["tokens_scored"], b["tokens_scored"]);
    assert!(b["merged_shards"].as_u64().is_some());
    for k in [
        "sum_nll_nats",
        "mean_nll_nats",
        "mean_nll_nats_stderr",
        "perplexity",
        "mean_entropy_nats",
    ] {
        let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-12 * x.abs(), "{k}: {x} vs {y}");
    }
    for k in ["windows", "bytes_scored", "top1_accuracy"] {
        assert_eq!(a[k], b[k], "{k}");
    }
    for k in ["by_position", "calibration_bins"] {
        let (xs, ys) = (a[k].as_array().unwrap(), b[k].as_array().unwrap());
        assert_eq!(xs.len(), ys.len(), "{k}");
        for (p, q) in xs.iter().zip(ys) {
            assert_eq!(p["count"], q["count"], "{k}");
        }
    }
    assert_eq!(
        read_rows::<TokenRow>(&whole.join("tokens.jsonl")).unwrap(),
        read_rows::<TokenRow>(&merged.join("tokens.jsonl")).unwrap()
    );
    assert_eq!(
        std::fs::read(whole.join("tokens.jsonl")).unwrap(),
        std::fs::read(merged.join("tokens.jsonl")).unwrap(),
        "tokens.jsonl bytes"
    );
    let (wa, wb) = (
        read_rows::<WordRow>(&whole.join("words.jsonl")).unwrap(),
        read_rows::<WordRow>(&merged.join("words.jsonl")).unwrap(),
    );
    assert!(!wa.is_empty());
    assert_eq!(wa, wb, "word rows");
}

#[test]
fn slurm_kubernetes_and_flag_shards_merge_to_the_unsharded_run() {
    let f = Fixture::new(9);
    let whole = f.root.join("whole");
    assert_ok(&run_env(&f.args(&whole, &[]), &[]));

    // Slurm array: index from SLURM_ARRAY_TASK_ID, count from SLURM_ARRAY_TASK_COUNT
    let slurm = f.root.join("slurm");
    for i in 0..3 {
        let env = [
            ("SLURM_ARRAY_TASK_ID", i.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", "3".into()),
        ];
        assert_ok(&run_env(&f.args(&slurm, &[]), &env));
    }
    let s1 = read_json(&slurm.join("shard-00001-of-00003/summary.json"));
    assert_eq!(
        s1["shard"]["source"],
        "SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT"
    );
    assert_ok(&run_env(&["merge", s(&slurm)], &[]));
    assert_same_as_whole(&whole, &slurm);

    // Kubernetes Indexed Job: JOB_COMPLETION_INDEX with --shards
    let k8s = f.root.join("k8s");
    for i in 0..2 {
        let env = [("JOB_COMPLETION_INDEX", i.to_string())];
        assert_ok(&run_env(&f.args(&k8s, &["--shards", "2"]), &env));
    }
    assert_ok(&run_env(&["merge", s(&k8s)], &[]));
    assert_same_as_whole(&whole, &k8s);

    // --shard wins over the environment
    let flag = f.root.join("flag");
    for i in 0..4 {
        let spec = format!("{i}/4");
        let env = [("SURPRISAL_SHARD", "0/9".to_string())];
        assert_ok(&run_env(&f.args(&flag, &["--shard", &spec]), &env));
    }
    let s3 = read_json(&flag.join("shard-00003-of-00004/summary.json"));
    assert_eq!(s3["shard"]["source"], "--shard");
    // a finished shard run again (a scheduler retry) is a no-op
    let before = std::fs::read(flag.join("shard-00003-of-00004/summary.json")).unwrap();
    assert_ok(&run_env(&f.args(&flag, &["--shard", "3/4"]), &[]));
    assert_eq!(
        std::fs::read(flag.join("shard-00003-of-00004/summary.json")).unwrap(),
        before
    );
    let merged = run_env(&["merge", s(&flag)], &[]);
    assert_ok(&merged);
    assert_same_as_whole(&whole, &flag);
}

#[test]
fn a_shard_killed_with_sigkill_resumes_and_merges_to_the_unsharded_run() {
    let f = Fixture::new(24);
    let whole = f.root.join("whole");
    assert_ok(&run_env(&f.args(&whole, &[]), &[]));
    let out = f.root.join("sharded");
    let shard1 = out.join("shard-00001-of-00002");
    let env = |i: u32| [("SURPRISAL_SHARD", format!("{i}/2"))];
    let args = f.args(&out, &["--checkpoint-seconds", "0"]);
    // start shard 1 and kill it once a row part is finalized
    let mut child = command(&args, &env(1))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let part = shard1.join("tokens.parts/part-000001.jsonl");
    let outcome = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!(
                "shard 1 finished ({status}) before it could be killed; use more data"
            ));
        }
        if part.exists() {
            child.kill().unwrap(); // SIGKILL
            break Ok(());
        }
        if t0.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            break Err("no checkpoint within 60 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.wait().unwrap();
    outcome.unwrap();
    let ck = read_json(&shard1.join("checkpoint.json"));
    assert_eq!(ck["complete"], false);
    // merge refuses the unfinished shard, naming it
    assert_ok(&run_env(&args, &env(0)));
    let e = run_env(&["merge", s(&out)], &[]);
    assert_clean_error(&e, None, &["shard-00001-of-00002", "not finished"]);
    // without --resume the killed shard is not silently restarted
    let again = run_env(&args, &env(1));
    assert_clean_error(&again, None, &["--resume"]);
    let mut resume = args.clone();
    resume.push("--resume");
    assert_ok(&run_env(&resume, &env(1)));
    assert_ok(&run_env(&["merge", s(&out)], &[]));
    assert_same_as_whole(&whole, &out);
}

#[test]
fn merge_refusals_and_the_lock_exit_2_with_one_line() {
    let f = Fixture::new(4);
    let out = f.root.join("out");
    assert_ok(&run_env(&f.args(&out, &["--shard", "0/3"]), &[]));
    assert_ok(&run_env(&f.args(&out, &["--shard", "2/3"]), &[]));
    let e = run_env(&["merge", s(&out)], &[]);
    assert_clean_error(
        &e,
        None,
        &["shard 1 of 3 is missing", "shard-00001-of-00003"],
    );
    // a shard of another shard count
    assert_ok(&run_env(&f.args(&out, &["--shard", "1/2"]), &[]));
    let e = run_env(&["merge", s(&out)], &[]);
    assert_clean_error(&e, None, &["shard-00001-of-00002", "one of 2 shards"]);

    // the lock: a second writer is refused with the holder's PID, exit 2
    let busy = f.root.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let held = DirLock::acquire(&busy).unwrap();
    let e = run_env(&f.args(&busy, &[]), &[]);
    let msg = assert_clean_error(&e, None, &["in use by another surprisal process"]);
    assert!(
        msg.contains(&format!("PID {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains(s(&busy)), "{msg}");
    drop(held);
    assert_ok(&run_env(&f.args(&busy, &[]), &[]));

    // bad shard settings
    let e = run_env(&f.args(&out, &["--shard", "3/3"]), &[]);
    assert_clean_error(&e, None, &["3/3"]);
    let e = run_env(&f.args(&out, &["--shards", "4"]), &[]);
    assert_clean_error(&e, None, &["--shards 4 needs a shard index"]);
    let e = run_env(
        &f.args(&out, &[]),
        &[("JOB_COMPLETION_INDEX", "1".to_string())],
    );
    assert_clean_error(&e, None, &["JOB_COMPLETION_INDEX", "--shards N"]);
}
