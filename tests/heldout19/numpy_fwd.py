"""Held-out NumPy attention kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask is None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); scale=None means 1/sqrt(D). A row with no kept key returns zeros.
Six kernels carry one mistake each (each marked with a single BUG comment on its mistake line); two are correct.
"""
import numpy as np


# --- kernel: scaled_dot_product_masked_fill ---
def scaled_dot_product_masked_fill(q, k, v, mask=None, scale=None):
    """Recommender-style attention layer: masked_fill with -inf, then softmax."""
    d_k = q.shape[-1]
    if scale is None:
        scale = d_k ** -0.5
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = scores - scores.max(axis=-1, keepdims=True)
        weights = np.exp(scores)
        weights = weights / weights.sum(axis=-1, keepdims=True)  # BUG: no NaN-to-zero; an all-masked row stays NaN
    out = np.matmul(weights, v)
    return out.astype(q.dtype, copy=False)


# --- kernel: fast_softmax_first_element ---
def fast_softmax_first_element(q, k, v, mask=None, scale=None):
    """Block-reduce softmax that shifts each row by a cheap reference value before exp."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    x = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        c = x[..., :1]  # BUG: rows shifted by their first score, not their maximum (overflow; -inf if key 0 masked)
        e = np.exp(x - c)
        batch_sum = e.sum(axis=-1, keepdims=True)
        ok = batch_sum > 0
        y = np.where(ok, e / np.where(ok, batch_sum, 1), 0)
    out = np.matmul(y, v)
    return out.astype(q.dtype, copy=False)


# --- kernel: padding_mask_expand_dims ---
def padding_mask_expand_dims(q, k, v, mask=None, scale=None):
    """Transformer layer that turns a key-padding mask (..., 1, Sk) back into a per-key mask."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    attention = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim >= 2 and mask.shape[-2] == 1:
            padding_mask = mask[..., 0, :]
            mask = padding_mask[..., :, np.newaxis]  # BUG: expanded along the query axis, not the key axis
        attention = np.where(mask, attention, -np.inf)
    row_max = attention.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0)
    weights = np.exp(attention - row_max)
    total = weights.sum(axis=-1, keepdims=True)
    weights = weights / np.where(total > 0, total, 1)
    return np.matmul(weights, v).astype(q.dtype, copy=False)


# --- kernel: pairwise_mask_from_seq_id ---
def pairwise_mask_from_seq_id(q, k, v, mask=None, scale=None):
    """Protein-LM style layer that builds the (L, L) mask from per-token sequence ids."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim >= 2 and mask.shape[-2] == 1 and q.shape[-2] == k.shape[-2]:
            seq_id = mask[..., 0, :]
            mask = seq_id[..., :, None] == seq_id[..., None, :]  # BUG: pairs padding with padding, not with kept keys
    logits = np.einsum("...qd,...kd->...qk", q, k) * scale
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    m = np.max(logits, axis=-1, keepdims=True)
    m = np.where(m == -np.inf, 0, m)
    p = np.exp(logits - m)
    z = p.sum(axis=-1, keepdims=True)
    p = p / np.where(z == 0, 1, z)
    return np.einsum("...qk,...kd->...qd", p, v).astype(q.dtype, copy=False)


# --- kernel: self_attention_diag_mask ---
def self_attention_diag_mask(q, k, v, mask=None, scale=None):
    """Reading-comprehension style self-attention with an optional diagonal mask."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    score = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(score.shape, dtype=bool)
    if mask is not None:
        keep = keep & mask
    enable_diag_mask = True  # BUG: diagonal masking is left on, so query i may never attend key i
    if enable_diag_mask:
        keep = keep & ~np.eye(score.shape[-2], score.shape[-1], dtype=bool)
    score = np.where(keep, score, -np.inf)
    has_key = keep.any(axis=-1, keepdims=True)
    score = score - np.where(has_key, score.max(axis=-1, keepdims=True), 0)
    prob = np.where(keep, np.exp(score), 0)
    prob = prob / np.where(has_key, prob.sum(axis=-1, keepdims=True), 1)
    return np.matmul(prob, v).astype(q.dtype, copy=False)


# --- kernel: episode_attention_softmax_dim ---
def _masked_softmax(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isneginf(m), 0, m)
    e = np.exp(x - m)
    s = np.sum(e, axis=axis, keepdims=True)
    return e / np.where(s > 0, s, 1)


def episode_attention_softmax_dim(q, k, v, mask=None, scale=None):
    """Episodic-memory style attention gate: scores for every fact, then a softmax."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    g = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        g = np.where(mask, g, -np.inf)
    g = _masked_softmax(g, axis=0)  # BUG: normalised over the leading (batch) axis instead of the key axis
    return np.matmul(g, v).astype(q.dtype, copy=False)


# --- kernel: attend_query_key_tiles_online ---
def attend_query_key_tiles_online(q, k, v, mask=None, scale=None):
    """Query tiles of 24 rows, key tiles of 17 columns, online (running max / sum) softmax."""
    dt = q.dtype
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    scale = dt.type(scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    if mask is not None:
        keep_all = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    out = np.zeros(lead + (sq, dv), dtype=dt)
    for r0 in range(0, sq, 24):
        r1 = min(r0 + 24, sq)
        qt = qb[..., r0:r1, :]
        m = np.full(lead + (r1 - r0, 1), -np.inf, dtype=dt)
        l_sum = np.zeros(lead + (r1 - r0, 1), dtype=dt)
        acc = np.zeros(lead + (r1 - r0, dv), dtype=dt)
        for c0 in range(0, sk, 17):
            c1 = min(c0 + 17, sk)
            s = np.matmul(qt, np.swapaxes(kb[..., c0:c1, :], -1, -2)) * scale
            if mask is not None:
                s = np.where(keep_all[..., r0:r1, c0:c1], s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            safe = np.where(np.isneginf(m_new), 0, m_new)
            alpha = np.where(np.isneginf(m), 0, np.exp(m - safe))
            p = np.exp(s - safe)
            l_sum = l_sum * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, vb[..., c0:c1, :])
            m = m_new
        out[..., r0:r1, :] = np.where(l_sum > 0, acc / np.where(l_sum > 0, l_sum, 1), 0)
    return out


# --- kernel: attend_chunked_logaddexp ---
def attend_chunked_logaddexp(q, k, v, mask=None, scale=None):
    """Row log-sum-exp reduced with np.logaddexp over key chunks of 9, weights exp(s - lse)."""
    dt = q.dtype
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    s = np.einsum("...id,...jd->...ij", q, k) * dt.type(scale)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    sk = s.shape[-1]
    lse = np.full(s.shape[:-1], -np.inf, dtype=dt)
    for c0 in range(0, sk, 9):
        lse = np.logaddexp(lse, np.logaddexp.reduce(s[..., c0:c0 + 9], axis=-1))
    finite = np.isfinite(lse)[..., None]
    w = np.where(finite, np.exp(s - np.where(finite, lse[..., None], 0)), 0)
    return np.einsum("...ij,...jd->...id", w, v).astype(dt, copy=False)


CATALOG = [
    dict(name="np-rechorus-masked-fill-nan-rows", api="refimpl", fn="scaled_dot_product_masked_fill",
         correct=False, bug="fully-masked-row-nan",
         parameter="scores are filled with -inf where masked and normalised with a plain max-subtracted softmax "
                   "that is never cleaned up: a row whose keys are all masked becomes NaN instead of zeros. "
                   "Triggers: a mask with a query row that keeps no key",
         source="THUwangcy/ReChorus#8", report="https://github.com/THUwangcy/ReChorus/issues/8",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-migraphx-fast-softmax-first-element", api="refimpl", fn="fast_softmax_first_element",
         correct=False, bug="softmax-shift-by-first-element",
         parameter="each score row is shifted by its first element instead of its maximum before exp: exp "
                   "overflows to inf when a later score exceeds the first by more than ~88 (float32), and a row "
                   "whose key 0 is masked (-inf) yields inf/NaN and comes back as zeros. Triggers: a mask that "
                   "drops key 0 in a row with other kept keys, or float32 scores exceeding the row's first score "
                   "by more than ~88",
         source="ROCm/AMDMIGraphX#1290", report="https://github.com/ROCm/AMDMIGraphX/pull/1290",
         dtype="float32", features=["mask", "dv-ne-d"]),
    dict(name="np-kerasio-padding-mask-query-axis", api="refimpl", fn="padding_mask_expand_dims",
         correct=False, bug="padding-mask-wrong-axis",
         parameter="a key-padding mask of shape (..., 1, Sk) is squeezed and re-expanded along the query axis "
                   "(..., Sk, 1) instead of the key axis (..., 1, Sk): padded positions blank whole query rows and "
                   "every key stays visible (shape error or wrong shape when Sq != Sk). Triggers: a mask with a "
                   "singleton query axis that drops at least one key",
         source="keras-team/keras-io#1046", report="https://github.com/keras-team/keras-io/pull/1046",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-esm-pairwise-seq-id-mask", api="refimpl", fn="pairwise_mask_from_seq_id",
         correct=False, bug="padding-pairs-attend-each-other",
         parameter="for self-attention (Sq == Sk) a key-padding mask (..., 1, Sk) is turned into a pairwise mask "
                   "with seq_id[:, None] == seq_id[None, :], so a query at a padded position attends the padded "
                   "keys only instead of the kept keys (kept query rows are right; a zero-length sequence "
                   "attends every key). Triggers: Sq == Sk with a singleton-query-axis mask that drops a key",
         source="Biohub/esm#299", report="https://github.com/Biohub/esm/issues/299",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-readingcomp-diag-mask-left-on", api="refimpl", fn="self_attention_diag_mask",
         correct=False, bug="diagonal-masked",
         parameter="a diagonal mask is applied on top of the given mask, so query i never attends key i (the "
                   "switch that should disable it for self-attention is left on). Triggers: any row i whose key "
                   "i exists and is kept",
         source="stevezheng23/reading_comprehension_tf#217",
         report="https://github.com/stevezheng23/reading_comprehension_tf/pull/217",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-dmn-softmax-leading-axis", api="refimpl", fn="episode_attention_softmax_dim",
         correct=False, bug="softmax-over-leading-axis",
         parameter="the attention gates are normalised with a softmax over axis 0 (the batch axis; the query "
                   "axis for 2-D inputs) instead of the key axis. Triggers: always (rows with a kept key)",
         source="therne/dmn-tensorflow#6", report="https://github.com/therne/dmn-tensorflow/issues/6",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-query-key-tiles-online", api="refimpl", fn="attend_query_key_tiles_online",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-chunked-logaddexp", api="refimpl", fn="attend_chunked_logaddexp",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["mask", "dv-ne-d"]),
]
