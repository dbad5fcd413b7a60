#!/usr/bin/env python3
"""Self-check for the heldout9 kernels.

Runs every kernel of the four modules against float64 references written here from the four contracts
(see README.md), on fixed seeded cases, in float64 and (except the float64-only cases) float32:

* correct kernels must conform on every case: relative error (Frobenius) <= 1e-10 in float64, <= 1e-5 in
  float32, output dtype and shape kept, inputs unmodified, and a second identical call must conform too;
* every broken kernel must differ measurably (> 1e-8 float64 / > 1e-4 float32, or non-finite, wrong
  shape/dtype, or an exception) on at least one of the cases listed for it in TRIGGERS, in the dtype its
  CATALOG entry names;
* CATALOG entries are valid and every broken kernel's `# --- kernel: <fn> ---` section holds exactly one
  `# BUG:` comment (correct kernels none).

Exit status 0 when everything holds, 1 otherwise.  Usage (from the repository root):
    /work/main/.venv/bin/python tests/heldout9/selfcheck.py
"""
import importlib.util
import math
import os
import re
import sys
import time

import numpy as np
import torch

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [("numpy_fwd.py", "refimpl"), ("torch_sdpa_fwd.py", "torch-sdpa"), ("flash_fwd.py", "flash-attn"),
           ("numpy_bwd.py", "numpy-backward")]
TOL_OK = {"float64": 1e-10, "float32": 1e-5}
TOL_DIFF = {"float64": 1e-8, "float32": 1e-4}
CATALOG_KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURE_SET = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}

# Cases on which each broken kernel is expected to differ (its documented trigger).
TRIGGERS = {
    "attend_vit_feats_scale": ["np-4d-keypad", "np-4d-perbatch", "np-decode"],
    "attend_f16_rowsum": ["np-long-200", "np-2d-basic"],
    "attend_padded_key_tiles": ["np-2d-basic", "np-3d-mask2d-dead"],
    "attend_varlen_fastpath": ["np-4d-keypad", "np-4d-keypad-zero-len", "np-3d-keypad"],
    "attend_naive_softmax": ["np-large-logits"],
    "attend_bmm_tiled_mask": ["np-4d-keypad", "np-4d-perbatch"],
    "attend_sliced_heads": ["np-3d-keypad", "np-4d-keypad", "np-2d-basic"],
    "sdpa_tile_head_schedule": ["sdpa-gqa-6-3", "sdpa-gqa-8-2-causal", "sdpa-mqa"],
    "sdpa_doc_equivalent": ["sdpa-bool-b1", "sdpa-bool-full", "sdpa-gqa-12-4-bool"],
    "sdpa_mha_weights_fallback": ["sdpa-dv-ne-d-causal"],
    "sdpa_splitk_combine": ["sdpa-basic", "sdpa-bool-full"],
    "sdpa_native_mha_dim_per_head": ["sdpa-basic", "sdpa-causal-sq-lt-sk"],
    "sdpa_folded_scale_mask": ["sdpa-additive-finite"],
    "sdpa_exp2_block_loop": ["sdpa-basic", "sdpa-causal-sq"],
    "sdpa_prescaled_query_backend": ["sdpa-basic"],
    "flash_cb_sliding_mask": ["fl-window-16", "fl-window-causal-16", "fl-causal-window-20-sq-lt-sk"],
    "flash_rotating_window": ["fl-window-16", "fl-window-00", "fl-window-10-3-sq-gt-sk"],
    "flash_onnx_softcap_after_mask": ["fl-softcap-causal-alibi"],
    "flash_decode_head_tiles": ["fl-decode-gqa-12-2", "fl-decode-gqa-10-2-causal"],
    "flash_fused_causal_gate": ["fl-causal-sq-lt-sk", "fl-causal-sq-gt-sk", "fl-causal-window-20-sq-lt-sk"],
    "flash_single_m_block_grid": ["fl-rows-gt-64-gqa", "fl-window-16"],
    "flash_splitkv_lse_head_stride": ["fl-basic", "fl-gqa-6-3"],
    "flash_alibi_key_position": ["fl-alibi-noncausal", "fl-alibi-gqa"],
    "flash_query_offset_lo": ["fl-basic", "fl-causal-sq-lt-sk"],
    "bwd_softmax_no_grad": ["bwd-2d"],
    "bwd_split_block_pad": ["bwd-2d", "bwd-3d-mask2d-dead"],
    "bwd_lse_log2_units": ["bwd-2d"],
    "bwd_causal_start_m": ["bwd-2d", "bwd-causal-br"],
    "bwd_cached_dq_buffer": ["bwd-2d"],
    "bwd_delta_half_accum": ["bwd-2d", "bwd-4d-mqa-perbatch"],
    "bwd_prescaled_k_bf16": ["bwd-2d", "bwd-scale"],
    "bwd_value_tile_width": ["bwd-dv-gt-d"],
}


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------------
# References (float64), written from the contracts.

def _softmax_rows(s):
    """Row softmax of float64 scores with -inf for dropped keys; rows with no finite score give 0."""
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    e = np.exp(s - np.where(alive, m, 0.0))
    e = np.where(np.isneginf(s), 0.0, e)
    tot = e.sum(axis=-1, keepdims=True)
    return np.where(alive, e / np.where(alive, tot, 1.0), 0.0)


def ref_refimpl(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    return np.matmul(_softmax_rows(s), v)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (x.detach().double().numpy() for x in (query, key, value))
    hq, hkv = q.shape[1], k.shape[1]
    k = np.repeat(k, hq // hkv, axis=1)
    v = np.repeat(v, hq // hkv, axis=1)
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if is_causal:
        L, S = s.shape[-2:]
        s = np.where(np.arange(S)[None, :] <= np.arange(L)[:, None], s, -np.inf)
    if attn_mask is not None:
        m = attn_mask.detach().numpy()
        if m.dtype == np.bool_:
            s = np.where(np.broadcast_to(m, s.shape), s, -np.inf)
        else:
            s = s + m.astype(np.float64)
    return np.matmul(_softmax_rows(s), v)


def flash_keep(sq, sk, causal, window):
    left, right = window
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    keep = np.ones((sq, sk), dtype=bool)
    if causal:
        keep &= j <= i
    if right >= 0:
        keep &= j <= i + right
    if left >= 0:
        keep &= j >= i - left
    return keep


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    qn, kn, vn = (x.detach().double().numpy().transpose(0, 2, 1, 3) for x in (q, k, v))
    b, hq, sq, d = qn.shape
    hkv, sk = kn.shape[1], kn.shape[2]
    kn = np.repeat(kn, hq // hkv, axis=1)
    vn = np.repeat(vn, hq // hkv, axis=1)
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    s = np.matmul(qn, np.swapaxes(kn, -1, -2)) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy()
        sl = sl.reshape(1, hq, 1, 1) if sl.ndim == 1 else sl.reshape(b, hq, 1, 1)
        dist = np.abs(np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :])
        s = s - sl * dist
    s = np.where(flash_keep(sq, sk, causal, window_size), s, -np.inf)
    return np.matmul(_softmax_rows(s), vn).transpose(0, 2, 1, 3)


def _sum_to(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def ref_backward(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    p = _softmax_rows(s)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return dq, _sum_to(dk, k.shape), _sum_to(dv, v.shape)


def autograd_backward(q, k, v, d_out, mask=None, scale=None):
    """torch autograd of the same forward (float64), used to cross-check ref_backward."""
    qt, kt, vt = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-1, -2)) * sc
    if mask is not None:
        keep = torch.tensor(np.broadcast_to(mask, tuple(s.shape)).copy())
    else:
        keep = torch.ones(tuple(s.shape), dtype=torch.bool)
    alive = keep.any(dim=-1, keepdim=True)
    s = s.masked_fill(~keep, float("-inf")).masked_fill(~alive, 0.0)
    p = torch.softmax(s, dim=-1) * alive
    out = torch.matmul(p, vt)
    (out * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------
# Cases.

def _rng(seed):
    return np.random.default_rng(seed)


def _prefix_mask(lengths, sk, shape):
    m = np.arange(sk)[None, :] < np.asarray(lengths)[:, None]
    return m.reshape(shape)


def _random_mask(rng, shape, p=0.7, dead_row=None):
    m = rng.random(shape) < p
    if dead_row is not None:
        m[..., dead_row, :] = False
    return m


def _br_causal(sq, sk):
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)


def numpy_cases():
    cases = []

    def add(name, q, k, v, mask=None, scale=None, f64only=False):
        cases.append(dict(name=name, args=(q, k, v), kw=dict(mask=mask, scale=scale), f64only=f64only))

    r = _rng(901)
    add("np-2d-basic", r.standard_normal((40, 16)), r.standard_normal((53, 16)), r.standard_normal((53, 16)))
    r = _rng(902)
    add("np-3d-mask2d-dead", r.standard_normal((2, 45, 24)), r.standard_normal((2, 61, 24)),
        r.standard_normal((2, 61, 20)), mask=_random_mask(r, (45, 61), dead_row=3))
    r = _rng(903)
    add("np-4d-keypad", r.standard_normal((2, 3, 50, 32)), r.standard_normal((2, 3, 77, 32)),
        r.standard_normal((2, 3, 77, 16)), mask=_prefix_mask([60, 77], 77, (2, 1, 1, 77)))
    r = _rng(904)
    add("np-4d-keypad-zero-len", r.standard_normal((2, 2, 30, 16)), r.standard_normal((2, 2, 40, 16)),
        r.standard_normal((2, 2, 40, 16)), mask=_prefix_mask([0, 27], 40, (2, 1, 1, 40)))
    r = _rng(905)
    add("np-4d-perbatch", r.standard_normal((2, 4, 30, 16)), r.standard_normal((2, 4, 40, 16)),
        r.standard_normal((2, 4, 40, 24)), mask=_random_mask(r, (2, 1, 30, 40), dead_row=7))
    r = _rng(906)
    add("np-3d-keypad", r.standard_normal((3, 33, 16)), r.standard_normal((3, 70, 16)),
        r.standard_normal((3, 70, 16)), mask=_prefix_mask([70, 41, 9], 70, (3, 1, 70)))
    r = _rng(907)
    add("np-causal-tl", r.standard_normal((1, 64, 32)), r.standard_normal((1, 64, 32)),
        r.standard_normal((1, 64, 32)), mask=np.tril(np.ones((64, 64), dtype=bool)))
    r = _rng(908)
    add("np-causal-br", r.standard_normal((2, 20, 16)), r.standard_normal((2, 83, 16)),
        r.standard_normal((2, 83, 16)), mask=_br_causal(20, 83))
    r = _rng(909)
    add("np-sq-gt-sk-br", r.standard_normal((2, 75, 16)), r.standard_normal((2, 30, 16)),
        r.standard_normal((2, 30, 12)), mask=_br_causal(75, 30))
    r = _rng(910)
    i, j = np.arange(100)[:, None], np.arange(100)[None, :]
    add("np-band", r.standard_normal((100, 16)), r.standard_normal((100, 16)), r.standard_normal((100, 16)),
        mask=np.abs(i - j) <= 10)
    r = _rng(911)
    add("np-decode", r.standard_normal((2, 3, 1, 32)), r.standard_normal((2, 3, 129, 32)),
        r.standard_normal((2, 3, 129, 32)))
    r = _rng(912)
    add("np-dv-gt-d", r.standard_normal((2, 37, 8)), r.standard_normal((2, 67, 8)), r.standard_normal((2, 67, 40)))
    r = _rng(913)
    add("np-explicit-scale", r.standard_normal((2, 2, 45, 16)), r.standard_normal((2, 2, 60, 16)),
        r.standard_normal((2, 2, 60, 16)), mask=_random_mask(r, (2, 2, 45, 60), dead_row=0), scale=0.37)
    r = _rng(914)
    add("np-long-200", r.standard_normal((200, 64)), r.standard_normal((200, 64)), r.standard_normal((200, 64)))
    r = _rng(915)
    add("np-large-logits", 10 * r.standard_normal((2, 30, 32)), 10 * r.standard_normal((2, 50, 32)),
        r.standard_normal((2, 50, 16)), scale=1.0, f64only=True)
    r = _rng(916)
    add("np-very-negative", 50 + 0.01 * r.standard_normal((25, 30)), -50 + 0.01 * r.standard_normal((41, 30)),
        r.standard_normal((41, 16)), scale=1.0, f64only=True)
    return cases


def _t(x):
    return torch.tensor(x)


def sdpa_cases():
    cases = []

    def add(name, q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, f64only=False):
        cases.append(dict(name=name, args=(q, k, v), kw=dict(attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                                                             enable_gqa=enable_gqa), f64only=f64only))

    def qkv(r, b, hq, hkv, L, S, E, Ev=None):
        return (r.standard_normal((b, hq, L, E)), r.standard_normal((b, hkv, S, E)),
                r.standard_normal((b, hkv, S, Ev or E)))

    r = _rng(921)
    add("sdpa-basic", *qkv(r, 2, 3, 3, 40, 53, 16))
    r = _rng(922)
    add("sdpa-bool-b1", *qkv(r, 2, 3, 3, 40, 53, 16), attn_mask=_random_mask(r, (2, 1, 40, 53), dead_row=5))
    r = _rng(923)
    add("sdpa-bool-full", *qkv(r, 2, 2, 2, 30, 45, 32), attn_mask=_random_mask(r, (2, 2, 30, 45), dead_row=0))
    r = _rng(924)
    q, k, v = qkv(r, 2, 2, 2, 33, 47, 16)
    bias = r.standard_normal((2, 1, 33, 47))
    bias[r.random((2, 1, 33, 47)) < 0.2] = -np.inf
    bias[..., 4, :] = -np.inf
    add("sdpa-additive-finite", q, k, v, attn_mask=bias, scale=0.5)
    r = _rng(925)
    add("sdpa-causal-sq", *qkv(r, 1, 2, 2, 70, 70, 32), is_causal=True)
    r = _rng(926)
    add("sdpa-causal-sq-lt-sk", *qkv(r, 2, 2, 2, 20, 67, 16), is_causal=True)
    r = _rng(927)
    add("sdpa-causal-sq-gt-sk", *qkv(r, 1, 2, 2, 75, 30, 16), is_causal=True)
    r = _rng(928)
    add("sdpa-gqa-6-3", *qkv(r, 2, 6, 3, 25, 40, 16), enable_gqa=True)
    r = _rng(929)
    add("sdpa-gqa-8-2-causal", *qkv(r, 1, 8, 2, 50, 50, 16), is_causal=True, enable_gqa=True)
    r = _rng(930)
    add("sdpa-gqa-12-4-bool", *qkv(r, 2, 12, 4, 20, 35, 16), attn_mask=_random_mask(r, (2, 1, 20, 35)),
        enable_gqa=True)
    r = _rng(931)
    add("sdpa-mqa", *qkv(r, 2, 4, 1, 15, 60, 16), enable_gqa=True)
    r = _rng(932)
    add("sdpa-dv-ne-d-causal", *qkv(r, 2, 2, 2, 36, 36, 32, 48), is_causal=True)
    r = _rng(933)
    add("sdpa-dv-lt-d", *qkv(r, 1, 3, 3, 20, 50, 48, 16))
    r = _rng(934)
    add("sdpa-decode", *qkv(r, 2, 4, 4, 1, 129, 32))
    r = _rng(935)
    add("sdpa-scale-bool", *qkv(r, 2, 2, 2, 30, 30, 16), attn_mask=_random_mask(r, (30, 30)), scale=0.2)
    r = _rng(936)
    add("sdpa-d64", *qkv(r, 2, 2, 2, 40, 70, 64))
    r = _rng(937)
    bias = np.where(r.random((1, 1, 26, 39)) < 0.3, -np.inf, 0.0)
    add("sdpa-additive-neginf-only", *qkv(r, 1, 2, 2, 26, 39, 16), attn_mask=bias)
    r = _rng(938)
    q, k, v = qkv(r, 1, 2, 2, 30, 50, 32)
    add("sdpa-large-logits", 10 * q, 10 * k, v, scale=1.0, f64only=True)
    r = _rng(939)
    q, k, v = qkv(r, 2, 2, 2, 24, 36, 16)
    add("sdpa-large-bias", q, k, v, attn_mask=np.where(r.random((2, 1, 24, 36)) < 0.4, -3e4, 0.0), f64only=True)
    return cases


def flash_cases():
    cases = []

    def add(name, b, sq, sk, hq, hkv, d, dv=None, seed=0, f64only=False, big=1.0, **kw):
        r = _rng(seed)
        q = big * r.standard_normal((b, sq, hq, d))
        k = big * r.standard_normal((b, sk, hkv, d))
        v = r.standard_normal((b, sk, hkv, dv or d))
        if isinstance(kw.get("alibi_slopes"), str):
            shape = (hq,) if kw["alibi_slopes"] == "h" else (b, hq)
            kw["alibi_slopes"] = torch.tensor(0.05 + 0.5 * r.random(shape), dtype=torch.float32)
        cases.append(dict(name=name, args=(q, k, v), kw=kw, f64only=f64only))

    add("fl-basic", 2, 40, 53, 3, 3, 16, seed=941)
    add("fl-causal-sq", 1, 64, 64, 2, 2, 32, seed=942, causal=True)
    add("fl-causal-sq-lt-sk", 2, 20, 83, 2, 2, 16, seed=943, causal=True)
    add("fl-causal-sq-gt-sk", 1, 75, 30, 2, 2, 16, seed=944, causal=True)
    add("fl-decode-causal", 2, 1, 129, 4, 4, 32, seed=945, causal=True)
    add("fl-window-16", 1, 100, 100, 2, 2, 16, seed=946, window_size=(16, -1))
    add("fl-window-causal-16", 1, 100, 100, 2, 2, 16, seed=947, causal=True, window_size=(16, -1))
    add("fl-window-00", 1, 40, 40, 2, 2, 16, seed=948, window_size=(0, 0))
    add("fl-window-right5", 1, 30, 50, 2, 2, 16, seed=949, window_size=(-1, 5))
    add("fl-window-10-3-sq-gt-sk", 1, 60, 45, 2, 2, 16, seed=950, window_size=(10, 3))
    add("fl-causal-window-20-sq-lt-sk", 1, 30, 90, 2, 2, 16, seed=951, causal=True, window_size=(20, -1))
    add("fl-gqa-window-12", 2, 48, 48, 6, 2, 16, seed=952, causal=True, window_size=(12, -1))
    add("fl-softcap-scale", 1, 40, 40, 2, 2, 16, seed=953, softcap=5.0, softmax_scale=0.5)
    add("fl-softcap-causal-alibi", 1, 50, 50, 4, 4, 16, seed=954, causal=True, softcap=2.0, alibi_slopes="h")
    add("fl-alibi-noncausal", 1, 35, 60, 4, 4, 16, seed=955, alibi_slopes="h")
    add("fl-alibi-b-causal", 2, 40, 40, 3, 3, 16, seed=956, causal=True, alibi_slopes="bh")
    add("fl-alibi-gqa", 1, 30, 50, 8, 2, 16, seed=957, alibi_slopes="h")
    add("fl-gqa-6-3", 2, 25, 40, 6, 3, 16, seed=958)
    add("fl-decode-gqa-12-2", 2, 1, 70, 12, 2, 16, seed=959)
    add("fl-decode-gqa-10-2-causal", 1, 1, 45, 10, 2, 16, seed=960, causal=True)
    add("fl-mqa", 2, 20, 64, 4, 1, 16, seed=961)
    add("fl-dv-gt-d", 1, 30, 50, 2, 2, 16, dv=40, seed=962, causal=True)
    add("fl-dv-lt-d", 1, 30, 50, 2, 2, 48, dv=16, seed=963)
    add("fl-rows-gt-64-gqa", 1, 40, 50, 4, 2, 16, seed=964)
    add("fl-large-logits", 1, 30, 45, 2, 2, 32, seed=965, big=10.0, softmax_scale=1.0, f64only=True)
    return cases


def bwd_cases():
    cases = []

    def add(name, q, k, v, do, mask=None, scale=None, f64only=False):
        cases.append(dict(name=name, args=(q, k, v, do), kw=dict(mask=mask, scale=scale), f64only=f64only))

    def qkvd(r, lead_q, lead_kv, sq, sk, d, dv=None):
        dv = dv or d
        return (r.standard_normal(lead_q + (sq, d)), r.standard_normal(lead_kv + (sk, d)),
                r.standard_normal(lead_kv + (sk, dv)), r.standard_normal(lead_q + (sq, dv)))

    r = _rng(971)
    add("bwd-2d", *qkvd(r, (), (), 40, 53, 16))
    r = _rng(972)
    add("bwd-3d-mask2d-dead", *qkvd(r, (2,), (2,), 45, 61, 24, 20), mask=_random_mask(r, (45, 61), dead_row=2))
    r = _rng(973)
    add("bwd-4d-mqa-perbatch", *qkvd(r, (2, 3), (2, 1), 30, 50, 16), mask=_random_mask(r, (2, 1, 30, 50)))
    r = _rng(974)
    add("bwd-4d-keypad-zero", *qkvd(r, (2, 2), (2, 2), 25, 40, 16), mask=_prefix_mask([0, 27], 40, (2, 1, 1, 40)))
    r = _rng(975)
    add("bwd-causal-tl", *qkvd(r, (1,), (1,), 64, 64, 32), mask=np.tril(np.ones((64, 64), dtype=bool)))
    r = _rng(976)
    add("bwd-causal-br", *qkvd(r, (2,), (2,), 20, 83, 16), mask=_br_causal(20, 83))
    r = _rng(977)
    add("bwd-dv-gt-d", *qkvd(r, (2,), (2,), 37, 67, 8, 24))
    r = _rng(978)
    i, j = np.arange(30)[:, None], np.arange(45)[None, :]
    add("bwd-scale", *qkvd(r, (2, 2), (2, 2), 30, 45, 16), mask=np.abs(i + 15 - j) <= 8, scale=0.3)
    r = _rng(979)
    add("bwd-decode", *qkvd(r, (2, 3), (2, 3), 1, 129, 32))
    r = _rng(980)
    add("bwd-sq-gt-sk", *qkvd(r, (2,), (2,), 75, 30, 16), mask=_br_causal(75, 30))
    r = _rng(981)
    add("bwd-dv-lt-d", *qkvd(r, (2,), (2,), 33, 47, 48, 16))
    return cases


# ----------------------------------------------------------------------------------------------------
# Running.

def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    den = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return num / den if den > 0 else num


def _to_dtype_np(x, dt):
    return None if x is None else np.asarray(x).astype(dt) if np.asarray(x).dtype != np.bool_ else np.asarray(x)


def _prepare(api, case, dt):
    """Inputs for one call (fresh copies) and the float64 reference computed on the rounded inputs."""
    np_dt = np.float64 if dt == "float64" else np.float32
    if api in ("refimpl", "numpy-backward"):
        args = tuple(np.asarray(a, dtype=np_dt).copy() for a in case["args"])
        kw = dict(case["kw"])
        if api == "refimpl":
            ref = ref_refimpl(*args, **kw)
        else:
            ref = ref_backward(*args, **kw)
        return args, kw, ref
    t_dt = torch.float64 if dt == "float64" else torch.float32
    args = tuple(torch.tensor(np.asarray(a, dtype=np_dt)) for a in case["args"])
    kw = dict(case["kw"])
    if api == "torch-sdpa":
        m = kw.get("attn_mask")
        if m is not None:
            kw["attn_mask"] = torch.tensor(m) if m.dtype == np.bool_ else torch.tensor(m.astype(np_dt))
        ref = ref_sdpa(*args, **kw)
    else:
        ref = ref_flash(*args, **kw)
    assert all(a.dtype == t_dt for a in args)
    return args, kw, ref


def _snapshot(args, kw):
    snap = []
    for x in list(args) + [kw.get("mask"), kw.get("attn_mask")]:
        if isinstance(x, torch.Tensor):
            snap.append(x.clone())
        elif isinstance(x, np.ndarray):
            snap.append(x.copy())
        else:
            snap.append(x)
    return snap


def _unchanged(args, kw, snap):
    cur = list(args) + [kw.get("mask"), kw.get("attn_mask")]
    for a, b in zip(cur, snap):
        if isinstance(a, torch.Tensor):
            if not torch.equal(a, b):
                return False
        elif isinstance(a, np.ndarray):
            if not np.array_equal(a, b):
                return False
    return True


def run_one(fn, api, case, dt):
    """Worst relative error of fn over two identical calls (inf on error/shape/dtype/non-finite), plus notes."""
    worst, notes = 0.0, []
    for _ in range(2):
        args, kw, ref = _prepare(api, case, dt)
        snap = _snapshot(args, kw)
        try:
            out = fn(*args, **kw)
        except Exception as exc:  # noqa: BLE001 - any failure of a kernel is a difference
            return math.inf, ["exception: %s: %s" % (type(exc).__name__, exc)]
        if not _unchanged(args, kw, snap):
            notes.append("modified its inputs")
            worst = math.inf
        if api == "numpy-backward":
            if not (isinstance(out, tuple) and len(out) == 3):
                return math.inf, ["did not return (dq, dk, dv)"]
            for g, r, a in zip(out, ref, args[:3]):
                if not isinstance(g, np.ndarray) or g.dtype != a.dtype or g.shape != a.shape:
                    notes.append("gradient dtype/shape")
                    worst = math.inf
                else:
                    worst = max(worst, rel_err(g, r))
        else:
            want_dtype = args[0].dtype
            if isinstance(out, torch.Tensor):
                ok_type = api != "refimpl"
                got_dtype = out.dtype
                out_np = out.detach().numpy()
            else:
                ok_type = api == "refimpl" and isinstance(out, np.ndarray)
                got_dtype = getattr(out, "dtype", None)
                out_np = out
            if not ok_type or got_dtype != want_dtype:
                notes.append("output type/dtype")
                worst = math.inf
            else:
                worst = max(worst, rel_err(out_np, ref))
    return worst, notes


CASES = {"refimpl": numpy_cases, "torch-sdpa": sdpa_cases, "flash-attn": flash_cases,
         "numpy-backward": bwd_cases}


def run_module(mod, api, fns=None):
    """{fn: {(case, dtype): (err, notes)}} for the CATALOG kernels of mod (or the subset fns)."""
    results = {}
    cases = CASES[api]()
    for entry in mod.CATALOG:
        fn_name = entry["fn"]
        if fns is not None and fn_name not in fns:
            continue
        fn = getattr(mod, fn_name)
        res = {}
        for case in cases:
            for dt in ("float64", "float32"):
                if dt == "float32" and case["f64only"]:
                    continue
                res[(case["name"], dt)] = run_one(fn, api, case, dt)
        results[fn_name] = res
    return results


# ----------------------------------------------------------------------------------------------------
# Static checks.

SECTION_RE = re.compile(r"^# --- kernel: (\w+) ---\s*$")


def bug_comments(path):
    """{fn: number of '# BUG:' lines in its section}, and the count outside any section."""
    counts, current, outside = {}, None, 0
    with open(path) as fh:
        for line in fh:
            m = SECTION_RE.match(line)
            if m:
                current = m.group(1)
                counts.setdefault(current, 0)
                continue
            if line.startswith("API = "):
                current = None
            if "# BUG:" in line:
                if current is None:
                    outside += 1
                else:
                    counts[current] += 1
    return counts, outside


def check_catalog(mod, api, path, problems):
    kebab = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
    src_re = re.compile(r"^([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)#(\d+)$")
    counts, outside = bug_comments(path)
    if outside:
        problems.append("%s: %d '# BUG:' comment(s) outside kernel sections" % (path, outside))
    for e in mod.CATALOG:
        tag = "%s:%s" % (os.path.basename(path), e.get("name"))
        if set(e) != CATALOG_KEYS:
            problems.append("%s: CATALOG keys %s" % (tag, sorted(set(e) ^ CATALOG_KEYS)))
            continue
        if e["api"] != api:
            problems.append("%s: api %r" % (tag, e["api"]))
        if not callable(getattr(mod, e["fn"], None)):
            problems.append("%s: fn %r missing" % (tag, e["fn"]))
        if e["dtype"] not in ("float64", "float32"):
            problems.append("%s: dtype %r" % (tag, e["dtype"]))
        if not set(e["features"]) <= FEATURE_SET:
            problems.append("%s: features %r" % (tag, e["features"]))
        n_bug = counts.get(e["fn"])
        if n_bug is None:
            problems.append("%s: no '# --- kernel: %s ---' section" % (tag, e["fn"]))
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")):
                problems.append("%s: correct kernel with bug/parameter/source/report" % tag)
            if n_bug:
                problems.append("%s: correct kernel has %d '# BUG:' comment(s)" % (tag, n_bug))
        else:
            if not (isinstance(e["bug"], str) and kebab.match(e["bug"])):
                problems.append("%s: bug %r not kebab-case" % (tag, e["bug"]))
            if not (isinstance(e["parameter"], str) and "Triggers:" in e["parameter"]):
                problems.append("%s: parameter must state the mistake and its 'Triggers:'" % tag)
            m = src_re.match(e["source"] or "")
            if not m:
                problems.append("%s: source %r" % (tag, e["source"]))
            else:
                ok = ["https://github.com/%s/%s/%s/%s" % (m.group(1), m.group(2), kind, m.group(3))
                      for kind in ("issues", "pull")]
                if e["report"] not in ok:
                    problems.append("%s: report %r does not match source" % (tag, e["report"]))
            if n_bug != 1:
                problems.append("%s: broken kernel has %s '# BUG:' comments (want 1)" % (tag, n_bug))
            if e["fn"] not in TRIGGERS:
                problems.append("%s: no TRIGGERS entry" % tag)


def cross_check_references(problems):
    """The sdpa / flash / backward references against the NumPy one (explicit masks) and torch autograd."""
    worst = 0.0
    for case in sdpa_cases():
        args, kw, ref = _prepare("torch-sdpa", case, "float64")
        m = kw["attn_mask"]
        if m is not None and m.dtype != torch.bool:
            if not bool(torch.all(torch.isneginf(m) | (m == 0))):
                continue
            m = m == 0
        q, k, v = (a.numpy() for a in args)
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, 1), np.repeat(v, g, 1)
        keep = np.ones(q.shape[:2] + (q.shape[2], k.shape[2]), dtype=bool)
        if kw["is_causal"]:
            keep &= np.tril(np.ones((q.shape[2], k.shape[2]), dtype=bool))
        if m is not None:
            keep &= np.broadcast_to(m.numpy(), keep.shape)
        worst = max(worst, rel_err(ref_refimpl(q, k, v, keep, kw["scale"]), ref))
    for case in flash_cases():
        if case["kw"].get("softcap") or case["kw"].get("alibi_slopes") is not None:
            continue
        args, kw, ref = _prepare("flash-attn", case, "float64")
        q, k, v = (a.numpy().transpose(0, 2, 1, 3) for a in args)
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, 1), np.repeat(v, g, 1)
        keep = flash_keep(q.shape[2], k.shape[2], kw.get("causal", False), kw.get("window_size", (-1, -1)))
        out = ref_refimpl(q, k, v, keep, kw.get("softmax_scale")).transpose(0, 2, 1, 3)
        worst = max(worst, rel_err(out, ref))
    for case in bwd_cases():
        args, kw, ref = _prepare("numpy-backward", case, "float64")
        auto = autograd_backward(*args, **kw)
        auto = (auto[0], _sum_to(auto[1], args[1].shape), _sum_to(auto[2], args[2].shape))
        for a, r in zip(auto, ref):
            worst = max(worst, rel_err(a, r))
    if not worst <= 1e-12:
        problems.append("reference cross-check failed: worst relative error %.3g" % worst)
    return worst


def main():
    t0 = time.time()
    problems = []
    xworst = cross_check_references(problems)
    counts = {}
    sources = []
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          "worst %.2g" % xworst)
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    for fname, api in MODULES:
        path = os.path.join(HERE, fname)
        mod = load_module(path, "heldout9_" + fname[:-3])
        check_catalog(mod, api, path, problems)
        names = [e["name"] for e in mod.CATALOG]
        if len(set(names)) != len(names):
            problems.append("%s: duplicate names" % fname)
        results = run_module(mod, api)
        print("%s (%s)" % (fname, api))
        n_broken = n_ok = 0
        for e in mod.CATALOG:
            res = results[e["fn"]]
            w64 = max([err for (c, d), (err, _) in res.items() if d == "float64"] or [0.0])
            w32 = max([err for (c, d), (err, _) in res.items() if d == "float32"] or [0.0])
            status = "ok" if e["correct"] else "broken"
            print("  %-42s %-6s f64 %-9.3g f32 %-9.3g" % (e["name"], status, w64, w32))
            if e["correct"]:
                n_ok += 1
                for (c, d), (err, notes) in res.items():
                    if not err <= TOL_OK[d]:
                        problems.append("%s: correct kernel fails %s/%s: %.3g %s" % (e["name"], c, d, err, notes))
            else:
                n_broken += 1
                sources.append(e["source"])
                dt = e["dtype"]
                trig = TRIGGERS.get(e["fn"], [])
                known = {c for (c, d) in res}
                for c in trig:
                    if c not in known:
                        problems.append("%s: trigger case %r does not exist" % (e["name"], c))
                hit = [c for c in trig if (c, dt) in res and not res[(c, dt)][0] <= TOL_DIFF[dt]]
                if not hit:
                    problems.append("%s: broken kernel does not differ on any of its trigger cases in %s"
                                    % (e["name"], dt))
        counts[fname] = (n_broken, n_ok)
    if len(set(sources)) != len(sources):
        problems.append("a report is cited by more than one broken kernel")
    n_fwd = sum(counts[f][0] for f, _ in MODULES[:3])
    n_bwd = counts["numpy_bwd.py"][0]
    n_ok = sum(c[1] for c in counts.values())
    if n_fwd < 24 or any(counts[f][0] < 7 for f, _ in MODULES[:3]) or n_bwd < 8 or n_ok < 9:
        problems.append("counts too low: %r" % counts)
    elapsed = time.time() - t0
    if problems:
        print("SELF-CHECK FAILED (%.1f s):" % elapsed)
        for p in problems:
            print("  - " + p)
        return 1
    print("SELF-CHECK PASSED (%.1f s): %s" % (elapsed, ", ".join(
        "%s %d broken + %d correct" % (f[:-3], counts[f][0], counts[f][1]) for f, _ in MODULES)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
