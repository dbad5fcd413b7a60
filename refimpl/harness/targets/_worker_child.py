"""The child side of :mod:`refimpl.harness.targets.worker`, and the frames both sides share.

Started by the parent as ``python <this file> FD_IN FD_OUT FD_FAULT PARENT_PID PDEATHSIG`` with fd 0 on
/dev/null and fds 1 and 2 on one unlinked temp file (so C-level prints are caught too); faulthandler writes
the Python stack of a fatal signal, or of SIGUSR1 (sent by the parent before it kills a call), to FD_FAULT.
It imports only the standard library (and :mod:`.wire`, by path: stdlib only): what else the process imports
is the loader's choice (numpy costs ~0.1 s, torch ~1 s).

Wire format, both directions: a frame is a 17-byte header ``!cQQ`` (kind, index, body length) and a body.

* parent -> child (trusted, pickled): ``L`` (body: pickled ``(loader, loader_args, sys_path)``), then ``C``
  frames (index = the payload's position in the parent's list, body: the pickled payload). EOF = stop.
* child -> parent (untrusted, never pickled): ``R`` ready (body: JSON ``{"pid", "load_seconds"}``) or ``E``
  load failed (body: JSON ``[message, traceback, exception type name, str(exception)]``), then one ``A``
  answer per ``C`` frame, in order. An answer body is ``!QQ`` (len(meta), len(skeleton)), the meta dict as
  JSON (status, error, traceback, output_tail, seconds), the value's skeleton as JSON (empty unless status
  is "ok"), zero padding, then the value's arrays as raw bytes at 64-byte aligned offsets (:mod:`.wire`).
  The parent decodes that with ``json`` and ``np.frombuffer``; the arrays are written straight from the
  target's memory (no copy here) and become writable views of the body there (no copy there). Measured
  (see worker.py): a call with a tiny array ~47 us against ~41 us with pickle; with a 2 MiB array each way
  ~24-33 ms against ~32-36 ms.

Statuses decided here: "ok", "error" (the call raised, the payload could not be unpickled, or the value is not
plain data: :class:`.wire.UnsupportedResult` names its type, and it is never pickled, so its ``__reduce__``
runs nowhere), "exit" (SystemExit out of the call) and "oom" (MemoryError, or an exception class named
``OutOfMemoryError`` as torch's). After "exit" or "oom" the child exits by itself: the parent starts a new
one. "crash", "timeout" and memory kills are decided by the parent, which sees the child die.
"""
import os
import sys

if __name__ == "__main__" and sys.path and (
        os.path.realpath(sys.path[0] or ".") == os.path.dirname(os.path.realpath(__file__))):
    del sys.path[0]      # the script's own folder must not shadow the stdlib or the target's modules

import faulthandler  # noqa: E402
import importlib  # noqa: E402
import pickle  # noqa: E402
import signal  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:                       # annotations only: the child does not import typing (~5 ms of start-up)
    from typing import Any

HEADER = struct.Struct("!cQQ")          # kind, index, body length
LOAD, CALL, READY, LOAD_FAILED, ANSWER = KINDS = b"L", b"C", b"R", b"E", b"A"
PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
TAIL_LINES = 20
TAIL_LINE_CHARS = 400
TAIL_READ_BYTES = TAIL_LINES * TAIL_LINE_CHARS * 4


def frame(kind: bytes, index: int, body: bytes = b"") -> bytes:
    """One frame: header + body."""
    return HEADER.pack(kind, index, len(body)) + body


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``Type: message`` on one line (newlines folded to `` | ``), at most ``limit`` characters."""
    msg = " | ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    text = f"{type(exc).__qualname__}: {msg}" if msg else type(exc).__qualname__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def tail_text(data: bytes, lines: int = TAIL_LINES, line_chars: int = TAIL_LINE_CHARS) -> str:
    """The last ``lines`` lines of ``data`` (decoded leniently); a longer line keeps its last ``line_chars``
    characters behind a leading ``…``."""
    kept = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(s if len(s) <= line_chars else "…" + s[-line_chars:] for s in kept)


def read_tail(fd: int) -> str:
    """The tail of the file open on ``fd`` (pread: the shared file offset is not moved); "" if unreadable."""
    try:
        size = os.fstat(fd).st_size
        return tail_text(os.pread(fd, TAIL_READ_BYTES, max(0, size - TAIL_READ_BYTES)))
    except OSError:
        return ""


# ---- child process --------------------------------------------------------------------------------------

def _read_exact(fd: int, n: int) -> bytearray | None:
    """n bytes from fd, or None at EOF (the parent is gone or asked us to stop)."""
    buf, got = bytearray(n), 0
    with memoryview(buf) as view:
        while got < n:
            k = os.readv(fd, [view[got:]])
            if not k:
                return None
            got += k
    return buf


def _write_all(fd: int, *parts: bytes) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


class _Output:
    """fds 1 and 2 (one shared temp file): flush Python and C buffers, reset per call, read the tail.

    A private duplicate of fd 1 names the temp file, so a target that points fd 1 elsewhere does not get
    its own file truncated."""

    def __init__(self) -> None:
        self.fd = os.dup(1)                    # non-inheritable; shares the file offset with fds 1 and 2
        self.libc = None
        try:                                   # line-buffer C stdio too, so printf output survives a crash
            import ctypes
            self.libc = ctypes.CDLL(None)
            self.libc.setvbuf(ctypes.c_void_p.in_dll(self.libc, "stdout"), None, 1, 0)   # 1 = _IOLBF
        except (OSError, AttributeError, ValueError):
            self.libc = None
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # a TextIOWrapper, typed TextIO
            except (AttributeError, ValueError):
                pass

    def flush(self) -> None:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:                  # the target may have closed or replaced them
                pass
        if self.libc is not None:
            self.libc.fflush(None)

    def reset(self) -> None:
        """Empty the file before a call: the parent then reads the tail of this call's output only."""
        self.flush()
        try:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)  # fds 1 and 2 share this offset (one open file description)
        except OSError:
            pass


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent is gone (the fallback when PR_SET_PDEATHSIG could not be used)."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(70)


def _guard_parent_death(parent_pid: int, use_pdeathsig: bool) -> None:
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:            # the parent died before the guard was in place
        os._exit(70)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _load(body: bytes):
    loader, loader_args, parent_path = pickle.loads(body)
    sys.path[:] = list(parent_path) + [p for p in sys.path if p not in parent_path]
    module_name, _, attr = loader.partition(":")
    func: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        func = getattr(func, part)
    call = func(*loader_args)
    if not callable(call):
        raise TypeError(f"loader {loader!r} must return a callable call(payload), got {type(call).__qualname__}")
    return call


def _user_traceback(exc: BaseException) -> str:
    """The traceback without this module's own frame (the first one: the ``call(payload)`` line)."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _run_one(call, body: bytes, out: _Output, wire) -> tuple[dict, bytes, list]:
    """Run one call; return (meta, skeleton, data parts) of the answer (:mod:`.wire`)."""
    out.reset()
    meta = {"status": "ok", "error": "", "traceback": "", "output_tail": "", "seconds": 0.0}
    skeleton: bytes = b""
    parts: list = []
    try:
        payload = pickle.loads(body)
    except BaseException as exc:
        meta.update(status="error", error="the payload could not be unpickled in the worker: " + one_line(exc),
                    traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return meta, skeleton, parts
    t0 = time.perf_counter()
    value = raised = None
    try:
        value = call(payload)
    except BaseException as exc:       # SystemExit and KeyboardInterrupt included: each becomes a verdict
        raised = exc
    meta["seconds"] = time.perf_counter() - t0
    if isinstance(raised, SystemExit):
        meta.update(status="exit", error=f"sys.exit({raised.code!r})", traceback=_user_traceback(raised))
    elif raised is not None and getattr(type(raised), "wire_refusal", False) is True:   # the loader refused a value
        meta.update(status="error", error=one_line(raised))
    elif raised is not None:
        oom = isinstance(raised, MemoryError) or type(raised).__name__ == "OutOfMemoryError"
        meta.update(status="oom" if oom else "error", error=one_line(raised), traceback=_user_traceback(raised))
    else:
        try:                           # plain data only: never pickled, so no __reduce__ runs anywhere
            skeleton, parts = wire.encode(value)
        except BaseException as exc:
            meta.update(status="error", error=one_line(exc))
    del value, raised
    out.flush()
    meta["output_tail"] = read_tail(out.fd)
    return meta, skeleton, parts


def _import_wire():
    """wire.py next to this file, by path (this folder is not on sys.path), under a name of its own: a loader
    importing ``refimpl.harness.targets.wire`` gets a second copy (hence ``wire_refusal`` rather than isinstance)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_refimpl_worker_wire",
                                                  os.path.join(os.path.dirname(__file__), "wire.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module            # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    fd_in, fd_out, fd_fault, parent_pid = (int(a) for a in argv[:4])
    for fd in (fd_in, fd_out, fd_fault):
        os.set_inheritable(fd, False)         # a grandchild must not hold the channel open
    _guard_parent_death(parent_pid, argv[4] == "1")
    out = _Output()
    faulthandler.enable(file=fd_fault, all_threads=True)
    if hasattr(signal, "SIGUSR1"):            # the parent asks for the stack of a call it is about to kill
        faulthandler.register(signal.SIGUSR1, file=fd_fault, all_threads=True)

    wire = _import_wire()
    header = _read_exact(fd_in, HEADER.size)
    if header is None:
        return 0
    kind, _, size = HEADER.unpack(header)
    t0 = time.perf_counter()
    try:
        call = _load(_read_exact(fd_in, size) or b"")
    except BaseException as exc:
        out.flush()
        body = wire.dumps([one_line(exc), "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                           type(exc).__qualname__, str(exc)])
        _write_all(fd_out, frame(LOAD_FAILED, 0, body))
        return 0
    out.flush()
    _write_all(fd_out, frame(READY, 0, wire.dumps({"pid": os.getpid(), "load_seconds": time.perf_counter() - t0})))

    while True:
        header = _read_exact(fd_in, HEADER.size)
        if header is None:
            return 0
        kind, index, size = HEADER.unpack(header)
        body = _read_exact(fd_in, size)
        if body is None or kind != CALL:
            return 0
        meta, skeleton, parts = _run_one(call, body, out, wire)
        size, pieces = wire.answer(meta, skeleton, parts)
        _write_all(fd_out, HEADER.pack(ANSWER, index, size), *pieces)
        del parts, pieces
        if meta["status"] in ("exit", "oom"):  # the target's state is suspect: the parent starts a fresh child
            return 0


if __name__ == "__main__":
    exit_code = 0
    try:
        exit_code = main(sys.argv[1:])
    except BrokenPipeError:                    # the parent went away
        pass
    except BaseException:                      # a bug here, not in the target: leave its trace in the output
        traceback.print_exc()
        exit_code = 71
    finally:
        os._exit(exit_code)                    # skip the target's atexit handlers and non-daemon threads
