"""Held-out NumPy forward attention kernels ("refimpl" API).

Contract: fn(q, k, v, mask=None, scale=None)
  q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); leading dims broadcast like
  np.matmul; mask is a bool KEEP mask (True = attend) broadcastable to
  (..., Sq, Sk); scale None -> 1/sqrt(D).  Fully masked query rows -> 0.

Each broken kernel carries exactly one mistake, marked with "# BUG:".
Written independently of the harness' own bug models (see README.md).
"""
import math

import numpy as np


# ---------------------------------------------------------------------------
# small shared helpers (all correct)
# ---------------------------------------------------------------------------
def _resolve_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _broadcast_qkv(q, k, v, mask):
    """Broadcast leading dims of q/k/v (and mask) to a common batch shape."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        lead = np.broadcast_shapes(lead, mask.shape[:-2])
    Sq, D = q.shape[-2:]
    Sk = k.shape[-2]
    Dv = v.shape[-1]
    qb = np.broadcast_to(q, lead + (Sq, D))
    kb = np.broadcast_to(k, lead + (Sk, D))
    vb = np.broadcast_to(v, lead + (Sk, Dv))
    mb = None if mask is None else np.broadcast_to(mask, lead + (Sq, Sk))
    return lead, qb, kb, vb, mb


def _safe_softmax_lastdim(s):
    """Softmax over the last axis; rows that are entirely -inf give 0."""
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    den = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(den == 0.0, 1.0, den)


# ---------------------------------------------------------------------------
# CORRECT kernels
# ---------------------------------------------------------------------------
def np_eager_reference(q, k, v, mask=None, scale=None):
    """Plain eager attention (HF-style eager path), float64-exact."""
    sm = _resolve_scale(q, scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        shape = np.broadcast_shapes(scores.shape, keep.shape)
        scores = np.where(np.broadcast_to(keep, shape), np.broadcast_to(scores, shape), -np.inf)
    probs = _safe_softmax_lastdim(scores)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_flash2_tiled(q, k, v, mask=None, scale=None):
    """FlashAttention-2 style tiled online softmax (Br=40, Bc=48), correct."""
    BLOCK_M, BLOCK_N = 40, 48
    sm = _resolve_scale(q, scale)
    lead, qb, kb, vb, mb = _broadcast_qkv(q, k, v, mask)
    Sq, D = qb.shape[-2:]
    Sk, Dv = vb.shape[-2:]
    n = int(np.prod(lead)) if lead else 1
    acc_dtype = np.result_type(q.dtype, np.float32)
    Q = qb.reshape(n, Sq, D).astype(acc_dtype)
    K = kb.reshape(n, Sk, D).astype(acc_dtype)
    V = vb.reshape(n, Sk, Dv).astype(acc_dtype)
    M = None if mb is None else mb.reshape(n, Sq, Sk)
    out = np.zeros((n, Sq, Dv), dtype=acc_dtype)
    for i0 in range(0, Sq, BLOCK_M):
        i1 = min(i0 + BLOCK_M, Sq)
        q_t = Q[:, i0:i1]
        m_i = np.full((n, i1 - i0), -np.inf, dtype=acc_dtype)
        l_i = np.zeros((n, i1 - i0), dtype=acc_dtype)
        acc = np.zeros((n, i1 - i0, Dv), dtype=acc_dtype)
        for j0 in range(0, Sk, BLOCK_N):
            j1 = min(j0 + BLOCK_N, Sk)
            s = np.matmul(q_t, np.swapaxes(K[:, j0:j1], -1, -2)) * sm
            if M is not None:
                s = np.where(M[:, i0:i1, j0:j1], s, -np.inf)
            m_new = np.maximum(m_i, s.max(axis=-1))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
            p = np.exp(s - m_safe[..., None])
            alpha = np.exp(m_i - m_safe)
            l_i = l_i * alpha + p.sum(axis=-1)
            acc = acc * alpha[..., None] + np.matmul(p, V[:, j0:j1])
            m_i = m_new
        out[:, i0:i1] = acc / np.where(l_i == 0.0, 1.0, l_i)[..., None]
    return out.reshape(lead + (Sq, Dv)).astype(q.dtype, copy=False)


# ---------------------------------------------------------------------------
# BROKEN kernels
# ---------------------------------------------------------------------------
def np_scale_sqrt_dv(q, k, v, mask=None, scale=None):
    """Default scale taken from the value head dim."""
    # BUG: default softmax scale uses the value dim Dv instead of the q/k dim D
    sm = 1.0 / math.sqrt(v.shape[-1]) if scale is None else float(scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    probs = _safe_softmax_lastdim(scores)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_scale_arg_ignored(q, k, v, mask=None, scale=None):
    """Explicit scale argument is accepted but never used."""
    # BUG: the caller's scale is ignored; 1/sqrt(D) is always used
    sm = q.shape[-1] ** -0.5
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    probs = _safe_softmax_lastdim(scores)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_mask_inverted(q, k, v, mask=None, scale=None):
    """Mask read with nn.MultiheadAttention key_padding_mask polarity."""
    sm = _resolve_scale(q, scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        # BUG: True is treated as "masked out" (padding convention) instead of "keep"
        scores = np.where(np.asarray(mask, dtype=bool), -np.inf, scores)
    probs = _safe_softmax_lastdim(scores)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_mask_transposed_selfattn(q, k, v, mask=None, scale=None):
    """HF-style _expand_mask on the self-attention path (tgt_len == src_len)."""
    sm = _resolve_scale(q, scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        Sq, Sk = scores.shape[-2:]
        if Sq == Sk:
            lead = np.broadcast_shapes(scores.shape[:-2], keep.shape[:-2])
            # BUG: expanded mask is transposed, so key-padding/causal masks act on query rows
            keep = np.swapaxes(np.broadcast_to(keep, lead + (Sq, Sk)), -1, -2)
        scores = np.where(keep, scores, -np.inf)
    probs = _safe_softmax_lastdim(scores)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_fill_finite_uniform_rows(q, k, v, mask=None, scale=None):
    """Masked logits filled with a large finite negative number."""
    FILL = -1e30
    sm = _resolve_scale(q, scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        # BUG: finite fill value; a fully masked row becomes uniform (mean of V) instead of 0
        scores = np.where(np.asarray(mask, dtype=bool), scores, FILL)
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    probs = e / e.sum(axis=-1, keepdims=True)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_softmax_in_float32(q, k, v, mask=None, scale=None):
    """Scores in input precision, softmax done in float32 ("fast path")."""
    sm = _resolve_scale(q, scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    # BUG: softmax intermediates are downcast to float32 even for float64 inputs
    probs = _safe_softmax_lastdim(scores.astype(np.float32)).astype(q.dtype)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_mask_after_softmax(q, k, v, mask=None, scale=None):
    """Mask multiplied into the probabilities after softmax."""
    sm = _resolve_scale(q, scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    probs = _safe_softmax_lastdim(scores)
    if mask is not None:
        # BUG: masking after softmax zeroes weights without renormalising the row
        probs = probs * np.asarray(mask, dtype=probs.dtype)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_softmax_over_queries(q, k, v, mask=None, scale=None):
    """Softmax taken along the wrong axis."""
    sm = _resolve_scale(q, scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * sm
    if mask is not None:
        keep = np.asarray(mask, dtype=bool)
        shape = np.broadcast_shapes(scores.shape, keep.shape)
        scores = np.where(np.broadcast_to(keep, shape), np.broadcast_to(scores, shape), -np.inf)
    # BUG: normalises over the query axis (-2) instead of the key axis (-1)
    probs = np.swapaxes(_safe_softmax_lastdim(np.swapaxes(scores, -1, -2)), -1, -2)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def np_online_no_rescale(q, k, v, mask=None, scale=None):
    """Single-pass online softmax over key blocks of 20 (decode-style kernel)."""
    BLOCK_N = 20
    sm = _resolve_scale(q, scale)
    lead, qb, kb, vb, mb = _broadcast_qkv(q, k, v, mask)
    Sq, D = qb.shape[-2:]
    Sk, Dv = vb.shape[-2:]
    n = int(np.prod(lead)) if lead else 1
    Q = qb.reshape(n, Sq, D).astype(np.float64)
    K = kb.reshape(n, Sk, D).astype(np.float64)
    V = vb.reshape(n, Sk, Dv).astype(np.float64)
    M = None if mb is None else mb.reshape(n, Sq, Sk)
    m_i = np.full((n, Sq), -np.inf)
    l_i = np.zeros((n, Sq))
    acc = np.zeros((n, Sq, Dv))
    for j0 in range(0, Sk, BLOCK_N):
        j1 = min(j0 + BLOCK_N, Sk)
        s = np.matmul(Q, np.swapaxes(K[:, j0:j1], -1, -2)) * sm
        if M is not None:
            s = np.where(M[:, :, j0:j1], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        p = np.exp(s - m_safe[..., None])
        # BUG: correction factor exp(m_old - m_new) is never applied to l_i / acc
        l_i = l_i + p.sum(axis=-1)
        acc = acc + np.matmul(p, V[:, j0:j1])
        m_i = m_new
    out = acc / np.where(l_i == 0.0, 1.0, l_i)[..., None]
    return out.reshape(lead + (Sq, Dv)).astype(q.dtype, copy=False)


def np_tiled_masked_block_nan(q, k, v, mask=None, scale=None):
    """Tiled online softmax (Bc=24) without a guard for all-masked tiles."""
    BLOCK_N = 24
    sm = _resolve_scale(q, scale)
    lead, qb, kb, vb, mb = _broadcast_qkv(q, k, v, mask)
    Sq, D = qb.shape[-2:]
    Sk, Dv = vb.shape[-2:]
    n = int(np.prod(lead)) if lead else 1
    Q = qb.reshape(n, Sq, D).astype(np.float64)
    K = kb.reshape(n, Sk, D).astype(np.float64)
    V = vb.reshape(n, Sk, Dv).astype(np.float64)
    M = None if mb is None else mb.reshape(n, Sq, Sk)
    m_i = np.full((n, Sq), -np.inf)
    l_i = np.zeros((n, Sq))
    acc = np.zeros((n, Sq, Dv))
    with np.errstate(invalid="ignore"):
        for j0 in range(0, Sk, BLOCK_N):
            j1 = min(j0 + BLOCK_N, Sk)
            s = np.matmul(Q, np.swapaxes(K[:, j0:j1], -1, -2)) * sm
            if M is not None:
                s = np.where(M[:, :, j0:j1], s, -np.inf)
            m_new = np.maximum(m_i, s.max(axis=-1))
            # BUG: no clamp when the running max is still -inf: (-inf) - (-inf) = NaN
            p = np.exp(s - m_new[..., None])
            alpha = np.exp(m_i - m_new)
            l_i = l_i * alpha + p.sum(axis=-1)
            acc = acc * alpha[..., None] + np.matmul(p, V[:, j0:j1])
            m_i = m_new
        out = acc / np.where(l_i == 0.0, 1.0, l_i)[..., None]
    return out.reshape(lead + (Sq, Dv)).astype(q.dtype, copy=False)


_F = ["mask", "dv-ne-d"]

CATALOG = [
    {"name": "np_eager_reference", "api": "refimpl", "fn": "np_eager_reference", "correct": True,
     "bug": None, "parameter": None,
     "source": "pytorch/pytorch#103963 (https://github.com/pytorch/pytorch/issues/103963)",
     "report": "SDPA returned NaN for boolean masks with all-False rows; this kernel uses the zero-row convention that report led to.",
     "dtype": "float64", "features": _F},
    {"name": "np_flash2_tiled", "api": "refimpl", "fn": "np_flash2_tiled", "correct": True,
     "bug": None, "parameter": {"block_m": 40, "block_n": 48},
     "source": "flashinfer-ai/flashinfer#4401 (https://github.com/flashinfer-ai/flashinfer/pull/4401)",
     "report": "Online-softmax kernels must clamp (-inf)-(-inf) for fully masked tiles; this tiled kernel does so correctly.",
     "dtype": "float64", "features": _F},
    {"name": "np_scale_sqrt_dv", "api": "refimpl", "fn": "np_scale_sqrt_dv", "correct": False,
     "bug": "default-scale-from-value-dim", "parameter": "1/sqrt(Dv)",
     "source": "juho-lee/set_transformer#18 (https://github.com/juho-lee/set_transformer/issues/18)",
     "report": "The MAB normalised attention logits by 1/sqrt(dim_V) rather than by the key dimension.",
     "dtype": "float64", "features": _F},
    {"name": "np_scale_arg_ignored", "api": "refimpl", "fn": "np_scale_arg_ignored", "correct": False,
     "bug": "explicit-scale-dropped", "parameter": "1/sqrt(D) always",
     "source": "lucidrains/x-transformers#244 (https://github.com/lucidrains/x-transformers/pull/244)",
     "report": "A custom attention scale was not passed through to the flash attention call, so the default scale was used.",
     "dtype": "float64", "features": _F},
    {"name": "np_mask_inverted", "api": "refimpl", "fn": "np_mask_inverted", "correct": False,
     "bug": "keep-mask-read-as-padding-mask", "parameter": "True=masked",
     "source": "pytorch/pytorch#39321 (https://github.com/pytorch/pytorch/pull/39321)",
     "report": "Discussion that True in MHA's key_padding_mask means 'mask out', the opposite of a keep-mask, which confuses users.",
     "dtype": "float64", "features": _F},
    {"name": "np_mask_transposed_selfattn", "api": "refimpl", "fn": "np_mask_transposed_selfattn", "correct": False,
     "bug": "expanded-mask-transposed", "parameter": "mask.swapaxes(-1,-2) when Sq==Sk",
     "source": "huggingface/transformers#26421 (https://github.com/huggingface/transformers/pull/26421)",
     "report": "A PR changed _expand_mask to transpose the expanded padding mask, which moves key padding onto query rows.",
     "dtype": "float64", "features": _F},
    {"name": "np_fill_finite_uniform_rows", "api": "refimpl", "fn": "np_fill_finite_uniform_rows", "correct": False,
     "bug": "finite-fill-fully-masked-row", "parameter": -1e30,
     "source": "ml-explore/mlx#2395 (https://github.com/ml-explore/mlx/issues/2395)",
     "report": "A fully masked row in SDPA produced unexpected non-zero values rather than zeros, breaking batched prefill.",
     "dtype": "float64", "features": _F},
    {"name": "np_softmax_in_float32", "api": "refimpl", "fn": "np_softmax_in_float32", "correct": False,
     "bug": "float64-softmax-downcast", "parameter": "float32",
     "source": "jax-ml/jax#34114 (https://github.com/jax-ml/jax/pull/34114)",
     "report": "dot_product_attention cast float64 logits to float32 around the softmax, so float64 inputs were not handled in float64.",
     "dtype": "float64", "features": _F},
    {"name": "np_mask_after_softmax", "api": "refimpl", "fn": "np_mask_after_softmax", "correct": False,
     "bug": "mask-applied-post-softmax", "parameter": None,
     "source": "huggingface/pytorch-image-models#2236 (https://github.com/huggingface/pytorch-image-models/pull/2236)",
     "report": "eva.py applied the attention mask in the wrong place; the fix notes the mask must be applied before the softmax.",
     "dtype": "float64", "features": _F},
    {"name": "np_softmax_over_queries", "api": "refimpl", "fn": "np_softmax_over_queries", "correct": False,
     "bug": "softmax-axis-queries", "parameter": "axis=-2",
     "source": "labmlai/annotated_deep_learning_paper_implementations#282 (https://github.com/labmlai/annotated_deep_learning_paper_implementations/issues/282)",
     "report": "Report that an attention block took its softmax over the wrong (query vs key) dimension.",
     "dtype": "float64", "features": _F},
    {"name": "np_online_no_rescale", "api": "refimpl", "fn": "np_online_no_rescale", "correct": False,
     "bug": "online-softmax-correction-dropped", "parameter": {"block_n": 20},
     "source": "paiml/aprender#2753 (https://github.com/paiml/aprender/issues/2753)",
     "report": "A batched incremental attention kernel computed old_max - new_max as zero, so the online-softmax correction was always 1.0.",
     "dtype": "float64", "features": _F},
    {"name": "np_tiled_masked_block_nan", "api": "refimpl", "fn": "np_tiled_masked_block_nan", "correct": False,
     "bug": "all-masked-tile-nan", "parameter": {"block_n": 24},
     "source": "flashinfer-ai/flashinfer#4401 (https://github.com/flashinfer-ai/flashinfer/pull/4401)",
     "report": "With -inf masking, a tile whose logits are all masked evaluates exp((-inf)-(-inf)) = NaN, which then reaches the output.",
     "dtype": "float64", "features": _F},
]
