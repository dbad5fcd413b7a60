"""Rows with no key are where a verdict does not look at the value: the judge accepts zeros, NaN or the mean of the
values there (README, "fully masked rows"). A kernel's choice among them says nothing about its bug, so a bug
model is fitted on the rows the judge holds (docs/diagnosis.md, "Rows with no key"): a kernel with one mistake
gets the same diagnosis whichever accepted value it writes where a row has no key.

The kernels here are the reference (refimpl.attention) with one mistake written out with NumPy, each in three
copies that differ only on the rows with no key. The family is masked-rows, whose cases have such rows."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from refimpl.attention import scaled_dot_product_attention
from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.analysis.judged_rows import unjudged_from
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target
from tests.support.rule_cases import STORE as RULE_STORE, rule_spec

STORE = CaseStore()


def _mask_after_softmax(q, k, v, *, mask=None, scale=None, is_causal=False, **kw):
    """Softmax over every key, then the masked weights zeroed and not renormalised (the mistake); (B, H, Sq, Dv)."""
    _, w = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal, **kw)
    s = (1.0 / np.sqrt(q.shape[-1]) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))   # (B, H, Sq, Sk)
    if mask is not None and mask.dtype != bool:
        s = s + np.where(np.isfinite(mask), mask, 0.0)
    p = np.exp(s - s.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    return np.where(w > 0, p, 0.0) @ v, w


def _scale_after_softmax(q, k, v, *, scale=None, **kw):
    """The weights of the unscaled scores times the scale (the mistake); (B, H, Sq, Dv)."""
    _, w = scaled_dot_product_attention(q, k, v, scale=1.0, **kw)
    s = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    return (s * w) @ v, w


def _with_dead(fn, dead):
    def kernel(q, k, v, **kw):
        out, w = fn(q, k, v, **kw)
        out = np.array(out, np.float64)
        rows = ~np.any(scaled_dot_product_attention(q, k, v, **kw)[1] > 0, axis=-1)       # (B, H, Sq): no key
        if dead == "nan":
            out[rows] = np.nan
        elif dead == "uniform":
            out[rows] = np.broadcast_to(v.mean(axis=-2, keepdims=True), out.shape)[rows]
        else:
            out[rows] = 0.0
        return out
    return kernel


@pytest.mark.parametrize("fn,name", [(_mask_after_softmax, "mask-after-softmax"),
                                     (_scale_after_softmax, "scale-after-softmax")])
@pytest.mark.parametrize("dead", ["nan", "uniform", "zeros"])
def test_a_kernels_value_on_rows_with_no_key_does_not_change_its_diagnosis(fn, name, dead):
    target = Target("k", _with_dead(fn, dead), api="refimpl")
    specs = {s.id: s for s in select(["masked-rows"], "quick", ("float64",))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        results = [run_one(target, s, STORE) for s in specs.values()]
    assert any(r.status == Status.FAIL for r in results)
    lines = diagnose(results, STORE, target="k", specs=specs)
    assert [line.split(": ", 1)[1].split(" — ")[0] for line in lines] == [name], lines


def test_a_model_is_held_to_the_rows_with_no_key_where_it_writes_what_the_judge_refuses_there():
    data = RULE_STORE.get(rule_spec(mask="bool", dead_rows=True))
    rows = np.broadcast_to(data.dead, data.expected.shape[:-1])
    assert rows.any() and (~rows).any()
    got = data.expected.copy()
    got[rows] = np.nan                                        # the kernel: NaN where no key (accepted)
    model = data.expected.copy()
    model[rows] = 7.0                                         # a model writing neither zeros, NaN nor the mean
    assert np.array_equal(unjudged_from(got, model, data), model)
    model[rows] = 0.0                                         # zeros: accepted, so the kernel's NaN is taken
    assert np.isnan(unjudged_from(got, model, data)[rows]).all()
    assert np.array_equal(unjudged_from(got, model, data)[~rows], model[~rows])


def test_rows_with_no_key_the_judge_failed_stay_held():
    from dataclasses import replace
    data = RULE_STORE.get(rule_spec(mask="bool", dead_rows=True))
    rows = np.broadcast_to(data.dead, data.expected.shape[:-1])
    got = data.expected.copy()
    got[rows] = np.nan
    failed = replace(data, dead=np.zeros_like(data.dead))     # as the diagnosis reads a case whose dead rows failed
    assert np.array_equal(unjudged_from(got, data.expected, failed), data.expected)
