"""The KV-cache diagnosis's rule one clause at a time (refimpl/harness/analysis/diagnosis_kvcache.py, its module doc
and docs/diagnosis.md): a model must reproduce the target's output (as .diagnosis.fits: rtol 1e-3, atol 1e-6 x (1 +
max finite |v|), NaN equal to NaN) and the cache it left (bitwise, NaN equal to NaN) on every sampled case; a failed
case is explained only through what the judge named (the output or the rows with no key, nearer than the expected
output by EXPLAINS; the cache, left wrong the same way); an error only by an IndexError where the target's was an
index out of range; the passing cases it must match and not raise on. The sample: at most MAX_FAILING = 40 failed
and MAX_PASSING = 20 passing cases, families interleaved with the ``kvcache`` family's first, cases with B * Hq * Sq
* Sk above 4,000,000 left out, and so are cases nobody can materialise. When several variants fit, the line names
each (``N = 16, 32 or 64``); otherwise the lines are those of fitting_models.

Every case here is made by hand: a (1, 1, 1, 2) output, a one-row cache with NaN and huge garbage beyond its keys,
and a model that does what the target did except where a test says otherwise; the models are hand-made BugModels
put in the place of the module's table."""
from types import SimpleNamespace as NS

import numpy as np
import pytest

from refimpl.bug_model import BugModel, Variant
from refimpl.harness.analysis import diagnosis_kvcache as dk
from refimpl.harness.analysis.diagnosis import EXPLAINS          # the ratio .diagnosis.fits explains by
from refimpl.harness.apis.base import Returned
from refimpl.harness.cases import Status, fitting_models
from refimpl.harness.verdicts.judge import CaseResult

GOOD = np.array([[[[0.0, 1.0]]]])                   # (B, Hq, Sq, Dv): the expected output of every case
BROKEN = np.array([[[[0.5, 1.0]]]])                 # a broken target's output on a failed case
BEFORE = np.array([[0.5, np.nan, -1e30, np.nan]])   # one key cached, garbage beyond it
AFTER = np.array([[0.5, 0.25, -1e30, np.nan]])      # the new key written after it
CACHES = {"k_cache": (BEFORE, AFTER), "v_cache": (BEFORE, AFTER), "new_k": np.zeros((1, 1, 1, 1)),
          "new_v": np.zeros((1, 1, 1, 1)), "cache_seqlens": np.array([1], np.int32), "block_table": None}
DETAIL = {Status.FAIL: "output: error 3.2 above the bound 1", Status.PASS: "",
          Status.ERROR: "IndexError: index 4 is out of bounds for dimension 1 with size 4"}
OUT = {Status.FAIL: BROKEN, Status.PASS: GOOD, Status.ERROR: None}
API = NS(API=NS(cannot=lambda s: s.cannot), caches=lambda data: data.caches)   # the API module, as it is read


def _case(n, status=Status.FAIL, family="kvcache", dims=(1, 1, 1, 2), expected=GOOD, got="default", detail=None,
          written="right", v=None, cannot=None):
    """(data, result) of case ``n``: what the store holds and what the judge said."""
    spec = NS(id=f"{family}/{n:04d}-float64", family=family, B=dims[0], Hq=dims[1], Sq=dims[2], Sk=dims[3],
              seqlens=None, is_causal=False, window=None, index=n, scale=None, softcap=None, cache_lens=(1,),
              cannot=cannot)
    data = NS(spec=spec, q=np.full((1, 1, 1, 2), float(n)), v=np.ones((1, 1, 2, 2)) if v is None else v,
              expected=expected, absent=None, slopes=None, caches=CACHES)
    out = OUT[status] if isinstance(got, str) else got
    wrote = {"k_cache": AFTER.copy(), "v_cache": AFTER.copy()} if written == "right" else written
    ret = None if out is None else Returned(out, None, "float64", [], written=wrote)
    return data, CaseResult(spec.id, status, 2.0, DETAIL[status] if detail is None else detail, got=ret)


def _variant(cases, label="v", differs=None):
    """A model that does what the target did on every case (raises IndexError where it raised), except on the cases
    of ``differs``: n -> an output, (output, k cache, v cache), or an exception to raise."""
    by_n = {int(d.q.flat[0]): r for d, r in cases}

    def fn(q, k_cache, v_cache, new_k, new_v, cache_seqlens, block_table, *, scale, causal, window, softcap, slopes):
        n = int(q.flat[0])
        r, what = by_n[n], (differs or {}).get(n)
        if isinstance(what, Exception):
            raise what
        if isinstance(what, tuple):
            return what
        if what is None and r.got is None:
            raise IndexError("index 4 is out of bounds for dimension 1 with size 4")
        left = [r.got.written.get(name, k_cache).copy() for name in ("k_cache", "v_cache")]
        return (r.got.output.copy() if what is None else what), *left
    return Variant(label, fn)


def _model(*variants, name="m"):
    return BugModel(name, f"{name}'s mistake", tuple(variants))


def _lines(monkeypatch, cases, models, specs=True, held=False, extra=()):
    """The diagnosis lines; the case specs given (``specs``) and/or the store already holding the cases (``held``)."""
    monkeypatch.setattr(dk, "MODELS", {m.name: m for m in models})
    made = {d.spec.id: d for d, _ in cases}
    store = NS(_data=dict(made) if held else {}, get=lambda spec: made[spec.id])
    given = {d.spec.id: d.spec for d, _ in cases} if specs else None
    return dk.kvcache_lines([r for _, r in cases] + list(extra), store, "t", given, API)


def _names(lines):
    return [line.split(": ", 1)[1].split(" — ")[0] for line in lines]


def _world():
    return [_case(0), _case(1, Status.PASS), _case(2), _case(3, Status.PASS)]


# --- where the cases come from ---------------------------------------------------------------------------------

@pytest.mark.parametrize("specs,held", [(True, False), (False, True), (True, True)],
                         ids=["specs-given-store-empty", "store-holds-them", "both"])
def test_a_model_that_does_what_the_target_did_and_explains_every_failure_is_named(monkeypatch, specs, held):
    cases = _world()
    assert _names(_lines(monkeypatch, cases, [_model(_variant(cases))], specs, held)) == ["m"]


def test_a_case_nobody_can_materialise_and_a_passing_case_with_nothing_returned_are_left_out(monkeypatch):
    cases = _world()
    lost = _case(9)[1]                                    # a failed case in neither the specs nor the store
    assert _names(_lines(monkeypatch, cases, [_model(_variant(cases))], extra=[lost])) == ["m"]
    empty = _case(8, Status.PASS, got=None)               # a passing case whose output is not there (the model
    assert _names(_lines(monkeypatch, cases + [empty], [_model(_variant(cases))])) == ["m"]    # cannot run on it)


# --- the passing cases: the same output and cache, and no exception ------------------------------------------------

DEPARTURES = {"another output": GOOD + np.array([[[[0.1, 0.0]]]]),
              "another cache of the same shape": (GOOD, AFTER + np.array([[0.0, 0.125, 0.0, 0.0]]), AFTER.copy()),
              "an output of another shape": np.zeros((1, 1, 1, 3)),
              "an IndexError": IndexError("index 9 is out of bounds"), "another exception": ValueError("no")}


@pytest.mark.parametrize("how", list(DEPARTURES))
def test_a_model_that_departs_from_the_target_on_a_passing_case_is_not_named(monkeypatch, how):
    cases = _world()
    good, bad = _variant(cases, "fits"), _variant(cases, "departs", {3: DEPARTURES[how]})
    assert _names(_lines(monkeypatch, cases, [_model(good, name="a"), _model(bad, name="b")])) == ["a"]


@pytest.mark.parametrize("vmax,v", [(999.0, None), (0.0, np.zeros((1, 1, 2, 2))),
                                    (0.0, np.array([[[[np.nan, np.inf], [-np.inf, np.nan]]]]))],
                         ids=["max-v-999", "v-zero", "v-not-finite"])
@pytest.mark.parametrize("factor,agrees", [(0.75, True), (1.5, False)])
def test_a_passing_output_is_matched_within_an_atol_of_1e_6_times_1_plus_max_finite_v(monkeypatch, vmax, v, factor,
                                                                                      agrees):
    if v is None:
        v = np.array([[[[vmax, -1.0], [2.0, 3.0]]]])
    atol = 1e-6 * (1.0 + vmax)                               # the rule: 1e-6 x (1 + max |v| over its finite values)
    cases = [_case(0), _case(1, Status.PASS, v=v)]
    off = GOOD + np.array([[[[factor * atol, 0.0]]]])        # off where the target gave 0: rtol adds nothing there
    names = _names(_lines(monkeypatch, cases, [_model(_variant(cases, differs={1: off}))]))
    assert names == (["m"] if agrees else [])


@pytest.mark.parametrize("factor,agrees", [(0.5, True), (1.5, False)])
def test_a_passing_output_is_matched_within_an_rtol_of_1e_3(monkeypatch, factor, agrees):
    big = np.array([[[[1000.0, 1.0]]]])
    cases = [_case(0), _case(1, Status.PASS, got=big, expected=big, v=np.zeros((1, 1, 2, 2)))]   # atol 1e-6
    off = big + np.array([[[[factor * 1e-3 * 1000.0, 0.0]]]])
    names = _names(_lines(monkeypatch, cases, [_model(_variant(cases, differs={1: off}))]))
    assert names == (["m"] if agrees else [])


# --- what explains a failed case -------------------------------------------------------------------------------

@pytest.mark.parametrize("right", [GOOD, np.array([[[[0.0, np.nan]]]])], ids=["finite", "nan-equals-nan"])
def test_an_output_equal_to_the_expected_one_explains_no_failure_even_where_the_judge_named_the_output(
        monkeypatch, right):
    cases = [_case(0, expected=right, got=right.copy()), _case(1, Status.PASS)]    # failed on something else
    assert _lines(monkeypatch, cases, [_model(_variant(cases))]) == []


def test_rows_with_no_key_named_by_the_judge_are_explained_by_a_model_nearer_the_target(monkeypatch):
    cases = [_case(0, detail="fully masked rows give 'nan' (accepted: zeros)"), _case(1, Status.PASS)]
    assert _names(_lines(monkeypatch, cases, [_model(_variant(cases))])) == ["m"]


def test_an_output_nearer_the_target_explains_nothing_where_the_judge_named_only_the_cache(monkeypatch):
    # the judge named k_cache alone; the model leaves the cache right (as the target did): nothing it explains
    cases = [_case(0, detail="k_cache: after the call 1 values differ from the cache with the new keys written"),
             _case(1, Status.PASS)]
    assert _lines(monkeypatch, cases, [_model(_variant(cases))]) == []


def test_a_cache_left_right_with_its_nan_garbage_is_no_wrong_cache_where_the_judge_named_it(monkeypatch):
    cases = [_case(0, got=GOOD, detail="k_cache: after the call 1 values differ"), _case(1, Status.PASS)]
    assert _lines(monkeypatch, cases, [_model(_variant(cases))]) == []


def test_a_cache_left_wrong_the_same_way_explains_a_failure_only_where_the_judge_named_the_cache(monkeypatch):
    unwritten = {}                                               # the target wrote neither cache: BEFORE is left
    named = [_case(0, got=GOOD, written=unwritten, detail="k_cache: the new keys were not written into the cache"),
             _case(1, Status.PASS)]
    assert _names(_lines(monkeypatch, named, [_model(_variant(named))])) == ["m"]
    unnamed = [_case(0, got=GOOD, written=unwritten), _case(1, Status.PASS)]    # the judge named the output only
    assert _lines(monkeypatch, unnamed, [_model(_variant(unnamed))]) == []


def test_nan_where_the_expected_and_the_target_output_both_have_nan_is_no_distance(monkeypatch):
    cases = [_case(0, expected=np.array([[[[0.0, np.nan]]]]), got=np.array([[[[0.5, np.nan]]]])),
             _case(1, Status.PASS)]
    assert _names(_lines(monkeypatch, cases, [_model(_variant(cases))])) == ["m"]


@pytest.mark.parametrize("share,explains", [(EXPLAINS, True), ((1 + EXPLAINS) / 2, False)])
def test_a_model_explains_an_output_when_at_most_explains_times_as_far_from_it_as_the_expected_one(
        monkeypatch, share, explains):
    got, far = np.array([[[[1.0, 1.0]]]]), 2.0 ** -10           # exact binary fractions: the bound is met exactly
    cases = [_case(0, expected=got - np.array([[[[far, 0.0]]]]), got=got), _case(1, Status.PASS)]
    near = got - np.array([[[[share * far, 0.0]]]])              # within rtol 1e-3 of the target's: it agrees
    names = _names(_lines(monkeypatch, cases, [_model(_variant(cases, differs={0: near}))]))
    assert names == (["m"] if explains else [])


@pytest.mark.parametrize("raises,detail,explains", [
    (True, DETAIL[Status.ERROR], True),
    (False, DETAIL[Status.ERROR], False),
    (True, "ValueError: cannot reshape array of size 6 into shape (4,)", False)],
    ids=["index-error-both", "model-does-not-raise", "target-error-not-an-index"])
def test_an_error_is_explained_only_by_an_index_error_where_the_target_went_out_of_range(monkeypatch, raises,
                                                                                         detail, explains):
    cases = [_case(0, Status.ERROR, detail=detail), _case(1, Status.PASS)]
    variant = _variant(cases, differs=None if raises else {0: (GOOD, AFTER.copy(), AFTER.copy())})
    assert _names(_lines(monkeypatch, cases, [_model(variant)])) == (["m"] if explains else [])


# --- the sample ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("unexplained,named", [(40, False), (41, True)])
def test_the_failed_cases_sampled_are_the_first_40(monkeypatch, unexplained, named):
    cases = [_case(n) for n in range(1, 42)] + [_case(50, Status.PASS)]
    variant = _variant(cases, differs={unexplained: GOOD})         # the reference's output on that one
    assert _names(_lines(monkeypatch, cases, [_model(variant)])) == (["m"] if named else [])


@pytest.mark.parametrize("departs,named", [(20, False), (21, True)])
def test_the_passing_cases_sampled_are_the_first_20(monkeypatch, departs, named):
    cases = [_case(0)] + [_case(n, Status.PASS) for n in range(1, 22)]
    variant = _variant(cases, differs={departs: BROKEN})
    assert _names(_lines(monkeypatch, cases, [_model(variant)])) == (["m"] if named else [])


@pytest.mark.parametrize("dims,named", [((1, 1, 1, 4_000_001), True), ((1, 2, 2, 1_000_001), True),
                                        ((1, 2, 2, 1_000_000), False)],
                         ids=["4000001-scores", "4000004-scores", "4000000-scores"])
def test_cases_of_more_than_4_million_scores_are_left_out_of_the_sample(monkeypatch, dims, named):
    assert dims[0] * dims[1] * dims[2] * dims[3] > 4_000_000 or not named
    cases = [_case(0), _case(1, dims=dims), _case(2, Status.PASS)]
    variant = _variant(cases, differs={1: GOOD})                   # explains the first failed case, not the long one
    assert _names(_lines(monkeypatch, cases, [_model(variant)])) == (["m"] if named else [])


def test_no_line_when_no_failed_case_is_left_in_the_sample(monkeypatch):
    cases = [_case(0, dims=(1, 1, 1, 5_000_000)), _case(1, Status.PASS), _case(2, Status.PASS)]
    assert _lines(monkeypatch, cases, [_model(_variant(cases))]) == []


def test_the_families_are_interleaved_the_kvcache_family_first():
    rs = [NS(id=i) for i in ("sizes/0001", "sizes/0002", "kvcache/0001", "kvcache/0002", "kvcache/0003")]
    specs = {r.id: NS(family=r.id.split("/")[0]) for r in rs}
    assert [r.id for r in dk._spread(rs, specs)] == ["kvcache/0001", "sizes/0001", "kvcache/0002", "sizes/0002",
                                                     "kvcache/0003"]
    assert dk._spread(rs, None) == rs                              # no specs: one family, the order kept
    assert dk._spread([], specs) == []


# --- the lines -------------------------------------------------------------------------------------------------

def _fits_some(labels, fitting):
    """A model of ``labels`` whose variants in ``fitting`` fit and the others depart on the passing case."""
    cases = _world()
    return cases, _model(*(_variant(cases, lab, None if lab in fitting else {3: BROKEN}) for lab in labels))


@pytest.mark.parametrize("labels,fitting,names", [
    (("N = 16", "N = 32", "N = 64"), ("N = 16", "N = 32"), "N = 16 or 32"),
    (("N = 16", "N = 32", "N = 64", "N = 128"), ("N = 16", "N = 32", "N = 64"), "N = 16, 32 or 64"),
    (("every slot of the cache (its capacity), garbage included", "one key short (L - 1)"),
     ("every slot of the cache (its capacity), garbage included", "one key short (L - 1)"),
     "every slot of the cache (its capacity), garbage included or one key short (L - 1)")],
    ids=["two", "three", "no-common-words"])
def test_when_several_variants_fit_the_line_names_each(monkeypatch, labels, fitting, names):
    cases, model = _fits_some(labels, fitting)
    (line,) = _lines(monkeypatch, cases, [model])
    assert line.startswith(f"diagnosis t: m — m's mistake ({names}"), line


@pytest.mark.parametrize("labels", [("only",), ("first", "second")], ids=["one-variant", "one-of-two-fits"])
def test_when_one_variant_fits_the_line_is_the_one_fitting_models_prints(monkeypatch, labels):
    cases, model = _fits_some(labels, labels[:1])
    want = fitting_models("t", {"m": model}, lambda m, v: v.label == labels[0])
    assert _lines(monkeypatch, cases, [model]) == want
