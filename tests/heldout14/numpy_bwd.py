"""Held-out NumPy attention backward kernels, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None).

Returns (dq, dk, dv), the gradients of loss = sum(d_out * O) for the forward of contract 1 (bool keep-mask,
True = attend; scale None means 1/sqrt(D)). k/v may have a head axis of size 1 broadcast against q's heads;
dk and dv come back with k/v's shape (summed over the broadcast axis). Rows with no kept key have zero output
and zero gradients. Six kernels carry one mistake each (marked by a BUG comment), two are correct.
"""
import numpy as np


def _sum_to(x, shape):
    """Sum a broadcast gradient back to `shape` (leading axes and size-1 axes)."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    axes = tuple(a for a, (n, m) in enumerate(zip(shape, x.shape)) if n == 1 and m != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def _probs(q, k, mask, scale):
    """Attention weights (zeros on rows with no kept key), in q's dtype."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * q.dtype.type(scale)
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    return (e / np.where(z > 0.0, z, 1.0)).astype(q.dtype)


# --- kernel: bwd_softmax_elementwise_derivative ---
def bwd_softmax_elementwise_derivative(q, k, v, d_out, mask=None, scale=None):
    """Layer-by-layer backprop: matmul, softmax activation, matmul; each layer has its own gradient."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p = _probs(q, k, mask, scale)
    grad_v = np.matmul(np.swapaxes(p, -1, -2), d_out)
    grad_p = np.matmul(d_out, np.swapaxes(v, -1, -2))
    grad_s = p * (1.0 - p) * grad_p  # BUG: elementwise softmax derivative
    grad_s = (grad_s * scale).astype(q.dtype)
    dq = np.matmul(grad_s, k)
    dk = np.matmul(np.swapaxes(grad_s, -1, -2), q)
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(grad_v, v.shape).astype(v.dtype))


# --- kernel: bwd_delta_with_output_strides ---
def bwd_delta_with_output_strides(q, k, v, d_out, mask=None, scale=None):
    """Flash-style backward: the forward kept O in (B, S, H, D) order; a preprocess computes delta = rowsum(O dO)."""
    sm_scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p = _probs(q, k, mask, sm_scale)
    o = np.matmul(p, v)
    if o.ndim >= 3:
        o_saved = np.ascontiguousarray(np.swapaxes(o, -2, -3))
        do_rows = np.ascontiguousarray(d_out).reshape(o_saved.shape)  # BUG: dO read with O's strides
        delta = np.swapaxes(np.sum(o_saved * do_rows, axis=-1), -1, -2)[..., None]
    else:
        delta = np.sum(o * d_out, axis=-1, keepdims=True)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = (p * (dp - delta) * sm_scale).astype(q.dtype)
    dq = np.matmul(ds, k)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)
    return (_sum_to(dq, q.shape).astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_dkdv_loop_from_key_block ---
def bwd_dkdv_loop_from_key_block(q, k, v, d_out, mask=None, scale=None):
    """Tutorial-style two-kernel backward: dK/dV per key block looping over query blocks, dQ per query block."""
    sm_scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    dt = q.dtype
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    qb = np.broadcast_to(q, batch + q.shape[-2:])
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    vb = np.broadcast_to(v, batch + v.shape[-2:])
    keep = np.ones(batch + (sq, sk), dtype=bool)
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), batch + (sq, sk))
    # forward statistics: row log-sum-exp and delta = rowsum(dO * O)
    s_all = np.where(keep, np.matmul(qb, np.swapaxes(kb, -1, -2)) * dt.type(sm_scale), -np.inf)
    m = np.max(s_all, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        lse = m + np.log(np.sum(np.exp(s_all - m), axis=-1, keepdims=True))
    p_all = np.where(np.isfinite(lse), np.exp(s_all - np.where(np.isfinite(lse), lse, 0.0)), 0.0).astype(dt)
    delta = np.sum(np.matmul(p_all, vb) * d_out, axis=-1, keepdims=True)

    def tile(i0, i1, j0, j1):
        s = np.matmul(qb[..., i0:i1, :], np.swapaxes(kb[..., j0:j1, :], -1, -2)) * dt.type(sm_scale)
        s = np.where(keep[..., i0:i1, j0:j1], s, -np.inf)
        lse_t = lse[..., i0:i1, :]
        p = np.where(np.isfinite(lse_t), np.exp(s - np.where(np.isfinite(lse_t), lse_t, 0.0)), 0.0).astype(dt)
        dp = np.matmul(d_out[..., i0:i1, :], np.swapaxes(vb[..., j0:j1, :], -1, -2))
        ds = (p * (dp - delta[..., i0:i1, :])).astype(dt)
        return p, ds

    BLOCK_M, BLOCK_N = 16, 16
    dk = np.zeros(batch + kb.shape[-2:], dtype=dt)
    dv = np.zeros(batch + vb.shape[-2:], dtype=dt)
    for start_n in range(0, sk, BLOCK_N):
        end_n = min(start_n + BLOCK_N, sk)
        lo = start_n  # BUG: causal tutorial's start; non-causal needs 0
        for start_m in range(lo, sq, BLOCK_M):
            end_m = min(start_m + BLOCK_M, sq)
            p, ds = tile(start_m, end_m, start_n, end_n)
            dv[..., start_n:end_n, :] += np.matmul(np.swapaxes(p, -1, -2), d_out[..., start_m:end_m, :])
            dk[..., start_n:end_n, :] += np.matmul(np.swapaxes(ds, -1, -2), qb[..., start_m:end_m, :])
    dq = np.zeros(batch + qb.shape[-2:], dtype=dt)
    for start_m in range(0, sq, BLOCK_M):
        end_m = min(start_m + BLOCK_M, sq)
        for start_n in range(0, sk, BLOCK_N):
            end_n = min(start_n + BLOCK_N, sk)
            _, ds = tile(start_m, end_m, start_n, end_n)
            dq[..., start_m:end_m, :] += np.matmul(ds, kb[..., start_n:end_n, :])
    dq = dq * dt.type(sm_scale)
    dk = dk * dt.type(sm_scale)
    return (_sum_to(dq, q.shape).astype(dt), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_delta_product_rounded ---
def _round_to_bf16(x):
    """Round float32 values to bfloat16 precision (round to nearest even), kept as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bias = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + bias) & np.uint32(0xFFFF0000)).view(np.float32)


def bwd_delta_product_rounded(q, k, v, d_out, mask=None, scale=None):
    """Backward preprocess with a 16-bit saved O: the product O * dO feeds an fp32 row reduction."""
    acc = q.dtype
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p = _probs(q, k, mask, scale)
    o = np.matmul(p, v)
    delta = np.sum(_round_to_bf16(o * d_out).astype(acc), axis=-1, keepdims=True)  # BUG: 16-bit O * dO
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = (p * (dp - delta)).astype(acc) * acc.type(scale)
    dq = np.matmul(ds, k)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    return (_sum_to(dq, q.shape).astype(acc), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_broadcast_kv_grad_mean ---
def bwd_broadcast_kv_grad_mean(q, k, v, d_out, mask=None, scale=None):
    """Custom gradient of a broadcast operand: reduce the expanded gradient back to the operand's shape."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    p = _probs(q, k, mask, scale)
    o = np.matmul(p, v)
    delta = np.sum(o * d_out, axis=-1, keepdims=True)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = (p * (dp - delta) * scale).astype(q.dtype)
    dq = np.matmul(ds, k)
    dk_full = np.matmul(np.swapaxes(ds, -1, -2), q)
    dv_full = np.matmul(np.swapaxes(p, -1, -2), d_out)
    reduce = np.mean  # BUG: mean over the broadcast copies, not the sum

    def to_shape(g, shape):
        while g.ndim > len(shape):
            g = np.sum(g, axis=0)
        for ax, (n, m) in enumerate(zip(shape, g.shape)):
            if n == 1 and m != 1:
                g = reduce(g, axis=ax, keepdims=True)
        return g

    return (_sum_to(dq, q.shape).astype(q.dtype), to_shape(dk_full, k.shape).astype(k.dtype),
            to_shape(dv_full, v.shape).astype(v.dtype))


# --- kernel: bwd_key_tiles_assume_divisible ---
def bwd_key_tiles_assume_divisible(q, k, v, d_out, mask=None, scale=None):
    """Backward over key tiles of 32 (the divisibility assertion removed), from saved row statistics."""
    dt = q.dtype
    sm_scale = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    vb = np.broadcast_to(v, batch + v.shape[-2:])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), batch + (sq, sk))
    p_full = _probs(q, k, mask, sm_scale)
    s_full = np.matmul(q, np.swapaxes(k, -1, -2)) * sm_scale
    if keep is not None:
        s_full = np.where(keep, s_full, -np.inf)
    row_max = np.max(s_full, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    with np.errstate(divide="ignore"):
        lse = row_max + np.log(np.sum(np.exp(s_full - row_max), axis=-1, keepdims=True))
    delta = np.sum(np.matmul(p_full, v) * d_out, axis=-1, keepdims=True)
    BLOCK_N = 32
    n_blocks = sk // BLOCK_N  # BUG: assumes Sk % 32 == 0: the keys of a partial last tile never get gradients
    dq = np.zeros(batch + q.shape[-2:], dtype=dt)
    dk = np.zeros(batch + k.shape[-2:], dtype=dt)
    dv = np.zeros(batch + v.shape[-2:], dtype=dt)
    for nb in range(n_blocks):
        j0, j1 = nb * BLOCK_N, min((nb + 1) * BLOCK_N, sk)
        s = np.matmul(q, np.swapaxes(kb[..., j0:j1, :], -1, -2)) * sm_scale
        if keep is not None:
            s = np.where(keep[..., j0:j1], s, -np.inf)
        p = np.where(np.isfinite(lse), np.exp(s - np.where(np.isfinite(lse), lse, 0.0)), 0.0).astype(dt)
        dv[..., j0:j1, :] = np.matmul(np.swapaxes(p, -1, -2), d_out)
        dp = np.matmul(d_out, np.swapaxes(vb[..., j0:j1, :], -1, -2))
        ds = (p * (dp - delta) * sm_scale).astype(dt)
        dq += np.matmul(ds, kb[..., j0:j1, :])
        dk[..., j0:j1, :] = np.matmul(np.swapaxes(ds, -1, -2), q)
    return (_sum_to(dq, q.shape).astype(dt), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_query_tiles_base2_lse ---
def bwd_query_tiles_base2_lse(q, k, v, d_out, mask=None, scale=None):
    """Query tiles of 13; each tile recomputes P from a base-2 log-sum-exp and accumulates dK, dV."""
    dt = q.dtype
    sm = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    c = dt.type(sm * 1.4426950408889634)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    qb = np.broadcast_to(q, batch + q.shape[-2:])
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    vb = np.broadcast_to(v, batch + v.shape[-2:])
    dob = np.broadcast_to(d_out, batch + d_out.shape[-2:])
    keep = np.ones(batch + (sq, sk), dtype=bool)
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), batch + (sq, sk))
    dq = np.zeros(batch + q.shape[-2:], dtype=dt)
    dk = np.zeros(batch + k.shape[-2:], dtype=dt)
    dv = np.zeros(batch + v.shape[-2:], dtype=dt)
    bm = 13
    for i0 in range(0, sq, bm):
        i1 = min(i0 + bm, sq)
        s2 = np.where(keep[..., i0:i1, :], np.matmul(qb[..., i0:i1, :], np.swapaxes(kb, -1, -2)) * c, -np.inf)
        m2 = np.max(s2, axis=-1, keepdims=True)
        m2 = np.where(np.isfinite(m2), m2, 0.0)
        tot = np.sum(np.exp2(s2 - m2), axis=-1, keepdims=True)
        lse2 = np.where(tot > 0.0, m2 + np.log2(np.where(tot > 0.0, tot, 1.0)), np.inf)
        p = np.exp2(s2 - lse2).astype(dt)
        do_t = dob[..., i0:i1, :]
        o_t = np.matmul(p, vb)
        delta = np.sum(o_t * do_t, axis=-1, keepdims=True)
        dp = np.matmul(do_t, np.swapaxes(vb, -1, -2))
        ds = (p * (dp - delta) * dt.type(sm)).astype(dt)
        dq[..., i0:i1, :] = np.matmul(ds, kb)
        dk += np.matmul(np.swapaxes(ds, -1, -2), qb[..., i0:i1, :])
        dv += np.matmul(np.swapaxes(p, -1, -2), do_t)
    return (_sum_to(dq, q.shape).astype(dt), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_jacobian_rowsum_pdp ---
def bwd_jacobian_rowsum_pdp(q, k, v, d_out, mask=None, scale=None):
    """Softmax Jacobian-vector product with the row term sum_j P dP (no output recompute), via einsum."""
    dt = q.dtype
    sm = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    p = _probs(q, k, mask, sm)
    dp = np.einsum("...id,...jd->...ij", d_out, v)
    row = np.einsum("...ij,...ij->...i", p, dp)[..., None]
    ds = (p * dp - p * row).astype(dt)
    dq = np.einsum("...ij,...jd->...id", ds, k) * sm
    dk = np.einsum("...ij,...id->...jd", ds, np.broadcast_to(q, ds.shape[:-2] + q.shape[-2:])) * sm
    dv = np.einsum("...ij,...id->...jd", p, np.broadcast_to(d_out, p.shape[:-2] + d_out.shape[-2:]))
    return (_sum_to(dq, q.shape).astype(dt), _sum_to(dk, k.shape).astype(k.dtype),
            _sum_to(dv, v.shape).astype(v.dtype))


CATALOG = [
    dict(name="bwd-mlfromscratch-softmax-elementwise", api="numpy-backward", fn="bwd_softmax_elementwise_derivative",
         correct=False, bug="softmax-derivative-elementwise",
         parameter="the softmax gradient is taken elementwise, dS = P (1 - P) dP, keeping only the diagonal of "
                   "the Jacobian (the - P rowsum(P dP) coupling is lost): dq and dk wrong, dv right. "
                   "Triggers: always (rows with two or more kept keys)",
         source="eriklindernoren/ML-From-Scratch#71",
         report="https://github.com/eriklindernoren/ML-From-Scratch/issues/71",
         dtype="float64", features=["mask"]),
    dict(name="bwd-dkernel-do-output-strides", api="numpy-backward", fn="bwd_delta_with_output_strides",
         correct=False, bug="delta-dout-layout-mismatch",
         parameter="delta = rowsum(O * dO) reads dO with the strides of O's saved (B, S, H, D) buffer while dO is "
                   "(B, H, S, D): every row's delta pairs O with another (head, row) of dO; dv right. "
                   "Triggers: inputs of 3 or more dims with a size > 1 on axis -3 and Sq > 1",
         source="linxihui/dkernel#1", report="https://github.com/linxihui/dkernel/pull/1",
         dtype="float64", features=["mask"]),
    dict(name="bwd-triton-dkdv-loop-causal-start", api="numpy-backward", fn="bwd_dkdv_loop_from_key_block",
         correct=False, bug="dkdv-query-loop-starts-at-key-block",
         parameter="the dK/dV kernel starts its query-block loop at the key block's start (start_m = start_n, "
                   "the causal tutorial's bound), so query rows before the key block never add to dk, dv "
                   "(blocks of 16); dq right. Triggers: a kept key j >= 16 seen by a query i < 16 * (j // 16)",
         source="triton-lang/triton#8565", report="https://github.com/triton-lang/triton/pull/8565",
         dtype="float64", features=["mask"]),
    dict(name="bwd-cudnn-delta-product-16bit", api="numpy-backward", fn="bwd_delta_product_rounded",
         correct=False, bug="delta-product-rounded-16bit",
         parameter="the products O * dO of delta = rowsum(O * dO) are rounded to bfloat16 before the fp32 row "
                   "sum, whatever the input dtype: ~1e-3 relative error in dq, dk. "
                   "Triggers: always at float32 resolution",
         source="NVIDIA/cudnn-frontend#1134", report="https://github.com/NVIDIA/cudnn-frontend/pull/1134",
         dtype="float32", features=["mask"]),
    dict(name="bwd-phasedlstm-broadcast-grad-mean", api="numpy-backward", fn="bwd_broadcast_kv_grad_mean",
         correct=False, bug="broadcast-grad-mean",
         parameter="dk and dv of k/v with a broadcast head axis of size 1 are reduced with the mean over the "
                   "query heads instead of the sum (1/H of the true gradient). "
                   "Triggers: k/v head axis 1 broadcast against H > 1 query heads",
         source="philipperemy/tensorflow-phased-lstm#9",
         report="https://github.com/philipperemy/tensorflow-phased-lstm/issues/9",
         dtype="float64", features=["mask"]),
    dict(name="bwd-rocm-key-tiles-tail-dropped", api="numpy-backward", fn="bwd_key_tiles_assume_divisible",
         correct=False, bug="partial-key-tile-dropped",
         parameter="the key-tile loop runs Sk // 32 tiles: keys of a partial last tile get zero dk, dv and add "
                   "nothing to dq. Triggers: Sk not a multiple of 32 with a kept key in the partial tile",
         source="ROCm/triton#666", report="https://github.com/ROCm/triton/issues/666",
         dtype="float64", features=["mask"]),
    dict(name="bwd-query-tiles-base2-lse", api="numpy-backward", fn="bwd_query_tiles_base2_lse", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
    dict(name="bwd-jacobian-rowsum-pdp", api="numpy-backward", fn="bwd_jacobian_rowsum_pdp", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask"]),
]
