"""ONNX Runtime as a built-in target: the ONNX ``Attention`` operator (opset 23) on ORT's CPU kernel.

ORT runs in ONE Node.js process per :class:`OrtSession` (npm ``onnxruntime-node``, installed by
``make setup`` into ``tools/ort/``; ``ort_runner.mjs`` beside this file is the worker, fed framed
requests on stdin). Cases, models and what ONNX can express: :mod:`refimpl.harness.runtimes.ort_case`.

What the operator computes (ONNX Attention-23, 4-D inputs), for each batch b and query head h, with
kv head ``h // (Hq / Hkv)`` (GQA: contiguous groups of query heads share a kv head)::

    scores  = scale * Q K^T                       (Sq, D) x (D, Sk) -> (Sq, Sk); scale defaults to 1/sqrt(D)
    scores  = softcap * tanh(scores / softcap)    when softcap > 0 (before the mask, as the spec's diagram)
    scores += bias                                bool attn_mask: 0 where True, -inf where False;
                                                  float attn_mask: added as it is;
                                                  is_causal: -inf where j > i + P (P = past length)
    Y       = softmax(scores, axis=-1) V          (Sq, Sk) x (Sk, Dv) -> (Sq, Dv)

``is_causal`` is top-left aligned ("above the diagonal", P = 0) unless a past_key is given: then query
i attends key j iff j <= i + P, i.e. bottom-right. :class:`OrtCase` expresses bottom-right causal
attention with Sk > Sq that way, sending the first Sk - Sq keys/values as past_key/past_value.

Divergences of ORT 1.30 (CPU) from the spec's reference implementation and from refimpl, each pinned by a
test in tests/test_onnx_runtime.py: ``refimpl.harness.columns.onnxruntime_column.DIVERGENCES``.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import numpy as np

from ..cases import TargetDied
from .ort_case import ORT_TYPES, OrtCase, OrtCaseError, encode

__all__ = ["OrtCase", "OrtSession", "availability",
           "OrtCaseError", "OrtRunError", "OrtProcessError", "OrtUnavailable"]

RUNNER = Path(__file__).with_name("ort_runner.mjs")
MAX_RESTARTS = 3                  # worker restarts in a session's life after a death; then its cases are not run


class OrtUnavailable(RuntimeError):
    """Node, the npm package or the onnx Python package is missing; the message says which and how to fix."""


class OrtRunError(RuntimeError):
    """ORT refused or failed this case (its own message follows)."""


class OrtProcessError(TargetDied):
    """The Node worker died (``status`` "crash") or did not answer within the time-out ("timeout") while this
    case was pending, or it died too often to be restarted: the case's ``crash``/``timeout``, not its error."""

    def __init__(self, message: str, status: str = "crash"):
        super().__init__(status, message)


def ort_dir() -> Path:
    """The folder holding node_modules/onnxruntime-node: $REFIMPL_ORT_DIR or the project's tools/ort."""
    return Path(os.environ.get("REFIMPL_ORT_DIR") or Path(__file__).resolve().parents[3] / "tools" / "ort")


@functools.lru_cache(maxsize=None)
def availability() -> tuple[bool, str]:
    """``(True, "onnxruntime-node 1.30.0, node v20.x")`` or ``(False, reason)``; starts the worker once."""
    node = shutil.which(os.environ.get("REFIMPL_NODE", "node"))
    if node is None:
        return False, "node is not on PATH (Debian: apt-get install nodejs npm, then make setup)"
    pkg = ort_dir() / "node_modules" / "onnxruntime-node" / "package.json"
    if not pkg.is_file():
        return False, f"onnxruntime-node is not installed in {ort_dir()} (run make setup)"
    if importlib.util.find_spec("onnx") is None:
        return False, "the Python package onnx is missing (Debian: apt-get install python3-onnx)"
    try:
        with OrtSession(timeout=30.0) as s:
            hello = s.start()
    except (OrtUnavailable, OrtProcessError) as e:
        return False, f"the ORT worker does not start: {e}"
    return True, f"onnxruntime-node {hello['ort']}, node {hello['node']}"


def _short(msg: str) -> str:
    """ORT's message without the C++ signature it quotes: 'ORT Attention (file:line): <reason>'."""
    msg = " ".join(msg.split())
    if " was false." in msg and "Status Message:" in msg:
        where = msg.split("Status Message:", 1)[1].split()[0].rsplit("/", 1)[-1]
        return f"ORT Attention ({where}) {msg.rsplit(' was false.', 1)[1].strip()}"
    return msg


def _frame(header: dict, payloads=()) -> bytes:
    h = json.dumps(header).encode()
    return b"".join([struct.pack("<I", len(h)), h, *payloads])


class _Stop(Exception):
    """The worker ended or went silent (internal); ``status`` is the case's verdict, "crash" or "timeout"."""

    def __init__(self, message: str, status: str = "crash"):
        super().__init__(message)
        self.status = status


def _ended(code: int) -> str:
    """How a worker ended, from its return code: "was killed by SIGKILL" or "exited with code 1"."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class OrtSession:
    """One Node worker evaluating many cases; a context manager. The worker starts at the first
    :meth:`run` (or :meth:`start`); a worker that dies (killed, crashed, exited) or exceeds ``timeout`` seconds on
    one case is killed, that case gets an :class:`OrtProcessError` ("crash" or "timeout"), and the rest go on in
    a fresh worker. A worker found dead between cases is replaced too. After ``MAX_RESTARTS`` restarts in the
    session's life no worker is started again: every later case is "crash", "not run: the worker keeps dying"."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = float(timeout)
        self._proc: subprocess.Popen | None = None
        self._sent: set[str] = set()          # model keys this worker already holds
        self._stderr: IO[bytes] | None = None
        self.hello: dict | None = None
        self.deaths: list[str] = []           # how each worker that served this session ended, in order

    def __enter__(self) -> "OrtSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> dict:
        """Start the worker if needed; returns its hello (``{"ort": version, "node": version}``)."""
        if self._proc is not None and self._proc.poll() is None:
            assert self.hello is not None             # set when this worker started
            return self.hello
        if self._proc is not None:                    # it died while idle (between cases): that is a death too
            self._died(f"the ORT worker (Node) {_ended(self._proc.returncode)} between cases")
        if len(self.deaths) > MAX_RESTARTS:
            raise OrtProcessError(f"not run: the ORT worker (Node) keeps dying ({len(self.deaths)} times this run, "
                                  f"{MAX_RESTARTS} restarts); last: {self.deaths[-1]}"[:300])
        node = shutil.which(os.environ.get("REFIMPL_NODE", "node"))
        if node is None or not (ort_dir() / "node_modules" / "onnxruntime-node").is_dir():
            raise OrtUnavailable("node or tools/ort/node_modules/onnxruntime-node is missing (run make setup)")
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([node, str(RUNNER), str(ort_dir())], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        self._sent = set()
        assert self._proc.stdin is not None           # stdin=PIPE
        try:
            self._proc.stdin.write(_frame({"op": "hello"}))
            self.hello, _ = self._read_frame(time.monotonic() + self.timeout)
        except (_Stop, OSError) as e:
            self._died(f"the ORT worker did not start: {e}")
            raise OrtProcessError(self.deaths[-1]) from None
        return self.hello

    def _died(self, why: str) -> None:
        """Record a worker's death (``why``) and make sure it is gone; the next :meth:`start` may replace it."""
        self.deaths.append(why)
        self._kill()

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-600:]

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        assert self._proc is not None and self._proc.stdout is not None   # called while a worker runs (stdout=PIPE)
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while len(buf) < n:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise _Stop(f"no answer within {self.timeout:g} s", "timeout")
                chunk = os.read(fd, min(n - len(buf), 1 << 20))
                if not chunk:
                    tail = self._stderr_tail()
                    raise _Stop(f"the worker {_ended(self._proc.wait())}" + (f": {tail}" if tail else ""))
                buf += chunk
        return bytes(buf)

    def _read_frame(self, deadline: float) -> tuple[dict, bytes]:
        (hlen,) = struct.unpack("<I", self._read_exact(4, deadline))
        header = json.loads(self._read_exact(hlen, deadline))
        n = sum(o["nbytes"] for o in header.get("outputs", ()))
        return header, self._read_exact(n, deadline) if n else b""

    def run(self, cases: list[OrtCase]) -> list[np.ndarray | Exception]:
        """Outputs (B, Hq, Sq, Dv) in the inputs' dtype, or each failing case's exception, in order."""
        results: list = [None] * len(cases)
        todo = []
        for i, c in enumerate(cases):
            try:
                todo.append((i, encode(c)))
            except OrtCaseError as e:
                results[i] = e
        while todo:
            try:
                self.start()
            except OrtProcessError as e:
                for i, _ in todo:
                    results[i] = e
                break
            frames = []
            for i, (key, model, feeds) in todo:
                send_model = key not in self._sent
                self._sent.add(key)
                arrays = [np.ascontiguousarray(a) for _, a in feeds]
                header = {"op": "run", "id": i, "model": key, "model_nbytes": len(model) if send_model else 0,
                          "inputs": [{"name": n, "type": "bool" if a.dtype == bool else a.dtype.name,
                                      "dims": list(a.shape), "nbytes": a.nbytes} for (n, _), a in zip(feeds, arrays)],
                          "outputs": ["Y"]}
                frames.append(_frame(header, [model if send_model else b"", *(a.tobytes() for a in arrays)]))
            assert self._proc is not None             # start() left a worker running
            writer = threading.Thread(target=self._write_all, args=(self._proc.stdin, frames), daemon=True)
            writer.start()
            for pos, (i, _) in enumerate(todo):
                try:
                    header, payload = self._read_frame(time.monotonic() + self.timeout)
                    if header.get("id") != i:
                        raise _Stop(f"protocol error: answer for case {header.get('id')} while expecting {i}")
                except _Stop as e:
                    self._died(f"the ORT worker (Node) died on this case: {e}")
                    again = ("; a fresh worker runs the next cases" if len(self.deaths) <= MAX_RESTARTS
                             else f"; not restarted again ({MAX_RESTARTS} restarts this run)")
                    results[i] = OrtProcessError(f"{self.deaths[-1]}"[:240] + again, e.status)
                    todo = todo[pos + 1:]
                    break
                results[i] = self._decode(header, payload)
            else:
                todo = []
            writer.join(timeout=5.0)
        return results

    @staticmethod
    def _write_all(pipe, frames) -> None:
        try:
            for f in frames:
                pipe.write(f)
        except (BrokenPipeError, OSError, ValueError):
            pass                              # the reader sees the worker's end and reports it

    @staticmethod
    def _decode(header: dict, payload: bytes):
        if not header.get("ok"):
            return OrtRunError(_short(header.get("error", "unknown ORT error")))
        y = header["outputs"][0]
        if y["type"] not in ORT_TYPES:
            return OrtRunError(f"ORT returned an output of type {y['type']}, expected float32 or float16")
        return np.frombuffer(payload[:y["nbytes"]], dtype=np.dtype(y["type"])).reshape(y["dims"]).copy()

    def _kill(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for f in (self._proc.stdin, self._proc.stdout):
                if f is not None:
                    f.close()
        self._proc = None

    def close(self) -> None:
        """Ask the worker to exit (kill it after 5 s); the session can start a new one later."""
        if self._proc is not None and self._proc.poll() is None:
            assert self._proc.stdin is not None       # stdin=PIPE
            try:
                self._proc.stdin.write(_frame({"op": "bye"}))
                self._proc.stdin.close()
                self._proc.wait(timeout=5.0)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        self._kill()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
