"""Held-out hand-written torch kernels with F.scaled_dot_product_attention semantics.

Contract: fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
             scale=None, enable_gqa=False)
  (B, H, S, D) tensors; attn_mask is a bool keep-mask or a float additive mask;
  is_causal = TOP-LEFT lower triangle (j <= i); enable_gqa: query head h reads
  kv head h // (Hq // Hkv).  Fully masked rows -> 0.  Output in input dtype.

torch 1.13 has no scaled_dot_product_attention, so everything is matmul/softmax.
Each broken kernel carries exactly one mistake, marked with "# BUG:".
"""
import math

import torch


# ---------------------------------------------------------------------------
# shared correct helpers
# ---------------------------------------------------------------------------
def _scale(query, scale):
    return 1.0 / math.sqrt(query.size(-1)) if scale is None else float(scale)


def _expand_kv(key, value, query, enable_gqa):
    if enable_gqa and key.size(-3) != query.size(-3):
        n_rep = query.size(-3) // key.size(-3)
        key = key.repeat_interleave(n_rep, dim=-3)
        value = value.repeat_interleave(n_rep, dim=-3)
    return key, value


def _apply_masks(scores, attn_mask, is_causal):
    if is_causal:
        Sq, Sk = scores.shape[-2:]
        keep = torch.ones(Sq, Sk, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.to(scores.dtype)
    return scores


def _safe_softmax(scores):
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m)
    den = e.sum(dim=-1, keepdim=True)
    return e / torch.where(den == 0, torch.ones_like(den), den)


def _dropout(p, dropout_p):
    if dropout_p > 0.0:
        p = torch.nn.functional.dropout(p, p=dropout_p, training=True)
    return p


# ---------------------------------------------------------------------------
# CORRECT kernels
# ---------------------------------------------------------------------------
def sdpa_math_reference(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                        scale=None, enable_gqa=False):
    """Mirror of the PyTorch math backend with _safe_softmax."""
    key, value = _expand_kv(key, value, query, enable_gqa)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    scores = _apply_masks(scores, attn_mask, is_causal)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_hf_eager_fp32_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                               scale=None, enable_gqa=False):
    """HF eager style: repeat_kv, additive bias, softmax upcast to >= float32."""
    if enable_gqa:
        hkv, sk, d = key.shape[-3:]
        n_rep = query.shape[-3] // hkv
        if n_rep > 1:  # transformers.models.llama.modeling_llama.repeat_kv
            lead = key.shape[:-3]
            key = key[..., :, None, :, :].expand(*lead, hkv, n_rep, sk, d).reshape(*lead, hkv * n_rep, sk, d)
            dv = value.shape[-1]
            value = value[..., :, None, :, :].expand(*lead, hkv, n_rep, sk, dv).reshape(
                *lead, hkv * n_rep, sk, dv)
    sm = _scale(query, scale)
    attn_weights = torch.matmul(query, key.transpose(-2, -1)) * sm
    Sq, Sk = attn_weights.shape[-2:]
    bias = torch.zeros(Sq, Sk, dtype=attn_weights.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(Sq, Sk, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.zeros_like(attn_mask, dtype=attn_weights.dtype).masked_fill(~attn_mask, float("-inf")) + bias
        else:
            bias = attn_mask.to(attn_weights.dtype) + bias
    attn_weights = attn_weights + bias
    up = torch.promote_types(attn_weights.dtype, torch.float32)
    attn_weights = _safe_softmax(attn_weights.to(up)).to(query.dtype)
    attn_weights = _dropout(attn_weights, dropout_p)
    return torch.matmul(attn_weights, value).to(query.dtype)


def sdpa_query_chunked(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                       scale=None, enable_gqa=False):
    """Memory-efficient style: queries processed in chunks of 37 rows."""
    CHUNK = 37
    key, value = _expand_kv(key, value, query, enable_gqa)
    sm = _scale(query, scale)
    Sq, Sk = query.size(-2), key.size(-2)
    outs = []
    for i0 in range(0, Sq, CHUNK):
        i1 = min(i0 + CHUNK, Sq)
        s = torch.matmul(query[..., i0:i1, :], key.transpose(-2, -1)) * sm
        if is_causal:
            rows = torch.arange(i0, i1)[:, None]
            cols = torch.arange(Sk)[None, :]
            s = s.masked_fill(cols > rows, float("-inf"))
        if attn_mask is not None:
            m = attn_mask
            if m.dim() >= 2 and m.size(-2) != 1:
                m = m[..., i0:i1, :]
            if m.dtype == torch.bool:
                s = s.masked_fill(~m, float("-inf"))
            else:
                s = s + m.to(s.dtype)
        p = _dropout(_safe_softmax(s), dropout_p)
        outs.append(torch.matmul(p, value))
    return torch.cat(outs, dim=-2).to(query.dtype)


# ---------------------------------------------------------------------------
# BROKEN kernels
# ---------------------------------------------------------------------------
def sdpa_causal_bottom_right(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                             scale=None, enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    if is_causal:
        Sq, Sk = scores.shape[-2:]
        # BUG: causal diagonal aligned bottom-right (flash-attn 2.1 style) instead of top-left
        keep = torch.ones(Sq, Sk, dtype=torch.bool).tril(diagonal=Sk - Sq)
        scores = scores.masked_fill(~keep, float("-inf"))
    scores = _apply_masks(scores, attn_mask, False)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_gqa_tiled_heads(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                         scale=None, enable_gqa=False):
    if enable_gqa and key.size(-3) != query.size(-3):
        n_rep = query.size(-3) // key.size(-3)
        reps = [1] * (key.dim() - 3) + [n_rep, 1, 1]
        # BUG: Tensor.repeat tiles kv heads [0,1,0,1,...] instead of repeat_interleave [0,0,1,1,...]
        key = key.repeat(*reps)
        value = value.repeat(*reps)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    scores = _apply_masks(scores, attn_mask, is_causal)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_bool_mask_added(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                         scale=None, enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    scores = _apply_masks(scores, None, is_causal)
    if attn_mask is not None:
        # BUG: bool keep-mask is cast and added as a 0/1 bias instead of masking with -inf
        scores = scores + attn_mask.to(scores.dtype)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_scale_applied_twice(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                             scale=None, enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    sm = _scale(query, scale)
    query = query * sm  # pre-scale q (as done before handing off to a fused kernel)
    # BUG: the kernel multiplies by the softmax scale again although q was pre-scaled
    scores = torch.matmul(query, key.transpose(-2, -1)) * sm
    scores = _apply_masks(scores, attn_mask, is_causal)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_headdim_hardcoded_64(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                              scale=None, enable_gqa=False):
    BLOCK_DMODEL = 64
    key, value = _expand_kv(key, value, query, enable_gqa)
    sm = _scale(query, scale)
    # BUG: head dim is hard-coded to 64, so q.k only uses the first 64 channels when D > 64
    scores = torch.matmul(query[..., :BLOCK_DMODEL], key[..., :BLOCK_DMODEL].transpose(-2, -1)) * sm
    scores = _apply_masks(scores, attn_mask, is_causal)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_merge_heads_reshape(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                             scale=None, enable_gqa=False):
    """Runs a (B, S, H, D) 'packed' inner kernel and converts back."""
    key, value = _expand_kv(key, value, query, enable_gqa)
    sm = _scale(query, scale)
    q_t, k_t, v_t = (t.transpose(-3, -2) for t in (query, key, value))  # (..., S, H, D)
    scores = torch.einsum("...qhd,...khd->...hqk", q_t, k_t) * sm
    scores = _apply_masks(scores, attn_mask, is_causal)
    p = _dropout(_safe_softmax(scores), dropout_p)
    out_t = torch.einsum("...hqk,...khd->...qhd", p, v_t)  # (..., Sq, H, Dv)
    H, Sq, Dv = query.size(-3), query.size(-2), value.size(-1)
    # BUG: reshape instead of transpose(-3, -2) scrambles heads and sequence positions
    out = out_t.reshape(*out_t.shape[:-3], H, Sq, Dv)
    return out.to(query.dtype)


def sdpa_mask_repeat_batch_major(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """bmm formulation over (B*H, S, D), as in fairseq/nn.MultiheadAttention."""
    key, value = _expand_kv(key, value, query, enable_gqa)
    B, H, Sq, D = query.shape
    Sk, Dv = key.size(-2), value.size(-1)
    q = query.reshape(B * H, Sq, D)
    k = key.reshape(B * H, Sk, D)
    v = value.reshape(B * H, Sk, Dv)
    scores = torch.bmm(q, k.transpose(1, 2)) * _scale(query, scale)
    scores = _apply_masks(scores, None, is_causal)
    if attn_mask is not None:
        m = attn_mask
        if m.dim() == 4 and m.size(0) == B and B > 1 and m.size(1) == 1:
            # BUG: .repeat tiles batch-major masks as [b0,b1,b0,b1..]; rows are ordered (b, h)
            m = m.reshape(B, *m.shape[-2:]).repeat(H, 1, 1)
        elif m.dim() == 4:
            m = m.expand(B, H, *m.shape[-2:]).reshape(B * H, *m.shape[-2:])
        if m.dtype == torch.bool:
            scores = scores.masked_fill(~m, float("-inf"))
        else:
            scores = scores + m.to(scores.dtype)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.bmm(p, v).reshape(B, H, Sq, Dv).to(query.dtype)


def sdpa_bf16_qk_product(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                         scale=None, enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    sm = _scale(query, scale)
    # BUG: QK^T computed in bfloat16 ("autocast" style) even for float32/float64 inputs
    scores = torch.matmul(query.bfloat16(), key.bfloat16().transpose(-2, -1)).to(query.dtype) * sm
    scores = _apply_masks(scores, attn_mask, is_causal)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_plain_softmax_nan(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                           scale=None, enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    scores = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    scores = _apply_masks(scores, attn_mask, is_causal)
    # BUG: plain softmax; an all -inf row gives 0/0 = NaN instead of a zero output row
    p = _dropout(torch.softmax(scores, dim=-1), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


def sdpa_divides_by_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                          scale=None, enable_gqa=False):
    key, value = _expand_kv(key, value, query, enable_gqa)
    sm = query.size(-1) ** -0.5 if scale is None else float(scale)
    # BUG: divides by the (already inverted) scale, i.e. multiplies logits by sqrt(D)
    scores = torch.matmul(query, key.transpose(-2, -1)) / sm
    scores = _apply_masks(scores, attn_mask, is_causal)
    p = _dropout(_safe_softmax(scores), dropout_p)
    return torch.matmul(p, value).to(query.dtype)


_ALL = ["mask", "causal", "gqa", "dv-ne-d"]

CATALOG = [
    {"name": "sdpa_math_reference", "api": "torch-sdpa", "fn": "sdpa_math_reference", "correct": True,
     "bug": None, "parameter": None,
     "source": "iree-org/iree#24175 (https://github.com/iree-org/iree/issues/24175)",
     "report": "Points out that PyTorch's math SDPA uses _safe_softmax so fully masked rows give 0, which this kernel mirrors.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_hf_eager_fp32_softmax", "api": "torch-sdpa", "fn": "sdpa_hf_eager_fp32_softmax", "correct": True,
     "bug": None, "parameter": None,
     "source": "huggingface/transformers#18057 (https://github.com/huggingface/transformers/pull/18057)",
     "report": "XGLM fp16 softmax NaNs were fixed by upcasting attention weights to float32 for the softmax, the style used here.",
     "dtype": "float32", "features": _ALL},
    {"name": "sdpa_query_chunked", "api": "torch-sdpa", "fn": "sdpa_query_chunked", "correct": True,
     "bug": None, "parameter": {"query_chunk": 37},
     "source": "pytorch/pytorch#108108 (https://github.com/pytorch/pytorch/issues/108108)",
     "report": "Documents that SDPA's is_causal is top-left aligned when Sq != Sk; this chunked kernel keeps that alignment per chunk.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_causal_bottom_right", "api": "torch-sdpa", "fn": "sdpa_causal_bottom_right", "correct": False,
     "bug": "causal-alignment-bottom-right", "parameter": "tril(diagonal=Sk-Sq)",
     "source": "pytorch/pytorch#108108 (https://github.com/pytorch/pytorch/issues/108108)",
     "report": "SDPA's causal mask is top-left aligned and the issue proposes bottom-right alignment, showing the two differ when Sq != Sk.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_gqa_tiled_heads", "api": "torch-sdpa", "fn": "sdpa_gqa_tiled_heads", "correct": False,
     "bug": "gqa-tile-not-interleave", "parameter": "Tensor.repeat",
     "source": "onnx/onnx#7274 (https://github.com/onnx/onnx/pull/7274)",
     "report": "The ONNX Attention GQA expansion used Tile, giving [h0,h1,h0,h1] pairings, whereas torch uses repeat_interleave.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_bool_mask_added", "api": "torch-sdpa", "fn": "sdpa_bool_mask_added", "correct": False,
     "bug": "bool-mask-as-additive-bias", "parameter": "+1.0 keep / +0.0 masked",
     "source": "huggingface/diffusers#14342 (https://github.com/huggingface/diffusers/issues/14342)",
     "report": "A cuDNN attention path consumed a bool attn_mask as an additive 0/1 bias, perturbing kept scores and not masking dropped ones.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_scale_applied_twice", "api": "torch-sdpa", "fn": "sdpa_scale_applied_twice", "correct": False,
     "bug": "scale-applied-twice", "parameter": "scale**2",
     "source": "facebookresearch/xformers#530 (https://github.com/facebookresearch/xformers/pull/530)",
     "report": "Adds has_custom_scale so that query states already scaled in advance are not scaled again inside the kernel.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_headdim_hardcoded_64", "api": "torch-sdpa", "fn": "sdpa_headdim_hardcoded_64", "correct": False,
     "bug": "head-dim-hardcoded", "parameter": 64,
     "source": "triton-lang/triton#621 (https://github.com/triton-lang/triton/issues/621)",
     "report": "The Triton FlashAttention tutorial hard-coded head dim 64 and silently used only the first 64 dims when D = 128.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_merge_heads_reshape", "api": "torch-sdpa", "fn": "sdpa_merge_heads_reshape", "correct": False,
     "bug": "reshape-without-transpose", "parameter": None,
     "source": "jsbaan/transformer-from-scratch#6 (https://github.com/jsbaan/transformer-from-scratch/pull/6)",
     "report": "A missing permute before reshape in multi-head attention mixed values of different heads and positions.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_mask_repeat_batch_major", "api": "torch-sdpa", "fn": "sdpa_mask_repeat_batch_major", "correct": False,
     "bug": "mask-repeat-order-bh", "parameter": "repeat(H,1,1)",
     "source": "lsdefine/attention-is-all-you-need-keras#36 (https://github.com/lsdefine/attention-is-all-you-need-keras/issues/36)",
     "report": "The per-head mask was repeated in a different batch/head order than the reshaped scores, pairing masks with the wrong samples.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_bf16_qk_product", "api": "torch-sdpa", "fn": "sdpa_bf16_qk_product", "correct": False,
     "bug": "low-precision-qk", "parameter": "bfloat16",
     "source": "AI-Hypercomputer/maxtext#1225 (https://github.com/AI-Hypercomputer/maxtext/pull/1225)",
     "report": "Qwen2-72B evals degraded because the QK product and logits stayed in bf16; upcasting to fp32 fixed it.",
     "dtype": "float32", "features": _ALL},
    {"name": "sdpa_plain_softmax_nan", "api": "torch-sdpa", "fn": "sdpa_plain_softmax_nan", "correct": False,
     "bug": "fully-masked-row-nan", "parameter": None,
     "source": "pytorch/pytorch#103963 (https://github.com/pytorch/pytorch/issues/103963)",
     "report": "scaled_dot_product_attention produced NaNs for a boolean attn_mask that had all-False rows.",
     "dtype": "float64", "features": _ALL},
    {"name": "sdpa_divides_by_scale", "api": "torch-sdpa", "fn": "sdpa_divides_by_scale", "correct": False,
     "bug": "scale-inverted", "parameter": "sqrt(D) (divides by 1/sqrt(D))",
     "source": "esceptico/perceiver-io#9 (https://github.com/esceptico/perceiver-io/issues/9)",
     "report": "Attention divided by self.scale = qk_head_dim**-0.5 where it should have multiplied.",
     "dtype": "float64", "features": _ALL},
]
