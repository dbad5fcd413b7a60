"""Reproduction scripts: one failing family case as a standalone Python file (``--repro-dir``, ``--repro``).

A script imports NumPy, the user's function (by the target's spec: ``module:fn`` with the directory the check ran in
on ``sys.path``, ``path/file.py:fn`` by absolute path; ``c:``, ``js:`` and ``R:`` targets through refimpl's own
loaders, which the script then needs) and torch only when the call needs it. It holds the exact arguments
:func:`refimpl.harness.apis.call` passes for the case (captured from a recording call, so the call is the API's by
construction), every float as a ``float.hex`` literal, the float64 expected output (and weights, for the refimpl API),
and the judge's checks with its bound written as a number:

* float64: ``max |out - expected| <= ATOL`` on rows with a key, ``ATOL = K_FORWARD * eps * n_terms * max|v|``
  (tolerance rule 3, the additive mask counted among the score terms, as :func:`.judge.judge` does);
* float32 / float16 / bfloat16: ``ATOL = K_BUDGET * max|ref - expected| + QUANTUM_ULPS * eps * (1 + conditioning)
  * max|expected|`` with ``ref`` refimpl's own same-precision result (rule 4, evaluated here, once) and the
  judge's conditioning (:func:`.judge.bounds`: the scripts write the judge's own numbers);
* rows with no key: the policy the run judged by (``--masked-rows``, else the API's pinned one, else any of
  zeros, NaN or the mean of V), written into the script as ``ACCEPTED``;
* NaN elsewhere, a wrong shape, a lower returned precision, or a write to an input fail.

Exit 0: the target passes the case; exit 1: the failure, one line per problem. Cases with more than
``MAX_VALUES`` numbers are not written (the hex text would be tens of megabytes); per target at most
``MAX_SCRIPTS`` scripts are written, smallest cases first.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ...errors import UsageError
from ...io import write_atomic
from ...precision import NAMES as DTYPE_NAMES, PRECISIONS, of as precision_of
from .. import apis
from ..apis import call, expressible
from ..cases import Status
from ..cases.families import FAMILIES, family_specs
from ..cases.features import CaseData, CaseSpec, materialise
from ..verdicts.judge import CONVENTIONS, bounds
from ..targets.target import Target

__all__ = ["script_for", "write_repros", "write_target_repros", "find_spec", "MAX_SCRIPTS", "MAX_VALUES"]

MAX_SCRIPTS = 50            # per target and run
MAX_VALUES = 400_000        # numbers in one script (about 10 MB of hex)


class _Captured(Exception):
    pass


def _capture(target: Target, data: CaseData) -> tuple[tuple, dict]:
    """The positional and keyword arguments ``apis.call`` gives the target for ``data``."""
    seen = {}

    def recorder(*args, **kwargs):
        seen["call"] = (args, kwargs)
        raise _Captured

    try:
        call(recorder, target.api, data, layout=target.layout, torch=target.torch)
    except _Captured:
        pass
    return seen["call"]


_ZEROS = re.compile(r"\.?0+p")


def _hex(a: np.ndarray) -> str:
    """Exact ``float.hex`` text of every element, trailing zero digits dropped (``0x1.8p+0``)."""
    return " ".join(_ZEROS.sub("p", float(x).hex()) for x in np.asarray(a, np.float64).ravel())


def _lit(x) -> tuple[str, int]:
    """Python source for one argument and the count of numbers it holds."""
    if hasattr(x, "detach"):                                       # a torch tensor
        name, p = str(x.dtype).replace("torch.", ""), precision_of(x.dtype)
        t = x.detach().cpu()
        inner, n = _lit(t.float().numpy() if p is not None and not p.native else t.numpy())
        return (f"torch.tensor({inner})" if name == "bool" else f"torch.tensor({inner}, dtype=torch.{name})"), n
    if isinstance(x, np.ndarray):
        shape = tuple(int(s) for s in x.shape)
        if x.dtype == bool:
            return f'_b("{"".join("1" if b else "0" for b in x.ravel())}", {shape})', x.size
        p = precision_of(x.dtype)
        dt = p.name if p is not None and p.native else "float64"
        return f'_f("{_hex(x)}", {shape}, "{dt}")', x.size
    if isinstance(x, float):
        return repr(x), 1
    if x is None or isinstance(x, (bool, int, str)):
        return repr(x), 0
    if hasattr(x, "repro_source"):                                  # an API's own argument (flex's score_mod)
        return x.repro_source(_lit)
    if isinstance(x, SimpleNamespace):                               # the hf API's module
        fields = {key: _lit(val) for key, val in vars(x).items()}
        return ("types.SimpleNamespace(" + ", ".join(f"{key}={src}" for key, (src, _) in fields.items()) + ")",
                sum(n for _, n in fields.values()))
    if isinstance(x, tuple):
        parts = [_lit(e) for e in x]
        return "(" + "".join(p + ", " for p, _ in parts) + ")", sum(n for _, n in parts)
    raise TypeError(f"cannot write an argument of type {type(x).__name__} into a script")


def _import_lines(name: str) -> list[str]:
    """The script's lines that bind ``target``: a Python file or module imported as the check did; a C-ABI kernel
    (``c:lib.so:symbol``), an ES module's function (``js:kernel.mjs:fn``) or an R function (``R:file.R:fn``,
    ``R:pkg::fn``) loaded by refimpl's own loaders, their file's path made absolute."""
    if name.startswith(("c:", "js:", "R:")):
        prefix, rest = name.split(":", 1)
        path, _, attr = rest.rpartition(":")
        spec = name if prefix == "R" and "::" in rest else f"{prefix}:{os.path.abspath(path)}:{attr}"
        if prefix == "R":
            return ["from refimpl.harness.targets.r_targets import RFunction   # R through rpy2",
                    f"target = RFunction({spec!r})"]
        return ["from refimpl.harness.targets.loading import load_function", f"target = load_function({spec!r})"]
    mod, _, attr = name.rpartition(":")
    if mod.endswith(".py"):
        path = os.path.abspath(mod)
        return ["import importlib.util", f"_spec = importlib.util.spec_from_file_location('repro_target', {path!r})",
                "_mod = importlib.util.module_from_spec(_spec)", "_spec.loader.exec_module(_mod)",
                f"target = _mod.{attr}"]
    return [f"sys.path.insert(0, {os.getcwd()!r})    # where the check ran", "import importlib",
            f"target = importlib.import_module({mod!r}).{attr}"]


def _bounds(data: CaseData) -> tuple[float, float, str, float]:
    """(ATOL of the output, ATOL of the weights, how the first was made, the slope's allowance): the judge's
    bounds (:func:`.judge.bounds`) as numbers."""
    b = bounds(data)
    return float(b.output.atol), float(b.weights.atol), b.output.describe(), float(b.slope)


def _script(target: Target, data: CaseData, masked_rows: str | None = None) -> str:
    s = data.spec
    if ":" not in target.name:
        raise UsageError(f"--repro: target {target.name!r} is built in; reproductions are written for "
                         f"module:function or file.py:function targets")
    why = expressible(target.api, s)
    if why is not None:
        raise UsageError(f"--repro {s.id}: --api {target.api} cannot express this case ({why})")
    args, kwargs = _capture(target, data)
    arg_src = [_lit(a) for a in args]
    kw_src = {k: _lit(v) for k, v in kwargs.items()}
    n = sum(c for _, c in arg_src) + sum(c for _, c in kw_src.values()) + data.expected.size
    if n > MAX_VALUES:
        raise UsageError(f"--repro {s.id}: the case holds {n:,} numbers; a script holds at most {MAX_VALUES:,} "
                         f"(pick a smaller case of the same family)")
    api = apis.get(target.api)
    pinned = masked_rows or api.dead_rows           # the run's --masked-rows, else the API's documented rows
    accepted = (pinned,) if pinned else CONVENTIONS
    uses_torch = api.uses_torch(target.torch)
    atol, w_atol, how, slope = _bounds(data)
    group = s.Hq // s.Hkv
    mean_v = np.repeat(data.v, group, axis=1).mean(axis=-2)                         # (B, Hq, Dv)
    weights = data.weights if (api.returns_weights and data.weights is not None
                               and data.weights.size <= MAX_VALUES // 4) else None
    lines = [
        "#!/usr/bin/env python3",
        f'"""refimpl reproduction: case {s.id} on target {target.name} (--api {target.api}, layout {target.layout}'
        f'{", torch tensors" if target.torch else ""}).',
        "",
        f"Case: {s.describe()} (seed {s.seed}).",
        "Exit 0: the target's output is within refimpl's tolerance; exit 1: it is not (the problems are printed).",
        '"""',
        "import sys", "import types", "", "import numpy as np",
    ] + (["import torch"] if uses_torch else []) + list(api.repro_imports) + [""] + _import_lines(target.name) + [
        "", "",
        "def _f(text, shape, dtype):",
        "    return np.array([float.fromhex(x) for x in text.split()], dtype=np.float64).reshape(shape).astype(dtype)",
        "", "",
        "def _b(text, shape):",
        "    return np.array([c == '1' for c in text], dtype=bool).reshape(shape)",
        "", "",
        f"API, LAYOUT, GIVEN = {target.api!r}, {target.layout!r}, {target.given_dtype(s.dtype)!r}"
        "   # GIVEN: the inputs' dtype",
        f"OUT_BSHD = {api.output_bshd(target.layout)!r}   # the output comes (B, Sq, H, Dv)",
        f"NAMES = {tuple(api.arg_names)!r}   # how the API names q, k, v",
        f"RANK = { {p.name: p.rank for p in PRECISIONS.values()}!r}",
        f"VIA_FLOAT32 = {tuple(p.name for p in PRECISIONS.values() if not p.native)!r}   # NumPy lacks them",
        "ARGS = [" + ", ".join(src for src, _ in arg_src) + "]",
        "KWARGS = {" + ", ".join(f"{k!r}: {src}" for k, (src, _) in kw_src.items()) + "}",
        f"EXPECTED = {_lit(data.expected)[0]}   # (B, Hq, Sq, Dv) float64",
        f"DEAD = {_lit(data.dead)[0]}   # (B, Hq, Sq): rows with no key",
        f"LIVE = {_lit(data.live)[0]}   # (B, Hq, Sq): rows judged by value (a key, part of a sequence)",
        f"MEAN_V = {_lit(mean_v)[0] if data.dead.any() else None}   # (B, Hq, Dv): the 'uniform' convention",
        f"ACCEPTED = {tuple(accepted)!r}   # what rows with no key may give (zeros, nan, uniform: the mean of V)",
        f"WEIGHTS = {_lit(weights)[0] if weights is not None else None}   # (B, Hq, Sq, Sk) float64",
        f"ATOL = {atol!r}   # {how}",
        f"ATOL_WEIGHTS = {w_atol!r}",
        f"SLOPE = float({str(slope)!r})   # |least-squares slope of the output on EXPECTED - 1| allowed",
    ]
    check = _CHECK.replace("    # API: what the target returned -> res (output) and w (weights)\n",
                           "".join(line + "\n" for line in api.repro_unpack()))
    return "\n".join(lines) + "\n" + check


_CHECK = '''

def _numpy(x):
    """(float64 array, dtype name) of a returned array or tensor."""
    if hasattr(x, "detach"):
        name = str(x.dtype).replace("torch.", "")
        x = x.detach().cpu()
        return (x.float() if name in VIA_FLOAT32 else x).numpy().astype(np.float64), name
    x = np.asarray(x)
    return x.astype(np.float64), x.dtype.name


def _copy(a):
    return a.detach().clone() if hasattr(a, "detach") else (a.copy() if isinstance(a, np.ndarray) else None)


def _changed(a, b):
    if hasattr(a, "detach"):
        return a.shape != b.shape or not (torch.equal(a, b) or bool(torch.isnan(a).any()))
    return a.shape != b.shape or not np.array_equal(a, b, equal_nan=True)


def _err(a, e):
    """max |a - e|; NaN on one side only counts as inf."""
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):
        d = np.where(np.isnan(a) != np.isnan(e), np.inf, np.where(np.isnan(a) & np.isnan(e), 0.0, np.abs(a - e)))
    return float(np.nan_to_num(d, nan=np.inf).max())


def main():
    named = list(zip(NAMES, ARGS)) + list(KWARGS.items())
    before = {key: _copy(a) for key, a in named if _copy(a) is not None}
    try:
        res = target(*ARGS, **KWARGS)
    except Exception as e:
        print(f"FAIL: the target raised {type(e).__name__}: {e}")
        return 1
    w = None
    # API: what the target returned -> res (output) and w (weights)
    try:
        out, dtype = _numpy(res)
    except Exception as e:
        print(f"FAIL: the target returned {type(res).__name__}, not an array or tensor ({e})")
        return 1
    if OUT_BSHD and out.ndim == 4:
        out = np.swapaxes(out, 1, 2)                                  # (B, S, H, Dv) -> (B, H, S, Dv)
    problems = []
    changed = [str(key) for key, a in named if key in before and _changed(a, before[key])]
    if changed:
        problems.append(f"writes to its inputs ({', '.join(changed)})")
    if RANK.get(dtype, 0) < RANK[GIVEN]:
        problems.append(f"returns {dtype} for {GIVEN} inputs")
    elif out.shape != EXPECTED.shape:
        problems.append(f"output shape {out.shape}, expected {EXPECTED.shape} (B, Hq, Sq, Dv)")
    else:
        if DEAD.any():
            rows = out[DEAD]
            gave = {"zeros": bool(np.all(rows == 0)), "nan": bool(np.all(np.isnan(rows))),
                    "uniform": bool(np.all(np.isfinite(rows)) and np.allclose(
                        rows, np.broadcast_to(MEAN_V[:, :, None, :], out.shape)[DEAD], rtol=1e-2,
                        atol=1e-3 * (1 + np.abs(MEAN_V).max())))}
            if not any(gave[policy] for policy in ACCEPTED):
                problems.append(f"rows with no key give {rows[0][:4]}...: accepted {', '.join(ACCEPTED)}")
        err = _err(out[LIVE], EXPECTED[LIVE])
        if not err <= ATOL:
            times = err / ATOL if ATOL else float("inf")
            problems.append(f"output: max |error| {err:.6g} > ATOL {ATOL:.6g} ({times:.3g}x)")
        o = EXPECTED[LIVE].ravel()
        dev = abs(float(o @ out[LIVE].astype(np.float64).ravel()) / float(o @ o) - 1.0) if o @ o else 0.0
        if not dev <= SLOPE:
            problems.append(f"output: scaled by 1 +- {dev:.6g} against EXPECTED (its slope), above SLOPE {SLOPE:.3g}")
        if w is not None and WEIGHTS is not None:
            wn, _ = _numpy(w)
            if wn.shape != WEIGHTS.shape:
                problems.append(f"weights shape {wn.shape}, expected {WEIGHTS.shape} (B, Hq, Sq, Sk)")
            elif not (werr := _err(wn[LIVE], WEIGHTS[LIVE])) <= ATOL_WEIGHTS:
                problems.append(f"weights: max |error| {werr:.6g} > {ATOL_WEIGHTS:.6g}")
    if problems:
        print("FAIL: " + "; ".join(problems))
        return 1
    print(f"pass: max |error| within {ATOL:.6g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def find_spec(case_id: str) -> CaseSpec:
    """The family spec whose id is ``case_id`` (``FAMILY/NNNN-DTYPE``; an index exists in every suite that
    has that many cases, so the full suite is searched)."""
    m = re.fullmatch(r"([a-z-]+)/(\d{4})-([a-z0-9]+)", case_id)
    if not m or m.group(1) not in FAMILIES or m.group(3) not in PRECISIONS:
        raise UsageError(f"--repro {case_id!r}: expected FAMILY/NNNN-DTYPE like sizes/0003-float32 with a family "
                         f"of {', '.join(FAMILIES)} and a dtype of {', '.join(DTYPE_NAMES)}")
    for spec in family_specs(m.group(1), "full", (m.group(3),)):
        if spec.id == case_id:
            return spec
    raise UsageError(f"--repro {case_id!r}: family {m.group(1)} has {FAMILIES[m.group(1)].count('full')} cases "
                     f"(indices 0000 to {FAMILIES[m.group(1)].count('full') - 1:04d})")


def script_for(case_id: str, target: Target, dtypes: tuple[str, ...] = ("float64",),
               masked_rows: str | None = None) -> str:
    """The reproduction script of case ``case_id`` on ``target`` (``dtypes`` is not needed: the id names one)."""
    return _script(target, materialise(find_spec(case_id)), masked_rows)


def _file_name(name: str) -> str:
    mod, _, attr = name.rpartition(":")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(mod).stem}-{attr}")


def write_repros(run, user_targets: list[Target], directory,
                 masked_rows: str | None = None) -> dict[str, list[str]]:
    """Write ``DIR/<target>/<family>-<index>-<dtype>.py`` for the failing family cases of each user target
    (at most ``MAX_SCRIPTS``, smallest first; too large ones are left out). Returns target -> paths."""
    out: dict[str, list[str]] = {}
    for t in user_targets:
        failing = []
        for c in run.cases:
            o = run.results.get((c.id, t.name))
            if o is None or not c.specs or not o.cases:
                continue
            specs = {s.id: s for s in c.specs}
            failing += [(specs[r.id], c.store) for r in o.cases if Status(r.status).failed and r.id in specs]
        if failing:
            out[t.name] = write_target_repros(t, failing, directory, masked_rows)
    return out


def write_target_repros(t: Target, failing: list, directory, masked_rows: str | None = None) -> list[str]:
    """Write the scripts of one target's failing cases ``[(spec, store or None), ...]`` (at most ``MAX_SCRIPTS``,
    smallest first; too large ones are left out): the check's ``--repro-dir`` and the plugin's
    ``--refimpl-repro-dir``. Returns the paths."""
    failing = sorted(failing, key=lambda fs: (fs[0].B * fs[0].Hq * (fs[0].Sq + fs[0].Sk) * (fs[0].D + fs[0].Dv),
                                              fs[0].id))
    paths: list[str] = []
    for spec, store in failing:
        if len(paths) >= MAX_SCRIPTS:
            break
        try:
            text = _script(t, store.get(spec) if store is not None else materialise(spec), masked_rows)
        except UsageError:
            continue                                     # too large for a script
        path = Path(directory) / _file_name(t.name) / f"{spec.family}-{spec.index:04d}-{spec.dtype}.py"
        write_atomic(path, text)
        paths.append(str(path))
    return paths
