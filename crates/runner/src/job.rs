//! A whole `eval` / `compare` job from user-level settings: load the model(s), open the data,
//! hash inputs for provenance and the resume fingerprint, run the engine. The CLI only parses
//! flags and prints what comes back.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use surprisal_metrics::EvalSummary;
use surprisal_models::{LoadOptions, ModelSource};

use crate::candle_model::{self, CandleScorer, CandleTokenizer};
use crate::data::{self, DataSpec};
use crate::engine::{self, RunOptions, RunOutcome, ShardPlan};
use crate::error::{Result, RunError};
use crate::model::{Scorer, Tokenize};
use crate::output::summary::{DataProvenance, FileDigest, ModelProvenance, Provenance};
use crate::progress::Progress;
use crate::shard::Shard;
use crate::top_kl::CompareReport;

/// One model as the user named it.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// `DIR`, `FILE.gguf` or `org/name[@rev]`.
    pub reference: String,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// `f32`, `f64`, `bf16` or `f16`: activations and dense weights. `None`: the default for the
    /// device and model, see [`default_dtype`].
    pub dtype: Option<String>,
    /// GGUF: run with f32 weights instead of quantized kernels.
    pub dequantize: bool,
}

/// Everything a job needs besides the model(s).
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// `--data`.
    pub data: String,
    /// `--text-field`.
    pub text_field: String,
    /// Engine options (protocol, batch, output, resume).
    pub run: RunOptions,
    /// The shard to score (`None`: the whole corpus); its window count is planned here.
    pub shard: Option<Shard>,
}

/// Parses `cpu` / `cuda` / `cuda:N` into a candle device.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| {
                        RunError::Config(format!("--device {s}: expected cpu, cuda or cuda:N"))
                    })?,
                None => {
                    return Err(RunError::Config(format!(
                        "--device {s}: expected cpu, cuda or cuda:N"
                    )))
                }
            };
            Device::new_cuda(ordinal).map_err(|e| {
                RunError::Config(format!(
                    "--device {s}: {e} (this build has CUDA only with `cargo build --features cuda`)"
                ))
            })
        }
    }
}

/// Parses `f32` / `f64` / `bf16` / `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "f64" => Ok(DType::F64),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        _ => Err(RunError::Config(format!(
            "--dtype {s}: expected f32, f64, bf16 or f16"
        ))),
    }
}

/// The compute dtype when `--dtype` is not given: bf16 on CUDA (the GPU's fast path; issue #7's
/// "compute in bf16", with logits and statistics still in f32), f32 on the CPU (candle's CPU bf16 is
/// slower than f32 and less precise), and always f32 for quantized GGUF kernels, which run in f32
/// only (an explicit other dtype is refused for them, the default must not be).
pub fn default_dtype(device: &Device, quantized_gguf: bool) -> DType {
    if device.is_cuda() && !quantized_gguf {
        DType::BF16
    } else {
        DType::F32
    }
}

/// A loaded model with what the report says about it.
pub struct Loaded {
    pub scorer: CandleScorer,
    pub tokenizer: CandleTokenizer,
    pub provenance: ModelProvenance,
    pub device_name: String,
}

/// Loads a model, hashing its files for provenance (and the resume fingerprint).
pub fn load_model(spec: &ModelSpec) -> Result<Loaded> {
    let source = ModelSource::parse(&spec.reference)?;
    let device = parse_device(&spec.device)?;
    let gguf = matches!(source, ModelSource::Gguf { .. });
    let dtype = match &spec.dtype {
        Some(d) => parse_dtype(d)?,
        None => default_dtype(&device, gguf && !spec.dequantize),
    };
    let opts = LoadOptions {
        device,
        dtype,
        dequantize: spec.dequantize,
    };
    if spec.dequantize && !gguf {
        return Err(RunError::Config(format!(
            "--dequantize applies to GGUF files only; {} is not a .gguf file",
            spec.reference
        )));
    }
    if gguf && !spec.dequantize && dtype != DType::F32 {
        let name = spec.dtype.as_deref().unwrap_or("");
        return Err(RunError::Config(format!(
            "--dtype {name}: quantized GGUF kernels run in f32; add --dequantize to run {} with {name} weights",
            spec.reference
        )));
    }
    let loaded = surprisal_models::load(&source, &opts)?;
    let mut files: Vec<PathBuf> = loaded.info.weight_files.clone();
    if let ModelSource::Dir(dir) = &source {
        for extra in ["config.json", "tokenizer.json"] {
            files.push(dir.join(extra));
        }
    }
    // Absolute paths, so that a resume naming the same model by another relative path is the same run.
    let files = files
        .iter()
        .filter(|p| p.is_file())
        .map(|p| FileDigest::of(&std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect::<Result<Vec<_>>>()?;
    let reference = match &source {
        ModelSource::Dir(p) | ModelSource::Gguf { path: p, .. } => std::fs::canonicalize(p)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| spec.reference.clone()),
        ModelSource::Hub { .. } => spec.reference.clone(),
    };
    let (scorer, tokenizer) = candle_model::split(loaded);
    Ok(Loaded {
        scorer,
        tokenizer,
        provenance: ModelProvenance { reference, files },
        device_name: spec.device.clone(),
    })
}

fn data_provenance(spec: &DataSpec, data: &str) -> Result<DataProvenance> {
    let sha256 = data::sha256_of(spec).map_err(|e| RunError::Data(e.to_string()))?;
    Ok(DataProvenance {
        path: data.to_string(),
        sha256,
    })
}

/// The dtype the numbers come from: `f32`, or the GGUF's quantization (e.g. `Q4_1`, `Q4_1 dequantized
/// to F32`). Part of the resume fingerprint, so a run cannot be resumed with `--dequantize` toggled.
fn compute_dtype(scorer: &CandleScorer) -> String {
    scorer
        .info()
        .quantization
        .clone()
        .unwrap_or_else(|| format!("{:?}", scorer.dtype()).to_lowercase())
}

/// Checks `--out` can be written before any model work starts.
fn check_out_dir(out: Option<&Path>) -> Result<()> {
    let Some(dir) = out else { return Ok(()) };
    std::fs::create_dir_all(dir).map_err(|e| RunError::io(dir, e))?;
    let probe = dir.join(".surprisal-write-test");
    std::fs::write(&probe, b"").map_err(|e| RunError::io(&probe, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The engine options of `job`, with the shard planned over the corpus (one tokenizing pass)
/// when the job is sharded.
fn run_options<T: Tokenize + ?Sized>(
    job: &JobSpec,
    spec: &DataSpec,
    tokenizer: &T,
    max_context: Option<usize>,
) -> Result<RunOptions> {
    let mut run = job.run.clone();
    if let Some(shard) = &job.shard {
        let docs = data::open(spec).map_err(|e| RunError::Data(e.to_string()))?;
        let windows_total = engine::count_windows(tokenizer, max_context, &run.protocol, docs)?;
        tracing::info!(windows_total, "planned the corpus for {}", shard.dir_name());
        run.shard = Some(ShardPlan {
            shard: shard.clone(),
            windows_total,
        });
    }
    Ok(run)
}

fn open_data(job: &JobSpec) -> Result<(DataSpec, data::DocumentStream, DataProvenance)> {
    let spec = DataSpec::new(&job.data, job.text_field.clone())
        .map_err(|e| RunError::Data(e.to_string()))?;
    let prov = data_provenance(&spec, &job.data)?;
    let docs = data::open(&spec).map_err(|e| RunError::Data(e.to_string()))?;
    Ok((spec, docs, prov))
}

/// `surprisal eval`.
pub fn eval(
    model: &ModelSpec,
    job: &JobSpec,
    progress: &mut dyn Progress,
) -> Result<RunOutcome<EvalSummary>> {
    check_out_dir(job.run.out_dir.as_deref())?;
    let (spec, docs, data) = open_data(job)?;
    let m = load_model(model)?;
    let run = run_options(job, &spec, &m.tokenizer, m.scorer.max_context())?;
    let provenance = Provenance {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model: m.provenance,
        reference_model: None,
        data,
        device: m.device_name,
        dtype: compute_dtype(&m.scorer),
        dtype_tensors: m.scorer.info().tensor_types.clone(),
        host_cpu: Some(surprisal_models::host_cpu()),
    };
    engine::evaluate(&m.tokenizer, &m.scorer, docs, &run, &provenance, progress)
}

/// `surprisal compare`: `model` against `reference` on identical windows.
pub fn compare(
    model: &ModelSpec,
    reference: &ModelSpec,
    job: &JobSpec,
    progress: &mut dyn Progress,
) -> Result<RunOutcome<CompareReport>> {
    check_out_dir(job.run.out_dir.as_deref())?;
    let (spec, docs, data) = open_data(job)?;
    let m = load_model(model)?;
    let r = load_model(reference)?;
    if m.tokenizer.fingerprint() != r.tokenizer.fingerprint() {
        let (a, b) = (m.tokenizer.inner(), r.tokenizer.inner());
        return Err(RunError::Config(format!(
            "the model ({}) and the reference ({}) have different tokenizers: {}; \
             KL needs the same token ids for the same text",
            model.reference,
            reference.reference,
            tokenizer_difference(&a.vocab_by_id(), &b.vocab_by_id(), &a.merges(), &b.merges())
        )));
    }
    let provenance = Provenance {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        model: m.provenance,
        reference_model: Some(r.provenance),
        data,
        device: m.device_name,
        dtype: compute_dtype(&m.scorer),
        dtype_tensors: m.scorer.info().tensor_types.clone(),
        host_cpu: Some(surprisal_models::host_cpu()),
    };
    let max_context = engine::joint_max_context(m.scorer.max_context(), r.scorer.max_context());
    let run = run_options(job, &spec, &m.tokenizer, max_context)?;
    engine::compare(
        &m.tokenizer,
        &m.scorer,
        &r.scorer,
        docs,
        &run,
        &provenance,
        progress,
    )
}

/// What differs between two tokenizers (model first, reference second): the
/// vocabulary size, the first token id whose token differs, or the first
/// differing BPE merge.
fn tokenizer_difference(va: &[String], vb: &[String], ma: &[String], mb: &[String]) -> String {
    let first_diff = |a: &[String], b: &[String]| a.iter().zip(b).position(|(x, y)| x != y);
    let mut parts = Vec::new();
    if va.len() != vb.len() {
        parts.push(format!("vocabulary sizes {} and {}", va.len(), vb.len()));
    }
    if let Some(i) = first_diff(va, vb) {
        parts.push(format!(
            "token id {i} is {:?} in the model and {:?} in the reference",
            va[i], vb[i]
        ));
    }
    if let Some(i) = first_diff(ma, mb) {
        parts.push(format!(
            "merge #{i} is {:?} in the model and {:?} in the reference",
            ma[i], mb[i]
        ));
    } else if ma.len() != mb.len() {
        parts.push(format!("{} and {} merges", ma.len(), mb.len()));
    }
    if parts.is_empty() {
        "same tokens and merges, but different fingerprints".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::{default_dtype, tokenizer_difference};
    use candle_core::{DType, Device};

    #[test]
    fn dtype_defaults_to_f32_on_the_cpu_and_for_quantized_kernels() {
        // (a CUDA device cannot be made without a GPU; `is_cuda` picks bf16 there)
        assert_eq!(default_dtype(&Device::Cpu, false), DType::F32);
        assert_eq!(default_dtype(&Device::Cpu, true), DType::F32);
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn tokenizer_difference_names_what_differs() {
        let (a, m) = (v(&["<s>", "a", "b"]), v(&["a b"]));
        assert_eq!(
            tokenizer_difference(&a, &v(&["<s>", "a"]), &m, &m),
            "vocabulary sizes 3 and 2"
        );
        assert_eq!(
            tokenizer_difference(&a, &v(&["<s>", "b", "a"]), &m, &m),
            "token id 1 is \"a\" in the model and \"b\" in the reference"
        );
        assert_eq!(
            tokenizer_difference(&a, &a, &m, &v(&["b a"])),
            "merge #0 is \"a b\" in the model and \"b a\" in the reference"
        );
        assert_eq!(tokenizer_difference(&a, &a, &m, &v(&[])), "1 and 0 merges");
    }
}
