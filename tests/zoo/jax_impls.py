"""Zoo: attention written against the signature of jax.nn.dot_product_attention, NumPy arrays in and out.

Independent of refimpl (written from the JAX documentation only). Every public function is
    fn(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False, query_seq_lengths=None,
       key_value_seq_lengths=None, local_window_size=None) -> out (B, T, N, Hv)
with query (B, T, N, H), key (B, S, K, H), value (B, S, K, Hv) (sequence before heads) and N % K == 0
(GQA: query head n reads kv head n // (N // K)). For query i and key j (0-based):
    s_ij  = scale * (q_i . k_j) + bias_ij,        scale = scale or 1/sqrt(H); bias broadcast to (B, N, T, S)
    keep  = mask_ij (True = attend)  and  j <= i if is_causal (TOP-LEFT aligned, jnp.tril of (T, S))
            and  i - left <= j <= i + right if local_window_size (int w means (w, w); top-left positions)
            and  i < query_seq_lengths[b]  and  j < key_value_seq_lengths[b]
    s_ij  = -0.7 * finfo(dtype).max where not keep (a large FINITE negative, as JAX does)
    out_i = sum_j softmax_j(s_i) v_j; a query row with no kept key gives the uniform mean of v over all S keys;
            rows i >= query_seq_lengths[b] are zeroed (as recent JAX does).
The output has the input dtype; the inputs are never modified.
The broken functions contain exactly one realistic mistake each (marked `BUG:`), see CATALOG.
"""
import math

import numpy as np

_BLOCK = 32


def _prepare(query, key, value, scale, local_window_size, compute_dtype=np.float64):
    """Validate; return (q, k, v, scale, window) with q/k/v in the compute dtype (k/v still with K heads)."""
    arrays = [np.asarray(t) for t in (query, key, value)]
    for name, t in zip(("query", "key", "value"), arrays):
        if t.ndim != 4 or not np.issubdtype(t.dtype, np.floating):
            raise TypeError(f"{name} must be a 4-D floating array (B, T|S, N|K, H); got {t.dtype} {t.shape}")
    q, k, v = arrays
    if not q.shape[0] == k.shape[0] == v.shape[0] or k.shape[1:3] != v.shape[1:3]:
        raise ValueError(f"incompatible shapes query {q.shape}, key {k.shape}, value {v.shape}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"query and key must share the head size H; got {q.shape[3]} and {k.shape[3]}")
    if q.shape[2] % k.shape[2] != 0:
        raise ValueError(f"N={q.shape[2]} query heads must be a multiple of K={k.shape[2]} kv heads")
    if local_window_size is None:
        window = None
    elif isinstance(local_window_size, (int, np.integer)):
        window = (int(local_window_size), int(local_window_size))
    elif len(local_window_size) == 2:
        window = tuple(int(w) for w in local_window_size)
    else:
        raise ValueError(f"local_window_size must be None, an int or (left, right); got {local_window_size}")
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else float(scale)
    q, k, v = (t.astype(compute_dtype, copy=False) for t in (q, k, v))
    return q, k, v, scale, window


def _repeat_kv(k, v, n_heads):
    """(B, S, K, H) -> (B, S, N, H): kv head g serves query heads g*G .. g*G + G-1, G = N // K."""
    group = n_heads // k.shape[2]
    return np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)


def _band(t, s, is_causal, window):
    """(T, S) bool: causal j <= i and window i - left <= j <= i + right, top-left aligned."""
    i, j = np.arange(t)[:, None], np.arange(s)[None, :]
    band = np.ones((t, s), dtype=bool)
    if is_causal:
        band &= j <= i
    if window is not None:
        band &= (j >= i - window[0]) & (j <= i + window[1])
    return band


def _keep(shape, mask, band, q_lens, kv_lens):
    """(B, N, T, S) bool: user mask AND band AND query/key padding."""
    b, _, t, s = shape
    if mask is not None and np.asarray(mask).dtype != np.bool_:
        raise TypeError(f"mask must be a bool array (True = attend); got {np.asarray(mask).dtype}")
    keep = np.ones(shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask), shape)
    keep = keep & band
    if q_lens is not None:
        keep = keep & (np.arange(t)[None, :] < np.asarray(q_lens).reshape(b, 1))[:, None, :, None]
    if kv_lens is not None:
        keep = keep & (np.arange(s)[None, :] < np.asarray(kv_lens).reshape(b, 1))[:, None, None, :]
    return keep


def _big_neg(dtype):
    return np.asarray(-0.7 * np.finfo(dtype).max, dtype=dtype)


def _softmax(x):
    """Max-subtracted softmax over the last axis (rows of x are always finite here)."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _materialised(q, k, v, bias, keep, scale):
    """q (B, T, N, H), k (B, S, N, H), v (B, S, N, Hv) (kv already repeated) -> (B, T, N, Hv)."""
    logits = scale * np.einsum("btnh,bsnh->bnts", q, k)
    if bias is not None:
        logits = (logits + np.broadcast_to(np.asarray(bias), logits.shape)).astype(logits.dtype)
    logits = np.where(keep, logits, _big_neg(logits.dtype))
    return np.einsum("bnts,bsnh->btnh", _softmax(logits), v)


def _finish(out, dtype, q_lens):
    """Zero the padded query rows (i >= query_seq_lengths[b]) and cast to the input dtype."""
    if q_lens is not None:
        rows = np.arange(out.shape[1])[None, :] < np.asarray(q_lens).reshape(-1, 1)  # (B, T)
        out = out * rows[:, :, None, None]
    return out.astype(dtype)


# ------------------------------------------------------------------ correct implementations
def jax_plain(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
              query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """Float64, kv heads repeated, materialised logits (B, N, T, S), large-negative fill, softmax, P @ V."""
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s = q.shape, k.shape[1]
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    return _finish(_materialised(q, k, v, bias, keep, scale), np.asarray(query).dtype, query_seq_lengths)


def jax_online(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
               query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """FlashAttention-2 style online softmax over key blocks of 32 with -inf masking: running max m, sum l,
    accumulator acc rescaled by exp(m - m'); a block with no kept key (m' = -inf) is guarded, and rows
    with no kept key at all (l = 0) fall back to JAX's uniform mean of v."""
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s, hv = q.shape, k.shape[1], v.shape[3]
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    full_bias = np.broadcast_to(np.asarray(0.0 if bias is None else bias, dtype=q.dtype), (b, n, t, s))
    m = np.full((b, n, t, 1), -np.inf)
    total, acc = np.zeros((b, n, t, 1)), np.zeros((b, n, t, hv))
    for j in range(0, s, _BLOCK):
        blk = slice(j, j + _BLOCK)
        x = scale * np.einsum("btnh,bsnh->bnts", q, k[:, blk])
        x = np.where(keep[..., blk], x + full_bias[..., blk], -np.inf)  # (B, N, T, Bk)
        m_new = np.maximum(m, x.max(-1, keepdims=True))
        m_ref = np.where(np.isneginf(m_new), 0.0, m_new)  # nothing kept so far: avoid -inf - (-inf) = NaN
        alpha = np.exp(m - m_ref)
        p = np.exp(x - m_ref)
        total = alpha * total + p.sum(-1, keepdims=True)
        acc = alpha * acc + np.einsum("bnts,bsnh->bnth", p, v[:, blk])
        m = m_new
    empty = total == 0
    uniform = np.broadcast_to(v.mean(axis=1)[:, :, None, :], acc.shape)  # (B, N, 1, Hv) -> (B, N, T, Hv)
    out = np.where(empty, uniform, acc / np.where(empty, 1.0, total))
    return _finish(out.transpose(0, 2, 1, 3), np.asarray(query).dtype, query_seq_lengths)


def jax_grouped(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """Dtype-faithful: computes in promote(dtype, float32) (float32 stays float32, float64 stays float64);
    GQA via the grouped reshape query (B, T, K, G, H) against key (B, S, K, H), no kv repetition."""
    dtype = np.asarray(query).dtype
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size,
                                      compute_dtype=np.promote_types(dtype, np.float32))
    (b, t, n, h), (s, kh) = q.shape, k.shape[1:3]
    g = n // kh
    logits = np.einsum("btkgh,bskh->bkgts", q.reshape(b, t, kh, g, h), k) * q.dtype.type(scale)
    if bias is not None:
        grouped = np.broadcast_to(np.asarray(bias), (b, n, t, s)).reshape(b, kh, g, t, s)
        logits = (logits + grouped).astype(q.dtype)
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    logits = np.where(keep.reshape(b, kh, g, t, s), logits, _big_neg(q.dtype))
    out = np.einsum("bkgts,bskh->btkgh", _softmax(logits), v).reshape(b, t, n, v.shape[3])
    return _finish(out, dtype, query_seq_lengths)


# ------------------------------------------------------------------ broken implementations
def jax_causal_bottom_right(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                            query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s = q.shape, k.shape[1]
    band = _band(t, s, False, window)
    if is_causal:
        band &= np.tril(np.ones((t, s), dtype=bool), k=s - t)  # BUG: bottom-right causal (j <= i + S - T)
    keep = _keep((b, n, t, s), mask, band, query_seq_lengths, key_value_seq_lengths)
    return _finish(_materialised(q, k, v, bias, keep, scale), np.asarray(query).dtype, query_seq_lengths)


def jax_bias_ignored(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                     query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s = q.shape, k.shape[1]
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    out = _materialised(q, k, v, None, keep, scale)  # BUG: bias accepted but never added to the logits
    return _finish(out, np.asarray(query).dtype, query_seq_lengths)


def jax_mask_inverted(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                      query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s = q.shape, k.shape[1]
    if mask is not None:
        mask = np.logical_not(mask)  # BUG: reads the mask as True = masked out (PyTorch key_padding_mask style)
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    return _finish(_materialised(q, k, v, bias, keep, scale), np.asarray(query).dtype, query_seq_lengths)


def jax_scale_value_dim(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                        query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale_, window = _prepare(query, key, value, scale, local_window_size)
    if scale is None:
        scale_ = 1.0 / math.sqrt(v.shape[-1])  # BUG: default scale from the value head size Hv, not H
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s = q.shape, k.shape[1]
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    return _finish(_materialised(q, k, v, bias, keep, scale_), np.asarray(query).dtype, query_seq_lengths)


def jax_gqa_modulo(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                   query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    heads = np.arange(q.shape[2]) % k.shape[2]  # BUG: query head n reads kv head n % K (tile, not repeat)
    k, v = k[:, :, heads], v[:, :, heads]
    (b, t, n, _), s = q.shape, k.shape[1]
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    return _finish(_materialised(q, k, v, bias, keep, scale), np.asarray(query).dtype, query_seq_lengths)


def jax_window_left_only(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                         query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s = q.shape, k.shape[1]
    band = _band(t, s, is_causal, None)
    if window is not None:
        i, j = np.arange(t)[:, None], np.arange(s)[None, :]
        band &= j >= i - window[0]  # BUG: sliding window assumed causal-only: right edge i + right ignored
    keep = _keep((b, n, t, s), mask, band, query_seq_lengths, key_value_seq_lengths)
    return _finish(_materialised(q, k, v, bias, keep, scale), np.asarray(query).dtype, query_seq_lengths)


def jax_no_max(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
               query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s = q.shape, k.shape[1]
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    logits = scale * np.einsum("btnh,bsnh->bnts", q, k)
    if bias is not None:
        logits = logits + np.broadcast_to(np.asarray(bias), logits.shape)
    e = np.exp(np.where(keep, logits, _big_neg(logits.dtype)))  # BUG: no row max subtracted: inf/inf = NaN
    out = np.einsum("bnts,bsnh->btnh", e / e.sum(-1, keepdims=True), v)
    return _finish(out, np.asarray(query).dtype, query_seq_lengths)


def jax_layout_reshape(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                       query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    q, k, v, scale, window = _prepare(query, key, value, scale, local_window_size)
    k, v = _repeat_kv(k, v, q.shape[2])
    (b, t, n, _), s, hv = q.shape, k.shape[1], v.shape[3]
    keep = _keep((b, n, t, s), mask, _band(t, s, is_causal, window), query_seq_lengths, key_value_seq_lengths)
    logits = scale * np.einsum("btnh,bsnh->bnts", q, k)
    if bias is not None:
        logits = logits + np.broadcast_to(np.asarray(bias), logits.shape)
    out = np.einsum("bnts,bsnh->bnth", _softmax(np.where(keep, logits, _big_neg(logits.dtype))), v)
    out = out.reshape(b, t, n, hv)  # BUG: (B, N, T, Hv) reshaped, not transposed, back to (B, T, N, Hv)
    return _finish(out, np.asarray(query).dtype, query_seq_lengths)


_ALL = ["causal", "window", "bias", "mask", "gqa", "seq_lengths"]


def _entry(name, correct, model, note, dtype="float64"):
    return {"name": name, "api": "jax", "fn": name, "correct": correct, "model": model,
            "convention": "uniform" if correct else None, "dtype": dtype, "features": list(_ALL), "note": note}


CATALOG = [
    _entry("jax_plain", True, None, "float64, repeated kv heads, materialised logits, -0.7*max fill, softmax"),
    _entry("jax_online", True, None, "FlashAttention-2 online softmax over key blocks of 32, -inf guarded"),
    _entry("jax_grouped", True, None, "dtype-faithful (float32 stays float32), grouped (B,T,K,G,H) GQA"),
    _entry("jax_causal_bottom_right", False, "causal-alignment",
           "causal tril offset S - T (flash-attn / SDPA bottom-right convention carried over to JAX)"),
    _entry("jax_bias_ignored", False, "bias-ignored",
           "bias argument silently dropped (like reports of attn bias ignored by a fused backend)"),
    _entry("jax_mask_inverted", False, "mask-polarity",
           "True read as masked out (PyTorch key_padding_mask polarity vs JAX True = attend reports)"),
    # refimpl's note, not the zoo author's: jax.nn.dot_product_attention takes value with the key's head size
    # (Dv == D; refimpl's jax API says n/a otherwise), so under this API the mistake cannot show: unobservable
    dict(_entry("jax_scale_value_dim", False, "scale",
                "default scale 1/sqrt(value.shape[-1]) = 1/sqrt(Hv) (reports of scale from the wrong head dim)"),
         unobservable="Dv == D under jax.nn.dot_product_attention"),
    _entry("jax_gqa_modulo", False, "gqa-grouping",
           "query head n reads kv head n % K: np.tile instead of np.repeat (GQA head-mapping bug reports)"),
    _entry("jax_window_left_only", False, "window-bounds",
           "local window right edge ignored: sliding window assumed causal (Mistral-style window reports)"),
    _entry("jax_no_max", False, "no-max-subtraction",
           "exp(logits) without the row max: overflow for large logits, 0/0 on fully masked rows"),
    _entry("jax_layout_reshape", False, "layout",
           "(B,N,T,Hv) output reshaped instead of transposed to (B,T,N,Hv) (common port bug)"),
]
