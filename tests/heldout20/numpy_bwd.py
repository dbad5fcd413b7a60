"""heldout20 NumPy backward kernels, API ``numpy-backward``: fn(q, k, v, d_out, mask=None, scale=None).

Returns (dq, dk, dv), the gradients of loss = sum(d_out * O) for the ``refimpl`` forward
O = softmax(q k^T * scale, kept keys only) v; k/v may carry a head axis of size 1 broadcast against q's heads
(dk, dv come back with k/v's shape, summed over it); rows with no kept key have zero output and gradients.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import numpy as np


def _sum_to_shape(x, shape):
    """Sum a broadcast gradient back to ``shape`` (leading and size-1 axes)."""
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


# --- kernel: bwd_lse_log2_units ---
LOG2E = 1.4426950408889634


def bwd_lse_log2_units(q, k, v, d_out, mask=None, scale=None):
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_e = np.broadcast_to(k, batch + k.shape[-2:])
    v_e = np.broadcast_to(v, batch + v.shape[-2:])
    s = np.matmul(q, np.swapaxes(k_e, -1, -2)) * sm_scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    # forward statistics as the exp2 kernel stores them: log2 units
    s2 = s * LOG2E
    m2 = np.max(s2, axis=-1, keepdims=True)
    m2 = np.where(np.isfinite(m2), m2, 0.0)
    l2 = np.sum(np.exp2(s2 - m2), axis=-1, keepdims=True)
    lse2 = np.where(l2 > 0, m2 + np.log2(np.where(l2 > 0, l2, 1.0)), np.inf)
    p = np.exp(s - lse2)  # BUG: natural exp against a log2-unit LSE (the ln 2 factor is lost)
    o = np.matmul(p, v_e)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    dp = np.matmul(d_out, np.swapaxes(v_e, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k_e) * sm_scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sm_scale
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    return (dq.astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


# --- kernel: bwd_normalizer_detached ---
def bwd_normalizer_detached(q, k, v, d_out, mask=None, scale=None):
    sm_scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_e = np.broadcast_to(k, batch + k.shape[-2:])
    v_e = np.broadcast_to(v, batch + v.shape[-2:])
    scores = np.matmul(q, np.swapaxes(k_e, -1, -2)) * sm_scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    m = scores.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    z = e.sum(axis=-1, keepdims=True)  # normalizer, kept out of the autograd graph
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v_e, -1, -2))
    ds = p * dp  # BUG: the path through the normalizer z is severed (no -rowsum(p * dp) term)
    dq = np.matmul(ds, k_e) * sm_scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sm_scale
    return (dq.astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


# --- kernel: bwd_softmax_layer_backward ---
def _softmax_forward(x):
    mx = np.max(x, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.exp(x - mx)
    tot = np.sum(ex, axis=-1, keepdims=True)
    return np.where(tot > 0, ex / np.where(tot > 0, tot, 1.0), 0.0)


def _softmax_backward(output, gy):
    """Backward(output, gy, g): ``output`` is what Forward() returned."""
    return output * (gy - np.sum(output * gy, axis=-1, keepdims=True))


def bwd_softmax_layer_backward(q, k, v, d_out, mask=None, scale=None):
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_e = np.broadcast_to(k, batch + k.shape[-2:])
    v_e = np.broadcast_to(v, batch + v.shape[-2:])
    scores = np.matmul(q, np.swapaxes(k_e, -1, -2)) * sm_scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    probs = _softmax_forward(scores)
    g_probs = np.matmul(d_out, np.swapaxes(v_e, -1, -2))
    g_scores = _softmax_backward(scores, g_probs)  # BUG: handed Forward's input (the scores), not its output
    dq = np.matmul(g_scores, k_e) * sm_scale
    dk = np.matmul(np.swapaxes(g_scores, -1, -2), q) * sm_scale
    dv = np.matmul(np.swapaxes(probs, -1, -2), d_out)
    return (dq.astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


# --- kernel: bwd_flat_batch_heads ---
def _bcast(x, batch):
    return np.broadcast_to(x, batch + x.shape[-2:])


def bwd_flat_batch_heads(q, k, v, d_out, mask=None, scale=None):
    sq, d = q.shape[-2:]
    sk, dv_dim = k.shape[-2], v.shape[-1]
    batch = q.shape[:-2]
    n = int(np.prod(batch, dtype=np.int64))
    sm_scale = 1.0 / math.sqrt(d) if scale is None else scale
    q3, do3 = q.reshape(n, sq, d), _bcast(d_out, batch).reshape(n, sq, dv_dim)
    k3, v3 = k.reshape(n, sk, d), v.reshape(n, sk, dv_dim)  # BUG: assumes k/v carry every query head (no broadcast)
    keep = None if mask is None else np.broadcast_to(mask, batch + (sq, sk)).reshape(n, sq, sk)
    s = np.matmul(q3, np.swapaxes(k3, 1, 2)) * sm_scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    row_max = s.max(axis=2, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    p = np.exp(s - row_max)
    den = p.sum(axis=2, keepdims=True)
    p = np.where(den > 0, p / np.where(den > 0, den, 1.0), 0.0)
    o = np.matmul(p, v3)
    dp = np.matmul(do3, np.swapaxes(v3, 1, 2))
    ds = p * (dp - np.sum(do3 * o, axis=2, keepdims=True))
    dq3 = np.matmul(ds, k3) * sm_scale
    dk3 = np.matmul(np.swapaxes(ds, 1, 2), q3) * sm_scale
    dv3 = np.matmul(np.swapaxes(p, 1, 2), do3)
    dk = _sum_to_shape(dk3.reshape(batch + (sk, d)), k.shape)
    dv = _sum_to_shape(dv3.reshape(batch + (sk, dv_dim)), v.shape)
    return (dq3.reshape(q.shape).astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False),
            dv.astype(v.dtype, copy=False))


# --- kernel: bwd_query_chunk_scan ---
def bwd_query_chunk_scan(q, k, v, d_out, mask=None, scale=None, q_chunk_size=32):
    q_len, k_len = q.shape[-2], k.shape[-2]
    sm_scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    q_e = np.broadcast_to(q, batch + q.shape[-2:])
    k_e = np.broadcast_to(k, batch + k.shape[-2:])
    v_e = np.broadcast_to(v, batch + v.shape[-2:])
    key_mask = None if mask is None else np.broadcast_to(mask, batch + (q_len, k_len))
    dq = np.zeros_like(q_e)
    dk = np.zeros_like(q_e)  # BUG: the dk carry takes q's shape (q_len rows) instead of k's
    dv = np.zeros_like(v_e)
    for chunk_idx in range(0, q_len, q_chunk_size):
        c1 = min(q_len, chunk_idx + q_chunk_size)
        q_chunk, do_chunk = q_e[..., chunk_idx:c1, :], d_out[..., chunk_idx:c1, :]
        attn = np.matmul(q_chunk, np.swapaxes(k_e, -1, -2)) * sm_scale
        if key_mask is not None:
            attn = np.where(key_mask[..., chunk_idx:c1, :], attn, -np.inf)
        m_chunk = attn.max(axis=-1, keepdims=True)
        m_chunk = np.where(np.isfinite(m_chunk), m_chunk, 0.0)
        exp_w = np.exp(attn - m_chunk)
        l_chunk = exp_w.sum(axis=-1, keepdims=True)
        p = np.where(l_chunk > 0, exp_w / np.where(l_chunk > 0, l_chunk, 1.0), 0.0)
        o_chunk = np.matmul(p, v_e)
        dp = np.matmul(do_chunk, np.swapaxes(v_e, -1, -2))
        ds = p * (dp - np.sum(do_chunk * o_chunk, axis=-1, keepdims=True))
        dq[..., chunk_idx:c1, :] = np.matmul(ds, k_e) * sm_scale
        dk += np.matmul(np.swapaxes(ds, -1, -2), q_chunk) * sm_scale
        dv += np.matmul(np.swapaxes(p, -1, -2), do_chunk)
    return (dq.astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


# --- kernel: bwd_block_sparse_padded_tiles ---
def bwd_block_sparse_padded_tiles(q, k, v, d_out, mask=None, scale=None, block_m=32):
    seq_q, seq_k = q.shape[-2], k.shape[-2]
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_e = np.broadcast_to(k, batch + k.shape[-2:])
    v_e = np.broadcast_to(v, batch + v.shape[-2:])
    keep = np.ones(batch + (seq_q, seq_k), dtype=bool) if mask is None else np.broadcast_to(
        mask, batch + (seq_q, seq_k))
    # pad once to whole tiles; the padded rows repeat the boundary token instead of being zeroed
    pad = (-seq_q) % block_m
    widths = [(0, 0)] * len(batch) + [(0, pad), (0, 0)]
    q_p = np.pad(np.broadcast_to(q, batch + q.shape[-2:]), widths, mode="edge")
    do_p = np.pad(np.broadcast_to(d_out, batch + d_out.shape[-2:]), widths, mode="edge")
    keep_p = np.pad(keep, widths, mode="edge")
    row_valid = np.arange(seq_q + pad) < seq_q
    assert int(row_valid.sum()) == seq_q
    dq_p = np.zeros_like(q_p)
    dk = np.zeros(batch + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(batch + v.shape[-2:], dtype=q.dtype)
    for i0 in range(0, seq_q + pad, block_m):
        i1 = i0 + block_m
        q_t, do_t, keep_t = q_p[..., i0:i1, :], do_p[..., i0:i1, :], keep_p[..., i0:i1, :]
        s = np.where(keep_t, np.matmul(q_t, np.swapaxes(k_e, -1, -2)) * sm_scale, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        p = np.exp(s - m)
        z = p.sum(axis=-1, keepdims=True)
        p = np.where(z > 0, p / np.where(z > 0, z, 1.0), 0.0)
        p = np.where(keep_t, p, 0.0)  # BUG: KV-side masking only; padded query rows stay live in dK/dV
        o_t = np.matmul(p, v_e)
        ds = p * (np.matmul(do_t, np.swapaxes(v_e, -1, -2)) - np.sum(do_t * o_t, axis=-1, keepdims=True))
        dq_p[..., i0:i1, :] = np.matmul(ds, k_e) * sm_scale
        dk += np.matmul(np.swapaxes(ds, -1, -2), q_t) * sm_scale
        dv += np.matmul(np.swapaxes(p, -1, -2), do_t)
    return (dq_p[..., :seq_q, :].astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


# --- kernel: bwd_query_tiles_lse ---
def bwd_query_tiles_lse(q, k, v, d_out, mask=None, scale=None, tile=24):
    sq, sk = q.shape[-2], k.shape[-2]
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_e = np.broadcast_to(k, batch + k.shape[-2:])
    v_e = np.broadcast_to(v, batch + v.shape[-2:])
    keep = None if mask is None else np.broadcast_to(mask, batch + (sq, sk))
    dq = np.zeros(batch + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(batch + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(batch + v.shape[-2:], dtype=q.dtype)
    for i0 in range(0, sq, tile):
        i1 = min(sq, i0 + tile)
        qt = np.broadcast_to(q, batch + q.shape[-2:])[..., i0:i1, :]
        dot = np.broadcast_to(d_out, batch + d_out.shape[-2:])[..., i0:i1, :]
        s = np.matmul(qt, np.swapaxes(k_e, -1, -2)) * sm_scale
        if keep is not None:
            s = np.where(keep[..., i0:i1, :], s, -np.inf)
        mx = s.max(axis=-1, keepdims=True)
        live = np.isfinite(mx)
        mx = np.where(live, mx, 0.0)
        lse = np.where(live, mx + np.log(np.sum(np.exp(s - mx), axis=-1, keepdims=True)), np.inf)
        p = np.exp(s - lse)
        delta = np.sum(dot * np.matmul(p, v_e), axis=-1, keepdims=True)
        ds = p * (np.matmul(dot, np.swapaxes(v_e, -1, -2)) - delta)
        dq[..., i0:i1, :] = np.matmul(ds, k_e) * sm_scale
        dk += np.matmul(np.swapaxes(ds, -1, -2), qt) * sm_scale
        dv += np.matmul(np.swapaxes(p, -1, -2), dot)
    return (dq.astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


# --- kernel: bwd_rowwise_jacobian ---
def bwd_rowwise_jacobian(q, k, v, d_out, mask=None, scale=None, rows_per_step=8):
    sq, sk = q.shape[-2], k.shape[-2]
    sm_scale = q.shape[-1] ** -0.5 if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_e = np.broadcast_to(k, batch + k.shape[-2:])
    v_e = np.broadcast_to(v, batch + v.shape[-2:])
    s = np.einsum("...id,...jd->...ij", q, k_e) * sm_scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    peak = np.max(s, axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    w = np.exp(s - peak)
    tot = w.sum(axis=-1, keepdims=True)
    p = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 0.0)
    dp = np.einsum("...ie,...je->...ij", np.broadcast_to(d_out, batch + d_out.shape[-2:]), v_e)
    ds = np.empty_like(p)
    eye = np.eye(sk, dtype=p.dtype)
    for r0 in range(0, sq, rows_per_step):
        r1 = min(sq, r0 + rows_per_step)
        pr = p[..., r0:r1, :]
        jac = pr[..., :, None] * eye - pr[..., :, None] * pr[..., None, :]
        ds[..., r0:r1, :] = np.einsum("...rk,...rkj->...rj", dp[..., r0:r1, :], jac)
    dq = np.einsum("...ij,...jd->...id", ds, k_e) * sm_scale
    dk = np.einsum("...ij,...id->...jd", ds, np.broadcast_to(q, batch + q.shape[-2:])) * sm_scale
    dv = np.einsum("...ij,...ie->...je", p, np.broadcast_to(d_out, batch + d_out.shape[-2:]))
    return (dq.astype(q.dtype, copy=False), _sum_to_shape(dk, k.shape).astype(k.dtype, copy=False),
            _sum_to_shape(dv, v.shape).astype(v.dtype, copy=False))


CATALOG = [
    {
        "name": "bwd-flex-lse-log2-units",
        "api": "numpy-backward",
        "fn": "bwd_lse_log2_units",
        "correct": False,
        "bug": "lse-base-mismatch-in-recompute",
        "parameter": (
            "the forward statistics are kept as an exp2-kernel LSE in log2 units and the backward recomputes "
            "P = exp(s - lse2) in natural units, i.e. with the LSE too large by the factor 1/ln 2: the recomputed "
            "probabilities no longer sum to 1, so dq, dk and dv are all wrong. Triggers: always (rows with a kept key)"
        ),
        "source": "pytorch/pytorch#181645",
        "report": "https://github.com/pytorch/pytorch/issues/181645",
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
    {
        "name": "bwd-fla-normalizer-detached",
        "api": "numpy-backward",
        "fn": "bwd_normalizer_detached",
        "correct": False,
        "bug": "softmax-normalizer-gradient-dropped",
        "parameter": (
            "the softmax normalizer is treated as a constant (its gradient path severed), so dS = P * dP "
            "without the -P * rowsum(P * dP) term: dq and dk are wrong, dv is right. "
            "Triggers: always (rows with a kept key)"
        ),
        "source": "fla-org/flash-linear-attention#875",
        "report": "https://github.com/fla-org/flash-linear-attention/pull/875",
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
    {
        "name": "bwd-mlpack-softmax-backward-input",
        "api": "numpy-backward",
        "fn": "bwd_softmax_layer_backward",
        "correct": False,
        "bug": "softmax-backward-given-input",
        "parameter": (
            "the softmax layer's Backward expects the output of Forward but is handed its input (the scaled "
            "scores), so dS = S * (dP - rowsum(S * dP)): dq and dk are wrong (non-finite where keys are "
            "dropped, the scores being -inf there), dv is right. Triggers: always"
        ),
        "source": "mlpack/mlpack#3471",
        "report": "https://github.com/mlpack/mlpack/pull/3471",
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
    {
        "name": "bwd-jax-head-broadcast-reshape",
        "api": "numpy-backward",
        "fn": "bwd_flat_batch_heads",
        "correct": False,
        "bug": "broadcast-kv-head-not-expanded",
        "parameter": (
            "the (batch, head) axes are flattened and k/v reshaped to (B * H, Sk, D) as if they carried every "
            "query head; a k/v head axis of size 1 (broadcast) does not reshape (an exception). "
            "Triggers: k/v with a size-1 head axis against H > 1 query heads"
        ),
        "source": "jax-ml/jax#36702",
        "report": "https://github.com/jax-ml/jax/pull/36702",
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
    {
        "name": "bwd-fajax-dk-carry-like-q",
        "api": "numpy-backward",
        "fn": "bwd_query_chunk_scan",
        "correct": False,
        "bug": "dk-accumulator-query-shape",
        "parameter": (
            "the query-chunk scan initialises its dk carry with q's shape (q_len rows) instead of k's, which "
            "is only right when Sq == Sk; otherwise the first update fails to broadcast (an exception). "
            "Triggers: Sq != Sk"
        ),
        "source": "lucidrains/flash-attention-jax#7",
        "report": "https://github.com/lucidrains/flash-attention-jax/issues/7",
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
    {
        "name": "bwd-fastvideo-query-padding-live",
        "api": "numpy-backward",
        "fn": "bwd_block_sparse_padded_tiles",
        "correct": False,
        "bug": "query-padding-not-masked-in-dkdv",
        "parameter": (
            "queries are padded once to whole tiles of 32 by repeating the boundary row and only the KV-side "
            "mask is applied, so the padded copies of the last query row add to dK and dV (dq, sliced back, "
            "is right). Triggers: Sq not a multiple of 32 with a kept key in the last query row"
        ),
        "source": "hao-ai-lab/FastVideo#1180",
        "report": "https://github.com/hao-ai-lab/FastVideo/issues/1180",
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
    {
        "name": "bwd-query-tiles-lse",
        "api": "numpy-backward",
        "fn": "bwd_query_tiles_lse",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
    {
        "name": "bwd-rowwise-jacobian",
        "api": "numpy-backward",
        "fn": "bwd_rowwise_jacobian",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "gqa", "dv-ne-d"],
    },
]
