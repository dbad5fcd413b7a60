"""Hostile targets with the "refimpl" API: they crash, exit, hang, exhaust memory, flood stdout, return the wrong
kind of thing or refuse some inputs. A harness must survive each one and report it; NEVER call them in-process.

Signature ``fn(q, k, v, mask=None, scale=None)`` with q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv), a bool
keep-mask (True = attend) and scale None -> 1/sqrt(D). When one of them does return an array it is the correct
O = softmax_keys(scale q k^T masked to -inf) v (fully masked row -> 0), computed by `_attention` below, so that
the behaviour under test is the only thing wrong. CATALOG entries carry "hostile": the behaviour's name.
"""
import ctypes
import math
import os
import sys
import time

import numpy as np

_segfault_calls = 0   # calls of `segfault` so far in this process


def _attention(q, k, v, mask=None, scale=None):
    """(O, P): O (..., Sq, Dv), P (..., Sq, Sk); max-subtracted softmax, a fully masked row gives zeros."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = (q @ np.swapaxes(k, -1, -2)) * scale                 # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(m == -np.inf, 0.0, m))
    z = e.sum(axis=-1, keepdims=True)
    p = e / np.where(z == 0, 1.0, z)
    return p @ v, p                                          # (..., Sq, Sk) x (..., Sk, Dv) -> (..., Sq, Dv)


def segfault(q, k, v, mask=None, scale=None):
    """Correct on calls 1 and 2 of the process; the 3rd call reads address 0 and dies with SIGSEGV."""
    global _segfault_calls
    _segfault_calls += 1
    if _segfault_calls >= 3:
        ctypes.string_at(0)                                  # NULL dereference in C: the process gets SIGSEGV
    return _attention(q, k, v, mask, scale)[0]


def exit_zero(q, k, v, mask=None, scale=None):
    """Ends the process at once with status 0 (no return value, no exception, no cleanup)."""
    os._exit(0)


def exit_nonzero(q, k, v, mask=None, scale=None):
    """Ends the process at once with status 3."""
    os._exit(3)


def sys_exit(q, k, v, mask=None, scale=None):
    """Raises SystemExit(4), which a careless `except Exception` does not catch."""
    sys.exit(4)


def hang(q, k, v, mask=None, scale=None):
    """Never returns (sleeps forever)."""
    while True:
        time.sleep(3600)


def alloc(q, k, v, mask=None, scale=None):
    """Allocates 100 MiB zero-filled (hence touched) bytearrays without bound until memory runs out."""
    hoard = []
    while True:
        hoard.append(bytearray(100 * 2**20))


def chatty(q, k, v, mask=None, scale=None):
    """Prints 50 MiB to stdout (50 lines of 1 MiB), then returns the correct output."""
    line = "chatty target says: " + "x" * (2**20 - 21) + "\n"   # exactly 1 MiB
    for _ in range(50):
        sys.stdout.write(line)
    sys.stdout.flush()
    return _attention(q, k, v, mask, scale)[0]


def returns_list(q, k, v, mask=None, scale=None):
    """The correct output, as nested Python lists (.tolist())."""
    return _attention(q, k, v, mask, scale)[0].tolist()


def returns_dict(q, k, v, mask=None, scale=None):
    """The correct output and weights, wrapped in a dict {"output": O, "weights": P}."""
    out, p = _attention(q, k, v, mask, scale)
    return {"output": out, "weights": p}


def returns_none(q, k, v, mask=None, scale=None):
    """Computes the output and forgets the return statement."""
    out = _attention(q, k, v, mask, scale)[0]   # noqa: F841 (the missing `return out` is the point)


def returns_wrong_shape(q, k, v, mask=None, scale=None):
    """The correct values, flattened to 1-D (the kernel's flat buffer never reshaped back to (..., Sq, Dv))."""
    return _attention(q, k, v, mask, scale)[0].ravel()


def returns_string(q, k, v, mask=None, scale=None):
    """The correct output's printed form, str(O)."""
    return str(_attention(q, k, v, mask, scale)[0])


def raises_not_implemented(q, k, v, mask=None, scale=None):
    """Correct without a mask; raises NotImplementedError when a mask is given (an unsupported feature)."""
    if mask is not None:
        raise NotImplementedError("raises_not_implemented: masks are not supported by this kernel")
    return _attention(q, k, v, None, scale)[0]


def raises_value_error(q, k, v, mask=None, scale=None):
    """Correct for square attention; raises ValueError when Sq != Sk."""
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    if Sq != Sk:
        raise ValueError(f"raises_value_error: needs Sq == Sk (self-attention), got Sq = {Sq}, Sk = {Sk}")
    return _attention(q, k, v, mask, scale)[0]


def _entry(fn, hostile, note, features=("mask", "causal", "window")):
    return {"name": fn, "api": "refimpl", "fn": fn, "correct": False, "model": None, "hostile": hostile,
            "convention": "zeros", "dtype": "float64", "features": list(features), "note": note}


CATALOG = [
    _entry("segfault", "segfault", "SIGSEGV (NULL read through ctypes) on the 3rd call, correct before"),
    _entry("exit_zero", "exit-zero", "os._exit(0) inside the call"),
    _entry("exit_nonzero", "exit-nonzero", "os._exit(3) inside the call"),
    _entry("sys_exit", "sys-exit", "sys.exit(4): SystemExit escapes `except Exception`"),
    _entry("hang", "hang", "never returns"),
    _entry("alloc", "alloc", "allocates 100 MiB blocks without bound"),
    _entry("chatty", "chatty", "prints 50 MiB to stdout, then returns the correct output"),
    _entry("returns_list", "returns-list", "correct values as nested lists"),
    _entry("returns_dict", "returns-dict", "{'output': O, 'weights': P}"),
    _entry("returns_none", "returns-none", "forgets to return"),
    _entry("returns_wrong_shape", "returns-wrong-shape", "output flattened to 1-D"),
    _entry("returns_string", "returns-string", "str(output)"),
    _entry("raises_not_implemented", "unsupported", "NotImplementedError whenever a mask is given", features=()),
    _entry("raises_value_error", "raises-value-error", "ValueError whenever Sq != Sk"),
]
