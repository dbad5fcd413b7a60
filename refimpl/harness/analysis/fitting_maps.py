"""A per-query-head choice fitted from the output: which of a case's options (a kv head, an ALiBi slope) each query
head took. :mod:`.fitting_heads` (the kv head) and :mod:`.fitting_slopes` (the slope) give the options; the fit,
its refusals and its condition are here (see :func:`fit_head_map`)."""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["fit_head_map"]


def _map(data, got: np.ndarray, close: Callable, options: Callable, right: tuple[int, ...]) -> tuple[int, ...] | None:
    """The option each query head took (one per query head, the same in every batch), or None."""
    s = data.spec
    if got.shape != data.expected.shape or s.Hq < 2 or s.seqlens is not None or s.cache_lens is not None:
        return None
    live = np.broadcast_to(data.live, got.shape[:-1])
    outs = options(data)
    pi = []
    for h in range(s.Hq):
        if not live[:, h].any():
            pi.append(right[h])
            continue
        hits = [c for c, o in enumerate(outs)
                if all(close(o[b, h][live[b, h]], got[b, h][live[b, h]], data.v) for b in range(s.B))]
        if len(hits) != 1:                     # none, or options the case cannot tell apart
            return None
        pi.append(hits[0])
    return tuple(pi)


def fit_head_map(fail_cases: list, pass_cases: list, close: Callable, changes: Callable, condition: Callable,
                 seen: Callable, options: Callable, right: Callable, usable: Callable = lambda data: True,
                 lookup: Callable | None = None):
    """``(maps, when)``: per shape key ``right(spec)[0]``, the option each query head took (``options(data)``: one
    output (B, Hq, Sq, Dv) per option, each query head taking that option; ``right(spec)``: (shape key, the right
    option of each head)), and when the maps apply. None when the fit does not hold: on some failing case (``usable``,
    of the right shape, Hq >= 2, no packed batch or KV cache) a query head with a judged row took no option or
    several the case cannot tell apart, or took another in another batch; the map is the right one; two failing
    cases of one shape key disagree; or ``condition`` finds none separating the failing cases from the passing
    ones the map would change (``changes(out, data)``). A head with no judged row keeps its right option.
    ``lookup(maps, spec)``: the map a passing case is tried with (default: its own shape key's)."""
    maps: dict = {}
    for data, got in fail_cases:
        key, good = right(data.spec)
        pi = _map(data, np.asarray(got, np.float64), close, options, good) if usable(data) else None
        if pi is None or pi == good or maps.setdefault(key, pi) != pi:
            return None
    decided = []
    for data, _ in pass_cases:
        s = data.spec
        pi = maps.get(right(s)[0]) if lookup is None else lookup(maps, s)
        if pi is None or s.seqlens is not None or s.cache_lens is not None or not usable(data):
            continue
        outs = options(data)
        moved = np.stack([outs[c][:, h] for h, c in enumerate(pi)], axis=1)
        if changes(moved, data):
            decided.append(seen(data))
    when = condition([seen(d) for d, _ in fail_cases], decided, [seen(d) for d, _ in pass_cases])
    return None if when is None else (maps, when)
