"""The rules of the reproduction scripts (refimpl.harness.analysis.repro) that the zoo-based tests do not reach: how
each kind of argument is written back (tensors of every dtype, float32 arrays, an API's own objects), where a
``module:function`` target is imported from, the script's size limit (400,000 numbers) and weights limit (a quarter
of it), the 'uniform' convention's mean of V under GQA, and which scripts ``--repro-dir`` writes: at most 50 per
target, smallest first, only for targets with a failing family case. Hand-made cases and fakes; no R, no torch."""
import importlib.util
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from refimpl.errors import UsageError
from refimpl.harness.analysis.repro import _lit, _script, write_repros, write_target_repros
from refimpl.harness.cases import Status
from refimpl.harness.cases.features import CaseSpec, materialise
from refimpl.harness.target_spec import Target

ATTN = '''import numpy as np
from refimpl import scaled_dot_product_attention


def attn(q, k, v, mask=None, scale=None):
    return scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)[0]
'''

# jax.nn.dot_product_attention's signature ((B, T, N, H) in and out) in NumPy, GQA by head h reading kv head
# h // (Hq / Hkv); a row with no key gives the mean of V of the kv head it reads (OTHER: of the other kv head)
JAX_GQA = '''import numpy as np

OTHER = {other}


def attn(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False, **kwargs):
    q, k, v = (np.swapaxes(np.asarray(a, np.float64), 1, 2) for a in (query, key, value))   # (B, H, S, D)
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    keep = np.ones((B, 1, Sq, Sk), bool) if mask is None else np.broadcast_to(mask, (B, 1, Sq, Sk))
    scale = 1.0 / np.sqrt(D) if scale is None else scale
    out = np.zeros((B, Hq, Sq, v.shape[-1]))
    for b in range(B):
        for h in range(Hq):
            g = h // (Hq // Hkv)
            for i in range(Sq):
                kept = keep[b, 0, i]
                if not kept.any():
                    out[b, h, i] = v[b, (Hkv - 1 - g) if OTHER else g].mean(axis=0)
                    continue
                s = np.array([q[b, h, i] @ k[b, g, j] * scale for j in range(Sk)])
                s = np.where(kept, s, -np.inf)
                w = np.exp(s - s[kept].max())
                out[b, h, i] = (w / w.sum()) @ v[b, g]
    return np.swapaxes(out, 1, 2)
'''


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)                                       # the scripts' __main__ guard: nothing runs
    return mod


def _file_target(tmp_path, api="refimpl", source=ATTN, name="attn_target"):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return Target(f"{path}:attn", _module(path, f"{name}_{tmp_path.name}").attn, api=api)


def _load_script(tmp_path, text, name):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return _module(path, f"{name}_{tmp_path.name}")


def _spec(index, **kw):
    return CaseSpec("sizes", index, **{"Sq": 2, "Sk": 3, "D": 2, "Dv": 2, **kw})


# ---- how arguments are written back --------------------------------------------------------------------------

class _Dtype:
    """A torch dtype as ``_lit`` reads one: its str is ``torch.<name>``."""

    def __init__(self, name):
        self.name = name

    def __str__(self):
        return f"torch.{self.name}"

    def __eq__(self, other):
        return isinstance(other, _Dtype) and other.name == self.name

    def __hash__(self):
        return hash(self.name)


class _Tensor:
    """A CPU tensor as torch behaves for what ``_lit`` asks of it: ``numpy()`` gives the values in the tensor's own
    NumPy dtype and raises TypeError for bfloat16 (NumPy has none, as torch's "Got unsupported ScalarType
    BFloat16"); ``float()`` converts to float32 (round to nearest)."""

    def __init__(self, values, dtype):
        self.values, self.dtype = np.asarray(values), dtype

    def detach(self):
        return self

    def cpu(self):
        return self

    def float(self):
        return _Tensor(self.values.astype(np.float32), _Dtype("float32"))

    def numpy(self):
        if self.dtype.name == "bfloat16":
            raise TypeError("Got unsupported ScalarType BFloat16")
        return self.values.astype(self.dtype.name)


def _tensor(data, dtype=None):
    """torch.tensor(data, dtype=None): the values cast to the dtype given, else in the NumPy array's own (bfloat16
    kept in float32: the values given are representable)."""
    a = np.asarray(data)
    dtype = dtype if dtype is not None else _Dtype(a.dtype.name)
    return _Tensor(a.astype(np.float32 if dtype.name == "bfloat16" else dtype.name), dtype)


_DTYPES = ("bool", "int32", "float16", "bfloat16", "float32", "float64")
_TORCH = SimpleNamespace(tensor=_tensor, **{n: _Dtype(n) for n in _DTYPES})


@pytest.fixture(scope="module")
def script_ns(tmp_path_factory):
    """The namespace of a real script (its ``_f`` and ``_b`` decoders), with the fake torch above."""
    tmp = tmp_path_factory.mktemp("ns")
    t = _file_target(tmp)
    mod = _load_script(tmp, _script(t, materialise(_spec(990))), "ns_script")
    return {"_f": mod._f, "_b": mod._b, "np": np, "torch": _TORCH}


def _rebuilt(src, ns):
    return eval(src, dict(ns))


def test_a_tensor_argument_is_rebuilt_as_a_tensor_of_its_own_dtype_with_its_exact_values(script_ns):
    """A torch argument comes back as a tensor of the same dtype holding the same values bit for bit: float64 not
    through float32, bfloat16 (which NumPy lacks) through float32 and back to bfloat16, bool as bool and integer
    tensors (cu_seqlens, block tables) as their integers."""
    cases = [(np.array([0.1, 1 / 3, -2.0 ** -1070]), "float64"),
             (np.array([1.5, -0.375, 3.0, 2.0 ** -100], np.float32), "bfloat16"),     # representable in bfloat16
             (np.array([0.5, -65504.0, 2.0 ** -24], np.float16), "float16"),
             (np.array([[True, False, True]]), "bool"),
             (np.array([0, 3, 7], np.int32), "int32")]
    for values, name in cases:
        src, n = _lit(_Tensor(values, _Dtype(name)))
        got = _rebuilt(src, script_ns)
        assert got.dtype == _Dtype(name), (name, src)
        assert got.values.shape == values.shape and np.array_equal(got.values.astype(np.float64),
                                                                   values.astype(np.float64)), (name, src)
        assert n == values.size


def test_a_float32_case_hands_the_target_float32_arrays(tmp_path):
    """The script passes the arrays in the dtype the harness passed them (GIVEN), here float32, and the keep-mask
    as bool: a float64 copy would run another precision's kernel."""
    t = _file_target(tmp_path)
    data = materialise(_spec(991, dtype="float32", mask="bool"))
    mod = _load_script(tmp_path, _script(t, data), "f32")
    assert mod.GIVEN == "float32"
    assert [a.dtype for a in mod.ARGS] == [np.float32] * 3
    assert mod.KWARGS["mask"].dtype == bool
    for got, want in zip(mod.ARGS, (data.q, data.k, data.v)):
        assert np.array_equal(got.astype(np.float64), want)


def test_an_apis_own_argument_is_written_by_its_repro_source():
    """An argument object of an API (flex's ScoreMod, MaskMod, BlockMask) writes its own source through
    ``repro_source(lit)``, given the writer for its inner values, and counts what that returns."""
    asked = []

    class Own:
        def repro_source(self, lit):
            asked.append(lit)
            inner, n = lit(np.array([1.0, 2.0]))
            return f"Own({inner})", n + 7

    src, n = _lit(Own())
    assert asked == [_lit] and src.startswith("Own(_f(") and n == 2 + 7


def test_an_argument_of_no_known_kind_is_refused_by_its_type():
    """A list, dict or other object is not written as something else (a list is not a tuple): TypeError naming
    the type."""
    for x in ([1.0, 2.0], {"a": 1.0}, object()):
        with pytest.raises(TypeError, match=f"argument of type {type(x).__name__} into a script"):
            _lit(x)


def test_a_module_function_target_is_imported_by_name_from_the_directory_the_check_ran_in(
        tmp_path, monkeypatch, capsys):
    """``module:fn`` (not a file): the script puts the directory the check ran in on sys.path and imports the
    module by name, so it runs from anywhere; a correct target passes."""
    name = f"repro_rules_mod_{tmp_path.name}".replace("-", "_")
    (tmp_path / "ran_here").mkdir()
    (tmp_path / "ran_here" / f"{name}.py").write_text(ATTN)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "ran_here")
    t = Target(f"{name}:attn", lambda *a, **k: None)
    text = _script(t, materialise(_spec(992)))
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.setattr(sys, "path", list(sys.path))                  # the script's insert is undone after
    try:
        mod = _load_script(tmp_path / "elsewhere", text, "by_name")
        assert mod.target.__module__ == name
        assert str(tmp_path / "ran_here") in sys.path
        assert mod.main() == 0, capsys.readouterr().out
    finally:
        sys.modules.pop(name, None)


# ---- the size limits ------------------------------------------------------------------------------------------

def _jax_case(Sq, Sk, index):
    """A jax-API case whose script holds (Sq + 2)(Sk + 2) - 3 numbers: q (Sq), k and v (Sk each), the keep-mask
    (Sq Sk, a kwarg), the scale (one float), the expected output (Sq); bias=None and is_causal=False hold none."""
    return materialise(CaseSpec("sizes", index, Sq=Sq, Sk=Sk, D=1, Dv=1, mask="bool", scale=0.5))


def test_a_script_holds_at_most_400000_numbers(tmp_path):
    """Every element of an array argument (a bool mask's too), each float argument and the expected output count;
    None, bool, int and str arguments hold no number. 400,000 is written, 400,001 refused."""
    t = _file_target(tmp_path, api="jax")
    assert (267 + 2) * (1485 + 2) - 3 == 400_000
    text = _script(t, _jax_case(267, 1485, 993))
    kwargs = next(line for line in text.splitlines() if line.startswith("KWARGS = "))
    assert "'bias': None" in kwargs and "'is_causal': False" in kwargs and "'scale': 0.5" in kwargs
    assert "(1, 1, 267, 1485)" in kwargs                              # the keep-mask: Sq Sk numbers
    assert (42 + 2) * (9089 + 2) - 3 == 400_001
    with pytest.raises(UsageError, match="holds 400,001 numbers; a script holds at most 400,000"):
        _script(t, _jax_case(42, 9089, 994))


def test_weights_are_written_up_to_a_quarter_of_the_limit(tmp_path):
    """An API that returns weights gets them checked when they are at most 100,000 numbers (a quarter of the
    script's 400,000): exactly 100,000 are written, 100,001 are left out (WEIGHTS None)."""
    t = _file_target(tmp_path)
    at = materialise(_spec(996, Sq=250, Sk=400, D=1, Dv=1))
    assert at.weights.size == 100_000
    assert "\nWEIGHTS = _f(\"" in _script(t, at)                 # (the values: test_repro.py, bit for bit)
    over = materialise(_spec(997, Sq=11, Sk=9091, D=1, Dv=1))
    assert over.weights.size == 100_001
    assert "\nWEIGHTS = None   #" in _script(t, over)


def test_an_api_without_weights_gets_no_weights_in_its_script(tmp_path):
    """The weights are written only for an API whose target returns them (the refimpl protocol, c-abi, hf):
    jax's target returns the output alone, so its script holds WEIGHTS = None."""
    t = _file_target(tmp_path, api="jax")
    data = materialise(_spec(998))
    assert data.weights is not None
    mod = _load_script(tmp_path, _script(t, data), "jax_no_w")
    assert mod.WEIGHTS is None


# ---- rows with no key under GQA -------------------------------------------------------------------------------

def test_the_uniform_convention_under_gqa_is_the_mean_of_the_kv_head_a_query_head_reads(tmp_path, capsys):
    """'uniform' (a row with no key gives the mean of V over the keys) means the V that query head reads: kv head
    h // (Hq / Hkv). A GQA target doing that passes under --masked-rows uniform; one giving the other kv head's mean
    fails on those rows."""
    data = materialise(_spec(999, Sq=4, Sk=3, D=2, Dv=2, Hq=4, Hkv=2, mask="bool", dead_rows=True))
    assert data.dead.any()
    means = data.v.mean(axis=2)                                       # (B, Hkv, Dv)
    assert not np.allclose(means[:, 0], means[:, 1], rtol=1e-2, atol=1e-2)     # the two kv heads' means differ
    want = np.stack([means[:, h // 2] for h in range(4)], axis=1)     # (B, Hq, Dv)
    for other, code in ((False, 0), (True, 1)):
        t = _file_target(tmp_path, api="jax", source=JAX_GQA.format(other=other), name=f"gqa_{int(other)}")
        mod = _load_script(tmp_path, _script(t, data, masked_rows="uniform"), f"gqa_script_{int(other)}")
        assert mod.ACCEPTED == ("uniform",)
        assert np.allclose(mod.MEAN_V, want, rtol=0, atol=1e-15)
        assert mod.main() == code, capsys.readouterr().out
        if code:
            assert "rows with no key give" in capsys.readouterr().out


# ---- which scripts --repro-dir writes -------------------------------------------------------------------------

def _numbers(s):
    """How many numbers q, k, v and the output of a case hold (Hq == Hkv): B Hq (Sq D + Sk D + Sk Dv + Sq Dv)."""
    return s.B * s.Hq * (s.Sq * s.D + s.Sk * s.D + s.Sk * s.Dv + s.Sq * s.Dv)


def test_scripts_come_smallest_case_first(tmp_path):
    """The paths come in order of the cases' sizes (the numbers in q, k, v and the output), ties by case id,
    whatever order the failures came in."""
    t = _file_target(tmp_path)
    specs = [_spec(10, B=2, Hq=2, Hkv=2, Sq=1, Sk=3, D=1, Dv=1),     # 2*2*(1 + 3 + 3 + 1) = 32
             _spec(11, Hq=4, Hkv=4, Sq=1, Sk=1, D=1, Dv=1),            # 4*(1 + 1 + 1 + 1) = 16
             _spec(12, B=2, Sq=3, Sk=1, D=1, Dv=3),                    # 2*(3 + 1 + 3 + 9) = 32
             _spec(13, Sq=1, Sk=4, D=4, Dv=1),                         # 4 + 16 + 4 + 1 = 25
             _spec(14, Sq=1, Sk=1, D=1, Dv=1),                         # 4
             _spec(15, Sq=6, Sk=1, D=1, Dv=1),                         # 6 + 1 + 1 + 6 = 14
             _spec(16, Sq=1, Sk=2, D=3, Dv=2),                         # 3 + 6 + 4 + 2 = 15
             _spec(17, B=3, Sq=1, Sk=1, D=2, Dv=1)]                    # 3*(2 + 2 + 1 + 1) = 18
    assert [_numbers(s) for s in specs] == [32, 16, 32, 25, 4, 14, 15, 18]
    paths = write_target_repros(t, [(s, None) for s in specs], tmp_path / "dir")
    want = [s.id for s in sorted(specs, key=lambda s: (_numbers(s), s.id))]
    assert want == ["sizes/0014-float64", "sizes/0015-float64", "sizes/0016-float64", "sizes/0011-float64",
                    "sizes/0017-float64", "sizes/0013-float64", "sizes/0010-float64", "sizes/0012-float64"]
    assert [p.rsplit("/", 1)[1] for p in paths] == [i.replace("/", "-") + ".py" for i in want]


def test_at_most_50_scripts_per_target_the_smallest(tmp_path):
    """51 failing cases: 50 scripts, the largest case left out."""
    t = _file_target(tmp_path)
    big = _spec(0, Sq=5, Sk=5)
    small = [_spec(i) for i in range(1, 51)]
    paths = write_target_repros(t, [(big, None)] + [(s, None) for s in small], tmp_path / "dir")
    assert len(paths) == 50 and len(list((tmp_path / "dir").rglob("*.py"))) == 50
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == sorted(s.id.replace("/", "-") + ".py" for s in small)


def test_repro_dir_writes_scripts_for_failing_family_cases_only_and_names_only_targets_that_have_some(tmp_path):
    """write_repros reads each row's result for each target: a row the target has no result in (not run, or
    another target's), a row with no family specs (a fixture) and passing cases give no script, and a target with
    no failing family case gets no entry in the map."""
    bad = _file_target(tmp_path, name="bad")
    good = _file_target(tmp_path, name="good")
    failing, passing, elsewhere = _spec(20), _spec(21), _spec(22)
    store = SimpleNamespace(get=materialise)
    r = SimpleNamespace
    rows = [r(id="fixture:x", specs=[], store=None), r(id="family:a", specs=[failing, passing], store=store),
            r(id="family:b", specs=[elsewhere], store=store)]
    results = {("fixture:x", bad.name): r(cases=[r(id="x", status=Status.FAIL)]),
               ("family:a", bad.name): r(cases=[r(id=failing.id, status=Status.FAIL),
                                                r(id=passing.id, status=Status.PASS)]),
               ("family:a", good.name): r(cases=[r(id=failing.id, status=Status.PASS)]),
               ("family:b", good.name): r(cases=[r(id=elsewhere.id, status=Status.PASS)])}
    out = write_repros(r(cases=rows, results=results), [bad, good], tmp_path / "dir")
    assert list(out) == [bad.name]
    assert [p.rsplit("/", 2)[1:] for p in out[bad.name]] == [["bad-attn", "sizes-0020-float64.py"]]
