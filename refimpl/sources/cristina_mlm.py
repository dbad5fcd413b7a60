"""Source ``cristina-mlm``: Stefania Cristina, "The Attention Mechanism from Scratch" (MachineLearningMastery):
general attention with NumPy, first for one query, then in matrix form.

Inputs: four word vectors; W_Q, W_K, W_V from NumPy's legacy global RNG, ``random.seed(42)`` then
``random.randint(3, size=(3, 3))`` three times (the legacy stream is guaranteed stable across versions).
"""
from __future__ import annotations

import math

import numpy as np

from . import _decimal as dec
from ._build import BuildContext, expect, make, qkv_score_steps, sdpa_rule, step

SOURCE = "cristina-mlm"
META = {"title": "The Attention Mechanism from Scratch (general attention with NumPy and SciPy)",
        "author": "Stefania Cristina, MachineLearningMastery",
        "urls": ["https://machinelearningmastery.com/the-attention-mechanism-from-scratch/"]}
WORDS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float64)
RECIPE = {"kind": "numpy-legacy", "seed": 42, "calls": ["randint(3, size=(3, 3))"] * 3,
          "text": "from numpy import random; random.seed(42); W_Q = random.randint(3, size=(3, 3)); "
                  "W_K = random.randint(3, size=(3, 3)); W_V = random.randint(3, size=(3, 3)); "
                  "words = array([1,0,0]), array([0,1,0]), array([1,1,0]), array([0,0,1]) explicit"}


def weights() -> dict[str, np.ndarray]:
    rs = np.random.RandomState(42)            # the legacy global stream of random.seed(42)
    return {n: rs.randint(3, size=(3, 3)).astype(np.float64) for n in ("W_Q", "W_K", "W_V")}


def build(ctx: BuildContext) -> list[dict]:
    pub = (ctx.published(SOURCE) or {}).get("published", {})
    w = weights()
    Q, K, V = (WORDS @ w[n] for n in ("W_Q", "W_K", "W_V"))
    s = 1.0 / math.sqrt(3)
    fid = f"{SOURCE}/general-attention"
    steps = qkv_score_steps("words", "W_Q", "W_K", "W_V") + [
             step("row", {"a": "Q"}, ["query_1"], index=0),
             step("general_attention", {"query": "query_1", "keys": "K", "values": "V"},
                  ["first_word_attention", "first_word_weights"]),
             step("general_attention_matrix", {"words": "words", "w_q": "W_Q", "w_k": "W_K", "w_v": "W_V"},
                  ["attention", "weights"])]
    numpy8 = {"rule": "printed", "decimals": 8, "who": "numpy print (8 decimals)"}
    sig9 = {"rule": "printed", "significant": 9, "who": "a public copy of the notebook (9 significant digits)"}
    exact = {"rule": "exact"}
    facts = ctx.published(SOURCE) or {}
    P = lambda name, key: ctx.published_value(fid, name, pub.get(key))  # noqa: E731
    out50, w50, _ = dec.sdpa(Q, K, V)                      # 50 digits, scale 1/sqrt(3)
    d50 = "50-digit decimal arithmetic (refimpl.sources._decimal)"
    expected = {
        **{n: [expect("published", ctx.published_value(fid, n, facts.get("inputs", {}).get(n)), exact,
                      "printed by the tutorial; the recipe regenerates it")] for n in ("W_Q", "W_K", "W_V")},
        "scores": [expect("published", P("scores", "scores (printed in a public copy of the notebook)"), exact,
                          "an integer array: printed exactly")],
        "first_word_attention": [expect("published", P("first_word_attention", "first_word_attention"), numpy8),
                                 expect("decimal50", dec.to_float(out50[0]), sdpa_rule(Q[:1], K, V, s), d50)],
        "first_word_weights": [expect("decimal50", dec.to_float(w50[0]), sdpa_rule(Q[:1], K, V, s, weights=True), d50)],
        "attention": [expect("published", P("attention", "attention"), numpy8),
                      expect("decimal50", dec.to_float(out50), sdpa_rule(Q, K, V, s), d50)],
        "weights": [expect("published", P("weights", "weights (printed in a public copy of the notebook, "
                                                     "9 significant digits)"), sig9),
                    expect("decimal50", dec.to_float(w50), sdpa_rule(Q, K, V, s, weights=True), d50)],
    }
    return [make(fid, META, "'The General Attention Mechanism with NumPy and SciPy': first-word attention and the "
                            "matrix form", True,
                 "Both forms scale by sqrt(3): key_1.shape[0]**0.5 and K.shape[1]**0.5. The W's are inputs "
                 "regenerated from the recipe and equal to the tutorial's printed ones.",
                 RECIPE, {"words": WORDS, **w}, steps, expected)]
