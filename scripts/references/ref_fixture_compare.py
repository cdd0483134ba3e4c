#!/usr/bin/env python3
"""Independent reference numbers for `surprisal compare` on two tiny random-weight test models.

Writes crates/cli/tests/data/fixture_compare.json, which crates/cli/tests/compare_fixture.rs checks the
`surprisal compare` binary against: per-token KL(R || M), both NLLs, the target-probability delta and
both arg-maxes, and every aggregate of summary.json that is defined by the per-token values.

Models (crates/models/tests/fixtures/, see its README): the model M is `llama` (tied embeddings), the
reference R is `llama_untied` (separate lm_head). Both are random-weight LlamaForCausalLM with vocab
384 and the SAME tokenizer.json (checked below, byte for byte and token by token). The tokenizer adds
no BOS; we run with `--bos never` anyway so the protocol does not depend on that.

Protocol: surprisal's `sliding` with --window 128 --stride 64 --bos never, i.e. the Hugging Face
"Perplexity of fixed-length models" recipe (https://huggingface.co/docs/transformers/perplexity) on the
token stream of the single document crates/cli/tests/data/compare_text.txt (tokenized without special
tokens), fixed so that every token after the first is scored exactly once: the last trg_len = end -
prev_end targets of each window (crates/runner/PROTOCOLS.md). Both models see the same windows.

Numerics: transformers forward in float32 (writes fixture_compare.json; checked against `surprisal
compare --dtype f32`) or, with `--float64`, in float64 (writes fixture_compare_f64.json; checked against
`--dtype f64`). In float64 mode the forward is float64 throughout: LlamaRMSNorm is patched to
normalize in float64 (transformers upcasts to float32 only), the rotary embedding computes its
frequencies and cos/sin in float64 (transformers: float32), and attention is SDPA (eager attention takes
its softmax in float32). Float32 mode: eager attention, transformers as shipped. One forward per window;
log_softmax in float64; everything else in float64 numpy:
  kl      = sum_i p_R,i (ln p_R,i - ln p_M,i)
  nll     = -ln p[target]            (both models)
  delta_p = p_M[target] - p_R[target]
  entropy = -sum_i p_i ln p_i        (both models)
Aggregates: means; stderr = std(ddof=1)/sqrt(n) (of KL, and paired of nll_M - nll_R and of H_M - H_R);
perplexity_ratio = exp(mean(nll_M - nll_R)), CI = exp(delta +- 1.96 se); quantiles = np.quantile
(default "linear" method) at surprisal's 13 levels; top1_agreement = mean(argmax_M == argmax_R);
rms_target_prob_delta = sqrt(mean(delta_p^2)). top_kl_positions: the 20 largest KL with the text of up
to 8 tokens before and 2 after the target inside its window.

Usage: /work/.venv-ref/bin/python scripts/references/ref_fixture_compare.py [--float64]
"""
import json
import os
import platform
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "crates", "models", "tests", "fixtures")
MODEL_DIR = os.path.join(FIXTURES, "llama")
REF_DIR = os.path.join(FIXTURES, "llama_untied")
DATA_DIR = os.path.join(REPO, "crates", "cli", "tests", "data")
TEXT = os.path.join(DATA_DIR, "compare_text.txt")
FLOAT64 = "--float64" in sys.argv[1:]
OUT = os.path.join(DATA_DIR, "fixture_compare_f64.json" if FLOAT64 else "fixture_compare.json")
WINDOW, STRIDE = 128, 64

# surprisal-metrics QUANTILE_LEVELS and the field names of `Quantiles`
LEVELS = [0.0, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]
NAMES = ["min", "p0_1", "p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99_9", "max"]


def load(d):
    import torch
    from transformers import AutoModelForCausalLM
    if FLOAT64:
        from transformers.models.llama import modeling_llama

        def rms_norm_in_input_dtype(self, hidden_states):
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

        modeling_llama.LlamaRMSNorm.forward = rms_norm_in_input_dtype

        def rope_in_float64(self, x, position_ids):
            cfg = self.config
            assert cfg.rope_parameters.get("rope_type", "default") == "default"
            dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            inv_freq = 1.0 / (cfg.rope_parameters["rope_theta"]
                              ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            freqs = position_ids[..., None].to(torch.float64) * inv_freq
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

        modeling_llama.LlamaRotaryEmbedding.forward = torch.no_grad()(rope_in_float64)
    dtype = torch.float64 if FLOAT64 else torch.float32
    # eager attention takes its softmax in float32 whatever the model dtype; SDPA stays in float64
    attn = "sdpa" if FLOAT64 else "eager"
    m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation=attn)
    return m.eval()


def check_same_tokenizer():
    from tokenizers import Tokenizer
    a, b = (os.path.join(d, "tokenizer.json") for d in (MODEL_DIR, REF_DIR))
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read(), "tokenizer.json files differ"
    ta, tb = Tokenizer.from_file(a), Tokenizer.from_file(b)
    assert ta.get_vocab(True) == tb.get_vocab(True)
    assert ta.get_vocab_size(True) == tb.get_vocab_size(True) == 384
    return ta


def hf_sliding_windows(n, window, stride):
    """(begin, end, trg_len) of the HF recipe without BOS; the last trg_len targets are scored."""
    out = []
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + window, n)
        trg_len = end - prev_end
        out.append((begin, end, trg_len))
        prev_end = end
        if end == n:
            break
    return out


def logprobs(model, ids):
    import torch
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0]
    return torch.log_softmax(logits.to(torch.float64), dim=-1).numpy()


def quantiles(x):
    return {k: float(v) for k, v in zip(NAMES, np.quantile(x, LEVELS))}


def stderr(x):
    return float(np.std(x, ddof=1) / np.sqrt(len(x)))


def versions():
    import tokenizers
    import torch
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


def main():
    import torch
    torch.set_num_threads(1)
    tok = check_same_tokenizer()
    model, ref = load(MODEL_DIR), load(REF_DIR)
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    ids = tok.encode(text, add_special_tokens=False).ids
    n = len(ids)
    print(f"text: {n} tokens, {len(text.encode())} bytes", file=sys.stderr)

    rows = {k: [] for k in ["index", "context_len", "token_id", "kl_nats", "nll_nats", "ref_nll_nats",
                            "target_prob_delta", "top1_id", "ref_top1_id", "entropy_nats",
                            "ref_entropy_nats"]}
    plan = hf_sliding_windows(n, WINDOW, STRIDE)
    context = []  # per scored token: (tokens before it, tokens after it) inside its window
    for begin, end, trg_len in plan:
        inp = ids[begin:end]
        lm, lr = logprobs(model, inp), logprobs(ref, inp)
        # logits at window position p predict the token at p + 1; score the last trg_len tokens
        first_target = max(1, len(inp) - trg_len)
        for t in range(first_target, len(inp)):
            p = t - 1
            tgt = inp[t]
            pm, pr = np.exp(lm[p]), np.exp(lr[p])
            rows["index"].append(begin + t)
            rows["context_len"].append(t)
            rows["token_id"].append(tgt)
            rows["kl_nats"].append(float(np.sum(pr * (lr[p] - lm[p]))))
            rows["nll_nats"].append(float(-lm[p, tgt]))
            rows["ref_nll_nats"].append(float(-lr[p, tgt]))
            rows["target_prob_delta"].append(float(pm[tgt] - pr[tgt]))
            rows["top1_id"].append(int(np.argmax(lm[p])))
            rows["ref_top1_id"].append(int(np.argmax(lr[p])))
            rows["entropy_nats"].append(float(-np.sum(pm * lm[p])))
            rows["ref_entropy_nats"].append(float(-np.sum(pr * lr[p])))
            context.append((inp[max(0, t - 8):t], inp[t + 1:t + 3]))
    assert rows["index"] == list(range(1, n)), "every token after the first exactly once"

    kl = np.array(rows["kl_nats"])
    nm, nr = np.array(rows["nll_nats"]), np.array(rows["ref_nll_nats"])
    dp = np.array(rows["target_prob_delta"])
    hm, hr = np.array(rows["entropy_nats"]), np.array(rows["ref_entropy_nats"])
    dn, dh = nm - nr, hm - hr
    d, se = float(np.mean(dn)), stderr(dn)
    summary = {
        "tokens_scored": len(kl),
        "mean_kl_nats": float(np.mean(kl)),
        "mean_kl_nats_stderr": stderr(kl),
        "kl_nats_quantiles": quantiles(kl),
        "target_prob_delta_quantiles": quantiles(dp),
        "top1_agreement": float(np.mean(np.array(rows["top1_id"]) == np.array(rows["ref_top1_id"]))),
        "delta_mean_nll_nats": d,
        "delta_mean_nll_nats_stderr": se,
        "perplexity_ratio": float(np.exp(d)),
        "perplexity_ratio_ci95": [float(np.exp(d - 1.96 * se)), float(np.exp(d + 1.96 * se))],
        "mean_target_prob_delta": float(np.mean(dp)),
        "rms_target_prob_delta": float(np.sqrt(np.mean(dp * dp))),
        "delta_mean_entropy_nats": float(np.mean(dh)),
        "delta_mean_entropy_nats_stderr": stderr(dh),
        "model": {"mean_nll_nats": float(np.mean(nm)), "perplexity": float(np.exp(np.mean(nm))),
                  "mean_entropy_nats": float(np.mean(hm))},
        "reference": {"mean_nll_nats": float(np.mean(nr)), "perplexity": float(np.exp(np.mean(nr))),
                      "mean_entropy_nats": float(np.mean(hr))},
    }
    # the 20 largest KL (ties: earlier position first), with the text of up to 8 tokens before the
    # target and 2 after it inside the window that scores it (each token decoded on its own)
    text_of = lambda ids: "".join(tok.decode([i], skip_special_tokens=False) for i in ids)  # noqa: E731
    order = np.argsort(-kl, kind="stable")
    top_kl = [{"kl_nats": float(kl[i]), "doc": 0, "index": rows["index"][i], "token_id": rows["token_id"][i],
               "token": text_of([rows["token_id"][i]]), "context_before": text_of(context[i][0]),
               "context_after": text_of(context[i][1]), "nll_nats": rows["nll_nats"][i],
               "ref_nll_nats": rows["ref_nll_nats"][i]} for i in order[:20]]
    out = {
        "source": "scripts/references/ref_fixture_compare.py%s (transformers %s, eager, log_softmax float64)"
                  % (" --float64" if FLOAT64 else "", "float64" if FLOAT64 else "float32"),
        "dtype": "f64" if FLOAT64 else "f32",
        "model": "crates/models/tests/fixtures/llama",
        "reference": "crates/models/tests/fixtures/llama_untied",
        "args": ["--data", "crates/cli/tests/data/compare_text.txt", "--protocol", "sliding",
                 "--window", str(WINDOW), "--stride", str(STRIDE), "--bos", "never"],
        "windows": len(plan),
        "text_tokens": n,
        "versions": versions(),
        "summary": summary,
        "top_kl_positions": top_kl,
        "kl_gap_after_top20": float(kl[order[19]] - kl[order[20]]),
        "tokens": rows,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"{len(plan)} windows, {len(kl)} tokens: mean KL {summary['mean_kl_nats']:.6f} "
          f"(max {summary['kl_nats_quantiles']['max']:.4f}), dNLL {d:+.6f} +- {se:.6f}, "
          f"top1 agree {summary['top1_agreement']:.4f}", file=sys.stderr)
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
