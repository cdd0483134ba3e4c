#!/usr/bin/env python3
"""Generate tiny random-weight fixture models + transformers reference log-probs.

Usage (from the repository root, with the reference venv from scripts/setup_reference_env.sh):

    "$SURPRISAL_REF_VENV/bin/python" scripts/references/make_fixtures.py [--out crates/models/tests/fixtures]

Deterministic: fixed seeds, single-threaded torch, own weight initialisation; re-running with the
pinned versions in scripts/requirements-reference.txt reproduces byte-identical files.

Outputs (see crates/models/tests/fixtures/README.md):
  tokenizer.json                      tiny byte-level BPE (vocab 384, <|endoftext|> = id 0)
  <name>/{config.json, *.safetensors, tokenizer.json, reference.json, generation_config.json}
  bad_vocab/, bad_arch/               broken fixtures for error tests (no reference.json)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "crates" / "models" / "tests" / "fixtures"
DEFAULT_CORPUS = Path(os.environ.get("SURPRISAL_SHARED", REPO.parent / "shared")) / "datasets" / "tinyshakespeare.txt"

VOCAB_SIZE = 384
EOT = "<|endoftext|>"
TRAIN_BYTES = 200_000
# Passages for the reference rows: each starts at the first blank-line boundary ("\n\n") at or after
# the given character offset into tinyshakespeare (pure ASCII, so characters == bytes).
ROW_SPECS = [(300_000, 340), (310_000, 200)]  # (offset, total length incl. BOS)
SAMPLE_POSITIONS = lambda n: [0, 1, 100, n - 2]  # noqa: E731  (row 0 logit rows to dump)

INIT_STD = 0.2          # std of every linear weight (config.initializer_range)
EMBED_STD = 0.25         # std of embeddings / lm_head (bigger -> peaked next-token distributions)
NORM_JITTER = 0.2       # RMSNorm weights ~ 1 + NORM_JITTER * N(0,1)
BIAS_STD = 0.2          # q/k/v biases (qwen2) ~ N(0, BIAS_STD)

COMMON = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    initializer_range=INIT_STD,
    bos_token_id=0,
    eos_token_id=0,
)


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------
def train_tokenizer(corpus: Path) -> Tokenizer:
    text = corpus.read_bytes()[:TRAIN_BYTES].decode("utf-8", errors="strict")
    tok = Tokenizer(models.BPE())  # no unk token, byte_fallback=False, ignore_merges=False
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # No post-processor: encode() never adds BOS/EOS; callers prepend id 0 themselves.
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Feed fixed chunks (one per line) so the word counts do not depend on anything but the text.
    lines = text.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    assert tok.token_to_id(EOT) == 0, "special token must be id 0"
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def make_rows(tok: Tokenizer, corpus: Path):
    text = corpus.read_text(encoding="utf-8")
    rows, texts = [], []
    for offset, total in ROW_SPECS:
        n = total - 1  # tokens after BOS
        start = text.index("\n\n", offset) + 2
        passage = text[start : start + 8 * total]
        enc = tok.encode(passage, add_special_tokens=False)
        assert len(enc.ids) > n + 1
        # Cut the text at a token boundary so that encode(text) == ids exactly.
        while True:
            cut = passage[: enc.offsets[n - 1][1]]
            ids = tok.encode(cut, add_special_tokens=False).ids
            if ids == enc.ids[:n]:
                break
            n -= 1  # extremely unlikely; keep the row a valid encoding of its text
        assert tok.decode(ids, skip_special_tokens=False) == cut
        rows.append([0] + ids)
        texts.append(cut)
    return rows, texts


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Own deterministic init (independent of transformers' _init_weights), in name order.
    Gemma's RMSNorm multiplies by (1 + w), so its norm weights are drawn around 0 instead of 1."""
    g = torch.Generator().manual_seed(seed)
    norm_center = 0.0 if model.config.model_type.startswith("gemma") else 1.0
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):  # tied params once
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * BIAS_STD)
            elif "norm" in name or name.split(".")[-2].startswith("ln_"):  # GPT-2: ln_1, ln_f
                p.copy_(norm_center + torch.randn(p.shape, generator=g) * NORM_JITTER)
            elif any(e in name for e in ("embed_tokens", "lm_head", "wte", "embed_in", "embed_out")):
                p.copy_(torch.randn(p.shape, generator=g) * EMBED_STD)
            else:
                assert p.ndim == 2, name
                p.copy_(torch.randn(p.shape, generator=g) * INIT_STD)


def fixture_specs(vocab: int):
    llama3 = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    return [
        # name, config class, model class, config kwargs, seed, save kwargs
        ("llama", LlamaConfig, LlamaForCausalLM,
         dict(tie_word_embeddings=True, rope_theta=10000.0), 1, {}),
        ("llama3_rope", LlamaConfig, LlamaForCausalLM,
         dict(tie_word_embeddings=True, rope_theta=500000.0, rope_scaling=llama3), 2, {}),
        ("llama_untied", LlamaConfig, LlamaForCausalLM,
         dict(tie_word_embeddings=False, rope_theta=10000.0), 3, {}),
        ("llama_sharded", LlamaConfig, LlamaForCausalLM,
         dict(tie_word_embeddings=True, rope_theta=10000.0), 4, dict(max_shard_size="200KB")),
        ("mistral", MistralConfig, MistralForCausalLM,
         dict(tie_word_embeddings=False, rope_theta=10000.0, sliding_window=4096), 5, {}),
        ("qwen2", Qwen2Config, Qwen2ForCausalLM,
         dict(tie_word_embeddings=True, rope_theta=1000000.0, use_sliding_window=False,
              sliding_window=None, max_window_layers=2), 6, {}),
        ("qwen3", Qwen3Config, Qwen3ForCausalLM,
         dict(tie_word_embeddings=True, rope_theta=1000000.0, head_dim=32, attention_bias=False,
              use_sliding_window=False, sliding_window=None, max_window_layers=2), 7, {}),
        # 6 layers: five local (window 48) and one global, the pattern llama.cpp assumes too;
        # query_pre_attn_scalar = head_dim as llama.cpp derives it, so the GGUF test can use it.
        ("gemma3", Gemma3TextConfig, Gemma3ForCausalLM,
         dict(tie_word_embeddings=True, head_dim=16, num_hidden_layers=6, sliding_window=48,
              query_pre_attn_scalar=16, rope_theta=1000000.0, rope_local_base_freq=10000.0,
              hidden_activation="gelu_pytorch_tanh"), 8, {}),
        # untied, head_dim 32 != hidden/heads, query_pre_attn_scalar 24 != head_dim, linear RoPE
        # scaling on the global layers, explicit alternating layer_types, window 100.
        ("gemma3_untied", Gemma3TextConfig, Gemma3ForCausalLM,
         dict(tie_word_embeddings=False, head_dim=32, num_hidden_layers=4, sliding_window=100,
              query_pre_attn_scalar=24, rope_theta=1000000.0, rope_local_base_freq=10000.0,
              rope_scaling={"rope_type": "linear", "factor": 2.0},
              layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
              hidden_activation="gelu_pytorch_tanh"), 9, {}),
        # Phi-3: fused qkv_proj / gate_up_proj, partial rotary (half of head_dim 16), LongRoPE
        # whose long factors apply (both rows are longer than original_max_position_embeddings).
        ("phi3", Phi3Config, Phi3ForCausalLM,
         dict(tie_word_embeddings=False, rope_theta=10000.0, partial_rotary_factor=0.5,
              original_max_position_embeddings=128,
              rope_scaling={"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.7],
                            "long_factor": [1.0, 1.5, 2.5, 4.0]},
              pad_token_id=0, sliding_window=None), 10, {}),
        # Phi-3 as Phi-3-mini ships: full rotary, default RoPE, tied here to cover both.
        ("phi3_tied", Phi3Config, Phi3ForCausalLM,
         dict(tie_word_embeddings=True, rope_theta=10000.0, pad_token_id=0,
              sliding_window=None), 11, {}),
        # Gemma-2: softcapping (the defaults 50 and 30 would never bind with these weights, so 5
        # and 15), alternating sliding window (even layers) of 48.
        ("gemma2", Gemma2Config, Gemma2ForCausalLM,
         dict(tie_word_embeddings=True, head_dim=16, num_hidden_layers=4, sliding_window=48,
              query_pre_attn_scalar=16, rope_theta=10000.0, attn_logit_softcapping=5.0,
              final_logit_softcapping=15.0, hidden_activation="gelu_pytorch_tanh"), 12, {}),
        # Mistral with a window (64) shorter than both rows: the sliding mask matters.
        ("mistral_window", MistralConfig, MistralForCausalLM,
         dict(tie_word_embeddings=False, rope_theta=10000.0, sliding_window=64), 13, {}),
        # GPT-2 (its own key names, see family_config): learned positions (n_positions 512),
        # Conv1D (in, out) weights, fused c_attn, gelu_new, tied; stored as openai-community/gpt2
        # is, without the `transformer.` prefix (see base_model_layout).
        ("gpt2", GPT2Config, GPT2LMHeadModel,
         dict(n_embd=64, n_layer=2, n_head=4, n_inner=None, n_positions=512,
              activation_function="gelu_new", layer_norm_epsilon=1e-5,
              tie_word_embeddings=True), 14, {}),
        # Pythia's shape: parallel residual, rotary_pct 0.25 (4 of 16 dims), exact gelu, untied.
        ("gpt_neox", GPTNeoXConfig, GPTNeoXForCausalLM,
         dict(tie_word_embeddings=False, rotary_pct=0.25, rotary_emb_base=10000,
              use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5), 15, {}),
        # ... with the sequential residual, rotary_pct 0.5, base 1e6, tanh GELU.
        ("gpt_neox_sequential", GPTNeoXConfig, GPTNeoXForCausalLM,
         dict(tie_word_embeddings=False, rotary_pct=0.5, rotary_emb_base=1000000,
              use_parallel_residual=False, hidden_act="gelu_new", layer_norm_eps=1e-5), 16, {}),
    ]


def family_config(name: str) -> dict:
    """COMMON, less the keys a family does not have (or names differently)."""
    common = dict(COMMON)
    if name.startswith("gemma"):
        del common["hidden_act"]  # Gemma's key is hidden_activation
    if name.startswith("gpt2"):
        common = dict(initializer_range=INIT_STD, bos_token_id=0, eos_token_id=0)
    if name.startswith("gpt_neox"):
        for k in ("num_key_value_heads", "rms_norm_eps"):
            del common[k]
    return common


def base_model_layout(d: Path) -> None:
    """GPT-2 as openai-community/gpt2 ships: tensors of the base model (`h.0.*`, `wte`), without
    the `transformer.` prefix that save_pretrained writes; transformers loads both."""
    from safetensors.torch import load_file, save_file

    p = d / "model.safetensors"
    t = load_file(str(p))
    t = {k.removeprefix("transformer."): v for k, v in t.items()}
    save_file(t, str(p), metadata={"format": "pt"})


def classic_neox_config(cfg: dict) -> dict:
    """GPT-NeoX: the Hub layout is `rotary_pct` + `rotary_emb_base` (Pythia's config.json)."""
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        cfg["rotary_emb_base"] = rp.pop("rope_theta")
        cfg["rotary_pct"] = rp.pop("partial_rotary_factor")
        assert rp.get("rope_type", "default") == "default", rp
    return cfg


def classic_gemma3_config(path: Path) -> dict:
    """Gemma-3: transformers>=5 writes `rope_parameters` per layer type; the Hub layout is
    `rope_theta` (global), `rope_local_base_freq` (local) and `rope_scaling` (global or null)."""
    cfg = json.loads(path.read_text())
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        full = dict(rp["full_attention"])
        cfg["rope_theta"] = full.pop("rope_theta")
        cfg["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
        cfg["rope_scaling"] = full if full.get("rope_type", "default") != "default" else None
    path.write_text(json.dumps(cfg, indent=2, sort_keys=False) + "\n")
    return cfg


def classic_config(path: Path) -> dict:
    """Rewrite transformers>=5 `rope_parameters` into the Hub-style `rope_theta` + `rope_scaling`
    layout that real checkpoints (Llama 3.x, Mistral, Qwen2/3) ship with. from_pretrained still
    accepts it; main() re-loads from disk and checks the logits are unchanged."""
    cfg = json.loads(path.read_text())
    if cfg.get("model_type") == "gemma3_text":
        return classic_gemma3_config(path)
    if cfg.get("model_type") == "gpt_neox":
        cfg = classic_neox_config(cfg)
        path.write_text(json.dumps(cfg, indent=2, sort_keys=False) + "\n")
        return cfg
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        theta = rp.pop("rope_theta")
        # Phi-3 / Phi-4-mini ship `partial_rotary_factor` at the top level
        if "partial_rotary_factor" in rp:
            cfg["partial_rotary_factor"] = rp.pop("partial_rotary_factor")
        out = {}
        for k, v in cfg.items():
            out[k] = v
            if k == "rms_norm_eps":  # keep a readable key order
                out["rope_theta"] = theta
                out["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
        if "rope_theta" not in out:
            out["rope_theta"] = theta
            out["rope_scaling"] = rp if rp.get("rope_type", "default") != "default" else None
        cfg = out
    path.write_text(json.dumps(cfg, indent=2, sort_keys=False) + "\n")
    return cfg


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------
def batch_logits(model, rows):
    L = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), L), dtype=torch.long)  # right-padded with id 0
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()


def stats(logits_row: torch.Tensor, row):
    lp = logits_row.double().log_softmax(-1)  # [T, V] float64
    n = len(row)
    tgt = torch.tensor(row[1:])
    target = lp[: n - 1].gather(1, tgt[:, None])[:, 0]
    ent = -(lp[: n - 1].exp() * lp[: n - 1]).sum(-1)
    return target, ent


def f32_list(t: torch.Tensor):
    # shortest decimal that round-trips to the same float32
    return [float(np.format_float_positional(np.float32(x), unique=True, trim="-")) for x in t.tolist()]


def reference(model, arch: str, rows, texts):
    logits = batch_logits(model, rows)
    out_t, out_e = [], []
    for i, r in enumerate(rows):
        t_b, e_b = stats(logits[i], r)
        alone = batch_logits(model, [r])[0]
        t_a, e_a = stats(alone, r)
        dt = (t_b - t_a).abs().max().item()
        de = (e_b - e_a).abs().max().item()
        print(f"  {arch} row {i}: batched-vs-alone max diff logprob {dt:.2e} entropy {de:.2e}; max|logit| {logits[i,:len(r)].abs().max().item():.2f}")
        assert dt < 1e-5 and de < 1e-5, f"{arch}: batched vs alone differ: {dt} {de}"
        out_t.append(t_b.tolist())
        out_e.append(e_b.tolist())
    pos = SAMPLE_POSITIONS(len(rows[0]))
    return {
        "architecture": arch,
        "versions": versions(),
        "texts": texts,
        "rows": rows,
        "target_logprobs": out_t,
        "entropy_nats": out_e,
        "logits_sample": {
            "row": 0,
            "positions": pos,
            "logits": [f32_list(logits[0, p]) for p in pos],
        },
    }, logits


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
    }


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


# --------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)  # reproducible float32 reductions
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(args.corpus)
    tok_path = out / "tokenizer.json"
    tok.save(str(tok_path), pretty=True)
    tok = Tokenizer.from_file(str(tok_path))  # use exactly what was written
    vocab = tok.get_vocab_size()
    rows, texts = make_rows(tok, args.corpus)
    print(f"tokenizer: vocab {vocab}; rows {[len(r) for r in rows]}")

    for name, cfg_cls, model_cls, kw, seed, save_kw in fixture_specs(vocab):
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        torch.manual_seed(seed)
        common = family_config(name)
        common.update(kw)
        cfg = cfg_cls(vocab_size=vocab, **common)
        cfg.architectures = [model_cls.__name__]
        model = model_cls._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
        init_weights(model, seed)
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        model.save_pretrained(d, safe_serialization=True, **save_kw)
        classic_config(d / "config.json")
        if name.startswith("gpt2"):
            base_model_layout(d)
        shutil.copy(tok_path, d / "tokenizer.json")

        before = batch_logits(model, rows)
        # Reference from the model re-loaded from the files on disk (what the Rust side reads).
        loaded = model_cls.from_pretrained(d, attn_implementation="eager", dtype=torch.float32).eval()
        ref, logits = reference(loaded, model_cls.__name__, rows, texts)
        for i, r in enumerate(rows):
            diff = (before[i, : len(r)] - logits[i, : len(r)]).abs().max().item()
            assert diff == 0.0, f"{name}: reloaded model differs from built model by {diff}"
        write_json(d / "reference.json", ref)
        mean_ent = float(np.mean([np.mean(e) for e in ref["entropy_nats"]]))
        mean_nll = float(-np.mean([np.mean(t) for t in ref["target_logprobs"]]))
        assert mean_ent < math.log(vocab) - 1.0, f"{name}: logits too flat ({mean_ent})"
        files = sorted(p.name for p in d.iterdir())
        print(f"{name:14s} mean entropy {mean_ent:.3f} nats (ln V = {math.log(vocab):.3f}), "
              f"mean nll {mean_nll:.3f}; files {files}")

    # ---- broken fixtures ---------------------------------------------------------------
    # bad_vocab: llama with vocab_size 256 < tokenizer vocab 384 (weights sliced to match).
    from safetensors.torch import load_file, save_file

    src = out / "llama"
    bad = out / "bad_vocab"
    if bad.exists():
        shutil.rmtree(bad)
    bad.mkdir()
    small_vocab = 256
    cfg = json.loads((src / "config.json").read_text())
    cfg["vocab_size"] = small_vocab
    write_json_pretty = lambda p, o: p.write_text(json.dumps(o, indent=2) + "\n")  # noqa: E731
    write_json_pretty(bad / "config.json", cfg)
    tensors = load_file(str(src / "model.safetensors"))
    tensors = {k: (v[:small_vocab].contiguous() if k in ("model.embed_tokens.weight", "lm_head.weight") else v)
               for k, v in tensors.items()}
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tok_path, bad / "tokenizer.json")

    # bad_arch: llama files, but the config claims an unsupported architecture.
    bad = out / "bad_arch"
    if bad.exists():
        shutil.rmtree(bad)
    bad.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["BloomForCausalLM"]
    cfg["model_type"] = "bloom"
    write_json_pretty(bad / "config.json", cfg)
    shutil.copy(src / "model.safetensors", bad / "model.safetensors")
    shutil.copy(tok_path, bad / "tokenizer.json")

    print("versions:", versions())
    return 0


if __name__ == "__main__":
    sys.exit(main())
