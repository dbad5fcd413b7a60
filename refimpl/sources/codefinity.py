"""Source ``codefinity``: "How Self-Attention Is Calculated" (Codefinity course chapter).

Three words of embedding size 4 and 4x4 projections, all written as short decimals; scores divided by
sqrt(d_k) = 2, row softmax with max-subtraction. The chapter printed no output, so the expected values
are computed from the decimal inputs *as written* (0.1 is one tenth, not its binary neighbour) with
50-digit decimal arithmetic.
"""
from __future__ import annotations

from decimal import Decimal

import numpy as np

from . import _decimal as dec
from ._build import BuildContext, expect, make, qkv_score_steps, sdpa_rule, step

SOURCE = "codefinity"
META = {"title": "How Self-Attention Is Calculated", "author": "Codefinity course chapter", "urls": []}
TEXT = {  # the chapter's inputs, as decimal text
    "X": [["1.0", "0.0", "1.0", "0.0"], ["0.0", "2.0", "0.0", "2.0"], ["1.0", "1.0", "1.0", "1.0"]],
    "W_q": [["0.1", "0.2", "0.0", "0.0"], ["0.0", "0.1", "0.3", "0.0"], ["0.1", "0.0", "0.0", "0.2"],
            ["0.0", "0.0", "0.2", "0.3"]],
    "W_k": [["0.2", "0.0", "0.1", "0.0"], ["0.0", "0.1", "0.0", "0.3"], ["0.1", "0.0", "0.2", "0.0"],
            ["0.0", "0.2", "0.0", "0.1"]],
    "W_v": [["0.0", "0.1", "0.0", "0.2"], ["0.2", "0.0", "0.2", "0.0"], ["0.0", "0.3", "0.1", "0.0"],
            ["0.1", "0.0", "0.0", "0.3"]],
}


def inputs() -> dict[str, np.ndarray]:
    return {n: np.array([[float(x) for x in row] for row in t]) for n, t in TEXT.items()}


def build(ctx: BuildContext) -> list[dict]:
    x = {n: np.array([[Decimal(v) for v in row] for row in t], dtype=object) for n, t in TEXT.items()}
    Q, K, V = (dec.matmul(x["X"], x[w]) for w in ("W_q", "W_k", "W_v"))
    out50, w50, z50 = dec.sdpa(Q, K, V, dec.CTX.divide(Decimal(1), Decimal(2)))
    f = inputs()
    Qf, Kf, Vf = (f["X"] @ f[w] for w in ("W_q", "W_k", "W_v"))
    d50 = "50-digit decimal arithmetic on the decimal inputs as written"
    mm = lambda m: {"rule": "forward", "dtype": "float64", "n_terms": 8.0,  # noqa: E731
                    "magnitude": float(np.abs(m).max()) * 1.01}
    fid = f"{SOURCE}/self-attention"
    steps = qkv_score_steps("X", "W_q", "W_k", "W_v") + [
             step("self_attention", {"x": "X", "w_q": "W_q", "w_k": "W_k", "w_v": "W_v"}, ["output", "weights"])]
    expected = {
        "Q": [expect("decimal50", dec.to_float(Q), mm(Qf), d50)],
        "K": [expect("decimal50", dec.to_float(K), mm(Kf), d50)],
        "V": [expect("decimal50", dec.to_float(V), mm(Vf), d50)],
        "scores": [expect("decimal50", dec.to_float(dec.matmul(Q, K.T)), mm(Qf @ Kf.T), d50)],
        "weights": [expect("decimal50", dec.to_float(w50), sdpa_rule(Qf, Kf, Vf, 0.5, weights=True), d50)],
        "output": [expect("decimal50", dec.to_float(out50), sdpa_rule(Qf, Kf, Vf, 0.5), d50)],
    }
    return [make(fid, META, "the chapter's worked example: 3 words, embedding size 4, d_k = 4", False,
                 "The source published no output values. Expected values are 50-digit decimal arithmetic on the "
                 "inputs as written (exact decimals), rounded to float64.",
                 {"kind": "explicit", "text": "X, W_q, W_k, W_v as written in the chapter (decimal literals)"},
                 inputs(), steps, expected)]
