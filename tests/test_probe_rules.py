"""The probe's rules (refimpl/harness/targets/probe.py), each pinned by a tiny hand-made target called in-process:
its closeness test, the probe case's sizes, the order and scope of the configurations it tries, what it says
about a returned value that is not an array (and the hint that goes with it), the output-layout message, how
refimpl's own keywords are asked for their causal alignment, and which targets probe_targets probes."""
import math

import numpy as np
import pytest

from refimpl.errors import UsageError
from refimpl.harness import apis
from refimpl.harness.targets.probe import PROBE_SPEC, causal_convention, matches, probe, probe_targets
from refimpl.harness.target_spec import Target

REFIMPL_RETURNS = apis.get("refimpl").returns        # "what to return", the message's fix for the refimpl protocol

# The module doc's probe case: B = 1, Hq = Hkv = 2, Sq = 3, Sk = 5, D = 4, Dv = 6.
B, H, SQ, SK, D, DV = 1, 2, 3, 5, 4, 6
EXPECTED_SHAPE = (B, H, SQ, DV)


def _attention(q, k, v, causal=None):
    """Written here: softmax(q k^T / sqrt(D)) v over the last two axes (NumPy or torch, whichever q is); causal
    None, or "top-left" / "bottom-right" (key j kept for query i iff j <= i, resp. j <= i + Sk - Sq)."""
    if hasattr(q, "detach"):
        import torch
        s = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        return torch.softmax(s, dim=-1) @ v
    s = (q @ np.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
    if causal is not None:
        sq, sk = s.shape[-2:]
        off = 0 if causal == "top-left" else sk - sq
        s = np.where(np.arange(sk)[None, :] <= np.arange(sq)[:, None] + off, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True) @ v


def _tol(e, v):
    """The module doc's bound, written out: 0.02 * (1 + max|v|) + 0.02 * |E|."""
    return 0.02 * (1 + np.abs(v).max()) + 0.02 * np.abs(e)


# ---- matches: the loose closeness ------------------------------------------------------------------------------

def test_the_probe_tolerance_is_two_percent_of_one_plus_max_v_plus_two_percent_of_the_expected_value():
    """|got - E| <= 0.02 * (1 + max|v|) + 0.02 * |E| elementwise: each term, and the bound itself, counts."""
    cases = [  # (E, max|v|, error): the bound written out decides
        (0.0, 0.0, 0.02),        # exactly at the bound: 0.02 * 1 (the bound is inclusive)
        (0.0, 0.0, 0.03),        # above 0.02, below 0.04: the 2% itself
        (0.0, 10.0, 0.23),       # bound 0.02 * 11 = 0.22 (not 0.02 * 12 = 0.24): the 1 is one
        (0.0, 1.0, 0.03),        # bound 0.02 * 2 = 0.04 (0.02 / 2 = 0.01 would refuse it)
        (10.0, 0.0, 0.1),        # bound 0.02 + 0.02 * 10 = 0.22 (0.02 - 0.2 or 0.02 + 0.02 / 10 would refuse it)
        (10.0, 0.0, 0.23),       # above 0.22
    ]
    for e, vmax, err in cases:
        expected = np.full((1, 2), e)
        v = np.array([[vmax, -vmax / 2]])
        want = bool(err <= _tol(e, v))
        assert matches(expected + err, expected, v) is want, (e, vmax, err, want)
        assert matches(expected - err, expected, v) is want, (e, vmax, err, want)
    assert [bool(err <= _tol(e, np.array([vm]))) for e, vm, err in cases] == [True, False, False, True, True, False]


def test_outputs_of_another_shape_never_match_and_the_answer_is_a_bool():
    """Shapes must be equal (no broadcasting), and matches answers False, not some other falsy value."""
    expected, v = np.zeros((1, 2, 3, 6)), np.ones((1, 2, 5, 6))
    assert matches(np.zeros((1, 3, 2, 6)), expected, v) is False
    assert matches(np.zeros((2, 3, 6)), expected, v) is False
    assert matches(np.zeros((1, 2, 3, 6)), expected, v) is True


# ---- the probe case ---------------------------------------------------------------------------------------------

def test_the_probe_case_has_the_documented_sizes_each_different():
    """A target is probed on B = 1, Hq = Hkv = 2, Sq = 3, Sk = 5, D = 4, Dv = 6 (B, H, S, D), no mask."""
    seen = []

    def recording(q, k, v, mask=None, scale=None):
        seen.append((q.shape, k.shape, v.shape, mask, scale))
        return _attention(q, k, v)
    assert probe(Target("rec", recording, layout="BHSD")) == {"causal": "n/a"}
    assert seen == [((B, H, SQ, D), (B, H, SK, D), (B, H, SK, DV), None, None)]
    sizes = (PROBE_SPEC.B, PROBE_SPEC.Hq, PROBE_SPEC.Sq, PROBE_SPEC.Sk, PROBE_SPEC.D, PROBE_SPEC.Dv)
    assert sizes == (B, H, SQ, SK, D, DV) and PROBE_SPEC.Hkv == H


# ---- the configurations tried after a failure ---------------------------------------------------------------

def test_the_most_specific_api_is_named_first_when_several_configurations_work():
    """The alternatives are tried most specific API first (most identifying parameters): a torch kernel whose
    signature has torch-sdpa's parameters (and the refimpl protocol's) is told --api torch-sdpa, not the refimpl
    protocol with --torch-tensors, though both would return the expected output."""
    pytest.importorskip("torch")

    def torch_kernel(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, mask=None):
        import torch
        if not isinstance(query, torch.Tensor):
            raise TypeError("expected torch tensors")
        return _attention(query, key, value)
    with pytest.raises(UsageError) as e:
        probe(Target("k", torch_kernel))
    assert str(e.value).endswith("run it with --api torch-sdpa"), str(e.value)


def test_a_kernel_is_never_told_to_use_the_flags_it_already_has():
    """The other configurations are the *other* ones: a torch-sdpa kernel (one layout, always tensors) whose
    signature fits no other API has none, so a kernel that returns a wrong output once and the right one after
    is left to the run, not told "run it with --api torch-sdpa" (what it was already run with)."""
    pytest.importorskip("torch")
    calls = []

    def flaky(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        calls.append(1)
        out = _attention(query, key, value)
        return out * 0 + 7 if len(calls) == 1 else out           # wrong on the first call only
    assert probe(Target("flaky", flaky, api="torch-sdpa")) == {"causal": "other"}     # it ignores is_causal


class _TwoLayouts(apis.Api):
    """A test's own API whose layout is a flag with two choices: q, k, v (B, H, S, D) or, with BSHD, (B, S, H, D)."""

    def arguments(self, data, conv, layout):
        q, k, v = (np.swapaxes(a, 1, 2) if layout == "BSHD" else a for a in (data.q, data.k, data.v))
        given = {"q": conv(q), "k": conv(k), "v": conv(v)}
        return given, (given["q"], given["k"], given["v"]), {"scale": data.spec.scale}


def test_an_api_with_two_layouts_has_its_other_layout_tried():
    """Any API with more than one layout has them tried as flags (not only refimpl's three): a (B, S, H, D) kernel
    run as BHSD through a two-layout API is told that API's --layout BSHD."""
    api = apis.register(_TwoLayouts(name="test-two-layouts", signature="fn(q, k, v, scale=None)", params=("scale",),
                                    tensors=False, layouts=("BHSD", "BSHD")))
    try:
        def bshd_kernel(q, k, v, scale=None):
            qh, kh, vh = (np.swapaxes(np.asarray(a), 1, 2) for a in (q, k, v))     # einsum below raises on BHSD
            s = np.einsum("bhqd,bhkd->bhqk", qh, kh) / math.sqrt(qh.shape[-1])
            e = np.exp(s - s.max(axis=-1, keepdims=True))
            return np.swapaxes(np.einsum("bhqk,bhkd->bhqd", e / e.sum(-1, keepdims=True), vh), 1, 2)
        with pytest.raises(UsageError) as e:
            probe(Target("two", bshd_kernel, api=api.name, layout="BHSD"))
        assert str(e.value).endswith(f"run it with --api {api.name} --layout BSHD"), str(e.value)
    finally:
        apis.unregister(api.name)


def test_a_configuration_that_returned_a_wrong_shape_is_said_to_have_returned_it():
    """When the call as configured returned (did not raise) and another configuration matches, the message says
    what it returned: the output's shape and the expected (B, H, Sq, Dv) = (1, 2, 3, 6), not "raised"."""
    pytest.importorskip("torch")

    def tensors_only_right(q, k, v, mask=None, scale=None):
        out = _attention(q, k, v)
        return out if hasattr(q, "detach") else np.swapaxes(out, 1, 2)     # its NumPy path forgets a transpose
    with pytest.raises(UsageError) as e:
        probe(Target("t", tensors_only_right))
    msg = str(e.value)
    assert f"it returned output {(B, SQ, H, DV)} that is not the expected {EXPECTED_SHAPE}" in msg, msg
    assert "raised" not in msg and msg.endswith("--torch-tensors"), msg


def test_a_numpy_retry_that_kills_the_worker_proves_nothing():
    """The "written for NumPy" refusal needs the NumPy call to return the expected output: if that call kills the
    worker (TargetDied), the kernel is left to the run, not told it was written for NumPy."""
    pytest.importorskip("torch")
    from refimpl.harness.cases import TargetDied

    def tensor_kernel(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                      enable_gqa=False):
        if isinstance(query, np.ndarray):
            raise TargetDied("crash", "killed by signal 11")
        raise TypeError("a bug of its own")
    assert probe(Target("td", tensor_kernel, api="torch-sdpa")) == {"causal": "n/a"}


# ---- what came back when it is not an array -------------------------------------------------------------------

def _refusal(returned) -> str:
    """The probe's message for a refimpl-protocol kernel that returns ``returned`` (None if no UsageError)."""
    def kernel(q, k, v, mask=None, scale=None):
        return returned
    try:
        probe(Target("ret", kernel))
    except UsageError as e:
        return str(e)
    return None


def test_a_kernel_returning_a_list_is_told_np_asarray_would_do():
    """A list: named, the API's return rule, then the hint that np.asarray of it would do."""
    msg = _refusal([[0.0] * DV] * SQ)
    assert msg is not None and "returned a list on a probe case" in msg, msg
    assert msg.endswith(f"expected an array: {REFIMPL_RETURNS} (np.asarray(...) of it would do)"), msg


def test_a_kernel_returning_a_dict_with_an_output_key_is_told_to_return_the_tuple():
    """A dict holding "output": the hint to return (d['output'], d['weights']) as a tuple."""
    msg = _refusal({"output": np.zeros(EXPECTED_SHAPE), "weights": None})
    assert msg is not None and "returned a dict with keys ['output', 'weights']" in msg, msg
    assert msg.endswith(f"{REFIMPL_RETURNS} (return (d['output'], d['weights']) as a tuple instead)"), msg


def test_a_dict_without_an_output_key_gets_no_hint():
    """A dict without "output": named with its keys, and the message ends with the API's return rule."""
    msg = _refusal({"out": np.zeros(EXPECTED_SHAPE)})
    assert msg is not None and "returned a dict with keys ['out']" in msg, msg
    assert msg.endswith(f"expected an array: {REFIMPL_RETURNS}"), msg


@pytest.mark.parametrize("returned,kind", [(np.float64(0.5), "a float64"), (3, "a int")])
def test_a_kernel_returning_a_scalar_is_told_its_type_without_a_hint(returned, kind):
    """A NumPy scalar (it has a dtype, but is no array or tensor) or a Python number: the type named, no hint."""
    msg = _refusal(returned)
    assert msg is not None and f"returned {kind} on a probe case" in msg, msg
    assert msg.endswith(f"expected an array: {REFIMPL_RETURNS}"), msg


def test_a_tuple_the_api_does_not_allow_is_named_with_its_length_and_element_types():
    """A tuple other than (output, weights): "a tuple of N (its first types)", no hint."""
    a = np.zeros(EXPECTED_SHAPE)
    msg = _refusal((a, a, a))
    assert msg is not None and "returned a tuple of 3 (ndarray, ndarray, ndarray) on a probe case" in msg, msg
    assert msg.endswith(f"expected an array: {REFIMPL_RETURNS}"), msg


def test_an_array_or_an_allowed_tuple_the_call_refused_is_left_to_the_run():
    """An integer array, or (integer array, None), is an array (in a form the API allows): its dtype is the run's
    verdict, not a probe refusal."""
    ints = np.zeros(EXPECTED_SHAPE, dtype=np.int64)
    assert _refusal(ints) is None
    assert _refusal((ints, None)) is None


# ---- the output-layout message ----------------------------------------------------------------------------------

def test_a_flash_kernel_returning_bhsd_is_told_both_shapes():
    """flash-attn returns (B, Sq, H, Dv): a kernel returning (B, H, Sq, Dv) = (1, 2, 3, 6) is told that shape and
    the (1, 3, 2, 6) the API returns, with out.transpose(1, 2)."""
    pytest.importorskip("torch")

    def flash_bhsd(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                   alibi_slopes=None, deterministic=False, return_attn_probs=False):
        return _attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))      # (B, H, Sq, Dv)
    with pytest.raises(UsageError) as e:
        probe(Target("fb", flash_bhsd, api="flash-attn"))
    msg = str(e.value)
    assert f"returned output {EXPECTED_SHAPE} = (B, H, Sq, Dv)" in msg, msg
    assert f"returns (B, Sq, H, Dv) {(B, SQ, H, DV)}" in msg and msg.endswith("(out.transpose(1, 2))"), msg


# ---- causal convention of refimpl's own keywords ------------------------------------------------------------------

def test_refimpl_keywords_are_asked_is_causal_without_an_alignment():
    """A target of refimpl's own keywords is called with is_causal=True and no alignment: its default is what is
    measured, so a column whose default alignment is bottom-right measures bottom-right."""
    def column(q, k, v, mask=None, scale=None, is_causal=False, alignment="bottom-right", window=None, softcap=None,
               enable_gqa=False):
        return _attention(q, k, v, causal=alignment if is_causal else None)
    assert causal_convention(Target("col", column, api="native")) == "bottom-right"

    def top_left_default(q, k, v, mask=None, scale=None, is_causal=False, alignment="top-left", window=None,
                         softcap=None, enable_gqa=False):
        return _attention(q, k, v, causal=alignment if is_causal else None)
    assert causal_convention(Target("col", top_left_default, api="native")) == "top-left"


# ---- probe_targets: who is probed -------------------------------------------------------------------------------

def _returns_list(q, k, v, mask=None, scale=None):
    return [0.0]


def test_the_user_set_names_the_targets_probed():
    """With ``user`` given, exactly those names are probed (a bad one raises), whatever their names look like;
    the others only get their causal convention."""
    with pytest.raises(UsageError, match="returned a list"):
        probe_targets([Target("mine", _returns_list)], user={"mine"})
    assert probe_targets([Target("x.py:f", _returns_list)], user=set()) == {"x.py:f": {"causal": "n/a"}}


def test_without_a_user_set_names_with_a_colon_are_probed():
    """Without ``user``, a target named like a --target spec (``path:fn``) is a user target and is probed; a
    built-in name (no colon) is not."""
    with pytest.raises(UsageError, match="returned a list"):
        probe_targets([Target("x.py:f", _returns_list)])
    assert probe_targets([Target("builtin", _returns_list)]) == {"builtin": {"causal": "n/a"}}


def test_a_configuration_that_returned_the_right_shape_with_wrong_values_says_so():
    """Right shape, wrong values as configured, the expected output under another configuration: the message says
    the values differ rather than naming the same shape twice."""
    pytest.importorskip("torch")

    def tensors_only_right(q, k, v, mask=None, scale=None):
        out = _attention(q, k, v)
        return out if hasattr(q, "detach") else out + 1.0            # its NumPy path adds a stray bias
    with pytest.raises(UsageError) as e:
        probe(Target("t", tensors_only_right))
    msg = str(e.value)
    assert f"it returned output of the expected shape {EXPECTED_SHAPE} with other values" in msg, msg
    assert "that is not the expected" not in msg and msg.endswith("--torch-tensors"), msg
