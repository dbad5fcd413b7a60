"""The additive-mask family's 0 / -inf masks: a float mask as code builds one from padding and causality (exactly 0
on every kept key, -inf elsewhere), over whole tiles of 32 and 64 keys. The family's other biases are N(0, 2),
never exactly 0, so a tiled kernel that skips a tile whose bias is all 0 (as it rightly skips a bool tile that keeps
nothing) passed every additive case of the quick suite (tests/heldout21's sdpa_tiled_mask_skip). The kernels here
are written for this test: one skips tiles of zero bias (broken), one skips tiles of -inf bias (correct)."""
import math

import numpy as np
import pytest
import torch

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target

STORE = CaseStore()
TILE = 32


def _tiled(skip_when_bias_is):
    """torch-sdpa semantics over 32 x 32 score tiles (two passes: row max, then sum and P @ V), a tile left out
    when its float mask tile, over every batch and head, equals ``skip_when_bias_is`` everywhere."""
    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        q, k, v = query.double(), key.double(), value.double()
        if enable_gqa:
            g = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        sq, sk = q.shape[-2], k.shape[-2]
        bias = torch.zeros(sq, sk, dtype=torch.float64)
        if is_causal:
            bias = bias.masked_fill(~torch.ones(sq, sk, dtype=torch.bool).tril(), -math.inf)
        if attn_mask is not None:
            m = attn_mask
            bias = bias + (torch.zeros(m.shape, dtype=torch.float64).masked_fill(~m, -math.inf) if m.dtype == torch.bool
                           else m.double())
        bias = bias.expand(*q.shape[:-2], sq, sk)                          # (B, H, Sq, Sk)
        s = q @ k.transpose(-1, -2) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale) + bias
        live = torch.ones(sq, sk, dtype=torch.bool)
        for i in range(0, sq, TILE):
            for j in range(0, sk, TILE):
                if (bias[..., i:i + TILE, j:j + TILE] == skip_when_bias_is).all():
                    live[i:i + TILE, j:j + TILE] = False
        s = s.masked_fill(~live, -math.inf)
        mx = s.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
        p = torch.exp(s - mx)
        den = p.sum(-1, keepdim=True)
        return (p @ v / den.masked_fill(den == 0, 1.0)).to(query.dtype)   # rows with no key: zeros
    return sdpa


def _results(fn):
    target = Target("k", fn, api="torch-sdpa")
    return [(s, run_one(target, s, STORE)) for s in select(["additive-mask"], "quick", ("float64", "float32"))]


def test_the_zero_bias_case_is_a_0_or_minus_inf_mask_with_a_whole_tile_of_zeros():
    spec = [s for s in select(["additive-mask"], "quick", ("float64",)) if s.pattern == "zero-bias"]
    assert len(spec) == 1, spec
    mask = STORE.get(spec[0]).reference_kwargs()["mask"]                  # (B, 1, Sq, Sk)
    assert mask.dtype != bool and set(np.unique(mask)) <= {0.0, -np.inf}
    sq, sk = mask.shape[-2:]
    whole = [(i, j) for i in range(0, sq - TILE + 1, TILE) for j in range(0, sk - TILE + 1, TILE)
             if (mask[..., i:i + TILE, j:j + TILE] == 0).all()]
    assert whole, "no 32 x 32 tile that every batch keeps whole"
    assert (mask == -np.inf).any(axis=-1).any()                           # and masked keys elsewhere
    assert not (mask == -np.inf).all(axis=-1).any()                       # no row left without a key


def test_a_kernel_that_skips_tiles_of_zero_bias_fails_on_the_zero_bias_case_only():
    failed = [(s.pattern, s.dtype) for s, r in _results(_tiled(0.0)) if r.status == Status.FAIL]
    assert failed == [("zero-bias", "float64"), ("zero-bias", "float32")], failed


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_kernel_that_skips_tiles_of_minus_inf_bias_conforms(dtype):
    bad = [(s.id, r.detail) for s, r in _results(_tiled(-math.inf)) if r.status != Status.PASS and s.dtype == dtype]
    assert not bad, bad
