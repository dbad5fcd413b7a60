"""Held-out attention kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask None or a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk); scale None means 1/sqrt(D). Returns (..., Sq, Dv) in the input dtype; a row with no kept key is zeros.
"""
import numpy as np


# --- kernel: attend_keep_mask_filled ---
def attend_keep_mask_filled(q, k, v, mask=None, scale=None):
    """Halo-style attention: fill the masked logits with -inf, then softmax."""
    dtype = q.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    sim = np.einsum('...id,...jd->...ij', q, k) * scale
    if mask is not None:
        mask = np.broadcast_to(mask, sim.shape)
        sim = np.where(mask, -np.inf, sim)  # BUG: masked_fill on the keep-mask itself (should be ~mask)
    row_max = sim.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    p = np.exp(sim - row_max)
    denom = p.sum(axis=-1, keepdims=True)
    attn = np.divide(p, denom, out=np.zeros_like(p), where=denom > 0)
    return np.einsum('...ij,...jd->...id', attn, v).astype(dtype)


# --- kernel: attend_finite_fill_value ---
def attend_finite_fill_value(q, k, v, mask=None, scale=None):
    """Scores masked with a large negative constant before a standard stable softmax."""
    dtype = q.dtype
    d_k = q.shape[-1]
    scale = 1.0 / np.sqrt(d_k) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        scores = np.where(mask, scores, -10000.0)  # BUG: finite fill; a row with no kept key becomes uniform
    peak = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(peak), peak, 0.0))
    total = weights.sum(axis=-1, keepdims=True)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    return np.matmul(weights, v).astype(dtype)


# --- kernel: attend_folded_heads_mask_repeat ---
def attend_folded_heads_mask_repeat(q, k, v, mask=None, scale=None):
    """Keras-style: heads folded into the batch axis (head-major), one batched matmul."""
    dtype = q.dtype
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    if q.ndim == 4:
        b, h = q.shape[:2]
        qs = q.transpose(1, 0, 2, 3).reshape(h * b, sq, d)
        ks = k.transpose(1, 0, 2, 3).reshape(h * b, sk, d)
        vs = v.transpose(1, 0, 2, 3).reshape(h * b, sk, dv)
        if mask is not None:
            mask = np.broadcast_to(mask, (b, h, sq, sk)).reshape(b * h, sq, sk)  # BUG: batch-major; scores head-major
    else:
        lead = q.shape[:-2]
        qs = q.reshape(-1, sq, d)
        ks = k.reshape(-1, sk, d)
        vs = v.reshape(-1, sk, dv)
        if mask is not None:
            mask = np.broadcast_to(mask, lead + (sq, sk)).reshape(-1, sq, sk)
    attn = np.matmul(qs, ks.transpose(0, 2, 1)) * scale
    if mask is not None:
        attn = np.where(mask, attn, -np.inf)
    mx = attn.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    attn = np.exp(attn - mx)
    tot = attn.sum(axis=-1, keepdims=True)
    attn = attn / np.where(tot > 0, tot, 1.0)
    out = np.matmul(attn, vs)
    if q.ndim == 4:
        out = out.reshape(h, b, sq, dv).transpose(1, 0, 2, 3)
    else:
        out = out.reshape(q.shape[:-2] + (sq, dv))
    return out.astype(dtype)


# --- kernel: attend_blocked_partial_tail ---
def attend_blocked_partial_tail(q, k, v, mask=None, scale=None):
    """Online softmax over key blocks of 64; keys padded with zeros up to a whole number of blocks."""
    BLOCK_N = 64
    dtype = q.dtype
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scale = d ** -0.5 if scale is None else scale
    n_blocks = -(-sk // BLOCK_N)
    pad = n_blocks * BLOCK_N - sk
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    k_pad = np.concatenate([np.broadcast_to(k, lead + (sk, d)), np.zeros(lead + (pad, d), k.dtype)], axis=-2)
    v_pad = np.concatenate([np.broadcast_to(v, lead + (sk, dv)), np.zeros(lead + (pad, dv), v.dtype)], axis=-2)
    keep = np.concatenate([keep, np.ones(lead + (sq, pad), dtype=bool)], axis=-1)  # BUG: partial tail block kept
    m_i = np.full(lead + (sq, 1), -np.inf)
    l_i = np.zeros(lead + (sq, 1))
    acc = np.zeros(lead + (sq, dv))
    for start in range(0, n_blocks * BLOCK_N, BLOCK_N):
        kb = k_pad[..., start:start + BLOCK_N, :]
        vb = v_pad[..., start:start + BLOCK_N, :]
        s = np.matmul(q, np.swapaxes(kb, -1, -2)) * scale
        s = np.where(keep[..., start:start + BLOCK_N], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isneginf(m_new), 0.0, m_new)
        alpha = np.exp(m_i - m_safe)
        p = np.exp(s - m_safe)
        l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, vb)
        m_i = m_new
    out = np.divide(acc, l_i, out=np.zeros_like(acc), where=l_i > 0)
    return out.astype(dtype)


# --- kernel: attend_scale_numerator_only ---
def attend_scale_numerator_only(q, k, v, mask=None, scale=None):
    """Softmax with the temperature folded into the exponent (zkml-style evaluate)."""
    dtype = q.dtype
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    x = np.matmul(q, np.swapaxes(k, -1, -2))
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    x_max = x.max(axis=-1, keepdims=True)
    x_max = np.where(np.isfinite(x_max), x_max, 0.0)
    num = np.exp(scale * (x - x_max))
    total = np.exp(x - x_max).sum(axis=-1, keepdims=True)  # BUG: normaliser summed without the scale
    weights = np.divide(num, total, out=np.zeros_like(num), where=total > 0)
    return np.matmul(weights, v).astype(dtype)


# --- kernel: attend_scale_from_model_dim ---
def attend_scale_from_model_dim(q, k, v, mask=None, scale=None):
    """Batched multi-head attention; heads laid out as (B, H, S, d_head) when 4-D."""
    dtype = q.dtype
    d_head = q.shape[-1]
    d_model = d_head * q.shape[-3] if q.ndim == 4 else d_head
    if scale is None:
        scale = 1.0 / np.sqrt(d_model)  # BUG: default scale from d_model = H * d_head instead of d_head
    dot = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        dot = np.where(mask, dot, -np.inf)
    peak = np.max(dot, axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    e = np.exp(dot - peak)
    z = e.sum(axis=-1, keepdims=True)
    w = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    return np.matmul(w, v).astype(dtype)


# --- kernel: attend_online_exp2_reverse_tiles ---
def attend_online_exp2_reverse_tiles(q, k, v, mask=None, scale=None):
    """Online softmax in base 2 over key tiles of 48 visited from the last tile to the first."""
    TILE = 48
    LOG2E = 1.4426950408889634
    dtype = q.dtype
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scale = d ** -0.5 if scale is None else scale
    qs = q.astype(np.float64) * (scale * LOG2E)
    keep = None if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    m_i = np.full(lead + (sq, 1), -np.inf)
    l_i = np.zeros(lead + (sq, 1))
    acc = np.zeros(lead + (sq, dv))
    starts = list(range(0, sk, TILE))
    for start in reversed(starts):
        stop = min(start + TILE, sk)
        s = np.matmul(qs, np.swapaxes(k[..., start:stop, :], -1, -2).astype(np.float64))
        if keep is not None:
            s = np.where(keep[..., start:stop], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        dead = np.isneginf(m_new)
        m_use = np.where(dead, 0.0, m_new)
        alpha = np.where(dead, 1.0, np.exp2(m_i - m_use))
        p = np.exp2(s - m_use)
        l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, v[..., start:stop, :].astype(np.float64))
        m_i = m_new
    out = np.divide(acc, l_i, out=np.zeros(acc.shape), where=l_i > 0)
    return out.astype(dtype)


# --- kernel: attend_query_chunks_logsumexp ---
def attend_query_chunks_logsumexp(q, k, v, mask=None, scale=None):
    """Query chunks of 17 rows; weights formed as exp(s - logsumexp(s)) in float64."""
    CHUNK = 17
    dtype = q.dtype
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    k64 = k.astype(np.float64)
    v64 = v.astype(np.float64)
    keep = None if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    out = np.zeros(lead + (sq, dv))
    for r0 in range(0, sq, CHUNK):
        r1 = min(r0 + CHUNK, sq)
        s = np.matmul(q[..., r0:r1, :].astype(np.float64), np.swapaxes(k64, -1, -2)) * scale
        if keep is not None:
            s = np.where(keep[..., r0:r1, :], s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        live = np.isfinite(m)
        m = np.where(live, m, 0.0)
        lse = m + np.log(np.where(live, np.exp(s - m).sum(axis=-1, keepdims=True), 1.0))
        w = np.where(live, np.exp(s - lse), 0.0)
        out[..., r0:r1, :] = np.matmul(w, v64)
    return out.astype(dtype)


CATALOG = [
    {
        "name": "np-halonet-keep-mask-filled",
        "api": "refimpl",
        "fn": "attend_keep_mask_filled",
        "correct": False,
        "bug": "keep-mask-not-inverted",
        "parameter": "the bool keep-mask is passed to masked_fill as is, so the kept keys get -inf and the dropped "
                     "ones stay (a row whose keys are all kept becomes empty, i.e. zeros). "
                     "Triggers: any mask with at least one kept key",
        "source": "lucidrains/halonet-pytorch#4",
        "report": "https://github.com/lucidrains/halonet-pytorch/issues/4",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-toynlp-finite-fill",
        "api": "refimpl",
        "fn": "attend_finite_fill_value",
        "correct": False,
        "bug": "finite-mask-fill-masked-row-mean",
        "parameter": "dropped scores are filled with -10000 instead of -inf: harmless on rows with a kept key, but a "
                     "row with no kept key softmaxes to uniform weights and returns the mean of V instead of zeros. "
                     "Triggers: a mask with a row that has no kept key",
        "source": "ai-glimpse/toynlp#50",
        "report": "https://github.com/ai-glimpse/toynlp/issues/50",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-keras-mask-batch-major",
        "api": "refimpl",
        "fn": "attend_folded_heads_mask_repeat",
        "correct": False,
        "bug": "folded-mask-order-mismatch",
        "parameter": "4-D inputs are folded head-major (h * B + b) for the batched matmul but the mask is expanded "
                     "batch-major (b * H + h), so a (batch, head) slice gets another slice's mask. "
                     "Triggers: 4-D input with B > 1 and H > 1 and a mask that differs between batches or heads",
        "source": "lsdefine/attention-is-all-you-need-keras#28",
        "report": "https://github.com/lsdefine/attention-is-all-you-need-keras/issues/28",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-flex-partial-tail-block",
        "api": "refimpl",
        "fn": "attend_blocked_partial_tail",
        "correct": False,
        "bug": "tail-block-padding-unmasked",
        "parameter": "keys are zero-padded to whole blocks of 64 and the padded tail of the last (partial) block is "
                     "treated as attendable: each padded key adds exp(0 - m) to the row's denominator with a zero "
                     "value, shrinking the output. Triggers: Sk not a multiple of 64 (rows with a kept key)",
        "source": "pytorch/pytorch#159247",
        "report": "https://github.com/pytorch/pytorch/issues/159247",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-deepprove-scale-numerator-only",
        "api": "refimpl",
        "fn": "attend_scale_numerator_only",
        "correct": False,
        "bug": "softmax-scale-missing-in-denominator",
        "parameter": "the scale multiplies the exponent of the numerator, exp(scale * x), but the normaliser sums "
                     "exp(x) unscaled, so the weights do not sum to one. Triggers: effective scale != 1 (scale=None "
                     "with D != 1, or an explicit scale other than 1)",
        "source": "Lagrange-Labs/deep-prove#132",
        "report": "https://github.com/Lagrange-Labs/deep-prove/pull/132",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-bert-scale-from-d-model",
        "api": "refimpl",
        "fn": "attend_scale_from_model_dim",
        "correct": False,
        "bug": "default-scale-from-model-dim",
        "parameter": "for 4-D (B, H, S, D) inputs the default scale is 1/sqrt(H * D) (d_model) instead of "
                     "1/sqrt(D) (d_model / h). Triggers: scale=None with a 4-D input and H > 1",
        "source": "brightmart/bert_language_understanding#9",
        "report": "https://github.com/brightmart/bert_language_understanding/issues/9",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-online-exp2-reverse-tiles",
        "api": "refimpl",
        "fn": "attend_online_exp2_reverse_tiles",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-query-chunks-logsumexp",
        "api": "refimpl",
        "fn": "attend_query_chunks_logsumexp",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
]
