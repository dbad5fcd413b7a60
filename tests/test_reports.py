"""Every report format carries the diagnosis, localisation, repros and conventions of each target; the JSON
validates against its documented schema with per-case results; JUnit has one testcase per family case; the
HTML page puts failures first with their details and colours differences in units of the tolerance."""
import importlib.util
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from refimpl.harness.reports import report
from refimpl.harness.cases import Case, CheckRun, Outcome, Status
from refimpl.harness.analysis.diagnosis import analyse_run
from refimpl.harness.targets.probe import probe_targets, record
from refimpl.harness.rows.runner import collect_cases, run_check
from refimpl.harness.target_spec import Target, builtin_targets

ROOT = Path(__file__).parent
ENV = {k: "x" for k in ("python", "numpy", "blas", "r", "rpy2", "torch", "platform")} | {"attention": "unavailable"}
LINE = re.compile(r"^(?:- )?conventions (\S+): masked-rows=(zeros|nan|uniform|mean-v|other|mix\([a-z:0-9,-]+\)|n/a), "
                  r"causal=(top-left|bottom-right|other|n/a), returns=(output|output\+weights|n/a)$", re.M)


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"reports_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _nan_rows_in_odd_batches(plain):
    """``plain`` (correct, zeros on a fully masked row), except that such a row is NaN when the batch has an odd
    number of entries: one policy in some cases, another in the rest (the conventions line must say a mix)."""
    import numpy as np

    def fn(q, k, v, mask=None, scale=None):
        out = np.array(plain(q, k, v, mask=mask, scale=scale))
        if mask is not None and q.shape[0] % 2 == 1:
            dead = ~np.broadcast_to(mask, q.shape[:2] + (q.shape[2], k.shape[2])).any(-1)
            out[dead] = np.nan
        return out
    return fn


@pytest.fixture(scope="module")
def run():
    demo, zoo = _module(ROOT / "support" / "demo_targets.py"), _module(ROOT / "zoo" / "numpy_impls.py")
    targets = [builtin_targets()["refimpl"](), Target("wrong_scale", demo.wrong_scale),
               Target("nan_rows", zoo.nan_masked_rows), Target("plain", zoo.plain),
               Target("mixed", _nan_rows_in_odd_batches(zoo.plain))]
    cases = [c for c in collect_cases(random_n=0, families=["sizes", "masked-rows"], suite="quick",
                                      dtypes=("float64",)) if c.id.startswith("family:")]
    r = run_check(targets, {}, cases)
    analyse_run(r)
    record(r, probe_targets(targets, user=set()))
    r.repros = {"wrong_scale": [f"/tmp/repro/sizes-{i:04d}.py" for i in range(5)]}
    return r


def test_conventions_line_for_every_target_from_what_the_targets_did(run):
    text = report.render(run, "table", ENV)
    got = {m.group(1): m.groups()[1:] for m in LINE.finditer(text)}
    assert set(got) == set(run.targets)
    assert got["nan_rows"] == ("nan", "n/a", "output")          # the zoo's catalogued convention: NaN rows
    assert got["plain"] == ("zeros", "n/a", "output")
    mixed = re.fullmatch(r"mix\(([a-z-]+):(\d+),([a-z-]+):(\d+)\)", got["mixed"][0])   # not one policy: counted
    assert mixed and {mixed.group(1), mixed.group(3)} == {"nan", "zeros"}
    assert got["wrong_scale"][2] == "output+weights"             # demo_targets return (output, weights)
    assert got["refimpl"][1] == "top-left"


def test_table_and_markdown_carry_diagnosis_localisation_and_repros(run):
    assert run.diagnoses["wrong_scale"] and run.localisations["wrong_scale"]
    for fmt, prefix in (("table", ""), ("markdown", "- ")):
        text = report.render(run, fmt, ENV)
        lines = text.splitlines()
        assert prefix + run.diagnoses["wrong_scale"][0] in lines
        assert f"{prefix}localisation wrong_scale: {run.localisations['wrong_scale']}" in lines
        assert f"{prefix}repro wrong_scale: python /tmp/repro/sizes-0000.py" in lines
        assert f"{prefix}repro wrong_scale: +2 more in /tmp/repro" in lines
        assert len(LINE.findall(text)) == len(run.targets)
    assert "## Targets" in report.render(run, "markdown", ENV)


def test_json_validates_against_its_documented_schema(run):
    doc = json.loads(report.render(run, "json", ENV))
    s = report.JSON_SCHEMA
    for key, typ in s["top"].items():
        assert isinstance(doc[key], typ), key
    assert set(doc["per_target"]) == set(doc["targets"])
    for t, info in doc["per_target"].items():
        for key, typ in s["per_target"].items():
            assert isinstance(info[key], typ), (t, key)
        assert tuple(info["conventions"]) == s["conventions"]
        assert LINE.fullmatch(info["conventions_line"]) and info["conventions_line"].startswith(f"conventions {t}:")
    assert doc["per_target"]["wrong_scale"]["diagnosis"] == run.diagnoses["wrong_scale"]
    assert doc["per_target"]["wrong_scale"]["repros"][0] == "/tmp/repro/sizes-0000.py"
    n_family = 0
    for case in doc["cases"]:
        for key, typ in s["case"].items():
            assert isinstance(case[key], typ), key
        for t, res in case["results"].items():
            for key, typ in s["result"].items():
                assert isinstance(res[key], typ), (case["id"], t, key)
            assert res["status"] in s["statuses"]
            for fc in res["cases"]:
                n_family += 1
                for key, typ in s["family_case"].items():
                    assert isinstance(fc[key], typ), (fc["id"], key)
                assert fc["status"] in s["statuses"] and fc["id"].startswith(case["id"].split(":")[1] + "/")
    specs = [sp for c in run.cases for sp in c.specs]
    assert n_family == len(specs) * len(run.targets)
    fam = next(c for c in doc["cases"] if c["id"] == "family:sizes")["results"]["wrong_scale"]["cases"]
    spec = next(sp for sp in specs if sp.id == fam[0]["id"])
    assert set(fam[0]["features"]) == {n for n, x in spec.features().items() if x}
    assert any(fc["status"] == "FAIL" and (fc["ratio"] is None or fc["ratio"] > 1) for fc in fam)


def test_junit_has_one_testcase_per_family_case_and_failures_carry_the_diagnosis(run):
    root = ET.fromstring(report.render(run, "junit", ENV).split("\n", 1)[1])
    suite = next(s for s in root.findall("testsuite") if s.get("name") == "refimpl.wrong_scale")
    names = [tc.get("name") for tc in suite.findall("testcase")]
    ids = [sp.id for c in run.cases for sp in c.specs]
    assert names == ids and int(suite.get("tests")) == len(ids)
    failures = [tc.find("failure") for tc in suite.findall("testcase") if tc.find("failure") is not None]
    assert len(failures) == int(suite.get("failures")) > 0
    assert all(run.diagnoses["wrong_scale"][0] in f.text for f in failures)
    assert all(tc.find("failure") is None for tc in root.find("testsuite[@name='refimpl.plain']"))


def _synthetic(**cells):
    """A CheckRun of hand-made rows: ``cells`` row id -> {target: Outcome}."""
    cases = [Case(cid, "g", f"row {cid}", lambda t: None) for cid in cells]
    targets = sorted({t for row in cells.values() for t in row})
    results = {(cid, t): o for cid, row in cells.items() for t, o in row.items()}
    return CheckRun(cases, targets, results, {}, 0.1)


def test_conventions_aggregate_over_rows():
    conv = [{"masked-rows": "zeros", "returns": "output"}, {"masked-rows": "nan", "returns": "output+weights"}, {}]
    r = _synthetic(a={"t": Outcome(Status.PASS, conventions=conv[0]), "u": Outcome(Status.PASS, conventions={})},
                   b={"t": Outcome(Status.PASS, conventions=conv[1]), "u": Outcome(Status.PASS, conventions={})})
    assert report.conventions(r, "t") == {"masked-rows": "mix(nan:1,zeros:1)", "causal": "n/a",
                                          "returns": "output+weights"}
    mixed_row = {"masked-rows": "zeros", "masked-rows-counts": {"zeros": 12, "nan": 3}}
    zeros_row = {"masked-rows": "zeros", "masked-rows-counts": {"zeros": 5}}
    counted = _synthetic(a={"t": Outcome(Status.PASS, conventions=mixed_row)},
                         b={"t": Outcome(Status.PASS, conventions=zeros_row)})
    assert report.conventions(counted, "t")["masked-rows"] == "mix(zeros:17,nan:3)"     # cases, not rows
    assert report.conventions_line("u", report.conventions(r, "u")) == \
        "conventions u: masked-rows=n/a, causal=n/a, returns=n/a"


def test_traceback_lines_only_with_the_flag_and_one_per_distinct_frames():
    from refimpl.harness.verdicts.judge import CaseResult
    tb = ('Traceback (most recent call last):\n  File "/x/mine.py", line 3, in f\n    raise ValueError(n)\n'
          'ValueError: {}\n')
    cr = [CaseResult(f"sizes/000{i}-float64", Status.ERROR, math.inf, "ValueError", traceback=tb.format(i))
          for i in range(3)]
    r = _synthetic(**{"family:sizes": {"t": Outcome(Status.ERROR, math.inf, math.inf, "3 cases", cases=cr)}})
    plain, full = report.render(r, "table", ENV), report.render(r, "table", ENV, traceback=True)
    assert "--traceback shows" in plain and 'mine.py", line 3' not in plain
    assert full.count('File "/x/mine.py", line 3') == 1 and "traceback t sizes/0000-float64" in full
    doc = json.loads(report.render(r, "json", ENV, traceback=True))
    assert doc["cases"][0]["results"]["t"]["cases"][2]["traceback"].endswith("ValueError: 2\n")


def test_html_failures_first_details_on_the_page_heatmaps_only_where_it_failed(tmp_path):
    pytest.importorskip("matplotlib")
    from refimpl.harness.reports.html import write_html
    exp = np.full((4, 5), 0.2)
    act = exp + np.array([0.5, -0.5, 3.0, -3.0, 0.0]) * 1e-3          # tolerance 1e-3: two within, two beyond
    ok = Outcome(Status.PASS, 0.5, 5e-4, "fine", heat={"weights": (exp, exp)})
    bad = Outcome(Status.FAIL, 3.0, 3e-3, "weights: max abs 0.003 THE-DETAIL", heat={"weights": (exp, act)})
    r = _synthetic(**{"fixture:a": {"t": ok}, "fixture:b": {"t": bad}})
    write_html(r, tmp_path / "r.html", ENV)
    page = (tmp_path / "r.html").read_text()
    assert page.index("Failures") < page.index("Matrix") < page.index("Heatmaps")
    assert ">weights: max abs 0.003 THE-DETAIL<" in page                  # on the page, not only in a title
    assert page.index("fixture:b</td>") < page.index("fixture:a</td>")     # the failing row first in the matrix
    assert page.count("data:image/png;base64,") == 1 and "tolerance 0.001" in page


def test_difference_scale_is_symmetric_and_pale_within_the_tolerance():
    pytest.importorskip("matplotlib")
    from refimpl.harness.reports.html import diff_scale
    for limit in (2.0, 50.0, 1e12):
        norm, cmap = diff_scale(limit)
        for x in (0.3, 0.99, 1.5, 7.0, limit):
            assert abs(float(norm(-x)) - (1 - float(norm(x)))) < 1e-9
        assert min(cmap(float(norm(0.95)))[:3]) > 0.85                     # noise: pale grey
        assert min(cmap(float(norm(-0.95)))[:3]) > 0.85
        red, blue = cmap(float(norm(1.2))), cmap(float(norm(-1.2)))
        assert red[0] > red[2] + 0.2 and blue[2] > blue[0] + 0.2            # beyond: red above, blue below
        assert cmap(float(norm(limit)))[0] < red[0]                         # darker further out
