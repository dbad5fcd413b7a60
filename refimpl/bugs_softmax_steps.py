"""Bug models of the steps from scores to weights as kernels written elsewhere take them: the softcap's formula, the
row max, where the mask meets the softmax, the online row sum. Same calling convention as :mod:`refimpl.bugs`
(refimpl's inputs and keywords in, the output (B..., Sq, Dv) out); each changes one step of the scores built by
:mod:`refimpl.scores_parts`.

* softcap forms: cap * tanh(S * cap) (the reciprocal not taken), S * tanh(S / cap) (the logits for the cap), and
  the additive terms (ALiBi, a float mask) inside the cap: cap * tanh((S + bias) / cap);
* the row max started at a finite floor instead of -inf (max(floor, row max): 0, or a sentinel such as -1e4): a row
  whose kept scores all lie far below the floor underflows, to zeros behind a guard on the row sum or to NaN (0/0)
  without one;
* the softmax of every score, its masked weights zeroed and the rest renormalised: exact until the kept weights
  underflow under a masked maximum (0/0 = NaN), and NaN on rows with no key;
* exp of every score (less the max over the kept ones) multiplied by the keep-mask: a masked score far above the
  kept ones overflows, inf * 0 = NaN;
* online softmax over key blocks whose accumulator is rescaled but whose row sum is not, or (``online_rescale``)
  whose accumulator is never rescaled;
* a tiled kernel's key range per query tile computed wrong (the first key tile from its last row, the last key from
  its first row, the end without the bottom-right offset, an unbounded left edge as 0): keys in the band never
  visited;
* exp(S) without the row max (overflow: inf / inf = NaN), the exponentials and row sums in float16, an epsilon
  added to the denominator.
"""
from __future__ import annotations

import numpy as np

from ._kernel import make_band
from .bug_model import _kw
from .scores_parts import _parts, _softmax

__all__ = ["bias_before_scale", "band_tile_range", "TILE_RANGES", "softcap_form", "max_floored", "softmax_then_mask",
           "exp_times_mask", "online_row_sum", "online_rescale", "no_max_subtraction", "low_precision",
           "denominator_epsilon"]


# caps hard-coded in published models (Grok-1's 30; Gemma 2's 50 on attention logits, 30 on final logits)
FIXED_CAPS = (30.0, 50.0)


def _fixed(c: float) -> str:
    return f"{c:g} * tanh(S / {c:g}) (a fixed cap, the given one ignored)"


SOFTCAP_FORMS = ("cap * tanh(S * cap)", "S * tanh(S / cap)", "cap * tanh((S + bias) / cap)", "never applied",
                 "(S / cap) * tanh(S / cap)", "cap * tanh(S)") + tuple(_fixed(c) for c in FIXED_CAPS)


def softcap_form(q, k, v, *, form="cap * tanh(S * cap)", **kw):
    """The softcap computed as ``form``: "cap * tanh(S * cap)", "S * tanh(S / cap)", "(S / cap) * tanh(S / cap)",
    "cap * tanh(S)" (the inner division missing), "cap * tanh((S + bias) / cap)"
    (the additive terms, ALiBi folded in, capped with the scores), "never applied" (the argument accepted and
    ignored) or "c * tanh(S / c) (a fixed cap, ...)" for c in FIXED_CAPS (a softcap asked for, a hard-coded cap
    used); without a softcap, refimpl's output."""
    kw = _kw(kw)
    cap = kw["softcap"]
    s, keep, v = _parts(q, k, v, **dict(kw, softcap=None))               # scale q k^T + the finite additive terms
    raw = _parts(q, k, v, **dict(kw, mask=None, softcap=None))[0]        # scale q k^T
    if cap is not None:
        bias = s - raw
        s = {"cap * tanh(S * cap)": lambda: cap * np.tanh(raw * cap) + bias,
             "S * tanh(S / cap)": lambda: raw * np.tanh(raw / cap) + bias,
             "(S / cap) * tanh(S / cap)": lambda: raw / cap * np.tanh(raw / cap) + bias,
             "cap * tanh(S)": lambda: cap * np.tanh(raw) + bias,
             "cap * tanh((S + bias) / cap)": lambda: cap * np.tanh(s / cap), "never applied": lambda: s,
             **{_fixed(c): (lambda c=c: c * np.tanh(raw / c) + bias) for c in FIXED_CAPS}}[form]()
    return _softmax(s, keep) @ v


def bias_before_scale(q, k, v, **kw):
    """S = scale * (q k^T + bias), then the softcap (rightly, on the scaled scores): the additive terms (ALiBi, a
    float mask) are scaled with the product."""
    kw = _kw(kw)
    sc = 1.0 / np.sqrt(np.shape(q)[-1]) if kw["scale"] is None else kw["scale"]
    s, keep, v = _parts(q, k, v, **dict(kw, scale=1.0, softcap=None))   # q k^T + the finite additive terms
    s = s * sc
    if kw["softcap"] is not None:
        s = kw["softcap"] * np.tanh(s / kw["softcap"])
    return _softmax(s, keep) @ v


def max_floored(q, k, v, *, floor=0.0, guarded=True, **kw):
    """Softmax with the row max started at a finite ``floor`` (0, a sentinel such as -1e4 or -5e4) instead of -inf:
    m = max(floor, max of the kept scores); ``guarded``: a row whose sum underflows to 0 gives zeros (else 0/0 =
    NaN)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    m = np.maximum(s.max(axis=-1, keepdims=True), floor)
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.exp(s - m)
        z = e.sum(axis=-1, keepdims=True)
        out = (e / z) @ v
    return np.where(z > 0, out, 0.0) if guarded else np.where(keep.any(axis=-1, keepdims=True), out, 0.0)


def softmax_then_mask(q, k, v, **kw):
    """P = softmax over every key (the finite additive terms kept), P * keep, then renormalised: 0/0 = NaN where
    the kept weights underflow (a masked maximum far above them) or no key is kept."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    with np.errstate(invalid="ignore", divide="ignore", under="ignore"):
        p = _softmax(s, np.ones(s.shape, bool)) * keep
        return (p / p.sum(axis=-1, keepdims=True)) @ v


def exp_times_mask(q, k, v, **kw):
    """e = exp(S - max over the kept scores) on every key, times the keep-mask: inf * 0 = NaN where a masked score
    overflows above the kept ones; a row with no key gives zeros."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    m = np.where(keep, s, -np.inf).max(axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0)) * keep
        z = e.sum(axis=-1, keepdims=True)
        return (e / np.where(z > 0, z, 1.0)) @ v


def online_row_sum(q, k, v, *, block=32, **kw):
    """Online softmax over key blocks of ``block``: the accumulator rescaled by exp(m_old - m_new), the row sum l
    never rescaled (l = sum over blocks of sum exp(S_b - m_b))."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    m = np.full(s.shape[:-1] + (1,), -np.inf)                            # (B..., Sq, 1)
    row_sum = np.zeros_like(m)
    acc = np.zeros(s.shape[:-1] + (v.shape[-1],))                        # (B..., Sq, Dv)
    for j0 in range(0, s.shape[-1], block):
        sb = s[..., j0:j0 + block]                                       # (B..., Sq, Bk)
        m_new = np.maximum(m, sb.max(axis=-1, keepdims=True))
        base = np.where(np.isfinite(m_new), m_new, 0.0)
        p = np.exp(sb - base)
        row_sum = row_sum + p.sum(axis=-1, keepdims=True)
        acc = np.exp(m - base) * acc + p @ v[..., j0:j0 + block, :]      # (B..., Sq, Bk) x (B..., Bk, Dv)
        m = m_new
    return acc / np.where(row_sum == 0, 1.0, row_sum)


def no_max_subtraction(q, k, v, *, guarded=True, first=False, dtype="float64", **kw):
    """P = exp(S) / sum exp(S) without subtracting the row max: overflow gives inf/inf = NaN; a row whose sum
    underflows to 0 gives zeros (``guarded``) or 0/0 = NaN. Rows with no key: zeros. ``first``: each row shifted by
    its first score S[i, 0] instead of its max (overflow where a score exceeds it by ~709; a masked key 0 shifts by
    -inf: the row's sum NaN, zeros where ``guarded`` (a sum > 0 test), else NaN). ``dtype`` float32: scores,
    exponentials and sums in float32, where exp overflows past ~88.7 (a float32 kernel's own range)."""
    s, keep, v = _parts(q, k, v, dtype=np.dtype(dtype).type, **_kw(kw))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        masked = np.where(keep, s, -np.inf)
        e = np.exp(masked - masked[..., :1]) if first else np.exp(masked)
        z = e.sum(axis=-1, keepdims=True)
        if first and guarded:
            out = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0) @ v
        else:
            out = (e / np.where(z == 0, 1.0 if guarded else np.nan, z)) @ v
    return np.where(keep.any(axis=-1, keepdims=True), out, 0.0).astype(np.float64)


def low_precision(q, k, v, **kw):
    """exp(S - max) and the row sums in float16: P = (e16 / sum16 e16) in float16, O = P @ v in float64."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp((s - np.where(np.isfinite(m), m, 0.0)).astype(np.float16))
        z = e.sum(axis=-1, keepdims=True, dtype=np.float16)
        p = (e / np.where(z == 0, np.float16(1), z)).astype(np.float64)
    return p @ v


def denominator_epsilon(q, k, v, *, eps=1e-6, **kw):
    """P = e / (sum e + eps) with e = exp(S - max): every row biased low by about eps / sum e."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    return (e / (e.sum(axis=-1, keepdims=True) + eps)) @ v


def online_rescale(q, k, v, *, block=32, **kw):
    """Online softmax over key blocks of ``block`` that rescales the running sum l but not the accumulator:
    acc = sum_b exp(S_b - m_b) @ v_b with m_b the running max after block b, l = sum exp(S - m), O = acc / l."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    s = np.where(keep, s, -np.inf)
    Sk = s.shape[-1]
    m = np.full(s.shape[:-1] + (1,), -np.inf)                            # (B..., Sq, 1)
    row_sum = np.zeros_like(m)
    acc = np.zeros(s.shape[:-1] + (v.shape[-1],))                        # (B..., Sq, Dv)
    for j0 in range(0, Sk, block):
        sb = s[..., j0:j0 + block]                                       # (B..., Sq, Bk)
        m_new = np.maximum(m, sb.max(axis=-1, keepdims=True))
        base = np.where(np.isfinite(m_new), m_new, 0.0)
        p = np.exp(sb - base)
        row_sum = np.exp(m - base) * row_sum + p.sum(axis=-1, keepdims=True)
        acc = acc + p @ v[..., j0:j0 + block, :]                         # (B..., Sq, Bk) x (B..., Bk, Dv)
        m = m_new
    return acc / np.where(row_sum == 0, 1.0, row_sum)


TILE_RANGES = ("start from last row", "end from first row", "end without the Sk - Sq offset",
               "unbounded left as 0")


def keys_from_offset(q, k, v, **kw):
    """The key loop of every query starts at the bottom-right offset max(Sk - Sq, 0) (the queries taken as the tail
    of a longer key sequence, the keys before it skipped), with or without a band; the band's mask still applies."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    Sq, Sk = s.shape[-2], s.shape[-1]
    return _softmax(s, keep & (np.arange(Sk) >= max(Sk - Sq, 0))) @ v


def band_tile_range(q, k, v, *, form="start from last row", block_m=16, block_n=32, **kw):
    """A tiled kernel visiting, for each query tile of ``block_m`` rows, the key tiles of ``block_n`` between a
    start and an end it computes wrong (``form``, one of ``TILE_RANGES``): the first key tile from the tile's last
    row (earlier rows' keys left of it skipped); the end from its first row (later rows' keys past it skipped);
    the end without the bottom-right offset Sk - Sq; an unbounded left edge (-1) of a given window read as 0 (keys
    left of the diagonal skipped). The band's mask still applies inside the visited tiles; without a band,
    refimpl's output."""
    kw = _kw(kw)
    s, keep, v = _parts(q, k, v, **kw)
    Sq, Sk = s.shape[-2], s.shape[-1]
    band = make_band(Sq, Sk, is_causal=kw["is_causal"], window=kw["window"], alignment=kw["alignment"])
    if band is None:
        return _softmax(s, keep) @ v
    off, left, right = band.offset, -1 if band.left is None else band.left, -1 if band.right is None else band.right
    if form == "unbounded left as 0" and left == -1 and kw["window"] is not None and tuple(kw["window"]) != (-1, -1):
        left = 0
    end_off = 0 if form == "end without the Sk - Sq offset" else off
    visited = np.zeros((Sq, Sk), bool)
    for m0 in range(0, Sq, block_m):
        m1 = min(m0 + block_m, Sq)
        row_start = m1 - 1 if form == "start from last row" else m0      # the row the first key tile is taken from
        row_end = m0 if form == "end from first row" else m1 - 1          # the row the last key is taken from
        start = max(row_start + off - left, 0) // block_n * block_n if left >= 0 else 0
        end = min(max(row_end + end_off + right + 1, 0), Sk) if right >= 0 else Sk
        stop = min(start + -(-(end - start) // block_n) * block_n, Sk) if end > start else start
        visited[m0:m1, start:stop] = True
    return _softmax(s, keep & visited) @ v
