"""The setup script and the benchmark command work (figures are printed, never asserted)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs only under the project's own Debian setup (.venv made by tools/setup.sh), "
                           "not on the pip route, where setup.sh would try to install Debian packages")
def test_setup_is_idempotent_a_second_run_installs_nothing():
    r = subprocess.run(["bash", str(ROOT / "tools" / "setup.sh")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("[setup]")]
    assert len(lines) == 4 and not any("run:" in line for line in lines), lines
    assert "attention" in r.stdout and "Debian packages present" in r.stdout


def test_bench_prints_figures():
    r = subprocess.run([sys.executable, "-m", "refimpl", "bench", "--quick", "--only", "accuracy"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "float32 max abs error vs float64 oracle" in r.stdout and "online / plain" in r.stdout


def test_bench_refuses_an_unknown_section():
    r = subprocess.run([sys.executable, "-m", "refimpl", "bench", "--only", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown section" in r.stderr
