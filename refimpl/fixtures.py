"""Golden fixtures: load, validate, evaluate, write (atomically) and hash.

A fixture is one JSON file ``fixtures/<source>/<case>.json`` (schema ``refimpl-fixture/1``)::

    schema        "refimpl-fixture/1"
    id            "<source>/<case>"  (must match the path)
    source        {id, title, author, urls, part, published_values: bool, note}
    recipe        how the inputs were made: {kind, text, ...}; kind is one of
                  explicit | numpy-legacy | r-set-seed | torch-manual-seed | numpy-default-rng
    inputs        {name: array}
    steps         the computation, in order: [{fn, args: {param: name}, kwargs: {...}, out: [names]}]
                  (fn is a key of STEP_FUNCTIONS: refimpl functions and the R package's semantics)
    expected      {name: [expectation, ...]}; an expectation is
                  {by, note, tolerance: {rule, ...}, value: array | null, shape: [..]}
                  by: "published" (the source's printed numbers: facts, never rewritten),
                      "r" (R attention <version> through the bridge), "refimpl-float64",
                      "decimal50" (50-digit decimal arithmetic), "shape" (only a shape was published)
    hash          "sha256:<hex>" of the canonical JSON of everything else

An array is ``{dtype, shape, values}`` with nested lists; floats are written with Python's shortest
round-trip repr, so every float64 (and float32, stored as its exact float64 value) survives exactly.
Nothing is loaded with pickle or eval.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import r_compat, tolerance as tol
from ._checks import RefimplError
from .attention import general_attention, general_attention_matrix, scaled_dot_product_attention, self_attention
from .family import additive_scores, attention_context, luong_scores
from .multihead import multi_head_attention
from .softmax import softmax

__all__ = ["SCHEMA", "FixtureError", "Fixture", "load", "load_all", "dumps", "write_atomic", "fixtures_dir",
           "STEP_FUNCTIONS", "evaluate", "parse", "tolerance_of", "content_hash", "array_to_json", "array_from_json"]

SCHEMA = "refimpl-fixture/1"
DTYPES = ("float64", "float32", "int64", "bool")
RECIPE_KINDS = ("explicit", "numpy-legacy", "r-set-seed", "torch-manual-seed", "numpy-default-rng")
PRODUCERS = ("published", "r", "refimpl-float64", "decimal50", "shape")
RULES = ("exact", "printed", "forward")


class FixtureError(RefimplError, ValueError):
    """A fixture file is invalid; the message names the file and the field."""

    def __init__(self, path, field: str, problem: str):
        self.path, self.field, self.problem = str(path), field, problem
        super().__init__(f"{path}: {field}: {problem}")


def fixtures_dir() -> Path:
    """``fixtures/`` of the source checkout (``REFIMPL_FIXTURES`` overrides)."""
    env = os.environ.get("REFIMPL_FIXTURES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent / "fixtures"          # a source checkout
    if here.is_dir():
        return here
    from importlib import resources
    return Path(str(resources.files("refimpl.fixtures_data").joinpath("README.md"))).parent   # an installed wheel


# --- arrays ------------------------------------------------------------------------------------

def array_to_json(a) -> dict:
    a = np.asarray(a)
    if a.dtype.kind == "b":
        dtype, values = "bool", a.tolist()
    elif a.dtype.kind in "iu":
        dtype, values = "int64", a.astype(np.int64).tolist()
    elif a.dtype == np.float32:
        dtype, values = "float32", a.astype(np.float64).tolist()
    else:
        dtype, values = "float64", a.astype(np.float64).tolist()
    return {"dtype": dtype, "shape": list(a.shape), "values": values}


def array_from_json(obj, path, field: str) -> np.ndarray:
    if not isinstance(obj, dict):
        raise FixtureError(path, field, f"must be an array object {{dtype, shape, values}}, got {type(obj).__name__}")
    for key in ("dtype", "shape", "values"):
        if key not in obj:
            raise FixtureError(path, f"{field}.{key}", "missing")
    dtype, shape, values = obj["dtype"], obj["shape"], obj["values"]
    if dtype not in DTYPES:
        raise FixtureError(path, f"{field}.dtype", f"must be one of {DTYPES}, got {dtype!r}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise FixtureError(path, f"{field}.shape", f"must be a list of non-negative ints, got {shape!r}")
    _check_nesting(values, shape, path, f"{field}.values", dtype)
    a = np.array(values, dtype=np.float64 if dtype in ("float64", "float32") else dtype).reshape(shape)
    return a.astype(np.float32) if dtype == "float32" else a


def _check_nesting(values, shape, path, field, dtype):
    if not shape:
        ok = isinstance(values, bool) if dtype == "bool" else (
            isinstance(values, (int, float)) and not isinstance(values, bool))
        if not ok:
            raise FixtureError(path, field, f"must be a {dtype} scalar, got {values!r}"[:200])
        if dtype == "float32" and np.float64(np.float32(values)) != values:
            raise FixtureError(path, field, f"{values!r} is not a float32 value")
        return
    if not isinstance(values, list) or len(values) != shape[0]:
        got = len(values) if isinstance(values, list) else type(values).__name__
        raise FixtureError(path, field, f"shape/data mismatch: expected {shape[0]} entries along this axis, got {got}")
    for i, v in enumerate(values):
        _check_nesting(v, shape[1:], path, f"{field}[{i}]", dtype)


# --- serialisation ------------------------------------------------------------------------------

def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash(obj: dict) -> str:
    body = {k: v for k, v in obj.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(_canonical(body).encode()).hexdigest()


def dumps(obj: dict) -> str:
    """Deterministic, diff-friendly JSON: one innermost list of numbers per line."""
    def enc(o, ind):
        pad = " " * ind
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f'{pad} {json.dumps(k)}: {enc(v, ind + 1)}' for k, v in o.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(o, list):
            if all(not isinstance(x, (list, dict)) for x in o):
                return json.dumps(o, allow_nan=False)
            return "[\n" + ",\n".join(f"{pad} {enc(x, ind + 1)}" for x in o) + f"\n{pad}]"
        return json.dumps(o, allow_nan=False)
    return enc(obj, 0) + "\n"


def write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` via a temp file in the same directory + fsync + rename.

    A reader (or a crash) sees the old file or the new one, never a mix. Returns False (and writes
    nothing) when the file already has exactly this content.
    """
    path = Path(path)
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)          # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


# --- the computation -------------------------------------------------------------------------------

def _sdpa(q, k, v, mask=None, scale=None, is_causal=False):
    return scaled_dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal)


STEP_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "matmul": lambda a, b: np.asarray(a) @ np.asarray(b),
    "transpose": lambda a: np.swapaxes(np.asarray(a), -1, -2),
    "row": lambda a, index: np.asarray(a)[index],
    "multiply": lambda a, factor: np.asarray(a) * factor,
    "rowmax": lambda a: np.asarray(a).max(axis=-1, keepdims=True),
    "softmax": lambda x, axis=-1: softmax(x, axis=axis),
    "sdpa": _sdpa,
    "general_attention": lambda query, keys, values, scale=None: general_attention(query, keys, values, scale=scale),
    "general_attention_matrix": lambda words, w_q, w_k, w_v, scale=None: general_attention_matrix(words, w_q, w_k, w_v, scale=scale),
    "self_attention": lambda x, w_q, w_k, w_v, **kw: self_attention(x, w_q, w_k, w_v, **kw),
    "multi_head_attention": lambda x, w_q, w_k, w_v, w_o=None, **kw: multi_head_attention(x, w_q, w_k, w_v, w_o, **kw),
    "additive_scores": lambda s, h, w_a, u_a, v_a: additive_scores(s, h, w_a, u_a, v_a),
    "luong_scores": lambda s, h, w=None, v_a=None, kind="dot": luong_scores(s, h, kind, w=w, v_a=v_a),
    "attention_context": lambda scores, h, mask=None: attention_context(scores, h, mask=mask),
    "r_compat.SoftMax": r_compat.SoftMax,
    "r_compat.RowMax": r_compat.RowMax,
    "r_compat.ComputeWeights": r_compat.ComputeWeights,
    "r_compat.attention": lambda Q, K, V, mask=None: r_compat.attention(Q, K, V, mask),
}


def evaluate(fx: "Fixture", functions: dict[str, Callable[..., Any]] | None = None) -> dict[str, np.ndarray]:
    """Run the fixture's steps from its inputs; returns every named value (inputs included)."""
    fns = functions or STEP_FUNCTIONS
    env: dict[str, Any] = dict(fx.inputs)
    for i, step in enumerate(fx.steps):
        fn = fns[step["fn"]]
        args = {p: env[n] for p, n in step.get("args", {}).items()}
        res = fn(**args, **step.get("kwargs", {}))
        outs = step["out"]
        if len(outs) == 1:
            res = (res,)
        for name, value in zip(outs, res):
            env[name] = None if value is None else np.asarray(value)
    return env


# --- tolerances ------------------------------------------------------------------------------------

def tolerance_of(spec: dict, expected: np.ndarray) -> tol.Tolerance:
    rule = spec["rule"]
    if rule == "exact":
        return tol.EXACT
    if rule == "printed":
        e = np.asarray(expected, dtype=np.float64)
        texts = np.array([repr(float(x)) for x in e.reshape(-1)], dtype=object).reshape(e.shape)
        return tol.printed(e, decimals=spec.get("decimals"), significant=spec.get("significant"),
                           texts=texts, who=spec.get("who", ""))
    if rule == "forward":
        return tol.forward(spec.get("dtype", "float64"), spec["n_terms"], spec["magnitude"])
    raise ValueError(rule)


# --- loading -------------------------------------------------------------------------------------

@dataclass
class Fixture:
    path: Path
    id: str
    source: dict
    recipe: dict
    inputs: dict[str, np.ndarray]
    steps: list[dict]
    expected: dict[str, list[dict]]     # each expectation with "array" (np.ndarray or None) added
    raw: dict
    hash_ok: bool

    @property
    def source_id(self) -> str:
        return self.id.split("/")[0]


def _require(obj, key, typ, path, field):
    if key not in obj:
        raise FixtureError(path, f"{field}{key}", "missing")
    if not isinstance(obj[key], typ):
        raise FixtureError(path, f"{field}{key}", f"must be {getattr(typ, '__name__', typ)}, got {type(obj[key]).__name__}")
    return obj[key]


def _require_choice(obj, key, choices, path, field):
    if obj.get(key) not in choices:
        raise FixtureError(path, f"{field}{key}", f"must be one of {tuple(choices)}, got {obj.get(key)!r}")
    return obj[key]


def load(path, root: Path | None = None, *, verify_hash: bool = True) -> Fixture:
    """Load and validate one fixture file (never with pickle or eval).

    ``verify_hash=False`` loads a fixture whose content no longer matches its hash (the value checks
    use it, so that an edited value is reported by name; the hash is checked by its own test).
    """
    path = Path(path)
    root = Path(root) if root is not None else fixtures_dir()
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        raise FixtureError(path, "path", f"is outside the fixtures directory {root}") from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FixtureError(path, "file", f"cannot be read: {e}") from None
    try:
        raw = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(f"{c} is not valid JSON")))
    except ValueError as e:
        raise FixtureError(path, "json", f"invalid or truncated JSON: {e}") from None
    fx = parse(raw, path, rel.with_suffix("").as_posix())
    if verify_hash and not fx.hash_ok:
        raise FixtureError(path, "hash", f"{raw.get('hash')!r} does not match the content ({content_hash(raw)}); "
                                         f"the file was edited by hand or damaged: restore it, or run 'refimpl regen --write'")
    return fx


def parse(raw: Any, path, want_id: str | None = None) -> Fixture:
    """Validate a decoded fixture object; ``want_id`` is the id its place in fixtures/ implies."""
    if not isinstance(raw, dict):
        raise FixtureError(path, "json", f"top level must be an object, got {type(raw).__name__}")
    schema = _require(raw, "schema", str, path, "")
    if schema != SCHEMA:
        raise FixtureError(path, "schema", f"unknown schema version {schema!r} (this refimpl reads {SCHEMA!r})")
    fid = _require(raw, "id", str, path, "")
    if want_id is not None and fid != want_id:
        raise FixtureError(path, "id", f"{fid!r} does not match the file's place {want_id!r}")
    source = _require(raw, "source", dict, path, "")
    for key in ("id", "title", "author", "part", "note"):
        _require(source, key, str, path, "source.")
    _require(source, "urls", list, path, "source.")
    _require(source, "published_values", bool, path, "source.")
    recipe = _require(raw, "recipe", dict, path, "")
    _require_choice(recipe, "kind", RECIPE_KINDS, path, "recipe.")
    _require(recipe, "text", str, path, "recipe.")
    inputs_raw = _require(raw, "inputs", dict, path, "")
    inputs = {n: array_from_json(a, path, f"inputs.{n}") for n, a in inputs_raw.items()}
    steps = _require(raw, "steps", list, path, "")
    known = set(inputs)
    for i, st in enumerate(steps):
        f = f"steps[{i}]"
        if not isinstance(st, dict):
            raise FixtureError(path, f, "must be an object")
        fn = _require(st, "fn", str, path, f + ".")
        if fn not in STEP_FUNCTIONS:        # not _require_choice: the message lists the known functions
            raise FixtureError(path, f + ".fn", f"unknown function {fn!r}; known: {sorted(STEP_FUNCTIONS)}")
        for p, n in _require(st, "args", dict, path, f + ".").items():
            if n not in known:
                raise FixtureError(path, f"{f}.args.{p}", f"refers to {n!r}, which no input or earlier step defines")
        _require(st, "kwargs", dict, path, f + ".")
        outs = _require(st, "out", list, path, f + ".")
        known.update(outs)
    expected_raw = _require(raw, "expected", dict, path, "")
    expected: dict[str, list[dict]] = {}
    for name, exps in expected_raw.items():
        if name not in known:
            raise FixtureError(path, f"expected.{name}", "is not an input or the output of a step")
        if not isinstance(exps, list) or not exps:
            raise FixtureError(path, f"expected.{name}", "must be a non-empty list of expectations")
        out = []
        for j, e in enumerate(exps):
            f = f"expected.{name}[{j}]"
            if not isinstance(e, dict):
                raise FixtureError(path, f, "must be an object")
            by = _require_choice(e, "by", PRODUCERS, path, f + ".")
            _require_choice(_require(e, "tolerance", dict, path, f + "."), "rule", RULES, path, f + ".tolerance.")
            arr = None
            if by == "shape":
                _require(e, "shape", list, path, f + ".")
            else:
                arr = array_from_json(_require(e, "value", dict, path, f + "."), path, f + ".value")
            out.append(dict(e, array=arr))
        expected[name] = out
    h = _require(raw, "hash", str, path, "")
    return Fixture(path, fid, source, recipe, inputs, steps, expected, raw, h == content_hash(raw))


def load_all(root: Path | None = None, sources: list[str] | None = None, *, verify_hash: bool = True) -> list[Fixture]:
    """Every fixture under ``root`` (sorted by id); duplicate ids are an error."""
    root = Path(root) if root is not None else fixtures_dir()
    out, seen = [], {}
    for p in sorted(root.glob("*/*.json")):
        if sources and p.parent.name not in sources:
            continue
        fx = load(p, root, verify_hash=verify_hash)
        if fx.id in seen:
            raise FixtureError(p, "id", f"duplicate id {fx.id!r} (also in {seen[fx.id]})")
        seen[fx.id] = p
        out.append(fx)
    return out
