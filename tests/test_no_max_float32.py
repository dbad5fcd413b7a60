"""no-max-subtraction where it appears: a kernel that computes exp(S) / sum exp(S) without the row max overflows at
its own precision's exp range, ~88.7 in float32, ~709.8 in float64. The kernels are written here, in NumPy: each
precision's no-max kernel is named with the variant of its precision, and the same kernels with the max subtracted
conform with no line."""
import numpy as np
import pytest

from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target

STORE = CaseStore()


def _kernel(compute, subtract_max):
    def attend(q, k, v, mask=None, scale=None):
        dt = np.dtype(compute)
        scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
        s = (q.astype(dt) @ np.swapaxes(k.astype(dt), -1, -2)) * dt.type(scale)          # (..., Sq, Sk)
        keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
        s = np.where(keep, s, -np.inf)
        if subtract_max:
            m = s.max(axis=-1, keepdims=True)
            s = s - np.where(np.isfinite(m), m, 0)
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(s)
            z = e.sum(axis=-1, keepdims=True)
            out = (e / np.where(z == 0, 1, z)) @ v.astype(dt)                             # (..., Sq, Dv)
        return np.where(keep.any(axis=-1, keepdims=True), out, 0).astype(q.dtype)
    return attend


def _lines(fn, dtype):
    target = Target("k", fn, api="refimpl")
    results = [run_one(target, s, STORE) for s in select(["extreme-logits", "sizes", "bool-mask"], "quick", (dtype,))]
    return results, diagnose(results, STORE, target="k")


@pytest.mark.parametrize("compute, dtype, label", [
    ("float32", "float32", "(exp(S) in float32 (overflow past ~88.7))"),
    ("float64", "float64", "overflows (exp(S))"),
])
def test_a_kernel_without_the_row_max_is_named_with_its_own_precisions_overflow(compute, dtype, label):
    results, lines = _lines(_kernel(compute, False), dtype)
    assert any(r.status == Status.FAIL for r in results)
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: no-max-subtraction — "), lines
    assert label in lines[0], lines


@pytest.mark.parametrize("compute, dtype", [("float32", "float32"), ("float64", "float64")])
def test_the_same_kernel_with_the_row_max_conforms(compute, dtype):
    results, lines = _lines(_kernel(compute, True), dtype)
    assert all(r.status == Status.PASS for r in results), [r.detail for r in results if r.status != Status.PASS]
    assert lines == []
