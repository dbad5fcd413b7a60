"""The bridge to embedded R: the only module of refimpl that imports rpy2.

* R starts lazily, once per process, on the first call that needs it.
* Conversions happen only inside local contexts (``(default_converter + numpy2ri.converter).context()``);
  nothing is activated globally.
* One lock serialises every call into R (embedded R is not thread-safe).
* R errors become :class:`RError` carrying R's message and call; in a batch, a failing case is
  reported and the other cases' results are kept. R warnings and console output are captured and
  returned with the results.
* R's global RNG state is saved and restored around everything that runs R code (r_reference/bridge.R).
* ``REFIMPL_NO_R=1`` hides R from this process (the no-R leg of CI): :func:`availability` says so.
* Before R is embedded, :func:`probe` asks ``Rscript`` in a subprocess (:mod:`.rprobe`): a broken R_HOME,
  an R that does not start, a missing or damaged ``attention`` become a reason, never an aborted process.

R code the bridge needs lives in ``r_reference/bridge.R``; R functions are looked up once.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._checks import RefimplError
from ..errors import Unavailable
from .rprobe import INSTALL_HINT, R_HIDE_ENV, Availability, probe

__all__ = ["Availability", "availability", "probe", "require_r", "RError", "RCaseResult", "VignetteRun",
           "get_bridge", "R_HIDE_ENV", "EXPECTED_ATTENTION_VERSION"]

EXPECTED_ATTENTION_VERSION = "0.4.0"   # the version the divergence catalogue was measured on

_LOCK = threading.RLock()              # every call into R holds it
_bridge: "RBridge | None" = None
_availability: "Availability | None" = None


class RError(RefimplError, RuntimeError):
    """R signalled an error. ``r_message`` is R's message, ``r_call`` the deparsed call."""

    def __init__(self, r_message: str, r_call: str | None = None, context: str = ""):
        self.r_message, self.r_call = r_message, r_call
        where = f" in {r_call}" if r_call else ""
        super().__init__(f"R error{where}: {r_message}" + (f" [{context}]" if context else ""))


@dataclass
class RCaseResult:
    """One case of a batch: ``value`` (tuple of arrays, one per result component) or ``error``."""
    value: tuple[np.ndarray, ...] | None
    error: str | None = None
    call: str | None = None
    warnings: list[str] = field(default_factory=list)
    version: str = ""

    def unwrap(self) -> tuple[np.ndarray, ...]:
        if self.error is not None:
            raise RError(self.error, self.call)
        assert self.value is not None            # a case without an error holds its value
        return self.value


@dataclass
class StackedResult:
    """A batch's results: ``components[c]`` is an array (n, ...) or a list of n arrays (None on error)."""
    components: list
    errors: list
    calls: list
    warnings: dict
    version: str


@dataclass
class VignetteRun:
    name: str
    version: str
    vars: dict[str, Any]
    console: list[str]
    warnings: list[str]
    path: str


def _r_reference_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "r_reference"
    if (here / "bridge.R").is_file():
        return here
    return Path(str(resources.files("refimpl.r_reference").joinpath("bridge.R"))).parent   # an installed wheel


def _rpy2_version() -> tuple[str | None, str]:
    try:
        import rpy2
        return rpy2.__version__, ""
    except ImportError as e:
        return None, (f"rpy2 is not importable ({e}); install Debian's python3-rpy2 "
                      f"or 'pip install rpy2' (run 'make setup')")


def availability(refresh: bool = False) -> Availability:
    """Whether the R side can run here, with versions; never raises. Starts R if it can: only after
    :func:`probe` found R and ``attention`` working."""
    global _availability
    if _availability is not None and not refresh:
        return _availability
    if os.environ.get(R_HIDE_ENV, "") not in ("", "0"):
        _availability = Availability(False, f"R is hidden from this process by {R_HIDE_ENV}=1")
        return _availability
    rpy2_version, why = _rpy2_version()
    if rpy2_version is None:
        _availability = Availability(False, why)
        return _availability
    p = probe(refresh)
    if not p.ok:
        _availability = p
        return _availability
    try:
        versions = get_bridge().versions()
    except Exception as e:  # R itself missing or failing to start
        _availability = Availability(False, f"embedded R could not start: {type(e).__name__}: {e}",
                                     rpy2_version=rpy2_version)
        return _availability
    att = versions.get("attention")
    if not att:
        _availability = Availability(False, f"the R package 'attention' is not installed; {INSTALL_HINT}",
                                     r_version=versions["r"], rpy2_version=rpy2_version)
        return _availability
    _availability = Availability(True, "", versions["r"], rpy2_version, att, versions.get("knitr"),
                                 versions.get("blas"))
    return _availability


def require_r() -> "RBridge":
    """The bridge, or :class:`Unavailable` with the reason."""
    a = availability()
    if not a.ok:
        raise Unavailable(a.reason)
    return get_bridge()


def get_bridge() -> "RBridge":
    global _bridge
    with _LOCK:
        if _bridge is None:
            if os.environ.get(R_HIDE_ENV, "") not in ("", "0"):
                raise Unavailable(f"R is hidden from this process by {R_HIDE_ENV}=1")
            _bridge = RBridge()
        return _bridge


class RBridge:
    """Embedded R with r_reference/bridge.R loaded into a private environment."""

    def __init__(self) -> None:
        import rpy2.robjects as ro
        from rpy2.robjects import default_converter, numpy2ri
        self._ro = ro
        self._conv = default_converter + numpy2ri.converter
        with _LOCK:
            env = ro.r["new.env"](parent=ro.r["globalenv"]())
            ro.r["sys.source"](str(_r_reference_dir() / "bridge.R"), envir=env)
            self._env = env
            self._f = {name: env[name] for name in
                       ("refimpl_versions", "refimpl_batch", "refimpl_run_vignette",
                        "refimpl_runif_batch", "refimpl_sample_batch")}

    def _call(self, fname: str, *args, **kwargs):
        from rpy2.rinterface_lib.embedded import RRuntimeError
        with _LOCK, self._conv.context():
            try:
                return self._f[fname](*args, **kwargs)
            except RRuntimeError as e:
                raise RError(str(e).strip(), fname) from None

    def versions(self) -> dict[str, str | None]:
        out = self._call("refimpl_versions")
        return {k: (None if v is None or (isinstance(v, np.ndarray) and v[0] is None) else
                    str(v[0] if isinstance(v, np.ndarray) else v)) for k, v in out.items()}

    def apply(self, function_code: str, *args):
        """Evaluate an R function's source and call it on ``args`` (tests and diagnostics only; the
        harness itself calls the named functions of bridge.R)."""
        from rpy2.rinterface_lib.embedded import RRuntimeError
        with _LOCK, self._conv.context():
            try:
                return self._ro.r(function_code)(*args)
            except RRuntimeError as e:
                raise RError(str(e).strip(), function_code[:80]) from None

    # --- the attention package ------------------------------------------------------------------
    def batch(self, fname: str, cases: Sequence[Sequence[Any]], argnames: Sequence[str]) -> list[RCaseResult]:
        """Evaluate ``attention::<fname>(**dict(zip(argnames, case)))`` for every case.

        Cases are grouped by their arguments' shapes; each group is one call into R (the case index
        stacked on the last axis, so that R's column-major slice of a case is contiguous).
        A ``None`` argument is left out of that case's call (R's default applies).
        """
        results: list[RCaseResult | None] = [None] * len(cases)
        groups: dict[tuple, list[int]] = {}
        for i, case in enumerate(cases):
            if len(case) != len(argnames):
                raise ValueError(f"case {i} has {len(case)} arguments, argnames has {len(argnames)}")
            sig = tuple(None if a is None else np.shape(a) for a in case)
            groups.setdefault(sig, []).append(i)
        for sig, idx in groups.items():
            present = [j for j, s in enumerate(sig) if s is not None]
            if present != list(range(len(present))):
                raise ValueError(f"only trailing arguments may be None (R receives them positionally), "
                                 f"got {[argnames[j] for j in present]} of {list(argnames)}")
            stacked = [np.ascontiguousarray(np.stack([np.asarray(cases[i][j], dtype=np.float64) for i in idx], axis=-1))
                       for j in present]
            names = np.array([argnames[j] for j in present], dtype=object) if present else np.array([], dtype=str)
            for i, res in zip(idx, self._batch_group(fname, stacked, names, len(idx))):
                results[i] = res
        return results  # type: ignore[return-value]

    def batch_stacked(self, fname: str, arrays: Sequence[np.ndarray], argnames: Sequence[str]) -> "StackedResult":
        """The fast path: ``arrays[j]`` holds argument j of every case, the case index on axis 0.

        Returns per result component either one stacked array (n, ...) when every case's component
        has the same shape, or a list of per-case arrays; errors and warnings per case.
        """
        n = len(arrays[0])
        stacked = [np.moveaxis(np.asarray(a, dtype=np.float64), 0, -1) for a in arrays]
        out = self._call("refimpl_batch", fname, n, self._ro.StrVector(list(argnames)), *stacked)
        return self._unstack(out, n)

    def _unstack(self, out, n: int) -> "StackedResult":
        """A batch's R list (refimpl_batch, refimpl_target_batch) as a :class:`StackedResult`."""
        ncomp = int(np.asarray(out["ncomp"]).reshape(-1)[0])
        errors: list = [None] * n
        calls: list = [None] * n
        err_case = np.asarray(out["err_case"], dtype=np.int64).reshape(-1)
        if len(err_case):
            msgs, cls = np.asarray(out["err_msg"]).reshape(-1), np.asarray(out["err_call"]).reshape(-1)
            for case, msg, cl in zip(err_case.tolist(), msgs, cls):
                errors[case - 1] = str(msg)
                calls[case - 1] = None if cl is None or str(cl) == "NA" else str(cl)
        warned: dict[int, list[str]] = {}
        warn_case = np.asarray(out["warn_case"], dtype=np.int64).reshape(-1)
        if len(warn_case):
            for case, msg in zip(warn_case.tolist(), np.asarray(out["warn_msg"]).reshape(-1)):
                warned.setdefault(case - 1, []).append(str(msg))
        comps: list = []
        for c in range(1, ncomp + 1):
            vals = np.asarray(out["values"][f"c{c}"], dtype=np.float64).reshape(-1)
            dims = np.asarray(out["dims"][f"c{c}"], dtype=np.int64).reshape(n, 4)
            if (dims == dims[0]).all() and dims[0, 0] >= 0:        # every case the same shape: one reshape
                shape = tuple(int(d) for d in dims[0, 1:1 + dims[0, 0]])
                blocks = vals.reshape((n,) + shape[::-1])           # case-major, each block column-major
                comps.append(np.transpose(blocks, (0,) + tuple(range(len(shape), 0, -1))))
                continue
            per: list[np.ndarray | None] = [None] * n
            offset = 0
            for i in range(n):
                nd = int(dims[i, 0])
                if nd < 0:
                    continue
                shape = tuple(int(d) for d in dims[i, 1:1 + nd])
                size = int(np.prod(shape))
                per[i] = vals[offset:offset + size].reshape(shape, order="F")
                offset += size
            comps.append(per)
        return StackedResult(comps, errors, calls, warned, str(out["version"][0]))

    # --- R functions as targets (r_reference/targets.R; refimpl.harness.targets.r_targets) --------------------
    def _targets_loaded(self) -> None:
        with _LOCK:
            if "refimpl_target_batch" not in self._f:
                self._ro.r["sys.source"](str(_r_reference_dir() / "targets.R"), envir=self._env)
                self._f.update({n: self._env[n] for n in ("refimpl_target_load", "refimpl_target_batch")})

    def load_function(self, path: str | None, package: str | None, name: str):
        """R function ``name`` of file ``path`` (own environment) or of ``package``: a :meth:`batch_function` handle."""
        self._targets_loaded()
        return self._call("refimpl_target_load", path or "", package or "", name)

    def batch_function(self, handle, arrays: Sequence[np.ndarray]) -> "StackedResult":
        """``handle(Q, K, V[, mask = M])`` on Q (n, Sq, D), K (n, Sk, D), V (n, Sk, Dv)[, M (n, Sq, Sk)]: one R call."""
        self._targets_loaded()
        stacked = [np.moveaxis(np.asarray(a, dtype=np.float64), 0, -1) for a in arrays]
        return self._unstack(self._call("refimpl_target_batch", handle, len(arrays[0]), *stacked), len(arrays[0]))

    def _batch_group(self, fname, stacked, names, n) -> list[RCaseResult]:
        r = self.batch_stacked(fname, [np.moveaxis(a, -1, 0) for a in stacked], list(names))
        res = []
        for i in range(n):
            if r.errors[i] is not None:
                res.append(RCaseResult(None, r.errors[i], r.calls[i], r.warnings.get(i, []), r.version))
            else:
                value = tuple(c[i] for c in r.components if c[i] is not None)
                res.append(RCaseResult(value, None, None, r.warnings.get(i, []), r.version))
        return res

    def call(self, fname: str, *args) -> RCaseResult:
        """One case; use :meth:`batch` for many."""
        names = {"SoftMax": ("x",), "RowMax": ("x",), "ComputeWeights": ("scores",),
                 "attention": ("Q", "K", "V", "mask")}[fname]
        return self.batch(fname, [tuple(args) + (None,) * (len(names) - len(args))], names)[0]

    def run_vignette(self, name: str) -> VignetteRun:
        """Run the installed vignette code ``doc/<name>.R`` in a fresh environment; every variable it made."""
        out = self._call("refimpl_run_vignette", name)
        vars_ = {}
        for k, v in out["vars"].items():
            vars_[k] = np.asarray(v, dtype=np.float64) if isinstance(v, np.ndarray) and v.dtype.kind in "fiub" else v
        arr = lambda x: [str(s) for s in np.asarray(x).reshape(-1)] if isinstance(x, np.ndarray) else []  # noqa: E731
        return VignetteRun(name, str(out["version"][0]), vars_, arr(out["console"]), arr(out["warnings"]),
                           str(out["path"][0]))

    # --- R's RNG, for checking rrng ----------------------------------------------------------------
    def runif_batch(self, seeds, ns, mins, maxs) -> list[np.ndarray]:
        flat = np.asarray(self._call("refimpl_runif_batch", np.asarray(seeds, dtype=np.float64),
                                     np.asarray(ns, dtype=np.float64), np.asarray(mins, dtype=np.float64),
                                     np.asarray(maxs, dtype=np.float64)), dtype=np.float64).reshape(-1)
        return np.split(flat, np.cumsum(ns)[:-1])

    def sample_batch(self, seeds, ns, sizes, replace) -> list[np.ndarray]:
        flat = np.asarray(self._call("refimpl_sample_batch", np.asarray(seeds, dtype=np.float64),
                                     np.asarray(ns, dtype=np.float64), np.asarray(sizes, dtype=np.float64),
                                     np.asarray(replace, dtype=bool)), dtype=np.float64).reshape(-1)
        return [a.astype(np.int64) for a in np.split(flat, np.cumsum(sizes)[:-1])]
