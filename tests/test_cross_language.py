"""refimpl, r_compat and the R package on the same Hypothesis-drawn cases, batched through the bridge.

Each example is a list of cases evaluated by R in one bridge call. Outside the divergence catalogue,
refimpl must agree with R within the tolerance model; inside it, R must equal r_compat (the
divergence is asserted, not ignored). A failure prints a JSON entry for tests/regressions.json.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl import strategies as rst, tolerance as tol
from refimpl.harness.cases import Status, summarise
from refimpl.harness.rows.r_cases import compare_with_r
from refimpl.r import compat as r_compat

pytestmark = pytest.mark.r
REGRESSIONS = json.loads((Path(__file__).parent / "regressions.json").read_text())["cases"]


def _hex(a):
    return np.vectorize(lambda x: float(x).hex())(np.asarray(a, dtype=np.float64)).tolist()


def regression_entry(q, k, v, mask) -> str:
    return json.dumps({"why": "found by Hypothesis", "q": [_hex(q)], "k": _hex(k), "v": _hex(v),
                       "mask": None if mask is None else np.asarray(mask).tolist()})


@st.composite
def r_case(draw):
    q, k, v = draw(rst.r_attention_inputs(n_keys=st.integers(1, 6),
                                          magnitude=draw(st.sampled_from([1.0, 10.0, 100.0]))))
    mask = None
    if draw(st.booleans()):
        mask = draw(hnp.arrays(np.float64, (q.shape[0], k.shape[0]), elements=st.sampled_from([0.0, 1.0])))
    return q, k, v, mask


def check_case(q, k, v, mask, res):
    codes = r_compat.attention_divergences(q, k, v, mask)
    repro = f"\nregression entry for tests/regressions.json:\n{regression_entry(q, k, v, mask)}"
    value, err_c = r_compat.attention_or_error(q, k, v, mask)
    assert res.error == err_c, f"R error {res.error!r} but r_compat {err_c!r}{repro}"
    if err_c is not None:
        assert codes, f"R fails outside the divergence catalogue: {err_c}{repro}"
        return "known"
    out_c, w_c = value
    out_r, w_r = res.value
    wt, ot = tol.forward_for_sdpa(q, k, v, weights=True), tol.forward_for_sdpa(q, k, v)
    cw, co = tol.compare(w_c, w_r, wt), tol.compare(out_c, out_r, ot)
    assert cw.ok and co.ok, f"r_compat does not predict R: {cw.summary()} / {co.summary()}{repro}"
    out, w = ri.scaled_dot_product_attention(q, k, v, mask=None if mask is None else mask.astype(bool))
    verdict = summarise(compare_with_r(q, k, v, out, w, out_r, w_r), codes, {})   # refimpl check's own verdict
    if codes:
        assert verdict.status != Status.PASS or "D3" not in codes, f"catalogued {codes} but R and refimpl agree{repro}"
        return "known"
    assert verdict.status == Status.PASS, f"refimpl vs R: {verdict.detail}{repro}"
    return "agree"


@pytest.mark.slow
@given(st.lists(r_case(), min_size=1, max_size=12))
def test_random_cases_batched_through_r_agree_or_diverge_as_catalogued(rb, cases):
    results = rb.batch("attention", cases, ("Q", "K", "V", "mask"))
    for (q, k, v, m), res in zip(cases, results):
        check_case(q, k, v, m, res)


@pytest.mark.parametrize("entry", REGRESSIONS, ids=[e["why"][:40] for e in REGRESSIONS])
def test_regression_cases(rb, entry):
    f = np.vectorize(float.fromhex)
    q, k, v = (np.asarray(f(np.asarray(entry[n], dtype=object)), dtype=np.float64) for n in ("q", "k", "v"))
    q = q[0]
    mask = None if entry["mask"] is None else np.asarray(entry["mask"], dtype=np.float64)
    res = rb.batch("attention", [(q, k, v, mask)], ("Q", "K", "V", "mask"))[0]
    check_case(q, k, v, mask, res)
