"""Split-KV partial outputs merged with the wrong weights, fitted from the output alone (``split-merge``).

A split-KV kernel computes each split of the keys on its own (a partial output normalised by the split's own sum
and the split's log-sum-exp) and merges the partials with weights exp(lse_i - lse). When the merge reads the wrong
LSEs (another row's, another head's, an accumulator with the wrong strides) or weighs them wrong, every output row
is still a mix of its own splits' partial outputs, O = sum_i w_i O_i, with weights w_i that are not the share of
the row's weight in split i. The table's ``split-merge`` variants are fixed merges; this fits the weights.

For a split layout (``SPLITS`` splits of ceil(Sk / n) keys, or splits of ``SIZES`` keys) the partials O_i come from
the case's scores (each split with its own max) and the row's weights are solved by least squares. A row says
something only when it has more channels than its splits plus one (Dv >= n + 2; else any row is a mix). The fit
holds for a layout when every such row of every failing case is reproduced, at least two failing cases hold such
rows, and on some of them the fitted weights differ from the right shares, and not by one factor over every split (a
row the right one times a factor is a wrong denominator, ``softmax-denominator``, not a merge). The first layout
that holds is named.
"""
from __future__ import annotations

import numpy as np

from ...scores_parts import _parts
from .fitting_placement import output_atol

__all__ = ["splits_line", "SPLITS", "SIZES"]

RTOL = 1e-3
SPLITS = (2, 3, 4, 8)
SIZES = (16, 32, 64, 128)


def _bounds(Sk: int, layout: tuple[str, int]) -> list[tuple[int, int]]:
    size = -(-Sk // layout[1]) if layout[0] == "splits" else layout[1]
    return [(a, min(a + size, Sk)) for a in range(0, Sk, size)]


def _partials(data, parts) -> tuple[np.ndarray, np.ndarray]:
    """Each split's own output (B, Hq, Sq, Dv, n), normalised by its own sum (0 where it keeps no key), and its
    share of the row's weight (B, Hq, Sq, n), from the scores (each split with its own max: no underflow)."""
    s, keep, v = _parts(data.q, data.k, data.v, **data.reference_kwargs())
    s = np.where(keep, s, -np.inf)
    outs, lses = [], []
    with np.errstate(all="ignore"):
        for a, b in parts:
            top = s[..., a:b].max(axis=-1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            e = np.exp(s[..., a:b] - top)
            z = e.sum(axis=-1, keepdims=True)
            outs.append(np.where(z > 0, (e @ v[..., a:b, :]) / np.where(z > 0, z, 1.0), 0.0))
            lses.append(np.where(z[..., 0] > 0, np.log(np.where(z[..., 0] > 0, z[..., 0], 1.0)) + top[..., 0], -np.inf))
        lse = np.stack(lses, axis=-1)                                              # (B, Hq, Sq, n)
        top = lse.max(axis=-1, keepdims=True)
        w = np.exp(lse - np.where(np.isfinite(top), top, 0.0))
        share = w / np.where(w.sum(axis=-1, keepdims=True) > 0, w.sum(axis=-1, keepdims=True), 1.0)
    return np.stack(outs, axis=-1), share


def _fit(data, got, layout) -> tuple[bool, bool] | None:
    """(every informative row reproduced, some of them with weights other than the shares), or None when the case
    has no informative row for this layout."""
    e = np.asarray(data.expected, np.float64)
    got = np.asarray(got, np.float64)
    if got.shape != e.shape or e.ndim != 4:
        return None
    Dv = e.shape[-1]
    parts = _bounds(data.k.shape[-2], layout)
    if len(parts) < 2 or Dv < len(parts) + 2:
        return None
    live = np.broadcast_to(data.live, e.shape[:-1])
    if not np.isfinite(got[live]).all():
        return False, False
    outs, share = _partials(data, parts)
    A, y = outs[live], got[live]                                                   # (rows, Dv, n), (rows, Dv)
    w = np.einsum("rnd,rd->rn", np.linalg.pinv(A), y)                              # (rows, n)
    fit = np.einsum("rdn,rn->rd", A, w)
    atol = output_atol(data.v)
    ok = bool(np.all(np.abs(fit - y) <= atol + RTOL * np.abs(y)))
    used = share[live] > 0
    off = np.abs(np.where(used, w, 0.0) - share[live]) > 1e-3
    ratio = w / np.where(used, share[live], 1.0)                                      # (rows, n)
    spread = np.where(used, ratio, -np.inf).max(axis=-1) - np.where(used, ratio, np.inf).min(axis=-1)
    weighed = np.all(~used | (w > 1e-3 * share[live]), axis=-1)     # every split with keys got a weight: else
    #                                                                 those keys were never attended, not merged
    uneven = (used.sum(axis=-1) >= 2) & (spread > 1e-3) & weighed   # not one factor over every split: not a
    return ok, bool(ok and np.any(off & uneven[:, None]))           # denominator


def splits_line(target: str, fail_cases: list) -> list[str]:
    """``diagnosis TARGET: split-merge — ...`` when the fit above holds for a layout; [] otherwise.
    ``fail_cases``: the failing sample, (CaseData, output) pairs."""
    for layout in [("splits", n) for n in SPLITS] + [("size", n) for n in SIZES]:
        fits = [f for f in (_fit(d, g, layout) for d, g in fail_cases) if f is not None]
        if len(fits) >= 2 and all(ok for ok, _ in fits) and any(off for _, off in fits):
            said = f"{layout[1]} splits of ceil(Sk / {layout[1]}) keys" if layout[0] == "splits" else \
                f"splits of {layout[1]} keys"
            return [f"diagnosis {target}: split-merge — each row is a mix of its own key splits' partial outputs "
                    f"({said}, each normalised by its own sum) with merge weights other than each split's share "
                    f"exp(lse_i - lse): the LSEs or weights the merge reads are wrong (fitted on "
                    f"{len(fits)} failing cases)"]
    return []
