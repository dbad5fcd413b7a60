"""torch's fused MHA kernel (torch._native_multi_head_attention) with identity projections, against refimpl.

The kernel's own conventions (True = masked out, float masks read as boolean, NaN for a fully masked
query) are pinned by calling it directly, so the adapter's translation and the catalogue stay true.
"""
from dataclasses import replace
import math
import re

import numpy as np
import pytest

import refimpl
from refimpl import tolerance
from refimpl.harness.columns.torch_mha_column import DIVERGENCES as TORCH_MHA_DIVERGENCES
from refimpl.harness.cases.features import CaseSpec
from refimpl.harness.runtimes.torch_mha import torch_mha_attend, torch_mha_target
from refimpl.harness.target_spec import builtin_targets

torch = pytest.importorskip("torch")


def raw_kernel(q, k, v, mask, mask_type):
    """The kernel with identity projections, no translation: (B, S, E) tensors, one head."""
    e = q.shape[-1]
    eye = torch.eye(e, dtype=q.dtype)
    with torch.no_grad():
        return torch._native_multi_head_attention(q, k, v, e, 1, torch.cat([eye, eye, eye]),
                                                  torch.zeros(3 * e, dtype=q.dtype), eye,
                                                  torch.zeros(e, dtype=q.dtype), mask, True, False, mask_type)


def heads(a, h):
    """(B, S, H*D) -> (B, H, S, D): the kernel's head split, written independently of the adapter."""
    b, s, e = a.shape
    return a.reshape(b, s, h, e // h).transpose(0, 2, 1, 3)


def expect(q, k, v, keep, h):
    """refimpl float64 per head: ``(output (B, S, E), weights (B, H, S, S))``."""
    out, w = refimpl.scaled_dot_product_attention(*(heads(a.astype(np.float64), h) for a in (q, k, v)), mask=keep)
    b, _, s, d = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, s, h * d), w


def assert_close(q, k, v, got, want, h, weights=False):
    t = tolerance.forward_for_sdpa(heads(q, h), heads(k, h), heads(v, h), dtype=q.dtype, weights=weights)
    cmp = tolerance.compare(got, want, t)
    assert cmp.ok, cmp.summary()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, mask_shape", [(1, None), (1, (5, 5)), (2, (2, 1, 5, 5)), (4, (2, 4, 5, 5)),
                                           (2, (2, 1, 1, 5)), (4, (5,))])
def test_identity_projections_give_refimpl_attention_per_head(dtype, h, mask_shape):
    rng = np.random.default_rng(h * 10 + len(mask_shape or ()))
    q, k, v = (rng.standard_normal((2, 5, 8)).astype(dtype) for _ in range(3))
    keep = None if mask_shape is None else rng.random(mask_shape) > 0.3
    if keep is not None:
        keep[..., 0] = True                                   # every query keeps a key (see M1 for the rest)
    out, w = torch_mha_attend(q, k, v, keep, num_heads=h)
    want_out, want_w = expect(q, k, v, keep, h)
    assert out.dtype == dtype and out.shape == (2, 5, 8) and w.shape == (2, h, 5, 5)
    assert_close(q, k, v, out, want_out, h)
    assert_close(q, k, v, w, want_w, h, weights=True)


def test_num_heads_1_is_softmax_of_q_kT_over_sqrt_E():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 4, 6)) for _ in range(3))
    s = q[0] @ k[0].T / math.sqrt(6)                                     # (S, E) x (E, S) -> (S, S)
    w = np.exp(s - s.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    out, weights = torch_mha_attend(q, k, v)
    assert np.allclose(weights[0, 0], w, rtol=1e-13, atol=1e-15) and np.allclose(out[0], w @ v[0], rtol=1e-12)


@pytest.mark.parametrize("scale", [None, 0.3])
def test_target_adapter_takes_bhsd_cases_and_a_scale(scale):
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 3, 6, 4)).astype(np.float32) for _ in range(3))
    keep = rng.random((1, 3, 6, 6)) > 0.25
    keep[..., 0] = True
    out, w = torch_mha_target(q, k, v, keep, scale=scale)
    want, want_w = refimpl.scaled_dot_product_attention(*(a.astype(np.float64) for a in (q, k, v)), mask=keep,
                                                        scale=scale)
    t = tolerance.forward_for_sdpa(q, k, v, scale, dtype=np.float32)
    assert out.shape == (2, 3, 6, 4) and tolerance.compare(out, want, t).ok
    assert tolerance.compare(w, want_w, tolerance.forward_for_sdpa(q, k, v, scale, np.float32, weights=True)).ok
    if scale is not None:                                                # the comparison can fail
        assert not tolerance.compare(torch_mha_target(q, k, v, keep)[0], want, t).ok


def test_the_column_says_which_cases_the_fused_kernel_cannot_take():
    expressible = builtin_targets()["torch-mha"]().expressible
    base = CaseSpec("sizes", 0, Sq=5, Sk=5, D=8, Dv=8, B=2, Hq=3, Hkv=3, mask="bool")
    assert expressible(base) is None and expressible(replace(base, is_causal=True)) is None
    assert "equal query, key and value shapes" in expressible(replace(base, Sk=6))
    assert "equal query, key and value shapes" in expressible(replace(base, Dv=4))
    assert "equal query, key and value shapes" in expressible(replace(base, Hkv=1))
    assert "bool masks only" in expressible(replace(base, mask="additive"))
    assert "bool masks only" in expressible(replace(base, softcap=30.0))
    assert "S x S" in expressible(replace(base, long=True))


@pytest.mark.parametrize("args, kwargs, says", [
    (((2, 4, 8), (2, 6, 8), (2, 6, 8)), {}, "of one shape"),
    (((2, 4, 8),) * 3, {"num_heads": 3}, "num_heads must be a positive int dividing E=8"),
    (((2, 4, 8),) * 3, {"mask": np.zeros((4, 4))}, "mask must be a bool keep-mask"),
    (((2, 4, 8),) * 3, {"mask": np.ones((3, 4), bool)}, "mask must broadcast to (B, num_heads, S, S)"),
])
def test_attend_refuses_what_the_kernel_cannot_take(args, kwargs, says):
    arrays = [np.zeros(s) for s in args]
    with pytest.raises(ValueError, match=re.escape(says)):
        torch_mha_attend(*arrays, **kwargs)


# --- the kernel's conventions and the catalogued divergences -----------------------------------------

def test_kernel_reads_True_as_masked_out():
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((1, 4, 4)))
    keep = torch.from_numpy(rng.random((1, 1, 4, 4)) > 0.4)
    keep[..., 0] = True
    keep[..., 1] = False
    _, w = raw_kernel(x, x, x, ~keep, 1)
    assert (w[~keep] == 0).all() and (w[keep] > 0).all()             # inverted mask: exactly refimpl's keep


def test_M1_fully_masked_query_gives_nan_where_refimpl_gives_zeros():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 3, 4)) for _ in range(3))
    keep = np.ones((3, 3), bool)
    keep[1] = False
    out, w = torch_mha_attend(q, k, v, keep)
    assert np.isnan(out[0, 1]).all() and np.isnan(w[0, 0, 1]).all()
    assert not np.isnan(np.delete(out[0], 1, axis=0)).any()
    ref_out, _ = refimpl.scaled_dot_product_attention(q, k, v, mask=keep)
    assert np.array_equal(ref_out[0, 1], np.zeros(4))
    assert "M1" in TORCH_MHA_DIVERGENCES


def test_M2_kernel_reads_a_float_mask_as_boolean_not_additive():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((1, 4, 4)))
    bias = torch.from_numpy(np.where(rng.random((1, 1, 4, 4)) > 0.5, 0.5, 0.0))
    bias[..., 0] = 0.0
    with pytest.warns(UserWarning, match="Converting mask without torch.bool dtype to bool"):
        _, w_float = raw_kernel(x, x, x, bias, 1)
    _, w_bool = raw_kernel(x, x, x, bias != 0, 1)
    added, _ = refimpl.scaled_dot_product_attention(x.numpy(), x.numpy(), x.numpy(), mask=bias.numpy()[0, 0])
    assert torch.equal(w_float, w_bool)                                  # nonzero = masked, like True
    assert not np.allclose(w_float.numpy()[0, 0] @ x.numpy()[0], added[0], atol=1e-3)
    assert "M2" in TORCH_MHA_DIVERGENCES
