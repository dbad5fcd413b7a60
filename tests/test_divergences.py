"""The divergence catalogue (docs/divergences.md): every way the R package differs from refimpl,
each asserted on a minimal example against the real package. A new package version that changes
one of them fails here; so does a divergence that is not in the catalogue (the Hypothesis hunt).
"""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl import tolerance as tol
from refimpl.r import bridge as rbridge, compat as r_compat
from refimpl.testing import assert_conforms, assert_exact

pytestmark = pytest.mark.r
F = tol.forward(np.float64, 16, 10)


def test_catalogue_was_measured_on_this_package_version(rb):
    assert rbridge.availability().attention_version == rbridge.EXPECTED_ATTENTION_VERSION, (
        "the divergence catalogue was measured on attention 0.4.0: re-measure it for this version")


def test_D1_computeweights_scales_by_sqrt_nrow(rb):
    scores = np.array([[0.0, 1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # nrow 4 -> /2
    r = rb.call("ComputeWeights", scores).unwrap()[0]
    e = np.exp(0.5)
    assert_conforms(r[0], [1 / (3 + e), e / (3 + e), 1 / (3 + e), 1 / (3 + e)], F, "R row 0 uses /sqrt(4)")
    assert_conforms(r_compat.ComputeWeights(scores), r, F, "r_compat")
    assert not np.allclose(ri.softmax(scores / math.sqrt(3))[0], r[0]), "d_k=3 scaling would differ"


def test_D2_computeweights_is_always_4x4(rb):
    two_rows = np.zeros((2, 4))
    r = rb.call("ComputeWeights", two_rows).unwrap()[0]
    assert_exact(r, np.vstack([np.full((2, 4), 0.25), np.zeros((2, 4))]), "2 rows -> zero rows 3-4")
    r2 = rb.call("ComputeWeights", np.zeros((4, 2))).unwrap()[0]
    assert_exact(r2, np.full((4, 4), 0.5), "2 columns are recycled: [1/2, 1/2, 1/2, 1/2]")
    assert_exact(r_compat.ComputeWeights(np.zeros((4, 2))), r2, "r_compat recycling")
    for shape, msg in (((5, 4), "subscript out of bounds"),
                       ((4, 3), "number of items to replace is not a multiple of replacement length")):
        res = rb.call("ComputeWeights", np.zeros(shape))
        assert res.error == msg, (shape, res.error)
        with pytest.raises(r_compat.RCompatError, match=msg):
            r_compat.ComputeWeights(np.zeros(shape))


def test_D3_fully_masked_row_gets_uniform_weights(rb):
    q = k = v = np.eye(3)
    mask = np.array([[1.0, 1, 1], [0, 0, 0], [1, 1, 1]])
    out_r, w_r = rb.call("attention", q, k, v, mask).unwrap()
    assert_conforms(w_r[1], [1 / 3] * 3, F, "R: uniform")
    _, w = ri.scaled_dot_product_attention(q, k, v, mask=mask.astype(bool))
    assert_exact(w[1], [0.0, 0.0, 0.0], "refimpl: zeros")
    assert r_compat.attention_divergences(q, k, v, mask) == ["D3"]


def test_D4_finite_fill_loses_to_very_negative_scores(rb):
    q = np.array([[1e6, 0.0]])
    k = np.array([[-1e5, 0.0], [0.0, 0.0]])            # attended score -1e11/sqrt(2) < -1e10
    v = np.array([[1.0], [2.0]])
    mask = np.array([[1.0, 0.0]])                      # key 2 masked
    out_r, w_r = rb.call("attention", q, k, v, mask).unwrap()
    assert_exact(w_r, [[0.0, 1.0]], "R gives all weight to the masked key")
    out, w = ri.scaled_dot_product_attention(q, k, v, mask=mask.astype(bool))
    assert_exact(w, [[1.0, 0.0]], "refimpl masks it")
    assert "D4" in r_compat.attention_divergences(q, k, v, mask)


def test_D5_vector_mask_is_recycled_down_the_queries(rb):
    q = k = v = np.eye(3)
    mask = np.array([1.0, 1.0, 0.0])                   # meant: mask key 3; R: masks query row 3
    _, w_r = rb.call("attention", q, k, v, mask).unwrap()
    assert_conforms(w_r[2], [1 / 3] * 3, F, "R: row 3 fully masked -> uniform")
    assert_conforms(r_compat.attention(q, k, v, mask)[1], w_r, F, "r_compat")
    _, w = ri.scaled_dot_product_attention(q, k, v, mask=mask.astype(bool))
    assert (w[:, 2] == 0).all() and (w[2] != 0).any(), "refimpl broadcasts over keys"


def test_D6_single_key_fails_for_several_queries(rb):
    res = rb.call("attention", np.ones((3, 2)), np.ones((1, 2)), np.ones((1, 2)))
    assert res.error == "non-conformable arguments"
    with pytest.raises(r_compat.RCompatError, match="non-conformable"):
        r_compat.attention(np.ones((3, 2)), np.ones((1, 2)), np.ones((1, 2)))
    out, w = ri.scaled_dot_product_attention(np.ones((3, 2)), np.ones((1, 2)), np.full((1, 2), 7.0))
    assert_exact(out, np.full((3, 2), 7.0), "refimpl: the only value")


def test_D7_attention_returns_unnamed_list(rb):
    unnamed = rb.apply("function() is.null(names(attention::attention(diag(2), diag(2), diag(2))))")
    assert bool(np.asarray(unnamed).reshape(-1)[0]) is True
    assert len(rb.call("attention", np.eye(2), np.eye(2), np.eye(2)).value) == 2


def test_D8_nan_and_inf_propagate_in_r_refimpl_refuses(rb):
    k = np.array([[np.inf, 0.0], [0.0, 1.0]])
    q = v = np.eye(2)
    _, w_r = rb.call("attention", q, k, v, np.array([[0.0, 1], [0, 1]])).unwrap()
    assert np.isnan(w_r[0]).all(), "Inf * 0 = NaN for the masked infinite score"
    assert np.isnan(rb.call("SoftMax", np.array([1.0, np.nan])).unwrap()[0]).all()
    with pytest.raises(ri.NonFiniteInputError):
        ri.scaled_dot_product_attention(q, k, v)


def test_D9_softmax_of_a_matrix_normalises_all_elements(rb):
    m = np.array([[0.0, 0.0], [0.0, 0.0]])
    r = rb.call("SoftMax", m).unwrap()[0]
    assert_exact(r, np.full((2, 2), 0.25), "R: one softmax over 4 elements")
    assert_exact(ri.softmax(m), np.full((2, 2), 0.5), "refimpl: per row")


def test_D10_fractional_mask_blends(rb):
    q = k = v = np.eye(2)
    mask = np.array([[1.0, 0.5], [1.0, 1.0]])
    _, w_r = rb.call("attention", q, k, v, mask).unwrap()
    assert_exact(w_r[0], [1.0, 0.0], "0.5 * score - 0.5e10 underflows")
    assert_conforms(r_compat.attention(q, k, v, mask)[1], w_r, F, "r_compat")
    assert "D10" in r_compat.attention_divergences(q, k, v, mask)


def test_D11_overflowing_scores_give_nan_in_r_finite_in_refimpl(rb):
    q = np.array([[1e200, 0.0]])
    k = np.array([[1e200, 0.0], [0.0, 1.0]])
    v = np.array([[1.0], [2.0]])
    _, w_r = rb.call("attention", q, k, v).unwrap()
    assert np.isnan(w_r).all()
    out, w = ri.scaled_dot_product_attention(q, k, v)
    assert_exact(w, [[1.0, 0.0]], "refimpl: exact argmax")


def test_D12_rowmax_returns_a_column(rb):
    assert rb.call("RowMax", np.eye(3)).unwrap()[0].shape == (3, 1)


# --- the hunt: r_compat predicts R exactly; refimpl agrees unless a catalogued divergence applies ---

@st.composite
def r_cases(draw):
    nq, nk, d, dv = (draw(st.integers(1, 5)) for _ in range(4))
    mag = draw(st.sampled_from([1.0, 10.0, 1e6, 1e160]))
    el = st.floats(-mag, mag, allow_nan=False, allow_subnormal=False)
    q, k, v = (draw(hnp.arrays(np.float64, s, elements=el)) for s in ((nq, d), (nk, d), (nk, dv)))
    kind = draw(st.sampled_from(["none", "matrix01", "vector01", "fraction", "nan"]))
    mask = None
    if kind == "matrix01":
        mask = draw(hnp.arrays(np.float64, (nq, nk), elements=st.sampled_from([0.0, 1.0])))
    elif kind == "vector01":
        mask = draw(hnp.arrays(np.float64, (nk,), elements=st.sampled_from([0.0, 1.0])))
    elif kind == "fraction":
        mask = draw(hnp.arrays(np.float64, (nq, nk), elements=st.sampled_from([0.0, 0.25, 1.0])))
    elif kind == "nan":
        k = k.copy()
        k.reshape(-1)[0] = np.nan
    return q, k, v, mask


@given(case=r_cases())
def test_hunt_r_compat_predicts_r_and_every_divergence_is_catalogued(rb, case):
    q, k, v, mask = case
    res = rb.call("attention", q, k, v, mask)
    value, err_c = r_compat.attention_or_error(q, k, v, mask)
    assert res.error == err_c, f"R error {res.error!r}, r_compat {err_c!r}"
    codes = r_compat.attention_divergences(q, k, v, mask)
    if err_c is not None:
        assert "D6" in codes
        return
    out_c, w_c = value
    out_r, w_r = res.value
    assert np.array_equal(np.isnan(w_r), np.isnan(w_c)), "NaN pattern"
    finite = np.isfinite(q).all() and np.isfinite(k).all()
    if finite and not np.isnan(w_r).any():
        assert_conforms(w_c, w_r, tol.forward_for_sdpa(q, k, v, weights=True), "r_compat weights vs R")
    if codes:
        return
    keep = None if mask is None else np.asarray(mask).astype(bool)
    out, w = ri.scaled_dot_product_attention(q, k, v, mask=keep)
    assert_conforms(w, w_r, tol.forward_for_sdpa(q, k, v, weights=True), f"uncatalogued divergence in weights {case!r}")
    assert_conforms(out, out_r, tol.forward_for_sdpa(q, k, v), f"uncatalogued divergence in output {case!r}")
