"""Each function of the R package against refimpl and r_compat: documented examples and random inputs."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

import refimpl as ri
from refimpl import strategies as rst, tolerance as tol
from refimpl.r import compat as r_compat
from refimpl.sources import vignettes as src
from refimpl.testing import assert_conforms, assert_exact

pytestmark = pytest.mark.r


def test_softmax_documented_example(rb):
    x = src.softmax_example_input()
    assert_exact(x, [2, -2, -1, 0, 2, -2, 2, 2, 0], "set.seed(0); floor(runif(9, -3, 3))")
    r = rb.call("SoftMax", x).unwrap()[0]
    t = tol.forward(np.float64, 12, 1)
    assert_conforms(r_compat.SoftMax(x), r, t, "r_compat.SoftMax vs R")
    assert_conforms(ri.softmax(x), r, t, "refimpl.softmax vs R")


def test_rowmax_documented_example(rb):
    m = src.rowmax_example_input()
    r = rb.call("RowMax", m).unwrap()[0]
    assert_exact(r_compat.RowMax(m), r, "r_compat.RowMax")
    assert_exact(m.max(axis=1, keepdims=True), r, "row max")


def test_computeweights_documented_example(rb):
    scores = src.simple_vignette()["scores"]
    r = rb.call("ComputeWeights", scores).unwrap()[0]
    t = tol.forward(np.float64, 12, 1)
    assert_conforms(r_compat.ComputeWeights(scores), r, t, "r_compat.ComputeWeights")
    assert_conforms(ri.softmax(scores / math.sqrt(scores.shape[0])), r, t, "refimpl softmax(scores/sqrt(nrow))")


@given(x=rst.float_arrays(st.integers(1, 12), magnitude=50.0))
def test_softmax_random_vectors(rb, x):
    r = rb.call("SoftMax", x).unwrap()[0]
    t = tol.forward(np.float64, x.size + 2, 1)
    assert_conforms(r_compat.SoftMax(x), r, t, f"r_compat.SoftMax({x!r})")
    assert_conforms(ri.softmax(x), r, t, f"refimpl.softmax({x!r})")


@given(m=rst.score_matrices())
def test_rowmax_random_matrices(rb, m):
    assert_exact(r_compat.RowMax(m), rb.call("RowMax", m).unwrap()[0], f"RowMax({m!r})")


@given(s=rst.score_matrices(n_rows=st.integers(1, 4), n_cols=st.just(4)))
def test_computeweights_random_scores_up_to_four_rows(rb, s):
    r = rb.call("ComputeWeights", s).unwrap()[0]
    t = tol.forward(np.float64, 8, 1)
    assert_conforms(r_compat.ComputeWeights(s), r, t, f"ComputeWeights({s!r})")
    assert_conforms(ri.softmax(s / math.sqrt(s.shape[0]))[: s.shape[0]], r[: s.shape[0]], t, "refimpl rows")


@given(case=rst.r_attention_inputs())
def test_attention_random_inputs_agree_with_refimpl_and_r_compat(rb, case):
    q, k, v = case
    out_r, w_r = rb.call("attention", q, k, v).unwrap()
    w_tol = tol.forward_for_sdpa(q, k, v, weights=True)
    o_tol = tol.forward_for_sdpa(q, k, v)
    out_c, w_c = r_compat.attention(q, k, v)
    assert_conforms(w_c, w_r, w_tol, "r_compat weights")
    assert_conforms(out_c, out_r, o_tol, "r_compat output")
    out, w = ri.scaled_dot_product_attention(q, k, v)
    assert_conforms(w, w_r, w_tol, "refimpl weights")
    assert_conforms(out, out_r, o_tol, "refimpl output")


@given(case=rst.r_attention_inputs(), data=st.data())
def test_attention_with_partial_0_1_masks(rb, case, data):
    q, k, v = case
    keep = data.draw(st.lists(st.booleans(), min_size=k.shape[0], max_size=k.shape[0]).filter(any))
    mask = np.tile(np.array(keep, dtype=float), (q.shape[0], 1))   # a full matrix: no recycling (D5)
    out_r, w_r = rb.call("attention", q, k, v, mask).unwrap()
    out, w = ri.scaled_dot_product_attention(q, k, v, mask=mask.astype(bool))
    assert_conforms(w, w_r, tol.forward_for_sdpa(q, k, v, weights=True), "weights with mask")
    assert_conforms(out, out_r, tol.forward_for_sdpa(q, k, v), "output with mask")
    out_c, w_c = r_compat.attention(q, k, v, mask)
    assert_conforms(w_c, w_r, tol.forward_for_sdpa(q, k, v, weights=True), "r_compat with mask")
