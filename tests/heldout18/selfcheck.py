"""Self-check of the heldout18 kernels: references, correct kernels, broken kernels' triggers, CATALOG, BUG comments.

Run: /work/main/.venv/bin/python -B tests/heldout18/selfcheck.py   (exit 0 = passed, 1 = a problem)
"""
import sys

sys.dont_write_bytecode = True

import importlib  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

MODULES = [('numpy_fwd', 'refimpl'), ('torch_sdpa_fwd', 'torch-sdpa'), ('flash_fwd', 'flash-attn'),
           ('numpy_bwd', 'numpy-backward')]
OK_BOUND = {'float64': 1e-10, 'float32': 1e-5}
DIFF_BOUND = {'float64': 1e-8, 'float32': 1e-4}
NP_DT = {'float64': np.float64, 'float32': np.float32}
TORCH_DT = {'float64': torch.float64, 'float32': torch.float32}
API_FEATURES = {
    'refimpl': {'mask', 'dv-ne-d'},
    'torch-sdpa': {'mask', 'causal', 'gqa', 'dv-ne-d'},
    'flash-attn': {'causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'},
    'numpy-backward': {'mask', 'dv-ne-d'},
}
CATALOG_KEYS = {'name', 'api', 'fn', 'correct', 'bug', 'parameter', 'source', 'report', 'dtype', 'features'}

# The cases on which each broken kernel differs (its documented trigger); it conforms on all others.
TRIGGERS = {
    'np-triton-tl-softmax-keepdims': [
        'n2d_basic', 'n2d_mask', 'n3d_dv', 'n3d_mask', 'n3d_shared_mask', 'n4d_rand', 'n4d_causal', 'n4d_band',
        'n4d_h1'],
    'np-ncnn-singleton-mask-channel': ['n3d_shared_mask', 'n4d_pad', 'n4d_causal', 'n4d_leftpad'],
    'np-d2ljava-missing-sqrt-d': ['n2d_basic', 'n3d_shared_mask', 'n4d_rand', 'n4d_pad', 'n4d_causal',
                                  'n4d_leftpad'],
    'np-caml-softmax-input-unmasked': ['n2d_mask', 'n3d_mask', 'n3d_shared_mask', 'n4d_rand', 'n4d_causal',
                                       'n4d_band', 'n4d_leftpad', 'n4d_h1'],
    'np-allennlp-masked-log-softmax-zero': ['n2d_mask', 'n3d_mask', 'n3d_shared_mask', 'n4d_rand', 'n4d_causal',
                                            'n4d_band', 'n4d_leftpad', 'n4d_h1'],
    'np-encoding-softmax-dim-one': ['n3d_dv', 'n3d_mask', 'n3d_shared_mask', 'n4d_rand', 'n4d_pad', 'n4d_causal',
                                    'n4d_band', 'n4d_leftpad', 'n4d_h1', 'n4d_sq1_h1'],
    'sdpa-pytorch-docs-inplace-bias': ['s_float_bias', 's_float_inf', 's_gqa6_float'],
    'sdpa-candle-causal-mask-batch0': ['s_causal_lt', 's_causal_eq_mqa'],
    'sdpa-transformers-grouped-repeat-tile': ['s_gqa4', 's_gqa6_float'],
    'sdpa-jax-bias-reshape-query-heads': ['s_bool_pad', 's_float_inf', 's_gqa4'],
    'sdpa-diffusers-head-dim-from-value': ['s_dv', 's_bool_pad', 's_float_2d'],
    'sdpa-detr-softmax-flatten-heads': [
        's_dv', 's_bool_rand', 's_bool_pad', 's_float_bias', 's_float_inf', 's_float_2d', 's_causal_lt',
        's_causal_gt', 's_causal_eq_mqa', 's_gqa4', 's_mqa_decode', 's_gqa6_float', 's_bool_2d'],
    'flash-flashinfer-splitkv-lse-not-stored': [
        'f_causal_lt', 'f_win_left', 'f_causal_win_lt', 'f_softcap', 'f_softcap_causal_alibi', 'f_alibi_causal',
        'f_decode_gqa12', 'f_gqa21_long'],
    'flash-trtllm-window-right-zeroed': ['f_win_left', 'f_win_right', 'f_win_both_gt', 'f_win_zero',
                                         'f_win_alibi'],
    'flash-lightllm-causal-window-symmetric': ['f_causal_win_lt', 'f_causal_win_gt'],
    'flash-vllm-prefix-window-context': ['f_win_left', 'f_win_zero', 'f_causal_win_lt'],
    'flash-tinyllm-causal-skipped-with-cache': ['f_causal_lt', 'f_softcap_causal_alibi', 'f_alibi_causal'],
    'flash-te-bias-scaled-in-softmax': ['f_win_alibi', 'f_softcap_causal_alibi', 'f_alibi_gqa', 'f_alibi_causal'],
    'bwd-pytorch-grad-out-stride-layout': ['b4d_rand', 'b4d_causal', 'b4d_mqa', 'b4d_band'],
    'bwd-nd4j-broadcast-grad-not-reduced': ['b4d_mqa', 'b4d_mqa_decode'],
    'bwd-onednn-logsoftmax-rowsum': [
        'b2d', 'b3d', 'b3d_decode', 'b4d_rand', 'b4d_pad', 'b4d_causal', 'b4d_mqa', 'b4d_mqa_decode',
        'b4d_h1', 'b4d_band', 'b4d_sq1_h1'],
    'bwd-oneflow-reduced-delta-broadcast': ['b2d', 'b3d', 'b4d_rand', 'b4d_causal', 'b4d_mqa', 'b4d_h1',
                                            'b4d_band'],
    'bwd-nntrainer-softmax-last3-dims': ['b2d', 'b3d', 'b3d_decode', 'b4d_rand', 'b4d_pad', 'b4d_causal',
                                         'b4d_mqa', 'b4d_mqa_decode', 'b4d_h1', 'b4d_band'],
    'bwd-pytorch-keepdim-squeeze': ['b3d_decode', 'b4d_pad', 'b4d_mqa_decode', 'b4d_h1'],
}


# ----------------------------------------------------------------------------------------------------------
# References (float64), written from the contracts
# ----------------------------------------------------------------------------------------------------------
def ref_np(q, k, v, keep=None, bias=None, scale=None, softcap=0.0):
    """Contract-1 attention in NumPy float64 with an optional additive bias and softcap."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    e = np.exp(s - np.where(live, m, 0.0))
    p = np.where(live, e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0), 0.0)
    return np.matmul(p, v)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    """Contract-2 attention in torch float64."""
    q, k, v = query.double(), key.double(), value.double()
    B, Hq, L, D = q.shape
    S = k.shape[-2]
    if k.shape[1] != Hq:
        idx = torch.arange(Hq) // (Hq // k.shape[1])
        k, v = k[:, idx], v[:, idx]
    s = torch.einsum('bhld,bhsd->bhls', q, k) * (D ** -0.5 if scale is None else scale)
    if is_causal:
        s = s.masked_fill(torch.ones(L, S, dtype=torch.bool).triu(1), float('-inf'))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, float('-inf'))
        else:
            s = s + attn_mask.double()
    live = torch.isfinite(s).any(dim=-1, keepdim=True)
    p = torch.softmax(torch.where(live, s, torch.zeros_like(s)), dim=-1)
    p = torch.where(live, p, torch.zeros_like(p))
    return torch.einsum('bhls,bhsd->bhld', p, v)


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    """Contract-3 attention in torch float64, (B, Sq, Hq, Dv) out."""
    q, k, v = q.double(), k.double(), v.double()
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    kv = torch.arange(Hq) // (Hq // Hkv)
    qt, kt, vt = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3)[:, kv], v.permute(0, 2, 1, 3)[:, kv]
    s = qt @ kt.transpose(-1, -2) * (D ** -0.5 if softmax_scale is None else softmax_scale)
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    ii = torch.arange(Sq)[:, None] + (Sk - Sq)
    jj = torch.arange(Sk)[None, :]
    if alibi_slopes is not None:
        sl = alibi_slopes.double()
        if sl.dim() == 1:
            sl = sl[None].expand(B, Hq)
        s = s - sl[:, :, None, None] * (ii - jj).abs().double()
    left, right = window_size
    if causal:
        right = 0
    vis = torch.ones(Sq, Sk, dtype=torch.bool)
    if causal:
        vis &= jj <= ii
    if left >= 0:
        vis &= jj >= ii - left
    if right >= 0:
        vis &= jj <= ii + right
    s = s.masked_fill(~vis, float('-inf'))
    live = vis.any(dim=-1, keepdim=True)
    p = torch.softmax(torch.where(live, s, torch.zeros_like(s)), dim=-1)
    p = torch.where(live, p, torch.zeros_like(p))
    return (p @ vt).permute(0, 2, 1, 3)


def ref_bwd(q, k, v, d_out, keep, scale):
    """Contract-4 gradients in NumPy float64 (delta = rowsum(dO * O)), dk/dv summed to k/v's shape."""
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    e = np.exp(s - np.where(live, m, 0.0))
    p = np.where(live, e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0), 0.0)
    o = p @ v
    ds = p * (do @ np.swapaxes(v, -1, -2) - np.sum(do * o, axis=-1, keepdims=True))
    dq = ds @ k * sc
    dk = np.swapaxes(ds, -1, -2) @ q * sc
    dv = np.swapaxes(p, -1, -2) @ do

    def reduce(x, shape):
        axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
        return x.sum(axis=axes, keepdims=True) if axes else x
    return dq, reduce(dk, k.shape), reduce(dv, v.shape)


def autograd_bwd(q, k, v, d_out, keep, scale):
    """The same gradients through torch autograd (float64), for the cross-check."""
    qt, kt, vt = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = qt @ kt.transpose(-1, -2) * sc
    if keep is not None:
        s = s.masked_fill(~torch.tensor(np.ascontiguousarray(np.broadcast_to(keep, s.shape))), float('-inf'))
    live = torch.isfinite(s).any(dim=-1, keepdim=True)
    p = torch.softmax(torch.where(live, s, torch.zeros_like(s)), dim=-1)
    p = torch.where(live, p, torch.zeros_like(p))
    o = p @ vt
    (o * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------
def _rand_keep(rng, shape, p=0.7):
    keep = rng.random(shape) < p
    keep.reshape(-1, shape[-1])[0] = False  # one fully masked row
    return keep


def _pad_keep(B, Sk, lengths, left=False):
    keep = np.zeros((B, 1, 1, Sk), dtype=bool)
    for b, n in enumerate(lengths):
        if left:
            keep[b, 0, 0, Sk - n:] = n > 0
        else:
            keep[b, 0, 0, :n] = True
    return keep


def _band_keep(H, Sq, Sk):
    i = np.arange(Sq)[:, None]
    j = np.arange(Sk)[None, :]
    return np.stack([(j >= i - 3 * (h + 1)) & (j <= i + 2 * h) for h in range(H)])[None]


NP_CASES = [
    # name, lead, Sq, Sk, D, Dv, mask kind, scale
    ('n2d_basic', (), 20, 20, 16, 16, None, None),
    ('n2d_decode', (), 1, 33, 8, 8, None, 0.3),
    ('n2d_mask', (), 2, 65, 64, 32, 'rand', 0.2),
    ('n3d_dv', (3,), 17, 40, 24, 20, None, 0.37),
    ('n3d_mask', (2,), 50, 128, 32, 40, 'rand', 0.5),
    ('n3d_shared_mask', (2,), 12, 30, 16, 12, 'rand_shared', None),
    ('n4d_rand', (2, 3), 64, 64, 32, 32, 'rand', None),
    ('n4d_pad', (2, 4), 1, 129, 64, 48, 'pad_full_empty', None),
    ('n4d_causal', (2, 2), 100, 37, 16, 24, 'causal2d', None),
    ('n4d_band', (1, 2), 33, 96, 40, 40, 'band', 0.37),
    ('n4d_leftpad', (2, 3), 1, 20, 8, 8, 'leftpad', None),
    ('n4d_h1', (2, 1), 24, 24, 16, 16, 'rand', 0.5),
    ('n4d_sq1_h1', (1, 1), 1, 64, 32, 16, None, 1.0),
]


def make_np_case(case, seed):
    name, lead, Sq, Sk, D, Dv, mk, scale = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(lead + (Sq, D))
    k = rng.standard_normal(lead + (Sk, D))
    v = rng.standard_normal(lead + (Sk, Dv))
    mask = None
    if mk == 'rand':
        mask = _rand_keep(rng, lead + (Sq, Sk))
    elif mk == 'rand_shared':
        mask = _rand_keep(rng, (1, Sq, Sk))
    elif mk == 'pad_full_empty':
        mask = _pad_keep(lead[0], Sk, [Sk, 0])
    elif mk == 'leftpad':
        mask = _pad_keep(lead[0], Sk, [13, 7], left=True)
    elif mk == 'causal2d':
        mask = np.tril(np.ones((Sq, Sk), dtype=bool))
    elif mk == 'band':
        mask = _band_keep(lead[1], Sq, Sk)
    return dict(q=q, k=k, v=v, mask=mask, scale=scale)


SDPA_CASES = [
    # name, B, Hq, Hkv, Sq, Sk, D, Dv, mask kind, is_causal, scale
    ('s_basic', 1, 1, 1, 16, 16, 16, 16, None, False, None),
    ('s_dv', 2, 3, 3, 20, 45, 32, 24, None, False, None),
    ('s_bool_rand', 2, 2, 2, 33, 64, 24, 40, 'bool_rand', False, 0.37),
    ('s_bool_pad', 2, 4, 4, 1, 129, 64, 48, 'bool_pad', False, None),
    ('s_float_bias', 2, 2, 2, 24, 40, 16, 16, 'float_full', False, None),
    ('s_float_inf', 1, 3, 3, 17, 30, 8, 12, 'float_inf', False, 0.5),
    ('s_float_2d', 2, 2, 2, 10, 21, 16, 8, 'float_2d', False, None),
    ('s_causal_lt', 2, 2, 2, 20, 50, 16, 16, None, True, None),
    ('s_causal_gt', 1, 2, 2, 60, 25, 32, 20, None, True, 1.0),
    ('s_causal_eq_mqa', 2, 6, 1, 40, 40, 16, 16, None, True, None),
    ('s_gqa4', 2, 8, 2, 24, 48, 32, 32, 'bool_b1', False, None),
    ('s_mqa_decode', 2, 4, 1, 1, 77, 64, 64, None, False, None),
    ('s_gqa6_float', 1, 12, 2, 16, 32, 8, 16, 'float_full', False, 0.3),
    ('s_bool_2d', 1, 2, 2, 40, 40, 16, 16, 'bool_band2d', False, None),
    ('s_h1_bool', 2, 1, 1, 12, 20, 16, 16, 'bool_b1', False, None),
]


def make_sdpa_case(case, seed):
    name, B, Hq, Hkv, Sq, Sk, D, Dv, mk, causal, scale = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, Hq, Sq, D))
    k = rng.standard_normal((B, Hkv, Sk, D))
    v = rng.standard_normal((B, Hkv, Sk, Dv))
    mask = None
    if mk == 'bool_rand':
        mask = _rand_keep(rng, (B, Hq, Sq, Sk))
    elif mk == 'bool_pad':
        mask = _pad_keep(B, Sk, [100, 0])
    elif mk == 'bool_b1':
        mask = _rand_keep(rng, (B, 1, Sq, Sk))
    elif mk == 'bool_band2d':
        mask = _band_keep(1, Sq, Sk)[0, 0]
    elif mk == 'float_full':
        mask = rng.standard_normal((B, Hq, Sq, Sk)) * 2.0
    elif mk == 'float_2d':
        mask = rng.standard_normal((Sq, Sk)) * 2.0
    elif mk == 'float_inf':
        mask = np.where(rng.random((1, 1, Sq, Sk)) < 0.3, -np.inf, rng.standard_normal((1, 1, Sq, Sk)))
        mask[0, 0, 3] = -np.inf
    return dict(q=q, k=k, v=v, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=Hkv != Hq)


FLASH_CASES = [
    # name, B, Sq, Sk, Hq, Hkv, D, Dv, causal, window, softcap, alibi ('h' (Hq,) / 'bh' (B, Hq)), scale
    ('f_basic', 1, 16, 16, 1, 1, 16, 16, False, (-1, -1), 0.0, None, None),
    ('f_dv_mqa', 2, 20, 45, 4, 1, 32, 24, False, (-1, -1), 0.0, None, None),
    ('f_causal_lt', 2, 20, 70, 4, 2, 16, 16, True, (-1, -1), 0.0, None, None),
    ('f_causal_gt', 1, 60, 25, 2, 2, 32, 20, True, (-1, -1), 0.0, None, None),
    ('f_causal_eq', 2, 40, 40, 3, 3, 24, 24, True, (-1, -1), 0.0, None, None),
    ('f_win_left', 1, 30, 60, 2, 2, 16, 16, False, (16, -1), 0.0, None, None),
    ('f_win_right', 2, 24, 24, 2, 1, 16, 16, False, (-1, 5), 0.0, None, None),
    ('f_win_both_gt', 1, 50, 20, 2, 2, 16, 8, False, (10, 3), 0.0, None, None),
    ('f_win_zero', 1, 16, 40, 2, 2, 8, 8, False, (0, 4), 0.0, None, None),
    ('f_win_alibi', 2, 32, 32, 4, 2, 16, 16, False, (8, 8), 0.0, 'h', None),
    ('f_causal_win_lt', 2, 24, 96, 4, 4, 32, 32, True, (20, -1), 0.0, None, None),
    ('f_causal_win_gt', 1, 40, 16, 2, 2, 16, 16, True, (6, -1), 0.0, None, None),
    ('f_softcap', 1, 20, 64, 2, 2, 32, 32, False, (-1, -1), 5.0, None, 0.3),
    ('f_softcap_causal_alibi', 2, 18, 50, 4, 4, 16, 16, True, (-1, -1), 3.0, 'bh', None),
    ('f_alibi_gqa', 2, 30, 30, 4, 2, 16, 16, False, (-1, -1), 0.0, 'h', None),
    ('f_alibi_causal', 1, 25, 80, 2, 1, 32, 32, True, (-1, -1), 0.0, 'bh', None),
    ('f_alibi_scale1', 1, 12, 36, 2, 2, 16, 16, False, (-1, -1), 0.0, 'h', 1.0),
    ('f_decode_gqa12', 2, 1, 77, 12, 2, 64, 64, False, (-1, -1), 0.0, None, None),
    ('f_decode_mqa_causal', 3, 1, 33, 4, 1, 16, 16, True, (-1, -1), 0.0, None, None),
    ('f_gqa41', 2, 16, 48, 8, 2, 16, 16, False, (-1, -1), 0.0, None, None),
    ('f_gqa21_long', 1, 17, 129, 4, 2, 40, 40, False, (-1, -1), 0.0, None, 0.37),
]


def make_flash_case(case, seed):
    name, B, Sq, Sk, Hq, Hkv, D, Dv, causal, window, softcap, alibi, scale = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, Sq, Hq, D))
    k = rng.standard_normal((B, Sk, Hkv, D))
    v = rng.standard_normal((B, Sk, Hkv, Dv))
    slopes = None
    if alibi == 'h':
        slopes = np.array([2.0 ** (-8.0 * (h + 1) / Hq) for h in range(Hq)], dtype=np.float32)
    elif alibi == 'bh':
        slopes = rng.uniform(0.05, 0.9, size=(B, Hq)).astype(np.float32)
    return dict(q=q, k=k, v=v, softmax_scale=scale, causal=causal, window_size=window, softcap=softcap,
                alibi_slopes=slopes)


BWD_CASES = [
    # name, q lead, kv lead, Sq, Sk, D, Dv, mask kind, scale
    ('b2d', (), (), 20, 20, 16, 16, None, None),
    ('b2d_decode', (), (), 1, 33, 8, 8, 'rand', 0.5),
    ('b3d', (3,), (3,), 17, 40, 24, 20, None, 0.37),
    ('b3d_decode', (2,), (2,), 1, 30, 16, 12, None, None),
    ('b4d_rand', (2, 3), (2, 3), 32, 48, 32, 32, 'rand', None),
    ('b4d_pad', (2, 4), (2, 4), 1, 129, 64, 48, 'pad', None),
    ('b4d_causal', (2, 2), (2, 2), 40, 24, 16, 24, 'causal2d', 0.5),
    ('b4d_mqa', (2, 4), (2, 1), 24, 36, 16, 16, 'rand_h1', None),
    ('b4d_mqa_decode', (2, 3), (2, 1), 1, 50, 32, 16, 'pad', None),
    ('b4d_h1', (2, 1), (2, 1), 16, 16, 8, 8, None, 1.0),
    ('b4d_band', (1, 2), (1, 2), 33, 64, 40, 40, 'band', 0.37),
    ('b4d_sq1_h1', (1, 1), (1, 1), 1, 20, 16, 16, None, None),
]


def make_bwd_case(case, seed):
    name, ql, kl, Sq, Sk, D, Dv, mk, scale = case
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(ql + (Sq, D))
    k = rng.standard_normal(kl + (Sk, D))
    v = rng.standard_normal(kl + (Sk, Dv))
    d_out = rng.standard_normal(ql + (Sq, Dv))
    mask = None
    if mk == 'rand':
        mask = _rand_keep(rng, ql + (Sq, Sk))
    elif mk == 'rand_h1':
        mask = _rand_keep(rng, (ql[0], 1, Sq, Sk))
    elif mk == 'pad':
        mask = _pad_keep(ql[0], Sk, [Sk - 9, 0])
    elif mk == 'causal2d':
        mask = np.tril(np.ones((Sq, Sk), dtype=bool))
    elif mk == 'band':
        mask = _band_keep(ql[1], Sq, Sk)
    return dict(q=q, k=k, v=v, d_out=d_out, mask=mask, scale=scale)


# ----------------------------------------------------------------------------------------------------------
# Running kernels
# ----------------------------------------------------------------------------------------------------------
def _round(x, dtype):
    return None if x is None else np.asarray(x).astype(NP_DT[dtype]).astype(np.float64)


def np_setup(case, dtype, seed):
    c = make_np_case(case, seed)
    q, k, v = (_round(c[n], dtype) for n in 'qkv')
    ref = ref_np(q, k, v, keep=c['mask'], scale=c['scale'])
    arrays = {'q': q.astype(NP_DT[dtype]), 'k': k.astype(NP_DT[dtype]), 'v': v.astype(NP_DT[dtype])}
    if c['mask'] is not None:
        arrays['mask'] = c['mask']

    def call(fn, a):
        return fn(a['q'], a['k'], a['v'], mask=a.get('mask'), scale=c['scale'])
    return arrays, call, ref


def sdpa_setup(case, dtype, seed):
    c = make_sdpa_case(case, seed)
    q, k, v = (_round(c[n], dtype) for n in 'qkv')
    m = c['attn_mask']
    tm = None
    if m is not None:
        tm = torch.tensor(m) if m.dtype == bool else torch.tensor(_round(m, dtype))
    ref = ref_sdpa(torch.tensor(q), torch.tensor(k), torch.tensor(v), attn_mask=tm, is_causal=c['is_causal'],
                   scale=c['scale'], enable_gqa=c['enable_gqa']).numpy()
    tdt = TORCH_DT[dtype]
    arrays = {'query': torch.tensor(q, dtype=tdt), 'key': torch.tensor(k, dtype=tdt),
              'value': torch.tensor(v, dtype=tdt)}
    if tm is not None:
        arrays['attn_mask'] = tm if tm.dtype == torch.bool else tm.to(tdt)

    def call(fn, a):
        return fn(a['query'], a['key'], a['value'], attn_mask=a.get('attn_mask'), dropout_p=0.0,
                  is_causal=c['is_causal'], scale=c['scale'], enable_gqa=c['enable_gqa'])
    return arrays, call, ref


def flash_setup(case, dtype, seed):
    c = make_flash_case(case, seed)
    q, k, v = (_round(c[n], dtype) for n in 'qkv')
    sl = None if c['alibi_slopes'] is None else torch.tensor(c['alibi_slopes'])
    ref = ref_flash(torch.tensor(q), torch.tensor(k), torch.tensor(v), softmax_scale=c['softmax_scale'],
                    causal=c['causal'], window_size=c['window_size'], softcap=c['softcap'],
                    alibi_slopes=sl).numpy()
    tdt = TORCH_DT[dtype]
    arrays = {'q': torch.tensor(q, dtype=tdt), 'k': torch.tensor(k, dtype=tdt), 'v': torch.tensor(v, dtype=tdt)}
    if sl is not None:
        arrays['alibi_slopes'] = sl

    def call(fn, a):
        return fn(a['q'], a['k'], a['v'], dropout_p=0.0, softmax_scale=c['softmax_scale'], causal=c['causal'],
                  window_size=c['window_size'], softcap=c['softcap'], alibi_slopes=a.get('alibi_slopes'),
                  deterministic=False, return_attn_probs=False)
    return arrays, call, ref


def bwd_setup(case, dtype, seed):
    c = make_bwd_case(case, seed)
    q, k, v, do = (_round(c[n], dtype) for n in ('q', 'k', 'v', 'd_out'))
    ref = ref_bwd(q, k, v, do, c['mask'], c['scale'])
    arrays = {n: x.astype(NP_DT[dtype]) for n, x in (('q', q), ('k', k), ('v', v), ('d_out', do))}
    if c['mask'] is not None:
        arrays['mask'] = c['mask']

    def call(fn, a):
        return fn(a['q'], a['k'], a['v'], a['d_out'], mask=a.get('mask'), scale=c['scale'])
    return arrays, call, ref


SETUP = {'numpy_fwd': (NP_CASES, np_setup), 'torch_sdpa_fwd': (SDPA_CASES, sdpa_setup),
         'flash_fwd': (FLASH_CASES, flash_setup), 'numpy_bwd': (BWD_CASES, bwd_setup)}


def _copy(a):
    return {n: (x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)) for n, x in a.items()}


def _same(a, b):
    for n in a:
        x, y = a[n], b[n]
        if isinstance(x, torch.Tensor):
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                return False
        elif x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y):
            return False
    return True


def _err_one(out, ref, dtype):
    """Relative Frobenius error; inf for a wrong type, dtype or shape, or a non-finite value."""
    if isinstance(out, torch.Tensor):
        if out.dtype != TORCH_DT[dtype]:
            return math.inf
        out = out.detach().numpy()
    elif isinstance(out, np.ndarray):
        if out.dtype != NP_DT[dtype]:
            return math.inf
    else:
        return math.inf
    if out.shape != ref.shape:
        return math.inf
    out = out.astype(np.float64)
    if not np.all(np.isfinite(out)):
        return math.inf
    den = float(np.linalg.norm(ref))
    num = float(np.linalg.norm(out - ref))
    return num / den if den > 0 else num


def run_kernel(fn, module, case, dtype, seed):
    """Worst error over two calls with fresh input copies; also whether the inputs were modified."""
    arrays, call, ref = SETUP[module][1](case, dtype, seed)
    worst, modified = 0.0, False
    for _ in range(2):
        a = _copy(arrays)
        try:
            with np.errstate(all='ignore'):
                out = call(fn, a)
            if module == 'numpy_bwd':
                if not isinstance(out, tuple) or len(out) != 3:
                    err = math.inf
                else:
                    err = max(_err_one(o, r, dtype) for o, r in zip(out, ref))
            else:
                err = _err_one(out, ref, dtype)
        except Exception:
            err = math.inf
        if not _same(a, arrays):
            modified = True
        worst = max(worst, err)
    return worst, modified


# ----------------------------------------------------------------------------------------------------------
# Reference cross-checks
# ----------------------------------------------------------------------------------------------------------
def _rel(a, b):
    den = float(np.linalg.norm(b))
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b))) / (den if den > 0 else 1.0)


def cross_check():
    worst = 0.0
    for i, case in enumerate(SDPA_CASES):
        c = make_sdpa_case(case, 1000 + i)
        q, k, v, m = c['q'], c['k'], c['v'], c['attn_mask']
        Hq, Hkv = q.shape[1], k.shape[1]
        idx = np.arange(Hq) // (Hq // Hkv)
        Sq, Sk = q.shape[2], k.shape[2]
        keep = np.ones((Sq, Sk), dtype=bool)
        bias = None
        if c['is_causal']:
            keep = np.arange(Sk)[None, :] <= np.arange(Sq)[:, None]
        if m is not None:
            if m.dtype == bool:
                keep = keep & m
            else:
                bias = m
        tm = None if m is None else torch.tensor(m)
        a = ref_sdpa(torch.tensor(q), torch.tensor(k), torch.tensor(v), attn_mask=tm, is_causal=c['is_causal'],
                     scale=c['scale'], enable_gqa=c['enable_gqa']).numpy()
        b = ref_np(q, k[:, idx], v[:, idx], keep=keep, bias=bias, scale=c['scale'])
        worst = max(worst, _rel(a, b))
    for i, case in enumerate(FLASH_CASES):
        c = make_flash_case(case, 2000 + i)
        q, k, v = c['q'], c['k'], c['v']
        B, Sq, Hq, D = q.shape
        Sk, Hkv = k.shape[1], k.shape[2]
        idx = np.arange(Hq) // (Hq // Hkv)
        ii = np.arange(Sq)[:, None] + (Sk - Sq)
        jj = np.arange(Sk)[None, :]
        left, right = c['window_size']
        keep = np.ones((Sq, Sk), dtype=bool)
        if c['causal']:
            keep &= jj <= ii
            right = 0
        if left >= 0:
            keep &= jj >= ii - left
        if right >= 0:
            keep &= jj <= ii + right
        bias = None
        if c['alibi_slopes'] is not None:
            sl = c['alibi_slopes'].astype(np.float64)
            sl = np.broadcast_to(sl, (B, Hq))
            bias = -sl[:, :, None, None] * np.abs(ii - jj)
        sl_t = None if c['alibi_slopes'] is None else torch.tensor(c['alibi_slopes'])
        a = ref_flash(torch.tensor(q), torch.tensor(k), torch.tensor(v), softmax_scale=c['softmax_scale'],
                      causal=c['causal'], window_size=c['window_size'], softcap=c['softcap'],
                      alibi_slopes=sl_t).numpy()
        b = ref_np(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)[:, idx], v.transpose(0, 2, 1, 3)[:, idx],
                   keep=keep, bias=bias, scale=c['softmax_scale'], softcap=c['softcap']).transpose(0, 2, 1, 3)
        worst = max(worst, _rel(a, b))
    for i, case in enumerate(BWD_CASES):
        c = make_bwd_case(case, 3000 + i)
        r = ref_bwd(c['q'], c['k'], c['v'], c['d_out'], c['mask'], c['scale'])
        g = autograd_bwd(c['q'], c['k'], c['v'], c['d_out'], c['mask'], c['scale'])
        worst = max(worst, max(_rel(x, y) for x, y in zip(r, g)))
    return worst


# ----------------------------------------------------------------------------------------------------------
# CATALOG and BUG-comment checks
# ----------------------------------------------------------------------------------------------------------
def check_catalog(mod, api, problems, seen_names, seen_sources):
    cat = getattr(mod, 'CATALOG', None)
    if not isinstance(cat, list):
        problems.append(f'{mod.__name__}: no CATALOG list')
        return []
    n_broken = n_ok = 0
    for e in cat:
        tag = f"{mod.__name__}:{e.get('name')}"
        if set(e) != CATALOG_KEYS:
            problems.append(f'{tag}: CATALOG keys {sorted(set(e) ^ CATALOG_KEYS)}')
            continue
        if e['api'] != api:
            problems.append(f'{tag}: api {e["api"]} != {api}')
        if not callable(getattr(mod, e['fn'], None)):
            problems.append(f'{tag}: fn {e["fn"]} missing')
        if e['name'] in seen_names:
            problems.append(f'{tag}: duplicate name')
        seen_names.add(e['name'])
        if e['dtype'] not in ('float64', 'float32'):
            problems.append(f'{tag}: dtype {e["dtype"]}')
        if not isinstance(e['features'], list) or not set(e['features']) <= API_FEATURES[api]:
            problems.append(f'{tag}: features {e["features"]}')
        if e['correct'] is True:
            n_ok += 1
            if any(e[x] is not None for x in ('bug', 'parameter', 'source', 'report')):
                problems.append(f'{tag}: correct kernel with bug/parameter/source/report')
            if e['name'] in TRIGGERS:
                problems.append(f'{tag}: correct kernel has a TRIGGERS entry')
        elif e['correct'] is False:
            n_broken += 1
            if not isinstance(e['bug'], str) or not re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)*', e['bug']):
                problems.append(f'{tag}: bug not kebab-case')
            if not isinstance(e['parameter'], str) or 'Triggers: ' not in e['parameter']:
                problems.append(f'{tag}: parameter without "Triggers: "')
            src = e['source'] or ''
            mm = re.fullmatch(r'([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#([0-9]+)', src)
            rep = e['report'] or ''
            if not mm or not re.fullmatch(r'https://github\.com/' + re.escape(mm.group(1)) + r'/(issues|pull)/'
                                          + mm.group(2), rep):
                problems.append(f'{tag}: source/report disagree ({src}, {rep})')
            if src.lower() in seen_sources:
                problems.append(f'{tag}: source cited twice')
            seen_sources.add(src.lower())
            if e['name'] not in TRIGGERS or not TRIGGERS[e['name']]:
                problems.append(f'{tag}: no TRIGGERS entry')
        else:
            problems.append(f'{tag}: correct is not a bool')
    if n_broken < 6 or n_ok < 2:
        problems.append(f'{mod.__name__}: {n_broken} broken / {n_ok} correct (need >= 6 / >= 2)')
    return cat


def check_bug_comments(mod, cat, problems):
    path = os.path.join(HERE, mod.__name__ + '.py')
    with open(path) as f:
        text = f.read()
    parts = re.split(r'^# --- kernel: (\w+) ---$', text, flags=re.M)
    if parts[0].count('# BUG:'):
        problems.append(f'{mod.__name__}: BUG comment outside the kernel sections')
    sections = dict(zip(parts[1::2], parts[2::2]))
    for e in cat:
        sec = sections.get(e['fn'])
        if sec is None:
            problems.append(f'{mod.__name__}:{e["name"]}: no section for {e["fn"]}')
            continue
        n = sec.count('# BUG:')
        want = 0 if e['correct'] else 1
        if n != want:
            problems.append(f'{mod.__name__}:{e["name"]}: {n} BUG comments in its section (want {want})')
    fns = {e['fn'] for e in cat}
    for s in sections:
        if s not in fns:
            problems.append(f'{mod.__name__}: section {s} has no CATALOG entry')


# ----------------------------------------------------------------------------------------------------------
def main():
    t0 = time.time()
    problems = []
    xc = cross_check()
    print('reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): '
          f'worst {xc:.2g}')
    if not xc < 1e-12:
        problems.append(f'reference cross-check {xc:.3g} >= 1e-12')
    names, sources = set(), set()
    summary = []
    print('worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)')
    for mod_name, api in MODULES:
        mod = importlib.import_module(mod_name)
        cat = check_catalog(mod, api, problems, names, sources)
        check_bug_comments(mod, cat, problems)
        cases = SETUP[mod_name][0]
        case_names = [c[0] for c in cases]
        print(f'{mod_name}.py ({api})')
        nb = nc = 0
        for e in cat:
            fn = getattr(mod, e['fn'], None)
            if fn is None:
                continue
            trig = set(TRIGGERS.get(e['name'], []))
            for t in trig - set(case_names):
                problems.append(f'{e["name"]}: TRIGGERS names unknown case {t}')
            worst = {'float64': 0.0, 'float32': 0.0}
            for ci, case in enumerate(cases):
                for dtype in ('float64', 'float32'):
                    err, modified = run_kernel(fn, mod_name, case, dtype, 10 * ci + (dtype == 'float32'))
                    worst[dtype] = max(worst[dtype], err)
                    if modified:
                        problems.append(f'{e["name"]}: modifies its inputs on {case[0]} {dtype}')
                    if e['correct'] or case[0] not in trig:
                        if not err <= OK_BOUND[dtype]:
                            problems.append(f'{e["name"]}: {case[0]} {dtype} error {err:.3g} > {OK_BOUND[dtype]}')
                    elif dtype == e['dtype'] and not err > DIFF_BOUND[dtype]:
                        problems.append(f'{e["name"]}: trigger case {case[0]} {dtype} does not differ ({err:.3g})')
            status = 'ok    ' if e['correct'] else 'broken'
            nb += not e['correct']
            nc += bool(e['correct'])
            print(f'  {e["name"]:<45}{status} f64 {worst["float64"]:<10.3g}f32 {worst["float32"]:.3g}')
        summary.append(f'{mod_name} {nb} broken + {nc} correct')
    for t in TRIGGERS:
        if t not in names:
            problems.append(f'TRIGGERS entry {t} has no CATALOG kernel')
    dt = time.time() - t0
    if problems:
        for p in problems:
            print('PROBLEM:', p)
        print(f'SELF-CHECK FAILED ({dt:.1f} s): {len(problems)} problem(s)')
        return 1
    print(f'SELF-CHECK PASSED ({dt:.1f} s): ' + ', '.join(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
