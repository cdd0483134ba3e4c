#!/usr/bin/env python3
"""Each real GGUF's file type and per-type tensor counts, read by the `gguf` Python package.

Writes crates/models/tests/data/gguf_tensor_types.json: for SmolLM2-135M-Instruct Q4_1 and Gemma-3
270M Q4_K_M (the cached files `scripts/fetch_smollm2.sh` / `fetch_gemma3.sh` print), the
`general.file_type` name (`gguf.LlamaFileType`, without `MOSTLY_`) and how many tensors each
`GGMLQuantizationType` holds. `crates/models/tests/gguf_tensor_types.rs` requires the loader's
`ModelInfo.quantization` and `tensor_types` to equal them (what `summary.json` reports as `dtype`
and `dtype_tensors`).

Usage: $(scripts/setup_reference_env.sh)/bin/python scripts/references/ref_gguf_tensor_types.py
"""
import collections
import importlib.metadata
import json
import os
import subprocess
import sys

import gguf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fetch(script):
    out = subprocess.run(["bash", os.path.join(REPO, "scripts", script)], check=True,
                         capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]


def describe(path):
    r = gguf.GGUFReader(path)
    ft = int(r.fields["general.file_type"].parts[-1][0])
    counts = collections.Counter(t.tensor_type.name for t in r.tensors)
    return {
        "file": os.path.basename(path),
        "general.file_type": ft,
        "file_type_name": gguf.LlamaFileType(ft).name.removeprefix("MOSTLY_"),
        "tensor_types": dict(sorted(counts.items())),
        "tensors": len(r.tensors),
    }


def main():
    files = {
        "smollm2": fetch("fetch_smollm2.sh"),
        "gemma3": fetch("fetch_gemma3.sh"),
    }
    out = {
        "generator": "scripts/references/ref_gguf_tensor_types.py",
        "versions": {"gguf": importlib.metadata.version("gguf"),
                     "python": sys.version.split()[0]},
        "models": {k: describe(v) for k, v in files.items()},
    }
    dst = os.path.join(REPO, "crates/models/tests/data/gguf_tensor_types.json")
    with open(dst, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
