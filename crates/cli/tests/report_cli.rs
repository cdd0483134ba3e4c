//! `surprisal report` on runs of the tiny fixture models: the page is well-formed (the whole
//! document parses as XML), holds summary.json's numbers exactly, one span per shown token with the
//! token row's numbers in its tooltip, one per shown word, a plot per section, nothing fetched from
//! the network, and stays small; bad run directories fail with one line naming the path.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use support::{assert_clean_error, assert_ok, fixture, read_json, run, s, text, write};
use surprisal_runner::rows::{read_rows, CompareRow, TokenRow, WordRow};

struct Runs {
    _tmp: tempfile::TempDir,
    eval: PathBuf,
    chunks: PathBuf,
    compare: PathBuf,
}

/// An eval (sliding, JSON lines, words), an eval (chunks, parquet) and a compare (parquet) run.
fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = write(&tmp.path().join("text.txt"), text(3));
        let llama = fixture("llama");
        let (eval, chunks, compare) = (
            tmp.path().join("eval"),
            tmp.path().join("chunks"),
            tmp.path().join("cmp"),
        );
        assert_ok(&run(&[
            "eval",
            "--model",
            s(&llama),
            "--data",
            s(&data),
            "--window",
            "64",
            "--stride",
            "32",
            "--out",
            s(&eval),
            "--per-token",
            "jsonl",
            "--words",
        ]));
        assert_ok(&run(&[
            "eval",
            "--model",
            s(&llama),
            "--data",
            s(&data),
            "--protocol",
            "chunks",
            "--window",
            "32",
            "--out",
            s(&chunks),
            "--per-token",
            "parquet",
        ]));
        assert_ok(&run(&[
            "compare",
            "--model",
            s(&llama),
            "--reference",
            s(&fixture("llama_untied")),
            "--data",
            s(&data),
            "--window",
            "64",
            "--out",
            s(&compare),
            "--per-token",
            "parquet",
        ]));
        Runs {
            _tmp: tmp,
            eval,
            chunks,
            compare,
        }
    })
}

fn report(dirs: &[&Path], extra: &[&str], out: &Path) -> String {
    let mut args = vec!["report"];
    args.extend(dirs.iter().map(|d| s(d)));
    args.extend(extra);
    args.extend(["-o", s(out)]);
    assert_ok(&run(&args));
    std::fs::read_to_string(out).unwrap()
}

/// The value at a dotted path (`model.perplexity`, `perplexity_ci95.0`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) if v.is_array() => &v[i],
        _ => &v[k],
    })
}

/// The number after `label ` in a tooltip (`… · NLL 2.315 nats · …`).
fn tip_number(tip: &str, label: &str) -> f64 {
    let rest = tip
        .split(&format!("· {label} "))
        .nth(1)
        .unwrap_or_else(|| panic!("no {label} in {tip:?}"));
    rest.split([' ', '('])
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{label} in {tip:?}: {e}"))
}

fn section<'a, 'i>(doc: &'a roxmltree::Document<'i>, id: &str) -> roxmltree::Node<'a, 'i> {
    doc.descendants()
        .find(|n| n.attribute("id") == Some(id))
        .unwrap_or_else(|| panic!("no section {id}"))
}

/// The `.text` blocks of a section, each as its spans' (class, title, text).
fn text_blocks(sec: roxmltree::Node) -> Vec<Vec<(String, String, String)>> {
    sec.descendants()
        .filter(|n| n.attribute("class") == Some("text"))
        .map(|div| {
            div.children()
                .filter(|n| n.is_element())
                .map(|n| {
                    let t: String = n
                        .descendants()
                        .filter(|d| d.is_text())
                        .filter_map(|d| d.text())
                        .collect();
                    (
                        n.attribute("class").unwrap().to_string(),
                        n.attribute("title").unwrap_or("").to_string(),
                        t,
                    )
                })
                .collect()
        })
        .collect()
}

/// Every `data-key` number of the section equals summary.json's (exactly); returns how many.
fn check_numbers(sec: roxmltree::Node, summary: &Value) -> usize {
    let mut n = 0;
    for e in sec.descendants().filter(|e| e.has_attribute("data-key")) {
        let key = e.attribute("data-key").unwrap();
        let want = at(summary, key);
        let got = e.attribute("data-value").unwrap();
        if want.is_null() {
            assert_eq!(got, "null", "{key}");
        } else {
            let w = want
                .as_f64()
                .unwrap_or_else(|| panic!("{key} = {want} is not a number"));
            assert_eq!(got.parse::<f64>().unwrap(), w, "{key}");
        }
        n += 1;
    }
    n
}

fn check_token_spans(spans: &[(String, String, String)], rows: &[TokenRow], n: usize) {
    let tokens: Vec<_> = spans
        .iter()
        .filter(|(c, _, _)| c.starts_with('c'))
        .collect();
    assert_eq!(tokens.len(), n.min(rows.len()));
    for ((_, tip, text), r) in tokens.iter().zip(rows) {
        assert_eq!(text, &r.token);
        assert!(
            (tip_number(tip, "NLL") - r.nll_nats).abs() <= 5e-4,
            "{tip} vs {r:?}"
        );
        assert!(
            (tip_number(tip, "entropy") - r.entropy_nats).abs() <= 5e-4,
            "{tip} vs {r:?}"
        );
        assert_eq!(tip_number(tip, "rank"), r.target_rank as f64, "{tip}");
        assert!(tip.contains("top-1 "), "{tip}");
    }
}

#[test]
fn report_holds_the_summary_numbers_every_shown_token_and_word_and_a_plot_per_section() {
    let r = runs();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.html");
    let n = 150;
    let html = report(
        &[&r.eval, &r.chunks, &r.compare],
        &["--tokens", "150", "--words"],
        &out,
    );

    // well-formed: the whole page parses as XML (SVG included)
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opt)
        .unwrap_or_else(|e| panic!("not well-formed: {e}"));
    assert!(!html.contains("http"), "an external URL in the page");
    assert!(
        !html.contains("<script") && !html.contains("<link"),
        "external resources"
    );
    assert!(html.len() < 2_000_000);

    let eval_rows: Vec<TokenRow> = read_rows(&r.eval.join("tokens.jsonl")).unwrap();
    let chunk_rows: Vec<TokenRow> = read_rows(&r.chunks.join("tokens.parquet")).unwrap();
    let cmp_rows: Vec<CompareRow> = read_rows(&r.compare.join("tokens.parquet")).unwrap();
    let words: Vec<WordRow> = read_rows(&r.eval.join("words.jsonl")).unwrap();
    assert!(
        eval_rows.len() > n && chunk_rows.len() > n && cmp_rows.len() > n,
        "runs too small for the test"
    );

    // eval run: summary numbers, provenance, plots, token and word spans
    let sum0 = read_json(&r.eval.join("summary.json"));
    let sec = section(&doc, "run0");
    assert!(check_numbers(sec, &sum0) >= 18);
    let sec_text: String = sec.descendants().filter_map(|d| d.text()).collect();
    for want in [
        sum0["data"]["sha256"].as_str().unwrap(),
        sum0["model_source"]["files"][0]["sha256"].as_str().unwrap(),
    ] {
        assert!(
            sec_text.contains(&want[..12])
                || sec
                    .descendants()
                    .any(|d| d.attribute("title").is_some_and(|t| t.contains(want)))
        );
    }
    assert!(sec_text.contains(sum0["tool_version"].as_str().unwrap()));
    assert!(
        sec_text.contains("Calibration: ECE"),
        "ECE in the reliability diagram's title"
    );
    assert_eq!(
        sec.descendants().filter(|d| d.has_tag_name("svg")).count(),
        3 + 2,
        "calibration, NLL, 2-D histogram, two colour scales"
    );
    let blocks = text_blocks(sec);
    assert_eq!(blocks.len(), 2, "tokens and words");
    check_token_spans(&blocks[0], &eval_rows, n);
    let word_spans: Vec<_> = blocks[1]
        .iter()
        .filter(|(c, _, _)| c.starts_with('c'))
        .collect();
    let scored: Vec<&WordRow> = words
        .iter()
        .filter(|w| w.surprisal_nats.is_some())
        .take(n)
        .collect();
    assert_eq!(word_spans.len(), scored.len());
    for ((_, tip, text), w) in word_spans.iter().zip(&scored) {
        assert_eq!(text, &w.word);
        assert!(
            (tip_number(tip, "surprisal") - w.surprisal_nats.unwrap()).abs() <= 5e-4,
            "{tip}"
        );
    }

    // chunks run (parquet): the unscored first half of each window shows as gap markers
    let sum1 = read_json(&r.chunks.join("summary.json"));
    let sec = section(&doc, "run1");
    assert!(check_numbers(sec, &sum1) >= 18);
    let blocks = text_blocks(sec);
    assert_eq!(
        blocks.len(),
        1,
        "no words asked of a run without words: tokens only"
    );
    check_token_spans(&blocks[0], &chunk_rows, n);
    assert!(blocks[0]
        .iter()
        .any(|(c, t, _)| c == "gap" && t.ends_with("bytes not scored")));

    // compare run: the model's and the comparison's numbers, KL/ΔNLL plots, top-KL table
    let sum2 = read_json(&r.compare.join("summary.json"));
    let sec = section(&doc, "run2");
    assert!(check_numbers(sec, &sum2) >= 35);
    assert_eq!(
        sec.descendants().filter(|d| d.has_tag_name("svg")).count(),
        3 + 2 + 1
    );
    let model_rows: Vec<TokenRow> = cmp_rows.iter().map(|r| r.model.clone()).collect();
    let blocks = text_blocks(sec);
    check_token_spans(&blocks[0], &model_rows, n);
    let tips: Vec<&String> = blocks[0]
        .iter()
        .filter(|(c, _, _)| c.starts_with('c'))
        .map(|(_, t, _)| t)
        .collect();
    for (tip, row) in tips.iter().zip(&cmp_rows) {
        assert!((tip_number(tip, "KL") - row.kl_nats).abs() <= 5e-5, "{tip}");
    }
    let top_rows = sec
        .descendants()
        .find(|d| d.attribute("class") == Some("topkl"))
        .unwrap()
        .descendants()
        .filter(|d| d.has_tag_name("tr"))
        .count();
    assert_eq!(
        top_rows - 1,
        sum2["top_kl_positions"].as_array().unwrap().len()
    );

    // overview: one entropy-rate plot, and its table's token counts are by_position's
    let ov = section(&doc, "overview");
    assert_eq!(
        ov.descendants().filter(|d| d.has_tag_name("svg")).count(),
        1
    );
    let table = doc
        .descendants()
        .find(|d| d.has_tag_name("details"))
        .unwrap();
    let counts: Vec<u64> = table
        .descendants()
        .filter(|d| d.has_tag_name("tr"))
        .skip(1)
        .map(|tr| {
            tr.children()
                .filter(|c| c.is_element())
                .nth(1)
                .unwrap()
                .text()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let want: Vec<u64> = sum0["by_position"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts, want,
        "bins of the first run in the plotted table equal by_position"
    );
}

#[test]
fn bad_run_directories_fail_with_one_line_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.html");
    let o = s(&out);
    let missing = tmp.path().join("missing");
    assert_clean_error(
        &run(&["report", s(&missing), "-o", o]),
        None,
        &[s(&missing), "no such directory"],
    );
    let file = write(&tmp.path().join("file.txt"), "x");
    assert_clean_error(
        &run(&["report", s(&file), "-o", o]),
        None,
        &[s(&file), "not a directory"],
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_clean_error(
        &run(&["report", s(&empty), "-o", o]),
        None,
        &[s(&empty), "not a run directory"],
    );
    let unfinished = tmp.path().join("unfinished");
    write(&unfinished.join("checkpoint.json"), "{}");
    assert_clean_error(
        &run(&["report", s(&unfinished), "-o", o]),
        None,
        &[s(&unfinished), "unfinished run"],
    );
    let sharded = tmp.path().join("sharded");
    std::fs::create_dir_all(sharded.join("shard-00000-of-00002")).unwrap();
    assert_clean_error(
        &run(&["report", s(&sharded), "-o", o]),
        None,
        &[s(&sharded), "surprisal merge"],
    );
    // a finished run whose summary has another schema version
    let old = tmp.path().join("old");
    support::copy_dir(&runs().eval, &old);
    support::edit_json(&old.join("summary.json"), |v| {
        v["schema_version"] = 1.into()
    });
    assert_clean_error(
        &run(&["report", s(&old), "-o", o]),
        None,
        &[s(&old.join("summary.json")), "schema_version 1"],
    );
    // --words on a run without words
    assert_clean_error(
        &run(&["report", s(&runs().chunks), "--words", "-o", o]),
        None,
        &[s(&runs().chunks), "--words"],
    );
    assert!(!out.exists(), "no page written on failure");
}

/// A results root of `surprisal suite run`: three "checkpoints" (`ckpts/checkpoint-100`, `-200`,
/// `-300`: three different fixture models) × two datasets, one suite run.
struct Results {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

const STEPS: [(u64, &str); 3] = [(100, "llama"), (200, "llama_untied"), (300, "llama3_rope")];
const DATASETS: [(&str, usize); 2] = [("shakespeare", 3), ("short", 2)];

fn results() -> &'static Results {
    static RESULTS: OnceLock<Results> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let (_, root) = make_results(tmp.path());
        Results { _tmp: tmp, root }
    })
}

/// Writes the suite of [`results`] under `dir` and runs it; returns the suite file and the root.
fn make_results(dir: &Path) -> (PathBuf, PathBuf) {
    for (step, model) in STEPS {
        support::copy_dir(
            &fixture(model),
            &dir.join(format!("ckpts/checkpoint-{step}")),
        );
    }
    let mut suite = format!(
        "name = \"fixture\"\n[run]\nprotocol = \"sliding\"\nwindow = 64\nstride = 32\nper-token = \"none\"\n\
         [[models]]\nname = \"tiny\"\nglob = \"{}/ckpts/checkpoint-*\"\n",
        dir.display()
    );
    for (name, repeat) in DATASETS {
        let data = write(&dir.join(format!("{name}.txt")), text(repeat));
        suite.push_str(&format!(
            "[[datasets]]\nname = \"{name}\"\ndata = \"{}\"\n",
            data.display()
        ));
    }
    let suite = write(&dir.join("suite.toml"), suite);
    let root = dir.join("results");
    assert_ok(&run(&["suite", "run", s(&suite), "--results", s(&root)]));
    (suite, root)
}

/// The `<table data-metric>` of the history section: per metric, its rows as (data-run, or
/// `mean of DATASETS @STEP` for a macro-average row, and the `data-key` → `data-value` cells).
type HistoryRows = Vec<(String, Vec<(String, String)>)>;

fn history_tables(sec: roxmltree::Node) -> Vec<(String, HistoryRows)> {
    sec.descendants()
        .filter(|n| n.has_tag_name("table") && n.has_attribute("data-metric"))
        .map(|t| {
            let rows = t
                .descendants()
                .filter(|r| r.has_tag_name("tr") && r.has_attribute("title"))
                .map(|r| {
                    let cells = r
                        .descendants()
                        .filter(|c| c.has_attribute("data-key"))
                        .map(|c| {
                            (
                                c.attribute("data-key").unwrap().to_string(),
                                c.attribute("data-value").unwrap().to_string(),
                            )
                        })
                        .collect();
                    let id = match r.attribute("data-run") {
                        Some(run) => run.to_string(),
                        None => format!(
                            "mean of {} @{}",
                            r.attribute("data-average-of").unwrap(),
                            r.attribute("data-step").unwrap()
                        ),
                    };
                    (id, cells)
                })
                .collect();
            (t.attribute("data-metric").unwrap().to_string(), rows)
        })
        .collect()
}

/// Every history table holds one row per selected run, and each number equals the history's
/// (and, where summary.json has the key, the run's summary) exactly; returns the rows checked.
fn check_history(
    sec: roxmltree::Node,
    filter: &surprisal_runner::history::Filter,
    want_runs: usize,
) -> usize {
    let hist = surprisal_runner::history::open(&results().root).unwrap();
    let names = hist.metric_names().unwrap();
    let tables = history_tables(sec);
    let want_metrics: Vec<&str> = surprisal_report::history::METRICS
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| names.iter().any(|n| n == m))
        .collect();
    let got_metrics: Vec<&str> = tables.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(got_metrics, want_metrics, "a table per charted metric");
    assert!(want_metrics.contains(&"mean_nll_nats") && want_metrics.contains(&"top1_accuracy"));
    assert_eq!(
        sec.descendants().filter(|d| d.has_tag_name("svg")).count(),
        tables.len(),
        "a chart per metric"
    );
    let mut n = 0;
    for (metric, rows) in &tables {
        let points = hist.series(filter, metric).unwrap();
        let averages = surprisal_runner::history::macro_average(&points);
        let datasets: std::collections::BTreeSet<&str> =
            points.iter().map(|p| p.run.dataset_name.as_str()).collect();
        let no_average = surprisal_report::history::NO_MACRO_AVERAGE.contains(&metric.as_str());
        let want_averages = if datasets.len() > 1 && !no_average {
            averages.len()
        } else {
            0
        };
        assert_eq!(points.len(), want_runs, "{metric}: runs selected");
        assert_eq!(
            rows.len(),
            points.len() + want_averages,
            "{metric}: one row per run and per macro-average"
        );
        let cells_of = |id: &str| {
            let matching: Vec<_> = rows.iter().filter(|(r, _)| r == id).collect();
            assert_eq!(matching.len(), 1, "{metric}: one row for {id}");
            matching[0]
                .1
                .iter()
                .map(|(k, v)| (k.clone(), v.parse::<f64>().ok()))
                .collect::<Vec<(String, Option<f64>)>>()
        };
        let want_cells = |value: f64, stderr: Option<f64>, ci95: Option<[f64; 2]>| {
            let mut want = vec![(metric.clone(), Some(value))];
            if let Some(se) = stderr {
                want.push((format!("{metric}_stderr"), Some(se)));
            }
            if let Some([lo, hi]) = ci95 {
                want.push((format!("{metric}_ci95.0"), Some(lo)));
                want.push((format!("{metric}_ci95.1"), Some(hi)));
            }
            want
        };
        for a in averages.iter().take(want_averages) {
            let id = format!(
                "mean of {} @{}",
                a.datasets.join(" "),
                a.checkpoint_step.unwrap()
            );
            let got = cells_of(&id);
            assert_eq!(got, want_cells(a.value, a.stderr, a.ci95), "{metric}: {id}");
            n += 1;
        }
        for p in &points {
            let dir = s(&p.run.run_dir);
            let got = cells_of(dir);
            assert_eq!(
                got,
                want_cells(p.value, p.stderr, p.ci95),
                "{metric} of {dir}: the history's numbers"
            );
            // the run's own summary.json: the value always, stderr and CI where it has them
            let summary = read_json(&p.run.run_dir.join("summary.json"));
            assert_eq!(
                at(&summary, metric).as_f64(),
                Some(p.value),
                "{metric} of {dir}"
            );
            for (k, v) in &got {
                if let Some(w) = at(&summary, k).as_f64() {
                    assert_eq!(Some(w), *v, "{k} of {dir}: summary.json's number");
                }
            }
            n += 1;
        }
    }
    n
}

#[test]
fn history_section_holds_one_point_per_run_with_the_history_numbers() {
    use surprisal_runner::history::Filter;
    let res = results();
    let tmp = tempfile::tempdir().unwrap();
    let runs_total = STEPS.len() * DATASETS.len();

    // a page of the history alone
    let out = tmp.path().join("h.html");
    let html = report(
        &[],
        &["--history", s(&res.root), "--history-suite", "fixture"],
        &out,
    );
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opt)
        .unwrap_or_else(|e| panic!("not well-formed: {e}"));
    assert!(!html.contains("http"), "an external URL in the page");
    assert!(!html.contains("<script") && !html.contains("<link"));
    assert!(html.len() < 400_000, "history page of {} bytes", html.len());
    let sec = section(&doc, "history");
    let checked = check_history(sec, &Filter::default(), runs_total);
    // every run and, with two datasets, a macro-average per checkpoint, in at least 4 tables
    assert!(
        checked >= 4 * (runs_total + STEPS.len()),
        "{checked} rows checked"
    );
    let averages = sec
        .descendants()
        .filter(|d| d.has_attribute("data-average-of"))
        .count();
    assert!(averages >= 4 * STEPS.len(), "{averages} macro-average rows");
    assert!(
        !doc.descendants()
            .any(|d| d.attribute("id") == Some("overview")),
        "no run sections without run directories"
    );
    let sec_text: String = sec.descendants().filter_map(|d| d.text()).collect();
    assert!(sec_text.contains("checkpoint step"), "x = the step");
    assert!(
        sec_text.contains("no gate verdicts"),
        "says why no gate is marked"
    );
    for (step, _) in STEPS {
        assert!(sec_text.contains(&step.to_string()));
    }

    // a run directory and the history, filtered to one dataset and two checkpoints
    let out = tmp.path().join("rh.html");
    let html = report(
        &[&runs().eval],
        &[
            "--history",
            s(&res.root),
            "--history-data",
            "short",
            "--history-model",
            "tiny@[12]00",
        ],
        &out,
    );
    let doc = roxmltree::Document::parse_with_options(&html, opt).unwrap();
    let filter = Filter {
        model: Some("tiny@[12]00".into()),
        data: Some("short".into()),
        suite: None,
    };
    check_history(section(&doc, "history"), &filter, 2);
    let sum0 = read_json(&runs().eval.join("summary.json"));
    assert!(check_numbers(section(&doc, "run0"), &sum0) >= 18);
}

#[test]
fn bad_history_fails_with_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.html");
    let o = s(&out);
    let missing = tmp.path().join("missing");
    assert_clean_error(
        &run(&["report", "--history", s(&missing), "-o", o]),
        None,
        &[s(&missing.join("results.db")), "does not exist"],
    );
    let junk = tmp.path().join("junk");
    let db = write(
        &junk.join("results.db"),
        "not a database at all, but long enough".repeat(100),
    );
    assert_clean_error(
        &run(&["report", "--history", s(&junk), "-o", o]),
        None,
        &[s(&db), "not a readable results database"],
    );
    let root = &results().root;
    assert_clean_error(
        &run(&[
            "report",
            "--history",
            s(root),
            "--history-model",
            "nothing*",
            "-o",
            o,
        ]),
        None,
        &[s(&root.join("results.db")), "no runs", "nothing*"],
    );
    assert_clean_error(
        &run(&[
            "report",
            "--history",
            s(root),
            "--history-suite",
            "other",
            "-o",
            o,
        ]),
        None,
        &[s(&root.join("results.db")), "no runs", "suite \"other\""],
    );
    assert!(!out.exists(), "no page written on failure");
}

/// `suite run --gate previous` records its verdicts (all regressions at a tolerance of 0.002:
/// unpaired, as the suite writes no token rows), `surprisal gate` on two registered runs records a
/// pass over one of them; the history section marks exactly those runs: a ring per passed run and
/// a square with the word "regression" per regression in every chart, and the table rows' gate
/// cells equal the `gates` rows.
#[test]
fn history_marks_the_recorded_gate_verdicts() {
    use surprisal_runner::history::{self, Filter};
    let tmp = tempfile::tempdir().unwrap();
    let (suite, root) = make_results(tmp.path());
    let o = run(&[
        "suite",
        "run",
        s(&suite),
        "--results",
        s(&root),
        "--gate",
        "previous",
        "--max-delta-nll-nats",
        "0.002",
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let h = history::open(&root).unwrap();
    let gates = h.gates(&Filter::default()).unwrap();
    let gated = (STEPS.len() - 1) * DATASETS.len();
    assert_eq!(gates.len(), gated, "{gates:?}");
    assert!(gates.iter().all(|g| g.verdict == "regression"
        && g.pairing == "unpaired"
        && g.metric == "delta_nll_nats"
        && g.tolerance == 0.002));
    // one gated again by `surprisal gate`, at a tolerance it passes
    let runs = h.runs(&Filter::default()).unwrap();
    let last = runs
        .iter()
        .find(|r| r.checkpoint_step == Some(300) && r.dataset_name == "shakespeare")
        .unwrap();
    drop(h);
    let o = run(&[
        "gate",
        "--baseline",
        "previous",
        "--candidate",
        s(&last.run_dir),
        "--max-delta-nll-nats",
        "10",
    ]);
    assert_ok(&o);
    let h = history::open(&root).unwrap();
    let gates = h.gates(&Filter::default()).unwrap();
    assert_eq!(
        gates.len(),
        gated,
        "the same (candidate, baseline, metric): replaced"
    );
    let passed: Vec<_> = gates.iter().filter(|g| g.passed()).collect();
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0].run_id, last.id);
    assert_eq!(passed[0].tolerance, 10.0);
    let regressions = gated - 1;

    let out = tmp.path().join("h.html");
    let html = report(&[], &["--history", s(&root)], &out);
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opt)
        .unwrap_or_else(|e| panic!("not well-formed: {e}"));
    let sec = section(&doc, "history");
    assert!(!html.contains("Gate results are not marked"));
    let legend = doc
        .descendants()
        .find(|n| n.attribute("id") == Some("gate-legend"))
        .expect("a legend line for the gate marks");
    let legend_text: String = legend.descendants().filter_map(|n| n.text()).collect();
    assert!(
        legend_text.contains(&format!("{gated} gated runs, {regressions} regressions")),
        "{legend_text}"
    );
    // charts: a ring per pass, a square and the word per regression
    let svgs: Vec<_> = sec
        .descendants()
        .filter(|n| n.has_tag_name("svg"))
        .collect();
    assert!(!svgs.is_empty());
    for svg in &svgs {
        let rings = svg
            .descendants()
            .filter(|n| {
                n.has_tag_name("circle")
                    && n.attribute("r") == Some("8")
                    && n.attribute("fill") == Some("none")
            })
            .count();
        let squares = svg
            .descendants()
            .filter(|n| {
                n.has_tag_name("rect")
                    && n.attribute("width") == Some("16")
                    && n.attribute("height") == Some("16")
                    && n.attribute("fill") == Some("none")
            })
            .count();
        let words = svg
            .descendants()
            .filter(|n| n.is_text() && n.text().map(str::trim) == Some("regression"))
            .count();
        assert_eq!((rings, squares, words), (1, regressions, regressions));
    }
    // tables: each run's gate cells are its `gates` row, exactly; ungated runs have none
    let by_dir: std::collections::BTreeMap<String, i64> = runs
        .iter()
        .map(|r| (s(&r.run_dir).to_string(), r.id))
        .collect();
    let tables: Vec<_> = sec
        .descendants()
        .filter(|n| n.has_tag_name("table") && n.has_attribute("data-metric"))
        .collect();
    assert_eq!(tables.len(), svgs.len());
    for t in tables {
        let mut marked = 0;
        for row in t
            .descendants()
            .filter(|r| r.has_tag_name("tr") && r.has_attribute("data-run"))
        {
            let id = by_dir[row.attribute("data-run").unwrap()];
            let td = row.descendants().find(|c| c.has_attribute("data-gate"));
            let g = gates.iter().find(|g| g.run_id == id);
            let (Some(td), Some(g)) = (td, g) else {
                assert!(td.is_none() && g.is_none(), "run {id}: marked iff gated");
                continue;
            };
            marked += 1;
            assert_eq!(td.attribute("data-gate"), Some(g.verdict.as_str()));
            let cells: Vec<(String, f64)> = td
                .descendants()
                .filter(|c| c.has_attribute("data-key"))
                .map(|c| {
                    (
                        c.attribute("data-key").unwrap().to_string(),
                        c.attribute("data-value").unwrap().parse().unwrap(),
                    )
                })
                .collect();
            let want = vec![
                ("gate_delta_nll_nats".to_string(), g.estimate),
                ("gate_delta_nll_nats_stderr".to_string(), g.stderr),
                ("gate_bound".to_string(), g.bound),
                ("gate_tolerance".to_string(), g.tolerance),
            ];
            assert_eq!(cells, want, "run {id}");
            let title = row.attribute("title").unwrap();
            let verdict = if g.passed() {
                "gate pass"
            } else {
                "gate REGRESSION"
            };
            assert!(title.contains(verdict), "{title}");
            let base = &g.baseline_fingerprint[..12];
            assert!(title.contains(base), "{title}");
        }
        assert_eq!(marked, gated, "{}", t.attribute("data-metric").unwrap());
    }
}
