"""The rules inside the fitted forms, on hand-made inputs (tests/test_fitted_forms.py runs them on kernels through the
quick suite): the condition search (refimpl/harness/analysis/conditions.py), the rules that generate a placement's
unwritten rows (fitting_placement.py) and the band edges a form applies (fitting_band.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.analysis import fitting_band, fitting_placement
from refimpl.harness.analysis.conditions import Seen, condition


def _case(**features):
    return SimpleNamespace(features=lambda: dict(features))


def test_nothing_decided_is_always():
    assert condition([_case(a=True)], []) == "always"


def test_the_one_feature_true_on_every_failing_case_and_no_decided_one_is_the_condition():
    fail = [_case(a=True, b=True), _case(a=True, b=False)]
    decided = [_case(a=False, b=True)]
    assert condition(fail, decided) == "when a"


def test_a_feature_false_on_every_failing_case_is_offered_negated():
    fail = [_case(a=False), _case(a=False)]
    assert condition(fail, [_case(a=True)]) == "when not a"


def test_the_most_specific_separating_feature_comes_first_and_the_others_are_listed():
    fail = [_case(wide=True, narrow=True)]
    decided = [_case(wide=False, narrow=False)]
    every = [_case(wide=True, narrow=False)] * 3          # wide holds on more of the run's cases than narrow
    assert condition(fail, decided, every) == "when narrow (or: wide)"


def test_a_pair_is_tried_only_when_no_single_feature_separates():
    fail = [_case(a=True, b=True)]
    decided = [_case(a=True, b=False), _case(a=False, b=True)]
    assert condition(fail, decided) == "when a and b"


def test_no_condition_when_a_decided_case_looks_like_a_failing_one():
    assert condition([_case(a=True)], [_case(a=True)]) is None


def test_beyond_three_separating_conditions_the_rest_are_counted():
    fail = [_case(**{n: True for n in "abcde"})]
    decided = [_case(**{n: False for n in "abcde"})]
    text = condition(fail, decided)
    assert text.startswith("when a (or: b; c; or 2 more)"), text


def test_a_case_seen_adds_whether_a_mask_argument_reached_the_target():
    spec = SimpleNamespace(features=lambda: {"causal": True}, Sq=3)
    seen = Seen(SimpleNamespace(spec=spec, mask_given=True))
    assert seen.features() == {"causal": True, "a mask argument is given": True} and seen.Sq == 3
    assert Seen(SimpleNamespace(spec=spec, mask_given=None)).features() == {"causal": True}


@pytest.mark.parametrize("form, asked, left, want", [
    ("left", 5, 5, 5), ("left + 1", 5, 5, 6), ("left - 2", 1, 1, 0), ("left + 2", -1, -1, -1),
    ("unbounded", 3, 3, -1), ("0", -1, -1, 0), ("right + 1", 0, 7, 1), ("right - 1", -1, 4, -1), ("left", 2, 9, 9)])
def test_a_band_form_moves_a_bounded_edge_and_leaves_an_unbounded_one(form, asked, left, want):
    # (form, the edge asked for, the window's left edge, the edge the form applies); -1 = unbounded
    assert fitting_band._edge(form, asked, left) == want


def test_the_slice_width_is_every_m_that_leaves_exactly_the_unwritten_blocks():
    B, Hq, Sq = 2, 3, 4                                  # six flat blocks b * Hq + h; 4 and 5 never written
    zero = np.zeros((B, Hq, Sq), bool)
    zero[1, 1:] = True
    live = np.ones_like(zero)
    assert fitting_placement._slices(zero, live) == {4}
    zero[1, 1] = False                                   # only block 5: slices of 5
    assert fitting_placement._slices(zero, live) == {5}


def test_the_launch_size_is_read_over_the_queries_and_the_heads_of_a_group_folded_together():
    spec = SimpleNamespace(Hq=2, Hkv=1)
    Sq = 40
    folded = np.arange(Sq)[None, :] * 2 + np.arange(2)[:, None]     # (Hq, Sq): i * G + g
    zero = np.broadcast_to(folded >= 64, (1, 2, Sq))
    live = np.ones((1, 2, Sq), bool)
    assert fitting_placement._folded_rows(zero, live, spec) == {64}
    live[:, :, 32:] = False                              # no judged row past 63: every launch of 64 or more fits
    assert fitting_placement._folded_rows(np.zeros_like(zero), live, spec) == {64, 128, 256}
