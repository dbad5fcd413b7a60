"""JavaScript targets: ``--target js:path/kernel.mjs:fn`` calls an ES module's function in a Node process.

``fn({q, k, v, keep, scale, shape, dtype})`` gets Float64Array or Float32Array inputs (row-major (B, H, S, D), as
the C ABI's), ``keep`` a Uint8Array (B, Hq, Sq, Sk) or null, ``shape`` {B, Hq, Hkv, Sq, Sk, D, Dv}; it returns a
Float64Array / Float32Array (B, Hq, Sq, Dv) or ``{out, weights}``. One Node process per target (started when
loaded, in the worker when isolated): a call is one JSON line each way (:file:`js_runner.mjs`); a throw is that
case's error with the JavaScript message; a Node that exits is restarted for the next call and the call fails.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import numpy as np

from ...errors import UsageError

__all__ = ["JsFunction", "JsError", "load_js", "PREFIX", "RUNNER"]

PREFIX = "js:"
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "js_runner.mjs")


class JsError(RuntimeError):
    """The JavaScript function threw, returned something unusable, or Node exited."""


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


class JsFunction:
    """One exported function of an ES module, called through a Node process it owns."""

    def __init__(self, path: str, name: str, node: str):
        self.path, self.name, self.node = path, name, node
        self.proc: subprocess.Popen | None = None
        self._start()

    def __repr__(self) -> str:
        return f"<JavaScript function {self.name} in {self.path}>"

    def _start(self) -> None:
        self.proc = subprocess.Popen([self.node, RUNNER, self.path, self.name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        first = self._read()
        if not first.get("ready"):
            self.close()
            raise UsageError(f"--target js:{self.path}:{self.name}: {first.get('error', 'Node did not start')}")

    def _read(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            self.proc = None
            raise JsError(f"the Node process running {self.name} exited (code {code}) during the call")
        return json.loads(line)

    def __call__(self, q, k, v, keep=None, scale=None):
        arrays = [np.asarray(a) for a in (q, k, v)]
        dt = arrays[0].dtype
        if dt not in (np.float64, np.float32) or any(a.dtype != dt or a.ndim != 4 for a in arrays):
            raise TypeError(f"JavaScript targets take q, k, v as 4-D float64 or float32 arrays of one dtype, got "
                            f"{[(a.dtype.name, a.shape) for a in arrays]}")
        B, Hq, Sq, D = arrays[0].shape
        _, Hkv, Sk, Dv = arrays[2].shape
        kp = None if keep is None else np.ascontiguousarray(np.broadcast_to(keep, (B, Hq, Sq, Sk)), np.uint8)
        request = {"q": _b64(arrays[0]), "k": _b64(arrays[1]), "v": _b64(arrays[2]),
                   "keep": None if kp is None else _b64(kp), "dtype": dt.name,
                   "scale": float(1.0 / np.sqrt(D) if scale is None else scale),
                   "shape": {"B": B, "Hq": Hq, "Hkv": Hkv, "Sq": Sq, "Sk": Sk, "D": D, "Dv": Dv}}
        if self.proc is None:
            self._start()                                   # the last call's Node exited: a fresh one
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc = None
            raise JsError(f"the Node process running {self.name} is gone") from None
        r = self._read()
        if not r.get("ok"):
            raise JsError(r.get("error", "the call failed"))
        out = np.frombuffer(base64.b64decode(r["out"]), dtype=r["dtype"])
        if out.size != B * Hq * Sq * Dv:
            raise TypeError(f"the target returned {out.size} values; expected B*Hq*Sq*Dv = {B * Hq * Sq * Dv} "
                            f"(B, Hq, Sq, Dv) = {(B, Hq, Sq, Dv)}")
        w = None
        if r.get("weights") is not None:
            w = np.frombuffer(base64.b64decode(r["weights"]), dtype=r["wdtype"])
            if w.size != B * Hq * Sq * Sk:
                raise TypeError(f"the target returned {w.size} weights; expected (B, Hq, Sq, Sk) = {(B, Hq, Sq, Sk)}")
            w = w.reshape(B, Hq, Sq, Sk)
        return out.reshape(B, Hq, Sq, Dv), w

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def load_js(spec: str) -> JsFunction:
    """``js:path/kernel.mjs:fn`` -> its :class:`JsFunction`; a UsageError naming the spec otherwise."""
    path, _, name = spec[len(PREFIX):].rpartition(":")
    if not path or not name:
        raise UsageError(f"--target {spec!r}: expected js:path/to/kernel.mjs:function")
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(f"--target {spec!r}: no file {path}")
    node = shutil.which("node")
    if node is None:
        raise UsageError(f"--target {spec!r}: JavaScript targets need Node.js (node on PATH); tools/setup.sh "
                         f"installs it")
    return JsFunction(full, name, node)
