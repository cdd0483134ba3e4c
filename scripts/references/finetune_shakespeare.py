#!/usr/bin/env python3
"""Fine-tune the f32 SmolLM2-135M-Instruct (scripts/references/make_smollm2_f32.py) on Tiny Shakespeare, on CPU.

A small, deterministic domain shift for `surprisal compare` (docs/compare.md): the fine-tune should predict held-out
Shakespeare better than the original (negative delta NLL) and diverge from it much more on Shakespeare than on
WikiText-2.

Data: the first 90 % of tinyshakespeare.txt (cut at the first line break at or after 90 % of the characters) is
training text; the rest is written, byte for byte, to <cache>/data/tinyshakespeare_heldout.txt and never trained on.
Training: the training text is tokenized once (no special tokens); every step takes --batch random 128-token blocks
(numpy Generator, --seed), full causal-LM loss, AdamW (weight decay 0), linear warm-up then cosine decay,
gradient clipping 1.0, torch.set_num_threads(--threads). To fit ~15 min on 2 shared CPU cores, by default only the
top 10 of 30 decoder layers and the final norm are trained (the tied embedding / LM head and the bottom layers stay
frozen, so no backward pass runs through them) and the training forward/backward runs under bfloat16 autocast
(the weights and the saved model stay float32). --train-layers 0 --bf16 0 trains everything in float32
(about 3-4x slower). The loss of every step goes to train_log.json next
to the model, together with versions, seed, steps, wall time and the loss of the original and the fine-tuned model
on 32 fixed held-out blocks.
Output: <cache>/models/SmolLM2-135M-shakespeare-hf (model.safetensors, config.json, tokenizer.json, train_log.json).
Skipped if the output exists (delete it to redo).

Usage: /work/.venv-ref/bin/python scripts/references/finetune_shakespeare.py [--steps 300] [--batch 4] [--lr 1e-4] [--seed 0]
"""
import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time

CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
DATA = os.environ.get("TINY_SHAKESPEARE", "/work/shared/datasets/tinyshakespeare.txt")


def log(*a):
    print("[finetune_shakespeare]", *a, file=sys.stderr, flush=True)


def versions():
    from importlib.metadata import version

    v = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count()}
    for p in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "accelerate"):
        try:
            v[p] = version(p)
        except Exception:
            v[p] = None
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default=os.path.join(CACHE, "models", "SmolLM2-135M-Instruct-f32-hf"))
    ap.add_argument("--out", default=os.path.join(CACHE, "models", "SmolLM2-135M-shakespeare-hf"))
    ap.add_argument("--heldout", default=os.path.join(CACHE, "data", "tinyshakespeare_heldout.txt"))
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-frac", type=float, default=0.9)
    ap.add_argument("--eval-blocks", type=int, default=32)
    ap.add_argument("--train-layers", type=int, default=10,
                    help="train only the top N decoder layers and the final norm (0 = every parameter)")
    ap.add_argument("--bf16", type=int, default=1, help="1: bfloat16 autocast for the forward/backward (weights stay f32)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    raw = open(args.data, "rb").read()
    text = raw.decode("utf-8")
    cut = text.find("\n", int(len(text) * args.train_frac))
    cut = len(text) if cut < 0 else cut + 1
    train_text, held_text = text[:cut], text[cut:]
    os.makedirs(os.path.dirname(args.heldout), exist_ok=True)
    held_bytes = held_text.encode("utf-8")
    if not os.path.exists(args.heldout) or open(args.heldout, "rb").read() != held_bytes:
        with open(args.heldout, "wb") as f:
            f.write(held_bytes)
    log(f"train {len(train_text)} chars, held-out {len(held_text)} chars -> {args.heldout}")

    if os.path.exists(os.path.join(args.out, "model.safetensors")):
        log(f"{args.out} exists, skipping the fine-tune")
        print(args.out)
        return

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tok = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    train_ids = np.array(tok(train_text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    held_ids = np.array(tok(held_text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    log(f"train {train_ids.size} tokens, held-out {held_ids.size} tokens")
    B, L = args.batch, args.block

    n_eval = min(args.eval_blocks, held_ids.size // L)
    eval_batch = torch.from_numpy(held_ids[: n_eval * L].reshape(n_eval, L))

    def held_loss():
        model.eval()
        with torch.no_grad():
            tot = 0.0
            for i in range(0, n_eval, 8):
                x = eval_batch[i:i + 8]
                tot += model(input_ids=x, labels=x).loss.item() * x.shape[0]
        model.train()
        return tot / n_eval

    t_start = time.time()
    loss0 = held_loss()
    log(f"held-out loss before: {loss0:.4f} ({time.time() - t_start:.1f}s)")

    n_layers = model.config.num_hidden_layers
    if args.train_layers:
        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.model.layers[n_layers - args.train_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        for p in model.model.norm.parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    log(f"trainable parameters: {n_trainable} of {sum(p.numel() for p in model.parameters())}")
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    model.train()
    losses = []
    t0 = time.time()
    for step in range(args.steps):
        starts = rng.integers(0, train_ids.size - L, size=B)
        x = torch.from_numpy(np.stack([train_ids[s:s + L] for s in starts]))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == args.steps - 1:
            el = time.time() - t0
            log(f"step {step + 1}/{args.steps} loss {loss.item():.4f} (mean of last 10 {np.mean(losses[-10:]):.4f}) "
                f"lr {lr_at(step):.2e} grad-norm {float(gn):.2f} {el:.0f}s, {el / (step + 1):.2f} s/step")
    train_s = time.time() - t0
    loss1 = held_loss()
    log(f"held-out loss after: {loss1:.4f} (before {loss0:.4f}); training {train_s:.0f}s")

    tmp = args.out + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    rec = {
        "script": "scripts/references/finetune_shakespeare.py",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "base_model": args.base,
        "data": args.data,
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "train_chars": len(train_text),
        "heldout_chars": len(held_text),
        "heldout_path": args.heldout,
        "heldout_sha256": hashlib.sha256(held_bytes).hexdigest(),
        "train_tokens": int(train_ids.size),
        "heldout_tokens": int(held_ids.size),
        "seed": args.seed,
        "steps": args.steps,
        "batch": B,
        "block": L,
        "tokens_seen": args.steps * B * L,
        "optimizer": {"name": "AdamW", "lr": args.lr, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0,
                      "schedule": f"linear warm-up {args.warmup} steps, cosine to 0.1*lr", "grad_clip": 1.0},
        "threads": args.threads,
        "dtype": "float32 weights" + (", bfloat16 autocast for the training forward/backward" if args.bf16 else ""),
        "trained": (f"top {args.train_layers} of {n_layers} decoder layers + final norm" if args.train_layers
                    else "all parameters"),
        "trainable_parameters": n_trainable,
        "train_wall_seconds": train_s,
        "total_wall_seconds": time.time() - t_start,
        "heldout_loss_first_blocks": {"blocks": n_eval, "block": L, "before": loss0, "after": loss1},
        "loss_per_step": losses,
    }
    with open(os.path.join(tmp, "train_log.json"), "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")
    os.rename(tmp, args.out)
    log(f"wrote {args.out}; total {rec['total_wall_seconds']:.0f}s")
    print(args.out)


if __name__ == "__main__":
    main()
