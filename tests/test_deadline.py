"""The run's --deadline (#27 item 4): what is not called before it has no verdict. Cases not called are
``not run``; the run is INCOMPLETE (exit 3), not NON-CONFORMANCE, unless something that ran failed; the pytest
plugin fails such a case rather than passing it."""
import time

from refimpl.cli import EXIT_INCOMPLETE, main
from refimpl.harness.cases import Case, Outcome, Status, TargetDied
from refimpl.harness.cases.families import select
from refimpl.harness.reports.report import render, result_word
from refimpl.harness.rows.family_cases import CaseStore, family_case
from refimpl.harness.rows.runner import run_check
from refimpl.harness.targets.target import Target
from refimpl.attention import scaled_dot_product_attention


def _correct(q, k, v, mask=None, scale=None):
    return scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)[0]


def _slow_row(seconds, name):
    def run(target):
        time.sleep(seconds)
        return Outcome(Status.PASS, 0.1, 0.0, "1 arrays", n_arrays=1)
    return Case(name, "slow", "a row that takes a while", run)


def _fail_row():
    return Case("bad", "bad", "a row that fails", lambda target: Outcome(Status.FAIL, 3.0, 1.0, "out: x3"))


def test_rows_past_the_deadline_are_not_run_and_the_run_is_incomplete_not_non_conformant():
    target = Target("mine", _correct, api="refimpl")
    rows = [_slow_row(0.3, "a"), _slow_row(0.0, "b"), _slow_row(0.0, "c")]
    run = run_check([target], {}, rows, deadline=time.monotonic() + 0.2, deadline_text="0.2s")
    statuses = [run.results[(c.id, "mine")].status for c in rows]
    assert statuses[0] == Status.PASS and statuses[1:] == [Status.NOT_RUN] * 2, statuses
    assert run.not_run == 2 and run.failing() == [] and not run.ok
    assert result_word(run).startswith("INCOMPLETE: the run's deadline passed before 2 cases were called")
    assert '"result": "INCOMPLETE' in render(run, "json")
    assert 'type="not run"' in render(run, "junit")


def test_a_failure_before_the_deadline_is_still_non_conformance():
    target = Target("mine", _correct, api="refimpl")
    rows = [_fail_row(), _slow_row(0.3, "a"), _slow_row(0.0, "b")]
    run = run_check([target], {}, rows, deadline=time.monotonic() + 0.2, deadline_text="0.2s")
    assert run.failing() == ["mine"] and result_word(run) == "NON-CONFORMANCE"


def test_a_family_row_cut_by_the_deadline_is_not_run_unless_it_already_failed():
    specs = select(["sizes"], "quick", ("float64",))[:6]
    calls = [0]

    def cut_after_3(q, k, v, mask=None, scale=None):      # what an isolated target raises once the deadline passed
        calls[0] += 1
        if calls[0] > 3:
            raise TargetDied("not run", "not called: the run's --deadline of 1s passed")
        return _correct(q, k, v, mask, scale)

    out = family_case("sizes", specs, CaseStore()).run(Target("mine", cut_after_3, api="refimpl"))
    assert out.status == Status.NOT_RUN and [r.status for r in out.cases].count(Status.NOT_RUN) == 3, out.detail
    calls[0] = 0

    def wrong_then_cut(q, k, v, mask=None, scale=None):
        calls[0] += 1
        if calls[0] > 3:
            raise TargetDied("not run", "not called: the run's --deadline of 1s passed")
        return 2.0 * _correct(q, k, v, mask, scale)

    out = family_case("sizes", specs, CaseStore()).run(Target("mine", wrong_then_cut, api="refimpl"))
    assert out.status == Status.FAIL, out.detail


def test_the_cli_exits_3_when_the_deadline_leaves_cases_uncalled(tmp_path, capsys):
    mod = tmp_path / "slowmod.py"
    mod.write_text("import time\nfrom refimpl.attention import scaled_dot_product_attention as s\n"
                   "def attn(q, k, v, mask=None, scale=None):\n    time.sleep(0.05)\n"
                   "    return s(q, k, v, mask=mask, scale=scale)[0]\n")
    code = main(["check", "--target", f"{mod}:attn", "--suite", "quick", "--random", "0", "--dtype", "float64",
                 "--deadline", "2s", "--quiet"])
    out = capsys.readouterr().out
    assert code == EXIT_INCOMPLETE, out[-2000:]
    assert "RESULT: INCOMPLETE" in out and "not run" in out
