"""Bug models of the output's layout: attention computed right and its (B, Hq, Sq, Dv) result laid out wrong, a
buffer of one layout read as another (a reshape without its permute, heads regrouped in the other order). Same
calling convention as :mod:`refimpl.bugs`; the output of position (b, h, i) is the reference's at pi(b, h, i),
with pi one of:

* "heads as positions": the (B, Hq, Sq, Dv) buffer read as (B, Sq, Hq, Dv) (merging heads without the permute,
  (B, Hq, Sq, Dv) -> (B, Sq, Hq * Dv));
* "positions as heads": the (B, Sq, Hq, Dv) buffer read as (B, Hq, Sq, Dv) (the permute skipped on the way in);
* "GQA heads (G, Hkv)": query head kv * G + g written at g * Hkv + kv (a grouped einsum's (Hkv, G) axes flattened
  in the other order), and its inverse;
* "batch and heads swapped": the flattened (B * Hq) rows read as (Hq, B), and its inverse;
* "rows and channels": each head's (Dv, Sq) buffer (O computed channel-major, O^T) read as (Sq, Dv) (a reshape
  where a transpose was meant), and its inverse.

Refimpl's output with no layout change where the case has no head axis (or one head and one batch; the rows and
channels move with one row or one channel too).

And the inputs laid out wrong (:func:`input_layout`): q, k and v, each a (B, S, H, D) buffer read as (B, H, S, D)
(heads split with a reshape instead of a transpose), or the other way round; attention is then right on those.
"""
from __future__ import annotations

import numpy as np

from .attention import scaled_dot_product_attention

__all__ = ["output_layout", "input_layout", "LAYOUTS", "INPUT_LAYOUTS"]

LAYOUTS = ("heads as positions", "positions as heads", "GQA heads (G, Hkv)", "GQA heads (G, Hkv), inverse",
           "batch and heads swapped", "batch and heads swapped, inverse", "rows and channels (Dv, Sq) read as (Sq, Dv)",
           "rows and channels (Sq, Dv) read as (Dv, Sq)")


def output_layout(q, k, v, *, layout="heads as positions", **kw):
    """Refimpl's output (B, Hq, Sq, Dv) with its elements moved by ``layout`` (one of ``LAYOUTS``)."""
    o = scaled_dot_product_attention(q, k, v, **kw)[0]
    if o.ndim != 4:
        return o
    B, Hq, Sq, Dv = o.shape
    Hkv = np.shape(k)[-3] if kw.get("enable_gqa") else Hq
    G = Hq // Hkv
    if layout == "heads as positions":
        return o.reshape(B, Sq, Hq, Dv).swapaxes(1, 2)
    if layout == "positions as heads":
        return o.swapaxes(1, 2).reshape(B, Hq, Sq, Dv)
    if layout == "GQA heads (G, Hkv)":           # position g * Hkv + kv holds query head kv * G + g
        return o.reshape(B, Hkv, G, Sq, Dv).swapaxes(1, 2).reshape(B, Hq, Sq, Dv)
    if layout == "GQA heads (G, Hkv), inverse":
        return o.reshape(B, G, Hkv, Sq, Dv).swapaxes(1, 2).reshape(B, Hq, Sq, Dv)
    if layout == "batch and heads swapped":      # the flat row b * Hq + h read as (h', b') of (Hq, B)
        return o.reshape(Hq, B, Sq, Dv).swapaxes(0, 1)
    if layout == "batch and heads swapped, inverse":
        return o.swapaxes(0, 1).reshape(B, Hq, Sq, Dv)
    if layout == LAYOUTS[6]:                     # O^T's flat (Dv, Sq) memory read as (Sq, Dv)
        return o.swapaxes(2, 3).reshape(B, Hq, Sq, Dv)
    if layout == LAYOUTS[7]:                     # O's flat (Sq, Dv) memory read as (Dv, Sq), then transposed
        return o.reshape(B, Hq, Dv, Sq).swapaxes(2, 3)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


INPUT_LAYOUTS = ("inputs (B, S, H, D) read as (B, H, S, D)", "inputs (B, H, S, D) read as (B, S, H, D)")


def input_layout(q, k, v, *, layout=INPUT_LAYOUTS[0], **kw):
    """Refimpl's attention of q, k and v each read through the wrong layout (``layout``, one of ``INPUT_LAYOUTS``);
    the output comes back the right way."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    if q.ndim != 4:
        return scaled_dot_product_attention(q, k, v, **kw)[0]
    if layout == INPUT_LAYOUTS[0]:                 # the (B, S, H, D) buffer of x reshaped to (B, H, S, D)
        q, k, v = (a.swapaxes(1, 2).reshape(a.shape) for a in (q, k, v))
    elif layout == INPUT_LAYOUTS[1]:
        q, k, v = (a.reshape(a.shape[0], a.shape[2], a.shape[1], a.shape[3]).swapaxes(1, 2) for a in (q, k, v))
    else:
        raise ValueError(f"layout must be one of {INPUT_LAYOUTS}, got {layout!r}")
    return scaled_dot_product_attention(q, k, v, **kw)[0]
