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

Some rows left at zero (:func:`unwritten_rows_line`): a kernel launched over a grid of S // b whole blocks of b
rows never writes a gradient's last S % b rows (S: Sq for dQ, Sk for dK and dV). The rule holds for each b of
``TILES`` that gives it (all of them named: a block size the cases do not pin is not chosen) when on every failing
case that gradient's rows from S // b * b on are exact zeros and the rows before within its allowed error, every
other gradient within its own, some failing case has whole blocks (S >= b: else the block size is not seen) and
some has a nonzero row left out by the oracle. Read before the table as the plain rule is (a model nearer the
zeros by shrinking is not the mistake).
"""
from __future__ import annotations

import numpy as np

__all__ = ["unwritten_grads", "unwritten_grads_line", "unwritten_rows_line", "TILES"]

TILES = (16, 32, 64, 128)      # the block sizes a grid of whole blocks is fitted with (rows_line)


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


def _rows_hold(failing: list, name: str, block: int, distance) -> bool:
    shown = tail = False
    for gd, got in failing:
        g, o = np.asarray(got.grads[name]), gd.oracle[name]                   # (B, H, S, X)
        if g.shape != o.shape:
            return False
        r = o.shape[-2] // block * block
        if np.any(g[..., r:, :]) or distance(o[..., :r, :], g[..., :r, :]) > (got.allowed or {}).get(name, 0.0):
            return False
        shown, tail = shown or r > 0, tail or bool(np.any(o[..., r:, :]))
    return shown and tail


def unwritten_rows_line(target: str, failing: list, names: tuple, distance) -> list[str]:
    """``diagnosis TARGET: bwd-grad-unwritten — ...`` when a gradient's last S % b rows are left at zero (the module
    docstring), else []."""
    for name in names:
        rest = [n for n in names if n != name]
        if not all(distance(gd.oracle[n], got.grads[n]) <= (got.allowed or {}).get(n, 0.0)
                   for gd, got in failing for n in rest):
            continue
        held = [b for b in TILES if _rows_hold(failing, name, b, distance)]
        if held:                        # every block size the cases allow is said: one they do not pin is not chosen
            s, b = "Sq" if name == "dq" else "Sk", " or ".join(str(b) for b in held)
            return [f"diagnosis {target}: bwd-grad-unwritten — {name}'s last {s} % {b} rows returned as zeros on "
                    f"every failing case (a grid of {s} // {b} whole blocks: the partial last block never written); "
                    f"{', '.join(rest)} right"]
    return []
