"""When to stop calling a user target, and how long one call may take: the rules a worker-backed target
(:mod:`.isolation`) asks before each call and tells after it.

* **Deadline** (``--deadline``, the whole run): past it, no call is made; each one not made is that case's
  ``not run`` (no verdict: the run is incomplete, not non-conformant), "not called: the run's --deadline of D
  passed".
* **In a row**: 3 calls of one kind (forward, backward) in a row ending in ``timeout`` (or ``oom``) stop that
  kind: each cost up to the per-call limit.
* **Rate**: a target whose calls die (``crash``, ``exit``, ``timeout``, ``oom``) at a high rate is stopped
  even when ok calls come between the deaths (a kernel that segfaults on every 3rd call): once at least
  ``RATE_MIN_DEATHS`` of the last ``RATE_WINDOW`` calls died and they are at least ``RATE`` of those calls.
  A correct kernel's calls do not die, so neither rule can stop one; a kernel that dies once in a while
  (below the rate) keeps being called.
* **Per-call limit**: an explicit ``--timeout`` is a fixed limit. Without it the limit adapts: at most
  ``DEFAULT_TIMEOUT`` (60 s), and once ``ADAPT_AFTER`` calls have come back ok, at most
  ``ADAPT_FACTOR`` x the time the slowest of them would take on this call's work (the arrays' sizes), but
  never under ``ADAPT_FLOOR``; a hang is then found in seconds, not in a minute per call, while a correct
  kernel would have to run 20x slower than its own slowest call so far, and past 5 s, to be cut.
  The adaptive limit is a guess, so it must prove itself once: the first call it cuts is made again with
  ``DEFAULT_TIMEOUT`` (:meth:`CallPolicy.retry`). If that call comes back, the guess was wrong (a pause,
  a busy machine, a size the work measure misjudged) and the limit is ``DEFAULT_TIMEOUT`` for the rest of the
  run; if it times out again, the guess stands and later cuts are verdicts at once. Only the call's final
  status counts toward the stop rules.
"""
from __future__ import annotations

import time
from collections import deque

from ..cases import TargetDied

__all__ = ["CallPolicy", "DEFAULT_TIMEOUT", "work_of"]

DEFAULT_TIMEOUT = 60.0
ADAPT_AFTER, ADAPT_FACTOR, ADAPT_FLOOR = 1, 20.0, 5.0
GIVE_UP_AFTER = 3
RATE, RATE_MIN_DEATHS, RATE_WINDOW = 0.2, 3, 30
DIED = frozenset({"crash", "exit", "timeout", "oom"})
COSTLY = frozenset({"timeout", "oom"})


def _arrays(x, out: list) -> list:
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        out.append(x)
    elif isinstance(x, (tuple, list)):
        for y in x:
            _arrays(y, out)
    elif isinstance(x, dict):
        for y in x.values():
            _arrays(y, out)
    return out


def work_of(args, kwargs) -> float:
    """A size of one call's work, for scaling time: q's size x k's size / D (B H Sq Sk D, over-counting by
    B H) plus every array's size, from the first two arrays among the arguments (q, k in every API)."""
    arrays = _arrays([list(args), dict(kwargs or {})], [])
    sizes = [float(_size(a)) for a in arrays]
    if len(arrays) >= 2 and len(arrays[0].shape) >= 1:
        return sizes[0] * sizes[1] / max(1, int(arrays[0].shape[-1])) + sum(sizes) + 1.0
    return sum(sizes) + 1.0


def _size(a) -> int:
    n = 1
    for d in a.shape:
        n *= int(d)
    return n


class CallPolicy:
    """The stop rules and the per-call limit for one user target (one worker)."""

    def __init__(self, timeout: float | None, deadline: float | None = None, deadline_text: str = ""):
        """``timeout``: the fixed per-call limit (``--timeout``), or None to adapt; ``deadline``: the
        ``time.monotonic()`` after which nothing is called (None: none), named ``deadline_text`` in verdicts."""
        self.fixed = timeout
        self.deadline, self.deadline_text = deadline, deadline_text
        self.in_a_row: dict[str, tuple[str, int]] = {}
        self.recent: dict[str, deque] = {}
        self.rate_seen = 0.0                       # the slowest ok call's seconds per unit of work
        self.adaptive = "unproven"                 # "unproven" -> "confirmed" (a cut call hung at the default
        #                                            limit too) or "off" (a cut call came back: default from then)

    def limit(self, work: float | None) -> float:
        """The per-call limit for a call of this ``work`` (None: not a single case's call), in seconds."""
        if self.fixed is not None:
            return self.fixed
        if work is None:
            return DEFAULT_TIMEOUT
        ok = sum(1 for d in self.recent.values() for s in d if s == "ok")
        if ok < ADAPT_AFTER or self.rate_seen <= 0 or self.adaptive == "off":
            return DEFAULT_TIMEOUT
        return min(DEFAULT_TIMEOUT, max(ADAPT_FLOOR, ADAPT_FACTOR * self.rate_seen * work))

    def retry(self, limit: float) -> bool:
        """Whether a call cut at ``limit`` is made again with ``DEFAULT_TIMEOUT``: only while the adaptive limit
        is unproven, and only when it was the adaptive limit that cut it."""
        return self.fixed is None and self.adaptive == "unproven" and limit < DEFAULT_TIMEOUT

    def retried(self, status: str) -> None:
        """What the retry of a cut call came to: ``timeout`` again confirms the adaptive limit; else it is off."""
        self.adaptive = "confirmed" if status == "timeout" else "off"

    def refuse(self, kind: str) -> TargetDied | None:
        """Why the next call of ``kind`` ("call", "grad", ...) is not made, or None to make it."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return TargetDied("not run", f"not called: the run's --deadline of {self.deadline_text} passed")
        status, n = self.in_a_row.get(kind, ("", 0))
        if n >= GIVE_UP_AFTER:
            return TargetDied(status, f"not called: the last {n} calls ended in '{status}'")
        recent = self.recent.get(kind, ())
        died = [s for s in recent if s in DIED]
        if len(died) >= RATE_MIN_DEATHS and len(died) >= RATE * len(recent):
            worst = max(set(died), key=died.count)
            return TargetDied("crash" if worst == "exit" else worst,
                              f"not called: {len(died)} of its last {len(recent)} calls died "
                              f"({', '.join(sorted(set(died)))}): the target is stopped at a death rate >= "
                              f"{RATE:.0%}")
        return None

    def record(self, kind: str, status: str, seconds: float, work: float | None) -> None:
        """What one call of ``kind`` came to: its worker status ("ok", "error", "crash", ...) and time."""
        status_before, n = self.in_a_row.get(kind, ("", 0))
        self.in_a_row[kind] = (status, n + 1 if status_before == status else 1) if status in COSTLY else ("", 0)
        self.recent.setdefault(kind, deque(maxlen=RATE_WINDOW)).append(status)
        if status == "ok" and seconds > 0 and work is not None:
            self.rate_seen = max(self.rate_seen, seconds / work)
