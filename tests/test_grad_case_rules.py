"""The rules of a gradient row (``grad:<family>``, refimpl/harness/rows/grad_cases.py), one hand-made case each:
who gets gradients, how a ``--backward`` function is called and what it may return, how a raised or dying call
is reported, when NaN gradients on fully masked rows are a catalogued divergence, and how a row's cases make its
cell. The gradients expected are the textbook backward written out below, never the harness's oracle.
"""
import math

import numpy as np
import pytest

from refimpl.harness.cases import Case, CheckRun, Outcome, Status, TargetDied
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore
from refimpl.harness.rows.grad_cases import Backward, analyse_grad, grad_case, run_grad_one
from refimpl.harness.target_spec import Target

STORE = CaseStore()
MASKED = select(["masked-rows"], "quick", ("float64",))            # small cases, each with fully masked rows
BY_ID = {s.id: s for s in MASKED}
BOOL = [s for s in MASKED if s.mask != "additive"]                 # what a --backward (bool keep-masks) can take
SMALL = BY_ID["masked-rows/0007-float64"]                          # B=2 H=1 Sq=5 Sk=3, a padding mask
LONG = "".join(f"<{i:03d}>" for i in range(100))                   # 500 characters, every prefix distinct


def _forward(q, k, v, mask=None, scale=None):
    return q                                                        # never called by a gradient row


def _textbook(q, k, v, d_out, mask=None, scale=None, guard=True):
    """dQ, dK, dV of O = softmax(c Q K^T, masked) V for the loss sum(d_out * O), written out (Hq == Hkv):
    dP = dO V^T, dS = P (dP - rowsum(dO * O)), dQ = c dS K, dK = c dS^T Q, dV = P^T dO. ``guard``: a fully
    masked row (every weight exp(-inf) = 0) gets zero weights; without it 0 / 0 makes its weights NaN."""
    c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = c * q @ np.swapaxes(k, -1, -2)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    with np.errstate(all="ignore"):
        m = s.max(axis=-1, keepdims=True)
        e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
        z = e.sum(axis=-1, keepdims=True)
        p = e / (np.where(z == 0, 1.0, z) if guard else z)
        o = p @ v
        ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * o, axis=-1, keepdims=True))
        return c * ds @ k, c * np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ d_out


def _nan_softmax(q, k, v, d_out, mask=None, scale=None):
    return _textbook(q, k, v, d_out, mask, scale, guard=False)


def _nan_softmax_known(q, k, v, keep):
    """A catalogued divergence of the kind of T1 (NaN on fully masked rows): listed where ``keep`` masks a whole row."""
    return ["T1"] if keep is not None and (~keep.any(axis=-1)).any() else []


def _user(**kw):
    return Target("user.py:attn", _forward, layout="BHSD", **kw)


def _raising(exc):
    def fn(q, k, v, d_out, mask=None, scale=None):
        raise exc
    return Backward("user.py:bwd", fn)


# --- who gets gradients -----------------------------------------------------------------------------------

def test_a_builtin_column_without_autograd_is_na_even_when_a_backward_is_given():
    """A built-in column (a name without ``:``) that computes no gradients is n/a: ``--backward`` belongs to the
    user's NumPy targets, not to onnxruntime's column."""
    calls = []

    def bwd(*a, **kw):
        calls.append(1)
        return _textbook(*a, **kw)
    r = run_grad_one(Target("onnxruntime", _forward), SMALL, STORE, Backward("user.py:bwd", bwd))
    assert r.status == Status.NA and r.detail == "the built-in target onnxruntime computes no gradients"
    assert not calls


# --- how a --backward function is called and what it may return --------------------------------------------

def test_a_bhsd_backward_gets_a_full_keep_mask_and_none_when_nothing_is_masked():
    """A (B, H, S, D) ``--backward`` receives the case's keep-mask broadcast to (B, H, Sq, Sk), bool, and
    ``mask=None`` on a case without a mask."""
    seen = []

    def bwd(q, k, v, d_out, mask=None, scale=None):
        seen.append(None if mask is None else (mask.shape, mask.dtype))
        return _textbook(q, k, v, d_out, mask, scale)
    r = run_grad_one(_user(), SMALL, STORE, Backward("user.py:bwd", bwd))
    assert r.status == Status.PASS, r.detail
    assert seen == [((SMALL.B, SMALL.Hq, SMALL.Sq, SMALL.Sk), np.dtype(bool))]
    unmasked = select(["sizes"], "quick", ("float64",))[6]                        # Sq=33 Sk=1 D=Dv=8, no mask
    assert unmasked.mask == "none"
    seen.clear()
    r = run_grad_one(_user(), unmasked, STORE, Backward("user.py:bwd", bwd))
    assert r.status == Status.PASS, r.detail
    assert seen == [None]


def test_a_bshd_backward_gets_b_s_h_d_arrays():
    """``--layout BSHD``: q, k, v and d_out reach the backward as (B, S, H, D), and its (B, S, H, D) gradients
    are judged as such (a backward that takes the layout at its word passes)."""
    seen = []

    def bwd(q, k, v, d_out, mask=None, scale=None):
        seen.append([a.shape for a in (q, k, v, d_out)])
        t = [np.swapaxes(a, 1, 2) for a in (q, k, v, d_out)]
        return tuple(np.swapaxes(g, 1, 2) for g in _textbook(*t, mask=mask, scale=scale))
    s = SMALL
    r = run_grad_one(Target("user.py:attn", _forward, layout="BSHD"), s, STORE, Backward("user.py:bwd", bwd))
    assert seen == [[(s.B, s.Sq, s.Hq, s.D), (s.B, s.Sk, s.Hkv, s.D), (s.B, s.Sk, s.Hkv, s.Dv),
                     (s.B, s.Sq, s.Hq, s.Dv)]]
    assert r.status == Status.PASS, r.detail


@pytest.mark.parametrize("returned,what", [
    (lambda g: g + (g[2],), "tuple of length 4"),
    (lambda g: list(g[:2]), "list of length 2"),
    (lambda g: None, "NoneType")], ids=["four-arrays", "two-arrays", "none"])
def test_a_backward_must_return_exactly_dq_dk_dv(returned, what):
    """A ``--backward`` returning anything but a sequence of three arrays is an error that says what came, even
    when the first three of more are right."""
    def bwd(*a, **kw):
        return returned(_textbook(*a, **kw))
    r = run_grad_one(_user(), SMALL, STORE, Backward("user.py:bwd", bwd))
    assert r.status == Status.ERROR and r.detail == f"TypeError: --backward returned {what}; expected (dq, dk, dv)"


# --- a call that raises or dies -----------------------------------------------------------------------------

def test_a_backward_whose_worker_dies_is_that_case_s_verdict_with_the_first_300_characters():
    """A worker that dies (crash, timeout, oom) in the backward gives the case that status, an infinite ratio and
    the first 300 characters of what the worker said."""
    for status in (Status.CRASH, Status.TIMEOUT, Status.OOM):
        r = run_grad_one(_user(), SMALL, STORE, _raising(TargetDied(status.value, LONG)))
        assert (r.status, r.ratio, r.detail) == (status, math.inf, LONG[:300])


def test_a_not_implemented_backward_is_unsupported_with_the_first_200_characters():
    """NotImplementedError is ``unsupported`` (listed, not a failure), its message cut to 200 characters."""
    r = run_grad_one(_user(), SMALL, STORE, _raising(NotImplementedError(LONG)))
    assert r.status == Status.UNSUPPORTED and not Status(r.status).failed
    assert r.detail == ("NotImplementedError: " + LONG)[:200]


def test_a_backward_that_raises_is_an_error_with_the_first_300_characters():
    """Any other exception is an ``error`` with an infinite ratio: the exception's type and message, 300 characters."""
    r = run_grad_one(_user(), SMALL, STORE, _raising(ValueError(LONG)))
    assert (r.status, r.ratio, r.detail) == (Status.ERROR, math.inf, ("ValueError: " + LONG)[:300])


# --- NaN gradients on fully masked rows and the catalogued divergence -----------------------------------------

def test_nan_gradients_on_fully_masked_rows_are_known_where_the_target_catalogues_them():
    """A target whose catalogue lists a divergence for the case's keep-mask (given broadcast to (B, H, Sq, Sk))
    gets ``known`` instead of FAIL for NaN gradients on fully masked rows; without it they FAIL."""
    keeps = []

    def known(q, k, v, keep):
        keeps.append(None if keep is None else keep.shape)
        return _nan_softmax_known(q, k, v, keep)
    b = Backward("user.py:bwd", _nan_softmax)
    plain = run_grad_one(_user(), SMALL, STORE, b)
    assert plain.status == Status.FAIL and "NaN or inf" in plain.detail
    r = run_grad_one(_user(known=known), SMALL, STORE, b)
    assert r.status == Status.KNOWN and r.detail == f"known T1: {plain.detail}"
    assert keeps == [(SMALL.B, SMALL.Hq, SMALL.Sq, SMALL.Sk)]


def test_the_masked_rows_divergence_excuses_nan_gradients_only():
    """The catalogue excuses a failure by NaN or inf only: a passing case and one failing by value on a case with
    fully masked rows keep their verdicts, and the catalogue is not consulted for them."""
    asked = []

    def known(q, k, v, keep):
        asked.append(1)
        return ["T1"]
    target = _user(known=known)
    assert run_grad_one(target, SMALL, STORE, Backward("user.py:bwd", _textbook)).status == Status.PASS

    def dv_doubled(*a, **kw):
        dq, dk, dv = _textbook(*a, **kw)
        return dq, dk, 2 * dv
    r = run_grad_one(target, SMALL, STORE, Backward("user.py:bwd", dv_doubled))
    assert r.status == Status.FAIL and "dv" in r.detail and "NaN" not in r.detail
    assert not asked


# --- a row's cell -------------------------------------------------------------------------------------------

def test_a_row_of_known_and_na_cases_is_known_with_the_first_known_case_s_detail():
    """No failing case and some ``known``: the cell is ``known``, the summary then the first known case's detail;
    a gradient row's cell reports no absolute error (each gradient has its own bound)."""
    additive = sum(s.mask == "additive" for s in MASKED)
    assert 0 < additive < len(MASKED)
    case = grad_case("masked-rows", MASKED, STORE, Backward("user.py:bwd", _nan_softmax))
    o = case.run(_user(known=_nan_softmax_known))
    first = next(s for s in MASKED if s.mask != "additive")
    one = run_grad_one(_user(known=_nan_softmax_known), first, STORE, Backward("user.py:bwd", _nan_softmax))
    assert o.status == Status.KNOWN and o.max_abs == 0.0
    assert o.detail == f"{len(MASKED)} cases: {len(MASKED) - additive} known, {additive} n/a; {one.detail}"
    assert one.detail.startswith("known T1: ")


def test_a_passing_row_reports_no_absolute_error_and_keeps_no_gradients():
    """A row that passes: ``pass``, no absolute error (max_abs 0), no diagnosis, and none of its gradients kept
    for the run's diagnosis (that pools failing rows only)."""
    case = grad_case("masked-rows", BOOL, STORE, Backward("user.py:bwd", _textbook))
    o = case.run(_user())
    assert o.status == Status.PASS and o.max_abs == 0.0 and 0.0 < o.max_ratio <= 1.0
    assert o.detail == f"{len(BOOL)} cases: {len(BOOL)} pass"
    assert case.grad_samples == {} and case.diagnoses == {}
    assert all(r.got is None for r in o.cases)


def test_a_one_case_row_on_the_reference_is_reference():
    """A row of a single case takes that case's status and reason when it is reference, skip or n/a."""
    from refimpl.harness.target_spec import builtin_targets
    o = grad_case("masked-rows", [SMALL], STORE).run(builtin_targets()["refimpl"]())
    assert o.status == Status.REFERENCE and o.detail == "refimpl.backward.sdpa_backward is the gradients' oracle"


def test_a_row_whose_cases_are_all_na_gives_the_first_case_s_reason():
    """Every case n/a (for its own reason): the cell is n/a with the first case's reason."""
    target = _user(expressible=lambda s: f"this kernel cannot run {s.id}")
    o = grad_case("masked-rows", BOOL, STORE, Backward("user.py:bwd", _textbook)).run(target)
    assert o.status == Status.NA and o.detail == f"this kernel cannot run {BOOL[0].id}"


def test_a_row_with_nothing_judged_but_mixed_statuses_is_na_with_the_counts():
    """Nothing judged, and not a single status (n/a and unsupported): the cell is n/a with the counts; so is a
    row whose every case is unsupported (unsupported is not a reason of its own)."""
    b = _raising(NotImplementedError("no backward yet"))
    additive = sum(s.mask == "additive" for s in MASKED)
    o = grad_case("masked-rows", MASKED, STORE, b).run(_user())
    assert o.status == Status.NA
    assert o.detail == f"{len(MASKED)} cases: {additive} n/a, {len(MASKED) - additive} unsupported"
    o = grad_case("masked-rows", BOOL, STORE, b).run(_user())
    assert o.status == Status.NA and o.detail == f"{len(BOOL)} cases: {len(BOOL)} unsupported"


def test_reading_the_gradient_samples_leaves_other_rows_untouched():
    """analyse_grad drops the samples of the gradient rows it read and writes nothing to the other rows."""
    forward = Case("family:sizes", "families", "a forward row", lambda t: Outcome(Status.PASS))
    run = CheckRun([forward], ["user.py:attn"], {("family:sizes", "user.py:attn"): Outcome(Status.PASS)}, {}, 0.0)
    analyse_grad(run)
    assert not hasattr(forward, "grad_samples") and run.diagnoses.get("user.py:attn", []) == []


def test_a_nan_gradient_on_a_row_with_a_key_is_not_excused_by_the_fully_masked_rows_divergence():
    """T1 (NaN softmax on fully masked rows) explains NaN in those rows of dQ and in dK, dV of the (batch, kv head)
    blocks they reach; a NaN on a row that has a key is a failure even where the catalogue applies."""
    def live_nan(q, k, v, d_out, mask=None, scale=None):
        dq, dk, dv = _nan_softmax(q, k, v, d_out, mask, scale)
        keep = np.broadcast_to(mask, q.shape[:-1] + (k.shape[-2],))
        b, h, i = np.argwhere(keep.any(axis=-1))[0]                    # the first row that has a key
        dq = dq.copy()
        dq[b, h, i] = np.nan
        return dq, dk, dv
    excused = run_grad_one(_user(known=_nan_softmax_known), SMALL, STORE, Backward("b", _nan_softmax))
    assert excused.status == Status.KNOWN, (excused.status, excused.detail)
    live = run_grad_one(_user(known=_nan_softmax_known), SMALL, STORE, Backward("b", live_nan))
    assert live.status == Status.FAIL and "NaN or inf" in live.detail, (live.status, live.detail)


def test_the_nan_a_fully_masked_row_spreads_reaches_its_own_kv_head_block_only():
    """Under GQA a fully masked row of query head h spreads NaN into dK, dV of kv head h // (Hq / Hkv) of its batch,
    and into dQ on that row; anywhere else, or a gradient of another shape, is not the divergence's."""
    from types import SimpleNamespace
    from refimpl.harness.rows.grad_cases import _where_dead_rows_reach
    B, Hq, Hkv, Sq, Sk, D = 2, 4, 2, 3, 5, 2
    dead = np.zeros((B, Hq, Sq), bool)
    dead[1, 3, 0] = True                             # batch 1, query head 3: kv head 1 (groups of 2)
    data = SimpleNamespace(dead=dead, spec=SimpleNamespace(Hkv=Hkv))

    def grads(where=None):
        g = {"dq": np.zeros((B, Hq, Sq, D)), "dk": np.zeros((B, Hkv, Sk, D)), "dv": np.zeros((B, Hkv, Sk, D))}
        if where is not None:
            g[where[0]][where[1]] = np.nan
        return g
    assert _where_dead_rows_reach(data, grads()) is True
    assert _where_dead_rows_reach(data, grads(("dq", (1, 3, 0, 1)))) is True
    assert _where_dead_rows_reach(data, grads(("dk", (1, 1, 4, 0)))) is True
    assert _where_dead_rows_reach(data, grads(("dv", (1, 1, 0, 1)))) is True
    assert _where_dead_rows_reach(data, grads(("dq", (1, 3, 1, 0)))) is False          # a row of that head with a key
    assert _where_dead_rows_reach(data, grads(("dq", (0, 3, 0, 0)))) is False          # the same row of the other batch
    assert _where_dead_rows_reach(data, grads(("dk", (1, 0, 0, 0)))) is False          # the other kv head
    assert _where_dead_rows_reach(data, grads(("dv", (0, 1, 0, 0)))) is False          # the other batch
    wrong = grads()
    wrong["dk"] = np.zeros((B, Hq, Sk, D))                                   # per query head: another shape
    assert _where_dead_rows_reach(data, wrong) is False


def test_the_fully_masked_rows_divergence_excuses_their_nan_and_not_a_wrong_value_elsewhere():
    """T1 sets aside the NaN of fully masked rows only: the other entries are judged as usual, so a dQ three times
    too large on the rows with a key fails even beside those NaN."""
    def nan_and_wrong(q, k, v, d_out, mask=None, scale=None):
        dq, dk, dv = _nan_softmax(q, k, v, d_out, mask, scale)
        return 3.0 * dq, dk, dv
    res = run_grad_one(_user(known=_nan_softmax_known), SMALL, STORE, Backward("b", nan_and_wrong))
    assert res.status == Status.FAIL and "besides the NaN of fully masked rows: dq: " in res.detail, res.detail


def test_a_gradient_of_another_shape_beside_masked_row_nan_is_a_failure_not_a_harness_error():
    """dQ returned (B, H, Sk, D) with dV NaN on the masked rows: the judge's shape message, no broadcast error."""
    def wrong_dq_shape(q, k, v, d_out, mask=None, scale=None):
        dq, dk, dv = _nan_softmax(q, k, v, d_out, mask, scale)
        return np.zeros(q.shape[:-2] + (k.shape[-2], q.shape[-1])), dk, dv
    assert SMALL.Sq != SMALL.Sk
    res = run_grad_one(_user(known=_nan_softmax_known), SMALL, STORE, Backward("b", wrong_dq_shape))
    assert res.status == Status.FAIL and "dq: shape " in res.detail, (res.status, res.detail)
