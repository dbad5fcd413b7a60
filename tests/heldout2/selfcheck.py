#!/usr/bin/env python3
"""Self-check for the held-out attention kernels in this folder.

Compares every kernel listed in the CATALOGs of numpy_fwd.py, torch_sdpa_fwd.py
and flash_fwd.py with an independent float64 NumPy softmax attention defined
below, over random cases restricted to each kernel's declared features.

* correct kernels must match in float64 (rel err <= 1e-10) and in float32
  (rel err <= 1e-5), return the input dtype, and leave their inputs untouched;
* broken kernels must differ (rel err above the tolerance of their judged
  dtype, NaN, or an exception) on at least one case.

Run:  /usr/bin/python3 tests/heldout2/selfcheck.py      (exit status 0 = ok)
Not a pytest module on purpose.
"""
import importlib.util
import math
import os
import sys
import time
import traceback

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = {"float64": 1e-10, "float32": 1e-5}
NP_DT = {"float64": np.float64, "float32": np.float32}
TORCH_DT = {"float64": torch.float64, "float32": torch.float32}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}
APIS = {"numpy_fwd": "refimpl", "torch_sdpa_fwd": "torch-sdpa", "flash_fwd": "flash-attn"}


def load(modname):
    spec = importlib.util.spec_from_file_location(
        "heldout2_" + modname, os.path.join(HERE, modname + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------
# independent float64 reference
# ---------------------------------------------------------------------------

def ref_attention(q, k, v, scale, keep=None, bias=None, softcap=0.0):
    """q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv) float64 arrays with
    matching leading dims. keep: bool broadcastable to (..., Sq, Sk);
    bias: additive float broadcastable (may hold -inf). Order: scale ->
    softcap -> bias -> mask. Rows with nothing visible -> zeros."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    s = np.einsum("...qd,...kd->...qk", q, k) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    ok = np.isfinite(m)
    p = np.exp(s - np.where(ok, m, 0.0))
    l = p.sum(axis=-1, keepdims=True)
    out = np.einsum("...qk,...kd->...qd", p, v) / np.where(l > 0, l, 1.0)
    return np.where(ok, out, 0.0)


def rel_err(out, ref):
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf"), "shape %s != %s" % (out.shape, ref.shape)
    if not np.all(np.isfinite(out)):
        return float("inf"), "non-finite output"
    denom = max(float(np.abs(ref).max()) if ref.size else 0.0, 1e-30)
    return float(np.abs(out - ref).max()) / denom, ""


# ---------------------------------------------------------------------------
# case generators (float64 master copies; the runner casts per dtype)
# ---------------------------------------------------------------------------

def refimpl_cases(rng):
    shapes = [  # B, H, Sq, Sk, D, Dv
        (1, 1, 4, 4, 8, 8),
        (2, 3, 7, 13, 16, 16),
        (2, 2, 20, 150, 8, 12),
        (1, 2, 33, 200, 16, 16),
        (2, 2, 9, 70, 8, 8),
    ]
    cases = []
    for (B, H, Sq, Sk, D, Dv) in shapes:
        q = rng.standard_normal((B, H, Sq, D))
        k = rng.standard_normal((B, H, Sk, D))
        v = rng.standard_normal((B, H, Sk, Dv))
        i = np.arange(Sq)[:, None] + (Sk - Sq)
        j = np.arange(Sk)[None, :]
        full = rng.random((B, H, Sq, Sk)) < 0.7
        full[:, :, Sq // 2] = False                    # fully masked rows
        kpad = np.ones((B, 1, 1, Sk), bool)
        kpad[-1, ..., (3 * Sk) // 5:] = False          # batch-dependent padding
        lpad = np.ones((B, 1, 1, Sk), bool)
        lpad[-1, ..., : min(40, Sk - 1)] = False       # left padding
        empty = np.ones((B, 1, Sq, Sk), bool)
        empty[0, 0, :2] = False                        # rows with no key
        empty[-1, 0, :, : Sk // 3] = False
        masks = {
            "none": None,
            "random_full": full,
            "key_pad": kpad,
            "left_pad": lpad,
            "causal_br": j <= i,
            "band": (j <= i) & (j >= i - 9),
            "empty_rows": empty,
        }
        for mname, mask in masks.items():
            for scale in (None, 0.37):
                if scale is not None and mname not in ("none", "band"):
                    continue
                dv_ne_d = Dv != D
                keep = None if mask is None else np.broadcast_to(mask, (B, H, Sq, Sk))
                sc = 1.0 / math.sqrt(D) if scale is None else scale
                cases.append(dict(
                    name="B%dH%d Sq%d Sk%d D%d Dv%d mask=%s scale=%s" % (
                        B, H, Sq, Sk, D, Dv, mname, scale),
                    needs={"mask"} if mask is not None else set(),
                    dv_ne_d=dv_ne_d,
                    arrays=(q, k, v), mask=mask, scale=scale,
                    ref=ref_attention(q, k, v, sc, keep=keep)))
    return cases


def sdpa_cases(rng):
    shapes = [  # B, Hq, Hkv, Sq, Sk, D, Dv
        (1, 1, 1, 4, 4, 8, 8),
        (2, 3, 3, 7, 13, 16, 16),
        (2, 4, 2, 20, 150, 8, 12),
        (1, 4, 1, 33, 200, 16, 16),
        (2, 2, 2, 12, 5, 8, 8),
    ]
    cases = []
    for (B, Hq, Hkv, Sq, Sk, D, Dv) in shapes:
        q = rng.standard_normal((B, Hq, Sq, D))
        k = rng.standard_normal((B, Hkv, Sk, D))
        v = rng.standard_normal((B, Hkv, Sk, Dv))
        G = Hq // Hkv
        kr, vr = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)
        full = rng.random((B, Hq, Sq, Sk)) < 0.7
        full[:, :, Sq // 2] = False
        per_batch = rng.random((B, 1, Sq, Sk)) < 0.6
        per_batch[..., 0] = True
        two_d = rng.random((Sq, Sk)) < 0.5
        kpad = np.ones((B, 1, 1, Sk), bool)
        kpad[-1, ..., (3 * Sk) // 5:] = False
        fbias = rng.standard_normal((B, 1, Sq, Sk))
        fbias[rng.random((B, 1, Sq, Sk)) < 0.3] = -np.inf
        fbias[..., 0] = 0.5
        f2d = rng.standard_normal((Sq, Sk)) * 2.0
        masks = {
            "none": None, "bool_full": full, "bool_per_batch": per_batch,
            "bool_2d": two_d, "bool_key_pad": kpad,
            "float_per_batch": fbias, "float_2d": f2d,
        }
        for mname, mask in masks.items():
            for causal in (False, True):
                if causal and mask is not None:
                    continue  # SDPA forbids attn_mask together with is_causal
                for scale in (None, 0.29):
                    if scale is not None and mname not in ("none", "float_2d"):
                        continue
                    sc = 1.0 / math.sqrt(D) if scale is None else scale
                    keep, bias = None, None
                    if causal:
                        keep = np.arange(Sk)[None, :] <= np.arange(Sq)[:, None]
                    if mask is not None:
                        if mask.dtype == bool:
                            keep = mask
                        else:
                            bias = mask
                    needs = set()
                    if mask is not None:
                        needs.add("mask")
                    if causal:
                        needs.add("causal")
                    if Hq != Hkv:
                        needs.add("gqa")
                    cases.append(dict(
                        name="B%d Hq%d Hkv%d Sq%d Sk%d D%d Dv%d mask=%s causal=%s scale=%s"
                        % (B, Hq, Hkv, Sq, Sk, D, Dv, mname, causal, scale),
                        needs=needs, dv_ne_d=Dv != D,
                        arrays=(q, k, v), mask=mask, causal=causal, scale=scale,
                        gqa=Hq != Hkv,
                        ref=ref_attention(q, kr, vr, sc, keep=keep, bias=bias)))
    return cases


def flash_cases(rng):
    shapes = [  # B, Sq, Sk, Hq, Hkv, D, Dv
        (1, 4, 4, 1, 1, 8, 8),
        (2, 7, 13, 3, 3, 16, 16),
        (2, 20, 150, 4, 2, 8, 12),
        (1, 16, 200, 6, 3, 16, 16),
        (2, 150, 150, 2, 2, 8, 8),
        (1, 30, 12, 2, 1, 8, 8),
    ]
    params = [
        dict(),
        dict(causal=True),
        dict(window_size=(5, 2)),
        dict(window_size=(3, 0)),
        dict(window_size=(-1, 4)),
        dict(causal=True, window_size=(8, -1)),
        dict(softcap=1.5, causal=True),
        dict(softcap=2.0),
        dict(alibi="h"),
        dict(alibi="bh", causal=True),
        dict(softmax_scale=0.21, window_size=(6, 6)),
        dict(alibi="h", softcap=3.0, window_size=(7, 3)),
    ]
    cases = []
    for (B, Sq, Sk, Hq, Hkv, D, Dv) in shapes:
        q = rng.standard_normal((B, Sq, Hq, D))
        k = rng.standard_normal((B, Sk, Hkv, D))
        v = rng.standard_normal((B, Sk, Hkv, Dv))
        G = Hq // Hkv
        qh = q.transpose(0, 2, 1, 3)
        kh = np.repeat(k.transpose(0, 2, 1, 3), G, axis=1)
        vh = np.repeat(v.transpose(0, 2, 1, 3), G, axis=1)
        base_slopes = 2.0 ** (-8.0 * (np.arange(Hq) + 1) / Hq)
        for prm in params:
            causal = prm.get("causal", False)
            left, right = prm.get("window_size", (-1, -1))
            softcap = prm.get("softcap", 0.0)
            sc = prm.get("softmax_scale", 1.0 / math.sqrt(D))
            i = np.arange(Sq)[:, None] + (Sk - Sq)
            j = np.arange(Sk)[None, :]
            keep = np.ones((Sq, Sk), bool)
            if causal:
                keep &= j <= i
            if right >= 0:
                keep &= j <= i + right
            if left >= 0:
                keep &= j >= i - left
            slopes, bias = None, None
            if "alibi" in prm:
                if prm["alibi"] == "h":
                    slopes = base_slopes.copy()
                    sl = slopes.reshape(1, Hq, 1, 1)
                else:
                    slopes = base_slopes[None, :] * (1.0 + 0.5 * np.arange(B)[:, None])
                    sl = slopes.reshape(B, Hq, 1, 1)
                bias = -sl * np.abs(i - j)
                # flash-attn takes float32 slopes: the reference uses those values
                slopes = slopes.astype(np.float32).astype(np.float64)
                bias = -slopes.reshape(sl.shape) * np.abs(i - j)
            needs = set()
            if causal:
                needs.add("causal")
            if left >= 0 or right >= 0:
                needs.add("window")
            if softcap > 0:
                needs.add("softcap")
            if slopes is not None:
                needs.add("alibi")
            if Hq != Hkv:
                needs.add("gqa")
            kw = {kk: vv for kk, vv in prm.items() if kk != "alibi"}
            ref = ref_attention(qh, kh, vh, sc, keep=keep, bias=bias, softcap=softcap)
            cases.append(dict(
                name="B%d Sq%d Sk%d Hq%d Hkv%d D%d Dv%d %s" % (
                    B, Sq, Sk, Hq, Hkv, D, Dv,
                    ",".join("%s=%s" % kv for kv in sorted(prm.items())) or "plain"),
                needs=needs, dv_ne_d=Dv != D, arrays=(q, k, v), kwargs=kw,
                slopes=slopes, ref=ref.transpose(0, 2, 1, 3)))
    return cases


# ---------------------------------------------------------------------------
# runners
# ---------------------------------------------------------------------------

def run_refimpl(fn, case, dtype):
    dt = NP_DT[dtype]
    q, k, v = (np.ascontiguousarray(a, dtype=dt) for a in case["arrays"])
    mask = None if case["mask"] is None else case["mask"].copy()
    before = [a.copy() for a in (q, k, v)] + ([mask.copy()] if mask is not None else [])
    out = fn(q, k, v, mask=mask, scale=case["scale"])
    if isinstance(out, tuple):
        out = out[0]
    after = [q, k, v] + ([mask] if mask is not None else [])
    mutated = any(not np.array_equal(b, a) for b, a in zip(before, after))
    return np.asarray(out), np.asarray(out).dtype == dt, mutated


def run_sdpa(fn, case, dtype):
    dt = TORCH_DT[dtype]
    q, k, v = (torch.tensor(a, dtype=dt) for a in case["arrays"])
    mask = case["mask"]
    if mask is not None:
        mask = torch.tensor(mask) if mask.dtype == bool else torch.tensor(mask, dtype=dt)
    ins = [q, k, v] + ([mask] if mask is not None else [])
    before = [t.clone() for t in ins]
    out = fn(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=case["causal"],
             scale=case["scale"], enable_gqa=case["gqa"])
    mutated = any(not torch.equal(b, a) for b, a in zip(before, ins))
    return out.detach().numpy(), out.dtype == dt, mutated


def run_flash(fn, case, dtype):
    dt = TORCH_DT[dtype]
    q, k, v = (torch.tensor(a, dtype=dt) for a in case["arrays"])
    kw = dict(case["kwargs"])
    ins = [q, k, v]
    if case["slopes"] is not None:
        kw["alibi_slopes"] = torch.tensor(case["slopes"], dtype=torch.float32)
        ins.append(kw["alibi_slopes"])
    before = [t.clone() for t in ins]
    out = fn(q, k, v, **kw)
    if isinstance(out, tuple):
        out = out[0]
    mutated = any(not torch.equal(b, a) for b, a in zip(before, ins))
    return out.detach().numpy(), out.dtype == dt, mutated


def applicable(case, features):
    if not case["needs"] <= set(features):
        return False
    if case["dv_ne_d"] and "dv-ne-d" not in features:
        return False
    return True


def check_entry(entry, mod, modname):
    problems = []
    for key in ("name", "api", "fn", "correct", "bug", "parameter", "source",
                "report", "dtype", "features"):
        if key not in entry:
            problems.append("missing key %r" % key)
    if entry.get("api") != APIS[modname]:
        problems.append("api %r does not match module" % entry.get("api"))
    if not callable(getattr(mod, entry.get("fn", ""), None)):
        problems.append("fn %r not found" % entry.get("fn"))
    if entry.get("dtype") not in TOL:
        problems.append("bad dtype %r" % entry.get("dtype"))
    if not set(entry.get("features", [])) <= FEATURES:
        problems.append("unknown features %r" % entry.get("features"))
    if not entry.get("correct"):
        for key in ("bug", "source", "report"):
            if not entry.get(key):
                problems.append("broken kernel without %s" % key)
    return problems


def main():
    t0 = time.time()
    rng = np.random.default_rng(20240917)
    suites = [
        ("numpy_fwd", refimpl_cases(rng), run_refimpl),
        ("torch_sdpa_fwd", sdpa_cases(rng), run_sdpa),
        ("flash_fwd", flash_cases(rng), run_flash),
    ]
    torch.set_num_threads(1)
    failures = 0
    counts = {}
    names = set()
    for modname, cases, runner in suites:
        mod = load(modname)
        print("== %s (%d cases generated)" % (modname, len(cases)))
        for entry in mod.CATALOG:
            problems = check_entry(entry, mod, modname)
            if entry["name"] in names:
                problems.append("duplicate name")
            names.add(entry["name"])
            fn = getattr(mod, entry["fn"], None)
            key = (entry["api"], "correct" if entry["correct"] else "broken")
            counts[key] = counts.get(key, 0) + 1
            mycases = [c for c in cases if applicable(c, entry["features"])]
            dtypes = ["float64", "float32"] if entry["correct"] else [entry["dtype"]]
            worst = {dt: (0.0, "") for dt in dtypes}
            n_diff = 0
            for dt in dtypes:
                for case in mycases:
                    try:
                        out, dtype_ok, mutated = runner(fn, case, dt)
                        err, why = rel_err(out, case["ref"])
                        if entry["correct"]:
                            if not dtype_ok:
                                problems.append("%s: wrong output dtype [%s]" % (dt, case["name"]))
                            if mutated:
                                problems.append("%s: inputs modified [%s]" % (dt, case["name"]))
                    except Exception as exc:  # broken kernels may crash
                        err, why = float("inf"), "exception %s: %s" % (type(exc).__name__, exc)
                        if entry["correct"]:
                            traceback.print_exc()
                    if err > worst[dt][0] or (err == worst[dt][0] == 0.0 and not worst[dt][1]):
                        worst[dt] = (err, case["name"] + ((" (" + why + ")") if why else ""))
                    if err > TOL[dt]:
                        n_diff += 1
                        if entry["correct"]:
                            problems.append("%s: rel err %.3g > %g [%s %s]" % (
                                dt, err, TOL[dt], case["name"], why))
            if not entry["correct"] and n_diff == 0:
                problems.append("never differs from the reference (%d cases)" % len(mycases))
            status = "ok" if not problems else "FAIL"
            tag = "correct" if entry["correct"] else "broken "
            for dt in dtypes:
                err, where = worst[dt]
                print("  [%s] %-4s %-30s %s worst rel err %-9.3g (%d/%d cases differ) at %s" % (
                    tag, status, entry["name"], dt, err, n_diff, len(mycases) * len(dtypes), where))
            for p in problems[:5]:
                print("      !! " + p)
            failures += bool(problems)
    total_b = sum(v for (a, s), v in counts.items() if s == "broken")
    total_c = sum(v for (a, s), v in counts.items() if s == "correct")
    print("\ncounts: " + ", ".join("%s %s=%d" % (a, s, v) for (a, s), v in sorted(counts.items())))
    print("total: %d broken, %d correct; %.1f s" % (total_b, total_c, time.time() - t0))
    if failures:
        print("SELFCHECK FAILED: %d kernel(s) with problems" % failures)
        return 1
    print("SELFCHECK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
