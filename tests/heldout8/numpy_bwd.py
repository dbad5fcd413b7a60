"""heldout8, API `numpy-backward`: fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv).

Gradients of the refimpl forward (O = softmax(scale * q k^T, masked) v) for loss = sum(d_out * O). k/v may have a
head axis of size 1 broadcast against q's heads (dk, dv come back with k/v's shape, summed over the broadcast
axis); rows with no kept key have zero output and zero gradients; results in the input dtype.
Each broken kernel carries one mistake adapted from the public report named in CATALOG; each kernel section starts
with a `# --- kernel:` marker.
"""
import numpy as np
import torch


def _scale(q, scale):
    return 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)


def _unbroadcast(g, shape):
    """Sum g over the axes that were broadcast to reach g.shape from shape."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def _masked_scores(q, k, mask, sc):
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(sc, dtype=q.dtype)
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), s.shape)
        s = np.where(keep, s, -np.inf)
    return s, keep


def _probs(s):
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(den == 0, 1.0, den)


def _finish(q, k, v, dq, dk, dv):
    dt = q.dtype
    return (dq.astype(dt), _unbroadcast(dk, k.shape).astype(dt), _unbroadcast(dv, v.shape).astype(dt))


# --- kernel: bwd_layer_passthrough ---
def bwd_layer_passthrough(q, k, v, d_out, mask=None, scale=None):
    """Layer-by-layer backward (matmul, softmax layer, matmul) of a small C framework, ported to NumPy."""
    sc = _scale(q, scale)
    s, _ = _masked_scores(q, k, mask, sc)
    p = _probs(s)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = dp  # BUG: softmax backward passes the gradient straight through (no P * (dP - rowsum(dP * P)))
    ds = np.where(p > 0, ds, 0.0)
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_eager_nan_rows ---
def bwd_eager_nan_rows(q, k, v, d_out, mask=None, scale=None):
    """Eager quantised-SDPA math: plain softmax, output of fully masked rows set to 0 afterwards."""
    sc = _scale(q, scale)
    s, keep = _masked_scores(q, k, mask, sc)
    with np.errstate(invalid="ignore"):
        m = np.max(s, axis=-1, keepdims=True)
        e = np.exp(s - m)
        p = e / np.sum(e, axis=-1, keepdims=True)  # BUG: dead rows give 0/0 = NaN P, reused by the backward
        dead = np.logical_not(np.any(keep, axis=-1, keepdims=True)) if keep is not None else np.zeros(m.shape, bool)
        o = np.where(dead, 0.0, np.matmul(p, v))
        do = np.where(dead, 0.0, d_out)
        dv = np.matmul(np.swapaxes(p, -1, -2), do)
        dp = np.matmul(do, np.swapaxes(v, -1, -2))
        delta = np.sum(do * o, axis=-1, keepdims=True)
        ds = p * (dp - delta)
        dq = np.matmul(ds, k) * sc
        dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_gqa_fallback ---
def bwd_gqa_fallback(q, k, v, d_out, mask=None, scale=None):
    """Fallback backward that treats every query head independently, then writes into the kv-head buffers."""
    sc = _scale(q, scale)
    s, _ = _masked_scores(q, k, mask, sc)
    p = _probs(s)
    o = np.matmul(p, v)
    dv_h = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * sc
    dk_h = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    if q.ndim >= 3 and k.ndim == q.ndim and k.shape[-3] == 1 and q.shape[-3] > 1:
        dk = np.zeros(dk_h.shape[:-3] + k.shape[-3:], dtype=dk_h.dtype)
        dv = np.zeros(dv_h.shape[:-3] + v.shape[-3:], dtype=dv_h.dtype)
        dk0, dv0 = dk[..., 0, :, :], dv[..., 0, :, :]
        for h in range(q.shape[-3]):
            dk0[...], dv0[...] = dk_h[..., h, :, :], dv_h[..., h, :, :]  # BUG: overwritten per query head, not summed
    else:
        dk, dv = dk_h, dv_h
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_matrix_jacobian ---
def bwd_matrix_jacobian(q, k, v, d_out, mask=None, scale=None):
    """Softmax derivative written as the Jacobian-vector product y * (g - sum(g * y))."""
    sc = _scale(q, scale)
    s, _ = _masked_scores(q, k, mask, sc)
    p = _probs(s)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    gy = np.sum(dp * p, axis=(-2, -1), keepdims=True)  # BUG: sum over the whole (Sq, Sk) matrix, not per row
    ds = p * (dp - gy)
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_recompute_unmasked ---
def bwd_recompute_unmasked(q, k, v, d_out, mask=None, scale=None):
    """Backward that recomputes the attention weights from q and k instead of saving them."""
    sc = _scale(q, scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * sc  # BUG: the backward recompute never applies the mask
    p = _probs(s)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_paper_chain_rule ---
def bwd_paper_chain_rule(q, k, v, d_out, mask=None, scale=None):
    """Backward transcribed from the FlashAttention-2 paper's chain-rule summary."""
    sc = _scale(q, scale)
    s, _ = _masked_scores(q, k, mask, sc)
    p = _probs(s)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(ds, q) * sc  # BUG: dK = dS Q transcribed without the transpose (dK = dS^T Q)
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_lowp_delta ---
def bwd_lowp_delta(q, k, v, d_out, mask=None, scale=None):
    """Splash-style backward: row statistic delta = sum(dO * O), everything else accumulated in float32/64."""
    sc = _scale(q, scale)
    s, _ = _masked_scores(q, k, mask, sc)
    p = _probs(s)
    o = np.matmul(p, v)
    prod = torch.from_numpy(np.ascontiguousarray(d_out * o))
    prod = prod.to(torch.bfloat16).double().numpy()  # BUG: dO * O rounded to bfloat16 before the row sum
    delta = np.sum(prod, axis=-1, keepdims=True).astype(q.dtype)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_tutorial_blocks ---
def bwd_tutorial_blocks(q, k, v, d_out, mask=None, scale=None, block=16):
    """Tutorial fused-attention backward: per column block of K/V, loop over query blocks with the saved LSE."""
    dt = q.dtype
    sc = _scale(q, scale)
    s_full, _ = _masked_scores(q, k, mask, sc)
    m = np.max(s_full, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        lse = m + np.log(np.sum(np.exp(s_full - m), axis=-1, keepdims=True))
    o = np.matmul(np.exp(s_full - np.where(np.isfinite(lse), lse, 0.0)), v)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    n_ctx = k.shape[-2]
    num_block = -(-n_ctx // block)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    dq = np.zeros(lead + q.shape[-2:], dtype=dt)
    dk = np.zeros(lead + k.shape[-2:], dtype=dt)
    dv = np.zeros(lead + v.shape[-2:], dtype=dt)
    for start_n in range(0, num_block * block, block):
        kb = k[..., start_n:start_n + block, :]
        vb = v[..., start_n:start_n + block, :]
        for start_m in range(0, num_block * block, block):  # BUG: query loop bound from the keys' N_CTX
            rows = slice(start_m, start_m + block)
            s = s_full[..., rows, start_n:start_n + block]
            lse_b = lse[..., rows, :]
            p = np.where(np.isfinite(lse_b), np.exp(s - np.where(np.isfinite(lse_b), lse_b, 0.0)), 0.0)
            do = d_out[..., rows, :]
            dv[..., start_n:start_n + block, :] += np.matmul(np.swapaxes(p, -1, -2), do)
            dp = np.matmul(do, np.swapaxes(vb, -1, -2))
            ds = p * (dp - delta[..., rows, :])
            dk[..., start_n:start_n + block, :] += np.matmul(np.swapaxes(ds, -1, -2), q[..., rows, :]) * sc
            dq[..., rows, :] += np.matmul(ds, kb) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_dense ---
def bwd_dense(q, k, v, d_out, mask=None, scale=None):
    """Dense backward: P, dV = P^T dO, dP = dO V^T, D = rowsum(dO * O), dS = P (dP - D)."""
    sc = _scale(q, scale)
    s, _ = _masked_scores(q, k, mask, sc)
    p = _probs(s)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * sc
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_key_tiles ---
def bwd_key_tiles(q, k, v, d_out, mask=None, scale=None, tile=24):
    """FlashAttention-2 style: forward LSE first, then per key tile recompute P, accumulate dQ over tiles."""
    dt = q.dtype
    sc = _scale(q, scale)
    s_all, keep = _masked_scores(q, k, mask, sc)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    rows = lead + (q.shape[-2], 1)
    m_i = np.full(rows, -np.inf, dtype=dt)
    l_i = np.zeros(rows, dtype=dt)
    acc = np.zeros(lead + (q.shape[-2], v.shape[-1]), dtype=dt)
    sk = k.shape[-2]
    for n0 in range(0, sk, tile):
        s = s_all[..., n0:n0 + tile]
        m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        corr = np.where(np.isfinite(m_i), np.exp(m_i - m_safe), 0.0)
        e = np.exp(s - m_safe)
        l_i = l_i * corr + np.sum(e, axis=-1, keepdims=True)
        acc = acc * corr + np.matmul(e, v[..., n0:n0 + tile, :])
        m_i = m_new
    alive = l_i > 0
    with np.errstate(divide="ignore"):
        lse = np.where(alive, np.where(np.isfinite(m_i), m_i, 0.0) + np.log(np.where(alive, l_i, 1.0)), 0.0)
    o = acc / np.where(alive, l_i, 1.0)
    delta = np.sum(d_out * o, axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:], dtype=dt)
    dk = np.zeros(lead + k.shape[-2:], dtype=dt)
    dv = np.zeros(lead + v.shape[-2:], dtype=dt)
    for n0 in range(0, sk, tile):
        p = np.where(alive, np.exp(s_all[..., n0:n0 + tile] - lse), 0.0)
        dv[..., n0:n0 + tile, :] = np.matmul(np.swapaxes(p, -1, -2), d_out)
        dp = np.matmul(d_out, np.swapaxes(v[..., n0:n0 + tile, :], -1, -2))
        ds = p * (dp - delta)
        dk[..., n0:n0 + tile, :] = np.matmul(np.swapaxes(ds, -1, -2), q) * sc
        dq += np.matmul(ds, k[..., n0:n0 + tile, :]) * sc
    return _finish(q, k, v, dq, dk, dv)


# --- kernel: bwd_query_chunks ---
def bwd_query_chunks(q, k, v, d_out, mask=None, scale=None, chunk=20):
    """Chunked over queries: each chunk recomputes its rows' P exactly, dK/dV summed over the chunks."""
    dt = q.dtype
    sc = _scale(q, scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    dq = np.zeros(lead + q.shape[-2:], dtype=dt)
    dk = np.zeros(lead + k.shape[-2:], dtype=dt)
    dv = np.zeros(lead + v.shape[-2:], dtype=dt)
    full_mask = None
    if mask is not None:
        full_mask = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (q.shape[-2], k.shape[-2]))
    for r0 in range(0, q.shape[-2], chunk):
        qc = q[..., r0:r0 + chunk, :]
        mc = None if full_mask is None else full_mask[..., r0:r0 + chunk, :]
        s, _ = _masked_scores(qc, k, mc, sc)
        p = _probs(s)
        doc = d_out[..., r0:r0 + chunk, :]
        o = np.matmul(p, v)
        dv += np.matmul(np.swapaxes(p, -1, -2), doc)
        ds = p * (np.matmul(doc, np.swapaxes(v, -1, -2)) - np.sum(doc * o, axis=-1, keepdims=True))
        dq[..., r0:r0 + chunk, :] = np.matmul(ds, k) * sc
        dk += np.matmul(np.swapaxes(ds, -1, -2), qc) * sc
    return _finish(q, k, v, dq, dk, dv)


def _entry(name, fn, bug=None, parameter=None, source=None, kind=None, dtype="float64"):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/%s/%s/%s" % (repo, kind, num)
    return {"name": name, "api": "numpy-backward", "fn": fn, "correct": bug is None, "bug": bug,
            "parameter": parameter, "source": source, "report": report, "dtype": dtype,
            "features": ["mask", "gqa", "dv-ne-d"]}


CATALOG = [
    _entry("bwd-darknet-softmax-passthrough", "bwd_layer_passthrough", "softmax-backward-identity",
           "softmax backward passes dP through unchanged (dS = dP) instead of P * (dP - rowsum(dP * P))",
           "pjreddie/darknet#96", "pull"),
    _entry("bwd-brevitas-nan-dead-rows", "bwd_eager_nan_rows", "dead-row-nan-probabilities-in-backward",
           "fully masked rows give NaN probabilities; output zeroed after the fact but backward reuses NaN P",
           "Xilinx/brevitas#1591", "pull"),
    _entry("bwd-aidotnet-kv-head-overwrite", "bwd_gqa_fallback", "broadcast-kv-grad-overwritten",
           "dK/dV of the broadcast kv head assigned per query head (last wins) instead of summed",
           "ooples/AiDotNet.Tensors#633", "pull"),
    _entry("bwd-psyneulink-jacobian-matrix-sum", "bwd_matrix_jacobian", "softmax-grad-sum-over-matrix",
           "softmax Jacobian-vector sum taken over the whole (Sq, Sk) matrix instead of per row",
           "PrincetonUniversity/PsyNeuLink#2539", "pull"),
    _entry("bwd-mha-recompute-drops-mask", "bwd_recompute_unmasked", "backward-recompute-ignores-mask",
           "attention weights recomputed in backward without the mask", "pytorch/pytorch#27461", "issues"),
    _entry("bwd-fa2-paper-dk-transpose", "bwd_paper_chain_rule", "dk-missing-transpose",
           "dK computed as dS Q instead of dS^T Q", "Dao-AILab/flash-attention#373", "issues"),
    _entry("bwd-splash-delta-bf16-product", "bwd_lowp_delta", "delta-product-rounded-before-sum",
           "dO * O rounded to bfloat16 before the row sum for Delta", "jax-ml/jax#40128", "issues",
           dtype="float32"),
    _entry("bwd-tutorial-query-loop-nctx", "bwd_tutorial_blocks", "query-loop-bound-from-key-length",
           "query-block loop bound computed from the key length N_CTX (rows beyond it skipped when Sq > Sk)",
           "triton-lang/triton#2059", "issues"),
    _entry("bwd-dense", "bwd_dense"),
    _entry("bwd-flash2-key-tiles", "bwd_key_tiles"),
    _entry("bwd-query-chunks", "bwd_query_chunks"),
]
