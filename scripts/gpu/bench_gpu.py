#!/usr/bin/env python3
"""GPU throughput benchmark (issue #7): surprisal against transformers/PyTorch on a random-weight
Llama-3-8B-shaped model, bf16, llama.cpp's `chunks` protocol at window 2048, both on the same GPU in
one invocation. Writes a section of docs/benchmarks-gpu.md and docs/benchmarks-gpu.json. The runbook
for a lent GPU machine is docs/gpu-runbook.md.

Stages (each fails with one line naming the problem):
  0. preflight: the surprisal binary (with --device cuda:N: built with `--features cuda`, its shared
     libraries found; LD_LIBRARY_PATH is extended with the CUDA library folders that hold them), torch
     sees the device, the data file exists; a 1-chunk surprisal run on the tiny shape on the same
     device and dtype, before minutes go into the big model.
  1. model: a random-weight LlamaForCausalLM of --shape (8b: hidden 4096, intermediate 14336, 32
     layers, 32 heads, 8 KV heads, vocab 128256, rope_theta 500000, 8192 positions, untied head),
     initialised on the device itself (seeded; transformers' normal(0, 0.02) init, norms 1, head
     normal(0, 1/sqrt(hidden)) so logits are not flat), saved as bf16 safetensors shards +
     config.json (Hub layout) + tokenizer.json in --cache-dir (reused when it is there). No download:
     the tokenizer is the committed test-fixture byte-level BPE (vocab 384 <= 128256, which surprisal
     accepts: only a tokenizer LARGER than the embedding is refused), with a tokenizer_config.json that
     says add_bos_token false, so both tools use no BOS. Compute per token does not depend on which
     ids occur.
  Data: WikiText-2 raw test ($WIKITEXT, shared/ or ../shared/datasets/, .gpu/run/), cut at the first
     line end after the (K+1)*W tokens the chunks use (--whole-data: all of it), so that tokenizing
     text no chunk uses does not count in either tool's time; both see the same token stream.
  2. check: --check-chunks chunks through both tools with per-token output; per-token NLL differences.
  3. timed: --repeats round-robin repeats of (surprisal, transformers), same --chunks K, --window W,
     --batch-size B, per-token output off (a round that would end after --deadline-s is not started;
     when the check runs say even one round of K would not, K is lowered and the report says so):
       surprisal eval --model DIR --data DATA --device D --dtype bf16 --protocol chunks --window W
                      --max-chunks K --batch-size B --quiet --out RUN --per-token none
       python scripts/bench/bench_transformers.py --model DIR --data DATA --device D --dtype bfloat16
                      --attn-implementation sdpa --window W --chunks K --batch-size B
     Each is a fresh process. Recorded: wall time of the whole process (load, file hashing,
     tokenization, forward, metrics), the compute time the tool reports (surprisal: summary.json
     elapsed_seconds = engine time after the model is loaded, tokenization included; transformers:
     the forward loop, CUDA-synchronized), peak RSS (wait4), peak GPU memory of the process (NVML or
     nvidia-smi sampled every 0.2 s; also the device-wide peak minus the idle baseline) and for
     transformers torch.cuda.max_memory_allocated, mean NLL.
  4. report: medians; tokens/s = K*W / seconds; MFU = 2 * N * tokens/s / peak, N = parameters without
     the input embedding (the output head counted: it is a matmul; the input embedding is a lookup);
     attention's own FLOPs are not counted. Peak dense bf16 FLOP/s from the GPU's name (H100 SXM and
     H200 989.4 T, H100 PCIe 756 T, H100 NVL 835 T; A100 312 T) or --peak-tflops.

Usage:
  python3 scripts/gpu/bench_gpu.py [--shape 8b|1b|tiny] [--device cuda:0] [--dtype bf16] [--window 2048]
      [--chunks 64] [--check-chunks 2] [--batch-size 4] [--repeats 3] [--peak-tflops T]
      [--deadline-s 540] [--data FILE] [--whole-data] [--cache-dir DIR] [--doc docs/benchmarks-gpu.md]
      [--log-dir DIR (default $OUT)] [--threads N] [--nll-tolerance X]
  CPU pipeline check (seconds): python3 scripts/gpu/bench_gpu.py --shape tiny --device cpu --window 256
      --chunks 4 --batch-size 2 --threads 1 --peak-tflops 0.1 --doc /tmp/bench-gpu-test.md
Needs: a surprisal binary ($SURPRISAL_BIN or target/release/surprisal; for CUDA built with
`--features cuda`), Python with torch + transformers + safetensors + tokenizers ($PYTHON, else
/work/.venv-ref/bin/python where it exists, else this interpreter).
"""
import argparse
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench.py and make_fixtures.py live in the sibling folders scripts/bench and scripts/references
for _sibling in ("bench", "references"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), _sibling))
from bench import PY, REPO  # noqa: E402

TOKENIZER = os.path.join(REPO, "crates", "models", "tests", "fixtures", "tokenizer.json")
WIKITEXT = "wikitext-2-raw-v1.test.raw"
SEED = 0

# Llama-3 family shapes (untied head everywhere, so the head is a separate matmul as in Llama-3-8B).
_LLAMA3 = dict(num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, rope_theta=500000.0,
               max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False)
SHAPES = {
    "8b": dict(_LLAMA3, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32),
    # Llama-3.2-1B's body (that model ties its head; here it is untied like 8B's)
    "1b": dict(_LLAMA3, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16),
    # seconds on a CPU: same code path, tiny matrices
    "tiny": dict(_LLAMA3, hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096),
}
SHAPE_TITLE = {"8b": "Llama-3-8B-shaped", "1b": "Llama-3.2-1B-shaped (untied head)",
               "tiny": "tiny Llama-3-shaped"}

# dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets; first match wins
PEAKS = [("GH200", 989.4e12), ("H200", 989.4e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12),
         ("H100", 989.4e12), ("H800", 989.4e12), ("A100", 312e12), ("L40S", 362.05e12)]
TORCH_DTYPE = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
BEGIN, END = "<!-- bench_gpu.py {}:begin -->", "<!-- bench_gpu.py {}:end -->"


def die(msg):
    sys.exit(f"bench_gpu.py: {msg}")


def log(msg):
    print(f"[bench_gpu] {msg}", file=sys.stderr, flush=True)


def param_counts(shape):
    """(total, counted for MFU = total without the input embedding)."""
    c = SHAPES[shape]
    h, i, v, layers = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    hd = h // c["num_attention_heads"]
    attn = h * h * 2 + h * c["num_key_value_heads"] * hd * 2  # q, o; k, v
    per_layer = attn + 3 * h * i + 2 * h  # + gate/up/down + two RMSNorms
    embed = v * h
    head = 0 if c["tie_word_embeddings"] else v * h
    counted = layers * per_layer + h + v * h  # final norm + head (tied or not, the head is a matmul)
    return embed + layers * per_layer + h + head, counted


def find_data(arg):
    if arg:
        if not os.path.isfile(arg):
            die(f"--data {arg}: no such file")
        return arg
    cands = [os.environ.get("WIKITEXT"), os.path.join(REPO, "shared", "datasets", WIKITEXT),
             os.path.join(REPO, "..", "shared", "datasets", WIKITEXT), os.path.join(REPO, ".gpu", "run", WIKITEXT)]
    for c in cands:
        if c and os.path.isfile(c):
            return os.path.abspath(c)
    die("WikiText-2 test not found; looked at $WIKITEXT, " + ", ".join(c for c in cands[1:])
        + " (on the GPU machine: carry it, see docs/gpu-runbook.md)")


TRIM = r"""
import sys
from tokenizers import Tokenizer
src, dst, need = sys.argv[1], sys.argv[2], int(sys.argv[3])
text = open(src, encoding="utf-8").read()
enc = Tokenizer.from_file(sys.argv[4]).encode(text, add_special_tokens=False)
if len(enc.ids) <= need:
    cut = len(text)
else:
    end = enc.offsets[need][1]  # character offset (Python str index) of the end of token `need`
    nl = text.find("\n", end)
    cut = len(text) if nl < 0 else nl + 1
open(dst, "w", encoding="utf-8", newline="").write(text[:cut])
print(len(text[:cut].encode("utf-8")), len(enc.ids))
"""


def trim_data(src, dst, tokens):
    """The prefix of src (cut at a line end) that holds `tokens` tokens and more: chunks use only the
    start of the token stream, so both tools then tokenize only what they use (and get the same ids
    for it), which keeps tokenization out of the compute times."""
    p = subprocess.run([PY, "-c", TRIM, src, dst, str(tokens), TOKENIZER], capture_output=True, text=True)
    if p.returncode != 0:
        die(f"trimming {src} failed: {p.stderr.strip()[-1000:]}")
    nbytes, ntok = map(int, p.stdout.split())
    if ntok < tokens:
        die(f"{src}: {ntok} tokens, fewer than the {tokens} that the chunks need")
    return nbytes


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


# ------------------------------------------------------------------------------------------------
# CUDA environment
# ------------------------------------------------------------------------------------------------
def cuda_lib_dirs():
    """Folders that may hold libcudart/libcublas/libcurand/libnvrtc of the machine's CUDA."""
    dirs = []
    for root in ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu",
                 "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib"]:
        if os.path.isdir(root):
            dirs.append(root)
    try:  # the pip CUDA wheels PyTorch uses (nvidia/<lib>/lib for CUDA 12, nvidia/cu13/lib for CUDA 13)
        site = sh([PY, "-c", "import nvidia, os; print('\\n'.join(os.path.abspath(p) for p in nvidia.__path__))"])
        for base in site.splitlines():
            for sub in sorted(os.listdir(base)):
                d = os.path.join(base, sub, "lib")
                if os.path.isdir(d):
                    dirs.append(d)
    except (subprocess.CalledProcessError, OSError):
        pass
    for d in sorted(os.listdir("/usr/local")) if os.path.isdir("/usr/local") else []:
        if d.startswith("cuda-") and os.path.isdir(f"/usr/local/{d}/lib64"):
            dirs.append(f"/usr/local/{d}/lib64")
    return dirs


def missing_libs(binary, env):
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, env=env).stdout
    except OSError:
        return []
    return [ln.split("=>")[0].strip() for ln in out.splitlines() if "not found" in ln]


def binary_env(binary, cuda):
    """Environment for the binary; with CUDA, adds library folders until ldd finds everything."""
    env = dict(os.environ)
    miss = missing_libs(binary, env)
    if miss and cuda:
        extra = []
        for d in cuda_lib_dirs():
            if any(os.path.exists(os.path.join(d, m)) for m in miss):
                extra.append(d)
        if extra:
            env["LD_LIBRARY_PATH"] = ":".join(extra + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p])
            log(f"LD_LIBRARY_PATH += {':'.join(extra)}")
        miss = missing_libs(binary, env)
    if miss:
        die(f"{binary}: shared libraries not found: {', '.join(miss)} (searched {', '.join(cuda_lib_dirs())})")
    return env


def gpu_facts(index):
    q = sh(["nvidia-smi", "-i", str(index), "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader"])
    name, driver, mem = [x.strip() for x in q.split(",")]
    head = subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout
    cuda = next((ln.split("CUDA Version:")[1].split()[0] for ln in head.splitlines() if "CUDA Version:" in ln), "?")
    return {"gpu": name, "driver": driver, "driver_cuda": cuda, "gpu_memory": mem}


def peak_flops(name, override_tflops):
    if override_tflops:
        return override_tflops * 1e12, f"{override_tflops:g} TFLOP/s (--peak-tflops)"
    for key, f in PEAKS:
        if key in name:
            return f, f"{f / 1e12:g} TFLOP/s dense bf16 (data sheet of '{key}', matched in '{name}')"
    die(f"no known bf16 peak for GPU '{name}': pass --peak-tflops")


class GpuSampler:
    """Peak GPU memory of one process (and of the whole device) by polling NVML or nvidia-smi."""

    def __init__(self, index, pid, interval=0.2):
        self.index, self.pid, self.interval = index, pid, interval
        self.proc_peak, self.dev_peak, self.samples = None, 0, 0
        self.baseline = self._sample()[1]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _sample(self):
        try:
            import pynvml  # nvidia-ml-py
            if not getattr(GpuSampler, "_nvml", None):
                pynvml.nvmlInit()
                GpuSampler._nvml = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            h = GpuSampler._nvml
            procs = {p.pid: p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)}
            return procs.get(self.pid), pynvml.nvmlDeviceGetMemoryInfo(h).used
        except Exception:  # noqa: BLE001  (no pynvml: nvidia-smi)
            apps = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-compute-apps=pid,used_memory",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
            mine = None
            for ln in apps.splitlines():
                parts = [x.strip() for x in ln.split(",")]
                if len(parts) == 2 and parts[0] == str(self.pid) and parts[1].isdigit():
                    mine = int(parts[1]) << 20
            used = subprocess.run(["nvidia-smi", "-i", str(self.index), "--query-gpu=memory.used",
                                   "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout.strip()
            return mine, (int(used) << 20) if used.isdigit() else 0

    def _loop(self):
        while not self._stop.is_set():
            mine, used = self._sample()
            self.samples += 1
            if mine is not None:
                self.proc_peak = max(self.proc_peak or 0, mine)
            self.dev_peak = max(self.dev_peak, used)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._t.join()
        return {"gpu_proc_peak_bytes": self.proc_peak,
                "gpu_device_peak_minus_idle_bytes": max(0, self.dev_peak - self.baseline),
                "gpu_samples": self.samples}


def run_process(cmd, env, log_path, gpu_index=None):
    """Runs cmd; returns (wall_s, peak_rss_bytes, stdout, gpu memory facts). Dies on failure."""
    with open(log_path + ".out", "w") as fo, open(log_path + ".err", "w") as fe:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        sampler = GpuSampler(gpu_index, p.pid) if gpu_index is not None else None
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
    mem = sampler.stop() if sampler else {}
    out, err = open(log_path + ".out").read(), open(log_path + ".err").read()
    if p.returncode != 0:
        die(f"failed (exit {p.returncode}): {shlex.join(cmd)}\n{err[-3000:]}")
    return wall, ru.ru_maxrss * 1024, out, mem


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
def make_model(shape, device, out, seed):
    """Runs in a child process (its GPU memory goes back when it exits)."""
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    from make_fixtures import classic_config

    transformers.logging.set_verbosity_error()
    dev = torch.device(device)
    cfg = LlamaConfig(**SHAPES[shape], bos_token_id=0, eos_token_id=0, hidden_act="silu", initializer_range=0.02,
                      attention_bias=False, mlp_bias=False)
    cfg.architectures = ["LlamaForCausalLM"]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    with dev:  # parameters are created (and initialised) on the device
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    if any(p.device.type != dev.type for p in model.parameters()):
        print(f"parameters were not created on {device}; moving them", file=sys.stderr)
        model = model.to(dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    h = cfg.hidden_size
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name:
                p.fill_(1.0)
            elif name.startswith("lm_head"):
                p.normal_(0.0, 1.0 / math.sqrt(h), generator=g)
            else:
                p.normal_(0.0, cfg.initializer_range, generator=g)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_init = time.perf_counter() - t0
    tmp = out + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    t1 = time.perf_counter()
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size="5GB")
    t_save = time.perf_counter() - t1
    saved = classic_config(Path(tmp) / "config.json")
    assert saved.get("tie_word_embeddings") is False or SHAPES[shape]["tie_word_embeddings"], saved
    shutil.copy(TOKENIZER, os.path.join(tmp, "tokenizer.json"))
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False, "add_eos_token": False,
                   "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "model_max_length": 1 << 20}, f,
                  indent=1)
    n = sum(p.numel() for p in model.parameters())
    with open(os.path.join(tmp, "bench_gpu_model.json"), "w") as f:
        json.dump({"shape": shape, "seed": seed, "device": device, "parameters": n, "init_seconds": t_init,
                   "save_seconds": t_save, "torch": torch.__version__, "transformers": transformers.__version__},
                  f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    print(json.dumps({"parameters": n, "init_seconds": t_init, "save_seconds": t_save}))


def ensure_model(shape, device, cache, seed):
    d = os.path.join(cache, f"random-llama-{shape}-bf16-seed{seed}")
    meta = os.path.join(d, "bench_gpu_model.json")
    if os.path.exists(meta):
        log(f"model: reusing {d}")
        return d, json.load(open(meta)), 0.0
    total, _ = param_counts(shape)
    os.makedirs(cache, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if free < total * 2 * 1.1:
        die(f"--cache-dir {cache}: {free / 2**30:.1f} GiB free, the {shape} model needs {total * 2 / 2**30:.1f} GiB")
    log(f"model: making {shape} ({total / 1e9:.2f} B parameters, {total * 2 / 2**30:.1f} GiB bf16) on {device} "
        f"into {d}")
    t0 = time.perf_counter()
    p = subprocess.run([PY, os.path.abspath(__file__), "--_make", shape, device, d, str(seed)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        die(f"making the {shape} model on {device} failed:\n{p.stderr[-3000:]}")
    return d, json.load(open(meta)), time.perf_counter() - t0


def default_cache(shape, cuda):
    if os.environ.get("SURPRISAL_GPU_CACHE"):
        return os.environ["SURPRISAL_GPU_CACHE"]
    need = param_counts(shape)[0] * 2 * 1.2
    # tmpfs on the GPU machine: writing and re-reading 16 GB from RAM beats its disk
    if cuda and os.path.isdir("/dev/shm") and shutil.disk_usage("/dev/shm").free > need:
        return "/dev/shm/surprisal-bench-gpu"
    return os.path.join(tempfile.gettempdir(), "surprisal-bench-gpu")


# ------------------------------------------------------------------------------------------------
# the two tools
# ------------------------------------------------------------------------------------------------
def surprisal_cmd(a, model, out, chunks, per_token, window=None):
    cmd = [a.surprisal, "eval", "--model", model, "--data", a.data, "--device", a.device, "--dtype", a.dtype,
           "--protocol", "chunks", "--window", str(window or a.window), "--max-chunks", str(chunks),
           "--batch-size", str(a.batch_size), "--quiet", "--out", out, "--per-token", per_token]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    return cmd


def peer_cmd(a, model, chunks, per_token_file=None):
    cmd = [PY, os.path.join(REPO, "scripts", "bench_transformers.py"), "--model", model, "--data", a.data,
           "--device", a.device, "--dtype", TORCH_DTYPE[a.dtype], "--attn-implementation", "sdpa",
           "--window", str(a.window), "--chunks", str(chunks), "--batch-size", str(a.batch_size),
           "--threads", str(a.threads or os.cpu_count())]
    if per_token_file:
        cmd += ["--per-token", per_token_file]
    return cmd


def run_surprisal(a, env, model, work, tag, chunks, per_token="none"):
    out = os.path.join(work, f"surprisal-{tag}")
    shutil.rmtree(out, ignore_errors=True)
    wall, rss, _, mem = run_process(surprisal_cmd(a, model, out, chunks, per_token), env, out + "-log",
                                    a.gpu_index)
    s = json.load(open(os.path.join(out, "summary.json")))
    r = {"tool": "surprisal", "wall_s": wall, "rss_bytes": rss, "compute_s": s["elapsed_seconds"],
         "mean_nll": s["mean_nll_nats"], "tokens_scored": s["tokens_scored"], "windows": s["windows"],
         "device": s.get("device"), "dtype": s.get("dtype"), **mem}
    rows = None
    if per_token == "jsonl":
        rows = {}
        with open(os.path.join(out, "tokens.jsonl")) as f:
            for ln in f:
                t = json.loads(ln)
                rows[t["index"]] = t["nll_nats"]
    shutil.rmtree(out, ignore_errors=True)
    return r, rows


def run_peer(a, env, model, work, tag, chunks, per_token=False):
    ptf = os.path.join(work, f"peer-{tag}.json") if per_token else None
    wall, rss, out, mem = run_process(peer_cmd(a, model, chunks, ptf), env, os.path.join(work, f"peer-{tag}-log"),
                                      a.gpu_index)
    j = json.loads(out.strip().splitlines()[-1])
    r = {"tool": "transformers", "wall_s": wall, "rss_bytes": rss, "compute_s": j["eval_seconds"],
         "mean_nll": j["mean_nll_nats"], "tokens_scored": j["tokens_scored"],
         "windows": j["tokens_evaluated"] // a.window, "torch_peak_alloc_bytes": j.get("peak_gpu_memory_bytes"),
         "versions": {k: j.get(k) for k in ("torch", "transformers", "torch_cuda", "attn_implementation")},
         "bos_replaces_first_token": j["bos_replaces_first_token"], **mem}
    rows = None
    if ptf:
        rows = {int(i): v for i, v in json.load(open(ptf))}
        os.remove(ptf)
    return r, rows


def compare_rows(ours, peer):
    if set(ours) != set(peer):
        only_o, only_p = sorted(set(ours) - set(peer))[:5], sorted(set(peer) - set(ours))[:5]
        die(f"the two tools scored different tokens (only surprisal: {only_o}..., only transformers: {only_p}...)")
    keys = sorted(ours)
    d = [ours[k] - peer[k] for k in keys]
    n = len(d)
    mo, mp = sum(ours[k] for k in keys) / n, sum(peer[k] for k in keys) / n
    so = math.sqrt(sum((ours[k] - mo) ** 2 for k in keys) / n)
    sp = math.sqrt(sum((peer[k] - mp) ** 2 for k in keys) / n)
    cov = sum((ours[k] - mo) * (peer[k] - mp) for k in keys) / n
    return {"tokens": n, "mean_nll_surprisal": mo, "mean_nll_transformers": mp, "delta_mean_nll": mo - mp,
            "mean_abs_delta": sum(abs(x) for x in d) / n, "max_abs_delta": max(abs(x) for x in d),
            "nll_std_surprisal": so, "corr": cov / (so * sp) if so > 0 and sp > 0 else None}


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def write_doc(path, key, md, begin=BEGIN, end=END):
    """Replaces the generated section `key` of the markdown file (appends it the first time)."""
    begin, end = begin.format(key), end.format(key)
    doc = open(path).read() if os.path.exists(path) else "# GPU benchmarks\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if begin not in doc or end not in doc:
        doc = doc.rstrip("\n") + "\n\n" + begin + "\n" + end + "\n"
    head, rest = doc.split(begin, 1)
    with open(path, "w") as f:
        f.write(head + "\n".join([begin] + md + [end]) + rest.split(end, 1)[1])


def write_json(path, key, obj):
    """Sets sections[key] of the JSON file, keeping the other sections."""
    data = json.load(open(path)) if os.path.exists(path) else {}
    data.setdefault("sections", {})[key] = obj
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def mib(x):
    return "—" if x is None else f"{x / 2**20:,.0f}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--_make":
        make_model(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="8b")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--dtype", choices=sorted(TORCH_DTYPE), default="bf16")
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=64)
    ap.add_argument("--check-chunks", type=int, default=2, help="chunks of the per-token check run (0: skip)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--deadline-s", type=float, default=540,
                    help="no timed round starts that would end later than this many seconds after the start "
                         "(the GPU tool stops a command at 600 s); at least one round always runs")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both tools (default: all)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--whole-data", action="store_true",
                    help="give both tools the whole file (default: the prefix the chunks use, see trim_data)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--doc", default=os.path.join(REPO, "docs", "benchmarks-gpu.md"))
    ap.add_argument("--log-dir", default=os.environ.get("OUT"), help="per-run JSON lines go here (default $OUT)")
    ap.add_argument("--nll-tolerance", type=float, default=None,
                    help="allowed |mean NLL difference| (default 0.02 nats for bf16/f16, 1e-4 for f32)")
    a = ap.parse_args()
    t_start = time.perf_counter()
    a.surprisal = os.path.abspath(os.environ.get("SURPRISAL_BIN", os.path.join(REPO, "target", "release", "surprisal")))
    cuda = a.device.startswith("cuda")
    a.gpu_index = int(a.device.split(":")[1]) if cuda and ":" in a.device else (0 if cuda else None)
    tol = a.nll_tolerance if a.nll_tolerance is not None else (1e-4 if a.dtype == "f32" else 0.02)
    a.data = find_data(a.data)
    key = f"{a.shape} {a.device.split(':')[0]}"

    # ---- 0. preflight ----
    if not os.access(a.surprisal, os.X_OK):
        die(f"{a.surprisal} missing: cargo build --release -p surprisal-cli"
            + (" --features cuda" if cuda else "") + " (or set SURPRISAL_BIN)")
    facts = {}
    if cuda:
        if not shutil.which("nvidia-smi"):
            die(f"--device {a.device}: nvidia-smi not found: no NVIDIA driver on this machine")
        facts = gpu_facts(a.gpu_index)
        peak, peak_note = peak_flops(facts["gpu"], a.peak_tflops)
    else:
        if not a.peak_tflops:
            die("--device cpu: give the peak to compute MFU against with --peak-tflops (a CPU test value)")
        peak, peak_note = a.peak_tflops * 1e12, f"{a.peak_tflops:g} TFLOP/s (--peak-tflops; a stated test value)"
    probe = subprocess.run([PY, "-c", "import json, torch, transformers; print(json.dumps({'torch': torch.__version__,"
                            " 'transformers': transformers.__version__, 'cuda': torch.cuda.is_available(),"
                            " 'torch_cuda': torch.version.cuda}))"], capture_output=True, text=True)
    if probe.returncode != 0:
        die(f"{PY} cannot import torch and transformers: {probe.stderr.strip().splitlines()[-1:]}")
    versions = json.loads(probe.stdout)
    if cuda and not versions["cuda"]:
        die(f"--device {a.device}: torch {versions['torch']} (CUDA build: {versions['torch_cuda']}) "
            "sees no CUDA device")
    env = binary_env(a.surprisal, cuda)
    if a.threads:
        env.update({"RAYON_NUM_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads)})
    cache = a.cache_dir or default_cache(a.shape, cuda)
    work = tempfile.mkdtemp(prefix="bench-gpu-")
    data_note = os.path.basename(a.data)
    if not a.whole_data:
        need = (max(a.chunks, a.check_chunks) + 1) * a.window
        full = os.path.getsize(a.data)
        trimmed = os.path.join(work, "data.txt")
        nbytes = trim_data(a.data, trimmed, need)
        data_note = f"first {nbytes:,} of {full:,} bytes of {data_note} (cut at a line end after {need:,} tokens)"
        a.data = trimmed
    log(f"data {a.data}; cache {cache}; peak {peak_note}")
    # a 1-chunk surprisal run of the tiny shape on the same device first: a build without CUDA, a
    # missing library or an unsupported op shows up here, before the big model is made
    tiny, _, _ = ensure_model("tiny", "cpu", os.path.join(tempfile.gettempdir(), "surprisal-bench-gpu"), a.seed)
    out = os.path.join(work, "probe")
    p = subprocess.run(surprisal_cmd(a, tiny, out, 1, "none", window=64), capture_output=True, text=True, env=env)
    if p.returncode != 0:
        die(f"surprisal cannot run on --device {a.device} --dtype {a.dtype}: {p.stderr.strip()[-2000:]}")
    log(f"preflight ok ({time.perf_counter() - t_start:.1f} s): {json.load(open(out + '/summary.json'))['device']}")

    # ---- 1. model ----
    model, mmeta, t_make = ensure_model(a.shape, a.device, cache, a.seed)
    total, counted = param_counts(a.shape)
    if mmeta["parameters"] != total:
        die(f"{model}: {mmeta['parameters']} parameters, expected {total} for shape {a.shape}")
    log(f"model ready ({t_make:.1f} s): {total:,} parameters; MFU counts {counted:,} (no input embedding)")

    runs_log = open(os.path.join(a.log_dir, f"bench_gpu_{a.shape}_runs.jsonl"), "a") if a.log_dir else None

    def record(r):
        if runs_log:
            runs_log.write(json.dumps(r) + "\n")
            runs_log.flush()

    # ---- 2. per-token check ----
    check = None
    if a.check_chunks > 0:
        ro, rows_o = run_surprisal(a, env, model, work, "check", a.check_chunks, "jsonl")
        rp, rows_p = run_peer(a, env, model, work, "check", a.check_chunks, True)
        check = compare_rows(rows_o, rows_p)
        check["chunks"] = a.check_chunks
        check["runs"] = {"surprisal": ro, "transformers": rp}
        record({"stage": "check", **check})
        log(f"check ({a.check_chunks} chunks, {check['tokens']} tokens): mean NLL surprisal "
            f"{check['mean_nll_surprisal']:.6f} transformers {check['mean_nll_transformers']:.6f}; per token "
            f"mean |Δ| {check['mean_abs_delta']:.2e}, max |Δ| {check['max_abs_delta']:.2e}, corr {check['corr']}")

    # ---- 3. timed, round-robin ----
    results = {"surprisal": [], "transformers": []}
    estimate = {}  # seconds the next run of each tool will take, at most
    if check:
        # from the check runs (an over-estimate: their compute time includes warm-up); when even one
        # round of --chunks would not end before the deadline, fewer chunks, rather than no result
        fixed = sum(c["wall_s"] - c["compute_s"] for c in check["runs"].values())
        rate = sum(c["compute_s"] for c in check["runs"].values()) / a.check_chunks
        left = a.deadline_s - (time.perf_counter() - t_start)
        if (fixed + a.chunks * rate) * 1.15 > left:
            k = int((left / 1.15 - fixed) / rate)
            if k < a.batch_size:
                die(f"{left:.0f} s left before --deadline-s, a round of {a.batch_size} chunks needs about "
                    f"{(fixed + a.batch_size * rate) * 1.15:.0f} s: raise --deadline-s or use a smaller --shape")
            k -= k % a.batch_size
            log(f"--chunks {a.chunks} lowered to {k}: one round is estimated at {(fixed + a.chunks * rate):.0f} s, "
                f"{left:.0f} s left")
            a.chunks = k
        for name, c in check["runs"].items():
            estimate[name] = c["wall_s"] + (a.chunks - a.check_chunks) * c["compute_s"] / a.check_chunks
    stopped = None
    for rep in range(a.repeats):
        # a whole round or none: stop before a round that would end past --deadline-s
        left = a.deadline_s - (time.perf_counter() - t_start)
        need = sum(estimate.values()) * 1.15
        if rep > 0 and need > left:
            stopped = (f"stopped after {rep} of {a.repeats} repeats: the next round needs ~{need:.0f} s, "
                       f"{left:.0f} s left")
            log(stopped)
            break
        for name, fn in (("surprisal", run_surprisal), ("transformers", run_peer)):
            r, _ = fn(a, env, model, work, f"r{rep}", a.chunks)
            estimate[name] = max(x["wall_s"] for x in results[name] + [r])
            r["repeat"] = rep + 1
            results[name].append(r)
            record({"stage": "timed", **r})
            tok = a.chunks * a.window
            log(f"{name} #{rep + 1}: {r['wall_s']:.1f} s wall ({tok / r['wall_s']:.0f} tok/s), compute "
                f"{r['compute_s']:.1f} s ({tok / r['compute_s']:.0f} tok/s, "
                f"MFU {2 * counted * tok / r['compute_s'] / peak:.1%})"
                f", NLL {r['mean_nll']:.6f}, GPU {mib(r.get('gpu_proc_peak_bytes'))} MiB")
    shutil.rmtree(work, ignore_errors=True)

    # ---- 4. report ----
    tokens = a.chunks * a.window
    rows, table = [], []
    for name, rs in results.items():
        if rs[0]["windows"] != a.chunks:
            die(f"{name} evaluated {rs[0]['windows']} chunks, not {a.chunks} (is the data long enough?)")
        tps_w = statistics.median(tokens / r["wall_s"] for r in rs)
        tps_c = statistics.median(tokens / r["compute_s"] for r in rs)
        row = {"tool": name, "tokens_evaluated": tokens, "tokens_scored": rs[0]["tokens_scored"], "repeats": len(rs),
               "median_wall_s": statistics.median(r["wall_s"] for r in rs),
               "median_compute_s": statistics.median(r["compute_s"] for r in rs),
               "tokens_per_s_wall": tps_w, "tokens_per_s_compute": tps_c,
               "mfu_wall": 2 * counted * tps_w / peak, "mfu_compute": 2 * counted * tps_c / peak,
               "peak_rss_bytes": max(r["rss_bytes"] for r in rs),
               "gpu_proc_peak_bytes": max((r.get("gpu_proc_peak_bytes") or 0 for r in rs), default=0) or None,
               "gpu_device_peak_minus_idle_bytes": max((r.get("gpu_device_peak_minus_idle_bytes") or 0) for r in rs)
               if cuda else None,
               "torch_peak_alloc_bytes": max((r.get("torch_peak_alloc_bytes") or 0 for r in rs), default=0) or None,
               "mean_nll": rs[0]["mean_nll"], "runs": rs}
        rows.append(row)
    o, p = rows
    if o["tokens_scored"] != p["tokens_scored"]:
        die(f"scored tokens differ: surprisal {o['tokens_scored']}, transformers {p['tokens_scored']}")
    d_nll = o["mean_nll"] - p["mean_nll"]
    agree = abs(d_nll) <= tol and (check is None or abs(check["delta_mean_nll"]) <= tol)
    for r in rows:
        table.append(f"| {r['tool']} | {r['median_wall_s']:.1f} | {r['tokens_per_s_wall']:,.0f} | "
                     f"{r['mfu_wall']:.1%} | "
                     f"{r['median_compute_s']:.1f} | {r['tokens_per_s_compute']:,.0f} | **{r['mfu_compute']:.1%}** | "
                     f"{mib(r['gpu_proc_peak_bytes'])} | {mib(r['gpu_device_peak_minus_idle_bytes'])} | "
                     f"{mib(r['torch_peak_alloc_bytes'])} | {r['peak_rss_bytes'] / 2**20:,.0f} | {r['mean_nll']:.6f} |")

    def ver(cmd):
        try:
            return sh(cmd)
        except Exception as e:  # noqa: BLE001
            return f"? ({e})"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    peer_v = results["transformers"][0]["versions"]
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} cores visible, {platform.platform()}",
        **({"gpu": f"{facts['gpu']} ({facts['gpu_memory']})", "driver": facts["driver"],
            "driver CUDA": facts["driver_cuda"]} if cuda else {"gpu": "none (CPU run)"}),
        "surprisal": ver([a.surprisal, "--version"]) + " (git " + ver(["git", "-C", REPO, "rev-parse", "--short",
                                                                        "HEAD"]) + ")",
        "torch": f"{peer_v['torch']} (CUDA {peer_v['torch_cuda']})", "transformers": peer_v["transformers"],
        "peer attention": peer_v["attn_implementation"],
        "model": f"{SHAPE_TITLE[a.shape]} random weights (seed {a.seed}), {a.dtype}, {total:,} parameters; "
                 f"MFU counts {counted:,} (all but the input embedding)",
        "protocol": f"chunks, window {a.window}, {a.chunks} chunks ({tokens:,} tokens evaluated, "
                    f"{o['tokens_scored']:,} scored), batch {a.batch_size}, no BOS",
        "data": data_note, "device / dtype": f"{a.device} / {a.dtype}",
        "peak": peak_note, "repeats": f"{len(results['surprisal'])}" + (f" ({stopped})" if stopped else ""),
        "model made in": f"{t_make:.1f} s" if t_make else "reused from the cache",
        "command": "python3 scripts/gpu/bench_gpu.py " + shlex.join(sys.argv[1:]),
    }
    chk = ""
    if check:
        chk = (f" Per-token check ({check['chunks']} chunks, {check['tokens']:,} tokens, separate runs): mean |Δ| "
               f"{check['mean_abs_delta']:.2e}, max |Δ| {check['max_abs_delta']:.2e} nats, correlation "
               f"{check['corr']:.6f} (per-token NLL std {check['nll_std_surprisal']:.3f}).")
    md = [
        f"Generated by `scripts/gpu/bench_gpu.py` (do not edit by hand; re-run it). {SHAPE_TITLE[a.shape]} model,",
        "both tools in fresh processes on the same device, round-robin. Tokens/s = tokens evaluated ÷ seconds,",
        "median of the repeats: *process* = wall time of the whole process (start, load, hashing, tokenizing,",
        "forward, metrics); *compute* = what the tool reports as its run time (surprisal: `elapsed_seconds`,",
        "engine after load incl. tokenization and host-side metrics; transformers: its forward loop, synchronized).",
        "MFU = 2 × counted parameters × tokens/s ÷ peak (attention's own FLOPs not counted). GPU memory: peak",
        "of the process as NVML reports it (sampled every 0.2 s), the device's peak above idle, and",
        "transformers' `torch.cuda.max_memory_allocated`.",
        "",
        "| | |", "|---|---|",
    ] + [f"| {k} | {v} |" for k, v in meta.items()] + [
        "",
        "| tool | process s | tok/s (process) | MFU (process) | compute s | tok/s (compute) | MFU (compute) | "
        "GPU MiB (process) | GPU MiB (device − idle) | torch alloc MiB | peak RSS MiB | mean NLL |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ] + table + [
        "",
        f"surprisal ÷ transformers tokens/s: **{o['tokens_per_s_compute'] / p['tokens_per_s_compute']:.2f}×** "
        f"(compute), {o['tokens_per_s_wall'] / p['tokens_per_s_wall']:.2f}× (process). Mean NLL difference "
        f"{d_nll:+.2e} nats ({'within' if agree else '**outside**'} the {a.dtype} tolerance {tol:g}).{chk}",
    ]
    write_doc(a.doc, key, md)
    write_json(os.path.splitext(a.doc)[0] + ".json", key,
               {"meta": meta, "peak_flops": peak, "parameters_total": total, "parameters_counted": counted,
                "nll_tolerance": tol, "nll_agree": agree, "delta_mean_nll": d_nll, "check": check, "rows": rows,
                "model_meta": mmeta, "seconds_total": time.perf_counter() - t_start})
    print("\n".join(md))
    if a.log_dir:  # on the GPU machine only $OUT comes back
        for f in (a.doc, os.path.splitext(a.doc)[0] + ".json"):
            shutil.copy(f, a.log_dir)
    log(f"done in {time.perf_counter() - t_start:.0f} s; wrote {a.doc} and {os.path.splitext(a.doc)[0]}.json")
    if not agree:
        die(f"mean NLL differs by {d_nll:+.3e} nats (tolerance {tol:g}); results were written anyway")


if __name__ == "__main__":
    main()
