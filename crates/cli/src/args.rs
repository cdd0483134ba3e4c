//! Command-line flags. Every run option is an `Option` so that a `--config` file can supply it and an
//! explicit flag still wins; defaults are applied once, after merging (see [`RunOptions::resolve`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Parser, Debug)]
#[command(
    name = "surprisal",
    version,
    about = "How well does a causal language model predict this text?"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Score a corpus with one model: perplexity with error bars, entropy, bits per byte, per-token rows.
    Eval(EvalArgs),
    /// Score a corpus with a model and a reference in lockstep: KL(reference || model) and paired statistics.
    Compare(CompareArgs),
    /// Combine the shard directories DIR/shard-IIIII-of-NNNNN of a sharded run into DIR/summary.json
    /// and DIR/tokens.* / DIR/words.*, equal to the unsharded run's.
    Merge(MergeArgs),
    /// Write one self-contained HTML page (plots, coloured text, provenance) from run directories.
    ///
    /// Shows each run's provenance and summary with confidence intervals, the entropy-rate curve
    /// (runs overlaid), the calibration reliability diagram, the NLL and entropy-vs-NLL histograms,
    /// the text coloured by surprisal with the numbers in a tooltip per token (per word with
    /// --words) and, for compare runs, KL by context length, the ΔNLL histogram and the top-KL
    /// positions. With --history RESULTS: each metric of a results history over checkpoint steps
    /// or dates, a line per model × dataset with 95 % intervals (the history records no gate
    /// verdicts, so none are marked).
    Report(ReportArgs),
    /// Is a candidate run worse than a baseline run beyond the noise? Paired per-token ΔNLL when both
    /// scored the same tokens; exit 0 pass, 1 regression, 2 usage or input error.
    Gate(GateArgs),
    /// Run a suite (models × datasets, one protocol) into a results root with a SQLite history.
    #[command(subcommand)]
    Suite(SuiteCommand),
    /// The results history of a suite: a metric over checkpoints or dates, and its macro-average
    /// over the datasets per model.
    History(HistoryArgs),
    /// Compress a file losslessly with a model's next-token probabilities (range coding): the
    /// bits per byte eval reports, as a file size. See docs/compression.md.
    Compress(CompressArgs),
    /// Restore a file made by `surprisal compress` (needs the same model).
    Decompress(DecompressArgs),
}

#[derive(Subcommand, Debug)]
pub enum SuiteCommand {
    /// Score every (model, dataset) pair of SUITE.toml into RESULTS/runs/<pair>/ (finished pairs are
    /// skipped, interrupted ones resumed) and register each finished run in RESULTS/results.db.
    Run(SuiteRunArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "The suite file format, the pair fingerprints and the results layout are in \
README.md (\"Suites and the results history\"). Exit 0 when every pair finished (and every gate \
passed), 1 when a --gate previous gate found a regression, 2 on usage or input errors, 130 when \
interrupted (rerun the same command to continue)."
)]
pub struct SuiteRunArgs {
    /// The suite file.
    #[arg(value_name = "SUITE.toml")]
    pub suite: PathBuf,
    /// The results root [default: the suite's `results`, else ./results].
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Data of a dataset of the suite: NAME=PATH (any --data value); repeatable.
    #[arg(long = "data", value_name = "NAME=PATH")]
    pub data: Vec<String>,
    /// Run only pairs k with k mod N = I (0-based). Without it: SURPRISAL_SHARD=I/N, then
    /// SLURM_ARRAY_TASK_ID (with --shards N or SLURM_ARRAY_TASK_COUNT), then JOB_COMPLETION_INDEX
    /// (with --shards N).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Number of shards, for an index taken from the environment.
    #[arg(long, value_name = "N")]
    pub shards: Option<u64>,
    /// Gate every finished pair against a baseline from the history: `previous` (the previous
    /// checkpoint of a glob, the previous run of a fixed model; same suite, model name, dataset and
    /// protocol). Exit 1 if any pair regressed.
    #[arg(long, value_name = "QUERY", value_parser = ["previous"])]
    pub gate: Option<String>,
    /// Largest allowed increase of the mean per-token NLL, candidate − baseline (nats/token).
    #[arg(
        long,
        value_name = "NATS",
        default_value_t = 0.002,
        allow_negative_numbers = true
    )]
    pub max_delta_nll_nats: f64,
    /// One-sided confidence of every bound, in (0.5, 1).
    #[arg(long, default_value_t = 0.99, allow_negative_numbers = true)]
    pub confidence: f64,
    /// Write the gates as Markdown (with --gate).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write the gates as JUnit XML, one testsuite per pair (with --gate).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// No progress bar and no per-pair lines.
    #[arg(long)]
    pub quiet: bool,
    /// Compute threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds between checkpoints [default: 30].
    #[arg(long, hide = true)]
    pub checkpoint_seconds: Option<u64>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryFormat {
    Table,
    Json,
    Csv,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Rows are ordered by suite, model, checkpoint step and finish time. The \
macro-average is per model version over the datasets selected, for models that have a run on every \
one of them: mean of the per-dataset values, stderr sqrt(sum se_d^2) / D (the datasets' means are \
independent), 95% CI value ± 1.96 stderr."
)]
pub struct HistoryArgs {
    /// The results root of `surprisal suite run` (holding results.db).
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,
    /// Only models whose name, name@step or reference matches this glob.
    #[arg(long, value_name = "GLOB")]
    pub model: Option<String>,
    /// Only datasets whose short name matches this glob.
    #[arg(long, value_name = "NAME")]
    pub data: Option<String>,
    /// Only this suite.
    #[arg(long, value_name = "NAME")]
    pub suite: Option<String>,
    /// The metric (any scalar of summary.json: mean_nll_nats, perplexity, bits_per_byte, ...).
    #[arg(long, default_value = "mean_nll_nats")]
    pub metric: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Table)]
    pub format: HistoryFormat,
}

/// `surprisal compress` (run by `compress_cmd`). Here rather than there because this file is
/// the one flag module (the fuzz targets include it by path).
#[derive(Args, Debug)]
pub struct CompressArgs {
    /// The model whose probabilities code the text: a GGUF file, a model directory or a hub id.
    /// Decompressing needs the very same model.
    #[arg(long, value_name = "M")]
    pub model: String,
    /// The file to compress.
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The compressed file to write.
    #[arg(short = 'o', long = "output", value_name = "OUT.sz")]
    pub output: PathBuf,
    /// Tokens per window, BOS included (as `eval --protocol sliding --window`).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Tokens between window starts [default: window / 2] (as `eval --stride`).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Compute threads [default: all cores]. The output does not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar and no summary line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct DecompressArgs {
    /// The model the file was compressed with.
    #[arg(long, value_name = "M")]
    pub model: String,
    /// The compressed file.
    #[arg(value_name = "IN.sz")]
    pub input: PathBuf,
    /// Where to write the original bytes.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Compute threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar and no summary line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The --out directories of finished eval or compare runs (merged, for sharded runs); none
    /// with --history makes a page of the history alone.
    #[arg(required_unless_present = "history", value_name = "RUN_DIR")]
    pub dirs: Vec<PathBuf>,
    /// Also show each metric of a results history (`surprisal suite run --results RESULTS`) over
    /// checkpoint steps or finish dates, a line per model × dataset, with 95 % intervals.
    #[arg(long, value_name = "RESULTS")]
    pub history: Option<PathBuf>,
    /// Only the history's models whose name, name@step or reference matches this glob.
    #[arg(long, value_name = "GLOB", requires = "history")]
    pub history_model: Option<String>,
    /// Only the history's datasets whose short name matches this glob.
    #[arg(long, value_name = "GLOB", requires = "history")]
    pub history_data: Option<String>,
    /// Only the history's runs of this suite.
    #[arg(long, value_name = "NAME", requires = "history")]
    pub history_suite: Option<String>,
    /// The HTML file to write.
    #[arg(short = 'o', long = "output", value_name = "FILE.html")]
    pub output: PathBuf,
    /// Scored tokens (and words) of each run shown as coloured text.
    #[arg(long, value_name = "N", default_value_t = surprisal_report::DEFAULT_TOKENS)]
    pub tokens: usize,
    /// Also show the per-word surprisal (needs runs made with --words).
    #[arg(long)]
    pub words: bool,
    /// No message on success.
    #[arg(long)]
    pub quiet: bool,
}

/// `surprisal gate` (see `gate_cmd.rs`).
#[derive(Args, Debug)]
#[command(
    after_help = "RUN is a finished run directory (eval or compare --out DIR; a sharded run after \
`surprisal merge DIR`). Queries of a results history (\"the previous run of this model and data\") are \
not supported yet.\n\n\
delta_nll_nats = mean NLL of the candidate minus the baseline. When both runs wrote per-token rows \
with the same (doc, index, token_id) row by row, the test is paired over those tokens; otherwise it \
uses the two summaries' means with sqrt(se_b^2 + se_c^2) and says so. A gate fails when the one-sided \
bound at --confidence is beyond its limit (upper bound > --max-delta-nll-nats or --max-kl-nats; lower \
bound < --min-top1-agreement). --max-kl-nats and --min-top1-agreement read a compare candidate \
(surprisal compare --model CANDIDATE --reference BASELINE --out DIR)."
)]
pub struct GateArgs {
    /// The baseline run directory, or `previous` (a history query, see below).
    #[arg(long, value_name = "RUN")]
    pub baseline: String,
    /// The candidate run directory.
    #[arg(long, value_name = "RUN")]
    pub candidate: PathBuf,
    /// Largest allowed increase of the mean per-token NLL, candidate − baseline (nats/token).
    #[arg(
        long,
        value_name = "NATS",
        default_value_t = 0.002,
        allow_negative_numbers = true
    )]
    pub max_delta_nll_nats: f64,
    /// One-sided confidence of every bound, in (0.5, 1).
    #[arg(long, default_value_t = 0.99, allow_negative_numbers = true)]
    pub confidence: f64,
    /// Largest allowed mean KL(reference || candidate) (nats/token); needs a compare candidate.
    #[arg(long, value_name = "NATS")]
    pub max_kl_nats: Option<f64>,
    /// Smallest allowed top-1 agreement with the reference, in [0, 1]; needs a compare candidate.
    #[arg(long, value_name = "FRACTION")]
    pub min_top1_agreement: Option<f64>,
    /// Also write the report as Markdown (a CI step summary, a pull-request comment).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write JUnit XML, one test case per gate.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Print nothing; the exit status and the files only.
    #[arg(long)]
    pub quiet: bool,
    /// The results root whose history answers `--baseline previous` [default: the one holding
    /// the candidate, RESULTS/runs/<pair>].
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The --out directory of the sharded run.
    pub dir: PathBuf,
    /// No table.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunOptions,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub run: RunOptions,
    /// Reference model: a HF directory, a .gguf file or a hub id `org/name[@rev]`.
    #[arg(long)]
    pub reference: Option<String>,
    /// Device for the reference model (defaults to --device).
    #[arg(long)]
    pub reference_device: Option<String>,
    /// Run a GGUF reference with f32 weights instead of its quantized kernels.
    #[arg(long)]
    pub reference_dequantize: bool,
}

#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolArg {
    Sliding,
    Chunks,
    Rolling,
}

#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BosArg {
    Auto,
    Always,
    Never,
}

/// Compute dtype of activations and dense weights.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DtypeArg {
    F32,
    F64,
    Bf16,
    F16,
}

impl DtypeArg {
    pub fn name(self) -> &'static str {
        match self {
            DtypeArg::F32 => "f32",
            DtypeArg::F64 => "f64",
            DtypeArg::Bf16 => "bf16",
            DtypeArg::F16 => "f16",
        }
    }
}

/// Where per-token statistics are computed.
#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StatsOnArg {
    /// On the device for CUDA models, on the host otherwise.
    Auto,
    /// On the host in f64 from logits copied off the device.
    Host,
    /// Where the logits live, in f32; only per-token statistics cross to the host.
    Device,
}

#[derive(ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PerTokenArg {
    Parquet,
    Jsonl,
    None,
}

/// Options shared by `eval` and `compare`; a `--config FILE.toml` uses the same names (kebab-case keys).
#[derive(Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunOptions {
    /// Model: a HF directory, a .gguf file, or a hub id `org/name[@rev]`.
    #[arg(long)]
    pub model: Option<String>,
    /// Corpus: a text file, a directory of .txt files, a .jsonl or .parquet file, or hf://datasets/NAME[/CONFIG]/SPLIT.
    #[arg(long)]
    pub data: Option<String>,
    /// Window protocol [default: sliding].
    #[arg(long, value_enum)]
    pub protocol: Option<ProtocolArg>,
    /// Window length in tokens (BOS included) [default: 512, or the model's context if smaller].
    #[arg(long)]
    pub window: Option<usize>,
    /// Stride between sliding windows in tokens [default: window / 2].
    #[arg(long)]
    pub stride: Option<usize>,
    /// Whether each window starts with BOS; auto follows the model's tokenizer [default: auto].
    #[arg(long, value_enum)]
    pub bos: Option<BosArg>,
    /// Field (JSONL) or column (Parquet) holding the text [default: text].
    #[arg(long)]
    pub text_field: Option<String>,
    /// Keep only the first N tokens of the tokenized corpus.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Keep only the first K chunks (`--protocol chunks`).
    #[arg(long)]
    pub max_chunks: Option<usize>,
    /// Windows per forward pass [default: 1].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Run a GGUF model with f32 weights instead of its quantized kernels.
    #[arg(long)]
    #[serde(default)]
    pub dequantize: bool,
    /// cpu or cuda:N [default: cpu].
    #[arg(long)]
    pub device: Option<String>,
    /// Compute dtype for safetensors and dequantized GGUF weights [default: bf16 on cuda:N, f32 on
    /// cpu]; f64 is for reference-grade numbers, bf16/f16 for GPUs. Quantized GGUF kernels always
    /// run in f32.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Where per-token statistics are computed: host (f64, from logits copied off the device),
    /// device (f32 where the logits live; only per-token statistics cross to the host), or auto
    /// (device on cuda:N, host on cpu) [default: auto].
    #[arg(long, value_enum)]
    pub stats_on: Option<StatsOnArg>,
    /// Write summary.json, per-token rows and checkpoints here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Per-token rows format under --out [default: parquet].
    #[arg(long, value_enum)]
    pub per_token: Option<PerTokenArg>,
    /// Also write per-word surprisal rows (words.*).
    #[arg(long)]
    #[serde(default)]
    pub words: bool,
    /// Continue an interrupted run in --out.
    #[arg(long)]
    #[serde(default)]
    pub resume: bool,
    /// Score only shard I of N (0-based) of the corpus' windows, into --out DIR/shard-IIIII-of-NNNNN;
    /// `surprisal merge DIR` combines the shards. Without it: SURPRISAL_SHARD=I/N, then
    /// SLURM_ARRAY_TASK_ID (with --shards N or SLURM_ARRAY_TASK_COUNT), then JOB_COMPLETION_INDEX
    /// (with --shards N).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Number of shards, for an index taken from the environment (SLURM_ARRAY_TASK_ID,
    /// JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "N")]
    pub shards: Option<u64>,
    /// Whether `shard` came from the --config file (for the summary's `shard.source`).
    #[arg(skip)]
    #[serde(skip)]
    pub shard_from_config: bool,
    /// TOML file with any of these options (kebab-case keys); flags given on the command line win.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// No progress bar, no table.
    #[arg(long)]
    #[serde(default)]
    pub quiet: bool,
    /// Compute threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds between checkpoints [default: 30]; 0 checkpoints after every batch (tests, kill -9 drills).
    #[arg(long, hide = true)]
    pub checkpoint_seconds: Option<u64>,
}

impl RunOptions {
    /// Fills every option not given on the command line from `file` (a parsed `--config`).
    pub fn merge_under(mut self, file: RunOptions) -> RunOptions {
        macro_rules! take {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
        }
        take!(
            model, data, protocol, window, stride, bos, text_field, max_tokens, max_chunks,
            batch_size, device, dtype, stats_on, out, per_token, threads
        );
        self.shard_from_config = self.shard.is_none() && file.shard.is_some();
        take!(shard, shards);
        take!(checkpoint_seconds);
        self.dequantize |= file.dequantize;
        self.words |= file.words;
        self.resume |= file.resume;
        self.quiet |= file.quiet;
        self
    }
}
