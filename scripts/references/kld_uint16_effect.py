#!/usr/bin/env python3
"""How much llama.cpp's 16-bit storage of the base log-probs moves its KL divergence.

`llama-perplexity --kl-divergence` (scripts/references/ref_llamacpp_kld.sh) does not see the base model's logits: pass 1
stores, per scored position, the base log-probs linearly quantized to uint16 over [max_logit - 16, max_logit]
(step (max - min)/65535 <= 2.44e-4 nats; everything below max_logit - 16 collapses to the bottom code), and
pass 2 then sums p_base * (log p_base - log q) in float32 over only the vocabulary entries with
log p_base > -16. This script takes the SAME tokens (read from the base file), gets full float32 logits of
both models from the same llama.cpp build (llama_cpp Python package, one sequence per chunk, no flash
attention), and computes per scored position:
  exact   : KL(base || Q) over the full vocabulary in float64 (what `surprisal compare` computes)
  file    : llama.cpp's pass-2 formula (emulated in numpy float32) on the uint16 codes read from the base file
  emulated: the same formula on codes quantized here from our own base logits (checks the emulation)
and the same for the target NLL of the base model, PPL(base), ln(PPL(Q)/PPL(base)) and top-1 agreement.
The summary is merged into crates/cli/tests/data/llamacpp_kld_c512_chunks40.json under "uint16_effect".

With --flash-attn 1 (default) the uint16 codes computed here equal the base file's bit for bit, i.e. the logits are
llama-perplexity's own; --flash-attn 0 shows how much flash attention alone moves the KL.

Usage: /work/.venv-ref/bin/python scripts/references/kld_uint16_effect.py [--base-file KLD] [--chunks N] [--flash-attn 0|1]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("SURPRISAL_CACHE", os.path.expanduser("~/.cache/surprisal"))
LLAMA_ROOT = os.path.join(CACHE, "llama.cpp")
SDIST = os.path.join(LLAMA_ROOT, "llama_cpp_python-0.3.36")
LIBDIR = os.path.join(LLAMA_ROOT, "build", "bin")
OUT = os.path.join(REPO, "crates", "cli", "tests", "data", "llamacpp_kld_c512_chunks40.json")


def read_base_header(path):
    import numpy as np

    with open(path, "rb") as f:
        assert f.read(8) == b"_logits_", "not a llama.cpp base log-prob file"
        n_ctx = int(np.frombuffer(f.read(4), np.uint32)[0])
        n_vocab, n_chunk = (int(x) for x in np.frombuffer(f.read(8), np.int32))
        tokens = np.frombuffer(f.read(4 * n_ctx * n_chunk), np.int32).copy()
        off = f.tell()
    return n_ctx, n_vocab, n_chunk, tokens, off


def quantize_like_llama_cpp(logits):
    """logits: [T, V] float32 -> (codes uint16 [T, V], scale f32 [T], min_log_prob f32 [T]) as in perplexity.cpp."""
    import numpy as np

    mx = logits.max(axis=1)
    mn = np.maximum(logits.min(axis=1), mx - np.float32(16))
    sum_exp = np.exp((logits - mx[:, None]).astype(np.float32)).astype(np.float64).sum(axis=1)
    lse = np.log(sum_exp).astype(np.float32)
    min_log_prob = (mn - mx - lse).astype(np.float32)
    scale = ((mx - mn) / np.float32(65535)).astype(np.float32)
    inv = (np.float32(1) / scale).astype(np.float32)
    v = (inv[:, None] * (logits - mn[:, None])).astype(np.float32)
    codes = np.where(logits > mn[:, None], np.rint(v), 0).astype(np.uint16)
    return codes, scale, min_log_prob


def llama_cpp_pass2(q_logits, codes, scale, min_log_prob, targets):
    """perplexity.cpp's pass-2 log_softmax(.., base_log_prob, ..) vectorised in float32 (double sums)."""
    import numpy as np

    T = q_logits.shape[0]
    mx = q_logits.max(axis=1)
    imax = q_logits.argmax(axis=1)
    sum_exp = np.exp((q_logits - mx[:, None]).astype(np.float32)).astype(np.float64).sum(axis=1)
    lse = np.log(sum_exp).astype(np.float32)
    rows = np.arange(T)
    nll = (mx + lse - q_logits[rows, targets]).astype(np.float32)
    plb = (scale[:, None] * codes.astype(np.float32) + min_log_prob[:, None]).astype(np.float32)
    nll_base = (-plb[rows, targets]).astype(np.float32)
    top = (mx + lse).astype(np.float32)
    keep = plb > np.float32(-16)
    pb = np.exp(plb).astype(np.float32)
    term = (pb * (plb - q_logits + top[:, None]).astype(np.float32)).astype(np.float32)
    kld = np.where(keep, term, 0).astype(np.float64).sum(axis=1)
    imax_base = plb.argmax(axis=1)
    return kld, nll.astype(np.float64), nll_base.astype(np.float64), imax == imax_base, keep


def exact(base_logits, q_logits, targets):
    import numpy as np

    T = base_logits.shape[0]
    rows = np.arange(T)
    b = base_logits.astype(np.float64)
    q = q_logits.astype(np.float64)
    lpb = b - (b.max(1) + np.log(np.exp(b - b.max(1)[:, None]).sum(1)))[:, None]
    lpq = q - (q.max(1) + np.log(np.exp(q - q.max(1)[:, None]).sum(1)))[:, None]
    pb = np.exp(lpb)
    kl = (pb * (lpb - lpq)).sum(1)
    # mass and KL contribution of the entries llama.cpp drops (log p_base <= -16 after storage)
    return kl, -lpq[rows, targets], -lpb[rows, targets], b.argmax(1) == q.argmax(1), lpb, lpq, pb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-file", default=os.path.join(CACHE, "kld", "SmolLM2-135M-Instruct-f32.wikitext2-test.c512.chunks40.kld"))
    ap.add_argument("--base-gguf", default=os.path.join(CACHE, "models", "SmolLM2-135M-Instruct-f32.gguf"))
    ap.add_argument("--gguf", default=os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--chunks", type=int, default=0, help="only the first N chunks (0 = all in the file)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flash-attn", type=int, default=1,
                    help="1 (default): flash attention on, as llama-perplexity's default (auto) picks on CPU; 0: off")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--key", default=None, help="key in --out (default uint16_effect, or uint16_effect_no_flash_attn)")
    args = ap.parse_args()

    os.environ["LLAMA_CPP_LIB_PATH"] = LIBDIR
    sys.path.insert(0, SDIST)
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    n_ctx, n_vocab, n_chunk, tokens, off = read_base_header(args.base_file)
    if args.chunks:
        n_chunk = min(n_chunk, args.chunks)
    first = n_ctx // 2
    n_scored = n_ctx - 1 - first
    nv = 2 * ((n_vocab + 1) // 2) + 4
    mm = np.memmap(args.base_file, dtype=np.uint16, mode="r", offset=off)

    def model(path):
        return Llama(model_path=path, logits_all=True, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                     n_threads=args.threads, n_threads_batch=args.threads, flash_attn=bool(args.flash_attn), verbose=False)

    base, quant = model(args.base_gguf), model(args.gguf)
    acc = {k: [] for k in ("kl_exact", "kl_file", "kl_emul", "nll_q_exact", "nll_q_file", "nll_b_exact", "nll_b_file",
                           "nll_b_emul", "top_exact", "top_file", "dropped_mass", "dropped_kl", "n_kept")}
    codes_equal = 0
    codes_total = 0
    codes_maxdiff = 0
    t0 = time.time()
    for c in range(n_chunk):
        ids = [int(t) for t in tokens[c * n_ctx:(c + 1) * n_ctx]]
        logs = []
        for m in (base, quant):
            m.reset()
            m.eval(ids)
            logs.append(np.array(m.scores[first:n_ctx - 1, :], dtype=np.float32))
        bl, ql = logs
        tg = np.array(ids[first + 1:], dtype=np.int64)
        blk = np.asarray(mm[(c * n_scored) * nv:((c + 1) * n_scored) * nv]).reshape(n_scored, nv)
        fcodes = blk[:, 4:4 + n_vocab]
        hdr = blk[:, :4].copy().view(np.float32)  # [scale, min_log_prob]
        fscale, fmin = hdr[:, 0].copy(), hdr[:, 1].copy()
        ecodes, escale, emin = quantize_like_llama_cpp(bl)
        d = np.abs(ecodes.astype(np.int32) - fcodes.astype(np.int32))
        codes_equal += int((d == 0).sum())
        codes_total += d.size
        codes_maxdiff = max(codes_maxdiff, int(d.max()))
        kf, nqf, nbf, tf, keep = llama_cpp_pass2(ql, fcodes, fscale, fmin, tg)
        ke, _, nbe, _, _ = llama_cpp_pass2(ql, ecodes, escale, emin, tg)
        kx, nqx, nbx, tx, lpb, lpq, pb = exact(bl, ql, tg)
        drop = ~keep
        acc["kl_exact"].append(kx); acc["kl_file"].append(kf); acc["kl_emul"].append(ke)
        acc["nll_q_exact"].append(nqx); acc["nll_q_file"].append(nqf)
        acc["nll_b_exact"].append(nbx); acc["nll_b_file"].append(nbf); acc["nll_b_emul"].append(nbe)
        acc["top_exact"].append(tx); acc["top_file"].append(tf)
        acc["dropped_mass"].append(np.where(drop, pb, 0).sum(1))
        acc["dropped_kl"].append(np.where(drop, pb * (lpb - lpq), 0).sum(1))
        acc["n_kept"].append(keep.sum(1))
        print(f"chunk {c + 1}/{n_chunk}: KL exact {kx.mean():.6f} file {kf.mean():.6f} ({time.time() - t0:.0f}s)",
              file=sys.stderr, flush=True)
    a = {k: np.concatenate(v) for k, v in acc.items()}
    n = a["kl_exact"].size
    se = lambda x: float(x.std(ddof=1) / math.sqrt(x.size))
    diff = a["kl_file"] - a["kl_exact"]
    demul = a["kl_emul"] - a["kl_exact"]
    ln_ratio_exact = float(a["nll_q_exact"].mean() - a["nll_b_exact"].mean())
    ln_ratio_file = float(a["nll_q_file"].mean() - a["nll_b_file"].mean())
    pct = lambda x: {k: float(np.quantile(x, q)) for k, q in
                     [("min", 0), ("p0.1", .001), ("p1", .01), ("p10", .1), ("median", .5), ("p90", .9), ("p99", .99),
                      ("p99.9", .999), ("max", 1)]}
    res = {
        "script": "scripts/references/kld_uint16_effect.py",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "llama_cpp_python": llama_cpp.__version__,
        "logits_from": "llama_cpp Python package on the same libllama build, one sequence of n_ctx tokens per chunk, "
                       f"n_batch = n_ubatch = n_ctx, flash_attn {'on' if args.flash_attn else 'off'}, {args.threads} threads "
                       "(llama-perplexity batches 4 chunks per 2048-token batch, so its logits can differ in the last bits: "
                       "see codes_emulated_equal_to_file_fraction)",
        "tokens_scored": n,
        "n_chunks": n_chunk,
        "mean_kl_exact_f64_nats": float(a["kl_exact"].mean()),
        "mean_kl_exact_f64_nats_stderr": se(a["kl_exact"]),
        "mean_kl_llamacpp_formula_on_file_codes_nats": float(a["kl_file"].mean()),
        "mean_kl_llamacpp_formula_on_emulated_codes_nats": float(a["kl_emul"].mean()),
        "storage_effect_note": "emulated - exact: the same float32 logits, so the difference is the uint16 storage, the "
                               "-16 cut-off and the float32 arithmetic of llama.cpp's formula alone",
        "mean_kl_emulated_minus_exact_nats": float(demul.mean()),
        "mean_kl_emulated_minus_exact_nats_stderr": se(demul),
        "relative_kl_emulated_minus_exact": float(demul.mean() / a["kl_exact"].mean()),
        "per_token_kl_emulated_minus_exact_percentiles": pct(demul),
        "per_token_abs_kl_emulated_minus_exact_mean": float(np.abs(demul).mean()),
        "negative_kl_tokens_emulated": int((a["kl_emul"] < 0).sum()),
        "ppl_base_from_emulated_codes": math.exp(a["nll_b_emul"].mean()),
        "mean_kl_file_minus_exact_nats": float(diff.mean()),
        "mean_kl_file_minus_exact_nats_stderr": se(diff),
        "relative_kl_difference": float(diff.mean() / a["kl_exact"].mean()),
        "per_token_kl_file_minus_exact_percentiles": pct(diff),
        "per_token_abs_kl_file_minus_exact_mean": float(np.abs(diff).mean()),
        "kl_exact_percentiles": pct(a["kl_exact"]),
        "kl_file_percentiles": pct(a["kl_file"]),
        "negative_kl_tokens_file": int((a["kl_file"] < 0).sum()),
        "negative_kl_tokens_exact": int((a["kl_exact"] < 0).sum()),
        "mean_dropped_base_mass": float(a["dropped_mass"].mean()),
        "mean_dropped_kl_contribution_nats": float(a["dropped_kl"].mean()),
        "mean_vocab_entries_kept": float(a["n_kept"].mean()),
        "ppl_base_exact": math.exp(a["nll_b_exact"].mean()),
        "ppl_base_from_file_codes": math.exp(a["nll_b_file"].mean()),
        "ppl_q_exact": math.exp(a["nll_q_exact"].mean()),
        "ppl_q_llamacpp_formula": math.exp(a["nll_q_file"].mean()),
        "target_nll_base_file_minus_exact_mean": float((a["nll_b_file"] - a["nll_b_exact"]).mean()),
        "target_nll_base_file_minus_exact_percentiles": pct(a["nll_b_file"] - a["nll_b_exact"]),
        "tokens_with_target_nll_clamped": int(((a["nll_b_exact"] - a["nll_b_file"]) > 1e-3).sum()),
        "ln_ppl_ratio_exact": ln_ratio_exact,
        "ln_ppl_ratio_llamacpp_formula": ln_ratio_file,
        "top1_agreement_exact": float(a["top_exact"].mean()),
        "top1_agreement_llamacpp_formula": float(a["top_file"].mean()),
        "top1_disagreements_between_the_two": int((a["top_exact"] != a["top_file"]).sum()),
        "codes_emulated_equal_to_file_fraction": codes_equal / codes_total,
        "codes_emulated_vs_file_max_abs_diff": codes_maxdiff,
        "wall_seconds": time.time() - t0,
    }
    for k, v in res.items():
        if not isinstance(v, dict):
            print(f"{k}: {v}", file=sys.stderr)
    if os.path.exists(args.out):
        with open(args.out) as f:
            doc = json.load(f)
        key = args.key or ("uint16_effect" if args.flash_attn else "uint16_effect_no_flash_attn")
        doc[key] = res
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"merged into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
