#!/usr/bin/env bash
# llama.cpp reference for Gemma-3 270M (Q4_K_M GGUF, quantized as-is) on WikiText-2 raw test:
#   llama-perplexity -m gemma-3-270m-q4_k_m.gguf -f wikitext-2-raw-v1.test.raw -c 512 --chunks $CHUNKS -t 2
#     --ppl-output-type 1 --flash-attn off     (the graph surprisal reproduces: f32 K/V)
#   and the same with --flash-attn on          (f16 K/V and f16-rounded Q: for the record)
# (llama.cpp built by scripts/build_llama_cpp.sh; model from scripts/fetch_gemma3.sh.) Per-chunk mean NLLs
# are recovered from the 6-decimal running mean NLL that --ppl-output-type 1 prints.
# Gemma's GGUF says add_bos_token = true: llama-perplexity tokenizes [BOS] + text and puts BOS in the first
# slot of every chunk (surprisal's --protocol chunks --bos auto does the same).
# Output: crates/runner/tests/data/peers/gemma3_llamacpp_wikitext_c512_chunks$CHUNKS.json
# Usage: bash scripts/references/ref_gemma3_llamacpp.sh    (env: CHUNKS (default 16), PYTHON, WIKITEXT)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(dirname "$(dirname "$here")")"
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
PY="${PYTHON:-$cache/venv-ref/bin/python}"
DATA="${WIKITEXT:-$repo/../shared/datasets/wikitext-2-raw-v1.test.raw}"
DATA="$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA")"
CHUNKS="${CHUNKS:-16}"
GGUF="$(bash "$repo/scripts/fetch_gemma3.sh")"
bin="$(bash "$repo/scripts/build_llama_cpp.sh")"
out="$repo/crates/runner/tests/data/peers/gemma3_llamacpp_wikitext_c512_chunks$CHUNKS.json"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
cmd=("$bin" -m "$GGUF" -f "$DATA" -c 512 --chunks "$CHUNKS" -t 2 --ppl-output-type 1)
for fa in off on; do
  echo "running: ${cmd[*]} --flash-attn $fa" >&2
  "${cmd[@]}" --flash-attn "$fa" >"$tmp/stdout_$fa.txt" 2>"$tmp/stderr_$fa.txt"
done
LLAMA_BIN="$bin" GGUF="$GGUF" DATA="$DATA" TMPD="$tmp" OUT="$out" CHUNKS="$CHUNKS" REPO="$repo" CACHE="$cache" "$PY" - <<'PY'
import hashlib, json, math, os, re, subprocess, sys, platform
tmp, gguf, data, binp, repo = (os.environ[k] for k in ("TMPD", "GGUF", "DATA", "LLAMA_BIN", "REPO"))
rd = lambda n: open(os.path.join(tmp, n), encoding="utf-8", errors="replace").read()

def parse(fa):
    so, se = rd(f"stdout_{fa}.txt"), rd(f"stderr_{fa}.txt")
    rows = re.findall(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", so + "\n" + se, re.M)
    run = [float(r[2]) for r in rows]
    per = [(i + 1) * run[i] - i * (run[i - 1] if i else 0.0) for i in range(len(run))]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", so + se)
    hdr = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", so + se)
    return {"final_ppl": float(m.group(1)), "final_ppl_pm": float(m.group(2)),
            "final_mean_nll_nats": run[-1], "running_mean_nll_nats": run,
            "per_chunk_mean_nll_nats": per, "per_chunk_ppl": [math.exp(v) for v in per],
            "n_chunks": int(hdr.group(1)), "n_ctx": int(hdr.group(2)), "log_stdout": so}, se

off, se_off = parse("off")
on, _ = parse("on")
ver = subprocess.run([binp, "--version"], capture_output=True, text=True)
ver = re.search(r"version: (\S+) \(build (\d+), commit (\w+)\)", ver.stdout + ver.stderr)
vend = os.path.join(os.environ["CACHE"], "llama.cpp", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
commit = subprocess.run(["git", "-C", vend, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
flags_file = os.path.join(os.path.dirname(os.path.dirname(binp)), "cpu-flags")
h = hashlib.sha256()
with open(gguf, "rb") as f:
    for c in iter(lambda: f.read(1 << 20), b""): h.update(c)
raw = open(data, "rb").read()
n_chunks, n_ctx = off["n_chunks"], off["n_ctx"]
assert n_chunks == int(os.environ["CHUNKS"]) and len(off["running_mean_nll_nats"]) == n_chunks
assert len(on["running_mean_nll_nats"]) == n_chunks
first = n_ctx // 2
res = {
    "source": "llama.cpp llama-perplexity (tools/perplexity), CPU, quantized GGUF as-is",
    "script": "scripts/references/ref_gemma3_llamacpp.sh",
    "versions": {"llama_cpp_version": ver.group(1) if ver else None, "llama_cpp_build": int(ver.group(2)) if ver else None,
                 "llama_cpp_commit": commit, "llama_cpp_python_sdist": "0.3.36",
                 "llama_cpp_cpu_flags": open(flags_file).read().strip() if os.path.exists(flags_file) else None,
                 "python": platform.python_version(), "platform": platform.platform()},
    "command": f"llama-perplexity -m {os.path.basename(gguf)} -f {os.path.basename(data)} -c 512 --chunks {n_chunks} -t 2 --ppl-output-type 1 --flash-attn off",
    "model_file": os.path.basename(gguf),
    "model_sha256": h.hexdigest(),
    "data_path": os.path.relpath(data, repo),
    "data_sha256": hashlib.sha256(raw).hexdigest(),
    "data_bytes": len(raw),
    "bos": "tokenizer.ggml.add_bos_token = true: the stream is [BOS] + text tokens and each chunk's first token is replaced by BOS",
    "n_chunks": n_chunks, "n_ctx": n_ctx,
    "scoring": f"chunk k = stream[k*{n_ctx}:(k+1)*{n_ctx}] (first token -> BOS), fresh KV cache; positions {first}..{n_ctx-2} predict the next token ({n_ctx-1-first} tokens per chunk)",
    "tokens_per_chunk_scored": n_ctx - 1 - first,
    "tokens_scored": n_chunks * (n_ctx - 1 - first),
    "per_chunk_note": "recovered from the 6-decimal running mean NLL of --ppl-output-type 1: chunk k = (k+1)*run[k] - k*run[k-1]; error up to ~1e-6*(2k+1)",
    "flash_attn_off": off,
    "flash_attn_on": on,
    "log_stderr_flash_attn_off": se_off,
}
json.dump(res, open(os.environ["OUT"], "w"), indent=1)
print(f"llama.cpp Gemma-3: PPL {off['final_ppl']} (-fa off), {on['final_ppl']} (-fa on) over {res['tokens_scored']} tokens",
      file=sys.stderr)
PY
echo "$out"
