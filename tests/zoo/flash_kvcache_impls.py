"""Zoo: attention written against the signature of flash_attn.flash_attn_with_kvcache (KV-cache decode).

Independent of refimpl (written from the flash-attn docstring only). Every public function is
    fn(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
       causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False)
with q (B, Sq, Hq, D) and either a contiguous cache k_cache (B, Smax, Hkv, D), v_cache (B, Smax, Hkv, Dv)
(block_table None) or a PAGED cache k_cache (num_blocks, block_size, Hkv, D) with block_table
(B, max_blocks_per_seq) int32: logical position p of sequence b lives at
k_cache[block_table[b, p // block_size], p % block_size].
cache_seqlens (int or (B,) int tensor; None = the whole cache) counts the valid cached keys of each sequence
BEFORE the call; slots past it hold garbage (huge values, NaN) that must never reach the output.
k, v (B, Snew, Hkv, D/Dv), when given, are written IN PLACE into the cache at logical positions
cache_seqlens[b] .. cache_seqlens[b] + Snew - 1 and then attended: sequence b attends its keys 0 .. L_b - 1,
L_b = cache_seqlens[b] + Snew. For query i and key j (0-based), with scale = softmax_scale or 1/sqrt(D):
    s_ij   = (q_i . k_j) * scale;   s_ij = softcap * tanh(s_ij / softcap)   if softcap > 0
    s_ij  += -slope_h * |i + L_b - Sq - j|                                  if alibi_slopes ((Hq,) or (B, Hq))
    keep   = j < L_b and i + L_b - Sq - left <= j <= i + L_b - Sq + right   (BOTTOM-RIGHT aligned to L_b;
             window_size = (left, right), -1 = unbounded; causal means right = 0)
    out_i  = sum_j softmax_j(s_i, over kept j) v_j; a row with no kept key gives zeros.
GQA/MQA: query head h reads kv head h // (Hq // Hkv). float16/bfloat16 are computed in float32,
float32/float64 in their own dtype; out (B, Sq, Hq, Dv) has q's dtype. With return_softmax_lse=True the
result is (out, softmax_lse), softmax_lse float32 (B, Hq, Sq) = log sum_j exp(s_ij) over kept keys
(+inf for a row without key, as FlashAttention reports it).
The broken functions contain exactly one realistic mistake each (marked `BUG:`), see CATALOG.
"""
import math

import torch

_HALF = (torch.float16, torch.bfloat16)
_NEG_INF = float("-inf")
_POS_INF = float("inf")


def _check4(name, t):
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() != 4:
        raise TypeError(f"{name} must be a 4-D floating torch.Tensor; got {type(t).__name__} "
                        f"{getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")


def _capacity(k_cache, block_table):
    """Number of logical key slots per sequence: Smax, or max_blocks_per_seq * block_size when paged."""
    return k_cache.shape[1] if block_table is None else block_table.shape[1] * k_cache.shape[1]


def _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale, window_size, softcap,
             alibi_slopes, compute_dtype=None):
    """Validate; return (lengths, snew, scale, ct): lengths[b] = keys cached BEFORE the call (Python ints),
    snew = keys appended by this call (0 without k/v), ct = compute dtype."""
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        _check4(name, t)
    if not q.dtype == k_cache.dtype == v_cache.dtype:
        raise TypeError(f"q, k_cache, v_cache must share a dtype; got {q.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    if k_cache.shape[:3] != v_cache.shape[:3]:
        raise ValueError(f"k_cache and v_cache must agree on their first three dims; got "
                         f"{tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if q.shape[3] != k_cache.shape[3]:
        raise ValueError(f"q and k_cache must share the head size D; got {q.shape[3]} and {k_cache.shape[3]}")
    batch, hq, hkv = q.shape[0], q.shape[2], k_cache.shape[2]
    if hq % hkv != 0:
        raise ValueError(f"number of q heads Hq={hq} must be a multiple of k/v heads Hkv={hkv}")
    if block_table is None:
        if k_cache.shape[0] != batch:
            raise ValueError(f"contiguous cache must have batch {batch} rows; got {k_cache.shape[0]}")
    elif (not isinstance(block_table, torch.Tensor) or block_table.dtype not in (torch.int32, torch.int64)
          or block_table.dim() != 2 or block_table.shape[0] != batch):
        raise ValueError(f"block_table must be an int32 tensor (B={batch}, max_blocks_per_seq); got "
                         f"{getattr(block_table, 'dtype', type(block_table).__name__)} "
                         f"{tuple(getattr(block_table, 'shape', ()))}")
    capacity = _capacity(k_cache, block_table)
    if (k is None) != (v is None):
        raise ValueError("k and v must be given together")
    snew = 0
    if k is not None:
        _check4("k", k)
        _check4("v", v)
        if not k.dtype == v.dtype == k_cache.dtype:
            raise TypeError(f"k, v must have the cache dtype {k_cache.dtype}; got {k.dtype}, {v.dtype}")
        snew = k.shape[1]
        if tuple(k.shape) != (batch, snew, hkv, k_cache.shape[3]) or \
                tuple(v.shape) != (batch, snew, hkv, v_cache.shape[3]):
            raise ValueError(f"k, v must be (B, Snew, Hkv, D/Dv); got {tuple(k.shape)} and {tuple(v.shape)}")
        if cache_seqlens is None:
            raise ValueError("cache_seqlens is required when k/v are appended")
    if cache_seqlens is None:
        lengths = [capacity] * batch
    elif isinstance(cache_seqlens, int) and not isinstance(cache_seqlens, bool):
        lengths = [cache_seqlens] * batch
    elif isinstance(cache_seqlens, torch.Tensor) and not cache_seqlens.is_floating_point() \
            and cache_seqlens.dtype != torch.bool and tuple(cache_seqlens.shape) in ((batch,), ()):
        lengths = [int(n) for n in cache_seqlens.reshape(-1).expand(batch).tolist()]
    else:
        raise TypeError(f"cache_seqlens must be an int or a (B,)=({batch},) integer tensor; got {cache_seqlens!r}")
    for b, n in enumerate(lengths):
        if n < 0 or n + snew > capacity:
            raise ValueError(f"sequence {b}: cache_seqlens={n} + Snew={snew} does not fit the cache ({capacity})")
    if len(window_size) != 2 or any(int(w) != w or w < -1 for w in window_size):
        raise ValueError(f"window_size must be (left, right) ints >= -1 (-1 = unbounded); got {window_size}")
    if softcap < 0:
        raise ValueError(f"softcap must be >= 0; got {softcap}")
    if alibi_slopes is not None and tuple(alibi_slopes.shape) not in ((hq,), (batch, hq)):
        raise ValueError(f"alibi_slopes must have shape (Hq,)=({hq},) or (B, Hq)=({batch}, {hq}); "
                         f"got {tuple(alibi_slopes.shape)}")
    ct = compute_dtype or (torch.float32 if q.dtype in _HALF else q.dtype)
    scale = 1.0 / math.sqrt(q.shape[3]) if softmax_scale is None else softmax_scale
    return lengths, snew, scale, ct


def _locate(cache, b, pos, block_table):
    """Index tuple addressing the logical positions pos (1-D long) of sequence b: cache[index] is (n, H, D)."""
    if block_table is None:
        return b, pos
    block_size = cache.shape[1]
    return block_table[b].long()[pos // block_size], pos % block_size


def _append(k_cache, v_cache, k, v, starts, block_table, locate=_locate):
    """Write k[b], v[b] in place at logical positions starts[b] .. starts[b] + Snew - 1."""
    if k is None:
        return
    for b, start in enumerate(starts):
        pos = torch.arange(start, start + k.shape[1])
        k_cache[locate(k_cache, b, pos, block_table)] = k[b].to(k_cache.dtype)
        v_cache[locate(v_cache, b, pos, block_table)] = v[b].to(v_cache.dtype)


def _heads(t, hq, ct):
    """(n, Hkv, D) -> (Hq, n, D) in ct: kv head g serves query heads g*G .. g*G + G-1, G = Hq // Hkv."""
    return t.to(ct).transpose(0, 1).repeat_interleave(hq // t.shape[1], dim=0)


def _queries(q, ct):
    # (B, Sq, Hq, D) -> (B, Hq, Sq, D)
    return q.to(ct).transpose(1, 2)


def _slopes(alibi_slopes, b):
    if alibi_slopes is None:
        return None
    return alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[b]


def _diag(sq, length):
    """(Sq, 1) bottom-right diagonal i + L - Sq of each query row."""
    return torch.arange(sq).unsqueeze(1) + (length - sq)


def _band_at(diag, j, causal, window_size):
    """diag - left <= j <= diag + right (-1 = unbounded, causal => right = 0)."""
    left, right = window_size[0], (0 if causal else window_size[1])
    return ((left < 0) | (j >= diag - left)) & ((right < 0) | (j <= diag + right))


def _band(sq, length, pos, causal, window_size):
    """(Sq, n) bool: key positions pos inside the causal/window band bottom-right aligned to length."""
    return _band_at(_diag(sq, length), pos.unsqueeze(0), causal, window_size)


def _alibi(diag, pos, slopes, dtype):
    """(Hq, Sq, n) bias -slope_h * |diag - j|, or a 0-dim zero without slopes."""
    if slopes is None:
        return torch.zeros((), dtype=dtype)
    return -slopes.to(dtype).reshape(-1, 1, 1) * (diag - pos.unsqueeze(0)).abs().to(dtype)


def _logits(qb, kb, scale, softcap, keep, bias):
    """(Hq, Sq, D) x (Hq, n, D) -> (Hq, Sq, n): scaled, soft-capped, biased scores; -inf where not kept."""
    s = qb @ kb.transpose(-2, -1) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    return torch.where(keep, s + bias, _NEG_INF)


def _softmax_attend(s, vb):
    """s (..., Sq, n) with -inf outside the kept keys, vb (..., n, Dv) -> out (..., Sq, Dv), lse (..., Sq)
    (lse = -inf and out = 0 for a row without key)."""
    if s.shape[-1] == 0:
        return s.new_zeros(*s.shape[:-1], vb.shape[-1]), s.new_full(s.shape[:-1], _NEG_INF)
    m = s.amax(-1, keepdim=True)
    m = m.masked_fill(m == _NEG_INF, 0.0)
    e = torch.exp(s - m)
    total = e.sum(-1, keepdim=True)
    return (e @ vb) / total.masked_fill(total == 0, 1.0), (m + torch.log(total)).squeeze(-1)


def _attend(qb, kb, vb, pos, length, scale, causal, window_size, softcap, slopes):
    """One sequence: qb (Hq, Sq, D), kb (Hq, n, D), vb (Hq, n, Dv) holding the keys at logical positions pos
    (n,) of a sequence of `length` keys -> out (Hq, Sq, Dv), lse (Hq, Sq)."""
    sq = qb.shape[1]
    keep = _band(sq, length, pos, causal, window_size)
    s = _logits(qb, kb, scale, softcap, keep, _alibi(_diag(sq, length), pos, slopes, qb.dtype))
    return _softmax_attend(s, vb)


def _attend_positions(qb, k_cache, v_cache, b, pos, length, block_table, scale, causal, window_size, softcap,
                      slopes, locate=_locate):
    """Gather the keys/values at logical positions pos of sequence b (through the block table) and attend."""
    hq, ct = qb.shape[0], qb.dtype
    kb = _heads(k_cache[locate(k_cache, b, pos, block_table)], hq, ct)
    vb = _heads(v_cache[locate(v_cache, b, pos, block_table)], hq, ct)
    return _attend(qb, kb, vb, pos, length, scale, causal, window_size, softcap, slopes)


def _finish(out, lse, out_dtype, return_softmax_lse):
    """out (B, Hq, Sq, Dv) -> (B, Sq, Hq, Dv) in the input dtype; lse (B, Hq, Sq) float32, +inf for empty rows."""
    out = out.transpose(1, 2).to(out_dtype).contiguous()
    if not return_softmax_lse:
        return out
    lse = lse.to(torch.float32)
    return out, lse.masked_fill(lse == _NEG_INF, _POS_INF)


# ------------------------------------------------------------------ correct implementations
def kv_gather_dense(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
                    causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
    """Append, then per sequence gather its L_b keys through the block table and attend densely."""
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, outs, lses = _queries(q, ct), [], []
    for b in range(q.shape[0]):
        length = lengths[b] + snew
        o, lse_b = _attend_positions(qt[b], k_cache, v_cache, b, torch.arange(length), length, block_table, scale,
                                     causal, window_size, softcap, _slopes(alibi_slopes, b))
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_online_paged(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
                    causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
    """FlashAttention-2 decode: per sequence, an online softmax (running max m, sum l, accumulator acc, rescaled
    by exp(m - m') when the max grows) over the cache one block at a time: the pages of block_table, or tiles of
    32 slots of a contiguous cache. Blocks starting at or past L_b are skipped; inside the last, partially
    filled block the slots >= L_b get score -inf AND their V rows are zeroed (0 * NaN garbage would be NaN)."""
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, (hq, sq), dv = _queries(q, ct), (q.shape[2], q.shape[1]), v_cache.shape[3]
    block = 32 if block_table is None else k_cache.shape[1]
    outs, lses = [], []
    for b in range(q.shape[0]):
        length, slopes, diag = lengths[b] + snew, _slopes(alibi_slopes, b), _diag(sq, lengths[b] + snew)
        m = torch.full((hq, sq, 1), _NEG_INF, dtype=ct)
        total, acc = torch.zeros((hq, sq, 1), dtype=ct), torch.zeros((hq, sq, dv), dtype=ct)
        for start in range(0, length, block):
            if block_table is None:
                kp, vp = k_cache[b, start:start + block], v_cache[b, start:start + block]  # (<= 32, Hkv, D)
            else:
                page = int(block_table[b, start // block])
                kp, vp = k_cache[page], v_cache[page]  # (block_size, Hkv, D)
            pos = torch.arange(start, start + kp.shape[0])
            valid = pos < length  # the last block is only partially filled
            kb, vb = _heads(kp, hq, ct), _heads(vp, hq, ct)
            vb = torch.where(valid.unsqueeze(-1), vb, torch.zeros((), dtype=ct))
            keep = valid & _band(sq, length, pos, causal, window_size)
            s = _logits(qt[b], kb, scale, softcap, keep, _alibi(diag, pos, slopes, ct))  # (Hq, Sq, block)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_ref = m_new.masked_fill(m_new == _NEG_INF, 0.0)
            alpha = torch.exp(m - m_ref)
            p = torch.exp(s - m_ref)
            total = alpha * total + p.sum(-1, keepdim=True)
            acc = alpha * acc + p @ vb
            m = m_new
        m = m.masked_fill(m == _NEG_INF, 0.0)
        outs.append(acc / total.masked_fill(total == 0, 1.0))
        lses.append((m + torch.log(total)).squeeze(-1))
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_split_kv(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
                causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
    """Flash-decoding: the L_b keys are cut into 3 contiguous splits, each split attended on its own
    (partial out_s, lse_s), then combined: lse = log sum_s exp(lse_s), out = sum_s exp(lse_s - lse) out_s."""
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, outs, lses = _queries(q, ct), [], []
    for b in range(q.shape[0]):
        length = lengths[b] + snew
        step = max(1, -(-length // 3))
        parts = [_attend_positions(qt[b], k_cache, v_cache, b, torch.arange(lo, min(lo + step, length)), length,
                                   block_table, scale, causal, window_size, softcap, _slopes(alibi_slopes, b))
                 for lo in range(0, max(length, 1), step)]
        part_out = torch.stack([o for o, _ in parts])  # (splits, Hq, Sq, Dv)
        part_lse = torch.stack([l for _, l in parts])  # (splits, Hq, Sq), -inf for an empty split row
        mx = part_lse.amax(0)
        mx = mx.masked_fill(mx == _NEG_INF, 0.0)
        w = torch.exp(part_lse - mx)
        total = w.sum(0)
        outs.append((w.unsqueeze(-1) * part_out).sum(0) / total.masked_fill(total == 0, 1.0).unsqueeze(-1))
        lses.append(mx + torch.log(total))
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_float32(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
               causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
    """Padded batch, always float32 internally: the L_b keys of every sequence are gathered into a zero-padded
    (B, Hq, max L_b, D) tensor and attended in one batched pass with a per-sequence length/band mask."""
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes, compute_dtype=torch.float32)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    (batch, sq, hq, _), dv = q.shape, v_cache.shape[3]
    full = [n + snew for n in lengths]
    lmax = max(full)
    kpad = torch.zeros(batch, hq, lmax, k_cache.shape[3], dtype=ct)
    vpad = torch.zeros(batch, hq, lmax, dv, dtype=ct)
    for b, n in enumerate(full):
        pos = torch.arange(n)
        kpad[b, :, :n] = _heads(k_cache[_locate(k_cache, b, pos, block_table)], hq, ct)
        vpad[b, :, :n] = _heads(v_cache[_locate(v_cache, b, pos, block_table)], hq, ct)
    lens = torch.tensor(full).reshape(batch, 1, 1)
    j = torch.arange(lmax).reshape(1, 1, lmax)
    diag = torch.arange(sq).reshape(1, sq, 1) + lens - sq  # (B, Sq, 1)
    keep = ((j < lens) & _band_at(diag, j, causal, window_size)).unsqueeze(1)  # (B, 1, Sq, Lmax)
    bias = torch.zeros((), dtype=ct)
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(ct).reshape(1 if alibi_slopes.dim() == 1 else batch, hq, 1, 1)
        bias = -slopes * (diag - j).abs().to(ct).unsqueeze(1)  # (B, Hq, Sq, Lmax)
    s = _logits(_queries(q, ct), kpad, scale, softcap, keep, bias)
    out, lse = _softmax_attend(s, vpad)
    return _finish(out, lse, q.dtype, return_softmax_lse)


# ------------------------------------------------------------------ broken implementations
def kv_reads_whole_cache(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                         softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                         return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, outs, lses = _queries(q, ct), [], []
    for b in range(q.shape[0]):
        length = _capacity(k_cache, block_table)  # BUG: seqlen_k from the cache's shape, not cache_seqlens + Snew
        o, lse_b = _attend_positions(qt[b], k_cache, v_cache, b, torch.arange(length), length, block_table, scale,
                                     causal, window_size, softcap, _slopes(alibi_slopes, b))
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_append_off_by_one(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                         softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                         return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    # BUG: cache_seqlens read as the index of the last cached key: the new keys are written one slot early
    # (over key cache_seqlens - 1; at -1, i.e. the cache's last slot, for an empty sequence), L_b one short
    starts = [n - 1 if snew else n for n in lengths]
    _append(k_cache, v_cache, k, v, starts, block_table)
    qt, outs, lses = _queries(q, ct), [], []
    for b in range(q.shape[0]):
        length = starts[b] + snew
        o, lse_b = _attend_positions(qt[b], k_cache, v_cache, b, torch.arange(length), length, block_table, scale,
                                     causal, window_size, softcap, _slopes(alibi_slopes, b))
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_new_keys_not_attended(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                             softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                             return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, outs, lses = _queries(q, ct), [], []
    for b in range(q.shape[0]):
        length = lengths[b]  # BUG: stale length: the Snew keys just appended are never attended
        o, lse_b = _attend_positions(qt[b], k_cache, v_cache, b, torch.arange(length), length, block_table, scale,
                                     causal, window_size, softcap, _slopes(alibi_slopes, b))
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def _locate_contiguous_pages(cache, b, pos, block_table):
    if block_table is None:
        return b, pos
    block_size = cache.shape[1]
    # BUG: block_table never read: sequence b is assumed to own physical blocks b*max_blocks .. b*max_blocks+n-1
    return b * block_table.shape[1] + pos // block_size, pos % block_size


def kv_block_table_ignored(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table, locate=_locate_contiguous_pages)
    qt, outs, lses = _queries(q, ct), [], []
    for b in range(q.shape[0]):
        length = lengths[b] + snew
        o, lse_b = _attend_positions(qt[b], k_cache, v_cache, b, torch.arange(length), length, block_table, scale,
                                     causal, window_size, softcap, _slopes(alibi_slopes, b),
                                     locate=_locate_contiguous_pages)
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def _locate_swapped(cache, b, pos, block_table):
    if block_table is None:
        return b, pos
    block_size = cache.shape[1]
    # BUG: page index and in-page offset swapped (IndexError once they leave the table / page)
    return block_table[b].long()[pos % block_size], pos // block_size


def kv_page_offset_swapped(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table, locate=_locate_swapped)
    qt, outs, lses = _queries(q, ct), [], []
    for b in range(q.shape[0]):
        length = lengths[b] + snew
        o, lse_b = _attend_positions(qt[b], k_cache, v_cache, b, torch.arange(length), length, block_table, scale,
                                     causal, window_size, softcap, _slopes(alibi_slopes, b), locate=_locate_swapped)
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_causal_top_left(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
                       causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, (hq, sq), outs, lses = _queries(q, ct), (q.shape[2], q.shape[1]), [], []
    for b in range(q.shape[0]):
        length = lengths[b] + snew
        pos = torch.arange(length)
        kb = _heads(k_cache[_locate(k_cache, b, pos, block_table)], hq, ct)
        vb = _heads(v_cache[_locate(v_cache, b, pos, block_table)], hq, ct)
        # BUG: only the decode path (Sq == 1) aligns to the end of the cache; Sq > 1 is masked like a prefill
        # without cache, top-left (diagonal j = i)
        diag = _diag(sq, length) if sq == 1 else torch.arange(sq).unsqueeze(1)
        keep = _band_at(diag, pos.unsqueeze(0), causal, window_size)
        s = _logits(qt[b], kb, scale, softcap, keep, _alibi(diag, pos, _slopes(alibi_slopes, b), ct))
        o, lse_b = _softmax_attend(s, vb)
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_cache_not_updated(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                         softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                         return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    qt, hq, outs, lses = _queries(q, ct), q.shape[2], [], []
    for b in range(q.shape[0]):
        cached = torch.arange(lengths[b])
        kb, vb = k_cache[_locate(k_cache, b, cached, block_table)], v_cache[_locate(v_cache, b, cached, block_table)]
        if k is not None:
            # BUG: the new keys are concatenated for this call only; k_cache/v_cache are never written
            kb, vb = torch.cat([kb, k[b]]), torch.cat([vb, v[b]])
        length = lengths[b] + snew
        o, lse_b = _attend(qt[b], _heads(kb, hq, ct), _heads(vb, hq, ct), torch.arange(length), length, scale,
                           causal, window_size, softcap, _slopes(alibi_slopes, b))
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_last_block_unmasked(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, (hq, sq), dv = _queries(q, ct), (q.shape[2], q.shape[1]), v_cache.shape[3]
    block = 32 if block_table is None else k_cache.shape[1]
    outs, lses = [], []
    for b in range(q.shape[0]):
        length, slopes, diag = lengths[b] + snew, _slopes(alibi_slopes, b), _diag(sq, lengths[b] + snew)
        m = torch.full((hq, sq, 1), _NEG_INF, dtype=ct)
        total, acc = torch.zeros((hq, sq, 1), dtype=ct), torch.zeros((hq, sq, dv), dtype=ct)
        for start in range(0, length, block):  # blocks past L_b are skipped ...
            if block_table is None:
                kp, vp = k_cache[b, start:start + block], v_cache[b, start:start + block]
            else:
                page = int(block_table[b, start // block])
                kp, vp = k_cache[page], v_cache[page]
            pos = torch.arange(start, start + kp.shape[0])
            valid = torch.ones_like(pos, dtype=torch.bool)  # BUG: ... but every slot of the last block counts
            kb, vb = _heads(kp, hq, ct), _heads(vp, hq, ct)
            vb = torch.where(valid.unsqueeze(-1), vb, torch.zeros((), dtype=ct))
            keep = valid & _band(sq, length, pos, causal, window_size)
            s = _logits(qt[b], kb, scale, softcap, keep, _alibi(diag, pos, slopes, ct))
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_ref = m_new.masked_fill(m_new == _NEG_INF, 0.0)
            alpha = torch.exp(m - m_ref)
            p = torch.exp(s - m_ref)
            total = alpha * total + p.sum(-1, keepdim=True)
            acc = alpha * acc + p @ vb
            m = m_new
        m = m.masked_fill(m == _NEG_INF, 0.0)
        outs.append(acc / total.masked_fill(total == 0, 1.0))
        lses.append((m + torch.log(total)).squeeze(-1))
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


def kv_gqa_modulo(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
                  causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
    lengths, snew, scale, ct = _prepare(q, k_cache, v_cache, k, v, cache_seqlens, block_table, softmax_scale,
                                        window_size, softcap, alibi_slopes)
    _append(k_cache, v_cache, k, v, lengths, block_table)
    qt, outs, lses = _queries(q, ct), [], []
    heads = torch.arange(q.shape[2]) % k_cache.shape[2]  # BUG: query head h reads kv head h % Hkv
    for b in range(q.shape[0]):
        length = lengths[b] + snew
        pos = torch.arange(length)
        kb = k_cache[_locate(k_cache, b, pos, block_table)].to(ct).transpose(0, 1).index_select(0, heads)
        vb = v_cache[_locate(v_cache, b, pos, block_table)].to(ct).transpose(0, 1).index_select(0, heads)
        o, lse_b = _attend(qt[b], kb, vb, pos, length, scale, causal, window_size, softcap, _slopes(alibi_slopes, b))
        outs.append(o)
        lses.append(lse_b)
    return _finish(torch.stack(outs), torch.stack(lses), q.dtype, return_softmax_lse)


_ALL = ["causal", "window", "softcap", "alibi", "gqa", "paged", "append"]


def _entry(name, correct, model, note, dtype="float64"):
    return {"name": name, "api": "flash-attn-kvcache", "fn": name, "correct": correct, "model": model,
            "convention": "zeros" if correct else None, "dtype": dtype, "features": list(_ALL), "note": note}


CATALOG = [
    _entry("kv_gather_dense", True, None, "append, gather L_b keys through the block table, dense softmax"),
    _entry("kv_online_paged", True, None, "FA2 online softmax page by page, slots >= L_b masked in last page"),
    _entry("kv_split_kv", True, None, "flash-decoding: 3 key splits combined through their LSEs"),
    _entry("kv_float32", True, None, "zero-padded batch with length mask, always float32 internally",
           dtype="float32"),
    _entry("kv_reads_whole_cache", False, "cache-length", "attends every cache slot / page: garbage leaks in"),
    _entry("kv_append_off_by_one", False, "append-position",
           "new k/v written at cache_seqlens-1 (overwrites the last key), L_b one short"),
    _entry("kv_new_keys_not_attended", False, "stale-length", "appends k/v but attends cache_seqlens keys only"),
    _entry("kv_block_table_ignored", False, "block-table",
           "paged cache read as contiguous: block b*max_blocks+n, right only for the identity table"),
    _entry("kv_page_offset_swapped", False, "page-offset",
           "page p % block_size, offset p // block_size (may IndexError)"),
    _entry("kv_causal_top_left", False, "causal-alignment", "Sq > 1: causal/window band aligned top-left (j <= i)"),
    _entry("kv_cache_not_updated", False, "cache-update", "attends cache + new keys but never writes k/v"),
    _entry("kv_last_block_unmasked", False, "last-block-mask",
           "online kernel skips blocks past L_b but not slots >= L_b in the last block"),
    _entry("kv_gqa_modulo", False, "gqa-grouping", "query head h reads kv head h % Hkv"),
]
