"""The scale a backward used, fitted (harness/verdicts/grad_scale.py): NumPy backwards written here whose
recomputed weights, dQ and dK all use one wrong scale are named ``bwd-scale`` with that scale's formula and value;
a backward right on every case gets no line."""
import math

import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from tests.support.quick_runs import backward_lines


def backward(q, k, v, d_out, mask=None, scale=None, *, used):
    """A textbook backward (P recomputed) at scale ``used(q, scale)`` throughout; k and v heads broadcast."""
    s = used(q, scale)
    scores = s * q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf) if np.asarray(mask).dtype == bool else scores + mask
    m = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    o = p @ v
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - (d_out * o).sum(axis=-1, keepdims=True))
    dk, dv = s * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ d_out
    lead = tuple(i for i, n in enumerate(k.shape[:-2]) if n == 1 and dk.shape[i] != 1)
    return s * ds @ k, dk.sum(axis=lead, keepdims=True), dv.sum(axis=lead, keepdims=True)


def _model_width(q, scale):                                  # 1/sqrt of the model width H * D, when none is given
    return 1.0 / math.sqrt(q.shape[-3] * q.shape[-1]) if scale is None else scale


def _given_ignored(q, scale):                                # 1/sqrt(D) whatever scale the caller gives
    return 1.0 / math.sqrt(q.shape[-1])


CASES = [(_model_width, ["batched-heads"], "1/sqrt(Hq*D) = "),
         (_given_ignored, ["scale"], "1/sqrt(D) (the given scale ignored) = ")]


@pytest.mark.parametrize("used,families,said", CASES, ids=["model-width-default", "given-scale-ignored"])
def test_a_backward_with_one_wrong_scale_is_named_with_its_formula_and_value(used, families, said):
    statuses, lines = backward_lines(lambda *a, **kw: backward(*a, used=used, **kw), families)
    assert Status.FAIL in statuses, statuses
    assert lines and all(": bwd-scale — the whole backward used " + said in line for line in lines), lines


def test_the_value_printed_is_the_scale_of_the_smallest_failing_case():
    _, lines = backward_lines(lambda *a, **kw: backward(*a, used=_model_width, **kw), ["batched-heads"])
    line = lines[0]
    # the failing cases are those with more than one head (1/sqrt(Hq*D) = 1/sqrt(D) at Hq = 1); the smallest by
    # (B * Hq, Sq * Sk), as the line promises
    failing = [s for s in select(["batched-heads"], "quick", ("float64",)) if s.Hq > 1]
    smallest = min(failing, key=lambda s: (s.B * s.Hq, s.Sq * s.Sk))
    assert f"e.g. {smallest.id}: D={smallest.D}," in line, line
    used = float(line.split("1/sqrt(Hq*D) = ", 1)[1].split(" ", 1)[0])
    assert used == pytest.approx(1.0 / math.sqrt(smallest.Hq * smallest.D), rel=1e-3), line


def test_the_right_scale_gets_no_line():
    def right(q, s):
        return 1.0 / math.sqrt(q.shape[-1]) if s is None else s
    statuses, lines = backward_lines(lambda *a, **kw: backward(*a, used=right, **kw), ["batched-heads", "scale"])
    assert set(statuses) == {Status.PASS} and lines == [], (statuses, lines)
