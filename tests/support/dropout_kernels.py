"""FlashAttention-style kernels with dropout (tests/test_dropout.py): flash_attn_func's signature; with
return_attn_probs=True they return (out, None, S_dmask), S_dmask negative where a weight was dropped. One is right;
each other has one mistake: no 1/(1 - p) rescaling, rescaling by p, dropout applied to the scores before the
softmax, a keep rate of 1 - p/2 (the output consistent with it), and dropout active at dropout_p = 0.

The ``varlen_*`` ones have flash_attn_varlen_func's signature: each packed sequence attended on its own (one random
stream for the whole call), S_dmask (B, Hq, round128(max_seqlen_q), round128(max_seqlen_k)) with sequence b's
query i and key j at [b, h, i, j] (flash-attn's mha_varlen_fwd); the padding holds garbage of both signs."""
import math

import torch


def _kernel(q, k, v, p, scale, causal, window_size, softcap, alibi_slopes, mode, gen=None):
    B, Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[1], k.shape[2]
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    qt, kt, vt = (t.to(ct).transpose(1, 2) for t in (q, k, v))
    kt, vt = (t.repeat_interleave(Hq // Hkv, 1) for t in (kt, vt))
    s = qt @ kt.transpose(-1, -2) * (scale or 1 / math.sqrt(D))           # (B, Hq, Sq, Sk)
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    i, j = torch.arange(Sq)[:, None] + Sk - Sq, torch.arange(Sk)[None]
    if alibi_slopes is not None:
        sl = alibi_slopes.reshape(-1, Hq, 1, 1)
        s = s - sl.to(ct) * (i - j).abs()
    left, right = window_size
    right = 0 if causal else right
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    s = s.masked_fill(~keep, -math.inf)
    always = float(mode.split(":")[1]) if mode.startswith("always:") else 0.1     # "always:R": dropout R at any p
    mode = "always" if mode.startswith("always") else mode
    rate = {"half-rate": p / 2, "always": always}.get(mode, p)
    drop = torch.rand(s.shape, generator=gen or torch.Generator().manual_seed(1234)) < rate
    if mode == "before-softmax":
        s = s.masked_fill(drop, -math.inf)                                 # mistake: dropped before the softmax
    m = s.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(s - m)
    w = e / e.sum(-1, keepdim=True).clamp_min(1e-30)
    scale_kept = {"right": 1 / (1 - p), "no-rescale": 1.0, "by-p": p, "before-softmax": 1.0,
                  "half-rate": 1 / (1 - p), "always": 1 / (1 - always)}[mode]
    wd = w if mode == "before-softmax" else w.masked_fill(drop, 0.0) * scale_kept
    out = (wd @ vt).transpose(1, 2).to(q.dtype)
    return out, torch.where(drop, -w - 1.0, w)


def _make(mode):
    def fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
           alibi_slopes=None, deterministic=False, return_attn_probs=False):
        out, dmask = _kernel(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, mode)
        return (out, None, dmask) if return_attn_probs else out
    fn.__name__ = mode.replace("-", "_").replace(":", "_").replace(".", "")
    return fn


dropout_right = _make("right")
dropout_no_rescale = _make("no-rescale")
dropout_scaled_by_p = _make("by-p")
dropout_before_softmax = _make("before-softmax")
dropout_half_rate = _make("half-rate")
dropout_always = _make("always")


def _make_varlen(mode):
    def fn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
           causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
           return_attn_probs=False):
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        B, Hq = len(cq) - 1, q.shape[1]
        gen = torch.Generator().manual_seed(4321)
        out = torch.zeros(q.shape[0], Hq, v.shape[2], dtype=q.dtype)
        up = [-(-n // 128) * 128 for n in (max_seqlen_q, max_seqlen_k)]
        dmask = torch.rand((B, Hq, *up), generator=torch.Generator().manual_seed(7)) - 0.5    # padding: garbage
        for b in range(B):
            q0, q1, k0, k1 = cq[b], cq[b + 1], ck[b], ck[b + 1]
            if q1 == q0 or k1 == k0:
                continue                                                    # no query, or rows with no key: 0
            sl = alibi_slopes if alibi_slopes is None or alibi_slopes.dim() == 1 else alibi_slopes[b]
            o, dm = _kernel(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], dropout_p, softmax_scale, causal,
                            window_size, softcap, sl, mode, gen)
            out[q0:q1] = o[0]
            dmask[b, :, :q1 - q0, :k1 - k0] = dm[0].to(dmask.dtype)
        return (out, None, dmask) if return_attn_probs else out
    fn.__name__ = "varlen_" + mode.replace("-", "_")
    return fn


varlen_right = _make_varlen("right")
varlen_no_rescale = _make_varlen("no-rescale")
varlen_scaled_by_p = _make_varlen("by-p")
varlen_before_softmax = _make_varlen("before-softmax")
