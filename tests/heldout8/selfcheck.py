"""Self-check for tests/heldout8: references written from the four contracts, fixed seeded cases, CATALOG checks.

Run: /usr/bin/python3 tests/heldout8/selfcheck.py   (exit status 1 on any problem)
"""
import importlib.util
import math
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [("numpy_fwd", "refimpl"), ("torch_sdpa_fwd", "torch-sdpa"), ("flash_fwd", "flash-attn"),
           ("numpy_bwd", "numpy-backward")]
FEATURES = {"refimpl": {"mask", "dv-ne-d"}, "torch-sdpa": {"mask", "causal", "gqa", "dv-ne-d"},
            "flash-attn": {"causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"},
            "numpy-backward": {"mask", "gqa", "dv-ne-d"}}
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
TOL_OK = {"float64": 1e-10, "float32": 1e-5}
TOL_DIFF = {"float64": 1e-8, "float32": 1e-4}
DTYPES = {"float64": (np.float64, torch.float64), "float32": (np.float32, torch.float32)}


def load(name):
    spec = importlib.util.spec_from_file_location("heldout8_" + name, os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------------------------
# float64 references written from the contracts
# ----------------------------------------------------------------------------------------------------------------
def softmax_rows(s):
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = e.sum(axis=-1, keepdims=True)
    return e / np.where(den == 0, 1.0, den)


def ref_refimpl(q, k, v, mask=None, scale=None):
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    return np.matmul(softmax_rows(s), v)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    hq, hkv = query.shape[1], key.shape[1]
    if enable_gqa and hkv != hq:
        idx = np.arange(hq) // (hq // hkv)
        key, value = key[:, idx], value[:, idx]
    L, S = query.shape[-2], key.shape[-2]
    sc = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    s = np.matmul(query, np.swapaxes(key, -1, -2)) * sc
    if is_causal:
        s = np.where(np.tril(np.ones((L, S), bool)), s, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            s = np.where(attn_mask, s, -np.inf)
        else:
            s = s + attn_mask
    return np.matmul(softmax_rows(s), value)


def flash_keep(sq, sk, causal, window):
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    off = sk - sq
    left, right = window
    if causal:
        right = 0
    keep = np.ones((sq, sk), bool)
    if left >= 0:
        keep &= j >= i + off - left
    if right >= 0:
        keep &= j <= i + off + right
    return keep


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    idx = np.arange(hq) // (hq // hkv)
    qh = q.transpose(0, 2, 1, 3)
    kh = k[:, :, idx].transpose(0, 2, 1, 3)
    vh = v[:, :, idx].transpose(0, 2, 1, 3)
    sc = d ** -0.5 if softmax_scale is None else softmax_scale
    s = np.matmul(qh, np.swapaxes(kh, -1, -2)) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        i = np.arange(sq)[:, None]
        j = np.arange(sk)[None, :]
        slopes = np.asarray(alibi_slopes, np.float64).reshape(-1, hq, 1, 1)
        s = s - slopes * np.abs(i + (sk - sq) - j)
    s = np.where(flash_keep(sq, sk, causal, window_size), s, -np.inf)
    return np.matmul(softmax_rows(s), vh).transpose(0, 2, 1, 3)


def unbroadcast(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    p = softmax_rows(s)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return dq, unbroadcast(dk, k.shape), unbroadcast(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    """Independent torch autograd version of the contract-4 gradients (float64)."""
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(tq, tk.transpose(-1, -2)) * sc
    keep = torch.ones(s.shape, dtype=torch.bool)
    if mask is not None:
        keep = torch.broadcast_to(torch.tensor(np.asarray(mask, bool)), s.shape)
    s = torch.where(keep, s, torch.tensor(-math.inf, dtype=torch.float64))
    m = s.detach().amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m) * keep
    den = e.sum(dim=-1, keepdim=True)
    p = e / torch.where(den == 0, torch.ones_like(den), den)
    out = torch.matmul(p, tv)
    (out * torch.tensor(d_out)).sum().backward()
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


# ----------------------------------------------------------------------------------------------------------------
# fixed seeded cases (float64 masters; each runs in float64 and, unless f64only, in float32)
# ----------------------------------------------------------------------------------------------------------------
def rn(rng, *shape):
    return rng.standard_normal(shape)


def rand_mask(rng, shape, p_keep, dead_rows=()):
    m = rng.random(shape) < p_keep
    for r in dead_rows:
        m[..., r, :] = False
    return m


def pad_mask(lengths, sk):
    return np.arange(sk)[None, :] < np.asarray(lengths)[:, None]


def refimpl_cases():
    C = []

    def add(name, seed, qs, ks, vs, mask_fn=None, scale=None, mult=1.0, f64only=False):
        rng = np.random.default_rng(seed)
        q, k, v = rn(rng, *qs) * mult, rn(rng, *ks) * mult, rn(rng, *vs)
        mask = mask_fn(rng) if mask_fn else None
        C.append(dict(name=name, f64only=f64only, args=dict(q=q, k=k, v=v, mask=mask, scale=scale)))

    sq_gt = np.arange(100)[:, None] + (61 - 100) >= np.arange(61)[None, :]
    add("plain-4d-sq45-sk67-dv24", 1, (2, 3, 45, 32), (2, 3, 67, 32), (2, 3, 67, 24))
    add("causal-bottom-right-sq100-sk61", 2, (2, 2, 100, 16), (2, 2, 61, 16), (2, 2, 61, 40), lambda r: sq_gt)
    add("random-mask-dead-rows-sk129", 3, (2, 3, 50, 64), (2, 3, 129, 64), (2, 3, 129, 64),
        lambda r: rand_mask(r, (2, 1, 50, 129), 0.6, dead_rows=(0, 7, 31)))
    add("padding-zero-length-sk83", 4, (2, 2, 47, 32), (2, 2, 83, 32), (2, 2, 83, 20),
        lambda r: pad_mask([77, 0], 83)[:, None, None, :])
    add("causal-top-left-sq40-sk95", 5, (2, 2, 40, 16), (2, 2, 95, 16), (2, 2, 95, 16),
        lambda r: np.tril(np.ones((40, 95), bool)))
    add("per-head-band-sk200", 6, (2, 3, 200, 16), (2, 3, 200, 16), (2, 3, 200, 8),
        lambda r: np.stack([np.abs(np.arange(200)[:, None] - np.arange(200)[None, :]) <= w for w in (4, 16, 33)])[None])
    add("explicit-scale-0.37-d48-dv20", 7, (2, 2, 66, 48), (2, 2, 99, 48), (2, 2, 99, 20), scale=0.37)
    add("large-logits-scale1", 8, (2, 2, 30, 64), (2, 2, 64, 64), (2, 2, 64, 32), scale=1.0, mult=7.5, f64only=True)
    add("decode-sq1-padding-sk130", 9, (2, 4, 1, 32), (2, 4, 130, 32), (2, 4, 130, 32),
        lambda r: pad_mask([130, 55], 130)[:, None, None, :])
    add("3d-inputs-2d-mask", 10, (4, 60, 32), (4, 75, 32), (4, 75, 24), lambda r: rand_mask(r, (60, 75), 0.7))
    add("per-head-random-sk64-d8-dv12", 11, (2, 3, 64, 8), (2, 3, 64, 8), (2, 3, 64, 12),
        lambda r: rand_mask(r, (2, 3, 64, 64), 0.5, dead_rows=(5,)))
    add("scale-0.5-wide-scores", 12, (2, 2, 30, 32), (2, 2, 50, 32), (2, 2, 50, 16), scale=0.5)
    return C


def sdpa_cases():
    C = []

    def add(name, seed, B, hq, hkv, L, S, D, Dv, mask_fn=None, causal=False, scale=None, gqa=False, mult=1.0,
            f64only=False):
        rng = np.random.default_rng(seed)
        q = rn(rng, B, hq, L, D) * mult
        k = rn(rng, B, hkv, S, D) * mult
        v = rn(rng, B, hkv, S, Dv)
        mask = mask_fn(rng) if mask_fn else None
        C.append(dict(name=name, f64only=f64only, args=dict(query=q, key=k, value=v, attn_mask=mask,
                                                            is_causal=causal, scale=scale, enable_gqa=gqa)))

    def additive_dead(r):
        m = np.where(r.random((2, 3, 60, 100)) < 0.7, r.standard_normal((2, 3, 60, 100)), -np.inf)
        m[:, :, 9, :] = -np.inf
        m[1, 2, 40, :] = -np.inf
        return m

    def large_bias(r):
        m = np.zeros((2, 1, 40, 64))
        m[:, :, 5:20, :] = -3e4 + r.standard_normal((2, 1, 15, 64))
        return m

    add("plain-sq64-sk64", 21, 2, 4, 4, 64, 64, 32, 32)
    add("causal-sq40-sk99-dv24", 22, 2, 2, 2, 40, 99, 16, 24, causal=True)
    add("causal-sq77-sk45", 23, 2, 3, 3, 77, 45, 32, 32, causal=True)
    add("bool-mask-dead-rows-sk129", 24, 2, 2, 2, 50, 129, 64, 48,
        lambda r: rand_mask(r, (2, 1, 50, 129), 0.6, dead_rows=(3, 44)))
    add("additive-mask-inf-rows-sk100", 25, 2, 3, 3, 60, 100, 32, 16, additive_dead)
    add("gqa2-padding-sq47-sk83-dv48", 26, 2, 4, 2, 47, 83, 32, 48,
        lambda r: pad_mask([83, 50], 83)[:, None, None, :], gqa=True)
    add("gqa3-causal-sq75", 27, 2, 6, 2, 75, 75, 16, 16, causal=True, gqa=True)
    add("mqa-sk200-scale0.2", 28, 2, 4, 1, 30, 200, 32, 32, scale=0.2, gqa=True)
    add("explicit-scale-0.8-sq61-sk67", 29, 2, 2, 2, 61, 67, 16, 16, scale=0.8)
    add("decode-sq1-bool-padding-sk130", 30, 2, 3, 3, 1, 130, 32, 32,
        lambda r: pad_mask([100, 37], 130)[:, None, None, :])
    add("decode-sq1-additive-padding-gqa4", 31, 2, 8, 2, 1, 120, 32, 24,
        lambda r: np.where(pad_mask([120, 61], 120), 0.0, -np.inf)[:, None, None, :], gqa=True)
    add("large-finite-bias-rows", 32, 2, 2, 2, 40, 64, 32, 32, large_bias, f64only=True)
    add("large-logits-scale1", 33, 2, 2, 2, 30, 64, 64, 32, scale=1.0, mult=7.5, f64only=True)
    add("padding-zero-length-sk83", 34, 2, 2, 2, 47, 83, 32, 20, lambda r: pad_mask([83, 0], 83)[:, None, None, :])
    add("per-head-bool-band-sk200", 35, 2, 3, 3, 64, 200, 16, 8,
        lambda r: np.stack([np.abs(np.arange(64)[:, None] * 3 - np.arange(200)[None, :]) <= w
                            for w in (5, 20, 60)])[None])
    return C


def flash_cases():
    C = []

    def add(name, seed, B, sq, sk, hq, hkv, D, Dv, causal=False, window=(-1, -1), softcap=0.0, alibi=None,
            scale=None, mult=1.0, f64only=False, qk_fn=None):
        rng = np.random.default_rng(seed)
        q = rn(rng, B, sq, hq, D) * mult
        k = rn(rng, B, sk, hkv, D) * mult
        v = rn(rng, B, sk, hkv, Dv)
        if qk_fn is not None:
            q, k = qk_fn(rng, q, k)
        slopes = None
        if alibi == "h":
            slopes = (2.0 ** -(np.arange(hq) + 1.0)).astype(np.float32)
        elif alibi == "bh":
            slopes = (rng.random((B, hq)) * 0.4 + 0.05).astype(np.float32)
        C.append(dict(name=name, f64only=f64only, args=dict(q=q, k=k, v=v, softmax_scale=scale, causal=causal,
                                                            window_size=window, softcap=softcap,
                                                            alibi_slopes=slopes)))

    def very_negative(rng, q, k):
        # rows 0..sq/2 score every key near -7.5e4 (spread of a few units), the other rows are ordinary
        d = q.shape[-1]
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        k = 10.0 * u + 1e-4 * rng.standard_normal(k.shape)
        q = q.copy()
        q[:, : q.shape[1] // 2] = -3e4 * u + 0.1 * rng.standard_normal(q[:, : q.shape[1] // 2].shape)
        return q, k

    add("plain-sq64-sk64-h3", 41, 2, 64, 64, 3, 3, 32, 32)
    add("causal-sq40-sk95-dv24", 42, 2, 40, 95, 2, 2, 16, 24, causal=True)
    add("causal-sq99-sk45", 43, 2, 99, 45, 2, 2, 32, 32, causal=True)
    add("causal-decode-sq1-sk129", 44, 2, 1, 129, 4, 2, 32, 32, causal=True)
    add("window-16-none-sq120", 45, 2, 120, 120, 2, 2, 16, 16, window=(16, -1))
    add("window-0-0-sq67", 46, 2, 67, 67, 2, 2, 16, 16, window=(0, 0))
    add("window-none-5-sq50-sk77", 47, 2, 50, 77, 2, 2, 16, 16, window=(-1, 5))
    add("window-10-3-sq90-sk61", 48, 2, 90, 61, 2, 2, 16, 16, window=(10, 3))
    add("causal-window-20-sq60-sk130", 49, 2, 60, 130, 2, 2, 32, 16, causal=True, window=(20, -1))
    add("causal-window-12-sq100-gqa2", 50, 2, 100, 100, 4, 2, 16, 16, causal=True, window=(12, -1))
    add("window-16-none-sq100-sk45", 51, 2, 100, 45, 2, 2, 16, 16, window=(16, -1))
    add("softcap5-scale0.3-sq50-sk83", 52, 2, 50, 83, 2, 2, 32, 32, softcap=5.0, scale=0.3)
    add("softcap2-causal-alibi-sq47-sk60", 53, 2, 47, 60, 2, 2, 32, 32, causal=True, softcap=2.0, alibi="h")
    add("alibi-h-noncausal-gqa3-sq45", 54, 2, 45, 45, 6, 2, 16, 16, alibi="h")
    add("alibi-bh-causal-sq30-sk77", 55, 2, 30, 77, 3, 3, 16, 24, causal=True, alibi="bh")
    add("alibi-bh-noncausal-sq61-sk40", 56, 2, 61, 40, 2, 1, 16, 16, alibi="bh")
    add("mqa-sq33-sk200-d64-dv32", 57, 2, 33, 200, 4, 1, 64, 32)
    add("large-logits-scale1", 58, 2, 30, 64, 2, 2, 64, 32, scale=1.0, mult=7.5, f64only=True)
    add("very-negative-logits", 59, 2, 20, 70, 2, 2, 16, 16, scale=0.25, f64only=True, qk_fn=very_negative)
    add("explicit-scale-0.11-sq66-sk67", 60, 2, 66, 67, 2, 2, 48, 48, scale=0.11)
    return C


def bwd_cases():
    C = []

    def add(name, seed, qs, ks, vs, mask_fn=None, scale=None, f64only=False):
        rng = np.random.default_rng(seed)
        q, k, v = rn(rng, *qs), rn(rng, *ks), rn(rng, *vs)
        d_out = rn(rng, *(qs[:-1] + (vs[-1],)))
        mask = mask_fn(rng) if mask_fn else None
        C.append(dict(name=name, f64only=f64only, args=dict(q=q, k=k, v=v, d_out=d_out, mask=mask, scale=scale)))

    def band(n, w):
        return np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= w

    add("plain-sq45-sk67-dv24", 61, (2, 3, 45, 32), (2, 3, 67, 32), (2, 3, 67, 24))
    add("per-head-mask-dead-rows-sq64", 62, (2, 3, 64, 16), (2, 3, 64, 16), (2, 3, 64, 16),
        lambda r: rand_mask(r, (2, 3, 64, 64), 0.5, dead_rows=(2, 40)))
    add("causal-bottom-right-sq100-sk40", 63, (2, 2, 100, 16), (2, 2, 40, 16), (2, 2, 40, 8),
        lambda r: np.arange(100)[:, None] - 60 >= np.arange(40)[None, :])
    add("mqa-padding-zero-length-sk83", 64, (2, 4, 50, 16), (2, 1, 83, 16), (2, 1, 83, 40),
        lambda r: pad_mask([83, 0], 83)[:, None, None, :])
    add("scale0.3-top-left-causal-sk129", 65, (2, 2, 30, 64), (2, 2, 129, 64), (2, 2, 129, 64),
        lambda r: np.tril(np.ones((30, 129), bool)), scale=0.3)
    add("3d-inputs-2d-band-mask", 66, (3, 75, 32), (3, 75, 32), (3, 75, 16), lambda r: band(75, 10))
    add("decode-sq1-sk200", 67, (2, 2, 1, 32), (2, 2, 200, 32), (2, 2, 200, 32))
    add("mqa-per-head-window-sq99", 68, (2, 3, 99, 16), (2, 1, 99, 16), (2, 1, 99, 24),
        lambda r: np.stack([band(99, w) for w in (3, 12, 40)])[None])
    return C


# ----------------------------------------------------------------------------------------------------------------
# running kernels
# ----------------------------------------------------------------------------------------------------------------
def relerr(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    d = np.linalg.norm((out - ref).ravel())
    r = np.linalg.norm(ref.ravel())
    if r == 0:
        return 0.0 if d == 0 else math.inf
    return d / r


def cast_args(api, args, dt):
    """float64 masters rounded to dt (bool masks and the float32 ALiBi slopes kept); torch tensors for torch APIs."""
    npd = DTYPES[dt][0]
    out = {}
    for key, val in args.items():
        if isinstance(val, np.ndarray):
            if val.dtype == np.float64:
                val = val.astype(npd)
            if api in ("torch-sdpa", "flash-attn"):
                val = torch.from_numpy(np.ascontiguousarray(val))
        out[key] = val
    return out


def to_np(x):
    return x.detach().cpu().numpy().astype(np.float64) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def reference(api, cargs):
    a = {k: (to_np(v) if isinstance(v, (np.ndarray, torch.Tensor)) and not _is_bool(v) else _as_np_bool(v))
         for k, v in cargs.items()}
    if api == "refimpl":
        return ref_refimpl(a["q"], a["k"], a["v"], a["mask"], a["scale"])
    if api == "torch-sdpa":
        return ref_sdpa(a["query"], a["key"], a["value"], a["attn_mask"], a["is_causal"], a["scale"],
                        a["enable_gqa"])
    if api == "flash-attn":
        return ref_flash(a["q"], a["k"], a["v"], a["softmax_scale"], a["causal"], a["window_size"], a["softcap"],
                         a["alibi_slopes"])
    return ref_bwd(a["q"], a["k"], a["v"], a["d_out"], a["mask"], a["scale"])


def _is_bool(v):
    if isinstance(v, torch.Tensor):
        return v.dtype == torch.bool
    return isinstance(v, np.ndarray) and v.dtype == bool


def _as_np_bool(v):
    if isinstance(v, torch.Tensor):
        return v.numpy()
    return v


def snapshot(cargs):
    snap = {}
    for key, val in cargs.items():
        if isinstance(val, torch.Tensor):
            snap[key] = val.clone()
        elif isinstance(val, np.ndarray):
            snap[key] = val.copy()
    return snap


def unchanged(cargs, snap):
    for key, old in snap.items():
        new = cargs[key]
        if isinstance(old, torch.Tensor):
            if not torch.equal(torch.nan_to_num(old), torch.nan_to_num(new)) or old.dtype != new.dtype:
                return False
        elif not np.array_equal(old, new, equal_nan=True) or old.dtype != new.dtype:
            return False
    return True


def run_case(api, fn, case, dt):
    cargs = cast_args(api, case["args"], dt)
    ref = reference(api, cargs)
    snap = snapshot(cargs)
    npd, thd = DTYPES[dt]
    try:
        with np.errstate(all="ignore"):
            out = fn(**cargs)
    except Exception as exc:  # an exception counts as a difference
        return math.inf, "error %s: %s" % (type(exc).__name__, str(exc)[:60])
    if not unchanged(cargs, snap):
        return math.inf, "input modified"
    if api == "numpy-backward":
        if not isinstance(out, tuple) or len(out) != 3:
            return math.inf, "not a 3-tuple"
        errs = []
        for o, r in zip(out, ref):
            if not isinstance(o, np.ndarray) or o.dtype != npd or o.shape != r.shape:
                return math.inf, "wrong dtype/shape"
            errs.append(relerr(o, r))
        return max(errs), ""
    if api == "refimpl":
        if not isinstance(out, np.ndarray) or out.dtype != npd:
            return math.inf, "wrong type/dtype"
    else:
        if not isinstance(out, torch.Tensor) or out.dtype != thd:
            return math.inf, "wrong type/dtype"
    if tuple(out.shape) != ref.shape:
        return math.inf, "wrong shape"
    return relerr(to_np(out), ref), ""


# ----------------------------------------------------------------------------------------------------------------
# static checks
# ----------------------------------------------------------------------------------------------------------------
def sections(path):
    text = open(path).read()
    parts = re.split(r"^# --- kernel: (\w+) ---$", text, flags=re.M)
    out = {}
    for i in range(1, len(parts), 2):
        body = parts[i + 1].split("\ndef _entry(")[0]
        out[parts[i]] = body
    return out, parts[0]


def check_catalog(mod, modname, api, problems):
    cat = getattr(mod, "CATALOG", None)
    if not isinstance(cat, list) or not cat:
        problems.append("%s: CATALOG missing" % modname)
        return []
    secs, head = sections(os.path.join(HERE, modname + ".py"))
    if "# BUG:" in head:
        problems.append("%s: BUG comment outside kernel sections" % modname)
    for e in cat:
        nm = e.get("name")
        if set(e) != KEYS:
            problems.append("%s: %s keys %s" % (modname, nm, sorted(set(e) ^ KEYS)))
            continue
        if e["api"] != api:
            problems.append("%s: %s api %s" % (modname, nm, e["api"]))
        if not callable(getattr(mod, e["fn"], None)):
            problems.append("%s: %s fn %s missing" % (modname, nm, e["fn"]))
        if e["dtype"] not in ("float64", "float32"):
            problems.append("%s: %s dtype" % (modname, nm))
        if not isinstance(e["features"], list) or not set(e["features"]) <= FEATURES[api]:
            problems.append("%s: %s features" % (modname, nm))
        nbug = secs.get(e["fn"], "").count("# BUG:")
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")):
                problems.append("%s: correct %s has bug fields" % (modname, nm))
            if nbug != 0:
                problems.append("%s: correct %s has a BUG comment" % (modname, nm))
        else:
            if not (isinstance(e["bug"], str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"])):
                problems.append("%s: %s bug not kebab-case" % (modname, nm))
            if not (isinstance(e["parameter"], str) and e["parameter"]):
                problems.append("%s: %s parameter" % (modname, nm))
            m = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", e["source"] or "")
            r = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)/(issues|pull)/(\d+)", e["report"] or "")
            if not m or not r or m.group(1) != r.group(1) or m.group(2) != r.group(3):
                problems.append("%s: %s source/report disagree" % (modname, nm))
            if nbug != 1:
                problems.append("%s: %s has %d BUG comments in its section" % (modname, nm, nbug))
        if e["fn"] not in secs:
            problems.append("%s: %s has no kernel section" % (modname, nm))
    names = [e.get("name") for e in cat]
    if len(set(names)) != len(names):
        problems.append("%s: duplicate names" % modname)
    return cat


def check_references(problems):
    """Cross-check the references: bwd against torch autograd, sdpa/flash against the NumPy one."""
    for case in bwd_cases():
        a = case["args"]
        mine = ref_bwd(a["q"], a["k"], a["v"], a["d_out"], a["mask"], a["scale"])
        auto = autograd_bwd(a["q"], a["k"], a["v"], a["d_out"], a["mask"], a["scale"])
        err = max(relerr(x, y) for x, y in zip(mine, auto))
        if err > 1e-12:
            problems.append("bwd reference vs autograd %s: %.3g" % (case["name"], err))
    rng = np.random.default_rng(7)
    q, k, v = rn(rng, 2, 3, 37, 16), rn(rng, 2, 3, 53, 16), rn(rng, 2, 3, 53, 8)
    tl = np.tril(np.ones((37, 53), bool))
    checks = [
        (ref_sdpa(q, k, v, is_causal=True), ref_refimpl(q, k, v, tl)),
        (ref_sdpa(q, k, v, attn_mask=np.where(tl, 0.0, -np.inf)), ref_refimpl(q, k, v, tl)),
        (ref_sdpa(q, k, v, attn_mask=tl[None, None]), ref_refimpl(q, k, v, tl)),
    ]
    for causal, window in ((True, (-1, -1)), (False, (6, 2)), (True, (9, -1)), (False, (-1, 0))):
        keep = flash_keep(37, 53, causal, window)
        got = ref_flash(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3), None, causal,
                        window).transpose(0, 2, 1, 3)
        checks.append((got, ref_refimpl(q, k, v, keep)))
    bottom_right = np.arange(37)[:, None] + 16 >= np.arange(53)[None, :]
    checks.append((flash_keep(37, 53, True, (-1, -1)).astype(float), bottom_right.astype(float)))
    for i, (x, y) in enumerate(checks):
        if relerr(x, y) > 1e-13:
            problems.append("reference cross-check %d differs" % i)


def fmt(x):
    return "inf" if x == math.inf else "%.3g" % x


def main():
    problems = []
    check_references(problems)
    cases = {"refimpl": refimpl_cases(), "torch-sdpa": sdpa_cases(), "flash-attn": flash_cases(),
             "numpy-backward": bwd_cases()}
    counts = {}
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    for modname, api in MODULES:
        mod = load(modname)
        cat = check_catalog(mod, modname, api, problems)
        print("%s.py (%s)" % (modname, api))
        nb = nc = 0
        for e in cat:
            fn = getattr(mod, e["fn"], None)
            if fn is None:
                continue
            worst = {"float64": 0.0, "float32": 0.0}
            caught = False
            for case in cases[api]:
                for dt in ("float64", "float32"):
                    if dt == "float32" and case["f64only"]:
                        continue
                    err, why = run_case(api, fn, case, dt)
                    worst[dt] = max(worst[dt], err)
                    if e["correct"] and err > TOL_OK[dt]:
                        problems.append("%s %s %s: err %s %s" % (e["name"], case["name"], dt, fmt(err), why))
                    if not e["correct"] and dt == e["dtype"] and err > TOL_DIFF[dt]:
                        caught = True
            if e["correct"]:
                nc += 1
            else:
                nb += 1
                if not caught:
                    problems.append("%s: no case differs in %s" % (e["name"], e["dtype"]))
            print("  %-40s %-7s f64 %-9s f32 %-9s" % (e["name"], "ok" if e["correct"] else "broken",
                                                      fmt(worst["float64"]), fmt(worst["float32"])))
        counts[modname] = (nb, nc)
    tot_b = sum(b for b, _ in counts.values())
    tot_c = sum(c for _, c in counts.values())
    fwd_b = sum(counts[m][0] for m in ("numpy_fwd", "torch_sdpa_fwd", "flash_fwd"))
    if tot_b < 32 or tot_c < 9 or fwd_b < 24 or counts["numpy_bwd"][0] < 8:
        problems.append("counts too small: %s" % counts)
    if any(counts[m][0] < 7 for m in ("numpy_fwd", "torch_sdpa_fwd", "flash_fwd")):
        problems.append("fewer than 7 broken kernels for a forward API: %s" % counts)
    if problems:
        print("SELF-CHECK FAILED (%d problems):" % len(problems))
        for p in problems:
            print("  - " + p)
        return 1
    print("SELF-CHECK PASSED: " + ", ".join("%s %d broken + %d correct" % (m, b, c) for m, (b, c) in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
