"""Held-out NumPy backward kernels, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv).

The gradients of the contract-1 forward (O = softmax(q k^T * scale, kept keys only) v, zeros for a row with no kept
key) for loss = sum(d_out * O); k/v may have a head axis of size 1 broadcast against q's heads (dk, dv come back with
k/v's shape, summed over the broadcast axis); rows with no kept key have zero output and zero gradients; results in
the input dtype. Six kernels carry one mistake each (one marked line), two are correct.
"""
import math

import numpy as np


def _flatten(q, k, v, d_out, mask):
    """Broadcast the operands to a common leading shape and flatten it: (N, S, D) arrays and an (N, Sq, Sk) keep."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2], d_out.shape[:-2])
    sq, sk = q.shape[-2], k.shape[-2]
    qf = np.broadcast_to(q, lead + q.shape[-2:]).reshape((-1,) + q.shape[-2:])
    kf = np.broadcast_to(k, lead + k.shape[-2:]).reshape((-1,) + k.shape[-2:])
    vf = np.broadcast_to(v, lead + v.shape[-2:]).reshape((-1,) + v.shape[-2:])
    dof = np.broadcast_to(d_out, lead + d_out.shape[-2:]).reshape((-1,) + d_out.shape[-2:])
    if mask is None:
        keep = np.ones((qf.shape[0], sq, sk), dtype=bool)
    else:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk)).reshape((-1, sq, sk))
    return lead, qf, kf, vf, dof, keep


def _unflatten(grad, lead, like):
    """Undo _flatten for one gradient and sum it over the axes that `like` broadcast."""
    g = grad.reshape(lead + grad.shape[-2:])
    extra = g.ndim - like.ndim
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(like.shape[:-2]) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return np.ascontiguousarray(g).astype(like.dtype)


# --- kernel: bwd_key_tiles_workspace_out ---
def bwd_key_tiles_workspace_out(q, k, v, d_out, mask=None, scale=None):
    """Fused dK/dV kernel style: K pre-scaled into a workspace, key tiles of 32, tiles no query reaches skipped."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = dtype.type(scale)
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    n, sq, sk = keep.shape
    kw = kf * scale
    vw = vf.copy()
    s = np.matmul(qf, np.swapaxes(kw, -1, -2))
    s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    l_sum = np.exp(s - m).sum(axis=-1, keepdims=True)
    lse = np.where(l_sum > 0, m + np.log(np.where(l_sum > 0, l_sum, 1.0)), np.inf)
    o = np.matmul(np.exp(s - lse), vf)
    delta = (o * dof).sum(axis=-1, keepdims=True)
    dq = np.zeros_like(qf)
    dk, dv = kw, vw  # BUG: dK/dV are written into the reused K/V workspace, which is not zero-initialised
    for b in range(n):
        for n0 in range(0, sk, 32):
            n1 = min(n0 + 32, sk)
            keep_t = keep[b, :, n0:n1]
            if not keep_t.any():
                continue
            k_t = kw[b, n0:n1]
            v_t = vw[b, n0:n1]
            s_t = qf[b] @ k_t.T
            p_t = np.where(keep_t, np.exp(s_t - lse[b]), 0.0)
            dp_t = dof[b] @ v_t.T
            ds_t = p_t * (dp_t - delta[b])
            dq[b] += ds_t @ k_t
            dk[b, n0:n1] = (ds_t.T @ qf[b]) * scale
            dv[b, n0:n1] = p_t.T @ dof[b]
    return _unflatten(dq, lead, q), _unflatten(dk, lead, k), _unflatten(dv, lead, v)


# --- kernel: bwd_grad_without_sens ---
def bwd_grad_without_sens(q, k, v, d_out, mask=None, scale=None):
    """Framework-grad style: the attention forward is differentiated as a function of (q, k, v)."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = dtype.type(scale)
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    s = np.where(keep, np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    out = np.matmul(p, vf)
    sens = np.ones_like(out)  # BUG: d_out not used as the sensitivity
    dv = np.matmul(np.swapaxes(p, -1, -2), sens)
    dp = np.matmul(sens, np.swapaxes(vf, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, kf) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), qf) * scale
    return _unflatten(dq, lead, q), _unflatten(dk, lead, k), _unflatten(dv, lead, v)


# --- kernel: bwd_tape_attention_core ---
class _Node:
    def __init__(self, data, parents=(), backward=None):
        self.data = data
        self.parents = parents
        self.backward = backward
        self.grad = None


def _leaf(x):
    return _Node(x)


def _matmul(a, b):
    out = _Node(np.matmul(a.data, b.data), (a, b))
    out.backward = lambda g: (np.matmul(g, np.swapaxes(b.data, -1, -2)), np.matmul(np.swapaxes(a.data, -1, -2), g))
    return out


def _transpose(a):
    out = _Node(np.swapaxes(a.data, -1, -2), (a,))
    out.backward = lambda g: (np.swapaxes(g, -1, -2),)
    return out


def _scale(a, c):
    out = _Node(a.data * c, (a,))
    out.backward = lambda g: (g * c,)
    return out


def _masked_softmax(a, keep):
    s = np.where(keep, a.data, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    out = _Node(p, (a,))
    out.backward = lambda g: (p * (g - (p * g).sum(axis=-1, keepdims=True)),)
    return out


def _from_vec(data):
    return _Node(np.array(data, copy=True))


def _run_backward(root, sens):
    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.parents:
            visit(parent)
        order.append(node)

    visit(root)
    root.grad = sens
    for node in reversed(order):
        if node.backward is None or node.grad is None:
            continue
        for parent, g in zip(node.parents, node.backward(node.grad)):
            parent.grad = g if parent.grad is None else parent.grad + g


def bwd_tape_attention_core(q, k, v, d_out, mask=None, scale=None):
    """Autograd-tape style: every op of the attention core records a backward edge; the tape is walked back."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    qn, kn, vn = _leaf(qf), _leaf(kf), _leaf(vf)
    scores = _scale(_matmul(qn, _transpose(kn)), dtype.type(scale))
    attn = _masked_softmax(scores, keep)
    out = _from_vec(_matmul(attn, vn).data)  # BUG: the result is rebuilt from its raw values, which drops its tape edge
    _run_backward(out, dof)
    grads = [node.grad if node.grad is not None else np.zeros_like(node.data) for node in (qn, kn, vn)]
    return _unflatten(grads[0], lead, q), _unflatten(grads[1], lead, k), _unflatten(grads[2], lead, v)


# --- kernel: bwd_query_blocks_store ---
def bwd_query_blocks_store(q, k, v, d_out, mask=None, scale=None):
    """CUDA-kernel style: one block per 32 query rows computes its dQ rows and its share of dK/dV."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = dtype.type(scale)
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    sq = qf.shape[1]
    dq = np.zeros_like(qf)
    dk = np.zeros(kf.shape, dtype=dtype)
    dv = np.zeros(vf.shape, dtype=dtype)
    for r0 in range(0, sq, 32):
        r1 = min(r0 + 32, sq)
        s = np.where(keep[:, r0:r1], np.matmul(qf[:, r0:r1], np.swapaxes(kf, -1, -2)) * scale, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
        do_blk = dof[:, r0:r1]
        dp = np.matmul(do_blk, np.swapaxes(vf, -1, -2))
        ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
        dq[:, r0:r1] = np.matmul(ds, kf) * scale
        dk_blk = np.matmul(np.swapaxes(ds, -1, -2), qf[:, r0:r1]) * scale
        dv_blk = np.matmul(np.swapaxes(p, -1, -2), do_blk)
        dk[...], dv[...] = dk_blk, dv_blk  # BUG: store, not atomic add
    return _unflatten(dq, lead, q), _unflatten(dk, lead, k), _unflatten(dv, lead, v)


# --- kernel: bwd_finite_fill_recompute ---
def bwd_finite_fill_recompute(q, k, v, d_out, mask=None, scale=None):
    """Fused kernel style: the mask is folded in as a large finite negative before the recomputed softmax."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = dtype.type(scale)
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    s = np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale
    s = np.where(keep, s, np.finfo(dtype).min)  # BUG: finite fill
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    o = np.matmul(p, vf)
    delta = (o * dof).sum(axis=-1, keepdims=True)
    dv = np.matmul(np.swapaxes(p, -1, -2), dof)
    ds = p * (np.matmul(dof, np.swapaxes(vf, -1, -2)) - delta)
    dq = np.matmul(ds, kf) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), qf) * scale
    return _unflatten(dq, lead, q), _unflatten(dk, lead, k), _unflatten(dv, lead, v)


# --- kernel: bwd_value_path_masked ---
def bwd_value_path_masked(q, k, v, d_out, mask=None, scale=None):
    """Layer style: the mask is applied on the value path (weights times keep) next to the normalisation."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = dtype.type(scale)
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    s = np.matmul(qf, np.swapaxes(kf, -1, -2)) * scale
    s_m = s  # BUG: padded keys are not masked out of the scores, so they stay in the softmax denominator
    m = s_m.max(axis=-1, keepdims=True)
    e = np.exp(s_m - np.where(np.isfinite(m), m, 0.0))
    z = e.sum(axis=-1, keepdims=True)
    p_norm = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    p = p_norm * keep
    dv = np.matmul(np.swapaxes(p, -1, -2), dof)
    dp = np.matmul(dof, np.swapaxes(vf, -1, -2)) * keep
    ds = p_norm * (dp - (p_norm * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, kf) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), qf) * scale
    return _unflatten(dq, lead, q), _unflatten(dk, lead, k), _unflatten(dv, lead, v)


# --- kernel: bwd_row_blocks_lse ---
def bwd_row_blocks_lse(q, k, v, d_out, mask=None, scale=None):
    """Correct: query blocks of 17 rows; P recomputed from the row LSE; delta = rowsum(dO * O) per block."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = dtype.type(scale)
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    sq = qf.shape[1]
    dq = np.zeros_like(qf)
    dk = np.zeros(kf.shape, dtype=dtype)
    dv = np.zeros(vf.shape, dtype=dtype)
    for r0 in range(0, sq, 17):
        r1 = min(r0 + 17, sq)
        s = np.where(keep[:, r0:r1], np.matmul(qf[:, r0:r1], np.swapaxes(kf, -1, -2)) * scale, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        total = np.exp(s - m).sum(axis=-1, keepdims=True)
        lse = m + np.log(np.where(total > 0, total, 1.0))
        p = np.where(total > 0, np.exp(s - lse), 0.0)
        o = np.matmul(p, vf)
        delta = (o * dof[:, r0:r1]).sum(axis=-1, keepdims=True)
        ds = p * (np.matmul(dof[:, r0:r1], np.swapaxes(vf, -1, -2)) - delta)
        dq[:, r0:r1] = np.matmul(ds, kf) * scale
        dk += np.matmul(np.swapaxes(ds, -1, -2), qf[:, r0:r1]) * scale
        dv += np.matmul(np.swapaxes(p, -1, -2), dof[:, r0:r1])
    return _unflatten(dq, lead, q), _unflatten(dk, lead, k), _unflatten(dv, lead, v)


# --- kernel: bwd_jacobian_rows_einsum ---
def bwd_jacobian_rows_einsum(q, k, v, d_out, mask=None, scale=None):
    """Correct: einsum contractions; the softmax Jacobian term uses rowsum(P * dP) instead of rowsum(dO * O)."""
    dtype = q.dtype
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    scale = dtype.type(scale)
    lead, qf, kf, vf, dof, keep = _flatten(q, k, v, d_out, mask)
    s = np.einsum("nid,njd->nij", qf, kf) * scale
    s = np.where(keep, s, -np.inf)
    live = keep.any(axis=-1, keepdims=True)
    s = s - np.where(live, s.max(axis=-1, keepdims=True), 0.0)
    e = np.exp(s)
    p = e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0)
    dp = np.einsum("nie,nje->nij", dof, vf)
    ds = p * dp - p * np.einsum("nij,nij->ni", p, dp)[..., None]
    dq = np.einsum("nij,njd->nid", ds, kf) * scale
    dk = np.einsum("nij,nid->njd", ds, qf) * scale
    dv = np.einsum("nij,nie->nje", p, dof)
    return _unflatten(dq, lead, q), _unflatten(dk, lead, k), _unflatten(dv, lead, v)


CATALOG = [
    dict(name="bwd-cudnn-zero-trip-tiles-unwritten", api="numpy-backward", fn="bwd_key_tiles_workspace_out",
         correct=False, bug="skipped-key-tiles-not-zeroed",
         parameter="dK/dV are written tile by tile (key tiles of 32) into the reused pre-scaled-K and V workspaces; "
                   "a tile that no query attends is skipped and keeps the workspace contents (K * scale in dK, V in "
                   "dV) instead of zeros. Triggers: a (batch, head) slice with a key tile of 32 in which no key is "
                   "kept for any query",
         source="NVIDIA/cudnn-frontend#1040", report="https://github.com/NVIDIA/cudnn-frontend/pull/1040",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-mindone-grad-without-sens", api="numpy-backward", fn="bwd_grad_without_sens", correct=False,
         bug="upstream-gradient-ignored",
         parameter="d_out is not used as the sensitivity: the gradients are those of sum(O) (d_out replaced by "
                   "ones). Triggers: d_out not all ones",
         source="mindspore-lab/mindone#1438", report="https://github.com/mindspore-lab/mindone/pull/1438",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-aprender-severed-tape", api="numpy-backward", fn="bwd_tape_attention_core", correct=False,
         bug="graph-severed-zero-gradients",
         parameter="the attention output is rebuilt from its raw values (from_vec), which drops its tape edge: no "
                   "gradient reaches q, k or v and all three come back zero. Triggers: always (a row with a kept "
                   "key)",
         source="paiml/aprender#2203", report="https://github.com/paiml/aprender/pull/2203",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-ccnet-dkdv-store-race", api="numpy-backward", fn="bwd_query_blocks_store", correct=False,
         bug="dkdv-store-instead-of-accumulate",
         parameter="each block of 32 query rows stores its dK/dV contribution with a plain write instead of an "
                   "atomic add, so the last query block's share is all that remains. Triggers: Sq > 32",
         source="speedinghzl/CCNet#62", report="https://github.com/speedinghzl/CCNet/issues/62",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-cuequivariance-finite-fill", api="numpy-backward", fn="bwd_finite_fill_recompute",
         correct=False, bug="fully-masked-row-uniform-gradients",
         parameter="the mask is folded in as the dtype's most negative finite value, so a row with no kept key "
                   "recomputes as uniform weights: its output is mean(V) and it feeds non-zero dq, dk and dv. "
                   "Triggers: a mask with a row that has no kept key",
         source="NVIDIA/cuEquivariance#204", report="https://github.com/NVIDIA/cuEquivariance/issues/204",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-fla-padding-keys-in-normaliser", api="numpy-backward", fn="bwd_value_path_masked",
         correct=False, bug="masked-keys-in-softmax-denominator",
         parameter="the scores are not masked before the softmax; the mask is applied to the normalised weights "
                   "(value path) only, so dropped keys stay in the denominator and the gradients are those of "
                   "(softmax(S) * keep) V. Triggers: a mask that drops a key in a row that keeps at least one key",
         source="fla-org/flash-linear-attention#1263",
         report="https://github.com/fla-org/flash-linear-attention/issues/1263",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-row-blocks-lse", api="numpy-backward", fn="bwd_row_blocks_lse", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="bwd-jacobian-rows-einsum", api="numpy-backward", fn="bwd_jacobian_rows_einsum", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
]
