"""Held-out NumPy attention backward kernels ("numpy-backward" API).

Contract: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv)
  Same shapes/mask/scale as the refimpl forward.  Forward: S = scale q k^T
  (-inf where masked), P = softmax (fully masked row: P = 0), O = P v.
  dV = P^T dO; dP = dO V^T; delta_i = sum_c dO_ic O_ic; dS = P (dP - delta);
  dQ = scale dS K; dK = scale dS^T Q; each gradient summed over broadcast dims.

Each broken kernel carries exactly one mistake, marked with "# BUG:".
"""
import math

import numpy as np


# ---------------------------------------------------------------------------
# shared correct helpers
# ---------------------------------------------------------------------------
def _resolve_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _unbroadcast(g, shape):
    """Sum a broadcast gradient back to `shape` (numpy autograd style)."""
    extra = g.ndim - len(shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _scores(q, k, mask, sm):
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        shape = np.broadcast_shapes(s.shape, keep.shape)
        s = np.where(np.broadcast_to(keep, shape), np.broadcast_to(s, shape), -np.inf)
    return s


def _safe_softmax(s):
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = e.sum(axis=-1, keepdims=True)
    return e / np.where(den == 0.0, 1.0, den)


def _grads_from(q, k, v, P, dS, dO, sm, dq_scale=None, dk_scale=None):
    dv = np.matmul(np.swapaxes(P, -1, -2), dO)
    dq = np.matmul(dS, k) * (sm if dq_scale is None else dq_scale)
    dk = np.matmul(np.swapaxes(dS, -1, -2), q) * (sm if dk_scale is None else dk_scale)
    return (_unbroadcast(dq, q.shape).astype(q.dtype, copy=False),
            _unbroadcast(dk, k.shape).astype(k.dtype, copy=False),
            _unbroadcast(dv, v.shape).astype(v.dtype, copy=False))


# ---------------------------------------------------------------------------
# CORRECT kernels
# ---------------------------------------------------------------------------
def bwd_reference(q, k, v, d_out, mask=None, scale=None):
    """Materialised-P backward (what autograd of the eager path computes)."""
    sm = _resolve_scale(q, scale)
    P = _safe_softmax(_scores(q, k, mask, sm))
    O = np.matmul(P, v)
    dO = np.broadcast_to(d_out, O.shape)
    dP = np.matmul(dO, np.swapaxes(v, -1, -2))
    delta = np.sum(dO * O, axis=-1, keepdims=True)
    dS = P * (dP - delta)
    return _grads_from(q, k, v, P, dS, dO, sm)


def bwd_fa2_key_blocked(q, k, v, d_out, mask=None, scale=None):
    """FA2-style: forward saves (O, lse); backward recomputes P per key block of 56."""
    BLOCK_N = 56
    sm = _resolve_scale(q, scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        lead = np.broadcast_shapes(lead, np.shape(mask)[:-2])
    Sq, D = q.shape[-2:]
    Sk, Dv = v.shape[-2:]
    Q = np.broadcast_to(q, lead + (Sq, D)).astype(np.float64)
    K = np.broadcast_to(k, lead + (Sk, D)).astype(np.float64)
    V = np.broadcast_to(v, lead + (Sk, Dv)).astype(np.float64)
    M = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), lead + (Sq, Sk))
    dO = np.broadcast_to(d_out, lead + (Sq, Dv)).astype(np.float64)

    def block_scores(j0, j1):
        s = np.matmul(Q, np.swapaxes(K[..., j0:j1, :], -1, -2)) * sm
        if M is not None:
            s = np.where(M[..., j0:j1], s, -np.inf)
        return s

    # forward pass: online softmax -> O, lse
    m_i = np.full(lead + (Sq,), -np.inf)
    l_i = np.zeros(lead + (Sq,))
    acc = np.zeros(lead + (Sq, Dv))
    for j0 in range(0, Sk, BLOCK_N):
        j1 = min(j0 + BLOCK_N, Sk)
        s = block_scores(j0, j1)
        m_new = np.maximum(m_i, s.max(axis=-1))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        p = np.exp(s - m_safe[..., None])
        alpha = np.exp(m_i - m_safe)
        l_i = l_i * alpha + p.sum(axis=-1)
        acc = acc * alpha[..., None] + np.matmul(p, V[..., j0:j1, :])
        m_i = m_new
    O = acc / np.where(l_i == 0.0, 1.0, l_i)[..., None]
    with np.errstate(divide="ignore"):
        lse = np.where(l_i > 0.0, np.where(np.isfinite(m_i), m_i, 0.0) + np.log(l_i), np.inf)

    # backward pass
    delta = np.sum(dO * O, axis=-1, keepdims=True)
    dQ = np.zeros_like(Q)
    dK = np.zeros_like(K)
    dV = np.zeros_like(V)
    for j0 in range(0, Sk, BLOCK_N):
        j1 = min(j0 + BLOCK_N, Sk)
        P = np.exp(block_scores(j0, j1) - lse[..., None])  # fully masked rows: exp(-inf) = 0
        dV[..., j0:j1, :] = np.matmul(np.swapaxes(P, -1, -2), dO)
        dP = np.matmul(dO, np.swapaxes(V[..., j0:j1, :], -1, -2))
        dS = P * (dP - delta)
        dK[..., j0:j1, :] = np.matmul(np.swapaxes(dS, -1, -2), Q) * sm
        dQ += np.matmul(dS, K[..., j0:j1, :]) * sm
    return (_unbroadcast(dQ, q.shape).astype(q.dtype, copy=False),
            _unbroadcast(dK, k.shape).astype(k.dtype, copy=False),
            _unbroadcast(dV, v.shape).astype(v.dtype, copy=False))


# ---------------------------------------------------------------------------
# BROKEN kernels
# ---------------------------------------------------------------------------
def bwd_no_delta(q, k, v, d_out, mask=None, scale=None):
    sm = _resolve_scale(q, scale)
    P = _safe_softmax(_scores(q, k, mask, sm))
    O = np.matmul(P, v)
    dO = np.broadcast_to(d_out, O.shape)
    dP = np.matmul(dO, np.swapaxes(v, -1, -2))
    # BUG: softmax Jacobian without the row term: dS = P * dP (delta = rowsum(dO*O) dropped)
    dS = P * dP
    return _grads_from(q, k, v, P, dS, dO, sm)


def bwd_dk_unscaled(q, k, v, d_out, mask=None, scale=None):
    sm = _resolve_scale(q, scale)
    P = _safe_softmax(_scores(q, k, mask, sm))
    O = np.matmul(P, v)
    dO = np.broadcast_to(d_out, O.shape)
    dP = np.matmul(dO, np.swapaxes(v, -1, -2))
    delta = np.sum(dO * O, axis=-1, keepdims=True)
    dS = P * (dP - delta)
    # BUG: softmax_scale lost on the dK path (dK = dS^T Q), dQ still scaled
    return _grads_from(q, k, v, P, dS, dO, sm, dk_scale=1.0)


def bwd_delta_query_axis(q, k, v, d_out, mask=None, scale=None):
    sm = _resolve_scale(q, scale)
    P = _safe_softmax(_scores(q, k, mask, sm))
    dO = np.broadcast_to(d_out, P.shape[:-1] + (v.shape[-1],))
    dP = np.matmul(dO, np.swapaxes(v, -1, -2))
    # BUG: softmax-backward reduction sum(P*dP) taken over the query axis instead of the key axis
    delta = np.sum(P * dP, axis=-2, keepdims=True)
    dS = P * (dP - delta)
    return _grads_from(q, k, v, P, dS, dO, sm)


def bwd_recompute_without_mask(q, k, v, d_out, mask=None, scale=None):
    """Recompute-style backward: P rebuilt from saved lse."""
    sm = _resolve_scale(q, scale)
    s_masked = _scores(q, k, mask, sm)
    with np.errstate(divide="ignore"):
        m = np.max(s_masked, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        l = np.sum(np.exp(s_masked - m), axis=-1, keepdims=True)
        lse = np.where(l > 0, m + np.log(l), np.inf)
    O = np.matmul(_safe_softmax(s_masked), v)
    # BUG: P recomputed from the UNMASKED scores, so masked keys get exp(s - lse) > 0 in backward
    s_raw = np.broadcast_to(np.matmul(q, np.swapaxes(k, -1, -2)) * sm, s_masked.shape)
    P = np.exp(s_raw - lse)
    dO = np.broadcast_to(d_out, O.shape)
    dP = np.matmul(dO, np.swapaxes(v, -1, -2))
    delta = np.sum(dO * O, axis=-1, keepdims=True)
    dS = P * (dP - delta)
    return _grads_from(q, k, v, P, dS, dO, sm)


def bwd_broadcast_grad_mean(q, k, v, d_out, mask=None, scale=None):
    sm = _resolve_scale(q, scale)
    P = _safe_softmax(_scores(q, k, mask, sm))
    O = np.matmul(P, v)
    dO = np.broadcast_to(d_out, O.shape)
    dP = np.matmul(dO, np.swapaxes(v, -1, -2))
    delta = np.sum(dO * O, axis=-1, keepdims=True)
    dS = P * (dP - delta)
    grads = []
    for g, x in ((np.matmul(dS, k) * sm, q),
                 (np.matmul(np.swapaxes(dS, -1, -2), q) * sm, k),
                 (np.matmul(np.swapaxes(P, -1, -2), dO), v)):
        extra = g.ndim - x.ndim
        if extra > 0:
            g = g.sum(axis=tuple(range(extra)))
        axes = tuple(i for i, n in enumerate(x.shape) if n == 1 and g.shape[i] != 1)
        if axes:
            # BUG: broadcast (shared / GQA-style) heads averaged instead of summed
            g = g.mean(axis=axes, keepdims=True)
        grads.append(g.astype(x.dtype, copy=False))
    return tuple(grads)


def bwd_dp_value_dims_from_qk(q, k, v, d_out, mask=None, scale=None):
    sm = _resolve_scale(q, scale)
    P = _safe_softmax(_scores(q, k, mask, sm))
    O = np.matmul(P, v)
    dO = np.broadcast_to(d_out, O.shape)
    D = q.shape[-1]
    # BUG: dP = dO V^T tiled with the q/k head dim, dropping value channels beyond D when Dv > D
    dP = np.matmul(dO[..., :D], np.swapaxes(v[..., :D], -1, -2))
    delta = np.sum(dO * O, axis=-1, keepdims=True)
    dS = P * (dP - delta)
    return _grads_from(q, k, v, P, dS, dO, sm)


def bwd_plain_softmax_nan(q, k, v, d_out, mask=None, scale=None):
    sm = _resolve_scale(q, scale)
    s = _scores(q, k, mask, sm)
    with np.errstate(invalid="ignore"):
        # BUG: plain softmax; an all -inf row gives NaN probabilities that poison every gradient
        e = np.exp(s - np.max(s, axis=-1, keepdims=True))
        P = e / e.sum(axis=-1, keepdims=True)
        O = np.matmul(P, v)
        dO = np.broadcast_to(d_out, O.shape)
        dP = np.matmul(dO, np.swapaxes(v, -1, -2))
        delta = np.sum(dO * O, axis=-1, keepdims=True)
        dS = P * (dP - delta)
        return _grads_from(q, k, v, P, dS, dO, sm)


_F = ["mask", "dv-ne-d", "gqa"]


def _e(name, correct, bug, parameter, source, report, dtype="float64"):
    return {"name": name, "api": "numpy-backward", "fn": name, "correct": correct, "bug": bug,
            "parameter": parameter, "source": source, "report": report, "dtype": dtype,
            "features": list(_F)}


CATALOG = [
    _e("bwd_reference", True, None, None,
       "pytorch/pytorch#41508 (https://github.com/pytorch/pytorch/issues/41508)",
       "nn.MultiheadAttention gave NaN gradients for fully masked rows; this backward gives those rows zero contribution."),
    _e("bwd_fa2_key_blocked", True, None, {"block_n": 56},
       "marin-community/levanter#449 (https://github.com/marin-community/levanter/pull/449)",
       "Blocked FA backward whose dK/dV must be summed over broadcast query groups; this kernel recomputes P per key block and sums correctly."),
    _e("bwd_no_delta", False, "softmax-grad-missing-delta", "dS = P*dP",
       "huggingface/picotron#37 (https://github.com/huggingface/picotron/issues/37)",
       "Issue about the row-sum (delta) term of dL/dS in the ring-attention backward."),
    _e("bwd_dk_unscaled", False, "dk-missing-softmax-scale", "dK scale = 1",
       "Dao-AILab/flash-attention#2651 (https://github.com/Dao-AILab/flash-attention/issues/2651)",
       "The SM80 backward overwrote softmax_scale (used for dK scaling) with None."),
    _e("bwd_delta_query_axis", False, "softmax-grad-wrong-axis", "axis=-2",
       "SKaiNET-developers/SKaiNET#863 (https://github.com/SKaiNET-developers/SKaiNET/issues/863)",
       "softmaxGrad's reduction sum(upstream*y, dim) mishandled the softmax axis in the gradient tape."),
    _e("bwd_recompute_without_mask", False, "backward-mask-not-reapplied", None,
       "openxla/tokamax#316 (https://github.com/openxla/tokamax/issues/316)",
       "The attention VJP kernel lacked the bounds/mask check, so masked-out (out-of-range) keys contributed to the gradients."),
    _e("bwd_broadcast_grad_mean", False, "broadcast-grad-averaged", "mean over group axis",
       "marin-community/levanter#449 (https://github.com/marin-community/levanter/pull/449)",
       "GQA with flash attention: K/V broadcast over q_heads_per_group need their gradients summed over that axis."),
    _e("bwd_dp_value_dims_from_qk", False, "dp-uses-qk-head-dim", "Dv truncated to D",
       "XunhaoLai/native-sparse-attention-triton#27 (https://github.com/XunhaoLai/native-sparse-attention-triton/issues/27)",
       "backward_dq declared v/dO extents with qk_head_dim, so value channels beyond it were dropped from dp = do @ v^T."),
    _e("bwd_plain_softmax_nan", False, "fully-masked-row-nan-grad", None,
       "pytorch/pytorch#41508 (https://github.com/pytorch/pytorch/issues/41508)",
       "Fully masked rows made softmax 0/0 = NaN, and the NaN propagated into gradients of the whole batch."),
]
