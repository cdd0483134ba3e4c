#!/usr/bin/env python3
"""The transformers/PyTorch peer of scripts/bench/bench.py: llama.cpp's `chunks` protocol with a Hugging Face
model directory, as a user of transformers would write it.

  tokens = tokenizer(whole file)            (add_special_tokens as the tokenizer says)
  chunk k = tokens[k*W:(k+1)*W] for k < K   (the trailing partial chunk is dropped)
  if the tokenizer adds BOS, it replaces the first token of every chunk (llama-perplexity does that)
  score the second half as llama-perplexity does: targets W/2+1 .. W-1 (W/2 - 1 per chunk), each
  predicted from everything before it in the chunk

Batches of --batch-size chunks, one forward each, torch.inference_mode, log_softmax in float32 on the
scored positions only. Prints one JSON line: tokens evaluated (K*W), scored, mean NLL, PPL, seconds
(load_seconds: imports, model load, tokenization; eval_seconds: the forward loop, CUDA-synchronized).

On a GPU (--device cuda:N, used by scripts/gpu/bench_gpu.py): weights are loaded straight onto the device,
the JSON line adds peak_gpu_memory_bytes (torch.cuda.max_memory_allocated) and the device name.
--per-token FILE writes the scored tokens as JSON [[index in the token stream, nll], ...].

Usage: python scripts/bench/bench_transformers.py --model HF_DIR --data FILE [--window 512] [--chunks 40]
       [--batch-size 4] [--threads 2] [--dtype float32] [--device cpu] [--attn-implementation sdpa]
       [--per-token FILE]
"""
import argparse
import json
import math
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--attn-implementation", default=None, help="transformers' default when not given")
    ap.add_argument("--per-token", default=None)
    a = ap.parse_args()

    t0 = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: torch {torch.__version__} sees no CUDA device")
    tok = AutoTokenizer.from_pretrained(a.model)
    kw = {"dtype": getattr(torch, a.dtype)}
    if a.attn_implementation:
        kw["attn_implementation"] = a.attn_implementation
    if cuda:
        kw["device_map"] = a.device  # safetensors straight onto the GPU, no host copy of the weights
    model = AutoModelForCausalLM.from_pretrained(a.model, **kw).eval()
    if not cuda:
        model = model.to(dev)
    text = open(a.data, encoding="utf-8").read()
    ids = tok(text)["input_ids"]
    adds_bos = tok.bos_token_id is not None and len(ids) > 0 and ids[0] == tok.bos_token_id
    w, k = a.window, min(a.chunks, len(ids) // a.window)
    chunks = [ids[i * w:(i + 1) * w] for i in range(k)]
    if adds_bos:
        for c in chunks:
            c[0] = tok.bos_token_id
    t_load = time.perf_counter() - t0

    first = w // 2
    nll_sum, scored, rows = 0.0, 0, []
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t1 = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, k, a.batch_size):
            x = torch.tensor(chunks[b:b + a.batch_size], dtype=torch.long, device=dev)
            hidden = model.model(input_ids=x, use_cache=False).last_hidden_state  # (B, W, H)
            logits = model.lm_head(hidden[:, first:w - 1, :]).float()
            logp = torch.log_softmax(logits, dim=-1)
            tgt = x[:, first + 1:w]
            nll = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            nll_sum += float(nll.double().sum())  # a host sync per batch, as a user's loop has
            scored += nll.numel()
            if a.per_token:
                for i, row in enumerate(nll.double().cpu().tolist()):
                    base = (b + i) * w + first + 1
                    rows.extend([base + j, v] for j, v in enumerate(row))
    if cuda:
        torch.cuda.synchronize(dev)
    t_eval = time.perf_counter() - t1
    mean = nll_sum / scored
    if a.per_token:
        with open(a.per_token, "w") as f:
            json.dump(rows, f)
    out = {
        "tool": "transformers", "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "tokens_evaluated": k * w, "tokens_scored": scored, "mean_nll_nats": mean,
        "perplexity": math.exp(mean), "load_seconds": t_load, "eval_seconds": t_eval,
        "bos_replaces_first_token": adds_bos, "threads": a.threads, "batch_size": a.batch_size,
        "device": a.device, "dtype": a.dtype,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
    if cuda:
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
        out["gpu_name"] = torch.cuda.get_device_name(dev)
        out["torch_cuda"] = torch.version.cuda
    print(json.dumps(out))


if __name__ == "__main__":
    main()
