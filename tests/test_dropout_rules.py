"""The dropout rules the mutation pass of issue #24 found unpinned: the bug models' outputs (refimpl.bugs_dropout),
computed by hand on one row, and the dropout verdict (refimpl.harness.verdicts.dropout_judge): its output bound,
its malformed inputs, and the keep-rate test (which regime where, the exact binomial tails, the rejection edges).
Expected figures come from the documented rules, exact rational arithmetic and hand computations."""
import math
import time
from dataclasses import replace
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl import tolerance as tol
from refimpl.bugs_dropout import MODELS, right
from refimpl.harness.apis import Returned
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts import dropout_judge as dj
from refimpl.harness.verdicts.dropout_judge import Z_REJECT, binomial_two_sided, count_rejected, keep_rate

STORE = CaseStore()

# one query row, two keys: weights 1/4 and 3/4, values 2 and 4; the first key kept, the second dropped; p = 1/4
W = np.array([0.25, 0.75]).reshape(1, 1, 1, 2)
V = np.array([2.0, 4.0]).reshape(1, 1, 2, 1)
KEEP = np.array([True, False]).reshape(1, 1, 1, 2)
P = 0.25


def _variant(model, label):
    return next(x.fn for x in MODELS[model].variants if x.label == label)


# --- the bug models ------------------------------------------------------------------------------------------------

def test_the_right_output_scales_the_kept_weights_by_one_over_one_minus_p():
    # (1/4 x 1 / (3/4)) x 2 + 0 x 4 = 2/3
    assert right(W, V, KEEP, P)[0, 0, 0, 0] == pytest.approx(2 / 3, rel=1e-15)


def test_the_times_one_minus_p_mistake_scales_the_kept_weights_by_one_minus_p():
    # 1/4 x 3/4 x 2 = 3/8
    assert _variant("dropout-scale", "x (1 - p)")(W, V, KEEP, P)[0, 0, 0, 0] == pytest.approx(0.375, rel=1e-15)


def test_the_inverted_over_p_mistake_keeps_the_dropped_weights_scaled_by_one_over_p():
    # the dropped key's weight 3/4, scaled by 1/p = 4, times its value 4 = 12
    assert _variant("dropout-inverted", "inverted, x 1/p")(W, V, KEEP, P)[0, 0, 0, 0] == pytest.approx(12.0, rel=1e-15)


# --- the dropout verdict: its output bound and malformed inputs ----------------------------------------------------

def _keyed_case():
    """A float64 case with several keys per row, no dead row, Hq = Hkv and at least 200 attended weights."""
    for s in select(["sizes"], "quick", ("float64",)):
        if s.Sk >= 8 and s.Hq == s.Hkv and not s.dead_rows and s.B * s.Hq * s.Sq * s.Sk >= 200:
            return STORE.get(s)
    raise AssertionError("no such case")


def _fair_keep(data, p, seed=0):
    return np.random.default_rng(seed).random(data.weights.shape) >= p


@pytest.mark.parametrize("factor,ok", [(0.5, True), (2.0, False)])
def test_the_dropout_output_bound_is_rule_3_on_max_v_over_one_minus_p(factor, ok):
    """The replayed output (P x keep / (1 - p)) @ V is allowed K_FORWARD x eps x n_terms x max|V| / (1 - p); V is
    scaled below 1 here so that its largest magnitude is its own, not 1."""
    base = _keyed_case()
    data = replace(base, v=base.v / 8)
    vmax = float(np.abs(data.v).max())
    assert vmax < 1
    p, n = 0.3, 100.0
    keep = _fair_keep(data, p)
    want = (data.weights * keep / (1 - p)) @ data.v                    # Hq = Hkv: no head repeat
    allowed = tol.K_FORWARD * tol.eps("float64") * n * vmax / (1 - p)
    out = want.copy()
    out.flat[0] += factor * allowed
    got = Returned(out, None, "float64", [], dropout_keep=keep, dropout_p=p)
    ratio, problems = dj.judge_dropout(data, got, n)
    err = float(np.abs(out - want).max())
    assert ratio == pytest.approx(err / allowed, rel=1e-9) and ratio == pytest.approx(factor, rel=1e-3)
    assert not [x for x in problems if x.startswith("dropout pattern:")]   # a fair draw
    assert (not problems) == ok and (ok or "output with dropout p=0.3" in problems[0])


def test_a_case_without_oracle_weights_cannot_be_judged_with_dropout():
    data = _keyed_case()
    keep = _fair_keep(data, 0.3)
    got = Returned(data.expected, None, "float64", [], dropout_keep=keep, dropout_p=0.3)
    assert dj.judge_dropout(replace(data, weights=None), got, 10.0) == (
        math.inf, ["dropout: this case has no oracle weights to replay the pattern on"])


def test_a_pattern_of_the_wrong_shape_fails_naming_both_shapes():
    data = _keyed_case()
    keep = _fair_keep(data, 0.3)[..., :-1]
    got = Returned(data.expected, None, "float64", [], dropout_keep=keep, dropout_p=0.3)
    assert dj.judge_dropout(data, got, 10.0) == (
        math.inf, [f"dropout: the pattern has shape {keep.shape}, expected {data.weights.shape}"])


def test_a_returned_object_that_does_not_say_its_mask_was_given_has_its_keep_rate_tested():
    """Only a target given refimpl's mask (``dropout_given`` true) skips the keep-rate test; an object without the
    attribute is judged as the target's own pattern: every weight kept at p = 0.3 is rejected."""
    data = _keyed_case()
    p = 0.3
    keep = np.ones(data.weights.shape, bool)
    got = SimpleNamespace(output=data.weights @ data.v / (1 - p), dropout_keep=keep, dropout_p=p)
    _, problems = dj.judge_dropout(data, got, 100.0)
    n = int((data.weights > 0).sum())
    assert any(x.startswith(f"dropout pattern: kept {n} of {n} attended weights") for x in problems), problems


def test_the_keep_rate_of_a_case_with_no_attended_weight_is_zero_of_zero_with_z_zero():
    data = _keyed_case()
    none = replace(data, dead=np.ones_like(data.dead))
    assert keep_rate(none, _fair_keep(data, 0.3), 0.3) == (0, 0, 0.0)


# --- the keep-rate test: which regime, and its edges ---------------------------------------------------------------

@pytest.mark.parametrize("n,p,normal", [(100, 0.5, True),      # n p (1 - p) = 25: the normal approximation
                                        (400, 0.1, True),      # 36
                                        (200, 0.1, False),     # 18: the exact tails
                                        (30, 0.9, False)])     # 2.7
def test_the_normal_approximation_is_used_where_n_p_one_minus_p_is_at_least_25(n, p, normal):
    k = round(n * (1 - p))
    _, how = count_rejected(k, n, p)
    assert how.startswith("z = ") == normal and how.startswith("exact two-sided binomial p = ") == (not normal)


def test_z_is_the_kept_counts_distance_from_n_times_one_minus_p_in_standard_deviations():
    # 176 kept of 200 at p = 0.2: (176 - 160) / sqrt(200 x 0.2 x 0.8) = 16 / sqrt(32) = 2.83
    assert count_rejected(176, 200, 0.2) == (False, "z = 2.8, two-sided p < 1e-6")


def test_a_z_of_exactly_z_reject_is_not_rejected():
    """The test rejects beyond |z| = Z_REJECT: 12,512,229 kept of 25,000,000 at p = 1/2 is z = 12229 / 2500 =
    4.8916 exactly (every step exact in binary but the last, correctly rounded as the literal is)."""
    assert (12512229 - 25_000_000 * 0.5) / math.sqrt(25_000_000 * 0.25) == Z_REJECT
    assert count_rejected(12512229, 25_000_000, 0.5)[0] is False
    assert count_rejected(12512230, 25_000_000, 0.5)[0] is True


def _exact_two_sided(d, n, p):
    """2 min(P(D <= d), P(D >= d)) for D ~ Binomial(n, p), in exact rational arithmetic (p as its binary value)."""
    p = Fraction(p)
    below = [math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(d + 1)]     # P(D = 0) ... P(D = d)
    return min(1.0, float(2 * min(sum(below), 1 - sum(below[:-1]))))


@pytest.mark.parametrize("n,p,drops,rejected", [(100, 0.02, 12, False), (1000, 0.002, 13, True)])
def test_the_exact_tails_reject_below_a_p_value_of_1e_minus_6(n, p, drops, rejected):
    """12 drops of 100 at p = 0.02 has p-value 1.68e-6: not rejected; 13 of 1000 at p = 0.002, 3.9e-7: rejected."""
    pv = _exact_two_sided(drops, n, p)
    assert (pv < 1e-6) == rejected and (1e-6 < pv < 2e-6 if not rejected else pv < 5e-7)
    assert binomial_two_sided(drops, n, p) == pytest.approx(pv, rel=1e-9)
    assert count_rejected(n - drops, n, p)[0] is rejected


def test_a_p_value_of_exactly_1e_minus_6_is_not_rejected():
    p = float.fromhex("0x1.0ca8d9d23d60fp-6")          # where 10 drops of 76 have a p-value of 1e-6 to the bit
    if binomial_two_sided(10, 76, p) != 1e-6:
        pytest.skip("this libm's lgamma/exp do not land on 1e-6 exactly")
    assert 76 * p * (1 - p) < 25
    assert count_rejected(66, 76, p) == (False, "exact two-sided binomial p = 1e-06")


@pytest.mark.parametrize("d,n,p,want", [(0, 5, 0.0, 1.0),     # never drops: no drop is certain
                                        (1, 5, 0.0, 0.0),     # ... and one drop impossible
                                        (5, 5, 0.0, 0.0),
                                        (5, 5, 1.0, 1.0),     # always drops: all five is certain
                                        (4, 5, 1.0, 0.0),
                                        (0, 5, 1.0, 0.0),
                                        (0, 0, 0.3, 1.0),     # no draw at all
                                        (0, 1, 0.0, 1.0)])
def test_the_degenerate_binomials_are_certain_or_impossible(d, n, p, want):
    got = binomial_two_sided(d, n, p)
    assert got == want and type(got) is float


def test_the_exact_tails_stop_where_their_terms_no_longer_count():
    """0 drops of 3,000,000 weights at p = 3e-6 (9 expected): the p-value 2 (1 - p)^n, found by summing the tail
    until its terms are negligible, not over three million terms."""
    start = time.perf_counter()
    pv = binomial_two_sided(0, 3_000_000, 3e-6)
    took = time.perf_counter() - start
    assert pv == pytest.approx(2 * (1 - 3e-6) ** 3_000_000, rel=1e-9)
    assert took < 0.5, took
