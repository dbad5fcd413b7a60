"""R's default random number generator in NumPy, bit for bit.

R's defaults since 3.6.0: ``RNGkind("Mersenne-Twister", "Inversion", "Rejection")``. Implemented:

* ``set_seed(seed)`` — ``set.seed``: the seed is coerced like ``as.integer`` (truncation toward zero;
  NA, non-finite and |seed| >= 2**31 are refused as R refuses them), scrambled by 50 rounds of the LCG
  ``seed = 69069 * seed + 1 (mod 2**32)``, then 625 more rounds fill the Mersenne-Twister state
  (``mti`` + 624 words) and ``mti`` is set to 624 (regenerate on the first draw).
* ``unif_rand()`` — MT19937 with R's tempering, ``y * 2.3283064365386963e-10`` (y / 2**32), fixed up
  into the open interval (0, 1).
* ``runif(n, min, max)`` — ``min + (max - min) * u``; ``min == max`` returns ``min`` without a draw;
  NaN with a warning (here: an error) for non-finite or reversed bounds.
* ``sample_int(n, size, replace)`` and ``sample(x, ...)`` — R >= 3.6 "Rejection" sampling
  (``R_unif_index``: draw ``ceil(log2 n)`` bits from 16-bit chunks of ``unif_rand() * 65536``, reject
  values >= n). Without replacement: the partial Fisher-Yates swap of R's ``do_sample``; for
  n > 1e7 and size <= n/2, R's hash variant (``sample2``: redraw duplicates).

A :class:`RRNG` object holds one stream; the module functions use a default stream, like R's global one.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._checks import InputTypeError, InputValueError

__all__ = ["RRNG", "set_seed", "runif", "unif_rand", "sample_int", "sample", "RSeedError"]

_N, _M = 624, 397
_MATRIX_A = np.uint32(0x9908B0DF)
_UPPER, _LOWER = np.uint32(0x80000000), np.uint32(0x7FFFFFFF)
_I2_32M1 = 2.328306437080797e-10   # 1 / (2**32 - 1), R's i2_32m1
_TO_UNIT = 2.3283064365386963e-10  # 2**-32


class RSeedError(InputValueError):
    """A seed R's ``set.seed`` would refuse."""


def _coerce_seed(seed) -> int:
    """``as.integer(seed)`` as set.seed applies it."""
    if isinstance(seed, (bool, np.bool_)):
        return int(seed)  # R: set.seed(TRUE) is set.seed(1)
    if isinstance(seed, str):
        try:
            seed = float(seed.strip())
        except ValueError:
            raise RSeedError(f"seed must be coercible to an integer, as R's set.seed requires; "
                             f"got {seed!r}") from None
    if not isinstance(seed, (numbers.Real, np.integer, np.floating)):
        raise InputTypeError(f"seed must be a number, got {type(seed).__name__} {seed!r}")
    if isinstance(seed, (int, np.integer)) and abs(int(seed)) >= 2 ** 31:
        raise RSeedError(f"seed must satisfy |seed| < 2**31 (R's as.integer gives NA and set.seed refuses it), "
                         f"got {seed!r}")
    s = float(seed)
    if math.isnan(s) or math.isinf(s):
        raise RSeedError(f"seed must be finite: R's set.seed refuses {s} ('supplied seed is not a valid integer')")
    t = math.trunc(s)
    if abs(t) >= 2 ** 31:
        raise RSeedError(f"seed must satisfy |seed| < 2**31 (R's as.integer gives NA and set.seed refuses it), "
                         f"got {seed!r}")
    return int(t)


class RRNG:
    """One stream of R's Mersenne-Twister generator."""

    def __init__(self, seed=None):
        self._mt = np.zeros(_N, dtype=np.uint32)
        self._mti = _N + 1
        if seed is not None:
            self.set_seed(seed)

    # --- state --------------------------------------------------------------------------------
    def set_seed(self, seed) -> None:
        s = _coerce_seed(seed) & 0xFFFFFFFF
        for _ in range(50):                                  # initial scrambling
            s = (69069 * s + 1) & 0xFFFFFFFF
        words = []
        for _ in range(_N + 1):                              # dummy[0] (mti) + mt[0..623]
            s = (69069 * s + 1) & 0xFFFFFFFF
            words.append(s)
        self._mt = np.array(words[1:], dtype=np.uint32)
        self._mti = _N                                       # FixupSeeds: dummy[0] = 624
        self._buf = np.empty(0)

    # --- generation ----------------------------------------------------------------------------
    def _twist(self) -> None:
        mt = self._mt
        mag = lambda y: np.where((y & 1).astype(bool), _MATRIX_A, np.uint32(0))  # noqa: E731
        # kk in [0, 227): uses old mt[kk+397]
        y = (mt[0:227] & _UPPER) | (mt[1:228] & _LOWER)
        mt[0:227] = mt[397:624] ^ (y >> 1) ^ mag(y)
        # kk in [227, 454): uses new mt[kk-227] (0..226), old mt[kk+1]
        y = (mt[227:454] & _UPPER) | (mt[228:455] & _LOWER)
        mt[227:454] = mt[0:227] ^ (y >> 1) ^ mag(y)
        # kk in [454, 623): uses new mt[227..395]
        y = (mt[454:623] & _UPPER) | (mt[455:624] & _LOWER)
        mt[454:623] = mt[227:396] ^ (y >> 1) ^ mag(y)
        y = (mt[623] & _UPPER) | (mt[0] & _LOWER)
        mt[623] = mt[396] ^ (y >> np.uint32(1)) ^ (_MATRIX_A if y & 1 else np.uint32(0))

    def _block(self) -> np.ndarray:
        """The next 624 uniforms of the stream (one twist), tempered, scaled and fixed up."""
        if self._mti == _N + 1:
            raise InputValueError("the R RNG stream has no seed: call set_seed(seed) first")
        self._twist()
        y = self._mt.copy()
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
        y ^= y >> np.uint32(18)
        u = y.astype(np.float64) * _TO_UNIT
        u[u <= 0.0] = 0.5 * _I2_32M1                         # fixup: keep inside (0, 1)
        u[1.0 - u <= 0.0] = 1.0 - 0.5 * _I2_32M1
        return u

    def unif_rand(self, n: int = 1) -> np.ndarray:
        """``n`` draws of R's ``unif_rand()``."""
        out = np.empty(n, dtype=np.float64)
        filled = 0
        while filled < n:
            if self._mti >= _N:
                self._buf, self._mti = self._block(), 0
            take = min(n - filled, _N - self._mti)
            out[filled:filled + take] = self._buf[self._mti:self._mti + take]
            self._mti += take
            filled += take
        return out

    def runif(self, n, min=0.0, max=1.0) -> np.ndarray:  # noqa: A002 - R's argument names
        """R's ``runif(n, min, max)``; ``n`` a count, or a sequence whose length is the count (as in R)."""
        n = _count(n, "n")
        a, b = float(min), float(max)
        if not (math.isfinite(a) and math.isfinite(b)) or b < a:
            raise InputValueError(f"runif needs finite min <= max (R returns NaN with a warning), got min={a}, max={b}")
        if a == b:
            return np.full(n, a)
        return a + (b - a) * self.unif_rand(n)

    def _unif_index(self, dn: float) -> int:
        """R_unif_index(dn) under sample.kind = "Rejection"."""
        if dn <= 0:
            return 0
        bits = int(math.ceil(math.log2(dn)))
        while True:
            v = 0
            for _ in range(0, bits + 1, 16):
                v = 65536 * v + int(math.floor(self.unif_rand(1)[0] * 65536))
            dv = v & ((1 << bits) - 1)
            if dn > dv:
                return dv

    def sample_int(self, n, size=None, replace: bool = False) -> np.ndarray:
        """R's ``sample.int(n, size, replace)`` (1-based results, like R)."""
        n = _count(n, "n", allow_zero=True)
        size = n if size is None else _count(size, "size", allow_zero=True)
        if not replace and size > n:
            raise InputValueError(f"cannot take a sample larger than the population when replace=False: "
                                  f"size={size} > n={n}")
        if replace or size < 2:
            if size > 0 and n == 0:
                raise InputValueError("invalid first argument: n must be >= 1 when size > 0")
            return np.array([self._unif_index(n) + 1 for _ in range(size)], dtype=np.int64)
        if n > 1e7 and size <= n / 2:                         # R's useHash default -> sample2
            seen: set[int] = set()
            picked: list[int] = []
            while len(picked) < size:
                v = self._unif_index(n) + 1
                if v not in seen:
                    seen.add(v)
                    picked.append(v)
            return np.array(picked, dtype=np.int64)
        x = list(range(n))
        out = np.empty(size, dtype=np.int64)
        m = n
        for i in range(size):
            j = self._unif_index(m)
            out[i] = x[j] + 1
            m -= 1
            x[j] = x[m]
        return out

    def sample(self, x, size=None, replace: bool = False):
        """R's ``sample(x, size, replace)``: a single number >= 1 means ``sample.int(x)``."""
        arr = np.asarray(x)
        if arr.ndim == 0 or arr.size == 1 and arr.dtype.kind in "iuf" and float(arr.reshape(-1)[0]) >= 1:
            return self.sample_int(int(math.floor(float(arr.reshape(-1)[0]))), size, replace)
        arr = arr.reshape(-1)
        idx = self.sample_int(len(arr), size, replace)
        return arr[idx - 1]


def _count(n, name: str, allow_zero: bool = True) -> int:
    if isinstance(n, (list, tuple, np.ndarray)) and np.ndim(n) > 0:
        return len(n)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (numbers.Real, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be a non-negative count, got {type(n).__name__} {n!r}")
    if isinstance(n, (int, np.integer)) and abs(int(n)) >= 2 ** 31:
        raise InputValueError(f"{name} must be a count below 2**31, got {n!r}")
    f = float(n)
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero) or f >= 2 ** 31:
        raise InputValueError(f"{name} must be a finite non-negative count below 2**31, got {n!r}")
    return int(f)


_default = RRNG()


def set_seed(seed) -> None:
    """R's ``set.seed(seed)`` on the module's default stream."""
    _default.set_seed(seed)


def unif_rand(n: int = 1) -> np.ndarray:
    return _default.unif_rand(n)


def runif(n, min=0.0, max=1.0) -> np.ndarray:  # noqa: A002
    return _default.runif(n, min, max)


def sample_int(n, size=None, replace: bool = False) -> np.ndarray:
    return _default.sample_int(n, size, replace)


def sample(x, size=None, replace: bool = False):
    return _default.sample(x, size, replace)
