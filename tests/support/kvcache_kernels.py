"""A plain KV-cache decode kernel with flash_attn_with_kvcache's signature (tests/test_kvcache.py): appends the new
keys through the block table, then attends each sequence's cache_seqlens + Snew keys (bottom-right causal/window,
softcap, ALiBi, GQA); and two mistakes: reading every position of the cache, and not writing the new keys."""
import math

import torch


def attn(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
         causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
    B, Sq, Hq, D = q.shape
    Hkv, bs = k_cache.shape[2], k_cache.shape[1]
    new = 0 if k is None else k.shape[1]
    lens = cache_seqlens.tolist() if torch.is_tensor(cache_seqlens) else [cache_seqlens] * B

    def slot(b, p):                       # where logical position p of sequence b lives
        return (int(block_table[b, p // bs]), p % bs) if block_table is not None else (b, p)

    for b in range(B):                    # the new keys go into the cache first, in place
        for t in range(new):
            at = slot(b, lens[b] + t)
            k_cache[at] = k[b, t]
            v_cache[at] = v[b, t]
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = torch.zeros(B, Sq, Hq, v_cache.shape[-1], dtype=q.dtype)
    sc = softmax_scale or 1 / math.sqrt(D)
    for b in range(B):
        L = lens[b] + new
        if L == 0:
            continue
        kk, vv = (torch.stack([c[slot(b, p)] for p in range(L)]).to(ct).transpose(0, 1)
                  .repeat_interleave(Hq // Hkv, 0) for c in (k_cache, v_cache))       # (Hq, L, D|Dv)
        s = q[b].to(ct).transpose(0, 1) @ kk.transpose(-1, -2) * sc                 # (Hq, Sq, L)
        if softcap:
            s = softcap * torch.tanh(s / softcap)
        i, j = torch.arange(Sq)[:, None] + L - Sq, torch.arange(L)[None]
        if alibi_slopes is not None:
            sl = alibi_slopes[b] if alibi_slopes.dim() == 2 else alibi_slopes
            s = s - sl.to(ct)[:, None, None] * (i - j).abs()
        left, right = window_size
        right = 0 if causal else right
        keep = torch.ones(Sq, L, dtype=torch.bool)
        if left >= 0:
            keep &= j >= i - left
        if right >= 0:
            keep &= j <= i + right
        s = s.masked_fill(~keep, -math.inf)
        m = s.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
        e = torch.exp(s - m)
        out[b] = ((e / e.sum(-1, keepdim=True).clamp_min(1e-300)) @ vv).transpose(0, 1).to(q.dtype)
    return out


def attn_reads_all(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, **kw):
    """Mistake: every position of the cache (or of the sequence's pages) is attended, garbage included."""
    B = q.shape[0]
    table = kw.get("block_table")
    full = k_cache.shape[1] if table is None else k_cache.shape[1] * table.shape[1]
    new = 0 if k is None else k.shape[1]
    return attn(q, k_cache, v_cache, k, v, torch.full((B,), full - new, dtype=torch.int32), **kw)


def attn_no_write(q, k_cache, v_cache, k=None, v=None, **kw):
    """Mistake: the new keys are attended from a private copy; the caller's cache is never updated."""
    return attn(q, k_cache.clone(), v_cache.clone(), k, v, **kw)
