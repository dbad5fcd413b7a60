"""The fitted softmax scale (refimpl/harness/analysis/fitting.py): the rules tests/test_fit_rules.py leaves open.

As the module doc states it: the fitted values are named by the first formula they all agree with (within
``REL``: a fitted value at exactly ``REL`` relative from a formula agrees with it); a formula of some calls only
(it reproduces every failing case but changes a passing one) is named with a condition true on each failing case
and on no passing case whose expected output the formula would change (beyond 1e-3 (1 + max|expected|), the same
bound a case is reproduced within), and the line quotes the smallest failing case (by output size times Sk).

The cases are made by hand and every output is computed here with a softmax written here."""
import math
from types import SimpleNamespace

import numpy as np

from refimpl.harness.analysis import fitting


def _attend(q, k, v, c):
    """softmax(c q k^T) v, written here."""
    s = c * (q @ np.swapaxes(k, -1, -2))
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)) @ v


def _case(q, k, v, id, x):
    """A case with no scale given whose one boolean feature ``x`` the condition search reads; its expected output is
    the softmax at the expected scale 1/sqrt(D)."""
    B, H, Sq, D = q.shape
    Sk, Dv = k.shape[-2], v.shape[-1]
    spec = SimpleNamespace(id=id, D=D, Dv=Dv, Sk=Sk, Sq=Sq, Hq=H, scale=None, features=lambda: {"x": x})
    return SimpleNamespace(spec=spec, q=q, k=k, v=v, expected=_attend(q, k, v, 1 / math.sqrt(D)),
                           live=np.ones((B, H, Sq), bool), reference_kwargs=lambda: dict(mask=None, scale=None))


def _random(H, Sq, Sk, D, Dv, seed, x):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s) for s in ((1, H, Sq, D), (1, H, Sk, D), (1, H, Sk, Dv)))
    return _case(q, k, v, f"hand/{seed}", x)


def _always(model, data, got):
    return True


# a kernel that leaves the scores unscaled (scale 1) on the cases where x holds, and scales right elsewhere
SMALL = _random(2, 3, 5, 16, 4, seed=1, x=True)          # output size 24 x Sk 5 = 120: the smallest
LARGER = _random(3, 4, 7, 9, 3, seed=2, x=True)          # 36 x 7 = 252
RIGHT = _random(2, 2, 6, 25, 5, seed=3, x=False)         # x false: the kernel's output is the expected one
FAIL = [(LARGER, _attend(LARGER.q, LARGER.k, LARGER.v, 1.0)), (SMALL, _attend(SMALL.q, SMALL.k, SMALL.v, 1.0))]
PASS = [(RIGHT, RIGHT.expected.copy())]


def test_a_scale_of_some_calls_only_is_named_with_its_condition_and_quotes_the_smallest_failing_case():
    out = fitting.fit_scale(FAIL, PASS, _always)
    assert out is not None
    name, quoted, when = out
    assert name.startswith("1 (no scaling)") and fitting.FORMULAS[name](SMALL.spec) == 1.0
    assert quoted is SMALL and when == " when x"


def _moved_by(t, x=True, M=3.0):
    """One key: every scale gives the output v = (M, 0) on both rows; the case's expected output differs from it by
    t on one entry, so that any formula moves its expected output by t exactly."""
    q, k = np.zeros((1, 1, 2, 9)), np.zeros((1, 1, 1, 9))
    data = _case(q, k, np.array([M, 0.0]).reshape(1, 1, 1, 2), "hand/flat", x)
    data.expected = np.array([[[[M, 0.0], [M, t]]]])
    return data


def test_a_passing_case_moved_by_exactly_1e_3_times_1_plus_its_largest_value_is_not_changed():
    bound = 1e-3 * (1.0 + 3.0)                                   # max|expected| = M = 3
    at = _moved_by(bound)
    assert np.abs(at.expected).max() == 3.0
    # x holds on it as on the failing cases: were it changed, no condition would tell them apart
    out = fitting.fit_scale(FAIL, PASS, _always, every_pass=PASS + [(at, at.expected)])
    assert out is not None and out[1] is SMALL and out[2] == " when x"
    beyond = _moved_by(np.nextafter(bound, 1.0))
    assert fitting.fit_scale(FAIL, PASS, _always, every_pass=PASS + [(beyond, beyond.expected)]) is None


def test_a_fitted_value_exactly_rel_from_a_formulas_agrees_with_it_and_one_beyond_does_not():
    x = 1000.0
    c = x + fitting.REL * x                                     # 1e-3 * 1000 = 1 exactly: c = 1001
    assert abs(c - x) == fitting.REL * abs(x)
    assert fitting._agree(c, x) and fitting._agree(x - fitting.REL * x, x)
    assert not fitting._agree(np.nextafter(c, math.inf), x)
    assert fitting._agree(0.0, 0.0) and not fitting._agree(1e-300, 0.0)        # 0 agrees with 0 alone
