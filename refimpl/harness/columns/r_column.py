"""``r`` — the CRAN package ``attention`` through the bridge (:mod:`refimpl.r.bridge`), one 2-D case per batch
index; its catalogued divergences (``D*``, measured in :mod:`refimpl.r.compat`) are excused row by row."""
from __future__ import annotations

import math

import numpy as np

from ...r import compat as r_compat
from ..targets.target import Target
from .base import Column

__all__ = ["COLUMN", "per_case"]


def per_case(q, k, v, mask):
    """``(batch_shape, [(Q, K, V, mask or None), ...])``: one float64 2-D case per batch index, as the R
    package takes them (a bool mask becomes 0/1)."""
    q, k, v = (np.asarray(a) for a in (q, k, v))
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    flat = [np.broadcast_to(a, batch + a.shape[-2:]).reshape((-1,) + a.shape[-2:]).astype(np.float64)
            for a in (q, k, v)]
    m = None if mask is None else np.broadcast_to(mask, batch + (q.shape[-2], k.shape[-2])).reshape(
        (-1, q.shape[-2], k.shape[-2])).astype(np.float64)
    return batch, [(flat[0][i], flat[1][i], flat[2][i], None if m is None else m[i]) for i in range(flat[0].shape[0])]


def _make() -> Target:
    from ...r.bridge import availability, require_r
    rb = require_r()
    a = availability()

    def fn(q, k, v, mask=None, scale=None):
        qs = q if scale is None else q * (scale * math.sqrt(q.shape[-1]))
        batch, cases = per_case(qs, k, v, mask)
        res = rb.batch("attention", cases, ("Q", "K", "V", "mask"))
        outs, ws = [], []
        for r in res:
            o, w = r.unwrap()
            outs.append(o)
            ws.append(w)
        return (np.stack(outs).reshape(batch + outs[0].shape), np.stack(ws).reshape(batch + ws[0].shape))

    def known(q, k, v, mask):
        return sorted({c for case in per_case(q, k, v, mask)[1] for c in r_compat.attention_divergences(*case)})

    def predict(q, k, v, mask):
        """What the package does, quirks included (refimpl.r.compat): the catalogued behaviour."""
        batch, cases = per_case(q, k, v, mask)
        outs = [r_compat.attention(*case)[0] for case in cases]
        return np.stack(outs).reshape(batch + outs[0].shape)

    return Target("r", fn, known=known, predict=predict, note=f"R attention {a.attention_version} through the bridge")


def _versions() -> dict[str, str]:
    """R, rpy2, attention and knitr as a subprocess finds them: asking cannot abort this process."""
    from ...r.bridge import probe
    a = probe()
    env = {"r": a.r_version or "unavailable", "rpy2": a.rpy2_version or "unavailable",
           "attention": a.attention_version or "unavailable",
           "knitr": a.knitr_version or ("missing (the vignettes' setup chunk needs it)" if a.r_version
                                        else "unavailable")}
    if not a.ok:
        env["r_reason"] = a.reason
    return env


COLUMN = Column("r", _make, "the R package attention (CRAN), catalogued divergences excused row by row",
                versions=_versions, r_rows=True)
