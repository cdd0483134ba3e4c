//! `surprisal gate`: is a candidate run worse than a baseline run, beyond the noise?
//!
//! Both runs are finished run directories (`summary.json`, and per-token rows `tokens.*` when the
//! run wrote them). The gates, each a [`GateCheck`]:
//!
//! * `delta_nll_nats` (always): mean per-token NLL of the candidate minus the baseline. When both
//!   runs have per-token rows with the same `(doc, index, token_id)` row by row (same data,
//!   tokenizer and scored positions), the estimate is **paired** over those tokens; otherwise it
//!   falls back to the **unpaired** difference of the two summaries' means, with
//!   `√(se_b² + se_c²)`, and [`Pairing::Unpaired`] says why. A regression when the one-sided upper
//!   bound at the confidence exceeds `max_delta_nll_nats`. Formulas: `surprisal_metrics`' `gate`
//!   module.
//! * `mean_kl_nats` (with `max_kl_nats`): the candidate must be a `compare` run (its model scored
//!   against a reference, typically the baseline's model); a regression when the upper bound of its
//!   mean KL(reference ‖ model) exceeds the limit.
//! * `top1_agreement` (with `min_top1_agreement`): same source; a regression when the lower bound
//!   of the agreement (`se = √(a(1 − a)/(N − 1))`, the bound clamped to `[0, 1]`) is below the
//!   limit.
//!
//! Every gate asks for confidence that the candidate is within its limit, so a noisy run can fail a
//! gate whose point estimate passes; the report shows both. Reports: [`markdown`], [`junit`].

pub mod junit;
pub mod markdown;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use surprisal_metrics::{
    lower_bound, normal_quantile, proportion_stderr, DeltaEstimate, EvalSummary,
};

use crate::error::{Result, RunError};
use crate::output::records::TokenRow;
use crate::output::rows::read_rows;
use crate::output::summary::{ProtocolReport, SummaryFile, SUMMARY_FILE};
use crate::top_kl::CompareReport;

/// Limits and confidence of a gate.
#[derive(Clone, Debug, PartialEq)]
pub struct GateConfig {
    /// Largest allowed mean per-token NLL increase, candidate − baseline (nats/token).
    pub max_delta_nll_nats: f64,
    /// One-sided confidence of the bounds, in `(0.5, 1)`.
    pub confidence: f64,
    /// Largest allowed mean KL(reference ‖ candidate) (nats/token), from a `compare` candidate.
    pub max_kl_nats: Option<f64>,
    /// Smallest allowed top-1 agreement with the reference, from a `compare` candidate.
    pub min_top1_agreement: Option<f64>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            max_delta_nll_nats: 0.002,
            confidence: 0.99,
            max_kl_nats: None,
            min_top1_agreement: None,
        }
    }
}

impl GateConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RunError::Config(m));
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return bad(format!(
                "confidence must be in (0.5, 1), got {}",
                self.confidence
            ));
        }
        if !(self.max_delta_nll_nats.is_finite() && self.max_delta_nll_nats >= 0.0) {
            return bad(format!(
                "max delta NLL must be a finite number >= 0 (nats/token), got {}",
                self.max_delta_nll_nats
            ));
        }
        if let Some(k) = self.max_kl_nats {
            if !(k.is_finite() && k >= 0.0) {
                return bad(format!(
                    "max KL must be a finite number >= 0 (nats), got {k}"
                ));
            }
        }
        if let Some(a) = self.min_top1_agreement {
            if !(0.0..=1.0).contains(&a) {
                return bad(format!("min top-1 agreement must be in [0, 1], got {a}"));
            }
        }
        Ok(())
    }
}

/// What a `compare` run adds: the model against its reference.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareNumbers {
    /// The reference model (`reference_source.reference`).
    pub reference: String,
    /// Mean KL(reference ‖ model) (nats/token) and its standard error.
    pub mean_kl_nats: f64,
    /// Standard error of `mean_kl_nats`.
    pub mean_kl_nats_stderr: f64,
    /// Fraction of tokens where both arg-max ids agree.
    pub top1_agreement: f64,
}

/// One side of the gate, as read from its run directory.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSide {
    /// The run directory.
    pub dir: PathBuf,
    /// `eval` or `compare`.
    pub mode: String,
    /// The model (`model_source.reference`; in a `compare` run the model, not the reference).
    pub model: String,
    /// Compute dtype (`f32`, `Q4_1`, `Q4_1 dequantized to F32`, …).
    pub dtype: String,
    /// Data path.
    pub data_path: String,
    /// SHA-256 of the data.
    pub data_sha256: String,
    /// Protocol of the run.
    pub protocol: ProtocolReport,
    /// Scored tokens.
    pub tokens_scored: u64,
    /// The model's mean NLL (nats/token) and its standard error.
    pub mean_nll_nats: f64,
    /// Standard error of `mean_nll_nats`.
    pub mean_nll_nats_stderr: f64,
    /// The per-token rows file, when the run wrote one.
    pub rows_file: Option<PathBuf>,
    /// `compare` runs only.
    pub compare: Option<CompareNumbers>,
}

/// How `delta_nll_nats` was estimated.
#[derive(Clone, Debug, PartialEq)]
pub enum Pairing {
    /// Over the same tokens, row by row.
    Paired {
        /// Tokens paired (all of both runs').
        tokens: u64,
    },
    /// From the two summaries.
    Unpaired {
        /// Why the runs could not be paired.
        reason: String,
    },
}

/// Which side of the estimate a gate bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The value must be at most the threshold: its upper bound is checked.
    AtMost,
    /// The value must be at least the threshold: its lower bound is checked.
    AtLeast,
}

/// One gate: an estimate, its standard error, the one-sided bound and the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct GateCheck {
    /// Metric key with its unit (`delta_nll_nats`, `mean_kl_nats`, `top1_agreement`).
    pub name: &'static str,
    /// Point estimate.
    pub estimate: f64,
    /// Its standard error.
    pub stderr: f64,
    /// The one-sided bound at the confidence (upper for [`Limit::AtMost`], lower for
    /// [`Limit::AtLeast`]).
    pub bound: f64,
    /// The limit.
    pub threshold: f64,
    /// Which side.
    pub limit: Limit,
    /// Whether the bound is within the threshold.
    pub passed: bool,
    /// What the standard error is (`paired over 602 tokens`, `unpaired`, …).
    pub stderr_kind: String,
}

impl GateCheck {
    fn new(
        name: &'static str,
        estimate: f64,
        stderr: f64,
        threshold: f64,
        limit: Limit,
        confidence: f64,
        stderr_kind: String,
    ) -> Result<Self> {
        let bound = match limit {
            Limit::AtMost => surprisal_metrics::upper_bound(estimate, stderr, confidence),
            Limit::AtLeast => lower_bound(estimate, stderr, confidence),
        };
        // a proportion's normal-approximation bound can leave [0, 1] near its ends
        let bound = if name == "top1_agreement" {
            bound.clamp(0.0, 1.0)
        } else {
            bound
        };
        if !bound.is_finite() {
            return Err(RunError::Gate(format!(
                "cannot bound {name}: estimate {estimate}, standard error {stderr} ({stderr_kind}); \
                 a gate needs at least 2 scored tokens with finite values"
            )));
        }
        let passed = match limit {
            Limit::AtMost => bound <= threshold,
            Limit::AtLeast => bound >= threshold,
        };
        Ok(GateCheck {
            name,
            estimate,
            stderr,
            bound,
            threshold,
            limit,
            passed,
            stderr_kind,
        })
    }

    /// One line: `delta_nll_nats = 0.0123 (stderr 0.0011, paired over 602 tokens); upper 99% bound
    /// 0.0149 > max 0.002: REGRESSION`.
    pub fn message(&self, confidence: f64) -> String {
        let (side, cmp, lim) = match (self.limit, self.passed) {
            (Limit::AtMost, true) => ("upper", "<=", "max"),
            (Limit::AtMost, false) => ("upper", ">", "max"),
            (Limit::AtLeast, true) => ("lower", ">=", "min"),
            (Limit::AtLeast, false) => ("lower", "<", "min"),
        };
        format!(
            "{} = {} (stderr {}, {}); {side} {} bound {} {cmp} {lim} {}: {}",
            self.name,
            self.estimate,
            self.stderr,
            self.stderr_kind,
            percent(confidence),
            self.bound,
            self.threshold,
            if self.passed { "pass" } else { "REGRESSION" }
        )
    }
}

/// `0.99` → `99%`.
pub fn percent(confidence: f64) -> String {
    format!("{}%", (confidence * 1e6).round() / 1e4)
}

/// The gate's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct GateReport {
    /// The baseline run.
    pub baseline: RunSide,
    /// The candidate run.
    pub candidate: RunSide,
    /// How `delta_nll_nats` was estimated.
    pub pairing: Pairing,
    /// The configuration.
    pub config: GateConfig,
    /// `Φ⁻¹(confidence)`.
    pub z: f64,
    /// Every gate, `delta_nll_nats` first.
    pub checks: Vec<GateCheck>,
    /// Things the reader should know (runs of different data or protocol, …).
    pub notes: Vec<String>,
    /// Wall time of the gate (s).
    pub elapsed_seconds: f64,
}

impl GateReport {
    /// Whether every gate passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Gates that failed.
    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| !c.passed).count()
    }

    /// One line on the pairing.
    pub fn pairing_line(&self) -> String {
        match &self.pairing {
            Pairing::Paired { tokens } => format!(
                "paired over {tokens} tokens (doc, index and token_id identical row by row)"
            ),
            Pairing::Unpaired { reason } => format!(
                "unpaired ({reason}): difference of the two summaries' means, stderr sqrt(se_b^2 + se_c^2)"
            ),
        }
    }
}

/// Reads both runs and applies the gates of `config`.
pub fn run_gate(baseline: &Path, candidate: &Path, config: &GateConfig) -> Result<GateReport> {
    let started = std::time::Instant::now();
    config.validate()?;
    let b = read_side(baseline)?;
    let c = read_side(candidate)?;
    let conf = config.confidence;
    let mut notes = Vec::new();

    let rows = |side: &RunSide| -> Result<Option<Vec<TokenRow>>> {
        let Some(p) = &side.rows_file else {
            return Ok(None);
        };
        let rows: Vec<TokenRow> = read_rows(p)?;
        if rows.len() as u64 != side.tokens_scored {
            return Err(RunError::Gate(format!(
                "{} has {} rows but {} says tokens_scored {}",
                p.display(),
                rows.len(),
                side.dir.join(SUMMARY_FILE).display(),
                side.tokens_scored
            )));
        }
        Ok(Some(rows))
    };
    let (b_rows, c_rows) = (rows(&b)?, rows(&c)?);
    let (pairing, delta) = match (&b_rows, &c_rows) {
        (Some(br), Some(cr)) => match first_difference(br, cr) {
            None => {
                for (k, (x, y)) in br.iter().zip(cr).enumerate() {
                    if !(x.nll_nats.is_finite() && y.nll_nats.is_finite()) {
                        return Err(RunError::Gate(format!(
                            "row {k} (doc {}, index {}) has a non-finite nll_nats (baseline {}, candidate {}); \
                             the gate needs finite NLLs",
                            x.doc, x.index, x.nll_nats, y.nll_nats
                        )));
                    }
                }
                let (d, n) =
                    DeltaEstimate::paired(br.iter().zip(cr).map(|(x, y)| (x.nll_nats, y.nll_nats)));
                (Pairing::Paired { tokens: n }, d)
            }
            Some(reason) => (Pairing::Unpaired { reason }, unpaired(&b, &c)),
        },
        _ => {
            let which = match (&b_rows, &c_rows) {
                (None, None) => "neither run has per-token rows",
                (None, _) => "the baseline has no per-token rows",
                _ => "the candidate has no per-token rows",
            };
            let reason = format!("{which}; write them with --out DIR (and not --per-token none)");
            (Pairing::Unpaired { reason }, unpaired(&b, &c))
        }
    };
    let paired = matches!(pairing, Pairing::Paired { .. });
    if b.data_sha256 != c.data_sha256 {
        notes.push(format!(
            "the runs scored different data: baseline {} (sha256 {}), candidate {} (sha256 {}){}",
            b.data_path,
            short(&b.data_sha256),
            c.data_path,
            short(&c.data_sha256),
            if paired {
                "; their scored token ids are identical, so the test is still paired"
            } else {
                "; the difference mixes the models with the data"
            }
        ));
    }
    if b.protocol != c.protocol {
        notes.push(format!(
            "the protocols differ: baseline {}, candidate {}",
            protocol_line(&b.protocol),
            protocol_line(&c.protocol)
        ));
    }

    let stderr_kind = match &pairing {
        Pairing::Paired { tokens } => format!("paired over {tokens} tokens"),
        Pairing::Unpaired { .. } => "unpaired".to_string(),
    };
    let mut checks = vec![GateCheck::new(
        "delta_nll_nats",
        delta.delta_nats,
        delta.stderr_nats,
        config.max_delta_nll_nats,
        Limit::AtMost,
        conf,
        stderr_kind,
    )?];
    if config.max_kl_nats.is_some() || config.min_top1_agreement.is_some() {
        let Some(cmp) = &c.compare else {
            return Err(RunError::Gate(format!(
                "a KL or top-1 agreement gate needs a compare run as the candidate (surprisal compare \
                 --model CANDIDATE --reference BASELINE --out DIR), but {} is an {} run",
                c.dir.join(SUMMARY_FILE).display(),
                c.mode
            )));
        };
        let n = c.tokens_scored;
        if let Some(max) = config.max_kl_nats {
            checks.push(GateCheck::new(
                "mean_kl_nats",
                cmp.mean_kl_nats,
                cmp.mean_kl_nats_stderr,
                max,
                Limit::AtMost,
                conf,
                format!("over {n} tokens, against {}", cmp.reference),
            )?);
        }
        if let Some(min) = config.min_top1_agreement {
            checks.push(GateCheck::new(
                "top1_agreement",
                cmp.top1_agreement,
                proportion_stderr(cmp.top1_agreement, n),
                min,
                Limit::AtLeast,
                conf,
                format!("binomial, over {n} tokens, against {}", cmp.reference),
            )?);
        }
    }
    Ok(GateReport {
        baseline: b,
        candidate: c,
        pairing,
        config: config.clone(),
        z: normal_quantile(conf),
        checks,
        notes,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn protocol_line(p: &ProtocolReport) -> String {
    let mut s = format!("{} window {}", p.name, p.window);
    if let Some(st) = p.stride {
        s += &format!(" stride {st}");
    }
    s += &format!(" bos {}", if p.bos_used { "used" } else { "not used" });
    if let Some(m) = p.max_tokens {
        s += &format!(" max_tokens {m}");
    }
    if let Some(m) = p.max_chunks {
        s += &format!(" max_chunks {m}");
    }
    s
}

fn unpaired(b: &RunSide, c: &RunSide) -> DeltaEstimate {
    DeltaEstimate::unpaired(
        b.mean_nll_nats,
        b.mean_nll_nats_stderr,
        c.mean_nll_nats,
        c.mean_nll_nats_stderr,
    )
}

/// Why two row lists cannot be paired (`None`: same `(doc, index, token_id)` row by row).
fn first_difference(b: &[TokenRow], c: &[TokenRow]) -> Option<String> {
    if b.len() != c.len() {
        return Some(format!(
            "the baseline scored {} tokens, the candidate {}",
            b.len(),
            c.len()
        ));
    }
    let k = b
        .iter()
        .zip(c)
        .position(|(x, y)| (x.doc, x.index, x.token_id) != (y.doc, y.index, y.token_id))?;
    let (x, y) = (&b[k], &c[k]);
    Some(format!(
        "the token rows differ from row {k} on: baseline doc {} index {} token_id {}, candidate doc {} index {} token_id {}",
        x.doc, x.index, x.token_id, y.doc, y.index, y.token_id
    ))
}

/// Reads a finished run directory.
pub fn read_side(dir: &Path) -> Result<RunSide> {
    let gate_err = |m: String| RunError::Gate(format!("{}: {m}", dir.display()));
    if !dir.is_dir() {
        return Err(gate_err(
            "not a directory (expected a run directory written with --out)".into(),
        ));
    }
    let path = dir.join(SUMMARY_FILE);
    if !path.is_file() {
        let hint = if dir.join("checkpoint.json").exists() {
            "the run is not finished (resume it with --resume)"
        } else if std::fs::read_dir(dir)
            .map(|it| {
                it.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("shard-"))
            })
            .unwrap_or(false)
        {
            "a sharded run: combine its shards with `surprisal merge DIR` first"
        } else {
            "not a run directory written with --out"
        };
        return Err(gate_err(format!("no {SUMMARY_FILE} ({hint})")));
    }
    #[derive(Deserialize)]
    struct Mode {
        mode: Option<String>,
    }
    let text = std::fs::read_to_string(&path).map_err(|e| RunError::io(&path, e))?;
    let mode: Mode = serde_json::from_str(&text)
        .map_err(|e| RunError::Gate(format!("{} is not a valid summary: {e}", path.display())))?;
    let rows_file = ["tokens.parquet", "tokens.jsonl"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file());
    match mode.mode.as_deref() {
        Some("eval") => {
            let s = SummaryFile::<EvalSummary>::read(&path)?;
            Ok(side(dir, &s, &s.metrics, rows_file, None))
        }
        Some("compare") => {
            let s = SummaryFile::<CompareReport>::read(&path)?;
            let cmp = CompareNumbers {
                reference: s
                    .provenance
                    .reference_model
                    .as_ref()
                    .map_or_else(|| "the reference".to_string(), |r| r.reference.clone()),
                mean_kl_nats: s.metrics.mean_kl_nats,
                mean_kl_nats_stderr: s.metrics.mean_kl_nats_stderr,
                top1_agreement: s.metrics.top1_agreement,
            };
            Ok(side(dir, &s, &s.metrics.model, rows_file, Some(cmp)))
        }
        other => Err(RunError::Gate(format!(
            "{}: unknown mode {other:?} (expected \"eval\" or \"compare\")",
            path.display()
        ))),
    }
}

fn side<S>(
    dir: &Path,
    s: &SummaryFile<S>,
    model: &EvalSummary,
    rows_file: Option<PathBuf>,
    compare: Option<CompareNumbers>,
) -> RunSide {
    RunSide {
        dir: dir.to_path_buf(),
        mode: s.mode.clone(),
        model: s.provenance.model.reference.clone(),
        dtype: s.provenance.dtype.clone(),
        data_path: s.provenance.data.path.clone(),
        data_sha256: s.provenance.data.sha256.clone(),
        protocol: s.protocol.clone(),
        tokens_scored: model.tokens_scored,
        mean_nll_nats: model.mean_nll_nats,
        mean_nll_nats_stderr: model.mean_nll_nats_stderr,
        rows_file,
        compare,
    }
}

#[cfg(test)]
mod tests {
    //! The gate end to end on run directories built from `gate_reference.json` (NumPy, see
    //! `scripts/references/gate_reference.py`): the paired path over identical token rows, the unpaired path
    //! when the token ids differ or rows are missing.
    use super::*;
    use crate::device_stats::StatsLocation;
    use crate::output::rows::{RowSink, RowsFormat};
    use crate::output::summary::{DataProvenance, ModelProvenance, Provenance};
    use crate::protocol::{BosMode, ProtocolKind};
    use serde_json::Value;
    use surprisal_metrics::EvalAggregate;

    fn reference() -> Value {
        let p =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../metrics/tests/data/gate_reference.json");
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    fn close(a: f64, e: f64, what: &str) {
        assert!(
            (a - e).abs() <= (1e-12 * e.abs()).max(1e-15),
            "{what}: {a:e} vs NumPy {e:e}"
        );
    }

    /// A finished eval run in `dir`: summary with `mean ± se`, jsonl rows with `nll` (token ids
    /// `id(k)`) unless `rows` is false.
    fn make_run(
        dir: &Path,
        nll: &[f64],
        mean: f64,
        se: f64,
        id: impl Fn(usize) -> u32,
        rows: bool,
    ) {
        std::fs::create_dir_all(dir).unwrap();
        let mut m = EvalAggregate::new().summary(None, None);
        m.tokens_scored = nll.len() as u64;
        m.mean_nll_nats = mean;
        m.mean_nll_nats_stderr = se;
        let s = SummaryFile {
            schema_version: crate::output::summary::SCHEMA_VERSION,
            metrics: m,
            mode: "eval".into(),
            windows: 1,
            tokens_per_second: 1.0,
            elapsed_seconds: 1.0,
            provenance: Provenance {
                tool_version: "test".into(),
                model: ModelProvenance {
                    reference: "m".into(),
                    files: vec![],
                },
                reference_model: None,
                data: DataProvenance {
                    path: "d.txt".into(),
                    sha256: "00".into(),
                },
                device: "cpu".into(),
                dtype: "f32".into(),
                dtype_tensors: Default::default(),
                host_cpu: None,
            },
            protocol: ProtocolReport {
                name: ProtocolKind::Sliding,
                window: 512,
                stride: Some(256),
                bos: BosMode::Auto,
                bos_used: false,
                max_tokens: None,
                max_chunks: None,
                batch_size: 1,
            },
            started_at: "x".into(),
            finished_at: "x".into(),
            stats_on: StatsLocation::Host,
            shard: None,
            merged_shards: None,
        };
        s.write(dir).unwrap();
        if rows {
            let mut sink = RowSink::<TokenRow>::open(dir, RowsFormat::Jsonl, 0, 0).unwrap();
            let rows: Vec<TokenRow> = nll
                .iter()
                .enumerate()
                .map(|(k, &x)| TokenRow {
                    doc: 0,
                    index: k as u64 + 1,
                    token_id: id(k),
                    token: "t".into(),
                    byte_start: 0,
                    byte_end: 1,
                    nll_nats: x,
                    entropy_nats: 1.0,
                    varentropy_nats2: 1.0,
                    top1_id: 0,
                    top1_prob: 0.5,
                    target_rank: 1,
                    context_len: k as u64,
                })
                .collect();
            sink.append(&rows).unwrap();
            sink.finish().unwrap();
            RowSink::<TokenRow>::remove_parts(dir).unwrap();
        }
    }

    #[test]
    fn paired_when_token_ids_match_unpaired_otherwise_against_numpy() {
        let r = reference();
        for case in r["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let v = |k: &str| -> Vec<f64> {
                case[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            };
            let n = |k: &str| case[k].as_f64().unwrap();
            let (b, c) = (v("baseline_nll_nats"), v("candidate_nll_nats"));
            let tmp = tempfile::tempdir().unwrap();
            let (bd, cd, xd, nd) = (
                tmp.path().join("b"),
                tmp.path().join("c"),
                tmp.path().join("x"),
                tmp.path().join("n"),
            );
            let (bm, bs) = (
                n("baseline_mean_nll_nats"),
                n("baseline_mean_nll_nats_stderr"),
            );
            let (cm, cs) = (
                n("candidate_mean_nll_nats"),
                n("candidate_mean_nll_nats_stderr"),
            );
            make_run(&bd, &b, bm, bs, |k| k as u32 % 50, true);
            make_run(&cd, &c, cm, cs, |k| k as u32 % 50, true);
            // same tokens but one id differs in the middle: unpaired
            make_run(
                &xd,
                &c,
                cm,
                cs,
                |k| if k == 100 { 999 } else { k as u32 % 50 },
                true,
            );
            // no rows: unpaired
            make_run(&nd, &c, cm, cs, |k| k as u32 % 50, false);
            let cfg = GateConfig::default();

            let g = run_gate(&bd, &cd, &cfg).unwrap();
            assert_eq!(
                g.pairing,
                Pairing::Paired {
                    tokens: b.len() as u64
                },
                "{name}"
            );
            let d = &g.checks[0];
            close(d.estimate, n("paired_delta_nll_nats"), name);
            close(d.stderr, n("paired_delta_nll_nats_stderr"), name);
            let ub = &case["upper_bounds"][2];
            assert_eq!(ub["confidence"].as_f64(), Some(0.99));
            close(d.bound, ub["paired"].as_f64().unwrap(), name);
            assert_eq!(d.passed, d.bound <= 0.002);

            for (dir, why) in [
                (&xd, "differ from row 100"),
                (&nd, "candidate has no per-token rows"),
            ] {
                let g = run_gate(&bd, dir, &cfg).unwrap();
                match &g.pairing {
                    Pairing::Unpaired { reason } => assert!(reason.contains(why), "{reason}"),
                    p => panic!("{name}: expected unpaired, got {p:?}"),
                }
                let d = &g.checks[0];
                close(d.estimate, n("unpaired_delta_nll_nats"), name);
                close(d.stderr, n("unpaired_delta_nll_nats_stderr"), name);
                close(d.bound, ub["unpaired"].as_f64().unwrap(), name);
                assert!(to_text_contains(&g, "unpaired"));
            }
        }
    }

    fn to_text_contains(g: &GateReport, what: &str) -> bool {
        markdown::to_text(g).contains(what) && markdown::to_markdown(g).contains(what)
    }

    #[test]
    fn input_problems_name_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let b = tmp.path().join("b");
        make_run(&b, &[1.0, 2.0, 3.0], 2.0, 0.5, |k| k as u32, true);
        let missing = tmp.path().join("nope");
        let e = run_gate(&b, &missing, &GateConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("not a directory"), "{e}");
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(empty.join("shard-00000-of-00002")).unwrap();
        let e = run_gate(&b, &empty, &GateConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("surprisal merge"), "{e}");
        // rows that disagree with the summary's count
        let c = tmp.path().join("c");
        make_run(&c, &[1.0, 2.0], 2.0, 0.5, |k| k as u32, true);
        let mut s: Value =
            serde_json::from_str(&std::fs::read_to_string(c.join("summary.json")).unwrap())
                .unwrap();
        s["tokens_scored"] = 5.into();
        std::fs::write(c.join("summary.json"), s.to_string()).unwrap();
        let e = run_gate(&b, &c, &GateConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tokens.jsonl has 2 rows") && e.contains("tokens_scored 5"),
            "{e}"
        );
        // KL gate on eval runs
        let cfg = GateConfig {
            max_kl_nats: Some(0.01),
            ..GateConfig::default()
        };
        let e = run_gate(&b, &b, &cfg).unwrap_err().to_string();
        assert!(
            e.contains("needs a compare run") && e.contains("eval run"),
            "{e}"
        );
        let cfg = GateConfig {
            confidence: 1.0,
            ..GateConfig::default()
        };
        assert!(run_gate(&b, &b, &cfg)
            .unwrap_err()
            .to_string()
            .contains("confidence"));
    }
}
