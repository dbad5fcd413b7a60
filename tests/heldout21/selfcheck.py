"""Self-check of the heldout21 kernels: references written from the four contracts, fixed seeded cases.

Run: /work/main/.venv/bin/python tests/heldout21/selfcheck.py   (a few seconds; exit status 1 on any problem)
"""
import importlib
import math
import os
import re
import sys
import time

sys.dont_write_bytecode = True

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODULES = [("numpy_fwd", "refimpl"), ("torch_sdpa_fwd", "torch-sdpa"), ("flash_fwd", "flash-attn"),
           ("numpy_bwd", "numpy-backward")]
FEATURES = {"refimpl": {"mask", "dv-ne-d"}, "numpy-backward": {"mask", "dv-ne-d"},
            "torch-sdpa": {"mask", "causal", "gqa", "dv-ne-d"},
            "flash-attn": {"causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}}
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
OK_BOUND = {"float64": 1e-10, "float32": 1e-5}
BROKEN_BOUND = {"float64": 1e-8, "float32": 1e-4}

# Cases on which each broken kernel differs (in its CATALOG dtype); it conforms on every other case of its module.
TRIGGERS = {
    "np-selfcritical-mask-after-softmax": ["n02_3d_randmask", "n03_4d_band", "n04_4d_keypad_zeroed", "n05_4d_causal",
                                           "n06_4d_decode_leftpad", "n09_4d_h1_causal", "n10_2d_q1_keymask"],
    "np-mlcollection-heads-reshaped": ["n03_4d_band", "n04_4d_keypad_zeroed", "n05_4d_causal"],
    "np-kyubyong-key-mask-from-sums": ["n02_3d_randmask", "n03_4d_band", "n05_4d_causal", "n06_4d_decode_leftpad",
                                       "n09_4d_h1_causal", "n10_2d_q1_keymask"],
    "np-linearmem-mask-chunk-from-values": ["n02_3d_randmask", "n03_4d_band", "n04_4d_keypad_zeroed", "n05_4d_causal",
                                            "n06_4d_decode_leftpad", "n09_4d_h1_causal", "n10_2d_q1_keymask"],
    "np-ttmetal-softmax-no-max": ["n08_extreme_logits"],
    "np-pct-second-norm-query-axis": ["n01_2d_plain", "n02_3d_randmask", "n03_4d_band", "n04_4d_keypad_zeroed",
                                      "n05_4d_causal", "n06_4d_decode_leftpad", "n07_3d_sq_gt_sk",
                                      "n08_extreme_logits", "n09_4d_h1_causal", "n10_2d_q1_keymask"],
    "sdpa-ttmetal-scale-num-heads": ["s01_plain", "s02_bool_rand_fullrow", "s04_float_pad_neg_inf",
                                     "s05_causal_sq_lt_sk", "s06_causal_sq_gt_sk_single", "s07_causal_gqa6",
                                     "s09_mqa_decode"],
    "sdpa-burn-causal-unit-offset": ["s05_causal_sq_lt_sk", "s07_causal_gqa6"],
    "sdpa-sageattn-float-mask-tile-skip": ["s04_float_pad_neg_inf", "s11_float_causal_fullrow"],
    "sdpa-nntile-scores-layout": ["s01_plain", "s02_bool_rand_fullrow", "s03_float_bias", "s04_float_pad_neg_inf",
                                  "s05_causal_sq_lt_sk", "s06_causal_sq_gt_sk_single", "s07_causal_gqa6",
                                  "s08_gqa4_bool", "s09_mqa_decode", "s10_scale_is_default",
                                  "s11_float_causal_fullrow", "s12_heads_eq_dim"],
    "sdpa-torchcode-scale-dk": ["s01_plain", "s02_bool_rand_fullrow", "s04_float_pad_neg_inf", "s05_causal_sq_lt_sk",
                                "s06_causal_sq_gt_sk_single", "s07_causal_gqa6", "s09_mqa_decode", "s12_heads_eq_dim"],
    "sdpa-timm-scale-not-forwarded": ["s03_float_bias", "s08_gqa4_bool", "s11_float_causal_fullrow"],
    "flash-flagattn-window-neg-inf-nan": ["f05_window_left40", "f07_window_10_3_sq_gt_sk",
                                          "f08_causal_window20_sq_lt_sk", "f09_causal_window6_sq_gt_sk",
                                          "f16_window_0_4_alibi"],
    "flash-vllmmetal-softcap-zero": ["f10_softcap5_scale", "f11_softcap3_causal_alibi", "f14_softcap30"],
    "flash-sglang-logits-cap-30": ["f10_softcap5_scale", "f11_softcap3_causal_alibi"],
    "flash-fsa-split-lse-double-scale": ["f01_plain", "f02_causal_sq_lt_sk", "f04_causal_gqa4", "f05_window_left40",
                                         "f06_window_right5", "f08_causal_window20_sq_lt_sk",
                                         "f09_causal_window6_sq_gt_sk", "f10_softcap5_scale", "f12_alibi_bh_gqa2",
                                         "f13_decode_gqa6_causal", "f16_window_0_4_alibi"],
    "flash-memeff-qk-len-diff-sign": ["f02_causal_sq_lt_sk", "f03_causal_sq_gt_sk", "f06_window_right5",
                                      "f07_window_10_3_sq_gt_sk", "f08_causal_window20_sq_lt_sk",
                                      "f09_causal_window6_sq_gt_sk", "f12_alibi_bh_gqa2", "f13_decode_gqa6_causal"],
    "flash-vllm-sliding-window-symmetric": ["f08_causal_window20_sq_lt_sk", "f09_causal_window6_sq_gt_sk"],
    "bwd-cudnn-zero-trip-tiles-unwritten": ["b04_4d_causal_sq_lt_sk", "b05_4d_keypad_zero_len",
                                            "b07_4d_decode_leftpad"],
    "bwd-mindone-grad-without-sens": ["b01_2d_plain", "b02_3d_randmask_fullrow", "b03_4d_band_heads",
                                      "b04_4d_causal_sq_lt_sk", "b05_4d_keypad_zero_len", "b06_4d_mqa_broadcast",
                                      "b07_4d_decode_leftpad", "b08_3d_sq_gt_sk"],
    "bwd-aprender-severed-tape": ["b01_2d_plain", "b02_3d_randmask_fullrow", "b03_4d_band_heads",
                                  "b04_4d_causal_sq_lt_sk", "b05_4d_keypad_zero_len", "b06_4d_mqa_broadcast",
                                  "b07_4d_decode_leftpad", "b08_3d_sq_gt_sk", "b09_3d_ones_dout"],
    "bwd-ccnet-dkdv-store-race": ["b01_2d_plain", "b02_3d_randmask_fullrow", "b03_4d_band_heads",
                                  "b05_4d_keypad_zero_len", "b08_3d_sq_gt_sk", "b09_3d_ones_dout"],
    "bwd-cuequivariance-finite-fill": ["b02_3d_randmask_fullrow", "b05_4d_keypad_zero_len"],
    "bwd-fla-padding-keys-in-normaliser": ["b02_3d_randmask_fullrow", "b03_4d_band_heads", "b04_4d_causal_sq_lt_sk",
                                           "b05_4d_keypad_zero_len", "b07_4d_decode_leftpad", "b09_3d_ones_dout"],
}


# ----------------------------------------------------------------------------------------------- references

def ref_attend(q, k, v, keep, scale):
    """float64 attention over broadcast (..., S, D) arrays; keep bool (..., Sq, Sk) or None; empty rows give 0."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    e = np.exp(s - np.where(live, m, 0.0))
    p = e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0)
    return np.matmul(p, v)


def ref_numpy(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    return ref_attend(q, k, v, keep, scale)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None):
    q, k, v = (x.detach().double().numpy() for x in (query, key, value))
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    k = np.repeat(k, hq // hkv, axis=1)
    v = np.repeat(v, hq // hkv, axis=1)
    bias = np.zeros((b, hq, sq, sk))
    if is_causal:
        bias = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None], 0.0, -np.inf) + bias
    elif attn_mask is not None:
        m = attn_mask.detach().numpy()
        bias = bias + (np.where(m, 0.0, -np.inf) if m.dtype == bool else m.astype(np.float64))
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale + bias
    mx = s.max(axis=-1, keepdims=True)
    live = np.isfinite(mx)
    e = np.exp(s - np.where(live, mx, 0.0))
    p = e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0)
    return np.matmul(p, v)


def flash_keep(sq, sk, causal, window):
    left, right = window
    if causal:
        right = 0
    rel = np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :]
    keep = np.ones((sq, sk), dtype=bool)
    if right >= 0:
        keep &= rel >= -right
    if left >= 0:
        keep &= rel <= left
    return keep, rel


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (x.detach().double().numpy().transpose(0, 2, 1, 3) for x in (q, k, v))
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    k = np.repeat(k, hq // hkv, axis=1)
    v = np.repeat(v, hq // hkv, axis=1)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    keep, rel = flash_keep(sq, sk, causal, window_size)
    if alibi_slopes is not None:
        sl = alibi_slopes.detach().double().numpy()
        sl = np.broadcast_to(sl, (b, hq)) if sl.ndim == 1 else sl
        s = s - sl[:, :, None, None] * np.abs(rel)
    s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    live = np.isfinite(mx)
    e = np.exp(s - np.where(live, mx, 0.0))
    p = e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0)
    return np.matmul(p, v).transpose(0, 2, 1, 3)


def _sum_to(g, shape):
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    live = np.isfinite(mx)
    e = np.exp(s - np.where(live, mx, 0.0))
    p = e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - (do * o).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq, _sum_to(dk, k.shape), _sum_to(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    qt, kt, vt = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-1, -2)) * scale
    if mask is None:
        p = torch.softmax(s, dim=-1)
    else:
        keep = torch.tensor(np.broadcast_to(np.asarray(mask, dtype=bool), s.shape).copy())
        live = keep.any(dim=-1, keepdim=True)
        s = torch.where(keep, s, torch.full_like(s, float("-inf")))
        s = torch.where(live, s, torch.zeros_like(s))
        p = torch.softmax(s, dim=-1) * live
    o = torch.matmul(p, vt)
    (o * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------- cases

def _rng(name):
    return np.random.default_rng(sum((i + 1) * ord(c) for i, c in enumerate(name)))


def _band(b, h, sq, sk, width=12):
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    centre = np.round(i * sk / sq).astype(int)
    return np.stack([np.stack([np.abs(j - centre - 3 * hh) <= width for hh in range(h)]) for _ in range(b)])


def _lengths_mask(lengths, sk, left=False):
    j = np.arange(sk)[None, :]
    ln = np.asarray(lengths)[:, None]
    keep = j >= sk - ln if left else j < ln
    return keep[:, None, None, :]


def numpy_cases():
    cases = []

    def add(name, qs, ks, vs, mask=None, scale=None, post=None):
        r = _rng(name)
        q, k, v = r.standard_normal(qs), r.standard_normal(ks), r.standard_normal(vs)
        if post is not None:
            q, k, v, mask = post(r, q, k, v, mask)
        cases.append(dict(name=name, args=(q, k, v), mask=mask, scale=scale))

    r = _rng("masks")
    m2 = r.random((2, 40, 64)) < 0.7
    m2[1, 5] = False
    add("n01_2d_plain", (37, 24), (53, 24), (53, 20))
    add("n02_3d_randmask", (2, 40, 16), (2, 64, 16), (2, 64, 12), mask=m2, scale=0.37)
    add("n03_4d_band", (2, 3, 29, 32), (2, 3, 77, 32), (2, 3, 77, 40), mask=_band(2, 3, 29, 77))

    def zero_pad(r, q, k, v, mask):
        k = k * mask[:, :, 0, :, None]
        return q, k, v, mask
    add("n04_4d_keypad_zeroed", (3, 2, 50, 16), (3, 2, 96, 16), (3, 2, 96, 16), mask=_lengths_mask([96, 61, 0], 96),
        post=zero_pad)
    add("n05_4d_causal", (1, 4, 100, 64), (1, 4, 100, 64), (1, 4, 100, 48),
        mask=np.tril(np.ones((100, 100), bool))[None, None])
    add("n06_4d_decode_leftpad", (2, 4, 1, 16), (2, 4, 129, 16), (2, 4, 129, 8),
        mask=_lengths_mask([129, 70], 129, left=True))
    add("n07_3d_sq_gt_sk", (3, 90, 8), (3, 33, 8), (3, 33, 24), scale=0.5)

    def extreme(r, q, k, v, mask):
        q = np.zeros_like(q)
        for i in range(q.shape[1]):
            q[:, i, i % 8] = 11.0
        k = 0.3 * k
        for j in range(8):
            k[:, j] = 0.0
            k[:, j, j] = 11.0
        return q, k, v, mask
    add("n08_extreme_logits", (2, 16, 8), (2, 24, 8), (2, 24, 16), scale=1.0, post=extreme)
    add("n09_4d_h1_causal", (2, 1, 64, 24), (2, 1, 64, 24), (2, 1, 64, 24),
        mask=np.tril(np.ones((64, 64), bool))[None, None].repeat(2, axis=0))
    add("n10_2d_q1_keymask", (1, 32), (40, 32), (40, 20), mask=r.random((1, 40)) < 0.6)
    return cases


def sdpa_cases():
    cases = []

    def add(name, b, hq, hkv, sq, sk, d, dv, mask=None, is_causal=False, scale=None):
        r = _rng(name)
        q = r.standard_normal((b, hq, sq, d))
        k = r.standard_normal((b, hkv, sk, d))
        v = r.standard_normal((b, hkv, sk, dv))
        cases.append(dict(name=name, args=(q, k, v), mask=mask, is_causal=is_causal, scale=scale,
                          gqa=hq != hkv))

    r = _rng("sdpa-masks")
    m02 = r.random((2, 4, 33, 70)) < 0.7
    m02[1, 2, 7] = False
    m04 = np.where(_lengths_mask([96, 64], 96), 0.0, -np.inf)
    m11 = np.where(np.tril(np.ones((50, 50), bool)), 0.0, -np.inf)[None, None].copy()
    m11[0, 0, 10] = -np.inf
    add("s01_plain", 2, 4, 4, 48, 48, 32, 32)
    add("s02_bool_rand_fullrow", 2, 4, 4, 33, 70, 16, 24, mask=m02)
    add("s03_float_bias", 1, 2, 2, 40, 57, 24, 20, mask=r.standard_normal((1, 1, 40, 57)), scale=0.3)
    add("s04_float_pad_neg_inf", 2, 3, 3, 80, 96, 40, 40, mask=m04)
    add("s05_causal_sq_lt_sk", 2, 2, 2, 20, 70, 16, 16, is_causal=True)
    add("s06_causal_sq_gt_sk_single", 1, 1, 1, 90, 37, 32, 32, is_causal=True)
    add("s07_causal_gqa6", 1, 6, 1, 64, 64, 32, 32, is_causal=True)
    add("s08_gqa4_bool", 2, 8, 2, 17, 129, 64, 48, mask=r.random((2, 1, 17, 129)) < 0.8, scale=0.5)
    add("s09_mqa_decode", 2, 4, 1, 1, 100, 16, 16)
    add("s10_scale_is_default", 1, 2, 2, 30, 45, 16, 16, scale=0.25)
    add("s11_float_causal_fullrow", 1, 4, 4, 50, 50, 8, 12, mask=m11, scale=0.37)
    add("s12_heads_eq_dim", 1, 16, 16, 24, 40, 16, 16)
    return cases


def flash_cases():
    cases = []

    def add(name, b, sq, sk, hq, hkv, d, dv, causal=False, window=(-1, -1), softcap=0.0, alibi=None, scale=None):
        r = _rng(name)
        q = r.standard_normal((b, sq, hq, d))
        k = r.standard_normal((b, sk, hkv, d))
        v = r.standard_normal((b, sk, hkv, dv))
        slopes = None
        if alibi == "h":
            slopes = (2.0 ** (-8.0 * np.arange(1, hq + 1) / hq)).astype(np.float32)
        elif alibi == "bh":
            slopes = (r.uniform(0.05, 0.6, (b, hq))).astype(np.float32)
        cases.append(dict(name=name, args=(q, k, v), causal=causal, window=window, softcap=softcap, alibi=slopes,
                          scale=scale))

    add("f01_plain", 2, 64, 64, 4, 4, 32, 32)
    add("f02_causal_sq_lt_sk", 1, 20, 77, 2, 2, 16, 24, causal=True)
    add("f03_causal_sq_gt_sk", 2, 90, 40, 2, 2, 32, 32, causal=True)
    add("f04_causal_gqa4", 1, 100, 100, 8, 2, 64, 64, causal=True)
    add("f05_window_left40", 1, 96, 96, 2, 2, 16, 16, window=(40, -1))
    add("f06_window_right5", 1, 50, 70, 2, 2, 16, 16, window=(-1, 5))
    add("f07_window_10_3_sq_gt_sk", 1, 60, 45, 2, 2, 24, 24, window=(10, 3))
    add("f08_causal_window20_sq_lt_sk", 2, 30, 100, 2, 2, 16, 16, causal=True, window=(20, -1))
    add("f09_causal_window6_sq_gt_sk", 1, 70, 50, 3, 3, 16, 16, causal=True, window=(6, -1))
    add("f10_softcap5_scale", 1, 40, 64, 2, 2, 32, 32, softcap=5.0, scale=0.3)
    add("f11_softcap3_causal_alibi", 2, 48, 48, 4, 4, 16, 16, causal=True, softcap=3.0, alibi="h")
    add("f12_alibi_bh_gqa2", 2, 40, 81, 4, 2, 32, 32, alibi="bh")
    add("f13_decode_gqa6_causal", 2, 1, 129, 12, 2, 64, 32, causal=True)
    add("f14_softcap30", 1, 33, 33, 2, 2, 16, 16, softcap=30.0)
    add("f15_scale1_long", 1, 40, 100, 2, 2, 16, 16, scale=1.0)
    add("f16_window_0_4_alibi", 1, 56, 56, 2, 2, 16, 16, window=(0, 4), alibi="h")
    return cases


def bwd_cases():
    cases = []

    def add(name, qs, ks, vs, mask=None, scale=None, ones=False):
        r = _rng(name)
        q, k, v = r.standard_normal(qs), r.standard_normal(ks), r.standard_normal(vs)
        lead = np.broadcast_shapes(qs[:-2], ks[:-2], vs[:-2])
        do = np.ones(lead + (qs[-2], vs[-1])) if ones else r.standard_normal(lead + (qs[-2], vs[-1]))
        cases.append(dict(name=name, args=(q, k, v, do), mask=mask, scale=scale))

    r = _rng("bwd-masks")
    m2 = r.random((2, 40, 64)) < 0.7
    m2[0, 11] = False
    add("b01_2d_plain", (37, 24), (53, 24), (53, 20))
    add("b02_3d_randmask_fullrow", (2, 40, 16), (2, 64, 16), (2, 64, 12), mask=m2, scale=0.37)
    add("b03_4d_band_heads", (2, 3, 70, 32), (2, 3, 77, 32), (2, 3, 77, 40), mask=_band(2, 3, 70, 77))
    add("b04_4d_causal_sq_lt_sk", (1, 2, 30, 16), (1, 2, 100, 16), (1, 2, 100, 16),
        mask=np.tril(np.ones((30, 100), bool))[None, None])
    add("b05_4d_keypad_zero_len", (3, 2, 40, 16), (3, 2, 96, 16), (3, 2, 96, 8), mask=_lengths_mask([96, 50, 0], 96))
    add("b06_4d_mqa_broadcast", (2, 4, 24, 32), (2, 1, 40, 32), (2, 1, 40, 16))
    add("b07_4d_decode_leftpad", (2, 2, 1, 64), (2, 2, 129, 64), (2, 2, 129, 32),
        mask=_lengths_mask([129, 60], 129, left=True))
    add("b08_3d_sq_gt_sk", (3, 90, 8), (3, 33, 8), (3, 33, 24), scale=0.5)
    add("b09_3d_ones_dout", (2, 48, 16), (2, 56, 16), (2, 56, 16), mask=r.random((2, 48, 56)) < 0.8, ones=True)
    return cases


# ----------------------------------------------------------------------------------------------- running

def _rel(out, ref):
    if not np.all(np.isfinite(out)):
        return math.inf
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1e-300))


def run_numpy(fn, case, dtype):
    q, k, v = (x.astype(dtype) for x in case["args"])
    ref = ref_numpy(q, k, v, case["mask"], case["scale"])
    ins = [q.copy(), k.copy(), v.copy()]
    out = fn(*ins, mask=case["mask"], scale=case["scale"])
    if any(not np.array_equal(a, b) for a, b in zip(ins, (q, k, v))):
        return math.inf, "input modified"
    if not isinstance(out, np.ndarray) or out.shape != ref.shape or out.dtype != dtype:
        return math.inf, "wrong type/shape/dtype"
    return _rel(out, ref), None


def run_sdpa(fn, case, dtype):
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    q, k, v = (torch.tensor(x.astype(dtype)) for x in case["args"])
    mask = case["mask"]
    tm = None
    if mask is not None:
        tm = torch.tensor(mask) if mask.dtype == bool else torch.tensor(mask.astype(dtype))
    ref = ref_sdpa(q, k, v, tm, case["is_causal"], case["scale"])
    ins = [q.clone(), k.clone(), v.clone()]
    out = fn(*ins, attn_mask=None if tm is None else tm.clone(), dropout_p=0.0, is_causal=case["is_causal"],
             scale=case["scale"], enable_gqa=case["gqa"])
    if any(not torch.equal(a, b) for a, b in zip(ins, (q, k, v))):
        return math.inf, "input modified"
    if not torch.is_tensor(out) or tuple(out.shape) != ref.shape or out.dtype != tdt:
        return math.inf, "wrong type/shape/dtype"
    return _rel(out.detach().double().numpy(), ref), None


def run_flash(fn, case, dtype):
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    q, k, v = (torch.tensor(x.astype(dtype)) for x in case["args"])
    slopes = None if case["alibi"] is None else torch.tensor(case["alibi"])
    ref = ref_flash(q, k, v, case["scale"], case["causal"], case["window"], case["softcap"], slopes)
    ins = [q.clone(), k.clone(), v.clone()]
    out = fn(*ins, dropout_p=0.0, softmax_scale=case["scale"], causal=case["causal"], window_size=case["window"],
             softcap=case["softcap"], alibi_slopes=None if slopes is None else slopes.clone(),
             deterministic=False, return_attn_probs=False)
    if any(not torch.equal(a, b) for a, b in zip(ins, (q, k, v))):
        return math.inf, "input modified"
    if not torch.is_tensor(out) or tuple(out.shape) != ref.shape or out.dtype != tdt:
        return math.inf, "wrong type/shape/dtype"
    return _rel(out.detach().double().numpy(), ref), None


def run_bwd(fn, case, dtype):
    q, k, v, do = (x.astype(dtype) for x in case["args"])
    refs = ref_bwd(q, k, v, do, case["mask"], case["scale"])
    ins = [q.copy(), k.copy(), v.copy(), do.copy()]
    outs = fn(*ins, mask=case["mask"], scale=case["scale"])
    if any(not np.array_equal(a, b) for a, b in zip(ins, (q, k, v, do))):
        return math.inf, "input modified"
    if not isinstance(outs, tuple) or len(outs) != 3:
        return math.inf, "wrong return"
    worst = 0.0
    for out, ref, like in zip(outs, refs, (q, k, v)):
        if not isinstance(out, np.ndarray) or out.shape != like.shape or out.dtype != dtype:
            return math.inf, "wrong type/shape/dtype"
        worst = max(worst, _rel(out, ref))
    return worst, None


RUNNERS = {"numpy_fwd": (numpy_cases, run_numpy), "torch_sdpa_fwd": (sdpa_cases, run_sdpa),
           "flash_fwd": (flash_cases, run_flash), "numpy_bwd": (bwd_cases, run_bwd)}


def evaluate(fn, runner, case, dtype):
    """Two calls with fresh copies; the worse result counts. Any exception is an infinite error."""
    worst, note = 0.0, None
    for _ in range(2):
        try:
            with np.errstate(all="ignore"):
                err, why = runner(fn, case, dtype)
        except Exception as exc:  # noqa: BLE001 - an error in a kernel is a result here
            err, why = math.inf, "%s: %s" % (type(exc).__name__, exc)
        if err >= worst:
            worst, note = err, why
    return worst, note


def cross_check():
    worst = 0.0
    r = np.random.default_rng(12345)
    q = r.standard_normal((2, 3, 20, 16))
    k = r.standard_normal((2, 3, 45, 16))
    v = r.standard_normal((2, 3, 45, 12))
    tq, tk, tv = (torch.tensor(x) for x in (q, k, v))
    causal_tl = np.tril(np.ones((20, 45), bool))
    worst = max(worst, _rel(ref_sdpa(tq, tk, tv, None, True), ref_numpy(q, k, v, causal_tl)))
    bias = np.where(causal_tl, 0.0, -np.inf)
    worst = max(worst, _rel(ref_sdpa(tq, tk, tv, torch.tensor(bias)), ref_numpy(q, k, v, causal_tl)))
    fq, fk, fv = (torch.tensor(x.transpose(0, 2, 1, 3).copy()) for x in (q, k, v))
    for causal, window in ((True, (-1, -1)), (True, (7, -1)), (False, (5, 2))):
        keep, _ = flash_keep(20, 45, causal, window)
        got = ref_flash(fq, fk, fv, None, causal, window).transpose(0, 2, 1, 3)
        worst = max(worst, _rel(got, ref_numpy(q, k, v, keep)))
    for case in bwd_cases():
        a = ref_bwd(*case["args"], mask=case["mask"], scale=case["scale"])
        b = autograd_bwd(*case["args"], mask=case["mask"], scale=case["scale"])
        worst = max(worst, max(_rel(x, y) for x, y in zip(a, b)))
    return worst


def check_sections(path, catalog, problems):
    text = open(path).read().split("\n")
    sections, current = {}, None
    for line in text:
        m = re.match(r"^# --- kernel: (\w+) ---$", line)
        if m:
            current = m.group(1)
            sections[current] = 0
        elif "# BUG:" in line:
            if current is None:
                problems.append("%s: # BUG: outside a kernel section" % os.path.basename(path))
            else:
                sections[current] += 1
    fns = {e["fn"]: e for e in catalog}
    if set(sections) != set(fns):
        problems.append("%s: sections %s != CATALOG fns %s" % (os.path.basename(path), sorted(sections), sorted(fns)))
    for fn, n in sections.items():
        if fn in fns and n != (0 if fns[fn]["correct"] else 1):
            problems.append("%s: section %s has %d # BUG: lines" % (os.path.basename(path), fn, n))


def check_catalog(mod, api, catalog, problems, seen_names, seen_sources):
    broken = sum(1 for e in catalog if not e["correct"])
    if broken < 6 or len(catalog) - broken < 2:
        problems.append("%s: %d broken, %d correct" % (mod, broken, len(catalog) - broken))
    for e in catalog:
        if set(e) != KEYS:
            problems.append("%s: keys of %s" % (mod, e.get("name")))
            continue
        if e["api"] != api or not callable(getattr(sys.modules[mod], e["fn"], None)):
            problems.append("%s: api/fn of %s" % (mod, e["name"]))
        if e["name"] in seen_names:
            problems.append("duplicate name %s" % e["name"])
        seen_names.add(e["name"])
        if not set(e["features"]) <= FEATURES[api] or e["dtype"] not in OK_BOUND:
            problems.append("%s: features/dtype of %s" % (mod, e["name"]))
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")) or e["name"] in TRIGGERS:
                problems.append("%s: correct kernel %s has bug fields or TRIGGERS" % (mod, e["name"]))
            continue
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or "") or "Triggers:" not in (e["parameter"] or ""):
            problems.append("%s: bug/parameter of %s" % (mod, e["name"]))
        m = re.fullmatch(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#([0-9]+)", e["source"] or "")
        if not m or not re.fullmatch(r"https://github\.com/%s/(issues|pull)/%s" % (re.escape(m.group(1)), m.group(2)),
                                     e["report"] or ""):
            problems.append("%s: source/report of %s" % (mod, e["name"]))
        if e["source"] in seen_sources:
            problems.append("duplicate source %s" % e["source"])
        seen_sources.add(e["source"])
        if e["name"] not in TRIGGERS:
            problems.append("%s: no TRIGGERS entry for %s" % (mod, e["name"]))


def main():
    t0 = time.time()
    problems = []
    xc = cross_check()
    if not xc < 1e-12:
        problems.append("reference cross-check %.3g" % xc)
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): worst %.2g"
          % xc)
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    seen_names, seen_sources, summary = set(), set(), []
    for mod, api in MODULES:
        module = importlib.import_module(mod)
        catalog = module.CATALOG
        check_catalog(mod, api, catalog, problems, seen_names, seen_sources)
        check_sections(os.path.join(HERE, mod + ".py"), catalog, problems)
        make_cases, runner = RUNNERS[mod]
        cases = make_cases()
        names = [c["name"] for c in cases]
        print("%s.py (%s)" % (mod, api))
        for e in catalog:
            fn = getattr(module, e["fn"])
            worst = {"float64": 0.0, "float32": 0.0}
            trig = set(TRIGGERS.get(e["name"], []))
            for t in trig - set(names):
                problems.append("%s: TRIGGERS names unknown case %s" % (e["name"], t))
            for case in cases:
                for dname, dt in (("float64", np.float64), ("float32", np.float32)):
                    err, why = evaluate(fn, runner, case, dt)
                    worst[dname] = max(worst[dname], err)
                    if why == "input modified":
                        problems.append("%s %s %s: input modified" % (e["name"], case["name"], dname))
                    if e["correct"] or case["name"] not in trig:
                        if not err <= OK_BOUND[dname]:
                            note = " (%s)" % why if why else ""
                            problems.append("%s %s %s: %.3g > %g%s" % (e["name"], case["name"], dname, err,
                                                                       OK_BOUND[dname], note))
                    elif dname == e["dtype"] and not err > BROKEN_BOUND[dname]:
                        problems.append("%s %s %s: trigger case does not differ (%.3g)"
                                        % (e["name"], case["name"], dname, err))
            status = "ok" if e["correct"] else "broken"
            print("  %-46s %-6s f64 %-9.3g f32 %.3g" % (e["name"], status, worst["float64"], worst["float32"]))
        summary.append("%s %d broken + %d correct" % (mod, sum(not e["correct"] for e in catalog),
                                                      sum(e["correct"] for e in catalog)))
    for name in TRIGGERS:
        if name not in seen_names:
            problems.append("TRIGGERS entry %s has no kernel" % name)
    dt = time.time() - t0
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        print("SELF-CHECK FAILED (%.1f s): %d problems" % (dt, len(problems)))
        return 1
    print("SELF-CHECK PASSED (%.1f s): %s" % (dt, ", ".join(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
