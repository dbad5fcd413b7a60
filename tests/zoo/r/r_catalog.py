"""CATALOG of the R implementations in attention_impls.R (api "r": the protocol of the CRAN package 'attention').

``fn(Q, K, V, mask = NULL)``: numeric matrices Q (Sq x D), K (Sk x D), V (Sk x Dv); mask NULL or a 0/1 numeric
matrix (Sq x Sk, 1 = attend); returns the output (Sq x Dv) or list(output, weights). Load the functions in R with
``source(R_SOURCE)``; run_cases.R (same folder) runs them on JSON cases for processes without rpy2.
"""
from pathlib import Path

R_SOURCE = Path(__file__).with_name("attention_impls.R")
R_RUNNER = Path(__file__).with_name("run_cases.R")


def _entry(fn, correct, model, note, convention="zeros"):
    return {"name": fn, "api": "r", "fn": fn, "correct": correct, "model": model, "convention": convention,
            "dtype": "float64", "features": ["mask", "causal", "window"], "note": note}


CATALOG = [
    _entry("attn_correct", True, None, "scale 1/sqrt(D), max subtraction, fully masked row -> 0"),
    _entry("attn_correct_list", True, None, "as attn_correct, returns list(output, weights)"),
    _entry("attn_wrong_scale", False, "scale", "scale 1/sqrt(Sk): nrow(K) instead of ncol(K)"),
    _entry("attn_mask_polarity", False, "mask-polarity", "mask == 1 treated as masked out", convention=None),
    _entry("attn_one_key_bug", False, None, "t(apply(...)) collapses to a vector when Sk == 1: "
           "'non-conformable arguments' error when Sk == 1 and Sq > 1"),
    _entry("attn_errors", False, None, "stop() when Sq > 4"),
    _entry("attn_warns", False, None, "correct output, but warning() whenever a mask is given"),
]
