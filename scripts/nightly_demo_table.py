#!/usr/bin/env python3
"""Markdown tables of the nightly demo (docs/nightly-demo.md) from its run directories; stdlib only.

  python3 scripts/nightly_demo_table.py [DEMO]     # DEMO default ~/.cache/surprisal/demo

Table 1: checkpoint step x dataset -> mean_nll_nats +- 1.96 * stderr (95 % CI), tokens scored.
Table 2: every gate under DEMO/runs/gates: exit code and the gate's result line.
Until `surprisal history` exists this stands in for it; it reads only summary.json and gate output.
"""
import json
import math
import os
import re
import sys

demo = os.path.expanduser(sys.argv[1] if len(sys.argv) > 1 else "~/.cache/surprisal/demo")
ft = os.path.join(demo, "runs", "ft")
datasets = sorted(os.listdir(ft)) if os.path.isdir(ft) else []


def step(name):
    m = re.search(r"checkpoint-(\d+)$", name)
    return int(m.group(1)) if m else -1


rows = {}
for d in datasets:
    for run in os.listdir(os.path.join(ft, d)):
        p = os.path.join(ft, d, run, "summary.json")
        if os.path.exists(p):
            s = json.load(open(p))
            rows.setdefault(step(run), {})[d] = s
print("| step | " + " | ".join(f"{d}: mean NLL (nats) ± 95% CI | PPL | tokens" for d in datasets) + " |")
print("|---:|" + "---:|---:|---:|" * len(datasets))
for st in sorted(rows):
    cells = []
    for d in datasets:
        s = rows[st].get(d)
        if s is None:
            cells += ["–", "–", "–"]
        else:
            cells += [f"{s['mean_nll_nats']:.4f} ± {1.96 * s['mean_nll_nats_stderr']:.4f}",
                      f"{math.exp(s['mean_nll_nats']):.2f}", str(s["tokens_scored"])]
    print(f"| {st} | " + " | ".join(cells) + " |")

gates = os.path.join(demo, "runs", "gates")
if os.path.isdir(gates):
    print()
    print("| gate | exit | result |")
    print("|---|---:|---|")
    for f in sorted(os.listdir(gates)):
        if not f.endswith(".txt"):
            continue
        n = f[:-4]
        rc = open(os.path.join(gates, n + ".rc")).read().strip() if os.path.exists(os.path.join(gates, n + ".rc")) else "?"
        res = [l for l in open(os.path.join(gates, f)) if l.startswith("[")]
        print(f"| {n} | {rc} | {' / '.join(l.strip() for l in res)} |")
