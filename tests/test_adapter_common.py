"""The API adapters' shared face (refimpl/harness/apis/base.py and the package's registry and ``call``), and the
three adapters with bool keep-masks: the refimpl protocol, the C ABI and the built-in columns' native keywords.

The protocol's and the C ABI's arguments are evaluated by their documented semantics (softmax of scale q k^T over
the keys the bool keep-mask keeps, True = attend; GQA by fewer kv heads for the C ABI) written here, over the quick
cases, and must give the case's expected output.
"""
import dataclasses
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from refimpl.errors import UsageError
from refimpl.harness import apis
from refimpl.harness.apis import base
from refimpl.harness.apis.base import Api, Returned, converter, flash_band, needs, to_numpy
from refimpl.harness.cases.families import select
from refimpl.harness.cases.features import CaseSpec, materialise
from refimpl.harness.rows.family_cases import CaseStore

STORE = CaseStore()
QUICK = select(None, "quick", ("float64",))
PROTOCOL, CABI, NATIVE = apis.get("refimpl"), apis.get("c-abi"), apis.get("native")


def keep_attention(q, k, v, keep, scale):
    """softmax(scale q k^T) v over the kept keys (keep bool, True = attend), kv heads shared by Hq // Hkv query
    heads; (B, Hq, Sq, D) layout, NumPy float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    group = q.shape[-3] // k.shape[-3]
    k, v = np.repeat(k, group, axis=-3), np.repeat(v, group, axis=-3)
    s = scale * (q @ np.swapaxes(k, -1, -2))
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(-1, keepdims=True)
    w = np.exp(s - np.where(np.isfinite(m), m, 0))
    return (w / np.where(w.sum(-1, keepdims=True) > 0, w.sum(-1, keepdims=True), 1)) @ v


def _band(spec):
    """(Sq, Sk) bool: the case's causal band and window, from its description (-1 = unbounded edge)."""
    i, j = np.arange(spec.Sq)[:, None], np.arange(spec.Sk)[None, :]
    d = j - i - (spec.Sk - spec.Sq if spec.alignment == "bottom-right" else 0)
    left, right = spec.window if spec.window is not None else (-1, -1)
    return (~np.bool_(spec.is_causal) | (d <= 0)) & ((left < 0) | (d >= -left)) & ((right < 0) | (d <= right))


def _close(data, got):
    live = data.live[..., None]
    return np.allclose(np.where(live, got, 0), np.where(live, data.expected, 0), atol=1e-10, rtol=0)


def _default_scale(spec):
    return 1 / math.sqrt(spec.D) if spec.scale is None else spec.scale


# --- the refimpl protocol ------------------------------------------------------------------------------------

PROTOCOL_RUNS = [s for s in QUICK if PROTOCOL.cannot(s) is None]


@pytest.mark.parametrize("layout", ["SD", "BHSD", "BSHD"])
def test_the_protocols_arguments_give_the_expected_output_in_each_layout(layout):
    for spec in PROTOCOL_RUNS:
        data = STORE.get(spec)
        given, args, kw = PROTOCOL.arguments(data, converter("float64", False), layout)
        assert set(kw) == {"mask", "scale"} and kw["scale"] == spec.scale, spec.id
        assert set(given) == {"q", "k", "v", "mask"} and args == (given["q"], given["k"], given["v"])
        assert kw["mask"] is given["mask"]
        q, k, v = args
        if layout == "BSHD":
            assert q.shape == (spec.B, spec.Sq, spec.Hq, spec.D), spec.id
            q, k, v = (np.swapaxes(a, 1, 2) for a in (q, k, v))
        assert q.shape == (spec.B, spec.Hq, spec.Sq, spec.D) and v.shape == (spec.B, spec.Hkv, spec.Sk, spec.Dv)
        mask = kw["mask"]
        want = np.broadcast_to(_band(spec) if data.mask is None else data.mask & _band(spec),
                               (spec.B, spec.Hq, spec.Sq, spec.Sk))
        if data.mask is None and not (spec.is_causal or spec.window is not None):
            assert mask is None, spec.id
        else:
            assert mask.dtype == bool and np.array_equal(np.broadcast_to(mask, want.shape), want), spec.id
            if layout != "SD":                                  # under BHSD and BSHD: in full, (B, H, Sq, Sk)
                assert mask.shape == want.shape, spec.id
        assert _close(data, keep_attention(q, k, v, mask, _default_scale(spec))), spec.id


def test_the_protocol_cannot_express_additive_masks_softcap_alibi_or_gqa():
    no = "the refimpl protocol has no "
    s = CaseSpec("t", 0, Sq=3, Sk=3, D=4, Dv=4)
    assert PROTOCOL.cannot(s) is None
    assert PROTOCOL.cannot(replace(s, mask="additive")) == no + "additive float masks"
    assert PROTOCOL.cannot(replace(s, softcap=2.0)) == no + "softcap"
    assert PROTOCOL.cannot(replace(s, alibi=True)) == no + "ALiBi biases"
    assert PROTOCOL.cannot(replace(s, Hq=2)) == no + "GQA (Hq != Hkv)"
    assert PROTOCOL.cannot(replace(s, mask="bool", Dv=5, is_causal=True, Sk=4, alignment="bottom-right")) is None


def test_the_protocol_returns_an_array_or_output_and_weights():
    a = np.zeros((1, 1, 2, 2))
    assert PROTOCOL.unpack(a) == (a, None)
    assert PROTOCOL.unpack((a, a)) == (a, a)
    res = (a, a, a)
    assert PROTOCOL.unpack(res) == (res, None)          # no other tuple is a return: refused later as not an array

    def arr(x):
        return isinstance(x, np.ndarray)
    assert PROTOCOL.accepts(a, arr) is True and PROTOCOL.accepts((a, a), arr) is True
    assert PROTOCOL.accepts((a, None), arr) is True
    for bad in [None, (a,), (a, a, a), (None, a), (a, 1.0), [a, a], "a"]:
        assert PROTOCOL.accepts(bad, arr) is False, bad


def test_the_protocol_is_given_refimpls_dropout_mask_by_keyword():
    keep = np.ones((1, 1, 2, 2), bool)
    assert PROTOCOL.dropout_kwargs(0.25, keep) == {"dropout_p": 0.25, "dropout_mask": keep}
    a = np.zeros((1, 1, 2, 3))
    assert PROTOCOL.unpack_dropout((a, a[..., :2]), None) == (a, None, None)
    assert PROTOCOL.unpack_dropout(a, None) == (a, None, None)
    assert PROTOCOL.repro_unpack() == ["    if isinstance(res, tuple) and len(res) == 2:", "        res, w = res"]


def test_the_protocols_face():
    assert PROTOCOL.layouts == ("SD", "BHSD", "BSHD") and PROTOCOL.returns_weights and not PROTOCOL.tensors
    assert PROTOCOL.bshd("BSHD") and not PROTOCOL.bshd("BHSD") and not PROTOCOL.bshd("SD")
    assert PROTOCOL.uses_torch(True) and not PROTOCOL.uses_torch(False)
    assert PROTOCOL.flags("BSHD", True) == "--api refimpl --layout BSHD --torch-tensors"
    assert PROTOCOL.flags("SD", False) == "--api refimpl --layout SD"
    assert apis.PROTOCOL is PROTOCOL


# --- the C ABI -----------------------------------------------------------------------------------------------

def test_the_c_abis_arguments_give_the_expected_output():
    runs = [s for s in QUICK if CABI.cannot(s) is None]
    assert any(s.gqa for s in runs) and any(s.seqlens for s in runs) and any(s.scale for s in runs)
    for spec in runs:
        data = STORE.get(spec)
        given, args, kw = CABI.arguments(data, converter("float64", False), "BHSD")
        assert set(kw) == {"keep", "scale"} and set(given) == {"q", "k", "v", "keep"}
        assert args == (given["q"], given["k"], given["v"]) and kw["keep"] is given["keep"]
        assert kw["scale"] == _default_scale(spec) and isinstance(kw["scale"], float), spec.id     # always given
        keep = kw["keep"]
        if data.mask is None and not (spec.is_causal or spec.window is not None):
            assert keep is None, spec.id
        else:
            want = np.broadcast_to(_band(spec) if data.mask is None else data.mask & _band(spec),
                                   (spec.B, spec.Hq, spec.Sq, spec.Sk))
            assert keep.dtype == bool and keep.shape == want.shape and np.array_equal(keep, want), spec.id
        assert _close(data, keep_attention(*args, keep, kw["scale"])), spec.id


def test_the_c_abi_returns_output_and_weights_and_cannot_express_float_masks_softcap_or_alibi():
    a = np.zeros((1, 1, 2, 2))

    def arr(x):
        return isinstance(x, np.ndarray)
    assert CABI.accepts((a, a), arr) is True and CABI.accepts((a, None), arr) is True
    for bad in [a, (a,), (a, a, a), (None, a)]:
        assert CABI.accepts(bad, arr) is False
    assert CABI.unpack((a, a)) == (a, a) and CABI.unpack(a) == (a, None)
    res = (a, a, a)
    assert CABI.unpack(res) == (res, None)
    s = CaseSpec("t", 0, Sq=3, Sk=3, D=4, Dv=4, Hq=2, Hkv=1, mask="padding")
    no = "the C ABI (refimpl_attention.h) has no "
    assert CABI.cannot(s) is None
    assert [CABI.cannot(replace(s, **c)) for c in (dict(mask="additive"), dict(softcap=1.0), dict(alibi=True))] == \
        [no + "additive masks", no + "softcap", no + "ALiBi"]
    assert apis.for_target("c:lib.so:attn", "refimpl") == "c-abi"
    assert CABI.returns_weights and not CABI.tensors and not CABI.uses_torch(True)     # it writes out and weights
    assert CABI.given_dtype("float16", True) == "float32" and CABI.layouts == ("BHSD",) and not CABI.bshd("BSHD")


# --- the native keywords (the built-in columns) --------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_native_hands_refimpls_own_keywords_with_the_mask_in_the_columns_dtype(dtype):
    families = ("additive-mask", "bool-mask", "alibi", "window", "softcap", "gqa", "sizes")
    for spec in [s for s in QUICK if s.family in families]:
        data = STORE.get(spec.with_dtype(dtype))
        given, args, kw = NATIVE.arguments(data, converter(dtype, False), "BHSD")
        s = data.spec
        assert set(given) == {"q", "k", "v"} and args == (given["q"], given["k"], given["v"])
        assert all(a.dtype == np.dtype(dtype) for a in args)
        assert {k: v for k, v in kw.items() if k != "mask"} == dict(
            scale=s.scale, is_causal=s.is_causal, alignment=s.alignment, window=s.window, softcap=s.softcap,
            enable_gqa=s.Hq != s.Hkv), s.id
        ref = data.reference_kwargs()["mask"]
        if ref is None:
            assert kw["mask"] is None
        else:
            assert kw["mask"].dtype == (bool if ref.dtype == bool else np.dtype(dtype)), s.id
            assert np.array_equal(kw["mask"], ref) and kw["mask"] is not ref, s.id


def test_native_expresses_every_feature_as_flags():
    s = CaseSpec("t", 0, Sq=3, Sk=5, D=4, Dv=6, Hq=2, Hkv=1, mask="additive", softcap=3.0, alibi=True,
                 is_causal=True, alignment="bottom-right", window=(1, 2))
    assert NATIVE.cannot(s) is None and NATIVE.keywords and NATIVE.band_always_flags
    assert NATIVE.band_as_flags(_Data(s)) is True and NATIVE.causal_flag == "top-left"
    assert NATIVE.returns_weights is True and not NATIVE.tensors    # scaled_dot_product_attention's (output, weights)
    a = np.zeros(2)
    assert NATIVE.unpack((a, a)) == (a, a) and NATIVE.unpack(a) == (a, None)
    res = (a,)
    assert NATIVE.unpack(res) == (res, None)
    assert "native" not in apis.names() and "native" in apis.names(user=False)
    assert apis.names(user=False)[-1] == "native" and "refimpl" in apis.names()


# --- what a case needs, and whether an API can say it ------------------------------------------------------

class _Data:
    def __init__(self, spec):
        self.spec = spec


S0 = CaseSpec("t", 0, Sq=3, Sk=5, D=4, Dv=4)


@pytest.mark.parametrize("change, want", [
    (dict(), []),
    (dict(mask="bool"), ["bool-mask"]),
    (dict(mask="additive"), ["additive-mask"]),
    (dict(mask="padding"), ["padding-mask"]),
    (dict(mask="bool", seqlens=((3, 5),)), ["sequence-lengths"]),
    (dict(seqlens=((3, 5),)), ["sequence-lengths"]),
    (dict(Dv=7), ["dv-ne-d"]),
    (dict(softcap=2.0), ["softcap"]),
    (dict(alibi=True), ["alibi"]),
    (dict(Hq=2), ["gqa"]),
    (dict(is_causal=True), ["top-left-band"]),
    (dict(is_causal=True, alignment="bottom-right"), ["bottom-right-band"]),
    (dict(window=(1, 1), alignment="bottom-right"), ["bottom-right-band"]),
    (dict(window=(1, 1), Sk=3), []),                                     # Sq == Sk: both alignments agree
    (dict(is_causal=True, Sq=7), ["top-left-band"]),
    (dict(mask="bool", Dv=7, softcap=1.0, alibi=True, Hq=4, Hkv=2, window=(-1, 0)),
     ["bool-mask", "dv-ne-d", "softcap", "alibi", "gqa", "top-left-band"]),
])
def test_the_features_a_case_needs_in_order(change, want):
    assert needs(replace(S0, **change)) == want


def _api(**kw):
    return Api(name="t", signature="fn(q, k, v)", params=(), tensors=False, **kw)


def test_an_api_cannot_run_a_case_for_the_first_needed_feature_it_lacks():
    a = _api(cannot_express={"softcap": "no softcap", "gqa": "no gqa", "bool-mask": "no masks"})
    s = replace(S0, softcap=1.0, Hq=2, mask="bool")
    assert a.cannot(s) == "no masks" and a.cannot(replace(s, mask="none")) == "no softcap"
    assert a.cannot(replace(s, mask="none", softcap=None)) == "no gqa"
    assert a.cannot(S0) is None and apis.expressible(a, s) == "no masks"
    assert a.can("alibi") is True and a.can("gqa") is False


@pytest.mark.parametrize("causal_flag, always, change, want", [
    (None, False, dict(), True),                                           # no band: nothing to flag
    (None, False, dict(is_causal=True), False),
    (None, True, dict(is_causal=True, alignment="bottom-right"), True),
    ("top-left", False, dict(is_causal=True), True),
    ("top-left", False, dict(window=(1, 1)), True),
    ("top-left", False, dict(is_causal=True, alignment="bottom-right"), False),
    ("top-left", False, dict(is_causal=True, alignment="bottom-right", Sk=3), True),   # Sq == Sk
    ("bottom-right", False, dict(window=(1, 2), alignment="bottom-right"), True),
    ("bottom-right", False, dict(is_causal=True), False),
    ("bottom-right", False, dict(is_causal=True, Sk=3), True),
    ("bottom-right", False, dict(alignment="top-left"), True),
    (None, False, dict(window=(2, 2), Sk=3), False),
])
def test_a_band_reaches_the_target_as_flags_when_its_causal_flag_means_the_cases_alignment(causal_flag, always, change,
                                                                                           want):
    a = _api(causal_flag=causal_flag, band_always_flags=always)
    assert a.band_as_flags(_Data(replace(S0, **change))) is want


def _repro_unpack(api):
    """The reproduction script's lines of ``api`` run on a return value: ``(res, w)`` as the script has them."""
    ns: dict = {}
    exec("def unpack(res):\n    w = None\n" + "\n".join(api.repro_unpack()) + "\n    return res, w\n", ns)
    return ns["unpack"]


def test_a_minimal_apis_defaults():
    a = _api()
    assert a.layouts == ("BHSD",) and a.output_layout is None and a.returns_weights is False
    assert a.causal_flag is None and a.keywords is False and a.arg_names == ("q", "k", "v") and a.qkv_at == 0
    assert a.spec_prefix is None and a.lse_kwargs is None and a.writes == () and a.dropout_given == ""
    assert a.band_always_flags is False and a.dead_rows is None and a.cannot_express == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "other"
    with pytest.raises(NotImplementedError):
        a.arguments(None, None, "BHSD")
    with pytest.raises(NotImplementedError):
        a.dropout_kwargs(0.5)
    with pytest.raises(NotImplementedError):
        a.unpack_dropout(None, None)
    x = np.zeros(3)
    assert a.place(x, None) is x and a.place_lse(x, None) is x and a.check_writes({"k": x}, None) == []
    assert a.unpack(x) == (x, None) and a.unpack((x, 1, 2)) == (x, None)
    assert a.accepts(x, lambda r: isinstance(r, np.ndarray)) is True
    assert a.accepts((x, x), lambda r: 0) is False and a.accepts(x, lambda r: 1) is True
    unpack = _repro_unpack(a)
    assert unpack(x)[0] is x and unpack((x, 1, 2))[0] is x                 # a reproduction keeps the output


def test_layouts_tensors_and_flags_of_a_configuration():
    one = _api(layouts=("BSHD",))
    many = _api(layouts=("SD", "BHSD", "BSHD"))
    assert one.bshd("BHSD") and one.bshd("SD") and not _api().bshd("BSHD")
    assert many.bshd("BSHD") and not many.bshd("BHSD")
    assert _api(output_layout="BSHD").output_bshd("BHSD") and not _api(output_layout="BHSD").output_bshd("BSHD")
    assert one.output_bshd("BHSD") and not many.output_bshd("SD")
    assert not one.uses_torch(True) and many.uses_torch(True) and not many.uses_torch(False) and not many.uses_torch()
    assert Api("t", "", (), True).uses_torch(False)
    assert one.given_dtype("float16", True) == "float32" and many.given_dtype("float16", True) == "float16"
    assert many.given_dtype("bfloat16") == "float32" and one.given_dtype("float64") == "float64"
    assert one.flags("BSHD", True) == "--api t"
    assert many.flags("BHSD", False) == "--api t --layout BHSD" and many.flags("BSHD", False) == "--api t --layout BSHD"
    two = _api(layouts=("BHSD", "BSHD"))                        # any API with more than one layout: a flag
    assert two.uses_torch(True) and two.bshd("BSHD") and not two.bshd("BHSD") and two.given_dtype("float16", True) \
        == "float16"
    assert two.flags("BSHD", True) == "--api t --layout BSHD --torch-tensors"


def test_the_lse_is_the_second_of_a_tuple_and_anything_else_is_refused_naming_the_keywords():
    a = _api(lse_kwargs={"return_lse": True, "x": 1}, lse_returns="(out, lse)")
    x, y = np.zeros(2), np.ones(2)
    assert a.unpack_lse((x, y)) == (x, y) and a.unpack_lse((x, y, None)) == (x, y)
    for bad in [x, (x,)]:
        with pytest.raises(TypeError, match=r"asked for its log-sum-exp \(return_lse=True, x=1\) the target "
                                            r"returned (ndarray|tuple); expected \(out, lse\)"):
            a.unpack_lse(bad)
    with pytest.raises(TypeError, match=r"\(\) the target returned ndarray"):
        _api().unpack_lse(x)


# --- FlashAttention's (causal, window_size) of a case ------------------------------------------------------

def _flash_keep(sq, sk, causal, window):
    """flash-attn's documented band: bottom-right, window (left, right) with -1 unbounded, causal = right 0."""
    i, j = np.arange(sq)[:, None], np.arange(sk)[None, :]
    d = j - i - (sk - sq)
    left, right = window
    return (~np.bool_(causal) | (d <= 0)) & ((left < 0) | (d >= -left)) & ((right < 0) | (d <= right))


@pytest.mark.parametrize("window", [None, (2, 3), (2, -1), (-1, 2), (0, 0), (3, 0), (-1, -1)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("index", [0, 7, 8, 15, 16, 24])
def test_flash_band_means_the_cases_band_and_caps_the_right_edge_under_causal_every_other_eight(window, causal, index):
    spec = CaseSpec("t", index, Sq=4, Sk=9, D=4, Dv=4, is_causal=causal, alignment="bottom-right", window=window)
    got_causal, got_window = flash_band(spec)
    assert got_causal is causal and type(got_window) is tuple and len(got_window) == 2
    assert np.array_equal(_flash_keep(4, 9, got_causal, got_window), _band(spec))
    if window is None:
        assert got_window == (-1, -1)
    elif not causal:
        assert got_window == window                              # as the case gives it
    else:                                                        # as given, or the right edge capped at 0 as
        assert got_window in (window, (window[0], 0))            # flash-attn does under causal (either is the band)


def test_flash_band_of_a_packed_batch_is_its_per_sequence_band():
    spec = CaseSpec("t", 8, Sq=4, Sk=9, D=4, Dv=4, is_causal=False, window=None, seqlens=((4, 9),),
                    seq_causal=True, seq_window=(2, 5))
    assert {flash_band(spec), flash_band(replace(spec, index=0))} == {(True, (2, 0)), (True, (2, 5))}
    assert flash_band(replace(spec, seq_window=None)) == (True, (-1, -1))
    assert flash_band(replace(spec, seq_causal=False, is_causal=True, window=(1, 1))) == (False, (2, 5))
    assert flash_band(replace(spec, seqlens=None, seq_causal=False, is_causal=True, window=(1, 1))) in \
        {(True, (1, 0)), (True, (1, 1))}


# --- dropout's given keep-mask, the case's keep-mask -------------------------------------------------------

def test_the_dropout_draw_is_seeded_by_the_case_and_keeps_each_weight_with_probability_one_minus_p():
    spec = CaseSpec("fam", 3, Sq=40, Sk=50, D=4, Dv=4, B=2, Hq=3, Hkv=3)
    keep = base.dropout_draw(spec, 0.25)
    assert keep.dtype == bool and keep.shape == (2, 3, 40, 50)
    assert np.array_equal(keep, base.dropout_draw(spec, 0.25))
    assert abs(keep.mean() - 0.75) < 0.02
    assert not np.array_equal(keep, base.dropout_draw(replace(spec, index=4), 0.25))
    assert base.dropout_draw(spec, 0.0).all() and not base.dropout_draw(spec, 1.0).any()


def test_a_weight_whose_uniform_draw_equals_p_is_kept_so_p_zero_keeps_every_weight(monkeypatch):
    """keep = u >= p for u uniform on [0, 1): exactly 1 - p of the 2**53 possible draws are kept, and at p = 0 all of
    them, a draw of exactly 0.0 included (here every draw is made exactly 0.0, then exactly 0.25)."""
    spec = CaseSpec("fam", 3, Sq=4, Sk=5, D=4, Dv=4)

    class Exact:
        def __init__(self, value):
            self.value = value

        def random(self, shape):
            return np.full(shape, self.value)
    monkeypatch.setattr(np.random, "default_rng", lambda seed: Exact(0.0))
    assert base.dropout_draw(spec, 0.0).all()
    monkeypatch.setattr(np.random, "default_rng", lambda seed: Exact(0.25))
    assert base.dropout_draw(spec, 0.25).all() and not base.dropout_draw(spec, 0.5).any()


def test_the_keep_mask_folds_the_band_into_the_cases_mask():
    s = replace(S0, is_causal=True, alignment="bottom-right", window=(1, -1))
    assert np.array_equal(base.keep_mask(s, None), _band(s))
    m = np.random.default_rng(0).random((2, 1, 3, 5)) < 0.5
    assert np.array_equal(base.keep_mask(s, m), m & _band(s))
    assert base.keep_mask(S0, None) is None and base.keep_mask(S0, m) is m


# --- converting inputs and returns ---------------------------------------------------------------------------

def test_the_converter_hands_fresh_arrays_in_the_carrier_and_keeps_bool():
    a = np.arange(6.0).reshape(2, 3)
    conv = converter("float64", False)
    out = conv(a)
    assert out is not a and np.array_equal(out, a) and out.dtype == np.float64 and not np.shares_memory(out, a)
    assert conv(None) is None and conv(a > 2).dtype == bool
    assert converter("float16", False)(a).dtype == np.float32 and converter("bfloat16", False)(a).dtype == np.float32
    assert converter("float32", False)(a > 2).dtype == bool
    same = converter("float64", False, copy=False)
    assert same(a) is a                                                          # a worker's own copy: as it is
    ro = np.broadcast_to(a, (2, 2, 3))
    got = same(ro)
    assert got.flags.writeable and np.array_equal(got, ro)                         # a target may write
    assert converter("float32", False, copy=False)(a).dtype == np.float32
    assert converter("float64", False, copy=False)(a > 2).dtype == bool


def test_the_torch_converter_hands_tensors_of_the_cases_dtype():
    a = np.arange(6.0).reshape(2, 3)
    for dtype in ("float64", "float32", "float16", "bfloat16"):
        t = converter(dtype, True)(a)
        assert isinstance(t, torch.Tensor) and t.dtype == getattr(torch, dtype)
        assert converter(dtype, True)(a > 2).dtype == torch.bool and converter(dtype, True)(None) is None
    t = converter("float64", True)(a)
    t[0, 0] = 9
    assert a[0, 0] == 0                                                        # a copy


def test_returns_are_converted_to_float64_naming_their_precision():
    x = np.array([1.5, 2.25], np.float32)
    out, name = to_numpy(x, "output")
    assert out.dtype == np.float64 and name == "float32" and out.tolist() == [1.5, 2.25]
    out, name = to_numpy(torch.tensor([1.5, 2.0], dtype=torch.bfloat16), "output")
    assert out.dtype == np.float64 and name == "bfloat16" and out.tolist() == [1.5, 2.0]
    out, name = to_numpy(torch.tensor([1 / 3], dtype=torch.float64), "output")
    assert name == "float64" and out.tolist() == [1 / 3]                       # no detour through float32
    out, name = to_numpy(torch.tensor([0.5], dtype=torch.float16), "weights")
    assert out.dtype == np.float64 and name == "float16" and out.tolist() == [0.5]
    out, name = to_numpy(torch.tensor([3], dtype=torch.int64), "output")
    assert out.dtype == np.float64 and name == "int64" and out.tolist() == [3.0]
    t = torch.tensor([1.0], requires_grad=True) * 2
    assert to_numpy(t, "output")[0].tolist() == [2.0]
    with pytest.raises(TypeError, match="the target returned a weights of dtype int64; expected a float array"):
        to_numpy(np.array([1, 2]), "weights")
    with pytest.raises(TypeError, match="the target returned list as its output; expected a NumPy array or a torch "
                                        "tensor"):
        to_numpy([1.0], "output")
    with pytest.raises(TypeError, match="a log-sum-exp of dtype bool"):
        to_numpy(np.array([True]), "log-sum-exp")


def test_writes_are_found_by_comparing_snapshots_nan_equal():
    a, b = np.array([1.0, np.nan]), torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    given = {"a": a, "b": b, "none": None}
    snap = base.snapshots(given)
    assert set(snap) == {"a", "b"} and snap["b"].dtype == np.float32 and snap["a"] is not a
    assert base.mutations(given, snap) == []
    a[0] = 5.0
    b[1] = 3.0
    assert base.mutations(given, snap) == ["a", "b"]
    given2 = {"c": np.zeros(2)}
    snap2 = base.snapshots(given2)
    given2["c"] = np.zeros(3)                                                  # another shape
    assert base.mutations(given2, snap2) == ["c"]
    snap3 = base.snapshots({"i": torch.tensor([1, 2])})
    assert snap3["i"].dtype == np.int64


def test_what_a_call_returned_defaults_to_nothing_extra():
    r = Returned(np.zeros(1), None, "float64", [])
    assert r.lse is None and r.lse_dtype == "" and r.problems == [] and r.dropout_keep is None
    assert r.dropout_p == 0.0 and r.dropout_given is False and r.written == {} and r.band_flags is True
    assert Returned(np.zeros(1), None, "float64", []).problems is not r.problems


# --- apis.call -------------------------------------------------------------------------------------------------

def _case(family="bool-mask", **change):
    spec = next(s for s in QUICK if s.family == family and s.Hq == s.Hkv and s.Sq > 1 and s.Sk > 1
                and (s.Hq > 1 or family != "bool-mask"))
    return materialise(replace(spec, **change)) if change else STORE.get(spec)


def _sdpa(q, k, v, mask=None, scale=None, **kw):
    return keep_attention(q, k, v, mask, 1 / math.sqrt(q.shape[-1]) if scale is None else scale)


def test_a_call_returns_the_output_and_weights_in_float64_in_refimpls_layout():
    data = _case()

    def fn(q, k, v, mask=None, scale=None):
        return _sdpa(q, k, v, mask, scale).astype(np.float32), np.full(mask.shape, 0.5, np.float32)
    got = apis.call(fn, "refimpl", data, layout="BHSD")
    assert got.dtype == "float32" and got.output.dtype == np.float64 and got.weights.dtype == np.float64
    assert np.allclose(got.output, data.expected, atol=1e-5) and (got.weights == 0.5).all()
    assert got.mutated == [] and got.lse is None and got.dropout_keep is None and got.band_flags is True
    assert got.dropout_given is False and got.dropout_p == 0.0
    assert got.written == {} and got.problems == []

    def bshd(q, k, v, mask=None, scale=None):
        return np.swapaxes(_sdpa(*(np.swapaxes(a, 1, 2) for a in (q, k, v)), mask, scale), 1, 2)
    got = apis.call(bshd, "refimpl", data, layout="BSHD")
    assert got.weights is None and np.allclose(got.output, data.expected, atol=1e-12)

    def flat(q, k, v, mask=None, scale=None):
        return np.zeros((2, 3, 4))
    assert apis.call(flat, "refimpl", data, layout="BSHD").output.shape == (2, 3, 4)   # not 4-D: as it came


def test_a_call_hands_fresh_copies_and_names_the_inputs_the_target_wrote_to():
    data = _case()
    q0 = data.q.copy()

    def writes(q, k, v, mask=None, scale=None):
        assert q is not data.q and not np.shares_memory(q, data.q)
        q[...] = 0.0
        mask[...] = True
        return _sdpa(q, k, v, None, scale)
    got = apis.call(writes, "refimpl", data, layout="BHSD")
    assert got.mutated == ["q", "mask"] and np.array_equal(data.q, q0) and got.written == {}

    own = _case(Sq=data.spec.Sq)                                              # a fresh case of its own to write to

    def trusted(q, k, v, mask=None, scale=None):
        assert q is own.q                                                      # refimpl's own column: no copy
        q[...] = 0.0
        return _sdpa(q, k, v, mask, scale)
    assert apis.call(trusted, "refimpl", own, layout="SD", trusted=True).mutated == []     # and not watched


class _Writer(Api):
    """An API of a test's own that must write ``cache``: what it left there comes back, checked by check_writes."""

    def arguments(self, data, conv, layout):
        given = {"q": conv(data.q), "k": conv(data.k), "v": conv(data.v), "cache": conv(np.zeros(3))}
        return given, (given["q"], given["k"], given["v"]), {"cache": given["cache"]}

    def check_writes(self, wrote, data):
        return [] if "cache" in wrote and (wrote["cache"] == 1).all() else ["the cache was not written"]


WRITER = _Writer(name="test-writer", signature="fn(q, k, v, cache)", params=("cache",), tensors=False,
                 writes=("cache",), causal_flag="top-left")


def test_inputs_the_api_must_write_are_checked_and_returned_not_counted_as_mutated():
    data = _case()

    def good(q, k, v, cache):
        cache[...] = 1.0
        k[0] = 0.0
        return _sdpa(q, k, v)
    got = apis.call(good, WRITER, data)
    assert got.mutated == ["k"] and got.problems == [] and list(got.written) == ["cache"]
    assert got.written["cache"].dtype == np.float64 and got.written["cache"].tolist() == [1.0, 1.0, 1.0]
    got = apis.call(lambda q, k, v, cache: _sdpa(q, k, v), WRITER, data)
    assert got.problems == ["the cache was not written"] and got.written == {} and got.mutated == []


def test_a_worker_backed_target_gets_the_cases_arrays_and_reports_its_own_writes():
    data = _case()
    seen = {}

    class Remote:
        isolates_inputs = True
        last_writes = {}

        def __call__(self, q, k, v, cache):
            seen["q"] = q
            self.last_writes = {3: np.full(3, 1.0), "cache": np.full(3, 1.0), 7: np.zeros(1)}
            return _sdpa(q, k, v)
    got = apis.call(Remote(), WRITER, data)
    assert seen["q"] is data.q                                   # no copy: the worker has its own
    assert got.mutated == [] and got.problems == [] and got.written["cache"].tolist() == [1.0] * 3

    class RemoteArgs(Remote):
        def __call__(self, q, k, v, cache):
            self.last_writes = {0: np.zeros(1), 2: np.zeros(1)}
            return _sdpa(q, k, v)
    got = apis.call(RemoteArgs(), WRITER, data)
    assert got.mutated == ["q", "v"] and got.problems == ["the cache was not written"]

    class Silent(Remote):
        last_writes = None

        def __call__(self, q, k, v, cache):
            return _sdpa(q, k, v)
    assert apis.call(Silent(), WRITER, data).mutated == []


class _Lse(Api):
    def arguments(self, data, conv, layout):
        given = {"q": conv(data.q), "k": conv(data.k), "v": conv(data.v)}
        return given, (given["q"], given["k"], given["v"]), {}

    def place_lse(self, lse, data):
        return lse + 100.0

    def dropout_kwargs(self, p, keep=None):
        return {"dropout_p": p}

    def unpack_dropout(self, res, data):
        return res[0], res[1], res[2]


LSE = _Lse(name="test-lse", signature="fn(q, k, v)", params=(), tensors=False, lse_kwargs={"want_lse": True},
           lse_returns="(out, lse)", output_layout="BSHD")


def test_asked_for_its_lse_a_target_returns_it_placed_in_refimpls_layout():
    data = _case()
    lse = np.zeros(data.expected.shape[:-1], np.float32)

    def fn(q, k, v, want_lse=False):
        assert want_lse is True
        return np.swapaxes(_sdpa(q, k, v), 1, 2), lse
    got = apis.call(fn, LSE, data, lse=True)
    assert got.lse_dtype == "float32" and (got.lse == 100.0).all() and got.weights is None
    assert np.allclose(got.output, _sdpa(data.q, data.k, data.v))             # (B, Sq, H, Dv) swapped back
    with pytest.raises(TypeError, match=r"asked for its log-sum-exp \(want_lse=True\) the target returned none; "
                                        r"expected \(out, lse\)"):
        apis.call(lambda q, k, v, want_lse=False: (np.swapaxes(_sdpa(q, k, v), 1, 2), None), LSE, data, lse=True)


def test_with_dropout_the_keep_mask_is_the_one_returned_or_refimpls_draw_given():
    data = _case()
    keep = np.ones(data.expected.shape[:-1] + (data.spec.Sk,), bool)
    lse = np.zeros(data.expected.shape[:-1])

    def returns(q, k, v, dropout_p=0.0):
        assert dropout_p == 0.5
        return np.swapaxes(_sdpa(q, k, v), 1, 2), lse, keep
    got = apis.call(returns, LSE, data, dropout=0.5)
    assert got.dropout_keep is keep and got.dropout_p == 0.5 and got.dropout_given is False and got.lse is None
    got = apis.call(returns, LSE, data, dropout=0.5, lse=True)
    assert (got.lse == 100.0).all()
    seen = {}

    def given(q, k, v, mask=None, scale=None, dropout_p=0.0, dropout_mask=None):
        seen.update(p=dropout_p, mask=dropout_mask)
        return _sdpa(q, k, v, mask, scale)
    got = apis.call(given, "refimpl", data, layout="BHSD", dropout=0.25)
    drawn = base.dropout_draw(data.spec, 0.25)
    assert seen["p"] == 0.25 and np.array_equal(seen["mask"], drawn) and seen["mask"].dtype == bool
    assert np.array_equal(got.dropout_keep, drawn) and got.dropout_given is True and got.dropout_p == 0.25
    got = apis.call(given, "refimpl", data, layout="BHSD", torch=True, dropout=0.25)
    assert isinstance(seen["mask"], torch.Tensor) and got.dropout_keep.dtype == bool


def test_the_band_flags_of_a_call_are_the_apis_answer_for_the_case():
    data = _case("causal", is_causal=True, alignment="bottom-right", Sk=100, Sq=64)
    assert apis.call(_sdpa, "refimpl", data, layout="BHSD").band_flags is False
    assert apis.call(lambda q, k, v, cache: _sdpa(q, k, v), WRITER,
                     _case("causal", is_causal=True, alignment="top-left")).band_flags is True


# --- the registry, --target prefixes, signatures ----------------------------------------------------------------

def test_an_api_object_passes_through_and_prefixes_pick_their_api():
    assert apis.get(WRITER) is WRITER and apis.get("jax") is apis.get("jax")
    with pytest.raises(UsageError, match="--api must be one of refimpl, .*, got 'nope'"):
        apis.get("nope")
    assert apis.for_target("c:build/lib.so:attn", "refimpl") == "c-abi"
    assert apis.for_target("c:build/lib.so:attn", "c-abi") == "c-abi"
    assert apis.for_target("js:kernel.mjs:attn", "refimpl") == "js"
    assert apis.for_target("mymod:attn", "jax") == "jax" and apis.for_target("mymod:attn", "refimpl") == "refimpl"
    with pytest.raises(UsageError, match=r"--target 'c:lib.so:f': a 'c:' target is called through --api c-abi, got "
                                         r"--api jax"):
        apis.for_target("c:lib.so:f", "jax")


def test_a_signature_that_cannot_be_the_apis_is_refused_with_the_api_it_looks_like():
    def protocol(q, k, v, mask=None, scale=None):
        pass

    def flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1)):
        pass

    def two(q, k):
        pass

    def star(*args):
        pass

    def kw(q, k, v, **kwargs):
        pass

    def bare(q, k, v):
        pass
    assert apis.check_signature(protocol, "refimpl") is None and apis.check_signature(kw, "jax") is None
    assert apis.check_signature(max, "refimpl") is None                        # a builtin: nothing to read
    assert apis.check_signature(flash, "flash-attn") is None

    def keyword_only(q, k, v, *, mask=None, scale=None):
        pass
    assert apis.check_signature(keyword_only, "refimpl") is None
    with pytest.raises(UsageError, match=r"the target takes 2 positional arguments \('q', 'k'\); every API passes "
                                         r"q, k, v first"):
        apis.check_signature(two, "refimpl")
    with pytest.raises(UsageError, match=r"has no mask, scale: the refimpl protocol is fn\(q, k, v, mask=None, "
                                         r"scale=None\); it looks like --api flash-attn$"):
        apis.check_signature(flash, "refimpl")
    with pytest.raises(UsageError, match=r"has no mask, scale: the refimpl protocol is fn\(q, k, v, mask=None, "
                                         r"scale=None\)$"):
        apis.check_signature(bare, "refimpl")
    with pytest.raises(UsageError, match=r"lacks softmax_scale, causal, window_size of --api flash-attn; it looks "
                                         r"like --api refimpl$"):
        apis.check_signature(protocol, "flash-attn")
    with pytest.raises(UsageError, match=r"lacks bias, mask, is_causal, scale of --api jax$"):
        apis.check_signature(bare, "jax")
    with pytest.raises(UsageError, match="lacks"):
        apis.check_signature(star, "jax")                                       # *args passes the count only

    def both(q, k, v, mask=None, scale=None, keep=None, bias=None, is_causal=False):
        pass
    with pytest.raises(UsageError, match=r"it looks like --api jax$"):          # the most specific fit
        apis.check_signature(both, "hf")

    def keep_only(q, k, v, keep=None, scale=None):
        pass
    with pytest.raises(UsageError, match=r"it looks like --api c-abi$"):
        apis.check_signature(keep_only, "jax")


def test_a_backward_function_must_take_q_k_v_d_out_mask_and_scale():
    def good(q, k, v, d_out, mask=None, scale=None):
        pass

    def kw(q, k, v, d_out, **kwargs):
        pass

    def star(*args, mask=None, scale=None):
        pass

    def no_scale(q, k, v, d_out, mask=None):
        pass

    def three(q, k, v, mask=None, scale=None):
        pass
    for fn in (good, kw, star, max):                                     # max: a builtin without a signature
        assert apis.check_backward_signature(fn, "m:f") is None
    for fn in (no_scale, three):
        with pytest.raises(UsageError, match=r"--backward 'm:f': the function's signature is .*; expected FN\(q, k, "
                                             r"v, d_out, mask=None, scale=None\) -> \(dq, dk, dv\)"):
            apis.check_backward_signature(fn, "m:f")
