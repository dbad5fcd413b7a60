"""The check's progress line: cases done of all, failures so far, the time left, the row being run.

On a terminal it is one line on stderr, rewritten in place (``\\r``) at most 10 times a second and closed with
a newline at the end; elsewhere (CI, a pipe, ``CI=true``) it is a plain line every few seconds. ``--quiet``:
nothing. A case is one family case on one target, or one whole row (fixture, vignette, R rows) on one target.

    [ 1,234/4,928] 2 failed  12.3 s, ~8 s left  family:decode x mine.py:attn
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

__all__ = ["Progress"]

PLAIN_EVERY = 5.0            # seconds between plain lines
LIVE_EVERY = 0.1             # seconds between rewrites on a terminal
QUIET_FIRST = 1.0            # nothing before this: a run that short needs no progress


class Progress:
    """``progress(msg)`` (the pipeline's messages: the row being run) and ``progress.tick(done, total, failed)``."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        if live is None:
            live = bool(getattr(self.stream, "isatty", lambda: False)()) and os.environ.get("CI", "") in ("", "0")
        self.live = live
        self.t0 = time.perf_counter()
        self.done = self.total = self.failed = 0
        self.base = (0, 0)
        self.row = ""
        self.last = -1e9
        self.open = False                    # a live line is on the screen (close() ends it)

    def __call__(self, msg: str) -> None:
        self.row = msg.split(" ...")[0].split(": ")[0].split("] ", 1)[-1]
        self._show()

    def tick(self, done: int, total: int, failed: int) -> None:
        """After a row on a target: ``done`` of ``total`` cases, ``failed`` of them failed."""
        self.done, self.total, self.failed = done, total, failed
        self.base = (done, failed)
        self._show()

    def partial(self, done: int, failed: int) -> None:
        """Inside a family row: ``done`` of its cases so far, ``failed`` of them failed."""
        self.done, self.failed = self.base[0] + done, self.base[1] + failed
        self._show()

    def line(self) -> str:
        now = time.perf_counter() - self.t0
        left = ""
        if 0 < self.done < self.total:
            left = f", ~{now / self.done * (self.total - self.done):.0f} s left"
        width = len(f"{self.total:,}")
        return (f"[{self.done:>{width},}/{self.total:,}] {self.failed} failed  {now:.1f} s{left}  {self.row}")[:150]

    def _show(self) -> None:
        if self.quiet:
            return
        now = time.perf_counter() - self.t0
        if now < QUIET_FIRST or now - self.last < (LIVE_EVERY if self.live else PLAIN_EVERY):
            return
        self.last = now
        if self.live:                             # one line: never wider than the terminal (a wrap would trail)
            self.stream.write("\r" + self.line()[:max(20, shutil.get_terminal_size().columns - 1)] + "\x1b[K")
            self.open = True
        else:
            self.stream.write("  " + self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the live line (the report follows on stdout)."""
        if self.open:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()
            self.open = False
