"""Bug models of a packed (variable-length) batch, the rows of :data:`refimpl.bugs.MODELS` that take the
batch's layout apart (``Variant.packed``).

Besides refimpl's keywords they get ``seqlens`` (each sequence's (lq, lk); sequence b's rows come first in the
dense (B, H, S, *) arrays), ``seq_causal``, ``seq_window`` (per sequence, bottom-right: flash_attn_varlen_func's)
and ``slopes`` (ALiBi, or None), and rebuild the kernel over the packed keys with one mistake: a key range that
crosses into the next sequence or drops a key, band positions taken in the packed batch, the other alignment,
or zero keys padded up to the longest sequence and attended.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["packed_attention"]


def _expand_heads(k, v, Hq):
    """k, v (B, Hkv, Sk, *) -> (B, Hq, Sk, *): query head h uses kv head h // (Hq // Hkv)."""
    idx = np.arange(Hq) // (Hq // k.shape[1])
    return np.take(k, idx, axis=1), np.take(v, idx, axis=1)


def _softmax(s, keep):
    """exp(s - max) / sum over the keys where kept; a row with nothing kept -> zeros."""
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


PACKED_IN = ("right", "left", "alibi")          # where packed positions can be used by mistake


def packed_attention(q, k, v, *, seqlens, seq_causal=False, seq_window=None, scale=None, softcap=None,
                     slopes=None, keys="own", positions="local", packed_in=PACKED_IN, packed_offset="batch",
                     seq_alignment="bottom-right", alibi_aligned=False, zero_padding=False, **_):
    """One packed-batch kernel with its key range (``keys``: own | one-past-end | last-dropped | all | to-end =
    from its start to the batch's end | shifted = cu_seqlens_k[b] - 1 .. cu_seqlens_k[b + 1] - 1, the last
    sequence ending right), its positions (``positions``: local = within the sequence | packed = the index in the
    packed batch, used in ``packed_in`` (right edge, left edge, ALiBi distance), with the offset of the batch
    (total_k - total_q) or of the sequence (lk - lq): ``packed_offset``), its alignment (``seq_alignment``:
    bottom-right | top-left | "top-left past one query": a sequence of one query, a decode step, bottom-right, the
    others top-left; the band's: ALiBi's distance keeps bottom-right unless ``alibi_aligned``) and, with
    ``zero_padding``, keys padded with zeros up to the longest sequence and left unmasked."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    k, v = _expand_heads(k, v, q.shape[1])
    lq = [a for a, _ in seqlens]
    lk = [b for _, b in seqlens]
    cq, ck = np.cumsum([0] + lq), np.cumsum([0] + lk)
    kp = np.concatenate([np.swapaxes(k[b, :, :n], 0, 1) for b, n in enumerate(lk)])      # (total_k, Hq, D)
    vp = np.concatenate([np.swapaxes(v[b, :, :n], 0, 1) for b, n in enumerate(lk)])      # (total_k, Hq, Dv)
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    left, right = seq_window if seq_window is not None else (-1, -1)
    if seq_causal:
        right = 0 if right < 0 else min(right, 0)
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    max_k = max(lk)
    for b, (n_q, n_k) in enumerate(seqlens):
        if n_q == 0 or n_k == 0:
            continue                                    # a sequence with no query or no key: nothing, or zeros
        last = b == len(seqlens) - 1
        start, stop = {"own": (ck[b], ck[b + 1]), "one-past-end": (ck[b], min(ck[b + 1] + 1, ck[-1])),
                       "last-dropped": (ck[b], max(ck[b + 1] - 1, ck[b])), "all": (0, ck[-1]),
                       "to-end": (ck[b], ck[-1]),
                       "shifted": (max(ck[b] - 1, 0), ck[b + 1] if last else max(ck[b + 1] - 1, 0))}[keys]
        kk, vv = kp[start:stop], vp[start:stop]                                           # (n, Hq, *)
        j = np.arange(start, stop) - ck[b]                                                # local key index
        if zero_padding and stop - start < max_k:
            pad = max_k - (stop - start)
            kk = np.concatenate([kk, np.zeros((pad,) + kk.shape[1:])])
            vv = np.concatenate([vv, np.zeros((pad,) + vv.shape[1:])])
            j = np.arange(max_k)
        if len(j) == 0:
            continue                                                                      # no key: zeros
        i = np.arange(n_q)
        with np.errstate(over="ignore", invalid="ignore"):
            sco = np.einsum("hqd,khd->hqk", q[b, :, :n_q], kk) * sc                        # (Hq, n_q, n)
            if softcap is not None:
                sco = softcap * np.tanh(sco / softcap)
        right_aligned = seq_alignment == "bottom-right" or (seq_alignment == "top-left past one query" and n_q == 1)
        local = (i[:, None], j[None, :], (n_k - n_q) if right_aligned else 0)
        packed = ((cq[b] + i)[:, None], (ck[b] + j)[None, :],
                  ck[-1] - cq[-1] if packed_offset == "batch" else n_k - n_q)
        at = {part: packed if positions == "packed" and part in packed_in else local for part in PACKED_IN}
        if positions == "local" and not alibi_aligned:      # ALiBi's distance stays i + lk - lq - j
            at["alibi"] = (local[0], local[1], n_k - n_q)
        if slopes is not None:
            qi, kj, off = at["alibi"]
            sl = np.asarray(slopes, np.float64)
            sl = sl[b] if sl.ndim == 2 else sl                                          # (Hq,): (B, Hq) by sequence
            sco = sco - sl[:, None, None] * np.abs(qi + off - kj)
        keep = np.ones((n_q, len(j)), bool)
        if left >= 0:
            qi, kj, off = at["left"]
            keep = keep & (kj >= qi + off - left)
        if right >= 0:
            qi, kj, off = at["right"]
            keep = keep & (kj <= qi + off + right)
        out[b, :, :n_q] = _softmax(sco, np.broadcast_to(keep, sco.shape)) @ np.swapaxes(vv, 0, 1)
    return out
