#!/usr/bin/env python3
"""Writes the small hand-made seed inputs under fuzz/seeds/ (GGUF and safetensors/config targets).

Run with the reference venv (needs `gguf`, `numpy`, `safetensors`):

    /work/.venv-ref/bin/python fuzz/make_seeds.py

The Parquet seeds come from `cargo run --manifest-path fuzz/Cargo.toml --bin make_parquet_seeds`
(there is no pyarrow here); the JSONL and TOML seeds are plain text files checked in as they are.
Everything is tiny (a few KB per file) so libFuzzer's default max_len stays small.
"""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import gguf
from safetensors.numpy import save as st_save

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
# Must match SEPARATOR in fuzz_targets/safetensors_config.rs.
SEPARATOR = b"\n@@model.safetensors@@\n"

rng = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 0.1).astype(dtype)


# --- GGUF -------------------------------------------------------------------------------------

# A few-token byte-level BPE vocabulary: ids 0..15.
TOKENS = [
    "<|endoftext|>", "a", "b", "c", "d", "Ġ", "\u010a", "ab", "cd", "Ġa", "Ġab", "abc", "e", "f",
    "<|user|>", "ĠĠ",
]
MERGES = ["a b", "c d", "Ġ a", "Ġa b", "ab c", "Ġ Ġ"]
# 1 normal, 3 control, 4 user-defined
TYPES = [3] + [1] * 13 + [4, 1]


def gguf_bytes(arch, *, hidden, heads, kv_heads, head_dim, ff, layers, qtype=None,
               qk_norm=False, qkv_bias=False, untied=False, pre="gpt2", types=True,
               freq_factors=False, rope_dim=None):
    vocab = len(TOKENS)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.gguf")
        w = gguf.GGUFWriter(path, arch)
        w.add_context_length(64)
        w.add_embedding_length(hidden)
        w.add_block_count(layers)
        w.add_feed_forward_length(ff)
        w.add_head_count(heads)
        w.add_head_count_kv(kv_heads)
        if head_dim * heads != hidden:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        w.add_rope_dimension_count(rope_dim or head_dim)
        w.add_layer_norm_rms_eps(1e-6)
        w.add_rope_freq_base(10000.0)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(TOKENS)
        if types:
            w.add_token_types(TYPES)
        w.add_token_merges(MERGES)
        w.add_bos_token_id(0)
        w.add_eos_token_id(0)
        w.add_add_bos_token(True)

        def t(name, arr):
            if qtype is not None and arr.ndim == 2:
                q = gguf.quants.quantize(arr, qtype)
                w.add_tensor(name, q, raw_dtype=qtype)
            else:
                w.add_tensor(name, arr)

        t("token_embd.weight", rand(vocab, hidden))
        if untied:
            t("output.weight", rand(vocab, hidden))
        w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
        if freq_factors:
            w.add_tensor("rope_freqs.weight", np.ones(head_dim // 2, np.float32))
        for i in range(layers):
            p = f"blk.{i}."
            w.add_tensor(p + "attn_norm.weight", np.ones(hidden, np.float32))
            w.add_tensor(p + "ffn_norm.weight", np.ones(hidden, np.float32))
            t(p + "attn_q.weight", rand(heads * head_dim, hidden))
            t(p + "attn_k.weight", rand(kv_heads * head_dim, hidden))
            t(p + "attn_v.weight", rand(kv_heads * head_dim, hidden))
            t(p + "attn_output.weight", rand(hidden, heads * head_dim))
            if qkv_bias:
                w.add_tensor(p + "attn_q.bias", rand(heads * head_dim))
                w.add_tensor(p + "attn_k.bias", rand(kv_heads * head_dim))
                w.add_tensor(p + "attn_v.bias", rand(kv_heads * head_dim))
            if qk_norm:
                w.add_tensor(p + "attn_q_norm.weight", np.ones(head_dim, np.float32))
                w.add_tensor(p + "attn_k_norm.weight", np.ones(head_dim, np.float32))
            t(p + "ffn_gate.weight", rand(ff, hidden))
            t(p + "ffn_up.weight", rand(ff, hidden))
            t(p + "ffn_down.weight", rand(hidden, ff))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return Path(path).read_bytes()


def write_gguf_seeds():
    out = SEEDS / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    seeds = {
        "llama_f32.gguf": gguf_bytes("llama", hidden=16, heads=2, kv_heads=1, head_dim=8, ff=32,
                                     layers=1),
        "llama_q8_0_untied.gguf": gguf_bytes(
            "llama", hidden=32, heads=2, kv_heads=2, head_dim=16, ff=32, layers=1,
            qtype=gguf.GGMLQuantizationType.Q8_0, untied=True, pre="llama-bpe",
            freq_factors=True),
        "llama_q4_1.gguf": gguf_bytes(
            "llama", hidden=32, heads=2, kv_heads=1, head_dim=16, ff=32, layers=1,
            qtype=gguf.GGMLQuantizationType.Q4_1, pre="smollm"),
        "qwen2_f16.gguf": gguf_bytes("qwen2", hidden=16, heads=2, kv_heads=1, head_dim=8, ff=16,
                                     layers=1, qtype=gguf.GGMLQuantizationType.F16,
                                     qkv_bias=True, pre="qwen2", types=False),
        "qwen3_f32.gguf": gguf_bytes("qwen3", hidden=16, heads=2, kv_heads=1, head_dim=16, ff=16,
                                     layers=1, qk_norm=True, pre="default"),
    }
    for name, data in seeds.items():
        (out / name).write_bytes(data)
        # A truncated copy: the header and part of the metadata only.
        (out / ("truncated_" + name)).write_bytes(data[: len(data) // 3])


# --- safetensors + config.json ----------------------------------------------------------------

FIXTURES = HERE.parent / "crates" / "models" / "tests" / "fixtures"
VOCAB = 384  # the fixture tokenizer.json's vocabulary


def st_bytes(cfg, dtype):
    h, ff = cfg["hidden_size"], cfg["intermediate_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", h // nh)
    arch = cfg["architectures"][0]
    ts = {
        "model.embed_tokens.weight": rand(VOCAB, h, dtype=dtype),
        "model.norm.weight": np.ones(h, dtype),
    }
    if not cfg.get("tie_word_embeddings", False):
        ts["lm_head.weight"] = rand(VOCAB, h, dtype=dtype)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        ts[p + "input_layernorm.weight"] = np.ones(h, dtype)
        ts[p + "post_attention_layernorm.weight"] = np.ones(h, dtype)
        ts[p + "self_attn.q_proj.weight"] = rand(nh * hd, h, dtype=dtype)
        ts[p + "self_attn.k_proj.weight"] = rand(nkv * hd, h, dtype=dtype)
        ts[p + "self_attn.v_proj.weight"] = rand(nkv * hd, h, dtype=dtype)
        ts[p + "self_attn.o_proj.weight"] = rand(h, nh * hd, dtype=dtype)
        if arch == "Qwen2ForCausalLM":
            for n, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                ts[p + f"self_attn.{n}_proj.bias"] = rand(rows, dtype=dtype)
        if arch == "Qwen3ForCausalLM":
            ts[p + "self_attn.q_norm.weight"] = np.ones(hd, dtype)
            ts[p + "self_attn.k_norm.weight"] = np.ones(hd, dtype)
        ts[p + "mlp.gate_proj.weight"] = rand(ff, h, dtype=dtype)
        ts[p + "mlp.up_proj.weight"] = rand(ff, h, dtype=dtype)
        ts[p + "mlp.down_proj.weight"] = rand(h, ff, dtype=dtype)
    return st_save(ts)


def write_safetensors_seeds():
    out = SEEDS / "safetensors_config"
    out.mkdir(parents=True, exist_ok=True)
    tiny = {
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_hidden_layers": 1,
        "max_position_embeddings": 64,
    }
    variants = [
        ("llama", np.float16, {}),
        ("llama3_rope", np.float32, {}),
        ("mistral", np.float16, {"sliding_window": 4, "tie_word_embeddings": False}),
        ("qwen2", np.float16, {}),
        ("qwen3", np.float16, {"head_dim": 4}),
    ]
    for name, dtype, extra in variants:
        cfg = json.loads((FIXTURES / name / "config.json").read_text())
        cfg.update(tiny)
        cfg.pop("head_dim", None)
        cfg.update(extra)
        config = json.dumps(cfg, indent=2).encode()
        (out / f"{name}.bin").write_bytes(config + SEPARATOR + st_bytes(cfg, dtype))
        # config.json alone (no weights part): exercises the config parser only.
        (out / f"{name}_config_only.bin").write_bytes(
            (FIXTURES / name / "config.json").read_bytes())
    for name in ("bad_arch", "bad_vocab"):
        (out / f"{name}_config_only.bin").write_bytes(
            (FIXTURES / name / "config.json").read_bytes())


if __name__ == "__main__":
    write_gguf_seeds()
    write_safetensors_seeds()
    total = sum(p.stat().st_size for p in SEEDS.rglob("*") if p.is_file())
    print(f"seeds under {SEEDS}: {total} bytes")
