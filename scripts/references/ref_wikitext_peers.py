#!/usr/bin/env python3
"""Peer number (b) for eval parity: HF transformers "perplexity of fixed-length models" sliding-window
recipe, FIXED so that every token is scored exactly once, on WikiText-2 raw test.

  tokens  = tokenizer(whole file, no special tokens)[:8192]      (no BOS)
  windows = 512 tokens, starting every 256 tokens (begin = 0, 256, ..., until a window reaches the end)
  first window scores all its tokens after the first (511); each later window scores only the tokens
  not scored before, i.e. its last (end - prev_end) tokens, each with the window's earlier tokens as context.
  => tokens_scored = 8191, nll_nats[k] = -log p(token_ids[k+1] | window context), in token order.

Model: the SmolLM2 Q4_1 GGUF dequantized to float32 by transformers, eager attention; log_softmax in float64.
(The original HF recipe averages per-window losses weighted by trg_len, which counts the first
window's target one too many; here the per-token NLLs are collected and averaged directly.)

Usage: /work/.venv-ref/bin/python scripts/references/ref_wikitext_peers.py [--model GGUF] [--data FILE] [--out JSON]
"""
import argparse
import hashlib
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_smollm2_transformers import (  # noqa: E402
    DEFAULT_MODEL, REPO, gguf_tokenizer_facts, load_model_and_tokenizer, sha256_file, versions)

DATA = "/work/shared/datasets/wikitext-2-raw-v1.test.raw"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--out", default=os.path.join(
        REPO, "crates", "runner", "tests", "data", "peers", "transformers_wikitext_sliding_w512_s256_t8192.json"))
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    facts = gguf_tokenizer_facts(args.model)
    model, tok = load_model_and_tokenizer(args.model)
    with open(args.data, "rb") as f:
        raw = f.read()
    all_ids = tok(raw.decode("utf-8"), add_special_tokens=False)["input_ids"]
    ids = list(all_ids[: args.max_tokens])
    seq_len = len(ids)

    nll = []
    windows = []
    prev_end = 0
    t0 = time.time()
    for begin in range(0, seq_len, args.stride):
        end = min(begin + args.window, seq_len)
        trg_len = end - prev_end  # tokens not scored before
        x = torch.tensor([ids[begin:end]], dtype=torch.long)
        with torch.no_grad():
            logits = model(x, use_cache=False).logits[0]
        lp = torch.log_softmax(logits[:-1].to(torch.float64), dim=-1)  # lp[j] predicts ids[begin+j+1]
        tgt = torch.tensor(ids[begin + 1:end], dtype=torch.long)
        tok_nll = -lp.gather(1, tgt[:, None])[:, 0]
        n_score = min(trg_len, end - begin - 1)  # first window: all but its first token
        scored = tok_nll[-n_score:]
        nll.extend(float(v) for v in scored)
        windows.append({"begin": begin, "end": end, "n_scored": n_score,
                        "first_scored_token_index": end - n_score})
        print(f"window {len(windows)} [{begin},{end}) scored {n_score} ({time.time() - t0:.0f}s)", file=sys.stderr)
        prev_end = end
        if end == seq_len:
            break
    assert len(nll) == seq_len - 1, (len(nll), seq_len)
    mean = math.fsum(nll) / len(nll)

    res = {
        "source": "transformers HF fixed-length sliding-window recipe, fixed to score each token exactly once",
        "script": "scripts/references/ref_wikitext_peers.py",
        "versions": versions(),
        "model_file": os.path.basename(args.model),
        "model_sha256": sha256_file(args.model),
        "gguf_tokenizer": facts,
        "dtype": "float32",
        "attn_implementation": "eager",
        "data_path": args.data,
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "data_bytes": len(raw),
        "n_tokens_whole_file": len(all_ids),
        "bos_prepended": False,
        "max_tokens": args.max_tokens,
        "window": args.window,
        "stride": args.stride,
        "n_windows": len(windows),
        "windows": windows,
        "tokens_scored": len(nll),
        "mean_nll_nats": mean,
        "perplexity": math.exp(mean),
        "nll_definition": "nll_nats[k] = -log p(token_ids[k+1] | token_ids[begin..=k]) for the window that scores token k+1",
        "token_ids": ids,
        "nll_nats": nll,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(f"{os.path.relpath(args.out, REPO)}: {len(nll)} scored, {len(windows)} windows, mean nll {mean:.6f}, "
          f"ppl {math.exp(mean):.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
