"""Kernels in C, C++ or Rust as targets: ``--target c:path/libattn.so:symbol`` calls a function of the C ABI in
``refimpl/harness/native/refimpl_attention.h`` through ctypes (the ``c-abi`` API hands it the arrays).

The library is loaded where the target runs, in the worker when isolated (a segfault is that case's ``crash``).
:class:`NativeKernel` is the Python face of one symbol: ``kernel(q, k, v, keep=None, scale=None)`` with
C-contiguous float64 or float32 arrays returns ``(output, weights or None)``, or raises :class:`NativeError`
with the kernel's non-zero return code.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from ...errors import UsageError
from ..native import HEADER

__all__ = ["NativeKernel", "NativeError", "load_native", "PREFIX", "HEADER"]

PREFIX = "c:"


class NativeError(RuntimeError):
    """The kernel returned a non-zero code: an error of that case, reported with the code."""


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


class NativeKernel:
    """One C-ABI symbol of a shared library (see the header for the contract)."""

    def __init__(self, path: str, symbol: str, fn):
        self.path, self.symbol, self._fn = path, symbol, fn

    def __repr__(self) -> str:
        return f"<native kernel {self.symbol} in {self.path}>"

    def __call__(self, q, k, v, keep=None, scale=None):
        arrays = [np.asarray(a) for a in (q, k, v)]
        dt = arrays[0].dtype
        if dt not in (np.float64, np.float32) or any(a.dtype != dt or a.ndim != 4 for a in arrays):
            raise TypeError(f"the C ABI takes q, k, v as 4-D float64 or float32 arrays of one dtype, got "
                            f"{[(a.dtype.name, a.shape) for a in arrays]}")
        q, k, v = (np.array(a, order="C") for a in arrays)       # copies: the kernel never sees the caller's
        B, Hq, Sq, D = q.shape
        _, Hkv, Sk, Dv = v.shape
        shape = (ctypes.c_int64 * 7)(B, Hq, Hkv, Sq, Sk, D, Dv)
        kp = None if keep is None else np.ascontiguousarray(np.broadcast_to(keep, (B, Hq, Sq, Sk)), np.uint8)
        out = np.full((B, Hq, Sq, Dv), np.nan, dt)
        weights = np.full((B, Hq, Sq, Sk), np.nan, dt)
        sc = 1.0 / np.sqrt(D) if scale is None else float(scale)
        rc = self._fn(64 if dt == np.float64 else 32, _ptr(q), _ptr(k), _ptr(v), _ptr(kp), shape, sc, _ptr(out),
                      _ptr(weights))
        if rc != 0:
            raise NativeError(f"the kernel {self.symbol} returned error code {rc}")
        return out, (None if np.isnan(weights).all() else weights)


def load_native(spec: str) -> NativeKernel:
    """``c:path/lib.so:symbol`` -> its :class:`NativeKernel`; a UsageError naming the spec otherwise."""
    path, _, symbol = spec[len(PREFIX):].rpartition(":")
    if not path or not symbol:
        raise UsageError(f"--target {spec!r}: expected c:path/to/lib.so:symbol")
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(f"--target {spec!r}: no file {path}")
    try:
        lib = ctypes.CDLL(full)
    except OSError as e:
        raise UsageError(f"--target {spec!r}: cannot load the shared library: {e}") from None
    try:
        fn = getattr(lib, symbol)
    except AttributeError:
        raise UsageError(f"--target {spec!r}: the library exports no symbol {symbol!r} (declared extern \"C\"? "
                         f"see {HEADER})") from None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.POINTER(ctypes.c_int64), ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return NativeKernel(full, symbol, fn)
