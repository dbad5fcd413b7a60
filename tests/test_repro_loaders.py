"""A reproduction script loads its target the way `refimpl check` did: a Python file or module imported, a C-ABI
kernel (``c:lib.so:symbol``), an ES module's function (``js:...``) or an R function (``R:file.R:fn``) through
refimpl's own loaders, the file's path made absolute so the script runs from any directory. The C kernels are
tests/zoo/c's, built with gcc; the script's exit code is its verdict (0 within tolerance, 1 not)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from refimpl.harness.analysis.repro import _import_lines, script_for
from refimpl.harness.target_spec import load_target

ZOO_C = Path(__file__).parent / "zoo" / "c"
GCC = shutil.which("gcc")
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec, loader, loaded", [
    ("c:build/libk.so:attn", "load_function", "c:{cwd}/build/libk.so:attn"),
    ("js:k/kernel.mjs:attention", "load_function", "js:{cwd}/k/kernel.mjs:attention"),
    ("R:k/attn.R:attn", "RFunction", "R:{cwd}/k/attn.R:attn"),
    ("R:attention::attention", "RFunction", "R:attention::attention"),
])
def test_a_kernel_refimpl_loads_itself_is_loaded_by_refimpl_in_the_script(spec, loader, loaded):
    lines = _import_lines(spec)
    assert any(line.startswith("from refimpl.harness.targets.") and f"import {loader}" in line for line in lines)
    assert lines[-1] == f"target = {loader}({loaded.format(cwd=os.getcwd())!r})", lines
    assert not any("import_module" in line for line in lines), lines     # not taken for a Python module name


def test_a_python_module_is_imported_from_where_the_check_ran_and_a_file_by_its_absolute_path():
    assert _import_lines("pkg.mod:fn")[-1] == "target = importlib.import_module('pkg.mod').fn"
    assert repr(os.getcwd()) in _import_lines("pkg.mod:fn")[0]
    file_lines = _import_lines("k/kern.py:fn")
    assert repr(os.path.abspath("k/kern.py")) in file_lines[1] and file_lines[-1] == "target = _mod.fn"


@pytest.mark.skipif(GCC is None, reason="no gcc on PATH: the C zoo cannot be built here (tools/setup.sh installs gcc)")
def test_a_c_kernels_script_runs_from_another_directory_and_its_exit_code_is_the_verdict(tmp_path, monkeypatch):
    lib = tmp_path / "libzoo.so"
    subprocess.run([GCC, "-O2", "-shared", "-fPIC", "-o", str(lib), *map(str, sorted(ZOO_C.glob("*.c"))), "-lm"],
                   check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)                            # the spec's path is relative to where the check runs
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    codes = {}
    for symbol in ("attn", "attn_mask_inverted"):
        target = load_target(f"c:libzoo.so:{symbol}")
        script = elsewhere / f"{symbol}.py"
        script.write_text(script_for("padding/0001-float64", target))
        run = subprocess.run([sys.executable, str(script)], cwd=elsewhere, env=env, capture_output=True, text=True,
                             timeout=120)
        codes[symbol] = (run.returncode, run.stdout[-300:] + run.stderr[-300:])
    assert codes["attn"][0] == 0, codes                    # the correct kernel conforms
    assert codes["attn_mask_inverted"][0] == 1, codes      # the mask read the other way round does not


def _scripts_exit_codes(tmp_path, monkeypatch, specs: dict[str, str], case: str = "padding/0001-float64") -> dict:
    """Each spec's repro script for ``case``, written and run from a directory other than the one the spec's path
    is relative to: ``{name: (exit code, tail of its output)}``."""
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    codes = {}
    for name, spec in specs.items():
        script = elsewhere / f"{name}.py"
        script.write_text(script_for(case, load_target(spec)))
        run = subprocess.run([sys.executable, str(script)], cwd=elsewhere, env=env, capture_output=True, text=True,
                             timeout=180)
        codes[name] = (run.returncode, run.stdout[-300:] + run.stderr[-300:])
    return codes


@pytest.mark.skipif(shutil.which("node") is None, reason="no node on PATH: JavaScript targets need it "
                    "(tools/setup.sh installs it)")
def test_an_es_module_kernels_script_runs_from_another_directory_and_its_exit_code_is_the_verdict(
        tmp_path, monkeypatch):
    for name in ("correct.mjs", "broken.mjs"):
        shutil.copy(ROOT / "tests" / "zoo" / "js" / name, tmp_path / name)
    codes = _scripts_exit_codes(tmp_path, monkeypatch, {"attn": "js:correct.mjs:attn",
                                                        "attn_mask_inverted": "js:broken.mjs:attn_mask_inverted"})
    assert codes["attn"][0] == 0, codes                    # the correct kernel conforms
    assert codes["attn_mask_inverted"][0] == 1, codes      # the mask read the other way round does not


@pytest.mark.r
def test_an_r_functions_script_runs_from_another_directory_and_its_exit_code_is_the_verdict(tmp_path, monkeypatch):
    shutil.copy(ROOT / "tests" / "zoo" / "r" / "attention_impls.R", tmp_path / "impls.R")
    codes = _scripts_exit_codes(tmp_path, monkeypatch, {"correct": "R:impls.R:attn_correct",
                                                        "polarity": "R:impls.R:attn_mask_polarity"})
    assert codes["correct"][0] == 0, codes
    assert codes["polarity"][0] == 1, codes
