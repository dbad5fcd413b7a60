"""The harness's open axes live in registries: precisions (refimpl/precision.py) and target APIs
(refimpl/harness/apis/). No other module compares an API name or a dtype name; adding an API is one module."""
import ast
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from refimpl import precision
from refimpl.errors import UsageError
from refimpl.harness import apis
from refimpl.harness.cases.features import CaseSpec

PKG = Path(__file__).resolve().parents[1] / "refimpl"
REGISTRIES = {PKG / "precision.py"} | set((PKG / "harness" / "apis").glob("*.py"))
NAMES = {"refimpl", "native", "torch-sdpa", "flash-attn", "jax", "hf", "float64", "float32", "float16", "bfloat16"}
# A file-format vocabulary, not refimpl's precisions: the fixture files' own dtypes (float64, float32, int64, bool).
ALLOWED = {PKG / "fixtures" / "schema.py"}


def _named(node) -> bool:
    """A string constant that is an API or precision name, or a tuple/list/set literal holding one."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in NAMES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_named(e) for e in node.elts)
    return False


def _comparisons(source: str):
    """Line numbers where code decides by an API or precision name: ``x == "jax"``, ``d in ("float16", ...)``,
    a dict literal keyed by two or more such names (dispatch tables), ``match x: case "flash-attn":``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_named(n) for n in [node.left, *node.comparators]):
            yield node.lineno
        elif isinstance(node, ast.Dict) and sum(_named(k) for k in node.keys if k is not None) >= 2:
            yield node.lineno
        elif isinstance(node, ast.MatchValue) and _named(node.value):
            yield node.lineno


def _offenders():
    for path in sorted(PKG.rglob("*.py")):
        if path in REGISTRIES or path in ALLOWED:
            continue
        lines = path.read_text().splitlines()
        for no in _comparisons(path.read_text()):
            yield f"{path.relative_to(PKG.parent)}:{no}: {lines[no - 1].strip()}"


def test_no_module_outside_the_registries_compares_an_api_or_dtype_name():
    bad = list(_offenders())
    assert not bad, "ask refimpl.precision or refimpl.harness.apis instead:\n" + "\n".join(bad)


def test_the_guard_catches_each_kind_of_comparison():
    for code in ('if api == "flash-attn":\n    pass', 'ok = "float64" != dtype',
                 'if d in ("float16", "bfloat16"):\n    pass',
                 'ok = "float64" not in dtypes', "x = target.api != 'refimpl'",
                 'call = {"jax": f, "hf": g}[api]', 'call = {"jax": f, "hf": g}.get(api)',
                 'match api:\n    case "torch-sdpa":\n        pass', 'ok = x in ["bfloat16"]'):
        assert list(_comparisons(code)), code
    for code in ('dtype: str = "float64"', 'Target("refimpl", fn)', "name = 'jax_api'", 'd = {"jax": 1}',
                 'ok = api == name', 'ok = precision(d).rank > 2', '# if api == "jax"', 's = "x == \'jax\'"'):
        assert not list(_comparisons(code)), code


def test_precisions_hold_the_ieee_figures():
    p = precision.PRECISIONS
    units = [p[n].eps for n in ("float64", "float32", "float16", "bfloat16")]
    assert units == [2.0 ** -53, 2.0 ** -24, 2.0 ** -11, 2.0 ** -8]
    assert p["float32"].largest == float(np.finfo(np.float32).max) and p["float16"].largest == 65504.0
    assert p["bfloat16"].largest == (2 - 2 ** -7) * 2.0 ** 127
    assert p["bfloat16"].round(np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8])).tolist() == [1.0, 1 + 2 ** -6]   # ties to even
    assert precision.lowest(["float64", "bfloat16", "float32"]) == "bfloat16"
    assert precision.of(np.float16).name == "float16" and precision.of("torch.bfloat16").name == "bfloat16"
    assert precision.of(np.int64) is None


def test_a_bad_dtype_is_refused_by_name_with_the_choices():
    with pytest.raises(ValueError, match=r"--dtype takes a comma-separated list of float64, float32, float16, "
                                         r"bfloat16, got 'float8'"):
        precision.parse_dtypes("float8")
    assert precision.parse_dtypes(" float32, bfloat16") == ("float32", "bfloat16")


def test_the_cli_parses_dtype_once_and_names_the_allowed_values(capsys):
    from refimpl.cli import main
    with pytest.raises(SystemExit) as e:
        main(["check", "--dtype", "float64,half", "--quiet"])
    assert e.value.code == 2
    assert "float64, float32, float16, bfloat16, got 'float64,half'" in capsys.readouterr().err


def test_an_unknown_api_is_refused_naming_the_registered_ones():
    with pytest.raises(UsageError, match="--api must be one of refimpl, torch-sdpa, flash-attn, flash-attn-varlen, "
                                         "flash-attn-kvcache, jax, hf, flex-attention, c-abi, js, got 'tf'"):
        apis.get("tf")


def test_whether_an_api_can_run_a_case_is_its_features_minus_the_case_needs():
    s = CaseSpec("t", 0, Sq=3, Sk=5, D=4, Dv=4, Hq=4, Hkv=2, softcap=5.0)
    assert apis.needs(s) == ["softcap", "gqa"]
    assert apis.expressible("refimpl", s) == "the refimpl protocol has no softcap"
    assert apis.expressible("flash-attn", s) is None
    assert apis.expressible("jax", s) == "jax.nn.dot_product_attention has no softcap"
    br = replace(s, softcap=None, is_causal=True, alignment="bottom-right")
    assert apis.needs(br) == ["gqa", "bottom-right-band"] and apis.expressible("jax", br) is None
    assert apis.expressible("flash-attn", replace(br, alignment="top-left")) == \
        "flash_attn_func aligns causal and windows bottom-right"


class _Echo(apis.Api):
    """A small API of a test's own: ``fn(v, k, q, scale)``, arguments reversed, no masks or other features."""

    def arguments(self, data, conv, layout):
        given = {"q": conv(data.q), "k": conv(data.k), "v": conv(data.v)}
        return given, (given["v"], given["k"], given["q"], data.spec.scale), {}


def test_a_new_api_is_one_object_registered_and_the_harness_runs_it():
    """Adding an API touches nothing outside its own module: here it is registered from the test."""
    from refimpl import scaled_dot_product_attention
    from refimpl.harness.rows.family_cases import CaseStore, run_one
    from refimpl.harness.cases.families import select
    from refimpl.harness.cases import Status
    from refimpl.harness.target_spec import Target
    echo = apis.register(_Echo(name="test-echo", signature="fn(q, k, v, scale=None)", params=("scale",),
                               tensors=False, cannot_express={f: "echo has only q, k, v" for f in apis.base.FEATURES}))
    try:
        def good(v, k, q, scale):
            return scaled_dot_product_attention(q, k, v, scale=scale)[0]

        def bad(v, k, q, scale):                       # the scale argument ignored
            return scaled_dot_product_attention(q, k, v, scale=1.0)[0]
        specs = [s for s in select(["sizes", "scale", "bool-mask"], "quick", ("float64",))]
        store = CaseStore()
        ok = [run_one(Target("good", good, api="test-echo"), s, store) for s in specs]
        ko = [run_one(Target("bad", bad, api="test-echo"), s, store) for s in specs]
        assert {r.status for r in ok} <= {Status.PASS, Status.NA} and Status.PASS in {r.status for r in ok}
        assert any(r.status == Status.NA and "echo has only" in r.detail for r in ok)      # the bool-mask family
        assert sum(r.status == Status.FAIL for r in ko) >= 2
    finally:
        apis.unregister(echo.name)


def test_a_new_column_is_one_object_registered_and_the_check_runs_it(capsys):
    """A trivial column (refimpl's own SDPA doubled: wrong on purpose) registered from the test: the CLI's
    --only finds it, the matrix shows it, and its failures decide the exit code."""
    from refimpl import scaled_dot_product_attention
    from refimpl.cli import main
    from refimpl.harness import columns
    from refimpl.harness.targets.target import Target

    def doubled(q, k, v, mask=None, scale=None, **features):
        out, w = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale, **features)
        return 2.0 * out, w
    col = columns.register(columns.Column("test-doubled", lambda: Target("test-doubled", doubled, api="native"),
                                          "refimpl's output doubled (a test's column)", {"X9": "a test divergence"},
                                          versions=lambda: {"doubler": "9.9.9", "doubler_reason": "a detail"}))
    try:
        assert "test-doubled" in columns.builtin_targets() and columns.divergence_titles()["X9"]
        code = main(["check", "--only", "test-doubled", "--only", "refimpl", "--family", "sizes", "--suite", "quick",
                     "--random", "0", "--quiet", "--dtype", "float64"])
        out = capsys.readouterr().out
        assert code == 1 and "test-doubled" in out and "FAIL" in out and "RESULT: NON-CONFORMANCE" in out
        env_line = next(line for line in out.splitlines() if line.startswith("refimpl check — Python "))
        assert env_line.rstrip().endswith("onnxruntime-node " + columns.versions()["onnxruntime-node"] +
                                          ", doubler 9.9.9"), env_line    # the line is the registry's, in order
        assert ", R " in env_line and ", torch " in env_line and "a detail" not in env_line
    finally:
        columns.unregister(col.name)
    assert "test-doubled" not in columns.builtin_targets()
    with pytest.raises(ValueError, match="built in"):
        columns.unregister("refimpl")


def test_every_name_of_the_readmes_python_api_is_importable_from_refimpl():
    import refimpl
    readme = (PKG.parent / "README.md").read_text()
    section = readme.split("## The Python API", 1)[1].split("\n## ", 1)[0]
    listed = [n for n in re.findall(r"`([A-Za-z_]+)`", section.split("```", 1)[0]) if n != "refimpl"]
    assert len(listed) >= 20 and "sdpa_backward" in listed, listed
    missing = [n for n in listed if not hasattr(refimpl, n) or n not in refimpl.__all__]
    assert not missing, missing
    assert callable(refimpl.sdpa_backward)


def test_an_api_that_returns_bshd_names_the_missing_transpose(capsys):
    """The hf API returns (B, Sq, H, Dv); a kernel that forgets the transpose is told so before the run."""
    from refimpl.cli import main
    zoo = PKG.parent / "tests" / "zoo" / "hf_impls.py"
    code = main(["check", "--target", f"{zoo}:hf_no_transpose", "--api", "hf", "--family", "sizes", "--suite",
                 "quick", "--random", "0", "--quiet", "--no-isolation"])
    err = capsys.readouterr().err
    assert code == 2 and "= (B, H, Sq, Dv)" in err and "--api hf returns (B, Sq, H, Dv)" in err, err
    assert "out.transpose(1, 2)" in err
