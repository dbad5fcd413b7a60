"""Backwards that recompute the weights wrong, written here in NumPy with one mistake each, are named by the model
and the variant of that mistake (refimpl/bugs_backward_forward.py): the LSE rows of the first (batch, head) read
by every one (a flat LSE buffer's pointer never advanced) or batch 0's by every batch, the row exponentials
divided by one sum over the whole tensor (a ``sum()`` without its axis), the scale applied after the softmax.

Each kernel is the textbook backward (dV = P^T dO, dP = dO V^T, dS = P (dP - delta), dQ = s dS K, dK = s dS^T Q)
with its P, O and delta written out here from the case's inputs; the right P gives the right gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest

from refimpl.harness.cases import Status
from tests.support.quick_runs import backward_lines

FAMILIES = ["sizes", "batched-heads", "bool-mask", "causal", "masked-rows"]


def _backward(q, k, v, d_out, mask=None, scale=None, *, mistake="none"):
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    raw = q @ np.swapaxes(k, -1, -2)                                    # (B, H, Sq, Sk), k broadcast over heads
    keep = np.ones(raw.shape, bool)
    add = np.zeros(raw.shape)
    if mask is not None and np.asarray(mask).dtype == bool:
        keep = keep & np.asarray(mask)
    elif mask is not None:
        m = np.asarray(mask, np.float64)
        keep, add = keep & np.isfinite(m), add + np.where(np.isfinite(m), m, 0.0)
    scores = np.where(keep, s * raw + add, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = scores.max(-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(scores - top)
        z = e.sum(-1, keepdims=True)
        lse = np.where(z > 0, top + np.log(np.where(z > 0, z, 1.0)), np.inf)    # +inf: a row with no key
        p = np.exp(scores - lse)                                                  # the right weights
        o_right = p @ v
        if mistake == "lse-first-head":
            p = np.exp(scores - lse[:1, :1])
        elif mistake == "lse-first-batch":
            p = np.exp(scores - lse[:1])
        elif mistake == "all-rowmax":
            p = e / (e.sum() or 1.0)                                             # (a case with no key at all: 0)
        elif mistake == "scale-after":
            u = np.where(keep, raw + add, -np.inf)
            ut = u.max(-1, keepdims=True)
            eu = np.exp(u - np.where(np.isfinite(ut), ut, 0.0))
            zu = eu.sum(-1, keepdims=True)
            p = s * eu / np.where(zu > 0, zu, 1.0)
    o = o_right if mistake.startswith("lse-") else p @ v
    dv = np.swapaxes(p, -1, -2) @ g
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - np.sum(g * o, axis=-1, keepdims=True))
    dq, dk = s * ds @ k, s * np.swapaxes(ds, -1, -2) @ q
    return dq, dk.sum(axis=-3, keepdims=True) if k.shape[-3] == 1 else dk, \
        dv.sum(axis=-3, keepdims=True) if v.shape[-3] == 1 else dv


def test_the_textbook_backward_written_here_conforms():
    statuses, lines = backward_lines(_backward, FAMILIES)
    assert set(statuses) == {Status.PASS} and not lines, lines


@pytest.mark.parametrize("mistake, model, label", [
    ("lse-first-head", "bwd-recompute", "every (batch, head) reads the first's LSE rows"),
    ("lse-first-batch", "bwd-recompute", "every batch reads batch 0's LSE rows of its head"),
    ("all-rowmax", "bwd-forward-mistake", "each row's exp(S - max) over one sum across the whole (B, H, Sq, Sk)"),
    ("scale-after", "bwd-forward-mistake", "the scale applied after the softmax: s * softmax(q k^T)"),
])
def test_a_backward_recomputing_its_weights_wrong_is_named_with_the_mistake(mistake, model, label):
    statuses, lines = backward_lines(lambda *a, **kw: _backward(*a, **kw, mistake=mistake), FAMILIES)
    assert Status.FAIL in statuses
    assert lines and all(f": {model} — " in line and label in line for line in lines), lines   # a line per family
