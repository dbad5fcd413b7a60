"""heldout8, API `torch-sdpa`: semantics of torch.nn.functional.scaled_dot_product_attention.

fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False) on (B, H, S, D)
torch tensors, written with matmul/softmax (torch 1.13). attn_mask bool (True = attend) or additive float;
is_causal top-left (j <= i); enable_gqa: query head h uses kv head h // (Hq // Hkv); fully masked rows give zeros.
Each broken kernel carries one mistake adapted from the public report named in CATALOG; each kernel section starts
with a `# --- kernel:` marker.
"""
import math

import torch


def _scale(query, scale):
    return 1.0 / math.sqrt(query.size(-1)) if scale is None else scale


def _expand_kv(key, value, hq, enable_gqa):
    if enable_gqa and key.size(-3) != hq:
        rep = hq // key.size(-3)
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    return key, value


def _bias(attn_mask, is_causal, L, S, dtype, device):
    bias = torch.zeros(L, S, dtype=dtype, device=device)
    if is_causal:
        tri = torch.ones(L, S, dtype=torch.bool, device=device).tril(diagonal=0)
        bias = bias.masked_fill(~tri, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            bias = torch.where(attn_mask, bias, torch.tensor(float("-inf"), dtype=dtype, device=device))
        else:
            bias = bias + attn_mask.to(dtype)
    return bias


def _safe_softmax(s):
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    return e / torch.where(den == 0, torch.ones_like(den), den)


# --- kernel: sdpa_tiled_kv_heads ---
def sdpa_tiled_kv_heads(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """GQA by repeating the kv heads to the query head count, then plain attention."""
    hq = query.size(-3)
    if enable_gqa and key.size(-3) != hq:
        n_rep = hq // key.size(-3)
        key, value = (t.repeat(1, n_rep, 1, 1) for t in (key, value))  # BUG: tiles heads; h reads h % Hkv
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    return torch.matmul(_safe_softmax(attn), value)


# --- kernel: sdpa_lower_right_causal ---
def sdpa_lower_right_causal(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """Backend lowering that builds its own causal mask for is_causal."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    if is_causal:
        tri = torch.ones(L, S, dtype=torch.bool, device=query.device)
        keep = tri.tril(diagonal=S - L)  # BUG: causal anchored bottom-right; is_causal is top-left (j <= i)
        attn = attn.masked_fill(~keep, float("-inf"))
    attn = attn + _bias(attn_mask, False, L, S, query.dtype, query.device)
    return torch.matmul(_safe_softmax(attn), value)


# --- kernel: sdpa_plugin_default_scale ---
def sdpa_plugin_default_scale(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Attention layer of a serving plugin; the layer's scale attribute is passed in as `scale`."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    scale_factor = 1.0 / math.sqrt(query.size(-1))  # BUG: the scale argument is never read
    attn = torch.matmul(query, key.transpose(-2, -1)) * scale_factor
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    return torch.matmul(_safe_softmax(attn), value)


# --- kernel: sdpa_clamped_softmax ---
def sdpa_clamped_softmax(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Fallback attention with a NaN-safe softmax made of two clamps (max floor and sum floor)."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    row_max = attn.amax(dim=-1, keepdim=True).clamp(min=-1e4)  # BUG: max floored at -1e4
    e = torch.exp(attn - row_max)
    den = e.sum(dim=-1, keepdim=True).clamp(min=1e-6)
    return torch.matmul(e / den, value)


# --- kernel: sdpa_mask_first_step ---
def sdpa_mask_first_step(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False):
    """Decoder attention; the mask was only thought necessary for the multi-token (prompt) step."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    if L > 1:  # BUG: the mask is skipped on single-token decoding steps, so padded keys are attended during decode
        attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    return torch.matmul(_safe_softmax(attn), value)


# --- kernel: sdpa_split_kv_base2_merge ---
def sdpa_split_kv_base2_merge(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False, split=64):
    """Split-KV: each split returns a normalised output and a natural-log LSE; a reduce kernel combines them."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    outs, lses = [], []
    for start in range(0, S, split):
        part = attn[..., start:start + split]
        lse = torch.logsumexp(part, dim=-1)
        outs.append(torch.matmul(_safe_softmax(part), value[..., start:start + split, :]))
        lses.append(lse)
    lse = torch.stack(lses, dim=0)
    gmax = lse.amax(dim=0, keepdim=True)
    gmax = torch.where(torch.isfinite(gmax), gmax, torch.zeros_like(gmax))
    w = torch.exp2(lse - gmax)  # BUG: natural-log LSEs combined with a base-2 correction (exp2/log2 reduce kernel)
    den = w.sum(dim=0)
    num = sum(w[i].unsqueeze(-1) * outs[i] for i in range(len(outs)))
    return num / torch.where(den == 0, torch.ones_like(den), den).unsqueeze(-1)


# --- kernel: sdpa_finite_bool_mask ---
def sdpa_finite_bool_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    """Fast SDPA port: a bool mask becomes an additive bias with the dtype's lowest finite value."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        lowest = torch.tensor(torch.finfo(query.dtype).min, dtype=query.dtype, device=query.device)
        attn = torch.where(attn_mask, attn, lowest)  # BUG: finite lowest, not -inf; dead rows average V
        attn_mask = None
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    return torch.matmul(_safe_softmax(attn), value)


# --- kernel: sdpa_maybe_add_mask ---
def sdpa_maybe_add_mask(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """Eager attention of a vision model library: `maybe_add_mask(attn, attn_mask)` then softmax."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    attn = attn + _bias(None, is_causal, L, S, query.dtype, query.device)
    if attn_mask is not None:
        attn = attn + attn_mask  # BUG: a bool mask is promoted to 1.0/0.0 and added; dropped keys stay
    return torch.matmul(_safe_softmax(attn), value)


# --- kernel: sdpa_grouped_view ---
def sdpa_grouped_view(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
    """GQA without kv expansion: the query heads are viewed as (Hkv, group) and share one kv head."""
    B, hq, L, D = query.shape
    hkv, S = key.size(-3), key.size(-2)
    g = hq // hkv if enable_gqa else 1
    q = query.reshape(B, hkv, g, L, D)
    k = key.unsqueeze(2)
    v = value.unsqueeze(2)
    attn = torch.matmul(q, k.transpose(-2, -1)) * _scale(query, scale)
    bias = _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    bias = bias.expand(B, hq, L, S).reshape(B, hkv, g, L, S)
    out = torch.matmul(_safe_softmax(attn + bias), v)
    return out.reshape(B, hq, L, value.size(-1))


# --- kernel: sdpa_split_kv_lse ---
def sdpa_split_kv_lse(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False, split=48):
    """Split-KV with per-split (unnormalised output, max, sum) merged by the global max (natural exp)."""
    key, value = _expand_kv(key, value, query.size(-3), enable_gqa)
    L, S = query.size(-2), key.size(-2)
    attn = torch.matmul(query, key.transpose(-2, -1)) * _scale(query, scale)
    attn = attn + _bias(attn_mask, is_causal, L, S, query.dtype, query.device)
    parts = []
    for start in range(0, S, split):
        s = attn[..., start:start + split]
        m = s.amax(dim=-1, keepdim=True)
        m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        e = torch.exp(s - m_safe)
        parts.append((m, e.sum(dim=-1, keepdim=True), torch.matmul(e, value[..., start:start + split, :])))
    gmax = torch.stack([p[0] for p in parts]).amax(dim=0)
    gsafe = torch.where(torch.isfinite(gmax), gmax, torch.zeros_like(gmax))
    num = torch.zeros(attn.shape[:-1] + (value.size(-1),), dtype=query.dtype, device=query.device)
    den = torch.zeros_like(gmax)
    for m, l, o in parts:
        c = torch.where(torch.isfinite(m), torch.exp(m - gsafe), torch.zeros_like(m))
        num = num + c * o
        den = den + c * l
    return num / torch.where(den == 0, torch.ones_like(den), den)


# --- kernel: sdpa_float64_where ---
def sdpa_float64_where(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    """Math path in float64 with explicit keep/bias tensors and dead-row zeroing, cast back at the end."""
    q, k, v = query.double(), key.double(), value.double()
    k, v = _expand_kv(k, v, q.size(-3), enable_gqa)
    L, S = q.size(-2), k.size(-2)
    s = torch.matmul(q, k.transpose(-2, -1)) * float(_scale(query, scale))
    keep = torch.ones(L, S, dtype=torch.bool)
    if is_causal:
        keep = keep.tril()
    add = torch.zeros(1, dtype=torch.float64)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            keep = keep & attn_mask
        else:
            add = attn_mask.double()
    s = s + add
    keep = keep & torch.isfinite(s)
    s = torch.where(keep, s, torch.full_like(s, -math.inf))
    alive = keep.any(dim=-1, keepdim=True)
    m = torch.where(alive, s.amax(dim=-1, keepdim=True), torch.zeros(1, dtype=torch.float64))
    e = torch.where(keep, torch.exp(s - m), torch.zeros(1, dtype=torch.float64))
    den = torch.where(alive, e.sum(dim=-1, keepdim=True), torch.ones(1, dtype=torch.float64))
    return torch.matmul(e / den, v).to(query.dtype)


def _entry(name, fn, bug=None, parameter=None, source=None, kind=None, dtype="float64"):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/%s/%s/%s" % (repo, kind, num)
    return {"name": name, "api": "torch-sdpa", "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
            "source": source, "report": report, "dtype": dtype, "features": ["mask", "causal", "gqa", "dv-ne-d"]}


CATALOG = [
    _entry("sdpa-mindone-repeat-tiles-heads", "sdpa_tiled_kv_heads", "gqa-kv-heads-tiled-not-interleaved",
           "kv heads expanded with repeat (tile) instead of repeat_interleave: query head h uses kv head h % Hkv",
           "mindspore-lab/mindone#1039", "pull"),
    _entry("sdpa-executorch-bottom-right-causal", "sdpa_lower_right_causal", "causal-aligned-bottom-right",
           "is_causal mask built as tril(S - L) (bottom-right) instead of torch's top-left tril(0)",
           "pytorch/executorch#22426", "issues"),
    _entry("sdpa-ttxla-scale-ignored", "sdpa_plugin_default_scale", "explicit-scale-ignored",
           "explicit scale argument never used; 1/sqrt(D) always applied", "tenstorrent/tt-xla#2342", "issues"),
    _entry("sdpa-burn-max-floor", "sdpa_clamped_softmax", "softmax-max-clamped-finite-floor",
           "row max clamped at -1e4 (NaN guard), so rows of scores all below -1e4 underflow to zero",
           "tracel-ai/burn#4697", "pull"),
    _entry("sdpa-opennmt-mask-prompt-only", "sdpa_mask_first_step", "mask-skipped-for-single-query",
           "attn_mask and is_causal applied only when Sq > 1 (decode steps unmasked)", "OpenNMT/OpenNMT-py#2532",
           "pull"),
    _entry("sdpa-sglang-lse-base-mismatch", "sdpa_split_kv_base2_merge", "split-merge-log-base-mismatch",
           "natural-log split LSEs weighted with exp2 in the split-KV combine", "sgl-project/sglang#33064",
           "issues"),
    _entry("sdpa-mlx-finite-lowest-fill", "sdpa_finite_bool_mask", "bool-mask-filled-with-finite-lowest",
           "bool mask filled with finfo.min instead of -inf: fully masked rows average V instead of zeros",
           "ml-explore/mlx#2395", "issues"),
    _entry("sdpa-timm-bool-mask-added", "sdpa_maybe_add_mask", "bool-mask-added-as-bias",
           "bool attn_mask added to the scores (True -> +1.0, False -> 0.0) instead of dropping keys",
           "huggingface/pytorch-image-models#2674", "pull"),
    _entry("sdpa-grouped-view", "sdpa_grouped_view"),
    _entry("sdpa-split-kv-lse", "sdpa_split_kv_lse"),
    _entry("sdpa-float64-where", "sdpa_float64_where"),
]
