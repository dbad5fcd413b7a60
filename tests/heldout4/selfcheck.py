"""Self-check of the held-out kernels in this folder (run with /usr/bin/python3 tests/heldout4/selfcheck.py).

References are written here from the four API contracts (float64 NumPy; the backward also via torch autograd).
Checks: CATALOG validity, one `# BUG:` per broken kernel and none in correct ones, correct kernels within 1e-10
(float64) / 1e-5 (float32) of the reference on every case, each broken kernel off by > 1e-8 / > 1e-4 (or
non-finite) on at least one case in its judged dtype, dtype and shape kept, inputs unmodified, no exceptions.
Exit status 0 only if everything holds.
"""
import importlib
import inspect
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
TOL_CORRECT = {"float64": 1e-10, "float32": 1e-5}
TOL_BROKEN = {"float64": 1e-8, "float32": 1e-4}

problems = []
entry_caught = {}


def problem(msg):
    problems.append(msg)
    print("PROBLEM:", msg)


# ================================================================================================================
# references (float64)
# ================================================================================================================

def _softmax_rows_np(s):
    dead = np.isneginf(s).all(axis=-1, keepdims=True)
    m = np.where(dead, 0.0, s.max(axis=-1, keepdims=True))
    e = np.exp(s - m)
    e = np.where(dead, 0.0, e)
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z > 0, z, 1.0)


def ref_refimpl(q, k, v, mask, scale):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return _softmax_rows_np(s) @ v


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (t.detach().to(torch.float64).numpy() for t in (query, key, value))
    hq, hkv = q.shape[1], k.shape[1]
    if enable_gqa:
        idx = np.arange(hq) // (hq // hkv)
        k, v = k[:, idx], v[:, idx]
    sq, sk = q.shape[2], k.shape[2]
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * sc
    if is_causal:
        s = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None], s, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = np.where(attn_mask.numpy(), s, -np.inf)
        else:
            s = s + attn_mask.detach().to(torch.float64).numpy()
    return _softmax_rows_np(s) @ v


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    Q, K, V = (t.detach().to(torch.float64).numpy().transpose(0, 2, 1, 3) for t in (q, k, v))
    b, hq, sq, d = Q.shape
    hkv, sk = K.shape[1], K.shape[2]
    idx = np.arange(hq) // (hq // hkv)
    K, V = K[:, idx], V[:, idx]
    sc = 1.0 / np.sqrt(d) if softmax_scale is None else softmax_scale
    s = Q @ np.swapaxes(K, -1, -2) * sc
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    if alibi_slopes is not None:
        sl = alibi_slopes.detach().to(torch.float64).numpy()
        sl = np.broadcast_to(sl, (b, hq))
        s = s - sl[:, :, None, None] * np.abs(i - j)[None, None]
    left, right = window_size
    if causal:
        right = 0
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    s = np.where(keep, s, -np.inf)
    return (_softmax_rows_np(s) @ V).transpose(0, 2, 1, 3)


def _sum_to(g, shape):
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def ref_bwd_numpy(q, k, v, do, mask, scale):
    q, k, v, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, do))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * sc
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = _softmax_rows_np(s)
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True))
    dq = ds @ k * sc
    dk = np.swapaxes(ds, -1, -2) @ q * sc
    return _sum_to(dq, q.shape), _sum_to(dk, k.shape), _sum_to(dv, v.shape), o


def ref_bwd_autograd(q, k, v, do, mask, scale):
    tq, tk, tv = (torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in (q, k, v))
    tdo = torch.tensor(np.asarray(do, dtype=np.float64))
    sc = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(tq, tk.transpose(-1, -2)) * sc
    if mask is not None:
        keep = torch.from_numpy(np.broadcast_to(mask, s.shape).copy())
    else:
        keep = torch.ones(s.shape, dtype=torch.bool)
    dead = ~keep.any(dim=-1, keepdim=True)
    s = torch.where(keep, s, torch.tensor(float("-inf"), dtype=torch.float64))
    s = torch.where(dead, torch.zeros_like(s), s)
    p = torch.softmax(s, dim=-1) * (~dead)
    o = torch.matmul(p, tv)
    (o * tdo).sum().backward()
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


# ================================================================================================================
# cases
# ================================================================================================================

def _rng(seed):
    return np.random.default_rng(seed)


def _int_qk(rng, shape, lim=20):
    return rng.integers(-lim, lim + 1, size=shape).astype(np.float64)


def _n3(r, qs, ks, vs):
    return dict(q=r.standard_normal(qs), k=r.standard_normal(ks), v=r.standard_normal(vs))


def _t3(r, qs, ks, vs):
    return dict(query=torch.from_numpy(r.standard_normal(qs)), key=torch.from_numpy(r.standard_normal(ks)),
                value=torch.from_numpy(r.standard_normal(vs)))


def _causal_br(sq, sk):
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)


def _padding(lengths, sq, sk):
    m = np.zeros((len(lengths), 1, 1, sk), dtype=bool)
    for b, n in enumerate(lengths):
        m[b, ..., :n] = True
    return np.broadcast_to(m, (len(lengths), 1, sq, sk)).copy()


def refimpl_cases():
    cases = []
    r = _rng(1)
    cases.append(("basic Sq<Sk D!=Dv", dict(**_n3(r, (2, 3, 37, 24), (2, 3, 150, 24), (2, 3, 150, 40)),
                                            mask=None, scale=None)))
    r = _rng(2)
    cases.append(("Sq>Sk causal bottom-right (dead rows)",
                  dict(**_n3(r, (2, 2, 150, 16), (2, 2, 37, 16), (2, 2, 37, 16)),
                       mask=_causal_br(150, 37), scale=None)))
    r = _rng(3)
    cases.append(("padding incl. zero length",
                  dict(**_n3(r, (3, 2, 45, 32), (3, 2, 200, 32), (3, 2, 200, 24)),
                       mask=_padding([200, 0, 77], 45, 200), scale=None)))
    r = _rng(4)
    m = r.random((2, 3, 60, 70)) < 0.6
    m[0, 1, 5] = False
    m[1, 2, 17] = False
    cases.append(("per-head random mask", dict(**_n3(r, (2, 3, 60, 16), (2, 3, 70, 16), (2, 3, 70, 16)),
                                               mask=m, scale=0.3)))
    r = _rng(5)
    i, j = np.arange(130)[:, None], np.arange(130)[None, :]
    cases.append(("band mask |i-j|<=5", dict(**_n3(r, (1, 2, 130, 8), (1, 2, 130, 8), (1, 2, 130, 12)),
                                             mask=np.abs(i - j) <= 5,
                                             scale=None)))
    r = _rng(6)
    cases.append(("large logits ~3000, scale 2.0",
                  dict(q=_int_qk(r, (2, 2, 33, 32)), k=_int_qk(r, (2, 2, 97, 32)),
                       v=r.standard_normal((2, 2, 97, 16)), mask=_causal_br(33, 97), scale=2.0)))
    r = _rng(7)
    cases.append(("decode Sq=1 padding", dict(**_n3(r, (2, 4, 1, 16), (2, 4, 129, 16), (2, 4, 129, 16)),
                                              mask=_padding([129, 50], 1, 129), scale=None)))
    r = _rng(8)
    cases.append(("3-D inputs, top-left causal", dict(**_n3(r, (3, 40, 16), (3, 100, 16), (3, 100, 20)),
                                                      mask=np.arange(100)[None, :] <= np.arange(40)[:, None],
                                                      scale=None)))
    r = _rng(9)
    cases.append(("2-D inputs", dict(**_n3(r, (50, 64), (64, 64), (64, 64)), mask=None, scale=0.125)))
    return cases


def sdpa_cases():
    cases = []

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    r = _rng(11)
    cases.append(("basic D!=Dv", dict(**_t3(r, (2, 4, 37, 24), (2, 4, 150, 24), (2, 4, 150, 40)))))
    r = _rng(12)
    cases.append(("causal Sq<Sk", dict(**_t3(r, (2, 3, 37, 16), (2, 3, 150, 16), (2, 3, 150, 16)), is_causal=True)))
    r = _rng(13)
    cases.append(("causal Sq>Sk", dict(**_t3(r, (1, 2, 150, 16), (1, 2, 37, 16), (1, 2, 37, 8)), is_causal=True)))
    r = _rng(14)
    pad = np.zeros((3, 1, 1, 150), dtype=bool)
    pad[0, ..., :150] = True
    pad[2, ..., :61] = True
    cases.append(("bool key padding incl. zero length",
                  dict(**_t3(r, (3, 4, 20, 16), (3, 4, 150, 16), (3, 4, 150, 16)), attn_mask=t(pad))))
    r = _rng(15)
    m = r.random((2, 3, 40, 70)) < 0.5
    m[1, 0, 3] = False
    cases.append(("bool per-head mask", dict(**_t3(r, (2, 3, 40, 16), (2, 3, 70, 16), (2, 3, 70, 16)), attn_mask=t(m))))
    r = _rng(16)
    slopes = 2.0 ** (-np.arange(1, 5))
    i, j = np.arange(64)[:, None] + 36, np.arange(100)[None, :]
    bias = -slopes[None, :, None, None] * np.abs(i - j)[None, None]
    bias = np.repeat(bias, 2, axis=0)
    bias[1, :, :, 80:] = -np.inf
    cases.append(("additive ALiBi + -inf padding", dict(**_t3(r, (2, 4, 64, 16), (2, 4, 100, 16), (2, 4, 100, 16)),
                                                        attn_mask=t(bias))))
    r = _rng(17)
    m = r.random((2, 1, 30, 90)) < 0.7
    cases.append(("GQA 8/2 + per-sample bool mask", dict(**_t3(r, (2, 8, 30, 16), (2, 2, 90, 16), (2, 2, 90, 24)),
                                                         attn_mask=t(m), enable_gqa=True)))
    r = _rng(18)
    cases.append(("MQA 6/1 causal", dict(**_t3(r, (2, 6, 50, 16), (2, 1, 50, 16), (2, 1, 50, 16)),
                                         is_causal=True, enable_gqa=True)))
    r = _rng(19)
    cases.append(("GQA 6/3 explicit scale", dict(**_t3(r, (1, 6, 33, 32), (1, 3, 77, 32), (1, 3, 77, 32)), scale=0.5,
                                                 enable_gqa=True)))
    r = _rng(20)
    cases.append(("decode Sq=1 causal", dict(**_t3(r, (2, 4, 1, 16), (2, 4, 129, 16), (2, 4, 129, 16)),
                                             is_causal=True)))
    r = _rng(21)
    dm = np.zeros((2, 1, 1, 129), dtype=bool)
    dm[0, ..., :129] = True
    dm[1, ..., :40] = True
    cases.append(("decode Sq=1 padding", dict(**_t3(r, (2, 4, 1, 16), (2, 4, 129, 16), (2, 4, 129, 16)),
                                              attn_mask=t(dm))))
    r = _rng(22)
    cases.append(("large logits scale 2.0", dict(query=t(_int_qk(r, (2, 2, 33, 32))), key=t(_int_qk(r, (2, 2, 97, 32))),
                                                 value=t(r.standard_normal((2, 2, 97, 16))), scale=2.0)))
    r = _rng(23)
    fm = np.where(r.random((1, 1, 25, 60)) < 0.5, -1e4, 0.0) + r.standard_normal((1, 1, 25, 60))
    cases.append(("additive finite mask (1,1,Sq,Sk)", dict(**_t3(r, (2, 2, 25, 16), (2, 2, 60, 16), (2, 2, 60, 16)),
                                                           attn_mask=t(fm))))
    return cases


def flash_cases():
    cases = []

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a))

    def qkv(r, b, sq, sk, hq, hkv, d, dv):
        return dict(q=t(r.standard_normal((b, sq, hq, d))), k=t(r.standard_normal((b, sk, hkv, d))),
                    v=t(r.standard_normal((b, sk, hkv, dv))))

    def slopes(h, b=None, r=None):
        s = 2.0 ** (-8.0 * np.arange(1, h + 1) / h)
        if b is not None:
            s = s[None, :] * (1.0 + r.random((b, h)))
        return torch.from_numpy(s.astype(np.float32))

    r = _rng(31)
    cases.append(("basic D!=Dv", dict(**qkv(r, 2, 37, 150, 4, 4, 24, 40))))
    r = _rng(32)
    cases.append(("causal Sq<Sk GQA 6/2", dict(**qkv(r, 2, 37, 150, 6, 2, 16, 16), causal=True)))
    r = _rng(33)
    cases.append(("causal Sq>Sk MQA 4/1", dict(**qkv(r, 1, 150, 37, 4, 1, 16, 8), causal=True)))
    r = _rng(34)
    cases.append(("window (16, 0) Sk=150", dict(**qkv(r, 1, 150, 150, 2, 2, 16, 16), window_size=(16, 0))))
    r = _rng(35)
    cases.append(("window (0, 0)", dict(**qkv(r, 2, 70, 70, 2, 1, 16, 16), window_size=(0, 0))))
    r = _rng(36)
    cases.append(("window (-1, 3) one-sided", dict(**qkv(r, 1, 90, 90, 3, 3, 16, 16), window_size=(-1, 3))))
    r = _rng(37)
    cases.append(("window (8, 4) Sq<Sk", dict(**qkv(r, 2, 60, 130, 4, 2, 16, 16), window_size=(8, 4))))
    r = _rng(38)
    cases.append(("causal + window (20, -1)", dict(**qkv(r, 1, 100, 140, 2, 2, 16, 16), causal=True,
                                                   window_size=(20, -1))))
    r = _rng(39)
    cases.append(("softcap 5 causal", dict(**qkv(r, 2, 64, 64, 2, 2, 32, 32), causal=True, softcap=5.0)))
    r = _rng(40)
    cases.append(("alibi (Hq,) causal", dict(**qkv(r, 2, 40, 100, 4, 2, 16, 16), causal=True, alibi_slopes=slopes(4))))
    r = _rng(41)
    cases.append(("alibi (B, Hq) non-causal", dict(**qkv(r, 2, 50, 80, 4, 4, 16, 16),
                                                   alibi_slopes=slopes(4, 2, r))))
    r = _rng(42)
    cases.append(("softcap + alibi", dict(**qkv(r, 1, 48, 48, 2, 2, 16, 16), softcap=2.0, alibi_slopes=slopes(2))))
    r = _rng(43)
    cases.append(("large logits scale 2.0", dict(q=t(_int_qk(r, (2, 33, 2, 32))), k=t(_int_qk(r, (2, 97, 2, 32))),
                                                 v=t(r.standard_normal((2, 97, 2, 16))), softmax_scale=2.0)))
    r = _rng(44)
    cases.append(("decode Sq=1 causal GQA 6/2", dict(**qkv(r, 2, 1, 200, 6, 2, 16, 16), causal=True)))
    r = _rng(45)
    cases.append(("explicit scale window (30, 10)", dict(**qkv(r, 2, 80, 120, 4, 4, 16, 16), softmax_scale=0.3,
                                                         window_size=(30, 10))))
    return cases


def bwd_cases():
    cases = []
    r = _rng(51)

    def g(*s):
        return r.standard_normal(s)

    cases.append(("basic D=20 Dv=40 Sk=150", dict(q=g(2, 3, 37, 20), k=g(2, 3, 150, 20), v=g(2, 3, 150, 40),
                                                  d_out=g(2, 3, 37, 40), mask=None, scale=None)))
    cases.append(("MQA causal bottom-right", dict(q=g(2, 4, 50, 16), k=g(2, 1, 90, 16), v=g(2, 1, 90, 16),
                                                  d_out=g(2, 4, 50, 16), mask=_causal_br(50, 90), scale=None)))
    cases.append(("padding incl. zero length", dict(q=g(3, 2, 30, 16), k=g(3, 2, 100, 16), v=g(3, 2, 100, 24),
                                                    d_out=g(3, 2, 30, 24), mask=_padding([100, 0, 47], 30, 100),
                                                    scale=None)))
    m = r.random((2, 3, 40, 70)) < 0.6
    m[0, 0, 7] = False
    cases.append(("per-head mask", dict(q=g(2, 3, 40, 16), k=g(2, 3, 70, 16), v=g(2, 3, 70, 16), d_out=g(2, 3, 40, 16),
                                        mask=m, scale=0.4)))
    cases.append(("Sq>Sk causal (dead rows)", dict(q=g(1, 2, 120, 16), k=g(1, 2, 45, 16), v=g(1, 2, 45, 16),
                                                   d_out=g(1, 2, 120, 16), mask=_causal_br(120, 45), scale=None)))
    cases.append(("large logits scale 2.0", dict(q=_int_qk(r, (2, 2, 33, 32)), k=_int_qk(r, (2, 2, 97, 32)),
                                                 v=g(2, 2, 97, 16), d_out=g(2, 2, 33, 16), mask=_causal_br(33, 97),
                                                 scale=2.0)))
    cases.append(("decode Sq=1 MQA", dict(q=g(2, 4, 1, 16), k=g(2, 1, 129, 16), v=g(2, 1, 129, 16),
                                          d_out=g(2, 4, 1, 16), mask=None, scale=None)))
    i, j = np.arange(64)[:, None], np.arange(64)[None, :]
    cases.append(("band, Dv < D", dict(q=g(2, 2, 64, 32), k=g(2, 2, 64, 32), v=g(2, 2, 64, 16), d_out=g(2, 2, 64, 16),
                                       mask=np.abs(i - j) <= 4, scale=None)))
    return cases


# ================================================================================================================
# running
# ================================================================================================================

def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return np.inf
    if not np.all(np.isfinite(out)):
        return np.inf
    den = max(np.linalg.norm(ref), 1e-300)
    return float(np.linalg.norm(out - ref) / den)


def _np_cast(x, dt):
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x.astype(dt)
    return x


def _t_cast(x, dt):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.to(dt)
    return x


def _snapshot(args):
    out = {}
    for key, x in args.items():
        if isinstance(x, np.ndarray):
            out[key] = x.copy()
        elif isinstance(x, torch.Tensor):
            out[key] = x.clone()
    return out


def _unchanged(args, snap):
    for key, x in snap.items():
        y = args[key]
        if isinstance(x, np.ndarray):
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif not torch.equal(x, y):
            return False
    return True


def run_module(modname):
    api, n_broken, n_correct = MODULES[modname]
    mod = importlib.import_module(modname)
    cat = getattr(mod, "CATALOG", None)
    if not isinstance(cat, list):
        problem(f"{modname}: CATALOG missing")
        return []
    if sum(1 for e in cat if e.get("correct") is True) != n_correct or \
            sum(1 for e in cat if e.get("correct") is False) != n_broken:
        problem(f"{modname}: expected {n_broken} broken + {n_correct} correct")
    if modname == "numpy_bwd":
        cases = bwd_cases()
    else:
        cases = {"numpy_fwd": refimpl_cases, "torch_sdpa_fwd": sdpa_cases, "flash_fwd": flash_cases}[modname]()
    # references per dtype
    refs = {}
    for dtname in ("float64", "float32"):
        for ci, (cname, args) in enumerate(cases):
            refs[(dtname, ci)] = make_ref(modname, args, dtname)
    summary = []
    for entry in cat:
        check_entry(modname, api, mod, entry)
        fn = getattr(mod, entry.get("fn", ""), None)
        if fn is None:
            continue
        worst = {"float64": 0.0, "float32": 0.0}
        worst_case = {"float64": "", "float32": ""}
        per_case = {"float64": [], "float32": []}
        for dtname in ("float64", "float32"):
            for ci, (cname, args) in enumerate(cases):
                cargs, ref = refs[(dtname, ci)]
                snap = _snapshot(cargs)
                try:
                    out = call(modname, fn, cargs)
                except Exception as exc:  # noqa: BLE001
                    problem(f"{entry['name']}: raised {type(exc).__name__}: {exc} on '{cname}' {dtname}")
                    continue
                if not _unchanged(cargs, snap):
                    problem(f"{entry['name']}: modified its inputs on '{cname}' {dtname}")
                e = check_out(modname, entry["name"], out, ref, dtname, cname)
                per_case[dtname].append((cname, e))
                if e > worst[dtname]:
                    worst[dtname], worst_case[dtname] = e, cname
        if entry["correct"]:
            for dtname in ("float64", "float32"):
                if worst[dtname] > TOL_CORRECT[dtname]:
                    problem(f"{entry['name']} (correct): rel err {worst[dtname]:.3g} on '{worst_case[dtname]}' "
                            f"{dtname}")
        else:
            jd = entry["dtype"]
            if not worst[jd] > TOL_BROKEN[jd]:
                problem(f"{entry['name']} (broken): not caught in {jd} (max rel err {worst[jd]:.3g})")
        if not entry["correct"]:
            jd = entry["dtype"]
            caught = [c for c, e in per_case[jd] if e > TOL_BROKEN[jd]]
            entry_caught[entry["name"]] = (len(caught), len(cases), caught)
        summary.append((entry["name"], entry["correct"], worst, worst_case))
    return summary


def make_ref(modname, args, dtname):
    if modname == "numpy_fwd":
        dt = np.float64 if dtname == "float64" else np.float32
        cargs = {k_: _np_cast(x, dt) for k_, x in args.items()}
        return cargs, ref_refimpl(cargs["q"], cargs["k"], cargs["v"], cargs["mask"], cargs["scale"])
    if modname == "numpy_bwd":
        dt = np.float64 if dtname == "float64" else np.float32
        cargs = {k_: _np_cast(x, dt) for k_, x in args.items()}
        a = (cargs["q"], cargs["k"], cargs["v"], cargs["d_out"], cargs["mask"], cargs["scale"])
        dq, dk, dv, _ = ref_bwd_numpy(*a)
        aq, ak, av = ref_bwd_autograd(*a)
        for x, y, nm in ((dq, aq, "dq"), (dk, ak, "dk"), (dv, av, "dv")):
            if rel_err(x, y) > 1e-10:
                problem(f"backward references disagree on {nm}: {rel_err(x, y):.3g}")
        return cargs, (aq, ak, av)
    dt = torch.float64 if dtname == "float64" else torch.float32
    cargs = {k_: (x if k_ == "alibi_slopes" else _t_cast(x, dt)) for k_, x in args.items()}
    if modname == "torch_sdpa_fwd":
        ref = ref_sdpa(cargs["query"], cargs["key"], cargs["value"], cargs.get("attn_mask"),
                       cargs.get("is_causal", False), cargs.get("scale"), cargs.get("enable_gqa", False))
    else:
        ref = ref_flash(cargs["q"], cargs["k"], cargs["v"], cargs.get("softmax_scale"), cargs.get("causal", False),
                        cargs.get("window_size", (-1, -1)), cargs.get("softcap", 0.0), cargs.get("alibi_slopes"))
    return cargs, ref


def call(modname, fn, cargs):
    if modname == "numpy_fwd":
        return fn(cargs["q"], cargs["k"], cargs["v"], mask=cargs["mask"], scale=cargs["scale"])
    if modname == "numpy_bwd":
        return fn(cargs["q"], cargs["k"], cargs["v"], cargs["d_out"], mask=cargs["mask"], scale=cargs["scale"])
    if modname == "torch_sdpa_fwd":
        kw = {k_: x for k_, x in cargs.items() if k_ not in ("query", "key", "value")}
        return fn(cargs["query"], cargs["key"], cargs["value"], dropout_p=0.0, **kw)
    kw = {k_: x for k_, x in cargs.items() if k_ not in ("q", "k", "v")}
    return fn(cargs["q"], cargs["k"], cargs["v"], dropout_p=0.0, **kw)


def check_out(modname, name, out, ref, dtname, cname):
    if modname == "numpy_bwd":
        if not (isinstance(out, tuple) and len(out) == 3):
            problem(f"{name}: backward must return (dq, dk, dv)")
            return np.inf
        errs = []
        for o, r_, nm in zip(out, ref, ("dq", "dk", "dv")):
            if not isinstance(o, np.ndarray) or o.dtype != np.dtype(dtname) or o.shape != r_.shape:
                problem(f"{name}: {nm} dtype/shape {getattr(o, 'dtype', type(o))} {getattr(o, 'shape', '')} "
                        f"!= {dtname} {r_.shape} on '{cname}'")
                return np.inf
            errs.append(rel_err(o, r_))
        return max(errs)
    if modname == "numpy_fwd":
        ok = isinstance(out, np.ndarray) and out.dtype == np.dtype(dtname) and out.shape == ref.shape
        arr = out
    else:
        ok = isinstance(out, torch.Tensor) and out.dtype == getattr(torch, dtname) and tuple(out.shape) == ref.shape
        arr = out.detach().to(torch.float64).numpy() if isinstance(out, torch.Tensor) else None
    if not ok:
        problem(f"{name}: output type/dtype/shape wrong on '{cname}' {dtname}: "
                f"{type(out).__name__} {getattr(out, 'dtype', '')} {tuple(getattr(out, 'shape', ()))} vs {ref.shape}")
        return np.inf
    return rel_err(arr, ref)


def check_entry(modname, api, mod, entry):
    name = entry.get("name", "?")
    if set(entry) != KEYS:
        problem(f"{name}: CATALOG keys {sorted(entry)}")
        return
    if entry["api"] != api:
        problem(f"{name}: api {entry['api']} != {api}")
    if not isinstance(entry["correct"], bool):
        problem(f"{name}: correct must be bool")
    if entry["dtype"] not in ("float64", "float32"):
        problem(f"{name}: dtype {entry['dtype']}")
    if not (isinstance(entry["features"], list) and set(entry["features"]) <= FEATURES):
        problem(f"{name}: features {entry['features']}")
    fn = getattr(mod, entry["fn"], None)
    if fn is None or not callable(fn):
        problem(f"{name}: fn {entry['fn']} not in {modname}")
        return
    src = inspect.getsource(fn)
    n_bug = len(re.findall(r"#\s*BUG:", src))
    if entry["correct"]:
        if any(entry[k_] is not None for k_ in ("bug", "parameter", "source", "report")):
            problem(f"{name}: correct kernel with bug/parameter/source/report set")
        if entry["dtype"] != "float64":
            problem(f"{name}: correct kernel dtype should be float64")
        if n_bug:
            problem(f"{name}: correct kernel has a '# BUG:' marker")
    else:
        if n_bug != 1:
            problem(f"{name}: {n_bug} '# BUG:' markers (want 1)")
        if not (isinstance(entry["bug"], str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry["bug"])):
            problem(f"{name}: bug not kebab-case: {entry['bug']}")
        if not (isinstance(entry["parameter"], str) and entry["parameter"]):
            problem(f"{name}: parameter missing")
        m = re.fullmatch(r"([\w.-]+)/([\w.-]+)#(\d+)", entry["source"] or "")
        if not m:
            problem(f"{name}: source {entry['source']}")
        else:
            owner, repo, num = m.groups()
            pat = rf"https://github\.com/{re.escape(owner)}/{re.escape(repo)}/(issues|pull)/{num}"
            if not re.fullmatch(pat, entry["report"] or ""):
                problem(f"{name}: report {entry['report']} does not match source {entry['source']}")


def main():
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    np.seterr(all="ignore")
    all_names, all_sources = [], []
    results = {}
    for modname in MODULES:
        print(f"== {modname} ({MODULES[modname][0]})")
        summary = run_module(modname)
        results[modname] = summary
        mod = importlib.import_module(modname)
        for e in mod.CATALOG:
            all_names.append(e.get("name"))
            if e.get("source"):
                all_sources.append(e["source"])
        for name, correct, worst, wc in summary:
            tag = "correct" if correct else "broken "
            line = f"  {tag} {name:32s} f64 max rel {worst['float64']:.2e}  f32 max rel {worst['float32']:.2e}"
            if not correct:
                nc, nt, caught = entry_caught[name]
                line += f"  caught on {nc}/{nt} cases (e.g. '{caught[0] if caught else '-'}')"
            print(line)
    if len(set(all_names)) != len(all_names):
        problem("CATALOG names are not unique")
    if len(set(all_sources)) != len(all_sources):
        problem("a report is used by more than one broken kernel")
    n = {m: (sum(1 for s in results[m] if not s[1]), sum(1 for s in results[m] if s[1])) for m in results}
    print("counts (broken, correct):", n)
    if problems:
        print(f"SELF-CHECK FAILED: {len(problems)} problem(s)")
        return 1
    print("SELF-CHECK PASSED: all correct kernels within tolerance, every broken kernel caught in its judged dtype")
    return 0


if __name__ == "__main__":
    sys.exit(main())
