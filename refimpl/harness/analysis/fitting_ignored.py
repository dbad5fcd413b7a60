"""An argument accepted and ignored in some calls, with the condition fitted from the cases (a fallback path that
does not forward ``is_causal`` when Dv != D, a mask skipped on a decode step, ALiBi dropped without a mask ...).

For each argument a kernel can ignore (``ARGUMENTS``: the causal flag, the window, the user's mask, ALiBi, the
softcap, a given scale), refimpl's output with that argument left out must reproduce the target on every failing
case of the sample (each must carry the argument) and explain it. The condition under which the kernel ignores
it is then searched, not assumed: among the boolean case features (either way round: ``Sq == 1``, ``Dv != D``,
``not causal``, "a mask argument is given" ...), a single one, then a pair, that is true on every failing case
and false on every passing case where leaving the argument out would have changed the output (a passing case the
argument does not change says nothing). No passing case it would change: "always". No
condition separates them: no line (``unknown`` stays honest).

The line names the model the table has for that argument, the argument, and the fitted condition:
``causal-dropped — the causal flag is ignored when Dv != D (fitted: refimpl without it reproduces all 5 failing
cases sampled; 1 passing cases it would change decide the condition)``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ...attention import scaled_dot_product_attention
from .conditions import Seen, condition

__all__ = ["ignored_line", "ARGUMENTS"]

# argument -> (the bug model that names it, how the line says it)
ARGUMENTS = {"causal": ("causal-dropped", "the causal flag"), "window": ("window-bounds", "the window"),
             "mask": ("mask-skipped", "the mask"), "alibi": ("alibi-dropped", "ALiBi's bias"),
             "softcap": ("softcap", "the softcap"), "scale": ("scale", "the given scale")}


def _has(spec, arg: str) -> bool:
    return {"causal": spec.is_causal, "window": spec.window is not None, "mask": spec.mask != "none",
            "alibi": spec.alibi, "softcap": spec.softcap is not None, "scale": spec.scale is not None}[arg]


def _without(data, arg: str) -> np.ndarray | None:
    """refimpl's output of this case with ``arg`` left out (None: the case hands it inside another argument, where
    it cannot be left out alone)."""
    s = data.spec
    kw = data.reference_kwargs()
    alibi = replace(data, mask=None).reference_kwargs()["mask"] if s.alibi and s.seqlens is None else None
    if arg in ("causal", "window"):
        if not data.band_flags:
            return None
        kw = dict(kw, is_causal=False) if arg == "causal" else dict(kw, window=None)
    elif arg == "mask":
        if s.seqlens is not None or not data.band_flags:
            return None
        kw = dict(kw, mask=alibi)
    elif arg == "alibi":
        if alibi is None:
            return None
        kw = dict(kw, mask=data.mask)
    elif arg == "softcap":
        kw = dict(kw, softcap=None)
    else:
        kw = dict(kw, scale=None)
    with np.errstate(all="ignore"):
        return np.asarray(scaled_dot_product_attention(data.q, data.k, data.v, **kw)[0], np.float64)


def ignored_line(target: str, fail_cases: list, pass_cases: list,
                 reproduces: Callable[[np.ndarray, object, np.ndarray], bool],
                 changes: Callable[[np.ndarray, object], bool]) -> list[str]:
    """``diagnosis TARGET: MODEL — ARGUMENT is ignored WHEN ...`` for the first argument whose omission
    reproduces every failing case (``reproduces(out, data, got)``: close and explaining) under a separating
    condition; ``changes(out, data)``: leaving the argument out changes this passing case's judged output."""
    for arg, (model, what) in ARGUMENTS.items():
        if not fail_cases or not all(_has(d.spec, arg) for d, _ in fail_cases):
            continue
        outs = [_without(d, arg) for d, _ in fail_cases]
        if any(o is None or not reproduces(o, d, g) for o, (d, g) in zip(outs, fail_cases)):
            continue
        pairs = [(d, _without(d, arg)) for d, _ in pass_cases if _has(d.spec, arg)]  # None: handed inside another
        decided = [Seen(d) for d, o in pairs if o is not None and changes(o, d)]     # argument, decides nothing
        when = condition([Seen(d) for d, _ in fail_cases], decided, [Seen(d) for d, _ in pass_cases])
        if when is not None:
            return [f"diagnosis {target}: {model} — {what} is ignored {when} (fitted: refimpl without it reproduces "
                    f"all {len(fail_cases)} failing cases sampled; {len(decided)} passing cases it would change "
                    f"decide the condition)"]
    return []
