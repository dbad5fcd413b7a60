"""Diagnosis of serving kernels: each broken kernel of tests/zoo/flash_kvcache_impls.py (--api flash-attn-kvcache) and
of tests/zoo/flash_lse_impls.py (--lse) is named by the model its CATALOG intends (refimpl/bugs_kvcache.py,
refimpl/bugs_lse.py, and causal-alignment and gqa-grouping of refimpl/bugs.py), and by nothing else; the correct ones
get no diagnosis line. Kernels built from the models themselves cover the variants no zoo kernel has."""
import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from refimpl.bugs_kvcache import MODELS as KV_MODELS
from refimpl.harness.analysis.diagnosis import diagnose
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target

ZOO = Path(__file__).parent / "zoo"
STORE = CaseStore()
# the kvcache family's first cases and every other family's quick ones (full caches through the same API)
KV_SPECS = {s.id: s for s in select(["kvcache"], "default", ("float64",))[:24]}
# where an LSE goes wrong: long rows (first block), rows with no key (causal, window), softcap, extreme scores, GQA
LSE_FAMILIES = ["sizes", "causal", "window", "softcap", "alibi", "extreme-logits", "gqa"]
QUICK = {s.id: s for s in select(LSE_FAMILIES, "quick", ("float64",))}


def _module(name):
    spec = importlib.util.spec_from_file_location(f"zoo_serving_{name}", ZOO / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


KV, LSE = _module("flash_kvcache_impls"), _module("flash_lse_impls")


def _names(fn, name, api, specs, lse=False):
    t = Target(name, fn, api=api, lse=lse)
    results = [run_one(t, s, STORE) for s in specs.values()]
    lines = diagnose(results, STORE, target=name, specs=specs)
    return results, [line.split(": ", 1)[1].split(" — ")[0] for line in lines]


@pytest.mark.parametrize("entry", KV.CATALOG, ids=[e["name"] for e in KV.CATALOG])
def test_each_kvcache_zoo_kernel_is_named_by_its_model(entry):
    specs = KV_SPECS if entry.get("dtype") != "float32" else \
        {s.id: s for s in select(["kvcache"], "default", ("float32",))[:30]}
    results, names = _names(getattr(KV, entry["fn"]), entry["name"], entry["api"], specs)
    if entry["correct"]:
        assert names == [] and not [r for r in results if Status(r.status).failed], names
        return
    assert any(Status(r.status).failed for r in results), "the broken kernel must fail somewhere first"
    assert names == [entry["model"]], (entry["model"], names)


@pytest.mark.parametrize("entry", LSE.CATALOG, ids=[e["name"] for e in LSE.CATALOG])
def test_each_lse_zoo_kernel_is_named_by_its_model(entry):
    dtype = "float32" if entry.get("dtype") == "float32" else "float64"
    specs = QUICK if dtype == "float64" else {s.id: s for s in select(LSE_FAMILIES, "quick", (dtype,))}
    results, names = _names(getattr(LSE, entry["fn"]), entry["name"], entry["api"], specs, lse=True)
    if entry["correct"]:
        assert names == [] and not [r for r in results if Status(r.status).failed], names
        return
    assert any(r.status == Status.FAIL for r in results), "the broken kernel must fail somewhere first"
    assert names == [entry["model"]], (entry["model"], names)


def test_the_fitted_parameters_are_the_kernels():
    t = Target("b", LSE.lse_first_block_only, api="flash-attn", lse=True)
    line = diagnose([run_one(t, s, STORE) for s in QUICK.values()], STORE, target="b", specs=QUICK)
    assert line == ["diagnosis b: lse-first-block — the log-sum-exp counts the first key block only (blocks of 64)"]
    t = Target("p", KV.kv_block_table_ignored, api="flash-attn-kvcache")
    line = diagnose([run_one(t, s, STORE) for s in KV_SPECS.values()], STORE, target="p", specs=KV_SPECS)
    assert line[0].endswith("(block b * blocks_per_seq + p // block_size (the identity table))"), line


def _from_model(variant):
    """A flash_attn_with_kvcache kernel that is the model ``variant`` (NumPy inside, the cache written in place)."""
    def kernel(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None, softmax_scale=None,
               causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, return_softmax_lse=False):
        n = (lambda t: None if t is None else t.double().numpy())
        out, kc, vc = variant.fn(np.swapaxes(n(q), 1, 2), n(k_cache), n(v_cache), n(k), n(v), cache_seqlens.numpy(),
                                 None if block_table is None else block_table.numpy(), scale=softmax_scale,
                                 causal=causal, window=tuple(window_size), softcap=softcap or None,
                                 slopes=n(alibi_slopes))
        k_cache.copy_(torch.from_numpy(kc))
        v_cache.copy_(torch.from_numpy(vc))
        return torch.from_numpy(np.swapaxes(out, 1, 2).copy()).to(q.dtype)
    return kernel


# the variants no zoo kernel makes
OTHERS = [("cache-length", "one key short (L - 1)"), ("cache-length", "one key past the end (L + 1)"),
          ("append-position", "at cache_seqlens + 1, a garbage slot left before them"),
          ("block-table", "block p // block_size for every sequence")]


@pytest.mark.parametrize("model,label", OTHERS, ids=[f"{m}[{lab}]" for m, lab in OTHERS])
def test_a_kernel_made_of_a_kvcache_model_is_named_by_it(model, label):
    variant = next(v for v in KV_MODELS[model].variants if v.label == label)
    results, names = _names(_from_model(variant), "m", "flash-attn-kvcache", KV_SPECS)
    assert any(Status(r.status).failed for r in results)
    assert names == [model], names


def lse_overflows(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                  alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """A right output, and an LSE of log(sum exp(s)) with no max subtracted: +inf where exp overflows."""
    out, _, _ = LSE.lse_plain(q, k, v, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
                              softcap=softcap, alibi_slopes=alibi_slopes, return_attn_probs=True)
    if not return_attn_probs:
        return out
    qt, kt, vt, scale, _ = LSE._prepare(q, k, v, dropout_p, softmax_scale, window_size, alibi_slopes)
    kt, vt = LSE._expand_kv(kt, vt, qt.shape[1])
    s = LSE._scores(qt, kt, scale, softcap) + LSE._bias(qt, kt, causal, window_size, alibi_slopes)
    lse = torch.log(torch.exp(s).sum(-1))                        # BUG: exp(s) without the row max
    return out, lse.masked_fill(lse == -math.inf, math.inf).to(torch.float32), None


def test_an_lse_that_overflows_for_want_of_the_max_is_named():
    results, names = _names(lse_overflows, "o", "flash-attn", QUICK, lse=True)
    assert any(r.status == Status.FAIL for r in results) and any(r.status == Status.PASS for r in results)
    assert names == ["lse-no-max"], names


def test_no_lse_model_is_named_when_the_output_fails_too():
    def log2_and_scaled(q, k, v, return_attn_probs=False, **kw):
        out, lse, _ = LSE.lse_log2(q, k, v, return_attn_probs=True, **kw)
        return (out * 1.5, lse, None) if return_attn_probs else out * 1.5
    results, names = _names(log2_and_scaled, "x", "flash-attn", QUICK, lse=True)
    assert any(r.status == Status.FAIL for r in results)
    assert not [n for n in names if n.startswith("lse-")], names


def test_rows_with_no_key_the_judge_accepted_explain_no_failure():
    # a case that failed on something other than its output (say its LSE) while its output is exactly the
    # expected one, NaN on the rows with no key (accepted by default): no output model explains it
    from refimpl.harness.apis import Returned
    from refimpl.harness.verdicts.judge import CaseResult
    specs = {i: s for i, s in QUICK.items() if STORE.get(s).dead.any()}
    results = []
    for i, spec in specs.items():
        data = STORE.get(spec)
        out = data.expected.copy()
        out[np.broadcast_to(data.dead, out.shape[:-1])] = np.nan
        results.append(CaseResult(i, Status.FAIL, 2.0, "log-sum-exp: error 2 above the bound 1", convention="nan",
                                  got=Returned(out, None, "float64", [])))
    assert len(results) >= 3
    assert diagnose(results, STORE, target="n", specs=specs) == ["diagnosis n: unknown"]
    flagged = [replace(r, detail="fully masked rows give 'nan' (accepted: zeros)") for r in results]
    lines = diagnose(flagged, STORE, target="n", specs=specs)            # failed by the judge: now they explain
    assert [line.split(": ", 1)[1].split(" — ")[0] for line in lines] == ["dead-rows-nan"], lines
