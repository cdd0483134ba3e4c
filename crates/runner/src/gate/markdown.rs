//! The human forms of a [`GateReport`]: plain text (stdout, JUnit `system-out`) and Markdown (a CI
//! step summary or a pull-request comment). Numbers are printed in full (shortest round-trip
//! form), so a ΔNLL of exactly 0 reads `0`.

use std::fmt::Write;

use super::{percent, GateReport, Limit, RunSide};

fn run_line(s: &RunSide) -> String {
    format!(
        "{} ({}, model {} [{}], {} tokens, mean_nll_nats {} ± {})",
        s.dir.display(),
        s.mode,
        s.model,
        s.dtype,
        s.tokens_scored,
        s.mean_nll_nats,
        s.mean_nll_nats_stderr
    )
}

fn verdict(r: &GateReport) -> String {
    if r.passed() {
        format!("PASS ({} of {} gates)", r.checks.len(), r.checks.len())
    } else {
        format!(
            "REGRESSION ({} of {} gates failed)",
            r.failures(),
            r.checks.len()
        )
    }
}

/// The plain-text report: verdict, runs, pairing, one line per gate, notes.
pub fn to_text(r: &GateReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "gate        {}", verdict(r));
    let _ = writeln!(s, "baseline    {}", run_line(&r.baseline));
    let _ = writeln!(s, "candidate   {}", run_line(&r.candidate));
    let _ = writeln!(s, "pairing     {}", r.pairing_line());
    let _ = writeln!(
        s,
        "confidence  {} one-sided (z = {})",
        percent(r.config.confidence),
        r.z
    );
    for c in &r.checks {
        let _ = writeln!(
            s,
            "[{}] {}",
            if c.passed { "pass" } else { "FAIL" },
            c.message(r.config.confidence)
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// The Markdown report.
pub fn to_markdown(r: &GateReport) -> String {
    let mut s = String::new();
    let icon = if r.passed() { "✅" } else { "❌" };
    let _ = writeln!(s, "### surprisal gate: {icon} {}\n", verdict(r));
    let pct = percent(r.config.confidence);
    let _ = writeln!(
        s,
        "| gate | estimate | stderr | one-sided {pct} bound | limit | result |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | --- |");
    for c in &r.checks {
        let (bound, limit) = match c.limit {
            Limit::AtMost => (format!("≤ {}", c.bound), format!("≤ {}", c.threshold)),
            Limit::AtLeast => (format!("≥ {}", c.bound), format!("≥ {}", c.threshold)),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} ({}) | {bound} | {limit} | {} |",
            c.name,
            c.estimate,
            c.stderr,
            c.stderr_kind,
            if c.passed { "pass" } else { "**regression**" }
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "- baseline: `{}`", run_line(&r.baseline));
    let _ = writeln!(s, "- candidate: `{}`", run_line(&r.candidate));
    let _ = writeln!(
        s,
        "- `delta_nll_nats` = candidate − baseline; {}",
        r.pairing_line()
    );
    for n in &r.notes {
        let _ = writeln!(s, "- note: {n}");
    }
    s
}
