"""Self-check of tests/zoo/flash_varlen_impls.py against an independent plain float64 reference.

Correct kernels must match the reference (rel err 1e-10 in float64, 1e-5 for the float32 kernel); every
broken kernel must equal it on trivial cases (one sequence, lq == lk) and differ on at least one case.
"""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flash_varlen_impls as zoo  # noqa: E402

NAMES = [e["name"] for e in zoo.CATALOG]
CORRECT = [e for e in zoo.CATALOG if e["correct"]]
BROKEN = [e for e in zoo.CATALOG if not e["correct"]]


# ------------------------------------------------------------------ reference
def reference(q, k, v, cu_q, cu_k, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
              alibi_slopes=None):
    """Plain float64: for every sequence and query head, dense scores, band mask, softmax over kept keys."""
    q, k, v = q.double(), k.double(), v.double()
    hq, hkv, d = q.shape[1], k.shape[1], q.shape[2]
    group = hq // hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    left, right = window_size[0], (0 if causal else window_size[1])
    cu_q, cu_k = [int(x) for x in cu_q], [int(x) for x in cu_k]
    out = torch.zeros(q.shape[0], hq, v.shape[2], dtype=torch.float64)
    for b in range(len(cu_q) - 1):
        q0, q1, k0, k1 = cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        diag = torch.arange(lq, dtype=torch.float64).unsqueeze(1) + (lk - lq)  # aligned key position of row i
        key = torch.arange(lk, dtype=torch.float64).unsqueeze(0)
        mask = torch.ones(lq, lk, dtype=torch.bool)
        if left >= 0:
            mask &= key >= diag - left
        if right >= 0:
            mask &= key <= diag + right
        rows = mask.any(1)
        for h in range(hq):
            g = h // group
            s = (q[q0:q1, h] @ k[k0:k1, g].T) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if alibi_slopes is not None:
                slope = float(alibi_slopes[h] if alibi_slopes.dim() == 1 else alibi_slopes[b, h])
                s = s - slope * (diag - key).abs()
            s = s.masked_fill(~mask, float("-inf"))
            w = torch.zeros(lq, lk, dtype=torch.float64)
            w[rows] = torch.softmax(s[rows], dim=-1)
            out[q0:q1, h] = w @ v[k0:k1, g]
    return out


# ------------------------------------------------------------------ cases
def make_case(seed, lens_q, lens_k, hq=4, hkv=2, d=16, dv=8, alibi=None, q_gain=1.0, max_extra=0, **kw):
    gen = torch.Generator().manual_seed(seed)
    tq, tk, batch = sum(lens_q), sum(lens_k), len(lens_q)
    q = torch.randn(tq, hq, d, generator=gen, dtype=torch.float64) * q_gain
    k = torch.randn(tk, hkv, d, generator=gen, dtype=torch.float64)
    v = torch.randn(tk, hkv, dv, generator=gen, dtype=torch.float64)
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0).tolist()), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0).tolist()), dtype=torch.int32)
    if alibi == "hq":
        kw["alibi_slopes"] = torch.rand(hq, generator=gen, dtype=torch.float64) * 0.5 + 0.05
    elif alibi == "bhq":
        kw["alibi_slopes"] = torch.rand(batch, hq, generator=gen, dtype=torch.float64) * 0.5 + 0.05
    args = (q, k, v, cu_q, cu_k, max(lens_q) + max_extra, max(lens_k) + max_extra)
    return args, kw


MIX_Q = [0, 1, 63, 65, 130, 7, 0]
MIX_K = [3, 1, 65, 63, 130, 0, 0]
CASES = {
    "mixed_plain": dict(lens_q=MIX_Q, lens_k=MIX_K),
    "mixed_causal": dict(lens_q=MIX_Q, lens_k=MIX_K, causal=True),
    "mixed_window": dict(lens_q=MIX_Q, lens_k=MIX_K, window_size=(10, 3)),
    "mixed_window_causal": dict(lens_q=MIX_Q, lens_k=MIX_K, window_size=(16, -1), causal=True),
    "window_left_only": dict(lens_q=[40, 65, 20], lens_k=[70, 33, 20], window_size=(5, -1)),
    "window_right_only": dict(lens_q=[40, 65, 20], lens_k=[70, 33, 20], window_size=(-1, 4)),
    "window_zero_empty_rows": dict(lens_q=[65, 10, 30], lens_k=[63, 30, 10], window_size=(0, 0)),
    "softcap_causal": dict(lens_q=MIX_Q, lens_k=MIX_K, softcap=2.0, q_gain=3.0, causal=True),
    "alibi_b_hq": dict(lens_q=MIX_Q, lens_k=MIX_K, alibi="bhq"),
    "alibi_hq_causal_window": dict(lens_q=MIX_Q, lens_k=MIX_K, alibi="hq", causal=True, window_size=(20, -1)),
    "mqa_everything": dict(lens_q=MIX_Q, lens_k=MIX_K, hq=4, hkv=1, causal=True, window_size=(30, -1),
                           softcap=5.0, q_gain=2.0, alibi="bhq", softmax_scale=0.3),
    "gqa_window_alibi": dict(lens_q=[17, 130, 1], lens_k=[40, 65, 63], hq=6, hkv=2, window_size=(25, 7),
                             alibi="bhq", softcap=4.0),
    "equal_lengths_causal": dict(lens_q=[65, 63, 130], lens_k=[65, 63, 130], hq=3, hkv=3, causal=True),
    "leading_trailing_empty": dict(lens_q=[0, 0, 40, 5, 0], lens_k=[0, 17, 40, 0, 9], alibi="hq"),
    "oversized_max_seqlen": dict(lens_q=[20, 50], lens_k=[50, 20], max_extra=7, alibi="bhq"),
    "single_sequence": dict(lens_q=[65], lens_k=[65], causal=True, window_size=(9, -1), alibi="hq"),
    "single_lq_ne_lk": dict(lens_q=[33], lens_k=[130], causal=True, softcap=3.0),
}


def run_case(fn, name, dtype=torch.float64, seed=None):
    spec = dict(CASES[name])
    args, kw = make_case(seed if seed is not None else sorted(CASES).index(name), **spec)
    q, k, v = (t.to(dtype) for t in args[:3])
    got = fn(q, k, v, *args[3:], **kw)
    ref = reference(*args[:5], **kw)
    return got, ref


def rel_err(got, ref):
    return float((got.double() - ref).abs().max() / max(float(ref.abs().max()), 1e-300)) if ref.numel() else 0.0


# ------------------------------------------------------------------ tests
def test_catalog_shape():
    assert len(NAMES) == len(set(NAMES))
    assert len(CORRECT) >= 4
    for e in zoo.CATALOG:
        assert e["api"] == "flash-attn-varlen" and callable(getattr(zoo, e["fn"]))
        assert e["convention"] == ("zeros" if e["correct"] else None)
        assert (e["model"] is None) == e["correct"]
        assert set(e["features"]) <= {"causal", "window", "softcap", "alibi", "gqa"}
    assert {e["model"] for e in BROKEN} >= {"sequence-boundary", "causal-packed-index", "causal-alignment",
                                            "cu-seqlens-off-by-one", "padding-unmasked", "alibi-packed-index",
                                            "gqa-grouping"}


@pytest.mark.parametrize("entry", CORRECT, ids=lambda e: e["name"])
def test_correct_matches_reference(entry):
    fn = getattr(zoo, entry["fn"])
    dtype, tol = (torch.float32, 1e-5) if entry["dtype"] == "float32" else (torch.float64, 1e-10)
    for name in CASES:
        got, ref = run_case(fn, name, dtype)
        assert got.dtype == dtype and got.shape == ref.shape, name
        err = rel_err(got, ref)
        assert err <= tol, f"{entry['name']} on {name}: rel err {err:.3g}"


def test_empty_rows_give_zeros():
    args, kw = make_case(0, [5, 4], [0, 2], window_size=(0, 0))  # seq 0: no keys; seq 1: rows 0, 1 see none
    for e in CORRECT:
        out = getattr(zoo, e["fn"])(*args, **kw)
        assert out.shape == (9, 4, 8)
        assert torch.all(out[:7] == 0), e["name"]
        assert torch.all(out[7:].abs().sum(-1) > 0), e["name"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    for e in CORRECT:
        got, ref = run_case(getattr(zoo, e["fn"]), "alibi_hq_causal_window", dtype)
        assert got.dtype == dtype
        # inputs are rounded to the half dtype, so compare loosely
        assert rel_err(got, ref) < 5e-2, e["name"]


def test_rejects_dropout_and_probs():
    args, kw = make_case(0, [3], [3])
    for e in zoo.CATALOG:
        fn = getattr(zoo, e["fn"])
        with pytest.raises(ValueError):
            fn(*args, dropout_p=0.1)
        with pytest.raises(NotImplementedError):
            fn(*args, return_attn_probs=True)


TRIVIAL = {
    # one sequence, lq == lk, every feature except GQA (Hq == Hkv), max_seqlen exact
    "trivial_all_features": dict(lens_q=[70], lens_k=[70], hq=2, hkv=2, causal=True, window_size=(20, -1),
                                 softcap=3.0, q_gain=2.0, alibi="bhq"),
    "trivial_noncausal_window": dict(lens_q=[45], lens_k=[45], hq=3, hkv=3, window_size=(7, 5), alibi="hq"),
    "trivial_plain": dict(lens_q=[33], lens_k=[33], hq=2, hkv=1),
}
# further cases where a bug cannot bite (it needs a feature or a layout the case lacks)
EXTRA_AGREE = {
    "varlen_gqa_modulo": [dict(lens_q=MIX_Q, lens_k=MIX_K, hq=3, hkv=3, causal=True, window_size=(9, 2),
                               alibi="bhq", softcap=2.0)],
    "varlen_causal_top_left": [dict(lens_q=[65, 63, 130], lens_k=[65, 63, 130], causal=True, alibi="hq")],
    "varlen_alibi_packed": [dict(lens_q=MIX_Q, lens_k=MIX_K, causal=True, window_size=(9, -1), softcap=2.0)],
    "varlen_window_global": [dict(lens_q=MIX_Q, lens_k=MIX_K, causal=True, alibi="bhq")],
    "varlen_causal_packed_index": [dict(lens_q=MIX_Q, lens_k=MIX_K, window_size=(12, -1), alibi="bhq"),
                                   dict(lens_q=[65, 63, 130], lens_k=[65, 63, 130], causal=True)],
    "varlen_cross_sequence": [dict(lens_q=MIX_Q, lens_k=MIX_K, causal=True, alibi="bhq")],
    "varlen_padding_unmasked": [dict(lens_q=MIX_Q, lens_k=MIX_K, causal=True, window_size=(5, -1))],
}


@pytest.mark.parametrize("entry", BROKEN, ids=lambda e: e["name"])
def test_broken_agrees_where_bug_cannot_bite(entry):
    fn = getattr(zoo, entry["fn"])
    specs = list(TRIVIAL.items()) + [(f"extra{n}", s) for n, s in enumerate(EXTRA_AGREE.get(entry["name"], []))]
    for seed, (name, spec) in enumerate(specs):
        args, kw = make_case(100 + seed, **spec)
        err = rel_err(fn(*args, **kw), reference(*args[:5], **kw))
        assert err <= 1e-10, f"{entry['name']} on {name}: rel err {err:.3g}"


@pytest.mark.parametrize("entry", BROKEN, ids=lambda e: e["name"])
def test_broken_differs_somewhere(entry):
    fn = getattr(zoo, entry["fn"])
    errs = {name: rel_err(*run_case(fn, name)) for name in CASES}
    assert max(errs.values()) > 1e-3, f"{entry['name']} never differs: {errs}"
