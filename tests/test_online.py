"""The online-softmax variant and the blocked plain path against the plain vectorised computation."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import refimpl as ri
from refimpl import attention as att, strategies as rst, tolerance as tol
from refimpl._kernel import full_keep, prepare
from refimpl.online import sdpa_online
from refimpl.testing import assert_conforms

CASES = rst.attention_inputs(batch_shape=hnp.array_shapes(min_dims=0, max_dims=2, max_side=2),
                             n_queries=st.integers(1, 24), n_keys=st.integers(1, 24),
                             dtype=st.sampled_from([np.float32, np.float64]),
                             mask=st.sampled_from(["none", "bool", "additive", "causal"]))


@given(CASES, st.integers(1, 9), st.integers(1, 9))
def test_online_equals_plain_with_masks_and_causal(c, bq, bk):
    ref, w = ri.scaled_dot_product_attention(c.q, c.k, c.v, **c.kwargs())
    out = sdpa_online(c.q, c.k, c.v, block_q=bq, block_k=bk, **c.kwargs())
    assert out.dtype == ref.dtype
    assert_conforms(out, ref, tol.forward_for_sdpa(c.q, c.k, c.v, dtype=ref.dtype), f"online (bq={bq}, bk={bk})")


@given(CASES, st.integers(1, 9))
def test_blocked_plain_path_equals_vectorised_path(c, rows):
    p = prepare(c.q, c.k, c.v, mask=c.mask, is_causal=c.is_causal)
    p = p._replace(keep=full_keep(p), band=None)     # the causal band folded into keep
    out_b, w_b = att.sdpa_blocked(p.q * p.scale, p.k, p.v, p.keep, p.additive, 0, p.scores_shape, rows)
    z = (p.q * p.scale) @ np.swapaxes(p.k, -1, -2)
    w_v = att.masked_softmax_(z, p.keep, p.additive)
    out_v = w_v @ p.v
    assert_conforms(out_b, out_v, tol.forward_for_sdpa(c.q, c.k, c.v, dtype=out_v.dtype), "output")
    assert_conforms(w_b, w_v, tol.forward_for_sdpa(c.q, c.k, c.v, dtype=out_v.dtype, weights=True), "weights")


def test_blocked_path_is_used_for_large_inputs_and_agrees():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 200, 16)) for _ in range(3))
    assert 200 * 200 >= att.BLOCKED_MIN_SCORES
    out, w = ri.scaled_dot_product_attention(q, k, v, is_causal=True)
    out_o = sdpa_online(q, k, v, is_causal=True, block_q=64, block_k=48)
    assert_conforms(out_o, out, tol.forward_for_sdpa(q, k, v), "blocked plain vs online")
    assert np.all(w[..., ~np.tri(200, dtype=bool)] == 0)


@given(rst.attention_inputs(magnitude=st.sampled_from([1e200, 1e300]), mask=st.sampled_from(["none", "causal"])))
def test_online_is_finite_for_huge_inputs(c):
    out = sdpa_online(c.q, c.k, c.v, block_q=2, block_k=2, **c.kwargs())
    ref, _ = ri.scaled_dot_product_attention(c.q, c.k, c.v, **c.kwargs())
    assert np.isfinite(out).all()
    assert_conforms(out, ref, tol.forward_for_sdpa(c.q, c.k, c.v), "huge inputs")


def test_online_fully_masked_row_is_zero():
    q = k = v = np.ones((2, 3))
    out = sdpa_online(q, k, v, mask=np.array([[True, True], [False, False]]), block_k=1)
    np.testing.assert_array_equal(out[1], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_online_block_sizes_are_validated(bad):
    with pytest.raises((ValueError, TypeError), match="block_q"):
        sdpa_online(np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), block_q=bad)
