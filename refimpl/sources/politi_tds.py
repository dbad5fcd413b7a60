"""Source ``politi-tds``: Marcello Politi, "A Simple Implementation of the Attention Mechanism from Scratch"
(Towards Data Science, 2025): single-head and multi-head self-attention with einsum.

Only shapes and the computation are known (sequence 5, d_model 16, 4 heads of d_head 4, tokens
[2, 6, 8, 3, 1], ``einsum('sd,hde->hse')``, scores / d_k**0.5, heads concatenated then @ W_o); the
original seeds and numbers were not published. The parameters here come from a documented seeded
generator, NumPy's legacy ``RandomState(2025)`` (stable across NumPy versions), and the expected values
from 50-digit decimal arithmetic. No number here is the source's.
"""
from __future__ import annotations

import numpy as np

from . import _decimal as dec
from ._build import BuildContext, expect, make, sdpa_rule, step

SOURCE = "politi-tds"
META = {"title": "A Simple Implementation of the Attention Mechanism from Scratch (single-head and multi-head "
                 "self-attention with einsum)", "author": "Marcello Politi, Towards Data Science (2025)",
        "urls": ["https://towardsdatascience.com/a-simple-implementation-of-the-attention-mechanism-from-scratch/"]}
TOKENS = np.array([2, 6, 8, 3, 1])
SEQ, D_MODEL, HEADS, D_HEAD, VOCAB = 5, 16, 4, 4, 10
RECIPE = {"kind": "numpy-legacy", "seed": 2025,
          "calls": ["standard_normal((10, 16)) -> embedding table",
                    "standard_normal((4, 16, 4)) / 4 -> w_query", "standard_normal((4, 16, 4)) / 4 -> w_key",
                    "standard_normal((4, 16, 4)) / 4 -> w_value", "standard_normal((16, 16)) / 4 -> w_output"],
          "text": "rs = numpy.random.RandomState(2025); table = rs.standard_normal((10, 16)); "
                  "sentence_embed = table[[2, 6, 8, 3, 1]]; w_query, w_key, w_value = "
                  "rs.standard_normal((4, 16, 4)) / 4 each, in that order; "
                  "w_output = rs.standard_normal((16, 16)) / 4. "
                  "Documented here, not the source's (which published no seeds)."}


def parameters() -> dict[str, np.ndarray]:
    rs = np.random.RandomState(2025)
    table = rs.standard_normal((VOCAB, D_MODEL))
    p = {"sentence_embed": table[TOKENS]}
    for n in ("w_query", "w_key", "w_value"):
        p[n] = rs.standard_normal((HEADS, D_MODEL, D_HEAD)) / 4
    p["w_output"] = rs.standard_normal((HEADS * D_HEAD, D_MODEL)) / 4
    return p


def _dec_head(x, wq, wk, wv):
    Q, K, V = (dec.matmul(x, w) for w in (wq, wk, wv))
    return dec.sdpa(Q, K, V, dec.scale_of(D_HEAD)), (Q, K, V)


def build(ctx: BuildContext) -> list[dict]:
    p = parameters()
    x = dec.to_dec(p["sentence_embed"])
    W = {n: dec.to_dec(p[n]) for n in ("w_query", "w_key", "w_value", "w_output")}
    heads = [_dec_head(x, W["w_query"][h], W["w_key"][h], W["w_value"][h]) for h in range(HEADS)]
    d50 = "50-digit decimal arithmetic (refimpl.sources._decimal) on the float64 parameters"
    xf = p["sentence_embed"]
    qkv = [tuple(xf @ p[n][h] for n in ("w_query", "w_key", "w_value")) for h in range(HEADS)]
    out = []

    # single head: head 0's weights
    fid = f"{SOURCE}/single-head"
    (z0, a0, _), _ = heads[0]
    q0, k0, v0 = qkv[0]
    single_inputs = {"sentence_embed": xf, "w_q": p["w_query"][0], "w_k": p["w_key"][0], "w_v": p["w_value"][0]}
    steps = [step("matmul", {"a": "sentence_embed", "b": "w_q"}, ["queries"]),
             step("row", {"a": "queries"}, ["query_1"], index=0),
             step("matmul", {"a": "sentence_embed", "b": "w_k"}, ["keys"]),
             step("matmul", {"a": "sentence_embed", "b": "w_v"}, ["values"]),
             step("general_attention", {"query": "query_1", "keys": "keys", "values": "values"}, ["z1", "a1"]),
             step("self_attention", {"x": "sentence_embed", "w_q": "w_q", "w_k": "w_k", "w_v": "w_v"},
                  ["z", "weights"])]
    expected = {"z1": [expect("decimal50", dec.to_float(z0[0]), sdpa_rule(q0[:1], k0, v0), d50)],
                "a1": [expect("decimal50", dec.to_float(a0[0]), sdpa_rule(q0[:1], k0, v0, weights=True), d50)],
                "z": [expect("decimal50", dec.to_float(z0), sdpa_rule(q0, k0, v0), d50)],
                "weights": [expect("decimal50", dec.to_float(a0), sdpa_rule(q0, k0, v0, weights=True), d50)]}
    out.append(make(fid, META, "single-head part: query_1 = x_1 @ w_q, softmax over the keys, z1 = sum_j a1j v_j",
                    False, "The source published no values; parameters are from the documented seeded generator "
                           "(head 0 of w_query/w_key/w_value).", RECIPE, single_inputs, steps, expected))

    # multi-head with W_o
    fid = f"{SOURCE}/multi-head"
    concat = np.concatenate([h[0][0] for h in heads], axis=1)            # (5, 16) Decimal
    final = dec.matmul(concat, W["w_output"])
    weights = np.stack([dec.to_float(h[0][1]) for h in heads])            # (4, 5, 5)
    zf = np.concatenate([dec.to_float(h[0][0]) for h in heads], axis=1)
    n_terms = max(sdpa_rule(*qkv[h])["n_terms"] for h in range(HEADS)) + HEADS * D_HEAD
    mag = float(np.abs(zf).max() * np.abs(p["w_output"]).sum(axis=0).max())
    expected = {
        "weights": [expect("decimal50", weights, {"rule": "forward", "dtype": "float64", "n_terms": max(
            sdpa_rule(*qkv[h], weights=True)["n_terms"] for h in range(HEADS)), "magnitude": 1.0}, d50)],
        "output": [expect("decimal50", dec.to_float(final), {"rule": "forward", "dtype": "float64",
                                                             "n_terms": float(n_terms), "magnitude": mag * 1.01}, d50)],
    }
    steps = [step("multi_head_attention", {"x": "sentence_embed", "w_q": "w_query", "w_k": "w_key", "w_v": "w_value",
                                           "w_o": "w_output"}, ["output", "weights"])]
    out.append(make(fid, META, "multi-head part: 4 heads, einsum('sd,hde->hse'), concat then @ w_output", False,
                    "The source published no values; only shapes (w_query (4, 16, 4), outputs (4, 5, 4), concat 16) "
                    "are the source's. Parameters from the documented seeded generator.", RECIPE, p, steps, expected))
    return out
