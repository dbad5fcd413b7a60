"""``flash-attn-kvcache`` — ``flash_attn_with_kvcache``'s signature: ``fn(q, k_cache, v_cache, k=None, v=None,
cache_seqlens=None, block_table=None, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, return_softmax_lse=False)``.

q (B, Sq, Hq, D) torch; the cache dense (B, Smax, Hkv, D) or paged (num_blocks, block_size, Hkv, D) with an int32
``block_table`` (B, blocks per sequence), shuffled; int32 ``cache_seqlens`` (B,): the keys cached before the call.
New keys ``k``, ``v`` (B, Snew, Hkv, D) must be written into the cache at ``cache_seqlens`` (through the block
table) and attended: sequence b attends its ``cache_seqlens[b] + Snew`` keys, causal and windows bottom-right to
that length. Every position beyond a sequence's keys holds garbage (NaN and huge finite values, alternately): a
kernel that reads it fails. After the call the cache must hold the new keys where they belong and nothing else
changed (:meth:`check_writes`). A ``kvcache`` family case is a packed batch whose sequences all have Sq queries
(:attr:`CaseSpec.cache_lens`); a dense case with no mask is a full cache and no new keys.
"""
from __future__ import annotations

import math

import numpy as np

from ...precision import get as precision
from .base import Api, flash_band, to_numpy

__all__ = ["API"]

GARBAGE = 1e30              # beyond each sequence's keys: NaN and +-this (the precision's largest / 4 if smaller)


def layout(spec) -> tuple[list[int], int, int, int | None]:
    """``(cached lengths, new keys, Smax, block size)`` of a case (a dense case: a full cache, nothing new)."""
    if spec.cache_lens is not None:
        cache, new, block = list(spec.cache_lens), spec.new_len, spec.block_size
    elif spec.seqlens is not None:                     # a packed batch of Sq queries each: its keys cached
        cache, new, block = [lk for _, lk in spec.seqlens], 0, None
    else:
        cache, new, block = [spec.Sk] * spec.B, 0, None
    longest = max([c + new for c in cache] + [1])
    smax = longest + 3 if block is None else math.ceil((longest + 1) / block) * block
    return cache, new, smax, block


def _garbage(shape, dtype: str) -> np.ndarray:
    big = min(GARBAGE, precision(dtype).largest / 4)
    g = np.full(shape, big)
    flat = g.reshape(-1)
    flat[::2] = np.nan
    flat[1::4] = -big
    return precision(dtype).round(g)                  # what the target's tensor holds


def caches(data) -> dict:
    """The cache a case hands over and the cache it must leave: ``{"k_cache", "v_cache"}`` before and ``after``,
    the new keys, cache_seqlens and block_table (NumPy, float64 values of the case's precision)."""
    s = data.spec
    cache, new, smax, block = layout(s)
    k, v = np.swapaxes(data.k, 1, 2), np.swapaxes(data.v, 1, 2)              # (B, Sk, Hkv, D|Dv)
    pos = np.arange(smax)                                                     # logical positions of a sequence
    if block is None:
        table = None
        rows = np.broadcast_to(np.arange(s.B)[:, None], (s.B, smax))            # (B, smax): the cache row
        offs = np.broadcast_to(pos, (s.B, smax))                                 # and the slot in it
        shape = (s.B, smax)
    else:
        per = smax // block                                                   # the table's width
        need = [max(1, math.ceil((c + new) / block)) for c in cache]          # pages each sequence holds
        n_blocks = sum(need) + 1                                              # and one page no sequence owns
        perm = np.random.default_rng([s.index, 7919, s.B]).permutation(n_blocks)
        table = np.full((s.B, per), perm[-1], np.int32)                       # entries past a sequence's pages:
        at = 0                                                                # the unowned page (garbage)
        for b in range(s.B):
            table[b, :need[b]] = perm[at:at + need[b]]
            at += need[b]
        rows, offs = table[:, pos // block], np.broadcast_to(pos % block, (s.B, smax))
        shape = (n_blocks, block)
    out: dict = {}
    for name, src in (("k_cache", k), ("v_cache", v)):
        before = _garbage(shape + src.shape[2:], s.dtype)
        for b in range(s.B):
            n = cache[b]
            before[rows[b, :n], offs[b, :n]] = src[b, :n]
        after = before.copy()
        for b in range(s.B):
            span = slice(cache[b], cache[b] + new)
            after[rows[b, span], offs[b, span]] = src[b, span]
        out[name] = (before, after)
    out["new_k"] = np.stack([k[b, cache[b]:cache[b] + new] for b in range(s.B)]) if new else None
    out["new_v"] = np.stack([v[b, cache[b]:cache[b] + new] for b in range(s.B)]) if new else None
    out["cache_seqlens"] = np.array(cache, np.int32)
    out["block_table"] = table
    return out


class FlashAttnKVCache(Api):
    def cannot(self, spec):
        if spec.seqlens is not None and any(lq != spec.Sq for lq, _ in spec.seqlens):
            return ("flash_attn_with_kvcache's sequences all have Sq queries (q is (B, Sq, H, D)); ragged queries "
                    "are --api flash-attn-varlen's")
        return super().cannot(spec)             # (a packed batch of Sq queries each: its cache says the rest)

    def arguments(self, data, conv, layout_):
        import torch as th
        s = data.spec
        c = caches(data)
        causal, window_size = flash_band(s)
        given = {"q": conv(np.swapaxes(data.q, 1, 2)), "k_cache": conv(c["k_cache"][0]),
                 "v_cache": conv(c["v_cache"][0]), "k": conv(c["new_k"]), "v": conv(c["new_v"]),
                 "cache_seqlens": th.tensor(c["cache_seqlens"], dtype=th.int32),
                 "block_table": None if c["block_table"] is None else th.tensor(c["block_table"], dtype=th.int32)}
        slopes = None if not s.alibi else th.tensor(data.slopes, dtype=th.float32)
        kwargs = dict(k=given["k"], v=given["v"], cache_seqlens=given["cache_seqlens"],
                      block_table=given["block_table"], softmax_scale=s.scale, causal=causal,
                      window_size=window_size, softcap=s.softcap or 0.0,
                      alibi_slopes=slopes, return_softmax_lse=False)
        given = {n: a for n, a in given.items() if a is not None}
        return given, (given["q"], given["k_cache"], given["v_cache"]), kwargs

    def check_writes(self, wrote, data):
        c = caches(data)
        new = c["new_k"] is not None
        problems = []
        for name in ("k_cache", "v_cache"):
            before, after = c[name]
            if name not in wrote:
                if new:
                    problems.append(f"{name}: the new keys were not written into the cache at cache_seqlens "
                                    f"(flash_attn_with_kvcache updates it in place)")
                continue
            now, _ = to_numpy(wrote[name], name)
            want = after if new else before
            if now.shape != want.shape:
                problems.append(f"{name}: its shape changed from {want.shape} to {now.shape}")
                continue
            same = (now == want) | (np.isnan(now) & np.isnan(want))
            if not same.all():
                problems.append(f"{name}: after the call {int((~same).sum())} values differ from the cache with "
                                f"{'the new keys written at cache_seqlens' if new else 'nothing written'}"
                                f"{' (through the block table)' if c['block_table'] is not None else ''}")
        return problems

    def accepts(self, raw, is_array):
        return bool(is_array(raw)) or (isinstance(raw, tuple) and len(raw) > 0 and is_array(raw[0]))


_NO_MASK = "flash_attn_with_kvcache takes no {} mask (a sequence's keys are its cache_seqlens)"
API = FlashAttnKVCache(
    name="flash-attn-kvcache", params=("k_cache", "v_cache", "cache_seqlens"), tensors=True, layouts=("BSHD",),
    arg_names=("q", "k_cache", "v_cache"),
    signature="fn(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None, "
              "causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False)",
    cannot_express={**{f"{m}-mask": _NO_MASK.format(m) for m in ("bool", "additive", "padding")},
                    "top-left-band": "flash_attn_with_kvcache aligns causal and windows bottom-right"},
    returns="return the output tensor (B, Sq, Hq, Dv), as flash_attn_with_kvcache does",
    causal_flag="bottom-right", writes=("k_cache", "v_cache"),
    no_dropout="has no dropout: flash_attn_with_kvcache takes no dropout_p (an inference kernel)",
    lse_kwargs={"return_softmax_lse": True},
    lse_returns="(out, softmax_lse (B, Hq, Sq) float32) as with return_softmax_lse=True")
