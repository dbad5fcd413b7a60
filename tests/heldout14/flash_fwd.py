"""Held-out torch kernels, API `flash-attn`: the semantics of flash_attn_func.

fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
alibi_slopes=None, deterministic=False, return_attn_probs=False), q (B, Sq, Hq, D), k (B, Sk, Hkv, D),
v (B, Sk, Hkv, Dv). Bottom-right alignment (off = Sk - Sq): causal keeps j <= i + off, a window (left, right)
keeps i + off - left <= j <= i + off + right (-1 unbounded); softcap on the scaled scores before masking;
ALiBi adds -slope * |i + off - j| after the cap; query head h uses kv head h // (Hq // Hkv); rows with no
visible key are zeros. Returns (B, Sq, Hq, Dv).
Six kernels carry one mistake each (marked by a BUG comment), two are correct.
"""
import torch


def _band_keep(sq, sk, causal, window_size):
    """(Sq, Sk) bool: the keys each query row may see, bottom-right aligned."""
    left, right = window_size
    if causal:
        right = 0
    off = sk - sq
    i = torch.arange(sq)[:, None] + off
    j = torch.arange(sk)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


def _softmax_or_zero(s):
    """Softmax over the last axis; a row that is all -inf gives zeros."""
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    z = e.sum(dim=-1, keepdim=True)
    return e / torch.where(z > 0, z, torch.ones_like(z))


# --- kernel: flash_decode_cap_after_mask ---
def flash_decode_cap_after_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Decode-style kernel: logits masked in the score loop, the logits cap applied when they are read back."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    keep = _band_keep(Sq, Sk, causal, window_size)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, float("-inf"))
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)  # BUG: the cap runs after masking, turning -inf into a finite -softcap
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype).reshape(-1, Hq, 1, 1)
        pos = (torch.arange(Sq)[:, None] + (Sk - Sq) - torch.arange(Sk)[None, :]).abs().to(q.dtype)
        s = s - slopes * pos
    p = _softmax_or_zero(s)
    return torch.matmul(p, vh).transpose(1, 2).contiguous()


# --- kernel: flash_ulysses_repeat_kv_layout ---
def _repeat_kv(hidden_states, n_rep):
    """(batch, num_key_value_heads, slen, head_dim) -> (batch, num_attention_heads, slen, head_dim)."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def flash_ulysses_repeat_kv_layout(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                   window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                   return_attn_probs=False):
    """Sequence-parallel wrapper: kv heads are repeated before the all-to-all, then a GQA-aware core runs."""
    n_rep = q.shape[2] // k.shape[2]
    if n_rep > 1:
        k, v = (_repeat_kv(t, n_rep) for t in (k, v))  # BUG: k, v are (B, S, H, D): repeats the sequence axis
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = 1.0 / D ** 0.5 if softmax_scale is None else softmax_scale
    group = Hq // Hkv
    out = torch.empty(B, Sq, Hq, v.shape[-1], dtype=q.dtype)
    keep = _band_keep(Sq, Sk, causal, window_size)
    dist = (torch.arange(Sq)[:, None] + (Sk - Sq) - torch.arange(Sk)[None, :]).abs().to(q.dtype)
    for h in range(Hq):
        kv = h // group
        s = torch.einsum("bqd,bkd->bqk", q[:, :, h], k[:, :, kv]) * scale
        if softcap > 0.0:
            s = softcap * torch.tanh(s / softcap)
        if alibi_slopes is not None:
            sl = alibi_slopes.to(q.dtype)
            sl = sl[h].reshape(1, 1, 1) if sl.dim() == 1 else sl[:, h].reshape(-1, 1, 1)
            s = s - sl * dist
        s = s.masked_fill(~keep, float("-inf"))
        out[:, :, h] = torch.einsum("bqk,bkd->bqd", _softmax_or_zero(s), v[:, :, kv])
    return out


# --- kernel: flash_cute_window_resolve ---
def flash_cute_window_resolve(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Interface layer that normalises the legacy (-1, -1) window before the causal rewrite."""
    left, right = window_size
    if left + right < 0:  # BUG: any pair with a negative sum is read as 'no window', e.g. (0, -1) or (-1, 0)
        left, right = -1, -1
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = softmax_scale if softmax_scale is not None else D ** -0.5
    keep = _band_keep(Sq, Sk, causal, (left, right))
    qh = q.permute(0, 2, 1, 3)
    kh = k.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.permute(0, 2, 1, 3).repeat_interleave(Hq // Hkv, dim=1)
    s = qh @ kh.transpose(-1, -2) * scale
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = alibi_slopes.to(q.dtype).reshape(-1, Hq, 1, 1)
        rel = torch.arange(Sq)[:, None] + (Sk - Sq) - torch.arange(Sk)[None, :]
        s = s - sl * rel.abs().to(q.dtype)
    s = torch.where(keep, s, torch.full_like(s, float("-inf")))
    return (_softmax_or_zero(s) @ vh).permute(0, 2, 1, 3).contiguous()


# --- kernel: flash_local_window_excludes_current ---
def flash_local_window_excludes_current(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                        window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                        return_attn_probs=False):
    """GroupQueryAttention-style local attention: window_size converted to a local_window_size."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    left, right = window_size
    if causal:
        right = 0
    past = torch.arange(Sq)[:, None] + (Sk - Sq)
    key_pos = torch.arange(Sk)[None, :]
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if right >= 0:
        keep &= key_pos <= past + right
    if left >= 0:
        local_window_size = left + 1  # the window counts the current token
        keep &= key_pos >= past - local_window_size  # BUG: applied as if excluding the current token
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0.0:
        s = torch.tanh(s / softcap) * softcap
    if alibi_slopes is not None:
        s = s - alibi_slopes.to(q.dtype).reshape(-1, Hq, 1, 1) * (past - key_pos).abs().to(q.dtype)
    s = s.masked_fill(~keep, float("-inf"))
    return torch.matmul(_softmax_or_zero(s), vh).transpose(1, 2).contiguous()


# --- kernel: flash_alibi_positions_unshifted ---
def flash_alibi_positions_unshifted(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                    window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
                                    return_attn_probs=False):
    """Relative-position bias built from query and key positions, memory keys in front of the queries."""
    B, i, Hq, D = q.shape
    j, Hkv = k.shape[1], k.shape[2]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(Hq // Hkv, dim=1)
    sim = torch.einsum("bhid,bhjd->bhij", qh, kh) * scale
    if softcap > 0.0:
        sim = softcap * torch.tanh(sim / softcap)
    if alibi_slopes is not None:
        q_pos = torch.arange(i)  # BUG: query positions not shifted by the memory length j - i (bottom-right alignment)
        k_pos = torch.arange(j)
        rel = (q_pos[:, None] - k_pos[None, :]).abs().to(q.dtype)
        sim = sim - alibi_slopes.to(q.dtype).reshape(-1, Hq, 1, 1) * rel
    sim = sim.masked_fill(~_band_keep(i, j, causal, window_size), float("-inf"))
    attn = _softmax_or_zero(sim)
    return torch.einsum("bhij,bhjd->bhid", attn, vh).transpose(1, 2).contiguous()


# --- kernel: flash_sliding_window_negated ---
def flash_sliding_window_negated(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                 softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Sliding-window block that hands its window to a flash-attn style band as a backwards offset."""
    left, right = window_size
    if (left, right) != (-1, -1):
        band = (-left, right)  # BUG: the left extent is passed negated; the band reads a negative left as unbounded
    else:
        band = (left, right)
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    keep = _band_keep(Sq, Sk, causal, band)
    g = Hq // Hkv
    qg = q.reshape(B, Sq, Hkv, g, D).permute(0, 2, 3, 1, 4)
    kg = k.permute(0, 2, 1, 3)[:, :, None]
    vg = v.permute(0, 2, 1, 3)[:, :, None]
    s = torch.matmul(qg, kg.transpose(-1, -2)) * scale
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        sl = alibi_slopes.to(q.dtype).reshape(-1, Hkv, g, 1, 1)
        dist = (torch.arange(Sq)[:, None] + (Sk - Sq) - torch.arange(Sk)[None, :]).abs().to(q.dtype)
        s = s - sl * dist
    s = s.masked_fill(~keep, float("-inf"))
    o = torch.matmul(_softmax_or_zero(s), vg)
    return o.permute(0, 3, 1, 2, 4).reshape(B, Sq, Hq, v.shape[-1])


# --- kernel: flash_tiled_online_base2 ---
def flash_tiled_online_base2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                             softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Query tiles of 11, key tiles of 17, online softmax in base 2, bounds from bottom-right positions."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    Dv = v.shape[-1]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    log2e = 1.4426950408889634
    left, right = window_size
    if causal:
        right = 0
    off = Sk - Sq
    g = Hq // Hkv
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2)[:, torch.arange(Hq) // g]
    vh = v.transpose(1, 2)[:, torch.arange(Hq) // g]
    slopes = None
    if alibi_slopes is not None:
        slopes = alibi_slopes.to(q.dtype).reshape(-1, Hq, 1, 1)
    out = torch.zeros(B, Hq, Sq, Dv, dtype=q.dtype)
    BM, BN = 11, 17
    for i0 in range(0, Sq, BM):
        i1 = min(i0 + BM, Sq)
        rows = torch.arange(i0, i1)[:, None] + off
        m_i = torch.full((B, Hq, i1 - i0, 1), float("-inf"), dtype=q.dtype)
        l_i = torch.zeros(B, Hq, i1 - i0, 1, dtype=q.dtype)
        acc = torch.zeros(B, Hq, i1 - i0, Dv, dtype=q.dtype)
        for j0 in range(0, Sk, BN):
            j1 = min(j0 + BN, Sk)
            cols = torch.arange(j0, j1)[None, :]
            s = torch.matmul(qh[:, :, i0:i1], kh[:, :, j0:j1].transpose(-1, -2)) * scale
            if softcap > 0.0:
                s = softcap * torch.tanh(s / softcap)
            if slopes is not None:
                s = s - slopes * (rows - cols).abs().to(q.dtype)
            ok = torch.ones(i1 - i0, j1 - j0, dtype=torch.bool)
            if left >= 0:
                ok &= cols >= rows - left
            if right >= 0:
                ok &= cols <= rows + right
            s = s.masked_fill(~ok, float("-inf")) * log2e
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_use = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            alpha = torch.where(torch.isfinite(m_i), torch.exp2(m_i - m_use), torch.zeros_like(m_i))
            p = torch.exp2(s - m_use)
            l_i = l_i * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + torch.matmul(p, vh[:, :, j0:j1])
            m_i = m_new
        out[:, :, i0:i1] = acc / torch.where(l_i > 0, l_i, torch.ones_like(l_i))
    return out.transpose(1, 2).contiguous()


# --- kernel: flash_split_kv_halves ---
def flash_split_kv_halves(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                          softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Two key splits with their own max and sum, combined by rescaling to the common max."""
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    scale = D ** -0.5 if softmax_scale is None else softmax_scale
    keep = _band_keep(Sq, Sk, causal, window_size)
    qh = q.transpose(1, 2)
    idx = torch.div(torch.arange(Hq), Hq // Hkv, rounding_mode="floor")
    kh = k.transpose(1, 2).index_select(1, idx)
    vh = v.transpose(1, 2).index_select(1, idx)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        rel = torch.arange(Sq)[:, None] + (Sk - Sq) - torch.arange(Sk)[None, :]
        s = s + alibi_slopes.to(q.dtype).reshape(-1, Hq, 1, 1) * (-rel.abs().to(q.dtype))
    s = s.masked_fill(~keep, float("-inf"))
    half = (Sk + 1) // 2
    parts = []
    for a, b in ((0, half), (half, Sk)):
        part = s[..., a:b]
        if part.shape[-1] == 0:
            continue
        m = part.amax(dim=-1, keepdim=True)
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        e = torch.exp(part - m_safe)
        parts.append((m, e.sum(dim=-1, keepdim=True), torch.matmul(e, vh[:, :, a:b])))
    m_all = parts[0][0]
    for m, _, _ in parts[1:]:
        m_all = torch.maximum(m_all, m)
    m_all_safe = torch.where(torch.isfinite(m_all), m_all, torch.zeros_like(m_all))
    den = torch.zeros_like(m_all)
    num = torch.zeros(B, Hq, Sq, v.shape[-1], dtype=q.dtype)
    for m, l_part, o_part in parts:
        w = torch.where(torch.isfinite(m), torch.exp(m - m_all_safe), torch.zeros_like(m))
        den = den + w * l_part
        num = num + w * o_part
    out = num / torch.where(den > 0, den, torch.ones_like(den))
    return out.transpose(1, 2).contiguous()


CATALOG = [
    dict(name="flash-flashinfer-cap-after-mask", api="flash-attn", fn="flash_decode_cap_after_mask",
         correct=False, bug="softcap-after-masking",
         parameter="the softcap tanh is applied after the causal/window masking, so a masked key's -inf "
                   "becomes -softcap and the masked keys get weight. "
                   "Triggers: softcap > 0 with a key hidden by causal or a window",
         source="flashinfer-ai/flashinfer#350", report="https://github.com/flashinfer-ai/flashinfer/pull/350",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-veomni-repeat-kv-bshd", api="flash-attn", fn="flash_ulysses_repeat_kv_layout",
         correct=False, bug="repeat-kv-wrong-layout",
         parameter="the (B, H, S, D) repeat_kv helper is applied to (B, S, H, D) keys and values, so each key is "
                   "repeated Hq // Hkv times along the sequence axis and the heads stay grouped; the softmax is "
                   "unchanged without positions, but causal, window and ALiBi positions use Sk * Hq // Hkv keys. "
                   "Triggers: Hkv < Hq with a causal, window or ALiBi position that matters (a one-query causal "
                   "decode sees every key either way)",
         source="ByteDance-Seed/VeOmni#162", report="https://github.com/ByteDance-Seed/VeOmni/pull/162",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-cute-window-negative-sum", api="flash-attn", fn="flash_cute_window_resolve",
         correct=False, bug="one-sided-window-dropped",
         parameter="a window whose two sides sum to a negative number is normalised to (-1, -1), so (0, -1) and "
                   "(-1, 0) lose their bounded side. Triggers: window (0, -1) or (-1, 0)",
         source="Dao-AILab/flash-attention#2490", report="https://github.com/Dao-AILab/flash-attention/pull/2490",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-ort-local-window-current-token", api="flash-attn", fn="flash_local_window_excludes_current",
         correct=False, bug="window-left-off-by-one",
         parameter="window left is turned into a local_window_size = left + 1 that counts the current token, "
                   "then applied as if it excluded it (j >= i + off - left - 1): one extra key on the left. "
                   "Triggers: window left >= 0 with key i + off - left - 1 inside the other bounds",
         source="microsoft/onnxruntime#25927", report="https://github.com/microsoft/onnxruntime/pull/25927",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-xtransformers-alibi-unshifted", api="flash-attn", fn="flash_alibi_positions_unshifted",
         correct=False, bug="alibi-query-positions-not-shifted",
         parameter="the ALiBi distance uses |i - j| instead of the bottom-right |i + Sk - Sq - j|: a per-row "
                   "constant (harmless) except for visible keys between i and i + Sk - Sq. "
                   "Triggers: alibi_slopes with Sq != Sk and a visible key j strictly between i and i + Sk - Sq",
         source="lucidrains/x-transformers#103", report="https://github.com/lucidrains/x-transformers/pull/103",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-hippogriff-window-negated", api="flash-attn", fn="flash_sliding_window_negated",
         correct=False, bug="window-left-negated",
         parameter="a set window is passed to the band as (-left, right): a left bound > 0 becomes unbounded and "
                   "an unbounded left (-1) becomes a bound of 1 key; left = 0 is unchanged. "
                   "Triggers: a window other than (-1, -1) with left != 0 whose left bound matters",
         source="proger/hippogriff#7", report="https://github.com/proger/hippogriff/issues/7",
         dtype="float64", features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-tiled-online-base2", api="flash-attn", fn="flash_tiled_online_base2", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
    dict(name="flash-split-kv-halves", api="flash-attn", fn="flash_split_kv_halves", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64",
         features=["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]),
]
