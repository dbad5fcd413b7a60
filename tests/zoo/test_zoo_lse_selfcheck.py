"""Self-check of tests/zoo/flash_lse_impls.py against a plain float64 reference written here.

Correct kernels must match the reference output (1e-10 for float64 kernels) and softmax_lse (float32,
1e-5 relative, +inf on rows with no kept key); broken kernels must keep the output right and get the
LSE wrong on at least one of the realistic cases below.
"""
import importlib.util
import inspect
import math
import os

import pytest
import torch

_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flash_lse_impls.py")
_SPEC = importlib.util.spec_from_file_location("flash_lse_impls", _PATH)
zoo = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(zoo)

CORRECT = [e for e in zoo.CATALOG if e["correct"]]
BROKEN = [e for e in zoo.CATALOG if not e["correct"]]


def reference(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None):
    """Plain float64 attention, one (batch, head) at a time: returns out (B, Sq, Hq, Dv) float64 and
    lse (B, Hq, Sq) float64 (natural log, +inf for a query row with no kept key)."""
    q, k, v = q.double(), k.double(), v.double()
    b_, sq, hq, d = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[3]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = window_size[0], (0 if causal else window_size[1])
    ii = torch.arange(sq, dtype=torch.float64).unsqueeze(1)
    jj = torch.arange(sk, dtype=torch.float64).unsqueeze(0)
    centre = ii + sk - sq  # bottom-right aligned diagonal
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        keep &= jj >= centre - left
    if right >= 0:
        keep &= jj <= centre + right
    out = torch.zeros(b_, sq, hq, dv, dtype=torch.float64)
    lse = torch.full((b_, hq, sq), math.inf, dtype=torch.float64)
    for b in range(b_):
        for h in range(hq):
            g = h // (hq // hkv)
            s = (q[b, :, h, :] @ k[b, :, g, :].T) * scale  # (Sq, Sk)
            if softcap > 0:
                s = softcap * torch.tanh(s / softcap)
            if alibi_slopes is not None:
                slope = float(alibi_slopes[h] if alibi_slopes.dim() == 1 else alibi_slopes[b, h])
                s = s - slope * (centre - jj).abs()
            for i in range(sq):
                row = s[i][keep[i]]
                if row.numel() == 0:
                    continue  # zeros, +inf
                mx = row.max()
                w = torch.exp(row - mx)
                lse[b, h, i] = mx + torch.log(w.sum())
                out[b, i, h] = (w / w.sum()) @ v[b, keep[i], g, :]
    return out, lse


def _case(name, b, sq, sk, hq, hkv, d, dv=None, qmul=1.0, seed=0, alibi=None, **kw):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, sq, hq, d, generator=g, dtype=torch.float64) * qmul
    k = torch.randn(b, sk, hkv, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, sk, hkv, dv or d, generator=g, dtype=torch.float64)
    if alibi == "h":
        kw["alibi_slopes"] = torch.rand(hq, generator=g, dtype=torch.float64) * 0.5
    elif alibi == "bh":
        kw["alibi_slopes"] = torch.rand(b, hq, generator=g, dtype=torch.float64) * 0.5
    return pytest.param((q, k, v, kw), id=name)


CASES = [
    _case("plain", 2, 40, 40, 2, 2, 16),
    _case("causal-sk130-gqa-alibi", 1, 37, 130, 4, 2, 16, dv=8, alibi="h", causal=True),
    _case("window-dead-rows-alibi-bh", 2, 50, 20, 4, 1, 8, alibi="bh", window_size=(3, 0)),
    _case("softcap-window-mqa", 1, 70, 70, 3, 1, 16, qmul=3.0, softcap=2.0, window_size=(16, 8)),
    _case("sk130-scale", 1, 5, 130, 2, 1, 32, softmax_scale=0.3),
    _case("causal-dead-rows-softcap", 2, 9, 4, 2, 2, 8, qmul=3.0, causal=True, softcap=1.5),
    _case("window-right-only-sk100", 1, 12, 100, 2, 2, 8, window_size=(-1, 5)),
]
_REFS = {}


def _ref(case):
    q, k, v, kw = case
    key = id(case)
    if key not in _REFS:
        _REFS[key] = reference(q, k, v, **kw)
    return _REFS[key]


def _call(entry, case):
    q, k, v, kw = case
    return getattr(zoo, entry["fn"])(q, k, v, return_attn_probs=True, **kw)


def _out_ok(out, ref_out, dtype):
    tol = 1e-10 if dtype == "float64" else 2e-5
    return (out.dtype == torch.float64 and out.shape == ref_out.shape
            and torch.allclose(out, ref_out, rtol=tol, atol=tol))


def _lse_ok(lse, ref_lse):
    if not isinstance(lse, torch.Tensor) or lse.dtype != torch.float32 or lse.shape != ref_lse.shape:
        return False
    if torch.isnan(lse).any():
        return False
    dead = torch.isposinf(ref_lse)
    if not torch.equal(torch.isposinf(lse), dead):
        return False
    return torch.allclose(lse.double()[~dead], ref_lse[~dead], rtol=1e-5, atol=1e-6)


def _cases_values():
    return [p.values[0] for p in CASES]


def test_catalog_shape():
    names = [e["name"] for e in zoo.CATALOG]
    assert len(names) == len(set(names))
    assert len(CORRECT) >= 3 and len(BROKEN) == 9
    keys = {"name", "api", "fn", "correct", "model", "convention", "dtype", "features", "note"}
    for e in zoo.CATALOG:
        assert set(e) == keys and e["api"] == "flash-attn" and callable(getattr(zoo, e["fn"]))
        assert (e["model"] is None) == e["correct"]
        src = inspect.getsource(getattr(zoo, e["fn"]))
        assert ("# BUG:" in src) != e["correct"], e["name"]
        assert src.count("# BUG:") <= 1


def test_reference_dead_rows_present():
    for case in _cases_values():
        q, k, v, kw = case
        if kw.get("window_size") == (3, 0) or (kw.get("causal") and q.shape[1] > k.shape[1]):
            out, lse = _ref(case)
            assert torch.isposinf(lse).any() and torch.isfinite(lse).any()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("entry", CORRECT, ids=lambda e: e["name"])
def test_correct_kernel(entry, case):
    ref_out, ref_lse = _ref(case)
    out, lse, s_dmask = _call(entry, case)
    assert _out_ok(out, ref_out, entry["dtype"])
    assert lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    dead = torch.isposinf(ref_lse)
    assert torch.isposinf(lse[dead]).all()
    assert torch.equal(out.transpose(1, 2)[dead], torch.zeros_like(out.transpose(1, 2)[dead]))
    assert _lse_ok(lse, ref_lse)
    q, k, v, kw = case
    plain = getattr(zoo, entry["fn"])(q, k, v, **kw)
    assert isinstance(plain, torch.Tensor) and torch.equal(plain, out)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("entry", CORRECT, ids=lambda e: e["name"])
def test_correct_kernel_half(entry, dtype):
    q, k, v, kw = CASES[2].values[0]
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    kw = dict(kw, alibi_slopes=kw["alibi_slopes"].float())
    ref_out, ref_lse = reference(q, k, v, **kw)
    out, lse, _ = getattr(zoo, entry["fn"])(q, k, v, return_attn_probs=True, **kw)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert torch.allclose(out.double(), ref_out, rtol=2e-2, atol=2e-2)
    dead = torch.isposinf(ref_lse)
    assert torch.equal(torch.isposinf(lse), dead)
    assert torch.allclose(lse.double()[~dead], ref_lse[~dead], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("entry", BROKEN, ids=lambda e: e["name"])
def test_broken_kernel(entry):
    wrong = []
    for param in CASES:
        case = param.values[0]
        ref_out, ref_lse = _ref(case)
        out, lse, _ = _call(entry, case)
        assert _out_ok(out, ref_out, entry["dtype"]), (entry["name"], param.id)
        q, k, v, kw = case
        assert torch.equal(getattr(zoo, entry["fn"])(q, k, v, **kw), out)
        if not _lse_ok(lse, ref_lse):
            wrong.append(param.id)
    assert wrong, f"{entry['name']}: LSE right on every case"
