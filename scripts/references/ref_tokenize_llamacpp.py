#!/usr/bin/env python3
"""Reference token ids from llama.cpp's `llama-tokenize` for whole data files, per GGUF tokenizer.

For each model (Gemma-3 270M: SentencePiece; SmolLM2-135M: byte-level BPE) and each text, runs
  llama-tokenize -m GGUF -f FILE --ids --no-bos --no-escape --no-parse-special --log-disable
(built by scripts/build_llama_cpp.sh; --no-escape: the file's bytes verbatim, a literal "\\n" stays two
characters; --no-parse-special: a literal "<eos>" in the text is text, as llama-perplexity tokenizes;
--no-bos: ids of the text alone, BOS being the runner's business) and records, per text:
  n_tokens, sha256 of the ids (each a little-endian u32, concatenated), the first 256 ids, and the
  first 16 hex digits of the sha256 of every block of 4096 ids (so a test can say where a difference
  starts).
For each model it also records whether llama.cpp's default parse_special=true would tokenize the
text differently (it does only where a control token's text occurs in it).

A third tokenizer, "gemma3_space_prefix", covers SentencePiece's leading space (Llama-2 and Mistral
v0.1 GGUFs have tokenizer.ggml.add_space_prefix = true; no such model is fetched here): Gemma-3's
metadata with that flag set to true, written without tensors to a temporary GGUF (llama-tokenize loads
the vocabulary only). llama.cpp then puts "▁" before the text and after every user-defined token it
cuts out (Gemma's newline, tab and space runs). The Rust test sets the same flag on the same metadata.

Texts (the whole file unless said): WikiText-2 raw test, Tiny Shakespeare, the LAMBADA jsonl file as
raw bytes, LAMBADA's decoded "text" fields joined by "\\n\\n" (written to a temporary file; this is where
its non-ASCII characters are), and datasets/sample.txt.

Output: crates/models/tests/data/tokenize_llamacpp.json (small: no whole-file id lists).
Usage: $(scripts/setup_reference_env.sh)/bin/python scripts/references/ref_tokenize_llamacpp.py [--datasets DIR] [--out JSON]
(needs the `gguf` package of the reference venv for the space-prefix variant)
"""
import argparse
import hashlib
import json
import os
import platform
import re
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
BLOCK = 4096
HEAD = 256

MODELS = {
    "gemma3": ("scripts/fetch_gemma3.sh", "gemma-3-270m-q4_k_m.gguf"),
    "smollm2": ("scripts/fetch_smollm2.sh", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3_space_prefix": ("scripts/fetch_gemma3.sh", "gemma-3-270m-q4_k_m.gguf"),
}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ids_sha256(ids):
    return hashlib.sha256(struct.pack(f"<{len(ids)}I", *ids)).hexdigest()


def tokenize(binp, gguf, path, parse_special=False):
    cmd = [binp, "-m", gguf, "-f", path, "--ids", "--no-bos", "--no-escape", "--log-disable"]
    if not parse_special:
        cmd.append("--no-parse-special")
    out = subprocess.run(cmd, capture_output=True, check=True).stdout.decode()
    line = [l for l in out.splitlines() if l.startswith("[")][-1]
    return json.loads(line)


def with_space_prefix(src, dst):
    """Copy of src's metadata (no tensors) with tokenizer.ggml.add_space_prefix = true."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(src)
    w = GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        v = True if k == "tokenizer.ggml.add_space_prefix" else f.contents()
        t = f.types[0]
        if t == GGUFValueType.ARRAY:
            w.add_key_value(k, v, t, sub_type=f.types[-1])
        else:
            w.add_key_value(k, v, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default=os.path.join(REPO, "..", "shared", "datasets"))
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "models", "tests", "data", "tokenize_llamacpp.json"))
    args = ap.parse_args()
    ds = os.path.abspath(args.datasets)

    binp = subprocess.run(["bash", os.path.join(REPO, "scripts", "build_llama_cpp.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()
    tok_bin = os.path.join(os.path.dirname(binp), "llama-tokenize")
    build = os.path.dirname(os.path.dirname(binp))
    vend = os.path.join(CACHE, "llama.cpp", "llama_cpp_python-0.3.36", "vendor", "llama.cpp")
    ver = subprocess.run([tok_bin, "--version"], capture_output=True, text=True)
    cpu_flags = open(os.path.join(build, "cpu-flags")).read().strip() if os.path.exists(os.path.join(build, "cpu-flags")) else None

    tmp = tempfile.mkdtemp()
    lambada = os.path.join(ds, "lambada_openai.test.jsonl")
    joined = os.path.join(tmp, "lambada_texts.txt")
    with open(lambada, encoding="utf-8") as f:
        texts = [json.loads(l)["text"] for l in f if l.strip()]
    with open(joined, "w", encoding="utf-8", newline="") as f:
        f.write("\n\n".join(texts))
    # (name, path given to llama-tokenize, how the test rebuilds the text, path relative to the repo)
    texts = [
        ("wikitext-2-raw-v1.test.raw", os.path.join(ds, "wikitext-2-raw-v1.test.raw"), "file", "../shared/datasets/wikitext-2-raw-v1.test.raw"),
        ("tinyshakespeare.txt", os.path.join(ds, "tinyshakespeare.txt"), "file", "../shared/datasets/tinyshakespeare.txt"),
        ("lambada_openai.test.jsonl", lambada, "file", "../shared/datasets/lambada_openai.test.jsonl"),
        ("lambada_openai.test.jsonl texts", joined, "jsonl_texts_joined_by_blank_line", "../shared/datasets/lambada_openai.test.jsonl"),
        ("sample.txt", os.path.join(REPO, "datasets", "sample.txt"), "file", "datasets/sample.txt"),
    ]

    res = {
        "source": "llama.cpp llama-tokenize (tools/tokenize), vocab only",
        "script": "scripts/references/ref_tokenize_llamacpp.py",
        "command": "llama-tokenize -m GGUF -f FILE --ids --no-bos --no-escape --no-parse-special --log-disable",
        "versions": {
            "llama_cpp_python_sdist": "0.3.36",
            "llama_cpp_version": (ver.stdout + ver.stderr).strip().splitlines()[0] if (ver.stdout + ver.stderr).strip() else None,
            "llama_cpp_commit": subprocess.run(["git", "-C", vend, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None,
            "llama_cpp_cpu_flags": cpu_flags,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "ids_sha256_note": "sha256 of the ids as little-endian u32, concatenated",
        "block": BLOCK,
        "models": {},
    }
    for key, (fetch, fname) in MODELS.items():
        gguf = subprocess.run(["bash", os.path.join(REPO, fetch)], check=True, capture_output=True, text=True).stdout.strip()
        m = {"model_file": fname, "model_sha256": sha256_file(gguf), "fetch": fetch, "texts": []}
        if key == "gemma3_space_prefix":
            synth = os.path.join(tmp, "gemma3_space_prefix.gguf")
            with_space_prefix(gguf, synth)
            m["derived"] = "the metadata of model_file with tokenizer.ggml.add_space_prefix = true, no tensors"
            gguf = synth
        for name, path, how, rel in texts:
            t0 = time.time()
            ids = tokenize(tok_bin, gguf, path)
            secs = time.time() - t0
            special_ids = tokenize(tok_bin, gguf, path, parse_special=True)
            raw = open(path, "rb").read()
            m["texts"].append({
                "name": name,
                "path": rel,
                "text": how,
                "text_sha256": hashlib.sha256(raw).hexdigest(),
                "text_bytes": len(raw),
                "n_tokens": len(ids),
                "ids_sha256": ids_sha256(ids),
                "block_sha256_16": [ids_sha256(ids[i:i + BLOCK])[:16] for i in range(0, len(ids), BLOCK)],
                "first_ids": ids[:HEAD],
                "parse_special_changes_ids": special_ids != ids,
                "llama_tokenize_seconds": round(secs, 2),
            })
            print(f"{key} {name}: {len(ids)} tokens ({secs:.1f}s), parse_special changes ids: {special_ids != ids}", file=sys.stderr)
        res["models"][key] = m
    write_json(res, args.out)
    print(args.out)


def write_json(res, path):
    """Indented JSON with each list of numbers or hashes on one line (keeps the file small)."""
    text = json.dumps(res, indent=1)
    text = re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",\n")) + "]", text)
    with open(path, "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
