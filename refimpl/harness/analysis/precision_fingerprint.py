"""What the numbers say when no bug model fits: errors of a narrower float's size, with no systematic factor.

* **float32 arithmetic**: float64 cases that fail with errors of float32's size (every failing case float64, each
  within [eps32 / 8 (or float32's own error / SPREAD, where smaller), 1e-4] of its largest expected value, or
  within SPREAD times float32's own error, at most 1e-2,
  on a case where float32 itself errs more (logits of ~1e5); never an overflow; and no systematic factor: the
  output's least-squares slope on the oracle within float32 rounding's allowance, as the float32 judge bounds it)
  come from a target that computes in float32; its check is --dtype float32. A float64 output scaled by 1 + 3e-6
  has errors of float32's size but a slope float32 rounding does not give: not named.
* **a 16-bit intermediate** (``low-precision``): float32 or float64 cases that fail with errors of the size a 16-bit
  type's rounding gives *on each case*: the correct computation with its weights alone rounded to float16 (or
  bfloat16) errs by w_T there, with q k^T, the scaled scores and the weights each rounded by e_T, and the target's
  error is within [min(w_T, e_T) / 16, 16 e_T] on every failing case (between rounding the least and the most; a case
  the rounding leaves exact, e_T = 0, is passed over when the target errs there by at most 16 units of the type's
  roundoff, and rules the type out otherwise), on an even sample of the failing cases (diagnosis.MAX_NOISE), its
  least-squares slope within that rounding's allowance; or it overflows where that computation overflows (the same
  rows not finite). A kernel's own rounding points differ from any model's, so no output model reproduces such a
  kernel to better than its noise: the size of the noise, case by case, is the evidence. A wrong factor, a dropped key
  or a shifted mask gives errors that do not follow e_T from case to case; and rounding shows on every case, so the
  failing cases must be at least as many as the passing ones of their dtypes (ALiBi put inside a softcap of 50 errs by
  ~1e-3 too, on the few cases with both).
"""
from __future__ import annotations

import numpy as np

from ...attention import scaled_dot_product_attention
from ...bugs_scores import rounded_step
from ...precision import get as precision
from ...tolerance_slope import slope_allowance, slope_deviation
from ..cases.features import CaseData

__all__ = ["narrower_arithmetic", "null32"]

SPREAD = 16.0      # the target's error within [min(w_T, e_T) / SPREAD, SPREAD e_T] on each case: e_T the type's own
#                    error rounding the scores and weights, w_T rounding the weights alone


def null32(data: CaseData) -> np.ndarray | None:
    """The correct output computed in float32 (None when that fails): what float32 arithmetic alone gives."""
    kw = data.reference_kwargs()
    if kw["mask"] is not None and kw["mask"].dtype != bool:
        kw = dict(kw, mask=kw["mask"].astype(np.float32))
    try:
        with np.errstate(all="ignore"):
            return np.asarray(scaled_dot_product_attention(*(a.astype(np.float32) for a in (data.q, data.k, data.v)),
                                                           **kw)[0], np.float64)
    except Exception:
        return None


def _null16(data: CaseData, dtype: str, step: str = "throughout") -> np.ndarray | None:
    """The correct output with q k^T, the scaled scores and the weights each rounded to ``dtype`` (``step``
    "weights": the weights alone)."""
    try:
        with np.errstate(all="ignore"):
            return np.asarray(rounded_step(data.q, data.k, data.v, step=step, dtype=dtype,
                                           **data.reference_kwargs()), np.float64)
    except Exception:
        return None


def _errors(data: CaseData, got: np.ndarray, null: np.ndarray | None, dtype: str) -> tuple[float, float] | None:
    """(the target's, the type's own) largest error relative to the largest expected value on the rows with a key;
    None where the case cannot say (no key, no null, non-finite output, a slope the rounding does not give)."""
    live = data.live
    exp = data.expected[live]
    top = float(np.abs(exp).max()) if exp.size else 0.0
    if top == 0.0 or null is None:
        return None
    if not np.isfinite(got[live]).all():             # an overflow: explained where the type overflows alike
        same = np.array_equal(np.isfinite(got[live]), np.isfinite(null[live]))
        return (np.inf, np.inf) if same else None
    if slope_deviation(got[live], exp) > slope_allowance(null[live], exp, dtype):
        return None
    return float(np.abs(got[live] - exp).max()) / top, float(np.abs(null[live] - exp).max()) / top


def _own(data: CaseData, null: np.ndarray | None) -> float | None:
    """The type's own largest error relative to the largest expected value on the rows with a key (no slope test:
    the lower edge of the fingerprint's span); None without a key, a null or a finite one."""
    live = data.live
    exp = data.expected[live]
    top = float(np.abs(exp).max()) if exp.size else 0.0
    if top == 0.0 or null is None or not np.isfinite(null[live]).all():
        return None
    return float(np.abs(null[live] - exp).max()) / top


def narrower_arithmetic(target: str, fail_cases: list[tuple[CaseData, np.ndarray]], passing: int = 0) -> list[str]:
    """``diagnosis TARGET: float32 arithmetic — ...`` or ``... low-precision — ...`` (see the module doc), or [].
    ``passing``: how many cases of the failing cases' dtypes pass; a 16-bit intermediate rounds on every case, so
    it is named only where the failing cases are at least as many (a mistake on one feature's cases is not noise)."""
    return _float32(target, fail_cases) or (_sixteen(target, fail_cases) if len(fail_cases) >= passing else [])


def _float32(target: str, fail_cases: list[tuple[CaseData, np.ndarray]]) -> list[str]:
    f32, f64 = precision("float32"), precision("float64")
    rel, own = [], []
    for data, got in fail_cases:
        if not precision(data.spec.dtype).at_least(f64):
            return []
        with np.errstate(invalid="ignore"):
            e = _errors(data, got, null32(data), f32.name)
        if e is None:
            return []
        rel.append(e[0])
        own.append(e[1])
    u32 = f32.eps
    # the floor: an eighth of float32's unit roundoff, or float32's own (nonzero) error there / SPREAD where that is
    # smaller (a small case float32 rounds almost exactly: a target erring as little as float32 itself is float32)
    if not rel or not all(min(u32 / 8, o / SPREAD if o > 0 else u32) <= r <= max(1e-4, min(SPREAD * o, 1e-2))
                          for r, o in zip(rel, own)):
        return []
    return [f"diagnosis {target}: float32 arithmetic — the float64 cases fail with errors of ~{np.median(rel):.1e} "
            f"relative (float32's unit roundoff is {u32:.1e}): the target computes in float32; check it with "
            f"--dtype float32"]


def _sixteen(target: str, fail_cases: list[tuple[CaseData, np.ndarray]]) -> list[str]:
    f32 = precision("float32")
    fitted = []
    for dt in ("float16", "bfloat16"):
        rel, own = [], []
        for data, got in fail_cases:
            if not precision(data.spec.dtype).at_least(f32):
                break
            with np.errstate(invalid="ignore", over="ignore"):
                e = _errors(data, got, _null16(data, dt), dt)
                least = _own(data, _null16(data, dt, "weights"))
            if e is not None and (np.isinf(e[0]) or e[1] == 0.0 and e[0] <= SPREAD * precision(dt).eps):
                continue          # both overflow alike, or the rounding is exact here (one key a row) and the target
            #                       errs by no more than that type's noise: the case says nothing (a larger error: no)
            low = min(e[1], least) if e is not None and least is not None else None
            if e is None or low is None or low == 0.0 or not low / SPREAD <= e[0] <= SPREAD * e[1]:
                break
            rel.append(e[0])
            own.append(e[1])
        else:
            if rel:
                fitted.append((dt, float(np.median(rel)), float(np.median(own))))
    if not fitted:
        return []
    which = " or ".join(dt for dt, _, _ in fitted)
    _, r, o = fitted[0]
    dts = "/".join(sorted({d.spec.dtype for d, _ in fail_cases}))
    return [f"diagnosis {target}: low-precision — an intermediate of the softmax is computed in a 16-bit float: the "
            f"{dts} cases fail with errors of ~{r:.1e} relative, the size {which} rounding of the scores and weights "
            f"gives on each of them (~{o:.1e})"]
