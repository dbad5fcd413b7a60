"""The softmax scale a kernel may use instead of the case's, as formulas of the case's sizes: a wrong default
(1/sqrt(Dv), 1/sqrt(Sk), 1/sqrt(Hq*D), 1/sqrt(Hq), D padded, ...), with the given scale honoured or ignored, a scale
applied twice, split or inverted. ``FORMULAS`` maps each formula's name to the scale it gives on a case (a CaseSpec);
the forward's fitted ``scale`` (harness/analysis/fitting.py) and the backward's (harness/verdicts/grad_scale.py) name
what they fit by it.
"""
from __future__ import annotations

import math
from typing import Callable

__all__ = ["DEFAULTS", "FORMULAS", "default_scale"]


def default_scale(s) -> float:
    """The scale the case asks for: the given one, else 1/sqrt(D)."""
    return 1.0 / math.sqrt(s.D) if s.scale is None else s.scale


# the kernel's default scale, as a formula of the case's sizes (the right one is 1/sqrt(D))
DEFAULTS: dict[str, Callable] = {
    "1/sqrt(D)": lambda s: 1.0 / math.sqrt(s.D),
    "1/sqrt(Dv)": lambda s: 1.0 / math.sqrt(s.Dv),
    "1/sqrt(Sk)": lambda s: 1.0 / math.sqrt(s.Sk),
    "1/sqrt(Sq)": lambda s: 1.0 / math.sqrt(s.Sq),
    "1/D": lambda s: 1.0 / s.D,
    "1 (no scaling)": lambda s: 1.0,
    "sqrt(D)": lambda s: math.sqrt(s.D),
    "1/sqrt(Hq*D)": lambda s: 1.0 / math.sqrt(s.Hq * s.D),
    "1/sqrt(Hq) (the head count for the head size)": lambda s: 1.0 / math.sqrt(s.Hq),
    **{f"1/sqrt(D padded to a multiple of {m})": (lambda s, m=m: 1.0 / math.sqrt(-(-s.D // m) * m))
       for m in (8, 16, 32, 64)},
}


def _candidates() -> list[tuple[str, Callable]]:
    """(name, the scale the kernel uses on a case): a wrong default with the given scale honoured, the same
    with the given scale ignored, and a scale applied twice or divided by."""
    out = [(n, (lambda s, f=f: f(s) if s.scale is None else s.scale)) for n, f in DEFAULTS.items()
           if n != "1/sqrt(D)"]
    out += [(f"{n}, the given scale ignored" if n != "1/sqrt(D)" else "1/sqrt(D) (the given scale ignored)", f)
            for n, f in DEFAULTS.items()]
    return out + [("0 (a sentinel default used as the scale, every kept key weighted alike)",
                   lambda s: 0.0 if s.scale is None else s.scale),
                  ("scale**2 (applied twice)", lambda s: default_scale(s) ** 2),
                  ("sqrt(scale) (split over q and k, applied to one of them)", lambda s: math.sqrt(default_scale(s))),
                  ("1/scale (divided by it)", lambda s: 1.0 / default_scale(s)),
                  ("1/scale where a scale is given (divided by it; the default right)",
                   lambda s: 1.0 / s.scale if s.scale else 1.0 / math.sqrt(s.D)),
                  ("1/(D*scale) where a scale is given (its ratio to 1/sqrt(D) inverted; the default right)",
                   lambda s: 1.0 / (s.D * s.scale) if s.scale else 1.0 / math.sqrt(s.D)),
                  ("the scale times 1/sqrt(D) again (the caller's, then a backend's own)",
                   lambda s: default_scale(s) / math.sqrt(s.D)),
                  ("the given scale times 1/sqrt(D)",
                   lambda s: default_scale(s) / (math.sqrt(s.D) if s.scale else 1.0)),
                  ("the given scale times sqrt(D)", lambda s: default_scale(s) * (math.sqrt(s.D) if s.scale else 1.0))]


FORMULAS = dict(_candidates())
