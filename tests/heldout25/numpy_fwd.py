"""Held-out attention kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv) NumPy arrays; `mask` is None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); `scale=None` means 1/sqrt(D). A row with no kept key returns zeros. Six kernels
carry one mistake each (marked by a BUG comment), two are correct. See README.md.
"""
import math

import numpy as np


# --- kernel: local_product_reshape ---
def local_product_reshape(q, k, v, mask=None, scale=None):
    """Folded (N*H, L, E) product in the style of a CUDA local-attention extension."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    L, E = q.shape[-2:]
    S, M = v.shape[-2:]
    nh = int(np.prod(lead)) if lead else 1
    softmax_temp = 1.0 / math.sqrt(E) if scale is None else scale
    queries = np.broadcast_to(q, lead + (L, E)).reshape(nh, L, E)
    keys = np.ascontiguousarray(np.broadcast_to(k, lead + (S, E)))
    keys = keys.reshape(nh, L, E)  # BUG: keys folded with the query length L instead of their own S
    values = np.broadcast_to(v, lead + (S, M)).reshape(nh, S, M)
    if mask is None:
        keep = np.ones((nh, L, S), dtype=bool)
    else:
        keep = np.broadcast_to(mask, lead + (L, S)).reshape(nh, L, S)
    qk = np.matmul(queries, np.swapaxes(keys, -1, -2)) * softmax_temp
    qk = np.where(keep, qk, -np.inf)
    row_max = qk.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    a = np.where(keep, np.exp(qk - row_max), 0.0)
    denom = a.sum(axis=-1, keepdims=True)
    a = a / np.where(denom == 0, 1.0, denom)
    out = np.matmul(a, values)
    return out.reshape(lead + (L, M)).astype(q.dtype, copy=False)


# --- kernel: heavy_hitter_softmax_then_mask ---
def _opt_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    s = e.sum(axis=-1, keepdims=True)
    return e / np.where(s == 0, 1.0, s)


def heavy_hitter_softmax_then_mask(q, k, v, mask=None, scale=None):
    """OPT-style attention that also keeps the normalised weights for heavy-hitter statistics."""
    head_dim = q.shape[-1]
    scaling = head_dim ** -0.5 if scale is None else scale
    attn_weights = np.matmul(q * scaling, np.swapaxes(k, -1, -2))
    if mask is None:
        attention_mask = np.ones(attn_weights.shape[-2:], dtype=bool)
    else:
        attention_mask = mask
    attn_probs = _opt_softmax(attn_weights)  # BUG: softmax taken before the mask; masked keys stay in the denominator
    attn_probs = np.where(attention_mask, attn_probs, 0.0)
    attn_output = np.matmul(attn_probs, v)
    return attn_output.astype(q.dtype, copy=False)


# --- kernel: staged_q_fixed_row_stride ---
HEAD_DIM_SMEM = 64


def staged_q_fixed_row_stride(q, k, v, mask=None, scale=None):
    """Split-KV style decode kernel that stages Q and K rows in a 64-wide scratch before the dot products."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    rows_q = (int(np.prod(lead)) if lead else 1) * sq
    rows_k = (int(np.prod(lead)) if lead else 1) * sk
    qs = np.zeros((rows_q, HEAD_DIM_SMEM), dtype=q.dtype)
    ks = np.zeros((rows_k, HEAD_DIM_SMEM), dtype=q.dtype)
    q_rows = np.ascontiguousarray(np.broadcast_to(q, lead + (sq, d)))
    qs.reshape(-1)[:q_rows.size] = q_rows.reshape(-1)  # BUG: copied with the hard-coded row stride 64, not D
    ks[:, :d] = np.broadcast_to(k, lead + (sk, d)).reshape(rows_k, d)
    sm_scale = 1.0 / math.sqrt(d) if scale is None else scale
    qs = qs.reshape(lead + (sq, HEAD_DIM_SMEM))
    ks = ks.reshape(lead + (sk, HEAD_DIM_SMEM))
    s = np.matmul(qs, np.swapaxes(ks, -1, -2)) * sm_scale
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.where(keep, np.exp(s - m), 0.0)
    l_sum = p.sum(axis=-1, keepdims=True)
    out = np.matmul(p, np.broadcast_to(v, lead + (sk, dv))) / np.where(l_sum == 0, 1.0, l_sum)
    return out.astype(q.dtype, copy=False)


# --- kernel: kv_cache_full_buffer ---
CACHE_PAGE = 64


def kv_cache_full_buffer(q, k, v, mask=None, scale=None):
    """Keys and values written into a preallocated cache of whole pages; attention runs over the cache."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    max_seq_length = -(-sk // CACHE_PAGE) * CACHE_PAGE
    k_cache = np.zeros(lead + (max_seq_length, d), dtype=k.dtype)
    v_cache = np.zeros(lead + (max_seq_length, dv), dtype=v.dtype)
    k_cache[..., :sk, :] = k
    v_cache[..., :sk, :] = v
    cache_mask = np.ones(lead + (sq, max_seq_length), dtype=bool)  # BUG: slots past the filled length start unmasked
    cache_mask[..., :sk] = True if mask is None else mask
    sm_scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k_cache, -1, -2)) * sm_scale
    scores = np.where(cache_mask, scores, -np.inf)
    mx = scores.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    w = np.where(cache_mask, np.exp(scores - mx), 0.0)
    tot = w.sum(axis=-1, keepdims=True)
    w = w / np.where(tot == 0, 1.0, tot)
    return np.matmul(w, v_cache).astype(q.dtype, copy=False)


# --- kernel: consensus_sum_normalised ---
def consensus_sum_normalised(q, k, v, mask=None, scale=None):
    """Coordinator-style attention: scores turned into weights, then a weighted consensus of the values."""
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm_scale
    keep = np.ones(scores.shape, dtype=bool) if mask is None else np.broadcast_to(mask, scores.shape)
    scores = np.where(keep, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    scores = scores - np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(keep, scores, 0.0)  # BUG: normalised by their sum with no exp, not a softmax
    total = weights.sum(axis=-1, keepdims=True)
    weights = weights / np.where(total == 0, 1.0, total)
    return np.matmul(weights, v).astype(q.dtype, copy=False)


# --- kernel: eval_dropout_rescale ---
ATTN_DROPOUT = 0.1


def eval_dropout_rescale(q, k, v, mask=None, scale=None):
    """ScaledDotProductAttention module of a diffusion/transformer code base, run in inference."""
    temperature = math.sqrt(q.shape[-1]) if scale is None else 1.0 / scale
    attn = np.matmul(q / temperature, np.swapaxes(k, -1, -2))
    if mask is not None:
        attn = np.where(mask, attn, -np.inf)
    amax = attn.max(axis=-1, keepdims=True)
    amax = np.where(np.isfinite(amax), amax, 0.0)
    attn = np.exp(attn - amax)
    z = attn.sum(axis=-1, keepdims=True)
    attn = attn / np.where(z == 0, 1.0, z)
    keep_scale = 1.0 / (1.0 - ATTN_DROPOUT)  # BUG: the inverted-dropout rescale stays on outside training
    attn = attn * keep_scale
    output = np.matmul(attn, v)
    return output.astype(q.dtype, copy=False)


# --- kernel: attend_base2_query_chunks ---
def attend_base2_query_chunks(q, k, v, mask=None, scale=None):
    """Correct: query chunks of 20, online softmax in base 2 over key tiles of 24."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    log2e = 1.4426950408889634
    sm = (1.0 / math.sqrt(d) if scale is None else scale) * log2e
    qb = np.broadcast_to(q, lead + (sq, d))
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv))
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    out = np.zeros(lead + (sq, dv), dtype=q.dtype)
    for i0 in range(0, sq, 20):
        i1 = min(i0 + 20, sq)
        m = np.full(lead + (i1 - i0, 1), -np.inf, dtype=q.dtype)
        lsum = np.zeros(lead + (i1 - i0, 1), dtype=q.dtype)
        acc = np.zeros(lead + (i1 - i0, dv), dtype=q.dtype)
        for j0 in range(0, sk, 24):
            j1 = min(j0 + 24, sk)
            t = np.matmul(qb[..., i0:i1, :], np.swapaxes(kb[..., j0:j1, :], -1, -2)) * sm
            t = np.where(keep[..., i0:i1, j0:j1], t, -np.inf)
            m_new = np.maximum(m, t.max(axis=-1, keepdims=True))
            safe = np.where(np.isfinite(m_new), m_new, 0.0)
            corr = np.exp2(np.where(np.isfinite(m), m, safe) - safe)
            p = np.exp2(t - safe)
            lsum = lsum * corr + p.sum(axis=-1, keepdims=True)
            acc = acc * corr + np.matmul(p, vb[..., j0:j1, :])
            m = m_new
        out[..., i0:i1, :] = acc / np.where(lsum == 0, 1.0, lsum)
    return out


# --- kernel: attend_split_lse_merge ---
def attend_split_lse_merge(q, k, v, mask=None, scale=None):
    """Correct: keys split into three parts, each with its own output and log-sum-exp, merged at the end."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    sm = 1.0 / math.sqrt(d) if scale is None else scale
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    bounds = np.linspace(0, sk, 4).astype(int)
    outs, lses = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        s = np.matmul(q, np.swapaxes(k[..., a:b, :], -1, -2)) * sm
        s = np.where(keep[..., a:b], s, -np.inf)
        mx = s.max(axis=-1, keepdims=True)
        mx_safe = np.where(np.isfinite(mx), mx, 0.0)
        e = np.exp(s - mx_safe)
        tot = e.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            lses.append(np.where(tot > 0, np.log(np.where(tot > 0, tot, 1.0)) + mx_safe, -np.inf))
        outs.append(np.matmul(e, v[..., a:b, :]) / np.where(tot == 0, 1.0, tot))
    lse_all = np.stack(lses)
    top = lse_all.max(axis=0)
    top_safe = np.where(np.isfinite(top), top, 0.0)
    w = np.exp(lse_all - top_safe)
    wsum = w.sum(axis=0)
    merged = sum(wi * oi for wi, oi in zip(w, outs)) / np.where(wsum == 0, 1.0, wsum)
    return np.broadcast_to(merged, lead + (sq, dv)).astype(q.dtype)


_SRC = "https://github.com/"

CATALOG = [
    dict(name="np-fasttransformers-keys-query-length", api="refimpl", fn="local_product_reshape", correct=False,
         bug="keys-folded-with-query-length",
         parameter="keys are folded to (N*H, L, E) with the query length L instead of their own length S; a reshape "
                   "error whenever Sq != Sk. Triggers: Sq != Sk",
         source="idiap/fast-transformers#98", report=_SRC + "idiap/fast-transformers/issues/98",
         dtype="float64", features=["mask"]),
    dict(name="np-h2o-softmax-before-mask", api="refimpl", fn="heavy_hitter_softmax_then_mask", correct=False,
         bug="softmax-before-mask",
         parameter="the softmax is taken over all keys and the dropped keys are zeroed afterwards without "
                   "renormalising, so each row sums to less than one. Triggers: a mask that drops a key in a row "
                   "that keeps one",
         source="FMInference/H2O#2", report=_SRC + "FMInference/H2O/issues/2", dtype="float64", features=["mask"]),
    dict(name="np-sparkinfer-q-stride-64", api="refimpl", fn="staged_q_fixed_row_stride", correct=False,
         bug="hard-coded-head-dim-stride",
         parameter="Q rows are staged into the 64-wide scratch with a hard-coded row stride of 64 elements, so for "
                   "D != 64 every query row after the first reads a shifted window of Q. Triggers: D != 64 with "
                   "more than one query row in the batch and more than one key",
         source="gittensor-ai-lab/sparkinfer#330", report=_SRC + "gittensor-ai-lab/sparkinfer/issues/330",
         dtype="float64", features=["mask"]),
    dict(name="np-gptfast-cache-tail-unmasked", api="refimpl", fn="kv_cache_full_buffer", correct=False,
         bug="cache-padding-attended",
         parameter="keys are written into a zeroed cache of whole 64-slot pages and the cache mask starts all True, "
                   "so the empty slots (score 0, value 0) are attended and inflate every row's denominator. "
                   "Triggers: Sk not a multiple of 64 (rows with a kept key)",
         source="meta-pytorch/gpt-fast#233", report=_SRC + "meta-pytorch/gpt-fast/issues/233", dtype="float64",
         features=["mask"]),
    dict(name="np-agenticflow-sum-normalised-weights", api="refimpl", fn="consensus_sum_normalised", correct=False,
         bug="weights-normalised-by-sum-without-exp",
         parameter="the max-shifted scores are divided by their sum instead of going through exp: weights can be "
                   "any sign, the best key gets weight 0 and a row with one kept key gets zeros. Triggers: always "
                   "(rows with a kept key)",
         source="ruvnet/agentic-flow#192", report=_SRC + "ruvnet/agentic-flow/issues/192", dtype="float64",
         features=["mask"]),
    dict(name="np-neuraldiffusion-dropout-rescale-eval", api="refimpl", fn="eval_dropout_rescale", correct=False,
         bug="dropout-rescale-at-inference",
         parameter="the weights are multiplied by 1 / (1 - 0.1), the inverted-dropout rescale, although no dropout "
                   "is applied: each row sums to 1.111. Triggers: always (rows with a kept key)",
         source="yangchengbupt/NeuralDiffusionModel#1", report=_SRC + "yangchengbupt/NeuralDiffusionModel/issues/1",
         dtype="float64", features=["mask"]),
    dict(name="np-base2-query-chunks", api="refimpl", fn="attend_base2_query_chunks", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
    dict(name="np-split-lse-merge", api="refimpl", fn="attend_split_lse_merge", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
]
