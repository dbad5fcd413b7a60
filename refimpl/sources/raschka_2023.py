"""Source ``raschka-2023``: Sebastian Raschka, "Understanding and Coding the Self-Attention Mechanism of Large
Language Models From Scratch" (2023-02-09).

Tokenisation of "Life is short, eat dessert first" by the sorted vocabulary, a torch embedding
(``torch.manual_seed(123); nn.Embedding(6, 16)``), projections ``torch.manual_seed(123)`` then
``torch.rand(24, 16)``, ``torch.rand(24, 16)``, ``torch.rand(28, 16)`` used as ``W @ x``, attention of
the second token, and three heads drawn next from the same stream. Regenerating needs torch (Debian's
python3-torch reproduces every printed number); the fixture stores the float32 parameters, so checking
it needs no torch.
"""
from __future__ import annotations

import math

import numpy as np

from . import _decimal as dec
from ..errors import Unavailable
from ._build import BuildContext, expect, expect_shape, make, sdpa_rule, step

SOURCE = "raschka-2023"
META = {"title": "Understanding and Coding the Self-Attention Mechanism of Large Language Models From Scratch "
                 "('Life is short, eat dessert first')", "author": "Sebastian Raschka (2023-02-09)",
        "urls": ["https://sebastianraschka.com/blog/2023/self-attention-from-scratch.html"]}
SENTENCE = "Life is short, eat dessert first"
RECIPE = {"kind": "torch-manual-seed", "seed": 123,
          "text": "vocab = sorted(sentence.replace(',', '').split()); torch.manual_seed(123); "
                  "embed = torch.nn.Embedding(6, 16); embedded_sentence = embed(sentence_int).detach(); "
                  "torch.manual_seed(123); W_query = torch.rand(24, 16); W_key = torch.rand(24, 16); "
                  "W_value = torch.rand(28, 16); then (same stream) mh_W_query = torch.rand(3, 24, 16); "
                  "mh_W_key = torch.rand(3, 24, 16); mh_W_value = torch.rand(3, 28, 16). Stored as float32."}
PRINT4 = {"rule": "printed", "decimals": 4, "who": "torch print (4 decimals)"}


def tokenize(sentence: str = SENTENCE) -> tuple[dict[str, int], np.ndarray]:
    words = sentence.replace(",", "").split()
    dc = {s: i for i, s in enumerate(sorted(words))}
    return dc, np.array([dc[s] for s in words], dtype=np.int64)


def generate() -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise Unavailable(f"torch is not importable ({e}); install Debian's python3-torch to regenerate") from None
    _, ids = tokenize()
    torch.manual_seed(123)
    embed = torch.nn.Embedding(6, 16)
    x = embed(torch.tensor(ids)).detach().numpy().astype(np.float32)
    torch.manual_seed(123)
    p = {"sentence_int": ids, "embedded_sentence": x}
    for n, shape in (("W_query", (24, 16)), ("W_key", (24, 16)), ("W_value", (28, 16)),
                     ("mh_W_query", (3, 24, 16)), ("mh_W_key", (3, 24, 16)), ("mh_W_value", (3, 28, 16))):
        p[n] = torch.rand(*shape).numpy().astype(np.float32)
    return p


def build(ctx: BuildContext) -> list[dict]:
    p = generate()
    facts = ctx.published(SOURCE) or {}
    pub = facts.get("published", {})
    for n in ("W_query", "W_key", "W_value"):       # the article's parameters, as published.json quotes them
        quoted = facts.get("inputs", {}).get(f"{n}_float32")
        if quoted is not None and not np.array_equal(np.asarray(quoted, dtype=np.float32), p[n]):
            ctx.conflicts.append(f"{SOURCE}: torch.manual_seed(123) no longer reproduces the published {n}")
    x = p["embedded_sentence"].astype(np.float64)
    Wq, Wk, Wv = (p[n].astype(np.float64) for n in ("W_query", "W_key", "W_value"))
    xd = dec.to_dec(x)
    q2 = dec.matmul(dec.to_dec(Wq), xd[1].reshape(16, 1)).reshape(1, 24)       # (24, 16) x (16, 1) -> (1, 24)
    keys = dec.matmul(xd, dec.to_dec(Wk).T)                                     # (6, 16) x (16, 24) -> (6, 24)
    values = dec.matmul(xd, dec.to_dec(Wv).T)                                   # (6, 16) x (16, 28) -> (6, 28)
    ctx50, w50, z50 = dec.sdpa(q2, keys, values, dec.scale_of(24))
    omega = dec.matmul(q2, keys.T)                                              # (1, 6)
    qf, kf, vf = Wq @ x[1], x @ Wk.T, x @ Wv.T
    d50 = ("50-digit decimal arithmetic on the stored float32 parameters; the tolerance is float32's "
           "(refimpl computes float32 inputs in float32, as the source did)")
    fid = f"{SOURCE}/self-attention"
    P = lambda name, key: ctx.published_value(fid, name, pub.get(key))  # noqa: E731
    steps = [step("row", {"a": "embedded_sentence"}, ["x_2"], index=1),
             step("matmul", {"a": "W_query", "b": "x_2"}, ["query_2"]),
             step("transpose", {"a": "W_key"}, ["W_key_t"]),
             step("transpose", {"a": "W_value"}, ["W_value_t"]),
             step("matmul", {"a": "embedded_sentence", "b": "W_key_t"}, ["keys"]),
             step("matmul", {"a": "embedded_sentence", "b": "W_value_t"}, ["values"]),
             step("matmul", {"a": "keys", "b": "query_2"}, ["omega_2"]),
             step("general_attention", {"query": "query_2", "keys": "keys", "values": "values"},
                  ["context_vector_2", "attention_weights_2"], scale=1.0 / math.sqrt(24))]
    omega_rule = {"rule": "forward", "dtype": "float32", "n_terms": 20.0,
                  "magnitude": float(np.abs(kf).max() * np.abs(qf).max() * 16)}
    expected = {
        "sentence_int": [expect("published", P("sentence_int", "sentence_int").astype(np.int64), {"rule": "exact"},
                                "sorted vocabulary: Life 0, dessert 1, eat 2, first 3, is 4, short 5")],
        "embedded_sentence": [expect("published", P("embedded_sentence", "embedded_sentence_print"), PRINT4)],
        "query_2": [expect_shape(pub.get("query_2_shape", [24]))],
        "keys": [expect_shape(pub.get("keys_shape", [6, 24]))],
        "values": [expect_shape(pub.get("values_shape", [6, 28]))],
        "omega_2": [expect("published", P("omega_2", "omega_2"), PRINT4),
                    expect("decimal50", dec.to_float(omega).reshape(6), omega_rule, d50)],
        "attention_weights_2": [expect("published", P("attention_weights_2", "attention_weights_2"), PRINT4),
                                expect("decimal50", dec.to_float(w50).reshape(6),
                                       sdpa_rule(qf[None], kf, vf, 1 / math.sqrt(24), weights=True, dtype="float32"),
                                       d50)],
        "context_vector_2": [expect("published", P("context_vector_2", "context_vector_2"), PRINT4),
                             expect("decimal50", dec.to_float(ctx50).reshape(28),
                                    sdpa_rule(qf[None], kf, vf, 1 / math.sqrt(24), dtype="float32"), d50)],
    }
    single = make(fid, META, "'Computing the Unnormalized Attention Weights' to 'Computing the Attention Scores': "
                             "the second input element as the query", True,
                  "Vectors are W @ x (weights (d_out, d_in)). The published numbers are torch float32 results "
                  "printed to 4 decimals; refimpl computes in float64 from the same float32 parameters. The "
                  "article's context-vector block has a print typo (see published.json print_quirk); "
                  "its numbers are used.",
                  RECIPE, {n: p[n] for n in ("sentence_int", "embedded_sentence", "W_query", "W_key", "W_value")},
                  steps, expected)

    fid = f"{SOURCE}/multi-head"
    mh = {n: p[n] for n in ("embedded_sentence", "mh_W_query", "mh_W_key", "mh_W_value")}
    heads = []
    for h in range(3):
        Q = dec.matmul(xd, dec.to_dec(p["mh_W_query"][h].astype(np.float64)).T)
        K = dec.matmul(xd, dec.to_dec(p["mh_W_key"][h].astype(np.float64)).T)
        V = dec.matmul(xd, dec.to_dec(p["mh_W_value"][h].astype(np.float64)).T)
        heads.append(dec.sdpa(Q, K, V, dec.scale_of(24)))
    qkv = [tuple(x @ p[n][h].astype(np.float64).T for n in ("mh_W_query", "mh_W_key", "mh_W_value")) for h in range(3)]
    steps = [step("row", {"a": "embedded_sentence"}, ["x_2"], index=1),
             step("matmul", {"a": "mh_W_query", "b": "x_2"}, ["multihead_query_2"]),
             step("transpose", {"a": "embedded_sentence"}, ["inputs_t"]),
             step("matmul", {"a": "mh_W_key", "b": "inputs_t"}, ["multihead_keys_bmm"]),
             step("matmul", {"a": "mh_W_value", "b": "inputs_t"}, ["multihead_values_bmm"]),
             step("transpose", {"a": "multihead_keys_bmm"}, ["multihead_keys"]),
             step("transpose", {"a": "multihead_values_bmm"}, ["multihead_values"]),
             step("multi_head_attention", {"x": "embedded_sentence", "w_q": "mh_W_query", "w_k": "mh_W_key",
                                           "w_v": "mh_W_value"}, ["context", "weights"], weights_layout="out_in")]
    expected = {
        "multihead_query_2": [expect_shape(pub.get("multihead_query_2_shape", [3, 24]))],
        "multihead_keys_bmm": [expect_shape(pub.get("multihead_keys_shape_bmm", [3, 24, 6]))],
        "multihead_values_bmm": [expect_shape(pub.get("multihead_values_shape_bmm", [3, 28, 6]))],
        "multihead_keys": [expect_shape(pub.get("multihead_keys_shape_permuted", [3, 6, 24]))],
        "multihead_values": [expect_shape(pub.get("multihead_values_shape_permuted", [3, 6, 28]))],
        "weights": [expect("decimal50", np.stack([dec.to_float(hd[1]) for hd in heads]),
                           {"rule": "forward", "dtype": "float32", "magnitude": 1.0,
                            "n_terms": max(sdpa_rule(*qkv[h], 1 / math.sqrt(24), weights=True)["n_terms"]
                                           for h in range(3))}, d50)],
        "context": [expect("decimal50", np.concatenate([dec.to_float(hd[0]) for hd in heads], axis=1),
                           {"rule": "forward", "dtype": "float32",
                            "magnitude": max(float(np.abs(t[2]).max()) for t in qkv) * 1.01,
                            "n_terms": max(sdpa_rule(*qkv[h], 1 / math.sqrt(24))["n_terms"] for h in range(3))}, d50)],
    }
    multi = make(fid, META, "'Multi-Head Attention': 3 heads stacked, continuing the seeded stream", True,
                 "Only shapes were published for the multi-head part; the values are 50-digit decimal arithmetic on "
                 "the stored float32 parameters (3 heads, W @ x layout, concatenated head outputs; no W_o).",
                 RECIPE, mh, steps, expected)
    return [single, multi]
