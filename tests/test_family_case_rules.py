"""The rules of one family-case row (refimpl.harness.rows.family_cases): running a target on a case, the
catalogued divergences (a catalogued divergence excuses only the rows it explains, and only where the target
reproduces the catalogued behaviour), batched calls, the row's aggregation into one cell, and what its errors,
warnings and progress lines say. Fake targets with hand-made ``known``/``predict`` and batch calls stand in for
the R column (no R needed); expected values come from refimpl's reference or are written out here."""
import math

import numpy as np

from refimpl.attention import scaled_dot_product_attention
from refimpl.harness.cases import Status, TargetDied
from refimpl.harness.cases.features import CaseSpec
from refimpl.harness.rows.family_cases import CaseStore, family_case, run_one
from refimpl.harness.targets.r_targets import RReturned
from refimpl.harness.targets.target import Target
from refimpl.harness.verdicts.judge import CaseResult

# B, Hq, Sq, Sk, D, Dv all different: a mix-up of axes cannot go unseen
CAUSAL = CaseSpec("sizes", 9001, Sq=5, Sk=6, D=4, Dv=7, B=2, Hq=3, Hkv=3, is_causal=True)
PLAIN = CaseSpec("sizes", 9002, Sq=5, Sk=6, D=4, Dv=7, B=2, Hq=3, Hkv=3)


def _tiny(i, **kw):
    return CaseSpec("sizes", 9100 + i, **{"Sq": 2, "Sk": 3, "D": 2, "Dv": 2, **kw})


def _ref(q, k, v, mask=None, scale=None):
    """refimpl's reference output (what a conforming target returns)."""
    return scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)[0]


def _causal_keep(sq, sk):
    """Top-left causal keep-mask written out: query i sees keys j <= i."""
    return np.arange(sk)[None, :] <= np.arange(sq)[:, None]


def _divergent(q, k, v, keep):
    """The catalogued behaviour of these tests: query row 0 of every (batch, head) is the plain mean of v over
    its keys (as if no key were masked and every score were equal); every other row is the reference's."""
    out = np.array(_ref(q, k, v, mask=keep), dtype=np.float64)
    out[..., 0, :] = v.mean(axis=-2)
    return out


def _reproducing(q, k, v, mask=None, scale=None):
    return _divergent(q, k, v, mask)


def _catalogue(codes=("D9",), seen=None, predict=_divergent):
    def known(q, k, v, keep):
        if seen is not None:
            seen.append(("known", keep))
        return list(codes)

    def pred(q, k, v, keep):
        if seen is not None:
            seen.append(("predict", keep))
        return predict(q, k, v, keep)
    return dict(known=known, predict=pred)


# -- the catalogued divergences ------------------------------------------------------------------------------------

def test_a_target_that_reproduces_a_catalogued_divergence_is_known_on_the_rows_it_explains():
    """The target reproduces the catalogue on query row 0 of each of the B * Hq = 6 (batch, head) pairs and is
    right elsewhere: the case is ``known``, and the detail names the codes and how many rows the divergence
    explains."""
    res = run_one(Target("r", _reproducing, **_catalogue(("D9", "D4"))), CAUSAL, CaseStore())
    assert res.status == Status.KNOWN, (res.status, res.detail)
    assert res.detail == f"known D9, D4 on {CAUSAL.B * CAUSAL.Hq} rows", res.detail


def test_the_catalogue_is_asked_with_the_cases_full_keep_mask():
    """``known`` and ``predict`` receive the case's bool keep-mask with the causal band folded in, broadcast to
    (B, Hq, Sq, Sk); None when nothing is masked."""
    seen = []
    run_one(Target("r", _reproducing, **_catalogue(seen=seen)), CAUSAL, CaseStore())
    assert [w for w, _ in seen] == ["known", "predict"], seen
    want = np.broadcast_to(_causal_keep(CAUSAL.Sq, CAUSAL.Sk), (CAUSAL.B, CAUSAL.Hq, CAUSAL.Sq, CAUSAL.Sk))
    for _, keep in seen:
        assert keep is not None and keep.shape == want.shape and keep.dtype == bool, keep
        assert np.array_equal(keep, want)
    seen.clear()
    res = run_one(Target("r", _reproducing, **_catalogue(seen=seen)), PLAIN, CaseStore())
    assert [w for w, _ in seen] == ["known", "predict"] and all(keep is None for _, keep in seen), seen
    assert res.status == Status.KNOWN, res.detail


def test_a_catalogued_divergence_excuses_only_the_rows_it_explains():
    """A target that reproduces the catalogued rows but is also wrong on a row the catalogue does not explain
    fails, with the judge's own detail."""
    def also_wrong(q, k, v, mask=None, scale=None):
        out = _divergent(q, k, v, mask)
        out[1, 2, 3] *= 2.0                                  # row 3: the catalogue predicts the reference there
        return out
    store = CaseStore()
    res = run_one(Target("r", also_wrong, **_catalogue()), CAUSAL, store)
    plain = run_one(Target("plain", also_wrong), CAUSAL, store)             # the same target, no catalogue
    assert res.status == Status.FAIL and plain.status == Status.FAIL, (res.status, plain.status)
    assert res.detail == plain.detail and res.detail.startswith("output:"), res.detail


def test_a_catalogued_divergence_the_target_does_not_reproduce_is_a_failure():
    """The catalogue predicts row 0 as the mean of v; a target wrong on row 0 in another way is not excused."""
    def other(q, k, v, mask=None, scale=None):
        out = np.array(_ref(q, k, v, mask=mask))
        out[..., 0, :] = -out[..., 0, :] + 1.0
        return out
    res = run_one(Target("r", other, **_catalogue()), CAUSAL, CaseStore())
    assert res.status == Status.FAIL and res.detail.startswith("output:"), (res.status, res.detail)


def test_a_case_the_catalogue_gives_no_code_for_is_judged_as_usual():
    """``known`` returning no code means no divergence applies to this case: the reproduced behaviour fails."""
    res = run_one(Target("r", _reproducing, **_catalogue(codes=())), CAUSAL, CaseStore())
    assert isinstance(res, CaseResult) and res.status == Status.FAIL, res
    assert res.detail.startswith("output:"), res.detail


def test_a_catalogue_that_explains_no_row_excuses_nothing():
    """When the catalogued prediction equals the reference on every row, nothing is the divergence's: a
    target whose output is right but whose weights are wrong still fails on its weights."""
    def wrong_weights(q, k, v, mask=None, scale=None):
        out, w = scaled_dot_product_attention(q, k, v, mask=mask, scale=scale)
        return out, np.asarray(w)[..., ::-1].copy()          # the keys' weights reversed: not the reference's
    res = run_one(Target("r", wrong_weights, **_catalogue(predict=lambda q, k, v, keep: _ref(q, k, v, mask=keep))),
                  CAUSAL, CaseStore())
    assert isinstance(res, CaseResult) and res.status == Status.FAIL, res
    assert "weights" in res.detail, res.detail


class _ZeroFirstColumn(CaseStore):
    """Cases whose v has its first column 0, so the expected output's first column is exactly 0 (a sum of
    zeros): the place where only an absolute tolerance can tell two values apart."""

    def get(self, spec):
        data = super().get(spec)
        data.v[..., 0] = 0.0
        data.expected[..., 0] = 0.0
        return data


def test_a_row_is_the_divergences_when_the_prediction_differs_beyond_rtol_1e_9_atol_1e_12():
    """A row counts as explained by the catalogue (and is judged against the prediction) when some element of
    the prediction differs from the reference's expected value by more than 1e-12 + 1e-9 * |expected|.
    Here: the 6 rows 0, plus row (0, 0, 1) scaled by 1 + 1.5e-9 (beyond) and row (1, 0, 3) with 1.5e-12 where
    0 is expected (beyond); row (0, 0, 2) scaled by 1 + 0.5e-9 and row (1, 1, 3) with 0.5e-12 are within."""
    def beyond(q, k, v, keep):
        out = _divergent(q, k, v, keep)
        out[0, 0, 1] *= 1 + 1.5e-9
        out[1, 0, 3, 0] = 1.5e-12
        return out

    def predict(q, k, v, keep):
        out = beyond(q, k, v, keep)
        out[0, 0, 2] *= 1 + 0.5e-9
        out[1, 1, 3, 0] = 0.5e-12
        return out

    def target(q, k, v, mask=None, scale=None):       # the prediction where it is the divergence's, else the reference
        return beyond(q, k, v, mask)
    res = run_one(Target("r", target, **_catalogue(predict=predict)), CAUSAL, _ZeroFirstColumn())
    assert res.status == Status.KNOWN, (res.status, res.detail)
    assert res.detail == f"known D9 on {CAUSAL.B * CAUSAL.Hq + 2} rows", res.detail


def test_a_predicted_error_excuses_a_target_that_raises():
    """The catalogue says the package raises here (``predict`` raises): a target that raises too is ``known``,
    ratio inf, the detail naming the codes and the catalogued error, cut at 300 characters."""
    def raises(q, k, v, mask=None, scale=None):
        raise RuntimeError("the target's own error")

    def predicted_error(q, k, v, keep):
        raise ValueError("non-conformable arguments")
    res = run_one(Target("r", raises, **_catalogue(("D2",), predict=predicted_error)), CAUSAL, CaseStore())
    assert res.status == Status.KNOWN and res.ratio == math.inf, (res.status, res.detail)
    assert res.detail == "known D2: ValueError: non-conformable arguments", res.detail

    def long_error(q, k, v, keep):
        raise ValueError("x" * 400)
    res = run_one(Target("r", raises, **_catalogue(("D2",), predict=long_error)), CAUSAL, CaseStore())
    assert res.status == Status.KNOWN
    assert res.detail == ("known D2: ValueError: " + "x" * 400)[:300] and len(res.detail) == 300, len(res.detail)


def test_a_predicted_error_does_not_excuse_a_target_that_returns():
    """The catalogue predicts an error; a target that returns a wrong output instead fails as usual."""
    def predicted_error(q, k, v, keep):
        raise ValueError("non-conformable arguments")
    res = run_one(Target("r", _reproducing, **_catalogue(("D2",), predict=predicted_error)), CAUSAL, CaseStore())
    assert isinstance(res, CaseResult) and res.status == Status.FAIL, res
    assert res.detail.startswith("output:"), res.detail


def test_a_predicted_output_does_not_excuse_a_target_that_raises():
    """The catalogue predicts an output: a target that raises is an error, whatever the catalogue says."""
    def raises(q, k, v, mask=None, scale=None):
        raise RuntimeError("boom")
    res = run_one(Target("r", raises, **_catalogue()), CAUSAL, CaseStore())
    assert isinstance(res, CaseResult) and res.status == Status.ERROR, res
    assert res.detail == "RuntimeError: boom", res.detail


# -- one case: errors and what is reported ------------------------------------------------------------------------

def test_a_target_error_is_reported_with_its_type_and_message_cut_at_300_characters():
    def raises(q, k, v, mask=None, scale=None):
        raise ValueError("y" * 500)
    res = run_one(Target("t", raises), PLAIN, CaseStore())
    assert res.status == Status.ERROR and res.ratio == math.inf
    assert res.detail == ("ValueError: " + "y" * 500)[:300] and len(res.detail) == 300, len(res.detail)


def _raise_from_the_target(q, k, v, mask=None, scale=None):
    raise ValueError("from the target")


def test_an_error_traceback_starts_at_the_targets_own_frame():
    """The traceback kept for an error is the target's own: from its first frame outside refimpl/harness (here,
    this file's function); an error the harness itself raised (an unusable return value) has none."""
    res = run_one(Target("t", _raise_from_the_target), PLAIN, CaseStore())
    frames = [ln for ln in res.traceback.splitlines() if ln.strip().startswith("File ")]
    assert frames and __file__ in frames[0] and "_raise_from_the_target" in res.traceback, res.traceback
    assert not any("refimpl/harness" in f for f in frames), frames
    assert res.traceback.rstrip().endswith("ValueError: from the target")
    res = run_one(Target("t", lambda q, k, v, mask=None, scale=None: "not an array"), PLAIN, CaseStore())
    assert res.status == Status.ERROR and res.traceback == "", (res.detail, res.traceback)


def test_a_dead_worker_is_the_cases_verdict_with_its_message_cut_at_300_characters():
    def died(q, k, v, mask=None, scale=None):
        raise TargetDied("crash", "z" * 500)
    res = run_one(Target("t", died), PLAIN, CaseStore())
    assert res.status == Status.CRASH and res.ratio == math.inf
    assert res.detail == "z" * 300, len(res.detail)


def test_not_implemented_is_unsupported_with_its_message_cut_at_200_characters():
    def unsupported(q, k, v, mask=None, scale=None):
        raise NotImplementedError("n" * 500)
    res = run_one(Target("t", unsupported), PLAIN, CaseStore())
    assert res.status == Status.UNSUPPORTED
    assert res.detail == ("NotImplementedError: " + "n" * 500)[:200] and len(res.detail) == 200, len(res.detail)


class _Broken(CaseStore):
    def get(self, spec):
        raise RuntimeError("w" * 500)


def test_a_case_the_harness_cannot_build_is_that_cases_error_cut_at_300_characters():
    res = run_one(Target("t", _ref), PLAIN, _Broken())
    assert isinstance(res, CaseResult) and res.status == Status.ERROR and res.ratio == math.inf, res
    assert res.detail == ("harness: inputs not built: RuntimeError: " + "w" * 500)[:300]
    assert len(res.detail) == 300


def test_a_caller_replaces_the_in_process_call_and_its_verdict_stands():
    """``caller(target, data)`` is what runs the case (the isolated worker); a CaseResult it returns (the
    worker's crash) is the case's verdict, with the case's features."""
    calls = []

    def caller(target, data):
        calls.append(data.spec.id)
        return CaseResult("worker", Status.CRASH, math.inf, "worker died: SIGSEGV")

    def never(q, k, v, mask=None, scale=None):
        raise AssertionError("called in-process")
    res = run_one(Target("t", never), PLAIN, CaseStore(), caller=caller)
    assert calls == [PLAIN.id]
    assert isinstance(res, CaseResult) and res.status == Status.CRASH and res.detail == "worker died: SIGSEGV"
    assert res.features == PLAIN.features()


def test_a_wrong_output_that_also_varies_between_calls_stays_a_failure_naming_both():
    """--repeat: nondeterminism is the verdict only of an output that is otherwise right; a wrong one stays FAIL
    and its detail adds which call differed."""
    n = [0]

    def varying_and_wrong(q, k, v, mask=None, scale=None):
        n[0] += 1
        return (1.5 + n[0]) * _ref(q, k, v, mask=mask)
    res = run_one(Target("t", varying_and_wrong, repeat=2), PLAIN, CaseStore())
    assert res.status == Status.FAIL, (res.status, res.detail)
    assert res.detail.startswith("output:") and "; call 2 of 2 differs from call 1 (" in res.detail, res.detail


def _returned(data, factor=1.0, warnings=()):
    return RReturned(factor * _ref(data.q, data.k, data.v, mask=data.mask), None, warnings=list(warnings))


def test_r_warnings_are_added_to_a_cases_detail_cut_at_200_characters():
    """An R function's warnings follow the case's detail after ``R warnings: ``, joined by `` | ``, the joined
    text cut at 200 characters."""
    store = CaseStore()
    data = store.get(PLAIN)
    res = run_one(Target("r", _ref), PLAIN, store, pre=_returned(data, warnings=["w1", "w2"]))
    assert res.status == Status.PASS and res.detail == "R warnings: w1 | w2", res.detail
    res = run_one(Target("r", _ref), PLAIN, store, pre=_returned(data, 2.0, warnings=["w1"]))
    assert res.status == Status.FAIL and res.detail.startswith("output:"), res.detail
    assert res.detail.endswith("; R warnings: w1"), res.detail
    long = ["a" * 150, "b" * 150]
    res = run_one(Target("r", _ref), PLAIN, store, pre=_returned(data, warnings=long))
    assert res.detail == "R warnings: " + ("a" * 150 + " | " + "b" * 150)[:200], res.detail


# -- the case store ---------------------------------------------------------------------------------------------------

def test_the_case_store_keeps_cases_up_to_2_mib_of_keys_and_values_and_makes_larger_ones_again():
    """Materialised cases are shared while their k and v take at most 2 MiB (2 * 2**20 bytes); a larger case is
    made again on each use. float64 k and v of Sk keys, D = Dv = 8: 8 * Sk * 16 bytes, 2 MiB at Sk = 16384."""
    store = CaseStore()
    at = CaseSpec("sizes", 9201, Sq=1, Sk=16384, D=8, Dv=8)
    above = CaseSpec("sizes", 9202, Sq=1, Sk=16385, D=8, Dv=8)
    first = store.get(at)
    assert first.k.nbytes + first.v.nbytes == 2 * 2**20
    assert store.get(at) is first
    big = store.get(above)
    assert big.k.nbytes + big.v.nbytes > 2 * 2**20 and store.get(above) is not big


# -- a row: aggregation ------------------------------------------------------------------------------------------------

def _row(specs, fn, progress=None, **kw):
    return family_case("sizes", specs, CaseStore(), progress=progress).run(Target("mine", fn, **kw))


def test_a_row_keeps_the_outputs_of_its_first_20_passing_cases_only():
    """Memory: a row keeps what the target returned for its first 20 passing cases (what diagnosis compares on
    the passing side) and for every case not passing; the rest are dropped."""
    specs = [_tiny(i) for i in range(23)]

    def first_wrong(q, k, v, mask=None, scale=None):
        out = _ref(q, k, v, mask=mask)
        return out if first_wrong.n else (first_wrong.__setattr__("n", 1), 2.0 * out)[1]
    first_wrong.n = 0
    out = _row(specs, first_wrong)
    assert [r.status for r in out.cases] == [Status.FAIL] + [Status.PASS] * 22
    assert out.cases[0].got is not None
    assert all(r.got is not None for r in out.cases[1:21]), [r.got is None for r in out.cases]
    assert all(r.got is None for r in out.cases[21:]), [r.got is None for r in out.cases]


def test_a_passing_row_reports_its_worst_ratio_and_no_absolute_error():
    """A row's cell carries the worst case ratio; its max_abs is 0 (a row's cases are judged by ratios)."""
    out = _row([_tiny(i) for i in range(3)], lambda q, k, v, mask=None, scale=None: _ref(q, k, v, mask=mask))
    assert out.status == Status.PASS and out.detail == "3 cases: 3 pass", out.detail
    assert out.max_ratio == max(r.ratio for r in out.cases) and out.max_abs == 0.0 and out.n_arrays == 3


def test_a_row_whose_cases_all_raise_has_no_judged_ratio():
    """Errors are not judged cases: a row whose every case raised is ``error`` with worst ratio 0 and max_abs 0."""
    def raises(q, k, v, mask=None, scale=None):
        raise RuntimeError("no")
    out = _row([_tiny(i) for i in range(2)], raises)
    assert out.status == Status.ERROR and out.max_ratio == 0.0 and out.max_abs == 0.0, out


def test_the_rows_detail_names_the_first_three_failing_cases():
    specs = [_tiny(i) for i in range(5)]
    out = _row(specs, lambda q, k, v, mask=None, scale=None: 2.0 * _ref(q, k, v, mask=mask))
    assert out.status == Status.FAIL
    named = [s.id for s in specs if f"{s.id} (" in out.detail]
    assert named == [s.id for s in specs[:3]], out.detail
    assert out.detail.startswith("5 cases: 5 FAIL; ") and out.max_abs == 0.0


def test_a_row_cut_by_the_deadline_names_the_first_case_not_run():
    """Cases not called before the deadline leave the row ``not run`` (when nothing failed): the detail is the
    count of each verdict and the first not-run case's message."""
    n = [0]

    def cut_after_2(q, k, v, mask=None, scale=None):
        n[0] += 1
        if n[0] > 2:
            raise TargetDied("not run", f"not called: deadline {n[0]}")
        return _ref(q, k, v, mask=mask)
    out = _row([_tiny(i) for i in range(4)], cut_after_2)
    assert out.status == Status.NOT_RUN, out.detail
    assert out.detail == "4 cases: 2 not run, 2 pass; not called: deadline 3", out.detail
    assert out.max_abs == 0.0 and out.max_ratio == max(r.ratio for r in out.cases[:2])


def test_a_row_of_n_a_cases_is_n_a_and_of_unsupported_ones_is_skip():
    """No case judged: ``n/a`` when some case is n/a (the API cannot express it), else ``skip``; and nothing is
    said of what the target returns (no ``returns`` convention)."""
    additive = [_tiny(i, mask="additive") for i in range(2)]       # the refimpl protocol takes bool masks only
    out = _row(additive, _ref)
    assert out.status == Status.NA and out.detail == "2 cases: 2 n/a", out.detail
    assert out.conventions == {}, out.conventions

    def unsupported(q, k, v, mask=None, scale=None):
        raise NotImplementedError("later")
    out = _row([_tiny(i) for i in range(2)], unsupported)
    assert out.status == Status.SKIP and out.detail == "2 cases: 2 unsupported", out.detail
    assert out.conventions == {}, out.conventions


def test_a_row_says_whether_the_target_returned_weights():
    specs = [_tiny(i) for i in range(2)]
    out = _row(specs, lambda q, k, v, mask=None, scale=None: _ref(q, k, v, mask=mask))
    assert out.conventions == {"returns": "output"}, out.conventions
    out = _row(specs, lambda q, k, v, mask=None, scale=None: scaled_dot_product_attention(q, k, v, mask=mask))
    assert out.conventions == {"returns": "output+weights"}, out.conventions


def test_a_row_reports_the_most_common_masked_row_convention_and_the_counts():
    """On rows with no key a target may give zeros, NaN or the uniform mean; the row's policy is the most common
    one, with how many cases showed each."""
    specs = [_tiny(i, Sq=4, mask="bool", dead_rows=True) for i in range(3)]
    n = [0]

    def zeros_then_nan(q, k, v, mask=None, scale=None):
        n[0] += 1
        out = np.array(_ref(q, k, v, mask=mask))
        dead = ~np.broadcast_to(mask, q.shape[:-1] + (k.shape[-2],)).any(axis=-1)
        out[dead] = np.nan if n[0] == 3 else 0.0
        return out
    out = _row(specs, zeros_then_nan)
    assert out.status == Status.PASS, out.detail
    assert out.conventions["masked-rows"] == "zeros", out.conventions
    assert out.conventions["masked-rows-counts"] == {"zeros": 2, "nan": 1}, out.conventions


# -- a row: batched calls, progress, R warnings ------------------------------------------------------------------------

class _Batching:
    """An R-function-like target: ``batch(datas)`` answers every case of the row in one call."""

    def __init__(self, warn=None, fail=None):
        self.batches, self.warn, self.fail = [], warn or {}, fail

    def __call__(self, q, k, v, mask=None, scale=None):
        raise AssertionError("a batched case was called alone")

    def batch(self, datas):
        self.batches.append([d.spec.id for d in datas])
        if self.fail:
            raise self.fail
        return [_returned(d, warnings=self.warn.get(d.spec.index, ())) for d in datas]


def test_a_batch_call_gets_only_the_cases_the_target_can_express():
    """A target whose function has ``batch`` gets, in one call, the row's cases that both its API and its own
    ``expressible`` can run; the others are n/a and never reach it."""
    ok1, additive, excluded, ok2 = _tiny(0), _tiny(1, mask="additive"), _tiny(2), _tiny(3)
    fn = _Batching()
    out = _row([ok1, additive, excluded, ok2], fn,
               expressible=lambda s: "not this one" if s.index == excluded.index else None)
    assert fn.batches == [[ok1.id, ok2.id]], fn.batches
    assert [r.status for r in out.cases] == [Status.PASS, Status.NA, Status.NA, Status.PASS], out.detail
    fn = _Batching()
    out = _row([ok1, additive, ok2], fn)                  # no expressible of its own
    assert fn.batches == [[ok1.id, ok2.id]] and out.status == Status.PASS, (fn.batches, out.detail)


def test_a_batch_that_raises_is_every_batched_cases_error():
    fn = _Batching(fail=RuntimeError("the R worker died"))
    out = _row([_tiny(0), _tiny(1, mask="additive"), _tiny(2)], fn)
    assert [r.status for r in out.cases] == [Status.ERROR, Status.NA, Status.ERROR], out.detail
    assert [r.detail for r in out.cases if r.status == Status.ERROR] == ["RuntimeError: the R worker died"] * 2


def test_a_row_with_r_warnings_names_how_many_cases_had_them_and_the_first():
    specs = [_tiny(i) for i in range(3)]
    out = _row(specs, _Batching(warn={9101: ["w-a", "w-b"], 9102: ["w-c"]}))
    assert out.status == Status.PASS
    assert out.detail == f"3 cases: 3 pass; R warnings in 2 cases ({specs[1].id}: w-a | w-b)", out.detail


def _correct(q, k, v, mask=None, scale=None):
    return _ref(q, k, v, mask=mask)


def test_progress_is_reported_every_100_cases_and_a_row_runs_without_it():
    specs = [_tiny(0)] * 200
    said = []
    out = _row(specs, _correct, progress=said.append)
    assert out.status == Status.PASS
    assert said == ["family:sizes x mine: 100/200 cases ...", "family:sizes x mine: 200/200 cases ..."], said
    assert _row(specs[:100], _correct).status == Status.PASS


def test_the_progress_line_gets_the_count_of_cases_and_failures_every_10_cases():
    """``progress.partial(done, failed)`` after every 10th case: how many cases ran and how many failed so far."""
    specs = [_tiny(i) for i in range(25)]
    wrong = {9103, 9112, 9115}
    counts = []

    def progress(line):
        pass
    progress.partial = lambda done, failed: counts.append((done, failed))

    def some_wrong(q, k, v, mask=None, scale=None):
        some_wrong.i += 1
        return (2.0 if 9100 + some_wrong.i in wrong else 1.0) * _ref(q, k, v, mask=mask)
    some_wrong.i = -1
    out = _row(specs, some_wrong, progress=progress)
    assert [r.status for r in out.cases].count(Status.FAIL) == 3
    assert counts == [(10, 1), (20, 3)], counts


def test_wrong_weights_on_a_row_the_catalogued_divergence_does_not_explain_are_not_excused():
    """A catalogued divergence excuses the rows it explains, their weights with them; a target that reproduces it
    but returns wrong weights on another row fails, as the same weights fail without the catalogue."""
    spec = CaseSpec("sizes", 9001, Sq=5, Sk=6, D=4, Dv=7, B=2, Hq=3, Hkv=3, is_causal=True)

    def divergent(q, k, v, keep):            # the catalogued behaviour: query row 0 is the plain mean of v
        out = np.array(scaled_dot_product_attention(q, k, v, mask=keep)[0])
        out[..., 0, :] = v.mean(axis=-2)
        return out

    def wrong_weights(q, k, v, mask=None):   # wrong on row 3 only, a row the catalogue does not explain
        w = np.array(scaled_dot_product_attention(q, k, v, mask=mask)[1])
        w[1, 2, 3] = w[1, 2, 3, ::-1]
        return w

    def reproduces(q, k, v, mask=None, scale=None):
        return divergent(q, k, v, mask), wrong_weights(q, k, v, mask)

    def reproduces_right_weights(q, k, v, mask=None, scale=None):
        out = divergent(q, k, v, mask)       # row 0's weights: those of the divergence (uniform over the keys)
        w = np.array(scaled_dot_product_attention(q, k, v, mask=mask)[1])
        w[..., 0, :] = 1.0 / w.shape[-1]
        return out, w

    def right_output(q, k, v, mask=None, scale=None):
        return scaled_dot_product_attention(q, k, v, mask=mask)[0], wrong_weights(q, k, v, mask)
    store = CaseStore()
    alone = run_one(Target("p", right_output), spec, store)
    assert alone.status == Status.FAIL and alone.detail.startswith("weights:"), alone.detail
    res = run_one(Target("r", reproduces, known=lambda q, k, v, keep: ["D9"], predict=divergent), spec, store)
    assert res.status == Status.FAIL and "weights:" in res.detail, (res.status, res.detail)
    ok = run_one(Target("r", reproduces_right_weights, known=lambda q, k, v, keep: ["D9"], predict=divergent),
                 spec, store)
    assert ok.status == Status.KNOWN and ok.detail.startswith("known D9 on "), (ok.status, ok.detail)


def test_a_case_without_reference_weights_judges_no_weights_under_a_catalogued_divergence():
    """A case whose reference weights are not kept (a long case: ``weights`` None) judges no weights: a target that
    reproduces the catalogue and returns weights is ``known`` as one that returns none."""
    from dataclasses import replace

    class NoWeights(CaseStore):
        def get(self, spec):
            return replace(super().get(spec), weights=None)

    def with_weights(q, k, v, mask=None, scale=None):
        return _divergent(q, k, v, mask), np.array(scaled_dot_product_attention(q, k, v, mask=mask)[1])
    for fn in (_reproducing, with_weights):
        res = run_one(Target("r", fn, **_catalogue()), CAUSAL, NoWeights())
        assert res.status == Status.KNOWN and res.detail == f"known D9 on {CAUSAL.B * CAUSAL.Hq} rows", res.detail
