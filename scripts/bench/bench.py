#!/usr/bin/env python3
"""Throughput benchmark: surprisal against llama.cpp's llama-perplexity and transformers/PyTorch on the
same model, text, protocol and thread count, in one invocation. Writes docs/benchmarks.md (+ .json).

Protocol everywhere: llama.cpp's `chunks` — K disjoint chunks of W tokens of WikiText-2 raw test, second
half of each chunk scored. Cases:

  quant    SmolLM2-135M-Instruct Q4_1 GGUF, quantized: surprisal eval vs llama-perplexity (same file)
  f32      SmolLM2 f32: surprisal eval --dequantize (Q4_1 GGUF dequantized to f32) vs transformers f32
           (HF dir from scripts/references/make_smollm2_f32.py) vs llama-perplexity on the f32 GGUF made by llama.cpp's
           convert_hf_to_gguf.py (same script)
  compare  Q4_1 vs its f32 self: surprisal compare (one pass, both models) vs llama-perplexity's two
           passes (--kl-divergence-base from the f32 GGUF, then --kl-divergence with the Q4_1 GGUF);
           time and disk written (llama.cpp's base file; our --out directory)
  types    per GGUF quantization type (--types, default Q4_K_M,Q5_K_M,Q6_K,Q8_0,Q4_0,Q5_1): SmolLM2 requantized by
           llama.cpp's llama-quantize from the f32 GGUF above, quantized: surprisal eval vs llama-perplexity
           --flash-attn off (the order our exact kernels follow); PPL of both and their relative difference, the
           file's tensor types (summary.json dtype_tensors), and each tool's parallel efficiency
           (user+sys CPU seconds / wall / threads)

Each tool runs --repeats times (round-robin, so drift hits every tool alike) under /usr/bin/time -v.
Tokens/s = K*W tokens evaluated / wall seconds of the whole process (loading and tokenizing included),
median over repeats; peak RSS = max over repeats of "Maximum resident set size".

Usage: python3 scripts/bench/bench.py [--chunks 40] [--repeats 3] [--threads 2] [--cases quant,f32,compare,types]
       [--types Q4_K_M,Q5_K_M,...] [--out docs/benchmarks.md]
Needs: target/release/surprisal (cargo build --release -p surprisal-cli; or $SURPRISAL_BIN), scripts/build_llama_cpp.sh,
       scripts/fetch_smollm2.sh, scripts/references/make_smollm2_f32.py (f32, compare, types), the reference venv (/work/.venv-ref or
       $PYTHON) with torch + transformers.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
DATA = os.environ.get("WIKITEXT", os.path.join(REPO, "..", "shared", "datasets", "wikitext-2-raw-v1.test.raw"))
PY = os.environ.get("PYTHON", "/work/.venv-ref/bin/python" if os.path.exists("/work/.venv-ref/bin/python")
                    else sys.executable)
WINDOW = 512
CPU_S = [0.0]
GEN_BEGIN, GEN_END = "<!-- bench.py:begin -->", "<!-- bench.py:end -->"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout.strip()


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v; returns (wall_s, peak_rss_bytes, stdout, stderr); the process's
    user+sys CPU seconds of the last call are left in CPU_S[0]."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name] + cmd, capture_output=True, text=True,
                           env={**os.environ, **(env or {})})
        t = tf.read()
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) * 1024
    CPU_S[0] = sum(float(re.search(rf"{k} time \(seconds\): ([0-9.]+)", t).group(1)) for k in ("User", "System"))
    return secs, rss, p.stdout, p.stderr


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def final_ppl(text):
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", text)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--cases", default="quant,f32,compare")
    ap.add_argument("--types", default="Q4_K_M,Q5_K_M,Q6_K,Q8_0,Q4_0,Q5_1")
    ap.add_argument("--out", default=os.path.join(REPO, "docs", "benchmarks.md"))
    a = ap.parse_args()
    cases = a.cases.split(",")
    k, t, bs = a.chunks, a.threads, a.batch_size

    surprisal = os.environ.get("SURPRISAL_BIN", os.path.join(REPO, "target", "release", "surprisal"))
    if not os.access(surprisal, os.X_OK):
        sys.exit(f"{surprisal} missing: cargo build --release -p surprisal-cli")
    llama = sh(["bash", os.path.join(REPO, "scripts", "build_llama_cpp.sh")])
    q41 = sh(["bash", os.path.join(REPO, "scripts", "fetch_smollm2.sh")])
    models = os.path.join(CACHE, "models")
    f32_hf = os.path.join(models, "SmolLM2-135M-Instruct-f32-hf")
    f32_gguf = os.path.join(models, "SmolLM2-135M-Instruct-f32.gguf")
    if set(cases) & {"f32", "compare", "types"} and not (os.path.isdir(f32_hf) and os.path.exists(f32_gguf)):
        subprocess.run([PY, os.path.join(REPO, "scripts", "references", "make_smollm2_f32.py")], check=True)
    quantize = os.path.join(os.path.dirname(llama), "llama-quantize")

    def requantized(qtype):
        """SmolLM2 requantized to qtype by llama-quantize from the f32 GGUF (made once, in the cache)."""
        path = os.path.join(models, f"SmolLM2-135M-Instruct-{qtype}.gguf")
        if not os.path.exists(path):
            tmp = path + ".part"
            sh([quantize, f32_gguf, tmp, qtype, str(t)])
            os.replace(tmp, path)
        return path
    work = tempfile.mkdtemp(prefix="surprisal-bench-")
    env = {"RAYON_NUM_THREADS": str(t), "OMP_NUM_THREADS": str(t)}
    ours_common = ["--data", DATA, "--protocol", "chunks", "--window", str(WINDOW), "--max-chunks", str(k),
                   "--batch-size", str(bs), "--threads", str(t), "--quiet"]
    llama_common = ["-f", DATA, "-c", str(WINDOW), "--chunks", str(k), "-t", str(t)]

    def ours_eval(extra):
        def run(i):
            out = os.path.join(work, f"eval-{i}")
            shutil.rmtree(out, ignore_errors=True)
            s, rss, _, _ = timed([surprisal, "eval"] + extra + ours_common + ["--out", out, "--per-token", "none"],
                                 env)
            summ = json.load(open(os.path.join(out, "summary.json")))
            return {"wall_s": s, "rss": rss, "ppl": summ["perplexity"], "disk": du(out), "cpu_s": CPU_S[0],
                    "dtype": summ.get("dtype"), "dtype_tensors": summ.get("dtype_tensors"),
                    "host_cpu": summ.get("host_cpu")}
        return run

    def llama_ppl(model, extra=()):
        def run(i):
            s, rss, so, se = timed([llama, "-m", model] + llama_common + list(extra), env)
            return {"wall_s": s, "rss": rss, "ppl": final_ppl(so + se), "disk": 0, "cpu_s": CPU_S[0]}
        return run

    def hf_eval(i):
        s, rss, so, _ = timed([PY, os.path.join(REPO, "scripts", "bench_transformers.py"), "--model", f32_hf,
                               "--data", DATA, "--window", str(WINDOW), "--chunks", str(k), "--batch-size", str(bs),
                               "--threads", str(t)], env)
        r = json.loads(so.splitlines()[-1])
        return {"wall_s": s, "rss": rss, "ppl": r["perplexity"], "disk": 0, "versions": r}

    def ours_compare(i):
        out = os.path.join(work, f"compare-{i}")
        shutil.rmtree(out, ignore_errors=True)
        s, rss, _, _ = timed([surprisal, "compare", "--model", q41, "--reference", q41, "--reference-dequantize"]
                             + ours_common + ["--out", out, "--per-token", "none"], env)
        summ = json.load(open(os.path.join(out, "summary.json")))
        return {"wall_s": s, "rss": rss, "ppl": summ["model"]["perplexity"] if "perplexity" in summ.get("model", {})
                else None, "disk": du(out), "mean_kl_nats": summ["mean_kl_nats"],
                "top1_agreement": summ["top1_agreement"], "perplexity_ratio": summ["perplexity_ratio"]}

    def llama_kld(i):
        base = os.path.join(work, f"base-{i}.kld")
        s1, r1, so1, se1 = timed([llama, "-m", f32_gguf] + llama_common + ["--kl-divergence-base", base], env)
        size = os.path.getsize(base)
        s2, r2, so2, se2 = timed([llama, "-m", q41] + llama_common + ["--kl-divergence-base", base,
                                                                      "--kl-divergence"], env)
        os.remove(base)
        txt = so2 + se2
        m = re.search(r"Mean\s+KLD:\s+([0-9.]+)", txt)
        same = re.search(r"Same top p:\s+([0-9.]+)", txt)
        return {"wall_s": s1 + s2, "rss": max(r1, r2), "ppl": final_ppl(so1 + se1), "disk": size,
                "mean_kl_nats": float(m.group(1)) if m else None,
                "top1_agreement": float(same.group(1)) / 100 if same else None}

    plan = []
    if "quant" in cases:
        plan.append(("quant", "Q4_1 GGUF, quantized", [
            ("surprisal eval", ours_eval(["--model", q41])),
            ("llama-perplexity", llama_ppl(q41))]))
    if "f32" in cases:
        plan.append(("f32", "f32 (SmolLM2 dequantized)", [
            ("surprisal eval --dequantize", ours_eval(["--model", q41, "--dequantize"])),
            ("transformers f32", hf_eval),
            ("llama-perplexity (f32 GGUF)", llama_ppl(f32_gguf))]))
    if "compare" in cases:
        plan.append(("compare", "KL: Q4_1 vs f32", [
            ("surprisal compare", ours_compare),
            ("llama-perplexity KLD (2 passes)", llama_kld)]))

    if "types" in cases:
        for qtype in a.types.split(","):
            path = requantized(qtype)
            plan.append((f"type-{qtype}", f"{qtype} GGUF (llama-quantize of the f32 GGUF)", [
                ("surprisal eval", ours_eval(["--model", path])),
                ("llama-perplexity -fa off", llama_ppl(path, ["-fa", "off"]))]))

    results = {}
    for case, _, tools in plan:
        for rep in range(a.repeats):
            for name, fn in tools:
                r = fn(rep)
                results.setdefault((case, name), []).append(r)
                print(f"[{case}] {name} #{rep + 1}: {r['wall_s']:.1f} s, {k * WINDOW / r['wall_s']:.1f} tok/s, "
                      f"peak RSS {r['rss'] / 2**20:.0f} MiB, PPL {r['ppl']}", file=sys.stderr, flush=True)
    shutil.rmtree(work, ignore_errors=True)

    rows, tables = [], {}
    for case, title, tools in plan:
        table = tables.setdefault(case, [])
        ours = tools[0][0]
        ours_tps = statistics.median(k * WINDOW / r["wall_s"] for r in results[(case, ours)])
        for name, _ in tools:
            rs = results[(case, name)]
            tps = statistics.median(k * WINDOW / r["wall_s"] for r in rs)
            row = {"case": case, "tool": name, "tokens": k * WINDOW, "repeats": len(rs),
                   "median_wall_s": statistics.median(r["wall_s"] for r in rs), "median_tokens_per_s": tps,
                   "peak_rss_mib": max(r["rss"] for r in rs) / 2**20, "ppl": rs[0]["ppl"],
                   "disk_written_bytes": max(r["disk"] for r in rs),
                   "surprisal_over_this": ours_tps / tps}
            for key in ("mean_kl_nats", "top1_agreement", "perplexity_ratio", "dtype", "dtype_tensors",
                        "host_cpu"):
                if key in rs[0]:
                    row[key] = rs[0][key]
            if all("cpu_s" in r for r in rs):
                row["parallel_efficiency"] = statistics.median(r["cpu_s"] / r["wall_s"] / t for r in rs)
            rows.append(row)
            ratio = "—" if name == ours else f"**{ours_tps / tps:.2f}×**"
            extra = ""
            if "mean_kl_nats" in row and row["mean_kl_nats"] is not None:
                extra = f"KL {row['mean_kl_nats']:.6f}, top-1 {row['top1_agreement']:.4f}"
            if case.startswith("type-"):
                if name == ours:
                    extra = f"{row.get('dtype')}: " + ", ".join(f"{k} ×{v}" for k, v in
                                                                (row.get("dtype_tensors") or {}).items())
                else:
                    p0 = results[(case, ours)][0]["ppl"]
                    extra = f"PPL rel. Δ (ours − this) / this: {(p0 - row['ppl']) / row['ppl']:+.2e}"
                if "parallel_efficiency" in row:
                    extra += f"; parallel efficiency {row['parallel_efficiency']:.2f}"
            ppl = f"{row['ppl']:.4f}" if row["ppl"] else "—"
            table.append(f"| {title} | {name} | {row['median_wall_s']:.1f} | {tps:.1f} | {ratio} | "
                         f"{row['peak_rss_mib']:.0f} | {row['disk_written_bytes'] / 2**20:.1f} | {ppl} | {extra} |")

    def ver(cmd):
        try:
            return sh(cmd)
        except Exception as e:  # noqa: BLE001
            return f"? ({e})"
    llama_ver = subprocess.run([llama, "--version"], capture_output=True, text=True)
    llama_ver = (llama_ver.stdout + llama_ver.stderr).strip().splitlines()[-1]
    hf = next((r["versions"] for rs in results.values() for r in rs if "versions" in r), {})
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {os.cpu_count()} cores visible, {platform.platform()}",
        "threads": t, "chunks": k, "window": WINDOW, "batch_size": bs, "repeats": a.repeats,
        "surprisal": ver([surprisal, "--version"]) + " (git " + ver(["git", "-C", REPO, "rev-parse", "--short",
                                                                       "HEAD"]) + ")",
        "llama.cpp": llama_ver + " (vendored in llama-cpp-python 0.3.36)",
        "torch": hf.get("torch"), "transformers": hf.get("transformers"), "data": os.path.basename(DATA),
    }
    def section(case):
        return [
            GEN_BEGIN.replace("bench.py", f"bench.py {case}"),
            "Generated by `python3 scripts/bench/bench.py` — do not edit by hand; re-run it. Every tool runs the same",
            f"work: llama.cpp's `chunks` protocol, {k} chunks × {WINDOW} tokens of WikiText-2 raw test, second half",
            f"of each chunk scored, {t} threads, batches of {bs} chunks where the tool has a batch option.",
            "Tokens/s = tokens evaluated ÷ wall time of the whole process (loading and tokenization included),",
            f"median of {a.repeats} round-robin repeats; ratio = surprisal's tokens/s ÷ that tool's; peak RSS from",
            "`/usr/bin/time -v`; disk = bytes the run wrote (llama.cpp's KLD base file; our `--out` directory).",
            "",
            "| | |", "|---|---|",
        ] + [f"| {key} | {v} |" for key, v in meta.items()] + [
            "",
            "| case | tool | wall s | tokens/s | surprisal ÷ this | peak RSS MiB | disk MiB | PPL | |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ] + tables[case] + ["", GEN_END.replace("bench.py", f"bench.py {case}")]

    def write_section(name, case_rows):
        """Replaces the generated section `name` of a.out (appended if new; the hand-written rest of the
        document is kept) and writes its rows to <out>-<name>.json."""
        md = section(name)
        begin, end = md[0], md[-1]
        doc = open(a.out).read() if os.path.exists(a.out) else "# Benchmarks\n"
        if begin not in doc or end not in doc:
            doc = doc.rstrip("\n") + "\n\n" + begin + "\n" + end + "\n"
        head, rest = doc.split(begin, 1)
        tail = rest.split(end, 1)[1]
        with open(a.out, "w") as f:
            f.write(head + "\n".join(md) + tail)
        with open(os.path.splitext(a.out)[0] + f"-{name}.json", "w") as f:
            json.dump({"meta": meta, "rows": case_rows}, f, indent=1)
        print("\n".join(md))

    # one generated section (and JSON file) per case, so cases can be run and re-run separately;
    # the per-type cases share one section, `types`
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    types = [c for c in tables if c.startswith("type-")]
    for case in [c for c in tables if c not in types]:
        write_section(case, [r for r in rows if r["case"] == case])
    if types:
        tables["types"] = [line for c in types for line in tables[c]]
        write_section("types", [r for r in rows if r["case"] in types])


if __name__ == "__main__":
    main()
