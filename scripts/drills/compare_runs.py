#!/usr/bin/env python3
"""Checks that a merged sharded run equals an unsharded run (standard library only).

    python3 scripts/drills/compare_runs.py UNSHARDED_DIR MERGED_DIR [--rel 1e-12] [--table]

Compares the two run directories the way issue #15 states "equal":

* `summary.json`: every key of the unsharded summary must be in the merged one (recursively, lists
  element by element), integers and strings and booleans equal, floats equal to `--rel` relative
  (default 1e-12; NaN equals NaN). Run facts that differ by nature are skipped: wall times, throughput,
  timestamps, and the shard provenance a merged run adds (keys only the merged summary has are listed,
  not failed).
* per-token and per-word rows (`tokens.jsonl`, `words.jsonl`; `*.parquet` when pyarrow is importable):
  the same number of rows in the same order, each row with the same keys and values compared as above.
  A rows file the unsharded run wrote that the merged run lacks is a mismatch.

It refuses to pass vacuously: `tokens_scored` must be positive and at least one rows file must have
been compared, unless `--no-rows`. `--table` prints the headline metrics side by side. Exit status:
0 equal, 1 a mismatch (each printed), 2 usage / unreadable input.
"""

import argparse
import json
import math
import os
import sys

# Keys whose values legitimately differ between an unsharded run and a merge of shards.
SKIP_KEYS = {
    "elapsed_seconds",
    "tokens_per_second",
    "started_at",
    "finished_at",
    # shard provenance (the merged summary may say how it was made; the unsharded one cannot)
    "shard",
    "shards",
    "shard_source",
    "shard_index",
    "shard_count",
    "merged_from",
    "merged_shards",
    "merge",
}

HEADLINE = [
    "tokens_scored",
    "bytes_scored",
    "windows",
    "sum_nll_nats",
    "mean_nll_nats",
    "mean_nll_nats_stderr",
    "perplexity",
    "perplexity_ci95",
    "bits_per_byte",
    "mean_entropy_nats",
    "mean_varentropy_nats2",
    "top1_accuracy",
    "calibration_ece",
    "mean_kl_nats",
    "delta_mean_nll_nats",
]


def close(a, b, rel):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return abs(a - b) <= rel * max(abs(a), abs(b))


def diff(a, b, path, rel, out, extra, skip=SKIP_KEYS):
    """Appends to `out` every mismatch between expected `a` and actual `b` below `path`."""
    if isinstance(a, dict):
        if not isinstance(b, dict):
            out.append(f"{path}: expected an object, got {b!r}")
            return
        for k, v in a.items():
            if k in skip:
                continue
            if k not in b:
                out.append(f"{path}.{k}: missing (expected {v!r})")
                continue
            diff(v, b[k], f"{path}.{k}", rel, out, extra, skip)
        for k in b:
            if k not in a and k not in skip:
                extra.append(f"{path}.{k}")
    elif isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            out.append(f"{path}: expected a list of {len(a)}, got {b!r}"[:300])
            return
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", rel, out, extra, skip)
    elif isinstance(a, (int, float)) and not isinstance(a, bool):
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not close(a, b, rel):
            out.append(f"{path}: unsharded {a!r}, merged {b!r}")
        elif isinstance(a, int) != isinstance(b, int):
            out.append(f"{path}: unsharded {a!r} ({type(a).__name__}), merged {b!r} ({type(b).__name__})")
    else:
        if a != b:
            out.append(f"{path}: unsharded {a!r}, merged {b!r}")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_parquet(path):
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError:
        return None
    return iter(pq.read_table(path).to_pylist())


def compare_rows(name, ref_dir, new_dir, rel, problems):
    """Returns the row count compared (None when the unsharded run has no such file)."""
    ref_path = os.path.join(ref_dir, name)
    if not os.path.exists(ref_path):
        return None
    new_path = os.path.join(new_dir, name)
    if not os.path.exists(new_path):
        problems.append(f"{name}: the unsharded run wrote it, the merged run did not")
        return 0
    if name.endswith(".jsonl"):
        ref_rows, new_rows = read_jsonl(ref_path), read_jsonl(new_path)
    else:
        ref_rows, new_rows = read_parquet(ref_path), read_parquet(new_path)
        if ref_rows is None:
            problems.append(f"{name}: cannot compare parquet rows without pyarrow (use --per-token jsonl)")
            return 0
    n = 0
    shown = 0
    sentinel = object()
    while True:
        a = next(ref_rows, sentinel)
        b = next(new_rows, sentinel)
        if a is sentinel and b is sentinel:
            break
        if a is sentinel or b is sentinel:
            more = "merged" if a is sentinel else "unsharded"
            problems.append(f"{name}: row counts differ: the {more} run has more than {n} rows")
            break
        row_problems = []
        diff(a, b, f"{name}[{n}]", rel, row_problems, [], skip=set())
        if set(b) - set(a):
            row_problems.append(f"{name}[{n}]: extra keys {sorted(set(b) - set(a))}")
        if row_problems:
            shown += 1
            if shown <= 10:
                problems.extend(row_problems)
            elif shown == 11:
                problems.append(f"{name}: more row mismatches not shown")
        n += 1
    if shown > 10:
        problems.append(f"{name}: {shown} rows differ")
    return n


def fmt(v):
    if isinstance(v, float):
        return f"{v:.15g}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def reldiff(a, b):
    try:
        if isinstance(a, list):
            return max(reldiff(x, y) for x, y in zip(a, b))
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return float("nan")
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("unsharded")
    ap.add_argument("merged")
    ap.add_argument("--rel", type=float, default=1e-12, help="relative tolerance for floats")
    ap.add_argument("--table", action="store_true", help="print headline metrics side by side")
    ap.add_argument("--no-rows", action="store_true", help="do not require a rows file")
    args = ap.parse_args()

    try:
        with open(os.path.join(args.unsharded, "summary.json"), encoding="utf-8") as f:
            ref = json.load(f)
        with open(os.path.join(args.merged, "summary.json"), encoding="utf-8") as f:
            new = json.load(f)
    except (OSError, ValueError) as e:
        print(f"compare_runs: {e}", file=sys.stderr)
        return 2

    problems, extra = [], []
    diff(ref, new, "summary", args.rel, problems, extra)
    if not (isinstance(ref.get("tokens_scored"), int) and ref["tokens_scored"] > 0):
        problems.append(f"summary.tokens_scored: {ref.get('tokens_scored')!r} is not a positive count")

    counts = {}
    for name in ("tokens.jsonl", "tokens.parquet", "words.jsonl", "words.parquet"):
        n = compare_rows(name, args.unsharded, args.merged, args.rel, problems)
        if n is not None:
            counts[name] = n
    if not args.no_rows and not any(counts.values()):
        problems.append("no per-token rows compared (the unsharded run wrote no tokens.* file)")
    if "tokens.jsonl" in counts and counts["tokens.jsonl"] != ref.get("tokens_scored"):
        problems.append(
            f"tokens.jsonl has {counts['tokens.jsonl']} rows, summary says {ref.get('tokens_scored')} tokens"
        )

    if args.table:
        print(f"{'key':<24} {'unsharded':>40} {'merged':>40} {'rel diff':>9}")
        for k in HEADLINE:
            if k in ref and ref[k] is not None:
                print(f"{k:<24} {fmt(ref[k]):>40} {fmt(new.get(k)):>40} {reldiff(ref[k], new.get(k)):>9.1e}")
    identical = [
        n
        for n in counts
        if os.path.exists(os.path.join(args.merged, n))
        and open(os.path.join(args.unsharded, n), "rb").read() == open(os.path.join(args.merged, n), "rb").read()
    ]
    rows = ", ".join(f"{n} {c} rows" for n, c in counts.items()) or "no rows files"
    if extra:
        print(f"keys only in the merged summary (not compared): {', '.join(extra)}")
    if problems:
        for p in problems:
            print(f"MISMATCH {p}", file=sys.stderr)
        print(f"compare_runs: {len(problems)} mismatch(es) between {args.unsharded} and {args.merged}", file=sys.stderr)
        return 1
    print(
        f"OK: merged == unsharded (tokens_scored {ref['tokens_scored']}, {rows}; "
        f"byte-identical: {', '.join(identical) or 'none'}; floats to {args.rel:g} relative)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
