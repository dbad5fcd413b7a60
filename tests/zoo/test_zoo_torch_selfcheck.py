"""Self-check of the torch zoo (torch_sdpa_impls, flash_impls, torch_autograd_impls), independent of refimpl:
correct functions agree with the float64 formulas written here (masks built element by element); each broken one
differs on a case built for its bug and agrees on one that avoids it; hand-written backward passes are judged by
torch.autograd.gradcheck (float64) and by which of dQ, dK, dV they get wrong."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch


def _load(stem):
    path = Path(__file__).resolve().parent / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"zoo_selfcheck_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SDPA, FLASH, AUTOGRAD = _load("torch_sdpa_impls"), _load("flash_impls"), _load("torch_autograd_impls")
TOL = {"float64": dict(rtol=1e-10, atol=1e-10), "float32": dict(rtol=1e-5, atol=1e-5)}
HALF_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def _entries(module, correct):
    return [e for e in module.CATALOG if e["correct"] == correct]


def _rand(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _ints(gen, *shape, factor=1.0):
    """Integer-valued float64 (exact in float32): dot products of such q, k are exact, logits reach ~4000."""
    return torch.randint(-8, 9, shape, generator=gen).to(torch.float64) * factor


def _finish_softmax(logits, masked_rows):
    """Softmax over keys; a row of -inf only gives NaN ("nan") or zeros with zero gradient ("zeros")."""
    if masked_rows == "nan":
        return torch.softmax(logits, dim=-1)
    dead = torch.isneginf(logits).all(-1, keepdim=True)
    return torch.softmax(logits.masked_fill(dead, 0.0), dim=-1).masked_fill(dead, 0.0)


# ------------------------------------------------------------------ torch-sdpa API
def ref_sdpa(q, k, v, attn_mask=None, is_causal=False, scale=None, enable_gqa=False, masked_rows="zeros"):
    q, k, v = q.double(), k.double(), v.double()
    sq, sk = q.shape[-2], k.shape[-2]
    if enable_gqa:
        heads = torch.tensor([h // (q.shape[-3] // k.shape[-3]) for h in range(q.shape[-3])])
        k, v = k.index_select(-3, heads), v.index_select(-3, heads)
    logits = torch.matmul(q, k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]) if scale is None else scale)
    keep = torch.tensor([[j <= i or not is_causal for j in range(sk)] for i in range(sq)])  # top-left causal
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        keep = keep & attn_mask
    elif attn_mask is not None:
        logits = logits + attn_mask.double()
    return _finish_softmax(logits.masked_fill(~keep, -math.inf), masked_rows) @ v


def sdpa_case(name):
    """(args, kwargs) of one named torch-sdpa case, float64, reproducible."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    qkv = lambda b, sq, sk, d, dv, hq=3, hkv=3: (_rand(g, *b, hq, sq, d), _rand(g, *b, hkv, sk, d),  # noqa: E731
                                                 _rand(g, *b, hkv, sk, dv))
    dead = torch.rand(5, 7, generator=g) > 0.4
    dead[2] = False  # query row 2 attends to no key
    live = torch.rand(2, 1, 3, 6, generator=g) > 0.3
    live[..., -1] = True  # every query row attends to some key
    additive = _rand(g, 2, 1, 5, 7).masked_fill(torch.rand(2, 1, 5, 7, generator=g) > 0.7, -math.inf)
    additive[..., 0] = 0.5
    keys = {sk: torch.rand(3, sk, generator=g) > 0.2 for sk in (20, 128, 130)}
    cases = {
        "basic": lambda: (qkv((2,), 5, 7, 4, 6), {}),
        "bool_mask_dead_row": lambda: (qkv((2,), 5, 7, 4, 6), {"attn_mask": dead}),
        "float_mask": lambda: (qkv((2,), 5, 7, 4, 6), {"attn_mask": additive}),
        "causal_sq_lt_sk": lambda: (qkv((2,), 5, 7, 4, 3), {"is_causal": True}),
        "causal_sq_gt_sk": lambda: (qkv((2,), 9, 4, 4, 3), {"is_causal": True}),
        "causal_square": lambda: (qkv((2,), 6, 6, 4, 3), {"is_causal": True}),
        "gqa_causal": lambda: (qkv((1,), 5, 5, 4, 3, hq=6, hkv=2), {"is_causal": True, "enable_gqa": True}),
        "mqa": lambda: (qkv((2,), 5, 6, 4, 3, hq=4, hkv=1), {"enable_gqa": True}),
        "gqa_mask": lambda: (qkv((2,), 3, 6, 8, 5, hq=4, hkv=2), {"attn_mask": live, "enable_gqa": True}),
        **{f"keys_{sk}": (lambda sk=sk: (qkv((1,), 3, sk, 5, 2, hq=2, hkv=2), {"attn_mask": keys[sk]}))
           for sk in keys},
        "single": lambda: (qkv((1,), 1, 1, 3, 1), {}),
        "scale_explicit": lambda: (qkv((2,), 5, 7, 4, 6), {"scale": 0.37}),
        "three_dims": lambda: ((_rand(g, 3, 5, 4), _rand(g, 3, 7, 4), _rand(g, 3, 7, 2)), {}),
        "broadcast_batch": lambda: ((_rand(g, 2, 3, 5, 4), _rand(g, 1, 3, 7, 4), _rand(g, 1, 3, 7, 4)), {}),
        "large": lambda: ((_ints(g, 2, 2, 5, 4, factor=32.0), _ints(g, 2, 2, 6, 4), _rand(g, 2, 2, 6, 3)), {}),
    }
    return cases[name]()


SDPA_CASES = ["basic", "bool_mask_dead_row", "float_mask", "causal_sq_lt_sk", "causal_sq_gt_sk", "gqa_causal",
              "gqa_mask", "keys_130", "single", "scale_explicit", "three_dims", "broadcast_batch", "large"]
# broken function -> (bug model, case that exposes the bug, case that avoids it or None)
SDPA_BROKEN = {"sdpa_scale_sk": ("scale", "basic", "scale_explicit"),
               "sdpa_mask_polarity": ("mask-polarity", "gqa_mask", "float_mask"),
               "sdpa_additive_sign": ("additive-mask-sign", "float_mask", "gqa_mask"),
               "sdpa_causal_bottom_right": ("causal-alignment", "causal_sq_lt_sk", "causal_square"),
               "sdpa_gqa_modulo": ("gqa-grouping", "gqa_causal", "mqa"),
               "sdpa_softmax_queries": ("softmax-axis", "basic", None),
               "sdpa_no_max": ("no-max-subtraction", "large", "basic"),
               "sdpa_finite_fill": ("finite-mask-fill", "bool_mask_dead_row", "gqa_mask"),
               "sdpa_half_softmax": ("low-precision", "basic", None),
               "sdpa_eps_denominator": ("denominator-epsilon", "basic", None),
               "sdpa_blocked_tail": ("blocked-tail", "keys_130", "keys_128"),
               "sdpa_online_no_rescale": ("online-rescale", "keys_130", "keys_20")}


# ------------------------------------------------------------------ flash-attn API
def ref_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
              masked_rows="zeros"):
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))  # (B, H, S, D)
    hq, sq, sk = q.shape[1], q.shape[2], k.shape[2]
    heads = torch.tensor([h // (hq // k.shape[1]) for h in range(hq)])
    k, v = k.index_select(1, heads), v.index_select(1, heads)
    logits = q @ k.transpose(-1, -2) * (1 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale)
    if softcap > 0:
        logits = softcap * torch.tanh(logits / softcap)
    if alibi_slopes is not None:
        dist = torch.tensor([[abs(i + sk - sq - j) for j in range(sk)] for i in range(sq)], dtype=torch.float64)
        slopes = alibi_slopes.double().reshape(1 if alibi_slopes.dim() == 1 else q.shape[0], hq, 1, 1)
        logits = logits - slopes * dist
    left, right = window_size[0], 0 if causal else window_size[1]
    keep = torch.tensor([[(left < 0 or j >= i + sk - sq - left) and (right < 0 or j <= i + sk - sq + right)
                          for j in range(sk)] for i in range(sq)])  # bottom-right band
    return (_finish_softmax(logits.masked_fill(~keep, -math.inf), masked_rows) @ v).transpose(1, 2)


def flash_case(name):
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    qkv = lambda b, sq, sk, d, dv, hq=3, hkv=3: (_rand(g, b, sq, hq, d), _rand(g, b, sk, hkv, d),  # noqa: E731
                                                 _rand(g, b, sk, hkv, dv))
    slopes_h, slopes_bh = torch.rand(3, generator=g, dtype=torch.float64), torch.rand(2, 3, generator=g).double()
    cases = {
        "basic": lambda: (qkv(2, 5, 7, 4, 6), {}),
        "causal_sq_lt_sk": lambda: (qkv(2, 5, 7, 4, 3), {"causal": True}),
        "causal_sq_gt_sk": lambda: (qkv(2, 8, 3, 4, 3), {"causal": True}),  # rows 0..4 see no key
        "causal_square": lambda: (qkv(1, 6, 6, 4, 3), {"causal": True}),
        "window": lambda: (qkv(2, 6, 9, 4, 3), {"window_size": (2, 1)}),
        "window_left_causal": lambda: (qkv(1, 7, 7, 4, 3), {"window_size": (3, -1), "causal": True}),
        "softcap": lambda: (qkv(2, 5, 7, 4, 3), {"softcap": 1.5, "softmax_scale": 0.7}),
        "alibi": lambda: (qkv(2, 5, 7, 4, 3), {"alibi_slopes": slopes_h}),
        "alibi_batch_causal": lambda: (qkv(2, 4, 6, 4, 3), {"causal": True, "alibi_slopes": slopes_bh}),
        "gqa": lambda: (qkv(2, 5, 6, 4, 3, hq=6, hkv=3), {"causal": True}),
        "mqa_window": lambda: (qkv(1, 5, 8, 4, 3, hq=4, hkv=1), {"window_size": (2, 2)}),
        "keys_130": lambda: (qkv(1, 3, 130, 5, 2, hq=2, hkv=1), {"causal": True, "alibi_slopes": slopes_h[:2] / 20}),
        "keys_128": lambda: (qkv(1, 3, 128, 5, 2), {}),
        "keys_20": lambda: (qkv(1, 3, 20, 5, 2), {}),
        "single": lambda: (qkv(1, 1, 1, 3, 1), {}),
        "scale_explicit": lambda: (qkv(2, 5, 7, 4, 6), {"softmax_scale": 0.37}),
        "large": lambda: ((_ints(g, 2, 5, 2, 4, factor=32.0), _ints(g, 2, 6, 2, 4), _rand(g, 2, 6, 2, 3)), {}),
    }
    return cases[name]()


FLASH_CASES = ["basic", "causal_sq_lt_sk", "causal_sq_gt_sk", "window", "window_left_causal", "softcap", "alibi",
               "alibi_batch_causal", "gqa", "mqa_window", "keys_130", "single", "scale_explicit", "large"]
FLASH_BROKEN = {"flash_causal_top_left": ("causal-alignment", "causal_sq_lt_sk", "causal_square"),
                "flash_window_left_off_by_one": ("window-bounds", "window", "causal_sq_lt_sk"),
                "flash_softcap_unscaled": ("softcap", "softcap", "basic"),
                "flash_alibi_sign": ("alibi-sign", "alibi", "window"),
                "flash_gqa_modulo": ("gqa-grouping", "gqa", "mqa_window"),
                "flash_scale_sk": ("scale", "basic", "scale_explicit"),
                "flash_blocked_tail": ("blocked-tail", "keys_130", "keys_128"),
                "flash_online_no_rescale": ("online-rescale", "keys_130", "keys_20"),
                "flash_no_max": ("no-max-subtraction", "large", "alibi")}


# ------------------------------------------------------------------ both forward APIs: dtypes, inputs, errors
FORWARD = {"torch-sdpa": (SDPA, sdpa_case, ref_sdpa), "flash-attn": (FLASH, flash_case, ref_flash)}
AGREE = [(e["api"], e["fn"], c) for e in _entries(SDPA, True) for c in SDPA_CASES]
AGREE += [(e["api"], e["fn"], c) for e in _entries(FLASH, True) for c in FLASH_CASES]
BROKEN = [("torch-sdpa", name, *cases[1:]) for name, cases in SDPA_BROKEN.items()]
BROKEN += [("flash-attn", name, *cases[1:]) for name, cases in FLASH_BROKEN.items()]


def _run_case(api, name, case, dtype=torch.float64):
    """(output of the zoo function, float64 reference on the same inputs, catalog entry)."""
    module, make, ref = FORWARD[api]
    entry = next(e for e in module.CATALOG if e["fn"] == name)
    args, kwargs = make(case)
    args = tuple(t.to(dtype) for t in args)  # the reference sees the same rounded inputs
    out = getattr(module, name)(*args, **kwargs)
    assert out.dtype == dtype and out.shape == ref(*args, **kwargs).shape
    return out, ref(*args, **kwargs, masked_rows=entry["convention"] or "zeros"), entry


@pytest.mark.parametrize("api,name,case", AGREE)
def test_correct_forward_agrees_with_formula(api, name, case):
    out, expected, entry = _run_case(api, name, case)
    torch.testing.assert_close(out, expected, equal_nan=True, **TOL[entry["dtype"]])


@pytest.mark.parametrize("api,name,trigger,benign", BROKEN)
def test_broken_forward_differs_only_on_its_case(api, name, trigger, benign):
    out, expected, _ = _run_case(api, name, trigger)
    assert not torch.allclose(out, expected, rtol=1e-9, atol=1e-9)
    if benign is not None:
        out, expected, _ = _run_case(api, name, benign)
        torch.testing.assert_close(out, expected, **TOL["float64"])


HALF_CASES = [(e["api"], e["fn"], c) for e in _entries(SDPA, True) for c in ("gqa_causal", "float_mask")]
HALF_CASES += [(e["api"], e["fn"], "alibi_batch_causal") for e in _entries(FLASH, True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("api,name,case", HALF_CASES)
def test_correct_in_lower_precision_returns_input_dtype(api, name, case, dtype):
    out, expected, entry = _run_case(api, name, case, dtype)
    tol = max(HALF_TOL[dtype], TOL[entry["dtype"]]["atol"])
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol, equal_nan=True)


@pytest.mark.parametrize("module,make,case", [(SDPA, sdpa_case, "bool_mask_dead_row"), (SDPA, sdpa_case, "gqa_mask"),
                                              (FLASH, flash_case, "alibi_batch_causal"),
                                              (AUTOGRAD, sdpa_case, "gqa_mask")],
                         ids=["sdpa-dead-row", "sdpa-gqa-mask", "flash-alibi", "autograd-gqa-mask"])
def test_no_implementation_modifies_its_inputs(module, make, case):
    args, kwargs = make(case)
    tensors = [*args, *(x for x in kwargs.values() if isinstance(x, torch.Tensor))]
    before = [t.clone() for t in tensors]
    for entry in module.CATALOG:
        getattr(module, entry["fn"])(*args, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(before, tensors)), entry["name"]


@pytest.mark.parametrize("entry", _entries(SDPA, True) + _entries(AUTOGRAD, True), ids=lambda e: e["name"])
def test_sdpa_style_errors_name_the_argument(entry):
    fn = getattr(SDPA if entry["api"] == "torch-sdpa" else AUTOGRAD, entry["fn"])
    (q, k, v), _ = sdpa_case("basic")
    keep = torch.ones(5, 7, dtype=torch.bool)
    for args, kwargs, error, match in [((q, k, v), {"dropout_p": 0.1}, ValueError, "dropout_p"),
                                       ((q, k, v), {"attn_mask": keep, "is_causal": True}, ValueError, "is_causal"),
                                       ((q, k, v), {"attn_mask": keep[:4]}, ValueError, "attn_mask"),
                                       ((q, k, v), {"attn_mask": keep.long()}, TypeError, "attn_mask"),
                                       ((q, k[:, :2], v[:, :2]), {"enable_gqa": True}, ValueError, "Hkv=2")]:
        with pytest.raises(error, match=match):
            fn(*args, **kwargs)


@pytest.mark.parametrize("entry", _entries(FLASH, True), ids=lambda e: e["name"])
def test_flash_errors_name_the_argument(entry):
    fn = getattr(FLASH, entry["fn"])
    (q, k, v), _ = flash_case("basic")
    for args, kwargs, error, match in [((q, k, v), {"window_size": (-2, 0)}, ValueError, "window_size"),
                                       ((q, k, v), {"alibi_slopes": torch.ones(4)}, ValueError, "alibi_slopes"),
                                       ((q, k, v), {"dropout_p": 0.2}, ValueError, "dropout_p"),
                                       ((q, k[:, :, :2], v[:, :, :2]), {}, ValueError, "Hkv=2"),
                                       ((q[0], k[0], v[0]), {}, TypeError, "4-D")]:
        with pytest.raises(error, match=match):
            fn(*args, **kwargs)


# ------------------------------------------------------------------ hand-written backward passes
def autograd_case(name):
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    t = lambda *shape: _rand(g, *shape).requires_grad_()  # noqa: E731
    dead_row = torch.tensor([[True, False, True, True], [False] * 4, [False, False, True, False]])
    cases = {
        "plain": lambda: ((t(1, 2, 3, 4), t(1, 2, 5, 4), t(1, 2, 5, 3)), {}),
        "unit_scale": lambda: ((t(1, 2, 3, 4), t(1, 2, 5, 4), t(1, 2, 5, 3)), {"scale": 1.0}),
        "square": lambda: ((t(1, 2, 4, 3), t(1, 2, 4, 3), t(1, 2, 4, 2)), {}),
        "causal_gqa": lambda: ((t(1, 4, 4, 3), t(1, 2, 6, 3), t(1, 2, 6, 2)), {"is_causal": True, "enable_gqa": True}),
        "mask_dead_row": lambda: ((t(2, 1, 3, 3), t(2, 1, 4, 3), t(2, 1, 4, 2)), {"attn_mask": dead_row}),
        "broadcast": lambda: ((t(2, 2, 3, 3), t(1, 2, 3, 3), t(1, 2, 3, 2)), {"scale": 0.6}),
    }
    return cases[name]()


AUTOGRAD_CASES = ["plain", "causal_gqa", "mask_dead_row", "broadcast"]
# broken function -> (bug model, gradcheck case exposing it, gradients wrong there, gradcheck case avoiding it)
AUTOGRAD_BROKEN = {"autograd_bwd_no_delta": ("bwd-delta-term", "plain", {"dq", "dk"}, None),
                   "autograd_bwd_no_scale_dq": ("bwd-scale-dq", "plain", {"dq"}, "unit_scale"),
                   "autograd_bwd_no_scale_dk": ("bwd-scale-dk", "plain", {"dk"}, "unit_scale"),
                   "autograd_bwd_ds_transposed": ("bwd-ds-transposed", "square", {"dk"}, None),
                   "autograd_bwd_gqa_first_head": ("bwd-gqa-sum", "causal_gqa", {"dk", "dv"}, "plain"),
                   "autograd_bwd_masked_nan": ("bwd-masked-nan", "mask_dead_row", {"dq", "dk", "dv"}, "causal_gqa")}


def _gradcheck(fn, case):
    args, kwargs = autograd_case(case)
    return torch.autograd.gradcheck(lambda q, k, v: fn(q, k, v, **kwargs), args, raise_exception=False)


@pytest.mark.parametrize("case", AUTOGRAD_CASES)
@pytest.mark.parametrize("entry", _entries(AUTOGRAD, True), ids=lambda e: e["name"])
def test_correct_backward_passes_gradcheck(entry, case):
    args, kwargs = autograd_case(case)
    torch.testing.assert_close(getattr(AUTOGRAD, entry["fn"])(*args, **kwargs), ref_sdpa(*args, **kwargs),
                               **TOL["float64"])
    assert _gradcheck(getattr(AUTOGRAD, entry["fn"]), case)


@pytest.mark.parametrize("name", sorted(AUTOGRAD_BROKEN))
def test_broken_backward_fails_gradcheck_on_its_gradients(name):
    _, trigger, wrong, benign = AUTOGRAD_BROKEN[name]
    fn = getattr(AUTOGRAD, name)
    args, kwargs = autograd_case(trigger)
    out = fn(*args, **kwargs)
    torch.testing.assert_close(out, ref_sdpa(*args, **kwargs), **TOL["float64"])  # the forward is right
    weight = _rand(torch.Generator().manual_seed(7), *out.shape)
    got = torch.autograd.grad((out * weight).sum(), args)
    expected = torch.autograd.grad((ref_sdpa(*args, **kwargs) * weight).sum(), args)
    differs = {n for n, a, b in zip(("dq", "dk", "dv"), got, expected) if not torch.allclose(a, b, atol=1e-9)}
    assert differs == wrong
    assert not _gradcheck(fn, trigger)
    if benign is not None:
        assert _gradcheck(fn, benign)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("entry", _entries(AUTOGRAD, True), ids=lambda e: e["name"])
def test_correct_backward_in_lower_precision(entry, dtype):
    args, kwargs = autograd_case("causal_gqa")
    low = [a.detach().to(dtype).requires_grad_() for a in args]
    exact = [a.detach().to(dtype).double().requires_grad_() for a in args]
    weight = _rand(torch.Generator().manual_seed(3), 1, 4, 4, 2)
    out = getattr(AUTOGRAD, entry["fn"])(*low, **kwargs)
    got = torch.autograd.grad((out * weight.to(dtype)).sum(), low)
    expected = torch.autograd.grad((ref_sdpa(*exact, **kwargs) * weight.to(dtype).double()).sum(), exact)
    assert out.dtype == dtype and all(g.dtype == dtype for g in got)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.double(), b, rtol=2 * HALF_TOL[dtype], atol=2 * HALF_TOL[dtype])


# ------------------------------------------------------------------ catalogs
@pytest.mark.parametrize("module,api,broken", [(SDPA, "torch-sdpa", SDPA_BROKEN), (FLASH, "flash-attn", FLASH_BROKEN),
                                               (AUTOGRAD, "torch-autograd", AUTOGRAD_BROKEN)],
                         ids=["sdpa", "flash", "autograd"])
def test_catalog_is_complete_and_well_formed(module, api, broken):
    keys = {"name", "api", "fn", "correct", "model", "convention", "dtype", "features", "note"}
    assert len({e["name"] for e in module.CATALOG}) == len(module.CATALOG)
    for e in module.CATALOG:
        assert set(e) == keys and e["api"] == api and callable(getattr(module, e["fn"]))
        assert e["dtype"] in ("float64", "float32") and e["note"] and isinstance(e["features"], list)
        if e["correct"]:
            assert e["model"] is None and e["convention"] in ("zeros", "nan", "uniform")
        else:
            assert e["convention"] is None
    # exactly the broken functions (and bug models, one each) that the tests above exercise
    assert {e["fn"]: e["model"] for e in module.CATALOG if not e["correct"]} == {n: m[0] for n, m in broken.items()}
