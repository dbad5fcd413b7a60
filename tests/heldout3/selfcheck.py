"""Self-check of the held-out kernels in this folder (not a pytest module; run it directly).

    /usr/bin/python3 tests/heldout3/selfcheck.py [-v]

It compares every kernel with a plain float64 NumPy reference written here, over cases restricted to the kernel's
features: correct kernels must match (relative error <= 1e-10 in float64, <= 1e-5 in float32), return the input
dtype and shape and leave their inputs unmodified; each broken kernel must differ from the reference on at least one
case in its judged dtype (relative error > 1e-8 in float64, > 1e-4 in float32, or a non-finite value). The backward
reference is cross-checked with torch autograd. It also validates the CATALOG entries and the `# BUG:` markers.
Exit status 0 when everything holds, 1 otherwise.
"""
import inspect
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-5}
DIFF = {"float64": 1e-8, "float32": 1e-4}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}
APIS = {"refimpl", "torch-sdpa", "flash-attn", "numpy-backward"}
KEYS = ["name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"]

RNG = np.random.default_rng(20240611)


# ----------------------------------------------------------------------------------------------------------------
# references (float64)
# ----------------------------------------------------------------------------------------------------------------

def _ref_softmax(s):
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    e = np.exp(s - m)
    z = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(z == 0.0, 1.0, z)


def _f64(x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _ref_mask(s, mask):
    if mask is None:
        return s
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return np.where(mask, s, -np.inf)
    return s + mask.astype(np.float64)


def ref_refimpl(q, k, v, mask=None, scale=None):
    q, k, v = _f64(q), _f64(k), _f64(v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = _ref_mask(q @ np.swapaxes(k, -1, -2) * scale, mask)
    return _ref_softmax(s) @ v


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = _f64(query), _f64(key), _f64(value)
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, rep, axis=-3), np.repeat(v, rep, axis=-3)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if is_causal:
        L, S = q.shape[-2], k.shape[-2]
        s = np.where(np.arange(S)[None, :] <= np.arange(L)[:, None], s, -np.inf)
    s = _ref_mask(s, attn_mask)
    return _ref_softmax(s) @ v


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = _f64(q), _f64(k), _f64(v)
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    pos = i + (sk - sq)
    vis = np.ones((sq, sk), dtype=bool)
    if causal:
        vis &= j <= pos
    if window_size[0] >= 0:
        vis &= j >= pos - window_size[0]
    if window_size[1] >= 0:
        vis &= j <= pos + window_size[1]
    out = np.zeros((b, sq, hq, dv))
    for bi in range(b):
        for h in range(hq):
            g = h // (hq // hkv)
            s = q[bi, :, h, :] @ k[bi, :, g, :].T * scale
            if softcap > 0:
                s = softcap * np.tanh(s / softcap)
            if alibi_slopes is not None:
                sl = np.asarray(alibi_slopes, dtype=np.float64)
                slope = sl[h] if sl.ndim == 1 else sl[bi, h]
                s = s - slope * np.abs(pos - j)
            s = np.where(vis, s, -np.inf)
            out[bi, :, h, :] = _ref_softmax(s) @ v[bi, :, g, :]
    return out


def _reduce(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def ref_backward(q, k, v, d_out, mask=None, scale=None):
    shapes = (np.shape(q), np.shape(k), np.shape(v))
    q, k, v, do = _f64(q), _f64(k), _f64(v), _f64(d_out)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    p = _ref_softmax(_ref_mask(q @ np.swapaxes(k, -1, -2) * scale, mask))
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    dq = ds @ k * scale
    dk = np.swapaxes(ds, -1, -2) @ q * scale
    return tuple(_reduce(g, s) for g, s in zip((dq, dk, dv), shapes))


def autograd_backward(q, k, v, d_out, mask=None, scale=None):
    """Cross-check of ref_backward: torch autograd through a safe-softmax forward, float64."""
    tq, tk, tv = (torch.tensor(_f64(x), requires_grad=True) for x in (q, k, v))
    scale = 1.0 / math.sqrt(tq.shape[-1]) if scale is None else scale
    s = tq @ tk.transpose(-1, -2) * scale
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype == np.bool_:
            s = s.masked_fill(torch.tensor(~m), float("-inf"))
        else:
            s = s + torch.tensor(m.astype(np.float64))
    mx = s.detach().amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isinf(mx), torch.zeros_like(mx), mx)
    e = torch.exp(s - mx)
    z = e.sum(dim=-1, keepdim=True)
    out = (e / torch.where(z == 0, torch.ones_like(z), z)) @ tv
    out.backward(torch.tensor(_f64(d_out)))
    return tuple(t.grad.numpy() for t in (tq, tk, tv))


# ----------------------------------------------------------------------------------------------------------------
# case builders
# ----------------------------------------------------------------------------------------------------------------

def rn(*shape):
    return RNG.standard_normal(shape)


def causal_keep(sq, sk, bottom_right=True):
    off = sk - sq if bottom_right else 0
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None] + off


def band_keep(sq, sk, left, right):
    i, j = np.arange(sq)[:, None] + (sk - sq), np.arange(sk)[None, :]
    return (j >= i - left) & (j <= i + right)


def padding_keep(b, sk, lengths):
    keep = np.zeros((b, 1, 1, sk), dtype=bool)
    for bi, n in enumerate(lengths):
        keep[bi, ..., :n] = True
    return keep


def random_keep(shape, p, full_rows=()):
    keep = RNG.random(shape) < p
    for idx in full_rows:
        keep[idx] = False
    return keep


def alibi_bias(h, sq, sk, causal=True):
    slopes = 2.0 ** (-8.0 * np.arange(1, h + 1) / h)
    i, j = np.arange(sq)[:, None] + (sk - sq), np.arange(sk)[None, :]
    bias = -slopes[:, None, None] * np.abs(i - j)
    if causal:
        bias = np.where(j <= i, bias, -np.inf)
    return bias


def ramp_qk(lead_q, lead_k, sq, sk, d, up):
    """Large logits (~ +-3600 after scaling) that rise (up) or fall along the key axis."""
    q = 3.0 + 0.1 * rn(*lead_q, sq, d)
    t = np.arange(sk) / sk
    amp = 300.0 * (t if up else 1.0 - t)
    k = amp[:, None] * (1.0 + 0.05 * rn(*lead_k, sk, d))
    return q, k


class Case:
    def __init__(self, name, args, needs=(), f32=False, large=False):
        self.name, self.args, self.needs, self.f32, self.large = name, args, set(needs), f32, large


def refimpl_cases():
    c = []

    def qkv(b, h, sq, sk, d, dv=None, hk=None):
        return rn(b, h, sq, d), rn(b, hk or h, sk, d), rn(b, hk or h, sk, dv or d)

    q, k, v = qkv(2, 3, 5, 7, 8)
    c.append(Case("basic", dict(q=q, k=k, v=v), (), f32=True))
    q, k, v = qkv(2, 2, 9, 13, 12, 20)
    c.append(Case("dv-ne-d", dict(q=q, k=k, v=v), ("dv-ne-d",), f32=True))
    q, k, v = qkv(2, 2, 40, 23, 16)
    m = random_keep((2, 2, 40, 23), 0.6, full_rows=[(0, 1, 3), (1, 0, 39)])
    c.append(Case("bool-random-full-rows", dict(q=q, k=k, v=v, mask=m), ("mask",), f32=True))
    q, k, v = qkv(3, 2, 20, 70, 16, 24)
    c.append(Case("padding-per-batch", dict(q=q, k=k, v=v, mask=padding_keep(3, 70, [70, 41, 0])),
                  ("mask", "dv-ne-d"), f32=True))
    q, k, v = qkv(2, 2, 50, 50, 16)
    c.append(Case("causal-square", dict(q=q, k=k, v=v, mask=causal_keep(50, 50)), ("mask", "causal"), f32=True))
    q, k, v = qkv(1, 2, 20, 90, 16)
    c.append(Case("causal-sq<sk", dict(q=q, k=k, v=v, mask=causal_keep(20, 90)), ("mask", "causal")))
    q, k, v = qkv(2, 2, 100, 100, 16)
    c.append(Case("band-10-3", dict(q=q, k=k, v=v, mask=band_keep(100, 100, 10, 3)), ("mask", "window"), f32=True))
    q, k, v = qkv(2, 4, 33, 77, 16)
    c.append(Case("alibi-causal-float", dict(q=q, k=k, v=v, mask=alibi_bias(4, 33, 77)),
                  ("mask", "alibi", "causal"), f32=True))
    q, k, v = qkv(2, 2, 12, 40, 8)
    fm = rn(2, 2, 12, 40)
    fm[RNG.random(fm.shape) < 0.3] = -np.inf
    fm[1, 1, 5, :] = -np.inf
    c.append(Case("float-random-neg-inf-row", dict(q=q, k=k, v=v, mask=fm), ("mask",)))
    q, k, v = qkv(2, 2, 16, 45, 16)
    c.append(Case("explicit-scale", dict(q=q, k=k, v=v, scale=0.37), ()))
    q, k, v = qkv(2, 4, 10, 50, 16, hk=1)
    c.append(Case("mqa-broadcast", dict(q=q, k=k, v=v), ("gqa",), f32=True))
    q, k, v = qkv(2, 3, 24, 60, 16)
    c.append(Case("per-head-mask", dict(q=q, k=k, v=v, mask=random_keep((1, 3, 24, 60), 0.5)), ("mask",),
                  f32=True))
    q, k, v = qkv(1, 2, 64, 200, 32, 16)
    c.append(Case("long-random-mask", dict(q=q, k=k, v=v, mask=random_keep((1, 2, 64, 200), 0.8)),
                  ("mask", "dv-ne-d"), f32=True))
    q, k, v = qkv(3, 2, 1, 150, 16)
    c.append(Case("decode", dict(q=q, k=k, v=v), (), f32=True))
    q, k, v = qkv(1, 1, 2, 3, 4)
    c.append(Case("tiny", dict(q=q, k=k, v=v), ()))
    q, k, v = qkv(2, 2, 10, 40, 16)
    c.append(Case("sk-40", dict(q=q, k=k, v=v), ()))
    for up in (False, True):
        q, k = ramp_qk((1, 2), (1, 2), 6, 130, 16, up)
        c.append(Case("large-logits-" + ("rising" if up else "falling"), dict(q=q, k=k, v=rn(1, 2, 130, 16)), (),
                      large=True))
    return c


def sdpa_cases():
    c = []
    T = torch.tensor

    def qkv(b, h, sq, sk, d, dv=None, hk=None):
        return T(rn(b, h, sq, d)), T(rn(b, hk or h, sk, d)), T(rn(b, hk or h, sk, dv or d))

    q, k, v = qkv(2, 3, 5, 7, 8)
    c.append(Case("basic", dict(query=q, key=k, value=v), (), f32=True))
    q, k, v = qkv(2, 2, 9, 13, 12, 20)
    c.append(Case("dv-ne-d", dict(query=q, key=k, value=v), ("dv-ne-d",), f32=True))
    q, k, v = qkv(2, 2, 20, 50, 16)
    c.append(Case("causal-L<S", dict(query=q, key=k, value=v, is_causal=True), ("causal",), f32=True))
    q, k, v = qkv(2, 2, 40, 16, 16)
    c.append(Case("causal-L>S", dict(query=q, key=k, value=v, is_causal=True), ("causal",)))
    q, k, v = qkv(2, 2, 30, 25, 16)
    m = T(random_keep((2, 2, 30, 25), 0.6, full_rows=[(0, 0, 7), (1, 1, 0)]))
    c.append(Case("bool-random-full-rows", dict(query=q, key=k, value=v, attn_mask=m), ("mask",), f32=True))
    q, k, v = qkv(3, 2, 12, 40, 16)
    c.append(Case("padding-per-batch", dict(query=q, key=k, value=v, attn_mask=T(padding_keep(3, 40, [40, 17, 0]))),
                  ("mask",), f32=True))
    q, k, v = qkv(2, 4, 20, 60, 16)
    c.append(Case("alibi-float", dict(query=q, key=k, value=v, attn_mask=T(alibi_bias(4, 20, 60, causal=False))),
                  ("mask", "alibi"), f32=True))
    q, k, v = qkv(2, 2, 16, 30, 16)
    c.append(Case("explicit-scale", dict(query=q, key=k, value=v, scale=0.29), ()))
    q, k, v = qkv(2, 6, 18, 40, 16, hk=2)
    m = T(random_keep((2, 6, 18, 40), 0.7))
    c.append(Case("gqa-per-head-mask", dict(query=q, key=k, value=v, attn_mask=m, enable_gqa=True), ("gqa", "mask"),
                  f32=True))
    q, k, v = qkv(2, 8, 24, 24, 16, hk=2)
    c.append(Case("gqa-causal", dict(query=q, key=k, value=v, is_causal=True, enable_gqa=True), ("gqa", "causal")))
    q, k, v = qkv(2, 4, 16, 30, 16, hk=2)
    m = T(band_keep(16, 30, 6, 2)[None, None])
    c.append(Case("gqa-shared-band", dict(query=q, key=k, value=v, attn_mask=m, enable_gqa=True),
                  ("gqa", "mask", "window")))
    q, k, v = qkv(2, 4, 10, 30, 16, hk=1)
    c.append(Case("mqa", dict(query=q, key=k, value=v, enable_gqa=True), ("gqa",)))
    qn, kn = ramp_qk((1, 2), (1, 2), 6, 130, 16, up=False)
    c.append(Case("large-logits", dict(query=T(qn), key=T(kn), value=T(rn(1, 2, 130, 16))), (), large=True))
    q, k, v = qkv(1, 2, 64, 200, 32, 16)
    c.append(Case("long-causal", dict(query=q, key=k, value=v, is_causal=True), ("causal", "dv-ne-d"), f32=True))
    q, k, v = qkv(3, 2, 1, 150, 16)
    c.append(Case("decode", dict(query=q, key=k, value=v), (), f32=True))
    q, k, v = qkv(2, 2, 60, 60, 16)
    c.append(Case("band-bool", dict(query=q, key=k, value=v, attn_mask=T(band_keep(60, 60, 7, 0))),
                  ("mask", "window")))
    return c


def flash_cases():
    c = []

    def qkv(b, sq, sk, h, d, dv=None, hk=None, amp=1.0):
        return amp * rn(b, sq, h, d), amp * rn(b, sk, hk or h, d), rn(b, sk, hk or h, dv or d)

    def add(name, qkv_, needs=(), f32=False, large=False, **kw):
        q, k, v = qkv_
        c.append(Case(name, dict(q=q, k=k, v=v, **kw), needs, f32=f32, large=large))

    add("basic", qkv(2, 5, 7, 3, 8), f32=True)
    add("dv-ne-d", qkv(2, 9, 13, 2, 12, 20), ("dv-ne-d",), f32=True)
    add("causal-square", qkv(2, 40, 40, 2, 16), ("causal",), f32=True, causal=True)
    add("causal-sq<sk", qkv(2, 20, 80, 2, 16), ("causal",), f32=True, causal=True)
    add("causal-sq>sk", qkv(2, 50, 20, 2, 16), ("causal",), causal=True)
    add("decode-causal", qkv(3, 1, 150, 2, 16), ("causal",), causal=True)
    add("window-8-3", qkv(2, 100, 100, 2, 16), ("window",), window_size=(8, 3))
    add("window-16-causal", qkv(2, 40, 120, 2, 16), ("window", "causal"), f32=True, causal=True,
        window_size=(16, -1))
    add("window-right-5", qkv(2, 30, 70, 2, 16), ("window",), window_size=(-1, 5))
    add("softcap-causal", qkv(2, 48, 48, 2, 16, amp=3.0), ("softcap", "causal"), causal=True, softcap=5.0)
    add("softcap-2", qkv(2, 20, 40, 2, 16, amp=2.0), ("softcap",), softcap=2.0)
    add("alibi-noncausal", qkv(2, 30, 90, 4, 16), ("alibi",), f32=True,
        alibi_slopes=(2.0 ** -np.arange(1, 5)).astype(np.float32))
    add("alibi-batch-causal", qkv(3, 16, 70, 4, 16), ("alibi", "causal"), causal=True,
        alibi_slopes=RNG.uniform(0.05, 1.0, (3, 4)).astype(np.float32))
    add("alibi-softcap-window", qkv(2, 25, 60, 2, 16, amp=2.0), ("alibi", "softcap", "window"), softcap=4.0,
        window_size=(10, 10), alibi_slopes=np.array([0.5, 0.125], dtype=np.float32))
    add("gqa-causal", qkv(2, 24, 40, 8, 16, hk=2), ("gqa", "causal"), f32=True, causal=True)
    add("gqa-window", qkv(2, 30, 30, 6, 16, hk=3), ("gqa", "window"), window_size=(5, 5))
    add("explicit-scale", qkv(2, 20, 100, 2, 16), (), f32=True, softmax_scale=0.3)
    q = np.repeat((3.0 + 0.1 * rn(1, 6, 1, 16)), 2, axis=2)
    t = np.arange(130) / 130
    k = (300.0 * (1.0 - t))[None, :, None, None] * (1.0 + 0.05 * rn(1, 130, 2, 16))
    c.append(Case("large-logits", dict(q=q, k=k, v=rn(1, 130, 2, 16)), (), large=True))
    add("long-gqa-causal", qkv(1, 64, 200, 4, 32, 16, hk=2), ("gqa", "causal", "dv-ne-d"), f32=True, causal=True)
    add("sk-77", qkv(2, 8, 77, 2, 16), (), f32=True)
    add("window-0-0", qkv(1, 20, 20, 2, 16), ("window",), window_size=(0, 0))
    return c


def backward_cases():
    c = []

    def qkvd(b, h, sq, sk, d, dv=None, hk=None):
        dv = dv or d
        return rn(b, h, sq, d), rn(b, hk or h, sk, d), rn(b, hk or h, sk, dv), rn(b, h, sq, dv)

    def add(name, arrays, needs=(), f32=False, large=False, **kw):
        q, k, v, do = arrays
        c.append(Case(name, dict(q=q, k=k, v=v, d_out=do, **kw), needs, f32=f32, large=large))

    add("basic", qkvd(2, 2, 5, 7, 8), f32=True)
    add("dv-ne-d", qkvd(2, 2, 9, 13, 12, 20), ("dv-ne-d",), f32=True)
    add("bool-random-full-rows", qkvd(2, 2, 20, 25, 16), ("mask",), f32=True,
        mask=random_keep((2, 2, 20, 25), 0.6, full_rows=[(0, 0, 4), (1, 1, 19)]))
    add("padding-per-batch", qkvd(3, 2, 12, 40, 16), ("mask",), f32=True, mask=padding_keep(3, 40, [40, 9, 0]))
    add("alibi-causal-float", qkvd(2, 3, 20, 50, 16), ("mask", "alibi", "causal"), f32=True,
        mask=alibi_bias(3, 20, 50))
    add("explicit-scale", qkvd(2, 2, 10, 20, 16), (), scale=0.41)
    add("mqa-broadcast", qkvd(2, 3, 14, 30, 16, hk=1), ("gqa",), f32=True)
    add("causal-sq45", qkvd(1, 2, 45, 60, 16), ("mask", "causal"), f32=True, mask=causal_keep(45, 60))
    add("band", qkvd(2, 2, 40, 40, 16), ("mask", "window"), mask=band_keep(40, 40, 5, 5))
    q, k = ramp_qk((1, 2), (1, 2), 6, 130, 16, up=True)
    c.append(Case("large-logits-rising", dict(q=q, k=k, v=rn(1, 2, 130, 16), d_out=rn(1, 2, 6, 16)), (),
                  large=True))
    add("long", qkvd(1, 2, 70, 150, 32, 16), ("dv-ne-d",), f32=True)
    fm = rn(2, 2, 15, 33)
    fm[RNG.random(fm.shape) < 0.25] = -np.inf
    add("float-random", qkvd(2, 2, 15, 33, 16), ("mask",), mask=fm)
    return c


# ----------------------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------------------

def _cast(x, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32 if dtype == "float32" else torch.float64) if x.is_floating_point() else x
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x.astype(dtype)
    return x


def _copy(x):
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    return x


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    return True


def _rel_err(out, ref):
    out = _f64(out)
    if out.shape != ref.shape:
        return math.inf
    if not np.all(np.isfinite(out)):
        return math.inf
    denom = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-300)
    return float(np.max(np.abs(out - ref))) / denom if ref.size else 0.0


API = {
    "refimpl": (numpy_fwd, refimpl_cases, lambda a: ref_refimpl(**a)),
    "torch-sdpa": (torch_sdpa_fwd, sdpa_cases, lambda a: ref_sdpa(**a)),
    "flash-attn": (flash_fwd, flash_cases, lambda a: ref_flash(**a)),
    "numpy-backward": (numpy_bwd, backward_cases, lambda a: ref_backward(**a)),
}


def run_case(fn, api, case, dtype):
    """Returns (error, problems) for one call; error is the max relative error over the outputs."""
    args = {name: _cast(x, dtype) for name, x in case.args.items()}
    before = {name: _copy(x) for name, x in args.items()}
    ref = API[api][2](args)
    out = fn(**args)
    problems = []
    for name, x in args.items():
        if not _same(x, before[name]):
            problems.append("modified input %r" % name)
    outs, refs = (out, ref) if api == "numpy-backward" else ((out,), (ref,))
    inputs = ("q", "k", "v") if api == "numpy-backward" else (("query",) if api == "torch-sdpa" else ("q",))
    if len(outs) != len(refs):
        return math.inf, problems + ["returned %d outputs" % len(outs)]
    err = 0.0
    for o, r, name in zip(outs, refs, inputs):
        want = args[name].dtype
        if o.dtype != want:
            problems.append("output dtype %s, input %s" % (o.dtype, want))
        if tuple(o.shape) != tuple(r.shape):
            problems.append("output shape %s, expected %s" % (tuple(o.shape), tuple(r.shape)))
        err = max(err, _rel_err(o, r))
    return err, problems


def check_catalog(module, failures):
    names = set()
    for e in module.CATALOG:
        where = "%s:%s" % (module.__name__, e.get("name"))
        if list(e) != KEYS:
            failures.append("%s: keys %s" % (where, list(e)))
        if e["name"] in names:
            failures.append("%s: duplicate name" % where)
        names.add(e["name"])
        if e["api"] not in APIS or not callable(getattr(module, e["fn"], None)):
            failures.append("%s: bad api or fn" % where)
        if not set(e["features"]) <= FEATURES or e["dtype"] not in TOL:
            failures.append("%s: bad features or dtype" % where)
        src = inspect.getsource(getattr(module, e["fn"]))
        n_bug = len(re.findall(r"#\s*BUG:", src))
        fields = [e["bug"], e["parameter"], e["source"], e["report"]]
        if e["correct"]:
            if any(f is not None for f in fields) or n_bug or e["dtype"] != "float64":
                failures.append("%s: correct kernel with bug fields or a BUG marker" % where)
        else:
            if any(f is None for f in fields) or n_bug != 1:
                failures.append("%s: broken kernel needs bug fields and exactly one BUG marker (%d)" % (where, n_bug))
            elif not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"]):
                failures.append("%s: bug is not kebab-case" % where)
            elif not re.fullmatch(r"[\w.-]+/[\w.-]+#\d+", e["source"]):
                failures.append("%s: bad source" % where)
            elif not e["report"].startswith("https://github.com/" + e["source"].split("#")[0] + "/"):
                failures.append("%s: report does not match source" % where)


def check_backward_reference(failures):
    """ref_backward vs torch autograd. The large-logit case is ill-conditioned for dq/dk (near one-hot P, so
    dS = P * (dP - delta) cancels): two float64 formulas agree there only to ~1e-8, hence its looser bound."""
    worst = {False: 0.0, True: 0.0}
    for case in backward_cases():
        ours = ref_backward(**case.args)
        auto = autograd_backward(**case.args)
        for a, b in zip(ours, auto):
            worst[case.large] = max(worst[case.large], _rel_err(a, b))
    if worst[False] > 1e-10 or worst[True] > 1e-7:
        failures.append("backward reference vs torch autograd: rel err %.3g / %.3g (large logits)"
                        % (worst[False], worst[True]))
    return worst


def main(verbose=False):
    t0 = time.time()
    failures, notes = [], []
    counts = {}
    worst_bwd = check_backward_reference(failures)
    for api, (module, build, _) in API.items():
        check_catalog(module, failures)
        cases = build()
        n_ok_broken = 0
        for e in module.CATALOG:
            fn = getattr(module, e["fn"])
            usable = [cs for cs in cases if cs.needs <= set(e["features"])]
            bites, worst = [], {"float64": 0.0, "float32": 0.0}
            for dtype in ("float64", "float32"):
                for case in usable:
                    if dtype == "float32" and not case.f32:
                        continue
                    try:
                        err, problems = run_case(fn, api, case, dtype)
                    except Exception as exc:  # a kernel raising is reported, never hidden
                        notes.append("%s raises on %s/%s: %s: %s"
                                     % (e["name"], case.name, dtype, type(exc).__name__, exc))
                        continue
                    for p in problems:
                        failures.append("%s on %s/%s: %s" % (e["name"], case.name, dtype, p))
                    if e["correct"]:
                        worst[dtype] = max(worst[dtype], err)
                        if err > TOL[dtype]:
                            failures.append("%s (correct) on %s/%s: rel err %.3g"
                                            % (e["name"], case.name, dtype, err))
                    elif dtype == e["dtype"] and err > DIFF[dtype]:
                        bites.append("%s(%.2g)" % (case.name, err))
            if e["correct"]:
                if verbose:
                    print("  ok      %-24s worst rel err %.2g (float64), %.2g (float32)"
                          % (e["name"], worst["float64"], worst["float32"]))
            elif bites:
                n_ok_broken += 1
                if verbose:
                    print("  differs %-24s [%s] on %s" % (e["name"], e["dtype"], ", ".join(bites)))
            else:
                failures.append("%s (broken, %s) matches the reference on every case" % (e["name"], e["dtype"]))
        n_broken = sum(1 for e in module.CATALOG if not e["correct"])
        counts[module.__name__] = (n_broken, len(module.CATALOG) - n_broken, n_ok_broken, len(cases))
    for note in notes:
        print("note:", note)
    for f in failures:
        print("FAIL:", f)
    for name, (nb, nc, nd, ncases) in counts.items():
        print("%-15s %2d broken (%2d differ from the reference) / %d correct, %d cases" % (name, nb, nd, nc, ncases))
    print("backward reference vs torch autograd: max rel err %.2g (%.2g on the large-logit case)"
          % (worst_bwd[False], worst_bwd[True]))
    status = "FAILED (%d problems)" % len(failures) if failures else "ok"
    print("RESULT: %s in %.1f s" % (status, time.time() - t0))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(verbose="-v" in sys.argv[1:]))
