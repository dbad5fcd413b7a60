"""The output's shape as a formula of the case's sizes, fitted from failing cases that returned another shape
(``output-shape``: an accumulator sized with D where Dv is meant, an extra axis from a bias unsqueezed once too
often, heads and queries swapped).

A failing case whose output has another shape gives no values to fit, but its shape is evidence: each axis of it
is read as the sizes of the case it equals (B, Hq, Sq, Dv, Hkv, Sk, D or 1), and the formula holds when every such
case has the same number of axes and each axis one size on all of them (the first in that order where several
fit every case: the size expected at that axis, counted from the last, else 1, else the first in that order). It is
reported only when every failing case with an output returned another shape (a fit of some of them explains no
run); the passing cases whose shape the formula would change decide when it applies (the condition search of
:mod:`.conditions`); where no case feature separates them, the line says so (the shapes are what was returned,
not a hypothesis the passing cases could refute). Cases that raised are counted, not fitted.
"""
from __future__ import annotations

from typing import Callable

__all__ = ["shape_line", "fit_shape"]

SIZES = ("B", "Hq", "Sq", "Dv", "Hkv", "Sk", "D", "1")
RIGHT = ("B", "Hq", "Sq", "Dv")


def _sizes(spec) -> dict[str, int]:
    return {"B": spec.B, "Hq": spec.Hq, "Sq": spec.Sq, "Dv": spec.Dv, "Hkv": spec.Hkv, "Sk": spec.Sk, "D": spec.D,
            "1": 1}


def fit_shape(cases: list[tuple[object, tuple[int, ...]]]) -> tuple[str, ...] | None:
    """The formula (one size name per axis) every (spec, returned shape) pair agrees with, or None."""
    if not cases or len({len(shape) for _, shape in cases}) != 1:
        return None
    axes = [set(SIZES) for _ in cases[0][1]]
    for spec, shape in cases:
        sizes = _sizes(spec)
        for names, n in zip(axes, shape):
            names &= {name for name, m in sizes.items() if m == n}
    if not all(axes):
        return None
    extra = len(axes) - len(RIGHT)                  # axes aligned from the right: the expected size there first
    return tuple(RIGHT[a - extra] if 0 <= a - extra and RIGHT[a - extra] in names
                 else "1" if "1" in names else min(names, key=SIZES.index) for a, names in enumerate(axes))


def shape_line(target: str, shaped: list, pass_data: list, condition: Callable, seen: Callable,
               raised: int) -> list[str]:
    """``diagnosis TARGET: output-shape — ...`` with the fitted formula (and when it applies) for ``shaped``, the
    (CaseData, returned shape) pairs of every failing case with an output; [] when the fit does not hold.
    ``pass_data``: the passing cases' CaseData; ``condition`` and ``seen`` as :func:`.fitting_heads.heads_line`'s;
    ``raised``: the cases that raised (no shape to fit)."""
    formula = fit_shape([(d.spec, tuple(shape)) for d, shape in shaped])
    if formula is None or formula == RIGHT:
        return []
    decided = [seen(d) for d in pass_data if tuple(_sizes(d.spec)[n] for n in formula) != d.expected.shape]
    when = condition([seen(d) for d, _ in shaped], decided, [seen(d) for d in pass_data])
    when = ("; no case feature separates them from the passing cases" if when is None
            else "" if when == "always" else f"; {when}")
    return [f"diagnosis {target}: output-shape — the output has another shape: fitted ({', '.join(formula)}) where "
            f"({', '.join(RIGHT)}) is expected, on all {len(shaped)} failing cases with an output"
            + (f" ({raised} more raised)" if raised else "") + when]
