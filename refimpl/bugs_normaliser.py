"""Bug models of the softmax's normaliser and of the map's orientation: the row sum reduced over more than the row,
the weights normalised again over the queries, split-KV partial results merged with the wrong weights, the map
applied transposed. Same calling convention as :mod:`refimpl.bugs` (refimpl's inputs and keywords in,
the output (B..., Sq, Dv) out); the rows of the bug-model table they make are ``ROWS``.

* the denominator summed over the whole (Sq, Sk) score matrix of a head (a reduce over both axes), each row's own
  max subtracted or one max for the matrix: every row's weights sum to its share of the matrix, not to 1;
* the exp left out: the max-shifted kept scores divided by their own sum (all <= 0: weights >= 0, the max key 0);
* the row softmax's weights normalised a second time, over the query axis (each key's column divided by its sum
  over the queries, ``eps`` added to it: PCT's "offset attention" does so by design, a mistake under this contract);
* the map applied transposed, O = P^T V: the row softmax read as (Sk, Sq), or the scores laid out (Sk, Sq) (q and k
  swapped) and normalised over their last axis, the queries; with Sq != Sk the product raises, as the kernel's;
* the row max not reduced across the threads of a row: thread t owns keys t, t + L, t + 2L, ... and subtracts the
  max of its own keys; the sum is over every key, so each key's weight is off by exp(row max - its lane's max);
* split-KV (flash-decoding): each split of ``split`` keys gives its normalised output o_i and its log-sum-exp l_i,
  merged as sum_i w_i o_i / sum_i w_i with w_i = exp(l_i - max l); the mistake is in the base of w_i (natural-log
  LSEs merged with exp2, ``2**(l_i - max l)``; base-2 LSEs merged with exp) or in leaving it out (partials
  averaged), or in trusting every partial: a split with no kept key has the output 0/0 = NaN, and its weight 0
  times NaN poisons the row. The splits are of ``split`` keys, or ``splits`` of ceil(Sk / splits) keys each. With
  one split (Sk <= split) every form is right.
"""
from __future__ import annotations

import math

import numpy as np

from .bug_model import BugModel, Variant, _kw, _named
from .scores_parts import _parts, _softmax

__all__ = ["ROWS", "exp_missing", "matrix_sum", "split_merge", "lane_max", "query_renormalised", "map_transposed",
           "MERGES"]

# the merge weight's exponent per unit of (l_i - max l): e**(factor * (l_i - max l))
MERGES = {"natural-log LSEs merged in base 2: 2**(lse - max)": math.log(2.0),
          "base-2 LSEs merged in base e: exp(lse2 - max)": 1.0 / math.log(2.0),
          "partials averaged (no weights)": 0.0}
EMPTY = "every partial trusted: an empty split's 0/0 output, weight 0, gives NaN"


def matrix_sum(q, k, v, *, row_max=True, **kw):
    """exp(S - max) over the kept keys divided by its sum over the whole (Sq, Sk) matrix of each head; ``row_max``:
    each row's max subtracted (else one max for the matrix)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True) if row_max else s.max(axis=(-2, -1), keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=(-2, -1), keepdims=True)
    return (e / np.where(z == 0, 1.0, z)) @ v


def exp_missing(q, k, v, **kw):
    """The max-shifted kept scores S - max divided by their sum, with no exp (each S - max <= 0, so weights >= 0 and
    the max key's 0; a row whose shifted scores sum to 0, one kept key or all equal, zeros)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    w = np.where(keep, s - np.where(np.isfinite(m), m, 0.0), 0.0)
    z = w.sum(axis=-1, keepdims=True)
    return (w / np.where(z == 0, 1.0, z)) @ v


def query_renormalised(q, k, v, *, eps=1e-9, **kw):
    """The right row softmax W (rows with no key zero), then W / (eps + its sum over the queries): each key's column
    of a head sums to (nearly) 1 over the queries. ``eps`` 0: a key no query weighs gives 0/0 = NaN."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    w = _softmax(s, keep)                                                # (B..., Sq, Sk), rows with no key 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w / (eps + w.sum(axis=-2, keepdims=True))) @ v


def map_transposed(q, k, v, *, over="keys", keep_transposed=False, **kw):
    """O = P^T @ v with P the softmax of the kept scores over ``over`` ("keys": the right weights; "queries");
    ``keep_transposed``: the keep-mask read as (Sk, Sq) too (a key-major kernel transposes its mask to its layout)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    if s.shape[-1] != s.shape[-2]:
        raise ValueError(f"the map applied transposed needs Sq == Sk, got scores {s.shape}")   # as the kernel's
    keep = np.broadcast_to(keep, s.shape)
    p = _softmax(s, np.swapaxes(keep, -1, -2) if keep_transposed else keep, axis=-1 if over == "keys" else -2)
    return np.swapaxes(p, -1, -2) @ v


def lane_max(q, k, v, *, lanes=32, **kw):
    """exp(S - the max of the key's lane), lanes of keys j = t (mod ``lanes``), over the sum of every kept key. With
    Sk <= lanes every key is its lane's max: uniform weights over the kept keys (as a scale of 0 gives), so only
    a warp's 32 or 64 lanes are variants: a run's failing cases with more keys tell them from uniform weights."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    Sk = s.shape[-1]
    lane = np.arange(Sk) % lanes
    m = np.empty_like(s)
    for t in range(min(lanes, Sk)):
        m[..., lane == t] = s[..., lane == t].max(axis=-1, keepdims=True)
    e = np.where(keep, np.exp(s - np.where(np.isfinite(m), m, 0.0)), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    return (e / np.where(z == 0, 1.0, z)) @ v


def split_merge(q, k, v, *, split=64, splits=None, merge=next(iter(MERGES)), **kw):
    """Split-KV over key splits of ``split`` (or ``splits`` splits): each split's output normalised by its own sum,
    merged with the weights of ``merge`` (a key of :data:`MERGES`); a split with no kept key weighs 0 (its 0/0
    output kept, NaN, for the "empty split" merge), a row with none gives zeros."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    split = split if splits is None else -(-s.shape[-1] // splits)
    outs, lses = [], []
    for a in range(0, s.shape[-1], split):
        part = s[..., a:a + split]                                       # (B..., Sq, split)
        m = part.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(part - m)
        z = e.sum(axis=-1, keepdims=True)                                # (B..., Sq, 1)
        with np.errstate(invalid="ignore"):
            outs.append((e / np.where(z == 0, np.nan if merge == EMPTY else 1.0, z)) @ v[..., a:a + split, :])
        with np.errstate(divide="ignore"):
            lses.append(np.where(z > 0, np.log(z) + m, -np.inf))
    lse = np.stack(lses)                                                 # (splits, B..., Sq, 1)
    top = lse.max(axis=0)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore"):
        w = np.where(np.isneginf(lse), 0.0, np.exp(MERGES.get(merge, 1.0) * (lse - top)))
    den = w.sum(axis=0)
    with np.errstate(invalid="ignore"):
        num = sum(w[i] * outs[i] for i in range(len(outs)))
        return np.where(den > 0, num / np.where(den == 0, 1.0, den), 0.0)


ROWS = (
    BugModel("softmax-exp-missing", "the weights are the max-shifted scores divided by their sum, with no exp (not a "
             "softmax: the max key weighted 0)",
             (Variant("(S - max) / sum(S - max) over the kept keys", exp_missing),)),
    BugModel("max-not-reduced", "the row max is not reduced across the threads of a row: each key's score is offset "
             "by the max of the keys its thread owns (keys t, t + L, ...), the sum taken over every key",
             tuple(Variant(f"lanes of {n} (a key's thread: j mod {n})", _named(lane_max, lanes=n))
                   for n in (32, 64))),
    BugModel("softmax-sum-extent", "the softmax's denominator is summed over the whole (Sq, Sk) matrix of a head, not "
             "over each row's keys",
             (Variant("each row's max, the sum over the matrix", _named(matrix_sum, row_max=True)),
              Variant("one max and one sum over the matrix", _named(matrix_sum, row_max=False)))),
    BugModel("renormalised-over-queries", "the row softmax's weights are divided again by their sum over the query "
             "axis (each key's column normalised over the queries)",
             (Variant("W / (1e-9 + W.sum over queries)", _named(query_renormalised, eps=1e-9)),
              Variant("W / W.sum over queries (a key no query weighs: 0/0 = NaN)",
                      _named(query_renormalised, eps=0.0)))),
    BugModel("map-transposed", "the attention map is applied transposed, O = P^T V (with Sq != Sk the product "
             "raises)", (Variant("the row softmax P transposed (the map read as (Sk, Sq))", map_transposed),
                         Variant("q and k swapped in the scores, S laid out (Sk, Sq): the softmax over the queries, "
                                 "transposed", _named(map_transposed, over="queries")),
                         Variant("q and k swapped in the scores of a key-major kernel: its mask read as (Sk, Sq) "
                                 "too", _named(map_transposed, over="queries", keep_transposed=True)))),
    BugModel("split-merge", "split-KV partial outputs are merged wrong (each split's output is right; their weights "
             "are not exp(lse_i - max lse), or an empty split's 0/0 output is merged in)",
             tuple(Variant(f"{label}, splits of {n} keys", _named(split_merge, split=n, merge=label))
                   for label in MERGES for n in (16, 32, 64, 128, 256))
             + tuple(Variant(f"{EMPTY}, splits of {n} keys", _named(split_merge, split=n, merge=EMPTY))
                     for n in (16, 32, 64, 128))                 # (one split of 256: NaN rows with no key, no more)
             + tuple(Variant(f"{EMPTY}, {n} splits", _named(split_merge, splits=n, merge=EMPTY)) for n in (2, 3, 4))),
)
