#!/usr/bin/env python3
"""CUDA parity (issue #7): do surprisal's numbers on a GPU match the CPU and the transformers
references? Runs the `surprisal` binary only (no Rust toolchain needed on the GPU machine), writes a
section of docs/benchmarks-gpu.md and docs/gpu-parity.json. Runbook: docs/gpu-runbook.md.

1. Fixtures: the 7 tiny random-weight models of crates/models/tests/fixtures (Llama, llama3 RoPE,
   untied, sharded, Mistral, Qwen2, Qwen3), each with transformers' float32 per-token log-probs of
   two texts in reference.json. The texts go into a JSONL file, one document each, and
   `surprisal eval --protocol rolling --window 512` scores every token of each from a BOS prefix in
   one window, exactly reference.json's rows. Per --device and --dtype (f32 and bf16 on the device
   under test, f32 on the CPU as the control) the per-token |Δ| against the reference.
   Limits: f32 max |Δ| <= 1e-4 (the bound of the Rust fixture tests, which run on the CPU only). bf16
   (and f16): the CPU's own bf16 run against the reference measures what bf16 does to this model and
   text; the device's bf16 run must stay within 1.5 x that mean |Δ| and within 0.02 nats in mean NLL.
2. SmolLM2-135M-Instruct Q4_1 GGUF (scripts/fetch_smollm2.sh; on the GPU machine carried, see the
   runbook) on datasets/sample.txt with the default protocol (sliding, window 512, stride 256):
   quantized on the device vs quantized on the CPU; --dequantize f32 on the device vs on the CPU;
   --dequantize bf16 on the device vs f32 on the CPU. Limits: f32 mean |Δ| <= 2e-4 and max <= 5e-3
   (docs/parity.md's transformers limits); quantized |Δ mean| <= 1e-3 (0.1 % PPL, the llama-perplexity
   limit) and mean |Δ| <= 0.01 (the device's quantized matmul need not follow ggml's CPU order);
   bf16 as above. Skipped with a message when the GGUF is not found.

Usage: python3 scripts/gpu/gpu_parity.py [--device cuda:0] [--dtypes f32,bf16] [--part fixtures,smollm2]
       [--smollm2 FILE.gguf] [--max-tokens N] [--threads N] [--doc docs/benchmarks-gpu.md]
       [--log-dir DIR (default $OUT)]
Test on a CPU-only machine: --device cpu --self-test (the CPU stands in for the device; its rows then
compare the CPU with itself). Exit status 1 when a limit is exceeded (after writing the results).
Needs: the surprisal binary ($SURPRISAL_BIN or target/release/surprisal; for CUDA built with
`--features cuda`). Python standard library only.
"""
import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# bench.py and make_fixtures.py live in the sibling folders scripts/bench and scripts/references
for _sibling in ("bench", "references"):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), _sibling))
from bench_gpu import binary_env, gpu_facts, write_doc, write_json  # noqa: E402
from bench import REPO  # noqa: E402

FIXTURES = os.path.join(REPO, "crates", "models", "tests", "fixtures")
FIXTURE_NAMES = ["llama", "llama3_rope", "llama_untied", "llama_sharded", "mistral", "qwen2", "qwen3"]
SAMPLE = os.path.join(REPO, "datasets", "sample.txt")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BEGIN, END = "<!-- gpu_parity.py {}:begin -->", "<!-- gpu_parity.py {}:end -->"
# limits, nats: (max |Δ|, mean |Δ|, |Δ of the means|); None = not limited
F32 = (1e-4, None, None)                   # the Rust fixture tests' bound (they run on the CPU only)
SMOL_F32 = (5e-3, 2e-4, None)              # docs/parity.md's SmolLM2 limits against transformers
SMOL_QUANT = (None, 0.01, 1e-3)            # 0.1 % PPL; the device's quantized matmul need not follow ggml
INFO = (None, None, None)
BF16_SLACK = 1.5  # reduced precision on the device vs f32: mean |Δ| <= 1.5 x the CPU's own (same dtype)
BF16_DELTA_MEAN = 0.02


def die(msg):
    sys.exit(f"gpu_parity.py: {msg}")


def log(msg):
    print(f"[gpu_parity] {msg}", file=sys.stderr, flush=True)


def eval_rows(a, env, work, tag, model, data, device, dtype="f32", extra=()):
    """Runs surprisal eval with per-token rows; returns ({(doc, index): (token_id, nll)}, summary, seconds)."""
    out = os.path.join(work, tag)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [a.surprisal, "eval", "--model", model, "--data", data, "--device", device, "--dtype", dtype,
           "--out", out, "--per-token", "jsonl", "--quiet", *extra]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        die(f"failed (exit {p.returncode}): {shlex.join(cmd)}\n{p.stderr.strip()[-2000:]}")
    rows = {}
    with open(os.path.join(out, "tokens.jsonl")) as f:
        for ln in f:
            t = json.loads(ln)
            rows[(t["doc"], t["index"])] = (t["token_id"], t["nll_nats"])
    summary = json.load(open(os.path.join(out, "summary.json")))
    shutil.rmtree(out, ignore_errors=True)
    return rows, summary, secs


def diff(got, want, limits):
    """Per-token comparison of two {key: (token_id, nll)} maps."""
    if set(got) != set(want):
        return {"error": f"different token sets: {len(got)} vs {len(want)} tokens"}
    ids = [k for k in got if got[k][0] != want[k][0]]
    if ids:
        return {"error": f"{len(ids)} tokens have different ids, first at {sorted(ids)[0]}"}
    d = [got[k][1] - want[k][1] for k in got]
    n = len(d)
    r = {"tokens": n, "mean_nll": sum(v[1] for v in got.values()) / n,
         "ref_mean_nll": sum(v[1] for v in want.values()) / n, "max_abs": max(abs(x) for x in d),
         "mean_abs": sum(abs(x) for x in d) / n}
    r["delta_mean"] = r["mean_nll"] - r["ref_mean_nll"]
    lmax, lmean, ldm = limits
    bad = []
    if lmax is not None and r["max_abs"] > lmax:
        bad.append(f"max |Δ| {r['max_abs']:.2e} > {lmax:g}")
    if lmean is not None and r["mean_abs"] > lmean:
        bad.append(f"mean |Δ| {r['mean_abs']:.2e} > {lmean:g}")
    if ldm is not None and abs(r["delta_mean"]) > ldm:
        bad.append(f"|Δ mean| {abs(r['delta_mean']):.2e} > {ldm:g}")
    r["limits"] = {"max_abs": lmax, "mean_abs": lmean, "delta_mean": ldm}
    r["ok"] = not bad
    r["failed"] = bad
    return r


def reduced_limits(base):
    """Limits for a reduced-precision run on the device against f32: mean |Δ| at most BF16_SLACK x that of
    the same dtype on the CPU (`base`, the measured effect of the dtype itself on this model and text)."""
    return (None, BF16_SLACK * base["mean_abs"], BF16_DELTA_MEAN) if "mean_abs" in base else INFO


def status(r):
    return "ok" if r.get("ok") else f"FAILED {r.get('error') or '; '.join(r['failed'])}"


def fixtures_part(a, env, work):
    """Rows: (model, run, reference, result). Reference = transformers f32 (reference.json)."""
    results = []
    dev = a.device
    for name in FIXTURE_NAMES:
        d = os.path.join(FIXTURES, name)
        ref = json.load(open(os.path.join(d, "reference.json")))
        data = os.path.join(work, f"{name}.jsonl")
        with open(data, "w") as f:
            for t in ref["texts"]:
                f.write(json.dumps({"text": t}) + "\n")
        want = {}
        for doc, (row, lps) in enumerate(zip(ref["rows"], ref["target_logprobs"])):
            if row[0] != 0 or len(lps) != len(row) - 1:
                die(f"{d}/reference.json: rows are expected to start with BOS 0")
            for j, lp in enumerate(lps):
                want[(doc, j)] = (row[j + 1], -lp)
        window = max(512, max(len(r) for r in ref["rows"]))
        runs = {}

        def run(device, dtype):
            key = f"{device} {dtype}"
            if key not in runs:
                runs[key] = eval_rows(a, env, work, f"{name}-{device}-{dtype}", d, data, device, dtype,
                                      ["--protocol", "rolling", "--window", str(window), "--bos", "always"])
            return key

        def add(run_key, limits, ref_key="transformers f32"):
            got = runs[run_key][0]
            r = diff(got, want if ref_key == "transformers f32" else runs[ref_key][0], limits)
            r.update({"model": name, "run": run_key, "reference": ref_key, "seconds": runs[run_key][2],
                      "device_reported": runs[run_key][1].get("device")})
            results.append(r)
            log(f"fixture {name:14s} {run_key:14s} vs {ref_key:17s}: max |Δ| {r.get('max_abs', float('nan')):.2e}, "
                f"mean |Δ| {r.get('mean_abs', float('nan')):.2e} — {status(r)}")
            return r

        add(run("cpu", "f32"), F32)
        if dev != "cpu" or a.self_test:
            add(run(dev, "f32"), F32)
        for dt in a.dtypes:
            if dt == "f32":
                continue
            base = add(run("cpu", dt), INFO)
            if dev != "cpu" or a.self_test:
                add(run(dev, dt), reduced_limits(base))
                add(run(dev, dt), INFO, f"cpu {dt}")
    return results


def find_gguf(arg):
    if arg:
        if not os.path.isfile(arg):
            die(f"--smollm2 {arg}: no such file")
        return arg
    cache = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
    for c in [os.environ.get("SMOLLM2_GGUF"), os.path.join(REPO, ".gpu", GGUF_NAME),
              os.path.join("/tmp", "gpu", GGUF_NAME), os.path.join(cache, "models", GGUF_NAME)]:
        if c and os.path.isfile(c):
            return c
    return None


def smollm2_part(a, env, work, gguf):
    extra = ["--max-tokens", str(a.max_tokens)] if a.max_tokens else []
    runs = {}
    dev = a.device

    def run(device, kind, dtype="f32"):
        tag = f"{device} {kind}" + (f" {dtype}" if kind == "dequantized" else "")
        if tag not in runs:
            rows, summ, secs = eval_rows(a, env, work, tag.replace(" ", "-").replace(":", ""), gguf, SAMPLE, device,
                                         dtype, extra + (["--dequantize"] if kind == "dequantized" else []))
            runs[tag] = (rows, summ, secs)
            log(f"smollm2 {tag:26s}: mean NLL {summ['mean_nll_nats']:.9f}, PPL {summ['perplexity']:.4f}, "
                f"{summ['tokens_scored']} tokens, {secs:.1f} s ({summ.get('dtype')}, {summ.get('device')})")
        return tag

    results = []

    def add(got, want, limits):
        r = diff(runs[got][0], runs[want][0], limits)
        r.update({"run": got, "reference": want, "ppl": runs[got][1]["perplexity"],
                  "ref_ppl": runs[want][1]["perplexity"], "seconds": runs[got][2]})
        results.append(r)
        log(f"smollm2 {got} vs {want}: Δ mean {r.get('delta_mean', float('nan')):+.2e}, mean |Δ| "
            f"{r.get('mean_abs', float('nan')):.2e}, max |Δ| {r.get('max_abs', float('nan')):.2e} — {status(r)}")
        return r

    cpu_q, cpu_f = run("cpu", "quantized"), run("cpu", "dequantized")
    if dev != "cpu" or a.self_test:
        add(run(dev, "quantized"), cpu_q, SMOL_QUANT)
        add(run(dev, "dequantized"), cpu_f, SMOL_F32)
    for dt in a.dtypes:
        if dt == "f32":
            continue
        base = add(run("cpu", "dequantized", dt), cpu_f, INFO)
        if dev != "cpu" or a.self_test:
            add(run(dev, "dequantized", dt), cpu_f, reduced_limits(base))
            add(run(dev, "dequantized", dt), run("cpu", "dequantized", dt), INFO)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--dtypes", default="f32,bf16", help="dtypes to run on the device under test")
    ap.add_argument("--part", default="fixtures,smollm2")
    ap.add_argument("--smollm2", default=None, help="the Q4_1 GGUF (default: $SMOLLM2_GGUF, .gpu/, /tmp/gpu/, cache)")
    ap.add_argument("--max-tokens", type=int, default=None, help="SmolLM2: score at most N tokens")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--self-test", action="store_true",
                    help="with --device cpu: also make the device-vs-CPU rows (then trivially equal), "
                         "to test this script")
    ap.add_argument("--doc", default=os.path.join(REPO, "docs", "benchmarks-gpu.md"))
    ap.add_argument("--log-dir", default=os.environ.get("OUT"))
    a = ap.parse_args()
    t0 = time.perf_counter()
    a.dtypes = [d for d in a.dtypes.split(",") if d]
    parts = a.part.split(",")
    a.surprisal = os.path.abspath(os.environ.get("SURPRISAL_BIN", os.path.join(REPO, "target", "release", "surprisal")))
    if not os.access(a.surprisal, os.X_OK):
        die(f"{a.surprisal} missing: cargo build --release -p surprisal-cli --features cuda (or set SURPRISAL_BIN)")
    cuda = a.device.startswith("cuda")
    facts = {}
    if cuda:
        if not shutil.which("nvidia-smi"):
            die(f"--device {a.device}: nvidia-smi not found: no NVIDIA driver on this machine")
        facts = gpu_facts(int(a.device.split(":")[1]) if ":" in a.device else 0)
    env = binary_env(a.surprisal, cuda)
    work = tempfile.mkdtemp(prefix="gpu-parity-")
    fx = fixtures_part(a, env, work) if "fixtures" in parts else []
    sm, gguf = [], None
    if "smollm2" in parts:
        gguf = find_gguf(a.smollm2)
        if gguf:
            sm = smollm2_part(a, env, work, gguf)
        else:
            log(f"SmolLM2 skipped: {GGUF_NAME} not found ($SMOLLM2_GGUF, .gpu/, /tmp/gpu/, the cache); "
                "see docs/gpu-runbook.md for carrying it")
    shutil.rmtree(work, ignore_errors=True)

    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        except Exception as e:  # noqa: BLE001
            return f"? ({e})"
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": a.device, **({"gpu": facts["gpu"], "driver": facts["driver"],
                                     "driver CUDA": facts["driver_cuda"]} if cuda else {}),
            "surprisal": ver([a.surprisal, "--version"]) + " (git " + ver(["git", "-C", REPO, "rev-parse", "--short",
                                                                            "HEAD"]) + ")",
            "command": "python3 scripts/gpu/gpu_parity.py " + shlex.join(sys.argv[1:])}
    failed = [r for r in fx + sm if not r.get("ok")]
    md = ["Generated by `scripts/gpu/gpu_parity.py` (re-run it; do not edit). Per-token NLL differences, nats.",
          "Fixtures: against transformers' float32 log-probs (reference.json), `--protocol rolling --window 512`;",
          "SmolLM2: `datasets/sample.txt`, default protocol, against the same model on the CPU.", "",
          "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in meta.items()] + [""]
    def lim(r):
        return ", ".join("—" if v is None else f"{v:.3g}" for v in r["limits"].values())

    def verdict(r):
        if all(v is None for v in r["limits"].values()):
            return "(no limit)"
        return "ok" if r["ok"] else "**failed**: " + "; ".join(r["failed"])
    if fx:
        md += ["| fixture | run | against | tokens | max abs Δ | mean abs Δ | Δ mean | limits (max, mean, Δ mean) | |",
               "|---|---|---|---:|---:|---:|---:|---|---|"]
        for r in fx:
            if "error" in r:
                md.append(f"| {r['model']} | {r['run']} | {r['reference']} | | | | | | **{r['error']}** |")
                continue
            md.append(f"| {r['model']} | {r['run']} | {r['reference']} | {r['tokens']} | {r['max_abs']:.2e} | "
                      f"{r['mean_abs']:.2e} | {r['delta_mean']:+.2e} | {lim(r)} | {verdict(r)} |")
        md.append("")
    if sm:
        first = f", first {a.max_tokens} tokens" if a.max_tokens else ""
        md += [f"SmolLM2: `{os.path.basename(gguf)}`{first}.",
               "", "| run | against | tokens | PPL | against PPL | Δ mean | mean abs Δ | max abs Δ | limits | |",
               "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in sm:
            if "error" in r:
                md.append(f"| {r['run']} | {r['reference']} | | | | | | | | **{r['error']}** |")
                continue
            md.append(f"| {r['run']} | {r['reference']} | {r['tokens']} | {r['ppl']:.4f} | {r['ref_ppl']:.4f} | "
                      f"{r['delta_mean']:+.2e} | {r['mean_abs']:.2e} | {r['max_abs']:.2e} | {lim(r)} | {verdict(r)} |")
        md.append("")
    elif "smollm2" in parts:
        md += ["SmolLM2: not run (GGUF not found on this machine).", ""]
    checked = [r for r in fx + sm if "error" in r or any(v is not None for v in r["limits"].values())]
    md.append(f"{len(checked) - len(failed)} passed, {len(failed)} failed")
    key = a.device.split(":")[0]
    write_doc(a.doc, key, md, BEGIN, END)
    jpath = os.path.join(os.path.dirname(os.path.abspath(a.doc)), "gpu-parity.json")
    write_json(jpath, key, {"meta": meta, "fixtures": fx, "smollm2": sm})
    if a.log_dir:
        for f in (a.doc, jpath):
            shutil.copy(f, a.log_dir)
    print("\n".join(md))
    log(f"done in {time.perf_counter() - t0:.0f} s")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
