"""``refimpl bench --only check``: how long the conformance suite takes and how much memory it needs.

Each run is a fresh ``refimpl check`` process (its wall time and peak RSS measured from outside, by
``os.wait4``): a user's check — ``refimpl check --target spec`` with nothing else, so the target against the
reference only, float64 + float32 — of the quick and default suites with a plain NumPy target
(:func:`numpy_target`, loaded by spec, run in the isolated worker), and the default suite's ``onnxruntime``
column alone. Goals (issue #25): a user's check of the default suite <= 15 s and of the quick suite <= 3 s on the
2-core machine (issue #14/#17: peak RSS <= 1.5 GiB); the ONNX Runtime column adds <= 30 s to the default suite.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import time

import numpy as np

__all__ = ["numpy_target", "check_lines"]


def numpy_target(q, k, v, mask=None, scale=None):
    """A plain, correct NumPy attention in the refimpl protocol: what a user would hand to ``refimpl check``."""
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    z = (q @ np.swapaxes(k, -1, -2)) * s                        # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    m = z.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(z - m)
    d = e.sum(axis=-1, keepdims=True)
    w = e / np.where(d > 0, d, 1)
    return w @ v                                                # (..., Sq, Sk) x (..., Sk, Dv) -> (..., Sq, Dv)


def _run(args: list[str]) -> tuple[float, float, int, str]:
    """(seconds, peak RSS MiB, exit code, RESULT line) of one ``refimpl check`` process."""
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "refimpl", "check", "--quiet", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t
    result = next((line for line in out.splitlines() if line.startswith("RESULT")), "no RESULT line")
    cells = next((line for line in out.splitlines() if " cells: " in line), "")
    return seconds, usage.ru_maxrss / 1024.0, p.returncode, f"{result}; {cells}"


def check_lines(quick: bool) -> list[str]:
    spec = "refimpl.bench_check:numpy_target"
    base = ["--random", "0", "--no-families"]
    lines = []
    suites = ("quick",) if quick else ("quick", "default")
    goals = {"quick": 3.0, "default": 15.0}
    for suite in suites:
        s, rss, code, result = _run(["--target", spec, "--suite", suite])
        lines.append(f"user check, {suite} suite, a NumPy target (isolated worker, float64 + float32): {s:.1f} s "
                     f"(goal <= {goals[suite]:g} s: {'met' if s <= goals[suite] else 'NOT met'}), peak RSS "
                     f"{rss:.0f} MiB, exit {code}: {result}")
    lines.append(paged_line())
    if not quick:
        s0, _, _, _ = _run(["--only", "refimpl", *base])
        s1, rss, code, result = _run(["--only", "onnxruntime", "--random", "0"])
        lines.append(f"check default suite, onnxruntime column alone: {s1:.1f} s (of which {s0:.1f} s is the "
                     f"process and the fixed rows), peak RSS {rss:.0f} MiB, exit {code}: {result}")
    return lines


def paged_line() -> str:
    """Memory of the kvcache family's paged cases against the same cases with a dense cache (issue #23: at most
    2x): the bytes allocated while a case is made and its cache laid out (tracemalloc's peak), summed."""
    import tracemalloc
    from dataclasses import replace
    from .harness.apis.flash_attn_kvcache import caches
    from .harness.cases.families import select
    from .harness.cases.features import materialise
    paged, dense = [], []
    for spec in select(["kvcache"], "default", ("float64",)):
        if spec.block_size is None:
            continue
        for s, into in ((spec, paged), (replace(spec, block_size=None), dense)):
            tracemalloc.start()
            caches(materialise(s))
            into.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    p, d = np.array(paged, float), np.array(dense, float)
    ratio = p.sum() / d.sum()
    return (f"kvcache family, {len(p)} paged cases against the same cases with a dense cache: {ratio:.2f}x the "
            f"memory in all (goal <= 2x: {'met' if ratio <= 2.0 else 'NOT met'}), median {np.median(p / d):.2f}x, "
            f"largest paged case {p.max() / 2**20:.1f} MiB (dense {d.max() / 2**20:.1f} MiB); a page of 256 keys "
            f"holding a sequence of a few keys costs up to {(p / d).max():.0f}x")
