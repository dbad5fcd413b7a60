"""Bug models of whether a kernel applies what it is handed: a mask (with the causal band and window where they
arrive inside it) skipped, every key dropped by a mask read the wrong way (ALiBi's bias left out is
``alibi_dropped`` in :mod:`refimpl.bugs_general`, beside the ALiBi fold it needs). Same calling
convention as :mod:`refimpl.bugs` (refimpl's inputs and keywords in, the output (B..., Sq, Dv) out); the rows of
the bug-model table they make are ``ROWS`` (:mod:`refimpl.bugs` lists them with its own).

* the mask accepted and never applied (or only a bool one: a float mask added), or skipped on a one-query decode
  step (Sq == 1: "the prompt needs a mask, a single new token does not"), the causal and window flags kept or
  skipped with it;
* a bool mask read with True = masked out (the table's ``mask-polarity``), also with the dropped keys given a
  finite fill (``masked_fill(mask, -finfo.max)`` on the wrong side);
* the mask's query rows collapsed: each chunk of C query rows reads its first row's mask (a bias sliced per
  query chunk with a hard-coded length of 1), or every row reads row 0's;
* a mask of lower rank (a causal band (Sq, Sk), a per-head (H, Sq, Sk)) brought to the scores' rank with
  ``mask[:, None]`` repeated: its leading axis lands on the batch, the output broadcast to another shape (or a
  broadcast error);
* every key dropped wherever a mask is given: a 0/1 integer keep-mask negated with a bitwise not (``~1 = -2``,
  ``~0 = -1``, both nonzero) marks every key as padding; the rows then give what the kernel gives a row with no key
  (zeros behind a guard, NaN from 0/0, V's mean from a finite fill);
"""
from __future__ import annotations

import numpy as np

from .attention import scaled_dot_product_attention
from .bug_model import BugModel, Variant, _kw, _named
from .masks import window_mask
from .scores_parts import _parts, _softmax

__all__ = ["ROWS", "mask_skipped", "every_key_dropped", "padding_lengths_inverted", "bool_mask_filled",
           "mask_polarity", "mask_inverted_filled", "mask_rows_collapsed"]

SKIPPED = ("always", "where it is bool", "one query", "one query, band too")
DEAD = ("zeros", "NaN", "the mean of V")
CHUNKS = (8, 16, 32, 64, 128)


def mask_skipped(q, k, v, *, when="always", dead_zero=False, **kw):
    """The mask not applied: ``when`` "always" (the argument accepted and ignored), "where it is bool" (a float
    mask added, a bool one converted and the conversion dropped), "one query" (only on a call with Sq == 1, the
    causal and window flags still applied) or "one query, band too" (the flags skipped with it). ``dead_zero``: the
    rows the mask leaves no key zeroed afterwards (a has-key guard that reads the mask the softmax never got)."""
    kw = _kw(kw)
    if dead_zero:
        out = mask_skipped(q, k, v, when=when, **kw)
        keep = _parts(q, k, v, **kw)[1]                                  # (B..., Sq, Sk): mask and band
        return np.where(keep.any(axis=-1)[..., None], out, 0.0)
    if when == "where it is bool":
        if kw["mask"] is not None and np.asarray(kw["mask"]).dtype == bool:
            kw = dict(kw, mask=None)
    elif when == "always" or np.shape(q)[-2] == 1:
        kw = dict(kw, mask=None)
        if when == "one query, band too":
            kw = dict(kw, is_causal=False, window=None)
    return scaled_dot_product_attention(q, k, v, **kw)[0]


def every_key_dropped(q, k, v, *, dead="zeros", **kw):
    """Where a mask is given, no key is kept: every row gets what the kernel gives a row with no key, ``dead``
    "zeros" (a guarded softmax), "NaN" (0/0) or "the mean of V" (a finite fill: every key weighted alike). Without a
    mask, refimpl's output."""
    kw = _kw(kw)
    if kw["mask"] is None:
        return scaled_dot_product_attention(q, k, v, **kw)[0]
    _, _, v = _parts(q, k, v, **kw)                                      # v expanded to the query heads
    Sq = np.shape(q)[-2]
    row = {"zeros": np.zeros_like(v[..., :1, :]), "NaN": np.full_like(v[..., :1, :], np.nan),
           "the mean of V": v.mean(axis=-2, keepdims=True)}[dead]      # (B..., 1, Dv)
    return np.repeat(row, Sq, axis=-2)


def padding_lengths_inverted(q, k, v, *, mask=None, **kw):
    """A key-padding mask (each batch's and head's rows one and the same prefix True...True False...False) turned
    into key lengths counted from its False entries (True read as padding): a sequence with n keys attends its
    first Sk - n. Any other mask (and a float one) is applied right (the dense path)."""
    kw = _kw(kw)
    m = None if mask is None else np.asarray(mask)
    if m is not None and m.dtype == bool and m.ndim >= 2:
        Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
        full = np.broadcast_to(m, m.shape[:-2] + (Sq, Sk))
        prefix = np.all(full[..., :-1] >= full[..., 1:]) and np.all(full == full[..., :1, :])
        if prefix:
            m = np.arange(Sk) < Sk - full[..., :1, :].sum(axis=-1, keepdims=True)      # (..., 1, Sk)
    return scaled_dot_product_attention(q, k, v, **dict(kw, mask=m))[0]


def mask_polarity(q, k, v, *, mask=None, with_band=False, **kw):
    """A bool mask read with True = masked out: keep' = ~keep (float masks unchanged). ``with_band``: the
    causal/window band is folded into the bool mask first and inverted with it (a mask-only API)."""
    if with_band and (kw.get("is_causal") or kw.get("window") is not None):
        Sq, Sk = np.shape(q)[-2], np.shape(k)[-2]
        left, right = kw.pop("window", None) or (-1, -1)
        if kw.pop("is_causal", False):
            right = 0 if right == -1 else min(right, 0)
        band = window_mask(Sq, Sk, (left, right), alignment=kw.pop("alignment", "top-left"))
        if mask is None or np.asarray(mask).dtype == bool:
            mask = band if mask is None else np.asarray(mask) & band
        else:
            mask = np.where(band, mask, -np.inf)
            return scaled_dot_product_attention(q, k, v, mask=mask, **kw)[0]
    if mask is not None and np.asarray(mask).dtype == bool:
        mask = ~np.asarray(mask)
    return scaled_dot_product_attention(q, k, v, mask=mask, **kw)[0]


def mask_inverted_filled(q, k, v, *, fill=-1e30, added=False, **kw):
    """A bool mask read with True = masked out and the dropped keys scored a finite ``fill`` (a masked_fill with
    -finfo.max on the kept keys): a row the user keeps whole is uniform over its band; a row the user keeps nothing
    of is zeros (the kernel's own has-key guard reads the user's mask); the causal / window flags mask with -inf.
    ``added``: the fill added to those scores (BERT's mask * -10000 with the mask's 1 on the kept keys): a row kept
    whole is only shifted, so right. A float mask as it should be."""
    kw = _kw(kw)
    if kw["mask"] is None or np.asarray(kw["mask"]).dtype != bool:
        return scaled_dot_product_attention(q, k, v, **kw)[0]
    s, band, v = _parts(q, k, v, **dict(kw, mask=None))                  # (B..., Sq, Sk): the flags' band only
    mask = np.asarray(kw["mask"])
    z = np.where(band, np.where(mask, s + fill if added else fill, s), -np.inf)
    e = np.exp(z - np.where(band.any(axis=-1, keepdims=True), z.max(axis=-1, keepdims=True), 0.0))
    d = e.sum(axis=-1, keepdims=True)
    out = (e / np.where(d == 0, 1.0, d)) @ v
    return np.where(np.broadcast_to(mask & band, z.shape).any(axis=-1)[..., None], out, 0.0)


def bool_mask_filled(q, k, v, *, fill=0.0, **kw):
    """A bool mask's dropped keys scored ``fill`` (0: a masked_fill with a tiny negative) instead of -inf, the causal
    and window flags masking with -inf (refimpl.bugs' finite-mask-fill fills every dropped key); a float mask as it
    should be. A row every bool-dropped key of which gets the fill is uniform over them; no key at all: zeros."""
    kw = _kw(kw)
    if kw["mask"] is None or np.asarray(kw["mask"]).dtype != bool:
        return scaled_dot_product_attention(q, k, v, **kw)[0]
    s, band, v = _parts(q, k, v, **dict(kw, mask=None))                  # (B..., Sq, Sk): the flags' band only
    s = np.where(np.asarray(kw["mask"]), s, fill)
    z = np.where(band, s, -np.inf)
    e = np.exp(z - np.where(band.any(axis=-1, keepdims=True), z.max(axis=-1, keepdims=True), 0.0))
    d = e.sum(axis=-1, keepdims=True)
    return (e / np.where(d == 0, 1.0, d)) @ v


def mask_promoted(q, k, v, *, mask=None, at=1, **kw):
    """A mask of lower rank than the scores brought to their rank by inserting axes at ``at`` (1: ``mask[:, None]``
    until it has the rank, its leading axis then read as the batch) instead of in front; the scores, keep-mask and
    values broadcast against it as NumPy does (another output shape, or a broadcast error, as the kernel's)."""
    s, keep, v = _parts(q, k, v, **_kw(dict(kw, mask=None)))            # (B, H, Sq, Sk) without the mask
    if mask is not None:
        m = np.asarray(mask)
        while m.ndim < s.ndim:
            m = np.expand_dims(m, at)
        if m.dtype == bool:
            keep = keep & m
        else:
            keep, s = keep & (m != -np.inf), s + np.where(np.isneginf(m), 0.0, m)
        s, keep = np.broadcast_arrays(s, keep)
    return _softmax(s, keep) @ v


def mask_rows_collapsed(q, k, v, *, chunk=16, **kw):
    """Query row i attends with the mask row of its chunk's first row, ``(i // chunk) * chunk`` (``chunk`` None:
    row 0 for every row); a mask with one query row, or none, applies as it should."""
    kw = _kw(kw)
    m = kw["mask"]
    Sq = np.shape(q)[-2]
    if m is not None and np.ndim(m) >= 2 and np.shape(m)[-2] == Sq > 1:
        rows = np.zeros(Sq, int) if chunk is None else np.arange(Sq) // chunk * chunk
        kw = dict(kw, mask=np.asarray(m)[..., rows, :])
    return scaled_dot_product_attention(q, k, v, **kw)[0]


ROWS = (
    BugModel("mask-skipped", "the mask is not applied in some calls: the keys it drops are attended",
             tuple(Variant(f"skipped {w}" if w in SKIPPED[:2] else f"skipped with {w} (Sq == 1, a decode step)",
                           _named(mask_skipped, when=w), flags=w != "one query, band too") for w in SKIPPED)
             + (Variant("skipped always, the rows it leaves no key zeroed (a has-key guard reads the mask)",
                        _named(mask_skipped, dead_zero=True), flags=True),),
             distinct_from=("alibi-dropped",         # where ALiBi is the only mask: ALiBi dropped says more
                            "causal-alignment")),    # one query, band too: causal dropped is the other alignment
    BugModel("mask-drops-all", "wherever a mask is given every key is dropped (a 0/1 integer mask negated with a "
             "bitwise not: ~1 and ~0 are both nonzero, so every key reads as padding)",
             tuple(Variant(f"every row {d}", _named(every_key_dropped, dead=d), flags=True) for d in DEAD)),
    BugModel("mask-rows", "query rows read another query row's mask: a query chunk's rows all read its first row's "
             "(the mask sliced per chunk with a length of 1), or every row reads row 0's",
             tuple(Variant(f"chunks of {c} query rows, each reading its first row's mask",
                           _named(mask_rows_collapsed, chunk=c), flags=True) for c in CHUNKS)
             + (Variant("every query row reading row 0's mask", _named(mask_rows_collapsed, chunk=None), flags=True),)),
    BugModel("mask-rank", "a mask of lower rank than the scores is brought to their rank with its new axes inserted "
             "after its first (mask[:, None]), not in front: its leading axis is read as the batch",
             (Variant("new axes after the mask's first axis", _named(mask_promoted, at=1), flags=True),)),
)
