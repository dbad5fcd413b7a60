"""Self-check of tests/zoo/flash_kvcache_impls.py against a plain float64 reference written here.

Correct kernels must match the reference (output, softmax_lse, and the cache contents after the call) on
random dense and paged (shuffled block tables) cases with garbage (1e30 / NaN) past every cache length;
every broken kernel must differ (output or cache) on at least one case and match on a case where its bug
cannot show.
"""
import importlib.util
import math
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("flash_kvcache_impls",
                                               Path(__file__).with_name("flash_kvcache_impls.py"))
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

CORRECT = [e for e in zoo.CATALOG if e["correct"]]
BROKEN = {e["name"]: e for e in zoo.CATALOG if not e["correct"]}
TOL = {"float64": 1e-10, "float32": 1e-5}
LSE_TOL = 1e-5  # softmax_lse is float32 whatever the compute dtype


# ------------------------------------------------------------------ cases
def make_case(seed, *, batch=3, hq=4, hkv=2, d=8, dv=8, sq=1, snew=0, smax=40, block_size=None, max_blocks=None,
              extra_blocks=3, shuffle=True, seqlens=None, garbage=1e30, dtype=torch.float64, int_seqlens=False,
              **kwargs):
    """A cache whose slots past seqlens[b] hold `garbage`; paged when block_size is given. kwargs go to fn."""
    g = torch.Generator().manual_seed(seed)
    capacity = block_size * max_blocks if block_size else smax
    if seqlens is None:  # ragged: empty, full, and random in between
        room = capacity - snew
        seqlens = [0, room] + [int(torch.randint(1, room, (1,), generator=g)) for _ in range(batch - 2)]
    assert len(seqlens) == batch and all(0 <= n <= capacity - snew for n in seqlens)
    if block_size:
        num_blocks = batch * max_blocks + extra_blocks
        order = torch.randperm(num_blocks, generator=g) if shuffle else torch.arange(num_blocks)
        block_table = order[:batch * max_blocks].reshape(batch, max_blocks).to(torch.int32)
        shape = (num_blocks, block_size, hkv)
    else:
        block_table, shape = None, (batch, smax, hkv)
    k_cache = torch.full(shape + (d,), garbage, dtype=dtype)
    v_cache = torch.full(shape + (dv,), garbage, dtype=dtype)
    for b, n in enumerate(seqlens):
        for p in range(n):
            k_cache[slot(block_table, block_size, b, p)] = torch.randn(hkv, d, generator=g, dtype=torch.float64)
            v_cache[slot(block_table, block_size, b, p)] = torch.randn(hkv, dv, generator=g, dtype=torch.float64)
    new = None
    if snew:
        new = (torch.randn(batch, snew, hkv, d, generator=g, dtype=torch.float64).to(dtype),
               torch.randn(batch, snew, hkv, dv, generator=g, dtype=torch.float64).to(dtype))
    if kwargs.get("alibi_slopes") == "heads":
        kwargs["alibi_slopes"] = torch.rand(hq, generator=g, dtype=torch.float64).float() * 0.5
    elif kwargs.get("alibi_slopes") == "batch":
        kwargs["alibi_slopes"] = torch.rand(batch, hq, generator=g, dtype=torch.float64).float() * 0.5
    if int_seqlens:
        assert len(set(seqlens)) == 1
        cache_seqlens = seqlens[0]
    else:
        cache_seqlens = torch.tensor(seqlens, dtype=torch.int32)
    return {"q": torch.randn(batch, sq, hq, d, generator=g, dtype=torch.float64).to(dtype),
            "k_cache": k_cache, "v_cache": v_cache, "new": new, "cache_seqlens": cache_seqlens,
            "seqlens": list(seqlens), "block_table": block_table, "block_size": block_size, "kwargs": kwargs}


def slot(block_table, block_size, b, p):
    """Index of logical position p of sequence b (written out independently of the zoo)."""
    if block_table is None:
        return b, p
    return int(block_table[b, p // block_size]), p % block_size


def run(fn, case):
    """Call fn on copies of the caches; return (out, lse, k_cache, v_cache) as left by the call."""
    k_cache, v_cache = case["k_cache"].clone(), case["v_cache"].clone()
    k, v = case["new"] if case["new"] is not None else (None, None)
    out, lse = fn(case["q"].clone(), k_cache, v_cache, k=k, v=v, cache_seqlens=case["cache_seqlens"],
                  block_table=case["block_table"], return_softmax_lse=True, **case["kwargs"])
    return out, lse, k_cache, v_cache


def reference(case):
    """Plain float64 attention, one query row at a time; returns (out, lse, expected k_cache, v_cache)."""
    q, kw, bt, bs = case["q"].double(), case["kwargs"], case["block_table"], case["block_size"]
    batch, sq, hq, d = q.shape
    k_exp, v_exp = case["k_cache"].clone(), case["v_cache"].clone()
    hkv, dv = k_exp.shape[2], v_exp.shape[3]
    snew = 0 if case["new"] is None else case["new"][0].shape[1]
    for b, n in enumerate(case["seqlens"]):
        for t in range(snew):
            k_exp[slot(bt, bs, b, n + t)] = case["new"][0][b, t]
            v_exp[slot(bt, bs, b, n + t)] = case["new"][1][b, t]
    scale = kw.get("softmax_scale") or 1.0 / math.sqrt(d)
    softcap, causal = kw.get("softcap", 0.0), kw.get("causal", False)
    left, right = kw.get("window_size", (-1, -1))
    if causal:
        right = 0
    slopes = kw.get("alibi_slopes")
    out = torch.zeros(batch, sq, hq, dv, dtype=torch.float64)
    lse = torch.full((batch, hq, sq), math.inf, dtype=torch.float64)
    for b, n in enumerate(case["seqlens"]):
        length = n + snew
        keys = torch.stack([k_exp[slot(bt, bs, b, p)] for p in range(length)]).double() if length else None
        vals = torch.stack([v_exp[slot(bt, bs, b, p)] for p in range(length)]).double() if length else None
        for i in range(sq):
            diag = i + length - sq
            kept = [j for j in range(length)
                    if (left < 0 or j >= diag - left) and (right < 0 or j <= diag + right)]
            if not kept:
                continue
            dist = torch.tensor([abs(diag - j) for j in kept], dtype=torch.float64)
            for h in range(hq):
                g = h // (hq // hkv)
                s = (keys[kept, g] @ q[b, i, h]) * scale
                if softcap > 0:
                    s = softcap * torch.tanh(s / softcap)
                if slopes is not None:
                    slope = float(slopes[h] if slopes.dim() == 1 else slopes[b, h])
                    s = s - slope * dist
                m = s.max()
                e = torch.exp(s - m)
                out[b, i, h] = e @ vals[kept, g] / e.sum()
                lse[b, h, i] = m + torch.log(e.sum())
    return out, lse, k_exp, v_exp


def same_cache(a, b):
    return a.shape == b.shape and bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def compare(case, result, tol, ref=None):
    """(output_ok, cache_ok) of a kernel's result against the reference."""
    out, lse, k_cache, v_cache = result
    r_out, r_lse, r_k, r_v = ref or reference(case)
    q = case["q"]
    out_ok = (out.dtype == q.dtype and out.shape == r_out.shape and lse.dtype == torch.float32
              and lse.shape == r_lse.shape
              and torch.allclose(out.double(), r_out, rtol=tol, atol=tol)
              and torch.allclose(lse.double(), r_lse, rtol=LSE_TOL, atol=LSE_TOL))
    return out_ok, same_cache(k_cache, r_k) and same_cache(v_cache, r_v)


DENSE = {}
PAGED16 = {"block_size": 16, "max_blocks": 4}
PAGED16_WIDE = {"block_size": 16, "max_blocks": 16}
PAGED256 = {"block_size": 256, "max_blocks": 2}
NAN = float("nan")

SWEEP = [  # (seed, make_case kwargs)
    (1, dict(DENSE, sq=1)),
    (2, dict(DENSE, sq=1, snew=1, garbage=NAN)),
    (3, dict(DENSE, sq=4, snew=4, causal=True, garbage=NAN)),
    (4, dict(DENSE, sq=4, causal=True, window_size=(6, 0))),
    (5, dict(PAGED16, sq=1, snew=1, garbage=NAN)),
    (6, dict(PAGED16, sq=4, snew=4, causal=True, alibi_slopes="heads")),
    (7, dict(PAGED256, sq=1, garbage=NAN, softcap=5.0)),
    (8, dict(PAGED256, sq=4, snew=2, causal=True, window_size=(40, 0), alibi_slopes="batch", garbage=NAN)),
    (9, dict(PAGED16_WIDE, sq=4, snew=3, window_size=(20, 3), softcap=2.0, softmax_scale=0.3)),
    (10, dict(DENSE, hq=3, hkv=3, dv=5, sq=4, snew=4, seqlens=[17, 17, 17], int_seqlens=True)),
    (11, dict(PAGED16, hkv=1, sq=1, snew=1, alibi_slopes="heads", softcap=3.0, garbage=NAN)),
    (12, dict(DENSE, sq=4, causal=True, seqlens=[0, 0, 0])),
    (13, dict(DENSE, sq=4, snew=2, causal=True, seqlens=[0, 1, 38], garbage=NAN)),
    (14, dict(PAGED16, batch=4, sq=4, snew=4, garbage=NAN, seqlens=[0, 13, 60, 33])),
    (15, dict(PAGED256, batch=2, sq=1, snew=1, window_size=(50, -1), seqlens=[300, 511])),
    (16, dict(PAGED16_WIDE, batch=2, sq=1, snew=1, seqlens=[37, 200], garbage=NAN)),
]
SWEEP_F32 = [(seed, dict(kw, dtype=torch.float32)) for seed, kw in SWEEP[1:16:3]]


@pytest.fixture(scope="module")
def sweep():
    """[(case, reference, tol_by_dtype)] for the float64 and float32 sweeps."""
    items = []
    for seed, kw in SWEEP + SWEEP_F32:
        case = make_case(seed, **kw)
        items.append((case, reference(case), kw.get("dtype", torch.float64)))
    return items


def _tol(entry, dtype):
    return TOL["float32"] if dtype == torch.float32 or entry["dtype"] == "float32" else TOL["float64"]


# ------------------------------------------------------------------ correct kernels
@pytest.mark.parametrize("entry", CORRECT, ids=lambda e: e["name"])
def test_correct_kernel_matches_reference(entry, sweep):
    fn = getattr(zoo, entry["fn"])
    for n, (case, ref, dtype) in enumerate(sweep):
        out_ok, cache_ok = compare(case, run(fn, case), _tol(entry, dtype), ref)
        assert out_ok, f"{entry['name']}: output/lse mismatch on sweep case {n}"
        assert cache_ok, f"{entry['name']}: cache contents wrong after the call on sweep case {n}"


@pytest.mark.parametrize("entry", CORRECT, ids=lambda e: e["name"])
def test_correct_kernel_plain_return_and_half(entry):
    fn = getattr(zoo, entry["fn"])
    case = make_case(21, **PAGED16, sq=4, snew=4, causal=True, garbage=NAN)
    k, v = case["new"]
    out = fn(case["q"], case["k_cache"].clone(), case["v_cache"].clone(), k=k, v=v,
             cache_seqlens=case["cache_seqlens"], block_table=case["block_table"], causal=True)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 4, 4, 8)
    for dtype in (torch.float16, torch.bfloat16):
        half = make_case(22, **PAGED16, sq=4, snew=4, causal=True, garbage=NAN, dtype=dtype, softcap=4.0)
        out, lse, k_cache, v_cache = run(fn, half)
        r_out, r_lse, r_k, r_v = reference(half)
        assert out.dtype == dtype and lse.dtype == torch.float32
        assert torch.allclose(out.double(), r_out, atol=2e-2, rtol=2e-2)
        assert torch.allclose(lse.double(), r_lse, atol=1e-3, rtol=1e-3)
        assert same_cache(k_cache, r_k) and same_cache(v_cache, r_v)


def test_catalog_shape():
    names = [e["name"] for e in zoo.CATALOG]
    assert len(names) == len(set(names)) and len(CORRECT) >= 3
    assert set(BROKEN) == {"kv_reads_whole_cache", "kv_append_off_by_one", "kv_new_keys_not_attended",
                           "kv_block_table_ignored", "kv_page_offset_swapped", "kv_causal_top_left",
                           "kv_cache_not_updated", "kv_last_block_unmasked", "kv_gqa_modulo"}
    for e in zoo.CATALOG:
        assert e["api"] == "flash-attn-kvcache" and callable(getattr(zoo, e["fn"]))
        assert (e["model"] is None) == e["correct"]
        assert set(e["features"]) <= {"causal", "window", "softcap", "alibi", "gqa", "paged", "append"}


def test_rejects_bad_input():
    case = make_case(23, **PAGED16, snew=1)
    k, v = case["new"]
    fn = zoo.kv_gather_dense
    with pytest.raises(ValueError):  # k without v
        fn(case["q"], case["k_cache"], case["v_cache"], k=k, cache_seqlens=case["cache_seqlens"],
           block_table=case["block_table"])
    with pytest.raises(ValueError):  # does not fit: 64 cached + 1 new > 64 slots
        fn(case["q"], case["k_cache"], case["v_cache"], k=k, v=v, cache_seqlens=64, block_table=case["block_table"])


# ------------------------------------------------------------------ broken kernels
TRIVIAL = {  # a case where the bug cannot show (the kernel must match there)
    "kv_reads_whole_cache": dict(PAGED16, sq=4, snew=2, causal=True, seqlens=[62, 62, 62], garbage=NAN),
    "kv_append_off_by_one": dict(PAGED16, sq=4, causal=True, alibi_slopes="heads", garbage=NAN),
    "kv_new_keys_not_attended": dict(DENSE, sq=4, window_size=(5, 1), garbage=NAN),
    "kv_block_table_ignored": dict(PAGED16, sq=4, snew=4, shuffle=False, garbage=NAN, softcap=3.0),
    "kv_page_offset_swapped": dict(DENSE, sq=4, snew=4, causal=True, garbage=NAN, alibi_slopes="batch"),
    "kv_causal_top_left": dict(PAGED16, sq=1, snew=1, causal=True, window_size=(9, 0), garbage=NAN),
    "kv_cache_not_updated": dict(PAGED256, sq=4, causal=True, garbage=NAN),
    "kv_last_block_unmasked": dict(PAGED16, sq=4, snew=1, seqlens=[15, 31, 47], garbage=NAN, alibi_slopes="heads"),
    "kv_gqa_modulo": dict(PAGED16, hq=2, hkv=2, sq=4, snew=4, causal=True, garbage=NAN),
}

SYMPTOM = {  # a revealing case and which part must be wrong: "out", "cache" or "any"
    "kv_reads_whole_cache": (dict(DENSE, sq=1, snew=1), "out"),
    "kv_append_off_by_one": (dict(PAGED16, sq=1, snew=1, seqlens=[5, 20, 40]), "cache"),
    "kv_new_keys_not_attended": (dict(DENSE, sq=1, snew=1, garbage=NAN), "out"),
    "kv_block_table_ignored": (dict(PAGED16, sq=1, snew=1), "any"),
    "kv_page_offset_swapped": (dict(PAGED16_WIDE, sq=1, snew=1), "any"),
    "kv_causal_top_left": (dict(DENSE, sq=4, snew=4, causal=True, seqlens=[10, 20, 30]), "out"),
    "kv_cache_not_updated": (dict(PAGED16, sq=4, snew=4, causal=True, garbage=NAN), "cache"),
    "kv_last_block_unmasked": (dict(PAGED16, sq=1, snew=1, seqlens=[4, 20, 40], garbage=NAN), "out"),
    "kv_gqa_modulo": (dict(DENSE, hq=4, hkv=2, sq=1, snew=1), "out"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_kernel_matches_where_bug_cannot_show(name):
    case = make_case(31, **TRIVIAL[name])
    out_ok, cache_ok = compare(case, run(getattr(zoo, name), case), TOL["float64"])
    assert out_ok and cache_ok, f"{name} should match on a case its bug cannot reach"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_kernel_shows_its_symptom(name):
    kw, part = SYMPTOM[name]
    case = make_case(32, **kw)
    out_ok, cache_ok = compare(case, run(getattr(zoo, name), case), TOL["float64"])
    wrong = {"out": not out_ok, "cache": not cache_ok, "any": not (out_ok and cache_ok)}[part]
    assert wrong, f"{name}: expected a wrong {part} on its revealing case"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_kernel_caught_by_sweep(name, sweep):
    fn = getattr(zoo, name)
    for case, ref, dtype in sweep:
        try:
            result = run(fn, case)
        except IndexError:  # kv_page_offset_swapped can address outside the table; a crash is not a catch
            continue
        if compare(case, result, _tol(BROKEN[name], dtype), ref) != (True, True):
            return
    pytest.fail(f"{name} matched the reference on every sweep case")
