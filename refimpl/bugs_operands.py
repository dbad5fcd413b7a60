"""Bug models of the operands: one input read in place of another, the scores summed over the first channels of
the head dimension only, the key loop bounded by the query length. Same calling convention as :mod:`refimpl.bugs`
(refimpl's inputs and keywords in, the output (B..., Sq, Dv) out); the rows of the bug-model table they make are
``ROWS``.

* one operand read for another (a copy-paste slip: ``key = query``, ``value = key``): the keys are the queries
  (S = Q Q^T: Sq == Sk, the queries' Hq heads; one query's one score broadcast over the keys), the keys are the
  values (S = Q V^T: D == Dv), the values are the keys or the queries (Sq == Sk; the output D wide); every other
  input and step right (GQA's keys and values expanded to the query heads first). Where the shapes do not allow
  it the model raises, as the kernel does;
* the scores summed over the first ``c`` channels of q and k only (a launch or tile width capped at ``c`` while
  the head dimension is larger), scaled by the full D's scale: S = scale * q[..., :c] k[..., :c]^T; c in 16, 32,
  64. With D <= c it is the right output;
* Q staged flat into a scratch of rows ``w`` wide (w = 32, 64, 128; a buffer sized for the largest head dim):
  row r of the flattened queries reads Q's flat elements w r .. w r + D, zeros past the end;
* the key loop bounded by the query length (``for j in range(0, Sq, Bc)``): the keys visited are the first
  min(Sk, ceil(Sq / Bc) * Bc), Bc in 1 (exactly Sq), 16, 32, 64, 128; a row left with no visited key gets zeros.
  With Sk <= Sq it is the right output.
"""
from __future__ import annotations

import math

import numpy as np

from .attention import scaled_dot_product_attention
from .bug_model import BugModel, Variant, _kw, _named
from .scores_parts import _parts, _softmax

__all__ = ["ROWS", "operand_swapped", "channels_truncated", "query_row_stride", "keys_bounded_by_queries",
           "OPERANDS"]

# what is read in place of what: (the operand replaced, the one read instead)
OPERANDS = {"the keys are the queries (S = Q Q^T)": ("k", "q"),
            "the keys are the values (S = Q V^T)": ("k", "v"),
            "the values are the keys (O = P K)": ("v", "k"),
            "the values are the queries (O = P Q)": ("v", "q")}


def operand_swapped(q, k, v, *, swap=("k", "q"), **kw):
    """refimpl's output with the operand ``swap[0]`` replaced by ``swap[1]``, the keys and values first expanded to
    the query heads (GQA: query head h reads kv head h // group); raises where the shapes do not allow it."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    group = q.shape[-3] // k.shape[-3] if q.ndim >= 3 and k.ndim >= 3 else 1
    ops = {"q": q, "k": np.repeat(k, group, axis=-3), "v": np.repeat(v, group, axis=-3)}
    into, source = swap
    new = ops[source]
    if (into, source) == ("k", "q") and q.shape[-2] == 1:     # one query's (1, 1) score broadcast over the keys (the
        new = np.repeat(q, k.shape[-2], axis=-2)              # mask's shape): every kept key weighs the same
    if new.shape[:-1] != ops[into].shape[:-1] or (into == "k" and new.shape[-1] != q.shape[-1]):
        raise ValueError(f"{source} cannot stand for {into}: shapes {new.shape} and {ops[into].shape}")
    ops[into] = new
    return scaled_dot_product_attention(ops["q"], ops["k"], ops["v"], **_kw(kw))[0]


def channels_truncated(q, k, v, *, channels=32, scale=None, **kw):
    """The scores of the first ``channels`` channels of q and k, times the scale of the full head dim D."""
    q, k = np.asarray(q), np.asarray(k)
    D = q.shape[-1]
    sc = 1.0 / math.sqrt(D) if scale is None else scale
    return scaled_dot_product_attention(q[..., :channels], k[..., :channels], v, **_kw(dict(kw, scale=sc)))[0]


def query_row_stride(q, k, v, *, width=64, **kw):
    """Q staged flat into a scratch of rows ``width`` wide (sized for head dims up to ``width``): row r of the
    flattened (B..., Sq) queries reads Q's flat elements width * r .. width * r + D (zeros past Q's end); the keys
    staged right. With D == width it is the right output; D > width raises, as the scratch cannot hold Q."""
    q = np.asarray(q)
    D = q.shape[-1]
    if D > width:
        raise ValueError(f"a head dim of {D} does not fit rows of {width}")
    flat = np.zeros(q.size // D * width, q.dtype)
    flat[:q.size] = q.reshape(-1)
    staged = flat.reshape(-1, width)[:, :D].reshape(q.shape)
    return scaled_dot_product_attention(staged, k, v, **_kw(kw))[0]


def keys_bounded_by_queries(q, k, v, *, block=1, **kw):
    """Only the first min(Sk, ceil(Sq / block) * block) keys visited (the key loop's bound the query length)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))                               # (B..., Sq, Sk)
    Sq, Sk = s.shape[-2:]
    keep = keep & (np.arange(Sk) < min(Sk, -(-Sq // block) * block))
    return _softmax(s, keep) @ v


ROWS = (
    BugModel("operand-swapped", "one input is read in place of another (a copy-paste slip: keys = queries, values = "
             "keys); every other step is right",
             tuple(Variant(label, _named(operand_swapped, swap=swap)) for label, swap in OPERANDS.items())),
    BugModel("channels-truncated", "the scores sum over the first channels of q and k only (a launch or tile width "
             "capped below the head dimension); the scale is the full D's",
             tuple(Variant(f"the first {c} of D channels (D > {c})", _named(channels_truncated, channels=c))
                   for c in (16, 32, 64))),
    BugModel("query-row-stride", "the queries are read with another row stride: Q staged flat into a scratch of rows "
             "sized for a larger head dimension, each query row reading the next rows' elements",
             tuple(Variant(f"rows of {w} (D <= {w})", _named(query_row_stride, width=w)) for w in (32, 64, 128))),
    BugModel("keys-bounded-by-queries", "the key loop is bounded by the query length: the keys past Sq (rounded up to "
             "the key block) are never visited",
             (Variant("keys j >= Sq never visited", _named(keys_bounded_by_queries, block=1)),)
             + tuple(Variant(f"keys past ceil(Sq / {b}) * {b} never visited (key blocks of {b})",
                             _named(keys_bounded_by_queries, block=b)) for b in (16, 32, 64, 128))),
)
