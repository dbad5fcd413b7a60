"""Self-check of the heldout14 kernels: references, triggers, conformance, CATALOG and `# BUG:` markers.

Run: python tests/heldout14/selfcheck.py   (exit status 0 when everything holds, 1 otherwise)
"""
import sys

sys.dont_write_bytecode = True

import copy  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import flash_fwd  # noqa: E402
import numpy_bwd  # noqa: E402
import numpy_fwd  # noqa: E402
import torch_sdpa_fwd  # noqa: E402

torch.set_num_threads(1)
warnings.simplefilter("ignore")

OK_BOUND = {"float64": 1e-10, "float32": 1e-5}
DIFF_BOUND = {"float64": 1e-8, "float32": 1e-4}
NP_DT = {"float64": np.float64, "float32": np.float32}
TORCH_DT = {"float64": torch.float64, "float32": torch.float32}

MODULES = [
    ("numpy_fwd.py", numpy_fwd, "refimpl"),
    ("torch_sdpa_fwd.py", torch_sdpa_fwd, "torch-sdpa"),
    ("flash_fwd.py", flash_fwd, "flash-attn"),
    ("numpy_bwd.py", numpy_bwd, "numpy-backward"),
]

# Case ids on which each broken kernel differs from the reference (its documented trigger). On every other case
# of its module the kernel must conform within the correct-kernel bounds, float64 and float32.
TRIGGERS = {
    "np-aitoolkit-zeroed-embeds-mask": [
        "nf-02-2d-mask", "nf-04-3d-decode", "nf-05-4d-mask", "nf-06-pad-b-eq-h", "nf-07-pad-b-ne-h",
        "nf-08-causal-tl", "nf-09-causal-br", "nf-10-band-heads", "nf-12-mask-b1h", "nf-16-pad-b1",
        "nf-17-4d-mask-scale1"],
    "np-flexflow-logits-unscaled": [
        "nf-01-2d", "nf-02-2d-mask", "nf-03-3d-scale", "nf-04-3d-decode", "nf-05-4d-mask", "nf-06-pad-b-eq-h",
        "nf-07-pad-b-ne-h", "nf-08-causal-tl", "nf-09-causal-br", "nf-10-band-heads", "nf-11-nomask-scale",
        "nf-12-mask-b1h", "nf-14-4d-h1", "nf-15-mask-all-kept", "nf-16-pad-b1"],
    "np-trainllm-embedding-size-scale": [
        "nf-05-4d-mask", "nf-06-pad-b-eq-h", "nf-07-pad-b-ne-h", "nf-08-causal-tl", "nf-09-causal-br",
        "nf-10-band-heads", "nf-15-mask-all-kept", "nf-16-pad-b1"],
    "np-hyunwoongko-mask-missing-head-axis": [
        "nf-06-pad-b-eq-h", "nf-07-pad-b-ne-h", "nf-12-mask-b1h"],
    "np-cubecl-reference-masked-row-nan": [
        "nf-02-2d-mask", "nf-05-4d-mask", "nf-07-pad-b-ne-h", "nf-09-causal-br"],
    "np-speculators-bool-mask-added": [
        "nf-02-2d-mask", "nf-04-3d-decode", "nf-05-4d-mask", "nf-06-pad-b-eq-h", "nf-07-pad-b-ne-h",
        "nf-08-causal-tl", "nf-09-causal-br", "nf-10-band-heads", "nf-12-mask-b1h", "nf-16-pad-b1",
        "nf-17-4d-mask-scale1"],
    "sdpa-textclassifiers-bool-mask-inverted": [
        "sd-02-bool-mask", "sd-03-bool-pad", "sd-12-gqa6-mask", "sd-13-mqa-decode", "sd-17-scale1-mask"],
    "sdpa-executorch-causal-bottom-right": [
        "sd-05-causal-lt", "sd-15-short-causal"],
    "sdpa-pytorch-float-mask-as-bool": [
        "sd-08-float-finite", "sd-10-float-ninf-row"],
    "sdpa-jaxjs-gqa-tile-not-repeat": [
        "sd-11-gqa4", "sd-12-gqa6-mask", "sd-20-gqa2-short"],
    "sdpa-mlx-vector-batch-stride": [
        "sd-13-mqa-decode", "sd-14-decode-b3", "sd-15-short-causal", "sd-20-gqa2-short"],
    "sdpa-hyunwoongko-fill-minus-eps": [
        "sd-02-bool-mask", "sd-03-bool-pad", "sd-12-gqa6-mask", "sd-13-mqa-decode", "sd-17-scale1-mask"],
    "flash-flashinfer-cap-after-mask": [
        "fl-16-softcap3-causal-alibi", "fl-17-softcap4-win"],
    "flash-veomni-repeat-kv-bshd": [
        "fl-22-alibi-gqa-causal", "fl-24-gqa2-causal", "fl-27-mqa-causal", "fl-30-gqa2-win", "fl-31-win-0-0-gqa"],
    "flash-cute-window-negative-sum": [
        "fl-12-win-0-u", "fl-13-win-u-0", "fl-14-causal-win-0-u"],
    "flash-ort-local-window-current-token": [
        "fl-05-win-16-u", "fl-07-win-10-3-gt", "fl-08-win-0-4", "fl-09-win-8-8-alibi", "fl-10-causal-win20-lt",
        "fl-11-causal-win6-gt", "fl-12-win-0-u", "fl-14-causal-win-0-u", "fl-17-softcap4-win", "fl-31-win-0-0-gqa"],
    "flash-xtransformers-alibi-unshifted": [
        "fl-16-softcap3-causal-alibi", "fl-20-alibi-lt", "fl-21-alibi-causal-lt", "fl-29-alibi-gt"],
    "flash-hippogriff-window-negated": [
        "fl-05-win-16-u", "fl-06-win-u-5", "fl-07-win-10-3-gt", "fl-09-win-8-8-alibi", "fl-10-causal-win20-lt",
        "fl-11-causal-win6-gt", "fl-13-win-u-0", "fl-17-softcap4-win", "fl-30-gqa2-win"],
    "bwd-mlfromscratch-softmax-elementwise": [
        "bw-01-2d", "bw-02-2d-mask", "bw-03-3d-scale", "bw-04-3d-decode", "bw-05-4d-mask", "bw-06-pad", "bw-07-mqa",
        "bw-08-mqa-decode-pad", "bw-09-causal-tl", "bw-10-causal-br-gt", "bw-11-sk64", "bw-12-3d-h1-decode",
        "bw-13-3d-dv", "bw-14-mqa-band", "bw-15-scale1", "bw-16-causal-tl-lt", "bw-17-pad-sk32"],
    "bwd-dkernel-do-output-strides": [
        "bw-03-3d-scale", "bw-05-4d-mask", "bw-06-pad", "bw-07-mqa", "bw-09-causal-tl", "bw-10-causal-br-gt",
        "bw-11-sk64", "bw-13-3d-dv", "bw-14-mqa-band", "bw-15-scale1", "bw-16-causal-tl-lt", "bw-17-pad-sk32"],
    "bwd-triton-dkdv-loop-causal-start": [
        "bw-01-2d", "bw-02-2d-mask", "bw-03-3d-scale", "bw-04-3d-decode", "bw-05-4d-mask", "bw-06-pad", "bw-07-mqa",
        "bw-08-mqa-decode-pad", "bw-11-sk64", "bw-12-3d-h1-decode", "bw-13-3d-dv", "bw-14-mqa-band", "bw-15-scale1",
        "bw-17-pad-sk32"],
    "bwd-cudnn-delta-product-16bit": [
        "bw-01-2d", "bw-02-2d-mask", "bw-03-3d-scale", "bw-04-3d-decode", "bw-05-4d-mask", "bw-06-pad", "bw-07-mqa",
        "bw-08-mqa-decode-pad", "bw-09-causal-tl", "bw-10-causal-br-gt", "bw-11-sk64", "bw-12-3d-h1-decode",
        "bw-13-3d-dv", "bw-14-mqa-band", "bw-15-scale1", "bw-16-causal-tl-lt", "bw-17-pad-sk32"],
    "bwd-phasedlstm-broadcast-grad-mean": [
        "bw-07-mqa", "bw-08-mqa-decode-pad", "bw-14-mqa-band"],
    "bwd-rocm-key-tiles-tail-dropped": [
        "bw-01-2d", "bw-02-2d-mask", "bw-04-3d-decode", "bw-07-mqa", "bw-08-mqa-decode-pad", "bw-09-causal-tl",
        "bw-10-causal-br-gt", "bw-13-3d-dv", "bw-14-mqa-band", "bw-15-scale1"],
}


# ----------------------------------------------------------------------------------------------------------
# float64 references, written from the contracts
# ----------------------------------------------------------------------------------------------------------
def ref_core(q, k, v, scale, keep=None, bias=None, softcap=0.0):
    """softmax(cap(q k^T * scale) + bias, masked by keep) v; a row with no visible key gives zeros."""
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if softcap > 0.0:
        s = softcap * np.tanh(s / softcap)
    if bias is not None:
        s = s + bias
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    alive = np.isfinite(m)
    m = np.where(alive, m, 0.0)
    e = np.where(np.isfinite(s), np.exp(s - m), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    p = e / np.where(z > 0.0, z, 1.0)
    return np.matmul(p, v)


def ref_refimpl(q, k, v, mask=None, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    keep = None if mask is None else np.asarray(mask, dtype=bool)
    return ref_core(q, k, v, scale, keep=keep)


def ref_sdpa(query, key, value, attn_mask=None, is_causal=False, scale=None, enable_gqa=False):
    L, S = query.shape[-2], key.shape[-2]
    if enable_gqa and key.shape[1] != query.shape[1]:
        idx = np.arange(query.shape[1]) // (query.shape[1] // key.shape[1])
        key, value = key[:, idx], value[:, idx]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    keep, bias = None, None
    if is_causal:
        keep = np.arange(S)[None, :] <= np.arange(L)[:, None]
    if attn_mask is not None:
        if attn_mask.dtype == bool:
            keep = attn_mask if keep is None else (keep & attn_mask)
        else:
            bias = attn_mask
    return ref_core(query, key, value, scale, keep=keep, bias=bias)


def ref_band(sq, sk, causal, window):
    left, right = window
    if causal:
        right = 0
    i = np.arange(sq)[:, None] + (sk - sq)
    j = np.arange(sk)[None, :]
    keep = np.ones((sq, sk), dtype=bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    idx = np.arange(Hq) // (Hq // Hkv)
    qh = np.swapaxes(q, 1, 2)
    kh = np.swapaxes(k, 1, 2)[:, idx]
    vh = np.swapaxes(v, 1, 2)[:, idx]
    scale = 1.0 / math.sqrt(D) if softmax_scale is None else softmax_scale
    bias = None
    if alibi_slopes is not None:
        dist = np.abs(np.arange(Sq)[:, None] + (Sk - Sq) - np.arange(Sk)[None, :]).astype(np.float64)
        bias = -np.asarray(alibi_slopes, dtype=np.float64).reshape(-1, Hq, 1, 1) * dist
    keep = ref_band(Sq, Sk, causal, window_size)
    out = ref_core(qh, kh, vh, scale, keep=keep, bias=bias, softcap=softcap)
    return np.swapaxes(out, 1, 2)


def ref_backward(q, k, v, d_out, mask=None, scale=None):
    """Analytic gradients of sum(d_out * O); rows with no kept key get zero gradients."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        s = np.where(np.asarray(mask, dtype=bool), s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.where(np.isfinite(s), np.exp(s - m), 0.0)
    z = e.sum(axis=-1, keepdims=True)
    p = e / np.where(z > 0.0, z, 1.0)
    o = np.matmul(p, v)
    dv = np.matmul(np.swapaxes(p, -1, -2), d_out)
    dp = np.matmul(d_out, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(d_out * o, axis=-1, keepdims=True)) * scale
    dq = np.matmul(ds, k)
    dk = np.matmul(np.swapaxes(ds, -1, -2), q)

    def back(g, shape):
        while g.ndim > len(shape):
            g = g.sum(axis=0)
        axes = tuple(a for a, (n, mm) in enumerate(zip(shape, g.shape)) if n == 1 and mm != 1)
        return g.sum(axis=axes, keepdims=True) if axes else g

    return back(dq, q.shape), back(dk, k.shape), back(dv, v.shape)


def autograd_backward(q, k, v, d_out, mask=None, scale=None):
    """The same gradients through torch autograd (float64)."""
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = torch.matmul(tq, tk.transpose(-1, -2)) * scale
    keep = torch.ones(s.shape, dtype=torch.bool)
    if mask is not None:
        keep = torch.broadcast_to(torch.tensor(np.asarray(mask, dtype=bool)), s.shape)
    alive = keep.any(dim=-1, keepdim=True)
    s = torch.where(keep, s, torch.tensor(float("-inf"), dtype=s.dtype))
    s = torch.where(alive, s, torch.zeros_like(s))
    p = torch.softmax(s, dim=-1) * alive
    o = torch.matmul(p, tv)
    (o * torch.tensor(d_out)).sum().backward()
    return tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy()


# ----------------------------------------------------------------------------------------------------------
# seeded cases (float64 masters; float32 runs use the rounded copies)
# ----------------------------------------------------------------------------------------------------------
def rnd(rng, *shape):
    return rng.standard_normal(shape)


def rand_mask(rng, shape, p=0.7, dead_row=True):
    m = rng.random(shape) < p
    m[..., :, 0] |= ~m.any(axis=-1)
    if dead_row:
        m[(0,) * (len(shape) - 2) + (shape[-2] // 2,)] = False
    return m


def pad_keys(lengths, sk, heads_axis=True):
    m = np.arange(sk)[None, :] < np.asarray(lengths)[:, None]
    return m[:, None, None, :] if heads_axis else m[:, None, :]


def left_pad_keys(lengths, sk):
    m = np.arange(sk)[None, :] >= (sk - np.asarray(lengths))[:, None]
    return m[:, None, None, :]


def causal_tl(sq, sk):
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None]


def causal_br(sq, sk):
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None] + (sk - sq)


def band_masks(h, sq, sk, widths):
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    return np.stack([np.abs(i - j) <= w for w in widths])[None]


def np_case(rng, batch, sq, sk, d, dv=None, kv_batch=None, mask=None, scale=None, grad=False):
    dv = d if dv is None else dv
    kb = batch if kv_batch is None else kv_batch
    c = dict(q=rnd(rng, *batch, sq, d), k=rnd(rng, *kb, sk, d), v=rnd(rng, *kb, sk, dv), mask=mask, scale=scale)
    if grad:
        c["d_out"] = rnd(rng, *batch, sq, dv)
    return c


def numpy_fwd_cases():
    r = np.random.default_rng(1401)
    cs = [
        ("nf-01-2d", np_case(r, (), 20, 20, 16)),
        ("nf-02-2d-mask", np_case(r, (), 33, 70, 24, 20, mask=rand_mask(r, (33, 70)))),
        ("nf-03-3d-scale", np_case(r, (3,), 45, 64, 32, 40, scale=0.3)),
        ("nf-04-3d-decode", np_case(r, (2,), 1, 129, 8, mask=rand_mask(r, (2, 1, 129), dead_row=False))),
        ("nf-05-4d-mask", np_case(r, (2, 3), 64, 64, 16, 12, mask=rand_mask(r, (2, 3, 64, 64)))),
        ("nf-06-pad-b-eq-h", np_case(r, (2, 2), 40, 96, 24, mask=pad_keys([96, 57], 96))),
        ("nf-07-pad-b-ne-h", np_case(r, (3, 4), 1, 100, 32, mask=left_pad_keys([100, 0, 61], 100))),
        ("nf-08-causal-tl", np_case(r, (1, 4), 50, 50, 40, mask=causal_tl(50, 50)[None, None])),
        ("nf-09-causal-br", np_case(r, (2, 2), 70, 33, 16, 24, mask=causal_br(70, 33)[None, None])),
        ("nf-10-band-heads", np_case(r, (2, 3), 100, 100, 16, 8, mask=band_masks(3, 100, 100, [3, 10, 40]))),
        ("nf-11-nomask-scale", np_case(r, (3, 2), 17, 129, 64, 48, scale=0.37)),
        ("nf-12-mask-b1h", np_case(r, (2, 1), 20, 20, 16, mask=rand_mask(r, (2, 1, 20, 20), dead_row=False))),
        ("nf-13-3d-scale1", np_case(r, (2,), 31, 40, 24, scale=1.0)),
        ("nf-14-4d-h1", np_case(r, (2, 1), 36, 36, 32)),
        ("nf-15-mask-all-kept", np_case(r, (1, 2), 25, 30, 16, mask=np.ones((1, 2, 25, 30), dtype=bool))),
        ("nf-16-pad-b1", np_case(r, (1, 3), 48, 72, 16, mask=pad_keys([50], 72))),
        ("nf-17-4d-mask-scale1", np_case(r, (2, 2), 24, 64, 32, 20, scale=1.0,
                                         mask=rand_mask(r, (2, 2, 24, 64), dead_row=False))),
    ]
    return cs


def sdpa_case(rng, b, hq, hkv, L, S, d, dv=None, attn_mask=None, is_causal=False, scale=None, gqa=False):
    dv = d if dv is None else dv
    return dict(query=rnd(rng, b, hq, L, d), key=rnd(rng, b, hkv, S, d), value=rnd(rng, b, hkv, S, dv),
                attn_mask=attn_mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)


def float_mask(rng, shape, ninf=None, dead_row=False):
    m = rng.standard_normal(shape)
    if ninf is not None:
        m = np.where(rng.random(shape) < ninf, -np.inf, m)
        m[..., :, 0] = np.where(np.isneginf(m).all(axis=-1), 0.0, m[..., :, 0])
    if dead_row:
        m[(0,) * (len(shape) - 2) + (shape[-2] // 3,)] = -np.inf
    return m


def zero_ninf_mask(rng, shape):
    m = np.where(rng.random(shape) < 0.35, -np.inf, 0.0)
    m[..., :, 0] = 0.0
    m[(0,) * (len(shape) - 2) + (shape[-2] - 1,)] = -np.inf
    return m


def torch_sdpa_cases():
    r = np.random.default_rng(1402)
    return [
        ("sd-01-plain", sdpa_case(r, 2, 4, 4, 64, 64, 16)),
        ("sd-02-bool-mask", sdpa_case(r, 1, 2, 2, 37, 90, 24, 20, attn_mask=rand_mask(r, (1, 2, 37, 90)))),
        ("sd-03-bool-pad", sdpa_case(r, 2, 3, 3, 90, 37, 16, attn_mask=pad_keys([37, 0], 37))),
        ("sd-04-causal-eq", sdpa_case(r, 2, 2, 2, 48, 48, 32, is_causal=True)),
        ("sd-05-causal-lt", sdpa_case(r, 1, 3, 3, 20, 77, 16, 24, is_causal=True)),
        ("sd-06-causal-gt", sdpa_case(r, 2, 2, 2, 77, 20, 16, is_causal=True)),
        ("sd-07-causal-gqa6", sdpa_case(r, 1, 6, 1, 33, 33, 24, is_causal=True, gqa=True)),
        ("sd-08-float-finite", sdpa_case(r, 2, 2, 2, 40, 56, 16, attn_mask=float_mask(r, (2, 2, 40, 56)))),
        ("sd-09-float-0-ninf", sdpa_case(r, 1, 3, 3, 45, 64, 32, 40, attn_mask=zero_ninf_mask(r, (1, 1, 45, 64)))),
        ("sd-10-float-ninf-row", sdpa_case(r, 2, 2, 2, 30, 70, 16,
                                           attn_mask=float_mask(r, (2, 1, 30, 70), ninf=0.2, dead_row=True))),
        ("sd-11-gqa4", sdpa_case(r, 2, 8, 2, 64, 64, 16, 12, gqa=True)),
        ("sd-12-gqa6-mask", sdpa_case(r, 1, 12, 2, 29, 81, 32, gqa=True,
                                      attn_mask=rand_mask(r, (1, 1, 29, 81), dead_row=False))),
        ("sd-13-mqa-decode", sdpa_case(r, 2, 8, 1, 1, 129, 64, 48, gqa=True, attn_mask=pad_keys([129, 70], 129))),
        ("sd-14-decode-b3", sdpa_case(r, 3, 2, 2, 1, 100, 24)),
        ("sd-15-short-causal", sdpa_case(r, 2, 3, 3, 5, 64, 16, is_causal=True)),
        ("sd-16-scale05", sdpa_case(r, 1, 2, 2, 32, 32, 32, 48, scale=0.5)),
        ("sd-17-scale1-mask", sdpa_case(r, 1, 2, 2, 24, 40, 8, scale=1.0,
                                        attn_mask=rand_mask(r, (1, 2, 24, 40), dead_row=False))),
        ("sd-18-short-b1", sdpa_case(r, 1, 4, 4, 8, 8, 16)),
        ("sd-19-dv-lt-d", sdpa_case(r, 1, 2, 2, 100, 129, 64, 32)),
        ("sd-20-gqa2-short", sdpa_case(r, 2, 4, 2, 3, 50, 16, gqa=True)),
        ("sd-21-causal-mqa-long", sdpa_case(r, 1, 4, 1, 96, 96, 16, is_causal=True, gqa=True)),
    ]


def flash_case(rng, b, sq, sk, hq, hkv, d, dv=None, causal=False, window=(-1, -1), softcap=0.0, alibi=None,
               scale=None):
    dv = d if dv is None else dv
    slopes = None
    if alibi == "h":
        slopes = 2.0 ** (-8.0 * np.arange(1, hq + 1) / hq)
    elif alibi == "bh":
        slopes = rng.uniform(0.05, 0.6, size=(b, hq))
    return dict(q=rnd(rng, b, sq, hq, d), k=rnd(rng, b, sk, hkv, d), v=rnd(rng, b, sk, hkv, dv),
                softmax_scale=scale, causal=causal, window_size=window, softcap=softcap, alibi_slopes=slopes)


def flash_cases():
    r = np.random.default_rng(1403)
    return [
        ("fl-01-plain", flash_case(r, 2, 64, 64, 4, 4, 16)),
        ("fl-02-causal-eq", flash_case(r, 1, 50, 50, 2, 2, 32, causal=True)),
        ("fl-03-causal-lt", flash_case(r, 2, 20, 77, 2, 2, 16, 24, causal=True)),
        ("fl-04-causal-gt", flash_case(r, 1, 77, 20, 3, 3, 16, causal=True)),
        ("fl-05-win-16-u", flash_case(r, 1, 80, 80, 2, 2, 16, window=(16, -1))),
        ("fl-06-win-u-5", flash_case(r, 1, 60, 60, 2, 2, 24, window=(-1, 5))),
        ("fl-07-win-10-3-gt", flash_case(r, 2, 90, 40, 2, 2, 16, window=(10, 3))),
        ("fl-08-win-0-4", flash_case(r, 1, 45, 45, 3, 3, 16, window=(0, 4))),
        ("fl-09-win-8-8-alibi", flash_case(r, 1, 64, 64, 4, 4, 16, window=(8, 8), alibi="h")),
        ("fl-10-causal-win20-lt", flash_case(r, 1, 30, 100, 2, 2, 32, causal=True, window=(20, -1))),
        ("fl-11-causal-win6-gt", flash_case(r, 1, 70, 50, 2, 2, 16, causal=True, window=(6, -1))),
        ("fl-12-win-0-u", flash_case(r, 1, 40, 40, 2, 2, 16, window=(0, -1))),
        ("fl-13-win-u-0", flash_case(r, 1, 33, 60, 2, 2, 16, window=(-1, 0))),
        ("fl-14-causal-win-0-u", flash_case(r, 1, 24, 24, 2, 2, 16, causal=True, window=(0, -1))),
        ("fl-15-softcap5-scale", flash_case(r, 1, 48, 48, 2, 2, 32, softcap=5.0, scale=0.37)),
        ("fl-16-softcap3-causal-alibi", flash_case(r, 2, 40, 72, 2, 2, 16, causal=True, softcap=3.0, alibi="bh")),
        ("fl-17-softcap4-win", flash_case(r, 1, 64, 64, 2, 2, 16, window=(12, 2), softcap=4.0)),
        ("fl-18-alibi-h", flash_case(r, 1, 56, 56, 4, 4, 16, alibi="h")),
        ("fl-19-alibi-bh-causal", flash_case(r, 2, 33, 33, 2, 2, 16, causal=True, alibi="bh")),
        ("fl-20-alibi-lt", flash_case(r, 1, 30, 90, 2, 2, 16, alibi="h")),
        ("fl-21-alibi-causal-lt", flash_case(r, 1, 25, 75, 2, 2, 24, causal=True, alibi="h")),
        ("fl-22-alibi-gqa-causal", flash_case(r, 1, 40, 40, 8, 2, 16, causal=True, alibi="h")),
        ("fl-23-gqa4", flash_case(r, 2, 64, 64, 8, 2, 16, 12)),
        ("fl-24-gqa2-causal", flash_case(r, 1, 64, 64, 4, 2, 16, causal=True)),
        ("fl-25-gqa6-decode-causal", flash_case(r, 2, 1, 129, 12, 2, 64, 48, causal=True)),
        ("fl-26-mqa-decode", flash_case(r, 1, 1, 100, 6, 1, 32)),
        ("fl-27-mqa-causal", flash_case(r, 1, 48, 48, 4, 1, 16, causal=True)),
        ("fl-28-dv-lt-d", flash_case(r, 1, 100, 129, 2, 2, 64, 32)),
        ("fl-29-alibi-gt", flash_case(r, 1, 90, 40, 2, 2, 16, alibi="h")),
        ("fl-30-gqa2-win", flash_case(r, 1, 50, 50, 4, 2, 16, window=(-1, 5))),
        ("fl-31-win-0-0-gqa", flash_case(r, 1, 40, 40, 4, 2, 8, window=(0, 0))),
    ]


def numpy_bwd_cases():
    r = np.random.default_rng(1404)
    return [
        ("bw-01-2d", np_case(r, (), 20, 20, 16, grad=True)),
        ("bw-02-2d-mask", np_case(r, (), 33, 70, 24, 20, mask=rand_mask(r, (33, 70)), grad=True)),
        ("bw-03-3d-scale", np_case(r, (3,), 45, 64, 32, 40, scale=0.3, grad=True)),
        ("bw-04-3d-decode", np_case(r, (2,), 1, 129, 8, mask=rand_mask(r, (2, 1, 129), dead_row=False), grad=True)),
        ("bw-05-4d-mask", np_case(r, (2, 3), 64, 64, 16, 12, mask=rand_mask(r, (2, 3, 64, 64)), grad=True)),
        ("bw-06-pad", np_case(r, (2, 4), 40, 96, 24, mask=pad_keys([96, 0], 96), grad=True)),
        ("bw-07-mqa", np_case(r, (2, 4), 50, 50, 16, kv_batch=(2, 1), grad=True)),
        ("bw-08-mqa-decode-pad", np_case(r, (2, 6), 1, 100, 32, kv_batch=(2, 1), mask=pad_keys([100, 41], 100),
                                         grad=True)),
        ("bw-09-causal-tl", np_case(r, (2, 2), 48, 48, 16, mask=causal_tl(48, 48)[None, None], grad=True)),
        ("bw-10-causal-br-gt", np_case(r, (1, 2), 70, 33, 16, 24, mask=causal_br(70, 33)[None, None], grad=True)),
        ("bw-11-sk64", np_case(r, (1, 2), 17, 64, 32, grad=True)),
        ("bw-12-3d-h1-decode", np_case(r, (1,), 1, 32, 16, grad=True)),
        ("bw-13-3d-dv", np_case(r, (2,), 100, 129, 64, 48, grad=True)),
        ("bw-14-mqa-band", np_case(r, (1, 3), 60, 60, 16, kv_batch=(1, 1), mask=band_masks(3, 60, 60, [2, 9, 30]),
                                   grad=True)),
        ("bw-15-scale1", np_case(r, (2, 2), 30, 30, 8, scale=1.0, grad=True)),
        ("bw-16-causal-tl-lt", np_case(r, (1, 2), 20, 90, 16, mask=causal_tl(20, 90)[None, None], grad=True)),
        ("bw-17-pad-sk32", np_case(r, (2, 2), 24, 32, 16, mask=pad_keys([32, 20], 32), grad=True)),
    ]


CASES = {
    "numpy_fwd.py": numpy_fwd_cases(),
    "torch_sdpa_fwd.py": torch_sdpa_cases(),
    "flash_fwd.py": flash_cases(),
    "numpy_bwd.py": numpy_bwd_cases(),
}


# ----------------------------------------------------------------------------------------------------------
# running one kernel on one case
# ----------------------------------------------------------------------------------------------------------
def rounded(case, dtype):
    """The case in `dtype` (arrays rounded; bool masks and python numbers unchanged)."""
    out = {}
    for key, val in case.items():
        if isinstance(val, np.ndarray) and val.dtype != bool and key != "alibi_slopes":
            out[key] = val.astype(NP_DT[dtype])
        elif key == "alibi_slopes" and val is not None:
            out[key] = val.astype(np.float32)
        else:
            out[key] = val
    return out


def reference(fname, case):
    c = {key: (val.astype(np.float64) if isinstance(val, np.ndarray) and val.dtype != bool else val)
         for key, val in case.items()}
    if fname == "numpy_fwd.py":
        return [ref_refimpl(c["q"], c["k"], c["v"], c["mask"], c["scale"])]
    if fname == "torch_sdpa_fwd.py":
        return [ref_sdpa(c["query"], c["key"], c["value"], c["attn_mask"], c["is_causal"], c["scale"],
                         c["enable_gqa"])]
    if fname == "flash_fwd.py":
        return [ref_flash(c["q"], c["k"], c["v"], c["softmax_scale"], c["causal"], c["window_size"], c["softcap"],
                          c["alibi_slopes"])]
    return list(ref_backward(c["q"], c["k"], c["v"], c["d_out"], c["mask"], c["scale"]))


def call(fname, fn, case, dtype):
    """Call the kernel on fresh copies; return (outputs as float64 arrays or None, problem text or None)."""
    c = copy.deepcopy(case)
    if fname in ("numpy_fwd.py", "numpy_bwd.py"):
        args = dict(q=c["q"], k=c["k"], v=c["v"], mask=c["mask"], scale=c["scale"])
        if fname == "numpy_bwd.py":
            args = dict(q=c["q"], k=c["k"], v=c["v"], d_out=c["d_out"], mask=c["mask"], scale=c["scale"])
        before = {key: val.copy() for key, val in args.items() if isinstance(val, np.ndarray)}
        res = fn(**args)
        for key, val in before.items():
            if not np.array_equal(val, args[key]):
                return None, "input %s modified" % key
        res = list(res) if fname == "numpy_bwd.py" else [res]
        shapes = [c["q"].shape, c["k"].shape, c["v"].shape] if fname == "numpy_bwd.py" else None
        outs = []
        for n, r in enumerate(res):
            if not isinstance(r, np.ndarray):
                return None, "not an ndarray"
            if r.dtype != NP_DT[dtype]:
                return None, "dtype %s" % r.dtype
            if shapes is not None and r.shape != shapes[n]:
                return None, "shape %s" % (r.shape,)
            outs.append(r.astype(np.float64))
        return outs, None
    tdt = TORCH_DT[dtype]
    if fname == "torch_sdpa_fwd.py":
        mask = c["attn_mask"]
        if mask is not None:
            mask = torch.tensor(mask) if mask.dtype == bool else torch.tensor(mask, dtype=tdt)
        args = dict(query=torch.tensor(c["query"], dtype=tdt), key=torch.tensor(c["key"], dtype=tdt),
                    value=torch.tensor(c["value"], dtype=tdt))
        kw = dict(attn_mask=mask, dropout_p=0.0, is_causal=c["is_causal"], scale=c["scale"],
                  enable_gqa=c["enable_gqa"])
        before = [t.clone() for t in list(args.values()) + ([mask] if mask is not None else [])]
        res = fn(args["query"], args["key"], args["value"], **kw)
        after = list(args.values()) + ([mask] if mask is not None else [])
    else:
        slopes = c["alibi_slopes"]
        if slopes is not None:
            slopes = torch.tensor(slopes, dtype=torch.float32)
        args = dict(q=torch.tensor(c["q"], dtype=tdt), k=torch.tensor(c["k"], dtype=tdt),
                    v=torch.tensor(c["v"], dtype=tdt))
        before = [t.clone() for t in list(args.values()) + ([slopes] if slopes is not None else [])]
        res = fn(args["q"], args["k"], args["v"], dropout_p=0.0, softmax_scale=c["softmax_scale"],
                 causal=c["causal"], window_size=c["window_size"], softcap=c["softcap"], alibi_slopes=slopes)
        after = list(args.values()) + ([slopes] if slopes is not None else [])
    for b, a in zip(before, after):
        if not torch.equal(b, a):
            return None, "input modified"
    if not isinstance(res, torch.Tensor):
        return None, "not a tensor"
    if res.dtype != tdt:
        return None, "dtype %s" % res.dtype
    return [res.detach().numpy().astype(np.float64)], None


def rel_error(outs, refs):
    worst = 0.0
    for o, r in zip(outs, refs):
        if o.shape != r.shape:
            return math.inf
        if not np.all(np.isfinite(o)):
            return math.inf
        den = np.linalg.norm(r)
        err = np.linalg.norm(o - r)
        worst = max(worst, err / den if den > 0 else err)
    return worst


def judge(fname, fn, case, dtype):
    """Worse relative error of two calls (inf for an exception, non-finite values, wrong shape or dtype)."""
    rc = rounded(case, dtype)
    refs = reference(fname, rc)
    worst, note = 0.0, None
    for _ in range(2):
        try:
            with np.errstate(all="ignore"):
                outs, problem = call(fname, fn, rc, dtype)
        except Exception as exc:  # a kernel may raise on its trigger
            outs, problem = None, "raised %s" % type(exc).__name__
        if outs is None:
            if problem is not None and problem.startswith("input"):
                note = problem
            worst = math.inf
            continue
        worst = max(worst, rel_error(outs, refs))
    return worst, note


# ----------------------------------------------------------------------------------------------------------
# static checks: CATALOG and `# BUG:` markers
# ----------------------------------------------------------------------------------------------------------
KEYS = {"name", "api", "fn", "correct", "bug", "parameter", "source", "report", "dtype", "features"}
FEATURES = {
    "refimpl": {"mask"},
    "torch-sdpa": {"mask", "causal", "gqa", "dv-ne-d"},
    "flash-attn": {"causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"},
    "numpy-backward": {"mask"},
}


def check_catalog(fname, mod, api, problems, names, sources):
    cat = getattr(mod, "CATALOG", None)
    if not isinstance(cat, list):
        problems.append("%s: no CATALOG list" % fname)
        return []
    broken = correct = 0
    for e in cat:
        tag = "%s: %s" % (fname, e.get("name"))
        if set(e) != KEYS:
            problems.append("%s: keys %s" % (tag, sorted(set(e) ^ KEYS)))
            continue
        if e["name"] in names:
            problems.append("%s: duplicate name" % tag)
        names.add(e["name"])
        if e["api"] != api:
            problems.append("%s: api %s" % (tag, e["api"]))
        if not callable(getattr(mod, e["fn"], None)):
            problems.append("%s: fn %s missing" % (tag, e["fn"]))
        if e["dtype"] not in ("float64", "float32"):
            problems.append("%s: dtype %s" % (tag, e["dtype"]))
        if not isinstance(e["features"], list) or not set(e["features"]) <= FEATURES[api]:
            problems.append("%s: features %s" % (tag, e["features"]))
        if e["correct"] is True:
            correct += 1
            if any(e[key] is not None for key in ("bug", "parameter", "source", "report")):
                problems.append("%s: correct kernel with bug fields" % tag)
            if e["name"] in TRIGGERS:
                problems.append("%s: TRIGGERS entry for a correct kernel" % tag)
        elif e["correct"] is False:
            broken += 1
            if not (isinstance(e["bug"], str) and re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", e["bug"])):
                problems.append("%s: bug not kebab-case" % tag)
            if not (isinstance(e["parameter"], str) and "Triggers:" in e["parameter"]):
                problems.append("%s: parameter lacks 'Triggers:'" % tag)
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)#([0-9]+)", e["source"] or "")
            if not m:
                problems.append("%s: source %r" % (tag, e["source"]))
            else:
                url = r"https://github\.com/%s/%s/(issues|pull)/%s" % (re.escape(m.group(1)), re.escape(m.group(2)),
                                                                       m.group(3))
                if not re.fullmatch(url, e["report"] or ""):
                    problems.append("%s: report %r does not match source" % (tag, e["report"]))
            if e["source"] in sources:
                problems.append("%s: source cited twice" % tag)
            sources.add(e["source"])
            if e["name"] not in TRIGGERS:
                problems.append("%s: no TRIGGERS entry" % tag)
        else:
            problems.append("%s: correct is not a bool" % tag)
    if broken < 6 or correct < 2:
        problems.append("%s: %d broken, %d correct" % (fname, broken, correct))
    return cat


def check_markers(fname, cat, problems):
    text = open(os.path.join(HERE, fname)).read()
    parts = re.split(r"^# --- kernel: (\w+) ---$", text, flags=re.M)
    if "# BUG:" in parts[0]:
        problems.append("%s: '# BUG:' outside the kernel sections" % fname)
    sections = dict(zip(parts[1::2], parts[2::2]))
    for e in cat:
        body = sections.get(e["fn"])
        if body is None:
            problems.append("%s: no section for %s" % (fname, e["fn"]))
            continue
        n = body.count("# BUG:")
        want = 0 if e["correct"] else 1
        if n != want:
            problems.append("%s: section %s has %d '# BUG:' comments, expected %d" % (fname, e["fn"], n, want))


# ----------------------------------------------------------------------------------------------------------
def cross_check():
    """References against each other: sdpa/flash vs NumPy with explicit masks, backward vs torch autograd."""
    r = np.random.default_rng(7)
    worst = 0.0
    q, k, v = rnd(r, 2, 3, 30, 16), rnd(r, 2, 3, 50, 16), rnd(r, 2, 3, 50, 12)
    worst = max(worst, np.abs(ref_sdpa(q, k, v, is_causal=True) - ref_refimpl(q, k, v, causal_tl(30, 50))).max())
    q2, k2, v2 = rnd(r, 1, 2, 40, 8), rnd(r, 1, 2, 25, 8), rnd(r, 1, 2, 25, 8)
    worst = max(worst, np.abs(ref_sdpa(q2, k2, v2, is_causal=True) - ref_refimpl(q2, k2, v2, causal_tl(40, 25))).max())
    keep = rand_mask(r, (2, 3, 30, 50))
    add = np.where(keep, 0.0, -np.inf)
    worst = max(worst, np.abs(ref_sdpa(q, k, v, attn_mask=add) - ref_refimpl(q, k, v, keep)).max())
    fq, fk, fv = (np.swapaxes(a, 1, 2) for a in (q, k, v))
    for causal, window in ((True, (-1, -1)), (True, (7, -1)), (False, (5, 3))):
        got = ref_flash(fq, fk, fv, causal=causal, window_size=window)
        want = ref_refimpl(q, k, v, ref_band(30, 50, causal, window))
        worst = max(worst, np.abs(np.swapaxes(got, 1, 2) - want).max())
    got = ref_flash(np.swapaxes(q2, 1, 2), np.swapaxes(k2, 1, 2), np.swapaxes(v2, 1, 2), causal=True)
    worst = max(worst, np.abs(np.swapaxes(got, 1, 2) - ref_refimpl(q2, k2, v2, causal_br(40, 25))).max())
    for _, c in CASES["numpy_bwd.py"]:
        a = ref_backward(c["q"], c["k"], c["v"], c["d_out"], c["mask"], c["scale"])
        b = autograd_backward(c["q"], c["k"], c["v"], c["d_out"], c["mask"], c["scale"])
        for x, y in zip(a, b):
            worst = max(worst, np.abs(x - y).max() / max(1.0, np.abs(y).max()))
    return worst


def main():
    t0 = time.time()
    problems = []
    worst_ref = cross_check()
    print("reference cross-check (sdpa/flash vs NumPy with explicit masks, backward vs torch autograd): worst %.2g"
          % worst_ref)
    if not worst_ref < 1e-12:
        problems.append("reference cross-check %.3g" % worst_ref)
    names, sources = set(), set()
    summary = []
    print("worst relative error per kernel over all cases (inf = non-finite, wrong shape/dtype or error)")
    for fname, mod, api in MODULES:
        cat = check_catalog(fname, mod, api, problems, names, sources)
        check_markers(fname, cat, problems)
        print("%s (%s)" % (fname, api))
        cases = CASES[fname]
        ids = [cid for cid, _ in cases]
        nb = nc = 0
        for e in cat:
            fn = getattr(mod, e["fn"], None)
            if fn is None:
                continue
            trig = set(TRIGGERS.get(e["name"], []))
            for t in trig - set(ids):
                problems.append("%s: TRIGGERS case %s unknown" % (e["name"], t))
            worst = {"float64": 0.0, "float32": 0.0}
            for cid, case in cases:
                for dtype in ("float64", "float32"):
                    err, note = judge(fname, fn, case, dtype)
                    worst[dtype] = max(worst[dtype], err)
                    if note:
                        problems.append("%s %s %s: %s" % (e["name"], cid, dtype, note))
                    if e["correct"] or cid not in trig:
                        if not err <= OK_BOUND[dtype]:
                            problems.append("%s %s %s: error %.3g above %.0e"
                                            % (e["name"], cid, dtype, err, OK_BOUND[dtype]))
                    elif dtype == e["dtype"] and not err > DIFF_BOUND[dtype]:
                        problems.append("%s %s %s: trigger case does not differ (%.3g)"
                                        % (e["name"], cid, dtype, err))
            if e["correct"]:
                nc += 1
            else:
                nb += 1
            status = "ok" if e["correct"] else "broken"
            print("  %-44s %-6s f64 %-9.3g f32 %.3g" % (e["name"], status, worst["float64"], worst["float32"]))
        summary.append("%s %d broken + %d correct" % (fname[:-3], nb, nc))
    for name in TRIGGERS:
        if name not in names:
            problems.append("TRIGGERS entry %s has no CATALOG entry" % name)
    dt = time.time() - t0
    if problems:
        for p in problems:
            print("PROBLEM:", p)
        print("SELF-CHECK FAILED (%.1f s): %d problem(s)" % (dt, len(problems)))
        return 1
    print("SELF-CHECK PASSED (%.1f s): %s" % (dt, ", ".join(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
