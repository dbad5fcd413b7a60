"""--api hf: what the adapter hands a transformers attention-interface target and what it accepts back, read as the
interface's specification.

The arguments of every quick case are evaluated by eager_attention_forward as transformers documents and writes it
(written here in NumPy): key and value heads repeated ``module.num_key_value_groups`` times, scores times
``scaling``, Gemma-2's ``softcap`` (tanh, before the mask), the additive ``attention_mask`` added (0 where attended,
the dtype's most negative finite value where masked), softmax, output transposed to (B, Sq, Hq, Dv), returned with
the weights (B, Hq, Sq, Sk).
"""
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from refimpl.harness import apis
from refimpl.harness.apis.base import converter
from refimpl.harness.cases.families import select
from refimpl.harness.cases.features import materialise
from refimpl.harness.rows.family_cases import CaseStore

HF = apis.get("hf")
STORE = CaseStore()
QUICK = select(None, "quick", ("float64",))
RUNS = [s for s in QUICK if HF.cannot(s) is None]


def eager_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, softcap=None,
                            **kwargs):
    """transformers' eager attention (Llama's, with Gemma-2's softcap), NumPy float64."""
    q, k, v = (np.asarray(t.numpy(), np.float64) for t in (query, key, value))
    k = np.repeat(k, module.num_key_value_groups, axis=1)
    v = np.repeat(v, module.num_key_value_groups, axis=1)
    scores = (q @ np.swapaxes(k, 2, 3)) * (q.shape[-1] ** -0.5 if scaling is None else scaling)
    if softcap is not None:
        scores = np.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask.numpy()[:, :, :, :k.shape[-2]]
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    assert dropout == 0.0 and not module.training
    return np.swapaxes(w @ v, 1, 2), w


def _args(spec, dtype="float64", made=False):
    spec = spec if dtype == "float64" else spec.with_dtype(dtype)
    data = materialise(spec) if made else STORE.get(spec)
    return data, HF.arguments(data, converter(data.spec.dtype, True), "BHSD")


def _full_keep(spec, data):
    """(B, Hq, Sq, Sk) bool: which keys each query attends, from the case's own description (band by hand)."""
    i, j = np.arange(spec.Sq)[:, None], np.arange(spec.Sk)[None, :]
    d = j - i - (spec.Sk - spec.Sq if spec.alignment == "bottom-right" else 0)
    band = np.ones((spec.Sq, spec.Sk), bool)
    left, right = spec.window if spec.window is not None else (-1, -1)
    band &= (d <= 0) if spec.is_causal else band
    band &= (d >= -left) if left >= 0 else band
    band &= (d <= right) if right >= 0 else band
    full = (spec.B, spec.Hq, spec.Sq, spec.Sk)
    m = data.mask
    keep = np.ones(full, bool) if m is None else np.broadcast_to(m if m.dtype == bool else np.isfinite(m), full)
    return keep & band


@pytest.mark.parametrize("spec", RUNS, ids=lambda s: s.id)
def test_the_arguments_give_the_expected_output_and_weights_under_eager_attention(spec):
    data, (_, args, kw) = _args(spec)
    out, w = eager_attention_forward(*args, **kw)
    assert out.shape == (spec.B, spec.Sq, spec.Hq, spec.Dv)
    live = data.live[..., None]
    assert np.allclose(np.where(live, np.swapaxes(out, 1, 2), 0), np.where(live, data.expected, 0), atol=1e-10, rtol=0)
    if data.weights is not None:
        assert np.allclose(np.where(live, w, 0), np.where(live, data.weights, 0), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spec", RUNS, ids=lambda s: s.id)
def test_the_call_is_module_query_key_value_mask_and_the_documented_keywords(spec):
    data, (given, args, kw) = _args(spec)
    module, query, key, value, mask = args
    want = {"scaling", "dropout"} | ({"softcap"} if spec.softcap is not None else set()) \
        | ({"sliding_window"} if spec.window is not None and spec.window[0] >= 0 else set())
    assert set(kw) == want
    assert kw["scaling"] == spec.scale and kw["dropout"] == 0.0
    assert kw.get("softcap") == spec.softcap
    if "sliding_window" in kw:
        assert kw["sliding_window"] == spec.window[0] + 1                      # Mistral's: left + 1 keys
    assert vars(module) == {"num_key_value_groups": spec.Hq // spec.Hkv, "is_causal": spec.is_causal,
                            "training": False}
    assert set(given) == {"query", "key", "value", "attention_mask"}
    assert (query, key, value, mask) == tuple(given[n] for n in ("query", "key", "value", "attention_mask"))
    assert args[HF.qkv_at:HF.qkv_at + 3] == (query, key, value)                 # where q, k, v are (autograd's)
    assert HF.arg_names == ("module", "query", "key", "value")
    assert all(isinstance(t, torch.Tensor) for t in (query, key, value))
    assert query.shape == (spec.B, spec.Hq, spec.Sq, spec.D) and value.shape == (spec.B, spec.Hkv, spec.Sk, spec.Dv)
    assert torch.equal(query, torch.tensor(data.q)) and torch.equal(key, torch.tensor(data.k))


@pytest.mark.parametrize("spec", RUNS, ids=lambda s: s.id)
def test_the_attention_mask_is_additive_with_the_dtypes_most_negative_finite_value_where_masked(spec):
    data, (_, args, _) = _args(spec)
    mask = args[4]
    keep = _full_keep(spec, data)
    if data.mask is None and not spec.alibi and not (spec.is_causal or spec.window is not None):
        assert mask is None                                     # nothing to mask: no attention_mask
        return
    heads = spec.Hq if (spec.alibi or spec.pattern == "per-head") and spec.Hq > 1 else 1   # a mask per head
    assert mask.dtype == torch.float64 and tuple(mask.shape) == (spec.B, heads, spec.Sq, spec.Sk)
    m = np.broadcast_to(mask.numpy(), keep.shape)
    assert np.array_equal(m == torch.finfo(torch.float64).min, ~keep)
    assert np.isfinite(m).all()
    if spec.mask != "additive" and not spec.alibi:
        assert (m[keep] == 0).all()
    else:
        ref = np.broadcast_to(data.reference_kwargs()["mask"], keep.shape)
        assert np.array_equal(m[keep], ref[keep])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_in_lower_precisions_the_fill_is_that_dtypes_min_and_the_tensors_are_that_dtype(dtype):
    spec = next(s for s in RUNS if s.mask == "bool" and not s.dead_rows)
    _, (_, args, _) = _args(spec, dtype)
    tdt = getattr(torch, dtype)
    assert all(t.dtype == tdt for t in args[1:5])
    m = args[4]
    assert (m == torch.finfo(tdt).min).any() and ((m == 0) | (m == torch.finfo(tdt).min)).all()


def test_a_packed_batch_and_a_bottom_right_band_are_folded_into_the_mask():
    for spec in [s for s in RUNS if s.seqlens is not None][:3] + [
            replace(next(s for s in RUNS if s.family == "bool-mask" and s.Sq != s.Sk), is_causal=True,
                    alignment="bottom-right", window=(4, -1))]:
        data, (_, args, kw) = _args(spec, made=True)
        out, _ = eager_attention_forward(*args, **kw)
        live = data.live[..., None]
        assert np.allclose(np.where(live, np.swapaxes(out, 1, 2), 0), np.where(live, data.expected, 0), atol=1e-10)


def test_a_window_with_an_unbounded_left_edge_has_no_sliding_window_keyword():
    spec = replace(next(s for s in RUNS if s.family == "sizes" and s.Sq > 2 and s.Sk > 2), window=(-1, 1))
    _, (_, _, kw) = _args(spec, made=True)
    assert "sliding_window" not in kw
    _, (_, _, kw) = _args(replace(spec, window=(0, -1)), made=True)
    assert kw["sliding_window"] == 1


def test_it_cannot_express_alibi_under_gqa_only():
    for s in QUICK:
        why = HF.cannot(s)
        if s.alibi and s.gqa:
            assert isinstance(why, str) and "ALiBi" in why and "GQA" in why and "(B, 1, Sq, Sk)" in why
        else:
            assert why is None, s.id
    assert any(s.alibi and s.gqa for s in QUICK) and any(s.alibi and not s.gqa for s in QUICK)
    spec = replace(QUICK[0], Hq=4, Hkv=2, alibi=True)
    assert apis.expressible("hf", spec) == HF.cannot(spec) and HF.cannot(replace(spec, alibi=False)) is None


def test_it_returns_output_and_weights_and_output_only_is_taken_as_no_weights():
    out, w = torch.zeros(1, 2, 1, 3), torch.zeros(1, 1, 2, 2)
    assert HF.unpack((out, w)) == (out, w)
    assert HF.unpack((out, None)) == (out, None)
    assert HF.unpack((out,)) == (out, None)
    assert HF.unpack((out, w, w)) == (out, None)
    assert HF.unpack(out) == (out, None)


def test_the_returns_it_accepts():
    def is_array(x):
        return isinstance(x, (np.ndarray, torch.Tensor))
    a = np.zeros((1, 1, 1, 1))
    assert HF.accepts((a, a), is_array) is True
    assert HF.accepts((a, None), is_array) is True
    for bad in [a, (a,), (a, a, a), [a, a], (None, a), (a, "weights"), ("out", None), (a, [1.0])]:
        assert HF.accepts(bad, is_array) is False, bad


def test_its_declared_face():
    assert HF.tensors and HF.uses_torch(False) and HF.given_dtype("bfloat16") == "bfloat16"
    assert HF.output_bshd("BHSD") and HF.output_bshd("SD") and not HF.bshd("BSHD")
    assert HF.returns_weights and HF.qkv_at == 1 and HF.flags("BHSD", False) == "--api hf"
    ns: dict = {}
    exec("def unpack(res):\n    w = None\n" + "\n".join(HF.repro_unpack()) + "\n    return res, w\n", ns)
    out, w = np.zeros((1, 2, 3, 4)), np.ones((1, 3, 2, 2))
    assert all(a is b for a, b in zip(ns["unpack"]((out, w)), (out, w)))      # (attn_output, attn_weights)
    assert ns["unpack"]((out, None))[0] is out and ns["unpack"]((out, None))[1] is None


def test_a_target_called_through_it_is_judged_in_refimpls_layout():
    """apis.call swaps the (B, Sq, Hq, Dv) output back and keeps the weights."""
    spec = next(s for s in RUNS if s.Hq > 1 and s.Sq > 1 and s.mask == "bool")
    data = STORE.get(spec)

    def eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        out, w = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        return torch.tensor(out), torch.tensor(w)
    got = apis.call(eager, "hf", data)
    live = data.live[..., None]
    assert got.output.shape == data.expected.shape and got.weights.shape == data.weights.shape
    assert np.allclose(np.where(live, got.output, 0), np.where(live, data.expected, 0), atol=1e-10)
    assert got.mutated == [] and got.dtype == "float64" and math.isfinite(float(got.weights.sum()))
    assert not isinstance(SimpleNamespace(), torch.Tensor)
