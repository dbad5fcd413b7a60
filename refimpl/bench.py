"""``refimpl bench``: performance figures, printed, never asserted (docs/performance.md).

Sections:
  sdpa      (4, 8, 1024, 64) float32 at 1 and 2 BLAS threads: GFLOP/s, fraction of the measured gemm
            rate, time ratios vs the two matmuls alone, vs torch, vs a tutorial-style per-row loop
  accuracy  float32 max abs error against a float64 oracle (S=1024, D=64), plain and online
  memory    plain vs online at long S, each in a fresh process: time and peak RSS
  bridge    R bridge throughput: cross-checked 4x3 cases per second, batched vs one call per case
  rtargets  R functions as targets: cross-checked 2-D cases per second, batched through the bridge
  check     the conformance suite's time and peak memory (quick, default, the onnxruntime column)
  backward  the backward oracle: sdpa_backward / forward time vs torch autograd, and the memory-bounded
            backward's peak RSS at S = 16,384 (refimpl.bench_backward)
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np

SECTIONS = ("sdpa", "accuracy", "memory", "bridge", "rtargets", "check", "backward")


def _best(f, repeat: int = 5) -> float:
    f()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def _limits(n):
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(n)
    except ImportError:
        import contextlib
        return contextlib.nullcontext()


def _row_loop(q, k, v):
    """Tutorial-style: one query row at a time (the Cristina per-query form)."""
    out = np.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype)
    s = q.dtype.type(1 / math.sqrt(q.shape[-1]))
    for idx in np.ndindex(*q.shape[:-2]):
        for i in range(q.shape[-2]):
            z = k[idx] @ q[idx][i] * s
            e = np.exp(z - z.max())
            out[idx][i] = (e / e.sum()) @ v[idx]
    return out


def bench_sdpa(quick: bool) -> None:
    from .attention import scaled_dot_product_attention
    shape = (4, 8, 256 if quick else 1024, 64)
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
    flops = 2 * 2 * shape[0] * shape[1] * shape[2] * shape[2] * shape[3]
    try:
        import torch
    except ImportError:
        torch = None
    print(f"sdpa {shape} float32, {flops / 1e9:.2f} GFLOP in the two matmuls")
    for threads in (1, 2):
        with _limits(threads):
            kt = np.swapaxes(k, -1, -2).copy()
            t_mm = _best(lambda: (q @ kt) @ v)
            t = _best(lambda: scaled_dot_product_attention(q, k, v))
            line = (f"  {threads} thread(s): sdpa {t * 1e3:7.1f} ms = {flops / t / 1e9:5.1f} GFLOP/s = "
                    f"{t_mm / t:4.0%} of the gemm rate ({flops / t_mm / 1e9:.1f} GFLOP/s); "
                    f"time / two matmuls = {t / t_mm:.2f}")
            if torch is not None:
                torch.set_num_threads(threads)
                tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
                s = 1 / math.sqrt(shape[-1])
                t_t = _best(lambda: torch.softmax(tq @ tk.transpose(-1, -2) * s, dim=-1) @ tv)
                line += f"; / torch {torch.__version__} = {t / t_t:.2f}"
            print(line)
    small = (1, 2, 128, 64)
    qs, ks, vs = (a[: small[0], : small[1], : small[2]] for a in (q, k, v))
    with _limits(1):
        t_loop = _best(lambda: _row_loop(qs, ks, vs), 3)
        t_s = _best(lambda: scaled_dot_product_attention(qs, ks, vs))
    print(f"  per-row loop {small}: {t_loop * 1e3:.1f} ms, sdpa {t_s * 1e3:.2f} ms: loop / sdpa = {t_loop / t_s:.0f}")


def bench_accuracy(quick: bool) -> None:
    from .attention import scaled_dot_product_attention
    from .online import sdpa_online
    S, D = (256 if quick else 1024), 64
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((S, D)).astype(np.float32) for _ in range(3))
    oracle, _ = scaled_dot_product_attention(*(a.astype(np.float64) for a in (q, k, v)))
    plain, _ = scaled_dot_product_attention(q, k, v)
    online = sdpa_online(q, k, v)
    e_p = float(np.abs(plain - oracle).max())
    e_o = float(np.abs(online - oracle).max())
    print(f"accuracy S={S} D={D} standard normal: float32 max abs error vs float64 oracle: plain {e_p:.2e}, "
          f"online {e_o:.2e} (online / plain = {e_o / e_p:.2f})")


_MEM_CHILD = r"""
import json, sys, time

def hwm_mib():  # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

import numpy as np
variant, S, D = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from threadpoolctl import threadpool_limits
import refimpl
from refimpl.online import sdpa_online
rng = np.random.default_rng(2)
q, k, v = (rng.standard_normal((S, D)).astype(np.float32) for _ in range(3))
base = hwm_mib()
with threadpool_limits(1):
    t = time.perf_counter()
    if variant == "plain":
        out, w = refimpl.scaled_dot_product_attention(q, k, v)
    else:
        out = sdpa_online(q, k, v)
    t = time.perf_counter() - t
print(json.dumps({"seconds": t, "peak_mib": hwm_mib(), "before_mib": base}))
"""


def bench_memory(quick: bool) -> None:
    S, D = (4096 if quick else 16384), 64
    res = {}
    for variant in ("plain", "online"):
        r = subprocess.run([sys.executable, "-c", _MEM_CHILD, variant, str(S), str(D)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"memory {variant}: failed: {r.stderr.strip()[-300:]}")
            return
        res[variant] = json.loads(r.stdout)
    p, o = res["plain"], res["online"]
    print(f"memory S={S} D={D} float32, 1 thread, fresh process each: plain {p['seconds']:.2f} s, peak RSS "
          f"{p['peak_mib']:.0f} MiB; online {o['seconds']:.2f} s, peak RSS {o['peak_mib']:.0f} MiB "
          f"(interpreter + inputs before the call: {o['before_mib']:.0f} MiB); online / plain time = "
          f"{o['seconds'] / p['seconds']:.2f}")


def bench_bridge(quick: bool) -> None:
    from . import tolerance as tol
    from .attention import scaled_dot_product_attention
    from .r import bridge
    a = bridge.availability()
    if not a.ok:
        print(f"bridge: skipped ({a.reason})")
        return
    rb = bridge.get_bridge()
    n = 2000 if quick else 20000
    rng = np.random.default_rng(4)
    Q, K, V = (rng.standard_normal((n, 4, 3)) for _ in range(3))

    def cross_checked_batch(q, k, v):
        r = rb.batch_stacked("attention", [q, k, v], ("Q", "K", "V"))
        out_r, w_r = r.components
        out, w = scaled_dot_product_attention(q, k, v)                      # (n, 4, 3), (n, 4, 4)
        ok_o = tol.compare(out, out_r, tol.forward_for_sdpa_cases(q, k, v)).ok
        ok_w = tol.compare(w, w_r, tol.forward_for_sdpa_cases(q, k, v, weights=True)).ok
        return int(not (ok_o and ok_w)) + sum(e is not None for e in r.errors)

    cross_checked_batch(Q, K, V)                                           # warm-up: R's JIT, allocations
    times, bad = [], 0
    for _ in range(3):
        t = time.perf_counter()
        bad += cross_checked_batch(Q, K, V)
        times.append(time.perf_counter() - t)
    t_b, t_med = min(times), sorted(times)[1]
    m = min(n, 2000)
    t = time.perf_counter()
    for i in range(m):
        bad += cross_checked_batch(Q[i:i + 1], K[i:i + 1], V[i:i + 1])
    t_1 = time.perf_counter() - t
    print(f"bridge 4x3 cases (R {a.r_version}, attention {a.attention_version}), cross-checked against refimpl: "
          f"batched {n / t_b:,.0f} cases/s best of 3 (median {n / t_med:,.0f}; {n} cases in one call); "
          f"one call per case {m / t_1:,.0f} cases/s; "
          f"batched / per-call = {(n / t_b) / (m / t_1):.1f}; {bad} disagreements")


def bench_check(quick: bool) -> None:
    from .bench_check import check_lines
    for line in check_lines(quick):
        print(line, flush=True)


def bench_rtargets(quick: bool) -> None:
    from .harness.targets.r_targets import bench_r_targets
    print(bench_r_targets(quick), flush=True)


def bench_backward(quick: bool) -> None:
    from .bench_backward import backward_lines
    print("\n".join(backward_lines(quick)))


def main(quick: bool = False, only: list[str] | None = None) -> int:
    only = only or list(SECTIONS)
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        print(f"refimpl bench: unknown section(s) {unknown}; sections: {SECTIONS}", file=sys.stderr)
        return 2
    from .harness.reports.environment import environment
    env = environment()
    print(f"refimpl bench on {os.cpu_count()} cores: Python {env['python']}, NumPy {env['numpy']} ({env['blas']}), "
          f"torch {env['torch']}")
    for s in only:
        globals()[f"bench_{s}"](quick)
    return 0
