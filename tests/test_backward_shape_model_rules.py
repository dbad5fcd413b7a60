"""The rules of refimpl.bugs_backward_shapes, case by case against refimpl's own backward (the right gradients) and
hand-built broadcasts: what each form computes, where it must raise, and which arguments it refuses."""
import numpy as np
import pytest

from refimpl.attention import scaled_dot_product_attention
from refimpl.backward import sdpa_backward
from refimpl.bugs_backward_shapes import delta_backward, layout_backward

RNG = np.random.default_rng(7)


def _inputs(B=1, H=1, Sq=4, Sk=4, D=3, Dv=2):
    return (RNG.normal(size=(B, H, Sq, D)), RNG.normal(size=(B, H, Sk, D)), RNG.normal(size=(B, H, Sk, Dv)),
            RNG.normal(size=(B, H, Sq, Dv)))


@pytest.mark.parametrize("layout", ["do", "do-inverse"])
def test_do_read_in_another_layout_is_the_right_backward_of_the_reinterpreted_do(layout):
    q, k, v, g = _inputs(B=2, H=3, Sq=4, Sk=5)
    read = (np.swapaxes(g.reshape(2, 4, 3, 2), 1, 2) if layout == "do"           # BHSD memory read as BSHD
            else np.ascontiguousarray(np.swapaxes(g, 1, 2)).reshape(2, 3, 4, 2))   # BSHD memory read as BHSD
    want = sdpa_backward(q, k, v, read)
    got = layout_backward(q, k, v, g, layout=layout, forward=scaled_dot_product_attention)
    assert not np.allclose(got[0], sdpa_backward(q, k, v, g)[0])                  # three heads: not the right one
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_inverse_read_and_the_reshaped_gradients_undo_each_other_with_one_head_only():
    q, k, v, g = _inputs(B=2, H=1, Sq=4, Sk=5)
    right = sdpa_backward(q, k, v, g)
    for layout in ("do", "do-inverse", "grads"):             # one head: every layout is the same memory
        for a, b in zip(layout_backward(q, k, v, g, layout=layout, forward=scaled_dot_product_attention), right):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    q, k, v, g = _inputs(B=1, H=2, Sq=3, Sk=3)
    dq = layout_backward(q, k, v, g, layout="grads", forward=scaled_dot_product_attention)[0]
    want = np.ascontiguousarray(np.swapaxes(sdpa_backward(q, k, v, g)[0], 1, 2)).reshape(1, 2, 3, 3)
    np.testing.assert_allclose(dq, want, rtol=1e-12, atol=1e-12)


def test_delta_aligned_with_the_keys_in_a_square_case():
    q, k, v, g = _inputs(Sq=4, Sk=4)
    o, p = scaled_dot_product_attention(q, k, v)
    delta = (g * o).sum(-1)                                   # (1, 1, Sq)
    ds = p * (g @ np.swapaxes(v, -1, -2) - delta[..., None, :])
    s = 1 / np.sqrt(3)
    for form in ("keys", "no-keepdims"):
        dq, dk, dv = delta_backward(q, k, v, g, form=form, forward=scaled_dot_product_attention)
        np.testing.assert_allclose(dq, s * ds @ k, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dk, s * np.swapaxes(ds, -1, -2) @ q, rtol=1e-12, atol=1e-12)


def test_one_query_broadcasts_right_and_other_oblong_cases_raise():
    q, k, v, g = _inputs(Sq=1, Sk=5)
    for a, b in zip(delta_backward(q, k, v, g, form="keys", forward=scaled_dot_product_attention),
                    sdpa_backward(q, k, v, g)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    q, k, v, g = _inputs(Sq=3, Sk=5)
    with pytest.raises(ValueError, match="needs Sq == Sk"):
        delta_backward(q, k, v, g, form="keys", forward=scaled_dot_product_attention)
    q, k, v, g = _inputs(B=2, H=2, Sq=1, Sk=3)                  # delta (2, 2, 1) against dP (2, 2, 1, 3) by the
    with pytest.raises(ValueError, match=r"gives \(2, 2, 2, 3\)"):  # trailing axes: (2, 2, 2, 3), another shape
        delta_backward(q, k, v, g, form="no-keepdims", forward=scaled_dot_product_attention)
    q, k, v, g = _inputs(B=1, H=2, Sq=3, Sk=3)                  # (1, 2, 3) against (1, 2, 3, 3): 2 vs 3, no shape
    with pytest.raises(ValueError, match="broadcast"):
        delta_backward(q, k, v, g, form="no-keepdims", forward=scaled_dot_product_attention)


def test_unknown_forms_and_layouts_and_a_head_less_do_are_refused():
    q, k, v, g = _inputs()
    with pytest.raises(ValueError, match="layout must be one of"):
        layout_backward(q, k, v, g, layout="bshd", forward=scaled_dot_product_attention)
    with pytest.raises(ValueError, match="form must be one of"):
        delta_backward(q, k, v, g, form="rows", forward=scaled_dot_product_attention)
    with pytest.raises(ValueError, match="d_out must be"):
        layout_backward(q[0], k[0], v[0], g[0], layout="do", forward=scaled_dot_product_attention)
