"""Forward mistakes of the weights after the softmax and of the default scale: NumPy kernels written here, each with
one mistake, over the quick suite. The row softmax divided again by its sum over the queries
(``renormalised-over-queries``), the map applied transposed, O = P^T V, as the row softmax or as the softmax of
scores laid out (Sk, Sq) with q and k swapped (``map-transposed``; with Sq != Sk the product raises), and a default
scale of 1/sqrt(Hq), the head count for the head size (``scale``), are each named with their form; the kernel
without a mistake conforms with no line."""
import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import run_one
from refimpl.harness.targets.target import Target
from tests.support.quick_runs import STORE, forward_lines


def kernel(q, k, v, mask=None, scale=None, *, renorm=None, transposed=False, swapped=False, heads_scale=False,
           key_major=False):
    if scale is None:
        scale = (q.shape[-3] if q.ndim == 4 else 1) ** -0.5 if heads_scale else q.shape[-1] ** -0.5
    s = scale * (q @ np.swapaxes(k, -1, -2))                                   # (..., Sq, Sk)
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
    axis = -1
    if swapped:                 # the scores read as (Sk, Sq): the "key" axis of the softmax is the queries
        s, keep, axis = np.swapaxes(s, -1, -2), np.swapaxes(keep, -1, -2), -1
    if key_major:               # a key-major kernel: its mask transposed to (Sk, Sq), laid on q-major scores
        if s.shape[-1] != s.shape[-2]:
            raise ValueError("key-major scores need Sq == Sk here")
        keep, axis = np.swapaxes(keep, -1, -2), -2
    s = np.where(keep, s, -np.inf)
    with np.errstate(invalid="ignore"):
        m = s.max(axis=axis, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=axis, keepdims=True)
        p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
        if renorm is not None:
            p = p / (renorm + p.sum(axis=-2, keepdims=True))
    return (np.swapaxes(p, -1, -2) if (transposed or key_major) and not swapped else p) @ v


@pytest.mark.parametrize("kw,model,form", [
    ({"renorm": 1e-9}, "renormalised-over-queries", "(W / (1e-9 + W.sum over queries))"),
    ({"transposed": True}, "map-transposed", "(the row softmax P transposed (the map read as (Sk, Sq)))"),
    ({"swapped": True}, "map-transposed",
     "(q and k swapped in the scores, S laid out (Sk, Sq): the softmax over the queries, transposed)"),
    ({"key_major": True}, "map-transposed",
     "(q and k swapped in the scores of a key-major kernel: its mask read as (Sk, Sq) too)"),
])
def test_each_mistake_is_named_with_its_form(kw, model, form):
    lines = forward_lines(lambda *a, **k: kernel(*a, **kw, **k))
    assert len(lines) == 1 and f": {model} — " in lines[0] and lines[0].endswith(form), lines


def test_a_default_scale_of_one_over_the_root_of_the_head_count_is_fitted_and_named():
    lines = forward_lines(lambda *a, **k: kernel(*a, heads_scale=True, **k))
    assert len(lines) == 1 and ": scale — " in lines[0] and "1/sqrt(Hq) (the head count for the head size)" in \
        lines[0], lines


def test_a_transposed_map_raises_where_the_lengths_differ_and_is_judged_there():
    target = Target("k", lambda *a, **k: kernel(*a, transposed=True, **k), api="refimpl")
    results = {s.id: run_one(target, s, STORE) for s in select(["sizes"], "quick", ("float64",))}
    specs = {s.id: s for s in select(["sizes"], "quick", ("float64",))}
    assert any(specs[i].Sq != specs[i].Sk for i in results)
    assert all(r.status != Status.PASS for i, r in results.items() if specs[i].Sq != specs[i].Sk)


def test_the_kernel_without_a_mistake_conforms():
    target = Target("k", kernel, api="refimpl")
    statuses = {run_one(target, s, STORE).status for s in select(None, "quick", ("float64",)) if not s.long
                and s.family in ("sizes", "batched-heads", "bool-mask", "padding", "masked-rows", "scale")}
    assert Status.PASS in statuses and Status.FAIL not in statuses, statuses
