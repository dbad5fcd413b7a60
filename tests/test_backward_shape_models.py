"""Backward mistakes of shape and layout (refimpl.bugs_backward_shapes: dO or the gradients in another layout, a
gradient formed as its transpose and reshaped; verdicts/grad_placement's unsummed rule, the
flattened and size-1 softmax of refimpl.bugs_backward_forward): NumPy / torch backwards written here, each with one
such mistake, run through the grad rows of the quick suite; the diagnosis must name the model with that very form,
and the same kernel with the mistake undone must conform with no line."""
import math

import numpy as np
import pytest
import torch

from refimpl.harness.cases import Status
from tests.support.quick_runs import backward_lines


def _weights(q, k, mask, scale, *, axes=(-1,)):
    """softmax of the masked scores over ``axes`` (a line with no key: zeros), k's heads broadcast to q's."""
    s = (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
    if mask is not None:
        s = np.where(mask, s, -np.inf) if np.asarray(mask).dtype == bool else s + mask
    m = s.max(axis=axes, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=axes, keepdims=True)
    return np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)


def _expand(k, v, hq):
    g = hq // k.shape[-3]
    return np.repeat(k, g, axis=-3), np.repeat(v, g, axis=-3), g


def _fold(x, g):
    return x if g == 1 else x.reshape(x.shape[:-3] + (x.shape[-3] // g, g) + x.shape[-2:]).sum(-3)


def textbook(q, k, v, d_out, mask=None, scale=None, *, delta_keepdims=True, per_slice=False, unsummed=False,
             axes=(-1,), size1=False, view=None):
    """A NumPy backward that recomputes P; each keyword puts one mistake in it."""
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    ke, ve, g = _expand(k, v, q.shape[-3])
    p = _weights(q, ke, mask, scale, axes=axes)
    if size1:                                                   # softmax of each score alone
        p = (p > 0).astype(np.float64) if mask is not None else np.ones_like(p)
    o = p @ ve
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(ve, -1, -2)
    if per_slice:
        ds = np.empty_like(p)
        for idx in np.ndindex(*p.shape[:-2]):
            delta = (d_out[idx] * o[idx]).sum(axis=1)          # (Sq,): the kept axis lost
            ds[idx] = p[idx] * (dp[idx] - delta)
    else:
        ds = p * (dp - (d_out * o).sum(axis=-1, keepdims=delta_keepdims))
    dq, dk = s * ds @ ke, s * np.swapaxes(ds, -1, -2) @ q
    if view == "dk":                                            # Q^T dS, (D, Sk), reshaped to (Sk, D)
        dk = (s * np.swapaxes(q, -1, -2) @ ds).reshape(dk.shape)
    if view == "dv":                                            # dO^T P, (Dv, Sk), reshaped to (Sk, Dv)
        dv = (np.swapaxes(d_out, -1, -2) @ p).reshape(dv.shape)
    return (dq, dk, dv) if unsummed else (dq, _fold(dk, g), _fold(dv, g))


def torch_layout(q, k, v, d_out, mask=None, scale=None, *, read_do=True, grads_bshd=False):
    """torch autograd of attention; ``read_do``: dO's memory taken as (B, Sq, H, Dv) and permuted back (a kernel
    keeping O in that layout); ``grads_bshd``: the gradients formed (B, S, H, X) and reshaped to (B, H, S, X)."""
    qt, kt, vt = (torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (q, k, v))
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = s * qt @ kt.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~torch.as_tensor(np.asarray(mask)), float("-inf"))
    w = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    g = torch.tensor(np.asarray(d_out, np.float64))
    B, H, Sq, Dv = g.shape
    (w @ vt).backward(g.reshape(B, Sq, H, Dv).permute(0, 2, 1, 3) if read_do else g)
    out = [a.grad.numpy() for a in (qt, kt, vt)]
    if grads_bshd:
        out = [np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(x.shape) for x in out]
    return tuple(out)


def _named(lines, model, form):
    return any(f": {model} — " in line and form in line for line in lines)


def test_do_read_in_the_kept_outputs_layout_is_named_bwd_layout_with_the_read():
    statuses, lines = backward_lines(torch_layout, ["sizes", "batched-heads"])
    assert Status.FAIL in statuses and _named(lines, "bwd-layout", "dO's (B, Hq, Sq, Dv) memory read as"), lines
    assert not any("unknown" in line for line in lines), lines


def test_gradients_reshaped_from_bshd_are_named_bwd_layout_with_the_return():
    statuses, lines = backward_lines(lambda *a, **kw: torch_layout(*a, read_do=False, grads_bshd=True, **kw),
                                     ["batched-heads"])
    assert Status.FAIL in statuses and _named(lines, "bwd-layout", "reshaped, not transposed"), lines


@pytest.mark.parametrize("view,form", [("dk", "dK computed as Q^T dS, (D, Sk), and reshaped, not transposed"),
                                       ("dv", "dV computed as dO^T P, (Dv, Sk), and reshaped, not transposed")])
def test_a_gradient_formed_as_its_transpose_and_reshaped_is_named_bwd_layout_with_which(view, form):
    statuses, lines = backward_lines(lambda *a, **kw: textbook(*a, view=view, **kw), ["sizes", "gqa"])
    assert Status.FAIL in statuses and lines and all(_named([n], "bwd-layout", form) for n in lines), lines


@pytest.mark.parametrize("per_slice,form", [(False, "without keepdims"), (True, "of a (batch, head) slice")])
def test_delta_without_its_kept_axis_is_named_bwd_delta_axis_with_its_broadcast(per_slice, form):
    statuses, lines = backward_lines(lambda *a, **kw: textbook(*a, delta_keepdims=False, per_slice=per_slice, **kw),
                                     ["causal", "window"])
    named = [line for line in lines if "unknown" not in line]
    assert Status.FAIL in statuses and named and all(_named([n], "bwd-delta-axis", form) for n in named), lines


def test_dk_dv_returned_per_query_head_are_named_bwd_gqa_sum_unsummed():
    statuses, lines = backward_lines(lambda *a, **kw: textbook(*a, unsummed=True, **kw), ["gqa"])
    assert Status.FAIL in statuses and lines == [line for line in lines if "returned per query head" in line], lines
    assert _named(lines, "bwd-gqa-sum", "where the sum over each group of"), lines


@pytest.mark.parametrize("kw,form", [({"axes": (-3, -2, -1)}, "heads, queries and keys at once"),
                                     ({"size1": True}, "size-1 axis")])
def test_a_softmax_over_the_wrong_axes_in_the_recompute_is_named_with_its_axes(kw, form):
    statuses, lines = backward_lines(lambda *a, **k: textbook(*a, **kw, **k), ["sizes", "batched-heads"])
    assert Status.FAIL in statuses and lines and all(_named([n], "bwd-forward-mistake", form) for n in lines), lines


@pytest.mark.parametrize("fn", [textbook, lambda *a, **kw: torch_layout(*a, read_do=False, **kw)],
                         ids=["numpy", "torch"])
def test_the_same_kernels_without_their_mistake_conform_with_no_line(fn):
    statuses, lines = backward_lines(fn, ["sizes", "batched-heads", "causal"] + (["gqa"] if fn is textbook else []))
    assert set(statuses) == {Status.PASS} and lines == [], (statuses, lines)


def _unmasked_guarded(q, k, v, d_out, mask=None, scale=None):
    """The backward of the forward without its mask (P and O recomputed unmasked), a row the mask keeps no key of
    zeroed by a has-key guard: its dO never reaches a gradient (tests/heldout22's bwd_scores_not_masked)."""
    if mask is None:
        return textbook(q, k, v, d_out, None, scale)
    keep = np.asarray(mask) if np.asarray(mask).dtype == bool else np.isfinite(mask)
    live = np.broadcast_to(keep, q.shape[:-1] + (k.shape[-2],)).any(axis=-1, keepdims=True)   # (B, Hq, Sq, 1)
    return textbook(q, k, v, np.where(live, d_out, 0.0), None, scale)


def test_the_unmasked_forwards_gradient_behind_a_has_key_guard_is_named_bwd_mask_not_reapplied():
    # bool-mask's cases have no row without a key: the three forms agree there and the line lists them; the
    # masked-rows family's tell the guard apart
    statuses, lines = backward_lines(_unmasked_guarded, ["bool-mask", "masked-rows"])
    form = "P and O without the mask, a row with no key zeroed (a has-key guard))"
    assert Status.FAIL in statuses and len(lines) == 2 and all(_named([n], "bwd-mask-not-reapplied", form)
                                                               for n in lines), lines
    assert lines[1].endswith(f"gradients ({form}"), lines
