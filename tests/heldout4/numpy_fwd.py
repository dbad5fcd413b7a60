"""Held-out NumPy attention kernels for the `refimpl` API: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask is None or a bool keep-mask (True = attend) broadcastable
to (..., Sq, Sk); scale None means 1/sqrt(D).  A row with no kept key returns zeros.

Each broken kernel carries exactly one realistic mistake adapted from a public report (see CATALOG).
"""
import numpy as np


# ----------------------------------------------------------------------------------------------------------------
# correct kernels
# ----------------------------------------------------------------------------------------------------------------

def tiled_online_softmax(q, k, v, mask=None, scale=None):
    """FlashAttention-2 style forward in NumPy: query tiles x key tiles with a running max / running sum."""
    block_m, block_n = 32, 48
    seqlen_q, head_dim = q.shape[-2], q.shape[-1]
    seqlen_k, head_dim_v = k.shape[-2], v.shape[-1]
    softmax_scale = (1.0 / np.sqrt(head_dim)) if scale is None else scale
    batch_shape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), batch_shape + (seqlen_q, seqlen_k))
    out = np.zeros(batch_shape + (seqlen_q, head_dim_v), dtype=q.dtype)
    for start_m in range(0, seqlen_q, block_m):
        end_m = min(start_m + block_m, seqlen_q)
        q_blk = q[..., start_m:end_m, :]
        m_i = np.full(batch_shape + (end_m - start_m, 1), -np.inf, dtype=q.dtype)
        l_i = np.zeros(batch_shape + (end_m - start_m, 1), dtype=q.dtype)
        acc = np.zeros(batch_shape + (end_m - start_m, head_dim_v), dtype=q.dtype)
        for start_n in range(0, seqlen_k, block_n):
            end_n = min(start_n + block_n, seqlen_k)
            qk = (q_blk @ np.swapaxes(k[..., start_n:end_n, :], -1, -2)) * softmax_scale
            if keep is not None:
                qk = np.where(keep[..., start_m:end_m, start_n:end_n], qk, -np.inf)
            m_new = np.maximum(m_i, qk.max(axis=-1, keepdims=True))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
            alpha = np.exp(m_i - m_safe)
            p = np.exp(qk - m_safe)
            l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + p @ v[..., start_n:end_n, :]
            m_i = m_new
        out[..., start_m:end_m, :] = np.where(l_i > 0, acc / np.where(l_i > 0, l_i, 1.0), 0.0)
    return out


def split_kv_lse_merge(q, k, v, mask=None, scale=None):
    """Flash-decoding style: attend to 3 disjoint key chunks, then merge the partial outputs by their LSE."""
    num_splits = 3
    d = q.shape[-1]
    sm_scale = d ** -0.5 if scale is None else scale
    sk = k.shape[-2]
    bounds = np.linspace(0, sk, num_splits + 1).astype(int)
    keep = None
    if mask is not None:
        full = np.broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], sk)
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), full)
    outs, lses = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        s = np.einsum('...qd,...kd->...qk', q, k[..., lo:hi, :]) * sm_scale
        if keep is not None:
            s = np.where(keep[..., lo:hi], s, -np.inf)
        row_max = s.max(axis=-1, keepdims=True, initial=-np.inf)
        safe_max = np.where(np.isfinite(row_max), row_max, 0.0)
        p = np.exp(s - safe_max)
        denom = p.sum(axis=-1, keepdims=True)
        o = np.einsum('...qk,...kd->...qd', p, v[..., lo:hi, :]) / np.where(denom > 0, denom, 1.0)
        with np.errstate(divide='ignore'):
            lse = np.where(denom > 0, np.log(np.where(denom > 0, denom, 1.0)) + safe_max, -np.inf)
        outs.append(o)
        lses.append(lse)
    lse_all = np.stack(lses)
    lse_max = lse_all.max(axis=0)
    lse_max = np.where(np.isfinite(lse_max), lse_max, 0.0)
    weights = np.exp(lse_all - lse_max)
    total = weights.sum(axis=0)
    merged = sum(w * o for w, o in zip(weights, outs))
    return np.where(total > 0, merged / np.where(total > 0, total, 1.0), 0.0).astype(q.dtype)


# ----------------------------------------------------------------------------------------------------------------
# broken kernels
# ----------------------------------------------------------------------------------------------------------------

def _safe_softmax_rows(scores):
    row_max = scores.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.exp(scores - row_max)
    s = e.sum(axis=-1, keepdims=True)
    return e / np.where(s > 0, s, 1.0)


def llm_scratch_masked_attention(q, k, v, mask=None, scale=None):
    """LLMs-from-scratch style: attn_scores -> masked_fill -> softmax -> context vectors."""
    d_k = k.shape[-1]
    attn_scores = q @ np.swapaxes(k, -2, -1)
    if mask is not None:
        # BUG: treats True as "masked out" (nn.MultiheadAttention convention); the keep-mask says True = attend
        attn_scores = np.where(mask, -np.inf, attn_scores)
    factor = (1.0 / np.sqrt(d_k)) if scale is None else scale
    attn_weights = _safe_softmax_rows(attn_scores * factor)
    return (attn_weights @ v).astype(q.dtype)


def timm_eva_attention(q, k, v, mask=None, scale=None):
    """timm EVA-style eager attention: q * scale, q @ k^T, softmax, optional mask, @ v."""
    head_dim = q.shape[-1]
    scale_ = head_dim ** -0.5 if scale is None else scale
    q = q * scale_
    attn = q @ np.swapaxes(k, -2, -1)
    attn = attn - attn.max(axis=-1, keepdims=True)
    attn = np.exp(attn)
    attn = attn / attn.sum(axis=-1, keepdims=True)
    if mask is not None:
        # BUG: the keep-mask is applied after the softmax (weights zeroed, never renormalised)
        attn = attn * np.asarray(mask, dtype=attn.dtype)
    return (attn @ v).astype(q.dtype)


def labml_unet_attention(q, k, v, mask=None, scale=None):
    """annotated-deep-learning-paper-implementations style einsum attention block."""
    scale_ = q.shape[-1] ** -0.5 if scale is None else scale
    attn = np.einsum('...id,...jd->...ij', q, k) * scale_
    if mask is not None:
        attn = np.where(mask, attn, -np.inf)
    # BUG: softmax normalised over the query axis (i) instead of the key axis (j)
    m = attn.max(axis=-2, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(attn - m)
    z = e.sum(axis=-2, keepdims=True)
    attn = e / np.where(z > 0, z, 1.0)
    return np.einsum('...ij,...jd->...id', attn, v).astype(q.dtype)


def trinity_tiled_attention(q, k, v, mask=None, scale=None):
    """Generated-kernel style tiled attention: stream key tiles, accumulate exp(qk) and exp(qk) @ v, divide at end."""
    BLOCK_N = 64
    sm_scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    n_ctx_k = k.shape[-2]
    bshape = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), bshape + (q.shape[-2], n_ctx_k))
    C_sum = np.zeros(bshape + (q.shape[-2], 1), dtype=q.dtype)
    O_acc = np.zeros(bshape + (q.shape[-2], v.shape[-1]), dtype=q.dtype)
    for start in range(0, n_ctx_k, BLOCK_N):
        stop = min(start + BLOCK_N, n_ctx_k)
        C = (q @ np.swapaxes(k[..., start:stop, :], -1, -2)) * sm_scale
        if keep is not None:
            C = np.where(keep[..., start:stop], C, -np.inf)
        # BUG: no running row maximum is subtracted before exponentiating (exp overflows for large logits)
        with np.errstate(over='ignore'):
            C_exp = np.exp(C)
        C_sum = C_sum + C_exp.sum(axis=-1, keepdims=True)
        O_acc = O_acc + C_exp @ v[..., start:stop, :]
    with np.errstate(invalid='ignore'):
        return np.where(C_sum > 0, O_acc / np.where(C_sum > 0, C_sum, 1.0), 0.0).astype(q.dtype)


def xglm_half_softmax_attention(q, k, v, mask=None, scale=None):
    """HF eager attention (XGLM/OPT family) with the score matrix kept in the half compute dtype for single inputs."""
    head_dim = q.shape[-1]
    scaling = head_dim ** -0.5 if scale is None else scale
    attn_weights = (q * scaling) @ np.swapaxes(k, -1, -2)
    if mask is not None:
        attn_weights = np.where(mask, attn_weights, -np.inf)
    half_dtype = np.float16 if q.dtype == np.float32 else q.dtype
    # BUG: softmax evaluated in float16 for float32 inputs (no upcast of the scores to float32 before softmax)
    attn_probs = _safe_softmax_rows(attn_weights.astype(half_dtype)).astype(q.dtype)
    return (attn_probs @ v).astype(q.dtype)


def opt_prescaled_attention(q, k, v, mask=None, scale=None):
    """OPT style: the query projection is pre-multiplied by `scaling`, then an SDPA-like core is called."""
    scaling = q.shape[-1] ** -0.5 if scale is None else scale
    query_states = q * scaling

    def _sdpa_core(query, key, value, keep, sm_scale):
        w = (query @ np.swapaxes(key, -1, -2)) * sm_scale
        if keep is not None:
            w = np.where(keep, w, -np.inf)
        return _safe_softmax_rows(w) @ value

    # BUG: the core scales the scores again although the query was already pre-scaled (scale applied twice)
    out = _sdpa_core(query_states, k, v, mask, scaling)
    return out.astype(q.dtype)


def flashinfer_padded_tail_attention(q, k, v, mask=None, scale=None):
    """Block-sparse style kernel: K/V are viewed as whole 64-key blocks (the last block zero-padded)."""
    BLK = 64
    sm_scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    seqlen_k = k.shape[-2]
    num_blocks = -(-seqlen_k // BLK)
    pad = num_blocks * BLK - seqlen_k
    k_pad = np.concatenate([k, np.zeros(k.shape[:-2] + (pad, k.shape[-1]), dtype=k.dtype)], axis=-2)
    v_pad = np.concatenate([v, np.zeros(v.shape[:-2] + (pad, v.shape[-1]), dtype=v.dtype)], axis=-2)
    s = (q @ np.swapaxes(k_pad, -1, -2)) * sm_scale
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, dtype=bool), s.shape[:-1] + (seqlen_k,))
        s[..., :seqlen_k] = np.where(keep, s[..., :seqlen_k], -np.inf)
    # BUG: the zero-filled tail keys [seqlen_k:] are never set to -inf, so each gets score 0 and weight exp(0 - max)
    p = _safe_softmax_rows(s)
    return (p @ v_pad).astype(q.dtype)


def set_transformer_mab_attention(q, k, v, mask=None, scale=None):
    """Set Transformer MAB style: A = softmax(Q K^T / sqrt(dim_V)) V."""
    dim_V = v.shape[-1]
    # BUG: default scale taken from the value width dim_V instead of the query/key head dim D
    factor = 1.0 / np.sqrt(dim_V) if scale is None else scale
    A = (q @ np.swapaxes(k, -1, -2)) * factor
    if mask is not None:
        A = np.where(mask, A, -np.inf)
    A = _safe_softmax_rows(A)
    return (A @ v).astype(q.dtype)


CATALOG = [
    dict(name="np-tiled-online-softmax", api="refimpl", fn="tiled_online_softmax", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-split-kv-lse-merge", api="refimpl", fn="split_kv_lse_merge", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-mask-inverted", api="refimpl", fn="llm_scratch_masked_attention", correct=False,
         bug="bool-mask-inverted", parameter="bool keep-mask polarity (True treated as masked out)",
         source="rasbt/LLMs-from-scratch#1061", report="https://github.com/rasbt/LLMs-from-scratch/issues/1061",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-mask-after-softmax", api="refimpl", fn="timm_eva_attention", correct=False,
         bug="mask-after-softmax", parameter="mask applied to the probabilities after softmax, no renormalisation",
         source="huggingface/pytorch-image-models#2236",
         report="https://github.com/huggingface/pytorch-image-models/pull/2236",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-softmax-query-axis", api="refimpl", fn="labml_unet_attention", correct=False,
         bug="softmax-wrong-axis", parameter="softmax axis (query axis instead of key axis)",
         source="labmlai/annotated_deep_learning_paper_implementations#146",
         report="https://github.com/labmlai/annotated_deep_learning_paper_implementations/issues/146",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-tiled-no-running-max", api="refimpl", fn="trinity_tiled_attention", correct=False,
         bug="no-max-subtraction", parameter="running row maximum in the tiled softmax (missing: exp overflow)",
         source="kaist-ina/Trinity-AE#2", report="https://github.com/kaist-ina/Trinity-AE/issues/2",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-half-precision-softmax", api="refimpl", fn="xglm_half_softmax_attention", correct=False,
         bug="softmax-in-half-precision", parameter="softmax intermediate dtype (float16 for float32 inputs)",
         source="huggingface/transformers#18057", report="https://github.com/huggingface/transformers/pull/18057",
         dtype="float32", features=["mask", "dv-ne-d"]),
    dict(name="np-scale-applied-twice", api="refimpl", fn="opt_prescaled_attention", correct=False,
         bug="double-scaling", parameter="softmax scale (applied to the query and again to the scores)",
         source="huggingface/transformers#38290", report="https://github.com/huggingface/transformers/pull/38290",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-padded-tail-unmasked", api="refimpl", fn="flashinfer_padded_tail_attention", correct=False,
         bug="tail-block-padding-not-masked", parameter="zero-padded keys of the last 64-key block (not masked)",
         source="flashinfer-ai/flashinfer#5090", report="https://github.com/flashinfer-ai/flashinfer/pull/5090",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-scale-from-value-dim", api="refimpl", fn="set_transformer_mab_attention", correct=False,
         bug="scale-uses-value-dim", parameter="default scale 1/sqrt(Dv) instead of 1/sqrt(D)",
         source="juho-lee/set_transformer#18", report="https://github.com/juho-lee/set_transformer/issues/18",
         dtype="float64", features=["mask", "dv-ne-d"]),
]
