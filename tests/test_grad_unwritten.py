"""Gradients a backward never computed or never wrote (refimpl/harness/verdicts/grad_unwritten.py): NumPy backwards
written here (the textbook backward of tests/test_backward_shape_models.py), each returning one or two gradients as
zeros, run through the grad rows of the quick suite. dQ left at zero was named ``bwd-scale-dq`` (dQ with the scale
applied twice is nearer 0 than dQ: tests/heldout22's bwd_dq_never_set); each is named ``bwd-grad-unwritten`` with
the gradients it left, alone, unless a model reproduces the zeros (dS = 0 zeroes dQ and dK). Zeros beside another
wrong gradient are not this line; the backward without the mistake conforms with no line."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.verdicts import grad_judge as gj
from refimpl.harness.verdicts.grad_unwritten import unwritten_grads, unwritten_grads_line
from tests.support.quick_runs import backward_lines
from tests.test_backward_shape_models import textbook

FAMILIES = ["sizes", "bool-mask", "gqa", "causal"]


def unwritten(*names, also_wrong=None):
    def backward(q, k, v, d_out, mask=None, scale=None):
        grads = dict(zip(gj.GRADS, textbook(q, k, v, d_out, mask, scale)))
        for n in names:
            grads[n] = np.zeros_like(grads[n])
        if also_wrong:
            grads[also_wrong] = 2.0 * grads[also_wrong]
        return tuple(grads[n] for n in gj.GRADS)
    return backward


@pytest.mark.parametrize("names, said", [
    (("dq",), "dq returned as zeros on every failing case (never computed or never written); dk, dv right"),
    (("dk", "dv"), "dk, dv returned as zeros on every failing case (never computed or never written); dq right"),
])
def test_gradients_left_at_zero_are_named_unwritten_alone(names, said):
    statuses, lines = backward_lines(unwritten(*names), FAMILIES)
    assert Status.FAIL in statuses
    assert lines and all(line == f"diagnosis user:forward: bwd-grad-unwritten — {said}" for line in lines), lines


def test_zeros_beside_another_wrong_gradient_are_not_named_unwritten():
    statuses, lines = backward_lines(unwritten("dq", also_wrong="dv"), FAMILIES)
    assert Status.FAIL in statuses
    assert lines and not any("bwd-grad-unwritten" in line for line in lines), lines


def test_the_backward_without_the_mistake_conforms():
    statuses, lines = backward_lines(unwritten(), FAMILIES)
    assert set(statuses) == {Status.PASS} and lines == [], (statuses, lines)


def test_zeros_a_model_reproduces_are_named_by_the_model():
    # dQ and dK alone at zero: dS = 0 (the softmax's gradient dropped, bwd-delta-term) reproduces them exactly
    statuses, lines = backward_lines(unwritten("dq", "dk"), FAMILIES)
    assert Status.FAIL in statuses
    assert lines and all(": bwd-delta-term — " in line for line in lines), lines


# --- the rule on hand-made gradients (grad_unwritten's module doc) ------------------------------------------------

def _pair(dq, dk, dv, oracle=(1.0, 1.0, 1.0), allowed=None):
    """(GradData-like, GradReturned-like) with constant (2, 3) gradients."""
    gd = SimpleNamespace(oracle={n: np.full((2, 3), o) for n, o in zip(gj.GRADS, oracle)})
    got = SimpleNamespace(grads={n: np.full((2, 3), g) for n, g in zip(gj.GRADS, (dq, dk, dv))}, allowed=allowed)
    return gd, got


def _line(*pairs):
    return unwritten_grads_line("t", unwritten_grads(list(pairs), gj.GRADS, gj._distance), gj.GRADS)


@pytest.mark.parametrize("off, named", [(0.25, True), (0.2500001, False)])
def test_the_other_gradients_may_be_off_by_their_allowed_error_and_no_more(off, named):
    allowed = {"dq": 0.25, "dk": 0.25, "dv": 0.25}
    assert bool(_line(_pair(0.0, 1.0 + off, 1.0, allowed=allowed))) is named


def test_a_gradient_without_an_allowance_must_be_exact():
    # the judge gave no allowance for dk (another shape, say): 0, so dk off by 0.5 is not "right"
    assert _line(_pair(0.0, 1.5, 1.0, allowed={"dq": 1.0, "dv": 1.0})) == []
    assert _line(_pair(0.0, 1.0, 1.0, allowed=None)) == [
        "diagnosis t: bwd-grad-unwritten — dq returned as zeros on every failing case (never computed or never "
        "written); dk, dv right"]


def test_nothing_failing_or_zeros_the_oracle_has_too_give_no_line():
    assert _line() == []
    assert _line(_pair(0.0, 1.0, 1.0, oracle=(0.0, 1.0, 1.0))) == []       # dq is 0 where the oracle's is
