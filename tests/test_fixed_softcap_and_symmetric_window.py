"""Forward mistakes of the softcap's value, the query positions' offset and a causal window's shape, in
flash_attn_func's API: torch kernels written here (one sequence at a time, FlashAttention's bottom-right band), each
with one mistake, over the quick suite. A softcap asked for but a hard-coded cap used (30, Grok-1's; 50, Gemma 2's)
is named ``softcap`` with that cap; query positions offset by Sq - Sk or by |Sk - Sq| where Sk - Sq is meant (band
and ALiBi) are named ``causal-alignment`` with that form; a causal sliding window (left, 0) turned into the
symmetric window (left + 1, left + 1) is named ``window-bounds`` with the edges fitted; the kernel without a mistake
conforms with no line."""
import math

import numpy as np
import pytest
import torch

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import run_one
from refimpl.harness.targets.target import Target
from tests.support.quick_runs import STORE, forward_lines


def _rows(q, k, v, scale, causal, window, softcap, slopes, fixed_cap, symmetric, offset):
    """q (Sq, Hq, D), k (Sk, Hkv, D), v (Sk, Hkv, Dv) -> (Sq, Hq, Dv)."""
    Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[:2]
    diag = np.arange(Sq)[:, None] + {None: Sk - Sq, "negated": Sq - Sk, "abs": abs(Sk - Sq)}[offset]
    j = np.arange(Sk)[None, :]
    left, right = window
    if causal:
        right = 0
    if symmetric and causal and left >= 0:
        left = right = left + 1
    keep = np.ones((Sq, Sk), bool)
    if left >= 0:
        keep &= j >= diag - left
    if right >= 0:
        keep &= j <= diag + right
    out = np.zeros((Sq, Hq, v.shape[-1]))
    for h in range(Hq):
        kh = h // (Hq // Hkv)
        s = q[:, h] @ k[:, kh].T * (1 / math.sqrt(D) if scale is None else scale)
        if softcap > 0:
            cap = fixed_cap or softcap
            s = cap * np.tanh(s / cap)
        if slopes is not None:
            s = s - float(slopes[h]) * np.abs(diag - j)
        s = np.where(keep, s, -np.inf)
        live = keep.any(-1)
        m = np.where(live, s.max(-1, initial=-np.inf), 0.0)
        w = np.exp(s - m[:, None])
        out[live, h] = (w[live] / w[live].sum(-1, keepdims=True)) @ v[:, kh]
    return out


def flash_kernel(fixed_cap=None, symmetric=False, offset=None):
    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
        dt = q.dtype
        q, k, v = (t.double().numpy() for t in (q, k, v))                    # (B, S, H, D)
        slopes = None if alibi_slopes is None else alibi_slopes.double().numpy()
        out = np.stack([_rows(q[b], k[b], v[b], softmax_scale, causal, window_size, softcap,
                              None if slopes is None else (slopes if slopes.ndim == 1 else slopes[b]),
                              fixed_cap, symmetric, offset) for b in range(q.shape[0])])
        return torch.tensor(out).to(dt)
    return flash_attn_func


@pytest.mark.parametrize("cap", [30.0, 50.0])
def test_a_hard_coded_cap_is_named_softcap_with_that_cap(cap):
    lines = forward_lines(flash_kernel(fixed_cap=cap), api="flash-attn")
    assert len(lines) == 1 and ": softcap — " in lines[0], lines
    assert lines[0].endswith(f"({cap:g} * tanh(S / {cap:g}) (a fixed cap, the given one ignored))"), lines


def test_a_causal_window_made_symmetric_is_named_window_bounds_with_its_edges():
    lines = forward_lines(flash_kernel(symmetric=True), api="flash-attn")
    assert len(lines) == 1 and ": window-bounds — " in lines[0], lines
    assert "(left + 1, left + 1) under causal with a left window" in lines[0], lines


@pytest.mark.parametrize("offset, form", [("negated", "query positions i + (Sq - Sk): the bottom-right offset negated"),
                                          ("abs", "query positions i + |Sk - Sq|: the offset's absolute value")])
def test_query_positions_offset_the_wrong_way_are_named_causal_alignment_with_that_form(offset, form):
    lines = forward_lines(flash_kernel(offset=offset), api="flash-attn")
    assert len(lines) == 1 and ": causal-alignment — " in lines[0], lines
    assert form in lines[0], lines


def test_the_kernel_without_a_mistake_conforms():
    target = Target("k", flash_kernel(), api="flash-attn")
    specs = select(["softcap", "window", "causal", "alibi", "gqa"], "quick", ("float64", "float32"))
    statuses = {run_one(target, s, STORE).status for s in specs}
    assert Status.PASS in statuses and Status.FAIL not in statuses, statuses
