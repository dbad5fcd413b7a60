"""The band's edges fitted from a kernel's output (refimpl/harness/analysis/fitting_band.py; docs/diagnosis.md, "The
band's edges"), on hand-made cases: the forms a failing case's output leaves standing, the passing cases with a band
that rule forms out, the naming (`window-bounds`, `causal-alignment`) and the listing of the forms that fit (the first
three and how many more). The kernel's output here is refimpl's with the band the kernel applied."""
import itertools
import re

import numpy as np
from refimpl.attention import scaled_dot_product_attention
from refimpl.harness.analysis.fitting_band import band_line
from refimpl.harness.cases.features import CaseSpec, materialise

_INDEX = itertools.count()


def _case(**kw):
    sizes = dict(Sq=4, Sk=6, D=4, Dv=3)            # Sq != Sk: the two alignments differ
    sizes.update(kw)
    return materialise(CaseSpec("band-rules", next(_INDEX), **sizes))


def _applied(data, window, alignment=None):
    """refimpl's output of the case with the band ``window`` (-1: unbounded; causal dropped: the band is the window)."""
    kw = dict(data.reference_kwargs(), is_causal=False, window=window, alignment=alignment or data.spec.alignment)
    return scaled_dot_product_attention(data.q, data.k, data.v, **kw)[0]


def _close(a, b, v):
    return np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)


def _explains(out, data, got):
    return True


def _line(fail, passing=(), explains=_explains):
    return band_line("t", list(fail), list(passing), _close, explains)


def _fitted(lines):
    """(the model named, the forms listed, how many more)."""
    assert len(lines) == 1, lines
    model, listed = re.search(r"^diagnosis t: (\S+) — .* the kernel applied (.+?) \(left, right: ", lines[0]).groups()
    more = re.search(r"; or (\d+) more$", listed)
    shown = listed[:more.start()] if more else listed
    return model, shown.split("; or "), int(more.group(1)) if more else 0


def test_a_causal_band_applied_in_the_other_alignment_is_named_causal_alignment():
    # causal is the window (-1, 0); the kernel applied it bottom-right on a top-left case
    fail = [(d, _applied(d, (-1, 0), "bottom-right")) for d in (_case(is_causal=True), _case(is_causal=True, Sk=7))]
    model, shown, _ = _fitted(_line(fail))
    assert model == "causal-alignment" and shown[0] == "(left, right) in the other alignment", shown


def test_a_causal_window_made_symmetric_is_fitted_as_left_plus_one_on_both_sides():
    # causal windows (0, 0) and (2, 0): the kernel applied (1, 1) and (3, 3) in the case's alignment. (3, 3) is no
    # other form's band (the right edge of every other form is at most 2 there), so the symmetric form alone fits.
    fail = [(d, _applied(d, (left + 1, left + 1))) for left in (0, 2)
            for d in (_case(is_causal=True, window=(left, 0)),)]
    model, shown, more = _fitted(_line(fail))
    assert (model, shown, more) == (
        "window-bounds", ["(left + 1, left + 1) under causal with a left window (a causal window made symmetric)"], 0)


def test_a_causal_window_with_a_left_edge_of_zero_is_made_symmetric_too():
    d = _case(is_causal=True, window=(0, 0))
    _, shown, _ = _fitted(_line([(d, _applied(d, (1, 1)))]))
    assert "(left + 1, left + 1) under causal with a left window (a causal window made symmetric)" in shown, shown


def test_four_forms_that_fit_show_the_first_three_and_count_one_more():
    # window (2, 1) applied as (2, 0): left' is left or left (0 as unbounded); right' is right - 1 or 0
    d = _case(window=(2, 1))
    assert _fitted(_line([(d, _applied(d, (2, 0)))])) == (
        "window-bounds", ["(left, right - 1)", "(left, 0)", "(left (0 as unbounded), right - 1)"], 1)


def test_three_forms_that_fit_are_all_shown_and_none_counted():
    # causal (-1, 0) applied as the window (0, -1): left' is 0; right' unbounded, left (-1) or right (0 as unbounded)
    d = _case(is_causal=True)
    lines = _line([(d, _applied(d, (0, -1)))])
    assert _fitted(lines) == ("window-bounds", ["(0, unbounded)", "(0, left)", "(0, right (0 as unbounded))"], 0)
    assert " more" not in lines[0], lines


def test_a_passing_case_without_a_band_rules_no_form_out():
    # (left, 0) on a case without a band would be (unbounded, 0), a causal band; such a case says nothing
    d = _case(window=(2, 1))
    plain = _case()
    lines = _line([(d, _applied(d, (2, 0)))], [(plain, plain.expected)])
    assert _fitted(lines)[1:] == (["(left, right - 1)", "(left, 0)", "(left (0 as unbounded), right - 1)"], 1)


def test_a_passing_case_with_a_band_rules_out_the_forms_that_change_it():
    d, ok = _case(is_causal=True), _case(is_causal=True, Sk=7)
    assert _line([(d, _applied(d, (-1, -1)))], [(ok, ok.expected)]) == []      # every form dropping causal changes it


def test_a_form_that_reproduces_but_does_not_explain_a_failing_case_does_not_fit():
    d = _case(is_causal=True)
    assert _line([(d, _applied(d, (-1, 0), "bottom-right"))], explains=lambda out, data, got: False) == []


def test_a_failing_case_whose_band_reached_the_target_inside_its_mask_leaves_no_form():
    d = _case(is_causal=True)
    d.band_flags = False
    assert _line([(d, _applied(d, (-1, 0), "bottom-right"))]) == []


def test_no_failing_case_no_form():
    ok = _case(is_causal=True)
    assert _line([], [(ok, ok.expected)]) == []
