"""Source ``bahdanau-luong``: the encoder-decoder attention that Stefania Cristina's "The Attention Mechanism
from Scratch" starts from (Bahdanau et al., 2014: alignment scores from a small feed-forward network,
weights by softmax, context as the weighted sum of encoder states) and Luong et al.'s score functions.

The text describes the method and published no numbers. The states and parameters here come from a
documented seeded generator (NumPy's legacy ``RandomState(2014)``), and the expected values from
50-digit decimal arithmetic (tanh via exp), independent of refimpl's code.
"""
from __future__ import annotations

from decimal import Decimal

import numpy as np

from . import _decimal as dec
from ._build import BuildContext, expect, forward_rule, make, step

SOURCE = "bahdanau-luong"
META = {"title": "The Attention Mechanism from Scratch (the Bahdanau encoder-decoder attention it starts from)",
        "author": "Stefania Cristina, MachineLearningMastery; method of Bahdanau, Cho and Bengio (2014) and "
                  "Luong, Pham and Manning (2015)",
        "urls": ["https://machinelearningmastery.com/the-attention-mechanism-from-scratch/",
                 "https://arxiv.org/abs/1409.0473", "https://arxiv.org/abs/1508.04025"]}
T, N, D_S, D_H, D_A = 3, 5, 4, 4, 6
RECIPE = {"kind": "numpy-legacy", "seed": 2014,
          "calls": ["standard_normal((3, 4)) -> s", "standard_normal((5, 4)) -> h",
                    "standard_normal((4, 6)) / 2 -> w_a", "standard_normal((4, 6)) / 2 -> u_a",
                    "standard_normal(6) -> v_a", "standard_normal((4, 4)) / 2 -> w_general",
                    "standard_normal((8, 6)) / 2 -> w_concat"],
          "text": "rs = numpy.random.RandomState(2014); then, in this order: s = rs.standard_normal((3, 4)) "
                  "(decoder states), h = rs.standard_normal((5, 4)) (encoder states), w_a, u_a = "
                  "rs.standard_normal((4, 6)) / 2 each, v_a = rs.standard_normal(6), w_general = "
                  "rs.standard_normal((4, 4)) / 2, w_concat = rs.standard_normal((8, 6)) / 2; mask = the last "
                  "encoder position is padding. Documented here; the source published no values."}


def parameters() -> dict[str, np.ndarray]:
    rs = np.random.RandomState(2014)
    p = {"s": rs.standard_normal((T, D_S)), "h": rs.standard_normal((N, D_H)),
         "w_a": rs.standard_normal((D_S, D_A)) / 2, "u_a": rs.standard_normal((D_H, D_A)) / 2,
         "v_a": rs.standard_normal(D_A), "w_general": rs.standard_normal((D_S, D_H)) / 2,
         "w_concat": rs.standard_normal((D_S + D_H, D_A)) / 2}
    p["mask"] = np.array([True, True, True, True, False])
    return p


def _tanh(x: Decimal) -> Decimal:
    e2 = dec.CTX.exp(dec.CTX.multiply(Decimal(2), x))
    return dec.CTX.divide(dec.CTX.subtract(e2, Decimal(1)), dec.CTX.add(e2, Decimal(1)))


def _additive_dec(s, h, w_a, u_a, v_a):
    sw, hu = dec.matmul(s, w_a), dec.matmul(h, u_a)
    e = np.empty((s.shape[0], h.shape[0]), dtype=object)
    for t in range(s.shape[0]):
        for i in range(h.shape[0]):
            acc = Decimal(0)
            for a in range(w_a.shape[1]):
                acc = dec.CTX.add(acc, dec.CTX.multiply(v_a[a], _tanh(dec.CTX.add(sw[t, a], hu[i, a]))))
            e[t, i] = acc
    return e


def _context_dec(e, h, keep):
    w = np.empty(e.shape, dtype=object)
    for t in range(e.shape[0]):
        live = [i for i in range(e.shape[1]) if keep[i]]
        m = max(e[t, i] for i in live)
        ex = {i: dec.CTX.exp(dec.CTX.subtract(e[t, i], m)) for i in live}
        tot = Decimal(0)
        for x in ex.values():
            tot = dec.CTX.add(tot, x)
        for i in range(e.shape[1]):
            w[t, i] = dec.CTX.divide(ex[i], tot) if i in ex else Decimal(0)
    return dec.matmul(w, h), w


def build(ctx: BuildContext) -> list[dict]:
    p = parameters()
    d = {n: dec.to_dec(p[n]) for n in p if n != "mask"}
    e_add = _additive_dec(d["s"], d["h"], d["w_a"], d["u_a"], d["v_a"])
    e_gen = dec.matmul(dec.matmul(d["s"], d["w_general"]), d["h"].T)
    e_cat = _additive_dec(d["s"], d["h"], d["w_concat"][:D_S], d["w_concat"][D_S:], d["v_a"])
    c_add, w_add = _context_dec(e_add, d["h"], p["mask"])
    c_gen, w_gen = _context_dec(e_gen, d["h"], p["mask"])
    d50 = "50-digit decimal arithmetic (tanh via exp), independent of refimpl"
    va = float(np.abs(p["v_a"]).sum())
    hmax = float(np.abs(p["h"]).max())
    score_rule = forward_rule(D_A * 8 + 8, va * 1.01)
    gen_rule = forward_rule(D_S * D_H + 4,
                            float(np.abs(p["s"]).max() * np.abs(p["w_general"]).max() * hmax * D_S * D_H))
    w_rule = lambda e: forward_rule(2 * float(np.abs(dec.to_float(e)).max()) + N + 2, 1.0)  # noqa: E731
    c_rule = lambda e: forward_rule(2 * float(np.abs(dec.to_float(e)).max()) + N + D_H + 2, hmax * 1.01)  # noqa: E731
    steps = [step("additive_scores", {"s": "s", "h": "h", "w_a": "w_a", "u_a": "u_a", "v_a": "v_a"}, ["e_additive"]),
             step("attention_context", {"scores": "e_additive", "h": "h", "mask": "mask"},
                  ["context_additive", "weights_additive"]),
             step("luong_scores", {"s": "s", "h": "h", "w": "w_general"}, ["e_general"], kind="general"),
             step("attention_context", {"scores": "e_general", "h": "h", "mask": "mask"},
                  ["context_general", "weights_general"]),
             step("luong_scores", {"s": "s", "h": "h", "w": "w_concat", "v_a": "v_a"}, ["e_concat"], kind="concat")]
    expected = {
        "e_additive": [expect("decimal50", dec.to_float(e_add), score_rule, d50)],
        "weights_additive": [expect("decimal50", dec.to_float(w_add), w_rule(e_add), d50)],
        "context_additive": [expect("decimal50", dec.to_float(c_add), c_rule(e_add), d50)],
        "e_general": [expect("decimal50", dec.to_float(e_gen), gen_rule, d50)],
        "weights_general": [expect("decimal50", dec.to_float(w_gen), w_rule(e_gen), d50)],
        "context_general": [expect("decimal50", dec.to_float(c_gen), c_rule(e_gen), d50)],
        "e_concat": [expect("decimal50", dec.to_float(e_cat), score_rule, d50)],
    }
    return [make(f"{SOURCE}/encoder-decoder", META, "the Bahdanau alignment model and Luong's general and concat "
                 "scores, with the context step over a padded source", False,
                 "The source describes the method and published no values; the parameters come from the "
                 "documented seeded generator.", RECIPE, p, steps, expected)]
