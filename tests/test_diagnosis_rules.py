"""The diagnosis's fit rules one at a time (refimpl/harness/analysis/diagnosis.py), on small cases made here.

* What a bug model is called with (``variant_kwargs``): a model of the causal/window flags gets, where the API
  handed the band inside the mask, that band in the mask (as -inf in a float mask where the target's mask is
  float, docs/diagnosis.md); a model that takes the user's mask and the ALiBi slopes apart gets them apart; a
  packed batch's model runs a dense case only as B sequences of (Sq, Sk), without a mask and with its band
  bottom-right.
* A fit (``fits``, the module doc): |model - got| <= atol + rtol |got|, atol = 1e-6 (1 + max|v|), rtol = 1e-3,
  a bool answer; on a failing case the model must also be closer to the target than the expected output is (at
  most EXPLAINS times as far). The fitted forms reproduce a case by the same closeness.
* The sample a model is held to: the passing cases up to 20 (docs/diagnosis.md); cases with more than MAX_SCORES
  scores are not fitted; a model that raises on a case does not apply there.

Every expected value is computed here: the band written out with NumPy, the tolerances from the module doc. A
table of one model made here (monkeypatched into refimpl.bugs.MODELS) reads the sample and the fitted forms."""
from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl import bugs
from refimpl.attention import scaled_dot_product_attention
from refimpl.bug_model import Variant
from refimpl.harness.cases import Status
from refimpl.harness.cases.features import CaseSpec
from refimpl.harness.analysis import diagnosis, diagnosis_sample
from refimpl.harness.analysis.diagnosis import diagnose, fits, variant_kwargs
from refimpl.harness.apis import Returned
from refimpl.harness.verdicts.judge import DEAD_ROWS_FAILED, CaseResult, judge
from tests.support.rule_cases import STORE, rule_returned as _returned, rule_spec as _spec


def _variant(model: str, label: str) -> Variant:
    return next(v for v in bugs.MODELS[model].variants if v.label == label)


def _band(Sq, Sk, alignment="top-left"):
    """The causal band written out: query i keeps key j <= i (+ Sk - Sq bottom-right)."""
    offset = Sk - Sq if alignment == "bottom-right" else 0
    return np.arange(Sk)[None, :] <= np.arange(Sq)[:, None] + offset


def _folded(spec, **kw):
    """The case's data as a target got it with the band inside its mask (no flags)."""
    return replace(STORE.get(_spec(**spec)), band_flags=False, **kw)


# --- what a model is called with ---------------------------------------------------------------------------


def test_a_model_of_the_user_mask_gets_the_users_mask_and_the_alibi_slopes_apart():
    data = STORE.get(_spec(Hq=2, Hkv=2, mask="additive", alibi=True))
    kw = variant_kwargs(_variant("additive-mask-sign", "S - mask"), data)
    assert kw["mask"] is data.mask and kw["slopes"] is data.slopes


def test_a_flag_model_gets_the_band_folded_into_a_bool_mask():
    data = _folded(dict(mask="bool", is_causal=True))
    kw = variant_kwargs(_variant("mask-polarity", "True = masked"), data)
    assert kw["mask"].dtype == bool and np.array_equal(kw["mask"], data.mask & _band(3, 5))
    assert kw["is_causal"] is False and kw["window"] is None


def test_a_flag_model_gets_the_band_as_minus_inf_in_a_float_mask():
    data = _folded(dict(mask="additive", is_causal=True, alignment="bottom-right"))
    kw = variant_kwargs(_variant("causal-alignment", "other alignment"), data)
    band = _band(3, 5, "bottom-right")
    assert np.array_equal(kw["mask"], np.where(band, data.mask, -np.inf))
    assert kw["is_causal"] is False and kw["window"] is None


@pytest.mark.parametrize("user_mask", ["bool", "none"])
def test_a_flag_model_of_the_users_mask_gets_the_band_as_0_and_minus_inf_beside_alibi(user_mask):
    # the target's mask is float (ALiBi is in it): the band and the user's bool mask reach the model as 0 / -inf,
    # the slopes apart
    data = _folded(dict(Hq=2, Hkv=2, mask=user_mask, alibi=True, is_causal=True))
    kw = variant_kwargs(_variant("mask-kind", "bool mask as a bias of -1 on the dropped keys (not -inf)"), data)
    keep = _band(3, 5) if data.mask is None else data.mask & _band(3, 5)
    assert kw["mask"].dtype != bool and np.array_equal(kw["mask"], np.where(keep, 0.0, -np.inf))
    assert kw["slopes"] is data.slopes and kw["is_causal"] is False


def test_a_packed_model_does_not_apply_to_a_dense_case_with_a_mask():
    data = STORE.get(_spec(Sq=4, Sk=4, mask="bool"))
    assert variant_kwargs(_variant("causal-alignment", "top-left in each sequence"), data) is None


def test_a_packed_model_runs_a_dense_case_as_sequences_only_where_its_band_is_bottom_right():
    variant = _variant("causal-alignment", "top-left in each sequence")
    top = STORE.get(_spec(B=2, is_causal=True))
    assert variant_kwargs(variant, top) is None                    # Sq != Sk: a top-left band is no sequence's
    bottom = STORE.get(_spec(B=2, is_causal=True, alignment="bottom-right"))
    kw = variant_kwargs(variant, bottom)
    assert kw["mask"] is None and kw["seqlens"] == ((3, 5), (3, 5)) and kw["seq_causal"] is True


# --- a fit -----------------------------------------------------------------------------------------------------


def _const(out):
    return Variant("constant", lambda q, k, v, **kw: out)


def test_the_fit_allows_a_relative_error_of_one_in_a_thousand():
    data = STORE.get(_spec())
    got = np.full(data.expected.shape, 1000.0)                 # the atol term (~1e-6 (1 + max|v|)) is negligible
    assert fits(_const(got * (1 + 0.9e-3)), data, got, failing=False)
    assert not fits(_const(got * (1 + 1.1e-3)), data, got, failing=False)


def test_the_fit_allows_an_absolute_error_of_1e_6_times_one_plus_the_largest_value():
    data = STORE.get(_spec())
    got = np.zeros(data.expected.shape)                        # no rtol term
    atol = 1e-6 * (1 + np.abs(data.v).max())
    assert fits(_const(got + 0.9 * atol), data, got, failing=False)
    assert not fits(_const(got + 1.1 * atol), data, got, failing=False)


def test_on_a_failing_case_a_model_equal_to_the_reference_explains_nothing():
    data = STORE.get(_spec())
    reference = _const(data.expected.copy())
    assert fits(reference, data, data.expected.copy(), failing=False)
    assert fits(reference, data, data.expected.copy()) is False         # a fit is on a failing case by default


def test_a_model_that_does_not_apply_raises_or_returns_another_shape_does_not_fit():
    data = STORE.get(_spec())
    tiled = Variant("tiles", lambda q, k, v, **kw: data.expected, tiled=True)     # no block mask was handed

    def raises(q, k, v, **kw):
        raise ValueError("no")
    wider = np.concatenate([data.expected, data.expected], axis=-1)
    assert fits(tiled, data, data.expected, failing=False) is False
    assert fits(Variant("raises", raises), data, data.expected, failing=False) is False
    assert fits(_const(wider), data, data.expected, failing=False) is False


def _unit_case():
    """A case whose expected output is 1 everywhere (set here): distances to it are exact in binary."""
    data = STORE.get(_spec())
    return replace(data, expected=np.ones(data.expected.shape))


def test_a_model_explains_a_failure_when_at_most_explains_times_as_far_from_the_target_as_the_reference():
    data = _unit_case()
    far = 2.0 ** -12                                          # the expected output's distance to the target
    got = data.expected + far
    assert fits(_const(got - diagnosis.EXPLAINS * far), data, got)


def test_a_model_no_closer_to_the_target_than_the_expected_output_explains_nothing():
    data = _unit_case()
    far = 2.0 ** -12
    got = data.expected + far
    assert fits(_const(got + far), data, got) is False          # as far as the expected output, the other side


# --- a table of one model of its own (monkeypatched): the sample and the fitted forms' closeness ------------------


def _refimpl(q, k, v, **kw):
    return scaled_dot_product_attention(q, k, v, **kw)[0]


def _shifted(q, k, v, *, by=1.0, **kw):
    """The model of the table here: refimpl's output plus ``by`` (a callable of the case's Sk, or a number)."""
    return _refimpl(q, k, v, **kw) + (by(k.shape[-2]) if callable(by) else by)


def _table(monkeypatch, fn):
    model = bugs.BugModel("output-shifted", "a constant is added to the output", (Variant("plus", fn),))
    monkeypatch.setattr(bugs, "MODELS", {model.name: model})


def _target(data, fn) -> CaseResult:
    return _returned(data, fn(data.q, data.k, data.v, **data.reference_kwargs()))


def _batched_failures(fn, n_fail=2, **size):
    """``n_fail`` failing cases of batch 2 where the target is ``fn``; a passing case of batch 1 that the model
    changes (the condition found: "when batch > 1")."""
    fails = [_target(STORE.get(_spec(B=2, **size)), fn) for _ in range(n_fail)]
    ok = STORE.get(_spec(**size))
    return fails + [_returned(ok, ok.expected)]


def test_a_model_that_raises_on_a_passing_case_is_taken_not_to_apply_there(monkeypatch):
    # the model raises where Sk == 2: that passing case neither refutes it nor decides its condition
    def plus_one_but_raises_at_two_keys(q, k, v, **kw):
        if k.shape[-2] == 2:
            raise ValueError("two keys")
        return _shifted(q, k, v, **kw)
    _table(monkeypatch, plus_one_but_raises_at_two_keys)
    raising = STORE.get(_spec(Sk=2))
    results = _batched_failures(_shifted) + [_returned(raising, raising.expected)]
    lines = diagnose(results, STORE, target="t")
    assert len(lines) == 1 and lines[0].startswith("diagnosis t: output-shifted — "), lines
    assert " when batch > 1 " in lines[0] and "1 passing cases it would change" in lines[0], lines


@pytest.mark.parametrize("off, named", [(0.5e-3, True), (1.5e-3, False)])
def test_a_fitted_form_reproduces_a_case_within_one_in_a_thousand(monkeypatch, off, named):
    _table(monkeypatch, _shifted)
    lines = diagnose(_batched_failures(lambda *a, **kw: _shifted(*a, **kw) * (1 + off)), STORE, target="t")
    assert any(line.startswith("diagnosis t: output-shifted — ") for line in lines) is named, lines


@pytest.mark.parametrize("off, named", [(0.5, True), (1.5, False)])
def test_a_fitted_form_reproduces_a_case_within_1e_6_times_one_plus_the_largest_value(monkeypatch, off, named):
    # the model zeroes the output; the target returns off * 1e-6 (1 + max|v|) where it is 0 (the rtol term ~0)
    def zeroed(q, k, v, **kw):
        return _refimpl(q, k, v, **kw) * 0.0
    _table(monkeypatch, zeroed)

    def tiny(q, k, v, **kw):
        return zeroed(q, k, v, **kw) + off * 1e-6 * (1 + np.abs(v).max())
    lines = diagnose(_batched_failures(tiny), STORE, target="t")
    assert any(line.startswith("diagnosis t: output-shifted — ") for line in lines) is named, lines


@pytest.mark.parametrize("past_the_sample, named", [(False, True), (True, False)])
def test_a_model_is_held_to_every_passing_case_past_the_sample(monkeypatch, past_the_sample, named):
    # docs/diagnosis.md: a model agrees with the sample's passing cases (up to 20), then with every other passing
    # case of the run. Every case here brings the same features, so the sample is the run's first 20; the 21st is
    # right where the model (one added where Sk > 4) is not: it refutes the model, read after the sample
    def where_long(q, k, v, **kw):
        return _shifted(q, k, v, by=lambda sk: float(sk > 4), **kw)
    _table(monkeypatch, where_long)
    results = [_target(STORE.get(_spec(Sq=2, Sk=6)), where_long) for _ in range(2)]
    for sk in [3] * 20 + ([5] if past_the_sample else [3]):
        ok = STORE.get(_spec(Sq=2, Sk=sk))
        results.append(_returned(ok, ok.expected))
    assert [r.status for r in results] == [Status.FAIL] * 2 + [Status.PASS] * 21
    lines = diagnose(results, STORE, target="t")
    said = "diagnosis t: output-shifted — a constant is added to the output"
    assert (said in lines) is named, lines


def test_a_case_is_fitted_only_where_b_hq_sq_sk_is_at_most_the_cap():
    # the cases fitted are those with B * Hq * Sq * Sk <= MAX_SCORES (long sequences are skipped)
    side = math.isqrt(diagnosis_sample.MAX_SCORES // 4) + 1                 # 4 * side**2 > MAX_SCORES
    big = CaseSpec("rules", 0, Sq=side, Sk=side, D=4, Dv=4, Hq=4, Hkv=4)
    small = CaseSpec("rules", 0, Sq=side // 2, Sk=side // 2, D=4, Dv=4, Hq=4, Hkv=4)
    assert big.B * big.Hq * big.Sq * big.Sk > diagnosis_sample.MAX_SCORES >= small.B * small.Hq * small.Sq * small.Sk
    assert not diagnosis._small(SimpleNamespace(spec=big)) and diagnosis._small(SimpleNamespace(spec=small))


# --- a float32 model names its mistake only beyond float32 rounding ------------------------------------------------


def _scaled_v(top: float):
    """A case whose largest |v| is ``top``."""
    data = STORE.get(_spec())
    return replace(data, v=data.v * (top / np.abs(data.v).max()))


def test_a_float32_model_within_float32_rounding_of_float32_done_right_is_no_evidence():
    # values of size 1000: float32 rounds them by ~1000 * 2^-24 = 6e-5; a model 1e-6 from float32 done right
    # (1e-9 relative) differs by less than that rounding
    data = _scaled_v(1000.0)
    null = np.zeros(data.expected.shape)
    assert 1e-6 < 1000.0 * 2.0 ** -24
    assert diagnosis._beyond_float32(_const(null + 1e-6), data, null) is False


def test_a_float32_model_thousands_of_float32_roundings_from_float32_done_right_is_evidence():
    # values of size 1: a model 3e-4 from float32 done right differs by ~5000 units of float32's roundoff 2^-24
    data = _scaled_v(1.0)
    null = np.zeros(data.expected.shape)
    assert 3e-4 > 1000 * 2.0 ** -24
    assert diagnosis._beyond_float32(_const(null + 3e-4), data, null) is True


# --- NaN and infinities on both sides; the rows with no key where the judge failed them ---------------------------

def test_the_distance_counts_a_nan_or_an_infinity_on_both_sides_as_no_distance():
    # _distance's rule: NaN == NaN and an infinity equal to itself count as 0; on one side only, as inf
    rows = np.ones((1, 1, 2), bool)
    a = np.array([[[[np.nan, 1.0], [np.inf, 2.0]]]])
    assert diagnosis._distance(a, a.copy(), rows) == 0.0
    one_side = a.copy()
    one_side[0, 0, 0, 0] = 1.0
    assert diagnosis._distance(a, one_side, rows) == np.inf


def test_nan_on_the_rows_with_no_key_where_zeros_are_required_is_named_dead_rows_nan():
    # the judge fails the rows with no key (DEAD_ROWS_FAILED in its detail): a model is then fitted with those rows
    # as live ones, so the model that puts NaN there explains the failure (the rows with keys are right)
    results = []
    for _ in range(3):
        data = STORE.get(_spec(mask="bool", dead_rows=True, Sq=6, Sk=5))
        assert data.dead.any()
        out = np.where(data.dead[..., None], np.nan, data.expected)
        results.append(judge(data, Returned(out, None, "float64", []), "float64", masked_rows="zeros", cache={}))
    assert all(r.status == Status.FAIL and DEAD_ROWS_FAILED in r.detail for r in results), [r.detail for r in results]
    lines = diagnose(results, STORE, target="t")
    assert [line.split(": ", 1)[1].split(" — ")[0] for line in lines] == ["dead-rows-nan"], lines


def test_rows_with_no_key_the_judge_failed_are_fitted_as_live_ones():
    # the judge fails rows with no key that come back uniform over every key (DEAD_ROWS_FAILED): the model fitted
    # with those rows as live ones (a finite fill: a row with no key uniform) is the one that explains the run
    results = []
    for _ in range(3):
        data = STORE.get(_spec(mask="bool", dead_rows=True, Sq=6, Sk=5))
        uniform = np.broadcast_to(data.v.mean(axis=-2, keepdims=True), data.expected.shape)   # (B, Hq, Sq, Dv)
        out = np.where(data.dead[..., None], uniform, data.expected)
        results.append(judge(data, Returned(out, None, "float64", []), "float64", masked_rows="zeros", cache={}))
    assert all(r.status == Status.FAIL and DEAD_ROWS_FAILED in r.detail for r in results), [r.detail for r in results]
    lines = diagnose(results, STORE, target="t")
    assert [line.split(": ", 1)[1].split(" — ")[0] for line in lines] == ["finite-mask-fill"], lines
