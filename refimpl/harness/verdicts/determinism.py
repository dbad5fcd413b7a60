"""``--repeat N``: a case is called N times and every call must return bitwise the same output (and weights,
and log-sum-exp): a kernel whose result depends on thread scheduling or atomics (FlashAttention's backward
without ``deterministic=True``, split-K reductions in arrival order) is ``nondeterministic``, with the largest
difference between two calls. Off by default: most conformance questions are about values, not bits.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["first_difference", "repeat_calls"]


def _bits(a) -> bytes | None:
    return None if a is None else np.ascontiguousarray(a, np.float64).tobytes()


def first_difference(first, other) -> str | None:
    """None when ``other`` (a Returned) is bitwise ``first``; otherwise which array and by how much."""
    for what in ("output", "weights", "lse"):
        a, b = getattr(first, what, None), getattr(other, what, None)
        if a is None and b is None:
            continue
        if a is None or b is None or a.shape != b.shape:
            now, before = ("no" if x is None else x.shape for x in (b, a))
            return f"{what}: returned {now} array once and {before} before"
        if _bits(a) != _bits(b):
            with np.errstate(invalid="ignore"):
                d = np.abs(a - b)
            worst = float(np.nanmax(d)) if not np.isnan(d).all() else math.nan
            n = int(np.count_nonzero(~((a == b) | (np.isnan(a) & np.isnan(b)))))
            if n == 0:
                return f"{what}: the same values in different bits (a signed zero or a NaN's payload)"
            return f"{what}: {n} of {a.size} values differ, by up to {worst:.3g}"
    return None


def repeat_calls(call: Callable[[], object], first, n: int) -> str | None:
    """Call ``call()`` ``n - 1`` more times; None when every result is bitwise ``first``, else the detail of the
    first that is not (a call that raises is left to propagate: it is the case's error)."""
    for i in range(2, n + 1):
        why = first_difference(first, call())
        if why is not None:
            return f"call {i} of {n} differs from call 1 ({why})"
    return None
