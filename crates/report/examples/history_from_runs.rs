//! Builds a results root (as `surprisal suite run` leaves one) from existing `surprisal eval` run
//! directories, for trying `surprisal report --history` on runs made without a suite (e.g. the
//! screenshots of `scripts/drills/report_screenshots.sh`). Each run's `summary.json` is copied
//! into `RESULTS/runs/<model>__<dataset>__<step>/` with a `suite-pair.json`, then registered through
//! the history's API (`History::register_dir`).
//!
//! ```text
//! cargo run --release -p surprisal-report --example history_from_runs -- \
//!     RESULTS MODEL DATASET=STEP:RUN_DIR [DATASET=STEP:RUN_DIR …]
//! ```
//! `STEP` may be `-` (no checkpoint step: the page plots that metric against finish dates).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use surprisal_runner::history::{self, files_sha256, PairInfo};
use surprisal_runner::output::summary::{FileDigest, SUMMARY_FILE};

fn register(root: &Path, model: &str, spec: &str) -> Result<(), String> {
    let (dataset, rest) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec}: expected DATASET=STEP:RUN_DIR"))?;
    let (step, dir) = rest
        .split_once(':')
        .ok_or_else(|| format!("{spec}: expected DATASET=STEP:RUN_DIR"))?;
    let step: Option<u64> = match step {
        "-" => None,
        s => Some(s.parse().map_err(|e| format!("{spec}: step {s:?}: {e}"))?),
    };
    let src = PathBuf::from(dir).join(SUMMARY_FILE);
    let text = std::fs::read_to_string(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    let j: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", src.display()))?;
    let files: Vec<FileDigest> = serde_json::from_value(j["model_source"]["files"].clone())
        .map_err(|e| format!("{}: model_source.files: {e}", src.display()))?;
    let model_sha256 = files_sha256(&files);
    let data_sha = j["data"]["sha256"].as_str().unwrap_or_default().to_string();
    let fingerprint = files_sha256(&[
        FileDigest {
            path: String::new(),
            sha256: model_sha256.clone(),
        },
        FileDigest {
            path: String::new(),
            sha256: data_sha,
        },
        FileDigest {
            path: String::new(),
            sha256: j["protocol"].to_string(),
        },
    ]);
    let name = format!(
        "{model}__{dataset}__{}",
        step.map_or_else(|| fingerprint[..12].to_string(), |s| s.to_string())
    );
    let dst = root.join(history::RUNS_DIR).join(name);
    std::fs::create_dir_all(&dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    std::fs::write(dst.join(SUMMARY_FILE), text).map_err(|e| format!("{}: {e}", dst.display()))?;
    PairInfo {
        fingerprint,
        suite: "adhoc".into(),
        model_name: model.into(),
        checkpoint_step: step,
        model_sha256,
        dataset_name: dataset.into(),
        host: j["host"].as_str().unwrap_or("unknown").into(),
    }
    .write(&dst)
    .map_err(|e| e.to_string())?;
    let (mut h, _) = history::open_or_rebuild(root).map_err(|e| e.to_string())?;
    h.register_dir(&dst).map_err(|e| e.to_string())?;
    println!("{}", dst.display());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: history_from_runs RESULTS MODEL DATASET=STEP:RUN_DIR [DATASET=STEP:RUN_DIR …]"
        );
        return ExitCode::from(2);
    }
    let root = PathBuf::from(&args[0]);
    for spec in &args[2..] {
        if let Err(e) = register(&root, &args[1], spec) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
