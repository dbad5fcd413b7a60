"""Benchmark of the backward oracle: printable lines, never asserted (goals in docs/performance.md).

  time    (4, 8, 1024, 64) float64, 1 thread: sdpa_backward (which recomputes the weights with the
          forward) as a ratio to the forward's time, against torch autograd's forward and backward
          (goal: backward <= 2.5 x forward)
  memory  sdpa_backward_online at S = 16,384, D = 64, float64, one (batch, head), in a fresh process:
          time and peak RSS (VmHWM; goal <= 150 MiB; one Sq x Sk float64 matrix would be 2 GiB)

``quick=True`` shrinks both (S = 256 and S = 2,048) for a smoke run.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time

import numpy as np

__all__ = ["backward_lines"]


def _best(fs, repeat: int) -> list[float]:
    """Best of ``repeat`` timed calls of each function after one warm-up, the functions interleaved so
    that a load change on the shared machine disturbs all of them alike; the minimum is the least
    disturbed figure."""
    for f in fs:
        f()
    times = [[] for _ in fs]
    for _ in range(repeat):
        for f, ts in zip(fs, times):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
    return [min(ts) for ts in times]


def _one_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _time_lines(quick: bool) -> list[str]:
    from .attention import scaled_dot_product_attention
    from .backward import sdpa_backward
    shape = (1, 2, 256, 64) if quick else (4, 8, 1024, 64)
    repeat = 2 if quick else 5
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal(shape) for _ in range(4))
    with _one_thread():
        t_f, t_b = _best([lambda: scaled_dot_product_attention(q, k, v), lambda: sdpa_backward(q, k, v, g)], repeat)
    lines = [f"backward {shape} float64, 1 thread: forward {t_f * 1e3:.1f} ms, sdpa_backward {t_b * 1e3:.1f} ms "
             f"(recomputing the weights included): backward / forward = {t_b / t_f:.2f} (goal <= 2.5)"]
    try:
        import torch
    except ImportError:
        return lines + ["  torch: not installed, no comparison"]
    torch.set_num_threads(1)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tg = torch.tensor(g)
    s = 1.0 / np.sqrt(shape[-1])

    def forward():
        return torch.softmax((tq @ tk.transpose(-1, -2)) * s, dim=-1) @ tv   # (B, H, Sq, Dv)

    def forward_backward():
        return torch.autograd.grad(forward(), (tq, tk, tv), tg)

    with _one_thread():
        t_tf, t_tfb = _best([forward, forward_backward], repeat)
    t_tb = t_tfb - t_tf
    lines.append(f"  torch {torch.__version__} autograd, same shape and thread: forward {t_tf * 1e3:.1f} ms, "
                 f"backward {t_tb * 1e3:.1f} ms (backward / forward = {t_tb / t_tf:.2f}), forward + backward "
                 f"{t_tfb * 1e3:.1f} ms; refimpl's sdpa_backward / torch's backward = {t_b / t_tb:.2f}, "
                 f"/ torch's forward + backward = {t_b / t_tfb:.2f}")
    return lines


_MEM_CHILD = r"""
import json, sys, time

def hwm_mib():   # VmHWM: this process's own peak RSS
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

import numpy as np
from threadpoolctl import threadpool_limits
from refimpl.backward_online import sdpa_backward_online
S, D = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(2)
q, k, v, g = (rng.standard_normal((S, D)) for _ in range(4))
before = hwm_mib()
with threadpool_limits(1):
    t = time.perf_counter()
    dq, dk, dv = sdpa_backward_online(q, k, v, g)
    t = time.perf_counter() - t
print(json.dumps({"seconds": t, "peak_mib": hwm_mib(), "before_mib": before}))
"""


def _memory_lines(quick: bool) -> list[str]:
    n, d = (2048 if quick else 16384), 64
    r = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(n), str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        return [f"backward memory: the child process failed: {r.stderr.strip()[-300:]}"]
    m = json.loads(r.stdout)
    full = n * n * 8 / 2 ** 20
    return [f"backward memory S={n} D={d} float64, 1 thread, fresh process: sdpa_backward_online {m['seconds']:.2f} s, "
            f"peak RSS {m['peak_mib']:.0f} MiB (goal <= 150; {m['before_mib']:.0f} MiB with the inputs before the "
            f"call; one S x S float64 matrix would be {full:.0f} MiB)"]


def backward_lines(quick: bool) -> list[str]:
    """The benchmark's figures as printable lines (see the module docstring)."""
    return _time_lines(quick) + _memory_lines(quick)


if __name__ == "__main__":
    print("\n".join(backward_lines("--quick" in sys.argv)))
