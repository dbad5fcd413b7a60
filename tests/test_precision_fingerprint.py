"""The precision fingerprints one rule at a time (refimpl/harness/analysis/precision_fingerprint.py, issue #24).

* float32 arithmetic: every failing case float64, each with an error relative to its largest expected value in
  [u32 / 8, 1e-4] (u32 = 2^-24), and a least-squares slope within float32 rounding's allowance.
* low-precision: float32 or float64 cases, each with an error within [e_T / 16, 16 e_T] of the error e_T of the
  correct computation rounded to the 16-bit type T, or overflowing on the same rows; the failing cases at least as
  many as the passing ones of their dtypes.

The rules are read on hand-made outputs: the expected values have a largest magnitude of exactly 1, and an error
is put on an entry whose expected value is 0, so that the error is exactly the chosen value and the slope on the
expected values exactly 1. The 16-bit or float32 computation (the "null") is set by hand where a rule is read, and
computed (and compared with a float32 or float16 computation written here) where the nulls are tested."""
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.analysis import precision_fingerprint as pf
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.tolerance_slope import slope_allowance, slope_deviation

U32 = 2.0 ** -24
EXP = np.array([[1.0, 0.0], [0.5, 0.0], [-0.25, 0.0]]).reshape(1, 1, 3, 2)       # largest |value| 1


def _with(at, x):
    """EXP with entry ``at`` (an index of its second column, expected 0) set to x."""
    a = EXP.copy()
    a[0, 0, at, 1] = x
    return a


def _data(dtype="float64", expected=EXP, live=None):
    return SimpleNamespace(spec=SimpleNamespace(dtype=dtype, id=f"hand/{dtype}"), expected=expected,
                           live=np.ones(expected.shape[:-1], bool) if live is None else live)


# --- _errors: (the target's, the type's own) largest error relative to the largest expected value ---------------

@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_the_errors_are_the_largest_absolute_ones_relative_to_the_largest_expected_value(scale):
    data = _data(expected=EXP * scale)
    got, null = _with(0, 3e-3) * scale, _with(2, 1e-3) * scale
    assert pf._errors(data, got, null, "float16") == pytest.approx((3e-3, 1e-3), rel=1e-12)


def test_the_errors_read_only_the_rows_with_a_key():
    live = np.array([[[True, True, False]]])
    data = _data(live=live)
    got = _with(0, 3e-3)
    got[0, 0, 2, 0] = 100.0                  # a dead row
    assert pf._errors(data, got, _with(1, 1e-3), "float16") == pytest.approx((3e-3, 1e-3), rel=1e-12)


def test_a_case_without_a_nonzero_expected_value_or_without_a_null_says_nothing():
    assert pf._errors(_data(expected=np.zeros((1, 1, 3, 2))), _with(0, 1e-3), EXP, "float16") is None
    assert pf._errors(_data(live=np.zeros((1, 1, 3), bool)), _with(0, 1e-3), EXP, "float16") is None
    assert pf._errors(_data(), _with(0, 1e-3), None, "float16") is None


def test_an_overflow_is_explained_only_where_the_null_overflows_on_the_same_rows():
    got = _with(0, np.inf)
    assert pf._errors(_data(), got, _with(0, np.inf), "float16") == (np.inf, np.inf)
    assert pf._errors(_data(), got, _with(0, -np.inf), "float16") == (np.inf, np.inf)     # finite or not, alike
    assert pf._errors(_data(), got, _with(1, np.inf), "float16") is None
    assert pf._errors(_data(), got, EXP, "float16") is None


def test_a_slope_beyond_the_allowance_of_the_types_rounding_says_nothing():
    # one value, 1: the null exact, so the allowance is max(2 u, 4 u) = 4 u (u = 2^-11 for float16); an output
    # 1 + 4 u has the slope 1 + 4 u exactly: at the allowance, still read; one ulp more is not
    data = _data(expected=np.ones((1, 1, 1, 1)))
    null = np.ones((1, 1, 1, 1))
    at = np.full((1, 1, 1, 1), 1 + 4 * 2.0 ** -11)
    assert slope_deviation(at[0, 0], null[0, 0]) == slope_allowance(null[0, 0], null[0, 0], "float16")
    assert pf._errors(data, at, null, "float16") == pytest.approx((4 * 2.0 ** -11, 0.0))
    assert pf._errors(data, np.nextafter(at, 2), null, "float16") is None


# --- float32 arithmetic ----------------------------------------------------------------------------------------

@pytest.fixture
def null_is_expected(monkeypatch):
    """null32 returns the expected values: the float32 allowance is then its floor."""
    monkeypatch.setattr(pf, "null32", lambda data: data.expected.copy())


@pytest.mark.parametrize("err,named", [(U32 / 8, True), (np.nextafter(U32 / 8, 0), False), (1e-4, True),
                                       (np.nextafter(1e-4, 1), False), (1e-6, True)])
def test_float64_errors_between_u32_over_8_and_1e_4_are_float32_arithmetic(null_is_expected, err, named):
    cases = [(_data(), _with(1, 1e-6)), (_data(), _with(0, err))]
    assert bool(pf._float32("t", cases)) == named
    assert bool(pf.narrower_arithmetic("t", cases)) == named


def test_below_u32_over_8_a_case_float32_itself_rounds_as_little_is_float32_arithmetic(monkeypatch):
    """The floor u32 / 8 drops to float32's own error / SPREAD on a case where float32 errs less (a small case it
    rounds almost exactly), never to zero: an error of float32's own size there is float32's; one SPREAD times
    smaller is not."""
    own = 4e-9                                                     # float32's own error on this case (< u32 / 8)
    monkeypatch.setattr(pf, "null32", lambda data: _with(0, own).copy())
    for err, named in ((own, True), (own / pf.SPREAD, True), (np.nextafter(own / pf.SPREAD, 0), False)):
        assert bool(pf._float32("t", [(_data(), _with(1, 1e-6)), (_data(), _with(0, err))])) == named, err


def test_the_float32_line_quotes_the_median_error_and_float32s_unit_roundoff(null_is_expected):
    cases = [(_data(), _with(0, e)) for e in (1e-5, 5e-5, 3e-5)]
    assert pf.narrower_arithmetic("t", cases) == [
        "diagnosis t: float32 arithmetic — the float64 cases fail with errors of ~3.0e-05 relative (float32's unit "
        "roundoff is 6.0e-08): the target computes in float32; check it with --dtype float32"]


def test_float32_arithmetic_needs_every_failing_case_float64_and_readable(null_is_expected):
    good = (_data(), _with(0, 1e-6))
    assert pf._float32("t", [good, (_data("float32"), _with(0, 1e-6))]) == []
    assert pf._float32("t", [good, (_data(expected=np.zeros((1, 1, 3, 2))), _with(0, 1e-6))]) == []
    assert pf._float32("t", [good, good])


def test_no_failing_case_is_no_fingerprint():
    assert pf._float32("t", []) == [] and pf.narrower_arithmetic("t", []) == []


# --- the nulls ---------------------------------------------------------------------------------------------------

def _spec(family, index, dtype="float64"):
    return next(s for s in select([family], "quick", (dtype,)) if s.index == index)


def _f32_attention(q, k, v, scale, mask=None):
    """softmax(scale q k^T (+ mask)) v in float32, written here."""
    q, k, v = (np.asarray(a, np.float32) for a in (q, k, v))
    s = (q @ np.swapaxes(k, -1, -2)) * np.float32(scale)
    if mask is not None and mask.dtype == bool:
        s = np.where(mask, s, np.float32(-np.inf))
    elif mask is not None:
        s = s + mask.astype(np.float32)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, np.float32(0)))
    z = e.sum(axis=-1, keepdims=True)
    return (e / np.where(z == 0, np.float32(1), z)) @ v


@pytest.mark.parametrize("family,index", [("sizes", 8), ("bool-mask", 3), ("additive-mask", 0), ("alibi", 0)])
def test_the_float32_null_is_the_correct_output_computed_in_float32(family, index):
    data = CaseStore().get(_spec(family, index))
    null = pf.null32(data)
    kw = data.reference_kwargs()
    assert null.shape == data.expected.shape
    assert np.array_equal(null.astype(np.float32).astype(np.float64), null)       # float32 values
    scale = 1 / np.sqrt(data.spec.D) if data.spec.scale is None else data.spec.scale
    mine = _f32_attention(data.q, data.k, data.v, scale, kw["mask"])
    live = data.live
    assert np.abs(null[live] - mine[live]).max() <= 64 * U32 * np.abs(data.v).max()
    assert np.abs(null[live] - data.expected[live]).max() <= 64 * U32 * np.abs(data.v).max()


def test_a_float64_target_computing_in_float32_is_named_and_an_exact_one_is_not():
    spec = _spec("sizes", 10)                       # 1 x 1 x 100 x 63, D 80, Dv 80
    data = CaseStore().get(spec)
    got = _f32_attention(data.q, data.k, data.v, 1 / np.sqrt(spec.D)).astype(np.float64)
    line = pf.narrower_arithmetic("t", [(data, got)])
    assert len(line) == 1 and line[0].startswith("diagnosis t: float32 arithmetic — ")
    assert pf.narrower_arithmetic("t", [(data, data.expected.copy())]) == []


def test_a_float32_target_rounding_its_scores_and_weights_to_float16_is_named():
    spec = _spec("sizes", 10, "float32")
    data = CaseStore().get(spec)
    h = lambda a: np.asarray(a, np.float64).astype(np.float16).astype(np.float64)    # noqa: E731
    s = h(h(data.q @ np.swapaxes(data.k, -1, -2)) / np.sqrt(spec.D))
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    got = h(e / e.sum(axis=-1, keepdims=True)) @ data.v
    line = pf.narrower_arithmetic("t", [(data, got)])
    assert len(line) == 1 and line[0].startswith("diagnosis t: low-precision — an intermediate of the softmax is "
                                                 "computed in a 16-bit float: the float32 cases fail ")
    assert "the size float16" in line[0]


# --- a 16-bit intermediate -----------------------------------------------------------------------------------------

@pytest.fixture
def nulls(monkeypatch):
    """Set the 16-bit nulls by hand: ``nulls(float16=..., bfloat16=...)``, each a function of the case (or an
    array); a type not given has the null EXP + 1e-3 on an entry expected 0 (e_T = 1e-3). The null with the
    weights alone rounded (``step`` "weights", w_T) is set to the same: min(w_T, e_T) = e_T."""
    def setter(**by_type):
        def null(data, dt, step="throughout"):
            x = by_type.get(dt, _with(2, 1e-3))
            return x(data) if callable(x) else x.copy()
        monkeypatch.setattr(pf, "_null16", null)
    setter()
    return setter


def _named16(cases, passing=0):
    return pf.narrower_arithmetic("t", cases, passing)


@pytest.mark.parametrize("err,named", [(16 * 2.0 ** -10, True), (np.nextafter(16 * 2.0 ** -10, 1), False),
                                       (2.0 ** -10 / 16, True), (np.nextafter(2.0 ** -10 / 16, 0), False),
                                       (2.0 ** -10, True)])
def test_a_16_bit_intermediate_errs_within_16_times_the_types_own_error_either_way(nulls, err, named):
    nulls(float16=_with(2, 2.0 ** -10), bfloat16=_with(2, 1.0))          # bfloat16 fits no error here
    cases = [(_data("float32"), _with(0, 2.0 ** -10)), (_data("float32"), _with(0, err))]
    out = _named16(cases)
    assert bool(out) == named
    if named:
        assert "the size float16 rounding" in out[0]


def test_the_low_precision_line_quotes_the_median_errors_the_type_and_the_dtypes(nulls):
    nulls(float16=lambda d: _with(2, d.own), bfloat16=_with(2, 1.0))
    cases = []
    for dt, err, own in (("float32", 1e-3, 2e-3), ("float64", 4e-3, 3e-3), ("float32", 2e-3, 1e-3)):
        data = _data(dt)
        data.own = own
        cases.append((data, _with(0, err)))
    assert _named16(cases) == [
        "diagnosis t: low-precision — an intermediate of the softmax is computed in a 16-bit float: the "
        "float32/float64 cases fail with errors of ~2.0e-03 relative, the size float16 rounding of the scores and "
        "weights gives on each of them (~2.0e-03)"]


def test_both_16_bit_types_are_named_when_both_fit_and_the_first_ones_sizes_quoted(nulls):
    nulls(float16=_with(2, 1e-3), bfloat16=_with(2, 8e-3))
    out = _named16([(_data("float32"), _with(0, 3e-3))])
    assert out == ["diagnosis t: low-precision — an intermediate of the softmax is computed in a 16-bit float: the "
                   "float32 cases fail with errors of ~3.0e-03 relative, the size float16 or bfloat16 rounding of "
                   "the scores and weights gives on each of them (~1.0e-03)"]


def test_a_type_whose_rounding_changes_nothing_on_a_case_is_not_named(nulls):
    nulls(float16=EXP, bfloat16=EXP)                              # e_T = 0: no size to compare with
    assert _named16([(_data("float32"), _with(0, 1e-9))]) == []


def test_a_case_the_types_rounding_leaves_exact_says_nothing_and_the_others_decide(nulls):
    exact = _data("float32")
    exact.exact = True                                            # one key a row: the rounding changes nothing
    nulls(float16=lambda d: EXP.copy() if getattr(d, "exact", False) else _with(2, 1e-3), bfloat16=_with(2, 1.0))
    out = _named16([(exact, _with(0, 5e-4)), (_data("float32"), _with(0, 2e-3))])
    assert out and "the size float16 rounding" in out[0] and "errors of ~2.0e-03" in out[0]
    assert _named16([(exact, _with(0, 5e-4))]) == []              # nothing measured: no size to name
    # an exact case where the target errs far beyond the type's noise (0.3 >> 16 x 2^-11) rules the type out
    assert _named16([(exact, _with(0, 0.3)), (_data("float32"), _with(0, 2e-3))]) == []


def test_the_lower_edge_is_the_weights_rounding_whatever_its_slope(monkeypatch):
    """w_T (the weights alone rounded) only sets the lower edge: a target whose slope w_T's rounding would not allow
    (but e_T's does) is still measured."""
    def null(data, dt, step="throughout"):
        if dt != "float16":
            return EXP * 2.0
        return EXP * (1 + 2.0 ** -16) if step == "weights" else EXP * (1 + 2.0 ** -6)
    monkeypatch.setattr(pf, "_null16", null)
    got = EXP * (1 + 2.0 ** -8)                     # a slope of 1 + 2^-8: within e_T's allowance, not w_T's
    assert slope_deviation(got, EXP) > slope_allowance(EXP * (1 + 2.0 ** -16), EXP, "float16")
    assert slope_deviation(got, EXP) <= slope_allowance(EXP * (1 + 2.0 ** -6), EXP, "float16")
    assert _named16([(_data("float32"), got)])
    assert _named16([(_data("float32"), _with(0, 2.0 ** -20))])                  # w_T / 16: the lower edge
    assert _named16([(_data("float32"), _with(0, np.nextafter(2.0 ** -20, 0)))]) == []


def test_a_16_bit_intermediate_needs_every_failing_case_float32_or_wider(nulls):
    assert _named16([(_data("float32"), _with(0, 1e-3))])
    assert _named16([(_data("float32"), _with(0, 1e-3)), (_data("float16"), _with(0, 1e-3))]) == []
    assert _named16([(_data("float16"), _with(0, 1e-3)), (_data("float32"), _with(0, 1e-3))]) == []


def test_a_case_the_type_cannot_read_rules_the_type_out(nulls):
    no_key = _data("float32", expected=np.zeros((1, 1, 3, 2)))
    assert _named16([(_data("float32"), _with(0, 1e-3)), (no_key, _with(0, 1e-3))]) == []


def test_cases_overflowing_where_the_type_overflows_are_consistent_but_not_measured(nulls):
    over = _data("float32")
    over.over = True
    nulls(float16=lambda d: _with(1, np.inf) if getattr(d, "over", False) else _with(2, 1e-3),
          bfloat16=_with(2, 1.0))
    fine = [(_data("float32"), _with(0, 1e-3)), (_data("float32"), _with(0, 3e-3))]
    out = _named16(fine + [(over, _with(1, np.inf))])
    assert out and "errors of ~2.0e-03 relative" in out[0] and "the size float16 rounding" in out[0]
    assert _named16([(over, _with(1, np.inf))]) == []              # nothing measured: no size to name
    # the type's computation overflows where the output does not: not explained by that type
    nulls(float16=lambda d: _with(1, np.inf) if getattr(d, "over", False) else _with(2, 1e-3),
          bfloat16=_with(2, 1e-3))
    out = _named16(fine + [(over, _with(1, 1e-3))])
    assert out and "the size bfloat16 rounding" in out[0]


@pytest.mark.parametrize("failing,passing,named", [(2, 2, True), (2, 3, False), (1, 0, True)])
def test_a_16_bit_intermediate_is_named_only_where_the_failing_cases_are_at_least_as_many_as_the_passing(
        nulls, failing, passing, named):
    cases = [(_data("float32"), _with(0, 1e-3)) for _ in range(failing)]
    assert bool(_named16(cases, passing)) == named


def test_float32_arithmetic_is_read_before_a_16_bit_intermediate(nulls, null_is_expected):
    cases = [(_data("float64"), _with(0, 1e-5))]
    nulls(float16=_with(2, 1e-5), bfloat16=_with(2, 1e-5))
    out = pf.narrower_arithmetic("t", cases, passing=5)
    assert len(out) == 1 and out[0].startswith("diagnosis t: float32 arithmetic")


def test_a_large_type_error_is_compared_like_any(nulls):
    nulls(float16=_with(2, 1.0), bfloat16=_with(2, 100.0))        # e_T = 1 (float16), 100 (bfloat16)
    out = _named16([(_data("float32"), _with(0, 0.5))])
    assert out and "the size float16 rounding" in out[0]
