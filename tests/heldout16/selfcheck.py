"""Self-check of the heldout16 kernels: references, seeded cases, TRIGGERS, CATALOG and BUG markers.

Run: /work/main/.venv/bin/python tests/heldout16/selfcheck.py   (exit status 1 on any problem)
"""
import sys

sys.dont_write_bytecode = True

import copy  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

MODULES = [
    ('numpy_fwd.py', numpy_fwd, 'refimpl'),
    ('torch_sdpa_fwd.py', torch_sdpa_fwd, 'torch-sdpa'),
    ('flash_fwd.py', flash_fwd, 'flash-attn'),
    ('numpy_bwd.py', numpy_bwd, 'numpy-backward'),
]
FEATURES = {
    'refimpl': {'mask', 'dv-ne-d'},
    'torch-sdpa': {'mask', 'causal', 'gqa', 'dv-ne-d'},
    'flash-attn': {'causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'},
    'numpy-backward': {'mask', 'dv-ne-d'},
}
TOL_OK = {'float64': 1e-10, 'float32': 1e-5}
TOL_DIFF = {'float64': 1e-8, 'float32': 1e-4}

# The cases on which each broken kernel differs (its documented trigger); equal to the scratch fix-check's list.
TRIGGERS = {
    'halo_block_attention': [
        'np02-2d-randmask-deadrow', 'np03-3d-causal-topleft', 'np04-4d-rightpad', 'np05-4d-leftpad-decode-empty',
        'np06-4d-head-bands', 'np08-4d-randmask-row0-dead', 'np09-2d-1d-allkept',
    ],
    'softmax_lanes_attention': [
        'np01-2d-decode-none', 'np02-2d-randmask-deadrow', 'np03-3d-causal-topleft', 'np04-4d-rightpad',
        'np05-4d-leftpad-decode-empty', 'np06-4d-head-bands', 'np07-3d-sq-gt-sk-none', 'np08-4d-randmask-row0-dead',
        'np09-2d-1d-allkept', 'np10-4d-dv-ne-d-none',
    ],
    'keras_additive_mask_attention': [
        'np02-2d-randmask-deadrow', 'np05-4d-leftpad-decode-empty', 'np08-4d-randmask-row0-dead',
    ],
    'chunked_queries_bias_attention': [
        'np02-2d-randmask-deadrow', 'np03-3d-causal-topleft', 'np06-4d-head-bands', 'np08-4d-randmask-row0-dead',
    ],
    'flash_jax_key_chunks': [
        'np02-2d-randmask-deadrow', 'np03-3d-causal-topleft', 'np05-4d-leftpad-decode-empty', 'np10-4d-dv-ne-d-none',
    ],
    'head_attention_value_dim_scale': [
        'np02-2d-randmask-deadrow', 'np05-4d-leftpad-decode-empty', 'np10-4d-dv-ne-d-none',
    ],
    'sdpa_embed_dim_scale': [
        's01-none', 's02-bool-deadrow-dv', 's03-causal-l-lt-s', 's04-causal-l-gt-s', 's05-causal-gqa-6to1',
        's06-float4d-finite', 's07-float2d-inf-deadrow', 's09-mqa-decode-pad-empty', 's11-gqa-l-ne-s',
        's12-causal-gqa-3to1', 's13-float4d-zero-inf-band',
    ],
    'sdpa_scale_not_dispatched': [
        's08-gqa-4to1-scale', 's10-float3d-heads-scale', 's14-single-head-scale1',
    ],
    'sdpa_decomposed_no_empty_guard': [
        's02-bool-deadrow-dv', 's07-float2d-inf-deadrow', 's09-mqa-decode-pad-empty',
    ],
    'sdpa_gqa_view_query_len': [
        's09-mqa-decode-pad-empty', 's11-gqa-l-ne-s',
    ],
    'sdpa_bias_heads_unsqueeze': [
        's06-float4d-finite', 's13-float4d-zero-inf-band',
    ],
    'sdpa_npu_booleanized_mask': [
        's06-float4d-finite', 's07-float2d-inf-deadrow', 's10-float3d-heads-scale',
    ],
    'flash_causal_top_left': [
        'f02-causal-sq-lt-sk', 'f03-causal-sq-gt-sk-dv', 'f09-causal-window-20-gqa', 'f14-mqa-decode-causal',
        'f17-causal-window-6-sq-gt-sk',
    ],
    'flash_sliding_window_inclusive': [
        'f05-window-16-left', 'f07-window-10-3-sq-gt-sk', 'f08-window-8-8-alibi', 'f09-causal-window-20-gqa',
        'f16-window-0-4', 'f17-causal-window-6-sq-gt-sk',
    ],
    'flash_paged_softcap_dropped': [
        'f10-softcap5-scale-gqa', 'f11-softcap3-causal-alibi-b',
    ],
    'flash_alibi_tp_partitions': [
        'f08-window-8-8-alibi', 'f11-softcap3-causal-alibi-b', 'f12-alibi-gqa-3to1', 'f15-alibi-causal-mha',
    ],
    'flash_swa_gated_on_mask': [
        'f05-window-16-left', 'f06-window-right-5', 'f07-window-10-3-sq-gt-sk', 'f08-window-8-8-alibi',
        'f16-window-0-4',
    ],
    'flash_packgqa_row_divided': [
        'f04-causal-gqa-4to1', 'f09-causal-window-20-gqa',
    ],
    'bwd_lse_recompute_dead_rows': [
        'b02-3d-randmask-deadrow-dv', 'b06-4d-leftpad-decode-empty',
    ],
    'bwd_dk_block_pointer_hq': [
        'b04-4d-kvhead1-rightpad', 'b08-4d-kvhead1-causal',
    ],
    'bwd_dq_skip_masked_blocks': [
        'b03-4d-causal', 'b05-4d-band-scale', 'b08-4d-kvhead1-causal',
    ],
    'bwd_qkvpacked_dq_strides': [
        'b03-4d-causal', 'b05-4d-band-scale', 'b07-2d-scale-none-mask', 'b10-3d-randmask',
    ],
    'bwd_embed_width_scale': [
        'b03-4d-causal', 'b04-4d-kvhead1-rightpad', 'b06-4d-leftpad-decode-empty', 'b08-4d-kvhead1-causal',
        'b09-4d-long-none',
    ],
    'bwd_warp_per_row_softmax': [
        'b01-2d-none', 'b02-3d-randmask-deadrow-dv', 'b03-4d-causal', 'b04-4d-kvhead1-rightpad', 'b05-4d-band-scale',
        'b07-2d-scale-none-mask', 'b08-4d-kvhead1-causal', 'b10-3d-randmask',
    ],
}

# ----------------------------------------------------------------------------------------------------------------
# references (float64, written from the contracts)


def _softmax_keep(s, keep):
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    den = e.sum(axis=-1, keepdims=True)
    return np.divide(e, den, out=np.zeros_like(e), where=den > 0)


def ref_numpy(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), s.shape)
    return np.matmul(_softmax_keep(s, keep), v)


def ref_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    B, Hq, L, D = q.shape
    S = k.shape[-2]
    if enable_gqa:
        g = Hq // k.shape[1]
        k = np.repeat(k, g, axis=1)
        v = np.repeat(v, g, axis=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    bias = np.zeros((L, S))
    if is_causal:
        bias = np.where(np.tril(np.ones((L, S), bool)), 0.0, -np.inf)
    if attn_mask is not None:
        am = np.asarray(attn_mask)
        bias = np.where(am, bias, -np.inf) if am.dtype == bool else bias + am.astype(np.float64)
    s = s + bias
    keep = np.isfinite(s)
    return np.matmul(_softmax_keep(np.where(keep, s, 0.0), keep), v)


def _band(Sq, Sk, causal, window):
    i = np.arange(Sq)[:, None] + (Sk - Sq)
    j = np.arange(Sk)[None, :]
    left, right = window
    if causal:
        right = 0
    keep = np.ones((Sq, Sk), bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    g = Hq // Hkv
    qh = q.transpose(0, 2, 1, 3)
    kh = np.repeat(k.transpose(0, 2, 1, 3), g, axis=1)
    vh = np.repeat(v.transpose(0, 2, 1, 3), g, axis=1)
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    s = np.matmul(qh, np.swapaxes(kh, -1, -2)) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = np.asarray(alibi_slopes, dtype=np.float64)
        sl = sl.reshape(1, Hq) if sl.ndim == 1 else sl
        i = np.arange(Sq)[:, None] + (Sk - Sq)
        j = np.arange(Sk)[None, :]
        s = s - sl[:, :, None, None] * np.abs(i - j)
    keep = np.broadcast_to(_band(Sq, Sk, causal, window_size), s.shape)
    return np.matmul(_softmax_keep(s, keep), vh).transpose(0, 2, 1, 3)


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, d_out = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), s.shape)
    p = _softmax_keep(s, keep)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (d_out * o).sum(-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq, numpy_bwd._sum_to(dk, k.shape), numpy_bwd._sum_to(dv, v.shape)


def torch_autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    tq, tk, tv = (torch.tensor(np.asarray(t, np.float64), requires_grad=True) for t in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(tq, tk.transpose(-1, -2)) * sc
    keep = torch.ones(s.shape, dtype=torch.bool) if mask is None else torch.tensor(
        np.broadcast_to(np.asarray(mask, bool), tuple(s.shape)).copy())
    s = torch.where(keep, s, torch.full_like(s, float('-inf')))
    m = s.detach().amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(-1, keepdim=True)
    p = e / torch.where(den > 0, den, torch.ones_like(den))
    o = torch.matmul(p, tv)
    (o * torch.tensor(np.asarray(d_out, np.float64))).sum().backward()
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


# ----------------------------------------------------------------------------------------------------------------
# seeded cases


def _rng(name):
    return np.random.default_rng(sum(ord(c) * (i + 1) for i, c in enumerate(name)))


def _rand_mask(rng, shape, dead_row=None):
    m = rng.random(shape) < 0.6
    if dead_row is not None:
        m[..., dead_row, :] = False
    return m


def _pad_mask(lengths, Sk, left=False):
    m = np.zeros((len(lengths), 1, 1, Sk), bool)
    for b, n in enumerate(lengths):
        if left:
            m[b, ..., Sk - n:] = n > 0
        else:
            m[b, ..., :n] = True
    return m


def _band_mask(S, widths):
    i = np.arange(S)[:, None]
    j = np.arange(S)[None, :]
    return np.stack([np.abs(i - j) <= w for w in widths])[None]


def numpy_cases():
    specs = [
        ('np01-2d-decode-none', (), 1, 20, 16, 16, None, None),
        ('np02-2d-randmask-deadrow', (), 37, 53, 24, 20, 'rand', None),
        ('np03-3d-causal-topleft', (3,), 64, 96, 32, 40, 'causal', 0.37),
        ('np04-4d-rightpad', (2, 3), 100, 129, 16, 16, 'rpad', None),
        ('np05-4d-leftpad-decode-empty', (2, 2), 1, 64, 64, 48, 'lpad', None),
        ('np06-4d-head-bands', (2, 4), 48, 48, 8, 8, 'band', 0.5),
        ('np07-3d-sq-gt-sk-none', (2,), 77, 33, 40, 40, None, None),
        ('np08-4d-randmask-row0-dead', (1, 2), 20, 20, 32, 32, 'rand0', 1.0),
        ('np09-2d-1d-allkept', (), 16, 129, 24, 24, 'all', None),
        ('np10-4d-dv-ne-d-none', (2, 2), 40, 70, 16, 24, None, None),
    ]
    out = []
    for name, lead, sq, sk, d, dv, mk, scale in specs:
        rng = _rng(name)
        q = rng.standard_normal(lead + (sq, d))
        k = rng.standard_normal(lead + (sk, d))
        v = rng.standard_normal(lead + (sk, dv))
        mask = None
        if mk == 'rand':
            mask = _rand_mask(rng, (sq, sk), dead_row=5)
        elif mk == 'causal':
            mask = np.tril(np.ones((sq, sk), bool))
        elif mk == 'rpad':
            mask = _pad_mask([129, 70], sk)
        elif mk == 'lpad':
            mask = _pad_mask([54, 0], sk, left=True)
        elif mk == 'band':
            mask = _band_mask(sq, [0, 3, 7, 12])
        elif mk == 'rand0':
            mask = _rand_mask(rng, (1, 1, sq, sk), dead_row=0)
        elif mk == 'all':
            mask = np.ones((sk,), bool)
        out.append(dict(name=name, kw=dict(q=q, k=k, v=v, mask=mask, scale=scale)))
    return out


def sdpa_cases():
    specs = [
        # name, B, Hq, Hkv, L, S, D, Dv, mask kind, causal, scale, gqa
        ('s01-none', 2, 4, 4, 33, 57, 16, 16, None, False, None, False),
        ('s02-bool-deadrow-dv', 2, 2, 2, 40, 40, 32, 24, 'bool', False, None, False),
        ('s03-causal-l-lt-s', 1, 3, 3, 24, 70, 16, 16, None, True, None, False),
        ('s04-causal-l-gt-s', 2, 2, 2, 70, 24, 24, 40, None, True, None, False),
        ('s05-causal-gqa-6to1', 1, 6, 1, 50, 50, 16, 16, None, True, None, True),
        ('s06-float4d-finite', 2, 2, 2, 20, 30, 16, 16, 'f4', False, None, False),
        ('s07-float2d-inf-deadrow', 1, 2, 2, 17, 64, 32, 32, 'f2inf', False, None, False),
        ('s08-gqa-4to1-scale', 1, 8, 2, 32, 32, 16, 16, None, False, 0.3, True),
        ('s09-mqa-decode-pad-empty', 2, 4, 1, 1, 100, 64, 32, 'pad', False, None, True),
        ('s10-float3d-heads-scale', 2, 2, 2, 12, 12, 8, 8, 'f3', False, 0.5, False),
        ('s11-gqa-l-ne-s', 1, 8, 2, 16, 48, 16, 20, None, False, None, True),
        ('s12-causal-gqa-3to1', 1, 6, 2, 40, 40, 24, 24, None, True, None, True),
        ('s13-float4d-zero-inf-band', 2, 2, 2, 30, 30, 16, 16, 'f4band', False, None, False),
        ('s14-single-head-scale1', 2, 1, 1, 25, 25, 16, 16, None, False, 1.0, False),
    ]
    out = []
    for name, B, Hq, Hkv, L, S, D, Dv, mk, causal, scale, gqa in specs:
        rng = _rng(name)
        q = rng.standard_normal((B, Hq, L, D))
        k = rng.standard_normal((B, Hkv, S, D))
        v = rng.standard_normal((B, Hkv, S, Dv))
        m = None
        if mk == 'bool':
            m = _rand_mask(rng, (B, 1, L, S), dead_row=7)
        elif mk == 'f4':
            m = rng.standard_normal((B, Hq, L, S))
        elif mk == 'f2inf':
            m = np.where(rng.random((L, S)) < 0.3, -np.inf, rng.standard_normal((L, S)))
            m[4, :] = -np.inf
        elif mk == 'pad':
            m = _pad_mask([100, 0], S)
        elif mk == 'f3':
            m = rng.standard_normal((Hq, L, S))
        elif mk == 'f4band':
            m = np.where(_band_mask(L, [4])[0, 0], 0.0, -np.inf)[None, None]
        out.append(dict(name=name, kw=dict(q=q, k=k, v=v, attn_mask=m, is_causal=causal, scale=scale,
                                           enable_gqa=gqa)))
    return out


def flash_cases():
    specs = [
        # name, B, Sq, Sk, Hq, Hkv, D, Dv, causal, window, softcap, alibi, scale
        ('f01-none', 2, 64, 64, 4, 4, 32, 32, False, (-1, -1), 0.0, None, None),
        ('f02-causal-sq-lt-sk', 1, 30, 90, 4, 4, 16, 16, True, (-1, -1), 0.0, None, None),
        ('f03-causal-sq-gt-sk-dv', 2, 90, 30, 2, 2, 24, 40, True, (-1, -1), 0.0, None, None),
        ('f04-causal-gqa-4to1', 1, 48, 48, 8, 2, 16, 16, True, (-1, -1), 0.0, None, None),
        ('f05-window-16-left', 1, 64, 64, 2, 2, 16, 16, False, (16, -1), 0.0, None, None),
        ('f06-window-right-5', 2, 40, 60, 2, 2, 16, 16, False, (-1, 5), 0.0, None, None),
        ('f07-window-10-3-sq-gt-sk', 1, 80, 50, 2, 2, 16, 16, False, (10, 3), 0.0, None, None),
        ('f08-window-8-8-alibi', 1, 50, 50, 4, 4, 16, 16, False, (8, 8), 0.0, 'h', None),
        ('f09-causal-window-20-gqa', 1, 32, 100, 4, 2, 16, 16, True, (20, -1), 0.0, None, None),
        ('f10-softcap5-scale-gqa', 1, 40, 40, 4, 2, 16, 16, False, (-1, -1), 5.0, None, 0.37),
        ('f11-softcap3-causal-alibi-b', 2, 36, 36, 4, 4, 16, 16, True, (-1, -1), 3.0, 'bh', None),
        ('f12-alibi-gqa-3to1', 1, 20, 44, 6, 2, 16, 16, False, (-1, -1), 0.0, 'h', None),
        ('f13-decode-12to2', 1, 1, 100, 12, 2, 64, 32, False, (-1, -1), 0.0, None, None),
        ('f14-mqa-decode-causal', 2, 1, 77, 4, 1, 32, 32, True, (-1, -1), 0.0, None, None),
        ('f15-alibi-causal-mha', 1, 64, 64, 8, 8, 16, 16, True, (-1, -1), 0.0, 'h', None),
        ('f16-window-0-4', 1, 30, 30, 2, 2, 8, 8, False, (0, 4), 0.0, None, None),
        ('f17-causal-window-6-sq-gt-sk', 1, 50, 20, 2, 2, 16, 16, True, (6, -1), 0.0, None, None),
    ]
    out = []
    for name, B, Sq, Sk, Hq, Hkv, D, Dv, causal, window, softcap, alibi, scale in specs:
        rng = _rng(name)
        q = rng.standard_normal((B, Sq, Hq, D))
        k = rng.standard_normal((B, Sk, Hkv, D))
        v = rng.standard_normal((B, Sk, Hkv, Dv))
        sl = None
        if alibi == 'h':
            sl = (2.0 ** (-8.0 * (np.arange(Hq) + 1) / Hq)).astype(np.float32)
        elif alibi == 'bh':
            sl = (rng.random((B, Hq)) * 0.5 + 0.05).astype(np.float32)
        out.append(dict(name=name, kw=dict(q=q, k=k, v=v, softmax_scale=scale, causal=causal, window_size=window,
                                           softcap=softcap, alibi_slopes=sl)))
    return out


def bwd_cases():
    specs = [
        # name, q lead, kv lead, Sq, Sk, D, Dv, mask kind, scale
        ('b01-2d-none', (), (), 20, 33, 16, 16, None, None),
        ('b02-3d-randmask-deadrow-dv', (2,), (2,), 48, 64, 24, 12, 'rand', None),
        ('b03-4d-causal', (2, 3), (2, 3), 40, 40, 32, 32, 'causal', None),
        ('b04-4d-kvhead1-rightpad', (2, 4), (2, 1), 16, 70, 8, 8, 'rpad', None),
        ('b05-4d-band-scale', (1, 2), (1, 2), 64, 64, 40, 40, 'band', 0.5),
        ('b06-4d-leftpad-decode-empty', (2, 2), (2, 2), 1, 50, 64, 48, 'lpad', None),
        ('b07-2d-scale-none-mask', (), (), 33, 33, 16, 16, None, 0.3),
        ('b08-4d-kvhead1-causal', (1, 3), (1, 1), 24, 24, 24, 24, 'causal', None),
        ('b09-4d-long-none', (2, 2), (2, 2), 100, 129, 16, 16, None, None),
        ('b10-3d-randmask', (1,), (1,), 70, 70, 16, 16, 'rand2', None),
    ]
    out = []
    for name, ql, kl, sq, sk, d, dv, mk, scale in specs:
        rng = _rng(name)
        q = rng.standard_normal(ql + (sq, d))
        k = rng.standard_normal(kl + (sk, d))
        v = rng.standard_normal(kl + (sk, dv))
        d_out = rng.standard_normal(ql + (sq, dv))
        mask = None
        if mk == 'rand':
            mask = _rand_mask(rng, (sq, sk), dead_row=3)
        elif mk == 'causal':
            mask = np.tril(np.ones((sq, sk), bool))
        elif mk == 'rpad':
            mask = _pad_mask([70, 31], sk)
        elif mk == 'band':
            mask = _band_mask(sq, [5])[0]
        elif mk == 'lpad':
            mask = _pad_mask([40, 0], sk, left=True)
        elif mk == 'rand2':
            mask = _rand_mask(rng, (sq, sk))
        out.append(dict(name=name, kw=dict(q=q, k=k, v=v, d_out=d_out, mask=mask, scale=scale)))
    return out


CASES = {'refimpl': numpy_cases, 'torch-sdpa': sdpa_cases, 'flash-attn': flash_cases,
         'numpy-backward': bwd_cases}


# ----------------------------------------------------------------------------------------------------------------
# running and judging


def _round(x, dtype):
    return None if x is None else np.asarray(x).astype(dtype)


def prepare(api, case, dtype):
    """Inputs in the API's form and dtype, and the float64 reference on the rounded inputs."""
    kw = case['kw']
    npdt = np.float64 if dtype == 'float64' else np.float32
    if api == 'refimpl':
        args = dict(q=_round(kw['q'], npdt), k=_round(kw['k'], npdt), v=_round(kw['v'], npdt),
                    mask=kw['mask'], scale=kw['scale'])
        ref = ref_numpy(**args)
        return args, ref
    if api == 'numpy-backward':
        args = dict(q=_round(kw['q'], npdt), k=_round(kw['k'], npdt), v=_round(kw['v'], npdt),
                    d_out=_round(kw['d_out'], npdt), mask=kw['mask'], scale=kw['scale'])
        ref = ref_bwd(**args)
        return args, ref
    tdt = torch.float64 if dtype == 'float64' else torch.float32
    if api == 'torch-sdpa':
        m = kw['attn_mask']
        if m is not None and m.dtype != bool:
            m = m.astype(npdt)
        args = dict(query=torch.tensor(_round(kw['q'], npdt)), key=torch.tensor(_round(kw['k'], npdt)),
                    value=torch.tensor(_round(kw['v'], npdt)),
                    attn_mask=None if m is None else torch.tensor(m),
                    is_causal=kw['is_causal'], scale=kw['scale'], enable_gqa=kw['enable_gqa'])
        ref = ref_sdpa(args['query'].numpy(), args['key'].numpy(), args['value'].numpy(), m, kw['is_causal'],
                       kw['scale'], kw['enable_gqa'])
        assert args['query'].dtype == tdt
        return args, ref
    sl = kw['alibi_slopes']
    args = dict(q=torch.tensor(_round(kw['q'], npdt)), k=torch.tensor(_round(kw['k'], npdt)),
                v=torch.tensor(_round(kw['v'], npdt)), softmax_scale=kw['softmax_scale'], causal=kw['causal'],
                window_size=kw['window_size'], softcap=kw['softcap'],
                alibi_slopes=None if sl is None else torch.tensor(sl))
    ref = ref_flash(args['q'].numpy(), args['k'].numpy(), args['v'].numpy(), kw['softmax_scale'], kw['causal'],
                    kw['window_size'], kw['softcap'], sl)
    assert args['q'].dtype == tdt
    return args, ref


def _as_np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().numpy()
    return x


def _rel(out, ref, want_dtype):
    out = _as_np(out)
    if not isinstance(out, np.ndarray) or out.shape != ref.shape or out.dtype != want_dtype:
        return float('inf')
    o = out.astype(np.float64)
    if not np.all(np.isfinite(o)):
        return float('inf')
    nrm = np.linalg.norm(ref)
    err = np.linalg.norm(o - ref)
    return float(err / nrm) if nrm > 0 else float(err)


def _snapshot(args):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in args.items()}


def _same(a, b):
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, np.ndarray):
            if not np.array_equal(x, y, equal_nan=True):
                return False
    return True


def run_case(api, fn, case, dtype):
    """Worse relative error of two calls (fresh copies); inf for an exception, non-finite, shape or dtype."""
    worst = 0.0
    notes = []
    for _ in range(2):
        args, ref = prepare(api, case, dtype)
        before = _snapshot(args)
        want = np.dtype(dtype)
        try:
            with warnings.catch_warnings(), np.errstate(all='ignore'):
                warnings.simplefilter('ignore')
                out = fn(**args)
        except Exception as exc:  # a kernel may raise on its trigger
            notes.append(type(exc).__name__)
            worst = float('inf')
            continue
        if not _same(before, args):
            notes.append('inputs modified')
            worst = float('inf')
            continue
        if api == 'numpy-backward':
            if not isinstance(out, tuple) or len(out) != 3:
                worst = float('inf')
                continue
            err = max(_rel(o, r, want) for o, r in zip(out, ref))
        else:
            err = _rel(out, ref, want)
        worst = max(worst, err)
    return worst, notes


def cross_check():
    """The sdpa / flash references against the NumPy one with explicit masks; backward against autograd."""
    worst = 0.0
    rng = np.random.default_rng(7)
    q = rng.standard_normal((2, 3, 21, 16))
    k = rng.standard_normal((2, 3, 34, 16))
    v = rng.standard_normal((2, 3, 34, 12))
    tl = np.tril(np.ones((21, 34), bool))
    worst = max(worst, np.abs(ref_sdpa(q, k, v, is_causal=True) - ref_numpy(q, k, v, tl)).max())
    add = np.where(tl, 0.0, -np.inf)
    worst = max(worst, np.abs(ref_sdpa(q, k, v, attn_mask=add) - ref_numpy(q, k, v, tl)).max())
    qf, kf, vf = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    br = _band(21, 34, True, (-1, -1))
    worst = max(worst, np.abs(ref_flash(qf, kf, vf, causal=True).transpose(0, 2, 1, 3) - ref_numpy(q, k, v, br)).max())
    bw = _band(21, 34, True, (5, -1))
    worst = max(worst, np.abs(ref_flash(qf, kf, vf, causal=True, window_size=(5, -1)).transpose(0, 2, 1, 3)
                              - ref_numpy(q, k, v, bw)).max())
    for case in bwd_cases():
        kw = case['kw']
        a = ref_bwd(**kw)
        b = torch_autograd_bwd(**kw)
        for x, y in zip(a, b):
            worst = max(worst, float(np.abs(x - y).max()) if x.size else 0.0)
    return worst


def bug_sections(path):
    """{fn: number of BUG comments in its section}; also BUG comments outside any section."""
    lines = open(path).read().splitlines()
    sections, current, outside = {}, None, 0
    for line in lines:
        mk = re.match(r'# --- kernel: (\w+) ---$', line)
        if mk:
            current = mk.group(1)
            sections[current] = 0
            continue
        if re.search(r'#\s*BUG:', line):
            if current is None:
                outside += 1
            else:
                sections[current] += 1
    return sections, outside


REQUIRED_KEYS = {'name', 'api', 'fn', 'correct', 'bug', 'parameter', 'source', 'report', 'dtype', 'features'}


def check_catalog(fname, mod, api, problems):
    cat = mod.CATALOG
    broken = [c for c in cat if not c['correct']]
    correct = [c for c in cat if c['correct']]
    if len(broken) < 6 or len(correct) < 2:
        problems.append(f'{fname}: needs >= 6 broken and >= 2 correct kernels')
    for c in cat:
        if set(c) != REQUIRED_KEYS:
            problems.append(f"{fname}: {c.get('name')}: keys {sorted(set(c) ^ REQUIRED_KEYS)}")
            continue
        if c['api'] != api or not callable(getattr(mod, c['fn'], None)):
            problems.append(f"{fname}: {c['name']}: api or fn wrong")
        if c['dtype'] not in ('float64', 'float32'):
            problems.append(f"{fname}: {c['name']}: dtype")
        if not set(c['features']) <= FEATURES[api]:
            problems.append(f"{fname}: {c['name']}: features")
        if c['correct']:
            if any(c[key] is not None for key in ('bug', 'parameter', 'source', 'report')):
                problems.append(f"{fname}: {c['name']}: correct kernel with bug fields")
            if c['fn'] in TRIGGERS:
                problems.append(f"{fname}: {c['name']}: TRIGGERS entry for a correct kernel")
        else:
            if not re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)*', c['bug'] or ''):
                problems.append(f"{fname}: {c['name']}: bug not kebab-case")
            if 'Triggers:' not in (c['parameter'] or ''):
                problems.append(f"{fname}: {c['name']}: parameter lacks Triggers:")
            ms = re.fullmatch(r'([\w.-]+)/([\w.-]+)#(\d+)', c['source'] or '')
            mr = re.fullmatch(r'https://github\.com/([\w.-]+)/([\w.-]+)/(issues|pull)/(\d+)', c['report'] or '')
            if not ms or not mr or ms.groups() != (mr.group(1), mr.group(2), mr.group(4)):
                problems.append(f"{fname}: {c['name']}: source / report disagree")
            if not TRIGGERS.get(c['fn']):
                problems.append(f"{fname}: {c['name']}: no TRIGGERS entry")
    sections, outside = bug_sections(os.path.join(HERE, fname))
    if outside:
        problems.append(f'{fname}: BUG comment outside a kernel section')
    for c in cat:
        n = sections.get(c['fn'])
        want = 0 if c['correct'] else 1
        if n != want:
            problems.append(f"{fname}: {c['name']}: {n} BUG comments in its section (want {want})")


def main():
    t0 = time.time()
    torch.manual_seed(0)
    problems = []
    names, sources = set(), set()
    cc = cross_check()
    print(f'reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): '
          f'worst {cc:.2g}')
    if not cc < 1e-12:
        problems.append(f'reference cross-check {cc}')
    print('worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)')
    summary = []
    observed = {}
    for fname, mod, api in MODULES:
        check_catalog(fname, mod, api, problems)
        print(f'{fname} ({api})')
        cases = CASES[api]()
        for c in mod.CATALOG:
            if c['name'] in names:
                problems.append(f"duplicate name {c['name']}")
            names.add(c['name'])
            if c['source']:
                if c['source'] in sources:
                    problems.append(f"duplicate source {c['source']}")
                sources.add(c['source'])
            fn = getattr(mod, c['fn'])
            trig = set(TRIGGERS.get(c['fn'], []))
            worst = {'float64': 0.0, 'float32': 0.0}
            differs = []
            for case in cases:
                errs = {dt: run_case(api, fn, case, dt)[0] for dt in ('float64', 'float32')}
                for dt in errs:
                    worst[dt] = max(worst[dt], errs[dt])
                if errs['float64'] > TOL_OK['float64'] or errs['float32'] > TOL_OK['float32']:
                    differs.append(case['name'])
                if c['correct'] or case['name'] not in trig:
                    for dt in errs:
                        if not errs[dt] <= TOL_OK[dt]:
                            problems.append(f"{c['name']} on {case['name']} {dt}: {errs[dt]:.3g} (must conform)")
                else:
                    dt = c['dtype']
                    if not errs[dt] > TOL_DIFF[dt]:
                        problems.append(f"{c['name']} on {case['name']} {dt}: {errs[dt]:.3g} (must differ)")
            for name in trig - {case['name'] for case in cases}:
                problems.append(f"{c['name']}: TRIGGERS names unknown case {name}")
            if not c['correct']:
                observed[c['fn']] = differs
            status = 'ok    ' if c['correct'] else 'broken'
            print(f"  {c['name']:<44} {status} f64 {worst['float64']:<9.3g} f32 {worst['float32']:.3g}")
        nb = sum(not c['correct'] for c in mod.CATALOG)
        summary.append(f"{fname[:-3]} {nb} broken + {len(mod.CATALOG) - nb} correct")
    if os.environ.get('H16_PRINT_TRIGGERS'):
        print('observed TRIGGERS =', observed)
    dt = time.time() - t0
    if problems:
        for p in problems:
            print('PROBLEM:', p)
        print(f'SELF-CHECK FAILED ({len(problems)} problems, {dt:.1f} s)')
        return 1
    print(f"SELF-CHECK PASSED ({dt:.1f} s): {', '.join(summary)}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
