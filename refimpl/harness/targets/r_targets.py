"""R functions as targets: ``--target R:path/to/file.R:fn`` and ``--target R:pkg::fn``.

The protocol is the CRAN package ``attention``'s: ``fn(Q, K, V, mask = NULL)`` with numeric matrices
Q (Sq x D), K (Sk x D), V (Sk x Dv) and mask NULL or a 0/1 numeric Sq x Sk matrix (1 = attend); it returns
the output (Sq x Dv) or ``list(output, weights)``. One call is one 2-D slice: the harness cuts (B, H, S, D)
into B*H slices.

* The protocol has no scale: a case with an explicit ``scale`` hands R ``Q * scale * sqrt(D)``, so that
  ``Q' K^T / sqrt(D) = scale * Q K^T`` (as the built-in ``r`` target does).
* Causal and window masks arrive folded into the 0/1 mask; additive masks, softcap, ALiBi and GQA are n/a
  (the target's API is ``refimpl``).
* Batching: :meth:`RFunction.batch` takes a family row's cases and makes one R round trip per group of
  same-shape slices (never one per case). An R error in a slice is its case's error, with R's message;
  the other cases go on. R warnings are kept per case (``RReturned.warnings``; the row's detail shows them).
* The function runs in the process's embedded R (not in a worker): a hang in R is not timed out.

This module imports neither the targets module nor the API adapters (they import it; the import graph stays
within nine layers): :func:`load_r_target` is handed the ``Target`` class by ``targets.load_target``.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ...errors import UsageError
from ...masks import band_mask
from ...r.bridge import RError, require_r

__all__ = ["RFunction", "RReturned", "load_r_target", "parse_spec", "bench_r_targets"]

_PKG_SPEC = re.compile(r"^([A-Za-z][A-Za-z0-9.]*)::([A-Za-z.][A-Za-z0-9._]*)$")


@dataclass
class RReturned:
    """What an R function returned for one case (the fields of ``apis.Returned``, plus R's warnings)."""
    output: np.ndarray                  # (B, Hq, Sq, Dv)
    weights: np.ndarray | None          # (B, Hq, Sq, Sk) when every slice returned list(output, weights)
    dtype: str = "float64"              # R computes in double
    mutated: list = field(default_factory=list)   # R copies its arguments: nothing is written back
    warnings: list = field(default_factory=list)
    band_flags: bool = True             # False where the case has a causal band or window: an R function gets it
    #                                     folded into its mask, never as flags (a flag model does not apply)


def parse_spec(spec: str) -> tuple[str | None, str | None, str]:
    """``R:file.R:fn`` -> (path, None, fn); ``R:pkg::fn`` -> (None, pkg, fn); anything else is a UsageError."""
    body = spec[2:] if spec.startswith("R:") else ""
    m = _PKG_SPEC.match(body)
    if m:
        return None, m.group(1), m.group(2)
    path, _, name = body.rpartition(":")
    if not path or not name or not re.match(r"^[A-Za-z.][A-Za-z0-9._]*$", name):
        raise UsageError(f"--target {spec!r}: expected R:path/to/file.R:function or R:package::function")
    if not os.path.isfile(path):
        raise UsageError(f"--target {spec!r}: no file {path} (relative paths start at the current directory)")
    return os.path.abspath(path), None, name


class RFunction:
    """A user's R function as a refimpl-protocol callable ``fn(q, k, v, mask=None, scale=None)``."""

    def __init__(self, spec: str):
        path, pkg, name = parse_spec(spec)
        self.spec, self.name = spec, name
        self._rb = require_r()
        try:
            self._handle = self._rb.load_function(path, pkg, name)
        except RError as e:
            raise UsageError(f"--target {spec!r}: cannot load the R function: {e.r_message}") from None

    # -- one call: arrays (..., S, D), as Target.attend and the API adapter hand them --------------------
    def __call__(self, q, k, v, mask=None, scale=None):
        """Output (..., Sq, Dv), or (output, weights) when R returned list(output, weights); raises RError."""
        q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
        if scale is not None:
            q = q * (float(scale) * math.sqrt(q.shape[-1]))
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                                    () if mask is None else np.shape(mask)[:-2])
        flat = [np.broadcast_to(a, batch + a.shape[-2:]).reshape((-1,) + a.shape[-2:]) for a in (q, k, v)]
        if mask is not None:
            m = np.broadcast_to(np.asarray(mask, dtype=bool), batch + (q.shape[-2], k.shape[-2]))
            flat.append(m.reshape((-1,) + m.shape[-2:]).astype(np.float64))
        res = self._rb.batch_function(self._handle, flat)
        for err, cl in zip(res.errors, res.calls):
            if err is not None:
                raise RError(err, cl)
        out, w = (self._stack(res.components[c], batch) if c < len(res.components) else None for c in (0, 1))
        if out is None:
            raise RError("the function returned nothing for some slice", self.name)
        return out if w is None else (out, w)

    @staticmethod
    def _stack(comp, batch: tuple) -> np.ndarray | None:
        if isinstance(comp, list):
            if any(c is None for c in comp) or len({c.shape for c in comp}) != 1:
                return None if any(c is None for c in comp) else _shape_error(comp)
            comp = np.stack(comp)
        return comp.reshape(batch + comp.shape[1:])

    # -- a family row: one R round trip per group of same-shape slices ----------------------------------
    def batch(self, datas: list) -> list[Any]:
        """Each family case (``features.CaseData``) -> :class:`RReturned` or the exception of its failure."""
        groups: dict[tuple, list[tuple[int, list[np.ndarray]]]] = {}
        for ci, d in enumerate(datas):
            s = d.spec
            q = d.q if s.scale is None else d.q * (s.scale * math.sqrt(s.D))
            arrs = [a.reshape((-1,) + a.shape[-2:]) for a in (q, d.k, d.v)]    # (B*H, S, D)
            keep = _keep(s, d.mask)
            if keep is not None:
                arrs.append(np.broadcast_to(keep, (s.B, s.Hq, s.Sq, s.Sk)).reshape(-1, s.Sq, s.Sk).astype(np.float64))
            groups.setdefault((s.Sq, s.Sk, s.D, s.Dv, keep is not None), []).append((ci, arrs))
        out: list[Any] = [None] * len(datas)
        for members in groups.values():
            stacked = [np.concatenate([m[1][j] for m in members]) for j in range(len(members[0][1]))]
            res = self._rb.batch_function(self._handle, stacked)
            start = 0
            for ci, arrs in members:
                n = len(arrs[0])
                out[ci] = self._case(datas[ci].spec, res, range(start, start + n))
                start += n
        return out

    def _case(self, s, res, idx: range) -> Any:
        warns = list(dict.fromkeys(w for i in idx for w in res.warnings.get(i, [])))
        errs = [(res.errors[i], res.calls[i]) for i in idx if res.errors[i] is not None]
        if errs:
            more = f"; {len(errs)} of {len(idx)} slices failed" if len(idx) > 1 else ""
            return RError(errs[0][0], errs[0][1], ("R warnings: " + " | ".join(warns) + more) if warns else more[2:])
        comps = []
        for c in res.components[:2]:
            part = c[idx.start:idx.stop] if isinstance(c, np.ndarray) else c[idx.start:idx.stop]
            try:
                comps.append(self._stack(part, (s.B, s.Hq)))
            except ValueError as e:
                return e
        if not comps or comps[0] is None:
            return RError("the function returned nothing", self.name)
        return RReturned(comps[0], comps[1] if len(comps) > 1 else None, warnings=warns,
                         band_flags=not (s.is_causal or s.window is not None))


def _shape_error(comp: list):
    raise ValueError(f"the slices of one case returned different shapes {sorted({c.shape for c in comp})}")


def _keep(s, mask: np.ndarray | None) -> np.ndarray | None:
    """The case's bool keep-mask with causal and window folded in (None: nothing masked), as apis does."""
    return band_mask(s.Sq, s.Sk, is_causal=s.is_causal, window=s.window, alignment=s.alignment, mask=mask)


def load_r_target(spec: str, target_class: Callable[..., Any], fn: Callable | None = None):
    """The ``Target`` (``target_class``, handed in by ``targets.load_target``) of an ``R:`` spec; api ``refimpl``.

    ``fn``: the function already loaded elsewhere (an isolated worker with its own R); else loaded here.
    UsageError for a malformed spec, a missing file or function, or R failing to source the file;
    Unavailable when R is not usable here."""
    path, pkg, name = parse_spec(spec)
    fn = RFunction(spec) if fn is None else fn
    where = f"package {pkg}" if pkg else f"file {spec[2:].rpartition(':')[0]}"
    return target_class(spec, fn, api="refimpl", note=f"R function {name} from {where}, through the bridge")


def bench_r_targets(quick: bool) -> str:
    """Throughput of an R function as a target (``R:attention::attention``): n 2-D cases in one batch, cross-checked
    against refimpl under the forward bound, for 4x3 cases (the bridge section's) and 4x8x8 ones with a 0/1 mask;
    and the package's own bridge path on the 4x3 cases, for the overhead of the target path. A printable line."""
    from ... import tolerance as tol
    from ...attention import scaled_dot_product_attention
    from ...errors import Unavailable
    try:
        fn = RFunction("R:attention::attention")
    except (Unavailable, UsageError) as e:
        return f"r-targets: skipped ({e})"
    n = 2000 if quick else 20000
    rng = np.random.default_rng(7)

    def rate(qkv, keep, via_package=False) -> tuple[float, float, int]:
        q, k, v = qkv

        def once() -> int:
            if via_package:
                res = fn._rb.batch_stacked("attention", [q, k, v], ("Q", "K", "V"))
            else:
                res = fn._rb.batch_function(fn._handle, [q, k, v] + ([] if keep is None else [keep.astype(np.float64)]))
            out_r, w_r = res.components
            out, w = scaled_dot_product_attention(q, k, v, mask=keep)      # (n, Sq, Dv), (n, Sq, Sk)
            ok = tol.compare(out, out_r, tol.forward_for_sdpa_cases(q, k, v)).ok and \
                tol.compare(w, w_r, tol.forward_for_sdpa_cases(q, k, v, weights=True)).ok
            return int(not ok) + sum(e is not None for e in res.errors)
        bad = once()                                                      # warm-up: R's JIT, allocations
        times, cpu = [], []
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            bad += once()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return n / min(times), n / min(cpu), bad

    small = [rng.standard_normal((n, 4, 3)) for _ in range(3)]
    big = [rng.standard_normal((n, s, 8)) for s in (4, 8, 8)]
    keep = rng.uniform(size=(n, 4, 8)) < 0.8
    keep[..., 0] = True                                                   # no fully masked row
    (r_small, c_small, b1), (r_big, c_big, b2) = rate(small, None), rate(big, keep)
    r_pkg, c_pkg, b3 = rate(small, None, via_package=True)
    return (f"r-targets R:attention::attention, {n} cases per batch, cross-checked against refimpl (best of 3; "
            f"per CPU-second in brackets): 4x3 {r_small:,.0f} cases/s ({c_small:,.0f}); 4x8x8 with a 0/1 mask "
            f"{r_big:,.0f} cases/s ({c_big:,.0f}); the package's own bridge path on the 4x3 cases "
            f"{r_pkg:,.0f} cases/s ({c_pkg:,.0f}; target path / bridge = {c_small / c_pkg:.2f} per CPU-second); "
            f"{b1 + b2 + b3} disagreements")
