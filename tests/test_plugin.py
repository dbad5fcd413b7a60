"""The pytest plugin: family cases as parametrised tests (ids family/case), APIs, dtypes, deterministic shards."""
import subprocess
import sys
from pathlib import Path

import pytest

ZOO = Path(__file__).parent / "zoo"


def _pytest(*args):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                           "refimpl.conformance", *args], capture_output=True, text=True, timeout=300)


def _collected(*args):
    p = _pytest("--collect-only", *args)
    return {line.split("[", 1)[1].rstrip("]").split("-", 1)[1] for line in p.stdout.splitlines()
            if line.startswith("refimpl/conformance.py::test_family_case[")}


@pytest.mark.slow
def test_shards_split_the_family_cases_deterministically_and_completely():
    common = ["--refimpl-family", "causal", "--refimpl-family", "gqa"]
    whole = _collected(*common)
    parts = [_collected(*common, "--refimpl-shard", f"{k}/3") for k in (1, 2, 3)]
    assert whole and all(parts), (len(whole), [len(p) for p in parts])
    assert set().union(*parts) == whole and sum(len(p) for p in parts) == len(whole)
    assert parts[0] == _collected(*common, "--refimpl-shard", "1/3")          # the same split every time
    assert all(i.split("/")[0] in ("causal", "gqa") for i in whole)


@pytest.mark.slow
def test_a_correct_torch_sdpa_kernel_passes_and_a_misaligned_one_fails_in_bfloat16():
    args = ["--refimpl-api", "torch-sdpa", "--refimpl-family", "causal", "--refimpl-dtype", "bfloat16"]
    ok = _pytest("--refimpl-target", f"{ZOO / 'torch_sdpa_impls.py'}:sdpa_online", *args)
    assert ok.returncode == 0, ok.stdout[-1500:]
    bad = _pytest("--refimpl-target", f"{ZOO / 'torch_sdpa_impls.py'}:sdpa_causal_bottom_right", *args)
    assert bad.returncode == 1 and "test_family_case" in bad.stdout and "bfloat16" in bad.stdout, bad.stdout[-1500:]


@pytest.mark.slow
def test_a_target_that_segfaults_fails_its_cases_and_the_session_goes_on():
    """The plugin isolates targets as refimpl check does: pytest reports, it does not die with SIGSEGV."""
    p = _pytest("--refimpl-target", f"{ZOO / 'hostile.py'}:segfault", "--refimpl-family", "sizes",
                "--refimpl-dtype", "float64", "-k", "test_family_case", "-rf")
    assert p.returncode == 1, (p.returncode, p.stdout[-1500:])
    failed = [line for line in p.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and "passed" in p.stdout.splitlines()[-1], p.stdout[-1500:]      # every 3rd call crashes
    assert p.stdout.count(": crash: ") >= len(failed) and "SIGSEGV" in p.stdout, p.stdout[-3000:]


@pytest.mark.slow
@pytest.mark.r
def test_an_r_function_target_runs_in_its_worker_with_embedded_r(rb):
    """R:file.R:fn targets get the R worker in the plugin as in refimpl check: the correct one passes, a wrong
    scale fails."""
    args = ["--refimpl-family", "scale", "--refimpl-dtype", "float64", "-k", "test_family_case"]
    ok = _pytest("--refimpl-target", f"R:{ZOO / 'r' / 'attention_impls.R'}:attn_correct", *args)
    assert ok.returncode == 0 and " passed" in ok.stdout.splitlines()[-1], ok.stdout[-1500:]
    bad = _pytest("--refimpl-target", f"R:{ZOO / 'r' / 'attention_impls.R'}:attn_wrong_scale", *args)
    assert bad.returncode == 1 and "FAIL" in bad.stdout, bad.stdout[-1500:]


def test_a_zero_timeout_is_a_usage_error_naming_the_option():
    p = _pytest("--refimpl-target", f"{ZOO / 'numpy_impls.py'}:plain", "--refimpl-timeout", "0")
    assert p.returncode == 4 and "--refimpl-timeout" in p.stderr and "expected a number > 0" in p.stderr, p.stderr


def test_a_failing_case_in_the_plugin_carries_the_diagnosis_and_localisation_and_writes_repro_scripts(tmp_path):
    """The plugin has what refimpl check has: the bug model named, where it fails, and the scripts."""
    p = _pytest("--refimpl-target", f"{ZOO / 'numpy_broken.py'}:mask_polarity", "--refimpl-family", "bool-mask",
                "--refimpl-family", "sizes", "--refimpl-dtype", "float64", "--refimpl-repro-dir", str(tmp_path),
                "-k", "test_family_case")
    assert p.returncode == 1, p.stdout[-2000:]
    assert "diagnosis " in p.stdout and "mask-polarity" in p.stdout, p.stdout[-3000:]
    assert "localisation " in p.stdout and "bool mask" in p.stdout, p.stdout[-3000:]
    scripts = list(tmp_path.rglob("bool-mask-*.py"))
    assert scripts and not list(tmp_path.rglob("sizes-*.py"))        # only the failing cases get one
    run = subprocess.run([sys.executable, str(scripts[0])], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and run.stdout.startswith("FAIL"), run.stdout
