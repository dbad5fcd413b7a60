"""The fitted bug models' rules one at a time (issue #24): the softmax scale fitted from the output
(refimpl/harness/analysis/fitting.py) and dropout left active at dropout_p = 0 (fitting_dropout.py).

The scale fit, as its module doc states it: on each of the FIT_CASES = 6 smallest failing cases (by output size
times Sk) the scale c reproducing the target is searched over log2(c / expected) in [-8, 8] (expected: the given
scale, else 1/sqrt(D)) and must reproduce it within 1e-3 (1 + max|got|) and differ from the expected scale by more
than REL = 1e-3; the fitted values are named by the first formula of the case's sizes they all agree with within
REL (a constant only when the fitted cases have two D or more); the named scale must reproduce every failing case
(and explain it) and every passing one within 1e-3 (1 + max|got|).

The cases here are made by hand (a query, a few keys, chosen values), and every expected value is computed here
from the documented rule, with a softmax written here."""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.harness.analysis import fitting

# --- hand-made cases ---------------------------------------------------------------------------------------------


def _attend(q, k, v, c):
    """softmax(c q k^T) v, written here."""
    s = c * (q @ np.swapaxes(k, -1, -2))
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


def _case(q, k, v, scale=None, id="hand/0000", live=None):
    B, H, Sq, D = q.shape
    Sk, Dv = k.shape[-2], v.shape[-1]
    spec = SimpleNamespace(id=id, D=D, Dv=Dv, Sk=Sk, Sq=Sq, Hq=H, scale=scale)
    return SimpleNamespace(spec=spec, q=q, k=k, v=v, expected=np.zeros((B, H, Sq, Dv)),
                           live=np.ones((B, H, Sq), bool) if live is None else live,
                           reference_kwargs=lambda: dict(mask=None, scale=scale))


def _sigmoid_case(c_true, D=16, scale=None):
    """One query, two keys, Dv = 1: the output is sigmoid(c (q.k2 - q.k1)) = sigmoid(c / c_true), 1/(1 + e^-1)
    at c = c_true, and every other c gives another value."""
    q = np.zeros((1, 1, 1, D))
    k = np.zeros((1, 1, 2, D))
    q[..., 0, 0] = 1.0
    k[..., 1, 0] = 1.0 / c_true
    v = np.array([0.0, 1.0]).reshape(1, 1, 2, 1)
    return _case(q, k, v, scale=scale)


def _random_case(H, Sq, Sk, D, Dv, seed, scale=None, id=None):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s) for s in ((1, H, Sq, D), (1, H, Sk, D), (1, H, Sk, Dv)))
    return _case(q, k, v, scale=scale, id=id or f"hand/{seed:04d}")


def _run(data, c):
    """(data, what a kernel using scale c returns)"""
    return data, _attend(data.q, data.k, data.v, c)


def _always(model, data, got):
    return True


# --- the formulas: each value by hand --------------------------------------------------------------------------

SPEC = SimpleNamespace(D=16, Dv=4, Sk=9, Sq=25, Hq=3, scale=None)
GIVEN = SimpleNamespace(D=16, Dv=4, Sk=9, Sq=25, Hq=3, scale=0.3)
#         name: (value with no scale given: 1/sqrt(16) = 0.25 expected, value with scale 0.3 given)
HAND = {
    "1/sqrt(Dv)": (0.5, 0.3),
    "1/sqrt(Sk)": (1 / 3, 0.3),
    "1/sqrt(Sq)": (0.2, 0.3),
    "1/D": (1 / 16, 0.3),
    "1 (no scaling)": (1.0, 0.3),
    "sqrt(D)": (4.0, 0.3),
    "1/sqrt(Hq*D)": (1 / math.sqrt(48), 0.3),
    "1/sqrt(Hq) (the head count for the head size)": (1 / math.sqrt(3), 0.3),
    "1/sqrt(D) (the given scale ignored)": (0.25, 0.25),
    "1/sqrt(Dv), the given scale ignored": (0.5, 0.5),
    "1/sqrt(Sk), the given scale ignored": (1 / 3, 1 / 3),
    "1/sqrt(Sq), the given scale ignored": (0.2, 0.2),
    "1/D, the given scale ignored": (1 / 16, 1 / 16),
    "1 (no scaling), the given scale ignored": (1.0, 1.0),
    "sqrt(D), the given scale ignored": (4.0, 4.0),
    "1/sqrt(Hq*D), the given scale ignored": (1 / math.sqrt(48), 1 / math.sqrt(48)),
    "1/sqrt(Hq) (the head count for the head size), the given scale ignored": (1 / math.sqrt(3), 1 / math.sqrt(3)),
    "0 (a sentinel default used as the scale, every kept key weighted alike)": (0.0, 0.3),
    "scale**2 (applied twice)": (1 / 16, 0.09),
    "1/scale (divided by it)": (4.0, 1 / 0.3),
    "the given scale times 1/sqrt(D)": (0.25, 0.075),
    "the given scale times sqrt(D)": (0.25, 1.2),
    # D = 16 rounded up to a multiple of 8 or 16 is 16 (the right scale); of 32, 32; of 64, 64
    "1/sqrt(D padded to a multiple of 8)": (0.25, 0.3), "1/sqrt(D padded to a multiple of 16)": (0.25, 0.3),
    "1/sqrt(D padded to a multiple of 32)": (1 / math.sqrt(32), 0.3),
    "1/sqrt(D padded to a multiple of 64)": (0.125, 0.3),
    "1/sqrt(D padded to a multiple of 8), the given scale ignored": (0.25, 0.25),
    "1/sqrt(D padded to a multiple of 16), the given scale ignored": (0.25, 0.25),
    "1/sqrt(D padded to a multiple of 32), the given scale ignored": (1 / math.sqrt(32), 1 / math.sqrt(32)),
    "1/sqrt(D padded to a multiple of 64), the given scale ignored": (0.125, 0.125),
    "sqrt(scale) (split over q and k, applied to one of them)": (0.5, math.sqrt(0.3)),
    "1/scale where a scale is given (divided by it; the default right)": (0.25, 1 / 0.3),
    # q pre-multiplied by default / scale (the ratio inverted), then the default: default**2 / scale = 1/(16 * 0.3)
    "1/(D*scale) where a scale is given (its ratio to 1/sqrt(D) inverted; the default right)": (0.25, 1 / 4.8),
    # q scaled by the caller (0.25 or 0.3), then the backend's own 1/sqrt(16) = 0.25 on top: 1/16, 0.075
    "the scale times 1/sqrt(D) again (the caller's, then a backend's own)": (1 / 16, 0.075),
}


def test_the_candidate_scales_are_the_documented_formulas_with_the_given_scale_honoured_or_ignored():
    assert set(fitting.FORMULAS) == set(HAND)
    for name, (none, given) in HAND.items():
        assert fitting.FORMULAS[name](SPEC) == pytest.approx(none, rel=1e-12), name
        assert fitting.FORMULAS[name](GIVEN) == pytest.approx(given, rel=1e-12), name


# --- the error of a scale on a case ------------------------------------------------------------------------------

def test_the_error_of_a_scale_is_the_largest_absolute_difference_on_the_rows_with_a_key():
    data = _random_case(1, 3, 4, 8, 2, seed=1)
    data.live = np.array([[[True, False, True]]])
    got = _attend(data.q, data.k, data.v, 0.5)
    got[0, 0, 1, 0] += 100.0                    # a dead row: not read
    got[0, 0, 2, 1] += 0.25
    assert fitting._error(data, got, 0.5) == pytest.approx(0.25, rel=1e-9)


def test_the_error_of_a_scale_is_infinite_on_a_nan_or_a_shape_that_differs_and_0_with_no_live_row():
    data = _random_case(1, 3, 4, 8, 2, seed=2)
    got = _attend(data.q, data.k, data.v, 0.5)
    assert fitting._error(data, got[..., :1], 0.5) == math.inf
    nan = got.copy()
    nan[0, 0, 0, 0] = np.nan
    assert fitting._error(data, nan, 0.5) == math.inf
    data.live = np.zeros((1, 1, 3), bool)
    assert fitting._error(data, got + 5.0, 0.5) == 0.0


# --- fitting one case: the grid over log2(c / expected) in [-8, 8], then the refinement ---------------------------

@pytest.mark.parametrize("octaves", [0.0, 1.3, -2.55, 7.9, -7.9, 8.0, -8.0])
def test_the_fitted_scale_is_the_one_the_kernel_used_within_the_searched_eight_octaves(octaves):
    c_true = 0.25 * 2.0 ** octaves                  # D = 16: expected 1/sqrt(16)
    data, got = _run(_sigmoid_case(c_true), c_true)
    assert fitting._fit_one(data, got) == pytest.approx(c_true, rel=1e-6)


@pytest.mark.parametrize("octaves", [8.15, -8.15, 10.0])
def test_a_scale_more_than_eight_octaves_from_the_expected_one_is_not_fitted(octaves):
    c_true = 0.25 * 2.0 ** octaves
    data, got = _run(_sigmoid_case(c_true), c_true)
    assert fitting._fit_one(data, got) is None


def test_the_search_is_centred_on_the_given_scale_when_one_is_given():
    c_true = 0.5 * 2.0 ** 7.9                  # 7.9 octaves above the given 0.5, 8.9 above 1/sqrt(16)
    data, got = _run(_sigmoid_case(c_true, scale=0.5), c_true)
    assert fitting._fit_one(data, got) == pytest.approx(c_true, rel=1e-6)


def _flat_case(M=0.5):
    """One key (Sk = 1): every scale gives the output v exactly, [M, 0] on both rows; the error is then the
    same for every scale."""
    q, k = np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 1, 4))
    v = np.array([M, 0.0]).reshape(1, 1, 1, 2)
    return _case(q, k, v)


def _two_key_case(M):
    """D = 4 (expected scale 1/2), one query (1, 0, 0, 0), keys (+2, 0, 0, 0) and (-2, 0, 0, 0), values (M, 0) and
    (-M, 0): the output is (M tanh(2c), 0). Column 0 moves with the scale (by more than 0.05 M a quarter-octave
    away from 1/2); column 1 is 0 at every scale, so a kernel's error there is the same for every scale."""
    q, k = np.zeros((1, 1, 1, 4)), np.zeros((1, 1, 2, 4))
    q[..., 0, 0], k[..., 0, 0], k[..., 1, 0] = 1.0, 2.0, -2.0
    v = np.array([[M, 0.0], [-M, 0.0]]).reshape(1, 1, 2, 2)
    return _case(q, k, v)


@pytest.mark.parametrize("M", [0.5, 3.0])
def test_a_fit_must_reproduce_the_output_within_1e_3_times_1_plus_its_largest_value(M):
    data = _two_key_case(M)
    top = M * math.tanh(1.0)                    # the output at the expected scale 1/2: max|got|
    bound = 1e-3 * (1.0 + top)
    for t, fits in [(bound, True), (np.nextafter(bound, 1.0), False), (0.9 * bound, True), (1.1 * bound, False)]:
        got = np.array([[[[top, t]]]])          # the error is t at the scale 1/2, more at every other
        assert (fitting._fit_one(data, got) is not None) == fits, (M, t)


@pytest.mark.parametrize("M", [0.5, 3.0])
def test_a_case_whose_output_no_scale_changes_fits_no_scale(M):
    data = _flat_case(M)
    assert fitting._fit_one(data, np.array([[[[M, 0.0], [M, 0.0]]]])) is None       # exact at every scale
    assert fitting._fit_one(data, np.array([[[[M, 0.0], [M, 1e-4]]]])) is None      # off by the same at every scale


def test_a_non_finite_output_value_does_not_widen_the_bound():
    data = _two_key_case(0.5)
    top = 0.5 * math.tanh(1.0)
    data.q = np.concatenate([data.q, data.q], axis=2)
    data.live = np.array([[True, False]])[None]
    got = np.array([[[[top, 0.4e-3], [np.inf, 0.0]]]])     # a dead row's inf is not max|got|
    assert fitting._fit_one(data, got) is not None
    got[0, 0, 0, 1] = 1.6e-3
    assert fitting._fit_one(data, got) is None


# --- fit_scale: the formulas named -----------------------------------------------------------------------------

# (H, Sq, Sk, D, Dv) of distinct sizes, so that no two formulas agree on all of them
NONE_CASES = [_random_case(2, 3, 5, 16, 4, seed=10, id="hand/a"), _random_case(3, 4, 7, 9, 3, seed=11, id="hand/b"),
              _random_case(1, 2, 6, 20, 3, seed=14, id="hand/e"), _random_case(2, 3, 2, 40, 6, seed=15, id="hand/f")]
GIVEN_CASES = [_random_case(2, 2, 6, 25, 5, seed=12, scale=0.3, id="hand/c"),
               _random_case(3, 5, 3, 4, 2, seed=13, scale=0.7, id="hand/d")]


def _hand_value(name, s):
    """The scale ``name`` says the kernel uses, written from the name."""
    given = s.scale is not None
    honour = "ignored" not in name
    base = {"1/sqrt(D)": 1 / math.sqrt(s.D), "1/sqrt(Dv)": 1 / math.sqrt(s.Dv), "1/sqrt(Sk)": 1 / math.sqrt(s.Sk),
            "1/sqrt(Sq)": 1 / math.sqrt(s.Sq), "1/D": 1 / s.D, "1 (no scaling)": 1.0, "sqrt(D)": math.sqrt(s.D),
            "1/sqrt(Hq*D)": 1 / math.sqrt(s.Hq * s.D), "1/sqrt(Hq)": 1 / math.sqrt(s.Hq)}
    expected = s.scale if given else 1 / math.sqrt(s.D)
    if name.startswith("0 (a sentinel default"):
        return s.scale if given else 0.0
    if name == "scale**2 (applied twice)":
        return expected ** 2
    if name == "1/scale (divided by it)":
        return 1 / expected
    if name == "the given scale times 1/sqrt(D)":
        return expected / math.sqrt(s.D) if given else expected
    if name == "the given scale times sqrt(D)":
        return expected * math.sqrt(s.D) if given else expected
    if name.startswith("1/sqrt(D padded to a multiple of "):
        m = int(name.split("multiple of ", 1)[1].split(")", 1)[0])
        return s.scale if (given and honour) else 1 / math.sqrt(-(-s.D // m) * m)
    if name.startswith("sqrt(scale)"):
        return math.sqrt(expected)
    if name.startswith("1/scale where a scale is given"):
        return 1 / expected if given else expected
    if name.startswith("the scale times 1/sqrt(D) again"):
        return expected / math.sqrt(s.D)
    if name.startswith("1/(D*scale) where a scale is given"):
        return 1 / (s.D * expected) if given else expected
    if name.startswith("the constant "):
        c = float(name.split(",")[0].rsplit(" ", 1)[1])
        return s.scale if (given and honour) else c
    stem = name.split(",")[0].split(" (the")[0]
    return s.scale if (given and honour) else base[stem]


def _split(name):
    """(failing, passing) cases for a kernel using ``name``: the cases where it differs from the expected scale
    fail, the others pass (their output is the right one)."""
    fail, passed = [], []
    for data in NONE_CASES + GIVEN_CASES:
        c = _hand_value(name, data.spec)
        right = data.spec.scale if data.spec.scale is not None else 1 / math.sqrt(data.spec.D)
        (passed if abs(c / right - 1) < 1e-9 else fail).append(_run(data, c))
    return fail, passed


@pytest.mark.parametrize("name", list(HAND) + ["the constant 0.3", "the constant 0.3, the given scale ignored"])
def test_the_scale_a_kernel_used_is_named_by_its_formula(name):
    fail, passed = _split(name)
    assert fail
    # every other candidate differs from this one on a case (failing or passing): the name is the only answer
    for other in list(HAND) + ["the constant 0.3", "the constant 0.3, the given scale ignored"]:
        if other != name:
            assert any(abs(_hand_value(other, d.spec) - _hand_value(name, d.spec)) > 1e-2 * abs(_hand_value(
                name, d.spec)) for d, _ in fail + passed), other
    out = fitting.fit_scale(fail, passed, _always)
    assert out is not None and out[0] == name


def test_no_failing_case_fits_nothing():
    assert fitting.fit_scale([], [_run(NONE_CASES[0], 0.25)], _always) is None


def test_a_failing_case_the_expected_scale_reproduces_fits_nothing():
    data = NONE_CASES[0]
    assert fitting.fit_scale([_run(data, 0.25), _run(NONE_CASES[1], 0.5)], [], _always) is None


def test_a_fitted_scale_within_rel_of_the_expected_one_is_not_a_scale_bug():
    # D = 16: expected 0.25; a constant 0.25 (1 + 1.5e-3) on a D = 16 case is within 2e-3 but not 1e-3 of it
    a = _random_case(2, 3, 5, 16, 4, seed=20, id="hand/a")
    b = _random_case(2, 3, 5, 9, 4, seed=21, id="hand/b")
    c = 0.25 * (1 + 1.5e-3)
    out = fitting.fit_scale([_run(a, c), _run(b, c)], [], _always)
    assert out is not None and out[0] == f"the constant {c:.6g}"
    c = 0.25 * (1 + 0.5e-3)
    assert fitting.fit_scale([_run(a, c), _run(b, c)], [], _always) is None


def test_a_named_scale_must_be_within_rel_of_every_fitted_value():
    # sizes where 1/sqrt(Sk) and 1/sqrt(Dv) differ by 0.5 % only, the outputs by far less than 1e-3: the output
    # error would accept either, the fitted value tells them apart
    rng = np.random.default_rng(30)
    cases = []
    for i, (D, Dv, Sk) in enumerate([(16, 99, 100), (9, 99, 100)]):
        q, k, v = 0.05 * rng.standard_normal((1, 1, 2, D)), rng.standard_normal((1, 1, Sk, D)), \
            rng.standard_normal((1, 1, Sk, Dv))
        cases.append(_case(q, k, v, id=f"hand/{i}"))
    fail = [_run(d, 1 / math.sqrt(d.spec.Sk)) for d in cases]
    assert all(np.abs(_attend(d.q, d.k, d.v, 1 / math.sqrt(99)) - g).max() < 1e-3 for d, g in fail)
    out = fitting.fit_scale(fail, [], _always)
    assert out is not None and out[0] == "1/sqrt(Sk)"


def test_a_constant_is_named_only_when_the_fitted_cases_have_two_d_or_more():
    same_d = [_random_case(2, 3, 5, 16, 4, seed=40, id="hand/a"), _random_case(3, 2, 7, 16, 3, seed=41, id="hand/b")]
    assert fitting.fit_scale([_run(d, 0.3) for d in same_d], [], _always) is None
    two_d = same_d[:1] + [_random_case(3, 2, 7, 9, 3, seed=41, id="hand/b")]
    out = fitting.fit_scale([_run(d, 0.3) for d in two_d], [], _always)
    assert out is not None and out[0] == "the constant 0.3"


def _sized(Sq, Sk, D, seed):
    return _random_case(2, Sq, Sk, D, 3, seed=seed, id=f"hand/{seed}")


def test_the_scale_is_fitted_on_the_six_smallest_failing_cases_only():
    # six cases of D = 16 and sizes x Sk growing, then one of D = 9, the largest: a constant needs two D among the
    # fitted ones, so the seventh case does not count for it ...
    six = [_sized(1 + i, 2 + i, 16, seed=50 + i) for i in range(6)]
    big = _sized(20, 30, 9, seed=60)
    assert fitting.fit_scale([_run(d, 0.3) for d in six + [big]], [], _always) is None
    # ... and the sixth does: five of D = 16, the sixth (still smaller than the seventh) of D = 9
    six[5] = _sized(6, 7, 9, seed=55)
    out = fitting.fit_scale([_run(d, 0.3) for d in six + [big]], [], _always)
    assert out is not None and out[0] == "the constant 0.3"


def test_a_seventh_failing_case_is_checked_but_not_fitted():
    # a kernel using 1/sqrt(Dv): on the seventh (largest) case Dv = D, so its scale there is the expected one; it
    # is not fitted (a fit at the expected scale would rule the formula out), only reproduced
    six = [_sized(1 + i, 2 + i, 16, seed=70 + i) for i in range(6)]
    seventh = _random_case(2, 20, 30, 3, 3, seed=80, id="hand/80")
    fail = [_run(d, 1 / math.sqrt(d.spec.Dv)) for d in six + [seventh]]
    out = fitting.fit_scale(fail, [], _always)
    assert out is not None and out[0] == "1/sqrt(Dv)"


def test_the_quoted_case_is_the_smallest_by_output_size_times_sk():
    x = _random_case(2, 1, 2, 16, 1, seed=90, id="hand/x")        # size 2, x Sk = 4 (size / Sk = 1)
    y = _random_case(2, 1, 8, 9, 1, seed=91, id="hand/y")         # size 2, x Sk = 16 (size / Sk = 0.25)
    z = _random_case(2, 3, 3, 4, 1, seed=92, id="hand/z")         # size 6, x Sk = 18
    out = fitting.fit_scale([_run(d, 0.3) for d in (z, y, x)], [], _always)
    assert out is not None and out[0] == "the constant 0.3" and out[1] is x


def _bounded(M, t, D=9):
    """A case with one key, whatever the scale its output is [M, 0] on both rows: ``got`` differs from it by t."""
    q, k = np.zeros((1, 1, 2, D)), np.zeros((1, 1, 1, D))
    data = _case(q, k, np.array([M, 0.0]).reshape(1, 1, 1, 2), id="hand/flat")
    return data, np.array([[[[M, 0.0], [M, t]]]])


@pytest.mark.parametrize("where", ["failing", "passing"])
@pytest.mark.parametrize("M,t,named", [(3.0, 4e-3, True), (3.0, np.nextafter(4e-3, 1), False),
                                       (0.1, 1.05e-3, True), (0.1, 1.2e-3, False)])
def test_the_named_scale_must_reproduce_every_case_within_1e_3_times_1_plus_its_largest_value(where, M, t, named):
    fitted = [_run(NONE_CASES[0], 0.3), _run(NONE_CASES[1], 0.3)]
    extra = _bounded(M, t)
    extra[0].expected = np.zeros((1, 1, 50, 50))          # the largest: checked, not fitted
    if where == "failing":
        fitted += [_run(_sized(1 + i, 2, 16 + i, seed=100 + i), 0.3) for i in range(4)]
        out = fitting.fit_scale(fitted + [extra], [], _always)
    else:
        out = fitting.fit_scale(fitted, [extra], _always)
    assert (out is not None and out[0] == "the constant 0.3") if named else out is None


def test_the_named_scale_must_explain_every_failing_case_and_is_shown_its_model_output():
    fail = [_run(d, 0.3) for d in NONE_CASES]
    seen = []

    def explains(model, data, got):
        seen.append(np.abs(model - got).max())
        return True
    out = fitting.fit_scale(fail, [], explains)
    assert out is not None and out[0] == "the constant 0.3" and len(seen) == len(NONE_CASES) and max(seen) < 1e-6
    assert fitting.fit_scale(fail, [], lambda m, d, g: d is not NONE_CASES[1]) is None


def test_a_passing_case_the_named_scale_would_change_vetoes_it():
    fail = [_run(d, 0.3) for d in NONE_CASES]
    passing = [_run(GIVEN_CASES[0], 0.3 * 1.5)]      # a scale was given (0.3): honoured, it reproduces ... not this
    assert fitting.fit_scale(fail, passing, _always) is None
    passing = [_run(GIVEN_CASES[0], 0.3)]
    assert fitting.fit_scale(fail, passing, _always)[0] == "the constant 0.3"


# --- the line ----------------------------------------------------------------------------------------------------

LINE_SPEC = SimpleNamespace(id="sizes/0003-float64", D=16, Dv=4, Sk=9, Sq=25, Hq=3, scale=None)
LINE_GIVEN = SimpleNamespace(id="scale/0001-float64", D=16, Dv=4, Sk=9, Sq=25, Hq=3, scale=0.3)


@pytest.mark.parametrize("spec,name,want", [
    (LINE_SPEC, "1/sqrt(Dv)", "1/sqrt(Dv) = 0.5 instead of 1/sqrt(D) = 0.25"),
    (LINE_SPEC, "1/sqrt(Dv), the given scale ignored", "1/sqrt(Dv) = 0.5 instead of 1/sqrt(D) = 0.25"),
    (LINE_GIVEN, "1/sqrt(D) (the given scale ignored)",
     "1/sqrt(D) (the given scale ignored) = 0.25 instead of the given scale = 0.3"),
    (LINE_GIVEN, "1/sqrt(Dv), the given scale ignored",
     "1/sqrt(Dv), the given scale ignored = 0.5 instead of the given scale = 0.3"),
    (LINE_GIVEN, "scale**2 (applied twice)", "scale**2 (applied twice) = 0.09 instead of the given scale = 0.3"),
    (LINE_SPEC, "the constant 0.3", "the constant 0.3 = 0.3 instead of 1/sqrt(D) = 0.25"),
    (LINE_SPEC, "the constant 0.3, the given scale ignored", "the constant 0.3 = 0.3 instead of 1/sqrt(D) = 0.25"),
    (LINE_GIVEN, "the constant 0.125, the given scale ignored",
     "the constant 0.125, the given scale ignored = 0.125 instead of the given scale = 0.3"),
])
def test_the_scale_line_names_the_scale_used_its_value_and_the_expected_one(spec, name, want):
    line = fitting.scale_line("t", name, SimpleNamespace(spec=spec))
    assert line == (f"diagnosis t: scale — the kernel used {want} (fitted on the failing cases; e.g. {spec.id}: "
                    f"D=16, Dv=4, Sk=9)")


# === dropout left active at dropout_p = 0 (fitting_dropout.py) =====================================================
#
# Each hand-made case has Sk = 4 keys of weights 1/2, 1/4, 1/8, 1/8 on every row and V = the 4 x 4 identity, so that
# a row's output is c_j w_j, exactly, for the coefficients c_j chosen here; the least-squares solve returns them
# exactly (the matrix is diagonal with powers of two).

from refimpl.harness.analysis import fitting_dropout as fd  # noqa: E402

W4 = np.array([0.5, 0.25, 0.125, 0.125])
U32 = 2.0 ** -24                                  # float32's unit roundoff


def _dcase(C, dtype="float64", Hq=1, Hkv=1, dead=()):
    """(case, output) whose rows (head 0 .. Hq-1, then query) solve to the coefficients C (rows x 4)."""
    C = np.asarray(C, np.float64)
    rows = len(C) // Hq
    spec = SimpleNamespace(Hq=Hq, Hkv=Hkv, dtype=dtype)
    live = np.ones((1, Hq, rows), bool)
    for h, i in dead:
        live[0, h, i] = False
    data = SimpleNamespace(spec=spec, v=np.eye(4)[None, None].repeat(Hkv, axis=1),
                           weights=np.broadcast_to(W4, (1, Hq, rows, 4)).copy(), live=live)
    return data, (C * W4).reshape(1, Hq, rows, 4)


def _undetermined():
    """A case with 4 keys of nonzero weight and Dv = 2 on every row: no row can be solved."""
    data = SimpleNamespace(spec=SimpleNamespace(Hq=1, Hkv=1, dtype="float64"), v=np.ones((1, 1, 4, 2)),
                           weights=np.full((1, 1, 2, 4), 0.25), live=np.ones((1, 1, 2), bool))
    return data, np.zeros((1, 1, 2, 2))


def _drop(rows, s, dropped):
    """rows x 4 coefficients: ``dropped`` of them 0 (the first ones), the others s."""
    c = np.full(rows * 4, float(s))
    c[:dropped] = 0.0
    return c.reshape(rows, 4)


def _named(cases):
    """Whether the line is given; no line is the empty list."""
    out = fd.dropout_at_zero_line("t", cases)
    assert out == [] or len(out) == 1, out
    return out != []


@pytest.mark.parametrize("dtype,want", [("float64", 1e-6), ("float32", 2e4 * U32), ("float16", 2e-2),
                                        ("bfloat16", 2e-2)])
def test_the_coefficient_tolerance_is_2e4_unit_roundoffs_of_the_dtype_within_1e_6_and_2e_2(dtype, want):
    assert fd._rtol(dtype) == pytest.approx(want, rel=1e-12)


def _coef(w, v, got):
    return fd._coefficients(w, v, got, 1e-3)


def test_a_row_that_is_no_reweighting_of_its_values_rejects_the_fit():
    """3 keys, Dv 4: got's 4th component is outside the span of the weighted values: no coefficients exist, and
    the row says so ([NaN], which fails the fit's every-coefficient test) instead of a least-squares guess."""
    v = np.eye(3, 4)
    c = _coef(np.full(3, 1 / 3), v, np.array([0.2, 0.0, 0.4, 0.1]))
    assert c.shape == (1,) and np.isnan(c[0])
    assert np.allclose(_coef(np.full(3, 1 / 3), v, np.array([0.2, 0.0, 0.4, 1e-6])), [0.6, 0.0, 1.2])  # within rtol
    v_nan = v.copy()
    v_nan[0, 0] = np.nan
    assert _coef(np.full(3, 1 / 3), v_nan, np.full(4, 0.1)) is None                 # a NaN value: not determined


def test_a_row_solves_to_its_coefficients_over_the_keys_of_nonzero_weight():
    v = np.eye(4)
    w = np.array([0.5, 0.0, 0.25, 0.25])
    got = np.array([0.5 * 2.0, 0.0, 0.25 * 0.0, 0.25 * 3.0])
    assert np.array_equal(_coef(w, v, got), [2.0, 0.0, 3.0])
    w1 = np.array([0.0, 1.0, 0.0, 0.0])                 # one key: determined too
    assert np.array_equal(_coef(w1, v, np.array([0.0, 2.0, 0.0, 0.0])), [2.0])


def test_a_weight_of_1e_12_or_less_is_not_a_key():
    v = np.eye(4)
    got = np.array([0.6, 0.4, 0.0, 0.0])
    # 1e-12: not a key, the row solves over two keys; 1.5e-12: a key, and the (3, 4) matrix is then too badly
    # conditioned (1e12 / 4) to solve
    assert np.array_equal(_coef(np.array([0.6, 0.4, 1e-12, 0.0]), v, got), [1.0, 1.0])
    assert _coef(np.array([0.6, 0.4, 1.5e-12, 0.0]), v, got) is None


def test_a_row_is_not_determined_without_a_key_with_more_keys_than_dv_or_with_a_non_finite_output():
    v = np.eye(3, 4)                                    # 3 keys, Dv = 4
    assert _coef(np.zeros(3), v, np.zeros(4)) is None
    assert _coef(np.full(3, 1 / 3), v, np.full(4, 0.1)) is not None         # 3 keys <= Dv 4
    assert _coef(np.full(3, 1 / 3), v, np.array([0.1, np.nan, 0.1, 0.1])) is None
    assert _coef(np.full(3, 1 / 3), v, np.array([0.1, np.inf, 0.1, 0.1])) is None
    v5 = np.vstack([np.eye(4), np.ones((1, 4))])        # 5 keys, Dv = 4: more keys than equations
    assert _coef(np.full(5, 0.2), v5, np.full(4, 0.1)) is None
    v4 = np.eye(4)                                      # 4 keys = Dv: determined
    assert np.allclose(_coef(np.full(4, 0.25), v4, np.full(4, 0.5)), 2.0)


def test_a_row_is_not_determined_when_its_matrix_is_conditioned_worse_than_1e6():
    v = np.eye(2)
    assert _coef(np.array([0.5, 0.5e-6]), v, np.array([0.5, 0.0])) is not None      # cond 1e6 exactly
    assert _coef(np.array([0.5, 0.5 / 1.5e6]), v, np.array([0.5, 0.0])) is None     # 1.5e6


def test_dropout_at_zero_is_named_with_the_rescaling_the_rate_it_implies_and_the_fraction_dropped():
    assert fd.dropout_at_zero_line("t", [_dcase(_drop(8, 2.0, 12))]) == [
        "diagnosis t: dropout-active-at-zero — dropout_p = 0, yet weights are dropped: the kept ones are scaled by 2 "
        "(1/(1 - p) for p = 0.5), 12 of 32 weights solved for are 0 (37.5%)"]
    assert fd.dropout_at_zero_line("k", [_dcase(_drop(10, 1.25, 9))]) == [
        "diagnosis k: dropout-active-at-zero — dropout_p = 0, yet weights are dropped: the kept ones are scaled by "
        "1.25 (1/(1 - p) for p = 0.2), 9 of 40 weights solved for are 0 (22.5%)"]


def test_the_values_of_a_grouped_query_case_are_shared_by_the_heads_of_a_group():
    data, got = _dcase(_drop(8, 2.0, 16), Hq=2, Hkv=1)
    assert data.v.shape[1] == 1
    assert _named([(data, got)])


def test_at_least_8_rows_must_be_determined():
    assert _named([_dcase(_drop(8, 2.0, 16))])
    assert not _named([_dcase(_drop(7, 2.0, 14))])


@pytest.mark.parametrize("determined,undetermined,named", [(1, 3, True), (1, 4, False), (2, 6, True), (2, 7, False)])
def test_rows_must_be_determined_in_at_least_a_quarter_of_the_failing_cases(determined, undetermined, named):
    cases = [_dcase(_drop(8, 2.0, 16)) for _ in range(determined)] + [_undetermined() for _ in range(undetermined)]
    assert _named(cases) == named


def test_cases_without_weights_or_output_are_not_read_but_count_among_the_failing_cases():
    data, got = _dcase(_drop(8, 2.0, 16))
    no_weights = (SimpleNamespace(spec=data.spec, v=data.v, weights=None, live=data.live), got)
    assert _named([(data, got), no_weights, (data, None), no_weights])
    assert not _named([(data, got), no_weights, (data, None), no_weights, (data, None)])


def test_rows_with_no_key_are_not_read():
    C = _drop(9, 2.0, 18)
    C[4] = [0.7, 0.7, 0.7, 0.7]                        # neither 0 nor 2: read, it rules dropout out
    assert not _named([_dcase(C)])
    assert _named([_dcase(C, dead=[(0, 4)])])


def test_no_coefficient_above_one_half_names_nothing():
    assert not _named([_dcase(np.zeros((8, 4)))])
    assert not _named([_dcase(np.full((8, 4), 0.5))])


@pytest.mark.parametrize("small,named", [(0.5, True), (0.55, False)])
def test_the_rescaling_is_the_median_of_the_coefficients_above_one_half(small, named):
    # float16 (tolerance 2e-2): with s = 30, a coefficient up to 0.6 counts as dropped; 3 kept at 30 and 4 at
    # `small`: the median of those above 1/2 is 30 (0.5 is not above it) or 0.55 (not a rescaling > 1)
    c = np.zeros(100)
    c[:3] = 30.0
    c[3:7] = small
    assert _named([_dcase(c.reshape(25, 4), dtype="float16")]) == named


@pytest.mark.parametrize("s,named", [(1 + 10 * 2e4 * U32, False), (1 + 9 * 2e4 * U32, False),
                                     (1 + 10.5 * 2e4 * U32, True), (1 + 12 * 2e4 * U32, True)])
def test_the_rescaling_must_exceed_1_by_more_than_10_tolerances(s, named):
    # float32: tolerance 2e4 u = 1.19e-3; one weight of 40 dropped (the rate 1 - 1/s implies about half of one)
    assert _named([_dcase(_drop(10, s, 1), dtype="float32")]) == named


def test_a_float64_rescaling_just_above_1_plus_1e_5_is_named():
    assert _named([_dcase(_drop(10, 1.0000105, 1))])
    assert not _named([_dcase(_drop(10, 1.0000095, 1))])


@pytest.mark.parametrize("value,named", [
    (2 * 2e4 * U32, True), (np.nextafter(2 * 2e4 * U32, 1), False),            # near 0: within rtol x s
    (2 + 2 * 2e4 * U32, True), (np.nextafter(2 + 2 * 2e4 * U32, 3), False),    # near s, above it
    (2 - 2 * 2e4 * U32, True), (np.nextafter(2 - 2 * 2e4 * U32, 1), False),    # near s, below it
    (1.0, False)])
def test_every_coefficient_must_be_within_the_tolerance_times_s_of_0_or_of_s(value, named):
    C = _drop(10, 2.0, 20)
    C[0, 0] = value                                   # float32: rtol 2e4 u, s = 2 (the median)
    assert _named([_dcase(C, dtype="float32")]) == named


@pytest.mark.parametrize("value,dropped", [(2 * 2e4 * U32, 20), (np.nextafter(2 * 2e4 * U32, 0), 20),
                                           (2 * 2e4 * U32 / 3, 20), (2.0, 19)])
def test_a_coefficient_within_the_tolerance_times_s_of_0_is_counted_as_dropped(value, dropped):
    C = _drop(10, 2.0, 20)
    C[0, 0] = value                                   # one of the 20 zeros moved to `value` (float32, s = 2)
    line = fd.dropout_at_zero_line("t", [_dcase(C, dtype="float32")])
    assert len(line) == 1 and f", {dropped} of 40 weights solved for are 0 " in line[0]


@pytest.mark.parametrize("dropped,named", [(23, False), (24, True), (50, True), (76, True), (77, False)])
def test_the_fraction_dropped_must_be_the_rate_within_5_binomial_standard_deviations_plus_1(dropped, named):
    # s = 2: rate 1/2, 100 coefficients: 50 dropped expected, sd 5, so 50 +- 26 pass
    assert _named([_dcase(_drop(25, 2.0, dropped))]) == named


def test_no_weight_dropped_is_not_dropout():
    # s = 1.1 (rate 1/11): on 32 coefficients 0 dropped is within the binomial bound (2.9 +- 9.1), yet not dropout
    C = _drop(8, 1.1, 0)
    C[0, 0] = 0.0                                     # one dropped: named
    assert _named([_dcase(C)])
    assert not _named([_dcase(_drop(8, 1.1, 0))])


def test_the_constant_named_is_the_value_fitted_on_the_smallest_failing_case():
    # the smallest case's kernel used 0.3, the other's 0.3 (1 + 5e-4), within REL: "the constant 0.3" (not 0.30015)
    small = _random_case(2, 1, 2, 16, 2, seed=110, id="hand/small")
    large = _random_case(2, 4, 6, 9, 2, seed=111, id="hand/large")
    out = fitting.fit_scale([_run(large, 0.3 * (1 + 5e-4)), _run(small, 0.3)], [], _always)
    assert out is not None and out[0] == "the constant 0.3" and out[1] is small
