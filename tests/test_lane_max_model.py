"""``max-not-reduced``: a row softmax written like a CUDA block whose threads each subtract the max of their own
strided keys (never reduced across the block) is named with the number of threads it was built with; the model's
weights are checked against the arithmetic written out here."""
import math

import numpy as np
import pytest

from refimpl.bugs_normaliser import lane_max
from tests.support.quick_runs import forward_lines


def _threads(n: int):
    """fn(q, k, v, mask=None, scale=None) whose n threads keep the max of their keys t, t + n, ..."""
    def fn(q, k, v, mask=None, scale=None):
        c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        s = q @ np.swapaxes(k, -1, -2) * c
        if mask is not None:
            s = np.where(mask, s, -np.inf) if np.asarray(mask).dtype == bool else s + mask
        top = np.full(s.shape, -np.inf)
        for t in range(n):
            own = s[..., t::n]
            if own.shape[-1]:
                top[..., t::n] = own.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(top), top, 0.0))
        total = e.sum(axis=-1, keepdims=True)
        return (e / np.where(total == 0, 1.0, total)) @ v
    return fn


@pytest.mark.parametrize("n", [32, 64])
def test_the_thread_count_whose_maxes_are_never_reduced_is_named(n):
    lines = forward_lines(_threads(n))
    assert len(lines) == 1 and lines[0].startswith("diagnosis k: max-not-reduced — "), lines
    assert f"(lanes of {n} (a key's thread: j mod {n}))" in lines[0], lines


def test_each_weight_is_off_by_the_row_max_over_its_lanes_max():
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((1, 1, 3, 4)), rng.standard_normal((1, 1, 7, 4)), rng.standard_normal((1, 1, 7, 2))
    out = lane_max(q, k, v, lanes=2)[0, 0]
    s = (q[0, 0] @ k[0, 0].T) / 2.0
    for i in range(3):
        m = np.array([s[i, j % 2::2].max() for j in range(7)])
        w = np.exp(s[i] - m)
        np.testing.assert_allclose(out[i], (w / w.sum()) @ v[0, 0], rtol=0, atol=1e-12)
        right = np.exp(s[i] - s[i].max())
        assert not np.allclose(out[i], (right / right.sum()) @ v[0, 0])


def test_uniform_weights_over_the_kept_keys_are_not_called_a_per_lane_max():
    """Scale 0 gives every kept key the same weight, as lanes wider than Sk would: the run's cases with more keys
    than a warp's lanes refute max-not-reduced, and the scale fit names what happened."""
    def uniform(q, k, v, mask=None, scale=None):
        return _threads(1)(q, k, v, mask, 0.0)
    lines = forward_lines(uniform)
    assert not any("max-not-reduced" in x for x in lines), lines
    assert any(x.startswith("diagnosis k: scale — ") for x in lines), lines
