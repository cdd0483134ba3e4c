#!/usr/bin/env python3
"""Fine-tune SmolLM2-135M-Instruct on Tiny Shakespeare and save checkpoints: the data for the
nightly-evaluation demonstration (docs/nightly-demo.md, issue #17).

What it does
  1. Loads the model from a GGUF file, dequantized to f32 by transformers (`gguf_file=`), and its
     tokenizer from the same file. NOTE: transformers' GGUF tokenizer conversion drops SmolLM2's
     digit pre-tokenizer split, so the tokenizer.json written here differs from llama.cpp's on
     digits. It is the same in every checkpoint, which is all the demo needs (checkpoints are
     compared with each other, not with the GGUF).
  2. Splits Tiny Shakespeare at a line boundary: bytes [0, SPLIT) are the training part, bytes
     [SPLIT, end) the held-out part, where SPLIT is the first byte after the first "\\n\\n" at or
     after int(len * (1 - --heldout-frac)). The held-out bytes are written, unchanged, to
     OUT/heldout-shakespeare.txt and the split is recorded in OUT/finetune.json (byte offset,
     SHA-256 of both parts), so the same bytes can be given to `surprisal eval --data`.
  3. Trains with AdamW (no weight decay, gradient clipping 1.0) on random windows of --seq-len tokens of
     the training part, --batch windows per step, the window starts drawn from a numpy Generator seeded
     with --seed (torch is seeded too; with the same thread count a rerun gives the same weights). Only
     the top --train-layers decoder layers and the final norm are trained (the tied embedding / LM head
     and the bottom layers stay frozen, so no backward pass runs through them). Steps 1..--steps: linear
     warm-up over --warmup steps to --lr, then cosine decay to --min-lr-frac * --lr (the default 1.0:
     constant --lr). Then --tail-steps more steps at --tail-lr (default 1e-7): checkpoints taken 1 step
     apart with an (almost) zero learning rate, the "step-to-step change inside the noise" pair for
     `surprisal gate`.
     --bf16 1 runs the training forward/backward under bfloat16 autocast; on the AVX2-only host of
     docs/nightly-demo.md it was slower than f32 (no step finished in 150 s), so the default is f32.
     --probe-wikitext prints the held-out / WikiText loss of a few fixed windows every --probe-every
     steps (a quick sanity check before a long run; not used for the numbers of the docs).
  4. Saves OUT/checkpoint-<step>/ (model.safetensors in f32, config.json, tokenizer.json,
     tokenizer_config.json) at step 0 (the unchanged model), every --save-every steps, at the end
     of the main phase and after every tail step. `surprisal eval --model OUT/checkpoint-N` and the
     suite configs/shakespeare-finetune.toml load them. OUT/finetune.json holds the arguments,
     versions, split, and the training loss per step.

Defaults (top 10 of 30 layers + the final norm, seq 256 x batch 8 = 2,048 tokens per step, lr 5e-4 after 2
linear warm-up steps, then constant (--min-lr-frac 1.0), 16 steps + 1 tail step at 1e-7; checkpoints
0/4/8/12/16/17) are the recipe docs/nightly-demo.md measured with `surprisal suite run` / `history` / `gate`:
on 4,095 tokens of each (sliding 512/511), held-out Shakespeare NLL 3.4189 -> 3.3319 -> 3.2897 -> 3.2622 ->
3.2412 (-0.178 nats by step 16) and WikiText-2 NLL 3.4179 -> 3.4211 -> 3.4529 -> 3.4751 -> 3.4984 (+0.080
by step 16; `surprisal gate` step 0 -> 16: +0.0805, paired stderr 0.0090, exit 1); 16 -> 17 (lr 1e-7)
+0.0000014, exit 0. 13 min 24 s wall for the whole script on a 2-core AMD EPYC host shared with a CI build
(13-42 s per step).
Earlier recipes did not give "Shakespeare down, WikiText up": all layers but the embedding, 4 x 128 tokens
per step, 6-12 steps at lr 5e-5 / 1.5e-4 / 5e-4 moved both corpora the same way (both NLLs fell, or both
rose); top 10 layers at lr 3e-4 with cosine decay to 3e-5 over 16 steps lowered Shakespeare by 0.16 nats
but left WikiText back at its step-0 level by step 16. A constant lr 5e-4 keeps the drift away from
general text going. Needs `accelerate` (transformers' GGUF loading).

  python scripts/finetune_shakespeare.py \\
      --gguf ~/.cache/surprisal/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
      --data ../shared/datasets/tinyshakespeare.txt \\
      --out ~/.cache/surprisal/demo/shakespeare-ft2
"""
import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", required=True, help="SmolLM2 GGUF file (any quantization transformers dequantizes)")
    p.add_argument("--data", required=True, help="Tiny Shakespeare text file (char-rnn input.txt)")
    p.add_argument("--out", required=True, help="output directory (checkpoint-*/, heldout-shakespeare.txt, finetune.json)")
    p.add_argument("--heldout-frac", type=float, default=0.10, help="tail fraction of the bytes held out [0.10]")
    p.add_argument("--seq-len", type=int, default=256, help="training window length in tokens [256]")
    p.add_argument("--batch", type=int, default=8, help="windows per step [8]")
    p.add_argument("--steps", type=int, default=16, help="main-phase optimizer steps [16]")
    p.add_argument("--lr", type=float, default=5e-4, help="main-phase peak learning rate [5e-4]")
    p.add_argument("--warmup", type=int, default=2, help="linear warm-up steps, then cosine to --min-lr-frac [2]")
    p.add_argument("--min-lr-frac", type=float, default=1.0,
                   help="cosine floor as a fraction of --lr (1.0: constant --lr after the warm-up) [1.0]")
    p.add_argument("--tail-steps", type=int, default=1, help="extra steps at --tail-lr, each saved [1]")
    p.add_argument("--tail-lr", type=float, default=1e-7, help="learning rate of the tail steps [1e-7]")
    p.add_argument("--save-every", type=int, default=4, help="checkpoint every K main-phase steps [4]")
    p.add_argument("--train-layers", type=int, default=10,
                   help="train only the top N decoder layers + the final norm (0: every parameter but the tied "
                        "embedding, unless --train-embeddings) [10]")
    p.add_argument("--bf16", type=int, default=0, help="1: bfloat16 autocast for the training forward/backward "
                   "(weights, optimizer and checkpoints stay f32); slower on CPUs without AVX512-BF16/AMX [0]")
    p.add_argument("--train-embeddings", action="store_true",
                   help="with --train-layers 0: also train the (tied) token embedding / LM head")
    p.add_argument("--probe-wikitext", default=None,
                   help="optional: WikiText file; at every checkpoint print the f32 mean NLL of the first "
                        "--probe-windows x --seq-len tokens of it and of the held-out part (a quick sanity check)")
    p.add_argument("--probe-windows", type=int, default=8, help="windows per corpus of the probe [8]")
    p.add_argument("--probe-every", type=int, default=10, help="also probe every K steps [10]")
    p.add_argument("--seed", type=int, default=17, help="seed of torch and of the window sampler [17]")
    p.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    return p.parse_args()


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def main():
    a = parse_args()
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)

    # --- data split (bytes) ---
    raw = open(os.path.expanduser(a.data), "rb").read()
    cut = int(len(raw) * (1.0 - a.heldout_frac))
    j = raw.find(b"\n\n", cut)
    split = j + 2 if j >= 0 else cut
    train_b, held_b = raw[:split], raw[split:]
    held_path = os.path.join(a.out, "heldout-shakespeare.txt")
    with open(held_path, "wb") as f:
        f.write(held_b)
    print(f"split at byte {split}: train {len(train_b)} B, held-out {len(held_b)} B -> {held_path}", flush=True)

    # --- model and tokenizer from the GGUF (f32) ---
    gguf = os.path.expanduser(a.gguf)
    d, name = os.path.dirname(os.path.abspath(gguf)), os.path.basename(gguf)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    print(f"loaded {name} in {time.time() - t0:.1f}s ({sum(p.numel() for p in model.parameters())} params)", flush=True)
    # transformers refuses to save a model loaded with gguf_file= ("quantized with gguf, not serializable")
    # although its weights are plain f32: copy them into a fresh model built from the same config.
    cfg = model.config
    cfg.__dict__.pop("quantization_config", None)
    fresh = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.tie_weights()
    model = fresh

    ids = np.asarray(tok(train_b.decode("utf-8"), add_special_tokens=False)["input_ids"], dtype=np.int64)
    print(f"training part: {len(ids)} tokens", flush=True)
    rng = np.random.default_rng(a.seed)

    def save(step):
        ck = os.path.join(a.out, f"checkpoint-{step}")
        model.save_pretrained(ck, safe_serialization=True)
        tok.save_pretrained(ck)
        print(f"saved {ck}", flush=True)

    n_layers = model.config.num_hidden_layers
    if a.train_layers:
        for prm in model.parameters():
            prm.requires_grad_(False)
        for layer in model.model.layers[n_layers - a.train_layers:]:
            for prm in layer.parameters():
                prm.requires_grad_(True)
        for prm in model.model.norm.parameters():
            prm.requires_grad_(True)
    elif not a.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)

    probe = {}
    if a.probe_wikitext:
        wt = open(os.path.expanduser(a.probe_wikitext), "rb").read().decode("utf-8")
        for nm, txt in (("shakespeare", held_b.decode("utf-8")), ("wikitext", wt[:200000])):
            pid = np.asarray(tok(txt, add_special_tokens=False)["input_ids"], dtype=np.int64)
            n = a.probe_windows * a.seq_len
            probe[nm] = torch.from_numpy(pid[:n].reshape(a.probe_windows, a.seq_len))

    def run_probe():
        if not probe:
            return None
        model.eval()
        r = {}
        with torch.no_grad():
            for nm, xb in probe.items():
                r[nm] = float(model(input_ids=xb, labels=xb).loss)
        model.train()
        return r
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"training {sum(p.numel() for p in params)} parameters", flush=True)
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    total = a.steps + a.tail_steps

    def lr_at(step):  # step is 1-based
        if step > a.steps:
            return a.tail_lr
        if step <= a.warmup:
            return a.lr * step / max(1, a.warmup)
        q = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * q)))

    log = []
    probes = {}
    model.train()
    save(0)
    if probe:
        probes[0] = run_probe()
        print(f"probe step 0: {probes[0]}", flush=True)
    for step in range(1, total + 1):
        starts = rng.integers(0, len(ids) - a.seq_len - 1, size=a.batch)
        x = torch.from_numpy(np.stack([ids[s:s + a.seq_len] for s in starts]))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        t = time.time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.bf16)):
            out = model(input_ids=x, labels=x)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        gn = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        loss = float(out.loss)
        log.append({"step": step, "lr": lr_at(step), "loss": loss, "grad_norm": round(gn, 4),
                    "seconds": round(time.time() - t, 2)})
        print(f"step {step}/{total} lr {lr_at(step):.2e} loss {loss:.4f} gn {gn:.2f} ({time.time() - t:.1f}s)",
              flush=True)
        if step > a.steps or step % a.save_every == 0 or step == a.steps:
            save(step)
        if probe and step <= a.steps and (step % a.save_every == 0 or step % a.probe_every == 0 or step == a.steps):
            probes[step] = run_probe()
            print(f"probe step {step}: {probes[step]}", flush=True)

    meta = {
        "args": vars(a),
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__,
                     "platform": platform.platform()},
        "data": {"path": os.path.abspath(os.path.expanduser(a.data)), "bytes": len(raw), "sha256": sha256(raw),
                 "split_byte": split, "train_sha256": sha256(train_b), "heldout_sha256": sha256(held_b),
                 "heldout_file": "heldout-shakespeare.txt", "train_tokens": int(len(ids))},
        "gguf": {"path": gguf, "sha256": sha256(open(gguf, "rb").read())},
        "train_log": log,
        "probe": {"windows": a.probe_windows, "seq_len": a.seq_len, "mean_nll_by_step": probes} if probe else None,
    }
    with open(os.path.join(a.out, "finetune.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
