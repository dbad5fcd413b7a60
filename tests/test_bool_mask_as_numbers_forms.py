"""Forward mistakes of a bool mask read as numbers, behind a has-key guard: NumPy kernels written here (BERT's
extended attention mask), each with one mistake, over the quick suite, through the refimpl API (which hands the
causal band, windows and padding inside the bool mask). The raw 1/0 keep-mask added to the scores where
(1 - mask) * -10000 is meant (``mask-kind``), and mask * -10000 with the mask's 1 on the kept keys (``mask-polarity``:
a row kept whole is only shifted, so right), each with rows the mask keeps no key of zeroed, are named with that
form; the kernel with (1 - mask) * -10000 conforms with no line on the cases it can (its -10000 is not -inf: a row
whose kept scores fall 10,000 below a dropped one is wrong, as the extreme-logits family shows)."""
import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import run_one
from refimpl.harness.targets.target import Target
from tests.support.quick_runs import STORE, forward_lines


def bert(q, k, v, mask=None, scale=None, *, bias="right"):
    s = (q.shape[-1] ** -0.5 if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))   # (..., Sq, Sk)
    live = None
    if mask is not None:
        m = np.broadcast_to(mask, s.shape).astype(np.float64)
        s = s + {"right": (1.0 - m) * -10000.0, "raw": m, "inverted": m * -10000.0}[bias]
        live = m.max(axis=-1, keepdims=True) > 0
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return (p if live is None else np.where(live, p, 0.0)) @ v


@pytest.mark.parametrize("bias, model, form", [
    ("raw", "mask-kind", "(bool mask, with the band the API folds into it, added as numbers (True = +1), a row it "
                         "keeps no key of zeroed (a has-key guard))"),
    ("inverted", "mask-polarity", "(True = masked, -10000 added to those keys (mask * -10000): a row kept whole is "
                                  "right, one kept nothing of zeros)"),
])
def test_each_mistake_is_named_with_its_form(bias, model, form):
    lines = forward_lines(lambda *a, **k: bert(*a, bias=bias, **k))
    assert len(lines) == 1 and f": {model} — " in lines[0] and lines[0].endswith(form), lines


def test_the_kernel_without_a_mistake_conforms_where_its_finite_bias_does_not_show():
    target = Target("k", bert, api="refimpl")
    statuses = {run_one(target, s, STORE).status for s in select(None, "quick", ("float64",)) if not s.long
                and s.family in ("bool-mask", "padding", "masked-rows", "causal", "window", "varlen")}
    assert Status.PASS in statuses and Status.FAIL not in statuses, statuses
