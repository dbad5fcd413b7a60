"""Self-check of the heldout20 kernel set (run: python -B tests/heldout20/selfcheck.py).

Own float64 references written from the four contracts (README.md), cross-checked against each other and,
for the backward, against torch autograd; fixed seeded cases in float64 and float32. Requirements: correct
kernels within 1e-10 (float64) / 1e-5 (float32) relative error on every case; every broken kernel differs on
exactly the cases listed for it in TRIGGERS (in its CATALOG dtype) and conforms on every other case in both
dtypes; dtype and shape kept; inputs unmodified; CATALOG valid; one BUG comment per broken kernel section.
Exit status 1 on any problem.
"""
import sys

sys.dont_write_bytecode = True

import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

MODULES = [
    ("numpy_fwd.py", numpy_fwd, "refimpl"),
    ("torch_sdpa_fwd.py", torch_sdpa_fwd, "torch-sdpa"),
    ("flash_fwd.py", flash_fwd, "flash-attn"),
    ("numpy_bwd.py", numpy_bwd, "numpy-backward"),
]
DTYPES = ("float64", "float32")
CONFORM = {"float64": 1e-10, "float32": 1e-5}
DIFFER = {"float64": 1e-8, "float32": 1e-4}
XCHECK = 1e-12
CATALOG_KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURES = {"mask", "causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"}

# Cases on which each broken kernel differs from the reference (float64); it must conform on all others.
TRIGGERS = {
    "scaled_dot_product_attention_cpu": [
        "n01-2d-nomask", "n03-4d-padding-zero-len", "n04-4d-leftpad-decode", "n06-4d-causal-square",
        "n10-4d-100x129-randmask", "n12-4d-square-qk-padding",
    ],
    "vit_attention_scaling_after_softmax": [
        "n01-2d-nomask", "n02-3d-randmask-emptyrow", "n03-4d-padding-zero-len", "n04-4d-leftpad-decode",
        "n05-4d-band-symmetric", "n06-4d-causal-square", "n08-4d-bottomright-sq-gt-sk", "n10-4d-100x129-randmask",
        "n12-4d-square-qk-padding",
    ],
    "kb_attention_fill_minus_10000": [
        "n02-3d-randmask-emptyrow", "n03-4d-padding-zero-len", "n08-4d-bottomright-sq-gt-sk",
        "n11-3d-square-randmask-emptyrow-scale1", "n12-4d-square-qk-padding",
    ],
    "masked_attention_mask_orientation": [
        "n02-3d-randmask-emptyrow", "n03-4d-padding-zero-len", "n04-4d-leftpad-decode", "n06-4d-causal-square",
        "n07-3d-causal-topleft-scale1", "n08-4d-bottomright-sq-gt-sk", "n10-4d-100x129-randmask",
        "n11-3d-square-randmask-emptyrow-scale1", "n13-3d-square-randmask-scale1",
    ],
    "tiny_mha_mask_square_broadcast": [
        "n02-3d-randmask-emptyrow", "n03-4d-padding-zero-len", "n04-4d-leftpad-decode",
        "n07-3d-causal-topleft-scale1", "n08-4d-bottomright-sq-gt-sk", "n10-4d-100x129-randmask",
    ],
    "afm_attention_keepdims_softmax": [
        "n01-2d-nomask", "n02-3d-randmask-emptyrow", "n03-4d-padding-zero-len", "n04-4d-leftpad-decode",
        "n05-4d-band-symmetric", "n06-4d-causal-square", "n07-3d-causal-topleft-scale1",
        "n08-4d-bottomright-sq-gt-sk", "n09-2d-square-nomask-scale1", "n10-4d-100x129-randmask",
        "n11-3d-square-randmask-emptyrow-scale1", "n12-4d-square-qk-padding", "n13-3d-square-randmask-scale1",
    ],
    "sdpa_te_unfused_softmax_fallback": [
        "s07-causal-sq-lt-sk", "s08-causal-sq-gt-sk", "s10-causal-square-b1h3",
    ],
    "sdpa_separate_kv_head_index": [
        "s11-gqa-4to1", "s12-gqa-6to1-causal", "s13-mqa-decode-padding", "s14-gqa-bool-mask-scale1",
    ],
    "sdpa_tma_flat_offsets": [
        "s01-basic", "s03-bool-randmask-emptyrow", "s04-bool-padding-zero-len", "s06-float-neginf-row",
        "s07-causal-sq-lt-sk", "s09-causal-square-b2h2", "s11-gqa-4to1", "s13-mqa-decode-padding",
        "s14-gqa-bool-mask-scale1", "s15-explicit-scale",
    ],
    "sdpa_npu_fusion_bool_mask": [
        "s03-bool-randmask-emptyrow", "s04-bool-padding-zero-len", "s13-mqa-decode-padding",
        "s14-gqa-bool-mask-scale1",
    ],
    "sdpa_mhsa_sqrt_feats": [
        "s01-basic", "s04-bool-padding-zero-len", "s05-float-finite-bias", "s07-causal-sq-lt-sk",
        "s08-causal-sq-gt-sk", "s09-causal-square-b2h2", "s10-causal-square-b1h3", "s11-gqa-4to1",
        "s12-gqa-6to1-causal", "s13-mqa-decode-padding", "s16-gqa-flag-equal-heads-float",
    ],
    "sdpa_flashmha_bshd_core": [
        "s01-basic", "s02-single-head", "s03-bool-randmask-emptyrow", "s04-bool-padding-zero-len",
        "s05-float-finite-bias", "s06-float-neginf-row", "s07-causal-sq-lt-sk", "s08-causal-sq-gt-sk",
        "s09-causal-square-b2h2", "s10-causal-square-b1h3", "s11-gqa-4to1", "s12-gqa-6to1-causal",
        "s13-mqa-decode-padding", "s14-gqa-bool-mask-scale1", "s15-explicit-scale",
        "s16-gqa-flag-equal-heads-float",
    ],
    "flash_v1_causal_top_left": [
        "f02-causal-sq-lt-sk", "f03-causal-sq-gt-sk", "f05-causal-decode", "f08-gqa-12to2-causal-decode",
        "f15-causal-window-20-sq-lt-sk", "f16-causal-window-6-sq-gt-sk", "f18-softcap-3-causal-alibi-bh",
        "f20-alibi-bh-causal", "f22-causal-short-q",
    ],
    "flash_cute_window_none_only": [
        "f10-window-16-inf", "f11-window-inf-5",
    ],
    "flash_window_loaded_or_fallback": [
        "f02-causal-sq-lt-sk", "f03-causal-sq-gt-sk", "f04-causal-square-dv", "f07-gqa-2to1-causal-96",
        "f13-window-0-4", "f15-causal-window-20-sq-lt-sk", "f16-causal-window-6-sq-gt-sk",
        "f18-softcap-3-causal-alibi-bh", "f20-alibi-bh-causal", "f22-causal-short-q",
    ],
    "flash_fwd_causal_seqlen_k_longer": [
        "f03-causal-sq-gt-sk", "f04-causal-square-dv", "f07-gqa-2to1-causal-96", "f15-causal-window-20-sq-lt-sk",
        "f16-causal-window-6-sq-gt-sk", "f18-softcap-3-causal-alibi-bh", "f20-alibi-bh-causal",
    ],
    "flash_alibi_partitioned_heads": [
        "f14-window-8-8-alibi-gqa", "f18-softcap-3-causal-alibi-bh", "f19-alibi-gqa-noncausal",
        "f20-alibi-bh-causal",
    ],
    "flash_sliding_window_diagonal": [
        "f10-window-16-inf", "f12-window-10-3-sq-gt-sk", "f13-window-0-4", "f14-window-8-8-alibi-gqa",
        "f15-causal-window-20-sq-lt-sk", "f16-causal-window-6-sq-gt-sk",
    ],
    "bwd_lse_log2_units": [
        "b01-3d-nomask", "b02-4d-square-randmask-emptyrow", "b03-4d-mqa-padding-zero-len", "b04-2d-causal-64",
        "b05-4d-decode-leftpad", "b06-4d-96-scale1", "b07-4d-100x129-randmask", "b08-4d-mqa-square-32",
        "b09-3d-band",
    ],
    "bwd_normalizer_detached": [
        "b01-3d-nomask", "b02-4d-square-randmask-emptyrow", "b03-4d-mqa-padding-zero-len", "b04-2d-causal-64",
        "b05-4d-decode-leftpad", "b06-4d-96-scale1", "b07-4d-100x129-randmask", "b08-4d-mqa-square-32",
        "b09-3d-band",
    ],
    "bwd_softmax_layer_backward": [
        "b01-3d-nomask", "b02-4d-square-randmask-emptyrow", "b03-4d-mqa-padding-zero-len", "b04-2d-causal-64",
        "b05-4d-decode-leftpad", "b06-4d-96-scale1", "b07-4d-100x129-randmask", "b08-4d-mqa-square-32",
        "b09-3d-band",
    ],
    "bwd_flat_batch_heads": [
        "b03-4d-mqa-padding-zero-len", "b08-4d-mqa-square-32",
    ],
    "bwd_query_chunk_scan": [
        "b01-3d-nomask", "b03-4d-mqa-padding-zero-len", "b05-4d-decode-leftpad", "b07-4d-100x129-randmask",
    ],
    "bwd_block_sparse_padded_tiles": [
        "b01-3d-nomask", "b02-4d-square-randmask-emptyrow", "b03-4d-mqa-padding-zero-len", "b05-4d-decode-leftpad",
        "b07-4d-100x129-randmask", "b09-3d-band",
    ],
}


# ----------------------------------------------------------------------------------------------------------
# references (float64, written from the contracts)
# ----------------------------------------------------------------------------------------------------------
def _softmax_rows(s):
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = np.sum(e, axis=-1, keepdims=True)
    return np.where(z > 0, e / np.where(z > 0, z, 1.0), 0.0)


def ref_np(q, k, v, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    return np.matmul(_softmax_rows(s), v)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    hq, hkv = query.shape[1], key.shape[1]
    if hkv != hq:
        key, value = np.repeat(key, hq // hkv, axis=1), np.repeat(value, hq // hkv, axis=1)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    s = np.matmul(query, np.swapaxes(key, -1, -2)) * scale
    sq, sk = s.shape[-2:]
    if is_causal:
        s = np.where(np.tril(np.ones((sq, sk), dtype=bool)), s, -np.inf)
    if attn_mask is not None:
        s = np.where(attn_mask, s, -np.inf) if attn_mask.dtype == bool else s + attn_mask
    return np.matmul(_softmax_rows(s), value)


def flash_visible(sq, sk, causal, window_size):
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    left, right = window_size
    if causal:
        right = 0
    vis = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        vis &= j >= i - left
    if right >= 0:
        vis &= j <= i + right
    return vis


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    b, sq, hq, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    k, v = np.repeat(k, hq // hkv, axis=2), np.repeat(v, hq // hkv, axis=2)
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else softmax_scale
    s = np.einsum("bihd,bjhd->bhij", q, k) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    if alibi_slopes is not None:
        slopes = np.asarray(alibi_slopes, dtype=np.float64)
        slopes = slopes[None, :, None, None] if slopes.ndim == 1 else slopes[:, :, None, None]
        dist = np.abs(np.arange(sq)[:, None] + (sk - sq) - np.arange(sk)[None, :])
        s = s - slopes * dist
    s = np.where(flash_visible(sq, sk, causal, tuple(window_size)), s, -np.inf)
    return np.einsum("bhij,bjhd->bihd", _softmax_rows(s), v)


def _sum_to(x, shape):
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


def ref_bwd(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    k_e, v_e = np.broadcast_to(k, batch + k.shape[-2:]), np.broadcast_to(v, batch + v.shape[-2:])
    s = np.matmul(q, np.swapaxes(k_e, -1, -2)) * scale
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    p = _softmax_rows(s)
    dp = np.matmul(d_out, np.swapaxes(v_e, -1, -2))
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = np.matmul(ds, k_e) * scale
    dk = np.matmul(np.swapaxes(ds, -1, -2), q) * scale
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    return dq, _sum_to(dk, k.shape), _sum_to(dv, v.shape)


def autograd_bwd(q, k, v, d_out, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    tq, tk, tv = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    s = torch.matmul(tq, tk.transpose(-1, -2)) * scale
    if mask is not None:
        keep = torch.from_numpy(np.array(np.broadcast_to(mask, tuple(s.shape)), dtype=bool))
        s = torch.where(keep, s, torch.full_like(s, -1e300))
        p = torch.softmax(s, dim=-1) * keep.any(dim=-1, keepdim=True)
    else:
        p = torch.softmax(s, dim=-1)
    (torch.matmul(p, tv) * torch.from_numpy(d_out)).sum().backward()
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


# ----------------------------------------------------------------------------------------------------------
# seeded cases
# ----------------------------------------------------------------------------------------------------------
def _rng(seed):
    return np.random.default_rng(seed)


def _randmask(rng, shape, p, empty_rows=()):
    """Random keep-mask with one guaranteed kept key per row, then the listed rows emptied."""
    m = rng.random(shape) < p
    cols = rng.integers(0, shape[-1], size=shape[:-1])
    np.put_along_axis(m, cols[..., None], True, axis=-1)
    for idx in empty_rows:
        m[idx] = False
    return m


def _pad_mask(lengths, sk):
    return (np.arange(sk)[None, :] < np.asarray(lengths)[:, None])[:, None, None, :]


def _left_pad_mask(starts, sk):
    return (np.arange(sk)[None, :] >= np.asarray(starts)[:, None])[:, None, None, :]


def _tril(sq, sk, offset=0):
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None] + offset


def _qkv(seed, qs, ks, vs):
    rng = _rng(seed)
    return rng.standard_normal(qs), rng.standard_normal(ks), rng.standard_normal(vs), rng


def numpy_fwd_cases():
    cases = []

    def add(name, q, k, v, mask=None, scale=None):
        cases.append((name, {"q": q, "k": k, "v": v, "mask": mask, "scale": scale}))

    q, k, v, _ = _qkv(101, (17, 16), (40, 16), (40, 12))
    add("n01-2d-nomask", q, k, v)
    q, k, v, rng = _qkv(102, (3, 29, 24), (3, 64, 24), (3, 64, 20))
    add("n02-3d-randmask-emptyrow", q, k, v, _randmask(rng, (3, 29, 64), 0.6, [(1, 5)]), 0.5)
    q, k, v, _ = _qkv(103, (2, 3, 45, 32), (2, 3, 96, 32), (2, 3, 96, 40))
    add("n03-4d-padding-zero-len", q, k, v, _pad_mask([70, 0], 96))
    q, k, v, _ = _qkv(104, (3, 2, 1, 64), (3, 2, 77, 64), (3, 2, 77, 48))
    add("n04-4d-leftpad-decode", q, k, v, _left_pad_mask([0, 10, 76], 77))
    q, k, v, _ = _qkv(105, (1, 2, 60, 16), (1, 2, 60, 16), (1, 2, 60, 8))
    dist = np.abs(np.arange(60)[:, None] - np.arange(60)[None, :])
    add("n05-4d-band-symmetric", q, k, v, np.stack([dist <= 3, dist <= 9])[None], 0.37)
    q, k, v, _ = _qkv(106, (2, 2, 50, 40), (2, 2, 50, 40), (2, 2, 50, 40))
    add("n06-4d-causal-square", q, k, v, _tril(50, 50))
    q, k, v, _ = _qkv(107, (2, 32, 24), (2, 100, 24), (2, 100, 24))
    add("n07-3d-causal-topleft-scale1", q, k, v, _tril(32, 100), 1.0)
    q, k, v, _ = _qkv(108, (1, 4, 80, 32), (1, 4, 40, 32), (1, 4, 40, 24))
    add("n08-4d-bottomright-sq-gt-sk", q, k, v, _tril(80, 40, 40 - 80), 0.3)
    q, k, v, _ = _qkv(109, (64, 32), (64, 32), (64, 32))
    add("n09-2d-square-nomask-scale1", q, k, v, None, 1.0)
    q, k, v, rng = _qkv(110, (2, 2, 100, 8), (2, 2, 129, 8), (2, 2, 129, 16))
    add("n10-4d-100x129-randmask", q, k, v, _randmask(rng, (2, 1, 100, 129), 0.8))
    q, k, v, rng = _qkv(111, (2, 33, 16), (2, 33, 16), (2, 33, 24))
    add("n11-3d-square-randmask-emptyrow-scale1", q, k, v, _randmask(rng, (2, 33, 33), 0.5, [(0, 7)]), 1.0)
    q, k, v, _ = _qkv(112, (2, 1, 40, 24), (2, 1, 40, 24), (2, 1, 40, 12))
    lens = np.array([40, 25])
    valid = np.arange(40)[None, :] < lens[:, None]
    add("n12-4d-square-qk-padding", q, k, v, (valid[:, :, None] & valid[:, None, :])[:, None])
    q, k, v, rng = _qkv(113, (3, 20, 64), (3, 20, 64), (3, 20, 64))
    add("n13-3d-square-randmask-scale1", q, k, v, _randmask(rng, (20, 20), 0.7), 1.0)
    return cases


def sdpa_cases():
    cases = []

    def add(name, q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
        cases.append((name, {"query": q, "key": k, "value": v, "attn_mask": attn_mask, "is_causal": is_causal,
                             "scale": scale, "enable_gqa": enable_gqa}))

    q, k, v, _ = _qkv(201, (2, 4, 37, 32), (2, 4, 53, 32), (2, 4, 53, 24))
    add("s01-basic", q, k, v)
    q, k, v, _ = _qkv(202, (1, 1, 64, 16), (1, 1, 64, 16), (1, 1, 64, 16))
    add("s02-single-head", q, k, v)
    q, k, v, rng = _qkv(203, (2, 2, 20, 24), (2, 2, 45, 24), (2, 2, 45, 20))
    add("s03-bool-randmask-emptyrow", q, k, v, _randmask(rng, (2, 2, 20, 45), 0.6, [(1, 0, 3)]), scale=0.5)
    q, k, v, _ = _qkv(204, (3, 2, 16, 16), (3, 2, 40, 16), (3, 2, 40, 8))
    add("s04-bool-padding-zero-len", q, k, v, _pad_mask([40, 17, 0], 40))
    q, k, v, rng = _qkv(205, (1, 3, 30, 40), (1, 3, 31, 40), (1, 3, 31, 32))
    add("s05-float-finite-bias", q, k, v, rng.standard_normal((1, 1, 30, 31)))
    q, k, v, rng = _qkv(206, (2, 2, 24, 32), (2, 2, 24, 32), (2, 2, 24, 32))
    fm = np.where(rng.random((2, 2, 24, 24)) < 0.3, -np.inf, 0.5 * rng.standard_normal((2, 2, 24, 24)))
    fm[1, 0, 5] = -np.inf
    add("s06-float-neginf-row", q, k, v, fm, scale=0.37)
    q, k, v, _ = _qkv(207, (2, 2, 24, 32), (2, 2, 64, 32), (2, 2, 64, 32))
    add("s07-causal-sq-lt-sk", q, k, v, is_causal=True)
    q, k, v, _ = _qkv(208, (1, 2, 50, 16), (1, 2, 30, 16), (1, 2, 30, 24))
    add("s08-causal-sq-gt-sk", q, k, v, is_causal=True)
    q, k, v, _ = _qkv(209, (2, 2, 64, 32), (2, 2, 64, 32), (2, 2, 64, 32))
    add("s09-causal-square-b2h2", q, k, v, is_causal=True)
    q, k, v, _ = _qkv(210, (1, 3, 48, 24), (1, 3, 48, 24), (1, 3, 48, 24))
    add("s10-causal-square-b1h3", q, k, v, is_causal=True)
    q, k, v, _ = _qkv(211, (2, 8, 33, 32), (2, 2, 65, 32), (2, 2, 65, 16))
    add("s11-gqa-4to1", q, k, v, enable_gqa=True)
    q, k, v, _ = _qkv(212, (1, 12, 40, 16), (1, 2, 40, 16), (1, 2, 40, 16))
    add("s12-gqa-6to1-causal", q, k, v, is_causal=True, enable_gqa=True)
    q, k, v, _ = _qkv(213, (3, 6, 1, 64), (3, 1, 57, 64), (3, 1, 57, 64))
    add("s13-mqa-decode-padding", q, k, v, _left_pad_mask([0, 20, 56], 57), enable_gqa=True)
    q, k, v, rng = _qkv(214, (2, 4, 18, 16), (2, 2, 26, 16), (2, 2, 26, 16))
    add("s14-gqa-bool-mask-scale1", q, k, v, _randmask(rng, (2, 4, 18, 26), 0.5), scale=1.0, enable_gqa=True)
    q, k, v, _ = _qkv(215, (2, 3, 40, 32), (2, 3, 40, 32), (2, 3, 40, 32))
    add("s15-explicit-scale", q, k, v, scale=0.3)
    q, k, v, rng = _qkv(216, (1, 2, 9, 8), (1, 2, 100, 8), (1, 2, 100, 8))
    add("s16-gqa-flag-equal-heads-float", q, k, v, rng.standard_normal((1, 2, 9, 100)), enable_gqa=True)
    return cases


def flash_cases():
    cases = []

    def add(name, b, sq, sk, hq, hkv, d, dv, seed, causal=False, window_size=(-1, -1), softcap=0.0, alibi=None,
            softmax_scale=None):
        rng = _rng(seed)
        q = rng.standard_normal((b, sq, hq, d))
        k = rng.standard_normal((b, sk, hkv, d))
        v = rng.standard_normal((b, sk, hkv, dv))
        slopes = None
        if alibi == "h":
            slopes = (0.5 ** np.arange(1, hq + 1) * 2.0).astype(np.float32)
        elif alibi == "bh":
            slopes = (rng.random((b, hq)) * 0.9 + 0.05).astype(np.float32)
        cases.append((name, {"q": q, "k": k, "v": v, "softmax_scale": softmax_scale, "causal": causal,
                             "window_size": window_size, "softcap": softcap, "alibi_slopes": slopes}))

    add("f01-basic", 2, 40, 40, 4, 4, 32, 32, 301)
    add("f02-causal-sq-lt-sk", 1, 25, 64, 2, 2, 16, 16, 302, causal=True)
    add("f03-causal-sq-gt-sk", 2, 70, 33, 2, 2, 24, 24, 303, causal=True)
    add("f04-causal-square-dv", 1, 48, 48, 3, 3, 32, 40, 304, causal=True)
    add("f05-causal-decode", 3, 1, 57, 2, 2, 64, 32, 305, causal=True)
    add("f06-gqa-4to1", 2, 33, 65, 8, 2, 16, 16, 306)
    add("f07-gqa-2to1-causal-96", 1, 96, 96, 4, 2, 32, 32, 307, causal=True)
    add("f08-gqa-12to2-causal-decode", 2, 1, 100, 12, 2, 32, 32, 308, causal=True)
    add("f09-mqa-decode", 3, 1, 41, 6, 1, 64, 64, 309)
    add("f10-window-16-inf", 1, 60, 60, 2, 2, 16, 16, 310, window_size=(16, -1))
    add("f11-window-inf-5", 2, 50, 50, 2, 2, 24, 24, 311, window_size=(-1, 5))
    add("f12-window-10-3-sq-gt-sk", 1, 70, 40, 2, 2, 32, 32, 312, window_size=(10, 3))
    add("f13-window-0-4", 1, 45, 45, 2, 2, 16, 16, 313, window_size=(0, 4))
    add("f14-window-8-8-alibi-gqa", 2, 64, 64, 4, 2, 16, 16, 314, window_size=(8, 8), alibi="h")
    add("f15-causal-window-20-sq-lt-sk", 1, 30, 90, 2, 2, 32, 32, 315, causal=True, window_size=(20, -1))
    add("f16-causal-window-6-sq-gt-sk", 1, 80, 50, 2, 2, 16, 24, 316, causal=True, window_size=(6, -1))
    add("f17-softcap-5-scale", 2, 36, 36, 2, 2, 32, 32, 317, softcap=5.0, softmax_scale=0.5)
    add("f18-softcap-3-causal-alibi-bh", 2, 40, 72, 3, 3, 16, 16, 318, causal=True, softcap=3.0, alibi="bh")
    add("f19-alibi-gqa-noncausal", 1, 50, 50, 4, 2, 32, 32, 319, alibi="h")
    add("f20-alibi-bh-causal", 2, 64, 100, 4, 4, 16, 32, 320, causal=True, alibi="bh")
    add("f21-alibi-mqa", 1, 20, 47, 4, 1, 24, 24, 321, alibi="h")
    add("f22-causal-short-q", 1, 3, 70, 2, 2, 16, 16, 322, causal=True)
    return cases


def bwd_cases():
    cases = []

    def add(name, seed, qs, ks, vs, mask=None, scale=None):
        rng = _rng(seed)
        q, k, v = rng.standard_normal(qs), rng.standard_normal(ks), rng.standard_normal(vs)
        batch = np.broadcast_shapes(qs[:-2], ks[:-2])
        d_out = rng.standard_normal(batch + (qs[-2], vs[-1]))
        m = mask(rng) if callable(mask) else mask
        cases.append((name, {"q": q, "k": k, "v": v, "d_out": d_out, "mask": m, "scale": scale}))

    add("b01-3d-nomask", 401, (2, 33, 16), (2, 50, 16), (2, 50, 24))
    add("b02-4d-square-randmask-emptyrow", 402, (2, 3, 40, 32), (2, 3, 40, 32), (2, 3, 40, 32),
        lambda rng: _randmask(rng, (2, 3, 40, 40), 0.6, [(1, 2, 9)]), 0.3)
    add("b03-4d-mqa-padding-zero-len", 403, (2, 4, 25, 24), (2, 1, 70, 24), (2, 1, 70, 12), _pad_mask([70, 0], 70))
    add("b04-2d-causal-64", 404, (64, 8), (64, 8), (64, 8), _tril(64, 64))
    add("b05-4d-decode-leftpad", 405, (3, 2, 1, 40), (3, 2, 40, 40), (3, 2, 40, 20),
        _left_pad_mask([0, 12, 39], 40), 0.5)
    add("b06-4d-96-scale1", 406, (1, 2, 96, 32), (1, 2, 96, 32), (1, 2, 96, 48), None, 1.0)
    add("b07-4d-100x129-randmask", 407, (1, 2, 100, 64), (1, 2, 129, 64), (1, 2, 129, 32),
        lambda rng: _randmask(rng, (1, 1, 100, 129), 0.7))
    add("b08-4d-mqa-square-32", 408, (1, 3, 32, 16), (1, 1, 32, 16), (1, 1, 32, 16))
    dist = np.abs(np.arange(45)[:, None] - np.arange(45)[None, :])
    add("b09-3d-band", 409, (2, 45, 24), (2, 45, 24), (2, 45, 24), dist <= 6, 0.37)
    return cases


# ----------------------------------------------------------------------------------------------------------
# running kernels
# ----------------------------------------------------------------------------------------------------------
def _cast(x, dtype):
    if isinstance(x, np.ndarray) and x.dtype != bool:
        return x.astype(dtype)
    return x


def _ref_inputs(case, dtype):
    """The case's inputs rounded to ``dtype`` (alibi slopes stay float32), as float64 arrays for the reference."""
    out = {}
    for key, val in case.items():
        if key == "alibi_slopes" or not isinstance(val, np.ndarray) or val.dtype == bool:
            out[key] = val
        else:
            out[key] = val.astype(dtype).astype(np.float64)
    return out


def reference(api, case, dtype):
    c = _ref_inputs(case, dtype)
    if api == "refimpl":
        return ref_np(c["q"], c["k"], c["v"], c["mask"], c["scale"])
    if api == "torch-sdpa":
        return ref_sdpa(c["query"], c["key"], c["value"], c["attn_mask"], c["is_causal"], c["scale"],
                        c["enable_gqa"])
    if api == "flash-attn":
        return ref_flash(c["q"], c["k"], c["v"], c["softmax_scale"], c["causal"], c["window_size"], c["softcap"],
                         c["alibi_slopes"])
    return ref_bwd(c["q"], c["k"], c["v"], c["d_out"], c["mask"], c["scale"])


def _to_torch(x):
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x, copy=True))
    return x


def call(api, fn, case, dtype):
    """Call ``fn`` on fresh copies in ``dtype``; returns (result or exception, inputs_unmodified)."""
    c = {key: _cast(val, dtype) if key != "alibi_slopes" else val for key, val in case.items()}
    arrays = {key: val for key, val in c.items() if isinstance(val, np.ndarray)}
    pristine = {key: val.copy() for key, val in arrays.items()}
    if api in ("refimpl", "numpy-backward"):
        args = {key: (val.copy() if isinstance(val, np.ndarray) else val) for key, val in c.items()}
        passed = args
    else:
        args = {key: _to_torch(val) for key, val in c.items()}
        passed = args
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if api == "refimpl":
                res = fn(args["q"], args["k"], args["v"], mask=args["mask"], scale=args["scale"])
            elif api == "numpy-backward":
                res = fn(args["q"], args["k"], args["v"], args["d_out"], mask=args["mask"], scale=args["scale"])
            elif api == "torch-sdpa":
                res = fn(args["query"], args["key"], args["value"], attn_mask=args["attn_mask"], dropout_p=0.0,
                         is_causal=args["is_causal"], scale=args["scale"], enable_gqa=args["enable_gqa"])
            else:
                res = fn(args["q"], args["k"], args["v"], dropout_p=0.0, softmax_scale=args["softmax_scale"],
                         causal=args["causal"], window_size=args["window_size"], softcap=args["softcap"],
                         alibi_slopes=args["alibi_slopes"])
    except Exception as exc:  # a broken kernel may raise; that is a difference
        res = exc
    unmodified = True
    for key, orig in pristine.items():
        now = passed[key]
        now = now.numpy() if isinstance(now, torch.Tensor) else now
        if now.shape != orig.shape or now.dtype != orig.dtype or not np.array_equal(now, orig, equal_nan=True):
            unmodified = False
    return res, unmodified


def _as_numpy(x, api):
    if api in ("refimpl", "numpy-backward"):
        return x if isinstance(x, np.ndarray) else None
    return x.detach().numpy() if isinstance(x, torch.Tensor) else None


def _one_error(out, ref, api, dtype):
    arr = _as_numpy(out, api)
    if arr is None:
        return math.inf, "wrong type"
    if arr.shape != ref.shape:
        return math.inf, "wrong shape %s" % (arr.shape,)
    if arr.dtype != np.dtype(dtype):
        return math.inf, "wrong dtype %s" % arr.dtype
    if not np.all(np.isfinite(arr)):
        return math.inf, "non-finite"
    num = float(np.linalg.norm((arr.astype(np.float64) - ref).ravel()))
    den = float(np.linalg.norm(ref.ravel()))
    return (num / den if den > 0 else num), ""


def error(res, ref, api, dtype):
    """Relative Frobenius error (the worst of dq, dk, dv for the backward); inf for an exception."""
    if isinstance(res, Exception):
        return math.inf, "%s: %s" % (type(res).__name__, str(res).splitlines()[0][:60] if str(res) else "")
    if api == "numpy-backward":
        if not isinstance(res, tuple) or len(res) != 3:
            return math.inf, "not (dq, dk, dv)"
        worst, note = 0.0, ""
        for out, r in zip(res, ref):
            e, n = _one_error(out, r, api, dtype)
            if e > worst or n:
                worst, note = max(worst, e), note or n
        return worst, note
    return _one_error(res, ref, api, dtype)


# ----------------------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------------------
def cross_check(cases_by_api):
    worst = 0.0
    for name, case in cases_by_api["torch-sdpa"]:
        am = case["attn_mask"]
        if am is not None and am.dtype != bool and not np.all((am == 0) | np.isneginf(am)):
            continue
        sq, sk = case["query"].shape[2], case["key"].shape[2]
        keep = np.ones((sq, sk), dtype=bool)
        if case["is_causal"]:
            keep &= _tril(sq, sk)
        if am is not None:
            keep = keep & (am if am.dtype == bool else am == 0)
        rep = case["query"].shape[1] // case["key"].shape[1]
        k, v = np.repeat(case["key"], rep, axis=1), np.repeat(case["value"], rep, axis=1)
        a = ref_sdpa(case["query"], case["key"], case["value"], am, case["is_causal"], case["scale"],
                     case["enable_gqa"])
        b = ref_np(case["query"], k, v, keep, case["scale"])
        worst = max(worst, float(np.max(np.abs(a - b))))
        if am is not None and am.dtype == bool:
            additive = np.where(am, 0.0, -np.inf)
            c = ref_sdpa(case["query"], case["key"], case["value"], additive, case["is_causal"], case["scale"],
                         case["enable_gqa"])
            worst = max(worst, float(np.max(np.abs(c - b))))
    for name, case in cases_by_api["flash-attn"]:
        if case["softcap"] > 0 or case["alibi_slopes"] is not None:
            continue
        q, k, v = case["q"], case["k"], case["v"]
        rep = q.shape[2] // k.shape[2]
        keep = flash_visible(q.shape[1], k.shape[1], case["causal"], case["window_size"])
        a = ref_flash(q, k, v, case["softmax_scale"], case["causal"], case["window_size"])
        b = ref_np(q.transpose(0, 2, 1, 3), np.repeat(k, rep, axis=2).transpose(0, 2, 1, 3),
                   np.repeat(v, rep, axis=2).transpose(0, 2, 1, 3), keep, case["softmax_scale"])
        worst = max(worst, float(np.max(np.abs(a - b.transpose(0, 2, 1, 3)))))
    for name, case in cases_by_api["numpy-backward"]:
        a = ref_bwd(case["q"], case["k"], case["v"], case["d_out"], case["mask"], case["scale"])
        b = autograd_bwd(case["q"], case["k"], case["v"], case["d_out"], case["mask"], case["scale"])
        for x, y in zip(a, b):
            if x.shape != y.shape:
                return math.inf
            worst = max(worst, float(np.max(np.abs(x - y))))
    return worst


def bug_comment_counts(path):
    counts, outside, current = {}, 0, None
    with open(path) as fh:
        for line in fh:
            m = re.match(r"# --- kernel: (\w+) ---\s*$", line)
            if m:
                current = m.group(1)
                counts[current] = 0
                continue
            if "# BUG:" in line:
                if current is None:
                    outside += 1
                else:
                    counts[current] += 1
    return counts, outside


def check_catalog(problems, seen_names, seen_sources):
    for fname, mod, api in MODULES:
        catalog = getattr(mod, "CATALOG", None)
        if not isinstance(catalog, list):
            problems.append("%s: no CATALOG list" % fname)
            continue
        counts, outside = bug_comment_counts(os.path.join(HERE, fname))
        if outside:
            problems.append("%s: %d BUG comment(s) outside kernel sections" % (fname, outside))
        n_broken = n_correct = 0
        feature_sets = set()
        for entry in catalog:
            name = entry.get("name")
            if set(entry) != CATALOG_KEYS:
                problems.append("%s/%s: keys %s" % (fname, name, sorted(set(entry) ^ CATALOG_KEYS)))
                continue
            if name in seen_names:
                problems.append("duplicate name %s" % name)
            seen_names.add(name)
            if entry["api"] != api:
                problems.append("%s: api %s != %s" % (name, entry["api"], api))
            fn = getattr(mod, entry["fn"], None)
            if not callable(fn):
                problems.append("%s: fn %s missing" % (name, entry["fn"]))
            if entry["fn"] not in counts:
                problems.append("%s: no '# --- kernel: %s ---' section" % (name, entry["fn"]))
            if entry["dtype"] not in DTYPES:
                problems.append("%s: dtype %s" % (name, entry["dtype"]))
            feats = entry["features"]
            if not isinstance(feats, list) or not set(feats) <= FEATURES or len(set(feats)) != len(feats):
                problems.append("%s: features %s" % (name, feats))
            else:
                feature_sets.add(tuple(sorted(feats)))
            nbug = counts.get(entry["fn"], 0)
            if entry["correct"] is True:
                n_correct += 1
                if any(entry[key] is not None for key in ("bug", "parameter", "source", "report")):
                    problems.append("%s: correct kernel with bug fields" % name)
                if nbug:
                    problems.append("%s: correct kernel section has %d BUG comments" % (name, nbug))
                if entry["fn"] in TRIGGERS:
                    problems.append("%s: correct kernel has a TRIGGERS entry" % name)
            elif entry["correct"] is False:
                n_broken += 1
                if nbug != 1:
                    problems.append("%s: %d BUG comments in its section (want 1)" % (name, nbug))
                if not isinstance(entry["bug"], str) or not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry["bug"]):
                    problems.append("%s: bug %r not kebab-case" % (name, entry["bug"]))
                par = entry["parameter"]
                if not isinstance(par, str) or "Triggers:" not in par or not par.split("Triggers:")[1].strip():
                    problems.append("%s: parameter without 'Triggers:'" % name)
                src, rep = entry["source"], entry["report"]
                m = re.fullmatch(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)#([0-9]+)", src or "")
                if not m:
                    problems.append("%s: source %r" % (name, src))
                elif not re.fullmatch(r"https://github\.com/%s/(issues|pull)/%s" % (re.escape(m.group(1)), m.group(2)),
                                      rep or ""):
                    problems.append("%s: report %r does not match source %s" % (name, rep, src))
                if src in seen_sources:
                    problems.append("duplicate source %s" % src)
                seen_sources.add(src)
                if not TRIGGERS.get(entry["fn"]):
                    problems.append("%s: no TRIGGERS entry" % name)
            else:
                problems.append("%s: correct must be a bool" % name)
        if n_broken < 6 or n_correct < 2:
            problems.append("%s: %d broken + %d correct (want >= 6 and >= 2)" % (fname, n_broken, n_correct))
        if len(feature_sets) > 1:
            problems.append("%s: kernels list different features" % fname)
        listed = {e.get("fn") for e in catalog}
        for fn in counts:
            if fn not in listed:
                problems.append("%s: section %s not in CATALOG" % (fname, fn))


def main():
    t0 = time.time()
    torch.set_num_threads(1)
    problems = []
    cases_by_api = {"refimpl": numpy_fwd_cases(), "torch-sdpa": sdpa_cases(), "flash-attn": flash_cases(),
                    "numpy-backward": bwd_cases()}
    xc = cross_check(cases_by_api)
    if not xc < XCHECK:
        problems.append("reference cross-check %.3g >= %g" % (xc, XCHECK))
    seen_names, seen_sources = set(), set()
    check_catalog(problems, seen_names, seen_sources)
    for fn_name, listed in TRIGGERS.items():
        owner = [api for _, mod, api in MODULES if any(e["fn"] == fn_name for e in mod.CATALOG)]
        if not owner:
            problems.append("TRIGGERS entry %s has no kernel" % fn_name)
            continue
        known = {name for name, _ in cases_by_api[owner[0]]}
        for case_name in listed:
            if case_name not in known:
                problems.append("TRIGGERS[%s]: unknown case %s" % (fn_name, case_name))

    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): "
          "worst %.2g" % xc)
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    summary = []
    for fname, mod, api in MODULES:
        print("%s (%s)" % (fname, api))
        refs = {(name, dt): reference(api, case, dt) for name, case in cases_by_api[api] for dt in DTYPES}
        n_b = n_c = 0
        for entry in getattr(mod, "CATALOG", []):
            fn = getattr(mod, entry.get("fn", ""), None)
            if not callable(fn):
                continue
            broken = entry["correct"] is False
            n_b += broken
            n_c += not broken
            trig = set(TRIGGERS.get(entry["fn"], ())) if broken else set()
            worst = {dt: 0.0 for dt in DTYPES}
            for name, case in cases_by_api[api]:
                for dt in DTYPES:
                    errs = []
                    for _ in range(2):
                        res, unmodified = call(api, fn, case, dt)
                        if not unmodified:
                            problems.append("%s modified its inputs on %s/%s" % (entry["name"], name, dt))
                        errs.append(error(res, refs[(name, dt)], api, dt))
                    err, note = max(errs, key=lambda x: x[0])
                    worst[dt] = max(worst[dt], err)
                    if name in trig:
                        if dt == entry["dtype"] and not err > DIFFER[dt]:
                            problems.append("%s does not differ on its trigger case %s/%s (%.3g)"
                                            % (entry["name"], name, dt, err))
                    elif not err <= CONFORM[dt]:
                        problems.append("%s does not conform on %s/%s (%.3g %s)"
                                        % (entry["name"], name, dt, err, note))
            status = "broken" if broken else "ok"
            print("  %-44s %-6s f64 %-9.3g f32 %.3g" % (entry["name"], status, worst["float64"], worst["float32"]))
        summary.append("%s %d broken + %d correct" % (fname[:-3], n_b, n_c))
    elapsed = time.time() - t0
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        print("SELF-CHECK FAILED (%.1f s): %d problem(s)" % (elapsed, len(problems)))
        return 1
    print("SELF-CHECK PASSED (%.1f s): %s" % (elapsed, ", ".join(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
