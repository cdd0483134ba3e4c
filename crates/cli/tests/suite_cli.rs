//! `surprisal suite run`, `surprisal history` and `gate --baseline previous` through the binary, on
//! a suite of 2 fixture "checkpoints" (`ckpts/checkpoint-2` = the `llama` fixture,
//! `ckpts/checkpoint-10` = `llama_untied`, so the glob's step order is not the names' order)
//! × 2 small datasets (`compare_text.txt`, `fixture_text.txt`):
//!
//! * every pair is an ordinary run directory whose numbers equal a plain `surprisal eval` of the
//!   same model, data and flags; a rerun skips every pair and changes nothing;
//! * `history` table / JSON / CSV: each run's value, stderr and CI equal its `summary.json`; the
//!   macro-average per checkpoint is recomputed here from the summaries;
//! * `--shard I/N` splits the pairs; a corrupt `results.db` is a clear error for `history` and is
//!   moved aside and rebuilt by `suite run`; a lost database is re-registered from the run dirs;
//! * `--gate previous`: exit 1 when a checkpoint regresses beyond the tolerance, 0 within it; the
//!   JUnit file validated with `xmllint --schema` against the Jenkins xUnit JUnit XSD
//!   (`tests/data/junit-10.xsd`, provenance in `tests/data/junit-10.xsd.md`); `gate --baseline
//!   previous` finds the same baseline;
//! * a suite killed with SIGKILL mid-run and rerun gives the same numbers and token rows as an
//!   uninterrupted one.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use support::{
    assert_clean_error, assert_ok, bin, copy_dir, fixture, read_json, repo_root, s, write,
};

fn data_a() -> PathBuf {
    repo_root().join("crates/cli/tests/data/compare_text.txt")
}

fn data_b() -> PathBuf {
    repo_root().join("crates/cli/tests/data/fixture_text.txt")
}

/// The protocol of every suite here, as `eval` flags.
const EVAL_FLAGS: [&str; 6] = ["--window", "64", "--stride", "32", "--bos", "never"];

/// The `[run]` table of the suites here (the protocol of [`EVAL_FLAGS`]).
const RUN: &str = "protocol = \"sliding\"\nwindow = 64\nstride = 32\nbos = \"never\"";

/// A suite file in `dir` over `dir/ckpts/checkpoint-*` with this `[run]` table.
fn suite_file(dir: &Path, run: &str, data_a: &Path, data_b: &Path) -> PathBuf {
    for (step, model) in [(2, "llama"), (10, "llama_untied")] {
        let d = dir.join(format!("ckpts/checkpoint-{step}"));
        if !d.exists() {
            copy_dir(&fixture(model), &d);
        }
    }
    let text = format!(
        "name = \"fixture-suite\"\n\
         [run]\n{run}\n\
         [[models]]\nname = \"exp\"\nglob = \"{}/ckpts/checkpoint-*\"\n\
         [[datasets]]\nname = \"a\"\ndata = \"{}\"\n\
         [[datasets]]\nname = \"b\"\ndata = \"{}\"\n",
        dir.display(),
        data_a.display(),
        data_b.display()
    );
    write(&dir.join("suite.toml"), text)
}

/// `surprisal ARGS` without `--quiet` (stdout is checked), logging at warn.
fn run_loud(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("SURPRISAL_LOG")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cannot start surprisal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> Option<i32> {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    o.status.code()
}

/// The pair directories under `results/runs`, sorted by name.
fn pair_dirs(results: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(results.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// (step, dataset) of a pair directory `exp-stepN__D__hex`.
fn key(dir: &Path) -> (u64, String) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let parts: Vec<&str> = name.split("__").collect();
    assert_eq!(parts.len(), 3, "{name}");
    let step = parts[0].strip_prefix("exp-step").unwrap().parse().unwrap();
    assert_eq!(parts[2].len(), 12, "{name}");
    (step, parts[1].to_string())
}

struct Suite {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    suite: PathBuf,
    results: PathBuf,
    first_stdout: String,
}

/// One suite run shared by the read-only tests.
fn suite() -> &'static Suite {
    static S: OnceLock<Suite> = OnceLock::new();
    S.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let suite = suite_file(&dir, RUN, &data_a(), &data_b());
        let results = dir.join("results");
        let o = run_loud(&["suite", "run", s(&suite), "--results", s(&results)]);
        assert_ok(&o);
        Suite {
            first_stdout: stdout(&o),
            _tmp: tmp,
            dir,
            suite,
            results,
        }
    })
}

fn summaries(results: &Path) -> BTreeMap<(u64, String), Value> {
    pair_dirs(results)
        .iter()
        .map(|d| (key(d), read_json(&d.join("summary.json"))))
        .collect()
}

#[test]
fn suite_runs_every_pair_as_an_ordinary_run_and_a_rerun_skips_them() {
    let st = suite();
    let dirs = pair_dirs(&st.results);
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    let keys: Vec<(u64, String)> = dirs.iter().map(|d| key(d)).collect();
    for k in [(2, "a"), (2, "b"), (10, "a"), (10, "b")] {
        assert!(keys.contains(&(k.0, k.1.to_string())), "{keys:?}");
    }
    // one line per finished pair, in suite order: step 2 before step 10 (numeric, not by name)
    let lines: Vec<&str> = st
        .first_stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .collect();
    assert_eq!(lines.len(), 4, "{}", st.first_stdout);
    for (l, want) in lines
        .iter()
        .zip(["exp@2 × a", "exp@2 × b", "exp@10 × a", "exp@10 × b"])
    {
        assert!(
            l.contains(want) && l.contains(": done, mean_nll_nats"),
            "{l}"
        );
    }
    // the pair equals a plain eval of the same model, data and protocol
    let out = st.dir.join("plain-eval");
    let (model, data) = (st.dir.join("ckpts/checkpoint-10"), data_b());
    let mut a = vec![
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ];
    a.extend_from_slice(&EVAL_FLAGS);
    assert_ok(&support::run(&a));
    let plain = read_json(&out.join("summary.json"));
    let sums = summaries(&st.results);
    let pair = &sums[&(10, "b".to_string())];
    for k in [
        "tokens_scored",
        "sum_nll_nats",
        "mean_nll_nats",
        "mean_nll_nats_stderr",
    ] {
        assert_eq!(pair[k], plain[k], "{k}");
    }
    assert_eq!(
        std::fs::read(out.join("tokens.parquet")).unwrap(),
        std::fs::read(
            dirs.iter()
                .find(|d| key(d) == (10, "b".into()))
                .unwrap()
                .join("tokens.parquet")
        )
        .unwrap()
    );
    // the rerun: every pair finished before, nothing rewritten
    let before: Vec<Vec<u8>> = dirs
        .iter()
        .map(|d| std::fs::read(d.join("summary.json")).unwrap())
        .collect();
    let o = run_loud(&["suite", "run", s(&st.suite), "--results", s(&st.results)]);
    assert_ok(&o);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines.iter().all(|l| l.contains(": finished before")),
        "{out}"
    );
    assert!(
        out.contains("(0 run now, 4 finished before, 0 busy)"),
        "{out}"
    );
    let after: Vec<Vec<u8>> = dirs
        .iter()
        .map(|d| std::fs::read(d.join("summary.json")).unwrap())
        .collect();
    assert_eq!(before, after);
    assert_eq!(pair_dirs(&st.results).len(), 4);
}

fn history_json(results: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["history", s(results), "--format", "json"];
    a.extend_from_slice(extra);
    let o = run_loud(&a);
    assert_ok(&o);
    serde_json::from_str(&stdout(&o)).unwrap()
}

#[test]
fn history_formats_match_the_summaries_and_the_macro_average() {
    let st = suite();
    let sums = summaries(&st.results);
    let h = history_json(&st.results, &[]);
    let series = h["series"].as_array().unwrap();
    assert_eq!(series.len(), 4);
    // ordered by step, then by finish time
    let steps: Vec<u64> = series
        .iter()
        .map(|p| p["run"]["checkpoint_step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 2, 10, 10]);
    for p in series {
        let k = (
            p["run"]["checkpoint_step"].as_u64().unwrap(),
            p["run"]["dataset_name"].as_str().unwrap().to_string(),
        );
        let sm = &sums[&k];
        assert_eq!(p["metric"], "mean_nll_nats");
        assert_eq!(p["value"], sm["mean_nll_nats"], "{k:?}");
        assert_eq!(p["stderr"], sm["mean_nll_nats_stderr"], "{k:?}");
        let (m, se) = (
            sm["mean_nll_nats"].as_f64().unwrap(),
            sm["mean_nll_nats_stderr"].as_f64().unwrap(),
        );
        assert_eq!(p["ci95"][0].as_f64().unwrap(), m - 1.96 * se);
        assert_eq!(p["ci95"][1].as_f64().unwrap(), m + 1.96 * se);
        assert_eq!(p["run"]["tokens_scored"], sm["tokens_scored"]);
        assert_eq!(p["run"]["data_sha256"], sm["data"]["sha256"]);
        assert_eq!(p["run"]["model_reference"], sm["model_source"]["reference"]);
        assert_eq!(p["run"]["started_at"], sm["started_at"]);
        assert_eq!(p["run"]["finished_at"], sm["finished_at"]);
        assert_eq!(p["run"]["suite"], "fixture-suite");
        assert!(!p["run"]["host"].as_str().unwrap().is_empty());
    }
    // the macro-average per checkpoint, recomputed from the summaries
    let macros = h["macro_average"].as_array().unwrap();
    assert_eq!(macros.len(), 2);
    for (m, step) in macros.iter().zip([2u64, 10]) {
        assert_eq!(m["checkpoint_step"].as_u64(), Some(step));
        assert_eq!(m["datasets"], serde_json::json!(["a", "b"]));
        let a = &sums[&(step, "a".into())];
        let b = &sums[&(step, "b".into())];
        let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
        let want = (f(a, "mean_nll_nats") + f(b, "mean_nll_nats")) / 2.0;
        let want_se = (f(a, "mean_nll_nats_stderr").powi(2) + f(b, "mean_nll_nats_stderr").powi(2))
            .sqrt()
            / 2.0;
        assert!(
            (m["value"].as_f64().unwrap() - want).abs() <= 1e-15 * want,
            "{m}"
        );
        assert!(
            (m["stderr"].as_f64().unwrap() - want_se).abs() <= 1e-15 * want_se,
            "{m}"
        );
    }
    // another metric: perplexity's CI is the summary's own
    let h = history_json(
        &st.results,
        &["--metric", "perplexity", "--data", "a", "--model", "exp@10"],
    );
    let series = h["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    let sm = &sums[&(10, "a".into())];
    assert_eq!(series[0]["value"], sm["perplexity"]);
    assert_eq!(series[0]["ci95"], sm["perplexity_ci95"]);
    assert!(series[0]["stderr"].is_null());

    // CSV: the same numbers, full precision
    let o = run_loud(&["history", s(&st.results), "--format", "csv"]);
    assert_ok(&o);
    let csv = stdout(&o);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.iter().filter(|r| r[col("kind")] == "run").count(), 4);
    assert_eq!(
        rows.iter()
            .filter(|r| r[col("kind")] == "macro_average")
            .count(),
        2
    );
    for r in rows.iter().filter(|r| r[col("kind")] == "run") {
        let k = (
            r[col("checkpoint_step")].parse().unwrap(),
            r[col("dataset")].to_string(),
        );
        let sm = &sums[&k];
        assert_eq!(
            r[col("value")].parse::<f64>().unwrap(),
            sm["mean_nll_nats"].as_f64().unwrap()
        );
        assert_eq!(
            r[col("stderr")].parse::<f64>().unwrap(),
            sm["mean_nll_nats_stderr"].as_f64().unwrap()
        );
        assert_eq!(r[col("tokens_scored")], sm["tokens_scored"].to_string());
    }
    // table: both sections, the values to 6 decimals
    let o = run_loud(&["history", s(&st.results)]);
    assert_ok(&o);
    let t = stdout(&o);
    assert!(t.contains("macro-average over a, b (2 datasets)"), "{t}");
    let v = sums[&(2, "b".into())]["mean_nll_nats"].as_f64().unwrap();
    assert!(t.contains(&format!("{v:.6}")), "{t}");
    // a filter that matches nothing
    let h = history_json(&st.results, &["--model", "nope*"]);
    assert_eq!(h["series"].as_array().unwrap().len(), 0);
    // an unknown metric names the known ones
    let o = run_loud(&["history", s(&st.results), "--metric", "nll"]);
    assert_clean_error(&o, None, &["unknown metric \"nll\"", "mean_nll_nats"]);
}

#[test]
fn shards_split_the_pairs_and_a_lost_or_corrupt_database_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let suite = suite_file(tmp.path(), RUN, &data_a(), &data_b());
    let results = tmp.path().join("results");
    let shard = |i: &str| {
        run_loud(&[
            "suite",
            "run",
            s(&suite),
            "--results",
            s(&results),
            "--shard",
            i,
        ])
    };
    let o0 = shard("0/2");
    assert_ok(&o0);
    assert!(
        stdout(&o0).contains("2 of 4 pairs in this task (2 run now"),
        "{}",
        stdout(&o0)
    );
    assert_eq!(pair_dirs(&results).len(), 2);
    let o1 = shard("1/2");
    assert_ok(&o1);
    assert_eq!(pair_dirs(&results).len(), 4);
    let o = run_loud(&["suite", "run", s(&suite), "--results", s(&results)]);
    assert!(
        stdout(&o).contains("(0 run now, 4 finished before, 0 busy)"),
        "{}",
        stdout(&o)
    );
    let full = history_json(&results, &[]);
    assert_eq!(full["series"].as_array().unwrap().len(), 4);

    // a corrupt database: history refuses it in one line; suite moves it aside and rebuilds it
    let db = results.join("results.db");
    std::fs::write(&db, b"this is not an SQLite database, just text").unwrap();
    let o = run_loud(&["history", s(&results)]);
    assert_clean_error(
        &o,
        None,
        &[
            s(&db),
            "not a readable results database",
            "surprisal suite run",
        ],
    );
    let o = run_loud(&["suite", "run", s(&suite), "--results", s(&results)]);
    assert_ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning:") && err.contains("results.db.corrupt-"),
        "{err}"
    );
    assert!(
        stdout(&o).contains("registered 4 finished run(s)"),
        "{}",
        stdout(&o)
    );
    let aside: Vec<_> = std::fs::read_dir(&results)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("results.db.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    let rebuilt = history_json(&results, &[]);
    // (registration order may differ after a rebuild: compare as sets)
    let strip = |v: &Value| -> Vec<String> {
        let mut r: Vec<String> = v["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{} {} {}", p["run"]["fingerprint"], p["value"], p["stderr"]))
            .collect();
        r.sort();
        r
    };
    assert_eq!(strip(&rebuilt), strip(&full));

    // a lost database (a crash between summary.json and the registration, or a deleted file)
    std::fs::remove_file(&db).unwrap();
    let o = run_loud(&["history", s(&results)]);
    assert_clean_error(&o, None, &[s(&db), "does not exist"]);
    let o = run_loud(&["suite", "run", s(&suite), "--results", s(&results)]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("registered 4 finished run(s)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(strip(&history_json(&results, &[])), strip(&full));

    // a damaged pair file: the sync leaves that run out with a warning, the pair (finished) gets
    // its pair file written again from the plan and is registered; nothing is scored again
    std::fs::remove_file(&db).unwrap();
    let broken = &pair_dirs(&results)[0];
    std::fs::write(broken.join("suite-pair.json"), b"{ not json").unwrap();
    let o = run_loud(&["suite", "run", s(&suite), "--results", s(&results)]);
    assert_ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("left out of the history") && err.contains("suite-pair.json"),
        "{err}"
    );
    assert!(
        stdout(&o).contains("registered 3 finished run(s)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("(0 run now, 4 finished before, 0 busy)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(strip(&history_json(&results, &[])), strip(&full));
}

/// `xmllint --noout --schema tests/data/junit-10.xsd FILE` must accept `file`.
fn assert_valid_junit(file: &Path) {
    let xsd = repo_root().join("crates/cli/tests/data/junit-10.xsd");
    let o = Command::new("xmllint")
        .args(["--noout", "--schema", s(&xsd), s(file)])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run xmllint ({e}): install Debian's libxml2-utils (bash scripts/install_test_deps.sh)")
        });
    assert!(
        o.status.success(),
        "{} does not validate against {}:\n{}\n{}",
        file.display(),
        xsd.display(),
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(file).unwrap()
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("validates"));
}

#[test]
fn gate_previous_exit_codes_markdown_and_schema_valid_junit() {
    let st = suite();
    let tmp = tempfile::tempdir().unwrap();
    let (md, junit) = (tmp.path().join("gate.md"), tmp.path().join("gate.xml"));
    let gate = |tol: &str| {
        run_loud(&[
            "suite",
            "run",
            s(&st.suite),
            "--results",
            s(&st.results),
            "--gate",
            "previous",
            "--max-delta-nll-nats",
            tol,
            "--markdown",
            s(&md),
            "--junit",
            s(&junit),
        ])
    };
    let sums = summaries(&st.results);
    let delta = |d: &str| {
        sums[&(10, d.to_string())]["mean_nll_nats"]
            .as_f64()
            .unwrap()
            - sums[&(2, d.to_string())]["mean_nll_nats"].as_f64().unwrap()
    };
    // llama_untied (step 10) predicts text a better and text b worse than llama (step 2)
    assert!(
        delta("a") < -0.01 && delta("b") > 0.01,
        "{} {}",
        delta("a"),
        delta("b")
    );

    // 602 and 1480 tokens cannot show a change within 0.002 nats at 99 %: both step-10 pairs fail,
    // the improvement on a as well (the gate asks for confidence, see `surprisal gate`)
    let o = gate("0.002");
    assert_eq!(code(&o), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    for d in ["a", "b"] {
        let block = out
            .split(&format!("== exp@10 × {d}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("{out}"));
        assert!(block.starts_with("gate        REGRESSION"), "{out}");
        // the paired mean difference is the difference of the two runs' means
        let est: f64 = block
            .split("delta_nll_nats = ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            (est - delta(d)).abs() <= 1e-12,
            "{d}: {est} vs {}",
            delta(d)
        );
        assert!(block.contains("paired over"), "{out}");
    }
    assert!(
        out.contains("SKIPPED (no previous run of exp on a"),
        "{out}"
    );
    let m = std::fs::read_to_string(&md).unwrap();
    assert!(m.contains("2 of 4 pairs regressed"), "{m}");
    assert_valid_junit(&junit);
    let x = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&x).unwrap();
    let root = doc.root_element();
    assert_eq!(root.attribute("tests"), Some("4"));
    assert_eq!(root.attribute("failures"), Some("2"));
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    assert_eq!(suites.len(), 4);
    assert_eq!(
        suites
            .iter()
            .filter(|n| n.attribute("skipped") == Some("1"))
            .count(),
        2
    );
    let failed: Vec<_> = suites
        .iter()
        .filter(|n| n.attribute("failures") == Some("1"))
        .collect();
    let names: Vec<_> = failed
        .iter()
        .map(|n| n.attribute("name").unwrap())
        .collect();
    assert_eq!(names, ["exp@10 × a", "exp@10 × b"]);
    let fail = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    let msg = fail.attribute("message").unwrap();
    assert!(msg.contains("delta_nll_nats"), "{msg}");
    // the history's `gates` rows: the printed and JUnit numbers, exactly
    let check_recorded = |out: &str, x: &str, verdict: &str, tol: f64| {
        use surprisal_runner::history::{self, Filter};
        let h = history::open(&st.results).unwrap();
        let gates = h.gates(&Filter::default()).unwrap();
        assert_eq!(gates.len(), 2, "{gates:?}");
        let doc = roxmltree::Document::parse(x).unwrap();
        for d in ["a", "b"] {
            let runs = h.runs(&Filter::default()).unwrap();
            let find = |step| {
                runs.iter()
                    .find(|r| r.checkpoint_step == Some(step) && r.dataset_name == d)
                    .unwrap()
            };
            let (cand, base) = (find(10), find(2));
            let g = gates.iter().find(|g| g.run_id == cand.id).unwrap();
            assert_eq!(g.candidate_fingerprint, cand.fingerprint);
            assert_eq!(
                (g.baseline_run_id, g.baseline_fingerprint.as_str()),
                (base.id, base.fingerprint.as_str())
            );
            assert_eq!(
                (g.metric.as_str(), g.pairing.as_str()),
                ("delta_nll_nats", "paired")
            );
            assert_eq!(g.paired_tokens, Some(cand.tokens_scored));
            assert_eq!(
                (g.verdict.as_str(), g.tolerance, g.confidence),
                (verdict, tol, 0.99)
            );
            assert_eq!(g.limit, "at_most");
            let block = out
                .split(&format!("== exp@10 × {d}\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("{out}"));
            let line = format!(
                "delta_nll_nats = {} (stderr {}, paired over {} tokens); upper 99% bound {} {} max {}",
                g.estimate,
                g.stderr,
                cand.tokens_scored,
                g.bound,
                if g.passed() { "<=" } else { ">" },
                g.tolerance
            );
            assert!(block.contains(&line), "{line}\n{out}");
            let suite = doc
                .descendants()
                .find(|n| {
                    n.has_tag_name("testsuite")
                        && n.attribute("name") == Some(&format!("exp@10 × {d}"))
                })
                .unwrap();
            let junit_text: String = suite
                .descendants()
                .flat_map(|n| {
                    n.attributes()
                        .map(|a| a.value().to_string())
                        .chain(n.text().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
                .join("\n");
            for v in [g.estimate, g.stderr, g.bound] {
                assert!(junit_text.contains(&v.to_string()), "{v} in {junit_text}");
            }
        }
    };
    check_recorded(&out, &x, "regression", 0.002);

    // a tolerance above the deltas' bounds passes
    let o = gate("10");
    assert_eq!(code(&o), Some(0), "{}", stdout(&o));
    assert_valid_junit(&junit);
    // gating again replaces the verdicts
    check_recorded(
        &stdout(&o),
        &std::fs::read_to_string(&junit).unwrap(),
        "pass",
        10.0,
    );
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("0 of 4 pairs regressed"));

    // gate --baseline previous: the same baseline from the history
    let cand = pair_dirs(&st.results)
        .into_iter()
        .find(|d| key(d) == (10, "b".into()))
        .unwrap();
    let base = pair_dirs(&st.results)
        .into_iter()
        .find(|d| key(d) == (2, "b".into()))
        .unwrap();
    let single = tmp.path().join("single.xml");
    let o = run_loud(&[
        "gate",
        "--baseline",
        "previous",
        "--candidate",
        s(&cand),
        "--junit",
        s(&single),
    ]);
    assert_eq!(code(&o), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("baseline    {}", base.display())),
        "{}",
        stdout(&o)
    );
    assert_valid_junit(&single);
    let o = run_loud(&[
        "gate",
        "--baseline",
        "previous",
        "--candidate",
        s(&cand),
        "--max-delta-nll-nats",
        "10",
    ]);
    assert_eq!(code(&o), Some(0), "{}", stdout(&o));
    // the first checkpoint has no previous run; a plain directory is not a suite run
    let o = support::run(&["gate", "--baseline", "previous", "--candidate", s(&base)]);
    assert_clean_error(&o, None, &["no earlier finished run of exp on b"]);
    let o = support::run(&[
        "gate",
        "--baseline",
        "previous",
        "--candidate",
        s(tmp.path()),
    ]);
    assert_clean_error(&o, None, &["is not a suite run directory"]);
}

#[test]
fn bad_suite_input_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        &tmp.path().join("s.toml"),
        "[[models]]\npath = \"/nonexistent/model\"\n[[datasets]]\nname = \"d\"\n",
    );
    let o = support::run(&["suite", "run", s(&p), "--results", s(&tmp.path().join("r"))]);
    assert_clean_error(
        &o,
        None,
        &[s(&p), "dataset \"d\" has no data: pass --data d=PATH"],
    );
    let o = support::run(&[
        "suite",
        "run",
        s(&p),
        "--data",
        "d=x.txt",
        "--results",
        s(&tmp.path().join("r")),
    ]);
    assert_clean_error(
        &o,
        None,
        &[s(&p), "models[0]", "/nonexistent/model does not exist"],
    );
    let o = support::run(&["suite", "run", s(&p), "--data", "dx.txt"]);
    assert_clean_error(&o, None, &["--data \"dx.txt\": expected NAME=PATH"]);
    let q = write(&tmp.path().join("q.toml"), "[run]\nwindw = 3\n");
    let o = support::run(&["suite", "run", s(&q)]);
    assert_clean_error(&o, None, &[s(&q), ":2:1", "unknown field `windw`"]);
    let o = support::run(&["suite", "run", s(&tmp.path().join("missing.toml"))]);
    assert_clean_error(&o, None, &["cannot read suite file", "missing.toml"]);
}

/// SIGKILL the suite mid-run (twice), rerun it, and compare with an uninterrupted suite: same
/// pair directories, `sum_nll_nats` and token rows, byte for byte.
#[test]
fn a_killed_suite_resumes_to_the_uninterrupted_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let big = repo_root().join("crates/cli/tests/fixtures/kill_resume.txt");
    let suite = suite_file(
        tmp.path(),
        "window = 128\nstride = 64\nbatch-size = 2",
        &big,
        &data_a(),
    );
    let (a, b) = (tmp.path().join("A"), tmp.path().join("B"));
    let args = |r: &Path| -> Vec<String> {
        [
            "suite",
            "run",
            s(&suite),
            "--results",
            s(r),
            "--quiet",
            "--checkpoint-seconds",
            "0",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let t0 = Instant::now();
    let o = Command::new(bin()).args(args(&a)).output().unwrap();
    assert_ok(&o);
    let dur = t0.elapsed();
    let mut kills = 0;
    for frac in [0.3, 0.5] {
        let mut child = Command::new(bin())
            .args(args(&b))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(dur.mul_f64(frac));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 1, "the suite finished before every kill ({dur:?})");
    let o = Command::new(bin()).args(args(&b)).output().unwrap();
    assert_ok(&o);
    let (da, db) = (pair_dirs(&a), pair_dirs(&b));
    let names = |v: &[PathBuf]| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&da), names(&db));
    for (x, y) in da.iter().zip(&db) {
        let (sx, sy) = (
            read_json(&x.join("summary.json")),
            read_json(&y.join("summary.json")),
        );
        assert_eq!(sx["tokens_scored"], sy["tokens_scored"], "{}", y.display());
        assert_eq!(sx["sum_nll_nats"], sy["sum_nll_nats"], "{}", y.display());
        assert_eq!(
            std::fs::read(x.join("tokens.parquet")).unwrap(),
            std::fs::read(y.join("tokens.parquet")).unwrap(),
            "{}",
            y.display()
        );
        assert!(!y.join("tokens.parts").exists());
    }
    let (ha, hb) = (history_json(&a, &[]), history_json(&b, &[]));
    let vals = |h: &Value| -> Vec<Value> {
        h["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["value"].clone())
            .collect()
    };
    assert_eq!(vals(&ha), vals(&hb));
    assert_eq!(vals(&hb).len(), 4);
}
