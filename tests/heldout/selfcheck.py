"""Standalone self-check for the held-out kernels (not a pytest module).

Run:  /usr/bin/python3 tests/heldout/selfcheck.py

For every CATALOG entry it runs the cases its features allow, compares with a
plain float64 NumPy softmax attention written here, and requires:
  * correct kernels: max relative error <= 1e-10 (float64) / 1e-5 (float32)
    on every case, and inputs left unmodified;
  * broken kernels: at least one case above that tolerance (NaN, a wrong shape
    or an exception also count as "differs").
Exit status is 0 only if every kernel behaves as its catalog entry claims.
"""
import importlib.util
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = {"float64": 1e-10, "float32": 1e-5}
NP_DT = {"float64": np.float64, "float32": np.float32}
T_DT = {"float64": torch.float64, "float32": torch.float32}


def _load(modname):
    spec = importlib.util.spec_from_file_location("heldout_" + modname, os.path.join(HERE, modname + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------
# float64 reference: one plain softmax attention for all three forward APIs
# ---------------------------------------------------------------------------
def ref_attention(q, k, v, scale, keep=None, bias=None, softcap=0.0):
    """q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); keep: bool, True = attend."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    s = np.einsum("...qd,...kd->...qk", q, k) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    if keep is not None:
        shape = np.broadcast_shapes(s.shape, np.shape(keep))
        s = np.where(np.broadcast_to(keep, shape), np.broadcast_to(s, shape), -np.inf)
    row_max = s.max(axis=-1, keepdims=True)
    dead = ~np.isfinite(row_max)                       # every key masked
    w = np.exp(s - np.where(dead, 0.0, row_max))
    p = w / np.where(dead, 1.0, w.sum(axis=-1, keepdims=True))
    p = np.where(dead, 0.0, p)
    lead = np.broadcast_shapes(p.shape[:-2], v.shape[:-2])
    return np.einsum("...qk,...kd->...qd", np.broadcast_to(p, lead + p.shape[-2:]),
                     np.broadcast_to(v, lead + v.shape[-2:]))


def ref_backward(q, k, v, dO, scale, keep=None):
    q, k, v, dO = (np.asarray(x, dtype=np.float64) for x in (q, k, v, dO))
    s = np.einsum("...qd,...kd->...qk", q, k) * scale
    if keep is not None:
        shape = np.broadcast_shapes(s.shape, np.shape(keep))
        s = np.where(np.broadcast_to(keep, shape), np.broadcast_to(s, shape), -np.inf)
    row_max = s.max(axis=-1, keepdims=True)
    dead = ~np.isfinite(row_max)
    w = np.exp(s - np.where(dead, 0.0, row_max))
    P = np.where(dead, 0.0, w / np.where(dead, 1.0, w.sum(axis=-1, keepdims=True)))
    O = np.einsum("...qk,...kd->...qd", P, v)
    dO = np.broadcast_to(dO, O.shape)
    dV = np.einsum("...qk,...qd->...kd", P, dO)
    dP = np.einsum("...qd,...kd->...qk", dO, v)
    dS = P * (dP - np.sum(dO * O, axis=-1, keepdims=True))
    dQ = scale * np.einsum("...qk,...kd->...qd", dS, k)
    dK = scale * np.einsum("...qk,...qd->...kd", dS, q)

    def red(g, shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
        ax = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
        return g.sum(axis=ax, keepdims=True) if ax else g
    return red(dQ, q.shape), red(dK, k.shape), red(dV, v.shape)


def _autograd_crosscheck():
    """Validate ref_backward against torch autograd once (float64)."""
    rng = np.random.default_rng(7)
    q, k, v = rng.standard_normal((2, 3, 9, 5)), rng.standard_normal((2, 1, 13, 5)), rng.standard_normal((2, 1, 13, 7))
    dO = rng.standard_normal((2, 3, 9, 7))
    keep = rng.random((2, 1, 9, 13)) < 0.7
    keep[1, 0, 4] = False
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    s = torch.matmul(tq, tk.transpose(-1, -2)) * 0.4
    s = s.masked_fill(~torch.tensor(keep), float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(s - m)
    den = e.sum(-1, keepdim=True)
    p = e / torch.where(den == 0, torch.ones_like(den), den)
    (torch.matmul(p, tv) * torch.tensor(dO)).sum().backward()
    mine = ref_backward(q, k, v, dO, 0.4, keep)
    err = max(np.abs(a - b.grad.numpy()).max() for a, b in zip(mine, (tq, tk, tv)))
    assert err < 1e-12, "selfcheck reference backward disagrees with autograd: %g" % err
    fwd = ref_attention(q, k, v, 0.4, keep)
    assert np.abs(fwd - torch.matmul(p, tv).detach().numpy()).max() < 1e-12


# ---------------------------------------------------------------------------
# cases: (name, required features, builder(rng, dtype) -> (args, kwargs, ref))
# ---------------------------------------------------------------------------
def _rn(rng, shape, dt, mult=1.0):
    return (rng.standard_normal(shape) * mult).astype(dt)


def refimpl_cases():
    def plain(rng, dt, Dv=16, scale=None, Sq=37, Sk=53, D=16, lead=(2, 3), mult=1.0):
        q, k, v = _rn(rng, lead + (Sq, D), dt, mult), _rn(rng, lead + (Sk, D), dt, mult), _rn(rng, lead + (Sk, Dv), dt)
        sc = 1 / math.sqrt(D) if scale is None else scale
        kw = {} if scale is None else {"scale": scale}
        return (q, k, v), kw, ref_attention(q, k, v, sc)

    def with_mask(mask_fn, Sq=37, Sk=53, D=16, Dv=16, lead=(2, 3)):
        def b(rng, dt):
            q, k, v = _rn(rng, lead + (Sq, D), dt), _rn(rng, lead + (Sk, D), dt), _rn(rng, lead + (Sk, Dv), dt)
            mask = mask_fn(rng)
            return (q, k, v), {"mask": mask}, ref_attention(q, k, v, 1 / math.sqrt(D), mask)
        return b

    def left_pad(rng):
        m = np.ones((2, 1, 1, 53), bool)
        m[1, ..., :30] = False
        return m

    def random_rows(rng):
        m = rng.random((2, 3, 37, 53)) < 0.7
        m[0, 1, 5] = False
        m[1, 2, 30] = False
        return m

    def square_pad(rng):
        m = np.ones((2, 1, 1, 31), bool)
        m[0, ..., -9:] = False
        return m

    def causal2d(rng, dt):
        q, k, v = _rn(rng, (29, 16), dt), _rn(rng, (29, 16), dt), _rn(rng, (29, 16), dt)
        mask = np.tril(np.ones((29, 29), bool))
        return (q, k, v), {"mask": mask}, ref_attention(q, k, v, 0.25, mask)

    return [
        ("plain", set(), lambda r, d: plain(r, d)),
        ("explicit_scale", set(), lambda r, d: plain(r, d, scale=0.37)),
        ("dv_ne_d", {"dv-ne-d"}, lambda r, d: plain(r, d, Dv=24)),
        ("decode_long", set(), lambda r, d: plain(r, d, Sq=1, Sk=300, D=128, Dv=128, lead=(1, 2))),
        ("left_pad_mask", {"mask"}, with_mask(left_pad)),
        ("random_mask_dead_rows", {"mask"}, with_mask(random_rows)),
        ("square_pad_mask", {"mask"}, with_mask(square_pad, Sq=31, Sk=31)),
        ("square_causal_2d", {"mask"}, causal2d),
    ]


def sdpa_cases():
    def mk(rng, dt, B=2, Hq=4, Hkv=None, Sq=33, Sk=47, D=32, Dv=None, mask=None, is_causal=False,
           scale=None, gqa=False):
        Hkv = Hq if Hkv is None else Hkv
        Dv = D if Dv is None else Dv
        q, k, v = _rn(rng, (B, Hq, Sq, D), dt), _rn(rng, (B, Hkv, Sk, D), dt), _rn(rng, (B, Hkv, Sk, Dv), dt)
        kr, vr = (np.repeat(k, Hq // Hkv, axis=1), np.repeat(v, Hq // Hkv, axis=1)) if gqa else (k, v)
        sc = 1 / math.sqrt(D) if scale is None else scale
        keep = bias = None
        if is_causal:
            keep = np.tril(np.ones((Sq, Sk), bool))
        if mask is not None:
            if mask.dtype == bool:
                keep = mask
            else:
                bias = mask.astype(np.float64)
        ref = ref_attention(q, kr, vr, sc, keep=keep, bias=bias)
        kw = {"is_causal": is_causal, "enable_gqa": gqa}
        if scale is not None:
            kw["scale"] = scale
        if mask is not None:
            kw["attn_mask"] = torch.from_numpy(mask if mask.dtype == bool else mask.astype(dt))
        return tuple(torch.from_numpy(x) for x in (q, k, v)), kw, ref

    def bool_mask(rng):
        m = rng.random((2, 1, 33, 47)) < 0.6
        m[1, 0, 3] = False
        return m

    def float_mask(rng):
        m = rng.standard_normal((2, 4, 33, 47))
        m[rng.random(m.shape) < 0.2] = -np.inf
        m[0, 2, 7] = -np.inf
        return m

    return [
        ("plain", set(), lambda r, d: mk(r, d)),
        ("explicit_scale", set(), lambda r, d: mk(r, d, scale=0.2)),
        ("dv_ne_d", {"dv-ne-d"}, lambda r, d: mk(r, d, Dv=20)),
        ("head_dim_96", set(), lambda r, d: mk(r, d, D=96, Sq=17, Sk=29)),
        ("bool_mask_dead_row", {"mask"}, lambda r, d: mk(r, d, mask=bool_mask(r))),
        ("float_mask", {"mask"}, lambda r, d: mk(r, d, mask=float_mask(r))),
        ("bool_mask_2d", {"mask"}, lambda r, d: mk(r, d, mask=np.triu(np.ones((33, 47), bool), k=3))),
        ("causal_sq_lt_sk", {"causal"}, lambda r, d: mk(r, d, Sq=19, Sk=41, is_causal=True)),
        ("causal_sq_gt_sk", {"causal"}, lambda r, d: mk(r, d, Sq=41, Sk=19, is_causal=True)),
        ("causal_square", {"causal"}, lambda r, d: mk(r, d, Sq=33, Sk=33, is_causal=True)),
        ("gqa_8_2", {"gqa"}, lambda r, d: mk(r, d, Hq=8, Hkv=2, Sq=21, Sk=34, gqa=True)),
        ("gqa_6_3_causal", {"gqa", "causal"}, lambda r, d: mk(r, d, B=1, Hq=6, Hkv=3, Sq=25, Sk=25,
                                                               is_causal=True, gqa=True)),
    ]


def flash_cases():
    def mk(rng, dt, B=2, Hq=4, Hkv=None, Sq=45, Sk=61, D=32, Dv=None, causal=False, window=(-1, -1),
           softcap=0.0, alibi=None, softmax_scale=None, qmult=1.0):
        Hkv = Hq if Hkv is None else Hkv
        Dv = D if Dv is None else Dv
        q = _rn(rng, (B, Sq, Hq, D), dt, qmult)
        k, v = _rn(rng, (B, Sk, Hkv, D), dt), _rn(rng, (B, Sk, Hkv, Dv), dt)
        qh = q.transpose(0, 2, 1, 3)
        kh = np.repeat(k.transpose(0, 2, 1, 3), Hq // Hkv, axis=1)
        vh = np.repeat(v.transpose(0, 2, 1, 3), Hq // Hkv, axis=1)
        i = np.arange(Sq)[:, None] + (Sk - Sq)
        j = np.arange(Sk)[None, :]
        keep = np.ones((Sq, Sk), bool)
        if causal:
            keep &= j <= i
        if window[0] >= 0:
            keep &= j >= i - window[0]
        if window[1] >= 0:
            keep &= j <= i + window[1]
        bias = None
        kw = {"causal": causal, "window_size": window, "softcap": softcap}
        if alibi is not None:
            slopes = alibi.astype(np.float32)
            sl = slopes.astype(np.float64).reshape((1, Hq, 1, 1) if slopes.ndim == 1 else (B, Hq, 1, 1))
            bias = -sl * np.abs(i - j)
            kw["alibi_slopes"] = torch.from_numpy(slopes)
        if softmax_scale is not None:
            kw["softmax_scale"] = softmax_scale
        sc = 1 / math.sqrt(D) if softmax_scale is None else softmax_scale
        ref = ref_attention(qh, kh, vh, sc, keep=keep, bias=bias, softcap=softcap).transpose(0, 2, 1, 3)
        return tuple(torch.from_numpy(x) for x in (q, k, v)), kw, ref

    def slopes_h(H):
        return np.array([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)])

    return [
        ("plain", set(), lambda r, d: mk(r, d)),
        ("explicit_scale", set(), lambda r, d: mk(r, d, softmax_scale=0.3)),
        ("dv_ne_d", {"dv-ne-d"}, lambda r, d: mk(r, d, Dv=24)),
        ("causal_sq_lt_sk", {"causal"}, lambda r, d: mk(r, d, Sq=23, Sk=70, causal=True)),
        ("causal_sq_gt_sk", {"causal"}, lambda r, d: mk(r, d, Sq=70, Sk=23, causal=True)),
        ("window_5_3", {"window"}, lambda r, d: mk(r, d, Sq=40, Sk=52, window=(5, 3))),
        ("window_7_0_causal", {"window", "causal"}, lambda r, d: mk(r, d, Sq=30, Sk=75, causal=True, window=(7, 0))),
        ("window_9_left_only", {"window"}, lambda r, d: mk(r, d, Sq=50, Sk=50, window=(9, -1))),
        ("window_4_right_only", {"window"}, lambda r, d: mk(r, d, Sq=50, Sk=50, window=(-1, 4))),
        ("decode_window", {"window", "causal"}, lambda r, d: mk(r, d, B=3, Sq=1, Sk=90, causal=True, window=(16, 0))),
        ("softcap_causal", {"softcap", "causal"}, lambda r, d: mk(r, d, Sq=37, Sk=37, causal=True, softcap=2.0, qmult=3.0)),
        ("softcap_nomask", {"softcap"}, lambda r, d: mk(r, d, Sq=20, Sk=33, softcap=1.5, qmult=3.0)),
        ("alibi_heads", {"alibi"}, lambda r, d: mk(r, d, Sq=40, Sk=40, alibi=slopes_h(4))),
        ("alibi_batch_causal", {"alibi", "causal"},
         lambda r, d: mk(r, d, Sq=28, Sk=44, causal=True, alibi=np.stack([slopes_h(4), 0.5 * slopes_h(4)[::-1]]))),
        ("gqa_6_2_causal", {"gqa", "causal"}, lambda r, d: mk(r, d, Hq=6, Hkv=2, Sq=31, Sk=47, causal=True)),
        ("gqa_8_4", {"gqa"}, lambda r, d: mk(r, d, B=1, Hq=8, Hkv=4, Sq=12, Sk=12)),
    ]


def bwd_cases():
    def mk(rng, dt, qshape=(2, 3, 21, 16), kshape=(2, 3, 34, 16), Dv=16, keep=None, scale=None):
        q = _rn(rng, qshape, dt)
        k = _rn(rng, kshape, dt)
        v = _rn(rng, kshape[:-1] + (Dv,), dt)
        lead = np.broadcast_shapes(qshape[:-2], kshape[:-2])
        dO = _rn(rng, lead + (qshape[-2], Dv), dt)
        sc = 1 / math.sqrt(qshape[-1]) if scale is None else scale
        kw = {}
        if keep is not None:
            kw["mask"] = keep
        if scale is not None:
            kw["scale"] = scale
        return (q, k, v, dO), kw, ref_backward(q, k, v, dO, sc, keep)

    def dead_mask(rng):
        m = rng.random((2, 1, 21, 34)) < 0.65
        m[0, 0, 4] = False
        return m

    return [
        ("plain", set(), lambda r, d: mk(r, d)),
        ("explicit_scale", set(), lambda r, d: mk(r, d, scale=0.5)),
        ("dv_ne_d", {"dv-ne-d"}, lambda r, d: mk(r, d, Dv=24)),
        ("mask_dead_row", {"mask"}, lambda r, d: mk(r, d, keep=dead_mask(r))),
        ("broadcast_kv_heads", {"gqa"}, lambda r, d: mk(r, d, qshape=(2, 4, 21, 16), kshape=(2, 1, 34, 16))),
        ("long_keys", set(), lambda r, d: mk(r, d, qshape=(1, 2, 7, 64), kshape=(1, 2, 150, 64), Dv=40)),
    ]


# ---------------------------------------------------------------------------
def _rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf"), "shape %s != %s" % (out.shape, ref.shape)
    if not np.all(np.isfinite(out)):
        return float("inf"), "non-finite output"
    return float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-300)), ""


def _snapshot(args):
    return [a.copy() if isinstance(a, np.ndarray) else a.clone() for a in args]


def _same(a, b):
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return torch.equal(a, b)


def run_entry(entry, fn, cases, backward=False):
    dt = NP_DT[entry["dtype"]]
    feats = set(entry["features"])
    worst, worst_case, note, ran = 0.0, "", "", 0
    mutated = False
    for ci, (cname, req, build) in enumerate(cases):
        if not req <= feats:
            continue
        rng = np.random.default_rng(1000 + ci)
        args, kw, ref = build(rng, dt)
        snap = _snapshot(args)
        ran += 1
        try:
            with np.errstate(all="ignore"):
                out = fn(*args, **kw)
            if backward:
                errs = [_rel_err(o, r) for o, r in zip(out, ref)]
                err = max(e for e, _ in errs)
                msg = ";".join(m for _, m in errs if m)
            else:
                if isinstance(out, tuple):
                    out = out[0]
                if isinstance(out, torch.Tensor):
                    out = out.detach().numpy()
                err, msg = _rel_err(out, ref)
        except Exception as exc:  # noqa: BLE001 - a crash counts as "differs"
            err, msg = float("inf"), "raised %s: %s" % (type(exc).__name__, str(exc)[:60])
        if not all(_same(a, b) for a, b in zip(args, snap)):
            mutated = True
        if err > worst or not worst_case:
            worst, worst_case, note = err, cname, msg
    tol = TOL[entry["dtype"]]
    if entry["correct"]:
        ok = worst <= tol and not mutated
    else:
        ok = worst > tol
    return ok, worst, worst_case, note, ran, mutated


def main():
    _autograd_crosscheck()
    suites = [("numpy_fwd", refimpl_cases(), False), ("torch_sdpa_fwd", sdpa_cases(), False),
              ("flash_fwd", flash_cases(), False), ("numpy_bwd", bwd_cases(), True)]
    torch.set_num_threads(2)
    n_bad = 0
    counts = {}
    print("%-30s %-15s %-7s %-8s %11s  %s" % ("kernel", "api", "correct", "dtype", "max_rel_err", "worst case / note"))
    for modname, cases, backward in suites:
        mod = _load(modname)
        for entry in mod.CATALOG:
            fn = getattr(mod, entry["fn"])
            ok, worst, wcase, note, ran, mutated = run_entry(entry, fn, cases, backward)
            key = (entry["api"], entry["correct"])
            counts[key] = counts.get(key, 0) + 1
            status = "ok" if ok else "FAIL"
            n_bad += not ok
            extra = (" [" + note + "]") if note else ""
            extra += " [inputs modified]" if mutated else ""
            print("%-30s %-15s %-7s %-8s %11.3e  %s (%d cases)%s  %s" % (
                entry["name"], entry["api"], entry["correct"], entry["dtype"], worst, wcase, ran, extra, status))
    print()
    for (api, correct), n in sorted(counts.items()):
        print("  %-15s %-8s %d" % (api, "correct" if correct else "broken", n))
    print("\n%s: %d kernel(s) not behaving as catalogued" % ("FAILED" if n_bad else "ALL OK", n_bad))
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
