"""The structure of refimpl: arrows point down, the catalogue and its page agree, the step vocabulary is closed,
the project holds every fact it uses, user-visible errors are RefimplErrors, Ctrl-C keeps what finished."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

from refimpl import fixtures as fx_mod
from refimpl.cli import EXIT_INTERRUPTED, main
from refimpl.harness.rows import runner
from refimpl.harness.cases import Case, Outcome, Status
from refimpl.harness.columns import DIVERGENCE_TITLES
from refimpl.harness.target_spec import builtin_targets

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "refimpl"
MATH = {"_checks", "_kernel", "softmax", "masks", "attention", "multihead", "online", "family", "backward",
        "backward_online"}


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    mod = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    pkg = mod.rsplit(".", 1)[0] if path.name != "__init__.py" else mod
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def _modules():
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in PKG.rglob("*.py")}


def test_the_math_imports_only_the_math():
    for name, path in _modules().items():
        short = name.split(".", 1)[1] if "." in name else name
        if short not in MATH:
            continue
        ours = {m for m in _imports(path) if m.startswith("refimpl")}
        bad = {m for m in ours if m.split(".")[1] not in MATH}
        assert not bad, f"{name} imports {sorted(bad)}: the math imports nothing above it"


def test_only_the_bridge_imports_rpy2():
    users = sorted(n for n, p in _modules().items() if any(m.startswith("rpy2") for m in _imports(p)))
    assert users == ["refimpl.r.bridge"], users


def test_the_harness_never_imports_regeneration():
    for name, path in _modules().items():
        if name.startswith("refimpl.harness"):
            bad = {m for m in _imports(path) if m.startswith("refimpl.fixtures.regen")
                   or re.match(r"refimpl\.sources\.(?!vignettes)", m)}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_no_import_cycle_and_at_most_ten_layers():
    mods = _modules()
    deps = {n: {m for m in _imports(p) if m in mods and m != n} for n, p in mods.items()}
    for n in deps:   # a package's __init__ importing its children is not an upward arrow
        deps[n] = {m for m in deps[n] if not (mods[n].name == "__init__.py" and m.startswith(n + "."))}
    depth: dict[str, int] = {}

    def layer(n, stack=()):
        assert n not in stack, f"import cycle: {' -> '.join(stack + (n,))}"
        if n not in depth:
            depth[n] = 1 + max((layer(m, stack + (n,)) for m in deps[n]), default=0)
        return depth[n]

    top = max(layer(n) for n in deps)
    # ten: __main__ > cli (parse, render) > check (the one pipeline) > runner > rows > judge > the math
    assert top <= 10, f"{top} layers: {sorted(depth.items(), key=lambda x: -x[1])[:5]}"


def test_the_harness_sub_packages_import_one_way():
    """Between the harness's sub-packages (cases, targets, columns, apis, rows, ...) arrows point one way: no
    sub-package imports one that imports it back (a module-level circle-free house can still have package-level
    circles, as targets <-> columns had). Lazy imports inside functions count too."""
    mods = {n.removesuffix(".__init__"): p for n, p in _modules().items()}     # a package is its __init__
    pkg = {}
    for n, p in mods.items():
        parts = n.split(".")
        if parts[:2] == ["refimpl", "harness"] and len(parts) > 2 and p.parent.name == parts[2]:
            pkg[n] = parts[2]
    assert {"cases", "targets", "columns", "apis", "rows"} <= set(pkg.values()), sorted(set(pkg.values()))
    edges = {(pkg[n], pkg[m]) for n in pkg for m in _imports(mods[n]) if m in pkg and pkg[m] != pkg[n]}
    reach = {a: {b for x, b in edges if x == a} for a in set(pkg.values())}
    for _ in reach:                                       # the transitive closure
        for a in reach:
            reach[a] |= {c for b in reach[a] for c in reach[b]}
    circles = sorted(a for a in reach if a in reach[a])
    assert not circles, f"sub-packages on an import circle: {circles}"


def test_no_source_file_is_over_350_lines():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350}
    assert not long, long


def test_docs_divergences_page_lists_exactly_the_catalogue():
    page = (ROOT / "docs" / "divergences.md").read_text()
    ids = re.findall(r"^\| ([DTOM]\d+) \|", page, flags=re.M)
    assert sorted(ids) == sorted(DIVERGENCE_TITLES), (ids, sorted(DIVERGENCE_TITLES))


def test_T1_torch_softmax_of_a_fully_masked_row_is_nan():
    torch = pytest.importorskip("torch", reason="T1 is torch's behaviour")
    w = torch.softmax(torch.full((1, 3), float("-inf"), dtype=torch.float64), dim=-1)
    assert torch.isnan(w).all()


def test_the_step_vocabulary_is_closed():
    assert set(fx_mod.STEP_NAMES) == set(fx_mod.STEP_FUNCTIONS)
    for fx in fx_mod.load_all():
        assert {s["fn"] for s in fx.steps} <= set(fx_mod.STEP_NAMES), fx.id


def test_the_project_holds_its_published_facts(monkeypatch):
    from refimpl.sources._build import published_path
    monkeypatch.delenv("REFIMPL_PUBLISHED", raising=False)
    p = published_path()
    assert p.is_file() and ROOT in p.resolve().parents, f"{p} must be inside the checkout"


def test_status_words_have_one_definition():
    from refimpl.harness.reports.report import JSON_SCHEMA
    assert JSON_SCHEMA["statuses"] == tuple(s.value for s in Status)
    assert f"{Status.FAIL}" == "FAIL" and str(Status.PASS) == "pass"


def test_ctrl_c_keeps_the_finished_cells_and_exits_130(monkeypatch, capsys):
    def ok(target):
        return Outcome(Status.PASS, 0.1, 0.0, "fine")

    def interrupt(target):
        raise KeyboardInterrupt

    cases = [Case("a", "g", "first", ok), Case("b", "g", "second", interrupt), Case("c", "g", "third", ok)]
    ref = builtin_targets()["refimpl"]()
    run = runner.run_check([ref], {}, cases)
    assert run.interrupted and not run.ok
    assert run.results[("a", "refimpl")].status == Status.PASS
    assert ("c", "refimpl") not in run.results
    monkeypatch.setattr(runner, "collect_cases", lambda **kw: cases)
    monkeypatch.setattr("refimpl.harness.rows.runner.collect_cases", lambda **kw: cases)
    code = main(["check", "--only", "refimpl", "--quiet"])
    out = capsys.readouterr().out
    assert code == EXIT_INTERRUPTED and "RESULT: INTERRUPTED" in out and "a " in out


def test_a_bad_target_is_a_usage_error_not_a_traceback(capsys):
    assert main(["check", "--target", "no_such_module_xyz:fn", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no_such_module_xyz" in err and "Traceback" not in err


def test_output_to_a_directory_is_refused_before_the_run(tmp_path, capsys):
    assert main(["check", "--output", str(tmp_path), "--random", "0", "--quiet"]) == 2
    assert "--output" in capsys.readouterr().err


def test_random_has_a_cap(capsys):
    assert main(["check", "--random", "100000000", "--quiet"]) == 2
    assert "--random" in capsys.readouterr().err


def test_regen_where_the_fixtures_cannot_be_written_is_a_clear_error(tmp_path):
    from refimpl.errors import UsageError
    from refimpl.fixtures.regen import regen
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")        # as root, permissions do not stop a write; this does
    with pytest.raises(UsageError, match="cannot write fixtures"):
        regen(["codefinity"], write=True, root=blocker / "fixtures", say=lambda m: None)


def test_vignette_inputs_are_the_same_arrays_after_a_target_scales_q_in_place():
    from refimpl.sources import vignettes
    a = vignettes.simple_vignette()
    a["Q"] *= 100.0
    assert np.array_equal(vignettes.simple_vignette()["Q"], a["Q"] / 100.0)


def test_every_package_of_refimpl_is_in_the_wheel():
    """pyproject lists packages by hand: a sub-package missing there is missing from a pip install."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py")}
    assert present - listed == set(), f"add to pyproject.toml [tool.setuptools] packages: {sorted(present - listed)}"
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for pkg, globs in data.items():
        if pkg.startswith("refimpl.harness"):
            folder = ROOT.joinpath(*pkg.split("."))
            assert all(list(folder.glob(g)) for g in globs), (pkg, globs)
