"""--api jax: what the adapter hands a jax.nn.dot_product_attention-style target, read as the API's specification.

The arguments of every quick case are evaluated by a small implementation of jax.nn.dot_product_attention's
documented semantics written here (query (B, T, N, H); ``bias`` added to the scaled logits; ``mask`` bool, True =
attend; ``is_causal`` top-left (jnp.tril of (T, S)); ``local_window_size`` (left, right): query i sees keys
i - left .. i + right; key heads shared by N // K query heads), and must give the case's expected output.
"""
import math
from dataclasses import replace

import numpy as np
import pytest

from refimpl.harness import apis
from refimpl.harness.apis.base import converter
from refimpl.harness.cases.families import select
from refimpl.harness.cases.features import materialise
from refimpl.harness.rows.family_cases import CaseStore

JAX = apis.get("jax")
STORE = CaseStore()
QUICK = select(None, "quick", ("float64",))
RUNS = [s for s in QUICK if JAX.cannot(s) is None]
BAND = [s for s in RUNS if s.is_causal or s.window is not None]


def dot_product_attention(query, key, value, bias=None, mask=None, *, scale=None, is_causal=False,
                          query_seq_lengths=None, key_value_seq_lengths=None, local_window_size=None):
    """jax.nn.dot_product_attention as documented (NumPy, float64; masked logits get a large finite negative)."""
    B, T, N, H = query.shape
    S, K = key.shape[1], key.shape[2]
    assert N % K == 0 and value.shape[3] == H
    q = np.swapaxes(np.asarray(query, np.float64), 1, 2)
    k = np.repeat(np.swapaxes(np.asarray(key, np.float64), 1, 2), N // K, axis=1)
    v = np.repeat(np.swapaxes(np.asarray(value, np.float64), 1, 2), N // K, axis=1)
    logits = (1 / math.sqrt(H) if scale is None else scale) * (q @ np.swapaxes(k, -1, -2))
    if bias is not None:
        logits = logits + bias
    keep = np.ones((B, N, T, S), bool)
    if mask is not None:
        keep = keep & mask
    i, j = np.arange(T)[:, None], np.arange(S)[None, :]
    if is_causal:
        keep = keep & (j <= i)
    if local_window_size is not None:
        left, right = (local_window_size, local_window_size) if isinstance(local_window_size, int) \
            else local_window_size
        keep = keep & (j >= i - left) & (j <= i + right)
    logits = np.where(keep, logits, -0.7 * np.finfo(np.float64).max)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return np.swapaxes((w / w.sum(-1, keepdims=True)) @ v, 1, 2)


def _args(spec, dtype="float64", made=False):
    """The case's data and the adapter's (given, args, kwargs); ``made``: a spec changed here (not cached by id)."""
    spec = spec if dtype == "float64" else spec.with_dtype(dtype)
    data = materialise(spec) if made else STORE.get(spec)
    return data, JAX.arguments(data, converter(data.spec.dtype, False), "BSHD")


@pytest.mark.parametrize("spec", RUNS, ids=lambda s: s.id)
def test_the_arguments_give_the_expected_output_under_the_documented_semantics(spec):
    data, (_, args, kw) = _args(spec)
    out = dot_product_attention(*args, **kw)
    assert out.shape == (spec.B, spec.Sq, spec.Hq, spec.Dv)
    live = data.live[..., None]
    got = np.swapaxes(out, 1, 2)
    assert np.allclose(np.where(live, got, 0), np.where(live, data.expected, 0), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spec", RUNS, ids=lambda s: s.id)
def test_the_keywords_and_arrays_are_the_documented_ones(spec):
    data, (given, args, kw) = _args(spec)
    flags = spec.window is not None and kw["is_causal"] == spec.is_causal and "local_window_size" in kw
    assert set(kw) == {"bias", "mask", "scale", "is_causal"} | ({"local_window_size"} if flags else set())
    assert kw["scale"] == spec.scale and isinstance(kw["is_causal"], bool)
    assert set(given) == {"query", "key", "value", "bias", "mask"}
    assert args[0] is given["query"] and args[1] is given["key"] and args[2] is given["value"]
    assert JAX.qkv_at == 0 and JAX.arg_names == ("query", "key", "value") and len(args) == 3
    assert kw["bias"] is given["bias"] and kw["mask"] is given["mask"]
    assert args[0].shape == (spec.B, spec.Sq, spec.Hq, spec.D)                    # (B, T, N, H)
    assert args[1].shape == (spec.B, spec.Sk, spec.Hkv, spec.D)
    assert args[2].shape == (spec.B, spec.Sk, spec.Hkv, spec.Dv)
    assert np.array_equal(args[0], np.swapaxes(data.q, 1, 2)) and np.array_equal(args[2], np.swapaxes(data.v, 1, 2))
    assert kw["mask"] is None or kw["mask"].dtype == bool
    assert kw["bias"] is None or np.isfinite(kw["bias"]).all()                   # -inf drops a key in the mask
    if "local_window_size" in kw:
        w = kw["local_window_size"]
        assert isinstance(w, tuple) and all(type(x) is int for x in w) and w == tuple(spec.window)


def test_a_case_with_nothing_masked_gets_no_bias_and_no_mask():
    for spec in RUNS:
        if spec.mask == "none" and not spec.alibi and not (spec.is_causal or spec.window is not None):
            _, (_, _, kw) = _args(spec)
            assert kw["bias"] is None and kw["mask"] is None and kw["is_causal"] is False, spec.id


def test_an_additive_mask_arrives_as_a_finite_bias_and_its_minus_inf_as_the_mask():
    spec = next(s for s in RUNS if s.mask == "additive" and not s.dead_rows and s.Sq * s.Sk > 20)
    data, (_, _, kw) = _args(spec)
    add = data.mask
    assert np.isinf(add).any()
    assert np.array_equal(kw["mask"], np.broadcast_to(np.isfinite(add), kw["mask"].shape))
    assert np.array_equal(kw["bias"], np.where(np.isfinite(add), add, 0.0))


def test_alibi_arrives_in_the_bias_and_a_bool_mask_with_it_in_the_mask():
    spec = next(s for s in RUNS if s.alibi and s.mask == "none")
    data, (_, _, kw) = _args(spec)
    i, j = np.arange(spec.Sq)[:, None], np.arange(spec.Sk)[None, :]
    slopes = 2.0 ** (-8 * (np.arange(spec.Hq) + 1) / spec.Hq)
    want = -slopes[:, None, None] * np.abs(i + spec.Sk - spec.Sq - j)          # bottom-right distances
    assert kw["mask"] is None and np.allclose(np.broadcast_to(kw["bias"], (spec.B, spec.Hq, spec.Sq, spec.Sk)),
                                              np.broadcast_to(want, (spec.B, spec.Hq, spec.Sq, spec.Sk)))
    both = replace(spec, mask="bool")
    data, (_, args, kw) = _args(both, made=True)
    assert kw["mask"].dtype == bool and np.array_equal(
        np.broadcast_to(kw["mask"], (spec.B, spec.Hq, spec.Sq, spec.Sk)),
        np.broadcast_to(data.mask, (spec.B, spec.Hq, spec.Sq, spec.Sk)))
    assert np.isfinite(kw["bias"]).all()
    out = dot_product_attention(*args, **kw)
    live = data.live[..., None]
    assert np.allclose(np.where(live, np.swapaxes(out, 1, 2), 0), np.where(live, data.expected, 0), atol=1e-10)


@pytest.mark.parametrize("spec", BAND, ids=lambda s: s.id)
def test_a_band_arrives_as_flags_exactly_when_the_api_can_say_it(spec):
    """is_causal and local_window_size are top-left with both edges bounded: such a band (or any band when Sq ==
    Sk) is given as the flags, every other one folded into the bool mask; band_as_flags says which."""
    data, (_, _, kw) = _args(spec)
    as_flags = (spec.alignment == "top-left" or spec.Sq == spec.Sk) and (spec.window is None or min(spec.window) >= 0)
    given_flags = kw["is_causal"] == spec.is_causal and kw.get("local_window_size") == spec.window
    assert given_flags == as_flags
    assert JAX.band_as_flags(data) is as_flags
    if not as_flags:
        assert kw["is_causal"] is False and "local_window_size" not in kw
        i, j = np.arange(spec.Sq)[:, None], np.arange(spec.Sk)[None, :]
        d = j - i - (spec.Sk - spec.Sq if spec.alignment == "bottom-right" else 0)
        band = np.ones((spec.Sq, spec.Sk), bool)
        left, right = spec.window if spec.window is not None else (-1, -1)
        if spec.is_causal:
            band &= d <= 0
        if left >= 0:
            band &= d >= -left
        if right >= 0:
            band &= d <= right
        full = (spec.B, spec.Hq, spec.Sq, spec.Sk)
        base = np.ones(full, bool) if data.mask is None else np.broadcast_to(data.mask, full)
        assert np.array_equal(np.broadcast_to(kw["mask"], full), base & band)


def test_the_band_truth_table():
    """band_as_flags over hand-made specs: no band is flags; a top-left (or square) bounded band is flags."""
    base = next(s for s in RUNS if s.mask == "none" and not s.is_causal and s.window is None and s.Sq != s.Sk
                and s.Sq > 1 and s.Sk > 1)

    class D:
        def __init__(self, spec):
            self.spec = spec
    sq = replace(base, Sk=base.Sq)
    rows = [(base, True),
            (replace(base, alignment="bottom-right"), True),
            (replace(base, is_causal=True), True),
            (replace(base, is_causal=True, alignment="bottom-right"), False),
            (replace(sq, is_causal=True, alignment="bottom-right"), True),
            (replace(base, window=(2, 3)), True),
            (replace(base, window=(0, 0)), True),
            (replace(base, window=(2, -1)), False),
            (replace(base, window=(-1, 2)), False),
            (replace(sq, window=(-1, 2), alignment="bottom-right"), False),
            (replace(sq, window=(2, 1), alignment="bottom-right"), True),
            (replace(base, window=(2, 1), alignment="bottom-right"), False),
            (replace(base, window=(2, 1), alignment="bottom-right", is_causal=True), False)]
    for spec, want in rows:
        assert JAX.band_as_flags(D(spec)) is want, spec


def _made(family, change):
    spec = next(s for s in RUNS if s.family == family and s.Sq != s.Sk and s.Sq > 1 and s.Sk > 1 and not s.dead_rows)
    return replace(spec, **change)


MADE = [_made("bool-mask", dict(is_causal=True, alignment="bottom-right")),
        _made("bool-mask", dict(window=(3, -1))),
        _made("additive-mask", dict(is_causal=True, alignment="bottom-right")),
        _made("padding", dict(window=(2, 1), alignment="bottom-right")),
        _made("gqa", dict(mask="bool", is_causal=True, window=(-1, 2)))]


MADE_IDS = ["bool-causal-bottom-right", "bool-window-open-right", "additive-causal-bottom-right",
            "padding-window-bottom-right", "gqa-bool-window-open-left"]


@pytest.mark.parametrize("spec", MADE, ids=MADE_IDS)
def test_a_band_it_cannot_flag_is_folded_into_the_mask_beside_the_case_mask(spec):
    data, (_, args, kw) = _args(spec, made=True)
    assert kw["is_causal"] is False and "local_window_size" not in kw and kw["mask"].dtype == bool
    assert kw["bias"] is None or np.isfinite(kw["bias"]).all()
    out = dot_product_attention(*args, **kw)
    live = data.live[..., None]
    assert live.any()
    assert np.allclose(np.where(live, np.swapaxes(out, 1, 2), 0), np.where(live, data.expected, 0), atol=1e-10)


def test_float32_cases_reach_it_as_float32_arrays_and_masks_stay_bool():
    spec = next(s for s in RUNS if s.mask == "additive" and not s.dead_rows)
    _, (given, _, kw) = _args(spec, "float32")
    assert all(given[n].dtype == np.float32 for n in ("query", "key", "value", "bias"))
    assert kw["mask"].dtype == bool


def test_what_it_cannot_express_and_its_declared_face():
    reasons = {s.id: JAX.cannot(s) for s in QUICK}
    for s in QUICK:
        if s.Dv != s.D:                                 # the first feature the case needs that it has not
            assert reasons[s.id] == "jax.nn.dot_product_attention takes value with the key's head size (Dv == D)"
        elif s.softcap is not None:
            assert reasons[s.id] == "jax.nn.dot_product_attention has no softcap"
        else:
            assert reasons[s.id] is None, s.id
    assert JAX.bshd("BHSD") and JAX.output_bshd("SD") and not JAX.uses_torch(True)
    assert JAX.given_dtype("bfloat16", True) == "float32" and JAX.flags("BSHD", True) == "--api jax"
    assert JAX.causal_flag == "top-left" and not JAX.returns_weights
