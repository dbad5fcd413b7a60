"""heldout8, API `flash-attn`: semantics of flash_attn_func on torch tensors.

q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Bottom-right alignment, off = Sk - Sq: causal keeps
j <= i + off; window (left, right) keeps i + off - left <= j <= i + off + right (-1 unbounded; causal = right 0).
softcap > 0: s = softcap * tanh(s / softcap) on the scaled scores before masking; ALiBi adds -slope * |i + off - j|
after the cap (slopes float32 (Hq,) or (B, Hq)); query head h uses kv head h // (Hq // Hkv); rows with no visible
key are zeros. Returns (B, Sq, Hq, Dv) in the input dtype.
Each broken kernel carries one mistake adapted from the public report named in CATALOG; each kernel section starts
with a `# --- kernel:` marker.
"""
import math

import torch


def _to_bhsd(q, k, v):
    """(B, S, H, D) -> (B, H, S, D), kv heads expanded to the query heads (h // group)."""
    hq, hkv = q.size(2), k.size(2)
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if hkv != hq:
        kh = kh.repeat_interleave(hq // hkv, dim=1)
        vh = vh.repeat_interleave(hq // hkv, dim=1)
    return qh, kh, vh


def _idx(sq, sk, device):
    i = torch.arange(sq, device=device).view(sq, 1)
    j = torch.arange(sk, device=device).view(1, sk)
    return i, j, sk - sq


def _band(sq, sk, causal, window_size, device):
    i, j, off = _idx(sq, sk, device)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        keep = keep & (j >= i + off - left)
    if right >= 0:
        keep = keep & (j <= i + off + right)
    return keep


def _alibi(alibi_slopes, b, hq, sq, sk, dtype, device):
    i, j, off = _idx(sq, sk, device)
    slopes = alibi_slopes.to(dtype).reshape(-1, hq, 1, 1)
    return -slopes * (i + off - j).abs().to(dtype)


def _scores(qh, kh, softmax_scale, softcap):
    s = torch.matmul(qh, kh.transpose(-2, -1)) * softmax_scale
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    return s


def _safe_softmax(s):
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    return e / torch.where(den == 0, torch.ones_like(den), den)


def _neg_inf(s):
    return torch.full_like(s, float("-inf"))


# --- kernel: flash_cache_window ---
def flash_cache_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                       alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Dynamic KV-cache attention: causal offset by the cached length, sliding window from row indices."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _to_bhsd(q, k, v)
    s = _scores(qh, kh, scale, softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    i, j, off = _idx(sq, sk, q.device)
    left, right = window_size
    if causal:
        right = 0
    keep = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    if left >= 0:
        keep = keep & (j >= i - left)  # BUG: left bound from the local row index, missing the Sk - Sq offset
    if right >= 0:
        keep = keep & (j <= i + off + right)
    s = torch.where(keep, s, _neg_inf(s))
    return torch.matmul(_safe_softmax(s), vh).transpose(1, 2)


# --- kernel: flash_onnx_tril ---
def flash_onnx_tril(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """ONNX-style attention lowering: is_causal as tril on a (Q_len, K_len) ones matrix."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _to_bhsd(q, k, v)
    s = _scores(qh, kh, scale, softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    keep = _band(sq, sk, False, window_size, q.device)
    if causal:
        left, _ = window_size
        keep = _band(sq, sk, False, (left, -1), q.device)
        tri = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
        keep = keep & tri.tril(0)  # BUG: tril(0) anchors causal at key 0; needs the Sk - Sq diagonal offset
    s = torch.where(keep, s, _neg_inf(s))
    return torch.matmul(_safe_softmax(s), vh).transpose(1, 2)


# --- kernel: flash_xpu_softcap_param ---
def flash_xpu_softcap_param(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """XPU fwd op port: the runner stores params (scale, softcap, window) and calls the softmax mainloop."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    params = {"scale": softmax_scale if softmax_scale is not None else d ** -0.5, "softcap": softcap,
              "window": window_size, "causal": causal}
    qh, kh, vh = _to_bhsd(q, k, v)
    s = torch.matmul(qh, kh.transpose(-2, -1)) * params["scale"]  # BUG: params["softcap"] never applied (no tanh)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    keep = _band(sq, sk, params["causal"], params["window"], q.device)
    s = torch.where(keep, s, _neg_inf(s))
    return torch.matmul(_safe_softmax(s), vh).transpose(1, 2)


# --- kernel: flash_fa2_sentinel ---
def flash_fa2_sentinel(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                       alibi_slopes=None, deterministic=False, return_attn_probs=False, block_n=32):
    """FA2 prefill loop over key blocks with the running max initialised to -math::inf."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _to_bhsd(q, k, v)
    keep = _band(sq, sk, causal, window_size, q.device)
    m = torch.full((b, hq, sq, 1), -5e4, dtype=q.dtype, device=q.device)  # BUG: finite "-inf" sentinel -5e4
    d_sum = torch.zeros_like(m)
    acc = torch.zeros(b, hq, sq, v.size(-1), dtype=q.dtype, device=q.device)
    for start in range(0, sk, block_n):
        s = _scores(qh, kh[..., start:start + block_n, :], scale, softcap)
        if alibi_slopes is not None:
            s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)[..., start:start + block_n]
        s = torch.where(keep[:, start:start + block_n], s, _neg_inf(s))
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        p = torch.exp(s - m_new)
        corr = torch.exp(m - m_new)
        d_sum = d_sum * corr + p.sum(dim=-1, keepdim=True)
        acc = acc * corr + torch.matmul(p, vh[..., start:start + block_n, :])
        m = m_new
    out = acc / torch.where(d_sum == 0, torch.ones_like(d_sum), d_sum)
    return out.transpose(1, 2)


# --- kernel: flash_exclusive_window ---
def flash_exclusive_window(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """MHA kernel wrapper whose window_left was documented as inclusive of the current token."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _to_bhsd(q, k, v)
    s = _scores(qh, kh, scale, softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    i, j, off = _idx(sq, sk, q.device)
    window_left, window_right = window_size
    if causal:
        window_right = 0
    keep = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    if window_left >= 0:
        keep = keep & (j > i + off - window_left)  # BUG: strict bound drops the key at distance window_left
    if window_right >= 0:
        keep = keep & (j <= i + off + window_right)
    s = torch.where(keep, s, _neg_inf(s))
    return torch.matmul(_safe_softmax(s), vh).transpose(1, 2)


# --- kernel: flash_split_heads_view ---
def flash_split_heads_view(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                           softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Tutorial-style multi-head split: (batch, seq, heads, dim) -> (batch, heads, seq, dim) before attention."""
    b, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5

    def split_heads(x):
        return x.reshape(x.size(0), x.size(2), x.size(1), x.size(3))  # BUG: reshape, not transpose

    qh, kh, vh = split_heads(q), split_heads(k), split_heads(v)
    if hkv != hq:
        kh = kh.repeat_interleave(hq // hkv, dim=1)
        vh = vh.repeat_interleave(hq // hkv, dim=1)
    s = _scores(qh, kh, scale, softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    s = torch.where(_band(sq, sk, causal, window_size, q.device), s, _neg_inf(s))
    return torch.matmul(_safe_softmax(s), vh).transpose(1, 2)


# --- kernel: flash_alibi_in_causal_mask ---
def flash_alibi_in_causal_mask(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """fairseq-style decoder: the ALiBi bias is folded into the future (causal) mask buffer."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _to_bhsd(q, k, v)
    s = _scores(qh, kh, scale, softcap)
    attn_mask = None
    if causal:
        attn_mask = torch.zeros(sq, sk, dtype=s.dtype, device=s.device)
        if alibi_slopes is not None:  # BUG: ALiBi only rides on the causal mask buffer; non-causal calls get none
            attn_mask = attn_mask + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    if attn_mask is not None:
        s = s + attn_mask
    s = torch.where(_band(sq, sk, causal, window_size, q.device), s, _neg_inf(s))
    return torch.matmul(_safe_softmax(s), vh).transpose(1, 2)


# --- kernel: flash_local_clamped_right ---
def flash_local_clamped_right(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash_api-style param setup: for local attention a negative window side is replaced by seqlen_k."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    window_size_left, window_size_right = window_size
    if causal:
        window_size_right = 0
    is_local = window_size_left >= 0 or window_size_right >= 0
    if is_local:
        if window_size_left < 0:
            window_size_left = sk
        if window_size_right < 0:
            window_size_right = sk  # BUG: unbounded right side clamped to seqlen_k (cuts keys when Sq > Sk)
    qh, kh, vh = _to_bhsd(q, k, v)
    s = _scores(qh, kh, scale, softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    i, j, off = _idx(sq, sk, q.device)
    keep = torch.ones(sq, sk, dtype=torch.bool, device=q.device)
    if is_local:
        keep = (j >= i + off - window_size_left) & (j <= i + off + window_size_right)
    s = torch.where(keep, s, _neg_inf(s))
    return torch.matmul(_safe_softmax(s), vh).transpose(1, 2)


# --- kernel: flash_ring_bf16_accumulate ---
def flash_ring_bf16_accumulate(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                               chunk=64):
    """Context-parallel style: per-KV-chunk (out, lse) corrected into a running output with the LSE."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _to_bhsd(q, k, v)
    keep = _band(sq, sk, causal, window_size, q.device)
    out = torch.zeros(b, hq, sq, v.size(-1), dtype=q.dtype, device=q.device)
    lse = torch.full((b, hq, sq, 1), float("-inf"), dtype=q.dtype, device=q.device)
    for start in range(0, sk, chunk):
        s = _scores(qh, kh[..., start:start + chunk, :], scale, softcap)
        if alibi_slopes is not None:
            s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)[..., start:start + chunk]
        s = torch.where(keep[:, start:start + chunk], s, _neg_inf(s))
        blk_lse = torch.logsumexp(s, dim=-1, keepdim=True)
        blk_out = torch.matmul(_safe_softmax(s), vh[..., start:start + chunk, :])
        new_lse = torch.logaddexp(lse, blk_lse)
        safe = torch.where(torch.isfinite(new_lse), new_lse, torch.zeros_like(new_lse))
        w_old = torch.where(torch.isfinite(lse), torch.exp(lse - safe), torch.zeros_like(lse))
        w_blk = torch.where(torch.isfinite(blk_lse), torch.exp(blk_lse - safe), torch.zeros_like(blk_lse))
        out = (out * w_old + blk_out * w_blk).to(torch.bfloat16).to(q.dtype)  # BUG: running output held in bf16
        lse = new_lse
    return out.transpose(1, 2)


# --- kernel: flash_grouped_dense ---
def flash_grouped_dense(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                        alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """Dense reference-style kernel, GQA by viewing query heads as (Hkv, group) (no kv expansion)."""
    b, sq, hq, d = q.shape
    sk, hkv = k.size(1), k.size(2)
    g = hq // hkv
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qg = q.reshape(b, sq, hkv, g, d).permute(0, 2, 3, 1, 4)
    kg = k.permute(0, 2, 1, 3).unsqueeze(2)
    vg = v.permute(0, 2, 1, 3).unsqueeze(2)
    s = torch.matmul(qg, kg.transpose(-2, -1)) * scale
    if softcap > 0:
        s = torch.tanh(s / softcap) * softcap
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device).expand(b, hq, sq, sk).reshape(b, hkv, g, sq, sk)
    s = torch.where(_band(sq, sk, causal, window_size, q.device), s, _neg_inf(s))
    out = torch.matmul(_safe_softmax(s), vg)
    return out.reshape(b, hq, sq, v.size(-1)).transpose(1, 2)


# --- kernel: flash_banded_tiles_exp2 ---
def flash_banded_tiles_exp2(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False,
                            block_m=16, block_n=32):
    """Tiled kernel: per query block only the key blocks overlapping the causal/window band are visited;
    online softmax in base 2 on log2(e)-scaled scores."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    log2e = 1.0 / math.log(2.0)
    qh, kh, vh = _to_bhsd(q, k, v)
    band = _band(sq, sk, causal, window_size, q.device)
    out = torch.zeros(b, hq, sq, v.size(-1), dtype=q.dtype, device=q.device)
    for m0 in range(0, sq, block_m):
        rows = band[m0:m0 + block_m]
        cols = torch.nonzero(rows.any(dim=0)).flatten()
        if cols.numel() == 0:
            continue
        n_lo = (int(cols[0]) // block_n) * block_n
        n_hi = int(cols[-1]) + 1
        qb = qh[..., m0:m0 + block_m, :]
        m_i = torch.full(qb.shape[:-1] + (1,), float("-inf"), dtype=q.dtype, device=q.device)
        l_i = torch.zeros_like(m_i)
        acc = torch.zeros(qb.shape[:-1] + (v.size(-1),), dtype=q.dtype, device=q.device)
        for n0 in range(n_lo, n_hi, block_n):
            s = _scores(qb, kh[..., n0:n0 + block_n, :], scale, softcap)
            if alibi_slopes is not None:
                s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)[..., m0:m0 + block_m, n0:n0 + block_n]
            s = torch.where(rows[:, n0:n0 + block_n], s * log2e, _neg_inf(s))
            m_new = torch.maximum(m_i, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            corr = torch.where(torch.isfinite(m_i), torch.exp2(m_i - m_safe), torch.zeros_like(m_i))
            p = torch.exp2(s - m_safe)
            l_i = l_i * corr + p.sum(dim=-1, keepdim=True)
            acc = acc * corr + torch.matmul(p, vh[..., n0:n0 + block_n, :])
            m_i = m_new
        out[..., m0:m0 + block_m, :] = acc / torch.where(l_i == 0, torch.ones_like(l_i), l_i)
    return out.transpose(1, 2)


# --- kernel: flash_split_kv_merge ---
def flash_split_kv_merge(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False, n_splits=3):
    """Split-KV (flash-decoding style): n_splits partial results merged with their natural-log LSE."""
    b, sq, hq, d = q.shape
    sk = k.size(1)
    scale = softmax_scale if softmax_scale is not None else d ** -0.5
    qh, kh, vh = _to_bhsd(q, k, v)
    s = _scores(qh, kh, scale, softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, b, hq, sq, sk, s.dtype, s.device)
    s = torch.where(_band(sq, sk, causal, window_size, q.device), s, _neg_inf(s))
    step = max(1, -(-sk // n_splits))
    outs, lses = [], []
    for start in range(0, sk, step):
        part = s[..., start:start + step]
        lses.append(torch.logsumexp(part, dim=-1, keepdim=True))
        outs.append(torch.matmul(_safe_softmax(part), vh[..., start:start + step, :]))
    lse_all = torch.stack(lses)
    lse = torch.logsumexp(lse_all, dim=0)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    out = torch.zeros_like(outs[0])
    for o_i, l_i in zip(outs, lses):
        out = out + o_i * torch.where(torch.isfinite(l_i), torch.exp(l_i - safe), torch.zeros_like(l_i))
    return out.transpose(1, 2)


def _entry(name, fn, bug=None, parameter=None, source=None, kind=None, dtype="float64"):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/%s/%s/%s" % (repo, kind, num)
    return {"name": name, "api": "flash-attn", "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
            "source": source, "report": report, "dtype": dtype,
            "features": ["causal", "window", "softcap", "alibi", "gqa", "dv-ne-d"]}


CATALOG = [
    _entry("flash-lalamo-window-local-rows", "flash_cache_window", "window-bound-misses-kv-offset",
           "window lower bound j >= i - left from local row indices (no Sk - Sq offset) while causal is offset",
           "trymirai/lalamo#200", "pull"),
    _entry("flash-tinygrad-causal-tril0", "flash_onnx_tril", "causal-ignores-kv-offset",
           "causal mask built with tril(0) (top-left) instead of bottom-right j <= i + Sk - Sq",
           "tinygrad/tinygrad#15949", "pull"),
    _entry("flash-sglxpu-softcap-dropped", "flash_xpu_softcap_param", "softcap-accepted-not-applied",
           "softcap argument stored but the tanh cap is never applied", "sgl-project/sgl-kernel-xpu#491", "pull"),
    _entry("flash-flashinfer-finite-inf-sentinel", "flash_fa2_sentinel", "running-max-init-finite-sentinel",
           "online-softmax running max initialised to a finite -5e4; rows whose scores are all below it become zero",
           "flashinfer-ai/flashinfer#4267", "issues"),
    _entry("flash-tokenspeed-window-exclusive", "flash_exclusive_window", "window-left-off-by-one",
           "left window bound strict (j > i + off - left): the key at distance exactly left is dropped",
           "lightseekorg/tokenspeed#578", "pull"),
    _entry("flash-tutorial-split-heads-view", "flash_split_heads_view", "head-split-without-transpose",
           "(B, S, H, D) inputs reshaped to (B, H, S, D) instead of transposed", "hyunwoongko/transformer#15",
           "issues"),
    _entry("flash-alibi-only-with-causal-mask", "flash_alibi_in_causal_mask", "alibi-dropped-when-not-causal",
           "ALiBi bias folded into the causal mask buffer, so non-causal calls get no ALiBi",
           "ofirpress/attention_with_linear_biases#20", "issues"),
    _entry("flash-fa-right-window-clamped", "flash_local_clamped_right", "unbounded-window-side-clamped-to-seqlen-k",
           "window_size_right = -1 replaced by Sk for local attention, cutting keys when Sq > Sk",
           "Dao-AILab/flash-attention#895", "issues"),
    _entry("flash-te-bf16-running-output", "flash_ring_bf16_accumulate", "partial-output-accumulated-in-bf16",
           "running output corrected across KV chunks stored in bfloat16", "NVIDIA/TransformerEngine#716", "pull",
           dtype="float32"),
    _entry("flash-grouped-dense", "flash_grouped_dense"),
    _entry("flash-banded-tiles-exp2", "flash_banded_tiles_exp2"),
    _entry("flash-split-kv-merge", "flash_split_kv_merge"),
]
