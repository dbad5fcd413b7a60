"""Held-out set 22, API `refimpl`: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); mask None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); scale None means 1/sqrt(D). Rows with no kept key return zeros.
Six kernels carry one mistake each (marked by a BUG comment), two are correct alternative implementations.
"""
import math

import numpy as np


# --- kernel: bert_extended_mask_typo ---
def _get_extended_attention_mask(attention_mask, dtype):
    extended_attention_mask = attention_mask.astype(dtype)
    exteneded_attention_mask = (1.0 - extended_attention_mask) * -10000.0  # noqa: F841
    return extended_attention_mask  # BUG: returns the raw 1/0 keep-mask instead of the -10000 additive form


def bert_extended_mask_typo(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    attention_scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    has_key = None
    if mask is not None:
        keep = np.broadcast_to(mask, attention_scores.shape)
        attention_scores = attention_scores + _get_extended_attention_mask(keep, q.dtype)
        has_key = keep.any(axis=-1, keepdims=True)
    attention_scores = attention_scores - attention_scores.max(axis=-1, keepdims=True)
    attention_probs = np.exp(attention_scores)
    attention_probs = attention_probs / attention_probs.sum(axis=-1, keepdims=True)
    if has_key is not None:
        attention_probs = np.where(has_key, attention_probs, 0.0)
    return np.matmul(attention_probs, v).astype(q.dtype)


# --- kernel: masked_fill_inf_softmax ---
def masked_fill_inf_softmax(q, k, v, mask=None, scale=None):
    temperature = math.sqrt(q.shape[-1]) if scale is None else 1.0 / scale
    attn = np.matmul(q / temperature, np.swapaxes(k, -1, -2))
    if mask is not None:
        attn = np.where(np.broadcast_to(mask, attn.shape), attn, -np.inf)
    row_max = attn.max(axis=-1, keepdims=True)
    e = np.exp(attn - row_max)  # BUG: a row of -inf gives -inf - -inf = NaN (no guard for rows without a key)
    den = e.sum(axis=-1, keepdims=True)
    attn = e / np.where(den == 0, 1.0, den)
    return np.matmul(attn, v).astype(q.dtype)


# --- kernel: padding_mask_never_set ---
def _minimind_attention(xq, xk, xv, scale, attention_mask=None):
    scores = np.matmul(xq, np.swapaxes(xk, -1, -2)) * scale
    if attention_mask is not None:
        scores = np.where(np.broadcast_to(attention_mask, scores.shape), scores, -np.inf)
    m = scores.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp(scores - m)
    s = p.sum(axis=-1, keepdims=True)
    p = p / np.where(s == 0, 1.0, s)
    return np.matmul(p, xv)


def padding_mask_never_set(q, k, v, mask=None, scale=None):
    head_dim = q.shape[-1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale
    output = _minimind_attention(q, k, v, scale, attention_mask=None)  # BUG: the padding mask is never passed on
    return output.astype(q.dtype)


# --- kernel: double_attention_softmax_dim ---
def double_attention_softmax_dim(q, k, v, mask=None, scale=None):
    lead = q.shape[:-2]
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    full = np.broadcast_shapes(lead, k.shape[:-2])
    qf = np.broadcast_to(q, full + (sq, d)).reshape(-1, sq, d)
    kf = np.broadcast_to(k, full + (sk, d)).reshape(-1, sk, d)
    vf = np.broadcast_to(v, full + (sk, dv)).reshape(-1, sk, dv)
    tmp = np.matmul(qf, kf.transpose(0, 2, 1)) * scale
    if mask is not None:
        keep = np.broadcast_to(mask, full + (sq, sk)).reshape(-1, sq, sk)
        tmp = np.where(keep, tmp, -np.inf)
    axis = 1  # BUG: softmax over axis 1 of (B*H, Sq, Sk), the query axis, instead of the key axis (-1)
    m = tmp.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(tmp - m)
    z = e.sum(axis=axis, keepdims=True)
    weights = e / np.where(z == 0, 1.0, z)
    out = np.matmul(weights, vf)
    return out.reshape(full + (sq, dv)).astype(q.dtype)


# --- kernel: mha_unfold_heads_batch_order ---
def mha_unfold_heads_batch_order(q, k, v, mask=None, scale=None):
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    query = np.broadcast_to(q, lead + (sq, d)).reshape(-1, sq, d)
    key = np.broadcast_to(k, lead + (sk, d)).reshape(-1, sk, d)
    value = np.broadcast_to(v, lead + (sk, dv)).reshape(-1, sk, dv)
    score = np.einsum("nqd,nkd->nqk", query, key) * scale
    if mask is not None:
        keep = np.broadcast_to(mask, lead + (sq, sk)).reshape(-1, sq, sk)
        score = np.where(keep, score, -np.inf)
    top = score.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    attn = np.exp(score - top)
    norm = attn.sum(axis=-1, keepdims=True)
    attn = attn / np.where(norm == 0, 1.0, norm)
    output = np.einsum("nqk,nkv->nqv", attn, value)
    if len(lead) == 2:
        batch_size, num_heads = lead
        output = output.reshape(num_heads, batch_size, sq, dv).transpose(1, 0, 2, 3)  # BUG: unfolded head-major
    else:
        output = output.reshape(lead + (sq, dv))
    return output.astype(q.dtype)


# --- kernel: turbo_bert_mask_value_one ---
def turbo_bert_mask_value_one(q, k, v, mask=None, scale=None):
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qk = np.matmul(q, np.swapaxes(k, -1, -2)).astype(np.float64) * scale
    valid_rows = None
    if mask is not None:
        mask_f = np.broadcast_to(mask, qk.shape).astype(np.float64)
        bias = mask_f * -10000.0  # BUG: positions with mask value 1 (valid) are the ones penalised
        qk = qk + bias
        valid_rows = mask_f.max(axis=-1, keepdims=True) > 0
    qk = qk - qk.max(axis=-1, keepdims=True)
    probs = np.exp(qk)
    probs /= probs.sum(axis=-1, keepdims=True)
    if valid_rows is not None:
        probs = probs * valid_rows
    return np.matmul(probs, v).astype(q.dtype)


# --- kernel: attend_qchunks_online ---
def attend_qchunks_online(q, k, v, mask=None, scale=None):
    """Query chunks of 11, keys visited in blocks of 29 with a running max, row sum and accumulator."""
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qb = np.broadcast_to(q, lead + (sq, d)).astype(np.float64)
    kb = np.broadcast_to(k, lead + (sk, d)).astype(np.float64)
    vb = np.broadcast_to(v, lead + (sk, dv)).astype(np.float64)
    keep = None if mask is None else np.broadcast_to(mask, lead + (sq, sk))
    out = np.zeros(lead + (sq, dv))
    for q0 in range(0, sq, 11):
        q1 = min(q0 + 11, sq)
        m = np.full(lead + (q1 - q0, 1), -np.inf)
        l_sum = np.zeros(lead + (q1 - q0, 1))
        acc = np.zeros(lead + (q1 - q0, dv))
        for k0 in range(0, sk, 29):
            k1 = min(k0 + 29, sk)
            s = np.matmul(qb[..., q0:q1, :], np.swapaxes(kb[..., k0:k1, :], -1, -2)) * scale
            if keep is not None:
                s = np.where(keep[..., q0:q1, k0:k1], s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            safe = np.where(np.isfinite(m_new), m_new, 0.0)
            alpha = np.exp(np.where(np.isfinite(m), m - safe, -np.inf))
            p = np.exp(s - safe)
            l_sum = l_sum * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, vb[..., k0:k1, :])
            m = m_new
        out[..., q0:q1, :] = acc / np.where(l_sum == 0, 1.0, l_sum)
    return out.astype(q.dtype)


# --- kernel: attend_halves_lse_merge ---
def attend_halves_lse_merge(q, k, v, mask=None, scale=None):
    """Keys split in two halves; each half's normalised output and log-sum-exp are merged."""
    d = q.shape[-1]
    sk = k.shape[-2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    s = np.matmul(q.astype(np.float64), np.swapaxes(k.astype(np.float64), -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    vv = v.astype(np.float64)
    half = max(1, sk // 2)
    parts = []
    for a, b in ((0, half), (half, sk)):
        if a >= b:
            continue
        blk = s[..., a:b]
        mx = blk.max(axis=-1, keepdims=True)
        mx_safe = np.where(np.isfinite(mx), mx, 0.0)
        e = np.exp(blk - mx_safe)
        tot = e.sum(axis=-1, keepdims=True)
        with np.errstate(divide="ignore"):
            lse = np.log(tot) + mx_safe
        o = np.matmul(e / np.where(tot == 0, 1.0, tot), vv[..., a:b, :])
        parts.append((lse, o))
    lse_all = parts[0][0] if len(parts) == 1 else np.logaddexp(parts[0][0], parts[1][0])
    lse_safe = np.where(np.isfinite(lse_all), lse_all, 0.0)
    out = 0.0
    for lse, o in parts:
        w = np.where(np.isfinite(lse_all), np.exp(lse - lse_safe), 0.0)
        out = out + w * o
    return np.asarray(out).astype(q.dtype)


CATALOG = [
    dict(name="np-dnabert-extended-mask-typo", api="refimpl", fn="bert_extended_mask_typo", correct=False,
         bug="keep-mask-added-as-bias",
         parameter="the -10000 additive mask is built into a misspelled variable and the raw 1/0 keep-mask is "
                   "returned and added to the scores (kept keys +1, dropped keys +0), so dropped keys are "
                   "attended. Triggers: a mask with a row holding both kept and dropped keys",
         source="jerryji1993/DNABERT#102", report="https://github.com/jerryji1993/DNABERT/issues/102",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-aiayn-masked-row-nan", api="refimpl", fn="masked_fill_inf_softmax", correct=False,
         bug="fully-masked-row-nan",
         parameter="dropped keys are filled with -inf and the softmax subtracts the row max with no guard, so a "
                   "row with no kept key gives -inf - -inf = NaN instead of zeros. Triggers: a mask with a row "
                   "that has no kept key",
         source="jadore801120/attention-is-all-you-need-pytorch#5",
         report="https://github.com/jadore801120/attention-is-all-you-need-pytorch/issues/5",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-minimind-mask-not-passed", api="refimpl", fn="padding_mask_never_set", correct=False,
         bug="mask-ignored",
         parameter="the forward accepts the padding mask but calls the attention with attention_mask=None, so "
                   "every key is attended. Triggers: a mask with at least one dropped key",
         source="jingyaogong/minimind-v#76", report="https://github.com/jingyaogong/minimind-v/issues/76",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-doubleattention-softmax-axis", api="refimpl", fn="double_attention_softmax_dim", correct=False,
         bug="softmax-over-query-axis",
         parameter="the folded (B*H, Sq, Sk) scores are normalised over axis 1, the query axis, instead of the "
                   "key axis. Triggers: always",
         source="gjylt/DoubleAttentionNet#3", report="https://github.com/gjylt/DoubleAttentionNet/issues/3",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-gazelle-unfold-head-major", api="refimpl", fn="mha_unfold_heads_batch_order", correct=False,
         bug="output-batch-head-order",
         parameter="4-D inputs are folded batch-major (b * H + h) but the output is unfolded as (H, B) and "
                   "transposed, so (batch, head) slices receive another slice's result. Triggers: 4-D input with "
                   "B > 1 and H > 1",
         source="gazelle93/Transformer-Various-Positional-Encoding#1",
         report="https://github.com/gazelle93/Transformer-Various-Positional-Encoding/issues/1",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-turbo-mask-one-penalised", api="refimpl", fn="turbo_bert_mask_value_one", correct=False,
         bug="mask-polarity-inverted",
         parameter="the 1/0 mask is turned into a bias as mask * -10000 instead of (1 - mask) * -10000, so the "
                   "valid positions are suppressed and the masked ones attended. Triggers: a mask with a row "
                   "holding both kept and dropped keys",
         source="Tencent/TurboTransformers#95", report="https://github.com/Tencent/TurboTransformers/pull/95",
         dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-qchunks-online", api="refimpl", fn="attend_qchunks_online", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
    dict(name="np-halves-lse-merge", api="refimpl", fn="attend_halves_lse_merge", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "dv-ne-d"]),
]
