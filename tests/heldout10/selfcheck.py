"""Self-check of the heldout10 kernels against float64 references written from the contracts in README.md.

Run: /work/main/.venv/bin/python tests/heldout10/selfcheck.py   (exit status 1 on any problem)
"""
import importlib.util
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
FILES = [("numpy_fwd.py", "refimpl"), ("torch_sdpa_fwd.py", "torch-sdpa"), ("flash_fwd.py", "flash-attn"),
         ("numpy_bwd.py", "numpy-backward")]
FEATURES = {
    "refimpl": {"mask", "dv-ne-d"},
    "torch-sdpa": {"mask", "causal", "gqa", "dv-ne-d"},
    "flash-attn": {"causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"},
    "numpy-backward": {"mask", "dv-ne-d"},
}
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)


def load(fname):
    spec = importlib.util.spec_from_file_location("h10_" + fname[:-3], HERE / fname)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ----------------------------------------------------------------------------------------------------------------
# float64 references
# ----------------------------------------------------------------------------------------------------------------
def ref_attention(q, k, v, keep=None, scale=None, bias=None):
    """softmax(scale q k^T + bias, masked by keep) v in float64; rows with no key -> 0. Broadcasting NumPy."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    alive = np.isfinite(m)
    m = np.where(alive, m, 0.0)
    e = np.exp(s - m)
    z = np.sum(e, axis=-1, keepdims=True)
    p = np.where(alive, e / np.where(z > 0, z, 1.0), 0.0)
    return np.matmul(p, v)


def ref_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (x.detach().double().numpy() for x in (q, k, v))
    if enable_gqa and k.shape[1] != q.shape[1]:
        g = q.shape[1] // k.shape[1]
        k = np.repeat(k, g, axis=1)
        v = np.repeat(v, g, axis=1)
    L, S = q.shape[-2], k.shape[-2]
    keep = np.ones((L, S), dtype=bool)
    if is_causal:
        keep &= np.arange(S)[None, :] <= np.arange(L)[:, None]
    bias = None
    if attn_mask is not None:
        m = attn_mask.detach().numpy()
        if m.dtype == bool:
            keep = keep & m
        else:
            bias = m.astype(np.float64)
    return ref_attention(q, k, v, keep, scale, bias)


def flash_keep(sq, sk, causal, window):
    left, right = window
    if causal:
        right = 0
    row = np.arange(sq)[:, None] + (sk - sq)
    col = np.arange(sk)[None, :]
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= col >= row - left
    if right >= 0:
        keep &= col <= row + right
    return keep


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (x.detach().double().numpy().transpose(0, 2, 1, 3) for x in (q, k, v))
    g = q.shape[1] // k.shape[1]
    k = np.repeat(k, g, axis=1)
    v = np.repeat(v, g, axis=1)
    sq, sk = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy()
        if sl.ndim == 1:
            sl = sl[None]
        dist = np.abs(np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :])
        s = s - sl[:, :, None, None] * dist
    out = ref_attention(q, k, v, flash_keep(sq, sk, causal, window_size), 1.0, s - np.matmul(
        q, np.swapaxes(k, -1, -2)))
    return out.transpose(0, 2, 1, 3)


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, d_out = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    alive = np.isfinite(m)
    e = np.exp(s - np.where(alive, m, 0.0))
    p = np.where(alive, e / np.where(alive, np.sum(e, axis=-1, keepdims=True), 1.0), 0.0)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(p * dp, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale

    def sum_to(x, shape):
        while x.ndim > len(shape):
            x = x.sum(axis=0)
        for ax, n in enumerate(shape):
            if n == 1 and x.shape[ax] != 1:
                x = x.sum(axis=ax, keepdims=True)
        return x
    return dq, sum_to(dk, k.shape), sum_to(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    qt, kt, vt = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    s = torch.matmul(qt, kt.transpose(-1, -2)) * scale
    keep = torch.ones(s.shape, dtype=torch.bool) if mask is None else torch.tensor(np.broadcast_to(mask, s.shape))
    s = s.masked_fill(~keep, -1e300)
    alive = keep.any(dim=-1, keepdim=True)
    p = torch.softmax(s, dim=-1) * alive
    o = torch.matmul(p, vt)
    (o * torch.tensor(np.asarray(d_out, dtype=np.float64))).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------------------------
def rng_for(name):
    return np.random.default_rng(sum(map(ord, name)) * 7919 + len(name))


def pad_mask(lens, sk):
    return (np.arange(sk)[None, :] < np.asarray(lens)[:, None])[:, None, None, :]


def band(sq, sk, left):
    row = np.arange(sq)[:, None] + (sk - sq)
    col = np.arange(sk)[None, :]
    return (col <= row) & (col >= row - left)


def np_cases():
    c = {}

    def add(name, qs, ks, vs, mask=None, scale=None):
        r = rng_for(name)
        c[name] = dict(q=r.standard_normal(qs), k=r.standard_normal(ks), v=r.standard_normal(vs),
                       mask=mask(r) if callable(mask) else mask, scale=scale)
    add("np-2d", (37, 24), (45, 24), (45, 20))
    add("np-3d-random-mask", (3, 50, 16), (3, 61, 16), (3, 61, 12),
        mask=lambda r: np.concatenate([r.random((3, 49, 61)) < 0.7, np.zeros((3, 1, 61), bool)], axis=1), scale=0.3)
    add("np-4d-key-padding", (2, 3, 40, 32), (2, 3, 40, 32), (2, 3, 40, 16), mask=pad_mask([29, 13], 40))
    add("np-4d-key-padding-sq-ne-sk", (2, 3, 20, 32), (2, 3, 53, 32), (2, 3, 53, 16), mask=pad_mask([41, 0], 53))
    add("np-4d-causal", (2, 2, 64, 16), (2, 2, 64, 16), (2, 2, 64, 24), mask=np.tril(np.ones((64, 64), bool)))
    add("np-3d-band-per-head", (2, 90, 8), (2, 100, 8), (2, 100, 40),
        mask=np.stack([band(90, 100, 20), band(90, 100, 5)]), scale=0.5)
    add("np-4d-decode-padding", (2, 4, 1, 64), (2, 4, 129, 64), (2, 4, 129, 64), mask=pad_mask([129, 77], 129))
    add("np-3d-dv-gt-d", (2, 30, 32), (2, 35, 32), (2, 35, 48), scale=0.5)
    return c


def sd_cases():
    c = {}

    def add(name, B, Hq, Hkv, L, S, E, Ev, mask=None, is_causal=False, scale=None, gqa=False):
        r = rng_for(name)
        m = mask(r) if callable(mask) else mask
        c[name] = dict(query=r.standard_normal((B, Hq, L, E)), key=r.standard_normal((B, Hkv, S, E)),
                       value=r.standard_normal((B, Hkv, S, Ev)), attn_mask=m, is_causal=is_causal, scale=scale,
                       enable_gqa=gqa)
    add("sd-plain-dv-ne-d", 2, 3, 3, 40, 40, 16, 24)
    add("sd-causal-sq-lt-sk", 2, 2, 2, 30, 70, 32, 32, is_causal=True)
    add("sd-causal-sq-gt-sk", 1, 2, 2, 70, 30, 32, 32, is_causal=True)
    add("sd-causal-square-d64", 1, 2, 2, 64, 64, 64, 64, is_causal=True)
    add("sd-bool-mask-dead-row", 2, 2, 2, 36, 41, 16, 16,
        mask=lambda r: np.concatenate([r.random((2, 1, 35, 41)) < 0.6, np.zeros((2, 1, 1, 41), bool)], axis=2))
    add("sd-additive-mask-scale", 2, 2, 2, 33, 47, 16, 20,
        mask=lambda r: np.where(r.random((2, 2, 33, 47)) < 0.2, -np.inf, r.standard_normal((2, 2, 33, 47))),
        scale=0.37)
    add("sd-gqa-4-causal", 1, 8, 2, 50, 50, 16, 16, is_causal=True, gqa=True)
    add("sd-gqa-2-of-3", 2, 6, 3, 45, 45, 16, 16, gqa=True)
    add("sd-mqa", 1, 4, 1, 39, 39, 16, 16, is_causal=True, gqa=True)
    add("sd-band-mask-sk100", 1, 2, 2, 100, 100, 16, 16, mask=band(100, 100, 20))
    add("sd-left-padding", 2, 2, 2, 48, 83, 16, 16,
        mask=(np.arange(83)[None, :] >= np.array([40, 3])[:, None])[:, None, None, :])
    add("sd-decode-gqa", 2, 12, 2, 1, 129, 32, 32, gqa=True)
    add("sd-mask-scale1", 1, 2, 2, 30, 30, 8, 8, mask=lambda r: r.random((30, 30)) < 0.8, scale=1.0)
    return c


def fl_cases():
    c = {}

    def add(name, B, Hq, Hkv, Sq, Sk, D, Dv, **kw):
        r = rng_for(name)
        al = kw.pop("alibi", None)
        if al == "h":
            kw["alibi_slopes"] = torch.tensor(r.random(Hq) * 0.5 + 0.05, dtype=torch.float32)
        elif al == "bh":
            kw["alibi_slopes"] = torch.tensor(r.random((B, Hq)) * 0.5 + 0.05, dtype=torch.float32)
        c[name] = dict(q=r.standard_normal((B, Sq, Hq, D)), k=r.standard_normal((B, Sk, Hkv, D)),
                       v=r.standard_normal((B, Sk, Hkv, Dv)), **kw)
    add("fl-plain", 2, 4, 4, 48, 48, 32, 32)
    add("fl-dv-ne-d", 1, 2, 2, 35, 50, 16, 40)
    add("fl-causal-sq-lt-sk", 2, 2, 2, 20, 77, 32, 32, causal=True)
    add("fl-causal-sq-gt-sk", 1, 2, 2, 60, 30, 32, 32, causal=True)
    add("fl-causal-gqa4", 1, 8, 2, 64, 64, 16, 16, causal=True)
    add("fl-window-left16", 1, 2, 2, 70, 70, 16, 16, window_size=(16, -1))
    add("fl-window-right5", 1, 2, 2, 60, 60, 16, 16, window_size=(-1, 5))
    add("fl-window-10-3-sq-gt-sk", 1, 2, 2, 83, 60, 16, 16, window_size=(10, 3))
    add("fl-causal-window20-sq-lt-sk", 1, 2, 2, 40, 100, 16, 16, causal=True, window_size=(20, -1))
    add("fl-softcap-scale", 1, 2, 2, 50, 50, 32, 32, softcap=5.0, softmax_scale=0.5)
    add("fl-softcap-causal-alibi", 2, 4, 2, 30, 45, 16, 16, softcap=3.0, causal=True, alibi="h")
    add("fl-alibi-bh", 2, 3, 3, 40, 40, 16, 16, alibi="bh")
    add("fl-alibi-gqa-sq-ne-sk", 1, 6, 3, 25, 61, 16, 16, alibi="h")
    add("fl-alibi-causal-decode", 2, 4, 4, 1, 90, 16, 16, causal=True, alibi="bh")
    add("fl-decode-gqa", 2, 10, 2, 1, 129, 64, 64, causal=True)
    add("fl-mqa-causal", 1, 4, 1, 36, 36, 16, 16, causal=True)
    return c


def bw_cases():
    c = {}

    def add(name, qs, ks, vs, mask=None, scale=None):
        r = rng_for(name)
        lead = np.broadcast_shapes(qs[:-2], ks[:-2])
        c[name] = dict(q=r.standard_normal(qs), k=r.standard_normal(ks), v=r.standard_normal(vs),
                       d_out=r.standard_normal(lead + (qs[-2], vs[-1])), mask=mask(r) if callable(mask) else mask,
                       scale=scale)
    add("bw-2d", (37, 24), (45, 24), (45, 20))
    add("bw-3d-random-mask", (3, 50, 16), (3, 61, 16), (3, 61, 12),
        mask=lambda r: np.concatenate([r.random((3, 49, 61)) < 0.7, np.zeros((3, 1, 61), bool)], axis=1), scale=0.3)
    add("bw-4d-causal", (2, 3, 64, 16), (2, 3, 64, 16), (2, 3, 64, 16), mask=np.tril(np.ones((64, 64), bool)))
    add("bw-4d-key-padding", (2, 2, 33, 32), (2, 2, 53, 32), (2, 2, 53, 16), mask=pad_mask([41, 0], 53))
    add("bw-mqa-causal", (2, 4, 40, 32), (2, 1, 40, 32), (2, 1, 40, 16), mask=np.tril(np.ones((40, 40), bool)))
    add("bw-4d-dv-gt-d", (1, 2, 30, 16), (1, 2, 45, 16), (1, 2, 45, 48), scale=0.5)
    return c


TRIGGERS = {
    "np-transformer-pad-mask-query-axis": ["np-4d-key-padding", "np-4d-key-padding-sq-ne-sk", "np-4d-decode-padding"],
    "np-vit-softmax-query-axis": ["np-2d", "np-3d-random-mask", "np-4d-causal"],
    "np-skainet-scale-sentinel-zero": ["np-2d", "np-4d-causal", "np-4d-key-padding"],
    "np-depthcharge-bool-mask-added": ["np-3d-random-mask", "np-4d-causal", "np-3d-band-per-head"],
    "np-sd-half-precision-sim": ["np-2d", "np-4d-causal", "np-3d-dv-gt-d"],
    "np-keras-values-reshaped-dk": ["np-2d", "np-3d-random-mask", "np-3d-dv-gt-d"],
    "sdpa-nntile-kv-head-order": ["sd-gqa-4-causal", "sd-gqa-2-of-3", "sd-decode-gqa"],
    "sdpa-ort-causal-bottom-right": ["sd-causal-sq-lt-sk", "sd-causal-sq-gt-sk"],
    "sdpa-mlc-fallback-unscaled": ["sd-bool-mask-dead-row", "sd-additive-mask-scale", "sd-band-mask-sk100"],
    "sdpa-executorch-masked-block-nan": ["sd-band-mask-sk100", "sd-left-padding"],
    "sdpa-flydsl-probs-bf16": ["sd-plain-dv-ne-d", "sd-causal-square-d64", "sd-gqa-2-of-3"],
    "sdpa-coreai-scale-from-value-dim": ["sd-plain-dv-ne-d"],
    "flash-onnx-causal-upper-left": ["fl-causal-sq-lt-sk", "fl-causal-sq-gt-sk", "fl-decode-gqa"],
    "flash-jax-window-right-dropped": ["fl-window-right5", "fl-window-10-3-sq-gt-sk"],
    "flash-aiter-empty-split-nan": ["fl-causal-gqa4", "fl-window-left16", "fl-causal-sq-gt-sk"],
    "flash-fa4-softcap-scores-times-tanh": ["fl-softcap-scale", "fl-softcap-causal-alibi"],
    "flash-te-alibi-chunk-offset": ["fl-alibi-gqa-sq-ne-sk", "fl-alibi-causal-decode", "fl-softcap-causal-alibi"],
    "flash-sglang-window-causal-only": ["fl-window-left16", "fl-window-right5", "fl-window-10-3-sq-gt-sk"],
    "bwd-cudnn-fp16-score-recompute": ["bw-2d", "bw-4d-causal", "bw-mqa-causal"],
    "bwd-flagattn-delta-layout": ["bw-4d-causal", "bw-4d-key-padding", "bw-4d-dv-gt-d"],
    "bwd-te-dq-batch-stride-zero": ["bw-3d-random-mask", "bw-4d-causal", "bw-mqa-causal"],
    "bwd-diffusers-ring-stale-kv": ["bw-2d", "bw-4d-causal", "bw-4d-dv-gt-d"],
    "bwd-megatron-mqa-kv-unreduced": ["bw-mqa-causal"],
    "bwd-aiter-p-without-mask": ["bw-3d-random-mask", "bw-4d-causal", "bw-4d-key-padding"],
}


# ----------------------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------------------
def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return math.inf
    if not np.all(np.isfinite(out)):
        return math.inf
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


def cast_np(case, dt):
    return {k: (x.astype(dt) if isinstance(x, np.ndarray) and x.dtype == np.float64 else x) for k, x in case.items()}


def run_np(fn, case, dt):
    """Returns (err, dtype/shape ok, inputs unmodified) for a refimpl kernel; the float32 reference uses the
    rounded inputs."""
    c = cast_np(case, dt)
    ref = ref_attention(c["q"], c["k"], c["v"], c["mask"], c["scale"])
    worst, ok_meta, untouched = 0.0, True, True
    for _ in range(2):
        args = {k: (x.copy() if isinstance(x, np.ndarray) else x) for k, x in c.items()}
        try:
            out = fn(args["q"], args["k"], args["v"], mask=args["mask"], scale=args["scale"])
            e = rel_err(out, ref)
            if not isinstance(out, np.ndarray) or out.dtype != c["q"].dtype or out.shape != ref.shape:
                ok_meta, e = False, math.inf
        except Exception:
            e = math.inf
        for k, x in c.items():
            if isinstance(x, np.ndarray) and not np.array_equal(x, args[k]):
                untouched = False
        worst = max(worst, e)
    return worst, ok_meta, untouched


def run_sdpa(fn, case, dt):
    tdt = torch.float64 if dt == np.float64 else torch.float32
    t = {k: torch.tensor(case[k]).to(tdt) for k in ("query", "key", "value")}
    m = case["attn_mask"]
    if m is not None:
        m = torch.tensor(m) if m.dtype == bool else torch.tensor(m).to(tdt)
    ref = ref_sdpa(t["query"], t["key"], t["value"], m, case["is_causal"], case["scale"], case["enable_gqa"])
    worst, ok_meta, untouched = 0.0, True, True
    for _ in range(2):
        a = {k: x.clone() for k, x in t.items()}
        am = None if m is None else m.clone()
        try:
            out = fn(a["query"], a["key"], a["value"], attn_mask=am, dropout_p=0.0, is_causal=case["is_causal"],
                     scale=case["scale"], enable_gqa=case["enable_gqa"])
            if out.dtype != tdt or tuple(out.shape) != ref.shape:
                ok_meta, e = False, math.inf
            else:
                e = rel_err(out.detach().numpy(), ref)
        except Exception:
            e = math.inf
        if not all(torch.equal(t[k], a[k]) for k in t) or (m is not None and not torch.equal(m, am)):
            untouched = False
        worst = max(worst, e)
    return worst, ok_meta, untouched


def run_flash(fn, case, dt):
    tdt = torch.float64 if dt == np.float64 else torch.float32
    t = {k: torch.tensor(case[k]).to(tdt) for k in ("q", "k", "v")}
    kw = {k: x for k, x in case.items() if k not in ("q", "k", "v")}
    ref = ref_flash(t["q"], t["k"], t["v"], **kw)
    worst, ok_meta, untouched = 0.0, True, True
    for _ in range(2):
        a = {k: x.clone() for k, x in t.items()}
        kw2 = {k: (x.clone() if torch.is_tensor(x) else x) for k, x in kw.items()}
        try:
            out = fn(a["q"], a["k"], a["v"], **kw2)
            if out.dtype != tdt or tuple(out.shape) != ref.shape:
                ok_meta, e = False, math.inf
            else:
                e = rel_err(out.detach().numpy(), ref)
        except Exception:
            e = math.inf
        if not all(torch.equal(t[k], a[k]) for k in t):
            untouched = False
        if "alibi_slopes" in kw and not torch.equal(kw["alibi_slopes"], kw2["alibi_slopes"]):
            untouched = False
        worst = max(worst, e)
    return worst, ok_meta, untouched


def run_bwd(fn, case, dt):
    c = cast_np(case, dt)
    refs = ref_bwd(c["q"], c["k"], c["v"], c["d_out"], c["mask"], c["scale"])
    worst, ok_meta, untouched = 0.0, True, True
    for _ in range(2):
        args = {k: (x.copy() if isinstance(x, np.ndarray) else x) for k, x in c.items()}
        try:
            outs = fn(args["q"], args["k"], args["v"], args["d_out"], mask=args["mask"], scale=args["scale"])
            e = 0.0
            for o, r, src in zip(outs, refs, (c["q"], c["k"], c["v"])):
                if not isinstance(o, np.ndarray) or o.dtype != src.dtype or o.shape != src.shape:
                    ok_meta, e = False, math.inf
                else:
                    e = max(e, rel_err(o, r))
        except Exception:
            e = math.inf
        for k, x in c.items():
            if isinstance(x, np.ndarray) and not np.array_equal(x, args[k]):
                untouched = False
        worst = max(worst, e)
    return worst, ok_meta, untouched


def cross_check():
    """References against each other (explicit masks) and the backward against torch autograd."""
    worst = 0.0
    r = np.random.default_rng(5)
    q, k, v = r.standard_normal((2, 3, 20, 8)), r.standard_normal((2, 3, 31, 8)), r.standard_normal((2, 3, 31, 6))
    tq, tk, tv = (torch.tensor(x) for x in (q, k, v))
    tl = np.tril(np.ones((20, 31), bool))
    worst = max(worst, rel_err(ref_sdpa(tq, tk, tv, is_causal=True), ref_attention(q, k, v, tl)))
    add = np.where(tl, 0.0, -np.inf)
    worst = max(worst, rel_err(ref_sdpa(tq, tk, tv, attn_mask=torch.tensor(add)), ref_attention(q, k, v, tl)))
    fq, fk, fv = (torch.tensor(x.transpose(0, 2, 1, 3)) for x in (q, k, v))
    br = np.arange(31)[None, :] <= np.arange(20)[:, None] + 11
    worst = max(worst, rel_err(ref_flash(fq, fk, fv, causal=True),
                               ref_attention(q, k, v, br).transpose(0, 2, 1, 3)))
    bw = br & (np.arange(31)[None, :] >= np.arange(20)[:, None] + 11 - 7)
    worst = max(worst, rel_err(ref_flash(fq, fk, fv, causal=True, window_size=(7, -1)),
                               ref_attention(q, k, v, bw).transpose(0, 2, 1, 3)))
    for case in bw_cases().values():
        a = ref_bwd(case["q"], case["k"], case["v"], case["d_out"], case["mask"], case["scale"])
        b = autograd_bwd(case["q"], case["k"], case["v"], case["d_out"], case["mask"], case["scale"])
        for x, y in zip(a, b):
            worst = max(worst, rel_err(x, y))
    return worst


def bug_sections(path, fns):
    """Count '# BUG:' comments per '# --- kernel: <fn> ---' section."""
    text = (HERE / path).read_text()
    parts = re.split(r"^# --- kernel: (\w+) ---$", text, flags=re.M)
    counts = {}
    if parts[0].count("# BUG:"):
        problem(f"{path}: '# BUG:' outside kernel sections")
    for i in range(1, len(parts), 2):
        name, body = parts[i], parts[i + 1]
        if name in counts:
            problem(f"{path}: duplicate section {name}")
        counts[name] = body.count("# BUG:")
        if f"def {name}(" not in body:
            problem(f"{path}: section {name} does not define {name}")
    if set(counts) != set(fns):
        problem(f"{path}: sections {sorted(set(counts) ^ set(fns))} do not match CATALOG")
    return counts


def validate_catalog(all_entries):
    names, sources = set(), set()
    for fname, api, e in all_entries:
        if set(e) != KEYS:
            problem(f"{fname}: {e.get('name')}: keys {sorted(set(e) ^ KEYS)}")
            continue
        if e["api"] != api:
            problem(f"{e['name']}: api {e['api']} != {api}")
        if e["name"] in names:
            problem(f"duplicate name {e['name']}")
        names.add(e["name"])
        if e["dtype"] not in ("float64", "float32"):
            problem(f"{e['name']}: dtype {e['dtype']}")
        if not set(e["features"]) <= FEATURES[api]:
            problem(f"{e['name']}: features {e['features']}")
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")):
                problem(f"{e['name']}: correct kernel with bug fields")
            continue
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or ""):
            problem(f"{e['name']}: bug not kebab-case")
        if "Triggers:" not in (e["parameter"] or ""):
            problem(f"{e['name']}: parameter without 'Triggers:'")
        m = re.fullmatch(r"([\w.-]+)/([\w.-]+)#(\d+)", e["source"] or "")
        if not m:
            problem(f"{e['name']}: source {e['source']}")
            continue
        url = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)/(issues|pull)/(\d+)", e["report"] or "")
        if not url or url.group(1, 2, 4) != m.group(1, 2, 3):
            problem(f"{e['name']}: report {e['report']} does not match source {e['source']}")
        if e["source"].lower() in sources:
            problem(f"{e['name']}: report cited twice")
        sources.add(e["source"].lower())
        if e["name"] not in TRIGGERS:
            problem(f"{e['name']}: no TRIGGERS entry")


def main():
    t0 = time.time()
    runners = {"refimpl": (run_np, np_cases()), "torch-sdpa": (run_sdpa, sd_cases()),
               "flash-attn": (run_flash, fl_cases()), "numpy-backward": (run_bwd, bw_cases())}
    xc = cross_check()
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          f"worst {xc:.2g}")
    if xc > 1e-12:
        problem(f"reference cross-check {xc}")
    all_entries, summary = [], []
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    for fname, api in FILES:
        mod = load(fname)
        cat = mod.CATALOG
        all_entries += [(fname, api, e) for e in cat]
        counts = bug_sections(fname, [e["fn"] for e in cat])
        run, cases = runners[api]
        nb = sum(not e["correct"] for e in cat)
        nc = sum(bool(e["correct"]) for e in cat)
        if nb < 6 or nc < 2:
            problem(f"{fname}: {nb} broken, {nc} correct")
        summary.append(f"{fname[:-3]} {nb} broken + {nc} correct")
        print(f"{fname} ({api})")
        for e in cat:
            fn = getattr(mod, e["fn"])
            if counts.get(e["fn"], 0) != (0 if e["correct"] else 1):
                problem(f"{e['name']}: {counts.get(e['fn'])} '# BUG:' comments in its section")
            errs = {}
            for dname, dt in (("float64", np.float64), ("float32", np.float32)):
                worst = 0.0
                for cname, case in cases.items():
                    err, ok_meta, untouched = run(fn, case, dt)
                    errs[(dname, cname)] = err
                    worst = max(worst, err)
                    if not untouched:
                        problem(f"{e['name']}: modifies its inputs ({cname}, {dname})")
                    if e["correct"] and not ok_meta:
                        problem(f"{e['name']}: wrong dtype/shape ({cname}, {dname})")
                    if e["correct"] and err > (1e-10 if dname == "float64" else 1e-5):
                        problem(f"{e['name']}: correct kernel off by {err:.3g} on {cname} ({dname})")
                errs[dname] = worst
            if not e["correct"]:
                tol = 1e-8 if e["dtype"] == "float64" else 1e-4
                for cname in TRIGGERS.get(e["name"], []):
                    if cname not in cases:
                        problem(f"{e['name']}: unknown trigger case {cname}")
                    elif not errs[(e["dtype"], cname)] > tol:
                        problem(f"{e['name']}: conforms on its trigger case {cname} "
                                f"({errs[(e['dtype'], cname)]:.3g} in {e['dtype']})")
            status = "ok    " if e["correct"] else "broken"
            print(f"  {e['name']:<42} {status} f64 {errs['float64']:<9.3g} f32 {errs['float32']:.3g}")
    validate_catalog(all_entries)
    dt = time.time() - t0
    if PROBLEMS:
        for p in PROBLEMS:
            print("PROBLEM:", p)
        print(f"SELF-CHECK FAILED ({dt:.1f} s): {len(PROBLEMS)} problem(s)")
        return 1
    print(f"SELF-CHECK PASSED ({dt:.1f} s): " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
