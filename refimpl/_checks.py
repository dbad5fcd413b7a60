"""Argument validation shared by every public function, and the exceptions it raises.

Every error names the argument, what was expected and what arrived, e.g.
``q must have at least 2 dimensions (..., n_queries, d_k), got shape (3,)``.

Decisions (documented once, applied everywhere):

* dtypes: float32 and float64 are computed in their own precision. Integer inputs (the tutorials use
  integer word vectors and weight matrices) are converted to float64, exactly, as long as every value
  has magnitude <= 2**53; larger integers are refused. bool, complex, float16, object and string arrays
  are refused with :class:`InputTypeError` (a bool array as q/k/v is almost always a mask passed in the
  wrong place; float16 has no reference semantics here: cast it to float32 yourself).
* NaN and +-Inf in q, k, v, x and weight matrices are refused with :class:`NonFiniteInputError`: an
  oracle that silently propagates NaN hides the bug it exists to find.
* Empty dimensions (zero queries, keys or features) are refused with :class:`ShapeError`.
* ``numpy.ma`` masked arrays are refused (their mask would silently be ignored), and so are torch
  tensors, in every array argument including ``mask``: pass ``t.detach().cpu().numpy()``.
* A call whose working memory (estimated up front, before any large allocation) exceeds the machine's
  RAM (``MemTotal`` of /proc/meminfo) is refused with :class:`ResourceError`.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from typing import Any, Iterable

import numpy as np

__all__ = [
    "RefimplError", "InputTypeError", "InputValueError", "ShapeError", "NonFiniteInputError", "ResourceError",
    "as_float_array", "refuse_foreign", "result_dtype", "check_scale", "check_positive", "broadcast_batch",
    "check_choice", "check_bool", "check_memory", "machine_memory", "compact",
]

_MAX_EXACT_INT = 2 ** 53


class RefimplError(Exception):
    """Base class of every error refimpl raises on purpose."""


class InputTypeError(RefimplError, TypeError):
    """An argument has the wrong type or dtype."""


class InputValueError(RefimplError, ValueError):
    """An argument has a value outside what the function accepts."""


class ShapeError(InputValueError):
    """An argument has the wrong rank or shape, or shapes do not fit together."""


class NonFiniteInputError(InputValueError):
    """An array argument holds NaN or +-Inf."""


class ResourceError(InputValueError, MemoryError):
    """A call would need more memory than the machine has (estimated before allocating)."""


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"ndarray of dtype {x.dtype} and shape {x.shape}"
    return f"{type(x).__name__} {x!r}"[:120]


def as_float_array(x: Any, name: str, *, min_ndim: int = 0, ndim: int | None = None,
                   dims: str = "", allow_nonfinite: bool = False,
                   allow_neg_inf: bool = False) -> np.ndarray:
    """Return ``x`` as a float32/float64 ndarray after checking type, rank, emptiness and finiteness.

    ``dims`` names the expected axes for messages, e.g. ``"(..., n_queries, d_k)"``.
    ``allow_neg_inf`` admits -inf (softmax inputs, additive masks) but still refuses NaN and +inf.
    """
    if x is None or isinstance(x, (str, bytes, dict, set)) or callable(x):
        raise InputTypeError(f"{name} must be an array-like of real numbers, got {_describe(x)}")
    refuse_foreign(x, name)
    try:
        with np.errstate(all="ignore"):
            a = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise InputValueError(f"{name} must be a rectangular array-like of real numbers, "
                              f"got {_describe(x)} ({e})") from None
    kind = a.dtype.kind
    if kind == "f":
        if a.dtype not in (np.float32, np.float64):
            raise InputTypeError(f"{name} must have dtype float32 or float64, got {a.dtype}; "
                                 f"cast it first (e.g. {name}.astype(np.float32))")
    elif kind in "iu":
        if a.size and max(int(a.max()), -int(a.min())) > _MAX_EXACT_INT:     # in integers: exact, no rounding
            raise InputValueError(f"{name} has integer values beyond 2**53 that float64 cannot hold exactly; "
                                  f"got max |{name}| = {max(int(a.max()), -int(a.min()))}")
        a = a.astype(np.float64)
    elif kind == "b":
        raise InputTypeError(f"{name} must hold real numbers, got a bool array (is this a mask in the wrong argument?)")
    elif kind == "c":
        raise InputTypeError(f"{name} must hold real numbers, got complex dtype {a.dtype}")
    else:
        raise InputTypeError(f"{name} must hold real numbers, got dtype {a.dtype} ({_describe(x)})")
    if ndim is not None and a.ndim != ndim:
        raise ShapeError(f"{name} must have exactly {ndim} dimension(s) {dims}, got shape {a.shape}")
    if a.ndim < min_ndim:
        raise ShapeError(f"{name} must have at least {min_ndim} dimension(s) {dims}, got shape {a.shape}")
    if a.size == 0:
        raise ShapeError(f"{name} must not be empty {dims}, got shape {a.shape}")
    if not allow_nonfinite:
        a_c = compact(a)                     # a broadcast view is checked once, not once per repeat
        if allow_neg_inf:
            bad = np.isnan(a_c) | (a_c == np.inf)
            if bad.any():
                raise NonFiniteInputError(f"{name} must not contain NaN or +inf (-inf is allowed), "
                                          f"got {int(bad.sum())} such value(s), first at index {_first(bad)}")
        elif not np.isfinite(a_c).all():
            bad = ~np.isfinite(a_c)
            raise NonFiniteInputError(f"{name} must be finite, got {int(bad.sum())} NaN/inf value(s), "
                                      f"first at index {_first(bad)}")
    return a


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def refuse_foreign(x: Any, name: str) -> None:
    """Refuse array types whose meaning ``np.asarray`` would silently change: masked arrays (the mask
    is dropped, a masked-out 1e6 would take all the weight) and torch tensors (device, autograd)."""
    if isinstance(x, np.ma.MaskedArray):
        raise InputTypeError(f"{name} must be a plain ndarray, got a numpy.ma.MaskedArray (its mask would be "
                             f"ignored); pass {name}.filled(value), and express masking with the mask argument")
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor: refuse rather than guess
        raise InputTypeError(f"{name} must be a NumPy array-like, got a {type(x).__module__}.{type(x).__name__}; "
                             f"pass tensor.detach().cpu().numpy()")


def compact(a: np.ndarray) -> np.ndarray:
    """The distinct elements of a broadcast view: every axis of stride 0 reduced to length 1 (no copy)."""
    if a.ndim == 0 or all(st != 0 for st in a.strides):
        return a
    return a[tuple(slice(0, 1) if st == 0 else slice(None) for st in a.strides)]


def result_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype the computation runs in: float32 only if every array is float32."""
    return np.result_type(*arrays)


def check_scale(scale: Any, default: float, dtype: np.dtype, name: str = "scale") -> np.ndarray:
    """Validate ``scale`` (None -> ``default``) and return it as a 0-d array of ``dtype``.

    A 0-d array of the compute dtype keeps float32 work in float32 under NumPy 1 and 2 promotion rules.
    """
    return check_positive(default if scale is None else scale, name, dtype)


def check_positive(value: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """A positive finite real that ``dtype`` represents (neither overflowing nor underflowing to 0),
    as a 0-d array of ``dtype``; otherwise :class:`InputTypeError` / :class:`InputValueError` naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise InputTypeError(f"{name} must be a positive finite real number or None, got {_describe(value)}")
    try:
        s = float(value)
    except OverflowError:                        # a Python int beyond float64, e.g. 10**400
        raise InputValueError(f"{name} must be a positive finite real number, got an integer of "
                              f"{len(str(abs(int(value))))} digits, beyond float64's range") from None
    if not math.isfinite(s) or s <= 0:
        raise InputValueError(f"{name} must be a positive finite real number, got {s!r}")
    info = np.finfo(dtype)
    if s > float(info.max):
        raise InputValueError(f"{name}={s!r} overflows {np.dtype(dtype).name} (max {float(info.max):.4g})")
    out = np.asarray(s, dtype=dtype)
    if out == 0:
        raise InputValueError(f"{name}={s!r} underflows to 0 in {np.dtype(dtype).name}")
    return out


def broadcast_batch(names: Iterable[str], shapes: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Broadcast leading (batch/head) shapes; the error names every argument's batch shape."""
    names, shapes = list(names), list(shapes)
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        got = ", ".join(f"{n}: {s}" for n, s in zip(names, shapes))
        raise ShapeError(f"batch dimensions must be broadcastable, got {got}") from None


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputValueError(f"{name} must be one of {choices}, got {_describe(value)}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """A Python or NumPy bool (not a truthy string, None or int)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}"[:160])
    return bool(value)


@functools.lru_cache(maxsize=1)
def machine_memory() -> int | None:
    """Bytes of RAM: ``MemTotal`` of /proc/meminfo, else the sysconf page count; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def check_memory(need_bytes: int, what: str, hint: str = "use smaller inputs") -> None:
    """Refuse a call whose estimated working memory exceeds the machine's RAM; ``what`` names the
    shapes the estimate comes from. No check when the RAM size is unknown."""
    have = machine_memory()
    if have is not None and need_bytes > have:
        raise ResourceError(f"{what} needs an estimated {need_bytes / 2 ** 30:.3g} GiB, more than this machine's "
                            f"{have / 2 ** 30:.3g} GiB of RAM; {hint}")
