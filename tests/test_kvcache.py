"""--api flash-attn-kvcache: flash_attn_with_kvcache's cache (dense or paged through a shuffled block table, garbage
beyond every sequence's keys), its new keys written in place and checked, and the kvcache family."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from refimpl.harness import apis
from refimpl.harness.apis.flash_attn_kvcache import caches
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target

SUPPORT = Path(__file__).parent / "support" / "kvcache_kernels.py"
ZOO = Path(__file__).parent / "zoo" / "flash_kvcache_impls.py"
STORE = CaseStore()
QUICK = select(None, "quick", ("float64", "float32"))
KV = [s for s in select(["kvcache"], "default", ("float64",))]


def _module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


K = _module(SUPPORT, "kvcache_kernels_t")


def test_the_family_has_what_a_serving_kernel_meets():
    assert {s.block_size for s in KV} == {None, 16, 256}
    assert any(0 in s.cache_lens for s in KV) and any(s.new_len > 1 for s in KV) and any(s.Sq > 1 for s in KV)
    assert any(s.seq_causal and s.Sq > 1 for s in KV) and any(s.gqa for s in KV) and any(s.alibi for s in KV)
    assert all(lq == s.Sq and lk == c + s.new_len for s in KV for (lq, lk), c in zip(s.seqlens, s.cache_lens))


def test_the_cache_holds_garbage_beyond_each_sequence_and_a_shuffled_block_table():
    spec = next(s for s in KV if s.block_size == 16 and s.B > 1 and s.new_len)
    c = caches(STORE.get(spec))
    before, after = c["k_cache"]
    table = c["block_table"]
    assert sorted(table.ravel().tolist()) != table.ravel().tolist()          # not the identity
    new = spec.new_len                               # a sequence owns the pages its keys fill; the rest point
    used = {int(table[b, j]) for b in range(spec.B) for j in range(table.shape[1])      # at a page nobody owns
            if j * 16 < int(c["cache_seqlens"][b]) + new}
    spare = [n for n in range(before.shape[0]) if n not in used]
    assert len(spare) == 1 and before.shape[0] == len(used) + 1
    assert spare and np.isnan(before[spare]).any() and (np.abs(before[spare][np.isfinite(before[spare])]) >= 1e29).all()
    b = int(np.argmax(c["cache_seqlens"]))
    L = int(c["cache_seqlens"][b])
    p = L                                                                       # the first new key of sequence b
    blk, off = table[b, p // 16], p % 16
    k = np.swapaxes(STORE.get(spec).k, 1, 2)
    assert np.array_equal(after[blk, off], k[b, p]) and not np.array_equal(before[blk, off], k[b, p])


@pytest.mark.parametrize("dtypes", [("float64", "float32"), ("float16", "bfloat16")])
def test_a_correct_kernel_conforms(dtypes):
    specs = select(None, "quick", dtypes)
    results = [run_one(Target("kv", K.attn, api="flash-attn-kvcache"), s, STORE) for s in specs]
    judged = [r for r in results if r.status in (Status.PASS, Status.FAIL)]
    assert len(judged) > 60 and not [r for r in results if Status(r.status).failed], \
        [(r.id, r.detail) for r in results if Status(r.status).failed][:3]
    assert any(r.id.startswith("kvcache/") for r in judged)


@pytest.mark.parametrize("fn,words", [("attn_reads_all", "output"), ("attn_no_write", "new keys were not written")])
def test_reading_garbage_or_not_writing_the_cache_fails(fn, words):
    results = [run_one(Target(fn, getattr(K, fn), api="flash-attn-kvcache"), s, STORE) for s in KV[:24]]
    failed = [r for r in results if r.status == Status.FAIL]
    assert len(failed) >= 4 and any(words in r.detail for r in failed), [r.detail for r in failed[:2]]


def test_writing_the_cache_when_nothing_is_new_is_named():
    spec = next(s for s in KV if s.new_len == 0 and min(s.cache_lens) > 0)

    def scribbles(q, k_cache, v_cache, **kw):
        out = K.attn(q, k_cache, v_cache, **kw)
        k_cache.view(-1)[-1] = 0.0                                  # a stray write past every sequence
        return out
    res = run_one(Target("s", scribbles, api="flash-attn-kvcache"), spec, STORE)
    assert res.status == Status.FAIL and "k_cache: after the call 1 values differ" in res.detail


def test_writing_the_new_keys_one_position_early_is_named():
    spec = next(s for s in KV if s.new_len and min(s.cache_lens) > 0)

    def early(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, **kw):
        return K.attn(q, k_cache, v_cache, k, v, cache_seqlens - 1, **kw)
    res = run_one(Target("e", early, api="flash-attn-kvcache"), spec, STORE)
    assert res.status == Status.FAIL and "values differ from the cache with the new keys written" in res.detail


def test_ragged_queries_are_not_its_to_express():
    varlen = next(s for s in select(["varlen"], "default", ("float64",)) if len({a for a, _ in s.seqlens}) > 1)
    assert "ragged queries are --api flash-attn-varlen's" in apis.expressible("flash-attn-kvcache", varlen)
    masked = next(s for s in QUICK if s.mask == "bool" and s.seqlens is None)
    assert "takes no bool mask" in apis.expressible("flash-attn-kvcache", masked)


def test_its_lse_is_judged():
    def with_lse(q, k_cache, v_cache, return_softmax_lse=False, **kw):
        out = K.attn(q, k_cache, v_cache, **kw)
        if not return_softmax_lse:
            return out
        return out, torch.zeros(out.shape[0], out.shape[2], out.shape[1])     # wrong: zeros
    t = Target("l", with_lse, api="flash-attn-kvcache", lse=True)
    res = [run_one(t, s, STORE) for s in KV[:6]]
    assert all(r.status == Status.FAIL and "log-sum-exp" in r.detail for r in res)


ZOO_KV = _module(ZOO, "zoo_flash_kvcache_impls") if ZOO.exists() else None


@pytest.mark.skipif(ZOO_KV is None, reason="tests/zoo/flash_kvcache_impls.py is not in this checkout")
@pytest.mark.parametrize("entry", getattr(ZOO_KV, "CATALOG", []),
                         ids=[str(e.get("name")) for e in getattr(ZOO_KV, "CATALOG", [])])
def test_zoo_kvcache_kernels_correct_conform_and_broken_are_caught(entry):
    fn = getattr(ZOO_KV, entry["fn"])
    dtypes = ("float32",) if entry.get("dtype") == "float32" else ("float64", "float32") if entry["correct"] \
        else ("float64",)
    specs = [s for s in select(None, "quick", dtypes)] + [s for s in select(["kvcache"], "default", dtypes)][:20]
    results = [run_one(Target(entry["name"], fn, api="flash-attn-kvcache"), s, STORE) for s in specs]
    failed = [r for r in results if Status(r.status).failed]
    if entry["correct"]:
        assert not failed, [(r.id, r.detail) for r in failed[:3]]
    else:
        assert len(failed) >= 2, f"{entry['name']}: {len(failed)} failed of {len(results)}"
