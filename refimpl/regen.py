"""``refimpl regen``: recompute every generated part of the fixtures and detect drift.

For each source, its generator (``refimpl.sources.<module>.build``) remakes the fixtures: inputs from
their recipes, expected values from R through the bridge, refimpl or 50-digit arithmetic. Published
numbers are facts: they are carried over from the existing fixture (or read from published.json when a
fixture is first made), never recomputed, and every run checks that refimpl reproduces them within half
a unit of their last printed digit.

``--check`` writes nothing. It prints, per fixture and per array, the drift between the stored and the
recomputed values (max abs, max rel, ulp) and fails (exit 1) when a value drifts beyond its tolerance,
when a fixture is new, orphaned or structurally changed, or when a published number is not reproduced.
``--write`` writes atomically (temp file + rename) under a lock, deterministically (a second run
changes nothing), and removes orphans.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import tolerance as tol
from .fixtures import (FixtureError, Fixture, array_from_json, dumps, evaluate, fixtures_dir, load, parse,
                       tolerance_of, write_atomic)
from .sources import SOURCES, module
from .sources._build import BuildContext, SourceSkipped

__all__ = ["regen", "RegenResult", "verify_fixture", "LOCK_NAME"]

LOCK_NAME = ".regen.lock"


@dataclass
class RegenResult:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fixtures: int = 0
    arrays: int = 0

    def fail(self, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)


def verify_fixture(fx: Fixture) -> list[tuple[str, str, tol.Comparison]]:
    """Evaluate ``fx`` with refimpl and compare every expectation: ``[(name, by, comparison)]``."""
    env = evaluate(fx)
    out = []
    for name, exps in fx.expected.items():
        for e in exps:
            if e["by"] == "shape":
                got = tuple(np.shape(env[name]))
                ok = got == tuple(e["shape"])
                out.append((name, "shape", tol.Comparison(ok, 0.0 if ok else np.inf, 0.0, 0, 0.0 if ok else np.inf,
                                                          (), tol.EXACT, ok, "" if ok else
                                                          f"shape {got}, but should be {tuple(e['shape'])}")))
                continue
            t = tolerance_of(e["tolerance"], e["array"])
            out.append((name, e["by"], tol.compare(np.asarray(env[name]), e["array"], t)))
    return out


@contextmanager
def _lock(root: Path, wait_s: float, say: Callable[[str], None]):
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another 'refimpl regen --write' holds {root / LOCK_NAME}; "
                                       f"gave up after {wait_s:g} s") from None
                if not told:
                    say(f"waiting for another 'refimpl regen --write' ({root / LOCK_NAME}) ...")
                    told = True
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)   # releases the lock


def _array_drift(old: np.ndarray, new: np.ndarray, t: tol.Tolerance) -> tol.Comparison:
    return tol.compare(new, old, t)


def _strip_values(obj):
    """The fixture with every array's values removed: what must match exactly (structure, provenance)."""
    if isinstance(obj, dict):
        if set(obj) == {"dtype", "shape", "values"}:
            return {"dtype": obj["dtype"], "shape": obj["shape"]}
        return {k: _strip_values(v) for k, v in obj.items() if k != "hash"}
    if isinstance(obj, list):
        return [_strip_values(v) for v in obj]
    return obj


def _compare_to_stored(old_raw: dict, new_raw: dict, fid: str, res: RegenResult, say) -> bool:
    """Per-array drift of a recomputed fixture against the stored one; True when within tolerance."""
    ok = True
    if _strip_values(old_raw) != _strip_values(new_raw):
        res.fail(f"{fid}: CHANGED structure or provenance (steps, recipe, tolerances, notes, shapes); "
                 f"review and run 'refimpl regen --write'")
        return False
    def drift(label: str, a_old, a_new, t: tol.Tolerance, problem: str) -> bool:
        c = _array_drift(a_old, a_new, t)
        res.arrays += 1
        say(f"    {label:<31} {c.max_abs:9.3g} abs {c.max_rel:9.3g} rel {c.max_ulp:6d} ulp  "
            f"{'ok' if c.ok else 'DRIFT beyond ' + t.describe()}")
        if not c.ok:
            res.fail(f"{fid}: {problem}: {c.summary()}")
        return c.ok

    for name, arr in new_raw["inputs"].items():
        ok &= drift(f"inputs.{name}", array_from_json(old_raw["inputs"][name], fid, f"inputs.{name}"),
                    array_from_json(arr, fid, f"inputs.{name}"), tol.EXACT,
                    f"input {name} does not regenerate exactly from its recipe")
    for name, exps in new_raw["expected"].items():
        for j, e in enumerate(exps):
            if e["by"] == "shape":
                continue
            a_old = array_from_json(old_raw["expected"][name][j]["value"], fid, f"expected.{name}[{j}]")
            t = tol.EXACT if e["by"] == "published" else tolerance_of(e["tolerance"], a_old)
            ok &= drift(f"{name} [{e['by']}]", a_old, array_from_json(e["value"], fid, f"expected.{name}[{j}]"), t,
                        f"expected.{name} [{e['by']}] drifts beyond its tolerance")
    return ok


def regen(sources: list[str] | None = None, *, write: bool = False, root: Path | None = None,
          say: Callable[[str], None] = print, lock_wait_s: float | None = None) -> RegenResult:
    """Regenerate (``write=True``) or check the fixtures of ``sources`` (default: all).

    ``lock_wait_s``: how long a writer waits for another one (default ``REFIMPL_LOCK_WAIT`` or 120 s).
    """
    if lock_wait_s is None:
        lock_wait_s = float(os.environ.get("REFIMPL_LOCK_WAIT", "120"))
    root = Path(root) if root is not None else fixtures_dir()
    unknown = [s for s in (sources or []) if s not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; known: {sorted(SOURCES)}")
    res = RegenResult()
    ctx = BuildContext(root=root)
    built: dict[str, dict] = {}
    for src in sources or list(SOURCES):
        try:
            objs = module(src).build(ctx)
        except SourceSkipped as e:
            res.skipped[src] = str(e)
            say(f"{src}: SKIPPED ({e})")
            continue
        for obj in objs:
            built[obj["id"]] = obj
    for c in ctx.conflicts:
        res.fail(c)
    # self-consistency: refimpl reproduces every expectation, published numbers above all
    for fid, obj in built.items():
        fx = parse(json.loads(json.dumps(obj)), root / f"{fid}.json", fid)
        for name, by, c in verify_fixture(fx):
            if not c.ok:
                what = "published value not reproduced" if by == "published" else f"{by} value not matched by refimpl"
                res.fail(f"{fid}: {what}: {name}: {c.summary()}")
    res.fixtures = len(built)
    done_sources = [s for s in (sources or list(SOURCES)) if s not in res.skipped]
    existing = {p.relative_to(root).with_suffix("").as_posix(): p
                for s in done_sources for p in sorted((root / s).glob("*.json"))}
    if not write:
        for fid, obj in sorted(built.items()):
            p = root / f"{fid}.json"
            if fid not in existing:
                res.fail(f"{fid}: NEW (no {p}); run 'refimpl regen --write'")
                say(f"{fid}: NEW")
                continue
            same = p.read_text() == dumps(obj)
            say(f"{fid}: {'unchanged (byte-identical)' if same else 'recomputed values differ'}; drift per array:")
            try:
                old = json.loads(p.read_text())
                _compare_to_stored(old, obj, fid, res, say)
            except (ValueError, KeyError, IndexError, TypeError, FixtureError) as e:
                res.fail(f"{fid}: stored fixture unreadable or structurally different: {e}")
        for fid in sorted(set(existing) - set(built)):
            res.fail(f"{fid}: ORPHAN ({existing[fid]} is no longer generated)")
            say(f"{fid}: ORPHAN")
        return res
    if not res.ok:
        return res       # never write a fixture set that fails its own checks
    with _lock(root, lock_wait_s, say):
        for fid, obj in sorted(built.items()):
            if write_atomic(root / f"{fid}.json", dumps(obj)):
                res.written.append(fid)
                say(f"{fid}: written")
            else:
                say(f"{fid}: unchanged")
        for fid in sorted(set(existing) - set(built)):
            existing[fid].unlink()
            res.removed.append(fid)
            say(f"{fid}: removed (orphan)")
    for fid in res.written:
        load(root / f"{fid}.json", root)   # what was written reads back, validates and hashes
    return res
