"""Bad input gets a clear error naming the argument, what was expected and what arrived; faults lose nothing."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import refimpl as ri
from refimpl import fixtures as fx_mod
from refimpl.r import rrng
from refimpl.online import sdpa_online

OK = np.ones((2, 3))


def sdpa(q=OK, k=OK, v=OK, **kw):
    return ri.scaled_dot_product_attention(q, k, v, **kw)


# (id, call, exception type, words the message must contain)
BAD_INPUTS = [
    ("q-none", lambda: sdpa(q=None), ri.InputTypeError, ["q", "array-like", "NoneType"]),
    ("q-string", lambda: sdpa(q="abc"), ri.InputTypeError, ["q", "array-like", "str"]),
    ("q-dict", lambda: sdpa(q={"a": 1}), ri.InputTypeError, ["q", "array-like", "dict"]),
    ("q-ragged", lambda: sdpa(q=[[1.0, 2.0], [3.0]]), ri.InputValueError, ["q", "rectangular"]),
    ("q-rank-1", lambda: sdpa(q=np.ones(3)), ri.ShapeError, ["q", "at least 2", "(3,)"]),
    ("k-rank-0", lambda: sdpa(k=np.float64(1.0)), ri.ShapeError, ["k", "at least 2", "()"]),
    ("dk-mismatch", lambda: sdpa(k=np.ones((2, 4))), ri.ShapeError, ["d_k", "(2, 3)", "(2, 4)"]),
    ("nkeys-mismatch", lambda: sdpa(v=np.ones((5, 3))), ri.ShapeError, ["number of keys", "(2, 3)", "(5, 3)"]),
    ("batch-not-broadcastable", lambda: sdpa(q=np.ones((2, 2, 3)), k=np.ones((3, 2, 3)), v=np.ones((3, 2, 3))),
     ri.ShapeError, ["broadcastable", "q: (2,)", "k: (3,)"]),
    ("zero-queries", lambda: sdpa(q=np.ones((0, 3))), ri.ShapeError, ["q", "empty", "(0, 3)"]),
    ("zero-keys", lambda: sdpa(k=np.ones((0, 3)), v=np.ones((0, 3))), ri.ShapeError, ["k", "empty", "(0, 3)"]),
    ("zero-features", lambda: sdpa(q=np.ones((2, 0)), k=np.ones((2, 0))), ri.ShapeError, ["q", "empty", "(2, 0)"]),
    ("int-beyond-2-53", lambda: sdpa(q=np.full((2, 3), 2 ** 60)), ri.InputValueError, ["q", "2**53"]),
    ("bool-q", lambda: sdpa(q=np.ones((2, 3), bool)), ri.InputTypeError, ["q", "bool", "mask"]),
    ("complex-q", lambda: sdpa(q=np.ones((2, 3), complex)), ri.InputTypeError, ["q", "complex"]),
    ("object-q", lambda: sdpa(q=np.array([[1, "a", None]], dtype=object)), ri.InputTypeError, ["q", "object"]),
    ("string-array-q", lambda: sdpa(q=np.array([["a", "b", "c"]])), ri.InputTypeError, ["q", "<U1"]),
    ("float16-q", lambda: sdpa(q=np.ones((2, 3), np.float16)), ri.InputTypeError, ["q", "float16", "float32"]),
    ("nan-q", lambda: sdpa(q=np.array([[1.0, np.nan, 0.0], [0, 0, 0]])), ri.NonFiniteInputError,
     ["q", "NaN", "(0, 1)"]),
    ("inf-v", lambda: sdpa(v=np.array([[1.0, 0, 0], [0, np.inf, 0]])), ri.NonFiniteInputError,
     ["v", "finite", "(1, 1)"]),
    ("mask-shape", lambda: sdpa(mask=np.ones((3, 2), bool)), ri.ShapeError, ["mask", "(2, 2)", "(3, 2)"]),
    ("mask-int-dtype", lambda: sdpa(mask=np.ones((2, 2), int)), ri.InputTypeError, ["mask", "bool", "int64"]),
    ("mask-nan", lambda: sdpa(mask=np.array([[0.0, np.nan], [0, 0]])), ri.NonFiniteInputError, ["mask", "NaN"]),
    ("mask-plus-inf", lambda: sdpa(mask=np.array([[0.0, np.inf], [0, 0]])), ri.NonFiniteInputError, ["mask", "+inf"]),
    ("scale-zero", lambda: sdpa(scale=0.0), ri.InputValueError, ["scale", "positive", "0.0"]),
    ("scale-negative", lambda: sdpa(scale=-1), ri.InputValueError, ["scale", "positive", "-1"]),
    ("scale-nan", lambda: sdpa(scale=float("nan")), ri.InputValueError, ["scale", "finite", "nan"]),
    ("scale-inf", lambda: sdpa(scale=float("inf")), ri.InputValueError, ["scale", "finite", "inf"]),
    ("scale-string", lambda: sdpa(scale="0.5"), ri.InputTypeError, ["scale", "real number", "str"]),
    ("scale-bool", lambda: sdpa(scale=True), ri.InputTypeError, ["scale", "real number", "bool"]),
    ("scale-underflows-float32", lambda: sdpa(q=OK.astype(np.float32), k=OK.astype(np.float32), v=OK.astype(np.float32),
                                              scale=1e-50), ri.InputValueError, ["scale", "underflows", "float32"]),
    ("is-causal-not-bool", lambda: sdpa(is_causal="yes"), ri.InputTypeError, ["is_causal", "bool", "str"]),
    ("heads-not-dividing", lambda: ri.split_heads(np.ones((4, 6)), 4), ri.ShapeError, ["n_heads=4", "divide", "6"]),
    ("w-o-wrong-shape", lambda: ri.multi_head_attention(np.ones((3, 4)), np.ones((2, 4, 2)), np.ones((2, 4, 2)),
                                                        np.ones((2, 4, 2)), np.ones((5, 4))),
     ri.ShapeError, ["w_o", "n_heads*d_v", "(5, 4)"]),
    ("w-q-wrong-d-model", lambda: ri.multi_head_attention(np.ones((3, 4)), np.ones((2, 5, 2)), np.ones((2, 4, 2)),
                                                          np.ones((2, 4, 2))),
     ri.ShapeError, ["w_q", "d_model=4", "(2, 5, 2)"]),
    ("heads-count-differ", lambda: ri.multi_head_attention(np.ones((3, 4)), np.ones((2, 4, 2)), np.ones((3, 4, 2)),
                                                           np.ones((2, 4, 2))),
     ri.ShapeError, ["same number of heads", "(3, 4, 2)"]),
    ("weights-layout", lambda: ri.self_attention(OK, np.eye(3), np.eye(3), np.eye(3), weights_layout="xw"),
     ri.InputValueError, ["weights_layout", "in_out", "'xw'"]),
    ("self-attention-w-shape", lambda: ri.self_attention(OK, np.ones((4, 3)), np.eye(3), np.eye(3)),
     ri.ShapeError, ["w_q", "d_model=3", "(4, 3)"]),
    ("torch-tensor", lambda: sdpa(q=__import__("torch").ones(2, 3)), ri.InputTypeError, ["q", "torch", "numpy()"]),
    ("softmax-axis-range", lambda: ri.softmax(np.ones((2, 3)), axis=2), ri.ShapeError, ["axis", "[-2, 1]", "2"]),
    ("softmax-axis-type", lambda: ri.softmax(np.ones(3), axis=0.5), ri.InputTypeError, ["axis", "int", "float"]),
    ("causal-mask-zero", lambda: ri.causal_mask(0), ri.InputValueError, ["n_queries", ">= 1", "0"]),
    ("general-attention-query-rank", lambda: ri.general_attention(np.ones((1, 2)), np.ones((2, 2)), np.ones((2, 2))),
     ri.ShapeError, ["query", "exactly 1", "(1, 2)"]),
    ("online-block", lambda: sdpa_online(OK, OK, OK, block_k=0), ri.InputValueError, ["block_k", ">= 1", "0"]),
    ("seed-2-31", lambda: rrng.RRNG(2 ** 31), rrng.RSeedError, ["seed", "2**31", "2147483648"]),
    ("seed-nan", lambda: rrng.RRNG(float("nan")), rrng.RSeedError, ["seed", "finite"]),
    ("runif-reversed", lambda: rrng.RRNG(1).runif(3, 2, 1), ri.InputValueError, ["min <= max", "min=2.0", "max=1.0"]),
    ("sample-too-large", lambda: rrng.RRNG(1).sample_int(3, 5), ri.InputValueError, ["size=5", "n=3"]),
]


@pytest.mark.parametrize("call, exc, words", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_a_clear_typed_error(call, exc, words):
    with pytest.raises(exc) as e:
        call()
    assert isinstance(e.value, (ValueError, TypeError)) and isinstance(e.value, ri.RefimplError)
    msg = str(e.value)
    missing = [w for w in words if w not in msg]
    assert not missing, f"message {msg!r} lacks {missing}"


def test_there_are_at_least_25_classes_of_bad_input():
    assert len(BAD_INPUTS) >= 25


def test_integers_are_converted_exactly_to_float64():
    out, w = sdpa(q=np.array([[1, 0, 0]]), k=np.array([[1, 0, 0], [0, 1, 0]]), v=np.array([[2, 0, 0], [4, 0, 0]]))
    assert out.dtype == np.float64


# --- fixture faults -------------------------------------------------------------------------------

@pytest.fixture
def fx_root(tmp_path):
    src = fx_mod.fixtures_dir() / "codefinity" / "self-attention.json"
    d = tmp_path / "fixtures" / "codefinity"
    d.mkdir(parents=True)
    (d / "self-attention.json").write_text(src.read_text())
    return tmp_path / "fixtures"


def _mutate(root, fn, name="self-attention.json"):
    p = root / "codefinity" / name
    obj = json.loads(p.read_text())
    fn(obj)
    obj["hash"] = fx_mod.content_hash(obj)
    p.write_text(json.dumps(obj))
    return p


@pytest.mark.parametrize("fault, field, words", [
    ("truncated", "json", "invalid or truncated"),
    ("not-json", "json", "invalid or truncated"),
    ("nan-literal", "json", "NaN is not valid JSON"),
])
def test_broken_json_is_reported_with_file_and_field(fx_root, fault, field, words):
    p = fx_root / "codefinity" / "self-attention.json"
    text = p.read_text()
    faulty = {"truncated": text[: len(text) // 2], "not-json": "hello",
              "nan-literal": text.replace('"values": [\n', '"values": [NaN, \n', 1)}
    p.write_text(faulty[fault])
    with pytest.raises(fx_mod.FixtureError) as e:
        fx_mod.load(p, fx_root)
    assert e.value.field == field and words in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("mutation, field, words", [
    (lambda o: o.__setitem__("schema", "refimpl-fixture/99"), "schema", "unknown schema version"),
    (lambda o: o["inputs"]["X"].__setitem__("shape", [3, 5]), "inputs.X.values[0]", "shape/data mismatch"),
    (lambda o: o["inputs"]["X"].__setitem__("dtype", "complex128"), "inputs.X.dtype", "must be one of"),
    (lambda o: o["inputs"]["X"]["values"][0].__setitem__(0, "1.0"), "inputs.X.values[0][0]", "float64 scalar"),
    (lambda o: o["steps"][0].__setitem__("fn", "os.system"), "steps[0].fn", "unknown function"),
    (lambda o: o["steps"][0]["args"].__setitem__("a", "nowhere"), "steps[0].args.a", "no input or earlier step"),
    (lambda o: o["expected"]["weights"][0].__setitem__("by", "me"), "expected.weights[0].by", "must be one of"),
    (lambda o: o["expected"].__setitem__("ghost", []), "expected.ghost", "not an input or the output"),
    (lambda o: o.__setitem__("id", "codefinity/other"), "id", "does not match the file's place"),
    (lambda o: o["recipe"].__setitem__("kind", "pickle"), "recipe.kind", "must be one of"),
    (lambda o: o.pop("source"), "source", "missing"),
])
def test_invalid_fixture_content_names_file_and_field(fx_root, mutation, field, words):
    p = _mutate(fx_root, mutation)
    with pytest.raises(fx_mod.FixtureError) as e:
        fx_mod.load(p, fx_root)
    assert e.value.field == field, str(e.value)
    assert words in str(e.value) and str(p) in str(e.value)


def test_hash_mismatch_is_an_error_naming_the_file(fx_root):
    p = fx_root / "codefinity" / "self-attention.json"
    obj = json.loads(p.read_text())
    obj["inputs"]["X"]["values"][0][0] = 2.0                      # edited without rehashing
    p.write_text(json.dumps(obj))
    with pytest.raises(fx_mod.FixtureError) as e:
        fx_mod.load(p, fx_root)
    assert e.value.field == "hash" and str(p) in str(e.value)


def test_duplicate_ids_are_refused(fx_root):
    (fx_root / "codefinity" / "copy.json").write_text((fx_root / "codefinity" / "self-attention.json").read_text())
    with pytest.raises(fx_mod.FixtureError, match="does not match the file's place|duplicate id"):
        fx_mod.load_all(fx_root)


def test_a_path_outside_fixtures_is_refused(fx_root, tmp_path):
    outside = tmp_path / "elsewhere.json"
    outside.write_text((fx_root / "codefinity" / "self-attention.json").read_text())
    with pytest.raises(fx_mod.FixtureError, match="outside the fixtures directory"):
        fx_mod.load(outside, fx_root)
    with pytest.raises(fx_mod.FixtureError, match="outside the fixtures directory"):
        fx_mod.load(fx_root / "codefinity" / ".." / ".." / "elsewhere.json", fx_root)


# --- R faults --------------------------------------------------------------------------------------

def _availability_in_subprocess(prelude: str, env: dict | None = None) -> str:
    code = prelude + "\nfrom refimpl.r import bridge as rbridge; a = rbridge.availability(); print(a.ok, '|', a.reason)"
    base = {k: v for k, v in os.environ.items() if k != "REFIMPL_NO_R"}   # these tests fault R on purpose
    return subprocess.run([sys.executable, "-c", code], env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=120).stdout


def test_missing_rpy2_is_reported_with_what_to_do():
    out = _availability_in_subprocess("import sys; sys.modules['rpy2'] = None")
    assert out.startswith("False |") and "rpy2 is not importable" in out and "python3-rpy2" in out


@pytest.mark.r
def test_missing_attention_package_is_reported_with_what_to_do(rb, tmp_path):
    profile = tmp_path / "hide.R"   # an R profile that leaves only R's base library on the search path
    profile.write_text('local({e <- environment(.libPaths); assign(".lib.loc", .Library, envir = e)})\n')
    out = _availability_in_subprocess("", {"R_PROFILE_USER": str(profile)})
    assert out.startswith("False |") and "'attention' is not installed" in out and "install.packages" in out


def test_r_home_that_is_not_an_r_installation_is_reported_not_fatal():
    out = _availability_in_subprocess("", {"R_HOME": "/nonexistent-R"})
    assert out.startswith("False |") and "R_HOME=/nonexistent-R" in out, out


def test_no_r_on_the_path_is_reported():
    env = {"PATH": "/nonexistent", "R_HOME": ""}
    out = _availability_in_subprocess("import os; os.environ.pop('R_HOME', None)", env)
    assert out.startswith("False |") and "R" in out, out


def test_check_reports_a_different_attention_version(monkeypatch, capsys):
    from refimpl.r import bridge as rbridge
    from refimpl.cli import main
    monkeypatch.setattr(rbridge, "EXPECTED_ATTENTION_VERSION", "9.9.9")
    if not rbridge.availability().ok:
        pytest.skip(f"needs R: {rbridge.availability().reason}")
    main(["check", "--random", "0", "--quiet", "--only", "refimpl", "--suite", "quick"])
    assert "measured on attention 9.9.9" in capsys.readouterr().out
