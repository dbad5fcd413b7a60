"""Which failing cases the diagnosis reads and what its lines say (refimpl/harness/analysis/diagnosis.py), on
small cases made here.

* weights-transposed: named when, on every failing case read (up to 40, docs/diagnosis.md), the output is right
  and the weights are refimpl's transposed, both within the module doc's closeness (rtol 1e-3, atol 1e-6 (1 +
  max|v|) for the output).
* Failing cases that returned another shape: where they outnumber those of the right shape the line is
  ``unknown — N of M failing cases returned an output of another shape; the K of the right shape fit MODEL``,
  otherwise the fit is named and says how many it left out (docs/diagnosis.md); every failing case is counted
  (past the noise sample too); the output-shape fit counts the cases that raised.
* The 16-bit noise fingerprint: named only where the failing cases (of their dtypes) are at least as many as the
  passing ones (docs/diagnosis.md, precision_fingerprint's module doc).
* ``analyse_run``: a diagnosis for every target with a failed family case, a localisation where one FAILed."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from refimpl import bugs
from refimpl.attention import scaled_dot_product_attention
from refimpl.harness.cases import Case, CheckRun, Outcome, Status
from refimpl.harness.analysis import diagnosis, diagnosis_sample
from refimpl.harness.analysis.diagnosis import analyse_run, diagnose
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts.judge import CaseResult
from tests.support.rule_cases import STORE, rule_returned as _returned, rule_spec as _spec


# --- weights-transposed --------------------------------------------------------------------------------------

TRANSPOSED = f"diagnosis t: weights-transposed — {bugs.MODELS['weights-transposed'].explanation}"


def _transposing(data, out_factor=1.0, w_factor=1.0, transposed=True) -> CaseResult:
    """A target that returns the output (times ``out_factor``) and refimpl's weights (times ``w_factor``),
    transposed or not."""
    w = np.swapaxes(data.weights, -1, -2) if transposed else data.weights
    return _returned(data, data.expected * out_factor, w * w_factor)


def test_weights_returned_transposed_beside_a_right_output_are_named_on_a_single_failing_case():
    fail, ok = STORE.get(_spec()), STORE.get(_spec())
    results = [_transposing(fail), _returned(ok, ok.expected, ok.weights)]
    assert [r.status for r in results] == [Status.FAIL, Status.PASS]
    assert diagnose(results, STORE, target="t") == [TRANSPOSED]


def test_weights_transposed_is_not_named_when_the_output_is_wrong_too():
    data = STORE.get(_spec())
    assert TRANSPOSED not in diagnose([_transposing(data, out_factor=1.01)], STORE, target="t")


def test_weights_wrong_another_way_beside_a_right_output_are_not_named_transposed():
    data = STORE.get(_spec())
    result = _transposing(data, w_factor=1.01, transposed=False)
    assert result.status == Status.FAIL
    assert TRANSPOSED not in diagnose([result], STORE, target="t")


@pytest.mark.parametrize("off, named", [(0.5e-3, True), (1.5e-3, False)])
def test_weights_transposed_needs_the_output_right_within_one_in_a_thousand(off, named):
    data = STORE.get(_spec())
    assert (TRANSPOSED in diagnose([_transposing(data, out_factor=1 + off)], STORE, target="t")) is named


@pytest.mark.parametrize("off, named", [(0.5e-3, True), (1.5e-3, False)])
def test_weights_transposed_needs_the_weights_right_within_one_in_a_thousand(off, named):
    data = STORE.get(_spec())
    assert (TRANSPOSED in diagnose([_transposing(data, w_factor=1 + off)], STORE, target="t")) is named


@pytest.mark.parametrize("off, named", [(0.5, True), (1.5, False)])
def test_weights_transposed_needs_the_output_right_within_1e_6_times_one_plus_the_largest_value(off, named):
    # values 0 (v = 0): the rtol term is 0 and 1 + max|v| = 1, so the output may be off by 1e-6 absolute
    spec = _spec()
    data = STORE.get(spec)
    data = replace(data, v=np.zeros_like(data.v), expected=np.zeros_like(data.expected))
    store = CaseStore()
    store._data[spec.id] = data
    w = np.swapaxes(data.weights, -1, -2)
    result = _returned(data, data.expected + off * 1e-6, w)
    assert (TRANSPOSED in diagnose([result], store, target="t")) is named


@pytest.mark.parametrize("n", [40, 41])
def test_weights_transposed_is_read_on_the_first_40_failing_cases(n):
    # docs/diagnosis.md: a model explains the failing cases sampled, up to 40; the n-th here is not transposed
    # (right output, weights off by 1%): it refutes the model when it is among the first 40
    datas = [STORE.get(_spec(Sq=2, Sk=3, D=2, Dv=2)) for _ in range(n)]
    results = [_transposing(d) for d in datas[:-1]] + [_transposing(datas[-1], w_factor=1.01, transposed=False)]
    assert all(r.status == Status.FAIL for r in results)
    assert (TRANSPOSED in diagnose(results, STORE, target="t")) is (n > 40)


# --- failing cases that returned another shape ---------------------------------------------------------------


def _inverted(data) -> CaseResult:
    """A target that reads True in the bool mask as masked out (mask-polarity) on this case."""
    out = scaled_dot_product_attention(data.q, data.k, data.v, mask=~data.mask)[0]
    return _returned(data, out)


def _wider(data) -> CaseResult:
    """A target that returns one output channel too many."""
    return _returned(data, np.concatenate([data.expected, data.expected[..., :1]], axis=-1))


def _masked():
    return STORE.get(_spec(mask="bool"))


def test_a_fit_on_fewer_right_shaped_failing_cases_than_wrong_shaped_ones_says_unknown():
    results = [_inverted(_masked()), _wider(_masked()), _wider(_masked())]
    assert all(r.status == Status.FAIL for r in results)
    lines = diagnose(results, STORE, target="t")
    assert len(lines) == 1 and lines[0].startswith("diagnosis t: unknown — 2 of 3 failing cases "), lines
    assert lines[0].endswith(" fit mask-polarity"), lines


def test_a_fit_on_as_many_right_shaped_failing_cases_as_wrong_shaped_ones_is_said_with_how_many_were_left_out():
    lines = diagnose([_inverted(_masked()), _wider(_masked())], STORE, target="t")
    assert lines and lines[0].startswith("diagnosis t: mask-polarity — "), lines
    assert all(line.endswith("; 1 returned an output of another shape)") for line in lines), lines


def _heads_and_queries_swapped(data) -> CaseResult:
    """A target that returns (B, Sq, Hq, Dv): its output's layout, not refimpl's."""
    return _returned(data, np.swapaxes(data.expected, 1, 2))


def test_the_output_shape_fit_counts_the_failing_cases_that_raised_and_only_those():
    datas = [STORE.get(_spec(Hq=2, Hkv=2, Sq=3)), STORE.get(_spec(Hq=4, Hkv=4, Sq=5))]
    results = [_heads_and_queries_swapped(d) for d in datas]
    raised = _spec()
    error = CaseResult(raised.id, Status.ERROR, math.inf, "ValueError: no", features=raised.features())
    alone = diagnose(results, STORE, target="t")
    assert len(alone) == 1 and alone[0].startswith("diagnosis t: output-shape — ") and "raised" not in alone[0]
    counted = diagnose(results + [error], STORE, target="t")
    assert len(counted) == 1 and "(1 more raised)" in counted[0], counted


@pytest.mark.parametrize("n", [4, 6])
def test_the_count_of_wrong_shaped_failing_cases_covers_every_one_beyond_the_noise_sample(n, monkeypatch):
    # the lines say how many failing cases were left out: every one is counted, past the noise fingerprint's
    # sample (MAX_NOISE, made 5 here) too
    monkeypatch.setattr(diagnosis, "MAX_NOISE", 5)
    tiny = dict(Sq=2, Sk=3, D=2, Dv=2, mask="bool")
    results = [_inverted(STORE.get(_spec(**tiny)))] + [_wider(STORE.get(_spec(**tiny))) for _ in range(n - 1)]
    lines = diagnose(results, STORE, target="t")
    assert len(lines) == 1 and lines[0].startswith(f"diagnosis t: unknown — {n - 1} of {n} failing cases "), lines


def test_a_target_name_with_a_colon_and_space_keeps_the_models_name_whole():
    tiny = dict(Sq=2, Sk=3, D=2, Dv=2, mask="bool")
    results = [_inverted(STORE.get(_spec(**tiny)))] + [_wider(STORE.get(_spec(**tiny))) for _ in range(2)]
    lines = diagnose(results, STORE, target="dir: x.py:k")
    assert len(lines) == 1 and lines[0].startswith("diagnosis dir: x.py:k: unknown — 2 of 3 failing cases "), lines
    assert lines[0].split("of the right shape fit ")[1].startswith("mask-polarity"), lines


# --- the 16-bit noise fingerprint against the passing cases ----------------------------------------------------


@pytest.mark.parametrize("n_fail, n_pass, named", [(1, 1, True), (1, 2, False), (2, 2, True), (2, 3, False)])
def test_a_16_bit_noise_is_named_only_where_the_failing_cases_are_at_least_as_many_as_the_passing_ones(
        n_fail, n_pass, named):
    # docs/diagnosis.md: a 16-bit intermediate rounds on every case, so its noise is named only where the failing
    # cases (of their dtypes) are at least as many as the passing ones; here n_fail float32 cases fail (their
    # output rounded to float16) and n_pass are right
    size = dict(Sq=8, Sk=16, D=8, Dv=8, dtype="float32")
    results = []
    for i in range(n_fail + n_pass):
        data = STORE.get(_spec(**size))
        out = np.float16(data.expected) if i < n_fail else data.expected
        results.append(_returned(data, out, dtype="float32"))
    assert [r.status for r in results] == [Status.FAIL] * n_fail + [Status.PASS] * n_pass
    lines = diagnose(results, STORE, target="t")
    if named:
        assert len(lines) == 1 and lines[0].startswith("diagnosis t: low-precision — "), lines
    else:
        assert lines == ["diagnosis t: unknown"], lines


# --- a whole run -----------------------------------------------------------------------------------------------


def test_a_run_is_diagnosed_for_each_target_with_a_failed_family_case_and_localised_where_one_failed():
    masked, plain, other = _masked(), STORE.get(_spec()), STORE.get(_spec())
    row = Case("family:rules", "family", "rules", lambda t: None, specs=[masked.spec, plain.spec], store=STORE)
    unrun = Case("family:more", "family", "more", lambda t: None, specs=[other.spec], store=STORE)
    fixture = Case("fixture:x", "fixtures", "x", lambda t: None)          # no family cases

    def error(data):
        return CaseResult(data.spec.id, Status.ERROR, math.inf, "ValueError: no", features=data.spec.features())

    def right(data):
        return _returned(data, data.expected)
    rows = {"bad": [_inverted(masked), right(plain)], "good": [right(masked), right(plain)],
            "erring": [error(masked), right(plain)]}
    results = {(row.id, t): Outcome(Status.FAIL, cases=cases) for t, cases in rows.items()}
    results.update({(fixture.id, t): Outcome(Status.FAIL, detail="a fixture failed") for t in rows})
    results.update({(unrun.id, t): Outcome(Status.PASS, cases=[right(other)]) for t in ("good", "erring")})
    run = CheckRun([fixture, row, unrun], list(rows), results, {}, 0.0)
    analyse_run(run)
    assert set(run.diagnoses) == {"bad", "erring"}                  # a failed family case: an error counts too
    assert run.diagnoses["bad"] and run.diagnoses["bad"][0].startswith("diagnosis bad: mask-polarity — ")
    assert run.diagnoses["erring"] == []                            # errors alone: no model fits
    assert set(run.localisations) == {"bad"}                        # localised where a case FAILed
    assert run.localisations["bad"].startswith("fails only when: ")


def test_weights_transposed_is_not_read_on_a_failing_case_whose_inputs_the_store_no_longer_holds():
    # a result of a case the store never kept (its inputs gone): nothing to compare with, so the model is not named
    # and the diagnosis does not fail on it
    data = STORE.get(_spec())
    result = _transposing(data)
    gone = replace(result, id=_spec().id)
    assert gone.status == Status.FAIL and CaseStore()._data.get(gone.id) is None
    assert TRANSPOSED not in diagnose([gone], CaseStore(), target="t")


def test_weights_transposed_is_not_read_on_a_case_of_more_scores_than_the_sample_reads():
    # docs/diagnosis.md ("The sample"): cases of more than MAX_SCORES scores are not modelled, transposed weights
    # included; the same weights on a small case are named (the first weights-transposed test)
    spec = _spec(Sq=64, Sk=diagnosis_sample.MAX_SCORES // 64 + 1, D=2, Dv=2)
    assert not diagnosis_sample.small(spec)
    data = STORE.get(spec)
    assert TRANSPOSED not in diagnose([_transposing(data)], STORE, target="t")
