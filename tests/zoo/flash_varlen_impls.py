"""Zoo: attention written against the signature of flash_attn.flash_attn_varlen_func (FlashAttention 2).

Independent of refimpl (written from the flash-attn documentation only). Every public function is
    fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
       causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
       return_attn_probs=False) -> out (total_q, Hq, Dv)
with q (total_q, Hq, D), k (total_k, Hkv, D), v (total_k, Hkv, Dv): B sequences packed along dim 0, sequence b
owning query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 and key rows cu_seqlens_k[b] .. cu_seqlens_k[b+1]-1
(cu_seqlens_* int32 (B+1,), starting at 0; lengths may be 0 and lq != lk). Hq % Hkv == 0 (GQA/MQA: query head h
reads kv head h // (Hq // Hkv)). Within sequence b, for LOCAL query i (0..lq-1) and LOCAL key j (0..lk-1):
    s_ij   = (q_i . k_j) * scale,                 scale = softmax_scale or 1/sqrt(D)
    s_ij   = softcap * tanh(s_ij / softcap)        if softcap > 0 (the cap acts on the SCALED score)
    s_ij  += -slope_h * |i + lk - lq - j|          if alibi_slopes ((Hq,) or (B, Hq)) is given
    keep   = i + lk - lq - left <= j <= i + lk - lq + right     (BOTTOM-RIGHT aligned per sequence; -1 =
             unbounded; window_size = (left, right); causal means right = 0)
    out_i  = sum_j softmax_j(s_i, over kept j) v_j; a query row with no kept key gives zeros.
Queries never see keys of another sequence. float16/bfloat16 are computed in float32, float32/float64 in their
own dtype; out has the input dtype. dropout_p must be 0 and return_attn_probs False (deterministic forward
only); `deterministic` is ignored. max_seqlen_q/k must be >= every sequence length (they size the padded
kernels). The broken functions contain exactly one realistic mistake each (marked `BUG:`), see CATALOG.
"""
import math

import torch

_HALF = (torch.float16, torch.bfloat16)
_NEG_INF = float("-inf")


class _Prep:
    """Validated inputs: qc (total_q, Hq, D), kc (total_k, Hkv, D), vc (total_k, Hkv, Dv) in the compute dtype,
    cu_q / cu_k python int lists (B+1), max_q / max_k ints, scale, slopes (B, Hq) or None, out_dtype."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def batch(self):
        return len(self.cu_q) - 1

    def ranges(self):
        """(b, q0, q1, k0, k1) for every sequence b."""
        for b in range(self.batch):
            yield b, self.cu_q[b], self.cu_q[b + 1], self.cu_k[b], self.cu_k[b + 1]

    def slopes_of(self, b):
        return None if self.slopes is None else self.slopes[b]  # (Hq,)

    def zeros_out(self):
        return torch.zeros(self.qc.shape[0], self.qc.shape[1], self.vc.shape[2], dtype=self.qc.dtype)


def _check_cu(name, cu, total):
    if not isinstance(cu, torch.Tensor) or cu.dtype != torch.int32 or cu.dim() != 1 or cu.numel() < 1:
        raise TypeError(f"{name} must be a 1-D int32 torch.Tensor (B+1,); got {type(cu).__name__} "
                        f"{getattr(cu, 'dtype', '')} {tuple(getattr(cu, 'shape', ()))}")
    vals = [int(x) for x in cu.tolist()]
    if vals[0] != 0 or any(b < a for a, b in zip(vals, vals[1:])) or vals[-1] != total:
        raise ValueError(f"{name} must start at 0, be non-decreasing and end at the packed length {total}; "
                         f"got {vals}")
    return vals


def _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
             window_size, alibi_slopes, return_attn_probs, compute_dtype=None):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() != 3:
            raise TypeError(f"{name} must be a 3-D floating torch.Tensor (total, H, D); "
                            f"got {type(t).__name__} {getattr(t, 'dtype', '')} {tuple(getattr(t, 'shape', ()))}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[:2] != v.shape[:2]:
        raise ValueError(f"k and v must share (total_k, Hkv); got {tuple(k.shape[:2])} and {tuple(v.shape[:2])}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must share the head size D; got {q.shape[2]} and {k.shape[2]}")
    hq, hkv = q.shape[1], k.shape[1]
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"number of q heads Hq={hq} must be a multiple of k/v heads Hkv={hkv}")
    cu_q = _check_cu("cu_seqlens_q", cu_seqlens_q, q.shape[0])
    cu_k = _check_cu("cu_seqlens_k", cu_seqlens_k, k.shape[0])
    if len(cu_q) != len(cu_k):
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must both be (B+1,); got {len(cu_q)} and {len(cu_k)}")
    max_q, max_k = int(max_seqlen_q), int(max_seqlen_k)
    longest_q = max((b - a for a, b in zip(cu_q, cu_q[1:])), default=0)
    longest_k = max((b - a for a, b in zip(cu_k, cu_k[1:])), default=0)
    if max_q < longest_q or max_k < longest_k:
        raise ValueError(f"max_seqlen_q/k ({max_q}, {max_k}) smaller than the longest sequence "
                         f"({longest_q}, {longest_k})")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p must be 0.0 (deterministic implementation); got {dropout_p}")
    if return_attn_probs:
        raise NotImplementedError("return_attn_probs=True is not supported by this implementation")
    if len(window_size) != 2 or any(int(w) != w or w < -1 for w in window_size):
        raise ValueError(f"window_size must be (left, right) ints >= -1 (-1 = unbounded); got {window_size}")
    batch = len(cu_q) - 1
    ct = compute_dtype or (torch.float32 if q.dtype in _HALF else q.dtype)
    slopes = None
    if alibi_slopes is not None:
        if tuple(alibi_slopes.shape) not in ((hq,), (batch, hq)):
            raise ValueError(f"alibi_slopes must have shape (Hq,)=({hq},) or (B, Hq)=({batch}, {hq}); "
                             f"got {tuple(alibi_slopes.shape)}")
        slopes = alibi_slopes.to(ct).expand(batch, hq)  # (B, Hq)
    scale = 1.0 / math.sqrt(q.shape[2]) if softmax_scale is None else softmax_scale
    return _Prep(qc=q.to(ct), kc=k.to(ct), vc=v.to(ct), cu_q=cu_q, cu_k=cu_k, max_q=max_q, max_k=max_k,
                 scale=scale, slopes=slopes, out_dtype=q.dtype)


def _heads_first(t):
    # (L, H, D) -> (H, L, D)
    return t.transpose(0, 1)


def _expand_kv(k, v, hq):
    """(..., Hkv, L, D) on dim -3 -> Hq heads: kv head g serves query heads g*G .. g*G + G-1, G = Hq // Hkv."""
    group = hq // k.shape[-3]
    return k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)


def _positions(lq, lk):
    """Local query index column (lq, 1) and key index row (1, lk)."""
    return torch.arange(lq).unsqueeze(1), torch.arange(lk).unsqueeze(0)


def _left_ok(i, j, off, left):
    return (left < 0) | (j >= i + off - left)


def _right_ok(i, j, off, right):
    return (right < 0) | (j <= i + off + right)


def _keep(i, j, off, causal, window_size):
    """Bottom-right band: i + off - left <= j <= i + off + right with off = lk - lq."""
    left, right = window_size[0], (0 if causal else window_size[1])
    return _left_ok(i, j, off, left) & _right_ok(i, j, off, right)


def _bias(keep, dist, slopes, dtype):
    """(Hq|1, Lq, Lk) additive bias: -slope_h * |dist| where kept, -inf outside the band.
    slopes: (Hq,) or None; keep/dist broadcast to (Lq, Lk) (or carry leading dims of their own)."""
    alibi = torch.zeros((), dtype=dtype)
    if slopes is not None:
        alibi = -slopes.reshape(-1, 1, 1) * dist.abs().to(dtype)
    return torch.where(keep, alibi, _NEG_INF)


def _scores(q, k, scale, softcap):
    """(..., Lq, D) x (..., D, Lk) -> (..., Lq, Lk) scaled scores, soft-capped when softcap > 0."""
    s = q @ k.transpose(-2, -1) * scale
    return softcap * torch.tanh(s / softcap) if softcap > 0 else s


def _safe_softmax(s):
    """Max-subtracted softmax over keys; a row that is entirely -inf gives zeros."""
    m = s.amax(-1, keepdim=True)
    e = torch.exp(s - m.masked_fill(m == _NEG_INF, 0.0))
    total = e.sum(-1, keepdim=True)
    return e / total.masked_fill(total == 0, 1.0)


def _dense(q, k, v, scale, softcap, bias):
    return _safe_softmax(_scores(q, k, scale, softcap) + bias) @ v


def _seq_qkv(p, q0, q1, k0, k1):
    """Sequence slices, heads first: q (Hq, lq, D), k (Hq, lk, D), v (Hq, lk, Dv) (kv heads expanded)."""
    qs = _heads_first(p.qc[q0:q1])
    ks, vs = _expand_kv(_heads_first(p.kc[k0:k1]), _heads_first(p.vc[k0:k1]), qs.shape[0])
    return qs, ks, vs


def _packed_ids(cu, total):
    """Per packed row: sequence id (searchsorted over the internal boundaries; empty sequences own no row)
    and local index within the sequence."""
    cu_t = torch.tensor(cu, dtype=torch.int64)
    pos = torch.arange(total)
    seq = torch.searchsorted(cu_t[1:-1].contiguous(), pos, right=True)
    return seq, pos - cu_t[seq]


def _packed_attention(p, seq_q, i, seq_k, j, causal, window_size, softcap):
    """Whole-batch attention (Hq, total_q, total_k) with a block-diagonal (same-sequence) mask and the per-
    sequence bottom-right band on local indices i (queries) / j (keys)."""
    out = p.zeros_out()
    if out.shape[0] == 0 or p.kc.shape[0] == 0:
        return out
    len_q = torch.tensor([b - a for a, b in zip(p.cu_q, p.cu_q[1:])], dtype=torch.int64)
    len_k = torch.tensor([b - a for a, b in zip(p.cu_k, p.cu_k[1:])], dtype=torch.int64)
    off = (len_k - len_q)[seq_q].unsqueeze(1)  # (total_q, 1): lk - lq of each query's sequence
    ii, jj = i.unsqueeze(1), j.unsqueeze(0)
    keep = (seq_q.unsqueeze(1) == seq_k.unsqueeze(0)) & _keep(ii, jj, off, causal, window_size)
    bias = torch.where(keep, torch.zeros((), dtype=p.qc.dtype), _NEG_INF)  # (total_q, total_k)
    if p.slopes is not None:
        dist = (ii + off - jj).abs().to(p.qc.dtype)
        bias = torch.where(keep, -_heads_first(p.slopes[seq_q].unsqueeze(2)) * dist, _NEG_INF)  # (Hq, Tq, Tk)
    qs = _heads_first(p.qc)
    ks, vs = _expand_kv(_heads_first(p.kc), _heads_first(p.vc), qs.shape[0])
    return _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))


def _loop(p, causal, window_size, softcap):
    out = p.zeros_out()
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs, ks, vs = _seq_qkv(p, q0, q1, k0, k1)
        i, j = _positions(lq, lk)
        bias = _bias(_keep(i, j, lk - lq, causal, window_size), i + (lk - lq) - j, p.slopes_of(b), qs.dtype)
        out[q0:q1] = _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))  # (Hq, lq, Dv) -> (lq, Hq, Dv)
    return out


# ------------------------------------------------------------------ correct implementations
def varlen_loop(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                deterministic=False, return_attn_probs=False):
    """Loop over sequences; per sequence materialised scores (Hq, lq, lk), band mask, softmax, P @ V."""
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    return _loop(p, causal, window_size, softcap).to(p.out_dtype)


def varlen_float32(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                   softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                   deterministic=False, return_attn_probs=False):
    """As varlen_loop, always computed in float32 (also for float64 input)."""
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs, compute_dtype=torch.float32)
    return _loop(p, causal, window_size, softcap).to(p.out_dtype)


def varlen_packed(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                  softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                  deterministic=False, return_attn_probs=False):
    """One (Hq, total_q, total_k) score matrix over the packed batch; block-diagonal same-sequence mask
    combined with the band on local indices."""
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    seq_q, i = _packed_ids(p.cu_q, p.qc.shape[0])
    seq_k, j = _packed_ids(p.cu_k, p.kc.shape[0])
    return _packed_attention(p, seq_q, i, seq_k, j, causal, window_size, softcap).to(p.out_dtype)


def varlen_online(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                  softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                  deterministic=False, return_attn_probs=False):
    """FlashAttention-2 style: per sequence, online softmax over key blocks of 32 with running max m, sum l
    and accumulator acc (rescaled by exp(m - m') when the max grows); out = acc / l."""
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    out, block = p.zeros_out(), 32
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs, ks, vs = _seq_qkv(p, q0, q1, k0, k1)
        i, j = _positions(lq, lk)
        bias = _bias(_keep(i, j, lk - lq, causal, window_size), i + (lk - lq) - j, p.slopes_of(b), qs.dtype)
        bias = bias.expand(qs.shape[0], lq, lk)
        m, total, acc = torch.tensor(_NEG_INF, dtype=qs.dtype), 0.0, 0.0
        for c in range(0, lk, block):
            s = _scores(qs, ks[:, c:c + block], p.scale, softcap) + bias[..., c:c + block]  # (Hq, lq, Bk)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_ref = m_new.masked_fill(m_new == _NEG_INF, 0.0)
            alpha = torch.exp(m - m_ref)  # (Hq, lq, 1)
            pb = torch.exp(s - m_ref)
            total = alpha * total + pb.sum(-1, keepdim=True)
            acc = alpha * acc + pb @ vs[:, c:c + block]
            m = m_new
        out[q0:q1] = _heads_first(acc / total.masked_fill(total == 0, 1.0))
    return out.to(p.out_dtype)


def _padded(p, causal, window_size, softcap, mask_padding):
    """Pad to (B, H, max_seqlen, D), run batched attention with the per-sequence band, unpad."""
    out, batch = p.zeros_out(), p.batch
    if batch == 0 or p.max_q == 0 or p.max_k == 0:
        return out
    hq, hkv, d, dv = p.qc.shape[1], p.kc.shape[1], p.qc.shape[2], p.vc.shape[2]
    qp = torch.zeros(batch, hq, p.max_q, d, dtype=p.qc.dtype)
    kp = torch.zeros(batch, hkv, p.max_k, d, dtype=p.qc.dtype)
    vp = torch.zeros(batch, hkv, p.max_k, dv, dtype=p.qc.dtype)
    for b, q0, q1, k0, k1 in p.ranges():
        qp[b, :, :q1 - q0] = _heads_first(p.qc[q0:q1])
        kp[b, :, :k1 - k0] = _heads_first(p.kc[k0:k1])
        vp[b, :, :k1 - k0] = _heads_first(p.vc[k0:k1])
    kp, vp = _expand_kv(kp, vp, hq)
    len_q = torch.tensor([b - a for a, b in zip(p.cu_q, p.cu_q[1:])], dtype=torch.int64).reshape(-1, 1, 1)
    len_k = torch.tensor([b - a for a, b in zip(p.cu_k, p.cu_k[1:])], dtype=torch.int64).reshape(-1, 1, 1)
    i, j = _positions(p.max_q, p.max_k)
    off = len_k - len_q  # (B, 1, 1)
    keep = _keep(i, j, off, causal, window_size)  # (B, max_q, max_k)
    if mask_padding:
        keep = keep & (j < len_k)
    keep, dist = keep.unsqueeze(1), (i + off - j).abs().to(p.qc.dtype).unsqueeze(1)  # (B, 1, max_q, max_k)
    alibi = torch.zeros((), dtype=p.qc.dtype) if p.slopes is None else -p.slopes.reshape(batch, hq, 1, 1) * dist
    op = _dense(qp, kp, vp, p.scale, softcap, torch.where(keep, alibi, _NEG_INF))  # (B, Hq, max_q, Dv)
    for b, q0, q1, _, _ in p.ranges():
        out[q0:q1] = _heads_first(op[b, :, :q1 - q0])
    return out


def varlen_padded(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                  softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                  deterministic=False, return_attn_probs=False):
    """Pad every sequence to (max_seqlen_q, max_seqlen_k), batched attention with padding keys masked, unpad."""
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    return _padded(p, causal, window_size, softcap, mask_padding=True).to(p.out_dtype)


# ------------------------------------------------------------------ broken implementations
def varlen_cross_sequence(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                          softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                          deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    out = p.zeros_out()
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs, ks, vs = _seq_qkv(p, q0, q1, k0, p.kc.shape[0])  # BUG: keys k0 .. total_k, not k0 .. cu_seqlens_k[b+1]
        i, j = _positions(lq, ks.shape[1])
        bias = _bias(_keep(i, j, lk - lq, causal, window_size), i + (lk - lq) - j, p.slopes_of(b), qs.dtype)
        out[q0:q1] = _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))
    return out.to(p.out_dtype)


def varlen_causal_packed_index(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                               alibi_slopes=None, deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    out, left, right = p.zeros_out(), window_size[0], (0 if causal else window_size[1])
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs, ks, vs = _seq_qkv(p, q0, q1, k0, k1)
        i, j = _positions(lq, lk)
        off = lk - lq
        keep = _left_ok(i, j, off, left) & _right_ok(q0 + i, k0 + j, off, right)  # BUG: causal on packed indices
        bias = _bias(keep, i + off - j, p.slopes_of(b), qs.dtype)
        out[q0:q1] = _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))
    return out.to(p.out_dtype)


def varlen_causal_top_left(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    out = p.zeros_out()
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs, ks, vs = _seq_qkv(p, q0, q1, k0, k1)
        i, j = _positions(lq, lk)
        keep = _keep(i, j, 0, causal, window_size)  # BUG: band on j = i (top-left) instead of j = i + lk - lq
        bias = _bias(keep, i + (lk - lq) - j, p.slopes_of(b), qs.dtype)
        out[q0:q1] = _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))
    return out.to(p.out_dtype)


def varlen_cu_off_by_one(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                         softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                         deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    seq_q, i = _packed_ids(p.cu_q, p.qc.shape[0])
    cu_k = torch.tensor(p.cu_k, dtype=torch.int64)
    pos_k = torch.arange(p.kc.shape[0])
    # BUG: cu_seqlens_k[b+1]-1 (the last key of b) taken as the exclusive end of b / first key of b+1: every
    # sequence but the last loses its last key, which lands in the next sequence at local index -1
    seq_k = torch.searchsorted((cu_k[1:-1] - 1).contiguous(), pos_k, right=True)
    j = pos_k - cu_k[seq_k]
    return _packed_attention(p, seq_q, i, seq_k, j, causal, window_size, softcap).to(p.out_dtype)


def varlen_padding_unmasked(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                            deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    # BUG: keys padded (zeros) to max_seqlen_k but only the band is applied: padding keys j >= lk stay in the
    # softmax (score 0 plus ALiBi, value 0) wherever the band's right edge does not already exclude them
    return _padded(p, causal, window_size, softcap, mask_padding=False).to(p.out_dtype)


def varlen_alibi_packed(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                        softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                        deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    out = p.zeros_out()
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs, ks, vs = _seq_qkv(p, q0, q1, k0, k1)
        i, j = _positions(lq, lk)
        off = lk - lq
        dist = (q0 + i) + off - (k0 + j)  # BUG: ALiBi distance on packed indices (off by cu_q[b] - cu_k[b])
        bias = _bias(_keep(i, j, off, causal, window_size), dist, p.slopes_of(b), qs.dtype)
        out[q0:q1] = _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))
    return out.to(p.out_dtype)


def varlen_gqa_modulo(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                      softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                      deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    out, hq, hkv = p.zeros_out(), p.qc.shape[1], p.kc.shape[1]
    heads = torch.arange(hq) % hkv  # BUG: query head h reads kv head h % Hkv
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs = _heads_first(p.qc[q0:q1])
        ks, vs = _heads_first(p.kc[k0:k1]).index_select(0, heads), _heads_first(p.vc[k0:k1]).index_select(0, heads)
        i, j = _positions(lq, lk)
        bias = _bias(_keep(i, j, lk - lq, causal, window_size), i + (lk - lq) - j, p.slopes_of(b), qs.dtype)
        out[q0:q1] = _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))
    return out.to(p.out_dtype)


def varlen_window_global(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                         softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                         deterministic=False, return_attn_probs=False):
    p = _prepare(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                 window_size, alibi_slopes, return_attn_probs)
    out, left, right = p.zeros_out(), window_size[0], (0 if causal else window_size[1])
    for b, q0, q1, k0, k1 in p.ranges():
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        qs, ks, vs = _seq_qkv(p, q0, q1, k0, k1)
        i, j = _positions(lq, lk)
        off = lk - lq
        keep = _left_ok(q0 + i, k0 + j, off, left) & _right_ok(i, j, off, right)  # BUG: left edge, packed idx
        bias = _bias(keep, i + off - j, p.slopes_of(b), qs.dtype)
        out[q0:q1] = _heads_first(_dense(qs, ks, vs, p.scale, softcap, bias))
    return out.to(p.out_dtype)


_ALL = ["causal", "window", "softcap", "alibi", "gqa"]


def _entry(name, correct, model, note, dtype="float64"):
    return {"name": name, "api": "flash-attn-varlen", "fn": name, "correct": correct, "model": model,
            "convention": "zeros" if correct else None, "dtype": dtype, "features": list(_ALL), "note": note}


CATALOG = [
    _entry("varlen_loop", True, None, "loop over sequences, materialised bottom-right band, softmax, P @ V"),
    _entry("varlen_float32", True, None, "loop over sequences, always float32 internally", dtype="float32"),
    _entry("varlen_packed", True, None, "one packed-batch score matrix, block-diagonal mask + local band"),
    _entry("varlen_online", True, None, "FlashAttention-2 online softmax over key blocks of 32 per sequence"),
    _entry("varlen_padded", True, None, "padded to (max_seqlen_q, max_seqlen_k), padding keys masked"),
    _entry("varlen_cross_sequence", False, "sequence-boundary",
           "keys k0 .. total_k: queries also see the following sequences' keys (non-causal, B >= 2)"),
    _entry("varlen_causal_packed_index", False, "causal-packed-index",
           "right/causal band edge on packed indices: shifted by cu_q[b] - cu_k[b] (earlier lq != lk)"),
    _entry("varlen_causal_top_left", False, "causal-alignment",
           "causal/window band aligned top-left per sequence (j <= i); bites when lq != lk"),
    _entry("varlen_cu_off_by_one", False, "cu-seqlens-off-by-one",
           "cu_seqlens_k[b+1]-1 as the end of b: last key of each sequence but the last moved to the next"),
    _entry("varlen_padding_unmasked", False, "padding-unmasked",
           "padded to max_seqlen_k, zero padding keys not masked (bites when lk < max_seqlen_k, non-causal)"),
    _entry("varlen_alibi_packed", False, "alibi-packed-index",
           "ALiBi |distance| on packed indices: shifted by cu_q[b] - cu_k[b]"),
    _entry("varlen_gqa_modulo", False, "gqa-grouping", "query head h reads kv head h % Hkv"),
    _entry("varlen_window_global", False, "window-packed-index",
           "left window edge on packed indices: shifted by cu_q[b] - cu_k[b]"),
]
