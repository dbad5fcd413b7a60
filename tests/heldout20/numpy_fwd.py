"""heldout20 NumPy forward kernels, API ``refimpl``: fn(q, k, v, mask=None, scale=None).

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); ``mask`` None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); ``scale=None`` means 1/sqrt(D); a row with no kept key returns zeros.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import numpy as np


# --- kernel: scaled_dot_product_attention_cpu ---
def _cpu_softmax_last_dim(x):
    row_max = np.max(x, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.exp(x - row_max)
    denom = np.sum(e, axis=-1, keepdims=True)
    return np.where(denom > 0, e / np.where(denom > 0, denom, 1.0), 0.0)


def _cpu_scaled_dot_product_attention(q, k, v, keep, scale=0.0):
    """CPU op. ``scale``: scaling factor, defaults to 1/sqrt(headDim)."""
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale  # BUG: the 0.0 default is applied literally
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    weights = _cpu_softmax_last_dim(scores)
    return np.matmul(weights, v).astype(q.dtype, copy=False)


def scaled_dot_product_attention_cpu(q, k, v, mask=None, scale=None):
    return _cpu_scaled_dot_product_attention(q, k, v, mask, 0.0 if scale is None else scale)


# --- kernel: vit_attention_scaling_after_softmax ---
def _vit_softmax(energy):
    m = np.max(energy, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(energy - m)
    s = np.sum(e, axis=-1, keepdims=True)
    return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)


def vit_attention_scaling_after_softmax(q, k, v, mask=None, scale=None):
    scaling = q.shape[-1] ** -0.5 if scale is None else scale
    energy = np.einsum("...qd,...kd->...qk", q, k)
    if mask is not None:
        energy = np.where(mask, energy, -np.inf)
    att = _vit_softmax(energy) * scaling  # BUG: the scaling multiplies the softmax output instead of the energy
    out = np.einsum("...qk,...kd->...qd", att, v)
    return out.astype(q.dtype, copy=False)


# --- kernel: kb_attention_fill_minus_10000 ---
def _kb_masked_softmax(energies):
    top = np.max(energies, axis=-1, keepdims=True)
    top = np.where(np.isneginf(top), 0.0, top)
    w = np.exp(energies - top)
    total = w.sum(axis=-1, keepdims=True)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), 0.0)


def kb_attention_fill_minus_10000(q, k, v, mask=None, scale=None):
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    energies = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        pad = np.logical_not(mask)
        energies = np.where(pad, -10000.0, energies)  # BUG: finite fill instead of -inf; empty rows go uniform
    weights = _kb_masked_softmax(energies)
    return np.matmul(weights, v).astype(q.dtype, copy=False)


# --- kernel: masked_attention_mask_orientation ---
def masked_attention_mask_orientation(q, k, v, mask=None, scale=None):
    """Masked attention, assignment style.

    attn_mask: Array of shape (..., S, T) where mask[i, j] == 0 means query i may not attend key j.
    """
    d = q.shape[-1]
    query_key_product = np.matmul(q, np.swapaxes(k, -1, -2))
    query_key_product = query_key_product * (1.0 / math.sqrt(d) if scale is None else scale)
    if mask is not None:
        attn_mask = np.swapaxes(mask, -1, -2)  # BUG: the (S, T) docstring orientation is transposed into the keep-mask
        query_key_product = np.where(attn_mask, query_key_product, -np.inf)
    mx = np.max(query_key_product, axis=-1, keepdims=True)
    mx[~np.isfinite(mx)] = 0.0
    ex = np.exp(query_key_product - mx)
    sm = ex.sum(axis=-1, keepdims=True)
    attn = np.divide(ex, sm, out=np.zeros_like(ex), where=sm > 0)
    return np.matmul(attn, v).astype(q.dtype, copy=False)


# --- kernel: tiny_mha_mask_square_broadcast ---
def tiny_mha_mask_square_broadcast(q, k, v, mask=None, scale=None):
    scale_factor = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale_factor
    if mask is not None:
        batch_shape = scores.shape[:-2]
        seq_len_mask = scores.shape[-2]
        mask_full = np.broadcast_to(mask, batch_shape + (seq_len_mask, seq_len_mask))  # BUG: seq_k discarded
        scores = np.where(mask_full, scores, -np.inf)
    mmax = scores.max(axis=-1, keepdims=True)
    mmax = np.where(np.isfinite(mmax), mmax, 0.0)
    probs = np.exp(scores - mmax)
    norm = probs.sum(axis=-1, keepdims=True)
    probs = np.where(norm > 0, probs / np.where(norm > 0, norm, 1.0), 0.0)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


# --- kernel: afm_attention_keepdims_softmax ---
def _afm_softmax(x, axis):
    x_max = np.max(x, axis=axis, keepdims=True)
    x_max = np.where(np.isfinite(x_max), x_max, 0.0)
    ex = np.exp(x - x_max)
    den = np.sum(ex, axis=axis, keepdims=True)
    return np.where(den > 0, ex / np.where(den > 0, den, 1.0), 0.0)


def afm_attention_keepdims_softmax(q, k, v, mask=None, scale=None):
    if scale is None:
        scale = q.shape[-1] ** -0.5
    # pairwise interaction reduced with keep_dims: (..., Sq, Sk, 1)
    attention_logits = np.sum(q[..., :, None, :] * k[..., None, :, :], axis=-1, keepdims=True) * scale
    if mask is not None:
        attention_logits = np.where(np.asarray(mask)[..., None], attention_logits, -np.inf)
    attention_out = _afm_softmax(attention_logits, axis=-1)  # BUG: softmax over the kept size-1 axis, not the keys
    out = np.sum(attention_out * v[..., None, :, :], axis=-2)
    return out.astype(q.dtype, copy=False)


# --- kernel: attend_blocked_online_tiles ---
def attend_blocked_online_tiles(q, k, v, mask=None, scale=None, block_q=24, block_k=48):
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None
    if mask is not None:
        keep = np.broadcast_to(mask, batch + (sq, sk))
    out = np.zeros(batch + (sq, dv), dtype=q.dtype)
    for i0 in range(0, sq, block_q):
        i1 = min(sq, i0 + block_q)
        q_blk = q[..., i0:i1, :]
        m_i = np.full(batch + (i1 - i0, 1), -np.inf, dtype=q.dtype)
        l_i = np.zeros(batch + (i1 - i0, 1), dtype=q.dtype)
        acc = np.zeros(batch + (i1 - i0, dv), dtype=q.dtype)
        for j0 in range(0, sk, block_k):
            j1 = min(sk, j0 + block_k)
            s = np.matmul(q_blk, np.swapaxes(k[..., j0:j1, :], -1, -2)) * sm_scale
            if keep is not None:
                s = np.where(keep[..., i0:i1, j0:j1], s, -np.inf)
            m_new = np.maximum(m_i, np.max(s, axis=-1, keepdims=True))
            m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
            alpha = np.exp(m_i - m_safe)
            p = np.exp(s - m_safe)
            l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, v[..., j0:j1, :])
            m_i = m_new
        out[..., i0:i1, :] = np.where(l_i > 0, acc / np.where(l_i > 0, l_i, 1.0), 0.0)
    return out


# --- kernel: attend_split_chunks_lse_merge ---
def attend_split_chunks_lse_merge(q, k, v, mask=None, scale=None, chunk=37):
    sq, sk = q.shape[-2], k.shape[-2]
    sm_scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    keep = None if mask is None else np.broadcast_to(mask, batch + (sq, sk))
    partial_out, partial_lse = [], []
    for j0 in range(0, sk, chunk):
        j1 = min(sk, j0 + chunk)
        s = np.matmul(q, np.swapaxes(k[..., j0:j1, :], -1, -2)) * sm_scale
        s = np.broadcast_to(s, batch + s.shape[-2:])
        if keep is not None:
            s = np.where(keep[..., j0:j1], s, -np.inf)
        with np.errstate(divide="ignore"):
            mx = np.max(s, axis=-1, keepdims=True)
            mx0 = np.where(np.isfinite(mx), mx, 0.0)
            e = np.exp(s - mx0)
            tot = e.sum(axis=-1, keepdims=True)
            lse = np.where(tot > 0, np.log(np.where(tot > 0, tot, 1.0)) + mx0, -np.inf)
        o = np.matmul(np.where(tot > 0, e / np.where(tot > 0, tot, 1.0), 0.0), v[..., j0:j1, :])
        partial_out.append(o)
        partial_lse.append(lse)
    lse_all = partial_lse[0]
    for lse in partial_lse[1:]:
        lse_all = np.logaddexp(lse_all, lse)
    out = np.zeros(batch + (sq, v.shape[-1]), dtype=q.dtype)
    for o, lse in zip(partial_out, partial_lse):
        w = np.where(np.isfinite(lse_all), np.exp(lse - np.where(np.isfinite(lse_all), lse_all, 0.0)), 0.0)
        out = out + w * o
    return out.astype(q.dtype, copy=False)


CATALOG = [
    {
        "name": "np-skainet-scale-default-zero",
        "api": "refimpl",
        "fn": "scaled_dot_product_attention_cpu",
        "correct": False,
        "bug": "default-scale-zero-applied",
        "parameter": (
            "scale=None is forwarded as the CPU op's 0.0 default, which is documented as 1/sqrt(head_dim) but "
            "multiplied into the scores literally: every score becomes 0 and each row averages its kept values "
            "uniformly. Triggers: scale=None with a row that has two or more kept keys"
        ),
        "source": "SKaiNET-developers/SKaiNET#860",
        "report": "https://github.com/SKaiNET-developers/SKaiNET/issues/860",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-vit-scaling-after-softmax",
        "api": "refimpl",
        "fn": "vit_attention_scaling_after_softmax",
        "correct": False,
        "bug": "scale-applied-after-softmax",
        "parameter": (
            "the softmax is taken over the unscaled energy and the scale then multiplies the attention weights, "
            "so rows no longer sum to 1 and the sharpness is that of scale 1. "
            "Triggers: an effective scale other than 1 (scale=None or an explicit scale != 1)"
        ),
        "source": "FrancescoSaverioZuppichini/ViT#6",
        "report": "https://github.com/FrancescoSaverioZuppichini/ViT/issues/6",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-kbdesc-fill-minus-10000",
        "api": "refimpl",
        "fn": "kb_attention_fill_minus_10000",
        "correct": False,
        "bug": "finite-mask-fill-empty-row-uniform",
        "parameter": (
            "dropped keys are filled with the finite -10000.0 instead of -inf; kept rows are unaffected, but a "
            "row with no kept key is a softmax over equal values and returns the mean of all values instead of "
            "zeros. Triggers: a mask with a row that has no kept key"
        ),
        "source": "EagleW/Describing_a_Knowledge_Base#1",
        "report": "https://github.com/EagleW/Describing_a_Knowledge_Base/pull/1",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-cs231n-mask-orientation",
        "api": "refimpl",
        "fn": "masked_attention_mask_orientation",
        "correct": False,
        "bug": "mask-transposed",
        "parameter": (
            "the keep-mask is taken to be laid out (..., Sk, Sq) as the docstring states and is transposed "
            "before use: with Sq == Sk each query gets the mask column of its own index, with Sq != Sk the "
            "transposed mask does not broadcast (an exception). "
            "Triggers: a mask that is not symmetric in its last two axes after broadcasting to (..., Sq, Sk)"
        ),
        "source": "cs231n/cs231n.github.io#279",
        "report": "https://github.com/cs231n/cs231n.github.io/issues/279",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-tinytorch-mask-square",
        "api": "refimpl",
        "fn": "tiny_mha_mask_square_broadcast",
        "correct": False,
        "bug": "mask-shape-assumes-square",
        "parameter": (
            "the mask is broadcast to (..., seq_q, seq_q), the key length taken from the query length: right "
            "for self-attention, a broadcast error for any mask when Sq != Sk. "
            "Triggers: a mask given with Sq != Sk"
        ),
        "source": "harvard-edge/cs249r_book#1875",
        "report": "https://github.com/harvard-edge/cs249r_book/pull/1875",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-afm-keepdims-softmax",
        "api": "refimpl",
        "fn": "afm_attention_keepdims_softmax",
        "correct": False,
        "bug": "softmax-over-singleton-axis",
        "parameter": (
            "the logits are reduced with keep_dims, leaving a size-1 last axis, and the softmax runs over that "
            "axis: every kept key gets weight 1 and the output is the sum of the kept values. "
            "Triggers: a row with two or more kept keys (always)"
        ),
        "source": "hexiangnan/attentional_factorization_machine#19",
        "report": "https://github.com/hexiangnan/attentional_factorization_machine/issues/19",
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-blocked-online-tiles",
        "api": "refimpl",
        "fn": "attend_blocked_online_tiles",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
    {
        "name": "np-split-chunks-lse-merge",
        "api": "refimpl",
        "fn": "attend_split_chunks_lse_merge",
        "correct": True,
        "bug": None,
        "parameter": None,
        "source": None,
        "report": None,
        "dtype": "float64",
        "features": ["mask", "dv-ne-d"],
    },
]
