"""Which ALiBi slope each query head uses, fitted from the output (``alibi-slopes``: the map, not a fixed form).

A kernel that gives query head h another head's slope (the slopes sliced per tensor-parallel rank without the
rank's offset, a slope table built for another head count and indexed modulo it, the slopes of the kv head for
those of the query head) returns, for each (batch, query head) block, that head's attention with another head's
slope. For each failing ALiBi case and each head j, refimpl's output with every query head given head j's slope
(from the same batch's row of a (B, Hq) tensor) is computed; the block's slope is the j whose output it equals.
The fit is :func:`.fitting_maps.fit_head_map`'s: every judged block of every failing case has one j, the same for
a head in every batch, one map per head shape (Hq, Hkv) on every failing case — a kernel that slices the slopes
per kv group or per rank maps heads by the group size Hq / Hkv, so two cases of one Hq and different Hkv may
differ — not the identity somewhere; the passing ALiBi cases it would change decide when it applies (no
separating condition: no line); a passing case of a head shape with no map of its own is tried with the map of
its head count when there is one (a map of the same Hq would change it: that decides when, e.g. "not GQA").
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from ...attention import scaled_dot_product_attention
from .fitting_maps import fit_head_map

__all__ = ["slopes_line"]


def _per_slope(data) -> list[np.ndarray]:
    """refimpl's output (B, Hq, Sq, Dv) with every query head given head j's slope, for each j."""
    s = data.spec
    slopes = np.asarray(data.slopes, np.float64)
    outs = []
    for j in range(s.Hq):
        one = replace(data, slopes=np.repeat(slopes[..., j:j + 1], s.Hq, axis=-1))
        with np.errstate(all="ignore"):
            outs.append(np.asarray(scaled_dot_product_attention(data.q, data.k, data.v,
                                                                **one.reference_kwargs())[0], np.float64))
    return outs


def _distinct(data) -> bool:
    """An ALiBi case whose heads' slopes differ (in each batch's row), so a head's slope can be told apart."""
    if not data.spec.alibi or data.slopes is None:
        return False
    rows = np.atleast_2d(np.asarray(data.slopes))
    return all(len(set(r.tolist())) == r.size for r in rows)


def _lookup(maps: dict, spec) -> tuple[int, ...] | None:
    """The map a passing case is tried with: its (Hq, Hkv)'s, else its Hq's when exactly one was fitted."""
    if (spec.Hq, spec.Hkv) in maps:
        return maps[(spec.Hq, spec.Hkv)]
    same = [pi for (hq, _), pi in maps.items() if hq == spec.Hq]
    return same[0] if len(same) == 1 else None


def slopes_line(target: str, fail_cases: list, pass_cases: list, close: Callable, changes: Callable,
                condition: Callable, seen: Callable) -> list[str]:
    """``diagnosis TARGET: alibi-slopes — ...`` with the fitted map (and when it applies) when the fit holds;
    [] otherwise. The arguments are :func:`.fitting_heads.heads_line`'s."""
    if not fail_cases or not all(_distinct(d) for d, _ in fail_cases):
        return []
    fit = fit_head_map(fail_cases, [(d, g) for d, g in pass_cases if _distinct(d)], close, changes, condition,
                       seen, _per_slope, lambda s: ((s.Hq, s.Hkv), tuple(range(s.Hq))), usable=_distinct,
                       lookup=_lookup)
    if fit is None:
        return []
    maps, when = fit
    shown = "; ".join(f"Hq={hq}, Hkv={hkv}: query heads 0..{hq - 1} use the slopes of heads {' '.join(map(str, pi))}"
                      for (hq, hkv), pi in sorted(maps.items())[:3])
    return [f"diagnosis {target}: alibi-slopes — query head h is given another head's ALiBi slope instead of its "
            f"own: fitted {shown}" + ("" if when == "always" else f"; {when}")]
