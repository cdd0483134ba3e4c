//! The history section (`--history RESULTS`): each metric of a results history over checkpoint
//! steps (or finish dates), one line per (model, dataset), 95 % intervals as error bars, and a
//! table per metric with every plotted number. Runs with a gate verdict recorded in the history
//! (`History::gates`, the latest `delta_nll_nats` check per run) are marked by shape: a ring for a
//! pass, a square and the word "regression" for a regression; their rows carry the verdict, ΔNLL ±
//! stderr, bound and tolerance.
//!
//! The section is built from [`HistoryData`], a plain list of points per metric, so that the page
//! does not depend on how the history is stored; [`HistoryData::from_history`] reads one from a
//! results root (`surprisal suite run`'s `results.db`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{ReportError, Result};
use crate::page::{cell, num, Cell};
use crate::plots::{self, marker_glyph, HistoryLine, HistoryPoint as PlotPoint, XAxis};

/// The metrics charted, in this order, when the history has them.
pub const METRICS: &[(&str, &str)] = &[
    ("mean_nll_nats", "mean NLL (nats per token)"),
    ("bits_per_byte", "bits per byte"),
    ("perplexity", "perplexity"),
    ("top1_accuracy", "top-1 accuracy"),
    ("mean_entropy_nats", "mean entropy (nats)"),
    ("calibration_ece", "calibration ECE"),
];

/// Metrics without a macro-average line: the mean of perplexities is not the perplexity of the
/// mean NLL (that is the exponential of the `mean_nll_nats` line's average).
pub const NO_MACRO_AVERAGE: &[&str] = &["perplexity"];

/// One metric of one run of the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// The model's short name (a line per model and dataset).
    pub model: String,
    /// The dataset's short name.
    pub dataset: String,
    /// The protocol key (`name/window/stride/bos/max_tokens/max_chunks`): runs are only joined by a
    /// line under the same key.
    pub protocol: String,
    /// The checkpoint step the model's path names, if any.
    pub step: Option<u64>,
    /// When the run finished (RFC 3339 UTC).
    pub finished_at: String,
    /// The metric's value.
    pub value: f64,
    /// Its standard error, where the run has one.
    pub stderr: Option<f64>,
    /// Its 95 % interval, where known.
    pub ci95: Option<[f64; 2]>,
    /// The run directory (the table links its row to it by `data-run`).
    pub run_dir: PathBuf,
    /// More about the run for the row's tooltip (fingerprint, version, device).
    pub about: String,
    /// Empty for a run; for a macro-average over datasets (drawn dashed, no run directory), the
    /// datasets averaged.
    pub average_of: Vec<String>,
    /// The run's recorded gate verdict against its previous run, if it was gated.
    pub gate: Option<Gate>,
}

/// A run's recorded gate (`delta_nll_nats`, the history's `gates` table): marked on its points and
/// in its table rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Gate {
    /// Whether the check passed.
    pub passed: bool,
    /// ΔNLL, candidate − baseline (nats/token).
    pub delta_nll_nats: f64,
    /// Its standard error.
    pub stderr: f64,
    /// The one-sided upper bound at `confidence`.
    pub bound: f64,
    /// The largest allowed ΔNLL.
    pub tolerance: f64,
    /// One-sided confidence.
    pub confidence: f64,
    /// `paired` or `unpaired`.
    pub pairing: String,
    /// The baseline's fingerprint (first 12 hex digits).
    pub baseline: String,
}

impl Gate {
    fn words(&self) -> String {
        format!(
            "gate {} against {} ({}): ΔNLL {} ± {} nats/token, upper {} bound {} {} tolerance {}",
            if self.passed { "pass" } else { "REGRESSION" },
            self.baseline,
            self.pairing,
            num(self.delta_nll_nats),
            num(self.stderr),
            pct(self.confidence),
            num(self.bound),
            if self.passed { "≤" } else { ">" },
            num(self.tolerance)
        )
    }
}

fn pct(c: f64) -> String {
    format!("{}%", (c * 1e6).round() / 1e4)
}

/// What the history section shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryData {
    /// The database read.
    pub source: PathBuf,
    /// The selection, in words (`model exp1*, all datasets`).
    pub selection: String,
    /// Runs selected.
    pub runs: usize,
    /// `(metric, points)` in [`METRICS`] order; metrics without points are left out.
    pub metrics: Vec<(String, Vec<Point>)>,
}

#[derive(Serialize)]
pub(crate) struct Row {
    pub run: String,
    pub average_of: String,
    pub step_value: String,
    pub title: String,
    pub glyph: char,
    pub line: String,
    pub step: String,
    pub finished: String,
    pub cells: Vec<Cell>,
    pub after: &'static str,
    /// `pass`, `regression` or empty.
    pub gate: &'static str,
    pub gate_cells: Vec<Cell>,
}

#[derive(Serialize)]
pub(crate) struct MetricView {
    pub metric: String,
    pub head: String,
    pub svg: String,
    pub caption: String,
    pub rows: Vec<Row>,
}

/// The section's template context.
#[derive(Serialize)]
pub(crate) struct HistoryView {
    pub source: String,
    pub selection: String,
    pub runs: usize,
    pub metrics: Vec<MetricView>,
    /// Runs with a recorded gate, and how many of them regressed.
    pub gated: usize,
    pub regressed: usize,
}

/// Seconds since the Unix epoch of an RFC 3339 time.
fn epoch(t: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|d| d.timestamp() as f64 + f64::from(d.timestamp_subsec_millis()) / 1e3)
}

/// `2026-12-07 20:31 UTC` from an RFC 3339 time (the text itself when it does not parse).
fn short_time(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        })
        .unwrap_or_else(|_| t.to_string())
}

/// The lines of a chart: one per (model, dataset, protocol), in order of first appearance.
fn lines_of(points: &[Point]) -> Vec<(String, Vec<&Point>)> {
    let protocols: std::collections::BTreeSet<&str> =
        points.iter().map(|p| p.protocol.as_str()).collect();
    let mut order: Vec<(&str, &str, &str)> = Vec::new();
    let mut by: BTreeMap<(&str, &str, &str), Vec<&Point>> = BTreeMap::new();
    for p in points {
        let key = (p.model.as_str(), p.dataset.as_str(), p.protocol.as_str());
        if !by.contains_key(&key) {
            order.push(key);
        }
        by.entry(key).or_default().push(p);
    }
    order
        .into_iter()
        .map(|key| {
            let label = if protocols.len() > 1 {
                format!("{} × {} ({})", key.0, key.1, key.2)
            } else {
                format!("{} × {}", key.0, key.1)
            };
            (label, by.remove(&key).unwrap_or_default())
        })
        .collect()
}

/// The section for `data` (`None` when it holds no points).
pub(crate) fn view(data: &HistoryData) -> std::result::Result<HistoryView, plots::PlotError> {
    let mut metrics = Vec::new();
    for (metric, points) in &data.metrics {
        if points.is_empty() {
            continue;
        }
        let desc = METRICS
            .iter()
            .find(|(m, _)| m == metric)
            .map_or(metric.as_str(), |(_, d)| *d);
        let by_step = points.iter().all(|p| p.step.is_some());
        let x_of = |p: &Point| {
            if by_step {
                p.step.map(|s| s as f64)
            } else {
                epoch(&p.finished_at)
            }
        };
        let lines = lines_of(points);
        let plot_lines: Vec<HistoryLine> = lines
            .iter()
            .enumerate()
            .map(|(k, (label, pts))| HistoryLine {
                label: format!("{} {label}", marker_glyph(k)),
                series: k,
                dashed: pts.iter().any(|p| !p.average_of.is_empty()),
                points: pts
                    .iter()
                    .filter_map(|p| {
                        Some(PlotPoint {
                            x: x_of(p)?,
                            y: p.value,
                            ci: p.ci95.map(|c| (c[0], c[1])),
                            gate: p.gate.as_ref().map(|g| g.passed),
                        })
                    })
                    .filter(|p| p.y.is_finite())
                    .collect(),
            })
            .collect();
        let axis = if by_step { XAxis::Step } else { XAxis::Date };
        let svg = plots::history(
            &format!("{desc} over {}", axis.words()),
            desc,
            axis,
            &plot_lines,
        )?;
        let runs: Vec<&Point> = points.iter().filter(|p| p.average_of.is_empty()).collect();
        let with_ci = runs.iter().filter(|p| p.ci95.is_some()).count();
        let caption = format!(
            "{metric} of {} runs, one line per model × dataset{}{}, against {}; {}. \
             Points of different lines at the same x are moved apart slightly so that their bars do not hide each other; \
             the table below has every plotted number.{}",
            runs.len(),
            if lines.len() > 1 { " (colour and marker shape)" } else { "" },
            if points.iter().any(|p| !p.average_of.is_empty()) {
                " and, dashed, its macro-average over the datasets per model version (mean of the datasets' values, standard error √(Σ se²) / D)"
            } else {
                ""
            },
            if by_step {
                "the checkpoint step the model's path names"
            } else {
                "the time each run finished (not every run names a checkpoint step)"
            },
            if with_ci == runs.len() {
                "bars: 95 % intervals".to_string()
            } else if with_ci == 0 {
                "the history has no interval for this metric".to_string()
            } else {
                format!("bars: 95 % intervals ({with_ci} of {} runs have one)", runs.len())
            },
            if points.iter().any(|p| p.gate.is_some()) {
                " Gated runs (recorded by surprisal suite run --gate previous): a ring around the marker for a pass, a square and the word \"regression\" for a regression."
            } else {
                ""
            },
        );
        let mut rows = Vec::new();
        for (k, (label, pts)) in lines.iter().enumerate() {
            for p in pts {
                let mut cells = vec![cell("", metric.clone(), p.value)];
                if let Some(se) = p.stderr {
                    cells.push(cell(" ± ", format!("{metric}_stderr"), se));
                }
                if let Some([lo, hi]) = p.ci95 {
                    cells.push(cell(" (95 % CI ", format!("{metric}_ci95.0"), lo));
                    cells.push(cell(" – ", format!("{metric}_ci95.1"), hi));
                }
                let avg = !p.average_of.is_empty();
                let gate_cells = p.gate.as_ref().map_or_else(Vec::new, |g| {
                    vec![
                        cell(" ΔNLL ", "gate_delta_nll_nats".into(), g.delta_nll_nats),
                        cell(" ± ", "gate_delta_nll_nats_stderr".into(), g.stderr),
                        cell(", bound ", "gate_bound".into(), g.bound),
                        cell(
                            if g.passed { " ≤ " } else { " > " },
                            "gate_tolerance".into(),
                            g.tolerance,
                        ),
                    ]
                });
                let gate_words = p
                    .gate
                    .as_ref()
                    .map_or_else(String::new, |g| format!(" · {}", g.words()));
                rows.push(Row {
                    gate: match &p.gate {
                        Some(g) if g.passed => "pass",
                        Some(_) => "regression",
                        None => "",
                    },
                    gate_cells,
                    run: if avg {
                        String::new()
                    } else {
                        p.run_dir.display().to_string()
                    },
                    average_of: p.average_of.join(" "),
                    step_value: p.step.map_or_else(String::new, |s| s.to_string()),
                    title: if avg {
                        p.about.clone()
                    } else {
                        format!("{} · {}{gate_words}", p.run_dir.display(), p.about)
                    },
                    glyph: marker_glyph(k),
                    line: label.clone(),
                    step: p.step.map_or_else(|| "—".into(), |s| s.to_string()),
                    finished: short_time(&p.finished_at),
                    after: if p.ci95.is_some() { ")" } else { "" },
                    cells,
                });
            }
        }
        let with_se = points.iter().any(|p| p.stderr.is_some());
        let with_ci = points.iter().filter(|p| p.ci95.is_some()).count();
        metrics.push(MetricView {
            head: match (with_se, with_ci > 0) {
                (true, true) => format!("{metric} (± 1 standard error, 95 % CI)"),
                (false, true) => format!("{metric} (95 % CI)"),
                (true, false) => format!("{metric} (± 1 standard error)"),
                (false, false) => metric.clone(),
            },
            metric: metric.clone(),
            svg,
            caption,
            rows,
        });
    }
    // gated runs, counted once (by run directory) over the charts
    let mut gated = BTreeMap::new();
    for (_, points) in &data.metrics {
        for p in points {
            if let Some(g) = &p.gate {
                gated.insert(p.run_dir.clone(), g.passed);
            }
        }
    }
    Ok(HistoryView {
        source: data.source.display().to_string(),
        selection: data.selection.clone(),
        runs: data.runs,
        metrics,
        gated: gated.len(),
        regressed: gated.values().filter(|p| !**p).count(),
    })
}

/// Refuses a history section without a point.
pub(crate) fn check_nonempty(data: &HistoryData) -> Result<()> {
    if data.metrics.iter().all(|(_, p)| p.is_empty()) {
        return Err(ReportError::new(
            &data.source,
            format!("no runs in the history match {}", data.selection),
        ));
    }
    Ok(())
}

/// Which runs of a results history the section shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// The results root (`surprisal suite run --results`, holding `results.db`).
    pub root: PathBuf,
    /// A glob over the model's short name, `name@step` or reference.
    pub model: Option<String>,
    /// A glob over the dataset's short name.
    pub data: Option<String>,
    /// Only this suite.
    pub suite: Option<String>,
}

impl Query {
    /// The selection in words.
    fn words(&self) -> String {
        format!(
            "{}, {}",
            self.model
                .as_deref()
                .map_or_else(|| "all models".into(), |g| format!("models matching {g:?}")),
            self.data.as_deref().map_or_else(
                || "all datasets".into(),
                |g| format!("datasets matching {g:?}")
            )
        ) + &self
            .suite
            .as_deref()
            .map_or_else(String::new, |n| format!(", suite {n:?}"))
    }
}

/// The history's error as a report error about `db`: its messages start with the path already.
fn history_err(db: &Path, e: surprisal_runner::RunError) -> ReportError {
    let msg = e.to_string();
    let p = db.display().to_string();
    let problem = msg
        .strip_prefix(&format!("{p}: "))
        .or_else(|| msg.strip_prefix(&format!("{p} ")))
        .unwrap_or(&msg);
    ReportError::new(db, problem.to_string())
}

impl HistoryData {
    /// Reads the [`METRICS`] of the runs `q` selects from the results history in `q.root`, through
    /// the history's read API (`surprisal_runner::history`).
    pub fn from_history(q: &Query) -> Result<HistoryData> {
        use surprisal_runner::history::{self as h, Filter};
        let db = q.root.join(h::DB_FILE);
        let err = |e| history_err(&db, e);
        let hist = h::open(&q.root).map_err(err)?;
        let filter = Filter {
            model: q.model.clone(),
            data: q.data.clone(),
            suite: q.suite.clone(),
        };
        let records = hist.runs(&filter).map_err(err)?;
        let runs = records.len();
        // a line per model name, told apart by suite and by dtype/device where the selection
        // holds several (the history's model versions differ in them too)
        let suites: std::collections::BTreeSet<&str> =
            records.iter().map(|r| r.suite.as_str()).collect();
        let builds: std::collections::BTreeSet<(&str, &str)> = records
            .iter()
            .map(|r| (r.dtype.as_str(), r.device.as_str()))
            .collect();
        let line_model = |suite: &str, name: &str, dtype: &str, device: &str| {
            let mut l = if suites.len() > 1 {
                format!("{suite}/{name}")
            } else {
                name.to_string()
            };
            if builds.len() > 1 {
                l.push_str(&format!(" [{dtype} on {device}]"));
            }
            l
        };
        // the latest recorded delta_nll_nats gate of each run
        let mut gates: BTreeMap<i64, Gate> = BTreeMap::new();
        for g in hist.gates(&filter).map_err(err)? {
            if g.metric != "delta_nll_nats" {
                continue;
            }
            gates.insert(
                g.run_id,
                Gate {
                    passed: g.passed(),
                    delta_nll_nats: g.estimate,
                    stderr: g.stderr,
                    bound: g.bound,
                    tolerance: g.tolerance,
                    confidence: g.confidence,
                    pairing: g.pairing.clone(),
                    baseline: g
                        .baseline_fingerprint
                        .get(..12)
                        .unwrap_or(&g.baseline_fingerprint)
                        .to_string(),
                },
            );
        }
        let known = hist.metric_names().map_err(err)?;
        let mut metrics = Vec::new();
        for (m, _) in METRICS {
            if !known.iter().any(|k| k == m) {
                continue;
            }
            let raw = hist.series(&filter, m).map_err(err)?;
            let mut points = raw
                .iter()
                .map(|p| {
                    let r = &p.run;
                    Point {
                        model: line_model(&r.suite, &r.model_name, &r.dtype, &r.device),
                        dataset: r.dataset_name.clone(),
                        protocol: r.protocol_key.clone(),
                        step: r.checkpoint_step,
                        finished_at: r.finished_at.clone(),
                        value: p.value,
                        stderr: p.stderr,
                        ci95: p.ci95,
                        about: format!(
                            "suite {} · model {} · fingerprint {} · protocol {} · {} {} on {} · surprisal {} · {} tokens",
                            r.suite,
                            r.model_reference,
                            r.fingerprint.get(..12).unwrap_or(&r.fingerprint),
                            r.protocol_key,
                            r.dtype,
                            r.device,
                            r.host,
                            r.tool_version,
                            r.tokens_scored
                        ),
                        run_dir: r.run_dir.clone(),
                        average_of: Vec::new(),
                        gate: gates.get(&r.id).cloned(),
                    }
                })
                .collect::<Vec<_>>();
            // the macro-average over the datasets (per model version), when there are several
            let datasets: std::collections::BTreeSet<&str> =
                raw.iter().map(|p| p.run.dataset_name.as_str()).collect();
            if datasets.len() > 1 && !NO_MACRO_AVERAGE.contains(m) {
                points.extend(h::macro_average(&raw).into_iter().map(|a| Point {
                    model: line_model(&a.suite, &a.model_name, &a.dtype, &a.device),
                    dataset: format!("mean of {}", a.datasets.join(" + ")),
                    protocol: a.protocol_key.clone(),
                    step: a.checkpoint_step,
                    about: format!(
                        "macro-average of {} over {} (the latest run of each) · suite {} · model {} · protocol {}",
                        a.metric,
                        a.datasets.join(", "),
                        a.suite,
                        a.model_reference,
                        a.protocol_key
                    ),
                    finished_at: a.finished_at,
                    value: a.value,
                    stderr: a.stderr,
                    ci95: a.ci95,
                    run_dir: PathBuf::new(),
                    average_of: a.datasets,
                    gate: None,
                }));
            }
            if !points.is_empty() {
                metrics.push((m.to_string(), points));
            }
        }
        Ok(HistoryData {
            source: db,
            selection: q.words(),
            runs,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(model: &str, step: Option<u64>, finished_at: &str, value: f64) -> Point {
        Point {
            model: model.into(),
            dataset: "d".into(),
            protocol: "sliding/64/32/auto/-/-".into(),
            step,
            finished_at: finished_at.into(),
            value,
            stderr: Some(0.01),
            ci95: Some([value - 0.0196, value + 0.0196]),
            run_dir: PathBuf::from(format!("runs/{model}-{value}")),
            about: String::new(),
            average_of: Vec::new(),
            gate: None,
        }
    }

    fn data(points: Vec<Point>) -> HistoryData {
        HistoryData {
            source: PathBuf::from("r/results.db"),
            selection: "all".into(),
            runs: points.len(),
            metrics: vec![("mean_nll_nats".into(), points)],
        }
    }

    fn svg_text(svg: &str) -> String {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants().filter_map(|n| n.text()).collect()
    }

    #[test]
    fn steps_on_the_x_axis_when_every_run_names_one_else_finish_times() {
        let stepped = data(vec![
            point("a", Some(500), "2026-12-01T00:00:00Z", 3.0),
            point("a", Some(1500), "2026-12-02T00:00:00Z", 2.9),
            point("b", Some(1000), "2026-12-03T00:00:00Z", 3.1),
        ]);
        let v = view(&stepped).unwrap();
        let m = &v.metrics[0];
        assert_eq!(m.rows.len(), 3);
        let text = svg_text(&m.svg);
        assert!(text.contains("checkpoint step"));
        for step in ["500", "1000", "1500"] {
            assert!(text.contains(step), "tick {step} in {text}");
        }
        assert!(
            text.contains("a × d") && text.contains("b × d"),
            "a line per model"
        );

        let mixed = data(vec![
            point("a", Some(500), "2026-12-01T00:00:00Z", 3.0),
            point("c", None, "2026-12-05T12:00:00Z", 3.2),
        ]);
        let v = view(&mixed).unwrap();
        let text = svg_text(&v.metrics[0].svg);
        assert!(text.contains("finish time (UTC)"), "{text}");
        assert!(
            text.contains("2026-12-01") && text.contains("2026-12-05"),
            "{text}"
        );
        assert!(v.metrics[0].caption.contains("time each run finished"));
    }

    #[test]
    fn an_empty_selection_is_refused_naming_the_database() {
        let e = check_nonempty(&data(Vec::new())).unwrap_err();
        assert_eq!(e.path, PathBuf::from("r/results.db"));
        assert!(e.problem.contains("no runs"), "{e}");
    }
}
