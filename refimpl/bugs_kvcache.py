"""Bug models of a KV-cache decode kernel (flash_attn_with_kvcache): the kernel rebuilt over the cache it is handed,
with one mistake in where it writes the new keys, how many keys it reads, or where it finds them.

Every model takes the call's arrays, the cache exactly as the kernel receives it (garbage beyond each sequence's
keys), and returns what such a kernel gives and the cache it leaves::

    fn(q, k_cache, v_cache, new_k, new_v, cache_seqlens, block_table, *, scale=None, causal=False,
       window=(-1, -1), softcap=None, slopes=None) -> (out (B, Hq, Sq, Dv), k_cache after, v_cache after)

q (B, Hq, Sq, D) (refimpl's layout); k_cache, v_cache dense (B, Smax, Hkv, D) or paged (blocks, block_size, Hkv, D)
with ``block_table`` (B, blocks per sequence), else None; new_k, new_v (B, Snew, Hkv, D) or None; cache_seqlens (B,).
A model raises IndexError where its kernel indexes outside the cache or the table (negative indices wrap, as in
NumPy and torch). The kernel done right: write the new keys at logical positions cache_seqlens[b] ... (position p
of sequence b lives at k_cache[b, p], or k_cache[block_table[b, p // bs], p % bs]), then attend keys 0 .. L - 1,
L = cache_seqlens[b] + Snew, causal and windows bottom-right to L, ALiBi -slope * |i + L - Sq - j|. A key it reads
but masks gets score -inf and its value still meets a zero weight (0 x NaN garbage is NaN, as in a kernel that
multiplies what it read); a row with no key is zeros. The mistakes:

* ``reads``: the keys read and where the band ends: ``length`` (right), ``stale`` (cache_seqlens keys: the new
  ones are not attended), ``capacity`` (every slot the sequence has), ``short`` / ``long`` (L - 1, L + 1),
  ``blocks`` (whole blocks of ``block`` keys, or pages, up to the one holding key L - 1; the slots past L in it
  unmasked, the band still aligned to L);
* ``shift``: the kernel's cache_seqlens off by ``shift``: the new keys written there, the length moved with it
  (``appending_only``: only in a call that appends);
* ``writes`` False: the new keys attended from the arguments but never written into the cache;
* ``address``: ``table`` (right), ``identity`` (the block table ignored: block b * blocks_per_seq + p // bs),
  ``no-offset`` (block p // bs for every sequence), ``swapped`` (block_table[b, p % bs], offset p // bs).
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from .bug_model import BugModel, Variant

__all__ = ["MODELS", "kvcache_kernel"]


def _slots(b: int, p: np.ndarray, table, bs: int, address: str) -> tuple:
    """The index (rows, slots) of sequence b's logical positions ``p`` in the cache, as the kernel computes it."""
    if table is None:
        return np.full_like(p, b), p
    per = table.shape[1]
    blk, off = {"table": lambda: (table[b][p // bs], p % bs), "identity": lambda: (b * per + p // bs, p % bs),
                "no-offset": lambda: (p // bs, p % bs), "swapped": lambda: (table[b][p % bs], p // bs)}[address]()
    return blk, off


def _check(cache: np.ndarray, where: tuple) -> tuple:
    """``where`` if it indexes inside ``cache`` (negative indices wrap), else IndexError as torch raises it."""
    for axis, idx in enumerate(where):
        n = cache.shape[axis]
        if idx.size and (idx.max() >= n or idx.min() < -n):
            raise IndexError(f"index out of bounds for dimension {axis} with size {n}")
    return where


def _attend(q, kk, vv, length: int, scale: float, causal: bool, window, softcap, slopes):
    """One sequence: q (Hq, Sq, D), kk (n, Hkv, D), vv (n, Hkv, Dv) at logical positions 0 .. n - 1 of a sequence
    of ``length`` keys -> (Hq, Sq, Dv): the kernel's masked softmax, garbage included."""
    Hq, Sq = q.shape[0], q.shape[1]
    n = kk.shape[0]
    if n == 0:
        return np.zeros((Hq, Sq, vv.shape[-1]))
    heads = np.arange(Hq) // (Hq // kk.shape[1])
    kk, vv = np.swapaxes(kk, 0, 1)[heads], np.swapaxes(vv, 0, 1)[heads]               # (Hq, n, D|Dv)
    i, j = np.arange(Sq)[:, None] + length - Sq, np.arange(n)[None, :]                 # the diagonal, key positions
    left, right = window
    right = 0 if causal else right
    keep = ((left < 0) | (j >= i - left)) & ((right < 0) | (j <= i + right))           # (Sq, n)
    s = q @ np.swapaxes(kk, -1, -2) * scale                                              # (Hq, Sq, n)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if slopes is not None:
        s = s - np.asarray(slopes, np.float64)[:, None, None] * np.abs(i - j)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)                                                    # NaN garbage stays NaN
    e = np.exp(s - np.where(m == -np.inf, 0.0, m))
    total = e.sum(axis=-1, keepdims=True)
    return (e @ vv) / np.where(total == 0, 1.0, total)


def kvcache_kernel(q, k_cache, v_cache, new_k, new_v, cache_seqlens, block_table, *, scale=None, causal=False,
                   window=(-1, -1), softcap=None, slopes=None, reads="length", block=None, shift=0,
                   appending_only=False, writes=True, address="table"):
    """A flash_attn_with_kvcache kernel with the mistakes its keywords name (see the module doc)."""
    q = np.asarray(q, np.float64)
    kc, vc = np.array(k_cache, np.float64), np.array(v_cache, np.float64)
    table = None if block_table is None else np.asarray(block_table, np.int64)
    bs = kc.shape[1]
    cap = kc.shape[1] if table is None else table.shape[1] * bs
    new = 0 if new_k is None else new_k.shape[1]
    lens = [int(c) + (shift if new or not appending_only else 0) for c in cache_seqlens]
    seen_k, seen_v = (kc, vc) if writes else (kc.copy(), vc.copy())       # what the kernel attends
    for b, start in enumerate(lens):
        if new:
            where = _check(kc, _slots(b, np.arange(start, start + new), table, bs, address))
            seen_k[where], seen_v[where] = new_k[b], new_v[b]
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    out = np.zeros(q.shape[:-1] + (vc.shape[-1],))
    step = bs if table is not None else (block or 1)                      # reads="blocks": the block read whole
    for b, c in enumerate(lens):
        length = c + new
        n, band = {"length": (length, length), "stale": (c, c), "capacity": (cap, cap), "short": (length - 1,) * 2,
                   "long": (length + 1,) * 2, "blocks": (min(-(-length // step) * step, cap), length)}[reads]
        where = _check(kc, _slots(b, np.arange(max(n, 0)), table, bs, address))
        with np.errstate(all="ignore"):
            out[b] = _attend(q[b], seen_k[where], seen_v[where], band, sc, causal, window, softcap,
                             None if slopes is None else np.asarray(slopes)[b] if np.ndim(slopes) == 2 else slopes)
    return out, kc, vc


def _v(label: str, **param) -> Variant:
    fn = partial(kvcache_kernel, **param)
    fn.__doc__ = kvcache_kernel.__doc__
    return Variant(label, fn)


# the names are those of tests/zoo/flash_kvcache_impls.py's catalogue, where each has its kernel
MODELS: dict[str, BugModel] = {m.name: m for m in (
    BugModel("cache-length", "the kernel's key count is not cache_seqlens + the new keys",
             (_v("every slot of the cache (its capacity), garbage included", reads="capacity"),
              _v("one key short (L - 1)", reads="short"), _v("one key past the end (L + 1)", reads="long"))),
    BugModel("append-position", "the new keys are written at the wrong position of the cache, and the length follows",
             (_v("at cache_seqlens - 1, over the last cached key", shift=-1, appending_only=True),
              _v("at cache_seqlens + 1, a garbage slot left before them", shift=1, appending_only=True))),
    BugModel("stale-length", "the keys appended in this call are written but not attended (length = cache_seqlens)",
             (_v("cache_seqlens keys", reads="stale"),)),
    BugModel("block-table", "the paged cache is addressed without its block table",
             (_v("block b * blocks_per_seq + p // block_size (the identity table)", address="identity"),
              _v("block p // block_size for every sequence", address="no-offset"))),
    BugModel("page-offset", "a position's page and in-page offset are swapped: block_table[b, p % block_size], "
             "offset p // block_size (an IndexError where that leaves the table)", (_v("swapped", address="swapped"),)),
    BugModel("cache-update", "the new keys are attended but never written into k_cache/v_cache "
             "(flash_attn_with_kvcache updates the cache in place)", (_v("cache left as it was", writes=False),)),
    BugModel("last-block-mask", "key blocks past the length are skipped, but the slots past the length in the last "
             "block read (a page, or N slots of a dense cache) are attended: the cache's garbage",
             tuple(_v(f"N = {n}", reads="blocks", block=n) for n in (16, 32, 64, 128, 256))),
)}
