"""The sample the forward diagnoses read, one rule for all four (refimpl/harness/analysis/diagnosis_sample.py):
a case of at most MAX_SCORES scores (B * Hq * Sq * Sk) is read, one more score and it is left out; a result's
inputs come from its spec when the caller has it, else as the store kept them while the target ran. Each
diagnosis reads the one rule (no copy of its figures)."""
from types import SimpleNamespace

from refimpl.harness.analysis import diagnosis, diagnosis_dropout, diagnosis_kvcache, diagnosis_lse
from refimpl.harness.analysis.diagnosis_sample import MAX_SCORES, case_data, small, too_long


def _spec(B, Hq, Sq, Sk):
    return SimpleNamespace(B=B, Hq=Hq, Sq=Sq, Sk=Sk)


def test_a_case_of_exactly_max_scores_is_read_and_one_more_score_is_not():
    assert MAX_SCORES == 4_000_000                         # as docs/diagnosis.md states ("The sample")
    assert small(_spec(2, 2, 1000, 1000))
    assert not small(_spec(1, 1, 1, MAX_SCORES + 1))
    assert small(_spec(1, 1, 1, MAX_SCORES))


class _Store:
    def __init__(self):
        self._data = {"kept": "as the run kept it"}

    def get(self, spec):
        return f"made from {spec}"


def test_a_results_inputs_come_from_its_spec_else_from_what_the_run_kept():
    store, r = _Store(), SimpleNamespace(id="kept")
    assert case_data(store, r, {"kept": "spec"}) == "made from spec"
    assert case_data(store, r, None) == "as the run kept it"
    assert case_data(store, r, {"other": "spec"}) == "as the run kept it"
    assert case_data(store, SimpleNamespace(id="gone"), None) is None


def test_every_forward_diagnosis_reads_the_one_sample_rule():
    for mod in (diagnosis, diagnosis_kvcache, diagnosis_lse, diagnosis_dropout):
        src = open(mod.__file__).read()
        assert "MAX_FAILING = " not in src and "EXPLAINS = " not in src and "def _data(" not in src, mod.__name__


def test_a_long_case_is_told_from_its_spec_or_the_kept_case_without_materialising_it():
    long, short = _spec(1, 1, 1, MAX_SCORES + 1), _spec(1, 1, 1, MAX_SCORES)

    class Store:
        _data = {"kept": SimpleNamespace(spec=long)}

        def get(self, spec):
            raise AssertionError("materialised")
    r = SimpleNamespace(id="kept")
    assert too_long(Store(), r, None)                          # the case the run kept
    assert not too_long(Store(), r, {"kept": short})          # the spec given first
    assert too_long(Store(), SimpleNamespace(id="x"), {"x": long})
    assert not too_long(Store(), SimpleNamespace(id="gone"), None)     # neither knows it
