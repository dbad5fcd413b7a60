"""Bug models of the forms a mistake takes in code written elsewhere: the same mistakes as :mod:`refimpl.bugs`, each
as a family over the parameter a kernel gets wrong (which window edge, which block size, which intermediate in
which precision, which mask kind), and mistakes the first table has no model for. Same calling convention as
:mod:`refimpl.bugs` (refimpl's inputs and keywords in, the output (B..., Sq, Dv) out).

* ALiBi with the signed distance (no absolute value: keys right of the diagonal favoured);
* window edges: the right edge taken from the left (a symmetric window), the right edge ignored or set to 0, an
  unbounded left edge (-1) read as 0, the right edge off by one;
* the causal diagonal excluded (key j visible iff j < i + offset: a query does not see itself);
* mask kinds: a bool keep-mask added to the scores as numbers (True = +1, nothing masked); an additive float mask
  cast to bool (nonzero = attend) or reduced to its -inf entries (its finite values dropped);
* online softmax over key blocks: the accumulator rescaled by exp(m_new - m_old) (inverted); a running max of -inf
  left unguarded, so a row whose first key block is fully masked gets NaN (exp(-inf - -inf)); for each block size;
* low precision: one intermediate rounded to float16 or bfloat16 (the scores, the exponentials, the row sum, the
  weights), the rest in float64;
* the mask read with query and key indices swapped (a mask_mod called as (kv_idx, q_idx), an expanded mask
  transposed): the causal band and window computed for keys as queries, a square bool or float mask transposed;
* a head permutation: the output of query head h is the reference output of another head (heads split by reshape
  instead of transpose, or a mask broadcast over a flattened batch x heads in the wrong order).
"""
from __future__ import annotations

import numpy as np

from .bugs_scores import _kw, _parts, _sdpa, _softmax
from .masks import window_mask
from .precision import get as precision

__all__ = ["window_edges", "causal_diagonal", "alibi_signed", "bool_mask_added", "float_mask_as_bool",
           "online_inverted", "online_unguarded", "rounded_step", "mask_batch_flattened", "mask_transposed"]


def window_edges(q, k, v, *, edge="right from left", **kw):
    """The sliding window applied with one edge wrong: ``edge`` "right from left" (left, left), "right ignored"
    (left, -1), "right 0" (left, 0), "left -1 as 0" (0, right) where left is unbounded, "right + 1", "right - 1".
    Causal still caps the right edge at 0."""
    kw = _kw(kw)
    window = kw.pop("window")
    if window is None:
        return _sdpa(q, k, v, window=None, **kw)
    left, right = window
    new = {"right from left": (left, left) if left >= 0 else window, "right ignored": (left, -1),
           "right 0": (left, 0), "left -1 as 0": (0, right) if left == -1 else window,
           "right + 1": (left, right + 1) if right >= 0 else window,
           "right - 1": (left, right - 1) if right >= 1 else window}[edge]
    return _sdpa(q, k, v, window=new, **kw)


def causal_diagonal(q, k, v, **kw):
    """Causal (or a window capped by it) without the diagonal: key j visible iff j < i + offset."""
    kw = _kw(kw)
    if not kw["is_causal"]:
        return _sdpa(q, k, v, **kw)
    s, keep, v = _parts(q, k, v, **kw)
    Sq, Sk = s.shape[-2], s.shape[-1]
    diag = window_mask(Sq, Sk, (0, 0), alignment=kw["alignment"])             # (Sq, Sk): j == i + offset
    return _softmax(s, keep & ~diag) @ v


def alibi_signed(q, k, v, *, mask=None, slopes=None, **kw):
    """ALiBi with the signed distance: bias -slope * (i + offset - j) without the absolute value (as slope * j up to
    a per-row constant), so keys right of the diagonal are favoured; with causal masking nothing shows."""
    if slopes is None:
        return _sdpa(q, k, v, mask=mask, **kw)
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    dist = (np.arange(Sq)[:, None] + Sk - Sq - np.arange(Sk)[None, :]).astype(np.float64)     # (Sq, Sk)
    bias = -(np.asarray(slopes, np.float64)[..., None, None] * dist)
    bias = bias[None] if bias.ndim == 3 else bias                                       # (B|1, H, Sq, Sk)
    if mask is not None:
        m = np.asarray(mask)
        bias = np.where(m, bias, -np.inf) if m.dtype == bool else m + bias
    return _sdpa(q, k, v, mask=bias, **kw)


def bool_mask_added(q, k, v, **kw):
    """A bool keep-mask added to the scores as numbers: S + 1 where True, S + 0 where False; nothing is masked by
    it (causal and windows still are). Float masks are added as they should be."""
    kw = _kw(kw)
    m = kw["mask"]
    if m is None or np.asarray(m).dtype != bool:
        return _sdpa(q, k, v, **kw)
    return _sdpa(q, k, v, **dict(kw, mask=np.asarray(m).astype(np.float64)))


def float_mask_as_bool(q, k, v, *, how="nonzero", **kw):
    """An additive float mask read as a bool keep-mask: ``how`` "nonzero" (x.to(bool): nonzero = attend, -inf
    included; a 0 bias masks its key) or "finite" (its -inf entries mask, its finite values are dropped)."""
    kw = _kw(kw)
    m = kw["mask"]
    if m is None or np.asarray(m).dtype == bool:
        return _sdpa(q, k, v, **kw)
    m = np.asarray(m)
    return _sdpa(q, k, v, **dict(kw, mask=(m != 0) if how == "nonzero" else np.isfinite(m)))


def _online(s, keep, v, block, *, inverted=False, guarded=True):
    """Online softmax over key blocks: running max m, row sum l and accumulator, rescaled by exp(m_old - m_new)
    (``inverted``: by exp(m_new - m_old)); ``guarded=False``: a running max of -inf is used as is."""
    s = np.where(keep, s, -np.inf)
    m = np.full(s.shape[:-1] + (1,), -np.inf)                           # (B..., Sq, 1)
    total = np.zeros_like(m)
    acc = np.zeros(s.shape[:-1] + (v.shape[-1],))                        # (B..., Sq, Dv)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for j0 in range(0, s.shape[-1], block):
            sb = s[..., j0:j0 + block]                                   # (B..., Sq, Bk)
            m_new = np.maximum(m, sb.max(axis=-1, keepdims=True))
            base = np.where(np.isfinite(m_new), m_new, 0.0) if guarded else m_new
            alpha = np.exp(m - base)                                     # 0 on the first block (m = -inf)
            p = np.exp(sb - base)
            total = alpha * total + p.sum(axis=-1, keepdims=True)
            acc = (np.where(alpha > 0, 1.0 / alpha, 0.0) if inverted else alpha) * acc + p @ v[..., j0:j0 + block, :]
            m = m_new
        return acc / np.where(total == 0, 1.0, total)


def online_inverted(q, k, v, *, block=64, **kw):
    """Online softmax whose accumulator is rescaled by exp(m_new - m_old) instead of exp(m_old - m_new)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    return _online(s, keep, v, block, inverted=True)


def online_unguarded(q, k, v, *, block=64, **kw):
    """Online softmax with the running max used unguarded: exp(-inf - (-inf)) = NaN on a row whose leading key
    blocks are fully masked."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    return _online(s, keep, v, block, guarded=False)


def rounded_step(q, k, v, *, step="scores", dtype="bfloat16", **kw):
    """Softmax attention with one intermediate rounded to ``dtype`` (float16, bfloat16): ``step`` "scores" (the
    scaled scores), "exps" (exp(S - max)), "row sum" (the denominator) or "weights" (P); the rest in float64."""
    r = precision(dtype).round
    s, keep, v = _parts(q, k, v, **_kw(kw))
    with np.errstate(over="ignore", invalid="ignore"):
        if step == "scores":
            s = r(s)
        s = np.where(keep, s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        if step == "exps":
            e = r(e)
        z = e.sum(axis=-1, keepdims=True)
        if step == "row sum":
            z = r(z)
        p = e / np.where(z == 0, 1.0, z)
        if step == "weights":
            p = r(p)
    return p @ v


def mask_batch_flattened(q, k, v, **kw):
    """A per-batch mask (B, 1, Sq, Sk) tiled over a flattened batch x heads in the wrong order: the row b * H + h
    of the flattened scores gets mask[(b * H + h) % B] (np.tile(mask, (H, 1, 1)) against a batch-major layout)."""
    kw = _kw(kw)
    m = kw["mask"]
    if m is None or np.ndim(m) < 4 or np.shape(m)[0] == 1 or np.shape(m)[1] != 1:
        return _sdpa(q, k, v, **kw)
    m = np.asarray(m)
    B, H = np.shape(q)[0], np.shape(q)[1]
    idx = (np.arange(B)[:, None] * H + np.arange(H)[None, :]) % B              # (B, H): which batch's mask
    return _sdpa(q, k, v, **dict(kw, mask=m[idx, 0]))


def mask_transposed(q, k, v, **kw):
    """The mask with query and key indices swapped: keep'(i, j) = keep(j, i). The causal band and window are computed
    with Sk queries and Sq keys and transposed; a bool or float mask is transposed when Sq == Sk (otherwise its
    indices run out of range: the mistake raises, and the model leaves it as it is)."""
    kw = _kw(kw)
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    m = kw["mask"]
    if m is not None and Sq == Sk and np.ndim(m) >= 2:
        m = np.swapaxes(np.asarray(m), -1, -2)
    if kw["is_causal"] or kw["window"] is not None:
        left, right = kw["window"] if kw["window"] is not None else (-1, -1)
        if kw["is_causal"]:
            right = 0 if right == -1 else min(right, 0)
        band = window_mask(Sk, Sq, (left, right), alignment=kw["alignment"]).T             # (Sq, Sk)
        if m is None:
            m = band
        else:
            m = np.asarray(m)
            m = (m & band) if m.dtype == bool else np.where(band, m, -np.inf)
    return _sdpa(q, k, v, **dict(kw, mask=m, is_causal=False, window=None))
