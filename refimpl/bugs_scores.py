"""Scores as bug models build them, and the models of how a kernel modifies its scores and walks its key blocks.

The pieces every bug model is built from: refimpl's output (``_sdpa``), GQA head expansion, the scores with
their keep-mask (``_parts``), and a softmax over the kept entries (a line with nothing kept gives zeros).
Nothing in them is a mistake; the models here and in :mod:`refimpl.bugs` change one step each. The models of
this module (FlexAttention-style and tiled kernels get them wrong; same calling convention as
:mod:`refimpl.bugs`):

* the score modification (softcap, additive terms, ALiBi) applied to the unscaled q k^T, so the scale multiplies
  the cap and the bias too;
* the modification applied after the mask: a masked score of -inf becomes -cap (+ its bias), so masked keys get
  weight;
* the last key block padded with zero keys (score 0, value 0) that are attended: the row sums grow (or only where
  the causal band and window, computed from the key index, reach them);
* the score modification (ALiBi slope, a per-head additive mask) indexed by the kv head a query head reads
  instead of the query head;
* a row with no key left as softmax of all -inf: NaN (where the API documents zeros);
* the softmax taken over the queries (with a library softmax behind the usual guard: a key no query keeps NaN);
* GQA's kv head read as h // Hkv (dividing by the kv head count, not the group size): every head of an MHA
  layer reads kv head 0.
* the causal diagonal excluded (key j visible iff j < i + offset: a query does not see itself);
* online softmax over key blocks with the accumulator rescaled by exp(m_new - m_old) (inverted), or with a running
  max of -inf left unguarded (a row whose leading key block is fully masked gets NaN), or set to 0 for a fully
  masked block and kept (a row far below 0 past a masked leading block underflows to zeros), for each block size;
* one intermediate (the scores, the exponentials, the row sum, the weights) rounded to float16 or bfloat16, or the
  q k^T, the scaled scores and the weights each (a kernel computing in its 16-bit input dtype);
* FlexAttention-style kernels walking a block mask of ``block`` x ``block`` tiles (the case's BLOCK_SIZE; ``own``
  where no block mask is given): the mask applied at tile granularity only (partial tiles attended in full), the
  last key tile padded with zero keys that are attended wherever that tile is, and the mask's indices swapped
  (keep(j, i)) inside the right tiles.
"""
from __future__ import annotations

import math

import numpy as np

from ._kernel import make_band
from .attention import scaled_dot_product_attention
from .bug_model import _kw, _named
from .scores_parts import _expand_heads, _parts, _softmax
from .masks import alibi_bias, window_mask
from .precision import get as precision

__all__ = ["_sdpa", "_expand_heads", "_parts", "_softmax", "_kw", "_named", "mods_before_scale", "softcap_after_mask",
           "zero_padded_tail", "gqa_divisor", "dead_rows_nan", "mods_by_kv_head", "causal_diagonal", "online_inverted",
           "online_unguarded", "online_max_clamped", "rounded_step", "tiles_unmasked", "tile_padded_tail",
           "tile_transposed", "softmax_axis", "scale_compounded"]


def _sdpa(q, k, v, **kw):
    return scaled_dot_product_attention(q, k, v, **kw)[0]


def softmax_axis(q, k, v, *, library=False, batch=False, heads=False, axis0=False, single=False, **kw):
    """Softmax over the queries (axis -2) instead of the keys: P = softmax_q(S), O = P @ v. ``library``: as a
    library softmax behind the usual guard computes it: a row with no key scored 0 before the softmax and zeroed
    after, a key no query keeps NaN (softmax of all -inf). ``batch``: over the flattened batch x heads instead (a
    legacy implicit softmax dim 0 of a (B * H, Sq, Sk) tensor); ``heads``: over the heads (dim 1 of (B, H, Sq, Sk)),
    an entry masked in every head 0; ``axis0``: over the batch (dim 0 of (B, H, Sq, Sk)), an entry masked in every
    batch 0; ``single``: over a size-1 axis (scores kept as (..., Sq, Sk, 1)): every kept key weighs 1, a masked
    one 0, so O is the sum of V over the kept keys."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    if single:
        return np.where(np.broadcast_to(keep, s.shape), 1.0, 0.0) @ v
    if axis0:
        return _softmax(s, np.broadcast_to(keep, s.shape), axis=0) @ v
    if heads:
        return _softmax(s, np.broadcast_to(keep, s.shape), axis=-3) @ v
    if batch:
        keep = np.broadcast_to(keep, s.shape)
        flat = _softmax(s.reshape((-1,) + s.shape[-2:]), keep.reshape((-1,) + s.shape[-2:]), axis=0)
        return flat.reshape(s.shape) @ v
    if not library:
        return _softmax(s, keep, axis=-2) @ v
    dead = ~keep.any(axis=-1, keepdims=True)                                      # (B..., Sq, 1)
    s = np.where(dead, 0.0, np.where(keep, s, -np.inf))
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(axis=-2, keepdims=True))
        return np.where(dead, 0.0, e / e.sum(axis=-2, keepdims=True)) @ v


def mods_before_scale(q, k, v, **kw):
    """S = scale * (cap * tanh(q k^T / cap) + additive): the modification sees the raw scores (a score_mod called
    on q k^T; without a softcap, the additive terms are scaled with q k^T: ``additive-before-scale``'s output)."""
    kw = _kw(kw)
    sc = 1.0 / math.sqrt(np.shape(q)[-1]) if kw["scale"] is None else kw["scale"]
    s, keep, v = _parts(q, k, v, **dict(kw, scale=1.0))
    return _softmax(s * sc, keep) @ v


def softcap_after_mask(q, k, v, **kw):
    """Masked scores (-inf) go through the softcap too: cap * tanh(-inf) = -cap, plus the finite part of the
    additive mask there; every key is then kept. Without a softcap there is nothing to see (the reference)."""
    kw = _kw(kw)
    cap = kw["softcap"]
    s, keep, v = _parts(q, k, v, **kw)
    if cap is None:
        return _softmax(s, keep) @ v
    m = kw["mask"]
    add = 0.0 if m is None or np.asarray(m).dtype == bool else np.where(np.isneginf(m), 0.0, np.asarray(m, float))
    s = np.where(keep, s, -cap + np.broadcast_to(add, s.shape) if np.ndim(add) else -cap)
    return _softmax(s, np.ones(s.shape, bool)) @ v


def zero_padded_tail(q, k, v, *, block=64, banded=False, slopes=None, capped=False, **kw):
    """Keys padded with zeros up to a multiple of ``block`` and attended: score 0 (not masked), value 0.
    ``banded``: the causal band and window, computed from the key index, still mask the pads, and ALiBi's
    ``slopes`` (given apart from the user's mask) bias them too, with the true Sk's offset; only the mask and the
    sequence length miss them. ``capped``: the pads' scores set to -inf before the softcap, which makes them -cap
    (right where no softcap is given: -inf masks them)."""
    kw = _kw(kw)
    s, keep, v = _parts(q, k, v, **kw)
    Sq, Sk = s.shape[-2:]
    pad = (-Sk) % block if not capped or kw["softcap"] is not None else 0
    bias = np.zeros((Sq, Sk + pad))
    if slopes is not None:                     # -slope |i + Sk - Sq - j| over the padded keys: (B|1, Hq, Sq, Sk + pad)
        sl = np.asarray(slopes, np.float64)
        bias = -sl[..., None, None] * np.abs(np.arange(Sq)[:, None] + (Sk - Sq) - np.arange(Sk + pad))
        bias = bias[None] if sl.ndim == 1 else bias
        s = s + bias[..., :Sk]
    if pad:
        band = make_band(Sq, Sk, is_causal=kw["is_causal"], window=kw["window"], alignment=kw["alignment"])
        pads = band.keep(0, Sq, Sk, Sk + pad) if banded and band is not None else np.ones((Sq, pad), bool)
        floor = -float(kw["softcap"]) if capped else 0.0               # the pads' own score before ALiBi
        s = np.concatenate([s, np.broadcast_to(floor + bias[..., Sk:], s.shape[:-1] + (pad,))], axis=-1)
        keep = np.concatenate([keep, np.broadcast_to(pads, keep.shape[:-1] + (pad,))], axis=-1)
        v = np.concatenate([v, np.zeros(v.shape[:-2] + (pad, v.shape[-1]))], axis=-2)
    return _softmax(s, keep) @ v


def gqa_divisor(q, k, v, *, enable_gqa=False, mha_too=True, **kw):
    """Query head h reads kv head h // Hkv (whatever enable_gqa says): under MHA every head reads kv head 0
    (``mha_too`` False: only where Hkv != Hq); a head past Hkv * Hkv has no kv head (the kernel fails there: NaN,
    which no output matches)."""
    Hq, Hkv = np.shape(q)[-3], np.shape(k)[-3]
    if not mha_too and Hq == Hkv:
        return _sdpa(q, k, v, enable_gqa=enable_gqa, **kw)
    idx = np.arange(Hq) // Hkv
    if idx.max() >= Hkv:
        return np.full(np.shape(q)[:-1] + (np.shape(v)[-1],), np.nan)
    k, v = np.take(k, idx, axis=-3), np.take(v, idx, axis=-3)
    return _sdpa(q, k, v, enable_gqa=False, **kw)


def dead_rows_nan(q, k, v, **kw):
    """Right everywhere but on rows with no kept key, which are softmax(all -inf) = 0/0 = NaN."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    out = _softmax(s, keep) @ v
    out[~keep.any(axis=-1)] = np.nan
    return out


def mods_by_kv_head(q, k, v, *, mask=None, slopes=None, **kw):
    """Query head h gets the ALiBi slope and the additive mask of head g = h // (Hq // Hkv) (the kv head it
    reads), not its own: the modification is handed the kv head's index. ``mask`` is the user's mask and
    ``slopes`` ALiBi's; bool masks are kept as they are (a mask_mod is not a score modification)."""
    Hq, Hkv = np.shape(q)[-3], np.shape(k)[-3]
    head = np.arange(Hq) // (Hq // Hkv)
    if mask is not None and np.asarray(mask).dtype != bool and np.shape(mask)[-3] == Hq:
        mask = np.take(mask, head, axis=-3)
    if slopes is not None:
        bias = alibi_bias(np.asarray(slopes)[..., head], np.shape(q)[-2], np.shape(k)[-2], alignment="bottom-right")
        bias = bias[None] if np.ndim(slopes) == 1 else bias                     # (B|1, Hq, Sq, Sk)
        mask = bias if mask is None else (np.where(mask, bias, -np.inf) if np.asarray(mask).dtype == bool
                                          else mask + bias)
    return _sdpa(q, k, v, mask=mask, **kw)


def causal_diagonal(q, k, v, *, nan_rows=False, always=False, **kw):
    """Causal (or a window capped by it) without the diagonal: key j visible iff j < i + offset (``nan_rows``: a
    row that leaves with no key is NaN, a plain softmax of all -inf, where a guarded kernel gives zeros).
    ``always``: the diagonal j == i dropped on every call, causal or not (a self-exclusion mask left on)."""
    kw = _kw(kw)
    if not kw["is_causal"] and not always:
        return _sdpa(q, k, v, **kw)
    s, keep, v = _parts(q, k, v, **kw)
    Sq, Sk = s.shape[-2], s.shape[-1]
    diag = (np.eye(Sq, Sk, dtype=bool) if always                                 # (Sq, Sk): j == i
            else window_mask(Sq, Sk, (0, 0), alignment=kw["alignment"]))          # (Sq, Sk): j == i + offset
    keep = keep & ~diag
    out = _softmax(s, keep) @ v
    if nan_rows:
        out[~keep.any(axis=-1)] = np.nan
    return out


def _online(s, keep, v, block, *, inverted=False, both=False, guarded=True, clamp=False):
    """Online softmax over key blocks: running max m, row sum l and accumulator, rescaled by exp(m_old - m_new)
    (``inverted``: the accumulator by exp(m_new - m_old); ``both``: the row sum too); ``guarded=False``: a running
    max of -inf is used as is; ``clamp``: a running max of -inf becomes 0 and is kept as the running max."""
    s = np.where(keep, s, -np.inf)
    m = np.full(s.shape[:-1] + (1,), -np.inf)                           # (B..., Sq, 1)
    total = np.zeros_like(m)
    acc = np.zeros(s.shape[:-1] + (v.shape[-1],))                        # (B..., Sq, Dv)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for j0 in range(0, s.shape[-1], block):
            sb = s[..., j0:j0 + block]                                   # (B..., Sq, Bk)
            m_new = np.maximum(m, sb.max(axis=-1, keepdims=True))
            if clamp:
                m_new = np.where(np.isneginf(m_new), 0.0, m_new)
            base = np.where(np.isfinite(m_new), m_new, 0.0) if guarded else m_new
            alpha = np.exp(m - base)                                     # 0 on the first block (m = -inf)
            p = np.exp(sb - base)
            wrong = np.where(np.isfinite(m), np.exp(base - m), 0.0)       # exp(m_new - m_old) (0 on the first)
            total = (wrong if both else alpha) * total + p.sum(axis=-1, keepdims=True)
            acc = (wrong if inverted else alpha) * acc + p @ v[..., j0:j0 + block, :]
            m = m_new
        return acc / np.where(total == 0, 1.0, total)


def online_inverted(q, k, v, *, block=64, both=False, **kw):
    """Online softmax whose accumulator (``both``: and row sum) is rescaled by exp(m_new - m_old) instead of
    exp(m_old - m_new)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    return _online(s, keep, v, block, inverted=True, both=both)


def online_unguarded(q, k, v, *, block=64, zeroed=False, **kw):
    """Online softmax with the running max used unguarded: exp(-inf - (-inf)) = NaN on a row whose leading key
    blocks are fully masked (``zeroed``: those rows then zeros, a final ``l > 0`` guard being false for NaN)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    out = _online(s, keep, v, block, guarded=False)
    return np.where(np.isnan(out).any(axis=-1, keepdims=True), 0.0, out) if zeroed else out


def online_max_clamped(q, k, v, *, block=64, **kw):
    """Online softmax whose running max, -inf after fully masked key blocks, is set to 0 and kept: exact but for
    underflow, a row whose scores all lie far below 0 (past a masked leading block) comes out zeros."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    return _online(s, keep, v, block, clamp=True)


def rounded_step(q, k, v, *, step="scores", dtype="bfloat16", **kw):
    """Softmax attention with one intermediate rounded to ``dtype`` (float16, bfloat16): ``step`` "scores" (the
    scaled scores), "exps" (exp(S - max)), "row sum" (the denominator) or "weights" (P), or "scores and weights"
    (a softmax called on 16-bit scores that returns 16-bit weights); the rest in float64; or
    "throughout": q k^T rounded, then the scaled (softcapped, biased) scores and the weights, as a kernel computing
    in its 16-bit input dtype rounds them; or "q k^T": the unscaled product alone rounded (it overflows past the
    dtype's largest value before the scale could bring it back); "q, k and q k^T": q and k cast to ``dtype`` first
    (a similarity computed on 16-bit copies of the inputs), then the product rounded."""
    r = precision(dtype).round
    kw = _kw(kw)
    s, keep, v = _parts(q, k, v, **kw)
    with np.errstate(over="ignore", invalid="ignore"):
        if step in ("scores", "scores and weights"):
            s = r(s)
        elif step in ("throughout", "q k^T", "q, k and q k^T"):     # q k^T rounded, then scaled (and modified)
            qk = (r(np.asarray(q, np.float64)), r(np.asarray(k, np.float64))) if step.startswith("q, k") else (q, k)
            raw, _, _ = _parts(*qk, v, **dict(kw, scale=1.0, softcap=None, mask=None, is_causal=False, window=None),
                               dtype=np.float32)       # accumulated in float32, as 16-bit matmuls do
            sc = 1.0 / math.sqrt(np.shape(q)[-1]) if kw["scale"] is None else kw["scale"]
            keep_r = r if step == "throughout" else (lambda a: a)     # "q k^T": only the product is rounded
            s = keep_r(r(raw.astype(np.float64)) * sc)
            if kw["softcap"] is not None:
                s = keep_r(kw["softcap"] * np.tanh(s / kw["softcap"]))
            m = kw["mask"]
            if m is not None and np.asarray(m).dtype != bool:
                s = keep_r(s + np.where(np.isneginf(m), 0.0, np.asarray(m, np.float64)))
        s = np.where(keep, s, -np.inf)
        if step == "scores and weights":          # a float32 softmax of 16-bit scores (its weights rounded after)
            s = s.astype(np.float32)
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        if step == "exps":
            e = r(e)
        z = e.sum(axis=-1, keepdims=True)
        if step == "row sum":
            z = r(z)
        p = (e / np.where(z == 0, 1.0, z)).astype(np.float64)
        if step == "scores and weights":      # the softmax of a row whose kept scores all rounded to -inf is NaN
            p = np.where(np.any(keep, axis=-1, keepdims=True) & ~np.isfinite(m), np.nan, p)
        if step in ("weights", "throughout", "scores and weights"):
            p = r(p)
    return p @ v


def _tiles(keep, block: int):
    """keep (B..., Sq, Sk) -> True on every element of each (block x block) tile that keeps any (tiles clipped)."""
    Sq, Sk = keep.shape[-2:]
    nq, nk = -(-Sq // block), -(-Sk // block)
    pad = np.zeros(keep.shape[:-2] + (nq * block, nk * block), bool)
    pad[..., :Sq, :Sk] = keep
    tile = pad.reshape(keep.shape[:-2] + (nq, block, nk, block)).any(axis=(-3, -1))     # (B..., nq, nk)
    return np.repeat(np.repeat(tile, block, axis=-2), block, axis=-1)[..., :Sq, :Sk]


def tiles_unmasked(q, k, v, *, block=128, **kw):
    """The mask applied per tile only: every element of a tile that keeps anything is attended (partial tiles in
    full, with the finite part of their additive terms; -inf entries there count as 0)."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    return _softmax(s, keep if keep.all() else _tiles(keep, block)) @ v


def tile_padded_tail(q, k, v, *, block=128, own=128, **kw):
    """Keys padded with zeros to whole tiles (``block`` with a block mask, ``own`` without one); the padding keys
    (score 0, value 0) are attended in every query tile that attends the last key tile."""
    s, keep, v = _parts(q, k, v, **_kw(kw))
    b = own if keep.all() else block
    pad = (-s.shape[-1]) % b
    if not pad:
        return _softmax(s, keep) @ v
    last = _tiles(keep, b)[..., -1:]                                                   # (B..., Sq, 1)
    s = np.concatenate([s, np.zeros(s.shape[:-1] + (pad,))], axis=-1)
    keep = np.concatenate([keep, np.broadcast_to(last, keep.shape[:-1] + (pad,))], axis=-1)
    v = np.concatenate([v, np.zeros(v.shape[:-2] + (pad, v.shape[-1]))], axis=-2)
    return _softmax(s, keep) @ v


def tile_transposed(q, k, v, *, block=128, **kw):
    """Mask and additive terms read with query and key indices swapped (keep(j, i), bias(j, i)) inside the tiles the
    block mask selects for (i, j); square cases only (otherwise the swapped indices run out of range)."""
    kw = _kw(kw)
    s, keep, v = _parts(q, k, v, **kw)
    if s.shape[-1] != s.shape[-2] or keep.all():
        return _softmax(s, keep) @ v
    raw, _, _ = _parts(q, k, v, **dict(kw, mask=None, is_causal=False, window=None))
    m = kw["mask"]
    add = 0.0 if m is None or np.asarray(m).dtype == bool else np.where(np.isneginf(m), 0.0, np.asarray(m, float))
    add = np.swapaxes(np.broadcast_to(add, s.shape), -1, -2)
    return _softmax(raw + add, _tiles(keep, block) & np.swapaxes(keep, -1, -2)) @ v


def scale_compounded(q, k, v, *, block=32, every_call=False, **kw):
    """log2(e) folded into the running scale again on every key block of ``block`` (an exp2 online kernel): key
    block t is scored with scale * log2(e)**t (natural units); on calls without a mask only, unless
    ``every_call`` (a masked branch converting once is right)."""
    kw = _kw(kw)
    if kw["mask"] is not None and not every_call:
        return _sdpa(q, k, v, **kw)
    s, keep, v = _parts(q, k, v, **kw)
    t = np.arange(s.shape[-1]) // block
    return _softmax(s * np.log2(np.e) ** t, keep) @ v
