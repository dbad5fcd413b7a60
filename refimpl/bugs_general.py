"""Bug models of the forms a mistake takes in code written elsewhere, in how a kernel reads its arguments: the
window's edges, the kind of its mask, ALiBi's distance, the mask's indices and its broadcast over batch and heads.
Same calling convention as :mod:`refimpl.bugs` (refimpl's inputs and keywords in, the output (B..., Sq, Dv) out);
the models that rebuild the scores step by step (the causal diagonal, online softmax, one 16-bit intermediate) are
in :mod:`refimpl.bugs_scores`, which holds the pieces for that.

* ALiBi with the signed distance (no absolute value: keys right of the diagonal favoured), with its sign flipped
  too (sign -1), or with the slopes of the first batch element applied to every batch;
* the causal diagonal alone in the other alignment (a window's left edge keeps the case's); the bottom-right
  offset clamped at 0 (top-left where Sq > Sk); the causal flag dropped when Sq != Sk or when a window is given,
  or a window's left edge dropped under causal;
* window edges: the right edge taken from the left (a symmetric window), the right edge ignored or set to 0, an
  unbounded left edge (-1) read as 0, the right edge off by one;
* mask kinds: a bool keep-mask added to the scores as numbers (True = +1, nothing masked); an additive float mask
  cast to bool (nonzero = attend) or reduced to its -inf entries (its finite values dropped); the bool mask added
  with the causal band and window still applied (``with_band``);
* the mask read with query and key indices swapped (a mask_mod called as (kv_idx, q_idx), an expanded mask
  transposed): the causal band and window computed for keys as queries, a square bool or float mask transposed;
* a per-batch mask broadcast over a flattened batch x heads in the wrong order;
* the mask applied after the softmax (masked weights zeroed, the rest not renormalised), and the scale applied to
  the weights of the unscaled scores' softmax.
"""
from __future__ import annotations

import math

import numpy as np

from .attention import scaled_dot_product_attention
from .bug_model import BugModel, Variant, _kw, _named
from .masks import alibi_bias, band_mask, window_mask

__all__ = ["scale", "alibi_dropped", "other_alignment", "causal_only_realigned", "left_edge_realigned",
           "causal_dropped", "offset_clamped", "window_edges", "alibi_signed", "bool_mask_added", "float_mask_as_bool",
           "mask_batch_flattened", "mask_transposed", "mask_after_softmax", "scale_after_softmax", "alibi_first_batch",
           "window_bounds", "causal_forced", "offset_negated", "OFFSET_VARIANTS"]


def _sdpa(q, k, v, **kw):      # as bugs_scores._sdpa: importing that one would stack this module a floor higher
    return scaled_dot_product_attention(q, k, v, **kw)[0]


def window_edges(q, k, v, *, edge="right from left", **kw):
    """The sliding window applied with one edge wrong: ``edge`` "right from left" (left, left), "right ignored"
    (left, -1), "right 0" (left, 0), "left -1 as 0" (0, right) where left is unbounded, "right + 1", "right - 1",
    "right -1 as Sk" (an unbounded right edge replaced by the key count: rows with i + Sk - Sq < -1 lose keys).
    Causal still caps the right edge at 0."""
    kw = _kw(kw)
    window = kw.pop("window")
    if window is None:
        return _sdpa(q, k, v, window=None, **kw)
    left, right = window
    new = {"right from left": (left, left), "right ignored": (left, -1),
           "right 0": (left, 0), "left -1 as 0": (0, right) if left == -1 else window,
           "right + 1": (left, right + 1) if right >= 0 else window,
           "right - 1": (left, right - 1) if right >= 1 else window,
           "right -1 as Sk": (left, np.shape(k)[-2]) if right == -1 else window}[edge]
    return _sdpa(q, k, v, window=new, **kw)


def other_alignment(alignment: str) -> str:
    """top-left <-> bottom-right."""
    return "bottom-right" if alignment == "top-left" else "top-left"


def causal_only_realigned(q, k, v, *, is_causal=False, window=None, alignment="top-left", mask=None, **kw):
    """Only the causal diagonal takes the other alignment; a window's left edge keeps the case's (a kernel whose
    causal predicate is ``col <= row`` beside a window offset by Sk - Sq). Not causal: the output is refimpl's."""
    if not is_causal:
        return _sdpa(q, k, v, is_causal=is_causal, window=window, alignment=alignment, mask=mask, **kw)
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    keep = band_mask(Sq, Sk, is_causal=True, alignment=other_alignment(alignment))
    if window is not None and window[0] >= 0:
        keep = keep & band_mask(Sq, Sk, window=(window[0], -1), alignment=alignment)
    if mask is None or np.asarray(mask).dtype == bool:
        return _sdpa(q, k, v, mask=keep if mask is None else np.asarray(mask, bool) & keep, **kw)
    return _sdpa(q, k, v, mask=np.where(keep, mask, -np.inf), **kw)


def causal_dropped(q, k, v, *, when="Sq != Sk", is_causal=False, window=None, **kw):
    """The causal flag not applied ``when`` "Sq != Sk" (forwarded only when the lengths agree), "with a window"
    (is_causal derived from an unbounded window: the window alone, its right edge as given), or "left window" (the
    causal path resets the window to (-1, 0): the window's left edge dropped, causal kept)."""
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    has_window = window is not None and tuple(window) != (-1, -1)
    if is_causal and when == "Sq != Sk" and Sq != Sk:
        is_causal = False
    elif is_causal and when == "with a window" and has_window:
        is_causal = False
    elif is_causal and when == "left window" and has_window:
        window = None
    return _sdpa(q, k, v, is_causal=is_causal, window=window, **kw)


def causal_forced(q, k, v, *, is_causal=False, alignment="top-left", forced="top-left", **kw):
    """A causal band (``forced`` alignment: torch's top-left, FlashAttention's bottom-right) where the call asked
    none (a fallback path that hard-codes causal); a causal call keeps its own band."""
    return _sdpa(q, k, v, is_causal=True, alignment=alignment if is_causal else forced, **kw)


def offset_clamped(q, k, v, *, is_causal=False, window=None, alignment="top-left", mask=None, **kw):
    """The bottom-right offset Sk - Sq clamped at 0 (``max(Sk - Sq, 0)``): where Sq > Sk the causal band and window
    are top-left; elsewhere refimpl's output."""
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    if alignment == "bottom-right" and Sq > Sk:
        alignment = "top-left"
    return _sdpa(q, k, v, is_causal=is_causal, window=window, alignment=alignment, mask=mask, **kw)


def offset_negated(q, k, v, *, is_causal=False, window=None, alignment="top-left", mask=None, slopes=None,
                   absolute=False, **kw):
    """Query positions i - (Sk - Sq) where i + (Sk - Sq) is meant (the bottom-right offset's sign flipped), or
    i + |Sk - Sq| (``absolute``: wrong only where Sq > Sk): ALiBi's distance (always bottom-right) and a bottom-right
    causal band or window measured from there; a top-left band is refimpl's."""
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    offset = abs(Sk - Sq) if absolute else Sq - Sk
    d = np.arange(Sq)[:, None] + offset - np.arange(Sk)[None, :]               # (Sq, Sk): i + offset' - j
    if slopes is not None:
        s = np.asarray(slopes)
        bias = (-s[..., None, None] * np.abs(d)).astype(s.dtype)                     # (H|B, H, Sq, Sk)
        bias = bias[None] if s.ndim == 1 else bias
        mask = bias if mask is None else (np.where(mask, bias, -np.inf) if np.asarray(mask).dtype == bool
                                          else np.asarray(mask) + bias)
    if alignment != "bottom-right" or not (is_causal or window is not None):
        return _sdpa(q, k, v, is_causal=is_causal, window=window, alignment=alignment, mask=mask, **kw)
    left, right = (-1, -1) if window is None else window
    if is_causal:
        right = 0 if right < 0 else min(right, 0)                                 # causal caps the right edge at 0
    keep = ((left < 0) | (d <= left)) & ((right < 0) | (-d <= right))              # (Sq, Sk)
    mask = keep if mask is None else (np.asarray(mask) & keep if np.asarray(mask).dtype == bool
                                      else np.where(keep, mask, -np.inf))
    return _sdpa(q, k, v, mask=mask, alignment=alignment, **kw)


# causal-alignment's variants of the query positions' offset (refimpl.bugs lists them with the rest)
OFFSET_VARIANTS = tuple(Variant(f"query positions i + {o}, in the band and ALiBi's distance",
                                _named(offset_negated, absolute=a), flags=True, splits_alibi=True)
                        for o, a in (("(Sq - Sk): the bottom-right offset negated", False),
                                     ("|Sk - Sq|: the offset's absolute value", True)))


def left_edge_realigned(q, k, v, *, window=None, alignment="top-left", mask=None, **kw):
    """Only a window's left edge takes the other alignment (``j >= i - left`` without the Sk - Sq offset, or with it
    where the case is top-left); the right edge and causal keep the case's. No window: refimpl's output."""
    if window is None or window[0] < 0:
        return _sdpa(q, k, v, window=window, alignment=alignment, mask=mask, **kw)
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    keep = band_mask(Sq, Sk, window=(window[0], -1), alignment=other_alignment(alignment))
    rest = band_mask(Sq, Sk, is_causal=kw.pop("is_causal", False), window=(-1, window[1]), alignment=alignment)
    keep = keep if rest is None else keep & rest
    if mask is None or np.asarray(mask).dtype == bool:
        return _sdpa(q, k, v, mask=keep if mask is None else np.asarray(mask, bool) & keep, **kw)
    return _sdpa(q, k, v, mask=np.where(keep, mask, -np.inf), **kw)


def window_bounds(q, k, v, *, window=None, shift=1, alignment="top-left", mask=None, **kw):
    """Window's left edge off by one: (left, right) -> (left + shift, right) when left is bounded; a left edge of 0
    moved to -1 is past the diagonal (key i + offset itself dropped: j > i + offset), not unbounded."""
    if window is None or window[0] < 0 or window[0] + shift >= 0:
        window = window if window is None or window[0] < 0 else (window[0] + shift, window[1])
        return _sdpa(q, k, v, window=window, alignment=alignment, mask=mask, **kw)
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    past = ~window_mask(Sq, Sk, (-1, -1 - window[0] - shift), alignment=alignment)   # j > i + offset + (left + shift)
    keep = past if mask is None or np.asarray(mask).dtype != bool else np.asarray(mask, bool) & past
    mask = keep if mask is None or np.asarray(mask).dtype == bool else np.where(past, mask, -np.inf)
    return _sdpa(q, k, v, window=window, alignment=alignment, mask=mask, **kw)


def alibi_signed(q, k, v, *, mask=None, slopes=None, sign=1.0, **kw):
    """ALiBi with the signed distance: bias -slope * (i + offset - j) without the absolute value (as slope * j up to
    a per-row constant), so keys right of the diagonal are favoured; with causal masking nothing shows. ``sign``
    -1: +slope * (i - j), the sign flipped too (past keys penalised less the farther they are)."""
    if slopes is None:
        return _sdpa(q, k, v, mask=mask, **kw)
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    dist = (np.arange(Sq)[:, None] + Sk - Sq - np.arange(Sk)[None, :]).astype(np.float64)     # (Sq, Sk)
    bias = -sign * (np.asarray(slopes, np.float64)[..., None, None] * dist)
    bias = bias[None] if bias.ndim == 3 else bias                                       # (B|1, H, Sq, Sk)
    if mask is not None:
        m = np.asarray(mask)
        bias = np.where(m, bias, -np.inf) if m.dtype == bool else m + bias
    return _sdpa(q, k, v, mask=bias, **kw)


def _with_alibi(mask, slopes, Sq: int, Sk: int, sign: float = 1.0, alignment: str = "bottom-right"):
    """The user's ``mask`` (None, bool keep or float) with ALiBi's bias ``sign * -slope * |i + Sk - Sq - j|`` (the
    offset Sk - Sq 0 for ``alignment`` "top-left")."""
    if slopes is None:
        return mask
    bias = sign * alibi_bias(slopes, Sq, Sk, alignment=alignment)                # (H|B, H, Sq, Sk)
    bias = bias[None] if np.ndim(slopes) == 1 else bias                            # (B|1, H, Sq, Sk)
    if mask is None:
        return bias
    mask = np.asarray(mask)
    return np.where(mask, bias, -np.inf) if mask.dtype == bool else mask + bias


def bool_mask_added(q, k, v, *, mask=None, slopes=None, with_band=False, kept=1.0, dropped=0.0, dead_zero=False,
                    **kw):
    """The user's bool keep-mask added to the scores as numbers: S + 1 where True, S + 0 where False; nothing is
    masked by it (causal and windows still are); ALiBi (``slopes``) added as it should be. Without a bool mask
    nothing shows (the reference). ``with_band``: the causal band and window arrive folded into that bool mask (as
    an API without those flags hands them) and are added with it, except a top-left causal band with no window (a
    flag such APIs have: the kernel still masks it). ``kept``, ``dropped``: the numbers True and False become (a
    bias of ``dropped`` on the dropped keys when kept is 0). ``dead_zero``: a row the bool mask keeps no key of is
    zeroed afterwards (a has-key guard that reads the mask)."""
    kw = _kw(kw)
    Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
    if with_band and (kw["window"] is not None or (kw["is_causal"] and kw["alignment"] != "top-left")):
        left, right = kw["window"] if kw["window"] is not None else (-1, -1)
        if kw["is_causal"]:
            right = 0 if right == -1 else min(right, 0)
        band = window_mask(Sq, Sk, (left, right), alignment=kw["alignment"])
        if mask is None or np.asarray(mask).dtype == bool:
            mask = band if mask is None else np.asarray(mask) & band
            kw = dict(kw, is_causal=False, window=None)
    live = None
    if mask is not None and np.asarray(mask).dtype == bool:
        live = np.asarray(mask).any(axis=-1, keepdims=True)                          # (..., Sq, 1)
        mask = np.where(np.asarray(mask), kept, dropped)
    out = _sdpa(q, k, v, **dict(kw, mask=_with_alibi(mask, slopes, Sq, Sk)))
    return np.where(live, out, 0.0) if dead_zero and live is not None else out


def float_mask_as_bool(q, k, v, *, mask=None, slopes=None, how="nonzero", **kw):
    """The user's additive float mask read as a bool keep-mask: ``how`` "nonzero" (x.to(bool): nonzero = attend,
    -inf included; a 0 bias masks its key), "zero" (x.to(bool) as a drop-mask, nonzero = masked: only the keys of
    a 0 bias attend) or "finite" (its -inf entries mask, its finite values are dropped); ALiBi (``slopes``, never
    part of the user's mask here) added as it should be."""
    if mask is not None and np.asarray(mask).dtype != bool:
        m = np.asarray(mask)
        mask = {"nonzero": m != 0, "zero": m == 0}.get(how, np.isfinite(m))
    return _sdpa(q, k, v, mask=_with_alibi(mask, slopes, np.shape(q)[-2], np.shape(k)[-2]), **kw)


def mask_batch_flattened(q, k, v, *, head_major=False, **kw):
    """A mask folded over a flattened batch x heads in the other order than the scores: broadcast to (B, H, Sq, Sk)
    folded head-major: row r = b * H + h of the batch-major scores gets the mask of flat row r of the
    head-major fold, (batch, head) = (r % B, r // B) (np.tile(mask, (H, 1, 1)) of a per-batch mask: mask[r % B]).
    ``head_major``: the scores flattened head-major (row h * B + b) and the mask batch-major: (batch b, head h) gets
    the mask of (batch, head) divmod(h * B + b, H). A mask without a batch or head axis (2-D) is read right."""
    kw = _kw(kw)
    m = kw["mask"]
    if m is None or np.ndim(m) < 3:
        return _sdpa(q, k, v, **kw)
    m = np.asarray(m)
    B, H = np.shape(q)[0], np.shape(q)[1]
    full = np.broadcast_to(m, (B, H) + m.shape[-2:])
    if head_major:
        flat = np.arange(H)[None, :] * B + np.arange(B)[:, None]                # (B, H): the scores' flat row
        return _sdpa(q, k, v, **dict(kw, mask=full[flat // H, flat % H]))
    flat = np.arange(B)[:, None] * H + np.arange(H)[None, :]                    # (B, H): batch-major rows
    return _sdpa(q, k, v, **dict(kw, mask=full[flat % B, flat // B]))


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


def mask_after_softmax(q, k, v, **kw):
    """The softmax taken over every key (the finite additive terms kept), the masked weights then set to 0 and the
    rest not renormalised: rows sum to less than 1."""
    kw = _kw(kw)
    w = scaled_dot_product_attention(q, k, v, **dict(kw, mask=None, is_causal=False, window=None))[1]
    keep = scaled_dot_product_attention(q, k, v, **kw)[1] > 0           # what the mask, band and window keep
    m = kw["mask"]
    if m is not None and np.asarray(m).dtype != bool:                    # the additive terms, -inf as 0
        add = np.where(np.isneginf(m), 0.0, np.asarray(m, np.float64))
        w = scaled_dot_product_attention(q, k, v, **dict(kw, mask=add, is_causal=False, window=None))[1]
    v = np.asarray(v, np.float64)
    if kw["enable_gqa"] and np.shape(k)[-3] != np.shape(q)[-3]:
        v = np.repeat(v, np.shape(q)[-3] // np.shape(k)[-3], axis=-3)
    return np.where(keep, w, 0.0) @ v


def scale_after_softmax(q, k, v, **kw):
    """The softmax of the unscaled scores, its weights then multiplied by the scale (rows sum to the scale)."""
    kw = _kw(kw)
    sc = 1.0 / np.sqrt(np.shape(q)[-1]) if kw["scale"] is None else kw["scale"]
    return sc * _sdpa(q, k, v, **dict(kw, scale=1.0))


def alibi_first_batch(q, k, v, *, mask=None, slopes=None, **kw):
    """ALiBi slopes given per batch, (B, Hq), read as batch 0's for every batch (a (Hq,) view of them)."""
    if slopes is not None and np.ndim(slopes) == 2:
        slopes = np.asarray(slopes)[0]
    return _sdpa(q, k, v, mask=_with_alibi(mask, slopes, np.shape(q)[-2], np.shape(k)[-2]), **kw)


def scale(q, k, v, *, factor="1/sqrt(Sk)", scale=None, **kw):
    """Default scale ``factor`` instead of 1/sqrt(D); a given scale honoured, but for "1 always" (never applied)."""
    D, Sk, Dv = q.shape[-1], k.shape[-2], v.shape[-1]
    wrong = {"1/sqrt(Sk)": 1 / math.sqrt(Sk), "1/sqrt(Dv)": 1 / math.sqrt(Dv), "1/D": 1 / D, "1": 1.0,
             "1 always": 1.0}[factor]
    s = wrong if (scale is None or factor == "1 always") else scale
    return _sdpa(q, k, v, scale=s, **kw)


def alibi_dropped(q, k, v, *, mask=None, slopes=None, when="always", **kw):
    """ALiBi's bias left out: ``when`` "always", or "causal" (added only where the causal flag is set: the bias riding
    on the causal mask buffer). The user's ``mask`` and the ``slopes`` arrive apart."""
    if when == "always" or not _kw(kw)["is_causal"]:
        slopes = None
    return _sdpa(q, k, v, mask=_with_alibi(mask, slopes, np.shape(q)[-2], np.shape(k)[-2]), **kw)


def alibi_top_left(q, k, v, *, mask=None, slopes=None, **kw):
    """ALiBi's distance measured from the query's position in the call, |i - j|, without the offset Sk - Sq (a
    chunk's or decode step's local positions: top-left); without ALiBi, the reference."""
    return _sdpa(q, k, v, mask=_with_alibi(mask, slopes, np.shape(q)[-2], np.shape(k)[-2], alignment="top-left"),
                 **kw)


ROWS = (                                 # the rows of refimpl.bugs.MODELS written here
    BugModel("causal-forced", "a causal band is applied where the call asked none (causal hard-coded on some path)",
             tuple(Variant(f"causal {a}", _named(causal_forced, forced=a), flags=True)
                   for a in ("top-left", "bottom-right"))),
    BugModel("mask-broadcast", "a mask is folded over the flattened batch x heads in the other order than the "
             "scores: row b * H + h gets the mask of batch (b * H + h) % B (of head (b * H + h) // B)",
             (Variant("np.tile over heads (the mask folded head-major)", mask_batch_flattened),
              Variant("scores head-major, the mask batch-major", _named(mask_batch_flattened, head_major=True)))),
    BugModel("alibi-distance", "ALiBi's distance is measured between the wrong positions",
             (Variant("|i - j|: the queries' positions without the offset Sk - Sq (top-left)", alibi_top_left,
                      splits_alibi=True),)),
)
