"""Assertions for tests (refimpl's and users'): messages give actual, expected, tolerance and the call."""
from __future__ import annotations

import numpy as np

from . import tolerance as tol

__all__ = ["assert_conforms", "assert_exact"]


def assert_conforms(actual, expected, tolerance: tol.Tolerance, what: str = "") -> tol.Comparison:
    """Assert ``actual`` matches ``expected`` under ``tolerance``; return the measured comparison."""
    cmp = tol.compare(actual, expected, tolerance)
    if not cmp.ok:
        a, e = np.asarray(actual), np.asarray(expected)
        raise AssertionError(f"{what}: {cmp.summary()}\n  actual   = {np.array2string(a, precision=17)}\n"
                             f"  expected = {np.array2string(e, precision=17)}")
    return cmp


def assert_exact(actual, expected, what: str = "") -> None:
    """Bit-for-bit equality (same shape, same values, NaN where NaN)."""
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape or not np.array_equal(a, e, equal_nan=True):
        raise AssertionError(f"{what}: not bit-identical\n  actual   = {a!r}\n  expected = {e!r}")
