"""The parent's handle on one worker child (see :mod:`refimpl.harness.targets.worker`): spawn it over two pipes, move
frames without blocking, watch its liveness and resident memory, dump its stacks, kill its process group, reap.

The child runs ``_worker_child.py`` by path in a new session (its pid is its process-group id), with fd 0 on
/dev/null, fds 1 and 2 on one unlinked temp file and faulthandler writing to a second one. Liveness is read
with ``waitid(WNOWAIT)``, so the child is reaped only after ``killpg`` has reached its grandchildren.
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque

from . import _worker_child as proto
from ...heap import child_environment

_CHILD_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker_child.py")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (its grandchildren too), then reap the child; no-op once reaped."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, OSError):
        pass


def death_reason(returncode: int | None) -> str:
    """The ``error`` of a child that died without a result (``None``: it closed the channel but lived on)."""
    if returncode is None:
        return "the worker closed its result channel without a result"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (not sent by the harness: the kernel's OOM killer?)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"os._exit({returncode}) (or exit({returncode}) in C code): the worker died without a result"


class Child:
    """One child process and its channel: non-blocking frame I/O, liveness, memory, kill and reap."""

    def __init__(self, loader: str, loader_args: tuple, keep_freed: bool = False) -> None:
        self.out_file = tempfile.TemporaryFile(prefix="refimpl-worker-out-")
        self.fault_file = tempfile.TemporaryFile(prefix="refimpl-worker-stack-")
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        # our pipe ends as unbuffered file objects: close() is idempotent and garbage collection closes them
        self.requests, self.answers = open(req_w, "wb", buffering=0), open(ans_r, "rb", buffering=0)
        main = threading.current_thread() is threading.main_thread()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # the child line-buffers
        if keep_freed:                          # refimpl.heap's thresholds, by glibc's environment
            env = child_environment(env)
        argv = [sys.executable, _CHILD_SCRIPT, str(req_r), str(ans_w), str(self.fault_file.fileno()),
                str(os.getpid()), "1" if main else "0"]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out_file,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                         pass_fds=(req_r, ans_w, self.fault_file.fileno()))
        except BaseException:
            for f in (self.requests, self.answers, self.out_file, self.fault_file):
                f.close()
            raise
        finally:
            os.close(req_r)
            os.close(ans_w)
        self._finalizer = weakref.finalize(self, kill_group, self.proc)
        for fd in (req_w, ans_r):
            os.set_blocking(fd, False)
            try:
                import fcntl
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)    # fewer wake-ups for large arrays
            except (ImportError, AttributeError, OSError):
                pass
        self.outq: deque[memoryview] = deque()
        self.marks: deque[tuple[int, int]] = deque()            # (stream offset where a frame ends, index)
        self.queued = self.written = 0
        self.sent_at: dict[int, float] = {}
        self.inbuf = bytearray()
        self.eof = self.broken = False
        self.rss_at = 0.0              # when rss() last ran
        self.head_since = 0.0          # when the call at the head of the queue could start (set by the Worker)
        self.queue(proto.LOAD, 0, pickle.dumps((loader, tuple(loader_args), list(sys.path))))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def queue(self, kind: bytes, index: int, body: bytes) -> None:
        """Append one frame to the outgoing queue (``pump`` writes it)."""
        self.outq.append(memoryview(proto.HEADER.pack(kind, index, len(body))))
        self.outq.append(memoryview(body))
        self.queued += proto.HEADER.size + len(body)
        self.marks.append((self.queued, index))

    def pump(self, wait: float) -> list[tuple[bytes, int, bytes]]:
        """Wait up to ``wait`` s for I/O, write what the pipe takes, return the complete frames read."""
        wlist = [self.requests] if self.outq and not self.broken else []
        rlist = [] if self.eof else [self.answers]
        if rlist or wlist:
            readable, writable, _ = select.select(rlist, wlist, [], max(0.0, wait))
        else:
            readable, writable = [], []
            time.sleep(max(0.0, wait))
        if writable:
            self._write()
        if readable:
            self._read()
        return self._frames()

    def _write(self) -> None:
        try:
            while self.outq:
                n = os.write(self.requests.fileno(), self.outq[0])
                self.written += n
                self.outq[0] = self.outq[0][n:]
                if not self.outq[0]:
                    self.outq.popleft()
        except BlockingIOError:
            pass
        except (BrokenPipeError, OSError):     # the child is gone: its answers are still readable
            self.broken = True
            self.outq.clear()
        now = time.monotonic()
        while self.marks and self.marks[0][0] <= self.written:
            self.sent_at[self.marks.popleft()[1]] = now

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.answers.fileno(), 1 << 20)
            except BlockingIOError:
                return
            if not data:
                self.eof = True
                return
            self.inbuf += data

    def _frames(self) -> list[tuple[bytes, int, bytes]]:
        """The complete frames at the front of the read buffer, as (kind, index, body), removed from it. A body
        is a bytearray: the arrays :func:`.wire.decode` finds in it are writable views of it, not copies."""
        frames, pos, buf = [], 0, self.inbuf
        with memoryview(buf) as view:           # one copy per body, however large
            while len(buf) - pos >= proto.HEADER.size:
                kind, index, size = proto.HEADER.unpack_from(buf, pos)
                if kind not in proto.KINDS:     # garbage: hand it over at once rather than wait for `size` bytes
                    frames.append((kind, index, b""))
                    pos = len(buf)
                    break
                end = pos + proto.HEADER.size + size
                if len(buf) < end:
                    break
                frames.append((kind, index, bytearray(view[pos + proto.HEADER.size:end])))   # writable arrays
                pos = end
        if pos:
            del buf[:pos]
        return frames

    def exited(self) -> bool:
        """True once the child has exited; it is not reaped yet, so its pid and group stay valid for killpg."""
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        except AttributeError:                 # no waitid (not Linux)
            return self.proc.poll() is not None
        return info is not None

    def wait_exit(self, seconds: float) -> bool:
        """Up to ``seconds`` for the child to exit (EOF on the channel comes a moment before the exit)."""
        end = time.monotonic() + seconds
        while not self.exited():
            if time.monotonic() >= end:
                return False
            time.sleep(0.005)
        return True

    def finish(self) -> int | None:
        """After EOF or exit: reap the child; its return code, or None if it still ran 1 s later (then killed)."""
        exited = self.wait_exit(1.0)
        returncode = self.kill()
        return returncode if exited else None

    def rss(self, now: float) -> int | None:
        """Resident bytes of the child (None without /proc); ``now`` is remembered in ``rss_at``."""
        self.rss_at = now
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as f:
                return int(f.read().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return None

    def output_tail(self) -> str:
        return proto.read_tail(self.out_file.fileno())

    def stacks(self) -> str:
        """faulthandler's dump (fatal signal or SIGUSR1), without the child's own parent-watch thread."""
        try:
            text = os.pread(self.fault_file.fileno(), 1 << 20, 0).decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n\n".join(b for b in text.strip().split("\n\n") if "in _watch_parent" not in b)

    def kill(self, dump_stacks: bool = False) -> int | None:
        """Kill the process group (after a faulthandler dump if asked) and reap; return the return code."""
        if dump_stacks and hasattr(signal, "SIGUSR1") and not self.exited():
            try:
                os.kill(self.pid, signal.SIGUSR1)
                end, last = time.monotonic() + 0.25, -1
                while time.monotonic() < end:          # until the dump stops growing
                    size = os.fstat(self.fault_file.fileno()).st_size
                    if size and size == last:
                        break
                    last = size
                    time.sleep(0.02)
            except OSError:
                pass
        self._finalizer()                      # = kill_group(proc), once
        return self.proc.returncode

    def close(self, grace: float = 1.0) -> None:
        """EOF to the child (it exits), up to ``grace`` s for it, then kill the group and release everything."""
        self.requests.close()
        self.wait_exit(grace)
        self.kill()
        for f in (self.answers, self.out_file, self.fault_file):
            f.close()
