"""Held-out attention backward kernels, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None).

Returns (dq, dk, dv), the gradients of loss = sum(d_out * O) for O = softmax(scale * q k^T, keep-mask) v (the
contract-1 forward). k, v may have a head axis of size 1 broadcast against q's heads (dk, dv come back with k, v's
shape, summed over it); rows with no kept key have zero output and zero gradients. Six kernels carry one mistake each
(marked by a BUG comment), two are correct. See README.md.
"""
import math

import numpy as np


def _sum_to(x, shape):
    """Sum a broadcast gradient back to `shape` (leading axes added by broadcasting, then size-1 axes)."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and x.shape[ax] != 1:
            x = x.sum(axis=ax, keepdims=True)
    return x


def _softmax_masked(s, keep):
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


# --- kernel: bwd_tiled_dv_index ---
def bwd_tiled_dv_index(q, k, v, d_out, mask=None, scale=None):
    """Templated backward over key blocks of 32; dK and dV tiles stored through per-operand head-dim indices."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, qk_head_dim = q.shape[-2:]
    sk, v_head_dim = v.shape[-2:]
    sm = 1.0 / math.sqrt(qk_head_dim) if scale is None else scale
    kb = np.broadcast_to(k, lead + (sk, qk_head_dim))
    vb = np.broadcast_to(v, lead + (sk, v_head_dim))
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    p = _softmax_masked(np.matmul(q, np.swapaxes(kb, -1, -2)) * sm, keep)
    o = np.matmul(p, vb)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    index_k = np.arange(qk_head_dim)
    index_v = np.arange(v_head_dim)
    dq = np.zeros(lead + (sq, qk_head_dim), dtype=q.dtype)
    dk = np.zeros(lead + (sk, qk_head_dim), dtype=q.dtype)
    dv = np.zeros(lead + (sk, v_head_dim), dtype=q.dtype)
    for n0 in range(0, sk, 32):
        n1 = min(n0 + 32, sk)
        p_blk = p[..., n0:n1]
        dv_blk = np.matmul(np.swapaxes(p_blk, -1, -2), d_out)
        dp = np.matmul(d_out, np.swapaxes(vb[..., n0:n1, :], -1, -2))
        ds = p_blk * (dp - delta)
        dq += np.matmul(ds, kb[..., n0:n1, :]) * sm
        dk_blk = np.matmul(np.swapaxes(ds, -1, -2), q) * sm
        dk[..., n0:n1, :][..., index_k] = dk_blk[..., index_k]
        dv[..., n0:n1, :][..., index_k] = dv_blk[..., index_k]  # BUG: dV stored through index_k, not index_v
    assert index_v.size == v_head_dim
    return dq, _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_padded_head_block ---
def _round_head(n):
    return -(-n // 16) * 16


def _pad_cols(x, width):
    x = x[..., :width]
    if x.shape[-1] == width:
        return x
    pad = np.zeros(x.shape[:-1] + (width - x.shape[-1],), dtype=x.dtype)
    return np.concatenate([x, pad], axis=-1)


def bwd_padded_head_block(q, k, v, d_out, mask=None, scale=None):
    """Backward with one padded BLOCK_DMODEL tile width shared by the Q/K and the V/O/dO paths."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    lq, lk, lv = q.shape[-1], k.shape[-1], v.shape[-1]
    sq, sk = q.shape[-2], k.shape[-2]
    sm_scale = 1.0 / math.sqrt(lk) if scale is None else scale
    block_dmodel = _round_head(lk)  # BUG: rounded from the K head dim only, too narrow for V/O when Lv > Lk
    qt = _pad_cols(q, block_dmodel)
    kt = _pad_cols(np.broadcast_to(k, lead + (sk, lk)), block_dmodel)
    vt = _pad_cols(np.broadcast_to(v, lead + (sk, lv)), block_dmodel)
    dot = _pad_cols(d_out, block_dmodel)
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    p = _softmax_masked(np.matmul(qt, np.swapaxes(kt, -1, -2)) * sm_scale, keep)
    o = np.matmul(p, vt)
    d_i = np.sum(o * dot, axis=-1, keepdims=True)
    dp = np.matmul(dot, np.swapaxes(vt, -1, -2))
    ds = p * (dp - d_i) * sm_scale
    dq = np.matmul(ds, kt)[..., :lq]
    dk = np.matmul(np.swapaxes(ds, -1, -2), qt)[..., :lk]
    dv = _pad_cols(np.matmul(np.swapaxes(p, -1, -2), dot), lv)
    return (dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_epilogue_row_store ---
def _store_rows(flat, tile, ncols):
    """Non-TMA epilogue: each tile row is written at row * ncols of the flat gradient, key blocks from the last."""
    rows, tile_cols = tile.shape
    width = tile_cols  # BUG: no head-dim predicate, the padded tile width spills into the next row
    for r in range(rows - 1, -1, -1):
        start = r * ncols
        stop = min(start + width, flat.size)
        flat[start:stop] = tile[r, :stop - start]


def bwd_epilogue_row_store(q, k, v, d_out, mask=None, scale=None):
    """dK/dV accumulated in tiles padded to a multiple of 32 columns, then stored row by row."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv_dim = v.shape[-2:]
    softmax_scale = 1.0 / math.sqrt(d) if scale is None else scale
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv_dim))
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    p = _softmax_masked(np.matmul(q, np.swapaxes(kb, -1, -2)) * softmax_scale, keep)
    o = np.matmul(p, vb)
    dp = np.matmul(d_out, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * softmax_scale
    dk_acc = np.matmul(np.swapaxes(ds, -1, -2), q) * softmax_scale
    dv_acc = np.matmul(np.swapaxes(p, -1, -2), d_out)
    grads = []
    for acc, ncols in ((dk_acc, d), (dv_acc, dv_dim)):
        tile_cols = -(-ncols // 32) * 32
        rows = acc.reshape(-1, ncols)
        tile = np.zeros((rows.shape[0], tile_cols), dtype=acc.dtype)
        tile[:, :ncols] = rows
        flat = np.zeros(rows.size, dtype=acc.dtype)
        _store_rows(flat, tile, ncols)
        grads.append(flat.reshape(acc.shape))
    return dq.astype(q.dtype), _sum_to(grads[0], k.shape).astype(k.dtype), _sum_to(grads[1], v.shape).astype(v.dtype)


# --- kernel: bwd_custom_mask_shared_stride ---
def bwd_custom_mask_shared_stride(q, k, v, d_out, mask=None, scale=None):
    """Custom-mask FlashAttention-2 backward whose Q, K, V share one token stride (N_CTX) per (batch, head)."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n_ctx, head_dim = q.shape[-2:]
    sk, dv_dim = v.shape[-2:]
    bh = int(np.prod(lead)) if lead else 1
    sm_scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    q_rows = np.broadcast_to(q, lead + (n_ctx, head_dim)).reshape(bh * n_ctx, head_dim)
    do_rows = np.broadcast_to(d_out, lead + (n_ctx, dv_dim)).reshape(bh * n_ctx, dv_dim)
    k_rows = np.ascontiguousarray(np.broadcast_to(k, lead + (sk, head_dim))).reshape(bh * sk, head_dim)
    v_rows = np.ascontiguousarray(np.broadcast_to(v, lead + (sk, dv_dim))).reshape(bh * sk, dv_dim)
    keep_all = np.ones(lead + (n_ctx, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (n_ctx, sk))
    keep_all = keep_all.reshape(bh, n_ctx, sk)
    seq_stride = n_ctx  # BUG: K/V rows addressed with Q's sequence stride; wrong whenever Sk != Sq
    dq_rows = np.zeros_like(q_rows)
    dk_rows = np.zeros_like(k_rows)
    dv_rows = np.zeros_like(v_rows)
    for z in range(bh):
        qi = slice(z * n_ctx, (z + 1) * n_ctx)
        kv_idx = z * seq_stride + np.arange(sk)
        kk = np.take(k_rows, kv_idx, axis=0)
        vv = np.take(v_rows, kv_idx, axis=0)
        p = _softmax_masked(q_rows[qi] @ kk.T * sm_scale, keep_all[z])
        do = do_rows[qi]
        delta = np.sum(do * (p @ vv), axis=-1, keepdims=True)
        ds = p * (do @ vv.T - delta)
        dq_rows[qi] = ds @ kk * sm_scale
        dk_rows[kv_idx] += ds.T @ q_rows[qi] * sm_scale
        dv_rows[kv_idx] += p.T @ do
    dq = dq_rows.reshape(lead + (n_ctx, head_dim))
    dk = _sum_to(dk_rows.reshape(lead + (sk, head_dim)), k.shape)
    dv = _sum_to(dv_rows.reshape(lead + (sk, dv_dim)), v.shape)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


# --- kernel: bwd_half_softmax_saved ---
def bwd_half_softmax_saved(q, k, v, d_out, mask=None, scale=None):
    """Backward that recomputes the attention probabilities after casting the scores to half to save memory."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv_dim = v.shape[-2:]
    qk_scale = 1.0 / math.sqrt(d) if scale is None else scale
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv_dim))
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    s = np.matmul(q, np.swapaxes(kb, -1, -2)) * qk_scale
    p = _softmax_masked(s.astype(np.float16), keep).astype(s.dtype)  # BUG: exp and softmax computed in half
    o = np.matmul(p, vb)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True)) * qk_scale
    dq = np.matmul(ds, kb)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)
    return dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_query_block_grid ---
BLOCK = 16


def bwd_query_block_grid(q, k, v, d_out, mask=None, scale=None):
    """Parallel backward: dQ by a grid of query blocks, dK/dV from the full dS."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    n, d = q.shape[-2:]
    sk, e = v.shape[-2:]
    s_scale = 1.0 / math.sqrt(d) if scale is None else scale
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, e))
    keep = np.ones(lead + (n, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (n, sk))
    p = _softmax_masked(np.matmul(q, np.swapaxes(kb, -1, -2)) * s_scale, keep)
    o = np.matmul(p, vb)
    ds = p * (np.matmul(d_out, np.swapaxes(vb, -1, -2)) - np.sum(d_out * o, axis=-1, keepdims=True)) * s_scale
    dq = np.zeros(lead + (n, d), dtype=q.dtype)
    num_block = n // BLOCK  # BUG: floor division, the tail of n % BLOCK query rows is never visited
    for blk in range(num_block):
        i0, i1 = blk * BLOCK, min((blk + 1) * BLOCK, n)
        dq[..., i0:i1, :] = np.matmul(ds[..., i0:i1, :], kb)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    return dq, _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_dense_jvp ---
def bwd_dense_jvp(q, k, v, d_out, mask=None, scale=None):
    """Correct: dense backward, dS = P * (dP - rowsum(dO * O)) per (batch, head)."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv_dim = v.shape[-2:]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv_dim))
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    p = _softmax_masked(np.matmul(q, np.swapaxes(kb, -1, -2)) * sc, keep)
    o = np.matmul(p, vb)
    dp = np.matmul(d_out, np.swapaxes(vb, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, kb) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    return dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_key_tiles_lse2 ---
def bwd_key_tiles_lse2(q, k, v, d_out, mask=None, scale=None):
    """Correct: two passes over key tiles of 24, the row log-sum-exp kept in base 2 and P recomputed per tile."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv_dim = v.shape[-2:]
    log2e = 1.4426950408889634
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    kb = np.broadcast_to(k, lead + (sk, d))
    vb = np.broadcast_to(v, lead + (sk, dv_dim))
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    m = np.full(lead + (sq, 1), -np.inf, dtype=q.dtype)
    lsum = np.zeros(lead + (sq, 1), dtype=q.dtype)
    acc = np.zeros(lead + (sq, dv_dim), dtype=q.dtype)
    tiles = [(j0, min(j0 + 24, sk)) for j0 in range(0, sk, 24)]
    for j0, j1 in tiles:
        t = np.where(keep[..., j0:j1], np.matmul(q, np.swapaxes(kb[..., j0:j1, :], -1, -2)) * (sc * log2e), -np.inf)
        m_new = np.maximum(m, t.max(axis=-1, keepdims=True))
        safe = np.where(np.isfinite(m_new), m_new, 0.0)
        corr = np.exp2(np.where(np.isfinite(m), m, safe) - safe)
        pt = np.exp2(t - safe)
        lsum = lsum * corr + pt.sum(axis=-1, keepdims=True)
        acc = acc * corr + np.matmul(pt, vb[..., j0:j1, :])
        m = m_new
    empty = lsum == 0
    lse2 = np.where(empty, np.inf, np.where(np.isfinite(m), m, 0.0) + np.log2(np.where(empty, 1.0, lsum)))
    o = acc / np.where(empty, 1.0, lsum)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    dq = np.zeros(lead + (sq, d), dtype=q.dtype)
    dk = np.zeros(lead + (sk, d), dtype=q.dtype)
    dv = np.zeros(lead + (sk, dv_dim), dtype=q.dtype)
    for j0, j1 in tiles:
        t = np.where(keep[..., j0:j1], np.matmul(q, np.swapaxes(kb[..., j0:j1, :], -1, -2)) * (sc * log2e), -np.inf)
        pt = np.exp2(t - lse2)
        dv[..., j0:j1, :] = np.matmul(np.swapaxes(pt, -1, -2), d_out)
        ds = pt * (np.matmul(d_out, np.swapaxes(vb[..., j0:j1, :], -1, -2)) - delta)
        dq += np.matmul(ds, kb[..., j0:j1, :]) * sc
        dk[..., j0:j1, :] = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return dq, _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


_SRC = "https://github.com/"

CATALOG = [
    dict(name="bwd-flex-dv-stored-with-index-k", api="numpy-backward", fn="bwd_tiled_dv_index", correct=False,
         bug="dv-stored-with-qk-head-dim-index",
         parameter="the dV tile is stored through the key head-dim index (index_k) instead of index_v: with Dv > D "
                   "the columns past D stay zero, with Dv < D the store indexes past the tile (an error). dQ and "
                   "dK are right. Triggers: Dv != D",
         source="pytorch/pytorch#133495", report=_SRC + "pytorch/pytorch/pull/133495", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="bwd-aotriton-block-dmodel-from-k", api="numpy-backward", fn="bwd_padded_head_block", correct=False,
         bug="value-channels-truncated",
         parameter="one padded tile width, rounded up to 16 from the K head dim only, serves the V, O and dO paths: "
                   "value channels past it are dropped from dP and delta (dQ, dK wrong) and dV's columns past it "
                   "are zero. Triggers: Dv > D rounded up to a multiple of 16",
         source="ROCm/aotriton#162", report=_SRC + "ROCm/aotriton/pull/162", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="bwd-fa-dkdv-epilogue-spill", api="numpy-backward", fn="bwd_epilogue_row_store", correct=False,
         bug="dkdv-store-spills-into-next-row",
         parameter="the dK/dV epilogue writes each row with the tile width (head dim rounded up to 32) and no "
                   "head-dim predicate, rows from the last to the first: the zero padding of row r overwrites the "
                   "first columns of row r + 1. dQ is right. Triggers: D or Dv not a multiple of 32, with more than "
                   "one key row in the batch",
         source="Dao-AILab/flash-attention#2698", report=_SRC + "Dao-AILab/flash-attention/pull/2698",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-custom-mask-shared-seq-stride", api="numpy-backward", fn="bwd_custom_mask_shared_stride",
         correct=False, bug="kv-rows-with-query-stride",
         parameter="K and V rows of (batch, head) z are addressed as z * Sq + j, Q's token stride, instead of "
                   "z * Sk + j: other heads' keys are read and written (or the index runs past the end). Triggers: "
                   "Sq != Sk with more than one (batch, head)",
         source="alexzhang13/flashattention2-custom-mask#16",
         report=_SRC + "alexzhang13/flashattention2-custom-mask/issues/16", dtype="float64",
         features=["mask", "dv-ne-d"]),
    dict(name="bwd-tinygrad-softmax-in-half", api="numpy-backward", fn="bwd_half_softmax_saved", correct=False,
         bug="probabilities-in-float16",
         parameter="the scores are cast to float16 before the softmax that the backward reuses, so P (and O, delta) "
                   "carry half-precision error, about 1e-3 relative, in every gradient. Triggers: a row with two or "
                   "more kept keys (at float32 resolution)",
         source="tinygrad/tinygrad#9213", report=_SRC + "tinygrad/tinygrad/pull/9213", dtype="float32",
         features=["mask", "dv-ne-d"]),
    dict(name="bwd-lightning-floor-block-grid", api="numpy-backward", fn="bwd_query_block_grid", correct=False,
         bug="dq-tail-block-skipped",
         parameter="the dQ grid has n // 16 query blocks (floor, no tail block), so the last n % 16 rows of dQ are "
                   "never written and stay zero (all of dQ when Sq < 16). Triggers: Sq % 16 != 0 with a non-zero dQ "
                   "row in the tail",
         source="OpenNLPLab/lightning-attention#28", report=_SRC + "OpenNLPLab/lightning-attention/pull/28",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-dense-jvp", api="numpy-backward", fn="bwd_dense_jvp", correct=True, bug=None, parameter=None,
         source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-key-tiles-lse2", api="numpy-backward", fn="bwd_key_tiles_lse2", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
]
