"""Bug models with a parameter, fitted to what the target returned rather than matched against fixed forms.

* :func:`fit_scale`: the softmax scale the kernel actually used, on every call or under a fitted condition. On
  each of the smallest failing cases the scale ``c`` that makes refimpl's output (every other feature of the case
  unchanged) equal the target's is searched (0 first: no scale at all; then a grid over log2(c / expected) in
  [-8, 8] and a golden-section refinement); the fitted values are named by the first formula of the case's sizes
  they all agree with (a wrong default such as ``1/sqrt(Dv)``, ``1/sqrt(Sk)``, ``1`` or ``0``, with the given
  scale honoured or ignored; a scale squared or inverted) or, failing that, as one constant. The named scale must
  then reproduce the target on every failing case used by the diagnosis (and explain it) and on the passing ones;
  or, failing the passing ones, a condition searched from the cases must hold on every failing case and on no
  passing case the formula would change (a fallback path with its own scale): the line says when. A fit that
  explains less, or that would change a passing case with no condition to tell them apart, is not reported.

The line names the fitted parameter: ``scale — the kernel used 1/sqrt(Dv) = 0.1768 instead of 1/sqrt(D) =
0.125``.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ...attention import scaled_dot_product_attention
from ..cases.features import CaseData
from ..cases.scale_formulas import FORMULAS, default_scale as _default
from .conditions import Seen, condition

__all__ = ["fit_scale", "scale_line", "FORMULAS"]

FIT_CASES = 6                 # the smallest failing cases the scale is fitted on
REL = 1e-3                    # fitted scales agree with a formula within this


def _output(data: CaseData, scale: float) -> np.ndarray:
    kw = dict(data.reference_kwargs(), scale=max(scale, 1e-300))        # 0: every score 0 (refimpl refuses 0 itself)
    with np.errstate(all="ignore"):
        return np.asarray(scaled_dot_product_attention(data.q, data.k, data.v, **kw)[0], np.float64)


def _error(data: CaseData, got: np.ndarray, scale: float) -> float:
    live = data.live
    out = _output(data, scale)
    if out.shape != got.shape:
        return math.inf
    with np.errstate(invalid="ignore"):
        d = np.abs(out[live] - got[live])
    return float(np.nan_to_num(d, nan=math.inf).max()) if d.size else 0.0


def _fit_one(data: CaseData, got: np.ndarray) -> float | None:
    """The scale that reproduces ``got`` on this case, or None when no scale does (within 1e-3 relative) or when
    two scales on the grid share the lowest error (a plateau: the case does not fix the scale)."""
    s0 = _default(data.spec)
    tol = 1e-3 * (1.0 + float(np.abs(got[np.isfinite(got)]).max(initial=0.0)))
    if _error(data, got, 0.0) <= tol < _error(data, got, s0):    # no scale at all, the one value off the grid
        return 0.0                                                  # below (where the case tells it from s0)
    grid = [s0 * 2.0 ** (x / 4.0) for x in range(-32, 33)]
    errs = np.array([_error(data, got, c) for c in grid])
    i = int(np.argmin(errs))
    if np.count_nonzero(errs <= errs[i] * (1 + 1e-12)) > 1:
        return None                                    # the lowest error is shared: the case cannot fix the scale
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = _error(data, got, math.exp(a)), _error(data, got, math.exp(b))
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = _error(data, got, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = _error(data, got, math.exp(b))
    c = math.exp((lo + hi) / 2)
    return c if _error(data, got, c) <= tol else None


def _agree(c: float, x: float) -> bool:
    return abs(c - x) <= REL * abs(x) if x else c == 0.0


def fit_scale(fail_cases: list[tuple[CaseData, np.ndarray]], pass_cases: list[tuple[CaseData, np.ndarray]],
              explains: Callable[[np.ndarray, CaseData, np.ndarray], bool],
              every_pass: list | None = None) -> tuple[str, CaseData, str] | None:
    """``(formula name, the case to quote, "")`` when one scale formula reproduces every failing case (and
    ``explains(model_output, data, got)`` it) and every passing one; ``(..., " when X")`` when it reproduces every
    failing case and a condition X (:func:`.conditions.condition`) is true on each and false on every passing
    case of ``every_pass`` (default: ``pass_cases``) whose expected output the formula would change (a fallback
    path that scales otherwise); else None."""
    if not fail_cases:
        return None
    smallest = sorted(fail_cases, key=lambda dg: dg[0].expected.size * dg[0].spec.Sk)[:FIT_CASES]
    fitted = []
    for data, got in smallest:
        c = _fit_one(data, got)
        if c is None or _agree(c, _default(data.spec)):
            return None
        fitted.append((data, c))
    tol_of = (lambda g: 1e-3 * (1.0 + float(np.abs(g[np.isfinite(g)]).max(initial=0.0))))
    c0 = fitted[0][1]
    constant = [] if len({d.spec.D for d, _ in fitted}) < 2 else [
        (f"the constant {c0:.6g}", lambda s: c0 if s.scale is None else s.scale),
        (f"the constant {c0:.6g}, the given scale ignored", lambda s: c0)]
    some_calls = []                       # formulas of every failing case that change passing ones
    for name, f in list(FORMULAS.items()) + constant:
        if not (all(_agree(c, f(d.spec)) for d, c in fitted) and all(
                _error(d, g, f(d.spec)) <= tol_of(g) and explains(_output(d, f(d.spec)), d, g) for d, g in fail_cases)):
            continue
        if all(_error(d, g, f(d.spec)) <= tol_of(g) for d, g in pass_cases):
            return name, smallest[0][0], ""
        some_calls.append((name, f))
    every = pass_cases if every_pass is None else every_pass
    for name, f in some_calls:            # a formula of some calls only (a fallback path): the condition fitted
        changed = [Seen(d) for d, _ in every if _error(d, d.expected, f(d.spec)) > tol_of(d.expected)]
        when = condition([Seen(d) for d, _ in fail_cases], changed, [Seen(d) for d, _ in every])
        if when is not None:
            return name, smallest[0][0], "" if when == "always" else f" {when}"
    return None


def scale_line(target: str, name: str, data: CaseData, when: str = "") -> str:
    s = data.spec
    used = FORMULAS[name](s) if name in FORMULAS else float(name.split(",")[0].rsplit(" ", 1)[1])
    if s.scale is None and name.endswith("ignored"):
        name = name.split(",")[0].split(" (")[0]
    expected = "the given scale" if s.scale is not None else "1/sqrt(D)"
    return (f"diagnosis {target}: scale — the kernel used {name} = {used:.4g}{when} instead of {expected} = "
            f"{_default(s):.4g} (fitted on the failing cases; e.g. {s.id}: D={s.D}, Dv={s.Dv}, Sk={s.Sk})")
