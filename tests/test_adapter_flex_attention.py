"""What ``--api flex-attention`` hands a target, read as torch.nn.attention.flex_attention's specification.

The arguments of each case are evaluated by a small implementation of FlexAttention's documented semantics written
here: ``score = (q . k) * scale`` (None: 1/sqrt(D)), then ``score_mod(score, b, h, q_idx, kv_idx)`` with broadcast
index tensors; ``block_mask`` read block by block as a kernel reads it (a block in ``full_kv_indices`` is kept whole,
one in ``kv_indices`` keeps the elements ``mask_mod`` keeps, any other block is skipped; only the first
``*_num_blocks`` entries of each query block's lists count); ``enable_gqa`` maps query head h to kv head
h // (Hq / Hkv); a row with no kept key gives zeros. Besides the suite's quick cases, hand-made cases combine a mask,
ALiBi, a softcap and GQA with causal bands and windows in both alignments.
"""
import math
import pickle

import numpy as np
import pytest
import torch

from refimpl.harness import apis
from refimpl.harness.rows.family_cases import CaseStore
from support.adapter_cases import BAND_MEETS_MASK, cases_for, combos

API = apis.get("flex-attention")
STORE = CaseStore()


# a mask, ALiBi and GQA meeting a causal band or a window, in both alignments (none of them is in the suites)
COMBOS = combos("adapter-flex", dict(Sq=19, Sk=21, D=8, Dv=5, B=2, Hq=2, Hkv=2), BAND_MEETS_MASK + [
    dict(mask="additive", window=(3, 1), alignment="bottom-right", softcap=2.0),
    dict(alibi=True, is_causal=True, Hq=4, Hkv=2),
    dict(alibi=True, mask="bool", window=(2, 2), softcap=5.0),
    dict(alibi=True, mask="additive"),
    dict(mask="bool", is_causal=True, Hq=4, Hkv=2, Sq=40, Sk=37),
    dict(is_causal=True, window=(2, -1), softcap=1.0),
    dict(softcap=3.0, Hq=3, Hkv=1),
])
CASES = cases_for(API, COMBOS)


def _tensor(a):
    return None if a is None else torch.tensor(a)


def _listed(num, idx, n_kv):
    """(B, H, nq, nk) bool: the key blocks a query block's first num entries of idx name."""
    num, idx = num.numpy(), idx.numpy()
    out = np.zeros(num.shape + (n_kv,), bool)
    for b, h, qb in np.ndindex(*num.shape):
        out[b, h, qb, idx[b, h, qb, :num[b, h, qb]]] = True
    return out


def flex_by_the_docs(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False):
    q, k, v = (t.numpy() for t in (query, key, value))
    B, Hq, Sq, D = q.shape
    Hkv, Sk = k.shape[1], k.shape[2]
    assert Hkv == Hq or enable_gqa, "different head counts need enable_gqa=True"
    g = Hq // Hkv
    k, v = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    scale = 1 / math.sqrt(D) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    b, h, i, j = (torch.arange(n).view(*[n if d == a else 1 for d in range(4)]) for a, n in enumerate((B, Hq, Sq, Sk)))
    if score_mod is not None:
        s = np.broadcast_to(score_mod(torch.tensor(s), b, h, i, j).numpy(), s.shape)
    keep = np.ones(s.shape, bool)
    if block_mask is not None:
        assert block_mask.shape == (B, Hq, Sq, Sk)
        bq, bk = block_mask.BLOCK_SIZE
        nk = -(-Sk // bk)
        full = _listed(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, nk)
        part = _listed(block_mask.kv_num_blocks, block_mask.kv_indices, nk)
        assert not (full & part).any()
        elem = np.broadcast_to(block_mask.mask_mod(b, h, i, j).numpy(), s.shape)
        qb, kb = np.arange(Sq) // bq, np.arange(Sk) // bk
        keep = full[:, :, qb][:, :, :, kb] | (part[:, :, qb][:, :, :, kb] & elem)
    s = np.where(keep, s, -np.inf)
    live = keep.any(-1)
    m = np.where(live, s.max(-1, initial=-np.inf), 0.0)
    w = np.exp(s - m[..., None])
    tot = np.where(live, w.sum(-1), 1.0)
    return np.where(live[..., None], (w / tot[..., None]) @ v, 0.0)


@pytest.mark.parametrize("spec", CASES, ids=[s.id for s in CASES])
def test_the_arguments_mean_the_case_under_flex_attentions_documented_semantics(spec):
    data = STORE.get(spec)
    given, args, kw = API.arguments(data, _tensor, "BHSD")
    assert [a is given[n] for a, n in zip(args, ("query", "key", "value"))] == [True] * 3
    got = flex_by_the_docs(*args, **kw)
    live = data.live
    np.testing.assert_allclose(got[live], data.expected[live], rtol=1e-10, atol=1e-12)
    assert np.all(got[~live] == 0) or data.absent is not None


def test_the_keywords_are_score_mod_block_mask_scale_and_enable_gqa_on_gqa_cases_only():
    """A port written without enable_gqa (no GQA) can be called on every case without GQA; score_mod and block_mask
    are None when there is nothing to modify or to mask."""
    for spec in CASES:
        data = STORE.get(spec)
        _, _, kw = API.arguments(data, _tensor, "BHSD")
        assert set(kw) == {"score_mod", "block_mask", "scale"} | ({"enable_gqa"} if spec.gqa else set()), spec.id
        assert kw["scale"] == spec.scale and kw.get("enable_gqa", True) is True, spec.id
        additive = spec.alibi or spec.mask == "additive"
        assert (kw["score_mod"] is None) == (not spec.softcap and not additive), spec.id
        banded = spec.is_causal or spec.window is not None or spec.mask != "none" or spec.seqlens is not None
        if not banded and not additive:
            assert kw["block_mask"] is None, spec.id
        if kw["block_mask"] is not None:
            assert not kw["block_mask"].mask_mod.keep.all(), spec.id


def _lit_table():
    table = {}

    def lit(x):
        name = f"T{len(table)}"
        table[name] = x
        return name, int(x.numel())
    return table, lit


def test_score_mod_and_block_mask_cross_to_a_worker_and_into_a_script_unchanged():
    """Pickled (the worker) or written as source (a reproduction script), score_mod and block_mask are rebuilt to
    give the same scores, the same mask and the same block lists."""
    from refimpl.harness.apis.flex_attention import BlockMask, MaskMod, ScoreMod
    rng = np.random.default_rng(5)
    bias = torch.tensor(rng.normal(size=(1, 2, 3, 4)))
    keep = torch.tensor(rng.random((1, 2, 20, 18)) < 0.6)
    score = torch.tensor(rng.normal(size=(1, 2, 3, 4)))
    idx = [torch.arange(n).view(*[n if d == a else 1 for d in range(4)]) for a, n in enumerate((1, 2, 3, 4))]
    kidx = [torch.arange(n).view(*[n if d == a else 1 for d in range(4)]) for a, n in enumerate((1, 2, 20, 18))]
    for mod in (ScoreMod(2.5, bias), ScoreMod(None, bias), ScoreMod(4.0, None)):
        mod(score, *idx)                                                 # a cast kept in the object
        table, lit = _lit_table()
        src, n = mod.repro_source(lit)
        assert n == (24 if mod.bias is not None else 0)
        for again in (pickle.loads(pickle.dumps(mod)), eval(src, {"ScoreMod": ScoreMod, **table})):
            assert type(again) is ScoreMod and again.cap == mod.cap
            assert torch.equal(again(score, *idx), mod(score, *idx))
            assert torch.equal(again(score.float(), *idx), mod(score.float(), *idx))
    bm = BlockMask(MaskMod(keep), 16)
    table, lit = _lit_table()
    src, n = bm.repro_source(lit)
    assert n == keep.numel()
    for again in (pickle.loads(pickle.dumps(bm)), eval(src, {"BlockMask": BlockMask, "MaskMod": MaskMod, **table})):
        assert type(again) is BlockMask and again.BLOCK_SIZE == (16, 16) and again.shape == bm.shape
        assert torch.equal(again.mask_mod(*kidx), keep)
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            assert torch.equal(getattr(again, name), getattr(bm, name)), name
        assert torch.equal(again.to_dense(), bm.to_dense())
    assert repr(bm) == "BlockMask(shape=(1, 2, 20, 18), BLOCK_SIZE=(16, 16))"


def test_the_output_is_returned_as_it_is_and_lse_asked_for_with_return_lse():
    """flex_attention returns the output tensor itself (no unpacking, in a script too), and (out, lse) when called
    with return_lse=True."""
    assert API.unpack("out") == ("out", None) and API.repro_unpack() == []
    assert API.lse_kwargs == {"return_lse": True}
    spec = next(s for s in COMBOS if s.mask == "bool")
    data = STORE.get(spec)

    def flex(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False, return_lse=False):
        out = torch.tensor(flex_by_the_docs(query, key, value, score_mod, block_mask, scale, enable_gqa))
        return (out, torch.zeros(out.shape[:-1])) if return_lse else out

    got = apis.call(flex, API, data, lse=True)
    assert got.lse.shape == (spec.B, spec.Hq, spec.Sq)
    live = data.live
    np.testing.assert_allclose(got.output[live], data.expected[live], rtol=1e-10, atol=1e-12)


def test_query_key_and_value_reach_the_target_as_torch_tensors():
    seen = []

    def spy(query, key, value, **kw):
        seen.append([type(a) for a in (query, key, value)] + [a.dtype for a in (query, key, value)])
        return torch.zeros(query.shape[:-1] + value.shape[-1:], dtype=query.dtype)

    apis.call(spy, API, STORE.get(COMBOS[0]))
    assert seen == [[torch.Tensor] * 3 + [torch.float64] * 3]


def test_score_mod_adds_the_finite_part_of_the_additive_terms_and_nothing_where_a_key_is_dropped():
    """Where the case's additive mask is -inf the key is dropped by block_mask, and score_mod leaves the score as
    it is there (softcap aside); elsewhere it adds the mask (and ALiBi) term."""
    for spec in COMBOS:
        if not (spec.alibi or spec.mask == "additive"):
            continue
        data = STORE.get(spec)
        _, args, kw = API.arguments(data, _tensor, "BHSD")
        add = np.broadcast_to(data.reference_kwargs()["mask"], (spec.B, spec.Hq, spec.Sq, spec.Sk))
        zero = torch.zeros(add.shape, dtype=torch.float64)
        b, h, i, j = (torch.arange(n).view(*[n if d == a else 1 for d in range(4)]) for a, n in enumerate(add.shape))
        terms = kw["score_mod"](zero, b, h, i, j).numpy()                # softcap(0) = 0: the additive terms alone
        assert np.array_equal(terms, np.where(np.isfinite(add), add, 0.0)), spec.id
        dropped = ~np.isfinite(add)
        if dropped.any():
            assert not kw["block_mask"].mask_mod(b, h, i, j).numpy()[dropped].any(), spec.id


def test_a_block_that_reaches_past_the_sequence_is_never_full():
    """create_block_mask pads the mask with False to whole blocks and counts a block full only when all its
    BLOCK_SIZE x BLOCK_SIZE elements are kept: a block reaching past Sq or Sk is partial."""
    from refimpl.harness.apis.flex_attention import BlockMask, MaskMod
    bm = BlockMask(MaskMod(torch.ones(1, 1, 20, 18, dtype=torch.bool)), 16)    # 2 x 2 blocks, all kept
    full = _listed(bm.full_kv_num_blocks, bm.full_kv_indices, 2)[0, 0]
    part = _listed(bm.kv_num_blocks, bm.kv_indices, 2)[0, 0]
    assert full.tolist() == [[True, False], [False, False]]                   # only the whole 16 x 16 block
    assert part.tolist() == [[False, True], [True, True]]


def test_a_port_that_trusts_full_blocks_to_be_whole_blocks_gets_the_right_output():
    """A kernel written for create_block_mask's lists may pad K and V to whole blocks and skip both mask_mod and
    the sequence bound in a full block (a full block never holds padding there); the harness's lists then
    attend the zero padding of a short last key block."""
    from refimpl.harness.apis.flex_attention import BlockMask, MaskMod
    B, H, Sq, Sk, D, bs = 2, 1, 20, 21, 4, 16
    rng = np.random.default_rng(7)
    q, k, v = (rng.normal(size=(B, H, n, D)) for n in (Sq, Sk, Sk))
    keep = np.ones((B, H, Sq, Sk), bool)
    keep[1, :, :, 10:] = False                                                 # batch 1 padded, batch 0 whole
    bm = BlockMask(MaskMod(torch.tensor(keep)), bs)
    nk = -(-Sk // bs)
    kp, vp = (np.concatenate([a, np.zeros((B, H, nk * bs - Sk, D))], axis=2) for a in (k, v))
    full = _listed(bm.full_kv_num_blocks, bm.full_kv_indices, nk)
    part = _listed(bm.kv_num_blocks, bm.kv_indices, nk)
    out = np.zeros((B, H, Sq, D))
    for b, h, i in np.ndindex(B, H, Sq):
        s = np.full(nk * bs, -np.inf)
        for kb in range(nk):
            cols = np.arange(kb * bs, (kb + 1) * bs)
            sc = kp[b, h, cols] @ q[b, h, i] / math.sqrt(D)
            if full[b, h, i // bs, kb]:
                s[cols] = sc
            elif part[b, h, i // bs, kb]:
                inside = cols < Sk
                ok = np.zeros(bs, bool)
                ok[inside] = keep[b, h, i, cols[inside]]
                s[cols] = np.where(ok, sc, -np.inf)
        w = np.exp(s - s.max())
        out[b, h, i] = w / w.sum() @ vp[b, h]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(D)
    w = np.exp(np.where(keep, s, -np.inf) - s.max(-1, keepdims=True))
    np.testing.assert_allclose(out, w / w.sum(-1, keepdims=True) @ v, rtol=1e-12, atol=1e-12)
