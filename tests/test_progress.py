"""The progress line: cases done of all, failures so far, time left; rewritten in place on a terminal, plain
lines elsewhere, nothing with --quiet."""
import io
from pathlib import Path

import pytest

from refimpl.harness.reports import progress as P
from refimpl.harness.rows.family_cases import CaseStore, family_case
from refimpl.harness.cases.families import select
from refimpl.harness.rows.runner import run_check
from refimpl.harness.target_spec import load_target

ZOO = Path(__file__).parent / "zoo"


@pytest.fixture(autouse=True)
def _at_once(monkeypatch):
    monkeypatch.setattr(P, "QUIET_FIRST", 0.0)
    monkeypatch.setattr(P, "PLAIN_EVERY", 0.0)
    monkeypatch.setattr(P, "LIVE_EVERY", 0.0)


def _run(spec, stream, live):
    store = CaseStore()
    specs = select(["sizes", "bool-mask"], "quick", ("float64",))
    prog = P.Progress(stream=stream, live=live)
    cases = [family_case(n, [s for s in specs if s.family == n], store, progress=prog) for n in ("sizes", "bool-mask")]
    run_check([load_target(spec)], {}, cases, prog)
    prog.close()
    return prog, len(specs)


def test_plain_lines_count_every_case_and_the_failures():
    out = io.StringIO()
    prog, n = _run(f"{ZOO / 'numpy_broken.py'}:mask_polarity", out, live=False)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and lines
    assert prog.done == prog.total == n
    fails = int(lines[-1].split("] ")[1].split(" failed")[0])
    assert fails == prog.failed and 0 < fails < n          # the bool-mask cases fail, the unmasked ones do not
    assert lines[-1].lstrip().startswith(f"[{n}/{n}]") or lines[-1].lstrip().startswith(f"[{n:,}/{n:,}]")


def test_a_terminal_gets_one_line_rewritten_in_place_and_closed():
    out = io.StringIO()
    prog, n = _run(f"{ZOO / 'numpy_impls.py'}:plain", out, live=True)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\x1b[K\n") and text.count("\r") > 3
    assert "0 failed" in text.rsplit("\r", 1)[1] and prog.failed == 0
    assert "s left" in text                                # an estimate while cases remain


def test_quiet_says_nothing():
    out = io.StringIO()
    prog = P.Progress(quiet=True, stream=out, live=True)
    prog.tick(1, 2, 0)
    prog("family:sizes x t ...")
    prog.close()
    assert out.getvalue() == ""
