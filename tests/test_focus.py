"""A user's check is about their kernel: with --target, only the reference and the user's targets run (built-in
columns join with --with), the RESULT line and the exit code speak of the targets named, and a built-in column
that cannot run a dtype here is n/a, not an error."""
import subprocess
import sys
from pathlib import Path

import pytest

ZOO = Path(__file__).parent / "zoo"
GOOD, BAD = f"{ZOO / 'numpy_impls.py'}:plain", f"{ZOO / 'numpy_broken.py'}:no_scale"
HALF = f"{ZOO / 'torch_sdpa_impls.py'}:sdpa_plain"
QUICK = ["--family", "sizes", "--suite", "quick", "--random", "0", "--quiet", "--no-isolation"]


def _check(*args):
    return subprocess.run([sys.executable, "-m", "refimpl", "check", *QUICK, *args], capture_output=True, text=True,
                          timeout=600)


def _columns(out: str) -> list[str]:
    header = next(line for line in out.splitlines() if line.startswith("case"))
    return header.split()[1:]


@pytest.mark.slow
def test_a_target_runs_beside_the_reference_only_and_the_result_names_it():
    p = _check("--target", GOOD)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert f"RESULT: {GOOD} conforms" in p.stdout
    assert _columns(p.stdout) == ["refimpl", GOOD], _columns(p.stdout)          # no r, torch, onnxruntime...
    bad = _check("--target", BAD)
    assert bad.returncode == 1 and f"RESULT: NON-CONFORMANCE: {BAD} does not conform" in bad.stdout, bad.stdout[-2000:]


@pytest.mark.slow
def test_with_adds_built_in_columns_and_a_bad_name_is_refused_with_the_choices():
    p = _check("--target", GOOD, "--with", "torch")
    assert p.returncode == 0 and _columns(p.stdout) == ["refimpl", "torch", GOOD], p.stdout[-2000:]
    alone = _check("--with", "torch")
    assert alone.returncode == 2 and "--with adds built-in columns beside --target" in alone.stderr, alone.stderr
    bad = _check("--target", GOOD, "--with", "tensorflow")
    assert bad.returncode == 2 and "refimpl, r, torch, onnxruntime, torch-mha" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_a_half_precision_kernel_exits_0_and_torch_without_half_matmul_is_n_a_not_error():
    p = _check("--target", HALF, "--api", "torch-sdpa", "--dtype", "float16,bfloat16", "--with", "torch")
    assert p.returncode == 0, p.stdout[-3000:]          # torch, named, is judged too: its float16 cells are n/a
    assert f"RESULT: {HALF}, torch conform" in p.stdout
    alone = _check("--target", HALF, "--api", "torch-sdpa", "--dtype", "float16,bfloat16")
    assert alone.returncode == 0 and f"RESULT: {HALF} conforms" in alone.stdout, alone.stdout[-3000:]


@pytest.mark.slow
def test_a_built_in_columns_failure_changes_the_exit_code_only_when_it_was_named(tmp_path):
    """A broken column registered by a plugin module: seen with --with all, judged only when named."""
    code = ("import sys, runpy\n"
            "from refimpl import scaled_dot_product_attention as sdpa\n"
            "from refimpl.harness import columns\n"
            "from refimpl.harness.targets.target import Target\n"
            "def doubled(q, k, v, mask=None, scale=None, **kw):\n"
            "    o, w = sdpa(q, k, v, mask=mask, scale=scale, **kw)\n"
            "    return 2 * o, w\n"
            "columns.register(columns.Column('doubled', lambda: Target('doubled', doubled, api='native'), 'broken'))\n"
            "from refimpl.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    script = tmp_path / "with_doubled.py"
    script.write_text(code)

    def run(*args):
        return subprocess.run([sys.executable, str(script), "check", *QUICK, "--target", GOOD, *args],
                              capture_output=True, text=True, timeout=600)
    seen = run("--with", "all")
    assert seen.returncode == 0 and "FAIL" in seen.stdout and f"RESULT: {GOOD} conforms" in seen.stdout, \
        seen.stdout[-2000:]
    named = run("--with", "doubled")
    assert named.returncode == 1 and "RESULT: NON-CONFORMANCE: doubled does not conform" in named.stdout, \
        named.stdout[-2000:]


@pytest.mark.slow
def test_a_named_target_that_checks_nothing_is_not_a_pass():
    """flash_attn_func takes no masks: every bool-mask case is n/a for it, so nothing about it was checked."""
    flash = f"{ZOO / 'flash_impls.py'}:flash_plain"
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--target", flash, "--api", "flash-attn",
                        "--family", "bool-mask", "--suite", "quick", "--random", "0", "--quiet", "--dtype", "float32"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and f"NOTHING CHECKED for {flash}" in p.stderr, (p.returncode, p.stderr[-1500:])


@pytest.mark.slow
def test_a_column_named_with_with_that_cannot_start_is_not_a_pass(tmp_path):
    code = ("import sys\n"
            "from refimpl.errors import Unavailable\n"
            "from refimpl.harness import columns\n"
            "def ghost():\n"
            "    raise Unavailable('the ghost runtime is not installed')\n"
            "columns.register(columns.Column('ghost', ghost, 'a runtime that is not here'))\n"
            "from refimpl.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    script = tmp_path / "with_ghost.py"
    script.write_text(code)
    p = subprocess.run([sys.executable, str(script), "check", *QUICK, "--target", GOOD, "--with", "ghost"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 1 and "NON-CONFORMANCE: ghost (unavailable) does not conform" in p.stdout, p.stdout[-1500:]


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("case")) + 2
    rows = {}
    for line in lines[start:]:
        if not line.strip() or line.startswith(("Cells:", "Details:")):
            break
        rows[line.split()[0]] = line.split()[1:]
    return rows


@pytest.mark.r
def test_rs_rows_join_a_users_check_with_the_r_column_only():
    p = subprocess.run([sys.executable, "-m", "refimpl", "check", "--target", GOOD, "--no-families", "--suite", "quick",
                        "--quiet", "--no-isolation"], capture_output=True, text=True, timeout=600)
    rows = _rows(p.stdout)
    assert p.returncode == 0, p.stdout[-2000:]
    assert not [r for r in rows if r.startswith(("random-vs-r", "r-examples"))], list(rows)   # R not started
    assert rows["vignette:simple_attention"][2] == "pass", rows        # against refimpl's recomputation
    with_r = subprocess.run([sys.executable, "-m", "refimpl", "check", "--target", GOOD, "--no-families", "--suite",
                             "quick", "--random", "5", "--quiet", "--no-isolation", "--with", "r"],
                            capture_output=True, text=True, timeout=600)
    rows = _rows(with_r.stdout)
    assert with_r.returncode == 0 and _columns(with_r.stdout) == ["refimpl", "r", GOOD], with_r.stdout[-2000:]
    assert "random-vs-r:5" in rows and "r-examples:documented" in rows, list(rows)
