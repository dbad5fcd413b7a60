"""Output channels written to the wrong place, fitted from the output alone (``output-columns``).

A kernel that computes the output in tiles of value channels and stores a tile at the wrong channel offset (or
slices V or the output with the wrong bounds) returns channels that are each the reference's own channel, another
channel of the reference, or never written (zeros). Every channel c of the output is classified against the
float64 expected output E over every row the judge holds: right (close to E[..., c]), moved (close to E[..., c']
for a channel c' != c whose values differ from E[..., c]) or unwritten (exactly 0 where E[..., c] is not).

The fit holds when on every failing case every channel is one of the three, some channel is not right and some
channel was written (an output of zeros is no channel placement). The
line gives the channel map of the smallest failing case and, when it reproduces every failing case's map, the
rule: value tiles of T channels each stored at channel 0 (each tile overwrites the one before; channels no tile
reaches stay unwritten), for T in ``TILES``.
"""
from __future__ import annotations

import numpy as np

from .fitting_placement import output_atol

__all__ = ["columns_line", "TILES"]

RTOL = 1e-3
TILES = (8, 16, 32, 64, 128)


def _map(data, got) -> list[int] | None:
    """The source channel of each output channel (-1: never written), or None when some channel is none."""
    e = np.asarray(data.expected, np.float64)
    got = np.asarray(got, np.float64)
    if got.shape != e.shape or e.ndim != 4:
        return None
    live = np.broadcast_to(data.live, e.shape[:-1])
    if not live.any() or not np.isfinite(got[live]).all():
        return None
    atol = output_atol(data.v)
    g, r = got[live], e[live]                                  # (rows, Dv)

    def close(a, b) -> bool:
        return bool(np.all(np.abs(a - b) <= atol + RTOL * np.abs(b)))
    out = []
    for c in range(r.shape[1]):
        if close(g[:, c], r[:, c]):
            out.append(c)
        elif np.all(g[:, c] == 0.0):
            out.append(-1)
        else:
            src = [j for j in range(r.shape[1]) if j != c and not close(r[:, j], r[:, c]) and close(g[:, c], r[:, j])]
            if not src:
                return None
            out.append(min(src, key=lambda j: float(np.abs(g[:, c] - r[:, j]).max())))   # the closest of them
    return out


def tiles_stored_at_zero(Dv: int, tile: int) -> list[int]:
    """The channel map of value tiles of ``tile`` channels each stored from channel 0, in order."""
    m = [-1] * Dv
    for start in range(0, Dv, tile):
        for j in range(min(tile, Dv - start)):
            m[j] = start + j
    return m


def _shown(m: list[int]) -> str:
    return " ".join("-" if c < 0 else str(c) for c in m)


def columns_line(target: str, fail_cases: list) -> list[str]:
    """``diagnosis TARGET: output-columns — ...`` when the fit above holds on every failing case; [] otherwise.
    ``fail_cases``: the failing sample, (CaseData, output) pairs."""
    maps = []
    for d, g in fail_cases:
        m = _map(d, g)
        if m is None or m == list(range(len(m))) or max(m) < 0:      # nothing written at all: not a placement
            return []
        maps.append(m)
    if not maps:
        return []
    tiles = [t for t in TILES if all(m == tiles_stored_at_zero(len(m), t) for m in maps)]
    small = min(maps, key=len)
    rule = (f"; fitted, value tiles of {tiles[0]} channels each stored from channel 0 (the tile's offset left out)"
            if tiles else "")
    return [f"diagnosis {target}: output-columns — the output's channels are not the reference's own: on a case of "
            f"Dv={len(small)}, channels 0..{len(small) - 1} hold the reference's channels {_shown(small)} "
            f"(-: never written){rule}"]
