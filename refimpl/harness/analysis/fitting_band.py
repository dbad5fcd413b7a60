"""The band a kernel actually applied, fitted: the window's (or the causal band's) left and right edges and the
alignment, each as a change of the ones asked for (``window-bounds`` with its offsets, not a fixed form).

A failing case with a band handed as flags (causal, a window) is rerun by refimpl with the band (left', right') in an
alignment, every other feature kept; left' is one of ``LEFT`` (left, left +- 1 or 2, unbounded, 0, the window's left
negated, left with a bound of 0 read as unbounded — ``edge or max_span``), right' one of ``RIGHT`` (right, right +- 1,
unbounded, 0, left, negated, a 0 read as unbounded: causal's own right edge too), the alignment the case's or the other;
or ``SYMMETRIC``: a causal window (left, 0) carried as a length left + 1 and converted back as the symmetric window
(left + 1, left + 1), every other band as asked. The causal band is the window (-1, 0) (a window under causal has its
right edge capped at 0). A form fits when it reproduces and explains every failing case of the sample (each must have a
band handed as flags) and reproduces every passing case with one; the forms that fit are listed (the cases cannot tell
them apart), the first three and how many more. Named `window-bounds`, or `causal-alignment` when the first form is the
edges asked for in the other alignment. Without a band, or where the API hands the band inside the mask, the form does
not apply.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...attention import scaled_dot_product_attention

__all__ = ["band_line", "LEFT", "RIGHT", "SYMMETRIC"]

LEFT = ("left", "left + 1", "left - 1", "left + 2", "left - 2", "unbounded", "0", "-left", "left (0 as unbounded)")
RIGHT = ("right", "right + 1", "right - 1", "unbounded", "0", "left", "-right", "right (0 as unbounded)")
SYMMETRIC = "(left + 1, left + 1) under causal with a left window (a causal window made symmetric)"


def _negated(given: int | None, asked: int, causal: bool) -> int:
    """A window edge handed on negated (``-left``): an edge given as n > 0 reads as unbounded, -1 (unbounded) as
    1, 0 stays 0; causal still caps the right edge at 0. Only a window's edges: causal's own band is not given."""
    if given is None:
        return asked
    edge = -given if given < 0 else (-1 if given > 0 else 0)
    return 0 if causal and asked == 0 else edge


def _edge(form: str, asked: int, left: int) -> int:
    """The edge a form applies, from the edge asked for (-1: unbounded; arithmetic only on a bounded edge)."""
    if form in ("unbounded", "0"):
        return -1 if form == "unbounded" else 0
    if form == "left":
        return left
    if form.endswith(" (0 as unbounded)"):              # `edge or max_span`: a bound of 0 is falsy
        return -1 if asked == 0 else asked
    if asked < 0:
        return asked
    return max(asked + int(form.split(" ", 1)[1].replace(" ", "")), 0) if " " in form else asked


def _asked(spec) -> tuple[int, int]:
    left, right = spec.window if spec.window is not None else (-1, -1)
    if spec.is_causal:
        right = 0                                          # causal caps the right edge at 0
    return left, right


def _output(data, form: tuple[str, str, bool]) -> np.ndarray:
    s = data.spec
    left, right = _asked(s)
    given = s.window if s.window is not None else (None, None)
    if form[0] == SYMMETRIC:
        edges = (left + 1, left + 1) if s.is_causal and left >= 0 else (left, right)
    else:
        edges = (_negated(given[0], left, False) if form[0] == "-left" else _edge(form[0], left, left),
                 _negated(given[1], right, s.is_causal) if form[1] == "-right" else _edge(form[1], right, left))
    alignment = s.alignment if not form[2] else ("top-left" if s.alignment == "bottom-right" else "bottom-right")
    kw = dict(data.reference_kwargs(), is_causal=False, alignment=alignment,
              window=None if edges == (-1, -1) else edges)
    with np.errstate(all="ignore"):
        return np.asarray(scaled_dot_product_attention(data.q, data.k, data.v, **kw)[0], np.float64)


def _label(form: tuple[str, str, bool]) -> str:
    if form[0] == SYMMETRIC:
        return SYMMETRIC
    return f"({form[0]}, {form[1]})" + (" in the other alignment" if form[2] else "")


def band_line(target: str, fail_cases: list, pass_cases: list, close: Callable, explains: Callable) -> list[str]:
    """``diagnosis TARGET: window-bounds — the band applied was (left + 1, right) ...`` when the fit above holds;
    [] otherwise. ``close(a, b, v)``, ``explains(out, data, got)``: the diagnosis's rules."""
    def banded(d) -> bool:
        return (d.spec.is_causal or d.spec.window is not None) and d.band_flags and d.spec.seqlens is None
    if not fail_cases or not all(banded(d) for d, _ in fail_cases):
        return []
    forms = [(a, b, other) for other in (False, True) for a in LEFT for b in RIGHT
             if (a, b, other) != ("left", "right", False)] + [(SYMMETRIC, SYMMETRIC, False)]
    for d, g in fail_cases:
        forms = [f for f in forms if (lambda o: close(o, g, d.v) and explains(o, d, g))(_output(d, f))]
        if not forms:
            return []
    for d, _ in pass_cases:
        if banded(d) and d.spec.cache_lens is None:
            forms = [f for f in forms if close(_output(d, f), d.expected, d.v)]
    if not forms:
        return []
    more = f"; or {len(forms) - 3} more" if len(forms) > 3 else ""
    shown = "; or ".join(_label(f) for f in forms[:3])
    model = "causal-alignment" if forms[0] == ("left", "right", True) else "window-bounds"     # the edges right
    return [f"diagnosis {target}: {model} — the band's edges are not the (left, right) asked for: fitted, the "
            f"kernel applied {shown}{more} (left, right: the window asked for, causal (-1, 0), in the case's "
            f"alignment unless said)"]
