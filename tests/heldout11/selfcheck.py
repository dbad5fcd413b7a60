"""Self-check of the heldout11 kernels against float64 references written from the four contracts.

Run: /work/main/.venv/bin/python tests/heldout11/selfcheck.py   (exit status 1 on any problem)
"""
import importlib.util
import os
import re
import sys
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [
    ("numpy_fwd.py", "refimpl"),
    ("torch_sdpa_fwd.py", "torch-sdpa"),
    ("flash_fwd.py", "flash-attn"),
    ("numpy_bwd.py", "numpy-backward"),
]
FEATURES = {
    "refimpl": {"mask", "dv-ne-d"},
    "torch-sdpa": {"mask", "causal", "gqa", "dv-ne-d"},
    "flash-attn": {"causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"},
    "numpy-backward": {"mask", "dv-ne-d"},
}
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
CORRECT_BOUND = {"float64": 1e-10, "float32": 1e-5}
DIFFER_BOUND = {"float64": 1e-8, "float32": 1e-4}

# Cases on which each broken kernel must differ from the contract (its documented trigger).
NP_ALL = ["2d_plain", "3d_randmask_fullrow", "4d_pad_right", "4d_pad_zero_len", "4d_causal_square_d64",
          "4d_band_per_head", "3d_causal_br_scale1", "2d_left_pad_decode", "4d_nomask_sq_gt_sk"]
SDPA_ALL = ["plain_dv_ne_d", "bool_mask_fullrow", "additive_finite_neginf", "causal_sq_lt_sk", "causal_sq_gt_sk_d64",
            "gqa_4to1_pad", "gqa_6to1_decode", "gqa_6to1_causal", "mqa_scale", "gqa_2to1_hkv3_neginf_row"]
FLASH_ALL = ["plain_sq_lt_sk", "causal_sq_lt_sk", "causal_sq_gt_sk", "window_16_none", "window_none_5",
             "window_10_3_sq_gt_sk", "causal_window20_sq_lt_sk", "softcap5_scale", "softcap3_causal_alibi",
             "alibi_bh_gqa", "alibi_window_noncausal", "gqa_6to1_decode_causal_alibi", "mqa_causal_scale",
             "gqa_4to1_dv48"]
BWD_ALL = ["2d_plain", "3d_mask_fullrow", "4d_causal_dv_gt_d", "4d_mqa_pad", "4d_mqa_zero_len",
           "3d_band_dv_gt_d_scale1", "4d_dv_lt_d"]
TRIGGERS = {
    # numpy_fwd.py
    "attend_keep_mask_filled": [c for c in NP_ALL if c not in ("2d_plain", "4d_nomask_sq_gt_sk")],
    "attend_finite_fill_value": ["3d_randmask_fullrow", "4d_pad_zero_len"],
    "attend_folded_heads_mask_repeat": ["4d_pad_right", "4d_pad_zero_len", "4d_band_per_head"],
    "attend_blocked_partial_tail": ["2d_plain", "3d_randmask_fullrow", "4d_pad_right", "4d_causal_square_d64",
                                    "4d_band_per_head", "3d_causal_br_scale1", "4d_nomask_sq_gt_sk"],
    "attend_scale_numerator_only": [c for c in NP_ALL if c != "3d_causal_br_scale1"],
    "attend_scale_from_model_dim": ["4d_pad_right", "4d_pad_zero_len", "4d_causal_square_d64"],
    # torch_sdpa_fwd.py
    "sdpa_additive_bias_softmax": ["bool_mask_fullrow", "gqa_2to1_hkv3_neginf_row"],
    "sdpa_gqa_head_blocks": ["gqa_6to1_decode", "gqa_6to1_causal"],
    "sdpa_value_tiles_store": ["plain_dv_ne_d", "gqa_4to1_pad", "causal_sq_gt_sk_d64"],
    "sdpa_half_softmax": list(SDPA_ALL),
    "sdpa_query_head_as_kv_head": ["gqa_4to1_pad", "gqa_6to1_decode", "gqa_6to1_causal", "mqa_scale",
                                   "gqa_2to1_hkv3_neginf_row"],
    "sdpa_splitkv_lse_accum_strides": [c for c in SDPA_ALL if c != "gqa_6to1_decode"],
    # flash_fwd.py
    "flash_swa_kv_start": ["window_16_none", "window_10_3_sq_gt_sk", "causal_window20_sq_lt_sk",
                           "alibi_window_noncausal"],
    "flash_alibi_key_bias": ["alibi_bh_gqa", "alibi_window_noncausal"],
    "flash_gemma_softcap_unused": ["softcap5_scale", "softcap3_causal_alibi"],
    "flash_sdpa_path_repeat_kv": ["alibi_bh_gqa", "gqa_6to1_decode_causal_alibi", "gqa_4to1_dv48", "mqa_causal_scale"],
    "flash_splitkv_combine_tiles": [c for c in FLASH_ALL if c != "gqa_6to1_decode_causal_alibi"],
    "flash_local_window_tuple": ["window_16_none", "window_none_5", "window_10_3_sq_gt_sk",
                                 "causal_window20_sq_lt_sk", "alibi_window_noncausal"],
    # numpy_bwd.py
    "bwd_plain_softmax": ["3d_mask_fullrow", "4d_mqa_zero_len"],
    "bwd_exp2_recompute_lse": list(BWD_ALL),
    "bwd_dp_value_extent": ["2d_plain", "4d_causal_dv_gt_d", "3d_band_dv_gt_d_scale1"],
    "bwd_dot_input_precision": list(BWD_ALL),
    "bwd_templated_layouts": ["4d_causal_dv_gt_d", "4d_mqa_pad", "4d_mqa_zero_len", "4d_dv_lt_d"],
    "bwd_lse_from_forward_stats": list(BWD_ALL),
}


# ----------------------------------------------------------------------------------------------------------------
# float64 references written from the contracts
# ----------------------------------------------------------------------------------------------------------------
def softmax_rows(s):
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    e = np.where(live, np.exp(s - np.where(live, m, 0.0)), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z > 0, z, 1.0)


def ref_refimpl(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return np.matmul(softmax_rows(s), v)


def ref_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (x.double().numpy() for x in (query, key, value))
    hq, hkv = q.shape[1], k.shape[1]
    idx = np.arange(hq) // (hq // hkv)
    k, v = k[:, idx], v[:, idx]
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    sq, sk = s.shape[-2:]
    if is_causal:
        s = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None], s, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = np.where(attn_mask.numpy(), s, -np.inf)
        else:
            s = s + attn_mask.double().numpy()
    return np.matmul(softmax_rows(s), v)


def ref_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
              alibi_slopes=None, deterministic=False, return_attn_probs=False):
    q, k, v = (x.double().numpy().transpose(0, 2, 1, 3) for x in (q, k, v))
    hq, hkv = q.shape[1], k.shape[1]
    idx = np.arange(hq) // (hq // hkv)
    k, v = k[:, idx], v[:, idx]
    scale = 1.0 / np.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    sq, sk = s.shape[-2:]
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    if alibi_slopes is not None:
        s = s - alibi_slopes.double().numpy().reshape(-1, hq, 1, 1) * np.abs(i - j)
    left, right = window_size
    if causal:
        right = 0
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    s = np.where(keep, s, -np.inf)
    return np.matmul(softmax_rows(s), v).transpose(0, 2, 1, 3)


def sum_to_shape(x, shape):
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = softmax_rows(s)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq, sum_to_shape(dk, k.shape), sum_to_shape(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v, d_out))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        keep = torch.as_tensor(np.broadcast_to(mask, tuple(s.shape)).copy())
        s = s.masked_fill(~keep, float("-inf"))
        live = keep.any(dim=-1, keepdim=True)
        p = torch.softmax(torch.where(live, s, torch.zeros_like(s)), dim=-1) * live
    else:
        p = torch.softmax(s, dim=-1)
    out = torch.matmul(p, v)
    grads = torch.autograd.grad((out * do).sum(), (q, k, v))
    return tuple(g.numpy() for g in grads)


# ----------------------------------------------------------------------------------------------------------------
# fixed seeded cases
# ----------------------------------------------------------------------------------------------------------------
def randn(rng, *shape):
    return rng.standard_normal(shape)


def pad_mask(lengths, sk):
    return (np.arange(sk)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]


def np_cases():
    cases = {}
    r = np.random.default_rng(1101)
    cases["2d_plain"] = dict(q=randn(r, 37, 24), k=randn(r, 53, 24), v=randn(r, 53, 20), mask=None, scale=None)
    r = np.random.default_rng(1102)
    m = r.random((2, 45, 70)) < 0.7
    m[0, 3, :] = False
    cases["3d_randmask_fullrow"] = dict(q=randn(r, 2, 45, 16), k=randn(r, 2, 70, 16), v=randn(r, 2, 70, 12), mask=m,
                                        scale=0.37)
    r = np.random.default_rng(1103)
    cases["4d_pad_right"] = dict(q=randn(r, 2, 3, 40, 32), k=randn(r, 2, 3, 100, 32), v=randn(r, 2, 3, 100, 16),
                                 mask=pad_mask([100, 61], 100), scale=None)
    r = np.random.default_rng(1104)
    cases["4d_pad_zero_len"] = dict(q=randn(r, 2, 2, 24, 16), k=randn(r, 2, 2, 64, 16), v=randn(r, 2, 2, 64, 24),
                                    mask=pad_mask([50, 0], 64), scale=None)
    r = np.random.default_rng(1105)
    cases["4d_causal_square_d64"] = dict(q=randn(r, 1, 2, 96, 64), k=randn(r, 1, 2, 96, 64),
                                         v=randn(r, 1, 2, 96, 64), mask=np.tril(np.ones((96, 96), dtype=bool)),
                                         scale=None)
    r = np.random.default_rng(1106)
    i = np.arange(60)[:, None] + 69
    j = np.arange(129)[None, :]
    band = np.stack([np.abs(j - i) <= w for w in (5, 20)])[None]
    cases["4d_band_per_head"] = dict(q=randn(r, 2, 2, 60, 16), k=randn(r, 2, 2, 129, 16), v=randn(r, 2, 2, 129, 48),
                                     mask=band, scale=0.5)
    r = np.random.default_rng(1107)
    br = np.arange(129)[None, :] <= np.arange(30)[:, None] + 99
    cases["3d_causal_br_scale1"] = dict(q=randn(r, 3, 30, 8), k=randn(r, 3, 129, 8), v=randn(r, 3, 129, 40),
                                        mask=br, scale=1.0)
    r = np.random.default_rng(1108)
    lp = np.ones((1, 128), dtype=bool)
    lp[:, :20] = False
    cases["2d_left_pad_decode"] = dict(q=randn(r, 1, 16), k=randn(r, 128, 16), v=randn(r, 128, 24), mask=lp,
                                       scale=None)
    r = np.random.default_rng(1109)
    cases["4d_nomask_sq_gt_sk"] = dict(q=randn(r, 2, 4, 100, 16), k=randn(r, 2, 4, 30, 16), v=randn(r, 2, 4, 30, 16),
                                       mask=None, scale=0.3)
    return cases


def sdpa_cases():
    cases = {}

    def qkv(r, b, hq, hkv, sq, sk, d, dv):
        return (torch.tensor(randn(r, b, hq, sq, d)), torch.tensor(randn(r, b, hkv, sk, d)),
                torch.tensor(randn(r, b, hkv, sk, dv)))

    r = np.random.default_rng(1201)
    q, k, v = qkv(r, 2, 3, 3, 33, 47, 24, 40)
    cases["plain_dv_ne_d"] = dict(query=q, key=k, value=v)
    r = np.random.default_rng(1202)
    q, k, v = qkv(r, 2, 2, 2, 50, 70, 16, 16)
    m = r.random((2, 2, 50, 70)) < 0.7
    m[1, 0, 7, :] = False
    cases["bool_mask_fullrow"] = dict(query=q, key=k, value=v, attn_mask=torch.tensor(m), scale=0.37)
    r = np.random.default_rng(1203)
    q, k, v = qkv(r, 1, 4, 4, 20, 90, 32, 24)
    bias = randn(r, 1, 1, 20, 90)
    bias[r.random(bias.shape) < 0.2] = -np.inf
    bias[..., 0] = 0.5
    cases["additive_finite_neginf"] = dict(query=q, key=k, value=v, attn_mask=torch.tensor(bias))
    r = np.random.default_rng(1204)
    q, k, v = qkv(r, 2, 2, 2, 40, 100, 16, 16)
    cases["causal_sq_lt_sk"] = dict(query=q, key=k, value=v, is_causal=True)
    r = np.random.default_rng(1205)
    q, k, v = qkv(r, 1, 2, 2, 100, 64, 64, 64)
    cases["causal_sq_gt_sk_d64"] = dict(query=q, key=k, value=v, is_causal=True)
    r = np.random.default_rng(1206)
    q, k, v = qkv(r, 2, 8, 2, 30, 60, 16, 48)
    cases["gqa_4to1_pad"] = dict(query=q, key=k, value=v, attn_mask=torch.tensor(pad_mask([60, 33], 60)),
                                 enable_gqa=True)
    r = np.random.default_rng(1207)
    q, k, v = qkv(r, 2, 12, 2, 1, 129, 32, 32)
    cases["gqa_6to1_decode"] = dict(query=q, key=k, value=v, enable_gqa=True)
    r = np.random.default_rng(1208)
    q, k, v = qkv(r, 1, 12, 2, 25, 40, 16, 16)
    cases["gqa_6to1_causal"] = dict(query=q, key=k, value=v, is_causal=True, enable_gqa=True)
    r = np.random.default_rng(1209)
    q, k, v = qkv(r, 2, 4, 1, 17, 50, 8, 8)
    cases["mqa_scale"] = dict(query=q, key=k, value=v, scale=0.5, enable_gqa=True)
    r = np.random.default_rng(1210)
    q, k, v = qkv(r, 1, 6, 3, 20, 35, 16, 16)
    bias = 0.3 * randn(r, 1, 1, 20, 35)
    bias[0, 0, 5, :] = -np.inf
    cases["gqa_2to1_hkv3_neginf_row"] = dict(query=q, key=k, value=v, attn_mask=torch.tensor(bias), enable_gqa=True)
    return cases


def flash_cases():
    cases = {}

    def qkv(r, b, sq, sk, hq, hkv, d, dv):
        return (torch.tensor(randn(r, b, sq, hq, d)), torch.tensor(randn(r, b, sk, hkv, d)),
                torch.tensor(randn(r, b, sk, hkv, dv)))

    def slopes(r, *shape):
        return torch.tensor(r.uniform(0.05, 0.8, size=shape), dtype=torch.float32)

    r = np.random.default_rng(1301)
    q, k, v = qkv(r, 2, 30, 70, 4, 4, 16, 24)
    cases["plain_sq_lt_sk"] = dict(q=q, k=k, v=v)
    r = np.random.default_rng(1302)
    q, k, v = qkv(r, 1, 40, 100, 2, 2, 32, 32)
    cases["causal_sq_lt_sk"] = dict(q=q, k=k, v=v, causal=True)
    r = np.random.default_rng(1303)
    q, k, v = qkv(r, 2, 80, 50, 2, 2, 16, 16)
    cases["causal_sq_gt_sk"] = dict(q=q, k=k, v=v, causal=True)
    r = np.random.default_rng(1304)
    q, k, v = qkv(r, 1, 60, 90, 3, 3, 16, 16)
    cases["window_16_none"] = dict(q=q, k=k, v=v, window_size=(16, -1))
    r = np.random.default_rng(1305)
    q, k, v = qkv(r, 2, 50, 50, 2, 2, 16, 8)
    cases["window_none_5"] = dict(q=q, k=k, v=v, window_size=(-1, 5))
    r = np.random.default_rng(1306)
    q, k, v = qkv(r, 1, 100, 64, 2, 2, 32, 40)
    cases["window_10_3_sq_gt_sk"] = dict(q=q, k=k, v=v, window_size=(10, 3))
    r = np.random.default_rng(1307)
    q, k, v = qkv(r, 2, 30, 129, 2, 2, 16, 16)
    cases["causal_window20_sq_lt_sk"] = dict(q=q, k=k, v=v, causal=True, window_size=(20, -1))
    r = np.random.default_rng(1308)
    q, k, v = qkv(r, 1, 40, 40, 2, 2, 16, 16)
    cases["softcap5_scale"] = dict(q=q, k=k, v=v, softmax_scale=0.5, softcap=5.0)
    r = np.random.default_rng(1309)
    q, k, v = qkv(r, 2, 33, 60, 4, 4, 16, 16)
    cases["softcap3_causal_alibi"] = dict(q=q, k=k, v=v, causal=True, softcap=3.0, alibi_slopes=slopes(r, 4))
    r = np.random.default_rng(1310)
    q, k, v = qkv(r, 2, 25, 55, 6, 2, 16, 24)
    cases["alibi_bh_gqa"] = dict(q=q, k=k, v=v, alibi_slopes=slopes(r, 2, 6))
    r = np.random.default_rng(1311)
    q, k, v = qkv(r, 1, 40, 40, 2, 2, 16, 16)
    cases["alibi_window_noncausal"] = dict(q=q, k=k, v=v, window_size=(8, 8), alibi_slopes=slopes(r, 2))
    r = np.random.default_rng(1312)
    q, k, v = qkv(r, 1, 1, 128, 12, 2, 32, 32)
    cases["gqa_6to1_decode_causal_alibi"] = dict(q=q, k=k, v=v, causal=True, alibi_slopes=slopes(r, 12))
    r = np.random.default_rng(1313)
    q, k, v = qkv(r, 2, 20, 45, 4, 1, 8, 8)
    cases["mqa_causal_scale"] = dict(q=q, k=k, v=v, causal=True, softmax_scale=0.37)
    r = np.random.default_rng(1314)
    q, k, v = qkv(r, 1, 48, 48, 8, 2, 16, 48)
    cases["gqa_4to1_dv48"] = dict(q=q, k=k, v=v)
    return cases


def bwd_cases():
    cases = {}

    def make(r, qs, ks, vs, mask=None, scale=None):
        q, k, v = randn(r, *qs), randn(r, *ks), randn(r, *vs)
        lead = np.broadcast_shapes(qs[:-2], ks[:-2], vs[:-2])
        d_out = randn(r, *(lead + (qs[-2], vs[-1])))
        return dict(q=q, k=k, v=v, d_out=d_out, mask=mask, scale=scale)

    cases["2d_plain"] = make(np.random.default_rng(1401), (30, 16), (45, 16), (45, 24))
    r = np.random.default_rng(1402)
    m = r.random((2, 40, 60)) < 0.6
    m[1, 5, :] = False
    cases["3d_mask_fullrow"] = make(r, (2, 40, 16), (2, 60, 16), (2, 60, 16), mask=m, scale=0.5)
    cases["4d_causal_dv_gt_d"] = make(np.random.default_rng(1403), (2, 3, 50, 32), (2, 3, 50, 32), (2, 3, 50, 48),
                                      mask=np.tril(np.ones((50, 50), dtype=bool)))
    cases["4d_mqa_pad"] = make(np.random.default_rng(1404), (2, 4, 25, 16), (2, 1, 70, 16), (2, 1, 70, 12),
                               mask=pad_mask([70, 40], 70), scale=0.37)
    cases["4d_mqa_zero_len"] = make(np.random.default_rng(1405), (2, 2, 20, 8), (2, 1, 33, 8), (2, 1, 33, 8),
                                    mask=pad_mask([33, 0], 33))
    i = np.arange(64)[:, None] + 36
    band = np.abs(np.arange(100)[None, :] - i) <= 10
    cases["3d_band_dv_gt_d_scale1"] = make(np.random.default_rng(1406), (1, 64, 8), (1, 100, 8), (1, 100, 40),
                                           mask=band, scale=1.0)
    cases["4d_dv_lt_d"] = make(np.random.default_rng(1407), (1, 2, 30, 32), (1, 2, 40, 32), (1, 2, 40, 16))
    return cases


# ----------------------------------------------------------------------------------------------------------------
# running and judging
# ----------------------------------------------------------------------------------------------------------------
def cast_args(args, dtype):
    out = {}
    for key, val in args.items():
        if isinstance(val, np.ndarray) and val.dtype.kind == "f":
            out[key] = val.astype(dtype)
        elif isinstance(val, torch.Tensor) and val.is_floating_point() and key != "alibi_slopes":
            out[key] = val.to(torch.float32 if dtype == "float32" else torch.float64)
        else:
            out[key] = val
    return out


def fresh(args):
    out = {}
    for key, val in args.items():
        if isinstance(val, np.ndarray):
            out[key] = val.copy()
        elif isinstance(val, torch.Tensor):
            out[key] = val.clone()
        else:
            out[key] = val
    return out


def same_inputs(a, b):
    for key, val in a.items():
        other = b[key]
        if isinstance(val, np.ndarray):
            if val.dtype != other.dtype or not np.array_equal(val, other, equal_nan=True):
                return False
        elif isinstance(val, torch.Tensor):
            if val.dtype != other.dtype or not torch.equal(torch.nan_to_num(val), torch.nan_to_num(other)):
                return False
    return True


def rel_error(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return np.inf
    den = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    if den == 0.0:
        return 0.0 if num == 0.0 else np.inf
    return num / den


def expected(api, args):
    if api == "refimpl":
        return ref_refimpl(**args)
    if api == "torch-sdpa":
        return ref_sdpa(**args)
    if api == "flash-attn":
        return ref_flash(**args)
    return ref_bwd(**args)


def run_one(fn, api, args, dtype, ref, problems, label):
    """Call fn twice on fresh copies; return the worse relative error (inf on error/shape/dtype/non-finite)."""
    worst = 0.0
    for _ in range(2):
        call = fresh(args)
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = fn(**call)
        except Exception:
            return np.inf
        if not same_inputs(call, args):
            problems.append(f"{label}: an input was modified")
            return np.inf
        if api == "numpy-backward":
            if not isinstance(out, tuple) or len(out) != 3:
                return np.inf
            errs = []
            for got, want, src in zip(out, ref, (args["q"], args["k"], args["v"])):
                if not isinstance(got, np.ndarray) or got.dtype != np.dtype(dtype) or got.shape != src.shape:
                    return np.inf
                errs.append(rel_error(got, want))
            err = max(errs)
        elif api == "refimpl":
            if not isinstance(out, np.ndarray) or out.dtype != np.dtype(dtype):
                return np.inf
            err = rel_error(out, ref)
        else:
            want_dtype = torch.float32 if dtype == "float32" else torch.float64
            if not isinstance(out, torch.Tensor) or out.dtype != want_dtype:
                return np.inf
            err = rel_error(out.detach().numpy(), ref)
        worst = max(worst, err)
    return worst


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_sections(path, catalog, problems):
    text = open(path).read().splitlines()
    sections = {}
    current = None
    for line in text:
        mk = re.match(r"^# --- kernel: (\w+) ---$", line)
        if mk:
            current = mk.group(1)
            if current in sections:
                problems.append(f"{os.path.basename(path)}: duplicate section {current}")
            sections[current] = 0
            continue
        if "# BUG:" in line:
            if current is None:
                problems.append(f"{os.path.basename(path)}: '# BUG:' outside any kernel section")
            else:
                sections[current] += 1
    fns = {e["fn"] for e in catalog}
    for fn in sections:
        if fn not in fns:
            problems.append(f"{os.path.basename(path)}: section {fn} has no CATALOG entry")
    for e in catalog:
        n = sections.get(e["fn"])
        if n is None:
            problems.append(f"{os.path.basename(path)}: no section for {e['fn']}")
        elif e["correct"] and n != 0:
            problems.append(f"{os.path.basename(path)}: correct {e['fn']} has {n} '# BUG:' comments")
        elif not e["correct"] and n != 1:
            problems.append(f"{os.path.basename(path)}: broken {e['fn']} has {n} '# BUG:' comments (need 1)")


def check_catalog(mod, fname, api, problems, names, reports):
    cat = getattr(mod, "CATALOG", None)
    if not isinstance(cat, list):
        problems.append(f"{fname}: no CATALOG list")
        return []
    n_broken = n_correct = 0
    for e in cat:
        if set(e) != KEYS:
            problems.append(f"{fname}: CATALOG keys {sorted(set(e) ^ KEYS)} wrong in {e.get('name')}")
            continue
        tag = f"{fname}:{e['name']}"
        if e["name"] in names:
            problems.append(f"{tag}: duplicate name")
        names.add(e["name"])
        if e["api"] != api:
            problems.append(f"{tag}: api {e['api']} != {api}")
        if not callable(getattr(mod, e["fn"], None)):
            problems.append(f"{tag}: fn {e['fn']} not found")
        if e["dtype"] not in ("float64", "float32"):
            problems.append(f"{tag}: dtype {e['dtype']}")
        if not isinstance(e["features"], list) or not set(e["features"]) <= FEATURES[api]:
            problems.append(f"{tag}: features {e['features']}")
        if e["correct"] is True:
            n_correct += 1
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")):
                problems.append(f"{tag}: correct kernel with bug fields")
            if e["fn"] in TRIGGERS:
                problems.append(f"{tag}: correct kernel listed in TRIGGERS")
        elif e["correct"] is False:
            n_broken += 1
            if not isinstance(e["bug"], str) or not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"]):
                problems.append(f"{tag}: bug not kebab-case")
            if not isinstance(e["parameter"], str) or "Triggers:" not in e["parameter"]:
                problems.append(f"{tag}: parameter lacks 'Triggers:'")
            ms = re.fullmatch(r"([\w.-]+)/([\w.-]+)#(\d+)", e["source"] or "")
            mr = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)/(issues|pull)/(\d+)", e["report"] or "")
            if not ms or not mr or ms.group(1, 2, 3) != (mr.group(1), mr.group(2), mr.group(4)):
                problems.append(f"{tag}: source/report disagree ({e['source']} vs {e['report']})")
            if e["report"] in reports:
                problems.append(f"{tag}: report cited twice")
            reports.add(e["report"])
            if e["fn"] not in TRIGGERS:
                problems.append(f"{tag}: no TRIGGERS entry")
        else:
            problems.append(f"{tag}: correct is not a bool")
    if n_broken < 6 or n_correct < 2:
        problems.append(f"{fname}: {n_broken} broken + {n_correct} correct (need >= 6 + >= 2)")
    return cat


def cross_check():
    """sdpa/flash references against the NumPy one with explicit masks; backward reference against autograd."""
    worst = 0.0
    r = np.random.default_rng(9)
    q, k, v = randn(r, 2, 3, 20, 16), randn(r, 2, 3, 45, 16), randn(r, 2, 3, 45, 8)
    tq, tk, tv = (torch.tensor(x) for x in (q, k, v))
    tl = np.arange(45)[None, :] <= np.arange(20)[:, None]
    worst = max(worst, rel_error(ref_sdpa(tq, tk, tv, is_causal=True), ref_refimpl(q, k, v, tl)))
    bias = np.where(r.random((20, 45)) < 0.3, -np.inf, 0.0)
    bias[:, 0] = 0.0
    worst = max(worst, rel_error(ref_sdpa(tq, tk, tv, attn_mask=torch.tensor(bias)),
                                 ref_refimpl(q, k, v, np.isfinite(bias))))
    fq, fk, fv = (torch.tensor(x.transpose(0, 2, 1, 3).copy()) for x in (q, k, v))
    br = np.arange(45)[None, :] <= np.arange(20)[:, None] + 25
    got = ref_flash(fq, fk, fv, causal=True).transpose(0, 2, 1, 3)
    worst = max(worst, rel_error(got, ref_refimpl(q, k, v, br)))
    win = br & (np.arange(45)[None, :] >= np.arange(20)[:, None] + 25 - 7)
    got = ref_flash(fq, fk, fv, causal=True, window_size=(7, -1)).transpose(0, 2, 1, 3)
    worst = max(worst, rel_error(got, ref_refimpl(q, k, v, win)))
    for args in bwd_cases().values():
        mine = ref_bwd(**args)
        auto = autograd_bwd(**args)
        worst = max(worst, max(rel_error(a, b) for a, b in zip(mine, auto)))
    return worst


def main():
    t0 = time.time()
    problems = []
    torch.set_num_threads(1)
    xworst = cross_check()
    if not xworst <= 1e-12:
        problems.append(f"reference cross-check failed: {xworst:.3g}")
    print(f"reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          f"worst {xworst:.2g}")
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    builders = {"refimpl": np_cases, "torch-sdpa": sdpa_cases, "flash-attn": flash_cases,
                "numpy-backward": bwd_cases}
    names, reports = set(), set()
    summary = []
    for fname, api in MODULES:
        path = os.path.join(HERE, fname)
        mod = load(path)
        cat = check_catalog(mod, fname, api, problems, names, reports)
        check_sections(path, cat, problems)
        cases = builders[api]()
        print(f"{fname} ({api})")
        n_b = n_c = 0
        for e in cat:
            fn = getattr(mod, e["fn"], None)
            if fn is None:
                continue
            trig = TRIGGERS.get(e["fn"], [])
            for c in trig:
                if c not in cases:
                    problems.append(f"{e['name']}: unknown trigger case {c}")
            worst = {}
            for dtype in ("float64", "float32"):
                w = 0.0
                for cname, base in cases.items():
                    args = cast_args(base, dtype)
                    ref = expected(api, args)
                    err = run_one(fn, api, args, dtype, ref, problems, f"{e['name']}/{cname}/{dtype}")
                    w = max(w, err)
                    if e["correct"]:
                        if not err <= CORRECT_BOUND[dtype]:
                            problems.append(f"{e['name']}: correct kernel off on {cname} {dtype}: {err:.3g}")
                    elif dtype == e["dtype"] and cname in trig and not err > DIFFER_BOUND[dtype]:
                        problems.append(f"{e['name']}: does not differ on trigger {cname} {dtype}: {err:.3g}")
                worst[dtype] = w
            if e["correct"]:
                n_c += 1
            else:
                n_b += 1
            status = "ok    " if e["correct"] else "broken"
            print(f"  {e['name']:<42} {status} f64 {worst['float64']:<9.3g} f32 {worst['float32']:.3g}")
        summary.append(f"{os.path.splitext(fname)[0]} {n_b} broken + {n_c} correct")
    dt = time.time() - t0
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        print(f"SELF-CHECK FAILED ({dt:.1f} s): {len(problems)} problem(s)")
        return 1
    print(f"SELF-CHECK PASSED ({dt:.1f} s): " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
