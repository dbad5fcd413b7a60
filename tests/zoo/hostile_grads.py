"""Hostile targets for the gradient rows: they misbehave while their gradients are taken, never in the forward.

* ``sdpa_*``: the torch-sdpa API, ``fn(query (B, Hq, Sq, D), key (B, Hkv, Sk, D), value (B, Hkv, Sk, Dv),
  attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False)``; the forward is correct
  plain torch (softmax over keys of scale q k^T, bool keep-mask True = attend or additive float, causal
  top-left), and the output passes through ``_Trap``, an identity whose backward misbehaves.
* ``grad_*``: ``--backward`` functions, ``fn(q, k, v, d_out, mask=None, scale=None) -> (dq, dk, dv)``, q (B, H,
  Sq, D), bool keep-mask; correct gradients (NumPy, written out below) except for the misbehaviour.

NEVER call the hostile ones in-process (they end or hang the process they run in); ``sdpa_correct`` and
``grad_correct`` are the well-behaved controls.
"""
import ctypes
import math
import os
import sys
import time

import numpy as np
import torch

_calls = {"segfault": 0, "exit": 0}     # per process: a restarted worker starts again at 0


def _segfault():
    _calls["segfault"] += 1
    if _calls["segfault"] >= 3:
        ctypes.string_at(0)                     # NULL read in C: SIGSEGV


def _hang():
    while True:
        time.sleep(1)


def _exit_every_second_call():
    _calls["exit"] += 1
    if _calls["exit"] % 2 == 0:
        os._exit(3)


def _trap(behaviour):
    class _Trap(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            behaviour()
            return g
    return _Trap.apply


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        g = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(g, dim=-3), value.repeat_interleave(g, dim=-3)
    s = (1.0 / math.sqrt(query.shape[-1]) if scale is None else scale) * (query @ key.transpose(-2, -1))
    if is_causal:
        keep = torch.ones(s.shape[-2:], dtype=torch.bool).tril()
        s = s.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    p = torch.softmax(s.float() if s.dtype in (torch.float16, torch.bfloat16) else s, dim=-1).to(s.dtype)
    return torch.nan_to_num(p, nan=0.0) @ value           # a fully masked row: zeros


def sdpa_segfault_in_backward(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Correct forward; the 3rd backward of the process dies with SIGSEGV."""
    return _trap(_segfault)(_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa))


def sdpa_hang_in_backward(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                          enable_gqa=False):
    """Correct forward; its backward never returns."""
    return _trap(_hang)(_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa))


def sdpa_sys_exit_in_backward(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                              enable_gqa=False):
    """Correct forward; its backward raises SystemExit(4)."""
    return _trap(lambda: sys.exit(4))(_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                            enable_gqa))


def sdpa_correct(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Correct forward, autograd's backward: conforms."""
    return _sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def _grads(q, k, v, d_out, mask=None, scale=None):
    """dq, dk, dv of O = softmax(scale q k^T masked) v for q (B, H, Sq, D) (same head counts), fully masked
    rows 0."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = scale * (q @ np.swapaxes(k, -1, -2))
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isinf(m), 0.0, m))
    z = e.sum(axis=-1, keepdims=True)
    p = e / np.where(z == 0, 1.0, z)
    dv = np.swapaxes(p, -1, -2) @ d_out
    dp = d_out @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    return scale * (ds @ k), scale * (np.swapaxes(ds, -1, -2) @ q), dv


def grad_exit_every_second_call(q, k, v, d_out, mask=None, scale=None):
    """Correct gradients; every 2nd call of the process ends it with os._exit(3)."""
    _exit_every_second_call()
    return _grads(q, k, v, d_out, mask, scale)


def grad_hang(q, k, v, d_out, mask=None, scale=None):
    """Never returns."""
    _hang()


def grad_correct(q, k, v, d_out, mask=None, scale=None):
    """Correct gradients."""
    return _grads(q, k, v, d_out, mask, scale)
