"""The rules inside the fitted forms, on hand-made inputs (tests/test_fitted_forms.py runs them on kernels through the
quick suite): the condition search (refimpl/harness/analysis/conditions.py), the output-placement fit and the rules
that generate its unwritten rows (fitting_placement.py), the band edges a form applies (fitting_band.py), the fitted
head map (fitting_heads.py), a table model on some calls only (fitting_conditional.py) and where a target's
failures are (localisation.py)."""
import copy
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.analysis import fitting_band, fitting_placement
from refimpl.harness.analysis.conditions import Seen, condition
from refimpl.harness.analysis.fitting_conditional import conditional_line
from refimpl.harness.analysis.fitting_heads import heads_line
from refimpl.harness.analysis.localisation import localise
from refimpl.harness.cases import Status


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
    ("unbounded", 3, 3, -1), ("0", -1, -1, 0), ("right + 1", 0, 7, 1), ("right - 1", -1, 4, -1), ("left", 2, 9, 9),
    ("left (0 as unbounded)", 0, 0, -1), ("left (0 as unbounded)", 3, 3, 3), ("right (0 as unbounded)", 0, 4, -1),
    ("right (0 as unbounded)", 2, 4, 2), ("right (0 as unbounded)", -1, 4, -1)])
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


# --- output-placement (fitting_placement.py) on hand-made cases: E the expected output, `got` the kernel's ---------

def _expected(B, Hq, Sq, Dv=2):
    """Rows that differ from each other by far more than the tolerance."""
    return 1.0 + np.arange(B * Hq * Sq * Dv, dtype=float).reshape(B, Hq, Sq, Dv)


def _placed(E, live=None, weights=True, v_max=1.0, name="c", Hkv=None):
    B, Hq, Sq, _ = E.shape
    spec = SimpleNamespace(id=name, B=B, Hq=Hq, Hkv=Hkv or Hq, Sq=Sq)
    live = np.ones((B, Hq, Sq), bool) if live is None else live
    weights = np.full((B, Hq, Sq, 3), 1 / 3) if weights is True else weights      # every key kept
    return SimpleNamespace(spec=spec, expected=E, live=live, v=np.full((1, 1, 1, 1), v_max), weights=weights)


def _placement(fail, passing=()):
    return fitting_placement.placement_line("k", list(fail), list(passing))


def _example(lines):
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: output-placement — "), lines
    return lines[0].split("(e.g. ", 1)[1][:-1]


def _one_block_unwritten(E, got_row0):
    """Block (0, 0) returns `got_row0`, block (0, 1) is never written."""
    got = np.zeros_like(E)
    got[0, 0] = got_row0
    return got


@pytest.mark.parametrize("factor, fitted", [(1 + 0.5e-3, True), (1 + 1.5e-3, False)])
def test_a_row_is_right_within_a_relative_tolerance_of_one_in_a_thousand_and_else_fits_nothing(factor, fitted):
    E = _expected(1, 3, 1)
    got = E.copy()
    got[0, 1] *= factor
    got[0, 2] = 0.0
    lines = _placement([(_placed(E, v_max=0.0), got)])
    assert (lines != []) == fitted and isinstance(lines, list), lines


@pytest.mark.parametrize("v_max, off, fitted", [
    (1.0, 1.5e-6, True), (1.0, 2.5e-6, False),       # atol = 1e-6 * (1 + max |v|) = 2e-6
    (0.1, 1.5e-6, False),                            # 1.1e-6: the max |v| itself, not at least 1
    (0.0, 1e-6, True),                               # exactly at the tolerance is close
    (1000.0, 5e-4, True)])                           # about 1e-3
def test_the_absolute_tolerance_is_one_in_a_million_times_one_plus_the_largest_value(v_max, off, fitted):
    E = _expected(1, 2, 1)
    E[0, 0, 0, 0] = 0.0                              # an element where only the absolute tolerance counts
    got = _one_block_unwritten(E, E[0, 0] + np.array([[off, 0.0]]))
    assert (_placement([(_placed(E, v_max=v_max), got)]) != []) == fitted


def test_an_output_of_another_shape_is_not_fitted():
    E = _expected(1, 2, 1, Dv=3)
    got = _one_block_unwritten(E, E[0, 0])[..., :2]
    assert _placement([(_placed(E), got)]) == []


def test_a_judged_row_that_is_not_finite_is_never_right_even_against_an_infinite_expected_value():
    E = _expected(1, 2, 1)
    E[0, 0, 0, 0] = -np.inf
    got = _one_block_unwritten(E, np.array([[np.inf, E[0, 0, 0, 1]]]))
    assert _placement([(_placed(E), got)]) == []


def test_a_row_equal_to_several_other_blocks_rows_is_credited_to_the_first_of_them():
    E = _expected(1, 3, 1)
    E[0, 2] = E[0, 0]                                # blocks 0 and 2 expect the same row
    got = E.copy()
    got[0, 1] = E[0, 0]                              # block 1 holds it
    got[0, 2] = 0.0
    assert _example(_placement([(_placed(E), got)])) == (
        "c (B=1, Hq=3, Hkv=3, Sq=1): (batch, head) (0, 2) never written; (0, 1) holds (0, 0)'s")


def test_the_launch_size_sixteen_is_read_from_the_first_unwritten_folded_row():
    zero = np.broadcast_to(np.arange(20) >= 16, (1, 1, 20))
    assert fitting_placement._folded_rows(zero, np.ones((1, 1, 20), bool), SimpleNamespace(Hq=1, Hkv=1)) == {16}


def _fifth_block_unwritten():
    """Five flat blocks, the last never written: slices of 2 and of 4 both leave exactly it."""
    E = _expected(1, 5, 1)
    got = E.copy()
    got[0, 4] = 0.0
    return _placed(E), got


def _six_blocks(live=None, zero_past_four=False):
    E = _expected(1, 6, 1)
    if zero_past_four:
        E[0, 4:] = 0.0
    return _placed(E, live=live), E


def test_the_unwritten_blocks_name_every_slice_width_the_cases_leave_standing():
    line = _placement([_fifth_block_unwritten()])[0]
    assert "fitted: the flattened batch x heads run in slices of 2 (or 4: the cases do not tell them apart): " in line


def test_a_passing_case_whose_judged_rows_a_slice_width_would_lose_rules_that_width_out():
    # six blocks: slices of 4 would lose blocks 4 and 5, slices of 2 none
    line = _placement([_fifth_block_unwritten()], [_six_blocks()])[0]
    assert "run in slices of 2: the last (B * Hq) % 2 never computed" in line


@pytest.mark.parametrize("how", ["expected zero", "not judged"])
def test_a_passing_case_rules_a_width_out_only_through_judged_rows_that_are_not_expected_zero(how):
    live = np.ones((1, 6, 1), bool)
    if how == "not judged":
        live[0, 4:] = False
    passing = _six_blocks(live=live, zero_past_four=how == "expected zero")
    line = _placement([_fifth_block_unwritten()], [passing])[0]
    assert "run in slices of 2 (or 4: the cases do not tell them apart)" in line


def test_a_passing_case_that_would_lose_its_first_block_past_the_last_whole_slice_rules_the_width_out():
    line = _placement([_fifth_block_unwritten()], [(_fifth_block_unwritten()[0], None)])[0]
    assert "fitted" not in line


def _folded_launch_of_16():
    """Hq=2 over one kv head (G=2), ten queries: the folded rows i * 2 + g from 16 on (rows 8, 9) never written."""
    E = _expected(1, 2, 10)
    got = E.copy()
    got[0, :, 8:] = 0.0
    return _placed(E, Hkv=1), got


@pytest.mark.parametrize("judged_head", [0, 1])
def test_a_passing_case_with_a_judged_folded_row_at_or_past_the_launch_rules_the_launch_out(judged_head):
    line = _placement([_folded_launch_of_16()])[0]
    assert "fitted: one launch of 16 rows over the flattened (query, head-in-group) index i * G + g: " in line
    E = _expected(1, 2, 9)                            # the last query is folded row 16 (head 0) or 17 (head 1)
    live = np.zeros((1, 2, 9), bool)
    live[0, judged_head] = True
    line = _placement([_folded_launch_of_16()], [(_placed(E, live=live, Hkv=1), E)])[0]
    assert "one launch" not in line


def _blocks_unwritten(n):
    E = _expected(1, n + 1, 1)
    got = np.zeros_like(E)
    got[0, 0] = E[0, 0]
    return _placed(E), got


@pytest.mark.parametrize("n", [5, 6, 7, 8])
def test_the_example_names_the_first_six_blocks_never_written_and_counts_the_rest(n):
    shown = ", ".join(f"(0, {h})" for h in range(1, min(n, 6) + 1))
    more = f" and {n - 6} more" if n > 6 else ""
    assert _example(_placement([_blocks_unwritten(n)])) == (
        f"c (B=1, Hq={n + 1}, Hkv={n + 1}, Sq=1): (batch, head) {shown}{more} never written")


@pytest.mark.parametrize("partial", [1, 2])
def test_a_block_partly_written_is_named_by_its_unwritten_query_rows_not_as_a_block_never_written(partial):
    E = _expected(1, 4, 4)
    got = E.copy()
    got[0, 1:1 + partial, 2:] = 0.0                  # rows 2..3 of one or two blocks lost
    got[0, 3] = 0.0
    live = np.ones((1, 4, 4), bool)
    live[0, 3] = False                               # a block the judge does not hold is neither
    more = f" ({partial} blocks with unwritten rows)" if partial > 1 else ""
    assert _example(_placement([(_placed(E, live=live), got)])) == (
        f"c (B=1, Hq=4, Hkv=4, Sq=4): query rows 2..3 of (batch, head) (0, 1) never written{more}")


@pytest.mark.parametrize("n", [4, 5, 6])
def test_the_example_names_the_first_four_blocks_holding_another_and_counts_the_rest(n):
    E = _expected(1, n + 1, 1)
    got = np.broadcast_to(E[:, :1], E.shape).copy()  # every block holds block (0, 0)'s row
    held = ", ".join(f"(0, {h}) holds (0, 0)'s" for h in range(1, min(n, 4) + 1))
    more = f" and {n - 4} more" if n > 4 else ""
    line = _placement([(_placed(E), got)])[0]
    assert "fitted" not in line
    assert _example([line]) == f"c (B=1, Hq={n + 1}, Hkv={n + 1}, Sq=1): {held}{more}"


def test_nothing_computed_anywhere_is_not_a_placement():
    E = _expected(1, 2, 1)
    assert _placement([(_placed(E), np.zeros_like(E))]) == []


def test_zeros_everywhere_are_not_a_placement_even_where_zeros_were_expected():
    E = _expected(1, 2, 1)
    E[0, 0] = 0.0                                    # a judged row expected zero: right, but nothing computed
    assert _placement([(_placed(E), np.zeros_like(E))]) == []


def test_rows_lost_only_where_keys_are_masked_are_the_masks_handling_not_a_placement():
    E = _expected(1, 2, 2)
    weights = np.full((1, 2, 2, 3), 1 / 3)
    weights[0, 1, 1] = [0.5, 0.5, 0.0]               # the lost row had a masked key
    got = E.copy()
    got[0, 1, 1] = 0.0
    assert _placement([(_placed(E, weights=weights), got)]) == []
    assert _placement([(_placed(E), got)]) != []     # the same loss on a row that keeps every key
    assert _placement([(_placed(E, weights=None), got)]) == []       # no weights: nothing says it kept them


def test_a_failing_case_whose_rows_are_all_right_refutes_the_placement():
    E = _expected(1, 2, 1)
    assert _placement([_blocks_unwritten(2)]) != []
    assert _placement([_blocks_unwritten(2), (_placed(E), E.copy())]) == []


def test_no_rule_for_the_unwritten_rows_is_fitted_when_some_row_was_moved():
    data, got = _fifth_block_unwritten()             # block 4 lost: slices of 2 or 4 alone would fit
    got[0, 1] = data.expected[0, 0]
    line = _placement([(data, got)])[0]
    assert "fitted" not in line and "(0, 1) holds (0, 0)'s" in line


def test_the_example_is_the_smallest_failing_case_with_rows_computed():
    E = _expected(1, 1, 1)
    nothing = (_placed(E, name="small"), np.zeros_like(E))            # all lost: no row computed
    assert _example(_placement([nothing, _blocks_unwritten(2)])).startswith("c (B=1, Hq=3")
    right = _blocks_unwritten(1)
    right[0].spec.id = "right"                                         # right rows computed, none moved
    E = _expected(1, 3, 1)
    got = E.copy()
    got[0, 1] = E[0, 0]
    assert _example(_placement([(_placed(E, name="moved"), got), right])).startswith("right (B=1, Hq=2")


# --- the condition search (conditions.py) ---------------------------------------------------------------------

def test_a_case_seen_survives_a_copy_made_before_its_spec_is_set():
    seen = Seen(SimpleNamespace(spec=SimpleNamespace(features=lambda: {"causal": True}, Sq=3), mask_given=False))
    twin = copy.deepcopy(seen)                      # copy builds an empty Seen, then looks up __setstate__ on it
    assert twin.features() == {"causal": True, "a mask argument is given": False} and twin.Sq == 3


def test_a_feature_a_case_does_not_name_is_false_on_it():
    assert condition([_case(a=True)], [_case()]) == "when a"
    assert condition([_case()], [_case(a=True)]) == "when not a"


def test_pairs_are_ordered_by_how_few_of_the_runs_cases_both_hold_on():
    fail = [_case(a=True, b=True, c=True)]
    decided = [_case(a=True, b=False, c=False), _case(a=False, b=True, c=True)]   # no single feature separates
    every = [_case(a=True, b=True, c=False)] + [_case(a=False, b=False, c=True)] * 2
    # both hold on: a and b, one case of the run; a and c, none
    assert condition(fail, decided, every) == "when a and c (or: a and b)"


@pytest.mark.parametrize("n, tail", [(3, "when a (or: b; c)"), (4, "when a (or: b; c; or 1 more)")])
def test_three_separating_conditions_are_named_and_the_rest_counted(n, tail):
    names = "abcd"[:n]
    assert condition([_case(**{x: True for x in names})], [_case(**{x: False for x in names})]) == tail


# --- a table model on some calls only (fitting_conditional.py) ------------------------------------------------

def _variant_case(batch, under, expected="E"):
    """A case as the conditional fit reads it: `under` what the variant returns on it."""
    spec = SimpleNamespace(features=lambda: {"batch > 1": batch})
    return SimpleNamespace(spec=spec, mask_given=None, under=under, expected=expected)


def _model(tolerance=(1e-3, 1e-6), variants=("True = masked",)):
    return SimpleNamespace(name="mask-polarity", explanation="the mask read inverted", tolerance=tolerance,
                           variants=[SimpleNamespace(label=x, in_float32=False) for x in variants])


def _conditional(fail, passing, models):
    return conditional_line("k", [(d, "V") for d in fail], [(d, None) for d in passing],
                            reproduces=lambda out, d, got: out == got, changes=lambda out, d: out != d.expected,
                            model_out=lambda variant, d: d.under.get(variant.label, d.expected), models=models)


def test_a_variant_that_reproduces_the_failures_is_named_with_the_condition_its_changed_passing_cases_decide():
    fail = [_variant_case(True, {"True = masked": "V"})]
    passing = [_variant_case(False, {"True = masked": "V"}), _variant_case(True, {})]
    assert _conditional(fail, passing, {"m": _model()}) == [
        "diagnosis k: mask-polarity — the mask read inverted (True = masked) when batch > 1 (fitted: all 1 failing "
        "cases sampled reproduced; 1 passing cases it would change decide the condition)"]


def test_a_model_with_a_float32_tolerance_is_not_tried():
    fail = [_variant_case(True, {"True = masked": "V"})]
    passing = [_variant_case(False, {"True = masked": "V"})]
    assert _conditional(fail, passing, {"m": _model(tolerance=(1e-2, 1e-4))}) == []


def test_no_failing_case_no_conditional_model():
    assert _conditional([], [_variant_case(False, {"True = masked": "V"})], {"m": _model()}) == []


def test_a_variant_whose_changed_passing_cases_no_condition_separates_gives_way_to_the_next():
    fail = [_variant_case(True, {"first": "V", "second": "V"})]
    passing = [_variant_case(True, {"first": "V"}), _variant_case(False, {"second": "V"})]
    lines = _conditional(fail, passing, {"m": _model(variants=("first", "second"))})
    assert len(lines) == 1 and "(second) when batch > 1 (" in lines[0], lines
    assert _conditional(fail, passing[:1], {"m": _model(variants=("first",))}) == []


# --- the fitted head map (fitting_heads.py) -------------------------------------------------------------------

def _softmax_attention(q, k, v):
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def _heads_case(Hq, Hkv, kv_of, *, seed=0, live=None, seqlens=None, features=None, same_kv=False, Sq=3):
    """A case whose output reads kv head kv_of(h) for query head h: (data, got)."""
    rng = np.random.default_rng(seed)
    B, Sk, D = 1, 4, 3
    q = rng.standard_normal((B, Hq, Sq, D))
    k = rng.standard_normal((B, Hkv, Sk, D))
    v = rng.standard_normal((B, Hkv, Sk, D))
    if same_kv:                                      # every kv head alike: no map changes the output
        k[:], v[:] = k[:, :1], v[:, :1]
    G = Hq // Hkv

    def reading(pick):
        return np.stack([_softmax_attention(q[:, h], k[:, pick(h)], v[:, pick(h)]) for h in range(Hq)], axis=1)
    feats = dict(features or {})
    spec = SimpleNamespace(id="c", B=B, Hq=Hq, Hkv=Hkv, Sq=Sq, seqlens=seqlens, cache_lens=None,
                           features=lambda: feats)
    data = SimpleNamespace(spec=spec, q=q, k=k, v=v, expected=reading(lambda h: h // G), mask_given=None,
                           live=np.ones((B, Hq, Sq), bool) if live is None else live, reference_kwargs=dict)
    return data, reading(kv_of)


def _heads(fail, passing=()):
    def close(a, b, v):
        return np.allclose(a, b, rtol=1e-9, atol=1e-12)

    def changes(out, data):
        return not np.allclose(out, data.expected, rtol=1e-9, atol=1e-12)
    return heads_line("k", list(fail), list(passing), close, changes, condition, Seen)


def _reversed_groups(Hq, Hkv):
    return lambda h: Hkv - 1 - h // (Hq // Hkv)


_HEADS = "diagnosis k: gqa-grouping — GQA query head h uses the wrong kv head instead of h // (Hq // Hkv): fitted "


def test_the_line_prints_the_map_of_the_first_three_shapes():
    fail = [_heads_case(hq, hkv, _reversed_groups(hq, hkv)) for hq, hkv in [(4, 4), (2, 2), (4, 2), (3, 3)]]
    assert _heads(fail) == [
        _HEADS + "Hq=2, Hkv=2: query heads 0..1 read kv heads 1 0 instead of 0 1; Hq=3, Hkv=3: query heads 0..2 "
        "read kv heads 2 1 0 instead of 0 1 2; Hq=4, Hkv=2: query heads 0..3 read kv heads 1 1 0 0 instead of 0 0 1 1"]


def test_a_failing_case_whose_heads_read_their_own_kv_heads_refutes_the_map():
    fail = [_heads_case(2, 2, _reversed_groups(2, 2)), _heads_case(4, 2, lambda h: h // 2)]
    assert _heads(fail[:1]) != [] and _heads(fail) == []


def test_the_map_is_not_fitted_on_a_padded_batch():
    assert _heads([_heads_case(2, 2, _reversed_groups(2, 2), seqlens=[3])]) == []


def test_a_query_head_with_no_judged_row_reads_its_own_kv_head_in_the_map():
    live = np.ones((1, 4, 3), bool)
    live[0, 3] = False
    assert _heads([_heads_case(4, 2, _reversed_groups(4, 2), live=live)]) == [
        _HEADS + "Hq=4, Hkv=2: query heads 0..3 read kv heads 1 1 0 1 instead of 0 0 1 1"]


def test_only_the_passing_cases_the_map_would_change_decide_when_it_applies():
    fail = [_heads_case(2, 2, _reversed_groups(2, 2), features={"decode": True})]
    alike = _heads_case(2, 2, _reversed_groups(2, 2), seed=1, features={"decode": True}, same_kv=True)
    changed = _heads_case(2, 2, _reversed_groups(2, 2), seed=2, features={"decode": False}, Sq=5)
    assert _heads(fail, [alike]) == [_HEADS + "Hq=2, Hkv=2: query heads 0..1 read kv heads 1 0 instead of 0 1"]
    assert _heads(fail, [alike, changed]) == [
        _HEADS + "Hq=2, Hkv=2: query heads 0..1 read kv heads 1 0 instead of 0 1; when decode"]
    lookalike = _heads_case(2, 2, _reversed_groups(2, 2), seed=3, features={"decode": True})
    assert _heads(fail, [lookalike]) == []


# --- where a target's failures are (localisation.py) ----------------------------------------------------------

def _result(i, failed, **features):
    """A result with its case's features (and one true on every case: a result without features is not counted)."""
    return SimpleNamespace(id=f"r{i}", status=Status.FAIL if failed else Status.PASS,
                           features={"float64": True, **features}, detail="")


def _sized(**sizes):
    return SimpleNamespace(**{"Sq": 4, "Sk": 4, "D": 8, "Dv": 8, "B": 1, "Hq": 2, **sizes})


def _localise_sk(fail_sk, pass_sk):
    results = [_result(i, True) for i in range(len(fail_sk))]
    results += [_result(i + len(fail_sk), False) for i in range(len(pass_sk))]
    specs = {r.id: _sized(Sk=sk) for r, sk in zip(results, list(fail_sk) + list(pass_sk))}
    return localise(results, specs)


@pytest.mark.parametrize("fail_sk, pass_sk, want", [
    ((33, 64), (16, 32), "fails only when: Sk >= 33"),
    ((8, 16), (32, 64), "fails only when: Sk <= 16"),
    ((33, 64), (16, 33), "fails mostly when: Sk >= 33 (true on 2/2 failing, 1/2 passing cases, 100% of the failures)"),
    ((8, 16), (16, 32), "fails mostly when: Sk <= 16 (true on 2/2 failing, 1/2 passing cases, 100% of the failures)")])
def test_a_size_threshold_is_the_failing_cases_own_bound_and_must_leave_every_passing_case_out(fail_sk, pass_sk, want):
    assert _localise_sk(fail_sk, pass_sk) == want


def test_a_threshold_that_excludes_no_case_is_not_offered():
    results = [_result(0, True, a=True), _result(1, True, a=False), _result(2, False, a=True),
               _result(3, False, a=False)]
    specs = {r.id: _sized() for r in results}       # every size the same on every case
    assert localise(results, specs) == (
        "fails mostly when: a (true on 1/2 failing, 1/2 passing cases, 50% of the failures)")


def test_a_feature_true_on_every_case_says_nothing_of_where_the_failures_are():
    results = [_result(0, True, a=True, b=True), _result(1, True, a=True, b=False), _result(2, False, a=True, b=True),
               _result(3, False, a=True, b=False)]
    assert localise(results) == "fails mostly when: b (true on 1/2 failing, 1/2 passing cases, 50% of the failures)"


def test_a_feature_a_result_does_not_name_is_false_on_it():
    results = [_result(0, True, x=True), _result(1, True), _result(2, False, x=False)]
    assert localise(results) == "fails mostly when: x (true on 1/2 failing, 0/1 passing cases, 50% of the failures)"
    results = [_result(0, True, x=True), _result(1, False), _result(2, False, x=False)]
    assert localise(results) == "fails only when: x"


def test_a_pair_holds_only_where_both_features_hold_on_every_failing_case():
    results = [_result(0, True, a=True, b=False), _result(1, True, a=False, b=True),
               _result(2, False, a=False, b=False)]
    assert localise(results) == "fails mostly when: a (true on 1/2 failing, 0/1 passing cases, 50% of the failures)"
    results = [_result(0, True, a=True, b=True), _result(1, False, a=False, b=True), _result(2, False, a=True, b=False)]
    assert localise(results) == "fails only when: a and b"


def test_the_best_partial_condition_is_the_largest_share_of_failing_minus_share_of_passing_cases():
    results = [_result(0, True, a=True, b=True), _result(1, True, a=True, b=True), _result(2, True, a=False, b=True),
               _result(3, False, a=False, b=True), _result(4, False, a=False, b=False)]
    # a: 2/3 - 0/2; b: 3/3 - 1/2
    assert localise(results) == "fails mostly when: a (true on 2/3 failing, 0/2 passing cases, 67% of the failures)"
    results = ([_result(0, True, a=True, b=True)] + [_result(i, True, a=False, b=True) for i in (1, 2, 3)]
               + [_result(4, True, a=False, b=False), _result(5, False, a=False, b=True)])
    # a: 1/5 - 0/1; b: 4/5 - 1/1 (the one passing case is the whole of the passing share)
    assert localise(results) == "fails mostly when: a (true on 1/5 failing, 0/1 passing cases, 20% of the failures)"


def test_no_condition_true_on_some_failing_case_separates_nothing():
    results = [_result(0, True, a=False), _result(1, True, a=False), _result(2, False, a=True)]
    assert localise(results) == "fails when: no condition separates the 2 failing from the 1 passing cases"
    results = [_result(0, True), _result(1, False)]
    assert localise(results) == "fails when: no condition separates the 1 failing from the 1 passing cases"
