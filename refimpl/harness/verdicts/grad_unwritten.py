"""Gradients a backward never computed or never wrote (``bwd-grad-unwritten``), read from what it returned.

A backward that leaves dQ (or dK and dV) at its initial zeros — a buffer allocated and never written, a branch that
skips it, a graph severed before it — returns exact zeros. The rule holds when some gradients are all zeros on every
failing case (with the right shape; the oracle's not all zero on one of them at least: dK is 0 where Sk = 1) and every
other gradient is within its allowed error there: then the zeros are the whole failure. A model of a wrong formula may
come closer to zeros than the oracle (dQ with the scale applied twice is nearer 0 than dQ), but only by shrinking it:
the zeros name the mistake, so this line is read before the table's models, and a model is named in its place only
where it reproduces the zeros within twice the allowed error (the softmax's gradient dropped, dS = 0, zeroes dQ and
dK; a tiled kernel's partial last tile never walked zeroes every gradient of a case smaller than the tile: on a run
whose failing cases are all that small the two cannot be told apart, and the model is named).
"""
from __future__ import annotations

import numpy as np

__all__ = ["unwritten_grads", "unwritten_grads_line"]


def _zeros(gd, got, name: str) -> bool:
    g = np.asarray(got.grads[name])
    return g.shape == gd.oracle[name].shape and not np.any(g)


def unwritten_grads(failing: list, names: tuple, distance) -> list[str]:
    """The gradients the rule of the module docstring finds left at zero on ``failing`` ((GradData, GradReturned)
    pairs), [] when it does not hold. ``names``: the gradients in order; ``distance(a, b)``: the judge's."""
    zero = [n for n in names if all(_zeros(gd, got, n) for gd, got in failing)
            and any(np.any(gd.oracle[n]) for gd, _ in failing)]                 # (none when nothing failed)
    rest = [n for n in names if n not in zero]
    holds = bool(zero) and all(distance(gd.oracle[n], got.grads[n]) <= (got.allowed or {}).get(n, 0.0)
                               for gd, got in failing for n in rest)
    return zero if holds else []


def unwritten_grads_line(target: str, zero: list[str], names: tuple) -> list[str]:
    """``diagnosis TARGET: bwd-grad-unwritten — ...`` for the gradients ``zero`` (:func:`unwritten_grads`), else []."""
    rest = [n for n in names if n not in zero]
    right = f"; {', '.join(rest)} right" if rest else ""
    return [f"diagnosis {target}: bwd-grad-unwritten — {', '.join(zero)} returned as zeros on every failing case "
            f"(never computed or never written){right}"] if zero else []
