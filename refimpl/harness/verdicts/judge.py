"""The verdict on one family case: what the target returned against the float64 expected values.

* float64 targets: the forward bound of :mod:`refimpl.tolerance` (rule 3), with the additive mask's
  magnitude counted among the score terms.
* float32 / float16 / bfloat16: the FlashAttention budget (rule 4): the error against the float64 oracle
  must be at most ``K_BUDGET`` times the error of a same-precision reference (refimpl in float32, its
  output rounded to the case's dtype for the half types), plus the rounding quantum.
* Fully masked query rows (no key attended) are judged apart: ``zeros``, ``nan`` and ``uniform`` (the
  mean of V: every key weighted alike) are conventions, not failures (``masked_rows`` pins one);
  anything else there fails. NaN anywhere else fails.
* With ``--lse`` the log-sum-exp the target returns is judged too (:mod:`.lse_judge`).
* A target that returns a lower precision than it was given fails with the ``--dtype`` to use; one that
  writes to its inputs fails naming them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import tolerance as tol, tolerance_slope as tslope
from ...attention import scaled_dot_product_attention
from ...online import sdpa_online
from ..apis import Returned
from ..cases import Status
from ...precision import get as precision
from ..cases.features import CaseData, lower_precision, values_mean
from .dropout_judge import judge_dropout
from .lse_judge import judge_lse

__all__ = ["CaseResult", "judge", "CONVENTIONS", "DEAD_ROWS_FAILED", "classify_dead_rows", "n_terms", "Bounds",
           "bounds"]

DEAD_ROWS_FAILED = "fully masked rows give"     # how a case's detail says its rows with no key failed

CONVENTIONS = ("zeros", "nan", "uniform")          # accepted outputs for a query with no key


@dataclass
class CaseResult:
    """One family case on one target."""
    id: str
    status: Status
    ratio: float = 0.0                  # worst error / what was allowed (<= 1 passes)
    detail: str = ""
    convention: str | None = None       # what the target gave on fully masked rows, when the case has some
    lse_convention: str | None = None   # its log-sum-exp there (+inf or -inf), when judged (--lse)
    returned_weights: bool = False
    features: dict = field(default_factory=dict)
    got: Any = field(default=None, repr=False)   # Returned (grad rows: GradReturned): what the target returned
    traceback: str = field(default="", repr=False)           # the target's own traceback when it raised or died


def classify_dead_rows(out: np.ndarray, data: CaseData) -> str:
    """zeros | nan | uniform | other: the target's output on the reference's fully masked rows (the judge asks
    only where the case has some)."""
    rows = out[data.dead]                                              # (n_dead, Dv)
    if np.all(rows == 0):
        return "zeros"
    if np.all(np.isnan(rows)):
        return "nan"
    mean_v = np.broadcast_to(values_mean(data), out.shape)[data.dead]
    if np.all(np.isfinite(rows)) and np.allclose(rows, mean_v, rtol=1e-2, atol=1e-3 * (1 + np.abs(mean_v).max())):
        return "uniform"
    return "other"


def _reference_lowp(data: CaseData) -> np.ndarray:
    """The same-precision reference of the budget rule: refimpl in float32 (output rounded for half types)."""
    q, k, v = (a.astype(np.float32) for a in (data.q, data.k, data.v))
    kw = data.reference_kwargs()                        # (refimpl casts an additive mask to float32 itself)
    out = sdpa_online(q, k, v, block_q=1024, block_k=1024, **kw) if data.spec.long else \
        scaled_dot_product_attention(q, k, v, **kw)[0]
    return precision(data.spec.dtype).round(out)


def n_terms(data: CaseData) -> float:
    """Rule 3's n_terms of a case: the score terms plus twice the largest finite additive term (mask, ALiBi)."""
    n, _ = tol.sdpa_terms(data.q, data.k, data.v, data.spec.scale)
    m = data.reference_kwargs()["mask"]
    if m is not None and m.dtype != bool and np.isfinite(m).any():
        n += 2.0 * float(np.abs(m[np.isfinite(m)]).max())
    return n


@dataclass(frozen=True)
class Bounds:
    """The error the judge allows on one case: on the output's rows with a key, and on the weights; for the
    low precisions also how far the output's slope on the oracle may be from 1
    (:func:`refimpl.tolerance_slope.slope_allowance`)."""
    output: tol.Tolerance
    weights: tol.Tolerance
    slope: float = math.inf


def bounds(data: CaseData, cache: dict | None = None) -> Bounds:
    """The one statement of what error a case allows (the judge and the reproduction scripts both read it):
    float64 by rule 3 (the additive mask counted among the score terms), lower precisions by rule 4 with
    refimpl's own same-precision result as the reference (``cache["ref"]``, made once) and the conditioning
    of :func:`refimpl.tolerance.budget_conditioning` (capped n_terms) or, where the case's weights are known,
    :func:`refimpl.tolerance.output_conditioning` (the case's own first-order conditioning) if smaller."""
    s, live = data.spec, data.live
    n = n_terms(data)
    weights = tol.forward(s.dtype, n, 1.0)
    if not precision(s.dtype).low:
        return Bounds(tol.forward(s.dtype, n, float(np.abs(data.v).max())), weights)
    exp = data.expected[live]
    if exp.size == 0:
        return Bounds(tol.Tolerance(0.0, 0.0, "no row has a key"), weights)
    cache = cache if cache is not None else {}
    if "ref" not in cache:
        cache["ref"] = _reference_lowp(data)
    if "conditioning" not in cache:
        cond = tol.budget_conditioning(n, s.dtype)
        if data.weights is not None:                # the case's own conditioning, never looser than the cap
            add = data.reference_kwargs()["mask"]
            add = add if add is not None and add.dtype != bool else None
            cond = min(cond, tol.output_conditioning(data.q, data.k, data.v, data.weights, data.expected, s.scale,
                                                     add, s.dtype))
        cache["conditioning"] = cond
    cond = cache["conditioning"]
    allowed = tol.budget(cache["ref"][live], exp, s.dtype, cond)
    how = (f"{tol.K_BUDGET:g} x max|refimpl {s.dtype} - float64| + {tol.QUANTUM_ULPS:g} x eps({s.dtype}) x "
           f"(1 + {cond:.6g}) x max|expected|")
    if "magnitude" not in cache:                   # each output element's scale, (P |V|)_id, where P is known
        cache["magnitude"] = None if data.weights is None else (
            data.weights @ np.abs(np.repeat(data.v, s.Hq // s.Hkv, axis=1)))[live]
    return Bounds(tol.Tolerance(allowed, 0.0, how), weights,
                  tslope.slope_allowance(cache["ref"][live], exp, s.dtype, cache["magnitude"], cond))


def judge(data: CaseData, got: Returned, given_dtype: str, *, masked_rows: str | None = None,
          cache: dict | None = None) -> CaseResult:
    s = data.spec
    res = CaseResult(s.id, Status.PASS, features=s.features(), returned_weights=got.weights is not None, got=got)
    lower = lower_precision(got.dtype, given_dtype)
    if lower:
        res.status, res.ratio, res.detail = Status.FAIL, math.inf, lower
        return res
    if got.output.shape != data.expected.shape:
        res.status, res.ratio = Status.FAIL, math.inf
        res.detail = f"output shape {got.output.shape}, but should be {data.expected.shape} (B, Hq, Sq, Dv)"
        return res
    problems = list(getattr(got, "problems", None) or [])   # the API's own checks (a KV cache's new keys)
    if got.mutated:
        problems.append(f"writes to its inputs ({', '.join(got.mutated)}): callers' tensors are changed")
    if data.dead.any():
        res.convention = classify_dead_rows(got.output, data)
        allowed = (masked_rows,) if masked_rows else CONVENTIONS
        if res.convention not in allowed:
            problems.append(f"{DEAD_ROWS_FAILED} '{res.convention}' (accepted: {', '.join(allowed)})")
    live = data.live
    if getattr(got, "dropout_keep", None) is not None:   # --dropout P: replayed from the target's own pattern
        res.ratio, dropout_problems = judge_dropout(data, got, n_terms(data))
        problems += dropout_problems
    else:
        res.ratio = _output(data, got, cache, problems)
    if got.weights is not None and data.weights is not None:
        w = got.weights
        if w.shape != data.weights.shape:
            problems.append(f"weights shape {w.shape}, but should be {data.weights.shape} (B, Hq, Sq, Sk)")
        else:
            c = tol.compare(w[live], data.weights[live], bounds(data, cache).weights)
            res.ratio = max(res.ratio, c.max_ratio)        # the case's ratio is its worst array's
            if not c.ok:
                problems.append(f"weights: {c.summary()}")
    lse = getattr(got, "lse", None)                    # (R functions return no LSE: their RReturned has none)
    if lse is not None:
        ratio, lse_problems, res.lse_convention = judge_lse(data, lse, got.lse_dtype, n_terms(data), cache)
        res.ratio = max(res.ratio, ratio)
        problems += lse_problems
    if math.isnan(res.ratio):
        res.ratio = math.inf
    if problems:
        res.status = Status.FAIL
        res.ratio = max(res.ratio, 1.0 + 1e-9) if not math.isinf(res.ratio) else res.ratio
        res.detail = "; ".join(problems)
    return res


def _output(data: CaseData, got: Returned, cache: dict | None, problems: list[str]) -> float:
    """The output's ratio against the oracle on rows with a key (problems appended)."""
    s = data.spec
    ratio = 0.0
    live = data.live
    out, exp = got.output[live], data.expected[live]                    # (n_live, Dv)
    b = bounds(data, cache)
    if not precision(s.dtype).low:
        c = tol.compare(out, exp, b.output)
        ratio = c.max_ratio
        if not c.ok:
            problems.append(f"output: {c.summary()}")
    elif out.size:
        c = tol.compare(out, exp, b.output)                           # the one comparison rule (NaN: inf)
        ratio = c.max_ratio
        if not c.ok:
            problems.append(f"output: error {c.max_abs:.3g} vs the float64 oracle above the {s.dtype} budget "
                            f"{float(b.output.atol):.3g} (K_BUDGET x a same-precision reference + quantum)")
        k = tslope.slope_of(out, exp)
        dev = abs(k - 1.0)
        ratio = max(ratio, dev / b.slope)
        if not dev <= b.slope:
            problems.append(f"output: scaled by {k:.6g} against the float64 oracle (its least-squares slope); "
                            f"rounding in {s.dtype} allows 1 +- {b.slope:.3g}")
    return ratio
