"""Self-check of the heldout15 set: references, seeded cases, triggers, CATALOG and `# BUG:` comments.

Run: /work/main/.venv/bin/python tests/heldout15/selfcheck.py   (exit 1 on any problem)
"""
import math
import os
import re
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

MODULES = [('numpy_fwd.py', numpy_fwd, 'refimpl'), ('torch_sdpa_fwd.py', torch_sdpa_fwd, 'torch-sdpa'),
           ('flash_fwd.py', flash_fwd, 'flash-attn'), ('numpy_bwd.py', numpy_bwd, 'numpy-backward')]
FEATURES = {'refimpl': {'mask', 'dv-ne-d'}, 'torch-sdpa': {'mask', 'causal', 'gqa', 'dv-ne-d'},
            'flash-attn': {'causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'},
            'numpy-backward': {'mask', 'dv-ne-d'}}
CORRECT_TOL = {'float64': 1e-10, 'float32': 1e-5}
DIFF_TOL = {'float64': 1e-8, 'float32': 1e-4}

# Per broken kernel, the cases (of its module) on which it differs; it conforms on all the others.
TRIGGERS = {
    'np-fastnlp-softmax-dim-two': ['np03', 'np04', 'np05', 'np08', 'np09'],
    'np-cntkx-scale-without-sqrt': ['np01', 'np02', 'np04', 'np05', 'np08', 'np10'],
    'np-iaan-padding-times-mask': ['np02', 'np03', 'np04', 'np05', 'np07', 'np08', 'np09', 'np10'],
    'np-pytorchadvanced-pad-row-uniform': ['np02', 'np03'],
    'np-primus-first-tile-bound-nan': ['np04', 'np07', 'np08', 'np10'],
    'np-minimalflash-tail-tile-unbounded': ['np01', 'np04', 'np05', 'np07', 'np10'],
    'sdpa-diffusers-bool-mask-as-bias': ['sd02', 'sd07', 'sd10', 'sd11'],
    'sdpa-tinytransformers-unscaled-logits': ['sd01', 'sd02', 'sd03', 'sd04', 'sd05', 'sd06', 'sd07', 'sd08', 'sd09',
                                              'sd11'],
    'sdpa-ttmetal-sum-reduce-bf16': ['sd01', 'sd02', 'sd03', 'sd04', 'sd05', 'sd06', 'sd07', 'sd08', 'sd09', 'sd10',
                                     'sd11'],
    'sdpa-ttmetal-decode-mask-head-broadcast': ['sd02', 'sd05', 'sd06', 'sd07'],
    'sdpa-catalyst-softmax-dim-one': ['sd01', 'sd02', 'sd03', 'sd04', 'sd05', 'sd06', 'sd07', 'sd08', 'sd09', 'sd10',
                                      'sd11'],
    'sdpa-veomni-mask-not-applied': ['sd02', 'sd05', 'sd06', 'sd07', 'sd10', 'sd11'],
    'flash-imp-softcap-fp32-scratch': ['fl10', 'fl11'],
    'flash-nanochat-decode-window-ignored': ['fl15'],
    'flash-fsa-causal-without-kv-gap': ['fl02', 'fl03', 'fl09', 'fl11', 'fl14'],
    'flash-fla-mla-scaling-unused': ['fl01', 'fl02', 'fl03', 'fl04', 'fl05', 'fl06', 'fl07', 'fl08', 'fl09', 'fl10',
                                     'fl11', 'fl12', 'fl13', 'fl14', 'fl15', 'fl16', 'fl17'],
    'flash-nanochat-fallback-causal-hardcoded': ['fl01', 'fl10', 'fl12', 'fl16'],
    'flash-llamacpp-gqa-head-modulo': ['fl12', 'fl13', 'fl14'],
    'bwd-fa4-mask-mod-not-in-backward': ['bw02', 'bw03', 'bw04', 'bw06', 'bw07', 'bw09'],
    'bwd-fa-dv-reduce-ncol-from-hdim': ['bw01', 'bw02', 'bw04', 'bw09'],
    'bwd-fla-chunk-scale-grad': ['bw01', 'bw02', 'bw03', 'bw04', 'bw05', 'bw07', 'bw09'],
    'bwd-pytorch-lse-of-probabilities': ['bw01', 'bw02', 'bw03', 'bw04', 'bw05', 'bw06', 'bw07', 'bw08', 'bw09'],
    'bwd-pytorch-mha-nan-masked-rows': ['bw02', 'bw03', 'bw09'],
    'bwd-vasnet-weighted-sum-direction': ['bw01', 'bw02', 'bw03', 'bw04', 'bw05', 'bw06', 'bw07', 'bw08', 'bw09'],
}


# ----------------------------------------------------------------------------------------------- references
def ref_attention(q, k, v, keep, bias, scale):
    """float64 softmax(q k^T * scale + bias) v over kept keys; rows with no kept key give zeros."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    keep = np.broadcast_to(keep, s.shape) & np.isfinite(s)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    ell = e.sum(axis=-1, keepdims=True)
    return np.matmul(e / np.where(ell > 0, ell, 1.0), v)


def ref_numpy(c):
    q, k, v = c['q'], c['k'], c['v']
    scale = c['scale'] if c['scale'] is not None else 1.0 / math.sqrt(q.shape[-1])
    keep = np.ones((1, 1), dtype=bool) if c['mask'] is None else c['mask']
    return ref_attention(q, k, v, keep, None, scale)


def sdpa_keep_bias(c):
    q, k = c['q'], c['k']
    sq, sk = q.shape[-2], k.shape[-2]
    keep = np.ones((sq, sk), dtype=bool)
    bias = None
    if c['is_causal']:
        keep = np.tril(keep)
    m = c['attn_mask']
    if m is not None:
        if m.dtype == bool:
            keep = keep & m
        else:
            bias = m
    return keep, bias


def ref_sdpa(c):
    q, k, v = c['q'], c['k'], c['v']
    if c['enable_gqa'] and k.shape[1] != q.shape[1]:
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = c['scale'] if c['scale'] is not None else 1.0 / math.sqrt(q.shape[-1])
    keep, bias = sdpa_keep_bias(c)
    return ref_attention(q, k, v, keep, bias, scale)


def flash_keep(sq, sk, causal, window):
    off = sk - sq
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    left, right = window
    if causal:
        right = 0
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= j >= i + off - left
    if right >= 0:
        keep &= j <= i + off + right
    return keep


def ref_flash(c):
    q, k, v = (np.swapaxes(c[n], 1, 2) for n in 'qkv')
    hq, hkv = q.shape[1], k.shape[1]
    k, v = np.repeat(k, hq // hkv, axis=1), np.repeat(v, hq // hkv, axis=1)
    sq, sk = q.shape[2], k.shape[2]
    scale = c['softmax_scale'] if c['softmax_scale'] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if c['softcap'] > 0:
        s = c['softcap'] * np.tanh(s / c['softcap'])
    if c['alibi_slopes'] is not None:
        sl = c['alibi_slopes'].astype(np.float64)
        sl = sl[None] if sl.ndim == 1 else sl
        dist = np.abs(np.arange(sq)[:, None] + sk - sq - np.arange(sk)[None, :])
        s = s - sl[:, :, None, None] * dist
    keep = flash_keep(sq, sk, c['causal'], c['window_size'])
    out = _softmax_apply(s, keep, v)
    return np.swapaxes(out, 1, 2)


def _softmax_apply(s, keep, v):
    keep = np.broadcast_to(keep, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    ell = e.sum(axis=-1, keepdims=True)
    return np.matmul(e / np.where(ell > 0, ell, 1.0), v)


def ref_backward(c):
    """Analytic float64 gradients of loss = sum(d_out * O)."""
    q, k, v, do = c['q'], c['k'], c['v'], c['d_out']
    scale = c['scale'] if c['scale'] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.broadcast_to(np.ones((1, 1), dtype=bool) if c['mask'] is None else c['mask'], s.shape)
    sm = np.where(keep, s, -np.inf)
    m = sm.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(sm - m), 0.0)
    ell = e.sum(axis=-1, keepdims=True)
    p = e / np.where(ell > 0, ell, 1.0)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - (do * o).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq, numpy_bwd._reduce_to(dk, k.shape), numpy_bwd._reduce_to(dv, v.shape)


def autograd_backward(c):
    q, k, v, do = (torch.tensor(c[n], dtype=torch.float64, requires_grad=(n != 'd_out'))
                   for n in ('q', 'k', 'v', 'd_out'))
    scale = c['scale'] if c['scale'] is not None else 1.0 / math.sqrt(q.shape[-1])
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    keep = torch.ones(s.shape, dtype=torch.bool) if c['mask'] is None else \
        torch.broadcast_to(torch.tensor(c['mask']), s.shape)
    sm = s.masked_fill(~keep, float('-inf'))
    m = sm.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(sm - m)
    ell = e.sum(dim=-1, keepdim=True)
    o = torch.matmul(e / torch.where(ell > 0, ell, torch.ones_like(ell)), v)
    (o * do).sum().backward()
    return q.grad.numpy(), k.grad.numpy(), v.grad.numpy()


# ----------------------------------------------------------------------------------------------------- cases
def _rng(seed):
    return np.random.default_rng(seed)


def _qkv(r, lead_q, lead_kv, sq, sk, d, dv):
    return (r.standard_normal(lead_q + (sq, d)), r.standard_normal(lead_kv + (sk, d)),
            r.standard_normal(lead_kv + (sk, dv)))


def _pad_mask(lens, sk, left=False):
    j = np.arange(sk)[None, :]
    ln = np.array(lens)[:, None]
    m = j >= sk - ln if left else j < ln
    return m[:, None, None, :]


def numpy_cases():
    cases = []

    def add(cid, seed, lq, lkv, sq, sk, d, dv, mask=None, scale=None):
        r = _rng(seed)
        q, k, v = _qkv(r, lq, lkv, sq, sk, d, dv)
        m = mask(r) if callable(mask) else mask
        cases.append(dict(id=cid, q=q, k=k, v=v, mask=m, scale=scale))

    def rand_mask(shape, empty_at):
        def f(r):
            m = r.random(shape) < 0.7
            m[empty_at] = False
            return m
        return f

    add('np01', 101, (), (), 20, 37, 16, 12)
    add('np02', 102, (3,), (3,), 33, 64, 32, 40, mask=rand_mask((3, 33, 64), (1, 5)))
    add('np03', 103, (2, 3), (2, 3), 17, 64, 24, 20, mask=_pad_mask([40, 0], 64), scale=0.37)
    add('np04', 104, (2, 2), (2, 2), 1, 50, 16, 8, mask=_pad_mask([30, 47], 50, left=True))
    add('np05', 105, (1, 2), (1, 2), 100, 129, 64, 48, mask=np.tril(np.ones((100, 129), dtype=bool)))
    add('np06', 106, (2,), (2,), 48, 64, 8, 8, scale=1.0)
    i, j = np.arange(40)[:, None], np.arange(20)[None, :]
    add('np07', 107, (), (), 40, 20, 40, 24, mask=np.abs(j - i // 2) <= 3, scale=0.5)
    i, j = np.arange(29)[:, None], np.arange(96)[None, :]
    band = np.stack([(j >= i + 10 * h) & (j <= i + 10 * h + 20) for h in range(3)])[None]
    add('np08', 108, (2, 3), (2, 3), 29, 96, 32, 32, mask=band)
    add('np09', 109, (2, 2), (2, 2), 16, 64, 16, 24, mask=np.tril(np.ones((16, 64), dtype=bool), k=48), scale=0.3)
    i, j = np.arange(70)[:, None], np.arange(45)[None, :]
    add('np10', 110, (2,), (2,), 70, 45, 16, 16, mask=(j >= np.minimum(i // 3, 40))[None] & np.ones((2, 1, 1), bool))
    return cases


def sdpa_cases():
    cases = []

    def add(cid, seed, b, hq, hkv, sq, sk, d, dv, mask=None, is_causal=False, scale=None, gqa=False):
        r = _rng(seed)
        q, k, v = _qkv(r, (b, hq), (b, hkv), sq, sk, d, dv)
        m = mask(r) if callable(mask) else mask
        cases.append(dict(id=cid, q=q, k=k, v=v, attn_mask=m, is_causal=is_causal, scale=scale, enable_gqa=gqa))

    def bool_rand(shape, empty_at=None):
        def f(r):
            m = r.random(shape) < 0.7
            if empty_at is not None:
                m[empty_at] = False
            return m
        return f

    def float_rand(shape, with_inf):
        def f(r):
            m = r.standard_normal(shape) * 2.0
            if with_inf:
                m[r.random(shape) < 0.3] = -np.inf
                m[(0, 0, 3)] = -np.inf
            return m
        return f

    add('sd01', 201, 2, 4, 4, 33, 33, 16, 16)
    add('sd02', 202, 2, 2, 2, 20, 64, 32, 24, mask=bool_rand((2, 1, 20, 64), (1, 0, 7)))
    add('sd03', 203, 1, 3, 3, 64, 40, 16, 16, is_causal=True)
    add('sd04', 204, 2, 2, 2, 17, 100, 64, 48, is_causal=True, scale=0.3)
    add('sd05', 205, 2, 2, 2, 30, 45, 24, 20, mask=float_rand((1, 2, 30, 45), False))
    add('sd06', 206, 2, 2, 2, 25, 40, 16, 12, mask=float_rand((2, 1, 25, 40), True))
    add('sd07', 207, 2, 8, 2, 48, 48, 24, 40, mask=_pad_mask([48, 30], 48), gqa=True)
    add('sd08', 208, 1, 12, 2, 32, 32, 16, 16, is_causal=True, gqa=True)
    add('sd09', 209, 2, 4, 1, 1, 77, 32, 32, scale=0.5, gqa=True)
    i, j = np.arange(12)[:, None], np.arange(12)[None, :]
    add('sd10', 210, 1, 1, 1, 12, 12, 8, 8, mask=np.abs(i - j) <= 2, scale=1.0)
    add('sd11', 211, 1, 2, 2, 24, 24, 16, 16, mask=bool_rand((1, 2, 24, 24)))
    return cases


def flash_cases():
    cases = []

    def add(cid, seed, b, hq, hkv, sq, sk, d, dv, causal=False, window=(-1, -1), softcap=0.0, alibi=None,
            scale=None):
        r = _rng(seed)
        q = r.standard_normal((b, sq, hq, d))
        k = r.standard_normal((b, sk, hkv, d))
        v = r.standard_normal((b, sk, hkv, dv))
        slopes = None
        if alibi == 'h':
            slopes = (2.0 ** (-8.0 * np.arange(1, hq + 1) / hq)).astype(np.float32)
        elif alibi == 'bh':
            slopes = (r.random((b, hq)) * 0.5 + 0.05).astype(np.float32)
        cases.append(dict(id=cid, q=q, k=k, v=v, softmax_scale=scale, causal=causal, window_size=window,
                          softcap=softcap, alibi_slopes=slopes))

    add('fl01', 301, 2, 4, 4, 40, 40, 16, 16)
    add('fl02', 302, 2, 2, 2, 20, 64, 32, 24, causal=True)
    add('fl03', 303, 1, 2, 2, 64, 20, 16, 16, causal=True)
    add('fl04', 304, 2, 3, 3, 33, 33, 24, 20, causal=True)
    add('fl05', 305, 1, 2, 2, 60, 60, 16, 16, window=(16, -1))
    add('fl06', 306, 2, 2, 2, 30, 50, 32, 40, window=(-1, 5))
    add('fl07', 307, 1, 2, 2, 50, 30, 16, 8, window=(10, 3))
    add('fl08', 308, 2, 3, 3, 45, 45, 16, 16, window=(8, 8), alibi='h')
    add('fl09', 309, 1, 2, 2, 16, 70, 16, 16, causal=True, window=(20, -1))
    add('fl10', 310, 2, 2, 2, 32, 32, 16, 16, softcap=5.0, scale=0.5)
    add('fl11', 311, 2, 2, 2, 24, 48, 32, 32, causal=True, softcap=3.0, alibi='bh')
    add('fl12', 312, 2, 8, 2, 36, 36, 24, 40)
    add('fl13', 313, 1, 4, 2, 50, 50, 16, 16, causal=True)
    add('fl14', 314, 2, 12, 2, 1, 90, 16, 16, causal=True)
    add('fl15', 315, 2, 4, 1, 1, 100, 32, 32, window=(20, -1))
    add('fl16', 316, 1, 3, 3, 25, 25, 16, 16, alibi='h', scale=0.37)
    add('fl17', 317, 2, 2, 2, 1, 64, 16, 16)
    return cases


def backward_cases():
    cases = []

    def add(cid, seed, lq, lkv, sq, sk, d, dv, mask=None, scale=None):
        r = _rng(seed)
        q, k, v = _qkv(r, lq, lkv, sq, sk, d, dv)
        m = mask(r) if callable(mask) else mask
        do = r.standard_normal(q.shape[:-1] + (dv,))
        cases.append(dict(id=cid, q=q, k=k, v=v, d_out=do, mask=m, scale=scale))

    def rand_mask(shape, empty_at):
        def f(r):
            m = r.random(shape) < 0.7
            m[empty_at] = False
            return m
        return f

    add('bw01', 401, (), (), 20, 20, 16, 12)
    add('bw02', 402, (2,), (2,), 24, 40, 32, 40, mask=rand_mask((2, 24, 40), (0, 3)))
    add('bw03', 403, (2, 3), (2, 3), 17, 64, 24, 20, mask=_pad_mask([40, 0], 64), scale=0.37)
    add('bw04', 404, (2, 2), (2, 2), 30, 30, 64, 48, mask=np.tril(np.ones((30, 30), dtype=bool)))
    add('bw05', 405, (2, 4), (2, 1), 16, 50, 16, 8)
    i, j = np.arange(33)[:, None], np.arange(33)[None, :]
    add('bw06', 406, (), (), 33, 33, 16, 24, mask=np.abs(i - j) <= 4, scale=1.0)
    add('bw07', 407, (1, 2), (1, 2), 25, 40, 40, 24, mask=np.tril(np.ones((25, 40), dtype=bool), k=15))
    add('bw08', 408, (2,), (2,), 12, 12, 8, 8, scale=1.0)
    add('bw09', 409, (2, 2), (2, 1), 20, 20, 32, 40, mask=rand_mask((2, 1, 20, 20), (1, 0, 4)))
    return cases


CASES = {'numpy_fwd.py': numpy_cases(), 'torch_sdpa_fwd.py': sdpa_cases(), 'flash_fwd.py': flash_cases(),
         'numpy_bwd.py': backward_cases()}
REFS = {'numpy_fwd.py': ref_numpy, 'torch_sdpa_fwd.py': ref_sdpa, 'flash_fwd.py': ref_flash,
        'numpy_bwd.py': ref_backward}
_REF_CACHE = {}


def reference(mod, c, dtype):
    key = (mod, c['id'], dtype)
    if key not in _REF_CACHE:
        cc = dict(c)
        if dtype == 'float32':
            for n in ('q', 'k', 'v', 'd_out'):
                if n in cc:
                    cc[n] = cc[n].astype(np.float32).astype(np.float64)
            if isinstance(cc.get('attn_mask'), np.ndarray) and cc['attn_mask'].dtype != bool:
                cc['attn_mask'] = cc['attn_mask'].astype(np.float32).astype(np.float64)
        _REF_CACHE[key] = REFS[mod](cc)
    return _REF_CACHE[key]


# ------------------------------------------------------------------------------------------------- running
def _rel(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300))


def _call_once(mod, fn, c, dtype):
    """Returns the relative error (inf on a non-finite, wrong shape/dtype or exception) and an inputs-kept flag."""
    npdt = np.float64 if dtype == 'float64' else np.float32
    tdt = torch.float64 if dtype == 'float64' else torch.float32
    ref = reference(mod, c, dtype)
    try:
        with np.errstate(all='ignore'):
            if mod == 'numpy_fwd.py':
                args = [c[n].astype(npdt) for n in 'qkv']
                mask = None if c['mask'] is None else c['mask'].copy()
                keep = [a.copy() for a in args]
                out = fn(*args, mask=mask, scale=c['scale'])
                same = all(np.array_equal(a, b) for a, b in zip(args, keep))
                if not isinstance(out, np.ndarray) or out.dtype != npdt:
                    return math.inf, same
                return _rel(out, ref), same
            if mod == 'numpy_bwd.py':
                args = [c[n].astype(npdt) for n in ('q', 'k', 'v', 'd_out')]
                mask = None if c['mask'] is None else c['mask'].copy()
                keep = [a.copy() for a in args]
                grads = fn(*args, mask=mask, scale=c['scale'])
                same = all(np.array_equal(a, b) for a, b in zip(args, keep))
                errs = []
                for g, r, a in zip(grads, ref, args[:3]):
                    if not isinstance(g, np.ndarray) or g.dtype != npdt or g.shape != a.shape:
                        return math.inf, same
                    errs.append(_rel(g, r))
                return max(errs), same
            if mod == 'torch_sdpa_fwd.py':
                args = [torch.tensor(c[n], dtype=tdt) for n in 'qkv']
                m = c['attn_mask']
                if m is not None:
                    m = torch.tensor(m) if m.dtype == bool else torch.tensor(m, dtype=tdt)
                keep = [a.clone() for a in args]
                out = fn(*args, attn_mask=m, dropout_p=0.0, is_causal=c['is_causal'], scale=c['scale'],
                         enable_gqa=c['enable_gqa'])
            else:
                args = [torch.tensor(c[n], dtype=tdt) for n in 'qkv']
                slopes = None if c['alibi_slopes'] is None else torch.tensor(c['alibi_slopes'])
                keep = [a.clone() for a in args]
                out = fn(*args, dropout_p=0.0, softmax_scale=c['softmax_scale'], causal=c['causal'],
                         window_size=c['window_size'], softcap=c['softcap'], alibi_slopes=slopes)
            same = all(torch.equal(a, b) for a, b in zip(args, keep))
            if not isinstance(out, torch.Tensor) or out.dtype != tdt:
                return math.inf, same
            return _rel(out.detach().numpy(), ref), same
    except Exception:
        return math.inf, True


def run(mod, fn, c, dtype):
    """Every kernel is called twice per case (fresh copies); the worse result is judged."""
    e1, s1 = _call_once(mod, fn, c, dtype)
    e2, s2 = _call_once(mod, fn, c, dtype)
    return max(e1, e2), s1 and s2


def sections(path):
    """{fn: number of '# BUG:' lines in its section}, plus the count outside any section."""
    counts, current, outside = {}, None, 0
    with open(path) as f:
        for line in f:
            mm = re.match(r'# --- kernel: (\w+) ---', line)
            if mm:
                current = mm.group(1)
                counts[current] = 0
                continue
            if '# BUG:' in line:
                if current is None:
                    outside += 1
                else:
                    counts[current] += 1
    return counts, outside


def check_catalog(fname, module, api, problems):
    cat = getattr(module, 'CATALOG', None)
    keys = {'name', 'api', 'fn', 'correct', 'bug', 'parameter', 'source', 'report', 'dtype', 'features'}
    if not isinstance(cat, list):
        problems.append(f'{fname}: no CATALOG list')
        return []
    n_broken = n_correct = 0
    for e in cat:
        if set(e) != keys:
            problems.append(f'{fname}: {e.get("name")}: keys {sorted(set(e) ^ keys)}')
            continue
        if e['api'] != api or not callable(getattr(module, e['fn'], None)):
            problems.append(f'{fname}: {e["name"]}: api or fn wrong')
        if not set(e['features']) <= FEATURES[api] or e['dtype'] not in ('float64', 'float32'):
            problems.append(f'{fname}: {e["name"]}: features or dtype wrong')
        if e['correct']:
            n_correct += 1
            if any(e[x] is not None for x in ('bug', 'parameter', 'source', 'report')) or e['name'] in TRIGGERS:
                problems.append(f'{fname}: {e["name"]}: correct kernel with bug fields or triggers')
        else:
            n_broken += 1
            if not re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)*', e['bug'] or ''):
                problems.append(f'{fname}: {e["name"]}: bug not kebab-case')
            if 'Triggers:' not in (e['parameter'] or ''):
                problems.append(f'{fname}: {e["name"]}: parameter without Triggers:')
            mm = re.fullmatch(r'([\w.-]+)/([\w.-]+)#(\d+)', e['source'] or '')
            rr = re.fullmatch(r'https://github\.com/([\w.-]+)/([\w.-]+)/(issues|pull)/(\d+)', e['report'] or '')
            if not mm or not rr or mm.groups() != (rr.group(1), rr.group(2), rr.group(4)):
                problems.append(f'{fname}: {e["name"]}: source/report disagree')
            if e['name'] not in TRIGGERS or not TRIGGERS[e['name']]:
                problems.append(f'{fname}: {e["name"]}: no TRIGGERS entry')
    if n_broken < 6 or n_correct < 2:
        problems.append(f'{fname}: {n_broken} broken, {n_correct} correct')
    return cat


def cross_check():
    worst = 0.0
    for c in CASES['torch_sdpa_fwd.py']:
        keep, bias = sdpa_keep_bias(c)
        if bias is not None:
            continue
        q, k, v = c['q'], c['k'], c['v']
        if c['enable_gqa'] and k.shape[1] != q.shape[1]:
            g = q.shape[1] // k.shape[1]
            k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        scale = c['scale'] if c['scale'] is not None else 1.0 / math.sqrt(q.shape[-1])
        alt = ref_numpy(dict(q=q, k=k, v=v, mask=keep, scale=scale))
        additive = dict(c, is_causal=False, attn_mask=np.where(keep, 0.0, -np.inf))
        worst = max(worst, _rel(alt, ref_sdpa(c)), _rel(alt, ref_sdpa(additive)))
    for c in CASES['flash_fwd.py']:
        if c['softcap'] > 0 or c['alibi_slopes'] is not None:
            continue
        q, k, v = (np.swapaxes(c[n], 1, 2) for n in 'qkv')
        g = q.shape[1] // k.shape[1]
        keep = flash_keep(q.shape[2], k.shape[2], c['causal'], c['window_size'])
        alt = ref_numpy(dict(q=q, k=np.repeat(k, g, axis=1), v=np.repeat(v, g, axis=1), mask=keep,
                             scale=c['softmax_scale']))
        worst = max(worst, _rel(np.swapaxes(alt, 1, 2), ref_flash(c)))
    for c in CASES['numpy_bwd.py']:
        for a, b in zip(autograd_backward(c), ref_backward(c)):
            worst = max(worst, _rel(a, b))
    return worst


def main():
    t0 = time.time()
    problems = []
    worst_ref = cross_check()
    print(f'reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): '
          f'worst {worst_ref:.2g}')
    if not worst_ref < 1e-12:
        problems.append(f'reference cross-check {worst_ref}')
    print('worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)')
    summary = []
    names, sources = set(), set()
    for fname, module, api in MODULES:
        print(f'{fname[:-3]}.py ({api})')
        cat = check_catalog(fname, module, api, problems)
        counts, outside = sections(os.path.join(HERE, fname))
        if outside:
            problems.append(f'{fname}: {outside} # BUG: comment(s) outside kernel sections')
        nb = nc = 0
        for e in cat:
            if e['name'] in names or (e['source'] and e['source'] in sources):
                problems.append(f'{fname}: {e["name"]}: duplicate name or source')
            names.add(e['name'])
            if e['source']:
                sources.add(e['source'])
            want = 0 if e['correct'] else 1
            if counts.get(e['fn']) != want:
                problems.append(f'{fname}: {e["name"]}: {counts.get(e["fn"])} # BUG: comments in its section')
            fn = getattr(module, e['fn'])
            trig = set(TRIGGERS.get(e['name'], []))
            worst = {'float64': 0.0, 'float32': 0.0}
            for c in CASES[fname]:
                for dtype in ('float64', 'float32'):
                    err, same = run(fname, fn, c, dtype)
                    worst[dtype] = max(worst[dtype], err)
                    if not same:
                        problems.append(f'{e["name"]}: modifies its inputs on {c["id"]} {dtype}')
                    if e['correct'] or c['id'] not in trig:
                        if not err <= CORRECT_TOL[dtype]:
                            problems.append(f'{e["name"]}: {c["id"]} {dtype}: error {err:.3g} on a case it must pass')
                    elif dtype == e['dtype'] and not err > DIFF_TOL[dtype]:
                        problems.append(f'{e["name"]}: trigger {c["id"]} {dtype}: error {err:.3g} too small')
            if e['correct']:
                nc += 1
            else:
                nb += 1
            status = 'ok    ' if e['correct'] else 'broken'
            print(f'  {e["name"]:<44} {status} f64 {worst["float64"]:<9.3g} f32 {worst["float32"]:.3g}')
        summary.append(f'{fname[:-3]} {nb} broken + {nc} correct')
    for n in TRIGGERS:
        if n not in names:
            problems.append(f'TRIGGERS entry {n} has no kernel')
    for p in problems:
        print('PROBLEM:', p)
    if problems:
        print(f'SELF-CHECK FAILED ({len(problems)} problems)')
        return 1
    print(f'SELF-CHECK PASSED ({time.time() - t0:.1f} s): ' + ', '.join(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
