//! The short human-readable tables printed after a run.

use surprisal_metrics::{CompareSummary, EvalSummary};
use surprisal_runner::RunOutcome;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

fn eval_rows(s: &EvalSummary) -> Vec<(&'static str, String)> {
    vec![
        ("tokens_scored", s.tokens_scored.to_string()),
        (
            "bytes_scored",
            s.bytes_scored.map_or("-".into(), |b| b.to_string()),
        ),
        (
            "perplexity",
            format!(
                "{:.4}  (95% CI {:.4} .. {:.4})",
                s.perplexity, s.perplexity_ci95[0], s.perplexity_ci95[1]
            ),
        ),
        (
            "mean_nll_nats",
            format!("{:.6} ± {:.6}", s.mean_nll_nats, s.mean_nll_nats_stderr),
        ),
        ("bits_per_token", format!("{:.5}", s.bits_per_token)),
        ("bits_per_byte", opt(s.bits_per_byte, 5)),
        ("word_perplexity", opt(s.word_perplexity, 4)),
        ("mean_entropy_nats", format!("{:.5}", s.mean_entropy_nats)),
        (
            "mean_varentropy_nats2",
            format!("{:.5}", s.mean_varentropy_nats2),
        ),
        ("top1_accuracy", format!("{:.4}", s.top1_accuracy)),
        ("calibration_ece", format!("{:.4}", s.calibration_ece)),
    ]
}

fn print_rows(rows: &[(&str, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<w$}  {v}");
    }
}

fn print_tail<S>(o: &RunOutcome<S>) {
    println!(
        "{:.1} tokens/s over {:.1} s, {} windows",
        o.tokens_per_second, o.elapsed_seconds, o.windows
    );
    if let Some(p) = &o.summary_path {
        println!("summary: {}", p.display());
    }
    if let Some(p) = &o.rows_path {
        println!("tokens:  {}", p.display());
    }
}

pub fn print_eval(o: &RunOutcome<EvalSummary>) {
    print_rows(&eval_rows(&o.summary));
    print_tail(o);
}

pub fn print_compare(o: &RunOutcome<CompareSummary>) {
    let s = &o.summary;
    print_rows(&[
        ("tokens_scored", s.tokens_scored.to_string()),
        (
            "mean_kl_nats",
            format!("{:.6} ± {:.6}", s.mean_kl_nats, s.mean_kl_nats_stderr),
        ),
        (
            "kl_nats p50/p99/max",
            format!(
                "{:.5} / {:.5} / {:.5}",
                s.kl_nats_quantiles.p50, s.kl_nats_quantiles.p99, s.kl_nats_quantiles.max
            ),
        ),
        ("top1_agreement", format!("{:.4}", s.top1_agreement)),
        (
            "delta_mean_nll_nats",
            format!(
                "{:+.6} ± {:.6}",
                s.delta_mean_nll_nats, s.delta_mean_nll_nats_stderr
            ),
        ),
        (
            "perplexity_ratio",
            format!(
                "{:.5}  (95% CI {:.5} .. {:.5})",
                s.perplexity_ratio, s.perplexity_ratio_ci95[0], s.perplexity_ratio_ci95[1]
            ),
        ),
        ("model perplexity", format!("{:.4}", s.model.perplexity)),
        (
            "reference perplexity",
            format!("{:.4}", s.reference.perplexity),
        ),
    ]);
    print_tail(o);
}
