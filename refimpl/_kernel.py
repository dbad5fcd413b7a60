"""The pieces every SDPA variant shares: argument preparation, the overflow split, the softcap and THE
masked softmax (with the dead-row rule). Used by softmax.py, attention.py (vectorised and row-blocked)
and online.py, so the three agree by construction on every convention.

Shapes: ``B...`` leading batch/head dimensions, ``Sq`` queries, ``Sk`` keys, ``D`` query/key features,
``Dv`` value features, ``Hq`` query heads and ``Hkv`` key/value heads (GQA). Internally a GQA call runs
on a *grouped* batch ``(..., Hkv, G)`` with ``G = Hq // Hkv``: q is reshaped (no copy) to
(..., Hkv, G, Sq, D) and k, v get a length-1 group axis (..., Hkv, 1, Sk, D), so query head
``h = kv * G + g`` meets kv head ``h // G`` through ordinary broadcasting, with no repeated k or v.

Scores live in a power-of-two-scaled domain: ``z = true_scores * 2**-e`` (``e = 0`` in every ordinary
case, see :func:`split_exponents`), and the softmax undoes the factor exactly.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from ._checks import (InputTypeError, InputValueError, ShapeError, as_float_array, broadcast_batch, check_bool,
                      check_choice, check_memory, check_positive, check_scale, compact, refuse_foreign, result_dtype)


# --- the band (causal and window) and user masks; refimpl.masks holds the public helpers ---------------

ALIGNMENTS = ("top-left", "bottom-right")


class Band(NamedTuple):
    """Query ``i`` attends key ``j`` iff ``i + offset - left <= j <= i + offset + right`` (None: unbounded)."""
    offset: int
    left: int | None
    right: int | None

    def keep(self, i0: int, i1: int, j0: int, j1: int) -> np.ndarray:
        """The band as a bool keep-mask of queries ``i0:i1`` x keys ``j0:j1``: (i1-i0, j1-j0)."""
        d = np.arange(j0, j1)[None, :] - (np.arange(i0, i1)[:, None] + self.offset)   # j - (i + offset)
        ok = np.ones((i1 - i0, j1 - j0), dtype=bool)
        if self.left is not None:
            ok &= d >= -self.left
        if self.right is not None:
            ok &= d <= self.right
        return ok

    def key_range(self, i0: int, i1: int, n_keys: int) -> tuple[int, int]:
        """Keys ``[lo, hi)`` that some query of ``i0:i1`` may attend (``lo >= hi``: none)."""
        lo = 0 if self.left is None else max(0, i0 + self.offset - self.left)
        hi = n_keys if self.right is None else min(n_keys, i1 - 1 + self.offset + self.right + 1)
        return lo, hi

    def covers(self, i0: int, i1: int, j0: int, j1: int) -> bool:
        """True if every (query, key) pair of the block lies inside the band (no masking needed)."""
        lo_ok = self.left is None or j0 - (i1 - 1 + self.offset) >= -self.left
        hi_ok = self.right is None or (j1 - 1) - (i0 + self.offset) <= self.right
        return lo_ok and hi_ok


def check_window(window) -> tuple[int | None, int | None] | None:
    """``None`` or ``(left, right)`` of ints >= -1 (-1 = unbounded); returns None-for-unbounded sides."""
    if window is None:
        return None
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise InputTypeError(f"window must be None or a pair (left, right) of ints >= -1, got "
                             f"{type(window).__name__} {window!r}"[:160])
    sides = []
    for side, n in zip(("left", "right"), window):
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (numbers.Integral, np.integer)):
            raise InputTypeError(f"window {side} must be an int >= -1 (-1 = unbounded), got {type(n).__name__} {n!r}")
        if n < -1:
            raise InputValueError(f"window {side} must be >= -1 (-1 = unbounded), got {n}")
        sides.append(None if n == -1 else int(n))
    return sides[0], sides[1]


def make_band(n_queries: int, n_keys: int, *, is_causal: bool = False, window=None,
              alignment: str = "top-left") -> Band | None:
    """The band of ``is_causal`` and ``window`` (causal caps the right side at 0); None if neither is set."""
    check_choice(alignment, "alignment", ALIGNMENTS)
    lr = check_window(window)
    if not is_causal and lr is None:
        return None
    left, right = lr if lr is not None else (None, None)
    if is_causal:
        right = 0 if right is None else min(right, 0)
    return Band(0 if alignment == "top-left" else n_keys - n_queries, left, right)


def validate_mask(mask, scores_shape: tuple[int, ...], dtype: np.dtype):
    """Split a user ``mask`` into a boolean keep-mask and an additive float mask.

    * bool mask: True = attend, False = masked out.
    * float mask: added to the scaled scores; ``-inf`` masks a key; NaN and ``+inf`` are refused.
      It is cast to the compute dtype (a float64 mask does not promote float32 work; values beyond
      float32's range become -inf there, which is what they mean).
    * 0-d masks are refused (they would mask all or nothing), and so are masked arrays and torch
      tensors (see :mod:`refimpl._checks`).
    Both must broadcast to ``scores_shape`` = (..., n_queries, n_keys).
    Returns ``(keep or None, additive or None)``; broadcast views stay views.
    """
    if mask is None:
        return None, None
    refuse_foreign(mask, "mask")
    m = np.asarray(mask) if not isinstance(mask, (str, bytes)) else None
    if m is None or m.dtype.kind not in "bf":
        what = type(mask).__name__ if m is None else f"dtype {m.dtype}"
        raise InputTypeError(f"mask must be a bool keep-mask (True = attend) or a float additive mask, got {what}")
    if m.ndim == 0:
        raise ShapeError(f"mask must have at least 1 dimension (..., n_keys) broadcasting to the scores' shape "
                         f"{scores_shape}, got a 0-d mask (it would mask all keys or none); got shape ()")
    try:
        ok = m.ndim <= len(scores_shape) and np.broadcast_shapes(m.shape, scores_shape) == tuple(scores_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"mask must broadcast to the scores' shape {scores_shape} (..., n_queries, n_keys), "
                         f"got shape {m.shape}")
    if m.dtype.kind == "b":
        return m, None
    m = as_float_array(m, "mask", allow_neg_inf=True)
    with np.errstate(over="ignore"):
        additive = np.broadcast_to(compact(m).astype(dtype), m.shape)   # cast the distinct values only
    return None, additive


__all__ = ["SDPAInputs", "prepare", "split_exponents", "rescaled", "softcap_", "masked_softmax_", "block_keep",
           "full_keep"]


class SDPAInputs(NamedTuple):
    q: np.ndarray                 # (B..., Sq, D), grouped (..., Hkv, G, Sq, D) under GQA
    k: np.ndarray                 # (B..., Sk, D), grouped (..., Hkv, 1, Sk, D)
    v: np.ndarray                 # (B..., Sk, Dv), grouped (..., Hkv, 1, Sk, Dv)
    scale: np.ndarray             # 0-d, compute dtype
    keep: np.ndarray | None       # bool, the user's keep-mask, broadcasts to scores_shape
    additive: np.ndarray | None   # compute dtype, broadcasts to scores_shape
    band: Band | None             # causal / window band, applied blockwise (never a full Sq x Sk array)
    softcap: float | None
    scores_shape: tuple[int, ...]  # the (grouped) batch + (Sq, Sk)
    batch: tuple[int, ...]        # the caller's batch shape (..., Hq): results are reshaped to it


def _group(m: np.ndarray | None, n_kv: int, g: int) -> np.ndarray | None:
    """A mask broadcasting to (..., Hq, Sq, Sk) -> one broadcasting to (..., Hkv, G, Sq, Sk), as a view."""
    if m is None or m.ndim < 3:
        return m                                               # (Sq, Sk) / (Sk,) broadcast unchanged
    if m.shape[-3] == 1:
        return m[..., None, :, :]                              # (..., 1, Sq, Sk) -> (..., 1, 1, Sq, Sk)
    return m.reshape(m.shape[:-3] + (n_kv, g) + m.shape[-2:])  # (..., Hq, Sq, Sk) -> (..., Hkv, G, Sq, Sk)


def prepare(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left", window=None,
            softcap=None, enable_gqa=False, blocks: tuple[int, int] | None = None,
            who: str = "scaled_dot_product_attention") -> SDPAInputs:
    """Validate and convert the arguments of an SDPA call; refuse it up front if its working memory
    (``blocks=None``: the full scores; else one ``(block_q, block_k)`` block) cannot fit in RAM."""
    is_causal, enable_gqa = check_bool(is_causal, "is_causal"), check_bool(enable_gqa, "enable_gqa")
    nd, h = (3, "heads, ") if enable_gqa else (2, "")
    q = as_float_array(q, "q", min_ndim=nd, dims=f"(..., {h}n_queries, d_k)")
    k = as_float_array(k, "k", min_ndim=nd, dims=f"(..., {h}n_keys, d_k)")
    v = as_float_array(v, "v", min_ndim=nd, dims=f"(..., {h}n_keys, d_v)")
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"q and k must have the same last dimension d_k, got q.shape={q.shape}, k.shape={k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"k and v must have the same number of keys (axis -2), "
                         f"got k.shape={k.shape}, v.shape={v.shape}")
    n_q, n_k = q.shape[-2], k.shape[-2]
    band = make_band(n_q, n_k, is_causal=is_causal, window=window, alignment=alignment)
    n_kv = g = 1
    if enable_gqa:
        n_hq, n_kv = q.shape[-3], k.shape[-3]
        if v.shape[-3] != n_kv:
            raise ShapeError(f"enable_gqa: k and v must have the same number of heads (axis -3), "
                             f"got k.shape={k.shape}, v.shape={v.shape}")
        if n_hq % n_kv:
            raise ShapeError(f"enable_gqa: q's heads Hq={n_hq} (axis -3) must be a multiple of k/v's heads "
                             f"Hkv={n_kv}, got q.shape={q.shape}, k.shape={k.shape}")
        g = n_hq // n_kv
        outer = broadcast_batch(("q", "k", "v"), (q.shape[:-3], k.shape[:-3], v.shape[:-3]))
        batch = outer + (n_hq,)
        inner = outer + (n_kv, g) if g > 1 else batch
    else:
        batch = inner = broadcast_batch(("q", "k", "v"), (q.shape[:-2], k.shape[:-2], v.shape[:-2]))
    dtype = result_dtype(q, k, v)
    s = check_scale(scale, 1.0 / math.sqrt(q.shape[-1]), dtype)
    cap = None if softcap is None else float(check_positive(softcap, "softcap", dtype))
    _check_memory(who, q.shape, k.shape, v.shape, np.dtype(dtype), inner + (n_q, n_k), blocks)
    q, k, v = (a.astype(dtype, copy=False) for a in (q, k, v))
    keep, additive = validate_mask(mask, batch + (n_q, n_k), dtype)
    if g > 1:
        q = q.reshape(q.shape[:-3] + (n_kv, g) + q.shape[-2:])   # (..., Hq, Sq, D) -> (..., Hkv, G, Sq, D)
        k, v = k[..., None, :, :], v[..., None, :, :]             # (..., Hkv, Sk, D) -> (..., Hkv, 1, Sk, D)
        keep, additive = _group(keep, n_kv, g), _group(additive, n_kv, g)
    return SDPAInputs(q, k, v, s, keep, additive, band, cap, inner + (n_q, n_k), batch)


def _check_memory(who, q_shape, k_shape, v_shape, dtype: np.dtype, scores_shape, blocks) -> None:
    """Estimate: q*scale, the rescaled k and the output, plus the scores (all of them for the plain
    variant, with a bool mask; one block and its temporaries for the online one)."""
    n_b, (n_q, n_k), item = math.prod(scores_shape[:-2]), scores_shape[-2:], dtype.itemsize
    need = item * (math.prod(q_shape) + math.prod(k_shape) + n_b * n_q * v_shape[-1])
    if blocks is None:
        need += n_b * n_q * n_k * (item + 1)
        hint = "use smaller inputs, or sdpa_online, which never holds all the scores"
    else:
        need += min(n_q, blocks[0]) * min(n_k, blocks[1]) * (3 * item + 2)
        hint = "use smaller inputs or smaller blocks"
    blk = "" if blocks is None else f", blocks {blocks}"
    check_memory(need, f"{who} with q {q_shape}, k {k_shape}, v {v_shape} (scores {scores_shape}, {dtype}{blk})", hint)


def _log2_max_abs(a) -> float:
    m = float(np.abs(a).max()) if np.size(a) else 0.0
    return math.log2(m) if m > 0 else -math.inf


def split_exponents(q: np.ndarray, k: np.ndarray, s: float, extra_log2: float = -math.inf) -> tuple[int, int]:
    """Powers of two ``(e_q, e_k)`` such that ``((q / 2**e_q) * s) @ (k / 2**e_k)^T`` cannot overflow.

    With ``A = log2 max|q*s|``, ``B = log2 max|k|``, ``L = log2(dtype max)``, the scores are bounded by
    ``2**(A + B + log2 D)``; ``e = e_q + e_k`` brings that bound (and ``extra_log2``: the largest
    additive mask value or softcap, which enter the same scaled domain) below ``2**(L-4)``, while each
    factor stays below ``2**(L-2)``. ``e`` is split to balance the two magnitudes (least underflow).
    ``(0, 0)`` in every ordinary case. Powers of two are exact short of underflow, so the scaled scores
    are the true ones times ``2**-e`` and the softmax undoes it: ``exp((z - max z) * 2**e)``.
    """
    lim = math.log2(float(np.finfo(q.dtype).max))
    a, b = _log2_max_abs(q) + math.log2(s), _log2_max_abs(k)
    need = max(a + b + math.log2(q.shape[-1]), extra_log2) - (lim - 4)
    e_q0 = max(0, math.ceil(a - (lim - 2))) if a > lim - 2 else 0
    e_k0 = max(0, math.ceil(b - (lim - 2))) if b > lim - 2 else 0
    e = max(math.ceil(need) if need > 0 else 0, e_q0 + e_k0)
    if e == 0:
        return 0, 0
    e_q = min(max(round((e + a - b) / 2), e_q0), e - e_k0) if math.isfinite(a - b) else e_q0
    return e_q, e - e_q


def rescaled(p: SDPAInputs) -> tuple[np.ndarray, np.ndarray, int]:
    """``(qs, k', e)``: ``qs = q * scale * 2**-e_q`` and ``k' = k * 2**-e_k``, ``e = e_q + e_k``, so that
    ``qs @ k'^T = true scores * 2**-e`` without overflow."""
    extra = -math.inf
    if p.additive is not None:
        a = compact(p.additive)
        fin = a[np.isfinite(a)]
        extra = _log2_max_abs(fin)
    if p.softcap is not None:
        extra = max(extra, math.log2(p.softcap))
    e_q, e_k = split_exponents(p.q, p.k, float(p.scale), extra)
    with np.errstate(under="ignore"):
        q = np.ldexp(p.q, -e_q) if e_q else p.q
        k = np.ldexp(p.k, -e_k) if e_k else p.k
    return q * p.scale, k, e_q + e_k


def softcap_(z: np.ndarray, e: int, cap: float | None) -> np.ndarray:
    """In place, in the ``2**-e`` domain: ``z <- 2**-e * cap * tanh(2**e * z / cap)`` (None: unchanged).

    Overflow of ``2**e * z / cap`` only saturates tanh at +-1, which is the exact answer there.
    """
    if cap is None:
        return z
    with np.errstate(over="ignore", under="ignore"):
        if e:
            np.ldexp(z, e, out=z)
        np.divide(z, cap, out=z)
        np.tanh(z, out=z)
        np.multiply(z, math.ldexp(cap, -e), out=z)
    return z


def masked_softmax_(z: np.ndarray, keep, additive, exp2: int = 0) -> np.ndarray:
    """In place: ``z <- softmax(2**exp2 * z + additive, where keep)`` along the last axis.

    ``exp2`` is the exponent of :func:`split_exponents` (0 in ordinary cases); ``additive`` is scaled
    by ``2**-exp2`` so that it is added at the true scale. The dead-row rule (decided once, here): a row
    with no attended key (all masked, or all ``-inf``) gets all-zero weights.
    """
    if additive is not None:
        with np.errstate(over="ignore", under="ignore"):
            np.add(z, np.ldexp(additive, -exp2) if exp2 else additive, out=z)
    if keep is not None:
        np.copyto(z, -np.inf, where=~keep)
    m = z.max(axis=-1, keepdims=True)                    # (..., 1)
    dead = m == -np.inf
    any_dead = bool(dead.any())
    if any_dead:
        m[dead] = 0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        np.subtract(z, m, out=z)                         # <= 0
        if exp2:
            np.ldexp(z, exp2, out=z)                     # exact, or -> -inf (weight 0)
        np.exp(z, out=z)
    denom = z.sum(axis=-1, keepdims=True)                # (..., 1), >= 1 for live rows
    if any_dead:
        denom[dead] = 1
    np.multiply(z, np.reciprocal(denom), out=z)          # one division per row, then a multiply per weight
    return z


def block_keep(keep, band: Band | None, i0: int, i1: int, j0: int, j1: int):
    """Keep-mask of queries ``i0:i1`` x keys ``j0:j1``: the user's block (``keep``: one batch index's
    (Sq, Sk) view, or None) and the band; None when nothing is masked."""
    kb = None if keep is None else keep[i0:i1, j0:j1]
    if band is None or band.covers(i0, i1, j0, j1):
        return kb
    bk = band.keep(i0, i1, j0, j1)                       # (i1-i0, j1-j0)
    return bk if kb is None else (kb & bk)


def full_keep(p: SDPAInputs):
    """The user's keep-mask and the band as one array broadcasting to the scores (plain variant only)."""
    if p.band is None:
        return p.keep
    n_q, n_k = p.scores_shape[-2:]
    bk = p.band.keep(0, n_q, 0, n_k)                     # (Sq, Sk)
    return bk if p.keep is None else (p.keep & bk)
