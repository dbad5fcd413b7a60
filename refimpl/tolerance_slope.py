"""Rule 4's second half (:mod:`refimpl.tolerance` holds the rest of the model): a low-precision output's
least-squares slope on the float64 oracle. Elementwise, a half type's budget must allow the rounding of a
correct kernel, and an output scaled by 1 + 1e-2 (about 20 ulps of float16) fits inside it; but rounding
errors change sign from row to row and average out, and a wrong factor does not."""
from __future__ import annotations

import math

import numpy as np

from .tolerance import K_BUDGET, eps

__all__ = ["slope_of", "slope_deviation", "slope_allowance", "SLOPE_ULPS", "SLOPE_NOISE"]

SLOPE_ULPS = 2.0     # the least a correct low-precision output's slope on the oracle may differ from 1, in ulps
SLOPE_NOISE = 1.0    # a bound on the standard deviation of one output element's rounding error, in ulps of (P|V|)_id


def slope_of(out, oracle) -> float:
    """The least-squares slope of ``out`` on ``oracle`` (1 when the oracle is all zeros)."""
    o = np.asarray(oracle, np.float64).ravel()
    s2 = float(o @ o)
    return 1.0 if s2 == 0.0 else float(o @ np.asarray(out, np.float64).ravel()) / s2


def slope_deviation(out, oracle) -> float:
    """``|slope - 1|``, the least-squares slope of ``out`` on ``oracle`` (0 when the oracle is all zeros)."""
    return abs(slope_of(out, oracle) - 1.0)


def slope_allowance(reference, oracle, dtype, magnitude=None, conditioning: float = 0.0) -> float:
    """Rule 4's second half: how far from 1 the least-squares slope of a low-precision output (n_rows, Dv) on
    the oracle may be. Rounding errors differ in sign from row to row (a row's errors may move together: its
    scores and normaliser round together), so over many rows they average out: a correct kernel's slope is 1
    within ``K_BUDGET`` times the same-precision reference's deviation plus 4 standard errors over the rows, a
    row's error taken as the reference's (``K_BUDGET`` x) or as ``(1 + conditioning) SLOPE_NOISE`` ulps of each
    element's ``magnitude`` ((P |V|)_id where the weights are known, else max|oracle|; the conditioning of rule 4:
    a kernel rounding its scores differently from the reference), and at least ``SLOPE_ULPS`` ulps.
    An output scaled by 1 + 1e-2, inside a half type's elementwise budget, is not within this."""
    o = np.asarray(oracle, np.float64).reshape(len(oracle), -1)
    s2 = float((o * o).sum())
    if s2 == 0.0:
        return math.inf
    u = eps(dtype)
    err = np.asarray(reference, np.float64).reshape(o.shape) - o
    m = np.broadcast_to(np.abs(o).max() if magnitude is None else np.asarray(magnitude, np.float64), o.shape)
    by_ref, by_ulps = (o * err).sum(axis=1), (np.abs(o) * m).sum(axis=1)          # each row's share of the slope
    noise = max(K_BUDGET * math.sqrt(float(by_ref @ by_ref)),
                (1.0 + conditioning) * SLOPE_NOISE * u * math.sqrt(float(by_ulps @ by_ulps)))
    return max(SLOPE_ULPS * u, K_BUDGET * slope_deviation(reference, o) + 4.0 * noise / s2)
