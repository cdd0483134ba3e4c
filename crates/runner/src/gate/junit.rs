//! JUnit XML of a [`GateReport`] (read by Jenkins, GitLab, Buildkite): one `<testsuite>` with one
//! `<testcase>` per gate; a failed gate carries `<failure type="regression" message="…">` with its
//! numbers. Written with `quick-xml`, which escapes attribute values and text.
//!
//! ```text
//! <testsuites name="surprisal gate" tests="2" failures="1" errors="0" time="…">
//!   <testsuite name="surprisal gate" tests="2" failures="1" errors="0" skipped="0" time="…" timestamp="…">
//!     <properties><property name="baseline" value="runs/a"/>…</properties>
//!     <testcase name="delta_nll_nats" classname="surprisal.gate" time="0"><failure …/></testcase>
//!     <testcase name="mean_kl_nats" classname="surprisal.gate" time="0"/>
//!     <system-out>the report as text</system-out>
//!   </testsuite>
//! </testsuites>
//! ```

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;

use super::{percent, GateReport, Pairing};
use crate::error::{Result, RunError};

/// The JUnit XML document (UTF-8).
pub fn to_junit(report: &GateReport, timestamp: &str) -> Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    let tests = report.checks.len().to_string();
    let failures = report.failures().to_string();
    let time = junit_time(report.elapsed_seconds);
    start_document(&mut w, &tests, &failures, &time)?;
    write_testsuite(&mut w, "surprisal gate", report, timestamp)?;
    end_document(w)
}

/// A time attribute: seconds with at most 3 decimals (the JUnit schema's `SUREFIRE_TIME` pattern
/// allows no more).
pub fn junit_time(seconds: f64) -> String {
    format!("{:.3}", seconds.max(0.0))
}

pub(crate) fn xml_err(e: std::io::Error) -> RunError {
    RunError::Report(format!("JUnit XML: {e}"))
}

/// The declaration and the opening `<testsuites>`.
pub(crate) fn start_document(
    w: &mut Writer<Vec<u8>>,
    tests: &str,
    failures: &str,
    time: &str,
) -> Result<()> {
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(xml_err)?;
    let mut suites = BytesStart::new("testsuites");
    suites.extend_attributes([
        ("name", "surprisal gate"),
        ("tests", tests),
        ("failures", failures),
        ("errors", "0"),
        ("time", time),
    ]);
    w.write_event(Event::Start(suites)).map_err(xml_err)
}

/// The closing `</testsuites>`; the document as a string.
pub(crate) fn end_document(mut w: Writer<Vec<u8>>) -> Result<String> {
    w.write_event(Event::End(BytesEnd::new("testsuites")))
        .map_err(xml_err)?;
    let mut s = String::from_utf8(w.into_inner())
        .map_err(|e| RunError::Report(format!("JUnit XML: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// One `<testsuite name=NAME>` for `report`: properties, a test case per gate, the text report
/// as `system-out`.
pub(crate) fn write_testsuite(
    w: &mut Writer<Vec<u8>>,
    name: &str,
    report: &GateReport,
    timestamp: &str,
) -> Result<()> {
    let tests = report.checks.len().to_string();
    let failures = report.failures().to_string();
    let time = junit_time(report.elapsed_seconds);
    let mut suite = BytesStart::new("testsuite");
    suite.extend_attributes([
        ("name", name),
        ("tests", tests.as_str()),
        ("failures", failures.as_str()),
        ("errors", "0"),
        ("skipped", "0"),
        ("time", time.as_str()),
        ("timestamp", timestamp),
    ]);
    w.write_event(Event::Start(suite)).map_err(xml_err)?;

    w.write_event(Event::Start(BytesStart::new("properties")))
        .map_err(xml_err)?;
    let (pairing, paired_tokens) = match &report.pairing {
        Pairing::Paired { tokens } => ("paired".to_string(), tokens.to_string()),
        Pairing::Unpaired { reason } => (format!("unpaired: {reason}"), "0".to_string()),
    };
    let props: Vec<(&str, String)> = vec![
        ("baseline", report.baseline.dir.display().to_string()),
        ("candidate", report.candidate.dir.display().to_string()),
        ("baseline_model", report.baseline.model.clone()),
        ("candidate_model", report.candidate.model.clone()),
        ("pairing", pairing),
        ("tokens_paired", paired_tokens),
        ("confidence", report.config.confidence.to_string()),
        ("z", report.z.to_string()),
    ];
    for (name, value) in &props {
        let mut p = BytesStart::new("property");
        p.extend_attributes([("name", *name), ("value", value.as_str())]);
        w.write_event(Event::Empty(p)).map_err(xml_err)?;
    }
    w.write_event(Event::End(BytesEnd::new("properties")))
        .map_err(xml_err)?;

    for c in &report.checks {
        let mut tc = BytesStart::new("testcase");
        tc.extend_attributes([
            ("name", c.name),
            ("classname", "surprisal.gate"),
            ("time", "0"),
        ]);
        if c.passed {
            w.write_event(Event::Empty(tc)).map_err(xml_err)?;
            continue;
        }
        w.write_event(Event::Start(tc)).map_err(xml_err)?;
        let message = c.message(report.config.confidence);
        let mut f = BytesStart::new("failure");
        f.extend_attributes([("message", message.as_str()), ("type", "regression")]);
        w.write_event(Event::Start(f)).map_err(xml_err)?;
        let detail = format!(
            "{message}\nconfidence {} (one-sided z {}); {}",
            percent(report.config.confidence),
            report.z,
            report.pairing_line()
        );
        w.write_event(Event::Text(BytesText::new(&detail)))
            .map_err(xml_err)?;
        w.write_event(Event::End(BytesEnd::new("failure")))
            .map_err(xml_err)?;
        w.write_event(Event::End(BytesEnd::new("testcase")))
            .map_err(xml_err)?;
    }
    w.write_event(Event::Start(BytesStart::new("system-out")))
        .map_err(xml_err)?;
    w.write_event(Event::Text(BytesText::new(&super::markdown::to_text(
        report,
    ))))
    .map_err(xml_err)?;
    w.write_event(Event::End(BytesEnd::new("system-out")))
        .map_err(xml_err)?;
    w.write_event(Event::End(BytesEnd::new("testsuite")))
        .map_err(xml_err)?;
    Ok(())
}
