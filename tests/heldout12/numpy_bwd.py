"""Held-out NumPy backward kernels (API ``numpy-backward``): ``fn(q, k, v, d_out, mask=None, scale=None)``
returning ``(dq, dk, dv)``, the gradients of the refimpl forward (bool keep-mask, scale=None -> 1/sqrt(D))
for loss = sum(d_out * O). k/v may have a head axis of size 1 broadcast against q's heads: dk, dv come back
with k/v's shape (summed over the broadcast axis). Rows with no kept key have zero output and zero gradients.
"""
import math

import numpy as np

# --- kernel: bwd_ds_without_delta ---


def bwd_ds_without_delta(q, k, v, d_out, mask=None, scale=None):
    """Graph-style softmax gradient assembled from elementwise ops."""
    dt = q.dtype
    q64, k64, v64, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = q64 @ np.swapaxes(k64, -1, -2) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v64, -1, -2)
    ds = p * dp  # BUG: misses the "- rowsum(dO * O)" term: dS = P * (dP - delta)
    dq = ds @ k64 * sc
    dk = np.swapaxes(ds, -1, -2) @ q64 * sc
    for ax in range(dk.ndim - 2):
        if k.shape[ax] == 1 and dk.shape[ax] != 1:
            dk = dk.sum(axis=ax, keepdims=True)
            dv = dv.sum(axis=ax, keepdims=True)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_softmax_diag_jacobian ---


def bwd_softmax_diag_jacobian(q, k, v, d_out, mask=None, scale=None):
    """From-scratch framework style: softmax layer backward written from its derivative."""
    dt = q.dtype
    Q, K, V, dO = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    alpha = 1.0 / math.sqrt(Q.shape[-1]) if scale is None else float(scale)
    logits = np.matmul(Q, np.swapaxes(K, -1, -2)) * alpha
    if mask is not None:
        logits = np.where(np.asarray(mask, dtype=bool), logits, -np.inf)
    mx = np.max(logits, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    ex = np.exp(logits - mx)
    den = np.sum(ex, axis=-1, keepdims=True)
    A = np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)
    dA = np.matmul(dO, np.swapaxes(V, -1, -2))
    dlogits = A * (1.0 - A) * dA  # BUG: diagonal of the softmax Jacobian only, -A_i A_j terms dropped
    dQ = np.matmul(dlogits, K) * alpha
    dK = np.matmul(np.swapaxes(dlogits, -1, -2), Q) * alpha
    dV = np.matmul(np.swapaxes(A, -1, -2), dO)
    for ax in range(dK.ndim - 2):
        if K.shape[ax] == 1 and dK.shape[ax] != 1:
            dK = dK.sum(axis=ax, keepdims=True)
            dV = dV.sum(axis=ax, keepdims=True)
    return dQ.astype(dt), dK.astype(dt), dV.astype(dt)


# --- kernel: bwd_delta_reduce_axis ---


def bwd_delta_reduce_axis(q, k, v, d_out, mask=None, scale=None):
    """Triton-tutorial style: delta = sum(P * dP) computed from the recomputed tile."""
    dt = q.dtype
    q64, k64, v64, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    qk = q64 @ np.swapaxes(k64, -1, -2) * sm_scale
    if mask is not None:
        qk = np.where(np.asarray(mask, dtype=bool), qk, -np.inf)
    m = qk.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(qk - m)
    l_ = p.sum(axis=-1, keepdims=True)
    p = np.where(l_ > 0, p / np.where(l_ > 0, l_, 1.0), 0.0)
    dp = do @ np.swapaxes(v64, -1, -2)
    delta = np.sum(p * dp, axis=-2, keepdims=True)  # BUG: reduced over the query axis; delta is per row (axis=-1)
    ds = p * (dp - delta)
    dq = ds @ k64 * sm_scale
    dk = np.swapaxes(ds, -1, -2) @ q64 * sm_scale
    dv = np.swapaxes(p, -1, -2) @ do
    for ax in range(dk.ndim - 2):
        if k.shape[ax] == 1 and dk.shape[ax] != 1:
            dk = dk.sum(axis=ax, keepdims=True)
            dv = dv.sum(axis=ax, keepdims=True)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_recompute_unmasked ---


def bwd_recompute_unmasked(q, k, v, d_out, mask=None, scale=None):
    """Recompute-based backward (forward saved only the LSE-free inputs); P is rebuilt from Q and K."""
    dt = q.dtype
    q64, k64, v64, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    softmax_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool),
                                                     lead + (q.shape[-2], k.shape[-2]))
    scores = q64 @ np.swapaxes(k64, -1, -2) * softmax_scale
    scores_m = scores  # BUG: the recompute skips the mask (applied in the forward only)
    row_max = scores_m.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    p = np.exp(scores_m - row_max)
    denom = p.sum(axis=-1, keepdims=True)
    p = np.where(denom > 0, p / np.where(denom > 0, denom, 1.0), 0.0)
    o = p @ v64
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v64, -1, -2)
    ds = p * (dp - np.sum(do * o, axis=-1, keepdims=True))
    dq = ds @ k64 * softmax_scale
    dk = np.swapaxes(ds, -1, -2) @ q64 * softmax_scale
    del keep
    for ax in range(dk.ndim - 2):
        if k.shape[ax] == 1 and dk.shape[ax] != 1:
            dk = dk.sum(axis=ax, keepdims=True)
            dv = dv.sum(axis=ax, keepdims=True)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_shared_kv_first_head ---


def bwd_shared_kv_first_head(q, k, v, d_out, mask=None, scale=None):
    """Expanded-head backward: K/V broadcast to q's heads, per-head partial dK/dV, then reduced."""
    dt = q.dtype
    q64, do = np.asarray(q, dtype=np.float64), np.asarray(d_out, dtype=np.float64)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k64 = np.broadcast_to(np.asarray(k, dtype=np.float64), lead + k.shape[-2:])
    v64 = np.broadcast_to(np.asarray(v, dtype=np.float64), lead + v.shape[-2:])
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    s = q64 @ np.swapaxes(k64, -1, -2) * sc
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    m = s.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    z = p.sum(-1, keepdims=True)
    p = np.where(z > 0, p / np.where(z > 0, z, 1.0), 0.0)
    o = p @ v64
    dv_part = np.swapaxes(p, -1, -2) @ do
    ds = p * (do @ np.swapaxes(v64, -1, -2) - (do * o).sum(-1, keepdims=True))
    dq = ds @ k64 * sc
    dk_part = np.swapaxes(ds, -1, -2) @ q64 * sc
    dk, dv = dk_part, dv_part
    for ax in range(len(lead)):
        if k.shape[ax] == 1 and lead[ax] != 1:
            dk = dk.take([0], axis=ax)  # BUG: first head's partial kept for a shared kv head, not the sum
            dv = dv.sum(axis=ax, keepdims=True)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_scale_in_ds_and_dq ---


def bwd_scale_in_ds_and_dq(q, k, v, d_out, mask=None, scale=None):
    """Layer-style backward with the scale folded into dS (as in fused kernels)."""
    dt = q.dtype
    q64, k64, v64, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    head_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = q64 @ np.swapaxes(k64, -1, -2) * head_scale
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    mx = scores.max(-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    w = np.exp(scores - mx)
    tot = w.sum(-1, keepdims=True)
    w = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 0.0)
    out = w @ v64
    dw = do @ np.swapaxes(v64, -1, -2)
    ds = w * (dw - (do * out).sum(-1, keepdims=True)) * head_scale
    dq = (ds @ k64) * head_scale  # BUG: scale applied a second time (ds already carries it); dk below is right
    dk = np.swapaxes(ds, -1, -2) @ q64
    dv = np.swapaxes(w, -1, -2) @ do
    for ax in range(dk.ndim - 2):
        if k.shape[ax] == 1 and dk.shape[ax] != 1:
            dk = dk.sum(axis=ax, keepdims=True)
            dv = dv.sum(axis=ax, keepdims=True)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_jacobian_rows_einsum ---


def bwd_jacobian_rows_einsum(q, k, v, d_out, mask=None, scale=None):
    """Correct: delta taken as rowsum(P * dP) (equal to rowsum(dO * O)), every product an einsum, and
    broadcast kv head axes reduced by summing the per-head partials."""
    dt = q.dtype
    q64, k64, v64, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    kb = np.broadcast_to(k64, lead + k.shape[-2:])
    vb = np.broadcast_to(v64, lead + v.shape[-2:])
    qb = np.broadcast_to(q64, lead + q.shape[-2:])
    s = np.einsum("...id,...jd->...ij", qb, kb) * sc
    if mask is not None:
        s = np.where(np.broadcast_to(np.asarray(mask, dtype=bool), s.shape), s, -np.inf)
    mx = np.max(s, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(s - mx)
    tot = e.sum(-1, keepdims=True)
    p = np.where(tot > 0, e / np.where(tot > 0, tot, 1.0), 0.0)
    dp = np.einsum("...ie,...je->...ij", do, vb)
    delta = np.einsum("...ij,...ij->...i", p, dp)[..., None]
    ds = p * (dp - delta)
    dq = np.einsum("...ij,...jd->...id", ds, kb) * sc
    dk = np.einsum("...ij,...id->...jd", ds, qb) * sc
    dv = np.einsum("...ij,...ie->...je", p, do)

    def reduce_to(x, shape):
        extra = x.ndim - len(shape)
        if extra:
            x = x.sum(axis=tuple(range(extra)))
        axes = tuple(a for a, n in enumerate(shape) if n == 1 and x.shape[a] != 1)
        return x.sum(axis=axes, keepdims=True) if axes else x

    return (reduce_to(dq, q.shape).astype(dt), reduce_to(dk, k.shape).astype(dt),
            reduce_to(dv, v.shape).astype(dt))


# --- kernel: bwd_query_tiles_lse ---


def bwd_query_tiles_lse(q, k, v, d_out, mask=None, scale=None):
    """Correct: FlashAttention-2 order, query tiles of 13 rows: the forward LSE and O are recomputed per
    tile, P = exp(S - LSE) (0 for rows with LSE = -inf), dK and dV accumulated over the tiles."""
    dt = q.dtype
    q64, k64, v64, do = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], d_out.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    kb = np.broadcast_to(k64, lead + k.shape[-2:])
    vb = np.broadcast_to(v64, lead + v.shape[-2:])
    dq = np.zeros(lead + q.shape[-2:])
    dk = np.zeros(lead + k.shape[-2:])
    dv = np.zeros(lead + v.shape[-2:])
    for i0 in range(0, sq, 13):
        i1 = min(i0 + 13, sq)
        qt = np.broadcast_to(q64[..., i0:i1, :], lead + (i1 - i0, q.shape[-1]))
        dot = np.broadcast_to(do[..., i0:i1, :], lead + (i1 - i0, v.shape[-1]))
        s = qt @ np.swapaxes(kb, -1, -2) * sc
        if keep is not None:
            s = np.where(keep[..., i0:i1, :], s, -np.inf)
        mx = s.max(-1, keepdims=True)
        mx_safe = np.where(np.isfinite(mx), mx, 0.0)
        with np.errstate(divide="ignore"):
            lse = mx_safe + np.log(np.exp(s - mx_safe).sum(-1, keepdims=True))
        p = np.where(np.isfinite(lse), np.exp(s - np.where(np.isfinite(lse), lse, 0.0)), 0.0)
        o = p @ vb
        delta = (dot * o).sum(-1, keepdims=True)
        ds = p * (dot @ np.swapaxes(vb, -1, -2) - delta)
        dq[..., i0:i1, :] = ds @ kb * sc
        dk += np.swapaxes(ds, -1, -2) @ qt * sc
        dv += np.swapaxes(p, -1, -2) @ dot

    def fold(x, shape):
        extra = x.ndim - len(shape)
        if extra:
            x = x.sum(axis=tuple(range(extra)))
        for a, n in enumerate(shape):
            if n == 1 and x.shape[a] != 1:
                x = x.sum(axis=a, keepdims=True)
        return x

    return fold(dq, q.shape).astype(dt), fold(dk, k.shape).astype(dt), fold(dv, v.shape).astype(dt)


CATALOG = [
    dict(name="bwd-tvm-ds-no-delta", api="numpy-backward", fn="bwd_ds_without_delta", correct=False,
         bug="missing-delta-term",
         parameter="dS = P * dP without subtracting delta = rowsum(dO * O) (= rowsum(P * dP)): dq and dk are "
                   "wrong, dv is right. Triggers: always (rows with a kept key)",
         source="apache/tvm#1201", report="https://github.com/apache/tvm/pull/1201",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-fromscratch-diag-jacobian", api="numpy-backward", fn="bwd_softmax_diag_jacobian",
         correct=False, bug="softmax-jacobian-diagonal-only",
         parameter="the softmax derivative is taken elementwise, dS = P * (1 - P) * dP, dropping the "
                   "off-diagonal -P_i P_j terms of the Jacobian. Triggers: rows with two or more kept keys",
         source="Apiquet/DeepLearningFrameworkFromScratchCpp#1",
         report="https://github.com/Apiquet/DeepLearningFrameworkFromScratchCpp/issues/1",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-colt5-delta-wrong-axis", api="numpy-backward", fn="bwd_delta_reduce_axis", correct=False,
         bug="delta-summed-over-query-axis",
         parameter="delta = sum(P * dP) is reduced over the query axis (-2, one value per key) instead of per "
                   "row (axis -1), so dS = P * (dP - delta) subtracts the wrong term. Triggers: always (rows with "
                   "a kept key, Sq > 1 or a single row whose keys differ)",
         source="lucidrains/CoLT5-attention#8", report="https://github.com/lucidrains/CoLT5-attention/issues/8",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-turing-recompute-unmasked", api="numpy-backward", fn="bwd_recompute_unmasked", correct=False,
         bug="backward-recompute-without-mask",
         parameter="P is recomputed from Q and K without the keep-mask, so dropped keys get weight in dv, dS, dq "
                   "and dk (and fully masked rows get non-zero gradients). Triggers: a mask with a dropped key",
         source="ssiu/flash-attention-turing#5", report="https://github.com/ssiu/flash-attention-turing/pull/5",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-mslk-shared-kv-first-head", api="numpy-backward", fn="bwd_shared_kv_first_head",
         correct=False, bug="broadcast-kv-grad-not-summed",
         parameter="for a k of head axis 1 broadcast against H query heads, dk keeps the first head's partial "
                   "(take [0]) instead of the sum over the heads (dv is summed). Triggers: k/v with a broadcast "
                   "head axis of size 1 against H > 1",
         source="meta-pytorch/MSLK#467", report="https://github.com/meta-pytorch/MSLK/pull/467",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-mlpack-dq-scale-twice", api="numpy-backward", fn="bwd_scale_in_ds_and_dq", correct=False,
         bug="dq-scale-applied-twice",
         parameter="the scale is folded into dS and multiplied into dq once more (dq = scale^2 * dS_raw K; dk is "
                   "right). Triggers: effective scale != 1",
         source="mlpack/mlpack#2375", report="https://github.com/mlpack/mlpack/pull/2375",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-jacobian-rows-einsum", api="numpy-backward", fn="bwd_jacobian_rows_einsum", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-query-tiles-lse", api="numpy-backward", fn="bwd_query_tiles_lse", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
]
