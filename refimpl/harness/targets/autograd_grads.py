"""dQ, dK, dV of a torch-tensor target through autograd, for the ``grad:<family>`` rows.

One function, :func:`autograd_grads`, called where the target runs: in the harness's process for built-in
targets and ``--no-isolation``, in the target's worker otherwise (the worker's ``("grad", ...)`` payload,
:mod:`.isolation`), so a target that crashes or hangs while its graph is built or differentiated is that
case's verdict, as in the forward rows. Only plain data cross the process boundary: the case
(:class:`.features.CaseData`, arrays) and ``d_out`` go in, the three gradients (float64, refimpl's layout)
and the lowest dtype among them come out.
"""
from __future__ import annotations

import numpy as np

from ...precision import lowest
from ..apis import call, get, to_numpy

__all__ = ["NoGraph", "autograd_grads"]

_NAMES = ("dq", "dk", "dv")


class NoGraph(TypeError):
    """The target's output carries no autograd graph: its gradients cannot be taken."""


def autograd_grads(fn, api: str, layout: str, data, d_out: np.ndarray) -> tuple[dict, str]:
    """Call ``fn`` on ``data`` through ``api`` with q, k, v requiring grad, then
    ``torch.autograd.grad(out, (q, k, v), d_out)``.

    ``d_out``: (B, Hq, Sq, Dv) float64, cast to the output's dtype and laid out as the API returns it.
    Returns ({"dq": (B, Hq, Sq, D), "dk": (B, Hkv, Sk, D), "dv": (B, Hkv, Sk, Dv)} float64, lowest dtype);
    a gradient autograd reports as unused (the output does not depend on that input) is zeros."""
    import torch
    box = {}

    def wrapped(*args, **kwargs):
        at = get(api).qkv_at
        ins = args[at:at + 3]                                 # q, k, v tensors as the API lays them out
        for t in ins:
            t.requires_grad_(True)
        box["ins"], box["res"] = ins, fn(*args, **kwargs)
        return box["res"]

    call(wrapped, api, data, layout=layout, torch=True)
    out = box["res"][0] if isinstance(box["res"], (tuple, list)) else box["res"]
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        raise NoGraph("the output carries no autograd graph (computed outside torch, detached or under no_grad)")
    swap, out_swap = get(api).bshd(layout), get(api).output_bshd(layout)
    g = np.swapaxes(d_out, 1, 2) if out_swap else d_out       # (B, Sq, Hq, Dv) for the BSHD outputs
    gt = torch.tensor(np.ascontiguousarray(g), dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad(out, box["ins"], grad_outputs=gt, allow_unused=True)
    res, dtypes = {}, []
    for name, gr, inp in zip(_NAMES, grads, box["ins"]):
        a, dt = to_numpy(torch.zeros_like(inp) if gr is None else gr, name)
        res[name] = np.swapaxes(a, 1, 2) if swap else a
        dtypes.append(dt)
    return res, lowest(dtypes)
