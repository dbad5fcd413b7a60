"""Packed (variable-length) batches: the ``varlen`` family, the ``flash-attn-varlen`` API's packing, and the rows
that are part of no sequence (never judged). The kernels of tests/zoo/flash_varlen_impls.py are judged in
tests/test_verdicts.py and diagnosed in tests/test_diagnosis_apis.py."""
import numpy as np
import pytest

import refimpl
from refimpl.harness import apis
from refimpl.harness.apis import Returned
from refimpl.harness.cases import Status
from refimpl.harness.cases.families import family_specs
from refimpl.harness.cases.features import CaseSpec, materialise
from refimpl.harness.reports.export import case_json
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target
from refimpl.harness.verdicts.judge import judge

SPECS = family_specs("varlen", "default", ("float64",))
STORE = CaseStore()


def test_the_family_has_the_lengths_kernels_get_wrong():
    lens = [p for s in SPECS for p in s.seqlens]
    assert any(lq == 1 for lq, _ in lens) and any(lk == 1 for _, lk in lens)
    assert any(lq == 0 for lq, _ in lens), "a sequence with no query"
    assert any(lk == 0 and lq > 0 for lq, lk in lens), "a sequence with no key (its queries' rows are dead)"
    assert any(lk > 64 and lk % 64 for _, lk in lens), "a length past a block and not a multiple of it"
    assert sum(lq != lk for lq, lk in lens) > len(lens) // 4
    assert any(s.seq_causal for s in SPECS) and any(s.seq_window for s in SPECS) and any(s.gqa for s in SPECS)
    assert any(s.alibi for s in SPECS) and any(s.softcap for s in SPECS) and any(s.dead_rows for s in SPECS)


@pytest.mark.parametrize("spec", SPECS[:30], ids=[s.id for s in SPECS[:30]])
def test_each_sequence_is_dense_attention_on_its_own_rows_bottom_right(spec):
    """The packed reference, sequence by sequence, is refimpl's dense SDPA of that sequence alone."""
    d = materialise(spec)
    group = spec.Hq // spec.Hkv
    for b, (lq, lk) in enumerate(spec.seqlens):
        if lq == 0:
            continue
        got = d.expected[b, :, :lq]
        if lk == 0:
            assert np.all(got == 0) and d.dead[b, :, :lq].all()
            continue
        k, v = (np.repeat(a[b, :, :lk], group, axis=0) for a in (d.k, d.v))
        mask = None if not spec.alibi else refimpl.alibi_bias(d.slopes, lq, lk, alignment="bottom-right")
        want, _ = refimpl.scaled_dot_product_attention(
            d.q[b, :, :lq], k, v, mask=mask, is_causal=spec.seq_causal, window=spec.seq_window,
            alignment="bottom-right", softcap=spec.softcap)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert d.absent is not None and d.absent.sum() == sum(spec.Sq - lq for lq, _ in spec.seqlens) * spec.Hq


def _data(i=0):
    return STORE.get(SPECS[i])


def test_rows_of_no_sequence_are_not_judged_and_every_other_row_is():
    d = next(STORE.get(s) for s in SPECS if materialise(s).absent.any() and not s.dead_rows)
    out = d.expected.copy()
    out[d.absent] = np.nan                       # padding: whatever a dense target wrote there
    assert judge(d, Returned(out, None, "float64", []), "float64").status == Status.PASS
    b, h, i = (int(x[0]) for x in np.nonzero(d.live))
    out[b, h, i, 0] += 1e-3
    r = judge(d, Returned(out, None, "float64", []), "float64")
    assert r.status == Status.FAIL and "output" in r.detail


def test_the_varlen_api_hands_packed_tensors_and_int32_cumulative_lengths():
    seen = {}

    def spy(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0, softmax_scale=None,
            causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, deterministic=False,
            return_attn_probs=False):
        seen.update(q=tuple(q.shape), k=tuple(k.shape), cq=cu_seqlens_q.tolist(), ck=cu_seqlens_k.tolist(),
                    dtype=str(cu_seqlens_q.dtype), mq=max_seqlen_q, mk=max_seqlen_k, causal=causal, w=window_size)
        return q.new_zeros((q.shape[0], q.shape[1], v.shape[-1]))

    s = next(s for s in SPECS if s.seq_causal)
    d = STORE.get(s)
    got = apis.call(spy, "flash-attn-varlen", d)
    lq, lk = [a for a, _ in s.seqlens], [b for _, b in s.seqlens]
    assert seen["q"] == (sum(lq), s.Hq, s.D) and seen["k"] == (sum(lk), s.Hkv, s.D)
    assert seen["cq"] == list(np.cumsum([0] + lq)) and seen["ck"] == list(np.cumsum([0] + lk))
    assert seen["dtype"] == "torch.int32" and (seen["mq"], seen["mk"]) == (max(lq), max(lk))
    assert seen["causal"] is True and seen["w"][1] in (-1, 0)
    assert got.output.shape == (s.B, s.Hq, s.Sq, s.Dv)


def test_a_dense_case_is_a_packed_batch_of_equal_lengths():
    s = CaseSpec("t", 0, Sq=5, Sk=7, D=4, Dv=3, B=2, is_causal=True, alignment="bottom-right")
    d = materialise(s)
    seen = {}

    def spy(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw):
        seen.update(cq=cu_seqlens_q.tolist(), ck=cu_seqlens_k.tolist(), causal=kw["causal"])
        return q.new_zeros((q.shape[0], q.shape[1], v.shape[-1]))

    apis.call(spy, "flash-attn-varlen", d)
    assert seen == {"cq": [0, 5, 10], "ck": [0, 7, 14], "causal": True}


def test_which_apis_express_a_packed_batch():
    s = SPECS[0]
    assert apis.needs(s)[0] == "sequence-lengths"
    assert apis.expressible("flash-attn-varlen", s) is None
    assert apis.expressible("refimpl", s) is None                  # a bool keep-mask carries the lengths
    assert "--api flash-attn-varlen" in apis.expressible("flash-attn", s)
    bool_case = CaseSpec("t", 0, Sq=3, Sk=3, D=4, Dv=4, mask="bool")
    assert "cu_seqlens" in apis.expressible("flash-attn-varlen", bool_case)


def test_a_dense_output_from_a_varlen_target_fails_on_its_shape():
    s = SPECS[1]

    def dense(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, **kw):
        return q.new_zeros((len(cu_seqlens_q) - 1, max_seqlen_q, q.shape[1], v.shape[-1]))

    r = run_one(Target("dense", dense, api="flash-attn-varlen"), s, STORE)
    assert r.status == Status.FAIL and "output shape" in r.detail


def test_the_export_carries_cumulative_lengths_and_the_rows_of_no_sequence():
    s = next(s for s in SPECS if s.seqlens[0][0] < s.Sq)
    js = case_json(STORE.get(s))
    lq = [a for a, _ in s.seqlens]
    assert js["inputs"]["cu_seqlens_q"] == [int(x) for x in np.cumsum([0] + lq)]
    absent = np.array(js["expected"]["absent_rows"]["values"], bool)
    assert absent.shape == (s.B, s.Hq, s.Sq) and absent[0, 0, lq[0]:].all() and not absent[0, 0, :lq[0]].any()
    dense = case_json(materialise(CaseSpec("t", 0, Sq=3, Sk=3, D=4, Dv=4)))
    assert dense["inputs"]["cu_seqlens_q"] is None and dense["expected"]["absent_rows"] is None
