"""--explore (refimpl.harness.analysis.explore): Hypothesis finds and shrinks a counterexample for broken zoo
targets, none for correct ones, and a database of shrunk specs is replayed first."""
import json
import time
from pathlib import Path

import pytest

from refimpl.errors import UsageError
from refimpl.harness.cases import CheckRun
from refimpl.harness.analysis.explore import explore, search
from refimpl.harness.target_spec import load_target

ZOO = Path(__file__).parent / "zoo"


def _target(module, fn, api="refimpl"):
    return load_target(f"{ZOO / module}.py:{fn}", api=api)


def _found(lines):
    return any(line.startswith("counterexample ") for line in lines)


def test_a_dropped_tail_block_shrinks_to_the_smallest_failing_key_count():
    spec, res, tried = search(_target("numpy_broken", "blocked_tail"), 200, ("float64", "float32"))
    # the bug shows only when Sk > 64 and Sk % 64 != 0: the smallest such case is one query against 65 keys
    assert spec is not None
    assert (spec.Sk, spec.Sq, spec.B, spec.Hq, spec.mask, spec.dtype) == (65, 1, 1, 1, "none", "float64")
    assert res.status == "FAIL" and tried <= 400


BROKEN = [("numpy_broken", "mask_polarity", "refimpl", "mask-polarity"),
          ("torch_sdpa_impls", "sdpa_gqa_modulo", "torch-sdpa", "gqa-grouping"),
          ("flash_impls", "flash_softcap_unscaled", "flash-attn", "softcap")]


@pytest.mark.parametrize("module,fn,api,model", BROKEN, ids=[b[1] for b in BROKEN])
def test_broken_targets_get_a_shrunk_counterexample_with_its_diagnosis(module, fn, api, model):
    if api != "refimpl":
        pytest.importorskip("torch")
    t = _target(module, fn, api)
    t0 = time.perf_counter()
    lines = explore(t, 200)
    assert time.perf_counter() - t0 < 60
    assert _found(lines) and all(line.startswith(f"counterexample {t.name}: ") for line in lines)
    text = "\n".join(lines)
    assert "shrunk: B=1 " in text and "verdict: FAIL" in text and "refimpl (" in text and "target (" in text
    assert f"diagnosis: {model} " in text, text
    run = CheckRun([], [t.name], {}, {}, 0.0, explored={t.name: lines})
    assert not run.ok


CORRECT = [("numpy_impls", "plain", "refimpl", 200), ("torch_sdpa_impls", "sdpa_plain", "torch-sdpa", 100),
           ("flash_impls", "flash_plain", "flash-attn", 100)]


@pytest.mark.parametrize("module,fn,api,n", CORRECT, ids=[c[1] for c in CORRECT])
def test_correct_targets_have_no_counterexample(module, fn, api, n):
    if api != "refimpl":
        pytest.importorskip("torch")
    lines = explore(_target(module, fn, api), n)
    assert lines and lines[0].startswith(f"explore {ZOO / module}.py:{fn}: no counterexample in {n} examples"), lines


def test_the_database_keeps_the_shrunk_spec_and_is_replayed_first(tmp_path):
    db = tmp_path / "explore.json"
    broken = _target("numpy_broken", "scale_inv_d")
    first = explore(broken, 200, db=db)
    entries = json.loads(db.read_text())
    assert _found(first) and len(entries) == 1 and entries[0]["api"] == "refimpl"
    assert entries[0]["spec"]["scale"] is None                   # a wrong *default* scale needs no explicit one
    again = explore(broken, 200, db=db)
    assert any("replayed from" in line for line in again) and "(database replay)" in again[-1]
    assert [x for x in again if "verdict" in x] == [x for x in first if "verdict" in x]
    assert len(json.loads(db.read_text())) == 1                  # replaying adds nothing
    clean = explore(_target("numpy_impls", "plain"), 20, db=db)  # a correct target passes the replayed spec
    assert not _found(clean)


def test_explore_refuses_bad_arguments(tmp_path):
    t = _target("numpy_impls", "plain")
    with pytest.raises(UsageError, match="--explore"):
        explore(t, 0)
    bad = tmp_path / "db.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="--explore-db"):
        explore(t, 5, db=bad)
    with pytest.raises(UsageError, match="--dtype"):
        explore(t, 5, dtypes=("float8",))


def test_a_counterexample_names_only_a_model_the_run_names_too():
    from refimpl.harness.analysis.explore import _agreeing
    one = ["diagnosis: mask-polarity — the mask is inverted", "diagnosis: blocked-tail — the last block dropped"]
    run = ["diagnosis t: blocked-tail — the last block dropped (blocks of 64)"]
    assert _agreeing(one, run) == ["diagnosis: blocked-tail — the last block dropped (blocks of 64)"]   # the run's
    assert _agreeing(one, None) == one                                 # no run's lines given: as diagnosed
    other = ["diagnosis t: scale — the kernel used 1"]
    assert _agreeing(one, other) == ["diagnosis: unknown on this case alone; the run's diagnosis: scale"]
    assert _agreeing(one, ["diagnosis t: unknown"]) == [
        "diagnosis: unknown on this case alone; the run's diagnosis: unknown"]


def test_explore_in_a_run_repeats_the_runs_diagnosis_where_the_case_fits_another_model():
    t = _target("numpy_broken", "mask_polarity")
    agree = explore(t, 200, run_lines=[f"diagnosis {t.name}: mask-polarity — the mask is read inverted"])
    said = [line for line in agree if ": diagnosis: " in line]
    assert said == [f"counterexample {t.name}: diagnosis: mask-polarity — the mask is read inverted"], said
    other = explore(t, 200, run_lines=[f"diagnosis {t.name}: unknown"])
    said = [line for line in other if ": diagnosis: " in line]
    assert said == [f"counterexample {t.name}: diagnosis: unknown on this case alone; the run's diagnosis: "
                    "unknown"], said
