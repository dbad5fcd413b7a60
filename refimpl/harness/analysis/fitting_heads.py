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
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...attention import scaled_dot_product_attention
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


def _map(data, got: np.ndarray, close: Callable) -> tuple[int, ...] | None:
    """The kv head each query head read (one per query head, the same in every batch), or None."""
    s = data.spec
    if got.shape != data.expected.shape or s.Hq < 2 or s.seqlens is not None or s.cache_lens is not None:
        return None
    live = np.broadcast_to(data.live, got.shape[:-1])
    outs = _per_kv_head(data)
    pi = []
    for h in range(s.Hq):
        if not live[:, h].any():
            pi.append(h // (s.Hq // s.Hkv))
            continue
        hits = [c for c, o in enumerate(outs)
                if all(close(o[b, h][live[b, h]], got[b, h][live[b, h]], data.v) for b in range(s.B))]
        if len(hits) != 1:                     # none, or kv heads the case cannot tell apart
            return None
        pi.append(hits[0])
    return tuple(pi)


def heads_line(target: str, fail_cases: list, pass_cases: list, close: Callable, changes: Callable,
               condition: Callable, seen: Callable) -> list[str]:
    """``diagnosis TARGET: gqa-grouping — ...`` with the fitted map (and the condition when it holds on some
    calls only) when the fit above holds; [] otherwise. ``close(a, b, v)``: two blocks agree; ``changes(out,
    data)``: ``out`` differs from this passing case's expected output where it is judged; ``condition(failing
    specs, decided specs, every spec)``: the condition search of :mod:`.conditions`, on ``seen(data)``."""
    maps: dict[tuple[int, int], tuple[int, ...]] = {}
    for data, got in fail_cases:
        pi = _map(data, np.asarray(got, np.float64), close)
        s = data.spec
        right = tuple(h // (s.Hq // s.Hkv) for h in range(s.Hq))
        if pi is None or pi == right or maps.setdefault((s.Hq, s.Hkv), pi) != pi:
            return []
    decided = []
    for data, _ in pass_cases:
        s = data.spec
        pi = maps.get((s.Hq, s.Hkv))
        if pi is None or s.seqlens is not None or s.cache_lens is not None:
            continue
        outs = _per_kv_head(data)
        moved = np.stack([outs[c][:, h] for h, c in enumerate(pi)], axis=1)
        if changes(moved, data):
            decided.append(seen(data))
    when = condition([seen(d) for d, _ in fail_cases], decided, [seen(d) for d, _ in pass_cases])
    if when is None:
        return []
    shown = "; ".join(f"Hq={hq}, Hkv={hkv}: query heads 0..{hq - 1} read kv heads {' '.join(map(str, pi))} "
                      f"instead of {' '.join(str(h // (hq // hkv)) for h in range(hq))}"
                      for (hq, hkv), pi in sorted(maps.items())[:3])
    return [f"diagnosis {target}: gqa-grouping — GQA query head h uses the wrong kv head instead of h // (Hq // Hkv): "
            f"fitted {shown}" + ("" if when == "always" else f"; {when}")]
