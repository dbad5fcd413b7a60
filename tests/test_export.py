"""``refimpl export``: deterministic, atomic JSON cases whose expected values and bounds a reader can use
without Python (checked here against an independent few-line attention, not against refimpl)."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from refimpl.cli import main
from refimpl.errors import UsageError
from refimpl.harness.reports.export import export

FAMILIES = ["causal", "window", "additive-mask", "scale", "masked-rows"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp") / "cases"
    n = export(FAMILIES, d, suite="quick", dtypes=("float64", "float32")).cases
    assert n == len(json.loads((d / "index.json").read_text())["cases"]) > 0
    return d


def _load(out, case_id):
    return json.loads((out / f"{case_id}.json").read_text())


def _arr(a):
    if a is None:
        return None
    vals = np.array(a["values"], dtype=object)
    conv = np.vectorize(lambda x: float(x) if isinstance(x, str) else x,
                        otypes=[bool if a["dtype"] == "bool" else float])
    return conv(vals).reshape(a["shape"])


def _attention(q, k, v, keep, scale):
    """softmax(scale q k^T) v row by row; a row with no key gives zeros (independent of refimpl)."""
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-1]):
        b, h, i = idx
        s = np.array([scale * math.fsum(q[b, h, i] * k[b, h, j]) for j in range(k.shape[2])])
        ok = np.ones(len(s), bool) if keep is None else keep[b, h, i]
        if ok.any():
            e = np.where(ok, np.exp(s - s[ok].max()), 0.0)
            out[idx] = (e / e.sum()) @ v[b, h]
    return out


def test_export_is_deterministic_and_replaces_a_previous_export(out, tmp_path):
    again = tmp_path / "again"
    export(FAMILIES, again, suite="quick", dtypes=("float64", "float32"))
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    export(["scale"], again, suite="quick")                 # a previous export is replaced as a whole
    assert {p.name for p in again.iterdir()} == {"scale", "index.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temp dirs left behind


def test_export_refuses_a_directory_holding_other_files_and_keeps_it(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match=r"--out .*mine: expected a new or empty directory or a previous export"):
        export(["scale"], d, suite="quick")
    assert (d / "notes.txt").read_text() == "keep me"


def test_expected_output_meets_the_exported_bound_against_an_independent_attention(out):
    index = json.loads((out / "index.json").read_text())
    checked = 0
    for row in index["cases"]:
        if row["r_protocol"] is not None or row["dtype"] != "float64":
            continue
        c = _load(out, row["id"])
        q, k, v, keep = (_arr(c["inputs"][n]) for n in ("q", "k", "v", "keep"))
        f = c["features"]
        scale = 1 / math.sqrt(f["D"]) if f["scale"] is None else f["scale"]
        want = _attention(q, k, v, keep, scale)
        got, dead = _arr(c["expected"]["output"]), _arr(c["expected"]["dead_rows"])
        assert got.shape == (f["B"], f["Hq"], f["Sq"], f["Dv"])
        assert np.abs(got - want)[~dead].max(initial=0) <= c["tolerance"]["atol"]
        assert np.array_equal(dead, ~keep.any(axis=-1)) if keep is not None else not dead.any()
        checked += 1
    assert checked >= 10


def test_causal_and_window_are_folded_into_the_keep_mask(out):
    for cid, rule in (("causal/0000-float64", lambda i, j, sq, sk: j <= i),                   # top-left
                      ("causal/0001-float64", lambda i, j, sq, sk: j <= i + sk - sq)):         # bottom-right
        c = _load(out, cid)
        f = c["features"]
        assert f["is_causal"] and f["alignment"] == ("top-left" if cid.endswith("0000-float64") else "bottom-right")
        keep = _arr(c["inputs"]["keep"])
        want = np.array([[rule(i, j, f["Sq"], f["Sk"]) for j in range(f["Sk"])] for i in range(f["Sq"])])
        assert keep.shape == (f["B"], f["Hq"], f["Sq"], f["Sk"]) and (keep == want).all()
    w = _load(out, "window/0000-float64")
    assert w["features"]["window"] is not None and w["inputs"]["keep"] is not None


def test_additive_masks_are_n_a_for_r_with_non_finite_values_as_strings(out):
    cases = [_load(out, f"additive-mask/{i:04d}-float64") for i in range(8)]
    assert all("additive" in c["r_protocol"] and c["inputs"]["keep"] is None for c in cases)
    flat = [json.dumps(c["inputs"]["mask"]["values"]) for c in cases]
    assert any('"-Inf"' in f for f in flat) and not any("Infinity" in f for f in flat)
    assert any(np.isneginf(_arr(c["inputs"]["mask"])).any() for c in cases)


def test_provenance_tolerance_and_float32_bounds(out):
    c = _load(out, "scale/0000-float32")
    assert c["provenance"]["family"] == "scale" and c["provenance"]["seed"] == c["features"]["seed"]
    t = c["tolerance"]
    assert t["atol"] == pytest.approx(4 * 2.0 ** -53 * t["n_terms"] * t["magnitude"])
    assert t["atol_float32"] == pytest.approx(t["atol"] * 2.0 ** 29)
    q = _arr(c["inputs"]["q"])
    assert (q.astype(np.float32).astype(np.float64) == q).all()      # inputs representable in the dtype


def test_the_cli_writes_and_reports_the_count(tmp_path, capsys):
    d = tmp_path / "x"
    assert main(["export", "--family", "scale", "--suite", "quick", "--out", str(d)]) == 0
    n = len(json.loads((d / "index.json").read_text())["cases"])
    assert f"{n} cases written to {d}" in capsys.readouterr().out
    assert main(["export", "--family", "nope", "--out", str(tmp_path / "y")]) == 2
    assert not Path(tmp_path / "y").exists()


# --- issue #27 item 7: an export deletes only files it wrote and leaves no temporary behind ----------------------
ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600


def _tree(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def _hidden(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob(".*"))


def test_a_re_export_keeps_a_file_the_user_added_and_says_so(tmp_path, capsys):
    d = tmp_path / "cases"
    export(["scale", "alibi"], d, suite="quick")
    (d / "notes.txt").write_text("mine")
    (d / "scale" / "my-check.R").write_text("# mine too")
    assert main(["export", "--family", "scale", "--suite", "quick", "--out", str(d)]) == 0
    assert (d / "notes.txt").read_text() == "mine" and (d / "scale" / "my-check.R").read_text() == "# mine too"
    assert not (d / "alibi").exists()                     # the previous export's own files are removed
    files = {row["file"] for row in json.loads((d / "index.json").read_text())["cases"]}
    assert set(_tree(d)) == files | {"index.json", "notes.txt", "scale/my-check.R"}
    said = capsys.readouterr().out
    assert "kept 2 files it did not write" in said and "notes.txt" in said and "scale/my-check.R" in said


@pytest.mark.parametrize("stray", ['{"schema": "refimpl-export-index/1"}', '{"name": "my-package"}', "not json {"])
def test_a_folder_with_a_stray_index_json_and_other_files_is_refused_and_survives(tmp_path, capsys, stray):
    d = tmp_path / "thesis"
    d.mkdir()
    (d / "index.json").write_text(stray)
    (d / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match=r"--out .*thesis: .*index\.json.*--force") as e:
        export(["scale"], d, suite="quick")
    assert "thesis.tex" in str(e.value)
    assert main(["export", "--family", "scale", "--suite", "quick", "--out", str(d)]) == 2
    assert "--force" in capsys.readouterr().err
    assert _tree(d) == ["index.json", "thesis.tex"] and (d / "index.json").read_text() == stray


def test_force_never_overwrites_an_index_json_that_is_not_an_exports(tmp_path, capsys):
    d = tmp_path / "pkg"
    d.mkdir()
    (d / "index.json").write_text('{"name": "my-package"}')
    assert main(["export", "--family", "scale", "--suite", "quick", "--out", str(d), "--force"]) == 2
    err = capsys.readouterr().err
    assert "index.json that is not refimpl's" in err and "even --force" in err, err
    assert _tree(d) == ["index.json"] and (d / "index.json").read_text() == '{"name": "my-package"}'


def test_force_writes_into_a_foreign_folder_and_deletes_nothing_it_did_not_write(tmp_path):
    d = tmp_path / "mine"
    (d / "scale").mkdir(parents=True)
    (d / "notes.txt").write_text("keep me")
    (d / "scale" / "notes.txt").write_text("keep me too")
    assert main(["export", "--family", "scale", "--suite", "quick", "--out", str(d), "--force"]) == 0
    rows = json.loads((d / "index.json").read_text())["cases"]
    assert rows and all((d / r["file"]).is_file() for r in rows)
    res = export(["alibi"], d, suite="quick")             # now a previous export: no --force needed
    assert not (d / "scale" / "0000-float64.json").exists() and res.removed
    assert (d / "notes.txt").read_text() == "keep me" and (d / "scale" / "notes.txt").read_text() == "keep me too"
    assert res.kept == ["notes.txt", "scale/notes.txt"]


def test_a_symlink_out_is_followed_and_the_link_is_kept(tmp_path):
    real = tmp_path / "real"
    export(["scale"], real, suite="quick")
    (real / "notes.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(real)
    export(["scale", "alibi"], link, suite="quick")
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert (real / "alibi" / "0000-float64.json").is_file() and (real / "notes.txt").read_text() == "mine"
    assert not _hidden(tmp_path)
    (tmp_path / "file").write_text("x")
    for name, target, found in (("dangling", tmp_path / "nowhere", "does not exist"),
                                ("to-file", tmp_path / "file", "not a directory")):
        (tmp_path / name).symlink_to(target)
        with pytest.raises(UsageError, match=rf"--out .*{name}: a symlink to .*{found}"):
            export(["scale"], tmp_path / name, suite="quick")
        assert (tmp_path / name).is_symlink() and not (tmp_path / "nowhere").exists()


def test_stale_temporaries_of_a_killed_export_are_swept_and_fresh_ones_kept(tmp_path):
    d = tmp_path / "cases"
    export(["scale"], d, suite="quick")
    stale = [tmp_path / ".cases.tmp-k1ll3d00" / "scale" / "0000-float64.json",       # the old naming, next to --out
             tmp_path / ".cases.old-k1ll3d00" / "x" / "index.json",
             d / ".index.json.k1ll3d00.tmp", d / "scale" / ".0001-float64.json.k1ll3d00.tmp"]   # write_atomic's
    fresh = [tmp_path / ".cases.tmp-4l1ve000" / "scale" / "0000-float64.json", d / ".index.json.4l1ve000.tmp"]
    for f in stale + fresh:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("{}")
    old = time.time() - 2 * HOUR
    for f in stale:
        for p in (f, f.parent, f.parent.parent):
            os.utime(p, (old, old))
    export(["scale"], d, suite="quick")
    assert _hidden(tmp_path) == [".cases.tmp-4l1ve000", "cases/.index.json.4l1ve000.tmp"]   # a live export's stay
    assert (tmp_path / ".cases.tmp-4l1ve000" / "scale" / "0000-float64.json").is_file()


_KILL_MID_WRITE = """
import os, signal, sys
real, calls = os.fsync, [0]
def fsync(fd):                              # a hook: SIGTERM while write_atomic's temporary file exists
    calls[0] += 1
    if calls[0] == 5:
        os.kill(os.getpid(), signal.SIGTERM)
    return real(fd)
os.fsync = fsync
from refimpl.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("how", ["mid-write", "timed"])
def test_an_export_killed_with_sigterm_leaves_no_temporary_files(tmp_path, how):
    d = tmp_path / "cases"
    args = ["export", "--family", "sizes", "--out", str(d)]
    if how == "mid-write":
        p = subprocess.run([sys.executable, "-c", _KILL_MID_WRITE, *args], cwd=ROOT, capture_output=True, text=True,
                           timeout=120)
        rc, err = p.returncode, p.stderr
    else:
        p = subprocess.Popen([sys.executable, "-m", "refimpl", *args], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        rc, err = p.wait(timeout=60), p.stderr.read()
        p.stderr.close()
    assert rc == 130, err
    assert "SIGTERM" in err
    assert not _hidden(tmp_path)
    rows = json.loads((d / "index.json").read_text())["cases"]
    assert all((d / r["file"]).is_file() for r in rows)    # the index never names a file that is not there


def test_a_kv_cache_case_carries_its_cache_table_lengths_and_appended_keys(tmp_path):
    """A kvcache case exports the cache as flash_attn_with_kvcache takes it: reading each sequence's keys through
    the block table (or the dense rows) and appending k_new gives back the case's dense k; the cache the call
    must leave holds them; slots beyond are garbage (NaN or huge), and other cases have kv_cache null."""
    d = tmp_path / "kv"
    export(["kvcache", "causal"], d, suite="quick", dtypes=("float64",))
    assert _load(d, "causal/0000-float64")["inputs"]["kv_cache"] is None
    seen_paged = seen_dense = False
    for f in sorted((d / "kvcache").glob("*.json")):
        c = json.loads(f.read_text())
        kv, feat = c["inputs"]["kv_cache"], c["features"]
        k = np.swapaxes(_arr(c["inputs"]["k"]), 1, 2)                          # (B, Sk, Hkv, D)
        before, after = _arr(kv["k_cache"]), _arr(kv["k_cache_after"])
        table, bs = kv["block_table"], kv["block_size"]
        assert kv["cache_seqlens"] == list(feat["cache_lens"]) and bs == feat["block_size"]
        new = 0 if kv["k_new"] is None else _arr(kv["k_new"]).shape[1]
        assert new == feat["new_len"]
        for b, cached in enumerate(kv["cache_seqlens"]):
            def slot(p):
                return (b, p) if table is None else (table[b][p // bs], p % bs)
            for p in range(cached + new):
                assert np.array_equal(after[slot(p)], k[b, p])
                if p < cached:
                    assert np.array_equal(before[slot(p)], k[b, p])
                else:
                    assert np.array_equal(_arr(kv["k_new"])[b, p - cached], k[b, p])
        rest = before[~np.isfinite(before) | (np.abs(before) >= 1e29)]
        assert rest.size > 0                                                    # garbage where no key lives
        seen_paged |= table is not None
        seen_dense |= table is None
    assert seen_paged and seen_dense
