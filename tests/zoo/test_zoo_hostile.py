"""Checks that the hostile zoo targets (hostile.py) really misbehave as their CATALOG says.

Each one runs in a child process (never in this one): a small driver loads hostile.py by path, calls the target
on a 3 x 4 / 5 x 4 / 5 x 2 case and reports on stderr (stdout belongs to the target) one JSON line per call:
{"call": n, "type": result type, "close": result equals the textbook formula} or {"call": n, "raised": name}.
"""
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HOSTILE = Path(__file__).with_name("hostile.py")
DRIVER = r"""
import importlib.util, json, sys
import numpy as np
path, fn_name, calls, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
spec = importlib.util.spec_from_file_location("hostile", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
rng = np.random.default_rng(0)
Sq = 5 if shape == "square" else 3
q, k, v = rng.standard_normal((Sq, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
mask = np.ones((Sq, 5), bool) if shape == "masked" else None
s = q @ k.T / 2.0                                       # D = 4: scale 1/2
e = np.exp(s - s.max(axis=1, keepdims=True))
ref = (e / e.sum(axis=1, keepdims=True)) @ v
if fn_name == "alloc":                                  # cap the address space ~300 MB above what is mapped now
    import resource
    vm = int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize")][0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + 300 * 2**20, vm + 300 * 2**20))
for n in range(1, calls + 1):
    try:
        r = getattr(mod, fn_name)(q, k, v, mask=mask)
        try:
            close = bool(np.shape(r) == ref.shape and np.allclose(np.asarray(r, float), ref, atol=1e-12))
        except (TypeError, ValueError):
            close = False
        report = {"call": n, "type": type(r).__name__, "close": close}
    except Exception as exc:
        report = {"call": n, "raised": type(exc).__name__}
    sys.stderr.write(json.dumps(report) + "\n")
    sys.stderr.flush()
"""


def run_hostile(fn, calls=1, shape="rect", timeout=30, stdout=subprocess.DEVNULL):
    """(returncode, [report dicts]) of a child running `fn`; returncode None when it was killed on timeout."""
    def no_core_dumps():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(HOSTILE), fn, str(calls), shape], stdout=stdout,
                            stderr=subprocess.PIPE, text=True, preexec_fn=no_core_dumps)
    try:
        _, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        code = None
    return code, [json.loads(line) for line in err.splitlines() if line.startswith("{")]


OK = {"type": "ndarray", "close": True}


def test_segfault_is_correct_twice_then_dies_by_sigsegv():
    code, reports = run_hostile("segfault", calls=3)
    assert code == -signal.SIGSEGV
    assert reports == [{"call": 1, **OK}, {"call": 2, **OK}]


@pytest.mark.parametrize("fn, expected_code", [("exit_zero", 0), ("exit_nonzero", 3), ("sys_exit", 4)])
def test_exits_end_the_process_without_a_result(fn, expected_code):
    code, reports = run_hostile(fn)
    assert (code, reports) == (expected_code, [])     # SystemExit is no Exception: the driver never reports


def test_hang_never_returns():
    code, reports = run_hostile("hang", timeout=1.5)
    assert (code, reports) == (None, [])


def test_alloc_runs_into_the_memory_limit():
    code, reports = run_hostile("alloc")
    assert (code, reports) == (0, [{"call": 1, "raised": "MemoryError"}])


def test_chatty_floods_stdout_then_returns_the_right_output(tmp_path):
    with open(tmp_path / "stdout.txt", "w") as out:
        code, reports = run_hostile("chatty", stdout=out)
    assert (code, reports) == (0, [{"call": 1, **OK}])
    assert (tmp_path / "stdout.txt").stat().st_size >= 50 * 2**20


@pytest.mark.parametrize("fn, shape, expected", [
    ("returns_list", "rect", {"type": "list", "close": True}),
    ("returns_dict", "rect", {"type": "dict", "close": False}),
    ("returns_none", "rect", {"type": "NoneType", "close": False}),
    ("returns_wrong_shape", "rect", {"type": "ndarray", "close": False}),
    ("returns_string", "rect", {"type": "str", "close": False}),
    ("raises_not_implemented", "masked", {"raised": "NotImplementedError"}),
    ("raises_not_implemented", "rect", OK),
    ("raises_value_error", "rect", {"raised": "ValueError"}),
    ("raises_value_error", "square", OK),
])
def test_misbehaving_returns_and_raises(fn, shape, expected):
    code, reports = run_hostile(fn, shape=shape)
    assert (code, reports) == (0, [{"call": 1, **expected}])
