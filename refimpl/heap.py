"""Freed memory kept for the next allocation, in the check's own process: it allocates, frees and allocates again
arrays of tens of MiB (a decode case's key cache, its copies, the worker's pipe bodies). glibc hands every block
above its mmap threshold (128 KiB to 32 MiB, adaptive) back to the kernel when freed, so each new one costs fresh
page faults: on the default suite most of the check's system time. Raising the mmap and trim thresholds keeps
freed blocks in the heap. The price is memory: the heap keeps what it freed and can fragment, so the check's peak
resident memory grows (measured on the default suite vs a NumPy target: 703 -> 1,064 MiB, docs/performance.md).

A user target's worker gets the same thresholds (:func:`child_environment`) only when no ``--max-memory`` was
given (its limit is then half the machine's memory): the worker runs the user's code and its resident memory is
what the limit judges, and a kept, fragmented heap could make a correct target ``oom`` under a tight limit.
Elsewhere than glibc (musl, macOS) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory", "child_environment", "THRESHOLD"]

THRESHOLD = 1 << 30                # bytes: blocks up to 1 GiB come from (and return to) the heap
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3       # glibc's mallopt parameters (malloc.h)
_TUNABLES = f"glibc.malloc.mmap_threshold={THRESHOLD}:glibc.malloc.trim_threshold={THRESHOLD}"


def keep_freed_memory() -> bool:
    """Apply the thresholds to this process (glibc's ``mallopt``); whether it took effect."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, THRESHOLD))


def child_environment(env: dict) -> dict:
    """``env`` with the same thresholds for a child process (glibc reads ``GLIBC_TUNABLES`` at its start; the
    user's own tunables are kept and come last, so they win)."""
    own = env.get("GLIBC_TUNABLES")
    return {**env, "GLIBC_TUNABLES": _TUNABLES + (":" + own if own else "")}
