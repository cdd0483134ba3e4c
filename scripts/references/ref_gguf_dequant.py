#!/usr/bin/env python3
"""Random GGUF quantized blocks and their dequantization by the `gguf` Python package.

For each type, draws random blocks with NumPy (fixed seed): every byte uniform, except the f16
scale fields, drawn as finite values in [-2, 2] (a random f16 bit pattern can be Inf/NaN, which
neither ggml nor this package treat as data). F16 / BF16 are random finite values. Dequantizes them
with `gguf.quants.dequantize` (an implementation independent of ggml's C and of ours) and writes
  crates/models/tests/data/gguf_dequant/<TYPE>.bin   raw blocks, as stored in a GGUF
  crates/models/tests/data/gguf_dequant/<TYPE>.f32   expected values, little-endian f32
  crates/models/tests/data/gguf_dequant/manifest.json  types, counts, versions, seed
The Rust test (crates/models/tests/gguf_dequant.rs) requires its dequantization to equal these bit
for bit.

Usage: $(scripts/setup_reference_env.sh)/bin/python scripts/references/ref_gguf_dequant.py [--out DIR]
"""
import argparse
import json
import os
import platform
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEED = 20261207

# (type, number of values, byte offsets of f16 scale fields inside a block)
TYPES = [
    (T.Q4_0, 4096, [0]),
    (T.Q4_1, 4096, [0, 2]),
    (T.Q5_0, 4096, [0]),
    (T.Q5_1, 4096, [0, 2]),
    (T.Q8_0, 4096, [0]),
    (T.Q2_K, 4096, [80, 82]),
    (T.Q3_K, 4096, [108]),
    (T.Q4_K, 4096, [0, 2]),
    (T.Q5_K, 4096, [0, 2]),
    (T.Q6_K, 4096, [208]),
    (T.IQ4_NL, 4096, [0]),
    (T.IQ4_XS, 4096, [0]),
    (T.F16, 1024, None),
    (T.BF16, 1024, None),
]


def blocks(rng, qt, n, f16_offsets):
    block_size, type_size = gguf.GGML_QUANT_SIZES[qt]
    nb = n // block_size
    if qt == T.F16:
        return rng.uniform(-4, 4, n).astype(np.float16).view(np.uint8)
    if qt == T.BF16:
        f = rng.uniform(-4, 4, n).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, size=(nb, type_size), dtype=np.uint8)
    for off in f16_offsets:
        d = rng.uniform(-2, 2, nb).astype(np.float16)
        raw[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return raw.reshape(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "crates", "models", "tests", "data", "gguf_dequant"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(SEED)
    manifest = {
        "generator": "scripts/references/ref_gguf_dequant.py",
        "seed": SEED,
        "versions": {"gguf": _version("gguf"), "numpy": np.__version__, "python": platform.python_version()},
        "types": [],
    }
    for qt, n, offs in TYPES:
        raw = blocks(rng, qt, n, offs)
        vals = dequantize(raw, qt).astype(np.float32).reshape(-1)
        assert vals.size == n, (qt.name, vals.size)
        assert np.isfinite(vals).all(), qt.name
        raw.tofile(os.path.join(args.out, f"{qt.name}.bin"))
        vals.astype("<f4").tofile(os.path.join(args.out, f"{qt.name}.f32"))
        manifest["types"].append({"type": qt.name, "values": n, "bytes": int(raw.size)})
        print(f"{qt.name}: {n} values, {raw.size} bytes", file=sys.stderr)
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def _version(pkg):
    from importlib.metadata import version
    return version(pkg)


if __name__ == "__main__":
    main()
