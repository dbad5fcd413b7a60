"""Conformance tests for *your* attention implementation, run by pytest through refimpl's plugin:

    pytest --pyargs refimpl.conformance --refimpl-target mypkg.attn:sdpa [--refimpl-layout BSHD]

The target follows the protocol of :mod:`refimpl.harness.target_spec`. Every golden fixture that involves attention
is run with the target in place of refimpl's sdpa, and a set of invariants is checked on random inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from refimpl import strategies as rst, tolerance as tol
from refimpl.fixtures.schema import load_all
from refimpl.harness.rows.fixture_cases import attention_fixtures, fixture_case

_FIXTURES = attention_fixtures(load_all())


def test_family_case(refimpl_target, refimpl_case, refimpl_verdicts):
    from refimpl.harness.cases import Status
    results, lines = refimpl_verdicts
    r = results[refimpl_case.id]
    if r.status in (Status.NA, Status.UNSUPPORTED):
        pytest.skip(f"{r.status}: {r.detail}")
    if r.status == Status.NOT_RUN:           # no verdict is not a pass: a gate must not go green on it
        pytest.fail(f"{refimpl_case.id} [{refimpl_target.name}]: no verdict, {r.detail} (raise --refimpl-deadline)")
    assert not Status(r.status).failed, "\n".join(
        [f"{refimpl_case.id} [{refimpl_target.name}] ({refimpl_case.describe()}): {r.status}: {r.detail}"] + lines)


@pytest.mark.parametrize("fixture", _FIXTURES, ids=[f.id for f in _FIXTURES])
def test_fixture_conforms(refimpl_target, fixture):
    o = fixture_case(fixture).run(refimpl_target)
    assert o.status in ("pass", "known", "skip"), f"{fixture.id} [{refimpl_target.name}]: {o.status}: {o.detail}"


@settings(max_examples=40, deadline=None)
@given(case=rst.attention_inputs(mask="bool"))
def test_weights_rows_sum_to_one_and_masked_keys_get_zero(refimpl_target, case):
    from refimpl.errors import Unavailable
    try:
        out, w = refimpl_target.attend(case.q, case.k, case.v, mask=case.mask)
    except Unavailable as e:
        pytest.skip(str(e))
    if w is None:
        pytest.skip("the target returns no weights")
    live = case.mask.any(axis=-1)
    sums = w.sum(axis=-1)
    assert np.all(np.abs(sums[live] - 1) <= 8 * case.k.shape[-2] * tol.eps(w.dtype)), f"row sums {sums}"
    assert np.all(w[..., ~case.mask] == 0), "masked keys must get exactly zero weight"


@settings(max_examples=40, deadline=None)
@given(case=rst.attention_inputs())
def test_output_matches_refimpl(refimpl_target, case):
    from refimpl import scaled_dot_product_attention
    out, _ = refimpl_target.attend(case.q, case.k, case.v)
    ref, _ = scaled_dot_product_attention(case.q, case.k, case.v)
    c = tol.compare(out, ref, tol.forward_for_sdpa(case.q, case.k, case.v))
    assert c.ok, f"{c.summary()}\nreproduce:\n{case.reproduction()}"
