"""Misbehaving targets for tests/test_worker.py (importable with tests/support on sys.path).

``load(tag)`` returns ``call(payload)``; a payload is ``(behaviour, arg)``. Every call counts itself in
``CALLS`` (per process), so a test can see that a crashed child was replaced by a fresh one.
"""
import ctypes
import os
import subprocess
import sys
import threading
import time
import types

CALLS = 0


def _echo(arg, tag):
    return {"arg": arg, "pid": os.getpid(), "calls": CALLS, "tag": tag}


def _segv_on_call(arg, tag):
    """Segfault (a NULL read through ctypes) on this process's call number ``arg``; echo otherwise."""
    if CALLS == arg:
        print("about to segfault")
        ctypes.string_at(0)
    return _echo(arg, tag)


def _os_exit(arg, tag):
    print(f"leaving with os._exit({arg})")
    os._exit(arg)


def _sys_exit(arg, tag):
    sys.exit(arg)


def _hang(arg, tag):
    print("hanging")
    time.sleep(3600)


def _alloc(arg, tag):
    """Allocate and touch 8 MiB blocks without end."""
    blocks = []
    while True:
        blocks.append(b"\1" * (8 << 20))


def _print(arg, tag):
    """Print ``arg`` MB as 100-byte lines, then a marker line."""
    line = "y" * 99
    for _ in range(arg * 10_000):
        print(line)
    print("END-OF-PRINT")
    return "printed"


def _c_print_then_exit(arg, tag):
    """printf through C stdio (not Python's sys.stdout), then die without flushing anything."""
    ctypes.CDLL(None).printf(b"printed by C before dying\n")
    os._exit(arg)


def _unpicklable(arg, tag):
    return threading.Lock()


def _ghost(arg, tag):
    """An object whose class lives in a module that exists only in this process: pickles here, not in the parent."""
    mod = types.ModuleType("ghost_module_only_in_worker")
    mod.Ghost = type("Ghost", (), {"__module__": mod.__name__})
    sys.modules[mod.__name__] = mod
    return mod.Ghost()


def _raise(arg, tag):
    raise ValueError(f"bad input {arg!r}")


def _memory_error(arg, tag):
    raise MemoryError(f"cannot allocate {arg} bytes")


def _spawn_and_hang(arg, tag):
    """Start a grandchild (sleep 60), write its pid to the file ``arg``, then hang."""
    proc = subprocess.Popen(["sleep", "60"])
    with open(arg, "w") as f:
        f.write(str(proc.pid))
    time.sleep(3600)


def _matmul(arg, tag):
    q, k = arg
    return q @ k.T


def _double(arg, tag):
    return arg * 2


BEHAVIOURS = {f.__name__[1:]: f for f in (
    _echo, _segv_on_call, _os_exit, _sys_exit, _hang, _alloc, _print, _c_print_then_exit, _unpicklable, _ghost,
    _raise, _memory_error, _spawn_and_hang, _matmul, _double)}


def load(tag="plain"):
    print(f"loading {tag}")          # must not reach the parent's stdout either

    def call(payload):
        global CALLS
        CALLS += 1
        behaviour, arg = payload
        return BEHAVIOURS[behaviour](arg, tag)
    return call


def load_raises():
    raise ImportError("no kernel library here")


def load_not_callable():
    return 42


def load_dies():
    os._exit(9)


def load_importing(module_name):
    """Import ``module_name`` first (to measure what a loader's imports cost), then behave like load()."""
    __import__(module_name)
    return load(module_name)


def load_once(marker_path):
    """Load the first time only (a marker file records it): every restart of the worker fails."""
    if os.path.exists(marker_path):
        raise RuntimeError("the kernel library vanished")
    open(marker_path, "w").close()
    return load("once")


def _scribble(arg, tag):
    """Write garbage into the worker's own result channel (its fd number is argv[2] of the child)."""
    os.write(int(sys.argv[2]), b"\xff" * 40)
    return "scribbled"


BEHAVIOURS["scribble"] = _scribble
