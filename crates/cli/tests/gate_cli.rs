//! `surprisal gate` through the binary, on runs of the tiny fixture models over
//! `tests/data/compare_text.txt` (602 scored tokens: sliding, window 128, stride 64, no BOS):
//!
//! * the same model twice (JSON lines vs Parquet rows) → paired over 602 tokens, ΔNLL exactly 0,
//!   exit 0; the JUnit file parsed back (1 test, 0 failures);
//! * `llama_untied` against `llama` → a real difference in NLL, exit 1 at a tight tolerance with the
//!   numbers in the JUnit `<failure>`, exit 0 at a loose one;
//! * a run without per-token rows → the unpaired fallback, said on stdout;
//! * a `compare` candidate → the KL and top-1 gates; on an `eval` candidate they are an input error;
//! * usage and input errors → exit 2 with one line naming the path or flag.
//!
//! The paired and unpaired numbers themselves are checked against NumPy in
//! `surprisal-metrics` (`tests/gate.rs`) and `surprisal-runner` (`gate::tests`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use quick_xml::events::Event;
use quick_xml::{Reader, XmlVersion};
use support::{assert_clean_error, assert_ok, fixture, read_json, repo_root, run, s};

/// Run directories made once for all tests (they only read them).
struct Runs {
    _tmp: tempfile::TempDir,
    tied_jsonl: PathBuf,
    tied_parquet: PathBuf,
    tied_no_rows: PathBuf,
    untied: PathBuf,
    compare_untied_vs_tied: PathBuf,
}

fn protocol_args(out: &Path) -> Vec<String> {
    let text = repo_root().join("crates/cli/tests/data/compare_text.txt");
    [
        "--data",
        s(&text),
        "--protocol",
        "sliding",
        "--window",
        "128",
        "--stride",
        "64",
        "--bos",
        "never",
        "--out",
        s(out),
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn eval(model: &str, out: &Path, per_token: &str) {
    let mut a: Vec<String> = vec!["eval".into(), "--model".into(), s(&fixture(model)).into()];
    a.extend(protocol_args(out));
    a.extend(["--per-token".into(), per_token.into()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_ok(&run(&a));
}

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let p = |n: &str| tmp.path().join(n);
        eval("llama", &p("tied_jsonl"), "jsonl");
        eval("llama", &p("tied_parquet"), "parquet");
        eval("llama", &p("tied_no_rows"), "none");
        eval("llama_untied", &p("untied"), "jsonl");
        let mut a: Vec<String> = vec![
            "compare".into(),
            "--model".into(),
            s(&fixture("llama_untied")).into(),
            "--reference".into(),
            s(&fixture("llama")).into(),
        ];
        a.extend(protocol_args(&p("compare")));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        assert_ok(&run(&a));
        Runs {
            tied_jsonl: p("tied_jsonl"),
            tied_parquet: p("tied_parquet"),
            tied_no_rows: p("tied_no_rows"),
            untied: p("untied"),
            compare_untied_vs_tied: p("compare"),
            _tmp: tmp,
        }
    })
}

fn gate(baseline: &Path, candidate: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "gate",
        "--baseline",
        s(baseline),
        "--candidate",
        s(candidate),
    ];
    a.extend_from_slice(extra);
    // no --quiet: the report on stdout is part of what is tested
    std::process::Command::new(support::bin())
        .args(&a)
        .output()
        .expect("run surprisal gate")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status(o: &Output) -> Option<i32> {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    o.status.code()
}

/// Counts of the JUnit document read back: (testsuites, testsuite, testcase, failure) elements,
/// the `tests`/`failures` attributes of `<testsuites>`, and the failure messages.
#[derive(Debug, Default)]
struct Junit {
    suites_elements: usize,
    suite_elements: usize,
    testcases: Vec<String>,
    failure_messages: Vec<String>,
    tests_attr: Option<usize>,
    failures_attr: Option<usize>,
}

fn read_junit(p: &Path) -> Junit {
    let xml = std::fs::read_to_string(p).unwrap();
    let mut r = Reader::from_str(&xml);
    let mut j = Junit::default();
    let mut depth_names: Vec<String> = Vec::new();
    loop {
        let ev = r
            .read_event()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let (e, empty) = match ev {
            Event::Start(e) => (e, false),
            Event::Empty(e) => (e, true),
            Event::End(_) => {
                depth_names.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
        let attr = |k: &str| {
            e.attributes()
                .map(|a| a.unwrap())
                .find(|a| a.key.as_ref() == k.as_bytes())
                .map(|a| {
                    a.normalized_value(XmlVersion::Implicit1_0)
                        .unwrap()
                        .into_owned()
                })
        };
        let parent = depth_names.last().map(String::as_str);
        match name.as_str() {
            "testsuites" => {
                assert_eq!(parent, None);
                j.suites_elements += 1;
                j.tests_attr = attr("tests").map(|v| v.parse().unwrap());
                j.failures_attr = attr("failures").map(|v| v.parse().unwrap());
            }
            "testsuite" => {
                assert_eq!(parent, Some("testsuites"));
                j.suite_elements += 1;
            }
            "testcase" => {
                assert_eq!(parent, Some("testsuite"));
                j.testcases.push(attr("name").unwrap());
            }
            "failure" => {
                assert_eq!(parent, Some("testcase"));
                assert_eq!(attr("type").as_deref(), Some("regression"));
                j.failure_messages.push(attr("message").unwrap());
            }
            _ => {}
        }
        if !empty {
            depth_names.push(name);
        }
    }
    assert_eq!(j.suites_elements, 1);
    assert_eq!(j.suite_elements, 1);
    assert_eq!(j.tests_attr, Some(j.testcases.len()));
    assert_eq!(j.failures_attr, Some(j.failure_messages.len()));
    j
}

#[test]
fn same_model_twice_is_paired_with_delta_exactly_zero_and_passes() {
    let r = runs();
    let tmp = tempfile::tempdir().unwrap();
    let (md, xml) = (tmp.path().join("gate.md"), tmp.path().join("gate.xml"));
    let o = gate(
        &r.tied_jsonl,
        &r.tied_parquet,
        &["--markdown", s(&md), "--junit", s(&xml)],
    );
    let out = stdout(&o);
    assert_eq!(status(&o), Some(0), "{out}");
    assert!(out.starts_with("gate        PASS"), "{out}");
    assert!(out.contains("paired over 602 tokens"), "{out}");
    assert!(
        out.contains("delta_nll_nats = 0 (stderr 0, paired over 602 tokens); upper 99% bound 0 <= max 0.002: pass"),
        "{out}"
    );
    let j = read_junit(&xml);
    assert_eq!(j.testcases, ["delta_nll_nats"]);
    assert!(j.failure_messages.is_empty());
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.starts_with("### surprisal gate: ✅ PASS"), "{md}");
    assert!(
        md.contains("| `delta_nll_nats` | 0 | 0 (paired over 602 tokens) |"),
        "{md}"
    );
}

#[test]
fn another_model_is_a_regression_at_a_tight_tolerance() {
    let r = runs();
    let b = read_json(&r.tied_jsonl.join("summary.json"));
    let c = read_json(&r.untied.join("summary.json"));
    let (bm, cm) = (
        b["mean_nll_nats"].as_f64().unwrap(),
        c["mean_nll_nats"].as_f64().unwrap(),
    );
    // the two random-weight fixtures differ by far more than the tolerance, in either direction;
    // the worse one is the candidate
    let (base, cand) = if cm > bm {
        (&r.tied_jsonl, &r.untied)
    } else {
        (&r.untied, &r.tied_jsonl)
    };
    let gap = (cm - bm).abs();
    assert!(gap > 0.01, "fixtures too close: {bm} vs {cm}");
    let tmp = tempfile::tempdir().unwrap();
    let xml = tmp.path().join("gate.xml");
    let md = tmp.path().join("gate.md");
    let o = gate(
        base,
        cand,
        &[
            "--max-delta-nll-nats",
            "0.001",
            "--junit",
            s(&xml),
            "--markdown",
            s(&md),
        ],
    );
    let out = stdout(&o);
    assert_eq!(status(&o), Some(1), "{out}");
    assert!(
        out.starts_with("gate        REGRESSION (1 of 1 gates failed)"),
        "{out}"
    );
    assert!(out.contains("paired over 602 tokens"), "{out}");
    let j = read_junit(&xml);
    assert_eq!(j.testcases, ["delta_nll_nats"]);
    assert_eq!(j.failure_messages.len(), 1);
    let m = &j.failure_messages[0];
    assert!(
        m.starts_with("delta_nll_nats = ") && m.contains("> max 0.001: REGRESSION"),
        "{m}"
    );
    // the paired estimate is the difference of the means (same tokens)
    let est: f64 = m["delta_nll_nats = ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((est - gap).abs() < 1e-9, "{est} vs {gap}");
    assert!(std::fs::read_to_string(&md)
        .unwrap()
        .contains("**regression**"));
    // a loose tolerance passes the same pair
    let o = gate(base, cand, &["--max-delta-nll-nats", "10"]);
    assert_eq!(status(&o), Some(0), "{}", stdout(&o));
}

#[test]
fn without_token_rows_the_gate_is_unpaired_and_says_so() {
    let r = runs();
    let o = gate(&r.tied_jsonl, &r.tied_no_rows, &[]);
    let out = stdout(&o);
    // ΔNLL is exactly 0, but the unpaired standard error (per-token difficulty included) is far
    // wider than the default tolerance: the same model cannot pass without pairing
    assert_eq!(status(&o), Some(1), "{out}");
    assert!(
        out.contains("unpaired (the candidate has no per-token rows"),
        "{out}"
    );
    assert!(out.contains("delta_nll_nats = 0 (stderr "), "{out}");
    let o = gate(
        &r.tied_jsonl,
        &r.tied_no_rows,
        &["--max-delta-nll-nats", "1"],
    );
    assert_eq!(status(&o), Some(0), "{}", stdout(&o));
}

#[test]
fn kl_and_top1_gates_read_a_compare_candidate() {
    let r = runs();
    let tmp = tempfile::tempdir().unwrap();
    let xml = tmp.path().join("gate.xml");
    // the compare run's model is llama_untied: paired with the eval run of llama_untied, ΔNLL 0
    let o = gate(
        &r.untied,
        &r.compare_untied_vs_tied,
        &[
            "--max-kl-nats",
            "1000",
            "--min-top1-agreement",
            "0",
            "--junit",
            s(&xml),
        ],
    );
    let out = stdout(&o);
    assert_eq!(status(&o), Some(0), "{out}");
    assert!(
        out.contains("delta_nll_nats = 0 (stderr 0, paired over 602 tokens)"),
        "{out}"
    );
    assert!(out.contains("[pass] mean_kl_nats = "), "{out}");
    assert!(out.contains("[pass] top1_agreement = "), "{out}");
    let j = read_junit(&xml);
    assert_eq!(
        j.testcases,
        ["delta_nll_nats", "mean_kl_nats", "top1_agreement"]
    );
    // random models disagree: a tight KL limit fails, the ΔNLL gate still passes
    let o = gate(
        &r.untied,
        &r.compare_untied_vs_tied,
        &[
            "--max-kl-nats",
            "0.001",
            "--min-top1-agreement",
            "0.999",
            "--junit",
            s(&xml),
        ],
    );
    assert_eq!(status(&o), Some(1), "{}", stdout(&o));
    let j = read_junit(&xml);
    assert_eq!(j.failure_messages.len(), 2, "{j:?}");
    assert!(
        j.failure_messages[0].starts_with("mean_kl_nats = "),
        "{j:?}"
    );
    assert!(j.failure_messages[1].contains("lower 99% bound"), "{j:?}");
    // on an eval candidate those flags are an input error
    let o = gate(&r.tied_jsonl, &r.untied, &["--max-kl-nats", "0.1"]);
    assert_clean_error(&o, None, &["needs a compare run", "untied", "eval run"]);
}

#[test]
fn usage_and_input_errors_exit_2_with_one_line() {
    let r = runs();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_run");
    let o = gate(&r.tied_jsonl, &missing, &[]);
    assert_clean_error(&o, None, &["no_such_run", "not a directory"]);
    let o = gate(&r.tied_jsonl, tmp.path(), &[]);
    assert_clean_error(&o, None, &["no summary.json"]);
    let o = gate(&r.tied_jsonl, &r.untied, &["--confidence", "1.5"]);
    assert_clean_error(&o, None, &["--confidence"]);
    let o = gate(&r.tied_jsonl, &r.untied, &["--max-delta-nll-nats", "-1"]);
    assert_clean_error(&o, None, &["--max-delta-nll-nats"]);
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("summary.json"),
        "{\"schema_version\": 2, \"mode\": \"eval\"}",
    )
    .unwrap();
    let o = gate(&r.tied_jsonl, &bad, &[]);
    assert_clean_error(&o, None, &["bad/summary.json", "not a valid summary"]);
    // clap: a missing flag is a usage error too
    let o = std::process::Command::new(support::bin())
        .args(["gate", "--baseline", s(&r.tied_jsonl)])
        .output()
        .unwrap();
    assert_eq!(status(&o), Some(2));
}
