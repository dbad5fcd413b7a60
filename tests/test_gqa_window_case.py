"""The gqa family's sliding window under grouped heads (case i mod 11 = 10: a window (4, 0), bottom-right, no mask). A
kernel that packs a group's query heads into the query rows (row r = i * G + g, FlashAttention's PackGQA) must test
a window's left edge at the row's query i; one that tests it at the packed row r passed every quick case before this
one (tests/heldout22's flash_pack_gqa_window_row: the quick gqa cases had a causal band but no window). The kernels
here are written for this test, in flash_attn_func's API: the packed one testing the window's left edge at r
(broken) fails on that case only; the same kernel testing it at i (correct) conforms."""
import math

import pytest
import torch

from refimpl.harness.cases import Status
from refimpl.harness.cases.families import select
from refimpl.harness.rows.family_cases import CaseStore, run_one
from refimpl.harness.target_spec import Target

STORE = CaseStore()


def _packed(window_at_packed_row):
    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
        B, Sq, Hq, D = q.shape
        Sk, Hkv = k.shape[1], k.shape[2]
        G = Hq // Hkv
        scale = 1 / math.sqrt(D) if softmax_scale is None else softmax_scale
        left, right = window_size
        if causal:
            right = 0
        out = torch.zeros(B, Sq, Hq, v.shape[-1], dtype=torch.float64)
        for b in range(B):
            for h in range(Hkv):
                rows = q[b, :, h * G:(h + 1) * G].double().reshape(Sq * G, D)      # (Sq * G, D): r = i * G + g
                r = torch.arange(Sq * G)[:, None]
                pos = r // G + Sk - Sq                                             # the row's query position
                at = r + Sk - Sq if window_at_packed_row else pos                  # where the window is tested
                j = torch.arange(Sk)[None, :]
                keep = torch.ones(Sq * G, Sk, dtype=torch.bool)
                if left >= 0:
                    keep &= j >= at - left
                if right >= 0:
                    keep &= j <= pos + right
                s = (rows @ k[b, :, h].double().T * scale).masked_fill(~keep, -math.inf)
                m = s.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
                p = torch.exp(s - m)
                den = p.sum(-1, keepdim=True)
                o = p @ v[b, :, h].double() / den.masked_fill(den == 0, 1.0)        # (Sq * G, Dv)
                out[b, :, h * G:(h + 1) * G] = o.reshape(Sq, G, -1)
        return out.to(q.dtype)
    return flash_attn_func


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_window_tested_at_the_packed_row_fails_on_the_gqa_window_case_only(dtype):
    target = Target("k", _packed(True), api="flash-attn")
    results = [(s, run_one(target, s, STORE)) for s in select(["gqa", "window", "causal"], "quick", (dtype,))]
    failed = [s for s, r in results if r.status == Status.FAIL]
    assert [(s.family, s.window) for s in failed] == [("gqa", (4, 0))], [s.id for s in failed]
    assert failed[0].Hq > failed[0].Hkv


def test_the_same_kernel_testing_the_window_at_the_query_conforms():
    target = Target("k", _packed(False), api="flash-attn")
    specs = select(["gqa", "window", "causal"], "quick", ("float64", "float32"))
    statuses = [run_one(target, s, STORE).status for s in specs]
    assert Status.PASS in statuses and Status.FAIL not in statuses, statuses
