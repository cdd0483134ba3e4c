#!/usr/bin/env bash
# Peer numbers for eval parity on WikiText-2 raw test (the whole file is the text), SmolLM2 Q4_1 GGUF:
#  (a) llama.cpp `llama-perplexity -c 512 --chunks 40 -t 2` (built by scripts/build_llama_cpp.sh): full log and
#      parsed numbers -> crates/runner/tests/data/peers/llamacpp_wikitext_c512_chunks40.json.
#      It is run twice: exactly as specified (running-PPL output "[i]x.xxxx"), and with --ppl-output-type 1
#      (running mean NLL with 6 decimals), from which per-chunk mean NLLs are recovered; and a third time with
#      --ppl-output-type 1 --flash-attn off (llama.cpp's default `auto` turns flash attention on on a CPU,
#      which computes attention with f16 K/V and f16-rounded Q; off, its graph is the one we reproduce).
#  (b) transformers fixed sliding-window recipe (scripts/references/ref_wikitext_peers.py)
#      -> crates/runner/tests/data/peers/transformers_wikitext_sliding_w512_s256_t8192.json
# Usage: bash scripts/references/ref_wikitext_peers.sh [a|b|all]     (default all)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(dirname "$(dirname "$here")")"
PY="${PYTHON:-/work/.venv-ref/bin/python}"
DATA="${WIKITEXT:-/work/shared/datasets/wikitext-2-raw-v1.test.raw}"
cache="${SURPRISAL_CACHE:-$HOME/.cache/surprisal}"
GGUF="${GGUF:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
out="$repo/crates/runner/tests/data/peers"
what="${1:-all}"
mkdir -p "$out"

if [ "$what" = a ] || [ "$what" = all ]; then
  bin="$(bash "$repo/scripts/build_llama_cpp.sh")"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  cmd=("$bin" -m "$GGUF" -f "$DATA" -c 512 --chunks 40 -t 2)
  echo "running: ${cmd[*]}" >&2
  "${cmd[@]}" >"$tmp/stdout.txt" 2>"$tmp/stderr.txt"
  "${cmd[@]}" --ppl-output-type 1 >"$tmp/stdout1.txt" 2>"$tmp/stderr1.txt"
  "${cmd[@]}" --ppl-output-type 1 --flash-attn off >"$tmp/stdout2.txt" 2>"$tmp/stderr2.txt"
  LLAMA_BIN="$bin" GGUF="$GGUF" DATA="$DATA" TMPD="$tmp" OUT="$out/llamacpp_wikitext_c512_chunks40.json" \
    REPO="$repo" CACHE="$cache" "$PY" - <<'PY'
import hashlib, json, math, os, re, subprocess, sys, platform
tmp = os.environ["TMPD"]; gguf = os.environ["GGUF"]; data = os.environ["DATA"]; binp = os.environ["LLAMA_BIN"]
rd = lambda n: open(os.path.join(tmp, n), encoding="utf-8", errors="replace").read()
so, se, so1, se1 = rd("stdout.txt"), rd("stderr.txt"), rd("stdout1.txt"), rd("stderr1.txt")
so2, se2 = rd("stdout2.txt"), rd("stderr2.txt")
full, full1 = se + so, se1 + so1
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", full)
m1 = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", full1)
running = [float(v) for _, v in re.findall(r"\[(\d+)\]([0-9.]+),", full)]
rows = re.findall(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", so1 + "\n" + se1, re.M)
running_nll = [float(r[2]) for r in rows]
per_chunk = lambda run: [(i + 1) * run[i] - i * (run[i - 1] if i else 0.0) for i in range(len(run))]
per_chunk_nll = per_chunk(running_nll)
rows2 = re.findall(r"^\s*(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s*$", so2 + "\n" + se2, re.M)
running_nll2 = [float(r[2]) for r in rows2]
m2 = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", se2 + so2)
hdr = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+), batch_size=(\d+), n_seq=(\d+)", full)
ver = re.search(r"version: (\S+) \(build (\d+), commit (\w+)\)", subprocess.run([binp, "--version"], capture_output=True, text=True).stderr
                + subprocess.run([binp, "--version"], capture_output=True, text=True).stdout)
vend = os.path.join(os.environ["CACHE"], "llama.cpp", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
commit = subprocess.run(["git", "-C", vend, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
# token count of the whole file with llama.cpp's own tokenizer (same call as llama-perplexity: add_special=true)
os.environ["LLAMA_CPP_LIB_PATH"] = os.path.dirname(binp)
sys.path.insert(0, os.path.join(os.environ["CACHE"], "llama.cpp", "llama_cpp_python-0.3.36"))
from llama_cpp import Llama
raw = open(data, "rb").read()
voc = Llama(model_path=gguf, vocab_only=True, verbose=False)
toks = voc.tokenize(raw, add_bos=True, special=True)   # add_bos=True defers to the vocab's add_bos flag
toks_nobos = voc.tokenize(raw, add_bos=False, special=True)
bos_added = len(toks) == len(toks_nobos) + 1
n_chunks, n_ctx = int(hdr.group(1)), int(hdr.group(2))
first = n_ctx // 2
h = hashlib.sha256()
with open(gguf, "rb") as f:
    for c in iter(lambda: f.read(1 << 20), b""): h.update(c)
res = {
    "source": "llama.cpp llama-perplexity (tools/perplexity), CPU, quantized GGUF as-is",
    "script": "scripts/references/ref_wikitext_peers.sh",
    "versions": {"llama_cpp_version": ver.group(1) if ver else None, "llama_cpp_build": int(ver.group(2)) if ver else None,
                 "llama_cpp_commit": commit, "llama_cpp_python_sdist": "0.3.36", "python": platform.python_version(),
                 "platform": platform.platform()},
    "command": " ".join(["llama-perplexity", "-m", os.path.basename(gguf), "-f", data, "-c", "512", "--chunks", "40", "-t", "2"]),
    "command_precise_rerun": "same + --ppl-output-type 1",
    "model_file": os.path.basename(gguf),
    "model_sha256": h.hexdigest(),
    "data_path": data,
    "data_sha256": hashlib.sha256(raw).hexdigest(),
    "data_bytes": len(raw),
    "n_tokens_file": len(toks),
    "bos_added": bos_added,
    "bos_note": "llama-perplexity replaces the first token of each chunk with BOS only if the vocab's add_bos is true; for this GGUF tokenizer.ggml.add_bos_token=false, so no BOS anywhere",
    "n_chunks": n_chunks, "n_ctx": n_ctx, "n_batch": int(hdr.group(3)), "n_seq": int(hdr.group(4)),
    "scoring": f"chunk k = tokens[k*{n_ctx}:(k+1)*{n_ctx}], fresh KV cache; scores positions {first}..{n_ctx-2} predicting the next token ({n_ctx-1-first} tokens per chunk)",
    "tokens_per_chunk_scored": n_ctx - 1 - first,
    "tokens_scored": n_chunks * (n_ctx - 1 - first),
    "final_ppl": float(m.group(1)),
    "final_ppl_pm": float(m.group(2)),
    "final_mean_nll_nats_from_precise_run": running_nll[-1] if running_nll else None,
    "precise_run_final_ppl": float(m1.group(1)) if m1 else None,
    "running_ppl": running,
    "running_ppl_note": "running_ppl[k] = exp(mean NLL over chunks 0..=k), as printed [k+1]x.xxxx (4 decimals)",
    "running_mean_nll_nats": running_nll,
    "per_chunk_mean_nll_nats": per_chunk_nll,
    "per_chunk_ppl": [math.exp(v) for v in per_chunk_nll],
    "per_chunk_note": "recovered from the 6-decimal running mean NLL of --ppl-output-type 1: chunk k = (k+1)*run[k] - k*run[k-1]; error up to ~1e-6*(2k+1)",
    "token_ids_first_8192": toks[:8192],
    "log_stderr": se, "log_stdout": so,
    "log_precise_stdout": so1,
    "flash_attn_off": {
        "command": "same + --ppl-output-type 1 --flash-attn off",
        "note": "llama-perplexity's default --flash-attn auto enables flash attention on this CPU (f16 K/V, f16-rounded Q in the dot products); off, llama.cpp runs the graph surprisal reproduces for quantized GGUF",
        "final_ppl": float(m2.group(1)) if m2 else None,
        "final_ppl_pm": float(m2.group(2)) if m2 else None,
        "running_mean_nll_nats": running_nll2,
        "per_chunk_mean_nll_nats": per_chunk(running_nll2),
        "log_stdout": so2,
    },
}
assert len(running) == n_chunks and len(running_nll) == n_chunks, (len(running), len(running_nll))
assert len(running_nll2) == n_chunks, len(running_nll2)
tf = os.path.join(os.environ["REPO"], "crates/runner/tests/data/peers/transformers_wikitext_sliding_w512_s256_t8192.json")
if os.path.exists(tf):
    res["token_ids_first_8192_match_transformers"] = json.load(open(tf))["token_ids"] == toks[:8192]
json.dump(res, open(os.environ["OUT"], "w"), indent=1)
print(f"llama.cpp: PPL {res['final_ppl']} +/- {res['final_ppl_pm']} over {res['tokens_scored']} tokens; file {len(toks)} tokens, bos_added={bos_added}", file=sys.stderr)
PY
fi

if [ "$what" = b ] || [ "$what" = all ]; then
  "$PY" "$here/ref_wikitext_peers.py"
fi
