"""Self-check of the heldout23 kernels: float64 references written from the contracts in README.md, fixed
seeded cases, the CATALOG and the ``# BUG:`` markers. Exit status 1 on any problem."""
import sys

sys.dont_write_bytecode = True

import importlib.util  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [('numpy_fwd.py', 'refimpl'), ('torch_sdpa_fwd.py', 'torch-sdpa'), ('flash_fwd.py', 'flash-attn'),
           ('numpy_bwd.py', 'numpy-backward')]
FEATURES = {'refimpl': {'mask', 'dv-ne-d'}, 'torch-sdpa': {'mask', 'causal', 'gqa', 'dv-ne-d'},
            'flash-attn': {'causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d'},
            'numpy-backward': {'mask', 'dv-ne-d'}}
KEYS = ['name', 'api', 'fn', 'correct', 'bug', 'parameter', 'source', 'report', 'dtype', 'features']
OK_BOUND = {'float64': 1e-10, 'float32': 1e-5}
DIFF_BOUND = {'float64': 1e-8, 'float32': 1e-4}

# Cases on which each broken kernel differs from the reference (its documented trigger).
TRIGGERS = {
    'np-onebit-normalized-accumulator': [
        '2d-causal-100x100', '2d-plain-20x37', '3d-randmask-33x70', '4d-headmask3d-12x64', '4d-leftpad-decode-1x96',
        '4d-padkeys-17x129',
    ],
    'np-esim-transpose-reverses-axes': [
        '3d-randmask-33x70', '4d-b1-headmask3d-40x32', '4d-headmask3d-12x64', '4d-leftpad-decode-1x96',
        '4d-padkeys-17x129',
    ],
    'np-onnx-rank3-mask-as-batch': [
        '4d-b1-headmask3d-40x32', '4d-headmask3d-12x64',
    ],
    'np-learnnlp-query-query-scores': [
        '2d-causal-100x100', '2d-plain-20x37', '3d-randmask-33x70', '4d-b1-headmask3d-40x32', '4d-headmask3d-12x64',
        '4d-leftpad-decode-1x96', '4d-padkeys-17x129',
    ],
    'np-sparkinfer-epilogue-row-stride': [
        '2d-causal-100x100', '2d-plain-20x37', '3d-randmask-33x70', '4d-b1-headmask3d-40x32', '4d-padkeys-17x129',
    ],
    'np-megatron-finite-mask-fill': [
        '3d-randmask-33x70', '4d-padkeys-17x129',
    ],
    'sdpa-torchtune-values-from-keys': [
        'additive-inf-33x64', 'boolmask-20x45', 'causal-20x50', 'causal-70x40', 'causal-gqa6-64x64',
        'gqa4-decode-padmask-1x129', 'padbias-16x40', 'plain-31x31', 'scale05-50x50',
    ],
    'sdpa-onnx-prescale-by-scale': [
        'additive-inf-33x64', 'boolmask-20x45', 'causal-20x50', 'causal-70x40', 'gqa4-decode-padmask-1x129',
        'padbias-16x40', 'plain-31x31', 'scale05-50x50',
    ],
    'sdpa-swiftformer-singleton-softmax': [
        'additive-inf-33x64', 'boolmask-20x45', 'causal-20x50', 'causal-70x40', 'causal-gqa6-64x64',
        'gqa4-decode-padmask-1x129', 'padbias-16x40', 'plain-31x31', 'scale05-50x50',
    ],
    'sdpa-fa2-key-loop-query-bound': [
        'boolmask-20x45', 'causal-70x40', 'gqa4-decode-padmask-1x129', 'padbias-16x40',
    ],
    'sdpa-onnxruntime-bias-batch-stride': [
        'gqa4-decode-padmask-1x129', 'padbias-16x40',
    ],
    'sdpa-pytorch-kvcache-causal-diagonal': [
        'causal-20x50', 'causal-70x40',
    ],
    'flash-attorch-head-offset-floored': [
        'alibi-bh-window8-25x40', 'causal-60x35', 'causal-gqa2-20x50', 'causal-window10-40x90',
        'decode-gqa4-causal-1x100', 'decode-mqa-alibi-1x77', 'plain-30x30', 'softcap5-causal-window8-33x33',
        'window16-mqa-70x70',
    ],
    'flash-tilelang-scale-loop-bound': [
        'alibi-bh-window8-25x40', 'causal-60x35', 'causal-gqa2-20x50', 'causal-window10-40x90',
        'decode-mqa-alibi-1x77', 'plain-30x30', 'softcap5-causal-window8-33x33',
    ],
    'flash-unsloth-window-causal-path': [
        'causal-window10-40x90',
    ],
    'flash-mlx-gqa-decode-batch-offset': [
        'decode-gqa4-causal-1x100', 'decode-mqa-alibi-1x77',
    ],
    'flash-mniml-head-dim-warp-cap': [
        'causal-window10-40x90', 'decode-gqa4-causal-1x100', 'single-head-softcap3-40x129', 'window16-mqa-70x70',
    ],
    'flash-ajhalthor-merge-heads-no-permute': [
        'alibi-bh-window8-25x40', 'causal-60x35', 'causal-gqa2-20x50', 'causal-window10-40x90', 'plain-30x30',
        'softcap5-causal-window8-33x33', 'window16-mqa-70x70',
    ],
    'bwd-aiter-delta-do-strides': [
        '3d-randmask-33x100', '4d-mqa-causal-10x129', '4d-padkeys-16x48',
    ],
    'bwd-fla-lse-head-offset': [
        '3d-randmask-33x100', '4d-mqa-causal-10x129', '4d-padkeys-16x48',
    ],
    'bwd-aotriton-lse-base-mismatch': [
        '2d-one-row-1x40', '2d-plain-20x30', '3d-randmask-33x100', '4d-mqa-causal-10x129', '4d-padkeys-16x48',
    ],
    'bwd-liteattention-tail-tile-unmasked': [
        '3d-randmask-33x100', '4d-mqa-causal-10x129',
    ],
    'bwd-nntrainer-softmax-all-axes': [
        '2d-plain-20x30', '3d-randmask-33x100', '4d-mqa-causal-10x129', '4d-padkeys-16x48',
    ],
    'bwd-glgin-softmax-before-scale': [
        '2d-plain-20x30', '3d-randmask-33x100', '4d-padkeys-16x48',
    ],
}


def load(fname):
    spec = importlib.util.spec_from_file_location('h23_' + fname[:-3], os.path.join(HERE, fname))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- references (float64, from the contracts)
def ref_attn(q, k, v, keep=None, bias=None, scale=None):
    """softmax(q k^T * scale + bias, keep) v in float64; a row with no kept finite score gives zeros."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    return np.matmul(p, v)


def ref_sdpa(c):
    q, k, v = c['query'], c['key'], c['value']
    hq, sq, sk = q.shape[1], q.shape[2], k.shape[2]
    g = hq // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    keep, bias = None, None
    m = c.get('attn_mask')
    if m is not None:
        if m.dtype == bool:
            keep = m
        else:
            bias = m
    if c.get('is_causal'):
        tl = np.tril(np.ones((sq, sk), dtype=bool))
        keep = tl if keep is None else keep & tl
    return ref_attn(q, k, v, keep, bias, c.get('scale'))


def flash_visible(sq, sk, causal, window):
    left, right = window
    if causal:
        right = 0
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    vis = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        vis &= j >= i - left
    if right >= 0:
        vis &= j <= i + right
    return vis


def ref_flash(c):
    q = np.swapaxes(c['q'], 1, 2)
    k, v = np.swapaxes(c['k'], 1, 2), np.swapaxes(c['v'], 1, 2)
    b, hq, sq, d = q.shape
    sk = k.shape[2]
    g = hq // k.shape[1]
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    sc = 1.0 / np.sqrt(d) if c.get('softmax_scale') is None else c['softmax_scale']
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    cap = c.get('softcap', 0.0)
    if cap > 0:
        s = cap * np.tanh(s / cap)
    sl = c.get('alibi_slopes')
    if sl is not None:
        sl = np.asarray(sl, dtype=np.float64)
        sl = np.broadcast_to(sl, (b, hq))
        dist = np.abs(np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :])
        s = s - sl[:, :, None, None] * dist
    vis = flash_visible(sq, sk, c.get('causal', False), c.get('window_size', (-1, -1)))
    s = np.where(vis, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    return np.swapaxes(np.matmul(p, v), 1, 2)


def ref_bwd(q, k, v, do, mask=None, scale=None):
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, do))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    e = np.exp(s - mx)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    ds = p * (np.matmul(do, np.swapaxes(v, -1, -2)) - (o * do).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), np.broadcast_to(q, ds.shape[:-2] + q.shape[-2:])) * sc
    while dk.ndim > k.ndim:
        dk, dv = dk.sum(axis=0), dv.sum(axis=0)
    ax = tuple(i for i, n in enumerate(k.shape) if n == 1 and dk.shape[i] != 1)
    if ax:
        dk, dv = dk.sum(axis=ax, keepdims=True), dv.sum(axis=ax, keepdims=True)
    return dq, dk, dv


def torch_bwd(q, k, v, do, mask=None, scale=None):
    """Autograd of the same forward (cross-check of ref_bwd)."""
    qt, kt, vt = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-2, -1)) * sc
    if mask is not None:
        keep = torch.as_tensor(np.broadcast_to(mask, s.shape).copy())
        alive = keep.any(dim=-1, keepdim=True)
        s = s.masked_fill(~keep, float('-inf')).masked_fill(~alive, 0.0)
        p = torch.softmax(s, dim=-1) * alive
    else:
        p = torch.softmax(s, dim=-1)
    (torch.matmul(p, vt) * torch.tensor(do)).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ---------------------------------------------------------------- cases
def rng_for(name):
    return np.random.default_rng(sum(ord(ch) * (i + 1) for i, ch in enumerate(name)))


def rand_mask(r, shape, p=0.7, dead_rows=1):
    m = r.random(shape) < p
    m[..., 0, :] = m[..., 0, :] | True
    flat = m.reshape(-1, shape[-2], shape[-1])
    for i in range(dead_rows):
        flat[i % flat.shape[0], 1 + i] = False
    return flat.reshape(shape)


def pad_mask(lengths, sk):
    return (np.arange(sk)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]


def np_cases():
    out = {}

    def mk(name, lead, sq, sk, d, dv, mask=None, scale=None):
        r = rng_for(name)
        c = {'q': r.standard_normal(lead + (sq, d)), 'k': r.standard_normal(lead + (sk, d)),
             'v': r.standard_normal(lead + (sk, dv)), 'mask': mask, 'scale': scale}
        if callable(mask):
            c['mask'] = mask(r)
        out[name] = c

    mk('2d-plain-20x37', (), 20, 37, 16, 12)
    mk('3d-randmask-33x70', (3,), 33, 70, 24, 20, lambda r: rand_mask(r, (3, 33, 70)), 0.37)
    mk('4d-padkeys-17x129', (2, 2), 17, 129, 32, 40, pad_mask([100, 0], 129))
    mk('4d-headmask3d-12x64', (2, 2), 12, 64, 64, 64,
       np.stack([np.abs(np.arange(12)[:, None] * 5 - np.arange(64)[None, :]) <= w for w in (6, 20)]))
    left = (np.arange(96)[None, :] >= np.array([[0], [30]]))[:, None, None, :]
    mk('4d-leftpad-decode-1x96', (2, 4), 1, 96, 8, 8, left, 1.0)
    mk('2d-causal-100x100', (), 100, 100, 64, 48, np.tril(np.ones((100, 100), dtype=bool)), 0.5)
    mk('4d-b1-headmask3d-40x32', (1, 3), 40, 32, 40, 24, lambda r: rand_mask(r, (3, 40, 32), 0.6, 0))
    return out


def np_ref(c):
    return ref_attn(c['q'], c['k'], c['v'], c['mask'], None, c['scale'])


def np_call(fn, c, dt):
    args = {x: c[x].astype(dt) for x in ('q', 'k', 'v')}
    mask = None if c['mask'] is None else np.array(c['mask'], copy=True)
    before = {x: a.copy() for x, a in args.items()}
    out = fn(args['q'], args['k'], args['v'], mask=mask, scale=c['scale'])
    modified = any(not np.array_equal(args[x], before[x]) for x in args)
    return np.asarray(out), modified


def sdpa_cases():
    out = {}

    def mk(name, b, hq, hkv, sq, sk, d, dv, **kw):
        r = rng_for(name)
        c = {'query': r.standard_normal((b, hq, sq, d)), 'key': r.standard_normal((b, hkv, sk, d)),
             'value': r.standard_normal((b, hkv, sk, dv))}
        for key_, val in kw.items():
            c[key_] = val(r) if callable(val) else val
        c['enable_gqa'] = hq != hkv
        out[name] = c

    mk('plain-31x31', 2, 3, 3, 31, 31, 16, 12)
    mk('boolmask-20x45', 2, 2, 2, 20, 45, 24, 20, attn_mask=lambda r: rand_mask(r, (2, 2, 20, 45)))

    def addmask(r):
        m = r.standard_normal((1, 4, 33, 64))
        m[r.random(m.shape) < 0.2] = -np.inf
        m[0, 1, 5] = -np.inf
        return m

    mk('additive-inf-33x64', 1, 4, 4, 33, 64, 32, 32, attn_mask=addmask, scale=0.3)
    mk('padbias-16x40', 2, 3, 3, 16, 40, 16, 24,
       attn_mask=np.where(pad_mask([40, 23], 40), 0.0, -np.inf))
    mk('causal-20x50', 1, 2, 2, 20, 50, 32, 32, is_causal=True)
    mk('causal-70x40', 2, 2, 2, 70, 40, 24, 24, is_causal=True)
    mk('causal-gqa6-64x64', 1, 6, 1, 64, 64, 64, 48, is_causal=True, scale=1.0)
    mk('gqa4-decode-padmask-1x129', 2, 8, 2, 1, 129, 32, 32, attn_mask=pad_mask([129, 60], 129))
    mk('scale05-50x50', 1, 1, 1, 50, 50, 8, 8, scale=0.5)
    return out


def sdpa_call(fn, c, dt):
    td = torch.float64 if dt == np.float64 else torch.float32
    t = {x: torch.tensor(c[x].astype(dt)) for x in ('query', 'key', 'value')}
    m = c.get('attn_mask')
    if m is not None:
        m = torch.tensor(m.copy()) if m.dtype == bool else torch.tensor(m.astype(dt))
    before = {x: a.clone() for x, a in t.items()}
    out = fn(t['query'], t['key'], t['value'], attn_mask=m, dropout_p=0.0, is_causal=c.get('is_causal', False),
             scale=c.get('scale'), enable_gqa=c['enable_gqa'])
    modified = any(not torch.equal(t[x], before[x]) for x in t)
    if out.dtype != td:
        return None, modified
    return out.numpy(), modified


def flash_cases():
    out = {}

    def mk(name, b, hq, hkv, sq, sk, d, dv, **kw):
        r = rng_for(name)
        c = {'q': r.standard_normal((b, sq, hq, d)), 'k': r.standard_normal((b, sk, hkv, d)),
             'v': r.standard_normal((b, sk, hkv, dv))}
        c.update(kw)
        out[name] = c

    mk('plain-30x30', 2, 3, 3, 30, 30, 16, 16)
    mk('causal-gqa2-20x50', 1, 4, 2, 20, 50, 32, 24, causal=True)
    mk('causal-60x35', 1, 2, 2, 60, 35, 24, 24, causal=True)
    mk('window16-mqa-70x70', 1, 2, 1, 70, 70, 64, 64, window_size=(16, -1))
    mk('causal-window10-40x90', 1, 4, 4, 40, 90, 40, 40, causal=True, window_size=(10, -1))
    mk('softcap5-causal-window8-33x33', 2, 2, 2, 33, 33, 16, 16, causal=True, window_size=(8, -1), softcap=5.0,
       softmax_scale=0.5)
    mk('alibi-bh-window8-25x40', 2, 4, 2, 25, 40, 32, 32, window_size=(8, 8),
       alibi_slopes=np.array([[0.5, 0.25, 0.125, 0.0625], [0.3, 0.2, 0.1, 0.05]], dtype=np.float32))
    mk('decode-gqa4-causal-1x100', 2, 8, 2, 1, 100, 64, 32, causal=True)
    mk('decode-mqa-alibi-1x77', 2, 4, 1, 1, 77, 16, 16, causal=True,
       alibi_slopes=np.array([0.5, 0.25, 0.125, 0.0625], dtype=np.float32))
    mk('single-head-softcap3-40x129', 1, 1, 1, 40, 129, 64, 64, softcap=3.0, softmax_scale=0.5)
    return out


def flash_call(fn, c, dt):
    td = torch.float64 if dt == np.float64 else torch.float32
    t = {x: torch.tensor(c[x].astype(dt)) for x in ('q', 'k', 'v')}
    before = {x: a.clone() for x, a in t.items()}
    sl = c.get('alibi_slopes')
    out = fn(t['q'], t['k'], t['v'], dropout_p=0.0, softmax_scale=c.get('softmax_scale'),
             causal=c.get('causal', False), window_size=c.get('window_size', (-1, -1)),
             softcap=c.get('softcap', 0.0), alibi_slopes=None if sl is None else torch.tensor(sl))
    modified = any(not torch.equal(t[x], before[x]) for x in t)
    if out.dtype != td:
        return None, modified
    return out.numpy(), modified


def bwd_cases():
    out = {}

    def mk(name, qlead, kvlead, sq, sk, d, dv, mask=None, scale=None):
        r = rng_for(name)
        c = {'q': r.standard_normal(qlead + (sq, d)), 'k': r.standard_normal(kvlead + (sk, d)),
             'v': r.standard_normal(kvlead + (sk, dv)), 'do': r.standard_normal(qlead + (sq, dv)),
             'mask': mask(r) if callable(mask) else mask, 'scale': scale}
        out[name] = c

    mk('2d-plain-20x30', (), (), 20, 30, 16, 12)
    mk('3d-randmask-33x100', (2,), (2,), 33, 100, 24, 24, lambda r: rand_mask(r, (2, 33, 100)), 0.37)
    mk('4d-padkeys-16x48', (2, 2), (2, 2), 16, 48, 32, 40, pad_mask([48, 0], 48))
    mk('4d-mqa-causal-10x129', (2, 4), (2, 1), 10, 129, 8, 8,
       np.arange(129)[None, :] <= np.arange(10)[:, None] + 119, 1.0)
    mk('2d-one-row-1x40', (), (), 1, 40, 64, 64, None, 1.0)
    return out


def bwd_ref(c):
    return ref_bwd(c['q'], c['k'], c['v'], c['do'], c['mask'], c['scale'])


def bwd_call(fn, c, dt):
    args = {x: c[x].astype(dt) for x in ('q', 'k', 'v', 'do')}
    before = {x: a.copy() for x, a in args.items()}
    mask = None if c['mask'] is None else np.array(c['mask'], copy=True)
    res = fn(args['q'], args['k'], args['v'], args['do'], mask=mask, scale=c['scale'])
    modified = any(not np.array_equal(args[x], before[x]) for x in args)
    return tuple(np.asarray(x) for x in res), modified


SUITES = {
    'numpy_fwd.py': (np_cases, np_ref, np_call, ('q', 'k', 'v')),
    'torch_sdpa_fwd.py': (sdpa_cases, ref_sdpa, sdpa_call, ('query', 'key', 'value', 'attn_mask')),
    'flash_fwd.py': (flash_cases, ref_flash, flash_call, ('q', 'k', 'v')),
    'numpy_bwd.py': (bwd_cases, bwd_ref, bwd_call, ('q', 'k', 'v', 'do')),
}


def rounded(c, dt, keys):
    """The case with its float inputs rounded to ``dt`` (for the float32 reference)."""
    c2 = dict(c)
    for x in keys:
        a = c2.get(x)
        if isinstance(a, np.ndarray) and a.dtype.kind == 'f':
            c2[x] = a.astype(dt).astype(np.float64)
    return c2


def rel_err(out, ref, dt):
    """Relative Frobenius error (the largest over a tuple); inf for non-finite, wrong shape or dtype."""
    if isinstance(ref, tuple):
        if not isinstance(out, tuple) or len(out) != len(ref):
            return float('inf')
        return max(rel_err(o, r, dt) for o, r in zip(out, ref))
    if out is None or out.shape != ref.shape or out.dtype != dt or not np.all(np.isfinite(out)):
        return float('inf')
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out.astype(np.float64) - ref) / (den if den > 0 else 1.0))


def run_kernel(fn, fname):
    """{(case, dtype): worst relative error over two calls}, and any problem found (input writes)."""
    make, ref, call, keys = SUITES[fname]
    res, problems = {}, []
    for cname, c in make().items():
        for dt in (np.float64, np.float32):
            cr = rounded(c, dt, keys) if dt == np.float32 else c
            r = ref(cr)
            worst = 0.0
            for _ in range(2):
                try:
                    out, modified = call(fn, c, dt)
                    if modified:
                        problems.append('%s modifies its inputs on %s' % (fn.__name__, cname))
                    worst = max(worst, rel_err(out, r, dt))
                except Exception:  # an exception counts as a difference
                    worst = float('inf')
            res[(cname, np.dtype(dt).name)] = worst
    return res


def check_markers(fname, catalog):
    """Exactly one ``# BUG:`` in each broken kernel's section, none elsewhere."""
    problems = []
    text = open(os.path.join(HERE, fname)).read()
    parts = re.split(r'^# --- kernel: (\w+) ---$', text, flags=re.M)
    if parts[0].count('# BUG:'):
        problems.append('%s: # BUG: outside the kernel sections' % fname)
    sections = dict(zip(parts[1::2], parts[2::2]))
    for e in catalog:
        n = sections.get(e['fn'], '').count('# BUG:')
        want = 0 if e['correct'] else 1
        if e['fn'] not in sections or n != want:
            problems.append('%s: section of %s has %d # BUG: markers (want %d)' % (fname, e['fn'], n, want))
    return problems


def check_catalog(fname, api, mod, seen_names, seen_sources):
    problems = []
    cat = getattr(mod, 'CATALOG', None)
    if not isinstance(cat, list):
        return ['%s: no CATALOG list' % fname]
    broken = [e for e in cat if not e.get('correct')]
    if len(broken) < 6 or len(cat) - len(broken) < 2:
        problems.append('%s: needs >= 6 broken and >= 2 correct kernels' % fname)
    for e in cat:
        if list(e.keys()) != KEYS:
            problems.append('%s: CATALOG keys of %s' % (fname, e.get('name')))
            continue
        if e['name'] in seen_names:
            problems.append('duplicate name %s' % e['name'])
        seen_names.add(e['name'])
        if e['api'] != api or not callable(getattr(mod, e['fn'], None)):
            problems.append('%s: api/fn of %s' % (fname, e['name']))
        if e['dtype'] not in ('float64', 'float32') or not set(e['features']) <= FEATURES[api]:
            problems.append('%s: dtype/features of %s' % (fname, e['name']))
        if e['correct']:
            if any(e[x] is not None for x in ('bug', 'parameter', 'source', 'report')) or e['name'] in TRIGGERS:
                problems.append('%s: correct kernel %s carries bug fields or TRIGGERS' % (fname, e['name']))
            continue
        if not re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)+', e['bug'] or ''):
            problems.append('%s: bug of %s not kebab-case' % (fname, e['name']))
        if 'Triggers:' not in (e['parameter'] or ''):
            problems.append('%s: parameter of %s lacks Triggers:' % (fname, e['name']))
        m = re.fullmatch(r'([\w.-]+/[\w.-]+)#(\d+)', e['source'] or '')
        rm = re.fullmatch(r'https://github\.com/([\w.-]+/[\w.-]+)/(issues|pull)/(\d+)', e['report'] or '')
        if not m or not rm or m.group(1) != rm.group(1) or m.group(2) != rm.group(3):
            problems.append('%s: source/report of %s disagree' % (fname, e['name']))
        if e['source'] in seen_sources:
            problems.append('duplicate source %s' % e['source'])
        seen_sources.add(e['source'])
        if e['name'] not in TRIGGERS or not TRIGGERS[e['name']]:
            problems.append('%s: no TRIGGERS entry for %s' % (fname, e['name']))
    return problems


def cross_check():
    """References against each other: sdpa/flash vs ref_attn with explicit masks, backward vs autograd."""
    worst = 0.0
    r = np.random.default_rng(7)
    q, k, v = r.standard_normal((2, 3, 9, 8)), r.standard_normal((2, 3, 14, 8)), r.standard_normal((2, 3, 14, 6))
    tl = np.tril(np.ones((9, 14), dtype=bool))
    a = ref_sdpa({'query': q, 'key': k, 'value': v, 'is_causal': True})
    worst = max(worst, np.abs(a - ref_attn(q, k, v, tl)).max())
    add = np.where(tl, 0.0, -np.inf)
    a = ref_sdpa({'query': q, 'key': k, 'value': v, 'attn_mask': add})
    worst = max(worst, np.abs(a - ref_attn(q, k, v, tl)).max())
    qf, kf, vf = (np.swapaxes(x, 1, 2) for x in (q, k, v))
    br = np.arange(14)[None, :] <= np.arange(9)[:, None] + 5
    a = np.swapaxes(ref_flash({'q': qf, 'k': kf, 'v': vf, 'causal': True}), 1, 2)
    worst = max(worst, np.abs(a - ref_attn(q, k, v, br)).max())
    band = br & (np.arange(14)[None, :] >= np.arange(9)[:, None] + 5 - 3)
    a = np.swapaxes(ref_flash({'q': qf, 'k': kf, 'v': vf, 'causal': True, 'window_size': (3, -1)}), 1, 2)
    worst = max(worst, np.abs(a - ref_attn(q, k, v, band)).max())
    for c in bwd_cases().values():
        got = ref_bwd(c['q'], c['k'], c['v'], c['do'], c['mask'], c['scale'])
        want = torch_bwd(c['q'], c['k'], c['v'], c['do'], c['mask'], c['scale'])
        worst = max(worst, max(np.abs(x - y).max() for x, y in zip(got, want)))
    return worst


def main():
    t0 = time.time()
    torch.set_num_threads(1)
    problems = []
    xc = cross_check()
    print('reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): '
          'worst %.2g' % xc)
    if not xc < 1e-12:
        problems.append('reference cross-check %.3g' % xc)
    print('worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)')
    names, sources, summary = set(), set(), []
    for fname, api in MODULES:
        mod = load(fname)
        problems += check_catalog(fname, api, mod, names, sources)
        problems += check_markers(fname, mod.CATALOG)
        print('%s (%s)' % (fname, api))
        nb = 0
        for e in mod.CATALOG:
            res = run_kernel(getattr(mod, e['fn']), fname)
            w64 = max(v for (c, d), v in res.items() if d == 'float64')
            w32 = max(v for (c, d), v in res.items() if d == 'float32')
            status = 'ok' if e['correct'] else 'broken'
            print('  %-44s %-6s f64 %-9.3g f32 %.3g' % (e['name'], status, w64, w32))
            trig = set(TRIGGERS.get(e['name'], ()))
            cases = {c for (c, d) in res}
            if e['correct']:
                bad = [k for k, v in res.items() if not v <= OK_BOUND[k[1]]]
                if bad:
                    problems.append('%s: correct kernel fails %s' % (e['name'], bad))
                continue
            nb += 1
            if not trig <= cases:
                problems.append('%s: TRIGGERS names unknown cases %s' % (e['name'], sorted(trig - cases)))
            for c in cases:
                if c in trig:
                    v = res[(c, e['dtype'])]
                    if not (v > DIFF_BOUND[e['dtype']]):
                        problems.append('%s: does not differ on trigger case %s (%.3g)' % (e['name'], c, v))
                else:
                    for d in ('float64', 'float32'):
                        if not res[(c, d)] <= OK_BOUND[d]:
                            problems.append('%s: differs on non-trigger case %s %s (%.3g)'
                                            % (e['name'], c, d, res[(c, d)]))
        summary.append('%s %d broken + %d correct' % (fname[:-3], nb, len(mod.CATALOG) - nb))
    for p in problems:
        print('PROBLEM:', p)
    if problems:
        print('SELF-CHECK FAILED (%.1f s): %d problem(s)' % (time.time() - t0, len(problems)))
        return 1
    print('SELF-CHECK PASSED (%.1f s): %s' % (time.time() - t0, ', '.join(summary)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
