"""What ``--api flash-attn``, ``flash-attn-varlen`` and ``flash-attn-kvcache`` hand a target and what they take back,
read as FlashAttention's documented interface (flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache).

The arguments of each case are evaluated by a small implementation of the documented semantics written here and
must give the case's expected output: q (B, Sq, H, D) (varlen: packed (total, H, D) with int32 cumulative lengths;
kvcache: the keys are the cache's first ``cache_seqlens[b]`` positions, through the block table when paged, plus the
new ``k``, ``v`` written there in place); head h reads kv head h // (Hq / Hkv); ``softmax_scale`` None = 1/sqrt(D);
scores ``softcap * tanh(score / softcap)`` when softcap > 0; ALiBi adds ``-slope * |i + Sk - Sq - j|``; causal keeps
key j for query i iff ``j <= i + Sk - Sq`` (bottom-right) and ``window_size`` (left, right) keeps
``[i + Sk - Sq - left, i + Sk - Sq + right]``, -1 unbounded. With ``return_attn_probs=True`` (kvcache:
``return_softmax_lse=True``) the kernel returns ``(out, softmax_lse, S_dmask)`` (kvcache ``(out, softmax_lse)``);
S_dmask is negative where dropout dropped a weight.
"""
import math

import numpy as np
import pytest
import torch

from refimpl.harness import apis
from refimpl.harness.cases.families import select
from refimpl.harness.cases.features import CaseSpec
from refimpl.harness.rows.family_cases import CaseStore

FA, VARLEN, KV = (apis.get(n) for n in ("flash-attn", "flash-attn-varlen", "flash-attn-kvcache"))
STORE = CaseStore()
QUICK = select(None, "quick", ("float64",))


# a packed batch whose sequences all have Sq queries: flash_attn_with_kvcache gets each one's keys as its cache
PACKED_EQUAL = [s for s in select(["varlen"], "default", ("float64",))
                if len({lq for lq, _ in s.seqlens}) == 1 and s.seqlens[0][0] == s.Sq][:2]


def _cases(api):
    return [s for s in QUICK + PACKED_EQUAL if apis.expressible(api, s) is None]


def _tensor(a):
    return None if a is None else torch.tensor(a)


def _is_array(x):                            # as the probe tells an array from anything else
    return isinstance(x, np.ndarray) or (hasattr(x, "detach") and hasattr(x, "dtype"))


# --- the documented semantics ------------------------------------------------------------------------------

def flash_rows(q, k, v, scale, causal, window, softcap, slopes):
    """One sequence: q (Sq, Hq, D), k (Sk, Hkv, D), v (Sk, Hkv, Dv), slopes (Hq,) or None -> (out (Sq, Hq, Dv),
    lse (Hq, Sq)); a row with no key gives zeros and an lse of +inf, as FlashAttention does."""
    Sq, Hq, D = q.shape
    Sk, Hkv = k.shape[:2]
    assert Hq % Hkv == 0, "nheads must be divisible by nheads_k"
    scale = 1 / math.sqrt(D) if scale is None else scale
    diag = np.arange(Sq)[:, None] + Sk - Sq                          # key index of query i's diagonal
    j = np.arange(Sk)[None, :]
    keep = np.ones((Sq, Sk), bool)
    left, right = window
    if causal:
        keep &= j <= diag
    if left >= 0:
        keep &= j >= diag - left
    if right >= 0:
        keep &= j <= diag + right
    out = np.zeros((Sq, Hq, v.shape[-1]))
    lse = np.full((Hq, Sq), np.inf)
    for h in range(Hq):
        kh = h // (Hq // Hkv)
        s = q[:, h] @ k[:, kh].T * scale
        if softcap > 0:
            s = softcap * np.tanh(s / softcap)
        if slopes is not None:
            s = s - float(slopes[h]) * np.abs(diag - j)
        s = np.where(keep, s, -np.inf)
        live = keep.any(-1)
        m = np.where(live, s.max(-1, initial=-np.inf), 0.0)
        w = np.exp(s - m[:, None])
        tot = w.sum(-1)
        out[live, h] = (w[live] / tot[live, None]) @ v[:, kh]
        lse[h, live] = np.log(tot[live]) + m[live]
    return out, lse


def _slopes(alibi_slopes, b):
    if alibi_slopes is None:
        return None
    assert alibi_slopes.dtype == torch.float32, "alibi_slopes are fp32"
    s = alibi_slopes.numpy()
    return s if s.ndim == 1 else s[b]


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                    alibi_slopes=None, deterministic=False, return_attn_probs=False):
    assert dropout_p == 0.0
    q, k, v = (t.numpy() for t in (q, k, v))                        # (B, S, H, D)
    rows = [flash_rows(q[b], k[b], v[b], softmax_scale, causal, window_size, softcap, _slopes(alibi_slopes, b))
            for b in range(q.shape[0])]
    out = torch.tensor(np.stack([o for o, _ in rows]))
    return (out, torch.tensor(np.stack([lse for _, lse in rows])), None) if return_attn_probs else out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                           softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                           deterministic=False, return_attn_probs=False):
    assert dropout_p == 0.0 and cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    assert cq[0] == ck[0] == 0 and len(cq) == len(ck) and cq[-1] == q.shape[0] and ck[-1] == k.shape[0]
    q, k, v = (t.numpy() for t in (q, k, v))
    out = np.zeros(q.shape[:2] + v.shape[-1:])
    lse = np.full(q.shape[1::-1], np.inf)                             # (Hq, total_q)
    for b in range(len(cq) - 1):
        sq, sk = slice(cq[b], cq[b + 1]), slice(ck[b], ck[b + 1])
        assert cq[b + 1] - cq[b] <= max_seqlen_q and ck[b + 1] - ck[b] <= max_seqlen_k
        out[sq], lse[:, sq] = flash_rows(q[sq], k[sk], v[sk], softmax_scale, causal, window_size, softcap,
                                         _slopes(alibi_slopes, b))
    return (torch.tensor(out), torch.tensor(lse), None) if return_attn_probs else torch.tensor(out)


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, block_table=None,
                            softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                            return_softmax_lse=False):
    assert cache_seqlens.dtype == torch.int32 and (block_table is None or block_table.dtype == torch.int32)
    B, Sq = q.shape[:2]
    new = 0 if k is None else k.shape[1]
    outs, lses = [], []
    for b in range(B):
        n = int(cache_seqlens[b])
        pos = torch.arange(n + new)
        if block_table is None:
            rows, offs = torch.full_like(pos, b), pos
        else:
            size = k_cache.shape[1]
            rows, offs = block_table[b].long()[pos // size], pos % size
        if new:                                                      # appended in place at cache_seqlens
            k_cache[rows[n:], offs[n:]] = k[b]
            v_cache[rows[n:], offs[n:]] = v[b]
        o, lse = flash_rows(q[b].numpy(), k_cache[rows, offs].numpy(), v_cache[rows, offs].numpy(), softmax_scale,
                            causal, window_size, softcap, _slopes(alibi_slopes, b))
        outs.append(o)
        lses.append(lse)
    out = torch.tensor(np.stack(outs))
    return (out, torch.tensor(np.stack(lses))) if return_softmax_lse else out


def _close(got, data):
    live = data.live
    assert got.shape == data.expected.shape
    np.testing.assert_allclose(got[live], data.expected[live], rtol=1e-10, atol=1e-12)


def _fixed_kwargs(kw, spec):
    causal = spec.seq_causal if spec.seqlens is not None else spec.is_causal
    assert kw["softmax_scale"] == spec.scale and kw["causal"] is causal
    assert kw["softcap"] == (spec.softcap or 0.0) and isinstance(kw["softcap"], float)
    left, right = kw["window_size"]
    assert isinstance(left, int) and isinstance(right, int)
    if spec.alibi:
        assert kw["alibi_slopes"].dtype == torch.float32
    else:
        assert kw["alibi_slopes"] is None


# --- flash_attn_func -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", _cases(FA), ids=[s.id for s in _cases(FA)])
def test_flash_attn_arguments_mean_the_case_under_the_documented_semantics(spec):
    data = STORE.get(spec)
    given, args, kw = FA.arguments(data, _tensor, "BSHD")
    assert [a is given[n] for a, n in zip(args, "qkv")] == [True] * 3
    assert tuple(args[0].shape) == (spec.B, spec.Sq, spec.Hq, spec.D)
    _close(flash_attn_func(*args, **kw).numpy().swapaxes(1, 2), data)


def test_flash_attn_is_asked_for_deterministic_output_and_no_probabilities():
    for spec in _cases(FA):
        _, _, kw = FA.arguments(STORE.get(spec), _tensor, "BSHD")
        assert set(kw) == {"dropout_p", "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes",
                           "deterministic", "return_attn_probs"}, spec.id
        assert kw["dropout_p"] == 0.0 and kw["deterministic"] is True and kw["return_attn_probs"] is False, spec.id
        _fixed_kwargs(kw, spec)


def test_flash_attn_lse_is_asked_for_with_return_attn_probs():
    assert FA.lse_kwargs == {"return_attn_probs": True}
    spec = next(s for s in _cases(FA) if s.is_causal and s.Sq > s.Sk)           # rows with no key: lse +inf
    data = STORE.get(spec)
    got = apis.call(flash_attn_func, FA, data, lse=True)
    _, args, kw = FA.arguments(data, _tensor, "BSHD")
    _, want, _ = flash_attn_func(*args, **{**kw, "return_attn_probs": True})
    assert got.lse.shape == (spec.B, spec.Hq, spec.Sq) and np.array_equal(got.lse, want.numpy())
    assert np.isinf(got.lse).any()


@pytest.mark.parametrize("api", [FA, VARLEN], ids=["flash-attn", "flash-attn-varlen"])
def test_dropout_is_asked_for_with_its_pattern_and_deterministic(api):
    assert api.dropout_kwargs(0.25) == {"dropout_p": 0.25, "return_attn_probs": True, "deterministic": True}


@pytest.mark.parametrize("api", [FA, VARLEN, KV], ids=["flash-attn", "flash-attn-varlen", "flash-attn-kvcache"])
def test_a_return_is_the_output_or_a_tuple_that_starts_with_it(api):
    """The probe's return-type check: an array, or a non-empty tuple whose first element is an array (out, then
    softmax_lse and S_dmask, or None in their places); anything else is refused, never an exception."""
    out = torch.zeros(2, 3, 4)
    yes = [out, out.numpy(), (out,), (out, out), (out, None), (out, out, None), (out.numpy(), None, out)]
    no = [(), (None,), (None, out), ("out", out), [out], [out, out], None, "out", {"out": out}]
    assert [api.accepts(r, _is_array) for r in yes] == [True] * len(yes)
    assert [api.accepts(r, _is_array) for r in no] == [False] * len(no)


def _dropout_case():
    return STORE.get(CaseSpec(family="adapter-flash-dropout", index=0, Sq=5, Sk=7, D=4, Dv=3, B=2, Hq=3, Hkv=3))


def test_flash_attn_dropout_returns_out_lse_and_the_kept_weights_of_s_dmask():
    """S_dmask (B, Hq, Sq', Sk') rounded up: the weight of query i and key j was kept iff S_dmask[b, h, i, j] >= 0;
    out and softmax_lse are the first two of the three."""
    data = _dropout_case()
    rng = np.random.default_rng(0)
    dmask = rng.choice([-0.5, -0.0, 0.0, 0.25], size=(2, 3, 128, 128))
    out, lse = torch.zeros(2, 5, 3, 3), torch.zeros(2, 3, 5)
    got_out, got_lse, keep = FA.unpack_dropout((out, lse, torch.tensor(dmask)), data)
    assert got_out is out and got_lse is lse
    want = np.array([[[[not dmask[b, h, i, j] < 0 for j in range(7)] for i in range(5)] for h in range(3)]
                     for b in range(2)])
    assert keep.shape == (2, 3, 5, 7) and keep.dtype == bool and np.array_equal(keep, want)


def test_varlen_dropout_returns_out_lse_and_each_sequences_kept_weights():
    spec = next(s for s in select(["varlen"], "default", ("float64",))
                if len({lq for lq, _ in s.seqlens}) > 1 and s.Sq * s.Sk * s.B * s.Hq < 40000)
    data = STORE.get(spec)
    lq_max, lk_max = (max(x[i] for x in spec.seqlens) for i in (0, 1))
    dmask = np.random.default_rng(1).choice([-1.0, 0.0, 1.0], size=(spec.B, spec.Hq, lq_max + 3, lk_max + 1))
    out, lse = torch.zeros(1), torch.zeros(2)
    got_out, got_lse, keep = VARLEN.unpack_dropout((out, lse, torch.tensor(dmask)), data)
    assert got_out is out and got_lse is lse
    want = np.zeros((spec.B, spec.Hq, spec.Sq, spec.Sk), bool)
    for b, (lq, lk) in enumerate(spec.seqlens):
        for h, i, j in np.ndindex(spec.Hq, lq, lk):
            want[b, h, i, j] = dmask[b, h, i, j] >= 0
    assert np.array_equal(keep, want)


@pytest.mark.parametrize("api", [FA, VARLEN], ids=["flash-attn", "flash-attn-varlen"])
def test_a_dropout_return_that_is_not_out_lse_and_s_dmask_is_refused_naming_what_came(api):
    data = _dropout_case()
    dm = torch.zeros(2, 3, 5, 7)
    for res, kind in ((dm, "Tensor"), ((dm, dm), "tuple"), ((dm, dm, dm, dm), "tuple"), ([dm, dm, dm], "list")):
        with pytest.raises(TypeError, match=f"return_attn_probs=True the target returned {kind}; expected "
                                            r"\(out, softmax_lse, S_dmask\)"):
            api.unpack_dropout(res, data)
    for bad in (dm[:, :, :4], dm[:, :, :, :6], dm[:1], dm[:, :2], dm[0]):
        with pytest.raises(TypeError, match=r"S_dmask has shape .*; expected \(B, Hq, Sq, Sk\) = \(2, 3, 5, 7\)"):
            api.unpack_dropout((dm, dm, bad), data)


# --- flash_attn_varlen_func ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", _cases(VARLEN), ids=[s.id for s in _cases(VARLEN)])
def test_varlen_arguments_mean_the_case_sequence_by_sequence(spec):
    data = STORE.get(spec)
    given, args, kw = VARLEN.arguments(data, _tensor, "packed")
    assert [a is given[n] for a, n in zip(args, ("q", "k", "v", "cu_seqlens_q", "cu_seqlens_k"))] == [True] * 5
    packed = flash_attn_varlen_func(*args, **kw).numpy()
    lens = spec.seqlens or [(spec.Sq, spec.Sk)] * spec.B
    got = np.zeros(data.expected.shape)
    at = 0
    for b, (lq, _) in enumerate(lens):
        got[b, :, :lq] = packed[at:at + lq].swapaxes(0, 1)
        at += lq
    assert at == packed.shape[0]
    _close(got, data)
    assert set(kw) == {"dropout_p", "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes",
                       "deterministic", "return_attn_probs"}
    assert kw["dropout_p"] == 0.0 and kw["deterministic"] is True and kw["return_attn_probs"] is False
    _fixed_kwargs(kw, spec)


def test_varlen_lse_is_asked_for_with_return_attn_probs():
    assert VARLEN.lse_kwargs == {"return_attn_probs": True}
    spec = next(s for s in _cases(VARLEN) if s.seqlens is not None and any(lk == 0 < lq for lq, lk in s.seqlens))
    data = STORE.get(spec)
    got = apis.call(flash_attn_varlen_func, VARLEN, data, lse=True)
    live = data.live
    assert got.lse.shape == (spec.B, spec.Hq, spec.Sq) and np.isinf(got.lse[live & data.dead]).all()
    assert np.isfinite(got.lse[data.live]).all()


# --- flash_attn_with_kvcache ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", _cases(KV), ids=[s.id for s in _cases(KV)])
def test_kvcache_arguments_mean_the_case_and_leave_the_cache_it_expects(spec):
    data = STORE.get(spec)
    given, args, kw = KV.arguments(data, _tensor, "BSHD")
    assert [a is given[n] for a, n in zip(args, ("q", "k_cache", "v_cache"))] == [True] * 3
    _close(flash_attn_with_kvcache(*args, **kw).numpy().swapaxes(1, 2), data)
    assert KV.check_writes({n: given[n] for n in ("k_cache", "v_cache")}, data) == []
    assert set(kw) == {"k", "v", "cache_seqlens", "block_table", "softmax_scale", "causal", "window_size", "softcap",
                       "alibi_slopes", "return_softmax_lse"}
    assert kw["return_softmax_lse"] is False and (kw["k"] is None) == (kw["v"] is None)
    assert (kw["k"] is None) == (spec.new_len == 0) and (kw["block_table"] is None) == (spec.block_size is None)
    _fixed_kwargs(kw, spec)


def _paged_cases():
    return [s for s in select(["kvcache"], "default", ("float64",)) if s.block_size is not None][:12]


def test_a_paged_cache_gives_each_sequence_its_own_pages_and_points_the_rest_at_a_page_no_one_owns():
    """Sequence b owns max(1, ceil((cached + new) / block)) pages, no page owned twice; every table entry past them
    names one more page that no sequence owns and that holds garbage only (NaN and huge values), before and after."""
    for spec in _paged_cases():
        data = STORE.get(spec)
        given, _, kw = KV.arguments(data, _tensor, "BSHD")
        table, lens = kw["block_table"].numpy(), kw["cache_seqlens"].numpy()
        need = [max(1, math.ceil((int(n) + spec.new_len) / spec.block_size)) for n in lens]
        owned = [int(p) for b in range(spec.B) for p in table[b, :need[b]]]
        rest = {int(p) for b in range(spec.B) for p in table[b, need[b]:]}
        n_pages = given["k_cache"].shape[0]
        assert len(set(owned)) == len(owned) == n_pages - 1, spec.id
        assert len(rest) <= 1 and not rest & set(owned), spec.id
        spare = next(iter(set(range(n_pages)) - set(owned)))
        flash_attn_with_kvcache(*(given[n] for n in ("q", "k_cache", "v_cache")), **kw)   # writes the new keys
        for name in ("k_cache", "v_cache"):
            page = given[name][spare].numpy()
            assert np.all(np.isnan(page) | (np.abs(page) >= 1e29)), (spec.id, name)


def test_every_flash_api_hands_torch_tensors():
    """q, k, v (and the cache) reach the target as torch tensors of the case's dtype, whatever --torch-tensors."""
    seen = []

    def spy(*args, **kw):
        seen.append([type(a) for a in args[:3]] + [a.dtype for a in args[:3]])
        q, v = args[0], args[2]
        return torch.zeros(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)

    spec = next(s for s in _cases(FA) if s.Hq > 1)                  # a dense case: all three express it
    for api in (FA, VARLEN, KV):
        seen.clear()
        got = apis.call(spy, api, STORE.get(spec))
        assert seen == [[torch.Tensor] * 3 + [torch.float64] * 3], api.name
        assert got.output.shape == (spec.B, spec.Hq, spec.Sq, spec.Dv)


def test_a_cache_whose_shape_changed_is_named_with_both_shapes():
    spec = next(s for s in _cases(KV) if s.new_len and s.block_size)
    data = STORE.get(spec)
    given, args, kw = KV.arguments(data, _tensor, "BSHD")
    flash_attn_with_kvcache(*args, **kw)
    k_cache, v_cache = given["k_cache"], given["v_cache"]
    shape = tuple(k_cache.shape)
    grown = torch.cat([k_cache, k_cache[:1]])
    assert KV.check_writes({"k_cache": grown, "v_cache": v_cache}, data) == [
        f"k_cache: its shape changed from {shape} to {(shape[0] + 1,) + shape[1:]}"]
    short = v_cache[:, :1]
    assert KV.check_writes({"k_cache": k_cache, "v_cache": short}, data) == [
        f"v_cache: its shape changed from {tuple(v_cache.shape)} to {tuple(short.shape)}"]


def test_kvcache_lse_is_asked_for_with_return_softmax_lse():
    assert KV.lse_kwargs == {"return_softmax_lse": True}
    spec = next(s for s in _cases(KV) if s.new_len and s.B > 1)
    data = STORE.get(spec)
    got = apis.call(flash_attn_with_kvcache, KV, data, lse=True)
    assert got.lse.shape == (spec.B, spec.Hq, spec.Sq) and np.isfinite(got.lse[data.live]).all()
    assert got.problems == [] and sorted(got.written) == ["k_cache", "v_cache"]


def test_beyond_its_keys_a_dense_cache_holds_nan_and_huge_values_alternately():
    """The garbage, flattened in C order, is NaN at every other element and +-1e30 (both signs) in between."""
    spec = next(s for s in _cases(KV) if s.cache_lens is not None and s.block_size is None)
    data = STORE.get(spec)
    given, _, kw = KV.arguments(data, _tensor, "BSHD")
    for name in ("k_cache", "v_cache"):
        cache = given[name].numpy()                                  # (B, Smax, Hkv, D)
        lens = kw["cache_seqlens"].numpy()
        beyond = np.arange(cache.shape[1])[None, :] >= lens[:, None]
        flat = np.arange(cache.size).reshape(cache.shape)
        at, vals = flat[beyond].ravel(), cache[beyond].ravel()
        assert at.size > 8
        assert np.array_equal(np.isnan(vals), at % 2 == 0), name
        assert set(vals[at % 2 == 1].tolist()) == {1e30, -1e30}, name


@pytest.mark.parametrize("where", ["a cached key", "a garbage position"])
def test_a_nan_written_over_the_cache_is_a_change(where):
    """A cache whose values were replaced by NaN (or whose NaN garbage was replaced by a number) has changed."""
    spec = next(s for s in _cases(KV) if s.new_len and s.block_size)
    data = STORE.get(spec)
    given, args, kw = KV.arguments(data, _tensor, "BSHD")
    flash_attn_with_kvcache(*args, **kw)
    k_cache = given["k_cache"]
    assert KV.check_writes({"k_cache": k_cache, "v_cache": given["v_cache"]}, data) == []
    b = int(np.argmax(kw["cache_seqlens"].numpy()))
    page, slot = int(kw["block_table"][b, 0]), 0                     # sequence b's first key
    if where == "a garbage position":
        nan = np.argwhere(np.isnan(k_cache.numpy()))[0]
        k_cache[tuple(nan)] = 0.5
    else:
        k_cache[page, slot, 0, 0] = float("nan")
    problems = KV.check_writes({"k_cache": k_cache, "v_cache": given["v_cache"]}, data)
    assert problems == ["k_cache: after the call 1 values differ from the cache with the new keys written at "
                        "cache_seqlens (through the block table)"]


def test_under_causal_the_right_edge_of_a_window_arrives_as_given_in_every_other_eight_cases():
    """flash-attn caps window_size's right edge at 0 itself when causal=True (flash_api.cpp), and callers pass it
    either way: the causal window cases hand it as the case gives it in every other group of eight cases (a kernel
    must cap it too) and already capped at 0 in the others."""
    form = {}                                          # group of eight case indices -> how the right edge came
    for spec in select(["window"], "default", ("float64",)):
        if not (spec.is_causal and spec.window is not None and apis.expressible(FA, spec) is None):
            continue
        _, _, kw = FA.arguments(STORE.get(spec), _tensor, "BSHD")
        left, right = kw["window_size"]
        assert kw["causal"] is True and left == spec.window[0], spec.id
        assert right in (spec.window[1], 0), spec.id                       # as given, or capped at 0
        if spec.window[1] != 0:                                            # the two forms differ
            form.setdefault(spec.index // 8, set()).add("given" if right == spec.window[1] else "capped")
    assert all(len(f) == 1 for f in form.values()), form
    given = {g % 2 for g, f in form.items() if f == {"given"}}
    capped = {g % 2 for g, f in form.items() if f == {"capped"}}
    assert len(given) == len(capped) == 1 and given != capped, form
    assert sum(f == {"given"} for f in form.values()) >= 3 and sum(f == {"capped"} for f in form.values()) >= 3


@pytest.mark.parametrize("api", [FA, VARLEN, KV], ids=["flash-attn", "flash-attn-varlen", "flash-attn-kvcache"])
def test_a_target_asked_for_its_lse_that_returns_none_is_refused_naming_what_came(api):
    out, lse = torch.zeros(2, 3, 4), torch.zeros(2, 4)
    asked = ", ".join(f"{k}={v}" for k, v in api.lse_kwargs.items())
    assert api.unpack_lse((out, lse)) == (out, lse) and api.unpack_lse((out, lse, None))[1] is lse
    for res, kind in ((out, "Tensor"), ((out,), "tuple"), ([out, lse], "list"), (None, "NoneType")):
        with pytest.raises(TypeError) as e:
            api.unpack_lse(res)
        assert str(e.value) == (f"asked for its log-sum-exp ({asked}) the target returned {kind}; "
                                f"expected {api.lse_returns}")


@pytest.mark.parametrize("api", [FA, VARLEN, KV], ids=["flash-attn", "flash-attn-varlen", "flash-attn-kvcache"])
def test_the_output_is_the_return_or_its_first_element(api):
    out, lse = torch.zeros(2, 3, 4), torch.ones(2, 4)
    assert api.unpack(out)[0] is out and api.unpack((out, lse))[0] is out and api.unpack((out, lse, None))[0] is out
    assert api.unpack(out)[1] is None and api.unpack((out, lse))[1] is None
