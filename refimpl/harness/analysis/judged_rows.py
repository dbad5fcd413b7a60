"""Which rows of a target's output the judge holds against it, as the diagnosis's fits read them: a model is not
held to the rows no verdict looks at (docs/diagnosis.md, "Every model must explain ...").

* a packed batch's padding rows (no sequence's query): never judged;
* rows with no key where both the model and the target give a value the judge accepts there (zeros, NaN or the
  mean of the values, as :func:`~refimpl.harness.verdicts.judge.classify_dead_rows` reads them): a kernel with one
  mistake writes its own choice there, which says nothing about the mistake. Rows with no key that the judge
  failed are live: the diagnosis clears ``dead`` for them before it fits.
"""
from __future__ import annotations

import numpy as np

from ..cases.features import CaseData, values_mean

__all__ = ["unjudged_from"]


def _conventional(rows: np.ndarray, data: CaseData) -> np.ndarray:
    """(B, Hq, Sq) bool: the rows of ``rows`` (B, Hq, Sq, Dv) the judge accepts where a row has no key: zeros,
    NaN, or the mean of the values (as :func:`~refimpl.harness.verdicts.judge.classify_dead_rows` reads them)."""
    mean_v = values_mean(data)                                                   # (B, Hq, 1, Dv)
    scale = 1e-3 * (1.0 + float(np.abs(mean_v).max())) if mean_v.size else 1e-3
    with np.errstate(invalid="ignore", over="ignore"):
        uniform = np.all(np.abs(rows - mean_v) <= scale + 1e-2 * np.abs(mean_v), axis=-1)
    return np.all(rows == 0, axis=-1) | np.all(np.isnan(rows), axis=-1) | uniform


def unjudged_from(got: np.ndarray, out: np.ndarray, data: CaseData) -> np.ndarray:
    """``out`` (B, Hq, Sq, Dv) with the rows the judge does not hold against a target taken from ``got``: a
    packed batch's padding rows, and rows with no key where both give a value the judge accepts there (a model
    writing zeros where the kernel wrote NaN or the mean of v differs from it only where no verdict looks).
    Rows with no key that the judge failed are live here (:func:`_usable` clears ``dead`` for them)."""
    got = np.asarray(got, np.float64)
    if out.shape != got.shape:
        return out
    rows = np.zeros(out.shape[:-1], bool)                                          # (B, Hq, Sq)
    if data.absent is not None:
        rows |= np.broadcast_to(data.absent, rows.shape)
    dead = np.broadcast_to(data.dead, rows.shape)
    if dead.any():
        rows |= dead & _conventional(out, data) & _conventional(got, data)
    return np.where(rows[..., None], got, out) if rows.any() else out
