"""``--repeat N``: a case is called N times and every call must return bitwise the same output (and weights,
and log-sum-exp), leave bitwise the same content in the inputs its API writes (a KV cache: each call gets a fresh
cache), and, in the gradient rows (``--grad``), return bitwise the same dq, dk, dv: a kernel whose result depends
on thread scheduling or atomics (FlashAttention's backward without ``deterministic=True``, split-K reductions in
arrival order) is ``nondeterministic``, with how many values differ and the largest difference between two calls.
Off by default: most conformance questions are about values, not bits.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["first_difference", "repeat_calls"]


def _bits(a) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, np.float64).tobytes()


def _arrays(got) -> dict:
    """name -> array (or None) of one call: a Returned's output, weights, LSE and written inputs, or a
    GradReturned's dq, dk, dv."""
    grads = getattr(got, "grads", None)
    if grads is not None:
        return dict(grads)
    out = {what: getattr(got, what, None) for what in ("output", "weights", "lse")}
    return out | dict(getattr(got, "written", None) or {})


def _differs(what: str, a, b, verb: str) -> str | None:
    if a is None and b is None:
        return None
    if verb == "written" and (a is None or b is None):
        return f"{what}: written on {'this call' if a is None else 'call 1'} only"
    if a is None or b is None or a.shape != b.shape:
        now, before = ("no" if x is None else x.shape for x in (b, a))
        return f"{what}: {verb} {now} array once and {before} before"
    if _bits(a) == _bits(b):
        return None
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
    worst = float(np.nanmax(d)) if not np.isnan(d).all() else math.nan
    n = int(np.count_nonzero(~((a == b) | (np.isnan(a) & np.isnan(b)))))
    if n == 0:
        return f"{what}: the same values in different bits (a signed zero or a NaN's payload)"
    return f"{what}: {n} of {a.size} values differ, by up to {worst:.3g}"


def first_difference(first, other) -> str | None:
    """None when ``other`` (a Returned or GradReturned) is bitwise ``first``; otherwise every array that is not
    (output, weights, lse, a written input such as k_cache, or dq, dk, dv), how many values and by how much."""
    a, b = _arrays(first), _arrays(other)
    written = set(getattr(first, "written", None) or {}) | set(getattr(other, "written", None) or {})
    found = [why for what in dict.fromkeys([*a, *b])
             if (why := _differs(what, a.get(what), b.get(what), "written" if what in written else "returned"))]
    return "; ".join(found) if found else None


def repeat_calls(call: Callable[[], object], first, n: int) -> str | None:
    """Call ``call()`` ``n - 1`` more times; None when every result is bitwise ``first``, else the detail of the
    first that is not (a call that raises is left to propagate: it is the case's error)."""
    for i in range(2, n + 1):
        why = first_difference(first, call())
        if why is not None:
            return f"call {i} of {n} differs from call 1 ({why})"
    return None
