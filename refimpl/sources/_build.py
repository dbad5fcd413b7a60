"""Helpers shared by the source modules that generate fixtures."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import tolerance as tol
from ..errors import Unavailable
from ..fixtures.schema import SCHEMA, FixtureError, array_to_json, content_hash, fixtures_dir, load


def published_path() -> Path:
    """``published.json``: the five sources' published facts, held inside the package (``REFIMPL_PUBLISHED``
    names another copy, e.g. to check a corrected fact before it is committed)."""
    env = os.environ.get("REFIMPL_PUBLISHED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "published.json"


@dataclass
class BuildContext:
    """What a generator may use: the R bridge (or why not), the published facts, existing fixtures."""
    root: Path = field(default_factory=fixtures_dir)
    _published: dict | None = None
    conflicts: list[str] = field(default_factory=list)   # fixture facts that differ from published.json

    def published(self, source: str) -> dict | None:
        """The source's entry of published.json, or None when the file is not here."""
        if self._published is None:
            p = published_path()
            self._published = json.loads(p.read_text()) if p.is_file() else {}
        return self._published.get("sources", {}).get(source)

    def existing(self, fixture_id: str):
        p = self.root / f"{fixture_id}.json"
        if not p.exists():
            return None
        try:
            return load(p, self.root, verify_hash=False)   # published values are compared to published.json
        except FixtureError:
            return None

    def r(self):
        from ..r import bridge
        return bridge.require_r(), bridge.availability().attention_version

    def published_value(self, fixture_id: str, name: str, fallback) -> np.ndarray:
        """Published numbers are facts: taken from the existing fixture when there is one, so regen
        never rewrites them; from published.json (``fallback``) when the fixture is first made."""
        fx = self.existing(fixture_id)
        if fx is not None:
            for e in fx.expected.get(name, []):
                if e["by"] == "published":
                    if fallback is not None:
                        fb = np.asarray(fallback, dtype=np.float64)
                        if fb.size != e["array"].size or not np.array_equal(fb.reshape(e["array"].shape), e["array"]):
                            self.conflicts.append(f"{fixture_id}: published {name} differs from {published_path()}")
                    return e["array"]
        if fallback is None:
            raise Unavailable(f"no published value for {fixture_id}:{name}: neither the fixture nor "
                              f"published.json ({published_path()}) is here")
        return np.asarray(fallback, dtype=np.float64)


def expect(by: str, value, rule: dict, note: str = "") -> dict:
    return {"by": by, "note": note, "tolerance": rule, "value": array_to_json(value)}


def expect_shape(shape, note: str = "") -> dict:
    return {"by": "shape", "note": note, "tolerance": {"rule": "exact"}, "shape": list(shape)}


def forward_rule(n_terms: float, magnitude: float, dtype: str = "float64") -> dict:
    """The forward-bound tolerance spec (tolerance.forward), with its figures rounded up for the file."""
    return {"rule": "forward", "dtype": dtype, "n_terms": float(np.ceil(n_terms)),
            "magnitude": float(f"{max(magnitude, 1e-300):.3e}") * 1.01}


def sdpa_rule(q, k, v, scale: float | None = None, *, weights: bool = False, dtype: str = "float64") -> dict:
    return forward_rule(*tol.sdpa_terms(q, k, v, scale, weights=weights), dtype=dtype)


def make(fixture_id: str, meta: dict, part: str, published_values: bool, note: str, recipe: dict,
         inputs: dict[str, Any], steps: list[dict], expected: dict[str, list[dict]]) -> dict:
    obj = {
        "schema": SCHEMA,
        "id": fixture_id,
        "source": {"id": fixture_id.split("/")[0], "title": meta["title"], "author": meta["author"],
                   "urls": list(meta["urls"]), "part": part, "published_values": published_values, "note": note},
        "recipe": recipe,
        "inputs": {n: array_to_json(v) for n, v in inputs.items()},
        "steps": steps,
        "expected": expected,
    }
    obj["hash"] = content_hash(obj)
    return obj


def step(fn: str, args: dict[str, str], out: list[str], **kwargs) -> dict:
    return {"fn": fn, "args": args, "kwargs": kwargs, "out": out}


def qkv_score_steps(x: str, w_q: str, w_k: str, w_v: str) -> list[dict]:
    """The tutorials' first steps: ``Q = x W_q``, ``K = x W_k``, ``V = x W_v``, ``scores = Q K^T``."""
    return [step("matmul", {"a": x, "b": w_q}, ["Q"]),
            step("matmul", {"a": x, "b": w_k}, ["K"]),
            step("matmul", {"a": x, "b": w_v}, ["V"]),
            step("transpose", {"a": "K"}, ["K_t"]),
            step("matmul", {"a": "Q", "b": "K_t"}, ["scores"])]
