"""The rules of the fitted dK / dV block sources (refimpl/harness/verdicts/grad_placement.py) on gradients built here
from the quick suite's GQA cases: each returned block set by the test to a query head's own contribution (refimpl's
backward with K and V expanded), the group sum or zeros, and what the fit prints or refuses."""
import numpy as np

from refimpl.backward import expand_gqa, sdpa_backward
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts.grad_judge import GradReturned, grad_data, per_query_head
from refimpl.harness.verdicts.grad_placement import close_blocks, placement_grads_line

STORE = CaseStore()
CASES = {s.id.split("-")[0]: STORE.get(s) for s in select(["gqa"], "quick", ("float64",))}


def _gd(name):
    return grad_data(CASES[name], {})


def _contrib(gd):
    G = gd.data.spec.Hq // gd.data.spec.Hkv
    kw = dict(gd.data.reference_kwargs(), enable_gqa=False)
    return sdpa_backward(gd.data.q, expand_gqa(gd.data.k, G), expand_gqa(gd.data.v, G), gd.d_out, **kw)


def _line(fail, passing=()):
    return placement_grads_line("k", list(fail), list(passing), per_query_head)


def _returned(gd, dk_from=None, dv_from=None, dq_off=0.0):
    """The right gradients with dK / dV block (b, c) replaced by query head dk_from[(b, c)]'s contribution ("0":
    zeros)."""
    per = _contrib(gd)
    grads = {n: gd.oracle[n].copy() for n in ("dq", "dk", "dv")}
    grads["dq"] = grads["dq"] + dq_off
    for name, src, i in (("dk", dk_from or {}, 1), ("dv", dv_from or {}, 2)):
        for (b, c), x in src.items():
            grads[name][b, c] = 0.0 if x == "0" else per[i][x]
    return GradReturned(grads, "float64")


def test_the_source_of_each_block_is_printed_on_the_smallest_failing_case():
    gd = _gd("gqa/0006")                                       # B 2, Hq 2, Hkv 1
    got = _returned(gd, dk_from={(0, 0): (0, 0), (1, 0): (0, 1)}, dv_from={(1, 0): "0"})
    assert _line([(gd, got)], []) == [
        "diagnosis k: bwd-gqa-sum — dK and dV of a kv head are not the sum of its query heads' contributions: fitted "
        "on B=2, Hq=2, Hkv=1: dK (batch, kv head) <- (0, 0) query head (0, 0), (1, 0) query head (0, 1); "
        "dV <- (0, 0) the group sum, (1, 0) zeros"]


def test_the_smallest_of_several_failing_cases_is_shown():
    small, big = _gd("gqa/0006"), _gd("gqa/0004")              # B * Hq 4 and 4: Sk 64 before 65
    lines = _line([(big, _returned(big, dk_from={(0, 0): (0, 3)})),
                   (small, _returned(small, dk_from={(1, 0): (1, 1)}))], [])
    assert len(lines) == 1 and "fitted on B=2, Hq=2, Hkv=1" in lines[0], lines


def test_right_sums_a_wrong_dq_or_an_unexplained_block_fit_nothing():
    gd = _gd("gqa/0006")
    assert _line([(gd, _returned(gd))], []) == []                      # every block the sum
    assert _line([(gd, _returned(gd, dk_from={(0, 0): (0, 1)}, dq_off=1.0))], []) == []
    got = _returned(gd, dk_from={(0, 0): (0, 1)})
    got.grads["dk"][1, 0] += 1.0                                                            # no source explains it
    assert _line([(gd, got)], []) == []
    assert _line([], []) == []


def test_without_gqa_or_with_a_wrong_passing_gqa_case_nothing_is_fitted():
    mha = grad_data(STORE.get(select(["sizes"], "quick", ("float64",))[0]), {})
    wrong = GradReturned({n: mha.oracle[n] + (n == "dk") for n in ("dq", "dk", "dv")}, "float64")
    assert _line([(mha, wrong)], []) == []
    gd, other = _gd("gqa/0006"), _gd("gqa/0004")
    fail = [(gd, _returned(gd, dk_from={(0, 0): (0, 1)}))]
    assert _line(fail, [(other, _returned(other))]) != []
    assert _line(fail, [(other, _returned(other, dv_from={(0, 0): "0"}))]) == []


def test_blocks_agree_within_a_thousandth_relative_and_a_millionth_of_their_scale():
    b = np.array([[2.0, -4.0]])
    assert close_blocks(b * (1 + 9e-4), b) and not close_blocks(b * (1 + 2e-3), b)
    assert close_blocks(b + 4e-6, b) and not close_blocks(np.array([[2.0, 6e-6]]), np.array([[2.0, 0.0]]))
    assert not close_blocks(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))


def test_the_absolute_allowance_is_a_millionth_of_one_plus_the_largest_entry():
    assert close_blocks(np.array([[1000.0, 5e-4]]), np.array([[1000.0, 0.0]]))        # 1e-6 x 1001 allows it
    assert not close_blocks(np.array([[1.5e-6]]), np.zeros((1, 1)))                   # 1e-6 x (1 + 0)
    assert close_blocks(np.array([[0.9e-6]]), np.zeros((1, 1)))
    assert not close_blocks(np.array([[0.5, 1.8e-6]]), np.array([[0.5, 0.0]]))         # 1e-6 x 1.5, not x 2
    assert close_blocks(np.array([[0.5, 1.4e-6]]), np.array([[0.5, 0.0]]))


def test_an_error_of_exactly_the_allowance_is_close():
    assert close_blocks(np.array([[1e-6]]), np.zeros((1, 1)))                         # 1e-6 x (1 + 0), inclusive
