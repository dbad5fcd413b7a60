"""An implementation under test (a "target"): its function, the API it speaks, its layout, and what the report
needs to know of it (catalogued divergences, the precision it computes in, the cases it cannot run).

A user target follows one of the APIs of :mod:`.apis` (``api``); a built-in column (:mod:`.columns`) speaks
``native`` (refimpl's own keywords). ``layout="BSHD"`` for refimpl-protocol targets that take (B, S, H, D);
``torch=True`` hands torch tensors instead of NumPy arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ...errors import Unavailable

__all__ = ["Target", "LAYOUTS"]

LAYOUTS = ("SD", "BHSD", "BSHD")


def _no_known(q, k, v, mask) -> list[str]:
    """A target with no catalogued divergence."""
    return []


@dataclass
class Target:
    name: str
    fn: Callable[..., Any]
    layout: str = "SD"
    torch: bool = False
    api: str = "refimpl"                    # a registered API's name (refimpl.harness.apis)
    is_reference: bool = False              # refimpl itself
    known: Callable[..., list[str]] = field(default=_no_known)
    predict: Callable[..., Any] | None = None   # the catalogued behaviour: (q, k, v, keep) -> output, or raises
    expressible: Callable[..., Any] | None = None   # spec -> None or why this target cannot run the case (n/a)
    precision: str = "float64"              # what it computes in; float32-only runtimes skip float64 expectations
    note: str = ""
    lse: bool = False                       # ask for its log-sum-exp and judge it (--lse)
    repeat: int = 1                         # --repeat N: every case called N times, bitwise the same
    dropout: float = 0.0                    # --dropout P: called with dropout_p=P, judged from its own pattern

    def given_dtype(self, dtype: str) -> str:
        """The dtype a case of precision ``dtype`` reaches this target in (its API's rule)."""
        from .. import apis
        return apis.get(self.api).given_dtype(dtype, self.torch)

    def attend(self, q, k, v, mask=None, scale=None, is_causal=False):
        """One call outside the families (fixture, vignette and random rows): ``(output, weights or None)`` in
        the inputs' own leading dims. It goes through the same adapter as the families (:func:`.apis.call`:
        fresh copies of the inputs, the API's signature and layout), so no row has semantics of its own.

        ``q`` (..., Sq, D), ``k`` (..., Sk, D), ``v`` (..., Sk, Dv) with at most 2 leading dims; ``mask`` None
        or a bool keep-mask. A target that writes to its inputs raises here (the row's cell says so)."""
        from .. import apis
        from ..cases.features import CaseData, CaseSpec
        q, k, v = (np.asarray(a) for a in (q, k, v))
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != bool:
                raise Unavailable("the target protocol takes bool keep-masks; this case has an additive mask")
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        if len(batch) > 2:
            raise Unavailable(f"at most 2 batch dims (B, H), the case has {batch}")
        full = (1,) * (2 - len(batch)) + batch                        # (B, H)
        q4, k4, v4 = (np.broadcast_to(a, full + a.shape[-2:]) for a in (q, k, v))
        m4 = None if mask is None else np.broadcast_to(mask, full + (q.shape[-2], k.shape[-2]))
        dtype = "float32" if all(a.dtype == np.float32 for a in (q, k, v)) else "float64"
        spec = CaseSpec("row", 0, Sq=q.shape[-2], Sk=k.shape[-2], D=q.shape[-1], Dv=v.shape[-1], B=full[0],
                        Hq=full[1], Hkv=full[1], mask="none" if mask is None else "bool", is_causal=bool(is_causal),
                        scale=scale, dtype=dtype)
        why = apis.expressible(self.api, spec)
        if why is not None:
            raise Unavailable(why)
        data = CaseData(spec, q4, k4, v4, m4, None, np.empty(0), np.empty(0, bool))
        got = apis.call(self.fn, self.api, data, layout=self.layout, torch=self.torch)
        if got.mutated:
            raise ValueError(f"the target writes to its inputs ({', '.join(got.mutated)}): callers' arrays are changed")
        out, w = got.output, got.weights
        out = out.reshape(batch + out.shape[-2:])
        w = None if w is None else w.reshape(batch + w.shape[-2:])
        return out, w
