"""Zoo: attention kernels written against the signature of PyTorch's FlexAttention (torch 1.13, pure torch ops).

Written independently from the public FlexAttention documentation and from the bug reports cited in the
broken kernels' docstrings (no refimpl code was read). Every public kernel is
    fn(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False, return_lse=False)
with query (B, Hq, Sq, D), key (B, Hkv, Sk, D), value (B, Hkv, Sk, Dv) (Dv may differ from D), all of one dtype
among float64 / float32 / float16 / bfloat16. Contract, for query i and key j of batch b and QUERY head h:
    s = (q_i . k_j) * scale                        scale None means 1 / sqrt(D), D = the query/key head size
    s = score_mod(s, b, h, i, j)                   applied to the SCALED score; elementwise, so it may be called on
                                                   the whole (B, Hq, Sq, Sk) tensor with broadcast int64 index
                                                   tensors b (B,1,1,1), h (1,Hq,1,1), i (1,1,Sq,1), j (1,1,1,Sk), on
                                                   0-d tensors, or on any broadcastable slice; its result may be
                                                   promoted and is cast back to the compute dtype
    keep = block_mask.mask_mod(b, h, i, j)         (block_mask None: every key kept); a dropped key acts as -inf
    out_i = sum_j softmax_j(s over kept j) v_j     a query row with no kept key gives zeros (never NaN)
    lse_i = log sum_{kept j} exp(s)                natural log, float32 (B, Hq, Sq); -inf for a row with no key
block_mask carries BLOCK_SIZE = (Q_BLOCK, KV_BLOCK), seq_lengths = (Sq, Sk), shape = (B, Hq, Sq, Sk), and int32
kv_num_blocks / kv_indices ((B, Hq, nQb) / (B, Hq, nQb, nKb)): for each query block the first kv_num_blocks
entries of kv_indices list the PARTIAL key blocks (mask_mod must be applied inside them); full_kv_num_blocks /
full_kv_indices list the FULL key blocks (every element kept, mask_mod need not run); a block in neither list
keeps nothing. nQb = ceil(Sq / Q_BLOCK), nKb = ceil(Sk / KV_BLOCK); the last block of an axis may be short.
to_dense() gives (B, Hq, nQb, nKb) int32, 1 where a block keeps anything. With enable_gqa (Hkv < Hq) query head
h reads kv head h // (Hq // Hkv). float16 / bfloat16 are computed in float32, float32 / float64 in their own
dtype; the output (B, Hq, Sq, Dv) has query's dtype; return_lse=True returns (output, lse).

Correct kernels: flex_eager (dense scores, broadcast index tensors), flex_blockwise (FlashAttention-2 online
softmax walking kv_indices with mask_mod and full_kv_indices without), flex_vmap_rows (score_mod / mask_mod per
query row with 0-d b, h, q_idx and a key-index vector), flex_split_kv (flash-decoding: key splits merged
through their LSEs). The broken kernels contain exactly one realistic mistake each (marked `BUG:`), taken from
the public report cited in their docstring; see CATALOG. make_block_mask builds a block mask object with the
attributes above so the kernels can be exercised without torch.nn.attention.
"""
import math

import torch

_NEG_INF = float("-inf")


# ----------------------------------------------------------------------------------------------------------
# shared helpers (all correct)
# ----------------------------------------------------------------------------------------------------------
def _compute_dtype(dtype):
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _prepare(query, key, value, scale):
    cdt = _compute_dtype(query.dtype)
    if scale is None:
        scale = 1.0 / math.sqrt(query.shape[-1])
    return query.to(cdt), key.to(cdt), value.to(cdt), float(scale)


def _kv_head_of(hq, hkv, device):
    """Query head h -> kv head h // (Hq // Hkv)."""
    if hq % hkv:
        raise ValueError(f"Hq={hq} is not a multiple of Hkv={hkv}")
    return torch.arange(hq, device=device) // (hq // hkv)


def _grid(B, H, Sq, Sk, device):
    """Broadcastable int64 index tensors b (B,1,1,1), h (1,H,1,1), q_idx (1,1,Sq,1), kv_idx (1,1,1,Sk)."""
    def ar(n):
        return torch.arange(n, device=device, dtype=torch.int64)
    return ar(B).view(B, 1, 1, 1), ar(H).view(1, H, 1, 1), ar(Sq).view(1, 1, Sq, 1), ar(Sk).view(1, 1, 1, Sk)


def _call_score_mod(score_mod, s, b, h, qi, ki):
    r = score_mod(s, b, h, qi, ki)
    r = r if torch.is_tensor(r) else torch.as_tensor(r)
    return r.to(device=s.device, dtype=s.dtype).expand(s.shape)


def _call_mask_mod(mask_mod, shape, b, h, qi, ki, device):
    r = mask_mod(b, h, qi, ki)
    r = r if torch.is_tensor(r) else torch.as_tensor(r)
    return r.to(device=device, dtype=torch.bool).expand(shape)


def _block_level(block_mask, shape, device):
    """Element-level view of to_dense(): True inside every key block that keeps anything."""
    B, H, Sq, Sk = shape
    qb, kb = (int(x) for x in block_mask.BLOCK_SIZE)
    d = torch.as_tensor(block_mask.to_dense()).to(device=device, dtype=torch.bool)
    d = d.repeat_interleave(qb, dim=2)[:, :, :Sq].repeat_interleave(kb, dim=3)[..., :Sk]
    return d.expand(B, H, Sq, Sk)


def _keep(block_mask, shape, idx, device):
    return _call_mask_mod(block_mask.mask_mod, shape, *idx, device) & _block_level(block_mask, shape, device)


def _softmax_av(s, v):
    """Safe softmax(s) @ v and natural-log LSE; rows whose scores are all -inf give zeros and -inf."""
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    denom = p.sum(dim=-1, keepdim=True)
    out = (p @ v) / torch.where(denom > 0, denom, torch.ones_like(denom))
    return out, (m + torch.log(denom)).squeeze(-1)


def _finish(out, lse, dtype, return_lse):
    out = out.to(dtype)
    return (out, lse.to(torch.float32)) if return_lse else out


def _dense_core(q, k, v, scale, score_mod, block_mask, idx):
    """q (B,Hq,Sq,D); k, v already laid out per QUERY head; idx = (b, h, q_idx, kv_idx) broadcast tensors."""
    s = (q @ k.transpose(-1, -2)) * scale
    if score_mod is not None:
        s = _call_score_mod(score_mod, s, *idx)
    if block_mask is not None:
        s = s.masked_fill(~_keep(block_mask, s.shape, idx, s.device), _NEG_INF)
    return _softmax_av(s, v)


def _block_lists(block_mask, Sq, Sk, B, H):
    """Per (b, h, q block): list of (kv block, is_full); partial blocks first, as FlexAttention walks them."""
    if block_mask is None:
        qb = kb = 128
        nk = -(-Sk // kb)
        row = [(j, True) for j in range(nk)]
        return qb, kb, [[[row] * (-(-Sq // qb)) for _ in range(H)] for _ in range(B)]
    qb, kb = (int(x) for x in block_mask.BLOCK_SIZE)
    nq = -(-Sq // qb)
    num, ind = block_mask.kv_num_blocks.tolist(), block_mask.kv_indices.tolist()
    fnum, find = block_mask.full_kv_num_blocks, block_mask.full_kv_indices
    fnum = fnum.tolist() if fnum is not None else None
    find = find.tolist() if find is not None else None
    lists = []
    for b in range(B):
        per_h = []
        for h in range(H):
            bb, hh = min(b, len(num) - 1), min(h, len(num[0]) - 1)  # tolerate B / H broadcast to 1
            per_q = []
            for i in range(nq):
                row = [(j, False) for j in ind[bb][hh][i][:num[bb][hh][i]]]
                if fnum is not None:
                    row += [(j, True) for j in find[bb][hh][i][:fnum[bb][hh][i]]]
                per_q.append(row)
            per_h.append(per_q)
        lists.append(per_h)
    return qb, kb, lists


def _online_step(state, s, v_blk):
    """One FlashAttention-2 update of (running max m, running sum l, unnormalised acc) with block scores s."""
    m, l, acc = state
    m_new = torch.maximum(m, s.amax(dim=-1))
    m_use = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    alpha = torch.exp(m - m_use)
    p = torch.exp(s - m_use[:, None])
    return m_new, l * alpha + p.sum(dim=-1), acc * alpha[:, None] + p @ v_blk


def _online_final(state):
    m, l, acc = state
    m_use = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    out = acc / torch.where(l > 0, l, torch.ones_like(l))[:, None]
    return out, m_use + torch.log(l)


# ----------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------
def flex_eager(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False, return_lse=False):
    """Eager math: full (B, Hq, Sq, Sk) scores, score_mod and mask_mod called once with broadcast indices."""
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    idx = _grid(B, Hq, Sq, k.shape[2], q.device)
    out, lse = _dense_core(q, k[:, kvh], v[:, kvh], scale, score_mod, block_mask, idx)
    return _finish(out, lse, query.dtype, return_lse)


def flex_blockwise(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                   return_lse=False):
    """FlashAttention-2 style: per query block, online softmax over the listed partial (masked) then full blocks."""
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    Sk, Dv = k.shape[2], v.shape[-1]
    kvh = _kv_head_of(Hq, k.shape[1], q.device).tolist()
    qb, kb, lists = _block_lists(block_mask, Sq, Sk, B, Hq)
    out = q.new_zeros(B, Hq, Sq, Dv)
    lse = q.new_full((B, Hq, Sq), _NEG_INF)
    for b in range(B):
        bt = torch.tensor(b, device=q.device)
        for h in range(Hq):
            ht = torch.tensor(h, device=q.device)
            kk, vv = k[b, kvh[h]], v[b, kvh[h]]
            for i, row in enumerate(lists[b][h]):
                q0, q1 = i * qb, min(Sq, (i + 1) * qb)
                qi = torch.arange(q0, q1, device=q.device)[:, None]
                state = (q.new_full((q1 - q0,), _NEG_INF), q.new_zeros(q1 - q0), q.new_zeros(q1 - q0, Dv))
                for j, full in row:
                    k0, k1 = j * kb, min(Sk, (j + 1) * kb)
                    ki = torch.arange(k0, k1, device=q.device)[None, :]
                    s = (q[b, h, q0:q1] @ kk[k0:k1].T) * scale
                    if score_mod is not None:
                        s = _call_score_mod(score_mod, s, bt, ht, qi, ki)
                    if not full:
                        s = s.masked_fill(~_call_mask_mod(block_mask.mask_mod, s.shape, bt, ht, qi, ki, q.device),
                                          _NEG_INF)
                    state = _online_step(state, s, vv[k0:k1])
                out[b, h, q0:q1], lse[b, h, q0:q1] = _online_final(state)
    return _finish(out, lse, query.dtype, return_lse)


def flex_vmap_rows(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                   return_lse=False):
    """vmap style: score_mod / mask_mod called per query row with 0-d b, h, q_idx and a (Sk,) kv_idx vector."""
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    Sk, Dv = k.shape[2], v.shape[-1]
    kvh = _kv_head_of(Hq, k.shape[1], q.device).tolist()
    blocks = None if block_mask is None else _block_level(block_mask, (B, Hq, Sq, Sk), q.device)
    ki = torch.arange(Sk, device=q.device)
    out = q.new_zeros(B, Hq, Sq, Dv)
    lse = q.new_full((B, Hq, Sq), _NEG_INF)
    for b in range(B):
        for h in range(Hq):
            scores = (q[b, h] @ k[b, kvh[h]].T) * scale
            for i in range(Sq):
                bt, ht, qt = (torch.tensor(x, device=q.device) for x in (b, h, i))
                row = scores[i]
                if score_mod is not None:
                    row = _call_score_mod(score_mod, row, bt, ht, qt, ki)
                if block_mask is not None:
                    keep = _call_mask_mod(block_mask.mask_mod, row.shape, bt, ht, qt, ki, q.device) & blocks[b, h, i]
                    row = row.masked_fill(~keep, _NEG_INF)
                r_lse = torch.logsumexp(row, dim=0)
                if torch.isfinite(r_lse):
                    out[b, h, i] = torch.exp(row - r_lse) @ v[b, kvh[h]]
                    lse[b, h, i] = r_lse
    return _finish(out, lse, query.dtype, return_lse)


def flex_split_kv(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                  return_lse=False, num_splits=3):
    """Flash-decoding: attend 3 key splits separately, then merge the partial outputs through their LSEs."""
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    Sk = k.shape[2]
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    k, v = k[:, kvh], v[:, kvh]
    b, h, qi, ki = _grid(B, Hq, Sq, Sk, q.device)
    keep = None if block_mask is None else _keep(block_mask, (B, Hq, Sq, Sk), (b, h, qi, ki), q.device)
    bounds = sorted({round(Sk * t / num_splits) for t in range(num_splits + 1)})
    outs, lses = [], []
    for k0, k1 in zip(bounds[:-1], bounds[1:]):  # empty splits dropped when Sk < num_splits
        s = (q @ k[:, :, k0:k1].transpose(-1, -2)) * scale
        if score_mod is not None:
            s = _call_score_mod(score_mod, s, b, h, qi, ki[..., k0:k1])
        if keep is not None:
            s = s.masked_fill(~keep[..., k0:k1], _NEG_INF)
        o, lse_part = _softmax_av(s, v[:, :, k0:k1])
        outs.append(o)
        lses.append(lse_part)
    lse_all = torch.stack(lses)
    lse = torch.logsumexp(lse_all, dim=0)
    w = torch.exp(lse_all - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
    out = sum(w[t][..., None] * outs[t] for t in range(len(outs)))
    return _finish(out, lse, query.dtype, return_lse)


# ----------------------------------------------------------------------------------------------------------
# broken kernels: exactly one mistake each
# ----------------------------------------------------------------------------------------------------------
def flex_unscaled_score_mod(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                            return_lse=False):
    """score_mod sees the raw q.k score; the softmax scale is applied afterwards.

    Source: huggingface/trl PR #5691 (review, final-logit softcap): softcapping was applied to the raw logits
    before logit_scale, computing softcap * tanh(raw / softcap) * scale instead of
    softcap * tanh(scale * raw / softcap).
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    k, v = k[:, kvh], v[:, kvh]
    idx = _grid(B, Hq, Sq, k.shape[2], q.device)
    s = q @ k.transpose(-1, -2)
    if score_mod is not None:
        s = _call_score_mod(score_mod, s, *idx)
    s = s * scale  # BUG: scale applied after score_mod instead of before it
    if block_mask is not None:
        s = s.masked_fill(~_keep(block_mask, s.shape, idx, s.device), _NEG_INF)
    out, lse = _softmax_av(s, v)
    return _finish(out, lse, query.dtype, return_lse)


def flex_partial_blocks_unmasked(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                                 return_lse=False):
    """Block-sparse online softmax that walks the right blocks but never evaluates mask_mod inside them.

    Source: pytorch/pytorch PR #164702: after slicing a BlockMask its mask_mod was silently replaced by
    noop_mask, so partial blocks were attended in full and results were silently wrong.
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    Sk, Dv = k.shape[2], v.shape[-1]
    kvh = _kv_head_of(Hq, k.shape[1], q.device).tolist()
    qb, kb, lists = _block_lists(block_mask, Sq, Sk, B, Hq)
    out = q.new_zeros(B, Hq, Sq, Dv)
    lse = q.new_full((B, Hq, Sq), _NEG_INF)
    for b in range(B):
        bt = torch.tensor(b, device=q.device)
        for h in range(Hq):
            ht = torch.tensor(h, device=q.device)
            for i, row in enumerate(lists[b][h]):
                q0, q1 = i * qb, min(Sq, (i + 1) * qb)
                qi = torch.arange(q0, q1, device=q.device)[:, None]
                state = (q.new_full((q1 - q0,), _NEG_INF), q.new_zeros(q1 - q0), q.new_zeros(q1 - q0, Dv))
                for j, _full in row:  # BUG: partial blocks are treated like full ones (mask_mod never applied)
                    k0, k1 = j * kb, min(Sk, (j + 1) * kb)
                    s = (q[b, h, q0:q1] @ k[b, kvh[h], k0:k1].T) * scale
                    if score_mod is not None:
                        ki = torch.arange(k0, k1, device=q.device)[None, :]
                        s = _call_score_mod(score_mod, s, bt, ht, qi, ki)
                    state = _online_step(state, s, v[b, kvh[h], k0:k1])
                out[b, h, q0:q1], lse[b, h, q0:q1] = _online_final(state)
    return _finish(out, lse, query.dtype, return_lse)


def flex_gqa_tiled(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                   return_lse=False):
    """GQA by tiling the kv heads: query head h reads kv head h % Hkv.

    Source: onnx/onnx PR #7274: the GQA repeat used Tile, giving [head0, head1, head0, head1], while torch
    expects repeat_interleave ([head0, head0, head1, head1]).
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    rep = Hq // k.shape[1]
    k, v = k.repeat(1, rep, 1, 1), v.repeat(1, rep, 1, 1)  # BUG: tile instead of repeat_interleave
    out, lse = _dense_core(q, k, v, scale, score_mod, block_mask, _grid(B, Hq, Sq, k.shape[2], q.device))
    return _finish(out, lse, query.dtype, return_lse)


def flex_gqa_div_kv_heads(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                          return_lse=False):
    """GQA head mapping divides by the number of kv heads instead of by the group size.

    Source: PSAL-POSTECH/ONNXim issue #33 / PR #34: kv_head_idx = head_idx / num_kv_heads instead of
    head_idx / (num_heads / num_kv_heads): wrong kv heads silently, or an out-of-range kv head.
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = torch.arange(Hq, device=q.device) // k.shape[1]  # BUG: should be // (Hq // Hkv)
    out, lse = _dense_core(q, k[:, kvh], v[:, kvh], scale, score_mod, block_mask,
                           _grid(B, Hq, Sq, k.shape[2], q.device))
    return _finish(out, lse, query.dtype, return_lse)


def flex_score_mod_kv_head(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                           return_lse=False):
    """Under GQA the head index handed to score_mod / mask_mod is the kv head, not the query head.

    Source: Dao-AILab/flash-attention PR #1937 ([CUTE] Enable Pack GQA for score mods): with GQA packing the
    kernel must hand score_mod the logical query head index, following the FlexAttention semantic
    score_mod(b, q_head, q_idx, kv_idx); see also vllm-project/vllm PR #1938 (ALiBi bias regrouped per query head).
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    b, _h, qi, ki = _grid(B, Hq, Sq, k.shape[2], q.device)
    h = kvh.view(1, Hq, 1, 1)  # BUG: the mods get the kv head of each query head instead of the query head
    out, lse = _dense_core(q, k[:, kvh], v[:, kvh], scale, score_mod, block_mask, (b, h, qi, ki))
    return _finish(out, lse, query.dtype, return_lse)


def flex_qkv_idx_swapped(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                         return_lse=False):
    """score_mod / mask_mod receive (kv_idx, q_idx) in the q_idx / kv_idx slots.

    Source: meta-pytorch/attention-gym PR #86 (fix alibi bias): the bias used (q_idx - kv_idx) where
    (kv_idx - q_idx) was meant, i.e. the two positions in the wrong order, flipping the ALiBi distance sign.
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    b, h, qi, ki = _grid(B, Hq, Sq, k.shape[2], q.device)
    out, lse = _dense_core(q, k[:, kvh], v[:, kvh], scale, score_mod, block_mask,
                           (b, h, ki, qi))  # BUG: kv positions passed as q_idx and query positions as kv_idx
    return _finish(out, lse, query.dtype, return_lse)


def flex_nan_empty_rows(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                        return_lse=False):
    """Plain torch.softmax over -inf-masked scores: a query row with no kept key becomes NaN.

    Source: pytorch/pytorch PR #131552 ("make fully masked out rows 0 instead of nan" in FlexAttention).
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    k, v = k[:, kvh], v[:, kvh]
    idx = _grid(B, Hq, Sq, k.shape[2], q.device)
    s = (q @ k.transpose(-1, -2)) * scale
    if score_mod is not None:
        s = _call_score_mod(score_mod, s, *idx)
    if block_mask is not None:
        s = s.masked_fill(~_keep(block_mask, s.shape, idx, s.device), _NEG_INF)
    out = torch.softmax(s, dim=-1) @ v  # BUG: 0/0 = NaN for a row whose scores are all -inf
    return _finish(out, torch.logsumexp(s, dim=-1), query.dtype, return_lse)


def flex_lse_base2(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                   return_lse=False):
    """exp2-based softmax (scores pre-multiplied by log2(e)) whose LSE is returned in base 2.

    Source: lightseekorg/tokenspeed PR #571: the base-2 (exp2) softmax stored its LSE in base-2 units, off by
    1/ln2 from the documented natural-log contract (cf. pytorch/pytorch issue #181645, LSE off by ln 2).
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    k, v = k[:, kvh], v[:, kvh]
    idx = _grid(B, Hq, Sq, k.shape[2], q.device)
    s = (q @ k.transpose(-1, -2)) * scale
    if score_mod is not None:
        s = _call_score_mod(score_mod, s, *idx)
    if block_mask is not None:
        s = s.masked_fill(~_keep(block_mask, s.shape, idx, s.device), _NEG_INF)
    s2 = s * math.log2(math.e)
    m = s2.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp2(s2 - m)
    denom = p.sum(dim=-1, keepdim=True)
    out = (p @ v) / torch.where(denom > 0, denom, torch.ones_like(denom))
    lse = (m + torch.log2(denom)).squeeze(-1)  # BUG: base-2 LSE, never multiplied back by ln(2)
    return _finish(out, lse, query.dtype, return_lse)


def flex_scale_value_dim(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                         return_lse=False):
    """Default softmax scale taken from the value head size (1/sqrt(Dv)) instead of the query/key one.

    Source: NVIDIA/Megatron-LM issue #1501: for MLA (q/k head 192, v head 128) the SDPA scale came from the
    wrong head size (kv_channels) instead of the q/k head dim, giving a wrongly scaled softmax.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(value.shape[-1])  # BUG: should be the q/k head size query.shape[-1]
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    out, lse = _dense_core(q, k[:, kvh], v[:, kvh], scale, score_mod, block_mask,
                           _grid(B, Hq, Sq, k.shape[2], q.device))
    return _finish(out, lse, query.dtype, return_lse)


def flex_bf16_scores(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                     return_lse=False):
    """Scores, softmax and P@V kept in the input dtype: with bfloat16 large scores lose their precision.

    Source: huggingface/transformers PR #18057 (XGLM): attention softmax run in half precision produced NaN /
    wrong weights; the fix upcasts the scores to float32 before the softmax.
    """
    cdt = query.dtype  # BUG: half / bfloat16 inputs are not upcast to float32
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    q, k, v = query.to(cdt), key.to(cdt), value.to(cdt)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    out, lse = _dense_core(q, k[:, kvh], v[:, kvh], scale, score_mod, block_mask,
                           _grid(B, Hq, Sq, k.shape[2], q.device))
    return _finish(out, lse, query.dtype, return_lse)


def flex_score_mod_after_mask(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                              return_lse=False):
    """The mask is written into the scores (-inf) BEFORE score_mod runs, so a softcap revives masked keys.

    Source: emmtrix/emx-onnx-cgen PR #731: softcap applied after the -inf mask bias mapped masked entries to
    -softcap (finite), so masked entries got nonzero softmax weight.
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    k, v = k[:, kvh], v[:, kvh]
    idx = _grid(B, Hq, Sq, k.shape[2], q.device)
    s = (q @ k.transpose(-1, -2)) * scale
    if block_mask is not None:
        s = s.masked_fill(~_keep(block_mask, s.shape, idx, s.device), _NEG_INF)
    if score_mod is not None:
        s = _call_score_mod(score_mod, s, *idx)  # BUG: score_mod runs on already-masked scores
    out, lse = _softmax_av(s, v)
    return _finish(out, lse, query.dtype, return_lse)


def flex_padded_tail(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                     return_lse=False):
    """Block kernel on keys zero-padded to a whole number of blocks; the padding slots are never masked.

    Source: flashinfer-ai/flashinfer PR #5090: with seqlen_k % 64 != 0 the last KV block was read as a full
    block; the zero-filled K gave score 0, i.e. exp(0) = 1 softmax weight, corrupting the output.
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    Sk, Dv = k.shape[2], v.shape[-1]
    kvh = _kv_head_of(Hq, k.shape[1], q.device).tolist()
    qb, kb, lists = _block_lists(block_mask, Sq, Sk, B, Hq)
    pad = -Sk % kb
    k = torch.cat([k, k.new_zeros(B, k.shape[1], pad, k.shape[3])], dim=2)
    v = torch.cat([v, v.new_zeros(B, v.shape[1], pad, Dv)], dim=2)
    out = q.new_zeros(B, Hq, Sq, Dv)
    lse = q.new_full((B, Hq, Sq), _NEG_INF)
    for b in range(B):
        bt = torch.tensor(b, device=q.device)
        for h in range(Hq):
            ht = torch.tensor(h, device=q.device)
            for i, row in enumerate(lists[b][h]):
                q0, q1 = i * qb, min(Sq, (i + 1) * qb)
                qi = torch.arange(q0, q1, device=q.device)[:, None]
                state = (q.new_full((q1 - q0,), _NEG_INF), q.new_zeros(q1 - q0), q.new_zeros(q1 - q0, Dv))
                for j, full in row:
                    k0, k1 = j * kb, (j + 1) * kb  # BUG: last block not clipped to Sk: padded keys attended
                    ki = torch.arange(k0, k1, device=q.device)[None, :]
                    s = (q[b, h, q0:q1] @ k[b, kvh[h], k0:k1].T) * scale
                    if score_mod is not None:
                        s = _call_score_mod(score_mod, s, bt, ht, qi, ki)
                    if not full:
                        s = s.masked_fill(~_call_mask_mod(block_mask.mask_mod, s.shape, bt, ht, qi, ki, q.device),
                                          _NEG_INF)
                    state = _online_step(state, s, v[b, kvh[h], k0:k1])
                out[b, h, q0:q1], lse[b, h, q0:q1] = _online_final(state)
    return _finish(out, lse, query.dtype, return_lse)


def flex_finite_mask_fill(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                          return_lse=False):
    """Masked scores filled with the dtype's most negative finite value instead of -inf.

    Source: YutaroOgawa/pytorch_advanced issue #175: with masked scores set to -1e9, a row whose keys are all
    masked gets uniform weights 1/n after the softmax instead of nothing.
    """
    q, k, v, scale = _prepare(query, key, value, scale)
    B, Hq, Sq, _ = q.shape
    kvh = _kv_head_of(Hq, k.shape[1], q.device)
    k, v = k[:, kvh], v[:, kvh]
    idx = _grid(B, Hq, Sq, k.shape[2], q.device)
    s = (q @ k.transpose(-1, -2)) * scale
    if score_mod is not None:
        s = _call_score_mod(score_mod, s, *idx)
    if block_mask is not None:
        keep = _keep(block_mask, s.shape, idx, s.device)
        s = s.masked_fill(~keep, torch.finfo(s.dtype).min)  # BUG: finite fill: empty rows average every value
    out, lse = _softmax_av(s, v)
    return _finish(out, lse, query.dtype, return_lse)


# ----------------------------------------------------------------------------------------------------------
# block mask helper
# ----------------------------------------------------------------------------------------------------------
class SimpleBlockMask:
    """Minimal stand-in for FlexAttention's BlockMask with exactly the attributes the kernels use."""

    def __init__(self, mask_mod, B, H, Sq, Sk, block=(128, 128)):
        qb, kb = (int(x) for x in block)
        self.mask_mod, self.BLOCK_SIZE = mask_mod, (qb, kb)
        self.seq_lengths, self.shape = (Sq, Sk), (B, H, Sq, Sk)
        dense = _call_mask_mod(mask_mod, (B, H, Sq, Sk), *_grid(B, H, Sq, Sk, "cpu"), "cpu")
        nq, nk = -(-Sq // qb), -(-Sk // kb)
        any_pad = torch.zeros(B, H, nq * qb, nk * kb, dtype=torch.bool)
        all_pad = torch.ones(B, H, nq * qb, nk * kb, dtype=torch.bool)
        any_pad[:, :, :Sq, :Sk] = dense
        all_pad[:, :, :Sq, :Sk] = dense
        any_blk = any_pad.view(B, H, nq, qb, nk, kb).any(dim=5).any(dim=3)
        all_blk = all_pad.view(B, H, nq, qb, nk, kb).all(dim=5).all(dim=3)
        self.kv_num_blocks, self.kv_indices = self._lists(any_blk & ~all_blk)
        self.full_kv_num_blocks, self.full_kv_indices = self._lists(all_blk)
        self._dense = any_blk.to(torch.int32)

    @staticmethod
    def _lists(sel):
        order = torch.sort((~sel).to(torch.int8), dim=-1, stable=True).indices
        return sel.sum(dim=-1).to(torch.int32), order.to(torch.int32)

    def to_dense(self):
        return self._dense.clone()

    def __repr__(self):
        return f"SimpleBlockMask(shape={self.shape}, BLOCK_SIZE={self.BLOCK_SIZE})"


def make_block_mask(mask_mod, B, H, Sq, Sk, block=(128, 128)):
    """Evaluate mask_mod densely and classify each (q block, kv block) as empty, partial or full."""
    return SimpleBlockMask(mask_mod, B, H, Sq, Sk, block)


# ----------------------------------------------------------------------------------------------------------
# catalog
# ----------------------------------------------------------------------------------------------------------
def _entry(name, correct, bug, note, source="", dtype="float64"):
    return {"name": name, "api": "flex-attention", "fn": name, "correct": correct, "bug": bug, "dtype": dtype,
            "note": note, "source": source}


CATALOG = [
    _entry("flex_eager", True, None, "dense scores, score_mod / mask_mod called once with broadcast index tensors"),
    _entry("flex_blockwise", True, None,
           "FA2 online softmax per query block: kv_indices with mask_mod, then full_kv_indices without"),
    _entry("flex_vmap_rows", True, None, "score_mod / mask_mod per query row (0-d b, h, q_idx; (Sk,) kv_idx)"),
    _entry("flex_split_kv", True, None, "flash-decoding: 3 key splits, partial outputs merged through their LSEs"),
    _entry("flex_unscaled_score_mod", False, "score-mod-before-scale",
           "score_mod applied to the unscaled q.k, scale multiplied in afterwards",
           "huggingface/trl PR #5691 (softcap applied before logit_scale)"),
    _entry("flex_partial_blocks_unmasked", False, "partial-block-unmasked",
           "walks kv_indices and full_kv_indices but never applies mask_mod inside partial blocks",
           "pytorch/pytorch PR #164702 (sliced BlockMask mask_mod silently replaced by noop_mask)"),
    _entry("flex_gqa_tiled", False, "gqa-modulo", "kv heads tiled: query head h reads kv head h % Hkv",
           "onnx/onnx PR #7274 (GQA repeat used Tile instead of repeat_interleave)"),
    _entry("flex_gqa_div_kv_heads", False, "gqa-divisor",
           "query head h reads kv head h // Hkv: MHA collapses onto kv head 0, GQA wrong or IndexError"
           " unless Hq == Hkv**2",
           "PSAL-POSTECH/ONNXim issue #33 / PR #34 (kv_head_idx = head_idx / num_kv_heads)"),
    _entry("flex_score_mod_kv_head", False, "score-mod-kv-head",
           "score_mod / mask_mod get the kv head index instead of the query head under GQA",
           "Dao-AILab/flash-attention PR #1937 (score_mod head index under packed GQA must be the query head)"),
    _entry("flex_qkv_idx_swapped", False, "idx-swapped", "score_mod / mask_mod called with q_idx and kv_idx swapped",
           "meta-pytorch/attention-gym PR #86 (ALiBi bias with q_idx / kv_idx in the wrong order)"),
    _entry("flex_nan_empty_rows", False, "empty-row-nan", "plain softmax: rows with no kept key come out NaN",
           "pytorch/pytorch PR #131552 (make fully masked out rows 0 instead of nan)"),
    _entry("flex_lse_base2", False, "lse-base2", "exp2 softmax whose LSE is returned in base 2 (too large by 1/ln2)",
           "lightseekorg/tokenspeed PR #571 (base-2 LSE stored instead of natural log)"),
    _entry("flex_scale_value_dim", False, "scale-value-dim", "default scale 1/sqrt(Dv) instead of 1/sqrt(D)",
           "NVIDIA/Megatron-LM issue #1501 (MLA softmax scale from the wrong head size)"),
    _entry("flex_bf16_scores", False, "low-precision-scores",
           "no float32 upcast: scores / softmax in bfloat16 (float16 on CPU raises)",
           "huggingface/transformers PR #18057 (fp16 softmax NaN, fixed by upcasting to fp32)", dtype="bfloat16"),
    _entry("flex_score_mod_after_mask", False, "score-mod-after-mask",
           "mask written as -inf before score_mod; a softcap turns it into a finite -cap",
           "emmtrix/emx-onnx-cgen PR #731 (softcap after -inf mask gave masked entries weight)"),
    _entry("flex_padded_tail", False, "padded-tail",
           "keys zero-padded to whole blocks, last block not clipped: padding keys get score_mod(0) weight",
           "flashinfer-ai/flashinfer PR #5090 (zero-filled tail keys got exp(0) weight)"),
    _entry("flex_finite_mask_fill", False, "finite-mask-fill",
           "masked scores filled with finfo.min: rows with no key average all values, LSE finite",
           "YutaroOgawa/pytorch_advanced issue #175 (rows fully masked with -1e9 get uniform weights)"),
]
