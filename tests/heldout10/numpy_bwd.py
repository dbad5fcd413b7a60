"""Held-out attention backward kernels, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv).

Gradients of the `refimpl` forward (softmax(scale * q k^T, masked) v, rows with no kept key = 0) for
loss = sum(d_out * O). k/v may have a head axis of size 1 broadcast against q's heads: dk, dv come back with k/v's
shape, summed over the broadcast axis. Rows with no kept key have zero gradients. See README.md.
"""
import numpy as np


def _sum_to(x, shape):
    """Sum a broadcast gradient back to `shape`."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and x.shape[ax] != 1:
            x = x.sum(axis=ax, keepdims=True)
    return x


def _forward_stats(q, k, keep, scale):
    """Scaled scores, masked, and their natural log-sum-exp (-inf for rows with no key)."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    l_sum = np.sum(np.exp(s - m_safe), axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = np.where(l_sum > 0, m_safe + np.log(np.where(l_sum > 0, l_sum, 1.0)), -np.inf)
    return s, lse


# --- kernel: bwd_fp16_score_recompute ---
def bwd_fp16_score_recompute(q, k, v, d_out, mask=None, scale=None):
    """Fused-kernel style: the forward saves the fp32 LSE; the backward recomputes S through a 16-bit tile."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    _, lse = _forward_stats(q, k, keep, scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2))
    s = (s * scale).astype(np.float16).astype(q.dtype)  # BUG: recomputed scores rounded through fp16
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    p = np.exp(s - lse_safe)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_preprocess_layout_assumed ---
def bwd_preprocess_layout_assumed(q, k, v, d_out, mask=None, scale=None):
    """Piecewise-attention style: the kernel works in (B, S, H, D); a preprocess step computes Delta row by row."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    s, lse = _forward_stats(q, k, keep, scale)
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    p = np.exp(s - lse_safe)
    o = np.matmul(p, v)
    dv_head = o.shape[-1]
    if q.ndim == 4:
        # kernel-side layout (B, S, H, Dv); the caller's d_out is (B, H, S, Dv)
        o_k = np.ascontiguousarray(np.swapaxes(o, 1, 2))
        delta = np.sum(o_k.reshape(-1, dv_head) * d_out.reshape(-1, dv_head), axis=-1)  # BUG: assumes d_out (B,S,H,D)
        delta = np.swapaxes(delta.reshape(o_k.shape[:-1]), 1, 2)[..., None]
    else:
        delta = np.sum(o * d_out, axis=-1, keepdims=True)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_group_mode_dq_stride ---
def bwd_group_mode_dq_stride(q, k, v, d_out, mask=None, scale=None):
    """CK group-mode style: one program per (batch, head) segment, dQ accumulated into a strided scratch buffer."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    lead = q.shape[:-2]
    sq, sk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    kb = np.broadcast_to(k, lead + k.shape[-2:]).reshape(-1, sk, d)
    vb = np.broadcast_to(v, lead + v.shape[-2:]).reshape(-1, sk, v.shape[-1])
    qb = q.reshape(-1, sq, d)
    dob = d_out.reshape(-1, sq, v.shape[-1])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk)).reshape(-1, sq, sk)
    n_seg = qb.shape[0]
    dq_acc = np.zeros((n_seg, sq, d), dtype=q.dtype)
    dk_b = np.zeros_like(kb)
    dv_b = np.zeros_like(vb)
    batch_stride_dq_acc = 0  # BUG: group-mode stride left 0: every segment's dQ lands in slot 0
    for b in range(n_seg):
        s, lse = _forward_stats(qb[b], kb[b], None if keep is None else keep[b], scale)
        p = np.exp(s - np.where(np.isfinite(lse), lse, np.inf))
        o = p @ vb[b]
        dp = dob[b] @ vb[b].T
        ds = p * (dp - np.sum(dob[b] * o, axis=-1, keepdims=True))
        dq_acc[b * batch_stride_dq_acc] += ds @ kb[b] * scale
        dk_b[b] = ds.T @ qb[b] * scale
        dv_b[b] = p.T @ dob[b]
    dq = dq_acc.reshape(q.shape)
    dk = _sum_to(dk_b.reshape(lead + (sk, d)), k.shape)
    dv = _sum_to(dv_b.reshape(lead + (sk, v.shape[-1])), v.shape)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


# --- kernel: bwd_ring_stale_kv ---
def bwd_ring_stale_kv(q, k, v, d_out, mask=None, scale=None):
    """Ring-attention style: keys/values in 2 ring chunks; the backward loops the ring with a saved-tensor op."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool),
                                                     np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
                                                     + (q.shape[-2], k.shape[-2]))
    s, lse = _forward_stats(q, k, keep, scale)
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    o = np.matmul(np.exp(s - lse_safe), v)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    chunks = np.array_split(np.arange(k.shape[-2]), 2)
    saved_k, saved_v = k[..., chunks[0], :], v[..., chunks[0], :]  # ctx.saved_tensors from ring iteration 0
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    dq = np.zeros(lead + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(lead + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=q.dtype)
    for idx in chunks:
        if idx.size == 0:
            continue
        k_c, v_c = saved_k[..., :idx.size, :], saved_v[..., :idx.size, :]  # BUG: iteration-0 KV, not chunk idx
        s_c = np.matmul(q, np.swapaxes(k_c, -1, -2)) * scale
        if keep is not None:
            s_c = np.where(keep[..., idx], s_c, -np.inf)
        p_c = np.exp(s_c - lse_safe)
        dp_c = np.matmul(d_out, np.swapaxes(v_c, -1, -2))
        ds_c = p_c * (dp_c - delta)
        dq = dq + np.matmul(ds_c, k_c) * scale
        dk[..., idx, :] = np.matmul(np.swapaxes(ds_c, -1, -2), q) * scale
        dv[..., idx, :] = np.matmul(np.swapaxes(p_c, -1, -2), d_out)
    return dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_mqa_kv_grad_unreduced ---
def bwd_mqa_kv_grad_unreduced(q, k, v, d_out, mask=None, scale=None):
    """Multi-query style: K/V shared by every query head; their gradients must be reduced over those heads."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    s, lse = _forward_stats(q, k, keep, scale)
    p = np.exp(s - np.where(np.isfinite(lse), lse, np.inf))
    o = np.matmul(p, v)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk_heads = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    dv_heads = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dv = _sum_to(dv_heads, v.shape)
    if k.ndim >= 3 and k.shape[-3] == 1 and q.shape[-3] > 1:
        dk = _sum_to(dk_heads[..., :1, :, :], k.shape)  # BUG: shared kv head keeps the first query head's dK only
    else:
        dk = _sum_to(dk_heads, k.shape)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


# --- kernel: bwd_recompute_without_mask ---
def bwd_recompute_without_mask(q, k, v, d_out, mask=None, scale=None):
    """Triton FA backward style: P recomputed from the saved LSE inside the dq/dkdv inner loops."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    s_masked, lse = _forward_stats(q, k, keep, scale)
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    o = np.matmul(np.exp(s_masked - lse_safe), v)
    qk_scaled = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    p = np.exp(qk_scaled - lse_safe)  # BUG: mask_mn not applied to the recomputed P
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_dense_reference ---
def bwd_dense_reference(q, k, v, d_out, mask=None, scale=None):
    """Correct: dense backward with the softmax Jacobian written out, Delta = rowsum(dP * P)."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = np.sum(e, axis=-1, keepdims=True)
    p = np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_key_tiles_lse ---
def bwd_key_tiles_lse(q, k, v, d_out, mask=None, scale=None):
    """Correct: FlashAttention-2 style, LSE and Delta from a forward pass, then key tiles of 48 for dK/dV and dQ."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    s, lse = _forward_stats(q, k, keep, scale)
    lse_safe = np.where(np.isfinite(lse), lse, np.inf)
    o = np.matmul(np.exp(s - lse_safe), v)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(lead + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=q.dtype)
    for start in range(0, sk, 48):
        stop = min(start + 48, sk)
        kt, vt = k[..., start:stop, :], v[..., start:stop, :]
        st = np.matmul(q, np.swapaxes(kt, -1, -2)) * scale
        if keep is not None:
            st = np.where(keep[..., start:stop], st, -np.inf)
        pt = np.exp(st - lse_safe)
        dv[..., start:stop, :] = np.matmul(np.swapaxes(pt, -1, -2), d_out)
        dst = pt * (np.matmul(d_out, np.swapaxes(vt, -1, -2)) - delta)
        dk[..., start:stop, :] = np.matmul(np.swapaxes(dst, -1, -2), q) * scale
        dq = dq + np.matmul(dst, kt) * scale
    return dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


# --- kernel: bwd_query_chunks ---
def bwd_query_chunks(q, k, v, d_out, mask=None, scale=None):
    """Correct: query chunks of 20; dQ per chunk, dK/dV accumulated over chunks; Delta = rowsum(dO * O)."""
    if scale is None:
        scale = 1.0 / np.sqrt(q.shape[-1])
    sq, sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    dq = np.zeros(lead + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(lead + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=q.dtype)
    for start in range(0, sq, 20):
        stop = min(start + 20, sq)
        qc, doc = q[..., start:stop, :], d_out[..., start:stop, :]
        s, lse = _forward_stats(qc, k, None if keep is None else keep[..., start:stop, :], scale)
        p = np.exp(s - np.where(np.isfinite(lse), lse, np.inf))
        o = np.matmul(p, v)
        ds = p * (np.matmul(doc, np.swapaxes(v, -1, -2)) - np.sum(doc * o, axis=-1, keepdims=True))
        dq[..., start:stop, :] = np.matmul(ds, k) * scale
        dk = dk + np.matmul(np.swapaxes(ds, -1, -2), qc) * scale
        dv = dv + np.matmul(np.swapaxes(p, -1, -2), doc)
    return dq.astype(q.dtype), _sum_to(dk, k.shape).astype(k.dtype), _sum_to(dv, v.shape).astype(v.dtype)


CATALOG = [
    dict(name="bwd-cudnn-fp16-score-recompute", api="numpy-backward", fn="bwd_fp16_score_recompute",
         correct=False, bug="recomputed-scores-rounded-fp16",
         parameter="the backward recomputes S = scale * q k^T through a float16 tile while the saved LSE is full "
                   "precision: P = exp(S16 - lse) off by ~1e-3 relative. Triggers: always at float32 resolution",
         source="NVIDIA/cudnn-frontend#744", report="https://github.com/NVIDIA/cudnn-frontend/issues/744",
         dtype="float32", features=["mask", "dv-ne-d"]),
    dict(name="bwd-flagattn-delta-layout", api="numpy-backward", fn="bwd_preprocess_layout_assumed",
         correct=False, bug="delta-rows-layout-mismatch",
         parameter="Delta = rowsum(O * dO) computed over flat rows with O in the kernel's (B, S, H, D) layout but "
                   "dO read as if it had that layout too (it is (B, H, S, D)): each row pairs O and dO of different "
                   "(head, position). Triggers: 4-D input with H > 1 and Sq > 1",
         source="flagos-ai/FlagAttention#1", report="https://github.com/flagos-ai/FlagAttention/pull/1",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-te-dq-batch-stride-zero", api="numpy-backward", fn="bwd_group_mode_dq_stride", correct=False,
         bug="dq-accumulator-batch-stride-zero",
         parameter="the dQ scratch buffer's per-segment stride is 0: every (batch, head) segment's dQ is added into "
                   "segment 0 and the others stay zero (dK, dV right). Triggers: more than one (batch, head) "
                   "segment (prod of leading dims > 1)",
         source="ROCm/TransformerEngine#657", report="https://github.com/ROCm/TransformerEngine/pull/657",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-diffusers-ring-stale-kv", api="numpy-backward", fn="bwd_ring_stale_kv", correct=False,
         bug="ring-backward-stale-kv",
         parameter="the ring backward recomputes every chunk against the K/V saved at ring iteration 0 (the first "
                   "of 2 key chunks) instead of the rotated chunk: gradients of the second chunk use the wrong "
                   "keys and values. Triggers: Sk >= 2 (two chunks) with chunk contents that differ",
         source="huggingface/diffusers#14265", report="https://github.com/huggingface/diffusers/issues/14265",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-megatron-mqa-kv-unreduced", api="numpy-backward", fn="bwd_mqa_kv_grad_unreduced",
         correct=False, bug="mqa-dk-not-reduced",
         parameter="with a shared (size-1) kv head axis, dK is taken from the first query head only instead of "
                   "summed over all query heads (dV is reduced). Triggers: k/v head axis 1 broadcast against "
                   "H > 1 query heads",
         source="bigcode-project/Megatron-LM#37", report="https://github.com/bigcode-project/Megatron-LM/pull/37",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-aiter-p-without-mask", api="numpy-backward", fn="bwd_recompute_without_mask", correct=False,
         bug="recomputed-p-unmasked",
         parameter="P recomputed as exp(scale * q k^T - lse) without applying the mask (the LSE is the masked "
                   "forward's): dropped keys get weight in dV, dP and dS. Triggers: a mask dropping a key of a row "
                   "that has kept keys",
         source="ROCm/aiter#3551", report="https://github.com/ROCm/aiter/issues/3551",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-dense-reference", api="numpy-backward", fn="bwd_dense_reference", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-key-tiles-lse", api="numpy-backward", fn="bwd_key_tiles_lse", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-query-chunks", api="numpy-backward", fn="bwd_query_chunks", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
]
