"""``refimpl export``: family cases as plain JSON files that any language can check against (schema in README.md).

One file per case, ``<out>/<family>/<index>-<dtype>.json`` (schema ``refimpl-export/1``), and ``<out>/index.json``
listing them. A case file holds:

* ``inputs``: ``q`` (B, Hq, Sq, D), ``k`` (B, Hkv, Sk, D), ``v`` (B, Hkv, Sk, Dv), ``keep`` — the bool keep-mask
  (True = attend) broadcast to (B, Hq, Sq, Sk) with causal and window folded in, or null — and the raw
  features' arrays: ``mask`` (the case's own mask before folding, bool or additive), ``alibi_slopes`` (Hq,).
* ``expected``: the float64 ``output`` (B, Hq, Sq, Dv), ``weights`` (B, Hq, Sq, Sk; null for long cases) and
  ``dead_rows`` (B, Hq, Sq): query rows with no key, where zeros, NaN or the mean of V are all accepted;
  ``absent_rows`` (B, Hq, Sq) or null: a packed (varlen) batch's padding rows, part of no sequence, not judged.
  A packed case also has ``inputs.cu_seqlens_q`` / ``cu_seqlens_k`` (its sequences' cumulative lengths; the
  dense arrays hold sequence b in rows 0..lq-1 and keys 0..lk-1 of batch b, and ``keep`` folds its bands).
  A KV-cache decode case (family ``kvcache``) also has ``inputs.kv_cache``: the cache as flash_attn_with_kvcache
  takes it (dense or paged with ``block_table``, garbage beyond each sequence, ``cache_seqlens``, the appended
  ``k_new``/``v_new``) and the cache the call must leave (``k_cache_after``/``v_cache_after``); a reader without
  a cache API runs the dense q, k, v and ``keep`` as for any case. Other cases have ``kv_cache`` null.
* ``tolerance``: explicit absolute bounds, ``atol`` for the output and ``weights_atol`` for the weights: rule 3
  of :mod:`refimpl.tolerance` in float64, ``K_FORWARD * eps(float64) * n_terms * magnitude`` with ``n_terms`` =
  ``2 s D max|q| max|k| + Sk + Dv + 2`` (+ 2 max|additive mask|) and ``magnitude`` = max|v| (1 for weights).
  The inputs are exactly representable in the case's dtype, so a float64 consumer meets this bound whatever
  the dtype; ``atol_<dtype>`` is the same bound with that dtype's unit roundoff. ``budget_atol``,
  ``budget_weights_atol`` and ``budget_slope`` are exactly what ``refimpl check`` allows an output computed in the
  case's own dtype (float32, float16, bfloat16: rule 4's same-precision budget, and ``|least-squares slope of the
  output on expected - 1| <= budget_slope``; float64: rule 3, ``budget_slope`` null): a reader computing in that
  dtype judges with these and gives the Python run's verdict.
* ``features`` (the CaseSpec's fields), ``describe``, ``conventions``, ``r_protocol`` (null when an R function
  of the ``attention`` protocol can run the case, else why not) and ``provenance``.

Arrays are ``{dtype, shape, values}`` with nested lists, like the fixtures; non-finite numbers are the strings
``"Inf"``, ``"-Inf"``, ``"NaN"``. Output is deterministic (byte-identical on a re-run). Each file is written
atomically (:func:`refimpl.io.write_atomic`) and index.json last: its ``cases`` (with each file's sha256) are the
list of files the export wrote, the only files a later export may delete; a reader never finds it naming a
missing file. Nothing else in ``out`` is touched (see :func:`export` for a non-empty ``out``, symlinks, --force).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import __version__, tolerance as tol
from ...errors import UsageError
from ...io import write_atomic
from ...precision import get as precision
from ..apis import PROTOCOL, keep_mask, expressible
from ..apis.flash_attn_kvcache import caches
from ..cases.features import CaseData, materialise
from ..cases.families import select
from ..verdicts.judge import bounds, n_terms

__all__ = ["export", "case_json", "ExportResult", "Terminated", "SCHEMA"]

SCHEMA = "refimpl-export/1"
INDEX_SCHEMA = "refimpl-export-index/1"
STALE_AFTER = 3600.0                                          # seconds: see _sweep
_CASE_FILE = re.compile(r"[a-z0-9][a-z0-9_-]*/[0-9]{4,}-[a-z0-9]+\.json")     # all an export writes but index.json
_TEMP = re.compile(r"\.(index\.json|[0-9]{4,}-[a-z0-9]+\.json)\.[a-z0-9_]{8}\.tmp")   # write_atomic's temporaries


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
    judged = bounds(data)                       # what `refimpl check` allows an output computed in the case's dtype
    bound.update(budget_atol=float(judged.output.atol), budget_weights_atol=float(judged.weights.atol),
                 budget_slope=None if math.isinf(judged.slope) else float(judged.slope))
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
                   "mask": _array(data.mask), "alibi_slopes": _array(data.slopes),
                   **_packed(s), "kv_cache": _cache(data)},
        "expected": {"output": _array(data.expected), "weights": _array(data.weights), "dead_rows": _array(data.dead),
                     "absent_rows": _array(data.absent)},
        "tolerance": bound,
        "provenance": {"refimpl": __version__, "family": s.family, "index": s.index, "seed": s.seed, "dtype": s.dtype,
                       "expected_by": "refimpl float64" + (" (online variant)" if s.long else "")},
    }


def _packed(s) -> dict:
    """A packed batch's cumulative lengths (flash_attn_varlen_func's cu_seqlens_q, cu_seqlens_k), null otherwise."""
    if s.seqlens is None:
        return {"cu_seqlens_q": None, "cu_seqlens_k": None}
    cq, ck = np.cumsum([0] + [a for a, _ in s.seqlens]), np.cumsum([0] + [b for _, b in s.seqlens])
    return {"cu_seqlens_q": [int(x) for x in cq], "cu_seqlens_k": [int(x) for x in ck]}


def _cache(data: CaseData) -> dict | None:
    """A KV-cache decode case's cache as flash_attn_with_kvcache takes it (null for other cases): dense
    (B, Smax, Hkv, D) or paged (num_blocks, block_size, Hkv, D) with its int32 block table, garbage (NaN, huge)
    beyond every sequence's cached keys, the keys each call appends (k_new/v_new (B, Snew, Hkv, D|Dv), null when
    none), cache_seqlens (keys cached before the call) and the cache the call must leave (``*_after``)."""
    if data.spec.cache_lens is None:
        return None
    c = caches(data)
    table = c["block_table"]
    return {"layout": "flash_attn_with_kvcache: q (B, Sq, Hq, D); sequence b attends its cache_seqlens[b] + Snew "
                      "keys, causal and windows bottom-right", "block_size": data.spec.block_size,
            "k_cache": _array(c["k_cache"][0]), "v_cache": _array(c["v_cache"][0]),
            "k_cache_after": _array(c["k_cache"][1]), "v_cache_after": _array(c["v_cache"][1]),
            "k_new": _array(c["new_k"]), "v_new": _array(c["new_v"]),
            "cache_seqlens": [int(x) for x in c["cache_seqlens"]],
            "block_table": None if table is None else table.tolist()}


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def export(families: list[str] | None, out, *, suite: str = "default", dtypes: tuple[str, ...] = ("float64",),
           force: bool = False) -> ExportResult:
    """Write the chosen families' cases under ``out``; what was written, kept and removed.

    ``out`` must be absent, empty, or a previous export (an index.json of this schema listing its files):
    anything else is a UsageError unless ``force``, and an index.json that is not an export's is never
    overwritten, even with ``force``. Only files an export wrote are ever deleted: on a re-export
    the files the previous index lists and this export does not write are removed (when unchanged since), and
    every other file is kept. A symlink ``out`` is followed: the files go into the directory it points to and the
    link stays. Stale temporaries of a killed export are swept first; SIGTERM removes this export's own."""
    specs = select(families, suite, dtypes)
    target = _target(Path(out))
    files = [f"{s.family}/{s.index:04d}-{s.dtype}.json" for s in specs]
    owned, fresh = _previous(out, target, files, force)
    meta = {"schema": INDEX_SCHEMA, "case_schema": SCHEMA, "refimpl": __version__, "suite": suite,
            "dtypes": list(dtypes), "families": list(dict.fromkeys(s.family for s in specs))}
    with _sigterm_raises():
        _sweep(Path(out), target)
        target.mkdir(exist_ok=True)
        if fresh:       # an export from its first file on, so that an interrupted one is not refused next time
            write_atomic(target / "index.json", _dumps({"cases": [], **meta}))
        rows = []
        for spec, rel in zip(specs, files):
            text = _dumps(case_json(materialise(spec)))
            write_atomic(target / rel, text)
            rows.append({"id": spec.id, "file": rel, "family": spec.family, "dtype": spec.dtype, "sha256": _sha(text),
                         "r_protocol": expressible(PROTOCOL, spec), "describe": spec.describe()})
        mine = set(files)
        gone = {rel: sha for rel, sha in owned.items() if rel not in mine and _unchanged(target / rel, sha)}
        if gone:        # listed until removed: an interruption now leaves them owned, not foreign
            write_atomic(target / "index.json", _dumps({"cases": rows, **meta, "removing": [
                {"file": rel, "sha256": sha} for rel, sha in sorted(gone.items())]}))
            for rel in sorted(gone):
                (target / rel).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    (target / rel).parent.rmdir()       # only when empty
        write_atomic(target / "index.json", _dumps({"cases": rows, **meta}))
    return ExportResult(len(specs), target, _foreign(target, mine), sorted(gone))


@dataclass
class ExportResult:
    """``cases`` written into ``directory`` (``--out`` with a symlink followed); ``kept``: the files there that
    this export did not write, left alone; ``removed``: the previous export's files that this one does not write."""
    cases: int
    directory: Path
    kept: list[str]
    removed: list[str]


class Terminated(KeyboardInterrupt):
    """SIGTERM during an export: raised by its handler so that every temporary file is removed on the way out."""


def _target(out: Path) -> Path:
    """The directory to write: ``out``, or where the symlink ``out`` points (the link itself is never replaced)."""
    target = out.resolve() if out.is_symlink() else out
    if out.is_symlink() and not target.is_dir():
        what = "does not exist (a dangling link)" if not target.exists() else "is not a directory"
        raise UsageError(f"--out {out}: a symlink to {target}, which {what}; give a directory or a link to one")
    if target.exists() and not target.is_dir():
        raise UsageError(f"--out {out}: is a file, not a directory")
    if not target.parent.is_dir():
        raise UsageError(f"--out {out}: the directory {target.parent} does not exist")
    return target


def _previous(out, target: Path, files: list[str], force: bool) -> tuple[dict[str, str | None], bool]:
    """The files a previous export in ``target`` wrote ({path: sha256 or None}) and whether there is none.

    A non-empty ``target`` that is not a previous export, or one whose files in the way of this export are not
    case files of an export, is a UsageError unless ``force``."""
    there = sorted(p.name for p in target.iterdir() if not _TEMP.fullmatch(p.name)) if target.is_dir() else []
    if not there:
        return {}, True
    owned, why = _read_index(target / "index.json")
    found, others = None, [n for n in there if n != "index.json"]
    if owned is None:
        found = why + (f" in a directory holding {_names(others)}" if others else "")
    else:
        clash = [rel for rel in files if rel not in owned and os.path.lexists(target / rel)
                 and not _unchanged(target / rel, None)]
        if clash:
            found = f"a previous export with files it did not write where this one writes: {_names(clash)}"
    if found is None:
        return owned or {}, False
    if owned is None and os.path.lexists(target / "index.json"):
        raise UsageError(f"--out {out}: holds {found}; an export writes its own index.json there, so even --force "
                         f"does not: move that file or choose another directory")
    if not force:
        raise UsageError(f"--out {out}: expected a new or empty directory or a previous export of refimpl, found "
                         f"{found}; --force writes into it anyway (overwriting only the files an export writes, "
                         f"deleting nothing it did not write)")
    return owned or {}, owned is None         # a foreign folder: this export owns nothing there, deletes nothing


def _read_index(path: Path) -> tuple[dict[str, str | None] | None, str]:
    """A previous export's own files {path: sha256 or None (written before hashes were recorded)}, or None and
    what is wrong: every row must name a case file inside the export, else the index is not trusted at all."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "no index.json"
    except (OSError, ValueError) as e:
        return None, f"an index.json that is not JSON ({type(e).__name__})"
    if not isinstance(index, dict) or index.get("schema") != INDEX_SCHEMA:
        schema = index.get("schema") if isinstance(index, dict) else None
        return None, f"an index.json that is not refimpl's (schema {schema!r}, not {INDEX_SCHEMA!r})"
    rows = index.get("cases"), index.get("removing", [])
    if not all(isinstance(r, list) for r in rows) or not all(
            isinstance(row, dict) and isinstance(row.get("file"), str) and _CASE_FILE.fullmatch(row["file"])
            and isinstance(row.get("sha256", ""), str) for row in rows[0] + rows[1]):
        return None, "an index.json of refimpl's schema whose list of files is missing or malformed"
    return {row["file"]: row.get("sha256") for row in rows[0] + rows[1]}, ""


def _unchanged(path: Path, sha: str | None) -> bool:
    """Is ``path`` a file an export wrote, as written: its recorded sha256, or (none recorded) a case file?"""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
        data = path.read_bytes()
        if sha:
            return hashlib.sha256(data).hexdigest() == sha
        return json.loads(data).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def _foreign(target: Path, written: set[str]) -> list[str]:
    """The files (and links) under ``target`` that this export did not write, its temporaries aside."""
    found = []
    for top, dirs, names in os.walk(target):
        dirs[:] = sorted(dirs)
        for name in names + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            rel = os.path.relpath(os.path.join(top, name), target).replace(os.sep, "/")
            if rel not in written and rel != "index.json" and not _TEMP.fullmatch(name):
                found.append(rel)
    return sorted(found)


def _sweep(out: Path, target: Path) -> None:
    """Remove the temporaries that a killed export left next to or inside ``out``.

    Rule: age only. A temporary goes when it, and everything in it, was last modified over STALE_AFTER (an hour)
    ago. Their names carry no pid (write_atomic's ``.NAME.XXXXXXXX.tmp``, older versions' ``.OUT.tmp-*`` and
    ``.OUT.old-*`` directories), and a pid says nothing about an export on another host sharing the directory;
    a live export touches its temporaries within seconds, so a concurrent one is never broken."""
    now = time.time()
    for parent, name in {(out.absolute().parent, out.name), (target.parent, target.name)}:
        for p in [*parent.glob(f".{glob.escape(name)}.tmp-*"), *parent.glob(f".{glob.escape(name)}.old-*")]:
            if p.is_dir() and not p.is_symlink() and now - _newest(p) > STALE_AFTER:
                shutil.rmtree(p, ignore_errors=True)
    if target.is_dir():
        for d in [target, *(p for p in target.iterdir() if p.is_dir() and not p.is_symlink())]:
            for p in d.iterdir():
                if _TEMP.fullmatch(p.name) and p.is_file() and not p.is_symlink() and now - _newest(p) > STALE_AFTER:
                    p.unlink(missing_ok=True)


def _newest(path: Path) -> float:
    newest = path.lstat().st_mtime
    for top, dirs, names in os.walk(path):
        for n in dirs + names:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(top, n)).st_mtime)
    return newest


@contextlib.contextmanager
def _sigterm_raises():
    """For the duration of an export, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt: write_atomic
    removes its temporary file, the CLI exits 130); the previous handler is restored after."""
    def handler(signum, frame):
        raise Terminated("terminated by SIGTERM")
    try:
        before = signal.signal(signal.SIGTERM, handler)
    except ValueError:              # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if before is None else before)


def _names(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
