"""The public strategies have tests of their own: bounds respected, arguments validated, reproductions exact."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from refimpl import strategies as rst


@given(rst.attention_inputs(n_queries=3, n_keys=st.integers(2, 4), d_k=2, d_v=5, batch_shape=(2,),
                            mask=st.sampled_from(rst.MASK_KINDS)))
def test_attention_inputs_respect_the_requested_shapes(c):
    assert c.q.shape == (2, 3, 2) and c.v.shape[-1] == 5 and 2 <= c.k.shape[-2] <= 4
    assert c.k.shape[-2] == c.v.shape[-2]
    if c.mask is not None:
        assert c.mask.shape == (3, c.k.shape[-2])
    assert c.is_causal == (c.mask is None and c.is_causal)


@given(rst.attention_inputs(dtype=np.float32, magnitude=5.0))
def test_dtype_and_magnitude_are_respected(c):
    assert c.q.dtype == np.float32 and np.abs(c.q).max() <= 5.0


@given(rst.attention_inputs(mask="bool"))
def test_reproduction_rebuilds_the_exact_case(c):
    ns = {}
    exec(c.reproduction(), ns)
    for name in ("q", "k", "v", "mask"):
        np.testing.assert_array_equal(ns[name], getattr(c, name))
        assert ns[name].dtype == getattr(c, name).dtype


@pytest.mark.parametrize("kwargs, message", [
    ({"n_queries": 0}, "n_queries must be an int >= 1"),
    ({"d_k": "3"}, "d_k must be an int >= 1"),
    ({"mask": "sometimes"}, "mask must be one of"),
    ({"dtype": np.float16}, "dtype must be float32 or float64"),
    ({"magnitude": -1.0}, "magnitude must be a positive number"),
    ({"batch_shape": (0,)}, "batch_shape must be a tuple of ints >= 1"),
])
def test_bad_arguments_are_refused_up_front_with_a_fix(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        rst.attention_inputs(**kwargs)


def test_float_arrays_validates_magnitude_for_the_dtype():
    with pytest.raises(ValueError, match="magnitude must be in"):
        rst.float_arrays((2,), dtype=np.float32, magnitude=1e300)
