"""Held-out NumPy forward kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask None or a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk); scale None means 1/sqrt(D). Returns (..., Sq, Dv) in the input dtype, zeros for a row with no kept
key. Six kernels carry one mistake each (one marked line), two are correct alternative implementations.
"""
import math

import numpy as np


# --- kernel: att_softmax_then_mask ---
def att_softmax_then_mask(q, k, v, mask=None, scale=None):
    """AttModel-style attention: softmax over every key, then the attention mask multiplies the weights."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    dot = np.matmul(q, np.swapaxes(k, -1, -2)) * dtype.type(scale)
    dot = dot - dot.max(axis=-1, keepdims=True)
    weight = np.exp(dot)
    weight = weight / weight.sum(axis=-1, keepdims=True)
    if mask is not None:
        att_masks = np.broadcast_to(np.asarray(mask, dtype=bool), weight.shape).astype(dtype)
        weight = weight * att_masks  # BUG: kept weights not renormalised
    return np.matmul(weight, v).astype(dtype)


# --- kernel: self_attention_heads_merged ---
def self_attention_heads_merged(q, k, v, mask=None, scale=None):
    """Multi-head self-attention module style: per-head scores, heads merged into the embedding, then split again."""
    dtype = q.dtype
    lead = q.shape[:-2]
    queries = q.reshape((-1,) + q.shape[-3:]) if q.ndim >= 4 else q.reshape((-1, 1) + q.shape[-2:])
    keys = np.broadcast_to(k, lead + k.shape[-2:]).reshape(queries.shape[:2] + k.shape[-2:])
    values = np.broadcast_to(v, lead + v.shape[-2:]).reshape(queries.shape[:2] + v.shape[-2:])
    n, heads, q_len, head_dim = queries.shape
    v_dim = values.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(head_dim)
    energy = np.matmul(queries, np.swapaxes(keys, -1, -2)) * dtype.type(scale)
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + energy.shape[-2:]).reshape(energy.shape)
        energy = np.where(keep, energy, -np.inf)
    row_max = energy.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    attention = np.exp(energy - row_max)
    total = attention.sum(axis=-1, keepdims=True)
    attention = np.divide(attention, total, out=np.zeros_like(attention), where=total > 0)
    out = np.matmul(attention, values)  # (n, heads, q_len, v_dim)
    merged = out.reshape(n, q_len, heads * v_dim)  # BUG: reshape without transpose
    out = merged.reshape(n, q_len, heads, v_dim).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(out.reshape(lead + (q_len, v_dim))).astype(dtype)


# --- kernel: key_masking_from_key_sums ---
def key_masking_from_key_sums(q, k, v, mask=None, scale=None):
    """Transformer (TF-style) key masking: padded keys are set to a very small number before the softmax."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    outputs = np.matmul(q, np.swapaxes(k, -1, -2)) * dtype.type(scale)
    key_masks = np.sign(np.abs(np.sum(k, axis=-1)))[..., None, :] != 0  # BUG: mask argument unused
    key_masks = np.broadcast_to(key_masks, outputs.shape)
    paddings = np.full(outputs.shape, -np.inf, dtype=dtype)
    outputs = np.where(key_masks, outputs, paddings)
    row_max = outputs.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    outputs = np.exp(outputs - row_max)
    total = outputs.sum(axis=-1, keepdims=True)
    outputs = np.divide(outputs, total, out=np.zeros_like(outputs), where=total > 0)
    return np.matmul(outputs, v).astype(dtype)


# --- kernel: query_chunk_attention_masked ---
def _dynamic_slice(x, start, size, axis):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, start + size)
    return x[tuple(index)]


def query_chunk_attention_masked(q, k, v, mask=None, scale=None):
    """Memory-efficient attention (Rabe & Staats): key chunks summarised, then merged with the global max."""
    dtype = q.dtype
    num_kv, k_features = k.shape[-2], k.shape[-1]
    key_chunk_size = min(32, num_kv)
    if scale is None:
        scale = 1.0 / math.sqrt(k_features)
    query = q * dtype.type(scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    mask_b = None
    if mask is not None:
        mask_b = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (q.shape[-2], num_kv))
    max_neg = -np.finfo(dtype).max

    def summarize_chunk(key, value, mask_chunk):
        attn_weights = np.matmul(query, np.swapaxes(key, -1, -2))
        if mask_chunk is not None:
            attn_weights = np.where(mask_chunk, attn_weights, max_neg)
        max_score = attn_weights.max(axis=-1, keepdims=True)
        exp_weights = np.exp(attn_weights - max_score)
        exp_values = np.matmul(exp_weights, value)
        return exp_values, exp_weights.sum(axis=-1, keepdims=True), max_score

    chunk_values, chunk_weights, chunk_max = [], [], []
    for start in range(0, num_kv, key_chunk_size):
        key_chunk = _dynamic_slice(k, start, key_chunk_size, -2)
        value_chunk = _dynamic_slice(v, start, key_chunk_size, -2)
        mask_chunk = None
        if mask_b is not None:
            mask_chunk = _dynamic_slice(v, start, key_chunk_size, -2)  # BUG: sliced from the values
        values, weights, maxes = summarize_chunk(key_chunk, value_chunk, mask_chunk)
        chunk_values.append(values)
        chunk_weights.append(weights)
        chunk_max.append(maxes)
    chunk_max = np.stack(chunk_max)
    global_max = chunk_max.max(axis=0, keepdims=True)
    max_diffs = np.exp(chunk_max - global_max)
    all_values = (np.stack(chunk_values) * max_diffs).sum(axis=0)
    all_weights = (np.stack(chunk_weights) * max_diffs).sum(axis=0)
    out = all_values / all_weights
    if mask_b is not None:
        out = np.where(mask_b.any(axis=-1)[..., None], out, 0.0)
    return out.astype(dtype)


# --- kernel: device_softmax_attention ---
def _finite_row_max(scores):
    row_max = scores.max(axis=-1, keepdims=True)
    return np.where(np.isfinite(row_max), row_max, 0.0)


def device_softmax_attention(q, k, v, mask=None, scale=None):
    """Device-op style: matmul, masked fill, softmax op over the last dim, matmul."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * dtype.type(scale)
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    e = np.exp(scores)  # BUG: no max subtraction
    denom = e.sum(axis=-1, keepdims=True)
    weights = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)
    return np.matmul(weights, v).astype(dtype)


# --- kernel: offset_attention_double_norm ---
def offset_attention_double_norm(q, k, v, mask=None, scale=None):
    """Point-cloud-transformer style: softmax over the keys, then the map is normalised once more."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    energy = np.matmul(q, np.swapaxes(k, -1, -2)) * dtype.type(scale)
    if mask is not None:
        energy = np.where(np.asarray(mask, dtype=bool), energy, -np.inf)
    row_max = energy.max(axis=-1, keepdims=True)
    attention = np.exp(energy - np.where(np.isfinite(row_max), row_max, 0.0))
    attention = attention / np.maximum(attention.sum(axis=-1, keepdims=True), np.finfo(dtype).tiny)
    attention = attention / (1e-9 + attention.sum(axis=-2, keepdims=True))  # BUG: query axis
    return np.matmul(attention, v).astype(dtype)


# --- kernel: attend_two_pass_key_chunks ---
def attend_two_pass_key_chunks(q, k, v, mask=None, scale=None):
    """Correct: first pass takes each row's max over key chunks of 23, second pass sums and accumulates."""
    dtype = q.dtype
    sk = k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (q.shape[-2], sk))
    chunks = [(s, min(s + 23, sk)) for s in range(0, sk, 23)]
    row_max = np.full(lead + (q.shape[-2], 1), -np.inf, dtype=dtype)
    for s, e in chunks:
        sc = np.matmul(q, np.swapaxes(k[..., s:e, :], -1, -2)) * dtype.type(scale)
        if keep is not None:
            sc = np.where(keep[..., s:e], sc, -np.inf)
        row_max = np.maximum(row_max, sc.max(axis=-1, keepdims=True))
    safe_max = np.where(np.isfinite(row_max), row_max, 0.0)
    total = np.zeros(lead + (q.shape[-2], 1), dtype=dtype)
    acc = np.zeros(lead + (q.shape[-2], v.shape[-1]), dtype=dtype)
    for s, e in chunks:
        sc = np.matmul(q, np.swapaxes(k[..., s:e, :], -1, -2)) * dtype.type(scale)
        p = np.exp(sc - safe_max)
        if keep is not None:
            p = np.where(keep[..., s:e], p, 0.0)
        total = total + p.sum(axis=-1, keepdims=True)
        acc = acc + np.matmul(p, v[..., s:e, :])
    out = np.divide(acc, total, out=np.zeros_like(acc), where=total > 0)
    return out.astype(dtype)


# --- kernel: attend_gathered_rows ---
def attend_gathered_rows(q, k, v, mask=None, scale=None):
    """Correct: per query row, gather the kept keys only and softmax over that short list."""
    dtype = q.dtype
    sq, sk = q.shape[-2], k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    qf = np.broadcast_to(q, lead + q.shape[-2:]).reshape((-1,) + q.shape[-2:])
    kf = np.broadcast_to(k, lead + k.shape[-2:]).reshape((-1,) + k.shape[-2:])
    vf = np.broadcast_to(v, lead + v.shape[-2:]).reshape((-1,) + v.shape[-2:])
    if mask is None:
        keep = np.ones((qf.shape[0], sq, sk), dtype=bool)
    else:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk)).reshape((-1, sq, sk))
    out = np.zeros((qf.shape[0], sq, vf.shape[-1]), dtype=dtype)
    for b in range(qf.shape[0]):
        for i in range(sq):
            idx = np.flatnonzero(keep[b, i])
            if idx.size == 0:
                continue
            s = (kf[b, idx] @ qf[b, i]) * dtype.type(scale)
            w = np.exp(s - s.max())
            out[b, i] = (w / w.sum()) @ vf[b, idx]
    return out.reshape(lead + (sq, vf.shape[-1]))


CATALOG = [
    dict(name="np-selfcritical-mask-after-softmax", api="refimpl", fn="att_softmax_then_mask", correct=False,
         bug="mask-after-softmax-unnormalised",
         parameter="the softmax runs over every key and the keep-mask then multiplies the weights; the kept weights "
                   "are not renormalised, so each row's weights sum to the softmax mass of its kept keys. "
                   "Triggers: a mask that drops a key in a row that keeps at least one key",
         source="ruotianluo/self-critical.pytorch#89",
         report="https://github.com/ruotianluo/self-critical.pytorch/issues/89",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-mlcollection-heads-reshaped", api="refimpl", fn="self_attention_heads_merged", correct=False,
         bug="heads-merged-by-reshape",
         parameter="the (n, heads, len, dv) result is merged to (n, len, heads * dv) by a plain reshape, without "
                   "moving the head axis behind the sequence axis, then split back correctly: rows and heads are "
                   "scrambled. Triggers: 4-D input with H > 1 and Sq > 1",
         source="aladdinpersson/Machine-Learning-Collection#165",
         report="https://github.com/aladdinpersson/Machine-Learning-Collection/issues/165",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-kyubyong-key-mask-from-sums", api="refimpl", fn="key_masking_from_key_sums", correct=False,
         bug="key-mask-derived-from-keys",
         parameter="the key mask is derived as sign(abs(sum(k, -1))) (a key is padding if its row sums to zero) and "
                   "the mask argument is never used. Triggers: a mask that drops a key whose row in k is not all "
                   "zero",
         source="Kyubyong/transformer#33", report="https://github.com/Kyubyong/transformer/issues/33",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-linearmem-mask-chunk-from-values", api="refimpl", fn="query_chunk_attention_masked",
         correct=False, bug="mask-chunk-sliced-from-values",
         parameter="in the key-chunk loop (chunks of 32) the mask chunk is sliced from the value tensor instead of "
                   "the mask, so any call with a mask fails (a broadcast error, or a value-shaped condition). "
                   "Triggers: a mask argument is given",
         source="CHARM-Tx/linear_mem_attention_pytorch#1",
         report="https://github.com/CHARM-Tx/linear_mem_attention_pytorch/pull/1",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-ttmetal-softmax-no-max", api="refimpl", fn="device_softmax_attention", correct=False,
         bug="softmax-without-max-subtraction",
         parameter="the softmax is exp(s) / sum(exp(s)) without subtracting the row max: exp overflows to inf and "
                   "the row becomes NaN once a scaled score exceeds log(max float) (about 88.7 in float32). "
                   "Triggers: float32 with a scaled score above 88.7 (the extreme-logits case)",
         source="tenstorrent/tt-metal#12661", report="https://github.com/tenstorrent/tt-metal/issues/12661",
         dtype="float32", features=["mask", "dv-ne-d"]),
    dict(name="np-pct-second-norm-query-axis", api="refimpl", fn="offset_attention_double_norm", correct=False,
         bug="extra-normalisation-over-query-axis",
         parameter="after the softmax over the keys the attention map is divided by 1e-9 + its sum over the query "
                   "axis, so every key column sums to one instead of every row. Triggers: always (rows with a kept "
                   "key)",
         source="MenghaoGuo/PCT#13", report="https://github.com/MenghaoGuo/PCT/issues/13",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-two-pass-key-chunks", api="refimpl", fn="attend_two_pass_key_chunks", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-gathered-rows", api="refimpl", fn="attend_gathered_rows", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
]
