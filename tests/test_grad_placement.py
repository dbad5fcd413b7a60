"""``bwd-gqa-sum`` fitted (refimpl/harness/verdicts/grad_placement.py): a backward whose dK of each (batch, kv head)
block holds one query head's contribution, not its group's sum, is named with the block each came from; built here
with two wrong reductions, each reading the contributions off a right backward written out in NumPy."""
import math
import re

import numpy as np

from refimpl.harness.cases import Status
from tests.support.quick_runs import backward_lines

FAMILIES = ["batched-heads", "gqa", "sizes"]


def _per_query_head(q, k, v, d_out, mask, scale):
    """(dq, dk_h, dv) with dk_h (B, Hq, Sk, D): each query head's own contribution s dS_h^T Q_h (K/V expanded)."""
    G = q.shape[-3] // k.shape[-3]
    ke, ve = np.repeat(k, G, axis=-3), np.repeat(v, G, axis=-3)
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    z = s * q @ np.swapaxes(ke, -1, -2)
    if mask is not None:
        z = np.where(mask, z, -np.inf) if np.asarray(mask).dtype == bool else z + mask
    m = z.max(axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(m), m, 0.0))
    d = e.sum(axis=-1, keepdims=True)
    p = e / np.where(d == 0, 1.0, d)
    o = p @ ve
    ds = p * (d_out @ np.swapaxes(ve, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
    dv = np.swapaxes(p, -1, -2) @ d_out
    dv = dv.reshape(dv.shape[:-3] + (k.shape[-3], G) + dv.shape[-2:]).sum(axis=-3)
    return s * ds @ ke, s * np.swapaxes(ds, -1, -2) @ q, dv


def _buffer_of_query_heads(q, k, v, d_out, mask=None, scale=None):
    """dK accumulated in a (B * Hq) buffer at b * Hq + h, read back as its first B * Hkv blocks."""
    dq, dkh, dv = _per_query_head(q, k, v, d_out, mask, scale)
    B, Hq = dkh.shape[0], dkh.shape[1]
    dk = dkh.reshape(B * Hq, *dkh.shape[2:])[:B * k.shape[1]].reshape(k.shape)
    return dq, dk, dv


def _first_of_group(q, k, v, d_out, mask=None, scale=None):
    """dK of kv head c from its group's first query head alone: a form of the table's ``bwd-gqa-sum``."""
    dq, dkh, dv = _per_query_head(q, k, v, d_out, mask, scale)
    return dq, dkh[:, ::q.shape[1] // k.shape[1]].copy(), dv


def _lines(fn):
    return backward_lines(fn, FAMILIES)


def test_the_query_head_each_dk_block_came_from_is_fitted():
    statuses, lines = _lines(_buffer_of_query_heads)
    assert Status.FAIL in statuses
    assert len(lines) == 1 and ": bwd-gqa-sum — " in lines[0], lines
    B, Hq, Hkv = map(int, re.search(r"fitted on B=(\d+), Hq=(\d+), Hkv=(\d+)", lines[0]).groups())
    dk = re.search(r"dK \(batch, kv head\) <- (.*); dV <- (.*)$", lines[0])
    for b in range(B):
        for c in range(Hkv):
            want = divmod(b * Hkv + c, Hq)          # the (b, h) of buffer slot b * Hkv + c
            said = "the group sum" if Hq // Hkv == 1 else f"query head ({want[0]}, {want[1]})"
            assert f"({b}, {c}) {said}" in dk.group(1), lines[0]
    assert set(re.findall(r"\(\d+, \d+\) (the group sum|query head|zeros)", dk.group(2))) == {"the group sum"}


def test_a_form_of_the_table_keeps_the_tables_name_and_words():
    statuses, lines = _lines(_first_of_group)
    assert Status.FAIL in statuses
    assert len(lines) == 1 and ": bwd-gqa-sum — GQA: the gradient of a key/value head" in lines[0], lines
    assert "fitted on" not in lines[0], lines
