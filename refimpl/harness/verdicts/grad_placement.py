"""Where a backward's dK and dV blocks come from, fitted from the gradients (``bwd-gqa-sum`` with its map).

Under GQA the dK (dV) of kv head c is the sum of its query heads' contributions, dK_c = sum over h in c's group of
s dS_h^T Q_h. A kernel that reduces them wrong (one query head's contribution alone, a buffer laid out with the
query heads' count and offset b * Hq + h where b * Hkv + c is meant, the group's first or last head) returns, for
each (batch, kv head) block, one query head's contribution, the right sum, or zeros. For each failing case the
per-query-head contributions are refimpl's backward with K and V expanded to the query heads; each returned block
is matched against every (batch, query head)'s contribution, the group sum and zeros (16-bit cases are left out:
their budget passes blocks that 1e-6 would call wrong). The fit holds when every block of dK and dV of every
failing case matches one, some block is not the right sum, dQ is right, and every passing case has the right sums
(the mistake shows only under GQA; a map that would change a passing GQA case refutes it). The line prints the map
of the smallest failing case. :func:`unsummed_grads_line`: dK and dV returned per query head, (B, Hq, Sk, X), each
query head's own contribution where the group's sum (B, Hkv, Sk, X) is due (the reduction left out), dQ right.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...precision import get as precision

__all__ = ["close_blocks", "placement_grads_line", "unsummed_grads_line"]


def _sources(gd, got: dict, close: Callable, per_head: Callable) -> dict | None:
    """{"dk": [[source per kv head] per batch], "dv": ...}: "sum", "0" or (b', h') per block; None if any block
    has none."""
    s = gd.data.spec
    if s.Hq == s.Hkv or got["dk"].shape != gd.oracle["dk"].shape or got["dv"].shape != gd.oracle["dv"].shape:
        return None
    per = per_head(gd)
    out = {}
    for name, contrib in (("dk", per[1]), ("dv", per[2])):              # (B, Hq, Sk, D|Dv) per query head
        blocks = []
        for b in range(s.B):
            row: list = []
            for c in range(s.Hkv):
                block = got[name][b, c]
                if close(block, gd.oracle[name][b, c]):
                    row.append("sum")
                elif close(block, np.zeros_like(block)):
                    row.append("0")
                else:
                    hits = [(b2, h) for b2 in range(s.B) for h in range(s.Hq) if close(block, contrib[b2, h])]
                    if len(hits) != 1:
                        return None
                    row.append(hits[0])
            blocks.append(row)
        out[name] = blocks
    return out


def close_blocks(a: np.ndarray, b: np.ndarray) -> bool:
    """Two gradient blocks agree: |a - b| <= 1e-6 (1 + max|b|) + 1e-3 |b|, all finite."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return bool(np.isfinite(a).all() and np.isfinite(b).all()
                and np.all(np.abs(a - b) <= 1e-6 * (1 + np.abs(b).max(initial=0.0)) + 1e-3 * np.abs(b)))


def placement_grads_line(target: str, failing: list, passing: list, per_head: Callable,
                         close: Callable = close_blocks) -> list[str]:
    """``diagnosis TARGET: bwd-gqa-sum — ...`` with the fitted block sources when the fit above holds, else [].
    ``failing``/``passing``: (GradData, GradReturned) pairs; ``per_head(gd)``: (dq, dk, dv) with K and V expanded
    to the query heads (each query head's own contribution); ``close(a, b)``: two blocks agree."""
    fits: list[tuple] = []
    failing = [(gd, got) for gd, got in failing if not precision(gd.data.spec.dtype).low]    # 16-bit: the budget
    passing = [(gd, got) for gd, got in passing if not precision(gd.data.spec.dtype).low]    # hides what 1e-6 sees
    for gd, got in failing:
        src = _sources(gd, got.grads, close, per_head)
        if src is None or not close(got.grads["dq"], gd.oracle["dq"]):
            return []
        if all(x == "sum" for rows in src.values() for row in rows for x in row):
            return []
        fits.append((gd.data.spec, src))
    for gd, got in passing:
        if gd.data.spec.Hq != gd.data.spec.Hkv and not all(close(got.grads[n], gd.oracle[n]) for n in ("dk", "dv")):
            return []
    if not fits:
        return []
    spec, found = min(fits, key=lambda f: (f[0].B * f[0].Hq, f[0].Sk))

    def shown(name: str) -> str:
        return ", ".join(f"({b}, {c}) {'the group sum' if x == 'sum' else 'zeros' if x == '0' else f'query head {x}'}"
                         for b, row in enumerate(found[name]) for c, x in enumerate(row))
    return [f"diagnosis {target}: bwd-gqa-sum — dK and dV of a kv head are not the sum of its query heads' "
            f"contributions: fitted on B={spec.B}, Hq={spec.Hq}, Hkv={spec.Hkv}: dK (batch, kv head) <- {shown('dk')}; "
            f"dV <- {shown('dv')}"]


def unsummed_grads_line(target: str, failing: list, per_head: Callable, close: Callable = close_blocks) -> list[str]:
    """``diagnosis TARGET: bwd-gqa-sum — ...`` when every failing case (16-bit ones left out) has dQ right and dK, dV
    right or returned per query head (B, Hq, Sk, X) equal to each query head's own contribution, and some case
    returned them so; else []."""
    seen = None
    for gd, got in failing:
        s = gd.data.spec
        if precision(s.dtype).low:
            continue
        if got.grads["dq"].shape != gd.oracle["dq"].shape or not close(got.grads["dq"], gd.oracle["dq"]):
            return []
        per = None
        for i, name in ((1, "dk"), (2, "dv")):
            a = got.grads[name]
            if a.shape == gd.oracle[name].shape and close(a, gd.oracle[name]):
                continue
            per = per_head(gd) if per is None else per
            if s.Hq == s.Hkv or a.shape != per[i].shape or not close(a, per[i]):
                return []
            seen = seen or s
    if seen is None:
        return []
    return [f"diagnosis {target}: bwd-gqa-sum — dK and dV of a kv head are not the sum of its query heads' "
            f"contributions: returned per query head, shape (B, Hq, Sk, D) = ({seen.B}, {seen.Hq}, {seen.Sk}, "
            f"{seen.D}) where the sum over each group of {seen.Hq // seen.Hkv} gives (B, Hkv, Sk, D) = ({seen.B}, "
            f"{seen.Hkv}, {seen.Sk}, {seen.D})"]
