"""Issue #18, the red team's remaining faults: each one simulated, each one now an error that says what and
where, never a silent pass and never a dead process.

* a run that checks nothing (no fixtures, or every cell skip / n/a) is not a pass: exit 2;
* ``attention_context`` reads a 2-D mask as (B, N) or (T, N) per its docstring, refuses the ambiguous B == T;
* R faults (knitr missing, a corrupt installed package, a broken R_HOME) are found by a probe in a
  subprocess before embedded R starts; refimpl's own vignette cells do not depend on R;
* ``refimpl --bogus`` names the unknown option and lists the subcommands.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import re

import numpy as np
import pytest

import refimpl as ri
from refimpl.cli import main
from refimpl.errors import UsageError
from refimpl.fixtures import schema
from refimpl.harness.rows import runner
from refimpl.harness.cases import Case, Outcome, Status
from refimpl.harness.target_spec import builtin_targets
from refimpl.r import bridge, rprobe as r_probe

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["check", "--no-families", "--random", "0", "--quiet"]


def _env(**extra) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in ("REFIMPL_NO_R", "R_HOME")}   # these tests fault R
    return {**base, **extra}


def _run(args, env, timeout=120):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def no_r(monkeypatch):
    """R unavailable in this process for one test (the cached availability is put back afterwards)."""
    hidden = bridge.Availability(False, "hidden by the test")
    monkeypatch.setattr(bridge, "_availability", hidden)
    monkeypatch.setattr(r_probe, "_probed", hidden)


# --- a run that checks nothing is not a pass --------------------------------------------------------

@pytest.mark.parametrize("kind", ["missing", "empty", "file"])
def test_fixtures_that_are_not_there_stop_the_check(kind, tmp_path, monkeypatch, capsys):
    path = tmp_path / "fx"
    if kind == "empty":
        path.mkdir()
    elif kind == "file":
        path.write_text("{}")
    monkeypatch.setenv("REFIMPL_FIXTURES", str(path))
    with pytest.raises(UsageError) as e:
        schema.load_all()
    assert "REFIMPL_FIXTURES" in str(e.value) and str(path) in str(e.value)
    assert main(QUICK + ["--only", "refimpl"]) == 2
    out, err = capsys.readouterr()
    assert "conform" not in out and "REFIMPL_FIXTURES" in err and str(path) in err, (out, err)


def test_a_source_filter_that_matches_nothing_is_an_error():
    with pytest.raises(UsageError, match="no-such-source"):
        schema.load_all(sources=["no-such-source"])


def test_only_r_without_r_is_nothing_checked_not_a_pass(no_r, capsys):
    code = main(QUICK + ["--only", "r"])
    out, err = capsys.readouterr()
    assert code == 2 and "NOTHING CHECKED" in err and "hidden by the test" in err, (code, out, err)
    assert "all targets conform" not in out and "RESULT: NOTHING CHECKED" in out     # the report is still printed


def test_the_nothing_checked_rule():
    ref = builtin_targets()["refimpl"]()

    def cell(status):
        return Case(f"c-{status}", "g", "d", lambda t: Outcome(status, detail=f"why {status}"))

    dull = [cell(Status.SKIP), cell(Status.NA), cell(Status.REFERENCE), cell(Status.UNSUPPORTED)]
    for run, why in ((runner.run_check([ref], {}, dull), "NOTHING CHECKED.*4 cells.*why skip"),
                     (runner.run_check([ref], {}, []), "no cases"),
                     (runner.run_check([], {"r": "gone"}, [cell(Status.PASS)]), "target r: unavailable — gone")):
        assert not run.ok and re.search(why, run.nothing_checked), run.nothing_checked
    assert runner.run_check([ref], {}, dull + [cell(Status.PASS)]).ok
    assert not runner.run_check([ref], {}, dull + [cell(Status.FAIL)]).ok     # a failure is a result


# --- attention_context masks -------------------------------------------------------------------------

def _context_loops(e, h, keep):
    """Per (b, t): softmax over the kept positions, then the weighted sum (an independent loop)."""
    B, T, N = e.shape
    w = np.zeros_like(e)
    for b in range(B):
        for t in range(T):
            idx = np.flatnonzero(keep[b, t])
            x = np.exp(e[b, t, idx] - e[b, t, idx].max())
            w[b, t, idx] = x / x.sum()
    return np.einsum("btn,bnd->btd", w, h), w


@pytest.mark.parametrize("B,T", [(2, 3), (4, 1), (1, 4)])
def test_a_per_step_mask_broadcasts_over_the_batch(B, T):
    rng = np.random.default_rng(18)
    N = 5
    e, h = rng.standard_normal((B, T, N)), rng.standard_normal((B, N, 3))
    mask = rng.uniform(size=(T, N)) < 0.6
    mask[:, 0] = True
    ctx, w = ri.attention_context(e, h, mask=mask)           # (T, N): one mask per decoder step
    ctx_l, w_l = _context_loops(e, h, np.broadcast_to(mask, (B, T, N)))
    np.testing.assert_allclose(w, w_l, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(ctx, ctx_l, rtol=1e-12, atol=1e-14)


def test_a_square_two_d_mask_is_refused_as_ambiguous_and_both_explicit_forms_work():
    rng = np.random.default_rng(19)
    B = T = 3
    N = 4
    e, h = rng.standard_normal((B, T, N)), rng.standard_normal((B, N, 2))
    mask = np.array([[True, True, False, False], [True, False, True, True], [True, True, True, False]])
    with pytest.raises(ri.ShapeError, match=r"mask.*\(3, 4\).*ambiguous"):
        ri.attention_context(e, h, mask=mask)
    _, w_seq = ri.attention_context(e, h, mask=mask[:, None, :])     # (B, 1, N): one per source sequence
    _, w_step = ri.attention_context(e, h, mask=mask[None])          # (1, T, N): one per decoder step
    np.testing.assert_allclose(w_seq, _context_loops(e, h, np.broadcast_to(mask[:, None, :], (B, T, N)))[1], rtol=1e-13)
    np.testing.assert_allclose(w_step, _context_loops(e, h, np.broadcast_to(mask, (B, T, N)))[1], rtol=1e-13)
    assert np.all(w_seq[0, :, 2:] == 0) and np.all(w_step[:, 0, 2:] == 0)


# --- R faults ---------------------------------------------------------------------------------------

def test_refimpl_vignette_cells_pass_without_r(no_r):
    from refimpl.harness.rows.r_cases import vignette_case
    ref, = (f() for n, f in builtin_targets().items() if n == "refimpl")
    for name in ("simple", "complete"):
        o = vignette_case(name).run(ref)
        assert o.status == Status.PASS and o.n_arrays >= 2 and "R" in o.detail, (name, o)


def _installed_attention() -> Path:
    out = subprocess.run(["Rscript", "-e", 'cat(find.package("attention"))'], capture_output=True, text=True,
                         timeout=60)
    return Path(out.stdout.strip())


@pytest.mark.r
def test_without_knitr_refimpl_passes_and_other_targets_skip_with_the_cause(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "attention").symlink_to(_installed_attention())
    profile = tmp_path / "hide-knitr.R"     # the library path: only 'attention' and R's base library
    profile.write_text(f'local({{e <- environment(.libPaths); assign(".lib.loc", c("{lib}", .Library), envir = e)}})\n')
    code = ("from refimpl.harness.rows.r_cases import vignette_case\n"
            "from refimpl.harness.target_spec import builtin_targets\n"
            "t = builtin_targets(); ref, r = t['refimpl'](), t['r']()\nfrom refimpl.r import bridge\n"
            "print('knitr', bridge.availability().knitr_version)\n"
            "for n in ('simple', 'complete'):\n    c = vignette_case(n)\n"
            "    a, b = c.run(ref), c.run(r)\n    print(n, a.status, b.status, '|', b.detail)\n")
    p = _run(["-c", code], _env(R_PROFILE_USER=str(profile)))
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0] == "knitr None", (p.stdout, p.stderr[-2000:])
    for line in lines[1:]:
        assert " pass skip | " in line and "knitr" in line, line


@pytest.mark.slow
@pytest.mark.r
def test_a_corrupt_attention_package_is_unavailable_with_the_cause(tmp_path):
    lib = tmp_path / "badlib"
    shutil.copytree(_installed_attention(), lib / "attention")
    rdb = lib / "attention" / "R" / "attention.rdb"
    rdb.write_bytes(rdb.read_bytes()[:100])                              # a damaged lazy-load database
    env = _env(R_LIBS=str(lib))
    p = _run(["-c", "from refimpl.r import bridge; a = bridge.availability(); print(a.ok, '|', a.reason)"], env)
    assert p.stdout.startswith("False |") and "corrupt" in p.stdout and str(lib) in p.stdout, (p.stdout, p.stderr)
    p = _run(["-m", "refimpl", *QUICK, "--only", "r"], env)
    assert p.returncode == 2 and "NOTHING CHECKED" in p.stderr and "corrupt" in p.stderr, (p.stdout, p.stderr)
    assert len(p.stderr.splitlines()) <= 5, p.stderr                    # one clear message, not R's flood


def test_a_broken_r_home_does_not_abort_refimpl_env(tmp_path):
    (tmp_path / "notR" / "etc").mkdir(parents=True)
    (tmp_path / "notR" / "etc" / "Renviron").write_text("")            # passes a file-exists check
    p = _run(["-m", "refimpl", "env"], _env(R_HOME=str(tmp_path / "notR")))
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "r          unavailable" in p.stdout and f"R_HOME={tmp_path / 'notR'}" in p.stdout, p.stdout


def test_an_r_that_fails_or_hangs_is_reported_by_the_probe(tmp_path, monkeypatch):
    bin_ = tmp_path / "R" / "bin"
    bin_.mkdir(parents=True)
    script = bin_ / "Rscript"
    script.write_text("#!/bin/sh\necho 'Fatal error: unable to open the base package' >&2\nexit 2\n")
    script.chmod(0o755)
    monkeypatch.setenv("R_HOME", str(tmp_path / "R"))
    monkeypatch.delenv("REFIMPL_NO_R", raising=False)
    monkeypatch.setattr(r_probe, "_probed", None)      # the process's own probe comes back after the test
    a = bridge.probe(refresh=True)
    assert not a.ok and "unable to open the base package" in a.reason and str(script) in a.reason, a
    script.write_text("#!/bin/sh\nsleep 30\n")
    a = bridge.probe(refresh=True, timeout=0.5)
    assert not a.ok and "0.5 s" in a.reason, a


# --- the command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,words", [(["--bogus"], ["--bogus", "check", "regen", "env"]),
                                        ([], ["subcommand", "check", "export"])])
def test_an_unknown_option_before_the_subcommand_is_named(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and all(w in err for w in words), err
    assert "required: cmd" not in err


@pytest.mark.parametrize("opt,value,words", [("--timeout", "0", "a number > 0"),
                                             ("--timeout", "-1", "a number > 0"),
                                             ("--timeout", "nan", "a duration > 0 like 30, 30s, 2m or 500ms"),
                                             ("--timeout", "soon", "a duration > 0 like 30, 30s, 2m or 500ms"),
                                             ("--max-memory", "0", "a number > 0"),
                                             ("--max-memory", "1e-7", "at least 1 MiB")])
def test_a_limit_that_would_refuse_every_call_is_a_usage_error(opt, value, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(["check", "--random", "0", opt, value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and opt in err and f"expected {words}, got {value!r}" in err, err
