"""Held-out attention kernels, API `flash-attn`: flash_attn_func's semantics on (B, S, H, D) torch tensors.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
deterministic=False, return_attn_probs=False); bottom-right alignment (off = Sk - Sq); softcap on the scaled scores
before masking; ALiBi -slope * |i + off - j| after the cap; query head h uses kv head h // (Hq // Hkv); rows with no
visible key are zeros. Six kernels carry one mistake each (marked by a BUG comment), two are correct. See README.md.
"""
import math

import torch


def _to_bhsd(q, k, v):
    hq, hkv = q.shape[2], k.shape[2]
    kv_idx = torch.arange(hq) // (hq // hkv)
    return q.transpose(1, 2), k.transpose(1, 2)[:, kv_idx], v.transpose(1, 2)[:, kv_idx]


def _alibi_bias(alibi_slopes, b, hq, sq, sk, dtype):
    if alibi_slopes is None:
        return torch.zeros((), dtype=dtype)
    slopes = alibi_slopes.to(dtype).reshape(-1, hq) if alibi_slopes.dim() == 2 else alibi_slopes.to(dtype)[None]
    dist = (torch.arange(sq)[:, None] + (sk - sq) - torch.arange(sk)[None, :]).abs().to(dtype)
    return -slopes[:, :, None, None] * dist


# --- kernel: flash_prefill_causal_predicate ---
def flash_prefill_causal_predicate(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Prefill kernel with the CPU-reference style causal/local predicate on (q_idx, kv_idx)."""
    b, qo_len, hq, d = q.shape
    kv_len = k.shape[1]
    sm_scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qt, kt, vt = _to_bhsd(q, k, v)
    s = qt @ kt.transpose(-2, -1) * sm_scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    s = s + _alibi_bias(alibi_slopes, b, hq, qo_len, kv_len, s.dtype)
    q_idx = torch.arange(qo_len)[:, None]
    kv_idx = torch.arange(kv_len)[None, :]
    masked = torch.zeros(qo_len, kv_len, dtype=torch.bool)
    if causal:
        masked |= kv_idx >= kv_len + q_idx - qo_len  # BUG: >= also masks the diagonal key (should be >)
    left, right = window_size
    if left >= 0:
        masked |= kv_idx < kv_len + q_idx - qo_len - left
    if right >= 0:
        masked |= kv_idx > kv_len + q_idx - qo_len + right
    s = s.masked_fill(masked, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    out = (p @ vt) / torch.where(z == 0, torch.ones_like(z), z)
    return out.transpose(1, 2)


# --- kernel: flash_attn_bias_to_device ---
class _LocalAttnBias:
    def __init__(self, left, right):
        self.left, self.right = left, right

    def _right(self):
        return self.right

    def materialize(self, sq, sk, dtype):
        i = torch.arange(sq)[:, None] + (sk - sq)
        j = torch.arange(sk)[None, :]
        keep = torch.ones(sq, sk, dtype=torch.bool)
        if self.left >= 0:
            keep &= j >= i - self.left
        if self._right() >= 0:
            keep &= j <= i + self._right()
        return torch.zeros(sq, sk, dtype=dtype).masked_fill(~keep, float("-inf"))

    def to(self, device):
        return _LocalAttnBias(self.left, self.right)  # BUG: rebuilds the parent class, so a causal bias loses causality


class _LocalCausalAttnBias(_LocalAttnBias):
    def _right(self):
        return 0 if self.right < 0 else min(self.right, 0)


def flash_attn_bias_to_device(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Attention-bias objects (local / local-causal) moved to the device before they are materialised."""
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    attn_bias = (_LocalCausalAttnBias if causal else _LocalAttnBias)(*window_size)
    attn_bias = attn_bias.to(q.device)
    qt, kt, vt = _to_bhsd(q, k, v)
    s = qt @ kt.transpose(-2, -1) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    s = s + _alibi_bias(alibi_slopes, b, hq, sq, sk, s.dtype) + attn_bias.materialize(sq, sk, s.dtype)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    return ((p @ vt) / torch.where(z == 0, torch.ones_like(z), z)).transpose(1, 2)


# --- kernel: flash_square_causal_offsets ---
def flash_square_causal_offsets(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Generic Triton-style kernel: offs_m / offs_n with the causal test written for self-attention."""
    b, seqlen_q, hq, d = q.shape
    seqlen_k = k.shape[1]
    sm_scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qt, kt, vt = _to_bhsd(q, k, v)
    offs_m = torch.arange(seqlen_q)[:, None]
    offs_n = torch.arange(seqlen_k)[None, :]
    qk = qt @ kt.transpose(-2, -1) * sm_scale
    if softcap > 0:
        qk = softcap * torch.tanh(qk / softcap)
    qk = qk + _alibi_bias(alibi_slopes, b, hq, seqlen_q, seqlen_k, qk.dtype)
    keep = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if causal:
        keep &= offs_m >= offs_n  # BUG: square self-attention alignment; the kernel's contract is q + Sk - Sq >= k
    if window_size[0] >= 0:
        keep &= offs_n >= offs_m + seqlen_k - seqlen_q - window_size[0]
    if window_size[1] >= 0:
        keep &= offs_n <= offs_m + seqlen_k - seqlen_q + window_size[1]
    qk = qk.masked_fill(~keep, float("-inf"))
    m_i = qk.amax(dim=-1, keepdim=True)
    m_i = torch.where(torch.isfinite(m_i), m_i, torch.zeros_like(m_i))
    p = torch.exp(qk - m_i)
    l_i = p.sum(dim=-1, keepdim=True)
    acc = p @ vt
    return (acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)).transpose(1, 2)


# --- kernel: flash_layer_default_scale ---
def _flash_attention_forward(q, k, v, causal, window_size, softcap, alibi_slopes, softmax_scale=None):
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    sm = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qt, kt, vt = _to_bhsd(q, k, v)
    s = qt @ kt.transpose(-2, -1) * sm
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    s = s + _alibi_bias(alibi_slopes, b, hq, sq, sk, s.dtype)
    i = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= j <= i
    if window_size[0] >= 0:
        keep &= j >= i - window_size[0]
    if window_size[1] >= 0:
        keep &= j <= i + window_size[1]
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    return ((p @ vt) / torch.where(z == 0, torch.ones_like(z), z)).transpose(1, 2)


def flash_layer_default_scale(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Model-layer FlashAttention2 class that forwards its softmax_scale to the shared helper."""
    return _flash_attention_forward(q, k, v, causal, window_size, softcap, alibi_slopes,
                                    softmax_scale=1.0 if softmax_scale is None else softmax_scale)  # BUG: 1.0 default


# --- kernel: flash_fmha_padded_keys ---
SEQ_PAD = 64


def flash_fmha_padded_keys(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Prefill kernel fed by a reshape-and-pad step: K and V zero-padded to a multiple of 64 tokens."""
    b, sq, hq, d = q.shape
    sk = k.shape[1]
    sk_pad = -(-sk // SEQ_PAD) * SEQ_PAD
    k_p = torch.nn.functional.pad(k, (0, 0, 0, 0, 0, sk_pad - sk))
    v_p = torch.nn.functional.pad(v, (0, 0, 0, 0, 0, sk_pad - sk))
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    qt, kt, vt = _to_bhsd(q, k_p, v_p)
    s = qt @ kt.transpose(-2, -1) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk_pad)[None, :]
    if alibi_slopes is not None:
        sl = alibi_slopes.to(s.dtype)
        sl = sl[None] if sl.dim() == 1 else sl
        s = s - sl[:, :, None, None] * (i - j).abs().to(s.dtype)
    kv_len = sk_pad  # BUG: the kernel gets the padded length, so the zero keys past Sk are never masked
    keep = torch.ones(sq, sk_pad, dtype=torch.bool) & (j < kv_len)
    if causal:
        keep &= j <= i
    if window_size[0] >= 0:
        keep &= j >= i - window_size[0]
    if window_size[1] >= 0:
        keep &= j <= i + window_size[1]
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    return ((p @ vt) / torch.where(z == 0, torch.ones_like(z), z)).transpose(1, 2)


# --- kernel: flash_upad_input ---
def _varlen_core(q_unpad, k_unpad, v_unpad, batch_size, sq, sk, scale, causal, window_size, softcap, bias):
    hq, hkv = q_unpad.shape[1], k_unpad.shape[1]
    qt = q_unpad.reshape(batch_size, sq, hq, -1).transpose(1, 2)
    kt = k_unpad.reshape(batch_size, sk, hkv, -1).transpose(1, 2)[:, torch.arange(hq) // (hq // hkv)]
    vt = v_unpad.reshape(batch_size, sk, hkv, -1).transpose(1, 2)[:, torch.arange(hq) // (hq // hkv)]
    s = qt @ kt.transpose(-2, -1) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    s = s + bias
    i = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= j <= i
    if window_size[0] >= 0:
        keep &= j >= i - window_size[0]
    if window_size[1] >= 0:
        keep &= j <= i + window_size[1]
    s = s.masked_fill(~keep, float("-inf"))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    z = p.sum(dim=-1, keepdim=True)
    return (p @ vt) / torch.where(z == 0, torch.ones_like(z), z)


def flash_upad_input(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                     alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """FlashAttention-2 module path that unpads Q/K/V to (total_tokens, heads, head_dim) for the varlen kernel."""
    batch_size, query_length, num_heads, head_dim = q.shape
    _, kv_seq_len, num_key_value_heads, _ = k.shape
    scale = 1.0 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    key_layer = k.reshape(batch_size * kv_seq_len, num_key_value_heads, head_dim)
    value_layer = v.reshape(batch_size * kv_seq_len, num_key_value_heads, v.shape[-1])
    query_layer = q.reshape(batch_size * query_length, num_key_value_heads, head_dim)  # BUG: kv head count
    bias = _alibi_bias(alibi_slopes, batch_size, num_heads, query_length, kv_seq_len, q.dtype)
    out = _varlen_core(query_layer, key_layer, value_layer, batch_size, query_length, kv_seq_len, scale, causal,
                       window_size, softcap, bias)
    return out.transpose(1, 2)


# --- kernel: flash_rowwise_band_base2 ---
def flash_rowwise_band_base2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: per query row, only the visible band of keys, visited in blocks of 20 with a base-2 online softmax."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    log2e = 1.4426950408889634
    group = hq // hkv
    if alibi_slopes is None:
        slopes = torch.zeros(b, hq, dtype=q.dtype)
    else:
        slopes = alibi_slopes.to(q.dtype).expand(b, hq) if alibi_slopes.dim() == 1 else alibi_slopes.to(q.dtype)
    kx = k[:, :, torch.arange(hq) // group]
    vx = v[:, :, torch.arange(hq) // group]
    out = torch.zeros(b, sq, hq, dv, dtype=q.dtype)
    left, right = window_size
    if causal:
        right = 0 if right < 0 else min(right, 0)
    for i in range(sq):
        c = i + sk - sq
        lo = 0 if left < 0 else max(0, c - left)
        hi = sk - 1 if right < 0 else min(sk - 1, c + right)
        if hi < lo:
            continue
        m = torch.full((b, hq), float("-inf"), dtype=q.dtype)
        lsum = torch.zeros(b, hq, dtype=q.dtype)
        acc = torch.zeros(b, hq, dv, dtype=q.dtype)
        for j0 in range(lo, hi + 1, 20):
            j1 = min(j0 + 20, hi + 1)
            s = torch.einsum("bhd,bjhd->bhj", q[:, i], kx[:, j0:j1]) * scale
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            dist = (torch.arange(j0, j1) - c).abs().to(q.dtype)
            t = (s - slopes[:, :, None] * dist) * log2e
            m_new = torch.maximum(m, t.amax(dim=-1))
            corr = torch.exp2(m - m_new)
            p = torch.exp2(t - m_new[..., None])
            lsum = lsum * corr + p.sum(dim=-1)
            acc = acc * corr[..., None] + torch.einsum("bhj,bjhd->bhd", p, vx[:, j0:j1])
            m = m_new
        out[:, i] = acc / lsum[..., None]
    return out


# --- kernel: flash_grouped_bias_softmax ---
def flash_grouped_bias_softmax(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Correct: grouped (B, Hkv, G, S, D) view against unexpanded K/V, one additive 0/-inf/ALiBi bias."""
    b, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g = hq // hkv
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    q5 = q.reshape(b, sq, hkv, g, d)
    s = torch.einsum("bihgd,bjhd->bhgij", q5, k) * scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(sq)[:, None] + (sk - sq)
    j = torch.arange(sk)[None, :]
    lo = torch.full_like(i, -1) if window_size[0] < 0 else i - window_size[0]
    hi = torch.full_like(i, sk) if window_size[1] < 0 else i + window_size[1]
    if causal:
        hi = torch.minimum(hi, i)
    bias = torch.zeros(sq, sk, dtype=q.dtype).masked_fill((j < lo) | (j > hi), float("-inf"))
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype)
        slopes = slopes.expand(b, hq) if slopes.dim() == 1 else slopes
        bias = bias - slopes.reshape(b, hkv, g, 1, 1) * (i - j).abs().to(q.dtype)
    s = s + bias
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    p = torch.exp(s - mx)
    z = p.sum(dim=-1, keepdim=True)
    o = torch.einsum("bhgij,bjhd->bihgd", p / torch.where(z == 0, torch.ones_like(z), z), v)
    return o.reshape(b, sq, hq, dv)


_SRC = "https://github.com/"

CATALOG = [
    dict(name="flash-flashinfer-causal-diagonal-masked", api="flash-attn", fn="flash_prefill_causal_predicate",
         correct=False, bug="causal-diagonal-excluded",
         parameter="the causal predicate masks kv_idx >= kv_len + q_idx - qo_len instead of >, so the diagonal key "
                   "j = i + off is hidden from every row (a row whose only key it is becomes empty). Triggers: "
                   "causal=True",
         source="flashinfer-ai/flashinfer#348", report=_SRC + "flashinfer-ai/flashinfer/pull/348", dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-xformers-bias-to-loses-causal", api="flash-attn", fn="flash_attn_bias_to_device",
         correct=False, bug="causal-dropped-on-bias-conversion",
         parameter="the causal local bias is moved with a .to() inherited from the non-causal parent, which rebuilds "
                   "the parent class: the causal right bound is lost (window left bound kept). Triggers: "
                   "causal=True with a key j > i + off in range and inside the window",
         source="facebookresearch/xformers#1185", report=_SRC + "facebookresearch/xformers/issues/1185",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-ffpa-square-causal-alignment", api="flash-attn", fn="flash_square_causal_offsets",
         correct=False, bug="causal-alignment-top-left",
         parameter="the causal test is offs_m >= offs_n (square self-attention, top-left) while windows and ALiBi "
                   "use the bottom-right offset Sk - Sq. Triggers: causal=True with Sq != Sk",
         source="xlite-dev/ffpa-attn#300", report=_SRC + "xlite-dev/ffpa-attn/pull/300", dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-phi-softmax-scale-default-one", api="flash-attn", fn="flash_layer_default_scale",
         correct=False, bug="default-scale-one",
         parameter="the layer passes softmax_scale=1.0 when none is given instead of None, so the scores are not "
                   "scaled by 1/sqrt(D). Triggers: softmax_scale=None with two or more visible keys in a row",
         source="huggingface/transformers#28537", report=_SRC + "huggingface/transformers/pull/28537",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-trtllm-padded-keys-unmasked", api="flash-attn", fn="flash_fmha_padded_keys", correct=False,
         bug="padded-keys-attended",
         parameter="K and V are zero-padded to a multiple of 64 tokens and the kernel is given the padded length, "
                   "so the zero keys past Sk (score 0 before softcap/ALiBi, value 0) join every row they are not "
                   "hidden from by causal or the window. Triggers: Sk % 64 != 0 with a padded position inside a "
                   "row's causal/window bounds",
         source="NVIDIA/TensorRT-LLM#18111", report=_SRC + "NVIDIA/TensorRT-LLM/pull/18111", dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-hf-upad-query-kv-heads", api="flash-attn", fn="flash_upad_input", correct=False,
         bug="query-reshaped-with-kv-heads",
         parameter="the query is unpadded to (total, num_key_value_heads, head_dim), the kv head count instead of "
                   "the query's: an invalid reshape (error) whenever Hq != Hkv. Triggers: Hq != Hkv",
         source="huggingface/transformers#26490", report=_SRC + "huggingface/transformers/pull/26490",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-rowwise-band-base2", api="flash-attn", fn="flash_rowwise_band_base2", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-grouped-bias-softmax", api="flash-attn", fn="flash_grouped_bias_softmax", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
]
