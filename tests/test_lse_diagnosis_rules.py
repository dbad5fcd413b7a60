"""The diagnosis of a returned log-sum-exp (refimpl/harness/analysis/diagnosis_lse.py, ``--lse``) one rule at a time.

As its module doc states it: a model is named when, on every failed case of the sample (at most ``MAX_FAILING``),
the case failed on its LSE alone and the model reproduces the returned LSE and explains it, and when it reproduces
the LSE of the passing cases of the sample (at most ``MAX_PASSING``). Reproduces: the same shape, the same precision
class (the non-half models: float32 or wider), on each row that belongs to a sequence NaN == NaN, an infinity ==
an infinity (+inf and -inf alike), else ``|model - got| <= atol (1 + max|LSE|) + rtol |got|``. Explains: the model's
distance to the returned LSE is at most ``EXPLAINS`` times refimpl's (its own, not zero). Long cases (more than
``MAX_SCORES`` scores) are not modelled; a case whose inputs cannot be had gives no line.

The cases are made by hand (a few queries and keys), and every LSE a kernel returns here is computed in this file
(``_lse_by_hand``: log of the row's sum of exp(scale q.k) over its kept keys, -inf where none is kept)."""
import math
from types import SimpleNamespace

import numpy as np

from refimpl.bug_model import BugModel, Variant
from refimpl.bugs_lse import MODELS
from refimpl.harness.analysis import diagnosis_lse, diagnosis_sample
from refimpl.harness.analysis.diagnosis_lse import lse_lines
from refimpl.harness.cases import Status

BASE2 = f"diagnosis t: lse-base2 — {MODELS['lse-base2'].explanation}"


def _lse_by_hand(q, k, keep=None):
    """log sum_j exp(q.k_j / sqrt(D)) over the kept keys, -inf on a row with none, written here."""
    s = (q @ np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1)
    base = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = base + np.log(np.exp(s - base[..., None]).sum(axis=-1))
    return np.where(m == -np.inf, -np.inf, out)


def _case(id, B=1, H=2, Sq=3, Sk=5, D=4, seed=0, keep=None, absent=None, zero=False):
    """A float64 case of random (or, ``zero``, all-zero) q and k; ``keep``: a boolean mask (True: attended)."""
    rng = np.random.default_rng(seed)
    q = np.zeros((B, H, Sq, D)) if zero else rng.standard_normal((B, H, Sq, D))
    k = np.zeros((B, H, Sk, D)) if zero else rng.standard_normal((B, H, Sk, D))
    v = rng.standard_normal((B, H, Sk, 2))
    spec = SimpleNamespace(id=id, dtype="float64", B=B, Hq=H, Sq=Sq, Sk=Sk, D=D)
    kw = dict(mask=keep, scale=None, is_causal=False, alignment="top-left", window=None, softcap=None,
              enable_gqa=False)
    return SimpleNamespace(spec=spec, q=q, k=k, v=v, absent=absent, reference_kwargs=lambda: dict(kw))


def _result(data, lse, status=Status.FAIL, lse_dtype="float32", detail=None):
    if detail is None:
        detail = "log-sum-exp: error above the bound" if status == Status.FAIL else ""
    return SimpleNamespace(id=data.spec.id, status=status, detail=detail,
                           got=SimpleNamespace(lse=np.asarray(lse, np.float64), lse_dtype=lse_dtype))


def _base2(data, keep=None):
    """What a kernel with the base-2 mistake returns: the natural LSE / ln 2."""
    return _lse_by_hand(data.q, data.k, keep) / math.log(2.0)


class _Store:
    """The case store's two doors: ``_data`` (what the run materialised) and ``get(spec)`` (made from the spec)."""

    def __init__(self, kept=(), made=()):
        self._data = {d.spec.id: d for d in kept}
        self._made = {d.spec.id: d for d in made}

    def get(self, spec):
        return self._made[spec.id]


def _names(lines):
    return [line.split(": ", 1)[1].split(" — ")[0] for line in lines]


# --- where a case's inputs come from ---------------------------------------------------------------------------

def test_a_base2_lse_is_named_from_the_cases_the_run_kept_when_no_specs_are_given():
    cases = [_case(f"c/{i}", seed=i) for i in range(3)]
    results = [_result(d, _base2(d)) for d in cases]
    assert lse_lines(results, _Store(kept=cases), "t", None) == [BASE2]


def test_with_specs_given_a_cases_inputs_are_made_from_its_spec():
    cases = [_case(f"c/{i}", seed=i) for i in range(3)]
    results = [_result(d, _base2(d)) for d in cases]
    specs = {d.spec.id: d.spec for d in cases}
    assert lse_lines(results, _Store(made=cases), "t", specs) == [BASE2]          # nothing kept: made from the spec


def test_a_sampled_case_whose_inputs_cannot_be_had_gives_no_line():
    readable = _case("c/0", seed=0)
    gone = _case("c/1", seed=1)                                   # the store did not keep it, and no spec is given
    results = [_result(d, _base2(d)) for d in (readable, gone)]
    assert lse_lines(results, _Store(kept=[readable]), "t", None) == []


# --- the sample ----------------------------------------------------------------------------------------------

def test_a_passing_case_whose_output_was_not_kept_is_not_read():
    fail = _case("f/0", seed=3)
    passing = _case("p/0", zero=True, Sk=1)                      # one key, q = 0: LSE log(1) = 0, base 2 or not
    unkept = SimpleNamespace(id="p/1", status=Status.PASS, detail="", got=None)
    results = [_result(fail, _base2(fail)), unkept, _result(passing, np.zeros((1, 2, 3)), Status.PASS)]
    assert lse_lines(results, _Store(kept=[fail, passing, _case("p/1", seed=4)]), "t", None) == [BASE2]


def test_a_long_case_beyond_max_scores_is_not_read():
    fail = _case("f/0", seed=5)
    H, Sq = 2, 1000
    Sk = diagnosis_sample.MAX_SCORES // (H * Sq) + 1                # B * Hq * Sq * Sk just above MAX_SCORES
    long = _case("p/long", H=H, Sq=Sq, Sk=Sk, D=1, zero=True)
    assert 1 * H * Sq * Sk > diagnosis_sample.MAX_SCORES
    right = np.full((1, H, Sq), math.log(Sk))                    # q = 0: every score 0, the LSE log(Sk) (not base 2)
    results = [_result(fail, _base2(fail)), _result(long, right, Status.PASS)]
    assert lse_lines(results, _Store(kept=[fail, long]), "t", None) == [BASE2]


def _contradicting(i):
    """A failed case whose LSE is off by 1 on every row: no model of the table returns that."""
    d = _case(f"x/{i}", seed=100 + i)
    return d, _result(d, _lse_by_hand(d.q, d.k) + 1.0)


def test_the_failed_cases_past_the_first_max_failing_are_not_read():
    n = diagnosis_lse.MAX_FAILING
    cases = [_case(f"f/{i}", seed=i) for i in range(n)]
    extra, res = _contradicting(0)
    results = [_result(d, _base2(d)) for d in cases]
    store = _Store(kept=cases + [extra])
    assert lse_lines(results + [res], store, "t", None) == [BASE2]
    assert lse_lines(results[1:] + [res], store, "t", None) == []          # read when among the first MAX_FAILING


def test_the_passing_cases_past_the_first_max_passing_are_not_read():
    n = diagnosis_lse.MAX_PASSING
    fail = _case("f/0", seed=7)
    zeros = [_case(f"p/{i}", zero=True, Sk=1) for i in range(n)]            # LSE 0: base 2 reproduces them
    right = _case("p/right", seed=8)                                        # a right LSE base 2 does not reproduce
    results = [_result(fail, _base2(fail))] + [_result(d, np.zeros((1, 2, 3)), Status.PASS) for d in zeros]
    last = _result(right, _lse_by_hand(right.q, right.k), Status.PASS)
    store = _Store(kept=[fail, right] + zeros)
    assert lse_lines(results + [last], store, "t", None) == [BASE2]
    assert lse_lines(results[:-1] + [last], store, "t", None) == []         # read when among the first MAX_PASSING


# --- reproduces ----------------------------------------------------------------------------------------------

def test_the_padding_rows_of_a_packed_batch_are_not_judged():
    absent = np.zeros((1, 2, 3), bool)
    absent[0, :, 2] = True                                       # the last query row is no sequence's
    data = _case("c/0", seed=9, absent=absent)
    got = _base2(data)
    got[absent] = 12345.0                                        # whatever the kernel left there
    assert lse_lines([_result(data, got)], _Store(kept=[data]), "t", None) == [BASE2]
    data.absent = None                                           # the same row judged: no model returns 12345
    assert lse_lines([_result(data, got)], _Store(kept=[data]), "t", None) == []


def test_an_lse_in_a_type_that_is_no_precision_is_reproduced_by_no_model():
    data = _case("c/0", seed=10)
    assert lse_lines([_result(data, _base2(data), lse_dtype="float32")], _Store(kept=[data]), "t", None) == [BASE2]
    # the same values as a torch int32 tensor would come: not float32 or wider, nor a half-precision buffer
    assert lse_lines([_result(data, _base2(data), lse_dtype="int32")], _Store(kept=[data]), "t", None) == []


def _one_model(name, fn, tolerance):
    return {name: BugModel(name, f"the {name} model", (Variant(name, fn),), tolerance)}


def _constant(value):
    def fn(q, k, v, dtype="float64", **kw):
        return np.full(np.shape(q)[:-1], value), None
    return fn


def test_a_model_that_raises_on_a_case_does_not_fit_it(monkeypatch):
    def raises(q, k, v, **kw):
        raise ValueError("cannot compute this case")
    data = _case("c/0", seed=11)
    monkeypatch.setattr(diagnosis_lse, "MODELS", {**_one_model("boom", raises, (1e-4, 1e-5)),
                                                  "lse-base2": MODELS["lse-base2"]})
    assert lse_lines([_result(data, _base2(data))], _Store(kept=[data]), "t", None) == [BASE2]


def test_a_model_within_exactly_atol_times_1_plus_max_lse_plus_rtol_times_got_reproduces(monkeypatch):
    # one key and q = 0: refimpl's LSE is log(1) = 0 on every row, so max|LSE| = 0 and the bound is atol (rtol 0)
    atol = 2.0 ** -10
    monkeypatch.setattr(diagnosis_lse, "MODELS", _one_model("one", _constant(1.0), (0.0, atol)))
    data = _case("c/0", zero=True, Sk=1)
    store = _Store(kept=[data])
    at = _result(data, np.full((1, 2, 3), 1.0 + atol))          # |1 - got| = atol exactly
    assert _names(lse_lines([at], store, "t", None)) == ["one"]
    beyond = _result(data, np.full((1, 2, 3), 1.0 + 2 * atol))
    assert lse_lines([beyond], store, "t", None) == []


def test_the_absolute_allowance_grows_with_the_largest_reference_lse(monkeypatch):
    # q = 0 over 20 keys: refimpl's LSE is log 20 (about 3.0) on every row, so the bound is atol (1 + log 20): an
    # LSE 0.9 of it away from the model reproduces, one 1.1 of it away does not
    atol = 2.0 ** -10
    allowed = atol * (1.0 + math.log(20.0))
    monkeypatch.setattr(diagnosis_lse, "MODELS", _one_model("one", _constant(1.0), (0.0, atol)))
    data = _case("c/0", zero=True, Sk=20)
    store = _Store(kept=[data])
    assert _names(lse_lines([_result(data, np.full((1, 2, 3), 1.0 + 0.9 * allowed))], store, "t", None)) == ["one"]
    assert lse_lines([_result(data, np.full((1, 2, 3), 1.0 + 1.1 * allowed))], store, "t", None) == []


# --- explains -------------------------------------------------------------------------------------------------

def test_a_model_no_nearer_the_returned_lse_than_refimpls_does_not_explain_it():
    # no row without a key and no softcap: lse-dead-nan, lse-dead-zero and lse-softcap return refimpl's LSE here,
    # within their tolerance of an LSE 1e-7 off; their distance equals refimpl's, more than EXPLAINS times it
    data = _case("c/0", seed=12)
    got = _lse_by_hand(data.q, data.k) + 1e-7
    assert lse_lines([_result(data, got)], _Store(kept=[data]), "t", None) == []


def test_a_model_at_exactly_explains_times_refimpls_distance_explains(monkeypatch):
    # refimpl's LSE is 0 (one key, q = 0); the kernel returns g; the model g - EXPLAINS g, at EXPLAINS g from it
    g = 2.0 ** -20
    e = diagnosis_lse.EXPLAINS
    data = _case("c/0", zero=True, Sk=1)
    store = _Store(kept=[data])
    monkeypatch.setattr(diagnosis_lse, "MODELS", _one_model("half", _constant(g - e * g), (0.0, 1e-3)))
    assert abs((g - e * g) - g) == e * g                         # the distances exact in binary
    assert _names(lse_lines([_result(data, np.full((1, 2, 3), g))], store, "t", None)) == ["half"]
    monkeypatch.setattr(diagnosis_lse, "MODELS", _one_model("further", _constant(g - e * g * 1.25), (0.0, 1e-3)))
    assert lse_lines([_result(data, np.full((1, 2, 3), g))], store, "t", None) == []


def test_an_lse_failing_only_on_a_mix_of_plus_and_minus_inf_on_rows_with_no_key_is_explained_by_none():
    keep = np.ones((1, 2, 3, 1), bool)
    keep[0, :, 0] = False                                        # query row 0 attends no key, in both heads
    data = _case("c/0", Sk=1, zero=True, keep=keep)              # one key, q = 0: the LSE is log(1) = 0 elsewhere
    got = _lse_by_hand(data.q, data.k, keep)
    assert np.isneginf(got[0, :, 0]).all() and (got[0, :, 1:] == 0.0).all()
    got[0, 0, 0] = np.inf                                        # +inf in head 0, -inf in head 1: refused by the judge
    detail = "log-sum-exp of rows with no key: a mix of +inf and -inf (accepted: all +inf or all -inf)"
    # the models equal to refimpl's LSE here (no softcap, one key, 0 in base 2 is 0) reproduce it exactly (an
    # infinity == an infinity), but refimpl's own distance to it is 0: nothing to explain
    assert lse_lines([_result(data, got, detail=detail)], _Store(kept=[data]), "t", None) == []
    got[0, :, 0] = np.nan                                        # what lse-dead-nan returns there: explained
    assert _names(lse_lines([_result(data, got, detail="log-sum-exp of rows with no key: [nan]")],
                            _Store(kept=[data]), "t", None)) == ["lse-dead-nan"]
