"""Numerically stable softmax."""
from __future__ import annotations

import numpy as np

from ._checks import InputTypeError, ShapeError, as_float_array
from ._kernel import masked_softmax_

__all__ = ["softmax"]


def softmax(x, *, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``: ``softmax(x)_i = exp(x_i - m) / sum_j exp(x_j - m)`` with ``m = max_j x_j``.

    Subtracting the maximum makes every exponent <= 0, so nothing overflows; the result is finite for
    every finite input, including values up to +-1e308 (a difference that overflows to -inf gives an
    exact 0 weight, which is the correctly rounded answer).

    Conventions:
      * ``-inf`` is allowed and means "no weight" (an additive mask); NaN and ``+inf`` are refused.
      * A slice whose entries are all ``-inf`` gives all zeros (no finite maximum; the dead-row rule of
        :func:`refimpl._kernel.masked_softmax_`, shared with a fully masked query in
        :func:`refimpl.scaled_dot_product_attention`).
      * float32 stays float32; integers are converted to float64.
    """
    x = as_float_array(x, "x", min_ndim=1, dims="(..., n)", allow_neg_inf=True)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise InputTypeError(f"axis must be an int, got {type(axis).__name__} {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"axis must be in [{-x.ndim}, {x.ndim - 1}] for x of shape {x.shape}, got {axis}")
    z = x.copy()
    masked_softmax_(np.moveaxis(z, axis, -1), None, None)   # in place through the view
    return z
