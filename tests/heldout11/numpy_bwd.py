"""Held-out attention backward kernels, API `numpy-backward`.

fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv): the gradients of the `refimpl` forward
(softmax(scale * q k^T masked by the bool keep-mask) v, rows with no kept key are zeros) for loss = sum(d_out * O).
k/v may have a head axis of size 1 broadcast against q's heads; dk, dv come back with k/v's shape (summed over the
broadcast axis). Rows with no kept key have zero gradients. Results in the input dtype.
"""
import numpy as np


def _sum_to_shape(x, shape):
    """Sum a broadcast gradient back to `shape` (leading axes and size-1 axes)."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


# --- kernel: bwd_plain_softmax ---
def bwd_plain_softmax(q, k, v, d_out, mask=None, scale=None):
    """Eager backward: recompute softmax(QK^T) with the mask as -inf, then the textbook gradients."""
    dtype = q.dtype
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))  # BUG: plain softmax, an all -inf row gives NaN (no safe softmax)
    p = e / e.sum(axis=-1, keepdims=True)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq.astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype), _sum_to_shape(dv, v.shape).astype(dtype)


# --- kernel: bwd_exp2_recompute_lse ---
def bwd_exp2_recompute_lse(q, k, v, d_out, mask=None, scale=None):
    """Ring-style backward: the merged forward LSE (natural log) is handed to an exp2 recompute of P."""
    LOG2E = 1.4426950408889634
    dtype = q.dtype
    sm_scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = np.matmul(q.astype(np.float64), np.swapaxes(k, -1, -2).astype(np.float64)) * sm_scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    m = np.where(live, m, 0.0)
    lse = np.where(live, m + np.log(np.where(live, np.exp(s - m).sum(axis=-1, keepdims=True), 1.0)), np.inf)
    o = np.matmul(np.exp(s - lse), v)
    lse_bwd = lse  # BUG: the exp2 recompute needs the LSE in log2 units (lse / ln 2 = lse * LOG2E)
    p = np.exp2(s * LOG2E - lse_bwd)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * sm_scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * sm_scale
    return dq.astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype), _sum_to_shape(dv, v.shape).astype(dtype)


# --- kernel: bwd_dp_value_extent ---
def bwd_dp_value_extent(q, k, v, d_out, mask=None, scale=None):
    """Fused backward with separate K (qk head dim) and V extents; dP = dO V^T."""
    dtype = q.dtype
    K = q.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    o = np.matmul(p, v)
    delta = (o * d_out).sum(axis=-1, keepdims=True)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out[..., :K], np.swapaxes(v[..., :K], -1, -2))  # BUG: V-side extent taken from K, not Dv
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq.astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype), _sum_to_shape(dv, v.shape).astype(dtype)


# --- kernel: bwd_dot_input_precision ---
def _round_tf32(x):
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    return bits.view(np.float32).astype(np.float64)


def _dot(a, b, input_precision):
    if input_precision == "tf32":
        a, b = _round_tf32(a), _round_tf32(b)
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


def bwd_dot_input_precision(q, k, v, d_out, mask=None, scale=None):
    """Tiled-kernel port: every dot goes through one helper honouring the kernel's dot input precision."""
    INPUT_PRECISION = "tf32"  # BUG: fp32 dots rounded to TF32 (10-bit mantissa); should be "ieee"
    dtype = q.dtype
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = _dot(q, np.swapaxes(k, -1, -2), INPUT_PRECISION) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, z, out=np.zeros_like(e), where=z > 0)
    o = _dot(p, v, INPUT_PRECISION)
    delta = (o * d_out).sum(axis=-1, keepdims=True)
    dv = _dot(np.swapaxes(p, -1, -2), d_out, INPUT_PRECISION)
    dp = _dot(d_out, np.swapaxes(v, -1, -2), INPUT_PRECISION)
    ds = p * (dp - delta)
    dq = _dot(ds, k, INPUT_PRECISION) * scale
    dk = _dot(np.swapaxes(ds, -1, -2), q, INPUT_PRECISION) * scale
    return dq.astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype), _sum_to_shape(dv, v.shape).astype(dtype)


# --- kernel: bwd_templated_layouts ---
def bwd_templated_layouts(q, k, v, d_out, mask=None, scale=None):
    """Templated backward: saved tensors live in the op layout (B, S, H, D) and are turned back to (B, H, S, D)."""
    dtype = q.dtype
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if q.ndim == 4:
        saved_q, saved_do = np.swapaxes(q, 1, 2), np.swapaxes(d_out, 1, 2)
        saved_k, saved_v = k, v
        qh, doh = np.swapaxes(saved_q, 1, 2), np.swapaxes(saved_do, 1, 2)
        kh, vh = np.swapaxes(saved_k, 1, 2), np.swapaxes(saved_v, 1, 2)  # BUG: K/V were never in the op layout
    else:
        qh, kh, vh, doh = q, k, v, d_out
    s = np.matmul(qh, np.swapaxes(kh, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(s - mx)
    den = e.sum(axis=-1, keepdims=True)
    p = np.divide(e, den, out=np.zeros_like(e), where=den > 0)
    dv = np.matmul(np.swapaxes(p, -1, -2), doh)
    dp = np.matmul(doh, np.swapaxes(vh, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, kh) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), qh) * scale
    return dq.astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype), _sum_to_shape(dv, v.shape).astype(dtype)


# --- kernel: bwd_lse_from_forward_stats ---
def bwd_lse_from_forward_stats(q, k, v, d_out, mask=None, scale=None):
    """Backward that recomputes P = exp(S - LSE) from the per-row statistics a blockwise forward saved."""
    dtype = q.dtype
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    row_max = s.max(axis=-1, keepdims=True)
    live = np.isfinite(row_max)
    row_max = np.where(live, row_max, 0.0)
    row_sum = np.exp(s - row_max).sum(axis=-1, keepdims=True)
    lse = np.where(live, np.log(np.where(live, row_sum, 1.0)), np.inf)  # BUG: log-sum relative to the max; + row_max
    p = np.exp(s - lse)
    o = np.matmul(np.exp(s - row_max) / np.where(live, row_sum, 1.0), v)
    delta = (d_out * o).sum(axis=-1, keepdims=True)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - delta)
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq.astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype), _sum_to_shape(dv, v.shape).astype(dtype)


# --- kernel: bwd_dense_safe_softmax ---
def bwd_dense_safe_softmax(q, k, v, d_out, mask=None, scale=None):
    """Dense float64 backward with a guarded softmax and Delta = rowsum(P * dP)."""
    dtype = q.dtype
    q64, k64, v64, do64 = (x.astype(np.float64) for x in (q, k, v, d_out))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q64, np.swapaxes(k64, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    live = np.isfinite(m)
    e = np.where(live, np.exp(s - np.where(live, m, 0.0)), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    p = e / np.where(z > 0, z, 1.0)
    dv = np.matmul(np.swapaxes(p, -1, -2), do64)
    dp = np.matmul(do64, np.swapaxes(v64, -1, -2))
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    dq = np.matmul(ds, k64) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q64) * scale
    return dq.astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype), _sum_to_shape(dv, v.shape).astype(dtype)


# --- kernel: bwd_key_tiles_three_pass ---
def bwd_key_tiles_three_pass(q, k, v, d_out, mask=None, scale=None):
    """Key tiles of 40: pass 1 the LSE (online), pass 2 O and Delta = rowsum(dO * O), pass 3 the gradients."""
    TILE = 40
    dtype = q.dtype
    sq, d = q.shape[-2:]
    sk, dv_dim = v.shape[-2:]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scale = d ** -0.5 if scale is None else scale
    q64 = np.broadcast_to(q, lead + (sq, d)).astype(np.float64)
    k64 = np.broadcast_to(k, lead + (sk, d)).astype(np.float64)
    v64 = np.broadcast_to(v, lead + (sk, dv_dim)).astype(np.float64)
    do64 = np.broadcast_to(d_out, lead + (sq, dv_dim)).astype(np.float64)
    keep = np.ones(lead + (sq, sk), dtype=bool) if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    tiles = [(t, min(t + TILE, sk)) for t in range(0, sk, TILE)]

    def scores(t0, t1):
        s = np.matmul(q64, np.swapaxes(k64[..., t0:t1, :], -1, -2)) * scale
        return np.where(keep[..., t0:t1], s, -np.inf)

    m_i = np.full(lead + (sq, 1), -np.inf)
    l_i = np.zeros(lead + (sq, 1))
    for t0, t1 in tiles:
        s = scores(t0, t1)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_use = np.where(np.isfinite(m_new), m_new, 0.0)
        l_i = l_i * np.where(np.isfinite(m_i), np.exp(m_i - m_use), 0.0) + np.exp(s - m_use).sum(axis=-1, keepdims=True)
        m_i = m_new
    live = l_i > 0
    lse = np.where(live, np.where(np.isfinite(m_i), m_i, 0.0) + np.log(np.where(live, l_i, 1.0)), np.inf)
    o = np.zeros(lead + (sq, dv_dim))
    for t0, t1 in tiles:
        o += np.matmul(np.exp(scores(t0, t1) - lse), v64[..., t0:t1, :])
    delta = (do64 * o).sum(axis=-1, keepdims=True)
    dq = np.zeros(lead + (sq, d))
    dk = np.zeros(lead + (sk, d))
    dv = np.zeros(lead + (sk, dv_dim))
    for t0, t1 in tiles:
        p = np.exp(scores(t0, t1) - lse)
        dv[..., t0:t1, :] = np.matmul(np.swapaxes(p, -1, -2), do64)
        ds = p * (np.matmul(do64, np.swapaxes(v64[..., t0:t1, :], -1, -2)) - delta)
        dq += np.matmul(ds, k64[..., t0:t1, :]) * scale
        dk[..., t0:t1, :] = np.matmul(np.swapaxes(ds, -1, -2), q64) * scale
    return (_sum_to_shape(dq, q.shape).astype(dtype), _sum_to_shape(dk, k.shape).astype(dtype),
            _sum_to_shape(dv, v.shape).astype(dtype))


CATALOG = [
    {
        "name": "bwd-pytorch-mha-masked-row-nan",
        "api": "numpy-backward",
        "fn": "bwd_plain_softmax",
        "correct": False,
        "bug": "fully-masked-row-nan-gradients",
        "parameter": "the recomputed softmax is a plain one: a row with no kept key gives exp(-inf - -inf) = NaN, "
                     "which spreads into dq for that row and into dk and dv through the sums over rows. "
                     "Triggers: a mask with a row that has no kept key",
        "source": "pytorch/pytorch#196170",
        "report": "https://github.com/pytorch/pytorch/pull/196170",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "bwd-attngym-lse-natural-in-exp2",
        "api": "numpy-backward",
        "fn": "bwd_exp2_recompute_lse",
        "correct": False,
        "bug": "lse-units-mismatch-backward",
        "parameter": "P is recomputed as exp2(s * log2(e) - lse) with the forward's natural-log LSE instead of "
                     "lse * log2(e): every weight is off by the row factor 2^(lse * (log2(e) - 1)). "
                     "Triggers: always (rows with a kept key and lse != 0)",
        "source": "meta-pytorch/attention-gym#200",
        "report": "https://github.com/meta-pytorch/attention-gym/pull/200",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "bwd-fla-dp-value-extent",
        "api": "numpy-backward",
        "fn": "bwd_dp_value_extent",
        "correct": False,
        "bug": "dp-uses-qk-head-dim-for-values",
        "parameter": "dP = dO V^T is computed over the first K (= D, the qk head dim) value channels only, while "
                     "Delta uses all Dv: with Dv > D the channels past D are dropped from dP, so dS, dq and dk are "
                     "wrong (dv is right). Triggers: Dv > D",
        "source": "fla-org/flash-linear-attention#632",
        "report": "https://github.com/fla-org/flash-linear-attention/issues/632",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "bwd-tutorial-tf32-dots",
        "api": "numpy-backward",
        "fn": "bwd_dot_input_precision",
        "correct": False,
        "bug": "tf32-dot-inputs",
        "parameter": "every dot of the backward (S recompute, O, dV, dP, dQ, dK) rounds its float32 operands to TF32 "
                     "(10-bit mantissa) as Triton's default dot precision does: ~1e-3 relative error in the "
                     "gradients. Triggers: always at float32 resolution",
        "source": "evintunador/triton_docs_tutorials#6",
        "report": "https://github.com/evintunador/triton_docs_tutorials/issues/6",
        "dtype": "float32",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "bwd-diffusers-kv-double-transpose",
        "api": "numpy-backward",
        "fn": "bwd_templated_layouts",
        "correct": False,
        "bug": "kv-transposed-twice",
        "parameter": "for 4-D inputs the backward turns its saved tensors from the op layout (B, S, H, D) back to "
                     "(B, H, S, D), but K/V were saved without the first transpose: K/V end up (B, S, H, D) "
                     "against Q in (B, H, S, D), wrong shapes (an error) or, with one head, garbage. "
                     "Triggers: 4-D input",
        "source": "huggingface/diffusers#14341",
        "report": "https://github.com/huggingface/diffusers/pull/14341",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "bwd-fa-lse-without-row-max",
        "api": "numpy-backward",
        "fn": "bwd_lse_from_forward_stats",
        "correct": False,
        "bug": "lse-missing-row-max",
        "parameter": "the LSE used to recompute P is log(sum(exp(s - m))) without adding the row max m back, so "
                     "P = exp(s - lse) is exp(m) times too large in dv, dS, dq and dk. "
                     "Triggers: always (rows whose max scaled score is not 0)",
        "source": "Dao-AILab/flash-attention#404",
        "report": "https://github.com/Dao-AILab/flash-attention/issues/404",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "bwd-dense-safe-softmax",
        "api": "numpy-backward",
        "fn": "bwd_dense_safe_softmax",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "bwd-key-tiles-three-pass",
        "api": "numpy-backward",
        "fn": "bwd_key_tiles_three_pass",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
]
