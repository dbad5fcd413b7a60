"""Held-out set 24, API numpy-backward: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv)."""
import numpy as np


def _prep(q, k, v, mask, scale):
    """Scale, broadcast lead shape, q/k/v broadcast to it, and the bool keep-mask (or None)."""
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    qb = np.broadcast_to(q, lead + q.shape[-2:])
    kb = np.broadcast_to(k, lead + k.shape[-2:])
    vb = np.broadcast_to(v, lead + v.shape[-2:])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (q.shape[-2], k.shape[-2]))
    return scale, lead, qb, kb, vb, keep


def _reduce_to(x, shape):
    """Sum a gradient over the axes that were broadcast to reach x.shape."""
    extra = x.ndim - len(shape)
    if extra:
        x = x.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def _softmax(s, axis=-1):
    m = np.max(s, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = np.sum(e, axis=axis, keepdims=True)
    return e / np.where(z == 0, 1.0, z)


# --- kernel: bwd_kv_grad_buffer_from_q ---
def bwd_kv_grad_buffer_from_q(q, k, v, d_out, mask=None, scale=None):
    """Packed-KV style backward: gradient buffers are allocated up front, then filled."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    s = (qb @ np.swapaxes(kb, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _softmax(s)
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(vb, -1, -2)
    delta = np.sum(dp * p, axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = (ds @ kb) * scale
    dk = np.zeros_like(qb)  # BUG: dk's buffer is sized from q (the qkv / kv mix-up) instead of k
    dk[...] = (np.swapaxes(ds, -1, -2) @ qb) * scale
    return (dq.astype(q.dtype, copy=False), _reduce_to(dk, k.shape).astype(q.dtype, copy=False),
            _reduce_to(dv, v.shape).astype(q.dtype, copy=False))


# --- kernel: bwd_split_kv_dq_overwrite ---
def bwd_split_kv_dq_overwrite(q, k, v, d_out, mask=None, scale=None):
    """Backward over key branches of 32 with the merged row LSE; each branch yields its dq, dk, dv."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    sk = k.shape[-2]
    s = (qb @ np.swapaxes(kb, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    mx = np.max(s, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore"):
        lse = mx + np.log(np.sum(np.exp(s - mx), axis=-1, keepdims=True))
    lse = np.where(np.isfinite(lse), lse, np.inf)
    o = np.exp(s - lse) @ vb
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(lead + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=q.dtype)
    for j0 in range(0, sk, 32):
        j1 = min(j0 + 32, sk)
        p = np.exp(s[..., j0:j1] - lse)
        dv[..., j0:j1, :] = np.swapaxes(p, -1, -2) @ d_out
        ds = p * (d_out @ np.swapaxes(vb[..., j0:j1, :], -1, -2) - delta)
        dq = (ds @ kb[..., j0:j1, :]) * scale  # BUG: each key branch overwrites dq instead of adding to it
        dk[..., j0:j1, :] = (np.swapaxes(ds, -1, -2) @ qb) * scale
    return dq, _reduce_to(dk, k.shape), _reduce_to(dv, v.shape)


# --- kernel: bwd_softmax_sum_term_sign ---
def bwd_softmax_sum_term_sign(q, k, v, d_out, mask=None, scale=None):
    """Autograd-style: SoftmaxBackward applied to the gradient of the attention weights."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    s = (qb @ np.swapaxes(kb, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _softmax(s)
    dv = np.swapaxes(p, -1, -2) @ d_out
    grad_output = d_out @ np.swapaxes(vb, -1, -2)
    sum_term = np.sum(grad_output * p, axis=-1, keepdims=True)
    ds = p * (grad_output + sum_term)  # BUG: the sum term is added instead of subtracted
    dq = (ds @ kb) * scale
    dk = (np.swapaxes(ds, -1, -2) @ qb) * scale
    return (dq.astype(q.dtype, copy=False), _reduce_to(dk, k.shape).astype(q.dtype, copy=False),
            _reduce_to(dv, v.shape).astype(q.dtype, copy=False))


# --- kernel: bwd_attention_map_normalized_over_i ---
def bwd_attention_map_normalized_over_i(q, k, v, d_out, mask=None, scale=None):
    """Recomputes the attention map beta_ij from the scores, then backpropagates through it."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    s = (qb @ np.swapaxes(kb, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    beta = _softmax(s, axis=-2)  # BUG: normalised by a sum over i (queries) instead of j (keys)
    dv = np.swapaxes(beta, -1, -2) @ d_out
    dbeta = d_out @ np.swapaxes(vb, -1, -2)
    ds = beta * (dbeta - np.sum(dbeta * beta, axis=-1, keepdims=True))
    dq = (ds @ kb) * scale
    dk = (np.swapaxes(ds, -1, -2) @ qb) * scale
    return (dq.astype(q.dtype, copy=False), _reduce_to(dk, k.shape).astype(q.dtype, copy=False),
            _reduce_to(dv, v.shape).astype(q.dtype, copy=False))


# --- kernel: bwd_mask_bias_layout_check ---
def _mask_to_bias(mask):
    return np.where(np.asarray(mask, dtype=bool), 0.0, -np.inf)


def _check_layout(bias, shape):
    if bias.shape[-2:] != tuple(shape[-2:]):
        raise ValueError("Bias must have same seq length as QKV, got %s and %s" % (bias.shape[-2:], shape[-2:]))


def bwd_mask_bias_layout_check(q, k, v, d_out, mask=None, scale=None):
    """The bool mask is copied into an additive bias, which the fused layout check validates."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    s = (qb @ np.swapaxes(kb, -1, -2)) * scale
    if mask is not None:
        bias = _mask_to_bias(mask)  # BUG: the mask is copied to the bias without broadcasting it first
        _check_layout(bias, s.shape)
        s = s + bias.astype(q.dtype)
    p = _softmax(s)
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(vb, -1, -2)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = (ds @ kb) * scale
    dk = (np.swapaxes(ds, -1, -2) @ qb) * scale
    return (dq.astype(q.dtype, copy=False), _reduce_to(dk, k.shape).astype(q.dtype, copy=False),
            _reduce_to(dv, v.shape).astype(q.dtype, copy=False))


# --- kernel: bwd_function_extra_grads ---
def bwd_function_extra_grads(q, k, v, d_out, mask=None, scale=None):
    """Custom-function backward: one gradient slot per forward input (q, k, v, mask, scale)."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    s = (qb @ np.swapaxes(kb, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _softmax(s)
    dv = _reduce_to(np.swapaxes(p, -1, -2) @ d_out, v.shape).astype(q.dtype, copy=False)
    dp = d_out @ np.swapaxes(vb, -1, -2)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = ((ds @ kb) * scale).astype(q.dtype, copy=False)
    dk = _reduce_to((np.swapaxes(ds, -1, -2) @ qb) * scale, k.shape).astype(q.dtype, copy=False)
    return dq, dk, dv, None, None  # BUG: returns a gradient per forward input, not the three the API takes


# --- kernel: bwd_dense_rowsum_do_o ---
def bwd_dense_rowsum_do_o(q, k, v, d_out, mask=None, scale=None):
    """Dense backward with delta = rowsum(dO * O) (the FlashAttention preprocessing step)."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    s = (qb @ np.swapaxes(kb, -1, -2)) * scale
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _softmax(s)
    o = p @ vb
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    dv = np.swapaxes(p, -1, -2) @ d_out
    ds = p * (d_out @ np.swapaxes(vb, -1, -2) - delta)
    dq = (ds @ kb) * scale
    dk = (np.swapaxes(ds, -1, -2) @ qb) * scale
    return (dq.astype(q.dtype, copy=False), _reduce_to(dk, k.shape).astype(q.dtype, copy=False),
            _reduce_to(dv, v.shape).astype(q.dtype, copy=False))


# --- kernel: bwd_query_blocks_lse ---
def bwd_query_blocks_lse(q, k, v, d_out, mask=None, scale=None):
    """Query blocks of 13: P recomputed as exp(S - lse) per block, dK and dV accumulated over blocks."""
    scale, lead, qb, kb, vb, keep = _prep(q, k, v, mask, scale)
    sq = q.shape[-2]
    dq = np.zeros(lead + q.shape[-2:], dtype=q.dtype)
    dk = np.zeros(lead + k.shape[-2:], dtype=q.dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=q.dtype)
    for i0 in range(0, sq, 13):
        i1 = min(i0 + 13, sq)
        s = (qb[..., i0:i1, :] @ np.swapaxes(kb, -1, -2)) * scale
        if keep is not None:
            s = np.where(keep[..., i0:i1, :], s, -np.inf)
        mx = np.max(s, axis=-1, keepdims=True)
        mx = np.where(np.isfinite(mx), mx, 0.0)
        with np.errstate(divide="ignore"):
            lse = mx + np.log(np.sum(np.exp(s - mx), axis=-1, keepdims=True))
        p = np.where(np.isfinite(lse), np.exp(s - np.where(np.isfinite(lse), lse, 0.0)), 0.0)
        do = d_out[..., i0:i1, :]
        dv += np.swapaxes(p, -1, -2) @ do
        dp = do @ np.swapaxes(vb, -1, -2)
        ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
        dq[..., i0:i1, :] = (ds @ kb) * scale
        dk += (np.swapaxes(ds, -1, -2) @ qb[..., i0:i1, :]) * scale
    return dq, _reduce_to(dk, k.shape), _reduce_to(dv, v.shape)


_F = ["mask", "dv-ne-d"]

CATALOG = [
    dict(name="bwd-fa-kv-buffer-from-q", api="numpy-backward", fn="bwd_kv_grad_buffer_from_q", correct=False,
         bug="grad-buffer-wrong-tensor",
         parameter="dk's buffer is allocated like q (the packed qkv/kv name mix-up) instead of like k: filling "
                   "it with the (.., Sk, D) gradient fails (broadcast error) unless Sq == Sk (or Sk == 1, where it "
                   "broadcasts and dk is zero anyway). Triggers: Sq != Sk with Sk > 1",
         source="Dao-AILab/flash-attention#78",
         report="https://github.com/Dao-AILab/flash-attention/issues/78", dtype="float64", features=_F),
    dict(name="bwd-natten-dq-branch-overwrite", api="numpy-backward", fn="bwd_split_kv_dq_overwrite",
         correct=False, bug="dq-not-accumulated-over-kv-branches",
         parameter="with the keys split into branches of 32, each branch's dq = dS_b K_b overwrites dq instead "
                   "of being added: dq keeps only the last branch's share (dk, dv right). Triggers: Sk > 32 "
                   "with a row that has kept keys before the last branch",
         source="SHI-Labs/NATTEN#274", report="https://github.com/SHI-Labs/NATTEN/issues/274", dtype="float64",
         features=_F),
    dict(name="bwd-tinytorch-softmax-sum-sign", api="numpy-backward", fn="bwd_softmax_sum_term_sign",
         correct=False, bug="softmax-backward-sign",
         parameter="the softmax backward computes P * (dP + rowsum(dP * P)) instead of P * (dP - rowsum(dP * P)): "
                   "dq and dk wrong, dv right. Triggers: always (a row with a kept key and non-zero delta)",
         source="harvard-edge/cs249r_book#2053",
         report="https://github.com/harvard-edge/cs249r_book/pull/2053", dtype="float64", features=_F),
    dict(name="bwd-pytorch-advanced-normalize-over-i", api="numpy-backward",
         fn="bwd_attention_map_normalized_over_i", correct=False, bug="softmax-over-query-axis",
         parameter="the recomputed attention map is normalised by a sum over the query index i instead of the "
                   "key index j, so every gradient uses column-normalised weights. Triggers: always (unless "
                   "the weights are trivially 1)",
         source="YutaroOgawa/pytorch_advanced#114",
         report="https://github.com/YutaroOgawa/pytorch_advanced/issues/114", dtype="float64", features=_F),
    dict(name="bwd-jax-mask-bias-not-broadcast", api="numpy-backward", fn="bwd_mask_bias_layout_check",
         correct=False, bug="broadcast-mask-rejected",
         parameter="the bool mask is copied into an additive bias without broadcasting, and the layout check "
                   "then rejects a bias whose last two axes are not (Sq, Sk): ValueError for padding masks "
                   "(.., 1, Sk) and 1-D masks. Triggers: a mask whose last two axes are not (Sq, Sk)",
         source="jax-ml/jax#28974", report="https://github.com/jax-ml/jax/issues/28974", dtype="float64",
         features=_F),
    dict(name="bwd-mojo-extra-grad-slots", api="numpy-backward", fn="bwd_function_extra_grads", correct=False,
         bug="backward-returns-extra-gradients",
         parameter="the backward returns one slot per forward input (dq, dk, dv, None, None) instead of the "
                   "three gradients the API takes. Triggers: always",
         source="XPU-Forces/mojo_opset#263", report="https://github.com/XPU-Forces/mojo_opset/pull/263",
         dtype="float64", features=_F),
    dict(name="bwd-dense-rowsum-do-o", api="numpy-backward", fn="bwd_dense_rowsum_do_o", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=_F),
    dict(name="bwd-query-blocks-lse", api="numpy-backward", fn="bwd_query_blocks_lse", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=_F),
]
