"""``torch`` — a manual ``softmax(q k^T s) v`` in torch (tensors), with its one catalogued divergence (T1)."""
from __future__ import annotations

import math

import numpy as np

from ...errors import Unavailable
from ...precision import PRECISIONS
from ..targets.target import Target
from .base import Column

__all__ = ["COLUMN"]

DIVERGENCES = {"T1": "torch gives NaN weights for a fully masked query (softmax of all -inf); refimpl gives zeros"}


def _make() -> Target:
    try:
        import torch
    except ImportError as e:
        raise Unavailable(f"torch is not importable ({e})") from None

    def fn(q, k, v, mask=None, scale=None):
        s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = (q @ k.transpose(-2, -1)) * s                        # (..., Sq, D) x (..., D, Sk) -> (..., Sq, Sk)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=-1)
        return w @ v, w

    def known(q, k, v, mask):
        if mask is not None and (~np.asarray(mask, dtype=bool)).all(axis=-1).any():
            return ["T1"]   # torch: softmax of an all -inf row is NaN; refimpl gives zeros
        return []

    lacking = _lacking(torch)

    def expressible(spec) -> str | None:
        return lacking.get(spec.dtype)

    return Target("torch", fn, torch=True, known=known, expressible=expressible,
                  note=f"torch {torch.__version__}: softmax(q k^T s) v")


def _lacking(torch) -> dict[str, str]:
    """dtype -> why this torch's CPU cannot run the column in it (torch 1.13 has no float16 matmul on CPU): those
    cases are the column's n/a, not its error."""
    out = {}
    for p in PRECISIONS.values():
        a = torch.ones(2, 2, dtype=p.torch_dtype())
        try:
            torch.softmax(a @ a, dim=-1)
        except RuntimeError as e:
            out[p.name] = f"torch {torch.__version__}'s CPU kernels have no {p.name} matmul ({str(e).splitlines()[0]})"
    return out


def torch_version() -> dict[str, str]:
    """The installed torch's version, read from its package metadata (importing torch costs ~1 s; a check whose
    columns never call torch should not pay it for one line)."""
    import sys
    if "torch" in sys.modules:
        return {"torch": str(sys.modules["torch"].__version__)}
    from importlib import metadata
    try:
        return {"torch": metadata.version("torch")}
    except metadata.PackageNotFoundError:
        pass
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    return {"torch": torch.__version__}


COLUMN = Column("torch", _make, "torch: a manual softmax(q k^T s) v", DIVERGENCES, versions=torch_version)
