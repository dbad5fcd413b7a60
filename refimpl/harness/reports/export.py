"""``refimpl export``: family cases as plain JSON files that any language can check against (schema in README.md).

One file per case, ``<out>/<family>/<index>-<dtype>.json`` (schema ``refimpl-export/1``), and ``<out>/index.json``
listing them. A case file holds:

* ``inputs``: ``q`` (B, Hq, Sq, D), ``k`` (B, Hkv, Sk, D), ``v`` (B, Hkv, Sk, Dv), ``keep`` — the bool keep-mask
  (True = attend) broadcast to (B, Hq, Sq, Sk) with causal and window folded in, or null — and the raw
  features' arrays: ``mask`` (the case's own mask before folding, bool or additive), ``alibi_slopes`` (Hq,).
* ``expected``: the float64 ``output`` (B, Hq, Sq, Dv), ``weights`` (B, Hq, Sq, Sk; null for long cases) and
  ``dead_rows`` (B, Hq, Sq): query rows with no key, where zeros, NaN or the mean of V are all accepted.
* ``tolerance``: explicit absolute bounds, ``atol`` for the output and ``weights_atol`` for the weights: rule 3
  of :mod:`refimpl.tolerance` in float64, ``K_FORWARD * eps(float64) * n_terms * magnitude`` with ``n_terms`` =
  ``2 s D max|q| max|k| + Sk + Dv + 2`` (+ 2 max|additive mask|) and ``magnitude`` = max|v| (1 for weights).
  The inputs are exactly representable in the case's dtype, so a float64 consumer meets this bound whatever
  the dtype; ``atol_<dtype>`` is the same bound with that dtype's unit roundoff, for consumers computing in it.
* ``features`` (the CaseSpec's fields), ``describe``, ``conventions``, ``r_protocol`` (null when an R function
  of the ``attention`` protocol can run the case, else why not) and ``provenance``.

Arrays are ``{dtype, shape, values}`` with nested lists, like the fixtures; non-finite numbers are the strings
``"Inf"``, ``"-Inf"``, ``"NaN"``. Output is deterministic (byte-identical on a re-run) and atomic: everything
is written into a temporary directory next to ``out``, which then replaces ``out``.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ... import __version__, tolerance as tol
from ...errors import UsageError
from ...io import write_atomic
from ...precision import get as precision
from ..apis import PROTOCOL, keep_mask, expressible
from ..cases.features import CaseData, materialise
from ..cases.families import select
from ..verdicts.judge import n_terms

__all__ = ["export", "case_json", "SCHEMA"]

SCHEMA = "refimpl-export/1"
INDEX_SCHEMA = "refimpl-export-index/1"


def _num(x: float):
    return x if math.isfinite(x) else ("NaN" if math.isnan(x) else ("Inf" if x > 0 else "-Inf"))


def _array(a) -> dict | None:
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype == bool:
        return {"dtype": "bool", "shape": list(a.shape), "values": a.tolist()}
    flat = [_num(float(x)) for x in a.astype(np.float64).reshape(-1)]
    values = np.array(flat, dtype=object).reshape(a.shape).tolist() if a.ndim else flat[0]
    return {"dtype": "float64", "shape": list(a.shape), "values": values}


def case_json(data: CaseData) -> dict:
    """One case as the export schema's dict (see the module docstring)."""
    s = data.spec
    keep = keep_mask(s, data.mask if (data.mask is None or data.mask.dtype == bool) else None)
    if keep is not None:
        keep = np.broadcast_to(keep, (s.B, s.Hq, s.Sq, s.Sk))
    terms, vmax = n_terms(data), float(np.abs(data.v).max()) if data.v.size else 0.0
    bound = {"rule": "forward", "precision": "float64", "K_FORWARD": tol.K_FORWARD, "n_terms": terms,
             "magnitude": vmax, "atol": tol.forward("float64", terms, vmax).atol,
             "weights_atol": tol.forward("float64", terms, 1.0).atol, "compare": "rows with a key only"}
    if precision(s.dtype).low:
        bound[f"atol_{s.dtype}"] = tol.K_FORWARD * tol.eps(s.dtype) * terms * vmax
    features = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(s).items()}
    return {
        "schema": SCHEMA, "id": s.id, "describe": s.describe(), "features": features,
        "conventions": {
            "layout": "q (B, Hq, Sq, D), k (B, Hkv, Sk, D), v (B, Hkv, Sk, Dv); arrays are nested row-major lists",
            "keep": "bool, true = attend; causal and window folded in; null: every key attended",
            "scale": "null means 1/sqrt(D); the R protocol has no scale: pass Q * scale * sqrt(D)",
            "causal_alignment": s.alignment, "masked_rows": ["zeros", "nan", "uniform"],
            "r_slices": "an R function of the attention protocol is called once per (b, h): Q[b, h], K[b, h], "
                        "V[b, h], mask = 1 * keep[b, h] (or no mask)"},
        "r_protocol": expressible(PROTOCOL, s),
        "inputs": {"q": _array(data.q), "k": _array(data.k), "v": _array(data.v), "keep": _array(keep),
                   "mask": _array(data.mask), "alibi_slopes": _array(data.slopes)},
        "expected": {"output": _array(data.expected), "weights": _array(data.weights), "dead_rows": _array(data.dead)},
        "tolerance": bound,
        "provenance": {"refimpl": __version__, "family": s.family, "index": s.index, "seed": s.seed, "dtype": s.dtype,
                       "expected_by": "refimpl float64" + (" (online variant)" if s.long else "")},
    }


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def export(families: list[str] | None, out, *, suite: str = "default", dtypes: tuple[str, ...] = ("float64",)) -> int:
    """Write the chosen families' cases under ``out`` (replacing a previous export there); the number written.

    ``out`` must be absent, empty, or a previous export (it has an index.json of this schema): anything else
    is a UsageError, so that an export never deletes a user's files."""
    specs = select(families, suite, dtypes)
    out = Path(out)
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not _is_export(out)):
            raise UsageError(f"--out {out}: expected a new or empty directory or a previous export (with index.json), "
                             f"got {'a file' if not out.is_dir() else 'a directory holding other files'}")
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: the directory {parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        rows = []
        for spec in specs:
            rel = f"{spec.family}/{spec.index:04d}-{spec.dtype}.json"
            write_atomic(tmp / rel, _dumps(case_json(materialise(spec))))
            rows.append({"id": spec.id, "file": rel, "family": spec.family, "dtype": spec.dtype,
                         "r_protocol": expressible(PROTOCOL, spec), "describe": spec.describe()})
        index = {"cases": rows, "schema": INDEX_SCHEMA, "case_schema": SCHEMA, "refimpl": __version__,
                 "suite": suite, "dtypes": list(dtypes), "families": list(dict.fromkeys(s.family for s in specs))}
        write_atomic(tmp / "index.json", _dumps(index))
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.rename(out, old / "x")
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(specs)


def _is_export(out: Path) -> bool:
    try:
        return json.loads((out / "index.json").read_text(encoding="utf-8")).get("schema") == INDEX_SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
