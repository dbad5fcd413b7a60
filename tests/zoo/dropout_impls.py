"""Zoo: attention WITH DROPOUT in three calling conventions, correct kernels and broken ones.

Written independently, from the FlashAttention documentation (the flash_attn_func / flash_attn_varlen_func
docstrings) and the public reports cited in the broken kernels' docstrings; refimpl was not read.

Shared math, computed in float64 (results in q's dtype). One sequence with Sq queries and Sk keys, query i,
key j, scale = the given scale or 1/sqrt(D):
    s_ij  = (q_i . k_j) * scale;  s_ij = softcap * tanh(s_ij / softcap) if softcap > 0           (A, B)
    s_ij += -slope_h * |i + Sk - Sq - j|                                    with alibi_slopes (Hq,)  (A, B)
    allowed_ij: i + Sk - Sq - left <= j <= i + Sk - Sq + right (BOTTOM-RIGHT aligned; causal sets right = 0;
                -1 = unbounded)                                                                    (A, B)
    P_ij  = softmax over the allowed j of s_i (a row without an allowed key: P_i = 0)
    out_i = sum_j P_ij * Z_ij / (1 - p) * v_j      Z_ij = 1 (kept, probability 1 - p) or 0 (dropped)
The dropout acts on the normalised probabilities; a row with nothing kept gives zeros. GQA: query head h
uses kv head h // (Hq // Hkv).

A  flash_attn_func: fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
   softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False); torch q (B, Sq, Hq, D),
   k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv). Returns out (B, Sq, Hq, Dv), or with return_attn_probs
   (out, softmax_lse, S_dmask): softmax_lse float32 (B, Hq, Sq) = log sum over allowed j of exp(s_ij)
   (+inf for a row without key); S_dmask (B, Hq, Sq, Sk) = P_ij where kept and -P_ij where dropped
   (FlashAttention's sign convention: negative = dropped). The kernel draws Z itself, afresh on every call
   (the seed comes from torch's global generator, so torch.manual_seed reproduces a call).
B  flash_attn_varlen_func: fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
   then A's keywords); q (total_q, Hq, D), k (total_k, Hkv, D), v (total_k, Hkv, Dv), cu_seqlens int32 (B+1,)
   cumulative lengths (empty sequences allowed). Sequence b attends its own keys only, causal/window aligned
   bottom-right inside it. Returns out (total_q, Hq, Dv), or (out, softmax_lse (Hq, total_q) float32,
   S_dmask (B, Hq, max_seqlen_q, max_seqlen_k)) with sequence b's query i and key j at [b, h, i, j]; the
   entries outside a sequence are zero and carry no meaning.
C  refimpl's given-mask protocol: fn(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None) on
   NumPy arrays q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv), or 2-D (S, D) arrays for one head.
   mask: None or a bool keep-mask (True = attend, causal already folded in) broadcastable to (B, Hq, Sq, Sk).
   dropout_mask: None or the caller's bool draw (B, Hq, Sq, Sk), True = kept; it is applied exactly, kept
   weights times 1/(1 - dropout_p). Returns out (B, Hq, Sq, Dv) ((Sq, Dv) for 2-D input) in q's dtype.
   (dropout_p > 0 without a dropout_mask: the kernel draws one from np.random's global generator.)
The broken kernels contain exactly one mistake each (marked `BUG:`), taken from the report cited in their
docstring; see CATALOG.
"""
import math

import numpy as np
import torch

_BM, _BN = 16, 16   # block sizes of the blockwise (FlashAttention-2 style) kernels
_U32 = np.uint64(0xFFFFFFFF)
_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))


# ----------------------------------------------------------------------------------------------- random bits
def _philox(c0, c1, c2, c3, key, rounds=10):
    """Philox4x32-10 (Salmon et al., SC'11), vectorised over broadcastable counter arrays; first output word."""
    c0, c1, c2, c3 = (np.asarray(c).astype(np.uint64) & _U32 for c in np.broadcast_arrays(c0, c1, c2, c3))
    k0, k1 = np.uint64(key[0]) & _U32, np.uint64(key[1]) & _U32
    for _ in range(rounds):
        p0, p1 = c0 * _PHILOX_M[0], c2 * _PHILOX_M[1]          # 32 x 32 -> 64 bits, exact in uint64
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _U32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _U32)
        k0, k1 = (k0 + _PHILOX_W[0]) & _U32, (k1 + _PHILOX_W[1]) & _U32
    return c0


def _philox_keep(key, b, h, i, j, p):
    """Keep bits of elements (b, h, i, j) (broadcastable index arrays): uniform 32-bit word >= p * 2^32."""
    word = _philox(j, i, h, b, key)
    return torch.from_numpy(word >= np.uint64(min(math.ceil(p * 2.0 ** 32), 2 ** 32)))


def _philox_keep_uint8(key, b, h, i, j, p):
    """BUG (see fa_uint8_keep_threshold): the keep test compares one random BYTE with floor((1 - p) * 255)."""
    byte = _philox(j, i, h, b, key) & np.uint64(0xFF)
    return torch.from_numpy(byte <= np.uint64(math.floor((1.0 - p) * 255.0)))


# ------------------------------------------------------------------------------------- A/B shared machinery
class _Cfg:
    """Per-call settings of the flash-attn style kernels, with this call's seed and torch.Generator."""

    def __init__(self, d, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes):
        self.p = float(dropout_p)
        self.rp = 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0
        self.scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
        left, right = (-1, -1) if window_size is None else (int(w) for w in window_size)
        self.left, self.right = left, (0 if causal else right)
        self.softcap = float(softcap or 0.0)
        self.slopes = None if alibi_slopes is None else torch.as_tensor(alibi_slopes).double().reshape(-1)
        words = torch.randint(0, 2 ** 32, (2,), dtype=torch.int64)      # drawn from torch's global generator
        self.key = (int(words[0]), int(words[1]))
        self.gen = torch.Generator().manual_seed(self.key[0] * 2 ** 32 + self.key[1])

    def draw_keep(self, shape):
        """Dense keep pattern from this call's generator: uniform [0, 1) >= p, i.e. kept with probability 1 - p."""
        return torch.rand(shape, generator=self.gen, dtype=torch.float64) >= self.p


def _scores(cfg, q, k, r0, r1, c0, c1):
    """Float64 scores (Hq, r1 - r0, c1 - c0) of one sequence (q (Sq, Hq, D), k (Sk, Hkv, D)); -inf off-band."""
    sq, hq, sk = q.shape[0], q.shape[1], k.shape[0]
    qb = q[r0:r1].double().transpose(0, 1)
    kb = k[c0:c1].double().repeat_interleave(hq // k.shape[1], dim=1).transpose(0, 1)
    s = qb @ kb.transpose(1, 2) * cfg.scale
    if cfg.softcap > 0:
        s = cfg.softcap * torch.tanh(s / cfg.softcap)
    dist = torch.arange(c0, c1).view(1, -1) - (torch.arange(r0, r1).view(-1, 1) + sk - sq)   # j - diagonal(i)
    if cfg.slopes is not None:
        s = s - cfg.slopes.view(-1, 1, 1) * dist.abs()
    ok = torch.ones(dist.shape, dtype=torch.bool)
    if cfg.right >= 0:
        ok &= dist <= cfg.right
    if cfg.left >= 0:
        ok &= dist >= -cfg.left
    return s.masked_fill(~ok, -math.inf)


def _softmax(s):
    """(P, lse) of float64 scores (..., n) with -inf = not allowed; rows without a key give P = 0, lse = +inf."""
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(s - m)
    den = e.sum(-1, keepdim=True)
    live = den > 0
    probs = torch.where(live, e / torch.where(live, den, torch.ones_like(den)), torch.zeros_like(e))
    lse = torch.where(live, m + torch.log(torch.where(live, den, torch.ones_like(den))), torch.full_like(m, math.inf))
    return probs, lse.squeeze(-1)


def _vh(v, hq):
    """v (Sk, Hkv, Dv) -> float64 (Hq, Sk, Dv), kv head h // (Hq // Hkv) for query head h."""
    return v.double().repeat_interleave(hq // v.shape[1], dim=1).transpose(0, 1)


def _signed(probs, keep):
    """FlashAttention's S_dmask convention: the probability where kept, its negation where dropped."""
    return torch.where(keep, probs, -probs)


def _empty_seq(q, k, v):
    sq, hq, sk = q.shape[0], q.shape[1], k.shape[0]
    return (torch.zeros(sq, hq, v.shape[2], dtype=torch.float64), torch.full((hq, sq), math.inf, dtype=torch.float64),
            torch.zeros(hq, sq, sk, dtype=torch.float64))


def _fa_run(seq_fn, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, ret):
    """Convention A around a per-sequence kernel seq_fn(cfg, b, q_b, k_b, v_b) -> (out, lse, S_dmask) in float64."""
    cfg = _Cfg(q.shape[-1], dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes)
    parts = [seq_fn(cfg, b, q[b], k[b], v[b]) if q.shape[1] and k.shape[1] else _empty_seq(q[b], k[b], v[b])
             for b in range(q.shape[0])]
    out = torch.stack([o for o, _, _ in parts]).to(q.dtype)
    if not ret:
        return out
    return out, torch.stack([lse for _, lse, _ in parts]).float(), torch.stack([s for _, _, s in parts]).to(q.dtype)


def _layout_per_sequence(parts, cu_q, cu_k, max_q, max_k, hq, dtype):
    """S_dmask (B, Hq, max_q, max_k), sequence b's (i, j) at [b, :, i, j]."""
    sdm = torch.zeros(len(parts), hq, max_q, max_k, dtype=dtype)
    for b, s in enumerate(parts):
        sdm[b, :, :s.shape[1], :s.shape[2]] = s
    return sdm


def _varlen_run(seq_fn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale,
                causal, window_size, softcap, alibi_slopes, ret, layout=_layout_per_sequence):
    """Convention B: seq_fn on each sequence's slice; out/lse packed, S_dmask assembled by `layout`."""
    cfg = _Cfg(q.shape[-1], dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes)
    cu_q, cu_k = [int(x) for x in cu_seqlens_q], [int(x) for x in cu_seqlens_k]
    hq = q.shape[1]
    out = torch.zeros(q.shape[0], hq, v.shape[2], dtype=torch.float64)
    lse = torch.full((hq, q.shape[0]), math.inf, dtype=torch.float64)
    parts = []
    for b in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        seq = (q[qs], k[ks], v[ks])
        o, l_b, s = seq_fn(cfg, b, *seq) if cu_q[b + 1] > cu_q[b] and cu_k[b + 1] > cu_k[b] else _empty_seq(*seq)
        out[qs], lse[:, qs] = o, l_b
        parts.append(s)
    out = out.to(q.dtype)
    if not ret:
        return out
    lens_q = [cu_q[b + 1] - cu_q[b] for b in range(len(cu_q) - 1)] or [0]
    lens_k = [cu_k[b + 1] - cu_k[b] for b in range(len(cu_k) - 1)] or [0]
    max_q, max_k = max(int(max_seqlen_q), *lens_q), max(int(max_seqlen_k), *lens_k)
    return out, lse.float(), layout(parts, cu_q, cu_k, max_q, max_k, hq, q.dtype)


def _flash(seq_fn, name):
    """Public convention-A kernel around seq_fn (its docstring is the kernel's)."""
    def fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
           alibi_slopes=None, deterministic=False, return_attn_probs=False):
        return _fa_run(seq_fn, q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
                       return_attn_probs)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = seq_fn.__doc__
    return fn


def _flash_varlen(seq_fn, name, layout=_layout_per_sequence, doc=None):
    """Public convention-B kernel around seq_fn."""
    def fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
           causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
           return_attn_probs=False):
        return _varlen_run(seq_fn, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                           softmax_scale, causal, window_size, softcap, alibi_slopes, return_attn_probs, layout)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc or seq_fn.__doc__
    return fn


# ----------------------------------------------------------------------------- A/B correct sequence kernels
def _seq_dense(cfg, b, q, k, v):
    """Dense: full score matrix, softmax, keep pattern drawn from a torch.Generator seeded per call,
    P * Z / (1 - p) @ V; S_dmask = P signed by Z."""
    probs, lse = _softmax(_scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0]))
    keep = cfg.draw_keep(probs.shape)
    out = (probs * keep * cfg.rp) @ _vh(v, q.shape[1])
    return out.transpose(0, 1), lse, _signed(probs, keep)


def _seq_blockwise(cfg, b, q, k, v, keep_fn=_philox_keep):
    """FlashAttention-2 style: 16 x 16 tiles, online softmax (running max m, running sum l of the UNDROPPED
    exponentials), dropout applied per tile to the unnormalised exponentials before they meet V, the
    accumulator rescaled by exp(m_old - m_new) like l; out = acc / l / (1 - p) at the end. Keep bits come from
    a counter-based Philox4x32-10 keyed by the call's seed, counter (j, i, h, b), so they do not depend on the
    tiling. S_dmask tiles are stored unnormalised and fixed up with the final m and l."""
    sq, hq, sk = q.shape[0], q.shape[1], k.shape[0]
    vh = _vh(v, hq)
    out = torch.zeros(sq, hq, v.shape[2], dtype=torch.float64)
    lse = torch.full((hq, sq), math.inf, dtype=torch.float64)
    sdm = torch.zeros(hq, sq, sk, dtype=torch.float64)
    heads = np.arange(hq).reshape(-1, 1, 1)
    for r0 in range(0, sq, _BM):
        r1 = min(r0 + _BM, sq)
        m = torch.full((hq, r1 - r0, 1), -math.inf, dtype=torch.float64)
        den = torch.zeros(hq, r1 - r0, 1, dtype=torch.float64)
        acc = torch.zeros(hq, r1 - r0, v.shape[2], dtype=torch.float64)
        tiles = []
        for c0 in range(0, sk, _BN):
            c1 = min(c0 + _BN, sk)
            s = _scores(cfg, q, k, r0, r1, c0, c1)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_use = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            alpha, e = torch.exp(m - m_use), torch.exp(s - m_use)
            den = den * alpha + e.sum(-1, keepdim=True)
            if cfg.p > 0:
                keep = keep_fn(cfg.key, b, heads, np.arange(r0, r1).reshape(1, -1, 1),
                               np.arange(c0, c1).reshape(1, 1, -1), cfg.p)
            else:
                keep = torch.ones(e.shape, dtype=torch.bool)
            acc = acc * alpha + (e * keep) @ vh[:, c0:c1]
            sdm[:, r0:r1, c0:c1] = _signed(e, keep)
            tiles.append((c0, c1, m_new))
            m = m_new
        m_fin = torch.where(torch.isinf(m), torch.zeros_like(m), m)
        inv = torch.where(den > 0, 1.0 / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
        for c0, c1, m_tile in tiles:
            sdm[:, r0:r1, c0:c1] *= torch.exp(m_tile - m_fin) * inv
        out[r0:r1] = (acc * inv * cfg.rp).transpose(0, 1)
        lse[:, r0:r1] = torch.where(den > 0, m_fin + torch.log(torch.where(den > 0, den, torch.ones_like(den))),
                                    torch.full_like(den, math.inf)).squeeze(-1)
    return out, lse, sdm


fa_dense = _flash(_seq_dense, "fa_dense")
fa_blockwise_philox = _flash(_seq_blockwise, "fa_blockwise_philox")
varlen_dense = _flash_varlen(_seq_dense, "varlen_dense")
varlen_blockwise_philox = _flash_varlen(_seq_blockwise, "varlen_blockwise_philox")


# ------------------------------------------------------------------------------------- A broken kernels
def _seq_no_rescale(cfg, b, q, k, v):
    """Dropout without the 1/(1 - p) rescaling of the kept weights.
    Source: Dao-AILab/flash-attention#93 (https://github.com/Dao-AILab/flash-attention/issues/93): the kernel's
    dropout of P hides the rescale (done as rp_dropout at the final write); tridao: "one zeros out a fraction p
    of the entries, and then multiply the rest of the entries by 1/(1 - p)"."""
    probs, lse = _softmax(_scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0]))
    keep = cfg.draw_keep(probs.shape)
    out = (probs * keep) @ _vh(v, q.shape[1])   # BUG: kept weights not multiplied by 1/(1 - p)
    return out.transpose(0, 1), lse, _signed(probs, keep)


def _seq_scale_by_p(cfg, b, q, k, v):
    """Kept weights scaled by p instead of 1/(1 - p).
    Source: NVIDIA/apex#816 (https://github.com/NVIDIA/apex/pull/816), "fix dropout scaling from p to 1/(1-p)
    in multihead attention"."""
    probs, lse = _softmax(_scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0]))
    keep = cfg.draw_keep(probs.shape)
    scale = cfg.p if cfg.p > 0 else 1.0   # BUG: scale p (when dropout is on), should be 1/(1 - p)
    out = (probs * keep * scale) @ _vh(v, q.shape[1])
    return out.transpose(0, 1), lse, _signed(probs, keep)


def _seq_keep_prob_p(cfg, b, q, k, v):
    """dropout_p read as the KEEP probability (kept with probability p, scaled by 1/p).
    Source: google-research/electra#61 (https://github.com/google-research/electra/pull/61): a dropout layer
    documented `rate` as the probability of keeping a unit while tf.nn.dropout drops with probability `rate`;
    also hunkim/DeepLearningZeroToAll#122 (dropout rate vs keep_prob confusion)."""
    probs, lse = _softmax(_scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0]))
    keep = torch.ones(probs.shape, dtype=torch.bool)
    scale = 1.0
    if cfg.p > 0:
        keep_prob = cfg.p   # BUG: this is the drop probability; the keep probability is 1 - p
        keep = torch.rand(probs.shape, generator=cfg.gen, dtype=torch.float64) < keep_prob
        scale = 1.0 / keep_prob
    out = (probs * keep * scale) @ _vh(v, q.shape[1])
    return out.transpose(0, 1), lse, _signed(probs, keep)


def _seq_smask_redrawn(cfg, b, q, k, v):
    """The returned S_dmask comes from a second draw, not from the pattern applied to the output.
    Source: Dao-AILab/flash-attention#1251 (https://github.com/Dao-AILab/flash-attention/issues/1251): "it seems
    the current flash-attn-3 gives different dropout mask in its forward and backward kernel"."""
    probs, lse = _softmax(_scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0]))
    keep = cfg.draw_keep(probs.shape)
    out = (probs * keep * cfg.rp) @ _vh(v, q.shape[1])
    reported = cfg.draw_keep(probs.shape)   # BUG: regenerated with the generator's NEXT state, another pattern
    return out.transpose(0, 1), lse, _signed(probs, reported)


def _seq_smask_sign_inverted(cfg, b, q, k, v):
    """S_dmask with the sign convention inverted (negative where KEPT).
    Sources: microsoft/onnxruntime#1507 (https://github.com/microsoft/onnxruntime/pull/1507), on the Dropout
    mask output: "I think the value will be 1 when the input is dropped and 0 if not" (the opposite of the
    spec's keep mask); Dao-AILab/flash-attention#902, a user unable to read FlashAttention's negative entries."""
    probs, lse = _softmax(_scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0]))
    keep = cfg.draw_keep(probs.shape)
    out = (probs * keep * cfg.rp) @ _vh(v, q.shape[1])
    return out.transpose(0, 1), lse, torch.where(keep, -probs, probs)   # BUG: kept entries negated


def _seq_uint8_threshold(cfg, b, q, k, v):
    """Blockwise Philox kernel whose keep test compares one random byte with floor((1 - p) * 255): the keep
    rate is (floor(255 (1 - p)) + 1) / 256, not 1 - p (0.8984 for p = 0.1, 255/256 for any p < 1/255), while
    the kept weights are still scaled by 1/(1 - p).
    Sources: NVIDIA/apex#1614 (https://github.com/NVIDIA/apex/pull/1614), "Use 8bit comparison to generate
    dropout mask"; Dao-AILab/flash-attention#902 (https://github.com/Dao-AILab/flash-attention/issues/902):
    "I set dropout_p to 1e-16, so no dropout should in principle be applied ... Still I get negative attention
    weight entries"."""
    return _seq_blockwise(cfg, b, q, k, v, keep_fn=_philox_keep_uint8)   # BUG: 8-bit keep threshold


fa_no_rescale = _flash(_seq_no_rescale, "fa_no_rescale")
fa_scale_by_p = _flash(_seq_scale_by_p, "fa_scale_by_p")
fa_keep_prob_p = _flash(_seq_keep_prob_p, "fa_keep_prob_p")
fa_smask_redrawn = _flash(_seq_smask_redrawn, "fa_smask_redrawn")
fa_smask_sign_inverted = _flash(_seq_smask_sign_inverted, "fa_smask_sign_inverted")
fa_uint8_keep_threshold = _flash(_seq_uint8_threshold, "fa_uint8_keep_threshold")


# ------------------------------------------------------------------------------------- B broken kernels
def _layout_packed(parts, cu_q, cu_k, max_q, max_k, hq, dtype):
    """BUG (see varlen_smask_packed): every sequence's block at its PACKED offsets (cu_q[b] + i, cu_k[b] + j)."""
    sdm = torch.zeros(len(parts), hq, max(cu_q[-1], max_q), max(cu_k[-1], max_k), dtype=dtype)
    for b, s in enumerate(parts):
        sdm[b, :, cu_q[b]:cu_q[b] + s.shape[1], cu_k[b]:cu_k[b] + s.shape[2]] = s
    return sdm


def _seq_output_dropout(cfg, b, q, k, v):
    """Dropout applied to the attention OUTPUT (P @ V) instead of the weights P; S_dmask = P, nothing dropped.
    Source: nikhilbarhate99/min-decision-transformer#2
    (https://github.com/nikhilbarhate99/min-decision-transformer/issues/2): `attention = self.att_drop(
    normalized_weights @ v)` - "The dropout is at last", unlike the official code that drops the weights."""
    probs, lse = _softmax(_scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0]))
    ctx = probs @ _vh(v, q.shape[1])
    keep = cfg.draw_keep(ctx.shape)
    out = ctx * keep * cfg.rp   # BUG: dropout on the (Hq, Sq, Dv) output, not on the (Hq, Sq, Sk) weights
    return out.transpose(0, 1), lse, probs


def _seq_pre_softmax(cfg, b, q, k, v):
    """Dropout applied BEFORE the softmax: dropped scores set to -inf, the softmax renormalises over the kept
    keys (no 1/(1 - p)); S_dmask reports the undropped P signed by the pattern.
    Sources: Dao-AILab/flash-attention#987 (https://github.com/Dao-AILab/flash-attention/issues/987): "other
    attention dropout implementations work by applying -inf to the dropped locations prior to softmax"; tridao:
    "We apply dropout to the output of softmax". Also facebookresearch/fairseq#351."""
    s = _scores(cfg, q, k, 0, q.shape[0], 0, k.shape[0])
    probs, lse = _softmax(s)
    keep = cfg.draw_keep(probs.shape)
    dropped_probs, _ = _softmax(s.masked_fill(~keep, -math.inf))   # BUG: dropout on the scores
    out = dropped_probs @ _vh(v, q.shape[1])
    return out.transpose(0, 1), lse, _signed(probs, keep)


varlen_smask_packed = _flash_varlen(_seq_dense, "varlen_smask_packed", layout=_layout_packed, doc="""
    Correct output, but S_dmask laid out by PACKED position: sequence b's query i / key j written at
    [b, h, cu_seqlens_q[b] + i, cu_seqlens_k[b] + j] of a (B, Hq, total_q, total_k) tensor instead of [b, h, i, j].
    Source: Dao-AILab/flash-attention#1357 (https://github.com/Dao-AILab/flash-attention/issues/1357): a user
    comparing the varlen S_dmask shape [2, 24, 4992, 4992] (per sequence, padded) with softmax_lse [24, 4960]
    (packed); tridao: S_dmask is for testing only.""")
varlen_dropout_on_output = _flash_varlen(_seq_output_dropout, "varlen_dropout_on_output")
varlen_dropout_before_softmax = _flash_varlen(_seq_pre_softmax, "varlen_dropout_before_softmax")


# ----------------------------------------------------------------------------------- C (NumPy, given mask)
class _RefCall:
    """Normalised inputs of convention C: float64 (B, Hq, S, .) arrays with kv heads expanded, masks broadcast."""

    def __init__(self, q, k, v, mask, scale, dropout_p, dropout_mask):
        self.dtype, self.two_d = np.asarray(q).dtype, np.ndim(q) == 2
        q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
        if self.two_d:
            q, k, v = q[None, None], k[None, None], v[None, None]
        bsz, hq, sq, d = q.shape
        sk = k.shape[2]
        self.q, self.k, self.v = q, np.repeat(k, hq // k.shape[1], axis=1), np.repeat(v, hq // v.shape[1], axis=1)
        self.scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
        shape = (bsz, hq, sq, sk)
        self.allowed = np.ones(shape, bool) if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), shape)
        self.p = float(dropout_p)
        if dropout_mask is None and self.p > 0:
            dropout_mask = np.random.random_sample(shape) >= self.p
        self.keep = np.ones(shape, bool) if dropout_mask is None else np.broadcast_to(
            np.asarray(dropout_mask, dtype=bool), shape)
        self.rp = 1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0

    def scores(self, c0=0, c1=None):
        s = self.q @ np.swapaxes(self.k[:, :, c0:c1], -1, -2) * self.scale
        return np.where(self.allowed[..., c0:c1], s, -np.inf)

    def finish(self, out):
        out = out.astype(self.dtype if np.issubdtype(self.dtype, np.floating) else np.float64)
        return out[0, 0] if self.two_d else out


def _np_softmax(s):
    m = s.max(-1, keepdims=True) if s.shape[-1] else np.zeros(s.shape[:-1] + (1,))
    m = np.where(np.isinf(m), 0.0, m)
    e = np.exp(s - m)
    den = e.sum(-1, keepdims=True)
    return np.where(den > 0, e / np.where(den > 0, den, 1.0), 0.0)


def _np_online(x, rowsum_after_dropout=False):
    """Online softmax over key blocks of _BN with per-block dropout of the unnormalised exponentials."""
    shape = x.q.shape[:3] + (1,)
    m, den = np.full(shape, -np.inf), np.zeros(shape)
    acc = np.zeros(x.q.shape[:3] + (x.v.shape[3],))
    for c0 in range(0, x.k.shape[2], _BN):
        c1 = c0 + _BN
        s = x.scores(c0, c1)
        m_new = np.maximum(m, s.max(-1, keepdims=True))
        m_use = np.where(np.isinf(m_new), 0.0, m_new)
        alpha, e = np.exp(m - m_use), np.exp(s - m_use)
        dropped = e * x.keep[..., c0:c1]
        den = den * alpha + (dropped if rowsum_after_dropout else e).sum(-1, keepdims=True)
        acc = acc * alpha + dropped @ x.v[:, :, c0:c1]
        m = m_new
    return np.where(den > 0, acc / np.where(den > 0, den, 1.0), 0.0) * x.rp


def ref_dense(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
    """Dense NumPy: softmax over the allowed keys, times the given keep mask and 1/(1 - p), @ V."""
    x = _RefCall(q, k, v, mask, scale, dropout_p, dropout_mask)
    return x.finish((_np_softmax(x.scores()) * x.keep * x.rp) @ x.v)


def ref_blockwise(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
    """FlashAttention-2 style online softmax over key blocks of 16: the given keep mask is applied per block to
    the unnormalised exponentials exp(s - m_running); the running sum l counts the undropped exponentials; the
    accumulator is rescaled with l; out = acc / l / (1 - p)."""
    x = _RefCall(q, k, v, mask, scale, dropout_p, dropout_mask)
    return x.finish(_np_online(x))


def ref_mask_ignored(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
    """Accepts dropout_p and dropout_mask but never applies them (plain attention).
    Source: facebookresearch/xformers#123 (https://github.com/facebookresearch/xformers/pull/123): "turns out that
    in many case dropout was not applied ... for some variant the setting was silently ignored"."""
    x = _RefCall(q, k, v, mask, scale, dropout_p, dropout_mask)
    return x.finish(_np_softmax(x.scores()) @ x.v)   # BUG: x.keep and x.rp never used


def ref_mask_inverted(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
    """Reads the dropout mask with the opposite polarity (True = dropped).
    Sources: pytorch/pytorch#170415 (https://github.com/pytorch/pytorch/pull/170415), "SDPA: True = Keep (Attend),
    MHA: True = Ignore (Mask out) ... The inconsistency leads to silent bugs during migration";
    rasbt/LLMs-from-scratch#1061 (a boolean mask passed with the wrong polarity)."""
    x = _RefCall(q, k, v, mask, scale, dropout_p, dropout_mask)
    dropped = x.keep if dropout_mask is not None else np.zeros_like(x.keep)   # BUG: the mask read as "drop here"
    return x.finish((_np_softmax(x.scores()) * ~dropped * x.rp) @ x.v)


def ref_scale_inv_p(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
    """Kept weights scaled by 1/p instead of 1/(1 - p) (identical only at p = 0.5).
    Source: rasbt/LLMs-from-scratch#431 (https://github.com/rasbt/LLMs-from-scratch/issues/431): "the scaling of
    non-dropped values is described as 1/dropout ... the scaling factor is actually 1/(1 - dropout)"."""
    x = _RefCall(q, k, v, mask, scale, dropout_p, dropout_mask)
    factor = 1.0 / x.p if x.p > 0 else 1.0   # BUG: 1/p
    return x.finish((_np_softmax(x.scores()) * x.keep * factor) @ x.v)


def ref_blockwise_rowsum_after_dropout(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
    """Blockwise kernel whose running row sum l is accumulated from the DROPPED exponentials, so the output is
    normalised over the kept weights only (and a row with every weight dropped divides by zero; guarded to 0).
    Source: aws-neuron/nki-samples#80 (https://github.com/aws-neuron/nki-samples/pull/80): "in the current kernel,
    the `l_buffer` computation is done after dropout causing error" (NaN rows under causal masks)."""
    x = _RefCall(q, k, v, mask, scale, dropout_p, dropout_mask)
    return x.finish(_np_online(x, rowsum_after_dropout=True))   # BUG: l sums e * keep


# ------------------------------------------------------------------------------------------------ catalog
_DOCS = "https://github.com/Dao-AILab/flash-attention (flash_attn_interface.py docstrings)"
_API = {"fa": "flash-attn", "varlen": "flash-attn-varlen", "ref": "refimpl"}


def _entry(name, bug, note, source=_DOCS):
    return {"name": name, "api": _API[name.split("_")[0]], "fn": name, "correct": bug is None, "bug": bug,
            "dtype": "float64", "note": note, "source": source}


CATALOG = [
    _entry("fa_dense", None, "dense softmax, keep pattern from a torch.Generator seeded per call"),
    _entry("fa_blockwise_philox", None, "FA2 tiles, online softmax, per-tile dropout of exp(s - m), Philox4x32-10"),
    _entry("fa_no_rescale", "no-rescale", "kept weights not scaled by 1/(1 - p)",
           "https://github.com/Dao-AILab/flash-attention/issues/93"),
    _entry("fa_scale_by_p", "scale-by-p", "kept weights scaled by p", "https://github.com/NVIDIA/apex/pull/816"),
    _entry("fa_keep_prob_p", "keep-prob-swapped", "kept with probability p, scaled by 1/p",
           "https://github.com/google-research/electra/pull/61"),
    _entry("fa_smask_redrawn", "smask-redrawn", "S_dmask from a second draw, not the applied pattern",
           "https://github.com/Dao-AILab/flash-attention/issues/1251"),
    _entry("fa_smask_sign_inverted", "smask-sign", "S_dmask negative where kept",
           "https://github.com/microsoft/onnxruntime/pull/1507"),
    _entry("fa_uint8_keep_threshold", "keep-rate-uint8", "keep iff random byte <= floor(255 (1 - p))",
           "https://github.com/NVIDIA/apex/pull/1614; https://github.com/Dao-AILab/flash-attention/issues/902"),
    _entry("varlen_dense", None, "per-sequence dense, torch.Generator seeded per call"),
    _entry("varlen_blockwise_philox", None, "per-sequence FA2 tiles, Philox counter (j, i, h, sequence)"),
    _entry("varlen_smask_packed", "smask-packed-layout", "S_dmask at packed offsets, not [b, h, i, j]",
           "https://github.com/Dao-AILab/flash-attention/issues/1357"),
    _entry("varlen_dropout_on_output", "dropout-on-output", "dropout of P @ V instead of P",
           "https://github.com/nikhilbarhate99/min-decision-transformer/issues/2"),
    _entry("varlen_dropout_before_softmax", "dropout-before-softmax", "dropped scores -inf, softmax renormalises",
           "https://github.com/Dao-AILab/flash-attention/issues/987"),
    _entry("ref_dense", None, "dense NumPy with the given keep mask"),
    _entry("ref_blockwise", None, "online softmax over key blocks, given mask applied per block"),
    _entry("ref_mask_ignored", "dropout-ignored", "dropout_mask and 1/(1 - p) never applied",
           "https://github.com/facebookresearch/xformers/pull/123"),
    _entry("ref_mask_inverted", "mask-polarity", "dropout_mask True read as dropped",
           "https://github.com/pytorch/pytorch/pull/170415"),
    _entry("ref_scale_inv_p", "scale-inv-p", "kept weights scaled by 1/p",
           "https://github.com/rasbt/LLMs-from-scratch/issues/431"),
    _entry("ref_blockwise_rowsum_after_dropout", "rowsum-after-dropout", "online l sums the dropped exponentials",
           "https://github.com/aws-neuron/nki-samples/pull/80"),
]
