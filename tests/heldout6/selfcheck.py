"""Self-check of the held-out kernels against float64 references written from the four API contracts.

Run: /usr/bin/python3 tests/heldout6/selfcheck.py   (exit status non-zero on any problem)
"""
import importlib
import inspect
import math
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODULES = {
    "numpy_fwd": ("refimpl", 8, 2),
    "torch_sdpa_fwd": ("torch-sdpa", 9, 2),
    "flash_fwd": ("flash-attn", 10, 3),
    "numpy_bwd": ("numpy-backward", 9, 2),
}
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}
TOL_OK = {"float64": 1e-10, "float32": 1e-5}
TOL_BUG = {"float64": 1e-8, "float32": 1e-4}

problems = []


def problem(msg):
    problems.append(msg)
    print("PROBLEM:", msg)


# ----------------------------------------------------------------------------------------------------------
# references (float64 NumPy)
def softmax_rows(s, keep):
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.where(keep, np.exp(s - m), 0.0)
    z = p.sum(axis=-1, keepdims=True)
    return np.where(z > 0, p / np.where(z > 0, z, 1.0), 0.0)


def ref_refimpl(q, k, v, mask, scale):
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
    return np.matmul(softmax_rows(s, keep), v)


def ref_bwd(q, k, v, dout, mask, scale):
    q, k, v, dout = (np.asarray(t, dtype=np.float64) for t in (q, k, v, dout))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, bool) if mask is None else np.broadcast_to(mask, s.shape)
    p = softmax_rows(s, keep)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), dout)
    dp = np.matmul(dout, np.swapaxes(v, -1, -2))
    ds = p * (dp - (dout * o).sum(-1, keepdims=True))
    dq = scale * np.matmul(ds, k)
    dk = scale * np.matmul(np.swapaxes(ds, -1, -2), q)

    def red(g, shape):
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
        return g.sum(axis=axes, keepdims=True) if axes else g
    return dq, red(dk, k.shape), red(dv, v.shape)


def autograd_bwd(q, k, v, dout, mask, scale):
    tq, tk, tv = (torch.tensor(np.asarray(t, dtype=np.float64), requires_grad=True) for t in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(tq, tk.transpose(-1, -2)) * scale
    keep = torch.ones(s.shape, dtype=torch.bool) if mask is None else torch.from_numpy(
        np.array(np.broadcast_to(mask, s.shape), dtype=bool))
    s = torch.where(keep, s, torch.full_like(s, -1e300))
    m = s.max(dim=-1, keepdim=True).values.detach()
    e = torch.exp(s - m) * keep
    z = e.sum(-1, keepdim=True)
    p = e / torch.where(z > 0, z, torch.ones_like(z))
    o = torch.matmul(p, tv)
    (o * torch.tensor(dout)).sum().backward()
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


def ref_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.double().numpy() for t in (q, k, v))
    hq, hkv = q.shape[1], k.shape[1]
    if enable_gqa:
        idx = np.arange(hq) // (hq // hkv)
        k, v = k[:, idx], v[:, idx]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, bool)
    sq, sk = q.shape[2], k.shape[2]
    if is_causal:
        keep &= np.arange(sk)[None, :] <= np.arange(sq)[:, None]
    if attn_mask is not None:
        m = attn_mask.numpy()
        if m.dtype == np.bool_:
            keep &= m
        else:
            s = s + m.astype(np.float64)
            keep &= np.isfinite(s)
    return np.matmul(softmax_rows(s, keep), v)


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (t.double().numpy() for t in (q, k, v))
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    idx = np.arange(hq) // (hq // hkv)
    qh = q.transpose(0, 2, 1, 3)
    kh = k.transpose(0, 2, 1, 3)[:, idx]
    vh = v.transpose(0, 2, 1, 3)[:, idx]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    s = np.matmul(qh, np.swapaxes(kh, -1, -2)) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    off = sk - sq
    i = np.arange(sq)[:, None]
    j = np.arange(sk)[None, :]
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy()
        if sl.ndim == 1:
            sl = np.broadcast_to(sl[None], (b, hq))
        s = s - sl[:, :, None, None] * np.abs(i + off - j)
    left, right = window_size
    if causal:
        right = 0
    keep = np.ones((sq, sk), bool)
    if left >= 0:
        keep &= j >= i + off - left
    if right >= 0:
        keep &= j <= i + off + right
    out = np.matmul(softmax_rows(s, np.broadcast_to(keep, s.shape)), vh)
    return out.transpose(0, 2, 1, 3)


# ----------------------------------------------------------------------------------------------------------
def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return math.inf
    if not np.all(np.isfinite(out)):
        return math.inf
    den = np.linalg.norm(ref)
    diff = np.linalg.norm(out - ref)
    return diff / den if den > 0 else diff


def rng_for(seed):
    return np.random.default_rng(seed)


def big(rng, shape, target):
    """Gaussian entries scaled so that scaled q.k logits reach about +-target."""
    return rng.standard_normal(shape) * math.sqrt(target)


# --- refimpl / numpy-backward cases (numpy inputs, bool keep-masks) -------------------------------------
def np_cases():
    cases = []
    r = rng_for(1)
    B, H = 2, 3
    # plain cross-attention, Sq < Sk, D != Dv
    cases.append(dict(name="plain-37x77", q=r.standard_normal((B, H, 37, 16)), k=r.standard_normal((B, H, 77, 16)),
                      v=r.standard_normal((B, H, 77, 24)), mask=None, scale=None))
    # bottom-right causal with Sq > Sk (first rows have no key)
    sq, sk = 90, 50
    m = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)
    cases.append(dict(name="causal-br-90x50", q=r.standard_normal((B, H, sq, 8)), k=r.standard_normal((B, H, sk, 8)),
                      v=r.standard_normal((B, H, sk, 8)), mask=m, scale=None))
    # top-left causal, Sq < Sk
    sq, sk = 40, 100
    m = np.arange(sk)[None, :] <= np.arange(sq)[:, None]
    cases.append(dict(name="causal-tl-40x100", q=r.standard_normal((B, H, sq, 12)),
                      k=r.standard_normal((B, H, sk, 12)), v=r.standard_normal((B, H, sk, 6)), mask=m, scale=None))
    # per-batch padding incl. a zero-length sequence
    sq, sk = 20, 65
    lens = np.array([0, 33])
    m = (np.arange(sk)[None, :] < lens[:, None])[:, None, None, :]
    cases.append(dict(name="padding-0-33", q=r.standard_normal((B, H, sq, 16)), k=r.standard_normal((B, H, sk, 16)),
                      v=r.standard_normal((B, H, sk, 16)), mask=m, scale=None))
    # per-head random mask with fully masked rows
    sq, sk = 30, 47
    m = r.random((B, H, sq, sk)) < 0.6
    m[0, 1, 3] = False
    m[1, 2, 10:12] = False
    cases.append(dict(name="per-head-random", q=r.standard_normal((B, H, sq, 8)), k=r.standard_normal((B, H, sk, 8)),
                      v=r.standard_normal((B, H, sk, 10)), mask=m, scale=None))
    # band mask (sliding window left 20, right 5), Sk not a multiple of 16/32
    n = 130
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    m = (j >= i - 20) & (j <= i + 5)
    cases.append(dict(name="band-130", q=r.standard_normal((B, H, n, 16)), k=r.standard_normal((B, H, n, 16)),
                      v=r.standard_normal((B, H, n, 8)), mask=m, scale=None))
    # explicit scale, long keys
    cases.append(dict(name="scale-0.3-200", q=r.standard_normal((B, H, 25, 8)), k=r.standard_normal((B, H, 200, 8)),
                      v=r.standard_normal((B, H, 200, 5)), mask=None, scale=0.3))
    # decode
    cases.append(dict(name="decode-1x199", q=r.standard_normal((B, H, 1, 16)), k=r.standard_normal((B, H, 199, 16)),
                      v=r.standard_normal((B, H, 199, 16)), mask=None, scale=None))
    # 3-D input (H, S, D) with a 2-D mask
    m = r.random((33, 70)) < 0.7
    cases.append(dict(name="3d-mask2d", q=r.standard_normal((4, 33, 8)), k=r.standard_normal((4, 70, 8)),
                      v=r.standard_normal((4, 70, 12)), mask=m, scale=None))
    # large logits (~3000), causal band, float64 only
    n = 100
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    m = (j <= i) & (j >= i - 60)
    d = 16
    cases.append(dict(name="large-logits", q=big(r, (B, H, n, d), 3000 / math.sqrt(d) * 0.25),
                      k=big(r, (B, H, n, d), 3000 / math.sqrt(d) * 4), v=r.standard_normal((B, H, n, 8)),
                      mask=m, scale=None, f64_only=True))
    return cases


def bwd_cases():
    cases = []
    r = rng_for(2)
    for c in np_cases():
        c = dict(c)
        if c["q"].ndim == 4 or c["q"].ndim == 3:
            c["dout"] = r.standard_normal(c["q"].shape[:-1] + (c["v"].shape[-1],))
        cases.append(c)
    # multi-query: k/v head axis of size 1
    B, H, sq, sk = 2, 4, 28, 75
    m = r.random((B, H, sq, sk)) < 0.7
    m[1, 0, 5] = False
    cases.append(dict(name="mqa-masked", q=r.standard_normal((B, H, sq, 8)), k=r.standard_normal((B, 1, sk, 8)),
                      v=r.standard_normal((B, 1, sk, 12)), mask=m, scale=None,
                      dout=r.standard_normal((B, H, sq, 12))))
    # Dv > D with explicit scale
    cases.append(dict(name="dv-gt-d", q=r.standard_normal((2, 2, 21, 8)), k=r.standard_normal((2, 2, 66, 8)),
                      v=r.standard_normal((2, 2, 66, 20)), mask=None, scale=0.4,
                      dout=r.standard_normal((2, 2, 21, 20))))
    # large logits are not judged for the backward (conditioning); drop them
    return [c for c in cases if c["name"] != "large-logits"]


# --- torch-sdpa cases ----------------------------------------------------------------------------------
def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def alibi_bias(h, sq, sk):
    slopes = 2.0 ** (-8.0 * (np.arange(h) + 1) / h)
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    return (-slopes[:, None, None] * np.abs(i - j))[None]


def sdpa_cases():
    r = rng_for(3)
    cs = []

    def qkv(b, hq, hkv, sq, sk, d, dv):
        return T(r.standard_normal((b, hq, sq, d))), T(r.standard_normal((b, hkv, sk, d))), \
            T(r.standard_normal((b, hkv, sk, dv)))

    q, k, v = qkv(2, 4, 4, 40, 70, 16, 12)
    cs.append(dict(name="plain", args=(q, k, v), kw={}))
    q, k, v = qkv(2, 3, 3, 24, 61, 8, 8)
    lens = np.array([0, 37])
    m = (np.arange(61)[None, :] < lens[:, None])[:, None, None, :]
    cs.append(dict(name="bool-padding", args=(q, k, v), kw=dict(attn_mask=T(m))))
    q, k, v = qkv(2, 4, 4, 50, 50, 16, 16)
    cs.append(dict(name="alibi-additive", args=(q, k, v), kw=dict(attn_mask=T(alibi_bias(4, 50, 50)))))
    q, k, v = qkv(2, 3, 3, 30, 45, 8, 10)
    add = r.standard_normal((2, 3, 30, 45))
    add[r.random((2, 3, 30, 45)) < 0.3] = -np.inf
    add[1, 2, 7] = -np.inf
    cs.append(dict(name="additive-inf-per-head", args=(q, k, v), kw=dict(attn_mask=T(add))))
    q, k, v = qkv(2, 2, 2, 30, 50, 8, 8)
    cs.append(dict(name="causal-30x50", args=(q, k, v), kw=dict(is_causal=True)))
    q, k, v = qkv(2, 2, 2, 50, 30, 8, 8)
    cs.append(dict(name="causal-50x30", args=(q, k, v), kw=dict(is_causal=True)))
    q, k, v = qkv(2, 2, 2, 1, 40, 8, 8)
    cs.append(dict(name="causal-decode", args=(q, k, v), kw=dict(is_causal=True)))
    q, k, v = qkv(2, 8, 2, 33, 67, 16, 8)
    pm = r.random((2, 8, 33, 67)) < 0.65
    pm[0, 5, 2] = False
    cs.append(dict(name="gqa4-per-head-bool", args=(q, k, v), kw=dict(attn_mask=T(pm), enable_gqa=True)))
    q, k, v = qkv(2, 6, 3, 20, 90, 8, 8)
    cs.append(dict(name="gqa2-alibi", args=(q, k, v),
                   kw=dict(attn_mask=T(alibi_bias(6, 20, 90)), enable_gqa=True)))
    q, k, v = qkv(2, 4, 1, 45, 45, 8, 12)
    cs.append(dict(name="mqa-causal", args=(q, k, v), kw=dict(is_causal=True, enable_gqa=True)))
    q, k, v = qkv(2, 2, 2, 25, 130, 16, 16)
    cs.append(dict(name="explicit-scale", args=(q, k, v), kw=dict(scale=0.17)))
    q, k, v = qkv(2, 2, 2, 1, 129, 16, 16)
    cs.append(dict(name="decode-additive", args=(q, k, v), kw=dict(attn_mask=T(r.standard_normal((2, 1, 1, 129))))))
    d = 16
    q = T(big(r, (2, 2, 60, d), 3000 / math.sqrt(d) * 0.25))
    k = T(big(r, (2, 2, 60, d), 3000 / math.sqrt(d) * 4))
    v = T(r.standard_normal((2, 2, 60, 8)))
    cs.append(dict(name="large-logits", args=(q, k, v), kw=dict(is_causal=True), f64_only=True))
    return cs


# --- flash-attn cases ----------------------------------------------------------------------------------
def flash_cases():
    r = rng_for(4)
    cs = []

    def qkv(b, sq, sk, hq, hkv, d, dv):
        return T(r.standard_normal((b, sq, hq, d))), T(r.standard_normal((b, sk, hkv, d))), \
            T(r.standard_normal((b, sk, hkv, dv)))

    def add(name, shape, f64_only=False, **kw):
        cs.append(dict(name=name, args=qkv(*shape), kw=kw, f64_only=f64_only))

    add("plain-gqa2", (2, 45, 77, 4, 2, 16, 24))
    add("causal-30x70", (2, 30, 70, 4, 2, 8, 8), causal=True)
    add("causal-70x30", (2, 70, 30, 4, 2, 8, 8), causal=True)
    add("causal-decode", (2, 1, 99, 4, 1, 16, 16), causal=True)
    add("window-8-3", (2, 100, 100, 2, 2, 8, 8), window_size=(8, 3))
    add("window-0-0", (2, 40, 60, 2, 2, 8, 8), window_size=(0, 0))
    add("window-left-only", (2, 50, 83, 2, 1, 8, 8), window_size=(5, -1))
    add("window-right-only", (2, 50, 83, 2, 1, 8, 8), window_size=(-1, 4))
    add("window-causal", (2, 64, 90, 4, 2, 8, 12), causal=True, window_size=(6, -1))
    add("window-sq-gt-sk", (2, 90, 40, 2, 2, 8, 8), window_size=(3, 2))
    add("softcap-scale", (2, 40, 70, 3, 3, 16, 16), softcap=5.0, softmax_scale=0.5)
    sl = torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float32)
    add("softcap-alibi", (2, 40, 70, 4, 2, 16, 8), softcap=8.0, alibi_slopes=sl)
    slb = torch.tensor([[0.5, 0.25, 0.125, 0.0625], [0.3, 0.2, 0.1, 0.05]], dtype=torch.float32)
    add("alibi-batch-slopes", (2, 50, 50, 4, 4, 8, 8), alibi_slopes=slb)
    add("alibi-causal", (2, 30, 60, 4, 2, 8, 8), causal=True, alibi_slopes=sl)
    add("gqa3", (2, 33, 95, 6, 2, 16, 16))
    add("mqa", (2, 21, 64, 4, 1, 8, 8))
    add("explicit-scale-130", (2, 24, 130, 2, 2, 16, 16), softmax_scale=0.15)
    add("sk-200-window", (1, 200, 200, 2, 2, 8, 8), window_size=(31, 17))
    add("causal-sq-1", (2, 1, 50, 2, 2, 8, 8), causal=True, window_size=(10, -1))
    b, sq, sk, h, d = 2, 50, 80, 2, 16
    q = T(big(r, (b, sq, h, d), 3000 / math.sqrt(d) * 0.25))
    k = T(big(r, (b, sk, h, d), 3000 / math.sqrt(d) * 4))
    v = T(r.standard_normal((b, sk, h, 8)))
    cs.append(dict(name="large-logits", args=(q, k, v), kw=dict(causal=True), f64_only=True))
    return cs


# ----------------------------------------------------------------------------------------------------------
def check_catalog(modname, mod, api, n_bug, n_ok):
    cat = getattr(mod, "CATALOG", None)
    if not isinstance(cat, list):
        problem("%s: CATALOG missing" % modname)
        return []
    names = set()
    for e in cat:
        if set(e) != KEYS:
            problem("%s: entry keys %s" % (modname, sorted(e)))
            continue
        if e["name"] in names:
            problem("%s: duplicate name %s" % (modname, e["name"]))
        names.add(e["name"])
        if e["api"] != api:
            problem("%s: %s api %s" % (modname, e["name"], e["api"]))
        if not callable(getattr(mod, e["fn"], None)):
            problem("%s: %s fn %s not found" % (modname, e["name"], e["fn"]))
        if e["dtype"] not in ("float64", "float32"):
            problem("%s: %s dtype" % (modname, e["name"]))
        if not set(e["features"]) <= FEATURES:
            problem("%s: %s features" % (modname, e["name"]))
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")):
                problem("%s: correct %s has bug fields" % (modname, e["name"]))
        else:
            if not (isinstance(e["bug"], str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"])):
                problem("%s: %s bug not kebab-case" % (modname, e["name"]))
            if not (isinstance(e["parameter"], str) and e["parameter"]):
                problem("%s: %s parameter" % (modname, e["name"]))
            m = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", e["source"] or "")
            if not m:
                problem("%s: %s source %r" % (modname, e["name"], e["source"]))
            elif not re.fullmatch(r"https://github\.com/%s/(issues|pull)/%s" % (re.escape(m.group(1)), m.group(2)),
                                  e["report"] or ""):
                problem("%s: %s report %r" % (modname, e["name"], e["report"]))
    nb = sum(not e["correct"] for e in cat)
    nc = sum(bool(e["correct"]) for e in cat)
    if (nb, nc) != (n_bug, n_ok):
        problem("%s: %d broken + %d correct, expected %d + %d" % (modname, nb, nc, n_bug, n_ok))
    text = open(os.path.join(HERE, modname + ".py")).read()
    if text.count("# BUG:") != nb:
        problem("%s: %d '# BUG:' comments for %d broken kernels" % (modname, text.count("# BUG:"), nb))
    for e in cat:
        fn = getattr(mod, e["fn"], None)
        if fn is None:
            continue
        n = inspect.getsource(fn).count("# BUG:")
        if n != (0 if e["correct"] else 1):
            problem("%s: %s has %d '# BUG:' comments" % (modname, e["name"], n))
    return cat


def cast_np(a, dt):
    return None if a is None else (a.astype(dt) if a.dtype != np.bool_ else a)


def run_module(modname, mod, cat, cases, call, reference):
    """call(fn, case, dtype) -> (outputs tuple, inputs tuple); reference(case, dtype) -> tuple of arrays."""
    lines = []
    for e in cat:
        fn = getattr(mod, e["fn"])
        worst = {"float64": 0.0, "float32": 0.0}
        crashed = []
        for case in cases:
            for dt in ("float64", "float32"):
                if dt == "float32" and case.get("f64_only"):
                    continue
                try:
                    outs, ins, snap, expect_dtypes = call(fn, case, dt)
                except Exception as exc:  # noqa: BLE001
                    crashed.append("%s/%s: %s: %s" % (case["name"], dt, type(exc).__name__, exc))
                    continue
                for a, b in zip(ins, snap):
                    if not np.array_equal(a, b, equal_nan=True):
                        problem("%s: %s modified its input on %s/%s" % (modname, e["name"], case["name"], dt))
                refs = reference(case, dt)
                err = 0.0
                for o, rf, ed in zip(outs, refs, expect_dtypes):
                    if str(o.dtype).replace("torch.", "") != ed or tuple(o.shape) != rf.shape:
                        problem("%s: %s returned %s %s on %s/%s, expected %s %s" % (
                            modname, e["name"], o.dtype, tuple(o.shape), case["name"], dt, ed, rf.shape))
                        err = math.inf
                        continue
                    on = o.detach().numpy() if isinstance(o, torch.Tensor) else o
                    err = max(err, rel_err(on, rf))
                worst[dt] = max(worst[dt], err)
                if e["correct"] and err > TOL_OK[dt]:
                    problem("%s: correct %s rel err %.3g on %s/%s" % (modname, e["name"], err, case["name"], dt))
        if crashed:
            problem("%s: %s raised: %s" % (modname, e["name"], "; ".join(crashed[:3])))
        if not e["correct"]:
            dt = e["dtype"]
            if not worst[dt] > TOL_BUG[dt]:
                problem("%s: broken %s not detected in %s (worst rel err %.3g)" % (modname, e["name"], dt, worst[dt]))
        lines.append("  %-34s %-7s f64 %-9.3g f32 %-9.3g" % (
            e["name"], "ok" if e["correct"] else "broken", worst["float64"], worst["float32"]))
    return lines


def main():
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    report = []
    mods = {}
    for modname, (api, nb, nc) in MODULES.items():
        mods[modname] = importlib.import_module(modname)
        mods[modname].CAT = check_catalog(modname, mods[modname], api, nb, nc)

    # cross-check the backward reference with torch autograd
    for case in bwd_cases():
        a = ref_bwd(case["q"], case["k"], case["v"], case["dout"], case["mask"], case["scale"])
        b = autograd_bwd(case["q"], case["k"], case["v"], case["dout"], case["mask"], case["scale"])
        for x, y in zip(a, b):
            if rel_err(x, y) > 1e-12:
                problem("backward reference disagrees with autograd on %s (%.3g)" % (case["name"], rel_err(x, y)))
    # and the flash / sdpa references with each other where the semantics meet (no mask, Sq == Sk)
    r = rng_for(9)
    q, k, v = (T(r.standard_normal((2, 3, 20, 8))) for _ in range(3))
    a = ref_sdpa(q, k, v)
    b = ref_flash(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(0, 2, 1, 3)
    c = ref_refimpl(q.numpy(), k.numpy(), v.numpy(), None, None)
    if rel_err(a, b) > 1e-13 or rel_err(a, c) > 1e-13:
        problem("references disagree")

    # refimpl
    def np_call(fn, case, dt):
        q, k, v = (case[x].astype(dt) for x in ("q", "k", "v"))
        mask = case["mask"]
        ins = [q, k, v] + ([mask] if mask is not None else [])
        snap = [x.copy() for x in ins]
        with np.errstate(all="ignore"):
            out = fn(q, k, v, mask=mask, scale=case["scale"])
        return (out,), ins, snap, (dt,)

    def np_ref(case, dt):
        q, k, v = (case[x].astype(dt).astype(np.float64) for x in ("q", "k", "v"))
        return (ref_refimpl(q, k, v, case["mask"], case["scale"]),)

    report.append("numpy_fwd.py (refimpl)")
    report += run_module("numpy_fwd", mods["numpy_fwd"], mods["numpy_fwd"].CAT, np_cases(), np_call, np_ref)

    # torch-sdpa
    tdt = {"float64": torch.float64, "float32": torch.float32}

    def sdpa_prep(case, dt):
        q, k, v = (t.to(tdt[dt]) for t in case["args"])
        kw = dict(case["kw"])
        if "attn_mask" in kw and kw["attn_mask"].dtype != torch.bool:
            kw["attn_mask"] = kw["attn_mask"].to(tdt[dt])
        return q, k, v, kw

    def sdpa_call(fn, case, dt):
        q, k, v, kw = sdpa_prep(case, dt)
        ins = [q, k, v] + ([kw["attn_mask"]] if "attn_mask" in kw else [])
        snap = [x.clone().numpy() for x in ins]
        out = fn(q, k, v, **kw)
        return (out,), [x.numpy() for x in ins], snap, (dt,)

    def sdpa_reference(case, dt):
        q, k, v, kw = sdpa_prep(case, dt)
        return (ref_sdpa(q, k, v, **kw),)

    report.append("torch_sdpa_fwd.py (torch-sdpa)")
    report += run_module("torch_sdpa_fwd", mods["torch_sdpa_fwd"], mods["torch_sdpa_fwd"].CAT, sdpa_cases(),
                         sdpa_call, sdpa_reference)

    # flash-attn
    def flash_prep(case, dt):
        return [t.to(tdt[dt]) for t in case["args"]], dict(case["kw"])

    def flash_call(fn, case, dt):
        (q, k, v), kw = flash_prep(case, dt)
        ins = [q, k, v] + ([kw["alibi_slopes"]] if "alibi_slopes" in kw else [])
        snap = [x.clone().numpy() for x in ins]
        out = fn(q, k, v, **kw)
        return (out,), [x.numpy() for x in ins], snap, (dt,)

    def flash_reference(case, dt):
        (q, k, v), kw = flash_prep(case, dt)
        return (ref_flash(q, k, v, **kw),)

    report.append("flash_fwd.py (flash-attn)")
    report += run_module("flash_fwd", mods["flash_fwd"], mods["flash_fwd"].CAT, flash_cases(), flash_call,
                         flash_reference)

    # numpy-backward
    def bwd_call(fn, case, dt):
        q, k, v, do = (case[x].astype(dt) for x in ("q", "k", "v", "dout"))
        mask = case["mask"]
        ins = [q, k, v, do] + ([mask] if mask is not None else [])
        snap = [x.copy() for x in ins]
        with np.errstate(all="ignore"):
            res = fn(q, k, v, do, mask=mask, scale=case["scale"])
        return tuple(res), ins, snap, (dt, dt, dt)

    def bwd_reference(case, dt):
        q, k, v, do = (case[x].astype(dt).astype(np.float64) for x in ("q", "k", "v", "dout"))
        return ref_bwd(q, k, v, do, case["mask"], case["scale"])

    report.append("numpy_bwd.py (numpy-backward)")
    report += run_module("numpy_bwd", mods["numpy_bwd"], mods["numpy_bwd"].CAT, bwd_cases(), bwd_call,
                         bwd_reference)

    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype)")
    print("\n".join(report))
    counts = ", ".join("%s %d broken + %d correct" % (m, MODULES[m][1], MODULES[m][2]) for m in MODULES)
    if problems:
        print("SELF-CHECK FAILED: %d problem(s)" % len(problems))
        return 1
    print("SELF-CHECK PASSED: " + counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
