"""Self-check of the heldout5 kernels against float64 NumPy references written from the four API contracts.

Run: /usr/bin/python3 tests/heldout5/selfcheck.py   (exit status 0 = every check passed)

Checks: CATALOG entries valid and distinct; exactly one `# BUG:` comment in each broken kernel, none in correct ones;
every kernel keeps dtype and shape and does not modify its inputs; correct kernels match the reference on every case
(rel <= 1e-10 in float64, <= 1e-5 in float32, without RuntimeWarnings); each broken kernel differs on at least one case
in its judged dtype (rel > 1e-8 float64 / > 1e-4 float32, or non-finite). The backward reference is cross-checked
against torch autograd.
"""
import ast
import math
import os
import re
import sys
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

MODULES = [
    (numpy_fwd, "refimpl", 8, 2),
    (torch_sdpa_fwd, "torch-sdpa", 9, 2),
    (flash_fwd, "flash-attn", 10, 3),
    (numpy_bwd, "numpy-backward", 9, 2),
]
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}
TOL_CORRECT = {"float64": 1e-10, "float32": 1e-5}
TOL_BROKEN = {"float64": 1e-8, "float32": 1e-4}

problems = []


def problem(msg):
    problems.append(msg)


# ================================================================================================================
# references (float64, written from the contracts)
# ================================================================================================================
def ref_core(q, k, v, keep, scale, bias=None):
    """q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); keep bool and bias additive broadcastable to the scores."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    s = np.where(keep, s, -np.inf)
    dead = np.all(np.isneginf(s), axis=-1, keepdims=True)
    s = np.where(dead, 0.0, s)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    p = e / e.sum(axis=-1, keepdims=True)
    p = np.where(dead, 0.0, p)
    return np.matmul(p, v)


def ref_refimpl(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    keep = True if mask is None else np.asarray(mask, bool)
    return ref_core(q, k, v, keep, sc)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.detach().double().numpy() for t in (query, key, value))
    hq, hkv = q.shape[1], k.shape[1]
    if hkv != hq:
        assert enable_gqa
        k = np.repeat(k, hq // hkv, axis=1)
        v = np.repeat(v, hq // hkv, axis=1)
    L, S = q.shape[-2], k.shape[-2]
    keep = np.ones((L, S), bool)
    if is_causal:
        keep &= np.arange(S)[None, :] <= np.arange(L)[:, None]
    bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask.numpy()
        else:
            bias = attn_mask.double().numpy()
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return ref_core(q, k, v, keep, sc, bias)


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    qn, kn, vn = (t.detach().double().numpy().transpose(0, 2, 1, 3) for t in (q, k, v))
    B, hq, sq, d = qn.shape
    hkv, sk = kn.shape[1], kn.shape[2]
    head = np.arange(hq) // (hq // hkv)
    kn, vn = kn[:, head], vn[:, head]
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    s = np.matmul(qn, np.swapaxes(kn, -1, -2)) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    off = sk - sq
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy()
        sl = sl.reshape(1, hq, 1, 1) if sl.ndim == 1 else sl.reshape(B, hq, 1, 1)
        s = s - sl * np.abs(i + off - j)
    left, right = window_size
    if causal:
        right = 0
    keep = np.ones((sq, sk), bool)
    if right >= 0:
        keep &= j <= i + off + right
    if left >= 0:
        keep &= j >= i + off - left
    s = np.where(keep, s, -np.inf)
    out = ref_core(np.zeros((1, 1, sq, 1)), np.zeros((1, 1, sk, 1)), vn, True, 1.0, s)
    return out.transpose(0, 2, 1, 3)


def _unbroadcast(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(ax for ax, n in enumerate(shape) if n == 1 and g.shape[ax] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def ref_backward(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(a, np.float64) for a in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], do.shape[:-2],
                               np.shape(mask)[:-2] if mask is not None else ())
    keep = np.broadcast_to(True if mask is None else np.asarray(mask, bool), lead + (q.shape[-2], k.shape[-2]))
    qb, kb, vb, dob = (np.broadcast_to(a, lead + a.shape[-2:]) for a in (q, k, v, do))
    s = np.where(keep, np.matmul(qb, np.swapaxes(kb, -1, -2)) * sc, -np.inf)
    dead = np.all(np.isneginf(s), axis=-1, keepdims=True)
    s = np.where(dead, 0.0, s)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = np.where(dead, 0.0, e / e.sum(axis=-1, keepdims=True))
    o = np.matmul(p, vb)
    dv = np.matmul(np.swapaxes(p, -1, -2), dob)
    dp = np.matmul(dob, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(dob * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), qb) * sc
    return _unbroadcast(dq, q.shape), _unbroadcast(dk, k.shape), _unbroadcast(dv, v.shape)


def torch_backward(q, k, v, d_out, mask=None, scale=None):
    """Autograd cross-check of ref_backward."""
    qt, kt, vt = (torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-1, -2)) * sc
    if mask is not None:
        keep = torch.tensor(np.asarray(mask, bool))
        s = s.masked_fill(~keep, float("-inf"))
    dead = torch.isneginf(s).all(dim=-1, keepdim=True)
    s = torch.where(dead, torch.zeros_like(s), s)
    p = torch.softmax(s, dim=-1) * (~dead)
    o = torch.matmul(p, vt)
    (o * torch.tensor(np.asarray(d_out, np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ================================================================================================================
# cases
# ================================================================================================================
def _bottom_right(sq, sk, left=-1, right=0):
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    keep = np.ones((sq, sk), bool)
    if right >= 0:
        keep &= j <= i + right
    if left >= 0:
        keep &= j >= i - left
    return keep


def _padding(lens, sk):
    return (np.arange(sk)[None, :] < np.asarray(lens)[:, None])[:, None, None, :]


def _rand_mask(rng, shape, p=0.6, dead_rows=2):
    m = rng.random(shape) < p
    flat = m.reshape(-1, shape[-2], shape[-1])
    for b in range(flat.shape[0]):
        flat[b, rng.choice(shape[-2], size=dead_rows, replace=False)] = False
    return m


def refimpl_cases():
    rng = np.random.default_rng(5001)
    n = rng.standard_normal
    c = []

    def add(name, q, k, v, mask=None, scale=None, f32=True):
        c.append((name, dict(q=q, k=k, v=v, mask=mask, scale=scale), f32))

    add("plain-dv-ne-d", n((2, 3, 37, 16)), n((2, 3, 53, 16)), n((2, 3, 53, 24)))
    add("causal-topleft-sq>sk", n((2, 2, 70, 8)), n((2, 2, 45, 8)), n((2, 2, 45, 8)),
        mask=np.tril(np.ones((70, 45), bool)))
    add("causal-bottomright-sq<sk", n((1, 3, 20, 16)), n((1, 3, 150, 16)), n((1, 3, 150, 12)),
        mask=_bottom_right(20, 150))
    add("bottomright-sq>sk-dead-rows", n((2, 2, 60, 16)), n((2, 2, 33, 16)), n((2, 2, 33, 16)),
        mask=_bottom_right(60, 33))
    add("band-window", n((2, 2, 64, 16)), n((2, 2, 200, 16)), n((2, 2, 200, 16)),
        mask=_bottom_right(64, 200, left=5, right=2))
    add("padding-zero-length", n((3, 2, 24, 16)), n((3, 2, 100, 16)), n((3, 2, 100, 32)),
        mask=_padding([100, 17, 0], 100))
    add("per-head-mask", n((2, 3, 31, 8)), n((2, 3, 131, 8)), n((2, 3, 131, 8)),
        mask=_rand_mask(rng, (2, 3, 31, 131)))
    add("explicit-scale", n((2, 2, 29, 16)), n((2, 2, 77, 16)), n((2, 2, 77, 16)), scale=0.37)
    add("decode", n((2, 4, 1, 32)), n((2, 4, 129, 32)), n((2, 4, 129, 16)))
    add("unbatched-3d", n((3, 19, 16)), n((3, 65, 16)), n((3, 65, 16)), mask=np.tril(np.ones((19, 65), bool), 40))
    add("large-logits", 40 * n((2, 2, 40, 16)), 40 * n((2, 2, 160, 16)), n((2, 2, 160, 16)),
        mask=_bottom_right(40, 160, left=100, right=10), f32=False)
    add("large-negative-band", 30 * np.abs(n((1, 2, 48, 16))), -30 * np.abs(n((1, 2, 200, 16))),
        n((1, 2, 200, 16)), mask=_bottom_right(48, 200, left=20, right=0), f32=False)
    return c


def sdpa_cases():
    g = torch.Generator().manual_seed(5002)
    rng = np.random.default_rng(5002)

    def n(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    c = []

    def add(name, q, k, v, f32=True, **kw):
        c.append((name, dict(query=q, key=k, value=v, **kw), f32))

    add("plain-dv-ne-d", n(2, 4, 33, 16), n(2, 4, 47, 16), n(2, 4, 47, 20))
    add("causal-sq<sk", n(2, 2, 40, 16), n(2, 2, 70, 16), n(2, 2, 70, 16), is_causal=True)
    add("causal-sq>sk", n(1, 3, 70, 8), n(1, 3, 40, 8), n(1, 3, 40, 8), is_causal=True)
    add("causal-decode", n(2, 2, 1, 16), n(2, 2, 50, 16), n(2, 2, 50, 16), is_causal=True)
    add("bool-per-head-dead-rows", n(2, 3, 25, 16), n(2, 3, 61, 16), n(2, 3, 61, 16),
        attn_mask=torch.tensor(_rand_mask(rng, (2, 3, 25, 61))))
    add("bool-padding-zero-length", n(3, 2, 20, 16), n(3, 2, 90, 16), n(3, 2, 90, 24),
        attn_mask=torch.tensor(_padding([90, 33, 0], 90)))
    slopes = 2.0 ** (-8.0 * torch.arange(1, 5, dtype=torch.float64) / 4)
    dist = (torch.arange(30).view(-1, 1) - torch.arange(30).view(1, -1)).abs().double()
    alibi = (-slopes.view(1, 4, 1, 1) * dist).clone()
    alibi = alibi.masked_fill(torch.ones(30, 30, dtype=torch.bool).triu(1), float("-inf"))
    add("additive-alibi-causal", n(2, 4, 30, 16), n(2, 4, 30, 16), n(2, 4, 30, 16), attn_mask=alibi)
    fmask = torch.zeros(2, 1, 22, 57, dtype=torch.float64)
    fmask[0, 0, 3] = float("-inf")
    fmask[1, 0, 7:9] = float("-inf")
    fmask[:, :, :, 50:] = float("-inf")
    fmask[:, :, 10] += torch.linspace(-3, 3, 57, dtype=torch.float64)
    add("additive-neg-inf-rows", n(2, 2, 22, 16), n(2, 2, 57, 16), n(2, 2, 57, 16), attn_mask=fmask)
    add("gqa4-per-head-mask", n(2, 8, 21, 16), n(2, 2, 83, 16), n(2, 2, 83, 12), enable_gqa=True,
        attn_mask=torch.tensor(_rand_mask(rng, (2, 8, 21, 83), p=0.7, dead_rows=1)))
    add("gqa2-causal", n(2, 6, 35, 16), n(2, 3, 35, 16), n(2, 3, 35, 16), enable_gqa=True, is_causal=True)
    add("mqa-additive", n(2, 4, 18, 16), n(2, 1, 64, 16), n(2, 1, 64, 16), enable_gqa=True,
        attn_mask=0.5 * n(2, 1, 18, 64))
    add("explicit-scale", n(2, 2, 26, 16), n(2, 2, 39, 16), n(2, 2, 39, 16), scale=0.21)
    add("long-sk200", n(1, 2, 17, 64), n(1, 2, 200, 64), n(1, 2, 200, 32),
        attn_mask=torch.tensor(_bottom_right(17, 200, left=150, right=0)))
    add("large-logits", 40 * n(2, 2, 30, 16), 40 * n(2, 2, 90, 16), n(2, 2, 90, 16), is_causal=True, f32=False)
    return c


def flash_cases():
    g = torch.Generator().manual_seed(5003)

    def n(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    c = []

    def add(name, q, k, v, f32=True, **kw):
        c.append((name, dict(q=q, k=k, v=v, **kw), f32))

    hslopes = 2.0 ** (-8.0 * torch.arange(1, 5, dtype=torch.float32) / 4)
    add("plain-dv-ne-d", n(2, 37, 4, 16), n(2, 53, 4, 16), n(2, 53, 4, 24))
    add("causal-gqa3-sq<sk", n(2, 40, 6, 16), n(2, 100, 2, 16), n(2, 100, 2, 16), causal=True)
    add("causal-mqa-sq>sk", n(1, 90, 4, 16), n(1, 40, 1, 16), n(1, 40, 1, 8), causal=True)
    add("causal-decode-gqa4", n(2, 1, 8, 32), n(2, 77, 2, 32), n(2, 77, 2, 32), causal=True)
    add("window-0-0", n(1, 50, 2, 16), n(1, 50, 2, 16), n(1, 50, 2, 16), window_size=(0, 0))
    add("window-left-only", n(2, 30, 2, 16), n(2, 120, 2, 16), n(2, 120, 2, 16), window_size=(8, -1))
    add("window-right-only", n(1, 60, 2, 16), n(1, 60, 2, 16), n(1, 60, 2, 16), window_size=(-1, 5))
    add("window-16-4-sk200", n(1, 64, 2, 16), n(1, 200, 2, 16), n(1, 200, 2, 16), window_size=(16, 4))
    add("causal-window-10", n(1, 50, 4, 16), n(1, 130, 2, 16), n(1, 130, 2, 16), causal=True,
        window_size=(10, 3))
    add("softcap-causal-gqa2", n(2, 45, 4, 16), n(2, 70, 2, 16), n(2, 70, 2, 16), causal=True, softcap=5.0)
    add("softcap-alibi", n(1, 40, 4, 16), n(1, 55, 4, 16), n(1, 55, 4, 16), softcap=3.0,
        alibi_slopes=hslopes)
    add("alibi-batch-slopes-causal", n(2, 33, 4, 16), n(2, 90, 2, 16), n(2, 90, 2, 16), causal=True,
        alibi_slopes=torch.stack([hslopes, hslopes.flip(0) * 0.5]))
    add("alibi-heads-noncausal", n(2, 40, 4, 16), n(2, 40, 4, 16), n(2, 40, 4, 16), alibi_slopes=hslopes)
    add("explicit-scale-window", n(2, 41, 2, 16), n(2, 67, 2, 16), n(2, 67, 2, 16), softmax_scale=0.13,
        window_size=(20, 20))
    add("large-logits", 40 * n(2, 30, 2, 16), 40 * n(2, 90, 2, 16), n(2, 90, 2, 16), causal=True, f32=False)
    return c


def bwd_cases():
    rng = np.random.default_rng(5004)
    n = rng.standard_normal
    c = []

    def add(name, q, k, v, mask=None, scale=None, f32=True):
        do = n(q.shape[:-1] + (v.shape[-1],)) if q.ndim >= v.ndim else None
        c.append((name, dict(q=q, k=k, v=v, d_out=do, mask=mask, scale=scale), f32))

    add("plain-dv>d", n((2, 3, 29, 12)), n((2, 3, 41, 12)), n((2, 3, 41, 20)))
    add("mqa-bottomright", n((2, 4, 30, 16)), n((2, 1, 70, 16)), n((2, 1, 70, 16)), mask=_bottom_right(30, 70))
    add("padding-zero-length", n((3, 2, 24, 16)), n((3, 2, 100, 16)), n((3, 2, 100, 8)),
        mask=_padding([100, 45, 0], 100))
    add("per-head-dead-rows", n((2, 2, 27, 16)), n((2, 2, 66, 16)), n((2, 2, 66, 16)),
        mask=_rand_mask(rng, (2, 2, 27, 66)))
    add("explicit-scale-dv>d", n((2, 2, 21, 8)), n((2, 2, 45, 8)), n((2, 2, 45, 24)), scale=0.3)
    add("band-sk131", n((1, 2, 64, 16)), n((1, 2, 131, 16)), n((1, 2, 131, 16)),
        mask=_bottom_right(64, 131, left=30, right=3))
    add("decode", n((2, 2, 1, 32)), n((2, 2, 90, 32)), n((2, 2, 90, 32)))
    add("causal-sq>sk", n((1, 2, 80, 16)), n((1, 2, 33, 16)), n((1, 2, 33, 16)), mask=np.tril(np.ones((80, 33), bool)))
    add("mqa-padding-d20", n((2, 3, 25, 20)), n((2, 1, 75, 20)), n((2, 1, 75, 20)), mask=_padding([75, 12], 75))
    add("large-logits", 40 * n((1, 2, 30, 16)), 40 * n((1, 2, 90, 16)), n((1, 2, 90, 16)),
        mask=_bottom_right(30, 90, left=60), f32=False)
    return c


# ================================================================================================================
# running
# ================================================================================================================
def rel_err(out, ref):
    out = np.asarray(out, np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    denom = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-3)
    return float(np.max(np.abs(out - ref))) / denom if ref.size else 0.0


def cast_kwargs(kw, dtype):
    out = {}
    for key, val in kw.items():
        if isinstance(val, np.ndarray) and val.dtype.kind == "f":
            out[key] = val.astype(dtype)
        elif isinstance(val, torch.Tensor) and val.is_floating_point() and key != "alibi_slopes":
            out[key] = val.to(torch.float32 if dtype == "float32" else torch.float64)
        else:
            out[key] = val
    return out


def snapshot(kw):
    return {key: (val.copy() if isinstance(val, np.ndarray) else val.clone() if isinstance(val, torch.Tensor)
                  else val) for key, val in kw.items()}


def same(a, b):
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(
            torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
    return True


def reference(api, kw):
    if api == "refimpl":
        return ref_refimpl(**kw)
    if api == "torch-sdpa":
        return ref_sdpa(**kw)
    if api == "flash-attn":
        return ref_flash(**kw)
    return ref_backward(**kw)


def to_numpy_outputs(api, res, kw, dtype):
    """Return list of float64 arrays; records dtype/shape problems in the returned message list."""
    msgs = []
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    if api == "numpy-backward":
        outs = list(res)
        for arr, ref_in in zip(outs, ("q", "k", "v")):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(dtype) or arr.shape != kw[ref_in].shape:
                msgs.append(f"d{ref_in} dtype/shape {getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
        return [np.asarray(a, np.float64) for a in outs], msgs
    if api == "refimpl":
        if not isinstance(res, np.ndarray) or res.dtype != np.dtype(dtype):
            msgs.append(f"dtype {getattr(res, 'dtype', type(res))}")
        return [np.asarray(res, np.float64)], msgs
    if not isinstance(res, torch.Tensor) or res.dtype != torch_dtype:
        msgs.append(f"dtype {getattr(res, 'dtype', type(res))}")
    return [res.detach().double().numpy() if isinstance(res, torch.Tensor) else np.asarray(res, np.float64)], msgs


def run_kernel(mod, entry, cases):
    fn = getattr(mod, entry["fn"])
    api = entry["api"]
    worst = {"float64": 0.0, "float32": 0.0}
    worst_case = {"float64": "", "float32": ""}
    for case_name, kw64, f32_ok in cases:
        for dtype in ("float64", "float32"):
            if dtype == "float32" and not f32_ok:
                continue
            kw = cast_kwargs(kw64, dtype)
            before = snapshot(kw)
            ref_kw = {key: val for key, val in kw.items()}
            if api == "refimpl" or api == "numpy-backward":
                refs = reference(api, ref_kw)
            else:
                refs = reference(api, ref_kw)
            refs = list(refs) if api == "numpy-backward" else [refs]
            try:
                with warnings.catch_warnings():
                    if entry["correct"]:
                        warnings.simplefilter("error")
                        res = fn(**kw)
                    else:
                        warnings.simplefilter("ignore")
                        with np.errstate(all="ignore"):
                            res = fn(**kw)
            except Exception as exc:  # noqa: BLE001
                problem(f"{entry['name']}: {case_name} [{dtype}] raised {type(exc).__name__}: {exc}")
                continue
            for key in kw:
                if not same(kw[key], before[key]):
                    problem(f"{entry['name']}: {case_name} [{dtype}] modified input {key}")
            outs, msgs = to_numpy_outputs(api, res, kw, dtype)
            for m in msgs:
                problem(f"{entry['name']}: {case_name} [{dtype}] {m}")
            err = max(rel_err(o, r) for o, r in zip(outs, refs))
            if outs[0].shape != refs[0].shape:
                problem(f"{entry['name']}: {case_name} [{dtype}] shape {outs[0].shape} != {refs[0].shape}")
            if entry["correct"] and not err <= TOL_CORRECT[dtype]:
                problem(f"{entry['name']}: correct kernel off on {case_name} [{dtype}]: rel {err:.3g}")
            if err > worst[dtype]:
                worst[dtype], worst_case[dtype] = err, case_name
    return worst, worst_case


def check_catalog(all_sources):
    names = set()
    for mod, api, n_broken, n_correct in MODULES:
        cat = getattr(mod, "CATALOG", None)
        if not isinstance(cat, list):
            problem(f"{mod.__name__}: CATALOG missing")
            continue
        broken = [e for e in cat if not e.get("correct")]
        correct = [e for e in cat if e.get("correct")]
        if len(broken) != n_broken or len(correct) != n_correct:
            problem(f"{mod.__name__}: {len(broken)} broken / {len(correct)} correct, want {n_broken} / {n_correct}")
        src_text = open(mod.__file__).read()
        tree = ast.parse(src_text)
        funcs = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        total_bug_comments = src_text.count("# BUG:")
        if total_bug_comments != len(broken):
            problem(f"{mod.__name__}: {total_bug_comments} '# BUG:' comments for {len(broken)} broken kernels")
        for e in cat:
            if set(e) != KEYS:
                problem(f"{mod.__name__}: entry keys {sorted(e)}")
                continue
            if e["name"] in names:
                problem(f"duplicate name {e['name']}")
            names.add(e["name"])
            if e["api"] != api:
                problem(f"{e['name']}: api {e['api']} != {api}")
            if not callable(getattr(mod, e["fn"], None)) or e["fn"] not in funcs:
                problem(f"{e['name']}: fn {e['fn']} missing")
                continue
            if e["dtype"] not in ("float64", "float32"):
                problem(f"{e['name']}: dtype {e['dtype']}")
            if not isinstance(e["features"], list) or not set(e["features"]) <= FEATURES:
                problem(f"{e['name']}: features {e['features']}")
            seg = ast.get_source_segment(src_text, funcs[e["fn"]])
            n_bug = seg.count("# BUG:")
            if not isinstance(e["correct"], bool):
                problem(f"{e['name']}: correct must be bool")
            if e["correct"]:
                if any(e[key] is not None for key in ("bug", "parameter", "source", "report")):
                    problem(f"{e['name']}: correct kernel with bug fields")
                if n_bug:
                    problem(f"{e['name']}: correct kernel has a '# BUG:' comment")
            else:
                if n_bug != 1:
                    problem(f"{e['name']}: {n_bug} '# BUG:' comments, want 1")
                if not (isinstance(e["bug"], str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"])):
                    problem(f"{e['name']}: bug {e['bug']!r} not kebab-case")
                if not (isinstance(e["parameter"], str) and e["parameter"]):
                    problem(f"{e['name']}: parameter missing")
                m = re.fullmatch(r"([\w.-]+)/([\w.-]+)#(\d+)", e["source"] or "")
                if not m:
                    problem(f"{e['name']}: source {e['source']!r}")
                else:
                    url = re.fullmatch(rf"https://github\.com/{re.escape(m.group(1))}/{re.escape(m.group(2))}"
                                       rf"/(issues|pull)/{m.group(3)}", e["report"] or "")
                    if not url:
                        problem(f"{e['name']}: report {e['report']!r} does not match source")
                if e["source"] in all_sources:
                    problem(f"{e['name']}: source {e['source']} reused")
                all_sources.add(e["source"])


def check_backward_reference():
    worst = 0.0
    for case_name, kw, _ in bwd_cases():
        ours = ref_backward(**kw)
        theirs = torch_backward(**kw)
        for a, b in zip(ours, theirs):
            worst = max(worst, rel_err(a, b))
    if not worst <= 1e-12:
        problem(f"backward reference disagrees with torch autograd: rel {worst:.3g}")
    return worst


def main():
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    check_catalog(set())
    autograd_err = check_backward_reference()
    print(f"backward reference vs torch autograd: max rel {autograd_err:.2e}")
    case_sets = {"refimpl": refimpl_cases(), "torch-sdpa": sdpa_cases(), "flash-attn": flash_cases(),
                 "numpy-backward": bwd_cases()}
    for mod, api, _, _ in MODULES:
        cases = case_sets[api]
        print(f"\n{mod.__name__}.py  (API {api}, {len(cases)} cases)")
        for e in mod.CATALOG:
            worst, where = run_kernel(mod, e, cases)
            if e["correct"]:
                status = "ok" if worst["float64"] <= TOL_CORRECT["float64"] and \
                    worst["float32"] <= TOL_CORRECT["float32"] else "FAIL"
            else:
                judged = e["dtype"]
                caught = worst[judged] > TOL_BROKEN[judged]
                status = "caught" if caught else "MISSED"
                if not caught:
                    problem(f"{e['name']}: broken kernel matches the reference on every {judged} case")
            print(f"  {status:7s} {e['name']:32s} f64 max rel {worst['float64']:9.2e} ({where['float64'] or '-'})"
                  f"  f32 max rel {worst['float32']:9.2e}")
    print()
    if problems:
        print(f"{len(problems)} problem(s):")
        for p in problems:
            print("  - " + p)
        return 1
    n = sum(len(m.CATALOG) for m, *_ in MODULES)
    print(f"selfcheck passed: {n} kernels, 0 problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
