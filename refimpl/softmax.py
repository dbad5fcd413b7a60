"""Numerically stable softmax."""
from __future__ import annotations

import numpy as np

from ._checks import InputTypeError, ShapeError, as_float_array

__all__ = ["softmax"]


def softmax(x, *, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``: ``softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m)`` with ``m = max_j x_j``.

    Subtracting the maximum makes every exponent <= 0, so nothing overflows; the result is finite for
    every finite input, including values up to +-1e308 (a difference that overflows to -inf gives an
    exact 0 weight, which is the correctly rounded answer).

    Conventions:
      * ``-inf`` is allowed and means "no weight" (an additive mask); NaN and ``+inf`` are refused.
      * A slice whose entries are all ``-inf`` gives all zeros (no finite maximum; same rule as a fully
        masked query in :func:`refimpl.scaled_dot_product_attention`).
      * float32 stays float32; integers are converted to float64.
    """
    x = as_float_array(x, "x", min_ndim=1, dims="(..., n)", allow_neg_inf=True)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise InputTypeError(f"axis must be an int, got {type(axis).__name__} {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"axis must be in [{-x.ndim}, {x.ndim - 1}] for x of shape {x.shape}, got {axis}")
    return _softmax_inplace(x.copy(), axis)


def _softmax_inplace(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax of ``z`` along ``axis``, written into ``z``. No validation: internal use."""
    m = z.max(axis=axis, keepdims=True)          # (..., 1, ...)
    dead = m == -np.inf                          # slices with every entry -inf
    if dead.any():
        m[dead] = 0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        np.subtract(z, m, out=z)                 # <= 0 everywhere; may overflow to -inf -> weight 0
        np.exp(z, out=z)
    s = z.sum(axis=axis, keepdims=True)
    if dead.any():
        s[dead] = 1                              # 0 / 1 = 0 for fully masked slices
    np.divide(z, s, out=z)
    return z
