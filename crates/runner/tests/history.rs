//! `history::macro_average` against NumPy (`tests/data/history_reference.json`, written by
//! `scripts/references/history_reference.py`): per-dataset means and standard errors recomputed
//! here from the same per-token arrays with `surprisal-metrics`, the macro-average and its stderr
//! from the history module, both compared with NumPy's. Also: a model version missing a dataset is
//! left out, and the latest run per dataset is the one averaged.

use std::path::PathBuf;

use serde::Deserialize;
use surprisal_metrics::MeanStat;
use surprisal_runner::history::{macro_average, Point, RunRecord};
use surprisal_runner::output::summary::ProtocolReport;
use surprisal_runner::{BosMode, ProtocolConfig, ProtocolKind};

#[derive(Deserialize)]
struct Data {
    name: String,
    nll_nats: Vec<f64>,
    mean_nll_nats: f64,
    mean_nll_nats_stderr: f64,
}

#[derive(Deserialize)]
struct Case {
    model: String,
    datasets: Vec<Data>,
    macro_mean_nll_nats: f64,
    macro_mean_nll_nats_stderr: f64,
    macro_ci95: [f64; 2],
}

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

fn record(id: i64, model: &str, data: &str, finished_at: &str) -> RunRecord {
    let protocol = ProtocolReport::new(
        &ProtocolConfig {
            kind: ProtocolKind::Sliding,
            window: 64,
            stride: 32,
            bos: BosMode::Auto,
            max_tokens: None,
            max_chunks: None,
        },
        false,
        1,
    );
    RunRecord {
        id,
        fingerprint: format!("{id:064}"),
        run_dir: PathBuf::from(format!("runs/{id}")),
        suite: "s".into(),
        model_name: model.into(),
        model_reference: format!("/m/{model}"),
        model_files: vec![],
        model_sha256: format!("sha-{model}"),
        checkpoint_step: None,
        dataset_name: data.into(),
        data_path: format!("{data}.txt"),
        data_sha256: "d".into(),
        protocol_key: surprisal_runner::history::protocol_key(&protocol),
        protocol,
        mode: "eval".into(),
        tool_version: "0".into(),
        host: "h".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
        stats_on: "host".into(),
        tokens_scored: 1,
        windows: 1,
        elapsed_seconds: 1.0,
        tokens_per_second: 1.0,
        started_at: finished_at.into(),
        finished_at: finished_at.into(),
    }
}

fn point(run: RunRecord, value: f64, stderr: f64) -> Point {
    Point {
        run,
        metric: "mean_nll_nats".into(),
        value,
        stderr: Some(stderr),
        ci95: None,
    }
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-12 * b.abs().max(1e-300),
        "{what}: {a} vs NumPy {b}"
    );
}

#[test]
fn macro_average_matches_numpy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/history_reference.json"
    );
    let r: Reference = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(r.cases.len(), 3);
    for case in &r.cases {
        let mut points = Vec::new();
        for (k, d) in case.datasets.iter().enumerate() {
            let mut m = MeanStat::new();
            d.nll_nats.iter().for_each(|&x| m.push(x));
            close(m.mean(), d.mean_nll_nats, "per-dataset mean");
            close(m.stderr(), d.mean_nll_nats_stderr, "per-dataset stderr");
            let rec = record(k as i64 + 1, &case.model, &d.name, "2026-12-07T00:00:00Z");
            points.push(point(rec, m.mean(), m.stderr()));
        }
        let macros = macro_average(&points);
        assert_eq!(macros.len(), 1, "{}", case.model);
        let got = &macros[0];
        assert_eq!(got.datasets.len(), case.datasets.len());
        close(got.value, case.macro_mean_nll_nats, "macro mean");
        close(
            got.stderr.unwrap(),
            case.macro_mean_nll_nats_stderr,
            "macro stderr",
        );
        let ci = got.ci95.unwrap();
        close(ci[0], case.macro_ci95[0], "ci95 low");
        close(ci[1], case.macro_ci95[1], "ci95 high");
    }
}

#[test]
fn incomplete_models_are_left_out_and_the_latest_run_per_dataset_counts() {
    let p = vec![
        point(record(1, "a", "x", "2026-01-01T00:00:00Z"), 1.0, 0.1),
        point(record(2, "a", "y", "2026-01-01T00:00:00Z"), 3.0, 0.2),
        // a later rerun of a × y replaces the first
        point(record(3, "a", "y", "2026-01-02T00:00:00Z"), 5.0, 0.4),
        // b has no run on y
        point(record(4, "b", "x", "2026-01-01T00:00:00Z"), 2.0, 0.1),
    ];
    // the same file run dequantized is another model version
    let mut deq = record(5, "a", "x", "2026-01-03T00:00:00Z");
    deq.dtype = "Q4_1 dequantized to F32".into();
    let mut p = p;
    p.push(point(deq, 9.0, 0.1));
    let m = macro_average(&p);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].model_name, "a");
    assert_eq!(m[0].value, 3.0); // (1 + 5) / 2
    let se = (0.1f64 * 0.1 + 0.4 * 0.4).sqrt() / 2.0;
    assert_eq!(m[0].stderr, Some(se));
    assert_eq!(m[0].finished_at, "2026-01-02T00:00:00Z");
}
