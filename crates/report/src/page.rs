//! The page: what each section shows, gathered into the template's context, rendered by
//! `minijinja` (HTML auto-escaping on) from `templates/report.html`.

use serde::Serialize;
use surprisal_metrics::{EvalSummary, Z_95};
use surprisal_runner::CompareReport;

use crate::error::{ReportError, Result};
use crate::history::{self, HistoryData, HistoryView};
use crate::plots::{self, marker_glyph, Curve, Marker, PlotError};
use crate::run::{Run, Summary};
use crate::stats::{
    bands, bin_label, nice_ceil, quantile, upper_limit, Band, Histogram, Histogram2d,
};
use crate::text::{self, ColorClass, Span};
use crate::Options;

const TEMPLATE: &str = include_str!("../templates/report.html");

/// One number of `summary.json` on the page: `data-key` is its dotted path in the file,
/// `data-value` its exact value (shortest round-trip), the text a rounded display.
#[derive(Serialize)]
pub(crate) struct Cell {
    before: &'static str,
    key: String,
    value: String,
    display: String,
}

#[derive(Serialize)]
struct MetricRow {
    name: &'static str,
    cells: Vec<Cell>,
    after: &'static str,
}

#[derive(Serialize)]
struct Figure {
    svg: String,
    caption: String,
}

#[derive(Serialize)]
struct Table {
    caption: String,
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

#[derive(Serialize)]
struct Fact {
    name: String,
    value: String,
    title: String,
}

#[derive(Serialize)]
struct TopKl {
    kl: String,
    before: String,
    token: String,
    after: String,
    nll: String,
    ref_nll: String,
    doc: u64,
    index: u64,
}

#[derive(Serialize)]
struct CompareView {
    metrics: Vec<MetricRow>,
    figures: Vec<Figure>,
    top_kl: Vec<TopKl>,
}

#[derive(Serialize)]
struct TextView {
    spans: Vec<Span>,
    shown: usize,
    total: usize,
    what: &'static str,
}

#[derive(Serialize)]
struct RunView {
    id: String,
    label: String,
    glyph: char,
    mode: String,
    dir: String,
    provenance: Vec<Fact>,
    metrics: Vec<MetricRow>,
    figures: Vec<Figure>,
    compare: Option<CompareView>,
    tokens: Option<TextView>,
    words: Option<TextView>,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct Page {
    title: String,
    tool_version: String,
    generated_at: String,
    runs: Vec<RunView>,
    history: Option<HistoryView>,
    overview: Vec<Figure>,
    position_table: Table,
    classes: Vec<ColorClass>,
    text_scale: String,
    text_max_nats: f64,
}

/// Renders the page for `runs` (and the history section, if any).
pub fn render(runs: &[Run], opts: &Options, hist: Option<&HistoryData>) -> Result<String> {
    let plot_err = |run: &Run| {
        let dir = run.dir.clone();
        move |e: PlotError| ReportError::new(&dir, e.to_string())
    };
    let mut views = Vec::with_capacity(runs.len());
    for (k, run) in runs.iter().enumerate() {
        views.push(run_view(k, run, opts).map_err(plot_err(run))?);
    }
    let history = hist
        .map(|h| history::view(h).map_err(|e| ReportError::new(&h.source, e.to_string())))
        .transpose()?;
    let (overview, position_table, text_scale) = match runs.first() {
        Some(first) => {
            let (o, t) = overview(runs).map_err(plot_err(first))?;
            let scale =
                plots::text_scale(text::TEXT_MAX_NATS, text::COLOR_STEPS, text::class_color)
                    .map_err(plot_err(first))?;
            (o, t, scale)
        }
        None => (
            Vec::new(),
            Table {
                caption: String::new(),
                head: Vec::new(),
                rows: Vec::new(),
            },
            String::new(),
        ),
    };
    let title = match (runs, hist) {
        ([one], _) => format!("surprisal report: {}", one.label),
        ([], Some(h)) => format!("surprisal report: history of {}", h.source.display()),
        _ => format!("surprisal report: {} runs", runs.len()),
    };
    let page = Page {
        title,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        generated_at: surprisal_runner::output::summary::now_rfc3339(),
        runs: views,
        history,
        overview,
        position_table,
        classes: text::color_classes(),
        text_scale,
        text_max_nats: text::TEXT_MAX_NATS,
    };
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template("report.html", TEMPLATE).map_err(|e| {
        ReportError::new(std::path::Path::new("templates/report.html"), e.to_string())
    })?;
    env.get_template("report.html")
        .and_then(|t| t.render(&page))
        .map_err(|e| {
            ReportError::new(
                std::path::Path::new("templates/report.html"),
                format!("{e:#}"),
            )
        })
}

/// The per-bin means of the NLL and entropy of a run: from its token rows (with 95 % bands) or,
/// without rows, from `by_position` (means only).
fn position_bands(run: &Run) -> (Vec<Band>, Vec<Band>, bool) {
    if run.tokens.is_empty() {
        let point = |b: &surprisal_metrics::PositionBin, v: f64| Band {
            bin: surprisal_metrics::position_bin_index(b.context_len_min as usize),
            count: b.count,
            mean: v,
            lo: v,
            hi: v,
        };
        let bp = run.by_position();
        (
            bp.iter().map(|b| point(b, b.mean_nll_nats)).collect(),
            bp.iter().map(|b| point(b, b.mean_entropy_nats)).collect(),
            false,
        )
    } else {
        let rows = &run.tokens;
        (
            bands(rows.iter().map(|r| (r.context_len, r.nll_nats))),
            bands(rows.iter().map(|r| (r.context_len, r.entropy_nats))),
            true,
        )
    }
}

fn overview(runs: &[Run]) -> std::result::Result<(Vec<Figure>, Table), PlotError> {
    let per_run: Vec<_> = runs.iter().map(position_bands).collect();
    let mut curves = Vec::new();
    for (k, (run, (nll, ent, _))) in runs.iter().zip(&per_run).enumerate() {
        curves.push(Curve {
            label: format!("{} NLL", run.label),
            bands: nll,
            series: k,
            dashed: false,
        });
        curves.push(Curve {
            label: format!("{} entropy", run.label),
            bands: ent,
            series: k,
            dashed: true,
        });
    }
    let all_banded = per_run.iter().all(|p| p.2);
    let svg = plots::by_position(
        "Entropy rate: mean NLL and entropy by context length",
        "nats per token",
        &curves,
    )?;
    let few_bins = per_run.iter().any(|p| p.0.len() <= 2);
    let caption = format!(
        "Mean NLL (solid) and mean entropy of the prediction (dashed) per log2 bin of context length{}. \
         A model that uses its context well falls steeply; where NLL lies above entropy the text is more surprising than the model expects.{}",
        if all_banded {
            ", with 95 % intervals (mean ± 1.96 standard errors, from the token rows)"
        } else {
            "; runs without token rows are drawn from summary.json's by_position, without intervals"
        },
        if few_bins {
            " A run with one or two bins scored its tokens with nearly the same context (the chunks protocol scores the second half of each window only): \
             a sliding or rolling run gives the whole curve."
        } else {
            ""
        }
    );
    let mut head = vec!["context".to_string()];
    for run in runs {
        head.push(format!("{} tokens", run.label));
        head.push(format!("{} NLL (95 % CI)", run.label));
        head.push(format!("{} entropy (95 % CI)", run.label));
    }
    let max_bin = per_run
        .iter()
        .flat_map(|p| p.0.iter().map(|b| b.bin))
        .max()
        .unwrap_or(0);
    let mut rows = Vec::new();
    for bin in 0..=max_bin {
        if !per_run.iter().any(|p| p.0.iter().any(|b| b.bin == bin)) {
            continue;
        }
        let mut row = vec![bin_label(bin)];
        for (nll, ent, _) in &per_run {
            let find = |v: &[Band]| v.iter().find(|b| b.bin == bin).cloned();
            match (find(nll), find(ent)) {
                (Some(n), Some(e)) => {
                    row.push(n.count.to_string());
                    row.push(format!("{:.4} [{:.4}, {:.4}]", n.mean, n.lo, n.hi));
                    row.push(format!("{:.4} [{:.4}, {:.4}]", e.mean, e.lo, e.hi));
                }
                _ => row.extend(["0".into(), "—".into(), "—".into()]),
            }
        }
        rows.push(row);
    }
    Ok((
        vec![Figure { svg, caption }],
        Table {
            caption: "The plotted numbers (nats)".into(),
            head,
            rows,
        },
    ))
}

fn run_view(k: usize, run: &Run, opts: &Options) -> std::result::Result<RunView, PlotError> {
    let s = run.model_summary();
    let prefix = if run.compare().is_some() {
        "model."
    } else {
        ""
    };
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    figures.push(Figure {
        svg: plots::calibration(
            &format!("Calibration: ECE {:.4} ({} bins)", s.calibration_ece, s.calibration_bins.len()),
            &s.calibration_bins,
        )?,
        caption: format!(
            "Top-1 accuracy against top-1 probability, {} equal-width bins; the number above each bar is its token count. \
             Bars below the diagonal: over-confident. ECE (expected calibration error) = {:.4}.",
            s.calibration_bins.len(),
            s.calibration_ece
        ),
    });
    if run.tokens.is_empty() {
        notes.push("This run has no per-token rows (it ran without --out or with --per-token none): the histograms, the coloured text and the intervals need them.".into());
    } else {
        let rows = &run.tokens;
        let nll_max = upper_limit(rows.iter().map(|r| r.nll_nats), 0.999, 4.0);
        let h = Histogram::new(0.0, nll_max, 60, rows.iter().map(|r| r.nll_nats));
        figures.push(Figure {
            svg: plots::histogram(
                &format!("Per-token NLL ({} tokens)", h.total()),
                "NLL (nats)",
                &h,
                &[Marker { x: s.mean_nll_nats, interval: None, label: format!("mean {:.4} nats", s.mean_nll_nats) }],
            )?,
            caption: format!(
                "Distribution of the per-token NLL over {} bins of {:.3} nats; values above {nll_max} nats (0.1 % tail) are counted in the last bin.",
                h.counts.len(),
                h.width()
            ),
        });
        let ent_max = upper_limit(rows.iter().map(|r| r.entropy_nats), 0.999, 2.0);
        let h2 = Histogram2d::new(
            (0.0, ent_max),
            (0.0, nll_max),
            (40, 40),
            rows.iter().map(|r| (r.entropy_nats, r.nll_nats)),
        );
        figures.push(Figure {
            svg: plots::histogram_2d("Entropy vs NLL", &h2)?,
            caption: format!(
                "Tokens per cell (colour, log scale; counts on the colour bar). Upper left: the model was sure (low entropy) and wrong (high NLL). \
                 Cells are {:.3} × {:.3} nats; values beyond the axes are counted at the edge.",
                ent_max / 40.0,
                nll_max / 40.0
            ),
        });
    }
    let vocab = text::vocabulary(&run.tokens);
    let tokens = (!run.tokens.is_empty()).then(|| TextView {
        spans: text::token_spans(&run.tokens, &run.reference, &vocab, opts.tokens),
        shown: opts.tokens.min(run.tokens.len()),
        total: run.tokens.len(),
        what: "tokens",
    });
    if opts.words && run.words.is_empty() {
        notes.push("This run has no per-word rows (it ran without --words).".into());
    }
    let words = (opts.words && !run.words.is_empty()).then(|| {
        let scored = run
            .words
            .iter()
            .filter(|w| w.surprisal_nats.is_some())
            .count();
        TextView {
            spans: text::word_spans(&run.words, opts.tokens),
            shown: opts.tokens.min(scored),
            total: scored,
            what: "words",
        }
    });
    let compare = match run.compare() {
        Some(c) => Some(compare_view(k, run, c)?),
        None => None,
    };
    Ok(RunView {
        id: format!("run{k}"),
        label: run.label.clone(),
        glyph: marker_glyph(k),
        mode: match run.summary {
            Summary::Eval(_) => "eval".into(),
            Summary::Compare(_) => "compare".into(),
        },
        dir: run.dir.display().to_string(),
        provenance: provenance(run),
        metrics: summary_rows(prefix, s, run),
        figures,
        compare,
        tokens,
        words,
        notes,
    })
}

fn compare_view(
    k: usize,
    run: &Run,
    c: &CompareReport,
) -> std::result::Result<CompareView, PlotError> {
    let mut figures = Vec::new();
    if !run.reference.is_empty() {
        let kl = bands(
            run.tokens
                .iter()
                .zip(&run.reference)
                .map(|(t, r)| (t.context_len, r.kl_nats)),
        );
        figures.push(Figure {
            svg: plots::by_position(
                "KL(reference ‖ model) by context length",
                "mean KL (nats)",
                &[Curve { label: format!("{} KL", run.label), bands: &kl, series: k, dashed: false }],
            )?,
            caption: "Mean per-token KL divergence of the model from the reference per log2 bin of context length, with 95 % intervals (from the token rows).".into(),
        });
        let deltas: Vec<f64> = run
            .tokens
            .iter()
            .zip(&run.reference)
            .map(|(t, r)| t.nll_nats - r.ref_nll_nats)
            .collect();
        let lim = nice_ceil(quantile(deltas.iter().map(|d| d.abs()), 0.995).max(1e-4));
        let h = Histogram::new(-lim, lim, 60, deltas.iter().copied());
        let half = Z_95 * c.delta_mean_nll_nats_stderr;
        figures.push(Figure {
            svg: plots::histogram(
                &format!("ΔNLL = NLL(model) − NLL(reference), {} tokens", h.total()),
                "ΔNLL (nats)",
                &h,
                &[Marker {
                    x: c.delta_mean_nll_nats,
                    interval: Some((c.delta_mean_nll_nats - half, c.delta_mean_nll_nats + half)),
                    label: format!("paired mean {:+.5} ± {:.5} nats", c.delta_mean_nll_nats, half),
                }],
            )?,
            caption: format!(
                "Per-token NLL difference; the line is the paired mean ΔNLL {:+.5} nats, shaded its 95 % interval [{:+.5}, {:+.5}] \
                 (paired standard error {:.5}); perplexity ratio {:.5} [{:.5}, {:.5}]. The outer 0.5 % of |ΔNLL| is counted in the edge bins.",
                c.delta_mean_nll_nats,
                c.delta_mean_nll_nats - half,
                c.delta_mean_nll_nats + half,
                c.delta_mean_nll_nats_stderr,
                c.perplexity_ratio,
                c.perplexity_ratio_ci95[0],
                c.perplexity_ratio_ci95[1]
            ),
        });
    }
    let top_kl = c
        .top_kl_positions
        .iter()
        .map(|p| TopKl {
            kl: format!("{:.4}", p.kl_nats),
            before: p.context_before.clone(),
            token: p.token.clone(),
            after: p.context_after.clone(),
            nll: format!("{:.3}", p.nll_nats),
            ref_nll: format!("{:.3}", p.ref_nll_nats),
            doc: p.doc,
            index: p.index,
        })
        .collect();
    Ok(CompareView {
        metrics: compare_rows(c),
        figures,
        top_kl,
    })
}

pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.6}")
    }
}

pub(crate) fn cell(before: &'static str, key: String, v: f64) -> Cell {
    Cell {
        before,
        key,
        value: if v.is_finite() {
            format!("{v}")
        } else {
            "null".into()
        },
        display: num(v),
    }
}

fn int_cell(key: String, v: u64) -> Cell {
    Cell {
        before: "",
        key,
        value: v.to_string(),
        display: v.to_string(),
    }
}

/// `value ± stderr`.
fn pm(name: &'static str, p: &str, key: &str, v: f64, se: f64) -> MetricRow {
    MetricRow {
        name,
        cells: vec![
            cell("", format!("{p}{key}"), v),
            cell(" ± ", format!("{p}{key}_stderr"), se),
        ],
        after: " (± 1 standard error)",
    }
}

/// `value (95 % CI lo – hi)`.
fn ci(name: &'static str, p: &str, key: &str, v: f64, lohi: [f64; 2]) -> MetricRow {
    MetricRow {
        name,
        cells: vec![
            cell("", format!("{p}{key}"), v),
            cell(" (95 % CI ", format!("{p}{key}_ci95.0"), lohi[0]),
            cell(" – ", format!("{p}{key}_ci95.1"), lohi[1]),
        ],
        after: ")",
    }
}

fn one(name: &'static str, key: String, v: f64) -> MetricRow {
    MetricRow {
        name,
        cells: vec![cell("", key, v)],
        after: "",
    }
}

fn summary_rows(p: &str, s: &EvalSummary, run: &Run) -> Vec<MetricRow> {
    let mut rows = vec![
        MetricRow {
            name: "tokens scored",
            cells: vec![int_cell(format!("{p}tokens_scored"), s.tokens_scored)],
            after: "",
        },
        ci(
            "perplexity",
            p,
            "perplexity",
            s.perplexity,
            s.perplexity_ci95,
        ),
        pm(
            "mean NLL (nats)",
            p,
            "mean_nll_nats",
            s.mean_nll_nats,
            s.mean_nll_nats_stderr,
        ),
        one(
            "bits per token",
            format!("{p}bits_per_token"),
            s.bits_per_token,
        ),
    ];
    if let Some(v) = s.bits_per_byte {
        rows.push(one("bits per byte", format!("{p}bits_per_byte"), v));
    }
    if let Some(v) = s.word_perplexity {
        rows.push(one("word perplexity", format!("{p}word_perplexity"), v));
    }
    rows.extend([
        pm(
            "mean entropy (nats)",
            p,
            "mean_entropy_nats",
            s.mean_entropy_nats,
            s.mean_entropy_nats_stderr,
        ),
        pm(
            "mean varentropy (nats²)",
            p,
            "mean_varentropy_nats2",
            s.mean_varentropy_nats2,
            s.mean_varentropy_nats2_stderr,
        ),
        one(
            "mean min-entropy (nats)",
            format!("{p}mean_min_entropy_nats"),
            s.mean_min_entropy_nats,
        ),
        one(
            "mean Rényi-2 entropy (nats)",
            format!("{p}mean_renyi2_entropy_nats"),
            s.mean_renyi2_entropy_nats,
        ),
        one(
            "top-1 accuracy",
            format!("{p}top1_accuracy"),
            s.top1_accuracy,
        ),
        one(
            "mean top-1 probability",
            format!("{p}mean_top1_prob"),
            s.mean_top1_prob,
        ),
        one(
            "calibration ECE",
            format!("{p}calibration_ece"),
            s.calibration_ece,
        ),
    ]);
    let (tps, secs) = match &run.summary {
        Summary::Eval(f) => (f.tokens_per_second, f.elapsed_seconds),
        Summary::Compare(f) => (f.tokens_per_second, f.elapsed_seconds),
    };
    rows.push(one("tokens per second", "tokens_per_second".into(), tps));
    rows.push(one("elapsed (s)", "elapsed_seconds".into(), secs));
    rows
}

fn compare_rows(c: &CompareReport) -> Vec<MetricRow> {
    let q = &c.kl_nats_quantiles;
    vec![
        pm(
            "mean KL(reference ‖ model) (nats)",
            "",
            "mean_kl_nats",
            c.mean_kl_nats,
            c.mean_kl_nats_stderr,
        ),
        MetricRow {
            name: "KL quantiles (nats)",
            cells: vec![
                cell("median ", "kl_nats_quantiles.p50".into(), q.p50),
                cell(" · p90 ", "kl_nats_quantiles.p90".into(), q.p90),
                cell(" · p99 ", "kl_nats_quantiles.p99".into(), q.p99),
                cell(" · max ", "kl_nats_quantiles.max".into(), q.max),
            ],
            after: "",
        },
        one("top-1 agreement", "top1_agreement".into(), c.top1_agreement),
        pm(
            "ΔNLL, paired (nats)",
            "",
            "delta_mean_nll_nats",
            c.delta_mean_nll_nats,
            c.delta_mean_nll_nats_stderr,
        ),
        ci(
            "perplexity ratio (model / reference)",
            "",
            "perplexity_ratio",
            c.perplexity_ratio,
            c.perplexity_ratio_ci95,
        ),
        pm(
            "Δ mean entropy (nats)",
            "",
            "delta_mean_entropy_nats",
            c.delta_mean_entropy_nats,
            c.delta_mean_entropy_nats_stderr,
        ),
        one(
            "mean Δ target probability",
            "mean_target_prob_delta".into(),
            c.mean_target_prob_delta,
        ),
        one(
            "RMS Δ target probability",
            "rms_target_prob_delta".into(),
            c.rms_target_prob_delta,
        ),
        ci(
            "reference perplexity",
            "reference.",
            "perplexity",
            c.reference.perplexity,
            c.reference.perplexity_ci95,
        ),
    ]
}

/// The provenance facts of `summary.json` (model and file hashes, data, protocol, device, dtype,
/// tool version, times), read from its JSON so that every field the run recorded is shown.
fn provenance(run: &Run) -> Vec<Fact> {
    let j = &run.raw;
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        o => o.to_string(),
    };
    let fact = |name: &str, value: String| Fact {
        name: name.into(),
        value,
        title: String::new(),
    };
    let mut out = vec![fact("mode", s(&j["mode"]))];
    for (key, name) in [("model_source", "model"), ("reference_source", "reference")] {
        let Some(m) = j.get(key) else { continue };
        out.push(fact(name, s(&m["reference"])));
        for f in m["files"].as_array().into_iter().flatten() {
            let sha = s(&f["sha256"]);
            out.push(Fact {
                name: format!("{name} file"),
                value: format!(
                    "{} (sha256 {}…)",
                    s(&f["path"]),
                    sha.get(..12).unwrap_or(&sha)
                ),
                title: format!("sha256 {sha}"),
            });
        }
    }
    let sha = s(&j["data"]["sha256"]);
    out.push(Fact {
        name: "data".into(),
        value: format!(
            "{} (sha256 {}…)",
            s(&j["data"]["path"]),
            sha.get(..12).unwrap_or(&sha)
        ),
        title: format!("sha256 {sha}"),
    });
    let p = &j["protocol"];
    out.push(fact(
        "protocol",
        format!(
            "{} · window {} · stride {} · bos {} (used: {}) · max_tokens {} · max_chunks {} · batch {}",
            s(&p["name"]),
            s(&p["window"]),
            s(&p["stride"]),
            s(&p["bos"]),
            s(&p["bos_used"]),
            s(&p["max_tokens"]),
            s(&p["max_chunks"]),
            s(&p["batch_size"])
        ),
    ));
    for (key, name) in [
        ("device", "device"),
        ("dtype", "dtype"),
        ("stats_on", "statistics computed on"),
        ("tool_version", "surprisal version (run)"),
        ("windows", "windows"),
        ("started_at", "started"),
        ("finished_at", "finished"),
    ] {
        out.push(fact(name, s(&j[key])));
    }
    if let Some(sh) = j.get("shard") {
        out.push(fact("shard", sh.to_string()));
    }
    if let Some(m) = j.get("merged_shards") {
        out.push(fact("merged shards", s(m)));
    }
    for f in &run.rows_files {
        out.push(fact("rows read", f.display().to_string()));
    }
    out
}
