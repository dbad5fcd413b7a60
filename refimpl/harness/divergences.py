"""The divergence catalogue as data: every catalogued way a reference implementation differs from refimpl.

``D*``: the R package (measured in :mod:`refimpl.r.compat`); ``T*``: torch. docs/divergences.md describes
each entry; tests/test_divergences.py keeps the two in agreement and asserts every entry on an example.
"""
from __future__ import annotations

from ..r.compat import DIVERGENCES as R_DIVERGENCES

__all__ = ["TARGET_DIVERGENCES", "DIVERGENCE_TITLES"]

TARGET_DIVERGENCES = {"T1": "torch gives NaN weights for a fully masked query (softmax of all -inf); refimpl gives zeros"}
DIVERGENCE_TITLES = {**R_DIVERGENCES, **TARGET_DIVERGENCES}
