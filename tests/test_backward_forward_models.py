"""The backward of a wrong forward (refimpl.bugs_backward_forward): backward kernels written here as torch autograd
through a forward with one mistake of its own (a stale causal line, the keep-mask read as a drop-mask, the softmax
over the queries, another scale, GQA's heads interleaved) are run through the grad rows; the diagnosis must name
``bwd-forward-mistake`` (or ``bwd-scale``) with that very mistake, and the right forward's autograd must conform
with no diagnosis. The model functions are also checked against torch autograd directly, case by case."""
import math

import numpy as np
import pytest
import torch

from refimpl.bugs_backward_forward import forward_mistake, scale_backward
from refimpl.harness.cases import Status
from tests.support.quick_runs import backward_lines

FAMILIES = ["sizes", "bool-mask", "causal", "masked-rows"]


def _autograd(q, k, v, d_out, mask=None, scale=None, *, mistake=None, group=1):
    """(dq, dk, dv) of loss = sum(d_out * O) by torch autograd through a forward with ``mistake``: "causal" (a
    top-left causal line always applied), "inverted" (a bool keep-mask used as a drop-mask), "queries" (softmax over
    dim -2), "scale-1" / "scale-dv" (scale 1 / 1/sqrt(Dv) whatever ``scale``), "interleaved" (query head h reads
    kv head h % Hkv; ``group`` query heads per kv head otherwise)."""
    t = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (q, k, v)]
    qt, kt, vt = t
    if group > 1 or mistake == "interleaved":
        n = qt.shape[-3]
        idx = torch.arange(n) % kt.shape[-3] if mistake == "interleaved" else torch.arange(n) // group
        kt, vt = kt[..., idx, :, :], vt[..., idx, :, :]
    D, Dv = qt.shape[-1], vt.shape[-1]
    s = 1.0 / math.sqrt(D) if scale is None else scale
    s = {"scale-1": 1.0, "scale-dv": 1.0 / math.sqrt(Dv)}.get(mistake, s)
    scores = s * qt @ kt.transpose(-1, -2)
    keep = torch.ones(scores.shape, dtype=torch.bool)
    if mask is not None and np.asarray(mask).dtype == bool:
        m = torch.as_tensor(np.asarray(mask))
        keep = keep & (~m if mistake == "inverted" else m)
    elif mask is not None:                                             # additive: -inf entries masked
        m = torch.as_tensor(np.asarray(mask, np.float64))
        keep, scores = keep & ~torch.isneginf(m), scores + torch.where(torch.isneginf(m), 0.0, m)
    if mistake == "causal":
        Sq, Sk = scores.shape[-2:]
        keep = keep & torch.ones(Sq, Sk, dtype=torch.bool).tril()
    scores = scores.masked_fill(~keep, float("-inf"))
    dim = -2 if mistake == "queries" else -1
    w = torch.nan_to_num(torch.softmax(scores, dim=dim), nan=0.0)      # a line with no key: zeros
    (w @ vt).backward(torch.tensor(np.asarray(d_out, np.float64)))
    return tuple(a.grad.numpy().astype(np.asarray(b).dtype) for a, b in zip(t, (q, k, v)))


def _recompute(q, k, v, d_out, mask=None, scale=None):
    """A FlashAttention-style backward (P = exp(S - LSE) from the forward's LSE and O) whose recompute keeps a
    causal line j <= i the forward does not have (a tutorial's kernel made non-causal in its forward only)."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = s * q @ np.swapaxes(k, -1, -2)
    if mask is not None and np.asarray(mask).dtype == bool:
        scores = np.where(mask, scores, -np.inf)
    elif mask is not None:
        scores = scores + np.asarray(mask)
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = np.exp(scores - m).sum(axis=-1, keepdims=True)
    lse = np.where(z > 0, m + np.log(np.where(z > 0, z, 1.0)), np.inf)
    o = np.exp(scores - lse) @ v
    Sq, Sk = scores.shape[-2:]
    p = np.exp(np.where(np.tril(np.ones((Sq, Sk), bool)), scores, -np.inf) - lse)
    dv = np.swapaxes(p, -1, -2) @ g
    ds = p * (g @ np.swapaxes(v, -1, -2) - np.sum(g * o, axis=-1, keepdims=True))
    return s * ds @ k, s * np.swapaxes(ds, -1, -2) @ q, dv


def _lines(fn):
    return backward_lines(fn, FAMILIES)


def test_the_right_forwards_autograd_conforms_with_no_diagnosis():
    statuses, lines = _lines(_autograd)
    assert set(statuses) == {Status.PASS} and not lines, lines


@pytest.mark.parametrize("mistake, model, label", [
    ("causal", "bwd-forward-mistake", "a causal band the case does not have, top-left"),
    ("inverted", "bwd-forward-mistake", "the bool mask inverted"),
    ("queries", "bwd-forward-mistake", "the softmax over the queries, with its own Jacobian"),
    ("scale-1", "bwd-scale", "the whole backward used 1 (no scaling) = 1 "),        # fitted: grad_scale.py
    ("scale-dv", "bwd-scale", "the whole backward used 1/sqrt(Dv) = "),
], ids=["causal", "inverted", "queries", "scale-1", "scale-dv"])
def test_the_backward_of_a_wrong_forward_is_named_with_its_mistake(mistake, model, label):
    statuses, lines = _lines(lambda *a, **kw: _autograd(*a, **kw, mistake=mistake))
    assert Status.FAIL in statuses
    assert lines and all(f": {model} — " in line and label in line for line in lines), lines


def test_a_recompute_from_the_forwards_lse_with_a_stale_causal_line_is_named_so():
    statuses, lines = _lines(_recompute)
    assert Status.FAIL in statuses
    label = "a causal band the case does not have, top-left; P = exp(S - the right forward's LSE)"
    assert lines and all(": bwd-forward-mistake — " in line and label in line for line in lines), lines


def _inputs(seed, B=2, Hq=4, Hkv=4, Sq=7, Sk=9, D=8, Dv=6):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, Hq, Sq, D)), rng.standard_normal((B, Hkv, Sk, D)),
            rng.standard_normal((B, Hkv, Sk, Dv)), rng.standard_normal((B, Hq, Sq, Dv)))


@pytest.mark.parametrize("model_mistake, kernel_mistake, kw", [
    ("causal-top-left", "causal", {}),
    ("mask-inverted", "inverted", {"mask": True}),
    ("softmax-queries", "queries", {"mask": True}),
    ("none", None, {"mask": True}),
])
def test_each_model_equals_autograd_through_its_wrong_forward(model_mistake, kernel_mistake, kw):
    q, k, v, g = _inputs(3)
    mask = np.random.default_rng(4).random((2, 1, 7, 9)) < 0.7 if kw else None
    want = _autograd(q, k, v, g, mask, mistake=kernel_mistake)
    got = forward_mistake(q, k, v, g, mistake=model_mistake, mask=mask)
    assert all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want))
    assert not all(np.allclose(a, b) for a, b in zip(got, _autograd(q, k, v, g, mask))) or model_mistake == "none"


def test_gqa_interleaved_equals_autograd_and_differs_from_grouped():
    q, k, v, g = _inputs(5, Hq=6, Hkv=2)
    want = _autograd(q, k, v, g, mistake="interleaved")
    got = forward_mistake(q, k, v, g, mistake="gqa-interleaved", enable_gqa=True)
    right = _autograd(q, k, v, g, group=3)
    assert all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want))
    assert all(np.allclose(a, b, rtol=1e-12, atol=1e-12)
               for a, b in zip(forward_mistake(q, k, v, g, mistake="none", enable_gqa=True), right))
    assert not np.allclose(got[1], right[1])


def test_a_mistake_the_case_cannot_show_gives_the_right_gradients():
    q, k, v, g = _inputs(6, Sq=9, Sk=9)
    right = forward_mistake(q, k, v, g, mistake="none", is_causal=True)
    for mistake in ("causal-top-left", "causal-flipped", "mask-inverted", "gqa-interleaved"):
        got = forward_mistake(q, k, v, g, mistake=mistake, is_causal=True)
        assert all(np.array_equal(a, b) for a, b in zip(got, right)), mistake


def test_lse_kept_equals_a_recompute_from_the_right_lse():
    q, k, v, g = _inputs(10, B=1, Hq=1, Hkv=1, Sq=9, Sk=9)
    want = _recompute(q, k, v, g)
    got = forward_mistake(q, k, v, g, mistake="causal-top-left", kept="lse")
    assert all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want))


def test_o_kept_uses_the_right_forwards_output_in_delta():
    q, k, v, g = _inputs(7)
    exact = forward_mistake(q, k, v, g, mistake="causal-top-left")
    kept = forward_mistake(q, k, v, g, mistake="causal-top-left", kept="o")
    assert np.array_equal(exact[2], kept[2]) and not np.allclose(exact[0], kept[0])


@pytest.mark.parametrize("form, scale", [("1", 1.0), ("1/sqrt(Dv)", 1 / math.sqrt(6)), ("1/D", 1 / 8),
                                         ("s**2", 1 / 8)])
def test_scale_backward_is_the_exact_gradient_with_that_scale(form, scale):
    q, k, v, g = _inputs(8)
    want = _autograd(q, k, v, g, scale=scale)
    got = scale_backward(q, k, v, g, form=form)
    assert all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want))


def test_bad_mistake_and_form_are_refused_by_name():
    q, k, v, g = _inputs(9)
    with pytest.raises(ValueError, match="mistake must be one of"):
        forward_mistake(q, k, v, g, mistake="causal")
    with pytest.raises(ValueError, match="form must be one of"):
        scale_backward(q, k, v, g, form="2")


def _loops_keep(Sq, Sk, causal=None, window=None):
    """A (Sq, Sk) keep-mask by explicit loops: ``causal`` "top-left" / "bottom-right" (j <= i + offset), ``window``
    (left, right, alignment) with -1 unbounded."""
    keep = np.ones((Sq, Sk), bool)
    for i in range(Sq):
        for j in range(Sk):
            if causal is not None and j > i + (0 if causal == "top-left" else Sk - Sq):
                keep[i, j] = False
            if window is not None:
                left, right, align = window
                d = i + (0 if align == "top-left" else Sk - Sq)
                if (left >= 0 and j < d - left) or (right >= 0 and j > d + right):
                    keep[i, j] = False
    return keep


def _torch_grads(q, k, v, g, keep=None, bias=None, scale=None, softcap=None, heads=None):
    """(dq, dk, dv) by torch autograd of softmax(cap(s q k^T) + bias, keys; keep) v, kv head ``heads[h]`` for query
    head h (None: the same index), gradients summed back to k's and v's shapes by autograd itself."""
    t = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    qt, kt, vt = t
    if heads is not None:
        kt, vt = kt[:, heads], vt[:, heads]
    s = (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale) * qt @ kt.transpose(-1, -2)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + torch.tensor(bias)
    if keep is not None:
        s = s.masked_fill(~torch.tensor(np.broadcast_to(keep, s.shape).copy()), float("-inf"))
    w = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)
    (w @ vt).backward(torch.tensor(g))
    return tuple(a.grad.numpy() for a in t)


def _agree(got, want):
    return all(a.shape == b.shape and np.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(got, want))


def test_each_band_and_mask_mistake_equals_autograd_through_that_forward():
    q, k, v, g = _inputs(21, Sq=6, Sk=9)
    mask = np.random.default_rng(22).random((2, 1, 6, 9)) < 0.7
    tl, br = _loops_keep(6, 9, "top-left"), _loops_keep(6, 9, "bottom-right")
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-bottom-right", mask=mask),
                  _torch_grads(q, k, v, g, keep=mask & br))
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-flipped", is_causal=True),   # top-left read bottom-right
                  _torch_grads(q, k, v, g, keep=br))
    window = _loops_keep(6, 9, window=(2, 1, "top-left"))
    assert _agree(forward_mistake(q, k, v, g, mistake="band-mask-inverted", mask=mask, window=(2, 1)),
                  _torch_grads(q, k, v, g, keep=~(mask & window)))
    bias = np.where(np.random.default_rng(23).random((2, 1, 6, 9)) < 0.2, -np.inf, 0.3)
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-top-left", mask=bias),
                  _torch_grads(q, k, v, g, keep=tl & np.isfinite(bias), bias=np.where(np.isfinite(bias), bias, 0.0)))


def test_the_transposed_mask_and_the_softcap_path_equal_autograd():
    q, k, v, g = _inputs(24, Sq=7, Sk=7)
    mask = np.random.default_rng(25).random((2, 1, 7, 7)) < 0.6
    assert _agree(forward_mistake(q, k, v, g, mistake="mask-transposed", mask=mask),
                  _torch_grads(q, k, v, g, keep=np.swapaxes(mask, -1, -2)))
    assert _agree(forward_mistake(q, k, v, g, mistake="mask-inverted", mask=mask, softcap=2.0, scale=0.7),
                  _torch_grads(q, k, v, g, keep=~mask, scale=0.7, softcap=2.0))


def test_a_shared_kv_head_and_a_shared_batch_get_their_gradients_summed():
    q, k, v, g = _inputs(26, B=2, Hq=4, Hkv=1)
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-top-left"),            # one kv head for four query heads
                  _torch_grads(q, k, v, g, keep=_loops_keep(7, 9, "top-left"), heads=[0, 0, 0, 0]))
    got = forward_mistake(q, k[:1], v[:1], g, mistake="causal-top-left")          # k, v of batch 1 broadcast
    assert got[1].shape == (1, 1, 9, 8) and _agree(
        got, _torch_grads(q, k[:1], v[:1], g, keep=_loops_keep(7, 9, "top-left"), heads=[0, 0, 0, 0]))


def test_the_row_jacobian_over_query_softmax_weights_is_that_formula():
    # not a gradient of anything: P over the queries pushed through the row softmax's Jacobian, written out here
    q, k, v, g = _inputs(27, B=1, Hq=1, Hkv=1)
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(8)
    p = np.exp(s - s.max(axis=-2, keepdims=True))
    p = p / p.sum(axis=-2, keepdims=True)
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - np.sum(g * (p @ v), axis=-1, keepdims=True))
    want = (ds @ k / math.sqrt(8), np.swapaxes(ds, -1, -2) @ q / math.sqrt(8), np.swapaxes(p, -1, -2) @ g)
    assert _agree(forward_mistake(q, k, v, g, mistake="softmax-queries-row-jacobian"), want)


def test_o_kept_takes_delta_from_the_right_forwards_output():
    q, k, v, g = _inputs(28, B=1, Hq=1, Hkv=1)
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(8)
    right = np.exp(s - s.max(-1, keepdims=True))
    right /= right.sum(-1, keepdims=True)
    wrong = np.where(_loops_keep(7, 9, "top-left"), s, -np.inf)
    wrong = np.exp(wrong - wrong.max(-1, keepdims=True))
    wrong /= wrong.sum(-1, keepdims=True)
    ds = wrong * (g @ np.swapaxes(v, -1, -2) - np.sum(g * (right @ v), axis=-1, keepdims=True))
    want = (ds @ k / math.sqrt(8), np.swapaxes(ds, -1, -2) @ q / math.sqrt(8), np.swapaxes(wrong, -1, -2) @ g)
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-top-left", kept="o"), want)


def test_the_lse_of_the_weights_and_the_untransposed_dv_are_their_formulas():
    q, k, v, g = _inputs(29, B=1, Hq=1, Hkv=1, Sq=9, Sk=9)
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    lse = np.log(np.exp(p).sum(-1, keepdims=True))                      # the LSE of the probabilities
    w = np.exp(s - lse)
    ds = w * (g @ np.swapaxes(v, -1, -2) - np.sum(g * (w @ v), axis=-1, keepdims=True))
    want = (ds @ k / math.sqrt(8), np.swapaxes(ds, -1, -2) @ q / math.sqrt(8), np.swapaxes(w, -1, -2) @ g)
    assert _agree(forward_mistake(q, k, v, g, mistake="lse-of-weights"), want)
    right = _torch_grads(q, k, v, g)
    got = forward_mistake(q, k, v, g, mistake="p-untransposed-dv")
    assert _agree(got[:2], right[:2]) and np.allclose(got[2], p @ g, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="needs Sq == Sk"):
        forward_mistake(q[..., :5, :], k, v, g[..., :5, :], mistake="p-untransposed-dv")


def test_an_unbatched_case_equals_autograd_through_each_wrong_forward():
    # refimpl's shapes are (B..., S, D): here no batch axis at all, (Hq, S, D), with Sq, Sk and D all different
    q, k, v, g = (a[0] for a in _inputs(30, Sq=7, Sk=9, D=8, Dv=6))
    tl = _loops_keep(7, 9, "top-left")
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-top-left"), _torch_grads(q, k, v, g, keep=tl))
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-top-left", softcap=1.5),
                  _torch_grads(q, k, v, g, keep=tl, softcap=1.5))
    assert _agree(forward_mistake(q, k, v, g, mistake="softmax-queries"), _autograd(q, k, v, g, mistake="queries"))


def test_k_and_v_shared_along_an_inner_leading_axis_get_their_gradients_summed_along_it():
    rng = np.random.default_rng(31)                      # (B1, B2, B3, B4, H, S, D): K and V shared along B4
    q, g = rng.standard_normal((2, 1, 1, 2, 2, 3, 4)), rng.standard_normal((2, 1, 1, 2, 2, 3, 3))
    k, v = rng.standard_normal((2, 1, 1, 1, 2, 5, 4)), rng.standard_normal((2, 1, 1, 1, 2, 5, 3))
    got = forward_mistake(q, k, v, g, mistake="causal-top-left")
    assert got[1].shape == k.shape and _agree(got, _torch_grads(q, k, v, g, keep=_loops_keep(3, 5, "top-left")))


def test_a_mask_of_two_axes_is_transposed_over_those_axes():
    q, k, v, g = _inputs(32, Sq=7, Sk=7)
    mask = np.random.default_rng(33).random((7, 7)) < 0.6                     # (Sq, Sk), broadcast over B and H
    assert _agree(forward_mistake(q, k, v, g, mistake="mask-transposed", mask=mask),
                  _torch_grads(q, k, v, g, keep=mask.T))


_BIAS = np.random.default_rng(34).standard_normal((2, 1, 7, 9))              # an additive float mask, finite
_KEEP = np.random.default_rng(35).random((2, 1, 7, 9)) < 0.7


@pytest.mark.parametrize("mistake, kw, right", [
    ("band-mask-inverted", {}, {}),                                          # no mask, no band, no window
    ("band-mask-inverted", {"mask": _BIAS}, {"bias": _BIAS}),                # no bool mask to fold a band into
    ("mask-inverted", {"mask": _BIAS}, {"bias": _BIAS}),                     # no bool mask to invert
    ("mask-transposed", {"mask": _KEEP}, {"keep": _KEEP}),                   # Sq != Sk
    ("causal-flipped", {"window": (2, 1)}, {"keep": _loops_keep(7, 9, window=(2, 1, "top-left"))}),   # no causal
])
def test_a_mistake_this_case_cannot_show_gives_its_right_gradients(mistake, kw, right):
    q, k, v, g = _inputs(36)
    assert _agree(forward_mistake(q, k, v, g, mistake=mistake, **kw), _torch_grads(q, k, v, g, **right))


def test_mask_transposed_without_a_mask_gives_the_right_gradients():
    q, k, v, g = _inputs(37, Sq=7, Sk=7)
    assert _agree(forward_mistake(q, k, v, g, mistake="mask-transposed"), _torch_grads(q, k, v, g))


def test_an_additive_mask_adds_its_finite_entries_to_the_scores():
    rng = np.random.default_rng(38)
    bias = np.where(rng.random((2, 1, 7, 9)) < 0.2, -np.inf, rng.standard_normal((2, 1, 7, 9)))
    q, k, v, g = _inputs(39)
    assert _agree(forward_mistake(q, k, v, g, mistake="causal-top-left", mask=bias),
                  _torch_grads(q, k, v, g, keep=_loops_keep(7, 9, "top-left") & np.isfinite(bias),
                               bias=np.where(np.isfinite(bias), bias, 0.0)))


def test_the_lse_of_the_weights_is_taken_over_the_keys_the_forward_keeps():
    # a causal case: the keys the band drops are no keys of the row, in the LSE of the weights as in the softmax
    q, k, v, g = _inputs(40, B=1, Hq=1, Hkv=1, Sq=9, Sk=9)
    keep = _loops_keep(9, 9, "top-left")
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(8)
    p = np.where(keep, np.exp(s - np.where(keep, s, -np.inf).max(-1, keepdims=True)), 0.0)
    p /= p.sum(-1, keepdims=True)
    lse = np.log(np.where(keep, np.exp(p), 0.0).sum(-1, keepdims=True))
    w = np.where(keep, np.exp(s - lse), 0.0)
    ds = w * (g @ np.swapaxes(v, -1, -2) - np.sum(g * (w @ v), axis=-1, keepdims=True))
    want = (ds @ k / math.sqrt(8), np.swapaxes(ds, -1, -2) @ q / math.sqrt(8), np.swapaxes(w, -1, -2) @ g)
    assert _agree(forward_mistake(q, k, v, g, mistake="lse-of-weights", is_causal=True), want)


def test_a_recompute_from_the_right_lse_gives_no_weight_to_a_row_the_right_forward_drops():
    # the right forward's row 2 has no key: its LSE is +inf, so exp(S' - LSE) is 0 there whatever S' keeps
    q, k, v, g = _inputs(41, B=1, Hq=1, Hkv=1, Sq=7, Sk=9)
    mask = _loops_keep(7, 9, window=(1, 1, "top-left"))
    mask[2] = False
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(8)
    right = np.where(mask, s, -np.inf)
    lse = np.full((1, 1, 7, 1), np.inf)
    rows = mask.any(-1)
    lse[..., rows, :] = np.log(np.exp(right[..., rows, :]).sum(-1, keepdims=True))
    p = np.exp(np.where(~mask, s, -np.inf) - lse)                      # the wrong forward's scores: mask inverted
    o = np.exp(right - lse) @ v                                          # the right forward's output, row 2 zeros
    ds = p * (g @ np.swapaxes(v, -1, -2) - np.sum(g * o, axis=-1, keepdims=True))
    want = (ds @ k / math.sqrt(8), np.swapaxes(ds, -1, -2) @ q / math.sqrt(8), np.swapaxes(p, -1, -2) @ g)
    got = forward_mistake(q, k, v, g, mistake="mask-inverted", kept="lse", mask=mask)
    assert _agree(got, want) and not got[0][..., 2, :].any()


def _log2_lse_backward(q, k, v, d_out, mask=None, scale=None):
    """A backward that recomputes P = exp(S - LSE2) against an exp2 forward's LSE kept in log2 units,
    LSE2 = log2(sum 2^(S log2 e)) (so the ln 2 factor is lost), then O = P V and delta = rowsum(dO * O) from it and
    the textbook steps: dS = P (dO V^T - delta), dQ = c dS K, dK = c dS^T Q, dV = P^T dO. Rows with no key: P = 0."""
    q, k, v, g = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = c * q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    with np.errstate(all="ignore"):
        s2 = s * math.log2(math.e)
        m2 = np.max(s2, axis=-1, keepdims=True)
        m2 = np.where(np.isfinite(m2), m2, 0.0)
        l2 = np.exp2(s2 - m2).sum(axis=-1, keepdims=True)
        lse2 = np.where(l2 > 0, m2 + np.log2(np.where(l2 > 0, l2, 1.0)), np.inf)
        p = np.exp(s - lse2)
    o = p @ v
    ds = p * (g @ np.swapaxes(v, -1, -2) - np.sum(g * o, axis=-1, keepdims=True))
    return c * ds @ k, c * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ g


def test_a_log2_lse_read_as_natural_with_o_recomputed_equals_the_backward_written_out():
    q, k, v, g = _inputs(11)
    mask = np.random.default_rng(12).random((2, 1, 7, 9)) < 0.7
    mask[0, 0, 3] = False                                        # a row with no key: no weight, no gradient
    want = _log2_lse_backward(q, k, v, g, mask)
    got = forward_mistake(q, k, v, g, mistake="lse-base2-recomputed-o", mask=mask)
    assert all(np.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(got, want))
    assert not np.allclose(got[0], forward_mistake(q, k, v, g, mistake="none", mask=mask)[0])


def test_a_log2_lse_read_as_natural_with_o_recomputed_is_named_with_that_form():
    statuses, lines = _lines(_log2_lse_backward)
    assert Status.FAIL in statuses
    label = "LSE in base 2 (an exp2 forward's) read as natural, exp(S - LSE / ln 2); O and delta from those weights"
    assert lines and all(": bwd-recompute — " in line and label in line for line in lines), lines
