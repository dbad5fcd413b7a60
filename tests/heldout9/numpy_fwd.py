"""Held-out attention kernels, API `refimpl`: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); `mask` None or a bool keep-mask (True = attend)
broadcastable to (..., Sq, Sk); `scale=None` means 1/sqrt(D). Returns (..., Sq, Dv) in the input dtype;
a row with no kept key returns zeros. Inputs are never modified.

Each broken kernel carries exactly one BUG comment, on the line holding its mistake; see CATALOG.
"""
import math

import numpy as np

LOG2E = 1.4426950408889634


def _keep_mask(mask, lead, sq, sk):
    """The keep-mask broadcast to lead + (Sq, Sk) (all True when mask is None)."""
    if mask is None:
        return np.ones(lead + (sq, sk), dtype=bool)
    return np.broadcast_to(np.asarray(mask, dtype=bool), lead + (sq, sk))


def _default_scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


# --- kernel: attend_vit_feats_scale ---
# A ViT-style multi-head self-attention block ported to take per-head arrays (B, H, S, D): the module
# kept its `sqrt_d` attribute computed from the block's total feature width.

def attend_vit_feats_scale(q, k, v, mask=None, scale=None):
    dtype = q.dtype
    heads = q.shape[-3] if q.ndim == 4 else 1
    feats = heads * q.shape[-1]
    sqrt_d = feats ** 0.5  # BUG: total feature width (heads * head_dim) instead of the per-head dim
    inv = (1.0 / sqrt_d) if scale is None else float(scale)
    lead = q.shape[:-2]
    keep = _keep_mask(mask, lead, q.shape[-2], k.shape[-2])
    score = (q @ np.swapaxes(k, -1, -2)) * dtype.type(inv)
    score = np.where(keep, score, -np.inf)
    row_max = score.max(axis=-1, keepdims=True)
    alive = np.isfinite(row_max)
    p = np.exp(score - np.where(alive, row_max, 0.0))
    denom = p.sum(axis=-1, keepdims=True)
    p = p / np.where(alive, denom, 1.0)
    out = p @ v
    return np.where(alive, out, 0.0).astype(dtype)


# --- kernel: attend_f16_rowsum ---
# A "fused" softmax written to run in the narrow dtype of half-precision models: the exponentials
# are produced in the working precision but summed sequentially into a compact half buffer.

def attend_f16_rowsum(q, k, v, mask=None, scale=None):
    dtype = q.dtype
    sc = _default_scale(q, scale)
    lead = q.shape[:-2]
    keep = _keep_mask(mask, lead, q.shape[-2], k.shape[-2])
    s = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * dtype.type(sc), -np.inf)
    m = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(m)
    e = np.exp(s - np.where(alive, m, 0.0))
    acc = np.zeros(e.shape[:-1], dtype=np.float16)  # BUG: softmax row sum accumulated in float16
    for j in range(e.shape[-1]):
        acc += e[..., j]
    denom = acc.astype(dtype)[..., None]
    out = (e @ v) / np.where(alive, denom, 1.0)
    return np.where(alive, out, 0.0).astype(dtype)


# --- kernel: attend_padded_key_tiles ---
# Paged/tiled kernel: keys and values are laid out in fixed tiles of BLOCK_N; the last tile of a
# sequence whose length is not a multiple of BLOCK_N is zero-filled, and a per-tile validity mask is
# merged into the keep-mask before the online softmax.

def attend_padded_key_tiles(q, k, v, mask=None, scale=None):
    BLOCK_N = 32
    dtype = q.dtype
    sc = dtype.type(_default_scale(q, scale))
    lead = q.shape[:-2]
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    keep = _keep_mask(mask, lead, sq, sk)
    pad = (-sk) % BLOCK_N
    widths = [(0, 0)] * (k.ndim - 2) + [(0, pad), (0, 0)]
    kp = np.pad(k, widths)
    vp = np.pad(v, widths)
    keep_p = np.pad(keep, [(0, 0)] * len(lead) + [(0, 0), (0, pad)],
                    constant_values=True)  # BUG: tail slots of the last tile left visible (should be False)
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    for n0 in range(0, sk + pad, BLOCK_N):
        s = (q @ np.swapaxes(kp[..., n0:n0 + BLOCK_N, :], -1, -2)) * sc
        s = np.where(keep_p[..., n0:n0 + BLOCK_N], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.exp(m_i - m_safe)
        p = np.exp(s - m_safe)
        l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + p @ vp[..., n0:n0 + BLOCK_N, :]
        m_i = m_new
    out = acc / np.where(l_i > 0, l_i, 1.0)
    return np.where(l_i > 0, out, 0.0).astype(dtype)


# --- kernel: attend_varlen_fastpath ---
# Two paths: a key-padding mask (one row for every query, True...True False...False) goes to a packed
# "varlen" path that slices each sequence to its key length (as cu_seqlens would); any other mask
# goes to the dense masked path.

def attend_varlen_fastpath(q, k, v, mask=None, scale=None):
    dtype = q.dtype
    sc = dtype.type(_default_scale(q, scale))
    lead = q.shape[:-2]
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.ndim >= 2 and m.shape[-2] == 1 and bool(np.all(m[..., :-1] >= m[..., 1:])):
            seqlens_k = sk - m.sum(axis=-1)  # BUG: counts the padded positions (True read as "masked out")
            seqlens_k = np.broadcast_to(seqlens_k[..., 0], lead)
            out = np.zeros(lead + (sq, dv), dtype=dtype)
            for idx in np.ndindex(*lead):
                n = int(seqlens_k[idx])
                if n == 0:
                    continue
                s = (q[idx] @ k[idx][:n].T) * sc
                s = s - s.max(axis=-1, keepdims=True)
                p = np.exp(s)
                out[idx] = (p / p.sum(axis=-1, keepdims=True)) @ v[idx][:n]
            return out
    keep = _keep_mask(mask, lead, sq, sk)
    s = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * sc, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    alive = np.isfinite(mx)
    p = np.exp(s - np.where(alive, mx, 0.0))
    out = (p @ v) / np.where(alive, p.sum(axis=-1, keepdims=True), 1.0)
    return np.where(alive, out, 0.0).astype(dtype)


# --- kernel: attend_naive_softmax ---
# The attention-weights shader computes softmax as exp(x) / sum(exp(x)), with -inf for dropped keys
# and an explicit zero for rows that have no key.

def attend_naive_softmax(q, k, v, mask=None, scale=None):
    dtype = q.dtype
    sc = dtype.type(_default_scale(q, scale))
    lead = q.shape[:-2]
    keep = _keep_mask(mask, lead, q.shape[-2], k.shape[-2])
    x = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * sc, -np.inf)
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)  # BUG: no max subtraction, exp overflows for scores above ~709 (float64) / ~88.7 (float32)
        total = e.sum(axis=-1, keepdims=True)
        w = np.where(total > 0, e / np.where(total > 0, total, 1.0), 0.0)
    return (w @ v).astype(dtype)


# --- kernel: attend_bmm_tiled_mask ---
# Heads folded into the batch axis (B*H, S, D) for batched matmuls, as nn.MultiheadAttention does;
# a per-sample mask with a singleton head axis is expanded to B*H masks.

def attend_bmm_tiled_mask(q, k, v, mask=None, scale=None):
    dtype = q.dtype
    sc = dtype.type(_default_scale(q, scale))
    lead = q.shape[:-2]
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    q3 = q.reshape(-1, sq, d)
    k3 = k.reshape(-1, sk, d)
    v3 = v.reshape(-1, sk, dv)
    if mask is None:
        m3 = np.ones((q3.shape[0], sq, sk), dtype=bool)
    else:
        mask = np.asarray(mask, dtype=bool)
        if (q.ndim == 4 and mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[0] == q.shape[0]
                and q.shape[0] > 1 and q.shape[1] > 1):
            per_sample = np.broadcast_to(mask, (q.shape[0], 1, sq, sk)).reshape(q.shape[0], sq, sk)
            m3 = np.tile(per_sample, (q.shape[1], 1, 1))  # BUG: tiles [M0, M1, M0, M1]; rows are b * H + h
        else:
            m3 = np.broadcast_to(mask, lead + (sq, sk)).reshape(-1, sq, sk)
    scores = np.matmul(q3, k3.transpose(0, 2, 1)) * sc
    scores = np.where(m3, scores, -np.inf)
    mx = scores.max(axis=-1, keepdims=True)
    alive = np.isfinite(mx)
    w = np.exp(scores - np.where(alive, mx, 0.0))
    w = w / np.where(alive, w.sum(axis=-1, keepdims=True), 1.0)
    out = np.where(alive, np.matmul(w, v3), 0.0)
    return out.reshape(lead + (sq, dv)).astype(dtype)


# --- kernel: attend_sliced_heads ---
# Attention slicing (to bound memory): the folded (batch * heads) axis is processed slice_size rows
# at a time into a preallocated zero output.

def attend_sliced_heads(q, k, v, mask=None, scale=None):
    slice_size = 4
    dtype = q.dtype
    sc = dtype.type(_default_scale(q, scale))
    lead = q.shape[:-2]
    sq, d = q.shape[-2:]
    sk, dv = v.shape[-2:]
    q3 = q.reshape(-1, sq, d)
    k3 = k.reshape(-1, sk, d)
    v3 = v.reshape(-1, sk, dv)
    keep = _keep_mask(mask, lead, sq, sk).reshape(-1, sq, sk)
    batch_size_attention = q3.shape[0]
    hidden_states = np.zeros((batch_size_attention, sq, dv), dtype=dtype)
    for i in range(batch_size_attention // slice_size):  # BUG: floor division skips the last partial slice
        start_idx = i * slice_size
        end_idx = (i + 1) * slice_size
        attn = np.matmul(q3[start_idx:end_idx], k3[start_idx:end_idx].transpose(0, 2, 1)) * sc
        attn = np.where(keep[start_idx:end_idx], attn, -np.inf)
        mx = attn.max(axis=-1, keepdims=True)
        alive = np.isfinite(mx)
        attn = np.exp(attn - np.where(alive, mx, 0.0))
        attn = attn / np.where(alive, attn.sum(axis=-1, keepdims=True), 1.0)
        hidden_states[start_idx:end_idx] = np.where(alive, np.matmul(attn, v3[start_idx:end_idx]), 0.0)
    return hidden_states.reshape(lead + (sq, dv))


# --- kernel: attend_online_tiles_48 ---
# Correct: FlashAttention-style online softmax over key tiles of 48 (running max, rescaled sum and
# accumulator), dead rows left at zero.

def attend_online_tiles_48(q, k, v, mask=None, scale=None):
    BLOCK_N = 48
    dtype = q.dtype
    sc = dtype.type(_default_scale(q, scale))
    lead = q.shape[:-2]
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    keep = _keep_mask(mask, lead, sq, sk)
    m_i = np.full(lead + (sq, 1), -np.inf, dtype=dtype)
    l_i = np.zeros(lead + (sq, 1), dtype=dtype)
    acc = np.zeros(lead + (sq, dv), dtype=dtype)
    for n0 in range(0, sk, BLOCK_N):
        s = (q @ np.swapaxes(k[..., n0:n0 + BLOCK_N, :], -1, -2)) * sc
        s = np.where(keep[..., n0:n0 + BLOCK_N], s, -np.inf)
        m_new = np.maximum(m_i, s.max(axis=-1, keepdims=True))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        alpha = np.exp(m_i - m_safe)
        p = np.exp(s - m_safe)
        l_i = l_i * alpha + p.sum(axis=-1, keepdims=True)
        acc = acc * alpha + p @ v[..., n0:n0 + BLOCK_N, :]
        m_i = m_new
    out = acc / np.where(l_i > 0, l_i, 1.0)
    return np.where(l_i > 0, out, 0.0).astype(dtype)


# --- kernel: attend_exp2_two_pass ---
# Correct: two passes in base 2 -- the row max of log2(e)-scaled scores, then exp2 weights and their
# sum -- as exp2-based kernels do (scale and log2(e) folded into one multiplier).

def attend_exp2_two_pass(q, k, v, mask=None, scale=None):
    dtype = q.dtype
    qk_scale = dtype.type(_default_scale(q, scale) * LOG2E)
    lead = q.shape[:-2]
    keep = _keep_mask(mask, lead, q.shape[-2], k.shape[-2])
    s2 = np.where(keep, (q @ np.swapaxes(k, -1, -2)) * qk_scale, -np.inf)
    m2 = s2.max(axis=-1, keepdims=True)
    alive = np.isfinite(m2)
    p = np.exp2(s2 - np.where(alive, m2, 0.0))
    l2 = p.sum(axis=-1, keepdims=True)
    out = (p @ v) / np.where(alive, l2, 1.0)
    return np.where(alive, out, 0.0).astype(dtype)


# --- kernel: attend_split_kv_lse ---
# Correct: keys split into three chunks; each chunk yields a normalised partial output and its
# log-sum-exp, and the partials are merged with weights exp(lse_c - lse) (flash-decoding style).

def attend_split_kv_lse(q, k, v, mask=None, scale=None):
    dtype = q.dtype
    sc = dtype.type(_default_scale(q, scale))
    lead = q.shape[:-2]
    sq, sk, dv = q.shape[-2], k.shape[-2], v.shape[-1]
    keep = _keep_mask(mask, lead, sq, sk)
    bounds = np.linspace(0, sk, 4).astype(int)
    outs, lses = [], []
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        if c1 <= c0:
            continue
        s = np.where(keep[..., c0:c1], (q @ np.swapaxes(k[..., c0:c1, :], -1, -2)) * sc, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        alive = np.isfinite(m)
        p = np.exp(s - np.where(alive, m, 0.0))
        l_c = p.sum(axis=-1, keepdims=True)
        outs.append(np.where(alive, (p @ v[..., c0:c1, :]) / np.where(alive, l_c, 1.0), 0.0))
        with np.errstate(divide="ignore"):
            lses.append(np.where(alive, m + np.log(np.where(alive, l_c, 1.0)), -np.inf))
    lse_all = np.stack(lses)
    lse_max = lse_all.max(axis=0)
    alive = np.isfinite(lse_max)
    base = np.where(alive, lse_max, 0.0)
    w = np.exp(lse_all - base)
    lse = base + np.log(np.where(alive, w.sum(axis=0), 1.0))
    out = np.zeros(lead + (sq, dv), dtype=dtype)
    for o_c, lse_c in zip(outs, lses):
        out = out + np.exp(lse_c - np.where(alive, lse, 0.0)) * o_c
    return np.where(alive, out, 0.0).astype(dtype)


API = "refimpl"
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
    _entry("np-vitcifar-total-feats-scale", "attend_vit_feats_scale", "scale-from-model-width",
           "default scale 1/sqrt(H * D) (total feature width of the block) instead of 1/sqrt(D). "
           "Triggers: scale=None with a 4-D (B, H, S, D) input and H > 1",
           "omihub777/ViT-CIFAR#12", "pull"),
    _entry("np-candle-f16-rowsum", "attend_f16_rowsum", "softmax-denominator-in-fp16",
           "softmax row sum accumulated sequentially in a float16 buffer (each partial sum rounded to half). "
           "Triggers: any row with more than a few kept keys; error grows with the row length (~1e-3 at 50-200 keys)",
           "huggingface/candle#3727", "issues", dtype="float32"),
    _entry("np-simpler-padded-tail-keys", "attend_padded_key_tiles", "padded-tail-keys-unmasked",
           "zero-filled tail slots of the last key tile of 32 are left visible: each adds exp(0 - max) to the "
           "denominator (and nothing to the numerator). Triggers: Sk not a multiple of 32 (negligible when "
           "every row max is far above 0)",
           "hw-native-sys/simpler#72", "pull"),
    _entry("np-te-varlen-inverted-lengths", "attend_varlen_fastpath", "padding-mask-convention-inverted",
           "on the key-padding fast path the key lengths are Sk - sum(mask) (True read as padding) instead of "
           "sum(mask), so each sequence attends to its first (number of padded) keys. Triggers: a right-padded "
           "key mask of shape (..., 1, Sk) whose valid length is not Sk / 2",
           "NVIDIA/TransformerEngine#614", "issues"),
    _entry("np-executorch-naive-softmax", "attend_naive_softmax", "softmax-without-max-subtraction",
           "softmax computed as exp(x) / sum(exp(x)) without subtracting the row max: overflow to inf and NaN. "
           "Triggers: a scaled score above ~709 in float64 (~88.7 in float32) gives NaN; rows whose kept scores "
           "are all below ~-745 underflow to 0 / 0 and come back as zeros",
           "pytorch/executorch#18407", "pull"),
    _entry("np-clip4clip-mask-tiled-heads", "attend_bmm_tiled_mask", "per-sample-mask-tiled-across-heads",
           "per-sample masks (B, 1, Sq, Sk) expanded to the folded B*H axis with tile (repeat) instead of "
           "repeat_interleave: row b*H + h gets sample (b*H + h) % B's mask. Triggers: 4-D input, B > 1, H > 1, "
           "masks that differ between samples",
           "ArrowLuo/CLIP4Clip#22", "issues"),
    _entry("np-diffusers-sliced-floor", "attend_sliced_heads", "sliced-loop-drops-remainder",
           "attention sliced over the folded batch*heads axis in slices of 4 with range(N // 4): the last "
           "partial slice is never computed and stays zero. Triggers: prod(leading dims) not a multiple of 4",
           "huggingface/diffusers#8837", "issues"),
    _entry("np-online-tiles-48", "attend_online_tiles_48"),
    _entry("np-exp2-two-pass", "attend_exp2_two_pass"),
    _entry("np-split-kv-lse", "attend_split_kv_lse"),
]
