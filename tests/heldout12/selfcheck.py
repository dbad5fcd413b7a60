"""Self-check of tests/heldout12: float64 references written from the four contracts, fixed seeded cases,
every broken kernel must differ on its TRIGGERS cases and every correct kernel must match on all cases.

Run: /usr/bin/python3 tests/heldout12/selfcheck.py   (exit status 1 on any problem)
"""
import ast
import importlib.util
import math
import os
import re
import sys
import time
import warnings

import numpy as np
import torch

sys.dont_write_bytecode = True

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [("numpy_fwd", "refimpl"), ("torch_sdpa_fwd", "torch-sdpa"), ("flash_fwd", "flash-attn"),
           ("numpy_bwd", "numpy-backward")]
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}
TOL_OK = {"float64": 1e-10, "float32": 1e-5}
TOL_DIFF = {"float64": 1e-8, "float32": 1e-4}

# ----------------------------------------------------------------------------------------------------------
# references (float64)


def ref_numpy(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = q @ np.swapaxes(k, -1, -2) * sc
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    return p @ v


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (x.detach().double().numpy() for x in (query, key, value))
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    if enable_gqa and Hkv != Hq:
        k = np.repeat(k, Hq // Hkv, axis=1)
        v = np.repeat(v, Hq // Hkv, axis=1)
    sc = 1.0 / math.sqrt(D) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * sc
    if is_causal:
        s = np.where(np.tril(np.ones((Sq, Sk), dtype=bool)), s, -np.inf)
    if attn_mask is not None:
        am = attn_mask.numpy()
        s = np.where(am, s, -np.inf) if am.dtype == bool else s + am.astype(np.float64)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    return p @ v


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (x.detach().double().numpy() for x in (q, k, v))
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    k = np.repeat(k, Hq // Hkv, axis=2)
    v = np.repeat(v, Hq // Hkv, axis=2)
    sc = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    s = np.einsum("bihd,bjhd->bhij", q, k) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    off = Sk - Sq
    i = np.arange(Sq)[:, None] + off
    j = np.arange(Sk)[None, :]
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy().reshape(-1, Hq)[:, :, None, None]
        s = s - sl * np.abs(i - j)
    left, right = window_size
    if causal:
        right = 0
    keep = np.ones((Sq, Sk), dtype=bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    s = np.where(keep, s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    return np.einsum("bhij,bjhd->bihd", p, v)


def _reduce_to(x, shape):
    extra = x.ndim - len(shape)
    if extra:
        x = x.sum(axis=tuple(range(extra)))
    axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q64, k64, v64, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = q64 @ np.swapaxes(k64, -1, -2) * sc
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    o = p @ v64
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v64, -1, -2)
    ds = p * (dp - (do * o).sum(-1, keepdims=True))
    dq = ds @ k64 * sc
    dk = np.swapaxes(ds, -1, -2) @ q64 * sc
    return _reduce_to(dq, q.shape), _reduce_to(dk, k.shape), _reduce_to(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    """Torch autograd of a plain masked softmax attention (cross-check of ref_bwd; masked rows -> zero)."""
    tq, tk, tv = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = tq @ tk.transpose(-1, -2) * sc
    if mask is not None:
        keep = torch.as_tensor(np.broadcast_to(mask, tuple(s.shape)).copy())
        s = s.masked_fill(~keep, -1e300)
        alive = keep.any(-1, keepdim=True)
    else:
        alive = torch.ones(s.shape[:-1] + (1,), dtype=torch.bool)
    p = torch.softmax(s, -1) * alive
    if mask is not None:
        p = p * keep
    o = p @ tv
    (o * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()

# ----------------------------------------------------------------------------------------------------------
# cases


def _rng(seed):
    return np.random.default_rng(seed)


def numpy_cases():
    cases = {}
    r = _rng(1)
    cases["np-2d-plain"] = dict(q=r.standard_normal((20, 16)), k=r.standard_normal((33, 16)),
                                v=r.standard_normal((33, 24)), mask=None, scale=None)
    r = _rng(2)
    m = r.random((3, 40, 70)) < 0.7
    m[1, 5, :] = False
    cases["np-3d-random-mask-dead-row"] = dict(q=r.standard_normal((3, 40, 16)), k=r.standard_normal((3, 70, 16)),
                                               v=r.standard_normal((3, 70, 12)), mask=m, scale=0.37)
    r = _rng(3)
    m = np.ones((2, 1, 1, 100), dtype=bool)
    m[0, ..., :45] = False
    cases["np-4d-left-pad-45"] = dict(q=r.standard_normal((2, 3, 17, 32)), k=r.standard_normal((2, 3, 100, 32)),
                                      v=r.standard_normal((2, 3, 100, 16)), mask=m, scale=None)
    r = _rng(4)
    i = np.arange(90)[:, None]
    j = np.arange(90)[None, :]
    m = np.stack([(j <= i) & (j >= i - 8), (j <= i) & (j >= i - 20)])[None]
    cases["np-4d-band-per-head"] = dict(q=r.standard_normal((1, 2, 90, 16)), k=r.standard_normal((1, 2, 90, 16)),
                                        v=r.standard_normal((1, 2, 90, 40)), mask=m, scale=0.5)
    r = _rng(5)
    m = np.zeros((2, 1, 1, 129), dtype=bool)
    m[0, ..., :97] = True
    cases["np-decode-right-pad-empty"] = dict(q=r.standard_normal((2, 4, 1, 64)), k=r.standard_normal((2, 4, 129, 64)),
                                              v=r.standard_normal((2, 4, 129, 64)), mask=m, scale=None)
    r = _rng(6)
    cases["np-scale-one"] = dict(q=r.standard_normal((2, 30, 8)), k=r.standard_normal((2, 45, 8)),
                                 v=r.standard_normal((2, 45, 8)), mask=None, scale=1.0)
    r = _rng(7)
    cases["np-extreme-logits"] = dict(q=20 * r.standard_normal((2, 40, 16)), k=20 * r.standard_normal((2, 40, 16)),
                                      v=r.standard_normal((2, 40, 16)), mask=None, scale=None)
    r = _rng(8)
    cases["np-short-keys"] = dict(q=r.standard_normal((4, 9, 24)), k=r.standard_normal((4, 30, 24)),
                                  v=r.standard_normal((4, 30, 20)), mask=r.random((4, 9, 30)) < 0.8, scale=0.3)
    return cases


def sdpa_cases():
    cases = {}

    def t(r, *shape):
        return torch.tensor(r.standard_normal(shape))

    r = _rng(11)
    cases["sdpa-plain"] = dict(query=t(r, 2, 3, 20, 16), key=t(r, 2, 3, 33, 16), value=t(r, 2, 3, 33, 24))
    r = _rng(12)
    m = r.random((2, 2, 25, 40)) < 0.6
    m[1, 0, 3] = False
    cases["sdpa-bool-mask-dead-row"] = dict(query=t(r, 2, 2, 25, 16), key=t(r, 2, 2, 40, 16), value=t(r, 2, 2, 40, 16),
                                            attn_mask=torch.tensor(m), scale=0.3)
    r = _rng(13)
    am = 2.0 * r.standard_normal((1, 1, 30, 30))
    am[0, 0, 4, 10:20] = -np.inf
    cases["sdpa-additive-finite-and-neginf"] = dict(query=t(r, 1, 4, 30, 32), key=t(r, 1, 4, 30, 32),
                                                    value=t(r, 1, 4, 30, 32), attn_mask=torch.tensor(am))
    r = _rng(14)
    cases["sdpa-causal-sq-lt-sk"] = dict(query=t(r, 2, 2, 10, 16), key=t(r, 2, 2, 50, 16), value=t(r, 2, 2, 50, 8),
                                         is_causal=True)
    r = _rng(15)
    cases["sdpa-causal-sq-gt-sk"] = dict(query=t(r, 1, 2, 64, 64), key=t(r, 1, 2, 20, 64), value=t(r, 1, 2, 20, 64),
                                         is_causal=True)
    r = _rng(16)
    pm = np.ones((2, 1, 1, 70), dtype=bool)
    pm[0, ..., 50:] = False
    pm[1, ..., :5] = False
    cases["sdpa-padding-per-batch"] = dict(query=t(r, 2, 2, 16, 16), key=t(r, 2, 2, 70, 16), value=t(r, 2, 2, 70, 16),
                                           attn_mask=torch.tensor(pm))
    r = _rng(17)
    cases["sdpa-gqa-8to2"] = dict(query=t(r, 2, 8, 12, 16), key=t(r, 2, 2, 37, 16), value=t(r, 2, 2, 37, 24),
                                  enable_gqa=True, scale=0.5)
    r = _rng(18)
    cases["sdpa-gqa-6to3-causal"] = dict(query=t(r, 1, 6, 20, 16), key=t(r, 1, 3, 20, 16), value=t(r, 1, 3, 20, 16),
                                         enable_gqa=True, is_causal=True)
    r = _rng(19)
    cases["sdpa-mqa-decode"] = dict(query=t(r, 2, 4, 1, 32), key=t(r, 2, 1, 129, 32), value=t(r, 2, 1, 129, 32),
                                    enable_gqa=True)
    r = _rng(20)
    cases["sdpa-gqa-4to2"] = dict(query=t(r, 1, 4, 15, 16), key=t(r, 1, 2, 40, 16), value=t(r, 1, 2, 40, 16),
                                  enable_gqa=True, scale=1.0)
    return cases


def flash_cases():
    cases = {}

    def t(r, *shape):
        return torch.tensor(r.standard_normal(shape))

    r = _rng(31)
    cases["fa-plain"] = dict(q=t(r, 2, 20, 3, 16), k=t(r, 2, 33, 3, 16), v=t(r, 2, 33, 3, 24))
    r = _rng(32)
    cases["fa-causal-sq-lt-sk"] = dict(q=t(r, 2, 10, 2, 16), k=t(r, 2, 50, 2, 16), v=t(r, 2, 50, 2, 16), causal=True)
    r = _rng(33)
    cases["fa-causal-sq-gt-sk"] = dict(q=t(r, 1, 60, 2, 64), k=t(r, 1, 20, 2, 64), v=t(r, 1, 20, 2, 64), causal=True)
    r = _rng(34)
    cases["fa-gqa-decode-causal"] = dict(q=t(r, 2, 1, 12, 32), k=t(r, 2, 129, 2, 32), v=t(r, 2, 129, 2, 32),
                                         causal=True)
    r = _rng(35)
    cases["fa-window-16-left"] = dict(q=t(r, 1, 40, 2, 16), k=t(r, 1, 70, 2, 16), v=t(r, 1, 70, 2, 16),
                                      window_size=(16, -1))
    r = _rng(36)
    cases["fa-window-right-5"] = dict(q=t(r, 1, 50, 2, 16), k=t(r, 1, 50, 2, 16), v=t(r, 1, 50, 2, 40),
                                      window_size=(-1, 5))
    r = _rng(37)
    cases["fa-window-10-3-sq-gt-sk"] = dict(q=t(r, 2, 70, 2, 16), k=t(r, 2, 40, 1, 16), v=t(r, 2, 40, 1, 16),
                                            window_size=(10, 3))
    r = _rng(38)
    cases["fa-causal-window-20"] = dict(q=t(r, 1, 30, 4, 16), k=t(r, 1, 90, 2, 16), v=t(r, 1, 90, 2, 16),
                                        causal=True, window_size=(20, -1))
    r = _rng(39)
    cases["fa-softcap-5-scale"] = dict(q=3 * t(r, 2, 24, 2, 32), k=3 * t(r, 2, 24, 2, 32), v=t(r, 2, 24, 2, 32),
                                       softcap=5.0, softmax_scale=0.37)
    r = _rng(40)
    cases["fa-alibi-noncausal"] = dict(q=t(r, 2, 25, 4, 16), k=t(r, 2, 40, 2, 16), v=t(r, 2, 40, 2, 16),
                                       alibi_slopes=torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float32))
    r = _rng(41)
    cases["fa-alibi-bh-causal"] = dict(q=t(r, 2, 15, 3, 16), k=t(r, 2, 45, 3, 16), v=t(r, 2, 45, 3, 16), causal=True,
                                       alibi_slopes=torch.tensor(r.random((2, 3)), dtype=torch.float32))
    r = _rng(42)
    cases["fa-softcap-alibi-causal-square"] = dict(q=2 * t(r, 1, 32, 2, 16), k=2 * t(r, 1, 32, 2, 16),
                                                   v=t(r, 1, 32, 2, 16), causal=True, softcap=3.0,
                                                   alibi_slopes=torch.tensor([0.3, 0.1], dtype=torch.float32))
    r = _rng(43)
    cases["fa-window-8-8-alibi"] = dict(q=t(r, 1, 50, 2, 16), k=t(r, 1, 50, 2, 16), v=t(r, 1, 50, 2, 16),
                                        window_size=(8, 8),
                                        alibi_slopes=torch.tensor([0.2, 0.05], dtype=torch.float32))
    r = _rng(44)
    cases["fa-single-head-decode"] = dict(q=t(r, 3, 1, 1, 16), k=t(r, 3, 64, 1, 16), v=t(r, 3, 64, 1, 16))
    return cases


def bwd_cases():
    cases = {}
    r = _rng(51)
    cases["bwd-2d-plain"] = dict(q=r.standard_normal((20, 16)), k=r.standard_normal((33, 16)),
                                 v=r.standard_normal((33, 24)), d_out=r.standard_normal((20, 24)), mask=None,
                                 scale=None)
    r = _rng(52)
    m = r.random((2, 30, 50)) < 0.6
    m[0, 7, :] = False
    cases["bwd-3d-mask-dead-row"] = dict(q=r.standard_normal((2, 30, 16)), k=r.standard_normal((2, 50, 16)),
                                         v=r.standard_normal((2, 50, 16)), d_out=r.standard_normal((2, 30, 16)),
                                         mask=m, scale=0.37)
    r = _rng(53)
    cm = np.tril(np.ones((30, 30), dtype=bool))
    cases["bwd-4d-causal"] = dict(q=r.standard_normal((2, 3, 30, 16)), k=r.standard_normal((2, 3, 30, 16)),
                                  v=r.standard_normal((2, 3, 30, 16)), d_out=r.standard_normal((2, 3, 30, 16)),
                                  mask=cm, scale=None)
    r = _rng(54)
    pm = np.ones((2, 1, 1, 40), dtype=bool)
    pm[1, ..., 33:] = False
    cases["bwd-mqa-padding"] = dict(q=r.standard_normal((2, 4, 12, 16)), k=r.standard_normal((2, 1, 40, 16)),
                                    v=r.standard_normal((2, 1, 40, 8)), d_out=r.standard_normal((2, 4, 12, 8)),
                                    mask=pm, scale=0.5)
    r = _rng(55)
    cases["bwd-scale-one"] = dict(q=r.standard_normal((2, 25, 8)), k=r.standard_normal((2, 25, 8)),
                                  v=r.standard_normal((2, 25, 8)), d_out=r.standard_normal((2, 25, 8)),
                                  mask=None, scale=1.0)
    r = _rng(56)
    i = np.arange(18)[:, None] + 32
    j = np.arange(50)[None, :]
    bm = (j <= i) & (j >= i - 12)
    cases["bwd-dv-gt-d-band"] = dict(q=r.standard_normal((1, 2, 18, 8)), k=r.standard_normal((1, 2, 50, 8)),
                                     v=r.standard_normal((1, 2, 50, 40)), d_out=r.standard_normal((1, 2, 18, 40)),
                                     mask=bm, scale=None)
    return cases


# Cases on which each broken kernel must differ (its documented trigger); produced by the scratch fix-check
# and kept equal to the list of cases where it differs. Every other case is allowed to conform.
TRIGGERS = {
    # numpy_fwd
    "np-fa1-online-no-rescale": [
        "np-2d-plain", "np-3d-random-mask-dead-row", "np-4d-band-per-head", "np-4d-left-pad-45",
        "np-decode-right-pad-empty", "np-extreme-logits", "np-scale-one",
    ],
    "np-ft-softmax-no-max-shift": ["np-extreme-logits"],
    "np-oasr-empty-tile-nan": ["np-4d-band-per-head", "np-4d-left-pad-45"],
    "np-rabitq-scaled-scores-unused": [
        "np-2d-plain", "np-3d-random-mask-dead-row", "np-4d-band-per-head", "np-4d-left-pad-45",
        "np-decode-right-pad-empty", "np-extreme-logits", "np-short-keys",
    ],
    "np-mlc-fp16-qk": [
        "np-2d-plain", "np-3d-random-mask-dead-row", "np-4d-band-per-head", "np-4d-left-pad-45",
        "np-decode-right-pad-empty", "np-extreme-logits", "np-scale-one", "np-short-keys",
    ],
    "np-iree-exp2-plain-scale": [
        "np-2d-plain", "np-3d-random-mask-dead-row", "np-4d-band-per-head", "np-4d-left-pad-45",
        "np-decode-right-pad-empty", "np-extreme-logits", "np-scale-one", "np-short-keys",
    ],
    # torch_sdpa_fwd
    "sdpa-mlx-causal-lower-right": ["sdpa-causal-sq-gt-sk", "sdpa-causal-sq-lt-sk"],
    "sdpa-onnxscript-bool-as-bias": ["sdpa-bool-mask-dead-row", "sdpa-padding-per-batch"],
    "sdpa-ddpm-scale-ignored": ["sdpa-bool-mask-dead-row", "sdpa-gqa-4to2", "sdpa-gqa-8to2"],
    "sdpa-ort-bias-scaled": ["sdpa-additive-finite-and-neginf"],
    "sdpa-candle-mask-batch0": ["sdpa-bool-mask-dead-row", "sdpa-padding-per-batch"],
    "sdpa-onnxim-kv-head-div": ["sdpa-gqa-6to3-causal", "sdpa-gqa-8to2", "sdpa-mqa-decode"],
    # flash_fwd
    "flash-cs224n-causal-top-left": [
        "fa-alibi-bh-causal", "fa-causal-sq-gt-sk", "fa-causal-sq-lt-sk", "fa-causal-window-20",
        "fa-gqa-decode-causal",
    ],
    "flash-qanet-heads-reshape": [
        "fa-alibi-bh-causal", "fa-alibi-noncausal", "fa-causal-sq-gt-sk", "fa-causal-sq-lt-sk", "fa-causal-window-20",
        "fa-plain", "fa-softcap-5-scale", "fa-softcap-alibi-causal-square", "fa-window-10-3-sq-gt-sk",
        "fa-window-16-left", "fa-window-8-8-alibi", "fa-window-right-5",
    ],
    "flash-falcon-alibi-query-len": ["fa-alibi-bh-causal", "fa-alibi-noncausal"],
    "flash-mlx-window-one-short": [
        "fa-causal-window-20", "fa-window-10-3-sq-gt-sk", "fa-window-16-left", "fa-window-8-8-alibi",
    ],
    "flash-lalamo-softcap-half-denominator": ["fa-softcap-5-scale", "fa-softcap-alibi-causal-square"],
    "flash-keras-window-drops-causal": ["fa-causal-window-20"],
    # numpy_bwd
    "bwd-tvm-ds-no-delta": [
        "bwd-2d-plain", "bwd-3d-mask-dead-row", "bwd-4d-causal", "bwd-dv-gt-d-band", "bwd-mqa-padding",
        "bwd-scale-one",
    ],
    "bwd-fromscratch-diag-jacobian": [
        "bwd-2d-plain", "bwd-3d-mask-dead-row", "bwd-4d-causal", "bwd-dv-gt-d-band", "bwd-mqa-padding",
        "bwd-scale-one",
    ],
    "bwd-colt5-delta-wrong-axis": [
        "bwd-2d-plain", "bwd-3d-mask-dead-row", "bwd-4d-causal", "bwd-dv-gt-d-band", "bwd-mqa-padding",
        "bwd-scale-one",
    ],
    "bwd-turing-recompute-unmasked": ["bwd-3d-mask-dead-row", "bwd-4d-causal", "bwd-dv-gt-d-band", "bwd-mqa-padding"],
    "bwd-mslk-shared-kv-first-head": ["bwd-mqa-padding"],
    "bwd-mlpack-dq-scale-twice": [
        "bwd-2d-plain", "bwd-3d-mask-dead-row", "bwd-4d-causal", "bwd-dv-gt-d-band", "bwd-mqa-padding",
    ],
}

# ----------------------------------------------------------------------------------------------------------
# running


def load(modname):
    spec = importlib.util.spec_from_file_location("heldout12_" + modname, os.path.join(HERE, modname + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cast(x, dtype):
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        return x.astype(dtype)
    if isinstance(x, torch.Tensor) and x.dtype == torch.float64:
        return x.to(torch.float32 if dtype == np.float32 else torch.float64)
    return x


def _copy(x):
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, torch.Tensor):
        return x.clone()
    return x


def _same(a, b):
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return True


def _rel(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    den = np.linalg.norm(ref)
    return np.linalg.norm(out - ref) / (den if den > 0 else 1.0)


def run_case(modname, fn, case, dtype):
    """Returns the worse relative error over two calls (inf on exception, wrong dtype/shape, non-finite)."""
    args = {key: _cast(val, dtype) for key, val in case.items()}
    worst = 0.0
    for _ in range(2):
        call = {key: _copy(val) for key, val in args.items()}
        try:
            res = fn(**call)
        except Exception:
            return math.inf
        for key in args:
            if not _same(args[key], call[key]):
                return math.inf
        ref_in = {key: (val.astype(np.float64) if isinstance(val, np.ndarray) and val.dtype == np.float32 else
                        (val.double() if isinstance(val, torch.Tensor) and val.dtype == torch.float32 else val))
                  for key, val in args.items()}
        if modname == "numpy_bwd":
            refs = ref_bwd(**ref_in)
            if not isinstance(res, tuple) or len(res) != 3:
                return math.inf
            errs = []
            for got, want, inp in zip(res, refs, (args["q"], args["k"], args["v"])):
                if not isinstance(got, np.ndarray) or got.dtype != inp.dtype or got.shape != inp.shape:
                    return math.inf
                errs.append(_rel(got, want))
            worst = max(worst, max(errs))
            continue
        if modname == "numpy_fwd":
            ref = ref_numpy(**ref_in)
            if not isinstance(res, np.ndarray) or res.dtype != args["q"].dtype:
                return math.inf
            worst = max(worst, _rel(res, ref))
            continue
        if modname == "torch_sdpa_fwd":
            ref = ref_sdpa(**ref_in)
            qd = args["query"].dtype
        else:
            ref = ref_flash(**ref_in)
            qd = args["q"].dtype
        if not isinstance(res, torch.Tensor) or res.dtype != qd:
            return math.inf
        worst = max(worst, _rel(res.detach().numpy(), ref))
    return worst


CASES = {"numpy_fwd": numpy_cases, "torch_sdpa_fwd": sdpa_cases, "flash_fwd": flash_cases, "numpy_bwd": bwd_cases}


def cross_check():
    """sdpa/flash references vs the NumPy one with explicit masks; backward reference vs torch autograd."""
    worst = 0.0
    for case in sdpa_cases().values():
        a = ref_sdpa(**case)
        q, k, v = (case[x].double().numpy() for x in ("query", "key", "value"))
        B, Hq, Sq, D = q.shape
        if case.get("enable_gqa"):
            k = np.repeat(k, Hq // k.shape[1], axis=1)
            v = np.repeat(v, Hq // v.shape[1], axis=1)
        Sk = k.shape[2]
        keep = np.ones((B, Hq, Sq, Sk), dtype=bool)
        if case.get("is_causal"):
            keep &= np.tril(np.ones((Sq, Sk), dtype=bool))
        am = case.get("attn_mask")
        if am is not None and am.dtype == torch.bool:
            keep &= am.numpy()
        if am is not None and am.dtype != torch.bool:
            finite = np.isfinite(am.numpy())
            if np.all(np.abs(am.numpy()[finite]) == 0):
                keep &= finite
            else:
                continue
        worst = max(worst, _rel(a, ref_numpy(q, k, v, keep, case.get("scale"))))
    for case in flash_cases().values():
        if case.get("softcap") or case.get("alibi_slopes") is not None:
            continue
        a = ref_flash(**case)
        q, k, v = (case[x].double().numpy() for x in ("q", "k", "v"))
        B, Sq, Hq, D = q.shape
        Sk, Hkv = k.shape[1], k.shape[2]
        kk = np.repeat(k, Hq // Hkv, axis=2).transpose(0, 2, 1, 3)
        vv = np.repeat(v, Hq // Hkv, axis=2).transpose(0, 2, 1, 3)
        i = np.arange(Sq)[:, None] + Sk - Sq
        j = np.arange(Sk)[None, :]
        left, right = case.get("window_size", (-1, -1))
        keep = np.ones((Sq, Sk), dtype=bool)
        if case.get("causal"):
            keep &= j <= i
        if left >= 0:
            keep &= j >= i - left
        if right >= 0:
            keep &= j <= i + right
        b = ref_numpy(q.transpose(0, 2, 1, 3), kk, vv, keep, case.get("softmax_scale")).transpose(0, 2, 1, 3)
        worst = max(worst, _rel(a, b))
    for case in bwd_cases().values():
        for got, want in zip(ref_bwd(**case), autograd_bwd(**case)):
            worst = max(worst, _rel(got, want))
    return worst


def bug_sections(path):
    """Per-section count of '# BUG:' comments, and the count outside any section."""
    sections, outside, current = {}, 0, None
    with open(path) as fh:
        for line in fh:
            mk = re.match(r"# --- kernel: (\w+) ---", line)
            if mk:
                current = mk.group(1)
                sections[current] = 0
                continue
            if line.startswith("CATALOG"):
                current = None
            if "# BUG:" in line:
                if current is None:
                    outside += 1
                else:
                    sections[current] += 1
    return sections, outside


def check_catalog(modname, api, mod, problems):
    cat = mod.CATALOG
    names = set()
    broken = sum(1 for e in cat if not e["correct"])
    if broken < 6 or len(cat) - broken < 2:
        problems.append(f"{modname}: needs >= 6 broken and >= 2 correct")
    sections, outside = bug_sections(os.path.join(HERE, modname + ".py"))
    if outside:
        problems.append(f"{modname}: {outside} '# BUG:' outside kernel sections")
    for e in cat:
        if set(e) != KEYS:
            problems.append(f"{e.get('name')}: keys {sorted(set(e) ^ KEYS)}")
        if e["name"] in names:
            problems.append(f"{e['name']}: duplicate name")
        names.add(e["name"])
        if e["api"] != api or not callable(getattr(mod, e["fn"], None)):
            problems.append(f"{e['name']}: api/fn")
        if not set(e["features"]) <= FEATURES or e["dtype"] not in TOL_OK:
            problems.append(f"{e['name']}: features/dtype")
        nbug = sections.get(e["fn"])
        if nbug is None:
            problems.append(f"{e['name']}: no section for {e['fn']}")
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")) or nbug:
                problems.append(f"{e['name']}: correct kernel with bug fields or '# BUG:'")
            if e["name"] in TRIGGERS:
                problems.append(f"{e['name']}: correct kernel in TRIGGERS")
        else:
            if nbug != 1:
                problems.append(f"{e['name']}: {nbug} '# BUG:' in its section")
            if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or ""):
                problems.append(f"{e['name']}: bug not kebab-case")
            if "Triggers:" not in (e["parameter"] or ""):
                problems.append(f"{e['name']}: no 'Triggers:'")
            src = e["source"] or ""
            mm = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", src)
            if not mm or not re.fullmatch(rf"https://github\.com/{re.escape(mm.group(1))}/(issues|pull)/{mm.group(2)}",
                                          e["report"] or ""):
                problems.append(f"{e['name']}: source/report disagree")
            if not TRIGGERS.get(e["name"]):
                problems.append(f"{e['name']}: no TRIGGERS entry")
    return cat


def main():
    t0 = time.time()
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    np.seterr(all="ignore")
    problems = []
    xc = cross_check()
    if xc > 1e-12:
        problems.append(f"reference cross-check {xc:.2e}")
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          f"worst {xc:.2g}")
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    reports, summary = set(), []
    all_names = set()
    for modname, api in MODULES:
        mod = load(modname)
        cat = check_catalog(modname, api, mod, problems)
        cases = CASES[modname]()
        print(f"{modname}.py ({api})")
        for e in cat:
            all_names.add(e["name"])
            if e["report"]:
                if e["report"] in reports:
                    problems.append(f"{e['name']}: report cited twice")
                reports.add(e["report"])
            fn = getattr(mod, e["fn"])
            errs = {dt: {cn: run_case(modname, fn, c, dt) for cn, c in cases.items()}
                    for dt in (np.float64, np.float32)}
            w64, w32 = max(errs[np.float64].values()), max(errs[np.float32].values())
            if e["correct"]:
                if w64 > TOL_OK["float64"] or w32 > TOL_OK["float32"]:
                    bad = [cn for cn in cases if errs[np.float64][cn] > TOL_OK["float64"]
                           or errs[np.float32][cn] > TOL_OK["float32"]]
                    problems.append(f"{e['name']}: correct kernel off on {bad}")
            else:
                dt = np.float64 if e["dtype"] == "float64" else np.float32
                tol = TOL_DIFF[e["dtype"]]
                differs = sorted(cn for cn in cases if errs[dt][cn] > tol)
                want = sorted(TRIGGERS.get(e["name"], []))
                missing = [cn for cn in want if cn not in cases or errs[dt][cn] <= tol]
                if missing:
                    problems.append(f"{e['name']}: does not differ on trigger cases {missing}")
                if differs != want:
                    problems.append(f"{e['name']}: differs on {differs}, TRIGGERS lists {want}")
            status = "ok    " if e["correct"] else "broken"
            print(f"  {e['name']:<42} {status} f64 {w64:<9.3g} f32 {w32:.3g}")
        nb = sum(1 for e in cat if not e["correct"])
        summary.append(f"{modname} {nb} broken + {len(cat) - nb} correct")
    for name in TRIGGERS:
        if name not in all_names:
            problems.append(f"TRIGGERS entry {name} has no kernel")
    try:
        ast.parse(open(os.path.join(HERE, "selfcheck.py")).read())
    except SyntaxError as exc:
        problems.append(str(exc))
    if problems:
        print("SELF-CHECK FAILED:")
        for p in problems:
            print("  -", p)
        return 1
    print(f"SELF-CHECK PASSED ({time.time() - t0:.1f} s): " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
