"""torch's fused multi-head attention kernel (``torch._native_multi_head_attention``, torch 1.13, CPU) as a target.

With identity projections (``in_proj = [I; I; I]``, ``out_proj = I``, biases 0) the kernel computes,
for inputs (B, S, E) split into ``num_heads`` heads of D = E / num_heads features (head h owns
features h*D .. h*D + D - 1)::

    weights[b, h] = softmax(q_h k_h^T / sqrt(D), masked)      (S, D) x (D, S) -> (S, S)
    output[b, :, h*D:(h+1)*D] = weights[b, h] v_h              (S, S) x (S, D) -> (S, D)

(multiplying by I and adding 0 is exact, so the projections add no rounding). With ``num_heads=1``
this is exactly ``softmax(q k^T / sqrt(E)) v``.

What the kernel accepts, found by running it (torch 1.13.0, CPU):

* q, k and v of one shape (B, S, E): "expected `query`/`key`/`value` shapes to match" otherwise, so
  Sq == Sk and D == Dv; float32 and float64 (float16: "addmm_impl_cpu_ not implemented for 'Half'").
* Masks only with ``mask_type=1``: a (B, S) key-padding mask or a full (B, num_heads, S, S) mask.
  ``mask_type=0`` (an (S, S) attention mask) fails on CPU ("src_mask not currently supported on CPU",
  or a batch-size check). **True means masked out** (the opposite of refimpl's keep-mask).
* A float mask is not added to the scores: any nonzero value masks the key, like True.
* A query with every key masked gets NaN weights and a NaN output (refimpl: zeros).

The adapters below take refimpl's conventions (bool keep-mask, True = attend) and translate.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["torch_mha_attend", "torch_mha_target"]

MHA_TYPES = ("float32", "float64")      # what the fused CPU kernel runs


def torch_mha_attend(q, k, v, mask=None, *, num_heads: int = 1):
    """Run ``torch._native_multi_head_attention`` with identity projections on NumPy inputs.

    Args:
      q, k, v: (B, S, E) arrays of one shape and dtype (float32 or float64); E divisible by num_heads.
      mask: None or a bool keep-mask (True = attend), broadcastable to (B, num_heads, S, S). It is
        inverted and expanded to the kernel's full (B, num_heads, S, S) form, ``mask_type=1``.
      num_heads: heads the kernel splits E into (D = E / num_heads, scale 1/sqrt(D)).

    Returns ``(output (B, S, E), weights (B, num_heads, S, S))`` as NumPy arrays in the inputs' dtype.
    Raises ValueError naming the argument when the kernel cannot take the inputs.
    """
    import torch
    q, k, v = (np.asarray(a) for a in (q, k, v))
    if q.ndim != 3 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must be (B, S, E) arrays of one shape, got {q.shape}, {k.shape}, {v.shape}")
    if q.dtype.name not in MHA_TYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must all be float32 or all float64, got {q.dtype}, {k.dtype}, {v.dtype}")
    b, s, e = q.shape
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or e % num_heads:
        raise ValueError(f"num_heads must be a positive int dividing E={e}, got {num_heads!r}")
    masked = None
    if mask is not None:
        keep = np.asarray(mask)
        if keep.dtype != bool:
            raise ValueError(f"mask must be a bool keep-mask (True = attend), got dtype {keep.dtype} "
                             "(the kernel would read a float mask as boolean, divergence M2)")
        try:
            keep = np.broadcast_to(keep, (b, num_heads, s, s))
        except ValueError:
            raise ValueError(f"mask must broadcast to (B, num_heads, S, S) = {(b, num_heads, s, s)}, "
                             f"got {np.shape(mask)}") from None
        masked = torch.from_numpy(np.ascontiguousarray(~keep))      # kernel: True = masked out
    tq, tk, tv = (torch.from_numpy(np.array(a, copy=True)) for a in (q, k, v))
    eye = torch.eye(e, dtype=tq.dtype)
    zeros = torch.zeros(e, dtype=tq.dtype)
    with torch.no_grad():
        out, w = torch._native_multi_head_attention(
            tq, tk, tv, e, num_heads,
            torch.cat([eye, eye, eye]), torch.zeros(3 * e, dtype=tq.dtype),    # in_proj (3E, E), bias (3E,)
            eye, zeros,                                                        # out_proj (E, E), bias (E,)
            masked, True, False, None if masked is None else 1)                # need_weights, per-head weights
    return out.numpy(), (None if w is None else w.numpy())


def torch_mha_target(q, k, v, mask=None, scale=None):
    """The target protocol (layout "BHSD"): q, k, v (B, H, S, D) -> ``(output (B, H, S, D), weights (B, H, S, S))``.

    Heads become the kernel's heads: (B, H, S, D) -> (B, S, H*D), ``num_heads=H``. A ``scale`` other than
    1/sqrt(D) is applied by multiplying q by ``scale * sqrt(D)`` first (the kernel divides by sqrt(D)).
    """
    q, k, v = (np.asarray(a) for a in (q, k, v))
    if q.ndim != 4:
        raise ValueError(f"q must be (B, H, S, D), got shape {q.shape}")
    b, h, s, d = q.shape
    if scale is not None:
        q = q * np.asarray(scale * math.sqrt(d), dtype=q.dtype)

    def merge(a):                                                   # (B, H, S, D) -> (B, S, H*D)
        a = np.broadcast_to(a, (b, h) + a.shape[-2:])
        return np.ascontiguousarray(np.swapaxes(a, 1, 2)).reshape(b, a.shape[2], h * a.shape[3])

    out, w = torch_mha_attend(merge(q), merge(k), merge(v), mask, num_heads=h)
    return np.swapaxes(out.reshape(b, s, h, d), 1, 2), w           # (B, S, H*D) -> (B, H, S, D)
