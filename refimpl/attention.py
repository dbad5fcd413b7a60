"""Scaled dot-product attention, the tutorials' per-query "general attention", and self-attention.

Shapes use ``B...`` for any number of leading batch/head dimensions (broadcast as in ``np.matmul``),
``Sq`` queries, ``Sk`` keys, ``D`` query/key features and ``Dv`` value features. The shared pieces
(preparation, overflow split, softcap, masked softmax) live in :mod:`refimpl._kernel`;
``masked_softmax_`` is re-exported here for :mod:`refimpl.family`.
"""
from __future__ import annotations


import numpy as np

from ._checks import ShapeError, as_float_array, check_choice
from ._kernel import block_keep, full_keep, masked_softmax_, prepare, rescaled, softcap_

__all__ = ["scaled_dot_product_attention", "general_attention", "general_attention_matrix",
           "self_attention", "self_attention_with", "project", "masked_softmax_"]


def scaled_dot_product_attention(q, k, v, *, mask=None, scale=None, is_causal=False, alignment="top-left",
                                 window=None, softcap=None, enable_gqa=False):
    """Scaled dot-product attention.

        scores  = scale * q @ k^T                      (B..., Sq, Sk)
        scores  = softcap * tanh(scores / softcap)     if softcap is given
        weights = softmax(scores + additive_mask, masked where keep_mask, causal or window say no)
        output  = weights @ v

    Args:
      q: (B..., Sq, D) queries.  k: (B..., Sk, D) keys.  v: (B..., Sk, Dv) values.
        Leading dimensions broadcast as in ``np.matmul``.
      mask: optional, broadcastable to (B..., Sq, Sk). A bool mask is a keep-mask (True = attend);
        a float mask is added to the (softcapped) scores (``-inf`` masks a key), e.g. :func:`alibi_bias`.
      scale: positive finite real; default ``1/sqrt(D)``.
      is_causal: query i attends key j iff ``j <= i + offset`` (see ``alignment``).
      alignment: "top-left" (offset 0, torch's is_causal) or "bottom-right" (offset Sk - Sq,
        FlashAttention's); applies to ``is_causal`` and ``window``.
      window: None or ``(left, right)``: query i attends key j iff
        ``i + offset - left <= j <= i + offset + right``, -1 = unbounded on that side. With
        ``is_causal`` the right side is capped at 0.
      softcap: None or a positive real ``cap``: ``scores = cap * tanh(scores / cap)``, applied
        before masks and additive biases (Gemma-2's logit soft-capping).
      enable_gqa: grouped-query attention: q (..., Hq, Sq, D), k and v (..., Hkv, Sk, D*) with Hq a
        multiple of Hkv; query head h uses kv head ``h // (Hq // Hkv)``. Without it, head counts
        must broadcast as any other batch dimension.

    Returns:
      ``(output, weights)``: (B..., Sq, Dv) and (B..., Sq, Sk) (B... ends with Hq under GQA), in the
      compute dtype (float32 only if q, k and v are all float32).

    Decided edge cases:
      * A query whose keys are all masked (by mask, causal or window: e.g. the first Sq - Sk rows
        of a bottom-right causal call with Sq > Sk) gets all-zero weights and an all-zero output (the
        empty sum). PyTorch gives NaN there; the R package gives uniform weights.
      * Inputs whose scores would overflow (values up to 1e308 in float64, 3e38 in float32, any
        ``scale`` the dtype represents) are computed exactly via power-of-two rescaling (see
        :func:`refimpl._kernel.split_exponents`): results stay finite.
      * A call whose scores cannot fit in RAM is refused up front with :class:`ResourceError`.
    """
    p = prepare(q, k, v, mask=mask, scale=scale, is_causal=is_causal, alignment=alignment, window=window,
                softcap=softcap, enable_gqa=enable_gqa)
    qs, kr, e = rescaled(p)
    n_q, n_k = p.scores_shape[-2:]
    if n_q * n_k >= BLOCKED_MIN_SCORES:
        out, weights = sdpa_blocked(qs, kr, p.v, p.keep, p.additive, e, p.scores_shape, band=p.band,
                                    softcap=p.softcap)
    else:
        z = qs @ np.swapaxes(kr, -1, -2)                  # (B..., Sq, D) x (B..., D, Sk) -> (B..., Sq, Sk)
        z = np.broadcast_to(z, p.scores_shape).copy() if z.shape != p.scores_shape else z
        weights = masked_softmax_(softcap_(z, e, p.softcap), full_keep(p), p.additive, e)
        out = weights @ p.v                               # (B..., Sq, Sk) x (B..., Sk, Dv) -> (B..., Sq, Dv)
    return out.reshape(p.batch + out.shape[-2:]), weights.reshape(p.batch + weights.shape[-2:])


BLOCKED_MIN_SCORES = 128 * 128   # from this many scores per (batch, head), work in cache-sized row blocks
BLOCK_SCORES = 256 * 1024        # scores per block (1 MiB in float32): rows per block = this // n_keys


def sdpa_blocked(qs, k, v, keep, additive, e: int, scores_shape, block_rows: int | None = None, *,
                 band=None, softcap=None):
    """The same computation, one (batch index, block of query rows) at a time.

    ``qs = q * scale`` and ``k`` are already rescaled by :func:`rescaled` (``e`` its exponent). Each
    block's scores are written straight into the weights array and softmaxed while they are in cache,
    then multiplied by V: the Sq x Sk matrix is traversed once instead of once per pass, and the band
    (causal/window) is built one block at a time.
    """
    batch, (n_q, n_k) = scores_shape[:-2], scores_shape[-2:]
    rows = block_rows or min(n_q, max(64, BLOCK_SCORES // max(n_k, 1)))
    weights = np.empty(scores_shape, dtype=qs.dtype)                # (B..., Sq, Sk)
    out = np.empty(batch + (n_q, v.shape[-1]), dtype=qs.dtype)      # (B..., Sq, Dv)
    qb = np.broadcast_to(qs, batch + qs.shape[-2:])
    kb = np.broadcast_to(k, batch + k.shape[-2:])
    vb = np.broadcast_to(v, batch + v.shape[-2:])
    kp = None if keep is None else np.broadcast_to(keep, scores_shape)
    ad = None if additive is None else np.broadcast_to(additive, scores_shape)
    for idx in np.ndindex(*batch):
        k_t = kb[idx].T                                             # (D, Sk)
        for r0 in range(0, n_q, rows):
            r1 = min(r0 + rows, n_q)
            z = weights[idx][r0:r1]                                 # (rows, Sk) view
            np.matmul(qb[idx][r0:r1], k_t, out=z)                   # (rows, D) x (D, Sk) -> (rows, Sk)
            keep_blk = block_keep(None if kp is None else kp[idx], band, r0, r1, 0, n_k)
            masked_softmax_(softcap_(z, e, softcap), keep_blk, None if ad is None else ad[idx][r0:r1], e)
            np.matmul(z, vb[idx], out=out[idx][r0:r1])              # (rows, Sk) x (Sk, Dv) -> (rows, Dv)
    return out, weights


def general_attention(query, keys, values, *, scale=None):
    """The per-query "general attention" of the tutorials: one query against every key.

        scores_j = query . keys_j                   (n_keys,)
        weights  = softmax(scale * scores)          default scale 1/sqrt(d_k)
        context  = sum_j weights_j * values_j       (d_v,)

    Args: query (d_k,), keys (n_keys, d_k), values (n_keys, d_v).
    Returns ``(context, weights)``.
    """
    query = as_float_array(query, "query", ndim=1, dims="(d_k,)")
    keys = as_float_array(keys, "keys", ndim=2, dims="(n_keys, d_k)")
    values = as_float_array(values, "values", ndim=2, dims="(n_keys, d_v)")
    out, w = scaled_dot_product_attention(query[None, :], keys, values, scale=scale)
    return out[0], w[0]                                   # (d_v,), (n_keys,)


def project(x: np.ndarray, w: np.ndarray, layout: str) -> np.ndarray:
    """``x @ w`` for layout "in_out" (w: (..., d_in, d_out)); ``x @ w^T`` for "out_in" (w: (..., d_out, d_in))."""
    return x @ (w if layout == "in_out" else np.swapaxes(w, -1, -2))


def _check_projection(x: np.ndarray, w: np.ndarray, name: str, layout: str) -> None:
    d_in = w.shape[-2] if layout == "in_out" else w.shape[-1]
    if d_in != x.shape[-1]:
        axis = "-2" if layout == "in_out" else "-1"
        raise ShapeError(f"{name} must have d_model={x.shape[-1]} along axis {axis} (weights_layout={layout!r}), "
                         f"got {name}.shape={w.shape}")


def self_attention(x, w_q, w_k, w_v, *, mask=None, scale=None, is_causal=False, weights_layout="in_out"):
    """Self-attention of a sequence with itself: ``sdpa(x W_q, x W_k, x W_v)``.

    Args:
      x: (B..., S, d_model) embeddings, one row per token.
      w_q, w_k: (d_model, d_k); w_v: (d_model, d_v) for ``weights_layout="in_out"`` (``Q = x @ W_q``,
        the Cristina/Codefinity/R-vignette convention); (d_k, d_model) and (d_v, d_model) for
        ``"out_in"`` (``q = W_q @ x_i``, the Raschka/PyTorch ``nn.Linear`` convention).
    Returns ``(output (B..., S, d_v), weights (B..., S, S))``.
    """
    return self_attention_with(scaled_dot_product_attention, x, w_q, w_k, w_v, mask=mask, scale=scale,
                               is_causal=is_causal, weights_layout=weights_layout)


def self_attention_with(attend, x, w_q, w_k, w_v, *, mask=None, scale=None, is_causal=False, weights_layout="in_out"):
    """:func:`self_attention` with the attention done by ``attend(q, k, v, mask=, scale=, is_causal=)``."""
    check_choice(weights_layout, "weights_layout", ("in_out", "out_in"))
    x = as_float_array(x, "x", min_ndim=2, dims="(..., seq_len, d_model)")
    ws = {n: as_float_array(w, n, ndim=2, dims="(d_model, d_out)" if weights_layout == "in_out" else "(d_out, d_model)")
          for n, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v))}
    for n, w in ws.items():
        _check_projection(x, w, n, weights_layout)
    q, k, v = (project(x, ws[n], weights_layout) for n in ("w_q", "w_k", "w_v"))  # (B..., S, d_*)
    return attend(q, k, v, mask=mask, scale=scale, is_causal=is_causal)


def general_attention_matrix(words, w_q, w_k, w_v, *, scale=None):
    """The tutorials' matrix form: ``Q = words @ W_Q`` (likewise K, V), then
    ``weights = softmax(Q K^T * scale)`` row by row and ``attention = weights @ V``.

    Args: words (n_words, d_model); w_q, w_k (d_model, d_k); w_v (d_model, d_v).
    Returns ``(attention (n_words, d_v), weights (n_words, n_words))``.
    """
    words = as_float_array(words, "words", ndim=2, dims="(n_words, d_model)")
    return self_attention(words, w_q, w_k, w_v, scale=scale)
