"""Held-out attention kernels, API "refimpl" (NumPy).

Every kernel has the signature ``fn(q, k, v, mask=None, scale=None)``:

* q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv) float arrays;
* mask: optional bool KEEP-mask (True = attend), broadcastable to (..., Sq, Sk);
* scale: None means 1/sqrt(D).

The output has shape (..., Sq, Dv) and the input dtype; a row with no kept key
is all zeros.  Broken kernels carry exactly one mistake, marked ``# BUG:``.
"""
import math

import numpy as np


def _scale_of(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _kT(k):
    return np.swapaxes(k, -1, -2)


# ---------------------------------------------------------------------------
# correct kernels
# ---------------------------------------------------------------------------

def eager_attention(q, k, v, mask=None, scale=None):
    """Plain eager attention with a guarded ("safe") softmax."""
    sm_scale = _scale_of(q, scale)
    scores = np.matmul(q, _kT(k)) * sm_scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    has_key = np.isfinite(row_max)
    row_max = np.where(has_key, row_max, 0.0)
    probs = np.exp(scores - row_max)
    denom = probs.sum(axis=-1, keepdims=True)
    out = np.matmul(probs, v) / np.where(denom > 0, denom, 1.0)
    out = np.where(has_key, out, 0.0)
    return out.astype(q.dtype, copy=False)


def blocked_online_attention(q, k, v, mask=None, scale=None, block_n=48):
    """FlashAttention-2 style single pass over key blocks (online softmax)."""
    sm_scale = _scale_of(q, scale)
    Sq, Sk, Dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(mask, lead + (Sq, Sk))
    acc = np.zeros(lead + (Sq, Dv), dtype=q.dtype)
    row_max = np.full(lead + (Sq, 1), -np.inf, dtype=q.dtype)
    row_sum = np.zeros(lead + (Sq, 1), dtype=q.dtype)
    for start in range(0, Sk, block_n):
        stop = min(start + block_n, Sk)
        s = np.matmul(q, _kT(k[..., start:stop, :])) * sm_scale
        if keep is not None:
            s = np.where(keep[..., start:stop], s, -np.inf)
        new_max = np.maximum(row_max, s.max(axis=-1, keepdims=True))
        safe_max = np.where(np.isfinite(new_max), new_max, 0.0)
        alpha = np.exp(row_max - safe_max)
        p = np.exp(s - safe_max)
        row_sum = row_sum * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + np.matmul(p, v[..., start:stop, :])
        row_max = new_max
    out = acc / np.where(row_sum > 0, row_sum, 1.0)
    return out.astype(q.dtype, copy=False)


def split_kv_attention(q, k, v, mask=None, scale=None, chunk=64):
    """Split-K (flash-decoding style): per-chunk output + LSE, then merge."""
    sm_scale = _scale_of(q, scale)
    Sq, Sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(mask, lead + (Sq, Sk))
    outs, lses = [], []
    for start in range(0, Sk, chunk):
        stop = min(start + chunk, Sk)
        s = np.matmul(q, _kT(k[..., start:stop, :])) * sm_scale
        if keep is not None:
            s = np.where(keep[..., start:stop], s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        m_safe = np.where(np.isfinite(m), m, 0.0)
        p = np.exp(s - m_safe)
        l = p.sum(axis=-1, keepdims=True)
        outs.append(np.matmul(p, v[..., start:stop, :]) / np.where(l > 0, l, 1.0))
        with np.errstate(divide="ignore"):
            lses.append(np.where(l > 0, m_safe + np.log(np.where(l > 0, l, 1.0)), -np.inf))
    lse = np.stack(lses)                      # (n_split, ..., Sq, 1)
    lse_max = lse.max(axis=0)
    lse_max = np.where(np.isfinite(lse_max), lse_max, 0.0)
    w = np.exp(lse - lse_max)
    w_sum = w.sum(axis=0)
    out = (w * np.stack(outs)).sum(axis=0) / np.where(w_sum > 0, w_sum, 1.0)
    return out.astype(q.dtype, copy=False)


# ---------------------------------------------------------------------------
# broken kernels
# ---------------------------------------------------------------------------

def finite_fill_attention(q, k, v, mask=None, scale=None):
    sm_scale = _scale_of(q, scale)
    scores = np.matmul(q, _kT(k)) * sm_scale
    if mask is not None:
        # BUG: masked scores filled with finfo.min (not -inf) and empty rows are
        # never zeroed: a fully masked row becomes a uniform average of v.
        scores = np.where(mask, scores, np.finfo(scores.dtype).min)
    scores = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs = probs / probs.sum(axis=-1, keepdims=True)
    return np.matmul(probs, v).astype(q.dtype, copy=False)


def online_unguarded_max_attention(q, k, v, mask=None, scale=None, block_n=32):
    sm_scale = _scale_of(q, scale)
    Sq, Sk, Dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(mask, lead + (Sq, Sk))
    acc = np.zeros(lead + (Sq, Dv), dtype=q.dtype)
    row_max = np.full(lead + (Sq, 1), -np.inf, dtype=q.dtype)
    row_sum = np.zeros(lead + (Sq, 1), dtype=q.dtype)
    with np.errstate(invalid="ignore"):
        for start in range(0, Sk, block_n):
            stop = min(start + block_n, Sk)
            s = np.matmul(q, _kT(k[..., start:stop, :])) * sm_scale
            if keep is not None:
                s = np.where(keep[..., start:stop], s, -np.inf)
            new_max = np.maximum(row_max, s.max(axis=-1, keepdims=True))
            # BUG: no guard for a running max that is still -inf (all keys seen
            # so far masked): exp(-inf - -inf) = NaN poisons the row.
            alpha = np.exp(row_max - new_max)
            p = np.exp(s - new_max)
            row_sum = row_sum * alpha + p.sum(axis=-1, keepdims=True)
            acc = acc * alpha + np.matmul(p, v[..., start:stop, :])
            row_max = new_max
        ok = row_sum > 0
        out = np.where(ok, acc / np.where(ok, row_sum, 1.0), 0.0)
    return out.astype(q.dtype, copy=False)


def online_inverted_rescale_attention(q, k, v, mask=None, scale=None, block_n=64):
    sm_scale = _scale_of(q, scale)
    Sq, Sk, Dv = q.shape[-2], k.shape[-2], v.shape[-1]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(mask, lead + (Sq, Sk))
    acc = np.zeros(lead + (Sq, Dv), dtype=q.dtype)
    row_max = np.full(lead + (Sq, 1), -np.inf, dtype=q.dtype)
    row_sum = np.zeros(lead + (Sq, 1), dtype=q.dtype)
    for start in range(0, Sk, block_n):
        stop = min(start + block_n, Sk)
        s = np.matmul(q, _kT(k[..., start:stop, :])) * sm_scale
        if keep is not None:
            s = np.where(keep[..., start:stop], s, -np.inf)
        new_max = np.maximum(row_max, s.max(axis=-1, keepdims=True))
        safe_new = np.where(np.isfinite(new_max), new_max, 0.0)
        safe_old = np.where(np.isfinite(row_max), row_max, safe_new)
        p = np.exp(s - safe_new)
        row_sum = row_sum * np.exp(safe_old - safe_new) + p.sum(axis=-1, keepdims=True)
        # BUG: accumulator rescaled by diag(exp(m_old - m_new))^-1 instead of
        # diag(exp(m_old - m_new)) (only matters once a second key block arrives).
        acc = acc * np.exp(safe_new - safe_old) + np.matmul(p, v[..., start:stop, :])
        row_max = new_max
    out = acc / np.where(row_sum > 0, row_sum, 1.0)
    return out.astype(q.dtype, copy=False)


def flattened_heads_attention(q, k, v, mask=None, scale=None):
    sm_scale = _scale_of(q, scale)
    lead = q.shape[:-2]
    Sq, D = q.shape[-2:]
    Sk, Dv = k.shape[-2], v.shape[-1]
    qf = q.reshape(-1, Sq, D)                 # (B*H, Sq, D), batch-major
    kf = np.broadcast_to(k, lead + k.shape[-2:]).reshape(-1, Sk, D)
    vf = np.broadcast_to(v, lead + v.shape[-2:]).reshape(-1, Sk, Dv)
    scores = np.matmul(qf, _kT(kf)) * sm_scale
    if mask is not None:
        mask = np.asarray(mask)
        if len(lead) == 2 and mask.ndim == 4 and mask.shape[1] == 1:
            # per-sequence mask shared by all heads
            # BUG: np.tile repeats the batch block head-major (h*B + b) while
            # the flattened q/k/v are batch-major (b*H + h).
            mf = np.tile(mask[:, 0], (lead[1], 1, 1))
        else:
            mf = np.broadcast_to(mask, lead + (Sq, Sk)).reshape(-1, Sq, Sk)
        scores = np.where(mf, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    has_key = np.isfinite(row_max)
    probs = np.exp(scores - np.where(has_key, row_max, 0.0))
    denom = probs.sum(axis=-1, keepdims=True)
    out = np.matmul(probs, vf) / np.where(denom > 0, denom, 1.0)
    out = np.where(has_key, out, 0.0)
    return out.reshape(lead + (Sq, Dv)).astype(q.dtype, copy=False)


def value_dim_scale_attention(q, k, v, mask=None, scale=None):
    # BUG: default softmax scale taken from the value head dim (1/sqrt(Dv))
    # instead of the query/key head dim.
    sm_scale = 1.0 / math.sqrt(v.shape[-1]) if scale is None else float(scale)
    scores = np.matmul(q, _kT(k)) * sm_scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    has_key = np.isfinite(row_max)
    probs = np.exp(scores - np.where(has_key, row_max, 0.0))
    denom = probs.sum(axis=-1, keepdims=True)
    out = np.matmul(probs, v) / np.where(denom > 0, denom, 1.0)
    return np.where(has_key, out, 0.0).astype(q.dtype, copy=False)


def bool_mask_as_bias_attention(q, k, v, mask=None, scale=None):
    sm_scale = _scale_of(q, scale)
    scores = np.matmul(q, _kT(k)) * sm_scale
    if mask is not None:
        # BUG: the boolean keep-mask is added like an additive float mask
        # (kept keys get +1.0, masked keys are left untouched).
        scores = scores + np.asarray(mask).astype(scores.dtype)
    row_max = scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores - row_max)
    denom = probs.sum(axis=-1, keepdims=True)
    return (np.matmul(probs, v) / denom).astype(q.dtype, copy=False)


def half_rowsum_attention(q, k, v, mask=None, scale=None):
    sm_scale = _scale_of(q, scale)
    scores = np.matmul(q, _kT(k)) * sm_scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    has_key = np.isfinite(row_max)
    probs = np.exp(scores - np.where(has_key, row_max, 0.0))
    # BUG: the softmax denominator is accumulated sequentially in a float16
    # accumulator (the storage dtype of the fused kernel), then widened.
    denom = np.add.accumulate(probs.astype(np.float16), axis=-1,
                              dtype=np.float16)[..., -1:].astype(q.dtype)
    out = np.matmul(probs, v) / np.where(denom > 0, denom, 1.0)
    return np.where(has_key, out, 0.0).astype(q.dtype, copy=False)


def split_kv_log2_lse_attention(q, k, v, mask=None, scale=None, chunk=64):
    sm_scale = _scale_of(q, scale)
    log2e = 1.0 / math.log(2.0)
    Sq, Sk = q.shape[-2], k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    keep = None if mask is None else np.broadcast_to(mask, lead + (Sq, Sk))
    outs, lses = [], []
    for start in range(0, Sk, chunk):
        stop = min(start + chunk, Sk)
        # exp2-based partial softmax: scores pre-multiplied by log2(e)
        s2 = np.matmul(q, _kT(k[..., start:stop, :])) * (sm_scale * log2e)
        if keep is not None:
            s2 = np.where(keep[..., start:stop], s2, -np.inf)
        m = s2.max(axis=-1, keepdims=True)
        m_safe = np.where(np.isfinite(m), m, 0.0)
        p = np.exp2(s2 - m_safe)
        l = p.sum(axis=-1, keepdims=True)
        outs.append(np.matmul(p, v[..., start:stop, :]) / np.where(l > 0, l, 1.0))
        with np.errstate(divide="ignore"):
            lses.append(np.where(l > 0, m_safe + np.log2(np.where(l > 0, l, 1.0)), -np.inf))
    lse = np.stack(lses)                      # base-2 log-sum-exp per split
    lse_max = lse.max(axis=0)
    lse_max = np.where(np.isfinite(lse_max), lse_max, 0.0)
    # BUG: the merge weights use the natural exp on base-2 LSE values
    # (should be exp2), so splits are mis-weighted whenever there are >1.
    w = np.exp(lse - lse_max)
    w_sum = w.sum(axis=0)
    out = (w * np.stack(outs)).sum(axis=0) / np.where(w_sum > 0, w_sum, 1.0)
    return out.astype(q.dtype, copy=False)


def padded_tail_block_attention(q, k, v, mask=None, scale=None, block_n=64):
    sm_scale = _scale_of(q, scale)
    Sq, Sk = q.shape[-2], k.shape[-2]
    if Sk <= block_n:                         # short KV: single dense tile
        return eager_attention(q, k, v, mask=mask, scale=scale)
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    n_blocks = -(-Sk // block_n)
    pad = n_blocks * block_n - Sk
    k_p = np.concatenate([np.broadcast_to(k, lead + k.shape[-2:]),
                          np.zeros(lead + (pad, k.shape[-1]), k.dtype)], axis=-2)
    v_p = np.concatenate([np.broadcast_to(v, lead + v.shape[-2:]),
                          np.zeros(lead + (pad, v.shape[-1]), v.dtype)], axis=-2)
    keep = None
    if mask is not None:
        keep = np.concatenate([np.broadcast_to(mask, lead + (Sq, Sk)),
                               np.zeros(lead + (Sq, pad), bool)], axis=-1)
    # BUG: without a user mask the zero-filled tail keys of the last block are
    # not masked out: they score 0 and receive exp(0 - max) softmax weight.
    scores = np.matmul(q, _kT(k_p)) * sm_scale
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    row_max = scores.max(axis=-1, keepdims=True)
    has_key = np.isfinite(row_max)
    probs = np.exp(scores - np.where(has_key, row_max, 0.0))
    denom = probs.sum(axis=-1, keepdims=True)
    out = np.matmul(probs, v_p) / np.where(denom > 0, denom, 1.0)
    return np.where(has_key, out, 0.0).astype(q.dtype, copy=False)


_ALL = ["mask", "dv-ne-d"]


def _entry(name, fn, correct, bug, parameter, source, report, dtype="float64",
           features=_ALL):
    return dict(name=name, api="refimpl", fn=fn, correct=correct, bug=bug,
                parameter=parameter, source=source, report=report, dtype=dtype,
                features=list(features))


CATALOG = [
    _entry("np_eager_safe_softmax", "eager_attention", True, None, None, None, None),
    _entry("np_online_block48", "blocked_online_attention", True, None, None,
           None, None),
    _entry("np_split_kv_lse_merge", "split_kv_attention", True, None, None,
           None, None),
    _entry("np_finite_fill_empty_rows", "finite_fill_attention", False,
           "finite-fill-fully-masked-row-uniform",
           "fill=finfo.min, empty rows not zeroed",
           "pytorch/pytorch#103749",
           "https://github.com/pytorch/pytorch/issues/103749"),
    _entry("np_online_unguarded_max", "online_unguarded_max_attention", False,
           "online-softmax-inf-minus-inf-nan",
           "block_n=32, running max -inf unguarded",
           "flashinfer-ai/flashinfer#1178",
           "https://github.com/flashinfer-ai/flashinfer/pull/1178"),
    _entry("np_online_inverted_rescale", "online_inverted_rescale_attention", False,
           "online-softmax-inverted-acc-rescale",
           "block_n=64, acc *= exp(m_new - m_old)",
           "Dao-AILab/flash-attention#991",
           "https://github.com/Dao-AILab/flash-attention/issues/991"),
    _entry("np_flattened_mask_tile", "flattened_heads_attention", False,
           "mask-tiled-head-major-over-flattened-batch",
           "np.tile(mask, (H,1,1)) vs batch-major b*H+h",
           "lsdefine/attention-is-all-you-need-keras#36",
           "https://github.com/lsdefine/attention-is-all-you-need-keras/issues/36"),
    _entry("np_scale_from_dv", "value_dim_scale_attention", False,
           "default-scale-from-value-dim", "1/sqrt(Dv)",
           "lucidrains/vit-pytorch#65",
           "https://github.com/lucidrains/vit-pytorch/issues/65"),
    _entry("np_bool_mask_added", "bool_mask_as_bias_attention", False,
           "bool-mask-added-as-additive-bias", "scores + mask.astype(float)",
           "huggingface/transformers#41443",
           "https://github.com/huggingface/transformers/pull/41443"),
    _entry("np_half_rowsum", "half_rowsum_attention", False,
           "float16-softmax-denominator-accumulator", "rowsum accumulated in float16",
           "sonos/tract#2586", "https://github.com/sonos/tract/pull/2586",
           dtype="float32"),
    _entry("np_split_kv_log2_lse", "split_kv_log2_lse_attention", False,
           "split-kv-merge-lse-base-mismatch", "chunk=64, log2 LSE merged with exp",
           "flashinfer-ai/flashinfer#58",
           "https://github.com/flashinfer-ai/flashinfer/pull/58"),
    _entry("np_padded_tail_block", "padded_tail_block_attention", False,
           "zero-padded-tail-keys-not-masked",
           "block_n=64, Sk % 64 != 0 and mask=None",
           "flashinfer-ai/flashinfer#5090",
           "https://github.com/flashinfer-ai/flashinfer/pull/5090"),
]
