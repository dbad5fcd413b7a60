"""The rule of ``unsummed_grads_line`` (refimpl/harness/verdicts/grad_placement.py): dK and dV returned per query
head, (B, Hq, Sk, X), each query head's own contribution where the group's sum is due, named when every failing
case (16-bit ones left out) has dQ right and dK, dV right or so returned, and some case returned them so.

The per-query-head contributions are computed here: refimpl's backward with K and V expanded to the query heads."""
import numpy as np

from refimpl.backward import expand_gqa, sdpa_backward
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.verdicts.grad_judge import GradReturned, grad_data, per_query_head
from refimpl.harness.verdicts.grad_placement import unsummed_grads_line

STORE = CaseStore()


def _gd(dtype="float64"):
    spec = next(s for s in select(["gqa"], "quick", (dtype,)) if s.index == 6)      # B 2, Hq 2, Hkv 1, Sk 64, D 8
    return grad_data(STORE.get(spec), {})


def _per_head(gd):
    """(dK, dV) of each query head, (B, Hq, Sk, D) and (B, Hq, Sk, Dv)."""
    G = gd.data.spec.Hq // gd.data.spec.Hkv
    kw = dict(gd.data.reference_kwargs(), enable_gqa=False)
    return sdpa_backward(gd.data.q, expand_gqa(gd.data.k, G), expand_gqa(gd.data.v, G), gd.d_out, **kw)[1:3]


def _returned(gd, dq=None, dk=None, dv=None):
    """The right gradients but for those given."""
    got = {n: gd.oracle[n].copy() for n in ("dq", "dk", "dv")}
    got.update({n: a for n, a in (("dq", dq), ("dk", dk), ("dv", dv)) if a is not None})
    return GradReturned(got, "float64")


def _line(failing):
    return unsummed_grads_line("k", failing, per_query_head)


def _expected(spec):
    s = spec
    return [f"diagnosis k: bwd-gqa-sum — dK and dV of a kv head are not the sum of its query heads' contributions: "
            f"returned per query head, shape (B, Hq, Sk, D) = ({s.B}, {s.Hq}, {s.Sk}, {s.D}) where the sum over each "
            f"group of {s.Hq // s.Hkv} gives (B, Hkv, Sk, D) = ({s.B}, {s.Hkv}, {s.Sk}, {s.D})"]


def test_dk_summed_right_beside_dv_returned_per_query_head_is_named():
    gd = _gd()
    _, dv = _per_head(gd)
    assert _line([(gd, _returned(gd, dv=dv))]) == _expected(gd.data.spec)


def test_dk_and_dv_both_returned_per_query_head_are_named():
    gd = _gd()
    dk, dv = _per_head(gd)
    assert _line([(gd, _returned(gd, dk=dk, dv=dv))]) == _expected(gd.data.spec)


def test_a_dk_of_the_summed_shape_but_wrong_beside_an_unsummed_dv_fits_nothing():
    gd = _gd()
    _, dv = _per_head(gd)
    assert _line([(gd, _returned(gd, dk=gd.oracle["dk"] + 1.0, dv=dv))]) == []


def test_a_wrong_dq_of_the_right_shape_fits_nothing():
    gd = _gd()
    dk, dv = _per_head(gd)
    assert _line([(gd, _returned(gd, dq=gd.oracle["dq"] + 1.0, dk=dk, dv=dv))]) == []


def test_a_16_bit_failing_case_is_left_out_of_the_rule():
    gd, half = _gd(), _gd("bfloat16")
    dk, dv = _per_head(gd)
    wrong = _returned(half, dq=half.oracle["dq"] + 1.0)         # would refute the rule if it were read
    assert not np.allclose(wrong.grads["dq"], half.oracle["dq"])
    for failing in ([(half, wrong), (gd, _returned(gd, dk=dk, dv=dv))],
                    [(gd, _returned(gd, dk=dk, dv=dv)), (half, wrong)]):
        assert _line(failing) == _expected(gd.data.spec)
    assert _line([(half, wrong)]) == []                          # only 16-bit cases: nothing returned per head seen
