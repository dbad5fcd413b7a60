"""Multi-head attention with per-head projection weights and an output projection W_o."""
from __future__ import annotations

import numpy as np

from ._checks import (InputTypeError, InputValueError, ShapeError, as_float_array, check_choice,
                      result_dtype)
from .attention import scaled_dot_product_attention

__all__ = ["multi_head_attention", "multi_head_with", "split_heads"]


def multi_head_attention(x, w_q, w_k, w_v, w_o=None, *, mask=None, scale=None, is_causal=False,
                         weights_layout="in_out"):
    """Multi-head self-attention.

    For each head ``h`` (the einsum ``'sd,hde->hse'`` of the Politi tutorial):

        q_h = x @ W_q[h],  k_h = x @ W_k[h],  v_h = x @ W_v[h]
        z_h, a_h = sdpa(q_h, k_h, v_h)                 scale default 1/sqrt(d_head)
        output = concat_h(z_h) @ W_o                   (concat along features, head 0 first)

    Args:
      x: (B..., S, d_model).
      w_q, w_k: (H, d_model, d_head); w_v: (H, d_model, d_v) for ``weights_layout="in_out"``;
        (H, d_head, d_model) / (H, d_v, d_model) for ``"out_in"`` (the Raschka ``W @ x`` convention).
      w_o: (H*d_v, d_out) for "in_out", (d_out, H*d_v) for "out_in"; ``None`` returns the concatenated
        heads (B..., S, H*d_v) unprojected.
      mask: broadcastable to (B..., H, S, S); is_causal as in sdpa.
    Returns ``(output, weights)``: (B..., S, d_out) and (B..., H, S, S). The output is float32 only if
    x and every weight matrix (w_o included) are float32, as for q, k and v in sdpa; otherwise float64.
    """
    return multi_head_with(scaled_dot_product_attention, x, w_q, w_k, w_v, w_o, mask=mask, scale=scale,
                           is_causal=is_causal, weights_layout=weights_layout)


def multi_head_with(attend, x, w_q, w_k, w_v, w_o=None, *, mask=None, scale=None, is_causal=False,
                    weights_layout="in_out"):
    """:func:`multi_head_attention` with the per-head attention done by ``attend(q, k, v, mask=, scale=,
    is_causal=) -> (output, weights)`` (refimpl's sdpa, or an implementation under test)."""
    check_choice(weights_layout, "weights_layout", ("in_out", "out_in"))
    x = as_float_array(x, "x", min_ndim=2, dims="(..., seq_len, d_model)")
    dims = "(n_heads, d_model, d_head)" if weights_layout == "in_out" else "(n_heads, d_head, d_model)"
    ws = [as_float_array(w, n, ndim=3, dims=dims) for n, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v))]
    d_model = x.shape[-1]
    in_axis = -2 if weights_layout == "in_out" else -1
    for n, w in zip(("w_q", "w_k", "w_v"), ws):
        if w.shape[in_axis] != d_model:
            raise ShapeError(f"{n} must have d_model={d_model} along axis {in_axis} {dims}, got {n}.shape={w.shape}")
        if w.shape[0] != ws[0].shape[0]:
            raise ShapeError(f"w_q, w_k and w_v must have the same number of heads (axis 0), "
                             f"got w_q.shape={ws[0].shape}, {n}.shape={w.shape}")
    if weights_layout == "out_in":
        ws = [np.swapaxes(w, -1, -2) for w in ws]
    wq, wk, wv = ws                                        # (H, d_model, d_*)
    xh = x[..., None, :, :]                                # (B..., 1, S, d_model)
    q, k, v = xh @ wq, xh @ wk, xh @ wv                 # (B..., 1, S, d_model) x (H, d_model, d_*) -> (B..., H, S, d_*)
    z, a = attend(q, k, v, mask=mask, scale=scale, is_causal=is_causal)
    n_heads, seq, d_v = z.shape[-3], z.shape[-2], z.shape[-1]
    concat = np.moveaxis(z, -3, -2).reshape(z.shape[:-3] + (seq, n_heads * d_v))  # (B..., S, H*d_v)
    if w_o is None:
        return concat, a
    w_o = as_float_array(w_o, "w_o", ndim=2, dims="(H*d_v, d_out)" if weights_layout == "in_out" else "(d_out, H*d_v)")
    if weights_layout == "out_in":
        w_o = w_o.T
    if w_o.shape[0] != n_heads * d_v:
        raise ShapeError(f"w_o must have n_heads*d_v = {n_heads}*{d_v} = {n_heads * d_v} input features, "
                         f"got w_o.shape={w_o.T.shape if weights_layout == 'out_in' else w_o.shape} "
                         f"(weights_layout={weights_layout!r})")
    dtype = result_dtype(concat, w_o)                      # float32 only if x, the W's and w_o all are
    concat, w_o = concat.astype(dtype, copy=False), w_o.astype(dtype, copy=False)
    return concat @ w_o, a                                 # (B..., S, H*d_v) x (H*d_v, d_out) -> (B..., S, d_out)


def split_heads(w, n_heads: int) -> np.ndarray:
    """Split a packed (d_model, H*d_head) projection into per-head weights (H, d_model, d_head).

    Column block ``h`` (columns ``h*d_head:(h+1)*d_head``) becomes head ``h`` — the layout of
    ``torch.nn.MultiheadAttention`` after transposing its (out, in) weights.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, (int, np.integer)):
        raise InputTypeError(f"n_heads must be an int, got {type(n_heads).__name__} {n_heads!r}")
    if n_heads < 1:
        raise InputValueError(f"n_heads must be >= 1, got {n_heads}")
    w = as_float_array(w, "w", ndim=2, dims="(d_model, n_heads*d_head)")
    if w.shape[1] % n_heads:
        raise ShapeError(f"n_heads={n_heads} must divide the projection width w.shape[1]={w.shape[1]}")
    d_head = w.shape[1] // n_heads
    return np.ascontiguousarray(w.reshape(w.shape[0], n_heads, d_head).transpose(1, 0, 2))  # (H, d_model, d_head)
