"""Held-out attention backward kernels, API `numpy-backward`.

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): the gradients of the contract-1 forward
(softmax(q k^T * scale, keep-mask) v, dead rows zero) for loss = sum(d_out * O). q (..., Sq, D),
k (..., Sk, D), v (..., Sk, Dv); k/v may have a head axis of size 1 broadcast against q's heads (dk, dv come
back with k/v's shape, summed over the broadcast axis); `mask` is a bool keep-mask broadcastable to
(..., Sq, Sk); rows with no kept key have zero output and zero gradients; results in the input dtype.

Each broken kernel carries exactly one BUG comment, on the line holding its mistake; see CATALOG.
"""
import math

import numpy as np

LOG2E = 1.4426950408889634


def _setup(q, k, v, mask, scale):
    """Common bookkeeping: leading shape, scale, broadcast keep-mask."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    sq, sk = q.shape[-2], k.shape[-2]
    if mask is None:
        keep = np.ones(lead + (sq, sk), dtype=bool)
    else:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))
    return lead, sc, keep


def _reduce_to(g, shape):
    """Sum a broadcast gradient back to `shape` (leading axes and size-1 axes)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for ax, n in enumerate(shape):
        if n == 1 and g.shape[ax] != 1:
            g = g.sum(axis=ax, keepdims=True)
    return g


def _t(x):
    return np.swapaxes(x, -1, -2)


def _bf16(x):
    """Round to bfloat16 (round-to-nearest-even), returned as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


# --- kernel: bwd_softmax_no_grad ---
# Attention built from fused ops: the fused last-dim softmax op was registered without a backward, so
# autograd silently stops at it; dV still flows through the P @ V matmul.

def bwd_softmax_no_grad(q, k, v, d_out, mask=None, scale=None):
    lead, sc, keep = _setup(q, k, v, mask, scale)
    s = np.where(keep, (q @ _t(k)) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.exp(s - np.where(alive, m, 0.0))
    p = np.where(alive, p / np.where(alive, p.sum(axis=-1, keepdims=True), 1.0), 0.0)
    dv = _t(p) @ d_out
    dp = d_out @ _t(v)
    ds = np.zeros_like(dp)  # BUG: no backward through the softmax; should be p * (dp - rowsum(dp * p))
    dq = (ds @ k) * sc
    dk = (_t(ds) @ q) * sc
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_split_block_pad ---
# Block-sparse style backward: keys padded to whole blocks of 32; each block's validity mask is built from
# its block length, and the softmax statistics are recomputed block by block before the gradient pass.

def bwd_split_block_pad(q, k, v, d_out, mask=None, scale=None):
    BLOCK_N = 32
    lead, sc, keep = _setup(q, k, v, mask, scale)
    dtype = q.dtype
    sq, sk, dv_dim = q.shape[-2], k.shape[-2], v.shape[-1]
    pad = (-sk) % BLOCK_N
    kp = np.pad(k, [(0, 0)] * (k.ndim - 2) + [(0, pad), (0, 0)])
    vp = np.pad(v, [(0, 0)] * (v.ndim - 2) + [(0, pad), (0, 0)])
    keep_p = np.pad(keep, [(0, 0)] * len(lead) + [(0, 0), (0, pad)], constant_values=True)

    def block_keep(n0):
        blk_len = BLOCK_N  # BUG: full block length used for the partial last block; should be min(BLOCK_N, sk - n0)
        valid = np.arange(n0, n0 + BLOCK_N) < n0 + blk_len
        return keep_p[..., n0:n0 + BLOCK_N] & valid

    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv_dim), dtype=dtype)
    for n0 in range(0, sk + pad, BLOCK_N):
        s = np.where(block_keep(n0), (q @ _t(kp[..., n0:n0 + BLOCK_N, :])) * sc, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.exp(m_i - m_safe)
        p = np.exp(s - m_safe)
        l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + p @ vp[..., n0:n0 + BLOCK_N, :]
        m_i = m_new
    alive = l_i > 0
    lse = np.where(alive, m_i + np.log(np.where(alive, l_i, 1.0)), 0.0)
    o = np.where(alive, acc / np.where(alive, l_i, 1.0), 0.0)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:], dtype=dtype)
    dk = np.zeros(lead + (sk + pad, q.shape[-1]), dtype=dtype)
    dv = np.zeros(lead + (sk + pad, dv_dim), dtype=dtype)
    for n0 in range(0, sk + pad, BLOCK_N):
        s = np.where(block_keep(n0), (q @ _t(kp[..., n0:n0 + BLOCK_N, :])) * sc, -np.inf)
        p = np.where(alive, np.exp(s - lse), 0.0)
        dv[..., n0:n0 + BLOCK_N, :] = _t(p) @ d_out
        dp = d_out @ _t(vp[..., n0:n0 + BLOCK_N, :])
        ds = p * (dp - delta)
        dq += (ds @ kp[..., n0:n0 + BLOCK_N, :]) * sc
        dk[..., n0:n0 + BLOCK_N, :] = (_t(ds) @ q) * sc
    return (_reduce_to(dq, q.shape).astype(dtype), _reduce_to(dk[..., :sk, :], k.shape).astype(dtype),
            _reduce_to(dv[..., :sk, :], v.shape).astype(dtype))


# --- kernel: bwd_lse_log2_units ---
# exp2 kernel pair: the forward saves the log-sum-exp of log2(e)-scaled scores (base-2 units); the backward
# rebuilds the probabilities from it.

def bwd_lse_log2_units(q, k, v, d_out, mask=None, scale=None):
    lead, sc, keep = _setup(q, k, v, mask, scale)
    s = np.where(keep, (q @ _t(k)) * sc, -np.inf)
    s2 = s * LOG2E
    m2 = s2.max(axis=-1, keepdims=True)
    alive = np.isfinite(m2)
    m2s = np.where(alive, m2, 0.0)
    l2 = np.exp2(s2 - m2s).sum(axis=-1, keepdims=True)
    lse2 = np.where(alive, m2s + np.log2(np.where(alive, l2, 1.0)), 0.0)
    o = np.where(alive, np.exp2(s2 - lse2) @ v, 0.0)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    p = np.exp(s - lse2)  # BUG: base-2 lse used with a natural exp; should be np.exp2(s2 - lse2)
    dv = _t(p) @ d_out
    ds = p * (d_out @ _t(v) - delta)
    dq = (ds @ k) * sc
    dk = (_t(ds) @ q) * sc
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_causal_start_m ---
# Triton-tutorial style backward: dK/dV per key block of 32, walking query blocks of 16 from start_m; dQ per
# query block over every key block.

def bwd_causal_start_m(q, k, v, d_out, mask=None, scale=None):
    BLOCK_M, BLOCK_N = 16, 32
    lead, sc, keep = _setup(q, k, v, mask, scale)
    dtype = q.dtype
    sq, sk = q.shape[-2], k.shape[-2]
    s = np.where(keep, (q @ _t(k)) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    ms = np.where(alive, m, 0.0)
    lse = ms + np.log(np.where(alive, np.exp(s - ms).sum(axis=-1, keepdims=True), 1.0))
    o = np.where(alive, np.exp(s - lse) @ v, 0.0)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dk = np.zeros(lead + k.shape[-2:], dtype=dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=dtype)
    for start_n in range(0, sk, BLOCK_N):
        vb = v[..., start_n:start_n + BLOCK_N, :]
        start_m = (start_n // BLOCK_M) * BLOCK_M  # BUG: causal-only shortcut skipping earlier query blocks; should be 0
        for start_m_blk in range(start_m, sq, BLOCK_M):
            rows = slice(start_m_blk, start_m_blk + BLOCK_M)
            sb = s[..., rows, start_n:start_n + BLOCK_N]
            p = np.where(alive[..., rows, :], np.exp(sb - lse[..., rows, :]), 0.0)
            dob = d_out[..., rows, :]
            dv[..., start_n:start_n + BLOCK_N, :] += _t(p) @ dob
            ds = p * (dob @ _t(vb) - delta[..., rows, :])
            dk[..., start_n:start_n + BLOCK_N, :] += (_t(ds) @ q[..., rows, :]) * sc
    dq = np.zeros(lead + q.shape[-2:], dtype=dtype)
    for start_m_blk in range(0, sq, BLOCK_M):
        rows = slice(start_m_blk, start_m_blk + BLOCK_M)
        for start_n in range(0, sk, BLOCK_N):
            cols = slice(start_n, start_n + BLOCK_N)
            p = np.where(alive[..., rows, :], np.exp(s[..., rows, cols] - lse[..., rows, :]), 0.0)
            ds = p * (d_out[..., rows, :] @ _t(v[..., cols, :]) - delta[..., rows, :])
            dq[..., rows, :] += (ds @ k[..., cols, :]) * sc
    return (_reduce_to(dq, q.shape).astype(dtype), _reduce_to(dk, k.shape).astype(dtype),
            _reduce_to(dv, v.shape).astype(dtype))


# --- kernel: bwd_cached_dq_buffer ---
# JIT-cached backward: dQ is accumulated with atomic adds (one add per key block of 32) into an fp32/fp64
# accumulation buffer that the cached kernel owns, then cast to the output dtype.

_DQ_BUFFERS = {}


def bwd_cached_dq_buffer(q, k, v, d_out, mask=None, scale=None):
    BLOCK_N = 32
    lead, sc, keep = _setup(q, k, v, mask, scale)
    acc_dtype = np.float64 if q.dtype == np.float64 else np.float32
    sk = k.shape[-2]
    s = np.where(keep, (q @ _t(k)) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    ms = np.where(alive, m, 0.0)
    lse = ms + np.log(np.where(alive, np.exp(s - ms).sum(axis=-1, keepdims=True), 1.0))
    o = np.where(alive, np.exp(s - lse) @ v, 0.0)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dq = _DQ_BUFFERS.setdefault((q.shape, acc_dtype), np.zeros(q.shape, dtype=acc_dtype))  # BUG: reused, never zeroed
    dk = np.zeros(lead + k.shape[-2:], dtype=acc_dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=acc_dtype)
    for n0 in range(0, sk, BLOCK_N):
        cols = slice(n0, n0 + BLOCK_N)
        p = np.where(alive, np.exp(s[..., cols] - lse), 0.0)
        dv[..., cols, :] = _t(p) @ d_out
        ds = p * (d_out @ _t(v[..., cols, :]) - delta)
        dk[..., cols, :] = (_t(ds) @ q) * sc
        dq += (ds @ k[..., cols, :]) * sc
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_delta_half_accum ---
# Softmax-backward preprocess with a low-precision accumulator: Delta = rowsum(dO * O) is accumulated over
# the value channels in a half-precision register.

def bwd_delta_half_accum(q, k, v, d_out, mask=None, scale=None):
    lead, sc, keep = _setup(q, k, v, mask, scale)
    s = np.where(keep, (q @ _t(k)) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.exp(s - np.where(alive, m, 0.0))
    p = np.where(alive, p / np.where(alive, p.sum(axis=-1, keepdims=True), 1.0), 0.0)
    o = p @ v
    delta = np.zeros(o.shape[:-1], dtype=np.float16)  # BUG: fp16 accumulator for rowsum(dO * O)
    for d in range(o.shape[-1]):
        delta += d_out[..., d] * o[..., d]
    delta = delta.astype(q.dtype)[..., None]
    dv = _t(p) @ d_out
    ds = p * (d_out @ _t(v) - delta)
    dq = (ds @ k) * sc
    dk = (_t(ds) @ q) * sc
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_prescaled_k_bf16 ---
# exp2 backward with the softmax scale and log2(e) folded into K once (the kernel's K operand is bf16);
# probabilities rebuilt against the base-2 log-sum-exp saved by the full-precision forward.

def bwd_prescaled_k_bf16(q, k, v, d_out, mask=None, scale=None):
    lead, sc, keep = _setup(q, k, v, mask, scale)
    s2 = np.where(keep, (q @ _t(k)) * (sc * LOG2E), -np.inf)
    m2 = s2.max(axis=-1, keepdims=True)
    alive = np.isfinite(m2)
    m2s = np.where(alive, m2, 0.0)
    lse2 = np.where(alive, m2s + np.log2(np.where(alive, np.exp2(s2 - m2s).sum(axis=-1, keepdims=True), 1.0)), 0.0)
    o = np.where(alive, np.exp2(s2 - lse2) @ v, 0.0)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    k_scaled = _bf16(k * (sc * LOG2E)).astype(q.dtype)  # BUG: pre-scaled K rounded to bf16 before the recompute
    qk2 = np.where(keep, q @ _t(k_scaled), -np.inf)
    p = np.where(alive, np.exp2(qk2 - lse2), 0.0)
    dv = _t(p) @ d_out
    ds = p * (d_out @ _t(v) - delta)
    dq = (ds @ k) * sc
    dk = (_t(ds) @ q) * sc
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_value_tile_width ---
# Kernel-style backward with explicit tile widths: BK for the query/key head dim, BV for the value head dim.

def bwd_value_tile_width(q, k, v, d_out, mask=None, scale=None):
    lead, sc, keep = _setup(q, k, v, mask, scale)
    BK, BV = q.shape[-1], v.shape[-1]
    s = np.where(keep, (q[..., :BK] @ _t(k[..., :BK])) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.exp(s - np.where(alive, m, 0.0))
    p = np.where(alive, p / np.where(alive, p.sum(axis=-1, keepdims=True), 1.0), 0.0)
    o = p @ v[..., :BV]
    delta = (d_out[..., :BV] * o).sum(axis=-1, keepdims=True)
    dv = _t(p) @ d_out[..., :BV]
    dp = d_out[..., :BK] @ _t(v[..., :BK])  # BUG: value-side tile width taken from BK (key head dim), not BV
    ds = p * (dp - delta)
    dq = (ds @ k[..., :BK]) * sc
    dk = (_t(ds) @ q[..., :BK]) * sc
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_dense_f64 ---
# Correct: dense backward in float64 (P, dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P))).

def bwd_dense_f64(q, k, v, d_out, mask=None, scale=None):
    lead, sc, keep = _setup(q, k, v, mask, scale)
    q64, k64, v64, do64 = (x.astype(np.float64) for x in (q, k, v, d_out))
    s = np.where(keep, (q64 @ _t(k64)) * sc, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    p = np.exp(s - np.where(alive, m, 0.0))
    p = np.where(alive, p / np.where(alive, p.sum(axis=-1, keepdims=True), 1.0), 0.0)
    dv = _t(p) @ do64
    dp = do64 @ _t(v64)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    dq = (ds @ k64) * sc
    dk = (_t(ds) @ q64) * sc
    return (dq.astype(q.dtype), _reduce_to(dk, k.shape).astype(k.dtype), _reduce_to(dv, v.shape).astype(v.dtype))


# --- kernel: bwd_key_tiles_lse ---
# Correct: FlashAttention-2 style -- a tiled forward saves lse and O, Delta = rowsum(dO * O), then every key
# tile of 24 rebuilds P = exp(S - lse) and produces its dK/dV slice while dQ accumulates across tiles.

def bwd_key_tiles_lse(q, k, v, d_out, mask=None, scale=None):
    BLOCK_N = 24
    lead, sc, keep = _setup(q, k, v, mask, scale)
    dtype = q.dtype
    sq, sk = q.shape[-2], k.shape[-2]
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, v.shape[-1]), dtype=dtype)
    for n0 in range(0, sk, BLOCK_N):
        cols = slice(n0, n0 + BLOCK_N)
        s = np.where(keep[..., cols], (q @ _t(k[..., cols, :])) * sc, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.exp(m_i - m_safe)
        p = np.exp(s - m_safe)
        l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + p @ v[..., cols, :]
        m_i = m_new
    alive = l_i > 0
    lse = np.where(alive, m_i + np.log(np.where(alive, l_i, 1.0)), 0.0)
    o = np.where(alive, acc / np.where(alive, l_i, 1.0), 0.0)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + q.shape[-2:], dtype=dtype)
    dk = np.zeros(lead + k.shape[-2:], dtype=dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=dtype)
    for n0 in range(0, sk, BLOCK_N):
        cols = slice(n0, n0 + BLOCK_N)
        s = np.where(keep[..., cols], (q @ _t(k[..., cols, :])) * sc, -np.inf)
        p = np.where(alive, np.exp(s - lse), 0.0)
        dv[..., cols, :] = _t(p) @ d_out
        ds = p * (d_out @ _t(v[..., cols, :]) - delta)
        dk[..., cols, :] = (_t(ds) @ q) * sc
        dq += (ds @ k[..., cols, :]) * sc
    return (_reduce_to(dq, q.shape).astype(dtype), _reduce_to(dk, k.shape).astype(dtype),
            _reduce_to(dv, v.shape).astype(dtype))


# --- kernel: bwd_query_chunks ---
# Correct: query rows in chunks of 5; each chunk recomputes its probabilities over all keys, takes Delta as
# rowsum(P * dP) and adds its share of dK/dV.

def bwd_query_chunks(q, k, v, d_out, mask=None, scale=None):
    CHUNK = 5
    lead, sc, keep = _setup(q, k, v, mask, scale)
    dtype = q.dtype
    sq = q.shape[-2]
    dq = np.zeros(lead + q.shape[-2:], dtype=dtype)
    dk = np.zeros(lead + k.shape[-2:], dtype=dtype)
    dv = np.zeros(lead + v.shape[-2:], dtype=dtype)
    for r0 in range(0, sq, CHUNK):
        rows = slice(r0, r0 + CHUNK)
        qc = np.broadcast_to(q, lead + q.shape[-2:])[..., rows, :]
        doc = np.broadcast_to(d_out, lead + d_out.shape[-2:])[..., rows, :]
        s = np.where(keep[..., rows, :], (qc @ _t(k)) * sc, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        alive = np.isfinite(m)
        p = np.exp(s - np.where(alive, m, 0.0))
        p = np.where(alive, p / np.where(alive, p.sum(axis=-1, keepdims=True), 1.0), 0.0)
        dp = doc @ _t(v)
        ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
        dq[..., rows, :] = (ds @ k) * sc
        dk += (_t(ds) @ qc) * sc
        dv += _t(p) @ doc
    return (_reduce_to(dq, q.shape).astype(dtype), _reduce_to(dk, k.shape).astype(dtype),
            _reduce_to(dv, v.shape).astype(dtype))


API = "numpy-backward"
FEATURES = ["mask", "dv-ne-d"]


def _entry(name, fn, bug=None, parameter=None, source=None, kind=None, dtype="float64"):
    report = None
    if source is not None:
        owner_repo, number = source.split("#")
        report = "https://github.com/%s/%s/%s" % (owner_repo, kind, number)
    return {
        "name": name, "api": API, "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
        "source": source, "report": report, "dtype": dtype, "features": list(FEATURES),
    }


CATALOG = [
    _entry("bwd-candle-softmax-no-backward", "bwd_softmax_no_grad", "softmax-gradient-dropped",
           "the softmax contributes no gradient (dS = 0): dQ and dK come back zero, dV is right. "
           "Triggers: always (any row with a kept key)",
           "huggingface/candle#3724", "pull"),
    _entry("bwd-fastvideo-block-len-pad", "bwd_split_block_pad", "padded-keys-valid-in-backward",
           "validity mask of the last key block built from the full block length 32, so zero-padded keys count "
           "in the recomputed softmax statistics (and P) of the backward. Triggers: Sk not a multiple of 32",
           "hao-ai-lab/FastVideo#925", "pull"),
    _entry("bwd-flashmla-lse-base2-as-natural", "bwd_lse_log2_units", "lse-base-mismatch-in-recompute",
           "P rebuilt as exp(S - lse2) with a base-2 log-sum-exp (log2 units) instead of exp2(S * log2(e) - "
           "lse2). Triggers: always",
           "deepseek-ai/FlashMLA#106", "pull"),
    _entry("bwd-flaggems-noncausal-start-m", "bwd_causal_start_m", "dkdv-query-loop-starts-at-diagonal",
           "dK/dV loop over query blocks starts at the key block's diagonal (a causal-only shortcut), dropping "
           "the contributions of earlier queries. Triggers: any mask where a query i attends a key j in a block "
           "starting after i's block (full, padding, bottom-right causal with Sq < Sk); top-left causal is exact",
           "flagos-ai/FlagGems#3607", "pull"),
    _entry("bwd-tilelang-cached-dq-accumulator", "bwd_cached_dq_buffer", "grad-accumulator-not-zeroed",
           "dQ atomic-add buffer cached per (shape, dtype) and reused across calls without zeroing: the n-th call "
           "returns n times dQ. Triggers: a second call with the same q shape and dtype",
           "tile-ai/tilelang#547", "issues"),
    _entry("bwd-miopen-delta-fp16-accumulator", "bwd_delta_half_accum", "delta-accumulated-in-fp16",
           "Delta = rowsum(dO * O) accumulated over the value channels in float16. Triggers: always at float32 "
           "resolution (relative error ~1e-3 in dQ/dK)",
           "ROCm/MIOpen#3427", "pull", dtype="float32"),
    _entry("bwd-fastvideo-bf16-prescaled-k", "bwd_prescaled_k_bf16", "prescaled-operand-rounded-bf16",
           "K pre-multiplied by scale * log2(e) and rounded to bfloat16 before the logit recompute, against the "
           "full-precision saved lse: P off by a factor growing with |logit|. Triggers: always at float32 "
           "resolution (K entries not exactly representable in bf16)",
           "hao-ai-lab/FastVideo#1730", "pull", dtype="float32"),
    _entry("bwd-fla-value-tile-uses-bk", "bwd_value_tile_width", "value-dim-tile-uses-key-dim",
           "dP = dO V^T computed over the first BK (= D) value channels only. Triggers: Dv > D",
           "fla-org/flash-linear-attention#633", "pull"),
    _entry("bwd-dense-f64", "bwd_dense_f64"),
    _entry("bwd-key-tiles-lse", "bwd_key_tiles_lse"),
    _entry("bwd-query-chunks", "bwd_query_chunks"),
]
