"""``refimpl`` — the reference itself, float64/float32, every feature (refimpl's own keywords)."""
from __future__ import annotations

from ...attention import scaled_dot_product_attention
from ..targets.target import Target
from .base import Column

__all__ = ["COLUMN"]


def _refimpl_fn(q, k, v, mask=None, scale=None, **features):
    return scaled_dot_product_attention(q, k, v, mask=mask, scale=scale, **features)


def _make() -> Target:
    return Target("refimpl", _refimpl_fn, is_reference=True, api="native",
                  note="refimpl float64/float32, every feature")


COLUMN = Column("refimpl", _make, "refimpl float64/float32, every feature (the reference)")
