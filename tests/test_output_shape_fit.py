"""``output-shape``: failing cases that return another shape are fitted as a formula of the case's sizes
(refimpl/harness/analysis/fitting_shape.py): rules on hand-made specs, and kernels built with several wrong shapes
named with the one they return."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.analysis.fitting_shape import fit_shape
from tests.support.quick_runs import forward_lines


def _spec(B=2, Hq=3, Hkv=3, Sq=5, Sk=7, D=4, Dv=6):
    return SimpleNamespace(B=B, Hq=Hq, Hkv=Hkv, Sq=Sq, Sk=Sk, D=D, Dv=Dv)


def test_each_axis_is_read_as_the_size_it_equals_on_every_case():
    a, b = _spec(), _spec(B=1, Hq=2, Hkv=1, Sq=9, Sk=3, D=8, Dv=5)
    assert fit_shape([(a, (2, 3, 5, 4)), (b, (1, 2, 9, 8))]) == ("B", "Hq", "Sq", "D")
    assert fit_shape([(a, (1, 2, 3, 5, 6)), (b, (1, 1, 2, 9, 5))]) == ("1", "B", "Hq", "Sq", "Dv")
    assert fit_shape([(a, (2, 5, 3, 6)), (b, (1, 9, 2, 5))]) == ("B", "Sq", "Hq", "Dv")


def test_where_several_sizes_fit_the_expected_one_at_that_axis_is_chosen():
    same = _spec(B=3, Hq=3, Hkv=3, Sq=6, Sk=6, D=6, Dv=6)
    assert fit_shape([(same, (3, 3, 6, 6))]) == ("B", "Hq", "Sq", "Dv")
    assert fit_shape([(same, (1, 3, 3, 6, 6))]) == ("1", "B", "Hq", "Sq", "Dv")
    ones = _spec(B=1, Hq=1, Hkv=1, Sq=4, Sk=5, D=3, Dv=2)
    assert fit_shape([(ones, (1, 1, 1, 4, 2))]) == ("1", "B", "Hq", "Sq", "Dv")      # an extra axis of 1: "1"


def test_no_formula_when_the_axes_disagree_or_a_size_fits_no_name():
    a, b = _spec(), _spec(B=1)
    assert fit_shape([(a, (2, 3, 5, 4)), (b, (1, 3, 5, 4, 1))]) is None          # another number of axes
    assert fit_shape([(a, (2, 3, 5, 11))]) is None                                  # 11 is no size of the case
    assert fit_shape([(a, (2, 3, 5, 4)), (b, (1, 3, 5, 6))]) is None               # D on one, Dv on the other
    assert fit_shape([]) is None


def _numpy_kernel(shape_of):
    """fn(q, k, v, mask=None, scale=None): the right attention, returned reshaped by `shape_of` where it differs."""
    def fn(q, k, v, mask=None, scale=None):
        c = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
        s = q @ np.swapaxes(k, -1, -2) * c
        if mask is not None:
            s = np.where(mask, s, -np.inf) if np.asarray(mask).dtype == bool else s + mask
        top = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(top), top, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        return shape_of(e / np.where(z == 0, 1.0, z) @ v, q)
    return fn


def _first_d_channels(out, q):          # an accumulator sized with D: D channels, the first min(D, Dv) filled
    acc = np.zeros(out.shape[:-1] + (q.shape[-1],))
    n = min(q.shape[-1], out.shape[-1])
    acc[..., :n] = out[..., :n]
    return acc


def _extra_axis(out, q):
    return out[None]


@pytest.mark.parametrize("shape_of, formula", [(_first_d_channels, "(B, Hq, Sq, D)"),
                                               (_extra_axis, "(1, B, Hq, Sq, Dv)")])
def test_a_kernel_returning_another_shape_is_named_with_it(shape_of, formula):
    lines = forward_lines(_numpy_kernel(shape_of))
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: output-shape — "), lines
    assert f"fitted {formula} where (B, Hq, Sq, Dv) is expected" in lines[0], lines


def _data(features, **sizes):
    spec = _spec(**sizes)
    spec.features = lambda: dict(features)
    return SimpleNamespace(spec=spec, expected=np.zeros((spec.B, spec.Hq, spec.Sq, spec.Dv)), mask_given=None)


def _shape_line(shaped, passing, raised=0):
    from refimpl.harness.analysis.conditions import Seen, condition
    from refimpl.harness.analysis.fitting_shape import shape_line
    return shape_line("k", shaped, passing, condition, Seen, raised=raised)


HEAD = ("diagnosis k: output-shape — the output has another shape: fitted (B, Hq, Sq, D) where (B, Hq, Sq, Dv) is "
        "expected")


def test_the_passing_cases_the_formula_would_change_decide_when_and_raised_cases_are_counted():
    fail = [(_data({"f": True}), (2, 3, 5, 4))]
    same = _data({"f": False}, D=6, Dv=6)                      # D == Dv: the formula leaves its shape alone
    changed = _data({"f": False}, D=8, Dv=5)
    assert _shape_line(fail, [same]) == [HEAD + ", on all 1 failing cases with an output"]
    assert _shape_line(fail, [same, changed], raised=3) == [
        HEAD + ", on all 1 failing cases with an output (3 more raised); when f"]
    lookalike = _data({"f": True}, D=8, Dv=5)
    assert _shape_line(fail, [lookalike]) == [
        HEAD + ", on all 1 failing cases with an output; no case feature separates them from the passing cases"]


def test_the_right_shape_or_no_formula_gives_no_line():
    assert _shape_line([(_data({}), (2, 3, 5, 6))], []) == []
    assert _shape_line([(_data({}), (2, 3, 5, 11))], []) == []


def test_an_axis_at_the_expected_place_keeps_its_name_and_an_extra_one_is_1_before_any_size():
    one_batch = _spec(B=1, Hq=3, Hkv=3, Sq=5, Sk=7, D=4, Dv=6)
    assert fit_shape([(one_batch, (1, 3, 5, 4))]) == ("B", "Hq", "Sq", "D")       # B = 1, in B's place: B
    flat = _spec(B=2, Hq=3, Hkv=3, Sq=5, Sk=7, D=4, Dv=1)
    assert fit_shape([(flat, (1, 2, 3, 5, 1))]) == ("1", "B", "Hq", "Sq", "Dv")    # Dv = 1 too: the extra axis is 1
