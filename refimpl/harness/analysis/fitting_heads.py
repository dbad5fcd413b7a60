"""Which kv head each query head reads, fitted from the output (``gqa-grouping`` with its map, not a fixed form).

A kernel that maps query head h to the wrong kv head (``h % Hkv`` for ``h // G``, a tile of heads straddling GQA
groups, a head index taken from the program id on some path only) returns, for each (batch, query head) block, the
attention of that query head with another kv head's keys and values. For each failing case and each kv head
c, refimpl's output with every query head reading kv head c is computed (every other feature of the case kept:
its mask, band, ALiBi slope of the query head); the block's kv head is the c whose output it equals. The fit
holds when every judged block of every failing case has one, the same for a query head in every batch, and the
map of a (Hq, Hkv) shape is the same on every failing case of that shape and is not h // G somewhere.

The map may hold on some calls only (a decode path): the passing cases of a fitted shape that the map would
change decide when (the condition search of :mod:`.conditions`); no separating condition: no line.
:func:`.fitting_maps.fit_head_map` is that fit for any per-head choice (:mod:`.fitting_slopes` fits ALiBi's slopes
with it).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...attention import scaled_dot_product_attention
from .fitting_maps import fit_head_map

__all__ = ["heads_line"]


def _per_kv_head(data) -> list[np.ndarray]:
    """refimpl's output (B, Hq, Sq, Dv) with every query head reading kv head c, for each c."""
    s = data.spec
    kw = dict(data.reference_kwargs(), enable_gqa=False)
    outs = []
    for c in range(s.Hkv):
        k = np.repeat(data.k[:, c:c + 1], s.Hq, axis=1)
        v = np.repeat(data.v[:, c:c + 1], s.Hq, axis=1)
        with np.errstate(all="ignore"):
            outs.append(np.asarray(scaled_dot_product_attention(data.q, k, v, **kw)[0], np.float64))
    return outs


def heads_line(target: str, fail_cases: list, pass_cases: list, close: Callable, changes: Callable,
               condition: Callable, seen: Callable) -> list[str]:
    """``diagnosis TARGET: gqa-grouping — ...`` with the fitted map (and the condition when it holds on some
    calls only) when the fit above holds; [] otherwise. ``close(a, b, v)``: two blocks agree; ``changes(out,
    data)``: ``out`` differs from this passing case's expected output where it is judged; ``condition(failing
    specs, decided specs, every spec)``: the condition search of :mod:`.conditions`, on ``seen(data)``."""
    fit = fit_head_map(fail_cases, pass_cases, close, changes, condition, seen, _per_kv_head,
                       lambda s: ((s.Hq, s.Hkv), tuple(h // (s.Hq // s.Hkv) for h in range(s.Hq))))
    if fit is None:
        return []
    maps, when = fit
    shown = "; ".join(f"Hq={hq}, Hkv={hkv}: query heads 0..{hq - 1} read kv heads {' '.join(map(str, pi))} "
                      f"instead of {' '.join(str(h // (hq // hkv)) for h in range(hq))}"
                      for (hq, hkv), pi in sorted(maps.items())[:3])
    return [f"diagnosis {target}: gqa-grouping — GQA query head h uses the wrong kv head instead of h // (Hq // Hkv): "
            f"fitted {shown}" + ("" if when == "always" else f"; {when}")]
