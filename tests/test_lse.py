"""The log-sum-exp: refimpl.sdpa_lse (the oracle) and the judge of a target's softmax_lse (``--lse``).

The oracle is checked against the log of the explicit sum, written here from its definition, and against
refimpl's softmax weights (``weights = exp(scores - lse)``). The judge is checked on kernels written here and
on tests/zoo/flash_lse_impls.py (written on purpose by a helper that did not read the judge)."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import refimpl
from refimpl.errors import UsageError
from refimpl.harness.apis import Returned
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target, load_target
from refimpl.harness.verdicts.judge import judge, n_terms
from refimpl.harness.verdicts.lse_judge import lse_bound, reference_lse

ZOO = Path(__file__).parent / "zoo"
STORE = CaseStore()
QUICK = select(None, "quick", ("float64", "float32"))


def _explicit_lse(q, k, scale, keep=None, add=None, softcap=None):
    """log sum_j exp(s_ij) over the kept keys, from the definition (float64, max-shifted; -inf: no key)."""
    s = scale * np.einsum("...qd,...kd->...qk", q, k)
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if add is not None:
        s = s + add
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = safe[..., 0] + np.log(np.exp(s - safe).sum(axis=-1))
    return np.where(np.isfinite(m[..., 0]), out, -np.inf)


@pytest.mark.parametrize("seed", range(6))
def test_sdpa_lse_is_the_log_of_the_rows_sum_and_rebuilds_the_weights(seed):
    rng = np.random.default_rng(seed)
    B, H, Sq, Sk, D = 2, 3, int(rng.integers(1, 40)), int(rng.integers(1, 90)), int(rng.integers(2, 33))
    q, k, v = rng.normal(size=(B, H, Sq, D)), rng.normal(size=(B, H, Sk, D)), rng.normal(size=(B, H, Sk, 5))
    keep = rng.random((B, 1, Sq, Sk)) < 0.7
    keep[0, 0, 0] = False                                   # a row with no key
    add = rng.normal(size=(1, H, Sq, Sk)) if seed % 2 else None
    softcap = 5.0 if seed % 3 == 0 else None
    scale = 0.3 if seed == 4 else 1 / math.sqrt(D)
    mask = np.where(keep, add, -np.inf) if add is not None else keep
    lse = refimpl.sdpa_lse(q, k, v, mask=mask, scale=scale, softcap=softcap)
    want = _explicit_lse(q, k, scale, keep, add, softcap)
    assert lse.shape == (B, H, Sq)
    assert np.array_equal(np.isneginf(lse), np.isneginf(want)) and np.isneginf(lse[0, :, 0]).all()
    live = np.isfinite(want)
    np.testing.assert_allclose(lse[live], want[live], rtol=1e-13, atol=1e-13)
    out, w = refimpl.scaled_dot_product_attention(q, k, v, mask=mask, scale=scale, softcap=softcap)
    s = scale * q @ np.swapaxes(k, -1, -2)
    s = softcap * np.tanh(s / softcap) if softcap else s
    s = np.where(keep, s + (add if add is not None else 0.0), -np.inf)
    rebuilt = np.where(live[..., None], np.exp(s - np.where(live, lse, 0.0)[..., None]), 0.0)
    np.testing.assert_allclose(rebuilt[live].sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(rebuilt, w, rtol=1e-10, atol=1e-14)         # the weights refimpl's output used


def test_sdpa_lse_is_exact_beyond_the_exponents_range():
    q = np.full((1, 1, 2, 4), 300.0)
    k = np.stack([np.full(4, 300.0), np.full(4, 299.0)])[None, None]          # scores 180,000 and 179,400
    lse = refimpl.sdpa_lse(q, k, k, scale=0.5)
    want = 180000.0 + math.log1p(math.exp(-600.0))
    assert np.all(lse == want)


def test_causal_window_and_gqa_follow_sdpa():
    rng = np.random.default_rng(7)
    q, k = rng.normal(size=(1, 4, 9, 8)), rng.normal(size=(1, 2, 13, 8))
    lse = refimpl.sdpa_lse(q, k, k, is_causal=True, alignment="bottom-right", window=(3, -1), enable_gqa=True)
    i, j = np.arange(9)[:, None] + 4, np.arange(13)[None]
    keep = (j <= i) & (j >= i - 3)
    want = _explicit_lse(q, np.repeat(k, 2, axis=1), 1 / math.sqrt(8), keep)
    np.testing.assert_allclose(lse, want, rtol=1e-13)


# --- the judge -------------------------------------------------------------------------------------------

def _spec(family, dtype="float64", pred=lambda s: True):
    return next(s for s in QUICK + select(None, "quick", ("float16", "bfloat16"))
                if s.family == family and s.dtype == dtype and pred(s))


def _returned(data, lse, dtype="float32"):
    return Returned(data.expected.copy(), None, data.spec.dtype, [], lse, dtype)


@pytest.mark.parametrize("family,dtype", [("sizes", "float64"), ("sizes", "float32"), ("causal", "float32"),
                                          ("extreme-logits", "float32"), ("softcap", "bfloat16"),
                                          ("alibi", "float16")])
def test_an_lse_just_inside_its_bound_passes_and_just_outside_fails(family, dtype):
    data = STORE.get(_spec(family, dtype))
    ref = reference_lse(data, {})
    n = n_terms(data)
    limit = float(lse_bound(data, "float32", n).atol)
    live = data.live
    for factor, ok in ((0.99, True), (1.01, False)):
        lse = ref.copy()
        lse[live] += factor * limit
        lse[~live & data.dead] = np.inf
        res = judge(data, _returned(data, lse), dtype, cache=STORE.cache(data.spec))
        assert (res.status == Status.PASS) == ok, (factor, res.detail)
        assert res.ratio == pytest.approx(factor, rel=1e-9) if ok else res.ratio >= 1.0


def test_a_float64_lse_of_a_float64_case_gets_the_float64_bound():
    data = STORE.get(_spec("sizes"))
    n = n_terms(data)
    assert lse_bound(data, "float64", n).atol * 2**29 == pytest.approx(lse_bound(data, "float32", n).atol)
    lse = reference_lse(data, {}) + 1e3 * lse_bound(data, "float64", n).atol
    assert judge(data, _returned(data, lse, "float64"), "float64").status == Status.FAIL
    assert judge(data, _returned(data, lse, "float32"), "float64").status == Status.PASS


def test_rows_with_no_key_accept_plus_or_minus_inf_and_nothing_else():
    data = next(d for d in map(STORE.get, (s for s in QUICK if s.family == "masked-rows" and s.dtype == "float64"))
                if d.dead.any() and d.live.any())
    ref = reference_lse(data, {})
    for fill, conv in ((np.inf, "+inf"), (-np.inf, "-inf"), (np.nan, None), (0.0, None)):
        lse = ref.copy()
        lse[data.dead] = fill
        res = judge(data, _returned(data, lse), "float64")
        assert res.lse_convention == conv and (res.status == Status.PASS) == (conv is not None), res.detail
    if data.dead.sum() > 1:                                      # +inf on some rows, -inf on others: not one rule
        lse = ref.copy()
        lse[data.dead] = np.inf
        lse[tuple(ix[0] for ix in data.dead.nonzero())] = -np.inf
        assert "a mix of +inf and -inf" in judge(data, _returned(data, lse), "float64").detail
    lse = ref.copy()
    lse[data.dead] = np.inf
    lse[tuple(ix[0] for ix in data.live.nonzero())] = np.nan
    assert "log-sum-exp" in judge(data, _returned(data, lse), "float64").detail


def test_a_half_precision_or_misshapen_lse_fails_naming_it():
    data = STORE.get(_spec("sizes"))
    ref = reference_lse(data, {})
    res = judge(data, _returned(data, ref, "float16"), "float64")
    assert res.status == Status.FAIL and "float16" in res.detail and "float32" in res.detail
    res = judge(data, _returned(data, np.swapaxes(ref, 1, 2)[..., None]), "float64")
    assert res.status == Status.FAIL and "log-sum-exp shape" in res.detail


def test_a_target_asked_for_its_lse_that_returns_none_fails_naming_it():
    def no_lse(*args, **kwargs):
        out = flash_lse(*args, **kwargs)
        return (out[0], None, None) if isinstance(out, tuple) else out
    res = [run_one(Target("n", no_lse, api="flash-attn", lse=True), s, STORE) for s in QUICK[:6]]
    assert all(r.status == Status.ERROR and "the target returned none" in r.detail for r in res), \
        [r.detail for r in res]


def test_lse_is_refused_for_an_api_that_has_none():
    with pytest.raises(UsageError, match="--api torch-sdpa has no log-sum-exp.*flash-attn, flash-attn-varlen"):
        load_target(f"{ZOO / 'torch_sdpa_impls.py'}:sdpa_plain", api="torch-sdpa", lse=True)


# --- kernels written here: flash-attn and flash-attn-varlen with softmax_lse --------------------------------

def _dense(q, k, v, scale, causal, window, softcap, slopes, lse_base=math.e):
    """One sequence, torch (S, H, D): (out (Sq, Hq, Dv), lse (Hq, Sq) float32, +inf where no key)."""
    Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[0], k.shape[1]
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    qt, kt, vt = (t.to(ct).transpose(0, 1) for t in (q, k, v))
    kt, vt = (t.repeat_interleave(Hq // Hkv, 0) for t in (kt, vt))
    s = qt @ kt.transpose(-1, -2) * (scale or 1 / math.sqrt(D))
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    i, j = torch.arange(Sq)[:, None] + Sk - Sq, torch.arange(Sk)[None]
    if slopes is not None:
        s = s - slopes.to(ct).reshape(Hq, 1, 1) * (i - j).abs()
    left, right = window
    right = 0 if causal else right
    keep = torch.ones(Sq, Sk, dtype=torch.bool)
    keep &= (j >= i - left) if left >= 0 else keep
    keep &= (j <= i + right) if right >= 0 else keep
    s = s.masked_fill(~keep, -math.inf)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    lse = torch.where(torch.isinf(lse), torch.full_like(lse, math.inf), lse / math.log(lse_base))
    return (p @ vt).transpose(0, 1).to(q.dtype), lse.float()


def flash_lse(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
              alibi_slopes=None, deterministic=False, return_attn_probs=False, _base=math.e):
    outs, lses = [], []
    for b in range(q.shape[0]):
        sl = None if alibi_slopes is None else (alibi_slopes[b] if alibi_slopes.dim() == 2 else alibi_slopes)
        o, lse = _dense(q[b], k[b], v[b], softmax_scale, causal, window_size, softcap, sl, _base)
        outs.append(o)
        lses.append(lse)
    out = torch.stack(outs)
    return (out, torch.stack(lses), None) if return_attn_probs else out


def flash_lse_log2(*args, **kwargs):
    return flash_lse(*args, **kwargs, _base=2.0)            # BUG: the kernel's exp2 domain leaks into the LSE


def varlen_lse(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
               causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
               return_attn_probs=False):
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[2], dtype=q.dtype)
    lse = torch.full((q.shape[1], q.shape[0]), math.inf)
    for b in range(len(cu_seqlens_q) - 1):
        q0, q1, k0, k1 = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(cu_seqlens_k[b]), int(cu_seqlens_k[b + 1])
        if q1 == q0:
            continue
        sl = None if alibi_slopes is None else (alibi_slopes[b] if alibi_slopes.dim() == 2 else alibi_slopes)
        if k1 == k0:
            continue                                        # no key: zeros and +inf
        o, l_ = _dense(q[q0:q1], k[k0:k1], v[k0:k1], softmax_scale, causal, window_size, softcap, sl)
        out[q0:q1], lse[:, q0:q1] = o, l_
    return (out, lse, None) if return_attn_probs else out


def varlen_lse_global(q, k, v, cu_seqlens_q, *args, **kwargs):
    out, lse, _ = varlen_lse(q, k, v, cu_seqlens_q, *args, **kwargs)
    if kwargs.get("return_attn_probs"):
        return out, lse.t().contiguous(), None              # BUG: (total_q, Hq), the packed rows first
    return out


def _verdicts(fn, api, families=None, specs=QUICK):
    t = Target(fn.__name__, fn, api=api, lse=True)
    chosen = [s for s in specs if families is None or s.family in families]
    return [run_one(t, s, STORE) for s in chosen]


@pytest.mark.parametrize("fn,api", [(flash_lse, "flash-attn"), (varlen_lse, "flash-attn-varlen")])
def test_a_correct_kernels_lse_conforms(fn, api):
    results = _verdicts(fn, api)
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 100
    assert not [r for r in results if Status(r.status).failed], \
        [(r.id, r.detail) for r in results if Status(r.status).failed][:3]
    assert {r.lse_convention for r in judged} - {None} == {"+inf"}


def test_a_correct_kernels_lse_conforms_in_half_precision():
    results = _verdicts(flash_lse, "flash-attn", specs=select(None, "quick", ("float16", "bfloat16")))
    assert not [r for r in results if Status(r.status).failed], \
        [(r.id, r.detail) for r in results if Status(r.status).failed][:3]


@pytest.mark.parametrize("fn,api,words", [(flash_lse_log2, "flash-attn", "log-sum-exp: error"),
                                          (varlen_lse_global, "flash-attn-varlen", "log-sum-exp")])
def test_a_wrong_lse_is_caught_with_a_right_output(fn, api, words):
    results = _verdicts(fn, api, {"sizes", "varlen", "causal"})
    failed = [r for r in results if r.status == Status.FAIL]
    assert len(failed) >= 0.8 * len([r for r in results if r.status != Status.NA])
    assert all(words in r.detail and "output" not in r.detail.split("log-sum-exp")[0] for r in failed)


def _zoo():
    path = ZOO / "flash_lse_impls.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("zoo_flash_lse_impls", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ZOO_LSE = _zoo()


@pytest.mark.skipif(ZOO_LSE is None, reason="tests/zoo/flash_lse_impls.py is not in this checkout")
@pytest.mark.parametrize("entry", getattr(ZOO_LSE, "CATALOG", []),
                         ids=[str(e.get("name")) for e in getattr(ZOO_LSE, "CATALOG", [])])
def test_zoo_lse_kernels_correct_conform_and_broken_are_caught(entry):
    fn = getattr(ZOO_LSE, entry["fn"])
    dtypes = ("float32",) if entry.get("dtype") == "float32" else ("float64", "float32") if entry["correct"] \
        else ("float64",)
    results = _verdicts(fn, "flash-attn", specs=[s for s in QUICK if s.dtype in dtypes])
    failed = [r for r in results if Status(r.status).failed]
    if entry["correct"]:
        assert not failed, [(r.id, r.detail) for r in failed[:3]]
    else:
        assert len(failed) >= 2, f"{entry['name']}: {len(failed)} failed"
        assert all("log-sum-exp" in r.detail for r in failed), [r.detail for r in failed[:2]]
