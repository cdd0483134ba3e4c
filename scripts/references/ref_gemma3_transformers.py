#!/usr/bin/env python3
"""Reference per-token NLL for Gemma-3 270M (Q4_K_M GGUF) from HF transformers, sliding windows with BOS.

Model: the GGUF fetched by scripts/fetch_gemma3.sh, dequantized to float32 by transformers
(from_pretrained(gguf_file=...)), eager attention (its sliding-window mask on the local layers),
log_softmax in float64.

Tokens: llama.cpp's own tokenization (`llama-tokenize --no-bos --no-escape --no-parse-special` on the whole
WikiText-2 raw test file; scripts/references/ref_tokenize_llamacpp.py checks our tokenizer gives the same ids),
first --max-tokens of them. transformers' GGUF tokenizer is not used: both sides must see the same ids.

Protocol (surprisal's `--protocol sliding --bos auto`, Gemma's GGUF says add_bos_token = true):
  window input = [BOS] + ids[begin:end], end = min(begin + window - 1, n), begin = 0, stride, 2*stride, ...
  until a window reaches the end; each window scores the tokens not scored before (t in
  [max(prev_end, begin), end)), token t predicted by the logits at its position - 1 in the window; the
  first window scores token 0 too (predicted from BOS). => every token scored exactly once.
  nll_nats[t] = -log p(ids[t] | BOS, ids[begin..t]).
With window 1024 > Gemma-3's sliding window (512), the local layers' mask matters.

Output: crates/runner/tests/data/peers/gemma3_transformers_wikitext_sliding_w1024_s512_t4096.json
Usage: $(scripts/setup_reference_env.sh)/bin/python scripts/references/ref_gemma3_transformers.py [--window 1024]
       [--stride 512] [--max-tokens 4096] [--threads 2]
"""
import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_smollm2_transformers import REPO, gguf_tokenizer_facts, sha256_file, versions  # noqa: E402
from ref_tokenize_llamacpp import tokenize  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "datasets", "wikitext-2-raw-v1.test.raw"))
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--stride", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or os.path.join(
        REPO, "crates", "runner", "tests", "data", "peers",
        f"gemma3_transformers_wikitext_sliding_w{args.window}_s{args.stride}_t{args.max_tokens}.json")

    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    gguf = subprocess.run(["bash", os.path.join(REPO, "scripts", "fetch_gemma3.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()
    llama_bin = subprocess.run(["bash", os.path.join(REPO, "scripts", "build_llama_cpp.sh")], check=True,
                               capture_output=True, text=True).stdout.strip()
    facts = gguf_tokenizer_facts(gguf)
    assert facts["tokenizer.ggml.add_bos_token"], "Gemma's GGUF asks for BOS"
    bos = int(facts["tokenizer.ggml.bos_token_id"])

    data = os.path.abspath(args.data)
    with open(data, "rb") as f:
        raw = f.read()
    all_ids = tokenize(os.path.join(os.path.dirname(llama_bin), "llama-tokenize"), gguf, data)
    ids = all_ids[: args.max_tokens]
    n = len(ids)

    d, name = os.path.split(gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    cfg = model.config
    cfg_facts = {k: getattr(cfg, k, None) for k in (
        "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "sliding_window", "layer_types", "rope_theta", "rope_local_base_freq", "rope_parameters",
        "query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping", "rms_norm_eps",
        "hidden_activation", "max_position_embeddings", "tie_word_embeddings")}

    w_text = args.window - 1  # BOS takes one slot
    nll = [None] * n
    windows = []
    prev_end, begin = 0, 0
    t0 = time.time()
    while True:
        end = min(begin + w_text, n)
        x = torch.tensor([[bos] + ids[begin:end]], dtype=torch.long)
        first = max(prev_end, begin)
        # Only the scored positions go through the head (262k-token vocabulary): token t sits at
        # position t - begin + 1, predicted by position t - begin.
        pos = torch.arange(first - begin, end - begin)
        with torch.no_grad():
            logits = model(x, use_cache=False, logits_to_keep=pos).logits[0]
        assert logits.shape[0] == end - first, logits.shape
        lp = torch.log_softmax(logits.to(torch.float64), dim=-1)
        tgt = torch.tensor(ids[first:end], dtype=torch.long)
        vals = -lp.gather(1, tgt[:, None])[:, 0]
        for t, v in zip(range(first, end), vals):
            nll[t] = float(v)
        windows.append({"begin": begin, "end": end, "n_scored": end - first, "first_scored_token_index": first})
        print(f"window {len(windows)} [{begin},{end}) scored {end - first} ({time.time() - t0:.0f}s)", file=sys.stderr)
        prev_end = end
        if end == n:
            break
        begin += args.stride
    assert all(v is not None for v in nll)
    mean = math.fsum(nll) / n

    res = {
        "source": "transformers (GGUF dequantized to float32, eager attention), sliding windows with BOS, log_softmax in float64",
        "script": "scripts/references/ref_gemma3_transformers.py",
        "versions": versions(),
        "model_file": name,
        "model_sha256": sha256_file(gguf),
        "gguf_tokenizer": facts,
        "transformers_config": cfg_facts,
        "tokenizer": "llama.cpp llama-tokenize --no-bos --no-escape --no-parse-special (whole file), first max_tokens ids",
        "data_path": os.path.relpath(data, REPO),
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "data_bytes": len(raw),
        "n_tokens_whole_file": len(all_ids),
        "bos_prepended_to_each_window": True,
        "bos_token_id": bos,
        "window": args.window,
        "stride": args.stride,
        "max_tokens": args.max_tokens,
        "n_windows": len(windows),
        "windows": windows,
        "tokens_scored": n,
        "dtype": "float32",
        "attn_implementation": "eager",
        "mean_nll_nats": mean,
        "perplexity": math.exp(mean),
        "nll_definition": "nll_nats[t] = -log p(token_ids[t] | BOS, token_ids[begin..t]) for the window that scores token t",
        "token_ids": ids,
        "nll_nats": nll,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(f"{os.path.relpath(out, REPO)}: {n} scored, {len(windows)} windows, mean nll {mean:.6f}, ppl {math.exp(mean):.4f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
