#!/usr/bin/env python3
"""Independent reference for per-word surprisal with the leading-whitespace
correction (Pimentel & Meister 2024; Oh & Schuler 2024).

Builds a toy "language model" over a hand-made vocabulary whose word-initial
tokens carry the leading whitespace (BOW-marked), and computes each word's
probability by brute force from its definition, without the closed form:

    P(w_k | w_<k) = P(continuation of text[:end(w_{k-1})] starts with
                        ws_k + w_k followed by a whitespace char or the end)
                  / P(continuation of text[:end(w_{k-1})] starts with
                        a whitespace char or the end)

where ws_k is the whitespace actually preceding w_k in the text. The numerator
is a sum over all token continuations (depth-first, exact). For the first word
of a document the context is the bare BOS and the denominator is 1.

The vocabulary is prefix-free, so every string has at most one tokenization and
the brute-force sum equals the true string probability under the toy LM.

Output: crates/runner/tests/fixtures/data/words_reference.json
  vocab        decoded token texts ("" for specials), bos_id, eos_id
  docs[].text, docs[].tokens[{id, byte_start, byte_end}]
  docs[].logits[i]  float32 logits predicting token i from [BOS] + tokens[:i]
                    (i = len(tokens): the distribution after the last token);
                    null = -inf
  docs[].words[{word, byte_start, byte_end, n_tokens, surprisal_nats,
                surprisal_corrected_nats}]

Pure Python 3, no dependencies.  Usage: python3 scripts/references/words_reference.py
"""
import hashlib
import json
import math
import os
import random
import struct

VOCAB = ["", "", "ca", "t", "s", "do", "g", ".", "!", "é",
         " ca", " do", " t", " é", "\n"]
BOS, EOS = 0, 1
TEXTS = [
    "cat dog. cats\n tt!",
    "dog do. t é",
    "ca\n",
    "éé ca! tg. do",
]


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def logits(ctx):
    """Deterministic pseudo-random float32 logits given a context (tuple)."""
    seed = int.from_bytes(hashlib.sha256(repr(tuple(ctx)).encode()).digest()[:8], "little")
    rng = random.Random(seed)
    out = [f32(rng.gauss(0.0, 2.0)) for _ in VOCAB]
    out[BOS] = -math.inf  # never generated
    return out


def probs(ctx):
    l = logits(ctx)
    m = max(l)
    e = [math.exp(x - m) for x in l]
    z = sum(e)
    return [x / z for x in e]


def tokenize(text):
    """Unique tokenization (the vocabulary is prefix-free)."""
    ids, i = [], 0
    while i < len(text):
        match = [v for v in range(2, len(VOCAB)) if text.startswith(VOCAB[v], i)]
        assert len(match) == 1, (text, i, match)
        ids.append(match[0])
        i += len(VOCAB[match[0]])
    return ids


def p_prefix_then_boundary(ctx, rest):
    """P(continuation from ctx starts with `rest`, then whitespace or end)."""
    p = probs(ctx)
    total = 0.0
    for v in range(len(VOCAB)):
        if v == BOS or p[v] == 0.0:
            continue
        if v == EOS:
            if rest == "":
                total += p[v]
            continue
        s = VOCAB[v]
        if rest == "":
            if s[0].isspace():
                total += p[v]
        elif rest.startswith(s):
            total += p[v] * p_prefix_then_boundary(ctx + (v,), rest[len(s):])
        elif s.startswith(rest):
            if s[len(rest)].isspace():
                total += p[v]
    return total


def p_boundary(ctx):
    """P(continuation from ctx starts with whitespace or ends)."""
    p = probs(ctx)
    return sum(p[v] for v in range(len(VOCAB))
               if v == EOS or (v != BOS and VOCAB[v][:1].isspace()))


def words_of(text):
    out, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace():
            j += 1
        out.append((i, j))
        i = j
    return out


def bytepos(text, i):
    return len(text[:i].encode("utf-8"))


def doc_entry(text):
    ids = tokenize(text)
    spans, pos = [], 0
    for v in ids:
        spans.append((pos, pos + len(VOCAB[v])))
        pos += len(VOCAB[v])
    ctxs = [(BOS,) + tuple(ids[:i]) for i in range(len(ids) + 1)]
    nll = []
    for i, v in enumerate(ids):
        nll.append(-math.log(probs(ctxs[i])[v]))
    words = []
    ws = words_of(text)
    for k, (a, b) in enumerate(ws):
        seg_start = 0 if k == 0 else ws[k - 1][1]
        ctx = (BOS,) + tuple(tokenize(text[:seg_start]))
        seg = text[seg_start:b]
        num = p_prefix_then_boundary(ctx, seg)
        den = 1.0 if k == 0 else p_boundary(ctx)
        # tokens of the word: those inside [seg_start, b)
        toks = [i for i, (s, e) in enumerate(spans) if s >= seg_start and e <= b]
        assert sum(len(VOCAB[ids[i]]) for i in toks) == b - seg_start
        words.append({
            "word": text[a:b],
            "byte_start": bytepos(text, a),
            "byte_end": bytepos(text, b),
            "n_tokens": len(toks),
            "surprisal_nats": sum(nll[i] for i in toks),
            "surprisal_corrected_nats": -math.log(num / den),
        })
    return {
        "text": text,
        "tokens": [{"id": v, "byte_start": bytepos(text, s), "byte_end": bytepos(text, e)}
                   for v, (s, e) in zip(ids, spans)],
        "logits": [[None if x == -math.inf else x for x in logits(c)] for c in ctxs],
        "words": words,
    }


def main():
    out = {
        "description": "toy BOW-marked LM; corrected word surprisal by brute-force "
                       "enumeration of continuations (scripts/references/words_reference.py)",
        "vocab": VOCAB,
        "bos_id": BOS,
        "eos_id": EOS,
        "docs": [doc_entry(t) for t in TEXTS],
    }
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(root, "crates/runner/tests/fixtures/data/words_reference.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for d in out["docs"]:
        for w in d["words"]:
            print(f'{w["word"]!r:10} uncorrected {w["surprisal_nats"]:.6f} '
                  f'corrected {w["surprisal_corrected_nats"]:.6f}')
    print("wrote", path)


if __name__ == "__main__":
    main()
