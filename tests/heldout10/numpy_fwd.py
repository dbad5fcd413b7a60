"""Held-out attention kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask None or a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk); scale None means 1/sqrt(D). A row with no kept key returns zeros. See README.md.
"""
import numpy as np


# --- kernel: attend_pad_mask_query_axis ---
def attend_pad_mask_query_axis(q, k, v, mask=None, scale=None):
    """Tutorial-transformer style: a key-padding mask is turned back into token validity and re-expanded."""
    d_k = q.shape[-1]
    if scale is None:
        scale = 1.0 / np.sqrt(d_k)
    score = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim >= 2 and mask.shape[-2] == 1:
            # key-padding mask (..., 1, Sk): recover per-token validity (..., Sk)
            valid = mask[..., 0, :]
            mask = valid[..., :, None]  # BUG: unsqueeze(3)-style expansion puts token validity on the query axis
        score = np.where(mask, score, -np.inf)
    row_max = np.max(score, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    p = np.exp(score - row_max)
    denom = np.sum(p, axis=-1, keepdims=True)
    out = np.matmul(p, v)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, out / np.where(denom > 0, denom, 1), 0)
    return out.astype(q.dtype)


# --- kernel: attend_vit_softmax_dim ---
def attend_vit_softmax_dim(q, k, v, mask=None, scale=None):
    """ViT-notebook style self-attention with an explicit softmax helper."""
    head_dim = q.shape[-1]
    scale = head_dim ** -0.5 if scale is None else scale

    def softmax(x, axis):
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        e = np.exp(x - m)
        s = np.sum(e, axis=axis, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(s > 0, e / np.where(s > 0, s, 1), 0)

    attn = np.matmul(q, np.swapaxes(k, -2, -1)) * scale
    if mask is not None:
        attn = np.where(mask, attn, -np.inf)
    attn = softmax(attn, axis=-2)  # BUG: normalised over the query axis instead of the key axis (dim=-1)
    return np.matmul(attn, v).astype(q.dtype)


# --- kernel: attend_scale_default_zero ---
def attend_scale_default_zero(q, k, v, mask=None, scale=None):
    """Backend op whose signature uses 0.0 as the "default scale" sentinel."""
    sm_scale = 0.0 if scale is None else float(scale)  # 0.0 means "use 1/sqrt(head_dim)" in the op signature
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm_scale  # BUG: the 0.0 sentinel is applied literally
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    w = np.exp(scores - m)
    l_sum = np.sum(w, axis=-1, keepdims=True)
    safe = np.where(l_sum > 0, l_sum, 1.0)
    out = np.where(l_sum > 0, np.matmul(w, v) / safe, 0.0)
    return out.astype(q.dtype)


# --- kernel: attend_bool_mask_as_float ---
def attend_bool_mask_as_float(q, k, v, mask=None, scale=None):
    """Decoder-style attention that turns the mask into an additive float mask."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        attn_mask = np.asarray(mask).astype(q.dtype)  # BUG: bool keep-mask cast to 0/1 floats and added: nothing masked
        scores = scores + attn_mask
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    s = np.sum(e, axis=-1, keepdims=True)
    out = np.matmul(e, v) / np.where(s > 0, s, 1.0)
    return np.where(s > 0, out, 0.0).astype(q.dtype)


# --- kernel: attend_half_sim_einsum ---
def attend_half_sim_einsum(q, k, v, mask=None, scale=None):
    """Latent-diffusion CrossAttention style: einsum similarity, softmax, einsum with v."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    sim = np.einsum("...id,...jd->...ij", q.astype(np.float16), k.astype(np.float16)).astype(q.dtype)  # BUG: fp16 q.k
    sim = sim * scale
    if mask is not None:
        max_neg_value = -np.finfo(sim.dtype).max
        sim = np.where(mask, sim, max_neg_value)
        dead = ~np.any(np.broadcast_to(mask, sim.shape), axis=-1, keepdims=True)
    else:
        dead = np.zeros(sim.shape[:-1] + (1,), dtype=bool)
    sim = sim - np.max(sim, axis=-1, keepdims=True)
    attn = np.exp(sim)
    attn = attn / np.sum(attn, axis=-1, keepdims=True)
    out = np.einsum("...ij,...jd->...id", attn, v)
    return np.where(dead, 0.0, out).astype(q.dtype)


# --- kernel: attend_folded_heads_reshape ---
def attend_folded_heads_reshape(q, k, v, mask=None, scale=None):
    """Keras-transformer style: fold the leading dims into one batch axis with reshape, attend, unfold."""
    d_k = q.shape[-1]
    lead = q.shape[:-2]
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    if scale is None:
        scale = 1.0 / np.sqrt(d_k)
    k = np.broadcast_to(k, lead + k.shape[-2:])
    v = np.broadcast_to(v, lead + v.shape[-2:])
    qf = q.reshape(-1, sq, d_k)
    kf = k.reshape(-1, sk, d_k)
    vf = v.reshape(-1, sk, d_k)  # BUG: values reshaped with the key head dim d_k instead of their own width
    attn = np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale
    if mask is not None:
        keep = np.broadcast_to(mask, lead + (sq, sk)).reshape(-1, sq, sk)
        attn = np.where(keep, attn, -np.inf)
    m = np.max(attn, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(attn - m)
    s = np.sum(e, axis=-1, keepdims=True)
    out = np.matmul(e / np.where(s > 0, s, 1.0), vf)
    return out.reshape(lead + (sq, dv)).astype(q.dtype)


# --- kernel: attend_online_exp2_tiles40 ---
def attend_online_exp2_tiles40(q, k, v, mask=None, scale=None):
    """Correct: online softmax over key tiles of 40 in the exp2 domain (log2(e) folded into the scale once)."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    qs = q * (scale * np.log2(np.e))
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=q.dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=q.dtype)
    acc = np.zeros(lead + (sq, v.shape[-1]), dtype=q.dtype)
    for start in range(0, sk, 40):
        stop = min(start + 40, sk)
        s = np.matmul(qs, np.swapaxes(k[..., start:stop, :], -1, -2))
        if keep is not None:
            s = np.where(keep[..., start:stop], s, -np.inf)
        m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.exp2(m_i - m_safe)
        p = np.exp2(s - m_safe)
        l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, v[..., start:stop, :])
        m_i = m_new
    out = np.where(l_i > 0, acc / np.where(l_i > 0, l_i, 1.0), 0.0)
    return out.astype(q.dtype)


# --- kernel: attend_split_kv_merge3 ---
def attend_split_kv_merge3(q, k, v, mask=None, scale=None):
    """Correct: three key splits, each normalised on its own, merged with their log-sum-exps."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    outs, lses = [], []
    for idx in np.array_split(np.arange(sk), 3):
        if idx.size == 0:
            continue
        s = np.matmul(q, np.swapaxes(k[..., idx, :], -1, -2)) * scale
        s = np.broadcast_to(s, lead + (sq, idx.size))
        if keep is not None:
            s = np.where(keep[..., idx], s, -np.inf)
        m = np.max(s, axis=-1, keepdims=True)
        m_safe = np.where(np.isfinite(m), m, 0.0)
        p = np.exp(s - m_safe)
        l_s = np.sum(p, axis=-1, keepdims=True)
        o = np.matmul(p, v[..., idx, :]) / np.where(l_s > 0, l_s, 1.0)
        with np.errstate(divide="ignore"):
            lse = np.where(l_s > 0, m_safe + np.log(np.where(l_s > 0, l_s, 1.0)), -np.inf)
        outs.append(o)
        lses.append(lse)
    lse_max = np.max(np.stack(lses), axis=0)
    lse_max_safe = np.where(np.isfinite(lse_max), lse_max, 0.0)
    num = np.zeros(lead + (sq, v.shape[-1]), dtype=q.dtype)
    den = np.zeros(lead + (sq, 1), dtype=q.dtype)
    for o, lse in zip(outs, lses):
        w = np.exp(lse - lse_max_safe)
        num = num + w * o
        den = den + w
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return out.astype(q.dtype)


# --- kernel: attend_query_chunks_f64 ---
def attend_query_chunks_f64(q, k, v, mask=None, scale=None):
    """Correct: queries in chunks of 17, intermediates in float64, cast back to the input dtype."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    q64, k64, v64 = q.astype(np.float64), k.astype(np.float64), v.astype(np.float64)
    out = np.zeros(lead + (sq, v.shape[-1]), dtype=np.float64)
    for start in range(0, sq, 17):
        stop = min(start + 17, sq)
        s = np.matmul(q64[..., start:stop, :], np.swapaxes(k64, -1, -2)) * scale
        s = np.broadcast_to(s, lead + (stop - start, sk))
        if keep is not None:
            s = np.where(keep[..., start:stop, :], s, -np.inf)
        m = np.max(s, axis=-1, keepdims=True)
        live = np.isfinite(m)
        e = np.exp(s - np.where(live, m, 0.0))
        z = np.sum(e, axis=-1, keepdims=True)
        out[..., start:stop, :] = np.where(live, np.matmul(e, v64) / np.where(live, z, 1.0), 0.0)
    return out.astype(q.dtype)


CATALOG = [
    dict(name="np-transformer-pad-mask-query-axis", api="refimpl", fn="attend_pad_mask_query_axis", correct=False,
         bug="padding-mask-on-query-axis",
         parameter="a key-padding mask (..., 1, Sk) is re-expanded as valid[..., :, None], i.e. on the query axis: "
                   "the row of a padded token is dropped and padded keys stay visible to every other row "
                   "(with Sq != Sk the expanded mask broadcasts to Sk query rows or not at all: wrong shape or "
                   "an error). "
                   "Triggers: a key-padding mask of shape (..., 1, Sk) that drops at least one key",
         source="hyunwoongko/transformer#40", report="https://github.com/hyunwoongko/transformer/pull/40",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-vit-softmax-query-axis", api="refimpl", fn="attend_vit_softmax_dim", correct=False,
         bug="softmax-over-query-axis",
         parameter="softmax taken over the query axis (-2) instead of the key axis (-1): each key's weights sum "
                   "to one across queries. Triggers: always (any Sq > 1 or more than one kept key)",
         source="nerminnuraydogan/vision-transformer#1",
         report="https://github.com/nerminnuraydogan/vision-transformer/issues/1",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-skainet-scale-sentinel-zero", api="refimpl", fn="attend_scale_default_zero", correct=False,
         bug="default-scale-sentinel-used-literally",
         parameter="scale=None mapped to the op's 0.0 \"default\" sentinel, which the kernel multiplies in "
                   "literally: every score is 0 and each row averages its kept values uniformly. "
                   "Triggers: scale=None (an explicit scale is honoured)",
         source="SKaiNET-developers/SKaiNET#880", report="https://github.com/SKaiNET-developers/SKaiNET/pull/880",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-depthcharge-bool-mask-added", api="refimpl", fn="attend_bool_mask_as_float", correct=False,
         bug="bool-mask-added-as-float",
         parameter="the bool keep-mask is cast to float (True = 1, False = 0) and added to the scores, so dropped "
                   "keys are never masked (kept ones get +1, a per-row constant when nothing is dropped). "
                   "Triggers: a mask that drops at least one key of a row",
         source="wfondrie/depthcharge#38", report="https://github.com/wfondrie/depthcharge/pull/38",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-sd-half-precision-sim", api="refimpl", fn="attend_half_sim_einsum", correct=False,
         bug="scores-computed-in-fp16",
         parameter="q and k cast to float16 for the similarity einsum whatever the input dtype: the scores carry "
                   "fp16 rounding (~1e-3 relative). Triggers: always at float32 resolution (q, k entries not "
                   "exactly representable in float16)",
         source="Stability-AI/stablediffusion#89", report="https://github.com/Stability-AI/stablediffusion/pull/89",
         dtype="float32", features=["mask", "dv-ne-d"]),
    dict(name="np-keras-values-reshaped-dk", api="refimpl", fn="attend_folded_heads_reshape", correct=False,
         bug="value-reshape-uses-key-head-dim",
         parameter="when folding the leading dims the values are reshaped to (-1, Sk, d_k) with the key head dim: "
                   "with Dv != D the value rows are re-chunked (garbage output) or the shapes no longer match "
                   "(error). Triggers: Dv != D",
         source="lsdefine/attention-is-all-you-need-keras#15",
         report="https://github.com/lsdefine/attention-is-all-you-need-keras/issues/15",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-online-exp2-tiles40", api="refimpl", fn="attend_online_exp2_tiles40", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-split-kv-merge3", api="refimpl", fn="attend_split_kv_merge3", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-query-chunks-f64", api="refimpl", fn="attend_query_chunks_f64", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
]
