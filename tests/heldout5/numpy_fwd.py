"""NumPy attention forward kernels for the `refimpl` API: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask is a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk). A row with no kept key returns zeros. Two kernels are correct alternative implementations, the others
each carry one mistake adapted from a public report (marked with a BUG comment).
"""
import numpy as np


def _lead_shape(q, k, v, mask):
    shapes = [q.shape[:-2], k.shape[:-2], v.shape[:-2]]
    if mask is not None:
        shapes.append(np.shape(mask)[:-2])
    return np.broadcast_shapes(*shapes)


def _keep(mask, lead, sq, sk):
    if mask is None:
        return np.ones(lead + (sq, sk), dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))


def _scale(q, scale):
    return 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)


# ----------------------------------------------------------------------------------------------------------------
# correct: Triton-tutorial style key-chunked online softmax (m_i, l_i, acc), BLOCK_N = 48
# ----------------------------------------------------------------------------------------------------------------
def attn_key_chunked(q, k, v, mask=None, scale=None):
    BLOCK_N = 48
    dtype = q.dtype
    sm_scale = _scale(q, scale)
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    m_i = np.full(lead + (sq,), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq,), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    for start_n in range(0, sk, BLOCK_N):
        end_n = min(start_n + BLOCK_N, sk)
        kb = k[..., start_n:end_n, :]
        vb = v[..., start_n:end_n, :]
        qk = np.matmul(q, np.swapaxes(kb, -1, -2)) * dtype.type(sm_scale)
        qk = np.where(keep[..., start_n:end_n], qk, -np.inf)
        m_ij = np.maximum(m_i, qk.max(axis=-1))
        m_safe = np.where(np.isneginf(m_ij), 0.0, m_ij).astype(dtype)
        p = np.exp(qk - m_safe[..., None])
        alpha = np.exp(m_i - m_safe)
        l_i = l_i * alpha + p.sum(axis=-1)
        acc = acc * alpha[..., None] + np.matmul(p, vb)
        m_i = m_ij
    alive = l_i > 0
    out = acc / np.where(alive, l_i, 1.0)[..., None]
    return np.where(alive[..., None], out, 0.0).astype(dtype)


# ----------------------------------------------------------------------------------------------------------------
# correct: flash-decoding style split-KV, each split returns a normalised partial output and its LSE, then merge
# ----------------------------------------------------------------------------------------------------------------
def attn_split_kv(q, k, v, mask=None, scale=None):
    num_splits = 3
    dtype = q.dtype
    sm_scale = _scale(q, scale)
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    bounds = np.linspace(0, sk, num_splits + 1).astype(int)
    partial_o, partial_lse = [], []
    for s in range(num_splits):
        lo, hi = bounds[s], bounds[s + 1]
        if hi <= lo:
            continue
        scores = np.matmul(q, np.swapaxes(k[..., lo:hi, :], -1, -2)) * dtype.type(sm_scale)
        scores = np.where(keep[..., lo:hi], scores, -np.inf)
        mx = scores.max(axis=-1)
        mx_safe = np.where(np.isneginf(mx), 0.0, mx).astype(dtype)
        e = np.exp(scores - mx_safe[..., None])
        denom = e.sum(axis=-1)
        has = denom > 0
        o = np.matmul(e, v[..., lo:hi, :]) / np.where(has, denom, 1.0)[..., None]
        with np.errstate(divide="ignore"):
            lse = np.where(has, mx_safe + np.log(np.where(has, denom, 1.0)), -np.inf)
        partial_o.append(np.broadcast_to(o, lead + (sq, dv)))
        partial_lse.append(np.broadcast_to(lse, lead + (sq,)))
    lses = np.stack(partial_lse, axis=0)
    lse_max = lses.max(axis=0)
    lse_max_safe = np.where(np.isneginf(lse_max), 0.0, lse_max)
    w = np.exp(lses - lse_max_safe)
    wsum = w.sum(axis=0)
    out = sum(w[i][..., None] * partial_o[i] for i in range(len(partial_o)))
    alive = wsum > 0
    out = out / np.where(alive, wsum, 1.0)[..., None]
    return np.where(alive[..., None], out, 0.0).astype(dtype)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------
def attn_softmax_no_dead_row_guard(q, k, v, mask=None, scale=None):
    # rten-style MultiHeadAttention: -inf for masked scores, then a plain numerically-stable softmax
    dtype = q.dtype
    sq, sk = q.shape[-2], k.shape[-2]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * dtype.type(_scale(q, scale))
    scores = np.where(keep, scores, -np.inf)
    # BUG: no guard for rows whose keys are all masked: the row max is -inf and -inf - (-inf) gives NaN
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(axis=-1, keepdims=True)
    return np.matmul(probs, v).astype(dtype)


def attn_scale_from_value_dim(q, k, v, mask=None, scale=None):
    # set_transformer MAB style: A = softmax(Q K^T / sqrt(dim)) V
    dtype = q.dtype
    sq, sk = q.shape[-2], k.shape[-2]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    # BUG: the default scale is taken from the value head size (Dv) instead of the query/key head size (D)
    sm_scale = 1.0 / np.sqrt(v.shape[-1]) if scale is None else float(scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * dtype.type(sm_scale)
    scores = np.where(keep, scores, -np.inf)
    mx = scores.max(axis=-1, keepdims=True)
    mx = np.where(np.isneginf(mx), 0.0, mx)
    e = np.exp(scores - mx)
    s = e.sum(axis=-1, keepdims=True)
    probs = np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)
    return np.matmul(probs, v).astype(dtype)


def attn_online_rescale_inverted(q, k, v, mask=None, scale=None):
    # FlashMLA-deep-dive style online softmax with explicit scale_0 factor for the previous accumulator
    blk = 32
    dtype = q.dtype
    sm_scale = dtype.type(_scale(q, scale))
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    m_old = np.full(lead + (sq,), -np.inf, dtype=dtype)
    l_run = np.zeros(lead + (sq,), dtype=dtype)
    o_acc = np.zeros(lead + (sq, dv), dtype=dtype)
    for s0 in range(0, sk, blk):
        s1 = min(s0 + blk, sk)
        p = np.matmul(q, np.swapaxes(k[..., s0:s1, :], -1, -2)) * sm_scale
        p = np.where(keep[..., s0:s1], p, -np.inf)
        m_new = np.maximum(m_old, p.max(axis=-1))
        m_new_safe = np.where(np.isneginf(m_new), 0.0, m_new).astype(dtype)
        fresh = np.isneginf(m_old)
        # BUG: rescale factor for the previous accumulator is exp(m_new - m_old) instead of exp(m_old - m_new)
        scale_0 = np.where(fresh, 0.0, np.exp(np.where(fresh, 0.0, m_new_safe - m_old))).astype(dtype)
        e = np.exp(p - m_new_safe[..., None])
        l_run = l_run * scale_0 + e.sum(axis=-1)
        o_acc = o_acc * scale_0[..., None] + np.matmul(e, v[..., s0:s1, :])
        m_old = m_new
    alive = l_run > 0
    out = o_acc / np.where(alive, l_run, 1.0)[..., None]
    return np.where(alive[..., None], out, 0.0).astype(dtype)


def attn_padded_tail_block(q, k, v, mask=None, scale=None):
    # FlashInfer sparse blk64 style: K/V viewed as whole 64-key blocks, the tail zero-filled by the copy engine
    BLK = 64
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    pad = (-sk) % BLK
    k_p = np.concatenate([np.broadcast_to(k, lead + k.shape[-2:]), np.zeros(lead + (pad, k.shape[-1]), dtype)], -2)
    v_p = np.concatenate([np.broadcast_to(v, lead + v.shape[-2:]), np.zeros(lead + (pad, dv), dtype)], -2)
    # BUG: the zero-filled tail keys are marked visible, so each contributes exp(0 - max) to the denominator
    keep_p = np.concatenate([keep, np.ones(lead + (sq, pad), dtype=bool)], -1)
    sm_scale = dtype.type(_scale(q, scale))
    m_i = np.full(lead + (sq,), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq,), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    for b0 in range(0, sk + pad, BLK):
        s = np.matmul(q, np.swapaxes(k_p[..., b0:b0 + BLK, :], -1, -2)) * sm_scale
        s = np.where(keep_p[..., b0:b0 + BLK], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1))
        m_safe = np.where(np.isneginf(m_new), 0.0, m_new).astype(dtype)
        e = np.exp(s - m_safe[..., None])
        a = np.exp(m_i - m_safe)
        l_i = l_i * a + e.sum(axis=-1)
        acc = acc * a[..., None] + np.matmul(e, v_p[..., b0:b0 + BLK, :])
        m_i = m_new
    alive = l_i > 0
    out = acc / np.where(alive, l_i, 1.0)[..., None]
    return np.where(alive[..., None], out, 0.0).astype(dtype)


def attn_running_max_not_carried(q, k, v, mask=None, scale=None):
    # TileLang flash-attention example style: per-block reduce_max into scores_max, previous max not folded in
    block_N = 32
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    sm_scale = dtype.type(_scale(q, scale))
    scores_max = np.full(lead + (sq,), -np.inf, dtype=dtype)
    logsum = np.zeros(lead + (sq,), dtype=dtype)
    acc_o = np.zeros(lead + (sq, dv), dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for kb in range(0, sk, block_N):
            acc_s = np.matmul(q, np.swapaxes(k[..., kb:kb + block_N, :], -1, -2)) * sm_scale
            acc_s = np.where(keep[..., kb:kb + block_N], acc_s, -np.inf)
            scores_max_prev = scores_max
            blk_max = acc_s.max(axis=-1)
            # BUG: the running max is replaced by this block's max instead of max(previous max, block max)
            scores_max = np.where(np.isneginf(blk_max), scores_max_prev, blk_max)
            ref = np.where(np.isneginf(scores_max), 0.0, scores_max).astype(dtype)
            scores_scale = np.exp(scores_max_prev - ref)
            p = np.exp(acc_s - ref[..., None])
            logsum = logsum * scores_scale + p.sum(axis=-1)
            acc_o = acc_o * scores_scale[..., None] + np.matmul(p, v[..., kb:kb + block_N, :])
        alive = logsum > 0
        out = acc_o / np.where(alive, logsum, 1.0)[..., None]
    return np.where(alive[..., None], out, 0.0).astype(dtype)


def attn_row_max_clamped(q, k, v, mask=None, scale=None):
    # flash-attn cute softmax style: check_inf turns a -inf row max into 0 to avoid -inf - -inf
    tile_n = 64
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    scale_ = dtype.type(_scale(q, scale))
    row_max = np.full(lead + (sq,), -np.inf, dtype=dtype)
    row_sum = np.zeros(lead + (sq,), dtype=dtype)
    acc_o = np.zeros(lead + (sq, dv), dtype=dtype)
    for n0 in range(0, sk, tile_n):
        acc_S = np.matmul(q, np.swapaxes(k[..., n0:n0 + tile_n, :], -1, -2)) * scale_
        acc_S = np.where(keep[..., n0:n0 + tile_n], acc_S, -np.inf)
        row_max_prev = row_max
        row_max_cur = np.maximum(row_max_prev, acc_S.max(axis=-1))
        # BUG: a -inf max (tile fully masked so far) is overwritten by 0 and then kept as the running row max
        row_max_cur = np.where(np.isneginf(row_max_cur), 0.0, row_max_cur).astype(dtype)
        alpha = np.exp(row_max_prev - row_max_cur)
        p = np.exp(acc_S - row_max_cur[..., None])
        row_sum = row_sum * alpha + p.sum(axis=-1)
        acc_o = acc_o * alpha[..., None] + np.matmul(p, v[..., n0:n0 + tile_n, :])
        row_max = row_max_cur
    alive = row_sum > 0
    out = acc_o / np.where(alive, row_sum, 1.0)[..., None]
    return np.where(alive[..., None], out, 0.0).astype(dtype)


def attn_kv_grid_from_q_len(q, k, v, mask=None, scale=None):
    # Pallas-style blocked kernel: the kv loop bound is derived from the sequence length
    block_k = 32
    dtype = q.dtype
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    sm_scale = dtype.type(_scale(q, scale))
    # BUG: the number of kv blocks is computed from the query length instead of the key/value length
    num_kv_blocks = -(-sq // block_k)
    m = np.full(lead + (sq,), -np.inf, dtype=dtype)
    l_ = np.zeros(lead + (sq,), dtype=dtype)
    o = np.zeros(lead + (sq, dv), dtype=dtype)
    for i in range(num_kv_blocks):
        sl = slice(i * block_k, min((i + 1) * block_k, sk))
        if sl.start >= sk:
            break
        s = np.matmul(q, np.swapaxes(k[..., sl, :], -1, -2)) * sm_scale
        s = np.where(keep[..., sl], s, -np.inf)
        m_next = np.maximum(m, s.max(axis=-1))
        m_safe = np.where(np.isneginf(m_next), 0.0, m_next).astype(dtype)
        p = np.exp(s - m_safe[..., None])
        corr = np.exp(m - m_safe)
        l_ = l_ * corr + p.sum(axis=-1)
        o = o * corr[..., None] + np.matmul(p, v[..., sl, :])
        m = m_next
    alive = l_ > 0
    out = o / np.where(alive, l_, 1.0)[..., None]
    return np.where(alive[..., None], out, 0.0).astype(dtype)


def attn_mask_fill_tiny(q, k, v, mask=None, scale=None):
    # RibonanzaNet-style ScaledDotProductAttention: masked_fill of the masked scores before the softmax
    dtype = q.dtype
    sq, sk = q.shape[-2], k.shape[-2]
    lead = _lead_shape(q, k, v, mask)
    keep = _keep(mask, lead, sq, sk)
    attn = np.matmul(q, np.swapaxes(k, -1, -2)) * dtype.type(_scale(q, scale))
    # BUG: masked scores are filled with -1e-9 (about zero) instead of a large negative value, masking nothing
    attn = np.where(keep, attn, dtype.type(-1e-9))
    attn = np.exp(attn - attn.max(axis=-1, keepdims=True))
    attn = attn / attn.sum(axis=-1, keepdims=True)
    out = np.matmul(attn, v)
    alive = keep.any(axis=-1)
    return np.where(alive[..., None], out, 0.0).astype(dtype)


CATALOG = [
    dict(name="np-key-chunked-online", api="refimpl", fn="attn_key_chunked", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-split-kv-lse", api="refimpl", fn="attn_split_kv", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-dead-row-nan", api="refimpl", fn="attn_softmax_no_dead_row_guard", correct=False,
         bug="fully-masked-row-nan", parameter="rows whose keys are all masked (softmax of all -inf)",
         source="robertknight/rten#1321", report="https://github.com/robertknight/rten/pull/1321",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-scale-value-dim", api="refimpl", fn="attn_scale_from_value_dim", correct=False,
         bug="default-scale-uses-dv", parameter="default softmax scale 1/sqrt(Dv) instead of 1/sqrt(D)",
         source="juho-lee/set_transformer#18", report="https://github.com/juho-lee/set_transformer/issues/18",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-online-rescale-sign", api="refimpl", fn="attn_online_rescale_inverted", correct=False,
         bug="online-rescale-inverted", parameter="online-softmax rescale factor exp(m_new - m_old)",
         source="deepseek-ai/FlashMLA#177", report="https://github.com/deepseek-ai/FlashMLA/pull/177",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-padded-tail-visible", api="refimpl", fn="attn_padded_tail_block", correct=False,
         bug="tail-padding-not-masked", parameter="zero-filled keys of the last 64-key block left unmasked",
         source="flashinfer-ai/flashinfer#5090", report="https://github.com/flashinfer-ai/flashinfer/pull/5090",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-running-max-reset", api="refimpl", fn="attn_running_max_not_carried", correct=False,
         bug="running-max-not-carried", parameter="online-softmax running max taken from the current block only",
         source="tile-ai/tilelang#1148", report="https://github.com/tile-ai/tilelang/pull/1148",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-row-max-clamp-zero", api="refimpl", fn="attn_row_max_clamped", correct=False,
         bug="masked-row-max-clamped-to-zero", parameter="running row max of a fully masked tile set to 0",
         source="Dao-AILab/flash-attention#2082",
         report="https://github.com/Dao-AILab/flash-attention/issues/2082",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-kv-grid-from-q", api="refimpl", fn="attn_kv_grid_from_q_len", correct=False,
         bug="kv-loop-bound-from-q-len", parameter="number of key blocks computed from Sq instead of Sk",
         source="jax-ml/jax#24491", report="https://github.com/jax-ml/jax/issues/24491",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-mask-fill-tiny", api="refimpl", fn="attn_mask_fill_tiny", correct=False,
         bug="mask-fill-value-too-small", parameter="masked_fill value -1e-9 instead of a large negative",
         source="Shujun-He/RibonanzaNet#5", report="https://github.com/Shujun-He/RibonanzaNet/issues/5",
         dtype="float64", features=["mask", "dv-ne-d"]),
]
