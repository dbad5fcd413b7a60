"""Diagnosis of a wrong log-sum-exp (``--lse``) by the models of :mod:`refimpl.bugs_lse`.

A model is named when, on every failed case of the sample (at most ``MAX_FAILING``), the case failed on its LSE
alone (the judge's detail begins with ``log-sum-exp``: every other problem, the output's included, comes before
it) and the model reproduces the returned LSE and explains it, and when it reproduces the LSE of the passing cases
of the sample (at most ``MAX_PASSING``). Reproduces: the same shape; the same precision class (a half-precision
model: exactly the precision returned; the others: float32 or wider); on each row that belongs to a sequence,
NaN == NaN, an infinity == an infinity (+inf and -inf alike: a row with no key is either, by convention), else
``|model - got| <= atol + rtol * |got|`` with the model's tolerance (atol relative to 1 + max|LSE|). Explains: the
model's distance to the returned LSE is at most ``EXPLAINS`` times refimpl's (its own, not zero:
:func:`..verdicts.lse_judge.reference_lse`), or the returned shape or precision is wrong and the model's is the one
returned. A case failing on its output, or a target that returned no LSE, is explained by none.
"""
from __future__ import annotations

import numpy as np

from ...bugs_lse import MODELS
from ...precision import get as precision
from ..cases import Status, fitting_models
from ..verdicts.lse_judge import LSE_AT_LEAST, reference_lse
from .diagnosis_sample import EXPLAINS, MAX_FAILING, MAX_PASSING, case_data as _data, too_long

__all__ = ["lse_lines"]


def _apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| elementwise, 0 where both are NaN or both infinite, inf where only one is NaN."""
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where((np.isnan(a) & np.isnan(b)) | (np.isinf(a) & np.isinf(b)), 0.0, np.abs(a - b))
    return np.where(np.isnan(d), np.inf, d)


def _rows(data, shape) -> np.ndarray:
    """The rows judged: every row of a sequence (a packed batch's padding rows are none), in ``shape``."""
    rows = np.ones(shape, bool)
    if data.absent is not None and data.absent.shape == shape:
        rows = ~data.absent
    return rows


def _wide(dtype: str) -> bool:
    try:
        return precision(dtype).at_least(LSE_AT_LEAST)
    except Exception:
        return False


def _verdict(model, variant, data, got, failing: bool) -> bool:
    """Whether the model reproduces the LSE ``got`` returned (and, on a failing case, explains it)."""
    s = data.spec
    compute = s.dtype if precision(s.dtype).at_least(LSE_AT_LEAST) else LSE_AT_LEAST.name     # half: in float32
    try:
        with np.errstate(all="ignore"):
            lse, returned = variant.fn(data.q, data.k, data.v, dtype=compute, **data.reference_kwargs())
    except Exception:
        return False
    lse = np.asarray(lse, np.float64)
    ok_dtype = got.lse_dtype == returned if returned else _wide(got.lse_dtype)
    if not ok_dtype or lse.shape != got.lse.shape:
        return False
    rows = _rows(data, lse.shape)
    rtol, atol = model.tolerance
    ref = reference_lse(data)
    top = np.abs(ref[np.isfinite(ref)])
    off = _apart(lse, got.lse)[rows]
    if off.size and not (off <= atol * (1.0 + (top.max() if top.size else 0.0)) + rtol * np.abs(
            np.where(np.isfinite(got.lse), got.lse, 0.0))[rows]).all():
        return False
    if not failing:
        return True
    if ref.shape != got.lse.shape or not _wide(got.lse_dtype):
        return True                                   # the shape or the precision returned: the model's
    far = float(_apart(ref, got.lse)[rows].max(initial=0.0))
    return float(off.max(initial=0.0)) <= EXPLAINS * far and far > 0


def lse_lines(results: list, store, target: str, specs: dict | None) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation (variant)`` for each LSE model that explains every failed case of the
    sample and agrees with the passing ones (see the module doc); [] when none does or no LSE was returned."""
    failed = [r for r in results if Status(r.status).failed]
    if not failed:
        return []
    sample: list[tuple] = []
    for group, cap, failing in ((failed, MAX_FAILING, True),
                                ([r for r in results if r.status == Status.PASS], MAX_PASSING, False)):
        for r in group:
            if len([x for x in sample if x[2] == failing]) >= cap:
                break
            got = getattr(r, "got", None)
            if got is None or getattr(got, "lse", None) is None:
                if failing:
                    return []                         # a failure the LSE does not account for
                continue
            if failing and not (r.status == Status.FAIL and (r.detail or "").startswith("log-sum-exp")):
                return []
            if too_long(store, r, specs):
                continue                           # long sequences: not modelled
            data = _data(store, r, specs)
            if data is None:
                return []
            sample.append((data, got, failing))
    return fitting_models(target, MODELS, lambda model, variant: all(
        _verdict(model, variant, d, g, f) for d, g, f in sample))
