"""Attention computed right and written to the wrong place, fitted from the output alone (``output-placement``).

A kernel whose grid or index arithmetic is wrong (a program mapped to the wrong head, a batch stride of 0, a
remainder of heads or query rows never launched) returns rows that are each either the reference's own row, the
same query row of another (batch, head) block, or never written (zeros). No fixed model of the math gives that
output, but every row can be classified against the float64 expected output E (B, Hq, Sq, Dv):

* right: close to E[b, h, i];
* moved: close to E[b', h', i] for another block (b', h') whose row differs from E[b, h, i];
* unwritten: exactly 0 where E[b, h, i] is not.

The fit holds when, on every failing case of the sample, every row the judge holds (:attr:`CaseData.live`) is one
of the three and some row is not right (the case failed on its output), and on some failing case a row was
computed (right or moved, nonzero) and some row that keeps every key (weights all > 0) was moved or unwritten: a
kernel that returns zeros everywhere, computes one row wrong, or zeroes only rows with masked keys (a guard on a
NaN from a fully masked block) is not this.
The line says what moved on a small failing case with rows computed, and the rule that generates the unwritten
blocks or rows on every failing case when one does (a remainder of the flattened batch x heads past its last whole
slice of m; query rows past a fixed count of the flattened (query, head-in-group) rows) and no passing case would
have a judged row unwritten by it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["placement_line", "output_atol"]

RTOL = 1e-3
ATOL = 1e-6


def output_atol(v) -> float:
    """The absolute tolerance of the forms fitted from the output: ``ATOL`` scaled by 1 + the largest finite |v|."""
    fin = np.abs(np.asarray(v, np.float64))
    return ATOL * (1.0 + float(fin[np.isfinite(fin)].max(initial=0.0)))


def _rows(data, got: np.ndarray):
    """(right, moved, zero) bool (B, Hq, Sq) and the source block of moved rows (flat b * Hq + h, -1 else), or
    None when some judged row is none of the three."""
    e = np.asarray(data.expected, np.float64)
    got = np.asarray(got, np.float64)
    if got.shape != e.shape or e.ndim != 4:
        return None
    B, Hq, Sq, Dv = e.shape
    live = np.broadcast_to(data.live, e.shape[:-1])
    if not np.isfinite(got[live]).all():
        return None
    atol = output_atol(data.v)

    def close(a, b):                                   # row-wise allclose: (..., Dv) -> (...)
        return np.all(np.abs(a - b) <= atol + RTOL * np.abs(b), axis=-1)
    right = close(got, e)
    zero = np.all(got == 0.0, axis=-1) & ~right
    flat_e = e.reshape(B * Hq, Sq, Dv)
    source = np.full((B, Hq, Sq), -1)
    for n in range(B * Hq):                           # each block as the source of rows of the others
        hit = close(got, flat_e[n][None, None]) & ~right & ~zero & (source < 0)
        source[hit] = n
    moved = source >= 0
    if not np.all((right | moved | zero)[live]):
        return None
    return right & live, moved & live, zero & live, source


def _slices(zero: np.ndarray, live: np.ndarray) -> set[int]:
    """Every m (2 <= m <= 16) for which the unwritten rows are exactly the judged rows of the flat blocks past the
    last whole slice of m of the flattened batch x heads."""
    B, Hq, Sq = zero.shape
    past = [(np.arange(B * Hq) >= m * (B * Hq // m)).reshape(B, Hq, 1) for m in range(2, 17)]
    return {m for m, p in zip(range(2, 17), past) if np.array_equal(zero[live], np.broadcast_to(p, zero.shape)[live])}


def _folded_rows(zero: np.ndarray, live: np.ndarray, spec) -> set[int]:
    """Every M for which the unwritten rows are exactly the judged rows whose flattened (query, head-in-group)
    index i * G + g reaches M (one launch of M rows over a GQA group folded into the queries)."""
    B, Hq, Sq = zero.shape
    G = spec.Hq // max(spec.Hkv, 1)
    folded = np.arange(Sq)[None, :] * G + (np.arange(Hq) % G)[:, None]           # (Hq, Sq)
    return {M for M in (16, 32, 64, 128, 256)
            if np.array_equal(zero[live], np.broadcast_to(folded >= M, zero.shape)[live])}


def _judged(data) -> np.ndarray:
    """(B, Hq, Sq) bool: the rows judged by value whose expected output is not zero (leaving them unwritten shows)."""
    e = np.asarray(data.expected)
    return np.broadcast_to(data.live, e.shape[:-1]) & np.any(e != 0, axis=-1)


def _slices_bite(data, m: int) -> bool:
    """Slices of m would leave a judged row of this (passing) case unwritten."""
    s = data.spec
    past = (np.arange(s.B * s.Hq) >= m * (s.B * s.Hq // m)).reshape(s.B, s.Hq, 1)
    return bool((_judged(data) & past).any())


def _folded_bite(data, M: int) -> bool:
    """One launch of M folded rows would leave a judged row of this (passing) case unwritten."""
    s = data.spec
    G = s.Hq // max(s.Hkv, 1)
    folded = np.arange(s.Sq)[None, :] * G + (np.arange(s.Hq) % G)[:, None]
    return bool((_judged(data) & (folded >= M)).any())


def _describe(data, right, moved, zero, source) -> str:
    s = data.spec
    B, Hq = right.shape[:2]
    parts = []
    blocks_zero = [(b, h) for b in range(B) for h in range(Hq)
                   if zero[b, h].any() and not (right[b, h].any() or moved[b, h].any())]
    if blocks_zero:
        parts.append("(batch, head) " + ", ".join(f"({b}, {h})" for b, h in blocks_zero[:6])
                     + (f" and {len(blocks_zero) - 6} more" if len(blocks_zero) > 6 else "") + " never written")
    rows_zero = [(b, h) for b in range(B) for h in range(Hq) if zero[b, h].any() and (b, h) not in blocks_zero]
    if rows_zero:
        b, h = rows_zero[0]
        idx = np.flatnonzero(zero[b, h])
        parts.append(f"query rows {idx[0]}..{idx[-1]} of (batch, head) ({b}, {h}) never written"
                     + (f" ({len(rows_zero)} blocks with unwritten rows)" if len(rows_zero) > 1 else ""))
    held = sorted({(b, h, int(n)) for b, h, _ in zip(*np.nonzero(moved)) for n in [source[b, h][moved[b, h]][0]]})
    if held:
        parts.append(", ".join(f"({b}, {h}) holds ({n // Hq}, {n % Hq})'s" for b, h, n in held[:4])
                     + (f" and {len(held) - 4} more" if len(held) > 4 else ""))
    return f"{s.id} (B={s.B}, Hq={s.Hq}, Hkv={s.Hkv}, Sq={s.Sq}): " + "; ".join(parts)


def placement_line(target: str, fail_cases: list, pass_cases: list) -> list[str]:
    """``diagnosis TARGET: output-placement — ...`` when the fit above holds on ``fail_cases`` ((CaseData, output
    (B, Hq, Sq, Dv)) pairs); [] otherwise. ``pass_cases`` only refute a generating rule."""
    fitted, computed, unmasked = [], False, False
    for data, got in fail_cases:
        r = _rows(data, got)
        if r is None:
            return []
        right, moved, zero, source = r
        if not (moved | zero).any():
            return []
        fitted.append((data, r))
        computed = computed or bool(((right | moved) & np.any(np.asarray(got) != 0, axis=-1)).any())
        if data.weights is not None:                   # a row that keeps every key, misplaced or unwritten
            unmasked = unmasked or bool(((moved | zero) & np.all(data.weights > 0, axis=-1)).any())
    if not (computed and unmasked):     # zeros everywhere: nothing says the math is right; only rows with masked keys
        return []                       # lost: the mask's handling (a guard zeroing NaN rows), not the placement
    rules = []
    live = [np.broadcast_to(d.live, r[0].shape) for d, r in fitted]
    if all(not r[1].any() for _, r in fitted):            # nothing moved: a rule for what was never written
        ms = set.intersection(*(_slices(r[2], lv) for (_, r), lv in zip(fitted, live)))
        ms = {m for m in ms if not any(_slices_bite(d, m) for d, _ in pass_cases)}
        if ms:
            m, *also = sorted(ms)          # the others the cases leave standing are named too
            alt = f" (or {', '.join(map(str, also))}: the cases do not tell them apart)" if also else ""
            rules.append(f"the flattened batch x heads run in slices of {m}{alt}: the last (B * Hq) % {m} never "
                         f"computed")
        Ms = set.intersection(*(_folded_rows(r[2], lv, d.spec) for (d, r), lv in zip(fitted, live)))
        Ms = {M for M in Ms if not any(_folded_bite(d, M) for d, _ in pass_cases)}
        if Ms:
            M, *also = sorted(Ms)
            alt = f" (or {', '.join(map(str, also))}: the cases do not tell them apart)" if also else ""
            rules.append(f"one launch of {M} rows{alt} over the flattened (query, head-in-group) index i * G + g: "
                         f"the rows from {M} on never computed")
    shown = [dr for dr in fitted if (dr[1][0] | dr[1][1]).any()] or fitted     # a case with rows computed
    data, r = min(shown, key=lambda dr: dr[0].expected.size)
    rule = f"; fitted: {'; '.join(rules)}" if rules else ""
    return [f"diagnosis {target}: output-placement — attention computed right but written to the wrong place: "
            f"blocks or rows of the output hold another (batch, head)'s result or were never written (zeros){rule} "
            f"(e.g. {_describe(data, *r)})"]
