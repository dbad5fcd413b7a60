"""The R package 'attention' (CRAN 0.4.0, Bastiaan Quast) recomputed in Python: its two vignettes
("Simple Self-Attention from Scratch", "Complete Self-Attention from Scratch") and the documented
examples of SoftMax, RowMax and ComputeWeights. Used by the ``r-attention`` source's generator and by
``refimpl check``'s vignette and example cases.

Inputs come from :mod:`refimpl.r.rrng` (R's ``set.seed`` + ``runif`` bit for bit), so the weight
matrices are identical to R's. Each recomputation returns every variable the vignette creates.
"""
from __future__ import annotations

import math

import numpy as np

from ..attention import scaled_dot_product_attention
from ..r import compat as r_compat
from ..r.rrng import RRNG
from ..softmax import softmax

WORDS = np.array([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])   # word_1..word_4 stacked by rbind


def vignette_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """``set.seed(0); W_X = matrix(floor(runif(9, min=0, max=3)), nrow=3, ncol=3)`` for Q, K, V in turn
    (R fills matrices column by column: ``order="F"``)."""
    rng = RRNG(seed)
    return {name: np.floor(rng.runif(9, 0, 3)).reshape(3, 3, order="F") for name in ("W_Q", "W_K", "W_V")}


def _common() -> dict[str, np.ndarray]:
    v = {f"word_{i + 1}": WORDS[i:i + 1].copy() for i in range(4)}     # (1, 3) each: matrix(c(...), nrow=1)
    v["words"] = WORDS.copy()
    v.update(vignette_weights())
    v["Q"], v["K"], v["V"] = (v["words"] @ v[w] for w in ("W_Q", "W_K", "W_V"))   # (4, 3) x (3, 3) -> (4, 3)
    v["scores"] = v["Q"] @ v["K"].T                                               # (4, 4)
    return v


def simple_vignette() -> dict[str, np.ndarray]:
    """The simple vignette: ``weights = ComputeWeights(scores)`` (scale 1/sqrt(nrow(scores)) = 1/2: D1)."""
    v = _common()
    v["weights"] = r_compat.ComputeWeights(v["scores"])
    v["attention"] = v["weights"] @ v["V"]
    return v


def simple_vignette_refimpl() -> dict[str, np.ndarray]:
    """The simple vignette's numbers from refimpl: sdpa with the vignette's scale 1/sqrt(4) made explicit."""
    v = _common()
    v["attention"], v["weights"] = scaled_dot_product_attention(v["Q"], v["K"], v["V"], scale=1.0 / math.sqrt(4))
    return v


def complete_vignette() -> dict[str, np.ndarray]:
    """The complete vignette: row max, then ``exp((s - max)/sqrt(ncol(K))) / sum(...)`` per row."""
    v = _common()
    v["maxs"] = v["scores"].max(axis=1, keepdims=True)                            # (4, 1) as.matrix(apply(..., 1, max))
    v["weights"] = softmax((v["scores"] - v["maxs"]) / math.sqrt(v["K"].shape[1]), axis=1)
    v["attention"] = v["weights"] @ v["V"]
    v["i"] = np.array([4.0])                                                      # the loop variable R leaves behind
    return v


def complete_vignette_refimpl() -> dict[str, np.ndarray]:
    """The complete vignette is plain scaled dot-product attention (default scale 1/sqrt(d_k))."""
    v = _common()
    v["attention"], v["weights"] = scaled_dot_product_attention(v["Q"], v["K"], v["V"])
    return v


def softmax_example_input() -> np.ndarray:
    """SoftMax's documented example: ``set.seed(0); V = floor(runif(9, min=-3, max=3))``."""
    return np.floor(RRNG(0).runif(9, -3, 3))


def rowmax_example_input() -> np.ndarray:
    """RowMax's documented example: ``set.seed(0); M = matrix(floor(runif(9, min=0, max=3)), nrow=3, ncol=3)``."""
    return np.floor(RRNG(0).runif(9, 0, 3)).reshape(3, 3, order="F")
