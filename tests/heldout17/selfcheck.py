"""Self-check of held-out set 17 (see README.md): exit status 0 when every check passes, 1 otherwise.

Run with:  /work/main/.venv/bin/python -B tests/heldout17/selfcheck.py
"""
import sys

sys.dont_write_bytecode = True

import importlib.util  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [('numpy_fwd.py', 'refimpl'), ('torch_sdpa_fwd.py', 'torch-sdpa'), ('flash_fwd.py', 'flash-attn'),
           ('numpy_bwd.py', 'numpy-backward')]
TOL_CORRECT = {'float64': 1e-10, 'float32': 1e-5}
TOL_DIFFER = {'float64': 1e-8, 'float32': 1e-4}
CATALOG_KEYS = {'name', 'api', 'fn', 'correct', 'bug', 'parameter', 'source', 'report', 'dtype', 'features'}
FEATURES = {'mask', 'causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'}

# Cases on which each broken kernel differs from the reference (in its CATALOG dtype); it must conform on all others.
TRIGGERS = {
    'np-dgl-padded-neighbours-nan': ['n03', 'n05', 'n11'],
    'np-sagan-attention-not-transposed': ['n01', 'n02', 'n03', 'n04', 'n05', 'n06', 'n07', 'n08', 'n09', 'n10',
                                          'n11'],
    'np-uvadlc-merge-heads-embed-dim': ['n02', 'n04', 'n06', 'n10'],
    'np-jiant-bert-mask-sign': ['n03', 'n05', 'n06', 'n07', 'n10', 'n11'],
    'np-odyssey-transpose-all-axes': ['n03', 'n04', 'n05', 'n06', 'n07', 'n08', 'n10'],
    'np-mlfundamentals-global-softmax-sum': ['n01', 'n03', 'n04', 'n05', 'n06', 'n07', 'n08', 'n09', 'n10', 'n11'],
    'sdpa-ttmetal-scale-attribute-ignored': ['s10', 's14'],
    'sdpa-llmsfromscratch-causal-mask-polarity': ['s02', 's03', 's04', 's05', 's06'],
    'sdpa-tritonmsl-even-tiles-drop-causal': ['s02', 's06'],
    'sdpa-executorch-decode-ignores-causal': ['s05'],
    'sdpa-gluonts-mask-fill-positive': ['s07', 's13'],
    'sdpa-coremltools-enable-gqa-unread': ['s11', 's14'],
    'flash-te-cu-seqlens-k-from-q': ['f03', 'f04', 'f07', 'f08', 'f12', 'f14', 'f17'],
    'flash-sglang-softcap-not-planned': ['f10', 'f11'],
    'flash-sageattn-causal-top-left': ['f03', 'f04', 'f08', 'f14'],
    'flash-fastvideo-sm-scale-swallowed': ['f10', 'f15'],
    'flash-localattn-window-and-causal': ['f08', 'f09'],
    'flash-trtllm-output-like-query': ['f03', 'f13', 'f17'],
    'bwd-flashattn-dout-layout': ['b02', 'b03', 'b04', 'b05', 'b09'],
    'bwd-qeep-rowsum-no-keepdims': ['b01', 'b02', 'b03', 'b04', 'b05', 'b06', 'b08', 'b09'],
    'bwd-mslk-mask-gate-never-true': ['b02', 'b03', 'b08', 'b09'],
    'bwd-keqa-softmax-size-one-axis': ['b01', 'b02', 'b03', 'b04', 'b05', 'b06', 'b07', 'b08', 'b09'],
    'bwd-te-kv-view-query-heads': ['b04', 'b09'],
    'bwd-blocks-energies-no-max': ['b06'],
}


def load(fname):
    spec = importlib.util.spec_from_file_location('heldout17_' + fname[:-3], os.path.join(HERE, fname))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------------------------
# References (float64, written from the contracts in README.md)
# ----------------------------------------------------------------------------------------------------------------
def _softmax_rows(s):
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


def ref_attend(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    return np.matmul(_softmax_rows(s), v)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (x.detach().double().numpy() for x in (query, key, value))
    B, Hq, L, D = q.shape
    Hkv, S, Dv = k.shape[1], k.shape[2], v.shape[3]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    out = np.zeros((B, Hq, L, Dv))
    mask = None
    if attn_mask is not None:
        mask = attn_mask.numpy() if attn_mask.dtype == torch.bool else attn_mask.double().numpy()
        mask = np.broadcast_to(mask, (B, Hq, L, S))
    for b in range(B):
        for h in range(Hq):
            kh = h // (Hq // Hkv)
            s = q[b, h] @ k[b, kh].T * scale
            if is_causal:
                for i in range(L):
                    s[i, i + 1:] = -np.inf
            if mask is not None:
                s = np.where(mask[b, h], s, -np.inf) if mask.dtype == bool else s + mask[b, h]
            out[b, h] = _softmax_rows(s) @ v[b, kh]
    return out


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    qn, kn, vn = (x.detach().double().numpy() for x in (q, k, v))
    B, Sq, Hq, D = qn.shape
    Sk, Hkv, Dv = kn.shape[1], kn.shape[2], vn.shape[3]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    off = Sk - Sq
    left, right = window_size
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.double().numpy()
        slopes = np.broadcast_to(slopes, (B, Hq))
    out = np.zeros((B, Sq, Hq, Dv))
    for b in range(B):
        for h in range(Hq):
            kh = h // (Hq // Hkv)
            s = qn[b, :, h] @ kn[b, :, kh].T * scale
            if softcap > 0:
                s = softcap * np.tanh(s / softcap)
            for i in range(Sq):
                for j in range(Sk):
                    if slopes is not None:
                        s[i, j] -= slopes[b, h] * abs(i + off - j)
                    ok = True
                    if causal and j > i + off:
                        ok = False
                    if left >= 0 and j < i + off - left:
                        ok = False
                    if right >= 0 and j > i + off + right:
                        ok = False
                    if not ok:
                        s[i, j] = -np.inf
            out[b, :, h] = _softmax_rows(s) @ vn[b, :, kh]
    return out


def _sum_to(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    p = _softmax_rows(s)
    o = np.matmul(p, v)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), do), v.shape)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(do * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    return dq, dk, dv


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    qt, kt, vt = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-1, -2)) * scale
    if mask is not None:
        keep = torch.tensor(np.broadcast_to(mask, tuple(s.shape)).copy())
        has_key = keep.any(dim=-1, keepdim=True)
        s = s.masked_fill(~keep, float('-inf'))
        s = torch.where(has_key, s, torch.zeros_like(s))
        p = torch.softmax(s, dim=-1) * has_key
    else:
        p = torch.softmax(s, dim=-1)
    o = torch.matmul(p, vt)
    (o * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------------------
# Cases (float64 inputs; the float32 run uses the same inputs rounded to float32)
# ----------------------------------------------------------------------------------------------------------------
def _rng(tag):
    return np.random.default_rng(sum(ord(c) * 131 ** i for i, c in enumerate(tag)) % (2 ** 32))


def _randn(rng, *shape):
    return rng.standard_normal(shape)


def _random_mask(rng, shape, p=0.7, empty_row=None):
    m = rng.random(shape) < p
    m[..., 0] = m[..., 0] | (rng.random(shape[:-1]) < 0.5)
    if empty_row is not None:
        m[empty_row] = False
    return m


def _pad_mask(lengths, sk, left=False):
    m = np.zeros((len(lengths), 1, 1, sk), dtype=bool)
    for b, n in enumerate(lengths):
        if left:
            m[b, 0, 0, sk - n:] = n > 0
        else:
            m[b, 0, 0, :n] = True
    return m


def _extreme(rng, sq, sk, d=64):
    """Integer q and k in [-8, 8] except channel 0 (q 256, k 192): with scale 1/64 every score is 768 plus a few
    units (beyond exp's float64 range), exact in float32, with a well-conditioned softmax and gradients."""
    q = rng.integers(-8, 9, size=(sq, d)).astype(np.float64)
    k = rng.integers(-8, 9, size=(sk, d)).astype(np.float64)
    q[:, 0] = 256.0
    k[:, 0] = 192.0
    return q, k


def numpy_cases():
    c = []
    r = _rng('n01')
    c.append(('n01', '2-D Sq=Sk=37 D=16', dict(q=_randn(r, 37, 16), k=_randn(r, 37, 16), v=_randn(r, 37, 16))))
    r = _rng('n02')
    c.append(('n02', '2-D Sq=1 Sk=50 D=24 Dv=20', dict(q=_randn(r, 1, 24), k=_randn(r, 50, 24), v=_randn(r, 50, 20))))
    r = _rng('n03')
    c.append(('n03', '3-D H=3 Sq=20 Sk=33 D=32, random mask with an empty row',
              dict(q=_randn(r, 3, 20, 32), k=_randn(r, 3, 33, 32), v=_randn(r, 3, 33, 32),
                   mask=_random_mask(r, (3, 20, 33), empty_row=(1, 7)))))
    r = _rng('n04')
    c.append(('n04', '4-D B=2 H=2 Sq=Sk=64 D=16 Dv=24',
              dict(q=_randn(r, 2, 2, 64, 16), k=_randn(r, 2, 2, 64, 16), v=_randn(r, 2, 2, 64, 24))))
    r = _rng('n05')
    c.append(('n05', '4-D B=2 H=3 Sq=Sk=45 D=40, key padding lengths (30, 0), scale 0.37',
              dict(q=_randn(r, 2, 3, 45, 40), k=_randn(r, 2, 3, 45, 40), v=_randn(r, 2, 3, 45, 40),
                   mask=_pad_mask([30, 0], 45), scale=0.37)))
    r = _rng('n06')
    c.append(('n06', '4-D B=2 H=2 Sq=1 Sk=129 D=64 Dv=48, left padding lengths (129, 70)',
              dict(q=_randn(r, 2, 2, 1, 64), k=_randn(r, 2, 2, 129, 64), v=_randn(r, 2, 2, 129, 48),
                   mask=_pad_mask([129, 70], 129, left=True))))
    r = _rng('n07')
    c.append(('n07', '3-D H=2 Sq=100 Sk=77 D=8, top-left causal mask',
              dict(q=_randn(r, 2, 100, 8), k=_randn(r, 2, 77, 8), v=_randn(r, 2, 77, 8),
                   mask=np.tril(np.ones((100, 77), dtype=bool)))))
    r = _rng('n08')
    c.append(('n08', '4-D B=1 H=1 Sq=Sk=32 D=16, scale 0.5',
              dict(q=_randn(r, 1, 1, 32, 16), k=_randn(r, 1, 1, 32, 16), v=_randn(r, 1, 1, 32, 16), scale=0.5)))
    r = _rng('n09')
    q, k = _extreme(r, 12, 40)
    c.append(('n09', '2-D Sq=12 Sk=40 D=64, extreme logits (integer q, k; scale 1/64; scores ~768)',
              dict(q=q, k=k, v=_randn(r, 40, 64), scale=1.0 / 64)))
    r = _rng('n10')
    i = np.arange(96)
    band = np.stack([np.stack([np.abs(i[:, None] - i[None, :]) <= w for w in ws]) for ws in ((3, 10), (17, 0))])
    c.append(('n10', '4-D B=2 H=2 Sq=Sk=96 D=24 Dv=12, per-head band masks',
              dict(q=_randn(r, 2, 2, 96, 24), k=_randn(r, 2, 2, 96, 24), v=_randn(r, 2, 2, 96, 12), mask=band)))
    r = _rng('n11')
    c.append(('n11', '2-D Sq=Sk=30 D=16, random mask with an empty row',
              dict(q=_randn(r, 30, 16), k=_randn(r, 30, 16), v=_randn(r, 30, 16),
                   mask=_random_mask(r, (30, 30), empty_row=(4,)))))
    return c


def _t(a):
    return torch.tensor(a)


def sdpa_cases():
    c = []

    def qkv(r, b, hq, hkv, L, S, d, dv):
        return dict(query=_t(_randn(r, b, hq, L, d)), key=_t(_randn(r, b, hkv, S, d)),
                    value=_t(_randn(r, b, hkv, S, dv)))

    r = _rng('s01')
    c.append(('s01', 'B=2 H=3 L=S=40 D=16', qkv(r, 2, 3, 3, 40, 40, 16, 16)))
    r = _rng('s02')
    c.append(('s02', 'is_causal L=S=64 D=32', dict(qkv(r, 1, 2, 2, 64, 64, 32, 32), is_causal=True)))
    r = _rng('s03')
    c.append(('s03', 'is_causal L=20 < S=50 D=24 Dv=16', dict(qkv(r, 2, 2, 2, 20, 50, 24, 16), is_causal=True)))
    r = _rng('s04')
    c.append(('s04', 'is_causal L=70 > S=33 D=16', dict(qkv(r, 1, 3, 3, 70, 33, 16, 16), is_causal=True)))
    r = _rng('s05')
    c.append(('s05', 'is_causal L=1 S=77 D=32', dict(qkv(r, 2, 2, 2, 1, 77, 32, 32), is_causal=True)))
    r = _rng('s06')
    c.append(('s06', 'is_causal GQA 6:1 L=S=96 D=16',
              dict(qkv(r, 1, 6, 1, 96, 96, 16, 16), is_causal=True, enable_gqa=True)))
    r = _rng('s07')
    c.append(('s07', 'bool mask with an empty row L=30 S=45 D=16 Dv=20',
              dict(qkv(r, 2, 2, 2, 30, 45, 16, 20),
                   attn_mask=_t(_random_mask(r, (2, 2, 30, 45), empty_row=(1, 0, 3))))))
    r = _rng('s08')
    c.append(('s08', 'additive finite bias (1, 1, L, S) L=25 S=60 D=32',
              dict(qkv(r, 2, 2, 2, 25, 60, 32, 32), attn_mask=_t(2.0 * _randn(r, 1, 1, 25, 60)))))
    r = _rng('s09')
    add = np.where(_random_mask(r, (1, 2, 16, 16), empty_row=(0, 1, 5)), 0.5 * _randn(r, 1, 2, 16, 16), -np.inf)
    c.append(('s09', 'additive mask with -inf entries and a fully -inf row L=S=16',
              dict(qkv(r, 1, 2, 2, 16, 16, 16, 16), attn_mask=_t(add))))
    r = _rng('s10')
    c.append(('s10', 'scale 0.3 L=33 S=65 D=64 Dv=48', dict(qkv(r, 1, 2, 2, 33, 65, 64, 48), scale=0.3)))
    r = _rng('s11')
    c.append(('s11', 'GQA 4:1 (Hq=8, Hkv=2) L=S=50 D=16', dict(qkv(r, 1, 8, 2, 50, 50, 16, 16), enable_gqa=True)))
    r = _rng('s12')
    c.append(('s12', 'MQA decode Hq=4 Hkv=1 L=1 S=129 D=32', dict(qkv(r, 2, 4, 1, 1, 129, 32, 32), enable_gqa=True)))
    r = _rng('s13')
    c.append(('s13', 'bool key padding (B, 1, 1, S) lengths (40, 0) L=S=64',
              dict(qkv(r, 2, 2, 2, 64, 64, 16, 16), attn_mask=_t(_pad_mask([40, 0], 64)))))
    r = _rng('s14')
    c.append(('s14', 'scale 0.5, GQA 2:1 (Hq=4, Hkv=2), additive bias, L=S=24',
              dict(qkv(r, 1, 4, 2, 24, 24, 16, 16), attn_mask=_t(_randn(r, 1, 1, 24, 24)), scale=0.5,
                   enable_gqa=True)))
    return c


def flash_cases():
    c = []

    def qkv(r, b, sq, sk, hq, hkv, d, dv):
        return dict(q=_t(_randn(r, b, sq, hq, d)), k=_t(_randn(r, b, sk, hkv, d)), v=_t(_randn(r, b, sk, hkv, dv)))

    def slopes(hq, b=None):
        base = torch.tensor([2.0 ** (-8.0 * (h + 1) / hq) for h in range(hq)], dtype=torch.float32)
        if b is None:
            return base
        return torch.stack([base * (1.0 + 0.25 * i) for i in range(b)])

    r = _rng('f01')
    c.append(('f01', 'B=2 Sq=Sk=48 H=3 D=32', qkv(r, 2, 48, 48, 3, 3, 32, 32)))
    r = _rng('f02')
    c.append(('f02', 'causal Sq=Sk=40', dict(qkv(r, 1, 40, 40, 2, 2, 16, 16), causal=True)))
    r = _rng('f03')
    c.append(('f03', 'causal Sq=20 < Sk=57 D=24 Dv=16', dict(qkv(r, 2, 20, 57, 2, 2, 24, 16), causal=True)))
    r = _rng('f04')
    c.append(('f04', 'causal Sq=70 > Sk=33 B=2', dict(qkv(r, 2, 70, 33, 2, 2, 16, 16), causal=True)))
    r = _rng('f05')
    c.append(('f05', 'window (16, -1) Sq=Sk=64', dict(qkv(r, 1, 64, 64, 2, 2, 32, 32), window_size=(16, -1))))
    r = _rng('f06')
    c.append(('f06', 'window (-1, 5) Sq=Sk=50', dict(qkv(r, 2, 50, 50, 1, 1, 16, 16), window_size=(-1, 5))))
    r = _rng('f07')
    c.append(('f07', 'window (10, 3) Sq=60 > Sk=45 B=2', dict(qkv(r, 2, 60, 45, 2, 2, 16, 16), window_size=(10, 3))))
    r = _rng('f08')
    c.append(('f08', 'causal + window (20, -1) Sq=30 < Sk=90',
              dict(qkv(r, 1, 30, 90, 2, 2, 16, 16), causal=True, window_size=(20, -1))))
    r = _rng('f09')
    c.append(('f09', 'causal + window (6, -1) Sq=Sk=64',
              dict(qkv(r, 2, 64, 64, 2, 2, 16, 16), causal=True, window_size=(6, -1))))
    r = _rng('f10')
    c.append(('f10', 'softcap 5 with softmax_scale 0.3 Sq=Sk=32',
              dict(qkv(r, 1, 32, 32, 2, 2, 32, 32), softcap=5.0, softmax_scale=0.3)))
    r = _rng('f11')
    c.append(('f11', 'softcap 3 + causal + ALiBi (Hq,) Sq=Sk=36 H=4',
              dict(qkv(r, 2, 36, 36, 4, 4, 16, 16), softcap=3.0, causal=True, alibi_slopes=slopes(4))))
    r = _rng('f12')
    c.append(('f12', 'ALiBi (B, Hq) non-causal Sq=25 Sk=40',
              dict(qkv(r, 2, 25, 40, 2, 2, 16, 16), alibi_slopes=slopes(2, 2))))
    r = _rng('f13')
    c.append(('f13', 'GQA 4:1 (Hq=8, Hkv=2) Sq=Sk=33 D=64 Dv=32', qkv(r, 1, 33, 33, 8, 2, 64, 32)))
    r = _rng('f14')
    c.append(('f14', 'MQA decode causal Sq=1 Sk=100 Hq=6 Hkv=1', dict(qkv(r, 2, 1, 100, 6, 1, 32, 32), causal=True)))
    r = _rng('f15')
    c.append(('f15', 'softmax_scale 0.5 Sq=Sk=16 D=16', dict(qkv(r, 1, 16, 16, 1, 1, 16, 16), softmax_scale=0.5)))
    r = _rng('f16')
    c.append(('f16', 'window (0, 4) + ALiBi (Hq,) Sq=Sk=30',
              dict(qkv(r, 1, 30, 30, 2, 2, 16, 16), window_size=(0, 4), alibi_slopes=slopes(2))))
    r = _rng('f17')
    c.append(('f17', 'GQA 12:2 decode Sq=1 Sk=64 D=32 Dv=24', qkv(r, 2, 1, 64, 12, 2, 32, 24)))
    return c


def bwd_cases():
    c = []

    def add(cid, desc, r, qs, ks, vs, **kw):
        c.append((cid, desc, dict(q=_randn(r, *qs), k=_randn(r, *ks), v=_randn(r, *vs),
                                  d_out=_randn(r, *(qs[:-1] + (vs[-1],))), **kw)))

    add('b01', '2-D Sq=Sk=30 D=16', _rng('b01'), (30, 16), (30, 16), (30, 16))
    r = _rng('b02')
    add('b02', '3-D H=2 Sq=20 Sk=45 D=24 Dv=16, random mask with an empty row', r, (2, 20, 24), (2, 45, 24),
        (2, 45, 16), mask=_random_mask(r, (2, 20, 45), empty_row=(0, 3)))
    add('b03', '4-D B=2 H=3 Sq=Sk=40 D=32, key padding lengths (25, 0)', _rng('b03'), (2, 3, 40, 32), (2, 3, 40, 32),
        (2, 3, 40, 32), mask=_pad_mask([25, 0], 40))
    add('b04', '4-D B=2 H=4, MQA k/v head axis 1, Sq=33 Sk=50 D=16 Dv=24', _rng('b04'), (2, 4, 33, 16),
        (2, 1, 50, 16), (2, 1, 50, 24))
    add('b05', '4-D B=1 H=2 Sq=Sk=64 D=40, scale 0.37', _rng('b05'), (1, 2, 64, 40), (1, 2, 64, 40), (1, 2, 64, 40),
        scale=0.37)
    r = _rng('b06')
    q, k = _extreme(r, 12, 40)
    c.append(('b06', '2-D Sq=12 Sk=40 D=64, extreme logits (integer q, k; scale 1/64; scores ~768)',
              dict(q=q, k=k, v=_randn(r, 40, 64), d_out=_randn(r, 12, 64), scale=1.0 / 64)))
    add('b07', '2-D Sq=1 Sk=77 D=8', _rng('b07'), (1, 8), (77, 8), (77, 8))
    add('b08', '4-D B=3 H=1 Sq=Sk=25 D=16, top-left causal mask', _rng('b08'), (3, 1, 25, 16), (3, 1, 25, 16),
        (3, 1, 25, 16), mask=np.tril(np.ones((25, 25), dtype=bool)))
    r = _rng('b09')
    add('b09', '3-D H=2 with k/v head axis 1, Sq=18 Sk=27 D=16, random mask', r, (2, 18, 16), (1, 27, 16),
        (1, 27, 16), mask=_random_mask(r, (2, 18, 27)))
    return c


# ----------------------------------------------------------------------------------------------------------------
# Running and judging
# ----------------------------------------------------------------------------------------------------------------
def _cast(x, dtype):
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        return x.astype(np.float32 if dtype == 'float32' else np.float64)
    if isinstance(x, torch.Tensor) and x.dtype == torch.float64:
        return x.to(torch.float32 if dtype == 'float32' else torch.float64)
    return x


def _rounded64(x):
    if isinstance(x, np.ndarray) and x.dtype == np.float32:
        return x.astype(np.float64)
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        return x.double()
    return x


def _copy(x):
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, torch.Tensor):
        return x.clone()
    return x


def _same(a, b):
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    return a == b


def _rel(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    den = np.linalg.norm(ref)
    num = np.linalg.norm(out - ref)
    return num / den if den > 0 else num


def reference_for(module, kw):
    kw64 = {key: _rounded64(val) for key, val in kw.items()}
    if module == 'numpy_fwd.py':
        return ref_attend(kw64['q'], kw64['k'], kw64['v'], kw64.get('mask'), kw64.get('scale'))
    if module == 'torch_sdpa_fwd.py':
        return ref_sdpa(kw64['query'], kw64['key'], kw64['value'], kw64.get('attn_mask'), kw64.get('is_causal', False),
                        kw64.get('scale'), kw64.get('enable_gqa', False))
    if module == 'flash_fwd.py':
        return ref_flash(kw64['q'], kw64['k'], kw64['v'], kw64.get('softmax_scale'), kw64.get('causal', False),
                         kw64.get('window_size', (-1, -1)), kw64.get('softcap', 0.0), kw64.get('alibi_slopes'))
    return ref_bwd(kw64['q'], kw64['k'], kw64['v'], kw64['d_out'], kw64.get('mask'), kw64.get('scale'))


def call(module, fn, kw):
    if module == 'numpy_fwd.py':
        return fn(kw['q'], kw['k'], kw['v'], mask=kw.get('mask'), scale=kw.get('scale'))
    if module == 'torch_sdpa_fwd.py':
        return fn(kw['query'], kw['key'], kw['value'], attn_mask=kw.get('attn_mask'), dropout_p=0.0,
                  is_causal=kw.get('is_causal', False), scale=kw.get('scale'), enable_gqa=kw.get('enable_gqa', False))
    if module == 'flash_fwd.py':
        return fn(kw['q'], kw['k'], kw['v'], dropout_p=0.0, softmax_scale=kw.get('softmax_scale'),
                  causal=kw.get('causal', False), window_size=kw.get('window_size', (-1, -1)),
                  softcap=kw.get('softcap', 0.0), alibi_slopes=kw.get('alibi_slopes'), deterministic=False,
                  return_attn_probs=False)
    return fn(kw['q'], kw['k'], kw['v'], kw['d_out'], mask=kw.get('mask'), scale=kw.get('scale'))


def judge(module, fn, kw, ref, problems, label):
    """Relative error of one call (inf for an exception, non-finite values, a wrong shape or dtype)."""
    saved = {key: _copy(val) for key, val in kw.items()}
    fresh = {key: _copy(val) for key, val in kw.items()}
    want = kw['q'].dtype if 'q' in kw else kw['query'].dtype
    try:
        with warnings.catch_warnings(), np.errstate(all='ignore'):
            warnings.simplefilter('ignore')
            out = call(module, fn, fresh)
    except Exception:
        out = None
    for key in kw:
        if not _same(fresh[key], saved[key]):
            problems.append('%s: input %r was modified' % (label, key))
    if out is None:
        return math.inf
    outs = out if module == 'numpy_bwd.py' else (out,)
    refs = ref if module == 'numpy_bwd.py' else (ref,)
    if module == 'numpy_bwd.py' and (not isinstance(out, tuple) or len(out) != 3):
        return math.inf
    worst = 0.0
    for o, r in zip(outs, refs):
        if isinstance(o, torch.Tensor):
            if o.dtype != want:
                return math.inf
            o = o.detach().double().numpy()
        else:
            if not isinstance(o, np.ndarray) or o.dtype != want:
                return math.inf
        worst = max(worst, _rel(o, r))
    return worst


def check_sections(path, catalog, problems):
    text = open(path).read()
    parts = re.split(r'^# --- kernel: (\w+) ---$', text, flags=re.M)
    if parts[0].count('# BUG:'):
        problems.append('%s: # BUG: outside a kernel section' % os.path.basename(path))
    sections = {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}
    for entry in catalog:
        sec = sections.get(entry['fn'])
        if sec is None:
            problems.append('%s: no section for %s' % (os.path.basename(path), entry['fn']))
            continue
        want = 0 if entry['correct'] else 1
        if sec.count('# BUG:') != want:
            problems.append('%s: section %s has %d # BUG: comments (want %d)'
                            % (os.path.basename(path), entry['fn'], sec.count('# BUG:'), want))
    extra = set(sections) - {e['fn'] for e in catalog}
    if extra:
        problems.append('%s: sections without CATALOG entry: %s' % (os.path.basename(path), sorted(extra)))


def check_catalog(mods, problems):
    names, sources = set(), set()
    for (fname, api), mod in zip(MODULES, mods):
        cat = mod.CATALOG
        broken = [e for e in cat if not e.get('correct')]
        if len(broken) < 6 or len(cat) - len(broken) < 2:
            problems.append('%s: needs >= 6 broken and >= 2 correct kernels' % fname)
        for e in cat:
            if set(e) != CATALOG_KEYS:
                problems.append('%s: CATALOG keys of %s: %s' % (fname, e.get('name'), sorted(set(e) ^ CATALOG_KEYS)))
                continue
            if e['name'] in names:
                problems.append('duplicate name %s' % e['name'])
            names.add(e['name'])
            if e['api'] != api or not callable(getattr(mod, e['fn'], None)):
                problems.append('%s: api or fn of %s' % (fname, e['name']))
            if e['dtype'] not in ('float64', 'float32') or not set(e['features']) <= FEATURES:
                problems.append('%s: dtype or features of %s' % (fname, e['name']))
            if e['correct']:
                if any(e[key] is not None for key in ('bug', 'parameter', 'source', 'report')):
                    problems.append('%s: correct kernel %s has bug fields' % (fname, e['name']))
                if e['name'] in TRIGGERS:
                    problems.append('TRIGGERS entry for correct kernel %s' % e['name'])
                continue
            if not re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)*', e['bug'] or ''):
                problems.append('bug of %s is not kebab-case' % e['name'])
            if 'Triggers:' not in (e['parameter'] or ''):
                problems.append('parameter of %s lacks Triggers:' % e['name'])
            m = re.fullmatch(r'([\w.-]+/[\w.-]+)#(\d+)', e['source'] or '')
            url = None if not m else r'https://github\.com/%s/(issues|pull)/%s' % (re.escape(m.group(1)), m.group(2))
            if not m or not re.fullmatch(url, e['report'] or ''):
                problems.append('source/report of %s disagree' % e['name'])
            if e['source'] in sources:
                problems.append('source %s cited twice' % e['source'])
            sources.add(e['source'])
            if e['name'] not in TRIGGERS:
                problems.append('no TRIGGERS entry for %s' % e['name'])
    for name in TRIGGERS:
        if name not in names:
            problems.append('TRIGGERS entry %s has no kernel' % name)


def cross_check_references():
    worst = 0.0
    r = _rng('x-sdpa')
    q, k, v = _randn(r, 2, 4, 31, 16), _randn(r, 2, 2, 31, 16), _randn(r, 2, 2, 31, 12)
    kr, vr = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    for L, S in ((19, 31), (31, 19), (19, 19)):
        qq, kk, vv = q[:, :, :L], kr[:, :, :S], vr[:, :, :S]
        tl = np.tril(np.ones((L, S), dtype=bool))
        got = ref_sdpa(_t(qq), _t(k[:, :, :S]), _t(v[:, :, :S]), is_causal=True, enable_gqa=True)
        worst = max(worst, _rel(got, ref_attend(qq, kk, vv, tl)))
        keep = r.random((2, 1, L, S)) < 0.6
        keep[..., 0] = True
        add = np.where(keep, 0.0, -np.inf)
        got = ref_sdpa(_t(qq), _t(kk), _t(vv), attn_mask=_t(add))
        worst = max(worst, _rel(got, ref_attend(qq, kk, vv, keep)))
        got = ref_sdpa(_t(qq), _t(kk), _t(vv), attn_mask=_t(keep), scale=0.41)
        worst = max(worst, _rel(got, ref_attend(qq, kk, vv, keep, 0.41)))
    r = _rng('x-flash')
    for (Sq, Sk, causal, window) in ((13, 29, True, (-1, -1)), (29, 13, True, (-1, -1)), (21, 21, True, (-1, -1)),
                                     (17, 40, True, (9, -1)), (40, 17, True, (5, -1)), (23, 30, False, (4, 2))):
        qn, kn, vn = _randn(r, 2, Sq, 4, 16), _randn(r, 2, Sk, 2, 16), _randn(r, 2, Sk, 2, 8)
        got = ref_flash(_t(qn), _t(kn), _t(vn), causal=causal, window_size=window)
        keep = np.zeros((Sq, Sk), dtype=bool)
        for i in range(Sq):
            d = i + Sk - Sq
            lo = -10 ** 9 if window[0] < 0 else d - window[0]
            hi = d if causal else (10 ** 9 if window[1] < 0 else d + window[1])
            for j in range(Sk):
                keep[i, j] = lo <= j <= hi
        want = ref_attend(np.swapaxes(qn, 1, 2), np.repeat(np.swapaxes(kn, 1, 2), 2, axis=1),
                          np.repeat(np.swapaxes(vn, 1, 2), 2, axis=1), keep)
        worst = max(worst, _rel(got, np.swapaxes(want, 1, 2)))
    for cid, _, kw in bwd_cases():
        ref = ref_bwd(kw['q'], kw['k'], kw['v'], kw['d_out'], kw.get('mask'), kw.get('scale'))
        auto = autograd_bwd(kw['q'], kw['k'], kw['v'], kw['d_out'], kw.get('mask'), kw.get('scale'))
        worst = max(worst, max(_rel(a, b) for a, b in zip(ref, auto)))
    return worst


def main():
    t0 = time.time()
    problems = []
    mods = [load(fname) for fname, _ in MODULES]
    check_catalog(mods, problems)
    for (fname, _), mod in zip(MODULES, mods):
        check_sections(os.path.join(HERE, fname), mod.CATALOG, problems)
    xc = cross_check_references()
    print('reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): worst %.2g'
          % xc)
    if not xc < 1e-12:
        problems.append('reference cross-check %.3g' % xc)
    case_sets = {'numpy_fwd.py': numpy_cases(), 'torch_sdpa_fwd.py': sdpa_cases(), 'flash_fwd.py': flash_cases(),
                 'numpy_bwd.py': bwd_cases()}
    print('worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)')
    summary = []
    for (fname, api), mod in zip(MODULES, mods):
        print('%s (%s)' % (fname, api))
        cases = case_sets[fname]
        refs = {}
        for cid, _, kw in cases:
            for dt in ('float64', 'float32'):
                kwd = {key: _cast(val, dt) for key, val in kw.items()}
                refs[cid, dt] = (kwd, reference_for(fname, kwd))
        nb = nc = 0
        for e in mod.CATALOG:
            fn = getattr(mod, e['fn'])
            worst = {'float64': 0.0, 'float32': 0.0}
            differs = set()
            for cid, _, _ in cases:
                for dt in ('float64', 'float32'):
                    kwd, ref = refs[cid, dt]
                    err = max(judge(fname, fn, kwd, ref, problems, '%s %s %s' % (e['name'], cid, dt))
                              for _ in range(2))
                    worst[dt] = max(worst[dt], err)
                    ok = err <= TOL_CORRECT[dt]
                    if e['correct']:
                        if not ok:
                            problems.append('%s: correct kernel off on %s %s (%.3g)' % (e['name'], cid, dt, err))
                        continue
                    trig = cid in TRIGGERS.get(e['name'], [])
                    if dt == e['dtype'] and not (err > TOL_DIFFER[dt]) and trig:
                        problems.append('%s: does not differ on trigger case %s (%.3g)' % (e['name'], cid, err))
                    if not trig and not ok:
                        problems.append('%s: off on non-trigger case %s %s (%.3g)' % (e['name'], cid, dt, err))
                    if dt == e['dtype'] and err > TOL_DIFFER[dt]:
                        differs.add(cid)
            if not e['correct']:
                nb += 1
                if sorted(differs) != sorted(TRIGGERS.get(e['name'], [])):
                    problems.append('%s: differs on %s, TRIGGERS says %s'
                                    % (e['name'], sorted(differs), TRIGGERS.get(e['name'])))
            else:
                nc += 1
            print('  %-44s %-6s f64 %-9.3g f32 %.3g' % (e['name'], 'ok' if e['correct'] else 'broken',
                                                        worst['float64'], worst['float32']))
        summary.append('%s %d broken + %d correct' % (fname[:-3], nb, nc))
    for p in problems:
        print('PROBLEM:', p)
    if problems:
        print('SELF-CHECK FAILED (%d problems)' % len(problems))
        return 1
    print('SELF-CHECK PASSED (%.1f s): %s' % (time.time() - t0, ', '.join(summary)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
