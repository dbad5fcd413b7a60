"""Held-out set 17, API `flash-attn`: flash_attn_func semantics on torch tensors.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
deterministic=False, return_attn_probs=False); q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right
alignment, off = Sk - Sq: causal keeps j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right
(-1 unbounded); softcap > 0 maps the scaled scores to softcap * tanh(s / softcap) before masking; ALiBi adds
-slope * |i + off - j| after the cap (slopes float32 (Hq,) or (B, Hq)); query head h uses kv head h // (Hq // Hkv);
rows with no visible key are zeros. Returns (B, Sq, Hq, Dv). Six broken kernels (one BUG-marked line each) and two
correct ones; see README.md. The two module-level helpers below are shared and correct.
"""
import math

import torch


def _visible(sq, sk, causal, window_size, device):
    """Bottom-right keep-mask (Sq, Sk) of causal and window_size (left, right), -1 = unbounded."""
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    diag = i + (sk - sq)
    left, right = window_size
    keep = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if causal:
        keep = keep & (j <= diag)
    if left >= 0:
        keep = keep & (j >= diag - left)
    if right >= 0:
        keep = keep & (j <= diag + right)
    return keep


def _alibi_bias(alibi_slopes, batch, hq, sq, sk, dtype, device):
    """-slope * |i + off - j| as (B, Hq, Sq, Sk), or None."""
    if alibi_slopes is None:
        return None
    slopes = alibi_slopes.to(device=device, dtype=dtype)
    if slopes.dim() == 1:
        slopes = slopes.expand(batch, hq)
    i = torch.arange(sq, device=device)[:, None]
    j = torch.arange(sk, device=device)[None, :]
    dist = (i + (sk - sq) - j).abs().to(dtype)
    return -slopes[:, :, None, None] * dist


# --- kernel: flash_te_packed_cu_seqlens ---
def _te_varlen_forward(q_packed, k_packed, v_packed, cu_seqlens_q, cu_seqlens_k, scale, causal, window_size, softcap,
                       alibi_slopes, hq):
    total_q = q_packed.shape[0]
    out = torch.zeros(total_q, hq, v_packed.shape[-1], dtype=q_packed.dtype, device=q_packed.device)
    group = hq // k_packed.shape[1]
    for b in range(cu_seqlens_q.numel() - 1):
        qs = q_packed[int(cu_seqlens_q[b]):int(cu_seqlens_q[b + 1])].transpose(0, 1)
        ks = k_packed[int(cu_seqlens_k[b]):int(cu_seqlens_k[b + 1])].transpose(0, 1)
        vs = v_packed[int(cu_seqlens_k[b]):int(cu_seqlens_k[b + 1])].transpose(0, 1)
        lq, lk = qs.shape[1], ks.shape[1]
        if lq == 0 or lk == 0:
            continue
        ks = ks.repeat_interleave(group, dim=0)
        vs = vs.repeat_interleave(group, dim=0)
        s = torch.matmul(qs, ks.transpose(-2, -1)) * scale
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            slopes = alibi_slopes if alibi_slopes.dim() == 1 else alibi_slopes[b]
            s = s + _alibi_bias(slopes[None], 1, hq, lq, lk, s.dtype, s.device)[0]
        s = s.masked_fill(~_visible(lq, lk, causal, window_size, s.device), float('-inf'))
        m = s.amax(dim=-1, keepdim=True)
        p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
        den = p.sum(dim=-1, keepdim=True)
        o = torch.matmul(p / torch.where(den == 0, torch.ones_like(den), den), vs)
        out[int(cu_seqlens_q[b]):int(cu_seqlens_q[b + 1])] = o.transpose(0, 1)
    return out


def flash_te_packed_cu_seqlens(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Engine-style wrapper: packs (B, S) into tokens and calls a varlen kernel with cumulative lengths."""
    batch_size, seqlen_q = q.shape[0], q.shape[1]
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    q_packed, k_packed, v_packed = [x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]) for x in (q, k, v)]
    cu_seqlens_q = torch.arange(0, (batch_size + 1) * seqlen_q, step=seqlen_q, dtype=torch.int32)
    cu_seqlens_k = cu_seqlens_q  # BUG: query offsets for the keys
    out = _te_varlen_forward(q_packed, k_packed, v_packed, cu_seqlens_q, cu_seqlens_k, softmax_scale, causal,
                             window_size, softcap, alibi_slopes, q.shape[2])
    return out.reshape(batch_size, seqlen_q, q.shape[2], v.shape[-1])


# --- kernel: flash_planned_prefill_softcap ---
class _PlannedPrefillWrapper:
    """Plan/run wrapper: the logits soft-cap variant is selected when the module is planned."""

    def plan(self, num_qo_heads, num_kv_heads, causal=False, window_size=(-1, -1), logits_soft_cap=0.0):
        self._group = num_qo_heads // num_kv_heads
        self._causal = causal
        self._window_size = window_size
        self._use_logits_soft_cap = logits_soft_cap > 0.0
        self._logits_soft_cap = logits_soft_cap

    def run(self, q, k, v, sm_scale, logits_soft_cap=None, alibi_slopes=None):
        if logits_soft_cap is not None:
            self._logits_soft_cap = logits_soft_cap
        qh, kh, vh = q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
        kh = kh.repeat_interleave(self._group, dim=1)
        vh = vh.repeat_interleave(self._group, dim=1)
        s = torch.matmul(qh, kh.transpose(-2, -1)) * sm_scale
        if self._use_logits_soft_cap:
            s = self._logits_soft_cap * torch.tanh(s / self._logits_soft_cap)
        bias = _alibi_bias(alibi_slopes, qh.shape[0], qh.shape[1], qh.shape[2], kh.shape[2], s.dtype, s.device)
        if bias is not None:
            s = s + bias
        s = s.masked_fill(~_visible(qh.shape[2], kh.shape[2], self._causal, self._window_size, s.device),
                          float('-inf'))
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        p = torch.exp(s - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
        return torch.matmul(p, vh).permute(0, 2, 1, 3)


def flash_planned_prefill_softcap(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                  softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Backend call: plan the prefill module once, then run it with the per-layer logit cap."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    wrapper = _PlannedPrefillWrapper()
    wrapper.plan(q.shape[2], k.shape[2], causal=causal, window_size=window_size,
                 logits_soft_cap=0.0)  # BUG: the cap is only given to run(); the planned module never applies it
    return wrapper.run(q, k, v, sm_scale, logits_soft_cap=softcap, alibi_slopes=alibi_slopes)


# --- kernel: flash_block_causal_alignment ---
def flash_block_causal_alignment(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Block-quantised style kernel: per (BLOCK_M x BLOCK_N) tile masks built from offs_m / offs_n."""
    BLOCK_M, BLOCK_N = 16, 16
    B, qo_len, Hq, D = q.shape
    kv_len, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    sm_scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    bias = _alibi_bias(alibi_slopes, B, Hq, qo_len, kv_len, q.dtype, q.device)
    left, right = window_size
    out = torch.zeros(B, Hq, qo_len, Dv, dtype=q.dtype, device=q.device)
    for m0 in range(0, qo_len, BLOCK_M):
        offs_m = torch.arange(m0, min(m0 + BLOCK_M, qo_len), device=q.device)
        m_i = torch.full((B, Hq, offs_m.numel(), 1), float('-inf'), dtype=q.dtype, device=q.device)
        l_i = torch.zeros_like(m_i)
        acc = torch.zeros(B, Hq, offs_m.numel(), Dv, dtype=q.dtype, device=q.device)
        for n0 in range(0, kv_len, BLOCK_N):
            offs_n = torch.arange(n0, min(n0 + BLOCK_N, kv_len), device=q.device)
            s = torch.matmul(qh[:, :, offs_m], kh[:, :, offs_n].transpose(-2, -1)) * sm_scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if bias is not None:
                s = s + bias[:, :, offs_m][:, :, :, offs_n]
            keep = torch.ones(offs_m.numel(), offs_n.numel(), dtype=torch.bool, device=q.device)
            if causal:
                causal_ok = offs_n[None, :] <= offs_m[:, None]  # BUG: top-left
                keep = keep & causal_ok
            if left >= 0:
                keep = keep & (offs_n[None, :] >= offs_m[:, None] + (kv_len - qo_len) - left)
            if right >= 0:
                keep = keep & (offs_n[None, :] <= offs_m[:, None] + (kv_len - qo_len) + right)
            s = s.masked_fill(~keep, float('-inf'))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            corr = torch.exp(m_i - m_safe)
            p = torch.exp(s - m_safe)
            l_i = l_i * corr + p.sum(dim=-1, keepdim=True)
            acc = acc * corr + torch.matmul(p, vh[:, :, offs_n])
            m_i = m_new
        out[:, :, offs_m] = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_qat_kwargs_scale ---
def _blockscaled_attn(q, k, v, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, **kwargs):
    scale = q.shape[-1] ** -0.5  # BUG: sm_scale in kwargs never read
    qh, kh, vh = (x.permute(0, 2, 1, 3) for x in (q, k, v))
    group = qh.shape[1] // kh.shape[1]
    kh, vh = kh.repeat_interleave(group, dim=1), vh.repeat_interleave(group, dim=1)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    bias = _alibi_bias(alibi_slopes, qh.shape[0], qh.shape[1], qh.shape[2], kh.shape[2], s.dtype, s.device)
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~_visible(qh.shape[2], kh.shape[2], causal, window_size, s.device), float('-inf'))
    m = s.amax(dim=-1, keepdim=True)
    p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    z = p.sum(dim=-1, keepdim=True)
    return torch.matmul(p / torch.where(z == 0, torch.ones_like(z), z), vh).permute(0, 2, 1, 3)


def flash_qat_kwargs_scale(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Inference backend wrapper that forwards the layer's softmax scale to the block-scaled kernel."""
    return _blockscaled_attn(q, k, v, causal=causal, window_size=window_size, softcap=softcap,
                             alibi_slopes=alibi_slopes, sm_scale=softmax_scale)


# --- kernel: flash_local_exact_window ---
def flash_local_exact_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Local-attention style masking: a causal mask and an exact-window mask combined into one mask."""
    b, n, h, dim_head = q.shape
    kv_n, kv_h = k.shape[1], k.shape[2]
    scale = dim_head ** -0.5 if softmax_scale is None else softmax_scale
    bq = q.permute(0, 2, 1, 3)
    bk = k.permute(0, 2, 1, 3).repeat_interleave(h // kv_h, dim=1)
    bv = v.permute(0, 2, 1, 3).repeat_interleave(h // kv_h, dim=1)
    sim = torch.einsum('bhid,bhjd->bhij', bq, bk) * scale
    if softcap > 0:
        sim = softcap * torch.tanh(sim / softcap)
    bias = _alibi_bias(alibi_slopes, b, h, n, kv_n, sim.dtype, sim.device)
    if bias is not None:
        sim = sim + bias
    bq_t = torch.arange(n, device=q.device) + (kv_n - n)
    bq_k = torch.arange(kv_n, device=q.device)
    look_backward, look_forward = window_size
    mask = None
    if causal:
        mask = bq_t[:, None] < bq_k[None, :]
    if look_backward >= 0:
        exact_window_mask = bq_k[None, :] < (bq_t[:, None] - look_backward)
        mask = exact_window_mask if mask is None else (mask & exact_window_mask)  # BUG: & instead of |
    if look_forward >= 0 and not causal:
        forward_mask = bq_k[None, :] > (bq_t[:, None] + look_forward)
        mask = forward_mask if mask is None else (mask | forward_mask)
    if mask is not None:
        sim = sim.masked_fill(mask, float('-inf'))
    m = sim.amax(dim=-1, keepdim=True)
    attn = torch.exp(sim - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    den = attn.sum(dim=-1, keepdim=True)
    attn = attn / torch.where(den == 0, torch.ones_like(den), den)
    out = torch.einsum('bhij,bhjd->bhid', attn, bv)
    return out.permute(0, 2, 1, 3)


# --- kernel: flash_flattened_mha_output ---
def flash_flattened_mha_output(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Custom-op style attention writing each head's result into a preallocated output buffer."""
    b, s, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[2]
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    y = torch.empty_like(q)  # BUG: q's head_dim, not v's
    keep = _visible(s, k.shape[1], causal, window_size, q.device)
    bias = _alibi_bias(alibi_slopes, b, num_heads, s, k.shape[1], q.dtype, q.device)
    for h in range(num_heads):
        kvh = h // (num_heads // num_kv_heads)
        scores = torch.einsum('bid,bjd->bij', q[:, :, h], k[:, :, kvh]) * scale
        if softcap > 0:
            scores = softcap * torch.tanh(scores / softcap)
        if bias is not None:
            scores = scores + bias[:, h]
        scores = scores.masked_fill(~keep, float('-inf'))
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)
        probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
        y[:, :, h] = torch.einsum('bij,bjd->bid', probs, v[:, :, kvh])
    return y


# --- kernel: flash_rowwise_band_chunks ---
def flash_rowwise_band_chunks(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: per query row, visit only its visible key band [lo, hi] in chunks of 11 with an online softmax."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv, Dv = k.shape[1], k.shape[2], v.shape[-1]
    group = Hq // Hkv
    sm = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    off = Sk - Sq
    left, right = window_size
    kq = k.repeat_interleave(group, dim=2)
    vq = v.repeat_interleave(group, dim=2)
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        slopes = slopes.expand(B, Hq) if slopes.dim() == 1 else slopes
    out = torch.zeros(B, Sq, Hq, Dv, dtype=q.dtype, device=q.device)
    for i in range(Sq):
        lo = 0 if left < 0 else max(0, i + off - left)
        hi = Sk - 1
        if causal:
            hi = min(hi, i + off)
        if right >= 0:
            hi = min(hi, i + off + right)
        if hi < lo:
            continue
        m_i = torch.full((B, Hq), float('-inf'), dtype=q.dtype, device=q.device)
        l_i = torch.zeros(B, Hq, dtype=q.dtype, device=q.device)
        acc = torch.zeros(B, Hq, Dv, dtype=q.dtype, device=q.device)
        for j0 in range(lo, hi + 1, 11):
            j1 = min(j0 + 11, hi + 1)
            s = torch.einsum('bhd,bjhd->bhj', q[:, i], kq[:, j0:j1]) * sm
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if slopes is not None:
                dist = (i + off - torch.arange(j0, j1, device=q.device)).abs().to(q.dtype)
                s = s - slopes[:, :, None] * dist[None, None, :]
            m_new = torch.maximum(m_i, s.amax(dim=-1))
            corr = torch.exp(m_i - m_new)
            p = torch.exp(s - m_new[:, :, None])
            l_i = l_i * corr + p.sum(dim=-1)
            acc = acc * corr[:, :, None] + torch.einsum('bhj,bjhd->bhd', p, vq[:, j0:j1])
            m_i = m_new
        out[:, i] = acc / l_i[:, :, None]
    return out


# --- kernel: flash_split_kv_lse_merge ---
def flash_split_kv_lse_merge(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: split-KV into three uneven splits, partial outputs with their natural-log LSE, merged at the end."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    sm = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    kv_index = torch.arange(Hq, device=q.device) // (Hq // Hkv)
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).index_select(1, kv_index)
    vh = v.permute(0, 2, 1, 3).index_select(1, kv_index)
    keep = _visible(Sq, Sk, causal, window_size, q.device)
    bias = _alibi_bias(alibi_slopes, B, Hq, Sq, Sk, q.dtype, q.device)
    cuts = sorted({0, Sk // 4, (3 * Sk) // 5, Sk})
    outs, lses = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        s = torch.matmul(qh, kh[:, :, a:b].transpose(-2, -1)) * sm
        if softcap > 0:
            s = softcap * torch.tanh(s / softcap)
        if bias is not None:
            s = s + bias[..., a:b]
        s = s.masked_fill(~keep[:, a:b], float('-inf'))
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        p = torch.exp(s - lse.masked_fill(torch.isinf(lse), 0.0))
        outs.append(torch.matmul(p, vh[:, :, a:b]))
        lses.append(lse)
    lse_all = torch.logsumexp(torch.stack(lses), dim=0)
    lse_all = lse_all.masked_fill(torch.isinf(lse_all), 0.0)
    out = sum(o * torch.exp(lse - lse_all) for o, lse in zip(outs, lses))
    return out.permute(0, 2, 1, 3)


_FEATURES = ['causal', 'window', 'softcap', 'alibi', 'gqa', 'dv-ne-d']

CATALOG = [
    dict(name='flash-te-cu-seqlens-k-from-q', api='flash-attn', fn='flash_te_packed_cu_seqlens', correct=False,
         bug='key-offsets-from-query-lengths',
         parameter='the packed varlen call reuses cu_seqlens_q (offsets in steps of Sq) as cu_seqlens_k, so each '
                   'sequence reads the keys and values at the query offsets and with the query length. Triggers: '
                   'Sq < Sk, or Sq > Sk with B > 1 (a single sequence\'s over-long key slice is cut at its Sk keys)',
         source='NVIDIA/TransformerEngine#399', report='https://github.com/NVIDIA/TransformerEngine/pull/399',
         dtype='float64', features=_FEATURES),
    dict(name='flash-sglang-softcap-not-planned', api='flash-attn', fn='flash_planned_prefill_softcap',
         correct=False, bug='softcap-ignored',
         parameter='the logits soft-cap is passed only to run() while the module is planned with a cap of 0, so '
                   'the planned (uncapped) variant never applies softcap * tanh(s / softcap). Triggers: softcap > 0',
         source='sgl-project/sglang#33915', report='https://github.com/sgl-project/sglang/issues/33915',
         dtype='float64', features=_FEATURES),
    dict(name='flash-sageattn-causal-top-left', api='flash-attn', fn='flash_block_causal_alignment',
         correct=False, bug='causal-alignment-top-left',
         parameter='the tile causal mask is kv_idx <= q_idx (top-left) instead of kv_idx <= q_idx + kv_len - '
                   'qo_len (bottom-right); window and ALiBi keep the right offset. Triggers: causal with Sq != Sk',
         source='thu-ml/SageAttention#372', report='https://github.com/thu-ml/SageAttention/pull/372',
         dtype='float64', features=_FEATURES),
    dict(name='flash-fastvideo-sm-scale-swallowed', api='flash-attn', fn='flash_qat_kwargs_scale', correct=False,
         bug='explicit-scale-ignored',
         parameter='the softmax scale is handed to the block-scaled kernel through **kwargs, which it never reads: '
                   'the kernel always uses 1/sqrt(D). Triggers: softmax_scale given and different from 1/sqrt(D)',
         source='hao-ai-lab/FastVideo#1457', report='https://github.com/hao-ai-lab/FastVideo/pull/1457',
         dtype='float64', features=_FEATURES),
    dict(name='flash-localattn-window-and-causal', api='flash-attn', fn='flash_local_exact_window',
         correct=False, bug='mask-intersection-instead-of-union',
         parameter='the causal mask and the exact-window mask (keys further left than the window) are combined '
                   'with & instead of |, so a key is masked only if it is both in the future and outside the '
                   'window - nothing - and every key is attended. Triggers: causal=True together with a window '
                   'left >= 0',
         source='lucidrains/local-attention#5', report='https://github.com/lucidrains/local-attention/issues/5',
         dtype='float64', features=_FEATURES),
    dict(name='flash-trtllm-output-like-query', api='flash-attn', fn='flash_flattened_mha_output', correct=False,
         bug='output-buffer-query-head-dim',
         parameter='the output buffer is torch.empty_like(q), i.e. with the query head_dim, so writing the '
                   '(.., v_head_dim) results fails when Dv != D. Triggers: Dv != D',
         source='NVIDIA/TensorRT-LLM#4281', report='https://github.com/NVIDIA/TensorRT-LLM/pull/4281',
         dtype='float64', features=_FEATURES),
    dict(name='flash-rowwise-band-chunks', api='flash-attn', fn='flash_rowwise_band_chunks', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64', features=_FEATURES),
    dict(name='flash-split-kv-lse-merge', api='flash-attn', fn='flash_split_kv_lse_merge', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_FEATURES),
]
