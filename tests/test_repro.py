"""Reproduction scripts (refimpl.harness.analysis.repro): standalone, exact, and they agree with the judge — a broken
zoo target's script exits 1 with the problem, a correct one's exits 0."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refimpl.cli import main
from refimpl.errors import UsageError
from refimpl.harness.cases import Status
from refimpl.harness.rows.family_cases import CaseStore, family_case, run_one
from refimpl.harness.cases.features import materialise
from refimpl.harness.analysis.repro import find_spec, script_for, write_repros
from refimpl.harness.reports.report import render
from refimpl.harness.rows.runner import run_check
from refimpl.harness.cases.families import family_specs
from refimpl.harness.target_spec import load_target

ZOO = Path(__file__).parent / "zoo"
ENV = dict.fromkeys(("python", "numpy", "blas", "r", "rpy2", "attention", "torch", "platform"), "unavailable")


def _target(module, fn, api="refimpl"):
    return load_target(f"{ZOO / module}.py:{fn}", api=api)


def _run(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd="/")


def _write(tmp_path, name, text) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_the_script_holds_the_case_inputs_bit_for_bit(tmp_path):
    t = _target("numpy_impls", "plain")
    data = materialise(find_spec("masked-rows/0000-float64"))          # bool mask with fully masked rows
    path = _write(tmp_path, "r.py", script_for("masked-rows/0000-float64", t))
    spec = importlib.util.spec_from_file_location("repro_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)                                       # __main__ guard: nothing runs
    q, k, v = mod.ARGS
    for got, want in ((q, data.q), (k, data.k), (v, data.v), (mod.EXPECTED, data.expected)):
        assert got.dtype == np.float64 and np.array_equal(got.view(np.uint64), want.view(np.uint64))
    assert mod.KWARGS["mask"].dtype == bool and mod.DEAD.any() and np.array_equal(mod.DEAD, data.dead)
    assert mod.ATOL > 0 and mod.WEIGHTS.shape == data.weights.shape
    text = path.read_text()
    assert "import torch" not in text and "float.fromhex" in text


CASES = [("numpy_broken", "scale_sqrt_sk", "refimpl", "sizes/0003-float64", 1),
         ("numpy_broken", "blocked_tail", "refimpl", "sizes/0001-float32", 1),
         ("numpy_broken", "masked_rows_42", "refimpl", "masked-rows/0000-float64", 1),
         ("numpy_broken", "weights_transposed", "refimpl", "sizes/0003-float64", 1),
         ("numpy_broken", "mutates_input", "refimpl", "bool-mask/0001-float64", 1),
         ("numpy_impls", "plain", "refimpl", "sizes/0001-float32", 0),
         ("numpy_impls", "with_weights", "refimpl", "causal/0005-float64", 0),
         ("numpy_impls", "nan_masked_rows", "refimpl", "masked-rows/0000-float64", 0),
         ("torch_sdpa_impls", "sdpa_gqa_modulo", "torch-sdpa", "gqa/0002-float64", 1),
         ("torch_sdpa_impls", "sdpa_plain", "torch-sdpa", "gqa/0002-float64", 0),
         ("flash_impls", "flash_alibi_sign", "flash-attn", "alibi/0001-float32", 1),
         ("flash_impls", "flash_plain", "flash-attn", "alibi/0001-float32", 0)]

# runs each script as __main__ in one interpreter (torch is imported once), prints path, exit code, first line
_DRIVER = """
import contextlib, io, runpy, sys
for path in sys.argv[1:]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            runpy.run_path(path, run_name="__main__")
            code = 0
        except SystemExit as e:
            code = e.code
    print(path, code, buf.getvalue().splitlines()[0] if buf.getvalue() else "")
"""


@pytest.mark.slow
def test_scripts_fail_for_broken_targets_and_pass_for_correct_ones(tmp_path):
    pytest.importorskip("torch")
    paths = []
    for i, (module, fn, api, case, code) in enumerate(CASES):
        t = _target(module, fn, api)
        verdict = run_one(t, find_spec(case), CaseStore())            # the harness agrees with the script
        assert Status(verdict.status).failed == bool(code), (fn, case, verdict.detail)
        text = script_for(case, t)
        assert ("import torch" in text) == (api != "refimpl")
        paths.append(str(_write(tmp_path, f"r{i}.py", text)))
    p = subprocess.run([sys.executable, "-c", _DRIVER] + paths, capture_output=True, text=True, timeout=120, cwd="/")
    assert p.returncode == 0, p.stderr
    got = {path: (int(code), rest) for path, code, rest in (line.split(" ", 2) for line in p.stdout.splitlines())}
    for path, (module, fn, api, case, code) in zip(paths, CASES):
        assert got[path][0] == code, (fn, case, got[path])
        assert got[path][1].startswith("FAIL: " if code else "pass: "), (fn, case, got[path])


def test_repro_dir_writes_one_script_per_failing_case_and_the_report_names_them(tmp_path):
    t = _target("numpy_broken", "blocked_tail")
    specs = family_specs("sizes", "quick", ("float64",))
    run = run_check([t], {}, [family_case("sizes", specs, CaseStore())])
    failing = [r.id for r in run.results[("family:sizes", t.name)].cases if r.status == Status.FAIL]
    assert failing
    paths = write_repros(run, [t], tmp_path / "repros")[t.name]
    assert sorted(Path(p).stem for p in paths) == sorted(i.replace("/", "-") for i in failing)
    assert _run(Path(paths[0])).returncode == 1
    run.repros = {t.name: paths}
    assert f"repro {t.name}: python {paths[0]}" in render(run, "table", ENV)


def test_repro_refuses_what_it_cannot_write():
    t = _target("numpy_impls", "plain")
    with pytest.raises(UsageError, match="--repro 'sizes/9999-float64'"):
        script_for("sizes/9999-float64", t)
    with pytest.raises(UsageError, match="FAMILY/NNNN-DTYPE"):
        script_for("sizes-3", t)
    with pytest.raises(UsageError, match="cannot express"):
        script_for("additive-mask/0000-float64", t)                    # the refimpl API has no additive mask
    with pytest.raises(UsageError, match="built in"):
        script_for("sizes/0000-float64", load_target("refimpl"))


def test_check_repro_prints_the_script(capsys, tmp_path):
    spec = f"{ZOO / 'numpy_broken.py'}:scale_sqrt_sk"
    assert main(["check", "--target", spec, "--repro", "sizes/0003-float32", "--no-isolation", "--quiet"]) == 0
    p = _run(_write(tmp_path, "r.py", capsys.readouterr().out))
    assert p.returncode == 1 and "output: max |error|" in p.stdout


def test_the_script_judges_rows_with_no_key_by_the_policy_the_run_judged_by(tmp_path):
    t = _target("numpy_impls", "nan_masked_rows")                     # NaN on rows with no key
    case = "masked-rows/0000-float64"
    for pinned, code in ((None, 0), ("nan", 0), ("zeros", 1), ("uniform", 1)):
        verdict = run_one(t, find_spec(case), CaseStore(), masked_rows=pinned)    # the judge agrees
        assert Status(verdict.status).failed == bool(code), (pinned, verdict.detail)
        p = _run(_write(tmp_path, f"r_{pinned}.py", script_for(case, t, masked_rows=pinned)))
        assert p.returncode == code, (pinned, p.stdout, p.stderr)
        if code:
            assert f"accepted {pinned}" in p.stdout, p.stdout
