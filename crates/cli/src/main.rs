//! `surprisal`: flags in, tables out. All the work happens in `surprisal-runner`.

mod args;
mod compress_cmd;
mod gate_cmd;
mod suite_cmd;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use surprisal_runner::job::{self, JobSpec, ModelSpec};
use surprisal_runner::{
    BarProgress, BosMode, ProtocolConfig, ProtocolKind, RowsFormat, RunError, RunOptions, StatsOn,
};

use args::{BosArg, Cli, Command, PerTokenArg, ProtocolArg, RunOptions as Flags, StatsOnArg};
use surprisal_runner::{merge, shard};

/// Exit status for usage and input errors (bad flags, unreadable model or data).
const EXIT_USAGE: u8 = 2;

/// Exit status after Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// Ctrl-C: the first one asks the engine to stop after the current batch (it
/// checkpoints finished batches when there is an `--out`); a second one exits at once.
fn install_interrupt_handler() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let res = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without waiting for the current batch");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!("\ninterrupt: finishing the current batch (press Ctrl-C again to quit at once)");
    });
    if let Err(e) = res {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
    flag
}

/// Every layer allocates activation buffers of a few to tens of MB. By default glibc serves those
/// with fresh mmaps (or trims the heap after them) and the kernel zeroes new pages for the next
/// batch: 600k page faults and ~5 % of an eval's CPU time. Keeping them in the heap for reuse
/// costs only the peak working set, which is bounded anyway (see docs/benchmarks.md).
fn keep_freed_memory_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any worker thread starts.
    unsafe {
        // 32 MiB is glibc's largest allowed mmap threshold (allocations above it stay mmapped).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

fn main() -> ExitCode {
    keep_freed_memory_for_reuse();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SURPRISAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let interrupt = install_interrupt_handler();
    match run(cli, interrupt) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<gate_cmd::Regression>() => ExitCode::from(gate_cmd::EXIT_REGRESSION),
        Err(e) => match e.downcast_ref::<RunError>() {
            Some(RunError::Interrupted { .. }) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_INTERRUPTED)
            }
            _ => {
                eprintln!("error: {}", one_line(&e));
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

/// The error and its causes on one line (`outer: cause: cause`), without repeating a cause that the
/// outer message already contains. A cause whose message spans lines is joined with `; `.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
    }
    out
}

fn run(cli: Cli, interrupt: Arc<AtomicBool>) -> Result<()> {
    match cli.command {
        Command::Report(a) => {
            let started = std::time::Instant::now();
            let opts = surprisal_report::Options {
                tokens: a.tokens,
                words: a.words,
            };
            let history = a
                .history
                .map(|root| {
                    surprisal_report::HistoryData::from_history(&surprisal_report::history::Query {
                        root,
                        model: a.history_model,
                        data: a.history_data,
                        suite: a.history_suite,
                    })
                })
                .transpose()?;
            let html = surprisal_report::build_with_history(&a.dirs, &opts, history.as_ref())?;
            surprisal_report::write(&a.output, &html)?;
            if !a.quiet {
                eprintln!(
                    "wrote {} ({} bytes) in {:.2} s",
                    a.output.display(),
                    html.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Command::Gate(a) => gate_cmd::run(&a)?,
        Command::Suite(args::SuiteCommand::Run(a)) => suite_cmd::run_suite(&a, interrupt)?,
        Command::History(a) => suite_cmd::history(&a)?,
        Command::Compress(a) => {
            set_threads(a.threads)?;
            compress_cmd::run_compress(&a, &interrupt)?
        }
        Command::Decompress(a) => {
            set_threads(a.threads)?;
            compress_cmd::run_decompress(&a, &interrupt)?
        }
        Command::Merge(a) => {
            let merged = merge::merge(&a.dir)?;
            if !a.quiet {
                table::print_merged(&merged);
            }
        }
        Command::Eval(a) => {
            let flags = with_config(a.run)?;
            set_threads(flags.threads)?;
            let (model, mut jobspec) = resolve(&flags)?;
            jobspec.run.interrupt = Some(interrupt.clone());
            let mut progress = BarProgress::new(flags.quiet);
            let outcome = job::eval(&model, &jobspec, &mut progress)?;
            if !flags.quiet {
                table::print_eval(&outcome);
            }
        }
        Command::Compare(a) => {
            let flags = with_config(a.run)?;
            set_threads(flags.threads)?;
            let (model, mut jobspec) = resolve(&flags)?;
            jobspec.run.interrupt = Some(interrupt.clone());
            let Some(reference) = a.reference else {
                bail!("compare needs --reference <DIR | FILE.gguf | org/name[@rev]>");
            };
            let reference = ModelSpec {
                reference: expand_home(&reference),
                device: a.reference_device.unwrap_or_else(|| model.device.clone()),
                dtype: model.dtype.clone(),
                dequantize: a.reference_dequantize,
            };
            let mut progress = BarProgress::new(flags.quiet);
            let outcome = job::compare(&model, &reference, &jobspec, &mut progress)?;
            if !flags.quiet {
                table::print_compare(&outcome);
            }
        }
    }
    Ok(())
}

/// Merges `--config FILE.toml` under the command-line flags.
fn with_config(flags: Flags) -> Result<Flags> {
    let Some(path) = flags.config.clone() else {
        return Ok(flags);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    // toml's Display is a multi-line snippet; report `file:line:column: message` instead
    let file: Flags = toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(String::new(), |r| {
            let before = &text[..r.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(":{line}:{col}")
        });
        anyhow::anyhow!(
            "{}{at}: invalid config: {}",
            path.display(),
            e.message().trim()
        )
    })?;
    Ok(flags.merge_under(file))
}

pub(crate) fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot set the thread count")?;
    }
    Ok(())
}

/// `~/x` -> `$HOME/x`, so configs can name the model cache portably.
fn expand_home(s: &str) -> String {
    match (s.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest).display().to_string(),
        _ => s.to_string(),
    }
}

/// Applies defaults and turns flags into the runner's job description.
fn resolve(f: &Flags) -> Result<(ModelSpec, JobSpec)> {
    let Some(model) = &f.model else {
        bail!("--model is required (a HF directory, a .gguf file or org/name[@rev]); fetch the default with `bash scripts/fetch_smollm2.sh`");
    };
    let Some(data) = &f.data else {
        bail!("--data is required (a text file, a directory of .txt files, .jsonl, .parquet or hf://datasets/NAME[/CONFIG]/SPLIT)");
    };
    let shard_source = if f.shard_from_config {
        "config key shard"
    } else {
        "--shard"
    };
    let sharding = shard::resolve(f.shard.as_deref(), shard_source, f.shards, |k| {
        std::env::var(k).ok()
    })?;
    for w in &sharding.warnings {
        eprintln!("warning: {w}");
    }
    if sharding.shard.is_some() && f.out.is_none() {
        bail!("a sharded run needs --out DIR (each shard writes DIR/shard-IIIII-of-NNNNN; `surprisal merge DIR` combines them)");
    }
    let kind = match f.protocol.unwrap_or(ProtocolArg::Sliding) {
        ProtocolArg::Sliding => ProtocolKind::Sliding,
        ProtocolArg::Chunks => ProtocolKind::Chunks,
        ProtocolArg::Rolling => ProtocolKind::Rolling,
    };
    let window = f.window.unwrap_or(512);
    let stride = f.stride.unwrap_or((window / 2).max(1));
    let bos = match f.bos.unwrap_or(BosArg::Auto) {
        BosArg::Auto => BosMode::Auto,
        BosArg::Always => BosMode::Always,
        BosArg::Never => BosMode::Never,
    };
    if f.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    if f.max_chunks == Some(0) {
        bail!("--max-chunks must be at least 1");
    }
    if f.max_chunks.is_some() && kind != ProtocolKind::Chunks {
        bail!("--max-chunks applies to --protocol chunks only");
    }
    let protocol = ProtocolConfig {
        kind,
        window,
        stride,
        bos,
        max_tokens: f.max_tokens.map(|n| n as u64),
        max_chunks: f.max_chunks.map(|n| n as u64),
    };
    let mut run = RunOptions::new(protocol);
    run.batch_size = f.batch_size.unwrap_or(1);
    if run.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    run.out_dir = f
        .out
        .as_ref()
        .map(|p| PathBuf::from(expand_home(&p.display().to_string())));
    run.resume = f.resume;
    run.stats_on = match f.stats_on.unwrap_or(StatsOnArg::Auto) {
        StatsOnArg::Auto => StatsOn::Auto,
        StatsOnArg::Host => StatsOn::Host,
        StatsOnArg::Device => StatsOn::Device,
    };
    if let Some(s) = f.checkpoint_seconds {
        run.checkpoint_interval = std::time::Duration::from_secs(s);
    }
    if run.resume && run.out_dir.is_none() {
        bail!("--resume needs --out DIR (the directory of the interrupted run)");
    }
    run.rows = match (f.per_token, &run.out_dir) {
        (Some(PerTokenArg::None), _) | (None, None) => RowsFormat::None,
        (Some(_), None) => bail!("--per-token needs --out DIR"),
        (Some(PerTokenArg::Jsonl), Some(_)) => RowsFormat::Jsonl,
        (Some(PerTokenArg::Parquet) | None, Some(_)) => RowsFormat::Parquet,
    };
    // words.* in the per-token format (parquet when per-token rows are off)
    run.words = match (f.words, &run.out_dir, run.rows) {
        (false, _, _) => RowsFormat::None,
        (true, None, _) => bail!("--words needs --out DIR (per-word rows are written to DIR/words.parquet or DIR/words.jsonl)"),
        (true, Some(_), RowsFormat::Jsonl) => RowsFormat::Jsonl,
        (true, Some(_), _) => RowsFormat::Parquet,
    };
    let model = ModelSpec {
        reference: expand_home(model),
        device: f.device.clone().unwrap_or_else(|| "cpu".into()),
        // None: the device's default (bf16 on CUDA, f32 on the CPU), see job::default_dtype
        dtype: f.dtype.map(|d| d.name().into()),
        dequantize: f.dequantize,
    };
    let jobspec = JobSpec {
        data: expand_home(data),
        text_field: f.text_field.clone().unwrap_or_else(|| "text".into()),
        run,
        shard: sharding.shard,
    };
    Ok((model, jobspec))
}
