"""heldout16 backward kernels for the `numpy-backward` API.

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): the gradients of the refimpl forward for
loss = sum(d_out * O); k / v may have a head axis of size 1 broadcast against q's heads (dk, dv come back with
k / v's shape); rows with no kept key have zero gradients. Six kernels carry one mistake each (marked with a BUG
comment), two are correct.
"""
import math

import numpy as np


def _keep(mask, shape):
    """The bool keep-mask broadcast to the score shape (all True without a mask)."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape)


def _sum_to(x, shape):
    """Sum a broadcast gradient back to an operand's shape."""
    extra = x.ndim - len(shape)
    if extra > 0:
        x = x.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


# --- kernel: bwd_lse_recompute_dead_rows ---
def bwd_lse_recompute_dead_rows(q, k, v, d_out, mask=None, scale=None):
    """FlashAttention-2 style: save the row LSE in the forward, P = exp(S - LSE) in the backward."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0)
    l_sum = np.exp(s - m_safe).sum(axis=-1, keepdims=True)
    with np.errstate(divide='ignore', invalid='ignore'):
        lse = m_safe + np.log(l_sum)
        p = np.exp(s - lse)  # BUG: a row with no kept key has lse = -inf and exp(-inf - (-inf)) = NaN
    o = np.matmul(p, v)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_dk_block_pointer_hq ---
def bwd_dk_block_pointer_hq(q, k, v, d_out, mask=None, scale=None):
    """Per (batch, query head) program: dk / dv of the kv head written through a flat block pointer."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.where(keep, np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
    den = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    o = np.matmul(p, v)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (d_out * o).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    if q.ndim == 4:
        B, HQ = q.shape[0], q.shape[1]
        H = k.shape[1]
    else:
        B, HQ, H = int(np.prod(q.shape[:-2], dtype=np.int64)), 1, 1
    sk, d = k.shape[-2], k.shape[-1]
    ds_f = np.broadcast_to(ds, ds.shape).reshape(B, HQ, ds.shape[-2], sk)
    q_f = q.reshape(B, HQ, q.shape[-2], d)
    dk_buf = np.zeros((B * HQ, sk, d), dtype=np.result_type(q.dtype, k.dtype))
    for b in range(B):
        for i_hq in range(HQ):
            p_dk = b * HQ + i_hq  # BUG: dk is laid out (B, H); the offset should be b * H + i_hq // (HQ // H)
            dk_buf[p_dk] += np.matmul(ds_f[b, i_hq].T, q_f[b, i_hq]) * scale
    dk = dk_buf[:B * H].reshape(k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_dq_skip_masked_blocks ---
def bwd_dq_skip_masked_blocks(q, k, v, d_out, mask=None, scale=None):
    """dQ pass over key blocks of 16 per query tile of 32, skipping key blocks the tile cannot see."""
    tile_m, block_n = 32, 16
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.where(keep, np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
    den = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    o = np.matmul(p, v)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (d_out * o).sum(axis=-1, keepdims=True))
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    sq, sk = s.shape[-2], s.shape[-1]
    dq = np.zeros(s.shape[:-2] + (sq, q.shape[-1]), dtype=np.result_type(q.dtype, k.dtype))
    for m0 in range(0, sq, tile_m):
        m1 = min(m0 + tile_m, sq)
        for n0 in range(0, sk, block_n):
            n1 = min(n0 + block_n, sk)
            blk = keep[..., m0:m1, n0:n1]
            if not blk[..., 0, :].any():  # BUG: the skip test looks at the tile's first query row only
                continue
            dq[..., m0:m1, :] += np.matmul(ds[..., m0:m1, n0:n1], k[..., n0:n1, :]) * scale
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_qkvpacked_dq_strides ---
def bwd_qkvpacked_dq_strides(q, k, v, d_out, mask=None, scale=None):
    """Self-attention with equal q / k / v shapes returns its gradients through one packed dqkv buffer."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.where(keep, np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
    den = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    o = np.matmul(p, v)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (d_out * o).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    if q.shape == k.shape == v.shape:
        dqkv = np.zeros(q.shape[:-1] + (3, q.shape[-1]), dtype=np.result_type(q.dtype, dq.dtype))
        dqkv.reshape(-1)[:dq.size] = dq.reshape(-1)  # BUG: dq stored with q's contiguous strides, not dqkv[..., 0, :]
        dqkv[..., 1, :] = dk
        dqkv[..., 2, :] = dv
        dq, dk, dv = dqkv[..., 0, :], dqkv[..., 1, :], dqkv[..., 2, :]
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


# --- kernel: bwd_embed_width_scale ---
def bwd_embed_width_scale(q, k, v, d_out, mask=None, scale=None):
    """Multi-head backward in the lecture-notebook style: wei = q @ k^T * C**-0.5."""
    if scale is None:
        C = q.shape[-1] * q.shape[-3] if q.ndim == 4 else q.shape[-1]  # BUG: C is n_embd = H * head_size, not head_size
        scale = C ** -0.5
    wei = np.matmul(q, np.swapaxes(k, -2, -1)) * scale
    keep = _keep(mask, wei.shape)
    wei = np.where(keep, wei, -np.inf)
    m = wei.max(axis=-1, keepdims=True)
    e = np.where(keep, np.exp(wei - np.where(np.isfinite(m), m, 0)), 0)
    den = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_warp_per_row_softmax ---
def bwd_warp_per_row_softmax(q, k, v, d_out, mask=None, scale=None):
    """Backward that recomputes P with a one-warp-per-row online softmax kernel (4 warps of 32 per block)."""
    block_dim, warp_size = 128, 32
    warps_per_block = block_dim // warp_size
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    n_rows, n_cols = s.shape[-2], s.shape[-1]
    p = np.zeros(s.shape, dtype=s.dtype)
    for row in range(n_rows):
        warp_id = row % warps_per_block
        tid = warp_id * warp_size
        if tid >= n_cols:  # BUG: early exit on the block thread id; the guard should be on laneId (tid % warp_size)
            continue
        r = s[..., row, :]
        mx = r.max(axis=-1, keepdims=True)
        er = np.where(keep[..., row, :], np.exp(r - np.where(np.isfinite(mx), mx, 0)), 0)
        tot = er.sum(axis=-1, keepdims=True)
        p[..., row, :] = np.divide(er, tot, out=np.zeros_like(er), where=tot > 0)
    o = np.matmul(p, v)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (d_out * o).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_dense_rowsum_pdp ---
def bwd_dense_rowsum_pdp(q, k, v, d_out, mask=None, scale=None):
    """Dense backward with the softmax Jacobian term written as rowsum(P * dP)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = _keep(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.where(keep, np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
    den = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * scale, k.shape)
    return dq.astype(q.dtype, copy=False), dk.astype(k.dtype, copy=False), dv.astype(v.dtype, copy=False)


# --- kernel: bwd_key_blocks_logaddexp ---
def bwd_key_blocks_logaddexp(q, k, v, d_out, mask=None, scale=None):
    """Two passes over key blocks of 25: the row LSE by np.logaddexp, then per-block P, dS and gradients."""
    block = 25
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    keep = _keep(mask, lead + (sq, sk))
    lse = np.full(lead + (sq, 1), -np.inf)
    blocks = []
    for n0 in range(0, sk, block):
        n1 = min(n0 + block, sk)
        sb = np.where(keep[..., n0:n1], np.matmul(q, np.swapaxes(k[..., n0:n1, :], -1, -2)) * scale, -np.inf)
        bm = sb.max(axis=-1, keepdims=True)
        bm_safe = np.where(np.isfinite(bm), bm, 0)
        with np.errstate(divide='ignore'):
            lse = np.logaddexp(lse, bm_safe + np.log(np.exp(sb - bm_safe).sum(axis=-1, keepdims=True)))
        blocks.append((n0, n1, sb))
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    o = np.zeros(lead + (sq, v.shape[-1]))
    for n0, n1, sb in blocks:
        o = o + np.matmul(np.exp(sb - lse_safe), v[..., n0:n1, :])
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + (sq, q.shape[-1]))
    dk_parts, dv_parts = [], []
    for n0, n1, sb in blocks:
        pb = np.exp(sb - lse_safe)
        dpb = np.matmul(d_out, np.swapaxes(v[..., n0:n1, :], -1, -2))
        dsb = pb * (dpb - delta)
        dq = dq + np.matmul(dsb, k[..., n0:n1, :]) * scale
        dk_parts.append(np.matmul(np.swapaxes(dsb, -1, -2), q) * scale)
        dv_parts.append(np.matmul(np.swapaxes(pb, -1, -2), d_out))
    dk = _sum_to(np.concatenate(dk_parts, axis=-2), k.shape)
    dv = _sum_to(np.concatenate(dv_parts, axis=-2), v.shape)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_FEATURES = ['mask', 'dv-ne-d']

CATALOG = [
    dict(name='bwd-fa-dead-row-lse-nan', api='numpy-backward', fn='bwd_lse_recompute_dead_rows', correct=False,
         bug='fully-masked-row-nan-gradients',
         parameter='P is recomputed as exp(S - LSE) with the LSE of a row that has no kept key left at -inf, so '
                   'that row gives exp(-inf - (-inf)) = NaN, which reaches dq and, through the sums over rows, dk and '
                   'dv. Triggers: a mask with a row that has no kept key',
         source='Dao-AILab/flash-attention#443', report='https://github.com/Dao-AILab/flash-attention/issues/443',
         dtype='float64', features=_FEATURES),
    dict(name='bwd-fla-dk-pointer-hq', api='numpy-backward', fn='bwd_dk_block_pointer_hq', correct=False,
         bug='dk-block-offset-query-heads',
         parameter='each (batch, query head) writes its dk block at offset b * HQ + i_hq in a buffer read back as '
                   '(B, H) kv heads, so with a broadcast kv head (H = 1 < HQ) dk holds single query-head '
                   'contributions of the wrong (batch, head) instead of the sum over heads (dq, dv right). Triggers: '
                   'k / v with a head axis of 1 broadcast against HQ > 1',
         source='fla-org/flash-linear-attention#384',
         report='https://github.com/fla-org/flash-linear-attention/pull/384', dtype='float64', features=_FEATURES),
    dict(name='bwd-openvino-block-skip-first-row', api='numpy-backward', fn='bwd_dq_skip_masked_blocks',
         correct=False, bug='masked-block-skip-too-early',
         parameter='the dQ pass skips a key block of 16 when the first query row of its tile of 32 sees none of it, '
                   'dropping the block for later rows of the tile that do see it (dk, dv right). Triggers: a key '
                   'block hidden from a tile\'s first row but visible to a later row of that tile',
         source='openvinotoolkit/openvino#35438', report='https://github.com/openvinotoolkit/openvino/pull/35438',
         dtype='float64', features=_FEATURES),
    dict(name='bwd-rocmfa-packed-dq-strides', api='numpy-backward', fn='bwd_qkvpacked_dq_strides', correct=False,
         bug='packed-dq-wrong-strides',
         parameter='with equal q / k / v shapes the gradients go through one packed dqkv (..., S, 3, D) buffer and '
                   'dq is written with q\'s contiguous strides instead of into dqkv[..., 0, :], so dq values land in '
                   'the wrong rows and slots. Triggers: q, k and v of the same shape',
         source='ROCm/flash-attention#122', report='https://github.com/ROCm/flash-attention/pull/122',
         dtype='float64', features=_FEATURES),
    dict(name='bwd-nglecture-embed-width-scale', api='numpy-backward', fn='bwd_embed_width_scale', correct=False,
         bug='default-scale-from-embedding-width',
         parameter='with scale=None the recomputed scores and the gradients use C**-0.5 with C = H * D (the '
                   'embedding width of a 4-D input) instead of D**-0.5. Triggers: scale=None with a 4-D q with H > 1',
         source='karpathy/ng-video-lecture#28', report='https://github.com/karpathy/ng-video-lecture/issues/28',
         dtype='float64', features=_FEATURES),
    dict(name='bwd-llmc-warp-row-early-exit', api='numpy-backward', fn='bwd_warp_per_row_softmax', correct=False,
         bug='softmax-rows-skipped-small-sk',
         parameter='the softmax recompute runs one warp per row, 4 warps per block of 128, and returns early when '
                   'the block thread id (warp_id * 32) is >= Sk instead of testing the lane id: rows r with '
                   '(r % 4) * 32 >= Sk are never written (P, O zero), so their dq is zero and dk, dv miss them. '
                   'Triggers: Sk <= 96 with a row r, (r % 4) * 32 >= Sk',
         source='karpathy/llm.c#776', report='https://github.com/karpathy/llm.c/issues/776',
         dtype='float64', features=_FEATURES),
    dict(name='bwd-dense-rowsum-pdp', api='numpy-backward', fn='bwd_dense_rowsum_pdp', correct=True, bug=None,
         parameter=None, source=None, report=None, dtype='float64', features=_FEATURES),
    dict(name='bwd-key-blocks-logaddexp', api='numpy-backward', fn='bwd_key_blocks_logaddexp', correct=True,
         bug=None, parameter=None, source=None, report=None, dtype='float64', features=_FEATURES),
]
