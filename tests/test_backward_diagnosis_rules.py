"""The backward diagnosis's rules on the failing cases it fits (refimpl/harness/verdicts/grad_judge.py): the 16-bit
saturated-softmax cases judged on finiteness alone, the ``FINITE_ONLY`` cases and the cases of another shape left
out of the fit and counted in the line (docs/diagnosis.md, ``bwd-layout``), the fitted scale tried only where no
model of the table fits (grad_scale.py's docstring), and the unsummed dK/dV rule read on ``MAX_FAILING`` cases.

The fit's rule is read with one hand-made bug model (``bugs_backward.MODELS`` replaced) whose gradients, the
oracle and the target's gradients are small exact numbers; the expected lines come from the rule as documented."""
import math

import numpy as np
import pytest

from refimpl import bugs_backward, sdpa_backward
from refimpl.backward import expand_gqa
from refimpl.bug_model import BugModel, Variant
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts import grad_judge as gj

STORE = CaseStore()


def _case(family, index, dtype="float64"):
    return STORE.get(next(s for s in select([family], "quick", (dtype,)) if s.index == index))


# --- FINITE_ONLY: a saturated 16-bit softmax is judged on shape and finiteness alone --------------------------

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_finite_gradients_of_a_16_bit_saturated_softmax_pass_with_nothing_wrong_and_ratio_zero(dtype):
    data = _case("extreme-logits", 0, dtype)
    assert gj.finite_only(data.spec)
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    far = {n: gd.oracle[n] + 100.0 * (1.0 + np.abs(gd.oracle[n]).max()) for n in gj.GRADS}   # finite, far off
    got = gj.GradReturned(far, dtype)
    v = gj.judge_grads(gd, got, dtype, cache)
    # only the shapes and the NaN / inf rule are judged: nothing is wrong, so the worst error over what was allowed
    # (any finite error over an unbounded allowance) is 0
    assert v.status == Status.PASS and v.ratio == 0.0
    assert got.allowed == {n: math.inf for n in gj.GRADS}


def test_the_same_family_in_float32_is_judged_by_value():
    data = _case("extreme-logits", 0, "float32")
    assert not gj.finite_only(data.spec)
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    far = {n: gd.oracle[n] + 100.0 * (1.0 + np.abs(gd.oracle[n]).max()) for n in gj.GRADS}
    assert gj.judge_grads(gd, gj.GradReturned(far, "float32"), "float32", cache).status == Status.FAIL


# --- the diagnosis with one hand-made model -----------------------------------------------------------------

SHAPE = (1, 1, 1, 2)
WIDE = (1, 1, 1, 3)                         # a dq of another shape
DATA = _case("sizes", 5)                    # the model ignores its inputs: any case serves for reference_kwargs
SATURATED = _case("extreme-logits", 0, "bfloat16")       # a FINITE_ONLY case


def _grads(dq=0.0, dk=0.0, dv=0.0, dq_shape=SHAPE):
    """Gradients that are 0 but for their first entry."""
    out = {}
    for name, x, shape in zip(gj.GRADS, (dq, dk, dv), (dq_shape, SHAPE, SHAPE)):
        a = np.zeros(shape)
        a[0, 0, 0, 0] = x
        out[name] = a
    return out


def _pair(got, allowed=1.0, data=DATA):
    """A gradient case whose oracle is 0 everywhere (of shape SHAPE), and a target's gradients ``got`` with the
    judge's ``allowed`` (one number for the three gradients)."""
    gd = gj.GradData(data, np.zeros((1, 1, 1, 1)), _grads(), None)
    return gd, gj.GradReturned(got, "float64", {n: allowed for n in gj.GRADS})


@pytest.fixture
def model(monkeypatch):
    """The only backward bug model: its gradients are set with ``model(dq=, dk=, dv=, dq_shape=)``."""
    out = {"grads": _grads()}

    def fn(*args, **kw):
        return tuple(out["grads"][n] for n in gj.GRADS)
    hand = BugModel("bwd-hand", "made by hand", (Variant("only", fn),))
    monkeypatch.setattr(bugs_backward, "MODELS", {"bwd-hand": hand})

    def set_(**kw):
        out["grads"] = _grads(**kw)
    return set_


NAMED = "diagnosis t: bwd-hand — made by hand"
UNKNOWN = ["diagnosis t: unknown gradient error (no backward bug model fits)"]


def _fit():
    """A failing case the model (dq = 4) reproduces: the target's dq is 4, the oracle's 0, 1 allowed."""
    return _pair(_grads(dq=4.0))


def _other_shape():
    """A failing case whose dq came back (1, 1, 1, 3): no value model reproduces it."""
    return _pair(_grads(dq=4.0, dq_shape=WIDE))


def test_when_every_failing_case_is_a_saturated_16_bit_one_they_are_fitted_and_nothing_is_said_left_out(model):
    model(dq=4.0)
    failing = [_pair(_grads(dq=4.0), data=SATURATED)] * 2
    assert gj.diagnose_grads(failing, [], "t") == [NAMED]


def test_cases_of_another_shape_are_left_out_of_the_fit_and_counted_in_the_line(model):
    model(dq=4.0)
    lines = gj.diagnose_grads([_fit(), _fit(), _other_shape()], [], "t")
    assert len(lines) == 1 and lines[0].startswith(NAMED + " (fitted on "), lines
    assert "2 failing cases whose gradients have the right shapes; 1 returned another shape, left out)" in lines[0]


def test_as_many_failing_cases_of_the_right_shape_as_of_another_keep_the_fit(model):
    model(dq=4.0)
    lines = gj.diagnose_grads([_fit(), _other_shape()], [], "t")
    assert len(lines) == 1 and lines[0].startswith(NAMED + " (fitted on "), lines
    assert "1 failing cases whose gradients have the right shapes; 1 returned another shape, left out)" in lines[0]


def test_where_more_failing_cases_changed_the_shape_than_kept_it_the_line_stays_unknown(model):
    model(dq=4.0)
    assert gj.diagnose_grads([_fit(), _other_shape(), _other_shape()], [], "t") == UNKNOWN


def test_where_no_failing_case_kept_the_shapes_nothing_is_said_left_out(model):
    model(dq=4.0, dq_shape=WIDE)                   # a model that reproduces the wide dq itself
    assert gj.diagnose_grads([_other_shape(), _other_shape()], [], "t") == [NAMED]


# --- the fitted scale comes after the table's models ----------------------------------------------------------

def test_a_model_of_the_table_that_fits_is_not_joined_by_the_fitted_scale(monkeypatch):
    data = _case("batched-heads", 8)              # B 1, Hq 3, Sq 1, Sk 5, D 8, no scale given
    s = data.spec
    assert s.scale is None and s.Hq == 3
    used = 1.0 / math.sqrt(s.Hq * s.D)            # a formula of scale_formulas.py: 1/sqrt(Hq*D)

    def wrong_scale(q, k, v, d_out, **kw):        # the exact gradient of the forward with scale ``used``
        return sdpa_backward(q, k, v, d_out, **dict(kw, scale=used))[:3]
    monkeypatch.setattr(bugs_backward, "MODELS",
                        {"bwd-hand": BugModel("bwd-hand", "made by hand", (Variant("only", wrong_scale),))})
    cache: dict = {}
    gd = gj.grad_data(data, cache)
    grads = wrong_scale(data.q, data.k, data.v, gd.d_out, **data.reference_kwargs())
    got = gj.GradReturned(dict(zip(gj.GRADS, grads)), "float64")
    assert gj.judge_grads(gd, got, "float64", cache).status == Status.FAIL
    assert gj.diagnose_grads([(gd, got)], [], "t") == [NAMED]


# --- the unsummed dK / dV rule reads every failing case up to MAX_FAILING ---------------------------------------

def _unsummed(gd, dq_off=0.0):
    """dK and dV per query head (B, Hq, Sk, X): each query head's own contribution (K and V expanded), dQ right
    but for ``dq_off``."""
    s = gd.data.spec
    G = s.Hq // s.Hkv
    kw = dict(gd.data.reference_kwargs(), enable_gqa=False)
    _, dk, dv = sdpa_backward(gd.data.q, expand_gqa(gd.data.k, G), expand_gqa(gd.data.v, G), gd.d_out, **kw)[:3]
    return gj.GradReturned({"dq": gd.oracle["dq"] + dq_off, "dk": dk, "dv": dv}, "float64")


def test_the_unsummed_rule_reads_all_max_failing_failing_cases():
    gd = gj.grad_data(_case("gqa", 6), {})        # B 2, Hq 2, Hkv 1
    n = gj.MAX_FAILING
    assert n == 12
    unsummed = (gd, _unsummed(gd))
    assert any("returned per query head" in line for line in gj.diagnose_grads([unsummed] * n, [], "t"))
    # the last of the MAX_FAILING cases has dQ wrong too: not every failing case is the reduction left out
    assert gj.diagnose_grads([unsummed] * (n - 1) + [(gd, _unsummed(gd, dq_off=1.0))], [], "t") == UNKNOWN
