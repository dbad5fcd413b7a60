"""``refimpl export``'s rules, one test per promise of README.md ("`refimpl export` and `conform.R`") and the
module docstring of refimpl.harness.reports.export: the bounds a case file states (from the tolerance model's
formulas, recomputed here from the exported inputs), the packed and KV-cache inputs, what a re-export deletes and
keeps, what an interrupted export leaves, which --out is refused, and the sweep of a killed export's temporaries."""
import json
import math
import os
import re
import shutil
import signal
import types
from itertools import accumulate

import numpy as np
import pytest

import refimpl.harness.reports.export as export_mod
from refimpl.errors import UsageError
from refimpl.harness.cases.families import select
from refimpl.harness.cases.features import materialise
from refimpl.harness.reports.export import Terminated, case_json, export

HOUR = 3600.0
GARBAGE = 1e29          # kvcache: a slot beyond the cached keys holds NaN or a huge number


def _arr(a):
    if a is None:
        return None
    vals = np.array(a["values"], dtype=object)
    conv = np.vectorize(lambda x: float(x) if isinstance(x, str) else x,
                        otypes=[bool if a["dtype"] == "bool" else float])
    return conv(vals).reshape(a["shape"])


def _case(family, index, dtype="float64"):
    spec = [s for s in select([family], "quick", (dtype,)) if s.index == index][0]
    return case_json(materialise(spec))


def _index_files(d):
    return sorted(row["file"] for row in json.loads((d / "index.json").read_text())["cases"])


def _tree(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() or p.is_symlink())


def _interrupt_at(monkeypatch, call):
    """Make the export's ``call``-th case raise Terminated (what SIGTERM raises) while it is computed."""
    real, calls = export_mod.materialise, [0]

    def materialise_then_stop(spec):
        calls[0] += 1
        if calls[0] == call:
            raise Terminated("terminated by SIGTERM")
        return real(spec)
    monkeypatch.setattr(export_mod, "materialise", materialise_then_stop)


# --- the bounds a case file states -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_case_states_the_forward_bounds_of_its_own_inputs(dtype):
    """README: atol = 4 * 2^-53 * n_terms * magnitude, weights_atol the same with magnitude 1, atol_<dtype> with
    that dtype's unit roundoff; n_terms = 2 s D max|q| max|k| + Sk + Dv + 2 and magnitude = max|v| (no mask)."""
    c = _case("scale", 0, dtype)
    f, t = c["features"], c["tolerance"]
    q, k, v = (_arr(c["inputs"][n]) for n in ("q", "k", "v"))
    assert c["inputs"]["mask"] is None and c["inputs"]["alibi_slopes"] is None
    s = 1 / math.sqrt(f["D"]) if f["scale"] is None else f["scale"]
    n = 2 * s * f["D"] * np.abs(q).max() * np.abs(k).max() + f["Sk"] + f["Dv"] + 2
    assert t["n_terms"] == pytest.approx(n, rel=1e-12, abs=0)
    assert t["magnitude"] == np.abs(v).max()
    assert t["atol"] == pytest.approx(4 * 2.0 ** -53 * n * np.abs(v).max(), rel=1e-12, abs=0)
    assert t["weights_atol"] == pytest.approx(4 * 2.0 ** -53 * n, rel=1e-12, abs=0)
    if dtype == "float32":
        assert t["atol_float32"] == pytest.approx(4 * 2.0 ** -24 * n * np.abs(v).max(), rel=1e-12, abs=0)


# --- packed and KV-cache inputs ----------------------------------------------------------------------------------

def test_a_packed_case_gives_its_sequences_cumulative_lengths_from_zero():
    for index in range(3):
        c = _case("varlen", index)
        seqlens = c["features"]["seqlens"]
        assert c["inputs"]["cu_seqlens_q"] == [0, *accumulate(lq for lq, _ in seqlens)]
        assert c["inputs"]["cu_seqlens_k"] == [0, *accumulate(lk for _, lk in seqlens)]


def test_a_kv_cache_case_hands_over_the_cache_before_the_call_with_garbage_where_keys_are_appended():
    """k_cache/v_cache are the cache as the call takes it: the cached keys and values, garbage beyond (also where
    k_new/v_new go); k_cache_after/v_cache_after hold the cached and the appended ones."""
    seen = 0
    for spec in select(["kvcache"], "quick", ("float64",)):
        if not spec.new_len:
            continue
        c = case_json(materialise(spec))
        kv = c["inputs"]["kv_cache"]
        table, bs = kv["block_table"], kv["block_size"]
        for name in ("k", "v"):
            dense = np.swapaxes(_arr(c["inputs"][name]), 1, 2)                   # (B, Sk, Hkv, D|Dv)
            before, after, new = (_arr(kv[f"{name}_cache"]), _arr(kv[f"{name}_cache_after"]),
                                  _arr(kv[f"{name}_new"]))
            for b, cached in enumerate(kv["cache_seqlens"]):
                def slot(p):
                    return (b, p) if table is None else (table[b][p // bs], p % bs)
                for p in range(cached + spec.new_len):
                    assert np.array_equal(after[slot(p)], dense[b, p])
                    if p < cached:
                        assert np.array_equal(before[slot(p)], dense[b, p])
                    else:
                        assert np.array_equal(new[b, p - cached], dense[b, p])
                        x = before[slot(p)]
                        assert (~np.isfinite(x) | (np.abs(x) >= GARBAGE)).all(), (name, b, p)
        seen += 1
    assert seen >= 2


# --- which --out is refused --------------------------------------------------------------------------------------

def test_an_out_that_is_a_file_or_whose_parent_is_missing_is_refused(tmp_path):
    f = tmp_path / "cases.json"
    f.write_text("mine")
    with pytest.raises(UsageError, match=r"--out .*cases\.json: is a file, not a directory"):
        export(["scale"], f, suite="quick")
    assert f.read_text() == "mine"
    with pytest.raises(UsageError, match=r"--out .*: the directory .*nowhere does not exist"):
        export(["scale"], tmp_path / "nowhere" / "cases", suite="quick")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.json"]


def _refusal(tmp_path, n):
    d = tmp_path / f"d{n}"
    d.mkdir()
    names = [f"note{i}.txt" for i in range(n)]
    for name in names:
        (d / name).write_text("mine")
    with pytest.raises(UsageError) as e:
        export(["scale"], d, suite="quick")
    return names, str(e.value)


@pytest.mark.parametrize("n", [5, 7])
def test_a_refusal_names_the_files_it_found_and_counts_the_rest(tmp_path, n):
    names, msg = _refusal(tmp_path, n)
    m = re.search(r"in a directory holding (.*?)(?: and (\d+) more)?; --force", msg)
    assert m, msg
    shown = m.group(1).split(", ")
    assert set(shown) <= set(names) and len(set(shown)) == len(shown)
    assert len(shown) + int(m.group(2) or 0) == n, msg
    assert (m.group(2) is None) == (len(shown) == n), msg          # "and 0 more" is never said


def test_an_index_naming_a_file_outside_the_export_is_not_trusted_even_with_force(tmp_path):
    """Every row must name a case file inside the export, else the index is not trusted at all (and an export
    writes its own index.json there, so even --force refuses): a file outside is never deleted."""
    d, outside = tmp_path / "cases", tmp_path / "precious.json"
    export(["scale"], tmp_path / "other", suite="quick")
    shutil.copy(tmp_path / "other" / "scale" / "0000-float64.json", outside)      # a case file, outside
    d.mkdir()
    index = {"schema": "refimpl-export-index/1", "cases": [{"file": "../precious.json"}]}
    (d / "index.json").write_text(json.dumps(index))
    with pytest.raises(UsageError, match=r"list of files is missing or malformed.*even --force"):
        export(["scale"], d, suite="quick", force=True)
    assert outside.is_file() and json.loads((d / "index.json").read_text()) == index


# --- what a re-export deletes and keeps ---------------------------------------------------------------------------

def test_a_previous_exports_file_the_user_edited_is_kept(tmp_path):
    d = tmp_path / "cases"
    export(["scale", "alibi"], d, suite="quick")
    edited = d / "alibi" / "0000-float64.json"
    c = json.loads(edited.read_text())
    c["describe"] = "my notes on this case"                 # still a case file, no longer as written
    edited.write_text(json.dumps(c))
    res = export(["scale"], d, suite="quick")
    assert edited.is_file() and json.loads(edited.read_text())["describe"] == "my notes on this case"
    assert "alibi/0000-float64.json" in res.kept and "alibi/0000-float64.json" not in res.removed
    assert res.removed and all(r.startswith("alibi/") for r in res.removed)


def test_a_link_the_user_put_in_place_of_a_previous_exports_file_is_kept(tmp_path):
    d, mine = tmp_path / "cases", tmp_path / "mine.json"
    export(["scale", "alibi"], d, suite="quick")
    link = d / "alibi" / "0000-float64.json"
    shutil.copy(link, mine)                                  # the very bytes the export wrote, behind a link
    link.unlink()
    link.symlink_to(mine)
    res = export(["scale"], d, suite="quick")
    assert link.is_symlink() and mine.is_file()
    assert "alibi/0000-float64.json" in res.kept and "alibi/0000-float64.json" not in res.removed


def test_files_an_older_export_listed_without_hashes_are_removed_while_still_case_files(tmp_path):
    """An index row without sha256 (written before hashes were recorded): the file counts as unchanged while it
    is a case file of the export schema; a file the user overwrote is kept."""
    d = tmp_path / "cases"
    export(["scale", "alibi"], d, suite="quick")
    index = json.loads((d / "index.json").read_text())
    for row in index["cases"]:
        del row["sha256"]
    (d / "index.json").write_text(json.dumps(index))
    alibi = sorted(r["file"] for r in index["cases"] if r["family"] == "alibi")
    assert len(alibi) >= 2
    (d / alibi[0]).write_text("my own notes")
    res = export(["scale"], d, suite="quick")
    assert res.removed == alibi[1:] and not any((d / f).exists() for f in alibi[1:])
    assert (d / alibi[0]).read_text() == "my own notes" and res.kept == [alibi[0]]


def test_a_user_file_where_the_export_writes_is_refused_and_kept(tmp_path):
    d = tmp_path / "cases"
    export(["scale"], d, suite="quick")
    mine = d / "alibi" / "0000-float64.json"
    mine.parent.mkdir()
    mine.write_text("my own alibi notes")
    with pytest.raises(UsageError, match=r"files it did not write where this one writes: alibi/0000-float64\.json"):
        export(["alibi"], d, suite="quick")
    assert mine.read_text() == "my own alibi notes"


# --- what an interrupted export leaves ----------------------------------------------------------------------------

def test_an_interrupted_first_export_is_an_export_that_the_next_one_completes(tmp_path, monkeypatch):
    d = tmp_path / "cases"
    _interrupt_at(monkeypatch, 2)
    with pytest.raises(Terminated):
        export(["scale"], d, suite="quick")
    assert _index_files(d) == [] and _tree(d) == ["index.json", "scale/0000-float64.json"]
    monkeypatch.undo()
    res = export(["scale"], d, suite="quick")                # no --force: the directory is an export's
    assert res.kept == [] and _tree(d) == ["index.json", *_index_files(d)] and len(_index_files(d)) == res.cases


def test_an_interrupted_re_export_leaves_the_previous_exports_files_owned(tmp_path, monkeypatch):
    d = tmp_path / "cases"
    export(["scale", "alibi"], d, suite="quick")
    before = _index_files(d)
    _interrupt_at(monkeypatch, 1)
    with pytest.raises(Terminated):
        export(["scale"], d, suite="quick")
    assert _index_files(d) == before
    monkeypatch.undo()
    res = export(["scale"], d, suite="quick")
    assert not (d / "alibi").exists() and res.removed == [f for f in before if f.startswith("alibi/")]


def test_an_interrupted_forced_export_into_a_foreign_folder_makes_it_an_export(tmp_path, monkeypatch):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    _interrupt_at(monkeypatch, 1)
    with pytest.raises(Terminated):
        export(["scale"], d, suite="quick", force=True)
    monkeypatch.undo()
    res = export(["scale"], d, suite="quick")                # no --force needed any more
    assert res.kept == ["notes.txt"] and (d / "notes.txt").read_text() == "keep me"


def test_the_previous_sigterm_handler_is_restored_after_an_export(tmp_path):
    def mine(signum, frame):
        pass
    before = signal.signal(signal.SIGTERM, mine)
    try:
        export(["scale"], tmp_path / "cases", suite="quick")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


# --- the sweep of a killed export's temporaries --------------------------------------------------------------------

def test_temporaries_are_swept_only_when_last_modified_over_an_hour_ago(tmp_path, monkeypatch):
    d = tmp_path / "cases"
    export(["scale"], d, suite="quick")
    now = 2_000_000_000.0                                    # a fixed clock: ages exact to the second
    monkeypatch.setattr(export_mod, "time", types.SimpleNamespace(time=lambda: now))
    ages = {tmp_path / ".cases.tmp-aaaaaaaa": HOUR + 1, tmp_path / ".cases.tmp-bbbbbbbb": HOUR,
            tmp_path / ".cases.old-cccccccc": HOUR + 1,
            d / ".index.json.dddddddd.tmp": HOUR + 1, d / ".index.json.eeeeeeee.tmp": HOUR,
            d / "scale" / ".0001-float64.json.ffffffff.tmp": HOUR + 1,
            d / "scale" / ".0001-float64.json.gggggggg.tmp": HOUR}
    for p, age in ages.items():
        inner = p / "scale" / "0000-float64.json" if ".tmp-" in p.name or ".old-" in p.name else p
        inner.parent.mkdir(parents=True, exist_ok=True)
        inner.write_text("{}")
        for x in (inner, inner.parent, p):
            os.utime(x, (now - age, now - age))
    export(["scale"], d, suite="quick")
    assert {p for p in ages if os.path.lexists(p)} == {p for p, age in ages.items() if age == HOUR}
