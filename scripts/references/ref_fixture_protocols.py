#!/usr/bin/env python3
"""Independent reference numbers for surprisal's three window protocols on the tiny test model.

Writes crates/cli/tests/data/fixture_protocols.json, which crates/cli/tests/parity_fixture.rs checks
the `surprisal eval` binary against (token sets, context lengths, per-token and mean NLL, and the
rolling extras).

Model: crates/models/tests/fixtures/llama (random-weight LlamaForCausalLM, vocab 384, its own
tokenizer.json; `<|endoftext|>` = id 0 is BOS and EOS). The tokenizer has no post-processor and there
is no tokenizer_config.json, so it adds no BOS: surprisal's `--bos auto` means no BOS for this model
(crates/models/src/lib.rs `hf_add_bos`). Loaded with transformers in float32, eager attention; every
log_softmax is taken in float64. Text is tokenized without special tokens.

Protocols, each written the way its origin writes it (not the way the Rust code is written):

* sliding -- the Hugging Face "Perplexity of fixed-length models" recipe
  (https://huggingface.co/docs/transformers/perplexity), FIXED so that every token is counted once:
  the per-token NLLs of the last `trg_len` targets of each window are collected (the original averages
  per-window losses weighted by trg_len, which counts one token of the first window too many).
  With BOS (surprisal `--bos always`), BOS takes the first slot of every window, so a window holds
  window-1 text tokens and the first text token is scored too (context: BOS alone).
* chunks -- llama.cpp tools/perplexity/perplexity.cpp `perplexity()` (ppl_stride 0), transcribed:
  tokens = tokenize(text, add_special=add_bos) (i.e. one BOS in front of the whole stream when
  add_bos), n_chunk = n_tokens / n_ctx, chunk i = tokens[i*n_ctx:(i+1)*n_ctx] with its first token
  replaced by BOS when add_bos; first = n_ctx/2; the logits at positions first .. n_ctx-2 predict
  tokens[start+first+1 .. start+n_ctx-1] (process_logits). n_seq batching is left out (it does not
  change what is scored). Run with add_bos false (what our loader says for this model) and true.
* rolling -- lm-evaluation-harness `loglikelihood_rolling` (HFLM): per document,
  get_rolling_token_windows(tokens, prefix_token=BOS (0), max_seq_len=window, context_len=1) then
  make_disjoint_window (both copied verbatim below from lm-eval, lm_eval/utils.py, MIT License,
  Copyright (c) 2020 EleutherAI), and HFLM's `_loglikelihood_tokens` input construction
  inp = (context + continuation)[-(max_length+1):][:-1], scoring the last len(continuation) logits.
  Plus lm-eval's wikitext metrics: word_perplexity = exp(-sum ll / sum words) with
  words = len(re.split(r"\\s+", doc)), byte_perplexity = exp(-sum ll / sum bytes) with
  bytes = len(doc.encode("utf-8")), bits_per_byte = -sum ll / sum bytes / ln 2.

Usage: /work/.venv-ref/bin/python scripts/references/ref_fixture_protocols.py
"""
import json
import math
import os
import platform
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_DIR = os.path.join(REPO, "crates", "models", "tests", "fixtures", "llama")
DATA_DIR = os.path.join(REPO, "crates", "cli", "tests", "data")
TEXT = os.path.join(DATA_DIR, "fixture_text.txt")
DOCS = os.path.join(DATA_DIR, "fixture_docs.jsonl")
OUT = os.path.join(DATA_DIR, "fixture_protocols.json")
BOS_ID = 0


# --------------------------------------------------------------------------------------------------
# lm-evaluation-harness, lm_eval/utils.py (MIT License, Copyright (c) 2020 EleutherAI), verbatim.
# --------------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------------


class Scorer:
    def __init__(self):
        import torch
        from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

        self.torch = torch
        torch.set_num_threads(2)
        self.model = AutoModelForCausalLM.from_pretrained(
            MODEL_DIR, dtype=torch.float32, attn_implementation="eager")
        self.model.eval()
        self.tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(MODEL_DIR, "tokenizer.json"))

    def encode(self, text):
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def logprobs(self, ids):
        """float64 log_softmax of the logits for input `ids`: row p predicts position p+1."""
        torch = self.torch
        with torch.no_grad():
            logits = self.model(torch.tensor([ids], dtype=torch.long), use_cache=False).logits[0]
        return torch.log_softmax(logits.to(torch.float64), dim=-1)


def hf_sliding(sc, ids, window, stride, bos):
    """Fixed HF recipe. Returns rows (doc index of target, context length, nll)."""
    torch = sc.torch
    text_window = window - 1 if bos else window
    n = len(ids)
    rows = []
    prev_end = 0
    for begin in range(0, n, stride):
        end = min(begin + text_window, n)
        trg_len = end - prev_end  # may be different from stride on last loop
        input_ids = ([BOS_ID] if bos else []) + ids[begin:end]
        target_ids = list(input_ids)
        for i in range(max(0, len(target_ids) - trg_len)):
            target_ids[i] = -100
        if bos:
            target_ids[0] = -100  # BOS itself is never a target
        lp = sc.logprobs(input_ids)
        off = 1 if bos else 0  # input position p holds text token begin + p - off
        # the model shifts labels: logits at position i predict target_ids[i + 1]
        for i in range(len(input_ids) - 1):
            lab = target_ids[i + 1]
            if lab != -100:
                rows.append((begin + i + 1 - off, i + 1, -float(lp[i, lab])))
        prev_end = end
        if end == n:
            break
    assert [r[0] for r in rows] == list(range(0 if bos else 1, n)), "each token exactly once"
    del torch
    return rows


def llamacpp_chunks(sc, text_ids, n_ctx, add_bos, n_chunks=-1):
    """perplexity() of llama.cpp tools/perplexity/perplexity.cpp, ppl_stride == 0."""
    tokens = ([BOS_ID] if add_bos else []) + list(text_ids)  # common_tokenize(ctx, prompt, true)
    if len(tokens) < 2 * n_ctx:
        raise SystemExit(f"need at least {2 * n_ctx} tokens, have {len(tokens)}")
    n_chunk_max = len(tokens) // n_ctx
    n_chunk = n_chunk_max if n_chunks < 0 else min(n_chunks, n_chunk_max)
    first = n_ctx // 2
    rows = []
    per_chunk = []
    for i in range(n_chunk):
        start = i * n_ctx
        end = start + n_ctx
        batch = list(tokens[start:end])
        if add_bos:
            batch[0] = BOS_ID  # add BOS token for the first batch of each chunk
        lp = sc.logprobs(batch)
        # process_logits(n_vocab, logits + first*n_vocab, tokens + start + first, n_ctx - 1 - first, ...)
        chunk_nll = []
        for k in range(n_ctx - 1 - first):
            tgt = tokens[start + first + k + 1]
            v = -float(lp[first + k, tgt])
            pos = start + first + k + 1  # position in the stream
            rows.append((pos - (1 if add_bos else 0), first + k + 1, v))
            chunk_nll.append(v)
        per_chunk.append(math.fsum(chunk_nll) / len(chunk_nll))
    return rows, per_chunk


def lm_eval_rolling(sc, docs, max_length):
    """HFLM.loglikelihood_rolling per document. Returns rows (doc, index, ctx, nll), per-doc sums."""
    rows = []
    doc_sums = []
    for d, text in enumerate(docs):
        ids = sc.encode(text)
        windows = list(map(make_disjoint_window, get_rolling_token_windows(
            token_list=ids, prefix_token=BOS_ID, max_seq_len=max_length, context_len=1)))
        predicted = 0
        lls = []
        for context_enc, continuation_enc in windows:
            inp = (context_enc + continuation_enc)[-(max_length + 1):][:-1]
            contlen = len(continuation_enc)
            inplen = len(inp)
            lp = sc.logprobs(inp)[inplen - contlen:inplen]
            for j, tgt in enumerate(continuation_enc):
                assert tgt == ids[predicted]
                v = -float(lp[j, tgt])
                rows.append((d, predicted, inplen - contlen + j + 1, v))
                lls.append(-v)
                predicted += 1
        assert predicted == len(ids)
        doc_sums.append(math.fsum(lls))
    return rows, doc_sums


def summarize(nll):
    s = math.fsum(nll)
    return {"tokens_scored": len(nll), "sum_nll_nats": s, "mean_nll_nats": s / len(nll),
            "perplexity": math.exp(s / len(nll))}


def versions():
    import tokenizers
    import torch
    import transformers
    import numpy
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(),
            "lm_eval_functions": "get_rolling_token_windows, make_disjoint_window copied from "
                                 "lm-evaluation-harness lm_eval/utils.py (MIT)",
            "llama_cpp_source": "tools/perplexity/perplexity.cpp perplexity(), ppl_stride 0"}


def main():
    sc = Scorer()
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()
    docs = []
    with open(DOCS, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                docs.append(json.loads(line)["text"])
    ids = sc.encode(text)
    # the tokenizer adds no BOS (no post-processor), so surprisal's --bos auto = no BOS here
    adds_bos = sc.tok("a", add_special_tokens=True)["input_ids"] != sc.encode("a")
    assert not adds_bos
    print(f"text: {len(ids)} tokens, {len(text.encode())} bytes", file=sys.stderr)

    cases = []

    def add(name, args, rows, extra=None, doc_col=False):
        nll = [r[-1] for r in rows]
        case = {"name": name, "args": args, **summarize(nll)}
        if extra:
            case.update(extra)
        if doc_col:
            case["doc"] = [r[0] for r in rows]
            rows = [r[1:] for r in rows]
        case["index"] = [r[0] for r in rows]
        case["context_len"] = [r[1] for r in rows]
        case["nll_nats"] = [float(f"{r[2]:.9g}") for r in rows]
        cases.append(case)
        print(f"{name}: {case['tokens_scored']} tokens, mean nll {case['mean_nll_nats']:.8f}", file=sys.stderr)

    data_text = "crates/cli/tests/data/fixture_text.txt"
    for window, stride, bos in [(128, 64, False), (128, 64, True), (100, 37, False)]:
        rows = hf_sliding(sc, ids, window, stride, bos)
        add(f"sliding_w{window}_s{stride}_{'bos' if bos else 'nobos'}",
            ["--data", data_text, "--protocol", "sliding", "--window", str(window), "--stride", str(stride),
             "--bos", "always" if bos else "never"], rows)
    # default --bos auto must mean "no BOS" for this model
    rows = hf_sliding(sc, ids, 128, 64, False)
    add("sliding_w128_s64_auto", ["--data", data_text, "--protocol", "sliding", "--window", "128",
                                  "--stride", "64", "--bos", "auto"], rows)

    for add_bos in (False, True):
        rows, per_chunk = llamacpp_chunks(sc, ids, 128, add_bos)
        add(f"chunks_w128_{'bos' if add_bos else 'nobos'}",
            ["--data", data_text, "--protocol", "chunks", "--window", "128",
             "--bos", "always" if add_bos else "never"], rows,
            {"n_chunks": len(per_chunk), "per_chunk_mean_nll_nats": per_chunk})
    rows, per_chunk = llamacpp_chunks(sc, ids, 128, False, n_chunks=3)
    add("chunks_w128_nobos_max3", ["--data", data_text, "--protocol", "chunks", "--window", "128",
                                   "--bos", "auto", "--max-chunks", "3"], rows,
        {"n_chunks": len(per_chunk), "per_chunk_mean_nll_nats": per_chunk})

    rows, doc_sums = lm_eval_rolling(sc, docs, 128)
    ll = math.fsum(doc_sums)  # total log-likelihood (negative)
    words = sum(len(re.split(r"\s+", d)) for d in docs)
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    extra = {
        "doc_tokens": [len(sc.encode(d)) for d in docs],
        "doc_loglikelihood": doc_sums,
        "words": words,
        "bytes": nbytes,
        "word_perplexity": math.exp(-ll / words),
        "byte_perplexity": math.exp(-ll / nbytes),
        "bits_per_byte": -ll / nbytes / math.log(2),
    }
    add("rolling_w128", ["--data", "crates/cli/tests/data/fixture_docs.jsonl", "--protocol", "rolling",
                         "--window", "128"], rows, extra, doc_col=True)

    out = {
        "source": "scripts/references/ref_fixture_protocols.py (transformers float32, eager, log_softmax float64)",
        "model": "crates/models/tests/fixtures/llama",
        "bos_id": BOS_ID,
        "model_adds_bos": adds_bos,
        "versions": versions(),
        "text_tokens": len(ids),
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
