"""refimpl.harness.targets.worker: hostile targets (tests/support/hostile_calls.py) become verdicts, the run goes on.

Every misbehaviour gets its status, the calls around it keep theirs, nothing reaches our stdout/stderr, and
no child, zombie or grandchild is left behind.
"""
import _thread
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from refimpl.harness.targets.worker import CallResult, Worker, WorkerLoadError

SUPPORT = str(Path(__file__).parent / "support")
ROOT = str(Path(__file__).parent.parent)
MiB = 1 << 20


@pytest.fixture(autouse=True)
def support_on_path(monkeypatch):
    monkeypatch.syspath_prepend(SUPPORT)      # the child gets the parent's sys.path


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def reaped(pid: int) -> bool:
    """No child of ours (running or zombie) has this pid."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def wait_until(predicate, seconds: float = 3.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.slow
def test_every_misbehaviour_gets_its_verdict_and_the_run_goes_on(capfd):
    payloads = [
        ("segv_on_call", 3), ("segv_on_call", 3), ("segv_on_call", 3),   # ok, ok, SIGSEGV on the 3rd call
        ("echo", "a"),
        ("os_exit", 0), ("echo", "b"), ("os_exit", 3), ("sys_exit", 4),
        ("hang", None), ("echo", "c"),
        ("alloc", None), ("print", 10), ("echo", "d"),
        ("unpicklable", None), ("echo", "e"), ("raise", 7), ("echo", "f"),
    ]
    expected = ["ok", "ok", "crash", "ok", "crash", "ok", "crash", "exit", "timeout", "ok",
                "oom", "ok", "ok", "error", "ok", "error", "ok"]
    seen = []
    t0 = time.monotonic()
    with Worker("hostile_calls:load", ("main",), timeout=2.0, max_memory=256 * MiB) as w:
        results = w.run(payloads, on_result=lambda i, r: seen.append(i))
        restarts = w.restarts
    elapsed = time.monotonic() - t0
    assert [r.status for r in results] == expected, [(r.status, r.error) for r in results]
    assert seen == list(range(len(payloads)))
    assert elapsed < 2.0 + 6.0, f"the run took {elapsed:.1f} s"
    assert restarts == 6                        # segv, os._exit(0), os._exit(3), sys.exit, timeout, oom

    ok = {i: r.value for i, r in enumerate(results) if r.status == "ok" and isinstance(r.value, dict)}
    assert [ok[i]["calls"] for i in (0, 1)] == [1, 2] and ok[0]["pid"] == ok[1]["pid"]
    assert ok[3]["calls"] == 1 and ok[3]["pid"] != ok[0]["pid"]    # a fresh child after the crash
    assert ok[3]["tag"] == "main"                                   # the loader ran again, with its args
    assert ok[5]["pid"] != ok[3]["pid"] and ok[9]["pid"] != ok[5]["pid"]
    assert ok[12]["pid"] == ok[14]["pid"] == ok[16]["pid"]          # "error" does not replace the child

    errors = [r.error for r in results]
    assert errors[2] == "killed by SIGSEGV"
    assert errors[4].startswith("os._exit(0)") and errors[6].startswith("os._exit(3)")
    assert errors[7] == "sys.exit(4)"
    assert errors[8] == "timeout after 2.0 s" and 2.0 <= results[8].seconds < 3.0
    assert errors[10].startswith("memory above 256 MiB")
    assert errors[13].startswith("UnsupportedResult: the call returned a _thread.lock")     # refused in the child
    assert errors[15] == "ValueError: bad input 7"
    assert results[11].value == "printed" and results[11].seconds < 5.0

    out, err = capfd.readouterr()
    for text in ("about to segfault", "os._exit", "hanging", "yyyy", "END-OF-PRINT", "loading main"):
        assert text not in out and text not in err


def test_output_tail_holds_the_last_lines_of_that_call_only():
    with Worker("hostile_calls:load", timeout=10.0) as w:
        printed, after = w.run([("print", 3), ("echo", 1)])
    lines = printed.output_tail.splitlines()
    assert len(lines) == 20 and lines[-1] == "END-OF-PRINT" and lines[0] == "y" * 99
    assert after.output_tail == ""


def test_crash_and_timeout_keep_the_output_and_the_stack():
    with Worker("hostile_calls:load", timeout=1.0) as w:
        segv, hang, c_exit = w.run([("segv_on_call", 1), ("hang", None), ("c_print_then_exit", 5)])
    assert segv.status == "crash" and "about to segfault" in segv.output_tail
    assert "_segv_on_call" in segv.traceback and "_watch_parent" not in segv.traceback
    assert hang.status == "timeout" and hang.output_tail == "hanging" and "in _hang" in hang.traceback
    assert c_exit.status == "crash" and c_exit.error.startswith("os._exit(5)")
    assert "printed by C before dying" in c_exit.output_tail      # C stdio is line-buffered in the child


def test_memory_error_counts_as_oom_and_replaces_the_child():
    with Worker("hostile_calls:load", timeout=5.0) as w:
        before, oom, after = w.run([("echo", 0), ("memory_error", 10 ** 12), ("echo", 1)])
    assert oom.status == "oom" and oom.error == "MemoryError: cannot allocate 1000000000000 bytes"
    assert "_memory_error" in oom.traceback
    assert before.value["pid"] != after.value["pid"] and after.value["calls"] == 1


def test_unpicklable_payload_and_results_are_errors_without_a_restart():
    with Worker("hostile_calls:load", timeout=5.0) as w:
        rs = w.run([("echo", 0), ("echo", lambda: 0), ("ghost", None), ("unpicklable", None), ("echo", 1)])
    assert [r.status for r in rs] == ["ok", "error", "error", "error", "ok"]
    assert rs[1].error.startswith("the payload (tuple) cannot be pickled")
    assert rs[2].error.startswith("UnsupportedResult: the call returned a ghost_module_only_in_worker.Ghost")
    assert "_thread.lock" in rs[3].error
    assert rs[4].value["pid"] == rs[0].value["pid"]
    assert rs[4].value["calls"] == 4            # the unpicklable payload never reached the child


def test_a_corrupted_result_channel_is_a_crash_not_a_harness_error():
    with Worker("hostile_calls:load", timeout=5.0) as w:
        rs = w.run([("echo", 0), ("scribble", None), ("echo", 1)])
    assert [r.status for r in rs] == ["ok", "crash", "ok"]
    assert rs[1].error.startswith("the worker's result channel was corrupted")


def test_numpy_arrays_travel_both_ways():
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 4)).astype(np.float32)
    k = rng.standard_normal((5, 4)).astype(np.float32)
    big = rng.standard_normal((512, 512))                        # 2 MiB each way, 24 calls, 4 in flight
    with Worker("hostile_calls:load", timeout=20.0, batch=4) as w:
        rs = w.run([("matmul", (q, k))] + [("double", big + i) for i in range(24)])
    assert all(r.status == "ok" for r in rs), {r.status for r in rs}
    assert rs[0].value.dtype == np.float32 and rs[0].value.shape == (3, 5)
    np.testing.assert_array_equal(rs[0].value, q @ k.T)
    for i, r in enumerate(rs[1:]):
        np.testing.assert_array_equal(r.value, 2 * (big + i))


@pytest.mark.parametrize("loader, message, in_traceback", [
    ("hostile_calls:load_raises", "ImportError: no kernel library here", "load_raises"),
    ("no_such_module_xyz:load", "ModuleNotFoundError: No module named 'no_such_module_xyz'", ""),
    ("hostile_calls:not_there", "AttributeError", ""),
    ("hostile_calls:load_not_callable", "must return a callable call(payload), got int", ""),
    ("hostile_calls:load_dies", "died while loading 'hostile_calls:load_dies': os._exit(9)", ""),
])
def test_a_broken_loader_is_a_load_error(loader, message, in_traceback):
    w = Worker(loader, timeout=5.0)
    with pytest.raises(WorkerLoadError) as info:
        w.start()
    assert message in info.value.message and in_traceback in info.value.traceback
    assert w.pid is None


def test_a_failed_restart_turns_the_remaining_payloads_into_errors(tmp_path):
    with Worker("hostile_calls:load_once", (str(tmp_path / "loaded"),), timeout=5.0) as w:
        rs = w.run([("echo", 0), ("os_exit", 1), ("echo", 1), ("echo", 2)])
    assert [r.status for r in rs] == ["ok", "crash", "error", "error"]
    assert rs[2].error.startswith("the worker could not be restarted") and "vanished" in rs[2].error


@pytest.mark.parametrize("kwargs, message", [
    ({"loader": "hostile_calls.load"}, "loader must be 'package.module:function'"),
    ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ({"start_timeout": float("nan")}, "start_timeout must be a positive number of seconds"),
    ({"max_memory": -1}, "max_memory must be a positive number of bytes or None, got -1"),
    ({"batch": 0}, "batch must be an integer >= 1, got 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    kwargs = {"loader": "hostile_calls:load", **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Worker(kwargs.pop("loader"), **kwargs)


def test_default_memory_limit_is_half_the_ram():
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    assert Worker("hostile_calls:load").max_memory == kib * 1024 // 2


def test_an_empty_run_starts_nothing():
    w = Worker("hostile_calls:load")
    assert w.run([]) == [] and w.pid is None


def test_keyboard_interrupt_kills_the_child():
    w = Worker("hostile_calls:load", timeout=30.0)
    w.start()
    pid = w.pid
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        w.run([("echo", 0), ("hang", None)])
    timer.join()
    assert time.monotonic() - t0 < 3.0
    assert reaped(pid) and not running(pid) and w.pid is None
    assert w.run([("echo", 1)])[0].status == "ok"                 # the next run starts a new child
    w.close()


def test_timeout_kills_grandchildren_and_close_reaps_the_child(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    with Worker("hostile_calls:load", timeout=1.0) as w:
        r = w.run([("spawn_and_hang", str(pid_file))])[0]
        assert w.run([("echo", 0)])[0].status == "ok"          # a new child, reaped by close()
        child = w.pid
    assert r.status == "timeout"
    grandchild = int(pid_file.read_text())
    assert wait_until(lambda: not running(grandchild)), "the target's own child survived the timeout"
    assert reaped(child) and not running(child)


def python_with_worker(code: str) -> list[str]:
    """argv running ``code`` after ``from refimpl.harness.targets.worker import Worker`` in a fresh interpreter."""
    return [sys.executable, "-c", f"import sys; sys.path[:0] = [{ROOT!r}, {SUPPORT!r}]\n"
                                  f"from refimpl.harness.targets.worker import Worker\n{code}"]


def test_nothing_reaches_a_piped_stdout_or_stderr():
    code = ("w = Worker('hostile_calls:load', timeout=5)\n"
            "rs = w.run([('print', 1), ('segv_on_call', 2), ('c_print_then_exit', 0), ('raise', 1)])\n"
            "w.close()\nprint('statuses', *[r.status for r in rs])\n")
    done = subprocess.run(python_with_worker(code), capture_output=True, text=True, timeout=60)
    assert (done.stdout, done.stderr) == ("statuses ok crash crash error\n", "")


def test_the_child_dies_with_its_parent():
    code = ("w = Worker('hostile_calls:load', timeout=60)\nw.start()\nprint(w.pid, flush=True)\n"
            "w.run([('hang', None)])\n")
    parent = subprocess.Popen(python_with_worker(code), stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(parent.stdout.readline())
        assert running(child)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: not running(child)), "the worker outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        if child is not None and running(child):
            os.kill(child, 9)                  # do not leave an orphan behind when this test fails


def test_a_worker_started_in_a_short_lived_thread_outlives_that_thread():
    w = Worker("hostile_calls:load", timeout=5.0)
    starter = threading.Thread(target=w.start)
    starter.start()
    starter.join()
    pid = w.pid
    time.sleep(0.2)
    r = w.run([("echo", 0)])[0]
    w.close()
    assert isinstance(r, CallResult) and r.status == "ok" and r.value["pid"] == pid
