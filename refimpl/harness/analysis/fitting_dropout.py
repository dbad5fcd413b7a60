"""Dropout left active when none was asked for (``dropout_p = 0``), fitted from the output alone.

A kernel that drops weights at ``dropout_p = 0`` (a default rate, a flag read the wrong way, a training switch left
on) returns ``(W * keep * s) @ V`` for a random keep pattern and a rescaling ``s``. No fixed model gives that
output, but each row can be solved for it: with the row's n keys of nonzero weight and Dv >= n, the coefficients
``c`` in ``got = sum_j c_j W_j V_j`` are determined (least squares on the (n, Dv) matrix of ``W_j V_j``, when it
is well conditioned). Dropout makes every ``c_j`` either 0 or one common ``s > 1``; any other mistake (a wrong
scale, mask or head) gives coefficients that are not. The fit is named when, over the failing cases of the sample:

* at least ``MIN_ROWS`` rows are determined, in at least a quarter of the sampled failing cases (a case with more
  keys than Dv in every row cannot be solved: it neither counts for the fit nor against it);
* every determined coefficient is near 0 or the common ``s`` (their median): within ``_rtol`` of the widest dtype
  among the sampled failing cases (the largest rtol), relative to ``s``;
* ``s > 1`` and the fraction of coefficients at 0 is the rate ``1 - 1/s`` implies, within 5 binomial standard
  deviations (at least one weight dropped).

The line prints the fitted rescaling, the rate it implies and the fraction dropped.
"""
from __future__ import annotations

import numpy as np

from ...precision import get as precision

__all__ = ["dropout_at_zero_line"]

MIN_ROWS = 8
COND = 1e6


def _rtol(dtype: str) -> float:
    """How near 0 or s a solved coefficient must be: 2e4 unit roundoffs of the case's dtype, within [1e-6, 2e-2]
    (float64 1e-6, float32 1.2e-3, the 16-bit types 2e-2)."""
    return min(2e-2, max(1e-6, 2e4 * precision(dtype).eps))


def _coefficients(w: np.ndarray, v: np.ndarray, got: np.ndarray, rtol: float) -> np.ndarray | None:
    """c with got = sum_j c_j w_j v_j over the keys of nonzero weight (None: not determined; [NaN]: no such c,
    the row is no reweighting of the values, which rejects the fit)."""
    keys = np.flatnonzero(w > 1e-12)
    if keys.size == 0 or keys.size > v.shape[-1] or not np.isfinite(got).all():
        return None
    a = w[keys, None] * v[keys]                                    # (n, Dv)
    if not np.isfinite(a).all() or np.linalg.cond(a) > COND:
        return None
    c, *_ = np.linalg.lstsq(a.T, got, rcond=None)
    if np.abs(a.T @ c - got).max() > 10 * rtol * np.abs(got).max() + 1e-300:
        return np.array([np.nan])
    return c


def dropout_at_zero_line(target: str, fail_cases: list) -> list[str]:
    """``diagnosis TARGET: dropout-active-at-zero — ...`` when the fit above holds on ``fail_cases`` ((CaseData,
    output (B, Hq, Sq, Dv)) pairs of a run without dropout); [] otherwise."""
    coefs: list[np.ndarray] = []
    determined = 0
    for data, got in fail_cases:
        if data.weights is None or got is None:
            continue
        s = data.spec
        v = np.repeat(np.asarray(data.v, np.float64), s.Hq // s.Hkv, axis=1)          # (B, Hq, Sk, Dv)
        w = np.broadcast_to(data.weights, data.weights.shape)
        live = np.broadcast_to(data.live, w.shape[:-1])
        rt = _rtol(s.dtype)
        rows = [r for idx in zip(*np.nonzero(live))
                if (r := _coefficients(w[idx], v[idx[:2]], got[idx], rt)) is not None]
        if rows:
            determined += 1
            coefs += rows
    if len(coefs) < MIN_ROWS or 4 * determined < len(fail_cases):
        return []
    rtol = max(_rtol(data.spec.dtype) for data, _ in fail_cases)
    c = np.concatenate(coefs)
    nonzero = c[np.abs(c) > 0.5]
    if nonzero.size == 0:
        return []
    scale = float(np.median(nonzero))
    if scale <= 1.0 + 10 * rtol or not np.all((np.abs(c) <= rtol * scale) | (np.abs(c - scale) <= rtol * scale)):
        return []
    dropped = int(np.sum(np.abs(c) <= rtol * scale))
    rate = 1.0 - 1.0 / scale
    sd = np.sqrt(c.size * rate * (1.0 - rate))
    if dropped == 0 or abs(dropped - c.size * rate) > 5 * sd + 1:
        return []
    return [f"diagnosis {target}: dropout-active-at-zero — dropout_p = 0, yet weights are dropped: the kept ones "
            f"are scaled by {scale:.4g} (1/(1 - p) for p = {rate:.3g}), {dropped} of {c.size} weights solved for are "
            f"0 ({dropped / c.size:.1%})"]
