"""Targets that misbehave on every 3rd call, counted across worker restarts ("refimpl" API, NEVER in-process).

Signature ``fn(q, k, v, mask=None, scale=None)``; calls 1 and 2 of each 3 return the correct output (refimpl's
hostile._attention), the 3rd segfaults, calls ``os._exit(0)``, ``sys.exit(3)``, hangs, or allocates without end.
The count lives in the file named by the environment variable ``PERIODIC_COUNTER`` (one integer), so a
replaced worker process goes on counting where its predecessor died.
"""
import ctypes
import importlib.util
import os
import sys
import time

_HOSTILE = os.path.join(os.path.dirname(__file__), "hostile.py")
_spec = importlib.util.spec_from_file_location("periodic_hostile", _HOSTILE)
_hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_hostile)
_attention = _hostile._attention          # the correct output, as every hostile target computes it


def _third() -> bool:
    """Count this call; True on every 3rd."""
    path = os.environ["PERIODIC_COUNTER"]
    try:
        with open(path) as f:
            n = int(f.read() or 0) + 1
    except FileNotFoundError:
        n = 1
    with open(path, "w") as f:
        f.write(str(n))
    return n % 3 == 0


def segfault_every_3rd(q, k, v, mask=None, scale=None):
    if _third():
        ctypes.string_at(0)
    return _attention(q, k, v, mask, scale)[0]


def os_exit_every_3rd(q, k, v, mask=None, scale=None):
    if _third():
        os._exit(0)
    return _attention(q, k, v, mask, scale)[0]


def sys_exit_every_3rd(q, k, v, mask=None, scale=None):
    if _third():
        sys.exit(3)
    return _attention(q, k, v, mask, scale)[0]


def hang_every_3rd(q, k, v, mask=None, scale=None):
    if _third():
        time.sleep(3600)
    return _attention(q, k, v, mask, scale)[0]


def hog_every_3rd(q, k, v, mask=None, scale=None):
    if _third():
        hoard = []
        while True:
            hoard.append(bytearray(64 * 2 ** 20))   # touched: resident, 64 MiB at a time
            hoard[-1][::4096] = b"x" * len(range(0, 64 * 2 ** 20, 4096))
    return _attention(q, k, v, mask, scale)[0]


def slow_start_correct(q, k, v, mask=None, scale=None):
    """Correct, and slower on bigger cases in proportion to their work: the adaptive limit must not cut it."""
    out = _attention(q, k, v, mask, scale)[0]
    time.sleep(min(2.0, out.size * k.shape[-2] * 2e-7))
    return out


def pauses_on_the_3rd(q, k, v, mask=None, scale=None):
    """Correct; its 3rd call (only) pauses for PERIODIC_PAUSE seconds (a GC pause, a busy machine): the adaptive
    limit may cut that call, and its retry at the default limit must come back with the right output."""
    if _third() and not os.path.exists(os.environ["PERIODIC_COUNTER"] + ".paused"):
        open(os.environ["PERIODIC_COUNTER"] + ".paused", "w").close()
        time.sleep(float(os.environ.get("PERIODIC_PAUSE", "1")))
    return _attention(q, k, v, mask, scale)[0]
