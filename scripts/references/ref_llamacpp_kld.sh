#!/usr/bin/env bash
# llama.cpp's two-pass KL divergence for SmolLM2-135M-Instruct, Q4_1 vs its exact f32 dequantization, on the
# WikiText-2 raw test file, -c 512, 40 chunks, -t 2 (default batch: -b 2048 -> n_seq 4, -ub 512, the same
# settings as scripts/references/ref_wikitext_peers.sh):
#   pass 1: llama-perplexity -m <f32.gguf>  -f DATA -c 512 --chunks 40 -t 2 --kl-divergence-base BASE
#           (perplexity of the base model; writes the base log-probs, uint16-quantized, to BASE)
#   pass 2: llama-perplexity -m <Q4_1.gguf> -f DATA -c 512 --chunks 40 -t 2 --kl-divergence-base BASE --kl-divergence
# The f32 GGUF comes from scripts/references/make_smollm2_f32.py; BASE stays outside the repository (default
# <cache>/kld/, about 1 GB; kept for scripts/references/kld_uint16_effect.py, delete it when done).
# Parsed numbers, commands, versions, file sizes and the wall time / peak RSS of each pass
# -> crates/cli/tests/data/llamacpp_kld_c512_chunks40.json
# Usage: bash scripts/references/ref_llamacpp_kld.sh
# Env: PYTHON, WIKITEXT, SURPRISAL_CACHE, BASE_GGUF, GGUF, KLD_BASE (path of the base file), CHUNKS (40), CTX (512)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(dirname "$(dirname "$here")")"
PY="${PYTHON:-/work/.venv-ref/bin/python}"
DATA="${WIKITEXT:-/work/shared/datasets/wikitext-2-raw-v1.test.raw}"
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
BASE_GGUF="${BASE_GGUF:-$cache/models/SmolLM2-135M-Instruct-f32.gguf}"
GGUF="${GGUF:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
CHUNKS="${CHUNKS:-40}"; CTX="${CTX:-512}"
KLD_BASE="${KLD_BASE:-$cache/kld/SmolLM2-135M-Instruct-f32.wikitext2-test.c${CTX}.chunks${CHUNKS}.kld}"
out="$repo/crates/cli/tests/data/llamacpp_kld_c${CTX}_chunks${CHUNKS}.json"

[ -f "$BASE_GGUF" ] || "$PY" "$here/make_smollm2_f32.py" >&2
bin="$(bash "$repo/scripts/build_llama_cpp.sh")"
mkdir -p "$(dirname "$KLD_BASE")"
logs="$(mktemp -d)"; trap 'rm -rf "$logs"' EXIT

common=(-f "$DATA" -c "$CTX" --chunks "$CHUNKS" -t 2)
cmd1=("$bin" -m "$BASE_GGUF" "${common[@]}" --kl-divergence-base "$KLD_BASE")
cmd2=("$bin" -m "$GGUF" "${common[@]}" --kl-divergence-base "$KLD_BASE" --kl-divergence)
echo "pass 1: ${cmd1[*]}" >&2
/usr/bin/time -v -o "$logs/time1.txt" nice -n 5 "${cmd1[@]}" >"$logs/stdout1.txt" 2>"$logs/stderr1.txt"
echo "pass 2: ${cmd2[*]}" >&2
/usr/bin/time -v -o "$logs/time2.txt" nice -n 5 "${cmd2[@]}" >"$logs/stdout2.txt" 2>"$logs/stderr2.txt"

LLAMA_BIN="$bin" GGUF="$GGUF" BASE_GGUF="$BASE_GGUF" DATA="$DATA" KLD_BASE="$KLD_BASE" TMPD="$logs" OUT="$out" \
  CACHE="$cache" CMD1="${cmd1[*]}" CMD2="${cmd2[*]}" "$PY" - <<'PY'
import hashlib, json, math, os, re, subprocess, sys, platform, time
E = os.environ
tmp = E["TMPD"]
rd = lambda n: open(os.path.join(tmp, n), encoding="utf-8", errors="replace").read()
log1 = rd("stderr1.txt") + rd("stdout1.txt")
log2 = rd("stderr2.txt") + rd("stdout2.txt")

def gnu_time(name):
    t = rd(name)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
    parts = [float(p) for p in wall.split(":")]
    secs = parts[-1] + 60 * parts[-2] + (3600 * parts[-3] if len(parts) == 3 else 0)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    user = float(re.search(r"User time \(seconds\): (\S+)", t).group(1))
    sysm = float(re.search(r"System time \(seconds\): (\S+)", t).group(1))
    return {"wall_seconds": secs, "user_seconds": user, "system_seconds": sysm, "max_rss_kbytes": rss}

def f(pat, s, n=1, conv=float):
    m = re.search(pat, s)
    if not m:
        sys.exit(f"pattern not found: {pat}")
    return tuple(conv(m.group(i + 1)) for i in range(n)) if n > 1 else conv(m.group(1))

NUM = r"(-?[0-9.]+(?:e[-+]?\d+)?)"
PM = NUM + r"\s*±\s*" + NUM
res1_ppl = f(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log1, 2)
st = {}
st["mean_ppl_q"] = f(r"Mean PPL\(Q\)\s*:\s*" + PM, log2, 2)
st["mean_ppl_base"] = f(r"Mean PPL\(base\)\s*:\s*" + PM, log2, 2)
st["cor_ln_ppl_percent"] = f(r"Cor\(ln\(PPL\(Q\)\), ln\(PPL\(base\)\)\):\s*" + NUM + "%", log2)
st["mean_ln_ppl_ratio"] = f(r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*" + PM, log2, 2)
st["mean_ppl_ratio"] = f(r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*" + PM, log2, 2)
st["mean_ppl_diff"] = f(r"Mean PPL\(Q\)-PPL\(base\)\s*:\s*" + PM, log2, 2)
st["mean_kld"] = f(r"Mean\s+KLD:\s*" + PM, log2, 2)
kld_pct = {}
for label, key in [("Maximum", "max"), ("99.9%", "p99.9"), ("99.0%", "p99"), ("95.0%", "p95"), ("90.0%", "p90"),
                   ("Median ", "median"), ("10.0%", "p10"), (" 5.0%", "p5"), (" 1.0%", "p1"), (" 0.1%", "p0.1"),
                   ("Minimum", "min")]:
    kld_pct[key] = f(r"\n" + re.escape(label) + r"\s*KLD:\s*" + NUM, log2)
dp = {}
for label, key in [("Mean", "mean"), ("Maximum", "max"), ("99.9%", "p99.9"), ("99.0%", "p99"), ("95.0%", "p95"),
                   ("90.0%", "p90"), ("75.0%", "p75"), ("Median ", "median"), ("25.0%", "p25"), ("10.0%", "p10"),
                   (" 5.0%", "p5"), (" 1.0%", "p1"), (" 0.1%", "p0.1"), ("Minimum", "min")]:
    dp[key] = f(r"\n" + re.escape(label) + r"\s*Δp:\s*" + NUM, log2)
st["rms_dp_percent"] = f(r"RMS Δp\s*:\s*" + PM, log2, 2)
st["same_top_p_percent"] = f(r"Same top p:\s*" + PM, log2, 2)
rows = re.findall(r"^\s*(\d+)\s+" + PM + r"\s+" + PM + r"\s+" + PM + r"\s+" + PM + r"\s*%\s+" + PM + r"\s*%\s*$", log2, re.M)
per_chunk = [{"chunk": int(r[0]), "ppl_q_running": float(r[1]), "ln_ppl_ratio_running": float(r[3]),
              "kld_running": float(r[5]), "rms_dp_percent_running": float(r[7]), "same_top_p_percent_running": float(r[9])}
             for r in rows]
hdr1 = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log1)
hdr2 = re.search(r"computing over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", log2)
binp = E["LLAMA_BIN"]
vo = subprocess.run([binp, "--version"], capture_output=True, text=True)
ver = re.search(r"version: (\S+) \(build (\d+), commit (\w+)\)", vo.stderr + vo.stdout)
vend = os.path.join(E["CACHE"], "llama.cpp", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
commit = subprocess.run(["git", "-C", vend, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
sysinfo = re.search(r"system_info: (.*)", log2)

def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for c in iter(lambda: fh.read(1 << 20), b""): h.update(c)
    return h.hexdigest()

n_chunks, n_ctx = int(hdr2.group(1)), int(hdr2.group(2))
first = n_ctx // 2
scored = n_chunks * (n_ctx - 1 - first)
base_file = E["KLD_BASE"]
res = {
    "source": "llama.cpp llama-perplexity two-pass KL divergence (tools/perplexity), CPU",
    "script": "scripts/references/ref_llamacpp_kld.sh",
    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "versions": {"llama_cpp_version": ver.group(1) if ver else None, "llama_cpp_build": int(ver.group(2)) if ver else None,
                 "llama_cpp_commit": commit, "llama_cpp_python_sdist": "0.3.36",
                 "llama_cpp_system_info": sysinfo.group(1).strip() if sysinfo else None,
                 "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()},
    "command_pass1_base": E["CMD1"].replace(E["LLAMA_BIN"], "llama-perplexity"),
    "command_pass2_kld": E["CMD2"].replace(E["LLAMA_BIN"], "llama-perplexity"),
    "base_model_file": os.path.basename(E["BASE_GGUF"]),
    "base_model_bytes": os.path.getsize(E["BASE_GGUF"]),
    "base_model_sha256": sha(E["BASE_GGUF"]),
    "model_file": os.path.basename(E["GGUF"]),
    "model_bytes": os.path.getsize(E["GGUF"]),
    "model_sha256": sha(E["GGUF"]),
    "data_path": E["DATA"],
    "data_sha256": sha(E["DATA"]),
    "kld_base_file": base_file,
    "kld_base_file_bytes": os.path.getsize(base_file),
    "kld_base_file_format": "'_logits_', u32 n_ctx, i32 n_vocab, i32 n_chunk, i32 tokens[n_ctx*n_chunk], then per chunk and scored "
                            "position nv=2*((n_vocab+1)/2)+4 uint16: f32 scale, f32 min_log_prob, 2 pad, then n_vocab uint16 codes "
                            "q = round((logit - min_logit)/scale), min_logit = max(min logit, max_logit - 16), scale = (max_logit - min_logit)/65535; "
                            "log p_base = scale*q + min_log_prob",
    "n_chunks": n_chunks, "n_ctx": n_ctx, "n_batch": int(hdr2.group(3)), "n_seq": int(hdr2.group(4)),
    "n_seq_pass1": int(hdr1.group(4)) if hdr1 else None,
    "scoring": f"chunk k = tokens[k*{n_ctx}:(k+1)*{n_ctx}], fresh KV cache, no BOS (add_bos_token=false); positions {first}..{n_ctx-2} "
               f"predict the next token ({n_ctx-1-first} per chunk)",
    "tokens_scored": scored,
    "pass1_base_ppl": res1_ppl[0], "pass1_base_ppl_pm": res1_ppl[1],
    "ppl_q": st["mean_ppl_q"][0], "ppl_q_pm": st["mean_ppl_q"][1],
    "ppl_base": st["mean_ppl_base"][0], "ppl_base_pm": st["mean_ppl_base"][1],
    "cor_ln_ppl_percent": st["cor_ln_ppl_percent"],
    "ln_ppl_ratio": st["mean_ln_ppl_ratio"][0], "ln_ppl_ratio_pm": st["mean_ln_ppl_ratio"][1],
    "ppl_ratio": st["mean_ppl_ratio"][0], "ppl_ratio_pm": st["mean_ppl_ratio"][1],
    "ppl_diff": st["mean_ppl_diff"][0], "ppl_diff_pm": st["mean_ppl_diff"][1],
    "mean_kld_nats": st["mean_kld"][0], "mean_kld_nats_pm": st["mean_kld"][1],
    "kld_percentiles_nats": kld_pct,
    "delta_p_percent": dp,
    "rms_delta_p_percent": st["rms_dp_percent"][0], "rms_delta_p_percent_pm": st["rms_dp_percent"][1],
    "same_top_p_percent": st["same_top_p_percent"][0], "same_top_p_percent_pm": st["same_top_p_percent"][1],
    "top1_agreement": st["same_top_p_percent"][0] / 100.0,
    "note_ppl": "PPL(base) in pass 2 is recomputed from the uint16 base log-probs; pass1_base_ppl is from the f32 logits",
    "pass1_time": gnu_time("time1.txt"),
    "pass2_time": gnu_time("time2.txt"),
    "per_chunk_running": per_chunk,
    "log_pass1": log1,
    "log_pass2": log2,
}
assert len(per_chunk) == math.ceil(n_chunks / 1) or len(per_chunk) > 0, len(per_chunk)
json.dump(res, open(E["OUT"], "w"), indent=1, ensure_ascii=False)
open(E["OUT"], "a").write("\n")
print(f"llama.cpp KLD: mean {res['mean_kld_nats']} ± {res['mean_kld_nats_pm']}, same top {res['same_top_p_percent']}%, "
      f"PPL(Q) {res['ppl_q']} PPL(base) {res['ppl_base']} (pass 1 {res['pass1_base_ppl']}), ln ratio {res['ln_ppl_ratio']}; "
      f"pass times {res['pass1_time']['wall_seconds']}s / {res['pass2_time']['wall_seconds']}s -> {E['OUT']}", file=sys.stderr)
PY
