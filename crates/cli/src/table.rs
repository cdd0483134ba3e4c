//! The short human-readable tables printed after a run.

use surprisal_metrics::EvalSummary;
use surprisal_runner::{CompareReport, RunOutcome, TopKlPosition};

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
    if let Some(p) = &o.words_path {
        println!("words:   {}", p.display());
    }
}

pub fn print_eval(o: &RunOutcome<EvalSummary>) {
    print_rows(&eval_rows(&o.summary));
    print_tail(o);
}

pub fn print_compare(o: &RunOutcome<CompareReport>) {
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
    print!("{}", top_kl_table(&s.top_kl_positions));
    print_tail(o);
}

/// The largest-KL positions, one a line: KL, document, token index and the
/// context with the target token in brackets.
fn top_kl_table(positions: &[TopKlPosition]) -> String {
    if positions.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nlargest KL positions (top {}):\n{:>9}  {:>5}  {:>7}  context\n",
        positions.len(),
        "kl_nats",
        "doc",
        "index"
    );
    for p in positions {
        out.push_str(&format!(
            "{:>9.5}  {:>5}  {:>7}  {}\n",
            p.kl_nats,
            p.doc,
            p.index,
            p.snippet()
        ));
    }
    out.push('\n');
    out
}

/// What `surprisal merge` wrote.
pub fn print_merged(m: &surprisal_runner::merge::Merged) {
    println!(
        "merged {} {} shards: {} tokens scored",
        m.shards, m.mode, m.tokens_scored
    );
    println!("summary: {}", m.summary_path.display());
    if let Some(p) = &m.rows_path {
        println!("tokens:  {}", p.display());
    }
    if let Some(p) = &m.words_path {
        println!("words:   {}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_kl_lines() {
        let p = TopKlPosition {
            kl_nats: 1.5,
            doc: 2,
            index: 40,
            token_id: 7,
            token: " sat".into(),
            context_before: "the cat".into(),
            context_after: " on".into(),
            nll_nats: 3.0,
            ref_nll_nats: 1.0,
        };
        let t = top_kl_table(&[p]);
        assert!(
            t.contains("  1.50000      2       40  …the cat[ sat] on…\n"),
            "{t}"
        );
        assert_eq!(top_kl_table(&[]), "");
    }
}
