"""Held-out attention kernels, API `torch-sdpa`: scaled_dot_product_attention's semantics on (B, H, S, D) tensors.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False); attn_mask bool
(True = attend) or additive float; is_causal top-left (j <= i); enable_gqa: query head h uses kv head
h // (Hq // Hkv); a row with no visible key gives zeros. Six kernels carry one mistake each (marked by a BUG
comment), two are correct. See README.md.
"""
import math

import torch


def _safe_softmax(scores):
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m)
    z = e.sum(dim=-1, keepdim=True)
    return e / torch.where(z == 0, torch.ones_like(z), z)


def _repeat_kv(x, n_rep):
    return x if n_rep == 1 else torch.repeat_interleave(x, n_rep, dim=1)


# --- kernel: sdpa_tensor_mask_where ---
def sdpa_tensor_mask_where(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Port of a small framework's Tensor.scaled_dot_product_attention (bool masks turned into 0/-inf)."""
    if enable_gqa:
        key = _repeat_kv(key, query.shape[1] // key.shape[1])
        value = _repeat_kv(value, query.shape[1] // value.shape[1])
    qk = query @ key.transpose(-2, -1) * (1 / math.sqrt(query.shape[-1]) if scale is None else scale)
    if is_causal:
        attn_mask = torch.ones(qk.shape[-2], qk.shape[-1], dtype=torch.bool).tril(0)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            zeros = torch.zeros(attn_mask.shape, dtype=qk.dtype)
            attn_mask = zeros.masked_fill(attn_mask, float("-inf"))  # BUG: -inf where True, 0 where False
        qk = qk + attn_mask
    return _safe_softmax(qk) @ value


# --- kernel: sdpa_attend_fused_scale ---
def sdpa_attend_fused_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Attend-module style: the fused path builds the mask, the scale should be handed to the fused kernel."""
    default_scale = query.shape[-1] ** -0.5
    sc = default_scale  # BUG: the custom scale is not passed on; the fused kernel's default is used
    if enable_gqa:
        key = _repeat_kv(key, query.shape[1] // key.shape[1])
        value = _repeat_kv(value, query.shape[1] // value.shape[1])
    sim = torch.einsum("bhid,bhjd->bhij", query, key) * sc
    i, j = sim.shape[-2:]
    if is_causal:
        sim = sim.masked_fill(torch.ones(i, j, dtype=torch.bool).triu(1), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            sim = sim.masked_fill(~attn_mask, float("-inf"))
        else:
            sim = sim + attn_mask.to(sim.dtype)
    return torch.einsum("bhij,bhjd->bhid", _safe_softmax(sim), value)


# --- kernel: sdpa_gqa_mea_dispatch ---
def sdpa_gqa_mea_dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    """Three-tier dispatch: grouped memory-efficient path for GQA, unfused fallback otherwise."""
    b, hq, L, d = query.shape
    hkv, S, dv = key.shape[1], key.shape[2], value.shape[-1]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(0), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias + torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    use_mea = enable_gqa and hq != hkv  # BUG: MEA chosen for every GQA call though it needs head_size == v_head_size
    if use_mea:
        if d != dv:
            raise RuntimeError("GQA with MEA requires head_size == v_head_size")
        group = hq // hkv
        q5 = query.reshape(b, hkv, group, L, d)
        s = q5 @ key.unsqueeze(2).transpose(-2, -1) * sc
        s = s + bias.expand(b, hq, L, S).reshape(b, hkv, group, L, S)
        out = _safe_softmax(s) @ value.unsqueeze(2)
        return out.reshape(b, hq, L, dv)
    if enable_gqa:
        key = _repeat_kv(key, hq // hkv)
        value = _repeat_kv(value, hq // hkv)
    s = query @ key.transpose(-2, -1) * sc + bias
    return _safe_softmax(s) @ value


# --- kernel: sdpa_dynamic_mask_causal ---
def sdpa_dynamic_mask_causal(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                             enable_gqa=False):
    """Model-side dynamic mask merged with the causal/padding mask before the SDPA call."""
    b, hq, L, d = query.shape
    S = key.shape[2]
    scaling = d ** -0.5 if scale is None else scale
    # create_causal_mask shortcut: with no explicit mask, SDPA's own is_causal is trusted to do the work
    causal_bias = None
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            causal_bias = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            causal_bias = attn_mask.to(query.dtype)
    dynamic_bias = torch.zeros(b, 1, 1, S, dtype=query.dtype)  # dynamic mask (every key kept here)
    if causal_bias is not None:
        dynamic_bias = dynamic_bias + causal_bias
    use_is_causal = is_causal and dynamic_bias is None  # BUG: the dynamic mask is never None, so causality is lost
    if use_is_causal:
        causal_tl = torch.zeros(L, S, dtype=query.dtype)
        dynamic_bias = dynamic_bias + causal_tl.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(0), float("-inf"))
    if enable_gqa:
        key = _repeat_kv(key, hq // key.shape[1])
        value = _repeat_kv(value, hq // value.shape[1])
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling + dynamic_bias
    return torch.matmul(_safe_softmax(attn_weights), value)


# --- kernel: sdpa_tile_padded ---
TILE = 32


def _pad_to_tiles(m, lp, sp):
    pad_l = lp - m.shape[-2] if m.shape[-2] != 1 else 0
    pad_s = sp - m.shape[-1] if m.shape[-1] != 1 else 0
    return torch.nn.functional.pad(m, (0, pad_s, 0, pad_l))


def sdpa_tile_padded(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                     enable_gqa=False):
    """Tile-layout SDPA: Q, K, V padded to multiples of 32 tokens, padded keys masked, output sliced back."""
    b, hq, L, d = query.shape
    S = key.shape[2]
    lp, sp = -(-L // TILE) * TILE, -(-S // TILE) * TILE
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    if enable_gqa:
        key = _repeat_kv(key, hq // key.shape[1])
        value = _repeat_kv(value, hq // value.shape[1])
    q_t = torch.nn.functional.pad(query, (0, 0, 0, lp - L))
    k_t = torch.nn.functional.pad(key, (0, 0, 0, sp - S))
    v_t = torch.nn.functional.pad(value, (0, 0, 0, sp - S))
    bias = torch.zeros(lp, sp, dtype=query.dtype)
    bias[:, S:] = float("-inf")
    if is_causal:
        bias = bias.masked_fill(torch.arange(sp)[None, :] > torch.arange(lp)[:, None], float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            mask_bias = torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            mask_bias = attn_mask.to(query.dtype)
        mask_t = mask_bias  # BUG: the mask is not padded to the tile grid (lp, sp) like Q, K and V
        bias = bias + mask_t
    s = q_t @ k_t.transpose(-2, -1) * sc + bias
    return (_safe_softmax(s) @ v_t)[:, :, :L]


# --- kernel: sdpa_flash_branch_mask ---
def _flash_core(q, k, v, attn_mask, is_causal, sc):
    s = q @ k.transpose(-2, -1) * sc
    if is_causal:
        s = s.masked_fill(~torch.ones(s.shape[-2], s.shape[-1], dtype=torch.bool).tril(0), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            s = s.masked_fill(~attn_mask, float("-inf"))
        else:
            s = s + attn_mask.to(s.dtype)
    return _safe_softmax(s) @ v


def sdpa_flash_branch_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                           enable_gqa=False):
    """Backend selection: a flash branch for equal head dims and head counts, the math branch otherwise."""
    hq, hkv = query.shape[1], key.shape[1]
    sc = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    use_flash = query.shape[-1] == value.shape[-1] and hq == hkv
    if use_flash:
        out = _flash_core(query, key, value, None, is_causal, sc)  # BUG: attn_mask is not handed to the flash branch
    else:
        out = _flash_core(query, _repeat_kv(key, hq // hkv), _repeat_kv(value, hq // hkv), attn_mask, is_causal, sc)
    return out


# --- kernel: sdpa_key_chunk_lse ---
def sdpa_key_chunk_lse(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    """Correct: keys in chunks of 37, each chunk's output weighted by exp(lse_chunk - lse_total)."""
    b, hq, L, d = query.shape
    S = key.shape[2]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    if enable_gqa:
        key = _repeat_kv(key, hq // key.shape[1])
        value = _repeat_kv(value, hq // value.shape[1])
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.arange(S)[None, :] > torch.arange(L)[:, None], float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias + torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    bias = bias.expand(b, hq, L, S)
    outs, lses = [], []
    for j0 in range(0, S, 37):
        j1 = min(j0 + 37, S)
        s = query @ key[:, :, j0:j1].transpose(-2, -1) * sc + bias[..., j0:j1]
        lse = torch.logsumexp(s, dim=-1, keepdim=True)
        lse_safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
        outs.append(torch.exp(s - lse_safe) @ value[:, :, j0:j1])
        lses.append(lse)
    lse_all = torch.stack(lses)
    total = torch.logsumexp(lse_all, dim=0)
    total_safe = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    out = torch.zeros(b, hq, L, value.shape[-1], dtype=query.dtype)
    for o, lse in zip(outs, lses):
        w = torch.exp(lse - total_safe)
        out = out + torch.where(torch.isfinite(total), w, torch.zeros_like(w)) * o
    return out


# --- kernel: sdpa_grouped_online_base2 ---
def sdpa_grouped_online_base2(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Correct: query heads grouped per kv head (no repeat), base-2 online softmax over key tiles of 16."""
    b, hq, L, d = query.shape
    hkv, S, dv = key.shape[1], key.shape[2], value.shape[-1]
    g = hq // hkv
    log2e = 1.4426950408889634
    sc = (1.0 / math.sqrt(d) if scale is None else scale) * log2e
    bias = torch.zeros(L, S, dtype=query.dtype)
    if is_causal:
        bias = bias.masked_fill(torch.arange(S)[None, :] > torch.arange(L)[:, None], float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = bias + torch.zeros(attn_mask.shape, dtype=query.dtype).masked_fill(~attn_mask, float("-inf"))
        else:
            bias = bias + attn_mask.to(query.dtype)
    bias = (bias.expand(b, hq, L, S) * log2e).reshape(b, hkv, g, L, S)
    q5 = query.reshape(b, hkv, g, L, d)
    m = torch.full((b, hkv, g, L, 1), float("-inf"), dtype=query.dtype)
    lsum = torch.zeros(b, hkv, g, L, 1, dtype=query.dtype)
    acc = torch.zeros(b, hkv, g, L, dv, dtype=query.dtype)
    for j0 in range(0, S, 16):
        j1 = min(j0 + 16, S)
        t = torch.einsum("bhgld,bhsd->bhgls", q5, key[:, :, j0:j1]) * sc + bias[..., j0:j1]
        m_new = torch.maximum(m, t.amax(dim=-1, keepdim=True))
        safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        corr = torch.exp2(torch.where(torch.isfinite(m), m, safe) - safe)
        p = torch.exp2(t - safe)
        lsum = lsum * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + torch.einsum("bhgls,bhsd->bhgld", p, value[:, :, j0:j1])
        m = m_new
    out = acc / torch.where(lsum == 0, torch.ones_like(lsum), lsum)
    return out.reshape(b, hq, L, dv)


_SRC = "https://github.com/"

CATALOG = [
    dict(name="sdpa-tinygrad-bool-mask-where-order", api="torch-sdpa", fn="sdpa_tensor_mask_where", correct=False,
         bug="bool-mask-polarity-inverted",
         parameter="a bool mask (and the tril mask built for is_causal) is turned into an additive mask with -inf "
                   "where it is True and 0 where False, the reverse order: attended keys are dropped and dropped "
                   "keys attended. Triggers: a bool attn_mask or is_causal=True",
         source="tinygrad/tinygrad#8674", report=_SRC + "tinygrad/tinygrad/pull/8674", dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-xtransformers-custom-scale-not-passed", api="torch-sdpa", fn="sdpa_attend_fused_scale",
         correct=False, bug="explicit-scale-ignored",
         parameter="the explicit scale is not handed to the fused path, which always uses its default 1/sqrt(D). "
                   "Triggers: scale given and != 1/sqrt(D), with two or more visible keys in a row",
         source="lucidrains/x-transformers#244", report=_SRC + "lucidrains/x-transformers/pull/244", dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-ort-gqa-mea-head-size", api="torch-sdpa", fn="sdpa_gqa_mea_dispatch", correct=False,
         bug="gqa-path-rejects-dv-ne-d",
         parameter="the grouped memory-efficient path is selected for every GQA call although it requires "
                   "head_size == v_head_size, so GQA with Dv != D raises instead of falling back to the unfused "
                   "path. Triggers: enable_gqa with Hq != Hkv and Dv != D",
         source="microsoft/onnxruntime#28357", report=_SRC + "microsoft/onnxruntime/issues/28357", dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-doge-dynamic-mask-drops-causal", api="torch-sdpa", fn="sdpa_dynamic_mask_causal",
         correct=False, bug="causal-dropped-with-own-mask",
         parameter="with is_causal=True and no attn_mask the causal mask is left to SDPA's is_causal, but the "
                   "kernel's own dynamic mask is always passed, so is_causal is never applied and every key is "
                   "attended. Triggers: is_causal=True with a key j > i in range",
         source="huggingface/transformers#48748", report=_SRC + "huggingface/transformers/issues/48748",
         dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-ttmetal-mask-not-tile-padded", api="torch-sdpa", fn="sdpa_tile_padded", correct=False,
         bug="mask-not-padded-to-tiles",
         parameter="Q, K and V are padded to multiples of 32 tokens but attn_mask is not, so adding it to the "
                   "padded (Lp, Sp) bias fails to broadcast (an error). Triggers: an attn_mask with a query or key "
                   "dimension (not 1) that is not a multiple of 32",
         source="tenstorrent/tt-metal#32502", report=_SRC + "tenstorrent/tt-metal/issues/32502", dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-pytorch-flash-branch-drops-mask", api="torch-sdpa", fn="sdpa_flash_branch_mask",
         correct=False, bug="mask-ignored-on-fast-path",
         parameter="the branch taken for D == Dv and Hq == Hkv is called without attn_mask, so the mask is ignored "
                   "there (the other branch is right). Triggers: an attn_mask that removes or biases a key, with "
                   "D == Dv and Hq == Hkv",
         source="pytorch/pytorch#122753", report=_SRC + "pytorch/pytorch/issues/122753", dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-key-chunk-lse", api="torch-sdpa", fn="sdpa_key_chunk_lse", correct=True, bug=None,
         parameter=None, source=None, report=None, dtype="float64", features=["mask", "causal", "gqa", "dv-ne-d"]),
    dict(name="sdpa-grouped-online-base2", api="torch-sdpa", fn="sdpa_grouped_online_base2", correct=True,
         bug=None, parameter=None, source=None, report=None, dtype="float64",
         features=["mask", "causal", "gqa", "dv-ne-d"]),
]
