"""Held-out set 22, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv).

Gradients of the `refimpl` forward (softmax(q k^T * scale, masked) v) for loss = sum(d_out * O); k/v may have
a head axis of size 1 broadcast against q's heads (dk, dv come back with k/v's shape, summed over it); rows
with no kept key have zero output and zero gradients; results in the input dtype.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import numpy as np


def _reduce_to(x, shape):
    """Sum a gradient over the axes along which its input was broadcast."""
    lead = len(x.shape) - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


# --- kernel: bwd_sp_grads_not_reduced ---
def bwd_sp_grads_not_reduced(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_full = np.broadcast_to(k, lead + k.shape[-2:])
    v_full = np.broadcast_to(v, lead + v.shape[-2:])
    s = np.matmul(q, np.swapaxes(k_full, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    z = p.sum(axis=-1, keepdims=True)
    p = p / np.where(z == 0, 1.0, z)
    o = np.matmul(p, v_full)
    dv_full = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v_full, -1, -2))
    ds = p * (dp - (d_out * o).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k_full) * scale
    dk_full = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    dk, dv = dk_full, dv_full  # BUG: kv-group gradients are not sum-reduced back to the kv heads
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


# --- kernel: bwd_masked_log_softmax_nan ---
def _masked_log_softmax(vector, mask_f):
    vector = vector + np.log(mask_f)  # BUG: log(0) = -inf; a row with no kept key becomes NaN
    mx = vector.max(axis=-1, keepdims=True)
    shifted = vector - mx
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def bwd_masked_log_softmax_nan(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    mask_f = np.ones(s.shape, dtype=s.dtype) if mask is None else np.broadcast_to(mask, s.shape).astype(s.dtype)
    with np.errstate(divide="ignore"):
        p = np.exp(_masked_log_softmax(s, mask_f)) * mask_f
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype),
            _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_dq_never_set ---
def bwd_dq_never_set(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    x = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        x = np.where(np.broadcast_to(mask, x.shape), x, -np.inf)
    x_max = x.max(axis=-1, keepdims=True)
    x_max = np.where(np.isfinite(x_max), x_max, 0.0)
    a = np.exp(x - x_max)
    a_sum = a.sum(axis=-1, keepdims=True)
    a = a / np.where(a_sum == 0, 1.0, a_sum)
    grad_a = np.matmul(d_out, np.swapaxes(v, -1, -2))
    dl_dx = a * (grad_a - (a * grad_a).sum(axis=-1, keepdims=True))
    dlo_dq = np.zeros(np.broadcast_shapes(q.shape, dl_dx.shape[:-1] + (q.shape[-1],)))  # BUG: never set
    dlo_dk = np.matmul(np.swapaxes(dl_dx, -1, -2), q) * scale
    dlo_dv = np.matmul(np.swapaxes(a, -1, -2), d_out)
    return (dlo_dq.astype(q.dtype), _reduce_to(dlo_dk, k.shape).astype(k.dtype),
            _reduce_to(dlo_dv, v.shape).astype(v.dtype))


# --- kernel: bwd_scores_not_masked ---
def bwd_scores_not_masked(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    score = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    keep = np.ones(score.shape, dtype=bool) if mask is None else np.broadcast_to(mask, score.shape)
    masked = score  # BUG: the padded positions are not masked before the softmax
    peak = masked.max(axis=-1, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    w = np.exp(masked - peak)
    tot = w.sum(axis=-1, keepdims=True)
    w = np.where(keep.any(axis=-1, keepdims=True), w / np.where(tot == 0, 1.0, tot), 0.0)
    out = np.matmul(w, v)
    dv = np.matmul(np.swapaxes(w, -1, -2), d_out)
    dw = np.matmul(d_out, np.swapaxes(v, -1, -2))
    dscore = w * (dw - (d_out * out).sum(axis=-1, keepdims=True))
    dq = np.matmul(dscore, k) * scale
    dk = np.matmul(np.swapaxes(dscore, -1, -2), q) * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype),
            _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_dk_view_not_transpose ---
def bwd_dk_view_not_transpose(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    sk, d = k.shape[-2:]
    y = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        y = np.where(np.broadcast_to(mask, y.shape), y, -np.inf)
    mx = y.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    att = np.exp(y - mx)
    nrm = att.sum(axis=-1, keepdims=True)
    att = att / np.where(nrm == 0, 1.0, nrm)
    dv = np.matmul(np.swapaxes(att, -1, -2), d_out)
    datt = np.matmul(d_out, np.swapaxes(v, -1, -2))
    dy = att * (datt - (att * datt).sum(axis=-1, keepdims=True))
    dq = np.matmul(dy, k) * scale
    dk_t = np.matmul(np.swapaxes(q, -1, -2), dy) * scale  # (..., D, Sk)
    dk = dk_t.reshape(dk_t.shape[:-2] + (sk, d))  # BUG: a view/reshape where a transpose is needed
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype),
            _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_context_grad_dropped ---
def bwd_context_grad_dropped(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    e = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        e = np.where(np.broadcast_to(mask, e.shape), e, -np.inf)
    em = e.max(axis=-1, keepdims=True)
    em = np.where(np.isfinite(em), em, 0.0)
    alpha = np.exp(e - em)
    den = alpha.sum(axis=-1, keepdims=True)
    alpha = alpha / np.where(den == 0, 1.0, den)
    context = np.matmul(alpha, v)
    dcontext_v = np.matmul(np.swapaxes(alpha, -1, -2), d_out)
    dalpha = np.matmul(d_out, np.swapaxes(v, -1, -2))
    de = alpha * (dalpha - (d_out * context).sum(axis=-1, keepdims=True))
    dq = np.matmul(de, k) * scale
    dcontext_k = np.matmul(np.swapaxes(de, -1, -2), q) * scale
    grads = (dq.astype(q.dtype), _reduce_to(dcontext_k, k.shape).astype(k.dtype),
             _reduce_to(dcontext_v, v.shape).astype(v.dtype))
    return grads[0], np.zeros_like(k), np.zeros_like(v)  # BUG: dcontext (keys/values) is never passed back


# --- kernel: bwd_dense_delta ---
def bwd_dense_delta(q, k, v, d_out, mask=None, scale=None):
    """Dense backward with delta = rowsum(dO * O), computed in float64."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    q64, k64, v64, do64 = (a.astype(np.float64) for a in (q, k, v, d_out))
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(s - m)
    z = p.sum(axis=-1, keepdims=True)
    p = p / np.where(z == 0, 1.0, z)
    o = np.matmul(p, v64)
    delta = (do64 * o).sum(axis=-1, keepdims=True)
    dp = np.matmul(do64, np.swapaxes(v64, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k64) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q64) * scale
    dv = np.matmul(np.swapaxes(p, -1, -2), do64)
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype),
            _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_key_chunks_base2_lse ---
def bwd_key_chunks_base2_lse(q, k, v, d_out, mask=None, scale=None):
    """Two passes over key chunks of 19: a base-2 row LSE first, then P = exp2(S * log2(e) - lse2) per chunk."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    log2e = 1.0 / math.log(2.0)
    q64, k64, v64, do64 = (a.astype(np.float64) for a in (q, k, v, d_out))
    sk = k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    sq = q.shape[-2]
    keep = None if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    chunks = [(a, min(a + 19, sk)) for a in range(0, sk, 19)]

    def scores2(a, b):
        s2 = np.matmul(q64, np.swapaxes(k64[..., a:b, :], -1, -2)) * (scale * log2e)
        s2 = np.broadcast_to(s2, lead + (sq, b - a))
        return s2 if keep is None else np.where(keep[..., a:b], s2, -np.inf)

    m2 = np.full(lead + (sq, 1), -np.inf)
    for a, b in chunks:
        m2 = np.maximum(m2, scores2(a, b).max(axis=-1, keepdims=True))
    m2s = np.where(np.isfinite(m2), m2, 0.0)
    l2 = np.zeros(lead + (sq, 1))
    for a, b in chunks:
        l2 = l2 + np.exp2(scores2(a, b) - m2s).sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse2 = np.where(l2 > 0, m2s + np.log2(np.where(l2 > 0, l2, 1.0)), np.inf)
    o = np.zeros(lead + (sq, v.shape[-1]))
    for a, b in chunks:
        o = o + np.matmul(np.exp2(scores2(a, b) - lse2), v64[..., a:b, :])
    delta = (do64 * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + (sq, q.shape[-1]))
    dk = np.zeros(lead + (sk, k.shape[-1]))
    dv = np.zeros(lead + (sk, v.shape[-1]))
    for a, b in chunks:
        p = np.exp2(scores2(a, b) - lse2)
        dv[..., a:b, :] = np.matmul(np.swapaxes(p, -1, -2), do64)
        ds = p * (np.matmul(do64, np.swapaxes(v64[..., a:b, :], -1, -2)) - delta)
        dq = dq + np.matmul(ds, k64[..., a:b, :]) * scale
        dk[..., a:b, :] = np.matmul(np.swapaxes(ds, -1, -2), q64) * scale
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype),
            _reduce_to(dv, v.shape).astype(v.dtype))


CATALOG = [
    dict(name="bwd-neuronsp-group-grads-not-reduced", api="numpy-backward", fn="bwd_sp_grads_not_reduced",
         correct=False, bug="gqa-dkdv-not-summed",
         parameter="k and v are expanded to the query heads and dk, dv are computed per query head but never "
                   "sum-reduced back to the kv heads, so a broadcast kv head axis of 1 comes back with the "
                   "query head count (wrong shape). Triggers: k/v with a broadcast head axis of size 1 under "
                   "H > 1",
         source="dylanyunlon/Neuron_SP#95", report="https://github.com/dylanyunlon/Neuron_SP/pull/95",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-allennlp-masked-log-softmax-nan", api="numpy-backward", fn="bwd_masked_log_softmax_nan",
         correct=False, bug="fully-masked-row-nan-gradients",
         parameter="the weights are recomputed as exp(masked_log_softmax) with log(mask) added to the scores: a "
                   "row with no kept key is all -inf and gives NaN, which spreads into dq and through the sums "
                   "into dk and dv. Triggers: a mask with a row that has no kept key",
         source="allenai/allennlp#890", report="https://github.com/allenai/allennlp/issues/890",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-pytorch-lab-dq-never-set", api="numpy-backward", fn="bwd_dq_never_set", correct=False,
         bug="dq-not-computed",
         parameter="the backward declares dlo_dq but never sets it from dS @ K, so dq comes back zero (dk, dv "
                   "right). Triggers: always (rows with a kept key)",
         source="pytorch/pytorch#68307", report="https://github.com/pytorch/pytorch/pull/68307",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-tf-scores-not-masked", api="numpy-backward", fn="bwd_scores_not_masked", correct=False,
         bug="backward-mask-not-applied",
         parameter="the recomputed scores are not masked before the softmax (only rows with no kept key are "
                   "zeroed), so dropped keys get weight and gradient. Triggers: a mask with a dropped key in a "
                   "row that has a kept key",
         source="tensorflow/tensorflow#43941", report="https://github.com/tensorflow/tensorflow/issues/43941",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-tokenlearner-view-not-transpose", api="numpy-backward", fn="bwd_dk_view_not_transpose",
         correct=False, bug="dk-reshaped-not-transposed",
         parameter="dk is computed as Q^T dS of shape (..., D, Sk) and reshaped to (..., Sk, D) instead of "
                   "transposed, scrambling its entries (dq, dv right). Triggers: always (D > 1, Sk > 1, a kept "
                   "key)",
         source="rish-16/tokenlearner-pytorch#1", report="https://github.com/rish-16/tokenlearner-pytorch/issues/1",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-seq2seq-context-grad-dropped", api="numpy-backward", fn="bwd_context_grad_dropped",
         correct=False, bug="kv-gradients-dropped",
         parameter="the gradient with respect to the attended context (keys and values) is computed but never "
                   "passed back: dk and dv come back zero (dq right). Triggers: always (rows with a kept key)",
         source="rsarxiv/seq2seq-attention#7", report="https://github.com/rsarxiv/seq2seq-attention/issues/7",
         dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-dense-delta", api="numpy-backward", fn="bwd_dense_delta", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
    dict(name="bwd-key-chunks-base2-lse", api="numpy-backward", fn="bwd_key_chunks_base2_lse", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask", "gqa", "dv-ne-d"]),
]
