"""Which batch's keys and values, or mask, each batch reads, fitted from the output (a batch stride or offset
missing: ``kv-batch``; a per-batch mask read from another batch: ``mask-broadcast`` with its map).

A kernel that indexes a per-batch input without the batch stride (flat K/V rows addressed from the head alone, a
mask sliced as ``mask[0]``, an offset dropped on one path) returns, for each batch b, the attention of b's queries
with another batch's keys and values (or mask), every other input its own. For each failing case and each
source batch c, refimpl's output with every batch reading batch c's K and V (or mask) is computed; batch b's
source is the c whose output its every judged (head, row) block equals (b itself where both agree; a row with no
key under c must come back as zeros or NaN, the conventions for such a row). The fit holds
when every batch of every failing case has one, some batch reads another, and the sources follow one rule on
every failing case: every batch reads batch 0's, or one map per batch count B.

The rule may hold on some calls only (a decode path): the passing cases the rule would change decide when (the
condition search of :mod:`.conditions`, then a size threshold on Sq or Sk that separates them all); no separating
condition: no line.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ...attention import scaled_dot_product_attention

__all__ = ["sources_line"]

INPUTS = ("kv", "mask")
SAID = {"kv": ("kv-batch", "a batch reads another batch's keys and values (a batch stride or offset missing)",
               "keys and values"),
        "mask": ("mask-broadcast", "a per-batch mask is read from the wrong batch", "masks")}


def _with_source(data, what: str, c: int) -> np.ndarray | None:
    """refimpl's output (B, Hq, Sq, Dv) with every batch reading batch ``c``'s ``what`` ("kv" or "mask")."""
    kw = data.reference_kwargs()
    q, k, v = data.q, data.k, data.v
    if what == "kv":
        k, v = (np.broadcast_to(a[c:c + 1], a.shape) for a in (k, v))
    else:
        m = kw["mask"]
        if m is None or np.ndim(m) < 4 or np.shape(m)[0] == 1:
            return None
        kw = dict(kw, mask=np.broadcast_to(np.asarray(m)[c:c + 1], np.shape(m)))
    with np.errstate(all="ignore"):
        return np.asarray(scaled_dot_product_attention(q, k, v, **kw)[0], np.float64)


def _sources(data, got: np.ndarray, what: str, close: Callable) -> list[set[int]] | None:
    """For each batch, the batches whose ``what`` reproduce its every judged block (its own among them where they
    agree), or None: a batch no source explains. Rows with no key under a source (refimpl's exact zeros) are left
    out of that source's comparison: what a kernel gives a row with no key is a convention, not this fit's."""
    s = data.spec
    if got.shape != data.expected.shape or s.B < 2:
        return None
    found = [_with_source(data, what, c) for c in range(s.B)]
    outs = [o for o in found if o is not None]
    if len(outs) != s.B:
        return None
    live = np.broadcast_to(data.live, got.shape[:-1])
    with np.errstate(all="ignore"):                                       # zeros or NaN: what a row with no key gets
        conventional = (np.all(np.abs(got) <= 1e-12 * (1.0 + np.abs(data.v).max()), axis=-1)
                        | ~np.all(np.isfinite(got), axis=-1))
    hits = []
    for b in range(s.B):
        hit = set()
        for c, o in enumerate(outs):
            dead = live[b] & np.all(o[b] == 0.0, axis=-1)                     # (Hq, Sq): no key under source c
            rows = live[b] & ~dead
            if np.all(conventional[b][dead]) and close(o[b][rows], got[b][rows], data.v):
                hit.add(c)
        if not hit and live[b].any():
            return None
        hits.append(hit or {b})
    return hits


def _rule(fits: list[list[set[int]]]) -> tuple[str, Callable[[int], tuple[int, ...] | None]] | None:
    """(what it says, the batch map of a batch count B): every batch reads batch 0's, or one map per B (each
    batch's source common to every failing case of that B); None when the failing cases share no such map."""
    if all(0 in hit for f in fits for hit in f):
        return "every batch reads batch 0's", lambda B: (0,) * B
    by_count: dict[int, list[set[int]]] = {}
    for f in fits:
        common = by_count.setdefault(len(f), [set(h) for h in f])
        for h, hit in zip(common, f):
            h &= hit
    if any(not h for common in by_count.values() for h in common):
        return None
    maps = {B: tuple(b if b in h else min(h) for b, h in enumerate(common)) for B, common in by_count.items()}
    shown = "; ".join(f"B={B}: batches 0..{B - 1} read those of batches {' '.join(map(str, m))}"
                      for B, m in sorted(maps.items())[:3])
    return shown, maps.get


def _threshold(fail_specs: list, decided_specs: list) -> str | None:
    """"when Sq <= t" (or Sk, or >=) where a size alone separates every failing case from every passing one the
    rule would change (a decode path taken for short queries); None otherwise. Offered here only: the map itself
    is fitted exactly on every failing case, so a size can only say when, never name the mistake."""
    for size in ("Sq", "Sk"):
        got, held = [getattr(s, size) for s in fail_specs], [getattr(s, size) for s in decided_specs]
        if held and max(got) < min(held):
            return f"when {size} <= {max(got)} (the largest failing; passing cases it would change from {min(held)})"
        if held and min(got) > max(held):
            return f"when {size} >= {min(got)} (the smallest failing; the passing cases it would change to {max(held)})"
    return None


def sources_line(target: str, fail_cases: list, pass_cases: list, close: Callable, changes: Callable,
                 condition: Callable, seen: Callable) -> list[str]:
    """``diagnosis TARGET: kv-batch — ...`` (or ``mask-broadcast — ...``) with the fitted map and, where it holds on
    some calls only, the condition; [] when the fit above holds for neither input. Arguments as
    :func:`.fitting_heads.heads_line`'s."""
    for what in INPUTS:
        fitted = [_sources(d, np.asarray(g, np.float64), what, close) for d, g in fail_cases]
        fits = [f for f in fitted if f is not None]
        if not fits or len(fits) != len(fitted) or all(b in hit for f in fits for b, hit in enumerate(f)):
            continue                             # a batch no source explains, or every batch its own
        rule = _rule(fits)
        if rule is None:
            continue
        shown, beta_of = rule
        decided = []
        for data, _ in pass_cases:
            beta = beta_of(data.spec.B) if data.spec.B > 1 else None
            if beta is None or beta == tuple(range(data.spec.B)):
                continue
            found = {c: _with_source(data, what, c) for c in set(beta)}
            outs = {c: o for c, o in found.items() if o is not None}
            if len(outs) == len(found) and changes(np.stack([outs[c][b] for b, c in enumerate(beta)]), data):
                decided.append(seen(data))
        when = condition([seen(d) for d, _ in fail_cases], decided, [seen(d) for d, _ in pass_cases])
        when = when or _threshold([d.spec for d, _ in fail_cases], [x.spec for x in decided])
        if when is None:
            continue
        name, explanation, inputs = SAID[what]
        return [f"diagnosis {target}: {name} — {explanation}: fitted, {shown} {inputs}"
                + ("" if when == "always" else f"; {when}")]
    return []
