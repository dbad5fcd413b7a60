"""Run untrusted calls in a child process and turn every misbehaviour into a verdict (issue #18).

A conformance harness runs code it did not write. :class:`Worker` runs ``call(payload)`` in a child process
and reports each call as a :class:`CallResult` whose ``status`` is one of

* ``"ok"``: returned; ``value`` is the return value, rebuilt from plain data (:mod:`.wire`: base-class NumPy
  arrays, :class:`.wire.Tensor` records for torch tensors, None, bool, int, float, complex, str, bytes, and
  tuples, lists and dicts of them);
* ``"error"``: raised (``error`` = ``Type: message``), the payload could not be (un)pickled, or the value is
  not plain data (refused in the child: ``"UnsupportedResult: the call returned a set; ..."``);
* ``"exit"``: ``sys.exit(code)`` inside the call (``error`` = ``"sys.exit(4)"``);
* ``"crash"``: the child died without a result: a signal (``"killed by SIGSEGV"``, abort = SIGABRT) or
  ``os._exit(n)`` / C ``exit(n)`` (``"os._exit(3) ..."``, n = 0 included), or it wrote garbage into the
  result channel;
* ``"timeout"``: the call ran longer than ``timeout`` seconds (``"timeout after 2.0 s"``);
* ``"oom"``: the child's resident memory went above ``max_memory``, or the call raised ``MemoryError``
  (or an exception class named ``OutOfMemoryError``, as torch's).

After crash, exit, timeout and oom the child is replaced (the loader runs again) and the run goes on with the
next payload; results keep the payloads' order. ``traceback`` holds the target's traceback; for crash and
timeout it is faulthandler's dump of the child's Python stacks. ``output_tail`` holds the last 20 lines the
call printed (fds 1 and 2, C-level included); nothing the target prints reaches the parent's stdout.

Why a ``subprocess`` running ``_worker_child.py`` over pipes, not ``multiprocessing``: fork is out (the parent
may embed R and run threads); "spawn" would re-import the parent's ``__main__`` (the CLI, pytest) in every
child and add a feeder thread and a resource-tracker process. A plain subprocess gets fds 1 and 2 on a temp
file from its first instruction (interpreter start-up errors included), imports nothing but the stdlib
before the loader (start-up measured here: 0.03 s bare, 0.07 s importing numpy, 0.7 s importing torch; a
restart costs the same), runs in its own
session (Ctrl-C reaches only the parent, which kills the child's whole process group, grandchildren
included), and the explicit frame protocol tells a refused result from a dead child.

Decisions:

* Payloads are pickled in the parent (the trusted side) and sent ``batch`` at a time (and at most 64 MiB
  ahead); a payload that cannot be pickled gets an ``"error"`` result without reaching the child. I/O is
  non-blocking, so large payloads and large results cannot deadlock the pipes.
* Nothing the child sends is unpickled (issue #27): unpickling runs code the pickle names, so a returned
  object whose ``__reduce__`` says ``os._exit(0)`` would end the judge. Results, meta dicts and load errors
  are JSON, arrays raw bytes (:mod:`.wire`); a value the parent cannot decode is an ``"error"``, a malformed
  meta a corrupted channel (``"crash"``). Measured (2 cores shared with another job's tests, old and new
  alternated, best of 9 runs): a call with a 4-element array each way ~47 us against ~41 us with pickle at
  load 2 (both ~85-130 us at load 3-6; the codec alone: 13 us of CPU against 6 us); a 2 MiB array each way
  ~24-33 ms against ~32-36 ms with pickle (the arrays are no longer copied in and out of a pickle). The
  figures given here before (~15-35 us, ~8 ms) were not reproduced on this machine by the same pickle code.
* Output: the child empties its temp file before each call, so ``output_tail`` is that call's own and the
  file never holds more than one call's output. Python's stdout/stderr and C stdio are line-buffered (and
  PYTHONUNBUFFERED is dropped) so that the lines before a crash survive it; the price: 50 MB printed as
  500 000 lines takes 1.1 s in the worker against 0.17 s block-buffered; one 50 MB print() takes 0.1 s.
* Timeout, measured in the parent: a call starts when its payload is written and the previous answer has
  arrived. On expiry the child gets SIGUSR1 (faulthandler writes its stacks), 0.25 s, then SIGKILL to the
  process group.
* Memory: the parent reads the child's resident set (``/proc/<pid>/statm``) every 20 ms and kills it above
  ``max_memory`` (default: half of MemTotal); the child's own children are not counted; without /proc
  (not Linux) only ``MemoryError`` counts. RLIMIT_AS is not used: measured here, ``import torch`` maps
  792 MiB of address space for 226 MiB resident (922 MiB after one matmul) and fails outright
  (``ImportError: failed to map segment``) under a 512 MiB RLIMIT_AS; thread stacks and malloc arenas
  inflate it further. The overshoot is what the target allocates in 20 ms (a 256 MiB limit stopped an
  8-MiB-block allocation loop at 260-265 MiB resident).
* The child dies with the parent: PR_SET_PDEATHSIG when the worker is started from the main thread (the
  signal follows the creating *thread*), and in any case a child thread that exits once its parent changes.
"""
from __future__ import annotations

import pickle
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from ..._checks import RefimplError, machine_memory
from . import _worker_child as proto, wire
from ._worker_process import Child, death_reason

__all__ = ["CallResult", "Worker", "WorkerLoadError", "STATUSES"]

STATUSES = ("ok", "error", "crash", "exit", "timeout", "oom")
_REPLACE_CHILD = frozenset({"crash", "exit", "timeout", "oom"})
_POLL = 0.02                      # seconds between memory polls
_MAX_AHEAD = 64 << 20             # bytes of payloads queued ahead of the running call
_META_KEYS = frozenset({"status", "error", "traceback", "output_tail", "seconds"})


def _load_failure(body: bytes) -> tuple[str, str, str, str] | None:
    """(message, traceback, exception type name, its message) of a load-failed frame (JSON); None if garbage."""
    try:
        fields = wire.loads(body)
    except Exception:                  # not UTF-8, not JSON, nested too deep
        return None
    if not (isinstance(fields, list) and len(fields) == 4 and all(isinstance(f, str) for f in fields)):
        return None
    return fields[0], fields[1], fields[2], fields[3]


@dataclass
class CallResult:
    """The verdict on one call (see the module docstring for the statuses and their ``error`` texts)."""
    status: str
    value: Any = None
    error: str = ""
    traceback: str = ""
    output_tail: str = ""
    seconds: float = 0.0


class WorkerLoadError(RefimplError):
    """The loader could not be imported or called in the child, or the child died while loading it."""

    def __init__(self, message: str, traceback: str = "", output_tail: str = "", raised: tuple[str, str] | None = None):
        super().__init__(message)
        self.message, self.traceback, self.output_tail = message, traceback, output_tail
        self.raised = raised          # (exception type name, its whole message) when the loader raised


class Worker:
    """Runs ``call(payload)`` in a child process; see the module docstring for the verdicts.

    ``loader`` is ``"package.module:function"``, importable in the child (which gets the parent's
    ``sys.path``); the child calls it once with ``*loader_args`` and uses what it returns as ``call``.
    ``timeout`` bounds each call and ``start_timeout`` each start (the loader may import torch), in seconds;
    ``max_memory`` bounds the child's resident bytes; ``batch`` payloads are queued ahead of the running call.
    ``restarts`` counts replaced children; ``startup_seconds`` holds the wall time of each start.
    One thread at a time may use a Worker.
    """

    def __init__(self, loader: str, loader_args: tuple = (), *, timeout: float = 60.0,
                 max_memory: int | None = None, start_timeout: float = 120.0, batch: int = 16) -> None:
        module, sep, attr = loader.partition(":") if isinstance(loader, str) else ("", "", "")
        if not (sep and module and attr):
            raise ValueError(f"loader must be 'package.module:function', got {loader!r}")
        for name, v in (("timeout", timeout), ("start_timeout", start_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {v!r}")
        self.keep_freed = max_memory is None          # no limit asked: the child keeps freed memory (..heap)
        if max_memory is None:
            max_memory = (machine_memory() or 0) // 2 or None
        elif isinstance(max_memory, bool) or not isinstance(max_memory, int) or max_memory <= 0:
            raise ValueError(f"max_memory must be a positive number of bytes or None, got {max_memory!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        self.loader, self.loader_args = loader, tuple(loader_args)
        self.timeout, self.start_timeout = float(timeout), float(start_timeout)
        self.max_memory, self.batch = max_memory, batch
        self.restarts, self.startup_seconds = 0, list[float]()   # replaced children; each start's wall time
        self._child: Child | None = None

    # -- life cycle ----------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The running child's pid (None when there is none)."""
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        """Start the child and run the loader; WorkerLoadError if that fails. A running child is kept."""
        if self._child is not None and not self._child.exited():
            return
        self._drop_child()
        t0 = time.monotonic()
        child = Child(self.loader, self.loader_args, keep_freed=self.keep_freed)
        try:
            deadline = t0 + self.start_timeout
            drain_until = None           # the child exited: a load failure's frame may still be in the pipe (0.5 s)
            while True:
                for kind, _, body in child.pump(min(_POLL, deadline - time.monotonic())):
                    if kind == proto.READY:
                        child.head_since = time.monotonic()     # the first call starts no earlier
                        self._child = child
                        self.startup_seconds.append(time.monotonic() - t0)
                        return
                    failure = _load_failure(body) if kind == proto.LOAD_FAILED else None
                    if failure is None:
                        raise WorkerLoadError(f"the worker's channel was corrupted while loading {self.loader!r}",
                                              "", child.output_tail())
                    message, tb, raised_kind, text = failure
                    raise WorkerLoadError(f"loader {self.loader!r} failed: {message}", tb, child.output_tail(),
                                          (raised_kind, text))
                now = time.monotonic()
                drain_until = drain_until or (now + 0.5 if not child.eof and child.exited() else None)
                if child.eof or (drain_until is not None and now >= drain_until):
                    rc = child.finish()
                    raise WorkerLoadError(f"the worker died while loading {self.loader!r}: {death_reason(rc)}",
                                          child.stacks(), child.output_tail())
                if now >= deadline:
                    child.kill(dump_stacks=True)
                    raise WorkerLoadError(f"loader {self.loader!r} did not finish within {self.start_timeout} s",
                                          child.stacks(), child.output_tail())
                if self.max_memory and now - child.rss_at >= _POLL:
                    if (child.rss(now) or 0) > self.max_memory:
                        child.kill()
                        raise WorkerLoadError(f"loader {self.loader!r}: memory above {self.max_memory / 2 ** 20:g}"
                                              f" MiB while loading", "", child.output_tail())
        except BaseException:
            if self._child is not child:
                child.close(grace=0)
            raise

    def close(self) -> None:
        """Stop the child (EOF, then SIGKILL to its process group after 1 s) and reap it; idempotent."""
        if self._child is not None:
            child, self._child = self._child, None
            child.close()

    def __enter__(self) -> "Worker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_child(self, grace: float = 0.0) -> None:
        if self._child is not None:
            child, self._child = self._child, None
            child.close(grace)

    # -- running -------------------------------------------------------------------------------------------
    def run(self, payloads: list[Any],
            on_result: Callable[[int, CallResult], None] | None = None) -> list[CallResult]:
        """One CallResult per payload, in order; ``on_result(i, result)`` is called as each arrives, in order.

        Starts the child if needed (WorkerLoadError if the first start fails; a failed restart turns the
        remaining payloads into "error" results). Any exception out of here (KeyboardInterrupt, or one raised
        by ``on_result``) kills the child first; the next run starts a new one.
        """
        payloads = list(payloads)
        results: list[CallResult | None] = [None] * len(payloads)
        if payloads:
            self.start()
        pending, emitted = deque(range(len(payloads))), 0
        inflight: deque[int] = deque()
        try:
            while True:
                while emitted < len(results) and (done := results[emitted]) is not None:
                    if on_result is not None:
                        on_result(emitted, done)
                    emitted += 1
                if emitted == len(results):
                    return results                                     # type: ignore[return-value]
                if self._child is None:
                    try:
                        self.start()
                    except WorkerLoadError as exc:
                        for i in pending:
                            results[i] = CallResult("error", error=f"the worker could not be restarted: {exc}",
                                                    traceback=exc.traceback, output_tail=exc.output_tail)
                        pending.clear()
                        continue
                self._fill(payloads, results, pending, inflight)
                if inflight:
                    self._step(results, pending, inflight)
        except BaseException:
            self._drop_child()
            raise

    def _fill(self, payloads: list, results: list, pending: deque, inflight: deque) -> None:
        """Pickle and queue payloads until ``batch`` are in flight or 64 MiB wait in the pipe."""
        child = self._child
        assert child is not None
        while pending and len(inflight) < self.batch and (not inflight or child.queued - child.written < _MAX_AHEAD):
            i = pending.popleft()
            try:
                body = pickle.dumps(payloads[i], proto.PICKLE_PROTOCOL)
            except Exception as exc:
                results[i] = CallResult("error", error=f"the payload ({type(payloads[i]).__qualname__}) cannot be "
                                                       f"pickled: {proto.one_line(exc)}")
                continue
            child.queue(proto.CALL, i, body)
            inflight.append(i)

    def _step(self, results: list, pending: deque, inflight: deque) -> None:
        """One round of I/O for the call at the head of ``inflight``; replace the child if it misbehaved."""
        child = self._child
        assert child is not None
        started = max(child.head_since, child.sent_at.get(inflight[0], child.head_since))
        deadline = started + self.timeout
        if self._take(child.pump(min(_POLL, deadline - time.monotonic())), results, pending, inflight):
            return
        now = time.monotonic()
        if child.eof or child.exited():
            if self._take(child.pump(0), results, pending, inflight):    # answers written just before death
                return
            rc = child.finish()
            if not inflight:                           # it died between calls: nothing to blame
                return self._replace(pending, inflight)
            result = CallResult("crash", error=death_reason(rc), traceback=child.stacks())
        elif not inflight:
            return
        elif now >= deadline:
            child.kill(dump_stacks=True)
            result = CallResult("timeout", error=f"timeout after {self.timeout} s", traceback=child.stacks())
        elif self.max_memory and now - child.rss_at >= _POLL and (rss := child.rss(now) or 0) > self.max_memory:
            child.kill()
            result = CallResult("oom", error=f"memory above {self.max_memory / 2 ** 20:g} MiB "
                                             f"(resident {rss / 2 ** 20:.0f} MiB when stopped)")
        else:
            return
        result.output_tail, result.seconds = child.output_tail(), now - started
        results[inflight.popleft()] = result
        self._replace(pending, inflight)

    def _take(self, frames: list, results: list, pending: deque, inflight: deque) -> bool:
        """Store the answers among ``frames``; True if the child was retired ("exit", "oom", or a frame that
        breaks the protocol: the head call then gets "crash")."""
        child = self._child
        assert child is not None
        for kind, index, body in frames:
            head = inflight[0] if inflight else None
            try:
                if kind != proto.ANSWER or index != head:
                    raise ValueError(f"a {kind!r} frame for payload {index} while the answer to {head} was due")
                result = self._answer(body)
            except Exception as exc:                   # something in the child wrote into our channel
                child.kill()
                if head is not None:
                    results[inflight.popleft()] = CallResult(
                        "crash", error=f"the worker's result channel was corrupted: {proto.one_line(exc)}",
                        output_tail=child.output_tail())
                self._replace(pending, inflight)
                return True
            inflight.popleft()
            results[index] = result
            child.head_since = time.monotonic()
            child.sent_at.pop(index, None)
            if result.status in _REPLACE_CHILD:        # the child exits by itself after "exit" and "oom"
                self._replace(pending, inflight, grace=2.0)
                return True
        return False

    def _answer(self, body: bytes) -> CallResult:
        """The CallResult in an answer body (:mod:`.wire`): JSON and raw array bytes, never unpickled.
        ValueError when the body is not an answer (the channel is corrupted)."""
        meta, skeleton, data = wire.split_answer(body)
        if not isinstance(meta, dict) or set(meta) != _META_KEYS or meta["status"] not in STATUSES \
                or not all(isinstance(meta[k], str) for k in _META_KEYS - {"seconds"}) \
                or type(meta["seconds"]) not in (int, float):
            raise ValueError("the meta of an answer is not {status, error, traceback, output_tail, seconds}")
        result = CallResult(**meta)
        if result.status == "ok":
            try:
                result.value = wire.decode(skeleton, data)
            except Exception as exc:
                result.status = "error"
                result.error = f"the result could not be decoded in the parent: {proto.one_line(exc)}"
        return result

    def _replace(self, pending: deque, inflight: deque, grace: float = 0.0) -> None:
        """Retire the child; the payloads it had not answered go back to the front of ``pending``."""
        pending.extendleft(reversed(inflight))
        inflight.clear()
        self.restarts += 1
        self._drop_child(grace)
