"""What the worker side of target isolation does, called in this process (the worker runs the same functions in
its own): which arguments a call wrote to, how an R batch's results and errors cross the process boundary as
plain data, how tensors come back, and the signature check made while loading."""
import math

import numpy as np
import pytest
import torch

from refimpl.errors import UsageError
from refimpl.harness.targets import isolation as iso
from refimpl.harness.targets import wire
from refimpl.harness.targets.r_targets import RReturned
from refimpl.r.bridge import RError


def _write_target(tmp_path, body: str, name: str = "kern") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return f"{path}:{name}"


def _softmax_attention(q, k, v):
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    w = np.exp(s - s.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)) @ v


# --- which arguments a call wrote to -------------------------------------------------------------------------

@pytest.mark.parametrize("make", [np.array, torch.tensor], ids=["numpy", "torch"])
def test_an_input_is_changed_when_a_value_or_its_shape_changes_and_nan_stays_nan(make):
    a = make(np.array([[1.0, float("nan")], [3.0, 4.0]]))
    snap = iso._snap(a)
    assert snap is not a and iso._same(a, snap)                     # a copy, NaN equal to NaN
    a[0, 0] = 2.0
    assert not iso._same(a, snap)                                   # a write through the original is seen
    assert iso._same(snap, iso._snap(snap))
    assert not iso._same(snap, make(np.array([[1.0, float("nan"), 0.0]])))   # another shape


def test_a_nan_written_into_an_input_is_a_change():
    a = np.ones((2, 3))
    snap = iso._snap(a)
    a[1, 2] = np.nan
    assert not iso._same(a, snap)


def test_a_bfloat16_tensor_is_compared_by_value():
    a = torch.tensor([1.0, 2.5, float("nan")], dtype=torch.bfloat16)
    snap = iso._snap(a)
    assert iso._same(a, snap)
    a[1] = 3.0
    assert not iso._same(a, snap)


def test_only_arrays_and_tensors_are_watched_for_writes():
    assert iso._snap(3.0) is None and iso._snap("BHSD") is None and iso._snap(None) is None
    assert iso._snap([1.0, 2.0]) is None                            # a list is not an array refimpl hands


def test_the_child_reports_exactly_the_arguments_the_target_wrote_to(tmp_path):
    spec = _write_target(tmp_path, "import numpy as np\n"
                         "def kern(q, k, v, scale=None, out=None):\n"
                         "    q *= 2.0\n"                            # writes its first positional argument
                         "    out[...] = 1.0\n"                       # and the keyword argument out
                         "    return np.zeros((1, 1, 2, 3))\n")
    call = iso.child_loader(spec)
    q, k, v, out = np.ones((1, 1, 2, 4)), np.ones((1, 1, 5, 4)), np.ones((1, 1, 5, 3)), np.zeros((1, 1, 2, 3))
    res, changed = call(("call", (q, k, v), {"scale": 0.5, "out": out}))
    assert res.shape == (1, 1, 2, 3)
    assert sorted(map(str, changed)) == ["0", "out"]
    assert np.all(changed[0] == 2.0) and np.all(changed["out"] == 1.0)


def test_the_child_reports_no_write_for_a_target_that_writes_nothing(tmp_path):
    spec = _write_target(tmp_path, "import numpy as np\n"
                         "def kern(q, k, v):\n"
                         "    return q @ np.swapaxes(k, -1, -2) @ v\n")
    _, changed = iso.child_loader(spec)(("call", (np.ones((1, 1, 2, 4)),) * 3, {}))
    assert changed == {}


def test_the_child_refuses_a_return_that_is_not_plain_data(tmp_path):
    spec = _write_target(tmp_path, "def kern(q, k, v):\n    return object()\n")
    with pytest.raises(wire.UnsupportedResult, match="object"):
        iso.child_loader(spec)(("call", (1, 2, 3), {}))


# --- the signature checked while loading ----------------------------------------------------------------------

def test_loading_checks_the_signature_of_the_api_it_is_called_through(tmp_path):
    spec = _write_target(tmp_path, "def kern(q, k, v, mask=None):\n    return q\n")
    assert callable(iso.child_loader(spec))                          # no check asked: loads
    with pytest.raises(UsageError, match="torch-sdpa"):
        iso.child_loader(spec, "torch-sdpa")                          # no attn_mask, is_causal, scale


def test_loading_a_backward_checks_the_backward_signature(tmp_path):
    forward = _write_target(tmp_path, "def kern(q, k, v, mask=None, scale=None):\n    return q\n")
    assert callable(iso.child_loader(forward, "refimpl"))
    with pytest.raises(UsageError, match="d_out"):                   # a forward: no gradient argument
        iso.child_loader(forward, "backward")
    backward = _write_target(tmp_path, "def grads(q, k, v, d_out, mask=None, scale=None):\n    return q, k, v\n",
                             "grads")
    assert callable(iso.child_loader(backward, "backward"))
    with pytest.raises(UsageError):                                  # and a backward is not a forward
        iso.child_loader(backward, "torch-sdpa")


# --- an R batch's results and errors as plain data ---------------------------------------------------------------

def test_an_r_case_result_crosses_the_boundary_whole():
    out, w = np.arange(6.0).reshape(1, 1, 2, 3), np.full((1, 1, 2, 5), 0.2)
    sent = iso._plain_case(RReturned(out, w, "float64", ["q"], ["a warning"]))
    assert all(type(x) in (str, list, np.ndarray, bool) for x in sent)      # plain data only
    back = iso._case_back(sent)
    assert isinstance(back, RReturned)
    assert np.array_equal(back.output, out) and np.array_equal(back.weights, w)
    assert (back.dtype, back.mutated, back.warnings) == ("float64", ["q"], ["a warning"])


def test_an_r_error_crosses_the_boundary_with_rs_message_and_call():
    e = RError("non-conformable arguments", "q %*% t(k)")
    sent = iso._plain_case(e)
    assert sent[0] == "raised" and sent[1] == "RError"
    back = iso._case_back(sent)
    assert type(back) is RError
    assert (back.r_message, back.r_call) == ("non-conformable arguments", "q %*% t(k)")
    assert str(back) == str(e)                                       # the words the worker's RError had


def test_other_errors_of_an_r_batch_keep_their_words():
    back = iso._case_back(iso._plain_case(ValueError("weights has shape (2, 3); expected (2, 5)")))
    assert type(back) is ValueError and str(back) == "weights has shape (2, 3); expected (2, 5)"
    back = iso._case_back(iso._plain_case(KeyError("output")))
    assert type(back) is RuntimeError and str(back) == "KeyError: 'output'"


# --- tensors as the worker sends them -----------------------------------------------------------------------------

def test_tensors_come_back_with_their_dtype_inside_tuples_lists_and_dicts():
    t = wire.Tensor("bfloat16", np.array([1.0, 2.5], np.float32))
    back = iso._tensors({"out": (t, [t, 3.0]), "n": 1})
    assert back["out"][0].dtype == torch.bfloat16 and back["out"][0].tolist() == [1.0, 2.5]
    assert type(back["out"]) is tuple and type(back["out"][1]) is list and back["out"][1][1] == 3.0
    assert back["out"][1][0].dtype == torch.bfloat16 and back["n"] == 1


def test_a_tensor_of_a_dtype_torch_does_not_have_is_refused_by_name():
    with pytest.raises(TypeError, match="unknown dtype 'float128'"):
        iso._tensors(wire.Tensor("float128", np.zeros(2)))
    with pytest.raises(TypeError, match="unknown dtype 'Tensor'"):       # a torch attribute that is not a dtype
        iso._tensors(wire.Tensor("Tensor", np.zeros(2)))


# --- through a real worker ------------------------------------------------------------------------------------------

def test_a_target_that_cannot_be_imported_is_named_once_with_the_flag():
    with pytest.raises(UsageError) as e:
        iso.isolated("no_such_mod_xyz:fn", "refimpl", flag="--backward")
    assert str(e.value).startswith("--backward 'no_such_mod_xyz:fn': cannot import module"), str(e.value)
    assert str(e.value).count("--backward") == 1 and str(e.value).count("'no_such_mod_xyz:fn'") == 1, str(e.value)


def test_an_exception_of_the_target_arrives_as_what_the_target_raised(tmp_path):
    spec = _write_target(tmp_path, "def kern(q, k, v, mask=None, scale=None):\n"
                         "    raise ValueError('Sk must be a multiple of 64')\n")
    fn = iso.isolated(spec, "refimpl")
    try:
        with pytest.raises(RuntimeError) as e:
            fn(np.ones((1, 1, 2, 4)), np.ones((1, 1, 3, 4)), np.ones((1, 1, 3, 4)))
        assert type(e.value) is RuntimeError                             # not a refusal of its return (TypeError)
        assert str(e.value) == "the target raised ValueError: Sk must be a multiple of 64"
    finally:
        fn.close()


def test_a_grad_payload_differentiates_the_target_in_the_child(tmp_path):
    """("grad", api, layout, data, d_out): autograd of the target where it runs; the gradients of a torch SDPA
    written with torch operations are the reference backward's."""
    from refimpl import sdpa_backward
    from refimpl.harness.cases.families import select
    from refimpl.harness.rows.family_cases import CaseStore
    spec = _write_target(tmp_path, "import torch\n"
                         "def kern(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):\n"
                         "    s = query @ key.transpose(-1, -2) * (scale or query.shape[-1] ** -0.5)\n"
                         "    return torch.softmax(s, dim=-1) @ value\n")
    case = next(s for s in select(["sizes"], "quick", ("float64",)) if s.Sq != s.Sk and s.D != s.Dv)
    data = CaseStore().get(case)
    d_out = np.random.default_rng(5).normal(size=data.expected.shape)
    grads, dtype = iso.child_loader(spec, "torch-sdpa")(("grad", "torch-sdpa", "BHSD", data, d_out))[0]
    want = sdpa_backward(data.q, data.k, data.v, d_out, scale=case.scale)
    assert dtype == "float64" and sorted(grads) == ["dk", "dq", "dv"]
    for name, w in zip(("dq", "dk", "dv"), want[:3]):
        np.testing.assert_allclose(grads[name], w, rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_target_that_says_not_implemented_is_told_apart_from_a_failure(tmp_path):
    spec = _write_target(tmp_path, "def kern(q, k, v, mask=None, scale=None):\n"
                         "    raise NotImplementedError('no masks in this kernel')\n")
    fn = iso.isolated(spec, "refimpl")
    try:
        with pytest.raises(NotImplementedError, match="^no masks in this kernel$"):
            fn(np.ones((1, 1, 2, 4)), np.ones((1, 1, 3, 4)), np.ones((1, 1, 3, 4)))
    finally:
        fn.close()


def _grad_case():
    from refimpl.harness.cases.families import select
    from refimpl.harness.rows.family_cases import CaseStore
    data = CaseStore().get(select(["sizes"], "quick", ("float64",))[0])
    return data, np.ones(data.expected.shape)


def test_a_backward_of_an_output_without_a_graph_is_no_graph_and_other_errors_stay_the_targets(tmp_path):
    spec = _write_target(tmp_path, "import torch\n"
                         "def kern(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):\n"
                         "    if query.shape[-1] == 1:\n"
                         "        raise ValueError('D = 1 is not supported')\n"
                         "    return torch.zeros(query.shape[:-1] + value.shape[-1:], dtype=query.dtype)\n")
    from refimpl.harness.targets.autograd_grads import NoGraph
    fn = iso.isolated(spec, "torch-sdpa")
    try:
        data, d_out = _grad_case()
        with pytest.raises(NoGraph, match="no autograd graph"):
            fn.grads("torch-sdpa", "BHSD", data, d_out)
        one = replace_d(data)
        with pytest.raises(RuntimeError) as e:
            fn.grads("torch-sdpa", "BHSD", one, np.ones(one.expected.shape))
        assert type(e.value) is RuntimeError and "the target raised ValueError: D = 1 is not supported" in str(e.value)
    finally:
        fn.close()


def replace_d(data):
    """``data`` with D = 1 (q and k cut to their first feature)."""
    from dataclasses import replace
    return replace(data, q=data.q[..., :1].copy(), k=data.k[..., :1].copy())


def test_a_fixed_timeout_is_reported_without_the_adaptive_limits_advice(tmp_path):
    spec = _write_target(tmp_path, "import time\n"
                         "def kern(q, k, v, mask=None, scale=None):\n"
                         "    time.sleep(30)\n")
    fn = iso.isolated(spec, "refimpl", timeout=1.0)
    try:
        with pytest.raises(iso.TargetDied) as e:
            fn(np.ones((1, 1, 2, 4)), np.ones((1, 1, 3, 4)), np.ones((1, 1, 3, 4)))
        assert "timeout" in str(e.value) and "adaptive limit" not in str(e.value), str(e.value)
    finally:
        fn.close()


def test_max_memory_is_given_in_mib(tmp_path):
    spec = _write_target(tmp_path, "def kern(q, k, v, mask=None, scale=None):\n    return q\n")
    fn = iso.isolator(timeout=None, max_memory_mib=1536, flag="--target")(spec, "refimpl")
    try:
        assert fn.worker.max_memory == 1536 * 1024 * 1024
    finally:
        fn.close()


def test_an_r_target_without_r_is_unavailable_not_a_usage_error(tmp_path, monkeypatch):
    """Loading says R is missing in its own kind (the cells read "unavailable"), not as a target that failed to
    load: the worker inherits REFIMPL_NO_R=1, which hides R as on a machine without it."""
    from refimpl.errors import Unavailable
    path = tmp_path / "attn.R"
    path.write_text("attn <- function(q, k, v, mask = NULL, scale = NULL) q\n")
    monkeypatch.setenv("REFIMPL_NO_R", "1")
    with pytest.raises(Unavailable) as e:
        iso.isolated(f"R:{path}:attn")
    assert type(e.value) is Unavailable and "R" in str(e.value)
