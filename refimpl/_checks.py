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
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable

import numpy as np

__all__ = [
    "RefimplError", "InputTypeError", "InputValueError", "ShapeError", "NonFiniteInputError",
    "as_float_array", "result_dtype", "check_scale", "broadcast_batch", "check_choice",
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
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor: refuse rather than guess
        raise InputTypeError(f"{name} must be a NumPy array-like, got a {type(x).__module__}.{type(x).__name__}; "
                             f"pass tensor.detach().cpu().numpy()")
    try:
        with np.errstate(all="ignore"):
            a = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise InputValueError(f"{name} must be a rectangular array-like of real numbers, got {_describe(x)} ({e})") from None
    kind = a.dtype.kind
    if kind == "f":
        if a.dtype not in (np.float32, np.float64):
            raise InputTypeError(f"{name} must have dtype float32 or float64, got {a.dtype}; "
                                 f"cast it first (e.g. {name}.astype(np.float32))")
    elif kind in "iu":
        if a.size and np.abs(a.astype(np.float64)).max() > _MAX_EXACT_INT:
            raise InputValueError(f"{name} has integer values beyond 2**53 that float64 cannot hold exactly; "
                                  f"got max |{name}| = {np.abs(a).max()}")
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
        if allow_neg_inf:
            bad = np.isnan(a) | (a == np.inf)
            if bad.any():
                raise NonFiniteInputError(f"{name} must not contain NaN or +inf (-inf is allowed), "
                                          f"got {int(bad.sum())} such value(s), first at index {_first(bad)}")
        elif not np.isfinite(a).all():
            bad = ~np.isfinite(a)
            raise NonFiniteInputError(f"{name} must be finite, got {int(bad.sum())} NaN/inf value(s), "
                                      f"first at index {_first(bad)}")
    return a


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def result_dtype(*arrays: np.ndarray) -> np.dtype:
    """The dtype the computation runs in: float32 only if every array is float32."""
    return np.result_type(*arrays)


def check_scale(scale: Any, default: float, dtype: np.dtype, name: str = "scale") -> np.ndarray:
    """Validate ``scale`` (None -> ``default``) and return it as a 0-d array of ``dtype``.

    A 0-d array of the compute dtype keeps float32 work in float32 under NumPy 1 and 2 promotion rules.
    """
    if scale is None:
        scale = default
    elif isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (numbers.Real, np.floating, np.integer)):
        raise InputTypeError(f"{name} must be a positive finite real number or None, got {_describe(scale)}")
    s = float(scale)
    if not np.isfinite(s) or s <= 0:
        raise InputValueError(f"{name} must be a positive finite real number, got {s!r}")
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
    if value not in choices:
        raise InputValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
