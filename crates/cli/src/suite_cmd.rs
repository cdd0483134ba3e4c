//! `surprisal suite run` and `surprisal history`: flags in, lines and tables out. The work is in
//! `surprisal_runner::suite` and `surprisal_runner::history`.

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use surprisal_runner::gate::GateConfig;
use surprisal_runner::history::{self, Filter, MacroPoint, Point};
use surprisal_runner::output::summary::now_rfc3339;
use surprisal_runner::suite::{self, BarSuiteProgress, Suite, SuiteOptions};
use surprisal_runner::{shard, RunError};

use crate::args::{HistoryArgs, HistoryFormat, SuiteRunArgs};
use crate::gate_cmd::{GateOutputs, Regression};

pub fn run_suite(a: &SuiteRunArgs, interrupt: Arc<AtomicBool>) -> Result<()> {
    let mut overrides = Vec::new();
    for d in &a.data {
        let Some((name, path)) = d.split_once('=') else {
            bail!("--data {d:?}: expected NAME=PATH (a dataset name of the suite and its data)");
        };
        overrides.push((name.to_string(), suite::expand_home(path)));
    }
    if a.gate.is_none() && (a.markdown.is_some() || a.junit.is_some()) {
        bail!("--markdown and --junit write the gates of --gate previous; add --gate previous");
    }
    let config = GateConfig {
        max_delta_nll_nats: a.max_delta_nll_nats,
        confidence: a.confidence,
        max_kl_nats: None,
        min_top1_agreement: None,
    };
    if !(a.confidence > 0.5 && a.confidence < 1.0) {
        bail!("--confidence must be in (0.5, 1), got {}", a.confidence);
    }
    if !(a.max_delta_nll_nats.is_finite() && a.max_delta_nll_nats >= 0.0) {
        bail!(
            "--max-delta-nll-nats must be a finite number >= 0, got {}",
            a.max_delta_nll_nats
        );
    }
    let s = Suite::load(&a.suite, &overrides)?;
    let sharding = shard::resolve(a.shard.as_deref(), "--shard", a.shards, |k| {
        std::env::var(k).ok()
    })?;
    for w in &sharding.warnings {
        eprintln!("warning: {w}");
    }
    crate::set_threads(a.threads)?;
    let opts = SuiteOptions {
        results: s.results_root(a.results.as_deref()),
        shard: sharding.shard,
        interrupt: Some(interrupt),
        checkpoint_interval: Duration::from_secs(a.checkpoint_seconds.unwrap_or(30)),
    };
    let mut progress = BarSuiteProgress::new(a.quiet);
    let report = match suite::run(&s, &opts, &mut progress) {
        Err(RunError::Interrupted { .. }) => {
            return Err(RunError::Interrupted {
                out_dir: Some(opts.results.clone()),
            })
            .context(format!(
                "interrupted: finished pairs are kept and the interrupted one was checkpointed; rerun `surprisal suite run {}` (same flags) to continue",
                a.suite.display()
            ))
        }
        r => r?,
    };
    drop(progress);
    let ran = report
        .outcomes
        .iter()
        .filter(|o| o.status == suite::PairStatus::Ran)
        .count();
    if !a.quiet {
        println!(
            "suite {}: {} of {} pairs in this task ({} run now, {} finished before, {} busy); history {}",
            s.name,
            report.outcomes.len(),
            report.pairs_total,
            ran,
            report.outcomes.len() - ran - report.busy(),
            report.busy(),
            opts.results.join(history::DB_FILE).display()
        );
    }
    let mut regressed = false;
    if a.gate.is_some() {
        let mut h = history::open(&opts.results)?;
        let gates = suite::gate_previous(&mut h, &report.outcomes, &config)?;
        GateOutputs {
            text: suite::gates_text(&gates),
            markdown: suite::gates_markdown(&gates),
            junit: suite::gates_junit(&gates, &now_rfc3339())?,
        }
        .emit(a.quiet, a.markdown.as_deref(), a.junit.as_deref())?;
        regressed = gates.iter().any(|g| !g.passed());
    }
    if report.busy() > 0 {
        bail!(
            "{} pair(s) were in use by another surprisal process and were not run; rerun when it has finished",
            report.busy()
        );
    }
    if regressed {
        return Err(Regression.into());
    }
    Ok(())
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(String::new, |v| v.to_string())
}

fn step(s: Option<u64>) -> String {
    s.map_or_else(|| "-".into(), |v| v.to_string())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn history(a: &HistoryArgs) -> Result<()> {
    let h = history::open(&a.results)?;
    let filter = Filter {
        model: a.model.clone(),
        data: a.data.clone(),
        suite: a.suite.clone(),
    };
    let points = h.series(&filter, &a.metric)?;
    let macros = history::macro_average(&points);
    let out = match a.format {
        HistoryFormat::Json => {
            let mut s = serde_json::to_string_pretty(&serde_json::json!({
                "results": a.results.display().to_string(),
                "metric": a.metric,
                "series": points,
                "macro_average": macros,
            }))?;
            s.push('\n');
            s
        }
        HistoryFormat::Csv => csv(&points, &macros),
        HistoryFormat::Table => table(&a.metric, &points, &macros),
    };
    print!("{out}");
    Ok(())
}

const CSV_HEADER: &str = "kind,suite,model_name,checkpoint_step,dataset,finished_at,metric,value,stderr,ci95_low,ci95_high,tokens_scored,dtype,tool_version,model_reference,run_dir";

fn csv(points: &[Point], macros: &[MacroPoint]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{CSV_HEADER}");
    for p in points {
        let r = &p.run;
        let fields = [
            "run".to_string(),
            r.suite.clone(),
            r.model_name.clone(),
            r.checkpoint_step.map_or(String::new(), |x| x.to_string()),
            r.dataset_name.clone(),
            r.finished_at.clone(),
            p.metric.clone(),
            p.value.to_string(),
            opt(p.stderr),
            opt(p.ci95.map(|c| c[0])),
            opt(p.ci95.map(|c| c[1])),
            r.tokens_scored.to_string(),
            r.dtype.clone(),
            r.tool_version.clone(),
            r.model_reference.clone(),
            r.run_dir.display().to_string(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        let _ = writeln!(s, "{}", row.join(","));
    }
    for m in macros {
        let fields = [
            "macro_average".to_string(),
            m.suite.clone(),
            m.model_name.clone(),
            m.checkpoint_step.map_or(String::new(), |x| x.to_string()),
            m.datasets.join("+"),
            m.finished_at.clone(),
            m.metric.clone(),
            m.value.to_string(),
            opt(m.stderr),
            opt(m.ci95.map(|c| c[0])),
            opt(m.ci95.map(|c| c[1])),
            String::new(),
            m.dtype.clone(),
            String::new(),
            m.model_reference.clone(),
            String::new(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        let _ = writeln!(s, "{}", row.join(","));
    }
    s
}

fn table(metric: &str, points: &[Point], macros: &[MacroPoint]) -> String {
    let mut s = String::new();
    if points.is_empty() {
        let _ = writeln!(s, "no runs match");
        return s;
    }
    let ci =
        |c: Option<[f64; 2]>| c.map_or_else(String::new, |c| format!("{:.6} .. {:.6}", c[0], c[1]));
    let se = |x: Option<f64>| x.map_or_else(String::new, |v| format!("± {v:.6}"));
    let mut rows = vec![[
        "model".to_string(),
        "step".into(),
        "dataset".into(),
        "finished_at".into(),
        metric.to_string(),
        "stderr".into(),
        "95% CI".into(),
        "tokens".into(),
        "dtype".into(),
    ]];
    for p in points {
        let r = &p.run;
        rows.push([
            r.model_name.clone(),
            step(r.checkpoint_step),
            r.dataset_name.clone(),
            r.finished_at.clone(),
            format!("{:.6}", p.value),
            se(p.stderr),
            ci(p.ci95),
            r.tokens_scored.to_string(),
            r.dtype.clone(),
        ]);
    }
    push_table(&mut s, &rows);
    if !macros.is_empty() {
        let _ = writeln!(
            s,
            "\nmacro-average over {} ({} datasets): mean of the datasets' values, stderr sqrt(sum se^2)/D",
            macros[0].datasets.join(", "),
            macros[0].datasets.len()
        );
        let mut rows = vec![[
            "model".to_string(),
            "step".into(),
            "finished_at".into(),
            metric.to_string(),
            "stderr".into(),
            "95% CI".into(),
            "dtype".into(),
        ]];
        for m in macros {
            rows.push([
                m.model_name.clone(),
                step(m.checkpoint_step),
                m.finished_at.clone(),
                format!("{:.6}", m.value),
                se(m.stderr),
                ci(m.ci95),
                m.dtype.clone(),
            ]);
        }
        push_table(&mut s, &rows);
    }
    s
}

fn push_table<const N: usize>(s: &mut String, rows: &[[String; N]]) {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(s, "{}", line.join("  ").trim_end());
    }
}
