"""The softmax scale a backward used, fitted from its gradients (``bwd-scale`` with the formula it fits).

A backward whose recomputed weights, dQ and dK all use another scale s' returns the exact gradient of the forward with
s'. For each formula of harness/cases/scale_formulas.py (the forward's fitted ``scale`` names by the same list: a
wrong default such as 1/sqrt(Hq*D) or 1/sqrt(Sk), the given scale ignored, a scale applied twice or divided by), that
gradient is computed on every failing case with the formula's s' for that case; the formula holds when it explains
every failing case and leaves every passing one as it is (grad_judge's rule, passed in as ``fits``). The first that
holds is named with its value on the smallest failing case, e.g. ``bwd-scale — the whole backward used
1/sqrt(Hq*D) = 0.0884 instead of 1/sqrt(D) = 0.1768``. It is tried after the table's models (whose ``bwd-scale``
rows name 1, 1/sqrt(Dv), 1/D, s**2 and a padded D first).
"""
from __future__ import annotations

from typing import Callable

from ...bugs_backward_forward import forward_mistake
from ..cases.scale_formulas import FORMULAS, default_scale

__all__ = ["scale_grads_line"]


def _with_scale(used: float) -> Callable:
    """The exact gradient of the forward with scale ``used`` (every other keyword the case's)."""
    def model(q, k, v, d_out, **kw):
        return forward_mistake(q, k, v, d_out, mistake="none", **dict(kw, scale=max(used, 1e-300)))
    return model


def scale_grads_line(target: str, failing: list, passing: list, fits: Callable) -> list[str]:
    """``diagnosis TARGET: bwd-scale — ...`` for the first formula that holds (see the module docstring), else [].
    ``failing``/``passing``: (GradData, GradReturned) pairs; ``fits(model, gd, got, failing)``: grad_judge's rule."""
    if not failing:
        return []
    for name, formula in FORMULAS.items():
        if all(abs(formula(gd.data.spec) - default_scale(gd.data.spec)) <= 1e-12 * default_scale(gd.data.spec)
               for gd, _ in failing):
            continue                                       # the right scale on every failing case: explains none
        if all(fits(_with_scale(formula(gd.data.spec)), gd, got, True) for gd, got in failing) \
                and all(fits(_with_scale(formula(gd.data.spec)), gd, got, False) for gd, got in passing):
            s = min((gd.data.spec for gd, _ in failing), key=lambda x: (x.B * x.Hq, x.Sq * x.Sk))
            shown = name.split(",")[0].split(" (")[0] if s.scale is None and name.endswith("ignored") else name
            expected = "the given scale" if s.scale is not None else "1/sqrt(D)"
            return [f"diagnosis {target}: bwd-scale — the whole backward used {shown} = {formula(s):.4g} instead of "
                    f"{expected} = {default_scale(s):.4g} (fitted on the failing gradients; e.g. {s.id}: D={s.D}, "
                    f"Dv={s.Dv}, Hq={s.Hq}, Sk={s.Sk})"]
    return []
