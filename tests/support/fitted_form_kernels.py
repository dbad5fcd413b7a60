"""Kernels with one mistake each, written for tests/test_fitted_forms.py from the APIs' documented semantics (not
from refimpl's bug models): a flash_attn_func-style kernel (torch, (B, S, H, D), bottom-right causal and windows,
softcap, ALiBi, GQA by h // G), a torch SDPA-style one and a NumPy one of refimpl's protocol, each taking its
mistake as a parameter so that a test can build it with several values of that parameter."""
import math

import numpy as np
import torch


def _dense(q, k, v, keep, scale, bias=None, softcap=0.0):
    """(..., Sq, D) x (..., Sk, D) -> (..., Sq, Dv) in float64; a row with no kept key gives zeros."""
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    alive = torch.isfinite(m)
    p = torch.exp(s - torch.where(alive, m, torch.zeros_like(m)))
    den = p.sum(dim=-1, keepdim=True)
    return torch.where(alive, (p @ v.double()) / torch.where(alive, den, torch.ones_like(den)), torch.zeros(1))


def flash_kernel(*, kv_head=None, alibi_ignored=None, causal_ignored=None, keys_from_offset=False, folded_rows=None,
                 slices=None, edge_shift=(0, 0), negate=None, slope_head=None, zero_unbounded=False):
    """flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, ...) with one
    mistake: ``kv_head(h, Hq, Hkv, Sq)`` the kv head query head h reads; ``alibi_ignored(B, Sq, Sk)`` /
    ``causal_ignored(B, Sq, Sk, D, Dv)`` when the argument is skipped; ``keys_from_offset``: every query's keys
    from Sk - Sq on; ``folded_rows`` M: a GQA group folded into the rows i * G + g and only the first M computed;
    ``slices`` m: the flattened batch x heads computed in slices of m, the remainder never; ``edge_shift`` (dl,
    dr): the band's bounded edges moved outwards, left + dl and right + dr (the causal band's right edge too);
    ``negate`` "left" or "right": that edge of a window handed on negated (flash-attn reads a negative edge as
    unbounded), before causal caps the right edge; ``slope_head(h, Hq)`` the head whose ALiBi slope head h takes;
    ``zero_unbounded``: the edges resolved as ``edge or max_span`` after causal's cap, so an edge of 0 (causal's
    right edge, a window side of 0) is unbounded."""
    def fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
           alibi_slopes=None, deterministic=False, return_attn_probs=False):
        B, Sq, Hq, D = q.shape
        Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
        G = Hq // Hkv
        scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
        if causal_ignored is not None and causal_ignored(B, Sq, Sk, D, Dv):
            causal = False
        if alibi_ignored is not None and alibi_ignored(B, Sq, Sk):
            alibi_slopes = None
        off = Sk - Sq
        i = torch.arange(Sq)[:, None] + off
        j = torch.arange(Sk)[None, :]
        left, right = window_size
        if negate is not None and tuple(window_size) != (-1, -1):
            left, right = (-left, right) if negate == "left" else (left, -right)
        if causal:
            right = 0 if right < 0 else min(right, 0)
        if zero_unbounded:
            left, right = (-1 if e == 0 else e for e in (left, right))
        left, right = (e + d if e >= 0 else e for e, d in zip((left, right), edge_shift))
        keep = torch.ones(Sq, Sk, dtype=torch.bool)
        if left >= 0:
            keep &= j >= i - left
        if right >= 0:
            keep &= j <= i + right
        if keys_from_offset:
            keep &= j >= max(off, 0)
        out = torch.zeros(B, Hq, Sq, Dv, dtype=torch.float64)
        for b in range(B):
            for h in range(Hq):
                if slices is not None and b * Hq + h >= slices * (B * Hq // slices):
                    continue
                c = h // G if kv_head is None else kv_head(h, Hq, Hkv, Sq)
                bias = None
                if alibi_slopes is not None:
                    a = h if slope_head is None else slope_head(h, Hq)
                    slope = alibi_slopes[b, a] if alibi_slopes.dim() == 2 else alibi_slopes[a]
                    bias = -float(slope) * (i - j).abs().double()
                o = _dense(q[b, :, h], k[b, :, c], v[b, :, c], keep, scale, bias, softcap)
                if folded_rows is not None:
                    rows = torch.arange(Sq) * G + h % G
                    o = torch.where((rows < folded_rows)[:, None], o, torch.zeros(1, dtype=o.dtype))
                out[b, h] = o
        return out.transpose(1, 2).to(q.dtype).contiguous()
    return fn


def sdpa_kernel(*, batch_stride_zero=False, compound_block=None, inverted_when=None, scale_with_mask=None,
                value_tiles=None, kv_batch0_when=None, mask_batch0=False):
    """scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa) with
    one mistake: ``batch_stride_zero``: every batch's result written onto batch 0 (the last wins), the others
    never written; ``compound_block`` n: on calls without a mask, key block t of n keys scored with the scale
    times log2(e)**t (log2(e) folded into a running scale once per block); ``inverted_when(B, L, S)``: when it
    holds, a bool attn_mask is read with True = masked out; ``scale_with_mask``: the scale used whenever an attn_mask
    is given (a fallback path), the right one otherwise; ``value_tiles`` T: the output computed in tiles of T value
    channels, each stored from channel 0 (its offset left out); ``kv_batch0_when(B, L)``: when it holds, every batch
    reads batch 0's key and value (their batch stride taken as 0); ``mask_batch0``: every batch reads batch 0's
    attn_mask (``attn_mask[0]`` broadcast)."""
    def fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        B, Hq, L, E = query.shape
        if kv_batch0_when is not None and kv_batch0_when(B, L):
            key, value = key[:1].expand_as(key), value[:1].expand_as(value)
        if mask_batch0 and attn_mask is not None and attn_mask.dim() == 4:
            attn_mask = attn_mask[:1].expand_as(attn_mask)
        Hkv, S = key.shape[1], key.shape[2]
        k = key.repeat_interleave(Hq // Hkv, 1)
        v = value.repeat_interleave(Hq // Hkv, 1)
        sc = 1.0 / math.sqrt(E) if scale is None else scale
        sc = scale_with_mask if scale_with_mask is not None and attn_mask is not None else sc
        keep = torch.ones(L, S, dtype=torch.bool)
        if is_causal:
            keep = torch.tril(keep)
        bias = None
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                inverted = inverted_when is not None and inverted_when(B, L, S)
                keep = keep & (~attn_mask if inverted else attn_mask)
            else:
                bias = attn_mask.double()
        if compound_block is not None and attn_mask is None:
            t = torch.arange(S) // compound_block
            s = (query.double() @ k.double().transpose(-2, -1)) * sc * (math.log2(math.e) ** t.double())
            s = s.masked_fill(~keep, float("-inf"))
            m = s.amax(-1, keepdim=True)
            alive = torch.isfinite(m)
            p = torch.exp(s - torch.where(alive, m, torch.zeros_like(m)))
            den = p.sum(-1, keepdim=True)
            out = torch.where(alive, (p @ v.double()) / torch.where(alive, den, torch.ones_like(den)),
                              torch.zeros(1))
            return out.to(query.dtype)
        out = _dense(query, k, v, keep, sc, bias)
        if value_tiles is not None:
            stored = torch.zeros_like(out)
            for start in range(0, out.shape[-1], value_tiles):
                tile = out[..., start:start + value_tiles]
                stored[..., :tile.shape[-1]] = tile
            out = stored
        if batch_stride_zero:
            moved = torch.zeros_like(out)
            for b in range(B):
                moved[0] = out[b]
            out = moved
        return out.to(query.dtype)
    return fn


def numpy_padding_lengths_inverted(q, k, v, mask=None, scale=None):
    """refimpl's protocol, fn(q, k, v, mask=None, scale=None): a key-padding mask (one row True...True False...False
    for every query) turned into key lengths counted from its False entries, so a sequence of n keys attends its
    first Sk - n; any other mask applied as given."""
    q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
    Sk = k64.shape[-2]
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else scale
    keep = np.ones(q64.shape[:-1] + (Sk,), bool) if mask is None else np.broadcast_to(
        np.asarray(mask, bool), q64.shape[:-1] + (Sk,))
    rows_same = bool(np.all(keep == keep[..., :1, :]))
    prefix = bool(np.all(keep[..., :-1] >= keep[..., 1:]))
    if mask is not None and rows_same and prefix:
        n = keep[..., :1, :].sum(axis=-1, keepdims=True)
        keep = np.broadcast_to(np.arange(Sk) < Sk - n, keep.shape)
    s = np.where(keep, q64 @ np.swapaxes(k64, -1, -2) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.exp(s - np.where(alive, m, 0.0))
    den = p.sum(axis=-1, keepdims=True)
    return np.where(alive, (p @ v64) / np.where(alive, den, 1.0), 0.0).astype(np.asarray(q).dtype)


def numpy_float32_wrong_shape_when_masked(q, k, v, mask=None, scale=None):
    """refimpl's protocol computed in float32 (right otherwise), and with a mask given the output's last axis cut to
    one value: a target some of whose failing cases have no usable values at all."""
    q32, k32, v32 = (np.asarray(a, np.float32) for a in (q, k, v))
    sc = np.float32(1.0 / math.sqrt(q32.shape[-1]) if scale is None else scale)
    s = q32 @ np.swapaxes(k32, -1, -2) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, bool), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.exp(s - np.where(alive, m, np.float32(0)))
    den = p.sum(axis=-1, keepdims=True)
    out = np.where(alive, (p @ v32) / np.where(alive, den, np.float32(1)), np.float32(0))
    return (out[..., :1] if mask is not None else out).astype(np.asarray(q).dtype)


def numpy_rows_with_a_masked_key_zeroed(q, k, v, mask=None, scale=None):
    """refimpl's protocol, right but for every row with a masked key, returned as zeros (what a guard on a NaN of a
    masked block gives): every judged row is right or zero, yet nothing was misplaced."""
    q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
    sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else scale
    keep = np.ones(q64.shape[:-1] + (k64.shape[-2],), bool) if mask is None else np.broadcast_to(
        np.asarray(mask, bool), q64.shape[:-1] + (k64.shape[-2],))
    s = np.where(keep, q64 @ np.swapaxes(k64, -1, -2) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.exp(s - np.where(alive, m, 0.0))
    out = np.where(alive, (p @ v64) / np.where(alive, p.sum(axis=-1, keepdims=True), 1.0), 0.0)
    return np.where(keep.all(axis=-1, keepdims=True), out, 0.0).astype(np.asarray(q).dtype)


def numpy_unscaled_wrong_shape_when_masked(q, k, v, mask=None, scale=None):
    """refimpl's protocol with no scale at all (1), and with a mask given the output's last axis cut to one value."""
    out = numpy_rows_with_a_masked_key_zeroed(q, k, v, None, 1.0)
    return out[..., :1] if mask is not None else out


def numpy_denominator(form: str):
    """refimpl's protocol with the softmax's denominator wrong, the numerators exp(scale * (s - m)) right: ``form``
    "unscaled": the denominator summed from exp(s - m), the raw scores; "first key twice": the running sum started
    from the first key's term and then summed over every key (the first counted twice); "grows with Sk": the right sum
    times 1 + 5e-5 Sk."""
    def fn(q, k, v, mask=None, scale=None):
        q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
        sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else scale
        s = q64 @ np.swapaxes(k64, -1, -2)
        if mask is not None:
            m = np.asarray(mask)
            s = np.where(m, s, -np.inf) if m.dtype == bool else s + m / sc
        top = s.max(axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        num = np.exp(sc * (s - top))
        if form == "unscaled":
            den = np.exp(s - top).sum(axis=-1, keepdims=True)
        elif form == "doubled":                      # the sum counted twice: every output row halved
            den = 2.0 * num.sum(axis=-1, keepdims=True)
        elif form == "grows with Sk":                # the sum off by 1 + 5e-5 Sk: 1e-4 at 2 keys, 5e-3 at 100
            den = num.sum(axis=-1, keepdims=True) * (1.0 + 5e-5 * s.shape[-1])
        else:
            den = num[..., :1] + num.sum(axis=-1, keepdims=True)
        w = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        return (w @ v64).astype(np.asarray(q).dtype)
    return fn


def numpy_split_merge_rolled(splits: int):
    """refimpl's protocol as a split-KV kernel: ``splits`` splits of ceil(Sk / splits) keys, each split's output
    normalised by its own sum, merged with the LSEs of the next query row (an accumulator read one row off); a
    bool mask only (an additive one is added to the scores)."""
    def fn(q, k, v, mask=None, scale=None):
        q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
        sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else scale
        s = q64 @ np.swapaxes(k64, -1, -2) * sc
        if mask is not None:
            m = np.asarray(mask)
            s = np.where(m, s, -np.inf) if m.dtype == bool else s + m
        Sk = s.shape[-1]
        size = -(-Sk // splits)
        outs, lses = [], []
        for a in range(0, Sk, size):
            part = s[..., a:a + size]
            top = part.max(axis=-1, keepdims=True)
            top = np.where(np.isfinite(top), top, 0.0)
            e = np.exp(part - top)
            z = e.sum(axis=-1, keepdims=True)
            outs.append(np.divide(e, z, out=np.zeros_like(e), where=z > 0) @ v64[..., a:a + size, :])
            with np.errstate(divide="ignore"):
                lses.append(np.where(z > 0, np.log(np.where(z > 0, z, 1.0)) + top, -np.inf))
        lse = np.roll(np.stack(lses), -1, axis=-2)                 # row i reads row i + 1's LSEs
        top = lse.max(axis=0)
        top = np.where(np.isfinite(top), top, 0.0)
        w = np.exp(lse - top)
        den = w.sum(axis=0)
        out = sum(w[i] * outs[i] for i in range(len(outs)))
        return np.divide(out, den, out=np.zeros_like(out), where=den > 0).astype(np.asarray(q).dtype)
    return fn


def numpy_odd_one(form: str):
    """refimpl's protocol with one mistake that is none of the fitted forms' (each form must leave it alone):
    "mask after softmax when B > 1": with a bool mask and a batch of 2 or more, the softmax over every key and the
    masked weights zeroed afterwards (not renormalised), right otherwise; "first 32 keys": only the first 32 keys
    attended (a loop bound); "zeros when B > 1": nothing written for a batch of 2 or more."""
    def fn(q, k, v, mask=None, scale=None):
        q64, k64, v64 = (np.asarray(a, np.float64) for a in (q, k, v))
        B = q64.shape[0] if q64.ndim == 4 else 1
        sc = 1.0 / math.sqrt(q64.shape[-1]) if scale is None else scale
        s = q64 @ np.swapaxes(k64, -1, -2) * sc
        keep = np.ones(s.shape, bool)
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype == bool:
                keep = np.broadcast_to(m, s.shape)
            else:
                s = s + m
        after = (form == "mask after softmax when B > 1" and B > 1 and mask is not None
                 and np.asarray(mask).dtype == bool)
        if form == "first 32 keys":
            keep = keep & (np.arange(s.shape[-1]) < 32)
        z = np.where(keep | after, s, -np.inf)
        top = z.max(axis=-1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(z - top)
        w = np.divide(e, e.sum(axis=-1, keepdims=True), out=np.zeros_like(e), where=e.sum(axis=-1, keepdims=True) > 0)
        w = np.where(keep, w, 0.0) if after else w
        out = w @ v64
        if form == "zeros when B > 1" and B > 1:
            out = np.zeros_like(out)
        return out.astype(np.asarray(q).dtype)
    return fn
