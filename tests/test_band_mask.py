"""masks.band_mask: how mask-only APIs receive causal and sliding-window cases, against explicit loops."""
import itertools

import numpy as np
import pytest

from refimpl.masks import band_mask


def _loop(sq, sk, is_causal, window, alignment):
    off = 0 if alignment == "top-left" else sk - sq
    keep = np.ones((sq, sk), bool)
    for i, j in itertools.product(range(sq), range(sk)):
        if is_causal and j > i + off:
            keep[i, j] = False
        if window is not None:
            left, right = window
            if left != -1 and j < i + off - left:
                keep[i, j] = False
            if right != -1 and j > i + off + right:
                keep[i, j] = False
    return keep


@pytest.mark.parametrize("sq,sk", [(1, 1), (3, 7), (7, 3), (5, 5)])
@pytest.mark.parametrize("alignment", ["top-left", "bottom-right"])
@pytest.mark.parametrize("is_causal,window", [(True, None), (False, (2, 1)), (True, (1, -1)), (False, (-1, 0)),
                                              (True, (0, 3))])
def test_band_mask_is_the_causal_and_window_rule(sq, sk, alignment, is_causal, window):
    got = band_mask(sq, sk, is_causal=is_causal, window=window, alignment=alignment)
    assert np.array_equal(got, _loop(sq, sk, is_causal, window, alignment))


def test_band_mask_ands_a_user_mask_and_is_none_when_nothing_is_masked():
    assert band_mask(3, 4) is None
    user = np.array([[True, False, True, True]])
    assert np.array_equal(band_mask(3, 4, mask=user), np.broadcast_to(user, (1, 4)))
    both = band_mask(3, 4, is_causal=True, mask=user)
    assert np.array_equal(both, np.tri(3, 4, dtype=bool) & user)


@pytest.mark.parametrize("alignment", ["top-left", "bottom-right"])
@pytest.mark.parametrize("right", [-1, 0, 3])
def test_the_window_bounds_model_moves_a_left_edge_of_0_past_the_diagonal(alignment, right):
    # a kernel keeping j > i + offset - left (left exclusive) drops the diagonal itself at left = 0: the window
    # (0, right) read as keys strictly after i + offset, not as an unbounded left edge
    from refimpl.bugs_general import window_bounds
    rng = np.random.default_rng(11)
    sq, sk = 6, 9
    q, k, v = rng.normal(size=(1, 1, sq, 4)), rng.normal(size=(1, 1, sk, 4)), rng.normal(size=(1, 1, sk, 3))
    off = 0 if alignment == "top-left" else sk - sq
    keep = np.array([[i + off < j and (right < 0 or j <= i + off + right) for j in range(sk)] for i in range(sq)])
    s = np.where(keep, q @ np.swapaxes(k, -1, -2) / 2.0, -np.inf)
    e = np.exp(s - np.where(keep.any(-1, keepdims=True), s.max(-1, keepdims=True), 0.0))
    z = e.sum(-1, keepdims=True)
    want = np.where(z > 0, (e / np.where(z > 0, z, 1.0)) @ v, 0.0)
    got = window_bounds(q, k, v, window=(0, right), shift=-1, alignment=alignment)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
