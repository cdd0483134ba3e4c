#!/usr/bin/env python3
"""Make float32 copies of SmolLM2-135M-Instruct from its Q4_1 GGUF (for `surprisal compare` and benchmarks).

1. transformers loads the Q4_1 GGUF dequantized to float32 (gguf_file=...) and save_pretrained writes a
   Hugging Face directory (model.safetensors, config.json, tokenizer.json, ...) to
   <cache>/models/SmolLM2-135M-Instruct-f32-hf.
2. llama.cpp's convert_hf_to_gguf.py (from the vendored llama.cpp that scripts/build_llama_cpp.sh unpacks)
   converts that directory with --outtype f32 to <cache>/models/SmolLM2-135M-Instruct-f32.gguf.

Both steps are skipped when their output is already there (delete it to redo). Nothing is written to the
repository. The log (stderr) and <hf dir>/surprisal_provenance.json record the versions used.

The weights are the Q4_1 (Q8_0 for token_embd) values dequantized exactly: f32 holds every dequantized value
exactly, so the f32 model computes the same function as `--dequantize` on the Q4_1 GGUF.

Usage: /work/.venv-ref/bin/python scripts/references/make_smollm2_f32.py [--gguf Q4_1.gguf] [--hf-out DIR] [--gguf-out FILE]
Env: SURPRISAL_CACHE (default ~/.cache/surprisal), LLAMA_CPP_SRC (default the vendored llama.cpp in the cache).
"""
import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
MODELS = os.path.join(CACHE, "models")
LLAMA_SRC = os.environ.get(
    "LLAMA_CPP_SRC", os.path.join(CACHE, "llama.cpp", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
)


def log(*a):
    print("[make_smollm2_f32]", *a, file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions():
    from importlib.metadata import version

    v = {"python": platform.python_version(), "platform": platform.platform()}
    for p in ("torch", "transformers", "tokenizers", "safetensors", "gguf", "numpy", "accelerate"):
        try:
            v[p] = version(p)
        except Exception:
            v[p] = None
    commit = subprocess.run(["git", "-C", LLAMA_SRC, "rev-parse", "HEAD"], capture_output=True, text=True)
    v["llama_cpp_commit"] = commit.stdout.strip() or None
    v["llama_cpp_src"] = LLAMA_SRC
    try:
        with open(os.path.join(LLAMA_SRC, "gguf-py", "pyproject.toml")) as f:
            v["llama_cpp_gguf_py"] = next(l.split('"')[1] for l in f if l.startswith("version"))
    except Exception:
        v["llama_cpp_gguf_py"] = None
    return v


def make_hf(gguf_path, out_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(os.path.abspath(gguf_path))
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model carries a "gguf" quantizer and refuses save_pretrained: rebuild a plain float32
    # model from the same config (without quantization_config) and copy the dequantized weights over.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    sd = loaded.state_dict()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k == "lm_head.weight" for k in missing) and config.tie_word_embeddings, missing
    for k, t in model.state_dict().items():
        assert torch.equal(t, sd[k]) and t.dtype == torch.float32, k
    model.eval()
    tmp = out_dir + ".partial"
    if os.path.exists(tmp):
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    os.rename(tmp, out_dir)
    log(f"wrote {out_dir} in {time.time() - t0:.1f}s: tie_word_embeddings={model.config.tie_word_embeddings}, "
        f"params={sum(p.numel() for p in model.parameters())}")


def make_gguf(hf_dir, out_file):
    conv = os.path.join(LLAMA_SRC, "convert_hf_to_gguf.py")
    if not os.path.exists(conv):
        sys.exit(f"{conv} not found: run scripts/build_llama_cpp.sh first (or set LLAMA_CPP_SRC)")
    tmp = out_file + ".partial"
    cmd = [sys.executable, conv, hf_dir, "--outtype", "f32", "--outfile", tmp]
    log("running:", " ".join(cmd))
    t0 = time.time()
    subprocess.run(cmd, check=True)
    os.rename(tmp, out_file)
    log(f"wrote {out_file} in {time.time() - t0:.1f}s")
    return cmd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--hf-out", default=os.path.join(MODELS, "SmolLM2-135M-Instruct-f32-hf"))
    ap.add_argument("--gguf-out", default=os.path.join(MODELS, "SmolLM2-135M-Instruct-f32.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    torch.set_num_threads(args.threads)
    v = versions()
    log("versions:", json.dumps(v))

    if os.path.exists(os.path.join(args.hf_out, "model.safetensors")):
        log(f"{args.hf_out} exists, skipping the transformers step")
    else:
        make_hf(args.gguf, args.hf_out)

    conv_cmd = None
    if os.path.exists(args.gguf_out):
        log(f"{args.gguf_out} exists, skipping convert_hf_to_gguf.py")
    else:
        conv_cmd = make_gguf(args.hf_out, args.gguf_out)

    prov_path = os.path.join(args.hf_out, "surprisal_provenance.json")
    if not os.path.exists(prov_path):
        prov = {
            "script": "scripts/references/make_smollm2_f32.py",
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source_gguf": os.path.basename(args.gguf),
            "source_gguf_sha256": sha256_file(args.gguf),
            "hf_dir": args.hf_out,
            "f32_gguf": args.gguf_out,
            "f32_gguf_sha256": sha256_file(args.gguf_out),
            "convert_command": conv_cmd,
            "versions": v,
        }
        with open(prov_path, "w") as f:
            json.dump(prov, f, indent=1)
            f.write("\n")
    for p in (args.gguf, os.path.join(args.hf_out, "model.safetensors"), args.gguf_out):
        log(f"{os.path.getsize(p):>12} bytes  {p}")
    print(args.hf_out)
    print(args.gguf_out)


if __name__ == "__main__":
    main()
