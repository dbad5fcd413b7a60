"""Gradients a backward never computed or never wrote (refimpl/harness/verdicts/grad_unwritten.py): NumPy backwards
written here (the textbook backward of tests/test_backward_shape_models.py), each returning one or two gradients as
zeros, run through the grad rows of the quick suite. dQ left at zero was named ``bwd-scale-dq`` (dQ with the scale
applied twice is nearer 0 than dQ: tests/heldout22's bwd_dq_never_set); each is named ``bwd-grad-unwritten`` with
the gradients it left, alone, unless a model reproduces the zeros (dS = 0 zeroes dQ and dK). Zeros beside another
wrong gradient are not this line; the backward without the mistake conforms with no line."""
import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.verdicts import grad_judge as gj
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
