"""What ``--api torch-sdpa`` hands a target, read as torch.nn.functional.scaled_dot_product_attention's specification.

The arguments of each case are evaluated by a small implementation of SDPA's documented semantics written here
(bool ``attn_mask`` True = attend, a float one added to the scores, ``is_causal`` the top-left lower triangle and
never together with a mask, ``scale`` None = 1/sqrt(D), ``enable_gqa`` repeating each key/value head for its group
of query heads) and must give the case's expected output. Besides the suite's quick cases, a few hand-made cases
combine a mask or ALiBi with a causal band or a window, as ``--explore`` and the fixture rows do.
"""
import math

import numpy as np
import pytest
import torch

from refimpl.harness import apis
from refimpl.harness.rows.family_cases import CaseStore
from support.adapter_cases import BAND_MEETS_MASK, cases_for, combos

API = apis.get("torch-sdpa")
STORE = CaseStore()


# a mask, ALiBi and GQA meeting a causal band or a window, in both alignments (none of them is in the suites)
COMBOS = combos("adapter-torch-sdpa", dict(Sq=6, Sk=9, D=8, Dv=5, B=2, Hq=2, Hkv=2), BAND_MEETS_MASK + [
    dict(mask="additive", window=(3, 1), alignment="bottom-right"),
    dict(alibi=True, is_causal=True, Hq=4, Hkv=2),
    dict(alibi=True, mask="bool", window=(2, 2)),
    dict(alibi=True, mask="additive"),
    dict(mask="bool", is_causal=True, Hq=4, Hkv=2),
    dict(is_causal=True, window=(2, -1)),
    dict(alibi=True, is_causal=True, alignment="bottom-right"),
])
CASES = cases_for(API, COMBOS)


def _tensor(a):
    return None if a is None else torch.tensor(a)


def sdpa_by_the_docs(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    """torch.nn.functional.scaled_dot_product_attention as its documentation writes it (float64, no dropout)."""
    assert dropout_p == 0.0
    q, k, v = (t.numpy() for t in (query, key, value))
    L, S = q.shape[-2], k.shape[-2]
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    bias = np.zeros((L, S))
    if is_causal:
        assert attn_mask is None, "torch raises when both attn_mask and is_causal are set"
        bias[~np.tril(np.ones((L, S), bool))] = -np.inf
    if attn_mask is not None:
        m = attn_mask.numpy()
        bias = np.where(m, bias, -np.inf) if m.dtype == bool else bias + m
    if enable_gqa:
        k, v = (np.repeat(a, q.shape[-3] // a.shape[-3], axis=-3) for a in (k, v))
    assert k.shape[-3] == q.shape[-3], "without enable_gqa the heads must match"
    s = q @ np.swapaxes(k, -1, -2) * scale
    s = s + np.broadcast_to(bias, s.shape)                            # the mask must broadcast to the weights
    with np.errstate(invalid="ignore"):
        w = np.exp(s - s.max(-1, keepdims=True))
        return w / w.sum(-1, keepdims=True) @ v                       # a row with no key: NaN (not judged)


def sdpa_torch_2_1(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """torch 2.1-2.4's signature: no enable_gqa."""
    return sdpa_by_the_docs(query, key, value, attn_mask, dropout_p, is_causal, scale)


def _has_band(spec):
    return spec.is_causal or spec.window is not None


@pytest.mark.parametrize("spec", CASES, ids=[s.id for s in CASES])
def test_the_arguments_mean_the_case_under_sdpas_documented_semantics(spec):
    data = STORE.get(spec)
    given, args, kw = API.arguments(data, _tensor, "BHSD")
    assert [a is given[n] for a, n in zip(args, ("query", "key", "value"))] == [True] * 3
    got = sdpa_by_the_docs(*args, **kw)
    live = data.live
    assert got.shape == data.expected.shape
    np.testing.assert_allclose(got[live], data.expected[live], rtol=1e-10, atol=1e-12)


def test_enable_gqa_is_passed_on_gqa_cases_only():
    """A target written against torch 2.1-2.4 (no enable_gqa) can be called on every case without GQA."""
    for spec in CASES:
        data = STORE.get(spec)
        _, args, kw = API.arguments(data, _tensor, "BHSD")
        want = {"attn_mask", "dropout_p", "is_causal", "scale"} | ({"enable_gqa"} if spec.gqa else set())
        assert set(kw) == want, spec.id
        assert kw["dropout_p"] == 0.0 and kw["scale"] == spec.scale and kw.get("enable_gqa", True) is True, spec.id
        if not spec.gqa:
            sdpa_torch_2_1(*args, **kw)


def test_the_band_reaches_the_target_as_flags_only_through_is_causal():
    """band_as_flags: True for a case without a causal band or window, else True exactly when the target was
    handed is_causal=True (the only band SDPA has a flag for; every other one is folded into attn_mask)."""
    for spec in CASES:
        data = STORE.get(spec)
        _, _, kw = API.arguments(data, _tensor, "BHSD")
        assert API.band_as_flags(data) is (not _has_band(spec) or kw["is_causal"] is True), spec.id


def test_is_causal_is_used_for_a_top_left_causal_band_alone():
    data = STORE.get(next(s for s in CASES if s.is_causal and s.alignment == "top-left" and s.window is None
                          and s.mask == "none" and not s.alibi and s.Sq != s.Sk))
    _, _, kw = API.arguments(data, _tensor, "BHSD")
    assert kw["is_causal"] is True and kw["attn_mask"] is None
    assert API.band_as_flags(data) is True


def test_the_cases_cover_every_way_a_band_can_arrive():
    """The parametrised cases hold a band handed as is_causal, bands folded into a bool and into a float mask,
    and cases with no band at all."""
    kinds = set()
    for spec in CASES:
        _, _, kw = API.arguments(STORE.get(spec), _tensor, "BHSD")
        m = kw["attn_mask"]
        kinds.add((_has_band(spec), kw["is_causal"], None if m is None else m.dtype == torch.bool))
    assert {(False, False, None), (True, True, None), (True, False, True), (True, False, False)} <= kinds
