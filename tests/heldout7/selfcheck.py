"""Self-check for tests/heldout7: own float64 references, fixed seeded cases, verdicts and CATALOG checks.

Run: /usr/bin/python3 tests/heldout7/selfcheck.py   (exit status 1 on any problem)
"""
import importlib.util
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [("numpy_fwd", "refimpl"), ("torch_sdpa_fwd", "torch-sdpa"), ("flash_fwd", "flash-attn"),
           ("numpy_bwd", "numpy-backward")]
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}
OK_TOL = {"float64": 1e-10, "float32": 1e-5}
DIFF_TOL = {"float64": 1e-8, "float32": 1e-4}
PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)


def load(name):
    spec = importlib.util.spec_from_file_location("heldout7_" + name, os.path.join(HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ============================================================================ references (float64, NumPy)
def ref_core(q, k, v, keep=None, scale=None, bias=None):
    """softmax(scale q k^T + bias, masked by keep) v with zero rows where nothing is visible."""
    q, k, v = (np.asarray(t, dtype=np.float64) for t in (q, k, v))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = np.einsum("...id,...jd->...ij", q, k) * sc
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(np.broadcast_to(keep, s.shape), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    p = np.exp(s - np.where(live, m, 0.0))
    z = p.sum(axis=-1, keepdims=True)
    p = np.where(live, p / np.where(z > 0, z, 1.0), 0.0)
    return np.einsum("...ij,...jd->...id", p, v)


def ref_np(q, k, v, mask=None, scale=None):
    return ref_core(q, k, v, None if mask is None else np.asarray(mask, dtype=bool), scale)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.double().numpy() for t in (query, key, value))
    if enable_gqa and k.shape[1] != q.shape[1]:
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    L, S = q.shape[2], k.shape[2]
    bias = np.zeros((L, S))
    if is_causal:
        bias = np.where(np.arange(S)[None, :] <= np.arange(L)[:, None], bias, -np.inf)
    if attn_mask is not None:
        am = attn_mask.numpy()
        bias = np.where(am, bias, -np.inf) if am.dtype == bool else bias + am.astype(np.float64)
    return ref_core(q, k, v, None, scale, bias)


def flash_keep(sq, sk, causal, window):
    off = sk - sq
    left, right = window
    if causal:
        right = 0
    keep = np.ones((sq, sk), dtype=bool)
    for i in range(sq):
        for j in range(sk):
            if left >= 0 and j < i + off - left:
                keep[i, j] = False
            if right >= 0 and j > i + off + right:
                keep[i, j] = False
    return keep


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    qh = q.double().numpy().transpose(0, 2, 1, 3)
    kh = k.double().numpy().transpose(0, 2, 1, 3)
    vh = v.double().numpy().transpose(0, 2, 1, 3)
    b, hq, sq, d = qh.shape
    hk, sk = kh.shape[1], kh.shape[2]
    kh, vh = np.repeat(kh, hq // hk, axis=1), np.repeat(vh, hq // hk, axis=1)
    sc = 1.0 / np.sqrt(d) if softmax_scale is None else float(softmax_scale)
    s = np.einsum("bhid,bhjd->bhij", qh, kh) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = alibi_slopes.double().numpy()
        sl = np.broadcast_to(sl, (b, hq)) if sl.ndim == 1 else sl
        dist = np.abs(np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :])
        s = s - sl[:, :, None, None] * dist
    out = ref_core(np.zeros((b, hq, sq, 1)), np.zeros((b, hq, sk, 1)), vh, flash_keep(sq, sk, causal, window_size),
                   1.0, s)
    return out.transpose(0, 2, 1, 3)


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, do = (np.asarray(t, dtype=np.float64) for t in (q, k, v, d_out))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = np.einsum("...id,...jd->...ij", q, k) * sc
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    p = np.exp(s - np.where(live, m, 0.0))
    p = np.where(live, p / np.where(live, p.sum(axis=-1, keepdims=True), 1.0), 0.0)
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ do
    ds = p * (do @ np.swapaxes(v, -1, -2) - (do * o).sum(axis=-1, keepdims=True))
    dq = ds @ k * sc
    dk = np.swapaxes(ds, -1, -2) @ q * sc

    def red(x, shape):
        axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
        return x.sum(axis=axes, keepdims=True) if axes else x
    return dq, red(dk, k.shape), red(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    qt, kt, vt = (torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in (q, k, v))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = torch.matmul(qt, kt.transpose(-1, -2)) * sc
    keep = torch.ones(s.shape, dtype=torch.bool) if mask is None else torch.tensor(
        np.broadcast_to(np.asarray(mask, dtype=bool), s.shape).copy())
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    p = p / torch.where(z > 0, z, torch.ones_like(z))
    (torch.matmul(p, vt) * torch.tensor(d_out, dtype=torch.float64)).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ============================================================================ case builders
def mask_np(rng, lead, sq, sk, kind):
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    if kind is None:
        return None
    if kind == "causal_tl":
        return j <= i
    if kind == "causal_br":
        return j <= i + (sk - sq)
    if kind == "band":
        return np.abs(i + (sk - sq) - j) <= 9
    if kind == "random":
        m = rng.random(lead + (sq, sk)) < 0.7
        m[..., ::7, :] = False  # fully masked rows
        return m
    if kind == "perhead":
        return rng.random(lead + (sq, sk)) < rng.uniform(0.2, 0.9, size=lead + (1, 1))
    if kind == "padding":
        lens = [0, sk // 3, sk - 5, sk][:lead[0]] if lead[0] > 2 else [sk - 7, 0][:lead[0]]
        m = np.zeros((lead[0],) + (1,) * (len(lead) - 1) + (1, sk), dtype=bool)
        for b, n in enumerate(lens):
            m[b, ..., :n] = True
        return m
    raise ValueError(kind)


def np_cases():
    specs = [  # lead, sq, sk, d, dv, mask kind, scale, magnitude
        ((2, 3), 30, 45, 16, 16, None, None, 1.0),
        ((2, 3), 47, 47, 32, 24, "causal_tl", None, 1.0),
        ((2, 2), 61, 130, 16, 8, "random", None, 1.0),
        ((2, 4), 83, 64, 8, 20, "padding", 0.3, 1.0),
        ((2, 3), 66, 199, 16, 16, "perhead", None, 1.0),
        ((2, 2), 100, 77, 16, 16, "causal_br", None, 1.0),
        ((3,), 50, 67, 16, 12, "band", None, 1.0),
        ((2, 2), 1, 200, 16, 16, "padding", None, 1.0),
        ((2, 3), 64, 64, 24, 24, "random", 0.125, 1.0),
        ((2, 2), 129, 45, 24, 40, "causal_tl", None, 1.0),
        ((2, 2), 40, 95, 16, 16, "causal_tl", None, 60.0),
        ((2, 2), 45, 99, 16, 16, "random", None, 60.0),
    ]
    out = []
    for n, (lead, sq, sk, d, dv, kind, scale, mag) in enumerate(specs):
        rng = np.random.default_rng(700 + n)
        q = rng.standard_normal(lead + (sq, d)) * mag
        k = rng.standard_normal(lead + (sk, d)) * mag
        v = rng.standard_normal(lead + (sk, dv))
        mask = mask_np(rng, lead, sq, sk, kind)
        label = "np{} {}x{}x{} D{} Dv{} mask={} scale={}{}".format(
            n, lead, sq, sk, d, dv, kind, scale, " large" if mag > 1 else "")
        out.append((label, dict(q=q, k=k, v=v, mask=mask, scale=scale), mag > 1))
    return out


def sdpa_cases():
    specs = [  # b, hq, hkv, sq, sk, d, dv, mask kind, causal, scale, magnitude
        (2, 4, 4, 30, 45, 16, 16, None, False, None, 1.0),
        (2, 3, 3, 47, 47, 32, 24, None, True, None, 1.0),
        (2, 4, 4, 40, 75, 16, 16, None, True, None, 1.0),
        (2, 2, 2, 90, 50, 16, 8, None, True, None, 1.0),
        (2, 2, 2, 1, 60, 16, 16, None, True, None, 1.0),
        (2, 4, 2, 45, 66, 16, 16, "bool", False, None, 1.0),
        (2, 6, 2, 50, 83, 16, 24, "additive", False, None, 1.0),
        (2, 8, 2, 33, 64, 8, 8, "additive_dead", False, 0.4, 1.0),
        (2, 4, 1, 61, 129, 16, 16, "padding", False, 0.2, 1.0),
        (2, 4, 4, 70, 99, 16, 16, "band2d", False, None, 1.0),
        (2, 6, 3, 64, 200, 16, 16, None, True, 0.09, 1.0),
        (2, 4, 4, 1, 77, 16, 16, "additive", False, None, 1.0),
        (2, 2, 2, 40, 100, 16, 16, "bool", False, None, 60.0),
    ]
    out = []
    for n, (b, hq, hk, sq, sk, d, dv, kind, causal, scale, mag) in enumerate(specs):
        rng = np.random.default_rng(900 + n)
        q = torch.tensor(rng.standard_normal((b, hq, sq, d)) * mag)
        k = torch.tensor(rng.standard_normal((b, hk, sk, d)) * mag)
        v = torch.tensor(rng.standard_normal((b, hk, sk, dv)))
        am = None
        if kind == "bool":
            m = rng.random((b, hq, sq, sk)) < 0.7
            m[..., ::5, :] = False
            am = torch.tensor(m)
        elif kind in ("additive", "additive_dead"):
            a = rng.standard_normal((b, 1, sq, sk))
            a[rng.random(a.shape) < 0.3] = -np.inf
            if kind == "additive_dead":
                a[..., ::4, :] = -np.inf
            am = torch.tensor(a)
        elif kind == "padding":
            m = np.zeros((b, 1, 1, sk), dtype=bool)
            m[0, ..., :sk - 11] = True
            am = torch.tensor(m)
            if b > 1:
                am[1] = False  # zero-length sequence
        elif kind == "band2d":
            am = torch.tensor(mask_np(rng, (), sq, sk, "band"))
        args = dict(query=q, key=k, value=v, attn_mask=am, is_causal=causal, scale=scale,
                    enable_gqa=hq != hk)
        label = "sdpa{} B{} H{}/{} {}x{} D{} Dv{} mask={} causal={} scale={}{}".format(
            n, b, hq, hk, sq, sk, d, dv, kind, causal, scale, " large" if mag > 1 else "")
        out.append((label, args, mag > 1))
    return out


def flash_cases():
    specs = [  # b, sq, sk, hq, hkv, d, dv, causal, window, softcap, alibi, scale, magnitude
        (2, 30, 45, 4, 4, 16, 16, False, (-1, -1), 0.0, None, None, 1.0),
        (2, 47, 47, 3, 3, 32, 24, True, (-1, -1), 0.0, None, None, 1.0),
        (2, 40, 75, 4, 2, 16, 16, True, (-1, -1), 0.0, None, None, 1.0),
        (2, 90, 50, 2, 2, 16, 8, True, (-1, -1), 0.0, None, None, 1.0),
        (2, 1, 130, 4, 1, 16, 16, True, (-1, -1), 0.0, None, None, 1.0),
        (2, 64, 100, 4, 4, 16, 16, False, (16, -1), 0.0, None, None, 1.0),
        (2, 61, 61, 3, 3, 16, 16, False, (0, 0), 0.0, None, None, 1.0),
        (2, 50, 83, 2, 2, 16, 16, False, (-1, 5), 0.0, None, None, 1.0),
        (2, 45, 120, 6, 2, 16, 16, True, (20, -1), 0.0, None, None, 1.0),
        (2, 100, 60, 2, 2, 16, 16, False, (10, 3), 0.0, None, None, 1.0),
        (2, 70, 99, 4, 4, 16, 16, False, (-1, -1), 5.0, None, 0.3, 1.0),
        (2, 66, 66, 4, 4, 16, 16, True, (-1, -1), 3.0, "h", None, 1.0),
        (2, 40, 77, 8, 2, 16, 16, False, (-1, -1), 0.0, "bh", None, 1.0),
        (2, 129, 200, 4, 4, 16, 24, True, (33, 0), 0.0, None, None, 1.0),
        (2, 80, 40, 3, 3, 16, 16, True, (12, -1), 0.0, "h", None, 1.0),
        (2, 50, 95, 4, 2, 16, 16, True, (-1, -1), 0.0, None, None, 60.0),
    ]
    out = []
    for n, (b, sq, sk, hq, hk, d, dv, causal, window, softcap, alibi, scale, mag) in enumerate(specs):
        rng = np.random.default_rng(1100 + n)
        q = torch.tensor(rng.standard_normal((b, sq, hq, d)) * mag)
        k = torch.tensor(rng.standard_normal((b, sk, hk, d)) * mag)
        v = torch.tensor(rng.standard_normal((b, sk, hk, dv)))
        slopes = None
        if alibi == "h":
            slopes = torch.tensor(2.0 ** (-8.0 * np.arange(1, hq + 1) / hq), dtype=torch.float32)
        elif alibi == "bh":
            slopes = torch.tensor(rng.uniform(0.05, 0.8, size=(b, hq)), dtype=torch.float32)
        args = dict(q=q, k=k, v=v, softmax_scale=scale, causal=causal, window_size=window, softcap=softcap,
                    alibi_slopes=slopes)
        label = "flash{} B{} {}x{} H{}/{} D{} Dv{} causal={} window={} softcap={} alibi={} scale={}{}".format(
            n, b, sq, sk, hq, hk, d, dv, causal, window, softcap, alibi, scale, " large" if mag > 1 else "")
        out.append((label, args, mag > 1))
    return out


def bwd_cases():
    specs = [  # q lead, kv lead, sq, sk, d, dv, mask kind, scale
        ((2, 3), (2, 3), 30, 45, 16, 16, None, None),
        ((2, 3), (2, 3), 47, 47, 32, 24, "causal_tl", None),
        ((2, 4), (2, 1), 61, 130, 16, 8, "random", None),
        ((2, 2), (2, 2), 83, 64, 8, 20, "padding", 0.3),
        ((3,), (3,), 50, 67, 16, 12, "band", None),
        ((2, 2), (2, 2), 100, 77, 16, 16, "causal_br", None),
        ((2, 4), (2, 1), 1, 200, 16, 16, None, None),
        ((2, 2), (2, 2), 70, 99, 16, 16, "perhead", 0.15),
    ]
    out = []
    for n, (lq, lk, sq, sk, d, dv, kind, scale) in enumerate(specs):
        rng = np.random.default_rng(1300 + n)
        q = rng.standard_normal(lq + (sq, d))
        k = rng.standard_normal(lk + (sk, d))
        v = rng.standard_normal(lk + (sk, dv))
        do = rng.standard_normal(lq + (sq, dv))
        mask = mask_np(rng, lq, sq, sk, kind)
        label = "bwd{} q{} kv{} {}x{} D{} Dv{} mask={} scale={}".format(n, lq, lk, sq, sk, d, dv, kind, scale)
        out.append((label, dict(q=q, k=k, v=v, d_out=do, mask=mask, scale=scale), False))
    return out


# ============================================================================ running
def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape or not np.all(np.isfinite(out)):
        return float("inf")
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(out - ref) / (den if den > 0 else 1.0))


def cast_args(args, dtype):
    res = {}
    for key, val in args.items():
        if isinstance(val, np.ndarray) and val.dtype == np.float64:
            res[key] = val.astype(dtype)
        elif torch.is_tensor(val) and val.dtype == torch.float64:
            res[key] = val.to({"float64": torch.float64, "float32": torch.float32}[dtype])
        else:
            res[key] = val
    return res


def snapshot(args):
    return {key: (val.clone() if torch.is_tensor(val) else np.array(val, copy=True))
            for key, val in args.items() if isinstance(val, np.ndarray) or torch.is_tensor(val)}


def unchanged(args, snap):
    for key, old in snap.items():
        new = args[key]
        if torch.is_tensor(old):
            if not torch.equal(old, new):
                return False
        elif not np.array_equal(old, new):
            return False
    return True


def reference(module, args):
    """float64 reference on the (possibly float32-rounded) inputs."""
    a = {key: (val.astype(np.float64) if isinstance(val, np.ndarray) and val.dtype == np.float32 else
               val.double() if torch.is_tensor(val) and val.dtype == torch.float32 and key != "alibi_slopes"
               else val) for key, val in args.items()}
    if module == "numpy_fwd":
        return ref_np(**a)
    if module == "torch_sdpa_fwd":
        return ref_sdpa(**a)
    if module == "flash_fwd":
        return ref_flash(**a)
    return ref_bwd(**a)


def check_output(module, out, args, dtype):
    """Return the relative error (inf for a wrong dtype/shape or non-finite values)."""
    ref = reference(module, args)
    if module == "numpy_bwd":
        if not isinstance(out, tuple) or len(out) != 3:
            return float("inf")
        errs = []
        for got, want, like in zip(out, ref, (args["q"], args["k"], args["v"])):
            if got.dtype != like.dtype or got.shape != like.shape:
                return float("inf")
            errs.append(rel_err(got, want))
        return max(errs)
    if torch.is_tensor(out):
        like = args["query"] if "query" in args else args["q"]
        if out.dtype != like.dtype:
            return float("inf")
        out = out.detach().numpy()
    else:
        if out.dtype != args["q"].dtype:
            return float("inf")
    return rel_err(out, ref)


def cross_check_references():
    rng = np.random.default_rng(5)
    # sdpa reference (bool mask, causal) against the NumPy one
    q, k, v = (rng.standard_normal(s) for s in ((2, 3, 20, 8), (2, 3, 33, 8), (2, 3, 33, 5)))
    m = rng.random((2, 3, 20, 33)) < 0.6
    m[..., 3, :] = False
    a = ref_sdpa(torch.tensor(q), torch.tensor(k), torch.tensor(v), torch.tensor(m), False, 0.7)
    if rel_err(a, ref_np(q, k, v, m, 0.7)) > 1e-13:
        problem("reference cross-check: sdpa(bool mask) != refimpl")
    tl = np.arange(33)[None, :] <= np.arange(20)[:, None]
    a = ref_sdpa(torch.tensor(q), torch.tensor(k), torch.tensor(v), None, True, None)
    if rel_err(a, ref_np(q, k, v, tl)) > 1e-13:
        problem("reference cross-check: sdpa(is_causal) != refimpl with a top-left mask")
    add = np.where(m, rng.standard_normal(m.shape), -np.inf)
    a = ref_sdpa(torch.tensor(q), torch.tensor(k), torch.tensor(v), torch.tensor(add), False, None)
    direct = ref_core(q, k, v, None, None, add)
    if rel_err(a, direct) > 1e-13:
        problem("reference cross-check: sdpa(additive) != direct biased softmax")
    # flash reference (causal + window, GQA) against the NumPy one with an explicit mask
    qf, kf, vf = (rng.standard_normal(s) for s in ((2, 25, 4, 8), (2, 40, 2, 8), (2, 40, 2, 6)))
    a = ref_flash(torch.tensor(qf), torch.tensor(kf), torch.tensor(vf), None, True, (7, -1))
    keep = np.zeros((25, 40), dtype=bool)
    for i in range(25):
        keep[i, max(0, i + 15 - 7):i + 15 + 1] = True
    b = ref_np(qf.transpose(0, 2, 1, 3), np.repeat(kf.transpose(0, 2, 1, 3), 2, axis=1),
               np.repeat(vf.transpose(0, 2, 1, 3), 2, axis=1), keep).transpose(0, 2, 1, 3)
    if rel_err(a, b) > 1e-13:
        problem("reference cross-check: flash(causal, window) != refimpl with an explicit band")
    # backward reference against torch autograd on every backward case
    for label, args, _ in bwd_cases():
        mine = ref_bwd(**args)
        auto = autograd_bwd(**args)
        if max(rel_err(x, y) for x, y in zip(mine, auto)) > 1e-12:
            problem("reference cross-check: backward reference != autograd on " + label)


def bug_sections(path):
    """Map function name -> number of '# BUG:' markers in its section (between '# ----' separators)."""
    text = open(path).read()
    sections = re.split(r"\n# -{20,}\n", text)
    counts = {}
    for sec in sections:
        n = sec.count("# BUG:")
        for fn in re.findall(r"^def (\w+)\(", sec, flags=re.M):
            counts[fn] = n
    return counts, sections[0].count("# BUG:")


def check_catalog(mod, modname, api, all_names):
    cat = getattr(mod, "CATALOG", None)
    if not isinstance(cat, list) or not cat:
        problem(modname + ": CATALOG missing or empty")
        return []
    counts, head = bug_sections(os.path.join(HERE, modname + ".py"))
    if head:
        problem(modname + ": '# BUG:' outside any kernel section")
    for e in cat:
        if set(e) != KEYS:
            problem("{}: {} has keys {}".format(modname, e.get("name"), sorted(e)))
            continue
        nm = e["name"]
        if nm in all_names:
            problem("duplicate name " + nm)
        all_names.add(nm)
        if e["api"] != api:
            problem(nm + ": api " + str(e["api"]))
        if not callable(getattr(mod, e["fn"], None)):
            problem(nm + ": fn not found " + str(e["fn"]))
        if e["dtype"] not in ("float64", "float32"):
            problem(nm + ": dtype " + str(e["dtype"]))
        if not set(e["features"]) <= FEATURES:
            problem(nm + ": features " + str(e["features"]))
        nbug = counts.get(e["fn"], -1)
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")):
                problem(nm + ": correct kernel with bug/source fields")
            if nbug != 0:
                problem(nm + ": correct kernel has {} '# BUG:' markers".format(nbug))
        else:
            if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or ""):
                problem(nm + ": bug not kebab-case")
            if not e["parameter"]:
                problem(nm + ": no parameter")
            mt = re.fullmatch(r"([\w.-]+/[\w.-]+)#(\d+)", e["source"] or "")
            if not mt or not re.fullmatch(r"https://github\.com/{}/(issues|pull)/{}".format(
                    re.escape(mt.group(1)), mt.group(2)), e["report"] or ""):
                problem(nm + ": source/report disagree")
            if nbug != 1:
                problem(nm + ": broken kernel has {} '# BUG:' markers".format(nbug))
    return cat


def main():
    torch.set_num_threads(1)
    np.seterr(all="ignore")
    cross_check_references()
    cases = {"numpy_fwd": np_cases(), "torch_sdpa_fwd": sdpa_cases(), "flash_fwd": flash_cases(),
             "numpy_bwd": bwd_cases()}
    all_names = set()
    summary = []
    total_broken = total_correct = 0
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    for modname, api in MODULES:
        mod = load(modname)
        cat = check_catalog(mod, modname, api, all_names)
        print("{}.py ({})".format(modname, api))
        nb = nc = 0
        for e in cat:
            fn = getattr(mod, e["fn"], None)
            if fn is None:
                continue
            worst = {"float64": 0.0, "float32": 0.0}
            for label, args64, large in cases[modname]:
                for dtype in ("float64", "float32"):
                    if large and dtype == "float32":
                        continue
                    args = cast_args(args64, dtype)
                    snap = snapshot(args)
                    try:
                        with np.errstate(all="ignore"):
                            out = fn(**args)
                        err = check_output(modname, out, args, dtype)
                    except Exception as exc:  # a crash counts as a difference
                        err = float("inf")
                        if e["correct"]:
                            problem("{} raised {!r} on {} {}".format(e["name"], exc, label, dtype))
                    if not unchanged(args, snap):
                        problem("{} modified its inputs on {} {}".format(e["name"], label, dtype))
                    worst[dtype] = max(worst[dtype], err)
                    if e["correct"] and not err <= OK_TOL[dtype]:
                        problem("{} (correct) error {:.3g} on {} {}".format(e["name"], err, label, dtype))
            if e["correct"]:
                nc += 1
            else:
                nb += 1
                if not worst[e["dtype"]] > DIFF_TOL[e["dtype"]]:
                    problem("{} (broken) never differs in {} (worst {:.3g})".format(
                        e["name"], e["dtype"], worst[e["dtype"]]))
            print("  {:38s} {:7s} f64 {:<9.3g} f32 {:<9.3g}".format(
                e["name"], "ok" if e["correct"] else "broken", worst["float64"], worst["float32"]))
        summary.append("{} {} broken + {} correct".format(modname, nb, nc))
        total_broken += nb
        total_correct += nc
    if total_broken < 36 or total_correct < 9:
        problem("counts: {} broken, {} correct".format(total_broken, total_correct))
    if PROBLEMS:
        for p in PROBLEMS:
            print("PROBLEM:", p)
        print("SELF-CHECK FAILED: {} problem(s)".format(len(PROBLEMS)))
        return 1
    print("SELF-CHECK PASSED: " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
