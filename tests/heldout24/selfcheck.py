"""Self-check of held-out set 24: references written from the contracts, fixed seeded cases, TRIGGERS.

Run: /work/main/.venv/bin/python tests/heldout24/selfcheck.py   (exit 0 = all checks pass, 1 = a problem)
"""
import sys

sys.dont_write_bytecode = True

import importlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODULES = [("numpy_fwd", "refimpl"), ("torch_sdpa_fwd", "torch-sdpa"), ("flash_fwd", "flash-attn"),
           ("numpy_bwd", "numpy-backward")]
FEATURES = {"refimpl": {"mask", "dv-ne-d"}, "numpy-backward": {"mask", "dv-ne-d"},
            "torch-sdpa": {"mask", "causal", "gqa", "dv-ne-d"},
            "flash-attn": {"causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}}
OK_F64, OK_F32 = 1e-10, 1e-5
DIFF = {"float64": 1e-8, "float32": 1e-4}

# ----------------------------------------------------------------------------------------------------------
# references (float64, NumPy), written from the contracts in README.md
# ----------------------------------------------------------------------------------------------------------


def ref_core(q, k, v, keep=None, bias=None, scale=None, softcap=0.0):
    """softmax(cap(q k^T * scale) + bias) v over the kept keys; a row with no kept key is zeros."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    dead = ~np.isfinite(m)
    e = np.exp(s - np.where(dead, 0.0, m))
    z = np.sum(e, axis=-1, keepdims=True)
    w = np.where(dead, 0.0, e / np.where(z == 0, 1.0, z))
    return np.matmul(w, v)


def ref_numpy(q, k, v, mask=None, scale=None):
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    return ref_core(q, k, v, keep=keep, scale=scale)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (query, key, value))
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        g = q.shape[-3] // k.shape[-3]
        k, v = np.repeat(k, g, axis=-3), np.repeat(v, g, axis=-3)
    sq, sk = q.shape[-2], k.shape[-2]
    keep, bias = None, None
    if is_causal:
        keep = np.arange(sk)[None, :] <= np.arange(sq)[:, None]
    if attn_mask is not None:
        am = np.asarray(attn_mask)
        if am.dtype == bool:
            keep = am if keep is None else keep & am
        else:
            am = am.astype(np.float64)
            bias = np.where(np.isfinite(am), am, 0.0)
            fin = np.isfinite(am)
            keep = fin if keep is None else keep & fin
    return ref_core(q, k, v, keep=keep, bias=bias, scale=scale)


def flash_keep(sq, sk, causal, window):
    left, right = window
    if causal:
        right = 0
    ii = np.arange(sq)[:, None] + (sk - sq)
    jj = np.arange(sk)[None, :]
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= jj >= ii - left
    if right >= 0:
        keep &= jj <= ii + right
    return keep


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    b, sq, hq, _ = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    qh = q.transpose(0, 2, 1, 3)
    kh = np.repeat(k.transpose(0, 2, 1, 3), hq // hkv, axis=1)
    vh = np.repeat(v.transpose(0, 2, 1, 3), hq // hkv, axis=1)
    bias = None
    if alibi_slopes is not None:
        sl = np.asarray(alibi_slopes, dtype=np.float64)
        sl = sl.reshape(1, hq, 1, 1) if sl.ndim == 1 else sl.reshape(b, hq, 1, 1)
        dist = np.abs(np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :])
        bias = -sl * dist
    out = ref_core(qh, kh, vh, keep=flash_keep(sq, sk, causal, tuple(window_size)), bias=bias,
                   scale=softmax_scale, softcap=softcap)
    return out.transpose(0, 2, 1, 3)


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    """Analytic gradients of loss = sum(d_out * O) for the contract-1 forward."""
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    s = np.matmul(qb, np.swapaxes(kb, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(np.asarray(mask, dtype=bool), s.shape), s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    dead = ~np.isfinite(m)
    e = np.exp(s - np.where(dead, 0.0, m))
    z = np.sum(e, axis=-1, keepdims=True)
    p = np.where(dead, 0.0, e / np.where(z == 0, 1.0, z))
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), qb) * scale

    def reduce_to(x, shape):
        if x.ndim > len(shape):
            x = x.sum(axis=tuple(range(x.ndim - len(shape))))
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
        return x.sum(axis=axes, keepdims=True) if axes else x
    return dq, reduce_to(dk, k.shape), reduce_to(dv, v.shape)


def torch_autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    """Cross-check of ref_bwd: torch autograd through a masked softmax (dead rows kept at zero)."""
    qt, kt, vt = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-1, -2)) * scale
    if mask is not None:
        keep = torch.tensor(np.broadcast_to(np.asarray(mask, dtype=bool), tuple(s.shape)).copy())
        alive = keep.any(dim=-1, keepdim=True)
        s = torch.where(keep, s, torch.tensor(float("-inf"), dtype=s.dtype))
        s = torch.where(alive, s, torch.zeros_like(s))
        p = torch.softmax(s, dim=-1) * alive
    else:
        p = torch.softmax(s, dim=-1)
    o = torch.matmul(p, vt)
    (o * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------------
# cases (float64 NumPy inputs; every case runs in float64 and float32)
# ----------------------------------------------------------------------------------------------------------


def _rng(seed):
    return np.random.default_rng(seed)


def _n(rng, *shape):
    return rng.standard_normal(shape)


def np_cases():
    c = {}
    r = _rng(1)
    c["2d-plain"] = dict(q=_n(r, 20, 16), k=_n(r, 33, 16), v=_n(r, 33, 12))
    r = _rng(2)
    c["3d-scale037"] = dict(q=_n(r, 2, 17, 24), k=_n(r, 2, 40, 24), v=_n(r, 2, 40, 20), scale=0.37)
    r = _rng(3)
    m = r.random((2, 3, 31, 64)) > 0.4
    m[0, 1, 5, :] = False
    m[1, 2, 30, :] = False
    c["4d-randmask-emptyrow"] = dict(q=_n(r, 2, 3, 31, 32), k=_n(r, 2, 3, 64, 32), v=_n(r, 2, 3, 64, 40), mask=m)
    r = _rng(4)
    m = np.ones((2, 1, 1, 70), dtype=bool)
    m[1, ..., 50:] = False
    c["4d-rightpad"] = dict(q=_n(r, 2, 2, 48, 16), k=_n(r, 2, 2, 70, 16), v=_n(r, 2, 2, 70, 8), mask=m)
    r = _rng(5)
    m = np.ones((3, 1, 1, 96), dtype=bool)
    m[0, ..., :10] = False
    m[2] = False
    c["4d-leftpad-zero-len-decode"] = dict(q=_n(r, 3, 2, 1, 64), k=_n(r, 3, 2, 96, 64), v=_n(r, 3, 2, 96, 64),
                                           mask=m)
    r = _rng(6)
    c["2d-causal-mask-on-4d"] = dict(q=_n(r, 1, 2, 65, 40), k=_n(r, 1, 2, 65, 40), v=_n(r, 1, 2, 65, 40),
                                     mask=np.tril(np.ones((65, 65), dtype=bool)))
    r = _rng(7)
    ii, jj = np.arange(40)[:, None], np.arange(40)[None, :]
    band = np.stack([np.abs(ii - jj) <= w for w in (2, 5, 9)])
    c["3d-perhead-band-on-4d"] = dict(q=_n(r, 2, 3, 40, 16), k=_n(r, 2, 3, 40, 16), v=_n(r, 2, 3, 40, 24),
                                      mask=band)
    r = _rng(8)
    m = r.random((2, 4, 25, 29)) > 0.3
    m[..., 0] = True
    c["scale1-fullmask"] = dict(q=_n(r, 2, 4, 25, 8), k=_n(r, 2, 4, 29, 8), v=_n(r, 2, 4, 29, 8), mask=m, scale=1.0)
    r = _rng(9)
    m = np.broadcast_to(np.arange(20)[None, :] <= np.arange(100)[:, None] - 80, (3, 100, 20)).copy()
    c["sq100-gt-sk20-top-rows-empty"] = dict(q=_n(r, 3, 100, 24), k=_n(r, 3, 20, 24), v=_n(r, 3, 20, 24), mask=m)
    r = _rng(10)
    c["sk129-dv48-scale05"] = dict(q=_n(r, 1, 2, 37, 32), k=_n(r, 1, 2, 129, 32), v=_n(r, 1, 2, 129, 48),
                                   scale=0.5)
    r = _rng(11)
    c["one-key"] = dict(q=_n(r, 2, 5, 16), k=_n(r, 2, 1, 16), v=_n(r, 2, 1, 12))
    r = _rng(12)
    m = r.random(30) > 0.35
    c["1d-keymask-on-3d"] = dict(q=_n(r, 6, 20, 16), k=_n(r, 6, 30, 16), v=_n(r, 6, 30, 16), mask=m)
    return c


def sdpa_cases():
    c = {}
    r = _rng(21)
    c["plain"] = dict(query=_n(r, 2, 3, 33, 16), key=_n(r, 2, 3, 33, 16), value=_n(r, 2, 3, 33, 16))
    r = _rng(22)
    c["causal-square"] = dict(query=_n(r, 1, 4, 40, 32), key=_n(r, 1, 4, 40, 32), value=_n(r, 1, 4, 40, 32),
                              is_causal=True)
    r = _rng(23)
    c["causal-sq20-lt-sk64"] = dict(query=_n(r, 2, 2, 20, 16), key=_n(r, 2, 2, 64, 16), value=_n(r, 2, 2, 64, 16),
                                    is_causal=True)
    r = _rng(24)
    c["causal-sq70-gt-sk30"] = dict(query=_n(r, 1, 2, 70, 24), key=_n(r, 1, 2, 30, 24),
                                    value=_n(r, 1, 2, 30, 24), is_causal=True)
    r = _rng(25)
    m = r.random((2, 1, 31, 47)) > 0.4
    m[1, 0, 3, :] = False
    c["boolmask-emptyrow-dv20"] = dict(query=_n(r, 2, 3, 31, 24), key=_n(r, 2, 3, 47, 24),
                                       value=_n(r, 2, 3, 47, 20), attn_mask=m)
    r = _rng(26)
    c["additive-finite"] = dict(query=_n(r, 2, 3, 25, 16), key=_n(r, 2, 3, 36, 16), value=_n(r, 2, 3, 36, 16),
                                attn_mask=2.0 * _n(r, 2, 3, 25, 36))
    r = _rng(27)
    am = np.where(r.random((1, 2, 20, 20)) > 0.3, 0.5 * _n(r, 1, 2, 20, 20), -np.inf)
    am[..., 0] = 0.0
    am[0, 1, 7, :] = -np.inf
    c["additive-neginf-row"] = dict(query=_n(r, 1, 2, 20, 16), key=_n(r, 1, 2, 20, 16), value=_n(r, 1, 2, 20, 16),
                                    attn_mask=am)
    r = _rng(28)
    c["gqa6to1-causal"] = dict(query=_n(r, 1, 6, 25, 16), key=_n(r, 1, 1, 25, 16), value=_n(r, 1, 1, 25, 16),
                               is_causal=True, enable_gqa=True)
    r = _rng(29)
    c["gqa4to1-scale03"] = dict(query=_n(r, 2, 8, 17, 32), key=_n(r, 2, 2, 96, 32), value=_n(r, 2, 2, 96, 32),
                                scale=0.3, enable_gqa=True)
    r = _rng(30)
    m = np.ones((2, 1, 1, 129), dtype=bool)
    m[1, ..., 100:] = False
    c["mqa-decode-padmask"] = dict(query=_n(r, 2, 4, 1, 64), key=_n(r, 2, 1, 129, 64), value=_n(r, 2, 1, 129, 64),
                                   attn_mask=m, enable_gqa=True)
    r = _rng(31)
    c["one-key"] = dict(query=_n(r, 1, 2, 9, 8), key=_n(r, 1, 2, 1, 8), value=_n(r, 1, 2, 1, 8))
    r = _rng(32)
    c["dv48-ne-d32-scale05"] = dict(query=_n(r, 1, 2, 64, 32), key=_n(r, 1, 2, 100, 32),
                                    value=_n(r, 1, 2, 100, 48), scale=0.5)
    r = _rng(33)
    c["boolmask-all-true"] = dict(query=_n(r, 1, 2, 12, 16), key=_n(r, 1, 2, 18, 16), value=_n(r, 1, 2, 18, 16),
                                  attn_mask=np.ones((12, 18), dtype=bool))
    return c


def flash_cases():
    c = {}

    def add(name, seed, b, sq, sk, hq, hkv, d, dv=None, **kw):
        r = _rng(seed)
        c[name] = dict(q=_n(r, b, sq, hq, d), k=_n(r, b, sk, hkv, d), v=_n(r, b, sk, hkv, dv or d), **kw)
        return r
    add("plain-sk40", 41, 2, 40, 40, 2, 2, 16)
    add("causal-sq20-lt-sk70-mqa", 42, 1, 20, 70, 4, 1, 32, causal=True)
    add("causal-sq90-gt-sk33", 43, 2, 90, 33, 2, 2, 16, causal=True)
    add("causal-square64-gqa4to2", 44, 1, 64, 64, 4, 2, 24, causal=True)
    add("window16-1", 45, 1, 50, 50, 2, 2, 16, window_size=(16, -1))
    add("window-1-5-sq40-sk60", 46, 2, 40, 60, 2, 2, 16, window_size=(-1, 5))
    add("window10-3-sq80-gt-sk45", 47, 1, 80, 45, 3, 3, 16, window_size=(10, 3))
    add("window0-4", 48, 1, 30, 30, 2, 2, 16, window_size=(0, 4))
    r = add("window8-8-alibi-h", 49, 2, 48, 48, 4, 4, 16, window_size=(8, 8))
    c["window8-8-alibi-h"]["alibi_slopes"] = (0.05 + r.random(4)).astype(np.float32)
    add("causal-window20-sq30-lt-sk100", 50, 1, 30, 100, 2, 2, 16, causal=True, window_size=(20, -1))
    add("causal-window6-sq50-gt-sk20", 51, 1, 50, 20, 2, 2, 16, causal=True, window_size=(6, -1))
    add("softcap5-scale03-sk77", 52, 2, 37, 77, 2, 2, 32, softcap=5.0, softmax_scale=0.3)
    r = add("softcap3-causal-alibi-bh-sk65", 53, 2, 65, 65, 3, 3, 16, softcap=3.0, causal=True)
    c["softcap3-causal-alibi-bh-sk65"]["alibi_slopes"] = (0.05 + r.random((2, 3))).astype(np.float32)
    r = add("alibi-gqa6to2-sk129", 54, 1, 33, 129, 6, 2, 16)
    c["alibi-gqa6to2-sk129"]["alibi_slopes"] = (0.02 + 0.3 * r.random(6)).astype(np.float32)
    add("mqa-decode-causal-sk128", 55, 2, 1, 128, 4, 1, 64, causal=True)
    add("one-key-causal-sq5", 56, 1, 5, 1, 2, 2, 8, causal=True)
    add("softcap2-sk128-dv32", 57, 1, 24, 128, 2, 2, 64, dv=32, softcap=2.0)
    add("decode12to2-sk96", 58, 1, 1, 96, 12, 2, 16)
    return c


def bwd_cases():
    c = {}

    def add(name, seed, qs, ks, vs, **kw):
        r = _rng(seed)
        c[name] = dict(q=_n(r, *qs), k=_n(r, *ks), v=_n(r, *vs), **kw)
        c[name]["d_out"] = _n(r, *(tuple(np.broadcast_shapes(qs[:-2], ks[:-2])) + (qs[-2], vs[-1])))
        return r
    add("3d-plain", 61, (2, 30, 16), (2, 45, 16), (2, 45, 12))
    r = add("4d-randmask-emptyrow", 62, (2, 2, 33, 24), (2, 2, 60, 24), (2, 2, 60, 24))
    m = r.random((2, 2, 33, 60)) > 0.4
    m[1, 0, 10, :] = False
    c["4d-randmask-emptyrow"]["mask"] = m
    m = np.ones((2, 1, 1, 50), dtype=bool)
    m[1, ..., 35:] = False
    add("kv-head-bcast-padmask", 63, (2, 4, 20, 32), (2, 1, 50, 32), (2, 1, 50, 20), mask=m)
    add("square64-2d-causal", 64, (1, 2, 64, 16), (1, 2, 64, 16), (1, 2, 64, 16),
        mask=np.tril(np.ones((64, 64), dtype=bool)))
    m = np.ones((2, 1, 1, 100), dtype=bool)
    m[0, ..., :20] = False
    add("decode-leftpad", 65, (2, 3, 1, 40), (2, 3, 100, 40), (2, 3, 100, 40), mask=m)
    add("sk129-scale03", 66, (1, 1, 40, 40), (1, 1, 129, 40), (1, 1, 129, 24), scale=0.3)
    r = _rng(67)
    m = r.random((2, 20, 20)) > 0.3
    m[..., 3] = True
    add("small-scale1-fullmask", 68, (2, 20, 8), (2, 20, 8), (2, 20, 8), scale=1.0, mask=m)
    add("one-key", 69, (2, 3, 16), (2, 1, 16), (2, 1, 8))
    r = _rng(70)
    add("mqa-1d-keymask", 71, (1, 3, 12, 16), (1, 1, 40, 16), (1, 1, 40, 16), mask=r.random(40) > 0.35)
    return c


# ----------------------------------------------------------------------------------------------------------
# TRIGGERS: per broken kernel, the cases on which it differs (its documented trigger)
# ----------------------------------------------------------------------------------------------------------
TRIGGERS = {
    "np-ethen-unscaled-scores": [
        "1d-keymask-on-3d", "2d-causal-mask-on-4d", "2d-plain", "3d-perhead-band-on-4d", "3d-scale037",
        "4d-leftpad-zero-len-decode", "4d-randmask-emptyrow", "4d-rightpad", "sk129-dv48-scale05",
        "sq100-gt-sk20-top-rows-empty",
    ],
    "np-burn-mask-shape-assert": [
        "1d-keymask-on-3d", "2d-causal-mask-on-4d", "3d-perhead-band-on-4d", "4d-leftpad-zero-len-decode",
        "4d-rightpad",
    ],
    "np-aug-conv-out-reshape": [
        "1d-keymask-on-3d", "2d-causal-mask-on-4d", "2d-plain", "3d-perhead-band-on-4d", "3d-scale037",
        "4d-randmask-emptyrow", "4d-rightpad", "one-key", "scale1-fullmask", "sk129-dv48-scale05",
        "sq100-gt-sk20-top-rows-empty",
    ],
    "np-te-finite-mask-fill": [
        "4d-leftpad-zero-len-decode", "4d-randmask-emptyrow", "sq100-gt-sk20-top-rows-empty",
    ],
    "np-sdcpp-mask-transposed": [
        "1d-keymask-on-3d", "2d-causal-mask-on-4d", "4d-leftpad-zero-len-decode", "4d-randmask-emptyrow",
        "4d-rightpad", "scale1-fullmask", "sq100-gt-sk20-top-rows-empty",
    ],
    "np-keras-mask-expand-axis": ["1d-keymask-on-3d", "2d-causal-mask-on-4d", "3d-perhead-band-on-4d"],
    "sdpa-nntrainer-causal-square-only": ["causal-sq20-lt-sk64", "causal-sq70-gt-sk30"],
    "sdpa-doc-not-attn-mask": ["boolmask-all-true", "boolmask-emptyrow-dv20", "mqa-decode-padmask"],
    "sdpa-openvino-masked-row-nan": ["additive-neginf-row", "boolmask-emptyrow-dv20"],
    "sdpa-mindone-discard-convention": ["boolmask-all-true", "boolmask-emptyrow-dv20", "mqa-decode-padmask"],
    "sdpa-xformers-causal-pattern-size": [
        "causal-sq20-lt-sk64", "causal-sq70-gt-sk30", "causal-square", "gqa6to1-causal",
    ],
    "sdpa-keras-causal-not-forwarded": [
        "causal-sq20-lt-sk64", "causal-sq70-gt-sk30", "causal-square", "gqa6to1-causal",
    ],
    "flash-jax-window-early-return": [
        "window-1-5-sq40-sk60", "window0-4", "window10-3-sq80-gt-sk45", "window16-1", "window8-8-alibi-h",
    ],
    "flash-entrenar-causal-missing": [
        "causal-sq20-lt-sk70-mqa", "causal-sq90-gt-sk33", "causal-square64-gqa4to2",
        "causal-window20-sq30-lt-sk100", "causal-window6-sq50-gt-sk20", "one-key-causal-sq5",
        "softcap3-causal-alibi-bh-sk65",
    ],
    "flash-hyprstream-tril-zero": [
        "causal-sq20-lt-sk70-mqa", "causal-sq90-gt-sk33", "causal-window20-sq30-lt-sk100",
        "causal-window6-sq50-gt-sk20", "mqa-decode-causal-sk128", "one-key-causal-sq5",
    ],
    "flash-llamacpp-softcap-padded-tile": ["softcap5-scale03-sk77"],
    "flash-maxtext-local-window-inclusive": [
        "causal-window20-sq30-lt-sk100", "causal-window6-sq50-gt-sk20", "window0-4", "window10-3-sq80-gt-sk45",
        "window16-1", "window8-8-alibi-h",
    ],
    "flash-ttmetal-tile-padding-softmax": [
        "alibi-gqa6to2-sk129", "plain-sk40", "softcap5-scale03-sk77", "window-1-5-sq40-sk60", "window0-4",
        "window10-3-sq80-gt-sk45", "window16-1", "window8-8-alibi-h",
    ],
    "bwd-fa-kv-buffer-from-q": [
        "3d-plain", "4d-randmask-emptyrow", "decode-leftpad", "kv-head-bcast-padmask", "mqa-1d-keymask",
        "sk129-scale03",
    ],
    "bwd-natten-dq-branch-overwrite": [
        "3d-plain", "4d-randmask-emptyrow", "decode-leftpad", "kv-head-bcast-padmask", "mqa-1d-keymask",
        "sk129-scale03", "square64-2d-causal",
    ],
    "bwd-tinytorch-softmax-sum-sign": [
        "3d-plain", "4d-randmask-emptyrow", "decode-leftpad", "kv-head-bcast-padmask", "mqa-1d-keymask",
        "one-key", "sk129-scale03", "small-scale1-fullmask", "square64-2d-causal",
    ],
    "bwd-pytorch-advanced-normalize-over-i": [
        "3d-plain", "4d-randmask-emptyrow", "decode-leftpad", "kv-head-bcast-padmask", "mqa-1d-keymask",
        "one-key", "sk129-scale03", "small-scale1-fullmask", "square64-2d-causal",
    ],
    "bwd-jax-mask-bias-not-broadcast": ["kv-head-bcast-padmask", "mqa-1d-keymask"],
    "bwd-mojo-extra-grad-slots": [
        "3d-plain", "4d-randmask-emptyrow", "decode-leftpad", "kv-head-bcast-padmask", "mqa-1d-keymask",
        "one-key", "sk129-scale03", "small-scale1-fullmask", "square64-2d-causal",
    ],
}

# ----------------------------------------------------------------------------------------------------------
# calling kernels and judging
# ----------------------------------------------------------------------------------------------------------


def _cast(x, dtype):
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        return x.astype(dtype)
    return x


def prepare(api, case, dtype):
    """Inputs in the given dtype (alibi slopes stay float32), and the float64 reference on those values."""
    d = {k: _cast(val, dtype) for k, val in case.items()}
    if api == "refimpl":
        ref = ref_numpy(d["q"], d["k"], d["v"], d.get("mask"), d.get("scale"))
    elif api == "numpy-backward":
        ref = ref_bwd(d["q"], d["k"], d["v"], d["d_out"], d.get("mask"), d.get("scale"))
    elif api == "torch-sdpa":
        ref = ref_sdpa(d["query"], d["key"], d["value"], d.get("attn_mask"), d.get("is_causal", False),
                       d.get("scale"), d.get("enable_gqa", False))
    else:
        ref = ref_flash(d["q"], d["k"], d["v"], d.get("softmax_scale"), d.get("causal", False),
                        d.get("window_size", (-1, -1)), d.get("softcap", 0.0), d.get("alibi_slopes"))
    return d, ref


def call(api, fn, d):
    """Calls fn on fresh copies; returns (outputs as a list of arrays or an error string, inputs-unchanged)."""
    if api in ("refimpl", "numpy-backward"):
        args = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}
        before = {k: v.copy() for k, v in args.items() if isinstance(v, np.ndarray)}
        names = ["q", "k", "v"] + (["d_out"] if api == "numpy-backward" else [])
        try:
            res = fn(*[args[n] for n in names], mask=args.get("mask"), scale=args.get("scale"))
        except Exception as exc:  # a crash is a differing result
            return "%s: %s" % (type(exc).__name__, exc), True
        same = all(np.array_equal(before[k], args[k], equal_nan=True) for k in before)
        outs = list(res) if isinstance(res, tuple) else [res]
        return outs, same
    targs = {}
    for k, v in d.items():
        targs[k] = torch.tensor(v) if isinstance(v, np.ndarray) else v
    before = {k: v.clone() for k, v in targs.items() if isinstance(v, torch.Tensor)}
    try:
        if api == "torch-sdpa":
            res = fn(targs["query"], targs["key"], targs["value"], attn_mask=targs.get("attn_mask"),
                     dropout_p=0.0, is_causal=targs.get("is_causal", False), scale=targs.get("scale"),
                     enable_gqa=targs.get("enable_gqa", False))
        else:
            res = fn(targs["q"], targs["k"], targs["v"], dropout_p=0.0, softmax_scale=targs.get("softmax_scale"),
                     causal=targs.get("causal", False), window_size=targs.get("window_size", (-1, -1)),
                     softcap=targs.get("softcap", 0.0), alibi_slopes=targs.get("alibi_slopes"))
    except Exception as exc:
        return "%s: %s" % (type(exc).__name__, exc), True
    same = all(torch.equal(before[k], targs[k]) or bool(torch.isnan(before[k]).any()) for k in before)
    if not isinstance(res, torch.Tensor):
        return "not a tensor: %r" % type(res), same
    return [res], same


def rel_error(outs, ref, dtype):
    """Largest relative Frobenius error over the outputs; inf for an error, wrong shape/dtype or non-finite."""
    if isinstance(outs, str):
        return float("inf"), outs
    refs = list(ref) if isinstance(ref, tuple) else [ref]
    if len(outs) != len(refs):
        return float("inf"), "returned %d arrays, expected %d" % (len(outs), len(refs))
    worst = 0.0
    # a gradient that is exactly zero (one key: dS = 0) is judged against a tenth of the largest one
    floor = 0.1 * max(np.linalg.norm(r.ravel()) for r in refs)
    for o, r in zip(outs, refs):
        if isinstance(o, torch.Tensor):
            if o.dtype != (torch.float64 if dtype == np.float64 else torch.float32):
                return float("inf"), "dtype %s" % o.dtype
            o = o.detach().numpy()
        if not isinstance(o, np.ndarray) or o.dtype != dtype:
            return float("inf"), "dtype %s" % getattr(o, "dtype", type(o))
        if o.shape != r.shape:
            return float("inf"), "shape %s != %s" % (o.shape, r.shape)
        if not np.all(np.isfinite(o)):
            return float("inf"), "non-finite values"
        num = np.linalg.norm((o.astype(np.float64) - r).ravel())
        den = max(np.linalg.norm(r.ravel()), floor)
        worst = max(worst, num / den if den > 0 else (0.0 if num == 0 else float("inf")))
    return worst, ""


def evaluate(api, fn, cases):
    """{case: {dtype_name: error}} (worse of two calls), and whether inputs were ever modified."""
    res, modified = {}, False
    for cname, case in cases.items():
        res[cname] = {}
        for dname, dtype in (("float64", np.float64), ("float32", np.float32)):
            d, ref = prepare(api, case, dtype)
            errs = []
            for _ in range(2):
                outs, same = call(api, fn, d)
                modified |= not same
                errs.append(rel_error(outs, ref, dtype)[0])
            res[cname][dname] = max(errs)
    return res, modified


def check_catalog(mod_name, api, mod, problems):
    src = open(os.path.join(HERE, mod_name + ".py")).read()
    cat = mod.CATALOG
    keys = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
    n_bad = sum(1 for e in cat if not e["correct"])
    n_ok = sum(1 for e in cat if e["correct"])
    if n_bad < 6 or n_ok < 2:
        problems.append("%s: %d broken / %d correct" % (mod_name, n_bad, n_ok))
    sections = {}
    for part in re.split(r"^# --- kernel: ", src, flags=re.M)[1:]:
        fname = part.split(" ---", 1)[0].strip()
        sections[fname] = part
    before_first = re.split(r"^# --- kernel: ", src, flags=re.M)[0]
    if "# BUG:" in before_first:
        problems.append("%s: a # BUG: outside the kernel sections" % mod_name)
    for e in cat:
        if set(e) != keys:
            problems.append("%s: CATALOG keys of %s" % (mod_name, e.get("name")))
            continue
        if e["api"] != api or not hasattr(mod, e["fn"]) or not set(e["features"]) <= FEATURES[api]:
            problems.append("%s: api/fn/features of %s" % (mod_name, e["name"]))
        if e["dtype"] not in ("float64", "float32"):
            problems.append("%s: dtype of %s" % (mod_name, e["name"]))
        nbug = sections.get(e["fn"], "").count("# BUG:")
        if e["fn"] not in sections:
            problems.append("%s: no section for %s" % (mod_name, e["fn"]))
        if e["correct"]:
            if e["bug"] or e["parameter"] or e["source"] or e["report"] or nbug or e["name"] in TRIGGERS:
                problems.append("%s: correct kernel %s has bug fields, # BUG: or TRIGGERS" % (mod_name, e["name"]))
        else:
            if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or ""):
                problems.append("%s: bug of %s not kebab-case" % (mod_name, e["name"]))
            if "Triggers:" not in (e["parameter"] or ""):
                problems.append("%s: no Triggers: in %s" % (mod_name, e["name"]))
            m = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", e["source"] or "")
            pattern = r"https://github\.com/%s/(issues|pull)/%s" % (re.escape(m.group(1)), m.group(2)) if m else ""
            if not m or not re.fullmatch(pattern, e["report"] or ""):
                problems.append("%s: source/report of %s" % (mod_name, e["name"]))
            if nbug != 1:
                problems.append("%s: %d # BUG: comments in %s" % (mod_name, nbug, e["fn"]))
            if e["name"] not in TRIGGERS:
                problems.append("%s: no TRIGGERS entry for %s" % (mod_name, e["name"]))
    return cat


def cross_check(problems):
    """The sdpa / flash references against the NumPy one with explicit masks, the backward against autograd."""
    worst = 0.0
    r = _rng(91)
    q, k, v = _n(r, 2, 3, 20, 16), _n(r, 2, 3, 33, 16), _n(r, 2, 3, 33, 8)
    tl = np.arange(33)[None, :] <= np.arange(20)[:, None]
    worst = max(worst, np.abs(ref_sdpa(q, k, v, is_causal=True) - ref_numpy(q, k, v, tl)).max())
    add = np.where(tl, 0.0, -np.inf)
    worst = max(worst, np.abs(ref_sdpa(q, k, v, attn_mask=add) - ref_numpy(q, k, v, tl)).max())
    qf, kf, vf = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    for causal, window in ((True, (-1, -1)), (True, (5, -1)), (False, (4, 2))):
        ii = np.arange(20)[:, None] + 13
        jj = np.arange(33)[None, :]
        keep = np.ones((20, 33), dtype=bool)
        left, right = window
        right = 0 if causal else right
        if left >= 0:
            keep &= jj >= ii - left
        if right >= 0:
            keep &= jj <= ii + right
        got = ref_flash(qf, kf, vf, causal=causal, window_size=window).transpose(0, 2, 1, 3)
        worst = max(worst, np.abs(got - ref_numpy(q, k, v, keep)).max())
    for case in bwd_cases().values():
        a = ref_bwd(case["q"], case["k"], case["v"], case["d_out"], case.get("mask"), case.get("scale"))
        b = torch_autograd_bwd(case["q"], case["k"], case["v"], case["d_out"], case.get("mask"), case.get("scale"))
        worst = max(worst, max(np.abs(x - y).max() for x, y in zip(a, b)))
    if not worst < 1e-12:
        problems.append("reference cross-check %.3g >= 1e-12" % worst)
    return worst


CASES = {"refimpl": np_cases, "torch-sdpa": sdpa_cases, "flash-attn": flash_cases, "numpy-backward": bwd_cases}


def main():
    t0 = time.time()
    torch.set_num_threads(1)
    problems = []
    worst_ref = cross_check(problems)
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          "worst %.2g" % worst_ref)
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    counts = []
    for mod_name, api in MODULES:
        mod = importlib.import_module(mod_name)
        cat = check_catalog(mod_name, api, mod, problems)
        cases = CASES[api]()
        print("%s.py (%s)" % (mod_name, api))
        for e in cat:
            res, modified = evaluate(api, getattr(mod, e["fn"]), cases)
            if modified:
                problems.append("%s modified its inputs" % e["name"])
            w64 = max(v["float64"] for v in res.values())
            w32 = max(v["float32"] for v in res.values())
            status = "ok" if e["correct"] else "broken"
            print("  %-44s %-6s f64 %-9.3g f32 %.3g" % (e["name"], status, w64, w32))
            if e["correct"]:
                for cname, v in res.items():
                    if not (v["float64"] <= OK_F64 and v["float32"] <= OK_F32):
                        problems.append("%s not correct on %s (%.3g / %.3g)"
                                        % (e["name"], cname, v["float64"], v["float32"]))
                continue
            trig = set(TRIGGERS.get(e["name"], ()))
            unknown = trig - set(cases)
            if unknown:
                problems.append("%s: TRIGGERS names unknown cases %s" % (e["name"], sorted(unknown)))
            for cname, v in res.items():
                if cname in trig:
                    if not v[e["dtype"]] > DIFF[e["dtype"]]:
                        problems.append("%s does not differ on trigger case %s (%.3g)"
                                        % (e["name"], cname, v[e["dtype"]]))
                elif not (v["float64"] <= OK_F64 and v["float32"] <= OK_F32):
                    problems.append("%s differs outside its triggers on %s (%.3g / %.3g)" % (
                        e["name"], cname, v["float64"], v["float32"]))
        counts.append("%s %d broken + %d correct" % (mod_name, sum(not e["correct"] for e in cat),
                                                     sum(e["correct"] for e in cat)))
    names = [e["name"] for m, _ in MODULES for e in importlib.import_module(m).CATALOG]
    sources = [e["source"] for m, _ in MODULES for e in importlib.import_module(m).CATALOG if e["source"]]
    if len(set(names)) != len(names) or len(set(sources)) != len(sources):
        problems.append("names or sources not unique")
    extra = set(TRIGGERS) - set(names)
    if extra:
        problems.append("TRIGGERS for unknown kernels %s" % sorted(extra))
    dt = time.time() - t0
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        print("SELF-CHECK FAILED (%.1f s): %d problem(s)" % (dt, len(problems)))
        return 1
    print("SELF-CHECK PASSED (%.1f s): %s" % (dt, ", ".join(counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
