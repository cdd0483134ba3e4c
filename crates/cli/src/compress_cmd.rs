//! `surprisal compress` / `surprisal decompress`: the flags, the progress bar and the summary
//! line; the format and the coding live in `surprisal-compress`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use surprisal_compress::{compress, decompress, model_key, Params};
use surprisal_models::{load, LoadOptions, LoadedModel, ModelSource};

use crate::args::{CompressArgs, DecompressArgs};

fn load_model(spec: &str) -> Result<LoadedModel> {
    let source = ModelSource::parse(spec)?;
    Ok(load(&source, &LoadOptions::default())?)
}

fn bar(quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} tokens {{per_sec}} ETA {{eta}}"
        ))
        .expect("a valid template"),
    );
    b
}

/// Writes `bytes` to `path` through a temporary file in the same directory, so a failed run
/// never leaves a partial output.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Ctrl-C or SIGTERM (the flag `main` sets): stop now. Nothing has been written yet (outputs go
/// through a temporary file at the end), so there is nothing to finish or clean up.
fn stop_if_interrupted(interrupt: &AtomicBool, pb: &ProgressBar) {
    if interrupt.load(Ordering::SeqCst) {
        pb.abandon();
        eprintln!("interrupted: nothing written");
        std::process::exit(130);
    }
}

pub fn run_compress(a: &CompressArgs, interrupt: &AtomicBool) -> Result<()> {
    let input =
        std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let loaded = load_model(&a.model)?;
    let key = model_key(&loaded)?;
    let params = Params {
        window: a.window,
        stride: a.stride.unwrap_or(a.window / 2),
    };
    let pb = bar(a.quiet, "compress");
    let started = Instant::now();
    let (sz, s) = compress(&loaded, &key, &input, params, &mut |done, total| {
        stop_if_interrupted(interrupt, &pb);
        pb.set_length(total);
        pb.set_position(done);
    })
    .with_context(|| format!("compressing {}", a.input.display()))?;
    let secs = started.elapsed().as_secs_f64();
    pb.finish_and_clear();
    write_atomically(&a.output, &sz)?;
    if !a.quiet {
        // bits per byte of the original: of the whole file, of the payload alone, and the
        // model's NLL over the same windows (what `eval` reports); none for an empty input
        let per_byte = |bits: f64| match s.original_bytes {
            0 => "-".to_string(),
            n => format!("{:.4}", bits / n as f64),
        };
        let nll_bits = s.model_nll_nats / std::f64::consts::LN_2 + s.uniform_bits;
        eprintln!(
            "{} -> {}: {} -> {} bytes ({} header), {} bits_per_byte ({} payload only; model NLL {}), {} tokens, {} raw bytes, {:.1} s, {:.0} bytes/s, {:.1} tokens/s",
            a.input.display(),
            a.output.display(),
            s.original_bytes,
            s.compressed_bytes,
            s.overhead_bytes,
            per_byte(8.0 * s.compressed_bytes as f64),
            per_byte(8.0 * s.payload_bytes as f64),
            per_byte(nll_bits),
            s.tokens,
            s.raw_bytes,
            secs,
            s.original_bytes as f64 / secs,
            s.tokens as f64 / secs,
        );
    }
    Ok(())
}

pub fn run_decompress(a: &DecompressArgs, interrupt: &AtomicBool) -> Result<()> {
    let data = std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    // check the file before loading the model: a damaged or foreign file fails at once
    if let Err(e) = surprisal_compress::container::Container::from_bytes(&data) {
        bail!("{}: {e}", a.input.display());
    }
    let loaded = load_model(&a.model)?;
    let key = model_key(&loaded)?;
    let pb = bar(a.quiet, "decompress");
    let started = Instant::now();
    let out = decompress(&loaded, &key, &data, &mut |done, total| {
        stop_if_interrupted(interrupt, &pb);
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    let out = match out {
        Ok(o) => o,
        Err(e) => bail!("{}: {e}", a.input.display()),
    };
    let secs = started.elapsed().as_secs_f64();
    write_atomically(&a.output, &out)?;
    if !a.quiet {
        eprintln!(
            "{} -> {}: {} -> {} bytes, {:.1} s, {:.0} bytes/s",
            a.input.display(),
            a.output.display(),
            data.len(),
            out.len(),
            secs,
            out.len() as f64 / secs
        );
    }
    Ok(())
}
