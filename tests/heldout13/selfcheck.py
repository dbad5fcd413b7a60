"""Self-check of heldout13: float64 references written from the four contracts, fixed seeded cases, the
TRIGGERS table, CATALOG validation and the `# BUG:` comment count. Exit status 1 on any problem."""
import sys

sys.dont_write_bytecode = True

import importlib  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODULES = [('numpy_fwd', 'refimpl'), ('torch_sdpa_fwd', 'torch-sdpa'), ('flash_fwd', 'flash-attn'),
           ('numpy_bwd', 'numpy-backward')]
TOL_OK = {'float64': 1e-10, 'float32': 1e-5}
TOL_BROKEN = {'float64': 1e-8, 'float32': 1e-4}
FEATURES = {'mask', 'causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'}

# Cases (per module) on which each broken kernel differs from the reference; it conforms on all the others.
TRIGGERS = {
    'np-transformertranslation-padding-fill-polarity': [
        '3d-random-empty-row', '4d-key-padding', '4d-head-bands', '4d-causal-scale', '3d-decode-left-pad',
        '4d-zero-length-seq', '2d-scale1-random',
    ],
    'np-aiayn-legacy-softmax-dim': [
        '2d-plain', '3d-random-empty-row', '4d-key-padding', '4d-head-bands', '4d-causal-scale', '4d-nomask-dv',
        '3d-decode-left-pad', '4d-zero-length-seq', '2d-scale1-random',
    ],
    'np-sooftware-mask-not-permuted': ['4d-key-padding', '4d-head-bands'],
    'np-showattendtell-context-sum-axis': [
        '2d-plain', '3d-random-empty-row', '4d-key-padding', '4d-head-bands', '4d-causal-scale', '4d-nomask-dv',
        '3d-decode-left-pad', '4d-zero-length-seq', '2d-scale1-random',
    ],
    'np-nnkernels-online-bounds-check': [
        '2d-plain', '3d-random-empty-row', '4d-head-bands', '4d-causal-scale', '4d-nomask-dv', '3d-decode-left-pad',
    ],
    'np-fairseq-padding-mask-unused': [
        '3d-random-empty-row', '4d-key-padding', '4d-head-bands', '4d-causal-scale', '3d-decode-left-pad',
        '4d-zero-length-seq', '2d-scale1-random',
    ],
    'sdpa-xformers-causal-needs-mask': ['causal-sq-lt-sk', 'causal-sq-gt-sk', 'causal-square', 'gqa-6to1-causal'],
    'sdpa-mlverse-bool-mask-added': ['bool-mask', 'bool-empty-row'],
    'sdpa-mlcollection-embed-size-scale': [
        'plain', 'causal-sq-lt-sk', 'causal-sq-gt-sk', 'bool-mask', 'additive-finite', 'additive-inf-row',
        'gqa-4to1', 'mqa-decode', 'gqa-6to1-causal',
    ],
    'sdpa-mlx-masked-row-nan': ['bool-empty-row', 'additive-inf-row'],
    'sdpa-pytorch-causal-lower-right': ['causal-sq-lt-sk', 'causal-sq-gt-sk'],
    'sdpa-llamacpp-fp16-row-sum': [
        'plain', 'causal-sq-lt-sk', 'causal-sq-gt-sk', 'causal-square', 'bool-mask', 'bool-empty-row',
        'additive-finite', 'additive-inf-row', 'gqa-4to1', 'mqa-decode', 'gqa-6to1-causal', 'scale-dv',
        'single-head',
    ],
    'flash-yoco-window-minus-one-twice': [
        'window-left16', 'window-10-3-sq-gt-sk', 'causal-window20', 'window-0-4', 'alibi-window8',
        'window-causal-gt',
    ],
    'flash-sglang-swa-extra-kv-token': [
        'window-left16', 'window-10-3-sq-gt-sk', 'causal-window20', 'window-0-4', 'alibi-window8',
        'window-causal-gt',
    ],
    'flash-flagattn-causal-larger-m': ['causal-sq-gt-sk', 'window-10-3-sq-gt-sk', 'window-causal-gt'],
    'flash-mosaic-alibi-bias-slice': ['alibi-b-h', 'alibi-window8', 'gqa-alibi'],
    'flash-fa-softcap-tanh-times-cap': ['softcap5-scale', 'softcap3-causal-alibi'],
    'flash-mamba-kv-not-repeated': ['gqa-4to1', 'gqa-decode-12-2', 'gqa-alibi'],
    'bwd-pytorch-mha-plain-softmax-nan': ['3d-random-empty-row', '4d-pad-zero-length'],
    'bwd-candle-softmax-no-backward': [
        '2d-plain', '3d-random-empty-row', '4d-pad-zero-length', '4d-causal-d40', '4d-mqa-broadcast', '4d-dv-ne-d',
        '4d-bands-scale', 'decode-left-pad', 'square-plain-d8',
    ],
    'bwd-fa-dq-accum-hdim-granularity': ['4d-pad-zero-length', '4d-causal-d40', 'square-plain-d8'],
    'bwd-triton-tutorial-causal-kept': [
        '2d-plain', '3d-random-empty-row', '4d-pad-zero-length', '4d-mqa-broadcast', '4d-dv-ne-d', '4d-bands-scale',
        'decode-left-pad', 'square-plain-d8',
    ],
    'bwd-external-attn-softmax-dim': [
        '2d-plain', '3d-random-empty-row', '4d-pad-zero-length', '4d-causal-d40', '4d-mqa-broadcast', '4d-dv-ne-d',
        '4d-bands-scale', 'decode-left-pad', 'square-plain-d8',
    ],
    'bwd-xtransformers-recompute-unmasked': [
        '3d-random-empty-row', '4d-pad-zero-length', '4d-causal-d40', '4d-bands-scale', 'decode-left-pad',
    ],
}


# ----------------------------------------------------------------------------------------------- references
def ref_attention(q, k, v, keep=None, scale=None, bias=None):
    """float64 reference: softmax(q k^T * scale + bias) masked by keep; rows with no kept key are zeros."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = np.einsum('...id,...jd->...ij', q, k) * sc
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(mx), mx, 0.0))
    den = e.sum(axis=-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    return np.einsum('...ij,...jd->...id', p, v), p


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.double().numpy() for t in (query, key, value))
    hq, hkv = q.shape[1], k.shape[1]
    if enable_gqa and hq != hkv:
        idx = np.arange(hq) // (hq // hkv)
        k, v = k[:, idx], v[:, idx]
    sq, sk = q.shape[-2], k.shape[-2]
    keep = np.ones((sq, sk), dtype=bool)
    bias = None
    if is_causal:
        keep &= np.arange(sk)[None, :] <= np.arange(sq)[:, None]
    if attn_mask is not None:
        m = attn_mask.numpy()
        if m.dtype == bool:
            keep = keep & m
        else:
            bias = m.astype(np.float64)
            keep = keep & np.isfinite(bias)
            bias = np.where(np.isfinite(bias), bias, 0.0)
    return ref_attention(q, k, v, keep=keep, scale=scale, bias=bias)[0]


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (t.double().numpy().transpose(0, 2, 1, 3) for t in (q, k, v))
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    idx = np.arange(hq) // (hq // hkv)
    k, v = k[:, idx], v[:, idx]
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    s = np.einsum('bhid,bhjd->bhij', q, k) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    ipos = np.arange(sq)[:, None] + (sk - sq)
    jpos = np.arange(sk)[None, :]
    left, right = window_size
    if causal:
        right = 0
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= jpos >= ipos - left
    if right >= 0:
        keep &= jpos <= ipos + right
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy()
        sl = np.broadcast_to(sl, (b, hq)) if sl.ndim == 1 else sl
        s = s - sl[:, :, None, None] * np.abs(ipos - jpos)
    s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(mx), mx, 0.0))
    den = e.sum(axis=-1, keepdims=True)
    p = np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)
    out = np.einsum('bhij,bhjd->bhid', p, v)
    return out.transpose(0, 2, 1, 3)


def ref_backward(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    o, p = ref_attention(q, k, v, keep=mask, scale=sc)
    dv = np.einsum('...ij,...id->...jd', p, do)
    dp = np.einsum('...id,...jd->...ij', do, v)
    ds = p * (dp - (do * o).sum(axis=-1, keepdims=True))
    dq = np.einsum('...ij,...jd->...id', ds, k) * sc
    dk = np.einsum('...ij,...id->...jd', ds, q) * sc

    def reduce(x, shape):
        while x.ndim > len(shape):
            x = x.sum(axis=0)
        for ax, n in enumerate(shape):
            if n == 1 and x.shape[ax] != 1:
                x = x.sum(axis=ax, keepdims=True)
        return x
    return dq, reduce(dk, k.shape), reduce(dv, v.shape)


# -------------------------------------------------------------------------------------------------- cases
def _rng(seed):
    return np.random.default_rng(seed)


def _band(sq, sk, lo, hi, off=0):
    i = np.arange(sq)[:, None] + off
    j = np.arange(sk)[None, :]
    return (j >= i - lo) & (j <= i + hi)


def numpy_cases():
    cases = []

    def add(name, qs, ks, vs, mask=None, scale=None, seed=0):
        r = _rng(seed)
        cases.append(dict(name=name, q=r.standard_normal(qs), k=r.standard_normal(ks), v=r.standard_normal(vs),
                          mask=mask, scale=scale))
    add('2d-plain', (20, 16), (33, 16), (33, 12), seed=1)
    m = _rng(2).random((3, 17, 40)) < 0.6
    m[1, 4] = False
    add('3d-random-empty-row', (3, 17, 24), (3, 40, 24), (3, 40, 20), mask=m, seed=3)
    lens = np.array([50, 64])
    add('4d-key-padding', (2, 3, 30, 16), (2, 3, 64, 16), (2, 3, 64, 24),
        mask=(np.arange(64)[None, :] < lens[:, None])[:, None, None, :], seed=4)
    band = np.stack([_band(45, 45, 3, 5), _band(45, 45, 10, 0)])[None]
    add('4d-head-bands', (2, 2, 45, 32), (2, 2, 45, 32), (2, 2, 45, 32), mask=band, seed=5)
    add('4d-causal-scale', (1, 4, 70, 16), (1, 4, 70, 16), (1, 4, 70, 16),
        mask=np.tril(np.ones((70, 70), dtype=bool)), scale=0.3, seed=6)
    add('4d-nomask-dv', (2, 2, 100, 32), (2, 2, 129, 32), (2, 2, 129, 40), seed=7)
    add('3d-decode-left-pad', (2, 1, 24), (2, 50, 24), (2, 50, 24),
        mask=np.stack([np.arange(50) >= 9, np.arange(50) >= 0])[:, None, :], seed=8)
    lens = np.array([0, 61])
    add('4d-zero-length-seq', (2, 1, 8, 16), (2, 1, 96, 16), (2, 1, 96, 8),
        mask=(np.arange(96)[None, :] < lens[:, None])[:, None, None, :], scale=0.5, seed=9)
    add('2d-scale1-random', (64, 64), (64, 64), (64, 48), mask=_rng(10).random((64, 64)) < 0.7, scale=1.0,
        seed=11)
    return cases


def sdpa_cases():
    cases = []

    def add(name, b, hq, hkv, sq, sk, d, dv, mask=None, causal=False, scale=None, gqa=False, seed=0):
        r = _rng(seed)
        cases.append(dict(name=name, q=r.standard_normal((b, hq, sq, d)), k=r.standard_normal((b, hkv, sk, d)),
                          v=r.standard_normal((b, hkv, sk, dv)), mask=mask, causal=causal, scale=scale, gqa=gqa))
    add('plain', 2, 3, 3, 20, 33, 16, 16, seed=21)
    add('causal-sq-lt-sk', 1, 2, 2, 40, 64, 64, 64, causal=True, seed=22)
    add('causal-sq-gt-sk', 1, 2, 2, 64, 40, 64, 64, causal=True, seed=23)
    add('causal-square', 2, 1, 1, 50, 50, 32, 24, causal=True, seed=24)
    add('bool-mask', 2, 2, 2, 30, 45, 16, 16, mask=_rng(25).random((2, 1, 30, 45)) < 0.7, seed=26)
    m = _rng(27).random((1, 1, 12, 40)) < 0.5
    m[0, 0, 3] = False
    add('bool-empty-row', 1, 1, 1, 12, 40, 16, 16, mask=m, seed=28)
    add('additive-finite', 2, 4, 4, 25, 31, 16, 16, mask=_rng(29).standard_normal((2, 4, 25, 31)), seed=30)
    a = _rng(31).standard_normal((1, 2, 20, 36))
    a[_rng(32).random(a.shape) < 0.3] = -np.inf
    a[0, 1, 7] = -np.inf
    add('additive-inf-row', 1, 2, 2, 20, 36, 16, 16, mask=a, seed=33)
    add('gqa-4to1', 1, 8, 2, 60, 60, 16, 16, gqa=True, seed=34)
    add('mqa-decode', 2, 4, 1, 1, 77, 32, 32, gqa=True, seed=35)
    add('gqa-6to1-causal', 1, 6, 1, 33, 33, 16, 16, gqa=True, causal=True, seed=36)
    add('scale-dv', 1, 2, 2, 70, 70, 24, 40, scale=0.37, seed=37)
    add('single-head', 1, 1, 1, 18, 129, 64, 64, seed=38)
    return cases


def flash_cases():
    cases = []

    def add(name, b, hq, hkv, sq, sk, d, dv, seed, **kw):
        r = _rng(seed)
        c = dict(name=name, q=r.standard_normal((b, sq, hq, d)), k=r.standard_normal((b, sk, hkv, d)),
                 v=r.standard_normal((b, sk, hkv, dv)), kw=kw)
        cases.append(c)
    add('plain', 2, 3, 3, 20, 33, 16, 16, 41)
    add('causal-sq-lt-sk', 1, 2, 2, 30, 70, 32, 32, 42, causal=True)
    add('causal-sq-gt-sk', 1, 2, 2, 70, 30, 32, 32, 43, causal=True)
    add('causal-square', 2, 2, 2, 64, 64, 16, 16, 44, causal=True)
    add('window-left16', 1, 2, 2, 80, 80, 16, 16, 45, window_size=(16, -1))
    add('window-right5', 1, 2, 2, 40, 60, 16, 16, 46, window_size=(-1, 5))
    add('window-10-3-sq-gt-sk', 1, 2, 2, 60, 40, 16, 16, 47, window_size=(10, 3))
    add('causal-window20', 1, 2, 2, 30, 90, 16, 16, 48, causal=True, window_size=(20, -1))
    add('window-0-4', 1, 1, 1, 32, 32, 16, 16, 49, window_size=(0, 4))
    add('softcap5-scale', 1, 2, 2, 50, 50, 32, 32, 50, softcap=5.0, softmax_scale=0.5)
    add('softcap3-causal-alibi', 1, 2, 2, 40, 40, 16, 16, 51, softcap=3.0, causal=True,
        alibi_slopes=torch.tensor([0.5, 0.25], dtype=torch.float32))
    add('alibi-b-h', 2, 2, 2, 40, 55, 16, 16, 52,
        alibi_slopes=torch.tensor([[0.5, 0.125], [0.25, 0.0625]], dtype=torch.float32))
    add('alibi-causal', 1, 4, 4, 64, 64, 16, 16, 53, causal=True,
        alibi_slopes=torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float32))
    add('alibi-window8', 1, 2, 2, 48, 48, 16, 16, 54, window_size=(8, 8),
        alibi_slopes=torch.tensor([0.3, 0.1], dtype=torch.float32))
    add('gqa-4to1', 1, 8, 2, 50, 50, 16, 16, 55)
    add('mqa-decode-causal', 2, 4, 1, 1, 100, 32, 32, 56, causal=True)
    add('gqa-decode-12-2', 1, 12, 2, 1, 129, 16, 16, 57, causal=True)
    add('gqa-alibi', 1, 4, 2, 30, 30, 16, 16, 58, alibi_slopes=torch.tensor([0.5, 0.25, 0.125, 0.0625]))
    add('dv-ne-d', 1, 2, 2, 45, 45, 32, 48, 59)
    add('window-causal-gt', 1, 2, 2, 50, 20, 16, 16, 60, causal=True, window_size=(6, -1))
    return cases


def bwd_cases():
    cases = []

    def add(name, qs, ks, vs, mask=None, scale=None, seed=0):
        r = _rng(seed)
        cases.append(dict(name=name, q=r.standard_normal(qs), k=r.standard_normal(ks), v=r.standard_normal(vs),
                          d_out=r.standard_normal(qs[:-1] + (vs[-1],)), mask=mask, scale=scale))
    add('2d-plain', (20, 24), (33, 24), (33, 12), seed=61)
    m = _rng(62).random((3, 17, 40)) < 0.6
    m[2, 5] = False
    add('3d-random-empty-row', (3, 17, 32), (3, 40, 32), (3, 40, 20), mask=m, seed=63)
    lens = np.array([0, 37])
    add('4d-pad-zero-length', (2, 3, 20, 16), (2, 3, 50, 16), (2, 3, 50, 16),
        mask=(np.arange(50)[None, :] < lens[:, None])[:, None, None, :], seed=64)
    add('4d-causal-d40', (1, 2, 70, 40), (1, 2, 70, 40), (1, 2, 70, 40), mask=np.tril(np.ones((70, 70), bool)),
        seed=65)
    add('4d-mqa-broadcast', (2, 4, 30, 64), (2, 1, 50, 64), (2, 1, 50, 64), seed=66)
    add('4d-dv-ne-d', (1, 2, 60, 32), (1, 2, 129, 32), (1, 2, 129, 48), seed=67)
    band = np.stack([_band(45, 45, 4, 2), _band(45, 45, 0, 9)])[None]
    add('4d-bands-scale', (1, 2, 45, 24), (1, 2, 45, 24), (1, 2, 45, 24), mask=band, scale=0.5, seed=68)
    add('decode-left-pad', (2, 1, 1, 64), (2, 1, 64, 64), (2, 1, 64, 32),
        mask=np.stack([np.arange(64) >= 20, np.arange(64) >= 0])[:, None, None, :], seed=69)
    add('square-plain-d8', (1, 1, 40, 8), (1, 1, 40, 8), (1, 1, 40, 8), seed=70)
    return cases


# --------------------------------------------------------------------------------------------------- running
def rel_err(got, ref):
    got = np.asarray(got, dtype=np.float64)
    if got.shape != ref.shape or not np.all(np.isfinite(got)):
        return math.inf
    den = np.linalg.norm(ref)
    num = np.linalg.norm(got - ref)
    return num / den if den > 0 else num


def _cast(x, dt):
    return None if x is None else x.astype(dt) if isinstance(x, np.ndarray) and x.dtype != bool else x


def run_numpy_fwd(fn, c, dt):
    npd = np.float64 if dt == 'float64' else np.float32
    q, k, v = (c[n].astype(npd) for n in 'qkv')
    mask = None if c['mask'] is None else c['mask'].copy()
    ref = ref_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), keep=mask,
                        scale=c['scale'])[0]
    worst = 0.0
    for _ in range(2):
        ins = [q.copy(), k.copy(), v.copy()]
        mcopy = None if mask is None else mask.copy()
        try:
            out = fn(ins[0], ins[1], ins[2], mask=mcopy, scale=c['scale'])
            e = rel_err(out, ref)
            if out.dtype != npd:
                e = math.inf
            if any(not np.array_equal(a, b) for a, b in zip(ins, (q, k, v))):
                e = math.inf
        except Exception:
            e = math.inf
        worst = max(worst, e)
    return worst


def _torch_mask(m, dt):
    if m is None:
        return None
    if m.dtype == bool:
        return torch.from_numpy(m.copy())
    return torch.from_numpy(m.astype(np.float64 if dt == 'float64' else np.float32))


def run_sdpa(fn, c, dt):
    tdt = torch.float64 if dt == 'float64' else torch.float32
    q, k, v = (torch.from_numpy(c[n]).to(tdt) for n in 'qkv')
    mask = _torch_mask(c['mask'], dt)
    ref = ref_sdpa(q, k, v, attn_mask=mask, is_causal=c['causal'], scale=c['scale'], enable_gqa=c['gqa'])
    worst = 0.0
    for _ in range(2):
        ins = [q.clone(), k.clone(), v.clone()]
        try:
            out = fn(ins[0], ins[1], ins[2], attn_mask=None if mask is None else mask.clone(), dropout_p=0.0,
                     is_causal=c['causal'], scale=c['scale'], enable_gqa=c['gqa'])
            e = rel_err(out.detach().double().numpy(), ref)
            if out.dtype != tdt or any(not torch.equal(a, b) for a, b in zip(ins, (q, k, v))):
                e = math.inf
        except Exception:
            e = math.inf
        worst = max(worst, e)
    return worst


def run_flash(fn, c, dt):
    tdt = torch.float64 if dt == 'float64' else torch.float32
    q, k, v = (torch.from_numpy(c[n]).to(tdt) for n in 'qkv')
    kw = c['kw']
    ref = ref_flash(q, k, v, **kw)
    worst = 0.0
    for _ in range(2):
        ins = [q.clone(), k.clone(), v.clone()]
        try:
            out = fn(ins[0], ins[1], ins[2], **kw)
            e = rel_err(out.detach().double().numpy(), ref)
            if out.dtype != tdt or any(not torch.equal(a, b) for a, b in zip(ins, (q, k, v))):
                e = math.inf
        except Exception:
            e = math.inf
        worst = max(worst, e)
    return worst


def run_bwd(fn, c, dt):
    npd = np.float64 if dt == 'float64' else np.float32
    q, k, v, do = (c[n].astype(npd) for n in ('q', 'k', 'v', 'd_out'))
    ref = ref_backward(q, k, v, do, mask=c['mask'], scale=c['scale'])
    worst = 0.0
    for _ in range(2):
        ins = [q.copy(), k.copy(), v.copy(), do.copy()]
        try:
            got = fn(ins[0], ins[1], ins[2], ins[3], mask=None if c['mask'] is None else c['mask'].copy(),
                     scale=c['scale'])
            e = max(rel_err(g, r) for g, r in zip(got, ref))
            if any(g.dtype != npd for g in got) or any(not np.array_equal(a, b) for a, b in zip(ins, (q, k, v, do))):
                e = math.inf
        except Exception:
            e = math.inf
        worst = max(worst, e)
    return worst


RUNNERS = {'numpy_fwd': (run_numpy_fwd, numpy_cases), 'torch_sdpa_fwd': (run_sdpa, sdpa_cases),
           'flash_fwd': (run_flash, flash_cases), 'numpy_bwd': (run_bwd, bwd_cases)}


def cross_check():
    """sdpa/flash references against the NumPy one with explicit masks; the backward one against autograd."""
    worst = 0.0
    r = _rng(99)
    q, k, v = r.standard_normal((2, 3, 9, 8)), r.standard_normal((2, 3, 13, 8)), r.standard_normal((2, 3, 13, 5))
    tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
    tl = np.tril(np.ones((9, 13), bool))
    worst = max(worst, rel_err(ref_sdpa(tq, tk, tv, is_causal=True), ref_attention(q, k, v, keep=tl)[0]))
    add = np.where(r.random((2, 3, 9, 13)) < 0.3, -np.inf, 0.0)
    worst = max(worst, rel_err(ref_sdpa(tq, tk, tv, attn_mask=torch.from_numpy(add)),
                               ref_attention(q, k, v, keep=np.isfinite(add))[0]))
    fq, fk, fv = (t.permute(0, 2, 1, 3) for t in (tq, tk, tv))
    br = np.tril(np.ones((9, 13), bool), k=4)
    worst = max(worst, rel_err(ref_flash(fq, fk, fv, causal=True),
                               ref_attention(q, k, v, keep=br)[0].transpose(0, 2, 1, 3)))
    win = br & ~np.tril(np.ones((9, 13), bool), k=4 - 3)
    worst = max(worst, rel_err(ref_flash(fq, fk, fv, causal=True, window_size=(2, -1)),
                               ref_attention(q, k, v, keep=win)[0].transpose(0, 2, 1, 3)))
    for c in bwd_cases():
        ts = [torch.from_numpy(c[n]).requires_grad_(True) for n in 'qkv']
        sc = 1.0 / math.sqrt(c['q'].shape[-1]) if c['scale'] is None else c['scale']
        s = torch.matmul(ts[0], ts[1].transpose(-1, -2)) * sc
        if c['mask'] is not None:
            s = s.masked_fill(~torch.from_numpy(np.broadcast_to(c['mask'], s.shape).copy()), float('-inf'))
        alive = torch.isfinite(s).any(dim=-1, keepdim=True)
        p = torch.softmax(torch.where(alive, s, torch.zeros_like(s)), dim=-1) * alive
        (torch.matmul(p, ts[2]) * torch.from_numpy(c['d_out'])).sum().backward()
        got = ref_backward(c['q'], c['k'], c['v'], c['d_out'], mask=c['mask'], scale=c['scale'])
        for g, t in zip(got, ts):
            worst = max(worst, rel_err(g, t.grad.numpy()))
    return worst


def sections(path):
    text = open(path).read().split('\n')
    secs, cur, outside = {}, None, 0
    for line in text:
        mm = re.match(r'# --- kernel: (\w+) ---$', line)
        if mm:
            cur = mm.group(1)
            secs[cur] = 0
            continue
        if '# BUG:' in line:
            if cur is None:
                outside += 1
            else:
                secs[cur] += 1
    return secs, outside


def check_catalog(modname, api, mod, problems):
    cat = mod.CATALOG
    keys = {'name', 'api', 'fn', 'correct', 'bug', 'parameter', 'source', 'report', 'dtype', 'features'}
    nb = sum(not e['correct'] for e in cat)
    nc = sum(e['correct'] for e in cat)
    if nb < 6 or nc < 2:
        problems.append(f'{modname}: needs >= 6 broken and >= 2 correct ({nb}, {nc})')
    secs, outside = sections(os.path.join(HERE, modname + '.py'))
    if outside:
        problems.append(f'{modname}: {outside} BUG comment(s) outside kernel sections')
    for e in cat:
        if set(e) != keys:
            problems.append(f'{modname}: {e.get("name")}: keys {sorted(set(e) ^ keys)}')
            continue
        if e['api'] != api or not callable(getattr(mod, e['fn'], None)):
            problems.append(f'{e["name"]}: api/fn')
        if e['dtype'] not in ('float64', 'float32') or not set(e['features']) <= FEATURES:
            problems.append(f'{e["name"]}: dtype/features')
        if e['fn'] not in secs:
            problems.append(f'{e["name"]}: no kernel section')
        elif secs[e['fn']] != (0 if e['correct'] else 1):
            problems.append(f'{e["name"]}: {secs[e["fn"]]} BUG comments')
        if e['correct']:
            if any(e[x] is not None for x in ('bug', 'parameter', 'source', 'report')) or e['name'] in TRIGGERS:
                problems.append(f'{e["name"]}: correct kernel with bug fields or TRIGGERS')
        else:
            if not re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)*', e['bug'] or '') or 'Triggers:' not in (e['parameter'] or ''):
                problems.append(f'{e["name"]}: bug/parameter')
            m = re.fullmatch(r'([\w.-]+)/([\w.-]+)#(\d+)', e['source'] or '')
            if not m or e['report'] not in (f'https://github.com/{m.group(1)}/{m.group(2)}/issues/{m.group(3)}',
                                            f'https://github.com/{m.group(1)}/{m.group(2)}/pull/{m.group(3)}'):
                problems.append(f'{e["name"]}: source/report disagree')
            if not TRIGGERS.get(e['name']):
                problems.append(f'{e["name"]}: no TRIGGERS entry')


def main():
    warnings.filterwarnings('ignore')
    np.seterr(all='ignore')
    t0 = time.time()
    problems = []
    cc = cross_check()
    print('reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): '
          f'worst {cc:.2g}')
    if not cc < 1e-12:
        problems.append('reference cross-check failed')
    names, sources = set(), set()
    summary = []
    print('worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)')
    for modname, api in MODULES:
        mod = importlib.import_module(modname)
        check_catalog(modname, api, mod, problems)
        run, mk = RUNNERS[modname]
        cases = mk()
        case_names = [c['name'] for c in cases]
        print(f'{modname}.py ({api})')
        for e in mod.CATALOG:
            if e['name'] in names:
                problems.append(f'duplicate name {e["name"]}')
            names.add(e['name'])
            if e['source']:
                if e['source'].lower() in sources:
                    problems.append(f'duplicate source {e["source"]}')
                sources.add(e['source'].lower())
            fn = getattr(mod, e['fn'])
            errs = {dt: {c['name']: run(fn, c, dt) for c in cases} for dt in ('float64', 'float32')}
            if e['correct']:
                for dt in errs:
                    for cn, err in errs[dt].items():
                        if not err <= TOL_OK[dt]:
                            problems.append(f'{e["name"]} ({dt}) differs on {cn}: {err:.3g}')
            else:
                trig = TRIGGERS.get(e['name'], [])
                for cn in trig:
                    if cn not in case_names:
                        problems.append(f'{e["name"]}: TRIGGERS names unknown case {cn}')
                dt = e['dtype']
                for cn, err in errs[dt].items():
                    if cn in trig and not err > TOL_BROKEN[dt]:
                        problems.append(f'{e["name"]} ({dt}) does not differ on trigger case {cn}: {err:.3g}')
                for cdt in ('float64', 'float32'):
                    for cn, err in errs[cdt].items():
                        if cn not in trig and not err <= TOL_OK[cdt]:
                            problems.append(f'{e["name"]} ({cdt}) differs on non-trigger case {cn}: {err:.3g}')
            w64 = max(errs['float64'].values())
            w32 = max(errs['float32'].values())
            print(f'  {e["name"]:<44} {"ok    " if e["correct"] else "broken"} f64 {w64:<9.3g} f32 {w32:.3g}')
        nb = sum(not e['correct'] for e in mod.CATALOG)
        summary.append(f'{modname} {nb} broken + {len(mod.CATALOG) - nb} correct')
    for n in TRIGGERS:
        if n not in names:
            problems.append(f'TRIGGERS entry for unknown kernel {n}')
    for p in problems:
        print('PROBLEM:', p)
    if problems:
        print(f'SELF-CHECK FAILED ({len(problems)} problems)')
        return 1
    print(f'SELF-CHECK PASSED ({time.time() - t0:.1f} s): ' + ', '.join(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
