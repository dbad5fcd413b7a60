"""Held-out attention kernels for the ``refimpl`` API (NumPy).

Contract: ``fn(q, k, v, mask=None, scale=None)`` with q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv).
``mask`` is a bool keep-mask (True = attend) or an additive float mask (-inf = masked), broadcastable to
(..., Sq, Sk). ``scale=None`` means 1/sqrt(D). Rows with no kept key return zeros. Output in the input dtype.

Each broken kernel carries exactly one mistake, marked ``# BUG:``; see CATALOG at the end.
"""
import math

import numpy as np


# ----------------------------------------------------------------------------------------------------------------
# shared helpers (correct)
# ----------------------------------------------------------------------------------------------------------------

def _default_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


def _apply_mask(scores, mask):
    """Bool keep-mask -> -inf where False; float mask is added to the scaled scores."""
    if mask is None:
        return scores
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        return np.where(mask, scores, -np.inf)
    return scores + mask.astype(scores.dtype, copy=False)


def _expand_mask(mask, sq, sk):
    """Give the mask explicit (Sq, Sk) trailing axes so that it can be sliced along the key axis."""
    mask = np.asarray(mask)
    if mask.ndim < 2:
        mask = mask.reshape((1,) * (2 - mask.ndim) + mask.shape)
    return np.broadcast_to(mask, mask.shape[:-2] + (sq, sk))


def _lead_shape(q, k, v, mask):
    shapes = [q.shape[:-2], k.shape[:-2], v.shape[:-2]]
    if mask is not None:
        shapes.append(mask.shape[:-2])
    return np.broadcast_shapes(*shapes)


def _safe_softmax_pv(scores, v):
    """softmax(scores) @ v; a row whose scores are all -inf gives zeros."""
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    p = np.exp(scores - m)
    denom = np.sum(p, axis=-1, keepdims=True)
    return np.matmul(p, v) / np.where(denom == 0.0, 1.0, denom)


def _swap(x):
    return np.swapaxes(x, -1, -2)


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def eager_attention(q, k, v, mask=None, scale=None):
    """Hugging Face 'eager' style: full score matrix, masked, safe softmax, PV."""
    scale = _default_scale(q, scale)
    scores = np.matmul(q, _swap(k)) * scale
    scores = _apply_mask(scores, mask)
    with np.errstate(invalid="ignore"):
        out = _safe_softmax_pv(scores, v)
    return out.astype(q.dtype, copy=False)


def blocked_online_attention(q, k, v, mask=None, scale=None, block_n=32):
    """FlashAttention-2 style loop over key tiles with the online (running max / running sum) softmax."""
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lead = _lead_shape(q, k, v, mask)
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    for start in range(0, sk, block_n):
        end = min(start + block_n, sk)
        s = np.matmul(q, _swap(k[..., start:end, :])) * scale
        if mask is not None:
            s = _apply_mask(s, mask[..., start:end])
        m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
        m_use = np.where(np.isneginf(m_new), 0.0, m_new)     # Check_inf: fully masked so far
        alpha = np.exp(m_i - m_use)
        p = np.exp(s - m_use)
        l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, v[..., start:end, :])
        m_i = m_new
    out = acc / np.where(l_i == 0.0, 1.0, l_i)
    return out.astype(dtype, copy=False)


def split_kv_attention(q, k, v, mask=None, scale=None, split_size=48):
    """Flash-decoding: independent KV splits, each normalised with its own LSE, merged by LSE weights."""
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lead = _lead_shape(q, k, v, mask)
    outs, lses = [], []
    for start in range(0, sk, split_size):
        end = min(start + split_size, sk)
        s = np.matmul(q, _swap(k[..., start:end, :])) * scale
        if mask is not None:
            s = _apply_mask(s, mask[..., start:end])
        m = np.max(s, axis=-1, keepdims=True)
        m = np.where(np.isneginf(m), 0.0, m)
        p = np.exp(s - m)
        denom = np.sum(p, axis=-1, keepdims=True)
        safe = np.where(denom == 0.0, 1.0, denom)
        o = np.matmul(p, v[..., start:end, :]) / safe
        lse = np.where(denom == 0.0, -np.inf, np.log(safe) + m)
        outs.append(np.broadcast_to(o, lead + (sq, dv)))
        lses.append(np.broadcast_to(lse, lead + (sq, 1)))
    lse_all = np.stack(lses)
    lse_max = np.max(lse_all, axis=0)
    lse_max = np.where(np.isneginf(lse_max), 0.0, lse_max)
    w = np.exp(lse_all - lse_max)
    w_sum = np.sum(w, axis=0)
    out = np.sum(w * np.stack(outs), axis=0) / np.where(w_sum == 0.0, 1.0, w_sum)
    return out.astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def attention_scale_from_v(q, k, v, mask=None, scale=None):
    """MLA-style layer where the value head size and the query/key head size differ."""
    head_size_v = v.shape[-1]
    if scale is None:
        scale = head_size_v ** -0.5  # BUG: default scale taken from the value head size, not the q/k head size
    scores = np.matmul(q, _swap(k)) * scale
    scores = _apply_mask(scores, mask)
    with np.errstate(invalid="ignore"):
        out = _safe_softmax_pv(scores, v)
    return out.astype(q.dtype, copy=False)


def attention_scale_as_divisor(q, k, v, mask=None, scale=None):
    """Softmax scale handled as a temperature when it is passed explicitly."""
    qk = np.matmul(q, _swap(k))
    if scale is None:
        scores = qk / math.sqrt(q.shape[-1])
    else:
        scores = qk / scale  # BUG: an explicit softmax scale must multiply the logits, not divide them
    scores = _apply_mask(scores, mask)
    with np.errstate(invalid="ignore"):
        out = _safe_softmax_pv(scores, v)
    return out.astype(q.dtype, copy=False)


def attention_bias_before_scale(q, k, v, mask=None, scale=None):
    """Decode-style kernel that folds the additive mask into the raw QK^T product, then scales once."""
    scale = _default_scale(q, scale)
    scores = np.matmul(q, _swap(k))
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            bias = np.where(mask, 0.0, -np.inf).astype(scores.dtype)
        else:
            bias = mask.astype(scores.dtype, copy=False)
        scores = scores + bias
    scores = scores * scale  # BUG: the additive bias is attenuated by the softmax scale (must be added after scaling)
    with np.errstate(invalid="ignore"):
        out = _safe_softmax_pv(scores, v)
    return out.astype(q.dtype, copy=False)


def attention_finite_mask_fill(q, k, v, mask=None, scale=None):
    """HF-style eager attention that masks with the dtype's most negative finite value."""
    scale = _default_scale(q, scale)
    scores = np.matmul(q, _swap(k)) * scale
    min_value = np.finfo(scores.dtype).min
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == np.bool_:
            # BUG: finite fill + plain softmax: a row with no kept key averages all values instead of giving zeros
            scores = np.where(mask, scores, min_value)
        else:
            scores = np.maximum(scores + mask.astype(scores.dtype, copy=False), min_value)
    m = np.max(scores, axis=-1, keepdims=True)
    p = np.exp(scores - m)
    p = p / np.sum(p, axis=-1, keepdims=True)
    return np.matmul(p, v).astype(q.dtype, copy=False)


def attention_static_mask(q, k, v, mask=None, scale=None):
    """Kernel that caches one (Sq, Sk) mask pattern, as for a static causal / sliding-window layer."""
    scale = _default_scale(q, scale)
    scores = np.matmul(q, _swap(k)) * scale
    if mask is not None:
        mask = _expand_mask(mask, q.shape[-2], k.shape[-2])
        mask = mask.reshape((-1,) + mask.shape[-2:])[0]  # BUG: keeps the first batch/head slice of the mask only
        scores = _apply_mask(scores, mask)
    with np.errstate(invalid="ignore"):
        out = _safe_softmax_pv(scores, v)
    return out.astype(q.dtype, copy=False)


def blocked_attention_ragged_tail(q, k, v, mask=None, scale=None, block_n=32):
    """Tiled online softmax whose KV-tile count is computed with a floor division."""
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lead = _lead_shape(q, k, v, mask)
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    n_blocks = max(1, sk // block_n)  # BUG: floor instead of ceil-div drops the ragged last KV tile once Sk > block_n
    for blk in range(n_blocks):
        start, end = blk * block_n, min((blk + 1) * block_n, sk)
        s = np.matmul(q, _swap(k[..., start:end, :])) * scale
        if mask is not None:
            s = _apply_mask(s, mask[..., start:end])
        m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
        m_use = np.where(np.isneginf(m_new), 0.0, m_new)
        alpha = np.exp(m_i - m_use)
        p = np.exp(s - m_use)
        l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, v[..., start:end, :])
        m_i = m_new
    out = acc / np.where(l_i == 0.0, 1.0, l_i)
    return out.astype(dtype, copy=False)


def attention_fixed_max(q, k, v, mask=None, scale=None, dummy_max=10.0):
    """Block softmax that subtracts a constant instead of the row maximum (saves one reduction)."""
    scale = _default_scale(q, scale)
    scores = np.matmul(q, _swap(k)) * scale
    scores = _apply_mask(scores, mask)
    with np.errstate(over="ignore", invalid="ignore"):
        p = np.exp(scores - dummy_max)  # BUG: a fixed offset instead of the row max overflows for large logits
        denom = np.sum(p, axis=-1, keepdims=True)
        out = np.matmul(p, v) / np.where(denom == 0.0, 1.0, denom)
    return out.astype(q.dtype, copy=False)


def attention_half_exp_buffer(q, k, v, mask=None, scale=None):
    """CPU kernel that writes exp(s - max) into a buffer of half precision before the sum and the PV product."""
    scale = _default_scale(q, scale)
    scores = np.matmul(q, _swap(k)) * scale
    scores = _apply_mask(scores, mask)
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    y = np.exp(scores - m).astype(np.float16)  # BUG: softmax numerators stored in float16 (needs a float32 buffer)
    y = y.astype(scores.dtype)
    denom = np.sum(y, axis=-1, keepdims=True)
    out = np.matmul(y, v) / np.where(denom == 0.0, 1.0, denom)
    return out.astype(q.dtype, copy=False)


def online_attention_rescale_sign(q, k, v, mask=None, scale=None, block_n=32):
    """Online softmax over KV tiles; the correction factor for the previous tiles is exponentiated."""
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lead = _lead_shape(q, k, v, mask)
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, sk, block_n):
            end = min(start + block_n, sk)
            s = np.matmul(q, _swap(k[..., start:end, :])) * scale
            if mask is not None:
                s = _apply_mask(s, mask[..., start:end])
            m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
            m_use = np.where(np.isneginf(m_new), 0.0, m_new)
            alpha = np.exp(m_use - m_i)  # BUG: rescale factor must be exp(m_old - m_new), not exp(m_new - m_old)
            alpha = np.where(np.isneginf(m_i), 0.0, alpha)
            p = np.exp(s - m_use)
            l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, v[..., start:end, :])
            m_i = m_new
        out = acc / np.where(l_i == 0.0, 1.0, l_i)
    return out.astype(dtype, copy=False)


def online_attention_tile_max(q, k, v, mask=None, scale=None, block_n=32):
    """Online softmax macro that re-initialises the running max for every KV tile."""
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    scale = _default_scale(q, scale)
    if mask is not None:
        mask = _expand_mask(mask, sq, sk)
    lead = _lead_shape(q, k, v, mask)
    m_prev = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, sk, block_n):
            end = min(start + block_n, sk)
            s = np.matmul(q, _swap(k[..., start:end, :])) * scale
            if mask is not None:
                s = _apply_mask(s, mask[..., start:end])
            m_cur = np.max(s, axis=-1, keepdims=True)  # BUG: max of this tile only; must be max(m_prev, tile max)
            m_cur = np.where(np.isneginf(m_cur), m_prev, m_cur)      # fully masked tile: keep the statistics
            m_use = np.where(np.isneginf(m_cur), 0.0, m_cur)
            alpha = np.where(np.isneginf(m_prev), 0.0, np.exp(m_prev - m_use))
            p = np.exp(s - m_use)
            l_i = l_i * alpha + np.sum(p, axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, v[..., start:end, :])
            m_prev = m_cur
        out = acc / np.where(l_i == 0.0, 1.0, l_i)
    return out.astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------------------------

_ALL = ["mask", "causal", "window", "alibi", "gqa", "dv-ne-d"]


def _entry(name, fn, bug=None, parameter=None, source=None, report=None, dtype="float64"):
    return {
        "name": name, "api": "refimpl", "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
        "source": source, "report": report, "dtype": dtype, "features": list(_ALL),
    }


CATALOG = [
    _entry("np-eager", "eager_attention"),
    _entry("np-blocked-online", "blocked_online_attention"),
    _entry("np-split-kv", "split_kv_attention"),
    _entry("np-scale-from-v", "attention_scale_from_v", "scale-uses-value-head-dim", "1/sqrt(Dv)",
           "vllm-project/vllm#48658", "https://github.com/vllm-project/vllm/pull/48658"),
    _entry("np-scale-divisor", "attention_scale_as_divisor", "explicit-scale-divides", "logits / scale",
           "AI-Hypercomputer/maxtext#1370", "https://github.com/AI-Hypercomputer/maxtext/issues/1370"),
    _entry("np-bias-before-scale", "attention_bias_before_scale", "additive-mask-scaled", "(QK^T + bias) * scale",
           "tenstorrent/tt-metal#56406", "https://github.com/tenstorrent/tt-metal/pull/56406"),
    _entry("np-finite-fill", "attention_finite_mask_fill", "masked-row-not-zero", "fill=finfo.min",
           "huggingface/transformers#17306", "https://github.com/huggingface/transformers/pull/17306"),
    _entry("np-static-mask", "attention_static_mask", "mask-first-batch-only", "mask[0] for every batch/head",
           "lucidrains/graph-transformer-pytorch#2", "https://github.com/lucidrains/graph-transformer-pytorch/pull/2"),
    _entry("np-ragged-tail", "blocked_attention_ragged_tail", "tail-block-dropped", "n_blocks=Sk//32",
           "intel/sycl-tla#489", "https://github.com/intel/sycl-tla/pull/489"),
    _entry("np-fixed-max", "attention_fixed_max", "softmax-fixed-max", "max=10",
           "HabanaAI/vllm-fork#275", "https://github.com/HabanaAI/vllm-fork/issues/275"),
    _entry("np-half-exp", "attention_half_exp_buffer", "fp16-softmax-buffer", "exp buffer float16",
           "microsoft/onnxruntime#22102", "https://github.com/microsoft/onnxruntime/pull/22102", dtype="float32"),
    _entry("np-rescale-sign", "online_attention_rescale_sign", "online-rescale-inverted", "exp(m_new - m_old)",
           "deepseek-ai/FlashMLA#177", "https://github.com/deepseek-ai/FlashMLA/pull/177"),
    _entry("np-tile-max", "online_attention_tile_max", "online-max-per-tile", "running max reset per tile",
           "tile-ai/TileOPs#239", "https://github.com/tile-ai/TileOPs/pull/239"),
]
