"""The bool-mask family's mask per head without a batch axis (case i mod 11 = 10: (Hq, Sq, Sk) over two batches of
three heads), and mask-broadcast read on it. NumPy kernels written here: one that promotes a 3-D mask to
(B, 1, Sq, Sk), as a rank-3 mask's leading axis read as the batch (tests/heldout23's rank3_mask_promoted_as_batch
passed every quick case before this one), fails on that case only; one that folds the mask, broadcast to
(B, H, Sq, Sk), head-major against batch-major scores is named ``mask-broadcast`` over the quick suite, the per-head
case included; the kernel without either mistake conforms."""
import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import run_one
from refimpl.harness.targets.target import Target
from tests.support.quick_runs import STORE, forward_lines


def kernel(q, k, v, mask=None, scale=None, *, promote=False, fold_head_major=False):
    s = (q.shape[-1] ** -0.5 if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))     # (..., Sq, Sk)
    keep = np.ones(s.shape, bool)
    if mask is not None:
        m = np.asarray(mask)
        if promote and m.ndim == 3 and s.ndim == 4:
            m = m[:, None]                                           # (H, Sq, Sk) read as (B, 1, Sq, Sk)
        keep = np.broadcast_to(m, s.shape)
        if fold_head_major and s.ndim == 4:
            B, H = s.shape[:2]
            keep = np.swapaxes(keep, 0, 1).reshape(B * H, *s.shape[2:]).reshape(s.shape)
    s = np.where(keep, s, -np.inf)
    with np.errstate(invalid="ignore"):
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    return p @ v


def test_a_three_d_mask_promoted_to_a_batch_axis_fails_on_the_per_head_case_only():
    target = Target("k", lambda *a, **kw: kernel(*a, promote=True, **kw), api="refimpl")
    results = [(s, run_one(target, s, STORE)) for s in select(["bool-mask"], "quick", ("float64",))]
    assert [s.pattern for s, r in results if r.status != Status.PASS] == ["per-head"]


def test_a_mask_folded_head_major_against_batch_major_scores_is_named_mask_broadcast():
    lines = forward_lines(lambda *a, **kw: kernel(*a, fold_head_major=True, **kw))
    assert len(lines) == 1 and ": mask-broadcast — " in lines[0], lines


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_kernel_without_a_mistake_conforms(dtype):
    target = Target("k", kernel, api="refimpl")
    statuses = {run_one(target, s, STORE).status for s in select(["bool-mask", "padding", "batched-heads"], "quick",
                                                                 (dtype,))}
    assert statuses == {Status.PASS}, statuses
