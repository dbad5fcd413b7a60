"""Self-check of held-out set 22: references written from the four contracts, fixed seeded cases.

Run: /work/main/.venv/bin/python tests/heldout22/selfcheck.py   (exit 0 when everything holds, 1 otherwise)
"""
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
MODULES = [("numpy_fwd", "refimpl"), ("torch_sdpa_fwd", "torch-sdpa"), ("flash_fwd", "flash-attn"),
           ("numpy_bwd", "numpy-backward")]
OK_BOUND = {"float64": 1e-10, "float32": 1e-5}
DIFF_BOUND = {"float64": 1e-8, "float32": 1e-4}
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}

# Cases on which each broken kernel differs from its contract (its documented trigger), in its CATALOG dtype.
TRIGGERS = {
    # numpy_fwd.py
    "np-dnabert-extended-mask-typo": [
        "np-3d-rand-mask-empty-row", "np-4d-key-padding", "np-4d-band-per-head", "np-4d-causal-topleft",
        "np-3d-sq1-leftpad", "np-4d-b1h3-mask", "np-4d-b2h1-mask"],
    "np-aiayn-masked-row-nan": [
        "np-3d-rand-mask-empty-row", "np-4d-key-padding", "np-3d-sq1-leftpad"],
    "np-minimind-mask-not-passed": [
        "np-3d-rand-mask-empty-row", "np-4d-key-padding", "np-4d-band-per-head", "np-4d-causal-topleft",
        "np-3d-sq1-leftpad", "np-4d-b1h3-mask", "np-4d-b2h1-mask"],
    "np-doubleattention-softmax-axis": [
        "np-2d-nomask", "np-3d-rand-mask-empty-row", "np-4d-key-padding", "np-4d-band-per-head",
        "np-4d-causal-topleft", "np-4d-scale-nomask", "np-4d-allkept", "np-3d-sq1-leftpad", "np-4d-b1h3-mask",
        "np-4d-b2h1-mask"],
    "np-gazelle-unfold-head-major": [
        "np-4d-key-padding", "np-4d-band-per-head", "np-4d-causal-topleft", "np-4d-scale-nomask",
        "np-4d-allkept"],
    "np-turbo-mask-one-penalised": [
        "np-3d-rand-mask-empty-row", "np-4d-key-padding", "np-4d-band-per-head", "np-4d-causal-topleft",
        "np-3d-sq1-leftpad", "np-4d-b1h3-mask", "np-4d-b2h1-mask"],
    # torch_sdpa_fwd.py
    "sdpa-unturtle-additive-mask-as-bool": [
        "sdpa-float-finite", "sdpa-float-inf-row", "sdpa-gqa-2:1-float-mask"],
    "sdpa-paddlefleet-manual-scale": [
        "sdpa-scale-0.5", "sdpa-gqa-2:1-float-mask"],
    "sdpa-olmo-padding-row-nan": [
        "sdpa-bool-rand-empty", "sdpa-float-inf-row"],
    "sdpa-tmunet-emb-size-scale": [
        "sdpa-nomask", "sdpa-bool-rand-empty", "sdpa-bool-keypad", "sdpa-bool-2d", "sdpa-float-finite",
        "sdpa-float-inf-row", "sdpa-causal-sq<sk", "sdpa-causal-sq>sk", "sdpa-causal-eq", "sdpa-gqa-4:1",
        "sdpa-gqa-6:1-causal", "sdpa-mqa-decode-pad"],
    "sdpa-maxtext-repeat-seq-axis": [
        "sdpa-gqa-4:1", "sdpa-gqa-6:1-causal", "sdpa-mqa-decode-pad", "sdpa-gqa-2:1-float-mask"],
    "sdpa-mlx-mask-not-broadcast": [
        "sdpa-bool-keypad", "sdpa-float-inf-row", "sdpa-mqa-decode-pad"],
    # flash_fwd.py
    "flash-vllm-xformers-local-window": [
        "fl-window-16,-1", "fl-window-10,3-sq>sk", "fl-causal+window-20-sq<sk", "fl-window-0,4",
        "fl-gqa-2:1-window-alibi", "fl-mqa-decode-window", "fl-mha-decode-window", "fl-gqa-6:1-causal+window"],
    "flash-vllm-decode-window-dropped": [
        "fl-mqa-decode-window", "fl-mha-decode-window"],
    "flash-flashinfer-window-left-uint32": [
        "fl-plain", "fl-causal-sq<sk", "fl-causal-sq>sk", "fl-causal-eq", "fl-window--1,5", "fl-softcap5-scale",
        "fl-softcap3-causal-alibi", "fl-alibi-bhq-noncausal", "fl-gqa-4:1", "fl-gqa-12:2-decode-causal"],
    "flash-ajhalthor-merge-no-permute": [
        "fl-plain", "fl-causal-sq<sk", "fl-causal-sq>sk", "fl-causal-eq", "fl-window-16,-1", "fl-window--1,5",
        "fl-window-10,3-sq>sk", "fl-causal+window-20-sq<sk", "fl-softcap5-scale", "fl-softcap3-causal-alibi",
        "fl-alibi-bhq-noncausal", "fl-gqa-4:1", "fl-gqa-2:1-window-alibi", "fl-gqa-6:1-causal+window"],
    "flash-candlevllm-kv-not-repeated": [
        "fl-gqa-4:1", "fl-gqa-2:1-window-alibi"],
    "flash-vllm-packgqa-window-row": [
        "fl-gqa-2:1-window-alibi", "fl-mqa-decode-window", "fl-gqa-6:1-causal+window"],
    # numpy_bwd.py
    "bwd-neuronsp-group-grads-not-reduced": [
        "bwd-mqa-bcast-mask", "bwd-mqa-decode"],
    "bwd-allennlp-masked-log-softmax-nan": [
        "bwd-3d-mask-empty-row", "bwd-4d-keypad"],
    "bwd-pytorch-lab-dq-never-set": [
        "bwd-2d-nomask", "bwd-3d-mask-empty-row", "bwd-4d-keypad", "bwd-4d-band", "bwd-mqa-bcast-mask",
        "bwd-4d-causal-scale", "bwd-mqa-decode", "bwd-4d-nomask-scale1"],
    "bwd-tf-scores-not-masked": [
        "bwd-3d-mask-empty-row", "bwd-4d-keypad", "bwd-4d-band", "bwd-mqa-bcast-mask", "bwd-4d-causal-scale",
        "bwd-mqa-decode"],
    "bwd-tokenlearner-view-not-transpose": [
        "bwd-2d-nomask", "bwd-3d-mask-empty-row", "bwd-4d-keypad", "bwd-4d-band", "bwd-mqa-bcast-mask",
        "bwd-4d-causal-scale", "bwd-mqa-decode", "bwd-4d-nomask-scale1"],
    "bwd-seq2seq-context-grad-dropped": [
        "bwd-2d-nomask", "bwd-3d-mask-empty-row", "bwd-4d-keypad", "bwd-4d-band", "bwd-mqa-bcast-mask",
        "bwd-4d-causal-scale", "bwd-mqa-decode", "bwd-4d-nomask-scale1"],
}


# ----------------------------------------------------------------------------------------------------------
# References (float64), written from the contracts
# ----------------------------------------------------------------------------------------------------------
def _softmax_rows(s):
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


def ref_numpy(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    return np.matmul(_softmax_rows(s), v)


def _np(t):
    return t.detach().to(torch.float64).numpy()


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = _np(query), _np(key), _np(value)
    hq, hkv = q.shape[1], k.shape[1]
    k, v = np.repeat(k, hq // hkv, axis=1), np.repeat(v, hq // hkv, axis=1)
    sq, sk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if is_causal:
        s = np.where(np.tril(np.ones((sq, sk), dtype=bool)), s, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = np.where(attn_mask.numpy(), s, -np.inf)
        else:
            s = s + _np(attn_mask)
    return np.matmul(_softmax_rows(s), v)


def flash_visible(sq, sk, causal, window):
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    vis = np.ones((sq, sk), dtype=bool)
    if causal:
        vis &= j <= i
    if window[0] >= 0:
        vis &= j >= i - window[0]
    if window[1] >= 0:
        vis &= j <= i + window[1]
    return vis


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    qn, kn, vn = (_np(t).transpose(0, 2, 1, 3) for t in (q, k, v))
    b, hq, sq, d = qn.shape
    hkv, sk = kn.shape[1], kn.shape[2]
    kn, vn = np.repeat(kn, hq // hkv, axis=1), np.repeat(vn, hq // hkv, axis=1)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    s = np.matmul(qn, np.swapaxes(kn, -1, -2)) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = alibi_slopes.to(torch.float64).numpy()
        sl = sl.reshape(1, hq, 1, 1) if sl.ndim == 1 else sl.reshape(b, hq, 1, 1)
        i = np.arange(sq)[:, None] + (sk - sq)
        j = np.arange(sk)[None, :]
        s = s - sl * np.abs(i - j)
    s = np.where(flash_visible(sq, sk, causal, window_size), s, -np.inf)
    return np.matmul(_softmax_rows(s), vn).transpose(0, 2, 1, 3)


def _sum_to(x, shape):
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def ref_backward(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(a, dtype=np.float64) for a in (q, k, v, d_out))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    p = _softmax_rows(s)
    dv = np.matmul(np.swapaxes(p, -1, -2), do)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq, _sum_to(dk, k.shape), _sum_to(dv, v.shape)


def autograd_backward(q, k, v, d_out, mask=None, scale=None):
    qt, kt, vt = (torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = qt @ kt.transpose(-1, -2) * scale
    if mask is not None:
        keep = torch.tensor(np.broadcast_to(mask, s.shape).copy())
        s = torch.where(keep, s, torch.full_like(s, -1e30))
        p = torch.softmax(s, dim=-1) * keep.any(dim=-1, keepdim=True)
    else:
        p = torch.softmax(s, dim=-1)
    ((p @ vt) * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------
def _rng(name):
    return np.random.default_rng(sum((i + 1) * ord(c) for i, c in enumerate(name)))


def _rand_mask(rng, shape, p=0.7, empty=None):
    m = rng.random(shape) < p
    m[..., 0] |= ~m.any(axis=-1)
    if empty is not None:
        m[empty] = False
    return m


def _lengths_mask(lengths, sk, left=False):
    m = np.zeros((len(lengths), sk), dtype=bool)
    for bi, n in enumerate(lengths):
        if left:
            m[bi, sk - n:] = n > 0
        else:
            m[bi, :n] = True
    return m


def numpy_cases():
    def qkv(rng, lead_q, lead_k, sq, sk, d, dv):
        return (rng.standard_normal(lead_q + (sq, d)), rng.standard_normal(lead_k + (sk, d)),
                rng.standard_normal(lead_k + (sk, dv)))

    cases = []

    def add(name, build):
        cases.append((name, build))

    def c1(r):
        return dict(zip("qkv", qkv(r, (), (), 20, 33, 16, 12)))

    def c2(r):
        a = dict(zip("qkv", qkv(r, (3,), (3,), 17, 40, 24, 20)))
        a["mask"] = _rand_mask(r, (3, 17, 40), empty=(1, 5))
        return a

    def c3(r):
        a = dict(zip("qkv", qkv(r, (2, 3), (2, 3), 37, 64, 32, 40)))
        a["mask"] = _lengths_mask([50, 0], 64).reshape(2, 1, 1, 64)
        return a

    def c4(r):
        a = dict(zip("qkv", qkv(r, (2, 2), (2, 2), 50, 50, 16, 16)))
        i = np.arange(50)
        a["mask"] = np.stack([np.abs(i[:, None] - i[None, :]) <= w for w in (3, 8)])[None]
        return a

    def c5(r):
        a = dict(zip("qkv", qkv(r, (2, 3), (2, 3), 30, 45, 32, 24)))
        a["mask"] = np.tril(np.ones((30, 45), dtype=bool))
        return a

    def c6(r):
        a = dict(zip("qkv", qkv(r, (2, 2), (2, 2), 100, 129, 64, 48)))
        a["scale"] = 0.37
        return a

    def c7(r):
        a = dict(zip("qkv", qkv(r, (2, 2), (2, 2), 24, 24, 8, 8)))
        a["mask"] = np.ones((2, 2, 24, 24), dtype=bool)
        return a

    def c8(r):
        a = dict(zip("qkv", qkv(r, (4,), (4,), 1, 70, 16, 16)))
        a["mask"] = _lengths_mask([70, 40, 1, 0], 70, left=True).reshape(4, 1, 70)
        return a

    def c9(r):
        a = dict(zip("qkv", qkv(r, (1, 3), (1, 3), 21, 96, 24, 12)))
        a["mask"] = _rand_mask(r, (1, 3, 21, 96))
        a["scale"] = 0.5
        return a

    def c10(r):
        a = dict(zip("qkv", qkv(r, (2, 1), (2, 1), 64, 32, 40, 40)))
        a["mask"] = _rand_mask(r, (2, 1, 64, 32), p=0.5)
        return a

    for name, f in [("np-2d-nomask", c1), ("np-3d-rand-mask-empty-row", c2), ("np-4d-key-padding", c3),
                    ("np-4d-band-per-head", c4), ("np-4d-causal-topleft", c5), ("np-4d-scale-nomask", c6),
                    ("np-4d-allkept", c7), ("np-3d-sq1-leftpad", c8), ("np-4d-b1h3-mask", c9),
                    ("np-4d-b2h1-mask", c10)]:
        add(name, f)
    return cases


def sdpa_cases():
    def t(x):
        return torch.tensor(x)

    def qkv(r, b, hq, hkv, sq, sk, d, dv):
        return dict(query=t(r.standard_normal((b, hq, sq, d))), key=t(r.standard_normal((b, hkv, sk, d))),
                    value=t(r.standard_normal((b, hkv, sk, dv))))

    specs = []

    def c_nomask(r):
        return qkv(r, 2, 3, 3, 40, 40, 16, 24)

    def c_bool_empty(r):
        a = qkv(r, 2, 2, 2, 33, 65, 32, 32)
        a["attn_mask"] = t(_rand_mask(r, (2, 2, 33, 65), empty=(0, 1, 7)))
        return a

    def c_keypad(r):
        a = qkv(r, 2, 4, 4, 20, 50, 24, 20)
        a["attn_mask"] = t(_lengths_mask([50, 13], 50).reshape(2, 1, 1, 50))
        return a

    def c_bool2d(r):
        a = qkv(r, 1, 2, 2, 17, 31, 16, 8)
        a["attn_mask"] = t(_rand_mask(r, (17, 31)))
        return a

    def c_float(r):
        a = qkv(r, 1, 2, 2, 25, 31, 16, 16)
        a["attn_mask"] = t(2.0 * r.standard_normal((1, 2, 25, 31)))
        return a

    def c_float_inf(r):
        a = qkv(r, 2, 2, 2, 18, 40, 24, 12)
        bias = r.standard_normal((2, 1, 18, 40))
        bias[r.random((2, 1, 18, 40)) < 0.3] = -np.inf
        bias[..., 0] = np.where(np.isinf(bias).all(axis=-1), 0.0, bias[..., 0])
        bias[1, 0, 4] = -np.inf
        a["attn_mask"] = t(bias)
        return a

    def c_causal(sq, sk, b, h, d, dv):
        def f(r):
            a = qkv(r, b, h, h, sq, sk, d, dv)
            a["is_causal"] = True
            return a
        return f

    def c_scale(r):
        a = qkv(r, 2, 2, 2, 30, 45, 16, 16)
        a["scale"] = 0.5
        return a

    def c_gqa4(r):
        a = qkv(r, 2, 8, 2, 20, 36, 16, 16)
        a["enable_gqa"] = True
        return a

    def c_gqa6(r):
        a = qkv(r, 1, 6, 1, 40, 40, 32, 40)
        a["enable_gqa"] = True
        a["is_causal"] = True
        return a

    def c_mqa_decode(r):
        a = qkv(r, 2, 4, 1, 1, 77, 64, 32)
        a["enable_gqa"] = True
        a["attn_mask"] = t(_lengths_mask([77, 30], 77).reshape(2, 1, 1, 77))
        return a

    def c_h1(r):
        a = qkv(r, 3, 1, 1, 16, 16, 24, 24)
        a["attn_mask"] = t(_rand_mask(r, (3, 1, 16, 16)))
        return a

    def c_gqa2_float(r):
        a = qkv(r, 1, 4, 2, 12, 28, 16, 16)
        a["enable_gqa"] = True
        a["attn_mask"] = t(r.standard_normal((1, 4, 12, 28)))
        a["scale"] = 1.0
        return a

    specs = [("sdpa-nomask", c_nomask), ("sdpa-bool-rand-empty", c_bool_empty), ("sdpa-bool-keypad", c_keypad),
             ("sdpa-bool-2d", c_bool2d), ("sdpa-float-finite", c_float), ("sdpa-float-inf-row", c_float_inf),
             ("sdpa-causal-sq<sk", c_causal(20, 50, 1, 2, 32, 32)),
             ("sdpa-causal-sq>sk", c_causal(60, 24, 2, 2, 16, 24)),
             ("sdpa-causal-eq", c_causal(64, 64, 1, 3, 64, 48)), ("sdpa-scale-0.5", c_scale),
             ("sdpa-gqa-4:1", c_gqa4), ("sdpa-gqa-6:1-causal", c_gqa6), ("sdpa-mqa-decode-pad", c_mqa_decode),
             ("sdpa-h1-scale-none", c_h1), ("sdpa-gqa-2:1-float-mask", c_gqa2_float)]
    return specs


def flash_cases():
    def t(x):
        return torch.tensor(x)

    def spec(b, sq, sk, hq, hkv, d, dv, **kw):
        def f(r):
            a = dict(q=t(r.standard_normal((b, sq, hq, d))), k=t(r.standard_normal((b, sk, hkv, d))),
                     v=t(r.standard_normal((b, sk, hkv, dv))))
            for key, val in kw.items():
                if key == "alibi":
                    shape = (hq,) if val == "h" else (b, hq)
                    a["alibi_slopes"] = torch.tensor(0.05 + 0.5 * r.random(shape), dtype=torch.float32)
                else:
                    a[key] = val
            return a
        return f

    return [
        ("fl-plain", spec(2, 48, 48, 4, 4, 32, 32)),
        ("fl-causal-sq<sk", spec(1, 20, 64, 2, 2, 16, 24, causal=True)),
        ("fl-causal-sq>sk", spec(2, 70, 30, 2, 2, 32, 32, causal=True)),
        ("fl-causal-eq", spec(1, 33, 33, 3, 3, 40, 16, causal=True)),
        ("fl-window-16,-1", spec(1, 60, 60, 2, 2, 16, 16, window_size=(16, -1))),
        ("fl-window--1,5", spec(2, 40, 50, 2, 2, 24, 24, window_size=(-1, 5))),
        ("fl-window-10,3-sq>sk", spec(1, 80, 50, 2, 2, 16, 16, window_size=(10, 3))),
        ("fl-causal+window-20-sq<sk", spec(1, 30, 90, 2, 2, 32, 32, causal=True, window_size=(20, -1))),
        ("fl-window-0,4", spec(1, 25, 25, 1, 1, 8, 8, window_size=(0, 4))),
        ("fl-softcap5-scale", spec(2, 32, 32, 2, 2, 16, 16, softcap=5.0, softmax_scale=0.3)),
        ("fl-softcap3-causal-alibi", spec(1, 40, 56, 4, 4, 32, 32, softcap=3.0, causal=True, alibi="h")),
        ("fl-alibi-bhq-noncausal", spec(2, 24, 40, 3, 3, 16, 16, alibi="bh")),
        ("fl-gqa-4:1", spec(2, 36, 36, 8, 2, 16, 16)),
        ("fl-gqa-2:1-window-alibi", spec(1, 50, 64, 4, 2, 32, 32, window_size=(8, 8), alibi="bh")),
        ("fl-gqa-12:2-decode-causal", spec(2, 1, 100, 12, 2, 64, 48, causal=True)),
        ("fl-mqa-decode-window", spec(1, 1, 129, 4, 1, 32, 32, causal=True, window_size=(16, 0))),
        ("fl-mha-decode-window", spec(2, 1, 64, 2, 2, 16, 16, window_size=(10, -1))),
        ("fl-gqa-6:1-causal+window", spec(1, 45, 30, 6, 1, 24, 24, causal=True, window_size=(6, -1))),
    ]


def bwd_cases():
    def spec(lead_q, lead_k, sq, sk, d, dv, mask=None, scale=None):
        def f(r):
            a = dict(q=r.standard_normal(lead_q + (sq, d)), k=r.standard_normal(lead_k + (sk, d)),
                     v=r.standard_normal(lead_k + (sk, dv)), d_out=r.standard_normal(lead_q + (sq, dv)))
            if mask is not None:
                a["mask"] = mask(r)
            if scale is not None:
                a["scale"] = scale
            return a
        return f

    band = np.abs(np.arange(50)[:, None] - np.arange(50)[None, :])
    return [
        ("bwd-2d-nomask", spec((), (), 20, 33, 16, 12)),
        ("bwd-3d-mask-empty-row", spec((3,), (3,), 17, 40, 24, 20,
                                       mask=lambda r: _rand_mask(r, (3, 17, 40), empty=(2, 3)))),
        ("bwd-4d-keypad", spec((2, 3), (2, 3), 37, 64, 32, 40,
                               mask=lambda r: _lengths_mask([50, 0], 64).reshape(2, 1, 1, 64))),
        ("bwd-4d-band", spec((2, 2), (2, 2), 50, 50, 16, 16,
                             mask=lambda r: np.stack([band <= 3, band <= 8])[None])),
        ("bwd-mqa-bcast-mask", spec((2, 4), (2, 1), 30, 45, 16, 24,
                                    mask=lambda r: _rand_mask(r, (2, 4, 30, 45)))),
        ("bwd-4d-causal-scale", spec((1, 2), (1, 2), 40, 40, 32, 32,
                                     mask=lambda r: np.tril(np.ones((40, 40), dtype=bool)), scale=0.3)),
        ("bwd-mqa-decode", spec((2, 6), (2, 1), 1, 77, 64, 32,
                                mask=lambda r: _lengths_mask([77, 20], 77).reshape(2, 1, 1, 77))),
        ("bwd-4d-nomask-scale1", spec((2, 2), (2, 2), 24, 60, 8, 8, scale=1.0)),
    ]


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------
def _cast(args, dtype):
    out = {}
    for key, val in args.items():
        if isinstance(val, np.ndarray) and val.dtype == np.float64:
            out[key] = val.astype(dtype)
        elif isinstance(val, torch.Tensor) and val.dtype == torch.float64 and key != "alibi_slopes":
            out[key] = val.to(torch.float32 if dtype == np.float32 else torch.float64)
        else:
            out[key] = val
    return out


def _copy(args):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v.clone() if isinstance(v, torch.Tensor) else v)
            for k, v in args.items()}


def _same(a, b):
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray):
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
    return True


def _rel(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return math.inf
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300))


def reference(api, args):
    if api == "refimpl":
        return ref_numpy(**args)
    if api == "torch-sdpa":
        a = {k: v for k, v in args.items()}
        return ref_sdpa(**a)
    if api == "flash-attn":
        return ref_flash(**args)
    return ref_backward(**args)


def call_error(api, fn, args, ref):
    """Relative error of one call (inf on an exception, wrong shape/dtype, non-finite values or input writes)."""
    fresh = _copy(args)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            out = fn(**fresh)
    except Exception:
        return math.inf
    if not _same(fresh, args):
        return math.inf
    if api == "numpy-backward":
        if not isinstance(out, tuple) or len(out) != 3:
            return math.inf
        worst = 0.0
        for o, r, src in zip(out, ref, ("q", "k", "v")):
            if not isinstance(o, np.ndarray) or o.dtype != args[src].dtype:
                return math.inf
            worst = max(worst, _rel(o, r))
        return worst
    if api == "refimpl":
        if not isinstance(out, np.ndarray) or out.dtype != args["q"].dtype:
            return math.inf
        return _rel(out, ref)
    first = args["query"] if api == "torch-sdpa" else args["q"]
    if not isinstance(out, torch.Tensor) or out.dtype != first.dtype:
        return math.inf
    return _rel(out.detach().to(torch.float64).numpy(), ref)


def case_list(api):
    return {"refimpl": numpy_cases, "torch-sdpa": sdpa_cases, "flash-attn": flash_cases,
            "numpy-backward": bwd_cases}[api]()


def evaluate(module, api):
    """errors[kernel name][(case, dtype)] = worse relative error of two calls."""
    errors = {entry["name"]: {} for entry in module.CATALOG}
    for case_name, build in case_list(api):
        base = build(_rng(case_name))
        for dtype in ("float64", "float32"):
            args = _cast(base, np.float32 if dtype == "float32" else np.float64)
            ref = reference(api, args)
            for entry in module.CATALOG:
                fn = getattr(module, entry["fn"])
                err = max(call_error(api, fn, args, ref), call_error(api, fn, args, ref))
                errors[entry["name"]][(case_name, dtype)] = err
    return errors


def cross_check():
    worst = 0.0
    r = np.random.default_rng(7)
    q, k, v = r.standard_normal((2, 3, 21, 16)), r.standard_normal((2, 3, 34, 16)), r.standard_normal((2, 3, 34, 8))
    qt, kt, vt = torch.tensor(q), torch.tensor(k), torch.tensor(v)
    keep = _rand_mask(r, (2, 3, 21, 34), empty=(1, 2, 3))
    worst = max(worst, np.abs(ref_sdpa(qt, kt, vt, attn_mask=torch.tensor(keep)) - ref_numpy(q, k, v, keep)).max())
    add = np.where(keep, 0.0, -np.inf)
    worst = max(worst, np.abs(ref_sdpa(qt, kt, vt, attn_mask=torch.tensor(add)) - ref_numpy(q, k, v, keep)).max())
    tril = np.tril(np.ones((21, 34), dtype=bool))
    worst = max(worst, np.abs(ref_sdpa(qt, kt, vt, is_causal=True) - ref_numpy(q, k, v, tril)).max())
    qf, kf, vf = (torch.tensor(x.transpose(0, 2, 1, 3).copy()) for x in (q, k, v))
    for causal, window in ((True, (-1, -1)), (True, (5, -1)), (False, (4, 2))):
        vis = flash_visible(21, 34, causal, window)
        out = ref_flash(qf, kf, vf, causal=causal, window_size=window).transpose(0, 2, 1, 3)
        worst = max(worst, np.abs(out - ref_numpy(q, k, v, vis)).max())
    for name, build in bwd_cases():
        a = build(_rng(name))
        mine, auto = ref_backward(**a), autograd_backward(**a)
        for x, y in zip(mine, auto):
            worst = max(worst, np.abs(x - _sum_to(y, x.shape)).max())
    return worst


def bug_sections(path):
    """{fn: number of `# BUG:` comments in its section}, plus the count outside any section."""
    counts, current, outside = {}, None, 0
    with open(path) as fh:
        for line in fh:
            m = re.match(r"# --- kernel: (\w+) ---", line)
            if m:
                current = m.group(1)
                counts[current] = 0
                continue
            if "# BUG:" in line:
                if current is None:
                    outside += 1
                else:
                    counts[current] += 1
    return counts, outside


def check_catalog(module, api, path, problems, sources):
    names = set()
    broken = correct = 0
    counts, outside = bug_sections(path)
    if outside:
        problems.append(f"{path}: {outside} `# BUG:` outside kernel sections")
    for e in module.CATALOG:
        tag = f"{os.path.basename(path)}:{e.get('name')}"
        if set(e) != KEYS:
            problems.append(f"{tag}: keys {sorted(set(e) ^ KEYS)}")
            continue
        if e["name"] in names:
            problems.append(f"{tag}: duplicate name")
        names.add(e["name"])
        if e["api"] != api or not callable(getattr(module, e["fn"], None)):
            problems.append(f"{tag}: api or fn")
        if e["dtype"] not in ("float64", "float32") or not set(e["features"]) <= FEATURES:
            problems.append(f"{tag}: dtype or features")
        if e["fn"] not in counts:
            problems.append(f"{tag}: no kernel section")
        if e["correct"] is True:
            correct += 1
            if any(e[key] is not None for key in ("bug", "parameter", "source", "report")):
                problems.append(f"{tag}: correct kernel with bug fields")
            if counts.get(e["fn"], 0) != 0 or e["name"] in TRIGGERS:
                problems.append(f"{tag}: correct kernel with a BUG comment or TRIGGERS entry")
        elif e["correct"] is False:
            broken += 1
            if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or ""):
                problems.append(f"{tag}: bug not kebab-case")
            if "Triggers:" not in (e["parameter"] or ""):
                problems.append(f"{tag}: parameter without Triggers:")
            m = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", e["source"] or "")
            if not m or not re.fullmatch(rf"https://github\.com/{re.escape(m.group(1))}/(issues|pull)/{m.group(2)}",
                                         e["report"] or ""):
                problems.append(f"{tag}: source/report disagree")
            if e["source"] in sources:
                problems.append(f"{tag}: source cited twice")
            sources.add(e["source"])
            if counts.get(e["fn"], 0) != 1:
                problems.append(f"{tag}: {counts.get(e['fn'], 0)} BUG comments in its section")
            if e["name"] not in TRIGGERS:
                problems.append(f"{tag}: no TRIGGERS entry")
        else:
            problems.append(f"{tag}: correct is not a bool")
    if broken < 6 or correct < 2:
        problems.append(f"{path}: {broken} broken, {correct} correct")
    return broken, correct


def main():
    t0 = time.time()
    sys.path.insert(0, HERE)
    problems, sources, summary = [], set(), []
    xc = cross_check()
    if not xc < 1e-12:
        problems.append(f"reference cross-check {xc:.3g}")
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          f"worst {xc:.2g}")
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    all_names = set()
    for mod_name, api in MODULES:
        module = importlib.import_module(mod_name)
        path = os.path.join(HERE, mod_name + ".py")
        broken, correct = check_catalog(module, api, path, problems, sources)
        summary.append(f"{mod_name} {broken} broken + {correct} correct")
        errors = evaluate(module, api)
        cases = [c for c, _ in case_list(api)]
        print(f"{mod_name}.py ({api})")
        for e in module.CATALOG:
            all_names.add(e["name"])
            errs = errors[e["name"]]
            w64 = max(v for (c, d), v in errs.items() if d == "float64")
            w32 = max(v for (c, d), v in errs.items() if d == "float32")
            status = "ok" if e["correct"] else "broken"
            print(f"  {e['name']:<45s}{status:<7s}f64 {w64:<10.3g}f32 {w32:.3g}")
            if e["correct"]:
                for (c, d), v in errs.items():
                    if not v <= OK_BOUND[d]:
                        problems.append(f"{e['name']}: {c} {d} error {v:.3g}")
                continue
            trig = TRIGGERS.get(e["name"], [])
            for c in trig:
                if c not in cases:
                    problems.append(f"{e['name']}: unknown trigger case {c}")
                elif not errs[(c, e["dtype"])] > DIFF_BOUND[e["dtype"]]:
                    problems.append(f"{e['name']}: does not differ on trigger {c}")
            for c in cases:
                if c in trig:
                    continue
                for d in ("float64", "float32"):
                    if not errs[(c, d)] <= OK_BOUND[d]:
                        problems.append(f"{e['name']}: differs off-trigger on {c} {d} ({errs[(c, d)]:.3g})")
    for name in TRIGGERS:
        if name not in all_names:
            problems.append(f"TRIGGERS entry for unknown kernel {name}")
    elapsed = time.time() - t0
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        print(f"SELF-CHECK FAILED ({elapsed:.1f} s): {len(problems)} problem(s)")
        return 1
    print(f"SELF-CHECK PASSED ({elapsed:.1f} s): " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
