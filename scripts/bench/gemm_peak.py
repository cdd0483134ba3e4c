"""Matmul throughput ceiling of this machine for SmolLM2-135M's shapes: PyTorch (MKL) f32
`F.linear` on 2 threads, the operation that dominates an f32 forward. Used in docs/benchmarks.md to
bound what any f32 evaluator can reach here: a run of F FLOPs takes at least F / (this rate).

Usage: /work/.venv-ref/bin/python scripts/bench/gemm_peak.py [--threads 2] [--repeats 20]
"""
import argparse
import json
import time

import torch

# (rows, in, out): a batch of 4 x 512 tokens through q/o, k/v, gate/up and down; the head on the
# 4 x 255 scored rows
SHAPES = [(2048, 576, 576), (2048, 576, 192), (2048, 576, 1536), (2048, 1536, 576), (1020, 576, 49152)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for m, k, n in SHAPES:
        x, w = torch.randn(m, k), torch.randn(n, k)
        for _ in range(3):
            torch.nn.functional.linear(x, w)
        t = time.perf_counter()
        for _ in range(a.repeats):
            torch.nn.functional.linear(x, w)
        dt = (time.perf_counter() - t) / a.repeats
        rows.append({"m": m, "k": k, "n": n, "ms": dt * 1e3, "gflop_per_s": 2 * m * k * n / dt / 1e9})
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "shapes": rows}, indent=1))


if __name__ == "__main__":
    main()
