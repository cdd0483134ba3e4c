#!/usr/bin/env python3
"""Dumps llama.cpp's intermediate tensors (eval callback) for the first N reference tokens.

Every graph node llama.cpp names (attn_norm-0, Qcur-0, kq-0, kq_soft_max-0, kqv_out-0, ffn_out-0,
l_out-0, result_norm, result_output, ...) is copied (contiguous, in ggml's ne order reversed, i.e.
numpy shape (ne3, ne2, ne1, ne0)) to OUT/<name>.npy; a name seen again gets a .1, .2 suffix.
Same llama.cpp and settings as scripts/references/ref_smollm2_llamacpp.py (one batch, no flash-attn), but
n_threads defaults to 1.

Usage: /work/.venv-ref/bin/python scripts/references/dump_llamacpp_tensors.py [--n 8] [--out /tmp/lc_dump]
Compare with ours: SURPRISAL_DUMP_DIR=/tmp/ours cargo run --release -p surprisal-models --example score --
  <model.gguf> --ids crates/models/tests/data/smollm2_llamacpp.json --first 8  (crates/models/src/llama_cpp.rs).
"""
import argparse
import ctypes
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
LLAMA_ROOT = os.path.join(CACHE, "llama.cpp")
SDIST = os.path.join(LLAMA_ROOT, "llama_cpp_python-0.3.36")
LIBDIR = os.path.join(LLAMA_ROOT, "build", "bin")


class GgmlTensor(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--ids", default=os.path.join(REPO, "crates", "models", "tests", "data", "smollm2_llamacpp.json"))
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--out", default="/tmp/lc_dump")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=4096)
    args = ap.parse_args()

    os.environ["LLAMA_CPP_LIB_PATH"] = LIBDIR
    sys.path.insert(0, SDIST)
    import numpy as np
    import llama_cpp as lc

    with open(args.ids) as f:
        ids = [int(t) for t in json.load(f)["token_ids"]][: args.n]
    os.makedirs(args.out, exist_ok=True)
    seen = {}
    # f32 = 0, f16 = 1
    np_types = {0: np.float32, 1: np.float16}

    def cb(tp, ask, _ud):
        t = GgmlTensor.from_address(tp)
        if ask:
            return True
        name = t.name.decode(errors="replace")
        if t.type not in np_types or not t.data:
            return True
        dt = np_types[t.type]
        ne = list(t.ne)
        nb = list(t.nb)
        itemsize = np.dtype(dt).itemsize
        span = sum((n - 1) * s for n, s in zip(ne, nb)) + itemsize
        buf = (ctypes.c_char * span).from_address(t.data)
        a = np.frombuffer(buf, dtype=np.uint8)
        arr = np.lib.stride_tricks.as_strided(
            a.view(dt) if span % itemsize == 0 else a[: span - span % itemsize].view(dt),
            shape=ne[::-1], strides=nb[::-1]).copy()
        k = seen.get(name, 0)
        seen[name] = k + 1
        fn = name if k == 0 else f"{name}.{k}"
        np.save(os.path.join(args.out, fn.replace("/", "_") + ".npy"), arr.astype(np.float32))
        return True

    cb_c = lc.ggml_backend_sched_eval_callback(cb)
    lc.llama_backend_init()
    mp = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(args.model.encode(), mp)
    cp = lc.llama_context_default_params()
    cp.n_ctx = args.n_ctx
    cp.n_batch = args.n_ctx
    cp.n_ubatch = args.n_ctx
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    cp.flash_attn_type = 0 if hasattr(cp, "flash_attn_type") else None
    if hasattr(cp, "flash_attn"):
        cp.flash_attn = False
    cp.cb_eval = cb_c
    cp.cb_eval_user_data = None
    ctx = lc.llama_init_from_model(model, cp)
    n = len(ids)
    batch = lc.llama_batch_init(n, 0, 1)
    for i, tok in enumerate(ids):
        batch.token[i] = tok
        batch.pos[i] = i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = 1
    batch.n_tokens = n
    rc = lc.llama_decode(ctx, batch)
    assert rc == 0, rc
    vocab = lc.llama_n_vocab(lc.llama_model_get_vocab(model))
    logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(n, vocab)).copy()
    np.save(os.path.join(args.out, "logits.npy"), logits)
    np.save(os.path.join(args.out, "ids.npy"), np.array(ids))
    print(f"{len(seen)} names -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
