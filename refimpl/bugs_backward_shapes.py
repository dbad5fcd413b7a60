"""Backward bug models of shape and layout: the textbook steps run on an array read in the wrong shape.

Each takes refimpl's inputs and keywords plus the upstream gradient and returns ``(dq, dk, dv)`` like
:mod:`refimpl.bugs_backward`'s models (q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv), d_out (B, Hq, Sq, Dv),
float64). Two families:

    layout_backward   the right backward of dO read in another memory layout: a kernel that keeps O in its
                      (B, Sq, Hq, Dv) storage reads the (B, Hq, Sq, Dv) dO it is handed with O's shape,
                      dO' = reshape(dO, (B, Sq, Hq, Dv)) transposed to (B, Hq, Sq, Dv) ("do"); or the inverse
                      ("do-inverse"); or the right gradients computed in (B, S, H, D) and returned reshaped, not
                      transposed, to (B, H, S, D) ("grads"). With one head, or one query, the layouts agree:
                      nothing to see.
    delta_backward    the softmax Jacobian's delta = rowsum(dO * O) of shape (B, Hq, Sq) used without its kept
                      axis: ``P * (dP - delta)`` broadcast by NumPy's trailing-axis rule ("no-keepdims": with one
                      batch and one head, delta[j] at (i, j); elsewhere whatever the rule gives, and a shape the
                      kernel cannot have raises), or per (batch, head) slice, delta (Sq,) against (Sq, Sk)
                      ("keys": delta[j] at (i, j), square cases; one query broadcasts right; elsewhere Sq != Sk
                      raises as the slice's broadcast does).

Where the mistake gives an array of another shape the model raises: the kernel's own shape handling after it
(a sum to k's shape, a reshape) is not reproduced: the backward diagnosis fits the failing cases that kept every
gradient's shape and says how many it left out (harness/verdicts/grad_judge.py).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import numpy as np

from .bug_model import BugModel, Variant, _kw

__all__ = ["DELTA_FORMS", "LAYOUTS", "delta_backward", "layout_backward", "shape_models"]

LAYOUTS = ("do", "do-inverse", "grads", "dk-view", "dv-view")
DELTA_FORMS = ("no-keepdims", "keys")


def _bhsd(name: str, a: np.ndarray) -> None:
    if a.ndim != 4:
        raise ValueError(f"{name} must be (B, H, S, X) for a layout mistake, got shape {a.shape}")


def layout_backward(q, k, v, d_out, *, layout: str, forward: Callable, **kw):
    """``(dq, dk, dv)``: the backward with dO, or the gradients, in the wrong layout (``LAYOUTS``); ``forward``:
    refimpl.scaled_dot_product_attention (passed in, so that this module stands below it)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    g = np.asarray(d_out, np.float64)
    _bhsd("d_out", g)
    B, Hq, Sq, Dv = g.shape
    if layout == "do":                                   # dO's memory read as (B, Sq, Hq, Dv), then transposed
        g = np.swapaxes(g.reshape(B, Sq, Hq, Dv), 1, 2)
    elif layout == "do-inverse":                         # dO transposed to (B, Sq, Hq, Dv), its memory read as BHSD
        g = np.ascontiguousarray(np.swapaxes(g, 1, 2)).reshape(B, Hq, Sq, Dv)
    grads = _textbook(q, k, v, g, "kept", _kw(kw), forward)          # the right backward, on dO as read
    if layout in ("dk-view", "dv-view"):                 # dK (dV) formed as its transpose, (X, Sk), then reshaped
        i = 1 if layout == "dk-view" else 2
        x = grads[i]
        return tuple(np.ascontiguousarray(np.swapaxes(x, -1, -2)).reshape(x.shape) if j == i else grads[j]
                     for j in range(3))
    if layout != "grads":
        return grads
    # each gradient computed as (B, S, H, X) and reshaped (not transposed) to (B, H, S, X)
    return tuple(np.ascontiguousarray(np.swapaxes(x, 1, 2)).reshape(x.shape) for x in grads)


def delta_backward(q, k, v, d_out, *, form: str, forward: Callable, **kw):
    """``(dq, dk, dv)`` with delta = rowsum(dO * O) broadcast without its kept axis (``DELTA_FORMS``); ``forward``:
    refimpl.scaled_dot_product_attention."""
    if form not in DELTA_FORMS:
        raise ValueError(f"form must be one of {DELTA_FORMS}, got {form!r}")
    return _textbook(q, k, v, d_out, form, _kw(kw), forward)


def _textbook(q, k, v, d_out, delta_form: str, kw: dict, forward: Callable):
    """The textbook backward (refimpl.bugs_backward's docstring) with delta kept (``delta_form`` "kept") or in one
    of ``DELTA_FORMS``, in float64; dK, dV summed over each kv head's query heads."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    Sq, Sk = q.shape[-2], k.shape[-2]
    s = 1.0 / math.sqrt(q.shape[-1]) if kw["scale"] is None else float(kw["scale"])
    o, p = forward(q, k, v, **kw)                                        # (B, Hq, Sq, Dv), (B, Hq, Sq, Sk)
    group = q.shape[-3] // k.shape[-3] if kw["enable_gqa"] else 1
    ke, ve = (np.repeat(a, group, axis=-3) for a in (k, v))              # (B, Hq, Sk, D), (B, Hq, Sk, Dv)
    with np.errstate(all="ignore"):
        dv = np.swapaxes(p, -1, -2) @ g                                   # (.., Sk, Sq) x (.., Sq, Dv) -> (.., Sk, Dv)
        dp = g @ np.swapaxes(ve, -1, -2)                                  # (.., Sq, Dv) x (.., Dv, Sk) -> (.., Sq, Sk)
        delta = np.sum(g * o, axis=-1, keepdims=delta_form == "kept")     # (B, Hq, Sq, 1), or (B, Hq, Sq)
        if delta_form == "keys" and Sq not in (1, Sk):                    # one query: delta[0] broadcasts right
            raise ValueError(f"delta (Sq,) against (Sq, Sk) needs Sq == Sk, got Sq={Sq}, Sk={Sk} (a shape error, "
                             f"as the mistake gives)")
        ds = p * (dp - (delta[..., None, :] if delta_form == "keys" else delta))
        if ds.shape != p.shape:
            raise ValueError(f"delta {delta.shape} broadcast against dP {dp.shape} gives {ds.shape}: the kernel's "
                             f"gradients have another shape")
        if kw["softcap"] is not None:
            r = s * (q @ np.swapaxes(ke, -1, -2))                         # (B, Hq, Sq, Sk)
            ds = ds * (1.0 - np.tanh(r / kw["softcap"]) ** 2)
        dq = s * (ds @ ke)                                                # (.., Sq, Sk) x (.., Sk, D) -> (.., Sq, D)
        dk = s * (np.swapaxes(ds, -1, -2) @ q)                            # (.., Sk, Sq) x (.., Sq, D) -> (.., Sk, D)

    def to_kv(x):                                                         # (B, Hq, Sk, X) -> (B, Hkv, Sk, X): sum
        return x if group == 1 else x.reshape(x.shape[:-3] + (x.shape[-3] // group, group) + x.shape[-2:]).sum(-3)
    return dq, to_kv(dk), to_kv(dv)


def shape_models(forward: Callable) -> tuple[tuple[Variant, ...], BugModel]:
    """(``bwd-delta-axis``'s delta-shape variants, the ``bwd-layout`` model), their functions computing the forward
    with ``forward`` (refimpl.scaled_dot_product_attention)."""
    delta = tuple(Variant(label, partial(delta_backward, form=f, forward=forward)) for label, f in (
        ("delta (B, H, Sq) without keepdims, broadcast against (B, H, Sq, Sk) by the trailing axes", "no-keepdims"),
        ("delta (Sq,) of a (batch, head) slice against its (Sq, Sk): delta[j] at (i, j)", "keys")))
    layout = BugModel(
        "bwd-layout",
        "the backward reads dO, or returns its gradients, in another memory layout: a reshape where a transpose "
        "was meant ((B, S, H, D) storage read as (B, H, S, D) or the reverse, right with one head; or a gradient "
        "formed as its transpose)",
        tuple(Variant(label, partial(layout_backward, layout=w, forward=forward)) for label, w in (
            ("dO's (B, Hq, Sq, Dv) memory read as (B, Sq, Hq, Dv) (the layout of the kept O), then transposed", "do"),
            ("dO transposed to (B, Sq, Hq, Dv) and its memory read as (B, Hq, Sq, Dv)", "do-inverse"),
            ("the gradients computed as (B, S, H, X) and reshaped, not transposed, to (B, H, S, X)", "grads"),
            ("dK computed as Q^T dS, (D, Sk), and reshaped, not transposed, to (Sk, D)", "dk-view"),
            ("dV computed as dO^T P, (Dv, Sk), and reshaped, not transposed, to (Sk, Dv)", "dv-view"))))
    return delta, layout
