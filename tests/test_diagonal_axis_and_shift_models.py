"""Forward mistakes of the diagonal, the softmax axis and the softmax shift: NumPy kernels written here, each with one
mistake, over the quick suite. The diagonal dropped on every call (``causal-diagonal``), the softmax over the batch
axis or over a size-1 axis of scores kept as a column (``softmax-axis``) and rows shifted by their first score
(``no-max-subtraction``) are named with that form; a key-padding mask turned into a pairwise one (padded queries
see padded keys) fails the padding family's self-attention case."""
import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import run_one
from refimpl.harness.targets.target import Target
from tests.support.quick_runs import STORE, forward_lines


def kernel(q, k, v, mask=None, scale=None, *, diagonal=False, axis=-1, shift="max", pairwise=False, column=False):
    s = (q.shape[-1] ** -0.5 if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
    if pairwise and mask is not None and np.shape(mask)[-2] == 1 and s.shape[-2] == s.shape[-1]:
        ids = np.asarray(mask)[..., 0, :]
        keep = np.broadcast_to(ids[..., :, None] == ids[..., None, :], s.shape)
    if diagonal:
        keep = keep & ~np.eye(s.shape[-2], s.shape[-1], dtype=bool)
    s = np.where(keep, s, -np.inf)
    if column:                  # the scores kept as a (..., Sq, Sk, 1) column: the softmax over its size-1 axis
        s, axis = s[..., None], -1
    with np.errstate(invalid="ignore", over="ignore"):
        c = s[..., :1] if shift == "first" else s.max(axis=axis, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(c), c, 0.0) if shift == "max" else s - c)
        z = e.sum(axis=axis, keepdims=True)
        p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    return (p[..., 0] if column else p) @ v


@pytest.mark.parametrize("kw,model,form", [
    ({"diagonal": True}, "causal-diagonal", "(j != i on every call)"),
    ({"axis": 0}, "softmax-axis", "(over the batch (dim 0 of (B, H, Sq, Sk)))"),
    ({"column": True}, "softmax-axis",
     "(over a size-1 axis (a keepdims score column): every kept key weighs 1, O = the sum of V)"),
    ({"shift": "first"}, "no-max-subtraction", "(exp(S - S[i, 0]): rows shifted by their first score)"),
])
def test_each_mistake_is_named_with_its_form(kw, model, form):
    lines = forward_lines(lambda *a, **k: kernel(*a, **kw, **k))
    assert len(lines) == 1 and f": {model} — " in lines[0] and lines[0].endswith(form), lines


def test_a_pairwise_padding_mask_fails_the_padding_familys_self_attention_case():
    target = Target("k", lambda *a, **k: kernel(*a, pairwise=True, **k), api="refimpl")
    specs = select(["padding"], "quick", ("float64",))
    failed = [s for s in specs if run_one(target, s, STORE).status == Status.FAIL]
    assert failed and all(s.Sq == s.Sk for s in failed), [s.id for s in failed]


def test_the_kernel_without_a_mistake_conforms():
    target = Target("k", kernel, api="refimpl")
    statuses = {run_one(target, s, STORE).status for s in select(None, "quick", ("float64",)) if not s.long
                and s.family in ("sizes", "batched-heads", "bool-mask", "padding", "masked-rows", "extreme-logits")}
    assert Status.PASS in statuses and Status.FAIL not in statuses, statuses     # (n/a: an additive mask)
