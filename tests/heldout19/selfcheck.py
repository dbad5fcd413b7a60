"""Self-check of the heldout19 kernels: references, conformance, triggers, CATALOG and `# BUG:` markers.

Run with the repository's Python: `/work/main/.venv/bin/python -B tests/heldout19/selfcheck.py`.
Exit status 0 when everything holds, 1 on any problem.
"""
import sys

sys.dont_write_bytecode = True

import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-5}
DIFF = {"float64": 1e-8, "float32": 1e-4}
DTYPES = ("float64", "float32")
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}

# Cases on which each broken kernel differs from its reference (in its CATALOG dtype); on every other case
# of its module it conforms in float64 and float32. Correct kernels have no entry.
TRIGGERS = {
    "scaled_dot_product_masked_fill": ["np-01", "np-03", "np-12"],
    "fast_softmax_first_element": ["np-01", "np-02", "np-04", "np-07", "np-08", "np-10", "np-12"],
    "padding_mask_expand_dims": ["np-03", "np-04", "np-09"],
    "pairwise_mask_from_seq_id": ["np-03", "np-09"],
    "self_attention_diag_mask": ["np-00", "np-01", "np-02", "np-03", "np-04", "np-05", "np-06", "np-07", "np-08",
                                 "np-09", "np-10", "np-11", "np-12"],
    "episode_attention_softmax_dim": ["np-00", "np-01", "np-02", "np-03", "np-04", "np-05", "np-06", "np-07",
                                      "np-08", "np-09", "np-10", "np-11", "np-12"],
    "sdpa_masked_fill_not_inplace": ["sdpa-04", "sdpa-05", "sdpa-08", "sdpa-11", "sdpa-14"],
    "sdpa_micro_causal_paged_only": ["sdpa-01", "sdpa-02", "sdpa-03", "sdpa-09"],
    "sdpa_decomposed_bool_mask_nan": ["sdpa-04", "sdpa-05", "sdpa-07"],
    "sdpa_default_softmax_scale": ["sdpa-03", "sdpa-11", "sdpa-12"],
    "sdpa_broadcast_mask_head_index": ["sdpa-05", "sdpa-06", "sdpa-08", "sdpa-11", "sdpa-13", "sdpa-14"],
    "sdpa_padding_scores_zeroed": ["sdpa-04", "sdpa-05", "sdpa-08", "sdpa-11", "sdpa-14"],
    "flash_swa_inclusive_window": ["fl-04", "fl-06", "fl-07", "fl-14", "fl-15"],
    "flash_alibi_local_slopes": ["fl-09", "fl-10", "fl-11", "fl-14", "fl-18"],
    "flash_local_softcap_config": ["fl-00", "fl-01", "fl-02", "fl-03", "fl-04", "fl-05", "fl-06", "fl-07", "fl-10",
                                   "fl-11", "fl-12", "fl-13", "fl-14", "fl-15", "fl-16", "fl-17", "fl-18"],
    "flash_causal_mask_offset_abs": ["fl-02", "fl-06", "fl-15", "fl-18"],
    "flash_tiled_causal_condition": ["fl-01", "fl-02", "fl-03", "fl-07", "fl-09", "fl-11", "fl-13", "fl-15", "fl-17"],
    "flash_gguf_kv_head_order": ["fl-03", "fl-11", "fl-12", "fl-16", "fl-18"],
    "bwd_softmax_block_acc_schedule": ["bw-00", "bw-01", "bw-02", "bw-03", "bw-04", "bw-05", "bw-06", "bw-07",
                                       "bw-08"],
    "bwd_preprocess_dpsum_stale_dout": ["bw-00", "bw-01", "bw-02", "bw-03", "bw-04", "bw-05", "bw-06", "bw-07",
                                        "bw-08"],
    "bwd_dkdv_store_strides": ["bw-00", "bw-02", "bw-06", "bw-07"],
    "bwd_mask_op_grad_fill": ["bw-01", "bw-02", "bw-03", "bw-05", "bw-08"],
    "bwd_dq_acc_group_layout": ["bw-01", "bw-02", "bw-04", "bw-06", "bw-08"],
    "bwd_emb_size_scaling": ["bw-02", "bw-03", "bw-06", "bw-07"],
}


# ----------------------------------------------------------------------------------------------------------
# float64 references written from the contracts
# ----------------------------------------------------------------------------------------------------------
def _softmax_rows(s):
    """Softmax over the last axis; a row of -inf (no visible key) gives zeros."""
    live = np.isfinite(s).any(axis=-1, keepdims=True)
    m = np.where(live, np.max(np.where(np.isfinite(s), s, -np.inf), axis=-1, keepdims=True), 0.0)
    e = np.where(np.isneginf(s), 0.0, np.exp(s - m))
    return e / np.where(live, e.sum(axis=-1, keepdims=True), 1.0)


def ref_numpy(q, k, v, mask=None, scale=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    return np.matmul(_softmax_rows(s), v)


def ref_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    if enable_gqa and k.shape[1] != q.shape[1]:
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("bhqd,bhkd->bhqk", q, k) * scale
    lq, lk = s.shape[-2:]
    if is_causal:
        i, j = np.arange(lq)[:, None], np.arange(lk)[None, :]
        s = np.where(j <= i, s, -np.inf)
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            s = np.where(np.broadcast_to(attn_mask, s.shape), s, -np.inf)
        else:
            s = s + attn_mask.astype(np.float64)
    return np.einsum("bhqk,bhkd->bhqd", _softmax_rows(s), v)


def flash_visible(sq, sk, causal, window):
    off = sk - sq
    vis = np.ones((sq, sk), dtype=bool)
    left, right = window
    if causal:
        right = 0
    for i in range(sq):
        for j in range(sk):
            if left >= 0 and j < i + off - left:
                vis[i, j] = False
            if right >= 0 and j > i + off + right:
                vis[i, j] = False
    return vis


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    b, sq, hq, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    g = hq // hk
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    vis = flash_visible(sq, sk, causal, window_size)
    out = np.zeros((b, sq, hq, v.shape[-1]))
    dist = np.abs((np.arange(sq)[:, None] + sk - sq) - np.arange(sk)[None, :]).astype(np.float64)
    for bi in range(b):
        for h in range(hq):
            s = q[bi, :, h] @ k[bi, :, h // g].T * scale
            if softcap > 0:
                s = softcap * np.tanh(s / softcap)
            if alibi_slopes is not None:
                sl = np.asarray(alibi_slopes, dtype=np.float64).reshape(-1, hq)
                s = s - sl[bi if sl.shape[0] > 1 else 0, h] * dist
            s = np.where(vis, s, -np.inf)
            out[bi, :, h] = _softmax_rows(s) @ v[bi, :, h // g]
    return out


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    q, k, v, d_out = (np.asarray(x, dtype=np.float64) for x in (q, k, v, d_out))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.broadcast_to(mask, s.shape), s, -np.inf)
    p = _softmax_rows(s)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True))
    dq = np.matmul(ds, k) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    return dq, numpy_bwd._sum_to(dk, k.shape), numpy_bwd._sum_to(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    """Independent check of ref_bwd: torch autograd through a masked softmax attention (float64)."""
    qt, kt, vt = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(qt, kt.transpose(-1, -2)) * scale
    keep = torch.ones(s.shape, dtype=torch.bool) if mask is None else torch.tensor(np.broadcast_to(mask, s.shape))
    row = keep.any(dim=-1, keepdim=True)
    s = torch.where(keep, s, torch.full_like(s, float("-inf")))
    s = torch.where(row, s, torch.zeros_like(s))
    p = torch.softmax(s, dim=-1) * row
    o = torch.matmul(p, vt)
    (o * torch.tensor(d_out)).sum().backward()
    return qt.grad.numpy(), kt.grad.numpy(), vt.grad.numpy()


# ----------------------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------------------
def _rng(seed):
    return np.random.default_rng(seed)


def _qkv(rng, lead_q, sq, sk, d, dv, lead_kv=None, amp=1.0):
    lead_kv = lead_q if lead_kv is None else lead_kv
    q = rng.standard_normal(lead_q + (sq, d)) * amp
    k = rng.standard_normal(lead_kv + (sk, d)) * amp
    v = rng.standard_normal(lead_kv + (sk, dv))
    return q, k, v


def _random_mask(rng, shape, p_keep=0.7, dead_rows=()):
    m = rng.random(shape) < p_keep
    m[..., :, 0] |= ~m.any(axis=-1)
    for idx in dead_rows:
        m[idx] = False
    return m


def _padding_mask(lengths, sk, left=False):
    m = np.zeros((len(lengths), 1, 1, sk), dtype=bool)
    for b, n in enumerate(lengths):
        if left:
            m[b, 0, 0, sk - n:] = True
        else:
            m[b, 0, 0, :n] = True
    return m


def _band(sq, sk, lo, hi):
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    return (j >= i - lo) & (j <= i + hi)


def numpy_cases():
    cases = []
    r = _rng(190)
    q, k, v = _qkv(r, (), 7, 20, 16, 12)
    cases.append(dict(id="np-00", q=q, k=k, v=v, mask=None, scale=None, note="2-D Sq 7 Sk 20 D 16/12"))
    q, k, v = _qkv(r, (3,), 33, 40, 24, 20)
    m = _random_mask(r, (3, 33, 40), dead_rows=[(1, 5)])
    cases.append(dict(id="np-01", q=q, k=k, v=v, mask=m, scale=None, note="3-D random mask, dead row"))
    q, k, v = _qkv(r, (2, 3), 50, 64, 32, 40)
    m = np.stack([np.stack([_band(50, 64, 4 + 3 * h, 2 + h) for h in range(3)]) for _ in range(2)])
    cases.append(dict(id="np-02", q=q, k=k, v=v, mask=m, scale=None, note="4-D per-head bands"))
    q, k, v = _qkv(r, (2, 4), 45, 45, 16, 16)
    cases.append(dict(id="np-03", q=q, k=k, v=v, mask=_padding_mask([30, 0], 45), scale=None,
                      note="right padding (B,1,1,Sk), zero-length sequence, Sq == Sk"))
    q, k, v = _qkv(r, (2, 2), 1, 77, 24, 12)
    cases.append(dict(id="np-04", q=q, k=k, v=v, mask=_padding_mask([77, 50], 77, left=True), scale=None,
                      note="left padding, Sq 1"))
    q, k, v = _qkv(r, (1, 2), 100, 100, 64, 48)
    cases.append(dict(id="np-05", q=q, k=k, v=v, mask=_band(100, 100, 200, 0)[None, None], scale=0.3,
                      note="top-left causal mask, scale 0.3"))
    q, k, v = _qkv(r, (3,), 129, 31, 8, 8)
    cases.append(dict(id="np-06", q=q, k=k, v=v, mask=None, scale=1.0, note="3-D Sq 129 Sk 31 scale 1"))
    q, k, v = _qkv(r, (2, 2), 40, 40, 16, 16, amp=2.2)
    cases.append(dict(id="np-07", q=q, k=k, v=v, mask=None, scale=1.0,
                      note="large logits (spread > 88 at scale 1)"))
    q, k, v = _qkv(r, (), 64, 128, 40, 24)
    m = _random_mask(r, (64, 128), p_keep=0.6)
    m[::3, 0] = False
    m[:, 1] = True
    cases.append(dict(id="np-08", q=q, k=k, v=v, mask=m, scale=0.37, note="2-D random mask, key 0 dropped"))
    q, k, v = _qkv(r, (3, 1), 33, 33, 24, 32)
    cases.append(dict(id="np-09", q=q, k=k, v=v, mask=_padding_mask([33, 20, 9], 33), scale=None,
                      note="key padding, Sq == Sk 33, H 1"))
    q, k, v = _qkv(r, (2, 3), 20, 96, 16, 8)
    m = _random_mask(r, (2, 1, 20, 96), p_keep=0.8)
    cases.append(dict(id="np-10", q=q, k=k, v=v, mask=m, scale=0.5, note="(B,1,Sq,Sk) head-broadcast mask"))
    q, k, v = _qkv(r, (2,), 5, 1, 32, 24)
    cases.append(dict(id="np-11", q=q, k=k, v=v, mask=None, scale=None, note="Sk 1"))
    q, k, v = _qkv(r, (2, 2), 48, 60, 32, 20)
    m = _random_mask(r, (2, 2, 48, 60), p_keep=0.5, dead_rows=[(0, 1, 0), (1, 0, 47)])
    cases.append(dict(id="np-12", q=q, k=k, v=v, mask=m, scale=None, note="random mask, dead rows"))
    return cases


def sdpa_cases():
    cases = []
    r = _rng(191)

    def add(cid, q, k, v, note, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
        cases.append(dict(id=cid, q=q, k=k, v=v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
                          enable_gqa=enable_gqa, note=note))

    q, k, v = _qkv(r, (2, 4), 48, 48, 32, 32)
    add("sdpa-00", q, k, v, "plain, Sq == Sk")
    q, k, v = _qkv(r, (2, 3), 40, 70, 16, 24)
    add("sdpa-01", q, k, v, "is_causal, Sq < Sk", is_causal=True)
    q, k, v = _qkv(r, (1, 2), 90, 33, 24, 24)
    add("sdpa-02", q, k, v, "is_causal, Sq > Sk", is_causal=True)
    q, k, v = _qkv(r, (2, 2), 64, 64, 64, 32)
    add("sdpa-03", q, k, v, "is_causal, Sq == Sk, scale 0.37", is_causal=True, scale=0.37)
    q, k, v = _qkv(r, (2, 3), 33, 57, 16, 16)
    add("sdpa-04", q, k, v, "bool mask (B,H,Sq,Sk) with a dead row",
        attn_mask=_random_mask(r, (2, 3, 33, 57), dead_rows=[(1, 2, 7)]))
    q, k, v = _qkv(r, (3, 2), 20, 41, 8, 12)
    add("sdpa-05", q, k, v, "bool padding (B,1,1,Sk), zero-length sequence",
        attn_mask=_padding_mask([41, 17, 0], 41))
    q, k, v = _qkv(r, (2, 4), 30, 30, 16, 16)
    add("sdpa-06", q, k, v, "additive float mask (B,1,Sq,Sk), finite biases",
        attn_mask=r.standard_normal((2, 1, 30, 30)) * 2.0)
    q, k, v = _qkv(r, (2, 2), 25, 50, 32, 32)
    fm = np.where(_random_mask(r, (2, 2, 25, 50), p_keep=0.6), 0.0, -np.inf)
    fm[0, 1, 3, :] = -np.inf
    add("sdpa-07", q, k, v, "additive float mask with -inf, one all -inf row", attn_mask=fm)
    q, k, v = _qkv(r, (2, 8), 36, 36, 16, 20, lead_kv=(2, 2))
    add("sdpa-08", q, k, v, "GQA 4:1, bool mask (1,1,Sq,Sk)", enable_gqa=True,
        attn_mask=_random_mask(r, (1, 1, 36, 36), p_keep=0.75))
    q, k, v = _qkv(r, (1, 12), 24, 60, 16, 16, lead_kv=(1, 2))
    add("sdpa-09", q, k, v, "GQA 6:1, is_causal, Sq < Sk", enable_gqa=True, is_causal=True)
    q, k, v = _qkv(r, (3, 4), 1, 129, 32, 32, lead_kv=(3, 1))
    add("sdpa-10", q, k, v, "MQA decode Sq 1, Sk 129", enable_gqa=True)
    q, k, v = _qkv(r, (2, 3), 45, 45, 24, 24)
    add("sdpa-11", q, k, v, "scale 0.5, bool mask (B,1,Sq,Sk)", scale=0.5,
        attn_mask=_random_mask(r, (2, 1, 45, 45), p_keep=0.7))
    q, k, v = _qkv(r, (1, 2), 16, 100, 8, 8)
    add("sdpa-12", q, k, v, "scale 1, D 8", scale=1.0)
    q, k, v = _qkv(r, (2, 6), 28, 28, 16, 24, lead_kv=(2, 3))
    add("sdpa-13", q, k, v, "GQA 2:1, float mask (Sq,Sk) 2-D", enable_gqa=True,
        attn_mask=r.standard_normal((28, 28)))
    q, k, v = _qkv(r, (1, 4), 64, 64, 32, 32)
    add("sdpa-14", q, k, v, "bool mask (Sq,Sk) 2-D, causal band", attn_mask=_band(64, 64, 10, 0))
    return cases


def flash_cases():
    cases = []
    r = _rng(192)

    def add(cid, shape, note, causal=False, window=(-1, -1), softcap=0.0, alibi=None, scale=None):
        b, sq, sk, hq, hk, d, dv = shape
        q = r.standard_normal((b, sq, hq, d))
        k = r.standard_normal((b, sk, hk, d))
        v = r.standard_normal((b, sk, hk, dv))
        sl = None
        if alibi == "h":
            sl = (r.random(hq) * 0.5 + 0.05).astype(np.float32)
        elif alibi == "bh":
            sl = (r.random((b, hq)) * 0.5 + 0.05).astype(np.float32)
        cases.append(dict(id=cid, q=q, k=k, v=v, causal=causal, window=window, softcap=softcap, alibi=sl,
                          scale=scale, note=note))

    add("fl-00", (2, 50, 50, 4, 4, 32, 32), "plain")
    add("fl-01", (2, 30, 77, 2, 2, 16, 24), "causal, Sq < Sk", causal=True)
    add("fl-02", (1, 70, 40, 3, 3, 24, 24), "causal, Sq > Sk", causal=True)
    add("fl-03", (2, 64, 64, 8, 2, 32, 32), "causal, Sq == Sk, GQA 4:1", causal=True)
    add("fl-04", (1, 100, 100, 2, 2, 16, 16), "window (16, -1)", window=(16, -1))
    add("fl-05", (2, 60, 90, 2, 2, 16, 8), "window (-1, 5), Sq < Sk", window=(-1, 5))
    add("fl-06", (1, 80, 50, 2, 2, 32, 32), "window (10, 3), Sq > Sk", window=(10, 3))
    add("fl-07", (2, 40, 96, 4, 4, 16, 16), "causal + window (20, -1), Sq < Sk", causal=True, window=(20, -1))
    add("fl-08", (2, 48, 48, 2, 2, 32, 40), "softcap 5, scale 0.3", softcap=5.0, scale=0.3)
    add("fl-09", (1, 56, 56, 4, 4, 16, 16), "softcap 3, causal, ALiBi (Hq,)", causal=True, softcap=3.0, alibi="h")
    add("fl-10", (2, 36, 64, 4, 4, 24, 24), "ALiBi (Hq,), non-causal", alibi="h")
    add("fl-11", (2, 45, 45, 4, 2, 16, 16), "ALiBi (B, Hq), causal, GQA 2:1", causal=True, alibi="bh")
    add("fl-12", (2, 1, 129, 12, 2, 64, 64), "decode Sq 1, GQA 6:1 (12:2)")
    add("fl-13", (2, 3, 70, 8, 1, 32, 32), "MQA, Sq 3, causal", causal=True)
    add("fl-14", (1, 33, 33, 2, 2, 16, 16), "window (0, 4), ALiBi", window=(0, 4), alibi="h")
    add("fl-15", (2, 90, 60, 2, 2, 16, 16), "causal + window (6, -1), Sq > Sk", causal=True, window=(6, -1))
    add("fl-16", (1, 20, 33, 6, 3, 16, 24), "softmax_scale 0.5, GQA 2:1", scale=0.5)
    add("fl-17", (1, 64, 96, 2, 2, 32, 32), "causal, Sq < Sk, Sk multiple of 32", causal=True)
    add("fl-18", (2, 50, 30, 4, 2, 16, 16), "ALiBi (B, Hq), non-causal, Sq > Sk, GQA 2:1", alibi="bh")
    return cases


def bwd_cases():
    cases = []
    r = _rng(193)

    def add(cid, lead_q, sq, sk, d, dv, note, lead_kv=None, mask=None, scale=None):
        q, k, v = _qkv(r, lead_q, sq, sk, d, dv, lead_kv=lead_kv)
        d_out = r.standard_normal(lead_q + (sq, dv))
        cases.append(dict(id=cid, q=q, k=k, v=v, d_out=d_out, mask=mask, scale=scale, note=note))

    add("bw-00", (), 17, 40, 16, 12, "2-D, no mask")
    add("bw-01", (2,), 30, 30, 24, 24, "3-D random mask, dead row",
        mask=_random_mask(r, (2, 30, 30), dead_rows=[(0, 4)]))
    add("bw-02", (2, 3), 33, 65, 32, 40, "4-D top-left causal mask (1,1,Sq,Sk)", mask=_band(33, 65, 999, 0)[None, None])
    add("bw-03", (2, 4), 48, 48, 16, 16, "MQA (k/v head axis 1), padding (B,1,1,Sk)", lead_kv=(2, 1),
        mask=_padding_mask([48, 29], 48))
    add("bw-04", (3, 2), 21, 100, 8, 8, "scale 0.5", scale=0.5)
    add("bw-05", (), 64, 64, 40, 40, "2-D band mask", mask=_band(64, 64, 12, 3))
    add("bw-06", (1, 2), 1, 129, 64, 32, "decode Sq 1, Sk 129")
    add("bw-07", (2, 2), 32, 20, 24, 16, "Sq 32 (multiple of 16), Sq > Sk")
    add("bw-08", (3, 1), 40, 72, 16, 16, "H 1, random mask", mask=_random_mask(r, (3, 1, 40, 72), p_keep=0.5))
    return cases


# ----------------------------------------------------------------------------------------------------------
# calling the kernels
# ----------------------------------------------------------------------------------------------------------
NP_DT = {"float64": np.float64, "float32": np.float32}
TORCH_DT = {"float64": torch.float64, "float32": torch.float32}


def _round(x, dt):
    return None if x is None else np.asarray(x).astype(NP_DT[dt]).astype(np.float64)


def _snapshot(objs):
    snap = []
    for o in objs:
        if o is None:
            snap.append(None)
        elif isinstance(o, torch.Tensor):
            snap.append(o.detach().clone())
        else:
            snap.append(np.array(o, copy=True))
    return snap


def _unchanged(objs, snap):
    for o, s in zip(objs, snap):
        if o is None:
            continue
        if isinstance(o, torch.Tensor):
            if o.dtype != s.dtype or o.shape != s.shape or not torch.equal(torch.nan_to_num(o), torch.nan_to_num(s)):
                return False
        elif o.dtype != s.dtype or o.shape != s.shape or not np.array_equal(o, s, equal_nan=True):
            return False
    return True


class NumpyFwd:
    title = "numpy_fwd.py (refimpl)"
    module = numpy_fwd
    api = "refimpl"
    cases = staticmethod(numpy_cases)

    @staticmethod
    def inputs(c, dt):
        t = NP_DT[dt]
        args = [c["q"].astype(t), c["k"].astype(t), c["v"].astype(t)]
        mask = None if c["mask"] is None else np.array(c["mask"], dtype=bool)
        return args, dict(mask=mask, scale=c["scale"]), args + [mask]

    @staticmethod
    def ref(c, dt):
        return ref_numpy(_round(c["q"], dt), _round(c["k"], dt), _round(c["v"], dt), c["mask"], c["scale"])

    @staticmethod
    def outputs(out, dt):
        if not isinstance(out, np.ndarray):
            return None, "not an ndarray"
        if out.dtype != NP_DT[dt]:
            return None, "dtype %s" % out.dtype
        return out, None


class SdpaFwd:
    title = "torch_sdpa_fwd.py (torch-sdpa)"
    module = torch_sdpa_fwd
    api = "torch-sdpa"
    cases = staticmethod(sdpa_cases)

    @staticmethod
    def inputs(c, dt):
        t = TORCH_DT[dt]
        q, k, v = (torch.tensor(c[n], dtype=t) for n in ("q", "k", "v"))
        m = c["attn_mask"]
        if m is not None:
            m = torch.tensor(m) if m.dtype == bool else torch.tensor(m, dtype=t)
        kw = dict(attn_mask=m, dropout_p=0.0, is_causal=c["is_causal"], scale=c["scale"],
                  enable_gqa=c["enable_gqa"])
        return [q, k, v], kw, [q, k, v, m]

    @staticmethod
    def ref(c, dt):
        m = c["attn_mask"]
        if m is not None and m.dtype != bool:
            m = _round(m, dt)
        return ref_sdpa(_round(c["q"], dt), _round(c["k"], dt), _round(c["v"], dt), m, c["is_causal"],
                        c["scale"], c["enable_gqa"])

    @staticmethod
    def outputs(out, dt):
        if not isinstance(out, torch.Tensor):
            return None, "not a tensor"
        if out.dtype != TORCH_DT[dt]:
            return None, "dtype %s" % out.dtype
        return out.detach().numpy(), None


class FlashFwd:
    title = "flash_fwd.py (flash-attn)"
    module = flash_fwd
    api = "flash-attn"
    cases = staticmethod(flash_cases)

    @staticmethod
    def inputs(c, dt):
        t = TORCH_DT[dt]
        q, k, v = (torch.tensor(c[n], dtype=t) for n in ("q", "k", "v"))
        sl = None if c["alibi"] is None else torch.tensor(c["alibi"], dtype=torch.float32)
        kw = dict(dropout_p=0.0, softmax_scale=c["scale"], causal=c["causal"], window_size=c["window"],
                  softcap=c["softcap"], alibi_slopes=sl, deterministic=False, return_attn_probs=False)
        return [q, k, v], kw, [q, k, v, sl]

    @staticmethod
    def ref(c, dt):
        return ref_flash(_round(c["q"], dt), _round(c["k"], dt), _round(c["v"], dt), c["scale"], c["causal"],
                         c["window"], c["softcap"], c["alibi"])

    outputs = SdpaFwd.outputs


class NumpyBwd:
    title = "numpy_bwd.py (numpy-backward)"
    module = numpy_bwd
    api = "numpy-backward"
    cases = staticmethod(bwd_cases)

    @staticmethod
    def inputs(c, dt):
        t = NP_DT[dt]
        args = [c[n].astype(t) for n in ("q", "k", "v", "d_out")]
        mask = None if c["mask"] is None else np.array(c["mask"], dtype=bool)
        return args, dict(mask=mask, scale=c["scale"]), args + [mask]

    @staticmethod
    def ref(c, dt):
        return ref_bwd(*(_round(c[n], dt) for n in ("q", "k", "v", "d_out")), c["mask"], c["scale"])

    @staticmethod
    def outputs(out, dt):
        if not isinstance(out, tuple) or len(out) != 3:
            return None, "not a 3-tuple"
        for o in out:
            if not isinstance(o, np.ndarray) or o.dtype != NP_DT[dt]:
                return None, "dtype %s" % getattr(o, "dtype", type(o))
        return out, None


MODULES = [NumpyFwd, SdpaFwd, FlashFwd, NumpyBwd]


def _rel(out, ref):
    if isinstance(ref, tuple):
        return max(_rel(o, r) for o, r in zip(out, ref))
    if out.shape != ref.shape:
        return math.inf
    out = out.astype(np.float64)
    if not np.all(np.isfinite(out)):
        return math.inf
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300))


def run_kernel(spec, fn, c, dt, ref, problems, name):
    """Call fn twice on fresh copies; return the worse relative error (inf on error/shape/dtype)."""
    worst = 0.0
    for _ in range(2):
        args, kw, watched = spec.inputs(c, dt)
        snap = _snapshot(watched)
        try:
            with np.errstate(all="ignore"):
                out = fn(*args, **kw)
        except Exception:  # noqa: BLE001 - an exception is a (broken) result
            worst = math.inf
            continue
        if not _unchanged(watched, snap):
            problems.append("%s modified its inputs on %s %s" % (name, c["id"], dt))
        arr, why = spec.outputs(out, dt)
        err = math.inf if arr is None else _rel(arr, ref)
        worst = max(worst, err)
    return worst


# ----------------------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------------------
def cross_check_references():
    worst = 0.0
    for c in sdpa_cases():
        m = c["attn_mask"]
        if m is not None and m.dtype != bool and np.isfinite(m).all():
            continue
        q, k, v = c["q"], c["k"], c["v"]
        if c["enable_gqa"]:
            g = q.shape[1] // k.shape[1]
            k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        keep = np.ones((q.shape[-2], k.shape[-2]), dtype=bool)
        if c["is_causal"]:
            keep = np.tril(keep)
        if m is not None:
            keep = keep & (m if m.dtype == bool else np.isfinite(m))
        a = ref_sdpa(c["q"], c["k"], c["v"], c["attn_mask"], c["is_causal"], c["scale"], c["enable_gqa"])
        b = ref_numpy(q, k, v, keep, c["scale"])
        worst = max(worst, _rel(a, b))
    for c in flash_cases():
        if c["softcap"] > 0 or c["alibi"] is not None:
            continue
        q, k, v = (np.transpose(c[n], (0, 2, 1, 3)) for n in ("q", "k", "v"))
        g = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
        sq, sk = q.shape[-2], k.shape[-2]
        i, j = np.arange(sq)[:, None] + (sk - sq), np.arange(sk)[None, :]
        left, right = c["window"]
        right = 0 if c["causal"] else right
        keep = np.ones((sq, sk), dtype=bool)
        if left >= 0:
            keep &= j >= i - left
        if right >= 0:
            keep &= j <= i + right
        a = np.transpose(ref_flash(c["q"], c["k"], c["v"], c["scale"], c["causal"], c["window"]), (0, 2, 1, 3))
        worst = max(worst, _rel(a, ref_numpy(q, k, v, keep, c["scale"])))
    for c in bwd_cases():
        a = ref_bwd(c["q"], c["k"], c["v"], c["d_out"], c["mask"], c["scale"])
        b = autograd_bwd(c["q"], c["k"], c["v"], c["d_out"], c["mask"], c["scale"])
        worst = max(worst, _rel(a, b))
    return worst


def check_catalog(spec, problems):
    cat = spec.module.CATALOG
    tag = spec.module.__name__
    broken = [e for e in cat if e.get("correct") is False]
    correct = [e for e in cat if e.get("correct") is True]
    if len(broken) < 6 or len(correct) < 2:
        problems.append("%s: needs >= 6 broken and >= 2 correct kernels" % tag)
    for e in cat:
        if set(e) != KEYS:
            problems.append("%s: %s has keys %s" % (tag, e.get("name"), sorted(set(e) ^ KEYS)))
            continue
        if e["api"] != spec.api:
            problems.append("%s: %s api %s" % (tag, e["name"], e["api"]))
        if not callable(getattr(spec.module, e["fn"], None)):
            problems.append("%s: %s fn %s missing" % (tag, e["name"], e["fn"]))
        if e["dtype"] not in DTYPES:
            problems.append("%s: %s dtype %s" % (tag, e["name"], e["dtype"]))
        if not set(e["features"]) <= FEATURES:
            problems.append("%s: %s features %s" % (tag, e["name"], e["features"]))
        if e["correct"]:
            if any(e[x] is not None for x in ("bug", "parameter", "source", "report")):
                problems.append("%s: correct kernel %s has bug fields" % (tag, e["name"]))
            if e["fn"] in TRIGGERS:
                problems.append("%s: correct kernel %s has a TRIGGERS entry" % (tag, e["name"]))
            continue
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"] or ""):
            problems.append("%s: %s bug %r not kebab-case" % (tag, e["name"], e["bug"]))
        if "Triggers:" not in (e["parameter"] or ""):
            problems.append("%s: %s parameter without 'Triggers:'" % (tag, e["name"]))
        m = re.fullmatch(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#(\d+)", e["source"] or "")
        if not m or not re.fullmatch(r"https://github\.com/%s/(issues|pull)/%s" % (re.escape(m.group(1)),
                                                                                   m.group(2)), e["report"] or ""):
            problems.append("%s: %s source/report disagree" % (tag, e["name"]))
        if e["fn"] not in TRIGGERS or not TRIGGERS[e["fn"]]:
            problems.append("%s: broken kernel %s has no TRIGGERS entry" % (tag, e["name"]))
    names = [e["name"] for e in cat]
    if len(set(names)) != len(names):
        problems.append("%s: duplicate names" % tag)


def check_markers(spec, problems):
    path = os.path.join(HERE, spec.module.__name__ + ".py")
    text = open(path).read()
    parts = re.split(r"^# --- kernel: (\w+) ---$", text, flags=re.M)
    if parts[0].count("# BUG:"):
        problems.append("%s: '# BUG:' outside a kernel section" % path)
    sections = dict(zip(parts[1::2], parts[2::2]))
    for e in spec.module.CATALOG:
        body = sections.get(e["fn"])
        if body is None:
            problems.append("%s: no section for %s" % (path, e["fn"]))
            continue
        want = 0 if e["correct"] else 1
        found = body.count("# BUG:")
        if found != want:
            problems.append("%s: section %s has %d '# BUG:' (want %d)" % (path, e["fn"], found, want))
    extra = set(sections) - {e["fn"] for e in spec.module.CATALOG}
    if extra:
        problems.append("%s: sections without CATALOG entry %s" % (path, sorted(extra)))


def evaluate(spec, problems, collect=None):
    """Run every kernel of the module on every case in float64 and float32; judge against TRIGGERS."""
    cases = spec.cases()
    ids = [c["id"] for c in cases]
    refs = {(c["id"], dt): spec.ref(c, dt) for c in cases for dt in DTYPES}
    rows = []
    for e in spec.module.CATALOG:
        fn = getattr(spec.module, e["fn"])
        errs = {}
        for c in cases:
            for dt in DTYPES:
                errs[(c["id"], dt)] = run_kernel(spec, fn, c, dt, refs[(c["id"], dt)], problems, e["name"])
        if collect is not None:
            collect[e["fn"]] = errs
        trig = set(TRIGGERS.get(e["fn"], []))
        unknown = trig - set(ids)
        if unknown:
            problems.append("%s: TRIGGERS lists unknown cases %s" % (e["name"], sorted(unknown)))
        for cid in ids:
            if cid in trig:
                err = errs[(cid, e["dtype"])]
                if not err > DIFF[e["dtype"]]:
                    problems.append("%s: does not differ on trigger case %s (%s err %.3g)"
                                    % (e["name"], cid, e["dtype"], err))
            else:
                for dt in DTYPES:
                    err = errs[(cid, dt)]
                    if not err <= TOL[dt]:
                        problems.append("%s: does not conform on %s %s (err %.3g)" % (e["name"], cid, dt, err))
        w64 = max(errs[(cid, "float64")] for cid in ids)
        w32 = max(errs[(cid, "float32")] for cid in ids)
        rows.append((e["name"], "ok" if e["correct"] else "broken", w64, w32))
    return rows


def main():
    t0 = time.time()
    problems = []
    xc = cross_check_references()
    if not xc < 1e-12:
        problems.append("reference cross-check error %.3g" % xc)
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): worst %.2g"
          % xc)
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    summary = []
    for spec in MODULES:
        check_catalog(spec, problems)
        check_markers(spec, problems)
        rows = evaluate(spec, problems)
        print(spec.title)
        for name, status, w64, w32 in rows:
            print("  %-44s %-6s f64 %-9.3g f32 %.3g" % (name, status, w64, w32))
        nb = sum(1 for e in spec.module.CATALOG if not e["correct"])
        summary.append("%s %d broken + %d correct" % (spec.module.__name__, nb, len(spec.module.CATALOG) - nb))
    sources = [e["source"] for s in MODULES for e in s.module.CATALOG if e["source"]]
    if len(set(sources)) != len(sources):
        problems.append("a source is cited twice")
    names = [e["name"] for s in MODULES for e in s.module.CATALOG]
    if len(set(names)) != len(names):
        problems.append("duplicate kernel names across modules")
    for fn in TRIGGERS:
        if not any(e["fn"] == fn and not e["correct"] for s in MODULES for e in s.module.CATALOG):
            problems.append("TRIGGERS entry %s is not a broken kernel" % fn)
    dt = time.time() - t0
    if problems:
        print("SELF-CHECK FAILED (%.1f s): %d problem(s)" % (dt, len(problems)))
        for p in problems:
            print("  - " + p)
        return 1
    print("SELF-CHECK PASSED (%.1f s): %s" % (dt, ", ".join(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
