"""Issue #27 item 2, no pickle across the boundary: what a worker's child sends back is plain data
(refimpl.harness.targets.wire), so a hostile return value cannot run code in the judge, and a user's
array class, a bfloat16 tensor, a tuple and a gradients dict arrive as what they were (bitwise); anything else is
refused in the child, naming its type.

Hostile values run only in subprocesses of this test: a regression that unpickled them here would end pytest itself.
"""
import json
import math
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.targets.isolation import IsolatedFunction
from refimpl.harness.target_spec import Target, load_function, load_target
from refimpl.harness.targets.worker import Worker

ROOT = Path(__file__).resolve().parents[1]
STORE = CaseStore()
SIZES = select(["sizes"], "quick", ("float64", "float32"))

ATTENTION = '''
import numpy as np


def _attention(q, k, v, mask=None, scale=None):
    s = (q @ np.swapaxes(k, -1, -2)) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True) @ v
'''


def _module(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(ATTENTION + textwrap.dedent(body))
    return path


def _verdicts(report: dict, target: str) -> list[tuple[str, str, str]]:
    """(row or case id, status, detail) of every verdict of ``target`` in a JSON report (a row's cases, if any)."""
    out = []
    for row in report["cases"]:
        res = row["results"][target]
        cases = [(c["id"], c["status"], c["detail"]) for c in res["cases"]]
        out += cases or [(row["id"], res["status"], res["detail"])]
    return out


@pytest.mark.slow
def test_a_result_whose_unpickling_exits_is_refused_in_the_child_and_the_judge_goes_on(tmp_path):
    pickled, unpickled = tmp_path / "pickled", tmp_path / "unpickled"
    path = _module(tmp_path, "exiting_result", f'''
        import os

        CALLS = 0


        class Exiter:
            """Pickling it leaves a flag file; unpickling it leaves another, then os._exit(0) in that process."""
            def __reduce__(self):
                with open({str(pickled)!r}, "w") as f:
                    f.write(str(os.getpid()))
                return (exec, ("import os; open({str(unpickled)!r}, 'w').write(str(os.getpid())); os._exit(0)",))


        def attention(q, k, v, mask=None, scale=None):
            global CALLS
            CALLS += 1
            return Exiter() if CALLS == 3 else _attention(q, k, v, mask, scale)
        ''')
    spec = f"{path}:attention"
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--random", "0", "--quiet", "--format", "json",
                        "--family", "sizes", "--suite", "quick", "--timeout", "60", "--target", spec, "--only", spec],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 1, (p.returncode, p.stdout[-500:], p.stderr[-1500:])     # it was 0, with no output
    verdicts = _verdicts(json.loads(p.stdout), spec)
    errors = [v for v in verdicts if v[1] == "error"]
    assert len(errors) == 1, errors
    assert "TypeError: the target returned a " in errors[0][2] and ".Exiter;" in errors[0][2], errors[0]
    assert "only plain data" in errors[0][2]
    rest = [v for v in verdicts if v is not errors[0]]
    assert {s for _, s, _ in rest} <= {"pass", "skip"} and sum(s == "pass" for _, s, _ in rest) > 10, rest
    assert not unpickled.exists(), "the judge unpickled the result"
    assert not pickled.exists(), "the worker pickled the result (its __reduce__ ran)"


def test_the_parent_never_unpickles_an_answer(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("the parent unpickled something the child sent")
    for name in ("loads", "load"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(np, "load", refuse)
    _loader(monkeypatch, tmp_path)
    with Worker("boundary_calls:load", timeout=30) as w:
        rs = w.run([("echo", (np.arange(3.0), {"a": None})), ("thing", None), ("fine", None)])
    assert [r.status for r in rs] == ["ok", "error", "ok"], [(r.status, r.error) for r in rs]
    assert rs[2].value == "fine"
    np.testing.assert_array_equal(rs[0].value[0], np.arange(3.0))


@pytest.mark.parametrize("ret, kind", [("out.view(UserArray)", "an ndarray subclass of the user's module"),
                                       ("_memmap(out)", "np.memmap")])
def test_a_user_array_subclass_or_memmap_passes_isolated_as_a_plain_array(tmp_path, ret, kind):
    path = _module(tmp_path, "user_arrays", f'''
        import tempfile


        class UserArray(np.ndarray):
            """Exists in the user's module only: the judge's process never imports it."""
            def __array_finalize__(self, obj):
                self.note = getattr(obj, "note", "mine")


        def _memmap(out):
            m = np.memmap(tempfile.TemporaryFile(), dtype=out.dtype, mode="w+", shape=out.shape)
            m[...] = out
            return m


        def attention(q, k, v, mask=None, scale=None):
            out = _attention(q, k, v, mask, scale)
            return {ret}
        ''')
    fn = IsolatedFunction(f"{path}:attention", timeout=60, check="refimpl")
    try:
        q, k, v = np.ones((1, 2, 3, 4)), np.ones((1, 2, 5, 4)), np.ones((1, 2, 5, 6))
        got = fn(q, k, v)
        assert type(got) is np.ndarray and got.flags.writeable and got.shape == (1, 2, 3, 6), kind
        results = [run_one(Target("user", fn), s, STORE) for s in SIZES]
    finally:
        fn.close()
    assert {r.status for r in results} == {Status.PASS}, [(r.id, r.status, r.detail) for r in results[:3]]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_16_bit_torch_tensor_keeps_its_dtype_name_and_values_through_the_boundary(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    from refimpl.harness.apis import call
    path = _module(tmp_path, f"tensors_{dtype}", f'''
        import torch


        def attention(q, k, v, mask=None, scale=None):    # NumPy in, a {dtype} tensor out
            return torch.from_numpy(_attention(q, k, v, mask, scale)).to(torch.{dtype})
        ''')
    spec = f"{path}:attention"
    fn = IsolatedFunction(spec, timeout=60, check="refimpl")
    try:
        data = STORE.get(next(s for s in SIZES if s.dtype == "float32" and s.Sq > 1))
        raw = fn(data.q, data.k, data.v)
        isolated = call(fn, "refimpl", data)
    finally:
        fn.close()
    here = call(load_function(spec), "refimpl", data)                            # --no-isolation
    assert isinstance(raw, torch.Tensor) and raw.dtype == getattr(torch, dtype)
    assert isolated.dtype == here.dtype == dtype
    assert isolated.output.tobytes() == here.output.tobytes()


def _loader(monkeypatch, tmp_path: Path) -> None:
    """tests a Worker on boundary_calls.load (in tmp_path, on the child's sys.path through ours)."""
    (tmp_path / "boundary_calls.py").write_text(textwrap.dedent('''
        import os
        import numpy as np


        class Thing:
            pass


        class ArrayLike:                       # the array protocol without being an ndarray (as JAX arrays)
            def __array__(self, dtype=None):
                return np.arange(4, dtype=np.int16)


        def awkward():
            """Bits that must survive: NaN payloads, -0.0, infinities, subnormals, 16-bit and odd dtypes."""
            nan = np.array([0x7FF8000000000123, 0xFFF0000000000001], np.uint64).view(np.float64)
            f64 = np.concatenate([nan, [-0.0, 0.0, np.inf, -np.inf, 5e-324, math_pi()]])
            with np.errstate(invalid="ignore"):
                f32 = f64.astype(np.float32)
            return {
                "f64": f64, "f32": f32, "f16": np.array([-0.0, np.nan, 6e-8], np.float16),
                "c128": np.array([complex(-0.0, np.nan)]), "i8": np.arange(-4, 4, dtype=np.int8),
                "u64": np.array([2 ** 64 - 1], np.uint64), "bool": np.array([[True], [False]]),
                "big_endian": np.arange(3, dtype=">f8"), "F_order": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
                "strided": np.arange(10.0)[::3], "empty": np.zeros((2, 0, 3)), "zero_d": np.array(-0.0),
                "scalars": (np.float32(-0.0), np.int64(-7), np.float64("nan")), "dt": np.array([1, 2], "M8[ns]"),
                "python": [float("nan"), -0.0, float("inf"), 2 ** 80, 1 + 2j, b"\\x00\\xff", "\\udcff", True, None],
                1: "an int key", (2, "a"): "a tuple key",
            }


        def math_pi():
            return 3.141592653589793


        def load():
            def call(payload):
                kind, arg = payload
                if kind == "echo":
                    return arg
                if kind == "awkward":
                    return awkward()
                if kind == "thing":
                    return Thing()
                if kind == "nested_thing":
                    return (np.zeros(2), {"dq": [1, Thing()]})
                if kind == "set":
                    return {1, 2}
                if kind == "function":
                    return load
                if kind == "generator":
                    return (i for i in range(3))
                if kind == "objects":
                    return np.array([1, "a"], dtype=object)
                if kind == "array_like":
                    return ArrayLike()
                if kind == "pid":
                    return os.getpid()
                return "fine"
            return call
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))


def _same_bits(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(a, np.generic):
        return type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape and \
            np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    if isinstance(a, float):
        both_nan = math.isnan(a) and math.isnan(b)
        return type(b) is float and (both_nan or (a, math.copysign(1, a)) == (b, math.copysign(1, b)))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_bits(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(_same_bits(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def test_output_weights_tuples_and_gradient_dicts_round_trip_bitwise(monkeypatch, tmp_path):
    _loader(monkeypatch, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        import boundary_calls                                  # the same values, built here
        awkward = boundary_calls.awkward()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("boundary_calls", None)
    rng = np.random.default_rng(7)
    out, weights = rng.standard_normal((2, 3, 4, 5)), rng.random((2, 3, 4, 6)).astype(np.float32)
    out[0, 0, 0, :2], weights[1, 2, 3, :2] = [np.nan, -0.0], [-0.0, np.inf]
    grads = ({"dq": rng.standard_normal((1, 2, 3, 4)), "dk": np.full((1, 2, 5, 4), -0.0),
              "dv": np.full((1, 2, 5, 6), np.nan)}, "float32")
    with Worker("boundary_calls:load", timeout=30) as w:
        rs = w.run([("echo", (out, weights)), ("echo", grads), ("awkward", None), ("array_like", None)])
    assert [r.status for r in rs] == ["ok"] * 4, [(r.status, r.error) for r in rs]
    assert _same_bits(rs[0].value, (out, weights))
    assert _same_bits(rs[1].value, grads)
    assert _same_bits(rs[2].value, awkward)
    assert all(a.flags.writeable for a in rs[2].value.values() if isinstance(a, np.ndarray))
    assert _same_bits(rs[3].value, np.arange(4, dtype=np.int16))


@pytest.mark.parametrize("kind, named", [
    ("thing", "the call returned a boundary_calls.Thing; "),
    ("nested_thing", "the call returned a boundary_calls.Thing (at [1]['dq'][1]); "),
    ("set", "the call returned a set; "), ("function", "the call returned a function; "),
    ("generator", "the call returned a generator; "),
    ("objects", "the call returned a numpy.ndarray of dtype object; "),
])
def test_a_value_that_is_not_plain_data_is_an_error_naming_its_type_and_the_child_goes_on(
        monkeypatch, tmp_path, kind, named):
    _loader(monkeypatch, tmp_path)
    with Worker("boundary_calls:load", timeout=30) as w:
        before, refused, after = w.run([("pid", None), (kind, None), ("pid", None)])
        restarts = w.restarts
    assert refused.status == "error" and refused.error.startswith("UnsupportedResult: " + named), refused.error
    assert "only plain data crosses the worker's process boundary: NumPy arrays, torch tensors" in refused.error
    assert after.status == "ok" and after.value == before.value and restarts == 0


@pytest.mark.parametrize("ret, says", [("Thing()", r"TypeError: the target returned a refimpl_target_\w+\.Thing; "),
                                       ("str(out)", "TypeError: the target returned str as its output")])
def test_an_isolated_target_returning_something_else_than_arrays_gets_error_verdicts_naming_the_type(tmp_path, ret,
                                                                                                     says):
    path = _module(tmp_path, "odd_returns", f'''
        class Thing:
            pass


        def attention(q, k, v, mask=None, scale=None):
            out = _attention(q, k, v, mask, scale)
            return {ret}
        ''')
    fn = IsolatedFunction(f"{path}:attention", timeout=60, check="refimpl")
    try:
        results = [run_one(Target("odd", fn), s, STORE) for s in SIZES[:4]]
        pid = fn.worker.pid
        assert fn.worker.restarts == 0 and pid is not None
    finally:
        fn.close()
    assert all(r.status == Status.ERROR for r in results), [(r.status, r.detail) for r in results]
    assert all(re.search(says, r.detail) for r in results), results[0].detail


@pytest.mark.r
def test_an_isolated_r_batch_brings_back_the_same_results_and_r_errors_as_in_process():
    from refimpl.harness.targets.isolation import isolated
    from refimpl.harness.targets.r_targets import RReturned
    from refimpl.r.bridge import RError
    spec = f"R:{ROOT / 'tests/zoo/r/attention_impls.R'}:attn_errors"
    datas = [STORE.get(s) for s in select(["sizes"], "quick", ("float64",))]
    fn = isolated(spec)
    try:
        remote = fn.batch(datas)
    finally:
        fn.close()
    local = load_target(spec).fn.batch(datas)                                  # --no-isolation
    assert [type(x) for x in remote] == [type(x) for x in local] and {RError, RReturned} <= set(map(type, local))
    for a, b in zip(remote, local):
        if isinstance(b, RError):
            assert (str(a), a.r_message, a.r_call) == (str(b), b.r_message, b.r_call)
        else:
            assert a.output.tobytes() == b.output.tobytes() and (a.dtype, a.warnings) == (b.dtype, b.warnings)


@pytest.mark.parametrize("skeleton, says", [
    (["array", "|O", [1], 0], "dtype '|O' is not sent as plain data"),
    (["array", "V8", [1], 0], "dtype 'V8' is not sent as plain data"),
    (["array", "<f8", [4], 0], "lie outside the 16 bytes of data"),
    (["array", "<f8", [-1], 0], "not an array's dtype and shape"),
    (["pickle", "gASVAAAAAAAAAAAu"], "not a node of the wire format: 'pickle'"),
    ({"__reduce__": "os._exit"}, "not a node of the wire format: dict"),
])
def test_the_parent_decodes_plain_data_only_whatever_the_child_writes(skeleton, says):
    from refimpl.harness.targets import wire
    with pytest.raises((ValueError, TypeError), match=re.escape(says)):
        wire.decode(json.dumps(skeleton).encode(), bytearray(16))


def test_an_isolated_target_that_writes_its_inputs_is_named_and_the_cases_arrays_stay_as_they_were():
    """The worker has its own copies (none are made here) and names the arguments the target wrote to."""
    from refimpl.harness.targets.isolation import isolator
    spec = f"{ROOT / 'tests' / 'zoo' / 'numpy_broken.py'}:mutates_input"
    t = load_target(spec, isolate=isolator(timeout=60, max_memory_mib=None, flag="--target"))
    try:
        specs = [s for s in SIZES if s.dtype == "float64"][:3]
        before = {s.id: STORE.get(s).q.copy() for s in specs}
        results = [run_one(t, s, STORE) for s in specs]
    finally:
        t.fn.close()
    assert all(r.status == Status.FAIL and "writes to its inputs (q)" in r.detail for r in results), \
        [r.detail for r in results]
    assert all(np.array_equal(STORE.get(s).q, before[s.id]) for s in specs)
    good = load_target(f"{ROOT / 'tests' / 'zoo' / 'numpy_impls.py'}:plain",
                       isolate=isolator(timeout=60, max_memory_mib=None, flag="--target"))
    try:
        assert all(run_one(good, s, STORE).status == Status.PASS for s in specs)
    finally:
        good.fn.close()


def test_the_worker_keeps_freed_memory_only_without_a_memory_limit(tmp_path, monkeypatch):
    """refimpl.heap: without --max-memory the worker gets glibc's thresholds (speed); with a limit it does not (a
    kept heap must not make a correct target 'oom')."""
    mod = tmp_path / "envprobe.py"
    mod.write_text("import os\nimport numpy as np\n\ndef attn(q, k, v, mask=None, scale=None):\n"
                   "    return np.full(q.shape[:-1] + (v.shape[-1],), float('GLIBC_TUNABLES' in os.environ))\n")
    from refimpl.harness.targets.isolation import isolated
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    q = np.zeros((1, 1, 2, 2))
    seen = {}
    for limit in (None, 2**30):
        f = isolated(f"{mod}:attn", "refimpl", timeout=60, max_memory=limit)
        try:
            seen[limit] = float(np.asarray(f(q, q, q))[0, 0, 0, 0])
        finally:
            f.close()
    assert seen == {None: 1.0, 2**30: 0.0}, seen
