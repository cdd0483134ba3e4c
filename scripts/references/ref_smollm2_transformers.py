#!/usr/bin/env python3
"""Reference per-token NLL / entropy for SmolLM2-135M-Instruct (Q4_1 GGUF) from HF transformers.

The GGUF is dequantized to float32 by transformers (gguf_file=...), run with eager attention in
float32 in ONE forward pass over the whole sequence (it fits the 8192 context), and the logits are
log-softmaxed in float64.

Tokens: the text is tokenized WITHOUT special tokens; BOS is prepended only if the GGUF metadata
says tokenizer.ggml.add_bos_token = true (for this SmolLM2 GGUF it is false, so nothing is added).

Output schema (JSON):
  nll_nats[i]     = -log p(token_ids[i+1] | token_ids[..=i])      (len(token_ids) - 1 values)
  entropy_nats[i] = entropy of p(. | token_ids[..=i])              (same positions as nll_nats)

Usage: /work/.venv-ref/bin/python scripts/references/ref_smollm2_transformers.py [--model GGUF] [--text FILE] [--out JSON]
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
DEFAULT_MODEL = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gguf_tokenizer_facts(path):
    from gguf import GGUFReader

    r = GGUFReader(path)

    def get(key):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    return {
        "tokenizer.ggml.model": get("tokenizer.ggml.model"),
        "tokenizer.ggml.pre": get("tokenizer.ggml.pre"),
        "tokenizer.ggml.bos_token_id": get("tokenizer.ggml.bos_token_id"),
        "tokenizer.ggml.eos_token_id": get("tokenizer.ggml.eos_token_id"),
        "tokenizer.ggml.add_bos_token": get("tokenizer.ggml.add_bos_token"),
        "tokenizer.ggml.add_eos_token": get("tokenizer.ggml.add_eos_token"),
        "tokenizer.ggml.add_space_prefix": get("tokenizer.ggml.add_space_prefix"),
    }


def versions():
    import numpy
    import torch
    import transformers
    import tokenizers
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": version("gguf"),
        "numpy": numpy.__version__,
        "accelerate": version("accelerate"),
        "platform": platform.platform(),
    }


def load_model_and_tokenizer(model_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(os.path.abspath(model_path))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    return model, tok


def nll_and_entropy(logits_f32, ids):
    """logits_f32: [T, V] tensor (position t predicts ids[t+1]). Returns float64 lists of len T-1."""
    import torch

    lp = torch.log_softmax(logits_f32[:-1].to(torch.float64), dim=-1)
    tgt = torch.tensor(ids[1:], dtype=torch.long)
    nll = -lp.gather(1, tgt[:, None])[:, 0]
    ent = -(lp.exp() * lp).sum(-1)
    return [float(x) for x in nll], [float(x) for x in ent]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--text", default=os.path.join(REPO, "datasets", "sample.txt"))
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "models", "tests", "data", "smollm2_transformers.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    facts = gguf_tokenizer_facts(args.model)
    model, tok = load_model_and_tokenizer(args.model)

    with open(args.text, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    ids_wo = tok(text, add_special_tokens=False)["input_ids"]
    add_bos = bool(facts["tokenizer.ggml.add_bos_token"])
    bos_id = facts["tokenizer.ggml.bos_token_id"]
    ids = ([int(bos_id)] if add_bos else []) + list(ids_wo)
    n_ctx = model.config.max_position_embeddings
    assert len(ids) <= n_ctx, f"{len(ids)} tokens exceed the context {n_ctx}; windowing not implemented"

    t0 = time.time()
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    logits = out.logits[0].float()
    nll, ent = nll_and_entropy(logits, ids)
    dt = time.time() - t0
    mean = sum(nll) / len(nll)

    rel = lambda p: os.path.relpath(os.path.abspath(p), REPO)
    res = {
        "source": "transformers (GGUF dequantized to float32, eager attention, one forward, log_softmax in float64)",
        "script": "scripts/references/ref_smollm2_transformers.py",
        "versions": versions(),
        "model_file": os.path.basename(args.model),
        "model_sha256": sha256_file(args.model),
        "gguf_tokenizer": facts,
        "text_path": rel(args.text),
        "text_sha256": hashlib.sha256(raw).hexdigest(),
        "text_bytes": len(raw),
        "bos_prepended": add_bos,
        "bos_token_id": bos_id,
        "n_tokens": len(ids),
        "n_forward_passes": 1,
        "dtype": "float32",
        "attn_implementation": "eager",
        "mean_nll_nats": mean,
        "perplexity": float(torch.tensor(mean, dtype=torch.float64).exp()),
        "nll_definition": "nll_nats[i] = -log p(token_ids[i+1] | token_ids[..=i]); entropy_nats[i] = entropy of that same distribution",
        "token_ids": ids,
        "token_ids_without_bos": list(ids_wo),
        "nll_nats": nll,
        "entropy_nats": ent,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(f"{rel(args.out)}: {len(ids)} tokens, bos_prepended={add_bos}, mean nll {mean:.6f} nats, "
          f"ppl {res['perplexity']:.4f}, forward {dt:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
