#!/usr/bin/env python3
"""Reference per-token NLL / entropy for SmolLM2-135M-Instruct (Q4_1 GGUF) from llama.cpp.

Runs the quantized model as-is (no dequantization) through the llama_cpp Python package of the
llama-cpp-python==0.3.36 sdist, loading the CPU-only libllama built by scripts/build_llama_cpp.sh.
It evaluates EXACTLY the token_ids of crates/models/tests/data/smollm2_transformers.json (so both
references see the same ids; the llama.cpp tokenizer's own ids are recorded for comparison) in one
batch / one ubatch, with logits for every position, and log-softmaxes them in float64.

Same schema as scripts/references/ref_smollm2_transformers.py:
  nll_nats[i]     = -log p(token_ids[i+1] | token_ids[..=i])
  entropy_nats[i] = entropy of p(. | token_ids[..=i])

Usage: /work/.venv-ref/bin/python scripts/references/ref_smollm2_llamacpp.py [--model GGUF] [--ids JSON] [--out JSON]
(builds llama.cpp first if needed, via scripts/build_llama_cpp.sh)
"""
import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
DEFAULT_MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
LLAMA_ROOT = os.path.join(CACHE, "llama.cpp")
SDIST = os.path.join(LLAMA_ROOT, "llama_cpp_python-0.3.36")
LIBDIR = os.path.join(LLAMA_ROOT, "build", "bin")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_built():
    if not os.path.exists(os.path.join(LIBDIR, "libllama.so")):
        subprocess.run(["bash", os.path.join(REPO, "scripts", "build_llama_cpp.sh")], check=True,
                       stdout=sys.stderr)


def llama_cpp_commit():
    vend = os.path.join(SDIST, "vendor", "llama.cpp")
    try:
        return subprocess.run(["git", "-C", vend, "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--ids", default=os.path.join(REPO, "crates", "models", "tests", "data", "smollm2_transformers.json"),
                    help="JSON with token_ids (the transformers reference)")
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "models", "tests", "data", "smollm2_llamacpp.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    ensure_built()
    try:
        import diskcache  # noqa: F401  (a hard import of llama_cpp; not in the base venv)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "diskcache"], check=True, stdout=sys.stderr)
    os.environ["LLAMA_CPP_LIB_PATH"] = LIBDIR
    sys.path.insert(0, SDIST)
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    with open(args.ids) as f:
        ref = json.load(f)
    ids = [int(t) for t in ref["token_ids"]]
    text_path = os.path.join(REPO, ref["text_path"])
    with open(text_path, "rb") as f:
        raw = f.read()
    assert hashlib.sha256(raw).hexdigest() == ref["text_sha256"], "text changed since the transformers reference"

    n = len(ids)
    n_ctx = 4096
    assert n <= n_ctx
    llm = Llama(model_path=args.model, logits_all=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                n_threads=args.threads, n_threads_batch=args.threads, flash_attn=False, verbose=False)
    meta = dict(llm.metadata)
    # The llama.cpp tokenizer's own view of the same text (for comparison only; we feed `ids`).
    lc_ids_wo = llm.tokenize(raw, add_bos=False, special=False)
    lc_ids_default = llm.tokenize(raw, add_bos=True, special=False)  # add_bos=True defers to the vocab's add_bos flag

    t0 = time.time()
    llm.eval(ids)
    dt = time.time() - t0
    assert llm.n_tokens == n
    logits = np.array(llm.scores[:n, :], dtype=np.float64)  # [n, vocab], float32 from llama.cpp
    z = logits[:-1]
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    lp = z - lse[:, None]
    nll = -lp[np.arange(n - 1), np.array(ids[1:])]
    ent = -(np.exp(lp) * lp).sum(axis=1)
    nll = [float(x) for x in nll]
    ent = [float(x) for x in ent]
    mean = sum(nll) / len(nll)

    from importlib.metadata import version
    ref_nll = np.array(ref["nll_nats"])
    d = np.abs(np.array(nll) - ref_nll)
    res = {
        "source": "llama.cpp via llama-cpp-python (quantized GGUF as-is, CPU, logits_all, one batch, log_softmax in float64)",
        "script": "scripts/references/ref_smollm2_llamacpp.py",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp_commit": llama_cpp_commit(),
            "llama_cpp_system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
            "gguf": version("gguf"),
            "platform": platform.platform(),
        },
        "model_file": os.path.basename(args.model),
        "model_sha256": sha256_file(args.model),
        "gguf_tokenizer": {k: meta.get(k) for k in (
            "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix")},
        "llama_params": {"n_ctx": n_ctx, "n_batch": n_ctx, "n_ubatch": n_ctx, "n_threads": args.threads,
                          "flash_attn": False, "logits_all": True},
        "text_path": ref["text_path"],
        "text_sha256": ref["text_sha256"],
        "bos_prepended": ref["bos_prepended"],
        "token_ids_source": os.path.relpath(os.path.abspath(args.ids), REPO),
        "llamacpp_tokenizer_matches_token_ids_without_bos": lc_ids_wo == ref["token_ids_without_bos"],
        "llamacpp_tokenizer_default_adds_bos": len(lc_ids_default) == len(lc_ids_wo) + 1,
        "n_tokens": n,
        "eval_seconds": dt,
        "mean_nll_nats": mean,
        "perplexity": float(np.exp(mean)),
        "vs_transformers_f32": {
            "mean_abs_delta_nll": float(d.mean()),
            "max_abs_delta_nll": float(d.max()),
            "delta_mean_nll": float(mean - ref_nll.mean()),
        },
        "nll_definition": "nll_nats[i] = -log p(token_ids[i+1] | token_ids[..=i]); entropy_nats[i] = entropy of that same distribution",
        "token_ids": ids,
        "token_ids_without_bos": ref["token_ids_without_bos"],
        "nll_nats": nll,
        "entropy_nats": ent,
    }
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(f"{os.path.relpath(args.out, REPO)}: {n} tokens, mean nll {mean:.6f} (transformers {ref_nll.mean():.6f}), "
          f"mean|dnll| {d.mean():.5f}, max {d.max():.4f}, tokenizer match {res['llamacpp_tokenizer_matches_token_ids_without_bos']}, "
          f"eval {dt:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
