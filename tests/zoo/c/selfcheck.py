#!/usr/bin/python3
"""selfcheck.py: build the C attention zoo and check every symbol against a small float64 NumPy reference.

Standalone: /usr/bin/python3 selfcheck.py  (needs numpy and gcc). Builds libattn.so into a temporary
directory with the README's build line, calls each symbol through ctypes on a few deterministic random cases,
prints a table and exits non-zero if any check fails:

  * correct symbols (attn, attn_online) must match the reference on every case (rtol 1e-9 for float64,
    1e-4 for float32), attn's weights must match too, attn_online must leave the weights buffer untouched,
    and both must return 2 for dtype_bits 16 and 3 for Hq % Hkv != 0;
  * each broken symbol must misbehave on at least one case, in the way its bug predicts (mismatch, error
    code or crash).

attn_segfault_on_wide is always called in a child process (this script re-invoked with --child), so its
crash on the D = 80 case cannot kill the check.
"""
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["attn_correct.c", "attn_online.c", "attn_broken.c"]

CORRECT = ["attn", "attn_online"]
# broken symbol -> the kind of misbehaviour its bug must produce on at least one case
BROKEN = {
    "attn_mask_inverted": "mismatch",
    "attn_no_max": "mismatch",
    "attn_gqa_modulo": "mismatch",
    "attn_last_key_dropped": "mismatch",
    "attn_float_accum_reset": "mismatch",
    "attn_segfault_on_wide": "crash",
    "attn_error_code": "error",
}
IN_CHILD = {"attn_segfault_on_wide"}
SENTINEL = 12345.0


# ---------------------------------------------------------------------------------------------- cases

def _case(name, seed, bits, B, Hq, Hkv, Sq, Sk, D, Dv, mask=None, logit_max=None):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, Hq, Sq, D))
    k = rng.standard_normal((B, Hkv, Sk, D))
    v = rng.standard_normal((B, Hkv, Sk, Dv))
    scale = 1.0 / np.sqrt(D)
    keep = None
    if mask == "random":
        keep = (rng.random((B, Hq, Sq, Sk)) < 0.6).astype(np.uint8)
        keep[0, 0, 0, :] = 0            # a fully masked row
        keep[0, 0, 1, :] = 0
        keep[0, 0, 1, Sk - 1] = 1       # a row whose only kept key is the last one
    elif mask == "causal":
        off = Sk - Sq
        keep = np.broadcast_to(np.tril(np.ones((Sq, Sk), np.uint8), k=off), (B, Hq, Sq, Sk)).copy()
        keep[-1, -1, 0, :] = 0          # a fully masked row
    if logit_max is not None:           # scale so the largest logit is +logit_max: exp overflows past ~709
        g = Hq // Hkv
        dots = np.einsum("bhqd,bhkd->bhqk", q, np.repeat(k, g, axis=1))
        scale = logit_max / dots.max()
    dt = np.float64 if bits == 64 else np.float32
    q, k, v = (np.ascontiguousarray(a, dtype=dt) for a in (q, k, v))
    return dict(name=name, bits=bits, q=q, k=k, v=v, keep=keep, scale=float(scale),
                shape=(B, Hq, Hkv, Sq, Sk, D, Dv))


def make_cases():
    return [
        _case("f64 plain", 1, 64, 2, 2, 2, 5, 7, 8, 8),
        _case("f64 gqa keep Sk45 Dv6", 2, 64, 2, 4, 2, 6, 45, 8, 6, mask="random"),
        _case("f32 gqa keep Sk45 Dv6", 3, 32, 2, 4, 2, 6, 45, 8, 6, mask="random"),
        _case("f32 gqa3 Sk37 D16 Dv12", 4, 32, 1, 6, 2, 4, 37, 16, 12),
        _case("f64 logits 1e3", 5, 64, 1, 2, 1, 4, 20, 8, 8, logit_max=1e3),
        _case("f32 logits 1e3 causal", 6, 32, 1, 2, 2, 6, 9, 8, 5, mask="causal", logit_max=1e3),
        _case("f64 D80 causal Sk70", 7, 64, 1, 4, 2, 8, 70, 80, 40, mask="causal"),
        _case("f32 D80 gqa Sk33", 8, 32, 2, 2, 1, 3, 33, 80, 16),
    ]


# ---------------------------------------------------------------------------------------------- reference

def reference(c):
    q, k, v = (a.astype(np.float64) for a in (c["q"], c["k"], c["v"]))
    B, Hq, Hkv, Sq, Sk, D, Dv = c["shape"]
    g = Hq // Hkv
    kk, vv = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    s = c["scale"] * np.einsum("bhqd,bhkd->bhqk", q, kk)
    kept = np.ones(s.shape, bool) if c["keep"] is None else c["keep"].astype(bool)
    s = np.where(kept, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.where(kept, np.exp(s - m), 0.0)
    total = p.sum(axis=-1, keepdims=True)
    w = p / np.where(total > 0, total, 1.0)    # rows with no kept key: zero weights, zero output
    return np.einsum("bhqk,bhkv->bhqv", w, vv), w


def close(got, want, bits):
    rtol, atol = (1e-9, 1e-12) if bits == 64 else (1e-4, 1e-6)
    got = got.astype(np.float64)
    if not np.all(np.isfinite(got)):
        return False, "nan/inf"
    err = np.abs(got - want)
    ok = bool(np.all(err <= atol + rtol * np.abs(want)))
    return ok, "%.1e" % (err / (atol + rtol * np.abs(want))).max()


# ---------------------------------------------------------------------------------------------- calling

def build(tmp):
    lib = os.path.join(tmp, "libattn.so")
    cmd = ["gcc", "-O2", "-shared", "-fPIC", "-o", lib] + [os.path.join(HERE, s) for s in SOURCES] + ["-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("build failed:\n" + r.stderr)
    return lib


def fn(lib, sym):
    f = getattr(ctypes.CDLL(lib), sym)
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                  ctypes.c_void_p, ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p]
    return f


def call(f, c, bits=None, shape=None, weights=True):
    B, Hq, Hkv, Sq, Sk, D, Dv = c["shape"]
    dt = np.float64 if c["bits"] == 64 else np.float32
    out = np.full((B, Hq, Sq, Dv), np.nan, dt)
    w = np.full((B, Hq, Sq, Sk), SENTINEL, dt) if weights else None
    shp = np.array(shape or c["shape"], np.int64)

    def ptr(a):
        return None if a is None else a.ctypes.data
    rc = f(c["bits"] if bits is None else bits, ptr(c["q"]), ptr(c["k"]), ptr(c["v"]), ptr(c["keep"]),
           ptr(shp), c["scale"], ptr(out), ptr(w))
    return rc, out, w


def judge(sym, c):
    """(status, detail): status is ok | mismatch | error | weights."""
    rc, out, w = call(fn(judge.lib, sym), c)
    if rc != 0:
        return "error", "rc=%d" % rc
    want, want_w = reference(c)
    ok, detail = close(out, want, c["bits"])
    if not ok:
        return "mismatch", detail
    if sym == "attn":
        okw, dw = close(w, want_w, c["bits"])
        if not okw:
            return "weights", "w " + dw
    if sym == "attn_online" and not np.all(w == SENTINEL):
        return "weights", "w written"
    return "ok", detail


def _no_core_dump():
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def judge_in_child(lib, sym, idx):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", lib, sym, str(idx)],
                       capture_output=True, text=True, timeout=120, preexec_fn=_no_core_dump)
    if r.returncode < 0:
        return "crash", "signal %d" % -r.returncode
    if r.returncode != 0:
        return "crash", "exit %d" % r.returncode
    status, detail = json.loads(r.stdout.strip().splitlines()[-1])
    return status, detail


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        judge.lib = sys.argv[2]
        print(json.dumps(judge(sys.argv[3], make_cases()[int(sys.argv[4])])))
        return 0

    cases = make_cases()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        judge.lib = lib = build(tmp)
        results = {}
        for sym in CORRECT + list(BROKEN):
            for i, c in enumerate(cases):
                results[sym, i] = judge_in_child(lib, sym, i) if sym in IN_CHILD else judge(sym, c)

        # error codes of the correct kernels
        extra = {}
        for sym in CORRECT:
            f = fn(lib, sym)
            rc16, _, _ = call(f, cases[0], bits=16)
            B, Hq, Hkv, Sq, Sk, D, Dv = cases[0]["shape"]
            q3 = dict(cases[0], q=np.zeros((B, 3, Sq, D)))
            rc3, _, _ = call(f, q3, shape=(B, 3, 2, Sq, Sk, D, Dv))
            extra[sym] = (rc16, rc3)

    # table
    w0 = max(len(s) for s in CORRECT + list(BROKEN)) + 2
    print("cases:")
    for i, c in enumerate(cases):
        keep = "none" if c["keep"] is None else "mask"
        print("  c%d  %-24s shape=%s keep=%s" % (i, c["name"], c["shape"], keep))
    print()
    print("%-*s" % (w0, "symbol") + "".join("%-11s" % ("c%d" % i) for i in range(len(cases))) + "verdict")
    for sym in CORRECT + list(BROKEN):
        cells, statuses = [], []
        for i in range(len(cases)):
            st, detail = results[sym, i]
            statuses.append(st)
            cells.append("%-11s" % ("ok" if st == "ok" else (detail if st in ("error", "crash") else st)[:10]))
        if sym in CORRECT:
            rc16, rc3 = extra[sym]
            good = all(s == "ok" for s in statuses) and rc16 == 2 and rc3 == 3
            verdict = "PASS (correct; rc16=%d rc3=%d)" % (rc16, rc3) if good else \
                "FAIL (should be correct; rc16=%d rc3=%d)" % (rc16, rc3)
        else:
            want = BROKEN[sym]
            good = want in statuses
            verdict = ("PASS (caught: %s)" if good else "FAIL (expected %s, not seen)") % want
        if not good:
            failures.append(sym)
        print("%-*s" % (w0, sym) + "".join(cells) + verdict)
    print()
    if failures:
        print("FAILED: %s" % ", ".join(failures))
        return 1
    print("all %d symbols behave as expected (%d correct, %d broken caught)"
          % (len(CORRECT) + len(BROKEN), len(CORRECT), len(BROKEN)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
