"""FlashAttention-style kernels with dropout (tests/test_dropout.py): flash_attn_func's signature; with
return_attn_probs=True they return (out, None, S_dmask), S_dmask negative where a weight was dropped. One is right;
each other has one mistake: no 1/(1 - p) rescaling, rescaling by p, dropout applied to the scores before the
softmax, a keep rate of 1 - p/2 (the output consistent with it), and dropout active at dropout_p = 0."""
import math

import torch


def _kernel(q, k, v, p, scale, causal, window_size, softcap, alibi_slopes, mode):
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
    rate = {"half-rate": p / 2, "always": 0.1}.get(mode, p)
    drop = torch.rand(s.shape, generator=torch.Generator().manual_seed(1234)) < rate
    if mode == "before-softmax":
        s = s.masked_fill(drop, -math.inf)                                 # mistake: dropped before the softmax
    m = s.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(s - m)
    w = e / e.sum(-1, keepdim=True).clamp_min(1e-30)
    scale_kept = {"right": 1 / (1 - p), "no-rescale": 1.0, "by-p": p, "before-softmax": 1.0,
                  "half-rate": 1 / (1 - p), "always": 1 / (1 - 0.1)}[mode]
    wd = w if mode == "before-softmax" else w.masked_fill(drop, 0.0) * scale_kept
    out = (wd @ vt).transpose(1, 2).to(q.dtype)
    return out, torch.where(drop, -w - 1.0, w)


def _make(mode):
    def fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
           alibi_slopes=None, deterministic=False, return_attn_probs=False):
        out, dmask = _kernel(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes, mode)
        return (out, None, dmask) if return_attn_probs else out
    fn.__name__ = mode.replace("-", "_")
    return fn


dropout_right = _make("right")
dropout_no_rescale = _make("no-rescale")
dropout_scaled_by_p = _make("by-p")
dropout_before_softmax = _make("before-softmax")
dropout_half_rate = _make("half-rate")
dropout_always = _make("always")
