"""The verdict on a target's log-sum-exp (``--lse``): ``softmax_lse`` against :func:`refimpl.sdpa_lse` in float64.

* Shape (B, Hq, Sq) after the API's :meth:`~refimpl.harness.apis.base.Api.place_lse` (flash-attn-varlen's
  (Hq, total_q) is placed there; padding rows are no sequence's and are never judged).
* Precision: float32 at least (FlashAttention returns it in float32 whatever the inputs); float64 only when a
  float64 case returned it in float64. The bound is :func:`refimpl.tolerance.lse` in that precision, plus, for
  a float16/bfloat16 case, what rounding its scores to the case's precision may move the LSE.
* A row with no attended key: ``+inf`` (FlashAttention's) or ``-inf`` (the log of an empty sum, refimpl's);
  the convention is reported (``lse-dead=+inf``). NaN or a finite value there fails, and so does NaN elsewhere.
"""
from __future__ import annotations

import math

import numpy as np

from ... import tolerance as tol
from ...lse import sdpa_lse
from ...precision import get as precision, of as precision_of

LSE_AT_LEAST = precision("float32")      # FlashAttention's softmax_lse precision: nothing lower is accepted

__all__ = ["judge_lse", "reference_lse", "lse_bound"]


def reference_lse(data, cache: dict | None = None) -> np.ndarray:
    """(B, Hq, Sq) float64: the case's log-sum-exp (``cache["lse"]``, made once per case)."""
    cache = cache if cache is not None else {}
    if "lse" not in cache:
        cache["lse"] = sdpa_lse(data.q, data.k, data.v, **data.reference_kwargs())
    return cache["lse"]


def _score_max(data) -> float:
    """A bound on |score| over the case (Cauchy-Schwarz): |scale| max_i ||q_i|| max_j ||k_j|| (capped by softcap),
    plus the additive terms."""
    s = data.spec
    scale = 1.0 / math.sqrt(s.D) if s.scale is None else abs(s.scale)
    norm = (lambda a: float(np.sqrt((a * a).sum(axis=-1)).max(initial=0.0)))
    top = scale * norm(data.q) * norm(data.k)
    if s.softcap:
        top = min(top, float(s.softcap))
    m = data.reference_kwargs()["mask"]
    if m is not None and m.dtype != bool and np.isfinite(m).any():
        top += float(np.abs(m[np.isfinite(m)]).max())
    return top


def lse_bound(data, lse_dtype: str, n_terms: float) -> tol.Tolerance:
    """What error the case allows on an LSE returned in ``lse_dtype`` (float32 or float64)."""
    s = data.spec
    case, got = precision(s.dtype), precision_of(lse_dtype) or LSE_AT_LEAST
    own = got if got.at_least(LSE_AT_LEAST) and case.at_least(got) else LSE_AT_LEAST
    low = not case.at_least(LSE_AT_LEAST)
    return tol.lse(own.name, n_terms, rounded_to=s.dtype if low else None, score_max=_score_max(data) if low else 0.0)


def judge_lse(data, lse: np.ndarray, lse_dtype: str, n_terms: float, cache: dict | None = None
              ) -> tuple[float, list[str], str | None]:
    """``(ratio, problems, dead-row convention)`` of a returned LSE (float64 values, refimpl's layout)."""
    s = data.spec
    want = (s.B, s.Hq, s.Sq)
    if lse.shape != want:
        return math.inf, [f"log-sum-exp shape {lse.shape}, but should be {want} (B, Hq, Sq)"], None
    p = precision_of(lse_dtype)
    if p is None or not p.at_least(LSE_AT_LEAST):
        return math.inf, [f"log-sum-exp returned in {lse_dtype}: it must be float32 (or float64), as "
                          f"FlashAttention's softmax_lse is"], None
    ref = reference_lse(data, cache)
    problems: list[str] = []
    convention = None
    dead = data.dead if data.absent is None else data.dead & ~data.absent
    if dead.any():
        got = lse[dead]
        if np.all(got == np.inf):
            convention = "+inf"
        elif np.all(got == -np.inf):
            convention = "-inf"
        else:
            bad = got[~np.isinf(got)]
            what = f"{bad[:3].tolist()}" if bad.size else "a mix of +inf and -inf"
            problems.append(f"log-sum-exp of rows with no key: {what} (accepted: all +inf or all -inf)")
    live = data.live
    got, exp = lse[live], ref[live]                                   # (n_live,): the rows with a key
    b = lse_bound(data, lse_dtype, n_terms)
    c = tol.compare(got, exp, b)                                      # the one comparison rule (NaN: inf)
    if not c.ok:
        i = c.worst_index[0]
        problems.append(f"log-sum-exp: error {c.max_abs:.3g} above the bound {float(b.atol):.3g} ({b.rule}); worst "
                        f"row got {got[i]:.9g}, expected {exp[i]:.9g}")
    return c.max_ratio, problems, convention
