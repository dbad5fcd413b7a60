"""Dropout-at-zero attention kernel zoo (flash_attn_func contract).

Every kernel takes ``fn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
return_attn_probs=False)`` with q (B, Sq, Hq, D), k (B, Sk, Hkv, D), v (B, Sk, Hkv, Dv)
and returns (B, Sq, Hq, Dv) in the input dtype.

Two kernels are correct (they drop attention weights only when dropout_p > 0).  Four
are broken: each carries one realistic mistake, adapted from a public bug report, that
keeps dropout active when the caller asks for inference (dropout_p = 0.0).
"""

import math

import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------

def _check_inputs(q, k, v):
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D (B, S, H, D)")
    b, _, hq, d = q.shape
    bk, sk, hkv, dk = k.shape
    bv, sv, hv, _ = v.shape
    if bk != b or bv != b or sv != sk or hv != hkv or dk != d:
        raise ValueError("inconsistent q/k/v shapes")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError("Hkv must divide Hq")


def _to_bhsd(q, k, v, work_dtype):
    """(B, S, H, D) -> (B, H, S, D) in work_dtype, kv heads expanded for GQA/MQA."""
    groups = q.shape[2] // k.shape[2]
    qw = q.to(work_dtype).permute(0, 2, 1, 3)
    kw = k.to(work_dtype).repeat_interleave(groups, dim=2).permute(0, 2, 1, 3)
    vw = v.to(work_dtype).repeat_interleave(groups, dim=2).permute(0, 2, 1, 3)
    return qw, kw, vw


def _visible(rows, cols, sq, sk, causal, window_size):
    """Boolean (len(rows), len(cols)) mask, bottom-right aligned."""
    off = sk - sq
    i = rows.view(-1, 1) + off
    j = cols.view(1, -1)
    keep = torch.ones(i.shape[0], j.shape[1], dtype=torch.bool)
    left, right = window_size
    if causal:
        keep &= j <= i
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    return keep


def _alibi(slopes, rows, cols, sq, sk, batch, heads, work_dtype):
    """ALiBi bias (B or 1, H, len(rows), len(cols)) = -slope * |i + off - j|."""
    s = torch.as_tensor(slopes).to(work_dtype)
    if s.dim() == 1:
        s = s.view(1, heads, 1, 1)
    else:
        s = s.view(batch, heads, 1, 1)
    dist = (rows.view(-1, 1) + (sk - sq) - cols.view(1, -1)).abs().to(work_dtype)
    return -s * dist


def _scores(qb, kb, scale, softcap, alibi_slopes, rows, cols, sq, sk, causal, window_size):
    """Scaled, soft-capped, biased and masked scores for one (rows x cols) block."""
    s = torch.matmul(qb, kb.transpose(-1, -2)) * scale
    if softcap > 0.0:
        s = softcap * torch.tanh(s / softcap)
    if alibi_slopes is not None:
        s = s + _alibi(alibi_slopes, rows, cols, sq, sk, qb.shape[0], qb.shape[1], s.dtype)
    keep = _visible(rows, cols, sq, sk, causal, window_size)
    return s.masked_fill(~keep, float("-inf"))


def _dense_probs(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes):
    """Float64 softmax probabilities (B, H, Sq, Sk) and values (B, H, Sk, Dv).

    Rows without any visible key get all-zero probabilities.
    """
    _check_inputs(q, k, v)
    sq, sk, d = q.shape[1], k.shape[1], q.shape[3]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
    qw, kw, vw = _to_bhsd(q, k, v, torch.float64)
    rows = torch.arange(sq)
    cols = torch.arange(sk)
    s = _scores(qw, kw, scale, softcap, alibi_slopes, rows, cols, sq, sk, causal, window_size)
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    den = e.sum(dim=-1, keepdim=True)
    probs = torch.where(den > 0, e / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(e))
    lse = torch.where(den[..., 0] > 0, m[..., 0] + torch.log(den[..., 0]),
                      torch.full_like(den[..., 0], float("-inf")))
    return probs, vw, lse


def _finish(out_bhsd, q, v, lse, probs, return_attn_probs):
    out = out_bhsd.permute(0, 2, 1, 3).to(q.dtype).contiguous()
    if return_attn_probs:
        return out, lse.to(torch.float32), probs
    return out


# ----------------------------------------------------------------------------------
# correct kernel 1: dense softmax, seeded-generator dropout only when dropout_p > 0
# ----------------------------------------------------------------------------------

def dense_reference_attn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    probs, vw, lse = _dense_probs(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes)
    weights = probs
    if dropout_p > 0.0:
        if dropout_p >= 1.0:
            weights = torch.zeros_like(probs)
        else:
            keep = torch.rand(probs.shape, dtype=torch.float64) >= dropout_p
            weights = probs * keep / (1.0 - dropout_p)
    out = torch.matmul(weights, vw)
    return _finish(out, q, v, lse, probs, return_attn_probs)


# ----------------------------------------------------------------------------------
# correct kernel 2: tiled online softmax (flash-style), dropout on P tiles when p > 0
# ----------------------------------------------------------------------------------

def _tiled_core(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, drop,
                block_q=16, block_k=8):
    """Online-softmax attention in the input dtype.

    ``drop(p_tile)`` returns a multiplier for the un-normalised probabilities that feed
    the output accumulator (None = no dropout); the row sum always uses undropped P.
    """
    _check_inputs(q, k, v)
    sq, sk, d = q.shape[1], k.shape[1], q.shape[3]
    scale = 1.0 / math.sqrt(d) if softmax_scale is None else float(softmax_scale)
    work = q.dtype if q.dtype in (torch.float32, torch.float64) else torch.float32
    qw, kw, vw = _to_bhsd(q, k, v, work)
    b, h = qw.shape[0], qw.shape[1]
    dv = vw.shape[-1]
    out = torch.zeros(b, h, sq, dv, dtype=work)
    lse = torch.full((b, h, sq), float("-inf"), dtype=work)
    for q0 in range(0, sq, block_q):
        q1 = min(q0 + block_q, sq)
        rows = torch.arange(q0, q1)
        qb = qw[:, :, q0:q1]
        m = torch.full((b, h, q1 - q0, 1), float("-inf"), dtype=work)
        ell = torch.zeros((b, h, q1 - q0, 1), dtype=work)
        acc = torch.zeros((b, h, q1 - q0, dv), dtype=work)
        for k0 in range(0, sk, block_k):
            k1 = min(k0 + block_k, sk)
            cols = torch.arange(k0, k1)
            s = _scores(qb, kw[:, :, k0:k1], scale, softcap, alibi_slopes, rows, cols, sq, sk,
                        causal, window_size)
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
            alpha = torch.exp(m - m_safe)
            p = torch.exp(s - m_safe)
            ell = ell * alpha + p.sum(dim=-1, keepdim=True)
            mult = drop(p)
            pv = p if mult is None else p * mult
            acc = acc * alpha + torch.matmul(pv, vw[:, :, k0:k1])
            m = m_new
        has = ell > 0
        out[:, :, q0:q1] = torch.where(has, acc / torch.where(has, ell, torch.ones_like(ell)),
                                       torch.zeros_like(acc))
        lse[:, :, q0:q1] = torch.where(has, m + torch.log(torch.where(has, ell, torch.ones_like(ell))),
                                       torch.full_like(ell, float("-inf")))[..., 0]
    return out, lse


def tiled_online_softmax_attn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                              softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    def drop(p):
        if dropout_p <= 0.0:
            return None
        if dropout_p >= 1.0:
            return torch.zeros_like(p)
        return (torch.rand_like(p) >= dropout_p).to(p.dtype) / (1.0 - dropout_p)

    out, lse = _tiled_core(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, drop)
    return _finish(out, q, v, lse, None, return_attn_probs)


# ----------------------------------------------------------------------------------
# broken kernel 1: falsy dropout_p falls back to the module's configured rate (0.2)
# adapted from meta-pytorch/torchtune#1791 (attn_dropout forwarded regardless of eval)
# ----------------------------------------------------------------------------------

_MODULE_ATTN_DROPOUT = 0.2


def falsy_default_rate_attn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                            softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    probs, vw, lse = _dense_probs(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes)
    p = dropout_p or _MODULE_ATTN_DROPOUT  # BUG: 0.0 is falsy, so inference falls back to the training rate
    weights = probs
    if p > 0.0:
        gen = torch.Generator().manual_seed(1234)
        keep = torch.rand(probs.shape, generator=gen, dtype=torch.float64) >= p
        weights = probs * keep / (1.0 - p)
    out = torch.matmul(weights, vw)
    return _finish(out, q, v, lse, probs, return_attn_probs)


# ----------------------------------------------------------------------------------
# broken kernel 2: F.dropout without training= (defaults to True), configured rate 0.1
# adapted from facebookresearch/DME#3 (F.dropout(out, p=...) active during inference)
# ----------------------------------------------------------------------------------

_LAYER_ATTN_DROP = 0.1


def functional_dropout_always_training_attn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                                            window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                                            deterministic=False, return_attn_probs=False):
    probs, vw, lse = _dense_probs(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes)
    training = dropout_p > 0.0
    # like nn.Dropout in eval(): the layer keeps its configured p; only the training flag turns it off
    layer_p = dropout_p if training else _LAYER_ATTN_DROP
    weights = F.dropout(probs, p=layer_p)  # BUG: training=training not passed; F.dropout defaults to training=True
    out = torch.matmul(weights, vw)
    return _finish(out, q, v, lse, probs, return_attn_probs)


# ----------------------------------------------------------------------------------
# broken kernel 3: tiled kernel draws its keep mask with a fixed rate constant (0.25)
# adapted from rixwew/pytorch-fm#21 (attention dropout with a hard-coded p, always on)
# ----------------------------------------------------------------------------------

_TILE_DROP_RATE = 0.25


def tiled_fixed_rate_mask_attn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                               softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    def drop(p):
        # BUG: keep mask uses the fixed tuning constant instead of dropout_p, so it is never switched off
        return (torch.rand_like(p) >= _TILE_DROP_RATE).to(p.dtype) / (1.0 - _TILE_DROP_RATE)

    out, lse = _tiled_core(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes, drop)
    return _finish(out, q, v, lse, None, return_attn_probs)


# ----------------------------------------------------------------------------------
# broken kernel 4: inverted deterministic/eval flag, configured rate 0.5
# adapted from patrick-kidger/equinox#288 (deterministic=True ignored, dropout still applied)
# ----------------------------------------------------------------------------------

_BLOCK_ATTN_DROP = 0.5


def inverted_training_flag_attn(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                                softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    probs, vw, lse = _dense_probs(q, k, v, softmax_scale, causal, window_size, softcap, alibi_slopes)
    training = dropout_p > 0.0
    rate = dropout_p if training else _BLOCK_ATTN_DROP
    weights = probs
    if not training:  # BUG: condition inverted; dropout should only run when training
        gen = torch.Generator().manual_seed(4321)
        keep = torch.empty_like(probs).bernoulli_(1.0 - rate, generator=gen)
        weights = probs * keep / (1.0 - rate)
    out = torch.matmul(weights, vw)
    return _finish(out, q, v, lse, probs, return_attn_probs)


CATALOG = [
    dict(name="dense_reference_attn", api="flash-attn", fn=dense_reference_attn, correct=True,
         bug=None, rate=None, source=None, report=None),
    dict(name="tiled_online_softmax_attn", api="flash-attn", fn=tiled_online_softmax_attn, correct=True,
         bug=None, rate=None, source=None, report=None),
    dict(name="falsy_default_rate_attn", api="flash-attn", fn=falsy_default_rate_attn, correct=False,
         bug="falsy-dropout-p-uses-module-rate", rate=0.2, source="meta-pytorch/torchtune#1791",
         report="https://github.com/meta-pytorch/torchtune/issues/1791"),
    dict(name="functional_dropout_always_training_attn", api="flash-attn",
         fn=functional_dropout_always_training_attn, correct=False,
         bug="functional-dropout-training-default-true", rate=0.1, source="facebookresearch/DME#3",
         report="https://github.com/facebookresearch/DME/issues/3"),
    dict(name="tiled_fixed_rate_mask_attn", api="flash-attn", fn=tiled_fixed_rate_mask_attn, correct=False,
         bug="keep-mask-fixed-rate-constant", rate=0.25, source="rixwew/pytorch-fm#21",
         report="https://github.com/rixwew/pytorch-fm/issues/21"),
    dict(name="inverted_training_flag_attn", api="flash-attn", fn=inverted_training_flag_attn, correct=False,
         bug="inverted-training-flag", rate=0.5, source="patrick-kidger/equinox#288",
         report="https://github.com/patrick-kidger/equinox/pull/288"),
]


# ----------------------------------------------------------------------------------
# self-check
# ----------------------------------------------------------------------------------

def _np_reference(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                  alibi_slopes=None):
    """Independent float64 numpy reference, loop over (b, h, i)."""
    import numpy as np

    qn = q.detach().cpu().double().numpy()
    kn = k.detach().cpu().double().numpy()
    vn = v.detach().cpu().double().numpy()
    b, sq, hq, d = qn.shape
    sk, hkv, dv = kn.shape[1], kn.shape[2], vn.shape[3]
    g = hq // hkv
    scale = 1.0 / np.sqrt(d) if softmax_scale is None else float(softmax_scale)
    sl = None if alibi_slopes is None else np.asarray(alibi_slopes.detach().cpu().double().numpy())
    off = sk - sq
    left, right = window_size
    out = np.zeros((b, sq, hq, dv))
    j = np.arange(sk)
    for bi in range(b):
        for h in range(hq):
            kh = h // g
            for i in range(sq):
                s = kn[bi, :, kh, :] @ qn[bi, i, h, :] * scale
                if softcap > 0:
                    s = softcap * np.tanh(s / softcap)
                if sl is not None:
                    slope = sl[h] if sl.ndim == 1 else sl[bi, h]
                    s = s - slope * np.abs(i + off - j)
                vis = np.ones(sk, dtype=bool)
                if causal:
                    vis &= j <= i + off
                if left >= 0:
                    vis &= j >= i + off - left
                if right >= 0:
                    vis &= j <= i + off + right
                if not vis.any():
                    continue
                sv = s[vis]
                w = np.exp(sv - sv.max())
                w /= w.sum()
                out[bi, i, h, :] = w @ vn[bi, vis, kh, :]
    return out


def _cases():
    return [
        dict(name="mha", B=2, Sq=5, Sk=7, Hq=2, Hkv=2, D=8, Dv=8, kw={}),
        dict(name="causal_sq<sk", B=1, Sq=4, Sk=9, Hq=2, Hkv=1, D=8, Dv=6, kw=dict(causal=True)),
        dict(name="causal_sq>sk_emptyrows", B=2, Sq=9, Sk=4, Hq=4, Hkv=2, D=4, Dv=4, kw=dict(causal=True)),
        dict(name="window_gqa", B=1, Sq=20, Sk=37, Hq=6, Hkv=2, D=16, Dv=8,
             kw=dict(window_size=(3, 2), softmax_scale=0.3)),
        dict(name="softcap_alibi_h", B=2, Sq=18, Sk=18, Hq=3, Hkv=3, D=8, Dv=8,
             kw=dict(softcap=5.0, alibi="h", causal=True)),
        dict(name="alibi_bh_window_left", B=2, Sq=6, Sk=11, Hq=4, Hkv=1, D=8, Dv=5,
             kw=dict(alibi="bh", window_size=(2, -1))),
    ]


def _make(case, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(case["B"], case["Sq"], case["Hq"], case["D"], generator=gen, dtype=torch.float64)
    k = torch.randn(case["B"], case["Sk"], case["Hkv"], case["D"], generator=gen, dtype=torch.float64)
    v = torch.randn(case["B"], case["Sk"], case["Hkv"], case["Dv"], generator=gen, dtype=torch.float64)
    kw = dict(case["kw"])
    al = kw.pop("alibi", None)
    if al == "h":
        kw["alibi_slopes"] = torch.rand(case["Hq"], generator=gen, dtype=torch.float64).float() * 0.5
    elif al == "bh":
        kw["alibi_slopes"] = torch.rand(case["B"], case["Hq"], generator=gen, dtype=torch.float64).float() * 0.5
    return q.to(dtype), k.to(dtype), v.to(dtype), kw


def _self_check():
    import numpy as np

    problems = []
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}
    for entry in CATALOG:
        fn = entry["fn"]
        n_diff = n_nonzero = 0
        worst = 0.0
        for ci, case in enumerate(_cases()):
            for dtype in (torch.float64, torch.float32):
                q, k, v, kw = _make(case, dtype, seed=100 + ci)
                ref = _np_reference(q, k, v, **kw)
                saved = [t.clone() for t in (q, k, v)] + ([kw["alibi_slopes"].clone()]
                                                          if "alibi_slopes" in kw else [])
                torch.manual_seed(7 + ci)
                out = fn(q, k, v, dropout_p=0.0, return_attn_probs=False, **kw)
                now = [q, k, v] + ([kw["alibi_slopes"]] if "alibi_slopes" in kw else [])
                tag = "%s/%s/%s" % (entry["name"], case["name"], str(dtype).split(".")[-1])
                if any(not torch.equal(a, b_) for a, b_ in zip(saved, now)):
                    problems.append(tag + ": inputs modified")
                if not isinstance(out, torch.Tensor):
                    problems.append(tag + ": did not return a tensor")
                    continue
                exp_shape = (case["B"], case["Sq"], case["Hq"], case["Dv"])
                if tuple(out.shape) != exp_shape or out.dtype != dtype:
                    problems.append(tag + ": bad shape/dtype %s %s" % (tuple(out.shape), out.dtype))
                    continue
                on = out.double().numpy()
                if not np.all(np.isfinite(on)):
                    problems.append(tag + ": non-finite output")
                    continue
                rel = np.linalg.norm(on - ref) / max(np.linalg.norm(ref), 1e-300)
                if np.linalg.norm(ref) > 0:
                    n_nonzero += 1
                    if rel > 1e-3:
                        n_diff += 1
                if entry["correct"]:
                    worst = max(worst, rel)
                    if rel > tol[dtype]:
                        problems.append(tag + ": rel err %.3e > %.0e" % (rel, tol[dtype]))
                    if case["name"] == "causal_sq>sk_emptyrows":
                        empty = on[:, : case["Sq"] - case["Sk"]]
                        if np.any(empty != 0):
                            problems.append(tag + ": rows without keys not zero")
        if entry["correct"]:
            # dropout_p > 0 must drop, and be unbiased in expectation
            q, k, v, kw = _make(_cases()[0], torch.float64, seed=999)
            ref = _np_reference(q, k, v, **kw)
            torch.manual_seed(0)
            draws = [fn(q, k, v, dropout_p=0.3, **kw).numpy() for _ in range(600)]
            one = np.linalg.norm(draws[0] - ref) / np.linalg.norm(ref)
            mean = np.linalg.norm(np.mean(draws, axis=0) - ref) / np.linalg.norm(ref)
            full = fn(q, k, v, dropout_p=1.0, **kw)
            if one < 1e-3:
                problems.append(entry["name"] + ": dropout_p=0.3 had no effect")
            if mean > 0.08:
                problems.append(entry["name"] + ": dropout mean off by %.3f" % mean)
            if torch.count_nonzero(full) != 0:
                problems.append(entry["name"] + ": dropout_p=1.0 not all zero")
            print("%-42s correct  max rel err %.2e  (p=0.3: single %.2f, mean-of-600 %.3f)"
                  % (entry["name"], worst, one, mean))
        else:
            if n_diff != n_nonzero:
                problems.append("%s: matched the reference on %d of %d cases at dropout_p=0"
                                % (entry["name"], n_nonzero - n_diff, n_nonzero))
            print("%-42s broken   differs on %d/%d cases at dropout_p=0 (rate %s, %s)"
                  % (entry["name"], n_diff, n_nonzero, entry["rate"], entry["bug"]))
    return problems


if __name__ == "__main__":
    import sys

    found = _self_check()
    for msg in found:
        print("PROBLEM:", msg)
    print("OK" if not found else "FAILED (%d problems)" % len(found))
    sys.exit(1 if found else 0)
