"""What refimpl/harness/analysis/fitted_forms.py adds around the fitted forms (docs/diagnosis.md "Fitted forms"): the
forms are tried in order and the first that holds is named; the passing cases a form's output would change decide
when it applies, and an output of another shape than the expected one changes its case. The forms themselves are
replaced by stubs here (their own rules: tests/test_fitted_form_rules.py, tests/test_fitting_columns_rules.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.analysis import fitted_forms

BEFORE_CONDITIONAL = ("placement_line", "columns_line", "heads_line", "sources_line", "slopes_line", "ignored_line")
AFTER_CONDITIONAL = ("band_line", "denominator_line", "splits_line")


def _close(a, b, v):                              # the diagnosis's closeness: shapes equal, then allclose
    return np.shape(a) == np.shape(b) and bool(np.allclose(a, b, rtol=1e-3, atol=1e-6))


def _case(batch, under):
    """A (1, 2, 3, 2) case: `under` the table variant's output on it."""
    E = np.arange(12.0).reshape(1, 2, 3, 2)
    spec = SimpleNamespace(features=lambda: {"batch > 1": batch})
    return SimpleNamespace(spec=spec, mask_given=None, expected=E, live=np.ones((1, 2, 3), bool),
                           v=np.ones((1, 1, 1, 1)), under=E if under is None else under)


def _model():
    return SimpleNamespace(name="head-layout", explanation="the output laid out wrong", tolerance=(1e-3, 1e-6),
                           variants=[SimpleNamespace(label="read transposed", in_float32=False)])


def _lines(fail, passing):
    return fitted_forms.fitted_form_lines(
        "k", [(d, d.under) for d in fail], [(d, d.expected) for d in passing], _close,
        explains=lambda out, d, got: True, model_out=lambda variant, d: d.under, models={"m": _model()})


@pytest.fixture
def only_conditional(monkeypatch):
    """Every form but the table model on some calls (fitting_conditional.py, real) holds nowhere."""
    for name in BEFORE_CONDITIONAL + AFTER_CONDITIONAL:
        monkeypatch.setattr(fitted_forms, name, lambda *a, **k: [])


@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (1, 2, 3, 3)])
def test_a_passing_case_the_form_would_give_another_shape_is_changed_and_decides_the_condition(
        only_conditional, shape):
    """(1, 3, 2, 2): the heads and queries swapped (a layout read wrong); (1, 2, 3, 3): another channel count."""
    fail = [_case(True, np.arange(12.0).reshape(1, 2, 3, 2) + 100.0)]
    passing = [_case(False, np.zeros(shape)), _case(True, None)]
    lines = _lines(fail, passing)
    assert len(lines) == 1 and " when batch > 1 (" in lines[0], lines
    assert "1 passing cases it would change decide the condition" in lines[0], lines


def test_a_passing_case_the_form_leaves_alone_decides_nothing(only_conditional):
    fail = [_case(True, np.arange(12.0).reshape(1, 2, 3, 2) + 100.0)]
    assert _lines(fail, [_case(False, None)]) == []        # a model changing no passing case is the table's own


def test_a_passing_case_changed_only_on_rows_the_judge_does_not_hold_decides_nothing(only_conditional):
    fail = [_case(True, np.arange(12.0).reshape(1, 2, 3, 2) + 100.0)]
    passing = _case(False, None)
    passing.live = np.array([[[True, True, False]] * 2])
    passing.under = passing.expected.copy()
    passing.under[..., 2, :] += 50.0                      # only the rows with no key moved
    assert _lines(fail, [passing]) == []


def test_the_first_form_in_order_that_holds_is_the_one_named(monkeypatch):
    order = BEFORE_CONDITIONAL + ("conditional_line",) + AFTER_CONDITIONAL   # the module's order: the denominator
    #                                 after the conditional fit (a table model on some calls keeps its name)
    for name in order:
        monkeypatch.setattr(fitted_forms, name, lambda *a, name=name, **k: [name])
    for first in order:
        assert fitted_forms.fitted_form_lines("k", [], [], _close, None, None, {}) == [first]
        monkeypatch.setattr(fitted_forms, first, lambda *a, **k: [])
    assert fitted_forms.fitted_form_lines("k", [], [], _close, None, None, {}) == []
