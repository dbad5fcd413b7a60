"""refimpl regen: drift detection, determinism, atomic writes, facts never rewritten."""
import json
import shutil

import numpy as np
import pytest

from refimpl import fixtures as fx_mod
from refimpl.fixtures.regen import regen

ROOT = fx_mod.fixtures_dir()
NO_R_SOURCES = ["cristina-mlm", "codefinity", "politi-tds", "raschka-2023"]


@pytest.fixture
def copy(tmp_path):
    root = tmp_path / "fixtures"
    shutil.copytree(ROOT, root)
    return root


def _quiet(_):
    pass


def test_check_passes_on_the_committed_fixtures():
    res = regen(NO_R_SOURCES, root=ROOT, say=_quiet)
    assert res.ok, res.problems
    assert res.fixtures >= 6 and not res.skipped


@pytest.mark.r
def test_check_passes_for_the_r_source(rb):
    res = regen(["r-attention"], root=ROOT, say=_quiet)
    assert res.ok and res.fixtures == 5, res.problems


def test_write_twice_is_byte_identical_and_equals_the_repo(copy):
    regen(NO_R_SOURCES, write=True, root=copy, say=_quiet)
    first = {p.name: p.read_bytes() for p in copy.glob("*/*.json")}
    res = regen(NO_R_SOURCES, write=True, root=copy, say=_quiet)
    assert res.written == [], "second write changed files"
    assert {p.name: p.read_bytes() for p in copy.glob("*/*.json")} == first
    for src in NO_R_SOURCES:
        for p in (ROOT / src).glob("*.json"):
            assert (copy / src / p.name).read_bytes() == p.read_bytes(), f"{p} differs from a fresh --write"


def _edit(path, fn):
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(fx_mod.dumps(obj))


def test_drift_beyond_tolerance_fails_and_names_the_array(copy):
    p = copy / "codefinity" / "self-attention.json"
    _edit(p, lambda o: o["expected"]["weights"][0]["value"]["values"][0].__setitem__(0, 0.3))
    lines = []
    res = regen(["codefinity"], root=copy, say=lines.append)
    assert not res.ok
    assert any("expected.weights [decimal50] drifts beyond its tolerance" in m for m in res.problems), res.problems
    assert any("ulp" in line for line in lines)


def test_drift_of_one_ulp_is_reported_and_passes(copy):
    p = copy / "codefinity" / "self-attention.json"

    def nudge(o):
        row = o["expected"]["output"][0]["value"]["values"][0]
        row[0] = float(np.nextafter(row[0], np.inf))
    _edit(p, nudge)
    lines = []
    res = regen(["codefinity"], root=copy, say=lines.append)
    assert res.ok, res.problems
    assert any("output [decimal50]" in line and " 1 ulp" in line for line in lines), lines


def test_new_and_orphaned_fixtures_fail_the_check(copy):
    (copy / "codefinity" / "self-attention.json").rename(copy / "codefinity" / "renamed.json")
    res = regen(["codefinity"], root=copy, say=_quiet)
    assert not res.ok
    assert any("NEW" in m for m in res.problems) and any("ORPHAN" in m for m in res.problems)


def test_published_numbers_are_never_rewritten(copy):
    p = copy / "cristina-mlm" / "general-attention.json"
    _edit(p, lambda o: o["expected"]["attention"][0]["value"]["values"][0].__setitem__(0, 0.98522024))
    res = regen(["cristina-mlm"], write=True, root=copy, say=_quiet)
    assert not res.ok and res.written == []
    assert any("published" in m for m in res.problems), res.problems
    assert json.loads(p.read_text())["expected"]["attention"][0]["value"]["values"][0][0] == 0.98522024


def test_write_is_atomic_temp_file_then_rename(copy, monkeypatch):
    import os
    calls = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append((str(a), str(b))), real(a, b))[1])
    p = copy / "codefinity" / "self-attention.json"
    p.unlink()
    regen(["codefinity"], write=True, root=copy, say=_quiet)
    assert calls and calls[0][1] == str(p) and ".tmp" in calls[0][0]
    assert not list(copy.glob("**/*.tmp"))
