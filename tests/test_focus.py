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
    assert not any(c in p.stdout for c in ("onnxruntime", "torch-mha", "target r:")), p.stdout[-2000:]
    bad = _check("--target", BAD)
    assert bad.returncode == 1 and f"RESULT: NON-CONFORMANCE: {BAD} does not conform" in bad.stdout, bad.stdout[-2000:]


@pytest.mark.slow
def test_with_adds_built_in_columns_and_a_bad_name_is_refused_with_the_choices():
    p = _check("--target", GOOD, "--with", "torch")
    assert p.returncode == 0 and "torch" in p.stdout.split("RESULT")[0], p.stdout[-2000:]
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
            "from refimpl.harness.target import Target\n"
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
