"""The dropout diagnosis's rule one bound at a time (refimpl/harness/analysis/diagnosis_dropout.py, issue #24): a
model reproduces an output within ``atol + rtol * |got|`` (atol = 1e-6 x (1 + max|V| / (1 - p)), rtol 1e-3, NaN
equal to NaN), explains a failed case when at most EXPLAINS = 1/2 as far from it as the right replay (which must
differ from it), agrees with the passing cases, reads at most MAX_FAILING failed and MAX_PASSING passing cases, and
gives no line when a failure is not the dropout's; the keep rate tells ``dropout-rate-swapped`` apart.

The rule is read with one hand-made model and a hand-made right replay (both fixed outputs, 0 but for their first
entry), so that each bound is met exactly; the case's weights and values are a real small case's."""
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.bug_model import BugModel, Variant
from refimpl.harness.analysis import diagnosis_dropout as dd
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore

SPEC = next(s for s in select(["sizes"], "quick", ("float64",)) if s.index == 8)     # 1 x 1 x 31 x 63, Dv 8
DATA = CaseStore().get(SPEC)
assert DATA.live.all() and (DATA.weights > 0).all()
SHAPE = DATA.expected.shape
P = 0.3


def _out(x=0.0):
    a = np.zeros(SHAPE)
    a[0, 0, 0, 0] = x
    return a


class _Store:
    """What the diagnosis reads of a case store: ``get(spec)`` and the cache ``_data`` (by case id)."""
    def __init__(self, data=DATA, cached=True):
        self.data, self._data = data, ({SPEC.id: data} if cached else {})

    def get(self, spec):
        return self.data


def _result(got_x=0.0, status=Status.FAIL, keep=True, p=P, given=True, keep_pattern=None):
    keep_pattern = np.ones(DATA.weights.shape, bool) if keep_pattern is None else keep_pattern
    got = SimpleNamespace(output=_out(got_x) if np.isscalar(got_x) else got_x, dropout_p=p, dropout_given=given,
                          dropout_keep=keep_pattern if keep else None)
    return SimpleNamespace(id=SPEC.id, status=status, got=got)


@pytest.fixture
def hand(monkeypatch):
    """One model (named ``name``, default "dropout-hand") whose output is ``_out(model)``; the right replay is
    ``_out(right)``. Returns a setter."""
    state = {"model": 0.0, "right": 0.0}

    def setter(model=0.0, right=0.0, name="dropout-hand"):
        state.update(model=model, right=right)
        fn = Variant("only", lambda w, v, keep, p: _out(state["model"]))
        monkeypatch.setattr(dd, "MODELS", {name: BugModel(name, "made by hand", (fn,))})
        monkeypatch.setattr(dd, "right", lambda w, v, keep, p: _out(state["right"]))
    setter()
    return setter


def _lines(results, store=None, specs="default"):
    specs = {SPEC.id: SPEC} if specs == "default" else specs
    return [line.split(": ", 1)[1].split(" — ")[0] for line in
            dd.dropout_lines(results, store or _Store(), "t", specs)]


# --- explains: at most half as far as the right replay, which must differ ----------------------------------

@pytest.mark.parametrize("model,named", [(2.0 ** -21, True), (0.75 * 2.0 ** -20, False)])
def test_a_model_explains_a_failed_case_when_at_most_half_as_far_as_the_right_replay(hand, model, named):
    hand(model=model, right=2.0 ** -20)         # got 0: far = 2^-20, d = model (all within atol: reproduced)
    assert _lines([_result(0.0)]) == (["dropout-hand"] if named else [])


def test_a_failed_case_whose_output_is_the_right_replay_is_explained_by_no_model(hand):
    hand(model=0.0, right=0.0)                  # far = 0: the dropout did it right, the failure is elsewhere
    assert _lines([_result(0.0)]) == []


# --- reproduces: atol + rtol |got|, NaN equal to NaN ---------------------------------------------------------

@pytest.mark.parametrize("factor,named", [(0.99, True), (1.01, False)])
def test_a_model_reproduces_within_the_absolute_tolerance_relative_to_one_plus_max_v_over_keep(hand, factor, named):
    data = dataclasses.replace(DATA, v=DATA.v * (0.25 / np.abs(DATA.v).max()))         # max|V| = 0.25
    atol = 1e-6 * (1.0 + 0.25 / (1.0 - P))
    hand(model=factor * atol, right=10.0)
    assert _lines([_result(0.0)], _Store(data)) == (["dropout-hand"] if named else [])


@pytest.mark.parametrize("factor,named", [(0.99, True), (1.01, False)])
def test_a_model_reproduces_within_a_relative_tolerance_of_one_in_a_thousand(hand, factor, named):
    atol = 1e-6 * (1.0 + np.abs(DATA.v).max() / (1.0 - P))
    hand(model=1000.0 + factor * (atol + 1e-3 * 1000.0), right=0.0)
    assert _lines([_result(1000.0)]) == (["dropout-hand"] if named else [])


def test_a_nan_output_is_reproduced_by_a_model_giving_nan_there(hand):
    hand(model=np.nan, right=0.0)
    assert _lines([_result(np.nan)]) == ["dropout-hand"]


# --- the passing cases, the caps, the failures that are not the dropout's ---------------------------------

def test_a_passing_case_the_model_does_not_reproduce_rules_it_out(hand):
    hand(model=0.0, right=1.0)
    assert _lines([_result(0.0), _result(0.0, Status.PASS)]) == ["dropout-hand"]
    assert _lines([_result(0.0), _result(1.0, Status.PASS)]) == []


def test_the_diagnosis_reads_the_first_max_failing_failed_cases_only(hand):
    hand(model=0.0, right=1.0)
    n = dd.MAX_FAILING
    assert n == 40
    assert _lines([_result(0.0)] * n + [_result(1.0)]) == ["dropout-hand"]
    assert _lines([_result(0.0)] * (n - 1) + [_result(1.0)]) == []


def test_the_diagnosis_reads_the_first_max_passing_passing_cases_only(hand):
    hand(model=0.0, right=1.0)
    n = dd.MAX_PASSING
    assert n == 20
    ok, against = _result(0.0, Status.PASS), _result(1.0, Status.PASS)
    assert _lines([_result(0.0)] + [ok] * n + [against]) == ["dropout-hand"]
    assert _lines([_result(0.0)] + [ok] * (n - 1) + [against]) == []


def test_a_failed_case_without_a_pattern_is_not_the_dropouts_and_a_passing_one_is_skipped(hand):
    hand(model=0.0, right=1.0)
    assert _lines([_result(0.0), _result(0.0, Status.PASS, keep=False)]) == ["dropout-hand"]
    assert _lines([_result(0.0), _result(0.0, keep=False)]) == []


def test_a_failed_case_with_dropout_probability_one_is_no_dropout_models(hand):
    hand(model=0.0, right=1.0)
    assert _lines([_result(0.0, p=1.0)]) == []


# --- the case data: from the specs when given, else from the store's cache ---------------------------------

def test_the_case_data_comes_from_the_specs_when_given_else_from_the_stores_cache(hand):
    hand(model=0.0, right=1.0)
    assert _lines([_result(0.0)], _Store(cached=False)) == ["dropout-hand"]
    assert _lines([_result(0.0)], _Store(cached=True), specs=None) == ["dropout-hand"]


# --- the keep rate ----------------------------------------------------------------------------------------

def _drawn(rate, seed=0):
    return np.random.default_rng(seed).random(DATA.weights.shape) < rate


def test_a_single_failed_case_with_a_returned_pattern_is_diagnosed(hand):
    hand(model=0.0, right=1.0)
    assert _lines([_result(0.0, given=False, keep_pattern=_drawn(1 - P))]) == ["dropout-hand"]


@pytest.mark.parametrize("p,rate,named", [(0.3, 0.3, True), (0.3, 0.7, False), (0.5, 0.5, False)])
def test_rate_swapped_needs_a_keep_rate_that_rejects_one_minus_p_and_not_p(hand, p, rate, named):
    hand(model=0.0, right=1.0, name=dd.SWAPPED)
    assert _lines([_result(0.0, p=p, given=False, keep_pattern=_drawn(rate))]) == ([dd.SWAPPED] if named else [])
