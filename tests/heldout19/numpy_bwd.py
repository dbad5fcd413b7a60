"""Held-out NumPy attention backward kernels, API `numpy-backward`.

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): the gradients of O = softmax(scale * q k^T,
masked) v for loss = sum(d_out * O). q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); k/v may have a head
axis of size 1 broadcast against q's heads (dk, dv come back with k/v's shape, summed over that axis);
mask is None or a bool keep-mask (True = attend); rows with no kept key have zero output and zero gradients.
Six kernels carry one mistake each (each marked with a single BUG comment on its mistake line); two are correct.
"""
import numpy as np


def _sum_to(x, shape):
    """Sum a broadcast gradient back down to `shape`."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and x.shape[ax] != 1:
            x = x.sum(axis=ax, keepdims=True)
    return x


def _probs(q, k, mask, scale):
    """Masked softmax weights (zeros on rows with no kept key) and the broadcast keep-mask."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(s.shape, dtype=bool) if mask is None else np.broadcast_to(mask, s.shape)
    s = np.where(keep, s, -np.inf)
    has = keep.any(axis=-1, keepdims=True)
    m = np.where(has, s.max(axis=-1, keepdims=True), 0)
    e = np.where(keep, np.exp(s - m), 0)
    p = e / np.where(has, e.sum(axis=-1, keepdims=True), 1)
    return p.astype(q.dtype, copy=False), keep


# --- kernel: bwd_softmax_block_acc_schedule ---
def bwd_softmax_block_acc_schedule(q, k, v, d_out, mask=None, scale=None):
    """Autoregressive softmax backward with a per-warp (32 keys) reduction into a shared block_acc."""
    dt = q.dtype
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    scale = dt.type(scale)
    att, keep = _probs(q, k, mask, scale)
    datt = np.matmul(d_out, np.swapaxes(v, -1, -2))
    sk = att.shape[-1]
    n_warps = (sk + 31) // 32
    block_acc = np.empty(att.shape[:-1] + (max(n_warps, 1),), dtype=dt)
    stores = []
    for w in range(n_warps):
        lanes = slice(32 * w, 32 * (w + 1))
        stores.append((w, np.sum(att[..., lanes] * datt[..., lanes], axis=-1)))
    init = [(0, np.zeros(att.shape[:-1], dtype=dt))]
    schedule = stores + init  # BUG: warp 0's zero-init of block_acc lands after the warps' stores
    for slot, value in schedule:
        block_acc[..., slot] = value
    total = block_acc[..., :n_warps].sum(axis=-1, keepdims=True)
    dpreatt = att * (datt - total)
    dq = np.matmul(dpreatt, k) * scale
    dk = _sum_to(np.matmul(np.swapaxes(dpreatt, -1, -2), q) * scale, k.shape)
    dv = _sum_to(np.matmul(np.swapaxes(att, -1, -2), d_out), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_preprocess_dpsum_stale_dout ---
def bwd_preprocess_dpsum_stale_dout(q, k, v, d_out, mask=None, scale=None):
    """Flash-style backward: a preprocess pass computes dpsum = rowsum(O * dO) into its own buffer."""
    dt = q.dtype
    softmax_scale = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    p, _ = _probs(q, k, mask, softmax_scale)
    o = np.matmul(p, v)
    dout_buf = np.zeros(d_out.shape, dtype=dt)
    dpsum = np.sum(o * dout_buf, axis=-1, keepdims=True)  # BUG: reads dO before the producer wrote it
    dout_buf[...] = d_out
    dp = np.matmul(dout_buf, np.swapaxes(v, -1, -2))
    ds = p * (dp - dpsum)
    dq = softmax_scale * np.matmul(ds, k)
    dk = softmax_scale * _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q), k.shape)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), dout_buf), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_dkdv_store_strides ---
def bwd_dkdv_store_strides(q, k, v, d_out, mask=None, scale=None):
    """dK/dV kernel that stores its tiles through flat output buffers with explicit strides."""
    dt = q.dtype
    sm_scale = dt.type(q.shape[-1] ** -0.5 if scale is None else scale)
    p, _ = _probs(q, k, mask, sm_scale)
    o = np.matmul(p, v)
    delta = np.sum(o * d_out, axis=-1, keepdims=True)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * sm_scale
    dk_t = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * sm_scale, k.shape)
    dv_t = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    n_ctx, d_head, dv_head = k.shape[-2], k.shape[-1], v.shape[-1]
    bh = int(np.prod(k.shape[:-2], dtype=np.int64))
    dk_out = np.zeros(bh * n_ctx * d_head, dtype=dt)
    dv_out = np.zeros(bh * n_ctx * dv_head, dtype=dt)
    stride_dkz, stride_dkn = n_ctx * d_head, d_head
    stride_dvz, stride_dvn = n_ctx * d_head, d_head  # BUG: dV is stored with dK's strides (head dim D instead of Dv)
    dk_rows = dk_t.reshape(bh, n_ctx, d_head)
    dv_rows = dv_t.reshape(bh, n_ctx, dv_head)
    for z in range(bh):
        for n in range(n_ctx):
            dk_out[z * stride_dkz + n * stride_dkn + np.arange(d_head)] = dk_rows[z, n]
            dv_out[z * stride_dvz + n * stride_dvn + np.arange(dv_head)] = dv_rows[z, n]
    return dq.astype(dt), dk_out.reshape(k.shape), dv_out.reshape(v.shape)


# --- kernel: bwd_mask_op_grad_fill ---
def bwd_mask_op_grad_fill(q, k, v, d_out, mask=None, scale=None):
    """Graph-style backward: each forward op (scale, mask, softmax, matmul) gets its own backward."""
    dt = q.dtype
    kq_scale = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    kq = np.matmul(q, np.swapaxes(k, -1, -2)) * kq_scale
    keep = np.ones(kq.shape, dtype=bool) if mask is None else np.broadcast_to(mask, kq.shape)
    kq_masked = np.where(keep, kq, -np.inf)
    has = keep.any(axis=-1, keepdims=True)
    shifted = kq_masked - np.where(has, kq_masked.max(axis=-1, keepdims=True), 0)
    e = np.where(keep, np.exp(shifted), 0)
    soft = e / np.where(has, e.sum(axis=-1, keepdims=True), 1)
    # backward of kqv = soft @ v
    d_soft = np.matmul(d_out, np.swapaxes(v, -1, -2))
    dv = _sum_to(np.matmul(np.swapaxes(soft, -1, -2), d_out), v.shape)
    # backward of soft_max
    d_masked = soft * (d_soft - np.sum(soft * d_soft, axis=-1, keepdims=True))
    # backward of the mask op
    with np.errstate(invalid="ignore"):
        d_kq = np.where(keep, d_masked, -np.inf)  # BUG: masked gradients filled with -inf instead of 0
        dq = np.matmul(d_kq, k) * kq_scale
        dk = _sum_to(np.matmul(np.swapaxes(d_kq, -1, -2), q) * kq_scale, k.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_dq_acc_group_layout ---
def bwd_dq_acc_group_layout(q, k, v, d_out, mask=None, scale=None):
    """dQ accumulated in a group-mode workspace (each (batch, head) slot padded to 16 query rows)."""
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    p, _ = _probs(q, k, mask, sc)
    o = np.matmul(p, v)
    d_i = np.sum(o * d_out, axis=-1, keepdims=True)
    ds = p * (np.matmul(d_out, np.swapaxes(v, -1, -2)) - d_i)
    dq = np.matmul(ds, k) * sc
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q) * sc, k.shape)
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    seqlen_q, hdim = q.shape[-2], q.shape[-1]
    seqlen_q_rounded = (seqlen_q + 15) // 16 * 16
    n_slots = int(np.prod(q.shape[:-2], dtype=np.int64))
    dq_accum = np.zeros(n_slots * seqlen_q_rounded * hdim, dtype=dt)
    flat = dq.reshape(n_slots, seqlen_q * hdim)
    for z in range(n_slots):
        base = z * seqlen_q_rounded * hdim
        dq_accum[base:base + seqlen_q * hdim] += flat[z]
    read_stride = seqlen_q * hdim  # BUG: slots are seqlen_q_rounded rows apart, read unpadded
    dq_out = np.stack([dq_accum[z * read_stride:z * read_stride + seqlen_q * hdim] for z in range(n_slots)])
    return dq_out.reshape(q.shape).astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_emb_size_scaling ---
def bwd_emb_size_scaling(q, k, v, d_out, mask=None, scale=None):
    """ViT-style MHA backward: the default scaling is derived from the embedding size."""
    dt = q.dtype
    if scale is None:
        num_heads = q.shape[-3] if q.ndim == 4 else 1
        emb_size = num_heads * q.shape[-1]
        scale = emb_size ** -0.5  # BUG: scaling from the full embedding size instead of emb_size // num_heads
    scaling = dt.type(scale)
    att, _ = _probs(q, k, mask, scaling)
    out = np.einsum("...qk,...kd->...qd", att, v)
    d_att = np.einsum("...qd,...kd->...qk", d_out, np.broadcast_to(v, k.shape[:-1] + (v.shape[-1],)))
    d_energy = att * (d_att - np.sum(out * d_out, axis=-1, keepdims=True))
    dq = np.einsum("...qk,...kd->...qd", d_energy, k) * scaling
    dk = _sum_to(np.einsum("...qk,...qd->...kd", d_energy, q) * scaling, k.shape)
    dv = _sum_to(np.einsum("...qk,...qd->...kd", att, d_out), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_dense_delta_rowsum ---
def bwd_dense_delta_rowsum(q, k, v, d_out, mask=None, scale=None):
    """Dense backward with delta = rowsum(dO * O)."""
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    p, _ = _probs(q, k, mask, sc)
    o = np.matmul(p, v)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    ds = p * (np.matmul(d_out, np.swapaxes(v, -1, -2)) - delta)
    dq = np.matmul(ds, k) * sc
    dk = _sum_to(np.matmul(np.swapaxes(ds, -1, -2), q), k.shape) * sc
    dv = _sum_to(np.matmul(np.swapaxes(p, -1, -2), d_out), v.shape)
    return dq.astype(dt), dk.astype(dt), dv.astype(dt)


# --- kernel: bwd_query_tiles_recompute_lse ---
def bwd_query_tiles_recompute_lse(q, k, v, d_out, mask=None, scale=None):
    """Query tiles of 13 rows: recompute P = exp(S - LSE) per tile, accumulate dK/dV over the tiles."""
    dt = q.dtype
    sc = dt.type(1.0 / np.sqrt(q.shape[-1]) if scale is None else scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    dob = np.broadcast_to(d_out, lead + d_out.shape[-2:])
    keep_all = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    dq = np.zeros(lead + q.shape[-2:], dtype=dt)
    dk = np.zeros(lead + k.shape[-2:], dtype=dt)
    dv = np.zeros(lead + v.shape[-2:], dtype=dt)
    for r0 in range(0, sq, 13):
        r1 = min(r0 + 13, sq)
        s = np.matmul(qb[..., r0:r1, :], np.swapaxes(kb, -1, -2)) * sc
        if keep_all is not None:
            s = np.where(keep_all[..., r0:r1, :], s, -np.inf)
        lse = np.logaddexp.reduce(s, axis=-1, keepdims=True)
        live = np.isfinite(lse)
        p = np.where(live, np.exp(s - np.where(live, lse, 0)), 0)
        o = np.matmul(p, vb)
        do = dob[..., r0:r1, :]
        delta = np.sum(o * do, axis=-1, keepdims=True)
        ds = p * (np.matmul(do, np.swapaxes(vb, -1, -2)) - delta)
        dq[..., r0:r1, :] = np.matmul(ds, kb) * sc
        dk += np.matmul(np.swapaxes(ds, -1, -2), qb[..., r0:r1, :]) * sc
        dv += np.matmul(np.swapaxes(p, -1, -2), do)
    return dq.reshape(q.shape), _sum_to(dk, k.shape), _sum_to(dv, v.shape)


CATALOG = [
    dict(name="bwd-llmc-block-acc-init-race", api="numpy-backward", fn="bwd_softmax_block_acc_schedule",
         correct=False, bug="softmax-bwd-partial-sum-lost",
         parameter="the row sum rowsum(P * dP) of the softmax backward is reduced per warp of 32 keys into a "
                   "shared block_acc whose zero initialisation runs after the stores, wiping warp 0's partial "
                   "(keys 0..31): dQ and dK are wrong, dV is right. Triggers: a row with a kept key among keys "
                   "0..31 (always, unless such rows have no kept key there)",
         source="karpathy/llm.c#847", report="https://github.com/karpathy/llm.c/pull/847",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-fa-dpsum-before-dout", api="numpy-backward", fn="bwd_preprocess_dpsum_stale_dout",
         correct=False, bug="delta-from-unwritten-dout",
         parameter="the preprocess computes dpsum = rowsum(O * dO) from the dO buffer before dO has been written "
                   "into it (it is still zero), so the rowsum term is 0: dQ and dK are wrong, dV is right. "
                   "Triggers: always (rows with a kept key)",
         source="Dao-AILab/flash-attention#2481", report="https://github.com/Dao-AILab/flash-attention/pull/2481",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-flaggems-dv-store-strides", api="numpy-backward", fn="bwd_dkdv_store_strides",
         correct=False, bug="dv-stored-with-dk-strides",
         parameter="dV is written into its flat output through dK's strides (rows D apart instead of Dv): rows "
                   "overlap when Dv > D and run past the buffer (IndexError) when Dv < D. Triggers: Dv != D",
         source="flagos-ai/FlagGems#6068", report="https://github.com/flagos-ai/FlagGems/pull/6068",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-ggml-mask-grad-inf", api="numpy-backward", fn="bwd_mask_op_grad_fill",
         correct=False, bug="masked-gradient-filled-inf",
         parameter="the backward of the mask op fills the gradient of the masked scores with -inf (the forward's "
                   "fill) instead of 0, so dQ and dK become inf/NaN wherever a key is masked (dV is right). "
                   "Triggers: a mask with at least one dropped key",
         source="ggml-org/llama.cpp#4203", report="https://github.com/ggml-org/llama.cpp/pull/4203",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-aiter-dq-acc-group-stride", api="numpy-backward", fn="bwd_dq_acc_group_layout",
         correct=False, bug="dq-workspace-slot-stride",
         parameter="dQ is accumulated in a workspace whose (batch, head) slots are padded to a multiple of 16 "
                   "query rows but is read back with the unpadded slot stride, so every slot after the first "
                   "returns rows of the previous slots' padding and data (dK, dV right). Triggers: more than one "
                   "(batch, head) slot and Sq not a multiple of 16",
         source="ROCm/aiter#3124", report="https://github.com/ROCm/aiter/pull/3124",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-vit-emb-size-scaling", api="numpy-backward", fn="bwd_emb_size_scaling",
         correct=False, bug="default-scale-from-model-dim",
         parameter="with scale=None the scaling is (H * D) ** -0.5 (the embedding size) instead of D ** -0.5, "
                   "H = q.shape[-3] for 4-D inputs. Triggers: scale=None with 4-D inputs and H > 1",
         source="FrancescoSaverioZuppichini/ViT#1", report="https://github.com/FrancescoSaverioZuppichini/ViT/issues/1",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-dense-delta-rowsum", api="numpy-backward", fn="bwd_dense_delta_rowsum",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-query-tiles-recompute-lse", api="numpy-backward", fn="bwd_query_tiles_recompute_lse",
         correct=True, bug=None, parameter=None, source=None, report=None,
         dtype="float64", features=["mask", "dv-ne-d"]),
]
