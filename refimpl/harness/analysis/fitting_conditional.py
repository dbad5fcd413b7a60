"""A model of the table that holds on some calls only, the condition fitted from the cases (a code path taken for
some inputs: the mask polarity read wrong on the decode path, a scale mistake only where a mask is given ...).

A variant of the table (:data:`refimpl.bugs.MODELS`, handed in; default tolerance, not a float32 one) that
reproduces and explains every failing case of the sample but changes some passing cases is named when a condition
(:func:`.conditions.condition`: a boolean case feature either way round, or a pair of them) is
true on every failing case and false on every passing case the variant would change. The table's own fit (every
passing case of its sample agreeing) comes first; this one reads every usable passing case. No separating
condition: no line.
"""
from __future__ import annotations

from typing import Callable

from .conditions import Seen, condition

__all__ = ["conditional_line"]

DEFAULT_TOLERANCE = (1e-3, 1e-6)


def conditional_line(target: str, fail_cases: list, pass_cases: list, reproduces: Callable, changes: Callable,
                     model_out: Callable, models: dict) -> list[str]:
    """``diagnosis TARGET: MODEL — explanation (variant) when X (...)`` for the first variant that fits as above;
    [] otherwise. ``model_out(variant, data)``: the variant's output on a case (the expected one where it does
    not apply); ``reproduces(out, data, got)``, ``changes(out, data)``: the diagnosis's rules."""
    if not fail_cases:
        return []
    failing = [Seen(d) for d, _ in fail_cases]
    every = [Seen(d) for d, _ in pass_cases]
    for model in models.values():
        if model.tolerance != DEFAULT_TOLERANCE:
            continue
        for variant in model.variants:
            if variant.in_float32 or not all(reproduces(model_out(variant, d), d, g) for d, g in fail_cases):
                continue
            decided = [Seen(d) for d, _ in pass_cases if changes(model_out(variant, d), d)]
            when = condition(failing, decided, every) if decided else None
            if when is not None:
                return [f"diagnosis {target}: {model.name} — {model.explanation} ({variant.label}) {when} (fitted: "
                        f"all {len(fail_cases)} failing cases sampled reproduced; {len(decided)} passing cases it "
                        f"would change decide the condition)"]
    return []
