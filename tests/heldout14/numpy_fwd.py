"""Held-out NumPy attention kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); scale None means 1/sqrt(D). Rows with no kept key return zeros.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import numpy as np


# --- kernel: attend_zeroed_padding_embeds ---
def attend_zeroed_padding_embeds(q, k, v, mask=None, scale=None):
    """Masking done the way a trainer zeroes the padded embeddings before attention."""
    d = q.shape[-1]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if mask is None:
        keep = np.ones(scores.shape, dtype=bool)
    else:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), scores.shape)
    scores = np.where(keep, scores, 0.0).astype(q.dtype)  # BUG: score 0 instead of -inf
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    den = np.sum(e, axis=-1, keepdims=True)
    probs = e / np.where(den == 0.0, 1.0, den)
    # the zeroed value embeddings of the padded keys contribute nothing
    probs = np.where(keep, probs, 0.0).astype(q.dtype)
    return np.matmul(probs, v).astype(q.dtype)


# --- kernel: attend_unscaled_scores ---
def attend_unscaled_scores(q, k, v, mask=None, scale=None):
    """Graph-builder style: QK^T, mask, softmax, times V."""
    kdim = q.shape[-1]
    scale = 1.0 / np.sqrt(kdim) if scale is None else float(scale)
    if not np.isfinite(scale):
        raise ValueError("scale must be finite")
    logits = np.matmul(q, np.swapaxes(k, -1, -2))  # BUG: the logits are never scaled
    if mask is not None:
        logits = np.where(np.asarray(mask, dtype=bool), logits, -np.inf)
    mx = np.max(logits, axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    w = np.exp(logits - mx)
    tot = w.sum(axis=-1, keepdims=True)
    w = w / np.where(tot > 0.0, tot, 1.0)
    return np.matmul(w.astype(q.dtype), v).astype(q.dtype)


# --- kernel: attend_embedding_dim_scale ---
def attend_embedding_dim_scale(q, k, v, mask=None, scale=None):
    """From-scratch multi-head block: heads are axis -3 of a (B, H, S, D) input."""
    head_size = q.shape[-1]
    if scale is None:
        n_embd = head_size * (q.shape[-3] if q.ndim == 4 else 1)
        scale = n_embd ** -0.5  # BUG: scaled by the embedding size n_head * head_size instead of head_size
    wei = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if mask is not None:
        wei = np.where(np.asarray(mask, dtype=bool), wei, -np.inf)
    top = np.max(wei, axis=-1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    wei = np.exp(wei - top)
    s = wei.sum(axis=-1, keepdims=True)
    s[s == 0.0] = 1.0
    return np.matmul((wei / s).astype(q.dtype), v).astype(q.dtype)


# --- kernel: attend_mask_without_head_axis ---
def attend_mask_without_head_axis(q, k, v, mask=None, scale=None):
    """ScaleDotProductAttention of a from-scratch Transformer: the pad mask is [batch, len_q, len_k]."""
    d_k = k.shape[-1]
    scale = 1.0 / np.sqrt(d_k) if scale is None else scale
    score = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        if keep.ndim == 4 and keep.shape[1] == 1:
            keep = keep[:, 0]  # heads share the pad mask: [batch, len_q, len_k]
            score = np.where(keep, score, -np.inf)  # BUG: mask batch axis meets the head axis
        else:
            score = np.where(keep, score, -np.inf)
    peak = np.max(score, axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    ex = np.exp(score - peak)
    z = ex.sum(axis=-1, keepdims=True)
    attn = ex / np.where(z == 0.0, 1.0, z)
    return np.matmul(attn.astype(q.dtype), v).astype(q.dtype)


# --- kernel: attend_reference_plain_division ---
def attend_reference_plain_division(q, k, v, mask=None, scale=None):
    """CPU reference of a tiled attention kernel: exp-normalise, then divide by the row sum."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    row_sum = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = e / row_sum  # BUG: a row with no kept key divides 0 by 0 and gives NaN instead of zeros
    return np.matmul(p.astype(q.dtype), v).astype(q.dtype)


# --- kernel: attend_bool_mask_added ---
def attend_bool_mask_added(q, k, v, mask=None, scale=None):
    """Eager attention that adds whatever mask it is handed to the scores."""
    scaling = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    attn_weights = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scaling)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        attn_weights = attn_weights + keep  # BUG: the bool keep-mask is added as +1/+0 instead of 0/-inf
        attn_weights = attn_weights.astype(q.dtype)
    mx = attn_weights.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    attn_weights = np.exp(attn_weights - mx)
    norm = attn_weights.sum(axis=-1, keepdims=True)
    attn_weights = attn_weights / np.where(norm == 0.0, 1.0, norm)
    return np.matmul(attn_weights.astype(q.dtype), v).astype(q.dtype)


# --- kernel: attend_two_pass_key_chunks ---
def attend_two_pass_key_chunks(q, k, v, mask=None, scale=None):
    """Pass 1: row max and row sum over key chunks of 19; pass 2: normalised weights times V per chunk."""
    dt = q.dtype
    scale = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), batch + (sq, sk))
    chunk = 19
    m = np.full(batch + (sq, 1), -np.inf, dtype=dt)
    for j0 in range(0, sk, chunk):
        s = np.matmul(q, np.swapaxes(k[..., j0:j0 + chunk, :], -1, -2)) * scale
        if keep is not None:
            s = np.where(keep[..., j0:j0 + chunk], s, -np.inf)
        m = np.maximum(m, np.max(s, axis=-1, keepdims=True))
    m_safe = np.where(np.isfinite(m), m, 0.0).astype(dt)
    den = np.zeros(batch + (sq, 1), dtype=dt)
    acc = np.zeros(batch + (sq, dv), dtype=dt)
    for j0 in range(0, sk, chunk):
        s = np.matmul(q, np.swapaxes(k[..., j0:j0 + chunk, :], -1, -2)) * scale
        if keep is not None:
            s = np.where(keep[..., j0:j0 + chunk], s, -np.inf)
        e = np.exp(s - m_safe).astype(dt)
        den = den + e.sum(axis=-1, keepdims=True)
        acc = acc + np.matmul(e, v[..., j0:j0 + chunk, :])
    out = acc / np.where(den > 0.0, den, 1.0)
    return out.astype(dt)


# --- kernel: attend_online_base2_tiles ---
def attend_online_base2_tiles(q, k, v, mask=None, scale=None):
    """Query tiles of 7, key tiles of 32, online softmax in base 2 (scores pre-multiplied by log2(e))."""
    dt = q.dtype
    sm = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    qk_scale = dt.type(sm * 1.4426950408889634)
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    qb = np.broadcast_to(q, batch + q.shape[-2:])
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    vb = np.broadcast_to(v, batch + v.shape[-2:])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), batch + (sq, sk))
    out = np.zeros(batch + (sq, dv), dtype=dt)
    bm, bn = 7, 32
    for i0 in range(0, sq, bm):
        qt = qb[..., i0:i0 + bm, :]
        rows = qt.shape[-2]
        m_i = np.full(batch + (rows, 1), -np.inf, dtype=dt)
        l_i = np.zeros(batch + (rows, 1), dtype=dt)
        acc = np.zeros(batch + (rows, dv), dtype=dt)
        for j0 in range(0, sk, bn):
            s = np.matmul(qt, np.swapaxes(kb[..., j0:j0 + bn, :], -1, -2)) * qk_scale
            if keep is not None:
                s = np.where(keep[..., i0:i0 + bm, j0:j0 + bn], s, -np.inf)
            m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
            m_use = np.where(np.isfinite(m_new), m_new, 0.0).astype(dt)
            alpha = np.exp2(np.where(np.isfinite(m_i), m_i, m_use) - m_use).astype(dt)
            p = np.exp2(s - m_use).astype(dt)
            l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, vb[..., j0:j0 + bn, :])
            m_i = m_new
        out[..., i0:i0 + bm, :] = acc / np.where(l_i > 0.0, l_i, 1.0)
    return out


CATALOG = [
    dict(name="np-aitoolkit-zeroed-embeds-mask", api="refimpl", fn="attend_zeroed_padding_embeds", correct=False,
         bug="masked-keys-scored-zero",
         parameter="dropped keys get the score of a zeroed key embedding (0) and a zeroed value instead of "
                   "a -inf score, so they still take part in the softmax denominator. "
                   "Triggers: a mask with a dropped key in a row that has a kept key",
         source="ostris/ai-toolkit#161", report="https://github.com/ostris/ai-toolkit/issues/161",
         dtype="float64", features=["mask"]),
    dict(name="np-flexflow-logits-unscaled", api="refimpl", fn="attend_unscaled_scores", correct=False,
         bug="scale-not-applied",
         parameter="the logits q k^T are never multiplied by the scale (neither 1/sqrt(D) nor an explicit one). "
                   "Triggers: any scale other than 1 (scale=None included)",
         source="flexflow/flexflow-train#467", report="https://github.com/flexflow/flexflow-train/issues/467",
         dtype="float64", features=["mask"]),
    dict(name="np-trainllm-embedding-size-scale", api="refimpl", fn="attend_embedding_dim_scale", correct=False,
         bug="default-scale-from-embedding-size",
         parameter="with scale=None the scores of a 4-D (B, H, S, D) input are scaled by (H * D)^-0.5, the "
                   "embedding size, instead of D^-0.5. Triggers: 4-D input with H > 1 and scale=None",
         source="FareedKhan-dev/train-llm-from-scratch#3",
         report="https://github.com/FareedKhan-dev/train-llm-from-scratch/pull/3",
         dtype="float64", features=["mask"]),
    dict(name="np-hyunwoongko-mask-missing-head-axis", api="refimpl", fn="attend_mask_without_head_axis",
         correct=False, bug="mask-batch-aligned-with-heads",
         parameter="a (B, 1, Sq, Sk) mask is squeezed to [batch, len_q, len_k] and applied to (B, H, Sq, Sk) "
                   "scores without a head axis, so NumPy broadcasting pairs the mask's batch axis with the head "
                   "axis (mask[b] applied to head b of every batch). "
                   "Triggers: a 4-D mask with a head axis of 1 and B > 1 (a broadcast error or a wrong output "
                   "shape unless B == H; wrong values when B == H and the mask differs between batches)",
         source="hyunwoongko/transformer#32", report="https://github.com/hyunwoongko/transformer/issues/32",
         dtype="float64", features=["mask"]),
    dict(name="np-cubecl-reference-masked-row-nan", api="refimpl", fn="attend_reference_plain_division",
         correct=False, bug="fully-masked-row-nan",
         parameter="the row is divided by its sum without a guard: a row with no kept key gives 0/0 = NaN "
                   "instead of zeros. Triggers: a mask with a row that has no kept key",
         source="tracel-ai/cubecl#1070", report="https://github.com/tracel-ai/cubecl/pull/1070",
         dtype="float64", features=["mask"]),
    dict(name="np-speculators-bool-mask-added", api="refimpl", fn="attend_bool_mask_added", correct=False,
         bug="bool-mask-added-as-float",
         parameter="the bool keep-mask is added to the scores (kept keys + 1, dropped keys + 0) instead of "
                   "filling the dropped keys with -inf. Triggers: a mask with at least one dropped key",
         source="vllm-project/speculators#691", report="https://github.com/vllm-project/speculators/pull/691",
         dtype="float64", features=["mask"]),
    dict(name="np-two-pass-key-chunks", api="refimpl", fn="attend_two_pass_key_chunks", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
    dict(name="np-online-base2-tiles", api="refimpl", fn="attend_online_base2_tiles", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
]
