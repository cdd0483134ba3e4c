#!/usr/bin/env python3
"""Independent reference for surprisal's window planning.

Writes crates/runner/tests/data/window_reference.json: for a set of cases,
the list of (token index scored, context length, window id) triples each
protocol must produce. The Rust planner (crates/runner/src/protocol.rs) is
tested against this file exactly (crates/runner/tests/window_reference.rs).

The three protocols are implemented here the way their origin implements
them, not the way the Rust code is written:

* sliding -- the (fixed) Hugging Face strided perplexity recipe
  (https://huggingface.co/docs/transformers/perplexity): labels are the input
  ids with all but the last `trg_len` masked to -100, and the model shifts
  labels internally (logits at position i predict label i+1). Optional BOS
  takes one slot of the window. A configuration under which some token
  after the first (or the first too, with BOS) is not scored exactly once is
  recorded as an expected error (the Rust planner refuses it).
* chunks -- llama.cpp tools/perplexity/perplexity.cpp `perplexity()`
  (ppl_stride == 0), transcribed loop for loop.
* rolling -- lm-evaluation-harness `get_rolling_token_windows` and
  `make_disjoint_window` (copied below) with HFLM's input construction in
  `_loglikelihood_tokens`.

Token "ids" are the token's global index in the corpus stream, so the
scored lists contain indices directly. Window ids count, from 0, the windows
that score at least one token.

Usage: python3 scripts/references/window_reference.py   (no dependencies)
"""

import json
import os

BOS = -1  # stands for the BOS / prefix token


# --------------------------------------------------------------------------
# sliding: Hugging Face strided recipe
# --------------------------------------------------------------------------
def hf_sliding(n, window, stride, bos):
    text_window = window - (1 if bos else 0)
    tokens = list(range(n))
    out = []
    wid = 0
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + text_window, n)
        trg_len = end - prev_end  # may be different from stride on last loop
        input_ids = ([BOS] if bos else []) + tokens[begin:end]
        target_ids = list(input_ids)
        n_masked = max(0, len(target_ids) - trg_len)
        for i in range(n_masked):
            target_ids[i] = -100
        if bos:
            target_ids[0] = -100  # BOS itself is never a target
        # the model shifts labels: logits at position i predict target_ids[i+1]
        scored = []
        for i in range(len(input_ids) - 1):
            lab = target_ids[i + 1]
            if lab != -100:
                scored.append((lab, i + 1, wid))
        if scored:
            out.extend(scored)
            wid += 1
        prev_end = end
        if end == n:
            break
    expected = list(range(0 if bos else 1, n))
    ok = [t for t, _, _ in out] == expected
    # Policy (not HF): surprisal refuses stride >= window for every n, since
    # for long enough data it drops one token per window (shown by `ok`).
    if window < 2 or stride < 1 or stride >= window:
        return None
    return out if ok else None


# --------------------------------------------------------------------------
# chunks: llama.cpp perplexity() transcription
# --------------------------------------------------------------------------
def llama_cpp_chunks(n_text, n_ctx, add_bos, n_chunks=-1):
    # common_tokenize(ctx, params.prompt, true): BOS prepended when the model adds it
    tokens = ([BOS] if add_bos else []) + list(range(n_text))
    if len(tokens) < 2 * n_ctx:
        return None  # "you need at least 2*n_ctx tokens ..."
    n_chunk_max = len(tokens) // n_ctx
    n_chunk = n_chunk_max if n_chunks < 0 else min(n_chunks, n_chunk_max)
    first = n_ctx // 2
    if n_ctx - 1 - first <= 0:
        return None  # count stays 0: PPL undefined
    out = []
    for i in range(n_chunk):
        start = i * n_ctx
        # batch: tokens[start:start+n_ctx], tokens[start] replaced by BOS if add_bos
        batch = list(tokens[start:start + n_ctx])
        if add_bos:
            batch[0] = BOS
        # process_logits(tokens_data = tokens + start + first, n_token = n_ctx - 1 - first):
        # logits row j (window position first + j) predicts tokens_data[j + 1]
        tokens_data = tokens[start + first:]
        for j in range(n_ctx - 1 - first):
            target = tokens_data[j + 1]
            assert target != BOS
            out.append((target, first + j + 1, i))
    return out


# --------------------------------------------------------------------------
# rolling: lm-evaluation-harness
# --------------------------------------------------------------------------
# The two functions below are copied from EleutherAI/lm-evaluation-harness,
# lm_eval/utils.py (MIT License, Copyright (c) 2020 EleutherAI).
def get_rolling_token_windows(token_list, prefix_token, max_seq_len, context_len):
    """
    - context_len allows for a rolling window context, allowing each prediction window to potentially
      condition on some context

    :param token_list: list
        List of tokens to be PREDICTED
    :param max_seq_len: int
        max_seq_len of model (or max_seq_len we want to use)
    :param context_len: int
        Amount of desired token context for prediction. Needs to be at least 1.
    :param prefix_token: token
        Dummy token like <eos> so the first token has something to condition on
    :return: generator
        Generator of tuples
            (input_tokens, pred_tokens)
        Note: Score only the last len(pred_tokens) logits of the LM
    """
    assert 1 <= context_len <= max_seq_len
    if not token_list:
        return
    # +1 offset, going from input->preds
    pred_len = max_seq_len - context_len + 1
    predicted = 0

    # Special handling for first window: predict all tokens
    first_seq_len = min(max_seq_len, len(token_list))
    yield [prefix_token] + token_list[: first_seq_len - 1], token_list[:first_seq_len]
    predicted += first_seq_len

    while predicted < len(token_list):
        window_pred_len = min(len(token_list) - predicted, pred_len)
        window_end = predicted + window_pred_len

        yield (
            token_list[window_end - max_seq_len - 1 : window_end - 1],
            token_list[window_end - window_pred_len : window_end],
        )
        predicted += window_pred_len


def make_disjoint_window(pair):
    """Takes output from get_rolling_token_windows and makes the context not overlap with the continuation"""
    a, b = pair
    return a[: len(a) - (len(b) - 1)], b
# --- end of lm-evaluation-harness code ---


def lm_eval_rolling(doc_lengths, max_length):
    out = []
    wid = 0
    offset = 0
    for m in doc_lengths:
        token_list = list(range(offset, offset + m))
        offset += m
        windows = map(
            make_disjoint_window,
            get_rolling_token_windows(
                token_list=token_list,
                prefix_token=BOS,
                max_seq_len=max_length,
                context_len=1,
            ),
        )
        for context_enc, continuation_enc in windows:
            # HFLM._loglikelihood_tokens
            inp = (context_enc + continuation_enc)[-(max_length + 1):][:-1]
            inplen = len(inp)
            contlen = len(continuation_enc)
            assert inplen <= max_length
            # logits[inplen - contlen : inplen] score the continuation
            for k, tok in enumerate(continuation_enc):
                pos = inplen - contlen + k
                if pos + 1 < inplen:
                    assert inp[pos + 1] == tok
                out.append((tok, pos + 1, wid))
            wid += 1
    return out


def main():
    cases = []
    for n in (10, 37, 1000):
        for window, stride in (
            (2, 1), (4, 1), (4, 2), (4, 3), (4, 4), (5, 2), (8, 3), (8, 7), (8, 8),
            (16, 5), (64, 64), (64, 32), (2048, 512), (2048, 2048),
        ):
            for bos in (False, True):
                got = hf_sliding(n, window, stride, bos)
                cases.append({
                    "protocol": "sliding", "docs": [n], "window": window,
                    "stride": stride, "bos": bos, "max_chunks": None,
                    "error": got is None, "scored": got or [],
                })
    for n in (10, 37, 1000):
        for window in (3, 4, 5, 8, 16, 512):
            for bos in (False, True):
                for max_chunks in (None, 2):
                    got = llama_cpp_chunks(n, window, bos, -1 if max_chunks is None else max_chunks)
                    cases.append({
                        "protocol": "chunks", "docs": [n], "window": window,
                        "stride": 0, "bos": bos, "max_chunks": max_chunks,
                        "error": got is None, "scored": got or [],
                    })
    for docs in ([10], [37], [1000], [3, 10, 1, 7, 37], [5, 0, 5]):
        for window in (1, 2, 4, 5, 8, 16, 2048):
            got = lm_eval_rolling(docs, window)
            cases.append({
                "protocol": "rolling", "docs": docs, "window": window,
                "stride": 0, "bos": True, "max_chunks": None,
                "error": False, "scored": got,
            })
    path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "runner", "tests", "data",
                        "window_reference.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write('{"generated_by": "scripts/references/window_reference.py", "cases": [\n')
        for i, c in enumerate(cases):
            f.write(json.dumps(c, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(cases) else "\n")
        f.write("]}\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
