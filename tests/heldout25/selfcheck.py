"""Self-check of the heldout25 kernels against float64 references written from the four contracts (README.md).

Run: /work/main/.venv/bin/python tests/heldout25/selfcheck.py   (exit 0 on success, 1 on any problem)
"""
import sys

sys.dont_write_bytecode = True

import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

np.seterr(all="ignore")
torch.set_num_threads(1)

MODULES = [("numpy_fwd.py", numpy_fwd, "refimpl"), ("torch_sdpa_fwd.py", torch_sdpa_fwd, "torch-sdpa"),
           ("flash_fwd.py", flash_fwd, "flash-attn"), ("numpy_bwd.py", numpy_bwd, "numpy-backward")]
FEATURES = {"refimpl": {"mask"}, "torch-sdpa": {"mask", "causal", "gqa", "dv-ne-d"},
            "flash-attn": {"causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"},
            "numpy-backward": {"mask", "dv-ne-d"}}
OK_BOUND = {"float64": 1e-10, "float32": 1e-5}
DIFF_BOUND = {"float64": 1e-8, "float32": 1e-4}

# The cases on which each broken kernel differs (its documented trigger), checked in its CATALOG dtype.
TRIGGERS = {
    "np-fasttransformers-keys-query-length": ["n02", "n03", "n05", "n07", "n08", "n10"],
    "np-h2o-softmax-before-mask": ["n03", "n04", "n05", "n06", "n08", "n10"],
    "np-sparkinfer-q-stride-64": ["n01", "n02", "n03", "n05", "n06", "n10"],
    "np-gptfast-cache-tail-unmasked": ["n01", "n02", "n03", "n05", "n06", "n07", "n08", "n09"],
    "np-agenticflow-sum-normalised-weights": ["n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09", "n10"],
    "np-neuraldiffusion-dropout-rescale-eval": ["n01", "n02", "n03", "n04", "n05", "n06", "n07", "n08", "n09",
                                                "n10"],
    "sdpa-tinygrad-bool-mask-where-order": ["s02", "s03", "s04", "s05", "s08", "s09", "s12", "s13", "s14"],
    "sdpa-xtransformers-custom-scale-not-passed": ["s04", "s10", "s13"],
    "sdpa-ort-gqa-mea-head-size": ["s11"],
    "sdpa-doge-dynamic-mask-drops-causal": ["s02", "s03", "s04", "s09", "s14"],
    "sdpa-ttmetal-mask-not-tile-padded": ["s05", "s06", "s07", "s08", "s11", "s13"],
    "sdpa-pytorch-flash-branch-drops-mask": ["s05", "s06", "s13"],
    "flash-flashinfer-causal-diagonal-masked": ["f02", "f03", "f04", "f10", "f11", "f13", "f16", "f18"],
    "flash-xformers-bias-to-loses-causal": ["f02", "f03", "f04", "f10", "f11", "f13"],
    "flash-ffpa-square-causal-alignment": ["f02", "f03", "f10", "f11", "f16"],
    "flash-phi-softmax-scale-default-one": ["f01", "f02", "f03", "f05", "f06", "f07", "f08", "f09", "f10", "f11",
                                            "f13", "f14", "f15", "f16"],
    "flash-trtllm-padded-keys-unmasked": ["f01", "f05", "f06", "f07", "f08", "f09", "f12", "f14", "f15", "f17"],
    "flash-hf-upad-query-kv-heads": ["f03", "f05", "f10", "f15", "f16"],
    "bwd-flex-dv-stored-with-index-k": ["b02", "b04", "b06"],
    "bwd-aotriton-block-dmodel-from-k": ["b02", "b04"],
    "bwd-fa-dkdv-epilogue-spill": ["b02", "b03", "b04", "b05", "b06", "b07"],
    "bwd-custom-mask-shared-seq-stride": ["b02", "b03", "b07"],
    "bwd-tinygrad-softmax-in-half": ["b01", "b02", "b03", "b04", "b05", "b06", "b07", "b09"],
    "bwd-lightning-floor-block-grid": ["b02", "b03", "b04", "b05", "b07"],
}


# ----------------------------------------------------------------------------------------------------------------
# float64 references, written from the contracts
# ----------------------------------------------------------------------------------------------------------------
def ref_attention(q, k, v, keep=None, scale=None, bias=None):
    """softmax(scale * q k^T + bias) v over the kept keys; a row with no kept key gives zeros (NumPy, float64)."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if bias is not None:
        s = s + bias
    if keep is None:
        keep = np.ones(s.shape, dtype=bool)
    keep = np.broadcast_to(keep, s.shape) & np.isfinite(s)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    return np.matmul(e / np.where(z == 0, 1.0, z), v)


def ref_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.detach().double().numpy() for t in (query, key, value))
    hq, hkv = q.shape[1], k.shape[1]
    if hq != hkv:
        idx = np.arange(hq) // (hq // hkv)
        k, v = k[:, idx], v[:, idx]
    L, S = q.shape[2], k.shape[2]
    keep = np.ones((L, S), dtype=bool)
    bias = None
    if is_causal:
        keep = np.arange(S)[None, :] <= np.arange(L)[:, None]
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask.numpy()
        else:
            bias = attn_mask.double().numpy()
    return ref_attention(q, k, v, keep, scale, bias)


def flash_keep(sq, sk, causal, window_size):
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


def ref_flash(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
              alibi_slopes=None, deterministic=False, return_attn_probs=False):
    qn = q.detach().double().numpy().transpose(0, 2, 1, 3)
    kn = k.detach().double().numpy().transpose(0, 2, 1, 3)
    vn = v.detach().double().numpy().transpose(0, 2, 1, 3)
    b, hq, sq, d = qn.shape
    hkv, sk = kn.shape[1], kn.shape[2]
    idx = np.arange(hq) // (hq // hkv)
    kn, vn = kn[:, idx], vn[:, idx]
    sc = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    s = np.matmul(qn, np.swapaxes(kn, -1, -2)) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy()
        sl = np.broadcast_to(sl, (b, hq))
        dist = np.abs(np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :])
        s = s - sl[:, :, None, None] * dist
    keep = flash_keep(sq, sk, causal, window_size)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    out = np.matmul(e / np.where(z == 0, 1.0, z), vn)
    return out.transpose(0, 2, 1, 3)


def ref_backward(q, k, v, d_out, mask=None, scale=None):
    """Analytic gradients of sum(d_out * O) (float64), dk/dv summed back to k/v's (broadcast) shapes."""
    q, k, v, g = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(kb, -1, -2)) * sc
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    p = e / np.where(z == 0, 1.0, z)
    o = np.matmul(p, vb)
    dp = np.matmul(g, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(g * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    dv = np.matmul(np.swapaxes(p, -1, -2), g)
    return dq, numpy_bwd._sum_to(dk, k.shape), numpy_bwd._sum_to(dv, v.shape)


def autograd_backward(q, k, v, d_out, mask=None, scale=None):
    qt, kt, vt = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-1, -2)) * sc
    keep = torch.ones(s.shape, dtype=torch.bool) if mask is None else torch.from_numpy(
        np.array(np.broadcast_to(mask, s.shape)))
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m).masked_fill(~keep, 0.0)
    z = e.sum(dim=-1, keepdim=True)
    o = torch.matmul(e / torch.where(z == 0, torch.ones_like(z), z), vt)
    (o * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------------------
# cases (seeded); each runs in float64 and float32 (the float32 reference is the float64 one on rounded inputs)
# ----------------------------------------------------------------------------------------------------------------
def _rng(seed):
    return np.random.default_rng(1000 + seed)


def _arr(r, *shape):
    return r.standard_normal(shape)


def numpy_cases():
    cases = []

    def add(cid, desc, q, k, v, mask=None, scale=None):
        cases.append((cid, desc, dict(q=q, k=k, v=v, mask=mask, scale=scale)))

    r = _rng(1)
    add("n01", "2-D Sq=Sk=16 D=32", _arr(r, 16, 32), _arr(r, 16, 32), _arr(r, 16, 32))
    r = _rng(2)
    add("n02", "3-D Sq=20 Sk=33 D=24 Dv=20 scale=0.37", _arr(r, 3, 20, 24), _arr(r, 3, 33, 24), _arr(r, 3, 33, 20),
        scale=0.37)
    r = _rng(3)
    m = r.random((2, 3, 50, 40)) < 0.6
    m[0, 1, 7, :] = False
    m[1, 2, 0, :] = False
    add("n03", "4-D Sq=50 Sk=40 D=16 Dv=24 random mask, fully masked rows", _arr(r, 2, 3, 50, 16),
        _arr(r, 2, 3, 40, 16), _arr(r, 2, 3, 40, 24), m)
    r = _rng(4)
    lengths = np.array([40, 0])
    m = (np.arange(64)[None, :] < lengths[:, None])[:, None, None, :]
    add("n04", "4-D Sq=Sk=64 D=64 Dv=48 right padding (B,1,1,Sk), a zero-length sequence", _arr(r, 2, 2, 64, 64),
        _arr(r, 2, 2, 64, 64), _arr(r, 2, 2, 64, 48), m)
    r = _rng(5)
    m = (np.arange(129) >= 30)[None, None, None, :]
    add("n05", "decode Sq=1 Sk=129 D=32 left padding", _arr(r, 1, 4, 1, 32), _arr(r, 1, 4, 129, 32),
        _arr(r, 1, 4, 129, 32), m)
    r = _rng(6)
    i = np.arange(100)[:, None]
    j = np.arange(100)[None, :]
    m = np.stack([(j <= i) & (j >= i - 10), (j <= i)])[None]
    add("n06", "4-D Sq=Sk=100 D=40 per-head band masks scale=0.5", _arr(r, 2, 2, 100, 40), _arr(r, 2, 2, 100, 40),
        _arr(r, 2, 2, 100, 40), m, 0.5)
    r = _rng(7)
    add("n07", "one key: Sq=7 Sk=1 D=8", _arr(r, 1, 1, 7, 8), _arr(r, 1, 1, 1, 8), _arr(r, 1, 1, 1, 8))
    r = _rng(8)
    m = r.random((2, 1, 33, 65)) < 0.7
    m[..., 0] = True
    add("n08", "Sq=33 Sk=65 D=64 Dv=32 random mask scale=1", _arr(r, 2, 1, 33, 64), _arr(r, 2, 1, 65, 64),
        _arr(r, 2, 1, 65, 32), m, 1.0)
    r = _rng(9)
    add("n09", "2-D one query one key D=16 Dv=12", _arr(r, 1, 16), _arr(r, 1, 16), _arr(r, 1, 12))
    r = _rng(10)
    i = np.arange(96)[:, None]
    j = np.arange(128)[None, :]
    add("n10", "Sq=96 Sk=128 D=32 bottom-right causal mask", _arr(r, 2, 3, 96, 32), _arr(r, 2, 3, 128, 32),
        _arr(r, 2, 3, 128, 32), j <= i + 32)
    return cases


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def sdpa_cases():
    cases = []

    def add(cid, desc, b, hq, hkv, L, S, d, dv, seed, **kw):
        r = _rng(100 + seed)
        args = dict(query=_t(_arr(r, b, hq, L, d)), key=_t(_arr(r, b, hkv, S, d)), value=_t(_arr(r, b, hkv, S, dv)))
        if callable(kw.get("attn_mask")):
            kw["attn_mask"] = kw["attn_mask"](r)
        args.update(kw)
        cases.append((cid, desc, args))

    add("s01", "no mask Sq=Sk=32", 2, 4, 4, 32, 32, 32, 32, 1)
    add("s02", "is_causal Sq=20 < Sk=50 D=16 Dv=24", 2, 2, 2, 20, 50, 16, 24, 2, is_causal=True)
    add("s03", "is_causal Sq=70 > Sk=40 D=24", 1, 3, 3, 70, 40, 24, 24, 3, is_causal=True)
    add("s04", "is_causal Sq=Sk=64 D=64 scale=0.3", 2, 2, 2, 64, 64, 64, 64, 4, is_causal=True, scale=0.3)

    def m05(r):
        m = r.random((2, 3, 33, 47)) < 0.6
        m[1, 0, 5, :] = False
        return _t(m)
    add("s05", "bool mask with a fully masked row", 2, 3, 3, 33, 47, 32, 32, 5, attn_mask=m05)
    add("s06", "additive float mask, finite biases", 2, 2, 2, 40, 60, 16, 16, 6,
        attn_mask=lambda r: _t(r.standard_normal((2, 1, 40, 60))))

    def m07(r):
        m = np.where(r.random((1, 1, 30, 30)) < 0.7, 0.0, -np.inf)
        m[0, 0, 3, :] = -np.inf
        return _t(m)
    add("s07", "additive 0/-inf mask with a fully -inf row, D=32 Dv=40", 1, 2, 2, 30, 30, 32, 40, 7, attn_mask=m07)
    add("s08", "GQA 4:1 right-padded bool mask (B,1,1,Sk)", 2, 8, 2, 25, 37, 32, 32, 8, enable_gqa=True,
        attn_mask=lambda r: _t((np.arange(37)[None, :] < np.array([37, 20])[:, None])[:, None, None, :]))
    add("s09", "GQA 6:1 is_causal Sq=Sk=48", 1, 6, 1, 48, 48, 16, 16, 9, enable_gqa=True, is_causal=True)
    add("s10", "MQA decode Sq=1 Sk=129 D=64 scale=0.37", 2, 4, 1, 1, 129, 64, 64, 10, enable_gqa=True, scale=0.37)
    add("s11", "GQA 2:1 D=24 Dv=40 float mask (B,Hq,L,S)", 1, 4, 2, 20, 24, 24, 40, 11, enable_gqa=True,
        attn_mask=lambda r: _t(0.5 * r.standard_normal((1, 4, 20, 24))))
    add("s12", "is_causal one key Sq=5 Sk=1 D=8 scale=1", 1, 1, 1, 5, 1, 8, 8, 12, is_causal=True, scale=1.0)
    add("s13", "bool mask (1,1,L,S) scale=0.5", 1, 2, 2, 16, 16, 16, 16, 13, scale=0.5,
        attn_mask=lambda r: _t(r.random((1, 1, 16, 16)) < 0.8))
    add("s14", "is_causal decode Sq=1 Sk=20", 1, 2, 2, 1, 20, 32, 32, 14, is_causal=True)
    return cases


def flash_cases():
    cases = []

    def add(cid, desc, b, sq, sk, hq, hkv, d, dv, seed, **kw):
        r = _rng(200 + seed)
        args = dict(q=_t(_arr(r, b, sq, hq, d)), k=_t(_arr(r, b, sk, hkv, d)), v=_t(_arr(r, b, sk, hkv, dv)))
        if kw.get("alibi_slopes") == "h":
            kw["alibi_slopes"] = torch.tensor(2.0 ** (-8.0 * (np.arange(hq) + 1) / hq), dtype=torch.float32)
        elif kw.get("alibi_slopes") == "bh":
            kw["alibi_slopes"] = torch.tensor(r.uniform(0.05, 0.6, (b, hq)), dtype=torch.float32)
        args.update(kw)
        cases.append((cid, desc, args))

    add("f01", "no mask Sq=Sk=32", 2, 32, 32, 4, 4, 32, 32, 1)
    add("f02", "causal Sq=20 < Sk=50 D=16 Dv=24", 1, 20, 50, 2, 2, 16, 24, 2, causal=True)
    add("f03", "causal Sq=60 > Sk=40 GQA 2:1", 2, 60, 40, 2, 1, 24, 24, 3, causal=True)
    add("f04", "causal Sq=Sk=64 D=64 scale=0.3", 1, 64, 64, 3, 3, 64, 64, 4, causal=True, softmax_scale=0.3)
    add("f05", "window (16,-1) GQA 2:1", 2, 48, 80, 4, 2, 32, 32, 5, window_size=(16, -1))
    add("f06", "window (-1,5)", 1, 40, 40, 2, 2, 16, 16, 6, window_size=(-1, 5))
    add("f07", "window (10,3) Sq=50 > Sk=30", 1, 50, 30, 2, 2, 32, 32, 7, window_size=(10, 3))
    add("f08", "window (0,4) D=16 Dv=8", 2, 33, 33, 4, 4, 16, 8, 8, window_size=(0, 4))
    add("f09", "window (8,8) + ALiBi (Hq,)", 1, 45, 45, 4, 4, 32, 32, 9, window_size=(8, 8), alibi_slopes="h")
    add("f10", "causal + window (20,-1) Sq=24 < Sk=70 GQA 2:1", 2, 24, 70, 4, 2, 32, 32, 10, causal=True,
        window_size=(20, -1))
    add("f11", "causal + window (6,-1) Sq=70 > Sk=24", 1, 70, 24, 2, 2, 16, 16, 11, causal=True, window_size=(6, -1))
    add("f12", "softcap 5, scale 0.37", 2, 30, 30, 2, 2, 32, 32, 12, softcap=5.0, softmax_scale=0.37)
    add("f13", "softcap 3 + causal + ALiBi (Hq,)", 1, 36, 36, 4, 4, 32, 32, 13, softcap=3.0, causal=True,
        alibi_slopes="h")
    add("f14", "ALiBi (B,Hq) non-causal D=24", 2, 28, 28, 4, 4, 24, 24, 14, alibi_slopes="bh")
    add("f15", "decode 12:2 Sq=1 Sk=129 D=64 ALiBi", 1, 1, 129, 12, 2, 64, 64, 15, alibi_slopes="h")
    add("f16", "MQA decode 8:1 causal Sq=1 Sk=100", 2, 1, 100, 8, 1, 64, 64, 16, causal=True)
    add("f17", "one key Sq=9 Sk=1 D=8", 1, 9, 1, 2, 2, 8, 8, 17)
    add("f18", "causal Sq=Sk=1", 1, 1, 1, 1, 1, 8, 8, 18, causal=True)
    return cases


def bwd_cases():
    cases = []

    def add(cid, desc, qs, ks, vs, seed, mask=None, scale=None):
        r = _rng(300 + seed)
        q, k, v = _arr(r, *qs), _arr(r, *ks), _arr(r, *vs)
        g = _arr(r, *(np.broadcast_shapes(qs[:-2], ks[:-2]) + (qs[-2], vs[-1])))
        m = mask(r) if callable(mask) else mask
        cases.append((cid, desc, dict(q=q, k=k, v=v, d_out=g, mask=m, scale=scale)))

    add("b01", "Sq=Sk=32 D=32 no mask", (2, 2, 32, 32), (2, 2, 32, 32), (2, 2, 32, 32), 1)

    def m02(r):
        m = r.random((1, 3, 20, 45)) < 0.6
        m[0, 2, 4, :] = False
        return m
    add("b02", "Sq=20 Sk=45 D=16 Dv=24 random mask, fully masked row", (1, 3, 20, 16), (1, 3, 45, 16),
        (1, 3, 45, 24), 2, m02)
    add("b03", "Sq=50 > Sk=30 D=24 bottom-right causal (early rows empty)", (2, 2, 50, 24), (2, 2, 30, 24),
        (2, 2, 30, 24), 3, np.arange(30)[None, :] <= np.arange(50)[:, None] - 20)
    add("b04", "broadcast kv head axis 1 vs 4 heads, D=32 Dv=40, right padding", (1, 4, 40, 32), (1, 1, 40, 32),
        (1, 1, 40, 40), 4, (np.arange(40) < 30)[None, None, None, :])
    add("b05", "2-D Sq=Sk=24 D=8", (24, 8), (24, 8), (24, 8), 5)
    add("b06", "Sq=Sk=64 D=64 Dv=48 band mask scale=0.5", (2, 1, 64, 64), (2, 1, 64, 64), (2, 1, 64, 48), 6,
        np.abs(np.arange(64)[:, None] - np.arange(64)[None, :]) <= 12, 0.5)
    add("b07", "decode Sq=1 Sk=77 D=40", (1, 2, 1, 40), (1, 2, 77, 40), (1, 2, 77, 40), 7)
    add("b08", "one key Sq=17 Sk=1 D=16", (1, 1, 17, 16), (1, 1, 1, 16), (1, 1, 1, 16), 8)

    def m09(r):
        m = r.random((2, 2, 48, 48)) < 0.7
        m[..., 0] = True
        return m
    add("b09", "Sq=Sk=48 D=32 random mask scale=0.37", (2, 2, 48, 32), (2, 2, 48, 32), (2, 2, 48, 32), 9, m09, 0.37)
    return cases


CASES = {"refimpl": numpy_cases, "torch-sdpa": sdpa_cases, "flash-attn": flash_cases, "numpy-backward": bwd_cases}


# ----------------------------------------------------------------------------------------------------------------
# running and judging
# ----------------------------------------------------------------------------------------------------------------
def _cast(args, dtype):
    out = {}
    for key, val in args.items():
        if isinstance(val, np.ndarray) and val.dtype == np.float64:
            out[key] = val.astype(dtype)
        elif isinstance(val, torch.Tensor) and val.dtype == torch.float64:
            out[key] = val.to(torch.float32 if dtype == np.float32 else torch.float64)
        else:
            out[key] = val
    return out


def _copy(args):
    return {key: (val.copy() if isinstance(val, np.ndarray) else val.clone() if isinstance(val, torch.Tensor)
                  else val) for key, val in args.items()}


def _same(a, b):
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))
    return True


def reference(api, args):
    if api == "refimpl":
        return [ref_attention(args["q"], args["k"], args["v"], args["mask"], args["scale"])]
    if api == "torch-sdpa":
        return [ref_sdpa(**args)]
    if api == "flash-attn":
        return [ref_flash(**args)]
    return list(ref_backward(**args))


def _as_np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def rel_error(outs, refs, want_dtype):
    """Worst Frobenius relative error over the returned arrays; inf for non-finite, wrong shape or wrong dtype."""
    if not isinstance(outs, (list, tuple)):
        outs = [outs]
    if len(outs) != len(refs):
        return math.inf
    # a gradient that is zero in theory (e.g. dq with one key) is judged against 1% of the case's largest norm
    floor = 1e-2 * max(np.linalg.norm(r) for r in refs)
    worst = 0.0
    for o, r in zip(outs, refs):
        dtype_ok = (o.dtype == want_dtype) if isinstance(o, np.ndarray) else (
            isinstance(o, torch.Tensor) and o.dtype == (torch.float32 if want_dtype == np.float32 else torch.float64))
        o = _as_np(o)
        if not dtype_ok or o.shape != r.shape or not np.all(np.isfinite(o)):
            return math.inf
        den = max(np.linalg.norm(r), floor)
        num = np.linalg.norm(o.astype(np.float64) - r)
        worst = max(worst, num / den if den > 0 else (0.0 if num == 0 else math.inf))
    return worst


def run_kernel(fn, api, args, dtype):
    """Two calls with fresh copies; returns the worse error and whether the inputs were left unmodified."""
    cast = _cast(args, dtype)
    refs = reference(api, cast)
    worst, untouched = 0.0, True
    for _ in range(2):
        call = _copy(cast)
        try:
            if api == "refimpl":
                out = fn(call["q"], call["k"], call["v"], mask=call["mask"], scale=call["scale"])
            elif api == "numpy-backward":
                out = fn(call["q"], call["k"], call["v"], call["d_out"], mask=call["mask"], scale=call["scale"])
            else:
                out = fn(**call)
            err = rel_error(out, refs, dtype)
        except Exception:  # an exception counts as a difference
            err = math.inf
        worst = max(worst, err)
        untouched = untouched and all(_same(cast[key], call[key]) for key in cast)
    return worst, untouched


def cross_check():
    """sdpa/flash references against the NumPy one with explicit masks; backward against torch autograd."""
    worst = 0.0
    r = _rng(999)
    q, k, v = _arr(r, 2, 3, 9, 8), _arr(r, 2, 3, 13, 8), _arr(r, 2, 3, 13, 6)
    tq, tk, tv = _t(q), _t(k), _t(v)
    tl = np.arange(13)[None, :] <= np.arange(9)[:, None]
    br = np.arange(13)[None, :] <= np.arange(9)[:, None] + 4
    worst = max(worst, np.abs(ref_sdpa(tq, tk, tv, is_causal=True) - ref_attention(q, k, v, tl)).max())
    add = np.where(br, 0.0, -np.inf)
    worst = max(worst, np.abs(ref_sdpa(tq, tk, tv, attn_mask=_t(add)) - ref_attention(q, k, v, br)).max())
    fq, fk, fv = (x.transpose(1, 2) for x in (tq, tk, tv))
    got = ref_flash(fq, fk, fv, causal=True).transpose(0, 2, 1, 3)
    worst = max(worst, np.abs(got - ref_attention(q, k, v, br)).max())
    band = br & (np.arange(13)[None, :] >= np.arange(9)[:, None] + 4 - 3)
    got = ref_flash(fq, fk, fv, causal=True, window_size=(3, -1)).transpose(0, 2, 1, 3)
    worst = max(worst, np.abs(got - ref_attention(q, k, v, band)).max())
    for _, _, args in bwd_cases():
        a = ref_backward(**args)
        b = autograd_backward(**args)
        top = max(np.abs(y).max() for y in b)
        worst = max(worst, max(np.abs(x - y).max() / top for x, y in zip(a, b)))
    return worst


def check_sources(problems):
    """Exactly one `# BUG:` per broken kernel's section, none in correct kernels or outside sections."""
    for fname, mod, _ in MODULES:
        text = open(os.path.join(HERE, fname)).read()
        parts = re.split(r"^# --- kernel: (\w+) ---$", text, flags=re.M)
        if parts[0].count("# BUG:"):
            problems.append(f"{fname}: '# BUG:' outside a kernel section")
        sections = dict(zip(parts[1::2], parts[2::2]))
        for entry in mod.CATALOG:
            n = sections.get(entry["fn"], "").count("# BUG:")
            if entry["fn"] not in sections:
                problems.append(f"{fname}: no section for {entry['fn']}")
            elif n != (0 if entry["correct"] else 1):
                problems.append(f"{fname}: {entry['fn']} has {n} '# BUG:' comments")
        extra = set(sections) - {e["fn"] for e in mod.CATALOG}
        if extra:
            problems.append(f"{fname}: sections without a CATALOG entry: {sorted(extra)}")


def check_catalog(problems):
    keys = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
    names, sources = set(), set()
    for fname, mod, api in MODULES:
        broken = [e for e in mod.CATALOG if not e["correct"]]
        good = [e for e in mod.CATALOG if e["correct"]]
        if len(broken) < 6 or len(good) < 2:
            problems.append(f"{fname}: {len(broken)} broken / {len(good)} correct")
        for e in mod.CATALOG:
            if set(e) != keys:
                problems.append(f"{fname}: {e.get('name')} keys {sorted(set(e) ^ keys)}")
                continue
            if e["name"] in names:
                problems.append(f"duplicate name {e['name']}")
            names.add(e["name"])
            if e["api"] != api or not callable(getattr(mod, e["fn"], None)):
                problems.append(f"{e['name']}: api/fn")
            if not set(e["features"]) <= FEATURES[api]:
                problems.append(f"{e['name']}: features {e['features']}")
            if e["dtype"] not in ("float64", "float32"):
                problems.append(f"{e['name']}: dtype {e['dtype']}")
            if e["correct"]:
                if any(e[x] is not None for x in ("bug", "parameter", "source", "report")) or e["name"] in TRIGGERS:
                    problems.append(f"{e['name']}: correct kernel with bug fields or TRIGGERS")
                continue
            if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or ""):
                problems.append(f"{e['name']}: bug not kebab-case")
            if "Triggers:" not in (e["parameter"] or ""):
                problems.append(f"{e['name']}: no 'Triggers:' in parameter")
            m = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", e["source"] or "")
            if not m or not re.fullmatch(r"https://github\.com/" + re.escape(m.group(1)) + r"/(issues|pull)/"
                                         + m.group(2), e["report"] or ""):
                problems.append(f"{e['name']}: source/report disagree")
            if e["source"] in sources:
                problems.append(f"duplicate source {e['source']}")
            sources.add(e["source"])
            if e["name"] not in TRIGGERS:
                problems.append(f"{e['name']}: no TRIGGERS entry")
    for name in TRIGGERS:
        if name not in names:
            problems.append(f"TRIGGERS entry without a kernel: {name}")


def main():
    t0 = time.time()
    problems = []
    xc = cross_check()
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          f"worst {xc:.2g}")
    if not xc < 1e-12:
        problems.append(f"reference cross-check {xc:.3g}")
    check_catalog(problems)
    check_sources(problems)
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    summary = []
    for fname, mod, api in MODULES:
        print(f"{fname} ({api})")
        cases = CASES[api]()
        ids = [c[0] for c in cases]
        nb = ng = 0
        for e in mod.CATALOG:
            fn = getattr(mod, e["fn"])
            want = set(TRIGGERS.get(e["name"], []))
            if not want <= set(ids):
                problems.append(f"{e['name']}: TRIGGERS name unknown cases {sorted(want - set(ids))}")
            worst = {"float64": 0.0, "float32": 0.0}
            differs = []
            for cid, _, args in cases:
                for dname, dtype in (("float64", np.float64), ("float32", np.float32)):
                    err, untouched = run_kernel(fn, api, args, dtype)
                    worst[dname] = max(worst[dname], err)
                    if not untouched:
                        problems.append(f"{e['name']} {cid} {dname}: inputs modified")
                    if e["correct"] or cid not in want:
                        if not err <= OK_BOUND[dname]:
                            problems.append(f"{e['name']} {cid} {dname}: error {err:.3g} (should conform)")
                    if not e["correct"] and dname == e["dtype"] and err > DIFF_BOUND[dname]:
                        differs.append(cid)
            if e["correct"]:
                ng += 1
            else:
                nb += 1
                if differs != [c for c in ids if c in want]:
                    problems.append(f"{e['name']}: differs on {differs}, TRIGGERS {sorted(want)}")
            print(f"  {e['name']:<44} {'ok    ' if e['correct'] else 'broken'} f64 {worst['float64']:<9.3g} "
                  f"f32 {worst['float32']:.3g}")
        summary.append(f"{fname[:-3]} {nb} broken + {ng} correct")
    dt = time.time() - t0
    if problems:
        print(f"SELF-CHECK FAILED ({dt:.1f} s): {len(problems)} problem(s)")
        for p in problems:
            print("  - " + p)
        return 1
    print(f"SELF-CHECK PASSED ({dt:.1f} s): " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
